/*
 * test_protocol.c - unit tests of the JSON values, NDJSON framing, the JSON-RPC codec, the
 * catalogue and the parameter helpers.
 */
#include "../protocol/protocol.h"
#include "test.h"

static struct proto_val *parse(const char *s)
{
    return proto_parse(s, strlen(s), NULL);
}

static void test_json_roundtrip(void)
{
    struct proto_val *v = parse("{\"a\":[1,2.5,\"x\\n\"],\"b\":{\"c\":true,\"d\":null}}");
    CHECK(v != NULL);
    CHECK(proto_type(v) == PROTO_OBJECT);
    CHECK(proto_len(proto_get(v, "a")) == 3);
    CHECK(proto_is_int(proto_at(proto_get(v, "a"), 0)));
    CHECK(!proto_is_int(proto_at(proto_get(v, "a"), 1)));
    CHECK_STR(proto_str(proto_at(proto_get(v, "a"), 2)), "x\n");
    CHECK(proto_bool(proto_get(proto_get(v, "b"), "c"), false));
    CHECK(proto_type(proto_get(proto_get(v, "b"), "d")) == PROTO_NULL);
    char *s = proto_print(v);
    CHECK(strchr(s, '\n') == NULL); /* compact output never breaks NDJSON framing */
    struct proto_val *w = parse(s);
    CHECK(proto_equal(v, w));
    free(s);
    proto_val_free(v);
    proto_val_free(w);
}

static void test_json_errors(void)
{
    struct ag_err err = {0};
    CHECK(proto_parse("{\"a\":", 5, &err) == NULL);
    CHECK(err.code == AG_EPARSE);
    CHECK(proto_parse("{} {}", 5, &err) == NULL);
    CHECK(strstr(err.msg, "after the value") != NULL);
    CHECK(proto_parse("", 0, &err) == NULL);
    CHECK(proto_parse("\xff\xfe\x00garbage", 10, &err) == NULL);
    struct proto_val *v = proto_parse("  [1]  \r\n", 9, &err);
    CHECK(v != NULL);
    proto_val_free(v);
}

static void test_json_builders(void)
{
    struct proto_val *o = proto_obj();
    proto_add_str(o, "s", "he said \"hi\"\t");
    proto_add_int(o, "i", 9007199254740991LL);
    proto_add_bool(o, "b", true);
    proto_add_null(o, "n");
    proto_add_raw(o, "r", "{\"x\":1}");
    proto_add_raw(o, "bad", "{not json");
    struct proto_val *a = proto_add(o, "a", proto_arr());
    proto_push(a, proto_new_num(1.5));
    proto_set(o, "i", proto_new_int(7));
    proto_del(o, "n");
    CHECK(proto_int(proto_get(o, "i"), 0) == 7);
    CHECK(proto_get(o, "n") == NULL);
    CHECK(proto_int(proto_get(proto_get(o, "r"), "x"), 0) == 1);
    CHECK_STR(proto_get_str(o, "bad"), "{not json");
    CHECK(proto_num(proto_at(a, 0), 0) == 1.5);
    struct ag_buf b;
    ag_buf_init(&b);
    proto_buf_quote(&b, "a\"b\\c\n\x01");
    CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    ag_buf_release(&b);
    proto_val_free(o);
}

static void test_framer_basic(void)
{
    struct proto_framer f;
    const char *line;
    size_t len;
    proto_framer_init(&f, 64);
    proto_framer_feed(&f, "{\"a\":1}\n\n{\"b\"", 13);
    CHECK(proto_framer_next(&f, &line, &len) == 1);
    CHECK(len == 7 && memcmp(line, "{\"a\":1}", 7) == 0);
    CHECK(proto_framer_next(&f, &line, &len) == 0); /* blank line skipped, rest incomplete */
    CHECK(proto_framer_pending(&f) == 4);
    proto_framer_feed(&f, ":2}\r\n", 5);
    CHECK(proto_framer_next(&f, &line, &len) == 1);
    CHECK(len == 7 && memcmp(line, "{\"b\":2}", 7) == 0); /* CRLF tolerated */
    CHECK(proto_framer_next(&f, &line, &len) == 0);
    CHECK(proto_framer_pending(&f) == 0);
    proto_framer_release(&f);
}

static void test_framer_byte_by_byte(void)
{
    struct proto_framer f;
    const char *msg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    const char *line;
    size_t len;
    int got = 0;
    proto_framer_init(&f, 1024);
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; msg[i]; i++) {
            proto_framer_feed(&f, msg + i, 1);
            while (proto_framer_next(&f, &line, &len) == 1) {
                CHECK(len == strlen(msg) - 1);
                got++;
            }
        }
    CHECK(got == 3);
    proto_framer_release(&f);
}

static void test_framer_oversized(void)
{
    struct proto_framer f;
    const char *line;
    size_t len;
    char big[300];
    memset(big, 'x', sizeof(big));
    proto_framer_init(&f, 100);
    /* An oversized line split over reads: reported once, dropped, then framing resumes. */
    proto_framer_feed(&f, big, 150);
    CHECK(proto_framer_next(&f, &line, &len) == AG_ETOOBIG);
    CHECK(proto_framer_next(&f, &line, &len) == 0);
    proto_framer_feed(&f, big, 150);
    CHECK(proto_framer_next(&f, &line, &len) == 0);
    CHECK(f.in.len < 200); /* memory stays bounded */
    proto_framer_feed(&f, "xx\n{}\n", 6);
    CHECK(proto_framer_next(&f, &line, &len) == 1);
    CHECK(len == 2 && memcmp(line, "{}", 2) == 0);
    /* An oversized line that arrives whole with its newline. */
    char whole[202];
    memset(whole, 'y', 200);
    whole[200] = '\n';
    proto_framer_feed(&f, whole, 201);
    proto_framer_feed(&f, "[]\n", 3);
    CHECK(proto_framer_next(&f, &line, &len) == AG_ETOOBIG);
    CHECK(proto_framer_next(&f, &line, &len) == 1);
    CHECK(len == 2 && memcmp(line, "[]", 2) == 0);
    CHECK(f.n_oversized == 2);
    /* Exactly max_frame bytes is accepted. */
    memset(whole, 'z', 100);
    whole[100] = '\n';
    proto_framer_feed(&f, whole, 101);
    CHECK(proto_framer_next(&f, &line, &len) == 1 && len == 100);
    proto_framer_release(&f);
}

static int parse_req(const char *s, struct proto_req *req, struct proto_val **bad_id,
                     struct ag_err *err)
{
    return proto_req_parse(s, strlen(s), req, bad_id, err);
}

static void test_rpc_parse_ok(void)
{
    struct proto_req req;
    struct proto_val *bad = NULL;
    struct ag_err err = {0};
    CHECK(parse_req("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"agent.get\",\"params\":{\"name\":"
                    "\"x\"}}",
                    &req, &bad, &err) == 0);
    CHECK_STR(req.method, "agent.get");
    CHECK(proto_int(req.id, 0) == 7);
    CHECK_STR(proto_get_str(req.params, "name"), "x");
    proto_req_release(&req);
    CHECK(parse_req("{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}", &req, &bad, &err) == 0);
    CHECK(req.id == NULL); /* a notification */
    CHECK(req.params == NULL);
    proto_req_release(&req);
    CHECK(parse_req("{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"ping\",\"params\":null}",
                    &req, &bad, &err) == 0);
    CHECK_STR(proto_str(req.id), "abc");
    proto_req_release(&req);
}

static void test_rpc_parse_errors(void)
{
    static const struct {
        const char *line;
        int code;
        const char *msg;
        int has_id;
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",", AG_EPARSE, "invalid JSON", 0},
        {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", AG_EPROTO, "batch", 0},
        {"42", AG_EPROTO, "must be a JSON object, got number", 0},
        {"{\"id\":1,\"method\":\"ping\"}", AG_EPROTO, "jsonrpc: expected \"2.0\"", 1},
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", AG_EPROTO, "jsonrpc", 1},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}", AG_EPROTO, "method: expected a non-empty string", 1},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", AG_EPROTO, "method", 1},
        {"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", AG_EPROTO, "id: expected", 0},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", AG_EPROTO, "id: expected", 0},
        {"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"params\":[1]}", AG_EPARAMS,
         "params: expected an object, got array", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct proto_req req;
        struct proto_val *bad = NULL;
        struct ag_err err = {0};
        int rc = parse_req(cases[i].line, &req, &bad, &err);
        CHECKF(rc == cases[i].code, "case %zu: rc %d", i, rc);
        CHECKF(strstr(err.msg, cases[i].msg) != NULL, "case %zu: message '%s'", i, err.msg);
        CHECKF((bad != NULL) == cases[i].has_id, "case %zu: id recovery", i);
        proto_val_free(bad);
    }
}

static void test_rpc_write(void)
{
    struct ag_buf b;
    struct proto_val *id = proto_new_str("q\"1");
    struct proto_val *data = proto_obj();
    proto_add_str(data, "field", "tools[1]");
    ag_buf_init(&b);
    proto_write_result(&b, id, NULL);
    CHECK_STR(b.data, "{\"jsonrpc\":\"2.0\",\"id\":\"q\\\"1\",\"result\":{}}\n");
    ag_buf_reset(&b);
    proto_write_error(&b, NULL, AG_ENOTFOUND, "agent 'x' not found", data);
    CHECK_STR(b.data, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":"
                      "\"agent 'x' not found\",\"data\":{\"type\":\"not_found\",\"field\":"
                      "\"tools[1]\"}}}\n");
    ag_buf_reset(&b);
    proto_write_request(&b, 3, "ping", NULL);
    CHECK_STR(b.data, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n");
    ag_buf_reset(&b);
    proto_write_notification(&b, "run.event", data);
    CHECK(strstr(b.data, "\"method\":\"run.event\",\"params\":{\"field\"") != NULL);
    ag_buf_release(&b);
    proto_val_free(id);
    proto_val_free(data);
}

static void test_catalog(void)
{
    /* The methods' table moved to the daemon (tests/test_daemon.c, test_method_table). */
    size_t ne;
    const struct proto_error_info *e = proto_errors(&ne);
    for (size_t i = 0; i < ne; i++) {
        CHECK(proto_rpc_code(e[i].ag_code) == e[i].rpc_code);
        CHECK(proto_ag_code(e[i].rpc_code) == e[i].ag_code);
        for (size_t j = i + 1; j < ne; j++) CHECK(e[i].rpc_code != e[j].rpc_code);
    }
    CHECK(proto_rpc_code(AG_ESPEC) == -32008);
    CHECK(proto_rpc_code(AG_EPARSE) == PROTO_RPC_PARSE_ERROR);
    size_t nev;
    proto_events(&nev);
    CHECK(nev >= 8);
}

static void test_params(void)
{
    struct proto_val *p =
        parse("{\"name\":\"x\",\"n\":5,\"f\":1.5,\"b\":true,\"o\":{},\"nmae\":1}");
    struct ag_err err = {0};
    const char *s;
    int64_t n;
    bool b;
    const struct proto_val *o;
    CHECK(proto_param_str(p, "name", true, &s, &err) == 0 && strcmp(s, "x") == 0);
    CHECK(proto_param_str(p, "n", true, &s, &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "params.n: expected a string, got number");
    CHECK(proto_param_str(p, "missing", true, &s, &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "params.missing: required");
    CHECK(proto_param_str(p, "missing", false, &s, &err) == 0);
    CHECK(proto_param_int(p, "n", true, 1, 10, &n, &err) == 0 && n == 5);
    CHECK(proto_param_int(p, "n", true, 6, 10, &n, &err) == AG_EPARAMS);
    CHECK(proto_param_int(p, "f", true, 0, 10, &n, &err) == AG_EPARAMS);
    CHECK(proto_param_bool(p, "b", true, &b, &err) == 0 && b);
    CHECK(proto_param_obj(p, "o", true, &o, &err) == 0);
    CHECK(proto_param_obj(p, "b", true, &o, &err) == AG_EPARAMS);
    static const char *const keys[] = {"name", "n", "f", "b", "o", NULL};
    CHECK(proto_param_known(p, keys, &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "params.nmae: unknown parameter (did you mean 'name'?)");
    proto_val_free(p);
}

/* Runs proto_schema_check_params(schema, params) and returns the message ("" when valid). */
static const char *schema_params(const char *schema, const char *params)
{
    static struct ag_err err;
    struct proto_val *s = NULL, *p = params ? parse(params) : NULL;
    memset(&err, 0, sizeof(err));
    CHECKF(proto_schema_parse(schema, &s, &err) == 0, "%s: %s", schema, err.msg);
    int rc = proto_schema_check_params(s, p, &err);
    CHECKF(rc == 0 || rc == AG_EPARAMS, "%s on %s: rc %d", schema, params, rc);
    if (rc == 0) CHECKF(err.msg[0] == '\0', "valid but err set: %s", err.msg);
    proto_val_free(s);
    proto_val_free(p);
    return rc == 0 ? "" : err.msg;
}

/* Every message shape of the parameters voice, word for word: handlers' tests and clients rely
 * on them, so a change of wording must fail here first. */
static void test_schema_params_messages(void)
{
    static const char get[] =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"}},"
        "\"required\":[\"name\"],\"additionalProperties\":false}";
    CHECK_STR(schema_params(get, "{\"name\":\"x\"}"), "");
    CHECK_STR(schema_params(get, NULL), "params.name: required");
    CHECK_STR(schema_params(get, "null"), "params.name: required");
    CHECK_STR(schema_params(get, "{\"name\":null}"), "params.name: required");
    CHECK_STR(schema_params(get, "{\"name\":5}"), "params.name: expected a string, got number");
    CHECK_STR(schema_params(get, "{\"nme\":\"a\"}"),
              "params.nme: unknown parameter (did you mean 'name'?)");
    CHECK_STR(schema_params(get, "{\"zzzzzz\":1}"), "params.zzzzzz: unknown parameter");
    CHECK_STR(schema_params(get, "[]"), "params: expected an object, got array");

    static const char types[] = "{\"type\":\"object\",\"properties\":{"
                                "\"n\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100},"
                                "\"seed\":{\"type\":\"integer\"},"
                                "\"after\":{\"type\":\"integer\",\"minimum\":0},"
                                "\"t\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
                                "\"x\":{\"type\":\"number\"},"
                                "\"b\":{\"type\":\"boolean\"},"
                                "\"o\":{\"type\":\"object\"},"
                                "\"a\":{\"type\":\"array\"},"
                                "\"sn\":{\"type\":[\"string\",\"null\"]},"
                                "\"si\":{\"type\":[\"string\",\"integer\",\"array\"]},"
                                "\"mode\":{\"enum\":[\"fast\",\"slow\",3]},"
                                "\"kind\":{\"const\":\"tool\"},"
                                "\"text\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":4},"
                                "\"code\":{\"type\":\"string\",\"minLength\":3},"
                                "\"nope\":false},"
                                "\"additionalProperties\":false}";
    CHECK_STR(schema_params(types, "{}"), "");
    CHECK_STR(schema_params(types,
                            "{\"n\":5,\"t\":1.5,\"b\":false,\"o\":{},\"a\":[],\"sn\":null,"
                            "\"si\":[1],\"mode\":3,\"kind\":\"tool\",\"text\":\"\\u00e9\\u00e9\"}"),
              "");
    CHECK_STR(schema_params(types, "{\"n\":0}"), "params.n: expected an integer from 1 to 100");
    CHECK_STR(schema_params(types, "{\"n\":1.5}"), "params.n: expected an integer from 1 to 100");
    CHECK_STR(schema_params(types, "{\"n\":\"5\"}"), "params.n: expected an integer from 1 to 100");
    CHECK_STR(schema_params(types, "{\"seed\":true}"),
              "params.seed: expected an integer from -9223372036854775808 to 9223372036854775807");
    CHECK_STR(schema_params(types, "{\"after\":-1}"),
              "params.after: expected an integer from 0 to 9223372036854775807");
    CHECK_STR(schema_params(types, "{\"t\":\"hot\"}"), "params.t: expected a number from 0 to 2");
    CHECK_STR(schema_params(types, "{\"t\":2.5}"), "params.t: expected a number from 0 to 2");
    CHECK_STR(schema_params(types, "{\"x\":[]}"), "params.x: expected a number, got array");
    CHECK_STR(schema_params(types, "{\"b\":1}"), "params.b: expected a boolean, got number");
    CHECK_STR(schema_params(types, "{\"o\":[]}"), "params.o: expected an object, got array");
    CHECK_STR(schema_params(types, "{\"a\":{}}"), "params.a: expected an array, got object");
    CHECK_STR(schema_params(types, "{\"sn\":5}"),
              "params.sn: expected a string or null, got number");
    CHECK_STR(schema_params(types, "{\"si\":true}"),
              "params.si: expected a string, an integer or an array, got boolean");
    CHECK_STR(schema_params(types, "{\"mode\":\"medium\"}"),
              "params.mode: expected one of fast, slow, 3");
    CHECK_STR(schema_params(types, "{\"kind\":\"x\"}"), "params.kind: expected tool");
    CHECK_STR(schema_params(types, "{\"text\":\"\"}"), "params.text: must not be empty");
    CHECK_STR(schema_params(types, "{\"text\":\"abcde\"}"),
              "params.text: must be at most 4 characters");
    CHECK_STR(schema_params(types, "{\"code\":\"ab\"}"),
              "params.code: must be at least 3 characters");
    CHECK_STR(schema_params(types, "{\"nope\":1}"), "params.nope: not allowed");
    /* A null member is absent (optional here), as proto_param_* have always treated it. */
    CHECK_STR(schema_params(types, "{\"n\":null,\"b\":null}"), "");
}

static void test_schema_params_nested(void)
{
    static const char sbx[] =
        "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
        "\"limits\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
        "\"memory_mb\":{\"type\":\"integer\",\"minimum\":16,\"maximum\":65536},"
        "\"pids\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":4096}}},"
        "\"allow\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
        "\"stop\":{\"anyOf\":[{\"type\":\"string\",\"minLength\":1},"
        "{\"type\":\"array\",\"maxItems\":4,\"items\":{\"type\":\"string\",\"minLength\":1}}]},"
        "\"messages\":{\"type\":\"array\",\"minItems\":1,\"items\":{\"$ref\":\"#/$defs/msg\"}},"
        "\"tags\":{\"type\":\"array\",\"minItems\":2,\"items\":{\"type\":\"integer\"}}},"
        "\"$defs\":{\"msg\":{\"type\":\"object\",\"required\":[\"role\"],\"properties\":{"
        "\"role\":{\"enum\":[\"system\",\"user\",\"assistant\",\"tool\"]}}}}}";
    CHECK_STR(schema_params(sbx,
                            "{\"limits\":{\"memory_mb\":64},\"allow\":[\"a\"],\"stop\":[\"x\"],"
                            "\"messages\":[{\"role\":\"user\"}]}"),
              "");
    CHECK_STR(schema_params(sbx, "{\"limits\":{\"memory_mb\":8}}"),
              "params.limits.memory_mb: expected an integer from 16 to 65536");
    CHECK_STR(schema_params(sbx, "{\"limits\":{\"pid\":8}}"),
              "params.limits.pid: unknown parameter (did you mean 'pids'?)");
    CHECK_STR(schema_params(sbx, "{\"limits\":3}"),
              "params.limits: expected an object, got number");
    CHECK_STR(schema_params(sbx, "{\"allow\":[\"a\",\"b\",2]}"),
              "params.allow[2]: expected a string, got number");
    CHECK_STR(schema_params(sbx, "{\"stop\":\"\"}"), "params.stop: must not be empty");
    CHECK_STR(schema_params(sbx, "{\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}"),
              "params.stop: at most 4 strings");
    CHECK_STR(schema_params(sbx, "{\"stop\":[\"a\",\"\"]}"), "params.stop[1]: must not be empty");
    CHECK_STR(schema_params(sbx, "{\"stop\":5}"),
              "params.stop: expected a string or an array, got number");
    CHECK_STR(schema_params(sbx, "{\"messages\":[]}"), "params.messages: must not be empty");
    CHECK_STR(schema_params(sbx, "{\"messages\":[{\"role\":\"robot\"}]}"),
              "params.messages[0].role: expected one of system, user, assistant, tool");
    CHECK_STR(schema_params(sbx, "{\"messages\":[{}]}"), "params.messages[0].role: required");
    CHECK_STR(schema_params(sbx, "{\"tags\":[1]}"), "params.tags: at least 2 integers");
    /* Unknown names come first, then properties in the schema's order. */
    CHECK_STR(schema_params(sbx, "{\"limits\":3,\"allow\":4,\"bogus\":1}"),
              "params.bogus: unknown parameter");
    CHECK_STR(schema_params(sbx, "{\"allow\":4,\"limits\":3}"),
              "params.limits: expected an object, got number");
}

static void test_schema_parse_and_text(void)
{
    struct ag_err err = {0};
    struct proto_val *s = NULL;
    CHECK(proto_schema_parse("{\"type\":\"strin\"}", &s, &err) == AG_EINVAL && !s);
    CHECK_STR(err.msg, "schema #.type: not a JSON Schema type");
    CHECK(proto_schema_parse("{\"properties\":{\"a\":{\"$ref\":\"#/$defs/x\"}}}", &s, &err) ==
          AG_EINVAL);
    CHECK_STR(err.msg, "schema #.properties.a.$ref: does not resolve");
    CHECK(proto_schema_parse("{\"required\":\"a\"}", &s, &err) == AG_EINVAL);
    CHECK(proto_schema_parse("{\"maximum\":\"9\"}", &s, &err) == AG_EINVAL);
    CHECK(proto_schema_parse("{", &s, &err) == AG_EINVAL);
    CHECK(proto_schema_parse("{\"type\":[\"string\",\"null\"],\"description\":\"d\"}", &s, &err) ==
          0);
    proto_val_free(s);

    struct proto_val *p = parse("{\"limit\":1000}");
    CHECK(proto_schema_check_params_text("{\"properties\":{\"limit\":{\"type\":\"integer\","
                                         "\"minimum\":1,\"maximum\":100}}}",
                                         p, &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "params.limit: expected an integer from 1 to 100");
    CHECK(proto_schema_check_params_text("{\"type\":\"bogus\"}", p, &err) == AG_EINVAL);
    proto_val_free(p);

    /* The documents voice keeps its JSON pointers. */
    CHECK(proto_schema_validate_text("{\"properties\":{\"city\":{\"type\":\"string\"}}}",
                                     "{\"city\":5}", &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "/city: expected string, got number");
    CHECK(proto_schema_validate_text("{\"required\":[\"unit\"]}", "{}", &err) == AG_EPARAMS);
    CHECK_STR(err.msg, "/: missing required property \"unit\"");
    CHECK(proto_schema_validate_text("{\"items\":{\"enum\":[1,2]}}", "[1,2,3]", &err) ==
          AG_EPARAMS);
    CHECK_STR(err.msg, "/2: not one of the enum values");
    CHECK(proto_schema_validate(NULL, NULL, &err) == 0);
}

static void test_base_helpers(void)
{
    CHECK(ag_levenshtein("instructons", "instructions") == 1);
    CHECK(ag_levenshtein("", "abc") == 3);
    CHECK(ag_levenshtein("same", "same") == 0);
    CHECK_STR(ag_strerror(AG_ENOTFOUND), "not found");
    CHECK_STR(ag_errname(AG_ESPEC), "invalid_definition");
    CHECK_STR(ag_strerror(-9999), "unknown error");
    struct ag_err err;
    CHECK(ag_err_set(&err, AG_EINVAL, "field %s", "x") == AG_EINVAL);
    ag_err_prefix(&err, "%s:%d: ", "f.yaml", 3);
    CHECK_STR(err.msg, "f.yaml:3: field x");
    struct ag_arena a;
    ag_arena_init(&a, 64);
    char *p1 = ag_arena_alloc(&a, 10), *p2 = ag_arena_alloc(&a, 1000);
    CHECK(((uintptr_t)p1 & 15) == 0 && ((uintptr_t)p2 & 15) == 0);
    memset(p2, 1, 1000);
    CHECK_STR(ag_arena_strdup(&a, "hello"), "hello");
    ag_arena_reset(&a);
    ag_arena_release(&a);
    struct ag_buf b;
    ag_buf_init(&b);
    for (int i = 0; i < 1000; i++) ag_buf_printf(&b, "%d,", i);
    ag_buf_consume(&b, 4);
    CHECK(strncmp(b.data, "2,3,", 4) == 0);
    ag_buf_release(&b);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_json_roundtrip);
    RUN(test_json_errors);
    RUN(test_json_builders);
    RUN(test_framer_basic);
    RUN(test_framer_byte_by_byte);
    RUN(test_framer_oversized);
    RUN(test_rpc_parse_ok);
    RUN(test_rpc_parse_errors);
    RUN(test_rpc_write);
    RUN(test_catalog);
    RUN(test_params);
    RUN(test_schema_params_messages);
    RUN(test_schema_params_nested);
    RUN(test_schema_parse_and_text);
    RUN(test_base_helpers);
    return TEST_END();
}
