/*
 * mm_q5_0.c - Q5_0 weights through the Q8_0 block kernels of mm_cpu.c, for prompt batches.
 *
 * Why this is exact: ggml's x86 dot products of Q5_0 and of Q8_0 weights with Q8_0 activations
 * are the same instruction sequence once a Q5_0 block is unpacked to 32 signed bytes (its
 * 5-bit codes minus 16): per block d = f16(d_w) * f16(d_a), eight int32 lanes of four products
 * each (mul_sum_i8_pairs_float), acc = fma(d, lanes, acc), then hsum_float_8. So a Q5_0 row
 * unpacked to a Q8_0 row (the same f16 scale, the codes as int8) gives, through any kernel that
 * reproduces the Q8_0 dot, the bits of the Q5_0 dot. mm_cpu.c's Q8_0 block kernels do; this
 * file unpacks a group of weight rows at a time into a stack buffer and hands it to them.
 * tests/test_mm_q5_0.c checks the result against eng_qtype_cpu(ENG_GGML_Q5_0)->vec_dot.
 *
 * Unpacking costs about as much as one dot product per row, so the CPU backend uses this for
 * batches of 4 or more tokens only; decode keeps the single-row VNNI dot.
 */
#include "mm_q5_0.h"

#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
#define HAVE_AVX2_UNPACK 1
#define AVX2_TARGET      __attribute__((target("avx2")))
#else
#define HAVE_AVX2_UNPACK 0
#endif

/* Bytes of unpacked rows a group may take on the stack. */
#define GROUP_BYTES (48 * 1024)

static inline uint32_t load_qh(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, sizeof(v));
    return v;
}

/* Row r (of n_rows) of w, nb blocks, as Q8_0 blocks in out. */
static void unpack_row(const struct eng_block_q5_0 *b, int nb, struct eng_block_q8_0 *out)
{
    for (int i = 0; i < nb; i++) {
        const uint32_t qh = load_qh(b[i].qh);
        out[i].d = b[i].d;
        for (int j = 0; j < ENG_QK / 2; j++) {
            const int q0 = (b[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            const int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            out[i].qs[j] = (int8_t)(q0 - 16);
            out[i].qs[j + ENG_QK / 2] = (int8_t)(q1 - 16);
        }
    }
}

#if HAVE_AVX2_UNPACK
/* unpack_row with AVX2: the low nibbles and high nibbles as two 16-byte halves; bit j of qh
 * spread to byte j (byte j of a broadcast qh picked by a shuffle, tested against 1 << (j % 8));
 * 0xF0 ORed in where the bit is clear, which is the code minus 16 as a signed byte. */
AVX2_TARGET static void unpack_row_avx2(const struct eng_block_q5_0 *b, int nb,
                                        struct eng_block_q8_0 *out)
{
    const __m256i low = _mm256_set1_epi8(0x0f), f0 = _mm256_set1_epi8((char)0xf0);
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit =
        _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                         32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    for (int i = 0; i < nb; i++) {
        const __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        const __m256i nib = _mm256_and_si256(
            low, _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1));
        const __m256i qh = _mm256_set1_epi32((int)load_qh(b[i].qh));
        const __m256i set =
            _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, pick), bit), bit);
        out[i].d = b[i].d;
        _mm256_storeu_si256((__m256i *)out[i].qs,
                            _mm256_or_si256(nib, _mm256_andnot_si256(set, f0)));
    }
}
#endif

/* The Q5_0 block kernel over the Q8_0 one of q8. */
static void mm_q5_0_with(const struct eng_mm_kernels *q8, bool simd, int n_cols, const void *w,
                         size_t w_row_bytes, int n_rows, const void *act, size_t act_row_bytes,
                         int n_tok, float *y, int64_t y_stride)
{
    _Alignas(64) unsigned char buf[GROUP_BYTES];
    const int nb = n_cols / ENG_QK;
    const size_t row8 = (size_t)nb * sizeof(struct eng_block_q8_0);
    int group = (int)(sizeof(buf) / row8);
    if (group < 1) group = 1;
    for (int r0 = 0; r0 < n_rows; r0 += group) {
        const int n = n_rows - r0 < group ? n_rows - r0 : group;
        if (row8 > sizeof(buf)) {
            /* A row wider than the buffer (over 46,000 values): row by row, in pieces is not
             * possible (the lanes run over whole rows), so fall back to the dot product. */
            for (int r = 0; r < n; r++) {
                const void *wr = (const unsigned char *)w + (size_t)(r0 + r) * w_row_bytes;
                for (int t = 0; t < n_tok; t++)
                    y[t * y_stride + r0 + r] = eng_qtype_cpu_q5_0_dot(
                        n_cols, wr, (const unsigned char *)act + (size_t)t * act_row_bytes);
            }
            continue;
        }
        for (int r = 0; r < n; r++) {
            const struct eng_block_q5_0 *src =
                (const void *)((const unsigned char *)w + (size_t)(r0 + r) * w_row_bytes);
            struct eng_block_q8_0 *dst = (struct eng_block_q8_0 *)(buf + (size_t)r * row8);
#if HAVE_AVX2_UNPACK
            if (simd) {
                unpack_row_avx2(src, nb, dst);
                continue;
            }
#endif
            unpack_row(src, nb, dst);
        }
        q8->mm(n_cols, buf, row8, n, act, act_row_bytes, n_tok, y + r0, y_stride);
    }
}

static void mm_q5_0_scalar(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                           const void *act, size_t act_row_bytes, int n_tok, float *y,
                           int64_t y_stride)
{
    mm_q5_0_with(eng__mm_kernels(ENG_GGML_Q8_0, ENG_CPU_SCALAR), false, n_cols, w, w_row_bytes,
                 n_rows, act, act_row_bytes, n_tok, y, y_stride);
}

static void mm_q5_0_avx2(int n_cols, const void *w, size_t w_row_bytes, int n_rows, const void *act,
                         size_t act_row_bytes, int n_tok, float *y, int64_t y_stride)
{
    mm_q5_0_with(eng__mm_kernels(ENG_GGML_Q8_0, ENG_CPU_AVX2), true, n_cols, w, w_row_bytes, n_rows,
                 act, act_row_bytes, n_tok, y, y_stride);
}

static void mm_q5_0_avx512(int n_cols, const void *w, size_t w_row_bytes, int n_rows,
                           const void *act, size_t act_row_bytes, int n_tok, float *y,
                           int64_t y_stride)
{
    mm_q5_0_with(eng__mm_kernels(ENG_GGML_Q8_0, ENG_CPU_AVX512), true, n_cols, w, w_row_bytes,
                 n_rows, act, act_row_bytes, n_tok, y, y_stride);
}

float eng_qtype_cpu_q5_0_dot(int n, const void *w_row, const void *act_row)
{
    return eng_qtype_cpu(ENG_GGML_Q5_0)->vec_dot(n, w_row, act_row);
}

const struct eng_mm_kernels *eng__mm_kernels_q5_0(enum eng_cpu_level level)
{
    static struct eng_mm_kernels k[3];
    static const eng_mm_fn fns[3] = {mm_q5_0_scalar, mm_q5_0_avx2, mm_q5_0_avx512};
    if (level > eng_cpu_level_supported()) level = eng_cpu_level_supported();
    /* The activation quantizer is the Q8_0 kernels' (the bytes of eng__quantize_row_q8_0). A
     * race fills the same values twice. */
    k[level].quantize_act = eng__mm_kernels(ENG_GGML_Q8_0, level)->quantize_act;
    k[level].mm = fns[level];
    return &k[level];
}
