/*
 * spec_check.c - the table-driven checker behind agent definitions: holds a cJSON value against a
 * table of fields (struct proto__field, see spec_int.h) and builds its normalized copy.
 *
 * spec.c states the schema as tables; this file knows nothing about agents. An object's members
 * are checked in the order they appear, so the first error reported is the first in the file;
 * required fields found missing are reported after the members that are there. The output lists
 * members in table order with every default filled in, so equal definitions always print as the
 * same JSON text. A member whose value is null counts as absent ("memory:" with nothing under it
 * in YAML), except for required fields.
 *
 * Every message names the path of the value at fault ("tools[1].timeout_ms") and, for files, the
 * line it came from; what was found is given by type ("got string") or, for numbers, by value
 * ("got 1.5").
 */
#include "spec_int.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- messages ---- */

int proto__check_fail(struct proto__vctx *c, const cJSON *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = proto__spec_vfail(c->err, c->file, proto__doc_line(c->doc, at),
                               proto__path_str(&c->path), fmt, ap);
    va_end(ap);
    return rc;
}

/* Copies s for a message: at most 40 bytes (cut on a UTF-8 boundary), control characters
 * shown as '?'. */
static const char *shown(const char *s, char buf[48])
{
    size_t n = strlen(s), cut = ag_utf8_prefix(s, n, 40);

    for (size_t i = 0; i < cut; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
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

int proto__check_pattern(struct proto__vctx *c, const cJSON *v, const struct proto__pattern *pat)
{
    char buf[48];

    if (!cJSON_IsString(v))
        return proto__check_fail(c, v, "expected a string, got %s", proto__type_name(v));
    if (pat && !pat->ok(v->valuestring))
        return proto__check_fail(c, v, "'%s' is not a valid %s (expected %s)",
                                 shown(v->valuestring, buf), pat->what, pat->form);
    return 0;
}

/* ---- scalar fields ---- */

/* "an integer from 1 to 1000", "a number greater than 0 and at most 1", ... (%.15g, not %g,
 * so that 3600000 does not print as 3.6e+06). */
static void describe_range(const struct proto__field *f, char *buf, size_t n)
{
    const char *a = f->kind == PROTO__K_INT ? "an integer" : "a number";

    if ((f->flags & PROTO__F_GT_MIN) && isinf(f->max))
        snprintf(buf, n, "%s greater than %.15g", a, f->min);
    else if (f->flags & PROTO__F_GT_MIN)
        snprintf(buf, n, "%s greater than %.15g and at most %.15g", a, f->min, f->max);
    else if (isinf(f->min) && isinf(f->max))
        snprintf(buf, n, "%s", a);
    else if (f->kind == PROTO__K_INT && isinf(f->max) && (f->min == 0 || f->min == 1))
        snprintf(buf, n, "a %s integer", f->min == 1 ? "positive" : "non-negative");
    else if (isinf(f->max))
        snprintf(buf, n, "%s of at least %.15g", a, f->min);
    else
        snprintf(buf, n, "%s from %.15g to %.15g", a, f->min, f->max);
}

static int check_number(struct proto__vctx *c, const struct proto__field *f, const cJSON *v,
                        cJSON **out)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    bool ok =
        isfinite(d) && d <= f->max && ((f->flags & PROTO__F_GT_MIN) ? d > f->min : d >= f->min);
    char want[96], buf[48];

    if (ok && f->kind == PROTO__K_INT) ok = proto_is_int((const struct proto_val *)v);
    if (!ok) {
        describe_range(f, want, sizeof(want));
        return proto__check_fail(c, v, "expected %s, got %s", want, found(v, buf));
    }
    *out = proto__must(cJSON_CreateNumber(d));
    return 0;
}

static int check_enum(struct proto__vctx *c, const struct proto__field *f, const cJSON *v,
                      cJSON **out)
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
        ag_buf_printf(&want, "%s'%s'",
                      i == 0              ? ""
                      : f->choices[i + 1] ? ", "
                                          : " or ",
                      f->choices[i]);
    if (cJSON_IsString(v))
        rc =
            proto__check_fail(c, v, "expected %s, got '%s'", want.data, shown(v->valuestring, buf));
    else
        rc = proto__check_fail(c, v, "expected %s, got %s", want.data, proto__type_name(v));
    ag_buf_release(&want);
    return rc;
}

static int check_list(struct proto__vctx *c, const struct proto__field *f, const cJSON *v,
                      cJSON **out)
{
    cJSON *arr;
    size_t i = 0;
    int rc = 0;

    if (!cJSON_IsArray(v))
        return proto__check_fail(c, v, "expected an array of strings, got %s", proto__type_name(v));
    arr = proto__must(cJSON_CreateArray());
    for (const cJSON *it = v->child; it && rc == 0; it = it->next, i++) {
        size_t mark = proto__path_index(&c->path, i);
        rc = proto__check_pattern(c, it, f->pat);
        proto__path_pop(&c->path, mark);
        if (rc == 0) cJSON_AddItemToArray(arr, proto__must(cJSON_CreateString(it->valuestring)));
    }
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}

/* Checks a present value against its field and builds the normalized value. */
static int check_field(struct proto__vctx *c, const struct proto__field *f, const cJSON *v,
                       cJSON **out)
{
    switch (f->kind) {
    case PROTO__K_STR:
        if (cJSON_IsString(v) && (f->flags & PROTO__F_NONEMPTY) && !*v->valuestring)
            return proto__check_fail(c, v, "must not be empty");
        if (proto__check_pattern(c, v, f->pat)) return AG_ESPEC;
        *out = proto__must(cJSON_CreateString(v->valuestring));
        return 0;
    case PROTO__K_BOOL:
        if (!cJSON_IsBool(v))
            return proto__check_fail(c, v, "expected true or false, got %s", proto__type_name(v));
        *out = proto__must(cJSON_CreateBool(cJSON_IsTrue(v)));
        return 0;
    case PROTO__K_INT:
    case PROTO__K_NUM:
        return check_number(c, f, v, out);
    case PROTO__K_ENUM:
        return check_enum(c, f, v, out);
    case PROTO__K_LIST:
        return check_list(c, f, v, out);
    case PROTO__K_OBJ:
        return proto__check_obj(c, v, f->sub, out);
    case PROTO__K_FREE:
        if (!cJSON_IsObject(v))
            return proto__check_fail(c, v, "expected an object, got %s", proto__type_name(v));
        *out = proto__must(cJSON_Duplicate(v, 1));
        return 0;
    case PROTO__K_FN:
        return f->check(c, v, out);
    case PROTO__K_REJECT:
        return proto__check_fail(c, v, "%s", f->def_str);
    }
    return proto__check_fail(c, v, "internal error: unknown field kind %d", (int)f->kind);
}

/* Builds the value of a field that is absent (or null) in an object; parent is the object, for
 * the line of a "missing required field" message. *out stays NULL for optional fields. */
static int absent(struct proto__vctx *c, const struct proto__field *f, const cJSON *parent,
                  cJSON **out)
{
    *out = NULL;
    if (f->flags & PROTO__F_REQUIRED)
        return proto__check_fail(c, parent, "missing required field '%s'", f->key);
    if (f->flags & PROTO__F_OPTIONAL) return 0;
    switch (f->kind) {
    case PROTO__K_STR:
    case PROTO__K_ENUM:
        *out = cJSON_CreateString(f->def_str ? f->def_str : "");
        break;
    case PROTO__K_BOOL:
        *out = cJSON_CreateBool(f->def != 0);
        break;
    case PROTO__K_INT:
    case PROTO__K_NUM:
        *out = cJSON_CreateNumber(f->def);
        break;
    case PROTO__K_LIST:
        *out = cJSON_CreateArray();
        break;
    case PROTO__K_OBJ:
        return proto__check_obj(c, NULL, f->sub, out);
    case PROTO__K_FN:
        return f->check(c, NULL, out);
    case PROTO__K_FREE:
    case PROTO__K_REJECT:
        return 0;
    }
    proto__must(*out);
    return 0;
}

/* ---- objects ---- */

/* The known field closest to an unknown key: edit distance <= 2, else a prefix either way. */
static const char *suggest(const char *key, const struct proto__field *fields)
{
    const char *best = NULL;
    size_t kn = strlen(key);
    int best_d = 3;

    for (const struct proto__field *f = fields; f->key; f++) {
        int d = f->kind == PROTO__K_REJECT ? 99 : ag_levenshtein(key, f->key);
        if (d < best_d) best_d = d, best = f->key;
    }
    for (const struct proto__field *f = fields; !best && f->key; f++) {
        size_t fn = strlen(f->key);
        if (f->kind == PROTO__K_REJECT) continue;
        if ((kn >= 3 && kn < fn && strncmp(f->key, key, kn) == 0) ||
            (fn >= 3 && fn < kn && strncmp(key, f->key, fn) == 0))
            best = f->key;
    }
    return best;
}

static int unknown_field(struct proto__vctx *c, const struct proto__field *fields, const cJSON *m)
{
    const char *best = suggest(m->string, fields);
    struct ag_buf known = {0};
    int rc;

    if (best) return proto__check_fail(c, m, "unknown field (did you mean '%s'?)", best);
    for (const struct proto__field *f = fields; f->key; f++)
        if (f->kind != PROTO__K_REJECT)
            ag_buf_printf(&known, "%s%s", known.len ? ", " : "", f->key);
    rc = proto__check_fail(c, m, "unknown field (expected one of %s)", known.data);
    ag_buf_release(&known);
    return rc;
}

/* Checks member m of an object against fields; seen and vals are indexed like fields. */
static int check_member(struct proto__vctx *c, const struct proto__field *fields, const cJSON *m,
                        bool *seen, cJSON **vals)
{
    const struct proto__field *f = fields;
    size_t mark;
    int rc = 0;

    while (f->key && strcmp(f->key, m->string) != 0) f++;
    /* Only protocol input gets here with a repeated key: the loaders refuse them. */
    if (f->key && seen[f - fields]) return proto__check_fail(c, m, "duplicate key '%s'", m->string);
    mark = proto__path_key(&c->path, m->string);
    if (!f->key) {
        rc = unknown_field(c, fields, m);
    } else {
        seen[f - fields] = true;
        if (!cJSON_IsNull(m) || (f->flags & PROTO__F_REQUIRED))
            rc = check_field(c, f, m, &vals[f - fields]);
    }
    proto__path_pop(&c->path, mark);
    return rc;
}

int proto__check_obj(struct proto__vctx *c, const cJSON *in, const struct proto__field *fields,
                     cJSON **out)
{
    bool seen[PROTO__MAX_FIELDS] = {false};
    cJSON *vals[PROTO__MAX_FIELDS] = {NULL};
    size_t n = 0;
    int rc = 0;

    while (fields[n].key) n++;
    assert(n <= PROTO__MAX_FIELDS);
    *out = NULL;
    if (in && !cJSON_IsObject(in))
        return proto__check_fail(c, in, "expected an object, got %s", proto__type_name(in));
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

/* ---- arrays of objects ---- */

static int check_item(struct proto__vctx *c, const struct proto__items *spec, const cJSON *it,
                      cJSON **out)
{
    int rc;

    if (spec->bare && cJSON_IsString(it)) {
        if ((rc = proto__check_pattern(c, it, spec->bare)) != 0) return rc;
        cJSON *obj = proto__must(cJSON_CreateObject());
        cJSON_AddItemToObject(obj, spec->unique, proto__must(cJSON_CreateString(it->valuestring)));
        rc = proto__check_obj(c, obj, spec->fields, out);
        cJSON_Delete(obj);
        return rc;
    }
    if (!cJSON_IsObject(it))
        return proto__check_fail(c, it,
                                 spec->bare ? "expected a %s name or an object, got %s"
                                            : "expected an object (a %s), got %s",
                                 spec->noun, proto__type_name(it));
    rc = proto__check_obj(c, it, spec->fields, out);
    if (rc == 0 && spec->post && (rc = spec->post(c, it, *out)) != 0) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

/* A repeated unique value (key) in item it, with the items before it already in arr: the
 * message points at the member and names the first item that has it. mark is the length of
 * the array's own path. */
static int already_used(struct proto__vctx *c, const struct proto__items *spec, const cJSON *it,
                        const cJSON *arr, const char *key, size_t mark)
{
    const cJSON *at = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, spec->unique) : it;
    size_t first = 0, m;
    int rc;

    for (const cJSON *o = arr->child; o; o = o->next, first++)
        if (strcmp(cJSON_GetObjectItemCaseSensitive(o, spec->unique)->valuestring, key) == 0) break;
    char *array = ag_strndup(proto__path_str(&c->path), mark);
    m = proto__path_key(&c->path, spec->unique);
    rc = proto__check_fail(c, at, "'%s' is already used by %s[%zu]", key, array, first);
    proto__path_pop(&c->path, m);
    free(array);
    return rc;
}

int proto__check_items(struct proto__vctx *c, const cJSON *v, const struct proto__items *spec,
                       cJSON **out)
{
    struct proto__keyset seen = {0};
    cJSON *arr = NULL;
    size_t i = 0;
    int rc = 0;

    if (v && !cJSON_IsArray(v))
        return proto__check_fail(c, v, "expected an array, got %s", proto__type_name(v));
    arr = proto__must(cJSON_CreateArray());
    for (const cJSON *it = v ? v->child : NULL; it && rc == 0; it = it->next, i++) {
        size_t mark = proto__path_index(&c->path, i);
        cJSON *obj = NULL;
        if ((rc = check_item(c, spec, it, &obj)) == 0) {
            const char *key = cJSON_GetObjectItemCaseSensitive(obj, spec->unique)->valuestring;
            if (!proto__keyset_add(&seen, key))
                rc = spec->cite_first
                         ? already_used(c, spec, it, arr, key, mark)
                         : proto__check_fail(c, it, "duplicate %s '%s'", spec->noun, key);
            cJSON_AddItemToArray(arr, obj);
        }
        proto__path_pop(&c->path, mark);
    }
    proto__keyset_release(&seen);
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}
