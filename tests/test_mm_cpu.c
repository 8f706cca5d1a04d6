/*
 * test_mm_cpu.c - the CPU backend's block matmul kernels and activation quantizers
 * (engine/cpu/mm_cpu.h) at every SIMD level this machine runs.
 *
 * The oracle is the portable single-row ggml-order kernels of ggml_kernels.c: every output of a
 * block kernel must equal eng__vec_dot_*_portable for its weight row and activation row bit
 * for bit, for every tile shape the kernels have (1..33 tokens covers the one-token path, every
 * pair count of a token tile and several tiles; odd row counts cover partial row tiles), and
 * every quantizer must write the bytes of the CPU backend's reference quantizer, including on
 * zeros, NaN, infinities, subnormals and values that round to +-127.
 * Random tests run fixed seeds plus one fresh seed per run, printed so a failure can be replayed
 * with MM_SEED=<seed>.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/cpu/mm_cpu.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

struct rng {
    uint64_t s; /* splitmix64 state */
};

static uint64_t rng_u64(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rng_int(struct rng *r, int lo, int hi) /* uniform in [lo, hi] */
{
    return lo + (int)(rng_u64(r) % (uint64_t)(hi - lo + 1));
}

/* Uniform in [-1, 1) times 2^e for e uniform in [emin, emax]. */
static float rng_float(struct rng *r, int emin, int emax)
{
    const float u = (float)((double)(rng_u64(r) >> 11) * 0x1p-52 - 1.0);
    return ldexpf(u, rng_int(r, emin, emax));
}

static uint64_t fresh_seed(void)
{
    const char *env = getenv("MM_SEED");
    if (env && *env) return strtoull(env, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 20;
}

static uint64_t run_seed; /* the fresh seed of this run, printed by main */

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* Random weight rows of a type: random codes, scales and offsets of varied magnitude (some
 * f16 subnormals), Q8_0 codes including -128. */
static void fill_weights(struct rng *r, int type, void *w, int n_rows, int nb)
{
    for (int i = 0; i < n_rows * nb; i++) {
        if (type == ENG_GGML_Q4_1) {
            struct eng_block_q4_1 *b = (struct eng_block_q4_1 *)w + i;
            b->d = eng_fp32_to_fp16(fabsf(rng_float(r, -26, 0)));
            b->m = eng_fp32_to_fp16(rng_float(r, -26, 0));
            for (int j = 0; j < ENG_QK / 2; j++) b->qs[j] = (uint8_t)rng_u64(r);
        } else {
            struct eng_block_q8_0 *b = (struct eng_block_q8_0 *)w + i;
            b->d = eng_fp32_to_fp16(fabsf(rng_float(r, -26, 0)));
            for (int j = 0; j < ENG_QK; j++) b->qs[j] = (int8_t)rng_u64(r);
        }
    }
}

/* Random activations; one block in eight gets special values. */
static void fill_acts(struct rng *r, float *x, int n)
{
    const int e = rng_int(r, -10, 10);
    for (int i = 0; i < n; i++) x[i] = rng_float(r, e - 3, e);
    for (int b = 0; b < n / ENG_QK; b++) {
        if (rng_int(r, 0, 7) != 0) continue;
        float *v = x + b * ENG_QK;
        switch (rng_int(r, 0, 5)) {
        case 0: /* all zeros */
            memset(v, 0, ENG_QK * sizeof(float));
            break;
        case 1: /* a NaN among normal values */
            v[rng_int(r, 0, ENG_QK - 1)] = NAN;
            break;
        case 2: /* an infinity */
            v[rng_int(r, 0, ENG_QK - 1)] = rng_int(r, 0, 1) ? INFINITY : -INFINITY;
            break;
        case 3: /* f32 subnormals: 127 / amax overflows */
            for (int j = 0; j < ENG_QK; j++) v[j] = rng_float(r, -140, -130);
            break;
        case 4: /* huge values: d * sum overflows f16 */
            for (int j = 0; j < ENG_QK; j++) v[j] = rng_float(r, 100, 120);
            break;
        default: /* ties: multiples of amax / 254 */
            for (int j = 0; j < ENG_QK; j++) v[j] = (float)rng_int(r, -254, 254) / 254.0f;
            v[0] = 1.0f;
            break;
        }
    }
}

/* Each level's quantizers write the CPU backend's bytes. */
static void test_quantizers(void)
{
    static const int types[] = {ENG_GGML_Q4_1, ENG_GGML_Q8_0};
    struct rng r = {1};
    enum { N = 32 * 48 };
    static float x[N];
    static unsigned char want[N / ENG_QK * 40], got[N / ENG_QK * 40];
    for (int iter = 0; iter < 400; iter++) {
        if (iter == 200) r.s = run_seed; /* fixed seed first, then this run's */
        fill_acts(&r, x, N);
        for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
            const struct eng_qtype *qt = eng_qtype_cpu(types[k]);
            const size_t bytes = eng_qtype_row_bytes(eng_qtype_get(qt->act_type), N);
            qt->quantize_act(x, want, N);
            for (int level = 0; level <= (int)eng_cpu_level_supported(); level++) {
                const struct eng_mm_kernels *mk = eng__mm_kernels(types[k], level);
                memset(got, 0xa5, sizeof(got));
                mk->quantize_act(x, got, N);
                CHECKF(memcmp(want, got, bytes) == 0, "type %d level %s iter %d", types[k],
                       eng_cpu_level_name(level), iter);
            }
        }
    }
}

/* One random case: every level's block kernel against the portable single dot per output. */
static int check_case(struct rng *r, int type, int n_rows, int n_tok, int nb)
{
    const int n_cols = nb * ENG_QK;
    const struct eng_qtype *qt = eng_qtype_cpu(type);
    const size_t w_rb = eng_qtype_row_bytes(qt, n_cols);
    const size_t a_rb = eng_qtype_row_bytes(eng_qtype_get(qt->act_type), n_cols);
    const eng_vec_dot_fn ref =
        type == ENG_GGML_Q4_1 ? eng__vec_dot_q4_1_q8_1_portable : eng__vec_dot_q8_0_q8_0_portable;
    /* The output has extra columns around the rows the kernel writes: they must stay put. */
    const int64_t stride = n_rows + 3;
    void *w = malloc(w_rb * (size_t)n_rows);
    float *x = malloc(sizeof(float) * (size_t)n_cols * (size_t)n_tok);
    void *act = malloc(a_rb * (size_t)n_tok);
    float *y = malloc(sizeof(float) * (size_t)stride * (size_t)n_tok);
    int bad = 0;

    fill_weights(r, type, w, n_rows, nb);
    fill_acts(r, x, n_cols * n_tok);
    for (int t = 0; t < n_tok; t++)
        qt->quantize_act(x + (size_t)t * n_cols, (unsigned char *)act + (size_t)t * a_rb, n_cols);
    for (int level = 0; level <= (int)eng_cpu_level_supported(); level++) {
        const struct eng_mm_kernels *mk = eng__mm_kernels(type, level);
        for (int64_t i = 0; i < stride * n_tok; i++) y[i] = -7.0f;
        mk->mm(n_cols, w, w_rb, n_rows, act, a_rb, n_tok, y + 1, stride);
        for (int t = 0; t < n_tok && !bad; t++) {
            for (int rr = 0; rr < n_rows; rr++) {
                const float want = ref(n_cols, (const unsigned char *)w + (size_t)rr * w_rb,
                                       (const unsigned char *)act + (size_t)t * a_rb);
                const float got = y[t * stride + 1 + rr];
                if (!same_bits(want, got)) {
                    printf("  type %d level %s rows %d tokens %d blocks %d: row %d token %d: "
                           "%.9g want %.9g\n",
                           type, eng_cpu_level_name(level), n_rows, n_tok, nb, rr, t, got, want);
                    bad = 1;
                    break;
                }
            }
            if (y[t * stride] != -7.0f || y[t * stride + n_rows + 1] != -7.0f) {
                printf("  type %d level %s rows %d tokens %d: wrote outside its rows\n", type,
                       eng_cpu_level_name(level), n_rows, n_tok);
                bad = 1;
            }
        }
    }
    free(w);
    free(x);
    free(act);
    free(y);
    return bad;
}

static void check_type(int type)
{
    static const int blocks[] = {1, 2, 3, 5, 18, 48};
    int failures = 0;
    for (int s = 0; s < 2; s++) {
        struct rng r = {(s ? run_seed : 1) ^ (uint64_t)type};
        for (int n_tok = 1; n_tok <= 33 && failures < 5; n_tok++)
            for (size_t k = 0; k < sizeof(blocks) / sizeof(blocks[0]); k++)
                failures += check_case(&r, type, rng_int(&r, 1, 41), n_tok, blocks[k]);
    }
    struct rng r = {run_seed};
    /* Whole tiles only, a long row, and rows beyond the kernels' tables (the fallback). */
    failures += check_case(&r, type, 64, 32, 48);
    failures += check_case(&r, type, 37, 9, 160);
    failures += check_case(&r, type, 5, 3, 520);
    failures += check_case(&r, type, 9, 1, 520);
    CHECKF(failures == 0, "%d failing cases", failures);
}

static void test_q4_1(void)
{
    check_type(ENG_GGML_Q4_1);
}

static void test_q8_0(void)
{
    check_type(ENG_GGML_Q8_0);
}

static void test_table(void)
{
    CHECK(eng__mm_kernels(ENG_GGML_Q4_0, ENG_CPU_SCALAR) == NULL);
    CHECK(eng__mm_kernels(ENG_GGML_F32, ENG_CPU_AVX512) == NULL);
    /* A level above the CPU's gives the CPU's best. */
    CHECK(eng__mm_kernels(ENG_GGML_Q4_1, ENG_CPU_AVX512) ==
          eng__mm_kernels(ENG_GGML_Q4_1, eng_cpu_level_supported()));
    printf("  levels tested: scalar..%s\n", eng_cpu_level_name(eng_cpu_level_supported()));
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    run_seed = fresh_seed();
    printf("random seed %llu (MM_SEED=%llu repeats this run)\n", (unsigned long long)run_seed,
           (unsigned long long)run_seed);
    RUN(test_table);
    RUN(test_quantizers);
    RUN(test_q4_1);
    RUN(test_q8_0);
    return TEST_END();
}
