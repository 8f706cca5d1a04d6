/*
 * ggml_kernels.c - llama.cpp's x86 CPU arithmetic, operation for operation.
 *
 * Every kernel here follows one ggml function (named in ggml_kernels.h) with the float
 * operations in the same order. Each exists twice:
 *   - a portable version in plain C: SIMD lanes become small arrays, _mm*_fmadd_ps becomes
 *     fmaf(), conversions to f16 round to nearest even as F16C does. The compiler may not
 *     contract a * b + c into a fused multiply-add here (ISO C mode for GCC, a pragma for
 *     Clang), so only fmaf() fuses and the emulation does not depend on compiler flags;
 *   - on x86 with AVX2, FMA and F16C (checked once with CPUID), the same instruction sequence
 *     as ggml's own kernels, compiled for that target with a function attribute, so the rest of
 *     the build needs no -march flag. ENG_NO_SIMD at compile time keeps the portable versions.
 * Both give the same bits (tests compare them); the fast ones are what make decoding run at
 * llama.cpp's speed.
 */
#include "ggml_kernels.h"

#include "cpu.h"
#include "ggml_kernels_q.h"

/* Exact emulation needs every fused multiply-add spelled out: GCC does not contract in ISO C
 * mode, Clang must be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stdbool.h>
#include <string.h>

static inline float f16_round(float x)
{
    return eng_fp16_to_fp32(eng_fp32_to_fp16(x));
}

/* hsum_float_8: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
static inline float hsum_float_8(const float a[8])
{
    float r0 = a[4] + a[0], r1 = a[5] + a[1], r2 = a[6] + a[2], r3 = a[7] + a[3];
    r0 = r0 + r2;
    r1 = r1 + r3;
    return r0 + r1;
}

void eng__quantize_row_q8_1_ggml(const float *src, void *dst, int64_t n)
{
    /* Same codes and the same f32 d = amax / 127 and s = d * sum; ggml then stores both as
     * f16. */
    eng__quantize_row_q8_1(src, dst, n);
    struct eng_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++) {
        b[i].s = f16_round(b[i].s);
        b[i].d = f16_round(b[i].d);
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#define HAVE_FMA_CLONE 1
#define FMA_TARGET     __attribute__((target("fma,avx2,f16c")))
#include <immintrin.h>
#else
#define HAVE_FMA_CLONE 0
#endif

float eng__vec_dot_q4_1_q8_1_portable(int n, const void *w_row, const void *act_row)
{
    const struct eng_block_q4_1 *w = w_row;
    const struct eng_block_q8_1 *a = act_row;
    float acc[8] = {0}, summs = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        /* m and s both have 11-bit significands, so their product is exact: fused or not,
         * the sum is the same. */
        summs += eng_fp16_to_fp32(w[i].m) * a[i].s;
        const float d0d1 = eng_fp16_to_fp32(w[i].d) * a[i].d;
        /* bytes_from_nibbles_32 puts value e (low nibbles, then high ones) at byte e; 32-bit
         * lane j sums the four products of bytes 4j..4j+3, exactly. */
        int32_t p[ENG_QK];
        for (int j = 0; j < ENG_QK / 2; j++) {
            p[j] = (w[i].qs[j] & 0x0f) * a[i].qs[j];
            p[j + ENG_QK / 2] = (w[i].qs[j] >> 4) * a[i].qs[j + ENG_QK / 2];
        }
        for (int j = 0; j < 8; j++) {
            const int32_t lane = p[4 * j] + p[4 * j + 1] + p[4 * j + 2] + p[4 * j + 3];
            acc[j] = fmaf(d0d1, (float)lane, acc[j]);
        }
    }
    return hsum_float_8(acc) + summs;
}

float eng__vec_dot_q8_0_q8_0_portable(int n, const void *w_row, const void *act_row)
{
    const struct eng_block_q8_0 *w = w_row;
    const struct eng_block_q8_0 *a = act_row;
    float acc[8] = {0};
    for (int i = 0; i < n / ENG_QK; i++) {
        const float d = eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d);
        int32_t p[ENG_QK];
        for (int j = 0; j < ENG_QK; j++) p[j] = w[i].qs[j] * a[i].qs[j];
        for (int j = 0; j < 8; j++) {
            const int32_t lane = p[4 * j] + p[4 * j + 1] + p[4 * j + 2] + p[4 * j + 3];
            acc[j] = fmaf(d, (float)lane, acc[j]);
        }
    }
    return hsum_float_8(acc);
}

#if HAVE_FMA_CLONE
/* The AVX2 instruction sequence of ggml's dot products (arch/x86/quants.c): maddubs and madd
 * form the same exact lane sums as the portable code, then the same fused accumulation. */
FMA_TARGET static inline float hsum_float_8_avx(__m256 x)
{
    __m128 res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

FMA_TARGET static float dot_q4_1_fma(int n, const void *wv, const void *av)
{
    const struct eng_block_q4_1 *w = wv;
    const struct eng_block_q8_1 *a = av;
    const __m256i low_mask = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int i = 0; i < n / ENG_QK; i++) {
        summs += _cvtsh_ss(w[i].m) * a[i].s;
        const __m256 d0d1 = _mm256_set1_ps(_cvtsh_ss(w[i].d) * a[i].d);
        const __m128i tmp = _mm_loadu_si128((const __m128i *)w[i].qs);
        const __m256i qx =
            _mm256_and_si256(low_mask, _mm256_insertf128_si256(_mm256_castsi128_si256(tmp),
                                                               _mm_srli_epi16(tmp, 4), 1));
        const __m256i qy = _mm256_loadu_si256((const __m256i *)a[i].qs);
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones);
        acc = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(dot), acc);
    }
    return hsum_float_8_avx(acc) + summs;
}

FMA_TARGET static float dot_q8_0_fma(int n, const void *wv, const void *av)
{
    const struct eng_block_q8_0 *w = wv;
    const struct eng_block_q8_0 *a = av;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / ENG_QK; i++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(a[i].d));
        const __m256i qx = _mm256_loadu_si256((const __m256i *)w[i].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)a[i].qs);
        const __m256i ax = _mm256_sign_epi8(qx, qx), sy = _mm256_sign_epi8(qy, qx);
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), acc);
    }
    return hsum_float_8_avx(acc);
}
#endif

/* Whether the FMA_TARGET code may run: the CPU has it and AGENTD_CPU allows it (cpu.h). */
static bool cpu_has_avx2_fma_f16c(void)
{
    return HAVE_FMA_CLONE && eng_cpu_level() >= ENG_CPU_AVX2;
}

/* The fast variant's name where it exists, NULL elsewhere. */
#if HAVE_FMA_CLONE
#define FAST(fn) (fn)
#else
#define FAST(fn) NULL
#endif

/* Picks a variant on first use; a race between threads stores the same pointer twice. */
static eng_vec_dot_fn pick(eng_vec_dot_fn plain, eng_vec_dot_fn fma)
{
    return fma && cpu_has_avx2_fma_f16c() ? fma : plain;
}

float eng__vec_dot_q4_1_q8_1_ggml(int n, const void *w_row, const void *act_row)
{
    static _Atomic(eng_vec_dot_fn) fn;
    eng_vec_dot_fn f = fn;
    if (!f) fn = f = pick(eng__vec_dot_q4_1_q8_1_portable, FAST(dot_q4_1_fma));
    return f(n, w_row, act_row);
}

float eng__vec_dot_q8_0_q8_0_ggml(int n, const void *w_row, const void *act_row)
{
    static _Atomic(eng_vec_dot_fn) fn;
    eng_vec_dot_fn f = fn;
    if (!f) fn = f = pick(eng__vec_dot_q8_0_q8_0_portable, FAST(dot_q8_0_fma));
    return f(n, w_row, act_row);
}

static const struct eng_qtype cpu_q4_1 = {
    .type = ENG_GGML_Q4_1,
    .name = "q4_1",
    .block_elems = ENG_QK,
    .block_bytes = sizeof(struct eng_block_q4_1),
    .weight = true,
    .act_type = ENG_GGML_Q8_1,
    .dequantize = eng__dequantize_row_q4_1,
    .quantize = eng__quantize_row_q4_1_ref,
    .quantize_act = eng__quantize_row_q8_1_ggml,
    .vec_dot = eng__vec_dot_q4_1_q8_1_ggml,
};

static const struct eng_qtype cpu_q8_0 = {
    .type = ENG_GGML_Q8_0,
    .name = "q8_0",
    .block_elems = ENG_QK,
    .block_bytes = sizeof(struct eng_block_q8_0),
    .weight = true,
    .act_type = ENG_GGML_Q8_0,
    .dequantize = eng__dequantize_row_q8_0,
    .quantize = eng__quantize_row_q8_0_ref,
    .quantize_act = eng__quantize_row_q8_0, /* identical to ggml's AVX2 quantize_row_q8_0 */
    .vec_dot = eng__vec_dot_q8_0_q8_0_ggml,
};

const struct eng_qtype *eng_qtype_cpu(int type)
{
    switch (type) {
    case ENG_GGML_Q4_1:
        return &cpu_q4_1;
    case ENG_GGML_Q8_0:
        return &cpu_q8_0;
    default: {
        const struct eng_qtype *q = eng__qtype_cpu_q(type);
        return q ? q : eng_qtype_get(type);
    }
    }
}

const struct eng_qtype *eng_qtype_cpu_gemm(int type, int64_t n_rows)
{
    const struct eng_qtype *q = n_rows % 8 == 0 ? eng__qtype_cpu_q_gemm(type) : NULL;
    return q ? q : eng_qtype_cpu(type);
}

/* ---- SiLU ---- */

float eng__ggml_expf(float x)
{
    if (x != x) return x;
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r; /* round(x / ln 2), exactly an integer */
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    const float u = b * b;
    const float j = fmaf(
        fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    return ldexpf(j, (int)n); /* _mm512_scalef_ps(j, n) */
}

#if HAVE_FMA_CLONE
#define AVX512_TARGET __attribute__((target("avx512f,avx512dq,fma")))
#include "simd_avx512.h"
/* ggml_v_silu as ggml's AVX-512 build runs it (ggml_v_expf is in simd_avx512.h): the same
 * instructions, so the same bits as the portable emulation below (tests compare them). */

AVX512_TARGET static void swiglu_avx512(int n, float *y, const float *g, const float *u)
{
    int i = 0;
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (; i + 15 < n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 silu =
            _mm512_div_ps(x, _mm512_add_ps(one, eng__v_expf_avx512(_mm512_sub_ps(zero, x))));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(silu, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif

void eng__ggml_swiglu(int n, float *y, const float *g, const float *u)
{
#if HAVE_FMA_CLONE
    if (eng_cpu_level() >= ENG_CPU_AVX512) {
        swiglu_avx512(n, y, g, u);
        return;
    }
#endif
    eng__ggml_swiglu_portable(n, y, g, u);
}

void eng__ggml_swiglu_portable(int n, float *y, const float *g, const float *u)
{
    int i = 0;
    for (; i + 15 < n; i += 16)
        for (int l = i; l < i + 16; l++) {
            const float x = g[l];
            y[l] = x / (1.0f + eng__ggml_expf(0.0f - x)) * u[l];
        }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- F16 vectors (flash attention) ---- */

/* GCC's _mm512_reduce_add_ps of a[16], then ggml's leftover values x[np..n) * y[np..n) added
 * in double. */
static float reduce_16(const float a[16], const uint16_t *x, const uint16_t *y, int np, int n)
{
    float t3[8], t6[4];
    for (int l = 0; l < 8; l++) t3[l] = a[l + 8] + a[l];
    for (int l = 0; l < 4; l++) t6[l] = t3[l + 4] + t3[l];
    double sumf = (double)((t6[0] + t6[2]) + (t6[1] + t6[3]));
    for (int i = np; i < n; i++) sumf += (double)(eng_fp16_to_fp32(x[i]) * eng_fp16_to_fp32(y[i]));
    return (float)sumf;
}

/* The F16C/AVX2 versions after these compute the same bits 8 lanes at a time: two registers
 * for each 16-lane AVX-512 register of ggml's. */
float eng__ggml_dot_f16_portable(int n, const uint16_t *x, const uint16_t *y)
{
    const int np = n & ~63;
    float sum[4][16];
    memset(sum, 0, sizeof(sum));
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) {
                const int k = i + 16 * j + l;
                sum[j][l] = fmaf(eng_fp16_to_fp32(x[k]), eng_fp16_to_fp32(y[k]), sum[j][l]);
            }
    /* GGML_F32x16_REDUCE over 4 accumulators: (s0 + s2) + (s1 + s3). */
    float a[16];
    for (int l = 0; l < 16; l++) a[l] = (sum[0][l] + sum[2][l]) + (sum[1][l] + sum[3][l]);
    return reduce_16(a, x, y, np, n);
}

void eng__ggml_mad_f16_portable(int n, uint16_t *y, const uint16_t *x, float v)
{
    for (int i = 0; i < n; i++)
        y[i] = eng_fp32_to_fp16(fmaf(eng_fp16_to_fp32(x[i]), v, eng_fp16_to_fp32(y[i])));
}

void eng__ggml_scale_f16_portable(int n, uint16_t *y, float v)
{
    for (int i = 0; i < n; i++) y[i] = eng_fp32_to_fp16(eng_fp16_to_fp32(y[i]) * v);
}

#if HAVE_FMA_CLONE
FMA_TARGET static float dot_f16_fma(int n, const uint16_t *x, const uint16_t *y)
{
    const int np = n & ~63;
    __m256 sum[4][2];
    for (int j = 0; j < 4; j++) sum[j][0] = sum[j][1] = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int h = 0; h < 2; h++) {
                const int k = i + 16 * j + 8 * h;
                const __m256 ax = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k)));
                const __m256 ay = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + k)));
                sum[j][h] = _mm256_fmadd_ps(ax, ay, sum[j][h]);
            }
    float a[16];
    for (int h = 0; h < 2; h++)
        _mm256_storeu_ps(a + 8 * h, _mm256_add_ps(_mm256_add_ps(sum[0][h], sum[2][h]),
                                                  _mm256_add_ps(sum[1][h], sum[3][h])));
    return reduce_16(a, x, y, np, n);
}

FMA_TARGET static void mad_f16_fma(int n, uint16_t *y, const uint16_t *x, float v)
{
    const __m256 vv = _mm256_set1_ps(v);
    int i = 0;
    for (; i + 7 < n; i += 8) {
        const __m256 ax = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        const __m256 ay = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i)));
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_fmadd_ps(ax, vv, ay), _MM_FROUND_TO_NEAREST_INT));
    }
    eng__ggml_mad_f16_portable(n - i, y + i, x + i, v);
}

FMA_TARGET static void scale_f16_fma(int n, uint16_t *y, float v)
{
    const __m256 vv = _mm256_set1_ps(v);
    int i = 0;
    for (; i + 7 < n; i += 8) {
        const __m256 ay = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i)));
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_mul_ps(ay, vv), _MM_FROUND_TO_NEAREST_INT));
    }
    eng__ggml_scale_f16_portable(n - i, y + i, v);
}
#endif

/* The F16 kernels run inside attention for every key: resolve the variant once. */
struct f16_kernels {
    float (*dot)(int, const uint16_t *, const uint16_t *);
    void (*mad)(int, uint16_t *, const uint16_t *, float);
    void (*scale)(int, uint16_t *, float);
};

static const struct f16_kernels *f16_kernels(void)
{
    static const struct f16_kernels plain = {eng__ggml_dot_f16_portable, eng__ggml_mad_f16_portable,
                                             eng__ggml_scale_f16_portable};
#if HAVE_FMA_CLONE
    static const struct f16_kernels fast = {dot_f16_fma, mad_f16_fma, scale_f16_fma};
    static _Atomic(const struct f16_kernels *) k;
    const struct f16_kernels *p = k;
    if (!p) k = p = cpu_has_avx2_fma_f16c() ? &fast : &plain;
    return p;
#else
    return &plain;
#endif
}

float eng__ggml_dot_f16(int n, const uint16_t *x, const uint16_t *y)
{
    return f16_kernels()->dot(n, x, y);
}

void eng__ggml_mad_f16(int n, uint16_t *y, const uint16_t *x, float v)
{
    f16_kernels()->mad(n, y, x, v);
}

void eng__ggml_scale_f16(int n, uint16_t *y, float v)
{
    f16_kernels()->scale(n, y, v);
}

/* ---- f16 x f32 helpers of the tiled attention (no ggml order to follow) ---- */

static float f16_dot_f32_portable(int n, const uint16_t *x, const float *y)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += eng_fp16_to_fp32(x[i]) * y[i];
    return s;
}

static void f16_axpy_f32_portable(int n, float *y, const uint16_t *x, float v)
{
    for (int i = 0; i < n; i++) y[i] += eng_fp16_to_fp32(x[i]) * v;
}

#if HAVE_FMA_CLONE
FMA_TARGET static float f16_dot_f32_fma(int n, const uint16_t *x, const float *y)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 15 < n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                               _mm256_loadu_ps(y + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8))),
                               _mm256_loadu_ps(y + i + 8), acc1);
    }
    float s = hsum_float_8_avx(_mm256_add_ps(acc0, acc1));
    return s + f16_dot_f32_portable(n - i, x + i, y + i);
}

FMA_TARGET static void f16_axpy_f32_fma(int n, float *y, const uint16_t *x, float v)
{
    const __m256 vv = _mm256_set1_ps(v);
    int i = 0;
    for (; i + 7 < n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                         vv, _mm256_loadu_ps(y + i)));
    f16_axpy_f32_portable(n - i, y + i, x + i, v);
}
#endif

float eng__f16_dot_f32(int n, const uint16_t *x, const float *y)
{
    static _Atomic(float (*)(int, const uint16_t *, const float *)) fn;
    float (*f)(int, const uint16_t *, const float *) = fn;
    if (!f) {
        f = f16_dot_f32_portable;
#if HAVE_FMA_CLONE
        if (cpu_has_avx2_fma_f16c()) f = f16_dot_f32_fma;
#endif
        fn = f;
    }
    return f(n, x, y);
}

void eng__f16_axpy_f32(int n, float *y, const uint16_t *x, float v)
{
    static _Atomic(void (*)(int, float *, const uint16_t *, float)) fn;
    void (*f)(int, float *, const uint16_t *, float) = fn;
    if (!f) {
        f = f16_axpy_f32_portable;
#if HAVE_FMA_CLONE
        if (cpu_has_avx2_fma_f16c()) f = f16_axpy_f32_fma;
#endif
        fn = f;
    }
    f(n, y, x, v);
}
