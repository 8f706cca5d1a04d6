/*
 * test_sampler.c - the token sampler: greedy, seeded reproducibility, the empirical
 * distribution against softmax(logits / T), truncation by top-k / top-p / min-p, and the
 * penalties' exact arithmetic (llama.cpp semantics).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../engine/sampler.h"
#include "test.h"

#define BIG_VOCAB 262144

static struct eng_sampler *mk(int n_vocab, const struct eng_sampler_params *p)
{
    struct eng_sampler *s = NULL;
    struct ag_err err = {0};
    int rc = eng_sampler_new(n_vocab, p, &s, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return s;
}

/* Deterministic pseudo-random logits in [-8, 8). */
static void fill_logits(float *l, int n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        l[i] = (float)(x >> 8) / (float)(1u << 24) * 16.0f - 8.0f;
    }
}

static float big_a[BIG_VOCAB], big_b[BIG_VOCAB];

static void test_greedy_is_argmax(void)
{
    struct eng_sampler_params p = {0}; /* temperature 0 */
    struct eng_sampler *s = mk(BIG_VOCAB, &p);
    fill_logits(big_a, BIG_VOCAB, 1);
    big_a[123457] = 50.0f;
    CHECK(eng_sampler_sample(s, big_a) == 123457);
    eng_sampler_free(s);

    p = eng_sampler_params_default();
    p.top_k = 1;
    s = mk(BIG_VOCAB, &p);
    fill_logits(big_a, BIG_VOCAB, 2);
    int32_t best = 0;
    for (int i = 1; i < BIG_VOCAB; i++)
        if (big_a[i] > big_a[best]) best = i;
    for (int i = 0; i < 20; i++) CHECK(eng_sampler_sample(s, big_a) == best);
    eng_sampler_free(s);

    /* The rule at the edges: the first of equal maxima, NaNs never win (unless first), the
     * tail past the last whole vector, infinities, all -inf. */
    p = (struct eng_sampler_params){0};
    s = mk(1003, &p);
    static float l[1003];
    struct {
        int a, b, nan_at, want;
        float va, vb;
    } cases[] = {
        {700, 900, 50, 700, 9.0f, 9.0f},    /* tie: the first */
        {1001, 17, -1, 1001, 9.0f, 8.0f},   /* in the tail */
        {5, 600, 599, 600, 3.0f, INFINITY}, /* +inf, a NaN just before */
        {0, 1002, 1, 0, 9.0f, 9.0f},        /* index 0 */
        {-1, -1, 0, 0, 0.0f, 0.0f},         /* NaN at 0: the scalar rule answers 0 */
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        fill_logits(l, 1003, 5 + ci);
        if (cases[ci].a >= 0) l[cases[ci].a] = cases[ci].va;
        if (cases[ci].b >= 0) l[cases[ci].b] = cases[ci].vb;
        if (cases[ci].nan_at >= 0) l[cases[ci].nan_at] = NAN;
        int32_t got = eng_sampler_sample(s, l);
        CHECKF(got == cases[ci].want, "case %zu: %d, want %d", ci, got, cases[ci].want);
    }
    for (int i = 0; i < 1003; i++) l[i] = -INFINITY;
    CHECK(eng_sampler_sample(s, l) == 0);
    l[40] = NAN;
    CHECK(eng_sampler_sample(s, l) == 0);
    eng_sampler_free(s);
}

static void run_seq(uint64_t seed, int32_t *out, int n)
{
    struct eng_sampler_params p = eng_sampler_params_default();
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 0.9f;
    p.min_p = 0;
    p.seed = seed;
    struct eng_sampler *s = mk(BIG_VOCAB, &p);
    for (int i = 0; i < n; i++) {
        fill_logits(big_a, BIG_VOCAB, 7);
        for (int j = 0; j < BIG_VOCAB; j++) big_a[j] *= 0.5f; /* flat: many candidates */
        out[i] = eng_sampler_sample(s, big_a);
    }
    eng_sampler_free(s);
}

static void test_seed_reproducible(void)
{
    int32_t a[32], b[32], c[32];
    run_seq(42, a, 32);
    run_seq(42, b, 32);
    run_seq(43, c, 32);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    CHECK(memcmp(a, c, sizeof(a)) != 0);
}

static void check_distribution(const struct eng_sampler_params *p, const float *logits, int n,
                               const double *want)
{
    enum { DRAWS = 200000 };
    long counts[16] = {0};
    float l[16];
    struct eng_sampler *s = mk(n, p);
    for (int i = 0; i < DRAWS; i++) {
        memcpy(l, logits, sizeof(float) * (size_t)n);
        int32_t t = eng_sampler_sample(s, l);
        CHECK(t >= 0 && t < n);
        if (t >= 0 && t < n) counts[t]++;
    }
    eng_sampler_free(s);
    double chi2 = 0;
    for (int i = 0; i < n; i++) {
        double e = want[i] * DRAWS;
        if (e == 0) {
            CHECKF(counts[i] == 0, "token %d excluded but drawn %ld times", i, counts[i]);
            continue;
        }
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    /* n-1 <= 15 degrees of freedom: 99.99th percentile is about 44 */
    CHECKF(chi2 < 50, "chi2 %.1f", chi2);
}

static void softmax_t(const float *l, int n, double t, const int *keep, double *out)
{
    double z = 0, m = -1e30;
    for (int i = 0; i < n; i++)
        if (keep[i] && l[i] > m) m = l[i];
    for (int i = 0; i < n; i++) z += keep[i] ? exp((l[i] - m) / t) : 0;
    for (int i = 0; i < n; i++) out[i] = keep[i] ? exp((l[i] - m) / t) / z : 0;
}

static const float small[8] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -2.0f};

static void test_distribution_matches_softmax(void)
{
    double want[8];
    int all[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    struct eng_sampler_params p = {.temperature = 1.0f, .seed = 1};
    softmax_t(small, 8, 1.0, all, want);
    check_distribution(&p, small, 8, want);
    p.temperature = 0.7f;
    p.seed = 2;
    softmax_t(small, 8, 0.7, all, want);
    check_distribution(&p, small, 8, want);
    p.temperature = 2.0f;
    p.top_k = 3; /* keeps 4, 6, 1 */
    int k3[8] = {0, 1, 0, 0, 1, 0, 1, 0};
    softmax_t(small, 8, 2.0, k3, want);
    check_distribution(&p, small, 8, want);
}

static void test_top_p_min_p_exclude(void)
{
    /* probabilities at T=1: sorted 3.0, 2.5, 2.0, 1.0, ... */
    double pr[8];
    int all[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    softmax_t(small, 8, 1.0, all, pr);
    /* top_p just above p(4) + p(6): keeps 4, 6, 1 */
    struct eng_sampler_params p = {
        .temperature = 1.0f, .top_p = (float)(pr[4] + pr[6] + 1e-3), .seed = 3};
    int keep[8] = {0, 1, 0, 0, 1, 0, 1, 0};
    double want[8];
    softmax_t(small, 8, 1.0, keep, want);
    check_distribution(&p, small, 8, want);

    /* min_p 0.3: p >= 0.3 p_max <=> logit >= 3 + ln 0.3 = 1.796: keeps 4, 6, 1 */
    p = (struct eng_sampler_params){.temperature = 1.5f, .min_p = 0.3f, .seed = 4};
    softmax_t(small, 8, 1.5, keep, want);
    check_distribution(&p, small, 8, want);

    /* both, with top-k in front */
    p = (struct eng_sampler_params){
        .temperature = 1.0f, .top_k = 5, .top_p = 0.999f, .min_p = 0.5f, .seed = 5};
    int keep2[8] = {0, 0, 0, 0, 1, 0, 1, 0}; /* floor 3 + ln 0.5 = 2.31 */
    softmax_t(small, 8, 1.0, keep2, want);
    check_distribution(&p, small, 8, want);

    /* a big vocabulary: top-p never picks outside the true nucleus */
    p = (struct eng_sampler_params){.temperature = 1.0f, .top_p = 0.5f, .seed = 6};
    struct eng_sampler *s = mk(BIG_VOCAB, &p);
    fill_logits(big_b, BIG_VOCAB, 9);
    /* the nucleus: the threshold logit of the smallest prefix reaching 0.5 */
    double m = -1e30, z = 0;
    for (int i = 0; i < BIG_VOCAB; i++)
        if (big_b[i] > m) m = big_b[i];
    for (int i = 0; i < BIG_VOCAB; i++) z += exp(big_b[i] - m);
    /* bisect the logit threshold t with mass(logit >= t) ~ 0.5 */
    double lo = m - 40, hi = m;
    for (int it = 0; it < 60; it++) {
        double mid = (lo + hi) / 2, mass = 0;
        for (int i = 0; i < BIG_VOCAB; i++)
            if (big_b[i] >= mid) mass += exp(big_b[i] - m) / z;
        if (mass >= 0.5)
            lo = mid;
        else
            hi = mid;
    }
    for (int i = 0; i < 200; i++) {
        memcpy(big_a, big_b, sizeof(big_a));
        int32_t t = eng_sampler_sample(s, big_a);
        CHECKF(big_b[t] >= lo - 1e-6, "token %d logit %g below nucleus %g", t, big_b[t], lo);
    }
    eng_sampler_free(s);
}

static void test_penalties(void)
{
    struct eng_sampler_params p = {.temperature = 0,
                                   .repeat_penalty = 2.0f,
                                   .frequency_penalty = 0.25f,
                                   .presence_penalty = 0.5f,
                                   .penalty_last_n = 4};
    struct eng_sampler *s = mk(8, &p);
    eng_sampler_accept(s, 0); /* falls out of the window */
    eng_sampler_accept(s, 1);
    eng_sampler_accept(s, 3);
    eng_sampler_accept(s, 1);
    eng_sampler_accept(s, 5);
    float l[8];
    memcpy(l, small, sizeof(l));
    eng_sampler_sample(s, l);
    CHECK(l[0] == small[0]);                        /* out of the window */
    CHECK(l[1] == 2.0f / 2.0f - 2 * 0.25f - 0.5f);  /* positive: divided; count 2 */
    CHECK(l[3] == -1.0f * 2.0f - 1 * 0.25f - 0.5f); /* negative: multiplied; count 1 */
    CHECK(l[5] == 0.0f * 2.0f - 1 * 0.25f - 0.5f);  /* zero: multiplied */
    CHECK(l[2] == small[2] && l[4] == small[4] && l[6] == small[6] && l[7] == small[7]);
    /* again: counts are not carried over between calls */
    memcpy(l, small, sizeof(l));
    eng_sampler_sample(s, l);
    CHECK(l[1] == 0.0f);
    eng_sampler_free(s);

    /* repetition penalty steers greedy away from the repeated best token */
    p = (struct eng_sampler_params){.repeat_penalty = 1.5f, .penalty_last_n = 8};
    s = mk(8, &p);
    memcpy(l, small, sizeof(l));
    CHECK(eng_sampler_sample(s, l) == 4);
    eng_sampler_accept(s, 4);
    memcpy(l, small, sizeof(l));
    CHECK(eng_sampler_sample(s, l) == 6); /* 3.0 / 1.5 = 2.0 < 2.5 */
    eng_sampler_free(s);
}

static void test_bad_params(void)
{
    struct eng_sampler *s = NULL;
    struct ag_err err = {0};
    struct eng_sampler_params p = {0};
    CHECK(eng_sampler_new(0, &p, &s, &err) == AG_EINVAL && s == NULL);
    p.temperature = NAN;
    CHECK(eng_sampler_new(8, &p, &s, &err) == AG_EINVAL && s == NULL);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_greedy_is_argmax);
    RUN(test_seed_reproducible);
    RUN(test_distribution_matches_softmax);
    RUN(test_top_p_min_p_exclude);
    RUN(test_penalties);
    RUN(test_bad_params);
    return TEST_END();
}
