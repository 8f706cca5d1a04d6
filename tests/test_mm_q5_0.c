/*
 * test_mm_q5_0.c - the Q5_0 block kernels (engine/cpu/mm_q5_0.c) and the packed one (mm_packed.c),
 * and the rows of a packed Q8_0 copy,
 * against the Q5_0 dot product the CPU backend otherwise uses
 * (eng_qtype_cpu(ENG_GGML_Q5_0)->vec_dot): bit for bit, at every SIMD level this CPU has, for odd
 * row and token counts, with a fresh seed each run (printed; MM_Q5_SEED=N replays one) and a fixed
 * one.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/cpu/mm_packed.h"
#include "../engine/cpu/mm_q5_0.h"

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

static void check_seed(uint64_t seed)
{
    rng = seed ? seed : 1;
    const struct eng_qtype *w5 = eng_qtype_get(ENG_GGML_Q5_0), *cpu = eng_qtype_cpu(ENG_GGML_Q5_0);
    const struct eng_qtype *a8 = eng_qtype_get(ENG_GGML_Q8_0);
    static const int cols_list[] = {32, 640, 96 * 32};
    for (size_t ci = 0; ci < sizeof(cols_list) / sizeof(cols_list[0]); ci++) {
        const int cols = cols_list[ci], rows = 37, max_tok = 33;
        const size_t wrb = eng_qtype_row_bytes(w5, cols), arb = eng_qtype_row_bytes(a8, cols);
        unsigned char *w = malloc(wrb * rows), *act = malloc(arb * max_tok);
        float *x = malloc((size_t)cols * sizeof(float));
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) x[i] = frand() * (r % 5 == 0 ? 8.0f : 1.0f);
            w5->quantize(x, w + (size_t)r * wrb, cols);
        }
        for (int t = 0; t < max_tok; t++) {
            for (int i = 0; i < cols; i++) x[i] = frand() * 3.0f;
            cpu->quantize_act(x, act + (size_t)t * arb, cols);
        }
        /* The packed kernel (mm_packed.h) on the first 32 rows: the same bits. */
        if (eng__pack_available()) {
            unsigned char *pk = malloc(eng__pack_q5_0_bytes(32, cols));
            eng__pack_q5_0(pk, w, wrb, 32, cols);
            for (int n_tok = 1; n_tok <= max_tok; n_tok += 4) {
                float *y = calloc((size_t)n_tok * 32, sizeof(float));
                eng__mm_q5_0_packed(cols, pk, 32, act, arb, n_tok, y, 32);
                int bad = 0;
                for (int t = 0; t < n_tok; t++)
                    for (int r = 0; r < 32; r++) {
                        float want = cpu->vec_dot(cols, w + (size_t)r * wrb, act + (size_t)t * arb);
                        bad += memcmp(&want, &y[t * 32 + r], sizeof(float)) != 0;
                    }
                CHECKF(bad == 0, "packed: seed %llu cols %d tokens %d: %d outputs differ",
                       (unsigned long long)seed, cols, n_tok, bad);
                free(y);
            }
            free(pk);
        }
        for (int level = ENG_CPU_SCALAR; level <= (int)eng_cpu_level_supported(); level++) {
            const struct eng_mm_kernels *k = eng__mm_kernels_q5_0((enum eng_cpu_level)level);
            /* The kernel's quantizer writes the table's bytes. */
            unsigned char *qa = malloc(arb);
            k->quantize_act(x, qa, cols);
            unsigned char *qb = malloc(arb);
            cpu->quantize_act(x, qb, cols);
            CHECKF(memcmp(qa, qb, arb) == 0, "level %d cols %d: quantizer bytes differ", level,
                   cols);
            free(qa);
            free(qb);
            for (int n_tok = 1; n_tok <= max_tok; n_tok += 4) {
                float *y = calloc((size_t)n_tok * rows, sizeof(float));
                k->mm(cols, w, wrb, rows, act, arb, n_tok, y, rows);
                int bad = 0;
                for (int t = 0; t < n_tok; t++)
                    for (int r = 0; r < rows; r++) {
                        float want = cpu->vec_dot(cols, w + (size_t)r * wrb, act + (size_t)t * arb);
                        bad += memcmp(&want, &y[t * rows + r], sizeof(float)) != 0;
                    }
                CHECKF(bad == 0, "seed %llu level %d cols %d tokens %d: %d outputs differ",
                       (unsigned long long)seed, level, cols, n_tok, bad);
                free(y);
            }
        }
        free(w);
        free(act);
        free(x);
    }
}

/* The packed Q8_0 copy gives back every row exactly (the embedding lookup of a tied output). */
static void test_q8_0_unpack(void)
{
    if (!eng__pack_available()) SKIP("no AVX-512 VNNI on this CPU");
    rng = 99;
    const struct eng_qtype *q8 = eng_qtype_get(ENG_GGML_Q8_0);
    enum { ROWS = 48, COLS = 640 };
    const size_t rb = eng_qtype_row_bytes(q8, COLS);
    unsigned char *w = malloc(rb * ROWS);
    float x[COLS], want[COLS], got[COLS];
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < COLS; i++) x[i] = frand() * (r % 3 == 0 ? 40.0f : 1.0f);
        q8->quantize(x, w + (size_t)r * rb, COLS);
    }
    void *pk = malloc(eng__pack_q8_0_bytes(ROWS, COLS));
    eng__pack_q8_0(pk, w, rb, ROWS, COLS);
    int bad = 0;
    for (int r = 0; r < ROWS; r++) {
        q8->dequantize(w + (size_t)r * rb, want, COLS);
        eng__unpack_q8_0_row(pk, COLS, r, got);
        bad += memcmp(want, got, sizeof(want)) != 0;
    }
    CHECKF(bad == 0, "%d rows differ", bad);
    free(pk);
    free(w);
}

static void test_fixed_seed(void)
{
    check_seed(12345);
}

static void test_fresh_seed(void)
{
    const char *env = getenv("MM_Q5_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    printf("  seed %llu (MM_Q5_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    check_seed(seed);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_fixed_seed);
    RUN(test_q8_0_unpack);
    RUN(test_fresh_seed);
    return TEST_END();
}
