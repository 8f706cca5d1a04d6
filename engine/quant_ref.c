/*
 * quant_ref.c - scalar reference kernels for the float types (F32, F16, BF16), the 32-value
 * block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and their activation formats (Q8_0, Q8_1), plus
 * the type-traits table. The K formats live in quant_kquants.c.
 *
 * These kernels are the oracle for every faster variant, so they favour the obvious loop over a
 * clever one. The weight quantizers of Q4_0..Q8_0 follow ggml's reference quantizers operation
 * for operation (same float expressions, same truncations, same first-largest-magnitude rule),
 * which is what lets tests/test_quant.c demand identical bytes from gguf-py's numpy port. Layouts
 * are described in quant.h.
 */
#include "quant.h"

#include <assert.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

/* Truncates v toward zero and clamps it to [lo, hi]; NaN gives lo. This is what ggml's
 * "MIN(15, (int8_t)(x + 8.5f))" style conversions do on every input they are defined for, minus
 * the undefined behaviour on NaN or out-of-range input. */
static int trunc_clamp(float v, int lo, int hi)
{
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* Reads a Q5 high-bits field as the little-endian u32 it is, whatever the host order. */
static uint32_t load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void store_qh(uint8_t qh[4], uint32_t v)
{
    for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(v >> (8 * i));
}

/* ---- float types ---- */

void eng__dequantize_row_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void eng__dequantize_row_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = eng_fp16_to_fp32(h[i]);
}

void eng__dequantize_row_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = eng_bf16_to_fp32(h[i]);
}

void eng__quantize_row_f32_ref(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void eng__quantize_row_f16_ref(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = eng_fp32_to_fp16(src[i]);
}

void eng__quantize_row_bf16_ref(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = eng_fp32_to_bf16(src[i]);
}

float eng__vec_dot_f32_f32(int n, const void *w_row, const void *act_row)
{
    const float *w = w_row, *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)w[i] * a[i];
    return (float)sum;
}

float eng__vec_dot_f16_f32(int n, const void *w_row, const void *act_row)
{
    const uint16_t *w = w_row;
    const float *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)eng_fp16_to_fp32(w[i]) * a[i];
    return (float)sum;
}

float eng__vec_dot_bf16_f32(int n, const void *w_row, const void *act_row)
{
    const uint16_t *w = w_row;
    const float *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)eng_bf16_to_fp32(w[i]) * a[i];
    return (float)sum;
}

/* ---- dequantization of the 32-value formats ---- */

void eng__dequantize_row_q4_0(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK) {
        const float d = eng_fp16_to_fp32(b[i].d);
        for (int j = 0; j < ENG_QK / 2; j++) {
            dst[j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            dst[j + ENG_QK / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

void eng__dequantize_row_q4_1(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK) {
        const float d = eng_fp16_to_fp32(b[i].d);
        const float m = eng_fp16_to_fp32(b[i].m);
        for (int j = 0; j < ENG_QK / 2; j++) {
            dst[j] = d * (float)(b[i].qs[j] & 0x0f) + m;
            dst[j + ENG_QK / 2] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

void eng__dequantize_row_q5_0(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK) {
        const float d = eng_fp16_to_fp32(b[i].d);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)(q0 - 16);
            dst[j + ENG_QK / 2] = d * (float)(q1 - 16);
        }
    }
}

void eng__dequantize_row_q5_1(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK) {
        const float d = eng_fp16_to_fp32(b[i].d);
        const float m = eng_fp16_to_fp32(b[i].m);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)q0 + m;
            dst[j + ENG_QK / 2] = d * (float)q1 + m;
        }
    }
}

void eng__dequantize_row_q8_0(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK) {
        const float d = eng_fp16_to_fp32(b[i].d);
        for (int j = 0; j < ENG_QK; j++) dst[j] = d * (float)b[i].qs[j];
    }
}

void eng__dequantize_row_q8_1(const void *src, float *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / ENG_QK; i++, dst += ENG_QK)
        for (int j = 0; j < ENG_QK; j++) dst[j] = b[i].d * (float)b[i].qs[j];
}

/* ---- weight reference quantizers (ggml's, operation for operation) ---- */

/* The value of largest magnitude in x[0..n) (the first one on ties), with its sign. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *min, float *max)
{
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

void eng__quantize_row_q4_0_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        /* The largest magnitude maps to code 0 exactly (d < 0 when it is positive). */
        const float d = signed_absmax(src, ENG_QK) / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = eng_fp32_to_fp16(d);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = trunc_clamp(src[j] * id + 8.5f, 0, 15);
            int q1 = trunc_clamp(src[j + ENG_QK / 2] * id + 8.5f, 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

void eng__quantize_row_q4_1_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        float min, max;
        min_max(src, ENG_QK, &min, &max);
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = eng_fp32_to_fp16(d);
        b[i].m = eng_fp32_to_fp16(min);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = trunc_clamp((src[j] - min) * id + 0.5f, 0, 15);
            int q1 = trunc_clamp((src[j + ENG_QK / 2] - min) * id + 0.5f, 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

void eng__quantize_row_q5_0_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        const float d = signed_absmax(src, ENG_QK) / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        b[i].d = eng_fp32_to_fp16(d);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = trunc_clamp(src[j] * id + 16.5f, 0, 31);
            int q1 = trunc_clamp(src[j + ENG_QK / 2] * id + 16.5f, 0, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_qh(b[i].qh, qh);
    }
}

void eng__quantize_row_q5_1_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        float min, max;
        min_max(src, ENG_QK, &min, &max);
        const float d = (max - min) / 31;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        b[i].d = eng_fp32_to_fp16(d);
        b[i].m = eng_fp32_to_fp16(min);
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = trunc_clamp((src[j] - min) * id + 0.5f, 0, 31);
            int q1 = trunc_clamp((src[j + ENG_QK / 2] - min) * id + 0.5f, 0, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_qh(b[i].qh, qh);
    }
}

void eng__quantize_row_q8_0_ref(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        float amax = 0.0f;
        for (int j = 0; j < ENG_QK; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = eng_fp32_to_fp16(d);
        /* roundf: halves away from zero, as ggml and gguf-py do for this weight format (the
         * activation quantizer rounds halves to even instead). */
        for (int j = 0; j < ENG_QK; j++)
            b[i].qs[j] = (int8_t)trunc_clamp(roundf(src[j] * id), -127, 127);
    }
}

/* ---- activation quantizers ---- */

/* Largest |x| over a block, NaN ignored (fmaxf returns the other operand). */
static float absmax(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

void eng__quantize_row_q8_0(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        const float amax = absmax(src, ENG_QK);
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        b[i].d = eng_fp32_to_fp16(amax / 127.0f);
        for (int j = 0; j < ENG_QK; j++) b[i].qs[j] = eng__act_round(src[j] * id);
    }
}

void eng__quantize_row_q8_1(const float *src, void *dst, int64_t n)
{
    assert(n % ENG_QK == 0);
    struct eng_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / ENG_QK; i++, src += ENG_QK) {
        const float amax = absmax(src, ENG_QK);
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        b[i].d = amax / 127.0f;
        for (int j = 0; j < ENG_QK; j++) {
            b[i].qs[j] = eng__act_round(src[j] * id);
            sum += b[i].qs[j];
        }
        b[i].s = b[i].d * (float)sum;
    }
}

/* ---- integer dot products of the 32-value formats ---- */

float eng__vec_dot_q4_0_q8_0(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q4_0 *w = w_row;
    const struct eng_block_q8_0 *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK; i++) {
        int32_t isum = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            isum += ((w[i].qs[j] & 0x0f) - 8) * a[i].qs[j];
            isum += ((w[i].qs[j] >> 4) - 8) * a[i].qs[j + ENG_QK / 2];
        }
        sum += (double)eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d) * isum;
    }
    return (float)sum;
}

float eng__vec_dot_q4_1_q8_1(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q4_1 *w = w_row;
    const struct eng_block_q8_1 *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK; i++) {
        int32_t isum = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            isum += (w[i].qs[j] & 0x0f) * a[i].qs[j];
            isum += (w[i].qs[j] >> 4) * a[i].qs[j + ENG_QK / 2];
        }
        /* sum_j (d q_j + m) a_j = d * da * sum_j q_j c_j + m * s, with s = da * sum_j c_j. */
        sum += (double)eng_fp16_to_fp32(w[i].d) * a[i].d * isum;
        sum += (double)eng_fp16_to_fp32(w[i].m) * a[i].s;
    }
    return (float)sum;
}

float eng__vec_dot_q5_0_q8_0(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q5_0 *w = w_row;
    const struct eng_block_q8_0 *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK; i++) {
        const uint32_t qh = load_qh(w[i].qh);
        int32_t isum = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (w[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int q1 = (w[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += (q0 - 16) * a[i].qs[j] + (q1 - 16) * a[i].qs[j + ENG_QK / 2];
        }
        sum += (double)eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d) * isum;
    }
    return (float)sum;
}

float eng__vec_dot_q5_1_q8_1(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q5_1 *w = w_row;
    const struct eng_block_q8_1 *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK; i++) {
        const uint32_t qh = load_qh(w[i].qh);
        int32_t isum = 0;
        for (int j = 0; j < ENG_QK / 2; j++) {
            int q0 = (w[i].qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int q1 = (w[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += q0 * a[i].qs[j] + q1 * a[i].qs[j + ENG_QK / 2];
        }
        sum += (double)eng_fp16_to_fp32(w[i].d) * a[i].d * isum;
        sum += (double)eng_fp16_to_fp32(w[i].m) * a[i].s;
    }
    return (float)sum;
}

float eng__vec_dot_q8_0_q8_0(int n, const void *w_row, const void *act_row)
{
    assert(n % ENG_QK == 0);
    const struct eng_block_q8_0 *w = w_row;
    const struct eng_block_q8_0 *a = act_row;
    double sum = 0.0;
    for (int i = 0; i < n / ENG_QK; i++) {
        int32_t isum = 0;
        for (int j = 0; j < ENG_QK; j++) isum += w[i].qs[j] * a[i].qs[j];
        sum += (double)eng_fp16_to_fp32(w[i].d) * eng_fp16_to_fp32(a[i].d) * isum;
    }
    return (float)sum;
}

/* ---- the type-traits table ---- */

#define QT(id, nm, be, bb, wt, act, deq, q, qact, dot)                                             \
    [id] = {.type = (id),                                                                          \
            .name = (nm),                                                                          \
            .block_elems = (be),                                                                   \
            .block_bytes = (bb),                                                                   \
            .weight = (wt),                                                                        \
            .act_type = (act),                                                                     \
            .dequantize = (deq),                                                                   \
            .quantize = (q),                                                                       \
            .quantize_act = (qact),                                                                \
            .vec_dot = (dot)}

/* Indexed by type id; entries with a NULL name are unsupported ids. */
static const struct eng_qtype ref_table[] = {
    QT(ENG_GGML_F32, "f32", 1, 4, true, ENG_GGML_F32, eng__dequantize_row_f32,
       eng__quantize_row_f32_ref, NULL, eng__vec_dot_f32_f32),
    QT(ENG_GGML_F16, "f16", 1, 2, true, ENG_GGML_F32, eng__dequantize_row_f16,
       eng__quantize_row_f16_ref, NULL, eng__vec_dot_f16_f32),
    QT(ENG_GGML_Q4_0, "q4_0", ENG_QK, sizeof(struct eng_block_q4_0), true, ENG_GGML_Q8_0,
       eng__dequantize_row_q4_0, eng__quantize_row_q4_0_ref, eng__quantize_row_q8_0,
       eng__vec_dot_q4_0_q8_0),
    QT(ENG_GGML_Q4_1, "q4_1", ENG_QK, sizeof(struct eng_block_q4_1), true, ENG_GGML_Q8_1,
       eng__dequantize_row_q4_1, eng__quantize_row_q4_1_ref, eng__quantize_row_q8_1,
       eng__vec_dot_q4_1_q8_1),
    QT(ENG_GGML_Q5_0, "q5_0", ENG_QK, sizeof(struct eng_block_q5_0), true, ENG_GGML_Q8_0,
       eng__dequantize_row_q5_0, eng__quantize_row_q5_0_ref, eng__quantize_row_q8_0,
       eng__vec_dot_q5_0_q8_0),
    QT(ENG_GGML_Q5_1, "q5_1", ENG_QK, sizeof(struct eng_block_q5_1), true, ENG_GGML_Q8_1,
       eng__dequantize_row_q5_1, eng__quantize_row_q5_1_ref, eng__quantize_row_q8_1,
       eng__vec_dot_q5_1_q8_1),
    QT(ENG_GGML_Q8_0, "q8_0", ENG_QK, sizeof(struct eng_block_q8_0), true, ENG_GGML_Q8_0,
       eng__dequantize_row_q8_0, eng__quantize_row_q8_0_ref, eng__quantize_row_q8_0,
       eng__vec_dot_q8_0_q8_0),
    QT(ENG_GGML_Q8_1, "q8_1", ENG_QK, sizeof(struct eng_block_q8_1), false, -1,
       eng__dequantize_row_q8_1, eng__quantize_row_q8_1, NULL, NULL),
    QT(ENG_GGML_Q4_K, "q4_K", ENG_QK_K, sizeof(struct eng_block_q4_K), true, ENG_GGML_Q8_K,
       eng__dequantize_row_q4_K, eng__quantize_row_q4_K_ref, eng__quantize_row_q8_K,
       eng__vec_dot_q4_K_q8_K),
    QT(ENG_GGML_Q5_K, "q5_K", ENG_QK_K, sizeof(struct eng_block_q5_K), true, ENG_GGML_Q8_K,
       eng__dequantize_row_q5_K, eng__quantize_row_q5_K_ref, eng__quantize_row_q8_K,
       eng__vec_dot_q5_K_q8_K),
    QT(ENG_GGML_Q6_K, "q6_K", ENG_QK_K, sizeof(struct eng_block_q6_K), true, ENG_GGML_Q8_K,
       eng__dequantize_row_q6_K, eng__quantize_row_q6_K_ref, eng__quantize_row_q8_K,
       eng__vec_dot_q6_K_q8_K),
    QT(ENG_GGML_Q8_K, "q8_K", ENG_QK_K, sizeof(struct eng_block_q8_K), false, -1,
       eng__dequantize_row_q8_K, eng__quantize_row_q8_K, NULL, NULL),
    QT(ENG_GGML_BF16, "bf16", 1, 2, true, ENG_GGML_F32, eng__dequantize_row_bf16,
       eng__quantize_row_bf16_ref, NULL, eng__vec_dot_bf16_f32),
};

#undef QT

const struct eng_qtype *eng_qtype_ref(int type)
{
    if (type < 0 || (size_t)type >= sizeof(ref_table) / sizeof(ref_table[0])) return NULL;
    return ref_table[type].name ? &ref_table[type] : NULL;
}

const struct eng_qtype *eng_qtype_get(int type)
{
    return eng_qtype_ref(type);
}

size_t eng_qtype_row_bytes(const struct eng_qtype *qt, int64_t n)
{
    if (!qt || n <= 0 || n % qt->block_elems != 0) return 0;
    if ((uint64_t)(n / qt->block_elems) > SIZE_MAX / (size_t)qt->block_bytes) return 0;
    return (size_t)(n / qt->block_elems) * (size_t)qt->block_bytes;
}
