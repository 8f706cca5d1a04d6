/*
 * simd_avx512.h - small AVX-512 helpers shared by the CPU kernels: ggml's vector expf and a
 * joint horizontal sum of 16 vectors. Include only on x86-64 with GCC or Clang; each helper
 * carries its own target attribute, so callers compiled for AVX-512 inline it.
 */
#ifndef ENG_SIMD_AVX512_H
#define ENG_SIMD_AVX512_H

#include <immintrin.h>
#include <math.h>

/* Each helper asks for the fewest features it needs, so that any AVX-512 caller may inline it. */
#define ENG_AVX512_EXP __attribute__((target("avx512f,avx512dq,fma"), always_inline))
#define ENG_AVX512_RED __attribute__((target("avx512f"), always_inline))

/* ggml_v_expf as ggml's AVX-512 build runs it (the same instructions, so the same bits). */
ENG_AVX512_EXP static inline __m512 eng__v_expf_avx512(__m512 x)
{
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (_mm512_kortestz(d, d)) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(d, res, alt);
}

/* Lane i of the result is the sum of d[i]'s 16 lanes: pairs, then quads, then the four 128-bit
 * quarters, each step halving the number of vectors. */
ENG_AVX512_RED static inline __m512 eng__reduce16_avx512(const __m512 d[16])
{
    __m512 t[8], u[4];
    _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) t[k] = _mm512_add_ps(
        _mm512_unpacklo_ps(d[2 * k], d[2 * k + 1]), _mm512_unpackhi_ps(d[2 * k], d[2 * k + 1]));
    _Pragma("GCC unroll 8") for (int k = 0; k < 4; k++)
    {
        const __m512d x = _mm512_castps_pd(t[2 * k]), y = _mm512_castps_pd(t[2 * k + 1]);
        u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    const __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

#endif
