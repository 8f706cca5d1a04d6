/*
 * bench_decode.c - greedy decoding speed of the engine's forward pass, to set beside
 * `llama-bench -t 2 -p 0 -n 128` (engine/MODELS.md has llama.cpp's numbers for this machine).
 *
 * Usage: build/bench/bench_decode [model.gguf] [threads] [tokens] [runs]
 * (defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf, 2, 128, 5).
 *
 * Each run resets the sequence, evaluates a 5-token prompt, then decodes `tokens` tokens one at a
 * time, each chosen greedily from the previous logits (the argmax is inside the timed loop, as
 * a sampler would be). It prints every run and the median tokens per second, like llama-bench's
 * tg test: decode only, prompt excluded. A measurement, not a test: it exits 0 whatever the
 * speed.
 */
#include "stats.h"
#include <stdio.h>
#include <stdlib.h>

#include "../engine/engine.h"

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    int threads = argc > 2 ? atoi(argv[2]) : 2, n_gen = argc > 3 ? atoi(argv[3]) : 128;
    int runs = argc > 4 ? atoi(argv[4]) : 5;
    if (threads < 1 || n_gen < 1 || runs < 1 || runs > 100) {
        fprintf(stderr, "usage: %s [model.gguf] [threads] [tokens] [runs 1..100]\n", argv[0]);
        return 2;
    }
    struct ag_err err = {0};
    struct eng_model *m;
    const int32_t prompt[] = {504, 3575, 282, 4649, 314}; /* "The capital of France is" */
    const int n_prompt = (int)(sizeof(prompt) / sizeof(prompt[0]));
    if (eng_model_load(path, threads, n_prompt + n_gen, &m, &err) < 0) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    const int n_vocab = eng_model_n_vocab(m);
    double tps[100];
    for (int r = 0; r < runs; r++) {
        float *logits;
        eng_model_reset(m);
        if (eng_model_forward(m, prompt, n_prompt, 0, &logits, &err) < 0) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return 1;
        }
        int64_t t0 = ag_now_ns();
        for (int i = 0; i < n_gen; i++) {
            int32_t tok = 0;
            for (int v = 1; v < n_vocab; v++)
                if (logits[v] > logits[tok]) tok = v;
            if (eng_model_forward(m, &tok, 1, n_prompt + i, &logits, &err) < 0) {
                fprintf(stderr, "bench_decode: %s\n", err.msg);
                return 1;
            }
        }
        tps[r] = n_gen * 1e9 / (double)(ag_now_ns() - t0);
        printf("run %d: %.2f tokens/s\n", r + 1, tps[r]);
    }
    qsort(tps, (size_t)runs, sizeof(tps[0]), cmp_double);
    printf("decode tg%d, %d threads: median %.2f tokens/s over %d runs\n", n_gen, threads,
           tps[runs / 2], runs);
    eng_model_free(m);
    return 0;
}
