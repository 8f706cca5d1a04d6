/*
 * cpu.c - SIMD level detection (CPUID and XGETBV, asked directly because compilers disagree on
 * __builtin_cpu_supports' feature names) and the AGENTD_CPU cap.
 */
#include "cpu.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(ENG_NO_SIMD)
#include <cpuid.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

static enum eng_cpu_level detect(void)
{
#if HAVE_X86
    unsigned a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return ENG_CPU_SCALAR;
    const unsigned need1 =
        (1u << 12) | (1u << 27) | (1u << 28) | (1u << 29); /* FMA OSXSAVE AVX F16C */
    if ((c & need1) != need1) return ENG_CPU_SCALAR;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return ENG_CPU_SCALAR; /* XMM and YMM state saved by the OS */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return ENG_CPU_SCALAR;
    if (!(b & (1u << 5))) return ENG_CPU_SCALAR; /* AVX2 */
    /* AVX-512 F (b16), DQ (b17), BW (b30), VL (b31), VNNI (c11), and opmask/ZMM state saved. */
    const unsigned need7b = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    if ((b & need7b) == need7b && (c & (1u << 11)) && (lo & 0xe0) == 0xe0) return ENG_CPU_AVX512;
    return ENG_CPU_AVX2;
#else
    return ENG_CPU_SCALAR;
#endif
}

enum eng_cpu_level eng_cpu_level_supported(void)
{
    static int cached = -1; /* a race stores the same value twice */
    if (cached < 0) cached = (int)detect();
    return (enum eng_cpu_level)cached;
}

const char *eng_cpu_level_name(enum eng_cpu_level level)
{
    switch (level) {
    case ENG_CPU_AVX2:
        return "avx2";
    case ENG_CPU_AVX512:
        return "avx512";
    default:
        return "scalar";
    }
}

enum eng_cpu_level eng_cpu_level(void)
{
    static int cached = -1;
    if (cached >= 0) return (enum eng_cpu_level)cached;
    enum eng_cpu_level level = eng_cpu_level_supported();
    const char *env = getenv("AGENTD_CPU");
    if (env && *env) {
        enum eng_cpu_level cap = level;
        if (strcmp(env, "scalar") == 0)
            cap = ENG_CPU_SCALAR;
        else if (strcmp(env, "avx2") == 0)
            cap = ENG_CPU_AVX2;
        else if (strcmp(env, "avx512") == 0)
            cap = ENG_CPU_AVX512;
        else
            fprintf(stderr, "agentd: AGENTD_CPU=%s is not scalar, avx2 or avx512; ignored\n", env);
        if (cap < level) level = cap;
    }
    cached = (int)level;
    return level;
}
