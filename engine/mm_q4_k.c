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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
#define HAVE_VNNI   1
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c")))
#else
#define HAVE_VNNI 0
#endif

#if HAVE_VNNI
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
