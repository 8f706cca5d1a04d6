/*
 * test_runs.c - agent runs end to end: the real daemon, the real model (Gemma 3 270M, the agent
 * model: it writes usable tool arguments where SmolLM2-135M does not), the real sandbox and the
 * real SQLite file. A run's events are checked for order, for what a resubscribing client
 * receives, and for what survives kill -9.
 */
#include <limits.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>

#include "../tools/tools.h"
#include "daemon_util.h"
#include "http_server.h"
#include "test.h"

#define MODEL "models/gemma-3-270m-q4_k_m.gguf"

static struct tdaemon D;
static bool UP;
static char AGENTS[320];
static const char *START_ARGS[16];
static struct http_server H;
static bool MCP_OK; /* .venv-test has the MCP SDK: the mcpcalc agent can use its server */

#define NEED()                                                                                     \
    do {                                                                                           \
        if (!UP) SKIP("the daemon did not start with " MODEL " (run `make model MODEL=all`)");     \
    } while (0)

/* A run's stream: its events in arrival order, then the response. */
struct stream {
    struct proto_val *ev[512];
    int n;
    struct proto_val *resp;
};

static void stream_free(struct stream *s)
{
    for (int i = 0; i < s->n; i++) proto_val_free(s->ev[i]);
    proto_val_free(s->resp);
    memset(s, 0, sizeof(*s));
}

/* Reads until the response to id (or, with id 0, until a terminal event or stop_after events). */
static bool collect(struct tconn *c, int id, struct stream *s, int stop_after)
{
    for (;;) {
        struct proto_val *m = tconn_read(c, 180000);
        if (!m) return false;
        if (proto_get(m, "id")) {
            if (proto_int(proto_get(m, "id"), -1) == id) {
                s->resp = m;
                return true;
            }
            proto_val_free(m);
            continue;
        }
        struct proto_val *p = proto_val_dup(proto_get(m, "params"));
        proto_val_free(m);
        if (s->n == 512) { /* keep the first 511 and the last */
            proto_val_free(s->ev[511]);
            s->n = 511;
        }
        s->ev[s->n++] = p;
        const char *t = proto_get_str(p, "type");
        if (id == 0 && t && strncmp(t, "run.", 4) == 0 && strcmp(t, "run.created") != 0)
            return true;
        if (stop_after && s->n >= stop_after) return true;
    }
}

static bool send_req(struct tconn *c, int id, const char *method, const char *params)
{
    char *line = ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":%s}\n",
                             id, method, params);
    bool ok = tconn_send(c, line);
    free(line);
    return ok;
}

static const struct proto_val *find_ev(const struct stream *s, const char *type)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(proto_get_str(s->ev[i], "type"), type) == 0) return s->ev[i];
    return NULL;
}

/* Events carry seq 1, 2, ... with no gap and no repeat. */
static bool seqs_contiguous(const struct stream *s, int64_t first)
{
    for (int i = 0; i < s->n; i++)
        if (proto_int(proto_get(s->ev[i], "seq"), -1) != first + i) return false;
    return true;
}

static struct proto_val *call(const char *method, const char *params)
{
    struct tconn c;
    if (!tconn_open(&c, D.sock)) return NULL;
    struct proto_val *r = tcall(&c, 7, method, params);
    tconn_close(&c);
    return r;
}

/* ---- tests ---- */

/* The example coder agent, as shipped, runs code to answer. */
static void test_example_coder(void)
{
    NEED();
    char abs[4096], *q;
    CHECK(realpath("examples/coder.agent.yaml", abs));
    q = ag_asprintf("{\"path\":\"%s\"}", abs);
    struct proto_val *r = call("agent.create", q);
    free(q);
    CHECKF(proto_get(r, "result"), "%s", resp_error_msg(r));
    proto_val_free(r);
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"coder\",\"input\":\"What is 12345 * 6789?\",\"stream\":true,"
                   "\"max_steps\":1}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *t = find_ev(&s, "tool.result");
    CHECKF(t && strstr(proto_get_str(t, "output"), "83810205"), "%s",
           t ? proto_get_str(t, "output") : resp_error_msg(s.resp));
    stream_free(&s);
    tconn_close(&c);
}

/* Asked for a product, the agent calls python; the tool's real output is in the log and in the
 * answer, and the session keeps the whole exchange. */
static void test_python_tool_answer(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"What is 12345 * 6789?\",\"stream\":true,"
                   "\"tool_choice\":\"python\"}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *res = proto_get(s.resp, "result");
    CHECKF(res, "%s", resp_error_msg(s.resp));
    CHECK(seqs_contiguous(&s, 1));
    CHECK(strcmp(proto_get_str(s.ev[0], "type"), "run.created") == 0);
    const struct proto_val *call_ev = find_ev(&s, "tool_call.done"),
                           *r = find_ev(&s, "tool.result");
    CHECK(call_ev && strcmp(proto_get_str(call_ev, "name"), "python") == 0);
    CHECKF(r && strstr(proto_get_str(r, "output"), "83810205"), "%s",
           r ? proto_get_str(r, "output") : "no tool.result");
    CHECK(find_ev(&s, "text.delta"));
    /* The call arrives parsed, not as text: no delta carries its markup. */
    for (int i = 0; i < s.n; i++)
        if (strcmp(proto_get_str(s.ev[i], "type"), "text.delta") == 0)
            CHECKF(!strstr(proto_get_str(s.ev[i], "text"), "tool_call") &&
                       !strstr(proto_get_str(s.ev[i], "text"), "12345 * 6789\""),
                   "delta %s", proto_get_str(s.ev[i], "text"));
    const struct proto_val *done = s.n ? s.ev[s.n - 1] : NULL;
    CHECK(done && strcmp(proto_get_str(done, "type"), "run.completed") == 0);
    CHECK(strcmp(proto_get_str(res, "state"), "completed") == 0);
    CHECKF(strstr(proto_get_str(res, "output"), "83810205"), "answer: %s",
           proto_get_str(res, "output"));
    CHECK(proto_int(proto_get(res, "last_seq"), 0) == s.n);
    const struct proto_val *tm = proto_get(done, "timings");
    CHECK(proto_num(proto_get(tm, "tool_ms"), 0) > 0 &&
          proto_num(proto_get(tm, "decode_ms"), 0) > 0);

    /* The session holds user, assistant (call), tool, assistant (answer). */
    char *q = ag_asprintf("{\"session\":\"%s\"}", proto_get_str(res, "session_id"));
    struct proto_val *ses = call("session.get", q);
    free(q);
    const struct proto_val *msgs = proto_get(proto_get(ses, "result"), "messages");
    CHECK(proto_len(msgs) == 4);
    CHECK(strcmp(proto_get_str(proto_at(msgs, 2), "role"), "tool") == 0 &&
          proto_get_str(proto_at(msgs, 2), "tool_call_id"));
    CHECK(proto_get(proto_at(msgs, 1), "tool_calls"));
    proto_val_free(ses);
    stream_free(&s);
    tconn_close(&c);
}

/* A client that drops off mid-run and resubscribes with after_seq gets exactly what it missed;
 * a subscription after the end replays the stored log, identical to the live one. */
static void test_resubscribe(void)
{
    NEED();
    struct tconn a, b;
    CHECK(tconn_open(&a, D.sock));
    CHECK(send_req(&a, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"Write three sentences about the sea.\","
                   "\"stream\":true,\"background\":true,\"tool_choice\":\"none\"}"));
    struct stream s1 = {0};
    CHECK(collect(&a, 1, &s1, 0));
    const char *rid = proto_get_str(proto_get(s1.resp, "result"), "run_id");
    CHECK(rid);
    if (!rid) return;
    char run_id[64];
    snprintf(run_id, sizeof(run_id), "%s", rid);
    /* A few events, then the client goes away. */
    struct stream s2 = {0};
    CHECK(collect(&a, 0, &s2, 3));
    int64_t last = proto_int(proto_get(s2.ev[s2.n - 1], "seq"), 0);
    tconn_close(&a);
    usleep(100000);

    CHECK(tconn_open(&b, D.sock));
    char *p = ag_asprintf("{\"run_id\":\"%s\",\"after_seq\":%lld}", run_id, (long long)last);
    CHECK(send_req(&b, 2, "run.subscribe", p));
    free(p);
    struct stream s3 = {0};
    CHECK(collect(&b, 2, &s3, 0)); /* replayed events, then the answer */
    CHECK(proto_get(s3.resp, "result"));
    if (proto_bool(proto_get(proto_get(s3.resp, "result"), "live"), false)) {
        struct stream s4 = {0};
        CHECK(collect(&b, 0, &s4, 0));
        for (int i = 0; i < s4.n && s3.n < 512; i++) s3.ev[s3.n++] = s4.ev[i];
        s4.n = 0;
        stream_free(&s4);
    }
    CHECKF(s3.n > 0 && seqs_contiguous(&s3, last + 1), "%d events after %lld", s3.n,
           (long long)last);
    const char *t = s3.n ? proto_get_str(s3.ev[s3.n - 1], "type") : "";
    CHECK(strcmp(t, "run.completed") == 0);
    tconn_close(&b);

    /* After the end: the stored log from the start, in order, ending the same way. */
    CHECK(tconn_open(&b, D.sock));
    p = ag_asprintf("{\"run_id\":\"%s\"}", run_id);
    CHECK(send_req(&b, 3, "run.subscribe", p));
    free(p);
    struct stream s5 = {0};
    CHECK(collect(&b, 3, &s5, 0));
    CHECK(!proto_bool(proto_get(proto_get(s5.resp, "result"), "live"), true));
    CHECK(seqs_contiguous(&s5, 1) && s5.n == (int)(last + s3.n));
    CHECK(s5.n && proto_equal(s5.ev[s5.n - 1], s3.ev[s3.n - 1]));
    tconn_close(&b);
    stream_free(&s1);
    stream_free(&s2);
    stream_free(&s3);
    stream_free(&s5);
}

/* Cancelling while the model writes ends the run at once with run.cancelled. */
static void test_cancel_mid_generation(void)
{
    NEED();
    struct tconn a;
    CHECK(tconn_open(&a, D.sock));
    CHECK(send_req(&a, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"Write a very long story about a dragon.\","
                   "\"stream\":true,\"background\":true,\"tool_choice\":\"none\"}"));
    struct stream s = {0};
    CHECK(collect(&a, 1, &s, 0));
    const char *rid = proto_get_str(proto_get(s.resp, "result"), "run_id");
    CHECK(rid);
    if (!rid) return;
    CHECK(collect(&a, 0, &s, 3)); /* generation is under way */
    char *p = ag_asprintf("{\"run_id\":\"%s\"}", rid);
    int64_t t0 = ag_now_ms();
    struct proto_val *r = call("run.cancel", p);
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "cancelled"), false));
    proto_val_free(r);
    CHECK(collect(&a, 0, &s, 0));
    int64_t ms = ag_now_ms() - t0;
    CHECK(strcmp(proto_get_str(s.ev[s.n - 1], "type"), "run.cancelled") == 0);
    CHECKF(ms < 3000, "cancel took %lld ms", (long long)ms);
    r = call("run.get", p);
    CHECK(strcmp(proto_get_str(proto_get(r, "result"), "state"), "cancelled") == 0);
    proto_val_free(r);
    /* The engine drops the sequence at its next step, which the event may precede (a step
     * under the sanitizers takes a while): it must be gone within two seconds. */
    int64_t running = -1;
    for (int i = 0; i < 100 && running != 0; i++) {
        if (i) usleep(20000);
        r = call("model.status", NULL);
        running = proto_int(proto_get(proto_get(r, "result"), "running"), -1);
        proto_val_free(r);
    }
    CHECKF(running == 0, "model.status running %lld after the cancel", (long long)running);
    free(p);
    stream_free(&s);
    tconn_close(&a);
}

/* Starts a background run whose python call stalls: the session's interpreter gets an audit
 * hook that sleeps on any compile first, so the tool is surely running when the test acts,
 * whatever code the model writes. Returns once the call was made; *pid gets the interpreter's
 * pid, run_id the run, s the events so far (a's connection stays open). */
static bool start_stalled_run(struct tconn *a, struct stream *s, char *run_id, size_t n,
                              int64_t *pid)
{
    struct proto_val *r = call("session.create", "{\"agent\":\"calc\"}");
    const char *sid = proto_get_str(proto_get(r, "result"), "id");
    char ses[64];
    snprintf(ses, sizeof(ses), "%s", sid ? sid : "");
    proto_val_free(r);
    if (!sid) return false;
    char *p =
        ag_asprintf("{\"session\":\"%s\",\"code\":\"import sys, time\\n"
                    "sys.addaudithook(lambda e, a: time.sleep(60) if e == 'compile' else None)\"}",
                    ses);
    r = call("sandbox.exec", p);
    free(p);
    bool ok = proto_get(r, "result") != NULL;
    proto_val_free(r);
    r = call("sandbox.list", NULL);
    const struct proto_val *arr = proto_get(proto_get(r, "result"), "sandboxes");
    for (size_t i = 0; i < proto_len(arr); i++)
        if (strcmp(proto_get_str(proto_at(arr, i), "name"), ses) == 0)
            *pid = proto_int(proto_get(proto_at(arr, i), "pid"), 0);
    proto_val_free(r);
    if (!ok || !tconn_open(a, D.sock)) return false;
    p = ag_asprintf("{\"session\":\"%s\",\"input\":\"What is 2 + 2?\",\"stream\":true,"
                    "\"background\":true,\"tool_choice\":\"python\"}",
                    ses);
    ok = send_req(a, 1, "run.create", p) && collect(a, 1, s, 0);
    free(p);
    const char *rid = proto_get_str(proto_get(s->resp, "result"), "run_id");
    if (!ok || !rid) return false;
    snprintf(run_id, n, "%s", rid);
    while (!find_ev(s, "tool_call.done") && collect(a, 0, s, s->n + 1)) {
    }
    return find_ev(s, "tool_call.done") != NULL;
}

/* Cancelling while a tool runs kills its sandbox: the interpreter is gone, nothing is left. */
static void test_cancel_mid_tool(void)
{
    NEED();
    struct tconn a;
    struct stream s = {0};
    char rid[64];
    int64_t pid = 0;
    CHECK(start_stalled_run(&a, &s, rid, sizeof(rid), &pid));
    CHECK(pid > 0 && kill((pid_t)pid, 0) == 0);
    /* Wait for the call, then a moment inside the tool. */
    usleep(300000);
    char *p = ag_asprintf("{\"run_id\":\"%s\"}", rid);
    int64_t t0 = ag_now_ms();
    struct proto_val *r = call("run.cancel", p);
    free(p);
    proto_val_free(r);
    CHECK(collect(&a, 0, &s, 0));
    CHECK(strcmp(proto_get_str(s.ev[s.n - 1], "type"), "run.cancelled") == 0);
    CHECKF(ag_now_ms() - t0 < 3000, "cancel took %lld ms", (long long)(ag_now_ms() - t0));
    CHECK(!find_ev(&s, "tool.result"));
    /* The interpreter and its sandbox are gone (reaped within a moment). */
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++, usleep(20000)) gone = kill((pid_t)pid, 0) != 0;
    CHECKF(gone, "sandbox pid %lld still alive", (long long)pid);
    stream_free(&s);
    tconn_close(&a);
}

/* A foreground client that goes away mid-stream cancels its run; a second subscriber on the
 * same run is unaffected, and the daemon keeps serving. */
static void test_client_gone(void)
{
    NEED();
    struct tconn a, b;
    CHECK(tconn_open(&a, D.sock));
    CHECK(send_req(&a, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"Write a long story about a fox.\","
                   "\"stream\":true,\"tool_choice\":\"none\"}"));
    struct stream s = {0};
    CHECK(collect(&a, 0, &s, 2));
    const char *rid = s.n ? proto_get_str(s.ev[0], "run_id") : NULL;
    CHECK(rid);
    if (!rid) return;
    char *p = ag_asprintf("{\"run_id\":\"%s\"}", rid);
    CHECK(tconn_open(&b, D.sock));
    CHECK(send_req(&b, 2, "run.subscribe", p));
    struct stream s2 = {0};
    CHECK(collect(&b, 2, &s2, 0));
    tconn_close(&a); /* mid-stream, unread events in flight */
    CHECK(collect(&b, 0, &s2, 0));
    CHECK(s2.n && strcmp(proto_get_str(s2.ev[s2.n - 1], "type"), "run.cancelled") == 0);
    struct proto_val *r = call("ping", NULL);
    CHECK(r && proto_get(r, "result"));
    proto_val_free(r);
    free(p);
    stream_free(&s);
    stream_free(&s2);
    tconn_close(&b);
}

/* Budgets end a run with the reason named; a busy session and bad parameters get typed errors. */
static void test_budgets_and_errors(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"What is 3 * 7?\",\"tool_choice\":\"python\","
                   "\"max_tool_calls\":0}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *res = proto_get(s.resp, "result");
    CHECK(res && strcmp(proto_get_str(res, "state"), "failed") == 0);
    CHECK(res && strcmp(proto_get_str(res, "reason"), "max_tool_calls") == 0);
    CHECK(res && strstr(proto_get_str(res, "error"), "limits.max_tool_calls"));
    stream_free(&s);

    CHECK(send_req(&c, 2, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"What is 3 * 7?\",\"tool_choice\":\"python\","
                   "\"max_steps\":1}"));
    CHECK(collect(&c, 2, &s, 0));
    res = proto_get(s.resp, "result");
    CHECK(res && strcmp(proto_get_str(res, "reason"), "max_steps") == 0);
    CHECK(res && proto_int(proto_get(res, "tool_calls"), 0) == 1);
    char ses[64];
    snprintf(ses, sizeof(ses), "%s", res ? proto_get_str(res, "session_id") : "");
    stream_free(&s);

    /* One run per session. */
    char *p = ag_asprintf("{\"session\":\"%s\",\"input\":\"Write a long poem.\","
                          "\"background\":true,\"tool_choice\":\"none\"}",
                          ses);
    CHECK(send_req(&c, 3, "run.create", p));
    CHECK(collect(&c, 3, &s, 0));
    const char *rid = proto_get_str(proto_get(s.resp, "result"), "run_id");
    struct proto_val *r = call("run.create", p);
    CHECKF(resp_error_code(r) == -32003 && strstr(resp_error_msg(r), ses), "%s", resp_error_msg(r));
    proto_val_free(r);
    free(p);
    p = ag_asprintf("{\"run_id\":\"%s\"}", rid ? rid : "x");
    proto_val_free(call("run.cancel", p));
    free(p);
    stream_free(&s);

    r = call("run.create", "{\"agent\":\"nobody\",\"input\":\"hi\"}");
    CHECK(resp_error_code(r) == -32001 && strstr(resp_error_msg(r), "nobody"));
    proto_val_free(r);
    r = call("run.create", "{\"agent\":\"calc\"}");
    CHECK(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), "input"));
    proto_val_free(r);
    r = call("run.create", "{\"agent\":\"calc\",\"input\":\"x\",\"stream\":\"yes\"}");
    CHECK(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), "stream"));
    proto_val_free(r);
    r = call("run.get", "{\"run_id\":\"run_0000000000000000\"}");
    CHECK(resp_error_code(r) == -32001);
    proto_val_free(r);
    r = call("run.cancel", "{\"run_id\":\"run_0000000000000000\"}");
    CHECK(resp_error_code(r) == -32001);
    proto_val_free(r);
    r = call("run.list", "{\"agent\":\"calc\"}");
    CHECK(proto_len(proto_get(proto_get(r, "result"), "runs")) >= 3);
    proto_val_free(r);
    tconn_close(&c);
}

/* A call that does not parse goes back to the model as an error naming the fault, and the run
 * goes on to its next step. */
static void test_bad_call_reported(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"tiny\",\"input\":\"What is 3 * 7?\",\"stream\":true}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *r = find_ev(&s, "tool.result");
    CHECKF(r && !proto_bool(proto_get(r, "ok"), true) &&
               strstr(proto_get_str(r, "output"), "could not be parsed") &&
               strstr(proto_get_str(r, "output"), "never ends"),
           "%s", r ? proto_get_str(r, "output") : "no tool.result");
    const struct proto_val *res = proto_get(s.resp, "result");
    CHECK(res && proto_int(proto_get(res, "steps"), 0) == 2);
    CHECK(res && strcmp(proto_get_str(res, "reason"), "max_steps") == 0);
    stream_free(&s);
    tconn_close(&c);
}

/* A conversation longer than the context goes on: the oldest turns are left out of the prompt
 * (and say so in the run's end event), while the session keeps every message. */
static void test_long_conversation(void)
{
    NEED();
    struct ag_buf in;
    ag_buf_init(&in);
    ag_buf_puts(&in, "Count the words in this text:");
    for (int i = 0; i < 300; i++) ag_buf_puts(&in, " river stone");
    ag_buf_putc(&in, '\0');
    char ses[64] = "";
    int64_t dropped = 0;
    for (int k = 0; k < 5; k++) {
        char *p =
            ses[0]
                ? ag_asprintf("{\"session\":\"%s\",\"input\":\"%s\",\"stream\":true}", ses, in.data)
                : ag_asprintf("{\"agent\":\"chatty\",\"input\":\"%s\",\"stream\":true}", in.data);
        struct tconn c;
        CHECK(tconn_open(&c, D.sock));
        CHECK(send_req(&c, 1, "run.create", p));
        free(p);
        struct stream s = {0};
        CHECK(collect(&c, 1, &s, 0));
        const struct proto_val *res = proto_get(s.resp, "result");
        CHECKF(res && strcmp(proto_get_str(res, "state"), "completed") == 0, "run %d: %s", k,
               res ? proto_get_str(res, "error") : resp_error_msg(s.resp));
        if (res) snprintf(ses, sizeof(ses), "%s", proto_get_str(res, "session_id"));
        const struct proto_val *end = s.n ? s.ev[s.n - 1] : NULL;
        dropped = proto_int(proto_get(end, "history_dropped"), 0);
        stream_free(&s);
        tconn_close(&c);
    }
    CHECKF(dropped > 0, "the last run left out %lld messages", (long long)dropped);
    char *q = ag_asprintf("{\"session\":\"%s\"}", ses);
    struct proto_val *r = call("session.get", q);
    free(q);
    CHECKF(proto_len(proto_get(proto_get(r, "result"), "messages")) == 10, "%zu messages: %s",
           proto_len(proto_get(proto_get(r, "result"), "messages")), resp_error_msg(r));
    proto_val_free(r);
    ag_buf_release(&in);
}

/* remember and recall are the agent's archival memory; memory.add/search reach the same. */
static void test_memory(void)
{
    NEED();
    struct proto_val *r =
        call("memory.add", "{\"agent\":\"calc\",\"text\":\"The deploy window is Tuesday.\"}");
    CHECK(proto_int(proto_get(proto_get(r, "result"), "id"), 0) > 0);
    proto_val_free(r);
    r = call("memory.add", "{\"agent\":\"calc\",\"text\":\"\"}");
    CHECK(resp_error_code(r) == -32602);
    proto_val_free(r);
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"calc\",\"input\":\"Remember that my cat is called Miso.\","
                   "\"tool_choice\":\"remember\",\"max_steps\":1,\"stream\":true}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *tr = find_ev(&s, "tool.result");
    CHECK(tr && proto_bool(proto_get(tr, "ok"), false));
    stream_free(&s);
    tconn_close(&c);
    r = call("memory.search", "{\"agent\":\"calc\",\"query\":\"what is the cat called? Miso\"}");
    const struct proto_val *m = proto_get(proto_get(r, "result"), "memories");
    /* Any word matches; the best match comes first. */
    CHECKF(proto_len(m) >= 1 && strstr(proto_str(proto_at(m, 0)), "Miso"),
           "%zu memories, first: %s", proto_len(m), proto_str(proto_at(m, 0)));
    proto_val_free(r);
    r = call("memory.search", "{\"agent\":\"calc\",\"query\":\"deploy\"}");
    m = proto_get(proto_get(r, "result"), "memories");
    CHECK(proto_len(m) == 1 && strstr(proto_str(proto_at(m, 0)), "Tuesday"));
    proto_val_free(r);
}

/* Arguments are checked against the tool's schema with messages a model can act on; tools.list
 * shows every tool as the model sees it. */
static void test_tool_args_checked(void)
{
    if (UP) {
        struct proto_val *r = call("tools.list", NULL);
        const struct proto_val *tl = proto_get(proto_get(r, "result"), "tools");
        size_t n;
        tools_all(&n);
        CHECK(proto_len(tl) == n && n >= 8);
        CHECK(strcmp(proto_get_str(proto_at(tl, 0), "name"), "python") == 0);
        const struct proto_val *props =
            proto_get(proto_get(proto_at(tl, 0), "parameters"), "properties");
        CHECK(proto_type(proto_get(props, "code")) == PROTO_OBJECT);
        proto_val_free(r);
    }
    struct ag_err err = {0};
    struct proto_val *a = NULL;
    const struct tool_def *py = tools_find("python"), *wf = tools_find("write_file");
    CHECK(py && wf && !tools_find("nope"));
    CHECK(tools_check_args(py, "{\"code\":\"1+1\"}", &a, &err) == 0 && a);
    proto_val_free(a);
    CHECK(tools_check_args(py, "{\"code\":1}", &a, &err) == AG_EPARAMS && !a);
    CHECKF(strstr(err.msg, "/code") && strstr(err.msg, "string"), "%s", err.msg);
    CHECK(tools_check_args(py, "{\"cod\":\"x\"}", &a, &err) == AG_EPARAMS);
    CHECKF(strstr(err.msg, "code"), "%s", err.msg);
    CHECK(tools_check_args(wf, "{\"path\":\"a\"}", &a, &err) == AG_EPARAMS);
    CHECKF(strstr(err.msg, "content"), "%s", err.msg);
    CHECK(tools_check_args(py, "{\"code\": \"x\"", &a, &err) == AG_EPARAMS);
    CHECKF(strstr(err.msg, "not valid JSON"), "%s", err.msg);
    CHECK(tools_check_args(py, "[1]", &a, &err) == AG_EPARAMS);
    CHECK(tools_check_args(tools_find("list_files"), "", &a, &err) == 0);
    proto_val_free(a);
}

/* The agent reads a page from a local server through fetch_url and uses its text. */
static void test_fetch_tool(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    char *p = ag_asprintf("{\"agent\":\"calc\",\"input\":\"Read http://127.0.0.1:%d/article "
                          "and tell me the secret word.\",\"stream\":true,"
                          "\"tool_choice\":\"fetch_url\"}",
                          H.port);
    CHECK(send_req(&c, 1, "run.create", p));
    free(p);
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *call_ev = find_ev(&s, "tool_call.done"),
                           *r = find_ev(&s, "tool.result");
    CHECKF(call_ev && strstr(proto_get_str(call_ev, "arguments"), "/article"), "%s",
           call_ev ? proto_get_str(call_ev, "arguments") : "no call");
    CHECKF(r && proto_bool(proto_get(r, "ok"), false) &&
               strstr(proto_get_str(r, "output"), "The secret word is PELICAN."),
           "%s", r ? proto_get_str(r, "output") : "no result");
    const struct proto_val *res = proto_get(s.resp, "result");
    CHECKF(res && strstr(proto_get_str(res, "output"), "PELICAN"), "answer: %s",
           res ? proto_get_str(res, "output") : resp_error_msg(s.resp));
    stream_free(&s);
    tconn_close(&c);
}

/* An agent whose only tool comes from an MCP server (the official SDK's server of tests/mcp,
 * started in the sandbox on the agent's first run): the real model calls it, the sum comes back
 * from the server, and the run reports the server's start as an mcp.server event. */
static void test_mcp_tool(void)
{
    NEED();
    if (!MCP_OK) SKIP("no python with the mcp SDK in .venv-test (run scripts/deps.sh)");
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(send_req(&c, 1, "run.create",
                   "{\"agent\":\"mcpcalc\",\"input\":\"Add 19 and 23.\",\"stream\":true}"));
    struct stream s = {0};
    CHECK(collect(&c, 1, &s, 0));
    const struct proto_val *st = find_ev(&s, "mcp.server"),
                           *call_ev = find_ev(&s, "tool_call.done"),
                           *r = find_ev(&s, "tool.result");
    CHECKF(st && strcmp(proto_get_str(st, "state"), "ready") == 0, "%s",
           st ? proto_get_str(st, "message") : "no mcp.server event");
    CHECKF(call_ev && strcmp(proto_get_str(call_ev, "name"), "demo.add") == 0, "%s",
           call_ev ? proto_get_str(call_ev, "name") : "no call");
    if (call_ev && r) {
        const char *a = proto_get_str(call_ev, "arguments");
        struct proto_val *args = a ? proto_parse(a, strlen(a), NULL) : NULL;
        long long want = proto_int(proto_get(args, "a"), 0) + proto_int(proto_get(args, "b"), 0);
        char sum[32];
        snprintf(sum, sizeof(sum), "%lld", want);
        CHECKF(proto_bool(proto_get(r, "ok"), false) &&
                   strcmp(proto_get_str(r, "output"), sum) == 0,
               "args %s: %s", a, proto_get_str(r, "output"));
        proto_val_free(args);
    } else {
        CHECK(r != NULL);
    }
    stream_free(&s);
    tconn_close(&c);
}

/* Runs the agentctl binary; its stdout and stderr go to out. Returns the exit status. */
static int agentctl(const char *args, struct ag_buf *out)
{
    char *cmd = ag_asprintf("%s/agentctl --socket %s %s 2>&1", bin_dir(), D.sock, args);
    FILE *f = popen(cmd, "r");
    free(cmd);
    if (!f) return -1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) ag_buf_append(out, buf, n);
    ag_buf_putc(out, '\0');
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* agentctl run streams the work and exits 0 on an answer; runs lists it; logs replays it. */
static void test_agentctl_run(void)
{
    NEED();
    struct ag_buf out;
    ag_buf_init(&out);
    int rc = agentctl("run calc 'What is 12345 * 6789?'", &out);
    CHECKF(rc == 0 && strstr(out.data, "-> python") && strstr(out.data, "<- python") &&
               strstr(out.data, "83810205") && strstr(out.data, "(session ses_"),
           "rc %d: %s", rc, out.data);
    ag_buf_reset(&out);
    CHECK(agentctl("--json runs calc", &out) == 0);
    struct proto_val *v = proto_parse(out.data, strlen(out.data), NULL);
    const char *rid = proto_get_str(proto_at(proto_get(v, "runs"), 0), "run_id");
    CHECK(rid);
    char *args = ag_asprintf("logs %s", rid ? rid : "none");
    ag_buf_reset(&out);
    CHECK(agentctl(args, &out) == 0);
    CHECKF(strstr(out.data, "-> python") && strstr(out.data, "83810205"), "%s", out.data);
    free(args);
    proto_val_free(v);
    ag_buf_reset(&out);
    CHECK(agentctl("run nobody hello", &out) == 1 && strstr(out.data, "nobody"));
    ag_buf_release(&out);
}

/* kill -9 mid-run: after restart the run is interrupted, its stored events and the session's
 * messages are intact, and a new run works. */
static void test_kill9_mid_run(void)
{
    NEED();
    struct tconn a;
    struct stream s = {0};
    char rid[64], *p;
    int64_t pid = 0;
    CHECK(start_stalled_run(&a, &s, rid, sizeof(rid), &pid));
    const char *sid = s.n ? proto_get_str(s.ev[0], "session_id") : NULL;
    char ses[64];
    snprintf(ses, sizeof(ses), "%s", sid ? sid : "");
    int64_t seen = s.n ? proto_int(proto_get(s.ev[s.n - 1], "seq"), 0) : 0;
    tconn_close(&a);
    tdaemon_kill9(&D);
    UP = tdaemon_start_args(&D, START_ARGS);
    CHECK(UP);
    if (!UP) return;

    p = ag_asprintf("{\"run_id\":\"%s\"}", rid);
    struct proto_val *r = call("run.get", p);
    const struct proto_val *res = proto_get(r, "result");
    CHECKF(res && strcmp(proto_get_str(res, "state"), "interrupted") == 0, "%s",
           res ? proto_get_str(res, "state") : resp_error_msg(r));
    CHECK(res && proto_int(proto_get(res, "last_seq"), 0) == seen + 1);
    proto_val_free(r);
    CHECK(tconn_open(&a, D.sock));
    CHECK(send_req(&a, 2, "run.subscribe", p));
    free(p);
    struct stream s2 = {0};
    CHECK(collect(&a, 2, &s2, 0));
    CHECK(seqs_contiguous(&s2, 1) && s2.n == seen + 1);
    for (int i = 0; i + 1 < s2.n && i < s.n; i++) CHECK(proto_equal(s.ev[i], s2.ev[i]));
    CHECK(s2.n && strcmp(proto_get_str(s2.ev[s2.n - 1], "reason"), "interrupted") == 0);
    tconn_close(&a);
    /* The session kept the user's message and the call. */
    p = ag_asprintf("{\"session\":\"%s\"}", ses);
    r = call("session.get", p);
    free(p);
    const struct proto_val *msgs = proto_get(proto_get(r, "result"), "messages");
    CHECK(proto_len(msgs) == 2 && strcmp(proto_get_str(proto_at(msgs, 0), "role"), "user") == 0);
    proto_val_free(r);
    stream_free(&s);
    stream_free(&s2);
}

static bool write_agent(void)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/calc.agent.yaml", AGENTS);
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fputs("name: calc\n"
          "instructions: You are a helpful assistant. Use the python tool for any computation, "
          "then answer with its result.\n"
          "model:\n  temperature: 0\n  max_tokens: 96\n  tool_choice: required\n"
          "tools: [python, shell, read_file, write_file, list_files, remember, recall, "
          "fetch_url]\n"
          "limits:\n  max_steps: 3\n",
          f);
    if (fclose(f) != 0) return false;
    /* An agent whose step budget cuts every call short: its calls never parse. */
    snprintf(path, sizeof(path), "%s/tiny.agent.yaml", AGENTS);
    f = fopen(path, "w");
    if (!f) return false;
    fputs("name: tiny\n"
          "instructions: Use the python tool for any computation.\n"
          "model:\n  temperature: 0\n  max_tokens: 3\n  tool_choice: required\n"
          "tools: [python]\nlimits:\n  max_steps: 2\n",
          f);
    if (fclose(f) != 0) return false;
    /* A plain chat agent with short answers. */
    snprintf(path, sizeof(path), "%s/chatty.agent.yaml", AGENTS);
    f = fopen(path, "w");
    if (!f) return false;
    fputs("name: chatty\ninstructions: Answer briefly.\n"
          "model:\n  temperature: 0\n  max_tokens: 16\n",
          f);
    if (fclose(f) != 0) return false;
    /* An agent whose one tool is an MCP server's, run in the sandbox. */
    char cwd[300];
    if (!getcwd(cwd, sizeof(cwd))) return false;
    char py[400];
    snprintf(py, sizeof(py), "%s/.venv-test/bin/python", cwd);
    MCP_OK = access(py, X_OK) == 0;
    snprintf(path, sizeof(path), "%s/mcpcalc.agent.yaml", AGENTS);
    f = fopen(path, "w");
    if (!f) return false;
    fprintf(f,
            "name: mcpcalc\n"
            "instructions: Use the add tool to add numbers, then answer with its result.\n"
            "model:\n  temperature: 0\n  max_tokens: 48\n  tool_choice: required\n"
            "limits:\n  max_steps: 2\n"
            "mcp:\n"
            "  - name: demo\n"
            "    command: %s\n"
            "    args: [server.py]\n"
            "    cwd: %s/tests/mcp\n"
            "    tools: [add]\n"
            "    sandbox:\n      paths: [%s/.venv-test]\n",
            py, cwd, cwd);
    return fclose(f) == 0;
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (access(MODEL, R_OK) == 0 && http_server_start(&H) && tdaemon_init(&D)) {
        snprintf(AGENTS, sizeof(AGENTS), "%s/agents", D.dir);
        mkdir(AGENTS, 0700);
        const char *args[] = {"--model",       MODEL,          "--ctx",    "2048",
                              "--kv-size",     "16384",        "--agents", AGENTS,
                              "--fetch-allow", "127.0.0.1/32", NULL};
        memcpy(START_ARGS, args, sizeof(args));
        UP = write_agent() && tdaemon_start_args(&D, START_ARGS);
    }
    RUN(test_tool_args_checked);
    RUN(test_python_tool_answer);
    RUN(test_example_coder);
    RUN(test_resubscribe);
    RUN(test_cancel_mid_generation);
    RUN(test_cancel_mid_tool);
    RUN(test_client_gone);
    RUN(test_budgets_and_errors);
    RUN(test_bad_call_reported);
    RUN(test_long_conversation);
    RUN(test_memory);
    RUN(test_fetch_tool);
    RUN(test_mcp_tool);
    RUN(test_agentctl_run);
    RUN(test_kill9_mid_run);
    if (D.pid) CHECK(tdaemon_cleanup(&D));
    return TEST_END();
}
