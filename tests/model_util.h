/*
 * model_util.h - what the engine's numeric tests share: a seeded generator, random vectors and
 * quantized matrices with their dequantized copies, and the relative error the checks use.
 */
#ifndef AG_TEST_MODEL_UTIL_H
#define AG_TEST_MODEL_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "../engine/engine.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline void rng_seed(uint64_t s)
{
    rng_state = s ? s : 1;
}

/* Uniform in [-1, 1). */
static inline float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static inline float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

/* max |a - b| / max |b| over n values (b is the reference). */
static inline double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0.0 ? num / den : num;
}

/* A random weight matrix of type `type` with its dequantized copy (what the model computes
 * with). */
struct test_mat {
    struct eng_mat m;
    void *bytes; /* (n_rows, row_bytes) */
    float *deq;  /* (n_rows, n_cols) dequantized bytes */
};

static inline void test_mat_init(struct test_mat *t, int type, int64_t n_cols, int64_t n_rows,
                                 float scale)
{
    const struct eng_qtype *qt = eng_qtype_get(type);
    size_t rb = eng_qtype_row_bytes(qt, n_cols);
    float *src = rand_vec((size_t)(n_cols * n_rows), scale);
    t->bytes = malloc(rb * (size_t)n_rows);
    t->deq = malloc((size_t)(n_cols * n_rows) * sizeof(float));
    for (int64_t r = 0; r < n_rows; r++) {
        qt->quantize(src + r * n_cols, (char *)t->bytes + r * rb, n_cols);
        qt->dequantize((char *)t->bytes + r * rb, t->deq + r * n_cols, n_cols);
    }
    free(src);
    t->m = (struct eng_mat){
        .data = t->bytes, .qt = qt, .n_cols = n_cols, .n_rows = n_rows, .row_bytes = rb};
}

static inline void test_mat_release(struct test_mat *t)
{
    free(t->bytes);
    free(t->deq);
}

/* Plain float versions of the model's ops, the reference both tests compare with. */
static inline void naive_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = (float)(x[i] * scale * w[i]);
}

static inline void naive_softmax(float *x, int n)
{
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    for (int i = 0; i < n; i++) sum += exp(x[i] - max);
    for (int i = 0; i < n; i++) x[i] = (float)(exp(x[i] - max) / sum);
}

/* RoPE with angles computed directly in double: pos * base^(-2i/n_rot). */
static inline void naive_rope(float *x, int n_head, int head_dim, int n_rot, int pos, float base,
                              bool neox)
{
    for (int h = 0; h < n_head; h++, x += head_dim)
        for (int i = 0; i < n_rot / 2; i++) {
            double th = pos * pow(base, -2.0 * i / n_rot);
            int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
            double x0 = x[a], x1 = x[b];
            x[a] = (float)(x0 * cos(th) - x1 * sin(th));
            x[b] = (float)(x0 * sin(th) + x1 * cos(th));
        }
}

/* y (n_rows) = W (n_rows, n_cols) x in double. */
static inline void naive_matvec(float *y, const float *w, const float *x, int n_cols, int n_rows)
{
    for (int r = 0; r < n_rows; r++) {
        double s = 0.0;
        for (int c = 0; c < n_cols; c++) s += (double)w[(size_t)r * n_cols + c] * x[c];
        y[r] = (float)s;
    }
}

#endif
