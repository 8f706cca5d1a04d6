/*
 * sandboxes.c - the sandbox.* methods: one-shot runs and named code-interpreter sessions.
 *
 * Sandbox work blocks (a cell may run for minutes), so none of it happens on the loop thread.
 * Jobs go to a pool of sandbox worker threads through the hand-off's inbox (handoff.c);
 * finished jobs and streamed output come back through its one outbox, and the loop drains the
 * whole outbox per wake-up, in order (a cell's output events are sent before its result).
 * Streamed output is coalesced: a job appends what its sandbox wrote to one buffer and posts
 * the job's one output item only when that item is not already waiting, so the loop sends
 * whatever gathered since its last wake-up in one notification per stream run, however small
 * the sandbox's writes were. A job whose buffer holds SBXD_OUT_PENDING_BYTES waits for the loop
 * (and its sandbox for it): memory in flight is bounded per sandbox. The
 * pool grows when every worker is busy (up to SBXD_MAX_WORKERS) and its threads live until agentd
 * stops: a sandbox dies with the thread that spawned it (PR_SET_PDEATHSIG), which is what makes
 * every sandbox die with agentd, and what must not happen earlier.
 *
 * Sessions have names (given, or "sbx-N") and live in a list owned by the loop thread. A
 * session runs one job at a time: the loop marks it busy when it hands out a job and answers
 * "busy" to a second one. sandbox.interrupt and sandbox.kill of a busy session signal its
 * interpreter from the loop (a non-blocking system call); the running job then returns.
 * Idle sessions expire after AGENTD_SANDBOX_IDLE_S seconds (default 900): the creating client,
 * when still connected, gets a `sandbox.expired` notification.
 */
#include "agentd.h"

#include "../sandbox/sandbox.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SBXD_MAX_WORKERS       64
#define SBXD_MAX_FILE          (16u << 20) /* files.get/put size limit */
#define SBXD_MAX_SESSIONS      256
#define SBXD_OUT_PENDING_BYTES (1u << 20) /* streamed output a job may hold for the loop */
#define SBXD_TRIM_BYTES        (1u << 20) /* output of one job that makes the next ticks trim */

enum sjob_kind {
    SJ_EXEC,    /* one-shot run */
    SJ_CREATE,  /* start a session */
    SJ_CELL,    /* run a cell in a session */
    SJ_RESTART, /* restart a session's interpreter */
    SJ_PUT,     /* files.put */
    SJ_GET,     /* files.get */
    SJ_FREE,    /* kill and free a session (no reply when c is NULL) */
};

struct sess {
    struct sess *next;                /* list link */
    char name[64];                    /* unique name */
    struct sbx_session *s;            /* the session; NULL until its create job finished */
    struct sbx_session *_Atomic live; /* set by the create job once it exists, so interrupt
                                       * and kill reach a first cell still running */
    bool busy;                        /* a job holds it */
    bool dying;                       /* kill requested: free once the job returns */
    int64_t created_ms;               /* wall clock */
    int64_t last_ms;                  /* monotonic: last job's end, for idle expiry */
    uint64_t owner;                   /* connection id that created it */
};

/* What travels through the hand-off: a job, or a job's pending output. */
struct sitem {
    struct ag_list node; /* in the hand-off's inbox or outbox */
    bool output;         /* the job's out_item, not the job */
};

struct sjob {
    struct sitem item;        /* the job itself */
    struct sitem out_item;    /* its output, in the outbox while out_posted */
    enum sjob_kind kind;      /* what to do */
    struct sbxd *x;           /* manager */
    struct conn *c;           /* who asked (referenced until done), NULL for internal jobs */
    struct proto_req req;     /* owned request */
    struct sess *sess;        /* the session, for session jobs */
    struct sbx_session *ses;  /* SJ_CREATE: made by work(); SJ_FREE: to free */
    struct sbx_limits lim;    /* limits for SJ_EXEC / SJ_CREATE */
    bool has_lim;             /* lim was given */
    bool stream;              /* send sandbox.output notifications */
    bool then_cell;           /* SJ_CREATE: run params.code in the new session */
    struct sbx_result res;    /* SJ_EXEC / SJ_CELL */
    char *data;               /* SJ_GET: file bytes (owned) */
    size_t len;               /* bytes of data */
    char tail[2][4];          /* streamed stdout, stderr: the start of a character that the
                               * next run may complete (loop thread only) */
    size_t tail_len[2];       /* bytes held in tail[i], at most 3 */
    struct ag_buf out;        /* output not yet sent, as runs of one stream: a stream byte, a
                                 uint32_t length, the bytes (x->out_mu) */
    size_t out_last;          /* offset of the last run in out (x->out_mu) */
    bool out_posted;          /* out_item is in the outbox (x->out_mu) */
    char *code;               /* SJ_CELL / SJ_CREATE with then_cell: the cell (owned) */
    int64_t timeout_ms;       /* SJ_CELL / then_cell: 0 for none */
    sbxd_cell_fn cell_done;   /* typed caller (sbxd_cell) instead of a connection */
    void *cell_ud;            /* its argument */
    struct proto_val *result; /* built on the loop */
    struct ag_err err;        /* failure detail */
    int rc;                   /* 0 or AG_E... */
};

struct sbxd {
    struct agentd *d;      /* the daemon */
    struct sbx_ctx *ctx;   /* NULL when sandboxes are unavailable (why says why) */
    char why[600];         /* reason sandboxes are unavailable */
    struct handoff ho;     /* the worker pool: jobs in, jobs and their output out */
    uv_mutex_t out_mu;     /* guards every job's out, out_last and out_posted */
    uv_cond_t out_cv;      /* signalled when the loop takes a job's output */
    uv_timer_t idle_timer; /* idle expiry scan */
    struct sess *sessions; /* owned by the loop thread */
    int n_sessions;
    uint64_t next_name;      /* for generated names */
    int64_t idle_ms;         /* expiry */
    atomic_int in_flight;    /* jobs submitted and not done */
    int trim_ticks;          /* idle ticks that still give freed memory back (malloc_trim) */
    volatile int cancel_all; /* set by sbxd_stop: running one-shot runs are killed */
};

/* ---- worker threads ---- */

static struct sjob *job_alloc(struct sbxd *x, enum sjob_kind kind)
{
    struct sjob *j = ag_calloc(1, sizeof(*j));
    j->out_item.output = true;
    ag_buf_init(&j->out);
    j->kind = kind;
    j->x = x;
    return j;
}

static void on_output(void *ud, int stream, const char *data, size_t n)
{
    struct sjob *j = ud;
    struct sbxd *x = j->x;
    uv_mutex_lock(&x->out_mu);
    /* Over the bound, wait for the loop; not when stopping, as the loop then waits for us. */
    while (j->out.len >= SBXD_OUT_PENDING_BYTES && !x->cancel_all)
        (void)uv_cond_timedwait(&x->out_cv, &x->out_mu, 100 * 1000 * 1000);
    if (j->out.len > 0 && j->out.data[j->out_last] == (char)stream) {
        uint32_t run;
        memcpy(&run, j->out.data + j->out_last + 1, sizeof(run));
        run += (uint32_t)n;
        memcpy(j->out.data + j->out_last + 1, &run, sizeof(run));
    } else {
        uint32_t run = (uint32_t)n;
        j->out_last = j->out.len;
        ag_buf_putc(&j->out, (char)stream);
        ag_buf_append(&j->out, &run, sizeof(run));
    }
    ag_buf_append(&j->out, data, n);
    bool post = !j->out_posted;
    j->out_posted = true;
    uv_mutex_unlock(&x->out_mu);
    if (post) handoff_post(&x->ho, &j->out_item.node); /* ahead of j's own completion */
}

static void job_work(struct sjob *j)
{
    const struct proto_val *p = j->req.params;
    struct sbx_ctx *ctx = j->x->ctx;
    sbx_output_fn fn = j->stream ? on_output : NULL;

    switch (j->kind) {
    case SJ_EXEC: {
        const char *lang = proto_get_str(p, "language");
        const char *in = proto_get_str(p, "stdin");
        struct sbx_exec_req r = {.lang = lang && strcmp(lang, "shell") == 0 ? SBX_LANG_SHELL
                                                                            : SBX_LANG_PYTHON,
                                 .code = proto_get_str(p, "code"),
                                 .stdin_data = in,
                                 .stdin_len = in ? strlen(in) : 0,
                                 .limits = &j->lim,
                                 .on_output = fn,
                                 .ud = j,
                                 .cancel = &j->x->cancel_all};
        j->rc = sbx_exec(ctx, &r, &j->res, &j->err);
        break;
    }
    case SJ_CREATE:
        j->rc = sbx_session_new(ctx, j->has_lim ? &j->lim : NULL, &j->ses, &j->err);
        if (j->rc == 0) atomic_store(&j->sess->live, j->ses);
        if (j->rc == 0 && j->then_cell)
            j->rc = sbx_session_exec(j->ses, j->code, j->timeout_ms, fn, j, &j->res, &j->err);
        break;
    case SJ_CELL:
        j->rc = sbx_session_exec(j->sess->s, j->code, j->timeout_ms, fn, j, &j->res, &j->err);
        break;
    case SJ_RESTART:
        j->rc = sbx_session_restart(j->sess->s, &j->err);
        break;
    case SJ_PUT: {
        const char *text = proto_get_str(p, "data");
        j->rc = sbx_session_put(j->sess->s, proto_get_str(p, "path"), j->data ? j->data : text,
                                j->data ? j->len : strlen(text), &j->err);
        break;
    }
    case SJ_GET:
        j->rc = sbx_session_get(j->sess->s, proto_get_str(p, "path"),
                                (size_t)proto_int(proto_get(p, "max_bytes"), SBXD_MAX_FILE),
                                &j->data, &j->len, &j->err);
        break;
    case SJ_FREE:
        sbx_session_free(j->ses);
        j->ses = NULL;
        break;
    }
}

static void item_work(struct ag_list *item, void *ud)
{
    (void)ud;
    job_work(ag_list_entry(item, struct sjob, item.node));
}

static void submit(struct sbxd *x, struct sjob *j)
{
    atomic_fetch_add(&x->in_flight, 1);
    handoff_submit(&x->ho, &j->item.node);
}

/* ---- results ---- */

/* Text safe for JSON: bytes that start no valid UTF-8 character become U+FFFD. */
static struct proto_val *utf8_val(const char *s, size_t n)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_utf8_append(&b, s, n);
    struct proto_val *v = proto_new_str(b.data ? b.data : "");
    ag_buf_release(&b);
    return v;
}

/* A result's texts made valid UTF-8 in place, for typed callers. */
static void utf8_fix(char **s, size_t *n)
{
    if (!*s) return;
    struct ag_buf b;
    ag_buf_init(&b);
    ag_utf8_append(&b, *s, n ? *n : strlen(*s));
    ag_buf_putc(&b, '\0');
    free(*s);
    *s = b.data;
    if (n) *n = b.len - 1;
}

static void result_fix(struct sbx_result *r)
{
    utf8_fix(&r->out, &r->out_len);
    utf8_fix(&r->err, &r->err_len);
    utf8_fix(&r->value, NULL);
    utf8_fix(&r->error_name, NULL);
    utf8_fix(&r->error_message, NULL);
    utf8_fix(&r->traceback, NULL);
}

/* An error's message made valid UTF-8 in place: a sandbox's stderr can be quoted in it, and a
 * long one is cut at a byte count. */
static void err_fix(struct ag_err *e)
{
    size_t n = strlen(e->msg);
    if (ag_utf8_valid(e->msg, n)) return;
    struct ag_buf b;
    ag_buf_init(&b);
    ag_utf8_append(&b, e->msg, n);
    n = ag_utf8_prefix(b.data, b.len, sizeof(e->msg) - 1);
    memcpy(e->msg, b.data, n);
    e->msg[n] = '\0';
    ag_buf_release(&b);
}

static struct proto_val *result_json(const struct sjob *j)
{
    const struct sbx_result *r = &j->res;
    struct proto_val *o = proto_obj();
    if (j->sess) proto_add_str(o, "session", j->sess->name);
    proto_add_str(o, "stop", sbx_stop_name(r->stop));
    if (r->exit_code >= 0)
        proto_add_int(o, "exit_code", r->exit_code);
    else
        proto_add_null(o, "exit_code");
    if (r->signal) proto_add_int(o, "signal", r->signal);
    proto_add_num(o, "duration_ms", (double)r->duration_us / 1000.0);
    proto_add(o, "stdout", utf8_val(r->out ? r->out : "", r->out_len));
    proto_add(o, "stderr", utf8_val(r->err ? r->err : "", r->err_len));
    proto_add_bool(o, "stdout_truncated", r->out_truncated);
    proto_add_bool(o, "stderr_truncated", r->err_truncated);
    if (j->kind == SJ_CELL || j->then_cell) {
        proto_add_bool(o, "ok", r->ok);
        if (r->value)
            proto_add(o, "value", utf8_val(r->value, strlen(r->value)));
        else
            proto_add_null(o, "value");
        if (!r->ok) {
            struct proto_val *e = proto_add(o, "error", proto_obj());
            proto_add(e, "name",
                      utf8_val(r->error_name ? r->error_name : "",
                               r->error_name ? strlen(r->error_name) : 0));
            proto_add(e, "message",
                      utf8_val(r->error_message ? r->error_message : "",
                               r->error_message ? strlen(r->error_message) : 0));
            proto_add(e, "traceback",
                      utf8_val(r->traceback ? r->traceback : "",
                               r->traceback ? strlen(r->traceback) : 0));
        }
        proto_add_bool(o, "session_lost", r->session_lost);
    }
    return o;
}

static struct proto_val *session_json(const struct sess *s)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "name", s->name);
    proto_add_int(o, "pid", s->s ? sbx_session_pid(s->s) : 0);
    proto_add_bool(o, "alive", s->s && sbx_session_alive(s->s));
    proto_add_bool(o, "busy", s->busy);
    proto_add_int(o, "created_ms", s->created_ms);
    proto_add_num(o, "idle_s", s->busy ? 0.0 : (double)(ag_now_ms() - s->last_ms) / 1000.0);
    return o;
}

/* ---- the loop side ---- */

static struct sess *find(struct sbxd *x, const char *name)
{
    for (struct sess *s = x->sessions; s; s = s->next)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}

static void unlink_sess(struct sbxd *x, struct sess *s)
{
    for (struct sess **pp = &x->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            x->n_sessions--;
            return;
        }
}

static struct conn *conn_by_id(struct agentd *d, uint64_t id)
{
    ag_list_foreach (it, &d->conns) {
        struct conn *c = ag_list_entry(it, struct conn, node);
        if (c->id == id && !c->closing) return c;
    }
    return NULL;
}

/* Frees a session off the loop (the interpreter's reap can take a moment). */
static void free_later(struct sbxd *x, struct sess *s)
{
    unlink_sess(x, s);
    if (s->s && x->ho.stop) {
        sbx_session_free(s->s); /* stopping: the workers are gone */
    } else if (s->s) {
        struct sjob *j = job_alloc(x, SJ_FREE);
        j->ses = s->s;
        submit(x, j);
    }
    free(s);
}

/* Sends n bytes of j's output on stream_no (1 or 2) as a sandbox.output notification. */
static void notify_output(struct sjob *j, int stream_no, const char *data, size_t n)
{
    if (!n || !j->c || j->c->closing) return;
    struct proto_val *p = proto_obj();
    if (j->sess) proto_add_str(p, "session", j->sess->name);
    if (j->req.id) proto_add(p, "request", proto_val_dup(j->req.id));
    proto_add_str(p, "stream", stream_no == 1 ? "stdout" : "stderr");
    proto_add(p, "data", utf8_val(data, n));
    conn_notify(j->c, "sandbox.output", p);
    proto_val_free(p);
}

static void job_done(struct sjob *j)
{
    struct sbxd *x = j->x;
    struct conn *c = j->c;
    struct sess *s = j->sess;

    /* The streams' last characters, cut short: after the output, before the result. */
    for (int k = 0; k < 2; k++) notify_output(j, k + 1, j->tail[k], j->tail_len[k]);
    if (j->kind == SJ_CREATE && s) {
        s->s = j->ses;
        if (!j->ses) s->dying = true;
        if (j->rc == 0 && j->then_cell) {
            j->result = result_json(j);
            proto_add_bool(j->result, "created", true);
        } else if (j->rc == 0) {
            j->result = session_json(s);
            proto_add_bool(j->result, "created", true);
        }
    } else if (j->rc == 0) {
        switch (j->kind) {
        case SJ_EXEC:
        case SJ_CELL:
            j->result = result_json(j);
            if (j->kind == SJ_CELL && j->res.session_lost)
                ag_info("sandbox %s: interpreter lost (%s)", s->name, sbx_stop_name(j->res.stop));
            break;
        case SJ_RESTART:
            j->result = session_json(s);
            break;
        case SJ_PUT:
            j->result = proto_obj();
            proto_add_str(j->result, "path", proto_get_str(j->req.params, "path"));
            proto_add_int(
                j->result, "size",
                (int64_t)(j->data ? j->len : strlen(proto_get_str(j->req.params, "data"))));
            break;
        case SJ_GET:
            j->result = proto_obj();
            proto_add_str(j->result, "path", proto_get_str(j->req.params, "path"));
            proto_add_int(j->result, "size", (int64_t)j->len);
            if (ag_utf8_valid(j->data, j->len)) {
                proto_add_str(j->result, "data", j->data);
            } else {
                char *e = ag_base64_encode(j->data, j->len);
                proto_add_str(j->result, "base64", e);
                free(e);
            }
            break;
        default:
            break;
        }
    }
    if (s) {
        s->busy = false;
        s->last_ms = ag_now_ms();
        if (s->dying) free_later(x, s);
    }
    if (j->rc != 0) err_fix(&j->err);
    if (j->cell_done) {
        if (j->rc == 0) result_fix(&j->res);
        j->cell_done(j->cell_ud, &j->res, j->rc == 0 ? NULL : &j->err);
    } else if (c) {
        if (!c->closing) {
            if (j->rc == 0)
                conn_reply(c, j->req.id, j->result);
            else if (j->req.id)
                conn_reply_error(c, j->req.id, &j->err);
        }
        conn_end_async(c);
    }
    /* A large result's buffers (the worker's capture, the JSON, the reply being written) are
     * freed now or soon: have the next ticks give that memory back, or it stays resident. */
    if (j->res.out_len + j->res.err_len >= SBXD_TRIM_BYTES) x->trim_ticks = 2;
    free(j->code);
    proto_val_free(j->result);
    proto_req_release(&j->req);
    sbx_result_release(&j->res);
    free(j->data);
    ag_buf_release(&j->out);
    free(j);
    atomic_fetch_sub(&x->in_flight, 1);
}

/* Sends what j's sandbox wrote since the last call: one notification per run of a stream. A
 * run can end inside a character that the next run completes: its start is held back rather
 * than sent as U+FFFD. What is still held when the job ends is sent then (as U+FFFD). */
static void output_done(struct sjob *j)
{
    struct sbxd *x = j->x;
    struct ag_buf b, joined;
    uv_mutex_lock(&x->out_mu);
    b = j->out;
    ag_buf_init(&j->out);
    j->out_posted = false;
    uv_cond_broadcast(&x->out_cv);
    uv_mutex_unlock(&x->out_mu);
    ag_buf_init(&joined);
    for (size_t off = 0; off < b.len;) {
        uint32_t run;
        int stream = b.data[off];
        memcpy(&run, b.data + off + 1, sizeof(run));
        off += 1 + sizeof(run);
        int k = stream == 1 ? 0 : 1;
        ag_buf_reset(&joined);
        ag_buf_append(&joined, j->tail[k], j->tail_len[k]);
        ag_buf_append(&joined, b.data + off, run);
        size_t keep = ag_utf8_tail(joined.data, joined.len);
        memcpy(j->tail[k], joined.data + joined.len - keep, keep);
        j->tail_len[k] = keep;
        notify_output(j, stream, joined.data, joined.len - keep);
        off += run;
    }
    ag_buf_release(&joined);
    ag_buf_release(&b);
}

static void item_done(struct ag_list *item, void *ud)
{
    struct sitem *it = ag_list_entry(item, struct sitem, node);
    (void)ud;
    if (it->output)
        output_done(ag_list_entry(it, struct sjob, out_item));
    else
        job_done(ag_list_entry(it, struct sjob, item));
}

static void on_idle_tick(uv_timer_t *t)
{
    struct sbxd *x = t->data;
    int64_t now = ag_now_ms();
    if (x->trim_ticks > 0) {
        x->trim_ticks--;
        malloc_trim(0);
    }
    struct sess *s = x->sessions;
    while (s) {
        struct sess *next = s->next;
        if (!s->busy && s->s && now - s->last_ms >= x->idle_ms) {
            ag_info("sandbox %s: expired after %lld s idle", s->name,
                    (long long)(now - s->last_ms) / 1000);
            struct conn *c = conn_by_id(x->d, s->owner);
            if (c) {
                struct proto_val *p = proto_obj();
                proto_add_str(p, "session", s->name);
                proto_add_num(p, "idle_s", (double)(now - s->last_ms) / 1000.0);
                conn_notify(c, "sandbox.expired", p);
                proto_val_free(p);
            }
            free_later(x, s);
        }
        s = next;
    }
}

static struct sjob *new_job(struct sbxd *x, struct conn *c, struct proto_req *req,
                            enum sjob_kind kind)
{
    struct sjob *j = job_alloc(x, kind);
    j->c = c;
    j->req = *req; /* take ownership */
    memset(req, 0, sizeof(*req));
    return j;
}

static int start(struct sbxd *x, struct conn *c, struct sjob *j)
{
    conn_begin_async(c);
    submit(x, j);
    return METHOD_ASYNC;
}

/* params.limits -> lim (defaults for what is not given; the schema checked the ranges). */
static void parse_limits(const struct proto_val *p, struct sbx_limits *lim, bool *given)
{
    const struct proto_val *l = proto_get(p, "limits");
    sbx_limits_default(lim);
    *given = l != NULL && proto_type(l) == PROTO_OBJECT;
    if (!*given) return;
#define LIM(key, dst, mul)                                                                         \
    if (proto_get(l, key)) dst = proto_int(proto_get(l, key), 0) * (mul);
    LIM("memory_mb", lim->memory_bytes, 1ll << 20);
    LIM("pids", lim->pids, 1);
    LIM("cpu_percent", lim->cpu_percent, 1);
    LIM("workspace_mb", lim->workspace_bytes, 1ll << 20);
    LIM("timeout_ms", lim->timeout_ms, 1);
    LIM("kill_grace_ms", lim->kill_grace_ms, 1);
    if (proto_get(l, "output_bytes")) {
        LIM("output_bytes", lim->stdout_max, 1);
        lim->stderr_max = lim->stdout_max;
    }
#undef LIM
}

/* A session that exists, has an interpreter object and no job in flight. */
static int usable(struct sbxd *x, const char *name, struct sess **out, struct ag_err *err)
{
    struct sess *s = find(x, name);
    if (!s || s->dying) return ag_err_set(err, AG_ENOTFOUND, "no sandbox named '%s'", name);
    if (s->busy || !s->s)
        return ag_err_set(err, AG_EBUSY,
                          "sandbox '%s' is running something; wait, or "
                          "sandbox.interrupt it",
                          name);
    *out = s;
    return 0;
}

static struct sess *add_session(struct sbxd *x, const char *name, uint64_t owner)
{
    struct sess *s = ag_calloc(1, sizeof(*s));
    if (name)
        snprintf(s->name, sizeof(s->name), "%s", name);
    else
        snprintf(s->name, sizeof(s->name), "sbx-%llu", (unsigned long long)++x->next_name);
    s->created_ms = ag_wall_ms();
    s->last_ms = ag_now_ms();
    s->owner = owner;
    s->busy = true;
    s->next = x->sessions;
    x->sessions = s;
    x->n_sessions++;
    return s;
}

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 63) return false;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
              (n[i] >= '0' && n[i] <= '9') || n[i] == '-' || n[i] == '_' || n[i] == '.'))
            return false;
    return true;
}

/* A job running a cell in session name, created with lim on first use (when create). NULL with
 * *rc and err set when the session cannot take one now. */
static struct sjob *cell_job(struct sbxd *x, const char *name, bool create, uint64_t owner,
                             const struct sbx_limits *lim, bool given, int *rc, struct ag_err *err)
{
    struct sess *s = find(x, name);
    struct sjob *j;
    if (!s) {
        /* A named session is created on first use. */
        if (!create) {
            *rc = ag_err_set(err, AG_ENOTFOUND, "no sandbox named '%s'", name);
            return NULL;
        }
        if (!name_ok(name)) {
            *rc =
                ag_err_set(err, AG_EPARAMS,
                           "params.session: '%s': use 1-63 letters, digits, '-', '_' or '.'", name);
            return NULL;
        }
        j = job_alloc(x, SJ_CREATE);
        j->sess = add_session(x, name, owner);
        j->lim = *lim;
        j->has_lim = given;
        j->then_cell = true;
        return j;
    }
    if ((*rc = usable(x, name, &s, err)) != 0) return NULL;
    if (!sbx_session_alive(s->s)) {
        *rc = ag_err_set(err, AG_ESANDBOX, "sandbox '%s': its interpreter died; sandbox.restart it",
                         name);
        return NULL;
    }
    j = job_alloc(x, SJ_CELL);
    j->sess = s;
    s->busy = true;
    return j;
}

int sbxd_cell(struct agentd *d, const char *session, const char *code, int64_t timeout_ms,
              const struct sbx_limits *lim, sbxd_cell_fn done, void *ud, struct ag_err *err)
{
    struct sbxd *x = d->sbx;
    int rc;
    if (!x || !x->ctx)
        return ag_err_set(err, AG_EUNSUPPORTED, "sandboxes are unavailable on this host: %s",
                          x ? x->why : "not started");
    struct sbx_limits l;
    if (lim)
        l = *lim;
    else
        sbx_limits_default(&l);
    struct sjob *j = cell_job(x, session, true, 0, &l, lim != NULL, &rc, err);
    if (!j) return rc;
    j->code = ag_strdup(code);
    j->timeout_ms = timeout_ms;
    j->cell_done = done;
    j->cell_ud = ud;
    submit(x, j);
    return 0;
}

void sbxd_kill(struct agentd *d, const char *session)
{
    struct sbxd *x = d->sbx;
    struct sess *s = x ? find(x, session) : NULL;
    if (!s || s->dying) return;
    struct sbx_session *ls = s->s ? s->s : atomic_load(&s->live);
    s->dying = true;
    if (s->busy) {
        if (ls) sbx_session_kill(ls); /* the running job returns, then it is freed */
    } else {
        free_later(x, s);
    }
}

/* The manager, or AG_EUNSUPPORTED saying why this host has no sandboxes. */
static struct sbxd *manager(struct conn *c, struct ag_err *err)
{
    struct sbxd *x = c->d->sbx;
    if (!x || !x->ctx) {
        ag_err_set(err, AG_EUNSUPPORTED, "sandboxes are unavailable on this host: %s",
                   x ? x->why : "not started");
        return NULL;
    }
    return x;
}

static int m_list(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err)
{
    (void)req;
    struct sbxd *x = manager(c, err);
    if (!x) return err->code;
    struct sbx_info in;
    sbx_ctx_info(x->ctx, &in);
    struct proto_val *r = proto_obj();
    struct proto_val *arr = proto_add(r, "sandboxes", proto_arr());
    for (struct sess *s = x->sessions; s; s = s->next)
        if (!s->dying) proto_push(arr, session_json(s));
    struct proto_val *h = proto_add(r, "host", proto_obj());
    proto_add_str(h, "memory", in.memory);
    proto_add_str(h, "pids", in.pids);
    proto_add_str(h, "cpu", in.cpu);
    proto_add_int(h, "landlock_abi", in.landlock_abi);
    proto_add_int(h, "alive", in.n_alive);
    proto_add_int(h, "pool_ready", in.pool_ready);
    *result = r;
    return 0;
}

static int m_create(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    (void)result;
    struct sbxd *x = manager(c, err);
    if (!x) return err->code;
    const char *name = proto_get_str(req->params, "name");
    struct sbx_limits lim;
    bool given;
    parse_limits(req->params, &lim, &given);
    if (name && !name_ok(name))
        return ag_err_set(err, AG_EPARAMS,
                          "params.name: '%s': use 1-63 letters, digits, '-', '_' or '.'", name);
    if (name && find(x, name))
        return ag_err_set(err, AG_EEXISTS, "a sandbox named '%s' already exists", name);
    if (x->n_sessions >= SBXD_MAX_SESSIONS)
        return ag_err_set(err, AG_EQUOTA, "too many sandboxes (%d)", SBXD_MAX_SESSIONS);
    struct sjob *j = new_job(x, c, req, SJ_CREATE);
    j->lim = lim;
    j->has_lim = given;
    j->sess = add_session(x, name, c->id);
    return start(x, c, j);
}

static int m_exec(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err)
{
    (void)result;
    struct sbxd *x = manager(c, err);
    if (!x) return err->code;
    const struct proto_val *p = req->params;
    const char *name = proto_get_str(p, "session"), *code = proto_get_str(p, "code");
    const char *lang = proto_get_str(p, "language"), *in = proto_get_str(p, "stdin");
    int64_t timeout_ms = proto_int(proto_get(p, "timeout_ms"), 0);
    bool stream = proto_bool(proto_get(p, "stream"), false);
    bool create = proto_bool(proto_get(p, "create"), true);
    struct sbx_limits lim;
    bool given;
    int rc;
    parse_limits(p, &lim, &given);
    if (!name) {
        if (proto_get(p, "timeout_ms")) lim.timeout_ms = timeout_ms;
        struct sjob *j = new_job(x, c, req, SJ_EXEC);
        j->lim = lim;
        j->stream = stream;
        return start(x, c, j);
    }
    if (lang && strcmp(lang, "python") != 0)
        return ag_err_set(err, AG_EPARAMS,
                          "params.language: sessions run Python; use a one-shot exec (no "
                          "'session') for shell commands");
    if (in) return ag_err_set(err, AG_EPARAMS, "params.stdin: only for one-shot runs");
    struct sjob *j = cell_job(x, name, create, c->id, &lim, given, &rc, err);
    if (!j) return rc;
    j->c = c;
    j->req = *req; /* take ownership */
    memset(req, 0, sizeof(*req));
    j->code = ag_strdup(code);
    j->timeout_ms = timeout_ms;
    j->stream = stream;
    return start(x, c, j);
}

/* interrupt, kill, restart: by session name. */
static int session_op(struct conn *c, struct proto_req *req, struct proto_val **result,
                      struct ag_err *err, char op)
{
    struct sbxd *x = manager(c, err);
    if (!x) return err->code;
    const char *name = proto_get_str(req->params, "session");
    struct sess *s = find(x, name);
    int rc;
    if (!s || s->dying) return ag_err_set(err, AG_ENOTFOUND, "no sandbox named '%s'", name);
    if (op == 'r') {
        if ((rc = usable(x, name, &s, err)) != 0) return rc;
        struct sjob *j = new_job(x, c, req, SJ_RESTART);
        j->sess = s;
        s->busy = true;
        return start(x, c, j);
    }
    struct proto_val *r = proto_obj();
    proto_add_str(r, "session", name);
    if (op == 'i') {
        struct sbx_session *ls = s->s ? s->s : atomic_load(&s->live);
        bool running = s->busy && ls;
        if (running) sbx_session_interrupt(ls);
        proto_add_bool(r, "interrupted", running);
    } else {
        sbxd_kill(c->d, name);
        proto_add_bool(r, "killed", true);
    }
    *result = r;
    return 0;
}

static int m_interrupt(struct conn *c, struct proto_req *req, struct proto_val **result,
                       struct ag_err *err)
{
    return session_op(c, req, result, err, 'i');
}

static int m_kill(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err)
{
    return session_op(c, req, result, err, 'k');
}

static int m_restart(struct conn *c, struct proto_req *req, struct proto_val **result,
                     struct ag_err *err)
{
    return session_op(c, req, result, err, 'r');
}

static int files_op(struct conn *c, struct proto_req *req, struct ag_err *err, bool put)
{
    struct sbxd *x = manager(c, err);
    if (!x) return err->code;
    const struct proto_val *p = req->params;
    const char *name = proto_get_str(p, "session");
    const char *data = proto_get_str(p, "data"), *enc = proto_get_str(p, "base64");
    struct sess *s = NULL;
    char *bin = NULL;
    size_t bin_len = 0;
    int rc;
    if (put) {
        if (!data == !enc)
            return ag_err_set(err, AG_EPARAMS,
                              "params: give exactly one of 'data' (text) or 'base64'");
        if (enc && ag_base64_decode(enc, &bin, &bin_len) != 0)
            return ag_err_set(err, AG_EPARAMS, "params.base64: not valid base64");
    }
    if ((rc = usable(x, name, &s, err)) != 0) {
        free(bin);
        return rc;
    }
    struct sjob *j = new_job(x, c, req, put ? SJ_PUT : SJ_GET);
    j->sess = s;
    j->data = bin;
    j->len = bin_len;
    s->busy = true;
    return start(x, c, j);
}

static int m_put(struct conn *c, struct proto_req *req, struct proto_val **result,
                 struct ag_err *err)
{
    (void)result;
    return files_op(c, req, err, true);
}

static int m_get(struct conn *c, struct proto_req *req, struct proto_val **result,
                 struct ag_err *err)
{
    (void)result;
    return files_op(c, req, err, false);
}

#define OBJ(props, req)                                                                            \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"
#define STR         "{\"type\":\"string\"}"
#define INT(lo, hi) "{\"type\":\"integer\",\"minimum\":" #lo ",\"maximum\":" #hi "}"
#define LIMITS                                                                                                               \
    "\"limits\":" OBJ(                                                                                                       \
        "\"memory_mb\":" INT(16, 65536) ",\"pids\":" INT(1, 4096) ",\"cpu_percent\":" INT(1, 6400) ",\"workspace_mb\":" INT( \
            1,                                                                                                               \
            65536) ",\"timeout_ms\":" INT(0,                                                                                 \
                                          86400000) ",\"output_bytes\":" INT(1,                                              \
                                                                             67108864) ",\"kill_"                            \
                                                                                       "grace_"                              \
                                                                                       "ms\""                                \
                                                                                       ":" INT(                              \
                                                                                           0,                                \
                                                                                           600000),                          \
        "")

static const struct method rows[] = {
    {"sandbox.create", m_create, OBJ("\"name\":" STR "," LIMITS, ""), METHOD_LATER,
     "start a named code-interpreter session (a sandboxed Python)"},
    {"sandbox.exec", m_exec,
     OBJ("\"session\":" STR ",\"code\":" STR
         ",\"language\":{\"type\":\"string\",\"enum\":[\"python\",\"shell\"]},\"timeout_ms\":" INT(
             0, 86400000) ",\"stdin\":" STR ",\"stream\":{\"type\":\"boolean\"}," LIMITS
                          ",\"create\":{\"type\":\"boolean\"}",
         "\"code\""),
     METHOD_LATER | METHOD_NOTIFIES,
     "run code: one-shot (python or shell) or a cell in a named session"},
    {"sandbox.interrupt", m_interrupt, OBJ("\"session\":" STR, "\"session\""), METHOD_DRAINING,
     "interrupt a session's running cell (KeyboardInterrupt)"},
    {"sandbox.files.put", m_put,
     OBJ("\"session\":" STR ",\"path\":" STR ",\"data\":" STR ",\"base64\":" STR,
         "\"session\",\"path\""),
     METHOD_LATER, "write a file into a session's workspace"},
    {"sandbox.files.get", m_get,
     OBJ("\"session\":" STR ",\"path\":" STR ",\"max_bytes\":" INT(0, 16777216),
         "\"session\",\"path\""),
     METHOD_LATER, "read a file from a session's workspace"},
    {"sandbox.list", m_list, NULL, 0, "list sessions, and how this host enforces sandbox limits"},
    {"sandbox.restart", m_restart, OBJ("\"session\":" STR, "\"session\""), METHOD_LATER,
     "restart a session's interpreter (fresh state and workspace)"},
    {"sandbox.kill", m_kill, OBJ("\"session\":" STR, "\"session\""), METHOD_DRAINING,
     "destroy a session"},
};
METHOD_GROUP(sbxd_methods, rows);

/* ---- start and stop ---- */

static int64_t env_int(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoll(v, NULL, 10) : dflt;
}

void sbxd_start(struct agentd *d)
{
    struct sbxd *x = ag_calloc(1, sizeof(*x));
    struct ag_err err = {0};
    char tag[64];

    x->d = d;
    uv_mutex_init(&x->out_mu);
    uv_cond_init(&x->out_cv);
    x->idle_ms = env_int("AGENTD_SANDBOX_IDLE_S", 900) * 1000;
    snprintf(tag, sizeof(tag), "agentd-%d", (int)getpid());
    struct sbx_ctx_opts o = {.tag = tag, .pool_size = (int)env_int("AGENTD_SANDBOX_POOL", 2)};
    if (sbx_ctx_new(&o, &x->ctx, &err) != 0) {
        snprintf(x->why, sizeof(x->why), "%s", err.msg);
        ag_warn("sandboxes unavailable: %s", err.msg);
        x->ctx = NULL;
    } else {
        struct sbx_info in;
        sbx_ctx_info(x->ctx, &in);
        ag_info("sandboxes: memory limit via %s, pids via %s, cpu via %s, Landlock ABI %d",
                in.memory, in.pids, in.cpu, in.landlock_abi);
    }
    /* No thread starts yet (the pool grows on demand), so this cannot fail. */
    (void)handoff_start(&x->ho, d->loop, item_work, item_done, x, 0, SBXD_MAX_WORKERS, &err);
    uv_timer_init(d->loop, &x->idle_timer);
    x->idle_timer.data = x;
    uv_timer_start(&x->idle_timer, on_idle_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&x->idle_timer);
    d->sbx = x;
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

void sbxd_stop(struct agentd *d)
{
    struct sbxd *x = d->sbx;
    if (!x) return;
    /* Kill what runs, so the workers return promptly. */
    x->cancel_all = 1;
    for (struct sess *s = x->sessions; s; s = s->next) {
        struct sbx_session *ls = s->s ? s->s : atomic_load(&s->live);
        if (s->busy && ls) sbx_session_kill(ls);
    }
    handoff_stop(&x->ho); /* the workers finish, and so does what they sent */
    while (x->sessions) {
        struct sess *s = x->sessions;
        x->sessions = s->next;
        sbx_session_free(s->s);
        free(s);
    }
    handoff_drain(&x->ho); /* frees queued above never ran: none are left after the join */
    uv_mutex_destroy(&x->out_mu);
    uv_cond_destroy(&x->out_cv);
    sbx_ctx_free(x->ctx);
    handoff_close(&x->ho, NULL);
    uv_close((uv_handle_t *)&x->idle_timer, on_closed);
    d->sbx = NULL;
    /* x itself is freed once the handles are closed: keep it simple, free after the loop ends. */
    d->sbx_mem = x;
}

int sbxd_in_flight(struct agentd *d)
{
    return d->sbx ? atomic_load(&d->sbx->in_flight) : 0;
}

struct sbx_ctx *sbxd_ctx(struct agentd *d)
{
    return d->sbx ? d->sbx->ctx : NULL;
}
