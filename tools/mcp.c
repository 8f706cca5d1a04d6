/*
 * mcp.c - the MCP client of mcp.h: JSON-RPC requests and their answers, the handshake, tool
 * calls with deadlines and cancellation, and restarts with backoff. The bytes travel through a
 * transport (mcp_stdio.c, mcp_http.c; see mcp_int.h).
 *
 * Requests. Every request the client sends (initialize, tools/list, tools/call) is a struct
 * mcp_req on one list, in the order made; its JSON-RPC id is unique for the client's life,
 * across restarts, so a late answer from an old connection can never be taken for a new
 * request's. Calls made while the server is not ready wait on the list unsent; they go out in
 * order when it is. One timer serves every deadline (the handshake's and each call's): it is
 * armed for the earliest, and the list is short.
 *
 * Re-entrancy. done and on_state may call back into this file, mcp_client_free included. A
 * request is unlinked before its callback runs, and every path that goes on after a callback
 * checks c->freeing first. Memory is only freed from uv_close callbacks, so c stays valid for
 * the rest of the loop iteration in which it was freed.
 */
#include "mcp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol/protocol.h"
#include "mcp_int.h"

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS   30000
#define STABLE_MS        60000 /* up this long: the next loss starts the backoff over */
#define MAX_LIST_PAGES   100   /* tools/list pages followed before the listing is cut */
#define MAX_TOOLS        1000

/* The revisions whose tools/list and tools/call we read (all alike for what we use). */
static const char *const versions[] = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"};

enum req_kind { REQ_INIT, REQ_LIST, REQ_CALL };

/* One request sent to the server (or waiting to be). */
struct mcp_req {
    struct ag_list node; /* in mcp_client.reqs; self-linked once unlinked */
    int64_t id;          /* JSON-RPC id; also the call id handed out */
    enum req_kind kind;
    bool sent;              /* written to the current connection */
    int64_t deadline_ms;    /* 0: none */
    int64_t timeout_ms;     /* as asked, for messages */
    char *tool;             /* REQ_CALL: the server's tool name */
    struct proto_val *args; /* REQ_CALL: the arguments object (owned) */
    size_t max_output;      /* REQ_CALL: output cap in bytes */
    mcp_done_cb done;
    void *ud;
};

struct mcp_client {
    uv_loop_t *loop;
    struct mcp__cfg cfg;
    const struct mcp__transport *tr;
    void *tp; /* the current connection, or NULL */
    int n_tp; /* connections not yet gone (the current one and closing ones) */
    mcp_state_cb on_state;
    void *ud;
    enum mcp_state state;
    bool handshaking; /* tp is up, its handshake is not finished */
    bool relisting;   /* READY, listing again after notifications/tools/list_changed */
    bool ever_ready;
    int64_t next_id;
    struct ag_list reqs; /* every struct mcp_req, oldest first */
    size_t n_calls;
    int64_t hs_deadline_ms; /* the handshake's deadline while handshaking */
    uv_timer_t deadline;    /* the earliest deadline of the list and the handshake */
    uv_timer_t restart;     /* the next start after a loss */
    int handles_open;
    bool freeing;
    struct mcp_tool *tools; /* (n_tools) the last complete listing; strings owned */
    size_t n_tools;
    struct mcp_tool *next_tools; /* (n_next) the listing being gathered */
    size_t n_next, cap_next;
    int n_pages;
    char version[32]; /* agreed at initialize */
    int failures;     /* failed restarts in a row */
    int backoff_exp;  /* the next delay is BACKOFF_FIRST_MS << backoff_exp, capped */
    int64_t ready_since_ms;
    char last_error[1024];
    char stderr_saved[2048]; /* the stderr tail of the last lost connection */
};

static void attempt_failed(struct mcp_client *c, const char *why);
static void send_call(struct mcp_client *c, struct mcp_req *q);

const char *mcp_state_name(enum mcp_state st)
{
    switch (st) {
    case MCP_STARTING:
        return "starting";
    case MCP_READY:
        return "ready";
    case MCP_RESTARTING:
        return "restarting";
    case MCP_FAILED:
        return "failed";
    case MCP_STOPPED:
        return "stopped";
    }
    return "unknown";
}

/* ---- small pieces ---- */

static void tools_free(struct mcp_tool *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)t[i].name);
        free((char *)t[i].description);
        free((char *)t[i].input_schema_json);
    }
    free(t);
}

static void set_state(struct mcp_client *c, enum mcp_state st, const char *msg)
{
    c->state = st;
    if (c->on_state && !c->freeing) c->on_state(c->ud, c, st, msg ? msg : "");
}

static struct mcp_req *req_of(struct ag_list *node)
{
    return ag_list_entry(node, struct mcp_req, node);
}

/* The oldest request, or NULL. */
static struct mcp_req *req_first(struct mcp_client *c)
{
    return ag_list_empty(&c->reqs) ? NULL : req_of(c->reqs.next);
}

/* Takes q off the list; a no-op when it is off already (ag_list_remove leaves it self-linked). */
static void unlink_req(struct mcp_client *c, struct mcp_req *q)
{
    if (ag_list_empty(&q->node)) return;
    ag_list_remove(&q->node);
    if (q->kind == REQ_CALL) c->n_calls--;
}

static void req_free(struct mcp_req *q)
{
    free(q->tool);
    proto_val_free(q->args);
    free(q);
}

static struct mcp_req *req_new(struct mcp_client *c, enum req_kind kind)
{
    struct mcp_req *q = ag_calloc(1, sizeof(*q));
    q->id = ++c->next_id;
    q->kind = kind;
    ag_list_insert_tail(&c->reqs, &q->node);
    if (kind == REQ_CALL) c->n_calls++;
    return q;
}

static struct mcp_req *req_find(struct mcp_client *c, int64_t id)
{
    ag_list_foreach (it, &c->reqs)
        if (req_of(it)->id == id) return req_of(it);
    return NULL;
}

/* Ends call q (already unlinked or not): done runs once, then q is freed. */
static void call_end(struct mcp_client *c, struct mcp_req *q, int code, bool ok, const char *text,
                     const char *structured, bool truncated)
{
    unlink_req(c, q);
    struct mcp_result res = {
        .call_id = (uint64_t)q->id,
        .err_code = code,
        .ok = code == 0 && ok,
        .text = text ? text : "",
        .structured_json = structured,
        .truncated = truncated,
    };
    mcp_done_cb done = q->done;
    void *ud = q->ud;
    req_free(q);
    if (done) done(ud, &res);
}

static void call_fail(struct mcp_client *c, struct mcp_req *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void call_fail(struct mcp_client *c, struct mcp_req *q, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    call_end(c, q, code, false, msg, NULL, false);
}

/* Sends one message built by proto_write_*: the line without its newline. */
static void send_buf(struct mcp_client *c, int64_t id, struct ag_buf *b)
{
    if (c->tp && b->len > 0) c->tr->send(c->tp, id, b->data, b->len - 1);
    ag_buf_release(b);
}

static void send_request(struct mcp_client *c, struct mcp_req *q, const char *method,
                         struct proto_val *params)
{
    struct ag_buf b;
    ag_buf_init(&b);
    proto_write_request(&b, q->id, method, params);
    proto_val_free(params);
    q->sent = true;
    send_buf(c, q->id, &b);
}

static void send_notification(struct mcp_client *c, const char *method, struct proto_val *params)
{
    struct ag_buf b;
    ag_buf_init(&b);
    proto_write_notification(&b, method, params);
    proto_val_free(params);
    send_buf(c, 0, &b);
}

static void send_cancelled(struct mcp_client *c, int64_t id, const char *reason)
{
    struct proto_val *p = proto_obj();
    proto_add_int(p, "requestId", id);
    proto_add_str(p, "reason", reason);
    send_notification(c, "notifications/cancelled", p);
}

/* ---- deadlines ---- */

static void on_deadline(uv_timer_t *t);

static void arm_deadline(struct mcp_client *c)
{
    if (c->freeing) return;
    int64_t first = c->handshaking ? c->hs_deadline_ms : 0;
    ag_list_foreach (it, &c->reqs) {
        const struct mcp_req *q = req_of(it);
        if (q->deadline_ms && (!first || q->deadline_ms < first)) first = q->deadline_ms;
    }
    if (!first) {
        uv_timer_stop(&c->deadline);
        return;
    }
    int64_t wait = first - ag_now_ms();
    uv_timer_start(&c->deadline, on_deadline, wait > 0 ? (uint64_t)wait : 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
    struct mcp_client *c = t->data;
    int64_t now = ag_now_ms();
    if (c->handshaking && now >= c->hs_deadline_ms) {
        bool init = false;
        ag_list_foreach (it, &c->reqs) init |= req_of(it)->kind == REQ_INIT;
        char why[256];
        snprintf(why, sizeof(why), "did not %s within %lld ms",
                 init ? "answer initialize" : "list its tools", (long long)c->cfg.start_timeout_ms);
        attempt_failed(c, why);
        if (c->freeing) return;
    }
    /* Each failure runs a callback that may end other requests: look again from the start. */
    for (;;) {
        struct mcp_req *q = NULL;
        ag_list_foreach (it, &c->reqs) {
            struct mcp_req *r = req_of(it);
            if (r->deadline_ms && r->deadline_ms <= now) {
                q = r;
                break;
            }
        }
        if (!q) break;
        char reason[128];
        snprintf(reason, sizeof(reason), "timed out after %lld ms", (long long)q->timeout_ms);
        if (q->sent && c->tp) send_cancelled(c, q->id, reason);
        if (q->sent && c->tp && c->tr->abandon) c->tr->abandon(c->tp, q->id);
        call_fail(c, q, AG_ETIMEOUT, "MCP tool '%s.%s' timed out after %lld ms%s", c->cfg.name,
                  q->tool, (long long)q->timeout_ms,
                  q->sent ? " (the server was asked to cancel it)"
                          : " (the server was not ready to take it)");
        if (c->freeing) return;
    }
    arm_deadline(c);
}

/* ---- connections and restarts ---- */

static void send_initialize(struct mcp_client *c)
{
    struct mcp_req *q = req_new(c, REQ_INIT);
    struct proto_val *p = proto_obj();
    proto_add_str(p, "protocolVersion", MCP_PROTOCOL_VERSION);
    proto_add(p, "capabilities", proto_obj());
    struct proto_val *info = proto_add(p, "clientInfo", proto_obj());
    proto_add_str(info, "name", "agentd");
    proto_add_str(info, "version", "0.1");
    send_request(c, q, "initialize", p);
}

/* Opens a connection and starts the handshake. */
static int attempt_start(struct mcp_client *c, struct ag_err *err)
{
    void *tp = c->tr->start(c, err);
    if (!tp) return err ? err->code : AG_EIO;
    c->tp = tp;
    c->n_tp++;
    c->handshaking = true;
    c->relisting = false;
    c->version[0] = '\0';
    c->hs_deadline_ms = ag_now_ms() + c->cfg.start_timeout_ms;
    send_initialize(c);
    arm_deadline(c);
    return 0;
}

static void on_restart(uv_timer_t *t)
{
    struct mcp_client *c = t->data;
    struct ag_err err = {0};
    if (c->freeing || c->tp) return;
    if (attempt_start(c, &err) != 0) {
        char why[600];
        snprintf(why, sizeof(why), "could not be restarted: %s", err.msg);
        attempt_failed(c, why);
    }
}

/* The last line of the server's stderr, for messages ("" when none). */
static void stderr_last_line(struct mcp_client *c, char *out, size_t n)
{
    const char *s = mcp_client_stderr(c);
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r')) len--;
    size_t start = len;
    while (start > 0 && s[start - 1] != '\n') start--;
    size_t k = len - start;
    if (k > n - 1) k = n - 1;
    memcpy(out, s + start, k);
    out[k] = '\0';
}

/*
 * The current connection ended, or its handshake failed: close it, fail what it was carrying,
 * and restart or give up. why says what happened, after "MCP server 'x' ".
 */
static void attempt_failed(struct mcp_client *c, const char *why)
{
    bool was_ready = c->state == MCP_READY && !c->handshaking;
    if (c->ever_ready && !was_ready) c->failures++; /* a restart that did not come up */
    if (c->tp) {
        const char *tail = c->tr->stderr_tail ? c->tr->stderr_tail(c->tp) : NULL;
        snprintf(c->stderr_saved, sizeof(c->stderr_saved), "%s", tail ? tail : "");
        void *tp = c->tp;
        c->tp = NULL;
        c->tr->close(tp);
    }
    c->handshaking = c->relisting = false;
    tools_free(c->next_tools, c->n_next);
    c->next_tools = NULL;
    c->n_next = c->cap_next = 0;

    char last[300];
    stderr_last_line(c, last, sizeof(last));
    char said[400] = "";
    if (last[0]) snprintf(said, sizeof(said), " (its last stderr line: %s)", last);
    snprintf(c->last_error, sizeof(c->last_error), "MCP server '%s' %s", c->cfg.name, why);

    /* Internal requests die with the connection; sent calls fail; unsent calls wait. */
    ag_list_foreach_safe (it, &c->reqs) {
        struct mcp_req *q = req_of(it);
        if (q->kind != REQ_CALL) {
            unlink_req(c, q);
            req_free(q);
        }
    }
    for (;;) {
        struct mcp_req *q = NULL;
        ag_list_foreach (it, &c->reqs) {
            if (req_of(it)->sent) {
                q = req_of(it);
                break;
            }
        }
        if (!q) break;
        call_fail(c, q, AG_ECLOSED, "MCP server '%s' %s during the call%s", c->cfg.name, why, said);
        if (c->freeing) return;
    }

    if (was_ready && ag_now_ms() - c->ready_since_ms >= STABLE_MS) c->backoff_exp = 0;
    bool give_up = !c->ever_ready || c->cfg.max_restarts < 0 || c->failures >= c->cfg.max_restarts;
    char *msg;
    if (give_up) {
        if (!c->ever_ready)
            msg = ag_asprintf("%s%s", c->last_error, said);
        else
            msg = ag_asprintf("%s%s; giving up after %d failed restart%s", c->last_error, said,
                              c->failures, c->failures == 1 ? "" : "s");
        snprintf(c->last_error, sizeof(c->last_error), "%s", msg);
        set_state(c, MCP_FAILED, msg);
        free(msg);
        if (c->freeing) return;
        for (struct mcp_req *q; (q = req_first(c)) != NULL;) {
            call_fail(c, q, AG_ECLOSED, "%s", c->last_error);
            if (c->freeing) return;
        }
        arm_deadline(c);
        return;
    }
    int64_t delay = (int64_t)BACKOFF_FIRST_MS << (c->backoff_exp < 10 ? c->backoff_exp : 10);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    else
        c->backoff_exp++;
    msg = ag_asprintf("%s%s; restarting in %lld ms", c->last_error, said, (long long)delay);
    uv_timer_start(&c->restart, on_restart, (uint64_t)delay, 0);
    set_state(c, MCP_RESTARTING, msg);
    free(msg);
    if (c->freeing) return;
    arm_deadline(c);
}

/* ---- the handshake ---- */

static void send_list(struct mcp_client *c, const char *cursor)
{
    struct mcp_req *q = req_new(c, REQ_LIST);
    struct proto_val *p = NULL;
    if (cursor) {
        p = proto_obj();
        proto_add_str(p, "cursor", cursor);
    }
    send_request(c, q, "tools/list", p);
}

static void on_init_result(struct mcp_client *c, const struct proto_val *result)
{
    const char *v = proto_get_str(result, "protocolVersion");
    bool known = false;
    for (size_t i = 0; v && i < sizeof(versions) / sizeof(versions[0]); i++)
        known |= strcmp(v, versions[i]) == 0;
    if (!known) {
        char why[300];
        snprintf(why, sizeof(why),
                 "answered initialize with protocol version '%.64s', which agentd does not speak "
                 "(it speaks %s to %s)",
                 v ? v : "(none)", versions[0],
                 versions[sizeof(versions) / sizeof(versions[0]) - 1]);
        attempt_failed(c, why);
        return;
    }
    snprintf(c->version, sizeof(c->version), "%s", v);
    const struct proto_val *info = proto_get(result, "serverInfo");
    ag_debug("MCP server '%s': %s %s, protocol %s", c->cfg.name,
             proto_get_str(info, "name") ? proto_get_str(info, "name") : "?",
             proto_get_str(info, "version") ? proto_get_str(info, "version") : "?", v);
    send_notification(c, "notifications/initialized", NULL);
    c->n_pages = 0;
    send_list(c, NULL);
}

static void list_done(struct mcp_client *c)
{
    tools_free(c->tools, c->n_tools);
    c->tools = c->next_tools;
    c->n_tools = c->n_next;
    c->next_tools = NULL;
    c->n_next = c->cap_next = 0;
    char msg[200];
    if (c->relisting) {
        c->relisting = false;
        snprintf(msg, sizeof(msg), "tool list changed: %zu tools", c->n_tools);
        set_state(c, MCP_READY, msg);
        return;
    }
    bool restarted = c->ever_ready;
    c->handshaking = false;
    c->ever_ready = true;
    c->failures = 0;
    c->ready_since_ms = ag_now_ms();
    snprintf(msg, sizeof(msg), "%s%zu tool%s", restarted ? "restarted; " : "", c->n_tools,
             c->n_tools == 1 ? "" : "s");
    set_state(c, MCP_READY, msg);
    if (c->freeing) return;
    /*
     * Calls that waited go out in the order they were made. A send that fails at once ends its
     * call, or the connection and with it the requests after it: hence the _safe walk, and the
     * stop as soon as tp is gone.
     */
    ag_list_foreach_safe (it, &c->reqs) {
        struct mcp_req *q = req_of(it);
        if (!c->tp) break;
        if (q->kind == REQ_CALL && !q->sent) send_call(c, q);
        if (!c->tp) break;
    }
    arm_deadline(c);
}

static void on_list_result(struct mcp_client *c, const struct proto_val *result)
{
    const struct proto_val *tools = proto_get(result, "tools");
    if (proto_type(tools) != PROTO_ARRAY) {
        attempt_failed(c, "answered tools/list without a tools array");
        return;
    }
    for (const struct proto_val *t = proto_child(tools); t; t = proto_next(t)) {
        const char *name = proto_get_str(t, "name");
        if (!name || !*name) {
            ag_warn("MCP server '%s' listed a tool without a name; it is left out", c->cfg.name);
            continue;
        }
        if (c->n_next >= MAX_TOOLS) {
            ag_warn("MCP server '%s' lists more than %d tools; the rest are left out", c->cfg.name,
                    MAX_TOOLS);
            break;
        }
        if (c->n_next == c->cap_next) {
            c->cap_next = c->cap_next ? c->cap_next * 2 : 16;
            c->next_tools = ag_realloc(c->next_tools, c->cap_next * sizeof(*c->next_tools));
        }
        const struct proto_val *schema = proto_get(t, "inputSchema");
        const char *desc = proto_get_str(t, "description");
        struct mcp_tool *d = &c->next_tools[c->n_next++];
        d->name = ag_strdup(name);
        d->description = ag_strdup(desc ? desc : "");
        d->input_schema_json = proto_type(schema) == PROTO_OBJECT
                                   ? proto_print(schema)
                                   : ag_strdup("{\"type\":\"object\"}");
    }
    const char *cursor = proto_get_str(result, "nextCursor");
    if (cursor && *cursor && ++c->n_pages < MAX_LIST_PAGES && c->n_next < MAX_TOOLS) {
        send_list(c, cursor);
        return;
    }
    if (cursor && *cursor)
        ag_warn("MCP server '%s': tools/list stopped after %d pages", c->cfg.name, c->n_pages);
    list_done(c);
}

/* ---- calls ---- */

static void send_call(struct mcp_client *c, struct mcp_req *q)
{
    struct proto_val *p = proto_obj();
    proto_add_str(p, "name", q->tool);
    proto_add(p, "arguments", proto_val_dup(q->args));
    send_request(c, q, "tools/call", p);
}

static void on_call_answer(struct mcp_client *c, struct mcp_req *q, const struct proto_val *msg)
{
    const struct proto_val *error = proto_get(msg, "error");
    if (error) {
        const char *m = proto_get_str(error, "message");
        call_fail(c, q, AG_ETOOL, "MCP server '%s' refused the call of '%s': %s (error %lld)",
                  c->cfg.name, q->tool, m ? m : "no message",
                  (long long)proto_int(proto_get(error, "code"), 0));
        return;
    }
    const struct proto_val *result = proto_get(msg, "result");
    char *json = proto_print(result);
    bool ok, truncated;
    char *text, *structured;
    struct ag_err err = {0};
    if (mcp_result_format(json, strlen(json), q->max_output, &ok, &text, &structured, &truncated,
                          &err) != 0) {
        free(json);
        call_fail(c, q, AG_EPROTO, "MCP server '%s' answered the call of '%s' unreadably: %s",
                  c->cfg.name, q->tool, err.msg);
        return;
    }
    free(json);
    call_end(c, q, 0, ok, text, structured, truncated);
    free(text);
    free(structured);
}

/* ---- messages from the server ---- */

static void on_server_request(struct mcp_client *c, const struct proto_val *msg, const char *method)
{
    const struct proto_val *id = proto_get(msg, "id");
    struct ag_buf b;
    ag_buf_init(&b);
    if (strcmp(method, "ping") == 0) {
        proto_write_result(&b, id, NULL);
    } else {
        /* Sampling, roots and elicitation are capabilities we did not announce. */
        struct proto_val *r = proto_obj();
        proto_add_str(r, "jsonrpc", "2.0");
        proto_add(r, "id", proto_val_dup(id));
        struct proto_val *e = proto_add(r, "error", proto_obj());
        proto_add_int(e, "code", PROTO_RPC_METHOD_NOT_FOUND);
        proto_add_str(e, "message", "agentd's MCP client does not serve this method");
        proto_print_buf(r, &b);
        ag_buf_putc(&b, '\n');
        proto_val_free(r);
    }
    send_buf(c, 0, &b);
}

static void on_notification(struct mcp_client *c, const struct proto_val *msg, const char *method)
{
    if (strcmp(method, "notifications/tools/list_changed") == 0) {
        if (c->state == MCP_READY && !c->handshaking && !c->relisting) {
            c->relisting = true;
            c->n_pages = 0;
            send_list(c, NULL);
        }
    } else if (strcmp(method, "notifications/message") == 0) {
        const struct proto_val *p = proto_get(msg, "params");
        char *data = proto_print(proto_get(p, "data"));
        ag_debug("MCP server '%s' logs (%s): %s", c->cfg.name,
                 proto_get_str(p, "level") ? proto_get_str(p, "level") : "?", data);
        free(data);
    }
    /* Progress and other notifications carry nothing we use. */
}

static void on_message(struct mcp_client *c, const struct proto_val *msg)
{
    if (proto_type(msg) != PROTO_OBJECT) {
        ag_warn("MCP server '%s' sent a JSON %s, not a JSON-RPC message", c->cfg.name,
                proto_type_name(proto_type(msg)));
        return;
    }
    const char *method = proto_get_str(msg, "method");
    const struct proto_val *id = proto_get(msg, "id");
    if (method) {
        if (id)
            on_server_request(c, msg, method);
        else
            on_notification(c, msg, method);
        return;
    }
    if (!proto_is_int(id)) {
        ag_warn("MCP server '%s' sent an answer without a usable id", c->cfg.name);
        return;
    }
    struct mcp_req *q = req_find(c, proto_int(id, -1));
    if (!q || !q->sent) {
        ag_debug("MCP server '%s' answered request %lld, which is no longer waiting", c->cfg.name,
                 (long long)proto_int(id, -1));
        return;
    }
    if (q->kind == REQ_CALL) {
        on_call_answer(c, q, msg);
        if (!c->freeing) arm_deadline(c);
        return;
    }
    enum req_kind kind = q->kind;
    unlink_req(c, q);
    req_free(q);
    const struct proto_val *error = proto_get(msg, "error");
    if (error) {
        char why[400];
        const char *m = proto_get_str(error, "message");
        snprintf(why, sizeof(why), "refused %s: %.300s",
                 kind == REQ_INIT ? "initialize" : "tools/list", m ? m : "no message");
        if (kind == REQ_LIST && c->relisting) {
            ag_warn("MCP server '%s' %s; keeping the old tool list", c->cfg.name, why);
            c->relisting = false;
            return;
        }
        attempt_failed(c, why);
        return;
    }
    const struct proto_val *result = proto_get(msg, "result");
    if (kind == REQ_INIT)
        on_init_result(c, result);
    else
        on_list_result(c, result);
}

void mcp__received(struct mcp_client *c, void *tp, const char *json, size_t n)
{
    if (c->freeing || tp != c->tp) return; /* a connection being closed */
    struct ag_err err = {0};
    struct proto_val *v = proto_parse(json, n, &err);
    if (!v) {
        ag_warn("MCP server '%s' sent a line that is not JSON (%s): %.80s%s", c->cfg.name, err.msg,
                json, n > 80 ? "..." : "");
        return;
    }
    if (proto_type(v) == PROTO_ARRAY) {
        /* A batch (2025-03-26 allowed them): each member on its own. */
        for (const struct proto_val *m = proto_child(v); m && !c->freeing && tp == c->tp;
             m = proto_next(m))
            on_message(c, m);
    } else {
        on_message(c, v);
    }
    proto_val_free(v);
}

void mcp__received_too_big(struct mcp_client *c, void *tp, const char *head, size_t n, size_t bytes)
{
    if (c->freeing || tp != c->tp) return;
    int64_t id = mcp__peek_id(head, n);
    struct mcp_req *q = id >= 0 ? req_find(c, id) : NULL;
    if (q && q->kind == REQ_CALL) {
        call_fail(c, q, AG_ETOOBIG,
                  "MCP server '%s' answered the call of '%s' with a message of %zu bytes, over "
                  "the %zu-byte limit",
                  c->cfg.name, q->tool, bytes, c->cfg.max_message_bytes);
        if (!c->freeing) arm_deadline(c);
        return;
    }
    char why[200];
    snprintf(why, sizeof(why), "sent a message of %zu bytes, over the %zu-byte limit", bytes,
             c->cfg.max_message_bytes);
    if (q) {
        attempt_failed(c, why); /* a handshake answer we cannot read */
        return;
    }
    ag_warn("MCP server '%s' %s; it was dropped", c->cfg.name, why);
}

void mcp__send_failed(struct mcp_client *c, void *tp, int64_t id, int code, const char *why)
{
    if (c->freeing || tp != c->tp) return;
    struct mcp_req *q = req_find(c, id);
    if (!q) return;
    if (q->kind == REQ_CALL) {
        call_fail(c, q, code, "MCP server '%s' %s", c->cfg.name, why);
        if (!c->freeing) arm_deadline(c);
        return;
    }
    attempt_failed(c, why);
}

void mcp__lost(struct mcp_client *c, void *tp, const char *why)
{
    if (c->freeing || tp != c->tp) return;
    attempt_failed(c, why);
}

/* ---- handles and freeing ---- */

static void maybe_free(struct mcp_client *c)
{
    if (!c->freeing || c->handles_open > 0 || c->n_tp > 0) return;
    tools_free(c->tools, c->n_tools);
    tools_free(c->next_tools, c->n_next);
    free(c->cfg.name);
    free(c->cfg.command);
    free(c->cfg.cwd);
    free(c->cfg.url);
    for (size_t i = 0; c->cfg.args && c->cfg.args[i]; i++) free(c->cfg.args[i]);
    for (size_t i = 0; c->cfg.env && c->cfg.env[i]; i++) free(c->cfg.env[i]);
    for (size_t i = 0; c->cfg.sandbox_paths && c->cfg.sandbox_paths[i]; i++)
        free(c->cfg.sandbox_paths[i]);
    free(c->cfg.args);
    free(c->cfg.env);
    free(c->cfg.sandbox_paths);
    free(c);
}

void mcp__gone(struct mcp_client *c)
{
    c->n_tp--;
    maybe_free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct mcp_client *c = h->data;
    c->handles_open--;
    maybe_free(c);
}

uv_loop_t *mcp__loop(struct mcp_client *c)
{
    return c->loop;
}

const struct mcp__cfg *mcp__config(struct mcp_client *c)
{
    return &c->cfg;
}

const char *mcp__protocol_version(struct mcp_client *c)
{
    return c->version;
}

/* ---- public ---- */

static char **copy_list(const char *const *l)
{
    if (!l) return NULL;
    size_t n = 0;
    while (l[n]) n++;
    char **out = ag_calloc(n + 1, sizeof(*out));
    for (size_t i = 0; i < n; i++) out[i] = ag_strdup(l[i]);
    return out;
}

int mcp_client_new(uv_loop_t *loop, const struct mcp_server_cfg *cfg, mcp_state_cb on_state,
                   void *ud, struct mcp_client **out, struct ag_err *err)
{
    *out = NULL;
    if (!cfg->name || !*cfg->name) return ag_err_set(err, AG_EINVAL, "an MCP server needs a name");
    bool has_cmd = cfg->command && *cfg->command, has_url = cfg->url && *cfg->url;
    if (has_cmd == has_url)
        return ag_err_set(err, AG_EINVAL, "MCP server '%s' needs exactly one of command and url",
                          cfg->name);
    for (size_t i = 0; cfg->env && cfg->env[i]; i++)
        if (!strchr(cfg->env[i], '=') || cfg->env[i][0] == '=')
            return ag_err_set(err, AG_EINVAL, "MCP server '%s': env[%zu] '%s' is not K=V",
                              cfg->name, i, cfg->env[i]);
    if (has_url && cfg->sandbox)
        return ag_err_set(err, AG_EINVAL,
                          "MCP server '%s': only a server started by command can be sandboxed",
                          cfg->name);
    struct mcp_client *c = ag_calloc(1, sizeof(*c));
    c->loop = loop;
    ag_list_init(&c->reqs);
    c->cfg.name = ag_strdup(cfg->name);
    c->cfg.command = has_cmd ? ag_strdup(cfg->command) : NULL;
    c->cfg.args = copy_list(cfg->args);
    c->cfg.env = copy_list(cfg->env);
    c->cfg.cwd = cfg->cwd ? ag_strdup(cfg->cwd) : NULL;
    c->cfg.url = has_url ? ag_strdup(cfg->url) : NULL;
    c->cfg.start_timeout_ms =
        cfg->start_timeout_ms > 0 ? cfg->start_timeout_ms : MCP_START_TIMEOUT_MS;
    c->cfg.max_message_bytes =
        cfg->max_message_bytes ? cfg->max_message_bytes : MCP_MAX_MESSAGE_BYTES;
    c->cfg.max_restarts = cfg->max_restarts ? cfg->max_restarts : MCP_MAX_RESTARTS;
    c->cfg.sandbox = cfg->sandbox;
    if (cfg->sandbox_limits)
        c->cfg.sandbox_limits = *cfg->sandbox_limits;
    else
        sbx_limits_default(&c->cfg.sandbox_limits);
    c->cfg.sandbox_paths = copy_list(cfg->sandbox_paths);
    c->cfg.sandbox_network = cfg->sandbox_network;
    c->tr = has_cmd ? &mcp__stdio : &mcp__http;
    c->on_state = on_state;
    c->ud = ud;
    c->state = MCP_STARTING;
    uv_timer_init(loop, &c->deadline);
    uv_timer_init(loop, &c->restart);
    c->deadline.data = c->restart.data = c;
    c->handles_open = 2;
    int rc = attempt_start(c, err);
    if (rc != 0) {
        ag_err_prefix(err, "MCP server '%s': ", c->cfg.name);
        c->on_state = NULL;
        mcp_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void mcp_client_free(struct mcp_client *c)
{
    if (!c || c->freeing) return;
    /* Calls end first, while everything they might look at is still there. */
    c->on_state = NULL;
    for (struct mcp_req *q; (q = req_first(c)) != NULL;) {
        if (q->kind != REQ_CALL) {
            unlink_req(c, q);
            req_free(q);
            continue;
        }
        call_fail(c, q, AG_ESHUTDOWN, "MCP server '%s' was stopped during the call", c->cfg.name);
    }
    c->freeing = true;
    c->state = MCP_STOPPED;
    if (c->tp) {
        void *tp = c->tp;
        c->tp = NULL;
        c->tr->close(tp);
    }
    uv_timer_stop(&c->deadline);
    uv_timer_stop(&c->restart);
    uv_close((uv_handle_t *)&c->deadline, on_timer_closed);
    uv_close((uv_handle_t *)&c->restart, on_timer_closed);
}

enum mcp_state mcp_client_state(const struct mcp_client *c)
{
    return c->state;
}

const char *mcp_client_name(const struct mcp_client *c)
{
    return c->cfg.name;
}

size_t mcp_client_tools(const struct mcp_client *c, const struct mcp_tool **tools)
{
    *tools = c->tools;
    return c->n_tools;
}

const char *mcp_client_stderr(const struct mcp_client *c)
{
    if (c->tp && c->tr->stderr_tail) {
        const char *s = c->tr->stderr_tail(c->tp);
        if (s) return s;
    }
    return c->stderr_saved;
}

const char *mcp_client_last_error(const struct mcp_client *c)
{
    return c->last_error;
}

int mcp_call(struct mcp_client *c, const char *tool, const char *arguments_json, int64_t timeout_ms,
             size_t max_output_bytes, mcp_done_cb done, void *ud, uint64_t *call_id,
             struct ag_err *err)
{
    if (c->freeing || c->state == MCP_FAILED)
        return ag_err_set(err, AG_ECLOSED, "%s",
                          c->freeing         ? "the MCP client is stopping"
                          : c->last_error[0] ? c->last_error
                                             : "the MCP server failed");
    struct proto_val *args;
    if (!arguments_json || !*arguments_json) {
        args = proto_obj();
    } else {
        struct ag_err perr = {0};
        args = proto_parse(arguments_json, strlen(arguments_json), &perr);
        if (!args)
            return ag_err_set(err, AG_EPARAMS, "arguments of '%s.%s' are not JSON: %s", c->cfg.name,
                              tool, perr.msg);
        if (proto_type(args) != PROTO_OBJECT) {
            proto_val_free(args);
            return ag_err_set(err, AG_EPARAMS, "arguments of '%s.%s' must be a JSON object",
                              c->cfg.name, tool);
        }
    }
    struct mcp_req *q = req_new(c, REQ_CALL);
    q->tool = ag_strdup(tool);
    q->args = args;
    q->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
    q->deadline_ms = timeout_ms > 0 ? ag_now_ms() + timeout_ms : 0;
    q->max_output = max_output_bytes ? max_output_bytes : MCP_DEFAULT_OUTPUT_BYTES;
    q->done = done;
    q->ud = ud;
    if (call_id) *call_id = (uint64_t)q->id;
    if (c->state == MCP_READY && c->tp && !c->handshaking) send_call(c, q);
    arm_deadline(c);
    return 0;
}

void mcp_cancel(struct mcp_client *c, uint64_t call_id)
{
    if (c->freeing) return;
    struct mcp_req *q = req_find(c, (int64_t)call_id);
    if (!q || q->kind != REQ_CALL) return;
    if (q->sent && c->tp) send_cancelled(c, q->id, "cancelled by agentd");
    if (q->sent && c->tp && c->tr->abandon) c->tr->abandon(c->tp, q->id);
    call_fail(c, q, AG_ECANCELLED, "the call of MCP tool '%s.%s' was cancelled", c->cfg.name,
              q->tool);
    if (!c->freeing) arm_deadline(c);
}

size_t mcp_calls_in_flight(const struct mcp_client *c)
{
    return c->n_calls;
}
