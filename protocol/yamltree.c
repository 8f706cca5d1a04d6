/*
 * yamltree.c - loads a YAML agent definition into a cJSON tree that remembers line numbers.
 *
 * libyaml's event API is pulled one event at a time and the tree is built by recursive descent,
 * bounded by PROTO__SPEC_MAX_DEPTH so the C stack stays small whatever the input. The document
 * API would build a second tree we would only convert and free, and it resolves aliases, which
 * we reject anyway.
 *
 * Plain scalars resolve by the YAML 1.2 core schema (null, booleans, integers in decimal, 0o octal
 * and 0x hex, floats); quoted and block scalars are always strings, as is anything tagged !!str
 * or "!". So "port: 8080" is a number and "version: '1.0'" a string, as in every modern YAML
 * reader, and "on: yes" stays the string "yes" (YAML 1.1 would have made it true).
 *
 * Refused, each with the line at fault: anchors and aliases (a definition is small enough to
 * write out, and aliases allow "billion laughs" expansion), other tags, non-string or duplicate
 * keys, strings with NUL bytes, infinite or NaN numbers (JSON cannot hold them), nesting deeper
 * than PROTO__SPEC_MAX_DEPTH and more than one document.
 */
#include "spec_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_SEQ "tag:yaml.org,2002:seq"
#define TAG_MAP "tag:yaml.org,2002:map"

/* One load: the parser, where we are, and where errors go. */
struct yload {
    yaml_parser_t parser;   /* libyaml's event parser over the text */
    const char *text;       /* the text, for placing reader errors */
    size_t len;             /* bytes in text */
    const char *file;       /* name for messages */
    struct proto__doc *doc; /* receives the lines */
    struct ag_buf path;     /* field path of the node being built */
    struct ag_err *err;
};

static int yfail(struct yload *y, const yaml_event_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An error at the event's line, naming the current path. */
static int yfail(struct yload *y, const yaml_event_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = proto__spec_vfail(y->err, y->file, (int)at->start_mark.line + 1,
                               proto__path_str(&y->path), fmt, ap);
    va_end(ap);
    return rc;
}

/* Reports the parser's error. Reader errors (bad UTF-8, control characters) carry a byte offset
 * instead of a mark, so their line and column are counted here. */
static int syntax_error(struct yload *y)
{
    size_t line = y->parser.problem_mark.line + 1, col = y->parser.problem_mark.column + 1;
    const char *problem = y->parser.problem ? y->parser.problem : "unknown problem";

    if (y->parser.error == YAML_MEMORY_ERROR) ag_malloc((size_t)-1); /* aborts: host OOM */
    if (y->parser.error == YAML_READER_ERROR) {
        size_t at = y->parser.problem_offset < y->len ? y->parser.problem_offset : y->len;
        const char *bol = y->text;
        line = 1;
        for (size_t i = 0; i < at; i++)
            if (y->text[i] == '\n') line++, bol = y->text + i + 1;
        col = (size_t)(y->text + at - bol) + 1;
    }
    /* An unquoted cron schedule or glob that starts with '*' fails while scanning an alias
     * name: point at the fix, quoting. */
    const char *context = y->parser.context ? y->parser.context : "";
    const char *hint = strstr(context, "alias")    ? " (quote a value that starts with '*')"
                       : strstr(context, "anchor") ? " (quote a value that starts with '&')"
                                                   : "";
    return ag_err_set(y->err, AG_ESPEC, "%s:%zu:%zu: YAML syntax error: %s%s", y->file, line, col,
                      problem, hint);
}

static int next_event(struct yload *y, yaml_event_t *ev)
{
    return yaml_parser_parse(&y->parser, ev) ? 0 : syntax_error(y);
}

/* ---- scalars: YAML 1.2 core schema ---- */

static bool is_digits(const char *s, const char *set)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!strchr(set, *s)) return false;
    return true;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_float(const char *s)
{
    size_t int_digits = 0, frac_digits = 0;

    if (*s == '-' || *s == '+') s++;
    for (; *s >= '0' && *s <= '9'; s++) int_digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++) frac_digits++;
    if (!int_digits && !frac_digits) return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+') s++;
        if (!is_digits(s, "0123456789")) return false;
        return true;
    }
    return *s == '\0';
}

static bool one_of(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(s, *words) == 0) return true;
    return false;
}

/* Resolves a plain scalar; returns NULL for a number that is infinite or NaN. */
static cJSON *plain_scalar(const char *s)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const specials[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                           "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                           ".NaN",  ".NAN",  NULL};
    double d;

    if (one_of(s, nulls)) return proto__must(cJSON_CreateNull());
    if (one_of(s, trues)) return proto__must(cJSON_CreateTrue());
    if (one_of(s, falses)) return proto__must(cJSON_CreateFalse());
    if (one_of(s, specials)) return NULL;
    if (strncmp(s, "0o", 2) == 0 && is_digits(s + 2, "01234567")) {
        d = 0;
        for (s += 2; *s; s++) d = d * 8 + (*s - '0');
    } else if (strncmp(s, "0x", 2) == 0 && is_digits(s + 2, "0123456789abcdefABCDEF")) {
        d = strtod(s, NULL);
    } else if (is_float(s)) {
        d = strtod(s, NULL);
    } else {
        return proto__must(cJSON_CreateString(s));
    }
    return isfinite(d) ? proto__must(cJSON_CreateNumber(d)) : NULL;
}

static int load_scalar(struct yload *y, const yaml_event_t *ev, cJSON **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;

    if (strlen(s) != ev->data.scalar.length)
        return yfail(y, ev, "strings must not contain NUL characters");
    if (tag && strcmp(tag, "!") != 0 && strcmp(tag, TAG_STR) != 0)
        return yfail(y, ev, "tag '%.100s' is not supported", tag);
    if (tag || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        *out = proto__must(cJSON_CreateString(s));
    else if (!(*out = plain_scalar(s)))
        return yfail(y, ev, "'%.40s': infinite and NaN numbers are not supported", s);
    return 0;
}

/* ---- collections ---- */

static int load_node(struct yload *y, const yaml_event_t *ev, int depth, cJSON **out);

/* Reads the next node (its first event), builds it, and frees the event. *line gets its line.
 * Sets *end instead when the event closes the enclosing collection. */
static int load_next(struct yload *y, int depth, yaml_event_type_t closer, cJSON **out, int *line,
                     bool *end)
{
    yaml_event_t ev;
    int rc = next_event(y, &ev);

    *out = NULL;
    *end = false;
    if (rc) return rc;
    *line = (int)ev.start_mark.line + 1;
    if (ev.type == closer)
        *end = true;
    else
        rc = load_node(y, &ev, depth, out);
    yaml_event_delete(&ev);
    return rc;
}

static int load_seq(struct yload *y, int depth, cJSON **out)
{
    cJSON *arr = proto__must(cJSON_CreateArray()), *item;
    bool end = false;
    int rc = 0, line;

    for (size_t i = 0; rc == 0; i++) {
        size_t mark = proto__path_index(&y->path, i);
        rc = load_next(y, depth, YAML_SEQUENCE_END_EVENT, &item, &line, &end);
        proto__path_pop(&y->path, mark);
        if (rc || end) break;
        cJSON_AddItemToArray(arr, item);
        proto__doc_note(y->doc, item, line);
    }
    if (rc) cJSON_Delete(arr);
    *out = rc ? NULL : arr;
    return rc;
}

/* Builds a key: a scalar that resolves to a string. Complex keys are refused without reading
 * them, which is fine because the load stops at the first error. */
static int load_key(struct yload *y, const yaml_event_t *ev, cJSON **key)
{
    int rc;

    *key = NULL;
    if (ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT)
        return yfail(y, ev, "keys must be strings, got %s",
                     ev->type == YAML_MAPPING_START_EVENT ? "object" : "array");
    if ((rc = load_node(y, ev, 0, key)) != 0) return rc;
    if (!cJSON_IsString(*key)) {
        rc = yfail(y, ev, "keys must be strings, got %s", proto__type_name(*key));
        cJSON_Delete(*key);
        *key = NULL;
    }
    return rc;
}

/* Loads one key and its value into obj; sets *end instead at the end of the mapping. */
static int load_member(struct yload *y, struct proto__keyset *keys, int depth, cJSON *obj,
                       bool *end)
{
    yaml_event_t ev;
    cJSON *key = NULL, *val = NULL;
    int rc, line, unused;
    bool no_end;

    if ((rc = next_event(y, &ev)) != 0) return rc;
    *end = ev.type == YAML_MAPPING_END_EVENT;
    if (!*end) rc = load_key(y, &ev, &key);
    if (rc == 0 && key && !proto__keyset_add(keys, key->valuestring))
        rc = yfail(y, &ev, "duplicate key '%.100s'", key->valuestring);
    line = (int)ev.start_mark.line + 1;
    yaml_event_delete(&ev);
    if (rc == 0 && key) {
        size_t mark = proto__path_key(&y->path, key->valuestring);
        /* A value is always there (an empty one is a null scalar): nothing can close it. */
        rc = load_next(y, depth, YAML_NO_EVENT, &val, &unused, &no_end);
        proto__path_pop(&y->path, mark);
        if (rc == 0) {
            cJSON_AddItemToObject(obj, key->valuestring, val);
            proto__doc_note(y->doc, val, line);
        }
    }
    cJSON_Delete(key);
    return rc;
}

static int load_map(struct yload *y, int depth, cJSON **out)
{
    cJSON *obj = proto__must(cJSON_CreateObject());
    struct proto__keyset keys = {0};
    bool end = false;
    int rc = 0;

    while (rc == 0 && !end) rc = load_member(y, &keys, depth, obj, &end);
    proto__keyset_release(&keys);
    if (rc) cJSON_Delete(obj);
    *out = rc ? NULL : obj;
    return rc;
}

/* Builds the node that starts with ev (which the caller frees). depth counts the collections
 * around it. */
static int load_node(struct yload *y, const yaml_event_t *ev, int depth, cJSON **out)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    bool map = ev->type == YAML_MAPPING_START_EVENT;

    *out = NULL;
    /* A plain value starting with '*' (a cron schedule, a glob) reads as an alias: say so. */
    if (ev->type == YAML_ALIAS_EVENT)
        return yfail(y, ev, "aliases are not supported (quote a value that starts with '*')");
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
    } else if (map) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else {
        return yfail(y, ev, "unexpected YAML event %d", (int)ev->type);
    }
    if (anchor) return yfail(y, ev, "anchors and aliases are not supported");
    if (ev->type == YAML_SCALAR_EVENT) return load_scalar(y, ev, out);
    if (tag && strcmp((const char *)tag, map ? TAG_MAP : TAG_SEQ) != 0)
        return yfail(y, ev, "tag '%.100s' is not supported", (const char *)tag);
    if (depth + 1 > PROTO__SPEC_MAX_DEPTH)
        return proto__spec_fail(y->err, y->file, (int)ev->start_mark.line + 1, NULL,
                                "nesting deeper than %d levels", PROTO__SPEC_MAX_DEPTH);
    return map ? load_map(y, depth + 1, out) : load_seq(y, depth + 1, out);
}

/* ---- documents ---- */

/* Reads the next event and checks its type; libyaml guarantees the order, so a mismatch is a
 * bug, reported rather than trusted. */
static int expect(struct yload *y, yaml_event_type_t type, yaml_event_t *ev)
{
    int rc = next_event(y, ev);
    if (rc == 0 && ev->type != type) {
        rc = yfail(y, ev, "unexpected YAML event %d", (int)ev->type);
        yaml_event_delete(ev);
    }
    return rc;
}

/* Loads the one document of the stream (after STREAM-START) into d->root. */
static int load_document(struct yload *y)
{
    yaml_event_t ev;
    int rc, line;
    bool end;

    if ((rc = next_event(y, &ev)) != 0) return rc;
    if (ev.type == YAML_STREAM_END_EVENT) { /* only comments: no document at all */
        yaml_event_delete(&ev);
        return 0;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */
    rc = load_next(y, 0, YAML_NO_EVENT, &y->doc->root, &line, &end);
    if (rc) return rc;
    proto__doc_note(y->doc, y->doc->root, line);
    if ((rc = expect(y, YAML_DOCUMENT_END_EVENT, &ev)) != 0) return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(y, &ev)) != 0) return rc;
    if (ev.type == YAML_DOCUMENT_START_EVENT)
        rc = yfail(y, &ev, "a file holds one agent definition; found a second YAML document");
    yaml_event_delete(&ev);
    return rc;
}

int proto__yaml_load(struct proto__doc *d, const char *text, size_t len, const char *file,
                     struct ag_err *err)
{
    struct yload y = {.text = text, .len = len, .file = file, .doc = d, .err = err};
    yaml_event_t ev;
    int rc;

    if (!yaml_parser_initialize(&y.parser)) ag_malloc((size_t)-1);
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&y.parser, YAML_UTF8_ENCODING);
    if ((rc = expect(&y, YAML_STREAM_START_EVENT, &ev)) == 0) {
        yaml_event_delete(&ev);
        rc = load_document(&y);
    }
    yaml_parser_delete(&y.parser);
    ag_buf_release(&y.path);
    if (rc) {
        cJSON_Delete(d->root);
        d->root = NULL;
    }
    proto__doc_seal(d);
    return rc;
}
