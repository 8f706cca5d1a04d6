/*
 * chat_int.h - internals shared by chat.c, chat_parse.c and chat_json.c: a JSON reader that
 * re-prints JSON text in the style a chat template prints it, and Python's strip().
 *
 * Why not protocol.h's proto_val (cJSON): a model or a caller writes "12345678901234567890" or
 * "1.0" in tool arguments, and a double cannot give those back; prompts and parsed calls must
 * carry numbers exactly as written. The reader here never converts a number: it checks the
 * literal against JSON's grammar and copies it. Strings are decoded and re-escaped, so "\u00e9"
 * and "é" print the same, as they do after Python's json.loads + json.dumps.
 *
 * Leniency: raw control characters inside strings (a model writing a real newline) are accepted
 * and printed escaped. Everything else follows RFC 8259. Nesting is capped at
 * ENG_CHAT__JSON_MAX_DEPTH so hostile text cannot exhaust the stack.
 */
#ifndef ENG_CHAT_INT_H
#define ENG_CHAT_INT_H

#include <stddef.h>

#include "../base/base.h"

#define ENG_CHAT__JSON_MAX_DEPTH 128

/* How JSON is printed. */
struct eng_chat__jstyle {
    const char *item_sep; /* between array items and between object members */
    const char *key_sep;  /* between a key and its value */
    int indent;           /* spaces per level with a newline before each item; < 0: one line */
};

extern const struct eng_chat__jstyle eng_chat__json_compact; /* "," ":" one line */
extern const struct eng_chat__jstyle eng_chat__json_python;  /* ", " ": " one line (json.dumps) */
extern const struct eng_chat__jstyle eng_chat__json_indent4; /* "," ": " indent 4 */

/* The first index >= pos of s[0..n) that is not JSON whitespace (n when none). */
size_t eng_chat__json_ws(const char *s, size_t n, size_t pos);

/*
 * Reads one JSON value starting at s[*pos] (whitespace before it skipped) and appends it to out
 * in style st; out NULL only checks it. On success *pos is just past the value. AG_EPARSE with
 * err saying what was expected at which byte (counted from s) otherwise; out may then hold part
 * of the value (callers roll it back).
 */
int eng_chat__json_value(const char *s, size_t n, size_t *pos, const struct eng_chat__jstyle *st,
                         struct ag_buf *out, struct ag_err *err);

/* Reads the JSON string at s[*pos] (which must be '"') and appends its decoded bytes to out
 * (UTF-8; \u0000 becomes a NUL byte). *pos ends just past the closing quote. AG_EPARSE as above. */
int eng_chat__json_string(const char *s, size_t n, size_t *pos, struct ag_buf *out,
                          struct ag_err *err);

/* Appends s[0..n) as a JSON string literal: '"', '\\' and control characters escaped as
 * Python's json.dumps(ensure_ascii=False) escapes them, everything else as is. */
void eng_chat__json_quote(struct ag_buf *out, const char *s, size_t n);

/* Narrows [*a, *b) of s to drop leading and trailing whitespace as Python's str.strip() does
 * (ASCII whitespace, \x1c-\x1f, and the Unicode spaces: U+0085, U+00A0, U+1680, U+2000-U+200A,
 * U+2028, U+2029, U+202F, U+205F, U+3000). chat.c. */
void eng_chat__strip(const char *s, size_t *a, size_t *b);

#endif
