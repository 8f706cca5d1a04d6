/*
 * session.c - persistent code-interpreter sessions and their warm pool.
 *
 * A session is a sandbox whose pid 1 is python3 running sandbox/driver.py. Cells go to the
 * driver over a pipe (its fd 3), results come back over another (its fd 4), and the cell's
 * stdout/stderr pipes stay open for the session's life so output streams while a cell runs.
 *
 * Deadlines: at timeout the cell gets SIGINT, which the driver turns into KeyboardInterrupt in
 * the cell only, and the session lives on; if no result comes within kill_grace_ms (a cell that
 * swallows KeyboardInterrupt, or is stuck in C code) pid 1 gets SIGKILL and the session is
 * lost. An output cap passed mid-cell is handled the same way. A driver that dies on its own
 * (os._exit, a crash, the OOM killer) is reported with why, and sbx_session_restart brings up a
 * fresh one.
 *
 * The warm pool: a thread keeps pool_size sessions with default limits started and idle; taking
 * one costs a mutex, and the thread starts a replacement. The pool thread is the spawning
 * thread of those sessions (PR_SET_PDEATHSIG), so it lives as long as the context.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SBX_READY_TIMEOUT_MS 15000      /* driver start-up */
#define SBX_MAX_REPLY_BYTES  (8u << 20) /* a reply frame larger than this is a protocol error */

struct sbx_session {
    struct sbx_ctx *ctx;      /* owner */
    struct sbx_limits lim;    /* limits of this session */
    struct sbx__proc p;       /* the sandbox; p.pid 0 when dead */
    pthread_mutex_t mu;       /* guards p.pid/p.pidfd against sbx_session_interrupt */
    struct sbx_session *next; /* pool link */
};

struct sbx__pool {
    pthread_t thread;          /* keeps the pool filled */
    pthread_cond_t cv;         /* signalled when a session is taken or on stop */
    struct sbx_session *ready; /* started, idle sessions */
    int n_ready;
    int size; /* target */
    bool stop;
};

static void set_nonblock(int fd)
{
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Reads whatever the reply pipe holds into b; 0 at EOF, 1 when something came, -1 when none. */
static int read_some(int fd, struct ag_buf *b)
{
    char buf[65536];
    int got = -1;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return got;
        if (n == 0) return 0;
        ag_buf_append(b, buf, (size_t)n);
        got = 1;
        if (b->len > SBX_MAX_REPLY_BYTES + 4) return got;
    }
}

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* A complete frame at the front of b: 1 with body and len set, 0 when incomplete, -1 if bad. */
static int frame_at(const struct ag_buf *b, const char **body, size_t *len)
{
    if (b->len < 4) return 0;
    uint32_t n = be32(b->data);
    if (n == 0 || n > SBX_MAX_REPLY_BYTES) return -1;
    if (b->len < 4 + (size_t)n) return 0;
    *body = b->data + 4;
    *len = n;
    return 1;
}

/* Discards output waiting on the session's stdout/stderr (between cells). */
static void drain(struct sbx_session *s, struct sbx__capture *out, struct sbx__capture *er,
                  sbx_output_fn fn, void *ud)
{
    bool over = false;
    struct sbx__capture sink = {.max = 0};
    ag_buf_init(&sink.buf);
    if (s->p.out_fd >= 0) sbx__pump(s->p.out_fd, 1, out ? out : &sink, fn, ud, &over);
    if (s->p.err_fd >= 0) sbx__pump(s->p.err_fd, 2, er ? er : &sink, fn, ud, &over);
    ag_buf_release(&sink.buf);
}

static void kill_proc(struct sbx_session *s, int *status)
{
    pthread_mutex_lock(&s->mu);
    if (s->p.pid > 0) {
        sbx__proc_signal(&s->p, SIGKILL);
        sbx__proc_reap(&s->p, status);
    }
    sbx__proc_release(&s->p);
    pthread_mutex_unlock(&s->mu);
}

static int start(struct sbx_session *s, struct ag_err *err)
{
    const char *argv[] = {s->ctx->python, "-I", "-u", "-c", sbx__driver_py, NULL};
    struct sbx_limits lim = s->lim;
    lim.timeout_ms = 0; /* per cell, not per process */
    static const struct sbx__spawn_opts opts = {.session = true};
    int rc = sbx__spawn(s->ctx, &lim, argv, &opts, &s->p, err);
    if (rc != 0) return rc;
    set_nonblock(s->p.out_fd);
    set_nonblock(s->p.err_fd);
    set_nonblock(s->p.rep_fd);
    set_nonblock(s->p.cmd_fd);
    close(s->p.in_fd);
    s->p.in_fd = -1;

    /* Wait for the driver's hello; keep its stderr in case it dies first. */
    struct ag_buf rb;
    struct sbx__capture er = {.max = 4096};
    ag_buf_init(&rb);
    ag_buf_init(&er.buf);
    int64_t deadline = ag_now_ms() + SBX_READY_TIMEOUT_MS;
    rc = AG_ESANDBOX;
    for (;;) {
        struct pollfd fds[3] = {
            {s->p.rep_fd, POLLIN, 0}, {s->p.err_fd, POLLIN, 0}, {s->p.pidfd, POLLIN, 0}};
        int64_t wait = deadline - ag_now_ms();
        if (wait <= 0) {
            ag_err_set(err, AG_ESANDBOX, "the Python driver did not start within %d ms",
                       SBX_READY_TIMEOUT_MS);
            break;
        }
        if (poll(fds, 3, (int)wait) < 0 && errno != EINTR) break;
        bool over = false;
        if (fds[1].revents) sbx__pump(s->p.err_fd, 2, &er, NULL, NULL, &over);
        if (fds[0].revents && read_some(s->p.rep_fd, &rb) >= 0) {
            const char *body;
            size_t len;
            int f = frame_at(&rb, &body, &len);
            if (f == 1 && body[0] == 'H') {
                rc = 0;
                break;
            }
            if (f < 0) {
                ag_err_set(err, AG_ESANDBOX, "the Python driver sent a malformed hello");
                break;
            }
        }
        if (fds[2].revents) {
            sbx__pump(s->p.err_fd, 2, &er, NULL, NULL, &over);
            ag_err_set(err, AG_ESANDBOX, "the Python driver exited at start: %.300s",
                       er.buf.data ? er.buf.data : "(no output)");
            break;
        }
    }
    ag_buf_release(&rb);
    ag_buf_release(&er.buf);
    if (rc != 0) kill_proc(s, NULL);
    return rc;
}

static struct sbx_session *session_alloc(struct sbx_ctx *ctx, const struct sbx_limits *lim)
{
    struct sbx_session *s = ag_calloc(1, sizeof(*s));
    s->ctx = ctx;
    if (lim)
        s->lim = *lim;
    else
        sbx_limits_default(&s->lim);
    s->p.slot = -1;
    s->p.pidfd = s->p.in_fd = s->p.out_fd = s->p.err_fd = s->p.cmd_fd = s->p.rep_fd = s->p.ws_fd =
        -1;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void session_destroy(struct sbx_session *s)
{
    kill_proc(s, NULL);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int sbx_session_new(struct sbx_ctx *ctx, const struct sbx_limits *lim, struct sbx_session **out,
                    struct ag_err *err)
{
    if (!lim && ctx->pool) {
        pthread_mutex_lock(&ctx->mu);
        struct sbx_session *s = ctx->pool->ready;
        if (s) {
            ctx->pool->ready = s->next;
            ctx->pool->n_ready--;
            s->next = NULL;
            pthread_cond_signal(&ctx->pool->cv);
        }
        pthread_mutex_unlock(&ctx->mu);
        if (s && sbx_session_alive(s)) {
            *out = s;
            return 0;
        }
        if (s) session_destroy(s);
    }
    struct sbx_session *s = session_alloc(ctx, lim);
    int rc = start(s, err);
    if (rc != 0) {
        session_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

bool sbx_session_alive(struct sbx_session *s)
{
    pthread_mutex_lock(&s->mu);
    bool alive = s->p.pid > 0;
    pthread_mutex_unlock(&s->mu);
    return alive;
}

pid_t sbx_session_pid(struct sbx_session *s)
{
    pthread_mutex_lock(&s->mu);
    pid_t pid = s->p.pid;
    pthread_mutex_unlock(&s->mu);
    return pid;
}

int sbx_session_interrupt(struct sbx_session *s)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->p.pid > 0 ? 0 : AG_ESANDBOX;
    if (rc == 0) sbx__proc_signal(&s->p, SIGINT);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sbx_session_kill(struct sbx_session *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->p.pid > 0) sbx__proc_signal(&s->p, SIGKILL);
    pthread_mutex_unlock(&s->mu);
}

int sbx_session_restart(struct sbx_session *s, struct ag_err *err)
{
    kill_proc(s, NULL);
    return start(s, err);
}

void sbx_session_free(struct sbx_session *s)
{
    if (s) session_destroy(s);
}

/* Parses an 'R' body into res. */
static int parse_reply(const char *body, size_t len, struct sbx_result *res)
{
    size_t off = 1;
    res->ok = true;
    while (off < len) {
        if (len - off < 5) return -1;
        char tag = body[off];
        uint32_t n = be32(body + off + 1);
        off += 5;
        if (n > len - off) return -1;
        char *text = ag_strndup(body + off, n);
        off += n;
        char **slot = tag == 'v'   ? &res->value
                      : tag == 'n' ? &res->error_name
                      : tag == 'm' ? &res->error_message
                      : tag == 't' ? &res->traceback
                                   : NULL;
        if (!slot) {
            free(text);
            continue;
        }
        free(*slot);
        *slot = text;
    }
    if (res->error_name) res->ok = false;
    return 0;
}

int sbx_session_exec(struct sbx_session *s, const char *code, int64_t timeout_ms,
                     sbx_output_fn on_output, void *ud, struct sbx_result *res, struct ag_err *err)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    if (!sbx_session_alive(s))
        return ag_err_set(err, AG_ESANDBOX, "the session's interpreter is not running; restart it");
    size_t code_len = strlen(code);
    if (code_len > SBX_MAX_REPLY_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "code: %zu bytes, the limit is %u", code_len,
                          SBX_MAX_REPLY_BYTES);
    if (timeout_ms <= 0) timeout_ms = s->lim.timeout_ms;

    int64_t t0 = ag_now_ns();
    struct sbx__capture out = {.max = s->lim.stdout_max}, er = {.max = s->lim.stderr_max};
    ag_buf_init(&out.buf);
    ag_buf_init(&er.buf);
    drain(s, NULL, NULL, NULL, NULL); /* leftovers of background activity between cells */

    struct ag_buf frame, rb;
    ag_buf_init(&frame);
    ag_buf_init(&rb);
    uint32_t n = (uint32_t)code_len + 1;
    char hdr[5] = {(char)(n >> 24), (char)(n >> 16), (char)(n >> 8), (char)n, 'X'};
    ag_buf_append(&frame, hdr, 5);
    ag_buf_append(&frame, code, code_len);
    size_t w_off = 0;

    uint64_t oom_before = sbx__cg_oom_kills(&s->ctx->cg, s->p.slot);
    int64_t now = ag_now_ms();
    int64_t deadline = timeout_ms > 0 ? now + timeout_ms : INT64_MAX, kill_at = INT64_MAX;
    bool timed_out = false, over = false, interrupted = false, done = false, died = false;
    int status = 0;
    while (!done && !died) {
        struct pollfd fds[5];
        int nf = 0;
        fds[nf++] = (struct pollfd){s->p.rep_fd, POLLIN, 0};
        fds[nf++] = (struct pollfd){s->p.out_fd, POLLIN, 0};
        fds[nf++] = (struct pollfd){s->p.err_fd, POLLIN, 0};
        fds[nf++] = (struct pollfd){s->p.pidfd, POLLIN, 0};
        if (w_off < frame.len) fds[nf++] = (struct pollfd){s->p.cmd_fd, POLLOUT, 0};
        int64_t next = interrupted ? kill_at : deadline;
        int64_t wait = next == INT64_MAX ? 1000 : next - ag_now_ms();
        if (wait < 0) wait = 0;
        if (wait > 1000) wait = 1000;
        int r = poll(fds, (nfds_t)nf, (int)wait);
        if (r < 0 && errno != EINTR) break;
        now = ag_now_ms();
        if (!interrupted && now >= deadline) {
            timed_out = interrupted = true;
            kill_at = now + s->lim.kill_grace_ms;
            sbx_session_interrupt(s);
        } else if (interrupted && now >= kill_at) {
            pthread_mutex_lock(&s->mu);
            sbx__proc_signal(&s->p, SIGKILL);
            pthread_mutex_unlock(&s->mu);
            kill_at = INT64_MAX;
        }
        if (r <= 0) continue;
        if (fds[1].revents) sbx__pump(s->p.out_fd, 1, &out, on_output, ud, &over);
        if (fds[2].revents) sbx__pump(s->p.err_fd, 2, &er, on_output, ud, &over);
        if (over && !interrupted) {
            interrupted = true;
            kill_at = now + s->lim.kill_grace_ms;
            sbx_session_interrupt(s);
        }
        if (nf == 5 && fds[4].revents) {
            ssize_t wr = write(s->p.cmd_fd, frame.data + w_off, frame.len - w_off);
            if (wr > 0) w_off += (size_t)wr;
        }
        if (fds[0].revents) {
            int rr = read_some(s->p.rep_fd, &rb);
            const char *body;
            size_t len;
            int f = frame_at(&rb, &body, &len);
            if (f == 1 && body[0] == 'R' && parse_reply(body, len, res) == 0) {
                done = true;
            } else if (f < 0 || (f == 1) || rr == 0) {
                /* Garbage on the reply pipe (the cell wrote to it) or the pipe closed. */
                pthread_mutex_lock(&s->mu);
                sbx__proc_signal(&s->p, SIGKILL);
                pthread_mutex_unlock(&s->mu);
            }
        }
        if (fds[3].revents) died = true;
    }
    if (died) {
        /* Pid 1 is gone and took the tree with it: the pipes hold the last output. */
        drain(s, &out, &er, on_output, ud);
        pthread_mutex_lock(&s->mu);
        sbx__proc_reap(&s->p, &status);
        pthread_mutex_unlock(&s->mu);
        bool oom = sbx__cg_oom_kills(&s->ctx->cg, s->p.slot) > oom_before;
        kill_proc(s, NULL);
        sbx__classify(res, status, timed_out, over, oom);
        res->session_lost = true;
        res->ok = false;
        if (!res->error_name)
            res->error_name = ag_strdup(res->stop == SBX_STOP_MEMORY ? "MemoryLimit"
                                        : timed_out                  ? "Timeout"
                                                                     : "InterpreterDied");
        if (!res->error_message)
            res->error_message = ag_asprintf("the interpreter %s (%s); restart the session",
                                             res->stop == SBX_STOP_EXIT ? "exited" : "was killed",
                                             sbx_stop_name(res->stop));
    } else {
        drain(s, &out, &er, on_output, ud);
        res->stop = timed_out ? SBX_STOP_TIMEOUT : over ? SBX_STOP_OUTPUT : SBX_STOP_EXIT;
        res->exit_code = res->ok ? 0 : 1;
    }
    ag_buf_release(&frame);
    ag_buf_release(&rb);
    res->duration_us = (ag_now_ns() - t0) / 1000;
    res->out_truncated = out.truncated;
    res->err_truncated = er.truncated;
    sbx__capture_finish(&out, &res->out, &res->out_len);
    sbx__capture_finish(&er, &res->err, &res->err_len);
    return 0;
}

/* ---- workspace files ---- */

int sbx_session_put(struct sbx_session *s, const char *path, const void *data, size_t n,
                    struct ag_err *err)
{
    if (s->p.ws_fd < 0) return ag_err_set(err, AG_ESANDBOX, "the session has no workspace");
    return sbx__ws_put(s->p.ws_fd, sbx__host_uid(s->ctx, s->p.slot),
                       sbx__host_gid(s->ctx, s->p.slot), path, data, n, err);
}

int sbx_session_get(struct sbx_session *s, const char *path, size_t max_bytes, char **data,
                    size_t *n, struct ag_err *err)
{
    if (s->p.ws_fd < 0) return ag_err_set(err, AG_ESANDBOX, "the session has no workspace");
    return sbx__ws_get(s->p.ws_fd, sbx__host_uid(s->ctx, s->p.slot),
                       sbx__host_gid(s->ctx, s->p.slot), path, max_bytes, data, n, err);
}

/* ---- warm pool ---- */

static void *pool_main(void *arg)
{
    struct sbx_ctx *ctx = arg;
    struct sbx__pool *pool = ctx->pool;

    pthread_mutex_lock(&ctx->mu);
    while (!pool->stop) {
        if (pool->n_ready >= pool->size) {
            pthread_cond_wait(&pool->cv, &ctx->mu);
            continue;
        }
        pthread_mutex_unlock(&ctx->mu);
        struct sbx_session *s = session_alloc(ctx, NULL);
        struct ag_err e = {0};
        int rc = start(s, &e);
        pthread_mutex_lock(&ctx->mu);
        if (rc != 0) {
            pthread_mutex_unlock(&ctx->mu);
            ag_warn("sandbox pool: %s", e.msg);
            session_destroy(s);
            usleep(500000); /* do not spin when the host refuses sandboxes */
            pthread_mutex_lock(&ctx->mu);
            continue;
        }
        s->next = pool->ready;
        pool->ready = s;
        pool->n_ready++;
    }
    /* Sessions spawned by this thread die with it: free the idle ones first. */
    struct sbx_session *s = pool->ready;
    pool->ready = NULL;
    pool->n_ready = 0;
    pthread_mutex_unlock(&ctx->mu);
    while (s) {
        struct sbx_session *next = s->next;
        session_destroy(s);
        s = next;
    }
    return NULL;
}

void sbx__pool_start(struct sbx_ctx *ctx, int size)
{
    struct sbx__pool *pool = ag_calloc(1, sizeof(*pool));
    pool->size = size;
    pthread_cond_init(&pool->cv, NULL);
    ctx->pool = pool;
    if (pthread_create(&pool->thread, NULL, pool_main, ctx) != 0) {
        pthread_cond_destroy(&pool->cv);
        free(pool);
        ctx->pool = NULL;
    }
}

void sbx__pool_stop(struct sbx_ctx *ctx)
{
    struct sbx__pool *pool = ctx->pool;
    if (!pool) return;
    pthread_mutex_lock(&ctx->mu);
    pool->stop = true;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&ctx->mu);
    pthread_join(pool->thread, NULL);
    pthread_cond_destroy(&pool->cv);
    free(pool);
    ctx->pool = NULL;
}

int sbx__pool_ready(struct sbx_ctx *ctx)
{
    pthread_mutex_lock(&ctx->mu);
    int n = ctx->pool ? ctx->pool->n_ready : 0;
    pthread_mutex_unlock(&ctx->mu);
    return n;
}
