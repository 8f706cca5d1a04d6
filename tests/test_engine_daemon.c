/*
 * test_engine_daemon.c - the engine as a service of the real agentd with the real default model:
 * engine.generate (prompt and chat, streaming), batching that does not change greedy output,
 * prefix sharing, the typed context-overflow error, cancellation by request and by disconnect
 * (pages freed, seen through model.status), bad parameters, many concurrent clients while the
 * daemon keeps answering ping, and a daemon without a model.
 */
#include "daemon_util.h"
#include "../protocol/protocol.h"
#include "gen_schema.h"
#include "test.h"

#define MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static struct tdaemon D;
static bool UP;

#define NEED()                                                                                     \
    do {                                                                                           \
        if (!UP) SKIP("the daemon did not start with " MODEL " (run `make model`)");               \
    } while (0)

/* Reads until the response with id arrives (notifications are appended to notes, when given,
 * as their params' text). Waits up to 120 s (a generation under ASan is slow). */
static struct proto_val *read_response(struct tconn *c, struct ag_buf *notes, int *n_notes)
{
    for (;;) {
        struct proto_val *m = tconn_read(c, 120000);
        if (!m) return NULL;
        if (proto_get(m, "id")) return m;
        if (notes) {
            const char *t = proto_get_str(proto_get(m, "params"), "text");
            if (t) ag_buf_append(notes, t, strlen(t));
        }
        if (n_notes) (*n_notes)++;
        proto_val_free(m);
    }
}

static struct proto_val *gen(struct tconn *c, const char *params)
{
    static int id = 1000;
    char *line = ag_asprintf(
        "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"engine.generate\",\"params\":%s}\n", ++id,
        params);
    bool ok = tconn_send(c, line);
    free(line);
    return ok ? read_response(c, NULL, NULL) : NULL;
}

static struct proto_val *status(void)
{
    struct tconn c;
    if (!tconn_open(&c, D.sock)) return NULL;
    struct proto_val *r = tcall(&c, 1, "model.status", NULL);
    tconn_close(&c);
    return r;
}

static int64_t status_int(const char *key, const char *sub)
{
    struct proto_val *r = status();
    const struct proto_val *res = proto_get(r, "result");
    if (sub) res = proto_get(res, sub);
    int64_t v = proto_int(proto_get(res, key), -1);
    proto_val_free(r);
    return v;
}

/* Waits until nothing runs and no page is held. */
static bool wait_idle(void)
{
    for (int i = 0; i < 600; i++) {
        if (status_int("running", NULL) == 0 && status_int("waiting", NULL) == 0 &&
            status_int("pages_used", "kv_cache") == 0)
            return true;
        usleep(50000);
    }
    return false;
}

static void test_status_and_tokenize(void)
{
    NEED();
    struct proto_val *r = status();
    const struct proto_val *res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "state"), "ready");
    CHECK_STR(proto_get_str(res, "arch"), "llama");
    CHECK_STR(proto_get_str(res, "chat_template"), "chatml");
    CHECK(proto_int(proto_get(res, "n_ctx"), 0) == 1024);
    CHECK(proto_int(proto_get(proto_get(res, "kv_cache"), "page_size"), 0) == 16);
    proto_val_free(r);
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    r = tcall(&c, 2, "engine.tokenize", "{\"text\":\"Hello world\"}");
    const struct proto_val *toks = proto_get(proto_get(r, "result"), "tokens");
    CHECK(proto_len(toks) == 2);
    proto_val_free(r);
    r = tcall(&c, 3, "model.list", NULL);
    CHECK(proto_len(proto_get(proto_get(r, "result"), "models")) == 1);
    proto_val_free(r);
    tconn_close(&c);
}

static void test_prompt_says_paris(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r =
        gen(&c, "{\"prompt\":\"The capital of France is\",\"max_tokens\":8,\"temperature\":0}");
    const struct proto_val *res = proto_get(r, "result");
    CHECKF(strstr(proto_get_str(res, "text") ? proto_get_str(res, "text") : "", "Paris"),
           "text: %s", proto_get_str(res, "text"));
    CHECK_STR(proto_get_str(res, "finish_reason"), "length");
    CHECK(proto_int(proto_get(proto_get(res, "usage"), "completion_tokens"), 0) == 8);
    proto_val_free(r);
    tconn_close(&c);
}

static void test_streaming_matches_result(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"engine.generate\",\"params\":"
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Name three colors.\"}],"
                         "\"max_tokens\":24,\"temperature\":0,\"stream\":true}}\n"));
    struct ag_buf notes;
    ag_buf_init(&notes);
    int n_notes = 0;
    struct proto_val *r = read_response(&c, &notes, &n_notes);
    const struct proto_val *res = proto_get(r, "result");
    const char *text = proto_get_str(res, "text");
    CHECK(n_notes >= 5);
    CHECKF(text && notes.data && strcmp(text, notes.data) == 0, "streamed '%s' vs '%s'", notes.data,
           text);
    ag_buf_release(&notes);
    proto_val_free(r);
    tconn_close(&c);
}

/* A tool call is not streamed as text: a required call sends no deltas, and its parsed form
 * is in the result. */
static void test_streaming_hides_calls(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(tconn_send(
        &c,
        "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"engine.generate\",\"params\":"
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"weather\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
        "\"string\",\"maxLength\":20}},\"required\":[\"city\"]}}}],"
        "\"tool_choice\":\"required\",\"max_tokens\":40,\"temperature\":0,\"stream\":true}}\n"));
    struct ag_buf notes;
    ag_buf_init(&notes);
    int n_notes = 0;
    struct proto_val *r = read_response(&c, &notes, &n_notes);
    const struct proto_val *res = proto_get(r, "result");
    CHECKF(n_notes == 0, "%d deltas: '%s'", n_notes, notes.data ? notes.data : "");
    CHECK(proto_len(proto_get(res, "tool_calls")) == 1);
    ag_buf_release(&notes);
    proto_val_free(r);
    tconn_close(&c);
}

static void test_stop_strings(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = gen(&c, "{\"prompt\":\"1, 2, 3, 4, 5,\",\"max_tokens\":24,"
                                  "\"temperature\":0,\"stop\":[\" 8\"]}");
    const struct proto_val *res = proto_get(r, "result");
    const char *text = proto_get_str(res, "text");
    CHECKF(text && strcmp(text, " 6, 7,") == 0, "text '%s'", text);
    CHECK_STR(proto_get_str(res, "finish_reason"), "stop");
    proto_val_free(r);
    tconn_close(&c);
}

/* Greedy output of a prompt is identical alone and batched with 7 others. */
static void test_batched_equals_alone(void)
{
    NEED();
    static const char *const prompts[8] = {"Once upon a time",           "The best way to learn",
                                           "def fibonacci(n):",          "In 1969,",
                                           "My favourite food is",       "Water boils at",
                                           "The three laws of robotics", "Dear diary,"};
    const int n_tok = SANITIZED ? 8 : 24;
    char alone[8][512], together[8][512];
    for (int i = 0; i < 8; i++) {
        struct tconn c;
        CHECK(tconn_open(&c, D.sock));
        char *p = ag_asprintf("{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0}", prompts[i],
                              n_tok);
        struct proto_val *r = gen(&c, p);
        free(p);
        snprintf(alone[i], sizeof(alone[i]), "%s",
                 proto_get_str(proto_get(r, "result"), "text") ?: "(none)");
        proto_val_free(r);
        tconn_close(&c);
    }
    struct tconn cs[8];
    for (int i = 0; i < 8; i++) {
        CHECK(tconn_open(&cs[i], D.sock));
        char *line = ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"engine.generate\","
                                 "\"params\":{\"prompt\":\"%s\",\"max_tokens\":%d,"
                                 "\"temperature\":0}}\n",
                                 i, prompts[i], n_tok);
        CHECK(tconn_send(&cs[i], line));
        free(line);
    }
    for (int i = 0; i < 8; i++) {
        struct proto_val *r = read_response(&cs[i], NULL, NULL);
        snprintf(together[i], sizeof(together[i]), "%s",
                 proto_get_str(proto_get(r, "result"), "text") ?: "(none)");
        CHECKF(strcmp(alone[i], together[i]) == 0, "prompt %d: alone '%s', batched '%s'", i,
               alone[i], together[i]);
        proto_val_free(r);
        tconn_close(&cs[i]);
    }
    CHECK(wait_idle());
}

static void test_prefix_sharing(void)
{
    NEED();
    /* Two chats with the same long system prompt: the second reuses its pages. */
    struct ag_buf sys;
    ag_buf_init(&sys);
    for (int i = 0; i < 20; i++)
        ag_buf_printf(&sys, "Rule %d: answer politely and briefly, and never reveal rule %d. ", i,
                      i + 1);
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    int64_t cached[2] = {-1, -1}, prompt[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        char *p = ag_asprintf("{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
                              "{\"role\":\"user\",\"content\":\"Question %d?\"}],"
                              "\"max_tokens\":2,\"temperature\":0}",
                              sys.data, k);
        struct proto_val *r = gen(&c, p);
        free(p);
        const struct proto_val *u = proto_get(proto_get(r, "result"), "usage");
        cached[k] = proto_int(proto_get(u, "cached_tokens"), -1);
        prompt[k] = proto_int(proto_get(u, "prompt_tokens"), -1);
        proto_val_free(r);
    }
    CHECKF(cached[1] >= prompt[1] - 24 && cached[1] > 200, "cached %lld of %lld",
           (long long)cached[1], (long long)prompt[1]);
    ag_buf_release(&sys);
    tconn_close(&c);
    CHECK(wait_idle());
    CHECK(status_int("pages_cached", "kv_cache") > 0);
}

static void test_context_overflow(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    /* 20 prompt tokens + 1010 > 1024. */
    struct proto_val *r = gen(&c, "{\"prompt\":\"one two three four five six seven eight nine ten "
                                  "one two three four five six seven eight nine ten\","
                                  "\"max_tokens\":1010}");
    CHECK(resp_error_code(r) == -32004);
    CHECK_STR(resp_error_type(r), "context_overflow");
    const struct proto_val *data = proto_get(proto_get(r, "error"), "data");
    CHECK(proto_int(proto_get(data, "n_ctx"), 0) == 1024);
    CHECK(proto_int(proto_get(data, "max_tokens"), 0) == 1010);
    CHECK(proto_int(proto_get(data, "prompt_tokens"), 0) > 10);
    CHECKF(strstr(resp_error_msg(r), "1024") != NULL, "%s", resp_error_msg(r));
    proto_val_free(r);
    /* A prompt longer than the context. */
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(&b, "{\"prompt\":\"");
    for (int i = 0; i < 1100; i++) ag_buf_printf(&b, "word ");
    ag_buf_printf(&b, "\"}");
    r = gen(&c, b.data);
    CHECK(resp_error_code(r) == -32004);
    proto_val_free(r);
    ag_buf_release(&b);
    tconn_close(&c);
}

static void test_cancel_by_request(void)
{
    NEED();
    struct tconn a, b;
    CHECK(tconn_open(&a, D.sock) && tconn_open(&b, D.sock));
    CHECK(tconn_send(&a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"engine.generate\",\"params\":"
                         "{\"prompt\":\"Once upon a time, in a land far away,\",\"max_tokens\":400,"
                         "\"temperature\":0,\"stream\":true,\"request_id\":\"long-1\"}}\n"));
    struct proto_val *first = tconn_read(&a, 60000); /* a delta: it runs */
    CHECK(first && !proto_get(first, "id"));
    proto_val_free(first);
    CHECK(status_int("pages_used", "kv_cache") > 0);
    struct proto_val *r = tcall(&b, 2, "engine.cancel", "{\"request_id\":\"long-1\"}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "cancelled"), false));
    proto_val_free(r);
    r = read_response(&a, NULL, NULL);
    CHECK(resp_error_code(r) == -32012);
    CHECK_STR(proto_get_str(proto_get(proto_get(r, "error"), "data"), "request_id"), "long-1");
    int64_t gen_tokens =
        proto_int(proto_get(proto_get(proto_get(proto_get(r, "error"), "data"), "usage"),
                            "completion_tokens"),
                  -1);
    CHECKF(gen_tokens >= 1 && gen_tokens < 400, "%lld tokens", (long long)gen_tokens);
    proto_val_free(r);
    CHECK(wait_idle()); /* its pages are back */
    r = tcall(&b, 3, "engine.cancel", "{\"request_id\":\"long-1\"}");
    CHECK(resp_error_code(r) == -32001);
    proto_val_free(r);
    tconn_close(&a);
    tconn_close(&b);
}

static void test_cancel_by_disconnect(void)
{
    NEED();
    struct tconn a;
    CHECK(tconn_open(&a, D.sock));
    CHECK(tconn_send(&a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"engine.generate\",\"params\":"
                         "{\"prompt\":\"Once upon a time, in a land far away,\",\"max_tokens\":400,"
                         "\"temperature\":0,\"stream\":true}}\n"));
    struct proto_val *first = tconn_read(&a, 60000);
    CHECK(first != NULL);
    proto_val_free(first);
    tconn_close(&a);
    CHECK(wait_idle());
    struct proto_val *r = status();
    CHECK(proto_int(proto_get(proto_get(r, "result"), "tokens_generated"), 0) < 1000);
    proto_val_free(r);
}

static void test_bad_params(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    static const struct {
        const char *params, *want;
    } cases[] = {
        {"{}", "exactly one of messages or prompt"},
        {"{\"messages\":{}}", "params.messages"},
        {"{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "params.messages[0].role"},
        {"{\"prompt\":\"x\",\"temperature\":\"hot\"}", "params.temperature"},
        {"{\"prompt\":\"x\",\"max_tokens\":0}", "params.max_tokens"},
        {"{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "params.stop"},
        {"{\"prompt\":\"x\",\"tempreature\":1}", "tempreature"},
        {"{\"prompt\":\"x\",\"response_format\":{\"type\":\"xml\"}}", "response_format.type"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
         "\"function\":{\"parameters\":{}}}]}",
         "tools[0].function.name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct proto_val *r = gen(&c, cases[i].params);
        CHECKF(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), cases[i].want),
               "%s -> %lld %s", cases[i].params, (long long)resp_error_code(r), resp_error_msg(r));
        proto_val_free(r);
    }
    tconn_close(&c);
}

/* Many clients at once are all served, and ping answers meanwhile. */
static void test_many_clients_and_ping(void)
{
    NEED();
    enum { N = 200 };
    static struct tconn cs[N];
    for (int i = 0; i < N; i++) {
        CHECK(tconn_open(&cs[i], D.sock));
        char *line = ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"engine.generate\","
                                 "\"params\":{\"prompt\":\"Client %d says\",\"max_tokens\":%d}}\n",
                                 i, i, SANITIZED ? 2 : 4);
        CHECK(tconn_send(&cs[i], line));
        free(line);
    }
    struct tconn p;
    CHECK(tconn_open(&p, D.sock));
    int64_t worst = 0;
    for (int k = 0; k < 5; k++) {
        int64_t t0 = ag_now_ms();
        struct proto_val *r = tcall(&p, 100 + k, "ping", NULL);
        CHECK(r && proto_get(r, "result"));
        proto_val_free(r);
        if (ag_now_ms() - t0 > worst) worst = ag_now_ms() - t0;
    }
    printf("  slowest ping while %d generations run: %lld ms\n", N, (long long)worst);
    tconn_close(&p);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        struct proto_val *r = read_response(&cs[i], NULL, NULL);
        ok += proto_get(r, "result") != NULL;
        proto_val_free(r);
        tconn_close(&cs[i]);
    }
    CHECKF(ok == N, "%d of %d served", ok, N);
    CHECK(wait_idle());
}

/* Tool calls by the real model against random schemas all parse and validate (the full 1,000
 * run in `make bench`). */
static void test_tool_calls_validate(void)
{
    NEED();
    const int n = SANITIZED ? 6 : 40;
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    int ok = 0;
    for (int i = 0; i < n; i++) {
        struct ag_buf schema;
        ag_buf_init(&schema);
        gen_tool_schema(&schema, (uint64_t)i + 1);
        char *p = ag_asprintf(
            "{\"messages\":[{\"role\":\"user\",\"content\":\"Call the tool with sensible "
            "values (case %d).\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
            "\"tool_%d\",\"description\":\"A test tool\",\"parameters\":%s}}],"
            "\"tool_choice\":\"required\",\"max_tokens\":400,\"temperature\":0.7,\"seed\":%d}",
            i, i, schema.data, i);
        struct proto_val *r = gen(&c, p);
        free(p);
        const struct proto_val *res = proto_get(r, "result");
        const struct proto_val *calls = proto_get(res, "tool_calls");
        const char *args = proto_get_str(proto_get(proto_at(calls, 0), "function"), "arguments");
        struct ag_err err = {0};
        int rc = args ? proto_schema_validate_text(schema.data, args, &err) : -1;
        CHECKF(proto_len(calls) == 1 && rc == 0, "case %d: %s; schema %s; args %s; %s", i, err.msg,
               schema.data, args ? args : "(none)",
               proto_get_str(res, "finish_reason") ?: resp_error_msg(r));
        ok += rc == 0;
        proto_val_free(r);
        ag_buf_release(&schema);
    }
    printf("  %d of %d tool calls parsed and validated\n", ok, n);
    tconn_close(&c);
}

static void test_json_schema_reply(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":"
                         "\"string\"},\"age\":{\"type\":\"integer\"}},\"required\":[\"name\","
                         "\"age\"]}";
    char *p =
        ag_asprintf("{\"messages\":[{\"role\":\"user\",\"content\":\"Invent a person.\"}],"
                    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
                    "\"name\":\"person\",\"schema\":%s}},\"max_tokens\":60,\"temperature\":0}",
                    schema);
    struct proto_val *r = gen(&c, p);
    free(p);
    const char *text = proto_get_str(proto_get(r, "result"), "text");
    struct ag_err err = {0};
    CHECKF(text && proto_schema_validate_text(schema, text, &err) == 0, "%s: %s", text, err.msg);
    CHECK_STR(proto_get_str(proto_get(r, "result"), "finish_reason"), "stop");
    proto_val_free(r);
    /* A schema outside the subset is refused with the compiler's message. */
    r = gen(&c, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\","
                "\"json_schema\":{\"schema\":{\"type\":\"strin\"}}}}");
    CHECKF(resp_error_code(r) == -32013 && strstr(resp_error_msg(r), "strin"), "%s",
           resp_error_msg(r));
    proto_val_free(r);
    tconn_close(&c);
}

static void test_agentctl_generate_and_model(void)
{
    NEED();
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s generate Name a color 2>&1", bin_dir(),
             D.sock);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n > 1, "exit %d: '%s'", st, out);
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s model 2>&1", bin_dir(), D.sock);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    st = pclose(p);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, "state    ready") &&
               strstr(out, "kv cache"),
           "'%s'", out);
}

static void test_no_model(void)
{
    struct tdaemon d;
    CHECK(tdaemon_start(&d));
    struct tconn c;
    CHECK(tconn_open(&c, d.sock));
    struct proto_val *r = tcall(&c, 1, "engine.generate", "{\"prompt\":\"x\"}");
    CHECK(resp_error_code(r) == -32013 && strstr(resp_error_msg(r), "--model"));
    proto_val_free(r);
    r = tcall(&c, 2, "model.list", NULL);
    CHECK(proto_len(proto_get(proto_get(r, "result"), "models")) == 0);
    proto_val_free(r);
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&d));
}

/* A request that needs more KV pages than the whole cache has is refused with the counts;
 * requests that fit wait for pages and are all served. */
static void test_small_cache(void)
{
    if (access(MODEL, R_OK) != 0) SKIP("no " MODEL);
    struct tdaemon d;
    CHECK(tdaemon_init(&d));
    const char *args[] = {"--model", MODEL, "--ctx", "1024", "--kv-size", "256", NULL};
    CHECK(tdaemon_start_args(&d, args));
    struct tconn c;
    CHECK(tconn_open(&c, d.sock));
    struct proto_val *r = NULL;
    for (int i = 0; i < 200; i++) { /* the model loads in the background */
        proto_val_free(r);
        r = tcall(&c, 1, "model.status", NULL);
        const char *st = proto_get_str(proto_get(r, "result"), "state");
        if (st && strcmp(st, "ready") == 0) break;
        usleep(50000);
    }
    proto_val_free(r);
    r = gen(&c, "{\"prompt\":\"Hello\",\"max_tokens\":600}");
    CHECKF(resp_error_code(r) == -32006 && strstr(resp_error_msg(r), "KV pages"), "%s",
           resp_error_msg(r));
    proto_val_free(r);
    /* Four requests of 100 tokens each need 28 pages; the cache has 16: they take turns. */
    struct tconn cs[4];
    for (int i = 0; i < 4; i++) {
        CHECK(tconn_open(&cs[i], d.sock));
        char *line = ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"engine.generate\","
                                 "\"params\":{\"prompt\":\"Turn %d\",\"max_tokens\":%d,"
                                 "\"ignore_eos\":true}}\n",
                                 i, i, SANITIZED ? 90 : 100);
        CHECK(tconn_send(&cs[i], line));
        free(line);
    }
    for (int i = 0; i < 4; i++) {
        r = read_response(&cs[i], NULL, NULL);
        CHECKF(proto_get(r, "result") != NULL, "request %d: %s", i, resp_error_msg(r));
        proto_val_free(r);
        tconn_close(&cs[i]);
    }
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&d));
}

static void test_bad_model_file(void)
{
    struct tdaemon d;
    CHECK(tdaemon_init(&d));
    char bad[400];
    snprintf(bad, sizeof(bad), "%s/bad.gguf", d.dir);
    FILE *f = fopen(bad, "w");
    fputs("GGUF but not really", f);
    fclose(f);
    const char *args[] = {"--model", bad, NULL};
    CHECK(tdaemon_start_args(&d, args));
    struct tconn c;
    CHECK(tconn_open(&c, d.sock));
    struct proto_val *r = NULL;
    for (int i = 0; i < 100; i++) { /* wait for the load to fail */
        proto_val_free(r);
        r = tcall(&c, 1, "model.status", NULL);
        const char *st = proto_get_str(proto_get(r, "result"), "state");
        if (st && strcmp(st, "failed") == 0) break;
        usleep(20000);
    }
    CHECK_STR(proto_get_str(proto_get(r, "result"), "state"), "failed");
    CHECK(proto_get_str(proto_get(r, "result"), "error") != NULL);
    proto_val_free(r);
    r = tcall(&c, 2, "engine.generate", "{\"prompt\":\"x\"}");
    CHECK(resp_error_code(r) == -32013 && strstr(resp_error_msg(r), "failed to load"));
    proto_val_free(r);
    r = tcall(&c, 3, "ping", NULL);
    CHECK(r && proto_get(r, "result"));
    proto_val_free(r);
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&d));
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    if (access(MODEL, R_OK) == 0 && tdaemon_init(&D)) {
        const char *args[] = {"--model", MODEL, "--ctx", "1024", "--kv-size", "8192", NULL};
        UP = tdaemon_start_args(&D, args);
        for (int i = 0; UP && i < 600; i++) { /* the model loads in the background */
            struct proto_val *r = status();
            const char *st = proto_get_str(proto_get(r, "result"), "state");
            bool ready = st && strcmp(st, "ready") == 0;
            proto_val_free(r);
            if (ready) break;
            usleep(50000);
        }
    }
    RUN(test_status_and_tokenize);
    RUN(test_prompt_says_paris);
    RUN(test_streaming_matches_result);
    RUN(test_streaming_hides_calls);
    RUN(test_stop_strings);
    RUN(test_batched_equals_alone);
    RUN(test_prefix_sharing);
    RUN(test_context_overflow);
    RUN(test_cancel_by_request);
    RUN(test_cancel_by_disconnect);
    RUN(test_bad_params);
    RUN(test_many_clients_and_ping);
    RUN(test_tool_calls_validate);
    RUN(test_json_schema_reply);
    RUN(test_agentctl_generate_and_model);
    RUN(test_no_model);
    RUN(test_small_cache);
    RUN(test_bad_model_file);
    if (UP && !tdaemon_cleanup(&D)) test__failed++;
    return TEST_END();
}
