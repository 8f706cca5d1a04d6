/*
 * server.c - the Unix-socket front door: accept clients, split their bytes into requests,
 * dispatch, and write responses back with bounded memory.
 *
 * Reads land in one loop-wide buffer and are copied into the connection's framer; every request
 * in a read is answered into one output buffer, written with a single uv_try_write (the common
 * case costs one read and one write system call, like Redis). What the kernel does not take is
 * queued with uv_write; a client that sends but never reads is paused once AGENTD_OUT_HIGH_BYTES
 * are queued, and resumed when the queue drains, so it cannot grow the daemon without bound.
 *
 * A connection is freed when its handle is closed and no storage job still refers to it.
 */
#include "agentd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char read_buf[64 * 1024]; /* shared by all reads: the loop is single-threaded */

struct wreq {
    uv_write_t req; /* libuv request; req.data is the connection */
    char *data;     /* owned bytes being written */
};

static void conn_process(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0) return;
    proto_framer_release(&c->fr);
    ag_buf_release(&c->out);
    free(c);
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct agentd *d = c->d;

    ag_list_remove(&c->node);
    d->n_conns--;
    conn_unref(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing) return;
    c->closing = true;
    engd_conn_gone(c);
    webd_conn_gone(c);
    runner_conn_gone(c);
    if (proto_framer_pending(&c->fr))
        ag_debug("client %llu: closed with %zu bytes of an incomplete request",
                 (unsigned long long)c->id, proto_framer_pending(&c->fr));
    ag_debug("client %llu: disconnected", (unsigned long long)c->id);
    uv_close((uv_handle_t *)&c->pipe, on_close);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    free(req);
    conn_close(c);
    conn_unref(c);
}

/* After EOF: once nothing is in flight and everything is flushed, shut down and close. */
static void conn_finish_if_done(struct conn *c)
{
    if (!c->eof || c->busy || c->closing) return;
    uv_shutdown_t *req = ag_malloc(sizeof(*req));
    req->data = c;
    c->refs++;
    if (uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
        free(req);
        c->refs--;
        conn_close(c);
    }
}

static size_t queued_bytes(struct conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* Reads only while the client is not over its output or input budget. */
static void conn_update_reading(struct conn *c)
{
    bool want = !c->eof && !c->closing && queued_bytes(c) < AGENTD_OUT_HIGH_BYTES &&
                !(c->busy && proto_framer_pending(&c->fr) > AGENTD_IN_PAUSE_BYTES);
    if (want && !c->reading) {
        if (queued_bytes(c) > AGENTD_OUT_LOW_BYTES) return;
        if (uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, on_read) == 0) c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = req->data;

    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        ag_debug("client %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(status));
        conn_close(c);
    } else if (!c->closing) {
        conn_update_reading(c);
    }
    conn_unref(c);
}

static void conn_flush(struct conn *c)
{
    size_t off = 0;

    if (c->closing || c->out.len == 0) return;
    if (queued_bytes(c) == 0) {
        uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
        int n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
        if (n > 0) {
            off = (size_t)n;
        } else if (n != UV_EAGAIN) {
            ag_debug("client %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(n));
            conn_close(c);
            return;
        }
    }
    if (off == c->out.len) {
        ag_buf_reset(&c->out);
        return;
    }
    struct wreq *w = ag_malloc(sizeof(*w));
    size_t len;
    if (off == 0) {
        w->data = ag_buf_detach(&c->out, &len);
    } else {
        len = c->out.len - off;
        w->data = ag_strndup(c->out.data + off, len);
        ag_buf_reset(&c->out);
    }
    w->req.data = c;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    c->refs++;
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write) != 0) {
        free(w->data);
        free(w);
        c->refs--;
        conn_close(c);
        return;
    }
    conn_update_reading(c);
}

void conn_reply(struct conn *c, const struct proto_val *id, const struct proto_val *result)
{
    c->d->n_requests++;
    if (id) proto_write_result(&c->out, id, result);
}

void conn_reply_error(struct conn *c, const struct proto_val *id, const struct ag_err *err)
{
    c->d->n_requests++;
    proto_write_error(&c->out, id, err->code ? err->code : AG_EINTERNAL, err->msg, NULL);
}

void conn_reply_error_data(struct conn *c, const struct proto_val *id, const struct ag_err *err,
                           const struct proto_val *data)
{
    c->d->n_requests++;
    proto_write_error(&c->out, id, err->code ? err->code : AG_EINTERNAL, err->msg, data);
}

void conn_notify(struct conn *c, const char *method, const struct proto_val *params)
{
    if (c->closing) return;
    proto_write_notification(&c->out, method, params);
    conn_flush(c);
}

void conn_begin_async(struct conn *c)
{
    c->busy = true;
    c->refs++;
}

void conn_end_async(struct conn *c)
{
    c->busy = false;
    if (!c->closing) {
        conn_process(c);
        conn_flush(c);
        conn_update_reading(c);
        conn_finish_if_done(c);
    }
    conn_unref(c);
}

static void handle_frame(struct conn *c, const char *line, size_t len)
{
    struct proto_req req;
    struct proto_val *bad_id = NULL, *result = NULL;
    struct ag_err err = {0};
    int rc = proto_req_parse(line, len, &req, &bad_id, &err);

    if (rc != 0) {
        /* JSON-RPC: errors in the envelope are answered (id null when unknown). */
        ag_debug("client %llu: bad request: %s", (unsigned long long)c->id, err.msg);
        conn_reply_error(c, bad_id, &err);
        proto_val_free(bad_id);
        return;
    }
    rc = methods_dispatch(c, &req, &result, &err);
    if (rc == METHOD_ASYNC) return;
    if (rc == 0) {
        conn_reply(c, req.id, result);
    } else if (req.id) {
        conn_reply_error(c, req.id, &err);
    } else {
        ag_debug("client %llu: notification %s failed: %s", (unsigned long long)c->id, req.method,
                 err.msg);
    }
    proto_val_free(result);
    proto_req_release(&req);
}

static void conn_process(struct conn *c)
{
    const char *line;
    size_t len;
    int rc;

    while (!c->busy && !c->closing && (rc = proto_framer_next(&c->fr, &line, &len)) != 0) {
        if (rc == AG_ETOOBIG) {
            struct ag_err err;
            ag_err_set(&err, AG_ETOOBIG,
                       "request line exceeds the %zu-byte frame limit and was discarded",
                       c->fr.max_frame);
            ag_warn("client %llu: %s", (unsigned long long)c->id, err.msg);
            conn_reply_error(c, NULL, &err);
            continue;
        }
        handle_frame(c, line, len);
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (n < 0) {
        if (n != UV_EOF)
            ag_debug("client %llu: read failed: %s", (unsigned long long)c->id,
                     uv_strerror((int)n));
        if (n != UV_EOF) {
            conn_close(c);
            return;
        }
        /* The client finished sending: answer what it sent, then close. A generation it waits
         * for is cancelled: nobody is reading the tokens. */
        engd_conn_gone(c);
        uv_read_stop(s);
        c->reading = false;
        c->eof = true;
        conn_process(c);
        conn_flush(c);
        conn_finish_if_done(c);
        return;
    }
    if (n == 0) return;
    proto_framer_feed(&c->fr, buf->base, (size_t)n);
    conn_process(c);
    conn_flush(c);
    conn_update_reading(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct agentd *d = server->data;
    struct conn *c;
    struct ucred cred;
    socklen_t cred_len = sizeof(cred);
    uv_os_fd_t fd;

    if (status < 0) {
        ag_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    c = ag_calloc(1, sizeof(*c));
    c->d = d;
    c->id = ++d->next_conn_id;
    c->refs = 1;
    proto_framer_init(&c->fr, d->cfg.max_frame_bytes);
    uv_pipe_init(d->loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        uv_close((uv_handle_t *)&c->pipe, (uv_close_cb)free);
        proto_framer_release(&c->fr);
        return;
    }
    ag_list_insert_head(&d->conns, &c->node);
    d->n_conns++;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0) {
        c->uid = cred.uid;
        c->pid = cred.pid;
    }
    ag_info("client %llu: connected (uid %u, pid %d)", (unsigned long long)c->id, (unsigned)c->uid,
            (int)c->pid);
    if (d->draining) {
        conn_close(c);
        return;
    }
    conn_update_reading(c);
}

/* Refuses to take over a socket that a live daemon still answers on; removes a stale one. */
static int claim_socket_path(const char *path, struct ag_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;

    if (lstat(path, &st) != 0) return 0;
    if (!S_ISSOCK(st.st_mode))
        return ag_err_set(err, AG_EEXISTS,
                          "%s exists and is not a socket; remove it or pick "
                          "another path with --socket",
                          path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ag_err_set(err, AG_EIO, "socket: %s", strerror(errno));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    if (live) return ag_err_set(err, AG_ELOCKED, "another agentd is already listening on %s", path);
    if (unlink(path) != 0 && errno != ENOENT)
        return ag_err_set(err, AG_EIO, "cannot remove stale socket %s: %s", path, strerror(errno));
    return 0;
}

int server_start(struct agentd *d, struct ag_err *err)
{
    const char *path = d->cfg.socket_path;
    int rc;

    if ((rc = claim_socket_path(path, err)) != 0) return rc;
    uv_pipe_init(d->loop, &d->listener, 0);
    d->listener.data = d;
    /* Create the socket file with mode 0600 from the start: no window where others may connect. */
    mode_t old = umask(0177);
    rc = uv_pipe_bind(&d->listener, path);
    umask(old);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&d->listener, 511, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)&d->listener, NULL);
        return ag_err_set(err, AG_EIO, "cannot listen on %s: %s", path, uv_strerror(rc));
    }
    chmod(path, 0600);
    d->listening = true;
    return 0;
}

void server_stop_listening(struct agentd *d)
{
    if (!d->listening) return;
    d->listening = false;
    uv_close((uv_handle_t *)&d->listener, NULL);
    unlink(d->cfg.socket_path);
}

void server_close_all(struct agentd *d)
{
    ag_list_foreach (it, &d->conns) conn_close(ag_list_entry(it, struct conn, node));
}
