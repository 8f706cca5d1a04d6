/*
 * bench_mm.c - single-thread speed of the CPU matmul kernels (engine/cpu/mm_cpu.h) on
 * SmolLM2-135M's shapes, beside the one-dot-per-output loop they replace.
 *
 * Usage: build/bench/bench_mm [reps] (default 20). For each shape, token count and SIMD level it
 * prints the best of `reps` timings (the minimum is the least disturbed by other processes on a
 * shared machine) as nanoseconds per (row, token, block) and GB/s of weights read, with the
 * weights streaming from memory (a different copy each time) as in decoding. Random data:
 * the kernels' speed does not depend on the values. A measurement, not a test: exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/cpu/ggml_kernels.h"
#include "../engine/cpu/mm_cpu.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct shape {
    const char *name; /* the matrix in SmolLM2-135M */
    int type;         /* weight type */
    int n_rows, n_cols;
};

/* The old path: one ggml dot per output. */
static void mm_dots(eng_vec_dot_fn dot, int n_cols, const void *w, size_t w_rb, int n_rows,
                    const void *act, size_t a_rb, int n_tok, float *y)
{
    for (int r = 0; r < n_rows; r++)
        for (int t = 0; t < n_tok; t++)
            y[(size_t)t * n_rows + r] = dot(n_cols, (const unsigned char *)w + (size_t)r * w_rb,
                                            (const unsigned char *)act + (size_t)t * a_rb);
}

int main(int argc, char **argv)
{
    const int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (reps < 1) {
        fprintf(stderr, "usage: %s [reps >= 1]\n", argv[0]);
        return 2;
    }
    static const struct shape shapes[] = {
        {"attn_q/o 576x576", ENG_GGML_Q4_1, 576, 576},
        {"ffn_gate 1536x576", ENG_GGML_Q4_1, 1536, 576},
        {"ffn_down 576x1536", ENG_GGML_Q4_1, 576, 1536},
        {"output 49152x576", ENG_GGML_Q8_0, 49152, 576},
        {"q8_0 576x576", ENG_GGML_Q8_0, 576, 576},
    };
    static const int toks[] = {1, 32};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const struct shape *sh = &shapes[s];
        const struct eng_qtype *qt = eng_qtype_cpu(sh->type);
        const size_t w_rb = eng_qtype_row_bytes(qt, sh->n_cols);
        const size_t a_rb = eng_qtype_row_bytes(eng_qtype_get(qt->act_type), sh->n_cols);
        const int nb = sh->n_cols / 32;
        /* Enough copies of the matrix to fill 128 MB, used in turn, so that weights stream from
         * memory as in decoding (the model is larger than the caches), not from a cache. */
        const size_t mat_bytes = w_rb * (size_t)sh->n_rows;
        const int copies = (int)((128u << 20) / mat_bytes) + 1;
        unsigned char *w_all = malloc(mat_bytes * (size_t)copies);
        for (size_t i = 0; i < mat_bytes * (size_t)copies; i++)
            w_all[i] = (unsigned char)(i * 7 + 3);
        /* Sane scales: f16 0.01 at the start of every block. */
        for (size_t r = 0; r < (size_t)sh->n_rows * (size_t)copies; r++)
            for (int i = 0; i < nb; i++) {
                uint16_t d = eng_fp32_to_fp16(0.01f);
                memcpy(w_all + r * w_rb + (size_t)i * (size_t)qt->block_bytes, &d, 2);
            }
        float *x = malloc(sizeof(float) * (size_t)sh->n_cols * 32);
        for (int i = 0; i < sh->n_cols * 32; i++) x[i] = (float)((i * 37) % 101) - 50.0f;
        unsigned char *act = malloc(a_rb * 32);
        for (int t = 0; t < 32; t++)
            qt->quantize_act(x + t * sh->n_cols, act + t * a_rb, sh->n_cols);
        float *y = malloc(sizeof(float) * (size_t)sh->n_rows * 32);

        for (size_t k = 0; k < sizeof(toks) / sizeof(toks[0]); k++) {
            const int nt = toks[k];
            /* The output matrix only ever sees one token. */
            if (sh->type == ENG_GGML_Q8_0 && nt > 1) continue;
            const double work = (double)sh->n_rows * nt * nb;
            for (int level = -1; level <= (int)eng_cpu_level_supported(); level++) {
                double best = 1e9;
                for (int rep = 0; rep < reps; rep++) {
                    const unsigned char *w = w_all + (size_t)(rep % copies) * mat_bytes;
                    const double t0 = now_s();
                    if (level < 0)
                        mm_dots(qt->vec_dot, sh->n_cols, w, w_rb, sh->n_rows, act, a_rb, nt, y);
                    else
                        eng__mm_kernels(sh->type, level)
                            ->mm(sh->n_cols, w, w_rb, sh->n_rows, act, a_rb, nt, y, sh->n_rows);
                    const double dt = now_s() - t0;
                    if (dt < best) best = dt;
                }
                printf("%-18s tok %2d %-14s %7.3f ms  %6.2f ns/row-tok-block  %6.1f GB/s\n",
                       sh->name, nt, level < 0 ? "dot per output" : eng_cpu_level_name(level),
                       best * 1e3, best * 1e9 / work, (double)w_rb * sh->n_rows / best / 1e9);
            }
        }
        free(w_all);
        free(x);
        free(act);
        free(y);
    }
    return 0;
}
