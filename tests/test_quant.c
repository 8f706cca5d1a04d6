/*
 * test_quant.c - the quantized formats and their scalar reference kernels (engine/quant.h).
 *
 * Oracles, from most to least independent:
 *   - tests/data/quant_fixtures.bin, made by tests/data/gen_quant_fixtures.py with gguf-py's numpy
 *     code: dequantization of random blocks of every weight type must match bit for bit, and
 *     the ggml-compatible quantizers (Q4_0..Q8_0, F16, BF16) must produce the same bytes;
 *   - the compiler's _Float16 (where it has one) and a slow search-based rounding reference for
 *     every F16/BF16 conversion;
 *   - algebra: an integer vec_dot must equal the float dot product of the dequantized operands,
 *     and quantize-then-dequantize must stay within bounds derived from each format's step.
 * Random tests run fixed seeds plus one fresh seed per run, printed so a failure can be replayed
 * with QUANT_SEED=<seed>.
 */
#include "../engine/quant.h"
#include "test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

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

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1p-53;
}

static double rng_normal(struct rng *r)
{
    double u = rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* Weight-like data: normal values whose scale changes by up to 256x every 256 values and by up
 * to 4x every 32 (so K-quant sub-blocks differ), with about 1% outliers eight times larger. */
static void fill_weights(struct rng *r, float *x, int64_t n)
{
    double scale = 1.0, sub = 1.0;
    for (int64_t i = 0; i < n; i++) {
        if (i % 256 == 0) scale = exp2(rng_unit(r) * 8.0 - 4.0);
        if (i % 32 == 0) sub = exp2(rng_unit(r) * 2.0 - 1.0);
        double v = rng_normal(r) * scale * sub;
        if (rng_unit(r) < 0.01) v *= 8.0;
        x[i] = (float)v;
    }
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Distance in units in the last place between two finite floats of the same sign (or zeros). */
static uint32_t ulp_diff(float a, float b)
{
    if (a == b) return f32_bits(a) == f32_bits(b) ? 0 : 1; /* +0 vs -0 counts as one */
    uint32_t ua = f32_bits(a), ub = f32_bits(b);
    if ((ua ^ ub) & 0x80000000u) return UINT32_MAX;
    return ua > ub ? ua - ub : ub - ua;
}

static uint64_t fresh_seed(void)
{
    const char *env = getenv("QUANT_SEED");
    if (env && *env) return strtoull(env, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 20;
}

static uint64_t run_seed; /* the fresh seed of this run, printed by main */

static const int weight_types[] = {ENG_GGML_F32,  ENG_GGML_F16,  ENG_GGML_BF16, ENG_GGML_Q4_0,
                                   ENG_GGML_Q4_1, ENG_GGML_Q5_0, ENG_GGML_Q5_1, ENG_GGML_Q8_0,
                                   ENG_GGML_Q4_K, ENG_GGML_Q5_K, ENG_GGML_Q6_K};
#define N_WEIGHT_TYPES (int)(sizeof(weight_types) / sizeof(weight_types[0]))

/* ---- the table ---- */

static void test_table(void)
{
    static const struct {
        int type;
        const char *name;
        int elems, bytes, act;
    } want[] = {
        {ENG_GGML_F32, "f32", 1, 4, ENG_GGML_F32},
        {ENG_GGML_F16, "f16", 1, 2, ENG_GGML_F32},
        {ENG_GGML_Q4_0, "q4_0", 32, 18, ENG_GGML_Q8_0},
        {ENG_GGML_Q4_1, "q4_1", 32, 20, ENG_GGML_Q8_1},
        {ENG_GGML_Q5_0, "q5_0", 32, 22, ENG_GGML_Q8_0},
        {ENG_GGML_Q5_1, "q5_1", 32, 24, ENG_GGML_Q8_1},
        {ENG_GGML_Q8_0, "q8_0", 32, 34, ENG_GGML_Q8_0},
        {ENG_GGML_Q8_1, "q8_1", 32, 40, -1},
        {ENG_GGML_Q4_K, "q4_K", 256, 144, ENG_GGML_Q8_K},
        {ENG_GGML_Q5_K, "q5_K", 256, 176, ENG_GGML_Q8_K},
        {ENG_GGML_Q6_K, "q6_K", 256, 210, ENG_GGML_Q8_K},
        {ENG_GGML_Q8_K, "q8_K", 256, 292, -1},
        {ENG_GGML_BF16, "bf16", 1, 2, ENG_GGML_F32},
    };
    int n_supported = 0;
    for (int id = -3; id < 64; id++)
        if (eng_qtype_get(id)) n_supported++;
    CHECKF(n_supported == (int)(sizeof(want) / sizeof(want[0])), "%d", n_supported);
    static const int unsupported[] = {-1, 4, 5, 10, 11, 16, 29, 31, 1000, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        CHECK(eng_qtype_get(unsupported[i]) == NULL);
        CHECK(eng_qtype_ref(unsupported[i]) == NULL);
    }

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct eng_qtype *qt = eng_qtype_ref(want[i].type);
        CHECK(qt != NULL);
        if (!qt) continue;
        CHECK(eng_qtype_get(want[i].type) != NULL);
        CHECK(qt->type == want[i].type);
        CHECK_STR(qt->name, want[i].name);
        CHECKF(qt->block_elems == want[i].elems, "%s", qt->name);
        CHECKF(qt->block_bytes == want[i].bytes, "%s", qt->name);
        CHECKF(qt->act_type == want[i].act, "%s", qt->name);
        CHECK(qt->dequantize != NULL && qt->quantize != NULL);
        CHECKF(qt->weight == (want[i].act != -1), "%s", qt->name);
        if (qt->weight) {
            const struct eng_qtype *act = eng_qtype_ref(qt->act_type);
            CHECK(qt->vec_dot != NULL);
            CHECK(act != NULL);
            CHECK((qt->quantize_act == NULL) == (qt->act_type == ENG_GGML_F32));
            /* An activation block must cover the same values as a weight block. */
            if (act && act->type != ENG_GGML_F32) CHECK(act->block_elems == qt->block_elems);
        } else {
            CHECK(qt->vec_dot == NULL && qt->quantize_act == NULL);
        }
    }

    const struct eng_qtype *q4 = eng_qtype_ref(ENG_GGML_Q4_0);
    CHECK(eng_qtype_row_bytes(q4, 64) == 36);
    CHECK(eng_qtype_row_bytes(q4, 48) == 0);
    CHECK(eng_qtype_row_bytes(q4, 0) == 0);
    CHECK(eng_qtype_row_bytes(q4, -32) == 0);
    CHECK(eng_qtype_row_bytes(NULL, 32) == 0);
    CHECK(eng_qtype_row_bytes(eng_qtype_ref(ENG_GGML_Q6_K), 896) == 0); /* Qwen2.5-0.5B rows */
    CHECK(eng_qtype_row_bytes(eng_qtype_ref(ENG_GGML_Q6_K), 1024) == 840);
    CHECK(eng_qtype_row_bytes(eng_qtype_ref(ENG_GGML_F32), INT64_MAX) == 0); /* overflow */
}

/* ---- F16 and BF16 conversions ---- */

/* Slow, independent round-to-nearest-even to the representable set {value(code)} of a format:
 * binary search for the largest code whose value is <= |f|, then compare with the midpoint in
 * double (exact for these formats). max_code is the largest finite positive code and inf_code
 * the infinity code. */
static uint16_t slow_round(float f, float (*value)(uint16_t), uint16_t max_code, uint16_t inf_code)
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    uint16_t lo = 0, hi = max_code;
    if (a >= (double)value(max_code)) {
        /* Past the largest finite value: round to infinity from the midpoint to the next
         * would-be value (max + half an ulp of max), ties going to infinity (an even code). */
        double top = value(max_code), ulp = top - value((uint16_t)(max_code - 1));
        return (uint16_t)(sign | (a >= top + ulp / 2 ? inf_code : max_code));
    }
    while (lo < hi) { /* largest code with value <= a */
        uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
        if ((double)value(mid) <= a)
            lo = mid;
        else
            hi = (uint16_t)(mid - 1);
    }
    double below = value(lo), above = value((uint16_t)(lo + 1));
    double midpoint = (below + above) / 2;
    uint16_t code = lo;
    if (a > midpoint || (a == midpoint && (lo & 1))) code = (uint16_t)(lo + 1);
    return (uint16_t)(sign | code);
}

static void test_fp16_exhaustive(void)
{
    int bad_round_trip = 0, bad_value = 0, bad_order = 0;
    float prev = -1.0f;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = eng_fp16_to_fp32((uint16_t)h);
        int is_nan = ((h & 0x7c00) == 0x7c00) && (h & 0x3ff);
        if (is_nan) {
            if (!isnan(f) || (signbit(f) != 0) != ((h & 0x8000) != 0)) bad_value++;
            /* The payload is kept, and converting back sets the quiet bit. */
            uint16_t back = eng_fp32_to_fp16(f);
            if (back != (h | 0x200)) bad_round_trip++;
            continue;
        }
        if (eng_fp32_to_fp16(f) != h) bad_round_trip++;
#ifdef __FLT16_MAX__
        _Float16 ref;
        uint16_t hb = (uint16_t)h;
        memcpy(&ref, &hb, sizeof(ref));
        if (f32_bits((float)ref) != f32_bits(f)) bad_value++;
#endif
        if (h <= 0x7c00) { /* positive codes increase strictly in value */
            if (h > 0 && !(f > prev)) bad_order++;
            prev = f;
        }
    }
    CHECKF(bad_round_trip == 0, "%d", bad_round_trip);
    CHECKF(bad_value == 0, "%d", bad_value);
    CHECKF(bad_order == 0, "%d", bad_order);

    /* Spot values stated independently. */
    CHECK(eng_fp16_to_fp32(0x3c00) == 1.0f);
    CHECK(eng_fp16_to_fp32(0xc000) == -2.0f);
    CHECK(eng_fp16_to_fp32(0x7bff) == 65504.0f);
    CHECK(eng_fp16_to_fp32(0x0400) == 0x1p-14f);
    CHECK(eng_fp16_to_fp32(0x0001) == 0x1p-24f);
    CHECK(eng_fp16_to_fp32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(isinf(eng_fp16_to_fp32(0x7c00)) && eng_fp16_to_fp32(0xfc00) < 0);
    CHECK(f32_bits(eng_fp16_to_fp32(0x8000)) == 0x80000000u);
}

static float bf16_value(uint16_t h)
{
    return eng_bf16_to_fp32(h);
}

static void test_fp16_rounding(void)
{
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},           {-0.0f, 0x8000},
        {1.0f, 0x3c00},           {65504.0f, 0x7bff},
        {65519.99f, 0x7bff},      {65520.0f, 0x7c00}, /* tie between 65504 and 2^16: to even, inf */
        {1e9f, 0x7c00},           {-1e9f, 0xfc00},
        {0x1p-24f, 0x0001},       {0x1p-25f, 0x0000}, /* tie between 0 and 2^-24: to even, 0 */
        {0x1.8p-25f, 0x0001},     {0x1.000002p-25f, 0x0001},
        {0x1.8p-24f, 0x0002},                               /* 1.5 units: tie, to even 2 */
        {0x1.4p-23f, 0x0002},                               /* 2.5 units: tie, to even 2 */
        {0x1p-14f, 0x0400},       {0x1.ff8p-15f, 0x03ff},   /* smallest normal, largest subnormal */
        {0x1.ffap-15f, 0x03ff},   {0x1.ffcp-15f, 0x0400},   /* below, at the tie between them */
        {1.0009765625f, 0x3c01},  {1.00048828125f, 0x3c00}, /* tie below: to even */
        {1.00146484375f, 0x3c02},                           /* tie above: to even */
        {FLT_MIN, 0x0000},        {0x1p-149f, 0x0000},
        {INFINITY, 0x7c00},       {-INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(eng_fp32_to_fp16(cases[i].f) == cases[i].h, "%a -> %04x, want %04x", cases[i].f,
               eng_fp32_to_fp16(cases[i].f), cases[i].h);
    uint16_t nan = eng_fp32_to_fp16(NAN);
    CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    CHECK((eng_fp32_to_fp16(bits_f32(0x7f800001u)) & 0x3ff) != 0); /* signalling stays NaN */
    CHECK(eng_fp32_to_fp16(bits_f32(0xffc00000u)) == 0xfe00);

    /* Random patterns, mostly in or near the F16 range, against the slow reference. */
    struct rng r = {run_seed ^ 0xf16};
    int bad = 0, bad_hw = 0;
    for (int i = 0; i < 300000; i++) {
        uint32_t u = (uint32_t)rng_u64(&r);
        if (i % 4 != 0) u = (u & 0x807fffffu) | (uint32_t)(100 + rng_u64(&r) % 50) << 23;
        float f = bits_f32(u);
        if (isnan(f)) continue;
        uint16_t got = eng_fp32_to_fp16(f);
        if (got != slow_round(f, eng_fp16_to_fp32, 0x7bff, 0x7c00)) {
            if (bad++ < 5) printf("  f16 of %a: got %04x\n", f, got);
        }
#ifdef __FLT16_MAX__
        _Float16 hw = (_Float16)f;
        uint16_t hwb;
        memcpy(&hwb, &hw, sizeof(hwb));
        if (hwb != got) bad_hw++;
#endif
    }
    CHECKF(bad == 0, "%d mismatches with the slow reference", bad);
    CHECKF(bad_hw == 0, "%d mismatches with _Float16", bad_hw);
}

static void test_bf16(void)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie: to even (down) */
        {0x3f818000u, 0x3f82},                        /* tie: to even (up) */
        {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80}, {0x7f7fffffu, 0x7f80}, /* max -> inf */
        {0x7f7f7fffu, 0x7f7f}, {0xff800000u, 0xff80}, {0x80000000u, 0x8000},
        {0x00000001u, 0x0000}, {0x00008000u, 0x0000}, {0x00018000u, 0x0002},
        {0x7fc00000u, 0x7fc0}, {0x7f800001u, 0x7fc0}, /* NaN: quiet, top payload bits kept */
        {0xffffffffu, 0xffff},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t got = eng_fp32_to_bf16(bits_f32(cases[i].f));
        CHECKF(got == cases[i].h, "%08x -> %04x, want %04x", cases[i].f, got, cases[i].h);
    }
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) { /* BF16 -> F32 is exact: the top half */
        float f = eng_bf16_to_fp32((uint16_t)h);
        if (f32_bits(f) != h << 16) bad++;
        if (!isnan(f) && eng_fp32_to_bf16(f) != h) bad++;
    }
    CHECKF(bad == 0, "%d", bad);

    struct rng r = {run_seed ^ 0xbf16};
    bad = 0;
    for (int i = 0; i < 300000; i++) {
        float f = bits_f32((uint32_t)rng_u64(&r));
        if (isnan(f)) continue;
        uint16_t got = eng_fp32_to_bf16(f);
        if (got != slow_round(f, bf16_value, 0x7f7f, 0x7f80) && bad++ < 5)
            printf("  bf16 of %a: got %04x\n", f, got);
    }
    CHECKF(bad == 0, "%d mismatches with the slow reference", bad);
}

/* ---- the gguf-py fixture ---- */

static const char *fixture_path(void)
{
    static char path[4096];
    if (access("tests/data/quant_fixtures.bin", R_OK) == 0) return "tests/data/quant_fixtures.bin";
    snprintf(path, sizeof(path), "%s", __FILE__);
    char *slash = strrchr(path, '/');
    size_t at = slash ? (size_t)(slash + 1 - path) : 0;
    snprintf(path + at, sizeof(path) - at, "data/quant_fixtures.bin");
    return path;
}

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float rd_f32(const unsigned char *p)
{
    return bits_f32(rd_u32(p));
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            buf = realloc(buf, cap);
            if (!buf) abort();
        }
        size_t got = fread(buf + *len, 1, cap - *len, f);
        if (got == 0) break;
        *len += got;
    }
    fclose(f);
    return buf;
}

/* Exact unless the compiler may fuse a*b+c (then one rounding may differ: 1 ulp). */
#ifdef __FP_FAST_FMAF
#define DEQUANT_MAX_ULP 1u
#else
#define DEQUANT_MAX_ULP 0u
#endif

static void check_dequant_section(const struct eng_qtype *qt, const unsigned char *raw,
                                  uint32_t n_bytes, const unsigned char *want, uint32_t n)
{
    CHECKF(eng_qtype_row_bytes(qt, n) == n_bytes, "%s: %u values in %u bytes", qt->name, n,
           n_bytes);
    if (eng_qtype_row_bytes(qt, n) != n_bytes) return;
    /* Copy the blocks to aligned memory: the file packs sections without padding. */
    void *blocks = malloc(n_bytes);
    float *got = malloc(n * sizeof(float));
    memcpy(blocks, raw, n_bytes);
    qt->dequantize(blocks, got, n);
    uint32_t bad = 0, worst = 0;
    for (uint32_t i = 0; i < n; i++) {
        float w = rd_f32(want + 4 * i);
        uint32_t d =
            isnan(w) ? (f32_bits(w) == f32_bits(got[i]) ? 0 : UINT32_MAX) : ulp_diff(got[i], w);
        if (d > worst) worst = d;
        if (d > DEQUANT_MAX_ULP && bad++ < 3)
            printf("  %s value %u: got %a, want %a\n", qt->name, i, got[i], w);
    }
    CHECKF(bad == 0, "%s: %u of %u values differ (worst %u ulp)", qt->name, bad, n, worst);
    free(blocks);
    free(got);
}

static void check_quant_section(const struct eng_qtype *qt, const unsigned char *in, uint32_t n,
                                const unsigned char *want, uint32_t n_bytes)
{
    CHECKF(eng_qtype_row_bytes(qt, n) == n_bytes, "%s", qt->name);
    if (eng_qtype_row_bytes(qt, n) != n_bytes) return;
    float *x = malloc(n * sizeof(float));
    unsigned char *got = malloc(n_bytes);
    for (uint32_t i = 0; i < n; i++) x[i] = rd_f32(in + 4 * i);
    qt->quantize(x, got, n);
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n_bytes; i++) {
        if (got[i] != want[i] && bad++ < 3) {
            uint32_t blk = i / (uint32_t)qt->block_bytes;
            printf("  %s block %u byte %u: got %02x, want %02x (first value %a)\n", qt->name, blk,
                   i % (uint32_t)qt->block_bytes, got[i], want[i],
                   x[blk * (uint32_t)qt->block_elems]);
        }
    }
    CHECKF(bad == 0, "%s: %u of %u bytes differ", qt->name, bad, n_bytes);
    free(x);
    free(got);
}

static void test_fixture(void)
{
    const char *path = fixture_path();
    size_t len = 0;
    unsigned char *buf = read_all(path, &len);
    CHECKF(buf != NULL, "cannot read %s (regenerate with tests/data/gen_quant_fixtures.py)", path);
    if (!buf) return;
    CHECK(len >= 16 && memcmp(buf, "AGQF", 4) == 0 && rd_u32(buf + 4) == 1);
    if (len < 16 || memcmp(buf, "AGQF", 4) != 0) goto out;
    uint32_t n_sections = rd_u32(buf + 8), note_len = rd_u32(buf + 12);
    size_t off = 16;
    CHECK(note_len <= len - off);
    if (note_len > len - off) goto out;
    printf("  fixture: %u sections from %.*s\n", n_sections, (int)note_len, (char *)buf + off);
    off += note_len;

    unsigned dequant_seen = 0, quant_seen = 0; /* bit per type id */
    for (uint32_t s = 0; s < n_sections; s++) {
        CHECK(len - off >= 16);
        if (len - off < 16) break;
        uint32_t kind = rd_u32(buf + off), type = rd_u32(buf + off + 4);
        uint32_t n = rd_u32(buf + off + 8), n_bytes = rd_u32(buf + off + 12);
        off += 16;
        uint64_t need = (uint64_t)n * 4 + n_bytes;
        CHECKF(need <= len - off, "section %u truncated", s);
        if (need > len - off) break;
        const struct eng_qtype *qt = eng_qtype_ref((int)type);
        CHECKF(qt != NULL && qt->weight, "section %u: type %u", s, type);
        if (qt && qt->weight && kind == 1) {
            check_dequant_section(qt, buf + off, n_bytes, buf + off + n_bytes, n);
            dequant_seen |= 1u << type;
        } else if (qt && qt->weight && kind == 2) {
            check_quant_section(qt, buf + off, n, buf + off + (size_t)n * 4, n_bytes);
            quant_seen |= 1u << type;
        } else {
            CHECKF(0, "section %u: kind %u", s, kind);
        }
        off += need;
    }
    CHECK(off == len);
    for (int i = 0; i < N_WEIGHT_TYPES; i++)
        if (weight_types[i] != ENG_GGML_F32)
            CHECKF(dequant_seen & (1u << weight_types[i]), "no dequant fixture for type %d",
                   weight_types[i]);
    static const int ggml_quantizers[] = {ENG_GGML_F16,  ENG_GGML_BF16, ENG_GGML_Q4_0,
                                          ENG_GGML_Q4_1, ENG_GGML_Q5_0, ENG_GGML_Q5_1,
                                          ENG_GGML_Q8_0};
    for (size_t i = 0; i < sizeof(ggml_quantizers) / sizeof(ggml_quantizers[0]); i++)
        CHECKF(quant_seen & (1u << ggml_quantizers[i]), "no quantize fixture for type %d",
               ggml_quantizers[i]);
out:
    free(buf);
}

/* ---- quantize -> dequantize error bounds ---- */

/* Largest allowed |x - dequant(quant(x))| for each value of one weight block of x, from the
 * format's step: half a step for rounding, a full step where the code range is asymmetric
 * (the symmetric formats clamp +max to the last code), plus the f16 rounding of the scales
 * (2^-11 relative) times the largest code. K formats add the 6/8-bit rounding of sub-block
 * scales against the super-block scale (d = max scale / 63 or / 127). */
static void error_bounds(int type, const float *x, float *bound)
{
    const float f16_rel = 0x1p-11f * 1.01f;
    switch (type) {
    case ENG_GGML_F32:
        bound[0] = 0.0f;
        return;
    case ENG_GGML_F16:
        bound[0] = fabsf(x[0]) * 0x1p-11f + 0x1p-25f;
        return;
    case ENG_GGML_BF16:
        bound[0] = fabsf(x[0]) * 0x1p-8f + FLT_MIN;
        return;
    default:
        break;
    }
    float amax = 0.0f, min = FLT_MAX, max = -FLT_MAX;
    const struct eng_qtype *qt = eng_qtype_ref(type);
    for (int i = 0; i < qt->block_elems; i++) {
        amax = fmaxf(amax, fabsf(x[i]));
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
    }
    float b = 0.0f;
    switch (type) {
    /* step * (rounding + (largest code + 2) * scale rounding); the 2 covers the rounding of
     * the step itself and of the float arithmetic */
    case ENG_GGML_Q4_0:
        b = amax / 8 * (1.0f + 10 * f16_rel);
        break;
    case ENG_GGML_Q5_0:
        b = amax / 16 * (1.0f + 18 * f16_rel);
        break;
    case ENG_GGML_Q8_0:
        b = amax / 127 * (0.5f + 129 * f16_rel);
        break;
    case ENG_GGML_Q4_1:
        b = (max - min) / 15 * (0.5f + 17 * f16_rel) + fabsf(min) * f16_rel;
        break;
    case ENG_GGML_Q5_1:
        b = (max - min) / 31 * (0.5f + 33 * f16_rel) + fabsf(min) * f16_rel;
        break;
    case ENG_GGML_Q4_K:
    case ENG_GGML_Q5_K: {
        const int qmax = type == ENG_GGML_Q4_K ? 15 : 31;
        float scale[8], max_scale = 0.0f, max_neg_min = 0.0f;
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = 0.0f;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / qmax;
            max_scale = fmaxf(max_scale, scale[j]);
            max_neg_min = fmaxf(max_neg_min, -lo);
        }
        const float d = max_scale / 63, dmin = max_neg_min / 63;
        for (int j = 0; j < 8; j++) {
            /* half a (rounded) step, qmax codes times the scale's rounding, the min's rounding */
            float bj = 0.5f * (scale[j] + d / 2) + qmax * (d / 2) + dmin / 2;
            bj = bj * 1.01f + (max_scale * qmax + max_neg_min) * 4 * f16_rel;
            for (int l = 0; l < 32; l++) bound[32 * j + l] = bj;
        }
        return;
    }
    case ENG_GGML_Q6_K: {
        float g_scale[16], max_scale = 0.0f;
        for (int g = 0; g < 16; g++) {
            float a = 0.0f;
            for (int l = 0; l < 16; l++) a = fmaxf(a, fabsf(x[16 * g + l]));
            g_scale[g] = a / 32;
            max_scale = fmaxf(max_scale, g_scale[g]);
        }
        const float d = max_scale / 127;
        for (int g = 0; g < 16; g++) {
            /* a full step (the +32 side clamps to 31) plus 32 codes times the scale rounding */
            float bg = (g_scale[g] + d / 2) + 32 * (d / 2);
            bg = bg * 1.01f + max_scale * 32 * 4 * f16_rel;
            for (int l = 0; l < 16; l++) bound[16 * g + l] = bg;
        }
        return;
    }
    default:
        break;
    }
    for (int i = 0; i < qt->block_elems; i++) bound[i] = b + FLT_MIN;
}

/* Upper limits for the mean, over groups of 32 values, of (RMS error / largest |x| of the
 * group). Rounding to a grid of step h leaves an RMS error of about h / sqrt(12): Q4_0's step is
 * amax / 8 (0.036 amax), Q4_1's about range / 15 (range ~ 1.9 amax on normal data: 0.037),
 * Q5_* half that, Q8_0 amax / 127 (0.0023), Q6_K amax / 32 per 16 values (<= 0.009); K formats
 * lose a little more to their 6-bit scales. The limits add about 25% headroom: a packing bug
 * gives errors of the order of amax, a poor quantizer a few tens of percent more. */
static double rms_limit(int type)
{
    switch (type) {
    case ENG_GGML_F32:
        return 0.0;
    case ENG_GGML_F16:
        return 2.5e-4;
    case ENG_GGML_BF16:
        return 2e-3;
    case ENG_GGML_Q4_0:
        return 0.045;
    case ENG_GGML_Q4_1:
        return 0.046;
    case ENG_GGML_Q5_0:
        return 0.023;
    case ENG_GGML_Q5_1:
        return 0.023;
    case ENG_GGML_Q8_0:
        return 0.0029;
    case ENG_GGML_Q4_K:
        return 0.050;
    case ENG_GGML_Q5_K:
        return 0.026;
    case ENG_GGML_Q6_K:
        return 0.011;
    default:
        return 0.0;
    }
}

static void roundtrip_one(int type, uint64_t seed, int64_t n_blocks, double *rel_rms)
{
    const struct eng_qtype *qt = eng_qtype_ref(type);
    const int64_t n = n_blocks * qt->block_elems;
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    float *bound = malloc((size_t)qt->block_elems * sizeof(float));
    void *q = malloc(eng_qtype_row_bytes(qt, n));
    struct rng r = {seed};
    fill_weights(&r, x, n);
    if (n_blocks > 2) memset(x + qt->block_elems, 0, (size_t)qt->block_elems * sizeof(float));
    qt->quantize(x, q, n);
    qt->dequantize(q, y, n);
    int bad = 0;
    for (int64_t b = 0; b < n_blocks; b++) {
        const int64_t o = b * qt->block_elems;
        error_bounds(type, x + o, bound);
        for (int i = 0; i < qt->block_elems; i++) {
            double e = fabs((double)x[o + i] - y[o + i]);
            if (!(e <= bound[i]) && bad++ < 3)
                printf("  %s seed %llu value %lld: %a -> %a, bound %a\n", qt->name,
                       (unsigned long long)seed, (long long)(o + i), x[o + i], y[o + i], bound[i]);
        }
    }
    CHECKF(bad == 0, "%s: seed %llu: %d values beyond the bound", qt->name,
           (unsigned long long)seed, bad);
    double sum_rel = 0.0;
    int groups = 0;
    for (int64_t g = 0; g + 32 <= n; g += 32) {
        double err2 = 0.0, amax = 0.0;
        for (int i = 0; i < 32; i++) {
            double e = (double)x[g + i] - y[g + i];
            err2 += e * e;
            amax = fmax(amax, fabs((double)x[g + i]));
        }
        if (amax > 0) {
            sum_rel += sqrt(err2 / 32) / amax;
            groups++;
        }
    }
    *rel_rms = groups ? sum_rel / groups : 0.0;
    CHECKF(*rel_rms <= rms_limit(type), "%s: seed %llu: relative RMS error %g > %g", qt->name,
           (unsigned long long)seed, *rel_rms, rms_limit(type));
    /* An all-zero block comes back as exact zeros. */
    if (n_blocks > 2)
        for (int i = 0; i < qt->block_elems; i++)
            CHECKF(y[qt->block_elems + i] == 0.0f, "%s: zero block gave %a", qt->name,
                   y[qt->block_elems + i]);
    free(x);
    free(y);
    free(bound);
    free(q);
}

static void test_roundtrip(void)
{
    const uint64_t seeds[] = {1, 2, 3, run_seed};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        double worst = 0.0;
        for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
            double rel = 0.0;
            int64_t n_blocks = eng_qtype_ref(weight_types[t])->block_elems == 1 ? 4099 : 97;
            roundtrip_one(weight_types[t], seeds[s] * 7919 + (uint64_t)t, n_blocks, &rel);
            worst = fmax(worst, rel);
        }
        printf("  %-5s worst mean RMS error / group amax %.3g\n",
               eng_qtype_ref(weight_types[t])->name, worst);
    }
}

/* ---- activation quantizers ---- */

static void test_act_quantizers(void)
{
    /* Ties round to even: with amax 127 the scale factor is exactly 1. */
    float x[256] = {127.0f, 2.5f, 3.5f, -2.5f, -0.5f, 0.5f, 1.5f, -126.5f, 126.5f};
    struct eng_block_q8_0 b0[8];
    struct eng_block_q8_1 b1[8];
    struct eng_block_q8_K bk[1];
    static const int8_t want[9] = {127, 2, 4, -2, 0, 0, 2, -126, 126};
    eng__quantize_row_q8_0(x, b0, 32);
    eng__quantize_row_q8_1(x, b1, 32);
    eng__quantize_row_q8_K(x, bk, 256);
    for (int i = 0; i < 9; i++) {
        CHECKF(b0[0].qs[i] == want[i], "q8_0 %d: %d", i, b0[0].qs[i]);
        CHECKF(b1[0].qs[i] == want[i], "q8_1 %d: %d", i, b1[0].qs[i]);
        CHECKF(bk[0].qs[i] == want[i], "q8_K %d: %d", i, bk[0].qs[i]);
    }
    CHECK(eng_fp16_to_fp32(b0[0].d) == 1.0f && b1[0].d == 1.0f && bk[0].d == 1.0f);

    /* All zeros: zero scale and codes; the sums are zero too. */
    memset(x, 0, sizeof(x));
    eng__quantize_row_q8_1(x, b1, 32);
    eng__quantize_row_q8_K(x, bk, 256);
    CHECK(b1[0].d == 0.0f && b1[0].s == 0.0f && bk[0].d == 0.0f);
    for (int g = 0; g < 16; g++) CHECK(bk[0].bsums[g] == 0);

    /* NaN in the input is not undefined behaviour; codes stay in range. */
    x[3] = NAN;
    x[4] = 1.0f;
    eng__quantize_row_q8_K(x, bk, 256);
    for (int k = 0; k < 256; k++) CHECK(bk[0].qs[k] >= -127);

    /* Random rows: the documented rule, exactly; amax maps to +-127; sums are consistent. */
    const uint64_t seeds[] = {11, 12, run_seed};
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        struct rng r = {seeds[s]};
        fill_weights(&r, x, 256);
        eng__quantize_row_q8_0(x, b0, 256);
        eng__quantize_row_q8_1(x, b1, 256);
        eng__quantize_row_q8_K(x, bk, 256);
        int bad = 0;
        for (int blk = 0; blk < 8; blk++) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * blk + j]));
            int sum = 0, hit = 0;
            for (int j = 0; j < 32; j++) {
                int8_t c = (int8_t)nearbyintf(x[32 * blk + j] * (127.0f / amax));
                if (b0[blk].qs[j] != c || b1[blk].qs[j] != c) bad++;
                if (fabsf(x[32 * blk + j]) == amax) hit |= abs(c) == 127;
                sum += c;
            }
            if (!hit) bad++;
            if (b0[blk].d != eng_fp32_to_fp16(amax / 127.0f) || b1[blk].d != amax / 127.0f) bad++;
            if (b1[blk].s != b1[blk].d * (float)sum) bad++;
        }
        float amax = 0.0f;
        for (int k = 0; k < 256; k++) amax = fmaxf(amax, fabsf(x[k]));
        if (bk[0].d != amax / 127.0f) bad++;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) {
                int8_t c = (int8_t)nearbyintf(x[16 * g + l] * (127.0f / amax));
                if (bk[0].qs[16 * g + l] != c) bad++;
                sum += c;
            }
            if (bk[0].bsums[g] != sum) bad++;
        }
        CHECKF(bad == 0, "seed %llu: %d", (unsigned long long)seeds[s], bad);
    }
}

/* ---- integer dot products ---- */

/* Checks vec_dot on `rows` rows of n values against the double dot product of the dequantized
 * operands (which isolates the integer path), and against the unquantized data within the sum of
 * the per-value quantization error bounds. */
static void vec_dot_one(int type, uint64_t seed, int n, int rows)
{
    const struct eng_qtype *qt = eng_qtype_ref(type);
    const struct eng_qtype *at = eng_qtype_ref(qt->act_type);
    const size_t row_bytes = eng_qtype_row_bytes(qt, n);
    float *w = malloc((size_t)n * rows * sizeof(float)), *wd = malloc((size_t)n * sizeof(float));
    float *a = malloc((size_t)n * sizeof(float)), *ad = malloc((size_t)n * sizeof(float));
    unsigned char *wq = malloc(row_bytes * rows);
    void *aq = malloc(eng_qtype_row_bytes(at, n));
    struct rng r = {seed};
    fill_weights(&r, w, (int64_t)n * rows);
    for (int i = 0; i < n; i++) a[i] = (float)(rng_normal(&r) + (i % 3 == 0 ? 0.5 : 0.0));
    /* Whole matrix at once: rows are contiguous and row_bytes apart. */
    qt->quantize(w, wq, (int64_t)n * rows);
    const void *act = a;
    if (qt->quantize_act) {
        qt->quantize_act(a, aq, n);
        at->dequantize(aq, ad, n);
        act = aq;
    } else {
        memcpy(ad, a, (size_t)n * sizeof(float));
    }
    /* Largest activation quantization error per value: half a step plus the f16 rounding of
     * Q8_0's scale times 127 codes (0.5 + 127 * 2^-11 < 0.57 steps). */
    float *a_bound = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) a_bound[i] = 0.0f;
    if (qt->quantize_act) {
        for (int o = 0; o < n; o += at->block_elems) {
            float amax = 0.0f;
            for (int i = 0; i < at->block_elems; i++) amax = fmaxf(amax, fabsf(a[o + i]));
            for (int i = 0; i < at->block_elems; i++) a_bound[o + i] = amax / 127 * 0.57f;
        }
    }
    float *w_bound = malloc((size_t)qt->block_elems * sizeof(float));
    for (int row = 0; row < rows; row++) {
        const float *wr = w + (size_t)row * n;
        qt->dequantize(wq + row_bytes * row, wd, n);
        double ref = 0.0, mag = 0.0, exact = 0.0, err = 0.0;
        for (int i = 0; i < n; i++) {
            ref += (double)wd[i] * ad[i];
            mag += fabs((double)wd[i] * ad[i]);
            exact += (double)wr[i] * a[i];
            /* w.a - wd.ad = (w - wd).a + wd.(a - ad), bounded term by term */
            if (i % qt->block_elems == 0) error_bounds(type, wr + i, w_bound);
            err += (double)w_bound[i % qt->block_elems] * fabs(a[i]) + fabs(wd[i]) * a_bound[i];
        }
        float got = qt->vec_dot(n, wq + row_bytes * row, act);
        /* Only float rounding separates these two: of the dequantized values (a few ulp each,
         * of terms that can be larger than the value when a min or offset cancels) and of the
         * final float result. */
        double tol = 2e-6 * mag + 1e-30;
        CHECKF(fabs(got - ref) <= tol, "%s n=%d row %d seed %llu: vec_dot %.9g, dequant dot %.9g",
               qt->name, n, row, (unsigned long long)seed, got, ref);
        CHECKF(fabs(got - exact) <= err + tol, "%s n=%d row %d: vec_dot %.9g, unquantized %.9g",
               qt->name, n, row, got, exact);
    }
    free(a_bound);
    free(w_bound);
    free(w);
    free(wd);
    free(a);
    free(ad);
    free(wq);
    free(aq);
}

static void test_vec_dot(void)
{
    const uint64_t seeds[] = {5, 6, run_seed};
    for (int t = 0; t < N_WEIGHT_TYPES; t++) {
        const int be = eng_qtype_ref(weight_types[t])->block_elems;
        /* Odd block counts and odd row counts; float types get odd lengths too. */
        static const int blocks_32[] = {1, 2, 3, 7, 29};
        static const int blocks_256[] = {1, 3, 5};
        static const int lengths_1[] = {1, 7, 33, 640, 1023};
        const int *counts = be == 1 ? lengths_1 : be == 32 ? blocks_32 : blocks_256;
        const int n_counts = be == 256 ? 3 : 5;
        for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
            for (int c = 0; c < n_counts; c++)
                vec_dot_one(weight_types[t], seeds[s] * 104729 + (uint64_t)(t * 16 + c),
                            counts[c] * be, 3 + c % 3);
    }
}

/* Hand-built blocks with known values, independent of the quantizers: every position must come
 * back where the layout in quant.h says it lives. */
static void test_layout_by_hand(void)
{
    /* Q5_0: code i = i (0..31) -> value (i - 16) * d. */
    struct eng_block_q5_0 b5 = {.d = 0x3c00};
    uint32_t qh = 0;
    for (int i = 0; i < 32; i++) {
        if (i < 16)
            b5.qs[i] = (uint8_t)(b5.qs[i] | (i & 15));
        else
            b5.qs[i - 16] = (uint8_t)(b5.qs[i - 16] | (i & 15) << 4);
        qh |= (uint32_t)(i >> 4) << i;
    }
    for (int i = 0; i < 4; i++) b5.qh[i] = (uint8_t)(qh >> (8 * i));
    float y[256];
    eng__dequantize_row_q5_0(&b5, y, 32);
    for (int i = 0; i < 32; i++) CHECKF(y[i] == (float)(i - 16), "q5_0 %d: %g", i, y[i]);

    /* Q4_K: d = 1, dmin = 1, sc[j] = j + 1, m[j] = 2j, code of value k = k % 16. */
    struct eng_block_q4_K b4 = {.d = 0x3c00, .dmin = 0x3c00};
    for (int j = 0; j < 8; j++) {
        uint8_t sc = (uint8_t)(j + 1 + (j >= 4 ? 16 * (j - 4) : 0)), m = (uint8_t)(2 * j + 40);
        /* write through the documented packing */
        if (j < 4) {
            b4.scales[j] = (uint8_t)((b4.scales[j] & 0xc0) | sc);
            b4.scales[j + 4] = (uint8_t)((b4.scales[j + 4] & 0xc0) | m);
        } else {
            b4.scales[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
            b4.scales[j - 4] = (uint8_t)(b4.scales[j - 4] | (sc >> 4) << 6);
            b4.scales[j] = (uint8_t)(b4.scales[j] | (m >> 4) << 6);
        }
    }
    for (int k = 0; k < 256; k++) {
        int c = k / 64, l = k % 32, hi = (k / 32) % 2;
        b4.qs[32 * c + l] = (uint8_t)(b4.qs[32 * c + l] | (k % 16) << (4 * hi));
    }
    eng__dequantize_row_q4_K(&b4, y, 256);
    int bad = 0;
    for (int k = 0; k < 256; k++) {
        int j = k / 32, sc = j + 1 + (j >= 4 ? 16 * (j - 4) : 0), m = 2 * j + 40;
        if (y[k] != (float)(sc * (k % 16) - m) && bad++ < 3)
            printf("  q4_K %d: %g, want %d\n", k, y[k], sc * (k % 16) - m);
    }
    CHECKF(bad == 0, "%d", bad);

    /* Q6_K: d = 1, scale[g] = g - 8, code of value k = k % 64. */
    struct eng_block_q6_K b6 = {.d = 0x3c00};
    for (int g = 0; g < 16; g++) b6.scales[g] = (int8_t)(g - 8);
    for (int k = 0; k < 256; k++) {
        int h = k / 128, part = (k % 128) / 32, l = k % 32, code = k % 64;
        uint8_t *lo = &b6.ql[64 * h + l + 32 * (part & 1)];
        *lo = (uint8_t)(*lo | (code & 15) << (part < 2 ? 0 : 4));
        b6.qh[32 * h + l] = (uint8_t)(b6.qh[32 * h + l] | (code >> 4) << (2 * part));
    }
    eng__dequantize_row_q6_K(&b6, y, 256);
    bad = 0;
    for (int k = 0; k < 256; k++)
        if (y[k] != (float)((k / 16 - 8) * (k % 64 - 32)) && bad++ < 3)
            printf("  q6_K %d: %g\n", k, y[k]);
    CHECKF(bad == 0, "%d", bad);
}

/* The kernels' table and the GGUF loader's size table agree on every type a file can hold.
 * Q8_1 is left out on purpose: the engine's Q8_1 is an activation block of its own (f32 d and
 * f32 sum, 40 bytes), never read from a file, unlike ggml's 36-byte one. */
static void test_sizes_match_gguf(void)
{
    static const int types[] = {ENG_GGML_F32,  ENG_GGML_F16,  ENG_GGML_Q4_0, ENG_GGML_Q4_1,
                                ENG_GGML_Q5_0, ENG_GGML_Q5_1, ENG_GGML_Q8_0, ENG_GGML_Q4_K,
                                ENG_GGML_Q5_K, ENG_GGML_Q6_K, ENG_GGML_Q8_K, ENG_GGML_BF16};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const struct eng_qtype *qt = eng_qtype_ref(types[i]);
        uint32_t elems = 0, bytes = 0;
        CHECKF(qt != NULL, "type %d", types[i]);
        CHECK(eng_gguf_type_block((uint32_t)types[i], &elems, &bytes) == 0);
        CHECKF(qt && (int)elems == qt->block_elems && (int)bytes == qt->block_bytes,
               "type %d: kernels %d/%d, gguf %u/%u", types[i], qt ? qt->block_elems : -1,
               qt ? qt->block_bytes : -1, elems, bytes);
    }
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    run_seed = fresh_seed();
    printf("random seed %llu (QUANT_SEED=%llu repeats this run)\n", (unsigned long long)run_seed,
           (unsigned long long)run_seed);
    RUN(test_table);
    RUN(test_sizes_match_gguf);
    RUN(test_fp16_exhaustive);
    RUN(test_fp16_rounding);
    RUN(test_bf16);
    RUN(test_fixture);
    RUN(test_layout_by_hand);
    RUN(test_roundtrip);
    RUN(test_act_quantizers);
    RUN(test_vec_dot);
    return TEST_END();
}
