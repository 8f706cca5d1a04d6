/*
 * test_mm_q4_k.c - the Q4_K block kernel in llama.cpp's 4-token order (engine/cpu/mm_q4_k.c) and
 * its packed variant (16 rows per product) against the dot kernel of that order
 * (eng_qtype_cpu_gemm(ENG_GGML_Q4_K, ...)->vec_dot): bit for bit, for odd row and token counts,
 * with a fixed seed and a fresh one (printed; MM_Q4K_SEED=N replays it). Skipped below AVX-512
 * VNNI, where the kernel does not exist.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/cpu/mm_packed.h"
#include "../engine/cpu/mm_q4_k.h"

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
    const struct eng_mm_kernels *k = eng__mm_kernels_q4_k_gemm(eng_cpu_level_supported());
    if (!k) SKIP("no AVX-512 VNNI on this CPU");
    rng = seed ? seed : 1;
    const struct eng_qtype *wq = eng_qtype_get(ENG_GGML_Q4_K);
    const struct eng_qtype *dot = eng_qtype_cpu_gemm(ENG_GGML_Q4_K, 8);
    const struct eng_qtype *aq = eng_qtype_get(dot->act_type);
    CHECK(dot != eng_qtype_cpu(ENG_GGML_Q4_K));
    CHECK(k->quantize_act == dot->quantize_act);
    static const int cols_list[] = {256, 1024, 2048 + 256};
    for (size_t ci = 0; ci < sizeof(cols_list) / sizeof(cols_list[0]); ci++) {
        const int cols = cols_list[ci], rows = 19, max_tok = 70;
        const size_t wrb = eng_qtype_row_bytes(wq, cols), arb = eng_qtype_row_bytes(aq, cols);
        unsigned char *w = malloc(wrb * rows), *act = malloc(arb * max_tok);
        float *x = malloc((size_t)cols * sizeof(float));
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) x[i] = frand() * (r % 4 == 0 ? 6.0f : 1.0f);
            wq->quantize(x, w + (size_t)r * wrb, cols);
        }
        for (int t = 0; t < max_tok; t++) {
            for (int i = 0; i < cols; i++) x[i] = frand() * (t % 3 == 0 ? 20.0f : 2.0f);
            dot->quantize_act(x, act + (size_t)t * arb, cols);
        }
        /* The packed kernel on the first 16 rows, then the block kernel on all 19. */
        unsigned char *pk = malloc(eng__pack_q4_k_bytes(16, cols));
        eng__pack_q4_k(pk, w, wrb, 16, cols);
        for (int n_tok = 1; n_tok <= max_tok; n_tok += 23) {
            float *y = calloc((size_t)n_tok * 16, sizeof(float));
            eng__mm_q4_k_packed(cols, pk, 16, act, arb, n_tok, y, 16);
            int bad = 0;
            for (int t = 0; t < n_tok; t++)
                for (int r = 0; r < 16; r++) {
                    float want = dot->vec_dot(cols, w + (size_t)r * wrb, act + (size_t)t * arb);
                    bad += memcmp(&want, &y[t * 16 + r], sizeof(float)) != 0;
                }
            CHECKF(bad == 0, "packed: seed %llu cols %d tokens %d: %d outputs differ",
                   (unsigned long long)seed, cols, n_tok, bad);
            free(y);
        }
        free(pk);
        for (int n_tok = 1; n_tok <= max_tok; n_tok += 23) {
            float *y = calloc((size_t)n_tok * rows, sizeof(float));
            k->mm(cols, w, wrb, rows, act, arb, n_tok, y, rows);
            int bad = 0;
            for (int t = 0; t < n_tok; t++)
                for (int r = 0; r < rows; r++) {
                    float want = dot->vec_dot(cols, w + (size_t)r * wrb, act + (size_t)t * arb);
                    bad += memcmp(&want, &y[t * rows + r], sizeof(float)) != 0;
                }
            CHECKF(bad == 0, "seed %llu cols %d tokens %d: %d outputs differ",
                   (unsigned long long)seed, cols, n_tok, bad);
            free(y);
        }
        free(w);
        free(act);
        free(x);
    }
}

static void test_fixed_seed(void)
{
    check_seed(777);
}

static void test_fresh_seed(void)
{
    const char *env = getenv("MM_Q4K_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    printf("  seed %llu (MM_Q4K_SEED=%llu replays it)\n", (unsigned long long)seed,
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
