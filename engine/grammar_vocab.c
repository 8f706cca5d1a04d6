/*
 * grammar_vocab.c - the vocabulary as byte tries, and the tokens a matcher allows next
 * (grammar.h): a depth-first walk that advances a copy of the state per byte and prunes a
 * subtree at its first rejected byte, with the plain-string-text fast path.
 */
#include "grammar_int.h"

#include <string.h>

#include "tokenizer.h"

/* ---- vocabulary ---- */

struct tnode {
    int32_t child;   /* first child, -1 */
    int32_t sibling; /* next sibling, -1 */
    int32_t tok;     /* first token ending here, -1 */
    uint8_t byte;
};

struct trie {
    struct tnode *n;
    int32_t count, cap;
};

struct eng_gvocab {
    int32_t n_vocab;
    char *bytes;       /* every token's bytes end to end */
    int64_t *off;      /* (n_vocab + 1) offsets into bytes; a token with no bytes is skipped */
    int32_t *tok_next; /* next token with the same bytes, -1 */
    struct trie all;   /* every token */
    struct trie rest;  /* tokens that are not plain string text */
    int32_t *plain;    /* plain string text tokens */
    int32_t n_plain;
    int max_len; /* longest token */
};

static int32_t trie_node(struct trie *t, uint8_t byte)
{
    GROW(t->n, t->count, t->cap);
    t->n[t->count] = (struct tnode){.child = -1, .sibling = -1, .tok = -1, .byte = byte};
    return t->count++;
}

/* The node at the end of path s in trie t, created along the way. */
static int32_t trie_path(struct trie *t, const uint8_t *s, int len)
{
    int32_t cur = 0; /* root */
    for (int i = 0; i < len; i++) {
        int32_t c = t->n[cur].child, prev = -1;
        while (c >= 0 && t->n[c].byte != s[i]) prev = c, c = t->n[c].sibling;
        if (c < 0) {
            c = trie_node(t, s[i]);
            if (prev < 0)
                t->n[cur].child = c;
            else
                t->n[prev].sibling = c;
        }
        cur = c;
    }
    return cur;
}

/* Text that stays inside a JSON string: no quote, backslash or control byte, whole UTF-8. */
static bool plain_text(const uint8_t *s, int len)
{
    int need = 0;
    for (int i = 0; i < len; i++) {
        uint8_t b = s[i];
        if (need) {
            if (b < 0x80 || b > 0xBF) return false;
            need--;
            continue;
        }
        if (b == '"' || b == '\\' || b < 0x20) return false;
        if (b >= 0x80) {
            if (b >= 0xC2 && b <= 0xDF)
                need = 1;
            else if (b >= 0xE0 && b <= 0xEF)
                need = 2;
            else if (b >= 0xF0 && b <= 0xF4)
                need = 3;
            else
                return false;
        }
    }
    return need == 0;
}

int eng_gvocab_new(const struct eng_tokenizer *tok, struct eng_gvocab **out, struct ag_err *err)
{
    (void)err;
    struct eng_gvocab *v = ag_calloc(1, sizeof(*v));
    v->n_vocab = (int32_t)eng_tokenizer_n_vocab(tok);
    v->off = ag_calloc((size_t)v->n_vocab + 1, sizeof(int64_t));
    v->tok_next = ag_calloc((size_t)v->n_vocab, sizeof(int32_t));
    v->plain = ag_calloc((size_t)v->n_vocab, sizeof(int32_t));
    struct ag_buf b;
    ag_buf_init(&b);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        v->off[id] = (int64_t)b.len;
        v->tok_next[id] = -1;
        size_t len = 0;
        const char *p = eng_token_piece(tok, id, 0, &len);
        if (p && len > 0) ag_buf_append(&b, p, len);
    }
    v->off[v->n_vocab] = (int64_t)b.len;
    v->bytes = b.data ? b.data : ag_calloc(1, 1);
    trie_node(&v->all, 0);
    trie_node(&v->rest, 0);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        int len = (int)(v->off[id + 1] - v->off[id]);
        if (len == 0) continue;
        const uint8_t *s = (const uint8_t *)v->bytes + v->off[id];
        if (len > v->max_len) v->max_len = len;
        /* Tokens with the same bytes chain from their node. */
        int32_t a = trie_path(&v->all, s, len);
        v->tok_next[id] = v->all.n[a].tok;
        v->all.n[a].tok = id;
        if (plain_text(s, len)) {
            v->plain[v->n_plain++] = id;
            continue;
        }
        /* Same-byte tokens are all plain or all not, so the rest trie's node shares the chain
         * of the full trie's node; its head is set once every id is in (below). */
        trie_path(&v->rest, s, len);
    }
    for (int32_t id = 0; id < v->n_vocab; id++) {
        int len = (int)(v->off[id + 1] - v->off[id]);
        const uint8_t *s = (const uint8_t *)v->bytes + v->off[id];
        if (len == 0 || plain_text(s, len)) continue;
        v->rest.n[trie_path(&v->rest, s, len)].tok = v->all.n[trie_path(&v->all, s, len)].tok;
    }
    *out = v;
    return 0;
}

void eng_gvocab_free(struct eng_gvocab *v)
{
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->tok_next);
    free(v->plain);
    free(v->all.n);
    free(v->rest.n);
    free(v);
}

/* Every stack is inside a free string, between characters. */
static bool in_free_string(const struct eng_grammar *g, const struct gstate *st)
{
    if (st->n == 0) return false;
    for (int i = 0; i < st->n; i++) {
        const struct stk *s = &st->s[i];
        if (s->depth == 0) return false;
        const struct frame *t = &s->f[s->depth - 1];
        if (t->kind != FR_STR || t->b != 0 || g->nodes[t->node].max) return false;
    }
    return true;
}

/* Depth-first walk of trie t from the matcher's state; appends allowed ids. */
static int walk(struct eng_gmatch *m, const struct eng_gvocab *v, const struct trie *t,
                int32_t *ids, int n)
{
    if (m->n_levels < v->max_len + 1) {
        free(m->levels);
        m->n_levels = v->max_len + 1;
        m->levels = ag_calloc((size_t)m->n_levels, sizeof(struct gstate));
        free(m->dfs_node);
        free(m->dfs_depth);
        m->dfs_node = ag_calloc((size_t)m->n_levels * 256, sizeof(int32_t));
        m->dfs_depth = ag_calloc((size_t)m->n_levels * 256, sizeof(int));
    }
    eng__gstate_copy(&m->levels[0], &m->st);
    /* Explicit stack of (node, depth). */
    int32_t *stack_node = m->dfs_node;
    int *stack_depth = m->dfs_depth;
    int sp = 0;
    for (int32_t c = t->n[0].child; c >= 0; c = t->n[c].sibling) {
        stack_node[sp] = c;
        stack_depth[sp++] = 1;
    }
    while (sp > 0) {
        int32_t node = stack_node[--sp];
        int d = stack_depth[sp];
        struct gstate *st = &m->levels[d];
        eng__gstate_advance(m->g, &m->levels[d - 1], t->n[node].byte, st);
        if (st->n == 0) continue;
        for (int32_t id = t->n[node].tok; id >= 0; id = v->tok_next[id]) ids[n++] = id;
        if (d >= v->max_len) continue;
        for (int32_t c = t->n[node].child; c >= 0; c = t->n[c].sibling) {
            stack_node[sp] = c;
            stack_depth[sp++] = d + 1;
        }
    }
    return n;
}

int eng_gmatch_allowed(const struct eng_gmatch *cm, const struct eng_gvocab *v, int32_t *ids)
{
    struct eng_gmatch *m = (struct eng_gmatch *)cm; /* scratch only */
    if (in_free_string(m->g, &m->st)) {
        memcpy(ids, v->plain, (size_t)v->n_plain * sizeof(int32_t));
        return walk(m, v, &v->rest, ids, v->n_plain);
    }
    return walk(m, v, &v->all, ids, 0);
}

const char *eng_gvocab_token(const struct eng_gvocab *v, int32_t id, size_t *len)
{
    *len = 0;
    if (id < 0 || id >= v->n_vocab || v->off[id + 1] == v->off[id]) return NULL;
    *len = (size_t)(v->off[id + 1] - v->off[id]);
    return v->bytes + v->off[id];
}

bool eng_gmatch_accept_token(struct eng_gmatch *m, const struct eng_gvocab *v, int32_t id)
{
    if (id < 0 || id >= v->n_vocab) return false;
    int64_t a = v->off[id], b = v->off[id + 1];
    if (b == a) return false;
    return eng_gmatch_accept(m, v->bytes + a, (size_t)(b - a));
}
