/*
 * attn_simd.h - AVX-512 attention kernels over an F16 cache (attn_simd.c): the rows of a long
 * prompt (struct eng_attn with `tiled`), a tile of query vectors at a time, and the decode rows
 * of the engine service, the query heads of one KV head at a time.
 *
 * A task takes up to 16 query vectors that share one KV head: the group's query heads of a few
 * consecutive rows. Each key and value row is read and widened to f32 once for all of them, the
 * scores of one key for all 16 queries come out of one joint reduction, and the value sums stay
 * in registers while a block of keys streams through. Float arithmetic with an online softmax
 * over blocks of keys (flash attention); equal to the one-row tiled kernel of ops_cpu.c up to
 * float rounding, not bit for bit. AVX-512 only.
 */
#ifndef ENG_ATTN_SIMD_H
#define ENG_ATTN_SIMD_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#include "../ops.h"

#define ENG_ATTN_TILE_Q 16 /* query vectors per task */

/* Where a row's keys and values live: position p is cache row pages[p >> shift] << shift |
 * p & mask, or row p when pages is NULL. */
struct eng_kv_rows {
    const int32_t *pages;
    int shift;
    int32_t mask;
};

static inline int64_t eng_kv_row(const struct eng_kv_rows *r, int p)
{
    if (!r->pages) return p;
    return ((int64_t)r->pages[p >> r->shift] << r->shift) | (p & r->mask);
}

/* Whether the kernel applies to a: AVX-512 on this CPU (not capped by AGENTD_CPU), an F16
 * cache, every row tiled, head_dim a multiple of 16 up to 256, at most 16 query heads per KV
 * head. */
bool eng__attn_tiled_ok(const struct eng_attn *a);
/* Query rows per task: 16 / (n_head / n_head_kv). */
int eng__attn_tiled_rows(const struct eng_attn *a);
/* Floats of scratch one task needs for heads of head_dim values. */
size_t eng__attn_tiled_scratch(int head_dim);
/* Rows t0..t0+n_rows-1 (n_rows <= eng__attn_tiled_rows(a)) and KV head kvh: writes the
 * outputs of the group's query heads of those rows. Rows of different sequences (row_pages)
 * in one tile are fine. */
void eng__attn_tiled(const struct eng_attn *a, int t0, int n_rows, int kvh, float *scratch);

/* Decode rows: paged rows of the service (row_pos, row_pages), all tiled, F16, 64-value heads,
 * AVX-512, at most ENG_ATTN_ROW_HEADS query heads per KV head. One call takes a row and a run
 * of its KV heads: the keys' cache rows are read once, front to back, for all of them (each
 * key row widened once for the query heads sharing it), with the rows ahead on their way into
 * the cache; the scores of 16 keys come out of one joint reduction and go through ggml's vector
 * expf; then each KV head's values are summed with its query heads' sums in registers. Float
 * arithmetic with a two-pass softmax (not the one-row kernel's bits). */
#define ENG_ATTN_ROW_HEADS 16 /* query heads one call can take */
bool eng__attn_group_ok(const struct eng_attn *a);
size_t eng__attn_group_scratch(int max_kv); /* floats for contexts of up to max_kv keys */
/* KV heads one call can take: as many as fit ENG_ATTN_ROW_HEADS query heads. */
int eng__attn_group_kv_heads(const struct eng_attn *a);
/* Row t, KV heads kvh0..kvh0+nk-1 (nk <= eng__attn_group_kv_heads(a)): writes the outputs of
 * their query heads. */
void eng__attn_group(const struct eng_attn *a, int t, int kvh0, int nk, float *scores);

#endif
