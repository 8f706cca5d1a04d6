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
 *
 * The schema itself is a set of tables (struct proto__field) in spec.c, checked by the generic
 * walker in spec_check.c.
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

/* ---- the table-driven checker (spec_check.c), driven by the schema in spec.c ---- */

#define PROTO__MAX_FIELDS 16 /* most fields in one schema table */

/* One validation: where messages go and the path of the value being checked. */
struct proto__vctx {
    const struct proto__doc *doc; /* lines of the loaded file; NULL for protocol input */
    const char *file;             /* file name for messages; NULL for protocol input */
    struct ag_buf path;           /* e.g. "tools[1].timeout_ms" (under "spec" for protocol input) */
    struct ag_err *err;
};

/* What a string must look like: agent names, tool names, host patterns. */
struct proto__pattern {
    bool (*ok)(const char *s);
    const char *what; /* "agent name" */
    const char *form; /* how a valid one looks, for the message */
};

enum proto__kind {
    PROTO__K_STR,    /* a string, optionally of a pattern */
    PROTO__K_BOOL,   /* true or false */
    PROTO__K_INT,    /* an integral number in [min, max] */
    PROTO__K_NUM,    /* a number in [min, max] (or (min, max] with PROTO__F_GT_MIN) */
    PROTO__K_ENUM,   /* one of choices */
    PROTO__K_LIST,   /* an array of strings, each optionally of a pattern */
    PROTO__K_OBJ,    /* an object described by sub */
    PROTO__K_FREE,   /* any object, kept as written */
    PROTO__K_FN,     /* a shape of its own: check() */
    PROTO__K_REJECT, /* never allowed; def_str says why */
};

#define PROTO__F_REQUIRED 1u /* an error when absent */
#define PROTO__F_OPTIONAL 2u /* left out of the output when absent */
#define PROTO__F_GT_MIN   4u /* PROTO__K_NUM: min itself is out of range */
#define PROTO__F_NONEMPTY 8u /* PROTO__K_STR: "" is refused */

/* One member of an object in the schema; a table of them ends with an entry whose key is NULL. */
struct proto__field {
    const char *key;
    enum proto__kind kind;
    unsigned flags;                   /* PROTO__F_... */
    double min, max;                  /* K_INT, K_NUM: range (INFINITY when open) */
    double def;                       /* K_BOOL, K_INT, K_NUM: default */
    const char *def_str;              /* K_STR, K_ENUM: default; K_REJECT: why */
    const struct proto__pattern *pat; /* K_STR, K_LIST: shape of the strings; NULL for any */
    const char *const *choices;       /* K_ENUM: NULL-terminated */
    const struct proto__field *sub;   /* K_OBJ: member table */
    /* K_FN: checks v (NULL when absent) and builds the normalized value */
    int (*check)(struct proto__vctx *c, const cJSON *v, cJSON **out);
};

/* An array of objects, each checked against fields, whose `unique` member differs from item to
 * item. When bare is set an item may also be a string, short for {unique: string}. A repeat
 * reads "tools[2]: duplicate tool 'x'", or with cite_first "mcp[2].name: 'x' is already used by
 * mcp[0]". */
struct proto__items {
    const struct proto__field *fields;
    const char *unique;                /* member that must not repeat */
    const char *noun;                  /* for "duplicate tool 'x'" */
    const struct proto__pattern *bare; /* shape of a bare string item; NULL: objects only */
    /* extra check of an item (in) once normalized (norm); may be NULL */
    int (*post)(struct proto__vctx *c, const cJSON *in, const cJSON *norm);
    bool cite_first; /* a repeat names the item that has the value first */
};

/* Reports an error at node at (for its line) under c's current path; returns AG_ESPEC. */
int proto__check_fail(struct proto__vctx *c, const cJSON *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Checks that v is a string of shape pat (any string when pat is NULL). */
int proto__check_pattern(struct proto__vctx *c, const cJSON *v, const struct proto__pattern *pat);
/* Checks object in (NULL: absent, all defaults) against fields; *out gets the normalized object
 * with its members in table order. */
int proto__check_obj(struct proto__vctx *c, const cJSON *in, const struct proto__field *fields,
                     cJSON **out);
/* Checks array v (NULL: absent, empty) of objects as described by spec; *out gets the copy. */
int proto__check_items(struct proto__vctx *c, const cJSON *v, const struct proto__items *spec,
                       cJSON **out);

#endif
