/*
 * fp16.h - IEEE binary16 (F16) and bfloat16 (BF16) conversions, exact and branch-light.
 *
 * Model files store norms, embeddings and every block scale in F16 and some whole tensors in
 * BF16, so these run everywhere; they are static inline so a kernel's inner loop pays no call.
 * They do not depend on the F16C instruction set or on the compiler's _Float16, so every build
 * and every CPU gives the same bits (tests/test_quant.c checks them against _Float16 where the
 * compiler has it, and against numpy through the fixture file).
 *
 * Semantics, all without floating-point exceptions mattering:
 *   F16 -> F32   exact for every input: zeros, subnormals, normals, infinities, NaN payloads kept.
 *   F32 -> F16   round to nearest, ties to even; values from 65520 up become infinity; results
 *                below the smallest normal become correctly rounded subnormals or zero; NaN stays
 *                NaN with the quiet bit set and the top payload bits kept (what F16C does).
 *   BF16 -> F32  exact (BF16 is the top half of an F32).
 *   F32 -> BF16  round to nearest, ties to even; NaN becomes a quiet NaN (ggml's rule, so files
 *                we write match llama.cpp's converter bit for bit).
 */
#ifndef ENG_FP16_H
#define ENG_FP16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t eng__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float eng__bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline float eng_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;

    if (exp == 0x1f) return eng__bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (exp != 0) return eng__bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return eng__bits_f32(sign);
    /* Subnormal: man * 2^-24, exact in F32 because man has at most 10 significant bits. */
    float mag = (float)man * 0x1p-24f;
    return eng__bits_f32(sign | eng__f32_bits(mag));
}

static inline uint16_t eng_fp32_to_fp16(float f)
{
    uint32_t x = eng__f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t e = (x >> 23) & 0xffu; /* biased F32 exponent */
    uint32_t m = x & 0x7fffffu;

    if (e == 0xff) /* infinity, or NaN forced quiet */
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u | (m >> 13) : 0u));
    if (e >= 143) return (uint16_t)(sign | 0x7c00u); /* >= 2^16: beyond every F16 */
    if (e >= 113) {
        /* Normal F16 range (2^-14 .. 2^16). Drop 13 mantissa bits with round-half-even; a carry
         * out of the mantissa correctly bumps the exponent, up to infinity (0x7c00). */
        uint32_t h = ((e - 112u) << 10) | (m >> 13);
        uint32_t rem = m & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    if (e < 102) return sign; /* below 2^-25: rounds to zero (2^-25 exactly is a tie to 0) */
    /* Subnormal F16: count of 2^-24 units = full significand >> (126 - e), rounded half-even. */
    uint32_t mant = m | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t h = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) h++; /* may become 0x400, the smallest normal */
    return (uint16_t)(sign | h);
}

static inline float eng_bf16_to_fp32(uint16_t h)
{
    return eng__bits_f32((uint32_t)h << 16);
}

static inline uint16_t eng_fp32_to_bf16(float f)
{
    uint32_t x = eng__f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    /* Round half to even; cannot overflow 32 bits because x is not a NaN here. */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#endif
