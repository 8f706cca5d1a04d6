/*
 * jsonschema.c - JSON Schema validation of struct proto_val values, in two voices.
 *
 * The subset: type and type arrays, properties, required, additionalProperties, items,
 * minItems/maxItems, enum, const, anyOf/oneOf, $ref to #, #/$defs/... and #/definitions/...,
 * minLength/maxLength, minimum/maximum/exclusiveMinimum/exclusiveMaximum. Other keywords
 * ("description", "default", ...) are ignored.
 *
 * One walker serves two callers, and only the paths and the wording differ:
 *   - documents (tool arguments, structured outputs): JSON pointers, "/city: expected string,
 *     got number", "/: missing required property \"unit\"";
 *   - JSON-RPC parameters: the field as a client writes it and the words params.c has always
 *     used, "params.limits.memory_mb: expected an integer from 16 to 65536",
 *     "params.allow[2]: expected a string, got number", "params.nmae: unknown parameter (did
 *     you mean 'name'?)". A member that is null counts as absent there (unless its type lists
 *     "null"), absent params count as {}, and an object's members are checked unknown names
 *     first, then in the schema's "properties" order: the order the hand-written checks used.
 *
 * proto_val is cJSON underneath (json.c), so the walker reads cJSON directly; nothing of it
 * leaves this file.
 */
#include "protocol.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol_int.h"

#define CC(v) ((const cJSON *)(v))

#define MAX_DEPTH  512  /* checks nested deeper than this fail (a $ref cycle, a hostile value) */
#define PATH_BYTES 1024 /* longest path a message names; deeper ones are cut */

struct vctx {
    const cJSON *root;  /* the whole schema, for $ref */
    struct ag_err *err; /* borrowed; may be NULL */
    int depth;          /* nested check() calls */
    bool params;        /* the parameters voice (see the file comment) */
};

static const char *type_of(const cJSON *v)
{
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    return "object";
}

static bool type_ok(const struct vctx *c, const char *type, const cJSON *v)
{
    if (strcmp(type, "integer") == 0) {
        /* Parameters use proto_is_int's bound (exact doubles), documents the wider one. */
        if (c->params) return proto_is_int((const struct proto_val *)v);
        return cJSON_IsNumber(v) && floor(v->valuedouble) == v->valuedouble &&
               fabs(v->valuedouble) < 9.3e18;
    }
    if (strcmp(type, "number") == 0) return cJSON_IsNumber(v);
    return strcmp(type, type_of(v)) == 0;
}

/* "a string", "an integer", "null": how a parameter's expected type reads. */
static const char *with_article(const char *type)
{
    static const char *const names[][2] = {
        {"string", "a string"},   {"integer", "an integer"}, {"number", "a number"},
        {"boolean", "a boolean"}, {"object", "an object"},   {"array", "an array"},
        {"null", "null"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(type, names[i][0]) == 0) return names[i][1];
    return type;
}

static const cJSON *resolve(const cJSON *root, const char *ref)
{
    if (strcmp(ref, "#") == 0) return root;
    if (strncmp(ref, "#/$defs/", 8) == 0)
        return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "$defs"),
                                                ref + 8);
    if (strncmp(ref, "#/definitions/", 14) == 0)
        return cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(root, "definitions"), ref + 14);
    return NULL;
}

static const cJSON *kw(const cJSON *s, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(s, name);
}

/* The path as a message shows it: "/" for a document's root. */
static const char *shown(const char *path)
{
    return *path ? path : "/";
}

static void path_key(const struct vctx *c, char *out, const char *path, const char *key)
{
    snprintf(out, PATH_BYTES, c->params ? "%s.%s" : "%s/%s", path, key);
}

static void path_index(const struct vctx *c, char *out, const char *path, int i)
{
    snprintf(out, PATH_BYTES, c->params ? "%s[%d]" : "%s/%d", path, i);
}

static int check(struct vctx *c, const cJSON *s, const cJSON *v, const char *path);

static int fail(struct vctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct vctx *c, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ag_err_set(c->err, AG_EPARAMS, "%s: %s", shown(path), msg);
}

/* JSON text of v for a message, strings bare: enum and const values. */
static void put_value(struct ag_buf *b, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        ag_buf_puts(b, v->valuestring);
        return;
    }
    char *t = cJSON_PrintUnformatted(v);
    if (!t) ag_malloc((size_t)-1); /* aborts: cJSON only fails to print on OOM */
    ag_buf_puts(b, t);
    cJSON_free(t);
}

/* ---- the parameters voice ---- */

/* An integer keyword as an int64 bound, rounded inward (exclusive bounds step past). */
static bool int_bound(const cJSON *s, bool lower, int64_t *out)
{
    const cJSON *inc = kw(s, lower ? "minimum" : "maximum");
    const cJSON *exc = kw(s, lower ? "exclusiveMinimum" : "exclusiveMaximum");
    bool have = false;
    double b = 0;
    if (cJSON_IsNumber(inc))
        b = lower ? ceil(inc->valuedouble) : floor(inc->valuedouble), have = true;
    if (cJSON_IsNumber(exc)) {
        double e = lower ? floor(exc->valuedouble) + 1 : ceil(exc->valuedouble) - 1;
        if (!have || (lower ? e > b : e < b)) b = e;
        have = true;
    }
    if (!have) return false;
    if (b <= -9.2e18)
        *out = INT64_MIN;
    else if (b >= 9.2e18)
        *out = INT64_MAX;
    else
        *out = (int64_t)b;
    return true;
}

/* "expected an integer from 1 to 100", for a value that is not an integer or out of range. */
static int params_int(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    int_bound(s, true, &lo);
    int_bound(s, false, &hi);
    int64_t n = proto_int((const struct proto_val *)v, 0);
    if (!proto_is_int((const struct proto_val *)v) || n < lo || n > hi)
        return fail(c, path, "expected an integer from %lld to %lld", (long long)lo, (long long)hi);
    return 0;
}

/* "expected a number from 0 to 2" (or ">= 0", "<= 2", or no range at all). */
static int params_number(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    const cJSON *mn = kw(s, "minimum"), *mx = kw(s, "maximum");
    const cJSON *xmn = kw(s, "exclusiveMinimum"), *xmx = kw(s, "exclusiveMaximum");
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    bool ok = cJSON_IsNumber(v);
    if (ok && cJSON_IsNumber(mn) && !(x >= mn->valuedouble)) ok = false;
    if (ok && cJSON_IsNumber(mx) && !(x <= mx->valuedouble)) ok = false;
    if (ok && cJSON_IsNumber(xmn) && !(x > xmn->valuedouble)) ok = false;
    if (ok && cJSON_IsNumber(xmx) && !(x < xmx->valuedouble)) ok = false;
    if (ok) return 0;
    char lo[48] = "", hi[48] = "";
    if (cJSON_IsNumber(mn))
        snprintf(lo, sizeof(lo), "%g", mn->valuedouble);
    else if (cJSON_IsNumber(xmn))
        snprintf(lo, sizeof(lo), "above %g", xmn->valuedouble);
    if (cJSON_IsNumber(mx))
        snprintf(hi, sizeof(hi), "%g", mx->valuedouble);
    else if (cJSON_IsNumber(xmx))
        snprintf(hi, sizeof(hi), "below %g", xmx->valuedouble);
    if (*lo && *hi) return fail(c, path, "expected a number from %s to %s", lo, hi);
    if (*lo) return fail(c, path, "expected a number from %s", lo);
    if (*hi) return fail(c, path, "expected a number up to %s", hi);
    return fail(c, path, "expected a number, got %s", type_of(v));
}

/* The type check of the parameters voice: "expected a string, got number",
 * "expected a string or an array, got object"; integers and numbers say their range. */
static int params_type(struct vctx *c, const cJSON *s, const cJSON *type, const cJSON *v,
                       const char *path)
{
    const char *only = NULL; /* the one non-null type, when there is one */
    size_t n_types = 0;
    if (cJSON_IsString(type)) {
        only = type->valuestring, n_types = 1;
    } else {
        for (const cJSON *t = type->child; t; t = t->next)
            if (cJSON_IsString(t) && strcmp(t->valuestring, "null") != 0)
                only = t->valuestring, n_types++;
    }
    if (n_types == 1 && strcmp(only, "integer") == 0) {
        if (cJSON_IsNull(v) && !cJSON_IsString(type)) return 0; /* "null" is listed */
        return params_int(c, s, v, path);
    }
    if (n_types == 1 && strcmp(only, "number") == 0) {
        if (cJSON_IsNull(v) && !cJSON_IsString(type)) return 0;
        return params_number(c, s, v, path);
    }
    if (cJSON_IsString(type)) {
        if (type_ok(c, type->valuestring, v)) return 0;
        return fail(c, path, "expected %s, got %s", with_article(type->valuestring), type_of(v));
    }
    for (const cJSON *t = type->child; t; t = t->next)
        if (cJSON_IsString(t) && type_ok(c, t->valuestring, v)) return 0;
    struct ag_buf b;
    ag_buf_init(&b);
    size_t i = 0, n = (size_t)cJSON_GetArraySize(type);
    for (const cJSON *t = type->child; t; t = t->next, i++) {
        if (!cJSON_IsString(t)) continue;
        if (i) ag_buf_puts(&b, i + 1 == n ? " or " : ", ");
        ag_buf_puts(&b, with_article(t->valuestring));
    }
    int rc = fail(c, path, "expected %s, got %s", b.data ? b.data : "nothing", type_of(v));
    ag_buf_release(&b);
    return rc;
}

/* Whether a parameter's null is a value (its type lists "null") rather than an absence. */
static bool null_allowed(const cJSON *root, const cJSON *s)
{
    const cJSON *ref = kw(s, "$ref");
    if (cJSON_IsString(ref)) s = resolve(root, ref->valuestring);
    const cJSON *type = kw(s, "type");
    if (cJSON_IsString(type)) return strcmp(type->valuestring, "null") == 0;
    for (const cJSON *t = cJSON_IsArray(type) ? type->child : NULL; t; t = t->next)
        if (cJSON_IsString(t) && strcmp(t->valuestring, "null") == 0) return true;
    return false;
}

/* What an array's items are called in "at most 4 strings". */
static const char *items_noun(const cJSON *s)
{
    const cJSON *type = kw(kw(s, "items"), "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (strcmp(t, "string") == 0) return "strings";
    if (strcmp(t, "object") == 0) return "objects";
    if (strcmp(t, "integer") == 0) return "integers";
    if (strcmp(t, "number") == 0) return "numbers";
    return "items";
}

/* Members of an object parameter: unknown names first (with a suggestion), then each property
 * in the schema's order, then required names the properties do not list. */
static int params_object(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    const cJSON *props = kw(s, "properties");
    const cJSON *req = kw(s, "required");
    const cJSON *addl = kw(s, "additionalProperties");
    char p[PATH_BYTES];
    int rc;

    for (const cJSON *m = v->child; m; m = m->next) {
        if (kw(props, m->string)) continue;
        path_key(c, p, path, m->string);
        if (cJSON_IsFalse(addl)) {
            size_t n = (size_t)cJSON_GetArraySize(props), i = 0;
            const char **keys = ag_malloc((n + 1) * sizeof(*keys));
            for (const cJSON *k = props ? props->child : NULL; k; k = k->next)
                keys[i++] = k->string;
            keys[i] = NULL;
            const char *best = proto__closest_key(m->string, keys);
            rc = best ? fail(c, p, "unknown parameter (did you mean '%s'?)", best)
                      : fail(c, p, "unknown parameter");
            free(keys);
            return rc;
        }
        if (cJSON_IsObject(addl) && !(cJSON_IsNull(m) && !null_allowed(c->root, addl)) &&
            (rc = check(c, addl, m, p)) != 0)
            return rc;
    }
    for (const cJSON *ps = props ? props->child : NULL; ps; ps = ps->next) {
        const cJSON *m = kw(v, ps->string);
        path_key(c, p, path, ps->string);
        if (!m || (cJSON_IsNull(m) && !null_allowed(c->root, ps))) {
            for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next)
                if (cJSON_IsString(r) && strcmp(r->valuestring, ps->string) == 0)
                    return fail(c, p, "required");
            continue;
        }
        if ((rc = check(c, ps, m, p)) != 0) return rc;
    }
    for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r) || kw(props, r->valuestring)) continue;
        const cJSON *m = kw(v, r->valuestring);
        path_key(c, p, path, r->valuestring);
        if (!m || cJSON_IsNull(m)) return fail(c, p, "required");
    }
    return 0;
}

/* anyOf in the parameters voice: the first alternative whose type fits the value speaks for
 * them all ("params.stop: at most 4 strings"); when none fits, the types are listed. */
static int params_any(struct vctx *c, const cJSON *any, const cJSON *v, const char *path)
{
    const cJSON *fits = NULL;
    struct ag_buf types;
    ag_buf_init(&types);
    for (const cJSON *alt = any->child; alt; alt = alt->next) {
        struct ag_err e = {0};
        struct vctx sub = {.root = c->root, .err = &e, .depth = c->depth, .params = true};
        int rc = check(&sub, alt, v, path);
        if (rc == 0) {
            ag_buf_release(&types);
            return 0;
        }
        if (rc == AG_EINVAL) {
            ag_buf_release(&types);
            return ag_err_set(c->err, rc, "%s", e.msg);
        }
        const cJSON *ref = kw(alt, "$ref");
        const cJSON *a = cJSON_IsString(ref) ? resolve(c->root, ref->valuestring) : alt;
        const cJSON *type = kw(a, "type");
        bool ok = !type;
        if (cJSON_IsString(type))
            ok = type_ok(c, type->valuestring, v) ||
                 (strcmp(type->valuestring, "integer") == 0 && cJSON_IsNumber(v));
        for (const cJSON *t = cJSON_IsArray(type) ? type->child : NULL; t; t = t->next)
            ok = ok || (cJSON_IsString(t) && type_ok(c, t->valuestring, v));
        if (ok && !fits) fits = alt;
        for (const cJSON *t = cJSON_IsArray(type) ? type->child : type; cJSON_IsString(t);
             t = t->next) {
            if (types.len) ag_buf_puts(&types, " or ");
            ag_buf_puts(&types, with_article(t->valuestring));
            if (t == type) break;
        }
    }
    int rc;
    if (fits)
        rc = check(c, fits, v, path);
    else if (types.len)
        rc = fail(c, path, "expected %s, got %s", types.data, type_of(v));
    else
        rc = fail(c, path, "matches none of the allowed forms");
    ag_buf_release(&types);
    return rc;
}

static int params_rest(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    const cJSON *cst = kw(s, "const");
    if (cst && !cJSON_Compare(cst, v, true)) {
        struct ag_buf b;
        ag_buf_init(&b);
        put_value(&b, cst);
        int rc = fail(c, path, "expected %s", b.data ? b.data : "");
        ag_buf_release(&b);
        return rc;
    }
    const cJSON *en = kw(s, "enum");
    if (cJSON_IsArray(en)) {
        for (const cJSON *e = en->child; e; e = e->next)
            if (cJSON_Compare(e, v, true)) goto enum_ok;
        struct ag_buf b;
        ag_buf_init(&b);
        for (const cJSON *e = en->child; e; e = e->next) {
            if (e != en->child) ag_buf_puts(&b, ", ");
            put_value(&b, e);
        }
        int rc = fail(c, path, "expected one of %s", b.data ? b.data : "");
        ag_buf_release(&b);
        return rc;
    }
enum_ok:;
    const cJSON *type = kw(s, "type");
    int rc;
    if ((cJSON_IsString(type) || cJSON_IsArray(type)) &&
        (rc = params_type(c, s, type, v, path)) != 0)
        return rc;
    /* A single integer or number type has said its range already; otherwise bounds apply to
     * whatever number arrives. */
    bool ranged = cJSON_IsString(type) && (strcmp(type->valuestring, "integer") == 0 ||
                                           strcmp(type->valuestring, "number") == 0);
    if (cJSON_IsNumber(v) && !ranged && (rc = params_number(c, s, v, path)) != 0) return rc;
    if (cJSON_IsString(v)) {
        const cJSON *mn = kw(s, "minLength"), *mx = kw(s, "maxLength");
        size_t n = ag_utf8_count(v->valuestring);
        if (cJSON_IsNumber(mn) && (double)n < mn->valuedouble)
            return mn->valuedouble <= 1
                       ? fail(c, path, "must not be empty")
                       : fail(c, path, "must be at least %g characters", mn->valuedouble);
        if (cJSON_IsNumber(mx) && (double)n > mx->valuedouble)
            return fail(c, path, "must be at most %g characters", mx->valuedouble);
    }
    if (cJSON_IsArray(v)) {
        const cJSON *mn = kw(s, "minItems"), *mx = kw(s, "maxItems");
        int n = cJSON_GetArraySize(v);
        if (cJSON_IsNumber(mn) && n < mn->valuedouble)
            return mn->valuedouble <= 1
                       ? fail(c, path, "must not be empty")
                       : fail(c, path, "at least %g %s", mn->valuedouble, items_noun(s));
        if (cJSON_IsNumber(mx) && n > mx->valuedouble)
            return fail(c, path, "at most %g %s", mx->valuedouble, items_noun(s));
        const cJSON *items = kw(s, "items");
        if (items) {
            int i = 0;
            char p[PATH_BYTES];
            for (const cJSON *e = v->child; e; e = e->next, i++) {
                path_index(c, p, path, i);
                if ((rc = check(c, items, e, p)) != 0) return rc;
            }
        }
    }
    if (cJSON_IsObject(v)) return params_object(c, s, v, path);
    return 0;
}

/* ---- the documents voice ---- */

static int document_rest(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    const cJSON *cst = kw(s, "const");
    if (cst && !cJSON_Compare(cst, v, true)) return fail(c, path, "not the constant value");
    const cJSON *en = kw(s, "enum");
    if (cJSON_IsArray(en)) {
        bool found = false;
        for (const cJSON *e = en->child; e && !found; e = e->next)
            found = cJSON_Compare(e, v, true);
        if (!found) return fail(c, path, "not one of the enum values");
    }
    const cJSON *type = kw(s, "type");
    if (cJSON_IsString(type) && !type_ok(c, type->valuestring, v))
        return fail(c, path, "expected %s, got %s", type->valuestring, type_of(v));
    if (cJSON_IsArray(type)) {
        bool ok = false;
        for (const cJSON *t = type->child; t && !ok; t = t->next)
            ok = cJSON_IsString(t) && type_ok(c, t->valuestring, v);
        if (!ok) return fail(c, path, "none of the allowed types matches %s", type_of(v));
    }
    if (cJSON_IsString(v)) {
        const cJSON *mn = kw(s, "minLength"), *mx = kw(s, "maxLength");
        size_t n = ag_utf8_count(v->valuestring);
        if (cJSON_IsNumber(mn) && (double)n < mn->valuedouble)
            return fail(c, path, "shorter than minLength");
        if (cJSON_IsNumber(mx) && (double)n > mx->valuedouble)
            return fail(c, path, "longer than maxLength");
    }
    if (cJSON_IsNumber(v)) {
        static const char *const bounds[] = {"minimum", "maximum", "exclusiveMinimum",
                                             "exclusiveMaximum"};
        for (int i = 0; i < 4; i++) {
            const cJSON *b = kw(s, bounds[i]);
            if (!cJSON_IsNumber(b)) continue;
            double x = v->valuedouble, y = b->valuedouble;
            bool bad = i == 0 ? x < y : i == 1 ? x > y : i == 2 ? x <= y : x >= y;
            if (bad) return fail(c, path, "out of range (%s)", bounds[i]);
        }
    }
    char p[PATH_BYTES];
    int rc;
    if (cJSON_IsArray(v)) {
        const cJSON *mn = kw(s, "minItems"), *mx = kw(s, "maxItems");
        int n = cJSON_GetArraySize(v);
        if (cJSON_IsNumber(mn) && n < mn->valuedouble)
            return fail(c, path, "fewer items than minItems");
        if (cJSON_IsNumber(mx) && n > mx->valuedouble)
            return fail(c, path, "more items than maxItems");
        const cJSON *items = kw(s, "items");
        if (items) {
            int i = 0;
            for (const cJSON *e = v->child; e; e = e->next, i++) {
                path_index(c, p, path, i);
                if ((rc = check(c, items, e, p)) != 0) return rc;
            }
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = kw(s, "properties");
        const cJSON *req = kw(s, "required");
        const cJSON *addl = kw(s, "additionalProperties");
        for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next)
            if (cJSON_IsString(r) && !kw(v, r->valuestring))
                return fail(c, path, "missing required property \"%s\"", r->valuestring);
        for (const cJSON *m = v->child; m; m = m->next) {
            path_key(c, p, path, m->string);
            const cJSON *ps = props ? kw(props, m->string) : NULL;
            if (ps) {
                if ((rc = check(c, ps, m, p)) != 0) return rc;
            } else if (cJSON_IsFalse(addl)) {
                return fail(c, path, "property \"%s\" is not allowed", m->string);
            } else if (cJSON_IsObject(addl)) {
                if ((rc = check(c, addl, m, p)) != 0) return rc;
            }
        }
    }
    return 0;
}

static int document_any(struct vctx *c, const cJSON *any, const cJSON *v, const char *path)
{
    struct ag_err first = {0};
    for (const cJSON *alt = any->child; alt; alt = alt->next) {
        struct ag_err e = {0};
        struct vctx sub = {.root = c->root, .err = &e, .depth = c->depth};
        int rc = check(&sub, alt, v, path);
        if (rc == 0) return 0;
        if (rc == AG_EINVAL) return ag_err_set(c->err, rc, "%s", e.msg);
        if (!first.code) first = e;
    }
    return ag_err_set(c->err, AG_EPARAMS,
                      "%s: matches none of the anyOf alternatives (the first says: %s)",
                      shown(path), first.msg);
}

/* ---- the walker ---- */

static int check_inner(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    if (cJSON_IsTrue(s) || !s) return 0;
    if (cJSON_IsFalse(s))
        return c->params ? fail(c, path, "not allowed") : fail(c, path, "no value is allowed here");
    if (!cJSON_IsObject(s))
        return ag_err_set(c->err, AG_EINVAL, "schema at %s is not an object", shown(path));
    const cJSON *ref = kw(s, "$ref");
    if (cJSON_IsString(ref)) {
        const cJSON *t = resolve(c->root, ref->valuestring);
        if (!t)
            return ag_err_set(c->err, AG_EINVAL, "$ref \"%s\" does not resolve", ref->valuestring);
        return check(c, t, v, path);
    }
    const cJSON *any = kw(s, "anyOf");
    if (!any) any = kw(s, "oneOf");
    if (cJSON_IsArray(any))
        return c->params ? params_any(c, any, v, path) : document_any(c, any, v, path);
    return c->params ? params_rest(c, s, v, path) : document_rest(c, s, v, path);
}

static int check(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    if (++c->depth > MAX_DEPTH) {
        c->depth--;
        return ag_err_set(c->err, AG_EINVAL,
                          "schema or value nested too deep (512 levels of checks) at %s",
                          shown(path));
    }
    int rc = check_inner(c, s, v, path);
    c->depth--;
    return rc;
}

/* ---- the schema's own shape, checked once when a table is loaded ---- */

static int lint(const cJSON *root, const cJSON *s, const char *where, int depth,
                struct ag_err *err);

static int lint_list(const cJSON *root, const cJSON *s, const char *key, const char *where,
                     int depth, struct ag_err *err)
{
    const cJSON *l = kw(s, key);
    if (!l) return 0;
    if (!cJSON_IsArray(l))
        return ag_err_set(err, AG_EINVAL, "schema %s.%s: expected an array", where, key);
    char w[PATH_BYTES];
    int i = 0, rc;
    for (const cJSON *e = l->child; e; e = e->next, i++) {
        snprintf(w, sizeof(w), "%s.%s[%d]", where, key, i);
        if ((rc = lint(root, e, w, depth + 1, err)) != 0) return rc;
    }
    return 0;
}

static int lint(const cJSON *root, const cJSON *s, const char *where, int depth, struct ag_err *err)
{
    static const char *const types[] = {"string", "integer", "number", "boolean",
                                        "object", "array",   "null"};
    static const char *const numeric[] = {"minimum",          "maximum",   "exclusiveMinimum",
                                          "exclusiveMaximum", "minLength", "maxLength",
                                          "minItems",         "maxItems"};
    char w[PATH_BYTES];
    int rc;

    if (depth > 64) return ag_err_set(err, AG_EINVAL, "schema %s: nested too deep", where);
    if (cJSON_IsBool(s)) return 0;
    if (!cJSON_IsObject(s))
        return ag_err_set(err, AG_EINVAL, "schema %s: expected an object", where);
    const cJSON *ref = kw(s, "$ref");
    if (ref && (!cJSON_IsString(ref) || !resolve(root, ref->valuestring)))
        return ag_err_set(err, AG_EINVAL, "schema %s.$ref: does not resolve", where);
    const cJSON *type = kw(s, "type");
    if (type) {
        bool ok = cJSON_IsString(type) || (cJSON_IsArray(type) && type->child);
        for (const cJSON *t = cJSON_IsString(type) ? type : type->child; ok && t;
             t = t == type ? NULL : t->next) {
            bool known = false;
            for (size_t i = 0; cJSON_IsString(t) && i < sizeof(types) / sizeof(types[0]); i++)
                known = known || strcmp(t->valuestring, types[i]) == 0;
            ok = known;
        }
        if (!ok) return ag_err_set(err, AG_EINVAL, "schema %s.type: not a JSON Schema type", where);
    }
    for (size_t i = 0; i < sizeof(numeric) / sizeof(numeric[0]); i++) {
        const cJSON *n = kw(s, numeric[i]);
        if (n && !cJSON_IsNumber(n))
            return ag_err_set(err, AG_EINVAL, "schema %s.%s: expected a number", where, numeric[i]);
    }
    const cJSON *req = kw(s, "required");
    if (req) {
        bool ok = cJSON_IsArray(req);
        for (const cJSON *r = ok ? req->child : NULL; r; r = r->next) ok = ok && cJSON_IsString(r);
        if (!ok)
            return ag_err_set(err, AG_EINVAL, "schema %s.required: expected an array of names",
                              where);
    }
    const cJSON *en = kw(s, "enum");
    if (en && !cJSON_IsArray(en))
        return ag_err_set(err, AG_EINVAL, "schema %s.enum: expected an array", where);
    const cJSON *props = kw(s, "properties");
    if (props && !cJSON_IsObject(props))
        return ag_err_set(err, AG_EINVAL, "schema %s.properties: expected an object", where);
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        snprintf(w, sizeof(w), "%s.properties.%s", where, p->string);
        if ((rc = lint(root, p, w, depth + 1, err)) != 0) return rc;
    }
    static const char *const sub[] = {"items", "additionalProperties"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *x = kw(s, sub[i]);
        snprintf(w, sizeof(w), "%s.%s", where, sub[i]);
        if (x && (rc = lint(root, x, w, depth + 1, err)) != 0) return rc;
    }
    if ((rc = lint_list(root, s, "anyOf", where, depth, err)) != 0) return rc;
    if ((rc = lint_list(root, s, "oneOf", where, depth, err)) != 0) return rc;
    static const char *const defs[] = {"$defs", "definitions"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *d = kw(s, defs[i]);
        for (const cJSON *e = cJSON_IsObject(d) ? d->child : NULL; e; e = e->next) {
            snprintf(w, sizeof(w), "%s.%s.%s", where, defs[i], e->string);
            if ((rc = lint(root, e, w, depth + 1, err)) != 0) return rc;
        }
    }
    return 0;
}

/* ---- public ---- */

int proto_schema_validate(const struct proto_val *schema, const struct proto_val *instance,
                          struct ag_err *err)
{
    struct vctx c = {.root = CC(schema), .err = err};
    return check(&c, CC(schema), CC(instance), "");
}

int proto_schema_validate_text(const char *schema, const char *instance, struct ag_err *err)
{
    cJSON *s = cJSON_Parse(schema);
    if (!s) return ag_err_set(err, AG_EPARSE, "the schema is not valid JSON");
    cJSON *v = cJSON_Parse(instance);
    if (!v) {
        cJSON_Delete(s);
        return ag_err_set(err, AG_EPARSE, "the value is not valid JSON");
    }
    int rc = proto_schema_validate((const struct proto_val *)s, (const struct proto_val *)v, err);
    cJSON_Delete(s);
    cJSON_Delete(v);
    return rc;
}

int proto_schema_check_params(const struct proto_val *schema, const struct proto_val *params,
                              struct ag_err *err)
{
    struct vctx c = {.root = CC(schema), .err = err, .params = true};
    cJSON empty = {.type = cJSON_Object}; /* absent or null params read as {} */
    const cJSON *v = CC(params);
    if (!v || cJSON_IsNull(v)) v = &empty;
    return check(&c, CC(schema), v, "params");
}

int proto_schema_parse(const char *json, struct proto_val **out, struct ag_err *err)
{
    *out = NULL;
    struct ag_err perr = {0};
    struct proto_val *s = proto_parse(json, strlen(json), &perr);
    if (!s) return ag_err_set(err, AG_EINVAL, "schema: %s", perr.msg);
    int rc = lint(CC(s), CC(s), "#", 0, err);
    if (rc != 0) {
        proto_val_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int proto_schema_check_params_text(const char *schema, const struct proto_val *params,
                                   struct ag_err *err)
{
    struct proto_val *s;
    int rc = proto_schema_parse(schema, &s, err);
    if (rc != 0) return rc;
    rc = proto_schema_check_params(s, params, err);
    proto_val_free(s);
    return rc;
}
