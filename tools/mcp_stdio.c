/*
 * mcp_stdio.c - the stdio transport of the MCP client: the server is a child process that
 * reads JSON-RPC messages on its stdin and writes them on its stdout, one per line.
 *
 * When is a server gone? Its process exits, or it closes its stdout. Neither alone is enough
 * to fail the calls: an answer written just before exit may still be in the pipe when the exit
 * is reported, so the loss is reported once both the exit and stdout's end have been seen. A
 * server that closes stdout but lives on is terminated; one that exits while a grandchild keeps
 * the pipe open is given a second, then its pipe is closed all the same.
 *
 * The child runs in its own session (UV_PROCESS_DETACHED), so stopping signals its whole
 * process group: a server that starts helpers takes them with it. Stopping closes stdin first
 * (the polite way the MCP spec describes), sends SIGTERM, and SIGKILL two seconds later; the
 * handles are closed only after the exit has been reaped, so no zombie is left behind.
 *
 * stderr is the server's log: each line goes to ag_debug and the last few KiB are kept, so a
 * crash can be explained with the server's own words.
 *
 * Sandboxed servers (cfg.sandbox). The process is made by sbx_proc_spawn instead of uv_spawn:
 * pid 1 of its own pid namespace, so killing it ends its whole tree, and no process group is
 * signalled. Its three pipe ends are wrapped with uv_pipe_open. libuv does not know the
 * process, so its exit is watched through its pidfd with a uv_poll: the pidfd turns readable
 * once pid 1 is a zombie, and a non-blocking sbx_proc_wait reaps it (retried on a short timer
 * should the wait not see it yet, and polled on that timer alone on a kernel without pidfds).
 * This beats waiting for stdout's end and then reaping: a grandchild holding the pipe open
 * would leave that wait with nothing to go on, and the loop thread must never block in
 * waitpid. Pid 1 ignores SIGTERM unless it handles it, so a server that does not leave on
 * stdin's end is SIGKILLed after the same two seconds. The sandbox binds, read-only, the
 * paths of cfg.sandbox_paths, cfg.cwd (the working directory inside) and the program's
 * directory when command is a path (the program alone when that directory is /, /tmp or
 * /work, which the sandbox makes of its own); a program that would not be visible inside fails the
 * start with a message that says so. The spawn itself blocks the loop until the program is
 * exec'ed (the sandbox's setup, a few milliseconds), as uv_spawn's fork and exec do.
 */
#include "mcp_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KILL_GRACE_MS 2000 /* SIGTERM to SIGKILL */
#define EOF_WAIT_MS   1000 /* after the exit, how long stdout may stay open */
#define TAIL_BYTES    4096 /* stderr kept */
#define LOG_LINE_MAX  512  /* a stderr line longer than this is logged cut */
#define REAP_RETRY_MS 20   /* sandboxed: the next non-blocking reap after one that was early */
#define REAP_POLL_MS  100  /* sandboxed, no pidfd: how often to look for the exit */

extern char **environ;

struct proc {
    struct mcp_client *c;
    uv_process_t proc;      /* not sandboxed: the child */
    struct sbx_proc *sp;    /* sandboxed: the sandbox, freed with the last handle */
    uv_poll_t exitw;        /* sandboxed: the pidfd, readable at the exit (when polling) */
    uv_timer_t reap;        /* sandboxed: retries of the non-blocking reap */
    bool sandboxed;         /* cfg.sandbox: sp and reap are used, proc is not */
    bool polling;           /* sandboxed, and exitw watches the pidfd */
    uv_pipe_t in, out, err; /* the child's stdin, stdout, stderr */
    uv_timer_t timer;       /* SIGKILL after SIGTERM, or the wait for stdout's end */
    int open;               /* handles not yet closed */
    bool counted;           /* handed to the client (which waits for mcp__gone) */
    bool spawned, exited, out_eof, err_eof, in_closed, closing, lost;
    bool oom; /* sandboxed: the memory limit's OOM killer fired */
    int64_t exit_status;
    int term_signal;
    struct mcp__lines lines;   /* stdout, split into messages */
    char obuf[64 << 10];       /* stdout read buffer */
    char ebuf[4096];           /* stderr read buffer */
    char tail[TAIL_BYTES + 1]; /* the last stderr bytes, NUL-terminated */
    size_t tail_len;
    char logline[LOG_LINE_MAX + 1]; /* the stderr line being gathered for ag_debug */
    size_t logline_len;
};

static void on_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->open > 0) return;
    struct mcp_client *c = p->c;
    bool counted = p->counted;
    mcp__lines_release(&p->lines);
    /* Reaped by now, except when the start failed half-way: then this kills and reaps. */
    if (p->sp) sbx_proc_free(p->sp);
    free(p);
    if (counted) mcp__gone(c);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, on_closed);
}

/* Every handle at once: only once the exit has been reaped (or the spawn failed). */
static void close_all(struct proc *p)
{
    close_handle((uv_handle_t *)&p->in);
    close_handle((uv_handle_t *)&p->out);
    close_handle((uv_handle_t *)&p->err);
    close_handle((uv_handle_t *)&p->timer);
    if (!p->sandboxed) {
        close_handle((uv_handle_t *)&p->proc);
        return;
    }
    close_handle((uv_handle_t *)&p->reap);
    if (p->polling) close_handle((uv_handle_t *)&p->exitw);
}

static void signal_group(struct proc *p, int sig)
{
    if (!p->spawned || p->exited) return;
    /* Pid 1 of the sandbox: SIGKILL takes its namespace with it. */
    if (p->sandboxed)
        sbx_proc_kill(p->sp, sig);
    else if (p->proc.pid > 0)
        kill(-p->proc.pid, sig); /* after the exit the pid may belong to someone else already */
}

static void on_kill_timer(uv_timer_t *t)
{
    struct proc *p = t->data;
    ag_debug("MCP server '%s' ignored SIGTERM; sending SIGKILL", mcp__config(p->c)->name);
    signal_group(p, SIGKILL);
}

static void terminate(struct proc *p)
{
    if (p->exited || uv_is_active((uv_handle_t *)&p->timer)) return;
    signal_group(p, SIGTERM);
    uv_timer_start(&p->timer, on_kill_timer, KILL_GRACE_MS, 0);
}

static void drain_stderr(struct proc *p);

/* Reports the loss once the exit and stdout's end are both in. */
static void check_lost(struct proc *p)
{
    if (!p->exited || !p->out_eof || p->lost) return;
    p->lost = true;
    if (p->closing) {
        close_all(p);
        return;
    }
    drain_stderr(p);
    char why[128];
    if (p->term_signal)
        snprintf(why, sizeof(why), "was killed by signal %d (%s)%s", p->term_signal,
                 strsignal(p->term_signal), p->oom ? " at its sandbox's memory limit" : "");
    else
        snprintf(why, sizeof(why), "exited (status %lld)", (long long)p->exit_status);
    mcp__lost(p->c, p, why); /* closes p through mcp__stdio.close */
}

static void on_eof_wait(uv_timer_t *t)
{
    struct proc *p = t->data;
    if (!p->out_eof) {
        p->out_eof = true;
        uv_read_stop((uv_stream_t *)&p->out);
    }
    check_lost(p);
}

static void exited(struct proc *p, int64_t status, int term_signal)
{
    p->exited = true;
    p->exit_status = status;
    p->term_signal = term_signal;
    uv_timer_stop(&p->timer);
    if (p->closing) {
        close_all(p);
        return;
    }
    if (!p->out_eof) uv_timer_start(&p->timer, on_eof_wait, EOF_WAIT_MS, 0);
    check_lost(p);
}

static void on_proc_exit(uv_process_t *h, int64_t status, int term_signal)
{
    exited(h->data, status, term_signal);
}

/* Sandboxed: reaps pid 1 if it has exited; true when it had. */
static bool try_reap(struct proc *p)
{
    int st = 0;
    bool oom = false;
    int rc = sbx_proc_wait(p->sp, false, &st, &oom);
    if (rc == 0) return false;
    if (p->polling) uv_poll_stop(&p->exitw);
    uv_timer_stop(&p->reap);
    p->oom = oom;
    if (rc < 0)
        exited(p, -1, 0); /* cannot happen with a pid we own; treat it as gone */
    else if (WIFSIGNALED(st))
        exited(p, 0, WTERMSIG(st));
    else
        exited(p, WEXITSTATUS(st), 0);
    return true;
}

static void on_reap_timer(uv_timer_t *t)
{
    struct proc *p = t->data;
    if (!p->exited && !try_reap(p))
        uv_timer_start(&p->reap, on_reap_timer, p->polling ? REAP_RETRY_MS : REAP_POLL_MS, 0);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
    struct proc *p = h->data;
    (void)events;
    if (p->exited) return;
    if (status < 0 || !try_reap(p)) {
        /* Readable before the wait sees it, or a poll error: look again shortly. */
        uv_poll_stop(h);
        uv_timer_start(&p->reap, on_reap_timer, REAP_RETRY_MS, 0);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct proc *p = h->data;
    (void)suggested;
    if (h == (uv_handle_t *)&p->out)
        *buf = uv_buf_init(p->obuf, sizeof(p->obuf));
    else
        *buf = uv_buf_init(p->ebuf, sizeof(p->ebuf));
}

static void on_line(void *ud, const char *line, size_t len, size_t bytes)
{
    struct proc *p = ud;
    if (p->closing) return;
    if (bytes)
        mcp__received_too_big(p->c, p, line, len, bytes);
    else
        mcp__received(p->c, p, line, len);
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct proc *p = s->data;
    if (n > 0) {
        mcp__lines_feed(&p->lines, buf->base, (size_t)n, on_line, p);
        return;
    }
    if (n == 0) return;
    /* EOF or a read error: the server can no longer answer. */
    uv_read_stop(s);
    p->out_eof = true;
    if (p->closing) return;
    if (!p->exited) {
        ag_debug("MCP server '%s' closed its stdout; terminating it", mcp__config(p->c)->name);
        terminate(p);
        return;
    }
    uv_timer_stop(&p->timer);
    check_lost(p);
}

static void log_stderr(struct proc *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') {
            p->logline[p->logline_len] = '\0';
            ag_debug("MCP server '%s' stderr: %s", mcp__config(p->c)->name, p->logline);
            p->logline_len = 0;
        } else if (p->logline_len < LOG_LINE_MAX) {
            p->logline[p->logline_len++] = s[i];
        }
    }
}

/* Adds k bytes of the server's stderr to the tail (and to the debug log). */
static void keep_stderr(struct proc *p, const char *d, size_t k)
{
    if (k >= TAIL_BYTES) {
        memcpy(p->tail, d + k - TAIL_BYTES, TAIL_BYTES);
        p->tail_len = TAIL_BYTES;
    } else {
        if (p->tail_len + k > TAIL_BYTES) {
            size_t drop = p->tail_len + k - TAIL_BYTES;
            memmove(p->tail, p->tail + drop, p->tail_len - drop);
            p->tail_len -= drop;
        }
        memcpy(p->tail + p->tail_len, d, k);
        p->tail_len += k;
    }
    p->tail[p->tail_len] = '\0';
    if (ag_log_get_level() >= AG_LOG_DEBUG) log_stderr(p, d, k);
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct proc *p = s->data;
    if (n < 0) {
        uv_read_stop(s);
        p->err_eof = true;
        return;
    }
    keep_stderr(p, buf->base, (size_t)n);
}

/* What stderr holds now, read at once: the exit and stdout's end can come in the same loop
 * iteration as the server's last words, before their read callback, and the loss is
 * explained with them. The pipe is non-blocking (libuv made it so). */
static void drain_stderr(struct proc *p)
{
    uv_os_fd_t fd;
    if (p->err_eof || uv_fileno((uv_handle_t *)&p->err, &fd) != 0) return;
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(fd, p->ebuf, sizeof(p->ebuf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        keep_stderr(p, p->ebuf, (size_t)n);
    }
}

/* agentd's environment with cfg's "K=V" entries added or replacing; caller frees the array
 * (the strings are borrowed). */
static char **make_env(char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ && environ[n]) n++;
    while (extra && extra[m]) m++;
    char **env = ag_calloc(n + m + 1, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < m && !replaced; j++)
            replaced = strncmp(extra[j], environ[i], kl) == 0 && extra[j][kl] == '=';
        if (!replaced) env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++) env[k++] = extra[j];
    return env;
}

/* Sandboxed: spawns with sbx_proc_spawn and wraps the pipe ends; 0 or an AG_E code. */
static int sandbox_start(struct proc *p, const struct mcp__cfg *cfg, char **argv,
                         struct ag_err *err)
{
    uv_loop_t *loop = mcp__loop(p->c);
    const char *paths[SBX_MAX_PATHS + 3];
    size_t n = 0;
    char dir[SBX_MAX_PATH_LEN];
    for (; cfg->sandbox_paths && cfg->sandbox_paths[n] && n < SBX_MAX_PATHS + 1; n++)
        paths[n] = cfg->sandbox_paths[n];
    if (cfg->cwd) paths[n++] = cfg->cwd;
    /* The program's directory, or the program alone where its directory is one the sandbox
     * makes of its own (/, /tmp, /work). */
    const char *slash = strrchr(cfg->command, '/');
    if (cfg->command[0] == '/' && (size_t)(slash - cfg->command) < sizeof(dir)) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - cfg->command), cfg->command);
        bool own = !dir[0] || strcmp(dir, "/tmp") == 0 || strcmp(dir, "/work") == 0;
        paths[n++] = own ? cfg->command : dir;
    }
    paths[n] = NULL;
    struct sbx_proc_req req = {
        .argv = (const char *const *)argv,
        .env = (const char *const *)cfg->env,
        .cwd = cfg->cwd,
        .paths = paths,
        .limits = &cfg->sandbox_limits,
        .network = cfg->sandbox_network,
    };
    int fds[3] = {-1, -1, -1};
    int rc = sbx_proc_spawn(cfg->sandbox, &req, &p->sp, &fds[0], &fds[1], &fds[2], err);
    if (rc != 0) return rc;
    uv_pipe_t *pipes[3] = {&p->in, &p->out, &p->err};
    for (int i = 0; i < 3; i++) {
        int e = uv_pipe_open(pipes[i], fds[i]);
        if (e == 0) continue;
        for (int k = i; k < 3; k++) close(fds[k]);
        return ag_err_set(err, AG_EIO, "cannot watch the sandbox's pipes: %s", uv_strerror(e));
    }
    int pidfd = sbx_proc_pidfd(p->sp);
    if (pidfd >= 0 && uv_poll_init(loop, &p->exitw, pidfd) == 0) {
        p->exitw.data = p;
        p->polling = true;
        p->open++;
        uv_poll_start(&p->exitw, UV_READABLE, on_pidfd);
    } else {
        uv_timer_start(&p->reap, on_reap_timer, REAP_POLL_MS, 0);
    }
    return 0;
}

static void *stdio_start(struct mcp_client *c, struct ag_err *err)
{
    const struct mcp__cfg *cfg = mcp__config(c);
    uv_loop_t *loop = mcp__loop(c);
    struct proc *p = ag_calloc(1, sizeof(*p));
    p->c = c;
    p->sandboxed = cfg->sandbox != NULL;
    mcp__lines_init(&p->lines, cfg->max_message_bytes);
    uv_pipe_init(loop, &p->in, 0);
    uv_pipe_init(loop, &p->out, 0);
    uv_pipe_init(loop, &p->err, 0);
    uv_timer_init(loop, &p->timer);
    p->in.data = p->out.data = p->err.data = p->timer.data = p->proc.data = p;
    if (p->sandboxed) {
        uv_timer_init(loop, &p->reap);
        p->reap.data = p;
    }

    size_t n_args = 0;
    while (cfg->args && cfg->args[n_args]) n_args++;
    char **argv = ag_calloc(n_args + 2, sizeof(*argv));
    argv[0] = cfg->command;
    for (size_t i = 0; i < n_args; i++) argv[i + 1] = cfg->args[i];
    if (p->sandboxed) {
        p->open = 5;
        int rc = sandbox_start(p, cfg, argv, err);
        free(argv);
        if (rc != 0) {
            close_all(p);
            return NULL;
        }
        p->spawned = true;
        p->counted = true;
        uv_read_start((uv_stream_t *)&p->out, on_alloc, on_out);
        uv_read_start((uv_stream_t *)&p->err, on_alloc, on_err);
        ag_debug("MCP server '%s' started in a sandbox: %s (pid %d)", cfg->name, cfg->command,
                 (int)sbx_proc_pid(p->sp));
        return p;
    }
    char **env = make_env(cfg->env);

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&p->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err;
    uv_process_options_t o = {
        .exit_cb = on_proc_exit,
        .file = cfg->command,
        .args = argv,
        .env = env,
        .cwd = cfg->cwd,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(loop, &p->proc, &o);
    free(argv);
    free(env);
    p->open = 5;
    if (rc != 0) {
        /* The process handle was initialized all the same and must be closed too. */
        ag_err_set(err, rc == UV_ENOENT ? AG_ENOTFOUND : AG_EIO, "cannot run '%s': %s%s",
                   cfg->command, uv_strerror(rc),
                   rc == UV_ENOENT ? " (is it installed and on PATH?)" : "");
        close_all(p);
        return NULL;
    }
    p->spawned = true;
    p->counted = true;
    uv_read_start((uv_stream_t *)&p->out, on_alloc, on_out);
    uv_read_start((uv_stream_t *)&p->err, on_alloc, on_err);
    ag_debug("MCP server '%s' started: %s (pid %d)", cfg->name, cfg->command, p->proc.pid);
    return p;
}

struct write_req {
    uv_write_t req;
    char data[]; /* the message and its newline */
};

static void on_written(uv_write_t *w, int status)
{
    /* A failed write (EPIPE: the server is gone) shows up as its exit; nothing to do here. */
    (void)status;
    free(w);
}

static void stdio_send(void *tp, int64_t id, const char *json, size_t n)
{
    struct proc *p = tp;
    (void)id;
    if (p->closing || p->exited || p->in_closed) return;
    struct write_req *w = ag_malloc(sizeof(*w) + n + 1);
    memcpy(w->data, json, n);
    w->data[n] = '\n';
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + 1));
    if (uv_write(&w->req, (uv_stream_t *)&p->in, &b, 1, on_written) != 0) free(w);
}

static void stdio_close(void *tp)
{
    struct proc *p = tp;
    if (p->closing) return;
    p->closing = true;
    if (p->exited) {
        close_all(p);
        return;
    }
    /* EOF on stdin first: a well-behaved server exits on it. */
    p->in_closed = true;
    close_handle((uv_handle_t *)&p->in);
    uv_timer_stop(&p->timer);
    terminate(p);
}

static const char *stdio_stderr_tail(void *tp)
{
    struct proc *p = tp;
    return p->tail;
}

const struct mcp__transport mcp__stdio = {
    .name = "stdio",
    .start = stdio_start,
    .send = stdio_send,
    .close = stdio_close,
    .stderr_tail = stdio_stderr_tail,
};
