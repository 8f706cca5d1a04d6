/*
 * bench_step.c - the cost of one batched decode step inside the engine, without the daemon:
 * what bench_serve's aggregate decode figures are made of, measured steadily.
 *
 * Usage: build/bench/bench_step [model.gguf] [threads] [prompt] [gen] [seqs...]
 * (defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf, 2, 128, 128, 1 4 8 16).
 *
 * It prefills distinct prompts of `prompt` tokens into paged KV (16 positions a page, as the
 * service allocates them) with the weights repacked as the service repacks them; then, in each
 * of STEP_ROUNDS rounds (default 5), every sequence count N runs `gen` decode steps of N rows
 * (one row per sequence, all advancing together, as llama-batched-bench's S_TG counts) from the
 * end of the prompts. It prints each N's median step time over the rounds (each round's figure
 * being its median step) and the aggregate decode tokens/s. The tokens fed back are sampled
 * from each row's logits by the engine's greedy sampler, as the service does at temperature 0.
 * A measurement, not a test: it exits 0 whatever the speed.
 */
#include "stats.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/base.h"
#include "../engine/engine.h"

#define MAX_SEQS   64
#define MAX_ROUNDS 50
#define PAGE_SHIFT 4

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    const int n_prompt = argc > 3 ? atoi(argv[3]) : 128, n_gen = argc > 4 ? atoi(argv[4]) : 128;
    int counts[16] = {1, 4, 8, 16}, n_counts = 4;
    if (argc > 5) {
        n_counts = 0;
        for (int i = 5; i < argc && n_counts < 16; i++) counts[n_counts++] = atoi(argv[i]);
    }
    const char *r_env = getenv("STEP_ROUNDS");
    const int rounds = r_env ? atoi(r_env) : 5;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench_step: STEP_ROUNDS must be 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    int max_n = 0;
    for (int i = 0; i < n_counts; i++) {
        if (counts[i] < 1 || counts[i] > MAX_SEQS) {
            fprintf(stderr, "bench_step: a sequence count must be 1..%d\n", MAX_SEQS);
            return 2;
        }
        if (counts[i] > max_n) max_n = counts[i];
    }
    if (threads < 1 || n_prompt < 1 || n_gen < 1) {
        fprintf(stderr, "usage: %s [model.gguf] [threads] [prompt] [gen] [seqs...]\n", argv[0]);
        return 2;
    }
    const int n_total = n_prompt + n_gen;
    struct ag_err err = {0};
    struct eng_model *m;
    if (eng_model_load(path, threads, n_total, &m, &err) < 0) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    eng_model_pack_batched(m);
    const int nv = eng_model_n_vocab(m);
    /* Greedy, as the service samples at temperature 0 (penalties off). */
    struct eng_sampler_params sp = eng_sampler_params_default();
    sp.temperature = 0;
    sp.repeat_penalty = 1;
    sp.frequency_penalty = 0;
    sp.presence_penalty = 0;
    struct eng_sampler *smp;
    if (eng_sampler_new(nv, &sp, &smp, &err) < 0) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    const int pages_per_seq = (n_total + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT;
    struct eng_kv_store kv;
    struct eng_batch_buf *b;
    const int max_rows = n_prompt > max_n ? n_prompt : max_n;
    if (eng_kv_store_init(m, pages_per_seq * max_n, PAGE_SHIFT, &kv, &err) < 0 ||
        eng_batch_buf_new(m, max_rows, &b, &err) < 0) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    int32_t *pages = ag_calloc((size_t)(pages_per_seq * max_n), sizeof(int32_t));
    for (int i = 0; i < pages_per_seq * max_n; i++) pages[i] = i;
    int32_t *tokens = ag_calloc((size_t)(n_total * max_n), sizeof(int32_t));
    float *logits = ag_calloc((size_t)max_n * (size_t)nv, sizeof(float));
    struct eng_batch_seq *rows = ag_calloc((size_t)max_n, sizeof(*rows));

    /* Every sequence's prompt once (distinct random tokens), then rounds: in each, every count
     * N decodes the first N sequences from the end of their prompts. Alternating the counts
     * round after round lets each see the same machine: this VM's speed drifts by tens of
     * percent within minutes. */
    srand(1234);
    for (int s = 0; s < max_n; s++) {
        int32_t *t = tokens + (size_t)s * n_total;
        for (int i = 0; i < n_prompt; i++) t[i] = 200 + rand() % (nv - 400);
        struct eng_batch_seq one = {.tokens = t,
                                    .n = n_prompt,
                                    .pos = 0,
                                    .pages = pages + (size_t)s * pages_per_seq,
                                    .prefill = true,
                                    .want_logits = true};
        if (eng_model_forward_seqs(m, b, &kv, &one, 1, logits, &err) < 0) {
            fprintf(stderr, "bench_step: %s\n", err.msg);
            return 1;
        }
        t[n_prompt] = eng_sampler_sample(smp, logits);
    }
    double *ms = ag_calloc((size_t)n_gen, sizeof(double));
    double med[16][MAX_ROUNDS];
    for (int round = 0; round < rounds; round++)
        for (int c = 0; c < n_counts; c++) {
            const int N = counts[c];
            for (int g = 0; g < n_gen - 1; g++) {
                for (int s = 0; s < N; s++)
                    rows[s] = (struct eng_batch_seq){.tokens = tokens + (size_t)s * n_total +
                                                               n_prompt + g,
                                                     .n = 1,
                                                     .pos = n_prompt + g,
                                                     .pages = pages + (size_t)s * pages_per_seq,
                                                     .prefill = true,
                                                     .want_logits = true};
                const double t0 = now_ms();
                if (eng_model_forward_seqs(m, b, &kv, rows, N, logits, &err) < 0) {
                    fprintf(stderr, "bench_step: %s\n", err.msg);
                    return 1;
                }
                for (int s = 0; s < N; s++)
                    tokens[(size_t)s * n_total + n_prompt + g + 1] =
                        eng_sampler_sample(smp, logits + (size_t)s * nv);
                ms[g] = now_ms() - t0;
            }
            /* The median step: the neighbours stall single steps now and then. */
            med[c][round] = pct(ms, n_gen - 1, 50);
        }
    free(ms);

    printf("%-10s %12s %14s %10s   (median step of %d rounds)\n", "sequences", "ms / step",
           "decode tok/s", "vs 1", rounds);
    double single = 0;
    for (int c = 0; c < n_counts; c++) {
        const int N = counts[c];
        const double step = pct(med[c], rounds, 50), tps = N * 1000.0 / step;
        if (N == 1) single = tps;
        printf("%-10d %12.2f %14.1f %9.2fx\n", N, step, tps, single > 0 ? tps / single : 0);
        printf("RESULT step_decode_tps npl=%d %.1f\n", N, tps);
    }
    free(rows);
    free(logits);
    free(tokens);
    free(pages);
    eng_sampler_free(smp);
    eng_batch_buf_free(b);
    eng_kv_store_release(&kv);
    eng_model_free(m);
    return 0;
}
