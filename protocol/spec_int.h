/*
 * spec_int.h - private interface between the parts of agent-definition loading: the YAML loader
 * (yamltree.c), the JSON loader and shared helpers (spec_doc.c) and the schema (spec.c).
 *
 * A loader turns a file's text into a "document": a cJSON tree plus a side table that gives, for
 * each node, the 1-based line it came from (the key's line for an object member, the item's line
 * for an array element). The validator works on cJSON alone, so the same code checks files and
 * specs received over the protocol; only the error prefix differs ("FILE:LINE: " or "spec.").
 * Loaders already enforce what the schema cannot see: unique keys, string keys, no aliases,
 * a nesting bound.
 */
#ifndef PROTO_SPEC_INT_H
#define PROTO_SPEC_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "protocol.h"

#define PROTO__SPEC_MAX_BYTES (1024u * 1024) /* largest accepted definition file */
#define PROTO__SPEC_MAX_DEPTH 64             /* deepest accepted nesting of objects/arrays */

struct proto__line {
    const void *node; /* a cJSON node of the document */
    int line;         /* 1-based line it came from */
};

struct proto__doc {
    cJSON *root;               /* owned; NULL when the text holds no value */
    struct proto__line *lines; /* (n_lines) sorted by node once sealed */
    size_t n_lines, cap_lines;
    bool sealed; /* lines sorted: proto__doc_line may search */
};

/* Records that node came from line; loaders call it once per node. */
void proto__doc_note(struct proto__doc *d, const cJSON *node, int line);
/* Sorts the line table; called by each loader when it is done. */
void proto__doc_seal(struct proto__doc *d);
/* The line node came from, or 0 when unknown. */
int proto__doc_line(const struct proto__doc *d, const cJSON *node);
void proto__doc_release(struct proto__doc *d);

/*
 * Loaders: parse text (len bytes) into d. file is the name used in messages. Syntax errors
 * read "FILE:LINE:COL: YAML syntax error: ..."; everything else "FILE:LINE: PATH: ...".
 * Return 0 or AG_ESPEC with err set; d->root stays NULL for text without a value.
 */
int proto__yaml_load(struct proto__doc *d, const char *text, size_t len, const char *file,
                     struct ag_err *err);
int proto__json_load(struct proto__doc *d, const char *text, size_t len, const char *file,
                     struct ag_err *err);

/*
 * Formats an AG_ESPEC error: "FILE:LINE: PATH: message", leaving out the file when file is
 * NULL, the line when line <= 0 and the path when path is empty. Returns AG_ESPEC.
 */
int proto__spec_fail(struct ag_err *err, const char *file, int line, const char *path,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int proto__spec_vfail(struct ag_err *err, const char *file, int line, const char *path,
                      const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

/* Field paths such as "tools[1].timeout_ms", kept in an ag_buf. The push functions return the
 * previous length, which proto__path_pop restores. */
size_t proto__path_key(struct ag_buf *p, const char *key);
size_t proto__path_index(struct ag_buf *p, size_t i);
void proto__path_pop(struct ag_buf *p, size_t len);
const char *proto__path_str(const struct ag_buf *p);

/* A set of strings (copied) for duplicate detection in linear time. */
struct proto__keyset {
    char **slots; /* (cap) open addressing; NULL marks a free slot */
    size_t cap, n;
};

/* Adds key; returns false when it was already present. */
bool proto__keyset_add(struct proto__keyset *s, const char *key);
void proto__keyset_release(struct proto__keyset *s);

/* cJSON returns NULL only when malloc does; host OOM aborts, as everywhere in agentd. */
static inline cJSON *proto__must(cJSON *c)
{
    if (!c) ag_malloc((size_t)-1);
    return c;
}

/* Display name of a cJSON node's type, as proto_type_name spells it ("string", "object"...). */
const char *proto__type_name(const cJSON *v);

#endif
