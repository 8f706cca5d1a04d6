/*
 * methods.c - the JSON-RPC methods served by the daemon.
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
    JOB_MEMORY_ADD,
    JOB_MEMORY_SEARCH,
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
    case JOB_MEMORY_ADD: {
        int64_t id = 0;
        rc = mem_memory_add(st, proto_get_str(p, "agent"), proto_get_str(p, "text"), &id, &j->err);
        if (rc == 0) {
            j->result = proto_obj();
            proto_add_int(j->result, "id", id);
        }
        break;
    }
    case JOB_MEMORY_SEARCH: {
        char **texts = NULL;
        size_t n = 0;
        rc = mem_memory_search(st, proto_get_str(p, "agent"), proto_get_str(p, "query"),
                               (size_t)proto_int(proto_get(p, "limit"), 5), &texts, &n, &j->err);
        if (rc != 0) break;
        j->result = proto_obj();
        struct proto_val *arr = proto_add(j->result, "memories", proto_arr());
        for (size_t i = 0; i < n; i++) proto_push(arr, proto_new_str(texts[i]));
        mem_strings_free(texts, n);
        break;
    }
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

/* ---- parameter checks on the loop thread ---- */

static int check_spec_params(const struct proto_val *p, bool update, struct ag_err *err)
{
    static const char *const create_keys[] = {"spec", "text", "filename", "path", NULL};
    static const char *const update_keys[] = {"spec",           "text", "filename", "path",
                                              "expect_version", "name", NULL};
    const struct proto_val *spec = NULL;
    const char *text = NULL, *path = NULL, *filename = NULL, *name = NULL;
    int64_t v = 0;
    int rc;

    if ((rc = proto_param_known(p, update ? update_keys : create_keys, err)) != 0) return rc;
    if ((rc = proto_param_obj(p, "spec", false, &spec, err)) != 0) return rc;
    if ((rc = proto_param_str(p, "text", false, &text, err)) != 0) return rc;
    if ((rc = proto_param_str(p, "path", false, &path, err)) != 0) return rc;
    if ((rc = proto_param_str(p, "filename", false, &filename, err)) != 0) return rc;
    if (update && (rc = proto_param_int(p, "expect_version", false, 1, INT64_MAX, &v, err)) != 0)
        return rc;
    if (update && (rc = proto_param_str(p, "name", false, &name, err)) != 0) return rc;
    int given = (spec != NULL) + (text != NULL) + (path != NULL);
    if (given != 1)
        return ag_err_set(err, AG_EPARAMS,
                          "params: give exactly one of 'spec' (an object), 'text' (a definition "
                          "file's contents) or 'path' (an absolute file path)");
    if (path && path[0] != '/')
        return ag_err_set(err, AG_EPARAMS, "params.path: '%s' is not an absolute path", path);
    return 0;
}

static int check_name_param(const struct proto_val *p, const char *key, struct ag_err *err)
{
    const char *const keys[] = {key, NULL};
    const char *v = NULL;
    int rc;
    if ((rc = proto_param_known(p, keys, err)) != 0) return rc;
    return proto_param_str(p, key, true, &v, err);
}

/* ---- sync methods ---- */

static int m_initialize(struct conn *c, const struct proto_val *p, struct proto_val **result,
                        struct ag_err *err)
{
    static const char *const keys[] = {"protocol_version", "client", "capabilities", NULL};
    const char *version = NULL;
    int rc;
    size_t n;

    if ((rc = proto_param_known(p, keys, err)) != 0) return rc;
    if ((rc = proto_param_str(p, "protocol_version", false, &version, err)) != 0) return rc;
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
    const struct proto_method_info *mi = proto_methods(&n);
    for (size_t i = 0; i < n; i++)
        if (mi[i].implemented) proto_push(ms, proto_new_str(mi[i].name));
    struct proto_val *es = proto_add(caps, "events", proto_arr());
    const struct proto_event_info *ei = proto_events(&n);
    for (size_t i = 0; i < n; i++) proto_push(es, proto_new_str(ei[i].name));
    proto_add_int(caps, "max_frame_bytes", (int64_t)c->d->cfg.max_frame_bytes);
    proto_add_bool(caps, "batch", false);
    *result = r;
    return 0;
}

/* The built-in tools an agent definition may list, as the model sees them. */
static int m_tools_list(const struct proto_val *p, struct proto_val **result, struct ag_err *err)
{
    static const char *const none[] = {NULL};
    int rc = proto_param_known(p, none, err);
    if (rc != 0) return rc;
    size_t n;
    const struct tool_def *t = tools_all(&n);
    *result = proto_obj();
    struct proto_val *arr = proto_add(*result, "tools", proto_arr());
    for (size_t i = 0; i < n; i++) {
        struct proto_val *o = proto_obj();
        proto_add_str(o, "name", t[i].name);
        proto_add_str(o, "description", t[i].description);
        proto_add_raw(o, "parameters", t[i].parameters);
        proto_push(arr, o);
    }
    return 0;
}

static int m_status(struct conn *c, struct proto_val **result)
{
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

static int unknown_method(const char *name, struct ag_err *err)
{
    const struct proto_method_info *mi = proto_method_find(name);
    size_t n;
    if (mi)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "method '%s' is not implemented by this agentd "
                          "version yet",
                          name);
    mi = proto_methods(&n);
    const char *best = NULL;
    int best_d = 3;
    for (size_t i = 0; i < n; i++) {
        int dist = ag_levenshtein(name, mi[i].name);
        if (mi[i].implemented && dist < best_d) best_d = dist, best = mi[i].name;
    }
    if (best)
        return ag_err_set(err, AG_ENOMETHOD, "unknown method '%s' (did you mean '%s'?)", name,
                          best);
    return ag_err_set(err, AG_ENOMETHOD, "unknown method '%s'", name);
}

int methods_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                     struct ag_err *err)
{
    const char *m = req->method;
    const struct proto_val *p = req->params;
    int rc;

    if (strcmp(m, "ping") == 0) return 0;
    if (strcmp(m, "status") == 0) return m_status(c, result);
    if (strcmp(m, "initialize") == 0) return m_initialize(c, p, result, err);
    /* Internal callers (runs being stopped) may still cancel and kill while draining. */
    if (c->d->draining && !c->sink) return ag_err_set(err, AG_ESHUTDOWN, "agentd is shutting down");

    if (strncmp(m, "sandbox.", 8) == 0 &&
        (rc = sbxd_dispatch(c, req, result, err)) != SBXD_NOT_MINE)
        return rc;
    if ((strncmp(m, "engine.", 7) == 0 || strncmp(m, "model.", 6) == 0) &&
        (rc = engd_dispatch(c, req, result, err)) != ENGD_NOT_MINE)
        return rc;
    if (strcmp(m, "agent.create") == 0 || strcmp(m, "agent.update") == 0) {
        bool update = m[6] == 'u';
        if ((rc = check_spec_params(p, update, err)) != 0) return rc;
        return start_job(c, req, update ? JOB_AGENT_UPDATE : JOB_AGENT_CREATE);
    }
    if (strcmp(m, "agent.list") == 0) {
        static const char *const none[] = {NULL};
        if ((rc = proto_param_known(p, none, err)) != 0) return rc;
        return start_job(c, req, JOB_AGENT_LIST);
    }
    if (strcmp(m, "agent.get") == 0 || strcmp(m, "agent.delete") == 0) {
        if ((rc = check_name_param(p, "name", err)) != 0) return rc;
        return start_job(c, req, m[6] == 'g' ? JOB_AGENT_GET : JOB_AGENT_DELETE);
    }
    if (strcmp(m, "session.create") == 0) {
        static const char *const keys[] = {"agent", "title", NULL};
        const char *s = NULL;
        if ((rc = proto_param_known(p, keys, err)) != 0) return rc;
        if ((rc = proto_param_str(p, "agent", true, &s, err)) != 0) return rc;
        if ((rc = proto_param_str(p, "title", false, &s, err)) != 0) return rc;
        return start_job(c, req, JOB_SESSION_CREATE);
    }
    if (strcmp(m, "session.list") == 0) {
        static const char *const keys[] = {"agent", NULL};
        const char *s = NULL;
        if ((rc = proto_param_known(p, keys, err)) != 0) return rc;
        if ((rc = proto_param_str(p, "agent", false, &s, err)) != 0) return rc;
        return start_job(c, req, JOB_SESSION_LIST);
    }
    if (strcmp(m, "session.get") == 0) {
        static const char *const keys[] = {"session", "messages", NULL};
        const char *s = NULL;
        bool b;
        if ((rc = proto_param_known(p, keys, err)) != 0) return rc;
        if ((rc = proto_param_str(p, "session", true, &s, err)) != 0) return rc;
        if ((rc = proto_param_bool(p, "messages", false, &b, err)) != 0) return rc;
        return start_job(c, req, JOB_SESSION_GET);
    }
    if (strcmp(m, "session.delete") == 0) {
        if ((rc = check_name_param(p, "session", err)) != 0) return rc;
        return start_job(c, req, JOB_SESSION_DELETE);
    }
    if (strcmp(m, "memory.add") == 0 || strcmp(m, "memory.search") == 0) {
        static const char *const add_keys[] = {"agent", "text", NULL};
        static const char *const search_keys[] = {"agent", "query", "limit", NULL};
        bool add = m[7] == 'a';
        const char *s = NULL;
        int64_t n;
        if ((rc = proto_param_known(p, add ? add_keys : search_keys, err)) != 0) return rc;
        if ((rc = proto_param_str(p, "agent", true, &s, err)) != 0) return rc;
        if ((rc = proto_param_str(p, add ? "text" : "query", add, &s, err)) != 0) return rc;
        if (add && !*s) return ag_err_set(err, AG_EPARAMS, "params.text: must not be empty");
        if (!add && (rc = proto_param_int(p, "limit", false, 1, 100, &n, err)) != 0) return rc;
        return start_job(c, req, add ? JOB_MEMORY_ADD : JOB_MEMORY_SEARCH);
    }
    if (strcmp(m, "tools.list") == 0) return m_tools_list(p, result, err);
    if (strncmp(m, "web.", 4) == 0 && (rc = webd_dispatch(c, req, result, err)) != WEBD_NOT_MINE)
        return rc;
    if (strncmp(m, "run.", 4) == 0 &&
        (rc = runner_dispatch(c, req, result, err)) != RUNNER_NOT_MINE)
        return rc;
    return unknown_method(m, err);
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
