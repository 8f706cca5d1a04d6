/*
 * bench_engine.c - the engine's prefill and decode speed, measured the way llama-bench measures
 * llama.cpp's, so that bench/run_engine.sh can print both side by side.
 *
 * Usage: build/bench/bench_engine MODEL [-t THREADS] [-p N[,N...]] [-n N] [-r REPS] [--json]
 * (defaults: 2 threads, -p 128,512, -n 128, 5 repetitions).
 *
 * As llama-bench: one warm-up run of each test, then REPS timed runs, reporting the mean and
 * standard deviation of tokens per second.
 *   ppN  the KV cache is cleared, then N random token ids are evaluated as one prompt (the
 *        engine runs it in batches of ENG_MODEL_MAX_BATCH rows).
 *   tgN  the KV cache is cleared, then N tokens are decoded one at a time from position 0, each
 *        a random id (no sampling: the forward pass only, as llama-bench's tg).
 * The peak resident set (VmHWM) after all tests is printed too; it includes the mapped weights
 * that were touched, as llama.cpp's does. A measurement, not a test: it exits 0 at any speed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/engine.h"

#define MAX_PP 8

static uint64_t rng = 0x853c49e6748fea9bull;

static int32_t rand_token(int n_vocab)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int32_t)(rng % (uint64_t)n_vocab);
}

/* VmHWM of this process in KiB, 0 when unknown. */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    if (!f) return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* Runs one test once; returns its tokens per second, or -1 on error. */
static double run_once(struct eng_model *m, bool prefill, int n, int32_t *buf)
{
    struct ag_err err = {0};
    const int n_vocab = eng_model_n_vocab(m);
    eng_model_reset(m);
    int64_t t0 = ag_now_ns();
    if (prefill) {
        for (int i = 0; i < n; i++) buf[i] = rand_token(n_vocab);
        if (eng_model_forward(m, buf, n, 0, NULL, &err) < 0) goto fail;
    } else {
        for (int i = 0; i < n; i++) {
            int32_t tok = rand_token(n_vocab);
            if (eng_model_forward(m, &tok, 1, i, NULL, &err) < 0) goto fail;
        }
    }
    return n * 1e9 / (double)(ag_now_ns() - t0);
fail:
    fprintf(stderr, "bench_engine: %s\n", err.msg);
    return -1;
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s MODEL [-t THREADS] [-p N[,N...]] [-n N] [-r REPS] [--json]\n"
            "  -t  compute threads (default 2)\n"
            "  -p  prompt lengths to time (default 128,512)\n"
            "  -n  tokens to decode (default 128; 0 = skip)\n"
            "  -r  timed repetitions per test (default 5)\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') return usage(argv[0]);
    const char *path = argv[1];
    int threads = 2, tg = 128, reps = 5, pp[MAX_PP] = {128, 512}, n_pp = 2;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (i + 1 >= argc) return usage(argv[0]);
        const char *v = argv[++i];
        if (!strcmp(a, "-t"))
            threads = atoi(v);
        else if (!strcmp(a, "-n"))
            tg = atoi(v);
        else if (!strcmp(a, "-r"))
            reps = atoi(v);
        else if (!strcmp(a, "-p")) {
            n_pp = 0;
            for (const char *s = v; *s && n_pp < MAX_PP;
                 s = strchr(s, ',') ? strchr(s, ',') + 1 : "")
                pp[n_pp++] = atoi(s);
        } else
            return usage(argv[0]);
    }
    int max_n = tg;
    for (int i = 0; i < n_pp; i++) {
        if (pp[i] < 1) return usage(argv[0]);
        if (pp[i] > max_n) max_n = pp[i];
    }
    if (threads < 1 || tg < 0 || reps < 1 || reps > 1000 || max_n < 1) return usage(argv[0]);

    struct ag_err err = {0};
    struct eng_model *m;
    if (eng_model_load(path, threads, max_n, &m, &err) < 0) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int32_t *buf = malloc((size_t)max_n * sizeof(int32_t));
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    for (int t = 0; t < n_pp + (tg > 0); t++) {
        const bool prefill = t < n_pp;
        const int n = prefill ? pp[t] : tg;
        double sum = 0.0, sum2 = 0.0;
        if (run_once(m, prefill, n, buf) < 0) return 1; /* warm-up */
        for (int r = 0; r < reps; r++) {
            double v = run_once(m, prefill, n, buf);
            if (v < 0) return 1;
            sum += v;
            sum2 += v * v;
        }
        const double mean = sum / reps;
        const double sd = reps > 1 ? sqrt(fmax(0.0, (sum2 - sum * mean) / (reps - 1))) : 0.0;
        if (json)
            printf("{\"model\":\"%s\",\"test\":\"%s%d\",\"threads\":%d,\"reps\":%d,"
                   "\"tokens_per_s\":%.2f,\"stddev\":%.2f}\n",
                   name, prefill ? "pp" : "tg", n, threads, reps, mean, sd);
        else
            printf("%-40s %2d threads  %s%-4d %9.2f ± %.2f tokens/s\n", name, threads,
                   prefill ? "pp" : "tg", n, mean, sd);
        fflush(stdout);
    }
    const long rss = peak_rss_kib();
    if (json)
        printf("{\"model\":\"%s\",\"peak_rss_kib\":%ld}\n", name, rss);
    else
        printf("%-40s peak RSS %.1f MiB\n", name, rss / 1024.0);
    free(buf);
    eng_model_free(m);
    return 0;
}
