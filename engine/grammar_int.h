/*
 * grammar_int.h - what the grammar's three files share (engine-internal): the compiled schema
 * (grammar_schema.c builds it), the matcher's state (grammar.c advances it byte by byte) and the
 * step both use; grammar_vocab.c walks the vocabulary with them.
 */
#ifndef ENG_GRAMMAR_INT_H
#define ENG_GRAMMAR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "grammar.h"

/* ---- compiled schema ---- */

/* ---- compiled schema ---- */

enum nkind { K_OBJ = 1, K_FREEOBJ, K_ARR, K_STR, K_NUM, K_INT, K_LIT, K_ALT };

/* Built-in nodes. */
enum { N_ANY = 0, N_ANYOBJ, N_ANYARR, N_ANYSTR, N_ANYNUM, N_TFN, N_BUILTIN };

struct gnode {
    uint8_t kind;
    int32_t a, n;     /* OBJ: props[a..a+n); LIT: lits[a..a+n); ALT: ints[a..a+n); ARR: a item */
    int32_t min, max; /* ARR: item counts; STR: max = max length (0: any) */
};

struct gprop {
    char *key;   /* the key as JSON text, quotes included */
    int32_t len; /* bytes of key */
    int32_t node;
    bool required;
};

struct eng_grammar {
    struct gnode *nodes;
    int n_nodes, cap_nodes;
    struct gprop *props;
    int n_props, cap_props;
    char **lits;
    int32_t *lit_len;
    int n_lits, cap_lits;
    int32_t *ints;
    int n_ints, cap_ints;
    int root;
};

#define GROW(arr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? 2 * (cap) : 16;                                                        \
            (arr) = ag_realloc((arr), (size_t)(cap) * sizeof(*(arr)));                             \
        }                                                                                          \
    } while (0)

/* ---- matcher state ---- */

enum frkind { FR_VALUE = 1, FR_OBJ, FR_FREEOBJ, FR_ARR, FR_STR, FR_NUM, FR_LIT };

struct frame {
    int32_t node;
    uint8_t kind;
    uint8_t st;
    int32_t a, b;
};

struct stk {
    int depth;
    struct frame f[ENG_GRAMMAR_MAX_DEPTH];
};

struct gstate {
    int n;
    struct stk s[ENG_GRAMMAR_MAX_STACKS];
};

struct eng_gmatch {
    const struct eng_grammar *g;
    struct gstate st;
    struct gstate *levels; /* DFS scratch for eng_gmatch_allowed, per trie depth */
    int n_levels;
    int32_t *dfs_node; /* DFS stack: at most 256 pending siblings per level */
    int *dfs_depth;
};

/* o = in advanced by byte b (grammar.c). */
void eng__gstate_advance(const struct eng_grammar *g, const struct gstate *in, int b,
                         struct gstate *o);
void eng__gstate_copy(struct gstate *dst, const struct gstate *src);

#endif
