/*
 * tokenizer.c - loads a tokenizer from GGUF metadata, splits special tokens out of text and
 * runs the BPE (tok_bpe.c) or SPM (tok_spm.c) tokenizer on what is left. Rendering tokens back
 * to text is tok_detok.c.
 *
 * Why this way: the goal is token-for-token parity with llama.cpp, so the rules here are the
 * reference's, in the reference's order (see load_specials()): default special ids per
 * vocabulary type, then the file's keys; tokens promoted to control tokens by their text
 * ("<|im_end|>", "<end_of_turn>", even Gemma's "</s>" HTML tag), which changes how they
 * tokenize and render; the end-of-generation set by text; the special-token list sorted longest
 * first.
 *
 * Special tokens are split out as the reference does: for each special token, longest first,
 * every occurrence in every piece of text not yet claimed, left to right; the pieces between
 * stay text. Doing that literally costs (special tokens) x (text), and Gemma has 6,414 special
 * tokens, so a trie of their texts is walked over the input once first and only the tokens that
 * occur anywhere are then searched for; the result is the same (every later piece is a piece of
 * the input).
 *
 * Invariants after load: atoms 0..n_vocab-1 are the tokens, in order, and no token text is
 * empty (an empty one becomes "[EMPTY_<id>]" as in the reference); every special id is in
 * range or ENG_TOKEN_NULL; every token has a piece.
 */
#include "tokenizer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ---- */

void eng__grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *p = ag_realloc(*p, c * elem);
    *cap = c;
}

void eng__heap_push(struct eng__tok_work *w, size_t *n, const void *item, size_t elem,
                    eng__heap_before before)
{
    eng__grow(&w->heap, &w->cap_heap, *n + 1, elem);
    char *h = w->heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(item, h + parent * elem)) break;
        memcpy(h + i * elem, h + parent * elem, elem);
        i = parent;
    }
    memcpy(h + i * elem, item, elem);
}

void eng__heap_pop(struct eng__tok_work *w, size_t *n, void *top, size_t elem,
                   eng__heap_before before)
{
    char *h = w->heap, last[ENG__HEAP_MAX_ELEM];
    size_t i = 0;
    memcpy(top, h, elem);
    (*n)--;
    memcpy(last, h + *n * elem, elem);
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && before(h + (c + 1) * elem, h + c * elem)) c++;
        if (!before(h + c * elem, last)) break;
        memcpy(h + i * elem, h + c * elem, elem);
        i = c;
    }
    if (*n > 0) memcpy(h + i * elem, last, elem);
}

void eng__tok_emit(struct eng__tok_work *w, int32_t id)
{
    eng__grow((void **)&w->out, &w->cap_out, w->n_out + 1, sizeof *w->out);
    w->out[w->n_out++] = id;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

/* ---- atoms ---- */

int32_t eng__atom_find(const struct eng_tokenizer *t, const char *s, size_t n)
{
    for (uint64_t i = hash_bytes(s, n) & t->atom_mask;; i = (i + 1) & t->atom_mask) {
        uint32_t v = t->atom_slot[i];
        if (v == 0) return -1;
        const struct eng__str *a = &t->atom[v - 1];
        if (a->len == n && memcmp(t->pool + a->off, s, n) == 0) return (int32_t)(v - 1);
    }
}

static void atom_rehash(struct eng_tokenizer *t, size_t slots)
{
    free(t->atom_slot);
    t->atom_slot = ag_calloc(slots, sizeof *t->atom_slot);
    t->atom_mask = (uint32_t)(slots - 1);
    /* Tokens in id order, so a text shared by several tokens keeps the last of them. */
    for (uint32_t a = 0; a < t->n_atom; a++) {
        const struct eng__str *s = &t->atom[a];
        uint64_t i = hash_bytes(t->pool + s->off, s->len) & t->atom_mask;
        for (;; i = (i + 1) & t->atom_mask) {
            uint32_t v = t->atom_slot[i];
            if (v == 0) break;
            const struct eng__str *o = &t->atom[v - 1];
            if (o->len == s->len && memcmp(t->pool + o->off, t->pool + s->off, s->len) == 0) break;
        }
        t->atom_slot[i] = a + 1;
    }
}

/* Appends a new atom (no lookup); -1 when the pool would pass 4 GiB or 2^31 atoms. */
static int32_t atom_add(struct eng_tokenizer *t, const char *s, size_t n)
{
    if (t->pool_len + n + 1 > UINT32_MAX || t->n_atom >= INT32_MAX - 1) return -1;
    eng__grow((void **)&t->pool, &t->pool_cap, t->pool_len + n + 1, 1);
    size_t cap = t->cap_atom;
    eng__grow((void **)&t->atom, &cap, (size_t)t->n_atom + 1, sizeof *t->atom);
    t->cap_atom = (uint32_t)cap;
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = '\0';
    t->atom[t->n_atom] = (struct eng__str){.off = (uint32_t)t->pool_len, .len = (uint32_t)n};
    t->pool_len += n + 1;
    return (int32_t)t->n_atom++;
}

int32_t eng__atom_intern(struct eng_tokenizer *t, const char *s, size_t n)
{
    int32_t a = eng__atom_find(t, s, n);
    if (a >= 0) return a;
    a = atom_add(t, s, n);
    if (a < 0) return -1;
    if ((size_t)t->n_atom * 2 > (size_t)t->atom_mask + 1)
        atom_rehash(t, ((size_t)t->atom_mask + 1) * 2);
    else {
        uint64_t i = hash_bytes(s, n) & t->atom_mask;
        while (t->atom_slot[i]) i = (i + 1) & t->atom_mask;
        t->atom_slot[i] = (uint32_t)a + 1;
    }
    return a;
}

/* The token whose text is s, or ENG_TOKEN_NULL (an atom past the tokens is no token). */
static int32_t find_token(const struct eng_tokenizer *t, const char *s)
{
    int32_t a = eng__atom_find(t, s, strlen(s));
    return a >= 0 && (uint32_t)a < t->n_vocab ? a : ENG_TOKEN_NULL;
}

/* ---- the special-token trie ---- */

static uint64_t edge_hash(uint32_t key)
{
    uint64_t x = key * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29);
}

/* The child of node along byte c, or 0 (the root is nobody's child). */
static uint32_t trie_child(const struct eng_tokenizer *t, uint32_t node, unsigned char c)
{
    if (node == 0) return t->root_child[c];
    uint32_t key = (node << 8 | c) + 1;
    for (uint64_t i = edge_hash(key) & t->trie_mask;; i = (i + 1) & t->trie_mask) {
        if (t->trie_slot[2 * i] == key) return t->trie_slot[2 * i + 1];
        if (t->trie_slot[2 * i] == 0) return 0;
    }
}

static uint32_t trie_add(struct eng_tokenizer *t, uint32_t node, unsigned char c)
{
    uint32_t child = trie_child(t, node, c);
    if (child) return child;
    child = t->n_node++;
    if (node == 0) {
        t->root_child[c] = child;
        return child;
    }
    uint32_t key = (node << 8 | c) + 1;
    uint64_t i = edge_hash(key) & t->trie_mask;
    while (t->trie_slot[2 * i]) i = (i + 1) & t->trie_mask;
    t->trie_slot[2 * i] = key;
    t->trie_slot[2 * i + 1] = child;
    return child;
}

/* A special token while sorting: its text length and id. */
struct by_len {
    uint32_t len; /* bytes of text */
    int32_t id;   /* token */
};

static int cmp_by_len(const void *a, const void *b)
{
    const struct by_len *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The special-token list, longest first (the reference's order; among equal lengths it is
 * unspecified there, which matters only for two same-length texts that can overlap, and no
 * vocabulary we know has such a pair), and the trie of their texts. */
static int build_specials(struct eng_tokenizer *t, struct ag_err *err)
{
    const unsigned special_mask =
        ENG_TOKATTR_CONTROL | ENG_TOKATTR_USER_DEFINED | ENG_TOKATTR_UNKNOWN;
    size_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (!(t->attr[i] & special_mask)) continue;
        t->n_special++;
        total += t->atom[i].len;
    }
    if (total >= (1u << 23))
        return ag_err_set(err, AG_ETOOBIG, "tokenizer: %zu bytes of special-token text", total);
    t->special = ag_malloc((t->n_special + 1) * sizeof *t->special);
    t->special_node = ag_malloc((t->n_special + 1) * sizeof *t->special_node);
    struct by_len *order = ag_malloc((t->n_special + 1) * sizeof *order);
    uint32_t k = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & special_mask)
            order[k++] = (struct by_len){.len = t->atom[i].len, .id = (int32_t)i};
    qsort(order, t->n_special, sizeof *order, cmp_by_len);
    for (k = 0; k < t->n_special; k++) t->special[k] = order[k].id;
    free(order);

    size_t slots = 16;
    while (slots < 2 * total + 2) slots *= 2;
    t->trie_slot = ag_calloc(2 * slots, sizeof *t->trie_slot);
    t->trie_mask = (uint32_t)(slots - 1);
    t->n_node = 1;
    for (uint32_t s = 0; s < t->n_special; s++) {
        const struct eng__str *a = &t->atom[t->special[s]];
        uint32_t node = 0;
        for (uint32_t j = 0; j < a->len; j++)
            node = trie_add(t, node, (unsigned char)t->pool[a->off + j]);
        t->special_node[s] = node;
    }
    return 0;
}

/* ---- load ---- */

/* Texts the reference recognizes special tokens by (llama-vocab.cpp, build b9749). */
static const char *const eot_texts[] = {
    "<|eot_id|>",         "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>",    "<EOT>",      "_<EOT>",  "[EOT]",         "<｜end▁of▁sentence｜>",
    "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>",  "<fim-prefix>", "<fim_prefix>",
                                            "<｜fim▁begin｜>", "<PRE>",        "▁<PRE>",
                                            "<|code_prefix|>", "<|prefix|>",   NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>",  "<fim-suffix>", "<fim_suffix>",
                                            "<｜fim▁hole｜>",  "<SUF>",        "▁<SUF>",
                                            "<|code_suffix|>", "<|suffix|>",   NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>",  "<fim-middle>", "<fim_middle>",
                                            "<｜fim▁end｜>",   "<MID>",        "▁<MID>",
                                            "<|code_middle|>", "<|middle|>",   NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                            "<PAD>",       "[PAD]",     NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        "<｜end▁of▁sentence｜>",
                                        "[e~[",
                                        NULL};

struct pre_name {
    const char *name;     /* tokenizer.ggml.pre */
    enum eng_tok_pre pre; /* our pre-tokenizer */
    bool ignore_merges;   /* the reference's flags for it */
    bool add_bos;
};

static const struct pre_name pre_names[] = {
    {"gpt2", ENG_TOK_PRE_GPT2, false, false},
    {"smollm", ENG_TOK_PRE_SMOLLM, false, false},
    {"llama3", ENG_TOK_PRE_LLAMA3, true, true},
    {"llama-v3", ENG_TOK_PRE_LLAMA3, true, true},
    {"llama-bpe", ENG_TOK_PRE_LLAMA3, true, true},
    {"qwen2", ENG_TOK_PRE_QWEN2, false, false},
    {"deepseek-r1-qwen", ENG_TOK_PRE_QWEN2, false, false},
};

/* Marks id a control token (the reference's "control-looking token" override). */
static void make_control(struct eng_tokenizer *t, int32_t id)
{
    if (id >= 0) t->attr[id] |= ENG_TOKATTR_CONTROL;
}

/* If *id is unset, the first of texts in the vocabulary becomes it, as a control token. */
static void detect(struct eng_tokenizer *t, int32_t *id, const char *const *texts)
{
    if (*id != ENG_TOKEN_NULL) return;
    for (size_t i = 0; texts[i]; i++) {
        int32_t tok = find_token(t, texts[i]);
        if (tok == ENG_TOKEN_NULL) continue;
        *id = tok;
        make_control(t, tok);
        return;
    }
}

static void eog_add(struct eng_tokenizer *t, int32_t id)
{
    if (id < 0) return;
    for (uint32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog = ag_realloc(t->eog, (t->n_eog + 1) * sizeof *t->eog);
    t->eog[t->n_eog++] = id;
}

static void eog_remove(struct eng_tokenizer *t, int32_t id)
{
    for (uint32_t i = 0; i < t->n_eog; i++) {
        if (t->eog[i] != id) continue;
        t->eog[i] = t->eog[--t->n_eog];
        return;
    }
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* A special-id key: overrides *id when present and in range (as the reference, an id out of
 * range or of an unusable type leaves the default). */
static void read_id(const struct eng_gguf *g, const char *key, uint32_t n_vocab, int32_t *id)
{
    uint32_t v;
    if (eng_gguf_get_u32(g, key, &v, NULL) == 0 && v < n_vocab) *id = (int32_t)v;
}

static void read_bool(const struct eng_gguf *g, const char *key, bool *flag)
{
    bool v;
    if (eng_gguf_get_bool(g, key, &v, NULL) == 0) *flag = v;
}

static int load_tokens(struct eng_tokenizer *t, const struct eng_gguf *g, struct ag_err *err)
{
    const char *name = eng_gguf_name(g);
    const struct eng_gguf_kv *tokens, *scores = NULL, *types = NULL;
    int rc = eng_gguf_get_arr(g, "tokenizer.ggml.tokens", ENG_GGUF_STRING, &tokens, err);
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_ENOTFOUND, "%s: no tokenizer.ggml.tokens", name);
    if (rc) return rc;
    if (tokens->arr_n == 0 || tokens->arr_n > INT32_MAX / 2)
        return ag_err_set(err, tokens->arr_n ? AG_ETOOBIG : AG_EPARSE,
                          "%s: tokenizer.ggml.tokens has %llu tokens", name,
                          (unsigned long long)tokens->arr_n);
    uint32_t n = (uint32_t)tokens->arr_n;

    rc = eng_gguf_get_arr(g, "tokenizer.ggml.scores", -1, &scores, err);
    if (rc == AG_ENOTFOUND)
        scores = NULL;
    else if (rc)
        return rc;
    else if (scores->arr_n < n)
        return ag_err_set(err, AG_EPARSE,
                          "%s: tokenizer.ggml.scores has %llu entries for %u tokens", name,
                          (unsigned long long)scores->arr_n, n);
    rc = eng_gguf_get_arr(g, "tokenizer.ggml.token_type", -1, &types, err);
    if (rc == AG_ENOTFOUND)
        types = NULL;
    else if (rc)
        return rc;
    else if (types->arr_n < n)
        return ag_err_set(err, AG_EPARSE,
                          "%s: tokenizer.ggml.token_type has %llu entries for %u tokens", name,
                          (unsigned long long)types->arr_n, n);

    t->n_vocab = n;
    t->score = ag_calloc(n, sizeof *t->score);
    t->attr = ag_calloc(n, sizeof *t->attr);
    size_t slots = 16;
    while (slots < 2 * (size_t)n) slots *= 2;
    t->atom_slot = ag_calloc(slots, sizeof *t->atom_slot);
    t->atom_mask = (uint32_t)(slots - 1);
    for (uint32_t i = 0; i < n; i++) {
        const struct eng_gguf_str *s;
        if (eng_gguf_arr_str(tokens, i, &s) != 0)
            return ag_err_set(err, AG_EPARSE, "%s: tokenizer.ggml.tokens[%u] unreadable", name, i);
        char empty[32];
        const char *text = s->s;
        size_t len = s->len;
        if (len == 0) {
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%u]", i);
            text = empty;
        }
        if (atom_add(t, text, len) < 0)
            return ag_err_set(err, AG_ETOOBIG, "%s: token text exceeds 4 GiB", name);
        if (len > t->max_len) t->max_len = (uint32_t)len;
        /* Hash it; a text seen before now maps to this later id, as in the reference. */
        uint64_t h = hash_bytes(text, len) & t->atom_mask;
        for (;; h = (h + 1) & t->atom_mask) {
            uint32_t v = t->atom_slot[h];
            if (v == 0) break;
            const struct eng__str *o = &t->atom[v - 1];
            if (o->len == len && memcmp(t->pool + o->off, text, len) == 0) break;
        }
        t->atom_slot[h] = i + 1;

        if (scores) {
            double d;
            if (eng_gguf_arr_float(scores, i, &d) != 0)
                return ag_err_set(err, AG_EPARSE, "%s: tokenizer.ggml.scores is not a float array",
                                  name);
            t->score[i] = (float)d;
        }
        t->attr[i] = ENG_TOKATTR_NORMAL;
        if (types) {
            int64_t ty;
            if (eng_gguf_arr_int(types, i, &ty) != 0)
                return ag_err_set(err, AG_EPARSE,
                                  "%s: tokenizer.ggml.token_type is not an integer array", name);
            /* llama_token_type: 0 undefined, 1 normal, 2 unknown, 3 control, 4 user-defined,
             * 5 unused, 6 byte. */
            static const uint16_t type_attr[7] = {
                0,
                ENG_TOKATTR_NORMAL,
                ENG_TOKATTR_UNKNOWN,
                ENG_TOKATTR_CONTROL,
                ENG_TOKATTR_USER_DEFINED,
                ENG_TOKATTR_UNUSED,
                ENG_TOKATTR_BYTE,
            };
            t->attr[i] = ty >= 0 && ty < 7 ? type_attr[ty] : 0;
        }
    }
    return 0;
}

/* Special ids, add_* flags, control overrides and the end-of-generation set, in the
 * reference's order. */
static void load_specials(struct eng_tokenizer *t, const struct eng_gguf *g, bool bpe_add_bos)
{
    struct eng_tok_specials *sp = &t->sp;
    const int32_t N = ENG_TOKEN_NULL;
    if (t->type == ENG_TOK_SPM)
        *sp = (struct eng_tok_specials){.bos = 1,
                                        .eos = 2,
                                        .eot = N,
                                        .eom = N,
                                        .unk = 0,
                                        .sep = N,
                                        .pad = N,
                                        .mask = N,
                                        .nl = N,
                                        .add_bos = true,
                                        .add_space_prefix = true};
    else
        *sp = (struct eng_tok_specials){.bos = 11,
                                        .eos = 11,
                                        .eot = N,
                                        .eom = N,
                                        .unk = N,
                                        .sep = N,
                                        .pad = N,
                                        .mask = N,
                                        .nl = N,
                                        .add_bos = bpe_add_bos};
    read_bool(g, "tokenizer.ggml.add_space_prefix", &sp->add_space_prefix);

    int32_t fim_pre = N, fim_suf = N, fim_mid = N, fim_pad = N, fim_rep = N, fim_sep = N;
    int32_t *defaults[] = {&sp->bos, &sp->eos, &sp->unk};
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
        if (*defaults[i] >= 0 && (uint32_t)*defaults[i] >= t->n_vocab) *defaults[i] = N;
    uint32_t n = t->n_vocab;
    read_id(g, "tokenizer.ggml.bos_token_id", n, &sp->bos);
    read_id(g, "tokenizer.ggml.eos_token_id", n, &sp->eos);
    read_id(g, "tokenizer.ggml.eot_token_id", n, &sp->eot);
    read_id(g, "tokenizer.ggml.eom_token_id", n, &sp->eom);
    read_id(g, "tokenizer.ggml.unknown_token_id", n, &sp->unk);
    read_id(g, "tokenizer.ggml.seperator_token_id", n, &sp->sep); /* sic, the GGUF key */
    read_id(g, "tokenizer.ggml.padding_token_id", n, &sp->pad);
    read_id(g, "tokenizer.ggml.mask_token_id", n, &sp->mask);
    read_id(g, "tokenizer.ggml.fim_pre_token_id", n, &fim_pre);
    read_id(g, "tokenizer.ggml.fim_suf_token_id", n, &fim_suf);
    read_id(g, "tokenizer.ggml.fim_mid_token_id", n, &fim_mid);
    read_id(g, "tokenizer.ggml.fim_pad_token_id", n, &fim_pad);
    read_id(g, "tokenizer.ggml.fim_rep_token_id", n, &fim_rep);
    read_id(g, "tokenizer.ggml.fim_sep_token_id", n, &fim_sep);
    read_id(g, "tokenizer.ggml.prefix_token_id", n, &fim_pre);
    read_id(g, "tokenizer.ggml.suffix_token_id", n, &fim_suf);
    read_id(g, "tokenizer.ggml.middle_token_id", n, &fim_mid);
    read_bool(g, "tokenizer.ggml.add_bos_token", &sp->add_bos);
    read_bool(g, "tokenizer.ggml.add_eos_token", &sp->add_eos);

    /* Recognized by text; each one found becomes a control token. (Where several texts of a
     * list are in one vocabulary the reference's pick depends on hash order; ours takes the
     * first in list order. Only the id differs: all of them become control tokens and
     * end-of-generation tokens below anyway.) */
    detect(t, &sp->eot, eot_texts);
    detect(t, &sp->eom, eom_texts);
    detect(t, &fim_pre, fim_pre_texts);
    detect(t, &fim_suf, fim_suf_texts);
    detect(t, &fim_mid, fim_mid_texts);
    detect(t, &fim_pad, fim_pad_texts);
    detect(t, &fim_rep, fim_rep_texts);
    detect(t, &fim_sep, fim_sep_texts);

    /* Control tokens named "...unused..." are unused. */
    for (uint32_t i = 0; i < n; i++) {
        if (!(t->attr[i] & ENG_TOKATTR_CONTROL) ||
            eng__atom_find(t, eng__atom_str(t, (int32_t)i), t->atom[i].len) != (int32_t)i)
            continue;
        if (strstr(eng__atom_str(t, (int32_t)i), "unused")) t->attr[i] |= ENG_TOKATTR_UNUSED;
    }

    eog_add(t, fim_pad);
    eog_add(t, fim_rep);
    eog_add(t, fim_sep);
    for (size_t i = 0; eog_texts[i]; i++) {
        int32_t tok = find_token(t, eog_texts[i]);
        eog_add(t, tok);
        make_control(t, tok);
    }
    /* gpt-oss: these always render. */
    static const char *const user_texts[] = {"<|channel|>", "<|message|>", "<|start|>",
                                             "<|constrain|>", NULL};
    for (size_t i = 0; user_texts[i]; i++) {
        int32_t tok = find_token(t, user_texts[i]);
        if (tok >= 0) t->attr[tok] = ENG_TOKATTR_USER_DEFINED;
    }
    eog_add(t, sp->eos);
    eog_add(t, sp->eot);
    eog_add(t, sp->eom);

    /* o200k_harmony / solar-open: "<|end|>" ends a message, not the generation. */
    int32_t end = find_token(t, "<|end|>");
    bool has_end = end >= 0 && eng_token_is_eog(t, end);
    bool has_return = eng_token_is_eog(t, find_token(t, "<|return|>"));
    bool has_call = eng_token_is_eog(t, find_token(t, "<|call|>")) ||
                    eng_token_is_eog(t, find_token(t, "<|calls|>"));
    bool has_flush = eng_token_is_eog(t, find_token(t, "<|flush|>"));
    if ((has_return && has_call && has_end) || (has_call && has_flush && has_end)) {
        eog_remove(t, end);
        t->attr[end] = ENG_TOKATTR_USER_DEFINED;
    }
    /* Gemma 4: "</s>" is no end of generation next to "<|tool_response>". */
    int32_t s_end = find_token(t, "</s>");
    if (s_end >= 0 && eng_token_is_eog(t, s_end) &&
        eng_token_is_eog(t, find_token(t, "<|tool_response>"))) {
        eog_remove(t, s_end);
        t->attr[s_end] = ENG_TOKATTR_NORMAL;
    }
    if (t->n_eog > 1) qsort(t->eog, t->n_eog, sizeof *t->eog, cmp_i32);
}

int eng_tokenizer_load(const struct eng_gguf *g, struct eng_tokenizer **out, struct ag_err *err)
{
    *out = NULL;
    const char *name = eng_gguf_name(g);
    const char *model, *pre = "";
    int rc = eng_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL, err);
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_ENOTFOUND, "%s: no tokenizer.ggml.model", name);
    if (rc) return rc;
    rc = eng_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL, err);
    if (rc == AG_ENOTFOUND)
        pre = "";
    else if (rc)
        return rc;

    struct eng_tokenizer *t = ag_calloc(1, sizeof *t);
    t->pre_name = ag_strdup(pre);
    bool bpe_add_bos = false;
    if (strcmp(model, "llama") == 0) {
        t->type = ENG_TOK_SPM;
        t->pre = ENG_TOK_PRE_NONE;
    } else if (strcmp(model, "gpt2") == 0) {
        t->type = ENG_TOK_BPE;
        size_t i = 0, n = sizeof pre_names / sizeof *pre_names;
        while (i < n && strcmp(pre, pre_names[i].name) != 0) i++;
        if (i == n) {
            eng_tokenizer_free(t);
            return ag_err_set(err, AG_EUNSUPPORTED,
                              "%s: BPE pre-tokenizer '%s' is not supported (supported: gpt2, "
                              "smollm, llama-bpe, llama3, llama-v3, qwen2, deepseek-r1-qwen)",
                              name, pre);
        }
        t->pre = pre_names[i].pre;
        t->ignore_merges = pre_names[i].ignore_merges;
        bpe_add_bos = pre_names[i].add_bos;
    } else {
        eng_tokenizer_free(t);
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "%s: tokenizer model '%s' is not supported (supported: llama, gpt2)",
                          name, model);
    }

    if ((rc = load_tokens(t, g, err)) != 0 ||
        (t->type == ENG_TOK_BPE && (rc = eng__bpe_load(t, g, err)) != 0)) {
        eng_tokenizer_free(t);
        return rc;
    }

    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_tok[b] = find_token(t, hex);
        if (t->byte_tok[b] < 0) {
            char c = (char)b;
            int32_t a = eng__atom_find(t, &c, 1);
            t->byte_tok[b] = a >= 0 && (uint32_t)a < t->n_vocab ? a : ENG_TOKEN_NULL;
        }
    }

    load_specials(t, g, bpe_add_bos);
    if ((rc = build_specials(t, err)) != 0 || (rc = eng__build_pieces(t, err)) != 0) {
        eng_tokenizer_free(t);
        return rc;
    }

    /* The newline token: SPM's byte token, BPE's tokenization of "\n". */
    if (t->type == ENG_TOK_SPM) {
        t->sp.nl = t->byte_tok['\n'] >= 0 ? t->byte_tok['\n'] : t->sp.pad;
    } else {
        int32_t ids[4];
        size_t n_ids = 0;
        int nl_rc = eng_tokenize(t, "\n", 1, 0, ids, 4, &n_ids, NULL);
        t->sp.nl = (nl_rc == 0 || nl_rc == AG_ETOOBIG) && n_ids > 0 ? ids[0] : t->sp.pad;
    }
    *out = t;
    return 0;
}

void eng_tokenizer_free(struct eng_tokenizer *t)
{
    if (!t) return;
    free(t->pre_name);
    free(t->pool);
    free(t->atom);
    free(t->atom_slot);
    free(t->score);
    free(t->attr);
    free(t->merge);
    free(t->special);
    free(t->special_node);
    free(t->trie_slot);
    free(t->eog);
    free(t->piece_pool);
    free(t->piece);
    free(t);
}

/* ---- accessors ---- */

enum eng_tok_type eng_tokenizer_type(const struct eng_tokenizer *t)
{
    return t->type;
}

enum eng_tok_pre eng_tokenizer_pre(const struct eng_tokenizer *t)
{
    return t->pre;
}

const char *eng_tokenizer_pre_name(const struct eng_tokenizer *t)
{
    return t->pre_name;
}

uint32_t eng_tokenizer_n_vocab(const struct eng_tokenizer *t)
{
    return t->n_vocab;
}

const struct eng_tok_specials *eng_tokenizer_specials(const struct eng_tokenizer *t)
{
    return &t->sp;
}

size_t eng_tokenizer_eog(const struct eng_tokenizer *t, const int32_t **ids)
{
    *ids = t->eog;
    return t->n_eog;
}

bool eng_token_is_eog(const struct eng_tokenizer *t, int32_t id)
{
    if (id < 0) return false;
    for (uint32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

unsigned eng_token_attr(const struct eng_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab ? t->attr[id] : 0;
}

float eng_token_score(const struct eng_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab ? t->score[id] : 0.0f;
}

int32_t eng_token_find(const struct eng_tokenizer *t, const char *text, size_t len)
{
    int32_t a = eng__atom_find(t, text, len);
    return a >= 0 && (uint32_t)a < t->n_vocab ? a : ENG_TOKEN_NULL;
}

/* ---- splitting out special tokens ---- */

/* A piece of the input: text (tok < 0) or a special token. */
struct frag {
    size_t off;  /* text: first byte in the input */
    size_t len;  /* text: bytes */
    int32_t tok; /* the special token, or -1 for text */
};

struct frags {
    struct frag *v; /* pieces in order */
    size_t n;
    size_t cap;
};

static void frag_push(struct frags *f, size_t off, size_t len, int32_t tok)
{
    eng__grow((void **)&f->v, &f->cap, f->n + 1, sizeof *f->v);
    f->v[f->n++] = (struct frag){.off = off, .len = len, .tok = tok};
}

static bool ascii_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Splits every occurrence of special token id out of the text pieces of in, into out. */
static void split_one(const struct eng_tokenizer *t, const char *text, int32_t id,
                      const struct frags *in, struct frags *out)
{
    const char *s = eng__atom_str(t, id);
    size_t n = t->atom[id].len;
    unsigned attr = t->attr[id];
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct frag f = in->v[i];
        if (f.tok >= 0) {
            frag_push(out, 0, 0, f.tok);
            continue;
        }
        size_t off = f.off, rem = f.len;
        for (;;) {
            const char *m = rem >= n ? memmem(text + off, rem, s, n) : NULL;
            if (!m) {
                if (rem > 0) frag_push(out, off, rem, -1);
                break;
            }
            size_t at = (size_t)(m - text);
            size_t left = at - off;
            if (attr & ENG_TOKATTR_LSTRIP)
                while (left > 0 && ascii_space(text[off + left - 1])) left--;
            if (left > 0) frag_push(out, off, left, -1);
            frag_push(out, 0, 0, id);
            if (at + n >= off + rem) break;
            size_t r_off = at + n, r_len = off + rem - r_off;
            if (attr & ENG_TOKATTR_RSTRIP)
                while (r_len > 0 && ascii_space(text[r_off])) r_off++, r_len--;
            off = r_off;
            rem = r_len;
        }
    }
}

/* The input as pieces (into *res, which is one of a and b). */
static void partition(const struct eng_tokenizer *t, const char *text, size_t len,
                      bool parse_special, struct frags *a, struct frags *b, struct frags **res)
{
    a->n = 0;
    *res = a;
    if (len == 0) return;
    frag_push(a, 0, len, -1);
    if (t->n_special == 0) return;

    /* Which trie nodes does the text reach? A special token can occur only if its end node
     * was reached. */
    uint8_t *seen = NULL;
    for (size_t i = 0; i < len; i++) {
        uint32_t node = t->root_child[(unsigned char)text[i]];
        for (size_t j = i + 1; node; j++) {
            if (!seen) seen = ag_calloc(t->n_node, 1);
            seen[node] = 1;
            if (j >= len) break;
            node = trie_child(t, node, (unsigned char)text[j]);
        }
    }
    if (!seen) return;

    const unsigned skip =
        parse_special ? 0 : (ENG_TOKATTR_CONTROL | ENG_TOKATTR_UNKNOWN); /* text then */
    struct frags *cur = a, *next = b;
    for (uint32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if ((t->attr[id] & skip) || !seen[t->special_node[k]]) continue;
        split_one(t, text, id, cur, next);
        struct frags *tmp = cur;
        cur = next;
        next = tmp;
    }
    free(seen);
    *res = cur;
}

/* ---- tokenize ---- */

static int tokenize(const struct eng_tokenizer *t, const char *text, size_t len, unsigned flags,
                    struct eng__tok_work *w, struct ag_err *err)
{
    if (len > ENG_TOKENIZE_MAX_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "tokenizer: text of %zu bytes (limit %zu)", len,
                          ENG_TOKENIZE_MAX_BYTES);
    bool add = flags & ENG_TOKENIZE_ADD_SPECIAL;
    if (add && t->sp.add_bos && t->sp.bos < 0)
        return ag_err_set(err, AG_EINVAL, "tokenizer: the model adds BOS but has none");
    if (add && t->sp.add_eos && t->sp.eos < 0)
        return ag_err_set(err, AG_EINVAL, "tokenizer: the model adds EOS but has none");

    struct frags fa = {0}, fb = {0}, *fr;
    partition(t, text, len, flags & ENG_TOKENIZE_PARSE_SPECIAL, &fa, &fb, &fr);

    int rc = 0;
    if (add && t->sp.add_bos) eng__tok_emit(w, t->sp.bos);
    bool prev_special = true; /* SPM: the input's start counts as after a special token */
    for (size_t i = 0; i < fr->n && rc == 0; i++) {
        const struct frag *f = &fr->v[i];
        if (f->tok >= 0) {
            eng__tok_emit(w, f->tok);
            prev_special = true;
            continue;
        }
        if (t->type == ENG_TOK_BPE) {
            eng__bpe_tokenize(t, w, text + f->off, f->len);
            continue;
        }
        /* SPM: the optional leading space, and every space as U+2581. */
        eng__grow((void **)&w->buf, &w->cap_buf, 3 * (f->len + 1), 1);
        size_t n = 0;
        if (t->sp.add_space_prefix && prev_special) {
            memcpy(w->buf, "\xE2\x96\x81", 3);
            n = 3;
        }
        for (size_t j = 0; j < f->len; j++) {
            char c = text[f->off + j];
            if (c == ' ') {
                memcpy(w->buf + n, "\xE2\x96\x81", 3);
                n += 3;
            } else {
                w->buf[n++] = c;
            }
        }
        rc = eng__spm_tokenize(t, w, w->buf, n, err);
        prev_special = false;
    }
    if (rc == 0 && add && t->sp.add_eos) eng__tok_emit(w, t->sp.eos);
    free(fa.v);
    free(fb.v);
    return rc;
}

static void work_release(struct eng__tok_work *w)
{
    free(w->cpt);
    free(w->cfl);
    free(w->seg);
    free(w->seg2);
    free(w->buf);
    free(w->mbuf);
    free(w->sym);
    free(w->heap);
}

int eng_tokenize(const struct eng_tokenizer *t, const char *text, size_t len, unsigned flags,
                 int32_t *ids, size_t cap, size_t *n_out, struct ag_err *err)
{
    struct eng__tok_work w = {0};
    int rc = tokenize(t, text, len, flags, &w, err);
    work_release(&w);
    *n_out = 0;
    if (rc == 0) {
        *n_out = w.n_out;
        if (ids && w.n_out && cap)
            memcpy(ids, w.out, (w.n_out < cap ? w.n_out : cap) * sizeof *ids);
        if (w.n_out > cap)
            rc = ag_err_set(err, AG_ETOOBIG, "tokenizer: %zu tokens, room for %zu", w.n_out, cap);
    }
    free(w.out);
    return rc;
}

int eng_tokenize_alloc(const struct eng_tokenizer *t, const char *text, size_t len, unsigned flags,
                       int32_t **ids, size_t *n_out, struct ag_err *err)
{
    struct eng__tok_work w = {0};
    int rc = tokenize(t, text, len, flags, &w, err);
    work_release(&w);
    *ids = NULL;
    *n_out = 0;
    if (rc != 0 || w.n_out == 0) {
        free(w.out);
        return rc;
    }
    *ids = w.out;
    *n_out = w.n_out;
    return 0;
}
