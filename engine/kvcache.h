/*
 * kvcache.h - who owns which page of the engine service's paged KV store (model.h, struct
 * eng_kv_store): per-sequence block tables, reference counts, prefix sharing and eviction.
 *
 * The store is n_pages pages of page_size positions. A sequence's block table lists its pages in
 * position order. A page is in one of three states:
 *   - free: on the free list;
 *   - held: referenced by one or more sequences (refs > 0);
 *   - cached: no sequence holds it, but its contents are registered under a prefix hash and kept
 *     on an LRU list until the space is needed.
 *
 * Prefix sharing (after vLLM's automatic prefix caching): a page whose page_size positions are
 * all computed is registered under hash(hash of the page before it, its tokens), so the hash
 * names the whole prefix up to the page's end, not only its own tokens. A new sequence walks its
 * prompt page by page, looks each chain hash up and takes a reference on every page it finds (the
 * tokens are compared too, so a hash collision cannot share a wrong page), up to the last full
 * page before its last prompt token: at least one token is always left to compute, because the
 * logits after the prompt are needed. Registered pages are full and never written again, so
 * sharing needs no copy-on-write: a sequence only writes positions after its shared pages, into
 * pages it holds alone.
 *
 * Allocation takes the free list first, then evicts the least recently used cached page
 * (unregistering it). Admission control is the caller's: eng_kvc_available() tells how many
 * pages could be had now.
 *
 * Not thread-safe: the engine thread owns it.
 */
#ifndef ENG_KVCACHE_H
#define ENG_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "../base/base.h"

struct eng_kvc; /* opaque */

/* One sequence's pages. Zero-initialize; eng_kvc_release() returns the pages and frees. */
struct eng_kvseq {
    int32_t *pages;   /* block table: n_pages page ids, position p in pages[p / page_size] */
    int n_pages;      /* pages held */
    int cap;          /* entries allocated in pages */
    int n_registered; /* pages[0..n_registered) are registered (full and shared-able) */
    uint64_t hash;    /* chain hash of pages[0..n_registered) */
};

/* n_pages pages of 2^page_shift positions each. Errors: AG_EINVAL. */
int eng_kvc_new(int n_pages, int page_shift, struct eng_kvc **out, struct ag_err *err);
void eng_kvc_free(struct eng_kvc *c); /* NULL is fine; every sequence must be released first */

int eng_kvc_page_size(const struct eng_kvc *c);
int eng_kvc_n_pages(const struct eng_kvc *c);
int eng_kvc_available(const struct eng_kvc *c); /* free + cached pages */
int eng_kvc_held(const struct eng_kvc *c);      /* pages referenced by sequences */
int eng_kvc_cached(const struct eng_kvc *c);    /* pages kept only for prefix sharing */
/* Pages needed to hold positions 0..n_pos-1. */
int eng_kvc_pages_for(const struct eng_kvc *c, int n_pos);

/*
 * Shares the cached pages that hold a prefix of tokens[0..n) with seq (which must hold no pages
 * yet) and returns how many positions they cover: a multiple of the page size, at most n - 1
 * (0 when nothing matches).
 */
int eng_kvc_match(struct eng_kvc *c, struct eng_kvseq *seq, const int32_t *tokens, int n);
/* Makes seq hold pages for positions 0..n_pos-1, allocating what it lacks. AG_EQUOTA (err
 * says how many pages were needed and available) when there are not enough: nothing changes. */
int eng_kvc_grow(struct eng_kvc *c, struct eng_kvseq *seq, int n_pos, struct ag_err *err);
/* Registers the pages of seq that tokens[0..n_done) now fill completely (the positions computed
 * so far), so that later sequences can share them. tokens are the sequence's from position 0. */
void eng_kvc_commit(struct eng_kvc *c, struct eng_kvseq *seq, const int32_t *tokens, int n_done);
/* Drops seq's references: registered pages go to the cache, the others to the free list. seq
 * is left zeroed. */
void eng_kvc_release(struct eng_kvc *c, struct eng_kvseq *seq);
/* Forgets every cached page (they become free). */
void eng_kvc_clear_cache(struct eng_kvc *c);

#endif
