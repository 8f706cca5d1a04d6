/*
 * test_mm_packed.c - the packed Q4_1 and Q8_0 batch kernels (engine/cpu/mm_packed.c) that the
 * engine service decodes with: for every token count 1..33, each (row, token) output is the bits
 * of the same token computed alone (row invariance: a sequence's logits do not depend on what
 * it is batched with), and close to the reference dot product (eng_qtype_get(type)->vec_dot, in
 * ggml's order). Odd row groups, several widths, a fresh seed each run (printed;
 * MM_PACKED_SEED=N replays one) and a fixed one.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/cpu/mm_packed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"

static uint64_t rng;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

typedef void (*pack_fn)(void *dst, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols);
typedef size_t (*pack_bytes_fn)(int64_t n_rows, int64_t n_cols);
typedef void (*mm_fn)(int n_cols, const void *p, int n_rows, const void *act, size_t act_row_bytes,
                      int n_tok, float *y, int64_t y_stride);

static void check_type(int type, pack_bytes_fn bytes, pack_fn pack, mm_fn mm)
{
    const struct eng_qtype *wq = eng_qtype_get(type);
    const struct eng_qtype *aq = eng_qtype_get(wq->act_type);
    static const int cols_list[] = {32, 576, 1536};
    for (size_t ci = 0; ci < sizeof(cols_list) / sizeof(cols_list[0]); ci++) {
        const int cols = cols_list[ci], rows = 48, max_tok = 33;
        const size_t wrb = eng_qtype_row_bytes(wq, cols), arb = eng_qtype_row_bytes(aq, cols);
        unsigned char *w = malloc(wrb * rows), *act = malloc(arb * max_tok);
        float *x = malloc((size_t)cols * sizeof(float));
        for (int r = 0; r < rows; r++) {
            /* Some rows with large values, some offset: the scales and minima vary. */
            for (int i = 0; i < cols; i++)
                x[i] = frand() * (r % 5 == 0 ? 30.0f : 1.0f) + (r % 3 == 0 ? 0.5f : 0.0f);
            wq->quantize(x, w + (size_t)r * wrb, cols);
        }
        for (int t = 0; t < max_tok; t++) {
            for (int i = 0; i < cols; i++) x[i] = frand() * (t % 4 == 0 ? 8.0f : 1.0f);
            aq->quantize(x, act + (size_t)t * arb, cols);
        }
        void *pk = malloc(bytes(rows, cols));
        pack(pk, w, wrb, rows, cols);
        float *alone = malloc((size_t)max_tok * rows * sizeof(float));
        float *y = malloc((size_t)max_tok * rows * sizeof(float));
        for (int t = 0; t < max_tok; t++)
            mm(cols, pk, rows, act + (size_t)t * arb, arb, 1, alone + (size_t)t * rows, rows);
        int far = 0;
        double worst = 0;
        float *wd = malloc((size_t)cols * sizeof(float)),
              *ad = malloc((size_t)cols * sizeof(float));
        for (int t = 0; t < max_tok; t++)
            for (int r = 0; r < rows; r++) {
                const double want = wq->vec_dot(cols, w + (size_t)r * wrb, act + (size_t)t * arb);
                const double got = alone[(size_t)t * rows + r];
                /* Float rounding is relative to the sum of the products' magnitudes. */
                wq->dequantize(w + (size_t)r * wrb, wd, cols);
                aq->dequantize(act + (size_t)t * arb, ad, cols);
                double mag = 0;
                for (int i = 0; i < cols; i++) mag += fabs((double)wd[i] * ad[i]);
                const double err = fabs(got - want) / (mag + 1e-30);
                if (err > worst) worst = err;
                far += err > 1e-5;
            }
        free(ad);
        free(wd);
        CHECKF(far == 0, "%s, %d columns: %d outputs far from the dot product (worst %.2g)",
               wq->name, cols, far, worst);
        int differ = 0;
        for (int n_tok = 2; n_tok <= max_tok; n_tok++) {
            mm(cols, pk, rows, act, arb, n_tok, y, rows);
            differ += memcmp(y, alone, (size_t)n_tok * rows * sizeof(float)) != 0;
        }
        CHECKF(differ == 0, "%s, %d columns: %d token counts change some token's outputs", wq->name,
               cols, differ);
        free(y);
        free(alone);
        free(pk);
        free(x);
        free(act);
        free(w);
    }
}

static void check_seed(uint64_t seed)
{
    rng = seed ? seed : 1;
    check_type(ENG_GGML_Q4_1, eng__pack_q4_1_bytes, eng__pack_q4_1, eng__mm_q4_1_packed);
    check_type(ENG_GGML_Q8_0, eng__pack_q8_0_bytes, eng__pack_q8_0, eng__mm_q8_0_packed);
}

static void test_fixed_seed(void)
{
    if (!eng__pack_available()) SKIP("no AVX-512 VNNI on this CPU");
    check_seed(4242);
}

static void test_fresh_seed(void)
{
    if (!eng__pack_available()) SKIP("no AVX-512 VNNI on this CPU");
    const char *env = getenv("MM_PACKED_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    printf("  seed %llu (MM_PACKED_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    check_seed(seed);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_fixed_seed);
    RUN(test_fresh_seed);
    return TEST_END();
}
