/*
 * mm_cpu.c - block matmul kernels and activation quantizers for the CPU backend (mm_cpu.h).
 *
 * Each kernel computes a tile of outputs, TR weight rows by TT tokens, keeping one accumulator
 * of eight float lanes per output exactly as ggml's single dot product does (ggml_kernels.h):
 * for block i, lane j gets fmaf(d_w * d_a, (float)sum_j, lane_j), where sum_j is the exact
 * integer sum of the four products of bytes 4j..4j+3 of the unpacked blocks. The blocks are
 * visited in order and every lane sees the same operations, so the results are the single
 * kernel's bits. What changes is how the integer sums are formed and how many outputs share
 * the loads and the unpacking:
 *   - portable: the single-row portable kernels, one call per output (the reference);
 *   - AVX2: a tile of 2 rows x 4 tokens (4 rows for one token): each weight block is unpacked
 *     once for four tokens, each activation block loaded once for two rows; maddubs + madd;
 *   - AVX-512 VNNI: one 512-bit register holds the accumulators of two outputs, either two
 *     tokens of one row (prefill: 4 rows x 8 tokens per tile) or two rows of one token
 *     (decode: 8 rows per tile); vpdpbusd forms both outputs' lane sums at once. Q8_0 weights
 *     are signed, so they are biased to unsigned (w + 128) and the accumulation starts at
 *     -128 * (lane sum of the activations), which cancels the bias exactly.
 * The Q4_1 offset term (sum over blocks of m_w * s_a, a float running sum) is kept per output
 * too, vectorized across the tile's tokens with the same mul-then-add per block.
 *
 * Prefill is compute-bound (the tile's weights stay in L1/L2 for all its tokens): on SmolLM2's
 * shapes the AVX-512 tile takes 0.6 ns per (row, token, block) against 1.4-2.0 ns for a ggml dot
 * per output (bench/bench_mm.c). Decoding reads every weight once per token and is bound by
 * memory bandwidth instead (about 24 GB/s on the 2-core development VM, which both threads
 * together reach). There the order of the loads matters more than their number: the one-token
 * tiles take rows r, r + part, ..., r + 7 part (part = n_rows / 8), so that each load instruction
 * walks its own contiguous range of rows at a constant stride, which the hardware prefetchers
 * follow. Eight adjacent rows broke the stride at every row end and ran decoding at 85-95
 * tokens/s against 130 for the ggml dot per row; rows a part apart run it at about 160.
 *
 * Tiles at the edges (fewer rows or tokens than a tile holds) repeat the last row or token and
 * drop the extra outputs; token pairs shrink to what is needed. Rows longer than
 * MM_MAX_BLOCKS blocks (far beyond today's models) fall back to one dot per output.
 *
 * The quantizers reproduce eng__quantize_row_q8_1_ggml and eng__quantize_row_q8_0 bit for bit
 * with 8-lane vectors: the absolute maximum ignores NaN as fmaxf does, codes are x * (127 /
 * amax) clamped to [-127, 127] and rounded to nearest even, NaN codes become 0.
 */
#include "mm_cpu.h"

#include "ggml_kernels.h"

/* Exact emulation needs every fused multiply-add spelled out: GCC does not contract in ISO C
 * mode, Clang must be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <string.h>

#define MM_MAX_BLOCKS 512 /* blocks per row the tiled kernels' tables hold (16384 values) */

/* ---- portable ---- */

/* One dot per output with a single-row kernel: the reference, and the fallback for long rows. */
static void mm_each(eng_vec_dot_fn dot, int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                    const void *act, size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    for (int r = 0; r < n_rows; r++) {
        const unsigned char *wr = (const unsigned char *)w + (size_t)r * w_row_bytes;
        for (int t = 0; t < n_tok; t++)
            y[t * y_stride + r] =
                dot(n_cols, wr, (const unsigned char *)act + (size_t)t * act_row_bytes);
    }
}

static void mm_q4_1_portable(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                             const void *act, size_t act_row_bytes, int n_tok, float *y,
                             int64_t y_stride)
{
    mm_each(eng__vec_dot_q4_1_q8_1_portable, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
            n_tok, y, y_stride);
}

static void mm_q8_0_portable(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                             const void *act, size_t act_row_bytes, int n_tok, float *y,
                             int64_t y_stride)
{
    mm_each(eng__vec_dot_q8_0_q8_0_portable, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
            n_tok, y, y_stride);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#define HAVE_X86_SIMD 1
#include <immintrin.h>
#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define AVX512_TARGET                                                                              \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define INLINE inline __attribute__((always_inline))
/* Tile loops must be unrolled for their accumulators to live in registers. */
#define UNROLL _Pragma("GCC unroll 8")
#else
#define HAVE_X86_SIMD 0
#endif

#if HAVE_X86_SIMD

/* Row r of a tile that starts at row r0 and holds n valid rows: past the end, the last row. */
static inline const void *tile_row(const void *base, size_t row_bytes, int r0, int n, int r)
{
    return (const unsigned char *)base + (size_t)(r0 + (r < n ? r : n - 1)) * row_bytes;
}

/* Per-block tables of a token tile, laid out (block, token) with tt tokens per block so that a
 * vector load reads one block of every token: d (as float) and, for Q8_1, s. Tokens past n
 * repeat the last one. */
static void tables_q8_1(const void *act, size_t act_row_bytes, int nb, int n, int tt, float *dt,
                        float *st)
{
    for (int t = 0; t < tt; t++) {
        const struct eng_block_q8_1 *a = tile_row(act, act_row_bytes, 0, n, t);
        for (int i = 0; i < nb; i++) {
            dt[i * tt + t] = a[i].d;
            st[i * tt + t] = a[i].s;
        }
    }
}

static void tables_q8_0(const void *act, size_t act_row_bytes, int nb, int n, int tt, float *dt)
{
    for (int t = 0; t < tt; t++) {
        const struct eng_block_q8_0 *a = tile_row(act, act_row_bytes, 0, n, t);
        for (int i = 0; i < nb; i++) dt[i * tt + t] = eng_fp16_to_fp32(a[i].d);
    }
}

/* The float bits of a quantizer's f32 value rounded to f16, as ggml stores it. */
static inline float f16_round(float x)
{
    return eng_fp16_to_fp32(eng_fp32_to_fp16(x));
}

/* ---- AVX2 ---- */

/* hsum_float_8 as ggml's AVX code computes it. */
AVX2_TARGET static INLINE float hsum8(__m256 x)
{
    __m128 res = _mm256_extractf128_ps(x, 1);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    return _mm_cvtss_f32(res);
}

/* The 32 codes of a Q4_1 block as bytes: low nibbles, then high nibbles. */
AVX2_TARGET static INLINE __m256i unpack_q4(const uint8_t *qs)
{
    const __m128i tmp = _mm_loadu_si128((const __m128i *)qs);
    const __m256i x =
        _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    return _mm256_and_si256(x, _mm256_set1_epi8(0x0f));
}

/* Eight int32 lane sums of u8 x s8 products, as ggml forms them. */
AVX2_TARGET static INLINE __m256i lanes_u8s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Q4_1, R rows x T tokens (T <= 4) of one tile; dt, st: tables with 4 tokens per block. */
AVX2_TARGET static INLINE void q4_1_tile_avx2(int nb, const struct eng_block_q4_1 *const *w,
                                              const struct eng_block_q8_1 *const *a,
                                              const float *dt, const float *st, const int R,
                                              const int T, float out[][4])
{
    __m256 acc[4][4];
    __m128 sm[4];
    UNROLL
    for (int r = 0; r < R; r++) {
        sm[r] = _mm_setzero_ps();
        UNROLL
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    }
    for (int i = 0; i < nb; i++) {
        __m256i x[4];
        __m256 dw[4];
        const __m128 s = _mm_loadu_ps(st + i * 4);
        UNROLL
        for (int r = 0; r < R; r++) {
            x[r] = unpack_q4(w[r][i].qs);
            dw[r] = _mm256_set1_ps(_cvtsh_ss(w[r][i].d));
            sm[r] = _mm_add_ps(sm[r], _mm_mul_ps(_mm_set1_ps(_cvtsh_ss(w[r][i].m)), s));
        }
        UNROLL
        for (int t = 0; t < T; t++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)a[t][i].qs);
            const __m256 da = _mm256_broadcast_ss(dt + i * 4 + t);
            UNROLL
            for (int r = 0; r < R; r++) {
                const __m256 p = _mm256_cvtepi32_ps(lanes_u8s8(x[r], y));
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), p, acc[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < R; r++) {
        float s[4];
        _mm_storeu_ps(s, sm[r]);
        UNROLL
        for (int t = 0; t < T; t++) out[r][t] = hsum8(acc[r][t]) + s[t];
    }
}

/* Q8_0, R rows x T tokens (T <= 4); dt: table with 4 tokens per block. */
AVX2_TARGET static INLINE void q8_0_tile_avx2(int nb, const struct eng_block_q8_0 *const *w,
                                              const struct eng_block_q8_0 *const *a,
                                              const float *dt, const int R, const int T,
                                              float out[][4])
{
    __m256 acc[4][4];
    UNROLL
    for (int r = 0; r < R; r++) UNROLL
    for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m256i x[4], ax[4];
        __m256 dw[4];
        UNROLL
        for (int r = 0; r < R; r++) {
            x[r] = _mm256_loadu_si256((const __m256i *)w[r][i].qs);
            ax[r] = _mm256_sign_epi8(x[r], x[r]);
            dw[r] = _mm256_set1_ps(_cvtsh_ss(w[r][i].d));
        }
        UNROLL
        for (int t = 0; t < T; t++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)a[t][i].qs);
            const __m256 da = _mm256_broadcast_ss(dt + i * 4 + t);
            UNROLL
            for (int r = 0; r < R; r++) {
                const __m256 p = _mm256_cvtepi32_ps(lanes_u8s8(ax[r], _mm256_sign_epi8(y, x[r])));
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), p, acc[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < R; r++) UNROLL
    for (int t = 0; t < T; t++) out[r][t] = hsum8(acc[r][t]);
}

/* Tiles of 2 rows x 4 tokens, or 4 rows x 1 token when there is one token. */
AVX2_TARGET static void mm_q4_1_avx2(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                                     const void *act, size_t act_row_bytes, int n_tok, float *y,
                                     int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    if (nb > MM_MAX_BLOCKS) {
        mm_each(eng__vec_dot_q4_1_q8_1_ggml, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
                n_tok, y, y_stride);
        return;
    }
    float dt[MM_MAX_BLOCKS * 4], st[MM_MAX_BLOCKS * 4];
    if (n_tok == 1) {
        /* Four rows a part apart, for the hardware prefetchers (see mm_q4_1_avx512). */
        const struct eng_block_q8_1 *a[4] = {act, act, act, act};
        tables_q8_1(act, act_row_bytes, nb, 1, 4, dt, st);
        const int part = (n_rows + 3) / 4;
        for (int r = 0; r < part; r++) {
            const struct eng_block_q4_1 *wr[4];
            for (int k = 0; k < 4; k++) {
                const int row = r + k * part < n_rows ? r + k * part : n_rows - 1;
                wr[k] = (const void *)((const unsigned char *)w + (size_t)row * w_row_bytes);
            }
            float out[4][4];
            q4_1_tile_avx2(nb, wr, a, dt, st, 4, 1, out);
            for (int k = 0; k < 4; k++)
                if (r + k * part < n_rows) y[r + k * part] = out[k][0];
        }
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += 4) {
        const int nt = n_tok - t0 < 4 ? n_tok - t0 : 4;
        const void *at = (const unsigned char *)act + (size_t)t0 * act_row_bytes;
        const struct eng_block_q8_1 *a[4];
        for (int t = 0; t < 4; t++) a[t] = tile_row(at, act_row_bytes, 0, nt, t);
        tables_q8_1(at, act_row_bytes, nb, nt, 4, dt, st);
        const int R = nt == 1 ? 4 : 2;
        for (int r0 = 0; r0 < n_rows; r0 += R) {
            const int nr = n_rows - r0 < R ? n_rows - r0 : R;
            const struct eng_block_q4_1 *wr[4];
            for (int r = 0; r < R; r++) wr[r] = tile_row(w, w_row_bytes, r0, nr, r);
            float out[4][4];
            switch (nt) {
            case 1:
                q4_1_tile_avx2(nb, wr, a, dt, st, 4, 1, out);
                break;
            case 2:
                q4_1_tile_avx2(nb, wr, a, dt, st, 2, 2, out);
                break;
            case 3:
                q4_1_tile_avx2(nb, wr, a, dt, st, 2, 3, out);
                break;
            default:
                q4_1_tile_avx2(nb, wr, a, dt, st, 2, 4, out);
                break;
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r0 + r] = out[r][t];
        }
    }
}

AVX2_TARGET static void mm_q8_0_avx2(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                                     const void *act, size_t act_row_bytes, int n_tok, float *y,
                                     int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    if (nb > MM_MAX_BLOCKS) {
        mm_each(eng__vec_dot_q8_0_q8_0_ggml, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
                n_tok, y, y_stride);
        return;
    }
    float dt[MM_MAX_BLOCKS * 4];
    if (n_tok == 1) {
        /* Four rows a part apart, for the hardware prefetchers (see mm_q4_1_avx512). */
        const struct eng_block_q8_0 *a[4] = {act, act, act, act};
        tables_q8_0(act, act_row_bytes, nb, 1, 4, dt);
        const int part = (n_rows + 3) / 4;
        for (int r = 0; r < part; r++) {
            const struct eng_block_q8_0 *wr[4];
            for (int k = 0; k < 4; k++) {
                const int row = r + k * part < n_rows ? r + k * part : n_rows - 1;
                wr[k] = (const void *)((const unsigned char *)w + (size_t)row * w_row_bytes);
            }
            float out[4][4];
            q8_0_tile_avx2(nb, wr, a, dt, 4, 1, out);
            for (int k = 0; k < 4; k++)
                if (r + k * part < n_rows) y[r + k * part] = out[k][0];
        }
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += 4) {
        const int nt = n_tok - t0 < 4 ? n_tok - t0 : 4;
        const void *at = (const unsigned char *)act + (size_t)t0 * act_row_bytes;
        const struct eng_block_q8_0 *a[4];
        for (int t = 0; t < 4; t++) a[t] = tile_row(at, act_row_bytes, 0, nt, t);
        tables_q8_0(at, act_row_bytes, nb, nt, 4, dt);
        const int R = nt == 1 ? 4 : 2;
        for (int r0 = 0; r0 < n_rows; r0 += R) {
            const int nr = n_rows - r0 < R ? n_rows - r0 : R;
            const struct eng_block_q8_0 *wr[4];
            for (int r = 0; r < R; r++) wr[r] = tile_row(w, w_row_bytes, r0, nr, r);
            float out[4][4];
            switch (nt) {
            case 1:
                q8_0_tile_avx2(nb, wr, a, dt, 4, 1, out);
                break;
            case 2:
                q8_0_tile_avx2(nb, wr, a, dt, 2, 2, out);
                break;
            case 3:
                q8_0_tile_avx2(nb, wr, a, dt, 2, 3, out);
                break;
            default:
                q8_0_tile_avx2(nb, wr, a, dt, 2, 4, out);
                break;
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r0 + r] = out[r][t];
        }
    }
}

/* ---- AVX2 activation quantizers ---- */

/* One block of 32 values: the codes as ggml's quantize_row_q8_{0,1} (eng__act_round of x * id
 * for id = 127 / amax), returned with amax and the codes' sum. */
AVX2_TARGET static INLINE void quant_block_avx2(const float *x, int8_t *qs, float *amax_out,
                                                int *sum_out)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], mx = _mm256_setzero_ps();
    UNROLL
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        /* max_ps returns its second operand when one is NaN: NaN inputs are skipped, as
         * fmaxf skips them. */
        mx = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), mx);
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m256 mul = _mm256_set1_ps(id), lo = _mm256_set1_ps(-127.0f),
                 hi = _mm256_set1_ps(127.0f);
    __m256i q[4];
    UNROLL
    for (int k = 0; k < 4; k++) {
        const __m256 p = _mm256_mul_ps(v[k], mul);
        /* Clamp first (a NaN becomes -127 here and is zeroed below), then round to nearest
         * even as cvtps2dq does under the default rounding mode. */
        const __m256 c = _mm256_min_ps(_mm256_max_ps(p, lo), hi);
        const __m256i ord = _mm256_castps_si256(_mm256_cmp_ps(p, p, _CMP_ORD_Q));
        q[k] = _mm256_and_si256(_mm256_cvtps_epi32(c), ord);
    }
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(s, 1), _mm256_castsi256_si128(s));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    /* Pack to bytes; packs work within 128-bit halves, the permutation restores the order. */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, p);
    *amax_out = amax;
    *sum_out = _mm_cvtsi128_si32(s4);
}

/* eng__quantize_row_q8_1_ggml: d = amax / 127 and s = d * sum, both rounded to f16. */
AVX2_TARGET static void quantize_q8_1_avx2(const float *src, void *dst, int64_t n)
{
    struct eng_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++) {
        float amax;
        int sum;
        quant_block_avx2(src + i * ENG_QK, b[i].qs, &amax, &sum);
        const float d = amax / 127.0f;
        b[i].d = f16_round(d);
        b[i].s = f16_round(d * (float)sum);
    }
}

/* eng__quantize_row_q8_0: d = f16(amax / 127). */
AVX2_TARGET static void quantize_q8_0_avx2(const float *src, void *dst, int64_t n)
{
    struct eng_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++) {
        float amax;
        int sum;
        quant_block_avx2(src + i * ENG_QK, b[i].qs, &amax, &sum);
        b[i].d = eng_fp32_to_fp16(amax / 127.0f);
    }
}

/* ---- AVX-512 VNNI ---- */

/* The 32 codes of a Q4_1 block (low nibbles, then high nibbles) in both 256-bit halves. */
AVX512_TARGET static INLINE __m512i unpack_q4_x2(const uint8_t *qs)
{
    const __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qs));
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    return _mm512_and_si512(_mm512_srlv_epi64(x, shift), _mm512_set1_epi8(0x0f));
}

/* The codes of two Q4_1 blocks: qs0's in the low half, qs1's in the high half. */
AVX512_TARGET static INLINE __m512i unpack_q4_2rows(const uint8_t *qs0, const uint8_t *qs1)
{
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs0));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs1));
    const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    return _mm512_and_si512(_mm512_srlv_epi64(x, shift), _mm512_set1_epi8(0x0f));
}

/* Two 32-byte code arrays as the low and high halves. */
AVX512_TARGET static INLINE __m512i load_2x32(const int8_t *lo, const int8_t *hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                              _mm256_loadu_si256((const __m256i *)hi), 1);
}

/* Two adjacent floats f[0], f[1] as eight copies each: [f0 x 8 | f1 x 8]. */
AVX512_TARGET static INLINE __m512 bcast_pair(const float *f)
{
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                 _mm512_maskz_loadu_ps(0x3, f));
}

/* Both outputs of a two-output accumulator: hsum of each half plus its offset sum. */
AVX512_TARGET static INLINE void hsum_pair(__m512 acc, float s0, float s1, float *o0, float *o1)
{
    *o0 = hsum8(_mm512_castps512_ps256(acc)) + s0;
    *o1 = hsum8(_mm512_extractf32x8_ps(acc, 1)) + s1;
}

static inline uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Q4_1, 4 rows x 2P tokens: accumulator (r, p) holds tokens 2p and 2p + 1 of row r. dt, st:
 * tables with 8 tokens per block. */
AVX512_TARGET static INLINE void q4_1_tile_avx512(int nb, const struct eng_block_q4_1 *const *w,
                                                  const struct eng_block_q8_1 *const *a,
                                                  const float *dt, const float *st, const int P,
                                                  float out[][8])
{
    __m512 acc[4][4];
    __m256 sm[4];
    UNROLL
    for (int r = 0; r < 4; r++) {
        sm[r] = _mm256_setzero_ps();
        UNROLL
        for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
    }
    for (int i = 0; i < nb; i++) {
        __m512i y[4];
        __m512 da[4];
        UNROLL
        for (int p = 0; p < P; p++) {
            y[p] = load_2x32(a[2 * p][i].qs, a[2 * p + 1][i].qs);
            da[p] = bcast_pair(dt + i * 8 + 2 * p);
        }
        const __m256 s = _mm256_loadu_ps(st + i * 8);
        UNROLL
        for (int r = 0; r < 4; r++) {
            const __m512i x = unpack_q4_x2(w[r][i].qs);
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)w[r][i].d));
            const __m256 m = _mm256_cvtph_ps(_mm_set1_epi16((short)w[r][i].m));
            sm[r] = _mm256_add_ps(sm[r], _mm256_mul_ps(m, s));
            UNROLL
            for (int p = 0; p < P; p++) {
                const __m512 q =
                    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y[p]));
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da[p]), q, acc[r][p]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < 4; r++) {
        float s[8];
        _mm256_storeu_ps(s, sm[r]);
        UNROLL
        for (int p = 0; p < P; p++)
            hsum_pair(acc[r][p], s[2 * p], s[2 * p + 1], &out[r][2 * p], &out[r][2 * p + 1]);
    }
}

/* Q4_1, 8 rows x 1 token: accumulator q holds rows 2q and 2q + 1. */
AVX512_TARGET static INLINE void q4_1_rows_avx512(int nb, const struct eng_block_q4_1 *const *w,
                                                  const struct eng_block_q8_1 *a, float out[8])
{
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m512 acc[4];
    __m128 sm[4]; /* lanes 1 and 3: the offset sums of rows 2q and 2q + 1 */
    UNROLL
    for (int q = 0; q < 4; q++) {
        acc[q] = _mm512_setzero_ps();
        sm[q] = _mm_setzero_ps();
    }
    for (int i = 0; i < nb; i++) {
        const __m512i y = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a[i].qs));
        const __m512 da = _mm512_set1_ps(a[i].d);
        const __m128 s = _mm_set1_ps(a[i].s);
        UNROLL
        for (int q = 0; q < 4; q++) {
            const struct eng_block_q4_1 *b0 = &w[2 * q][i], *b1 = &w[2 * q + 1][i];
            const __m512i x = unpack_q4_2rows(b0->qs, b1->qs);
            /* d0, m0, d1, m1 as floats. */
            const __m128 dm = _mm_cvtph_ps(
                _mm_insert_epi32(_mm_cvtsi32_si128((int)load_u32(b0)), (int)load_u32(b1), 1));
            const __m512 dw = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(dm));
            sm[q] = _mm_add_ps(sm[q], _mm_mul_ps(dm, s));
            const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), x, y));
            acc[q] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), p, acc[q]);
        }
    }
    UNROLL
    for (int q = 0; q < 4; q++) {
        float s[4];
        _mm_storeu_ps(s, sm[q]);
        hsum_pair(acc[q], s[1], s[3], &out[2 * q], &out[2 * q + 1]);
    }
}

/* Lane sums of signed Q8_0 weights x and activations y with vpdpbusd, which multiplies unsigned
 * by signed bytes: (x + 128) * y summed, starting from bias = -128 * (lane sums of y). */
AVX512_TARGET static INLINE __m512i q8_bias(__m512i y)
{
    return _mm512_sub_epi32(_mm512_setzero_si512(),
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), y));
}

/* Q8_0, 4 rows x 2P tokens; dt: table with 8 tokens per block. */
AVX512_TARGET static INLINE void q8_0_tile_avx512(int nb, const struct eng_block_q8_0 *const *w,
                                                  const struct eng_block_q8_0 *const *a,
                                                  const float *dt, const int P, float out[][8])
{
    __m512 acc[4][4];
    UNROLL
    for (int r = 0; r < 4; r++) UNROLL
    for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        __m512i y[4], bias[4];
        __m512 da[4];
        UNROLL
        for (int p = 0; p < P; p++) {
            y[p] = load_2x32(a[2 * p][i].qs, a[2 * p + 1][i].qs);
            bias[p] = q8_bias(y[p]);
            da[p] = bcast_pair(dt + i * 8 + 2 * p);
        }
        UNROLL
        for (int r = 0; r < 4; r++) {
            const __m512i x = _mm512_xor_si512(
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w[r][i].qs)),
                _mm512_set1_epi8(-128));
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)w[r][i].d));
            UNROLL
            for (int p = 0; p < P; p++) {
                const __m512 q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(bias[p], x, y[p]));
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da[p]), q, acc[r][p]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < 4; r++) UNROLL
    for (int p = 0; p < P; p++)
        hsum_pair(acc[r][p], 0.0f, 0.0f, &out[r][2 * p], &out[r][2 * p + 1]);
}

/* Q8_0, 8 rows x 1 token. */
AVX512_TARGET static INLINE void q8_0_rows_avx512(int nb, const struct eng_block_q8_0 *const *w,
                                                  const struct eng_block_q8_0 *a, float out[8])
{
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 acc[4];
    UNROLL
    for (int q = 0; q < 4; q++) acc[q] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const __m512i y = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a[i].qs));
        const __m512i bias = q8_bias(y);
        const __m512 da = _mm512_set1_ps(_cvtsh_ss(a[i].d));
        UNROLL
        for (int q = 0; q < 4; q++) {
            const struct eng_block_q8_0 *b0 = &w[2 * q][i], *b1 = &w[2 * q + 1][i];
            const __m512i x = _mm512_xor_si512(load_2x32(b0->qs, b1->qs), _mm512_set1_epi8(-128));
            const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(b0->d | (uint32_t)b1->d << 16)));
            const __m512 dw = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
            const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(bias, x, y));
            acc[q] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), p, acc[q]);
        }
    }
    UNROLL
    for (int q = 0; q < 4; q++) hsum_pair(acc[q], 0.0f, 0.0f, &out[2 * q], &out[2 * q + 1]);
}

AVX512_TARGET static void mm_q4_1_avx512(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                                         const void *act, size_t act_row_bytes, int n_tok, float *y,
                                         int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    if (nb > MM_MAX_BLOCKS) {
        mm_each(eng__vec_dot_q4_1_q8_1_ggml, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
                n_tok, y, y_stride);
        return;
    }
    if (n_tok == 1) {
        /* Tile k takes rows k, k + part, ..., k + 7 part: each of its eight loads walks its own
         * contiguous range of rows with a constant stride, which the hardware prefetchers
         * follow. Eight adjacent rows instead would make the weights come in at half the speed
         * or less (a jump at every row end breaks the stride). */
        const int part = (n_rows + 7) / 8;
        for (int r = 0; r < part; r++) {
            const struct eng_block_q4_1 *wr[8];
            for (int k = 0; k < 8; k++) {
                const int row = r + k * part < n_rows ? r + k * part : n_rows - 1;
                wr[k] = (const void *)((const unsigned char *)w + (size_t)row * w_row_bytes);
            }
            float out[8];
            q4_1_rows_avx512(nb, wr, act, out);
            for (int k = 0; k < 8; k++)
                if (r + k * part < n_rows) y[r + k * part] = out[k];
        }
        return;
    }
    float dt[MM_MAX_BLOCKS * 8], st[MM_MAX_BLOCKS * 8];
    for (int t0 = 0; t0 < n_tok; t0 += 8) {
        const int nt = n_tok - t0 < 8 ? n_tok - t0 : 8;
        const void *at = (const unsigned char *)act + (size_t)t0 * act_row_bytes;
        const struct eng_block_q8_1 *a[8];
        for (int t = 0; t < 8; t++) a[t] = tile_row(at, act_row_bytes, 0, nt, t);
        tables_q8_1(at, act_row_bytes, nb, nt, 8, dt, st);
        for (int r0 = 0; r0 < n_rows; r0 += 4) {
            const int nr = n_rows - r0 < 4 ? n_rows - r0 : 4;
            const struct eng_block_q4_1 *wr[4];
            for (int r = 0; r < 4; r++) wr[r] = tile_row(w, w_row_bytes, r0, nr, r);
            float out[4][8];
            switch ((nt + 1) / 2) {
            case 1:
                q4_1_tile_avx512(nb, wr, a, dt, st, 1, out);
                break;
            case 2:
                q4_1_tile_avx512(nb, wr, a, dt, st, 2, out);
                break;
            case 3:
                q4_1_tile_avx512(nb, wr, a, dt, st, 3, out);
                break;
            default:
                q4_1_tile_avx512(nb, wr, a, dt, st, 4, out);
                break;
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r0 + r] = out[r][t];
        }
    }
}

AVX512_TARGET static void mm_q8_0_avx512(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                                         const void *act, size_t act_row_bytes, int n_tok, float *y,
                                         int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    if (nb > MM_MAX_BLOCKS) {
        mm_each(eng__vec_dot_q8_0_q8_0_ggml, n_cols, w, w_row_bytes, n_rows, act, act_row_bytes,
                n_tok, y, y_stride);
        return;
    }
    if (n_tok == 1) {
        /* Tile k takes rows k, k + part, ..., k + 7 part: each of its eight loads walks its own
         * contiguous range of rows with a constant stride, which the hardware prefetchers
         * follow. Eight adjacent rows instead would make the weights come in at half the speed
         * or less (a jump at every row end breaks the stride). */
        const int part = (n_rows + 7) / 8;
        for (int r = 0; r < part; r++) {
            const struct eng_block_q8_0 *wr[8];
            for (int k = 0; k < 8; k++) {
                const int row = r + k * part < n_rows ? r + k * part : n_rows - 1;
                wr[k] = (const void *)((const unsigned char *)w + (size_t)row * w_row_bytes);
            }
            float out[8];
            q8_0_rows_avx512(nb, wr, act, out);
            for (int k = 0; k < 8; k++)
                if (r + k * part < n_rows) y[r + k * part] = out[k];
        }
        return;
    }
    float dt[MM_MAX_BLOCKS * 8];
    for (int t0 = 0; t0 < n_tok; t0 += 8) {
        const int nt = n_tok - t0 < 8 ? n_tok - t0 : 8;
        const void *at = (const unsigned char *)act + (size_t)t0 * act_row_bytes;
        const struct eng_block_q8_0 *a[8];
        for (int t = 0; t < 8; t++) a[t] = tile_row(at, act_row_bytes, 0, nt, t);
        tables_q8_0(at, act_row_bytes, nb, nt, 8, dt);
        for (int r0 = 0; r0 < n_rows; r0 += 4) {
            const int nr = n_rows - r0 < 4 ? n_rows - r0 : 4;
            const struct eng_block_q8_0 *wr[4];
            for (int r = 0; r < 4; r++) wr[r] = tile_row(w, w_row_bytes, r0, nr, r);
            float out[4][8];
            switch ((nt + 1) / 2) {
            case 1:
                q8_0_tile_avx512(nb, wr, a, dt, 1, out);
                break;
            case 2:
                q8_0_tile_avx512(nb, wr, a, dt, 2, out);
                break;
            case 3:
                q8_0_tile_avx512(nb, wr, a, dt, 3, out);
                break;
            default:
                q8_0_tile_avx512(nb, wr, a, dt, 4, out);
                break;
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r0 + r] = out[r][t];
        }
    }
}

#endif /* HAVE_X86_SIMD */

/* ---- the tables ---- */

static const struct eng_mm_kernels q4_1_portable = {eng__quantize_row_q8_1_ggml, mm_q4_1_portable};
static const struct eng_mm_kernels q8_0_portable = {eng__quantize_row_q8_0, mm_q8_0_portable};
#if HAVE_X86_SIMD
static const struct eng_mm_kernels q4_1_avx2 = {quantize_q8_1_avx2, mm_q4_1_avx2};
static const struct eng_mm_kernels q8_0_avx2 = {quantize_q8_0_avx2, mm_q8_0_avx2};
static const struct eng_mm_kernels q4_1_avx512 = {quantize_q8_1_avx2, mm_q4_1_avx512};
static const struct eng_mm_kernels q8_0_avx512 = {quantize_q8_0_avx2, mm_q8_0_avx512};
#endif

const struct eng_mm_kernels *eng__mm_kernels(int type, enum eng_cpu_level level)
{
    if (level > eng_cpu_level_supported()) level = eng_cpu_level_supported();
    const bool q4 = type == ENG_GGML_Q4_1;
    if (!q4 && type != ENG_GGML_Q8_0) return NULL;
#if HAVE_X86_SIMD
    if (level >= ENG_CPU_AVX512) return q4 ? &q4_1_avx512 : &q8_0_avx512;
    if (level >= ENG_CPU_AVX2) return q4 ? &q4_1_avx2 : &q8_0_avx2;
#endif
    return q4 ? &q4_1_portable : &q8_0_portable;
}
