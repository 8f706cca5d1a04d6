/*
 * mm_packed.c - the packed Q4_1 layout and its AVX-512 VNNI kernel (mm_packed.h).
 *
 * Layout, per group of 16 rows, block after block: 16 f16 scales d, 16 f16 offsets m, then for
 * k = 0..3 the bytes qs[4k..4k+3] of rows 0..15 (64 bytes). Byte qs[j] holds value j in its low
 * nibble and value j + 16 in its high nibble (ggml's Q4_1), so chunk k gives values 4k..4k+3
 * (low nibbles) and 16+4k..16+4k+3 (high nibbles) of every row: one 64-byte load feeds two VNNI
 * dot products, against activation bytes 4k..4k+3 and 16+4k..16+4k+3.
 */
#include "mm_packed.h"

#include <string.h>

#include "cpu.h"
#include "../fp16.h"
#include "../quant.h"

#define GROUP_BLOCK_BYTES (ENG_PACK_ROWS * 4 + ENG_PACK_ROWS * ENG_QK / 2) /* 288 */

/* The loop every packer shares: for each group of 16 rows and each block, fn packs block b of
 * row r (src, src_bytes per block) into the group's block (group_block_bytes, out). */
void eng__pack_each(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_blocks,
                    size_t src_bytes, size_t group_block_bytes, eng_pack_fn fn)
{
    unsigned char *out = dst;
    for (int64_t g = 0; g < n_rows / ENG_PACK_ROWS; g++)
        for (int64_t b = 0; b < n_blocks; b++, out += group_block_bytes)
            for (int r = 0; r < ENG_PACK_ROWS; r++)
                fn(out,
                   (const unsigned char *)w + (size_t)(g * ENG_PACK_ROWS + r) * row_bytes +
                       (size_t)b * src_bytes,
                   r);
}

size_t eng__pack_q4_1_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK) * GROUP_BLOCK_BYTES;
}

static void pack_q4_1_block(unsigned char *out, const void *src, int r)
{
    const struct eng_block_q4_1 *blk = src;
    uint16_t *d = (uint16_t *)(void *)out, *m = d + ENG_PACK_ROWS;
    unsigned char *qs = out + ENG_PACK_ROWS * 4;
    d[r] = blk->d;
    m[r] = blk->m;
    for (int k = 0; k < 4; k++) memcpy(qs + k * 64 + r * 4, blk->qs + 4 * k, 4);
}

void eng__pack_q4_1(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    eng__pack_each(dst, w, row_bytes, n_rows, n_cols / ENG_QK, sizeof(struct eng_block_q4_1),
                   GROUP_BLOCK_BYTES, pack_q4_1_block);
}

/* Q8_0: per block and group, 16 f16 scales, then for k = 0..7 bytes 4k..4k+3 of rows 0..15 with
 * 128 added (unsigned, for VNNI's unsigned-by-signed products; the kernel takes 128 times the
 * activations' sum back off). */
#define GROUP_BLOCK_BYTES_Q8 (ENG_PACK_ROWS * 2 + ENG_PACK_ROWS * ENG_QK) /* 544 */

size_t eng__pack_q8_0_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK) * GROUP_BLOCK_BYTES_Q8;
}

static void pack_q8_0_block(unsigned char *out, const void *src, int r)
{
    const struct eng_block_q8_0 *blk = src;
    unsigned char *qs = out + ENG_PACK_ROWS * 2;
    memcpy(out + 2 * r, &blk->d, 2);
    for (int k = 0; k < 8; k++)
        for (int i = 0; i < 4; i++)
            qs[k * 64 + r * 4 + i] = (unsigned char)(blk->qs[4 * k + i] + 128);
}

void eng__pack_q8_0(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    eng__pack_each(dst, w, row_bytes, n_rows, n_cols / ENG_QK, sizeof(struct eng_block_q8_0),
                   GROUP_BLOCK_BYTES_Q8, pack_q8_0_block);
}

/* Q5_0: per block and group, 16 f16 scales, the 4-byte chunks k = 0..3 of qs for rows 0..15
 * (64 bytes each, nibbles as in Q4_1's packing: values 4k..4k+3 low, 16+4k.. high), then 64
 * bytes of fifth bits: byte 4r + i holds in bit k the fifth bit of value 4k + i of row r and in
 * bit 4 + k that of value 16 + 4k + i, so that one shift moves chunk k's bits to bit 4. */
#define Q5_QS                (ENG_PACK_ROWS * 2)
#define Q5_QH                (Q5_QS + ENG_PACK_ROWS * ENG_QK / 2)
#define GROUP_BLOCK_BYTES_Q5 (Q5_QH + ENG_PACK_ROWS * 4) /* 352: the size of 16 Q5_0 blocks */

size_t eng__pack_q5_0_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK) * GROUP_BLOCK_BYTES_Q5;
}

static void pack_q5_0_block(unsigned char *out, const void *src, int r)
{
    const struct eng_block_q5_0 *blk = src;
    uint32_t qh;
    memcpy(&qh, blk->qh, 4);
    memcpy(out + 2 * r, &blk->d, 2);
    for (int k = 0; k < 4; k++) memcpy(out + Q5_QS + k * 64 + r * 4, blk->qs + 4 * k, 4);
    for (int i = 0; i < 4; i++) {
        unsigned byte = 0;
        for (int k = 0; k < 4; k++) {
            byte |= ((qh >> (4 * k + i)) & 1u) << k;
            byte |= ((qh >> (16 + 4 * k + i)) & 1u) << (4 + k);
        }
        out[Q5_QH + 4 * r + i] = (unsigned char)byte;
    }
}

void eng__pack_q5_0(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    eng__pack_each(dst, w, row_bytes, n_rows, n_cols / ENG_QK, sizeof(struct eng_block_q5_0),
                   GROUP_BLOCK_BYTES_Q5, pack_q5_0_block);
}

void eng__unpack_q8_0_row(const void *p, int64_t n_cols, int64_t row, float *y)
{
    const int64_t nb = n_cols / ENG_QK;
    const int rr = (int)(row % ENG_PACK_ROWS);
    const unsigned char *blk = (const unsigned char *)p +
                               (size_t)(row / ENG_PACK_ROWS) * (size_t)nb * GROUP_BLOCK_BYTES_Q8;
    for (int64_t b = 0; b < nb; b++, blk += GROUP_BLOCK_BYTES_Q8, y += ENG_QK) {
        uint16_t dh;
        memcpy(&dh, blk + 2 * rr, 2);
        const float d = eng_fp16_to_fp32(dh);
        const unsigned char *qs = blk + ENG_PACK_ROWS * 2 + rr * 4;
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 4; i++) y[4 * k + i] = d * (float)((int)qs[k * 64 + i] - 128);
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
#define AVX512_TARGET                                                                              \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

int eng__pack_available(void)
{
    return eng_cpu_level() >= ENG_CPU_AVX512;
}

static inline int32_t load_i32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

#define TMAX                                                                                       \
    8 /* tokens per pass: their accumulators and the unpacked weights fill the registers           \
       */
#define UNROLL _Pragma("GCC unroll 8")
/* Runs stmt, in which T_ stands for t, with T_ a constant 1..TMAX (t >= TMAX: TMAX): constant
 * trip counts keep a kernel's accumulators in registers. */
// clang-format off
#define CASE_T(k, stmt) case k: { enum { T_ = k }; stmt; } break;
#define WITH_CONST_T(t, stmt)                                                                      \
    do {                                                                                           \
        switch (t) {                                                                               \
        CASE_T(1, stmt) CASE_T(2, stmt) CASE_T(3, stmt) CASE_T(4, stmt)                            \
        CASE_T(5, stmt) CASE_T(6, stmt) CASE_T(7, stmt)                                            \
        default: { enum { T_ = TMAX }; stmt; } break;                                              \
        }                                                                                          \
    } while (0)
// clang-format on

/* The weights stream from memory: with several tokens a kernel's loads come too far apart for
 * the hardware prefetcher to keep up, so it fetches the group block `ahead` blocks on (a
 * group's blocks, then the next group's, lie end to end). One token streams fast enough
 * without. */
#define PREFETCH_AHEAD(T, p, block_bytes, ahead)                                                   \
    do {                                                                                           \
        if ((T) > 1) {                                                                             \
            UNROLL                                                                                 \
            for (int l_ = 0; l_ < (block_bytes); l_ += 64)                                         \
                _mm_prefetch((const char *)(p) + (ahead) * (block_bytes) + l_, _MM_HINT_T0);       \
        }                                                                                          \
    } while (0)

#ifndef Q4_PREFETCH
#define Q4_PREFETCH 12 /* blocks ahead */
#endif
#ifndef Q8_PREFETCH
#define Q8_PREFETCH 8
#endif

/* Up to T tokens (1..TMAX) against one group of 16 rows. The integer sums of the T tokens are
 * built side by side (chunk after chunk, each chunk's two VNNI products for every token in
 * turn), so consecutive products never wait on each other; the float work per token and block
 * is the same as one token's. */
AVX512_TARGET static inline __attribute__((always_inline)) void
group_tokens(int nb, const unsigned char *p, const struct eng_block_q8_1 *const *a, const int T,
             __m512 acc[TMAX])
{
    const __m512i lo = _mm512_set1_epi8(0x0F);
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += GROUP_BLOCK_BYTES) {
        PREFETCH_AHEAD(T, p, GROUP_BLOCK_BYTES, Q4_PREFETCH);
        __m512i s[TMAX];
        UNROLL
        for (int t = 0; t < T; t++) s[t] = _mm512_setzero_si512();
        UNROLL
        for (int k = 0; k < 4; k++) {
            const __m512i x = _mm512_loadu_si512(p + 64 + 64 * k);
            const __m512i wl = _mm512_and_si512(x, lo);
            const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(x, 4), lo);
            UNROLL
            for (int t = 0; t < T; t++)
                s[t] =
                    _mm512_dpbusd_epi32(s[t], wl, _mm512_set1_epi32(load_i32(a[t][b].qs + 4 * k)));
            UNROLL
            for (int t = 0; t < T; t++)
                s[t] = _mm512_dpbusd_epi32(s[t], wh,
                                           _mm512_set1_epi32(load_i32(a[t][b].qs + 16 + 4 * k)));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        UNROLL
        for (int t = 0; t < T; t++) {
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(a[t][b].d));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s[t]), acc[t]);
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[t][b].s), acc[t]);
        }
    }
}

AVX512_TARGET void eng__mm_q4_1_packed(int n_cols, const void *p, int n_rows, const void *act,
                                       size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    const size_t group_bytes = (size_t)nb * GROUP_BLOCK_BYTES;
    for (int g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
        const unsigned char *pg = (const unsigned char *)p + (size_t)g * group_bytes;
        for (int t0 = 0; t0 < n_tok; t0 += TMAX) {
            const int T = n_tok - t0 < TMAX ? n_tok - t0 : TMAX;
            const struct eng_block_q8_1 *a[TMAX];
            for (int t = 0; t < T; t++)
                a[t] = (const struct eng_block_q8_1 *)((const unsigned char *)act +
                                                       (size_t)(t0 + t) * act_row_bytes);
            __m512 acc[TMAX];
            WITH_CONST_T(T, group_tokens(nb, pg, a, T_, acc));
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, acc[t]);
        }
    }
}

/* Up to T tokens (1..TMAX) against one group of 16 Q8_0 rows; sums[t][b] is 128 x the sum of
 * token t's codes in block b. As in group_tokens, the T integer sums are built side by side. */
AVX512_TARGET static inline __attribute__((always_inline)) void
group_tokens_q8(int nb, const unsigned char *p, const struct eng_block_q8_0 *const *a,
                const int32_t *const *sums, const int T, __m512 acc[TMAX])
{
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += GROUP_BLOCK_BYTES_Q8) {
        PREFETCH_AHEAD(T, p, GROUP_BLOCK_BYTES_Q8, Q8_PREFETCH);
        __m512i s[TMAX];
        UNROLL
        for (int t = 0; t < T; t++) s[t] = _mm512_set1_epi32(-sums[t][b]);
        UNROLL
        for (int k = 0; k < 8; k++) {
            const __m512i w = _mm512_loadu_si512(p + 32 + 64 * k);
            UNROLL
            for (int t = 0; t < T; t++) /* qs is 2 bytes into its block: unaligned loads */
                s[t] =
                    _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(load_i32(a[t][b].qs + 4 * k)));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        UNROLL
        for (int t = 0; t < T; t++) {
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(eng_fp16_to_fp32(a[t][b].d)));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s[t]), acc[t]);
        }
    }
}

AVX512_TARGET void eng__mm_q8_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                                       size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    const size_t group_bytes = (size_t)nb * GROUP_BLOCK_BYTES_Q8;
    for (int t0 = 0; t0 < n_tok; t0 += TMAX) {
        const int T = n_tok - t0 < TMAX ? n_tok - t0 : TMAX;
        const struct eng_block_q8_0 *a[TMAX];
        int32_t sum_buf[TMAX][ENG_PACK_MAX_BLOCKS];
        const int32_t *sums[TMAX];
        for (int t = 0; t < T; t++) {
            a[t] = (const struct eng_block_q8_0 *)((const unsigned char *)act +
                                                   (size_t)(t0 + t) * act_row_bytes);
            for (int b = 0; b < nb; b++) {
                int32_t sum = 0;
                for (int i = 0; i < ENG_QK; i++) sum += a[t][b].qs[i];
                sum_buf[t][b] = 128 * sum;
            }
            sums[t] = sum_buf[t];
        }
        for (int g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
            const unsigned char *pg = (const unsigned char *)p + (size_t)g * group_bytes;
            __m512 acc[TMAX];
            WITH_CONST_T(T, group_tokens_q8(nb, pg, a, sums, T_, acc));
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, acc[t]);
        }
    }
}

/* Q5_0 in ggml's order: its dot product keeps eight float lanes per output, lane j summing, block
 * after block, fma(d_w * d_a, (float)isum_j, lane_j) where isum_j is the integer sum of the
 * products of values 4j..4j+3 (values 0..15 are the low nibbles, 16..31 the high ones); the lanes
 * are then added as hsum_float_8 adds them. Here register acc[t][j] holds lane j of 16 rows (one
 * row per 32-bit element): chunk k's low nibbles feed lane k, its high nibbles lane 4 + k, so
 * each lane gets its own VNNI product, conversion and fused multiply-add, exactly the single
 * dot's operations. bias[t][b][j] is -16 x the sum of token t's codes 4j..4j+3 of block b (the
 * codes are stored unsigned, 0..31). */
#define Q5_TMAX 3
AVX512_TARGET static inline __attribute__((always_inline)) void
group_tokens_q5(int nb, const unsigned char *p, const struct eng_block_q8_0 *const *a,
                const int32_t *const *bias, const int T, __m512 out[Q5_TMAX])
{
    const __m512i lo = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    __m512 acc[Q5_TMAX][8];
    UNROLL
    for (int t = 0; t < T; t++) UNROLL
    for (int j = 0; j < 8; j++) acc[t][j] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += GROUP_BLOCK_BYTES_Q5) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const __m512i h = _mm512_loadu_si512(p + Q5_QH);
        __m512 dd[Q5_TMAX];
        UNROLL
        for (int t = 0; t < T; t++)
            dd[t] = _mm512_mul_ps(dw, _mm512_set1_ps(eng_fp16_to_fp32(a[t][b].d)));
        UNROLL
        for (int k = 0; k < 4; k++) {
            const __m512i x = _mm512_loadu_si512(p + Q5_QS + 64 * k);
            /* A | (B & C): the nibble with its fifth bit moved to bit 4 */
            const __m512i wl = _mm512_ternarylogic_epi32(_mm512_and_si512(x, lo),
                                                         _mm512_slli_epi16(h, 4 - k), bit4, 0xF8);
            const __m512i wh = _mm512_ternarylogic_epi32(
                _mm512_and_si512(_mm512_srli_epi16(x, 4), lo), _mm512_srli_epi16(h, k), bit4, 0xF8);
            UNROLL
            for (int t = 0; t < T; t++) {
                const int8_t *q = a[t][b].qs;
                const int32_t *bs = bias[t] + 8 * b;
                const __m512i sl = _mm512_dpbusd_epi32(_mm512_set1_epi32(bs[k]), wl,
                                                       _mm512_set1_epi32(load_i32(q + 4 * k)));
                const __m512i sh = _mm512_dpbusd_epi32(_mm512_set1_epi32(bs[4 + k]), wh,
                                                       _mm512_set1_epi32(load_i32(q + 16 + 4 * k)));
                acc[t][k] = _mm512_fmadd_ps(dd[t], _mm512_cvtepi32_ps(sl), acc[t][k]);
                acc[t][4 + k] = _mm512_fmadd_ps(dd[t], _mm512_cvtepi32_ps(sh), acc[t][4 + k]);
            }
        }
    }
    UNROLL
    for (int t = 0; t < T; t++) { /* hsum_float_8's order */
        const __m512 s04 = _mm512_add_ps(acc[t][4], acc[t][0]);
        const __m512 s26 = _mm512_add_ps(acc[t][6], acc[t][2]);
        const __m512 s15 = _mm512_add_ps(acc[t][5], acc[t][1]);
        const __m512 s37 = _mm512_add_ps(acc[t][7], acc[t][3]);
        out[t] = _mm512_add_ps(_mm512_add_ps(s04, s26), _mm512_add_ps(s15, s37));
    }
}

AVX512_TARGET void eng__mm_q5_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                                       size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    const size_t group_bytes = (size_t)nb * GROUP_BLOCK_BYTES_Q5;
    int32_t bias_buf[Q5_TMAX][8 * ENG_PACK_MAX_BLOCKS];
    for (int t0 = 0; t0 < n_tok; t0 += Q5_TMAX) {
        const int T = n_tok - t0 < Q5_TMAX ? n_tok - t0 : Q5_TMAX;
        const struct eng_block_q8_0 *a[Q5_TMAX];
        const int32_t *bias[Q5_TMAX];
        for (int t = 0; t < T; t++) {
            a[t] = (const struct eng_block_q8_0 *)((const unsigned char *)act +
                                                   (size_t)(t0 + t) * act_row_bytes);
            for (int b = 0; b < nb; b++)
                for (int j = 0; j < 8; j++) {
                    const int8_t *q = a[t][b].qs + 4 * j;
                    bias_buf[t][8 * b + j] = -16 * (q[0] + q[1] + q[2] + q[3]);
                }
            bias[t] = bias_buf[t];
        }
        for (int g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
            const unsigned char *pg = (const unsigned char *)p + (size_t)g * group_bytes;
            __m512 out[Q5_TMAX];
            switch (T) { /* constant trip counts keep the accumulators in registers */
            case 1:
                group_tokens_q5(nb, pg, a, bias, 1, out);
                break;
            case 2:
                group_tokens_q5(nb, pg, a, bias, 2, out);
                break;
            default:
                group_tokens_q5(nb, pg, a, bias, 3, out);
                break;
            }
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, out[t]);
        }
    }
}

#else

void eng__mm_q5_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    (void)n_cols, (void)p, (void)n_rows, (void)act, (void)act_row_bytes, (void)n_tok, (void)y,
        (void)y_stride;
}

void eng__mm_q8_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    (void)n_cols, (void)p, (void)n_rows, (void)act, (void)act_row_bytes, (void)n_tok, (void)y,
        (void)y_stride;
}

int eng__pack_available(void)
{
    return 0;
}

void eng__mm_q4_1_packed(int n_cols, const void *p, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    (void)n_cols, (void)p, (void)n_rows, (void)act, (void)act_row_bytes, (void)n_tok, (void)y,
        (void)y_stride;
}

#endif
