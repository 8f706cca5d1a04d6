/*
 * mm_q6_k.c - an AVX-512 VNNI block kernel for Q6_K weights, bit-identical to ggml's AVX2 dot
 * (dot_q6_K_avx2 in ggml_kernels_q.c, eng_qtype_cpu(ENG_GGML_Q6_K)->vec_dot).
 *
 * That dot keeps eight float lanes per output: per 256-value block, lane j gets
 * fma(d, (float)sumi_j, acc_j) with d = d_a * f16(d_w), where the integer sumi_j is, over the
 * eight 32-value chunks c, scale(c, j / 4) times the sum of the four products at bytes
 * 4j..4j+3 of chunk c (6-bit codes 0..63 times activation codes), minus 32 times
 * (bsums[2j] * sc[2j] + bsums[2j+1] * sc[2j+1]); then hsum_float_8. Here the weight codes of a
 * block are unpacked once per row and every token's lanes come from vpdpbusd (exactly those
 * four-product sums), two chunks per instruction, scaled and added in integers: the same sumi,
 * so the same bits. tests/test_mm_q6_k.c checks it against the dot kernel.
 */
#include "mm_q6_k.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
#define HAVE_VNNI 1
#define VNNI_TARGET                                                                                \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))
#else
#define HAVE_VNNI 0
#endif

#if HAVE_VNNI
#define MAX_TOK 64

VNNI_TARGET static inline float hsum8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

VNNI_TARGET static void mm_q6_k_vnni(int n_cols, const void *wv, size_t w_row_bytes, int n_rows,
                                     const void *actv, size_t act_row_bytes, int n_tok, float *y,
                                     int64_t y_stride)
{
    const int nb = n_cols / ENG_QK_K;
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 acc[MAX_TOK];
    for (int t0 = 0; t0 < n_tok; t0 += MAX_TOK) {
        const int nt = n_tok - t0 < MAX_TOK ? n_tok - t0 : MAX_TOK;
        for (int r = 0; r < n_rows; r++) {
            const struct eng_block_q6_K *w =
                (const void *)((const unsigned char *)wv + (size_t)r * w_row_bytes);
            for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
            for (int i = 0; i < nb; i++) {
                /* The codes of chunks 2k and 2k + 1 in q[k]; their lane scales in s[k]. */
                __m256i codes[8];
                for (int h = 0; h < 2; h++) {
                    const __m256i l0 = _mm256_loadu_si256((const void *)(w[i].ql + 64 * h));
                    const __m256i l1 = _mm256_loadu_si256((const void *)(w[i].ql + 64 * h + 32));
                    const __m256i hb = _mm256_loadu_si256((const void *)(w[i].qh + 32 * h));
                    for (int t = 0; t < 4; t++) {
                        const __m256i lo =
                            t < 2 ? _mm256_and_si256(t ? l1 : l0, m15)
                                  : _mm256_and_si256(_mm256_srli_epi16(t & 1 ? l1 : l0, 4), m15);
                        const __m256i hi = _mm256_slli_epi16(
                            _mm256_and_si256(_mm256_srli_epi16(hb, 2 * t), m3), 4);
                        codes[4 * h + t] = _mm256_or_si256(lo, hi);
                    }
                }
                __m512i q[4], s[4];
                for (int k = 0; k < 4; k++) {
                    q[k] = _mm512_inserti64x4(_mm512_castsi256_si512(codes[2 * k]),
                                              codes[2 * k + 1], 1);
                    const int c0 = 2 * k, c1 = 2 * k + 1;
                    s[k] =
                        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(
                                               _mm_set1_epi32(w[i].scales[2 * c0 + 1]),
                                               _mm_set1_epi32(w[i].scales[2 * c0]))),
                                           _mm256_set_m128i(_mm_set1_epi32(w[i].scales[2 * c1 + 1]),
                                                            _mm_set1_epi32(w[i].scales[2 * c1])),
                                           1);
                }
                const __m256i sc16 =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)w[i].scales));
                const float wd = _cvtsh_ss(w[i].d);
                for (int t = 0; t < nt; t++) {
                    const struct eng_block_q8_K *a =
                        (const struct eng_block_q8_K *)(const void *)((const unsigned char *)actv +
                                                                      (size_t)(t0 + t) *
                                                                          act_row_bytes) +
                        i;
                    __m512i sum = _mm512_setzero_si512();
                    for (int k = 0; k < 4; k++) {
                        const __m512i lanes = _mm512_dpbusd_epi32(
                            _mm512_setzero_si512(), q[k], _mm512_loadu_si512(a->qs + 64 * k));
                        sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(lanes, s[k]));
                    }
                    __m256i sumi = _mm256_add_epi32(_mm512_castsi512_si256(sum),
                                                    _mm512_extracti64x4_epi64(sum, 1));
                    const __m256i sub = _mm256_slli_epi32(
                        _mm256_madd_epi16(_mm256_loadu_si256((const void *)a->bsums), sc16), 5);
                    sumi = _mm256_sub_epi32(sumi, sub);
                    const float d = a->d * wd;
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
                }
            }
            for (int t = 0; t < nt; t++) y[(t0 + t) * y_stride + r] = hsum8(acc[t]);
        }
    }
}
#endif

const struct eng_mm_kernels *eng__mm_kernels_q6_k(enum eng_cpu_level level,
                                                  eng_quantize_fn quantize_act)
{
#if HAVE_VNNI
    static struct eng_mm_kernels k;
    if (level >= ENG_CPU_AVX512 && eng_cpu_level_supported() >= ENG_CPU_AVX512) {
        k.quantize_act = quantize_act;
        k.mm = mm_q6_k_vnni;
        return &k;
    }
#endif
    (void)level;
    (void)quantize_act;
    return NULL;
}
