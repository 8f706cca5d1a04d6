/*
 * sampler.c - token sampling (see sampler.h for the chain and its order).
 *
 * Candidates are (id, logit) pairs in s->cand. Selection of the best k uses a min-heap of k
 * pairs over the input (O(n log k)), then heap-sorts those k into descending order in place;
 * with k == n it is a plain heapsort, used for top-p over at most ENG_SAMPLER_TOPP_CAP candidates.
 * Past that cap, top-p bins the candidates' probability mass by logit (top_p_buckets) and sorts
 * only the bin where the cumulative mass crosses top_p. Penalties count each window token in
 * s->counts, apply once per distinct token and zero the count again, so the array is all zeros
 * between calls.
 */
#include "sampler.h"

#include "cpu/cpu.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct eng_cand {
    int32_t id;  /* token id */
    float logit; /* its (penalized) logit */
};

struct eng_sampler {
    int n_vocab;                       /* logits per call */
    struct eng_sampler_params p;       /* settings, as given */
    uint64_t rng[4];                   /* xoshiro256** state */
    struct eng_cand *cand;             /* (n_vocab) candidates */
    int32_t *counts;                   /* (n_vocab) scratch, zero between calls */
    int32_t *hist;                     /* (penalty_last_n) ring of accepted tokens */
    int n_hist;                        /* tokens in hist */
    int hist_head;                     /* next slot to write */
    double bin_mass[ENG_SAMPLER_BINS]; /* top-p: probability mass per logit bin */
};

/* ---- random numbers: splitmix64 seeds xoshiro256** ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t *st)
{
    uint64_t r = rotl(st[1] * 5, 7) * 9, t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

static double rng_uniform(struct eng_sampler *s) /* [0, 1) */
{
    return (double)(xoshiro_next(s->rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- lifecycle ---- */

struct eng_sampler_params eng_sampler_params_default(void)
{
    return (struct eng_sampler_params){.temperature = 0.8f,
                                       .top_k = 40,
                                       .top_p = 0.95f,
                                       .min_p = 0.05f,
                                       .repeat_penalty = 1.0f,
                                       .penalty_last_n = 64};
}

int eng_sampler_new(int n_vocab, const struct eng_sampler_params *p, struct eng_sampler **out,
                    struct ag_err *err)
{
    *out = NULL;
    if (n_vocab < 1 || n_vocab > (1 << 24))
        return ag_err_set(err, AG_EINVAL, "sampler: n_vocab %d out of range", n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || isnan(p->repeat_penalty) ||
        isnan(p->frequency_penalty) || isnan(p->presence_penalty))
        return ag_err_set(err, AG_EINVAL, "sampler: a parameter is NaN");
    if (p->repeat_penalty < 0)
        return ag_err_set(err, AG_EINVAL, "sampler: repeat_penalty %g is negative",
                          (double)p->repeat_penalty);
    if (p->penalty_last_n > (1 << 20))
        return ag_err_set(err, AG_EINVAL, "sampler: penalty_last_n %d too large",
                          p->penalty_last_n);
    struct eng_sampler *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->n_vocab = n_vocab;
    s->p = *p;
    s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
    s->counts = calloc((size_t)n_vocab, sizeof(*s->counts));
    s->hist = malloc((size_t)(p->penalty_last_n > 0 ? p->penalty_last_n : 1) * sizeof(*s->hist));
    if (!s->cand || !s->counts || !s->hist) abort();
    eng_sampler_reset(s, p->seed);
    *out = s;
    return 0;
}

void eng_sampler_free(struct eng_sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s->counts);
    free(s->hist);
    free(s);
}

void eng_sampler_reset(struct eng_sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->n_hist = 0;
    s->hist_head = 0;
}

void eng_sampler_accept(struct eng_sampler *s, int32_t token)
{
    int cap = s->p.penalty_last_n;
    if (cap <= 0 || token < 0 || token >= s->n_vocab) return;
    s->hist[s->hist_head] = token;
    s->hist_head = (s->hist_head + 1) % cap;
    if (s->n_hist < cap) s->n_hist++;
}

/* ---- penalties ---- */

static void apply_penalties(struct eng_sampler *s, float *logits)
{
    float rep = s->p.repeat_penalty, freq = s->p.frequency_penalty, pres = s->p.presence_penalty;
    if (s->n_hist == 0 || ((rep == 0 || rep == 1) && freq == 0 && pres == 0)) return;
    if (rep == 0) rep = 1;
    for (int i = 0; i < s->n_hist; i++) s->counts[s->hist[i]]++;
    for (int i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        int32_t c = s->counts[t];
        if (c == 0) continue; /* already applied */
        float l = logits[t];
        l = l > 0 ? l / rep : l * rep;
        logits[t] = l - (float)c * freq - pres;
        s->counts[t] = 0;
    }
}

/* ---- selection ---- */

static int cand_less(const struct eng_cand *a, const struct eng_cand *b)
{
    /* "worse than": lower logit, or equal logit and higher id (so ties prefer low ids) */
    return a->logit < b->logit || (a->logit == b->logit && a->id > b->id);
}

/* Sifts h[i] down in a min-heap (root: the worst) of n. */
static void heap_down(struct eng_cand *h, int n, int i)
{
    struct eng_cand x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Moves the best k of c[0..n) to c[0..k), sorted best first. 1 <= k <= n. */
static void select_top(struct eng_cand *c, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (cand_less(&c[0], &c[i])) {
            c[0] = c[i];
            heap_down(c, k, 0);
        }
    }
    /* heapsort the min-heap: repeatedly move the worst to the end -> best first */
    for (int m = k - 1; m > 0; m--) {
        struct eng_cand t = c[0];
        c[0] = c[m];
        c[m] = t;
        heap_down(c, m, 0);
    }
}

/* The first index of the largest value (NaNs never win unless l[0] is one). */
static int32_t argmax_scalar(const float *l, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
/* The same with AVX-512: the maximum over 16 lanes (a NaN in x never replaces the running
 * maximum: maxps returns its second operand when one is NaN), then the first index holding it. */
__attribute__((target("avx512f"))) static int32_t argmax_avx512(const float *l, int n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) mx = _mm512_max_ps(_mm512_loadu_ps(l + i), mx);
    float m = _mm512_reduce_max_ps(mx);
    for (; i < n; i++)
        if (l[i] > m) m = l[i];
    const __m512 mv = _mm512_set1_ps(m);
    for (i = 0; i + 16 <= n; i += 16) {
        const __mmask16 eq = _mm512_cmp_ps_mask(_mm512_loadu_ps(l + i), mv, _CMP_EQ_OQ);
        if (eq) return i + __builtin_ctz(eq);
    }
    for (; i < n; i++)
        if (l[i] == m) return i;
    return 0;
}
#endif

static int32_t argmax(const float *l, int n)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
    /* l[0] NaN or all -inf: the scalar rule's answer is 0 either way, kept by the scalar loop. */
    if (n >= 16 && l[0] == l[0] && eng_cpu_level() >= ENG_CPU_AVX512) return argmax_avx512(l, n);
#endif
    return argmax_scalar(l, n);
}

/* Length of the shortest prefix of sorted c[0..n) whose probability (normalizer z, relative to
 * max logit m) reaches top_p; 0 when the whole of c[0..n) does not. */
static int top_p_prefix(const struct eng_cand *c, int n, float m, double z, double top_p)
{
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp((double)(c[i].logit - m)) / z;
        if (cum >= top_p) return i + 1;
    }
    return 0;
}

/* Top-p over many candidates c[0..n) (logits in [lo, m], unsorted) without sorting them all:
 * their probability mass is binned by logit, the bins are walked from the top until the one
 * where the cumulative mass reaches top_p, and only that bin is sorted. Moves the kept tokens
 * to c[0..) and returns how many (0: top_p not reached, keep all). */
static int top_p_buckets(struct eng_sampler *s, int n, float m, float lo, double z)
{
    struct eng_cand *c = s->cand;
    double *mass = s->bin_mass, target = (double)s->p.top_p * z;
    float range = m - lo;
    float scale = range > 0 ? (float)ENG_SAMPLER_BINS / range : 0;
#define BIN_OF(l) ((int)fminf((float)(ENG_SAMPLER_BINS - 1), (m - (l)) * scale))
    memset(mass, 0, sizeof(s->bin_mass));
    for (int i = 0; i < n; i++) mass[BIN_OF(c[i].logit)] += exp((double)(c[i].logit - m));
    double cum = 0;
    int b = 0;
    while (b < ENG_SAMPLER_BINS - 1 && cum + mass[b] < target) cum += mass[b++];
    /* c[0..k): bins above b, c[k..j): bin b */
    int k = 0, j;
    for (int i = 0; i < n; i++) {
        if (BIN_OF(c[i].logit) < b) {
            struct eng_cand t = c[k];
            c[k++] = c[i];
            c[i] = t;
        }
    }
    j = k;
    for (int i = k; i < n; i++) {
        if (BIN_OF(c[i].logit) == b) {
            struct eng_cand t = c[j];
            c[j++] = c[i];
            c[i] = t;
        }
    }
#undef BIN_OF
    if (j == k) return 0;
    select_top(c + k, j - k, j - k);
    for (int i = k; i < j; i++) {
        cum += exp((double)(c[i].logit - m));
        if (cum >= target) return i + 1;
    }
    return 0;
}

int32_t eng_sampler_sample(struct eng_sampler *s, float *logits)
{
    const struct eng_sampler_params *p = &s->p;
    int nv = s->n_vocab;
    apply_penalties(s, logits);
    if (p->temperature <= 0 || p->top_k == 1) return argmax(logits, nv);

    bool use_top_p = p->top_p > 0 && p->top_p < 1;
    struct eng_cand *c = s->cand;
    int n;
    float m;
    if (p->top_k > 0 && p->top_k < nv) {
        for (int i = 0; i < nv; i++) c[i] = (struct eng_cand){i, logits[i]};
        select_top(c, nv, p->top_k);
        n = p->top_k;
        m = c[0].logit;
        if (use_top_p) {
            double z = 0;
            for (int i = 0; i < n; i++) z += exp((double)(c[i].logit - m));
            int k = top_p_prefix(c, n, m, z, p->top_p);
            if (k > 0) n = k;
        }
    } else {
        m = logits[argmax(logits, nv)];
        float floor = -INFINITY;
        if (use_top_p) floor = m - ENG_SAMPLER_LOGIT_RANGE;
        if (p->min_p > 0) floor = fmaxf(floor, m + logf(p->min_p));
        double z = 0;
        n = 0;
        for (int i = 0; i < nv; i++) {
            if (use_top_p) z += exp((double)(logits[i] - m));
            if (logits[i] >= floor) c[n++] = (struct eng_cand){i, logits[i]};
        }
        if (use_top_p) {
            int got;
            if (n <= ENG_SAMPLER_TOPP_CAP) {
                select_top(c, n, n);
                got = top_p_prefix(c, n, m, z, p->top_p);
            } else {
                got = top_p_buckets(s, n, m, fmaxf(floor, m - ENG_SAMPLER_LOGIT_RANGE), z);
            }
            if (got > 0) n = got;
        }
    }
    if (p->min_p > 0) { /* p >= min_p * p_max  <=>  logit >= m + log(min_p); order unchanged */
        float floor = m + logf(p->min_p);
        int k = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= floor) c[k++] = c[i];
        n = k > 0 ? k : 1; /* the best always passes, unless the logits were all NaN */
    }

    /* temperature and the draw */
    double inv_t = 1.0 / (double)p->temperature, z = 0;
    for (int i = 0; i < n; i++) z += exp(((double)c[i].logit - m) * inv_t);
    double r = rng_uniform(s) * z, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - m) * inv_t);
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}
