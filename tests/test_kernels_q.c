/*
 * test_kernels_q.c - the llama.cpp-order kernels of engine/cpu/ggml_kernels_q.c.
 *
 * Oracles, from most to least independent:
 *   - llama.cpp itself, as golden values: for deterministic inputs built from integers only
 *     (so every machine builds the same floats), the bits ggml's vec_dot returned, a hash of the
 *     activation blocks its from_float wrote, hashes of whole matmuls with the weights in its
 *     CPU_REPACK buffer (gemv and gemm), and a hash of its GELU table. They were recorded by a
 *     small program linked against llama.cpp b9749's libggml-cpu (GCC 12, -march=native,
 *     AVX-512 VNNI), which is not part of this repository; the generators below must not
 *     change, or the golden values lose their meaning;
 *   - the variants: the portable kernel and every SIMD one this CPU runs give the same bits;
 *   - quant.h's reference kernels: the same dot products up to float rounding;
 *   - the documented rules of ggml's Q8_K quantizers, exactly, and the double-precision GELU.
 * Random tests run fixed seeds plus one fresh seed per run, printed so a failure can be
 * replayed with KQ_SEED=<seed>.
 */
#include "../engine/cpu/ggml_kernels_q.h"
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "../engine/cpu/ggml_kernels.h"

/* ---- deterministic inputs (the golden values depend on these exact generators) ---- */

static uint64_t gen_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* An f16 scale of magnitude 2^-10 .. 2^-1 with a random mantissa, negative half the time when
 * `sign`. */
static uint16_t gen_scale(uint64_t *s, int sign)
{
    const uint64_t r = gen_u64(s);
    const uint16_t e = (uint16_t)(5 + r % 10), m = (uint16_t)((r >> 8) & 0x3ff);
    return (uint16_t)((sign && (r >> 20) & 1 ? 0x8000 : 0) | e << 10 | m);
}

static int block_bytes(int type)
{
    return (int)eng_qtype_ref(type)->block_bytes;
}

/* nb blocks of a weight type: random bytes, then every f16 field set to a moderate value, so
 * every code pattern and scale byte occurs. */
static void gen_weights(int type, uint64_t seed, int nb, unsigned char *out)
{
    const int bytes = block_bytes(type);
    uint64_t s = seed;
    for (int i = 0; i < nb * bytes; i++) out[i] = (unsigned char)gen_u64(&s);
    for (int b = 0; b < nb; b++) {
        unsigned char *p = out + b * bytes;
        uint16_t f[2];
        switch (type) {
        case ENG_GGML_Q4_0:
        case ENG_GGML_Q5_0:
            f[0] = gen_scale(&s, 1);
            memcpy(p, f, 2);
            break;
        case ENG_GGML_Q5_1:
            f[0] = gen_scale(&s, 0);
            f[1] = gen_scale(&s, 1);
            memcpy(p, f, 4);
            break;
        case ENG_GGML_Q4_K:
        case ENG_GGML_Q5_K:
            f[0] = gen_scale(&s, 0);
            f[1] = gen_scale(&s, 0);
            memcpy(p, f, 4);
            break;
        default: /* Q6_K: d is the last field */
            f[0] = gen_scale(&s, 0);
            memcpy(p + 208, f, 2);
            break;
        }
    }
}

/* n activations, every one an exact float: multiples of 2^-12 in [-10000, 10000] * 2^-12, one
 * in 64 times 32, and one 32-value block in 8 scaled down by 2^10. */
static void gen_acts(uint64_t seed, int n, float *x)
{
    uint64_t s = seed ^ 0x5bd1e995u;
    float blk = 1.0f;
    for (int i = 0; i < n; i++) {
        const uint64_t r = gen_u64(&s);
        if (i % 32 == 0) blk = (r >> 40) % 8 == 0 ? 0x1p-10f : 1.0f;
        float v = (float)((int)(r % 20001) - 10000) * 0x1p-12f;
        if ((r >> 32) % 64 == 0) v *= 32.0f;
        x[i] = v * blk;
    }
}

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Hash of activation blocks in ggml's layout: Q8_1 keeps d and s as f16 there. */
static uint64_t act_hash(int act_type, const void *blocks, int n)
{
    if (act_type != ENG_GGML_Q8_1)
        return fnv(blocks, eng_qtype_row_bytes(eng_qtype_ref(act_type), n));
    const struct eng_block_q8_1 *b = blocks;
    unsigned char *c = malloc((size_t)n / 32 * 36);
    for (int i = 0; i < n / 32; i++) {
        const uint16_t ds[2] = {eng_fp32_to_fp16(b[i].d), eng_fp32_to_fp16(b[i].s)};
        memcpy(c + 36 * i, ds, 4);
        memcpy(c + 36 * i + 4, b[i].qs, 32);
    }
    const uint64_t h = fnv(c, (size_t)n / 32 * 36);
    free(c);
    return h;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

/* ---- helpers for the random tests ---- */

static uint64_t run_seed; /* this run's fresh seed, printed by main */

static uint64_t fresh_seed(void)
{
    const char *env = getenv("KQ_SEED");
    if (env && *env) return strtoull(env, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 20;
}

static double unit(uint64_t *s)
{
    return (double)(gen_u64(s) >> 11) * 0x1p-53;
}

static double normal(uint64_t *s)
{
    const double u = unit(s), v = unit(s);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* Activation-like floats: normal, a few large outliers, blocks of very different scale. */
static void fill_acts(uint64_t *s, int n, float *x)
{
    double scale = 1.0;
    for (int i = 0; i < n; i++) {
        if (i % 32 == 0) scale = exp2(unit(s) * 12.0 - 6.0);
        double v = normal(s) * scale;
        if (unit(s) < 0.01) v *= 30.0;
        x[i] = (float)v;
    }
}

static const int types[] = {ENG_GGML_Q4_0, ENG_GGML_Q5_0, ENG_GGML_Q5_1,
                            ENG_GGML_Q4_K, ENG_GGML_Q5_K, ENG_GGML_Q6_K};
#define N_TYPES (int)(sizeof(types) / sizeof(types[0]))

/* The plain vec_dot kernel of a type (ggml_vec_dot_*), whatever its table entry uses. */
static enum eng__qdot plain_kernel(int type)
{
    switch (type) {
    case ENG_GGML_Q4_0:
        return ENG_QDOT_Q4_0;
    case ENG_GGML_Q5_0:
        return ENG_QDOT_Q5_0;
    case ENG_GGML_Q5_1:
        return ENG_QDOT_Q5_1;
    case ENG_GGML_Q4_K:
        return ENG_QDOT_Q4_K;
    case ENG_GGML_Q5_K:
        return ENG_QDOT_Q5_K;
    default:
        return ENG_QDOT_Q6_K;
    }
}

static const struct {
    enum eng__qdot kernel;
    int type;
    const char *name;
} kernels[] = {
    {ENG_QDOT_Q4_0, ENG_GGML_Q4_0, "q4_0"},
    {ENG_QDOT_Q4_0_REPACK, ENG_GGML_Q4_0, "q4_0 repack"},
    {ENG_QDOT_Q5_0, ENG_GGML_Q5_0, "q5_0"},
    {ENG_QDOT_Q5_1, ENG_GGML_Q5_1, "q5_1"},
    {ENG_QDOT_Q4_K, ENG_GGML_Q4_K, "q4_K"},
    {ENG_QDOT_Q4_K_REPACK, ENG_GGML_Q4_K, "q4_K repack"},
    {ENG_QDOT_Q4_K_GEMM, ENG_GGML_Q4_K, "q4_K gemm"},
    {ENG_QDOT_Q5_K, ENG_GGML_Q5_K, "q5_K"},
    {ENG_QDOT_Q6_K, ENG_GGML_Q6_K, "q6_K"},
};
#define N_KERNELS (int)(sizeof(kernels) / sizeof(kernels[0]))

/* Activation quantizer of a kernel: the gemm order takes the gemm rule's. */
static eng_quantize_fn act_quantizer(int k)
{
    if (kernels[k].kernel == ENG_QDOT_Q4_K_GEMM) return eng__quantize_row_q8_K_gemm_ggml;
    return eng__qtype_cpu_q(kernels[k].type)->quantize_act;
}

/* ---- the table ---- */

static void test_table(void)
{
    for (int t = 0; t < N_TYPES; t++) {
        const struct eng_qtype *q = eng__qtype_cpu_q(types[t]), *r = eng_qtype_ref(types[t]);
        CHECKF(q && r, "type %d", types[t]);
        if (!q || !r) continue;
        CHECK(q->type == r->type && strcmp(q->name, r->name) == 0);
        CHECK(q->block_elems == r->block_elems && q->block_bytes == r->block_bytes);
        CHECK(q->weight && q->act_type == r->act_type);
        CHECK(q->dequantize == r->dequantize && q->quantize == r->quantize);
        CHECK(q->quantize_act != NULL && q->vec_dot != NULL);
    }
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q4_K)->vec_dot == eng__vec_dot_q4_K_q8_K_repack_ggml);
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q4_0)->vec_dot == eng__vec_dot_q4_0_q8_0_repack_ggml);
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q4_K)->quantize_act == eng__quantize_row_q8_K_ggml);
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q6_K)->quantize_act == eng__quantize_row_q8_K_ggml);
    static const int others[] = {-1,
                                 ENG_GGML_F32,
                                 ENG_GGML_F16,
                                 ENG_GGML_Q4_1,
                                 ENG_GGML_Q8_0,
                                 ENG_GGML_Q8_1,
                                 ENG_GGML_Q2_K,
                                 ENG_GGML_Q3_K,
                                 ENG_GGML_Q8_K,
                                 ENG_GGML_BF16,
                                 1000};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        CHECKF(eng__qtype_cpu_q(others[i]) == NULL, "type %d", others[i]);
        CHECKF(eng__qtype_cpu_q_gemm(others[i]) == NULL, "type %d", others[i]);
    }
    /* The gemm entries: only Q4_K's differs, in its quantizer and its dot. */
    for (int t = 0; t < N_TYPES; t++)
        if (types[t] != ENG_GGML_Q4_K)
            CHECK(eng__qtype_cpu_q_gemm(types[t]) == eng__qtype_cpu_q(types[t]));
    const struct eng_qtype *g4 = eng__qtype_cpu_q_gemm(ENG_GGML_Q4_K);
    CHECK(g4 && g4->type == ENG_GGML_Q4_K &&
          g4->block_bytes == eng_qtype_ref(ENG_GGML_Q4_K)->block_bytes);
    CHECK(g4 && g4->quantize_act == eng__quantize_row_q8_K_gemm_ggml &&
          g4->vec_dot == eng__vec_dot_q4_K_q8_K_gemm_ggml && g4->act_type == ENG_GGML_Q8_K);
    /* Unknown kernels have no variant; every level of a known one has one. */
    CHECK(eng__qdot_variant(ENG_QDOT_COUNT, ENG_CPU_SCALAR) == NULL);
    for (int k = 0; k < ENG_QDOT_COUNT; k++)
        for (int l = ENG_CPU_SCALAR; l <= ENG_CPU_AVX512; l++)
            CHECK(eng__qdot_variant((enum eng__qdot)k, (enum eng_cpu_level)l) != NULL);
}

/* ---- llama.cpp's own results ---- */

/* ggml_get_type_traits_cpu(type): vec_dot on from_float(acts) for gen_weights(type, seed * 101
 * + nb, nb) and gen_acts(seed * 103 + nb, n); and the FNV-1a hash of from_float's blocks. */
static const struct {
    int type, nb;
    uint64_t seed;
    uint32_t bits;
    uint64_t act;
} golden[] = {
    {2, 1, 1, 0xc2196985u, 0xf4fb4065a07f3669ull},
    {2, 1, 2, 0x3c6df006u, 0xf8e08edf61678a2cull},
    {2, 3, 1, 0x411725feu, 0x23be99234510b098ull},
    {2, 3, 2, 0x429b1c6du, 0x44bf4904588ff03cull},
    {2, 10, 1, 0x41481b65u, 0xf94c2f69d2f7e848ull},
    {2, 10, 2, 0x41be63d4u, 0x35260d19165a0864ull},
    {6, 1, 1, 0x3d350862u, 0xf4fb4065a07f3669ull},
    {6, 1, 2, 0xc155a8cfu, 0xf8e08edf61678a2cull},
    {6, 3, 1, 0xc0cb5ba8u, 0x23be99234510b098ull},
    {6, 3, 2, 0xc384f9c8u, 0x44bf4904588ff03cull},
    {6, 10, 1, 0xc26a7d7cu, 0xf94c2f69d2f7e848ull},
    {6, 10, 2, 0x4360f2abu, 0x35260d19165a0864ull},
    {7, 1, 1, 0xbbd930b8u, 0x61c7349f0e65f367ull},
    {7, 1, 2, 0x42b49d49u, 0x1a0155ad487f2c45ull},
    {7, 3, 1, 0xc3b1925eu, 0x42a7572d41202e3full},
    {7, 3, 2, 0x44b52c02u, 0x20946e1fac273451ull},
    {7, 10, 1, 0x4404ad78u, 0x7be94b863b8281e7ull},
    {7, 10, 2, 0x42e0e45cu, 0x7a9fa23c56fdd93full},
    {12, 1, 1, 0x452be71eu, 0x7d71740c4a74a14aull},
    {12, 1, 2, 0x439746d0u, 0x9c3aa122ad3553cdull},
    {12, 3, 1, 0x42101760u, 0x6edd792e9c26bcddull},
    {12, 3, 2, 0x4589257fu, 0x715aa5da71148cfaull},
    {12, 10, 1, 0x46bf03c2u, 0xf3249b8cf7c537b6ull},
    {12, 10, 2, 0x46386fe2u, 0xf56d8b3ead46dedfull},
    {13, 1, 1, 0x416893e4u, 0x7d71740c4a74a14aull},
    {13, 1, 2, 0xc5294f2bu, 0x9c3aa122ad3553cdull},
    {13, 3, 1, 0xc5245229u, 0x6edd792e9c26bcddull},
    {13, 3, 2, 0x4665d91cu, 0x715aa5da71148cfaull},
    {13, 10, 1, 0xc5f20353u, 0xf3249b8cf7c537b6ull},
    {13, 10, 2, 0x47b763edu, 0xf56d8b3ead46dedfull},
    {14, 1, 1, 0xc2912578u, 0x7d71740c4a74a14aull},
    {14, 1, 2, 0x45d5d548u, 0x9c3aa122ad3553cdull},
    {14, 3, 1, 0x46b604deu, 0x6edd792e9c26bcddull},
    {14, 3, 2, 0xc8283152u, 0x715aa5da71148cfaull},
    {14, 10, 1, 0x459d11a0u, 0xf3249b8cf7c537b6ull},
    {14, 10, 2, 0x47ece50au, 0xf56d8b3ead46dedfull},
};

static void test_golden_vec_dot(void)
{
    const int top = (int)eng_cpu_level_supported();
    for (size_t g = 0; g < sizeof(golden) / sizeof(golden[0]); g++) {
        const int type = golden[g].type, nb = golden[g].nb;
        const struct eng_qtype *qt = eng__qtype_cpu_q(type);
        const int n = nb * qt->block_elems;
        unsigned char *w = malloc((size_t)nb * qt->block_bytes), *a = malloc((size_t)n * 2 + 64);
        float *x = malloc(sizeof(float) * (size_t)n);
        gen_weights(type, golden[g].seed * 101 + (uint64_t)nb, nb, w);
        gen_acts(golden[g].seed * 103 + (uint64_t)nb, n, x);
        qt->quantize_act(x, a, n);
        CHECKF(act_hash(qt->act_type, a, n) == golden[g].act, "%s n=%d seed %llu: activations",
               qt->name, n, (unsigned long long)golden[g].seed);
        for (int l = 0; l <= top; l++) {
            const float got = eng__qdot_variant(plain_kernel(type), (enum eng_cpu_level)l)(n, w, a);
            CHECKF(fbits(got) == golden[g].bits, "%s n=%d seed %llu level %s: %08x, ggml %08x",
                   qt->name, n, (unsigned long long)golden[g].seed,
                   eng_cpu_level_name((enum eng_cpu_level)l), fbits(got), golden[g].bits);
        }
        if (type != ENG_GGML_Q4_0 && type != ENG_GGML_Q4_K)
            CHECKF(fbits(qt->vec_dot(n, w, a)) == golden[g].bits, "%s: table entry", qt->name);
        free(w);
        free(a);
        free(x);
    }
}

/* The same for many cases at once: per type, seeds 1..64 and 1, 2, 3, 5, 8 or 13 blocks
 * (gen_weights(type, seed * 1009 + nb, nb), gen_acts(seed * 1013 + nb, n)), FNV-1a over the
 * result bits in that order, and over the activation hashes. */
static const struct {
    int type;
    uint64_t out, act;
} golden_bulk[] = {
    {2, 0x6e6c1c98be518b3full, 0x00493a994efb229dull},
    {6, 0x670fe7e7aa70af0dull, 0x00493a994efb229dull},
    {7, 0xdb95d8b28d5296f3ull, 0xc400b8f1810ee80full},
    {12, 0xab3bb12a202a5bc7ull, 0x97ef0538ec11432cull},
    {13, 0x6ba0ec9cf1de8a94ull, 0x97ef0538ec11432cull},
    {14, 0x044e584cac492ccfull, 0x97ef0538ec11432cull},
};

static uint64_t fnv_more(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void test_golden_bulk(void)
{
    static const int blocks[] = {1, 2, 3, 5, 8, 13};
    const int top = (int)eng_cpu_level_supported();
    for (size_t g = 0; g < sizeof(golden_bulk) / sizeof(golden_bulk[0]); g++) {
        const int type = golden_bulk[g].type;
        const struct eng_qtype *qt = eng__qtype_cpu_q(type);
        for (int l = 0; l <= top; l++) {
            const eng_vec_dot_fn dot = eng__qdot_variant(plain_kernel(type), (enum eng_cpu_level)l);
            uint64_t hr = 1469598103934665603ull, ha = hr;
            for (uint64_t seed = 1; seed <= 64; seed++)
                for (int bi = 0; bi < 6; bi++) {
                    const int nb = blocks[bi], n = nb * qt->block_elems;
                    unsigned char *w = malloc((size_t)nb * qt->block_bytes);
                    unsigned char *a = malloc((size_t)n * 2 + 64);
                    float *x = malloc(sizeof(float) * (size_t)n);
                    gen_weights(type, seed * 1009 + (uint64_t)nb, nb, w);
                    gen_acts(seed * 1013 + (uint64_t)nb, n, x);
                    qt->quantize_act(x, a, n);
                    const uint32_t bits = fbits(dot(n, w, a));
                    const uint64_t h = act_hash(qt->act_type, a, n);
                    hr = fnv_more(hr, &bits, sizeof(bits));
                    ha = fnv_more(ha, &h, sizeof(h));
                    free(w);
                    free(a);
                    free(x);
                }
            CHECKF(hr == golden_bulk[g].out, "%s level %s: results", qt->name,
                   eng_cpu_level_name((enum eng_cpu_level)l));
            CHECKF(ha == golden_bulk[g].act, "%s: activations", qt->name);
        }
    }
}

/* A 16-row matrix gen_weights(type, seed * 109 + nb, 16 * nb) in ggml's CPU_REPACK buffer times
 * ncols columns gen_acts(seed * 107 + nb, n * ncols), through ggml_mul_mat (ncols 1: gemv;
 * ncols 4: gemm): the FNV-1a hash of the output floats, column after column. */
static const struct {
    int type, nb, ncols;
    uint64_t seed, out;
} golden_repack[] = {
    {2, 1, 1, 1, 0x4048f40d3151c2f9ull},  {2, 1, 1, 2, 0xd94c60e0747c37bdull},
    {2, 1, 4, 1, 0x9be068f11c3f69ceull},  {2, 1, 4, 2, 0x6133449dcbe6900eull},
    {2, 3, 1, 1, 0x2c880e4555c392b4ull},  {2, 3, 1, 2, 0xf932a4b1c2bd574bull},
    {2, 3, 4, 1, 0x8b3f13177baeef2eull},  {2, 3, 4, 2, 0x1e84f520a54508b6ull},
    {12, 1, 1, 1, 0xfa704ca1a683bc85ull}, {12, 1, 1, 2, 0x191b45d959ad90adull},
    {12, 1, 4, 1, 0xff99e4954850db44ull}, {12, 1, 4, 2, 0x64a9e77f3063697bull},
    {12, 3, 1, 1, 0x2837d7e4a1060e17ull}, {12, 3, 1, 2, 0x1e2762929a3185b9ull},
    {12, 3, 4, 1, 0x7c5c637f38aef448ull}, {12, 3, 4, 2, 0x77dea15112a3f092ull},
};

static void test_golden_repack(void)
{
    enum { ROWS = 16 };
    const int top = (int)eng_cpu_level_supported();
    for (size_t g = 0; g < sizeof(golden_repack) / sizeof(golden_repack[0]); g++) {
        const int type = golden_repack[g].type, nb = golden_repack[g].nb;
        const int ncols = golden_repack[g].ncols;
        const struct eng_qtype *qt = eng__qtype_cpu_q(type);
        const int n = nb * qt->block_elems;
        const size_t rb = eng_qtype_row_bytes(qt, n);
        unsigned char *w = malloc(rb * ROWS), *a = malloc((size_t)n * 2 + 64);
        float *x = malloc(sizeof(float) * (size_t)n * ncols);
        gen_weights(type, golden_repack[g].seed * 109 + (uint64_t)nb, nb * ROWS, w);
        gen_acts(golden_repack[g].seed * 107 + (uint64_t)nb, n * ncols, x);
        for (int l = 0; l <= top; l++) {
            float out[4 * ROWS];
            for (int c = 0; c < ncols; c++) {
                /* ggml's gemm takes the tokens in groups of four, gemv the rest. */
                const bool gemm = ncols - c > ncols % 4;
                const struct eng_qtype *q = gemm ? eng__qtype_cpu_q_gemm(type) : qt;
                const enum eng__qdot k = type == ENG_GGML_Q4_0 ? ENG_QDOT_Q4_0_REPACK
                                         : gemm                ? ENG_QDOT_Q4_K_GEMM
                                                               : ENG_QDOT_Q4_K_REPACK;
                q->quantize_act(x + c * n, a, n);
                for (int r = 0; r < ROWS; r++) {
                    out[c * ROWS + r] =
                        eng__qdot_variant(k, (enum eng_cpu_level)l)(n, w + rb * r, a);
                    CHECK(fbits(q->vec_dot(n, w + rb * r, a)) == fbits(out[c * ROWS + r]));
                }
            }
            CHECKF(fnv(out, sizeof(float) * ROWS * ncols) == golden_repack[g].out,
                   "%s n=%d ncols=%d seed %llu level %s", qt->name, n, ncols,
                   (unsigned long long)golden_repack[g].seed,
                   eng_cpu_level_name((enum eng_cpu_level)l));
        }
        free(w);
        free(a);
        free(x);
    }
}

/* ---- variants agree ---- */

/* Weights for the random tests: the reference quantizer on weight-like data (half the seeds) or
 * random bytes with sane scales. */
static void make_weights(int type, uint64_t seed, int n, unsigned char *w)
{
    const struct eng_qtype *qt = eng_qtype_ref(type);
    if (seed % 2) {
        gen_weights(type, seed, n / qt->block_elems, w);
        return;
    }
    uint64_t s = seed;
    float *f = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) f[i] = (float)(normal(&s) * (i % 256 < 32 ? 0.2 : 0.05));
    qt->quantize(f, w, n);
    free(f);
}

static void test_variants_agree(void)
{
    const int top = (int)eng_cpu_level_supported();
    const int cur = (int)eng_cpu_level();
    const uint64_t seeds[] = {1, 2, 3, 4, run_seed, run_seed + 1};
    static const int blocks_32[] = {1, 2, 3, 5, 7, 13, 29, 80};
    static const int blocks_256[] = {1, 2, 3, 5, 7, 10};
    static eng_vec_dot_fn const dispatched[] = {
        [ENG_QDOT_Q4_0] = eng__vec_dot_q4_0_q8_0_ggml,
        [ENG_QDOT_Q4_0_REPACK] = eng__vec_dot_q4_0_q8_0_repack_ggml,
        [ENG_QDOT_Q5_0] = eng__vec_dot_q5_0_q8_0_ggml,
        [ENG_QDOT_Q5_1] = eng__vec_dot_q5_1_q8_1_ggml,
        [ENG_QDOT_Q4_K] = eng__vec_dot_q4_K_q8_K_ggml,
        [ENG_QDOT_Q4_K_REPACK] = eng__vec_dot_q4_K_q8_K_repack_ggml,
        [ENG_QDOT_Q4_K_GEMM] = eng__vec_dot_q4_K_q8_K_gemm_ggml,
        [ENG_QDOT_Q5_K] = eng__vec_dot_q5_K_q8_K_ggml,
        [ENG_QDOT_Q6_K] = eng__vec_dot_q6_K_q8_K_ggml,
    };
    int cases = 0;
    for (int k = 0; k < N_KERNELS; k++) {
        const struct eng_qtype *qt = eng__qtype_cpu_q(kernels[k].type);
        const bool k_type = qt->block_elems == ENG_QK_K;
        const int nsizes = k_type ? 6 : 8;
        for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
            for (int si = 0; si < nsizes; si++) {
                const int n = (k_type ? blocks_256[si] : blocks_32[si]) * qt->block_elems;
                const uint64_t seed = seeds[s] * 7919 + (uint64_t)(k * 64 + si);
                unsigned char *w = malloc(eng_qtype_row_bytes(qt, n));
                unsigned char *a = malloc((size_t)n * 2 + 64);
                float *x = malloc(sizeof(float) * (size_t)n);
                uint64_t r = seed;
                make_weights(kernels[k].type, seed, n, w);
                fill_acts(&r, n, x);
                act_quantizer(k)(x, a, n);
                const float want = eng__qdot_variant(kernels[k].kernel, ENG_CPU_SCALAR)(n, w, a);
                for (int l = 1; l <= top; l++) {
                    const float got =
                        eng__qdot_variant(kernels[k].kernel, (enum eng_cpu_level)l)(n, w, a);
                    CHECKF(fbits(got) == fbits(want), "%s n=%d seed %llu: %s %.9g, portable %.9g",
                           kernels[k].name, n, (unsigned long long)seed,
                           eng_cpu_level_name((enum eng_cpu_level)l), got, want);
                }
                /* The dispatched entry runs the variant of the current level. */
                const float d = dispatched[kernels[k].kernel](n, w, a);
                const float v =
                    eng__qdot_variant(kernels[k].kernel, (enum eng_cpu_level)cur)(n, w, a);
                CHECKF(fbits(d) == fbits(v), "%s n=%d seed %llu: dispatched", kernels[k].name, n,
                       (unsigned long long)seed);
                cases++;
                free(w);
                free(a);
                free(x);
            }
    }
    printf("  %d cases, levels scalar..%s, dispatch at %s\n", cases,
           eng_cpu_level_name((enum eng_cpu_level)top),
           eng_cpu_level_name((enum eng_cpu_level)cur));
}

/* ---- close to the reference kernels ---- */

static void test_close_to_reference(void)
{
    const uint64_t seeds[] = {11, 12, 13, 14, run_seed};
    double worst[N_KERNELS] = {0};
    for (int k = 0; k < N_KERNELS; k++) {
        const int type = kernels[k].type;
        const struct eng_qtype *qt = eng__qtype_cpu_q(type), *ref = eng_qtype_ref(type);
        const struct eng_qtype *at = eng_qtype_ref(qt->act_type);
        for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
            const int n =
                (qt->block_elems == ENG_QK_K ? 3 + (int)s % 3 : 7 + 6 * (int)s) * qt->block_elems;
            const uint64_t seed = seeds[s] * 104729 + (uint64_t)k;
            unsigned char *w = malloc(eng_qtype_row_bytes(qt, n)), *a = malloc((size_t)n * 2 + 64);
            float *x = malloc(sizeof(float) * (size_t)n), *wd = malloc(sizeof(float) * (size_t)n);
            float *ad = malloc(sizeof(float) * (size_t)n);
            uint64_t r = seed;
            make_weights(type, seed, n, w);
            fill_acts(&r, n, x);
            act_quantizer(k)(x, a, n);
            ref->dequantize(w, wd, n);
            at->dequantize(a, ad, n);
            double mag = 0.0;
            for (int i = 0; i < n; i++) mag += fabs((double)wd[i] * ad[i]);
            const float got = eng__qdot_variant(kernels[k].kernel, eng_cpu_level())(n, w, a);
            const float want = ref->vec_dot(n, w, a);
            /* Only the order of float operations separates them: a few roundings per block of
             * terms at most mag in size. */
            const double err = fabs((double)got - want) / (mag + 1e-30);
            CHECKF(err <= 2e-6, "%s n=%d seed %llu: %.9g, reference %.9g (rel. to magnitude %g)",
                   kernels[k].name, n, (unsigned long long)seed, got, want, err);
            if (err > worst[k]) worst[k] = err;
            free(w);
            free(a);
            free(x);
            free(wd);
            free(ad);
        }
    }
    for (int k = 0; k < N_KERNELS; k++)
        printf("  %-12s worst |ggml order - reference| / sum|w a| = %.2g\n", kernels[k].name,
               worst[k]);
}

/* ---- activation quantizers ---- */

static void test_act_q8_K(void)
{
    struct eng_block_q8_K g[2], gm[2], r[2];
    float x[512] = {0};

    /* max = 127 > 0: iscale = -1, so the codes are -round-half-even(x) and d = -1. */
    const float hand[] = {127.0f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 1.5f, -126.5f, 126.5f};
    static const int8_t want[] = {-127, -2, -4, 2, 0, 0, -2, 126, -126};
    memcpy(x, hand, sizeof(hand));
    eng__quantize_row_q8_K_ggml(x, g, 256);
    CHECK(g[0].d == -1.0f);
    for (int i = 0; i < 9; i++) CHECKF(g[0].qs[i] == want[i], "code %d: %d", i, g[0].qs[i]);
    CHECK(g[0].bsums[0] == -127 - 2 - 4 + 2 - 2 + 126 - 126);

    /* The first value of largest magnitude sets the sign (-3 here); the gemm rule prefers +3. */
    memset(x, 0, sizeof(x));
    x[1] = -3.0f;
    x[200] = 3.0f;
    x[7] = 1.0f;
    eng__quantize_row_q8_K_ggml(x, g, 256);
    eng__quantize_row_q8_K_gemm_ggml(x, gm, 256);
    CHECK(g[0].d > 0.0f && g[0].qs[1] == -127 && g[0].qs[200] == 127 && g[0].qs[7] == 42);
    CHECK(gm[0].d < 0.0f && gm[0].qs[1] == 127 && gm[0].qs[200] == -127 && gm[0].qs[7] == -42);
    CHECK(g[0].d == -gm[0].d);

    /* An all-zero block is all zeros, sums included; the next block is independent. */
    memset(x, 0, sizeof(x));
    x[300] = -5.0f;
    memset(g, 0x55, sizeof(g));
    eng__quantize_row_q8_K_ggml(x, g, 512);
    CHECK(g[0].d == 0.0f && fbits(g[0].d) == 0);
    for (int k = 0; k < 256; k++) CHECK(g[0].qs[k] == 0);
    for (int j = 0; j < 16; j++) CHECK(g[0].bsums[j] == 0);
    CHECK(g[1].qs[44] == -127 && g[1].d > 0.0f && g[1].bsums[2] == -127);

    /* Random rows against the reference quantizer: the same codes up to the sign of the block,
     * the same sums, d within two ulp of amax / 127 in magnitude. */
    const uint64_t seeds[] = {21, 22, 23, run_seed};
    int bad = 0;
    for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
        uint64_t s = seeds[si];
        fill_acts(&s, 512, x);
        eng__quantize_row_q8_K_ggml(x, g, 512);
        eng__quantize_row_q8_K_gemm_ggml(x, gm, 512);
        eng__quantize_row_q8_K(x, r, 512);
        for (int b = 0; b < 2; b++) {
            float amax = 0.0f, max = 0.0f;
            for (int k = 0; k < 256; k++)
                if (fabsf(x[256 * b + k]) > amax) {
                    amax = fabsf(x[256 * b + k]);
                    max = x[256 * b + k];
                }
            const int sign = max > 0.0f ? -1 : 1;
            for (int k = 0; k < 256; k++) bad += g[b].qs[k] != sign * r[b].qs[k];
            for (int j = 0; j < 16; j++) bad += g[b].bsums[j] != sign * r[b].bsums[j];
            bad += (g[b].d < 0.0f) != (sign < 0);
            const uint32_t ug = fbits(fabsf(g[b].d)), ur = fbits(r[b].d);
            bad += (ug > ur ? ug - ur : ur - ug) > 2;
            /* No exact +-amax tie here: both rules agree. */
            bad += memcmp(&g[b], &gm[b], sizeof(g[b])) != 0;
        }
    }
    CHECKF(bad == 0, "%d mismatches (fresh seed %llu)", bad, (unsigned long long)run_seed);
}

static void test_act_q8_0_q8_1(void)
{
    /* Q4_0 and Q5_0 take the reference Q8_0 quantizer (ggml's AVX2 one computes the same, as
     * the golden activation hashes check); Q5_1 takes the reference codes with d and s rounded
     * to f16. */
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q4_0)->quantize_act == eng__quantize_row_q8_0);
    CHECK(eng__qtype_cpu_q(ENG_GGML_Q5_0)->quantize_act == eng__quantize_row_q8_0);
    const eng_quantize_fn q1 = eng__qtype_cpu_q(ENG_GGML_Q5_1)->quantize_act;
    const uint64_t seeds[] = {31, 32, run_seed};
    int bad = 0;
    for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
        uint64_t s = seeds[si];
        float x[320];
        struct eng_block_q8_1 a[10], b[10];
        fill_acts(&s, 320, x);
        q1(x, a, 320);
        eng__quantize_row_q8_1(x, b, 320);
        for (int i = 0; i < 10; i++) {
            bad += memcmp(a[i].qs, b[i].qs, 32) != 0;
            bad += a[i].d != eng_fp16_to_fp32(eng_fp32_to_fp16(b[i].d));
            bad += a[i].s != eng_fp16_to_fp32(eng_fp32_to_fp16(b[i].s));
        }
    }
    CHECKF(bad == 0, "%d mismatches (fresh seed %llu)", bad, (unsigned long long)run_seed);
}

/* ---- GELU ---- */

/* First use from several threads at once: one table, built once. */
static void *gelu_thread(void *arg)
{
    (void)arg;
    return (void *)eng__ggml_gelu_table();
}

static void test_gelu_first_use_threads(void)
{
    pthread_t th[8];
    void *got[8];
    for (int i = 0; i < 8; i++) CHECK(pthread_create(&th[i], NULL, gelu_thread, NULL) == 0);
    for (int i = 0; i < 8; i++) CHECK(pthread_join(th[i], &got[i]) == 0);
    for (int i = 1; i < 8; i++) CHECK(got[i] == got[0]);
}

/* The tanh GELU in double. */
static double gelu_double(double x)
{
    return 0.5 * x *
           (1.0 + tanh(0.79788456080286535587989211986876 * x * (1.0 + 0.044715 * x * x)));
}

static void test_gelu_table(void)
{
    const uint16_t *t = eng__ggml_gelu_table();
    /* FNV-1a of ggml_table_gelu_f16 after ggml_cpu_init(), llama.cpp b9749 (glibc 2.36 tanhf; a
     * correctly rounded tanhf gives the same table). */
    CHECKF(fnv(t, sizeof(uint16_t) << 16) == 0x827b385217fa4796ull, "hash %016llx",
           (unsigned long long)fnv(t, sizeof(uint16_t) << 16));
    /* Every finite entry is the f16 of the formula, except where the float evaluation lands
     * across an f16 rounding boundary: within half an f16 step plus the float error, whose
     * worst part is 1 + tanh cancelling for negative x (absolute, about |x| * 2^-24). */
    int off = 0, far = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float x = eng_fp16_to_fp32((uint16_t)h);
        if (!isfinite(x)) continue;
        const double want = gelu_double(x);
        if (t[h] == eng_fp32_to_fp16((float)want)) continue;
        off++;
        const double a = fabs(want);
        const double step = a < 0x1p-14 ? 0x1p-24 : exp2(floor(log2(a)) - 10);
        if (fabs(eng_fp16_to_fp32(t[h]) - want) > step / 2 + fabs(x) * 0x1p-22 + a * 0x1p-21) far++;
    }
    CHECKF(far == 0, "%d entries off the formula by more than rounding", far);
    /* A different formula (the erf GELU) moves thousands; a missing fused multiply-add moves
     * one entry, which only the hash above sees. */
    CHECKF(off < 500, "%d entries differ from f16(formula)", off);
    printf("  %d of 63488 finite entries differ from f16(gelu in double), all within rounding\n",
           off);
    for (uint32_t h = 0x7c01; h < 0x7c10; h++) CHECK((t[h] & 0x7fff) > 0x7c00); /* NaN -> NaN */
}

static void test_geglu(void)
{
    /* The thresholds: exactly -10 gives 0 whatever u is, exactly 10 gives g * u. */
    float g[8] = {-10.0f, 10.0f, -9.999f, 9.999f, 0.0f, -1e-30f, 70000.0f, -70000.0f};
    float u[8] = {INFINITY, 3.0f, 2.0f, 2.0f, 5.0f, 1.0f, 0.5f, 0.5f}, y[8];
    eng__ggml_geglu(8, y, g, u);
    CHECK(y[0] == 0.0f && !signbit(y[0]));
    CHECK(y[1] == 30.0f);
    CHECK(y[6] == 35000.0f && y[7] == 0.0f);
    CHECK(y[4] == 0.0f);
    CHECK(eng__ggml_gelu(-10.0f) == 0.0f && eng__ggml_gelu(10.0f) == 10.0f);
    CHECK(eng__ggml_gelu(12.5f) == 12.5f && eng__ggml_gelu(-12.5f) == 0.0f);
    float nan_g = NAN, one = 1.0f, ny;
    eng__ggml_geglu(1, &ny, &nan_g, &one);
    CHECK(isnan(ny));

    /* Random values: the rule exactly, close to the formula, and aliasing either input. */
    enum { N = 3001 };
    static float gg[N], uu[N], yy[N], ya[N], yb[N];
    const uint64_t seeds[] = {41, run_seed};
    for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
        uint64_t s = seeds[si];
        for (int i = 0; i < N; i++) {
            gg[i] = (float)(normal(&s) * (i % 4 == 0 ? 8.0 : 1.5));
            uu[i] = (float)normal(&s);
        }
        eng__ggml_geglu(N, yy, gg, uu);
        memcpy(ya, gg, sizeof(ya));
        eng__ggml_geglu(N, ya, ya, uu);
        memcpy(yb, uu, sizeof(yb));
        eng__ggml_geglu(N, yb, gg, yb);
        int bad = 0, alias = 0;
        for (int i = 0; i < N; i++) {
            const float x = gg[i];
            const float rule = x <= -10.0f  ? 0.0f
                               : x >= 10.0f ? x * uu[i]
                                            : eng__ggml_gelu(x) * uu[i];
            bad += fbits(rule) != fbits(yy[i]);
            alias += fbits(ya[i]) != fbits(yy[i]) || fbits(yb[i]) != fbits(yy[i]);
            /* f16(x) moves x by up to 2^-11 relative, and the table rounds to f16: both scale
             * with the derivative of gelu (at most 1.13) and the value. */
            const double want = gelu_double(x) * uu[i];
            const double tol =
                (fabs(x) * 1.13 * 0x1p-11 + fabs(gelu_double(x)) * 0x1p-11 + 0x1p-24) *
                    fabs(uu[i]) +
                1e-30;
            if (fabs(yy[i] - want) > tol) bad++;
        }
        CHECKF(bad == 0 && alias == 0, "seed %llu: %d off the rule or formula, %d alias",
               (unsigned long long)seeds[si], bad, alias);
    }
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    run_seed = fresh_seed();
    printf("fresh seed %llu (KQ_SEED replays it); cpu %s, supported %s\n",
           (unsigned long long)run_seed, eng_cpu_level_name(eng_cpu_level()),
           eng_cpu_level_name(eng_cpu_level_supported()));
    RUN(test_gelu_first_use_threads);
    RUN(test_table);
    RUN(test_golden_vec_dot);
    RUN(test_golden_bulk);
    RUN(test_golden_repack);
    RUN(test_variants_agree);
    RUN(test_close_to_reference);
    RUN(test_act_q8_K);
    RUN(test_act_q8_0_q8_1);
    RUN(test_gelu_table);
    RUN(test_geglu);
    return TEST_END();
}
