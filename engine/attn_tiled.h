/*
 * attn_tiled.h - attention for the rows of a long prompt (struct eng_attn with `tiled`) over an
 * F16 cache, a tile of query vectors at a time (attn_tiled.c).
 *
 * A task takes up to 16 query vectors that share one KV head: the group's query heads of a few
 * consecutive rows. Each key and value row is read and widened to f32 once for all of them, the
 * scores of one key for all 16 queries come out of one joint reduction, and the value sums stay
 * in registers while a block of keys streams through. Float arithmetic with an online softmax
 * over blocks of keys (flash attention); equal to the one-row tiled kernel of ops_cpu.c up to
 * float rounding, not bit for bit. AVX-512 only.
 */
#ifndef ENG_ATTN_TILED_H
#define ENG_ATTN_TILED_H

#include <stdbool.h>
#include <stddef.h>

#include "ops.h"

#define ENG_ATTN_TILE_Q 16 /* query vectors per task */

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

#endif
