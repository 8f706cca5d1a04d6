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

#endif
