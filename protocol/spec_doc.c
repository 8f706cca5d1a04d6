/*
 * spec_doc.c - documents for agent definitions: a cJSON tree plus the line each node came from;
 * the JSON loader; and the error, field-path and key-set helpers shared with yamltree.c and
 * spec.c.
 *
 * Lines live in a side table rather than in the tree because the validator and the stored spec
 * both want plain cJSON. Loaders append (node, line) pairs as they build, the table is sorted by
 * address once, and an error looks its node up with a binary search.
 *
 * JSON files go through cJSON, not libyaml (JSON is nearly flow-style YAML): libyaml rejects the
 * surrogate pairs ("\ud83d\ude00") that JSON encoders write for characters outside the BMP. A
 * second pass walks the text beside the parsed tree to find each node's line, check for duplicate
 * keys (which cJSON keeps) and bound the nesting. The walk can be lenient about syntax because
 * cJSON has already accepted the text; it only has to agree with cJSON on where values begin.
 */
#include "spec_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- line table ---- */

void proto__doc_note(struct proto__doc *d, const cJSON *node, int line)
{
    if (d->n_lines == d->cap_lines) {
        d->cap_lines = d->cap_lines ? 2 * d->cap_lines : 64;
        d->lines = ag_realloc(d->lines, d->cap_lines * sizeof(*d->lines));
    }
    d->lines[d->n_lines++] = (struct proto__line){node, line};
    d->sealed = false;
}

static int cmp_line(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct proto__line *)a)->node;
    uintptr_t y = (uintptr_t)((const struct proto__line *)b)->node;
    return x < y ? -1 : x > y;
}

void proto__doc_seal(struct proto__doc *d)
{
    if (d->n_lines) qsort(d->lines, d->n_lines, sizeof(*d->lines), cmp_line);
    d->sealed = true;
}

int proto__doc_line(const struct proto__doc *d, const cJSON *node)
{
    struct proto__line key = {node, 0};
    const struct proto__line *hit;

    if (!d || !node || !d->sealed || !d->n_lines) return 0;
    hit = bsearch(&key, d->lines, d->n_lines, sizeof(*d->lines), cmp_line);
    return hit ? hit->line : 0;
}

void proto__doc_release(struct proto__doc *d)
{
    cJSON_Delete(d->root);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

/* ---- errors and paths ---- */

int proto__spec_vfail(struct ag_err *err, const char *file, int line, const char *path,
                      const char *fmt, va_list ap)
{
    char msg[sizeof(err->msg)], where[320] = "";
    size_t n = 0;

    if (!err) return AG_ESPEC;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (file && line > 0)
        n = (size_t)snprintf(where, sizeof(where), "%s:%d: ", file, line);
    else if (file)
        n = (size_t)snprintf(where, sizeof(where), "%s: ", file);
    if (path && *path && n < sizeof(where))
        snprintf(where + n, sizeof(where) - n, "%.200s: ", path);
    return ag_err_set(err, AG_ESPEC, "%s%s", where, msg);
}

int proto__spec_fail(struct ag_err *err, const char *file, int line, const char *path,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = proto__spec_vfail(err, file, line, path, fmt, ap);
    va_end(ap);
    return rc;
}

size_t proto__path_key(struct ag_buf *p, const char *key)
{
    size_t old = p->len;
    if (p->len) ag_buf_putc(p, '.');
    ag_buf_puts(p, key);
    return old;
}

size_t proto__path_index(struct ag_buf *p, size_t i)
{
    size_t old = p->len;
    ag_buf_printf(p, "[%zu]", i);
    return old;
}

void proto__path_pop(struct ag_buf *p, size_t len)
{
    if (p->data && len <= p->len) {
        p->len = len;
        p->data[len] = '\0';
    }
}

const char *proto__path_str(const struct ag_buf *p)
{
    return p->data ? p->data : "";
}

/* ---- key sets ---- */

static size_t hash_str(const char *s)
{
    size_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void keyset_grow(struct proto__keyset *s)
{
    size_t cap = s->cap ? 2 * s->cap : 16;
    char **slots = ag_calloc(cap, sizeof(*slots));

    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i]) continue;
        size_t j = hash_str(s->slots[i]) & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
}

bool proto__keyset_add(struct proto__keyset *s, const char *key)
{
    if (2 * (s->n + 1) > s->cap) keyset_grow(s);
    size_t j = hash_str(key) & (s->cap - 1);
    for (; s->slots[j]; j = (j + 1) & (s->cap - 1))
        if (strcmp(s->slots[j], key) == 0) return false;
    s->slots[j] = ag_strdup(key);
    s->n++;
    return true;
}

void proto__keyset_release(struct proto__keyset *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

const char *proto__type_name(const cJSON *v)
{
    return proto_type_name(proto_type((const struct proto_val *)v));
}

/* ---- JSON loader ---- */

/* The walk over JSON text that mirrors a tree cJSON has already parsed from it. */
struct jwalk {
    const char *p, *end;    /* read position and end of the text */
    int line;               /* 1-based line of p */
    struct proto__doc *doc; /* receives the lines */
    const char *file;       /* name for messages */
    struct ag_buf path;     /* field path of the value being walked */
    struct ag_err *err;
};

/* Skips what cJSON treats as whitespace: every byte up to and including ' '. */
static void jw_space(struct jwalk *w)
{
    for (; w->p < w->end && (unsigned char)*w->p <= ' '; w->p++)
        if (*w->p == '\n') w->line++;
}

/* Skips a string, from its opening quote to past its closing quote. */
static void jw_string(struct jwalk *w)
{
    for (w->p++; w->p < w->end && *w->p != '"'; w->p++) {
        if (*w->p == '\\' && w->p + 1 < w->end)
            w->p++;
        else if (*w->p == '\n')
            w->line++;
    }
    if (w->p < w->end) w->p++;
}

/* Skips one character if it is c (a ':' or ',' between values). */
static void jw_expect(struct jwalk *w, char c)
{
    jw_space(w);
    if (w->p < w->end && *w->p == c) w->p++;
}

static int jw_value(struct jwalk *w, const cJSON *node, int depth);

static int jw_members(struct jwalk *w, const cJSON *obj, int depth)
{
    struct proto__keyset keys = {0};
    int rc = 0;

    for (const cJSON *m = obj->child; m && rc == 0; m = m->next) {
        jw_space(w);
        proto__doc_note(w->doc, m, w->line);
        if (!proto__keyset_add(&keys, m->string)) {
            rc = proto__spec_fail(w->err, w->file, w->line, proto__path_str(&w->path),
                                  "duplicate key '%.100s'", m->string);
            break;
        }
        jw_string(w);
        jw_expect(w, ':');
        size_t mark = proto__path_key(&w->path, m->string);
        rc = jw_value(w, m, depth);
        proto__path_pop(&w->path, mark);
        jw_expect(w, ',');
    }
    proto__keyset_release(&keys);
    return rc;
}

static int jw_items(struct jwalk *w, const cJSON *arr, int depth)
{
    size_t i = 0;
    int rc = 0;

    for (const cJSON *it = arr->child; it && rc == 0; it = it->next, i++) {
        jw_space(w);
        proto__doc_note(w->doc, it, w->line);
        size_t mark = proto__path_index(&w->path, i);
        rc = jw_value(w, it, depth);
        proto__path_pop(&w->path, mark);
        jw_expect(w, ',');
    }
    return rc;
}

static int jw_value(struct jwalk *w, const cJSON *node, int depth)
{
    int rc = 0;

    jw_space(w);
    if (w->p >= w->end) return 0;
    if (cJSON_IsObject(node) || cJSON_IsArray(node)) {
        if (depth + 1 > PROTO__SPEC_MAX_DEPTH)
            return proto__spec_fail(w->err, w->file, w->line, NULL, "nesting deeper than %d levels",
                                    PROTO__SPEC_MAX_DEPTH);
        w->p++; /* '{' or '[' */
        rc = cJSON_IsObject(node) ? jw_members(w, node, depth + 1) : jw_items(w, node, depth + 1);
        jw_expect(w, cJSON_IsObject(node) ? '}' : ']');
    } else if (*w->p == '"') {
        jw_string(w);
    } else {
        while (w->p < w->end && (unsigned char)*w->p > ' ' && !strchr(",]}", *w->p)) w->p++;
    }
    return rc;
}

/* Line and column (1-based) of byte offset at in text. */
static void line_col(const char *text, size_t at, int *line, int *col)
{
    const char *nl = NULL;
    *line = 1;
    for (size_t i = 0; i < at; i++)
        if (text[i] == '\n') (*line)++, nl = text + i;
    *col = (int)(text + at - (nl ? nl + 1 : text)) + 1;
}

int proto__json_load(struct proto__doc *d, const char *text, size_t len, const char *file,
                     struct ag_err *err)
{
    const char *end = NULL;
    size_t at = 0;
    int line, col;

    while (at < len && (unsigned char)text[at] <= ' ') at++;
    if (at == len) return 0; /* nothing but whitespace: an empty document */
    d->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (d->root) {
        /* Like proto_parse: only whitespace may follow the value. */
        for (at = (size_t)(end - text); at < len && (unsigned char)text[at] <= ' ';) at++;
        if (at == len) {
            struct jwalk w = {text, text + len, 1, d, file, {0}, err};
            if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) w.p += 3; /* cJSON skips a BOM */
            jw_space(&w);
            proto__doc_note(d, d->root, w.line);
            int rc = jw_value(&w, d->root, 0);
            ag_buf_release(&w.path);
            proto__doc_seal(d);
            return rc;
        }
        cJSON_Delete(d->root);
        d->root = NULL;
    } else {
        at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    }
    line_col(text, at, &line, &col);
    return ag_err_set(err, AG_ESPEC, "%s:%d:%d: JSON syntax error", file, line, col);
}
