/*
 * grammar.h - grammar-constrained decoding for JSON Schema: a schema compiled to a pushdown
 * matcher over bytes, and the set of vocabulary tokens that keep the matcher alive.
 *
 * Schemas: the subset OpenAI's structured outputs accept: type (object, array, string, number,
 * integer, boolean, null, or an array of these), properties, required, additionalProperties,
 * items, minItems/maxItems, enum, const, anyOf (and oneOf, generated as anyOf), $defs /
 * definitions with $ref ("#", "#/$defs/Name", "#/definitions/Name"; recursion works), maxLength
 * of strings. `true` and `{}` mean any JSON value; {"type": "object"} without properties is any
 * object. Keywords that only narrow values (minimum, pattern, format, ...) are not enforced while
 * generating: validate the result (proto_schema_validate in protocol/protocol.h) when they matter.
 *
 * What is generated: objects list their properties in the schema's order; required ones always
 * appear, optional ones may be skipped; nothing else (additionalProperties is treated as false
 * when properties are listed). Whitespace: at most one space after ':' and ',' and none
 * elsewhere, so a model cannot stall in endless blanks. Numbers are JSON numbers with at most 20
 * digits before and after the point (integers at most 18, so they fit 64 bits); strings any UTF-8
 * text with JSON escapes (no \\uD800-\\uDFFF surrogate halves) and no raw control characters.
 * Nesting deeper than ENG_GRAMMAR_MAX_DEPTH is refused.
 *
 * Matching: the state is a set of stacks (anyOf and optional properties fork it, like a
 * nondeterministic pushdown automaton; identical stacks merge). eng_gmatch_allowed walks a trie of
 * the vocabulary's byte strings depth-first, advancing a copy of the state per byte and pruning a
 * whole subtree as soon as its prefix is rejected. Inside a free string it adds, in one go, the
 * precomputed list of tokens that are plain string text (no quote, backslash or control byte,
 * complete UTF-8) and walks only the other tokens.
 *
 * Threads: a compiled grammar and a vocabulary are read-only after creation and may be shared;
 * a matcher belongs to one generation.
 */
#ifndef ENG_GRAMMAR_H
#define ENG_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

#define ENG_GRAMMAR_MAX_DEPTH  48 /* frames per stack (nesting of values) */
#define ENG_GRAMMAR_MAX_STACKS 32 /* alternatives tracked at once */

struct eng_tokenizer;
struct eng_grammar;
struct eng_gmatch;
struct eng_gvocab;

/* Compiles a JSON Schema (JSON text). Errors: AG_EPARSE (not JSON), AG_EUNSUPPORTED (a type or
 * keyword outside the subset, a $ref that does not resolve; err names the schema location). */
int eng_grammar_from_schema(const char *schema_json, size_t len, struct eng_grammar **out,
                            struct ag_err *err);
/* The grammar of one tool call: {"name": <one of names>, <args_key>: <that tool's parameters>},
 * each parameters schema a document of its own ($ref "#" is its root); NULL or "" parameters
 * mean any object. Errors as above, naming the tool. */
int eng_grammar_from_tools(const char *const *names, const char *const *params, size_t n,
                           const char *args_key, struct eng_grammar **out, struct ag_err *err);
void eng_grammar_free(struct eng_grammar *g); /* NULL is fine */

int eng_gmatch_new(const struct eng_grammar *g, struct eng_gmatch **out, struct ag_err *err);
void eng_gmatch_free(struct eng_gmatch *m);  /* NULL is fine */
void eng_gmatch_reset(struct eng_gmatch *m); /* back to the start of a value */
/* Feeds bytes; false (state unchanged) when the grammar rejects them. */
bool eng_gmatch_accept(struct eng_gmatch *m, const char *bytes, size_t n);
/* A complete value was accepted: nothing more may follow. */
bool eng_gmatch_done(const struct eng_gmatch *m);
/* Stopping here leaves a complete value (done, or a number that could go on). */
bool eng_gmatch_can_end(const struct eng_gmatch *m);

/* Appends to out the shortest text that completes the value from here (closing strings,
 * required properties with their shortest values, brackets), so that a generation about to run
 * out of tokens can still end with valid JSON. AG_ENOTFOUND when no completion exists within the
 * recursion limit. */
int eng_gmatch_completion(const struct eng_gmatch *m, struct ag_buf *out);

/* The vocabulary's byte strings, prepared for masks (built once per model). */
int eng_gvocab_new(const struct eng_tokenizer *tok, struct eng_gvocab **out, struct ag_err *err);
void eng_gvocab_free(struct eng_gvocab *v); /* NULL is fine */
/* Writes the ids of the tokens that may come next to ids (capacity: the vocabulary size) and
 * returns their count. Control tokens and tokens that render as nothing are never allowed (the
 * caller adds end-of-generation tokens when eng_gmatch_can_end()). */
int eng_gmatch_allowed(const struct eng_gmatch *m, const struct eng_gvocab *v, int32_t *ids);
/* Feeds token id's bytes; false (state unchanged) when rejected. */
bool eng_gmatch_accept_token(struct eng_gmatch *m, const struct eng_gvocab *v, int32_t id);
/* Token id's bytes as the grammar reads them, or NULL (*len 0) when id is out of range or the
 * token has none. Lives as long as v. */
const char *eng_gvocab_token(const struct eng_gvocab *v, int32_t id, size_t *len);

#endif
