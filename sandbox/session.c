/*
 * session.c - persistent code-interpreter sessions and their warm pool.
 *
 * A session is a sandbox whose pid 1 is python3 running sandbox/driver.py. Cells go to the
 * driver over a pipe (its fd 3), results come back over another (its fd 4), and the cell's
 * stdout/stderr pipes stay open for the session's life so output streams while a cell runs.
 *
 * The cell's code runs in the driver's process, so it can write anything to the reply pipe (it
 * can find it in /proc/self/fd). Each cell therefore carries a fresh random nonce, and its
 * answer is the first frame that starts with that nonce: every other byte on the pipe is
 * dropped as it is read, so a forged or stray frame can neither answer another cell nor grow
 * the daemon's memory, and a field longer than the driver's cap is cut here as well. (Code that
 * reads the nonce out of the driver's own memory can answer for its own cell, which it could do
 * anyway by returning what it likes; a session's cells trust each other, like a notebook's.)
 * The deadlines below are the daemon's own and hold whatever comes on the pipe.
 *
 * A pipe that reaches end of file (a cell that closes its stdout, a driver that lost its
 * command pipe) is closed or the interpreter killed at once, so no hung-up fd stays in a poll
 * set: a sleeping session costs the daemon nothing.
 *
 * Deadlines: at timeout the cell gets SIGINT, which the driver turns into KeyboardInterrupt in
 * the cell only, and the session lives on; if no result comes within kill_grace_ms (a cell that
 * swallows KeyboardInterrupt, or is stuck in C code) pid 1 gets SIGKILL and the session is
 * lost. An output cap passed mid-cell is handled the same way. A driver that dies on its own
 * (os._exit, a crash, the OOM killer) is reported with why, and sbx_session_restart brings up a
 * fresh one.
 *
 * Threads: the thread running a cell owns the pipes. The mutex guards pid and pidfd, which the
 * event loop reads (pid, alive) and signals (interrupt, kill); it is never held across a
 * blocking call: the interpreter is taken out of the session under the mutex, then reaped
 * without it, because a large process tree can take a second or more to die.
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
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#define SBX_READY_TIMEOUT_MS 15000       /* driver start-up */
#define SBX_MAX_CELL_BYTES   (8u << 20)  /* code of one cell */
#define SBX_NONCE_BYTES      16          /* ties a reply to its cell (driver.py NONCE_LEN) */
#define SBX_MAX_FIELD_BYTES  (64u << 10) /* one reply field (driver.py MAX_FIELD) */
#define SBX_MAX_REPLY_BYTES  (4 * (SBX_MAX_FIELD_BYTES + 5) + 1) /* four fields and the kind */
#define SBX_TRUNCATED        "... [truncated]"                   /* ends a field cut to its cap */

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

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/*
 * Looks in b for the frame that answers nonce: the nonce, a 4-byte length, the body. What
 * precedes the nonce is dropped, and while there is no nonce only its last bytes are kept (they
 * may begin one), so b never holds more than one read and one frame. Returns 1 with *body and
 * *len set, 0 when more is needed, -1 for a frame too large to be the driver's.
 */
static int reply_find(struct ag_buf *b, const uint8_t *nonce, const char **body, size_t *len)
{
    const char *at = b->len ? memmem(b->data, b->len, nonce, SBX_NONCE_BYTES) : NULL;
    if (!at) {
        if (b->len >= SBX_NONCE_BYTES) ag_buf_consume(b, b->len - (SBX_NONCE_BYTES - 1));
        return 0;
    }
    ag_buf_consume(b, (size_t)(at - b->data));
    if (b->len < SBX_NONCE_BYTES + 4) return 0;
    uint32_t n = be32(b->data + SBX_NONCE_BYTES);
    if (n == 0 || n > SBX_MAX_REPLY_BYTES) return -1;
    if (b->len < SBX_NONCE_BYTES + 4 + (size_t)n) return 0;
    *body = b->data + SBX_NONCE_BYTES + 4;
    *len = n;
    return 1;
}

/* Reads the reply pipe (non-blocking) until nonce's frame is complete: 1 with *body and *len
 * set, 0 when the pipe is empty for now, -1 for a bad frame, -2 at end of file. Bounded, so a
 * cell that floods the pipe cannot keep the caller from its deadlines. */
static int reply_read(int fd, struct ag_buf *b, const uint8_t *nonce, const char **body,
                      size_t *len)
{
    char buf[65536];
    for (int i = 0; i < 64; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 0;
        if (n == 0) return -2;
        ag_buf_append(b, buf, (size_t)n);
        int f = reply_find(b, nonce, body, len);
        if (f != 0) return f;
    }
    return 0;
}

/* Reads stream's pipe into c. At end of file (the cell closed its stdout, or the tree died)
 * the pipe is closed, so that it leaves every poll set. */
static void pump(struct sbx_session *s, int stream, struct sbx__capture *c, sbx_output_fn fn,
                 void *ud, bool *over)
{
    int *fd = stream == 1 ? &s->p.out_fd : &s->p.err_fd;
    if (*fd >= 0 && sbx__pump(*fd, stream, c, fn, ud, over) == 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Discards output waiting on the session's stdout/stderr (between cells). */
static void drain(struct sbx_session *s, struct sbx__capture *out, struct sbx__capture *er,
                  sbx_output_fn fn, void *ud)
{
    bool over = false;
    struct sbx__capture sink = {.max = 0};
    ag_buf_init(&sink.buf);
    pump(s, 1, out ? out : &sink, fn, ud, &over);
    pump(s, 2, er ? er : &sink, fn, ud, &over);
    ag_buf_release(&sink.buf);
}

static void proc_clear(struct sbx__proc *p, struct sbx_ctx *ctx)
{
    memset(p, 0, sizeof(*p));
    p->ctx = ctx;
    p->slot = -1;
    p->pidfd = p->in_fd = p->out_fd = p->err_fd = p->cmd_fd = p->rep_fd = p->ws_fd = -1;
}

/* Sends sig to the interpreter, if there is one. */
static void session_signal(struct sbx_session *s, int sig)
{
    pthread_mutex_lock(&s->mu);
    if (s->p.pid > 0) sbx__proc_signal(&s->p, sig);
    pthread_mutex_unlock(&s->mu);
}

/* Moves the interpreter out of s (SIGKILLed first when kill), leaving s dead. */
static void detach(struct sbx_session *s, struct sbx__proc *p, bool kill)
{
    pthread_mutex_lock(&s->mu);
    *p = s->p;
    if (kill && p->pid > 0) sbx__proc_signal(p, SIGKILL);
    proc_clear(&s->p, s->ctx);
    pthread_mutex_unlock(&s->mu);
}

/* Kills the interpreter and releases its sandbox; the reap, which can take a while, happens
 * without the mutex. */
static void kill_proc(struct sbx_session *s)
{
    struct sbx__proc p;
    detach(s, &p, true);
    sbx__proc_release(&p);
}

static int start(struct sbx_session *s, struct ag_err *err)
{
    const char *argv[] = {s->ctx->python, "-I", "-u", "-c", sbx__driver_py, NULL};
    struct sbx_limits lim = s->lim;
    lim.timeout_ms = 0; /* per cell, not per process */
    static const struct sbx__spawn_opts opts = {.session = true};
    struct sbx__proc p;
    int rc = sbx__spawn(s->ctx, &lim, argv, &opts, &p, err);
    if (rc != 0) return rc;
    pthread_mutex_lock(&s->mu);
    s->p = p;
    pthread_mutex_unlock(&s->mu);
    set_nonblock(s->p.out_fd);
    set_nonblock(s->p.err_fd);
    set_nonblock(s->p.rep_fd);
    set_nonblock(s->p.cmd_fd);
    close(s->p.in_fd);
    s->p.in_fd = -1;

    /* Wait for the driver's hello; keep its stderr in case it dies first. */
    static const uint8_t hello_nonce[SBX_NONCE_BYTES];
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
        if (fds[1].revents) pump(s, 2, &er, NULL, NULL, &over);
        if (fds[0].revents) {
            const char *body;
            size_t len;
            int f = reply_read(s->p.rep_fd, &rb, hello_nonce, &body, &len);
            if (f == 1 && body[0] == 'H') {
                rc = 0;
                break;
            }
            if (f != 0) {
                ag_err_set(err, AG_ESANDBOX, "the Python driver sent a malformed hello");
                break;
            }
        }
        if (fds[2].revents) {
            pump(s, 2, &er, NULL, NULL, &over);
            ag_err_set(err, AG_ESANDBOX, "the Python driver exited at start: %.300s",
                       er.buf.data ? er.buf.data : "(no output)");
            break;
        }
    }
    ag_buf_release(&rb);
    ag_buf_release(&er.buf);
    if (rc != 0) kill_proc(s);
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
    proc_clear(&s->p, ctx);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void session_destroy(struct sbx_session *s)
{
    kill_proc(s);
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
    session_signal(s, SIGKILL);
}

int sbx_session_restart(struct sbx_session *s, struct ag_err *err)
{
    kill_proc(s);
    return start(s, err);
}

void sbx_session_free(struct sbx_session *s)
{
    if (s) session_destroy(s);
}

/* A reply field as a string, cut to SBX_MAX_FIELD_BYTES (at a character boundary) and marked
 * when longer, whatever the driver sent. */
static char *field_text(const char *p, size_t n)
{
    if (n <= SBX_MAX_FIELD_BYTES) return ag_strndup(p, n);
    size_t keep = SBX_MAX_FIELD_BYTES - (sizeof(SBX_TRUNCATED) - 1);
    while (keep > 0 && ((unsigned char)p[keep] & 0xC0) == 0x80) keep--;
    char *text = ag_malloc(keep + sizeof(SBX_TRUNCATED));
    memcpy(text, p, keep);
    memcpy(text + keep, SBX_TRUNCATED, sizeof(SBX_TRUNCATED));
    return text;
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
        char *text = field_text(body + off, n);
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

/* A fresh nonce for a cell; getrandom does not fail for 16 bytes once the pool is ready, and a
 * clock-based fallback still never repeats within the session. */
static void make_nonce(uint8_t *nonce)
{
    static _Atomic uint64_t counter;
    if (getrandom(nonce, SBX_NONCE_BYTES, 0) == SBX_NONCE_BYTES) return;
    uint64_t a = (uint64_t)ag_now_ns(), b = ++counter;
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
}

int sbx_session_exec(struct sbx_session *s, const char *code, int64_t timeout_ms,
                     sbx_output_fn on_output, void *ud, struct sbx_result *res, struct ag_err *err)
{
    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    if (!sbx_session_alive(s))
        return ag_err_set(err, AG_ESANDBOX, "the session's interpreter is not running; restart it");
    size_t code_len = strlen(code);
    if (code_len > SBX_MAX_CELL_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "code: %zu bytes, the limit is %u", code_len,
                          SBX_MAX_CELL_BYTES);
    if (timeout_ms <= 0) timeout_ms = s->lim.timeout_ms;

    int64_t t0 = ag_now_ns();
    struct sbx__capture out = {.max = s->lim.stdout_max}, er = {.max = s->lim.stderr_max};
    ag_buf_init(&out.buf);
    ag_buf_init(&er.buf);
    drain(s, NULL, NULL, NULL, NULL); /* leftovers of background activity between cells */

    uint8_t nonce[SBX_NONCE_BYTES];
    make_nonce(nonce);
    struct ag_buf frame, rb;
    ag_buf_init(&frame);
    ag_buf_init(&rb);
    uint32_t n = (uint32_t)(code_len + 1 + SBX_NONCE_BYTES);
    char hdr[5] = {(char)(n >> 24), (char)(n >> 16), (char)(n >> 8), (char)n, 'X'};
    ag_buf_append(&frame, hdr, 5);
    ag_buf_append(&frame, nonce, SBX_NONCE_BYTES);
    ag_buf_append(&frame, code, code_len);
    size_t w_off = 0;

    uint64_t oom_before = sbx__cg_oom_kills(&s->ctx->cg, s->p.slot);
    int64_t now = ag_now_ms();
    int64_t deadline = timeout_ms > 0 ? now + timeout_ms : INT64_MAX, kill_at = INT64_MAX;
    bool timed_out = false, over = false, interrupted = false, done = false, died = false;
    bool rep_open = true, cmd_open = true;
    int status = 0;
    while (!done && !died) {
        struct pollfd fds[5];
        int nf = 0, i_rep = -1, i_out = -1, i_err = -1, i_cmd = -1;
        if (rep_open) i_rep = nf, fds[nf++] = (struct pollfd){s->p.rep_fd, POLLIN, 0};
        if (s->p.out_fd >= 0) i_out = nf, fds[nf++] = (struct pollfd){s->p.out_fd, POLLIN, 0};
        if (s->p.err_fd >= 0) i_err = nf, fds[nf++] = (struct pollfd){s->p.err_fd, POLLIN, 0};
        if (cmd_open && w_off < frame.len)
            i_cmd = nf, fds[nf++] = (struct pollfd){s->p.cmd_fd, POLLOUT, 0};
        int i_pid = nf;
        fds[nf++] = (struct pollfd){s->p.pidfd, POLLIN, 0};
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
            session_signal(s, SIGINT);
        } else if (interrupted && now >= kill_at) {
            session_signal(s, SIGKILL);
            kill_at = INT64_MAX;
        }
        if (r <= 0) continue;
        if (i_out >= 0 && fds[i_out].revents) pump(s, 1, &out, on_output, ud, &over);
        if (i_err >= 0 && fds[i_err].revents) pump(s, 2, &er, on_output, ud, &over);
        if (over && !interrupted) {
            interrupted = true;
            kill_at = now + s->lim.kill_grace_ms;
            session_signal(s, SIGINT);
        }
        if (i_cmd >= 0 && fds[i_cmd].revents) {
            ssize_t wr = write(s->p.cmd_fd, frame.data + w_off, frame.len - w_off);
            if (wr > 0) w_off += (size_t)wr;
            if (wr < 0 && errno != EAGAIN && errno != EINTR) {
                /* EPIPE: the driver no longer reads its commands; it cannot run this cell. */
                cmd_open = false;
                session_signal(s, SIGKILL);
            }
        }
        if (i_rep >= 0 && fds[i_rep].revents) {
            const char *body;
            size_t len;
            int f = reply_read(s->p.rep_fd, &rb, nonce, &body, &len);
            if (f == 1 && body[0] == 'R' && parse_reply(body, len, res) == 0) {
                done = true;
            } else if (f != 0) {
                /* This cell's frame is malformed, or the pipe closed: the driver is broken. */
                rep_open = false;
                session_signal(s, SIGKILL);
            }
        }
        if (fds[i_pid].revents) died = true;
    }
    if (died) {
        /* Pid 1 is gone and took the tree with it: the pipes hold the last output. */
        drain(s, &out, &er, on_output, ud);
        struct sbx__proc p;
        detach(s, &p, false);
        sbx__proc_reap(&p, &status); /* a zombie already: no wait */
        bool oom = sbx__cg_oom_kills(&s->ctx->cg, p.slot) > oom_before;
        sbx__proc_release(&p);
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
