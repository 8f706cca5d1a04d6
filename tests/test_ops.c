/*
 * test_ops.c - the engine's compute layer: the thread pool, and every op of the CPU backend
 * against a naive loop written here, on random data, with 1, 2 and 3 threads (matmul must
 * reproduce the per-row dot kernel bit for bit), and the llama.cpp-order kernels of
 * ggml_kernels.c against the reference ones (same results up to rounding; fast and portable
 * variants identical). test_model.c builds the forward pass on these.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/model.h"
#include "../engine/cpu/threadpool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_util.h"
#include "test.h"

/* ---- thread pool ---- */

struct count_job {
    _Atomic int *hits; /* (n) times each index was visited */
    _Atomic int bad_ith;
    int n_threads;
};

static void count_task(void *arg, int64_t begin, int64_t end, int ith)
{
    struct count_job *j = arg;
    if (ith < 0 || ith >= j->n_threads) atomic_fetch_add(&j->bad_ith, 1);
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&j->hits[i], 1);
}

static void test_threadpool(void)
{
    struct ag_err err = {0};
    struct eng_threadpool *tp;
    CHECK(eng_threadpool_new(0, &tp, &err) == AG_EINVAL);
    CHECK(eng_threadpool_new(ENG_THREADPOOL_MAX_THREADS + 1, &tp, &err) == AG_EINVAL);
    for (int nt = 1; nt <= 4; nt++) {
        CHECK(eng_threadpool_new(nt, &tp, &err) == 0);
        CHECK(eng_threadpool_n_threads(tp) == nt);
        enum { N = 1000 };
        static _Atomic int hits[N];
        struct count_job j = {.hits = hits, .n_threads = nt};
        atomic_init(&j.bad_ith, 0);
        int bad = 0;
        /* Many short loops back to back: the case the spin-then-sleep handshake must get right. */
        for (int iter = 0; iter < 2000; iter++) {
            int64_t n = 1 + iter % N, chunk = 1 + iter % 7;
            for (int64_t i = 0; i < n; i++) atomic_store(&hits[i], 0);
            eng_threadpool_for(tp, n, chunk, count_task, &j);
            for (int64_t i = 0; i < n; i++) bad += atomic_load(&hits[i]) != 1;
        }
        CHECKF(bad == 0, "%d threads: %d indices not visited exactly once", nt, bad);
        CHECK(atomic_load(&j.bad_ith) == 0);
        eng_threadpool_free(tp);
    }
    eng_threadpool_free(NULL);
}

/* ---- ops against naive loops ---- */

static void test_ops_elementwise(void)
{
    struct ag_err err = {0};
    struct eng_backend be;
    CHECK(eng_backend_cpu_init(&be, 2, 64, 64, &err) == 0);
    const struct eng_backend_ops *ops = be.ops;
    rng_seed(1);

    /* rmsnorm, in place and not, 3 rows. */
    enum { N = 96, T = 3 };
    float *x = rand_vec(N * T, 3.0f), *w = rand_vec(N, 1.0f), y[N * T], want[N * T];
    for (int t = 0; t < T; t++) naive_rmsnorm(want + t * N, x + t * N, w, N, 1e-5f);
    ops->rmsnorm(be.ctx, y, x, w, T, N, 1e-5f);
    CHECKF(rel_err(y, want, N * T) < 1e-6, "rmsnorm %g", rel_err(y, want, N * T));
    ops->rmsnorm(be.ctx, x, x, w, T, N, 1e-5f);
    CHECK(memcmp(x, y, sizeof(y)) == 0);

    /* 9 rows in one call (their sums of squares run four rows side by side) give each row's
     * bits alone, and ggml's: the squares summed in double one after another. */
    enum { R9 = 9 };
    float *x9 = rand_vec(N * R9, 3.0f), y9[N * R9], y1[N * R9], g9[N * R9];
    ops->rmsnorm(be.ctx, y9, x9, w, R9, N, 1e-5f);
    for (int t = 0; t < R9; t++) {
        ops->rmsnorm(be.ctx, y1 + t * N, x9 + t * N, w, 1, N, 1e-5f);
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += (double)(x9[t * N + i] * x9[t * N + i]);
        const float scale = 1.0f / sqrtf((float)(sum / N) + 1e-5f);
        for (int i = 0; i < N; i++) g9[t * N + i] = x9[t * N + i] * scale * w[i];
    }
    CHECK(memcmp(y9, y1, sizeof(y9)) == 0);
    CHECK(memcmp(y9, g9, sizeof(y9)) == 0);
    free(x9);

    /* softmax, including large values that overflow expf without the max shift. */
    float s[N], s_want[N];
    for (int i = 0; i < N; i++) s[i] = s_want[i] = frand() * 200.0f;
    naive_softmax(s_want, N);
    ops->softmax(be.ctx, s, N);
    CHECKF(rel_err(s, s_want, N) < 1e-5, "softmax %g", rel_err(s, s_want, N));

    /* swiglu and add. */
    float *g = rand_vec(N, 8.0f), *u = rand_vec(N, 2.0f), o[N], o_want[N];
    for (int i = 0; i < N; i++) o_want[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
    ops->swiglu(be.ctx, o, g, u, 1, N);
    CHECKF(rel_err(o, o_want, N) < 1e-6, "swiglu %g", rel_err(o, o_want, N));
    ops->swiglu(be.ctx, g, g, u, 1, N); /* in place */
    CHECK(memcmp(g, o, sizeof(o)) == 0);
    for (int i = 0; i < N; i++) o_want[i] = o[i] + u[i];
    ops->add(be.ctx, o, u, N);
    CHECK(memcmp(o, o_want, sizeof(o)) == 0);

    /* rope, both pairings, 2 rows at positions 7 and 8, partial rotation (n_rot < head_dim). */
    for (int neox = 0; neox <= 1; neox++) {
        enum { H = 3, HD = 32, NR = 24 };
        float *r = rand_vec(2 * H * HD, 1.0f), r_want[2 * H * HD], cs[2 * NR];
        memcpy(r_want, r, sizeof(r_want));
        naive_rope(r_want, H, HD, NR, 7, 10000.0f, neox);
        naive_rope(r_want + H * HD, H, HD, NR, 8, 10000.0f, neox);
        eng_rope_cache(cs, 7, NR, 10000.0f);
        eng_rope_cache(cs + NR, 8, NR, 10000.0f);
        ops->rope(be.ctx, r, 2, H, HD, NR, cs, neox);
        CHECKF(rel_err(r, r_want, 2 * H * HD) < 1e-5, "rope neox=%d %g", neox,
               rel_err(r, r_want, 2 * H * HD));
        free(r);
    }
    /* The running-product angles stay close to the exact ones far into a long context. */
    {
        enum { NR = 64 };
        float cs[NR];
        eng_rope_cache(cs, 8000, NR, 100000.0f);
        double worst = 0.0;
        for (int i = 0; i < NR / 2; i++) {
            double th = 8000.0 * pow(100000.0, -2.0 * i / NR);
            double d = fabs(cs[2 * i] - cos(th)) + fabs(cs[2 * i + 1] - sin(th));
            if (d > worst) worst = d;
        }
        CHECKF(worst < 5e-3, "rope angle error at 8000: %g", worst);
    }

    free(x);
    free(w);
    free(g);
    free(u);
    eng_backend_release(&be);
    eng_backend_release(&be); /* released twice is fine */
}

static void test_ops_matmul(void)
{
    static const int types[] = {ENG_GGML_F32,  ENG_GGML_F16,  ENG_GGML_BF16, ENG_GGML_Q4_0,
                                ENG_GGML_Q4_1, ENG_GGML_Q5_0, ENG_GGML_Q5_1, ENG_GGML_Q8_0,
                                ENG_GGML_Q4_K, ENG_GGML_Q5_K, ENG_GGML_Q6_K};
    const int n_types = (int)(sizeof(types) / sizeof(types[0]));
    struct ag_err err = {0};
    rng_seed(2);

    for (int nt = 1; nt <= 3; nt++) {
        struct eng_backend be;
        CHECK(eng_backend_cpu_init(&be, nt, 16, 16, &err) == 0);
        /* Three matrices of rotating types, one call: shared and separate activation formats,
         * row counts that are not multiples of the chunk size, 1 and 5 tokens. */
        for (int ti = 0; ti < n_types; ti++) {
            enum { COLS = 512 };
            const int64_t rows[3] = {37, 200, 8}; /* 8: Q4_K takes the 4-token kernel */
            struct test_mat tm[3];
            const struct eng_mat *w[3];
            for (int i = 0; i < 3; i++) {
                test_mat_init(&tm[i], types[(ti + 4 * i) % n_types], COLS, rows[i], 0.5f);
                w[i] = &tm[i].m;
            }
            for (int n_tok = 1; n_tok <= 5; n_tok += 4) {
                float *x = rand_vec((size_t)n_tok * COLS, 2.0f);
                float *y[3];
                for (int i = 0; i < 3; i++) y[i] = calloc((size_t)(n_tok * rows[i]), 4);
                size_t ab = be.ops->matmul_act_bytes(be.ctx, 3, w, n_tok);
                void *act = malloc(ab ? ab : 1);
                be.ops->matmul(be.ctx, 3, w, y, x, n_tok, act);

                int exact_bad = 0;
                double worst = 0.0;
                for (int i = 0; i < 3; i++) {
                    unsigned char qa[COLS * 2]; /* ≥ any activation row of COLS values */
                    for (int t = 0; t < n_tok; t++) {
                        /* The backend's kernels for this type, which may differ from the
                         * reference table's in summation order (ggml_kernels.h); the first
                         * n_tok - n_tok % 4 tokens take llama.cpp's 4-token kernels. */
                        const int type = tm[i].m.qt->type;
                        const struct eng_qtype *qt = t < n_tok - n_tok % 4
                                                         ? eng_qtype_cpu_gemm(type, rows[i])
                                                         : eng_qtype_cpu(type);
                        const struct eng_qtype *aq = eng_qtype_get(qt->act_type);
                        const float *xt = x + t * COLS;
                        const void *a = xt;
                        if (qt->quantize_act) {
                            CHECK(eng_qtype_row_bytes(aq, COLS) <= sizeof(qa));
                            qt->quantize_act(xt, qa, COLS);
                            a = qa;
                        }
                        float fl[200];
                        naive_matvec(fl, tm[i].deq, xt, COLS, (int)rows[i]);
                        for (int r = 0; r < rows[i]; r++) {
                            float ref =
                                qt->vec_dot(COLS, (char *)tm[i].bytes + r * tm[i].m.row_bytes, a);
                            float got = y[i][t * rows[i] + r];
                            exact_bad += memcmp(&ref, &got, sizeof(ref)) != 0;
                        }
                        double e = rel_err(y[i] + t * rows[i], fl, (size_t)rows[i]);
                        if (e > worst) worst = e;
                    }
                }
                CHECKF(exact_bad == 0, "threads %d types %d: %d results differ from vec_dot", nt,
                       ti, exact_bad);
                /* Quantized activations cost a little accuracy; catch gross errors only. */
                CHECKF(worst < 0.05, "threads %d types %d: %g from the float product", nt, ti,
                       worst);
                for (int i = 0; i < 3; i++) free(y[i]);
                free(x);
                free(act);
            }
            for (int i = 0; i < 3; i++) test_mat_release(&tm[i]);
        }

        /* get_rows of a quantized table. */
        struct test_mat emb;
        test_mat_init(&emb, ENG_GGML_Q8_0, 64, 10, 1.0f);
        int32_t ids[3] = {9, 0, 4};
        float got[3 * 64];
        be.ops->get_rows(be.ctx, got, &emb.m, ids, 3);
        for (int t = 0; t < 3; t++)
            CHECK(memcmp(got + t * 64, emb.deq + ids[t] * 64, 64 * sizeof(float)) == 0);
        test_mat_release(&emb);
        eng_backend_release(&be);
    }
}

/* Naive causal attention in double over float K and V (n_keys, stride). */
static void naive_attention(float *want, const float *q, const float *k, const float *v, int nt,
                            int nh, int nkv, int hd, int pos, int stride)
{
    const double scale = 1.0 / sqrt(hd);
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < nh; h++) {
            const float *qh = q + (t * nh + h) * hd;
            const int kvh = h / (nh / nkv), n_kv = pos + t + 1;
            float sc[64];
            for (int p = 0; p < n_kv; p++) {
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)qh[i] * k[p * stride + kvh * hd + i];
                sc[p] = (float)(d * scale);
            }
            naive_softmax(sc, n_kv);
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int p = 0; p < n_kv; p++) o += (double)sc[p] * v[p * stride + kvh * hd + i];
                want[(t * nh + h) * hd + i] = (float)o;
            }
        }
}

static void test_ops_attention(void)
{
    struct ag_err err = {0};
    rng_seed(3);
    /* head_dim 80: one 64-value step of the F16 dot product plus 16 leftover values. */
    enum { NH = 6, NKV = 2, HD = 80, POS = 5, NT = 4, NKEYS = POS + NT, STRIDE = NKV * HD + 8 };
    enum { NQ = NT * NH * HD, NKV_ALL = NKEYS * STRIDE };
    float *q = rand_vec(NQ, 1.0f), *k = rand_vec(NKV_ALL, 1.0f), *v = rand_vec(NKV_ALL, 1.0f);
    static float want[NQ], want16[NQ], want16t[NQ], out[NQ], q16[NQ], k16f[NKV_ALL], v16f[NKV_ALL];
    static uint16_t k16[NKV_ALL], v16[NKV_ALL];
    /* F16 attention sees K, V (and the query) rounded to f16: compare it with the exact
     * attention of the rounded values, so only its f16 accumulator is left to tolerate. */
    for (int i = 0; i < NKV_ALL; i++) {
        k16f[i] = eng_fp16_to_fp32(eng_fp32_to_fp16(k[i]));
        v16f[i] = eng_fp16_to_fp32(eng_fp32_to_fp16(v[i]));
    }
    for (int i = 0; i < NQ; i++) q16[i] = eng_fp16_to_fp32(eng_fp32_to_fp16(q[i]));
    naive_attention(want, q, k, v, NT, NH, NKV, HD, POS, STRIDE);
    naive_attention(want16, q16, k16f, v16f, NT, NH, NKV, HD, POS, STRIDE);
    /* The tiled path keeps the query in f32. */
    naive_attention(want16t, q, k16f, v16f, NT, NH, NKV, HD, POS, STRIDE);
    for (int nt = 1; nt <= 3; nt++) {
        struct eng_backend be;
        CHECK(eng_backend_cpu_init(&be, nt, NKEYS, HD, &err) == 0);
        be.ops->store(be.ctx, k16, ENG_KV_F16, k, NKV_ALL);
        be.ops->store(be.ctx, v16, ENG_KV_F16, v, NKV_ALL);
        int bad = 0;
        for (int i = 0; i < NKV_ALL; i++) bad += eng_fp16_to_fp32(k16[i]) != k16f[i];
        CHECK(bad == 0);
        struct eng_attn a = {.out = out,
                             .q = q,
                             .k = k,
                             .v = v,
                             .kv_type = ENG_KV_F32,
                             .n_tok = NT,
                             .pos = POS,
                             .n_head = NH,
                             .n_head_kv = NKV,
                             .head_dim = HD,
                             .kv_stride = STRIDE,
                             .scale = 1.0f / sqrtf(HD)};
        be.ops->attention(be.ctx, &a);
        CHECKF(rel_err(out, want, NQ) < 1e-5, "f32, threads %d: %g", nt, rel_err(out, want, NQ));
        a.k = k16;
        a.v = v16;
        a.kv_type = ENG_KV_F16;
        be.ops->attention(be.ctx, &a);
        CHECKF(rel_err(out, want16, NQ) < 3e-3, "f16, threads %d: %g", nt,
               rel_err(out, want16, NQ));
        a.tiled = true;
        be.ops->attention(be.ctx, &a);
        CHECKF(rel_err(out, want16t, NQ) < 1e-5, "f16 tiled, threads %d: %g", nt,
               rel_err(out, want16t, NQ));
        eng_backend_release(&be);
    }
    free(q);
    free(k);
    free(v);
}

/* Prompt batches run the per-row ops on the pool: the same bits as a single thread. */
static void test_ops_rows_parallel(void)
{
    struct ag_err err = {0};
    struct eng_backend b1, b2;
    CHECK(eng_backend_cpu_init(&b1, 1, 64, 64, &err) == 0);
    CHECK(eng_backend_cpu_init(&b2, 2, 64, 64, &err) == 0);
    rng_seed(9);
    enum { T = 61, N = 640, H = 5, HD = 128, NR = 128 }; /* past PAR_MIN_VALUES */
    float *x = rand_vec(T * N, 3.0f), *w = rand_vec(N, 1.0f), *u = rand_vec(T * N, 2.0f);
    float *y1 = malloc(sizeof(float) * T * N), *y2 = malloc(sizeof(float) * T * N);
    float *cs = malloc(sizeof(float) * T * NR);
    for (int t = 0; t < T; t++) eng_rope_cache(cs + t * NR, 100 + t, NR, 10000.0f);
    const struct eng_backend *be[2] = {&b1, &b2};
    float *y[2] = {y1, y2};
    uint16_t *h[2] = {malloc(2 * T * N), malloc(2 * T * N)};
    /* Pass 0 rotates the two batches with different pairings (they must differ), pass 1 with
     * the same one: then every bit agrees. */
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 2; k++) {
            const struct eng_backend_ops *ops = be[k]->ops;
            void *ctx = be[k]->ctx;
            ops->rmsnorm(ctx, y[k], x, w, T, N, 1e-6f);
            ops->geglu(ctx, y[k], y[k], u, T, N);
            ops->swiglu(ctx, y[k], y[k], u, T, N);
            ops->rope(ctx, y[k], T, H, HD, NR, cs, pass == 1 || k == 0);
            float before[4];
            memcpy(before, y[k] + T * N - 4, sizeof(before));
            ops->add(ctx, y[k], x, (int64_t)T * N - 3); /* not a whole number of pool rows */
            /* The add stops exactly at its count. */
            CHECK(y[k][T * N - 4] == before[0] + x[T * N - 4]);
            CHECK(memcmp(y[k] + T * N - 3, before + 1, 3 * sizeof(float)) == 0);
            ops->store(ctx, h[k], ENG_KV_F16, y[k], (int64_t)T * N);
        }
        if (pass == 0) CHECK(memcmp(y1, y2, sizeof(float) * T * N) != 0);
    }
    CHECK(memcmp(y1, y2, sizeof(float) * T * N) == 0);
    CHECK(memcmp(h[0], h[1], 2 * T * N) == 0);
    /* The KV store's f16 bits are eng_fp32_to_fp16's for every kind of value. */
    {
        enum { NS = 48 };
        float sp[NS];
        uint16_t got[NS];
        const float special[] = {0.0f,    -0.0f,   1e-8f,    -6e-8f,    65504.0f, 65520.0f,
                                 1e6f,    -1e6f,   INFINITY, -INFINITY, NAN,      -NAN,
                                 6.1e-5f, 3.0e-5f, 1.0f / 3, 2049.0f,   2051.0f,  0.1f};
        for (int i = 0; i < NS; i++)
            sp[i] = i < (int)(sizeof(special) / sizeof(special[0])) ? special[i] : frand() * 1e3f;
        b2.ops->store(b2.ctx, got, ENG_KV_F16, sp, NS);
        int bad = 0;
        for (int i = 0; i < NS; i++) bad += got[i] != eng_fp32_to_fp16(sp[i]);
        CHECKF(bad == 0, "%d f16 stores differ", bad);
    }
    free(x), free(w), free(u), free(y1), free(y2), free(cs), free(h[0]), free(h[1]);
    eng_backend_release(&b1);
    eng_backend_release(&b2);
}

/* Naive causal attention in double with a window; query row t sits at position pos[t] and
 * reads position p of its sequence from cache row rowmap[t][p]. */
static void naive_attention_map(float *want, const float *q, const float *k, const float *v, int nt,
                                int nh, int nkv, int hd, const int *pos, const int *const *rowmap,
                                int window, int stride)
{
    const double scale = 1.0 / sqrt(hd);
    double *sc = malloc(sizeof(double) * 4096);
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < nh; h++) {
            const float *qh = q + (t * nh + h) * hd;
            const int kvh = h / (nh / nkv);
            const int first = window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0;
            double mx = -INFINITY, sum = 0.0;
            for (int p = first; p <= pos[t]; p++) {
                const float *kp = k + (int64_t)rowmap[t][p] * stride + kvh * hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)qh[i] * kp[i];
                sc[p] = d * scale;
                if (sc[p] > mx) mx = sc[p];
            }
            for (int p = first; p <= pos[t]; p++) sum += (sc[p] = exp(sc[p] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int p = first; p <= pos[t]; p++)
                    o += sc[p] * v[(int64_t)rowmap[t][p] * stride + kvh * hd + i];
                want[(t * nh + h) * hd + i] = (float)(o / sum);
            }
        }
    free(sc);
}

/* Long-prompt (tiled) attention over an F16 cache: several blocks of keys, windows, group
 * sizes 1, 3 and 4, rows of two paged sequences in one call, against the naive loop. */
static void test_ops_attention_tiled(void)
{
    struct ag_err err = {0};
    enum { NKEYS = 300, NT = 37, SHIFT = 4, MAXHD = 256 };
    static const int shapes[][3] = {{4, 1, 256}, {6, 2, 80}, {3, 3, 64},
                                    {6, 2, 64},  {9, 3, 64}, {8, 1, 64}}; /* heads, kv, dim */
    rng_seed(11);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int NH = shapes[si][0], NKV = shapes[si][1], HD = shapes[si][2];
        /* Two sequences' caches: pages 0..37 of 16 rows. */
        const int stride = NKV * HD, n_rows = 2 * ((NKEYS >> SHIFT) + 1) << SHIFT;
        float *q = rand_vec(NT * NH * HD, 1.0f), *k = rand_vec(n_rows * stride, 1.0f);
        float *v = rand_vec(n_rows * stride, 1.0f), *out = malloc(sizeof(float) * NT * NH * HD);
        float *want = malloc(sizeof(float) * NT * NH * HD);
        uint16_t *k16 = malloc(2 * (size_t)n_rows * stride),
                 *v16 = malloc(2 * (size_t)n_rows * stride);
        for (int i = 0; i < n_rows * stride; i++) {
            k16[i] = eng_fp32_to_fp16(k[i]);
            v16[i] = eng_fp32_to_fp16(v[i]);
            k[i] = eng_fp16_to_fp32(k16[i]);
            v[i] = eng_fp16_to_fp32(v16[i]);
        }
        /* Sequence A: pages 0..18 in order; sequence B: pages 37..19, reversed. */
        int32_t pages_a[NKEYS >> SHIFT | 1], pages_b[NKEYS >> SHIFT | 1];
        for (int i = 0; i <= NKEYS >> SHIFT; i++) {
            pages_a[i] = i;
            pages_b[i] = 2 * (NKEYS >> SHIFT) + 1 - i;
        }
        int *map_a = malloc(sizeof(int) * NKEYS), *map_b = malloc(sizeof(int) * NKEYS);
        for (int p = 0; p < NKEYS; p++) {
            map_a[p] = pages_a[p >> SHIFT] << SHIFT | (p & ((1 << SHIFT) - 1));
            map_b[p] = pages_b[p >> SHIFT] << SHIFT | (p & ((1 << SHIFT) - 1));
        }
        int pos[NT], pos_c[NT];
        const int *map[NT], *ident[NT];
        const int32_t *row_pages[NT];
        int *id = malloc(sizeof(int) * NKEYS);
        for (int p = 0; p < NKEYS; p++) id[p] = p;
        for (int t = 0; t < NT; t++) {
            const bool b = t >= 22 || t % 5 == 3; /* runs of A, single B rows, then B */
            pos[t] = b ? 150 + t : NKEYS - NT + t;
            map[t] = b ? map_b : map_a;
            row_pages[t] = b ? pages_b : pages_a;
            pos_c[t] = NKEYS - NT + t;
            ident[t] = id;
        }
        for (int window = 0; window <= 100; window += 100) {
            struct eng_backend be;
            CHECK(eng_backend_cpu_init(&be, 2, NKEYS, MAXHD, &err) == 0);
            /* One contiguous sequence. */
            struct eng_attn a = {.out = out,
                                 .q = q,
                                 .k = k16,
                                 .v = v16,
                                 .kv_type = ENG_KV_F16,
                                 .n_tok = NT,
                                 .pos = NKEYS - NT,
                                 .window = window,
                                 .n_head = NH,
                                 .n_head_kv = NKV,
                                 .head_dim = HD,
                                 .kv_stride = stride,
                                 .scale = 1.0f / sqrtf((float)HD),
                                 .tiled = true};
            be.ops->attention(be.ctx, &a);
            naive_attention_map(want, q, k, v, NT, NH, NKV, HD, pos_c, ident, window, stride);
            CHECKF(rel_err(out, want, NT * NH * HD) < 1e-5, "heads %d/%d dim %d window %d: %g", NH,
                   NKV, HD, window, rel_err(out, want, NT * NH * HD));
            /* Rows of two paged sequences. */
            a.row_pos = pos;
            a.row_pages = row_pages;
            a.page_shift = SHIFT;
            be.ops->attention(be.ctx, &a);
            naive_attention_map(want, q, k, v, NT, NH, NKV, HD, pos, map, window, stride);
            CHECKF(rel_err(out, want, NT * NH * HD) < 1e-5,
                   "paged: heads %d/%d dim %d window %d: %g", NH, NKV, HD, window,
                   rel_err(out, want, NT * NH * HD));
            eng_backend_release(&be);
        }
        free(q), free(k), free(v), free(out), free(want), free(k16), free(v16);
        free(map_a), free(map_b), free(id);
    }
}

/* The ggml-order kernels compute what the reference kernels compute, up to rounding. */
static void test_ggml_kernels(void)
{
    rng_seed(4);
    enum { N = 576, ROWS = 40 };
    for (int type = 0; type < ENG_GGML_TYPE_COUNT; type++) {
        /* The ggml-order kernels of ggml_kernels.c; ggml_kernels_q.c's have test_kernels_q.c. */
        if (type != ENG_GGML_Q4_1 && type != ENG_GGML_Q8_0) continue;
        const struct eng_qtype *cpu = eng_qtype_cpu(type), *ref = eng_qtype_get(type);
        CHECK(cpu->type == ref->type && cpu->block_elems == ref->block_elems &&
              cpu->block_bytes == ref->block_bytes && cpu->act_type == ref->act_type);
        struct test_mat tm;
        test_mat_init(&tm, type, N, ROWS, 0.3f);
        float *x = rand_vec(N, 3.0f);
        x[7] = 40.0f; /* an outlier, as real activations have */
        unsigned char qa[N * 2];
        cpu->quantize_act(x, qa, N);
        double worst = 0.0;
        for (int r = 0; r < ROWS; r++) {
            const void *w = (const char *)tm.bytes + r * tm.m.row_bytes;
            /* The same quantized input through both dot products: only summation order
             * differs. */
            float a = cpu->vec_dot(N, w, qa), b = ref->vec_dot(N, w, qa);
            double e = fabs((double)a - b) / (fabs((double)b) + 1e-3);
            if (e > worst) worst = e;
        }
        CHECKF(worst < 1e-5, "%s: %g", cpu->name, worst);
        /* The fast variant (ggml's own intrinsics, where the CPU has them) and the portable
         * one give the same bits. */
        eng_vec_dot_fn portable = type == ENG_GGML_Q4_1   ? eng__vec_dot_q4_1_q8_1_portable
                                  : type == ENG_GGML_Q8_0 ? eng__vec_dot_q8_0_q8_0_portable
                                                          : NULL;
        CHECK(portable != NULL);
        int differ = 0;
        for (int r = 0; portable && r < ROWS; r++) {
            const void *w = (const char *)tm.bytes + r * tm.m.row_bytes;
            float a = cpu->vec_dot(N, w, qa), b = portable(N, w, qa);
            differ += memcmp(&a, &b, sizeof(a)) != 0;
        }
        CHECKF(differ == 0, "%s: %d rows differ between variants", cpu->name, differ);
        if (cpu->act_type == ENG_GGML_Q8_1) {
            /* d and s are f16 values; the codes are the reference quantizer's. */
            unsigned char qr[N * 2];
            ref->quantize_act(x, qr, N);
            const struct eng_block_q8_1 *bc = (const void *)qa, *br = (const void *)qr;
            for (int i = 0; i < N / 32; i++) {
                CHECK(memcmp(bc[i].qs, br[i].qs, 32) == 0);
                CHECK(bc[i].d == eng_fp16_to_fp32(eng_fp32_to_fp16(br[i].d)));
                CHECK(bc[i].s == eng_fp16_to_fp32(eng_fp32_to_fp16(br[i].s)));
            }
        }
        test_mat_release(&tm);
        free(x);
    }

    /* SwiGLU: the dispatched kernel (ggml's AVX-512 instructions here) and the portable
     * emulation give the same bits, over ordinary values, the overflow range and odd lengths. */
    {
        enum { SN = 1000 };
        float *g = rand_vec(SN, 12.0f), *u = rand_vec(SN, 2.0f), ya[SN], yb[SN];
        g[3] = 95.0f;
        g[5] = -120.0f;
        g[17] = 0.0f;
        g[40] = -88.5f;
        int sdiff = 0;
        for (int n = 1; n <= SN; n += 111) {
            eng__ggml_swiglu(n, ya, g, u);
            eng__ggml_swiglu_portable(n, yb, g, u);
            sdiff += memcmp(ya, yb, (size_t)n * sizeof(float)) != 0;
        }
        CHECKF(sdiff == 0, "%d lengths differ between SwiGLU variants", sdiff);
        free(g);
        free(u);
    }

    /* ggml's expf: within 2 ulp of the C library's over the range SiLU uses, and the limits. */
    int far = 0;
    for (float x = -100.0f; x < 88.0f; x += 0.0137f) {
        float a = eng__ggml_expf(x), b = expf(x);
        far += fabsf(a - b) > 2.5f * (nextafterf(b, INFINITY) - b);
    }
    CHECKF(far == 0, "%d values off by more than 2 ulp", far);
    CHECK(eng__ggml_expf(0.0f) == 1.0f);
    CHECK(eng__ggml_expf(-200.0f) == 0.0f);
    CHECK(isinf(eng__ggml_expf(200.0f)));
    CHECK(isnan(eng__ggml_expf(NAN)));

    /* F16 vectors. */
    uint16_t a[100], b[100], y[100], y0[100];
    for (int i = 0; i < 100; i++) {
        a[i] = eng_fp32_to_fp16(frand());
        b[i] = eng_fp32_to_fp16(frand());
        y[i] = y0[i] = eng_fp32_to_fp16(frand());
    }
    for (int n = 1; n <= 100; n += 33) {
        double d = 0.0;
        for (int i = 0; i < n; i++) d += (double)eng_fp16_to_fp32(a[i]) * eng_fp16_to_fp32(b[i]);
        CHECKF(fabs(eng__ggml_dot_f16(n, a, b) - d) < 1e-5, "n %d", n);
    }
    /* Fast and portable F16 kernels agree bit for bit, leftovers included. */
    static const int sizes[] = {1, 7, 8, 64, 80, 100};
    int differ = 0;
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        const int n = sizes[si];
        float d1 = eng__ggml_dot_f16(n, a, b), d2 = eng__ggml_dot_f16_portable(n, a, b);
        differ += memcmp(&d1, &d2, sizeof(d1)) != 0;
        uint16_t m1[100], m2[100];
        memcpy(m1, y0, sizeof(m1));
        memcpy(m2, y0, sizeof(m2));
        eng__ggml_mad_f16(n, m1, a, 0.7f);
        eng__ggml_mad_f16_portable(n, m2, a, 0.7f);
        differ += memcmp(m1, m2, sizeof(m1)) != 0;
        eng__ggml_scale_f16(n, m1, 0.37f);
        eng__ggml_scale_f16_portable(n, m2, 0.37f);
        differ += memcmp(m1, m2, sizeof(m1)) != 0;
    }
    CHECKF(differ == 0, "%d F16 results differ between variants", differ);
    int bad = 0;
    eng__ggml_mad_f16(100, y, a, 0.3f);
    for (int i = 0; i < 100; i++) {
        double want = eng_fp16_to_fp32(y0[i]) + 0.3 * eng_fp16_to_fp32(a[i]);
        bad += fabs(eng_fp16_to_fp32(y[i]) - want) > 1e-3;
    }
    memcpy(y, y0, sizeof(y));
    eng__ggml_scale_f16(100, y, 0.3f);
    for (int i = 0; i < 100; i++)
        bad += fabs(eng_fp16_to_fp32(y[i]) - 0.3 * eng_fp16_to_fp32(y0[i])) > 1e-3;
    CHECK(bad == 0);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_threadpool);
    RUN(test_ops_elementwise);
    RUN(test_ops_matmul);
    RUN(test_ops_attention);
    RUN(test_ops_attention_tiled);
    RUN(test_ops_rows_parallel);
    RUN(test_ggml_kernels);
    return TEST_END();
}
