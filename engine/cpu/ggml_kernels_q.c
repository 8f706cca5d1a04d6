/*
 * ggml_kernels_q.c - llama.cpp's x86 CPU arithmetic, operation for operation, for Q4_0, Q5_0,
 * Q5_1, Q4_K, Q5_K and Q6_K weights, the Q8_K activation quantizer and GEGLU.
 *
 * Design, as in ggml_kernels.c: each dot product follows one ggml function (named in
 * ggml_kernels_q.h) and exists as
 *   - portable C: ggml's int32 lanes become small arrays filled with exactly the integers its
 *     registers hold (the integer work is exact, so any order gives them), and the float steps
 *     are written one by one, fused multiply-adds as fmaf(). No compiler contraction: GCC does
 *     not contract in ISO C mode, and the pragma below tells Clang;
 *   - intrinsics compiled for AVX2+FMA+F16C with a function attribute (and, for the 32-value
 *     formats, a VNNI variant using vpdpbusd as ggml's -march=native build does), so the rest
 *     of the build needs no -march flag. ENG_NO_SIMD at compile time keeps the portable ones.
 * Every variant gives the same bits (tests/test_kernels_q.c); eng_cpu_level() picks one on
 * first use.
 *
 * Invariants the integer paths rely on (true of every activation this engine makes, and of
 * every weight file, whatever its bytes): activation codes are in [-127, 127]; a
 * maddubs pair sum stays below 2^15 (at most 2 * 63 * 127); no int32 lane can overflow.
 */
#include "ggml_kernels_q.h"

#include "ggml_kernels.h"

/* Exact emulation needs every fused multiply-add spelled out: GCC does not contract in ISO C
 * mode, Clang must be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#define HAVE_X86_SIMD 1
#define AVX2_TARGET   __attribute__((target("avx2,fma,f16c")))
#define VNNI_TARGET   __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#include <immintrin.h>
#else
#define HAVE_X86_SIMD 0
#endif

/* ---- shared pieces of the portable kernels ---- */

/* hsum_float_8: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
static inline float hsum8(const float a[8])
{
    const float r0 = a[4] + a[0], r1 = a[5] + a[1], r2 = a[6] + a[2], r3 = a[7] + a[3];
    return (r0 + r2) + (r1 + r3);
}

/* The eight int32 lanes of a 32-byte product: lane j sums the products of bytes 4j..4j+3
 * (maddubs then madd with ones, or vpdpbusd: the same integers). */
static inline void lanes32(const int8_t x[32], const int8_t y[32], int32_t lane[8])
{
    for (int j = 0; j < 8; j++)
        lane[j] = x[4 * j] * y[4 * j] + x[4 * j + 1] * y[4 * j + 1] + x[4 * j + 2] * y[4 * j + 2] +
                  x[4 * j + 3] * y[4 * j + 3];
}

static inline uint32_t load_u32(const uint8_t b[4])
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Byte e of ggml's bytes_from_nibbles_32: value e of the block (low nibbles, then high). */
static inline void nibbles32(const uint8_t qs[16], int8_t out[32])
{
    for (int j = 0; j < 16; j++) {
        out[j] = (int8_t)(qs[j] & 0x0f);
        out[j + 16] = (int8_t)(qs[j] >> 4);
    }
}

/* ---- the 32-value formats, portable ---- */

static float dot_q4_0_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    float acc[8] = {0};
    for (int i = 0; i < n / ENG_QK; i++) {
        const float d = eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d);
        int8_t q[32];
        int32_t lane[8];
        nibbles32(w[i].qs, q);
        for (int e = 0; e < 32; e++) q[e] = (int8_t)(q[e] - 8);
        lanes32(q, a[i].qs, lane);
        for (int j = 0; j < 8; j++) acc[j] = fmaf(d, (float)lane[j], acc[j]);
    }
    return hsum8(acc);
}

/* The order of ggml_gemv/gemm_q4_0_8x8_q8_0: one fused multiply-add per block. */
static float dot_q4_0_repack_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    float acc = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        int8_t q[32];
        int32_t isum = 0;
        nibbles32(w[i].qs, q);
        for (int e = 0; e < 32; e++) isum += (q[e] - 8) * a[i].qs[e];
        acc = fmaf((float)isum, eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d), acc);
    }
    return acc;
}

/* Q5_0/Q5_1 codes: the nibble plus bit e of qh as bit 4, minus `offset`. */
static inline void codes_q5(const uint8_t qs[16], const uint8_t qh[4], int offset, int8_t q[32])
{
    const uint32_t h = load_u32(qh);
    nibbles32(qs, q);
    for (int e = 0; e < 32; e++) q[e] = (int8_t)((q[e] | (int)((h >> e) & 1) << 4) - offset);
}

static float dot_q5_0_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    float acc[8] = {0};
    for (int i = 0; i < n / ENG_QK; i++) {
        const float d = eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d);
        int8_t q[32];
        int32_t lane[8];
        codes_q5(w[i].qs, w[i].qh, 16, q);
        lanes32(q, a[i].qs, lane);
        for (int j = 0; j < 8; j++) acc[j] = fmaf(d, (float)lane[j], acc[j]);
    }
    return hsum8(acc);
}

static float dot_q5_1_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_1 *w = wv;
    const struct eng_block_q8_1 *a = av;
    float acc[8] = {0}, summs = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        /* m and s are f16 values: the product is exact, fused or not. */
        summs += eng_fp16_to_fp32(w[i].m) * a[i].s;
        const float d = eng_fp16_to_fp32(w[i].d) * a[i].d;
        int8_t q[32];
        int32_t lane[8];
        codes_q5(w[i].qs, w[i].qh, 0, q);
        lanes32(q, a[i].qs, lane);
        for (int j = 0; j < 8; j++) acc[j] = fmaf((float)lane[j], d, acc[j]);
    }
    return hsum8(acc) + summs;
}

/* ---- the K formats, portable ---- */

/* The 4-bit codes of sub-block s (0..7) of a Q4_K/Q5_K block: chunk s / 2, nibble s % 2. */
static inline void nibbles_k(const uint8_t qs[128], int s, int8_t out[32])
{
    const uint8_t *c = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; l++) out[l] = (int8_t)((c[l] >> shift) & 0x0f);
}

/* Sums of the 32 activation codes of each sub-block: ggml's _mm_hadd_epi16 of the bsums. */
static inline void bsums32(const struct eng_block_q8_K *a, int32_t out[8])
{
    for (int s = 0; s < 8; s++) out[s] = a->bsums[2 * s] + a->bsums[2 * s + 1];
}

/* Scales and mins of a Q4_K/Q5_K block (quant.h's packing), four bytes at a time: for j < 4
 * sc[j], m[j] are the low 6 bits of bytes j, j + 4; for j >= 4 their low 4 bits are the low and
 * high nibbles of byte j + 4 and their top 2 bits the top 2 bits of bytes j - 4, j. */
static inline void scales_mins(const uint8_t scales[12], uint8_t sc[8], uint8_t m[8])
{
    uint32_t b[3], out[4];
    memcpy(b, scales, 12);
    out[0] = b[0] & 0x3f3f3f3fu;
    out[1] = (b[2] & 0x0f0f0f0fu) | ((b[0] >> 2) & 0x30303030u);
    out[2] = b[1] & 0x3f3f3f3fu;
    out[3] = ((b[2] >> 4) & 0x0f0f0f0fu) | ((b[1] >> 2) & 0x30303030u);
    memcpy(sc, out, 8);
    memcpy(m, out + 2, 8);
}

/* Accumulates sc * (lanes of sub-block s) into lane[8]. */
static inline void add_scaled_lanes(const int8_t q[32], const int8_t *a, int sc, int32_t lane[8])
{
    int32_t l[8];
    lanes32(q, a, l);
    for (int j = 0; j < 8; j++) lane[j] += sc * l[j];
}

static float dot_q4_K_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc[8] = {0}, acc_m[4] = {0};
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * eng_fp16_to_fp32(w[i].d);
        const float dmin = -a[i].d * eng_fp16_to_fp32(w[i].dmin);
        uint8_t sc[8], m[8];
        int32_t bs[8], sumi[8] = {0};
        scales_mins(w[i].scales, sc, m);
        bsums32(&a[i], bs);
        for (int k = 0; k < 4; k++) {
            const int32_t prod = m[2 * k] * bs[2 * k] + m[2 * k + 1] * bs[2 * k + 1];
            acc_m[k] = fmaf(dmin, (float)prod, acc_m[k]);
        }
        for (int s = 0; s < 8; s++) {
            int8_t q[32];
            nibbles_k(w[i].qs, s, q);
            add_scaled_lanes(q, a[i].qs + 32 * s, sc[s], sumi);
        }
        for (int j = 0; j < 8; j++) acc[j] = fmaf(d, (float)sumi[j], acc[j]);
    }
    return hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}

/* The order of ggml_gemv_q4_K_8x8_q8_K: one pair of fused multiply-adds per super-block. */
static float dot_q4_K_repack_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc = 0.0f, acc_min = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        uint8_t sc[8], m[8];
        int32_t bs[8], isum = 0, imin = 0;
        scales_mins(w[i].scales, sc, m);
        bsums32(&a[i], bs);
        for (int s = 0; s < 8; s++) {
            int8_t q[32];
            int32_t sub = 0;
            nibbles_k(w[i].qs, s, q);
            for (int l = 0; l < 32; l++) sub += q[l] * a[i].qs[32 * s + l];
            isum += sc[s] * sub;
            imin += m[s] * bs[s];
        }
        acc = fmaf((float)isum, eng_fp16_to_fp32(w[i].d) * a[i].d, acc);
        acc_min = fmaf((float)imin, eng_fp16_to_fp32(w[i].dmin) * a[i].d, acc_min);
    }
    return acc - acc_min;
}

/* The order of ggml_gemm_q4_K_8x8_q8_K: one pair per 64 values. */
static float dot_q4_K_gemm_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc = 0.0f, acc_min = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float ds = eng_fp16_to_fp32(w[i].d) * a[i].d;
        const float dm = eng_fp16_to_fp32(w[i].dmin) * a[i].d;
        uint8_t sc[8], m[8];
        int32_t bs[8];
        scales_mins(w[i].scales, sc, m);
        bsums32(&a[i], bs);
        for (int p = 0; p < 4; p++) {
            int32_t isum = 0;
            for (int s = 2 * p; s < 2 * p + 2; s++) {
                int8_t q[32];
                int32_t sub = 0;
                nibbles_k(w[i].qs, s, q);
                for (int l = 0; l < 32; l++) sub += q[l] * a[i].qs[32 * s + l];
                isum += sc[s] * sub;
            }
            const int32_t imin = m[2 * p] * bs[2 * p] + m[2 * p + 1] * bs[2 * p + 1];
            acc = fmaf((float)isum, ds, acc);
            acc_min = fmaf((float)imin, dm, acc_min);
        }
    }
    return acc - acc_min;
}

static float dot_q5_K_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc[8] = {0}, summs = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * eng_fp16_to_fp32(w[i].d);
        const float dmin = -a[i].d * eng_fp16_to_fp32(w[i].dmin);
        uint8_t sc[8], m[8];
        int32_t bs[8], sumi[8] = {0}, imin = 0;
        scales_mins(w[i].scales, sc, m);
        bsums32(&a[i], bs);
        for (int s = 0; s < 8; s++) imin += m[s] * bs[s];
        summs = fmaf(dmin, (float)imin, summs);
        for (int s = 0; s < 8; s++) {
            int8_t q[32];
            nibbles_k(w[i].qs, s, q);
            for (int l = 0; l < 32; l++) q[l] = (int8_t)(q[l] | ((w[i].qh[l] >> s) & 1) << 4);
            add_scaled_lanes(q, a[i].qs + 32 * s, sc[s], sumi);
        }
        for (int j = 0; j < 8; j++) acc[j] = fmaf(d, (float)sumi[j], acc[j]);
    }
    return hsum8(acc) + summs;
}

static float dot_q6_K_c(int n, const void *wv, const void *av)
{
    const struct eng_block_q6_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc[8] = {0};
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * eng_fp16_to_fp32(w[i].d);
        const int8_t *sc = w[i].scales;
        int32_t sumi[8] = {0};
        /* Chunk c holds values 32c..32c+31: half h = c / 4, part t = c % 4 (quant.h). */
        for (int c = 0; c < 8; c++) {
            const int h = c / 4, t = c % 4;
            const uint8_t *ql = w[i].ql + 64 * h + 32 * (t & 1), *qh = w[i].qh + 32 * h;
            int8_t q[32];
            int32_t l4[8];
            for (int l = 0; l < 32; l++) {
                const int low = t < 2 ? ql[l] & 0x0f : ql[l] >> 4;
                q[l] = (int8_t)(low | ((qh[l] >> (2 * t)) & 3) << 4);
            }
            lanes32(q, a[i].qs + 32 * c, l4);
            for (int j = 0; j < 8; j++) sumi[j] += sc[2 * c + j / 4] * l4[j];
        }
        /* The codes are unsigned (q + 32); ggml takes 32 * scale * bsum back lane by lane as
         * madd pairs the sixteen groups (2j and 2j + 1 into lane j), not from the lanes those
         * values went into. The total is the same; the lanes, and so the rounding, are
         * ggml's. */
        for (int j = 0; j < 8; j++) {
            const int32_t sub =
                32 * (a[i].bsums[2 * j] * sc[2 * j] + a[i].bsums[2 * j + 1] * sc[2 * j + 1]);
            acc[j] = fmaf(d, (float)(sumi[j] - sub), acc[j]);
        }
    }
    return hsum8(acc);
}

/* ---- intrinsics ---- */

#if HAVE_X86_SIMD
AVX2_TARGET static inline float hsum8_avx(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* Lanes of four products of signed x and y: |x| times y with x's sign (ggml's
 * mul_sum_i8_pairs_float), in either instruction sequence. */
AVX2_TARGET static inline __m256i lanes_i8_avx2(__m256i x, __m256i y)
{
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

VNNI_TARGET static inline __m256i lanes_i8_vnni(__m256i x, __m256i y)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x),
                               _mm256_sign_epi8(y, x));
}

/* The same for unsigned x (mul_sum_us8_pairs_float). */
AVX2_TARGET static inline __m256i lanes_u8_avx2(__m256i x, __m256i y)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1));
}

VNNI_TARGET static inline __m256i lanes_u8_vnni(__m256i x, __m256i y)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y);
}

AVX2_TARGET static inline __m256i nibbles32_avx(const uint8_t *qs)
{
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* 0xff in byte e where bit e of qh is set: byte e takes byte e / 8 of qh and tests bit e % 8. */
AVX2_TARGET static inline __m256i bits32_avx(const uint8_t qh[4])
{
    const __m256i which = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                            0x0101010101010101, 0x0000000000000000);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)load_u32(qh)), which);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
}

AVX2_TARGET static inline __m256i codes_q4_0_avx(const struct eng_block_q4_0 *b)
{
    return _mm256_sub_epi8(nibbles32_avx(b->qs), _mm256_set1_epi8(8));
}

/* Nibble | (bit clear ? 0xf0 : 0): the code minus 16 as a signed byte. */
AVX2_TARGET static inline __m256i codes_q5_0_avx(const struct eng_block_q5_0 *b)
{
    const __m256i hi = _mm256_andnot_si256(bits32_avx(b->qh), _mm256_set1_epi8((char)0xf0));
    return _mm256_or_si256(nibbles32_avx(b->qs), hi);
}

AVX2_TARGET static inline __m256i codes_q5_1_avx(const struct eng_block_q5_1 *b)
{
    const __m256i hi = _mm256_and_si256(bits32_avx(b->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles32_avx(b->qs), hi);
}

#define LOAD256(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))

AVX2_TARGET static float dot_q4_0_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK; i++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d));
        const __m256i l = lanes_i8_avx2(codes_q4_0_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc);
    }
    return hsum8_avx(acc);
}

VNNI_TARGET static float dot_q4_0_vnni(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK; i++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d));
        const __m256i l = lanes_i8_vnni(codes_q4_0_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc);
    }
    return hsum8_avx(acc);
}

AVX2_TARGET static inline int32_t hsum_i32_8_avx(__m256i x)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AVX2_TARGET static float dot_q4_0_repack_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    float acc = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        const int32_t isum = hsum_i32_8_avx(lanes_i8_avx2(codes_q4_0_avx(&w[i]), LOAD256(a[i].qs)));
        acc = fmaf((float)isum, _cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d), acc);
    }
    return acc;
}

AVX2_TARGET static float dot_q5_0_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK; i++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d));
        const __m256i l = lanes_i8_avx2(codes_q5_0_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc);
    }
    return hsum8_avx(acc);
}

VNNI_TARGET static float dot_q5_0_vnni(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK; i++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d));
        const __m256i l = lanes_i8_vnni(codes_q5_0_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(l), acc);
    }
    return hsum8_avx(acc);
}

AVX2_TARGET static float dot_q5_1_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_1 *w = wv;
    const struct eng_block_q8_1 *a = av;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        summs += _cvtsh_ss(w[i].m) * a[i].s;
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * a[i].d);
        const __m256i l = lanes_u8_avx2(codes_q5_1_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), d, acc);
    }
    return hsum8_avx(acc) + summs;
}

VNNI_TARGET static float dot_q5_1_vnni(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_1 *w = wv;
    const struct eng_block_q8_1 *a = av;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        summs += _cvtsh_ss(w[i].m) * a[i].s;
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * a[i].d);
        const __m256i l = lanes_u8_vnni(codes_q5_1_avx(&w[i]), LOAD256(a[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), d, acc);
    }
    return hsum8_avx(acc) + summs;
}

/* Four int32 lanes k: m[2k] * bs[2k] + m[2k+1] * bs[2k+1], where bs[s] is the sum of sub-block
 * s's 32 activation codes (adjacent bsums added by hadd). */
AVX2_TARGET static inline __m128i mins_lanes_avx(const uint8_t m[8], const int16_t bsums[16])
{
    const __m256i q8 = LOAD256(bsums);
    const __m128i bs = _mm_hadd_epi16(_mm256_castsi256_si128(q8), _mm256_extracti128_si256(q8, 1));
    const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)m));
    return _mm_madd_epi16(mins, bs);
}

/* Eight int32 lanes j: sc[s] * (products 4j..4j+3 of sub-block s) summed over the sub-blocks
 * s = 2p, 2p + 1 of chunk p, for the 4-bit (qh == NULL) or 5-bit codes of a Q4_K/Q5_K block. */
AVX2_TARGET static inline __m256i kq_pair_lanes_avx(const uint8_t *qs, const uint8_t *qh, int p,
                                                    const uint8_t sc[8], const int8_t *q8)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i bits = LOAD256(qs + 32 * p);
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; half++) {
        const int s = 2 * p + half;
        __m256i q = _mm256_and_si256(half ? _mm256_srli_epi16(bits, 4) : bits, m4);
        if (qh) {
            const __m256i hb = _mm256_and_si256(LOAD256(qh), _mm256_set1_epi8((char)(1 << s)));
            q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_srli_epi16(hb, s), 4));
        }
        const __m256i prod = _mm256_maddubs_epi16(q, LOAD256(q8 + 32 * s));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_set1_epi16(sc[s]), prod));
    }
    return sumi;
}

/* The same summed over the whole block. */
AVX2_TARGET static inline __m256i kq_lanes_avx(const uint8_t *qs, const uint8_t *qh,
                                               const uint8_t sc[8], const int8_t *q8)
{
    __m256i sumi = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) sumi = _mm256_add_epi32(sumi, kq_pair_lanes_avx(qs, qh, p, sc, q8));
    return sumi;
}

AVX2_TARGET static float dot_q4_K_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * _cvtsh_ss(w[i].d);
        const float dmin = -a[i].d * _cvtsh_ss(w[i].dmin);
        uint8_t sc[8], m[8];
        scales_mins(w[i].scales, sc, m);
        const __m128i prod = mins_lanes_avx(m, a[i].bsums);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        const __m256i sumi = kq_lanes_avx(w[i].qs, NULL, sc, a[i].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    return hsum8_avx(acc) + _mm_cvtss_f32(acc_m);
}

AVX2_TARGET static inline int32_t hsum_i32_4_avx(__m128i s)
{
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AVX2_TARGET static float dot_q4_K_repack_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc = 0.0f, acc_min = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        uint8_t sc[8], m[8];
        scales_mins(w[i].scales, sc, m);
        const int32_t imin = hsum_i32_4_avx(mins_lanes_avx(m, a[i].bsums));
        const int32_t isum = hsum_i32_8_avx(kq_lanes_avx(w[i].qs, NULL, sc, a[i].qs));
        acc = fmaf((float)isum, _cvtsh_ss(w[i].d) * a[i].d, acc);
        acc_min = fmaf((float)imin, _cvtsh_ss(w[i].dmin) * a[i].d, acc_min);
    }
    return acc - acc_min;
}

AVX2_TARGET static float dot_q4_K_gemm_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_K *w = wv;
    const struct eng_block_q8_K *a = av;
    float acc = 0.0f, acc_min = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float ds = _cvtsh_ss(w[i].d) * a[i].d, dm = _cvtsh_ss(w[i].dmin) * a[i].d;
        uint8_t sc[8], m[8];
        int32_t imin[4];
        scales_mins(w[i].scales, sc, m);
        _mm_storeu_si128((__m128i *)(void *)imin, mins_lanes_avx(m, a[i].bsums));
        for (int p = 0; p < 4; p++) {
            const int32_t isum = hsum_i32_8_avx(kq_pair_lanes_avx(w[i].qs, NULL, p, sc, a[i].qs));
            acc = fmaf((float)isum, ds, acc);
            acc_min = fmaf((float)imin[p], dm, acc_min);
        }
    }
    return acc - acc_min;
}

AVX2_TARGET static float dot_q5_K_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q5_K *w = wv;
    const struct eng_block_q8_K *a = av;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * _cvtsh_ss(w[i].d);
        const float dmin = -a[i].d * _cvtsh_ss(w[i].dmin);
        uint8_t sc[8], m[8];
        scales_mins(w[i].scales, sc, m);
        const int32_t imin = hsum_i32_4_avx(mins_lanes_avx(m, a[i].bsums));
        summs = fmaf(dmin, (float)imin, summs);
        const __m256i sumi = kq_lanes_avx(w[i].qs, w[i].qh, sc, a[i].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8_avx(acc) + summs;
}

AVX2_TARGET static float dot_q6_K_avx2(int n, const void *wv, const void *av)
{
    const struct eng_block_q6_K *w = wv;
    const struct eng_block_q8_K *a = av;
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK_K; i++) {
        const float d = a[i].d * _cvtsh_ss(w[i].d);
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)w[i].scales);
        /* 32 * (bsums[2j] * sc[2j] + bsums[2j+1] * sc[2j+1]) per lane j. */
        const __m256i sub =
            _mm256_slli_epi32(_mm256_madd_epi16(LOAD256(a[i].bsums), _mm256_cvtepi8_epi16(sc8)), 5);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = LOAD256(w[i].ql + 64 * h), l1 = LOAD256(w[i].ql + 64 * h + 32);
            const __m256i hb = LOAD256(w[i].qh + 32 * h);
            for (int t = 0; t < 4; t++) {
                const int c = 4 * h + t;
                const __m256i lo =
                    t < 2 ? _mm256_and_si256(t ? l1 : l0, m15)
                          : _mm256_and_si256(_mm256_srli_epi16(t & 1 ? l1 : l0, 4), m15);
                const __m256i hi = _mm256_slli_epi16(
                    _mm256_and_si256(_mm256_srli_epi16(hb, 2 * t), _mm256_set1_epi8(3)), 4);
                const __m256i p =
                    _mm256_maddubs_epi16(_mm256_or_si256(lo, hi), LOAD256(a[i].qs + 32 * c));
                /* Sixteen 16-bit scales: group 2c for the first half, 2c + 1 for the second. */
                const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(w[i].scales[2 * c + 1]),
                                                     _mm_set1_epi16(w[i].scales[2 * c]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s16, p));
            }
        }
        sumi = _mm256_sub_epi32(sumi, sub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8_avx(acc);
}

#undef LOAD256
#endif /* HAVE_X86_SIMD */

/* ---- variants and dispatch ---- */

#if HAVE_X86_SIMD
#define X86(fn) fn
#else
#define X86(fn) NULL
#endif

/* Per kernel: the portable, AVX2 and AVX-512 variants (NULL: use the level below). */
static const eng_vec_dot_fn variants[ENG_QDOT_COUNT][3] = {
    [ENG_QDOT_Q4_0] = {dot_q4_0_c, X86(dot_q4_0_avx2), X86(dot_q4_0_vnni)},
    [ENG_QDOT_Q4_0_REPACK] = {dot_q4_0_repack_c, X86(dot_q4_0_repack_avx2), NULL},
    [ENG_QDOT_Q5_0] = {dot_q5_0_c, X86(dot_q5_0_avx2), X86(dot_q5_0_vnni)},
    [ENG_QDOT_Q5_1] = {dot_q5_1_c, X86(dot_q5_1_avx2), X86(dot_q5_1_vnni)},
    [ENG_QDOT_Q4_K] = {dot_q4_K_c, X86(dot_q4_K_avx2), NULL},
    [ENG_QDOT_Q4_K_REPACK] = {dot_q4_K_repack_c, X86(dot_q4_K_repack_avx2), NULL},
    [ENG_QDOT_Q4_K_GEMM] = {dot_q4_K_gemm_c, X86(dot_q4_K_gemm_avx2), NULL},
    [ENG_QDOT_Q5_K] = {dot_q5_K_c, X86(dot_q5_K_avx2), NULL},
    [ENG_QDOT_Q6_K] = {dot_q6_K_c, X86(dot_q6_K_avx2), NULL},
};

eng_vec_dot_fn eng__qdot_variant(enum eng__qdot kernel, enum eng_cpu_level level)
{
    if ((unsigned)kernel >= ENG_QDOT_COUNT) return NULL;
    for (int l = (int)level; l > 0; l--)
        if (l < 3 && variants[kernel][l]) return variants[kernel][l];
    return variants[kernel][0];
}

/* Each dispatching entry resolves its variant on first use; a race between threads stores the
 * same pointer twice. */
#define DISPATCH(name, kernel)                                                                     \
    float name(int n, const void *w_row, const void *act_row)                                      \
    {                                                                                              \
        static _Atomic(eng_vec_dot_fn) fn;                                                         \
        eng_vec_dot_fn f = fn;                                                                     \
        if (!f) fn = f = eng__qdot_variant(kernel, eng_cpu_level());                               \
        return f(n, w_row, act_row);                                                               \
    }

DISPATCH(eng__vec_dot_q4_0_q8_0_ggml, ENG_QDOT_Q4_0)
DISPATCH(eng__vec_dot_q4_0_q8_0_repack_ggml, ENG_QDOT_Q4_0_REPACK)
DISPATCH(eng__vec_dot_q5_0_q8_0_ggml, ENG_QDOT_Q5_0)
DISPATCH(eng__vec_dot_q5_1_q8_1_ggml, ENG_QDOT_Q5_1)
DISPATCH(eng__vec_dot_q4_K_q8_K_ggml, ENG_QDOT_Q4_K)
DISPATCH(eng__vec_dot_q4_K_q8_K_repack_ggml, ENG_QDOT_Q4_K_REPACK)
DISPATCH(eng__vec_dot_q4_K_q8_K_gemm_ggml, ENG_QDOT_Q4_K_GEMM)
DISPATCH(eng__vec_dot_q5_K_q8_K_ggml, ENG_QDOT_Q5_K)
DISPATCH(eng__vec_dot_q6_K_q8_K_ggml, ENG_QDOT_Q6_K)

#undef DISPATCH

/* ---- Q8_K activations ---- */

/* ggml's nearest_int: adding 1.5 * 2^23 rounds to an integer (half to even) in the low bits. */
static inline int nearest_int(float v)
{
    const float t = v + 12582912.0f;
    return (int)(eng__f32_bits(t) & 0x007fffff) - 0x00400000;
}

/* quantize_row_q8_K_ref when !positive_wins; ggml_quantize_mat_q8_K_4x8's rule otherwise. */
static void quantize_q8_K(const float *src, struct eng_block_q8_K *b, int64_t n, bool positive_wins)
{
    for (int64_t i = 0; i < n / ENG_QK_K; i++, src += ENG_QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int k = 0; k < ENG_QK_K; k++) {
            const float ax = fabsf(src[k]);
            if (ax > amax) {
                amax = ax;
                max = src[k];
            }
        }
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof(b[i]));
            continue;
        }
        if (positive_wins)
            for (int k = 0; k < ENG_QK_K; k++)
                if (src[k] == amax) max = amax;
        const float iscale = -127.0f / max;
        for (int k = 0; k < ENG_QK_K; k++) {
            const float v = iscale * src[k]; /* rounded before nearest_int adds */
            const int q = nearest_int(v);
            b[i].qs[k] = (int8_t)(uint8_t)(q < 127 ? q : 127);
        }
        for (int g = 0; g < ENG_QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += b[i].qs[16 * g + l];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1.0f / iscale;
    }
}

void eng__quantize_row_q8_K_ggml(const float *src, void *dst, int64_t n)
{
    quantize_q8_K(src, dst, n, false);
}

void eng__quantize_row_q8_K_gemm_ggml(const float *src, void *dst, int64_t n)
{
    quantize_q8_K(src, dst, n, true);
}

/* ---- the type table ---- */

#define QTYPE(id, nm, be, blk, act, deq, q, qact, dot)                                             \
    {                                                                                              \
        .type = (id), .name = (nm), .block_elems = (be), .block_bytes = sizeof(blk),               \
        .weight = true, .act_type = (act), .dequantize = (deq), .quantize = (q),                   \
        .quantize_act = (qact), .vec_dot = (dot)                                                   \
    }

static const struct eng_qtype cpu_q[] = {
    QTYPE(ENG_GGML_Q4_0, "q4_0", ENG_QK, struct eng_block_q4_0, ENG_GGML_Q8_0,
          eng__dequantize_row_q4_0, eng__quantize_row_q4_0_ref, eng__quantize_row_q8_0,
          eng__vec_dot_q4_0_q8_0_repack_ggml),
    QTYPE(ENG_GGML_Q5_0, "q5_0", ENG_QK, struct eng_block_q5_0, ENG_GGML_Q8_0,
          eng__dequantize_row_q5_0, eng__quantize_row_q5_0_ref, eng__quantize_row_q8_0,
          eng__vec_dot_q5_0_q8_0_ggml),
    QTYPE(ENG_GGML_Q5_1, "q5_1", ENG_QK, struct eng_block_q5_1, ENG_GGML_Q8_1,
          eng__dequantize_row_q5_1, eng__quantize_row_q5_1_ref, eng__quantize_row_q8_1_ggml,
          eng__vec_dot_q5_1_q8_1_ggml),
    QTYPE(ENG_GGML_Q4_K, "q4_K", ENG_QK_K, struct eng_block_q4_K, ENG_GGML_Q8_K,
          eng__dequantize_row_q4_K, eng__quantize_row_q4_K_ref, eng__quantize_row_q8_K_ggml,
          eng__vec_dot_q4_K_q8_K_repack_ggml),
    QTYPE(ENG_GGML_Q5_K, "q5_K", ENG_QK_K, struct eng_block_q5_K, ENG_GGML_Q8_K,
          eng__dequantize_row_q5_K, eng__quantize_row_q5_K_ref, eng__quantize_row_q8_K_ggml,
          eng__vec_dot_q5_K_q8_K_ggml),
    QTYPE(ENG_GGML_Q6_K, "q6_K", ENG_QK_K, struct eng_block_q6_K, ENG_GGML_Q8_K,
          eng__dequantize_row_q6_K, eng__quantize_row_q6_K_ref, eng__quantize_row_q8_K_ggml,
          eng__vec_dot_q6_K_q8_K_ggml),
};

/* Q4_K for the tokens ggml_gemm_q4_K_8x8_q8_K takes; every other entry is the same for all
 * tokens. */
static const struct eng_qtype cpu_q4_K_gemm = QTYPE(
    ENG_GGML_Q4_K, "q4_K", ENG_QK_K, struct eng_block_q4_K, ENG_GGML_Q8_K, eng__dequantize_row_q4_K,
    eng__quantize_row_q4_K_ref, eng__quantize_row_q8_K_gemm_ggml, eng__vec_dot_q4_K_q8_K_gemm_ggml);

#undef QTYPE

const struct eng_qtype *eng__qtype_cpu_q(int type)
{
    for (size_t i = 0; i < sizeof(cpu_q) / sizeof(cpu_q[0]); i++)
        if (cpu_q[i].type == type) return &cpu_q[i];
    return NULL;
}

const struct eng_qtype *eng__qtype_cpu_q_gemm(int type)
{
    return type == ENG_GGML_Q4_K ? &cpu_q4_K_gemm : eng__qtype_cpu_q(type);
}

/* ---- GELU ---- */

/* GGML_CPU_FP32_TO_FP16 on x86: ggml_compute_fp32_to_fp16, which rounds to nearest even like
 * eng_fp32_to_fp16 but turns every NaN into 0x7e00 with the NaN's sign. */
static inline uint16_t f16_ggml(float x)
{
    if (x != x) return (uint16_t)((eng__f32_bits(x) >> 16 & 0x8000u) | 0x7e00u);
    return eng_fp32_to_fp16(x);
}

/* ggml_gelu_f32 as GCC compiles it for ggml_cpu_init's table: GELU_COEF_A * x * x + 1 becomes
 * one fused multiply-add; the other products keep their source order. */
static float gelu_f32(float x)
{
    const float inner = fmaf(0.044715f * x, x, 1.0f);
    const float t = tanhf(0.79788456080286535587989211986876f * x * inner);
    return 0.5f * x * (1.0f + t);
}

/* f16(gelu(f32(h))) per f16 bit pattern h, and one entry of padding: the vector lookup reads
 * 32 bits at each entry. */
static uint16_t gelu_table[(1 << 16) + 1];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++)
        gelu_table[h] = f16_ggml(gelu_f32(eng_fp16_to_fp32((uint16_t)h)));
}

const uint16_t *eng__ggml_gelu_table(void)
{
    pthread_once(&gelu_once, gelu_table_init);
    return gelu_table;
}

float eng__ggml_gelu(float x)
{
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    return eng_fp16_to_fp32(eng__ggml_gelu_table()[f16_ggml(x)]);
}

#if HAVE_X86_SIMD
/* 16 values at a time: vcvtps2ph rounds to nearest even as f16_ggml does (NaN lanes give NaN
 * either way), a gather reads the table, and the thresholds are blends. */
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"))) static int
geglu_avx512(int n, float *y, const float *g, const float *u, const uint16_t *table)
{
    const __m512 lo = _mm512_set1_ps(-10.0f), hi = _mm512_set1_ps(10.0f);
    const __m512i low16 = _mm512_set1_epi32(0xffff);
    int i = 0;
    for (; i + 15 < n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i), v = _mm512_loadu_ps(u + i);
        const __m512i h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        const __m512i e =
            _mm512_and_si512(_mm512_i32gather_epi32(h, (const void *)table, 2), low16);
        const __m512 t = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(e));
        __m512 r = _mm512_mul_ps(t, v);
        r = _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(x, hi, _CMP_GE_OQ), x, v);
        r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LE_OQ), r, _mm512_setzero_ps());
        _mm512_storeu_ps(y + i, r);
    }
    return i;
}
#endif

void eng__ggml_geglu(int n, float *y, const float *g, const float *u)
{
    const uint16_t *table = eng__ggml_gelu_table();
    int i = 0;
#if HAVE_X86_SIMD
    if (eng_cpu_level() >= ENG_CPU_AVX512) i = geglu_avx512(n, y, g, u, table);
#endif
    for (; i < n; i++) {
        const float x = g[i], v = u[i];
        if (x <= -10.0f)
            y[i] = 0.0f;
        else if (x >= 10.0f)
            y[i] = x * v;
        else
            y[i] = eng_fp16_to_fp32(table[f16_ggml(x)]) * v;
    }
}
