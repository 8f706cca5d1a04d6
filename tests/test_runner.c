/*
 * test_runner.c - the agent runner's state machine, driven by a scripted model and test tools:
 * no real model, no daemon, no socket. The runner runs on a real libuv loop with the real
 * storage thread and a real SQLite file (its events are stored before anyone hears them), so
 * every branch is covered in milliseconds: an answer, a tool call, a call that does not parse,
 * an unknown tool, bad arguments, a failing tool, each budget, a cancel in each state, history
 * dropped to fit the context, a busy session, shutdown, an engine error.
 *
 * The scripted model plays replies from a list; each reply can carry text, tool calls, a parse
 * error, an error code and a delay. It records what each request held, so tests check what the
 * model was shown (tool results, the "could not be parsed" note, the dropped history).
 */
#include "test.h"

#include "../agentd/runner_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the scripted model ---- */

struct reply {
    const char *text;        /* content */
    const char *calls[3][2]; /* {name, arguments} */
    int n_calls;
    const char *parse_error; /* the model wrote a call that does not parse */
    int err;                 /* fail with this AG_E code */
    int delay_ms;            /* time to "generate" */
    int tokens;              /* completion tokens */
};

static struct {
    const struct reply *v;
    size_t n, i;
    size_t overflow_over; /* AG_ECTXOVERFLOW while a request has more messages than this */
    int n_requests;       /* generate() calls */
    int n_cancels;        /* cancel() calls that stopped a generation */
    size_t last_n_msgs;   /* messages of the last request */
    char tools[512];      /* names of the tools the last request offered, comma-separated */
    struct ag_buf last;   /* "role:content\n" of the last request's messages */
    uv_timer_t timer;     /* the generation in flight */
    const struct engd_gen_cb *cb;
    void *ud;
    const struct reply *cur; /* its reply */
    bool busy, cancelled;
    uint64_t next_id;
} M;

static void model_deliver(uv_timer_t *t)
{
    (void)t;
    const struct reply *rp = M.cur;
    const struct engd_gen_cb *cb = M.cb;
    void *ud = M.ud;
    M.busy = false;
    struct eng_chat_reply_call calls[3];
    for (int i = 0; i < rp->n_calls; i++)
        calls[i] = (struct eng_chat_reply_call){(char *)rp->calls[i][0], (char *)rp->calls[i][1]};
    const char *text = rp->text ? rp->text : "";
    struct engd_result res = {
        .id = ++M.next_id,
        .request_id = "scripted",
        .text = text,
        .len = strlen(text),
        .raw = text,
        .raw_len = strlen(text),
        .chat = true,
        .calls = calls,
        .n_calls = (size_t)rp->n_calls,
        .parse_error = rp->parse_error,
        .finish_reason = rp->n_calls ? "tool_calls" : "stop",
        .usage = {.prompt_tokens = 10, .completion_tokens = rp->tokens ? rp->tokens : 3},
    };
    struct ag_err err = {0};
    if (M.cancelled) {
        ag_err_set(&err, AG_ECANCELLED, "cancelled");
        cb->done(ud, &res, &err);
        return;
    }
    if (rp->err) {
        ag_err_set(&err, rp->err, "scripted failure %d", rp->err);
        cb->done(ud, &res, &err);
        return;
    }
    if (*text) cb->delta(ud, text, strlen(text));
    cb->done(ud, &res, NULL);
}

static const struct reply overflow_reply = {.err = AG_ECTXOVERFLOW};

static int model_generate(void *ctx, struct eng_gen_req *req, const char *name,
                          const struct engd_gen_cb *cb, void *ud, uint64_t *id, struct ag_err *err)
{
    (void)ctx, (void)name;
    M.n_requests++;
    M.last_n_msgs = req->chat.n_msgs;
    ag_buf_reset(&M.last);
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < req->chat.n_msgs; i++)
        ag_buf_printf(&M.last, "%s:%s\n", roles[req->chat.msgs[i].role],
                      req->chat.msgs[i].content ? req->chat.msgs[i].content : "");
    ag_buf_putc(&M.last, '\0');
    M.tools[0] = '\0';
    for (size_t i = 0; i < req->chat.n_tools; i++)
        snprintf(M.tools + strlen(M.tools), sizeof(M.tools) - strlen(M.tools), "%s%s", i ? "," : "",
                 req->chat.tools[i].name);
    const struct reply *rp;
    if (M.overflow_over && req->chat.n_msgs > M.overflow_over) {
        rp = &overflow_reply;
    } else {
        if (M.i >= M.n) return ag_err_set(err, AG_EINTERNAL, "the script has no more replies");
        rp = &M.v[M.i++];
    }
    M.cur = rp;
    M.cb = cb;
    M.ud = ud;
    M.busy = true;
    M.cancelled = false;
    *id = M.next_id + 1;
    uv_timer_start(&M.timer, model_deliver, (uint64_t)rp->delay_ms, 0);
    return 0;
}

static void model_cancel(void *ctx, uint64_t id)
{
    (void)ctx, (void)id;
    if (!M.busy || M.cancelled) return;
    M.cancelled = true;
    M.n_cancels++;
    uv_timer_start(&M.timer, model_deliver, 0, 0); /* the engine answers within a step */
}

/* ---- test tools ---- */

static uv_timer_t slow_timer;
static struct tool_call *slow_call;
static int slow_cancels;

static int echo_start(struct tool_call *call, struct ag_err *err)
{
    (void)err;
    tool_call_done(call, true, tool_arg_str(call, "text", ""));
    return 0;
}

static int boom_start(struct tool_call *call, struct ag_err *err)
{
    (void)call;
    return ag_err_set(err, AG_ETOOL, "it broke");
}

static int fails_start(struct tool_call *call, struct ag_err *err)
{
    (void)err;
    tool_call_fail(call, "the disk is full");
    return 0;
}

static void slow_fire(uv_timer_t *t)
{
    (void)t;
    struct tool_call *c = slow_call;
    slow_call = NULL;
    tool_call_done(c, true, "slow result");
}

static int slow_start(struct tool_call *call, struct ag_err *err)
{
    (void)err;
    slow_call = call;
    uv_timer_start(&slow_timer, slow_fire, 5000, 0);
    return 0;
}

static void slow_cancel(struct tool_call *call)
{
    (void)call;
    slow_cancels++;
    uv_timer_stop(&slow_timer);
    struct tool_call *c = slow_call;
    slow_call = NULL;
    if (c) tool_call_fail(c, "cancelled");
}

#define TEXT_ARG                                                                                   \
    "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"}},\"required\":["          \
    "\"text\"],\"additionalProperties\":false}"
#define NO_ARGS "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}"

static const struct tool_ops echo_ops = {echo_start, NULL}, boom_ops = {boom_start, NULL},
                             fails_ops = {fails_start, NULL}, slow_ops = {slow_start, slow_cancel};
static const struct tool_def echo_tool = {"echo", "Echo the text.", TEXT_ARG, &echo_ops, NULL},
                             boom_tool = {"boom", "Breaks at once.", NO_ARGS, &boom_ops, NULL},
                             fails_tool = {"fails", "Reports a failure.", NO_ARGS, &fails_ops,
                                           NULL},
                             slow_tool = {"slow", "Takes 5 s.", NO_ARGS, &slow_ops, NULL};
static const struct tool_def *const test_tools[] = {&echo_tool, &boom_tool, &fails_tool,
                                                    &slow_tool};

/* ---- the harness ---- */

static uv_loop_t loop;
static struct agentd D;
static char dir[64];

/* What one run did, as its creator saw it. */
struct outcome {
    bool started, ended, start_failed;
    struct ag_err start_err;
    struct run *r;
    char uid[32], session[32];
    enum run_end end;
    char reason[32];
    char output[256];
    char error[256];
    int steps, tool_calls, dropped;
    struct ag_buf events; /* "type ok output\n" per event */
};

static void w_started(void *ud, struct run *r, const struct ag_err *err)
{
    struct outcome *o = ud;
    o->started = true;
    if (err) {
        o->start_failed = true;
        o->start_err = *err;
        o->ended = true;
        o->r = NULL;
        return;
    }
    snprintf(o->uid, sizeof(o->uid), "%s", r->uid);
    snprintf(o->session, sizeof(o->session), "%s", r->session);
}

static void w_event(void *ud, const struct run *r, const struct ev *e)
{
    (void)r;
    struct outcome *o = ud;
    struct proto_val *p = proto_parse(e->payload, strlen(e->payload), NULL);
    ag_buf_printf(&o->events, "%s", e->type);
    if (strcmp(e->type, "tool.result") == 0)
        ag_buf_printf(&o->events, " %s %s", proto_bool(proto_get(p, "ok"), false) ? "ok" : "FAIL",
                      proto_get_str(p, "output"));
    if (strcmp(e->type, "mcp.server") == 0)
        ag_buf_printf(&o->events, " %s %s", proto_get_str(p, "state"),
                      proto_get_str(p, "message") ? proto_get_str(p, "message") : "");
    ag_buf_putc(&o->events, '\n');
    proto_val_free(p);
}

static void w_ended(void *ud, struct run *r)
{
    struct outcome *o = ud;
    o->ended = true;
    o->end = r->end;
    snprintf(o->reason, sizeof(o->reason), "%s", r->end_reason);
    snprintf(o->output, sizeof(o->output), "%s", r->output ? r->output : "");
    snprintf(o->error, sizeof(o->error), "%s", r->end_error ? r->end_error : "");
    o->steps = r->steps;
    o->tool_calls = r->n_tool_calls;
    o->dropped = r->dropped;
    o->r = NULL;
}

static const struct run_watch watch = {w_started, w_event, w_ended};

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until cond holds or 10 s pass; false on the deadline. */
static bool spin_until(bool *cond)
{
    bool late = false;
    uv_timer_t deadline;
    uv_timer_init(&loop, &deadline);
    deadline.data = &late;
    uv_timer_start(&deadline, on_deadline, 10000, 0);
    while (!*cond && !late) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&deadline);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *cond;
}

static void script(const struct reply *v, size_t n)
{
    M.v = v;
    M.n = n;
    M.i = 0;
    M.overflow_over = 0;
    M.n_requests = M.n_cancels = 0;
}

/* Starts a run of agent (or continues session) with input; the outcome fills in as it goes. */
static struct run *start(struct outcome *o, const char *agent, const char *session,
                         const char *input)
{
    memset(o, 0, sizeof(*o));
    ag_buf_init(&o->events);
    struct run_opts opts = {
        .agent = agent, .session = session, .input = input, .max_tool_calls = -1};
    struct ag_err err = {0};
    o->r = runner_create(D.runner, &opts, &watch, o, &err);
    CHECKF(o->r != NULL, "%s", err.msg);
    return o->r;
}

/* Runs agent on input to the end. */
static void run_to_end(struct outcome *o, const char *agent, const char *session, const char *input)
{
    if (!start(o, agent, session, input)) return;
    CHECKF(spin_until(&o->ended), "the run did not end; events:\n%s",
           o->events.data ? o->events.data : "");
}

static bool has(const struct outcome *o, const char *s)
{
    return o->events.len && memmem(o->events.data, o->events.len, s, strlen(s)) != NULL;
}

static void done(struct outcome *o)
{
    ag_buf_release(&o->events);
}

#define CALL(name, args)                                                                           \
    {                                                                                              \
        name, args                                                                                 \
    }

/* ---- tests ---- */

static void test_answer(void)
{
    static const struct reply s[] = {{.text = "Paris."}};
    script(s, 1);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "What is the capital of France?");
    CHECK(o.end == RUN_COMPLETED);
    CHECK_STR(o.reason, "answer");
    CHECK_STR(o.output, "Paris.");
    CHECK(o.steps == 1 && o.tool_calls == 0);
    CHECK(has(&o, "run.created\n") && has(&o, "text.delta\n") && has(&o, "run.completed\n"));
    /* The model saw the instructions and the question. */
    CHECK(strstr(M.last.data, "system:Answer briefly.") != NULL);
    CHECK(strstr(M.last.data, "user:What is the capital of France?") != NULL);
    done(&o);
}

static void test_tool_call(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("echo", "{\"text\":\"hello\"}")}, .n_calls = 1},
        {.text = "It said hello."},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Echo hello.");
    CHECK(o.end == RUN_COMPLETED);
    CHECK_STR(o.output, "It said hello.");
    CHECK(o.steps == 2 && o.tool_calls == 1);
    CHECK(has(&o, "tool_call.done\ntool.result ok hello\n"));
    CHECK(strstr(M.last.data, "tool:hello") != NULL); /* the result went back to the model */
    done(&o);
}

/* A tool's output that is not valid UTF-8 (a sandboxed MCP server can send any bytes) reaches
 * the events and the model with U+FFFD for each byte that starts no character. */
static void test_tool_output_utf8(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("echo", "{\"text\":\"a\xC0\xAF\xED\xA0\x80z\"}")}, .n_calls = 1},
        {.text = "Done."},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Echo it.");
    CHECK(o.end == RUN_COMPLETED);
    CHECKF(
        has(&o, "tool.result ok a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\n"),
        "%s", o.events.data ? o.events.data : "");
    CHECK(strstr(M.last.data,
                 "tool:a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\n") != NULL);
    done(&o);
}

static void test_bad_call(void)
{
    static const struct reply s[] = {
        {.text = "<tool_call>{\"name\": echo", .parse_error = "expected a JSON object"},
        {.text = "Sorry."},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Echo.");
    CHECK(o.end == RUN_COMPLETED && o.steps == 2);
    CHECK(has(&o, "tool.result FAIL Your tool call could not be parsed: expected a JSON object"));
    CHECK(strstr(M.last.data, "user:Your tool call could not be parsed") != NULL);
    done(&o);
}

static void test_unknown_tool_and_bad_args(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("nope", "{}"), CALL("echo", "{\"txt\":1}")}, .n_calls = 2},
        {.text = "ok"},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Go.");
    CHECK(o.end == RUN_COMPLETED && o.tool_calls == 2);
    CHECK(has(&o, "tool.result FAIL error: there is no tool named 'nope'; the tools are: echo, "
                  "boom, fails, slow, now"));
    CHECK(has(&o, "tool.result FAIL error: invalid arguments for echo"));
    done(&o);
}

static void test_tool_errors(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("boom", "{}"), CALL("fails", "{}"), CALL("now", "")}, .n_calls = 3},
        {.text = "ok"},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Go.");
    CHECK(o.end == RUN_COMPLETED && o.tool_calls == 3);
    CHECK(has(&o, "tool.result FAIL error: it broke\n"));
    CHECK(has(&o, "tool.result FAIL error: the disk is full\n"));
    CHECK(has(&o, "tool.result ok local: ")); /* the built-in now tool, one row */
    done(&o);
}

static void test_max_steps(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("echo", "{\"text\":\"1\"}")}, .n_calls = 1},
        {.calls = {CALL("echo", "{\"text\":\"2\"}")}, .n_calls = 1},
        {.calls = {CALL("echo", "{\"text\":\"3\"}")}, .n_calls = 1},
    };
    script(s, 3);
    struct outcome o;
    run_to_end(&o, "steps2", NULL, "Loop.");
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "max_steps");
    CHECK(o.steps == 2 && M.n_requests == 2);
    CHECK(strstr(o.error, "limits.max_steps") != NULL);
    done(&o);
}

static void test_max_tool_calls(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("echo", "{\"text\":\"1\"}"), CALL("echo", "{\"text\":\"2\"}")},
         .n_calls = 2},
    };
    script(s, 1);
    struct outcome o;
    run_to_end(&o, "calls1", NULL, "Twice.");
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "max_tool_calls");
    CHECK(o.tool_calls == 1);
    CHECK(has(&o, "tool.result ok 1\n") && !has(&o, "tool.result ok 2\n"));
    done(&o);
}

static void test_max_tokens(void)
{
    static const struct reply s[] = {
        {.calls = {CALL("echo", "{\"text\":\"1\"}")}, .n_calls = 1, .tokens = 10},
        {.text = "never"},
    };
    script(s, 2);
    struct outcome o;
    run_to_end(&o, "tokens10", NULL, "Go.");
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "max_tokens");
    CHECK(M.n_requests == 1);
    done(&o);
}

static void test_max_wall_s(void)
{
    static const struct reply s[] = {{.calls = {CALL("slow", "{}")}, .n_calls = 1}};
    script(s, 1);
    slow_cancels = 0;
    struct outcome o;
    run_to_end(&o, "wall1", NULL, "Wait.");
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "max_wall_s");
    CHECK(slow_cancels == 1); /* the tool was stopped through its row's cancel */
    done(&o);
}

static void test_cancel_starting(void)
{
    static const struct reply s[] = {{.text = "never"}};
    script(s, 1);
    struct outcome o;
    struct run *r = start(&o, "plain", NULL, "Hi.");
    if (!r) return;
    run__cancel(r); /* before the store answered */
    CHECK(spin_until(&o.ended));
    CHECK(o.end == RUN_CANCELLED);
    CHECK(M.n_requests == 0);
    done(&o);
}

static void on_cancel_tick(uv_timer_t *t)
{
    struct outcome *o = t->data;
    struct ag_err err = {0};
    CHECKF(runner_cancel(D.runner, o->uid, &err) == 0, "%s", err.msg);
}

static void cancel_after(struct outcome *o, int ms)
{
    static uv_timer_t t;
    static bool init;
    if (!init) uv_timer_init(&loop, &t), init = true;
    t.data = o;
    uv_timer_start(&t, on_cancel_tick, (uint64_t)ms, 0);
}

static void test_cancel_generating(void)
{
    static const struct reply s[] = {{.text = "slow answer", .delay_ms = 3000}};
    script(s, 1);
    struct outcome o;
    if (!start(&o, "plain", NULL, "Hi.")) return;
    cancel_after(&o, 50);
    CHECK(spin_until(&o.ended));
    CHECK(o.end == RUN_CANCELLED);
    CHECK_STR(o.reason, "cancelled");
    CHECK(M.n_cancels == 1);
    done(&o);
}

static void test_cancel_in_tool(void)
{
    static const struct reply s[] = {{.calls = {CALL("slow", "{}")}, .n_calls = 1},
                                     {.text = "never"}};
    script(s, 2);
    slow_cancels = 0;
    struct outcome o;
    if (!start(&o, "plain", NULL, "Wait.")) return;
    cancel_after(&o, 100);
    CHECK(spin_until(&o.ended));
    CHECK(o.end == RUN_CANCELLED);
    CHECK(slow_cancels == 1 && M.n_requests == 1);
    struct ag_err err = {0};
    CHECK(runner_cancel(D.runner, o.uid, &err) == AG_ENOTFOUND); /* over: nothing to cancel */
    done(&o);
}

static void test_history_dropped(void)
{
    static const struct reply s[] = {{.text = "first answer"}, {.text = "second answer"}};
    script(s, 2);
    struct outcome a, b;
    run_to_end(&a, "plain", NULL, "First question.");
    CHECK(a.end == RUN_COMPLETED);
    /* system + 2 earlier messages + the new input = 4: over 2, the earlier turn must go. */
    M.overflow_over = 2;
    run_to_end(&b, "plain", a.session, "Second question.");
    CHECK(b.end == RUN_COMPLETED);
    CHECK_STR(b.output, "second answer");
    CHECK(b.dropped == 2);
    CHECK(M.last_n_msgs == 2 && strstr(M.last.data, "First question") == NULL);
    done(&a);
    done(&b);
}

static void test_busy_session(void)
{
    static const struct reply s[] = {{.text = "one"}, {.text = "slow", .delay_ms = 3000}};
    script(s, 2);
    struct outcome a, b;
    run_to_end(&a, "plain", NULL, "One.");
    if (!start(&b, "plain", a.session, "Two.")) return;
    struct run_opts opts = {.session = a.session, .input = "Three.", .max_tool_calls = -1};
    struct ag_err err = {0};
    struct outcome c = {0};
    CHECK(runner_create(D.runner, &opts, &watch, &c, &err) == NULL);
    CHECK(err.code == AG_EBUSY && strstr(err.msg, "has a run in progress"));
    run__cancel(b.r);
    CHECK(spin_until(&b.ended));
    done(&a);
    done(&b);
}

static void test_unknown_agent(void)
{
    script(NULL, 0);
    struct outcome o;
    if (!start(&o, "ghost", NULL, "Hi.")) return;
    CHECK(spin_until(&o.ended));
    CHECK(o.start_failed && o.start_err.code == AG_ENOTFOUND);
    done(&o);
}

static void test_engine_error(void)
{
    static const struct reply s[] = {{.err = AG_EIO}};
    script(s, 1);
    struct outcome o;
    run_to_end(&o, "plain", NULL, "Hi.");
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "engine");
    done(&o);
}

static void test_shutdown(void)
{
    static const struct reply s[] = {{.text = "slow", .delay_ms = 3000}};
    script(s, 1);
    struct outcome o;
    if (!start(&o, "plain", NULL, "Hi.")) return;
    while (!o.started) uv_run(&loop, UV_RUN_ONCE);
    runner_drain(&D);
    CHECK(spin_until(&o.ended));
    CHECK(o.end == RUN_FAILED);
    CHECK_STR(o.reason, "shutdown");
    done(&o);
}

/* ---- MCP servers (the real SDK server of tests/mcp/server.py) ---- */

static char PY[512]; /* a python with the mcp SDK, or "" */

static void test_mcp_tools(void)
{
    if (!PY[0]) SKIP("no python with the mcp SDK (run scripts/deps.sh)");
    static const struct reply s[] = {
        {.calls = {CALL("demo.add", "{\"a\":2,\"b\":3}"), CALL("demo.fail", "{}")}, .n_calls = 2},
        {.calls = {CALL("demo.add", "{\"a\":\"x\"}")}, .n_calls = 1},
        {.text = "2 + 3 = 5"},
    };
    script(s, 3);
    struct outcome o;
    run_to_end(&o, "mcp", NULL, "What is 2 + 3?");
    CHECKF(o.end == RUN_COMPLETED, "%s %s\n%s", o.reason, o.error, o.events.data);
    CHECK_STR(o.output, "2 + 3 = 5");
    /* Offered beside the built-ins, as server.tool, and only the allowed ones. */
    CHECKF(strstr(M.tools, "echo,") && strstr(M.tools, "demo.add") &&
               strstr(M.tools, "demo.fail") && !strstr(M.tools, "demo.sleep"),
           "%s", M.tools);
    CHECKF(has(&o, "tool.result ok 5\n"), "%s", o.events.data);
    CHECKF(has(&o, "tool.result FAIL "), "%s", o.events.data); /* isError from the server */
    CHECKF(has(&o, "tool.result FAIL error: invalid arguments for demo.add"), "%s", o.events.data);
    done(&o);

    /* The next run of the agent reuses the running server. */
    static const struct reply s2[] = {
        {.calls = {CALL("demo.add", "{\"a\":40,\"b\":2}")}, .n_calls = 1}, {.text = "42"}};
    script(s2, 2);
    run_to_end(&o, "mcp", NULL, "40 + 2?");
    CHECK(o.end == RUN_COMPLETED && has(&o, "tool.result ok 42\n"));
    CHECK(!has(&o, "mcp.server"));
    done(&o);
}

static void test_mcp_server_missing(void)
{
    static const struct reply s[] = {{.text = "without it"}};
    script(s, 1);
    struct outcome o;
    run_to_end(&o, "mcpgone", NULL, "Hi.");
    CHECK(o.end == RUN_COMPLETED);
    CHECKF(has(&o, "mcp.server unavailable MCP server 'gone' is unavailable"), "%s", o.events.data);
    CHECK(strstr(M.tools, "gone.") == NULL);
    done(&o);
}

/* ---- set-up ---- */

static bool setup(void)
{
    struct ag_err err = {0};
    snprintf(dir, sizeof(dir), "/tmp/agentd-runner-XXXXXX");
    if (!mkdtemp(dir)) return false;
    char db[128];
    snprintf(db, sizeof(db), "%s/agentd.db", dir);
    struct mem_store *st;
    if (mem_store_open(db, &st, &err) != 0) return printf("store: %s\n", err.msg), false;
    static const char *const agents[][2] = {
        {"plain", "{}"},
        {"steps2", "{\"max_steps\":2}"},
        {"calls1", "{\"max_tool_calls\":1}"},
        {"tokens10", "{\"max_tokens\":10}"},
        {"wall1", "{\"max_wall_s\":1}"},
    };
    for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
        char *spec = ag_asprintf("{\"name\":\"%s\",\"instructions\":\"Answer briefly.\",\"tools\":"
                                 "[\"echo\",\"boom\",\"fails\",\"slow\",\"now\",{\"name\":"
                                 "\"off\",\"enabled\":false}],\"limits\":%s}",
                                 agents[i][0], agents[i][1]);
        int rc = mem_agent_create(st, agents[i][0], spec, NULL, &err);
        free(spec);
        if (rc != 0) return printf("agent: %s\n", err.msg), false;
    }
    const char *py = getenv("AGENTD_TEST_PYTHON");
    char cwd[256];
    if (py && *py)
        snprintf(PY, sizeof(PY), "%s", py);
    else if (access(".venv-test/bin/python", X_OK) == 0 && getcwd(cwd, sizeof(cwd)))
        snprintf(PY, sizeof(PY), "%s/.venv-test/bin/python", cwd);
    char *spec = ag_asprintf(
        "{\"name\":\"mcp\",\"tools\":[\"echo\"],\"mcp\":[{\"name\":\"demo\",\"command\":"
        "\"%s\",\"args\":[\"tests/mcp/server.py\"],\"tools\":[\"add\",\"fail\"],"
        "\"timeout_ms\":20000}]}",
        PY[0] ? PY : "python3");
    int rc = mem_agent_create(st, "mcp", spec, NULL, &err);
    free(spec);
    rc = rc ? rc
            : mem_agent_create(st, "mcpgone",
                               "{\"name\":\"mcpgone\",\"mcp\":[{\"name\":\"gone\",\"command\":"
                               "\"/nonexistent/mcp-server\"}]}",
                               NULL, &err);
    if (rc != 0) return printf("agent: %s\n", err.msg), false;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &M.timer);
    uv_timer_init(&loop, &slow_timer);
    ag_buf_init(&M.last);
    D.loop = &loop;
    if (storeq_start(&loop, st, &D.sq, &err) != 0) return printf("storeq: %s\n", err.msg), false;
    mcpd_start(&D);
    runner_start(&D);
    D.runner->model = (struct run_model){model_generate, model_cancel, NULL};
    D.runner->extra = test_tools;
    D.runner->n_extra = sizeof(test_tools) / sizeof(test_tools[0]);
    return true;
}

static void teardown(void)
{
    mcpd_stop(&D);
    uv_run(&loop, UV_RUN_NOWAIT);
    runner_stop(&D);
    storeq_stop(D.sq);
    uv_close((uv_handle_t *)&M.timer, NULL);
    uv_close((uv_handle_t *)&slow_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    ag_buf_release(&M.last);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) printf("could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    ag_log_set_level(AG_LOG_ERROR);
    if (!setup()) {
        printf("set-up failed\n");
        return 1;
    }
    RUN(test_answer);
    RUN(test_tool_call);
    RUN(test_tool_output_utf8);
    RUN(test_bad_call);
    RUN(test_unknown_tool_and_bad_args);
    RUN(test_tool_errors);
    RUN(test_max_steps);
    RUN(test_max_tool_calls);
    RUN(test_max_tokens);
    RUN(test_max_wall_s);
    RUN(test_cancel_starting);
    RUN(test_cancel_generating);
    RUN(test_cancel_in_tool);
    RUN(test_history_dropped);
    RUN(test_busy_session);
    RUN(test_unknown_agent);
    RUN(test_engine_error);
    RUN(test_mcp_tools);
    RUN(test_mcp_server_missing);
    RUN(test_shutdown);
    teardown();
    return TEST_END();
}
