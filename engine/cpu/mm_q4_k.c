/*
 * mm_q4_k.c - a block kernel for Q4_K weights in the order of llama.cpp's 4-token kernel
 * (ggml_gemm_q4_K_8x8_q8_K, eng_qtype_cpu_gemm's entry): the tokens of a prompt batch that
 * llama.cpp multiplies four at a time.
 *
 * That order keeps one float accumulator pair per output: for each 64-value pair p of each
 * 256-value block, acc = fma((float)isum_p, f16(d_w) * d_a, acc) and acc_min =
 * fma((float)imin_p, f16(dmin_w) * d_a, acc_min); the result is acc - acc_min. isum_p (the two
 * sub-blocks' integer dots times their 6-bit scales) and imin_p (the mins times the
 * activation sums) are integers, so any exact integer arithmetic gives the same bits. Here each
 * weight block is unpacked once per row (nibbles as unsigned bytes, scales and mins decoded) and
 * dotted with every token's activations by AVX-512 VNNI (vpdpbusd: unsigned weight bytes times
 * signed activation bytes, four products per int32 lane), the lanes scaled by the sub-block
 * scales and summed. tests/test_mm_q4_k.c compares every output with the dot kernel.
 */
#include "mm_q4_k.h"

#include <math.h>
#include <string.h>

#include "ggml_kernels_q.h"
#include "mm_packed.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
#define HAVE_VNNI   1
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c")))
#else
#define HAVE_VNNI 0
#endif

/* Scales and mins of a block as quant.h packs them (the same decoding as ggml_kernels_q.c). */
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

#if HAVE_VNNI
#define MAX_TOK 64

VNNI_TARGET static void mm_q4_k_gemm_vnni(int n_cols, const void *wv, size_t w_row_bytes,
                                          int n_rows, const void *actv, size_t act_row_bytes,
                                          int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK_K;
    const __m512i low = _mm512_set1_epi8(0x0f);
    float acc[MAX_TOK], acc_min[MAX_TOK];
    for (int t0 = 0; t0 < n_tok; t0 += MAX_TOK) {
        const int nt = n_tok - t0 < MAX_TOK ? n_tok - t0 : MAX_TOK;
        for (int r = 0; r < n_rows; r++) {
            const struct eng_block_q4_K *w =
                (const void *)((const unsigned char *)wv + (size_t)r * w_row_bytes);
            for (int t = 0; t < nt; t++) acc[t] = acc_min[t] = 0.0f;
            for (int i = 0; i < nb; i++) {
                uint8_t sc[8], m[8];
                scales_mins(w[i].scales, sc, m);
                const float wd = _cvtsh_ss(w[i].d), wdm = _cvtsh_ss(w[i].dmin);
                __m512i wq[4], scv[4];
                for (int p = 0; p < 4; p++) {
                    const __m512i q = _mm512_castsi256_si512(
                        _mm256_loadu_si256((const __m256i *)(const void *)(w[i].qs + 32 * p)));
                    const __m512i both = _mm512_inserti64x4(q, _mm512_castsi512_si256(q), 1);
                    /* bytes 0..31: low nibbles (sub-block 2p), 32..63: high (2p + 1) */
                    const __m512i shifted = _mm512_mask_srli_epi16(
                        both, (__mmask32)0xffff0000u, both, 4); /* upper 256 bits shifted */
                    wq[p] = _mm512_and_si512(shifted, low);
                    scv[p] = _mm512_inserti64x4(_mm512_set1_epi32(sc[2 * p]),
                                                _mm256_set1_epi32(sc[2 * p + 1]), 1);
                }
                for (int t = 0; t < nt; t++) {
                    const struct eng_block_q8_K *ai =
                        (const struct eng_block_q8_K *)(const void *)((const unsigned char *)actv +
                                                                      (size_t)(t0 + t) *
                                                                          act_row_bytes) +
                        i;
                    const float ds = wd * ai->d, dm = wdm * ai->d;
                    float ac = acc[t], am = acc_min[t];
                    /* The four pairs' scaled lanes, summed together: lane sums of v0..v3 are
                     * interleaved by 32- then 64-bit unpacks, then the four 128-bit quarters
                     * added, leaving isum_p in element p. Integer adds in any order: exact. */
                    __m512i v[4];
                    for (int p = 0; p < 4; p++)
                        v[p] = _mm512_mullo_epi32(
                            _mm512_dpbusd_epi32(
                                _mm512_setzero_si512(), wq[p],
                                _mm512_loadu_si512((const void *)(ai->qs + 64 * p))),
                            scv[p]);
                    const __m512i x0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]),
                                                        _mm512_unpackhi_epi32(v[0], v[1]));
                    const __m512i x1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]),
                                                        _mm512_unpackhi_epi32(v[2], v[3]));
                    const __m512i x = _mm512_add_epi32(_mm512_unpacklo_epi64(x0, x1),
                                                       _mm512_unpackhi_epi64(x0, x1));
                    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(x),
                                                       _mm512_extracti64x4_epi64(x, 1));
                    const __m128i q4 =
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    int32_t isum[4];
                    _mm_storeu_si128((__m128i *)(void *)isum, q4);
                    for (int p = 0; p < 4; p++) {
                        const int32_t bs0 = ai->bsums[4 * p] + ai->bsums[4 * p + 1];
                        const int32_t bs1 = ai->bsums[4 * p + 2] + ai->bsums[4 * p + 3];
                        const int32_t imin = m[2 * p] * bs0 + m[2 * p + 1] * bs1;
                        ac = fmaf((float)isum[p], ds, ac);
                        am = fmaf((float)imin, dm, am);
                    }
                    acc[t] = ac;
                    acc_min[t] = am;
                }
            }
            for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r] = acc[t] - acc_min[t];
        }
    }
}
#endif

/* ---- the packed layout: 16 rows per 512-bit product ---- */

/* Per block and group of 16 rows: 16 f16 d, 16 f16 dmin, the 8 sub-block scales of rows 0..15
 * (sc[j][r], 128 bytes), the 8 mins the same way (128 bytes), then for pair p = 0..3 and
 * k = 0..7 the bytes qs[32p + 4k .. 32p + 4k + 3] of rows 0..15 side by side (64 bytes each):
 * low nibbles are values 4k..4k+3 of sub-block 2p, high nibbles the same of sub-block 2p + 1. */
#define PK_D     0
#define PK_DMIN  (2 * ENG_PACK_ROWS)
#define PK_SC    (4 * ENG_PACK_ROWS)
#define PK_MIN   (PK_SC + 8 * ENG_PACK_ROWS)
#define PK_QS    (PK_MIN + 8 * ENG_PACK_ROWS)
#define PK_BLOCK (PK_QS + ENG_PACK_ROWS * ENG_QK_K / 2) /* 2368 */

size_t eng__pack_q4_k_bytes(int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / ENG_PACK_ROWS) * (size_t)(n_cols / ENG_QK_K) * PK_BLOCK;
}

static void pack_q4_k_block(unsigned char *out, const void *src, int r)
{
    const struct eng_block_q4_K *blk = src;
    uint8_t sc[8], m[8];
    scales_mins(blk->scales, sc, m);
    memcpy(out + PK_D + 2 * r, &blk->d, 2);
    memcpy(out + PK_DMIN + 2 * r, &blk->dmin, 2);
    for (int j = 0; j < 8; j++) {
        out[PK_SC + j * ENG_PACK_ROWS + r] = sc[j];
        out[PK_MIN + j * ENG_PACK_ROWS + r] = m[j];
    }
    for (int c = 0; c < 32; c++) /* chunk c = 8p + k: qs[32p + 4k ..] = qs[4c ..] */
        memcpy(out + PK_QS + c * 64 + r * 4, blk->qs + 4 * c, 4);
}

void eng__pack_q4_k(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols)
{
    eng__pack_each(dst, w, row_bytes, n_rows, n_cols / ENG_QK_K, sizeof(struct eng_block_q4_K),
                   PK_BLOCK, pack_q4_k_block);
}

#if HAVE_VNNI
/* Up to T (1..PK_TMAX) tokens against one group of 16 packed rows: every lane is one row and
 * sees the 4-token order's operations (see the file header), so its output has those bits. */
#define PK_TMAX 4
VNNI_TARGET static inline __attribute__((always_inline)) void
group_q4_k(int nb, const unsigned char *p, const struct eng_block_q8_K *const *a, const int T,
           __m512 out[PK_TMAX])
{
    const __m512i low = _mm512_set1_epi8(0x0f);
    __m512 acc[PK_TMAX], am[PK_TMAX];
    for (int t = 0; t < T; t++) acc[t] = am[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++, p += PK_BLOCK) {
        const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + PK_D)));
        const __m512 wdm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + PK_DMIN)));
        for (int pr = 0; pr < 4; pr++) {
            __m512i lo[PK_TMAX], hi[PK_TMAX];
            for (int t = 0; t < T; t++) lo[t] = hi[t] = _mm512_setzero_si512();
            const unsigned char *q = p + PK_QS + pr * 8 * 64;
            for (int k = 0; k < 8; k++) {
                const __m512i x = _mm512_loadu_si512((const void *)(q + 64 * k));
                const __m512i wl = _mm512_and_si512(x, low);
                const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(x, 4), low);
                for (int t = 0; t < T; t++) {
                    const int8_t *aq = a[t][i].qs + 64 * pr + 4 * k;
                    int32_t v0, v1;
                    memcpy(&v0, aq, 4);
                    memcpy(&v1, aq + 32, 4);
                    lo[t] = _mm512_dpbusd_epi32(lo[t], wl, _mm512_set1_epi32(v0));
                    hi[t] = _mm512_dpbusd_epi32(hi[t], wh, _mm512_set1_epi32(v1));
                }
            }
            const __m512i s0 = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(p + PK_SC + (2 * pr) * ENG_PACK_ROWS)));
            const __m512i s1 = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(p + PK_SC + (2 * pr + 1) * ENG_PACK_ROWS)));
            const __m512i m0 = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(p + PK_MIN + (2 * pr) * ENG_PACK_ROWS)));
            const __m512i m1 = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(p + PK_MIN + (2 * pr + 1) * ENG_PACK_ROWS)));
            for (int t = 0; t < T; t++) {
                const struct eng_block_q8_K *ab = &a[t][i];
                const __m512 ad = _mm512_set1_ps(ab->d);
                const __m512i isum =
                    _mm512_add_epi32(_mm512_mullo_epi32(lo[t], s0), _mm512_mullo_epi32(hi[t], s1));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(wd, ad), acc[t]);
                const int32_t bs0 = ab->bsums[4 * pr] + ab->bsums[4 * pr + 1];
                const int32_t bs1 = ab->bsums[4 * pr + 2] + ab->bsums[4 * pr + 3];
                const __m512i imin =
                    _mm512_add_epi32(_mm512_mullo_epi32(m0, _mm512_set1_epi32(bs0)),
                                     _mm512_mullo_epi32(m1, _mm512_set1_epi32(bs1)));
                am[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin), _mm512_mul_ps(wdm, ad), am[t]);
            }
        }
    }
    for (int t = 0; t < T; t++) out[t] = _mm512_sub_ps(acc[t], am[t]);
}

VNNI_TARGET void eng__mm_q4_k_packed(int n_cols, const void *pw, int n_rows, const void *act,
                                     size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    const int nb = n_cols / ENG_QK_K;
    const size_t group_bytes = (size_t)nb * PK_BLOCK;
    for (int g = 0; g < n_rows / ENG_PACK_ROWS; g++) {
        const unsigned char *pg = (const unsigned char *)pw + (size_t)g * group_bytes;
        for (int t0 = 0; t0 < n_tok; t0 += PK_TMAX) {
            const int T = n_tok - t0 < PK_TMAX ? n_tok - t0 : PK_TMAX;
            const struct eng_block_q8_K *a[PK_TMAX];
            for (int t = 0; t < T; t++)
                a[t] = (const struct eng_block_q8_K *)((const unsigned char *)act +
                                                       (size_t)(t0 + t) * act_row_bytes);
            __m512 out[PK_TMAX];
            switch (T) { /* constant trip counts keep the accumulators in registers */
            case 1:
                group_q4_k(nb, pg, a, 1, out);
                break;
            case 2:
                group_q4_k(nb, pg, a, 2, out);
                break;
            case 3:
                group_q4_k(nb, pg, a, 3, out);
                break;
            default:
                group_q4_k(nb, pg, a, 4, out);
                break;
            }
            for (int t = 0; t < T; t++)
                _mm512_storeu_ps(y + (int64_t)(t0 + t) * y_stride + g * ENG_PACK_ROWS, out[t]);
        }
    }
}
#else
void eng__mm_q4_k_packed(int n_cols, const void *pw, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    (void)n_cols, (void)pw, (void)n_rows, (void)act, (void)act_row_bytes, (void)n_tok, (void)y,
        (void)y_stride;
}
#endif

const struct eng_mm_kernels *eng__mm_kernels_q4_k_gemm(enum eng_cpu_level level)
{
#if HAVE_VNNI
    static struct eng_mm_kernels k;
    if (level >= ENG_CPU_AVX512 && eng_cpu_level_supported() >= ENG_CPU_AVX512) {
        k.quantize_act = eng__quantize_row_q8_K_gemm_ggml;
        k.mm = mm_q4_k_gemm_vnni;
        return &k;
    }
#endif
    (void)level;
    return NULL;
}
