/*
 * tokenizer_int.h - what the tokenizer's files share (tokenizer.c: vocabulary, special tokens,
 * tokenize API; tok_bpe.c: pre-tokenizers and byte-level BPE; tok_spm.c: SentencePiece merges;
 * tok_detok.c: pieces and detokenization; tok_unicode.c: the Unicode class table). Not for use
 * outside them.
 *
 * Strings are "atoms": every string a tokenizer may look up gets a number. Atoms 0..n_vocab-1
 * are the tokens (atom i is token i's text); BPE merge parts and results that are not tokens get
 * numbers from n_vocab up. One hash table maps a string to its atom; for a text shared by
 * several tokens it gives the last of them, as the reference's token_to_id map does. So "is this
 * string a token, and which" is "atom < n_vocab", and merges are looked up by atom pairs.
 */
#ifndef ENG_TOKENIZER_INT_H
#define ENG_TOKENIZER_INT_H

#include "tokenizer.h"

/* ---- Unicode classes (tok_unicode.c): one general-category class bit plus White_Space, as
 * llama.cpp's unicode_cpt_flags; code points past U+10FFFF are "unassigned". ---- */
enum {
    ENG__UCD_UNASSIGNED = 1 << 0, /* Cn */
    ENG__UCD_NUMBER = 1 << 1,     /* \p{N} */
    ENG__UCD_LETTER = 1 << 2,     /* \p{L} */
    ENG__UCD_SEPARATOR = 1 << 3,  /* \p{Z} */
    ENG__UCD_MARK = 1 << 4,       /* \p{M} */
    ENG__UCD_PUNCT = 1 << 5,      /* \p{P} */
    ENG__UCD_SYMBOL = 1 << 6,     /* \p{S} */
    ENG__UCD_OTHER = 1 << 7,      /* \p{C} but Cn */
    ENG__UCD_WHITESPACE = 1 << 8, /* \s: White_Space */
};
uint16_t eng__ucd_flags(uint32_t cp);

/* A string in the tokenizer's pool. */
struct eng__str {
    uint32_t off; /* into eng_tokenizer.pool */
    uint32_t len; /* bytes */
};

/* One BPE merge, in an open-addressing table keyed by the pair of atoms. */
struct eng__merge {
    uint64_t key;   /* (left + 1) << 32 | (right + 1); 0 = empty slot */
    int32_t rank;   /* the merge's line in tokenizer.ggml.merges: lower merges first */
    int32_t result; /* atom of left + right */
};

struct eng_tokenizer {
    enum eng_tok_type type; /* SPM or BPE */
    enum eng_tok_pre pre;   /* BPE pre-tokenizer */
    char *pre_name;         /* tokenizer.ggml.pre, "" when absent */
    uint32_t n_vocab;       /* tokens */

    char *pool;            /* every atom's bytes, each NUL-terminated */
    size_t pool_len;       /* bytes used */
    size_t pool_cap;       /* bytes allocated */
    struct eng__str *atom; /* (n_atom) atom i < n_vocab is token i */
    uint32_t n_atom;       /* atoms in use */
    uint32_t cap_atom;     /* atom entries allocated */
    uint32_t *atom_slot;   /* hash slots: atom + 1, 0 = empty */
    uint32_t atom_mask;    /* slots - 1 (a power of two at most half full) */
    uint32_t max_len;      /* longest token text, bytes */

    float *score;   /* (n_vocab) tokenizer.ggml.scores, 0 without */
    uint16_t *attr; /* (n_vocab) ENG_TOKATTR_* */

    /* BPE */
    struct eng__merge *merge; /* hash slots */
    uint32_t merge_mask;      /* slots - 1 */
    uint32_t n_merge;         /* distinct merges */
    int32_t byte_atom[256];   /* atom of the character standing for byte b, or -1 */
    bool ignore_merges;       /* a word that is a token is taken whole (Llama 3) */

    /* SPM */
    int32_t byte_tok[256]; /* <0xXX> token of byte b (else its 1-byte token), or -1 */

    /* special tokens, split out before tokenizing */
    int32_t *special;         /* (n_special) ids, longest text first, then by id */
    uint32_t *special_node;   /* (n_special) the trie node where each one's text ends */
    uint32_t n_special;       /* control, user-defined and unknown tokens */
    uint32_t *trie_slot;      /* trie edges (node << 8 | byte) -> child, 2 words per slot:
                                 key + 1 (0 = empty), child */
    uint32_t trie_mask;       /* edge slots - 1 */
    uint32_t n_node;          /* trie nodes; 0 is the root */
    uint32_t root_child[256]; /* the root's edges, direct (0 = none: the root is no child) */

    struct eng_tok_specials sp; /* ids and add_* flags */
    int32_t *eog;               /* (n_eog) end-of-generation ids, ascending */
    uint32_t n_eog;

    /* detokenization: each token's rendering with ENG_DETOK_SPECIAL */
    char *piece_pool;       /* the pieces, each NUL-terminated */
    struct eng__str *piece; /* (n_vocab) into piece_pool */
};

/* Per-call growable scratch arrays; the call frees them. */
struct eng__tok_work {
    int32_t *out; /* produced ids */
    size_t n_out;
    size_t cap_out;
    uint32_t *cpt; /* BPE: the fragment's code points */
    size_t cap_cpt;
    uint16_t *cfl; /* BPE: their Unicode flags */
    size_t cap_cfl;
    uint32_t *seg; /* BPE: word lengths in code points (two lists, ping-pong) */
    size_t cap_seg;
    uint32_t *seg2;
    size_t cap_seg2;
    char *buf; /* BPE: a word's bytes; SPM: the escaped fragment */
    size_t cap_buf;
    char *mbuf; /* BPE: a word in byte-level characters (ignore_merges, fallback) */
    size_t cap_mbuf;
    void *sym; /* symbols of the tokenizer at work */
    size_t cap_sym;
    void *heap; /* candidate merges */
    size_t cap_heap;
};

/* Grows *p (of *cap elements of size elem) to hold at least need elements. */
void eng__grow(void **p, size_t *cap, size_t need, size_t elem);

/* The merge queue shared by the BPE and SentencePiece mergers: a binary min-heap of elem-byte
 * items (at most ENG__HEAP_MAX_ELEM bytes) in w->heap, ordered by before(a, b) ("a comes
 * first"). Push grows w->heap; pop copies the first item to *top. */
#define ENG__HEAP_MAX_ELEM 64
typedef bool (*eng__heap_before)(const void *a, const void *b);
void eng__heap_push(struct eng__tok_work *w, size_t *n, const void *item, size_t elem,
                    eng__heap_before before);
void eng__heap_pop(struct eng__tok_work *w, size_t *n, void *top, size_t elem,
                   eng__heap_before before);
void eng__tok_emit(struct eng__tok_work *w, int32_t id);
/* The atom of s[0..n), or -1. */
int32_t eng__atom_find(const struct eng_tokenizer *t, const char *s, size_t n);
/* The atom of s[0..n), added when new (load time only). -1 when the pool is full. */
int32_t eng__atom_intern(struct eng_tokenizer *t, const char *s, size_t n);
static inline const char *eng__atom_str(const struct eng_tokenizer *t, int32_t a)
{
    return t->pool + t->atom[a].off;
}

/* GPT-2's byte <-> character table: the code point standing for byte b, and back (-1 for a
 * code point that stands for no byte). */
uint32_t eng__byte_to_cpt(uint8_t b);
int eng__cpt_to_byte(uint32_t cp);

/* UTF-8 as the reference reads it: decodes one code point at s[*i] (n bytes in all), moving *i;
 * a malformed sequence gives U+FFFD and moves one byte. Accepts overlong forms, surrogates and
 * values up to 0x1FFFFF as the reference does. */
uint32_t eng__utf8_decode(const char *s, size_t n, size_t *i);
/* Writes cp as UTF-8 (1..4 bytes) to out; values past U+10FFFF are written as U+FFFD. */
size_t eng__utf8_encode(uint32_t cp, char *out);

/* tok_detok.c: fills piece and piece_pool (after every attribute is final). AG_ETOOBIG for a
 * token that renders to over 1 MiB (only a hostile vocabulary has one). */
int eng__build_pieces(struct eng_tokenizer *t, struct ag_err *err);

/* tok_bpe.c */
int eng__bpe_load(struct eng_tokenizer *t, const struct eng_gguf *g, struct ag_err *err);
void eng__bpe_tokenize(const struct eng_tokenizer *t, struct eng__tok_work *w, const char *text,
                       size_t len);
/* Pre-tokenizes text into words for tests: appends each word's length in bytes of text to
 * lens (growing it, *n entries, *cap allocated). */
void eng__bpe_split(enum eng_tok_pre pre, const char *text, size_t len, size_t **lens, size_t *n,
                    size_t *cap);

/* tok_spm.c: tokenizes an already escaped fragment (spaces as U+2581). AG_EINVAL when a byte
 * has no token for byte fallback. */
int eng__spm_tokenize(const struct eng_tokenizer *t, struct eng__tok_work *w, const char *text,
                      size_t len, struct ag_err *err);

#endif
