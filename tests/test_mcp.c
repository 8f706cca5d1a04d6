/*
 * test_mcp.c - the MCP client (tools/mcp.h) against real servers written with the official
 * Python SDK (tests/mcp/server.py): the handshake and tool list, calls, a tool error, a call
 * that hangs past its timeout, a server that dies mid-call and is restarted, output caps,
 * cancel, stop with a call in flight, a command that does not exist and a server that never
 * answers initialize; then the same client over streamable HTTP; then the stdio server in a
 * sandbox (sbx_proc_spawn): calls work, host files and the network are out of reach unless
 * bound or asked for, a crash restarts it, and stopping leaves no process behind, grandchildren
 * included. Also the pure parsers alone.
 *
 * The SDK lives in the virtualenv scripts/deps.sh makes (.venv-test/, or $AGENTD_TEST_PYTHON);
 * without it the server tests are skipped. The sandbox tests are skipped where the host cannot
 * make sandboxes. The virtualenv and tests/mcp are bound read-only into the sandbox.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tools/mcp_int.h"
#include "test.h"

static char PY[512];        /* python with the mcp SDK, or "" */
static bool HAVE_SDK;       /* PY can import the SDK */
static struct sbx_ctx *SBX; /* for the sandboxed servers, or NULL (SBX_WHY says why) */
static char SBX_WHY[600];

#define SERVER "tests/mcp/server.py"
#define SILENT "tests/mcp/silent.py"

#define NEED_SDK()                                                                                 \
    do {                                                                                           \
        if (!HAVE_SDK) SKIP("python3 with the mcp SDK not found (run scripts/deps.sh)");           \
    } while (0)

/* ---- harness ---- */

struct watch {
    int n_ready, n_restarting, n_failed;
    enum mcp_state last;
    char msg[1024];    /* the last message */
    char failed[1024]; /* the last MCP_FAILED message */
};

static void on_state(void *ud, struct mcp_client *c, enum mcp_state st, const char *msg)
{
    struct watch *w = ud;
    (void)c;
    w->last = st;
    snprintf(w->msg, sizeof(w->msg), "%s", msg);
    if (st == MCP_READY) w->n_ready++;
    if (st == MCP_RESTARTING) w->n_restarting++;
    if (st == MCP_FAILED) {
        w->n_failed++;
        snprintf(w->failed, sizeof(w->failed), "%s", msg);
    }
}

struct out {
    bool done;
    int n_done;
    int err;
    bool ok, truncated;
    char *text, *structured;
};

static void on_done(void *ud, const struct mcp_result *r)
{
    struct out *o = ud;
    o->done = true;
    o->n_done++;
    o->err = r->err_code;
    o->ok = r->ok;
    o->truncated = r->truncated;
    free(o->text);
    free(o->structured);
    o->text = ag_strdup(r->text);
    o->structured = r->structured_json ? ag_strdup(r->structured_json) : NULL;
}

static void out_release(struct out *o)
{
    free(o->text);
    free(o->structured);
    memset(o, 0, sizeof(*o));
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs loop until *flag or timeout_ms; true when the flag came. */
static bool run_until(uv_loop_t *loop, const bool *flag, int64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    int64_t end = ag_now_ms() + timeout_ms;
    while (!*flag && ag_now_ms() < end) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

static bool state_is(uv_loop_t *loop, struct mcp_client *c, enum mcp_state st, int64_t timeout_ms)
{
    int64_t end = ag_now_ms() + timeout_ms;
    bool yes = false;
    while (!(yes = mcp_client_state(c) == st) && ag_now_ms() < end) {
        bool never = false;
        run_until(loop, &never, 20);
    }
    return yes;
}

/* Frees c and runs the loop until every handle is closed. */
static void finish(uv_loop_t *loop, struct mcp_client *c)
{
    if (c) mcp_client_free(c);
    int64_t end = ag_now_ms() + 10000;
    while (uv_run(loop, UV_RUN_ONCE) != 0 && ag_now_ms() < end) {
    }
    CHECK(uv_loop_close(loop) == 0);
}

static int start(uv_loop_t *loop, struct watch *w, const char *script, int64_t start_timeout_ms,
                 size_t max_message_bytes, struct mcp_client **c, struct ag_err *err)
{
    const char *args[] = {script, NULL};
    struct mcp_server_cfg cfg = {
        .name = "t",
        .command = PY,
        .args = args,
        .env = (const char *const[]){"AGENTD_MCP_TEST=1", NULL},
        .start_timeout_ms = start_timeout_ms,
        .max_message_bytes = max_message_bytes,
    };
    memset(w, 0, sizeof(*w));
    return mcp_client_new(loop, &cfg, on_state, w, c, err);
}

/* Starts server.py and waits for it to be ready. */
static struct mcp_client *start_ready(uv_loop_t *loop, struct watch *w, size_t max_message_bytes)
{
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    uv_loop_init(loop);
    if (start(loop, w, SERVER, 30000, max_message_bytes, &c, &err) != 0) {
        printf("  mcp_client_new: %s\n", err.msg);
        return NULL;
    }
    if (!state_is(loop, c, MCP_READY, 30000)) {
        printf("  not ready: state %s: %s\n", mcp_state_name(mcp_client_state(c)), w->msg);
        finish(loop, c);
        return NULL;
    }
    return c;
}

/* Calls tool and waits for done; o gets the result. */
static bool call(uv_loop_t *loop, struct mcp_client *c, const char *tool, const char *args,
                 int64_t timeout_ms, size_t cap, struct out *o)
{
    struct ag_err err = {0};
    out_release(o);
    if (mcp_call(c, tool, args, timeout_ms, cap, on_done, o, NULL, &err) != 0) {
        printf("  mcp_call %s: %s\n", tool, err.msg);
        return false;
    }
    CHECK(!o->done); /* never inside mcp_call */
    return run_until(loop, &o->done, 60000);
}

/* ---- pure parts ---- */

static void test_result_format(void)
{
    bool ok, trunc;
    char *text, *sc;
    struct ag_err err = {0};
    const char *r1 = "{\"content\":[{\"type\":\"text\",\"text\":\"hello\"},{\"type\":\"image\","
                     "\"data\":\"AAAA\",\"mimeType\":\"image/png\"},{\"type\":\"resource\","
                     "\"resource\":{\"uri\":\"file:///a.txt\",\"mimeType\":\"text/plain\","
                     "\"text\":\"x\"}},{\"type\":\"resource_link\",\"uri\":\"file:///b\","
                     "\"name\":\"b\"}],\"structuredContent\":{\"n\":1}}";
    CHECK(mcp_result_format(r1, strlen(r1), 0, &ok, &text, &sc, &trunc, &err) == 0);
    CHECK(ok && !trunc);
    CHECK_STR(text, "hello\n[image content: image/png, 3 bytes]\n[resource: file:///a.txt, "
                    "text/plain]\n[resource link: file:///b]");
    CHECK_STR(sc, "{\"n\":1}");
    free(text);
    free(sc);

    /* isError, and a cut inside a two-byte character. */
    const char *r2 = "{\"content\":[{\"type\":\"text\",\"text\":\"ab\\u00e9\\u00e9\"}],"
                     "\"isError\":true}";
    CHECK(mcp_result_format(r2, strlen(r2), 3, &ok, &text, &sc, &trunc, &err) == 0);
    CHECK(!ok && trunc && !sc);
    CHECKF(strncmp(text, "ab\n[output truncated: the first 2 bytes of 6", 44) == 0, "%s", text);
    free(text);

    /* Structured content only: the model still gets text. */
    const char *r3 = "{\"structuredContent\":{\"a\":[1,2]}}";
    CHECK(mcp_result_format(r3, strlen(r3), 0, &ok, &text, &sc, &trunc, &err) == 0);
    CHECK_STR(text, "{\"a\":[1,2]}");
    free(text);
    free(sc);

    CHECK(mcp_result_format("[1]", 3, 0, &ok, &text, &sc, &trunc, &err) == AG_EPROTO);
    CHECK(mcp_result_format("{\"content\":3}", 13, 0, &ok, &text, &sc, &trunc, &err) == AG_EPROTO);
    CHECK(mcp_result_format("{", 1, 0, &ok, &text, &sc, &trunc, &err) == AG_EPROTO);
}

struct events {
    int n;
    char data[8][64];
    int n_big;
};

static void on_event(void *ud, const char *data, size_t len, bool too_big)
{
    struct events *e = ud;
    if (too_big) {
        e->n_big++;
        return;
    }
    if (e->n < 8) snprintf(e->data[e->n], sizeof(e->data[0]), "%.*s", (int)len, data);
    e->n++;
}

static void test_sse(void)
{
    struct mcp_sse s;
    struct events e = {0};
    mcp_sse_init(&s, 32);
    const char *in = ": keep-alive\r\nevent: message\r\nid: 7\r\ndata: {\"a\":1}\r\n\r\n"
                     "data:x\ndata: y\n\nevent: ping\ndata: no\n\n"
                     "data: 0123456789012345678901234567890123456789\n\ndata: last\r";
    /* Fed a byte at a time: every split point must give the same events. */
    for (size_t i = 0; in[i]; i++) mcp_sse_feed(&s, in + i, 1, on_event, &e);
    mcp_sse_feed(&s, "\r", 1, on_event, &e);
    CHECK(e.n == 3);
    CHECK_STR(e.data[0], "{\"a\":1}");
    CHECK_STR(e.data[1], "x\ny");
    CHECK_STR(e.data[2], "last");
    CHECK(e.n_big == 1);
    CHECK_STR(s.last_id, "7");
    mcp_sse_release(&s);
}

/* The id of a message too big to parse is read from its head. */
static void test_peek_id(void)
{
    static const char m1[] = "{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{\"content\":[";
    static const char m2[] = "{\"result\":{\"id\":5,\"x\":\"\\\"id\\\":6\"},\"id\" : 9}";
    static const char m3[] = "{\"jsonrpc\":\"2.0\",\"result\":{\"id\":3";
    CHECK(mcp__peek_id(m1, sizeof(m1) - 1) == 42);
    CHECK(mcp__peek_id(m2, sizeof(m2) - 1) == 9);
    CHECK(mcp__peek_id(m3, sizeof(m3) - 1) == -1);
}

struct lines {
    int n;
    char got[4][300];
    size_t bytes[4];
};

static void on_line(void *ud, const char *line, size_t len, size_t bytes)
{
    struct lines *l = ud;
    if (l->n < 4) {
        snprintf(l->got[l->n], sizeof(l->got[0]), "%.*s", (int)len, line);
        l->bytes[l->n] = bytes;
    }
    l->n++;
}

/* Lines are split however the bytes arrive; an oversized one keeps only its head. */
static void test_lines(void)
{
    struct mcp__lines ls;
    struct lines l = {0};
    mcp__lines_init(&ls, 300);
    struct ag_buf in;
    ag_buf_init(&in);
    ag_buf_puts(&in, "{\"id\":1}\r\n\n{\"id\":7,\"result\":\"");
    for (int i = 0; i < 1000; i++) ag_buf_putc(&in, 'x');
    ag_buf_puts(&in, "\"}\n{\"id\":2}\npartial");
    for (size_t i = 0; i < in.len; i += 7)
        mcp__lines_feed(&ls, in.data + i, in.len - i < 7 ? in.len - i : 7, on_line, &l);
    CHECK(l.n == 3);
    CHECK_STR(l.got[0], "{\"id\":1}");
    CHECK(l.bytes[0] == 0);
    CHECKF(l.bytes[1] == 18 + 1000 + 2, "%zu", l.bytes[1]);
    CHECK(strlen(l.got[1]) == MCP__HEAD_BYTES);
    CHECK(mcp__peek_id(l.got[1], strlen(l.got[1])) == 7);
    CHECK_STR(l.got[2], "{\"id\":2}");
    ag_buf_release(&in);
    mcp__lines_release(&ls);
}

/* ---- against the SDK server over stdio ---- */

static void test_handshake_and_list(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    CHECK(w.n_ready == 1);
    CHECK_STR(w.msg, "10 tools");
    const struct mcp_tool *t;
    size_t n = mcp_client_tools(c, &t);
    CHECK(n == 10);
    bool seen_add = false, seen_sleep = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].name, "add") == 0) {
            seen_add = true;
            CHECK_STR(t[i].description, "Adds two integers.");
            CHECKF(strstr(t[i].input_schema_json, "\"a\":{") &&
                       strstr(t[i].input_schema_json, "\"type\":\"integer\"") &&
                       strstr(t[i].input_schema_json, "\"required\":[\"a\",\"b\"]"),
                   "%s", t[i].input_schema_json);
        }
        seen_sleep |= strcmp(t[i].name, "sleep") == 0;
    }
    CHECK(seen_add && seen_sleep);
    CHECK_STR(mcp_client_name(c), "t");
    finish(&loop, c);
}

static void test_calls(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    CHECK(call(&loop, c, "add", "{\"a\":2,\"b\":40}", 10000, 0, &o));
    CHECK(o.err == 0 && o.ok && !o.truncated);
    CHECK_STR(o.text, "42");
    CHECK_STR(o.structured, "{\"result\":42}");

    CHECK(call(&loop, c, "echo", "{\"text\":\"h\\u00e9llo \\\"w\\\"\\n\"}", 10000, 0, &o));
    CHECK(o.ok);
    CHECK_STR(o.text, "h\xc3\xa9llo \"w\"\n");

    /* Several at once: each answer finds its own call. */
    struct out m[4] = {{0}};
    for (int i = 0; i < 4; i++) {
        char args[64];
        snprintf(args, sizeof(args), "{\"a\":%d,\"b\":1000}", i);
        CHECK(mcp_call(c, "add", args, 10000, 0, on_done, &m[i], NULL, NULL) == 0);
    }
    CHECK(mcp_calls_in_flight(c) == 4);
    for (int i = 0; i < 4; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", 1000 + i);
        CHECK(run_until(&loop, &m[i].done, 10000));
        CHECK_STR(m[i].text, want);
        out_release(&m[i]);
    }
    CHECK(mcp_calls_in_flight(c) == 0);

    /* Arguments that are not an object never reach the server. */
    struct ag_err err = {0};
    CHECK(mcp_call(c, "add", "[1,2]", 1000, 0, on_done, &o, NULL, &err) == AG_EPARAMS);
    CHECK(mcp_call(c, "add", "{", 1000, 0, on_done, &o, NULL, &err) == AG_EPARAMS);
    out_release(&o);
    finish(&loop, c);
}

static void test_tool_error(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    CHECK(call(&loop, c, "fail", "{\"message\":\"no disk\"}", 10000, 0, &o));
    CHECK(o.err == 0 && !o.ok);
    CHECKF(strstr(o.text, "no disk") != NULL, "%s", o.text);
    /* An unknown tool and bad arguments are errors the model can read. */
    CHECK(call(&loop, c, "nope", NULL, 10000, 0, &o));
    CHECK(!o.ok);
    CHECKF(strstr(o.text, "nope") != NULL, "%s", o.text);
    CHECK(call(&loop, c, "add", "{\"a\":\"x\"}", 10000, 0, &o));
    CHECK(!o.ok && o.text[0]);
    /* Still usable. */
    CHECK(call(&loop, c, "add", "{\"a\":1,\"b\":1}", 10000, 0, &o));
    CHECK(o.ok);
    CHECK_STR(o.text, "2");
    out_release(&o);
    finish(&loop, c);
}

static void test_timeout_and_cancel(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    struct out o = {0}, p = {0};
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &p));
    int64_t t0 = ag_now_ms();
    CHECK(call(&loop, c, "sleep", "{\"seconds\":30}", 300, 0, &o));
    int64_t took = ag_now_ms() - t0;
    CHECK(o.err == AG_ETIMEOUT && !o.ok);
    CHECKF(took >= 290 && took < 5000, "took %lld ms", (long long)took);
    CHECKF(strstr(o.text, "MCP tool 't.sleep' timed out after 300 ms") != NULL, "%s", o.text);

    /* Cancel: done runs inside mcp_cancel. */
    uint64_t id = 0;
    out_release(&o);
    CHECK(mcp_call(c, "sleep", "{\"seconds\":30}", 0, 0, on_done, &o, &id, NULL) == 0);
    bool never = false;
    run_until(&loop, &never, 100);
    CHECK(!o.done);
    mcp_cancel(c, id);
    CHECK(o.done && o.err == AG_ECANCELLED);
    CHECKF(strstr(o.text, "cancelled") != NULL, "%s", o.text);
    mcp_cancel(c, id); /* a finished id is ignored */
    CHECK(o.n_done == 1);

    /* The same server answers the next call. */
    struct out q = {0};
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &q));
    CHECK(q.ok);
    CHECK_STR(q.text, p.text);
    CHECK(w.n_restarting == 0);
    out_release(&o);
    out_release(&p);
    out_release(&q);
    finish(&loop, c);
}

static void test_crash_and_restart(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    struct out p1 = {0}, o = {0}, after = {0}, p2 = {0};
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &p1));
    CHECK(call(&loop, c, "crash", "{\"status\":3}", 10000, 0, &o));
    CHECK(o.err == AG_ECLOSED && !o.ok);
    CHECKF(strstr(o.text, "MCP server 't' exited (status 3) during the call") != NULL, "%s",
           o.text);
    CHECKF(strstr(o.text, "crash: exiting on purpose") != NULL, "%s", o.text);
    CHECK(w.n_restarting == 1);
    CHECKF(strstr(w.msg, "restarting in 500 ms") != NULL, "%s", w.msg);
    CHECK(mcp_client_state(c) == MCP_RESTARTING);
    /* A call made during the restart waits for the new server. */
    CHECK(mcp_call(c, "add", "{\"a\":1,\"b\":2}", 30000, 0, on_done, &after, NULL, NULL) == 0);
    CHECK(run_until(&loop, &after.done, 30000));
    CHECK(after.ok);
    CHECK_STR(after.text, "3");
    CHECK(w.n_ready == 2);
    CHECKF(strncmp(w.msg, "restarted; 10 tools", 19) == 0, "%s", w.msg);
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &p2));
    CHECK(p1.text && p2.text && strcmp(p1.text, p2.text) != 0);
    CHECK(strstr(mcp_client_last_error(c), "exited (status 3)") != NULL);
    /* A second crash soon after: the backoff doubles. */
    CHECK(call(&loop, c, "crash", "{\"status\":4}", 10000, 0, &o));
    CHECKF(strstr(o.text, "exited (status 4) during the call") != NULL, "%s", o.text);
    CHECKF(strstr(w.msg, "restarting in 1000 ms") != NULL, "%s", w.msg);
    CHECK(state_is(&loop, c, MCP_READY, 30000));
    CHECK(w.n_restarting == 2 && w.n_ready == 3);
    out_release(&o);
    out_release(&p1);
    out_release(&p2);
    out_release(&after);
    finish(&loop, c);
}

static void test_output_caps(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 256 << 10);
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    /* 100000 bytes of 'é' cut at 1001: the cut falls back to 1000, a character boundary. */
    CHECK(call(&loop, c, "big", "{\"n\":100000}", 10000, 1001, &o));
    CHECK(o.ok && o.truncated);
    CHECK(o.text && strncmp(o.text, "\xc3\xa9\xc3\xa9", 4) == 0);
    CHECKF(o.text && strstr(o.text, "\xc3\xa9\n[output truncated: the first 1000 bytes of 100000 "
                                    "are shown]") != NULL,
           "%.80s", o.text ? o.text + 990 : "");
    CHECKF(o.text && strstr(o.text, "[structuredContent omitted") != NULL, "%s",
           o.text ? o.text + 1000 : "");
    CHECK(!o.structured);
    /* Over the message limit (256 KiB here): the call fails, the server lives on. */
    CHECK(call(&loop, c, "big", "{\"n\":400000}", 10000, 0, &o));
    CHECK(o.err == AG_ETOOBIG && !o.ok);
    CHECKF(strstr(o.text, "over the 262144-byte limit") != NULL, "%s", o.text);
    CHECK(call(&loop, c, "add", "{\"a\":1,\"b\":1}", 10000, 0, &o));
    CHECK(o.ok);
    CHECK(w.n_restarting == 0);
    out_release(&o);
    finish(&loop, c);
}

static void test_stop_with_call_in_flight(void)
{
    NEED_SDK();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_ready(&loop, &w, 0);
    CHECK(c);
    if (!c) return;
    struct out p = {0}, o = {0};
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &p));
    int pid = p.text ? atoi(p.text) : 0;
    CHECK(mcp_call(c, "sleep", "{\"seconds\":30}", 0, 0, on_done, &o, NULL, NULL) == 0);
    bool never = false;
    run_until(&loop, &never, 100);
    mcp_client_free(c);
    CHECK(o.done && o.err == AG_ESHUTDOWN);
    CHECKF(strstr(o.text, "stopped during the call") != NULL, "%s", o.text);
    finish(&loop, NULL);
    /* The server is gone (reaped, so not even a zombie). */
    CHECK(pid > 0 && kill(pid, 0) != 0);
    out_release(&o);
    out_release(&p);
}

static void test_no_such_command(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct watch w = {0};
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    struct mcp_server_cfg cfg = {.name = "ghost", .command = "/nonexistent/mcp-server"};
    CHECK(mcp_client_new(&loop, &cfg, on_state, &w, &c, &err) == AG_ENOTFOUND);
    CHECK(c == NULL);
    CHECKF(strstr(err.msg, "MCP server 'ghost': cannot run '/nonexistent/mcp-server'") != NULL,
           "%s", err.msg);
    struct mcp_server_cfg both = {.name = "x", .command = "a", .url = "http://b"};
    CHECK(mcp_client_new(&loop, &both, on_state, &w, &c, &err) == AG_EINVAL);
    struct mcp_server_cfg badenv = {
        .name = "x", .command = "a", .env = (const char *const[]){"NOEQUALS", NULL}};
    CHECK(mcp_client_new(&loop, &badenv, on_state, &w, &c, &err) == AG_EINVAL);
    CHECK(w.n_failed == 0);
    finish(&loop, NULL);
}

static void test_silent_server(void)
{
    NEED_SDK();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct watch w;
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    CHECK(start(&loop, &w, SILENT, 800, 0, &c, &err) == 0);
    if (!c) return;
    struct out o = {0};
    CHECK(mcp_call(c, "add", "{}", 0, 0, on_done, &o, NULL, NULL) == 0);
    CHECK(state_is(&loop, c, MCP_FAILED, 10000));
    CHECK(w.n_failed == 1 && w.n_ready == 0 && w.n_restarting == 0);
    CHECKF(strstr(w.failed, "MCP server 't' did not answer initialize within 800 ms") != NULL, "%s",
           w.failed);
    /* The waiting call failed with it, and new calls fail at once. */
    CHECK(o.done && o.err == AG_ECLOSED);
    CHECK(mcp_call(c, "add", "{}", 0, 0, on_done, &o, NULL, &err) == AG_ECLOSED);
    CHECKF(strstr(err.msg, "did not answer initialize") != NULL, "%s", err.msg);
    out_release(&o);
    finish(&loop, c);
}

/* ---- streamable HTTP ---- */

/* Starts server.py --http in the background; returns its pid, with *port set, or 0. */
static pid_t http_server(bool json, int *port)
{
    char dir[] = "/tmp/agentd-mcp-XXXXXX";
    if (!mkdtemp(dir)) return 0;
    char port_file[64];
    snprintf(port_file, sizeof(port_file), "%s/port", dir);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(PY, PY, SERVER, "--http", port_file, json ? "--json" : NULL, (char *)NULL);
        _exit(127);
    }
    *port = 0;
    for (int i = 0; i < 300 && pid > 0 && !*port; i++) {
        char *text = NULL;
        if (ag_read_file(port_file, 64, &text, NULL, NULL) == 0) *port = atoi(text);
        free(text);
        if (!*port) usleep(100 * 1000);
    }
    unlink(port_file);
    rmdir(dir);
    /* The port is chosen before the server listens: wait for it to take connections. */
    for (int i = 0; i < 300 && *port; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
        close(fd);
        if (rc == 0) return pid;
        usleep(100 * 1000);
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return 0;
}

static void http_case(bool json)
{
    int port = 0;
    pid_t pid = http_server(json, &port);
    CHECKF(pid > 0, "the SDK's streamable-http server did not start");
    if (pid <= 0) return;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/mcp", port);
    struct mcp_server_cfg cfg = {.name = "t", .url = url, .start_timeout_ms = 20000};
    struct watch w = {0};
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    CHECK(mcp_client_new(&loop, &cfg, on_state, &w, &c, &err) == 0);
    if (!c) goto out;
    CHECKF(state_is(&loop, c, MCP_READY, 20000), "%s", w.msg);
    const struct mcp_tool *t;
    CHECK(mcp_client_tools(c, &t) == 10);
    struct out o = {0};
    CHECK(call(&loop, c, "add", "{\"a\":2,\"b\":40}", 10000, 0, &o));
    CHECK(o.ok);
    CHECK_STR(o.text, "42");
    CHECK_STR(o.structured, "{\"result\":42}");
    CHECK(call(&loop, c, "fail", NULL, 10000, 0, &o));
    CHECK(o.err == 0 && !o.ok);
    CHECK(call(&loop, c, "sleep", "{\"seconds\":30}", 300, 0, &o));
    CHECK(o.err == AG_ETIMEOUT);
    CHECK(call(&loop, c, "big", "{\"n\":100000}", 10000, 1000, &o));
    CHECK(o.ok && o.truncated);
    CHECK(call(&loop, c, "echo", "{\"text\":\"still here\"}", 10000, 0, &o));
    CHECK_STR(o.text, "still here");
    /* The server dies mid-call: the call fails and says who and where. */
    CHECK(call(&loop, c, "crash", NULL, 10000, 0, &o));
    CHECK(o.err != 0 && !o.ok);
    CHECKF(strstr(o.text, "MCP server 't'") && strstr(o.text, url), "%s", o.text);
    out_release(&o);
out:
    finish(&loop, c);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_http_sse(void)
{
    NEED_SDK();
    http_case(false);
}

static void test_http_json(void)
{
    NEED_SDK();
    http_case(true);
}

static void test_http_unreachable(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct mcp_server_cfg cfg = {.name = "far", .url = "http://127.0.0.1:1/mcp"};
    struct watch w = {0};
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    CHECK(mcp_client_new(&loop, &cfg, on_state, &w, &c, &err) == 0);
    if (c) {
        CHECK(state_is(&loop, c, MCP_FAILED, 10000));
        CHECKF(strstr(w.failed,
                      "MCP server 'far' could not be reached at http://127.0.0.1:1/mcp") != NULL,
               "%s", w.failed);
    }
    struct mcp_server_cfg bad = {.name = "x", .url = "ftp://h/"};
    struct mcp_client *c2 = NULL;
    CHECK(mcp_client_new(&loop, &bad, on_state, &w, &c2, &err) == AG_EINVAL);
    finish(&loop, c);
}

/* ---- sandboxed stdio servers ---- */

#define NEED_SBX()                                                                                 \
    do {                                                                                           \
        NEED_SDK();                                                                                \
        if (!SBX) SKIP(SBX_WHY);                                                                   \
    } while (0)

/* Starts server.py in a sandbox (cwd tests/mcp, the virtualenv bound) with extra argument tag,
 * and waits for it to be ready. */
static struct mcp_client *start_in(struct sbx_ctx *ctx, uv_loop_t *loop, struct watch *w,
                                   bool network, const char *tag)
{
    char *cwd = getcwd(NULL, 0);
    char dir[600], venv[600];
    snprintf(dir, sizeof(dir), "%s/tests/mcp", cwd);
    /* PY is <venv>/bin/python: the virtualenv's root holds pyvenv.cfg and the SDK. */
    snprintf(venv, sizeof(venv), "%s", PY);
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(venv, '/');
        if (slash && slash != venv) *slash = '\0';
    }
    free(cwd);
    const char *args[] = {"server.py", tag, NULL};
    const char *paths[] = {venv, NULL};
    struct sbx_limits lim;
    sbx_limits_default(&lim);
    lim.memory_bytes = 256ll << 20;
    struct mcp_server_cfg cfg = {
        .name = "box",
        .command = PY,
        .args = args,
        .env = (const char *const[]){"AGENTD_MCP_TEST=1", NULL},
        .cwd = dir,
        .sandbox = ctx,
        .sandbox_limits = &lim,
        .sandbox_paths = paths,
        .sandbox_network = network,
    };
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    memset(w, 0, sizeof(*w));
    uv_loop_init(loop);
    if (mcp_client_new(loop, &cfg, on_state, w, &c, &err) != 0) {
        printf("  mcp_client_new: %s\n", err.msg);
        CHECK(uv_loop_close(loop) == 0);
        return NULL;
    }
    if (!state_is(loop, c, MCP_READY, 30000)) {
        printf("  not ready: state %s: %s\n  stderr: %s\n", mcp_state_name(mcp_client_state(c)),
               w->msg, mcp_client_stderr(c));
        finish(loop, c);
        return NULL;
    }
    return c;
}

static struct mcp_client *start_sandboxed(uv_loop_t *loop, struct watch *w, bool network,
                                          const char *tag)
{
    return start_in(SBX, loop, w, network, tag);
}

/* Host processes with an argument equal to arg. */
static int count_procs(const char *arg)
{
    DIR *d = opendir("/proc");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        char path[300], buf[4096];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
            if (strcmp(buf + i, arg) == 0) {
                n++;
                break;
            }
    }
    if (d) closedir(d);
    return n;
}

/* A TCP listener on 127.0.0.1 of the host; its port in *port. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_sandbox_calls(void)
{
    NEED_SBX();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_sandboxed(&loop, &w, false, "--tag=calls");
    CHECK(c);
    if (!c) return;
    CHECK_STR(w.msg, "10 tools");
    struct out o = {0};
    CHECK(call(&loop, c, "add", "{\"a\":2,\"b\":40}", 10000, 0, &o));
    CHECK(o.ok);
    CHECK_STR(o.text, "42");
    /* Pid 1 of a pid namespace of its own. */
    CHECK(call(&loop, c, "pid", NULL, 10000, 0, &o));
    CHECK_STR(o.text, "1");
    /* Its working directory is bound, read-only; the rest of the checkout is not there. */
    CHECK(call(&loop, c, "read_file", "{\"path\":\"server.py\"}", 10000, 0, &o));
    CHECKF(o.text && strstr(o.text, "MCP test server") != NULL, "%s", o.text);
    char *cwd = getcwd(NULL, 0);
    char *args = ag_asprintf("{\"path\":\"%s/tests/test_mcp.c\"}", cwd);
    CHECK(call(&loop, c, "read_file", args, 10000, 0, &o));
    CHECKF(o.text && strncmp(o.text, "error: No such file", 19) == 0, "%s", o.text);
    free(args);
    free(cwd);
    /* Host files outside the binds: /etc is the sandbox's own, /root is not there. */
    CHECK(call(&loop, c, "read_file", "{\"path\":\"/etc/shadow\"}", 10000, 0, &o));
    CHECKF(o.text && strncmp(o.text, "error: ", 7) == 0, "%s", o.text);
    CHECK(call(&loop, c, "read_file", "{\"path\":\"/root/.bashrc\"}", 10000, 0, &o));
    CHECKF(o.text && strncmp(o.text, "error: ", 7) == 0, "%s", o.text);
    CHECK(call(&loop, c, "read_file", "{\"path\":\"/etc/hostname\"}", 10000, 0, &o));
    CHECK_STR(o.text, "sandbox\n");
    /* No network: not even the host's loopback. */
    int port = 0, lfd = listener(&port);
    CHECK(lfd >= 0);
    args = ag_asprintf("{\"host\":\"127.0.0.1\",\"port\":%d}", port);
    CHECK(call(&loop, c, "connect", args, 20000, 0, &o));
    CHECKF(o.text && strncmp(o.text, "error: ", 7) == 0, "%s", o.text);
    free(args);
    if (lfd >= 0) close(lfd);
    out_release(&o);
    finish(&loop, c);
}

static void test_sandbox_network(void)
{
    NEED_SBX();
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_sandboxed(&loop, &w, true, "--tag=network");
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    int port = 0, lfd = listener(&port);
    CHECK(lfd >= 0);
    char *args = ag_asprintf("{\"host\":\"127.0.0.1\",\"port\":%d}", port);
    CHECK(call(&loop, c, "connect", args, 20000, 0, &o));
    CHECK_STR(o.text, "ok");
    free(args);
    if (lfd >= 0) close(lfd);
    out_release(&o);
    finish(&loop, c);
}

/* A crash takes the server's grandchildren with it, and the server comes back. */
static void test_sandbox_crash_and_restart(void)
{
    NEED_SBX();
    uv_loop_t loop;
    struct watch w;
    char tag[64], nap[32];
    snprintf(tag, sizeof(tag), "--tag=crash-%d", (int)getpid());
    snprintf(nap, sizeof(nap), "611.%d", (int)getpid());
    struct mcp_client *c = start_sandboxed(&loop, &w, false, tag);
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    char *args = ag_asprintf("{\"argv\":[\"/usr/bin/sleep\",\"%s\"]}", nap);
    CHECK(call(&loop, c, "spawn", args, 10000, 0, &o));
    CHECK(o.ok);
    CHECK(count_procs(nap) == 1);
    CHECK(count_procs(tag) == 1);
    CHECK(call(&loop, c, "crash", "{\"status\":3}", 10000, 0, &o));
    CHECK(o.err == AG_ECLOSED);
    CHECKF(o.text && strstr(o.text, "MCP server 'box' exited (status 3) during the call"), "%s",
           o.text);
    CHECKF(o.text && strstr(o.text, "crash: exiting on purpose"), "%s", o.text);
    CHECK(count_procs(nap) == 0);
    CHECK(state_is(&loop, c, MCP_READY, 30000));
    CHECK(w.n_restarting == 1 && w.n_ready == 2);
    CHECK(call(&loop, c, "add", "{\"a\":1,\"b\":2}", 10000, 0, &o));
    CHECK_STR(o.text, "3");
    CHECK(count_procs(tag) == 1);
    free(args);
    out_release(&o);
    finish(&loop, c);
    CHECK(count_procs(tag) == 0);
}

/* Stopping with a call in flight and a grandchild running leaves nothing behind. */
static void test_sandbox_stop(void)
{
    NEED_SBX();
    uv_loop_t loop;
    struct watch w;
    char tag[64], nap[32];
    snprintf(tag, sizeof(tag), "--tag=stop-%d", (int)getpid());
    snprintf(nap, sizeof(nap), "612.%d", (int)getpid());
    struct mcp_client *c = start_sandboxed(&loop, &w, false, tag);
    CHECK(c);
    if (!c) return;
    struct out o = {0}, s = {0};
    char *args = ag_asprintf("{\"argv\":[\"/usr/bin/sleep\",\"%s\"]}", nap);
    CHECK(call(&loop, c, "spawn", args, 10000, 0, &o));
    free(args);
    CHECK(count_procs(nap) == 1 && count_procs(tag) == 1);
    struct sbx_info in;
    sbx_ctx_info(SBX, &in);
    CHECK(in.n_alive == 1);
    CHECK(mcp_call(c, "sleep", "{\"seconds\":30}", 0, 0, on_done, &s, NULL, NULL) == 0);
    bool never = false;
    run_until(&loop, &never, 100);
    int64_t t0 = ag_now_ms();
    mcp_client_free(c);
    CHECK(s.done && s.err == AG_ESHUTDOWN);
    finish(&loop, NULL);
    CHECKF(ag_now_ms() - t0 < 5000, "%lld ms", (long long)(ag_now_ms() - t0));
    CHECK(count_procs(nap) == 0 && count_procs(tag) == 0);
    sbx_ctx_info(SBX, &in);
    CHECK(in.n_alive == 0);
    out_release(&o);
    out_release(&s);
}

/* The memory limit's OOM killer ends the whole server, and the loss says why. */
static void test_sandbox_memory_limit(void)
{
    NEED_SBX();
    struct sbx_info in;
    sbx_ctx_info(SBX, &in);
    if (strcmp(in.memory, "none") == 0) SKIP("no memory cgroup on this host");
    uv_loop_t loop;
    struct watch w;
    struct mcp_client *c = start_sandboxed(&loop, &w, false, "--tag=oom");
    CHECK(c);
    if (!c) return;
    struct out o = {0};
    /* 400 MB of text against a 256 MiB limit. */
    CHECK(call(&loop, c, "big", "{\"n\":800000000}", 30000, 0, &o));
    CHECK(o.err == AG_ECLOSED);
    CHECKF(o.text && strstr(o.text, "was killed by signal 9 (Killed) at its sandbox's memory "
                                    "limit during the call"),
           "%s", o.text);
    CHECK(state_is(&loop, c, MCP_READY, 30000));
    out_release(&o);
    finish(&loop, c);
}

/* The daemon's order at shutdown: the client stops, then the sandbox context is freed at once,
 * before the server has gone. The context kills it and lives until the client lets go. */
static void test_sandbox_ctx_freed_first(void)
{
    NEED_SBX();
    struct sbx_ctx *ctx = NULL;
    struct ag_err err = {0};
    struct sbx_ctx_opts opts = {.tag = "agentd-test-mcp2"};
    CHECKF(sbx_ctx_new(&opts, &ctx, &err) == 0, "%s", err.msg);
    if (!ctx) return;
    uv_loop_t loop;
    struct watch w;
    char tag[64];
    snprintf(tag, sizeof(tag), "--tag=ctxfree-%d", (int)getpid());
    struct mcp_client *c = start_in(ctx, &loop, &w, false, tag);
    CHECK(c);
    if (!c) {
        sbx_ctx_free(ctx);
        return;
    }
    CHECK(count_procs(tag) == 1);
    int64_t t0 = ag_now_ms();
    mcp_client_free(c);
    sbx_ctx_free(ctx);
    finish(&loop, NULL);
    CHECKF(ag_now_ms() - t0 < 1500, "%lld ms", (long long)(ag_now_ms() - t0));
    CHECK(count_procs(tag) == 0);
}

/* What cannot run in a sandbox says so at start. */
static void test_sandbox_errors(void)
{
    if (!SBX) SKIP(SBX_WHY);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct watch w = {0};
    struct mcp_client *c = NULL;
    struct ag_err err = {0};
    struct mcp_server_cfg cfg = {.name = "ghost", .command = "no-such-mcp-server", .sandbox = SBX};
    CHECK(mcp_client_new(&loop, &cfg, on_state, &w, &c, &err) == AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "MCP server 'ghost': cannot run 'no-such-mcp-server' in the sandbox: "
                           "not found in its PATH") != NULL,
           "%s", err.msg);
    const char *paths[] = {"/nonexistent/dir", NULL};
    struct mcp_server_cfg nodir = {
        .name = "x", .command = "true", .sandbox = SBX, .sandbox_paths = paths};
    CHECK(mcp_client_new(&loop, &nodir, on_state, &w, &c, &err) == AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "sandbox path '/nonexistent/dir': No such file or directory") != NULL,
           "%s", err.msg);
    const char *proc[] = {"/proc/1", NULL};
    struct mcp_server_cfg badp = {
        .name = "x", .command = "true", .sandbox = SBX, .sandbox_paths = proc};
    CHECK(mcp_client_new(&loop, &badp, on_state, &w, &c, &err) == AG_EINVAL);
    CHECKF(strstr(err.msg, "/proc cannot be bound") != NULL, "%s", err.msg);
    struct mcp_server_cfg url = {.name = "x", .url = "http://127.0.0.1:1/", .sandbox = SBX};
    CHECK(mcp_client_new(&loop, &url, on_state, &w, &c, &err) == AG_EINVAL);
    /* A server that exits at once, never ready: failed, with its own words. */
    const char *sh[] = {"-c", "echo no luck >&2; exit 5", NULL};
    struct mcp_server_cfg dies = {.name = "d", .command = "sh", .args = sh, .sandbox = SBX};
    CHECK(mcp_client_new(&loop, &dies, on_state, &w, &c, &err) == 0);
    if (c) {
        CHECK(state_is(&loop, c, MCP_FAILED, 10000));
        CHECKF(strstr(w.failed, "exited (status 5)") != NULL, "%s", w.failed);
        CHECKF(strstr(mcp_client_stderr(c), "no luck") != NULL, "%s", mcp_client_stderr(c));
    }
    finish(&loop, c);
}

static void find_sandbox(void)
{
    struct ag_err err = {0};
    struct sbx_ctx_opts o = {.tag = "agentd-test-mcp"};
    if (sbx_ctx_new(&o, &SBX, &err) != 0) {
        snprintf(SBX_WHY, sizeof(SBX_WHY), "no sandbox on this host: %s", err.msg);
        SBX = NULL;
        return;
    }
    /* A kernel without user namespaces for this user refuses the first clone. */
    struct sbx_result r;
    struct sbx_exec_req req = {.lang = SBX_LANG_SHELL, .code = "true"};
    if (sbx_exec(SBX, &req, &r, &err) != 0) {
        snprintf(SBX_WHY, sizeof(SBX_WHY), "no sandbox on this host: %s", err.msg);
        sbx_ctx_free(SBX);
        SBX = NULL;
        return;
    }
    sbx_result_release(&r);
}

static void find_python(void)
{
    const char *env = getenv("AGENTD_TEST_PYTHON");
    struct stat st;
    if (env && *env)
        snprintf(PY, sizeof(PY), "%s", env);
    else if (stat(".venv-test/bin/python", &st) == 0) {
        char *cwd = getcwd(NULL, 0);
        snprintf(PY, sizeof(PY), "%s/.venv-test/bin/python", cwd ? cwd : ".");
        free(cwd);
    }
    if (!PY[0]) return;
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "'%s' -c 'import mcp.server.fastmcp' >/dev/null 2>&1", PY);
    int rc = system(cmd);
    HAVE_SDK = rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    TEST_BEGIN(argc, argv);
    find_python();
    if (!HAVE_SDK)
        printf(
            "skip: no python with the mcp SDK (set AGENTD_TEST_PYTHON or run scripts/deps.sh)\n");
    RUN(test_result_format);
    RUN(test_sse);
    RUN(test_peek_id);
    RUN(test_lines);
    RUN(test_handshake_and_list);
    RUN(test_calls);
    RUN(test_tool_error);
    RUN(test_timeout_and_cancel);
    RUN(test_crash_and_restart);
    RUN(test_output_caps);
    RUN(test_stop_with_call_in_flight);
    RUN(test_no_such_command);
    RUN(test_silent_server);
    RUN(test_http_sse);
    RUN(test_http_json);
    RUN(test_http_unreachable);
    find_sandbox();
    RUN(test_sandbox_calls);
    RUN(test_sandbox_network);
    RUN(test_sandbox_crash_and_restart);
    RUN(test_sandbox_stop);
    RUN(test_sandbox_memory_limit);
    RUN(test_sandbox_ctx_freed_first);
    RUN(test_sandbox_errors);
    sbx_ctx_free(SBX);
    return TEST_END();
}
