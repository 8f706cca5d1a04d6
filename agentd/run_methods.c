/*
 * run_methods.c - the run.* methods: thin adapters between JSON-RPC and the runner's C API
 * (runner_create, runner_cancel) and the stored runs.
 *
 * Foreground and background. run.create answers when the run ends (with stream, its events
 * arrive as run.event notifications first); a client that disconnects cancels a foreground run.
 * With background the answer is immediate and the run goes on whoever listens; anyone can
 * run.subscribe to it, from any seq.
 */
#include "runner_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- run.create ---- */

static void create_started(void *ud, struct run *r, const struct ag_err *err)
{
    (void)ud;
    struct conn *c = r->owner;
    if (err) {
        r->owner = NULL;
        if (!c->closing) conn_reply_error(c, r->req.id, err);
        proto_req_release(&r->req);
        conn_end_async(c);
        return;
    }
    if (r->stream) run__subscribe(r, c);
    if (r->background) {
        r->owner = NULL;
        struct proto_val *res = run__json(r);
        if (!c->closing) conn_reply(c, r->req.id, res);
        proto_val_free(res);
        proto_req_release(&r->req);
        conn_end_async(c);
    }
}

static void create_ended(void *ud, struct run *r)
{
    (void)ud;
    struct conn *c = r->owner;
    if (!c) return;
    r->owner = NULL;
    if (!c->closing) {
        struct proto_val *res = run__json(r);
        conn_reply(c, r->req.id, res);
        proto_val_free(res);
    }
    proto_req_release(&r->req);
    conn_end_async(c);
}

static const struct run_watch create_watch = {create_started, NULL, create_ended};

static int m_create(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    (void)result;
    const struct proto_val *p = req->params;
    struct run_opts o = {
        .agent = proto_get_str(p, "agent"),
        .session = proto_get_str(p, "session"),
        .input = proto_get_str(p, "input"),
        .tool_choice = proto_get_str(p, "tool_choice"),
        .max_steps = (int)proto_int(proto_get(p, "max_steps"), 0),
        .max_tool_calls =
            proto_get(p, "max_tool_calls") ? (int)proto_int(proto_get(p, "max_tool_calls"), 0) : -1,
        .no_grammar = !proto_bool(proto_get(p, "grammar"), true),
    };
    struct run *r = runner_create(c->d->runner, &o, &create_watch, NULL, err);
    if (!r) return err->code;
    r->owner = c;
    r->req = *req;
    memset(req, 0, sizeof(*req));
    r->stream = proto_bool(proto_get(r->req.params, "stream"), false);
    r->background = proto_bool(proto_get(r->req.params, "background"), false);
    conn_begin_async(c);
    return METHOD_ASYNC;
}

/* ---- reading runs ---- */

enum qkind { Q_GET, Q_LIST, Q_EVENTS };

struct qjob {
    struct storeq_job base;
    enum qkind kind;
    struct conn *c;
    struct proto_req req;
    struct mem_run run;
    struct mem_run *list;
    size_t n_list;
    struct mem_event *evs;
    size_t n_evs;
    int rc;
    struct ag_err err;
};

static void qjob_work(struct storeq_job *base, struct mem_store *st)
{
    struct qjob *j = (struct qjob *)base;
    const struct proto_val *p = j->req.params;
    const char *id = proto_get_str(p, "run_id");
    switch (j->kind) {
    case Q_GET:
        j->rc = mem_run_get(st, id, &j->run, &j->err);
        break;
    case Q_LIST:
        j->rc = mem_run_list(st, proto_get_str(p, "agent"), proto_get_str(p, "session"),
                             (size_t)proto_int(proto_get(p, "limit"), 0), &j->list, &j->n_list,
                             &j->err);
        break;
    case Q_EVENTS:
        j->rc = mem_run_get(st, id, &j->run, &j->err);
        if (j->rc == 0)
            j->rc = mem_run_events(st, id, proto_int(proto_get(p, "after_seq"), 0), 0, &j->evs,
                                   &j->n_evs, &j->err);
        break;
    }
}

static void qjob_done(struct storeq_job *base)
{
    struct qjob *j = (struct qjob *)base;
    struct conn *c = j->c;
    struct proto_val *res = NULL;
    if (j->rc == 0 && !c->closing) {
        if (j->kind == Q_GET) {
            res = run__json_stored(&j->run);
        } else if (j->kind == Q_LIST) {
            res = proto_obj();
            struct proto_val *arr = proto_add(res, "runs", proto_arr());
            for (size_t i = 0; i < j->n_list; i++) proto_push(arr, run__json_stored(&j->list[i]));
        } else {
            for (size_t i = 0; i < j->n_evs; i++) {
                struct proto_val *p =
                    run__event_params(j->run.uid, j->evs[i].seq, j->evs[i].type, j->evs[i].payload);
                conn_notify(c, "run.event", p);
                proto_val_free(p);
            }
            res = proto_obj();
            proto_add_str(res, "run_id", j->run.uid);
            proto_add_str(res, "state", j->run.state);
            proto_add_int(res, "last_seq", j->run.last_seq);
            proto_add_int(res, "sent", (int64_t)j->n_evs);
            proto_add_bool(res, "live", false);
        }
    }
    if (!c->closing) {
        if (j->rc == 0)
            conn_reply(c, j->req.id, res);
        else
            conn_reply_error(c, j->req.id, &j->err);
    }
    proto_val_free(res);
    mem_run_release(&j->run);
    mem_run_list_free(j->list, j->n_list);
    mem_event_list_free(j->evs, j->n_evs);
    proto_req_release(&j->req);
    free(j);
    conn_end_async(c);
}

static int start_query(struct conn *c, struct proto_req *req, enum qkind kind)
{
    struct qjob *j = ag_calloc(1, sizeof(*j));
    j->base.work = qjob_work;
    j->base.done = qjob_done;
    j->kind = kind;
    j->c = c;
    j->req = *req;
    memset(req, 0, sizeof(*req));
    conn_begin_async(c);
    storeq_submit(c->d->sq, &j->base);
    return METHOD_ASYNC;
}

static int m_subscribe(struct conn *c, struct proto_req *req, struct proto_val **result,
                       struct ag_err *err)
{
    (void)err;
    const char *id = proto_get_str(req->params, "run_id");
    int64_t after = proto_int(proto_get(req->params, "after_seq"), 0);
    struct run *r = run__find_live(c->d->runner, id);
    if (!r || r->st == RS_DONE) return start_query(c, req, Q_EVENTS);
    /* Stored events now, the rest as they are stored. */
    int64_t sent = 0;
    for (int64_t s = after; s < r->persisted; s++, sent++) {
        struct proto_val *p =
            run__event_params(r->uid, r->evs[s].seq, r->evs[s].type, r->evs[s].payload);
        conn_notify(c, "run.event", p);
        proto_val_free(p);
    }
    run__subscribe(r, c);
    *result = proto_obj();
    proto_add_str(*result, "run_id", r->uid);
    proto_add_str(*result, "state", "running");
    proto_add_int(*result, "last_seq", r->persisted);
    proto_add_int(*result, "sent", sent);
    proto_add_bool(*result, "live", true);
    return 0;
}

static int m_get(struct conn *c, struct proto_req *req, struct proto_val **result,
                 struct ag_err *err)
{
    (void)err;
    struct run *r = run__find_live(c->d->runner, proto_get_str(req->params, "run_id"));
    if (r && r->st != RS_DONE && r->uid[0]) {
        *result = run__json(r);
        return 0;
    }
    return start_query(c, req, Q_GET);
}

static int m_cancel(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    const char *id = proto_get_str(req->params, "run_id");
    int rc = runner_cancel(c->d->runner, id, err);
    if (rc != 0) return rc;
    *result = proto_obj();
    proto_add_str(*result, "run_id", id);
    proto_add_bool(*result, "cancelled", true);
    return 0;
}

static int m_list(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err)
{
    (void)result, (void)err;
    return start_query(c, req, Q_LIST);
}

#define OBJ(props, req)                                                                            \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"
#define STR  "{\"type\":\"string\"}"
#define BOOL "{\"type\":\"boolean\"}"

static const struct method rows[] = {
    {"run.create", m_create,
     OBJ("\"agent\":" STR ",\"session\":" STR ",\"input\":" STR ",\"stream\":" BOOL
         ",\"background\":" BOOL ",\"tool_choice\":" STR
         ",\"max_steps\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"
         "\"max_tool_calls\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":10000},"
         "\"grammar\":" BOOL,
         "\"input\""),
     METHOD_LATER | METHOD_NOTIFIES, "start an agent run on a session"},
    {"run.get", m_get, OBJ("\"run_id\":" STR, "\"run_id\""), METHOD_LATER, "one run's state"},
    {"run.list", m_list,
     OBJ("\"agent\":" STR ",\"session\":" STR
         ",\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000}",
         ""),
     METHOD_LATER, "list runs, of an agent or a session"},
    {"run.cancel", m_cancel, OBJ("\"run_id\":" STR, "\"run_id\""), METHOD_DRAINING, "cancel a run"},
    {"run.subscribe", m_subscribe,
     OBJ("\"run_id\":" STR ",\"after_seq\":{\"type\":\"integer\",\"minimum\":0}", "\"run_id\""),
     METHOD_LATER | METHOD_NOTIFIES, "stream a run's events after a sequence number"},
};
METHOD_GROUP(run_methods, rows);
