/*
 * engined.c - the engine.* and model.* methods: the built-in inference engine as a service of
 * the daemon (engine/serve.h does the work on its own thread).
 *
 * engine.generate takes OpenAI chat-completions parameters (messages or prompt, tools,
 * response_format, max_tokens, temperature, top_p, seed, stop, stream, ...), parses them on the
 * loop thread (so a bad request is answered at once, naming the field) and submits the request.
 * The engine thread's events come back through an outbox-only hand-off (handoff.c); the loop
 * drains it in order: `engine.delta` notifications while streaming, then the response. A request is
 * cancelled by engine.cancel {request_id} from any connection, or when its client closes the
 * connection (read EOF included: a client must keep its side open while it waits).
 */
#include "agentd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One generation in flight (loop thread, except what the engine thread's callback reads:
 * g->e, which never changes). */
struct greq {
    struct ag_list node; /* in engd.live */
    struct engd *e;
    uint64_t eid;                 /* the engine's id */
    char request_id[80];          /* the caller's name for it (engine.cancel, engine.delta) */
    const struct engd_gen_cb *cb; /* where the result goes */
    void *ud;                     /* the caller's */
    const void *owner;            /* the connection it is for, or NULL (engd_conn_gone) */
    bool cancel_sent;             /* eng_serve_cancel was called */
};

/* An event on its way to the loop: a copy of what the engine thread's callback saw. */
struct gout {
    struct ag_list node; /* in engd.ho's outbox */
    struct greq *g;
    enum eng_ev_type type;
    char *text;                  /* DELTA: new text; DONE: the content (chat) or whole text */
    size_t len;                  /* bytes of text */
    char *raw;                   /* DONE: the whole generated text */
    size_t raw_len;              /* bytes of raw */
    struct eng_chat_reply reply; /* DONE for a chat: the calls (copied) */
    bool chat;                   /* reply is set */
    char *parse_error;           /* DONE: why the calls did not parse, or NULL */
    char finish_reason[16];      /* DONE */
    struct eng_gen_usage usage;  /* DONE, ERROR */
    struct ag_err err;           /* ERROR */
    int n_ctx, max_tokens;       /* ERROR AG_ECTXOVERFLOW */
};

struct engd {
    struct agentd *d;
    struct eng_serve *srv; /* NULL without --model */
    struct handoff ho;     /* events from the engine thread (an outbox only) */
    struct ag_list live;   /* generations in flight (struct greq.node) */
    int n_live;
    uint64_t next_name; /* for generated request ids */
};

void engd_call_id(char *buf, size_t n, uint64_t eid, size_t i)
{
    snprintf(buf, n, "call_%llu_%zu", (unsigned long long)eid, i);
}

/* ---- events (engine thread) ---- */

static void on_event(void *ud, const struct eng_gen_event *ev)
{
    struct greq *g = ud;
    struct gout *o = ag_calloc(1, sizeof(*o));
    o->g = g;
    o->type = ev->type;
    o->usage = ev->usage;
    if (ev->type == ENG_EV_DELTA) {
        o->text = ag_strndup(ev->text, ev->len);
        o->len = ev->len;
    } else if (ev->type == ENG_EV_DONE) {
        o->raw = ag_strndup(ev->text, ev->len);
        o->raw_len = ev->len;
        if (ev->reply) {
            const char *content = ev->reply->content ? ev->reply->content : "";
            o->chat = true;
            o->text = ag_strdup(content);
            o->len = strlen(content);
            o->reply.n_calls = ev->reply->n_calls;
            o->reply.calls = ag_calloc(ev->reply->n_calls + 1, sizeof(*o->reply.calls));
            for (size_t i = 0; i < ev->reply->n_calls; i++) {
                o->reply.calls[i].name = ag_strdup(ev->reply->calls[i].name);
                o->reply.calls[i].arguments = ag_strdup(ev->reply->calls[i].arguments);
            }
        } else {
            o->text = ag_strndup(ev->text, ev->len);
            o->len = ev->len;
        }
        if (ev->parse_error) o->parse_error = ag_strdup(ev->parse_error);
        snprintf(o->finish_reason, sizeof(o->finish_reason), "%s",
                 ev->finish_reason ? ev->finish_reason : "stop");
    } else {
        o->err = *ev->err;
        o->n_ctx = ev->n_ctx;
        o->max_tokens = ev->max_tokens;
    }
    handoff_post(&g->e->ho, &o->node);
}

/* ---- the loop's side ---- */

static void greq_unlink(struct engd *e, struct greq *g)
{
    ag_list_remove(&g->node);
    e->n_live--;
}

static void gout_free(struct gout *o)
{
    free(o->text);
    free(o->raw);
    free(o->parse_error);
    eng_chat_reply_release(&o->reply);
    free(o);
}

static void deliver(struct gout *o)
{
    struct greq *g = o->g;
    if (o->type == ENG_EV_DELTA) {
        if (g->cb->delta) g->cb->delta(g->ud, o->text, o->len);
        return;
    }
    struct engd_result res = {
        .id = g->eid,
        .request_id = g->request_id,
        .text = o->text ? o->text : "",
        .len = o->len,
        .raw = o->raw ? o->raw : "",
        .raw_len = o->raw_len,
        .chat = o->chat,
        .calls = o->reply.calls,
        .n_calls = o->reply.n_calls,
        .parse_error = o->parse_error,
        .finish_reason = o->finish_reason,
        .usage = o->usage,
        .n_ctx = o->n_ctx,
        .max_tokens = o->max_tokens,
    };
    greq_unlink(g->e, g);
    g->cb->done(g->ud, &res, o->type == ENG_EV_DONE ? NULL : &o->err);
    free(g);
}

static void event_done(struct ag_list *item, void *ud)
{
    (void)ud;
    struct gout *o = ag_list_entry(item, struct gout, node);
    deliver(o);
    gout_free(o);
}

static int no_engine(struct ag_err *err)
{
    return ag_err_set(err, AG_EUNSUPPORTED,
                      "no model loaded: start agentd with --model PATH (make model fetches "
                      "models/SmolLM2-135M-Instruct.Q4_1.gguf)");
}

static struct greq *submit(struct engd *e, struct eng_gen_req *r, const char *name,
                           const void *owner, const struct engd_gen_cb *cb, void *ud,
                           struct ag_err *err)
{
    if (!e || !e->srv) {
        no_engine(err);
        return NULL;
    }
    if (name) {
        if (!*name || strlen(name) >= sizeof(((struct greq *)0)->request_id))
            return ag_err_set(err, AG_EPARAMS, "params.request_id: 1 to %zu bytes",
                              sizeof(((struct greq *)0)->request_id) - 1),
                   NULL;
        ag_list_foreach (it, &e->live)
            if (strcmp(ag_list_entry(it, struct greq, node)->request_id, name) == 0)
                return ag_err_set(err, AG_EEXISTS, "params.request_id: '%s' is already running",
                                  name),
                       NULL;
    }
    struct greq *g = ag_calloc(1, sizeof(*g));
    g->e = e;
    g->cb = cb;
    g->ud = ud;
    g->owner = owner;
    if (name)
        snprintf(g->request_id, sizeof(g->request_id), "%s", name);
    else
        snprintf(g->request_id, sizeof(g->request_id), "gen-%llu",
                 (unsigned long long)++e->next_name);
    ag_list_insert_head(&e->live, &g->node);
    e->n_live++;
    if (eng_serve_submit(e->srv, r, on_event, g, &g->eid, err) < 0) {
        greq_unlink(e, g);
        free(g);
        return NULL;
    }
    return g;
}

int engd_generate(struct agentd *d, struct eng_gen_req *r, const char *name, const void *owner,
                  const struct engd_gen_cb *cb, void *ud, uint64_t *id, struct ag_err *err)
{
    struct greq *g = submit(d->eng, r, name, owner, cb, ud, err);
    if (!g) return err && err->code ? err->code : AG_EINTERNAL;
    if (id) *id = g->eid;
    return 0;
}

uint64_t engd_random_seed(struct agentd *d)
{
    struct engd *e = d->eng;
    return (uint64_t)ag_now_ms() ^ ((uint64_t)(e ? ++e->next_name : 0) << 32);
}

void engd_cancel(struct agentd *d, uint64_t id)
{
    struct engd *e = d->eng;
    if (!e || !e->srv) return;
    ag_list_foreach (it, &e->live) {
        struct greq *g = ag_list_entry(it, struct greq, node);
        if (g->eid == id && !g->cancel_sent) {
            eng_serve_cancel(e->srv, g->eid);
            g->cancel_sent = true;
        }
    }
}

/* ---- engine.generate: the JSON-RPC adapter ---- */

/* One engine.generate request: the client and how to answer it. */
struct rgen {
    struct conn *c;       /* who asked (referenced until the response) */
    struct proto_req req; /* owned: its id answers */
    bool stream;          /* send engine.delta */
    char request_id[80];  /* for engine.delta */
};

static struct proto_val *usage_val(const struct eng_gen_usage *u)
{
    struct proto_val *v = proto_obj();
    proto_add_int(v, "prompt_tokens", u->prompt_tokens);
    proto_add_int(v, "completion_tokens", u->completion_tokens);
    proto_add_int(v, "total_tokens", u->prompt_tokens + u->completion_tokens);
    proto_add_int(v, "cached_tokens", u->cached_tokens);
    return v;
}

static struct proto_val *timings_val(const struct eng_gen_usage *u)
{
    struct proto_val *v = proto_obj();
    proto_add_num(v, "queue_ms", u->queue_ms);
    proto_add_num(v, "ttft_ms", u->ttft_ms);
    proto_add_num(v, "total_ms", u->total_ms);
    double decode_ms = u->total_ms - u->ttft_ms;
    if (u->completion_tokens > 1 && decode_ms > 0)
        proto_add_num(v, "decode_tokens_per_s", (u->completion_tokens - 1) * 1000.0 / decode_ms);
    return v;
}

static struct proto_val *str_n(const char *s, size_t n)
{
    char *t = ag_strndup(s, n);
    struct proto_val *v = proto_new_str(t);
    free(t);
    return v;
}

static struct proto_val *done_val(const struct engd_result *res)
{
    struct proto_val *r = proto_obj();
    proto_add_str(r, "request_id", res->request_id);
    proto_add(r, "text", str_n(res->text, res->len));
    struct proto_val *calls = proto_add(r, "tool_calls", proto_arr());
    for (size_t i = 0; i < res->n_calls; i++) {
        struct proto_val *c = proto_obj(), *f = proto_obj();
        char id[48];
        engd_call_id(id, sizeof(id), res->id, i);
        proto_add_str(c, "id", id);
        proto_add_str(c, "type", "function");
        proto_add_str(f, "name", res->calls[i].name);
        proto_add_str(f, "arguments", res->calls[i].arguments);
        proto_add(c, "function", f);
        proto_push(calls, c);
    }
    if (res->parse_error) {
        proto_add(r, "raw_text", str_n(res->raw, res->raw_len));
        proto_add_str(r, "tool_call_error", res->parse_error);
    }
    proto_add_str(r, "finish_reason", res->finish_reason);
    proto_add(r, "usage", usage_val(&res->usage));
    proto_add(r, "timings", timings_val(&res->usage));
    return r;
}

static void rgen_delta(void *ud, const char *text, size_t n)
{
    struct rgen *q = ud;
    if (!q->stream || q->c->closing) return;
    struct proto_val *p = proto_obj();
    proto_add_str(p, "request_id", q->request_id);
    proto_add(p, "text", str_n(text, n));
    conn_notify(q->c, "engine.delta", p);
    proto_val_free(p);
}

static void rgen_done(void *ud, const struct engd_result *res, const struct ag_err *err)
{
    struct rgen *q = ud;
    struct conn *c = q->c;
    if (!c->closing) {
        if (!err) {
            struct proto_val *v = done_val(res);
            conn_reply(c, q->req.id, v);
            proto_val_free(v);
        } else {
            struct proto_val *data = proto_obj();
            proto_add_str(data, "request_id", res->request_id);
            if (err->code == AG_ECTXOVERFLOW) {
                proto_add_int(data, "prompt_tokens", res->usage.prompt_tokens);
                proto_add_int(data, "n_ctx", res->n_ctx);
                if (res->max_tokens > 0) proto_add_int(data, "max_tokens", res->max_tokens);
            }
            proto_add(data, "usage", usage_val(&res->usage));
            conn_reply_error_data(c, q->req.id, err, data);
            proto_val_free(data);
        }
    }
    proto_req_release(&q->req);
    free(q);
    conn_end_async(c);
}

static const struct engd_gen_cb rgen_cb = {rgen_delta, rgen_done};

/* ---- parameters ---- */

/* A message's content: a string, null, or an array of {"type": "text", "text": ...} parts. */
static int content_of(const struct proto_val *v, const char *where, struct eng_gen_req *r,
                      const char **out, struct ag_err *err)
{
    *out = NULL;
    if (!v || proto_type(v) == PROTO_NULL) return 0;
    if (proto_type(v) == PROTO_STRING) {
        *out = eng_gen_req_strdup(r, proto_str(v));
        return 0;
    }
    if (proto_type(v) != PROTO_ARRAY)
        return ag_err_set(err, AG_EPARAMS,
                          "%s.content: expected a string, null or an array of "
                          "text parts, got %s",
                          where, proto_type_name(proto_type(v)));
    struct ag_buf b;
    ag_buf_init(&b);
    for (size_t i = 0; i < proto_len(v); i++) {
        const struct proto_val *part = proto_at(v, i);
        const char *type = proto_get_str(part, "type"), *text = proto_get_str(part, "text");
        if (!type || strcmp(type, "text") != 0 || !text) {
            ag_buf_release(&b);
            return ag_err_set(err, AG_EPARAMS,
                              "%s.content[%zu]: only {\"type\": \"text\", \"text\": ...} parts "
                              "are supported",
                              where, i);
        }
        ag_buf_append(&b, text, strlen(text));
    }
    *out = eng_gen_req_strdup(r, b.data ? b.data : "");
    ag_buf_release(&b);
    return 0;
}

static int parse_messages(const struct proto_val *msgs, struct eng_gen_req *r, struct ag_err *err)
{
    size_t n = proto_len(msgs);
    if (proto_type(msgs) != PROTO_ARRAY || n == 0)
        return ag_err_set(err, AG_EPARAMS, "params.messages: expected a non-empty array");
    struct eng_chat_msg *m = eng_gen_req_alloc(r, n * sizeof(*m));
    for (size_t i = 0; i < n; i++) {
        const struct proto_val *v = proto_at(msgs, i);
        char where[48];
        snprintf(where, sizeof(where), "params.messages[%zu]", i);
        if (proto_type(v) != PROTO_OBJECT)
            return ag_err_set(err, AG_EPARAMS, "%s: expected an object", where);
        const char *role = proto_get_str(v, "role");
        if (!role) return ag_err_set(err, AG_EPARAMS, "%s.role: required", where);
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            m[i].role = ENG_CHAT_SYSTEM;
        else if (strcmp(role, "user") == 0)
            m[i].role = ENG_CHAT_USER;
        else if (strcmp(role, "assistant") == 0)
            m[i].role = ENG_CHAT_ASSISTANT;
        else if (strcmp(role, "tool") == 0)
            m[i].role = ENG_CHAT_TOOL;
        else
            return ag_err_set(err, AG_EPARAMS,
                              "%s.role: expected system, user, assistant or tool, got '%s'", where,
                              role);
        int rc = content_of(proto_get(v, "content"), where, r, &m[i].content, err);
        if (rc < 0) return rc;
        m[i].tool_call_id = eng_gen_req_strdup(r, proto_get_str(v, "tool_call_id"));
        m[i].name = eng_gen_req_strdup(r, proto_get_str(v, "name"));
        const struct proto_val *calls = proto_get(v, "tool_calls");
        if (calls && proto_type(calls) != PROTO_NULL) {
            if (proto_type(calls) != PROTO_ARRAY || m[i].role != ENG_CHAT_ASSISTANT)
                return ag_err_set(err, AG_EPARAMS,
                                  "%s.tool_calls: expected an array, on an assistant message",
                                  where);
            size_t nc = proto_len(calls);
            struct eng_chat_call *cc = eng_gen_req_alloc(r, nc * sizeof(*cc));
            for (size_t k = 0; k < nc; k++) {
                const struct proto_val *call = proto_at(calls, k);
                const struct proto_val *f = proto_get(call, "function");
                const char *name = proto_get_str(f, "name");
                if (!name)
                    return ag_err_set(err, AG_EPARAMS, "%s.tool_calls[%zu].function.name: required",
                                      where, k);
                cc[k].id = eng_gen_req_strdup(r, proto_get_str(call, "id"));
                cc[k].name = eng_gen_req_strdup(r, name);
                const struct proto_val *args = proto_get(f, "arguments");
                if (proto_type(args) == PROTO_STRING) {
                    cc[k].arguments = eng_gen_req_strdup(r, proto_str(args));
                } else if (proto_type(args) == PROTO_OBJECT) {
                    char *t = proto_print(args);
                    cc[k].arguments = eng_gen_req_strdup(r, t);
                    free(t);
                }
            }
            m[i].calls = cc;
            m[i].n_calls = nc;
        }
    }
    r->chat.msgs = m;
    r->chat.n_msgs = n;
    return 0;
}

static int parse_tools(const struct proto_val *tools, struct eng_gen_req *r, struct ag_err *err)
{
    size_t n = proto_len(tools);
    if (proto_type(tools) != PROTO_ARRAY)
        return ag_err_set(err, AG_EPARAMS, "params.tools: expected an array");
    struct eng_chat_tool *t = eng_gen_req_alloc(r, (n ? n : 1) * sizeof(*t));
    for (size_t i = 0; i < n; i++) {
        const struct proto_val *v = proto_at(tools, i);
        const struct proto_val *f = proto_get(v, "function");
        if (!f) f = v; /* {"name", "parameters"} directly */
        const char *name = proto_get_str(f, "name");
        if (!name || !*name)
            return ag_err_set(err, AG_EPARAMS, "params.tools[%zu].function.name: required", i);
        t[i].name = eng_gen_req_strdup(r, name);
        t[i].description = eng_gen_req_strdup(r, proto_get_str(f, "description"));
        const struct proto_val *params = proto_get(f, "parameters");
        if (params && proto_type(params) != PROTO_OBJECT)
            return ag_err_set(err, AG_EPARAMS,
                              "params.tools[%zu].function.parameters: expected a JSON Schema "
                              "object",
                              i);
        if (params) {
            char *s = proto_print(params);
            t[i].parameters = eng_gen_req_strdup(r, s);
            free(s);
        }
    }
    r->chat.tools = t;
    r->chat.n_tools = n;
    return 0;
}

static int num_param(const struct proto_val *p, const char *key, double lo, double hi, float *out,
                     struct ag_err *err)
{
    const struct proto_val *v = proto_get(p, key);
    if (!v || proto_type(v) == PROTO_NULL) return 0;
    double x = proto_num(v, NAN);
    if (proto_type(v) != PROTO_NUMBER || !(x >= lo && x <= hi))
        return ag_err_set(err, AG_EPARAMS, "params.%s: expected a number from %g to %g", key, lo,
                          hi);
    *out = (float)x;
    return 0;
}

static int parse_generate(struct engd *e, const struct proto_val *p, struct eng_gen_req *r,
                          struct rgen *q, const char **rid, struct ag_err *err)
{
    int rc;
    if (proto_type(p) != PROTO_OBJECT)
        return ag_err_set(err, AG_EPARAMS, "params: expected an object with messages or prompt");
    const struct proto_val *msgs = proto_get(p, "messages");
    const char *prompt = NULL;
    if ((rc = proto_param_str(p, "prompt", false, &prompt, err)) != 0) return rc;
    if (!msgs == !prompt)
        return ag_err_set(err, AG_EPARAMS, "params: give exactly one of messages or prompt");
    if (msgs && (rc = parse_messages(msgs, r, err)) != 0) return rc;
    r->prompt = eng_gen_req_strdup(r, prompt);

    const struct proto_val *tc = proto_get(p, "tool_choice");
    const char *choice = proto_get_str(p, "tool_choice");
    if (tc && proto_type(tc) == PROTO_OBJECT) {
        const char *fname = proto_get_str(proto_get(tc, "function"), "name");
        if (!fname)
            return ag_err_set(err, AG_EPARAMS, "params.tool_choice.function.name: required");
        r->tool_required = true;
        r->tool_name = eng_gen_req_strdup(r, fname);
    } else if (tc && (!choice || (strcmp(choice, "auto") != 0 && strcmp(choice, "none") != 0 &&
                                  strcmp(choice, "required") != 0))) {
        return ag_err_set(err, AG_EPARAMS,
                          "params.tool_choice: expected \"auto\", \"none\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (choice && strcmp(choice, "required") == 0) r->tool_required = true;
    const struct proto_val *tools = proto_get(p, "tools");
    if (tools && proto_type(tools) != PROTO_NULL && !(choice && strcmp(choice, "none") == 0)) {
        if (!msgs) return ag_err_set(err, AG_EPARAMS, "params.tools: needs messages, not a prompt");
        if ((rc = parse_tools(tools, r, err)) != 0) return rc;
    }
    bool grammar = true;
    if ((rc = proto_param_bool(p, "grammar", false, &grammar, err)) != 0) return rc;
    r->tool_grammar = grammar;
    if (r->tool_required && r->chat.n_tools == 0)
        return ag_err_set(err, AG_EPARAMS, "params.tool_choice: a required call needs tools");
    if (r->tool_required && !grammar)
        return ag_err_set(err, AG_EPARAMS, "params.tool_choice: a required call needs grammar");

    const struct proto_val *rf = proto_get(p, "response_format");
    if (rf && proto_type(rf) != PROTO_NULL) {
        const char *type = proto_get_str(rf, "type");
        if (!type)
            return ag_err_set(err, AG_EPARAMS,
                              "params.response_format.type: required (text, "
                              "json_object or json_schema)");
        if (strcmp(type, "json_schema") == 0) {
            const struct proto_val *js = proto_get(rf, "json_schema");
            const struct proto_val *schema = proto_get(js, "schema");
            if (!schema || proto_type(schema) != PROTO_OBJECT)
                return ag_err_set(err, AG_EPARAMS,
                                  "params.response_format.json_schema.schema: required, a JSON "
                                  "Schema object");
            char *s = proto_print(schema);
            r->json_schema = eng_gen_req_strdup(r, s);
            free(s);
        } else if (strcmp(type, "json_object") == 0) {
            r->json_schema = eng_gen_req_strdup(r, "{\"type\":\"object\"}");
        } else if (strcmp(type, "text") != 0) {
            return ag_err_set(err, AG_EPARAMS,
                              "params.response_format.type: expected text, json_object or "
                              "json_schema, got '%s'",
                              type);
        }
    }

    int64_t n;
    const char *mt = proto_get(p, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = proto_param_int(p, mt, false, 1, 1 << 24, &n, err)) != 0) return rc;
    if (proto_get(p, mt)) r->max_tokens = (int)n;
    if (proto_get(p, "n")) {
        if ((rc = proto_param_int(p, "n", false, 1, 1, &n, err)) != 0) return rc;
    }

    r->sampling = eng_sampler_params_default();
    if ((rc = num_param(p, "temperature", 0, 100, &r->sampling.temperature, err)) != 0 ||
        (rc = num_param(p, "top_p", 0, 1, &r->sampling.top_p, err)) != 0 ||
        (rc = num_param(p, "min_p", 0, 1, &r->sampling.min_p, err)) != 0 ||
        (rc = num_param(p, "frequency_penalty", -2, 2, &r->sampling.frequency_penalty, err)) != 0 ||
        (rc = num_param(p, "presence_penalty", -2, 2, &r->sampling.presence_penalty, err)) != 0 ||
        (rc = num_param(p, "repeat_penalty", 0, 10, &r->sampling.repeat_penalty, err)) != 0)
        return rc;
    if (proto_get(p, "top_k")) {
        if ((rc = proto_param_int(p, "top_k", false, 0, 1 << 20, &n, err)) != 0) return rc;
        r->sampling.top_k = (int)n;
    }
    if (proto_get(p, "seed") && proto_type(proto_get(p, "seed")) != PROTO_NULL) {
        if ((rc = proto_param_int(p, "seed", false, INT64_MIN, INT64_MAX, &n, err)) != 0) return rc;
        r->sampling.seed = (uint64_t)n;
    } else {
        r->sampling.seed = engd_random_seed(e->d);
    }

    const struct proto_val *stop = proto_get(p, "stop");
    if (stop && proto_type(stop) == PROTO_STRING) {
        r->stop[r->n_stop++] = eng_gen_req_strdup(r, proto_str(stop));
    } else if (stop && proto_type(stop) == PROTO_ARRAY) {
        if (proto_len(stop) > 4)
            return ag_err_set(err, AG_EPARAMS, "params.stop: at most 4 strings");
        for (size_t i = 0; i < proto_len(stop); i++) {
            const char *s = proto_str(proto_at(stop, i));
            if (!s || !*s)
                return ag_err_set(err, AG_EPARAMS, "params.stop[%zu]: expected a non-empty string",
                                  i);
            r->stop[r->n_stop++] = eng_gen_req_strdup(r, s);
        }
    } else if (stop && proto_type(stop) != PROTO_NULL) {
        return ag_err_set(err, AG_EPARAMS, "params.stop: expected a string or an array of strings");
    }
    if (r->n_stop == 1 && !*r->stop[0])
        return ag_err_set(err, AG_EPARAMS, "params.stop: expected a non-empty string");

    if ((rc = proto_param_bool(p, "ignore_eos", false, &r->ignore_eos, err)) != 0) return rc;
    if ((rc = proto_param_bool(p, "stream", false, &q->stream, err)) != 0) return rc;
    r->stream = q->stream;
    return proto_param_str(p, "request_id", false, rid, err);
}

static int m_generate(struct engd *e, struct conn *c, struct proto_req *req, struct ag_err *err)
{
    if (!e || !e->srv) return no_engine(err);
    struct rgen *q = ag_calloc(1, sizeof(*q));
    struct eng_gen_req r = {0};
    const char *rid = NULL;
    int rc = parse_generate(e, req->params, &r, q, &rid, err);
    struct greq *g = rc < 0 ? NULL : submit(e, &r, rid, c, &rgen_cb, q, err);
    if (!g) {
        eng_gen_req_release(&r);
        free(q);
        return rc < 0 ? rc : err->code;
    }
    snprintf(q->request_id, sizeof(q->request_id), "%s", g->request_id);
    q->c = c;
    q->req = *req;
    memset(req, 0, sizeof(*req));
    conn_begin_async(c);
    return METHOD_ASYNC;
}

static int m_cancel(struct engd *e, const struct proto_val *p, struct proto_val **result,
                    struct ag_err *err)
{
    const char *rid = proto_get_str(p, "request_id");
    if (!e) return ag_err_set(err, AG_ENOTFOUND, "no engine request '%s' is running", rid);
    ag_list_foreach (it, &e->live) {
        struct greq *g = ag_list_entry(it, struct greq, node);
        if (strcmp(g->request_id, rid) == 0) {
            if (!g->cancel_sent && e->srv) eng_serve_cancel(e->srv, g->eid);
            g->cancel_sent = true;
            *result = proto_obj();
            proto_add_bool(*result, "cancelled", true);
            return 0;
        }
    }
    return ag_err_set(err, AG_ENOTFOUND, "no engine request '%s' is running", rid);
}

static int m_tokenize(struct engd *e, const struct proto_val *p, struct proto_val **result,
                      struct ag_err *err)
{
    const char *text = proto_get_str(p, "text");
    bool special = proto_bool(proto_get(p, "special"), true);
    int rc;
    if (!e || !e->srv) return no_engine(err);
    int32_t *ids = NULL;
    size_t n = 0;
    if ((rc = eng_serve_tokenize(e->srv, text, strlen(text), special, &ids, &n, err)) < 0)
        return rc;
    struct proto_val *arr = proto_arr();
    for (size_t i = 0; i < n; i++) proto_push(arr, proto_new_int(ids[i]));
    free(ids);
    *result = proto_obj();
    proto_add(*result, "tokens", arr);
    proto_add_int(*result, "count", (int64_t)n);
    return 0;
}

static const char *state_name(enum eng_serve_state s)
{
    return s == ENG_SERVE_READY ? "ready" : s == ENG_SERVE_LOADING ? "loading" : "failed";
}

static struct proto_val *status_val(struct engd *e)
{
    struct eng_serve_status st;
    eng_serve_get_status(e->srv, &st);
    struct proto_val *v = proto_obj();
    proto_add_str(v, "state", state_name(st.state));
    if (st.state == ENG_SERVE_FAILED) proto_add_str(v, "error", st.error);
    if (st.state == ENG_SERVE_LOADING) proto_add_num(v, "load_progress", st.load_progress);
    proto_add_str(v, "path", st.model_path);
    proto_add_str(v, "name", st.model_name);
    proto_add_str(v, "arch", st.arch);
    proto_add_str(v, "chat_template", st.chat_family);
    proto_add_int(v, "n_ctx", st.n_ctx);
    proto_add_int(v, "n_vocab", st.n_vocab);
    proto_add_int(v, "threads", st.n_threads);
    proto_add_int(v, "file_bytes", st.model_bytes);
    struct proto_val *kv = proto_obj();
    proto_add_int(kv, "page_size", st.page_size);
    proto_add_int(kv, "pages_total", st.pages_total);
    proto_add_int(kv, "pages_used", st.pages_held);
    proto_add_int(kv, "pages_cached", st.pages_cached);
    proto_add_int(kv, "pages_free", st.pages_free);
    proto_add(v, "kv_cache", kv);
    proto_add_int(v, "batch_tokens", st.batch_tokens);
    proto_add_int(v, "max_running", st.max_running);
    proto_add_int(v, "running", st.running);
    proto_add_int(v, "waiting", st.waiting);
    proto_add_int(v, "requests_done", (int64_t)st.requests_done);
    proto_add_int(v, "tokens_generated", (int64_t)st.tokens_generated);
    proto_add_int(v, "tokens_prompt", (int64_t)st.tokens_prompt);
    proto_add_int(v, "tokens_cached", (int64_t)st.tokens_cached);
    proto_add_num(v, "decode_tokens_per_s", st.decode_tps);
    proto_add_num(v, "prefill_tokens_per_s", st.prefill_tps);
    return v;
}

static int m_generate_row(struct conn *c, struct proto_req *req, struct proto_val **result,
                          struct ag_err *err)
{
    (void)result;
    return m_generate(c->d->eng, c, req, err);
}

static int m_cancel_row(struct conn *c, struct proto_req *req, struct proto_val **result,
                        struct ag_err *err)
{
    return m_cancel(c->d->eng, req->params, result, err);
}

static int m_tokenize_row(struct conn *c, struct proto_req *req, struct proto_val **result,
                          struct ag_err *err)
{
    return m_tokenize(c->d->eng, req->params, result, err);
}

static int m_model_status(struct conn *c, struct proto_req *req, struct proto_val **result,
                          struct ag_err *err)
{
    (void)req;
    struct engd *e = c->d->eng;
    if (!e || !e->srv) return no_engine(err);
    *result = status_val(e);
    return 0;
}

static int m_model_list(struct conn *c, struct proto_req *req, struct proto_val **result,
                        struct ag_err *err)
{
    (void)req, (void)err;
    struct engd *e = c->d->eng;
    *result = proto_obj();
    struct proto_val *arr = proto_arr();
    if (e && e->srv) {
        struct proto_val *mv = status_val(e);
        proto_add_bool(mv, "loaded", true);
        proto_push(arr, mv);
    }
    proto_add(*result, "models", arr);
    return 0;
}

/* engine.generate's members; their values are checked by parse_generate, which knows how they
 * depend on each other (messages or prompt, tools with tool_choice, ...). */
#define ANY(k) "\"" k "\":{}"
#define GENERATE_PARAMS                                                                                                                                                                                                                                                                                                                                                     \
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{" ANY("messages") "," ANY("prompt") "," ANY("tools") "," ANY("tool_choice") "," ANY("response_format") "," ANY("max_tokens") "," ANY("max_completion_tokens") "," ANY("temperature") "," ANY("top_p") "," ANY("top_k") "," ANY("min_p") "," ANY("seed") "," ANY("stop") "," ANY("stream") "," ANY( \
        "frequency_penalty") "," ANY("presence_penalty") "," ANY("repeat_penalty") "," ANY("reque"                                                                                                                                                                                                                                                                          \
                                                                                           "st_"                                                                                                                                                                                                                                                                            \
                                                                                           "id") "," ANY("grammar") "," ANY("model") "," ANY("n") "," ANY("user") "," ANY("stream_options") "," ANY("parallel_tool_calls") "," ANY("ignore_eos") "}}"
#define ID_PARAMS                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"request_id\":{\"type\":\"string\"}},\"required\":["    \
    "\"request_id\"],\"additionalProperties\":false}"

static const struct method rows[] = {
    {"engine.generate", m_generate_row, GENERATE_PARAMS, METHOD_LATER | METHOD_NOTIFIES,
     "generate text or a chat reply (OpenAI chat-completions parameters)"},
    {"engine.cancel", m_cancel_row, ID_PARAMS, METHOD_DRAINING,
     "cancel a running engine.generate by its request_id"},
    {"engine.tokenize", m_tokenize_row,
     "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},\"special\":{\"type\":"
     "\"boolean\"}},\"required\":[\"text\"],\"additionalProperties\":false}",
     0, "token ids of a text with the loaded model"},
    {"model.list", m_model_list, NULL, 0, "list models"},
    {"model.status", m_model_status, NULL, 0,
     "loaded model and engine state: KV pages, batch, tokens/s"},
};
METHOD_GROUP(engd_methods, rows);

void engd_conn_gone(struct conn *c)
{
    struct engd *e = c->d->eng;
    if (!e || !e->srv) return;
    ag_list_foreach (it, &e->live) {
        struct greq *g = ag_list_entry(it, struct greq, node);
        if (g->owner == c && !g->cancel_sent) {
            eng_serve_cancel(e->srv, g->eid);
            g->cancel_sent = true;
        }
    }
}

int engd_in_flight(struct agentd *d)
{
    return d->eng ? d->eng->n_live : 0;
}

int engd_start(struct agentd *d, struct ag_err *err)
{
    struct engd *e = ag_calloc(1, sizeof(*e));
    e->d = d;
    ag_list_init(&e->live);
    if (d->cfg.model_path[0]) {
        struct eng_serve_params p = {
            .model_path = d->cfg.model_path,
            .n_threads = d->cfg.threads,
            .n_ctx = d->cfg.ctx,
            .kv_positions = d->cfg.kv_size,
            .batch_tokens = d->cfg.batch,
            .max_running = d->cfg.parallel,
            .chat_template = d->cfg.chat_template[0] ? d->cfg.chat_template : NULL,
        };
        int rc = eng_serve_start(&p, &e->srv, err);
        if (rc < 0) {
            free(e);
            return rc;
        }
        ag_info("engine: loading %s", d->cfg.model_path);
    }
    /* No work function, so no thread to start: this cannot fail. */
    (void)handoff_start(&e->ho, d->loop, NULL, event_done, e, 0, 0, err);
    d->eng = e;
    return 0;
}

static void on_closed(struct handoff *h)
{
    free(h->ud);
}

void engd_stop(struct agentd *d)
{
    struct engd *e = d->eng;
    if (!e) return;
    eng_serve_stop(e->srv); /* every request gets its error event */
    e->srv = NULL;
    handoff_stop(&e->ho); /* delivers those events */
    d->eng = NULL;
    handoff_close(&e->ho, on_closed);
}
