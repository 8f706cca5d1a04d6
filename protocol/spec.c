/*
 * spec.c - agent definitions: the schema, validation and normalization, and the public entry
 * points (load a file, load text, validate a spec received over the protocol).
 *
 * The schema is data. Each object is a table of fields (kind, range, default, nested table) and
 * one walker, check_obj, holds any input object against its table; the few fields with a shape
 * of their own (model, tools, memory blocks, triggers) have a check function. Members are checked
 * in the order they appear, so the error reported is the first one in the file; required fields
 * found missing are reported after the members that are there.
 *
 * The output is built in table order with every default filled in, so a stored spec is complete,
 * explicit and stable: loading a file twice, or validating a normalized spec again, gives the
 * same JSON text (the daemon compares stored specs as strings to see whether a file changed).
 * A member whose value is null counts as absent ("memory:" with nothing under it in YAML),
 * except for required fields. Optional fields with no default (model.seed, model.context,
 * sandbox.cpu_ms, memory.context.max_tokens, tools[].config) are left out when absent.
 *
 * Loading a file (yamltree.c, spec_doc.c) gives the tree plus a line per node; the validator only
 * uses that to prefix messages: "coder.agent.yaml:12: tools[1].timeout_ms: ...". Specs from the
 * protocol have no lines, and their paths start at "spec".
 */
#include "spec_int.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INF        INFINITY
#define MAX_FIELDS 16 /* most fields in one schema table */

/* One validation: where messages go and the path of the value being checked. */
struct vctx {
    const struct proto__doc *doc; /* lines of the loaded file; NULL for protocol input */
    const char *file;             /* file name for messages; NULL for protocol input */
    struct ag_buf path;           /* e.g. "tools[1].timeout_ms" (under "spec" for protocol input) */
    struct ag_err *err;
};

static int fail(struct vctx *c, const cJSON *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports an error at node at (for its line) under the current path. */
static int fail(struct vctx *c, const cJSON *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = proto__spec_vfail(c->err, c->file, proto__doc_line(c->doc, at),
                               proto__path_str(&c->path), fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- string shapes ---- */

/* What a string must look like, for names and patterns. */
struct pattern {
    bool (*ok)(const char *s);
    const char *what; /* "agent name" */
    const char *form; /* how a valid one looks, for the message */
};

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

static const struct pattern agent_name = {proto_spec_name_ok, "agent name",
                                          "[a-z0-9][a-z0-9_-]{0,63}"};
static const struct pattern all_or_agent = {all_or_agent_ok, "agent name",
                                            "[a-z0-9][a-z0-9_-]{0,63} or '*'"};
static const struct pattern tool_name = {tool_name_ok, "tool name", "[a-z][a-z0-9_.-]{0,63}"};
static const struct pattern block_label = {label_ok, "label", "[A-Za-z_][A-Za-z0-9_]{0,63}"};
static const struct pattern host = {host_ok, "host pattern",
                                    "a host such as 'example.com' or '*.example.com'"};

/* Copies s for a message: at most 40 bytes (cut on a UTF-8 boundary), control characters
 * shown as '?'. */
static const char *shown(const char *s, char buf[48])
{
    size_t n = strlen(s), cut = n > 40 ? 40 : n;

    while (cut < n && cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80) cut--;
    for (size_t i = 0; i < cut; i++) buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    strcpy(buf + cut, cut < n ? "..." : "");
    return buf;
}

/* "string", "object", or for a number its value: what the message says was found. */
static const char *found(const cJSON *v, char buf[48])
{
    if (!cJSON_IsNumber(v)) return proto__type_name(v);
    double d = v->valuedouble;
    if (d == floor(d) && fabs(d) < 1e15)
        snprintf(buf, 48, "%.0f", d);
    else
        snprintf(buf, 48, "%g", d);
    return buf;
}

static int check_pattern(struct vctx *c, const cJSON *v, const struct pattern *pat)
{
    char buf[48];

    if (!cJSON_IsString(v)) return fail(c, v, "expected a string, got %s", proto__type_name(v));
    if (pat && !pat->ok(v->valuestring))
        return fail(c, v, "'%s' is not a valid %s (expected %s)", shown(v->valuestring, buf),
                    pat->what, pat->form);
    return 0;
}

/* ---- the schema ---- */

enum kind {
    K_STR,    /* a string, optionally of a pattern */
    K_BOOL,   /* true or false */
    K_INT,    /* an integral number in [min, max] */
    K_NUM,    /* a number in [min, max] (or (min, max] with F_GT_MIN) */
    K_ENUM,   /* one of choices */
    K_LIST,   /* an array of strings, each optionally of a pattern */
    K_OBJ,    /* an object described by sub */
    K_FREE,   /* any object, kept as written */
    K_FN,     /* a shape of its own: check() */
    K_REJECT, /* never allowed; why says what to do instead */
};

#define F_REQUIRED 1u /* an error when absent */
#define F_OPTIONAL 2u /* left out of the output when absent */
#define F_GT_MIN   4u /* K_NUM: min itself is out of range */
#define F_NONEMPTY 8u /* K_STR: "" is refused */

struct field {
    const char *key;
    enum kind kind;
    unsigned flags;             /* F_... */
    double min, max;            /* K_INT, K_NUM: range (INF when open) */
    double def;                 /* K_BOOL, K_INT, K_NUM: default */
    const char *def_str;        /* K_STR, K_ENUM: default; K_REJECT: why */
    const struct pattern *pat;  /* K_STR, K_LIST: shape of the strings; NULL for any */
    const char *const *choices; /* K_ENUM: NULL-terminated */
    const struct field *sub;    /* K_OBJ: member table, ended by an entry with key NULL */
    /* K_FN: checks v (NULL when absent) and builds the normalized value */
    int (*check)(struct vctx *c, const cJSON *v, cJSON **out);
};

#define STR(k, d)            {.key = k, .kind = K_STR, .def_str = d}
#define BOOL(k, d)           {.key = k, .kind = K_BOOL, .def = d}
#define INT(k, lo, hi, d)    {.key = k, .kind = K_INT, .min = lo, .max = hi, .def = d}
#define NUM(k, lo, hi, d)    {.key = k, .kind = K_NUM, .min = lo, .max = hi, .def = d}
#define OPT_INT(k, lo, hi)   {.key = k, .kind = K_INT, .flags = F_OPTIONAL, .min = lo, .max = hi}
#define NAMED(k, f, p)       {.key = k, .kind = K_STR, .flags = f, .pat = p}
#define LIST(k, p)           {.key = k, .kind = K_LIST, .pat = p}
#define OBJ(k, s)            {.key = k, .kind = K_OBJ, .sub = s}
#define FN(k, fn)            {.key = k, .kind = K_FN, .check = fn}

static int check_obj(struct vctx *c, const cJSON *in, const struct field *fields, cJSON **out);
static int check_model(struct vctx *c, const cJSON *v, cJSON **out);
static int check_tools(struct vctx *c, const cJSON *v, cJSON **out);
static int check_blocks(struct vctx *c, const cJSON *v, cJSON **out);
static int check_triggers(struct vctx *c, const cJSON *v, cJSON **out);
static int check_cron(struct vctx *c, const cJSON *v, cJSON **out);

static const struct field model_fields[] = {
    {.key = "name", .kind = K_STR, .flags = F_NONEMPTY, .def_str = "default"},
    NUM("temperature", 0, 2, 0.7),
    {.key = "top_p", .kind = K_NUM, .flags = F_GT_MIN, .min = 0, .max = 1, .def = 1},
    INT("top_k", 0, INF, 40),
    NUM("min_p", 0, 1, 0),
    INT("max_tokens", 1, INF, 1024),
    OPT_INT("seed", -INF, INF),
    {.key = "repeat_penalty", .kind = K_NUM, .flags = F_GT_MIN, .min = 0, .max = INF, .def = 1},
    NUM("frequency_penalty", -2, 2, 0),
    NUM("presence_penalty", -2, 2, 0),
    OPT_INT("context", 256, INF),
    {0},
};

static const struct field tool_fields[] = {
    NAMED("name", F_REQUIRED, &tool_name),
    INT("timeout_ms", 1, INF, 30000),
    BOOL("enabled", 1),
    BOOL("require_approval", 0),
    {.key = "config", .kind = K_FREE},
    {0},
};

static const struct field block_fields[] = {
    NAMED("label", F_REQUIRED, &block_label),
    STR("value", ""),
    STR("description", ""),
    INT("limit", 1, INF, 2000),
    {0},
};

static const char *const context_policies[] = {"truncate_oldest", "summarize", NULL};

static const struct field recall_fields[] = {
    BOOL("enabled", 1),
    INT("top_k", 1, 100, 5),
    {0},
};

static const struct field context_fields[] = {
    {.key = "policy", .kind = K_ENUM, .def_str = "summarize", .choices = context_policies},
    OPT_INT("max_tokens", 1, INF),
    {0},
};

static const struct field memory_fields[] = {
    FN("blocks", check_blocks),
    OBJ("recall", recall_fields),
    OBJ("context", context_fields),
    {0},
};

static const struct field sandbox_fields[] = {
    INT("memory_mb", 16, 65536, 512),
    OPT_INT("cpu_ms", 1, INF),
    INT("timeout_s", 1, INF, 30),
    INT("pids", 1, 4096, 64),
    INT("disk_mb", 1, 1048576, 256),
    BOOL("network", 0),
    {0},
};

static const struct field browse_fields[] = {
    LIST("allow", &host),
    LIST("deny", &host),
    INT("max_bytes", 1, INF, 2097152),
    INT("timeout_s", 1, INF, 20),
    BOOL("robots", 1),
    {0},
};

static const struct field permission_fields[] = {
    LIST("can_message", &all_or_agent),
    LIST("tools", &tool_name),
    {0},
};

static const struct field limit_fields[] = {
    INT("max_steps", 1, 1000, 20),
    INT("max_tool_calls", 0, 10000, 50),
    INT("max_tokens", 1, INF, 32768),
    INT("max_wall_s", 1, INF, 600),
    {0},
};

static const struct field cron_trigger_fields[] = {
    {.key = "cron", .kind = K_FN, .flags = F_REQUIRED, .check = check_cron},
    {.key = "message", .kind = K_STR, .flags = F_REQUIRED | F_NONEMPTY},
    {0},
};

static const struct field message_trigger_fields[] = {
    NAMED("on_message", F_REQUIRED, &all_or_agent),
    {0},
};

/* Every trigger key, to name typos in a trigger that has neither kind's key. */
static const struct field any_trigger_fields[] = {
    {.key = "cron", .kind = K_STR, .flags = F_OPTIONAL},
    {.key = "message", .kind = K_STR, .flags = F_OPTIONAL},
    {.key = "on_message", .kind = K_STR, .flags = F_OPTIONAL},
    {0},
};

static const struct field top_fields[] = {
    NAMED("name", F_REQUIRED, &agent_name),
    STR("description", ""),
    STR("instructions", ""),
    FN("model", check_model),
    FN("tools", check_tools),
    OBJ("memory", memory_fields),
    OBJ("sandbox", sandbox_fields),
    OBJ("browse", browse_fields),
    OBJ("permissions", permission_fields),
    OBJ("limits", limit_fields),
    FN("triggers", check_triggers),
    {.key = "version",
     .kind = K_REJECT,
     .def_str = "not allowed in a definition (the daemon numbers versions as it stores them)"},
    {0},
};

/* ---- scalar fields ---- */

/* "an integer from 1 to 1000", "a number greater than 0 and at most 1", ... */
static void describe_range(const struct field *f, char *buf, size_t n)
{
    const char *a = f->kind == K_INT ? "an integer" : "a number";

    if ((f->flags & F_GT_MIN) && isinf(f->max))
        snprintf(buf, n, "%s greater than %g", a, f->min);
    else if (f->flags & F_GT_MIN)
        snprintf(buf, n, "%s greater than %g and at most %g", a, f->min, f->max);
    else if (isinf(f->min) && isinf(f->max))
        snprintf(buf, n, "%s", a);
    else if (f->kind == K_INT && isinf(f->max) && (f->min == 0 || f->min == 1))
        snprintf(buf, n, "a %s integer", f->min == 1 ? "positive" : "non-negative");
    else if (isinf(f->max))
        snprintf(buf, n, "%s of at least %g", a, f->min);
    else
        snprintf(buf, n, "%s from %g to %g", a, f->min, f->max);
}

static int check_number(struct vctx *c, const struct field *f, const cJSON *v, cJSON **out)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    bool ok = isfinite(d) && d <= f->max && ((f->flags & F_GT_MIN) ? d > f->min : d >= f->min);
    char want[96], buf[48];

    if (ok && f->kind == K_INT) ok = proto_is_int((const struct proto_val *)v);
    if (!ok) {
        describe_range(f, want, sizeof(want));
        return fail(c, v, "expected %s, got %s", want, found(v, buf));
    }
    *out = proto__must(cJSON_CreateNumber(d));
    return 0;
}

static int check_enum(struct vctx *c, const struct field *f, const cJSON *v, cJSON **out)
{
    struct ag_buf want = {0};
    char buf[48];
    int rc;

    for (size_t i = 0; f->choices[i] && cJSON_IsString(v); i++) {
        if (strcmp(v->valuestring, f->choices[i]) == 0) {
            *out = proto__must(cJSON_CreateString(v->valuestring));
            return 0;
        }
    }
    for (size_t i = 0; f->choices[i]; i++)
        ag_buf_printf(&want, "%s'%s'", i == 0 ? "" : f->choices[i + 1] ? ", " : " or ",
                      f->choices[i]);
    if (cJSON_IsString(v))
        rc = fail(c, v, "expected %s, got '%s'", want.data, shown(v->valuestring, buf));
    else
        rc = fail(c, v, "expected %s, got %s", want.data, proto__type_name(v));
    ag_buf_release(&want);
    return rc;
}

static int check_list(struct vctx *c, const struct field *f, const cJSON *v, cJSON **out)
{
    cJSON *arr;
    size_t i = 0;
    int rc = 0;

    if (!cJSON_IsArray(v))
        return fail(c, v, "expected an array of strings, got %s", proto__type_name(v));
    arr = proto__must(cJSON_CreateArray());
    for (const cJSON *it = v->child; it && rc == 0; it = it->next, i++) {
        size_t mark = proto__path_index(&c->path, i);
        rc = check_pattern(c, it, f->pat);
        proto__path_pop(&c->path, mark);
        if (rc == 0) cJSON_AddItemToArray(arr, proto__must(cJSON_CreateString(it->valuestring)));
    }
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}

/* Checks a present value against its field and builds the normalized value. */
static int check_field(struct vctx *c, const struct field *f, const cJSON *v, cJSON **out)
{
    switch (f->kind) {
    case K_STR:
        if (cJSON_IsString(v) && (f->flags & F_NONEMPTY) && !*v->valuestring)
            return fail(c, v, "must not be empty");
        if (check_pattern(c, v, f->pat)) return AG_ESPEC;
        *out = proto__must(cJSON_CreateString(v->valuestring));
        return 0;
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return fail(c, v, "expected true or false, got %s", proto__type_name(v));
        *out = proto__must(cJSON_CreateBool(cJSON_IsTrue(v)));
        return 0;
    case K_INT:
    case K_NUM: return check_number(c, f, v, out);
    case K_ENUM: return check_enum(c, f, v, out);
    case K_LIST: return check_list(c, f, v, out);
    case K_OBJ: return check_obj(c, v, f->sub, out);
    case K_FREE:
        if (!cJSON_IsObject(v))
            return fail(c, v, "expected an object, got %s", proto__type_name(v));
        *out = proto__must(cJSON_Duplicate(v, 1));
        return 0;
    case K_FN: return f->check(c, v, out);
    case K_REJECT: return fail(c, v, "%s", f->def_str);
    }
    return fail(c, v, "internal error: unknown field kind %d", (int)f->kind);
}

/* Builds the value of a field that is absent (or null) in an object; parent is the object, for
 * the line of a "missing required field" message. *out stays NULL for optional fields. */
static int absent(struct vctx *c, const struct field *f, const cJSON *parent, cJSON **out)
{
    *out = NULL;
    if (f->flags & F_REQUIRED) return fail(c, parent, "missing required field '%s'", f->key);
    if (f->flags & F_OPTIONAL) return 0;
    switch (f->kind) {
    case K_STR:
    case K_ENUM: *out = cJSON_CreateString(f->def_str ? f->def_str : ""); break;
    case K_BOOL: *out = cJSON_CreateBool(f->def != 0); break;
    case K_INT:
    case K_NUM: *out = cJSON_CreateNumber(f->def); break;
    case K_LIST: *out = cJSON_CreateArray(); break;
    case K_OBJ: return check_obj(c, NULL, f->sub, out);
    case K_FN: return f->check(c, NULL, out);
    case K_FREE:
    case K_REJECT: return 0;
    }
    proto__must(*out);
    return 0;
}

/* ---- objects ---- */

/* The known field closest to an unknown key: edit distance <= 2, else a prefix either way. */
static const char *suggest(const char *key, const struct field *fields)
{
    const char *best = NULL;
    size_t kn = strlen(key);
    int best_d = 3;

    for (const struct field *f = fields; f->key; f++) {
        int d = f->kind == K_REJECT ? 99 : ag_levenshtein(key, f->key);
        if (d < best_d) best_d = d, best = f->key;
    }
    for (const struct field *f = fields; !best && f->key; f++) {
        size_t fn = strlen(f->key);
        if (f->kind == K_REJECT) continue;
        if ((kn >= 3 && kn < fn && strncmp(f->key, key, kn) == 0) ||
            (fn >= 3 && fn < kn && strncmp(key, f->key, fn) == 0))
            best = f->key;
    }
    return best;
}

static int unknown_field(struct vctx *c, const struct field *fields, const cJSON *m)
{
    const char *best = suggest(m->string, fields);
    struct ag_buf known = {0};
    int rc;

    if (best) return fail(c, m, "unknown field (did you mean '%s'?)", best);
    for (const struct field *f = fields; f->key; f++)
        if (f->kind != K_REJECT) ag_buf_printf(&known, "%s%s", known.len ? ", " : "", f->key);
    rc = fail(c, m, "unknown field (expected one of %s)", known.data);
    ag_buf_release(&known);
    return rc;
}

/* Checks member m of an object against fields; seen and vals are indexed like fields. */
static int check_member(struct vctx *c, const struct field *fields, const cJSON *m, bool *seen,
                        cJSON **vals)
{
    const struct field *f = fields;
    size_t mark;
    int rc = 0;

    while (f->key && strcmp(f->key, m->string) != 0) f++;
    /* Only protocol input gets here with a repeated key: the loaders refuse them. */
    if (f->key && seen[f - fields]) return fail(c, m, "duplicate key '%s'", m->string);
    mark = proto__path_key(&c->path, m->string);
    if (!f->key) {
        rc = unknown_field(c, fields, m);
    } else {
        seen[f - fields] = true;
        if (!cJSON_IsNull(m) || (f->flags & F_REQUIRED)) rc = check_field(c, f, m, &vals[f - fields]);
    }
    proto__path_pop(&c->path, mark);
    return rc;
}

/* Checks object in (NULL: absent, all defaults) against fields; *out gets the normalized object
 * with the members in table order. */
static int check_obj(struct vctx *c, const cJSON *in, const struct field *fields, cJSON **out)
{
    bool seen[MAX_FIELDS] = {false};
    cJSON *vals[MAX_FIELDS] = {NULL};
    size_t n = 0;
    int rc = 0;

    while (fields[n].key) n++;
    assert(n <= MAX_FIELDS);
    *out = NULL;
    if (in && !cJSON_IsObject(in))
        return fail(c, in, "expected an object, got %s", proto__type_name(in));
    for (const cJSON *m = in ? in->child : NULL; m && rc == 0; m = m->next)
        rc = check_member(c, fields, m, seen, vals);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!vals[i]) rc = absent(c, &fields[i], in, &vals[i]);
    if (rc == 0) {
        *out = proto__must(cJSON_CreateObject());
        for (size_t i = 0; i < n; i++)
            if (vals[i]) cJSON_AddItemToObject(*out, fields[i].key, vals[i]), vals[i] = NULL;
    }
    for (size_t i = 0; i < n; i++) cJSON_Delete(vals[i]);
    return rc;
}

/* ---- fields with a shape of their own ---- */

/* "model: qwen2.5-7b" is short for "model: {name: qwen2.5-7b}". */
static int check_model(struct vctx *c, const cJSON *v, cJSON **out)
{
    int rc;

    if (!cJSON_IsString(v)) {
        if (v && !cJSON_IsObject(v))
            return fail(c, v, "expected a model name or an object, got %s", proto__type_name(v));
        return check_obj(c, v, model_fields, out);
    }
    if (!*v->valuestring) return fail(c, v, "must not be empty");
    if ((rc = check_obj(c, NULL, model_fields, out)) != 0) return rc;
    cJSON_ReplaceItemInObjectCaseSensitive(*out, "name",
                                           proto__must(cJSON_CreateString(v->valuestring)));
    return 0;
}

/* An array of objects, each checked against fields, whose `unique` member differs from item to
 * item. When bare is set an item may also be a string, short for {unique: string}. */
struct items {
    const struct field *fields;
    const char *unique;         /* member that must not repeat */
    const char *noun;           /* for "duplicate tool 'x'" */
    const struct pattern *bare; /* shape of a bare string item; NULL: objects only */
    /* extra check of an item (in) once normalized (norm); may be NULL */
    int (*post)(struct vctx *c, const cJSON *in, const cJSON *norm);
};

static int check_item(struct vctx *c, const struct items *spec, const cJSON *it, cJSON **out)
{
    int rc;

    if (spec->bare && cJSON_IsString(it)) {
        if ((rc = check_pattern(c, it, spec->bare)) != 0) return rc;
        cJSON *obj = proto__must(cJSON_CreateObject());
        cJSON_AddItemToObject(obj, spec->unique, proto__must(cJSON_CreateString(it->valuestring)));
        rc = check_obj(c, obj, spec->fields, out);
        cJSON_Delete(obj);
        return rc;
    }
    if (!cJSON_IsObject(it))
        return fail(c, it, spec->bare ? "expected a %s name or an object, got %s"
                                      : "expected an object (a %s), got %s",
                    spec->noun, proto__type_name(it));
    rc = check_obj(c, it, spec->fields, out);
    if (rc == 0 && spec->post) rc = spec->post(c, it, *out);
    return rc;
}

static int check_items(struct vctx *c, const cJSON *v, const struct items *spec, cJSON **out)
{
    struct proto__keyset seen = {0};
    cJSON *arr = NULL;
    size_t i = 0;
    int rc = 0;

    if (v && !cJSON_IsArray(v)) return fail(c, v, "expected an array, got %s", proto__type_name(v));
    arr = proto__must(cJSON_CreateArray());
    for (const cJSON *it = v ? v->child : NULL; it && rc == 0; it = it->next, i++) {
        size_t mark = proto__path_index(&c->path, i);
        cJSON *obj = NULL;
        if ((rc = check_item(c, spec, it, &obj)) == 0) {
            const char *key = cJSON_GetObjectItemCaseSensitive(obj, spec->unique)->valuestring;
            if (!proto__keyset_add(&seen, key))
                rc = fail(c, it, "duplicate %s '%s'", spec->noun, key);
            cJSON_AddItemToArray(arr, obj);
        }
        proto__path_pop(&c->path, mark);
    }
    proto__keyset_release(&seen);
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}

static int check_tools(struct vctx *c, const cJSON *v, cJSON **out)
{
    static const struct items tools = {tool_fields, "name", "tool", &tool_name, NULL};
    return check_items(c, v, &tools, out);
}

/* Characters (UTF-8 code points) in s: what a block's limit counts. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* A block's initial value must fit its limit, or the first edit by the agent would fail. */
static int block_fits(struct vctx *c, const cJSON *in, const cJSON *norm)
{
    const char *value = cJSON_GetObjectItemCaseSensitive(norm, "value")->valuestring;
    double limit = cJSON_GetObjectItemCaseSensitive(norm, "limit")->valuedouble;
    size_t n = utf8_chars(value);
    int rc = 0;

    if ((double)n > limit) {
        size_t mark = proto__path_key(&c->path, "value");
        rc = fail(c, cJSON_GetObjectItemCaseSensitive(in, "value"),
                  "%zu characters, more than the block's limit of %.0f", n, limit);
        proto__path_pop(&c->path, mark);
    }
    return rc;
}

static int check_blocks(struct vctx *c, const cJSON *v, cJSON **out)
{
    static const struct items blocks = {block_fields, "label", "label", NULL, block_fits};
    return check_items(c, v, &blocks, out);
}

/* Five fields of 0-9 * / , - separated by blanks; normalized to single spaces. */
static int check_cron(struct vctx *c, const cJSON *v, cJSON **out)
{
    struct ag_buf norm = {0};
    int n = 0, rc = 0;

    if (!cJSON_IsString(v)) return fail(c, v, "expected a string, got %s", proto__type_name(v));
    for (const char *p = v->valuestring; *p && rc == 0;) {
        size_t len = strcspn(p, " \t");
        if (len == 0) {
            p++;
            continue;
        }
        if (strspn(p, "0123456789*/,-") < len)
            rc = fail(c, v, "cron field %d ('%.*s') may only contain 0-9 * / , -", n + 1,
                      len > 20 ? 20 : (int)len, p);
        ag_buf_printf(&norm, "%s%.*s", n++ ? " " : "", (int)len, p);
        p += len;
    }
    if (rc == 0 && n != 5)
        rc = fail(c, v, "expected 5 fields (minute hour day-of-month month day-of-week), got %d", n);
    if (rc == 0) *out = proto__must(cJSON_CreateString(norm.data));
    ag_buf_release(&norm);
    return rc;
}

/* Each trigger is {cron, message} (a scheduled message to the agent) or {on_message} (run when
 * that agent, or any with "*", sends a message). */
static int check_trigger(struct vctx *c, const cJSON *it, cJSON **out)
{
    bool cron, on_message;
    int rc;

    if (!cJSON_IsObject(it)) return fail(c, it, "expected an object, got %s", proto__type_name(it));
    cron = cJSON_GetObjectItemCaseSensitive(it, "cron") != NULL;
    on_message = cJSON_GetObjectItemCaseSensitive(it, "on_message") != NULL;
    if (cron && on_message) return fail(c, it, "a trigger has 'cron' or 'on_message', not both");
    if (cron || on_message)
        return check_obj(c, it, cron ? cron_trigger_fields : message_trigger_fields, out);
    /* Neither: name a misspelt key if there is one, else say what is missing. */
    if ((rc = check_obj(c, it, any_trigger_fields, out)) == 0) {
        cJSON_Delete(*out);
        *out = NULL;
        rc = fail(c, it, "a trigger needs 'cron' (with 'message') or 'on_message'");
    }
    return rc;
}

static int check_triggers(struct vctx *c, const cJSON *v, cJSON **out)
{
    cJSON *arr;
    size_t i = 0;
    int rc = 0;

    if (v && !cJSON_IsArray(v)) return fail(c, v, "expected an array, got %s", proto__type_name(v));
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

static int validate(struct vctx *c, const cJSON *root, struct proto_val **out)
{
    cJSON *spec = NULL;
    int rc;

    if (!cJSON_IsObject(root))
        rc = fail(c, root, "expected an object%s, got %s", c->file ? " at the top level" : "",
                  proto__type_name(root));
    else
        rc = check_obj(c, root, top_fields, &spec);
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
    if (name && (ag_str_has_suffix(name, ".yaml") || ag_str_has_suffix(name, ".yml")))
        return false;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    return i < len && text[i] == '{';
}

int proto_spec_load_text(const char *text, size_t len, const char *name, struct proto_val **out,
                         struct ag_err *err)
{
    const char *file = ag_basename(name && *name ? name : "<text>");
    struct proto__doc doc = {0};
    struct vctx c = {.doc = &doc, .file = file, .err = err};
    int rc;

    if (out) *out = NULL;
    if (len > PROTO__SPEC_MAX_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "%s: larger than %u bytes, the limit for an agent "
                          "definition", file, PROTO__SPEC_MAX_BYTES);
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
    if (rc == AG_ETOOBIG)
        return ag_err_set(err, rc, "%s: larger than %u bytes, the limit for an agent definition",
                          ag_basename(path), PROTO__SPEC_MAX_BYTES);
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
    struct vctx c = {.err = err};
    int rc;

    if (out) *out = NULL;
    ag_buf_puts(&c.path, "spec");
    if (too_deep((const cJSON *)spec, 1))
        rc = ag_err_set(err, AG_ESPEC, "spec: nesting deeper than %d levels",
                        PROTO__SPEC_MAX_DEPTH);
    else
        rc = validate(&c, (const cJSON *)spec, out);
    ag_buf_release(&c.path);
    return rc;
}
