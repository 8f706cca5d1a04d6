/*
 * tok_bpe.c - byte-level BPE (tokenizer.ggml.model "gpt2"): the pre-tokenizers that cut text into
 * words, GPT-2's byte <-> character table, the merge table, and the merging itself.
 *
 * Parity first. The reference (llama.cpp) does not run the pre-tokenizer regexes through a regex
 * engine for these models: it runs hand-written matchers, with its own Unicode tables
 * (Unicode 15.1) and its own quirks (a run of whitespace at the end of a digit-split segment is
 * one word; the Llama 3 matcher takes a lone space before the end of a segment as punctuation).
 * So this file implements the same matchers, in the same order of alternatives, over the same
 * classes (tok_unicode.c is generated from the same Unicode version), rather than a regex
 * library with another Unicode version. Pre-tokenizers, as the reference picks them:
 *   gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   smollm  first \p{N} (each digit its own piece), then gpt2 inside each piece
 *   llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2   as llama3 with \p{N} instead of \p{N}{1,3}
 * Text is decoded as the reference decodes it (a malformed byte becomes U+FFFD, overlong forms
 * pass) and each word is re-encoded before merging, so even invalid UTF-8 tokenizes the same.
 *
 * Merging: each byte of a word is a symbol; candidate pairs sit in a binary heap ordered by
 * (merge rank, position); the best is merged and its new neighbours are queued; a popped pair
 * whose symbols changed since it was queued is skipped (symbols only grow, so "both alive and
 * their lengths still add up" is an exact test). That is the reference's algorithm, and it is
 * O(n log n) per word. Symbols and merges are atoms (see tokenizer_int.h), so a merge lookup
 * is one hash probe on two integers.
 */
#include "tokenizer_int.h"

#include <stdlib.h>
#include <string.h>

#define OOR 0xFFFFFFFFu /* "no code point": a position outside the segment */

/* ---- GPT-2's byte <-> character table ----
 * Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, 0x7F..0xA0,
 * 0xAD) get U+0100.. in byte order. */

static bool byte_is_self(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

uint32_t eng__byte_to_cpt(uint8_t b)
{
    if (byte_is_self(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b <= 0xA0) return 256u + 33 + (b - 0x7Fu);
    return 256u + 33 + 34; /* 0xAD */
}

int eng__cpt_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_self(cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 33 + 34) return (int)(0x7F + cp - (256 + 33));
    if (cp == 256 + 33 + 34) return 0xAD;
    return -1;
}

/* ---- UTF-8 as the reference reads and writes it ---- */

static bool is_cont(const char *s, size_t i)
{
    return ((unsigned char)s[i] & 0xC0) == 0x80;
}

uint32_t eng__utf8_decode(const char *s, size_t n, size_t *i)
{
    size_t k = *i;
    unsigned c = (unsigned char)s[k];
    if (!(c & 0x80)) {
        *i = k + 1;
        return c;
    }
    if ((c & 0x40) && !(c & 0x20)) {
        if (k + 1 < n && is_cont(s, k + 1)) {
            *i = k + 2;
            return ((c & 0x1Fu) << 6) | ((unsigned char)s[k + 1] & 0x3Fu);
        }
    } else if ((c & 0x40) && !(c & 0x10)) {
        if (k + 2 < n && is_cont(s, k + 1) && is_cont(s, k + 2)) {
            *i = k + 3;
            return ((c & 0x0Fu) << 12) | (((unsigned char)s[k + 1] & 0x3Fu) << 6) |
                   ((unsigned char)s[k + 2] & 0x3Fu);
        }
    } else if ((c & 0x40) && !(c & 0x08)) {
        if (k + 3 < n && is_cont(s, k + 1) && is_cont(s, k + 2) && is_cont(s, k + 3)) {
            *i = k + 4;
            return ((c & 0x07u) << 18) | (((unsigned char)s[k + 1] & 0x3Fu) << 12) |
                   (((unsigned char)s[k + 2] & 0x3Fu) << 6) | ((unsigned char)s[k + 3] & 0x3Fu);
        }
    }
    *i = k + 1;
    return 0xFFFD;
}

size_t eng__utf8_encode(uint32_t cp, char *out)
{
    if (cp <= 0x7F) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp <= 0x7FF) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp > 0x10FFFF) cp = 0xFFFD; /* the reference throws here; see tokenizer.h */
    if (cp <= 0xFFFF) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- pre-tokenizers ----
 * Each splits the code points [ini, end) of one piece into words, appending their lengths to
 * out (at most end - ini of them), and returns how many it appended. Positions outside the
 * piece read as "no code point" with no flags, as in the reference. */

struct split {
    const uint32_t *cpt; /* code points of the whole fragment */
    const uint16_t *fl;  /* their ENG__UCD_* flags */
    size_t end;          /* end of the piece being split */
    size_t prev;         /* end of the last word emitted */
    uint32_t *out;       /* word lengths */
    size_t n;            /* entries in out */
};

static uint32_t s_cpt(const struct split *s, size_t p)
{
    return p < s->end ? s->cpt[p] : OOR;
}

static uint16_t s_fl(const struct split *s, size_t p)
{
    return p < s->end ? s->fl[p] : 0;
}

static void s_emit(struct split *s, size_t end)
{
    if (end > s->prev) s->out[s->n++] = (uint32_t)(end - s->prev);
    s->prev = end;
}

/* The reference's tolower() maps only ASCII capitals onto the letters the contractions use
 * (U+0130 and U+212A go to 'i' and 'k'), so ASCII folding is exact here. */
static uint32_t ascii_lower(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* 's|'t|'re|'ve|'m|'ll|'d at pos, optionally case-insensitive: the match length or 0. */
static size_t contraction(const struct split *s, size_t pos, bool fold)
{
    if (s->cpt[pos] != '\'' || pos + 1 >= s->end) return 0;
    uint32_t c1 = s->cpt[pos + 1];
    if (fold) c1 = ascii_lower(c1);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if (pos + 2 >= s->end) return 0;
    uint32_t c2 = s->cpt[pos + 2];
    if (fold) c2 = ascii_lower(c2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
}

enum { WS = ENG__UCD_WHITESPACE, LET = ENG__UCD_LETTER, NUM = ENG__UCD_NUMBER };

/* \s+(?!\S)|\s+ at pos, after the other alternatives failed (shared tail of the matchers). */
static void whitespace_or_one(struct split *s, size_t pos)
{
    size_t nw = 0;
    while (s_fl(s, pos + nw) & WS) nw++;
    if (nw > 1 && pos + nw < s->end)
        s_emit(s, pos + nw - 1); /* leave the last space to the word that follows */
    else if (nw > 0)
        s_emit(s, pos + nw);
    else
        s_emit(s, pos + 1); /* nothing matched: one code point alone */
}

static size_t split_gpt2(struct split *s, size_t ini)
{
    size_t pos = ini;
    s->prev = ini;
    while (pos < s->end) {
        uint32_t c = s->cpt[pos];
        size_t k = contraction(s, pos, false);
        if (k) {
            pos += k;
            s_emit(s, pos);
            continue;
        }
        uint16_t f2 = c == ' ' ? s_fl(s, pos + 1) : s->fl[pos];
        uint16_t cls = (f2 & LET) ? LET : (f2 & NUM) ? NUM : 0;
        if (cls) { /* ' ?\p{L}+' or ' ?\p{N}+' */
            pos += c == ' ';
            while (s_fl(s, pos) & cls) pos++;
            s_emit(s, pos);
            continue;
        }
        if (!(f2 & (WS | LET | NUM)) && f2) { /* ' ?[^\s\p{L}\p{N}]+' */
            pos += c == ' ';
            while (!(s_fl(s, pos) & (WS | LET | NUM)) && s_fl(s, pos)) pos++;
            s_emit(s, pos);
            continue;
        }
        whitespace_or_one(s, pos);
        pos = s->prev;
    }
    return s->n;
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1). */
static size_t split_llama3(struct split *s, size_t ini, size_t max_digits)
{
    size_t pos = ini;
    s->prev = ini;
    while (pos < s->end) {
        uint32_t c = s->cpt[pos];
        uint16_t f = s->fl[pos];
        size_t k = contraction(s, pos, true);
        if (k) {
            pos += k;
            s_emit(s, pos);
            continue;
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || (f & NUM)) && ((f & LET) || (s_fl(s, pos + 1) & LET))) {
            pos++;
            while (s_fl(s, pos) & LET) pos++;
            s_emit(s, pos);
            continue;
        }
        if (f & NUM) { /* \p{N}{1,max_digits} */
            size_t run = pos;
            while (s_fl(s, pos) & NUM) {
                if (++pos - run >= max_digits) {
                    s_emit(s, pos);
                    run = pos;
                }
            }
            s_emit(s, pos);
            continue;
        }
        /* ' ?[^\s\p{L}\p{N}]+[\r\n]*'; the reference tests the first code point's own flags
         * here, so a space that ends the piece is taken by this branch, alone. */
        uint16_t f2 = c == ' ' ? s_fl(s, pos + 1) : f;
        if (!(f2 & (WS | LET | NUM)) && f) {
            pos += c == ' ';
            while (!(s_fl(s, pos) & (WS | LET | NUM)) && s_fl(s, pos)) pos++;
            while (s_cpt(s, pos) == '\r' || s_cpt(s, pos) == '\n') pos++;
            s_emit(s, pos);
            continue;
        }
        /* \s*[\r\n]+ : up to the last \r or \n of the whitespace run */
        size_t nw = 0, last_rn = 0;
        while (s_fl(s, pos + nw) & WS) {
            uint32_t c2 = s_cpt(s, pos + nw);
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nw + 1;
            nw++;
        }
        if (last_rn > 0) {
            pos = last_rn;
            s_emit(s, pos);
            continue;
        }
        whitespace_or_one(s, pos);
        pos = s->prev;
    }
    return s->n;
}

/* \p{N} through the reference's general regex path: every number alone, the runs between
 * them as pieces of their own. */
static size_t split_digits(struct split *s, size_t ini)
{
    size_t run = ini;
    for (size_t p = ini; p < s->end; p++) {
        if (s->fl[p] & NUM) {
            if (p > run) s->out[s->n++] = (uint32_t)(p - run);
            s->out[s->n++] = 1;
            run = p + 1;
        }
    }
    if (s->end > run) s->out[s->n++] = (uint32_t)(s->end - run);
    return s->n;
}

/* Splits cpt[0..n) into words for pre; the lengths go to w->seg; returns their count. */
static size_t pre_split(enum eng_tok_pre pre, struct eng__tok_work *w, size_t n)
{
    if (n == 0) return 0;
    eng__grow((void **)&w->seg, &w->cap_seg, n, sizeof *w->seg);
    eng__grow((void **)&w->seg2, &w->cap_seg2, n, sizeof *w->seg2);
    struct split s = {.cpt = w->cpt, .fl = w->cfl, .end = n, .out = w->seg};
    switch (pre) {
    case ENG_TOK_PRE_SMOLLM: {
        /* Digits first (into seg2), then GPT-2's matcher inside each piece (into seg). */
        s.out = w->seg2;
        size_t n_pieces = split_digits(&s, 0);
        s.out = w->seg;
        s.n = 0;
        size_t start = 0;
        for (size_t i = 0; i < n_pieces; i++) {
            s.end = start + w->seg2[i];
            split_gpt2(&s, start);
            start = s.end;
        }
        return s.n;
    }
    case ENG_TOK_PRE_LLAMA3:
        return split_llama3(&s, 0, 3);
    case ENG_TOK_PRE_QWEN2:
        return split_llama3(&s, 0, 1);
    case ENG_TOK_PRE_GPT2:
    case ENG_TOK_PRE_NONE:
    default:
        return split_gpt2(&s, 0);
    }
}

/* Decodes text into w->cpt / w->cfl; returns the code point count. */
static size_t decode(struct eng__tok_work *w, const char *text, size_t len)
{
    eng__grow((void **)&w->cpt, &w->cap_cpt, len, sizeof *w->cpt);
    eng__grow((void **)&w->cfl, &w->cap_cfl, len, sizeof *w->cfl);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = eng__utf8_decode(text, len, &i);
        w->cpt[n] = cp;
        w->cfl[n] = eng__ucd_flags(cp);
        n++;
    }
    return n;
}

void eng__bpe_split(enum eng_tok_pre pre, const char *text, size_t len, size_t **lens, size_t *n,
                    size_t *cap)
{
    struct eng__tok_work w = {0};
    size_t n_cpt = decode(&w, text, len);
    size_t n_words = pre_split(pre, &w, n_cpt);
    size_t at = 0;
    for (size_t i = 0; i < n_words; i++) {
        size_t bytes = 0;
        char tmp[4];
        for (uint32_t j = 0; j < w.seg[i]; j++) bytes += eng__utf8_encode(w.cpt[at + j], tmp);
        at += w.seg[i];
        eng__grow((void **)lens, cap, *n + 1, sizeof **lens);
        (*lens)[(*n)++] = bytes;
    }
    free(w.cpt);
    free(w.cfl);
    free(w.seg);
    free(w.seg2);
}

/* ---- merges ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
}

static const struct eng__merge *merge_find(const struct eng_tokenizer *t, int32_t left,
                                           int32_t right)
{
    if (!t->merge) return NULL;
    uint64_t key = pair_key(left, right);
    for (uint64_t i = mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const struct eng__merge *m = &t->merge[i];
        if (m->key == key) return m;
        if (m->key == 0) return NULL;
    }
}

int eng__bpe_load(struct eng_tokenizer *t, const struct eng_gguf *g, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = eng_gguf_get_arr(g, "tokenizer.ggml.merges", ENG_GGUF_STRING, &kv, err);
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_ENOTFOUND, "%s: BPE vocabulary without tokenizer.ggml.merges",
                          eng_gguf_name(g));
    if (rc) return rc;
    if (kv->arr_n > INT32_MAX)
        return ag_err_set(err, AG_ETOOBIG, "%s: %llu merges", eng_gguf_name(g),
                          (unsigned long long)kv->arr_n);

    size_t slots = 16;
    while (slots < 2 * kv->arr_n) slots *= 2;
    t->merge = ag_calloc(slots, sizeof *t->merge);
    t->merge_mask = (uint32_t)(slots - 1);

    char *cat = NULL;
    size_t cat_cap = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        const struct eng_gguf_str *s;
        if (eng_gguf_arr_str(kv, i, &s) != 0) continue;
        /* "left right", split at the first space after the first byte (as the reference). */
        const char *sp = s->len > 1 ? memchr(s->s + 1, ' ', s->len - 1) : NULL;
        if (!sp) continue; /* the reference files it under ("", ""), which nothing matches */
        size_t nl = (size_t)(sp - s->s), nr = s->len - nl - 1;
        if (nr == 0) continue; /* an empty right side matches nothing either */
        int32_t left = eng__atom_intern(t, s->s, nl);
        int32_t right = eng__atom_intern(t, sp + 1, nr);
        eng__grow((void **)&cat, &cat_cap, nl + nr, 1);
        memcpy(cat, s->s, nl);
        memcpy(cat + nl, sp + 1, nr);
        int32_t result = eng__atom_intern(t, cat, nl + nr);
        if (left < 0 || right < 0 || result < 0) {
            free(cat);
            return ag_err_set(err, AG_ETOOBIG, "%s: merges exceed the tokenizer's 4 GiB pool",
                              eng_gguf_name(g));
        }
        uint64_t key = pair_key(left, right);
        for (uint64_t j = mix64(key) & t->merge_mask;; j = (j + 1) & t->merge_mask) {
            struct eng__merge *m = &t->merge[j];
            if (m->key == key) break; /* a repeated pair keeps its first rank */
            if (m->key == 0) {
                *m = (struct eng__merge){.key = key, .rank = (int32_t)i, .result = result};
                t->n_merge++;
                break;
            }
        }
    }
    free(cat);

    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t n = eng__utf8_encode(eng__byte_to_cpt((uint8_t)b), u);
        t->byte_atom[b] = eng__atom_find(t, u, n);
    }
    return 0;
}

/* ---- merging one word ---- */

struct bsym {
    int32_t prev; /* previous live symbol, -1 at the start */
    int32_t next; /* next live symbol, -1 at the end */
    uint32_t len; /* bytes of the word it covers; 0 once merged into its left neighbour */
    int32_t atom; /* its string's atom, -1 when it has none */
};

struct bpair {
    int32_t rank;   /* merge rank: lower first */
    int32_t left;   /* left symbol: lower first among equal ranks */
    int32_t right;  /* right symbol */
    uint32_t size;  /* left.len + right.len when queued */
    int32_t result; /* atom of the merged string */
};

static bool pair_before(const void *va, const void *vb)
{
    const struct bpair *a = va, *b = vb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void queue_pair(const struct eng_tokenizer *t, struct eng__tok_work *w, size_t *n_heap,
                       int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const struct bsym *sym = w->sym;
    if (sym[left].atom < 0 || sym[right].atom < 0) return;
    const struct eng__merge *m = merge_find(t, sym[left].atom, sym[right].atom);
    if (!m) return;
    eng__heap_push(w, n_heap,
                   &(struct bpair){.rank = m->rank,
                                   .left = left,
                                   .right = right,
                                   .size = sym[left].len + sym[right].len,
                                   .result = m->result},
                   sizeof(struct bpair), pair_before);
}

/* Writes the byte-level characters of bytes[0..n) to w->mbuf; returns their length. */
static size_t to_chars(struct eng__tok_work *w, const char *bytes, size_t n)
{
    eng__grow((void **)&w->mbuf, &w->cap_mbuf, 2 * n, 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += eng__utf8_encode(eng__byte_to_cpt((uint8_t)bytes[i]), w->mbuf + m);
    return m;
}

static void bpe_word(const struct eng_tokenizer *t, struct eng__tok_work *w, const char *bytes,
                     size_t n)
{
    if (t->ignore_merges) {
        size_t m = to_chars(w, bytes, n);
        int32_t a = eng__atom_find(t, w->mbuf, m);
        if (a >= 0 && (uint32_t)a < t->n_vocab) {
            eng__tok_emit(w, a);
            return;
        }
    }

    eng__grow(&w->sym, &w->cap_sym, n, sizeof(struct bsym));
    struct bsym *sym = w->sym;
    for (size_t i = 0; i < n; i++)
        sym[i] = (struct bsym){.prev = (int32_t)i - 1,
                               .next = i + 1 < n ? (int32_t)i + 1 : -1,
                               .len = 1,
                               .atom = t->byte_atom[(uint8_t)bytes[i]]};
    size_t n_heap = 0;
    for (size_t i = 1; i < n; i++) queue_pair(t, w, &n_heap, (int32_t)i - 1, (int32_t)i);

    while (n_heap > 0) {
        struct bpair p;
        eng__heap_pop(w, &n_heap, &p, sizeof p, pair_before);
        sym = w->sym;
        struct bsym *l = &sym[p.left], *r = &sym[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.size) continue; /* stale */
        l->len += r->len;
        l->atom = p.result;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        queue_pair(t, w, &n_heap, l->prev, p.left);
        queue_pair(t, w, &n_heap, p.left, l->next);
    }

    sym = w->sym;
    for (size_t i = 0; i < n; i++) {
        if (sym[i].len == 0) continue;
        int32_t a = sym[i].atom;
        if (a >= 0 && (uint32_t)a < t->n_vocab) {
            eng__tok_emit(w, a);
            continue;
        }
        /* Not a token (a vocabulary without some merge result): like the reference, each byte
         * of the symbol's byte-level text that is a one-byte token, the rest dropped. */
        size_t m = to_chars(w, bytes + i, sym[i].len);
        for (size_t j = 0; j < m; j++) {
            int32_t b = eng__atom_find(t, w->mbuf + j, 1);
            if (b >= 0 && (uint32_t)b < t->n_vocab) eng__tok_emit(w, b);
        }
    }
}

void eng__bpe_tokenize(const struct eng_tokenizer *t, struct eng__tok_work *w, const char *text,
                       size_t len)
{
    size_t n_cpt = decode(w, text, len);
    size_t n_words = pre_split(t->pre, w, n_cpt);
    /* A word re-encoded takes at most 4 bytes per code point (U+FFFD for a bad byte is 3). */
    size_t at = 0;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t nc = w->seg[i];
        eng__grow((void **)&w->buf, &w->cap_buf, 4 * (size_t)nc, 1);
        size_t nb = 0;
        for (uint32_t j = 0; j < nc; j++) nb += eng__utf8_encode(w->cpt[at + j], w->buf + nb);
        at += nc;
        bpe_word(t, w, w->buf, nb);
    }
}
