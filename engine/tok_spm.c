/*
 * tok_spm.c - SentencePiece-style tokenization (tokenizer.ggml.model "llama": Gemma 3, Llama 2)
 * of one text fragment, as the reference (llama.cpp) does it.
 *
 * The caller has already split out special tokens and replaced every space with U+2581 (and
 * added the leading space where the vocabulary wants one). Here: each UTF-8 character is a
 * symbol (its length read from the lead byte alone, cut short at the end of the text, so
 * invalid UTF-8 is never rejected); every adjacent pair whose concatenation is a token is a
 * candidate, scored by that token's score; the best candidate (highest score, then leftmost) is
 * merged and its new neighbours become candidates; candidates whose symbols changed since they
 * were queued are skipped. What remains is emitted as tokens, and a symbol that is no token
 * falls back to one <0xXX> byte token per byte.
 *
 * Cost: O(n log n) in the fragment's characters, one hash probe per candidate; a concatenation
 * longer than the longest token is never looked up.
 */
#include "tokenizer_int.h"

struct ssym {
    int32_t prev; /* previous live symbol, -1 at the start */
    int32_t next; /* next live symbol, -1 at the end */
    uint32_t off; /* first byte in the fragment */
    uint32_t len; /* bytes; 0 once merged into its left neighbour */
};

struct spair {
    float score;   /* the merged token's score: higher first */
    int32_t left;  /* left symbol: lower first among equal scores */
    int32_t right; /* right symbol */
    uint32_t size; /* left.len + right.len when queued */
};

static bool pair_before(const void *va, const void *vb)
{
    const struct spair *a = va, *b = vb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void queue_pair(const struct eng_tokenizer *t, struct eng__tok_work *w, size_t *n_heap,
                       const char *text, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const struct ssym *sym = w->sym;
    uint32_t size = sym[left].len + sym[right].len;
    if (size > t->max_len) return; /* no token is that long */
    int32_t id = eng__atom_find(t, text + sym[left].off, size);
    if (id < 0 || (uint32_t)id >= t->n_vocab) return;
    eng__heap_push(
        w, n_heap,
        &(struct spair){.score = t->score[id], .left = left, .right = right, .size = size},
        sizeof(struct spair), pair_before);
}

/* Bytes of the UTF-8 character whose lead byte is c, as the reference counts them. */
static uint32_t char_len(unsigned char c)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

int eng__spm_tokenize(const struct eng_tokenizer *t, struct eng__tok_work *w, const char *text,
                      size_t len, struct ag_err *err)
{
    if (len == 0) return 0;
    eng__grow(&w->sym, &w->cap_sym, len, sizeof(struct ssym));
    struct ssym *sym = w->sym;
    int32_t n = 0;
    for (size_t off = 0; off < len;) {
        uint32_t cl = char_len((unsigned char)text[off]);
        if (cl > len - off) cl = (uint32_t)(len - off);
        sym[n] = (struct ssym){.prev = n - 1, .next = -1, .off = (uint32_t)off, .len = cl};
        if (n > 0) sym[n - 1].next = n;
        n++;
        off += cl;
    }

    size_t n_heap = 0;
    for (int32_t i = 1; i < n; i++) queue_pair(t, w, &n_heap, text, i - 1, i);
    while (n_heap > 0) {
        struct spair p;
        eng__heap_pop(w, &n_heap, &p, sizeof p, pair_before);
        sym = w->sym;
        struct ssym *l = &sym[p.left], *r = &sym[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.size) continue; /* stale */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        queue_pair(t, w, &n_heap, text, l->prev, p.left);
        queue_pair(t, w, &n_heap, text, p.left, l->next);
    }

    sym = w->sym;
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        int32_t id = eng__atom_find(t, text + sym[i].off, sym[i].len);
        if (id >= 0 && (uint32_t)id < t->n_vocab) {
            eng__tok_emit(w, id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].len; j++) {
            unsigned char b = (unsigned char)text[sym[i].off + j];
            if (t->byte_tok[b] < 0)
                return ag_err_set(err, AG_EINVAL,
                                  "tokenizer: no byte token <0x%02X> for byte fallback", b);
            eng__tok_emit(w, t->byte_tok[b]);
        }
    }
    return 0;
}
