/*
 * mm_packed.h - weights repacked 16 rows at a time, so that one 512-bit VNNI instruction
 * multiplies 4 weights of 16 rows by 4 activation bytes broadcast to every lane.
 *
 * Q4_1 and Q8_0 (batched decoding in the engine service, serve.c): the block kernels of
 * mm_cpu.c reproduce ggml's dot product bit for bit, one float conversion and fused multiply-add
 * per 32-value block and (row, token) pair; with 8 tokens that arithmetic, not memory, bounds a
 * step. Packed, a block costs 8 VNNI instructions, one conversion and two fused multiply-adds
 * per 16 rows and token. Each (row, token) output is computed the same way whatever the number
 * of tokens, so the service's sequences stay independent of each other (row invariance); these
 * are not llama.cpp's bits (a different summation order, equal up to float rounding), so they
 * are used only when the backend is row-invariant.
 *
 * Q5_0 (Gemma 3's main type): here the packed kernel keeps ggml's eight float lanes per output,
 * one lane per 32-bit element group of the 16 rows, so its outputs are the dot product's bits
 * for any number of tokens, and every Q5_0 matmul takes it (prompts, decoding, the service).
 *
 * Each packed copy has the size of the original. Only on CPUs with AVX-512 VNNI.
 */
#ifndef ENG_MM_PACKED_H
#define ENG_MM_PACKED_H

#include <stddef.h>
#include <stdint.h>

#define ENG_PACK_ROWS 16

/* Packs one block of row r (0..15) of a group into the group's block at out. */
typedef void (*eng_pack_fn)(unsigned char *out, const void *src_block, int r);
/* Runs fn over every block of every row of n_rows rows (a multiple of 16) of n_blocks blocks
 * of src_bytes, filling group blocks of group_block_bytes one after the other at dst. */
void eng__pack_each(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_blocks,
                    size_t src_bytes, size_t group_block_bytes, eng_pack_fn fn);

/* Bytes of the packed copy of a Q4_1 matrix (n_rows a multiple of 16, n_cols of 32). */
size_t eng__pack_q4_1_bytes(int64_t n_rows, int64_t n_cols);
/* Fills dst (eng__pack_q4_1_bytes) from the Q4_1 rows at w (row_bytes apart). */
void eng__pack_q4_1(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols);
/* y[t * y_stride + r] = row r . token t for rows 0..n_rows-1 (a multiple of 16) of the packed
 * matrix starting at p (its first row a multiple of 16) and n_tok Q8_1 activation rows
 * act_row_bytes apart. AVX-512 VNNI only: callers check eng__pack_available(). */
void eng__mm_q4_1_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride);
/* The same for Q8_0 (rows of at most ENG_PACK_MAX_BLOCKS blocks), Q8_0 activations. */
#define ENG_PACK_MAX_BLOCKS 512
size_t eng__pack_q8_0_bytes(int64_t n_rows, int64_t n_cols);
void eng__pack_q8_0(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols);
void eng__mm_q8_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride);
/* The same for Q5_0 (rows of at most ENG_PACK_MAX_BLOCKS blocks), Q8_0 activations; the packed
 * copy has the size of the original. */
size_t eng__pack_q5_0_bytes(int64_t n_rows, int64_t n_cols);
void eng__pack_q5_0(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols);
void eng__mm_q5_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride);
/* Row `row` of a packed Q8_0 matrix of n_cols columns, dequantized into y as the original row's
 * dequantize would (d * q): the embedding lookup of a model whose tied output matrix is packed. */
void eng__unpack_q8_0_row(const void *p, int64_t n_cols, int64_t row, float *y);
/* Whether this CPU runs the packed kernel (AVX-512 VNNI, not capped by AGENTD_CPU). */
int eng__pack_available(void);

#endif
