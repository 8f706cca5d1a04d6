/*
 * run_log.c - a run's events (runner_int.h): gathered on the loop, stored by the storage thread
 * (one transaction per flush: the new events, the session messages they imply, the run's
 * counters and, at the end, its state), and sent to subscribers only once stored. Text deltas
 * wait for at most FLUSH_MS, or for the write in flight, and are merged into one event.
 */
#include "runner_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_MS 25 /* most a text delta waits before its event is written */

/* ---- events ---- */

void run__event(struct run *r, const char *type, struct proto_val *payload)
{
    if (strcmp(type, "text.delta") != 0) run__take_delta(r);
    if (r->n_evs == r->cap_evs) {
        r->cap_evs = r->cap_evs ? r->cap_evs * 2 : 16;
        r->evs = ag_realloc(r->evs, r->cap_evs * sizeof(*r->evs));
    }
    struct ev *e = &r->evs[r->n_evs];
    e->seq = (int64_t)r->n_evs + 1;
    e->type = ag_strdup(type);
    e->payload = proto_print(payload);
    r->n_evs++;
    proto_val_free(payload);
}

void run__take_delta(struct run *r)
{
    if (!r->delta.len) return;
    struct proto_val *p = proto_obj();
    ag_buf_putc(&r->delta, '\0');
    proto_add_str(p, "text", r->delta.data);
    ag_buf_reset(&r->delta);
    run__event(r, "text.delta", p);
}

void run__add_msg(struct run *r, const char *role, const char *content, const char *tool_calls,
                  const char *call_id, const char *name, int64_t n_tokens)
{
    if (r->n_msgs == r->cap_msgs) {
        r->cap_msgs = r->cap_msgs ? r->cap_msgs * 2 : 8;
        r->msgs = ag_realloc(r->msgs, r->cap_msgs * sizeof(*r->msgs));
    }
    r->msgs[r->n_msgs++] = (struct mem_message){
        .role = ag_strdup(role),
        .content = ag_strdup(content ? content : ""),
        .tool_calls = tool_calls ? ag_strdup(tool_calls) : NULL,
        .tool_call_id = call_id ? ag_strdup(call_id) : NULL,
        .name = name ? ag_strdup(name) : NULL,
        .n_tokens = n_tokens,
    };
}

/* The notification for one event: {run_id, seq, type, ...payload}. */
struct proto_val *run__event_params(const char *run_id, int64_t seq, const char *type,
                                    const char *payload)
{
    struct proto_val *p = proto_parse(payload, strlen(payload), NULL);
    if (proto_type(p) != PROTO_OBJECT) {
        proto_val_free(p);
        p = proto_obj();
    }
    proto_set(p, "run_id", proto_new_str(run_id));
    proto_set(p, "seq", proto_new_int(seq));
    proto_set(p, "type", proto_new_str(type));
    return p;
}

/* Drops subscriptions ended while events were being sent. */
void run__purge_subs(struct run *r)
{
    for (struct sub **pp = &r->subs; *pp;)
        if (!(*pp)->c && !(*pp)->ud) {
            struct sub *s = *pp;
            *pp = s->next;
            free(s);
        } else {
            pp = &(*pp)->next;
        }
}

void run__send_event(struct run *r, const struct ev *e)
{
    if (r->watch && r->watch->event) r->watch->event(r->watch_ud, r, e);
    if (!r->subs) return;
    struct proto_val *p = NULL;
    /* A failed write closes its connection, which unsubscribes it: the list only gets
     * tombstones while we walk it. */
    r->notifying++;
    for (struct sub *s = r->subs; s; s = s->next)
        if (s->c) {
            if (!p) p = run__event_params(r->uid, e->seq, e->type, e->payload);
            conn_notify(s->c, "run.event", p);
        } else if (s->ud) {
            s->fn(s->ud, r, e);
        }
    r->notifying--;
    if (!r->notifying) run__purge_subs(r);
    proto_val_free(p);
}

void run__unsubscribe(struct run *r, struct conn *c)
{
    for (struct sub *s = r->subs; s; s = s->next)
        if (s->c == c) s->c = NULL;
    if (!r->notifying) run__purge_subs(r);
}

void run__watch(struct run *r, void (*fn)(void *, const struct run *, const struct ev *), void *ud)
{
    struct sub *s = ag_calloc(1, sizeof(*s));
    s->fn = fn;
    s->ud = ud;
    s->next = r->subs;
    r->subs = s;
}

void run__subscribe(struct run *r, struct conn *c)
{
    for (struct sub *s = r->subs; s; s = s->next)
        if (s->c == c) return;
    struct sub *s = ag_calloc(1, sizeof(*s));
    s->c = c;
    s->next = r->subs;
    r->subs = s; /* runner_conn_gone drops it before the connection is freed */
}

/* ---- persistence ---- */

struct wjob {
    struct storeq_job base;
    struct run *r;
    struct mem_run_write w;
    struct mem_event *evs;
    struct mem_message *msgs;
    size_t n_msgs;
    int64_t upto;
    bool final;
    char *output, *error;
    int rc;
    struct ag_err err;
};

static void wjob_work(struct storeq_job *base, struct mem_store *st)
{
    struct wjob *j = (struct wjob *)base;
    j->rc = mem_run_write(st, &j->w, &j->err);
}

static void wjob_done(struct storeq_job *base)
{
    struct wjob *j = (struct wjob *)base;
    struct run *r = j->r;
    if (j->rc != 0)
        ag_error("run %s: cannot store events %lld..%lld: %s", r->uid, (long long)r->persisted + 1,
                 (long long)j->upto, j->err.msg);
    for (int64_t s = r->persisted; s < j->upto; s++) run__send_event(r, &r->evs[s]);
    r->persisted = j->upto;
    r->writing = false;
    for (size_t i = 0; i < j->n_msgs; i++) mem_message_release(&j->msgs[i]);
    free(j->msgs);
    free(j->evs);
    free(j);
    if (r->st == RS_ENDING && r->persisted == (int64_t)r->n_evs && !r->n_msgs)
        run__finish(r);
    else
        run__flush(r);
}

void run__flush(struct run *r)
{
    if (r->writing || r->st == RS_DONE) return;
    if (r->st == RS_ENDING) run__take_delta(r);
    if (r->persisted == (int64_t)r->n_evs && !r->n_msgs) return;
    struct wjob *j = ag_calloc(1, sizeof(*j));
    j->base.work = wjob_work;
    j->base.done = wjob_done;
    j->r = r;
    size_t n = r->n_evs - (size_t)r->persisted;
    j->evs = ag_calloc(n ? n : 1, sizeof(*j->evs));
    for (size_t i = 0; i < n; i++) {
        const struct ev *e = &r->evs[r->persisted + (int64_t)i];
        j->evs[i] = (struct mem_event){.seq = e->seq, .type = e->type, .payload = e->payload};
    }
    j->upto = (int64_t)r->n_evs;
    j->msgs = r->msgs;
    j->n_msgs = r->n_msgs;
    r->msgs = NULL;
    r->n_msgs = r->cap_msgs = 0;
    bool final = r->st == RS_ENDING;
    j->w = (struct mem_run_write){
        .run_uid = r->uid,
        .events = j->evs,
        .n_events = n,
        .msgs = j->msgs,
        .n_msgs = j->n_msgs,
        .state = final ? run_end_name(r->end) : NULL,
        .output = final ? r->output : NULL,
        .error = final ? r->end_error : NULL,
        .reason = final ? r->end_reason : NULL,
        .steps = r->steps,
        .tool_calls = r->n_tool_calls,
        .prompt_tokens = r->prompt_tokens,
        .completion_tokens = r->completion_tokens,
    };
    r->writing = true;
    storeq_submit(r->R->d->sq, &j->base);
}

static void on_flush_timer(uv_timer_t *t)
{
    struct run *r = t->data;
    r->flush_armed = false;
    run__take_delta(r);
    run__flush(r);
}

/* Writes soon: now for a step event, within FLUSH_MS for text. */
void run__flush_soon(struct run *r, bool now)
{
    if (now) {
        run__flush(r);
        return;
    }
    if (!r->flush_armed) {
        r->flush_armed = true;
        uv_timer_start(&r->flush_timer, on_flush_timer, FLUSH_MS, 0);
    }
}

/* ---- results ---- */

struct proto_val *run__json_stored(const struct mem_run *m)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "run_id", m->uid);
    proto_add_str(o, "session_id", m->session);
    proto_add_str(o, "agent", m->agent);
    proto_add_str(o, "state", m->state);
    if (m->reason) proto_add_str(o, "reason", m->reason);
    if (m->input) proto_add_str(o, "input", m->input);
    if (m->output) proto_add_str(o, "output", m->output);
    if (m->error) proto_add_str(o, "error", m->error);
    proto_add_int(o, "steps", m->steps);
    proto_add_int(o, "tool_calls", m->tool_calls);
    struct proto_val *u = proto_add(o, "usage", proto_obj());
    proto_add_int(u, "prompt_tokens", m->prompt_tokens);
    proto_add_int(u, "completion_tokens", m->completion_tokens);
    proto_add_int(o, "last_seq", m->last_seq);
    proto_add_int(o, "created_ms", m->created_ms);
    if (m->ended_ms) proto_add_int(o, "ended_ms", m->ended_ms);
    return o;
}

struct proto_val *run__json(const struct run *r)
{
    bool over = r->st == RS_DONE || r->st == RS_ENDING;
    struct mem_run m = {
        .uid = (char *)r->uid,
        .session = (char *)r->session,
        .agent = (char *)r->agent,
        .state = (char *)run_end_name(over ? r->end : RUN_RUNNING),
        .reason = r->end_reason[0] ? (char *)r->end_reason : NULL,
        .output = r->output,
        .error = r->end_error,
        .steps = r->steps,
        .tool_calls = r->n_tool_calls,
        .prompt_tokens = r->prompt_tokens,
        .completion_tokens = r->completion_tokens,
        .last_seq = r->persisted,
        .created_ms = r->created_ms,
    };
    return run__json_stored(&m);
}
