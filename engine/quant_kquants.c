/*
 * quant_kquants.c - scalar reference kernels for the 256-value K formats (Q4_K, Q5_K, Q6_K) and
 * their activation format Q8_K. Layouts are described in quant.h.
 *
 * Dequantization and the dot products follow ggml's formulas exactly (the test compares
 * dequantization bit for bit with gguf-py). The weight quantizers are ours and deliberately
 * simple: min/max per sub-block, 6- or 8-bit scales rounded to nearest against the f16 super
 * scale that will actually be stored, then codes rounded to nearest against the scale that
 * dequantization will actually use. llama.cpp's quantizers search for better scales; ours exist
 * so tests and tools can make K-quant weights, and are good to a few percent RMS error.
 *
 * The dot products accumulate each sub-block in int32 (bounds: Q4_K/Q5_K 8 * 63 * 31 * 127 * 32
 * and Q6_K 16 * 128 * 32 * 127 * 16 are both far below 2^31) and scale once per super-block.
 */
#include "quant.h"

#include <assert.h>
#include <stdint.h>

/* Round to nearest, ties to even, clamped to [lo, hi]; NaN gives lo. */
static int round_clamp(float v, int lo, int hi)
{
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)nearbyintf(v);
}

/* Packs eight 6-bit scales and mins into the 12-byte Q4_K/Q5_K field (eng__kq_scale_min's
 * inverse). */
static void pack_scale_min(uint8_t out[12], const uint8_t sc[8], const uint8_t m[8])
{
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        out[j + 4] = (uint8_t)((m[j] & 63) | (m[j + 4] >> 4) << 6);
        out[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (m[j + 4] & 0x0f) << 4);
    }
}

/* ---- dequantization ---- */

void eng__dequantize_row_q4_K(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q4_K *b = src;
    for (int64_t i = 0; i < n / ENG_QK_K; i++) {
        const float d = eng_fp16_to_fp32(b[i].d);
        const float dmin = eng_fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            uint8_t sc, m;
            eng__kq_scale_min(b[i].scales, j, &sc, &m);
            const float ds = d * (float)sc, dm = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) dst[l] = ds * (float)((q[l] >> shift) & 0x0f) - dm;
        }
    }
}

void eng__dequantize_row_q5_K(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q5_K *b = src;
    for (int64_t i = 0; i < n / ENG_QK_K; i++) {
        const float d = eng_fp16_to_fp32(b[i].d);
        const float dmin = eng_fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            uint8_t sc, m;
            eng__kq_scale_min(b[i].scales, j, &sc, &m);
            const float ds = d * (float)sc, dm = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0x0f) | ((b[i].qh[l] >> j) & 1) << 4;
                dst[l] = ds * (float)v - dm;
            }
        }
    }
}

/* The 6-bit code of value k (0..255) of a Q6_K block. */
static int q6_code(const struct eng_block_q6_K *b, int k)
{
    const int h = k / 128, r = k % 128, part = r / 32, l = r % 32;
    const uint8_t lo = b->ql[64 * h + l + 32 * (part & 1)];
    const int low4 = part < 2 ? lo & 0x0f : lo >> 4;
    const int high2 = (b->qh[32 * h + l] >> (2 * part)) & 3;
    return low4 | high2 << 4;
}

void eng__dequantize_row_q6_K(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q6_K *b = src;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, dst += ENG_QK_K) {
        const float d = eng_fp16_to_fp32(b[i].d);
        for (int k = 0; k < ENG_QK_K; k++) {
            const float ds = d * (float)b[i].scales[k / 16];
            dst[k] = ds * (float)(q6_code(&b[i], k) - 32);
        }
    }
}

void eng__dequantize_row_q8_K(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q8_K *b = src;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, dst += ENG_QK_K)
        for (int k = 0; k < ENG_QK_K; k++) dst[k] = b[i].d * (float)b[i].qs[k];
}

/* ---- weight reference quantizers ---- */

/* Q4_K and Q5_K share everything but the code range (15 or 31) and the high-bit plane. */
static void quantize_kq_superblock(const float *x, int qmax, uint16_t *d_out, uint16_t *dmin_out,
                                   uint8_t scales[12], uint8_t codes[ENG_QK_K])
{
    float scale[8], neg_min[8], max_scale = 0.0f, max_neg_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        /* The format can only subtract a min (dmin * m >= 0), so the range always includes 0. */
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[32 * j + l]);
            hi = fmaxf(hi, x[32 * j + l]);
        }
        scale[j] = (hi - lo) / (float)qmax;
        neg_min[j] = -lo;
        max_scale = fmaxf(max_scale, scale[j]);
        max_neg_min = fmaxf(max_neg_min, neg_min[j]);
    }
    *d_out = eng_fp32_to_fp16(max_scale / 63.0f);
    *dmin_out = eng_fp32_to_fp16(max_neg_min / 63.0f);
    const float d = eng_fp16_to_fp32(*d_out), dmin = eng_fp16_to_fp32(*dmin_out);

    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0.0f ? round_clamp(scale[j] / d, 0, 63) : 0);
        m[j] = (uint8_t)(dmin > 0.0f ? round_clamp(neg_min[j] / dmin, 0, 63) : 0);
        const float ds = d * (float)sc[j], dm = dmin * (float)m[j];
        for (int l = 0; l < 32; l++) {
            float v = ds > 0.0f ? (x[32 * j + l] + dm) / ds : 0.0f;
            codes[32 * j + l] = (uint8_t)round_clamp(v, 0, qmax);
        }
    }
    pack_scale_min(scales, sc, m);
}

/* Low nibbles in the Q4_K/Q5_K order: chunk c of 32 bytes holds values 64c.. (low) and 64c+32..
 * (high). */
static void pack_kq_nibbles(uint8_t qs[ENG_QK_K / 2], const uint8_t codes[ENG_QK_K])
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] =
                (uint8_t)((codes[64 * c + l] & 0x0f) | (codes[64 * c + 32 + l] & 0x0f) << 4);
}

void eng__quantize_row_q4_K_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    struct eng_block_q4_K *b = dst;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, src += ENG_QK_K) {
        uint8_t codes[ENG_QK_K];
        quantize_kq_superblock(src, 15, &b[i].d, &b[i].dmin, b[i].scales, codes);
        pack_kq_nibbles(b[i].qs, codes);
    }
}

void eng__quantize_row_q5_K_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    struct eng_block_q5_K *b = dst;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, src += ENG_QK_K) {
        uint8_t codes[ENG_QK_K];
        quantize_kq_superblock(src, 31, &b[i].d, &b[i].dmin, b[i].scales, codes);
        pack_kq_nibbles(b[i].qs, codes);
        for (int l = 0; l < 32; l++) {
            uint8_t h = 0;
            for (int j = 0; j < 8; j++) h |= (uint8_t)(((codes[32 * j + l] >> 4) & 1) << j);
            b[i].qh[l] = h;
        }
    }
}

void eng__quantize_row_q6_K_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    struct eng_block_q6_K *b = dst;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, src += ENG_QK_K) {
        /* Per group of 16 the signed value of largest magnitude maps to code -32 exactly, so
         * the group scale carries the opposite sign; the super scale d is positive. */
        float scale[16], max_abs_scale = 0.0f;
        for (int g = 0; g < 16; g++) {
            float amax = 0.0f, max = 0.0f;
            for (int l = 0; l < 16; l++) {
                if (amax < fabsf(src[16 * g + l])) {
                    amax = fabsf(src[16 * g + l]);
                    max = src[16 * g + l];
                }
            }
            scale[g] = max / -32.0f;
            max_abs_scale = fmaxf(max_abs_scale, fabsf(scale[g]));
        }
        b[i].d = eng_fp32_to_fp16(max_abs_scale / 127.0f);
        const float d = eng_fp16_to_fp32(b[i].d);

        uint8_t codes[ENG_QK_K];
        for (int g = 0; g < 16; g++) {
            b[i].scales[g] = (int8_t)(d > 0.0f ? round_clamp(scale[g] / d, -127, 127) : 0);
            const float ds = d * (float)b[i].scales[g];
            for (int l = 0; l < 16; l++) {
                float v = ds != 0.0f ? src[16 * g + l] / ds : 0.0f;
                codes[16 * g + l] = (uint8_t)(round_clamp(v, -32, 31) + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *c = codes + 128 * h;
            for (int l = 0; l < 32; l++) {
                b[i].ql[64 * h + l] = (uint8_t)((c[l] & 0x0f) | (c[l + 64] & 0x0f) << 4);
                b[i].ql[64 * h + 32 + l] = (uint8_t)((c[l + 32] & 0x0f) | (c[l + 96] & 0x0f) << 4);
                b[i].qh[32 * h + l] = (uint8_t)((c[l] >> 4) | (c[l + 32] >> 4) << 2 |
                                                (c[l + 64] >> 4) << 4 | (c[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ---- activation quantizer ---- */

void eng__quantize_row_q8_K(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK_K == 0);
    struct eng_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / ENG_QK_K; i++, src += ENG_QK_K) {
        float amax = 0.0f;
        for (int k = 0; k < ENG_QK_K; k++) amax = fmaxf(amax, fabsf(src[k]));
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        b[i].d = amax / 127.0f;
        for (int g = 0; g < ENG_QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) {
                b[i].qs[16 * g + l] = eng__act_round(src[16 * g + l] * id);
                sum += b[i].qs[16 * g + l];
            }
            b[i].bsums[g] = (int16_t)sum;
        }
    }
}

/* ---- integer dot products ---- */

/* Shared by Q4_K and Q5_K: codes[] already holds the unsigned 4- or 5-bit codes. */
static double kq_block_dot(const uint16_t d16, const uint16_t dmin16, const uint8_t scales[12],
                           const uint8_t codes[ENG_QK_K], const struct eng_block_q8_K *a)
{
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        eng__kq_scale_min(scales, j, &sc, &m);
        int32_t isum = 0;
        for (int l = 0; l < 32; l++) isum += codes[32 * j + l] * a->qs[32 * j + l];
        sumi += sc * isum;
        /* The min term needs the sum of the sub-block's 32 activation codes: two bsums. */
        summ += m * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
    }
    return (double)eng_fp16_to_fp32(d16) * a->d * sumi -
           (double)eng_fp16_to_fp32(dmin16) * a->d * summ;
}

float eng__vec_dot_q4_K_q8_K(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q4_K *w = w_row;
    const struct eng_block_q8_K *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        uint8_t codes[ENG_QK_K];
        for (int k = 0; k < ENG_QK_K; k++)
            codes[k] = (w[i].qs[32 * (k / 64) + k % 32] >> (4 * ((k / 32) % 2))) & 0x0f;
        sum += kq_block_dot(w[i].d, w[i].dmin, w[i].scales, codes, &a[i]);
    }
    return (float)sum;
}

float eng__vec_dot_q5_K_q8_K(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q5_K *w = w_row;
    const struct eng_block_q8_K *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        uint8_t codes[ENG_QK_K];
        for (int k = 0; k < ENG_QK_K; k++) {
            int low = (w[i].qs[32 * (k / 64) + k % 32] >> (4 * ((k / 32) % 2))) & 0x0f;
            int high = (w[i].qh[k % 32] >> (k / 32)) & 1;
            codes[k] = (uint8_t)(low | high << 4);
        }
        sum += kq_block_dot(w[i].d, w[i].dmin, w[i].scales, codes, &a[i]);
    }
    return (float)sum;
}

float eng__vec_dot_q6_K_q8_K(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK_K == 0);
    const struct eng_block_q6_K *w = w_row;
    const struct eng_block_q8_K *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK_K; i++) {
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int32_t isum = 0;
            for (int l = 0; l < 16; l++)
                isum += (q6_code(&w[i], 16 * g + l) - 32) * a[i].qs[16 * g + l];
            sumi += w[i].scales[g] * isum;
        }
        sum += (double)eng_fp16_to_fp32(w[i].d) * a[i].d * sumi;
    }
    return (float)sum;
}
