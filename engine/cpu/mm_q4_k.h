/*
 * mm_q4_k.h - the AVX-512 VNNI block kernel for Q4_K weights in llama.cpp's 4-token order
 * (mm_q4_k.c).
 */
#ifndef ENG_MM_Q4_K_H
#define ENG_MM_Q4_K_H

#include "mm_cpu.h"

/* The kernel and its activation quantizer (eng__quantize_row_q8_K_gemm_ggml) at `level`, or
 * NULL below AVX-512 VNNI. Every output equals eng_qtype_cpu_gemm(ENG_GGML_Q4_K, n_rows)'s
 * vec_dot bit for bit. */
const struct eng_mm_kernels *eng__mm_kernels_q4_k_gemm(enum eng_cpu_level level);

/* The same order on a packed copy of the weights, 16 rows per 512-bit product (the layout is
 * in mm_q4_k.c): the scales, mins and nibbles of 16 rows side by side, so that one VNNI
 * instruction multiplies 4 codes of 16 rows by 4 activation bytes broadcast to every lane. Each
 * lane does what the kernel above does for its row, so every output has the same bits for any
 * number of tokens: the kernel serves prompt batches (in the 4-token order) and row-invariant
 * batches alike. About 4 times faster than the kernel above on Gemma 3's shapes. */
size_t eng__pack_q4_k_bytes(int64_t n_rows, int64_t n_cols); /* n_rows % 16 == 0 */
void eng__pack_q4_k(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols);
/* y[t * y_stride + r] for rows 0..n_rows-1 (a multiple of 16) of the packed matrix starting at
 * pw and n_tok Q8_K activation rows (eng__quantize_row_q8_K_gemm_ggml) act_row_bytes apart.
 * AVX-512 VNNI only: callers check eng__pack_available(). */
void eng__mm_q4_k_packed(int n_cols, const void *pw, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride);

#endif
