/*
 * runner.c - agent runs: the state machine that makes an agent act (DESIGN.md §3).
 *
 * A run is one user input to an agent's session and everything the agent does in reply. It is a
 * state machine on the loop thread: generate (the model, streaming) -> for each tool call: check
 * the arguments, run the tool -> generate again ... until the model answers without a call or a
 * budget ends the run. The runner does no blocking work and knows no JSON-RPC: it thinks through
 * an injectable model interface (struct run_model: the engine service in the daemon, a scripted
 * double in tests/test_runner.c) and acts through the tools' ops table (tools/tools.h) with the
 * services of run_tools.c. The conversation stays typed (struct run_msg) from step to step.
 *
 * Events. Everything a run does is an event with a per-run seq, kept in memory while the run is
 * live and written to the store by the storage thread (run_log.c); an event reaches listeners
 * only after its transaction committed, so a client that resubscribes with after_seq gets
 * exactly what it missed, and kill -9 loses nothing that was sent.
 *
 * Sessions. One run at a time per session: a second one fails with AG_EBUSY naming the run. The
 * session's tools share one sandbox session named after the agent session, so python variables
 * and workspace files persist across the runs of a conversation.
 *
 * Stopping. A cancel, the wall clock or shutdown interrupts what runs now (the generation, or the
 * tool through its ops row); its callback then ends the run with the right reason.
 */
#include "runner_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNNER_MAX_LIVE 1024  /* runs at once */
#define TOOL_OUT_MAX    16000 /* bytes of a tool's output shown to the model */

static void run_step(struct run *r);
static void next_tool(struct run *r);

const char *run_end_name(enum run_end e)
{
    static const char *const names[] = {"running", "completed", "failed", "cancelled"};
    return names[e];
}

/* for each live run r of R (r may end, not be freed, inside the body) */
#define FOR_LIVE(r, R)                                                                             \
    ag_list_foreach (r##_it, &(R)->live)                                                           \
        for (struct run *r = ag_list_entry(r##_it, struct run, node); r; r = NULL)

struct run *run__find_live(struct runner *R, const char *uid)
{
    FOR_LIVE(r, R)
    if (strcmp(r->uid, uid) == 0) return r;
    return NULL;
}

static struct run *find_session(struct runner *R, const char *session)
{
    FOR_LIVE(r, R)
    if (r->session[0] && strcmp(r->session, session) == 0) return r;
    return NULL;
}

/* ---- the conversation ---- */

static struct run_msg *conv_push(struct run *r, enum eng_chat_role role, const char *content)
{
    if (r->n_conv == r->cap_conv) {
        r->cap_conv = r->cap_conv ? r->cap_conv * 2 : 16;
        r->conv = ag_realloc(r->conv, r->cap_conv * sizeof(*r->conv));
    }
    struct run_msg *m = &r->conv[r->n_conv++];
    memset(m, 0, sizeof(*m));
    m->role = role;
    m->content = ag_strdup(content ? content : "");
    return m;
}

static void msg_release(struct run_msg *m)
{
    free(m->content);
    for (size_t i = 0; i < m->n_calls; i++) {
        free((char *)m->calls[i].id);
        free((char *)m->calls[i].name);
        free((char *)m->calls[i].arguments);
    }
    free(m->calls);
    free(m->tool_call_id);
    free(m->name);
}

static void calls_free(struct run *r)
{
    for (size_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].id);
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    r->calls = NULL;
    r->n_calls = r->call_i = 0;
}

/* ---- the end ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    if (--r->handles_open > 0) return;
    proto_val_free(r->spec);
    for (size_t i = 0; i < r->n_conv; i++) msg_release(&r->conv[i]);
    free(r->conv);
    free(r->tools);
    calls_free(r);
    proto_val_free(r->args);
    free(r->call_output);
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

static void unlink_live(struct run *r)
{
    ag_list_remove(&r->node);
    r->R->n_live--;
}

static void close_handles(struct run *r)
{
    uv_timer_stop(&r->flush_timer);
    uv_timer_stop(&r->wall_timer);
    uv_close((uv_handle_t *)&r->flush_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->wall_timer, on_handle_closed);
}

void run__finish(struct run *r)
{
    r->st = RS_DONE;
    ag_info("run %s: %s (%s) after %d steps, %d tool calls, %lld ms", r->uid, run_end_name(r->end),
            r->end_reason, r->steps, r->n_tool_calls, (long long)(ag_now_ms() - r->started_ms));
    if (r->watch && r->watch->ended) r->watch->ended(r->watch_ud, r);
    for (struct sub *s = r->subs; s; s = s->next) s->c = NULL, s->ud = NULL;
    run__purge_subs(r);
    unlink_live(r);
    close_handles(r);
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

static void run_end(struct run *r, enum run_end end, const char *reason, const char *error)
{
    if (r->st == RS_ENDING || r->st == RS_DONE) return;
    r->end = end;
    snprintf(r->end_reason, sizeof(r->end_reason), "%s", reason);
    if (error) r->end_error = ag_strdup(error);
    struct proto_val *p = usage_payload(r);
    proto_add_str(p, "state", run_end_name(end));
    proto_add_str(p, "reason", reason);
    if (r->output) proto_add_str(p, "output", r->output);
    if (error) proto_add_str(p, "error", error);
    run__event(r,
               end == RUN_COMPLETED   ? "run.completed"
               : end == RUN_CANCELLED ? "run.cancelled"
                                      : "run.failed",
               p);
    r->st = RS_ENDING;
    run__flush(r);
}

/* Ends the run when a cancel, the wall clock or shutdown stopped it; true when it did. */
static bool run_stopped(struct run *r)
{
    if (r->shutdown) {
        run_end(r, RUN_FAILED, "shutdown", "agentd is shutting down");
        return true;
    }
    if (r->wall_hit) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run used its wall-clock budget (limits.max_wall_s = %lld)",
                 (long long)r->max_wall_s);
        run_end(r, RUN_FAILED, "max_wall_s", msg);
        return true;
    }
    if (r->cancel) {
        run_end(r, RUN_CANCELLED, "cancelled", NULL);
        return true;
    }
    return false;
}

void run__interrupt(struct run *r)
{
    if (r->st == RS_STARTING && r->mcp_wait) {
        /* Waiting for MCP servers: stop waiting; the run ends for the reason set. */
        mcpd_forget(r->R->d, r->mcp_wait);
        r->mcp_wait = 0;
        run_step(r);
    } else if (r->st == RS_GENERATING)
        r->R->model.cancel(r->R->model.ctx, r->gen_id);
    else if (r->st == RS_TOOL && r->call.def && !r->call_over)
        tool_call_cancel(&r->call);
}

static void on_wall_timer(uv_timer_t *t)
{
    struct run *r = t->data;
    if (r->st != RS_GENERATING && r->st != RS_TOOL && !r->mcp_wait) return;
    r->wall_hit = true;
    run__interrupt(r);
}

/* ---- generation ---- */

static void gen_delta(void *ud, const char *text, size_t n)
{
    struct run *r = ud;
    if (r->st != RS_GENERATING || !n) return;
    ag_buf_append(&r->delta, text, n);
    run__flush_soon(r, false);
}

static void gen_done(void *ud, const struct engd_result *res, const struct ag_err *err);
static const struct engd_gen_cb gen_cb = {gen_delta, gen_done};

/* The model's sampling settings from the definition (model.temperature, ...). */
static void sampling_of(struct run *r, struct eng_sampler_params *sp)
{
    const struct proto_val *m = proto_get(r->spec, "model");
    *sp = eng_sampler_params_default();
#define NUM(key, field)                                                                            \
    if (proto_type(proto_get(m, key)) == PROTO_NUMBER)                                             \
    sp->field = (float)proto_num(proto_get(m, key), 0)
    NUM("temperature", temperature);
    NUM("top_p", top_p);
    NUM("min_p", min_p);
    NUM("repeat_penalty", repeat_penalty);
    NUM("frequency_penalty", frequency_penalty);
    NUM("presence_penalty", presence_penalty);
#undef NUM
    if (proto_type(proto_get(m, "top_k")) == PROTO_NUMBER)
        sp->top_k = (int)proto_int(proto_get(m, "top_k"), 0);
    if (proto_type(proto_get(m, "seed")) == PROTO_NUMBER)
        sp->seed = (uint64_t)proto_int(proto_get(m, "seed"), 0);
    else
        sp->seed = (uint64_t)ag_now_ns() ^ ((uint64_t)++r->R->n_seeds << 40);
}

/* The step's request: the conversation and tools, copied into the request's own memory. */
static void build_request(struct run *r, struct eng_gen_req *q, int64_t max_tokens)
{
    struct eng_chat_msg *m = eng_gen_req_alloc(q, (r->n_conv ? r->n_conv : 1) * sizeof(*m));
    for (size_t i = 0; i < r->n_conv; i++) {
        const struct run_msg *c = &r->conv[i];
        m[i].role = c->role;
        m[i].content = eng_gen_req_strdup(q, c->content);
        m[i].tool_call_id = eng_gen_req_strdup(q, c->tool_call_id);
        m[i].name = eng_gen_req_strdup(q, c->name);
        if (c->n_calls) {
            struct eng_chat_call *cc = eng_gen_req_alloc(q, c->n_calls * sizeof(*cc));
            for (size_t k = 0; k < c->n_calls; k++) {
                cc[k].id = eng_gen_req_strdup(q, c->calls[k].id);
                cc[k].name = eng_gen_req_strdup(q, c->calls[k].name);
                cc[k].arguments = eng_gen_req_strdup(q, c->calls[k].arguments);
            }
            m[i].calls = cc;
            m[i].n_calls = c->n_calls;
        }
    }
    q->chat.msgs = m;
    q->chat.n_msgs = r->n_conv;
    bool none = r->tool_choice[0] && r->n_tool_calls == 0 && strcmp(r->tool_choice, "none") == 0;
    if (r->n_tools && !none) {
        struct eng_chat_tool *t = eng_gen_req_alloc(q, r->n_tools * sizeof(*t));
        for (size_t i = 0; i < r->n_tools; i++) {
            t[i].name = eng_gen_req_strdup(q, r->tools[i]->name);
            t[i].description = eng_gen_req_strdup(q, r->tools[i]->description);
            t[i].parameters = eng_gen_req_strdup(q, r->tools[i]->parameters);
        }
        q->chat.tools = t;
        q->chat.n_tools = r->n_tools;
        if (r->tool_choice[0] && r->n_tool_calls == 0 && strcmp(r->tool_choice, "auto") != 0 &&
            !none) {
            q->tool_required = true;
            if (strcmp(r->tool_choice, "required") != 0)
                q->tool_name = eng_gen_req_strdup(q, r->tool_choice);
        }
    }
    q->max_tokens = (int)max_tokens;
    sampling_of(r, &q->sampling);
    q->stream = true;
    q->tool_grammar = !r->no_grammar;
}

static void run_step(struct run *r)
{
    if (run_stopped(r)) return;
    if (r->steps >= r->max_steps) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run took %d steps without an answer (limits.max_steps)",
                 r->steps);
        run_end(r, RUN_FAILED, "max_steps", msg);
        return;
    }
    int64_t left = r->max_tokens - r->completion_tokens;
    if (left <= 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the run generated %lld tokens (limits.max_tokens)",
                 (long long)r->completion_tokens);
        run_end(r, RUN_FAILED, "max_tokens", msg);
        return;
    }
    r->steps++;
    int64_t per = proto_int(run__spec_get(r, "model", "max_tokens"), 1024);
    struct eng_gen_req q = {0};
    build_request(r, &q, per < left ? per : left);
    struct ag_err err = {0};
    if (q.tool_required && r->no_grammar) {
        eng_gen_req_release(&q);
        run_end(r, RUN_FAILED, "engine", "params.tool_choice: a required call needs grammar");
        return;
    }
    /* Unique per attempt: a retried step's failed request may not be gone from the engine's
     * books yet when the retry starts. */
    snprintf(r->step_id, sizeof(r->step_id), "%s.%d", r->uid, ++r->attempts);
    r->st = RS_GENERATING;
    int rc = r->R->model.generate(r->R->model.ctx, &q, r->step_id, &gen_cb, r, &r->gen_id, &err);
    eng_gen_req_release(&q);
    if (rc < 0) {
        r->st = RS_STARTING;
        run_end(r, RUN_FAILED, rc == AG_ESHUTDOWN ? "shutdown" : "engine", err.msg);
    }
}

/* The prompt does not fit the context: leaves out the oldest earlier turn (a user message and
 * everything up to the next one, so calls stay with their results). False when none is left. */
static bool drop_oldest_turn(struct run *r)
{
    if (r->hist_to <= r->hist_from) return false;
    size_t end = r->hist_from + 1;
    while (end < r->hist_to && r->conv[end].role != ENG_CHAT_USER) end++;
    size_t n = end - r->hist_from;
    for (size_t i = r->hist_from; i < end; i++) msg_release(&r->conv[i]);
    memmove(&r->conv[r->hist_from], &r->conv[end], (r->n_conv - end) * sizeof(*r->conv));
    r->n_conv -= n;
    r->dropped += (int)n;
    r->hist_to -= n;
    return true;
}

/* The calls as stored with the assistant message: [{id, type, function: {name, arguments}}]. */
static char *calls_json(const struct run *r)
{
    struct proto_val *a = proto_arr();
    for (size_t i = 0; i < r->n_calls; i++) {
        struct proto_val *c = proto_obj(), *f = proto_obj();
        proto_add_str(c, "id", r->calls[i].id);
        proto_add_str(c, "type", "function");
        proto_add_str(f, "name", r->calls[i].name);
        proto_add_str(f, "arguments", r->calls[i].arguments);
        proto_add(c, "function", f);
        proto_push(a, c);
    }
    char *s = proto_print(a);
    proto_val_free(a);
    return s;
}

/* The model wrote a call that does not parse (constrained decoding off): tell it. */
static void bad_call(struct run *r, const struct engd_result *res, int64_t gen)
{
    char *raw = ag_strndup(res->raw, res->raw_len);
    conv_push(r, ENG_CHAT_ASSISTANT, raw);
    run__add_msg(r, "assistant", raw, NULL, NULL, NULL, gen);
    char *msg = ag_asprintf("Your tool call could not be parsed: %s. Write the call again as "
                            "valid JSON, or answer without a tool.",
                            res->parse_error);
    conv_push(r, ENG_CHAT_USER, msg);
    run__add_msg(r, "user", msg, NULL, NULL, NULL, 0);
    struct proto_val *ev = proto_obj();
    proto_add_str(ev, "call_id", "");
    proto_add_str(ev, "name", "");
    proto_add_bool(ev, "ok", false);
    proto_add_str(ev, "output", msg);
    run__event(r, "tool.result", ev);
    free(msg);
    free(raw);
    run__flush_soon(r, true);
    run_step(r);
}

static void gen_done(void *ud, const struct engd_result *res, const struct ag_err *err)
{
    struct run *r = ud;
    r->st = RS_STARTING; /* between calls */
    if (err) {
        if (run_stopped(r)) return;
        if (err->code == AG_ECTXOVERFLOW && drop_oldest_turn(r)) {
            /* The policy for now, summarize included: the oldest turns make room. */
            ag_info("run %s: context full, %d earlier messages left out", r->uid, r->dropped);
            r->steps--; /* that step never ran */
            run_step(r);
            return;
        }
        const char *reason = err->code == AG_ECTXOVERFLOW ? "context_overflow"
                             : err->code == AG_ESHUTDOWN  ? "shutdown"
                                                          : "engine";
        run_end(r, RUN_FAILED, reason, err->msg);
        return;
    }
    r->prompt_tokens += res->usage.prompt_tokens;
    int64_t gen = res->usage.completion_tokens;
    r->completion_tokens += gen;
    r->gen_ms += res->usage.total_ms;
    r->ttft_ms += res->usage.ttft_ms;
    run__take_delta(r);

    if (res->n_calls == 0 && res->parse_error) {
        bad_call(r, res, gen);
        return;
    }
    if (res->n_calls == 0) {
        free(r->output);
        r->output = ag_strndup(res->text, res->len);
        run__add_msg(r, "assistant", r->output, NULL, NULL, NULL, gen);
        if (run_stopped(r)) return;
        run_end(r, RUN_COMPLETED, "answer", NULL);
        return;
    }
    /* The assistant turn with its calls joins the conversation, then each call runs. */
    calls_free(r);
    r->calls = ag_calloc(res->n_calls, sizeof(*r->calls));
    r->n_calls = res->n_calls;
    char *text = ag_strndup(res->text, res->len);
    struct run_msg *am = conv_push(r, ENG_CHAT_ASSISTANT, text);
    am->calls = ag_calloc(res->n_calls, sizeof(*am->calls));
    am->n_calls = res->n_calls;
    for (size_t i = 0; i < res->n_calls; i++) {
        char id[48];
        engd_call_id(id, sizeof(id), res->id, i);
        const char *args = res->calls[i].arguments ? res->calls[i].arguments : "{}";
        r->calls[i] =
            (struct run_call){ag_strdup(id), ag_strdup(res->calls[i].name), ag_strdup(args)};
        am->calls[i] =
            (struct eng_chat_call){ag_strdup(id), ag_strdup(res->calls[i].name), ag_strdup(args)};
    }
    char *cj = calls_json(r);
    run__add_msg(r, "assistant", text, cj, NULL, NULL, gen);
    free(cj);
    free(text);
    for (size_t i = 0; i < r->n_calls; i++) {
        struct proto_val *ev = proto_obj();
        proto_add_str(ev, "call_id", r->calls[i].id);
        proto_add_str(ev, "name", r->calls[i].name);
        proto_add_str(ev, "arguments", r->calls[i].arguments);
        run__event(r, "tool_call.done", ev);
    }
    run__flush_soon(r, true);
    next_tool(r);
}

/* ---- tool calls ---- */

/* The tool's result joins the conversation and the log; then the next call, or a new step. */
static void tool_result(struct run *r, bool ok, const char *output)
{
    const struct run_call *c = &r->calls[r->call_i];
    char *cut = NULL;
    size_t n = strlen(output);
    if (n > TOOL_OUT_MAX) {
        size_t k = TOOL_OUT_MAX;
        while (k > 0 && ((unsigned char)output[k] & 0xC0) == 0x80) k--;
        cut = ag_asprintf("%.*s\n[... %zu more bytes not shown]", (int)k, output, n - k);
        output = cut;
    }
    double ms = (double)((ag_now_ns() / 1000) - r->tool_started_us) / 1000.0;
    r->tool_ms += ms;
    struct run_msg *tm = conv_push(r, ENG_CHAT_TOOL, output);
    tm->tool_call_id = ag_strdup(c->id);
    tm->name = ag_strdup(c->name);
    run__add_msg(r, "tool", output, NULL, c->id, c->name, 0);
    struct proto_val *ev = proto_obj();
    proto_add_str(ev, "call_id", c->id);
    proto_add_str(ev, "name", c->name);
    proto_add_bool(ev, "ok", ok);
    proto_add_str(ev, "output", output);
    proto_add_num(ev, "duration_ms", ms);
    run__event(r, "tool.result", ev);
    free(cut);
    run__flush_soon(r, true);
    r->st = RS_STARTING;
    r->call_i++;
    next_tool(r);
}

static void tool_errorf(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tool_errorf(struct run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = tool_error_text(fmt, ap);
    va_end(ap);
    tool_result(r, false, text);
    free(text);
}

/* The running call's end: reported by the tool (possibly from inside its start()). */
static void call_finished(struct run *r)
{
    bool ok = r->call_ok;
    char *out = r->call_output;
    r->call_output = NULL;
    r->call.def = NULL;
    proto_val_free(r->args);
    r->args = NULL;
    if (!run_stopped(r)) tool_result(r, ok, out ? out : "");
    free(out);
}

static void on_tool_done(struct tool_call *call, bool ok, const char *output)
{
    struct run *r = call->ud;
    if (r->call_over) return; /* a tool must report once; a second report is ignored */
    r->call_over = true;
    r->call_ok = ok;
    r->call_output = ag_strdup(output ? output : "");
    if (!r->in_start) call_finished(r);
}

/* The agent's entry for the tool called name (bare names are normalized to objects). */
static const struct proto_val *spec_entry(const struct run *r, const char *name)
{
    const struct proto_val *tools = proto_get(r->spec, "tools");
    for (size_t i = 0; i < proto_len(tools); i++) {
        const struct proto_val *t = proto_at(tools, i);
        const char *n = proto_str(t) ? proto_str(t) : proto_get_str(t, "name");
        if (n && strcmp(n, name) == 0 && proto_bool(proto_get(t, "enabled"), true)) return t;
    }
    return NULL;
}

static const struct tool_def *run_tool(const struct run *r, const char *name)
{
    for (size_t i = 0; i < r->n_tools; i++)
        if (strcmp(r->tools[i]->name, name) == 0) return r->tools[i];
    return NULL;
}

static void next_tool(struct run *r)
{
    if (run_stopped(r)) return;
    if (r->call_i >= r->n_calls) {
        run_step(r);
        return;
    }
    const struct run_call *c = &r->calls[r->call_i];
    r->tool_started_us = (ag_now_ns() / 1000);
    r->st = RS_TOOL;
    if (r->n_tool_calls >= r->max_tool_calls) {
        char msg[112];
        snprintf(msg, sizeof(msg), "the run made %d tool calls (limits.max_tool_calls)",
                 r->n_tool_calls);
        r->st = RS_STARTING;
        run_end(r, RUN_FAILED, "max_tool_calls", msg);
        return;
    }
    r->n_tool_calls++;
    const struct tool_def *t = run_tool(r, c->name);
    if (!t) {
        struct ag_buf names;
        ag_buf_init(&names);
        for (size_t i = 0; i < r->n_tools; i++)
            ag_buf_printf(&names, "%s%s", i ? ", " : "", r->tools[i]->name);
        ag_buf_putc(&names, '\0');
        tool_errorf(r, "there is no tool named '%s'; the tools are: %s", c->name,
                    r->n_tools ? names.data : "(none)");
        ag_buf_release(&names);
        return;
    }
    struct ag_err err = {0};
    if (tools_check_args(t, c->arguments, &r->args, &err) != 0) {
        tool_errorf(r, "%s", err.msg);
        return;
    }
    r->tctx = (struct tool_ctx){
        .agent = r->agent,
        .session = r->session,
        .run_id = r->uid,
        .spec = r->spec,
        .entry = spec_entry(r, t->name),
        .env = &r->R->env,
    };
    r->call = (struct tool_call){
        .def = t, .ctx = &r->tctx, .args = r->args, .done = on_tool_done, .ud = r};
    r->call_over = false;
    r->env_kind = 0;
    r->in_start = true;
    int rc = t->ops->start(&r->call, &err);
    r->in_start = false;
    if (rc < 0 && !r->call_over) {
        r->call_over = true;
        r->call_ok = false;
        r->call_output = ag_asprintf("error: %s", err.msg);
    }
    if (r->call_over) call_finished(r);
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

static enum eng_chat_role role_of(const char *role)
{
    if (strcmp(role, "system") == 0) return ENG_CHAT_SYSTEM;
    if (strcmp(role, "assistant") == 0) return ENG_CHAT_ASSISTANT;
    if (strcmp(role, "tool") == 0) return ENG_CHAT_TOOL;
    return ENG_CHAT_USER;
}

/* A stored message back in the conversation (its calls from their stored JSON). */
static void history_msg(struct run *r, const struct mem_message *m)
{
    struct run_msg *c = conv_push(r, role_of(m->role), m->content);
    if (m->tool_call_id) c->tool_call_id = ag_strdup(m->tool_call_id);
    if (m->name) c->name = ag_strdup(m->name);
    if (!m->tool_calls) return;
    struct proto_val *calls = proto_parse(m->tool_calls, strlen(m->tool_calls), NULL);
    size_t n = proto_len(calls);
    c->calls = ag_calloc(n ? n : 1, sizeof(*c->calls));
    for (size_t i = 0; i < n; i++) {
        const struct proto_val *call = proto_at(calls, i), *f = proto_get(call, "function");
        const char *id = proto_get_str(call, "id"), *name = proto_get_str(f, "name");
        const struct proto_val *args = proto_get(f, "arguments");
        char *a = proto_type(args) == PROTO_STRING ? ag_strdup(proto_str(args))
                  : args                           ? proto_print(args)
                                                   : NULL;
        c->calls[c->n_calls++] =
            (struct eng_chat_call){id ? ag_strdup(id) : NULL, ag_strdup(name ? name : ""), a};
    }
    proto_val_free(calls);
}

/* The agent's tools that this daemon has (built-ins, then the runner's extra rows). */
static void pick_tools(struct run *r)
{
    const struct proto_val *tl = proto_get(r->spec, "tools");
    r->tools = ag_calloc(proto_len(tl) + 1, sizeof(*r->tools));
    for (size_t i = 0; i < proto_len(tl); i++) {
        const struct proto_val *t = proto_at(tl, i);
        const char *n = proto_str(t) ? proto_str(t) : proto_get_str(t, "name");
        if (!n || !proto_bool(proto_get(t, "enabled"), true)) continue;
        const struct tool_def *def = tools_find(n);
        for (size_t k = 0; !def && k < r->R->n_extra; k++)
            if (strcmp(r->R->extra[k]->name, n) == 0) def = r->R->extra[k];
        if (!def) {
            ag_warn("run %s: agent %s lists tool '%s', which this build lacks", r->uid, r->agent,
                    n);
            continue;
        }
        r->tools[r->n_tools++] = def;
    }
}

/* An mcp.server event: a server's state as this run sees it. */
static void mcp_event(struct run *r, const char *server, const char *state, const char *msg)
{
    struct proto_val *p = proto_obj();
    if (server) proto_add_str(p, "server", server);
    proto_add_str(p, "state", state);
    if (msg) proto_add_str(p, "message", msg);
    run__event(r, "mcp.server", p);
    run__flush_soon(r, true);
}

/* The agent's MCP servers are ready (or failed): their tools join the run's, then it starts. */
static void mcp_ready(void *ud, const struct tool_def *const *rows, size_t n, const char *problems)
{
    struct run *r = ud;
    r->mcp_wait = 0;
    r->tools = ag_realloc(r->tools, (r->n_tools + n + 1) * sizeof(*r->tools));
    for (size_t i = 0; i < n; i++) r->tools[r->n_tools++] = rows[i];
    if (problems) mcp_event(r, NULL, "unavailable", problems);
    run_step(r);
}

void runner_mcp_state(struct agentd *d, const char *agent, const char *server, const char *state,
                      const char *msg)
{
    struct runner *R = d->runner;
    if (!R) return;
    FOR_LIVE(r, R)
    if (r->n_evs && r->st != RS_ENDING && r->st != RS_DONE && strcmp(r->agent, agent) == 0)
        mcp_event(r, server, state, msg);
}

static void cjob_done(struct storeq_job *base)
{
    struct cjob *j = (struct cjob *)base;
    struct run *r = j->r;
    if (j->rc != 0) {
        unlink_live(r);
        r->st = RS_DONE;
        if (r->watch && r->watch->started) r->watch->started(r->watch_ud, r, &j->err);
        close_handles(r);
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
    char *sys = system_prompt(r->spec);
    if (*sys) conv_push(r, ENG_CHAT_SYSTEM, sys);
    free(sys);
    r->hist_from = r->n_conv;
    for (size_t i = 0; i < j->n_hist; i++) history_msg(r, &j->hist[i]);
    r->hist_to = r->n_conv;
    conv_push(r, ENG_CHAT_USER, j->input);
    pick_tools(r);

    /* Event 1 is stored with the run. */
    struct proto_val *created = proto_obj();
    proto_add_str(created, "run_id", r->uid);
    proto_add_str(created, "session_id", r->session);
    proto_add_str(created, "agent", r->agent);
    proto_add_str(created, "input", j->input);
    run__event(r, "run.created", created);
    r->persisted = 1;
    if (r->watch && r->watch->started) r->watch->started(r->watch_ud, r, NULL);
    run__send_event(r, &r->evs[0]);
    uv_timer_start(&r->wall_timer, on_wall_timer, (uint64_t)r->max_wall_s * 1000, 0);
    ag_info("run %s: agent %s, session %s, %zu earlier messages", r->uid, r->agent, r->session,
            j->n_hist);
    const struct proto_val *mcp = proto_get(r->spec, "mcp");
    struct ag_err err = {0};
    if (proto_len(mcp) && mcpd_tools(r->R->d, r->agent, mcp, mcp_ready, r, &r->mcp_wait, &err) != 0)
        mcp_event(r, NULL, "unavailable", err.msg);
    if (!r->mcp_wait) run_step(r);
out:
    mem_agent_release(&j->a);
    mem_run_release(&j->run);
    mem_message_list_free(j->hist, j->n_hist);
    free(j->agent);
    free(j->session);
    free(j->input);
    free(j);
}

struct run *runner_create(struct runner *R, const struct run_opts *o, const struct run_watch *w,
                          void *ud, struct ag_err *err)
{
    if (!o->agent && !o->session) {
        ag_err_set(err, AG_EPARAMS, "params: give agent (a new session) or session");
        return NULL;
    }
    if (!o->input || !*o->input) {
        ag_err_set(err, AG_EPARAMS, "params.input: must not be empty");
        return NULL;
    }
    const char *tc = o->tool_choice;
    if (tc && (!*tc || strlen(tc) >= 64)) {
        ag_err_set(err, AG_EPARAMS,
                   "params.tool_choice: \"auto\", \"required\", \"none\" or a tool name");
        return NULL;
    }
    if (o->session) {
        struct run *other = find_session(R, o->session);
        if (other) {
            ag_err_set(err, AG_EBUSY,
                       "session %s has a run in progress (%s); wait for it to end or run.cancel "
                       "it",
                       o->session, other->uid[0] ? other->uid : "starting");
            return NULL;
        }
    }
    if (R->n_live >= RUNNER_MAX_LIVE) {
        ag_err_set(err, AG_EQUOTA, "too many runs in progress (%d)", RUNNER_MAX_LIVE);
        return NULL;
    }
    if (!R->model.generate) {
        ag_err_set(err, AG_EUNSUPPORTED,
                   "no model loaded: start agentd with --model PATH to run agents");
        return NULL;
    }
    struct run *r = ag_calloc(1, sizeof(*r));
    r->R = R;
    r->st = RS_STARTING;
    r->watch = w;
    r->watch_ud = ud;
    r->no_grammar = o->no_grammar;
    r->max_steps = o->max_steps; /* 0: the agent's limit */
    r->max_tool_calls = o->max_tool_calls;
    if (tc) snprintf(r->tool_choice, sizeof(r->tool_choice), "%s", tc);
    if (o->session) snprintf(r->session, sizeof(r->session), "%s", o->session);
    r->started_ms = ag_now_ms();
    ag_buf_init(&r->delta);
    uv_timer_init(R->d->loop, &r->flush_timer);
    uv_timer_init(R->d->loop, &r->wall_timer);
    r->flush_timer.data = r->wall_timer.data = r;
    r->handles_open = 2;
    ag_list_insert_head(&R->live, &r->node);
    R->n_live++;

    struct cjob *j = ag_calloc(1, sizeof(*j));
    j->base.work = cjob_work;
    j->base.done = cjob_done;
    j->r = r;
    j->agent = o->agent ? ag_strdup(o->agent) : NULL;
    j->session = o->session ? ag_strdup(o->session) : NULL;
    j->input = ag_strdup(o->input);
    storeq_submit(R->d->sq, &j->base);
    return r;
}

void run__cancel(struct run *r)
{
    if (!r->cancel && r->st != RS_ENDING && r->st != RS_DONE) {
        r->cancel = true;
        run__interrupt(r);
    }
}

int runner_cancel(struct runner *R, const char *run_id, struct ag_err *err)
{
    struct run *r = run__find_live(R, run_id);
    if (!r || r->st == RS_DONE)
        return ag_err_set(err, AG_ENOTFOUND,
                          "no run '%s' is in progress (run.get shows how it ended)", run_id);
    run__cancel(r);
    return 0;
}

/* ---- the runner ---- */

static int engine_generate(void *ctx, struct eng_gen_req *req, const char *name,
                           const struct engd_gen_cb *cb, void *ud, uint64_t *id, struct ag_err *err)
{
    return engd_generate(ctx, req, name, NULL, cb, ud, id, err);
}

static void engine_cancel(void *ctx, uint64_t id)
{
    engd_cancel(ctx, id);
}

void runner_start(struct agentd *d)
{
    struct runner *R = ag_calloc(1, sizeof(*R));
    R->d = d;
    ag_list_init(&R->live);
    if (d->eng && d->cfg.model_path[0])
        R->model = (struct run_model){engine_generate, engine_cancel, d};
    run__env_init(&R->env, d);
    d->runner = R;
}

void runner_conn_gone(struct conn *c)
{
    struct runner *R = c->d->runner;
    if (!R) return;
    FOR_LIVE(r, R)
    {
        run__unsubscribe(r, c);
        if (r->owner == c) run__cancel(r);
    }
}

int runner_in_flight(struct agentd *d)
{
    return d->runner ? d->runner->n_live : 0;
}

void runner_drain(struct agentd *d)
{
    struct runner *R = d->runner;
    if (!R) return;
    FOR_LIVE(r, R)
    if (!r->shutdown && r->st != RS_ENDING && r->st != RS_DONE) {
        r->shutdown = true;
        run__interrupt(r);
    }
}

void runner_stop(struct agentd *d)
{
    struct runner *R = d->runner;
    if (!R || R->n_live) return; /* a run cut off by the drain timeout keeps it; exit follows */
    d->runner = NULL;
    free(R);
}
