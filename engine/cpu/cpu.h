/*
 * cpu.h - which SIMD level the CPU kernels use (cpu.c).
 *
 * Every kernel with a SIMD variant also has a portable one that gives the same bits (or, where
 * the comment says so, agrees within rounding); the level only decides which one runs. It is
 * the best level this CPU and OS support, capped by the environment variable AGENTD_CPU
 * ("scalar", "avx2" or "avx512"), read once per process: tests and benchmarks use it to run
 * every path on one machine. An unknown value is ignored with a warning on stderr.
 */
#ifndef ENG_CPU_H
#define ENG_CPU_H

enum eng_cpu_level {
    ENG_CPU_SCALAR = 0, /* portable C */
    ENG_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    ENG_CPU_AVX512 = 2, /* the above + AVX-512 F/BW/VL/DQ + VNNI */
};

/* The level kernels use (supported level, capped by AGENTD_CPU). */
enum eng_cpu_level eng_cpu_level(void);
/* The best level this CPU and OS run, ignoring AGENTD_CPU. */
enum eng_cpu_level eng_cpu_level_supported(void);
/* "scalar", "avx2", "avx512". */
const char *eng_cpu_level_name(enum eng_cpu_level level);

#endif
