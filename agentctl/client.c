/*
 * client.c - the blocking JSON-RPC client behind every agentctl command.
 *
 * Plain POSIX sockets, no event loop: agentctl has one request in flight at a time, so a
 * non-blocking socket plus poll() with a deadline is all it needs. The socket is made
 * non-blocking after connect so that neither a write to a daemon that stopped reading nor a read
 * from one that stopped answering can outlive --timeout; poll() is where we wait.
 *
 * Responses are read through proto_framer, so a response of any length up to
 * CTL_MAX_FRAME_BYTES works however the kernel splits it. Lines that are not our response
 * (notifications, or a stale id) are skipped. send() uses MSG_NOSIGNAL: a daemon that went away
 * must give a message, not kill agentctl with SIGPIPE.
 */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* The error mentions how to start agentd when nothing listens at the path. */
static int connect_error(const char *path, int e, struct ag_err *err)
{
    if (e == ENOENT || e == ECONNREFUSED)
        return ag_err_set(err, AG_ECLOSED,
                          "cannot connect to %s: %s (is agentd running? start it with 'make run' "
                          "or 'build/agentd')",
                          path, strerror(e));
    if (e == EAGAIN || e == EINPROGRESS)
        return ag_err_set(err, AG_ETIMEOUT,
                          "cannot connect to %s: agentd is not accepting connections (timed out)",
                          path);
    return ag_err_set(err, AG_EIO, "cannot connect to %s: %s", path, strerror(e));
}

static void drop_connection(struct ctl_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static int64_t deadline_after(int64_t timeout_ms)
{
    return timeout_ms > 0 ? ag_now_ms() + timeout_ms : 0;
}

/* Waits until fd is ready for events. Returns 0, or AG_ETIMEOUT once deadline_ms (0: none) has
 * passed. Signals (EINTR) just recompute the time left. */
static int wait_ready(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int wait_ms = -1;
        if (deadline_ms) {
            int64_t left = deadline_ms - ag_now_ms();
            if (left <= 0) return AG_ETIMEOUT;
            wait_ms = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, wait_ms);
        if (n > 0) return 0; /* POLLHUP and POLLERR too: the next send/recv reports them */
        if (n < 0 && errno != EINTR) return AG_EIO;
    }
}

static int timeout_error(const struct ctl_client *c, const char *method, struct ag_err *err)
{
    return ag_err_set(err, AG_ETIMEOUT,
                      "agentd did not answer '%s' within %g s (use --timeout SECONDS to wait "
                      "longer, 0 to wait forever)",
                      method, (double)c->timeout_ms / 1000.0);
}

static int closed_error(const char *method, struct ag_err *err)
{
    return ag_err_set(err, AG_ECLOSED,
                      "agentd closed the connection before answering '%s' (did it stop? see its "
                      "log)",
                      method);
}

/* Writes all n bytes: partial writes continue where they stopped, EAGAIN waits in poll. */
static int send_all(struct ctl_client *c, const char *p, size_t n, int64_t deadline_ms,
                    const char *method, struct ag_err *err)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_ready(c->fd, POLLOUT, deadline_ms);
            if (rc == AG_ETIMEOUT) return timeout_error(c, method, err);
            if (rc) return ag_err_set(err, rc, "poll failed: %s", strerror(errno));
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) return closed_error(method, err);
        return ag_err_set(err, AG_EIO, "cannot send '%s' to agentd: %s", method,
                          w < 0 ? strerror(errno) : "short write");
    }
    return 0;
}

/* Reads more bytes into the framer. Returns 0, or an error (closed, timeout, I/O). */
static int fill(struct ctl_client *c, int64_t deadline_ms, const char *method, struct ag_err *err)
{
    char chunk[64 * 1024];

    for (;;) {
        ssize_t r = recv(c->fd, chunk, sizeof(chunk), 0);
        if (r > 0) {
            proto_framer_feed(&c->framer, chunk, (size_t)r);
            return 0;
        }
        if (r == 0) return closed_error(method, err);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_ready(c->fd, POLLIN, deadline_ms);
            if (rc == AG_ETIMEOUT) return timeout_error(c, method, err);
            if (rc) return ag_err_set(err, rc, "poll failed: %s", strerror(errno));
            continue;
        }
        if (errno == ECONNRESET) return closed_error(method, err);
        return ag_err_set(err, AG_EIO, "cannot read from agentd: %s", strerror(errno));
    }
}

/* Turns an error response into err (keeping the daemon's message) and records data.type. */
static int error_response(struct ctl_client *c, const struct proto_val *e, struct ag_err *err)
{
    int rpc_code = (int)proto_int(proto_get(e, "code"), PROTO_RPC_INTERNAL_ERROR);
    int code = proto_ag_code(rpc_code);
    const char *msg = proto_get_str(e, "message");
    const char *type = proto_get_str(proto_get(e, "data"), "type");

    /* Without data.type (a daemon from elsewhere), the wire code still names the error. */
    snprintf(c->err_type, sizeof(c->err_type), "%s", type ? type : ag_errname(code));
    if (!msg || !msg[0]) return ag_err_set(err, code, "agentd error %d", rpc_code);
    return ag_err_set(err, code, "%s", msg);
}

/*
 * Looks at one line. Returns 1 when it was the response to id (with *result or err set,
 * *rc the outcome), 0 when it is something to skip, or a negative code for a malformed line.
 */
static int take_line(struct ctl_client *c, const char *line, size_t len, int64_t id,
                     struct proto_val **result, int *rc, struct ag_err *err)
{
    struct ag_err perr = {0};
    struct proto_val *root = proto_parse(line, len, &perr);

    if (!root)
        return ag_err_set(err, AG_EPROTO, "agentd sent a line that is not JSON (%s)", perr.msg);
    if (proto_type(root) != PROTO_OBJECT) {
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO, "agentd sent a JSON %s where a message was expected",
                          proto_type_name(proto_type(root)));
    }
    const struct proto_val *rid = proto_get(root, "id");
    const struct proto_val *res = proto_get(root, "result");
    const struct proto_val *e = proto_get(root, "error");
    /* Ours: our id, or id null on an error (the daemon could not read our id back; with one
     * request in flight that error can only be about it). Anything else is a notification or a
     * response to an earlier request we gave up on. */
    bool ours = proto_is_int(rid)
                    ? proto_int(rid, 0) == id
                    : (e && (!rid || proto_type(rid) == PROTO_NULL) && !proto_get(root, "method"));
    if (!ours) {
        const char *method = proto_get_str(root, "method");
        if (method && !rid && c->on_notification)
            c->on_notification(c->notification_ud, method, proto_get(root, "params"));
        proto_val_free(root);
        return 0;
    }
    if (e)
        *rc = error_response(c, e, err);
    else if (res)
        *result = proto_val_dup(res), *rc = 0;
    else
        *rc = ag_err_set(err, AG_EPROTO, "agentd sent a response with neither result nor error");
    proto_val_free(root);
    return 1;
}

int ctl_call(struct ctl_client *c, const char *method, const struct proto_val *params,
             struct proto_val **result, struct ag_err *err)
{
    struct ag_buf out;
    struct proto_val *empty = NULL;
    int64_t id = c->next_id++;
    int64_t deadline_ms = deadline_after(c->timeout_ms);
    int rc;

    *result = NULL;
    c->err_type[0] = '\0';
    if (c->fd < 0) return ag_err_set(err, AG_ECLOSED, "not connected to agentd");
    if (!params) params = empty = proto_obj();
    ag_buf_init(&out);
    proto_write_request(&out, id, method, params);
    proto_val_free(empty);
    rc = send_all(c, out.data, out.len, deadline_ms, method, err);
    ag_buf_release(&out);

    while (rc == 0) {
        const char *line;
        size_t len;
        int got = proto_framer_next(&c->framer, &line, &len);
        if (got == AG_ETOOBIG) {
            rc = ag_err_set(err, AG_ETOOBIG, "agentd's answer to '%s' is longer than %u MiB",
                            method, CTL_MAX_FRAME_BYTES >> 20);
            break;
        }
        if (got == 0) {
            rc = fill(c, deadline_ms, method, err);
            continue;
        }
        int call_rc = 0;
        got = take_line(c, line, len, id, result, &call_rc, err);
        if (got < 0) rc = got;
        if (got == 1) return call_rc; /* the connection stays usable after an error response */
    }
    /* The stream is out of step (or gone): a later response could be mistaken for another's. */
    drop_connection(c);
    return rc;
}

int ctl_open(struct ctl_client *c, const char *path, int64_t timeout_ms, struct ag_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct proto_val *params, *client, *result = NULL;
    int rc;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    proto_framer_init(&c->framer, CTL_MAX_FRAME_BYTES);
    if (strlen(path) >= sizeof(sa.sun_path) || strlen(path) >= sizeof(c->path))
        return ag_err_set(err, AG_EINVAL, "socket path '%s' is longer than %zu bytes", path,
                          sizeof(sa.sun_path) - 1);
    if (!path[0]) return ag_err_set(err, AG_EINVAL, "socket path is empty");
    memcpy(sa.sun_path, path, strlen(path) + 1);
    memcpy(c->path, path, strlen(path) + 1);

    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    /* A blocking connect to a Unix socket waits only when the listener's backlog is full;
     * SO_SNDTIMEO bounds that wait by --timeout too. */
    if (timeout_ms > 0) {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR) continue;
        if (errno == EISCONN) break; /* an interrupted connect that completed meanwhile */
        int e = errno;
        drop_connection(c);
        return connect_error(path, e, err);
    }
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        drop_connection(c);
        return ag_err_set(err, AG_EIO, "fcntl: %s", strerror(e));
    }

    params = proto_obj();
    proto_add_str(params, "protocol_version", PROTO_VERSION);
    client = proto_add(params, "client", proto_obj());
    proto_add_str(client, "name", "agentctl");
    proto_add_str(client, "version", CTL_VERSION);
    rc = ctl_call(c, "initialize", params, &result, err);
    proto_val_free(params);
    if (rc) {
        drop_connection(c);
        return rc;
    }
    c->server = result;
    return 0;
}

void ctl_close(struct ctl_client *c)
{
    drop_connection(c);
    proto_framer_release(&c->framer);
    proto_val_free(c->server);
    c->server = NULL;
}
