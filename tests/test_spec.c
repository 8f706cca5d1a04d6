/*
 * test_spec.c - unit tests of agent definitions (protocol/spec.c, yamltree.c, spec_doc.c): the
 * examples load, defaults are filled in, and every kind of bad file gets its exact message,
 * file and line included.
 */
#include "../protocol/protocol.h"
#include "test.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

/* Loads text as if read from a file called name; returns the spec or NULL with err set. */
static struct proto_val *load(const char *name, const char *text, struct ag_err *err)
{
    struct proto_val *v = NULL;
    int rc = proto_spec_load_text(text, strlen(text), name, &v, err);
    return rc == 0 ? v : NULL;
}

/* Checks that text, named name, is refused with AG_ESPEC and exactly the message want. A macro
 * so that a failure names the test's line. */
#define EXPECT_ERR(name, text, want)                                                               \
    do {                                                                                           \
        struct ag_err e_ = {0};                                                                    \
        struct proto_val *v_ = NULL;                                                               \
        int rc_ = proto_spec_load_text((text), strlen(text), (name), &v_, &e_);                    \
        CHECKF(rc_ == AG_ESPEC, "rc %d", rc_);                                                     \
        CHECK(v_ == NULL);                                                                         \
        CHECK_STR(e_.msg, (want));                                                                 \
        proto_val_free(v_);                                                                        \
    } while (0)

/* Same for a spec given as JSON text to proto_spec_validate. */
#define EXPECT_SPEC_ERR(json, want)                                                                \
    do {                                                                                           \
        struct ag_err e_ = {0};                                                                    \
        struct proto_val *in_ = proto_parse((json), strlen(json), NULL), *v_ = NULL;               \
        CHECK(in_ != NULL);                                                                        \
        int rc_ = proto_spec_validate(in_, &v_, &e_);                                              \
        CHECKF(rc_ == AG_ESPEC, "rc %d", rc_);                                                     \
        CHECK(v_ == NULL);                                                                         \
        CHECK_STR(e_.msg, (want));                                                                 \
        proto_val_free(in_);                                                                       \
    } while (0)

static const char *example_dir(void)
{
    /* make test runs from the repository root; fall back to this file's location. */
    static char dir[4096];
    if (access("examples/assistant.agent.yaml", R_OK) == 0) return "examples";
    snprintf(dir, sizeof(dir), "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    snprintf(slash ? slash + 1 : dir, sizeof(dir) - (size_t)(slash ? slash + 1 - dir : 0),
             "../examples");
    return dir;
}

/* Writes text to dir/name and returns the path (caller frees). */
static char *write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char *path = ag_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
    return path;
}

/* ---- good definitions ---- */

static void test_examples_load(void)
{
    const char *dir = example_dir();
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;

    CHECK(d != NULL);
    while (d && (de = readdir(d)) != NULL) {
        if (!ag_str_has_suffix(de->d_name, ".agent.yaml") &&
            !ag_str_has_suffix(de->d_name, ".agent.json"))
            continue;
        char *path = ag_asprintf("%s/%s", dir, de->d_name);
        struct proto_val *spec = NULL, *again = NULL;
        struct ag_err err = {0};
        int rc = proto_spec_load_file(path, &spec, &err);
        CHECKF(rc == 0, "%s: %s", path, err.msg);
        /* A normalized spec is a fixed point: validating it again changes nothing. */
        CHECK(proto_spec_validate(spec, &again, &err) == 0);
        CHECK(proto_equal(spec, again));
        CHECK(proto_spec_name_ok(proto_get_str(spec, "name")));
        CHECK(strlen(proto_get_str(spec, "instructions")) > 100);
        proto_val_free(spec);
        proto_val_free(again);
        free(path);
        n++;
    }
    if (d) closedir(d);
    CHECK(n == 4);
}

static void test_example_contents(void)
{
    char *path = ag_asprintf("%s/researcher.agent.yaml", example_dir());
    struct proto_val *v = NULL;
    struct ag_err err = {0};

    CHECK(proto_spec_load_file(path, &v, &err) == 0);
    const struct proto_val *tools = proto_get(v, "tools");
    CHECK_STR(proto_get_str(proto_at(tools, 0), "name"), "fetch_url");
    CHECK(proto_int(proto_get(proto_at(tools, 0), "timeout_ms"), 0) == 15000);
    CHECK(proto_int(proto_get(proto_at(tools, 1), "timeout_ms"), 0) == 30000);
    CHECK(proto_len(proto_get(proto_get(v, "browse"), "allow")) > 0);
    CHECK(proto_len(proto_get(proto_get(v, "browse"), "deny")) > 0);
    CHECK(proto_len(proto_get(proto_get(v, "memory"), "blocks")) == 2);
    proto_val_free(v);
    free(path);

    path = ag_asprintf("%s/scheduler.agent.json", example_dir());
    CHECK(proto_spec_load_file(path, &v, &err) == 0);
    CHECK_STR(proto_get_str(proto_at(proto_get(v, "triggers"), 0), "cron"), "0 8 * * 1-5");
    proto_val_free(v);
    free(path);
}

static void test_defaults(void)
{
    struct ag_err err = {0};
    struct proto_val *v = load("min.agent.yaml", "name: min\n", &err);
    CHECKF(v != NULL, "%s", err.msg);
    char *s = v ? proto_print(v) : NULL;
    CHECK_STR(s, "{\"name\":\"min\",\"description\":\"\",\"instructions\":\"\","
                 "\"model\":{\"name\":\"default\",\"temperature\":0.7,\"top_p\":1,\"top_k\":40,"
                 "\"min_p\":0,\"max_tokens\":1024,\"repeat_penalty\":1,\"frequency_penalty\":0,"
                 "\"presence_penalty\":0,\"tool_choice\":\"auto\"},"
                 "\"tools\":[],\"mcp\":[],"
                 "\"memory\":{\"blocks\":[],\"recall\":{\"enabled\":true,\"top_k\":5},"
                 "\"context\":{\"policy\":\"summarize\"}},"
                 "\"sandbox\":{\"memory_mb\":512,\"timeout_s\":30,\"pids\":64,\"disk_mb\":256,"
                 "\"network\":false},"
                 "\"browse\":{\"allow\":[],\"deny\":[],\"max_bytes\":2097152,\"timeout_s\":20,"
                 "\"robots\":true},"
                 "\"permissions\":{\"can_message\":[],\"tools\":[]},"
                 "\"limits\":{\"max_steps\":20,\"max_tool_calls\":50,\"max_tokens\":32768,"
                 "\"max_wall_s\":600},"
                 "\"triggers\":[]}");
    free(s);
    proto_val_free(v);

    /* Members come out in schema order whatever the input order; null means "use the default". */
    v = load("order.agent.yaml",
             "limits: {max_steps: 3}\nmemory:\nname: order\ntools:\n  - name: shell\n"
             "    config: {image: debian, mounts: [a, b]}\n    require_approval: true\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    CHECK_STR(proto_key(proto_child(v)), "name");
    CHECK(proto_int(proto_get(proto_get(v, "limits"), "max_steps"), 0) == 3);
    CHECK(proto_int(proto_get(proto_get(v, "limits"), "max_tool_calls"), 0) == 50);
    CHECK(proto_bool(proto_get(proto_get(proto_get(v, "memory"), "recall"), "enabled"), false));
    const struct proto_val *tool = proto_at(proto_get(v, "tools"), 0);
    s = proto_print(tool);
    CHECK_STR(s, "{\"name\":\"shell\",\"timeout_ms\":30000,\"enabled\":true,"
                 "\"require_approval\":true,\"config\":{\"image\":\"debian\",\"mounts\":[\"a\","
                 "\"b\"]}}");
    free(s);
    proto_val_free(v);
}

static void test_bare_model_string(void)
{
    struct ag_err err = {0};
    struct proto_val *v = load("m.agent.yaml", "name: m\nmodel: qwen2.5-7b-instruct\n", &err);
    CHECKF(v != NULL, "%s", err.msg);
    const struct proto_val *model = proto_get(v, "model");
    CHECK(proto_type(model) == PROTO_OBJECT);
    CHECK_STR(proto_get_str(model, "name"), "qwen2.5-7b-instruct");
    CHECK(proto_num(proto_get(model, "temperature"), 0) == 0.7);
    CHECK(proto_int(proto_get(model, "max_tokens"), 0) == 1024);
    CHECK(proto_get(model, "seed") == NULL); /* optional without a default: left out */
    proto_val_free(v);

    v = load("m.agent.yaml", "name: m\nmodel: {name: big, seed: 42, context: 8192, top_p: 0.9}\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    CHECK(proto_int(proto_get(proto_get(v, "model"), "seed"), 0) == 42);
    CHECK(proto_int(proto_get(proto_get(v, "model"), "context"), 0) == 8192);
    proto_val_free(v);

    EXPECT_ERR("m.agent.yaml", "name: m\nmodel: [a]\n",
               "m.agent.yaml:2: model: expected a model name or an object, got array");
    EXPECT_ERR("m.agent.yaml", "name: m\nmodel: ''\n", "m.agent.yaml:2: model: must not be empty");
}

/* Plain scalars resolve by the YAML 1.2 core schema; quoted ones are strings. */
static void test_scalars(void)
{
    struct ag_err err = {0};
    struct proto_val *v =
        load("s.agent.yaml",
             "name: s\ndescription: yes\ninstructions: !!str 12\nlimits:\n  max_steps: 0x10\n"
             "  max_tool_calls: 0o17\n  max_tokens: 1e3\nmodel:\n  temperature: .5\n"
             "  seed: -3\nsandbox:\n  network: True\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    CHECK_STR(proto_get_str(v, "description"), "yes"); /* YAML 1.1 would say true */
    CHECK_STR(proto_get_str(v, "instructions"), "12");
    const struct proto_val *limits = proto_get(v, "limits");
    CHECK(proto_int(proto_get(limits, "max_steps"), 0) == 16);
    CHECK(proto_int(proto_get(limits, "max_tool_calls"), 0) == 15);
    CHECK(proto_int(proto_get(limits, "max_tokens"), 0) == 1000);
    CHECK(proto_num(proto_get(proto_get(v, "model"), "temperature"), 0) == 0.5);
    CHECK(proto_int(proto_get(proto_get(v, "model"), "seed"), 0) == -3);
    CHECK(proto_bool(proto_get(proto_get(v, "sandbox"), "network"), false));
    proto_val_free(v);

    EXPECT_ERR("s.agent.yaml", "name: s\nlimits:\n  max_steps: \"5\"\n",
               "s.agent.yaml:3: limits.max_steps: expected an integer from 1 to 1000, got string");
    EXPECT_ERR("s.agent.yaml", "name: '123'\ndescription: 7\n",
               "s.agent.yaml:2: description: expected a string, got number");
    EXPECT_ERR("s.agent.yaml", "name: s\nmodel:\n  temperature: .inf\n",
               "s.agent.yaml:3: model.temperature: '.inf': infinite and NaN numbers are not "
               "supported");
    EXPECT_ERR("s.agent.yaml", "name: s\ndescription: !custom x\n",
               "s.agent.yaml:2: description: tag '!custom' is not supported");
    EXPECT_ERR("s.agent.yaml", "name: s\ndescription: \"a\\0b\"\n",
               "s.agent.yaml:2: description: strings must not contain NUL characters");
    EXPECT_ERR("s.agent.yaml", "name: s\nsandbox:\n  network: yes\n",
               "s.agent.yaml:3: sandbox.network: expected true or false, got string");
}

/* ---- refused definitions, one kind each ---- */

static void test_yaml_syntax_error(void)
{
    EXPECT_ERR("bad.agent.yaml", "name: a\ntools: [remember\ndescription: x\n",
               "bad.agent.yaml:3:12: YAML syntax error: did not find expected ',' or ']'");
    EXPECT_ERR("bad.agent.yaml", "name: a\n  description: x\n",
               "bad.agent.yaml:2:14: YAML syntax error: mapping values are not allowed in this "
               "context");
    EXPECT_ERR("bad.agent.yaml", "name: a\n\tdescription: x\n",
               "bad.agent.yaml:2:1: YAML syntax error: found a tab character that violates "
               "indentation");
}

static void test_unknown_field(void)
{
    EXPECT_ERR("assistant.agent.yaml", "name: a\ndescription: x\n\ninstructons: hi\n",
               "assistant.agent.yaml:4: instructons: unknown field (did you mean "
               "'instructions'?)");
    EXPECT_ERR("a.agent.yaml", "name: a\nmodel:\n  name: x\n  temprature: 1\n",
               "a.agent.yaml:4: model.temprature: unknown field (did you mean 'temperature'?)");
    /* A prefix counts as a likely typo too. */
    EXPECT_ERR("a.agent.yaml", "name: a\nlimits:\n  max_wall: 3\n",
               "a.agent.yaml:3: limits.max_wall: unknown field (did you mean 'max_wall_s'?)");
    EXPECT_ERR("a.agent.yaml", "name: a\ntools:\n  - name: x\n    timeout: 5\n",
               "a.agent.yaml:4: tools[0].timeout: unknown field (did you mean 'timeout_ms'?)");
    EXPECT_ERR("a.agent.yaml", "name: a\ncolour: red\n",
               "a.agent.yaml:2: colour: unknown field (expected one of name, description, "
               "instructions, model, tools, mcp, memory, sandbox, browse, permissions, "
               "limits, triggers)");
    EXPECT_ERR("a.agent.yaml", "name: a\nsandbox: {gpu: true}\n",
               "a.agent.yaml:2: sandbox.gpu: unknown field (expected one of memory_mb, cpu_ms, "
               "timeout_s, pids, disk_mb, network)");
    EXPECT_ERR("a.agent.yaml", "name: a\nversion: 3\n",
               "a.agent.yaml:2: version: not allowed in a definition (the daemon numbers "
               "versions as it stores them)");
}

static void test_wrong_types(void)
{
    EXPECT_ERR("t.agent.yaml", "name: t\nmodel:\n  temperature: hot\n",
               "t.agent.yaml:3: model.temperature: expected a number from 0 to 2, got string");
    EXPECT_ERR("t.agent.yaml", "name: t\nmodel:\n  temperature: 2.5\n",
               "t.agent.yaml:3: model.temperature: expected a number from 0 to 2, got 2.5");
    EXPECT_ERR("t.agent.yaml", "name: t\nmodel:\n  top_p: 0\n",
               "t.agent.yaml:3: model.top_p: expected a number greater than 0 and at most 1, "
               "got 0");
    EXPECT_ERR("t.agent.yaml", "name: t\nmodel: {context: 100}\n",
               "t.agent.yaml:2: model.context: expected an integer of at least 256, got 100");
    EXPECT_ERR("t.agent.yaml",
               "name: t\ntools:\n  - remember\n  - name: fetch_url\n    timeout_ms: -5\n",
               "t.agent.yaml:5: tools[1].timeout_ms: expected a positive integer, got -5");
    EXPECT_ERR("t.agent.yaml", "name: t\nlimits:\n  max_steps: 1.5\n",
               "t.agent.yaml:3: limits.max_steps: expected an integer from 1 to 1000, got 1.5");
    EXPECT_ERR("t.agent.yaml", "name: t\nmemory:\n  blocks:\n    - value: hello\n",
               "t.agent.yaml:4: memory.blocks[0]: missing required field 'label'");
    EXPECT_ERR("t.agent.yaml", "name: t\nmemory:\n  blocks: [persona]\n",
               "t.agent.yaml:3: memory.blocks[0]: expected an object (a label), got string");
    EXPECT_ERR("t.agent.yaml", "name: t\nmemory:\n  recall: {top_k: 500}\n",
               "t.agent.yaml:3: memory.recall.top_k: expected an integer from 1 to 100, got 500");
    EXPECT_ERR("t.agent.yaml", "name: t\nmemory:\n  context: {policy: forget}\n",
               "t.agent.yaml:3: memory.context.policy: expected 'truncate_oldest' or "
               "'summarize', got 'forget'");
    EXPECT_ERR("t.agent.yaml", "name: t\ntools: remember\n",
               "t.agent.yaml:2: tools: expected an array, got string");
    EXPECT_ERR("t.agent.yaml", "name: t\ntools: [3]\n",
               "t.agent.yaml:2: tools[0]: expected a tool name or an object, got number");
    EXPECT_ERR("t.agent.yaml", "name: t\ntools: [{name: x, config: 3}]\n",
               "t.agent.yaml:2: tools[0].config: expected an object, got number");
    EXPECT_ERR("t.agent.yaml", "name: t\nbrowse:\n  allow: [example.com, 'https://x.org/']\n",
               "t.agent.yaml:3: browse.allow[1]: 'https://x.org/' is not a valid host pattern "
               "(expected a host such as 'example.com' or '*.example.com')");
    EXPECT_ERR("t.agent.yaml", "name: t\npermissions:\n  can_message: Bob\n",
               "t.agent.yaml:3: permissions.can_message: expected an array of strings, got "
               "string");
    EXPECT_ERR("t.agent.yaml", "name: t\nsandbox:\n  memory_mb: 8\n",
               "t.agent.yaml:3: sandbox.memory_mb: expected an integer from 16 to 65536, got 8");
    EXPECT_ERR("t.agent.yaml",
               "name: t\nmemory:\n  blocks:\n    - label: x\n      limit: 3\n"
               "      value: abcd\n",
               "t.agent.yaml:6: memory.blocks[0].value: 4 characters, more than the block's "
               "limit of 3");
    EXPECT_ERR("t.agent.yaml", "- name: t\n",
               "t.agent.yaml:1: expected an object at the top level, got array");
    EXPECT_ERR("t.agent.yaml", "just some words\n",
               "t.agent.yaml:1: expected an object at the top level, got string");
}

static void test_bad_name(void)
{
    EXPECT_ERR("n.agent.yaml", "# comment\nname: My Agent\n",
               "n.agent.yaml:2: name: 'My Agent' is not a valid agent name (expected "
               "[a-z0-9][a-z0-9_-]{0,63})");
    EXPECT_ERR("n.agent.yaml", "name: 42\n", "n.agent.yaml:1: name: expected a string, got number");
    EXPECT_ERR("n.agent.yaml", "name:\n", "n.agent.yaml:1: name: expected a string, got null");
    EXPECT_ERR("n.agent.yaml", "\n\ndescription: no name\n",
               "n.agent.yaml:3: missing required field 'name'");
    EXPECT_ERR("n.agent.yaml", "name: t\ntools: [Shell]\n",
               "n.agent.yaml:2: tools[0]: 'Shell' is not a valid tool name (expected "
               "[a-z][a-z0-9_.-]{0,63})");

    CHECK(proto_spec_name_ok("a"));
    CHECK(proto_spec_name_ok("0day"));
    CHECK(proto_spec_name_ok("web-researcher_2"));
    CHECK(!proto_spec_name_ok(""));
    CHECK(!proto_spec_name_ok(NULL));
    CHECK(!proto_spec_name_ok("-x"));
    CHECK(!proto_spec_name_ok("_x"));
    CHECK(!proto_spec_name_ok("Upper"));
    CHECK(!proto_spec_name_ok("a.b"));
    char name[66];
    memset(name, 'a', 64);
    name[64] = '\0';
    CHECK(proto_spec_name_ok(name));
    name[64] = 'a';
    name[65] = '\0';
    CHECK(!proto_spec_name_ok(name));
}

static void test_duplicates(void)
{
    EXPECT_ERR("d.agent.yaml", "name: d\ntools:\n  - shell\n  - python\n  - name: shell\n",
               "d.agent.yaml:5: tools[2]: duplicate tool 'shell'");
    EXPECT_ERR("d.agent.yaml", "name: d\ntools: [a]\ndescription: x\ntools: [b]\n",
               "d.agent.yaml:4: duplicate key 'tools'");
    EXPECT_ERR("d.agent.yaml", "name: d\nmodel:\n  name: a\n  name: b\n",
               "d.agent.yaml:4: model: duplicate key 'name'");
    EXPECT_ERR("d.agent.yaml",
               "name: d\nmemory:\n  blocks:\n    - label: persona\n    - label: persona\n",
               "d.agent.yaml:5: memory.blocks[1]: duplicate label 'persona'");
}

static void test_aliases(void)
{
    EXPECT_ERR("x.agent.yaml", "name: x\ndescription: &d hello\ninstructions: *d\n",
               "x.agent.yaml:2: description: anchors and aliases are not supported");
    /* An alias to an anchor that does not exist is still an alias. */
    EXPECT_ERR("x.agent.yaml", "name: x\ninstructions: *d\n",
               "x.agent.yaml:2: instructions: aliases are not supported (quote a value that starts "
               "with '*')");
    EXPECT_ERR("x.agent.yaml", "name: x\n*k : v\n",
               "x.agent.yaml:2: aliases are not supported (quote a value that starts with '*')");
    EXPECT_ERR("x.agent.yaml", "name: x\ntriggers:\n  - cron: */5 * * * *\n    message: hi\n",
               "x.agent.yaml:3:12: YAML syntax error: did not find expected alphabetic or "
               "numeric character (quote a value that starts with '*')");
}

static void test_multi_document(void)
{
    EXPECT_ERR("m.agent.yaml", "---\nname: a\n---\nname: b\n",
               "m.agent.yaml:3: a file holds one agent definition; found a second YAML document");
    /* One document with explicit markers is fine. */
    struct ag_err err = {0};
    struct proto_val *v = load("m.agent.yaml", "---\nname: a\n...\n", &err);
    CHECKF(v != NULL, "%s", err.msg);
    proto_val_free(v);
}

static void test_non_mapping_keys(void)
{
    EXPECT_ERR("k.agent.yaml", "name: k\n1: x\n",
               "k.agent.yaml:2: keys must be strings, got number");
    EXPECT_ERR("k.agent.yaml", "name: k\nmodel:\n  [a]: x\n",
               "k.agent.yaml:3: model: keys must be strings, got array");
    EXPECT_ERR("k.agent.yaml", "name: k\n? {a: 1}\n: x\n",
               "k.agent.yaml:2: keys must be strings, got object");
}

static void test_empty(void)
{
    EXPECT_ERR("e.agent.yaml", "", "e.agent.yaml:1: empty agent definition");
    EXPECT_ERR("e.agent.yaml", "# only a comment\n\n", "e.agent.yaml:1: empty agent definition");
    EXPECT_ERR("e.agent.yaml", "---\n", "e.agent.yaml:1: empty agent definition");
    EXPECT_ERR("e.agent.json", " \n\t\n", "e.agent.json:1: empty agent definition");
    EXPECT_ERR(NULL, "", "<text>:1: empty agent definition");
}

static void test_deeply_nested(void)
{
    struct ag_buf b = {0};

    ag_buf_puts(&b, "name: deep\ntools:\n  - name: t\n    config:\n      k: ");
    for (int i = 0; i < 70; i++) ag_buf_puts(&b, "[");
    for (int i = 0; i < 70; i++) ag_buf_puts(&b, "]");
    ag_buf_puts(&b, "\n");
    EXPECT_ERR("deep.agent.yaml", b.data, "deep.agent.yaml:5: nesting deeper than 64 levels");

    /* 60 levels under config fit (config is at depth 3, its value at depth 4). */
    ag_buf_reset(&b);
    ag_buf_puts(&b, "name: deep\ntools:\n  - name: t\n    config:\n      k: ");
    for (int i = 0; i < 60; i++) ag_buf_puts(&b, "[");
    for (int i = 0; i < 60; i++) ag_buf_puts(&b, "]");
    struct ag_err err = {0};
    struct proto_val *v = load("deep.agent.yaml", b.data, &err);
    CHECKF(v != NULL, "%s", err.msg);
    proto_val_free(v);

    ag_buf_reset(&b);
    ag_buf_puts(&b, "{\"name\": \"deep\",\n \"tools\": [{\"name\": \"t\", \"config\": {\"k\":\n");
    for (int i = 0; i < 100; i++) ag_buf_puts(&b, "[");
    for (int i = 0; i < 100; i++) ag_buf_puts(&b, "]");
    ag_buf_puts(&b, "}}]}");
    EXPECT_ERR("deep.agent.json", b.data, "deep.agent.json:3: nesting deeper than 64 levels");
    ag_buf_release(&b);
}

static void test_oversized(void)
{
    size_t n = 1024 * 1024 + 1;
    char *big = ag_malloc(n + 1);
    char dir[] = "/tmp/test_spec.XXXXXX";
    struct proto_val *v = NULL;
    struct ag_err err = {0};

    memset(big, '#', n);
    big[n] = '\0';
    CHECK(proto_spec_load_text(big, n, "big.agent.yaml", &v, &err) == AG_ETOOBIG);
    CHECK_STR(err.msg, "big.agent.yaml: larger than 1048576 bytes, the limit for an agent "
                       "definition");
    CHECK(v == NULL);
    CHECK(mkdtemp(dir) != NULL);
    char *path = write_file(dir, "big.agent.yaml", big, n);
    CHECK(proto_spec_load_file(path, &v, &err) == AG_ETOOBIG);
    CHECK_STR(err.msg, "big.agent.yaml: larger than 1048576 bytes, the limit for an agent "
                       "definition");
    unlink(path);
    free(path);
    rmdir(dir);
    free(big);
}

static void test_triggers(void)
{
    struct ag_err err = {0};
    struct proto_val *v =
        load("c.agent.yaml",
             "name: c\ntriggers:\n  - cron: \"*/15  9-17 * *   1,3,5\"\n    message: check in\n"
             "  - on_message: boss\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    CHECK_STR(proto_get_str(proto_at(proto_get(v, "triggers"), 0), "cron"), "*/15 9-17 * * 1,3,5");
    CHECK_STR(proto_get_str(proto_at(proto_get(v, "triggers"), 1), "on_message"), "boss");
    proto_val_free(v);

    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - cron: 0 8 * *\n    message: hi\n",
               "c.agent.yaml:3: triggers[0].cron: expected 5 fields (minute hour day-of-month "
               "month day-of-week), got 4");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - cron: 0 8 * * MON\n    message: hi\n",
               "c.agent.yaml:3: triggers[0].cron: cron field 5 ('MON') may only contain 0-9 * / "
               ", -");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - cron: '@daily'\n    message: hi\n",
               "c.agent.yaml:3: triggers[0].cron: cron field 1 ('@daily') may only contain 0-9 * "
               "/ , -");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - cron: 0 8 * * *\n",
               "c.agent.yaml:3: triggers[0]: missing required field 'message'");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - cron: 0 8 * * *\n    on_message: '*'\n",
               "c.agent.yaml:3: triggers[0]: a trigger has 'cron' or 'on_message', not both");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - crn: 0 8 * * *\n",
               "c.agent.yaml:3: triggers[0].crn: unknown field (did you mean 'cron'?)");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - message: hi\n",
               "c.agent.yaml:3: triggers[0]: a trigger needs 'cron' (with 'message') or "
               "'on_message'");
    EXPECT_ERR("c.agent.yaml", "name: c\ntriggers:\n  - on_message: Boss\n",
               "c.agent.yaml:3: triggers[0].on_message: 'Boss' is not a valid agent name "
               "(expected [a-z0-9][a-z0-9_-]{0,63} or '*')");
}

static void test_mcp(void)
{
    struct ag_err err = {0};
    struct proto_val *v =
        load("m.agent.yaml",
             "name: m\nmcp:\n  - name: files\n    command: mcp-server-files\n"
             "    args: [--root, /srv]\n    env: {LOG_LEVEL: debug, _X1: ''}\n    cwd: /srv\n"
             "    tools: [read_file, listDir]\n    timeout_ms: 5000\n"
             "  - url: https://mcp.example.com/mcp\n    name: web-2\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    char *s = v ? proto_print(proto_get(v, "mcp")) : NULL;
    /* Members in table order, defaults filled; command, url, cwd and tools only when given. */
    CHECK_STR(s, "[{\"name\":\"files\",\"command\":\"mcp-server-files\","
                 "\"args\":[\"--root\",\"/srv\"],\"env\":{\"LOG_LEVEL\":\"debug\",\"_X1\":\"\"},"
                 "\"cwd\":\"/srv\",\"tools\":[\"read_file\",\"listDir\"],\"timeout_ms\":5000,"
                 "\"start_timeout_ms\":30000,\"sandbox\":false},"
                 "{\"name\":\"web-2\",\"url\":\"https://mcp.example.com/mcp\",\"args\":[],"
                 "\"env\":{},\"timeout_ms\":60000,\"start_timeout_ms\":30000,\"sandbox\":false}]");
    free(s);
    /* Normalized output validates to itself. */
    struct proto_val *again = NULL;
    CHECK(proto_spec_validate(v, &again, &err) == 0);
    CHECK(proto_equal(v, again));
    proto_val_free(again);
    proto_val_free(v);

    /* sandbox: true is every default; an object fills in the rest; false stays false. */
    v = load("m.agent.yaml",
             "name: m\nmcp:\n  - {name: a, command: a, sandbox: true}\n"
             "  - name: b\n    command: /opt/b/bin/b\n    sandbox:\n      memory_mb: 128\n"
             "      network: true\n      paths: [/opt/b, /etc/b.conf]\n"
             "  - {name: c, command: c, sandbox: false}\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    s = v ? proto_print(proto_get(proto_at(proto_get(v, "mcp"), 0), "sandbox")) : NULL;
    CHECK_STR(s, "{\"memory_mb\":512,\"pids\":64,\"cpu_percent\":100,\"disk_mb\":64,"
                 "\"network\":false,\"paths\":[]}");
    free(s);
    s = v ? proto_print(proto_get(proto_at(proto_get(v, "mcp"), 1), "sandbox")) : NULL;
    CHECK_STR(s, "{\"memory_mb\":128,\"pids\":64,\"cpu_percent\":100,\"disk_mb\":64,"
                 "\"network\":true,\"paths\":[\"/opt/b\",\"/etc/b.conf\"]}");
    free(s);
    s = v ? proto_print(proto_get(proto_at(proto_get(v, "mcp"), 2), "sandbox")) : NULL;
    CHECK_STR(s, "false");
    free(s);
    again = NULL;
    CHECK(v && proto_spec_validate(v, &again, &err) == 0);
    CHECK(v && proto_equal(v, again));
    proto_val_free(again);
    proto_val_free(v);
    /* A url server may say sandbox: false, the default. */
    v = load("m.agent.yaml", "name: m\nmcp:\n  - {name: w, url: 'http://x/', sandbox: false}\n",
             &err);
    CHECKF(v != NULL, "%s", err.msg);
    proto_val_free(v);

    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: files\n    args: [x]\n",
               "m.agent.yaml:3: mcp[0]: give exactly one of command (a program to start) or url "
               "(an http(s) endpoint)");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: files\n    command: srv\n    url: http://localhost/\n",
               "m.agent.yaml:3: mcp[0]: give exactly one of command (a program to start) or url "
               "(an http(s) endpoint)");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - {name: files, command: a}\n  - {name: web, url: "
               "'http://x/'}\n  - name: files\n    command: b\n",
               "m.agent.yaml:5: mcp[2].name: 'files' is already used by mcp[0]");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - command: a\n",
               "m.agent.yaml:3: mcp[0]: missing required field 'name'");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: Files\n    command: a\n",
               "m.agent.yaml:3: mcp[0].name: 'Files' is not a valid server name (expected "
               "[a-z0-9][a-z0-9_-]{0,31})");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: abcdefghijklmnopqrstuvwxyz0123456\n    command: a\n",
               "m.agent.yaml:3: mcp[0].name: 'abcdefghijklmnopqrstuvwxyz0123456' is not a valid "
               "server name (expected [a-z0-9][a-z0-9_-]{0,31})");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: ''\n",
               "m.agent.yaml:4: mcp[0].command: must not be empty");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    url: ftp://x/mcp\n",
               "m.agent.yaml:4: mcp[0].url: 'ftp://x/mcp' is not a valid server URL (expected an "
               "http:// or https:// address)");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    url: 'https://'\n",
               "m.agent.yaml:4: mcp[0].url: 'https://' is not a valid server URL (expected an "
               "http:// or https:// address)");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    args: [1]\n",
               "m.agent.yaml:5: mcp[0].args[0]: expected a string, got number");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    args: x\n",
               "m.agent.yaml:5: mcp[0].args: expected an array of strings, got string");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    env: [A]\n",
               "m.agent.yaml:5: mcp[0].env: expected an object of strings, got array");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    env:\n      OK: x\n"
               "      1BAD: y\n",
               "m.agent.yaml:7: mcp[0].env.1BAD: not a valid environment variable name (expected "
               "[A-Za-z_][A-Za-z0-9_]*)");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    env: {A-B: y}\n",
               "m.agent.yaml:5: mcp[0].env.A-B: not a valid environment variable name (expected "
               "[A-Za-z_][A-Za-z0-9_]*)");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    env:\n      PORT: 8080\n",
               "m.agent.yaml:6: mcp[0].env.PORT: expected a string, got number");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    cwd: srv\n",
               "m.agent.yaml:5: mcp[0].cwd: 'srv' is not a valid working directory (expected an "
               "absolute path)");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    url: http://x/\n    args: [--v]\n",
               "m.agent.yaml:5: mcp[0].args: only for a server started by command, not one at a "
               "url");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    url: http://x/\n    env: {A: b}\n",
               "m.agent.yaml:5: mcp[0].env: only for a server started by command, not one at a "
               "url");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    url: http://x/\n    cwd: /\n",
               "m.agent.yaml:5: mcp[0].cwd: only for a server started by command, not one at a "
               "url");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    tools: ['read file']\n",
               "m.agent.yaml:5: mcp[0].tools[0]: 'read file' is not a valid MCP tool name "
               "(expected [A-Za-z0-9_.-]{1,128})");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n\n\n\n\n\n\n  - name: f\n    command: a\n    timeout_ms: 0\n",
               "m.agent.yaml:11: mcp[0].timeout_ms: expected an integer from 1 to 3600000, got 0");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    start_timeout_ms: 600001\n",
               "m.agent.yaml:5: mcp[0].start_timeout_ms: expected an integer from 1 to 600000, "
               "got 600001");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    url: http://x/\n    sandbox: true\n",
               "m.agent.yaml:5: mcp[0].sandbox: only for a server started by command, not one at "
               "a url");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    command: a\n    sandbox: yes\n",
               "m.agent.yaml:5: mcp[0].sandbox: expected true, false or an object of limits, got "
               "string");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    sandbox:\n      memory_mb: 8\n",
               "m.agent.yaml:6: mcp[0].sandbox.memory_mb: expected an integer from 16 to 65536, "
               "got 8");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    sandbox: {timeout_s: 5}\n",
               "m.agent.yaml:5: mcp[0].sandbox.timeout_s: unknown field (expected one of "
               "memory_mb, pids, cpu_percent, disk_mb, network, paths)");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    sandbox:\n      paths: [/opt/x, "
               "/srv/../etc]\n",
               "m.agent.yaml:6: mcp[0].sandbox.paths[1]: '/srv/../etc' is not a valid host path "
               "(expected an absolute path without '.', '..', '//' or a trailing '/')");
    EXPECT_ERR("m.agent.yaml",
               "name: m\nmcp:\n  - name: f\n    command: a\n    sandbox: {paths: [opt]}\n",
               "m.agent.yaml:5: mcp[0].sandbox.paths[0]: 'opt' is not a valid host path (expected "
               "an absolute path without '.', '..', '//' or a trailing '/')");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp:\n  - name: f\n    comand: a\n",
               "m.agent.yaml:4: mcp[0].comand: unknown field (did you mean 'command'?)");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp: [files]\n",
               "m.agent.yaml:2: mcp[0]: expected an object (a server), got string");
    EXPECT_ERR("m.agent.yaml", "name: m\nmcp: {name: f}\n",
               "m.agent.yaml:2: mcp: expected an array, got object");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"mcp\":[{\"name\":\"a\",\"url\":\"http://x\"},"
                    "{\"name\":\"a\",\"command\":\"b\"}]}",
                    "spec.mcp[1].name: 'a' is already used by spec.mcp[0]");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"mcp\":[{\"name\":\"a\",\"command\":\"b\","
                    "\"env\":{\"K\":\"1\",\"K\":\"2\"}}]}",
                    "spec.mcp[0].env: duplicate key 'K'");
}

static void test_json_files(void)
{
    struct ag_err err = {0};
    /* Surrogate pairs (which libyaml refuses) and a UTF-8 BOM are fine in JSON. */
    struct proto_val *v = load(
        "j.agent.json", "\xef\xbb\xbf{\"name\": \"j\", \"description\": \"\\ud83d\\ude00\"}", &err);
    CHECKF(v != NULL, "%s", err.msg);
    CHECK_STR(proto_get_str(v, "description"), "\xf0\x9f\x98\x80");
    proto_val_free(v);

    EXPECT_ERR("j.agent.json", "{\n  \"name\": \"j\",\n  \"tools\": [\"a\",]\n}\n",
               "j.agent.json:3:17: JSON syntax error");
    EXPECT_ERR("j.agent.json", "{\"name\": \"j\"} x", "j.agent.json:1:15: JSON syntax error");
    EXPECT_ERR("j.agent.json",
               "{\n  \"name\": \"j\",\n  \"limits\": {\n    \"max_steps\": 20,\n"
               "    \"max_tool_calls\": -1\n  }\n}\n",
               "j.agent.json:5: limits.max_tool_calls: expected an integer from 0 to 10000, got "
               "-1");
    EXPECT_ERR("j.agent.json", "{\"name\": \"j\",\n\"tools\": [\"a\",\n\n  \"a\"]}",
               "j.agent.json:4: tools[1]: duplicate tool 'a'");
    EXPECT_ERR("j.agent.json", "{\"name\": \"j\",\n\"model\": {},\n\"name\": \"k\"}",
               "j.agent.json:3: duplicate key 'name'");
    EXPECT_ERR("j.agent.json", "[1, 2]",
               "j.agent.json:1: expected an object at the top level, got "
               "array");
    /* Without a telling suffix, a leading '{' means JSON. */
    v = load("<text>", "  {\"name\": \"j\"}", &err);
    CHECKF(v != NULL, "%s", err.msg);
    proto_val_free(v);
}

static void test_validate_protocol(void)
{
    struct ag_err err = {0};
    struct proto_val *in = proto_parse("{\"name\":\"p\",\"model\":\"small\"}", 29, NULL), *v = NULL;

    CHECK(proto_spec_validate(in, &v, &err) == 0);
    CHECK_STR(proto_get_str(proto_get(v, "model"), "name"), "small");
    CHECK(proto_int(proto_get(proto_get(v, "limits"), "max_steps"), 0) == 20);
    proto_val_free(in);
    proto_val_free(v);

    EXPECT_SPEC_ERR("{\"name\":\"p\",\"tools\":[\"a\",{\"name\":\"b\",\"timeout_ms\":0}]}",
                    "spec.tools[1].timeout_ms: expected a positive integer, got 0");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"limits\":{\"max_steps\":\"5\"}}",
                    "spec.limits.max_steps: expected an integer from 1 to 1000, got string");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"instructons\":\"x\"}",
                    "spec.instructons: unknown field (did you mean 'instructions'?)");
    EXPECT_SPEC_ERR("{\"description\":\"x\"}", "spec: missing required field 'name'");
    EXPECT_SPEC_ERR("[1]", "spec: expected an object, got array");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"name\":\"q\"}", "spec: duplicate key 'name'");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"memory\":{\"blocks\":[{\"value\":\"v\"}]}}",
                    "spec.memory.blocks[0]: missing required field 'label'");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"version\":2}",
                    "spec.version: not allowed in a definition (the daemon numbers versions as "
                    "it stores them)");
    EXPECT_SPEC_ERR("{\"name\":\"p\",\"model\":{\"temperature\":1e999}}",
                    "spec.model.temperature: expected a number from 0 to 2, got inf");

    struct ag_buf b = {0};
    ag_buf_puts(&b, "{\"name\":\"p\",\"tools\":[{\"name\":\"t\",\"config\":{\"k\":");
    for (int i = 0; i < 80; i++) ag_buf_puts(&b, "[");
    for (int i = 0; i < 80; i++) ag_buf_puts(&b, "]");
    ag_buf_puts(&b, "}}]}");
    EXPECT_SPEC_ERR(b.data, "spec: nesting deeper than 64 levels");
    ag_buf_release(&b);

    CHECK(proto_spec_validate(NULL, &v, &err) == AG_ESPEC);
    CHECK_STR(err.msg, "spec: expected an object, got nothing");
}

static void test_binary_garbage(void)
{
    static const char garbage[] = "\x7f"
                                  "ELF\x02\x01\x01\x00\x00\x00\xff\xfe\x89PNG";
    struct proto_val *v = NULL;
    struct ag_err err = {0};

    CHECK(proto_spec_load_text(garbage, sizeof(garbage) - 1, "g.agent.yaml", &v, &err) == AG_ESPEC);
    CHECK_STR(err.msg, "g.agent.yaml:1:1: YAML syntax error: control characters are not allowed");
    CHECK(proto_spec_load_text("name: a\n\xc3\x28", 10, "g.agent.yaml", &v, &err) == AG_ESPEC);
    CHECK_STR(err.msg, "g.agent.yaml:2:2: YAML syntax error: invalid trailing UTF-8 octet");
    CHECK(proto_spec_load_text(garbage, sizeof(garbage) - 1, "g.agent.json", &v, &err) == AG_ESPEC);
    CHECK_STR(err.msg, "g.agent.json:1:1: JSON syntax error");
    CHECK(v == NULL);

    /* Every prefix of an example, and random bytes, fail cleanly or load; none crash. */
    char *path = ag_asprintf("%s/researcher.agent.yaml", example_dir()), *text = NULL;
    size_t len = 0;
    CHECK(ag_read_file(path, 1 << 20, &text, &len, &err) == 0);
    for (size_t i = 0; text && i < len; i += 7) {
        if (proto_spec_load_text(text, i, "p.agent.yaml", &v, &err) == 0) proto_val_free(v);
        CHECK(err.code == AG_ESPEC || err.code == 0);
    }
    uint32_t seed = 12345;
    char buf[256];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(buf); i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        if (proto_spec_load_text(buf, sizeof(buf), round & 1 ? "r.json" : "r.yaml", &v, &err) == 0)
            proto_val_free(v);
    }
    free(text);
    free(path);
}

static void test_files(void)
{
    char dir[] = "/tmp/test_spec.XXXXXX";
    struct proto_val *v = NULL;
    struct ag_err err = {0};
    static const char bad[] = "name: f\nlimits:\n  max_steps: 0\n";

    CHECK(mkdtemp(dir) != NULL);
    char *path = write_file(dir, "f.agent.yaml", bad, sizeof(bad) - 1);
    CHECK(proto_spec_load_file(path, &v, &err) == AG_ESPEC);
    /* Messages name the file by its base name. */
    CHECK_STR(err.msg, "f.agent.yaml:3: limits.max_steps: expected an integer from 1 to 1000, "
                       "got 0");
    unlink(path);
    CHECK(proto_spec_load_file(path, &v, &err) == AG_EIO);
    CHECK(strstr(err.msg, "f.agent.yaml") != NULL);
    CHECK(proto_spec_load_file(dir, &v, &err) == AG_EIO);
    CHECK(v == NULL);
    free(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_examples_load);
    RUN(test_example_contents);
    RUN(test_defaults);
    RUN(test_bare_model_string);
    RUN(test_scalars);
    RUN(test_yaml_syntax_error);
    RUN(test_unknown_field);
    RUN(test_wrong_types);
    RUN(test_bad_name);
    RUN(test_duplicates);
    RUN(test_aliases);
    RUN(test_multi_document);
    RUN(test_non_mapping_keys);
    RUN(test_empty);
    RUN(test_deeply_nested);
    RUN(test_oversized);
    RUN(test_triggers);
    RUN(test_mcp);
    RUN(test_json_files);
    RUN(test_validate_protocol);
    RUN(test_binary_garbage);
    RUN(test_files);
    return TEST_END();
}
