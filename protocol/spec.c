/*
 * spec.c - agent definitions: the schema, and the public entry points (load a file, load text,
 * validate a spec received over the protocol).
 *
 * The schema is data: each object is a table of fields (kind, range, default, nested table),
 * checked by the generic walker in spec_check.c. The few fields with a shape of their own (model,
 * tools, MCP servers and their env, memory blocks, triggers) have a check function here. The
 * normalized output has every default filled in and its members in table order, so a stored spec is
 * complete, explicit and stable: loading a file twice, or validating a normalized spec again, gives
 * the same JSON text (the daemon compares stored specs as strings to see whether a file changed).
 * Optional fields with no default (model.seed, model.context, sandbox.cpu_ms,
 * memory.context.max_tokens, tools[].config, mcp[].command, mcp[].url, mcp[].cwd, mcp[].tools) are
 * left out when absent.
 *
 * Loading a file (yamltree.c for YAML, spec_doc.c for JSON) gives the tree plus a line per node;
 * the checker only uses that to prefix messages: "coder.agent.yaml:12: tools[1].timeout_ms: ...".
 * Specs from the protocol have no lines, and their paths start at "spec".
 */
#include "spec_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INF INFINITY

/* ---- string shapes ---- */

static bool lower_or_digit(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

bool proto_spec_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n > 64 || !lower_or_digit(name[0])) return false;
    for (size_t i = 1; i < n; i++)
        if (!lower_or_digit(name[i]) && name[i] != '_' && name[i] != '-') return false;
    return true;
}

static bool all_or_agent_ok(const char *s)
{
    return strcmp(s, "*") == 0 || proto_spec_name_ok(s);
}

static bool tool_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static bool label_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || (s[0] >= '0' && s[0] <= '9')) return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

/* A host name, optionally with a port, where '*' stands for any run of labels. URLs are refused
 * so that "https://example.com/" is not silently taken for a host. */
static bool host_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 255 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_*:") == n;
}

/* An MCP server's name: the prefix of its tools ("files.read"), so shorter than an agent's. */
static bool server_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 32 || !lower_or_digit(s[0])) return false;
    for (size_t i = 1; i < n; i++)
        if (!lower_or_digit(s[i]) && s[i] != '_' && s[i] != '-') return false;
    return true;
}

/* A tool name as MCP servers spell them (1 to 128 of A-Z a-z 0-9 _ - .): the filter in
 * mcp[].tools names the server's tools, not agentd's. */
static bool mcp_tool_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 128 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

/* http:// or https:// and something after it, with no blanks or control characters. */
static bool server_url_ok(const char *s)
{
    size_t skip = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;

    if (skip == 0 || s[skip] == '\0') return false;
    for (s += skip; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) return false;
    return true;
}

static bool abs_path_ok(const char *s)
{
    return s[0] == '/';
}

/* A host path to bind into a sandbox: absolute, not the root, no empty, "." or ".." parts and
 * no trailing slash, so that what is bound is what the text says. */
static bool host_path_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || s[0] != '/' || s[n - 1] == '/' || n > 1023) return false;
    for (const char *c = s; *c; c++) {
        if (*c != '/') continue;
        if (c[1] == '/') return false;
        if (c[1] == '.' && (c[2] == '/' || c[2] == '\0')) return false;
        if (c[1] == '.' && c[2] == '.' && (c[3] == '/' || c[3] == '\0')) return false;
    }
    return true;
}

static bool env_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

static const struct proto__pattern agent_name = {proto_spec_name_ok, "agent name",
                                                 "[a-z0-9][a-z0-9_-]{0,63}"};
static const struct proto__pattern all_or_agent = {all_or_agent_ok, "agent name",
                                                   "[a-z0-9][a-z0-9_-]{0,63} or '*'"};
static const struct proto__pattern tool_name = {tool_name_ok, "tool name",
                                                "[a-z][a-z0-9_.-]{0,63}"};
static const struct proto__pattern block_label = {label_ok, "label", "[A-Za-z_][A-Za-z0-9_]{0,63}"};
static const struct proto__pattern host = {host_ok, "host pattern",
                                           "a host such as 'example.com' or '*.example.com'"};
static const struct proto__pattern server_name = {server_name_ok, "server name",
                                                  "[a-z0-9][a-z0-9_-]{0,31}"};
static const struct proto__pattern mcp_tool = {mcp_tool_ok, "MCP tool name",
                                               "[A-Za-z0-9_.-]{1,128}"};
static const struct proto__pattern server_url = {server_url_ok, "server URL",
                                                 "an http:// or https:// address"};
static const struct proto__pattern abs_dir = {abs_path_ok, "working directory", "an absolute path"};
static const struct proto__pattern host_path = {
    host_path_ok, "host path", "an absolute path without '.', '..', '//' or a trailing '/'"};
static const struct proto__pattern env_name = {env_name_ok, "environment variable name",
                                               "[A-Za-z_][A-Za-z0-9_]*"};

/* ---- the schema ---- */

/* Shorthands for the tables below. */
// clang-format off
#define STR(k, d)          {.key = k, .kind = PROTO__K_STR, .def_str = d}
#define BOOL(k, d)         {.key = k, .kind = PROTO__K_BOOL, .def = d}
#define INT(k, lo, hi, d)  {.key = k, .kind = PROTO__K_INT, .min = lo, .max = hi, .def = d}
#define NUM(k, lo, hi, d)  {.key = k, .kind = PROTO__K_NUM, .min = lo, .max = hi, .def = d}
#define NUM_GT(k, lo, hi, d)                                                                       \
    {.key = k, .kind = PROTO__K_NUM, .flags = PROTO__F_GT_MIN, .min = lo, .max = hi, .def = d}
#define OPT_INT(k, lo, hi)                                                                         \
    {.key = k, .kind = PROTO__K_INT, .flags = PROTO__F_OPTIONAL, .min = lo, .max = hi}
#define NAMED(k, f, p)     {.key = k, .kind = PROTO__K_STR, .flags = f, .pat = p}
#define LIST(k, p)         {.key = k, .kind = PROTO__K_LIST, .pat = p}
#define OBJ(k, s)          {.key = k, .kind = PROTO__K_OBJ, .sub = s}
#define FN(k, fn)          {.key = k, .kind = PROTO__K_FN, .check = fn}
// clang-format on

static int check_model(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_tools(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_mcp(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_env(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_mcp_sandbox(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_blocks(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_triggers(struct proto__vctx *c, const cJSON *v, cJSON **out);
static int check_cron(struct proto__vctx *c, const cJSON *v, cJSON **out);

static const char *const tool_choices[] = {"auto", "required", "none", NULL};

static const struct proto__field model_fields[] = {
    {.key = "name", .kind = PROTO__K_STR, .flags = PROTO__F_NONEMPTY, .def_str = "default"},
    NUM("temperature", 0, 2, 0.7),
    NUM_GT("top_p", 0, 1, 1),
    INT("top_k", 0, INF, 40),
    NUM("min_p", 0, 1, 0),
    INT("max_tokens", 1, INF, 1024),
    OPT_INT("seed", -INF, INF),
    NUM_GT("repeat_penalty", 0, INF, 1),
    NUM("frequency_penalty", -2, 2, 0),
    NUM("presence_penalty", -2, 2, 0),
    OPT_INT("context", 256, INF),
    /* Until a run's first tool call: "required" makes the model call a tool before it answers
     * (then back to auto, so a run cannot loop on it); small models rarely call tools on their
     * own. */
    {.key = "tool_choice", .kind = PROTO__K_ENUM, .def_str = "auto", .choices = tool_choices},
    {0},
};

static const struct proto__field tool_fields[] = {
    NAMED("name", PROTO__F_REQUIRED, &tool_name),
    INT("timeout_ms", 1, INF, 30000),
    BOOL("enabled", 1),
    BOOL("require_approval", 0),
    {.key = "config", .kind = PROTO__K_FREE},
    {0},
};

/* One MCP server: a child process speaking stdio (command) or a streamable HTTP endpoint (url);
 * exactly one of the two, checked by mcp_transport. Its tools reach the agent as "name.tool". */
static const struct proto__field mcp_fields[] = {
    NAMED("name", PROTO__F_REQUIRED, &server_name),
    /* stdio: the program, looked up in PATH */
    {.key = "command", .kind = PROTO__K_STR, .flags = PROTO__F_OPTIONAL | PROTO__F_NONEMPTY},
    NAMED("url", PROTO__F_OPTIONAL, &server_url), /* streamable HTTP: the endpoint */
    LIST("args", NULL),                           /* stdio: arguments after the program */
    FN("env", check_env),                         /* stdio: added to agentd's environment */
    NAMED("cwd", PROTO__F_OPTIONAL, &abs_dir),    /* stdio: working directory */
    /* the server's tools to offer; absent: all of them */
    {.key = "tools", .kind = PROTO__K_LIST, .flags = PROTO__F_OPTIONAL, .pat = &mcp_tool},
    INT("timeout_ms", 1, 3600000, 60000),      /* per tool call */
    INT("start_timeout_ms", 1, 600000, 30000), /* start and handshake, tool listing included */
    FN("sandbox", check_mcp_sandbox),          /* stdio: false, or the sandbox's limits */
    {0},
};

/* A stdio server's sandbox (`sandbox: true` is all defaults). Limits as in the agent's own
 * sandbox block, less the per-run ones (cpu_ms, timeout_s): a server lives for many runs. */
static const struct proto__field mcp_sandbox_fields[] = {
    INT("memory_mb", 16, 65536, 512),
    INT("pids", 1, 4096, 64),
    INT("cpu_percent", 1, 6400, 100), /* 100 = one core */
    INT("disk_mb", 1, 65536, 64),     /* its /work and /tmp */
    BOOL("network", 0),
    LIST("paths", &host_path), /* host paths bound read-only (beside cwd and the program's dir) */
    {0},
};

static const struct proto__field block_fields[] = {
    NAMED("label", PROTO__F_REQUIRED, &block_label),
    STR("value", ""),
    STR("description", ""),
    INT("limit", 1, INF, 2000),
    {0},
};

static const char *const context_policies[] = {"truncate_oldest", "summarize", NULL};

static const struct proto__field recall_fields[] = {
    BOOL("enabled", 1),
    INT("top_k", 1, 100, 5),
    {0},
};

static const struct proto__field context_fields[] = {
    {.key = "policy", .kind = PROTO__K_ENUM, .def_str = "summarize", .choices = context_policies},
    OPT_INT("max_tokens", 1, INF),
    {0},
};

static const struct proto__field memory_fields[] = {
    FN("blocks", check_blocks),
    OBJ("recall", recall_fields),
    OBJ("context", context_fields),
    {0},
};

static const struct proto__field sandbox_fields[] = {
    INT("memory_mb", 16, 65536, 512),
    OPT_INT("cpu_ms", 1, INF),
    INT("timeout_s", 1, INF, 30),
    INT("pids", 1, 4096, 64),
    INT("disk_mb", 1, 1048576, 256),
    BOOL("network", 0),
    {0},
};

static const struct proto__field browse_fields[] = {
    LIST("allow", &host),              /* hosts the agent may fetch from */
    LIST("deny", &host),               /* hosts it must never fetch from */
    INT("max_bytes", 1, INF, 2097152), /* largest response read */
    INT("timeout_s", 1, INF, 20),      /* per request */
    BOOL("robots", 1),                 /* honour robots.txt */
    {0},
};

static const struct proto__field permission_fields[] = {
    LIST("can_message", &all_or_agent),
    LIST("tools", &tool_name),
    {0},
};

static const struct proto__field limit_fields[] = {
    INT("max_steps", 1, 1000, 20),
    INT("max_tool_calls", 0, 10000, 50),
    INT("max_tokens", 1, INF, 32768),
    INT("max_wall_s", 1, INF, 600),
    {0},
};

static const struct proto__field cron_trigger_fields[] = {
    {.key = "cron", .kind = PROTO__K_FN, .flags = PROTO__F_REQUIRED, .check = check_cron},
    {.key = "message", .kind = PROTO__K_STR, .flags = PROTO__F_REQUIRED | PROTO__F_NONEMPTY},
    {0},
};

static const struct proto__field message_trigger_fields[] = {
    NAMED("on_message", PROTO__F_REQUIRED, &all_or_agent),
    {0},
};

/* Every trigger key, to name typos in a trigger that has neither kind's key. */
static const struct proto__field any_trigger_fields[] = {
    {.key = "cron", .kind = PROTO__K_STR, .flags = PROTO__F_OPTIONAL},
    {.key = "message", .kind = PROTO__K_STR, .flags = PROTO__F_OPTIONAL},
    {.key = "on_message", .kind = PROTO__K_STR, .flags = PROTO__F_OPTIONAL},
    {0},
};

static const struct proto__field top_fields[] = {
    NAMED("name", PROTO__F_REQUIRED, &agent_name),
    STR("description", ""),
    STR("instructions", ""),
    FN("model", check_model),
    FN("tools", check_tools),
    FN("mcp", check_mcp),
    OBJ("memory", memory_fields),
    OBJ("sandbox", sandbox_fields),
    OBJ("browse", browse_fields),
    OBJ("permissions", permission_fields),
    OBJ("limits", limit_fields),
    FN("triggers", check_triggers),
    {.key = "version",
     .kind = PROTO__K_REJECT,
     .def_str = "not allowed in a definition (the daemon numbers versions as it stores them)"},
    {0},
};

/* ---- fields with a shape of their own ---- */

/* "model: qwen2.5-7b" is short for "model: {name: qwen2.5-7b}". */
static int check_model(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    int rc;

    if (!cJSON_IsString(v)) {
        if (v && !cJSON_IsObject(v))
            return proto__check_fail(c, v, "expected a model name or an object, got %s",
                                     proto__type_name(v));
        return proto__check_obj(c, v, model_fields, out);
    }
    if (!*v->valuestring) return proto__check_fail(c, v, "must not be empty");
    if ((rc = proto__check_obj(c, NULL, model_fields, out)) != 0) return rc;
    cJSON_ReplaceItemInObjectCaseSensitive(*out, "name",
                                           proto__must(cJSON_CreateString(v->valuestring)));
    return 0;
}

static int check_tools(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    static const struct proto__items tools = {tool_fields, "name", "tool", &tool_name, NULL, false};
    return proto__check_items(c, v, &tools, out);
}

/* A server is reached one way: by command (with args, env and cwd) or by url (with none of them).
 */
static int mcp_transport(struct proto__vctx *c, const cJSON *in, const cJSON *norm)
{
    static const char *const stdio_only[] = {"args", "env", "cwd", "sandbox"};
    bool command = cJSON_GetObjectItemCaseSensitive(norm, "command") != NULL;
    bool url = cJSON_GetObjectItemCaseSensitive(norm, "url") != NULL;
    int rc = 0;

    if (command == url)
        return proto__check_fail(
            c, in, "give exactly one of command (a program to start) or url (an http(s) endpoint)");
    for (size_t i = 0; url && i < sizeof(stdio_only) / sizeof(*stdio_only) && rc == 0; i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(in, stdio_only[i]);
        /* Empty args and env, and sandbox false, are the defaults, which the normalized spec
         * spells out. */
        if (!m || cJSON_IsNull(m) || cJSON_IsFalse(m) ||
            ((cJSON_IsArray(m) || cJSON_IsObject(m)) && !m->child))
            continue;
        size_t mark = proto__path_key(&c->path, stdio_only[i]);
        rc = proto__check_fail(c, m, "only for a server started by command, not one at a url");
        proto__path_pop(&c->path, mark);
    }
    return rc;
}

static int check_mcp(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    static const struct proto__items servers = {mcp_fields, "name",        "server",
                                                NULL,       mcp_transport, true};
    return proto__check_items(c, v, &servers, out);
}

/* false (absent), true (the default limits) or an object of limits; normalized to false or to
 * the complete object. */
static int check_mcp_sandbox(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    if (!v || cJSON_IsFalse(v)) {
        *out = proto__must(cJSON_CreateFalse());
        return 0;
    }
    if (cJSON_IsTrue(v)) return proto__check_obj(c, NULL, mcp_sandbox_fields, out);
    if (!cJSON_IsObject(v))
        return proto__check_fail(c, v, "expected true, false or an object of limits, got %s",
                                 proto__type_name(v));
    return proto__check_obj(c, v, mcp_sandbox_fields, out);
}

/* Environment variables for a stdio server: names as a shell accepts them, string values. */
static int check_env(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    struct proto__keyset seen = {0};
    cJSON *obj;
    int rc = 0;

    if (v && !cJSON_IsObject(v))
        return proto__check_fail(c, v, "expected an object of strings, got %s",
                                 proto__type_name(v));
    obj = proto__must(cJSON_CreateObject());
    for (const cJSON *m = v ? v->child : NULL; m && rc == 0; m = m->next) {
        /* Only protocol input gets here with a repeated key: the loaders refuse them. */
        if (!proto__keyset_add(&seen, m->string)) {
            rc = proto__check_fail(c, m, "duplicate key '%s'", m->string);
            break;
        }
        size_t mark = proto__path_key(&c->path, m->string);
        if (!env_name_ok(m->string))
            rc = proto__check_fail(c, m, "not a valid %s (expected %s)", env_name.what,
                                   env_name.form);
        else if ((rc = proto__check_pattern(c, m, NULL)) == 0)
            cJSON_AddItemToObject(obj, m->string, proto__must(cJSON_CreateString(m->valuestring)));
        proto__path_pop(&c->path, mark);
    }
    proto__keyset_release(&seen);
    if (rc) cJSON_Delete(obj);
    *out = rc ? NULL : obj;
    return rc;
}

/* A block's initial value must fit its limit, or the first edit by the agent would fail. */
static int block_fits(struct proto__vctx *c, const cJSON *in, const cJSON *norm)
{
    const char *value = cJSON_GetObjectItemCaseSensitive(norm, "value")->valuestring;
    double limit = cJSON_GetObjectItemCaseSensitive(norm, "limit")->valuedouble;
    size_t n = ag_utf8_count(value); /* what a block's limit counts */
    int rc = 0;

    if ((double)n > limit) {
        size_t mark = proto__path_key(&c->path, "value");
        rc = proto__check_fail(c, cJSON_GetObjectItemCaseSensitive(in, "value"),
                               "%zu characters, more than the block's limit of %.0f", n, limit);
        proto__path_pop(&c->path, mark);
    }
    return rc;
}

static int check_blocks(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    static const struct proto__items blocks = {block_fields, "label",    "label",
                                               NULL,         block_fits, false};
    return proto__check_items(c, v, &blocks, out);
}

/* Five fields of 0-9 * / , - separated by blanks; normalized to single spaces. */
static int check_cron(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    struct ag_buf norm = {0};
    int n = 0, rc = 0;

    if (!cJSON_IsString(v))
        return proto__check_fail(c, v, "expected a string, got %s", proto__type_name(v));
    for (const char *p = v->valuestring; *p && rc == 0;) {
        size_t len = strcspn(p, " \t");
        if (len == 0) {
            p++;
            continue;
        }
        if (strspn(p, "0123456789*/,-") < len)
            rc = proto__check_fail(c, v, "cron field %d ('%.*s') may only contain 0-9 * / , -",
                                   n + 1, len > 20 ? 20 : (int)len, p);
        ag_buf_printf(&norm, "%s%.*s", n++ ? " " : "", (int)len, p);
        p += len;
    }
    if (rc == 0 && n != 5)
        rc = proto__check_fail(
            c, v, "expected 5 fields (minute hour day-of-month month day-of-week), got %d", n);
    if (rc == 0) *out = proto__must(cJSON_CreateString(norm.data));
    ag_buf_release(&norm);
    return rc;
}

/* Each trigger is {cron, message} (a scheduled message to the agent) or {on_message} (run when
 * that agent, or any with "*", sends a message). */
static int check_trigger(struct proto__vctx *c, const cJSON *it, cJSON **out)
{
    bool cron, on_message;
    int rc;

    if (!cJSON_IsObject(it))
        return proto__check_fail(c, it, "expected an object, got %s", proto__type_name(it));
    cron = cJSON_GetObjectItemCaseSensitive(it, "cron") != NULL;
    on_message = cJSON_GetObjectItemCaseSensitive(it, "on_message") != NULL;
    if (cron && on_message)
        return proto__check_fail(c, it, "a trigger has 'cron' or 'on_message', not both");
    if (cron || on_message)
        return proto__check_obj(c, it, cron ? cron_trigger_fields : message_trigger_fields, out);
    /* Neither: name a misspelt key if there is one, else say what is missing. */
    if ((rc = proto__check_obj(c, it, any_trigger_fields, out)) == 0) {
        cJSON_Delete(*out);
        *out = NULL;
        rc = proto__check_fail(c, it, "a trigger needs 'cron' (with 'message') or 'on_message'");
    }
    return rc;
}

static int check_triggers(struct proto__vctx *c, const cJSON *v, cJSON **out)
{
    cJSON *arr;
    size_t i = 0;
    int rc = 0;

    if (v && !cJSON_IsArray(v))
        return proto__check_fail(c, v, "expected an array, got %s", proto__type_name(v));
    arr = proto__must(cJSON_CreateArray());
    for (const cJSON *it = v ? v->child : NULL; it && rc == 0; it = it->next, i++) {
        size_t mark = proto__path_index(&c->path, i);
        cJSON *t = NULL;
        if ((rc = check_trigger(c, it, &t)) == 0) cJSON_AddItemToArray(arr, t);
        proto__path_pop(&c->path, mark);
    }
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}

/* ---- entry points ---- */

static int validate(struct proto__vctx *c, const cJSON *root, struct proto_val **out)
{
    cJSON *spec = NULL;
    int rc;

    if (!cJSON_IsObject(root))
        rc = proto__check_fail(c, root, "expected an object%s, got %s",
                               c->file ? " at the top level" : "", proto__type_name(root));
    else
        rc = proto__check_obj(c, root, top_fields, &spec);
    if (out)
        *out = (struct proto_val *)spec;
    else
        cJSON_Delete(spec);
    return rc;
}

/* JSON by name (.json), YAML by name (.yaml, .yml), else JSON when the text starts with '{'. */
static bool is_json(const char *name, const char *text, size_t len)
{
    size_t i = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;

    if (name && ag_str_has_suffix(name, ".json")) return true;
    if (name && (ag_str_has_suffix(name, ".yaml") || ag_str_has_suffix(name, ".yml"))) return false;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    return i < len && text[i] == '{';
}

static int too_big(struct ag_err *err, const char *file)
{
    return ag_err_set(err, AG_ETOOBIG,
                      "%s: larger than %u bytes, the limit for an agent definition", file,
                      PROTO__SPEC_MAX_BYTES);
}

int proto_spec_load_text(const char *text, size_t len, const char *name, struct proto_val **out,
                         struct ag_err *err)
{
    const char *file = ag_basename(name && *name ? name : "<text>");
    struct proto__doc doc = {0};
    struct proto__vctx c = {.doc = &doc, .file = file, .err = err};
    int rc;

    if (out) *out = NULL;
    if (len > PROTO__SPEC_MAX_BYTES) return too_big(err, file);
    if (is_json(name, text, len))
        rc = proto__json_load(&doc, text, len, file, err);
    else
        rc = proto__yaml_load(&doc, text, len, file, err);
    if (rc == 0 && (!doc.root || cJSON_IsNull(doc.root)))
        rc = ag_err_set(err, AG_ESPEC, "%s:1: empty agent definition", file);
    else if (rc == 0)
        rc = validate(&c, doc.root, out);
    ag_buf_release(&c.path);
    proto__doc_release(&doc);
    return rc;
}

int proto_spec_load_file(const char *path, struct proto_val **out, struct ag_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (out) *out = NULL;
    if (!path) return ag_err_set(err, AG_EINVAL, "no agent definition file given");
    rc = ag_read_file(path, PROTO__SPEC_MAX_BYTES, &text, &len, err);
    if (rc == AG_ETOOBIG) return too_big(err, ag_basename(path));
    if (rc) return rc;
    rc = proto_spec_load_text(text, len, path, out, err);
    free(text);
    return rc;
}

/* True when v nests objects or arrays deeper than the loaders allow (depth counts v itself). */
static bool too_deep(const cJSON *v, int depth)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return false;
    if (depth > PROTO__SPEC_MAX_DEPTH) return true;
    for (const cJSON *it = v->child; it; it = it->next)
        if (too_deep(it, depth + 1)) return true;
    return false;
}

int proto_spec_validate(const struct proto_val *spec, struct proto_val **out, struct ag_err *err)
{
    struct proto__vctx c = {.err = err};
    int rc;

    if (out) *out = NULL;
    ag_buf_puts(&c.path, "spec");
    if (too_deep((const cJSON *)spec, 1))
        rc =
            ag_err_set(err, AG_ESPEC, "spec: nesting deeper than %d levels", PROTO__SPEC_MAX_DEPTH);
    else
        rc = validate(&c, (const cJSON *)spec, out);
    ag_buf_release(&c.path);
    return rc;
}
