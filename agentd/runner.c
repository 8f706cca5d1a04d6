/*
 * runner.c - agent runs: the run.* methods and the loop that makes an agent act (DESIGN.md §3).
 *
 * A run is one user input to an agent's session and everything the agent does in reply. It is a
 * state machine on the loop thread: generate (engine.generate, streaming) -> for each tool call:
 * check the arguments, run the tool -> generate again ... until the model answers without a call
 * or a budget ends the run. The runner does no blocking work itself: it calls the daemon's own
 * methods through an internal connection (conn_call), so a tool is engine.generate,
 * sandbox.exec, memory.add ... exactly as a client would call them, and their replies come back
 * as callbacks on the loop.
 *
 * Events. Everything a run does is an event with a per-run seq, kept in memory while the run is
 * live and written to the store by the storage thread: one transaction per flush carries the
 * new events with the session messages they imply and the run's counters. An event is sent to
 * subscribers only after its transaction committed, so a client that resubscribes with after_seq
 * gets exactly what it missed, and kill -9 loses nothing that was sent. Text deltas are merged
 * while a flush is in flight or for up to FLUSH_MS, so streaming does not wait on an fsync per
 * token.
 *
 * Sessions. One run at a time per session: run.create on a session with a live run fails with
 * AG_EBUSY naming the run (no queue; the client decides to wait or cancel). The session's tools
 * share one sandbox session named after the agent session, so python variables and workspace
 * files persist across the runs of a conversation.
 *
 * Foreground and background. run.create answers when the run ends (with stream, its events
 * arrive as run.event notifications first); a client that disconnects cancels a foreground run.
 * With background the answer is immediate and the run goes on whoever listens; anyone can
 * run.subscribe to it, from any seq.
 */
#include "runner_int.h"

#include "../tools/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNNER_MAX_LIVE 1024 /* runs at once */

/* ---- helpers ---- */

static struct runner *runner_of(struct agentd *d)
{
    return d->runner;
}

static struct run *find_live(struct runner *R, const char *uid)
{
    for (struct run *r = R->live; r; r = r->next)
        if (strcmp(r->uid, uid) == 0) return r;
    return NULL;
}

static struct run *find_session(struct runner *R, const char *session)
{
    for (struct run *r = R->live; r; r = r->next)
        if (r->session[0] && strcmp(r->session, session) == 0) return r;
    return NULL;
}

/* ---- the end ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    if (--r->handles_open > 0) return;
    proto_val_free(r->spec);
    proto_val_free(r->messages);
    proto_val_free(r->tools);
    proto_val_free(r->calls);
    for (size_t i = 0; i < r->n_evs; i++) {
        free(r->evs[i].type);
        free(r->evs[i].payload);
    }
    free(r->evs);
    for (size_t i = 0; i < r->n_msgs; i++) mem_message_release(&r->msgs[i]);
    free(r->msgs);
    ag_buf_release(&r->delta);
    free(r->end_error);
    free(r->output);
    free(r);
}

/* Every event is stored and sent: answer the foreground caller, drop subscribers, free. */
void run__finish(struct run *r)
{
    struct runner *R = r->R;
    r->st = RS_DONE;
    if (r->owner) {
        struct conn *c = r->owner;
        r->owner = NULL;
        if (!c->closing) {
            struct proto_val *res = run__json(r);
            conn_reply(c, r->req.id, res);
            proto_val_free(res);
        }
        proto_req_release(&r->req);
        conn_end_async(c);
    }
    for (struct sub *s = r->subs; s; s = s->next) s->c = NULL;
    run__purge_subs(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        R->live = r->next;
    if (r->next) r->next->prev = r->prev;
    R->n_live--;
    ag_info("run %s: %s (%s) after %d steps, %d tool calls, %lld ms", r->uid, r->end_state,
            r->end_reason, r->steps, r->n_tool_calls, (long long)(ag_now_ms() - r->started_ms));
    uv_timer_stop(&r->flush_timer);
    uv_timer_stop(&r->wall_timer);
    uv_close((uv_handle_t *)&r->flush_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->wall_timer, on_handle_closed);
}

static struct proto_val *usage_payload(const struct run *r)
{
    struct proto_val *p = proto_obj();
    proto_add_int(p, "steps", r->steps);
    proto_add_int(p, "tool_calls", r->n_tool_calls);
    struct proto_val *u = proto_add(p, "usage", proto_obj());
    proto_add_int(u, "prompt_tokens", r->prompt_tokens);
    proto_add_int(u, "completion_tokens", r->completion_tokens);
    double total = (double)(ag_now_ms() - r->started_ms);
    struct proto_val *t = proto_add(p, "timings", proto_obj());
    proto_add_num(t, "total_ms", total);
    proto_add_num(t, "prefill_ms", r->ttft_ms);
    proto_add_num(t, "decode_ms", r->gen_ms - r->ttft_ms);
    proto_add_num(t, "tool_ms", r->tool_ms);
    if (r->dropped) proto_add_int(p, "history_dropped", r->dropped);
    double over = total - r->gen_ms - r->tool_ms;
    proto_add_num(t, "overhead_ms", over > 0 ? over : 0);
    return p;
}

void run__end(struct run *r, const char *state, const char *reason, const char *error)
{
    if (r->st == RS_ENDING || r->st == RS_DONE) return;
    snprintf(r->end_state, sizeof(r->end_state), "%s", state);
    snprintf(r->end_reason, sizeof(r->end_reason), "%s", reason);
    if (error) r->end_error = ag_strdup(error);
    struct proto_val *p = usage_payload(r);
    proto_add_str(p, "state", state);
    proto_add_str(p, "reason", reason);
    if (r->output) proto_add_str(p, "output", r->output);
    if (error) proto_add_str(p, "error", error);
    const char *type = strcmp(state, "completed") == 0   ? "run.completed"
                       : strcmp(state, "cancelled") == 0 ? "run.cancelled"
                                                         : "run.failed";
    run__event(r, type, p);
    r->st = RS_ENDING;
    run__flush(r);
}

/* A call in flight was stopped for a cancel or the wall clock: end the run the right way. */
bool run__stopped(struct run *r)
{
    if (r->shutdown) {
        run__end(r, "failed", "shutdown", "agentd is shutting down");
        return true;
    }
    if (r->wall_hit) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run used its wall-clock budget (limits.max_wall_s = %lld)",
                 (long long)r->max_wall_s);
        run__end(r, "failed", "max_wall_s", msg);
        return true;
    }
    if (r->cancel) {
        run__end(r, "cancelled", "cancelled", NULL);
        return true;
    }
    return false;
}

/* Stops what runs now (generation or a sandboxed tool); its reply then ends the run. */
static void sink_ignore_reply(struct conn *c, const struct proto_val *result,
                              const struct ag_err *err, const struct proto_val *data)
{
    (void)c, (void)result, (void)err, (void)data;
}

static void sink_ignore_notify(struct conn *c, const char *method, const struct proto_val *p)
{
    (void)c, (void)method, (void)p;
}

const struct conn_sink run__ignore_sink = {sink_ignore_reply, sink_ignore_notify};

static void interrupt_work(struct run *r)
{
    struct conn tmp;
    conn_init_internal(&tmp, r->R->d, &run__ignore_sink, NULL);
    if (r->st == RS_GENERATING) {
        struct proto_val *p = proto_obj();
        proto_add_str(p, "request_id", r->step_id);
        conn_call(&tmp, "engine.cancel", p);
    } else if (r->st == RS_TOOL && r->tool && r->tool->kind == TOOL_FETCH_URL) {
        struct proto_val *p = proto_obj();
        proto_add_str(p, "request_id", r->step_id);
        conn_call(&tmp, "web.cancel", p);
    } else if (r->st == RS_TOOL && r->tool && r->tool->kind <= TOOL_LIST_FILES) {
        /* The sandbox session dies with what runs in it; the next call starts a fresh one. */
        struct proto_val *p = proto_obj();
        proto_add_str(p, "session", r->session);
        conn_call(&tmp, "sandbox.kill", p);
    }
}

static void on_wall_timer(uv_timer_t *t)
{
    struct run *r = t->data;
    if (r->st != RS_GENERATING && r->st != RS_TOOL) return;
    r->wall_hit = true;
    interrupt_work(r);
}

/* ---- generation ---- */

static void gen_reply(struct run *r, const struct proto_val *res, const struct ag_err *err);

static void sink_reply(struct conn *c, const struct proto_val *result, const struct ag_err *err,
                       const struct proto_val *data)
{
    (void)data;
    struct run *r = c->sink_ud;
    if (r->st == RS_GENERATING)
        gen_reply(r, result, err);
    else if (r->st == RS_TOOL)
        run__tool_reply(r, result, err);
}

static void sink_notify(struct conn *c, const char *method, const struct proto_val *params)
{
    struct run *r = c->sink_ud;
    if (strcmp(method, "engine.delta") != 0 || r->st != RS_GENERATING) return;
    const char *t = proto_get_str(params, "text");
    if (!t || !*t) return;
    ag_buf_puts(&r->delta, t);
    run__flush_soon(r, false);
}

static const struct conn_sink run_sink = {sink_reply, sink_notify};

static void add_sampling(struct run *r, struct proto_val *p)
{
    const struct proto_val *m = proto_get(r->spec, "model");
    static const char *const keys[] = {
        "temperature",       "top_p",           "top_k", "min_p", "seed", "repeat_penalty",
        "frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const struct proto_val *v = proto_get(m, keys[i]);
        if (v && proto_type(v) == PROTO_NUMBER) proto_add(p, keys[i], proto_val_dup(v));
    }
}

void run__step(struct run *r)
{
    if (run__stopped(r)) return;
    if (r->steps >= r->max_steps) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run took %d steps without an answer (limits.max_steps)",
                 r->steps);
        run__end(r, "failed", "max_steps", msg);
        return;
    }
    int64_t left = r->max_tokens - r->completion_tokens;
    if (left <= 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run generated %lld tokens (limits.max_tokens)",
                 (long long)r->completion_tokens);
        run__end(r, "failed", "max_tokens", msg);
        return;
    }
    r->steps++;
    int64_t per = proto_int(run__spec_get(r, "model", "max_tokens"), 1024);
    struct proto_val *p = proto_obj();
    proto_add(p, "messages", proto_val_dup(r->messages));
    if (proto_len(r->tools)) {
        proto_add(p, "tools", proto_val_dup(r->tools));
        if (r->tool_choice[0] && r->n_tool_calls == 0) {
            if (strcmp(r->tool_choice, "required") == 0 || strcmp(r->tool_choice, "none") == 0) {
                proto_add_str(p, "tool_choice", r->tool_choice);
            } else if (strcmp(r->tool_choice, "auto") != 0) {
                struct proto_val *tc = proto_add(p, "tool_choice", proto_obj());
                proto_add_str(tc, "type", "function");
                proto_add_str(proto_add(tc, "function", proto_obj()), "name", r->tool_choice);
            }
        }
    }
    proto_add_int(p, "max_tokens", per < left ? per : left);
    add_sampling(r, p);
    proto_add_bool(p, "stream", true);
    if (r->no_grammar) proto_add_bool(p, "grammar", false);
    /* Unique per attempt: a retried step's failed request may not be gone from the engine's
     * books yet when the retry starts. */
    snprintf(r->step_id, sizeof(r->step_id), "%s.%d", r->uid, ++r->attempts);
    proto_add_str(p, "request_id", r->step_id);
    r->st = RS_GENERATING;
    conn_call(&r->ic, "engine.generate", p);
}

/* The prompt does not fit the context: leaves out the oldest earlier turn (a user message and
 * everything up to the next one, so calls stay with their results). False when none is left. */
static bool drop_oldest_turn(struct run *r)
{
    if (r->hist_to <= r->hist_from) return false;
    int end = r->hist_from + 1;
    while (end < r->hist_to &&
           strcmp(proto_get_str(proto_at(r->messages, (size_t)end), "role"), "user") != 0)
        end++;
    struct proto_val *kept = proto_arr();
    for (int i = 0; i < (int)proto_len(r->messages); i++)
        if (i < r->hist_from || i >= end)
            proto_push(kept, proto_val_dup(proto_at(r->messages, (size_t)i)));
    proto_val_free(r->messages);
    r->messages = kept;
    r->dropped += end - r->hist_from;
    r->hist_to -= end - r->hist_from;
    return true;
}

static void gen_reply(struct run *r, const struct proto_val *res, const struct ag_err *err)
{
    r->st = RS_STARTING; /* between calls */
    if (err) {
        if (run__stopped(r)) return;
        if (err->code == AG_ECTXOVERFLOW && drop_oldest_turn(r)) {
            /* The policy for now, summarize included: the oldest turns make room. */
            ag_info("run %s: context full, %d earlier messages left out", r->uid, r->dropped);
            r->steps--; /* that step never ran */
            run__step(r);
            return;
        }
        const char *reason = err->code == AG_ECTXOVERFLOW ? "context_overflow"
                             : err->code == AG_ESHUTDOWN  ? "shutdown"
                                                          : "engine";
        run__end(r, "failed", reason, err->msg);
        return;
    }
    const struct proto_val *u = proto_get(res, "usage"), *tm = proto_get(res, "timings");
    r->prompt_tokens += proto_int(proto_get(u, "prompt_tokens"), 0);
    int64_t gen = proto_int(proto_get(u, "completion_tokens"), 0);
    r->completion_tokens += gen;
    r->gen_ms += proto_num(proto_get(tm, "total_ms"), 0);
    r->ttft_ms += proto_num(proto_get(tm, "ttft_ms"), 0);
    run__take_delta(r);
    const char *text = proto_get_str(res, "text");
    const struct proto_val *calls = proto_get(res, "tool_calls");
    const char *call_err = proto_get_str(res, "tool_call_error");

    if (proto_len(calls) == 0 && call_err) {
        /* The model wrote a call that does not parse (constrained decoding off): tell it. */
        const char *raw = proto_get_str(res, "raw_text");
        struct proto_val *am = proto_obj();
        proto_add_str(am, "role", "assistant");
        proto_add_str(am, "content", raw ? raw : "");
        proto_push(r->messages, am);
        run__add_msg(r, "assistant", raw, NULL, NULL, NULL, gen);
        char *msg = ag_asprintf("Your tool call could not be parsed: %s. Write the call again as "
                                "valid JSON, or answer without a tool.",
                                call_err);
        struct proto_val *um = proto_obj();
        proto_add_str(um, "role", "user");
        proto_add_str(um, "content", msg);
        proto_push(r->messages, um);
        run__add_msg(r, "user", msg, NULL, NULL, NULL, 0);
        struct proto_val *ev = proto_obj();
        proto_add_str(ev, "call_id", "");
        proto_add_str(ev, "name", "");
        proto_add_bool(ev, "ok", false);
        proto_add_str(ev, "output", msg);
        run__event(r, "tool.result", ev);
        free(msg);
        run__flush_soon(r, true);
        run__step(r);
        return;
    }
    if (proto_len(calls) == 0) {
        free(r->output);
        r->output = ag_strdup(text ? text : "");
        run__add_msg(r, "assistant", r->output, NULL, NULL, NULL, gen);
        if (run__stopped(r)) return;
        run__end(r, "completed", "answer", NULL);
        return;
    }
    /* The assistant turn with its calls joins the conversation, then each call runs. */
    struct proto_val *am = proto_obj();
    proto_add_str(am, "role", "assistant");
    proto_add_str(am, "content", text ? text : "");
    proto_add(am, "tool_calls", proto_val_dup(calls));
    proto_push(r->messages, am);
    char *cj = proto_print(calls);
    run__add_msg(r, "assistant", text, cj, NULL, NULL, gen);
    free(cj);
    proto_val_free(r->calls);
    r->calls = proto_val_dup(calls);
    r->call_i = 0;
    for (size_t i = 0; i < proto_len(calls); i++) {
        const struct proto_val *c = proto_at(calls, i), *f = proto_get(c, "function");
        struct proto_val *ev = proto_obj();
        proto_add_str(ev, "call_id", proto_get_str(c, "id"));
        proto_add_str(ev, "name", proto_get_str(f, "name"));
        proto_add_str(ev, "arguments", proto_get_str(f, "arguments"));
        run__event(r, "tool_call.done", ev);
    }
    run__flush_soon(r, true);
    run__next_tool(r);
}

/* ---- starting a run ---- */

struct cjob {
    struct storeq_job base;
    struct run *r;
    char *agent, *session, *input;
    struct mem_agent a;
    struct mem_run run;
    struct mem_message *hist;
    size_t n_hist;
    int rc;
    struct ag_err err;
};

static void cjob_work(struct storeq_job *base, struct mem_store *st)
{
    struct cjob *j = (struct cjob *)base;
    char *agent = j->agent ? ag_strdup(j->agent) : NULL;
    if (!agent) {
        struct mem_session s = {0};
        j->rc = mem_session_get(st, j->session, &s, &j->err);
        if (j->rc == 0) agent = ag_strdup(s.agent);
        mem_session_release(&s);
        if (j->rc) return;
    }
    j->rc = mem_agent_get(st, agent, &j->a, &j->err);
    if (j->rc == 0)
        j->rc =
            mem_run_create(st, agent, j->session, j->input, &j->run, &j->hist, &j->n_hist, &j->err);
    free(agent);
}

/* The system prompt: the agent's instructions and its memory blocks. */
static char *system_prompt(const struct proto_val *spec)
{
    struct ag_buf b;
    ag_buf_init(&b);
    const char *ins = proto_get_str(spec, "instructions");
    if (ins) ag_buf_puts(&b, ins);
    const struct proto_val *blocks = proto_get(proto_get(spec, "memory"), "blocks");
    for (size_t i = 0; i < proto_len(blocks); i++) {
        const struct proto_val *bl = proto_at(blocks, i);
        const char *v = proto_get_str(bl, "value");
        ag_buf_printf(&b, "%s<%s>\n%s\n</%s>", b.len ? "\n\n" : "", proto_get_str(bl, "label"),
                      v ? v : "", proto_get_str(bl, "label"));
    }
    ag_buf_putc(&b, '\0');
    return b.data;
}

static struct proto_val *history_msg(const struct mem_message *m)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "role", m->role);
    proto_add_str(o, "content", m->content ? m->content : "");
    if (m->tool_calls) proto_add_raw(o, "tool_calls", m->tool_calls);
    if (m->tool_call_id) proto_add_str(o, "tool_call_id", m->tool_call_id);
    if (m->name) proto_add_str(o, "name", m->name);
    return o;
}

static void cjob_done(struct storeq_job *base)
{
    struct cjob *j = (struct cjob *)base;
    struct run *r = j->r;
    struct runner *R = r->R;
    if (j->rc != 0) {
        struct conn *c = r->owner;
        if (!c->closing) conn_reply_error(c, r->req.id, &j->err);
        proto_req_release(&r->req);
        conn_end_async(c);
        if (r->prev)
            r->prev->next = r->next;
        else
            R->live = r->next;
        if (r->next) r->next->prev = r->prev;
        R->n_live--;
        r->st = RS_DONE;
        r->owner = NULL;
        uv_close((uv_handle_t *)&r->flush_timer, on_handle_closed);
        uv_close((uv_handle_t *)&r->wall_timer, on_handle_closed);
        goto out;
    }
    snprintf(r->uid, sizeof(r->uid), "%s", j->run.uid);
    r->created_ms = j->run.created_ms;
    snprintf(r->session, sizeof(r->session), "%s", j->run.session);
    snprintf(r->agent, sizeof(r->agent), "%s", j->run.agent);
    r->spec = proto_parse(j->a.spec_json, strlen(j->a.spec_json), NULL);
    const struct proto_val *lim = proto_get(r->spec, "limits");
    if (!r->max_steps) r->max_steps = (int)proto_int(proto_get(lim, "max_steps"), 20);
    const char *tc = proto_get_str(proto_get(r->spec, "model"), "tool_choice");
    if (!r->tool_choice[0] && tc) snprintf(r->tool_choice, sizeof(r->tool_choice), "%s", tc);
    if (r->max_tool_calls < 0)
        r->max_tool_calls = (int)proto_int(proto_get(lim, "max_tool_calls"), 50);
    r->max_tokens = proto_int(proto_get(lim, "max_tokens"), 32768);
    r->max_wall_s = proto_int(proto_get(lim, "max_wall_s"), 600);

    /* The conversation: system prompt, the session so far, the new input. */
    r->messages = proto_arr();
    char *sys = system_prompt(r->spec);
    if (*sys) {
        struct proto_val *m = proto_obj();
        proto_add_str(m, "role", "system");
        proto_add_str(m, "content", sys);
        proto_push(r->messages, m);
    }
    free(sys);
    r->hist_from = (int)proto_len(r->messages);
    for (size_t i = 0; i < j->n_hist; i++) proto_push(r->messages, history_msg(&j->hist[i]));
    r->hist_to = (int)proto_len(r->messages);
    struct proto_val *um = proto_obj();
    proto_add_str(um, "role", "user");
    proto_add_str(um, "content", j->input);
    proto_push(r->messages, um);

    /* The agent's tools that this build has. */
    r->tools = proto_arr();
    const struct proto_val *tl = proto_get(r->spec, "tools");
    for (size_t i = 0; i < proto_len(tl); i++) {
        const struct proto_val *t = proto_at(tl, i);
        const char *n = proto_str(t) ? proto_str(t) : proto_get_str(t, "name");
        const struct tool_def *def = tools_find(n);
        if (!def || !proto_bool(proto_get(t, "enabled"), true)) {
            if (!def)
                ag_warn("run %s: agent %s lists tool '%s', which this build lacks", r->uid,
                        r->agent, n ? n : "?");
            continue;
        }
        struct proto_val *o = proto_obj(), *f = proto_obj();
        proto_add_str(o, "type", "function");
        proto_add_str(f, "name", def->name);
        proto_add_str(f, "description", def->description);
        proto_add_raw(f, "parameters", def->parameters);
        proto_add(o, "function", f);
        proto_push(r->tools, o);
    }

    /* Event 1 is stored with the run. */
    struct proto_val *created = proto_obj();
    proto_add_str(created, "run_id", r->uid);
    proto_add_str(created, "session_id", r->session);
    proto_add_str(created, "agent", r->agent);
    proto_add_str(created, "input", j->input);
    run__event(r, "run.created", created);
    r->persisted = 1;
    if (r->stream) run__subscribe(r, r->owner);
    run__send_event(r, &r->evs[0]);
    if (!proto_bool(proto_get(r->req.params, "background"), false)) {
        /* Foreground: the answer waits for the end. */
    } else {
        struct conn *c = r->owner;
        r->owner = NULL;
        struct proto_val *res = run__json(r);
        if (!c->closing) conn_reply(c, r->req.id, res);
        proto_val_free(res);
        proto_req_release(&r->req);
        conn_end_async(c);
    }
    uv_timer_start(&r->wall_timer, on_wall_timer, (uint64_t)r->max_wall_s * 1000, 0);
    ag_info("run %s: agent %s, session %s, %zu earlier messages", r->uid, r->agent, r->session,
            j->n_hist);
    run__step(r);
out:
    mem_agent_release(&j->a);
    mem_run_release(&j->run);
    mem_message_list_free(j->hist, j->n_hist);
    free(j->agent);
    free(j->session);
    free(j->input);
    free(j);
}

static int m_create(struct runner *R, struct conn *c, struct proto_req *req, struct ag_err *err)
{
    static const char *const keys[] = {"agent",      "session",     "input",     "stream",
                                       "background", "tool_choice", "max_steps", "max_tool_calls",
                                       "grammar",    NULL};
    const struct proto_val *p = req->params;
    const char *agent = NULL, *session = NULL, *input = NULL, *tc = NULL;
    bool stream = false, bg = false, grammar = true;
    int64_t ms = 0, mt = 0;
    int rc;
    if ((rc = proto_param_known(p, keys, err)) != 0 ||
        (rc = proto_param_str(p, "agent", false, &agent, err)) != 0 ||
        (rc = proto_param_str(p, "session", false, &session, err)) != 0 ||
        (rc = proto_param_str(p, "input", true, &input, err)) != 0 ||
        (rc = proto_param_str(p, "tool_choice", false, &tc, err)) != 0 ||
        (rc = proto_param_bool(p, "stream", false, &stream, err)) != 0 ||
        (rc = proto_param_bool(p, "background", false, &bg, err)) != 0 ||
        (rc = proto_param_bool(p, "grammar", false, &grammar, err)) != 0 ||
        (rc = proto_param_int(p, "max_steps", false, 1, 1000, &ms, err)) != 0 ||
        (rc = proto_param_int(p, "max_tool_calls", false, 0, 10000, &mt, err)) != 0)
        return rc;
    if (!agent && !session)
        return ag_err_set(err, AG_EPARAMS, "params: give agent (a new session) or session");
    if (!*input) return ag_err_set(err, AG_EPARAMS, "params.input: must not be empty");
    if (tc && (!*tc || strlen(tc) >= 64))
        return ag_err_set(err, AG_EPARAMS,
                          "params.tool_choice: \"auto\", \"required\", \"none\" or a tool name");
    if (session) {
        struct run *o = find_session(R, session);
        if (o)
            return ag_err_set(err, AG_EBUSY,
                              "session %s has a run in progress (%s); wait for it to end or "
                              "run.cancel it",
                              session, o->uid[0] ? o->uid : "starting");
    }
    if (R->n_live >= RUNNER_MAX_LIVE)
        return ag_err_set(err, AG_EQUOTA, "too many runs in progress (%d)", RUNNER_MAX_LIVE);
    if (!c->d->eng || !c->d->cfg.model_path[0])
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "no model loaded: start agentd with --model PATH to run agents");

    struct run *r = ag_calloc(1, sizeof(*r));
    r->R = R;
    r->st = RS_STARTING;
    r->owner = c;
    r->req = *req;
    memset(req, 0, sizeof(*req));
    r->stream = stream;
    r->no_grammar = !grammar;
    r->max_steps = (int)ms; /* 0: the agent's limit */
    r->max_tool_calls = proto_get(p, "max_tool_calls") ? (int)mt : -1;
    if (tc) snprintf(r->tool_choice, sizeof(r->tool_choice), "%s", tc);
    if (session) snprintf(r->session, sizeof(r->session), "%s", session);
    r->started_ms = ag_now_ms();
    ag_buf_init(&r->delta);
    conn_init_internal(&r->ic, c->d, &run_sink, r);
    uv_timer_init(c->d->loop, &r->flush_timer);
    uv_timer_init(c->d->loop, &r->wall_timer);
    r->flush_timer.data = r->wall_timer.data = r;
    r->handles_open = 2;
    r->next = R->live;
    if (R->live) R->live->prev = r;
    R->live = r;
    R->n_live++;
    conn_begin_async(c);

    struct cjob *j = ag_calloc(1, sizeof(*j));
    j->base.work = cjob_work;
    j->base.done = cjob_done;
    j->r = r;
    j->agent = agent ? ag_strdup(agent) : NULL;
    j->session = session ? ag_strdup(session) : NULL;
    j->input = ag_strdup(input);
    storeq_submit(c->d->sq, &j->base);
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

static int m_subscribe(struct runner *R, struct conn *c, struct proto_req *req,
                       struct proto_val **result, struct ag_err *err)
{
    static const char *const keys[] = {"run_id", "after_seq", NULL};
    const char *id;
    int64_t after = 0;
    int rc;
    if ((rc = proto_param_known(req->params, keys, err)) != 0 ||
        (rc = proto_param_str(req->params, "run_id", true, &id, err)) != 0 ||
        (rc = proto_param_int(req->params, "after_seq", false, 0, INT64_MAX, &after, err)) != 0)
        return rc;
    struct run *r = find_live(R, id);
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

int runner_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    struct runner *R = runner_of(c->d);
    const char *m = req->method + 4;
    const struct proto_val *p = req->params;
    const char *s = NULL;
    int64_t n;
    int rc;
    if (strcmp(m, "create") == 0) return m_create(R, c, req, err);
    if (strcmp(m, "subscribe") == 0) return m_subscribe(R, c, req, result, err);
    if (strcmp(m, "get") == 0 || strcmp(m, "cancel") == 0) {
        static const char *const keys[] = {"run_id", NULL};
        if ((rc = proto_param_known(p, keys, err)) != 0 ||
            (rc = proto_param_str(p, "run_id", true, &s, err)) != 0)
            return rc;
        struct run *r = find_live(R, s);
        if (m[0] == 'g') {
            if (r && r->st != RS_DONE && r->uid[0]) {
                *result = run__json(r);
                return 0;
            }
            return start_query(c, req, Q_GET);
        }
        if (!r || r->st == RS_DONE)
            return ag_err_set(err, AG_ENOTFOUND,
                              "no run '%s' is in progress (run.get shows how it ended)", s);
        if (!r->cancel && r->st != RS_ENDING) {
            r->cancel = true;
            interrupt_work(r);
        }
        *result = proto_obj();
        proto_add_str(*result, "run_id", r->uid);
        proto_add_bool(*result, "cancelled", true);
        return 0;
    }
    if (strcmp(m, "list") == 0) {
        static const char *const keys[] = {"agent", "session", "limit", NULL};
        if ((rc = proto_param_known(p, keys, err)) != 0 ||
            (rc = proto_param_str(p, "agent", false, &s, err)) != 0 ||
            (rc = proto_param_str(p, "session", false, &s, err)) != 0 ||
            (rc = proto_param_int(p, "limit", false, 1, 1000, &n, err)) != 0)
            return rc;
        return start_query(c, req, Q_LIST);
    }
    return RUNNER_NOT_MINE;
}

void runner_conn_gone(struct conn *c)
{
    struct runner *R = runner_of(c->d);
    if (!R) return;
    for (struct run *r = R->live; r; r = r->next) {
        run__unsubscribe(r, c);
        if (r->owner == c && !r->cancel && r->st != RS_ENDING && r->st != RS_DONE) {
            r->cancel = true;
            interrupt_work(r);
        }
    }
}

int runner_in_flight(struct agentd *d)
{
    struct runner *R = runner_of(d);
    return R ? R->n_live : 0;
}

void runner_start(struct agentd *d)
{
    struct runner *R = ag_calloc(1, sizeof(*R));
    R->d = d;
    d->runner = R;
}

void runner_drain(struct agentd *d)
{
    struct runner *R = runner_of(d);
    if (!R) return;
    for (struct run *r = R->live; r; r = r->next)
        if (!r->shutdown && r->st != RS_ENDING && r->st != RS_DONE) {
            r->shutdown = true;
            interrupt_work(r);
        }
}

void runner_stop(struct agentd *d)
{
    struct runner *R = runner_of(d);
    if (!R || R->n_live) return; /* a run cut off by the drain timeout keeps it; exit follows */
    d->runner = NULL;
    free(R);
}
