/*
 * daemon_util.h - helpers for integration tests: start the real agentd on a temporary data dir
 * and socket, talk to it over blocking Unix sockets, stop or kill it.
 *
 * The binaries come from $AGENTD_BIN_DIR (default "build"), so `make asan` tests the
 * sanitized daemon.
 */
#ifndef AG_TEST_DAEMON_UTIL_H
#define AG_TEST_DAEMON_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../protocol/protocol.h"

struct tdaemon {
    char dir[256];  /* temporary root: data/ and the socket live here */
    char data[300]; /* data dir */
    char sock[300]; /* socket path */
    char log[300];  /* daemon stderr */
    pid_t pid;      /* running daemon, 0 when stopped */
};

static inline const char *bin_dir(void)
{
    const char *d = getenv("AGENTD_BIN_DIR");
    return d && *d ? d : "build";
}

static inline int tconnect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path)) return -1;
    memcpy(sa.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Starts agentd with extra arguments (NULL-terminated list); waits until it accepts. */
static inline bool tdaemon_start_args(struct tdaemon *d, const char *const *extra)
{
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/agentd", bin_dir());
    const char *argv[32] = {bin, "--data", d->data, "--socket", d->sock, "--log-level", "debug"};
    int argc = 7;
    for (int i = 0; extra && extra[i] && argc < 30; i++) argv[argc++] = extra[i];
    argv[argc] = NULL;
    d->pid = fork();
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int fd = tconnect(d->sock);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return false;
        }
        usleep(10000);
    }
    return false;
}

static inline bool tdaemon_init(struct tdaemon *d)
{
    snprintf(d->dir, sizeof(d->dir), "/tmp/agentd-test-XXXXXX");
    if (!mkdtemp(d->dir)) return false;
    snprintf(d->data, sizeof(d->data), "%s/data", d->dir);
    snprintf(d->sock, sizeof(d->sock), "%s/agentd.sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/agentd.log", d->dir);
    d->pid = 0;
    return true;
}

static inline bool tdaemon_start(struct tdaemon *d)
{
    return tdaemon_init(d) && tdaemon_start_args(d, NULL);
}

/* SIGTERM and wait; returns the exit status (or -1). */
static inline int tdaemon_stop(struct tdaemon *d)
{
    int st = 0;
    if (!d->pid) return -1;
    kill(d->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return -1;
}

static inline void tdaemon_kill9(struct tdaemon *d)
{
    if (!d->pid) return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

/* Stops the daemon and removes its files. Returns false when the daemon did not exit cleanly
 * or its log holds a sanitizer report (so `make asan` fails on any of them). */
static inline bool tdaemon_cleanup(struct tdaemon *d)
{
    char cmd[600], *log = NULL;
    size_t n;
    bool ok = true;
    if (d->pid) ok = tdaemon_stop(d) == 0;
    if (ag_read_file(d->log, 64u << 20, &log, &n, NULL) == 0) {
        if (strstr(log, "Sanitizer") || strstr(log, "runtime error:")) {
            printf("  sanitizer report in %s\n", d->log);
            ok = false;
        }
        free(log);
    }
    if (getenv("KEEP_TEST_DIRS") || !ok) return ok;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", d->dir);
    return ok;
}

static inline bool send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* A buffered line reader over a blocking socket with a timeout per read. */
struct tconn {
    int fd;
    struct proto_framer fr;
};

static inline bool tconn_open(struct tconn *c, const char *sock)
{
    c->fd = tconnect(sock);
    proto_framer_init(&c->fr, 256u << 20);
    return c->fd >= 0;
}

static inline void tconn_close(struct tconn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    proto_framer_release(&c->fr);
}

/* Next line as a parsed JSON value (caller frees), or NULL on timeout/EOF/garbage. */
static inline struct proto_val *tconn_read(struct tconn *c, int timeout_ms)
{
    const char *line;
    size_t len;
    char buf[65536];
    for (;;) {
        if (proto_framer_next(&c->fr, &line, &len) == 1) return proto_parse(line, len, NULL);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, timeout_ms) <= 0) return NULL;
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n <= 0) return NULL;
        proto_framer_feed(&c->fr, buf, (size_t)n);
    }
}

static inline bool tconn_send(struct tconn *c, const char *text)
{
    return send_all(c->fd, text, strlen(text));
}

/* Sends a request (params JSON text or NULL) and returns the response (caller frees). */
static inline struct proto_val *tcall(struct tconn *c, int id, const char *method,
                                      const char *params)
{
    char *line =
        params ? ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\","
                             "\"params\":%s}\n",
                             id, method, params)
               : ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"}\n", id, method);
    bool ok = tconn_send(c, line);
    free(line);
    return ok ? tconn_read(c, 10000) : NULL;
}

static inline int64_t resp_error_code(const struct proto_val *r)
{
    return proto_int(proto_get(proto_get(r, "error"), "code"), 0);
}

static inline const char *resp_error_msg(const struct proto_val *r)
{
    const char *m = proto_get_str(proto_get(r, "error"), "message");
    return m ? m : "";
}

static inline const char *resp_error_type(const struct proto_val *r)
{
    const char *t = proto_get_str(proto_get(proto_get(r, "error"), "data"), "type");
    return t ? t : "";
}

static inline long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

#endif
