/*
 * ggml_kernels.h - scalar kernels that reproduce llama.cpp's x86 CPU arithmetic bit for bit
 * (ggml_kernels.c), and the quant table the CPU backend's matmul uses.
 *
 * Why: small quantized models are numerically chaotic. An activation is rounded to int8 before
 * every matmul, so a difference in the last bit of a float can move a code by one, and the
 * model amplifies that; on SmolLM2-135M a 1e-7 difference in one matmul output grows to 0.01-0.1
 * in the final log-probabilities, enough to flip greedy choices. Token-for-token agreement with
 * llama.cpp (our oracle) therefore needs the same float operations in the same order, not just
 * the same mathematics. These kernels are that: each comment names the ggml function it follows
 * and the order of its float operations. The integer parts are exact either way; the order only
 * matters for float sums, fused multiply-adds (fmaf here) and f16 roundings.
 *
 * The target is llama.cpp b9749's CPU backend built with -march=native on an AVX-512 machine
 * (what produced the greedy reference files in tests/data): the dot products of the _0 and _1
 * formats and the activation quantizers use its AVX2 code paths (it has no AVX-512 variants of
 * them), F16 vectors and expf its AVX-512 ones.
 *
 * The results equal quant.h's reference kernels up to rounding (tests compare them); they are
 * what a SIMD kernel should reproduce exactly, lane for lane.
 */
#ifndef ENG_GGML_KERNELS_H
#define ENG_GGML_KERNELS_H

#include <stdint.h>

#include "../quant.h"

/* The kernels the CPU backend uses for a weight type: the ggml-order entry where one exists
 * (Q4_1, Q8_0 here; Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K in ggml_kernels_q.c), else
 * eng_qtype_get(type). NULL for an unsupported type. */
const struct eng_qtype *eng_qtype_cpu(int type);
/* The kernels for the tokens of a batch that llama.cpp multiplies four at a time (the first
 * n_tok - n_tok % 4): for a Q4_K matrix of n_rows a multiple of 8 llama.cpp repacks the weights
 * and its 4-token kernel sums in another order (ggml_kernels_q.h); for every other case this
 * is eng_qtype_cpu(type). */
const struct eng_qtype *eng_qtype_cpu_gemm(int type, int64_t n_rows);

/* Q8_1 activations as ggml's quantize_row_q8_1 writes them: codes as quant.h's quantizer, but d
 * and s rounded to f16 (stored in the f32 fields, so any Q8_1 kernel can read them). */
void eng__quantize_row_q8_1_ggml(const float *src, void *dst, int64_t n);
/* ggml_vec_dot_q4_1_q8_1 (AVX2): eight lanes of four products per block, each lane
 * accumulated with fmaf(d_w * d_a, lane, acc), then hsum_float_8, then the offsets' sum. */
float eng__vec_dot_q4_1_q8_1_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q8_0_q8_0 (AVX2): as above without the offset term. */
float eng__vec_dot_q8_0_q8_0_ggml(int n, const void *w_row, const void *act_row);

/* ggml_v_expf (AVX-512): exp(x) by a degree-5 polynomial after range reduction, max error
 * about 1.5 ulp; inf above ~88.7, 0 below ~-103.9. */
float eng__ggml_expf(float x);
/* silu(g) * u for n values as ggml_vec_swiglu_f32 computes it: x / (1 + ggml_v_expf(-x)) for
 * the first n rounded down to 16, the C library's expf for the rest. */
void eng__ggml_swiglu(int n, float *y, const float *g, const float *u);
/* Its portable emulation; eng__ggml_swiglu runs ggml's AVX-512 instructions where the CPU has
 * them (the same bits). */
void eng__ggml_swiglu_portable(int n, float *y, const float *g, const float *u);

/* ggml_vec_dot_f16 (AVX-512): four accumulators of 16 lanes over steps of 64 values, fused
 * multiply-adds, then the reduction tree of GGML_F32x16_REDUCE and GCC's _mm512_reduce_add_ps,
 * then the leftover values in double. */
float eng__ggml_dot_f16(int n, const uint16_t *x, const uint16_t *y);
/* ggml_vec_mad_f16: y = f16(fmaf(x, v, y)) per value. */
void eng__ggml_mad_f16(int n, uint16_t *y, const uint16_t *x, float v);
/* ggml_vec_scale_f16: y = f16(y * v) per value. */
void eng__ggml_scale_f16(int n, uint16_t *y, float v);

/* Plain float helpers of the tiled attention path (no ggml order to reproduce): the dot of n
 * f16 values with n floats, and y += f16 x * v. SIMD where the CPU has it. */
float eng__f16_dot_f32(int n, const uint16_t *x, const float *y);
void eng__f16_axpy_f32(int n, float *y, const uint16_t *x, float v);

/* Each kernel above may run as ggml's own AVX2/F16C code on CPUs that have it (picked once);
 * these are the portable versions, which must give the same bits (tests compare them). */
float eng__vec_dot_q4_1_q8_1_portable(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q8_0_q8_0_portable(int n, const void *w_row, const void *act_row);
float eng__ggml_dot_f16_portable(int n, const uint16_t *x, const uint16_t *y);
void eng__ggml_mad_f16_portable(int n, uint16_t *y, const uint16_t *x, float v);
void eng__ggml_scale_f16_portable(int n, uint16_t *y, float v);

#endif
