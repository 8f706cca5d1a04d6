/*
 * kvcache.c - page ownership of the paged KV store: free list, reference counts, the prefix
 * hash table and the LRU list of cached pages (see kvcache.h).
 *
 * The hash table is open addressing with linear probing over page ids, twice as many slots as
 * pages, deletion by backward shift (no tombstones). The LRU list is doubly linked through the
 * page records; the free list is a stack of ids.
 */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#define NONE (-1)

struct page {
    int32_t refs;    /* sequences holding the page */
    bool registered; /* in the hash table under hash */
    uint64_t hash;   /* chain hash of the prefix ending with this page */
    uint64_t parent; /* chain hash of the prefix before it */
    int32_t prev;    /* LRU neighbours while cached */
    int32_t next;
};

struct eng_kvc {
    int n_pages;
    int shift;
    int page_size;
    struct page *pg; /* (n_pages) */
    int32_t *tokens; /* (n_pages, page_size) the tokens of registered pages */
    int32_t *free;   /* stack of free ids */
    int n_free;
    int32_t lru_head; /* least recently used cached page */
    int32_t lru_tail;
    int n_cached;
    int32_t *table; /* (table_size) page ids or NONE */
    uint32_t table_mask;
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The chain hash of a page holding tokens[0..n) after the prefix hashed parent. */
static uint64_t chain_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < n; i++) h = mix64(h + (uint32_t)tokens[i] + 0x9e3779b97f4a7c15ULL);
    return h ? h : 1;
}

static uint32_t slot_of(const struct eng_kvc *c, uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32)) & c->table_mask;
}

/* The page registered under h, or NONE. */
static int32_t table_find(const struct eng_kvc *c, uint64_t h)
{
    for (uint32_t i = slot_of(c, h);; i = (i + 1) & c->table_mask) {
        int32_t id = c->table[i];
        if (id == NONE) return NONE;
        if (c->pg[id].hash == h) return id;
    }
}

static void table_insert(struct eng_kvc *c, int32_t id)
{
    uint32_t i = slot_of(c, c->pg[id].hash);
    while (c->table[i] != NONE) i = (i + 1) & c->table_mask;
    c->table[i] = id;
    c->pg[id].registered = true;
}

/* Removes page id, shifting later entries of its probe run back into the hole. */
static void table_remove(struct eng_kvc *c, int32_t id)
{
    uint32_t i = slot_of(c, c->pg[id].hash);
    while (c->table[i] != id) i = (i + 1) & c->table_mask;
    c->pg[id].registered = false;
    for (uint32_t j = (i + 1) & c->table_mask;; j = (j + 1) & c->table_mask) {
        int32_t e = c->table[j];
        if (e == NONE) break;
        uint32_t home = slot_of(c, c->pg[e].hash);
        /* e may move to the hole at i when its home is not in (i, j] cyclically. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        c->table[i] = e;
        i = j;
    }
    c->table[i] = NONE;
}

/* ---- LRU ---- */

static void lru_unlink(struct eng_kvc *c, int32_t id)
{
    struct page *p = &c->pg[id];
    if (p->prev != NONE)
        c->pg[p->prev].next = p->next;
    else
        c->lru_head = p->next;
    if (p->next != NONE)
        c->pg[p->next].prev = p->prev;
    else
        c->lru_tail = p->prev;
    p->prev = p->next = NONE;
    c->n_cached--;
}

static void lru_push(struct eng_kvc *c, int32_t id)
{
    struct page *p = &c->pg[id];
    p->prev = c->lru_tail;
    p->next = NONE;
    if (c->lru_tail != NONE)
        c->pg[c->lru_tail].next = id;
    else
        c->lru_head = id;
    c->lru_tail = id;
    c->n_cached++;
}

/* ---- API ---- */

int eng_kvc_new(int n_pages, int page_shift, struct eng_kvc **out, struct ag_err *err)
{
    *out = NULL;
    if (n_pages < 1 || n_pages > (1 << 24) || page_shift < 0 || page_shift > 12)
        return ag_err_set(err, AG_EINVAL, "KV cache: %d pages of 2^%d positions", n_pages,
                          page_shift);
    struct eng_kvc *c = ag_calloc(1, sizeof(*c));
    c->n_pages = n_pages;
    c->shift = page_shift;
    c->page_size = 1 << page_shift;
    c->pg = ag_calloc((size_t)n_pages, sizeof(*c->pg));
    c->tokens = ag_calloc((size_t)n_pages << page_shift, sizeof(int32_t));
    c->free = ag_calloc((size_t)n_pages, sizeof(int32_t));
    uint32_t size = 2;
    while (size < 2u * (uint32_t)n_pages) size <<= 1;
    c->table = ag_calloc(size, sizeof(int32_t));
    c->table_mask = size - 1;
    for (uint32_t i = 0; i < size; i++) c->table[i] = NONE;
    for (int i = 0; i < n_pages; i++) {
        c->pg[i].prev = c->pg[i].next = NONE;
        c->free[i] = n_pages - 1 - i; /* page 0 comes off the stack first */
    }
    c->n_free = n_pages;
    c->lru_head = c->lru_tail = NONE;
    *out = c;
    return 0;
}

void eng_kvc_free(struct eng_kvc *c)
{
    if (!c) return;
    free(c->pg);
    free(c->tokens);
    free(c->free);
    free(c->table);
    free(c);
}

int eng_kvc_page_size(const struct eng_kvc *c)
{
    return c->page_size;
}

int eng_kvc_n_pages(const struct eng_kvc *c)
{
    return c->n_pages;
}

int eng_kvc_available(const struct eng_kvc *c)
{
    return c->n_free + c->n_cached;
}

int eng_kvc_held(const struct eng_kvc *c)
{
    return c->n_pages - c->n_free - c->n_cached;
}

int eng_kvc_cached(const struct eng_kvc *c)
{
    return c->n_cached;
}

int eng_kvc_pages_for(const struct eng_kvc *c, int n_pos)
{
    return n_pos <= 0 ? 0 : ((n_pos - 1) >> c->shift) + 1;
}

static void seq_push(struct eng_kvseq *seq, int32_t id)
{
    if (seq->n_pages == seq->cap) {
        seq->cap = seq->cap ? 2 * seq->cap : 16;
        seq->pages = ag_realloc(seq->pages, (size_t)seq->cap * sizeof(int32_t));
    }
    seq->pages[seq->n_pages++] = id;
}

int eng_kvc_match(struct eng_kvc *c, struct eng_kvseq *seq, const int32_t *tokens, int n)
{
    const int ps = c->page_size;
    uint64_t h = 0;
    int i = 0;
    for (; (i + 1) * ps <= n - 1; i++) {
        const int32_t *t = tokens + (size_t)i * ps;
        uint64_t hi = chain_hash(h, t, ps);
        int32_t id = table_find(c, hi);
        if (id == NONE || c->pg[id].parent != h ||
            memcmp(c->tokens + ((size_t)id << c->shift), t, (size_t)ps * sizeof(int32_t)) != 0)
            break;
        if (c->pg[id].refs++ == 0) lru_unlink(c, id);
        seq_push(seq, id);
        h = hi;
    }
    seq->n_registered = i;
    seq->hash = h;
    return i * ps;
}

int eng_kvc_grow(struct eng_kvc *c, struct eng_kvseq *seq, int n_pos, struct ag_err *err)
{
    int need = eng_kvc_pages_for(c, n_pos) - seq->n_pages;
    if (need <= 0) return 0;
    if (need > eng_kvc_available(c))
        return ag_err_set(err, AG_EQUOTA,
                          "KV cache full: %d more pages of %d positions needed, %d available", need,
                          c->page_size, eng_kvc_available(c));
    for (int k = 0; k < need; k++) {
        int32_t id;
        if (c->n_free > 0) {
            id = c->free[--c->n_free];
        } else { /* evict the least recently used cached prefix page */
            id = c->lru_head;
            lru_unlink(c, id);
            table_remove(c, id);
        }
        c->pg[id].refs = 1;
        c->pg[id].registered = false;
        seq_push(seq, id);
    }
    return 0;
}

void eng_kvc_commit(struct eng_kvc *c, struct eng_kvseq *seq, const int32_t *tokens, int n_done)
{
    const int ps = c->page_size;
    for (int i = seq->n_registered; (i + 1) * ps <= n_done && i < seq->n_pages; i++) {
        const int32_t *t = tokens + (size_t)i * ps;
        uint64_t hi = chain_hash(seq->hash, t, ps);
        int32_t id = seq->pages[i];
        /* The first page computed for a prefix is the one shared; a twin computed at the same
         * time stays private and is freed with its sequence. */
        if (table_find(c, hi) == NONE && !c->pg[id].registered) {
            c->pg[id].hash = hi;
            c->pg[id].parent = seq->hash;
            memcpy(c->tokens + ((size_t)id << c->shift), t, (size_t)ps * sizeof(int32_t));
            table_insert(c, id);
        }
        seq->hash = hi;
        seq->n_registered = i + 1;
    }
}

void eng_kvc_release(struct eng_kvc *c, struct eng_kvseq *seq)
{
    /* Last pages first: the cache evicts a prefix's tail before its head. */
    for (int i = seq->n_pages - 1; i >= 0; i--) {
        int32_t id = seq->pages[i];
        if (--c->pg[id].refs > 0) continue;
        if (c->pg[id].registered)
            lru_push(c, id);
        else
            c->free[c->n_free++] = id;
    }
    free(seq->pages);
    memset(seq, 0, sizeof(*seq));
}

void eng_kvc_clear_cache(struct eng_kvc *c)
{
    while (c->lru_head != NONE) {
        int32_t id = c->lru_head;
        lru_unlink(c, id);
        table_remove(c, id);
        c->free[c->n_free++] = id;
    }
}
