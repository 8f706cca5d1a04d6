/*
 * methods.c - the daemon's one method table, and the methods of the store (agent.*, session.*,
 * memory.*) and of the daemon itself (initialize, ping, status, tools.list).
 *
 * The table. Every subsystem exports its rows (struct method: name, handler, parameter schema,
 * flags, summary) as a group; methods_init() gathers them with the catalogued methods that are
 * not built yet (rows without a handler) into one table sorted by name, and parses each row's
 * JSON Schema once. Dispatch is one binary search, then a declarative check of params against
 * the schema (protocol/jsonschema.c, whose messages name the field: "params.name: required"),
 * then the handler. initialize's capabilities, agentctl's `methods` and the README's method
 * list all come from this table.
 *
 * Cheap methods (initialize, ping, status) answer on the loop thread. Methods that touch the
 * store become a job for the storage thread: their params are checked here first (so a typo
 * costs no round trip), then the job parses and validates agent definitions, runs the SQLite
 * transaction and builds the result off the loop. The connection stays busy until the job is
 * done, which keeps its responses in request order.
 */
#include "agentd.h"

#include "../tools/tools.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- results ---- */

static struct proto_val *agent_json(const struct mem_agent *a, bool with_spec)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "name", a->name);
    proto_add_int(o, "version", a->version);
    proto_add_int(o, "created_ms", a->created_ms);
    proto_add_int(o, "updated_ms", a->updated_ms);
    if (with_spec) proto_add_raw(o, "spec", a->spec_json);
    return o;
}

/* The short form used by agent.list: what a table row needs. */
static struct proto_val *agent_summary_json(const struct mem_agent *a)
{
    struct proto_val *o = agent_json(a, false);
    struct proto_val *spec = proto_parse(a->spec_json, strlen(a->spec_json), NULL);
    const char *desc = proto_get_str(spec, "description");
    const char *model = proto_get_str(proto_get(spec, "model"), "name");
    proto_add_str(o, "description", desc ? desc : "");
    proto_add_str(o, "model", model ? model : "");
    proto_add_int(o, "tools", (int64_t)proto_len(proto_get(spec, "tools")));
    proto_val_free(spec);
    return o;
}

static struct proto_val *session_json(const struct mem_session *s)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "id", s->uid);
    proto_add_str(o, "agent", s->agent);
    if (s->title)
        proto_add_str(o, "title", s->title);
    else
        proto_add_null(o, "title");
    proto_add_int(o, "created_ms", s->created_ms);
    proto_add_int(o, "updated_ms", s->updated_ms);
    return o;
}

static struct proto_val *message_json(const struct mem_message *m)
{
    struct proto_val *o = proto_obj();
    proto_add_int(o, "id", m->id);
    proto_add_str(o, "role", m->role);
    proto_add_str(o, "content", m->content ? m->content : "");
    if (m->tool_calls) proto_add_raw(o, "tool_calls", m->tool_calls);
    if (m->tool_call_id) proto_add_str(o, "tool_call_id", m->tool_call_id);
    if (m->name) proto_add_str(o, "name", m->name);
    proto_add_int(o, "n_tokens", m->n_tokens);
    proto_add_int(o, "created_ms", m->created_ms);
    return o;
}

/* ---- storage jobs ---- */

enum job_kind {
    JOB_AGENT_CREATE,
    JOB_AGENT_UPDATE,
    JOB_AGENT_GET,
    JOB_AGENT_LIST,
    JOB_AGENT_DELETE,
    JOB_SESSION_CREATE,
    JOB_SESSION_LIST,
    JOB_SESSION_GET,
    JOB_SESSION_DELETE,
};

struct method_job {
    struct storeq_job base;   /* must be first */
    enum job_kind kind;       /* what to do */
    struct conn *c;           /* who asked (referenced until done) */
    struct proto_req req;     /* owned request; params read by the storage thread */
    struct proto_val *result; /* built by work(), sent by done() */
    struct ag_err err;        /* failure detail */
    int rc;                   /* 0 or AG_E... */
    int64_t agents_delta;     /* +1 / -1 when an agent was created / deleted */
};

/* Exactly one of params.spec, params.text (+ filename) or params.path gives the definition. */
static int load_spec_param(const struct proto_val *params, struct proto_val **spec,
                           struct ag_err *err)
{
    const struct proto_val *obj = proto_get(params, "spec");
    const char *text = proto_get_str(params, "text");
    const char *path = proto_get_str(params, "path");
    const char *filename = proto_get_str(params, "filename");

    if (obj) return proto_spec_validate(obj, spec, err);
    if (text)
        return proto_spec_load_text(text, strlen(text), filename ? filename : "<text>", spec, err);
    return proto_spec_load_file(path, spec, err);
}

static int do_agent_write(struct method_job *j, struct mem_store *st)
{
    const struct proto_val *p = j->req.params;
    struct proto_val *spec = NULL;
    struct mem_agent a = {0};
    int rc;

    if ((rc = load_spec_param(p, &spec, &j->err)) != 0) return rc;
    const char *name = proto_get_str(spec, "name");
    const char *want = proto_get_str(p, "name");
    if (want && strcmp(want, name) != 0) {
        ag_err_set(&j->err, AG_EPARAMS,
                   "params.name: '%s' does not match the definition's name '%s'", want, name);
        proto_val_free(spec);
        return AG_EPARAMS;
    }
    char *json = proto_print(spec);
    if (j->kind == JOB_AGENT_CREATE) {
        rc = mem_agent_create(st, name, json, &a, &j->err);
        if (rc == 0) j->agents_delta = 1;
    } else {
        int64_t expect = proto_int(proto_get(p, "expect_version"), 0);
        rc = mem_agent_update(st, name, json, expect, &a, &j->err);
    }
    free(json);
    proto_val_free(spec);
    if (rc == 0) j->result = agent_json(&a, true);
    mem_agent_release(&a);
    return rc;
}

static void job_work(struct storeq_job *base, struct mem_store *st)
{
    struct method_job *j = (struct method_job *)base;
    const struct proto_val *p = j->req.params;
    const char *name = proto_get_str(p, "name");
    const char *sid = proto_get_str(p, "session");
    int rc = 0;

    switch (j->kind) {
    case JOB_AGENT_CREATE:
    case JOB_AGENT_UPDATE:
        rc = do_agent_write(j, st);
        break;
    case JOB_AGENT_GET: {
        struct mem_agent a = {0};
        if ((rc = mem_agent_get(st, name, &a, &j->err)) == 0) j->result = agent_json(&a, true);
        mem_agent_release(&a);
        break;
    }
    case JOB_AGENT_LIST: {
        struct mem_agent *list = NULL;
        size_t n = 0;
        if ((rc = mem_agent_list(st, &list, &n, &j->err)) != 0) break;
        j->result = proto_obj();
        struct proto_val *arr = proto_add(j->result, "agents", proto_arr());
        for (size_t i = 0; i < n; i++) proto_push(arr, agent_summary_json(&list[i]));
        mem_agent_list_free(list, n);
        break;
    }
    case JOB_AGENT_DELETE:
        if ((rc = mem_agent_delete(st, name, &j->err)) == 0) {
            j->result = proto_obj();
            proto_add_str(j->result, "deleted", name);
            j->agents_delta = -1;
        }
        break;
    case JOB_SESSION_CREATE: {
        struct mem_session s = {0};
        rc = mem_session_create(st, proto_get_str(p, "agent"), proto_get_str(p, "title"), &s,
                                &j->err);
        if (rc == 0) j->result = session_json(&s);
        mem_session_release(&s);
        break;
    }
    case JOB_SESSION_LIST: {
        struct mem_session *list = NULL;
        size_t n = 0;
        if ((rc = mem_session_list(st, proto_get_str(p, "agent"), &list, &n, &j->err)) != 0) break;
        j->result = proto_obj();
        struct proto_val *arr = proto_add(j->result, "sessions", proto_arr());
        for (size_t i = 0; i < n; i++) proto_push(arr, session_json(&list[i]));
        mem_session_list_free(list, n);
        break;
    }
    case JOB_SESSION_GET: {
        struct mem_session s = {0};
        struct mem_message *msgs = NULL;
        size_t n = 0;
        if ((rc = mem_session_get(st, sid, &s, &j->err)) != 0) break;
        j->result = session_json(&s);
        mem_session_release(&s);
        if (!proto_bool(proto_get(p, "messages"), true)) break;
        if ((rc = mem_message_list(st, sid, 0, 0, &msgs, &n, &j->err)) != 0) {
            proto_val_free(j->result);
            j->result = NULL;
            break;
        }
        struct proto_val *arr = proto_add(j->result, "messages", proto_arr());
        for (size_t i = 0; i < n; i++) proto_push(arr, message_json(&msgs[i]));
        mem_message_list_free(msgs, n);
        break;
    }
    case JOB_SESSION_DELETE:
        if ((rc = mem_session_delete(st, sid, &j->err)) == 0) {
            j->result = proto_obj();
            proto_add_str(j->result, "deleted", sid);
        }
        break;
    }
    j->rc = rc;
}

static void job_done(struct storeq_job *base)
{
    struct method_job *j = (struct method_job *)base;
    struct conn *c = j->c;

    c->d->n_agents += j->agents_delta;
    if (!c->closing) {
        if (j->rc == 0)
            conn_reply(c, j->req.id, j->result);
        else if (j->req.id)
            conn_reply_error(c, j->req.id, &j->err);
    }
    proto_val_free(j->result);
    proto_req_release(&j->req);
    free(j);
    conn_end_async(c);
}

static int start_job(struct conn *c, struct proto_req *req, enum job_kind kind)
{
    struct method_job *j = ag_calloc(1, sizeof(*j));
    j->base.work = job_work;
    j->base.done = job_done;
    j->kind = kind;
    j->c = c;
    j->req = *req; /* take ownership */
    memset(req, 0, sizeof(*req));
    conn_begin_async(c);
    storeq_submit(c->d->sq, &j->base);
    return METHOD_ASYNC;
}

/* ---- the store's methods ---- */

static int m_agent_write(struct conn *c, struct proto_req *req, bool update, struct ag_err *err)
{
    const struct proto_val *p = req->params;
    const char *path = proto_get_str(p, "path");
    int given = (proto_get(p, "spec") != NULL) + (proto_get(p, "text") != NULL) + (path != NULL);
    if (given != 1)
        return ag_err_set(err, AG_EPARAMS,
                          "params: give exactly one of 'spec' (an object), 'text' (a definition "
                          "file's contents) or 'path' (an absolute file path)");
    if (path && path[0] != '/')
        return ag_err_set(err, AG_EPARAMS, "params.path: '%s' is not an absolute path", path);
    return start_job(c, req, update ? JOB_AGENT_UPDATE : JOB_AGENT_CREATE);
}

static int m_agent_create(struct conn *c, struct proto_req *req, struct proto_val **result,
                          struct ag_err *err)
{
    (void)result;
    return m_agent_write(c, req, false, err);
}

static int m_agent_update(struct conn *c, struct proto_req *req, struct proto_val **result,
                          struct ag_err *err)
{
    (void)result;
    return m_agent_write(c, req, true, err);
}

/* Handlers whose whole work is a storage job. */
#define STORE_METHOD(fname, kind)                                                                  \
    static int fname(struct conn *c, struct proto_req *req, struct proto_val **result,             \
                     struct ag_err *err)                                                           \
    {                                                                                              \
        (void)result, (void)err;                                                                   \
        return start_job(c, req, kind);                                                            \
    }
STORE_METHOD(m_agent_list, JOB_AGENT_LIST)
STORE_METHOD(m_agent_get, JOB_AGENT_GET)
STORE_METHOD(m_agent_delete, JOB_AGENT_DELETE)
STORE_METHOD(m_session_create, JOB_SESSION_CREATE)
STORE_METHOD(m_session_list, JOB_SESSION_LIST)
STORE_METHOD(m_session_get, JOB_SESSION_GET)
STORE_METHOD(m_session_delete, JOB_SESSION_DELETE)
#undef STORE_METHOD

/* memory.add and memory.search: adapters over the memory service. */
struct mem_req {
    struct conn *c;
    struct proto_req req;
    bool search;
};

static void mem_answer(void *ud, const struct memd_result *res, const struct ag_err *err)
{
    struct mem_req *q = ud;
    struct conn *c = q->c;
    if (!c->closing) {
        if (err) {
            conn_reply_error(c, q->req.id, err);
        } else {
            struct proto_val *r = proto_obj();
            if (q->search) {
                struct proto_val *arr = proto_add(r, "memories", proto_arr());
                for (size_t i = 0; i < res->n; i++) proto_push(arr, proto_new_str(res->texts[i]));
            } else {
                proto_add_int(r, "id", res->id);
            }
            conn_reply(c, q->req.id, r);
            proto_val_free(r);
        }
    }
    proto_req_release(&q->req);
    free(q);
    conn_end_async(c);
}

static int mem_method(struct conn *c, struct proto_req *req, bool search)
{
    struct mem_req *q = ag_calloc(1, sizeof(*q));
    q->c = c;
    q->req = *req;
    q->search = search;
    memset(req, 0, sizeof(*req));
    conn_begin_async(c);
    const struct proto_val *p = q->req.params;
    if (search)
        memd_search(c->d, proto_get_str(p, "agent"), proto_get_str(p, "query"),
                    (size_t)proto_int(proto_get(p, "limit"), 5), mem_answer, q);
    else
        memd_add(c->d, proto_get_str(p, "agent"), proto_get_str(p, "text"), mem_answer, q);
    return METHOD_ASYNC;
}

static int m_memory_add(struct conn *c, struct proto_req *req, struct proto_val **result,
                        struct ag_err *err)
{
    (void)result, (void)err;
    return mem_method(c, req, false);
}

static int m_memory_search(struct conn *c, struct proto_req *req, struct proto_val **result,
                           struct ag_err *err)
{
    (void)result, (void)err;
    return mem_method(c, req, true);
}

#define SPEC_PARAMS                                                                                \
    "\"spec\":{\"type\":\"object\"},\"text\":{\"type\":\"string\"},"                               \
    "\"filename\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"}"
#define OBJ(props, req)                                                                            \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"
#define STR "{\"type\":\"string\"}"

static const struct method store_rows[] = {
    {"agent.create", m_agent_create, OBJ(SPEC_PARAMS, ""), METHOD_LATER,
     "create an agent from a spec, a definition file's text, or a path"},
    {"agent.list", m_agent_list, NULL, METHOD_LATER, "list agents"},
    {"agent.get", m_agent_get, OBJ("\"name\":" STR, "\"name\""), METHOD_LATER,
     "one agent with its full normalized spec"},
    {"agent.update", m_agent_update,
     OBJ(SPEC_PARAMS ",\"expect_version\":{\"type\":\"integer\",\"minimum\":1},\"name\":" STR, ""),
     METHOD_LATER, "replace an agent's spec; bumps its version"},
    {"agent.delete", m_agent_delete, OBJ("\"name\":" STR, "\"name\""), METHOD_LATER,
     "delete an agent with its sessions and messages"},
    {"session.create", m_session_create, OBJ("\"agent\":" STR ",\"title\":" STR, "\"agent\""),
     METHOD_LATER, "start a conversation with an agent"},
    {"session.list", m_session_list, OBJ("\"agent\":" STR, ""), METHOD_LATER,
     "list sessions, optionally of one agent"},
    {"session.get", m_session_get,
     OBJ("\"session\":" STR ",\"messages\":{\"type\":\"boolean\"}", "\"session\""), METHOD_LATER,
     "one session with its messages"},
    {"session.delete", m_session_delete, OBJ("\"session\":" STR, "\"session\""), METHOD_LATER,
     "delete a session and its messages"},
    {"memory.add", m_memory_add,
     OBJ("\"agent\":" STR ",\"text\":{\"type\":\"string\",\"minLength\":1}", "\"agent\",\"text\""),
     METHOD_LATER, "store a memory"},
    {"memory.search", m_memory_search,
     OBJ("\"agent\":" STR ",\"query\":" STR
         ",\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100}",
         "\"agent\""),
     METHOD_LATER, "search an agent's memories"},
};
METHOD_GROUP(store_methods, store_rows);

/* ---- the daemon's own methods ---- */

static int m_ping(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err)
{
    (void)c, (void)req, (void)result, (void)err;
    return 0;
}

/* One catalogue entry: {name, summary, served}. */
static struct proto_val *catalog_json(void)
{
    size_t n;
    const struct method *const *all = methods_all(&n);
    struct proto_val *arr = proto_arr();
    for (size_t i = 0; i < n; i++) {
        struct proto_val *o = proto_obj();
        proto_add_str(o, "name", all[i]->name);
        proto_add_str(o, "summary", all[i]->summary);
        proto_add_bool(o, "served", all[i]->fn != NULL);
        proto_push(arr, o);
    }
    return arr;
}

static int m_initialize(struct conn *c, struct proto_req *req, struct proto_val **result,
                        struct ag_err *err)
{
    (void)err;
    const struct proto_val *p = req->params;
    const char *version = proto_get_str(p, "protocol_version");
    const char *client = proto_get_str(proto_get(p, "client"), "name");
    ag_debug("client %llu: initialize from %s (protocol %s)", (unsigned long long)c->id,
             client ? client : "unnamed client", version ? version : "unspecified");
    c->initialized = true;

    struct proto_val *r = proto_obj();
    proto_add_str(r, "protocol_version", PROTO_VERSION);
    struct proto_val *server = proto_add(r, "server", proto_obj());
    proto_add_str(server, "name", "agentd");
    proto_add_str(server, "version", AGENTD_VERSION);
    struct proto_val *caps = proto_add(r, "capabilities", proto_obj());
    struct proto_val *ms = proto_add(caps, "methods", proto_arr());
    size_t n;
    const struct method *const *all = methods_all(&n);
    for (size_t i = 0; i < n; i++)
        if (all[i]->fn) proto_push(ms, proto_new_str(all[i]->name));
    proto_add(caps, "catalog", catalog_json());
    struct proto_val *es = proto_add(caps, "events", proto_arr());
    const struct proto_event_info *ei = proto_events(&n);
    for (size_t i = 0; i < n; i++) proto_push(es, proto_new_str(ei[i].name));
    proto_add_int(caps, "max_frame_bytes", (int64_t)c->d->cfg.max_frame_bytes);
    proto_add_bool(caps, "batch", false);
    *result = r;
    return 0;
}

/* The built-in tools an agent definition may list, as the model sees them. */
static int m_tools_list(struct conn *c, struct proto_req *req, struct proto_val **result,
                        struct ag_err *err)
{
    (void)c, (void)req, (void)err;
    size_t n;
    const struct tool_def *const *t = tools_all(&n);
    *result = proto_obj();
    struct proto_val *arr = proto_add(*result, "tools", proto_arr());
    for (size_t i = 0; i < n; i++) {
        struct proto_val *o = proto_obj();
        proto_add_str(o, "name", t[i]->name);
        proto_add_str(o, "description", t[i]->description);
        proto_add_raw(o, "parameters", t[i]->parameters);
        proto_push(arr, o);
    }
    return 0;
}

static int m_status(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    (void)req, (void)err;
    struct agentd *d = c->d;
    struct proto_val *r = proto_obj();
    proto_add_str(r, "version", AGENTD_VERSION);
    proto_add_int(r, "pid", getpid());
    proto_add_num(r, "uptime_s", (double)(ag_now_ms() - d->started_ms) / 1000.0);
    proto_add_int(r, "connections", (int64_t)d->n_conns);
    proto_add_int(r, "agents", d->n_agents);
    proto_add_str(r, "data_dir", d->cfg.data_dir);
    proto_add_str(r, "socket", d->cfg.socket_path);
    proto_add_str(r, "db_path", d->db_path);
    proto_add_int(r, "schema_version", d->schema_version);
    proto_add_int(r, "requests", (int64_t)d->n_requests);
    proto_add_int(r, "storage_queue", (int64_t)storeq_pending(d->sq));
    *result = r;
    return 0;
}

static const struct method core_rows[] = {
    {"initialize", m_initialize,
     OBJ("\"protocol_version\":" STR ",\"client\":{},\"capabilities\":{}", ""), METHOD_DRAINING,
     "handshake: protocol version and capabilities"},
    {"ping", m_ping, "{}", METHOD_DRAINING, "liveness check; answers {}"},
    {"status", m_status, "{}", METHOD_DRAINING,
     "daemon version, uptime, connections, agents, data dir"},
    {"tools.list", m_tools_list, NULL, 0,
     "the built-in tools: names, descriptions, argument schemas"},
    /* Catalogued, not built yet. */
    {"agent.export", NULL, NULL, 0, "an agent's definition as JSON"},
    {"agent.import", NULL, NULL, 0, "create or update an agent from an export"},
    {"run.input", NULL, NULL, 0, "answer a run waiting for input or approval"},
    {"task.submit", NULL, NULL, 0, "queue a background task"},
    {"task.list", NULL, NULL, 0, "list background tasks"},
    {"task.get", NULL, NULL, 0, "one task"},
    {"task.cancel", NULL, NULL, 0, "cancel a task"},
    {"task.wait", NULL, NULL, 0, "wait for a task to finish"},
    {"tools.call", NULL, NULL, 0, "call a tool directly"},
    {"agent.send", NULL, NULL, 0, "send a message to another agent"},
};
METHOD_GROUP(core_methods, core_rows);

/* ---- the table ---- */

struct row {
    const struct method *m;
    struct proto_val *schema; /* parsed params; NULL: none accepted */
};

static struct row *table;
static const struct method **sorted;
static size_t n_table;

static int cmp_row(const void *a, const void *b)
{
    return strcmp(((const struct row *)a)->m->name, ((const struct row *)b)->m->name);
}

int methods_init(struct ag_err *err)
{
    static const struct method_group *const groups[] = {
        &core_methods, &store_methods, &sbxd_methods, &engd_methods, &webd_methods, &run_methods,
    };
    if (table) return 0;
    size_t n = 0;
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) n += groups[g]->n;
    table = ag_calloc(n, sizeof(*table));
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
        for (size_t i = 0; i < groups[g]->n; i++) {
            const struct method *m = &groups[g]->rows[i];
            table[n_table].m = m;
            if (m->params) {
                int rc = proto_schema_parse(m->params, &table[n_table].schema, err);
                if (rc != 0) {
                    ag_err_prefix(err, "method %s: ", m->name);
                    n_table++;
                    methods_release();
                    return rc;
                }
            }
            n_table++;
        }
    qsort(table, n_table, sizeof(*table), cmp_row);
    sorted = ag_calloc(n_table, sizeof(*sorted));
    for (size_t i = 0; i < n_table; i++) {
        sorted[i] = table[i].m;
        if (i && strcmp(table[i - 1].m->name, table[i].m->name) == 0) {
            int rc = ag_err_set(err, AG_EINVAL, "method %s: listed twice", table[i].m->name);
            methods_release();
            return rc;
        }
    }
    return 0;
}

void methods_release(void)
{
    for (size_t i = 0; i < n_table; i++) proto_val_free(table[i].schema);
    free(table);
    free(sorted);
    table = NULL;
    sorted = NULL;
    n_table = 0;
}

static const struct row *find_row(const char *name)
{
    size_t lo = 0, hi = n_table;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, table[mid].m->name);
        if (c == 0) return &table[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct method *methods_find(const char *name)
{
    const struct row *r = find_row(name);
    return r ? r->m : NULL;
}

const struct method *const *methods_all(size_t *n)
{
    *n = n_table;
    return sorted;
}

static int unknown_method(const char *name, struct ag_err *err)
{
    const char *best = NULL;
    int best_d = 3;
    for (size_t i = 0; i < n_table; i++) {
        int dist = ag_levenshtein(name, table[i].m->name);
        if (table[i].m->fn && dist < best_d) best_d = dist, best = table[i].m->name;
    }
    if (best)
        return ag_err_set(err, AG_ENOMETHOD, "unknown method '%s' (did you mean '%s'?)", name,
                          best);
    return ag_err_set(err, AG_ENOMETHOD, "unknown method '%s'", name);
}

int methods_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                     struct ag_err *err)
{
    const struct row *row = find_row(req->method);
    if (!row) return unknown_method(req->method, err);
    const struct method *m = row->m;
    if (!m->fn)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "method '%s' is not implemented by this agentd version yet", m->name);
    if (c->d->draining && !(m->flags & METHOD_DRAINING))
        return ag_err_set(err, AG_ESHUTDOWN, "agentd is shutting down");
    static const char empty_schema[] = "{\"type\":\"object\",\"additionalProperties\":false}";
    int rc = row->schema ? proto_schema_check_params(row->schema, req->params, err)
                         : proto_schema_check_params_text(empty_schema, req->params, err);
    if (rc != 0) return rc;
    return m->fn(c, req, result, err);
}

/* ---- start-up ---- */

static int is_agent_file(const char *name)
{
    return ag_str_has_suffix(name, ".agent.yaml") || ag_str_has_suffix(name, ".agent.yml") ||
           ag_str_has_suffix(name, ".agent.json");
}

static int load_one(struct mem_store *st, const char *path, struct ag_err *err)
{
    struct proto_val *spec = NULL;
    struct mem_agent a = {0};
    int rc;

    if ((rc = proto_spec_load_file(path, &spec, err)) != 0) return rc;
    const char *name = proto_get_str(spec, "name");
    char *json = proto_print(spec);
    rc = mem_agent_get(st, name, &a, NULL);
    if (rc == AG_ENOTFOUND) {
        rc = mem_agent_create(st, name, json, NULL, err);
        if (rc == 0) ag_info("loaded agent '%s' from %s", name, path);
    } else if (rc == 0 && strcmp(a.spec_json, json) != 0) {
        rc = mem_agent_update(st, name, json, 0, NULL, err);
        if (rc == 0) ag_info("updated agent '%s' from %s", name, path);
    } else if (rc != 0) {
        ag_err_set(err, rc, "%s: cannot read the store", path);
    }
    mem_agent_release(&a);
    free(json);
    proto_val_free(spec);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int methods_load_agents_dir(struct mem_store *st, const char *dir, int *n_loaded,
                            struct ag_err *err)
{
    DIR *dh = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;

    *n_loaded = 0;
    if (!dh) return ag_err_set(err, AG_EIO, "cannot open agents dir %s", dir);
    while ((de = readdir(dh)) != NULL) {
        if (!is_agent_file(de->d_name)) continue;
        names = ag_realloc(names, (n + 1) * sizeof(*names));
        names[n++] = ag_asprintf("%s/%s", dir, de->d_name);
    }
    closedir(dh);
    qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        struct ag_err e = {0};
        /* A broken file is reported and skipped: the other agents still load. */
        if (load_one(st, names[i], &e) != 0)
            ag_error("skipping agent file: %s", e.msg);
        else
            (*n_loaded)++;
        free(names[i]);
    }
    free(names);
    return 0;
}
