/*
 * mm_cpu.h - the CPU backend's matmul kernels (mm_cpu.c): a block of weight rows times a block
 * of quantized activation rows in one call, and the activation quantizers that feed them.
 *
 * Why a kernel per block instead of a dot product per (row, token): a single dot unpacks its
 * weight block, converts both scales and reduces its lanes for one output. A block kernel
 * unpacks each weight block once for many tokens, loads each activation block once for many
 * rows, and on AVX-512 VNNI (vpdpbusd) forms the integer sums of two tokens or two rows in one
 * instruction. Prefill, where a matmul sees up to ENG_MODEL_MAX_BATCH tokens, gains the most.
 *
 * Contract: every output equals, bit for bit, what eng_qtype_cpu(type)->vec_dot returns for that
 * weight row and activation row (ggml's order: eight float lanes per output, each lane
 * accumulating fmaf(d_w * d_a, lane sum, lane) block after block, then hsum_float_8, then for
 * Q4_1 the running sum of m_w * s_a). Only the integer lane sums are formed another way, and
 * those are exact. The quantizers write the same bytes as eng_qtype_cpu(type)->quantize_act.
 * tests/test_mm_cpu.c checks both at every level against the portable single-row kernels.
 */
#ifndef ENG_MM_CPU_H
#define ENG_MM_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"
#include "../quant.h"

/* y[t * y_stride + r] = dot(weight row r, activation row t) for r < n_rows, t < n_tok. w holds
 * n_rows rows of w_row_bytes bytes, act n_tok rows of act_row_bytes bytes in the weight's
 * activation format (Q8_1 for Q4_1, Q8_0 for Q8_0), each n_cols values (a multiple of 32). */
typedef void (*eng_mm_fn)(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                          const void *act, size_t act_row_bytes, int n_tok, float *y,
                          int64_t y_stride);

/* The kernels of one weight type at one SIMD level. */
struct eng_mm_kernels {
    eng_quantize_fn quantize_act; /* f32 rows to the activation format: the same bytes as
                                     eng_qtype_cpu(type)->quantize_act */
    eng_mm_fn mm;                 /* the block kernel above */
};

/* The kernels for weight type `type` (ENG_GGML_Q4_1, ENG_GGML_Q8_0) at `level`, or NULL for
 * another type. A level above what this build or CPU supports gives the best supported one.
 * The CPU backend passes eng_cpu_level(); tests pass every level. */
const struct eng_mm_kernels *eng__mm_kernels(int type, enum eng_cpu_level level);

#endif
