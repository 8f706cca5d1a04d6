/*
 * mm_q5_0.h - block matmul kernels for Q5_0 weights (mm_q5_0.c): each weight row unpacked to
 * Q8_0 and run through mm_cpu.c's Q8_0 kernels, which gives the Q5_0 dot's bits.
 */
#ifndef ENG_MM_Q5_0_H
#define ENG_MM_Q5_0_H

#include "ggml_kernels.h"
#include "mm_cpu.h"

/* The kernels at `level` (capped at what the CPU supports): the Q8_0 activation quantizer and
 * the block kernel; every output equals eng_qtype_cpu(ENG_GGML_Q5_0)->vec_dot bit for bit. */
const struct eng_mm_kernels *eng__mm_kernels_q5_0(enum eng_cpu_level level);
/* eng_qtype_cpu(ENG_GGML_Q5_0)->vec_dot. */
float eng_qtype_cpu_q5_0_dot(int n, const void *w_row, const void *act_row);

#endif
