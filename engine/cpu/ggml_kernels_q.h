/*
 * ggml_kernels_q.h - llama.cpp's x86 CPU arithmetic, bit for bit, for the weight types
 * ggml_kernels.h does not cover: Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (what Gemma 3's
 * Q4_K_M files use besides Q8_0), ggml's Q8_K activation quantizer, and GEGLU
 * (ggml_kernels_q.c).
 *
 * Why: see ggml_kernels.h. The target is the same build (llama.cpp b9749, CPU backend, GCC 12
 * -O3 -march=native on an AVX-512 VNNI machine). Its vec_dot functions are the __AVX2__
 * branches of ggml/src/ggml-cpu/arch/x86/quants.c (there are no AVX-512 branches; for the
 * 32-value formats VNNI only replaces maddubs+madd by vpdpbusd, which gives the same integers).
 * GCC contracts a * b + c into one fused multiply-add in that build (GNU C mode, FMA enabled),
 * and one such contraction changes a result: the mins term of Q5_K. Each kernel's comment
 * gives the float operations in order. For batches of two or more tokens llama.cpp sends Q4_0,
 * Q5_0 and Q8_0 through llamafile's tinyBLAS instead; it computes each output in the same
 * order as vec_dot (checked against the library for batches of 2 to 32 tokens).
 *
 * Repacking: llama.cpp does not run ggml_vec_dot_q4_0_q8_0 / ggml_vec_dot_q4_K_q8_K for most
 * Q4_0 and Q4_K tensors on this machine. Its CPU_REPACK buffer (on by default) interleaves
 * every Q4_0 or Q4_K matrix whose row count is a multiple of 8 (all of Gemma 3's Q4_K ones) and
 * multiplies it in arch/x86/repack.cpp, which sums in other orders: ggml_gemv_*_8x8 for a
 * batch's last n_tokens % 4 tokens (all of a one-token decode step), ggml_gemm_*_8x8 for the
 * others. For Q4_0 both have one order (eng__vec_dot_q4_0_q8_0_repack_ggml). For Q4_K the gemm
 * one differs and its activations come from ggml_quantize_mat_q8_K_4x8 instead of
 * quantize_row_q8_K. eng__qtype_cpu_q's Q4_0 and Q4_K entries use the gemv orders; the plain
 * vec_dot orders (what llama.cpp runs for a matrix of another row count, or with --no-repack)
 * and Q4_K's gemm order and quantizer are exported beside them.
 *
 * Every dot product exists as portable C and as intrinsics (AVX2+FMA+F16C, plus AVX-512
 * VNNI+VL for the 32-value formats), picked once by eng_cpu_level(); all give the same bits.
 */
#ifndef ENG_GGML_KERNELS_Q_H
#define ENG_GGML_KERNELS_Q_H

#include <stdint.h>

#include "cpu.h"
#include "../quant.h"

/* The ggml-order kernels for Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weights: reference
 * (de)quantizers, ggml's activation quantizer for act_type, the dispatched ggml-order dot.
 * NULL for every other type. */
const struct eng_qtype *eng__qtype_cpu_q(int type);
/* The same for the tokens llama.cpp multiplies four at a time: in a matmul of n_tok >= 4
 * tokens, tokens 0 .. n_tok - n_tok % 4 - 1 (ggml_gemm_*; the rest go through ggml_gemv_*).
 * Differs from eng__qtype_cpu_q only for Q4_K (gemm order and its quantizer). */
const struct eng_qtype *eng__qtype_cpu_q_gemm(int type);

/* quantize_row_q8_K as llama.cpp runs it on x86 (it is quantize_row_q8_K_ref, scalar, in
 * ggml-base): per block, max = the first value of largest magnitude, iscale = -127 / max,
 * q = round-half-even(iscale * x) (rounded product, then ggml's nearest_int), d = 1 / iscale.
 * Same layout and meaning as quant.h's Q8_K (x = d * q, bsums = sums of 16 codes), but d is
 * negative and the codes negated whenever max > 0, and d is 1 / (-127 / max) rather than
 * amax / 127, so it may differ from eng__quantize_row_q8_K's in the last bit. An all-zero
 * block gets d = 0 and zero codes and sums (ggml leaves its sums unwritten; d = 0 makes them
 * irrelevant). */
void eng__quantize_row_q8_K_ggml(const float *src, void *dst, int64_t n);
/* ggml_quantize_mat_q8_K_4x8's rule (AVX2), row by row: as above except that max = +amax
 * whenever +amax occurs in the block (quantize_row_q8_K takes the sign of the first value of
 * largest magnitude; the two differ only when +amax and -amax both occur, -amax first). */
void eng__quantize_row_q8_K_gemm_ggml(const float *src, void *dst, int64_t n);

/* ggml_vec_dot_q4_0_q8_0 (AVX2): per block d = f16(w.d) * f16(a.d); the 32 products of the
 * signed codes (value e at byte e: low nibbles, then high ones) summed four by four into eight
 * int32 lanes; lane j: acc[j] = fmaf(d, lane, acc[j]); the result is hsum_float_8(acc) =
 * ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
float eng__vec_dot_q4_0_q8_0_ggml(int n, const void *w_row, const void *act_row);
/* ggml_gemv_q4_0_8x8_q8_0 / ggml_gemm_q4_0_8x8_q8_0 (AVX2 / AVX-512, the same per output):
 * per block acc = fmaf(exact integer dot, f16(w.d) * f16(a.d), acc). */
float eng__vec_dot_q4_0_q8_0_repack_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q5_0_q8_0 (AVX2): as Q4_0 with codes q - 16. */
float eng__vec_dot_q5_0_q8_0_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q5_1_q8_1 (AVX2): lanes of the unsigned codes; acc[j] = fmaf(lane, f16(w.d) *
 * a.d, acc[j]); summs += f16(w.m) * a.s (exact products); hsum_float_8(acc) + summs. Takes
 * eng__quantize_row_q8_1_ggml's activations (d and s rounded to f16). */
float eng__vec_dot_q5_1_q8_1_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q4_K_q8_K (AVX2): per super-block d = a.d * f16(w.d), dmin = -a.d *
 * f16(w.dmin); four int32 lanes k of m[2k] * bs[2k] + m[2k+1] * bs[2k+1] (bs[s] = the two
 * bsums of sub-block s) go into acc_m[k] = fmaf(dmin, lane, acc_m[k]); eight int32 lanes j of
 * sum over sub-blocks s of sc[s] * (products 4j..4j+3 of s) go into acc[j] = fmaf(d, lane,
 * acc[j]); result hsum_float_8(acc) + ((acc_m0 + acc_m2) + (acc_m1 + acc_m3)). */
float eng__vec_dot_q4_K_q8_K_ggml(int n, const void *w_row, const void *act_row);
/* ggml_gemv_q4_K_8x8_q8_K (AVX2) for one output: per super-block the exact integers I = sum of
 * sc[s] * (products of sub-block s) and M = sum of m[s] * bs[s]; acc = fmaf(I, f16(w.d) * a.d,
 * acc); accm = fmaf(M, f16(w.dmin) * a.d, accm); result acc - accm. */
float eng__vec_dot_q4_K_q8_K_repack_ggml(int n, const void *w_row, const void *act_row);
/* ggml_gemm_q4_K_8x8_q8_K (its AVX-512 and AVX2 paths agree) for one output: as the gemv order
 * but with one pair of fused multiply-adds per 64 values (sub-blocks 2p and 2p + 1) instead of
 * per super-block. Takes eng__quantize_row_q8_K_gemm_ggml's activations. */
float eng__vec_dot_q4_K_q8_K_gemm_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q5_K_q8_K (AVX2): lanes as Q4_K with 5-bit codes; the mins term is one integer
 * per super-block, summs = fmaf(dmin, that, summs) (GCC's contraction of summs += dmin * x);
 * result hsum_float_8(acc) + summs. */
float eng__vec_dot_q5_K_q8_K_ggml(int n, const void *w_row, const void *act_row);
/* ggml_vec_dot_q6_K_q8_K (AVX2): d = a.d * f16(w.d); eight int32 lanes j, each the sum over
 * the eight 32-value chunks c of sc[2c + j / 4] * (products 4j..4j+3 of the unsigned 6-bit
 * codes), minus 32 * (bsums[2j] * sc[2j] + bsums[2j+1] * sc[2j+1]); acc[j] = fmaf(d, lane,
 * acc[j]); result hsum_float_8(acc). */
float eng__vec_dot_q6_K_q8_K_ggml(int n, const void *w_row, const void *act_row);

/* The dot products above, for tests: each kernel as it runs at a given level (the portable
 * one at ENG_CPU_SCALAR; where a kernel has no variant of its own for a level, the next lower
 * one). The caller must not ask for more than eng_cpu_level_supported(). */
enum eng__qdot {
    ENG_QDOT_Q4_0,
    ENG_QDOT_Q4_0_REPACK,
    ENG_QDOT_Q5_0,
    ENG_QDOT_Q5_1,
    ENG_QDOT_Q4_K,
    ENG_QDOT_Q4_K_REPACK,
    ENG_QDOT_Q4_K_GEMM,
    ENG_QDOT_Q5_K,
    ENG_QDOT_Q6_K,
    ENG_QDOT_COUNT
};
eng_vec_dot_fn eng__qdot_variant(enum eng__qdot kernel, enum eng_cpu_level level);

/* ggml_vec_gelu_f32 with GGML_GELU_FP16 (ggml's default): 0 for x <= -10, x for x >= 10, else
 * the f16 table entry of f16(x); entry h = f16(gelu(f32(h))) with gelu(x) = (0.5f * x) * (1 +
 * tanhf((0.7978846f * x) * fmaf(0.044715f * x, x, 1))) as GCC compiles ggml_gelu_f32 (the fused
 * multiply-add is its contraction). f16() is GGML_CPU_FP32_TO_FP16 on x86, a software
 * conversion: round to nearest even, NaN to 0x7e00 with the NaN's sign. tanhf is the C
 * library's, the one part not fixed by this code; glibc 2.36's and a correctly rounded one give
 * the same table. The table is built once, on first use, thread-safely. */
float eng__ggml_gelu(float x);
/* ggml_vec_geglu_f32: y = 0 for g <= -10, g * u for g >= 10, else f32(table[f16(g)]) * u. y may
 * alias g or u. */
void eng__ggml_geglu(int n, float *y, const float *g, const float *u);
/* The 65536-entry table itself (ggml_table_gelu_f16), for tests. */
const uint16_t *eng__ggml_gelu_table(void);

#endif
