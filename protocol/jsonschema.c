/*
 * jsonschema.c - JSON Schema validation of the subset in jsonschema.h, with JSON-pointer errors.
 */
#include "jsonschema.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct vctx {
    const cJSON *root;
    struct ag_err *err;
    int depth;
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

static bool type_ok(const char *type, const cJSON *v)
{
    if (strcmp(type, "integer") == 0)
        return cJSON_IsNumber(v) && floor(v->valuedouble) == v->valuedouble &&
               fabs(v->valuedouble) < 9.3e18;
    if (strcmp(type, "number") == 0) return cJSON_IsNumber(v);
    return strcmp(type, type_of(v)) == 0;
}

/* UTF-8 characters in s. */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static const cJSON *resolve(const struct vctx *c, const char *ref)
{
    if (strcmp(ref, "#") == 0) return c->root;
    if (strncmp(ref, "#/$defs/", 8) == 0)
        return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c->root, "$defs"),
                                                ref + 8);
    if (strncmp(ref, "#/definitions/", 14) == 0)
        return cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c->root, "definitions"), ref + 14);
    return NULL;
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
    return ag_err_set(c->err, AG_EPARAMS, "%s: %s", *path ? path : "/", msg);
}

static int check_inner(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    if (cJSON_IsTrue(s) || !s) return 0;
    if (cJSON_IsFalse(s)) return fail(c, path, "no value is allowed here");
    if (!cJSON_IsObject(s))
        return ag_err_set(c->err, AG_EINVAL, "schema at %s is not an object", *path ? path : "/");
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (cJSON_IsString(ref)) {
        const cJSON *t = resolve(c, ref->valuestring);
        if (!t)
            return ag_err_set(c->err, AG_EINVAL, "$ref \"%s\" does not resolve", ref->valuestring);
        return check(c, t, v, path);
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (!any) any = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    if (cJSON_IsArray(any)) {
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
                          "%s: matches none of the anyOf alternatives (the "
                          "first says: %s)",
                          *path ? path : "/", first.msg);
    }
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (cst && !cJSON_Compare(cst, v, true)) return fail(c, path, "not the constant value");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (cJSON_IsArray(en)) {
        bool found = false;
        for (const cJSON *e = en->child; e && !found; e = e->next)
            found = cJSON_Compare(e, v, true);
        if (!found) return fail(c, path, "not one of the enum values");
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(type) && !type_ok(type->valuestring, v))
        return fail(c, path, "expected %s, got %s", type->valuestring, type_of(v));
    if (cJSON_IsArray(type)) {
        bool ok = false;
        for (const cJSON *t = type->child; t && !ok; t = t->next)
            ok = cJSON_IsString(t) && type_ok(t->valuestring, v);
        if (!ok) return fail(c, path, "none of the allowed types matches %s", type_of(v));
    }
    if (cJSON_IsString(v)) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minLength");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        size_t n = utf8_len(v->valuestring);
        if (cJSON_IsNumber(mn) && (double)n < mn->valuedouble)
            return fail(c, path, "shorter than minLength");
        if (cJSON_IsNumber(mx) && (double)n > mx->valuedouble)
            return fail(c, path, "longer than maxLength");
    }
    if (cJSON_IsNumber(v)) {
        const char *kw[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
        for (int i = 0; i < 4; i++) {
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(s, kw[i]);
            if (!cJSON_IsNumber(b)) continue;
            double x = v->valuedouble, y = b->valuedouble;
            bool bad = i == 0 ? x < y : i == 1 ? x > y : i == 2 ? x <= y : x >= y;
            if (bad) return fail(c, path, "out of range (%s)", kw[i]);
        }
    }
    if (cJSON_IsArray(v)) {
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        int n = cJSON_GetArraySize(v);
        if (cJSON_IsNumber(mn) && n < mn->valuedouble)
            return fail(c, path, "fewer items than minItems");
        if (cJSON_IsNumber(mx) && n > mx->valuedouble)
            return fail(c, path, "more items than maxItems");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        if (items) {
            int i = 0;
            for (const cJSON *e = v->child; e; e = e->next, i++) {
                char p[1024];
                snprintf(p, sizeof(p), "%s/%d", path, i);
                int rc = check(c, items, e, p);
                if (rc) return rc;
            }
        }
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        for (const cJSON *r = cJSON_IsArray(req) ? req->child : NULL; r; r = r->next)
            if (cJSON_IsString(r) && !cJSON_GetObjectItemCaseSensitive(v, r->valuestring))
                return fail(c, path, "missing required property \"%s\"", r->valuestring);
        for (const cJSON *m = v->child; m; m = m->next) {
            char p[1024];
            snprintf(p, sizeof(p), "%s/%s", path, m->string);
            const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
            if (ps) {
                int rc = check(c, ps, m, p);
                if (rc) return rc;
            } else if (cJSON_IsFalse(addl)) {
                return fail(c, path, "property \"%s\" is not allowed", m->string);
            } else if (cJSON_IsObject(addl)) {
                int rc = check(c, addl, m, p);
                if (rc) return rc;
            }
        }
    }
    return 0;
}

static int check(struct vctx *c, const cJSON *s, const cJSON *v, const char *path)
{
    if (++c->depth > 512) {
        c->depth--;
        return ag_err_set(c->err, AG_EINVAL,
                          "schema or value nested too deep (512 levels of checks) at %s",
                          *path ? path : "/");
    }
    int rc = check_inner(c, s, v, path);
    c->depth--;
    return rc;
}

int ag_jsonschema_validate(const cJSON *schema, const cJSON *instance, struct ag_err *err)
{
    struct vctx c = {.root = schema, .err = err};
    return check(&c, schema, instance, "");
}

int ag_jsonschema_validate_text(const char *schema, const char *instance, struct ag_err *err)
{
    cJSON *s = cJSON_Parse(schema);
    if (!s) return ag_err_set(err, AG_EPARSE, "the schema is not valid JSON");
    cJSON *v = cJSON_Parse(instance);
    if (!v) {
        cJSON_Delete(s);
        return ag_err_set(err, AG_EPARSE, "the value is not valid JSON");
    }
    int rc = ag_jsonschema_validate(s, v, err);
    cJSON_Delete(s);
    cJSON_Delete(v);
    return rc;
}
