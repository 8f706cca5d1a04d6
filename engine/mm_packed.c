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
#include "fp16.h"
#include "quant.h"

#define GROUP_BLOCK_BYTES (ENG_PACK_ROWS * 4 + ENG_PACK_ROWS * ENG_QK / 2) /* 288 */

size_t eng__pack_q4_1_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK) * GROUP_BLOCK_BYTES;
}

void eng__pack_q4_1(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    const int64_t nb = n_cols / ENG_QK;
    unsigned char *out = dst;
    for (int64_t g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint16_t *d = (uint16_t *)out, *m = d + ENG_PACK_ROWS;
            unsigned char *qs = out + ENG_PACK_ROWS * 4;
            for (int r = 0; r < ENG_PACK_ROWS; r++) {
                const struct eng_block_q4_1 *blk =
                    (const struct eng_block_q4_1 *)((const unsigned char *)w +
                                                    (size_t)(g * ENG_PACK_ROWS + r) * row_bytes) +
                    b;
                d[r] = blk->d;
                m[r] = blk->m;
                for (int k = 0; k < 4; k++) memcpy(qs + k * 64 + r * 4, blk->qs + 4 * k, 4);
            }
            out += GROUP_BLOCK_BYTES;
        }
    }
}

/* Q8_0: per block and group, 16 f16 scales, then for k = 0..7 bytes 4k..4k+3 of rows 0..15 with
 * 128 added (unsigned, for VNNI's unsigned-by-signed products; the kernel takes 128 times the
 * activations' sum back off). */
#define GROUP_BLOCK_BYTES_Q8 (ENG_PACK_ROWS * 2 + ENG_PACK_ROWS * ENG_QK) /* 544 */

size_t eng__pack_q8_0_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK) * GROUP_BLOCK_BYTES_Q8;
}

void eng__pack_q8_0(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    const int64_t nb = n_cols / ENG_QK;
    unsigned char *out = dst;
    for (int64_t g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint16_t *d = (uint16_t *)out;
            unsigned char *qs = out + ENG_PACK_ROWS * 2;
            for (int r = 0; r < ENG_PACK_ROWS; r++) {
                const struct eng_block_q8_0 *blk =
                    (const struct eng_block_q8_0 *)((const unsigned char *)w +
                                                    (size_t)(g * ENG_PACK_ROWS + r) * row_bytes) +
                    b;
                d[r] = blk->d;
                for (int k = 0; k < 8; k++)
                    for (int i = 0; i < 4; i++)
                        qs[k * 64 + r * 4 + i] = (unsigned char)(blk->qs[4 * k + i] + 128);
            }
            out += GROUP_BLOCK_BYTES_Q8;
        }
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

/* Up to T tokens (1..TMAX) against one group of 16 rows. */
AVX512_TARGET static inline __attribute__((always_inline)) void
group_tokens(int nb, const unsigned char *p, const struct eng_block_q8_1 *const *a, const int T,
             __m512 acc[TMAX])
{
    const __m512i lo = _mm512_set1_epi8(0x0F);
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += GROUP_BLOCK_BYTES) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        __m512i wl[4], wh[4];
        UNROLL
        for (int k = 0; k < 4; k++) {
            const __m512i x = _mm512_loadu_si512(p + 64 + 64 * k);
            wl[k] = _mm512_and_si512(x, lo);
            wh[k] = _mm512_and_si512(_mm512_srli_epi16(x, 4), lo);
        }
        UNROLL
        for (int t = 0; t < T; t++) {
            const struct eng_block_q8_1 *ab = &a[t][b];
            const int32_t *q = (const int32_t *)ab->qs;
            __m512i s = _mm512_setzero_si512();
            UNROLL
            for (int k = 0; k < 4; k++) {
                s = _mm512_dpbusd_epi32(s, wl[k], _mm512_set1_epi32(q[k]));
                s = _mm512_dpbusd_epi32(s, wh[k], _mm512_set1_epi32(q[4 + k]));
            }
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(ab->d));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[t]);
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ab->s), acc[t]);
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
            switch (T) { /* constant trip counts keep the accumulators in registers */
            case 1:
                group_tokens(nb, pg, a, 1, acc);
                break;
            case 2:
                group_tokens(nb, pg, a, 2, acc);
                break;
            case 3:
                group_tokens(nb, pg, a, 3, acc);
                break;
            case 4:
                group_tokens(nb, pg, a, 4, acc);
                break;
            case 5:
                group_tokens(nb, pg, a, 5, acc);
                break;
            case 6:
                group_tokens(nb, pg, a, 6, acc);
                break;
            case 7:
                group_tokens(nb, pg, a, 7, acc);
                break;
            default:
                group_tokens(nb, pg, a, 8, acc);
                break;
            }
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, acc[t]);
        }
    }
}

/* Up to T tokens (1..4) against one group of 16 Q8_0 rows; sums[t][b] is 128 x the sum of
 * token t's codes in block b. */
AVX512_TARGET static inline void group_tokens_q8(int nb, const unsigned char *p,
                                                 const struct eng_block_q8_0 *const *a,
                                                 const int32_t *const *sums, int T, __m512 acc[4])
{
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += GROUP_BLOCK_BYTES_Q8) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512i w[8];
        for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512(p + 32 + 64 * k);
        for (int t = 0; t < T; t++) {
            const struct eng_block_q8_0 *ab = &a[t][b];
            const int8_t *q = ab->qs; /* 2 bytes into its block: loads are unaligned */
            __m512i s = _mm512_set1_epi32(-sums[t][b]);
            for (int k = 0; k < 8; k++)
                s = _mm512_dpbusd_epi32(s, w[k], _mm512_set1_epi32(load_i32(q + 4 * k)));
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(eng_fp16_to_fp32(ab->d)));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[t]);
        }
    }
}

AVX512_TARGET void eng__mm_q8_0_packed(int n_cols, const void *p, int n_rows, const void *act,
                                       size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK;
    const size_t group_bytes = (size_t)nb * GROUP_BLOCK_BYTES_Q8;
    for (int t0 = 0; t0 < n_tok; t0 += 4) {
        const int T = n_tok - t0 < 4 ? n_tok - t0 : 4;
        const struct eng_block_q8_0 *a[4];
        int32_t sum_buf[4][ENG_PACK_MAX_BLOCKS];
        const int32_t *sums[4];
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
            __m512 acc[4];
            switch (T) {
            case 1:
                group_tokens_q8(nb, pg, a, sums, 1, acc);
                break;
            case 2:
                group_tokens_q8(nb, pg, a, sums, 2, acc);
                break;
            case 3:
                group_tokens_q8(nb, pg, a, sums, 3, acc);
                break;
            default:
                group_tokens_q8(nb, pg, a, sums, 4, acc);
                break;
            }
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, acc[t]);
        }
    }
}

#else

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
