/*
 * mm_q6_k.h - the AVX-512 VNNI block kernel for Q6_K weights (mm_q6_k.c).
 */
#ifndef ENG_MM_Q6_K_H
#define ENG_MM_Q6_K_H

#include "mm_cpu.h"

/* The kernel at `level`, with quantize_act (the Q6_K table entry's Q8_K quantizer, which the
 * caller passes so that matrices sharing it share one quantized input), or NULL below AVX-512
 * VNNI. Every output equals eng_qtype_cpu(ENG_GGML_Q6_K)->vec_dot bit for bit. */
const struct eng_mm_kernels *eng__mm_kernels_q6_k(enum eng_cpu_level level,
                                                  eng_quantize_fn quantize_act);

#endif
