/*
 * test_gguf.c - unit tests of the GGUF reader and writer (engine/gguf.c, engine/gguf_write.c):
 * writer -> reader round trips of every metadata type and several tensor types, alignment,
 * files on disk, and hostile files, each refused with its exact message. Every prefix of a
 * small valid file is refused too, without a crash (run under ASan to mean it).
 *
 * Hostile files are built byte by byte with the small builder below (the writer only writes
 * valid tensors); valid ones come from the writer.
 */
#include "../engine/gguf.h"
#include "test.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a byte builder for hand-made files ---- */

static void b_u32(struct ag_buf *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) ag_buf_putc(b, (char)(v >> (8 * i)));
}

static void b_u64(struct ag_buf *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) ag_buf_putc(b, (char)(v >> (8 * i)));
}

static void b_str(struct ag_buf *b, const char *s)
{
    b_u64(b, strlen(s));
    ag_buf_puts(b, s);
}

static void b_zeros(struct ag_buf *b, size_t n)
{
    ag_buf_reserve(b, n);
    memset(b->data + b->len, 0, n + 1); /* the zeros and the buffer's terminating NUL */
    b->len += n;
}

static void b_pad(struct ag_buf *b, size_t align)
{
    b_zeros(b, (align - b->len % align) % align);
}

static void b_header(struct ag_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    ag_buf_init(b);
    ag_buf_append(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}

static void b_kv_u32(struct ag_buf *b, const char *key, uint32_t v)
{
    b_str(b, key);
    b_u32(b, ENG_GGUF_U32);
    b_u32(b, v);
}

/* A tensor info with n_dims dimensions from dims. */
static void b_tensor(struct ag_buf *b, const char *name, uint32_t n_dims, const uint64_t *dims,
                     uint32_t type, uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) b_u64(b, dims[d]);
    b_u32(b, type);
    b_u64(b, offset);
}

/* A file of one tensor info (no metadata), padded, then data_bytes of zeros. */
static void b_one_tensor(struct ag_buf *b, uint32_t n_dims, const uint64_t *dims, uint32_t type,
                         uint64_t offset, size_t data_bytes)
{
    b_header(b, 3, 1, 0);
    b_tensor(b, "w", n_dims, dims, type, offset);
    b_pad(b, 32);
    b_zeros(b, data_bytes);
}

/* Opens len bytes of b as "t.gguf" and checks the refusal: code and the exact message
 * ("t.gguf: " + want). The bytes are copied into a buffer of exactly len bytes so that ASan
 * sees any read past the end. */
static void expect_err_at(int line, const void *data, size_t len, int code, const char *want)
{
    struct ag_err err = {0};
    struct eng_gguf *g = (struct eng_gguf *)1;
    char full[600];
    void *copy = ag_malloc(len);

    if (len) memcpy(copy, data, len);
    snprintf(full, sizeof(full), "t.gguf: %s", want);
    int rc = eng_gguf_open_mem(copy, len, "t.gguf", &g, &err);
    if (rc != code || g != NULL || strcmp(err.msg, full) != 0 || err.code != code) {
        printf("  FAIL %s:%d: rc %d (want %d), message:\n    got  \"%s\"\n    want \"%s\"\n",
               __FILE__, line, rc, code, err.msg, full);
        test__cur_failed++;
    }
    eng_gguf_close(rc == 0 ? g : NULL);
    free(copy);
}

#define EXPECT_ERR(b, code, want) expect_err_at(__LINE__, (b)->data, (b)->len, (code), (want))

/* Same with a printf-style message. */
static void expect_errf_at(int line, const struct ag_buf *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void expect_errf_at(int line, const struct ag_buf *b, int code, const char *fmt, ...)
{
    char want[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    expect_err_at(line, b->data, b->len, code, want);
}

#define EXPECT_ERRF(b, code, ...) expect_errf_at(__LINE__, (b), (code), __VA_ARGS__)

/* ---- helpers for valid files ---- */

/* Deterministic bytes for tensor data. */
static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
}

/* Finishes w into a buffer (freeing w); returns NULL on failure. */
static void *finish(struct eng_gguf_writer *w, size_t *len)
{
    struct ag_err err = {0};
    void *buf = NULL;
    int rc = eng_gguf_writer_finish(w, &buf, len, &err);
    CHECKF(rc == 0, "%s", err.msg);
    eng_gguf_writer_free(w);
    return buf;
}

static struct eng_gguf *open_buf(const void *buf, size_t len)
{
    struct ag_err err = {0};
    struct eng_gguf *g = NULL;
    int rc = eng_gguf_open_mem(buf, len, "t.gguf", &g, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return g;
}

/* A small valid file: a few kinds of metadata and two tensors. */
static void *small_file(size_t *len)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    static const char *const toks[] = {"<s>", "a", "bc"};
    static const float scores[] = {0.0f, -1.5f, 2.25f};
    unsigned char q8[2 * 34];
    float f[4] = {1, 2, 3, 4};

    fill(q8, sizeof(q8), 7);
    eng_gguf_writer_add_str(w, "general.architecture", "llama");
    eng_gguf_writer_add_u32(w, "llama.block_count", 2);
    eng_gguf_writer_add_bool(w, "flag", true);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores, 3);
    eng_gguf_writer_add_tensor(w, "norm", ENG_GGML_F32, 1, (const int64_t[]){4}, f, sizeof(f));
    eng_gguf_writer_add_tensor(w, "q", ENG_GGML_Q8_0, 2, (const int64_t[]){32, 2}, q8, sizeof(q8));
    return finish(w, len);
}

/* ---- round trips ---- */

static void test_metadata_round_trip(void)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    static const uint8_t au8[] = {1, 2, 255};
    static const int8_t ai8[] = {-128, 0, 127};
    static const uint16_t au16[] = {0, 65535};
    static const int16_t ai16[] = {-32768, 32767};
    static const uint32_t au32[] = {7, 4000000000u};
    static const int32_t ai32[] = {-5, 2147483647};
    static const float af32[] = {0.5f, -1.25f, 1e30f};
    static const bool abool[] = {true, false, true};
    static const uint64_t au64[] = {1, UINT64_MAX};
    static const int64_t ai64[] = {INT64_MIN, 42};
    static const double af64[] = {3.141592653589793, -0.0};
    static const char *const astr[] = {"alpha", "", "gamma delta"};

    eng_gguf_writer_add_u8(w, "k.u8", 200);
    eng_gguf_writer_add_i8(w, "k.i8", -100);
    eng_gguf_writer_add_u16(w, "k.u16", 60000);
    eng_gguf_writer_add_i16(w, "k.i16", -30000);
    eng_gguf_writer_add_u32(w, "k.u32", 4000000000u);
    eng_gguf_writer_add_i32(w, "k.i32", -2000000000);
    eng_gguf_writer_add_f32(w, "k.f32", 1.5f);
    eng_gguf_writer_add_bool(w, "k.bool", true);
    eng_gguf_writer_add_str(w, "k.str", "hello");
    eng_gguf_writer_add_u64(w, "k.u64", (uint64_t)1 << 63 | 5);
    eng_gguf_writer_add_i64(w, "k.i64", -((int64_t)1 << 40));
    eng_gguf_writer_add_f64(w, "k.f64", 3.25);
    eng_gguf_writer_add_strn(w, "k.nul", "a\0b", 3);
    eng_gguf_writer_add_str(w, "k.empty", "");
    eng_gguf_writer_add_bool(w, "k.false", false);
    eng_gguf_writer_add_arr(w, "a.u8", ENG_GGUF_U8, au8, 3);
    eng_gguf_writer_add_arr(w, "a.i8", ENG_GGUF_I8, ai8, 3);
    eng_gguf_writer_add_arr(w, "a.u16", ENG_GGUF_U16, au16, 2);
    eng_gguf_writer_add_arr(w, "a.i16", ENG_GGUF_I16, ai16, 2);
    eng_gguf_writer_add_arr(w, "a.u32", ENG_GGUF_U32, au32, 2);
    eng_gguf_writer_add_arr(w, "a.i32", ENG_GGUF_I32, ai32, 2);
    eng_gguf_writer_add_arr(w, "a.f32", ENG_GGUF_F32, af32, 3);
    eng_gguf_writer_add_arr(w, "a.bool", ENG_GGUF_BOOL, abool, 3);
    eng_gguf_writer_add_arr(w, "a.u64", ENG_GGUF_U64, au64, 2);
    eng_gguf_writer_add_arr(w, "a.i64", ENG_GGUF_I64, ai64, 2);
    eng_gguf_writer_add_arr(w, "a.f64", ENG_GGUF_F64, af64, 2);
    eng_gguf_writer_add_arr_str(w, "a.str", astr, 3);
    eng_gguf_writer_add_arr(w, "a.empty", ENG_GGUF_I32, NULL, 0);
    eng_gguf_writer_add_arr_str(w, "a.empty_str", NULL, 0);
    size_t len;
    void *buf = finish(w, &len);
    struct eng_gguf *g = buf ? open_buf(buf, len) : NULL;
    if (!g) {
        free(buf);
        return;
    }

    struct ag_err err = {0};
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f32;
    bool b;
    const char *s;
    size_t slen;

    CHECK(eng_gguf_version(g) == 3);
    CHECK(eng_gguf_n_kv(g) == 29);
    CHECK(eng_gguf_n_tensors(g) == 0);
    CHECK(eng_gguf_alignment(g) == 32);
    CHECK_STR(eng_gguf_name(g), "t.gguf");
    CHECK_STR(eng_gguf_kv_at(g, 0)->key, "k.u8");
    CHECK_STR(eng_gguf_kv_at(g, 28)->key, "a.empty_str");
    CHECK(eng_gguf_kv_at(g, 29) == NULL);
    for (uint64_t i = 0; i < eng_gguf_n_kv(g); i++)
        CHECK(eng_gguf_find_key(g, eng_gguf_kv_at(g, i)->key) == eng_gguf_kv_at(g, i));
    CHECK(eng_gguf_find_key(g, "k.missing") == NULL);
    CHECK(eng_gguf_find_key(g, "") == NULL);

    /* Scalars, each read back with its natural getter. */
    CHECK(eng_gguf_get_u32(g, "k.u8", &u32, &err) == 0 && u32 == 200);
    CHECK(eng_gguf_get_i64(g, "k.i8", &i64, &err) == 0 && i64 == -100);
    CHECK(eng_gguf_get_u32(g, "k.u16", &u32, &err) == 0 && u32 == 60000);
    CHECK(eng_gguf_get_i64(g, "k.i16", &i64, &err) == 0 && i64 == -30000);
    CHECK(eng_gguf_get_u32(g, "k.u32", &u32, &err) == 0 && u32 == 4000000000u);
    CHECK(eng_gguf_get_i64(g, "k.i32", &i64, &err) == 0 && i64 == -2000000000);
    CHECK(eng_gguf_get_f32(g, "k.f32", &f32, &err) == 0 && f32 == 1.5f);
    CHECK(eng_gguf_get_bool(g, "k.bool", &b, &err) == 0 && b);
    CHECK(eng_gguf_get_bool(g, "k.false", &b, &err) == 0 && !b);
    CHECK(eng_gguf_get_str(g, "k.str", &s, &slen, &err) == 0 && slen == 5);
    CHECK_STR(s, "hello");
    CHECK(eng_gguf_get_u64(g, "k.u64", &u64, &err) == 0 && u64 == ((uint64_t)1 << 63 | 5));
    CHECK(eng_gguf_get_i64(g, "k.i64", &i64, &err) == 0 && i64 == -((int64_t)1 << 40));
    CHECK(eng_gguf_get_f32(g, "k.f64", &f32, &err) == 0 && f32 == 3.25f);
    CHECK(eng_gguf_get_str(g, "k.nul", &s, &slen, &err) == 0 && slen == 3 &&
          memcmp(s, "a\0b", 4) == 0);
    CHECK(eng_gguf_get_str(g, "k.empty", &s, NULL, &err) == 0 && s[0] == '\0');
    CHECK(eng_gguf_find_key(g, "k.f64")->v.f64 == 3.25);
    CHECK(eng_gguf_find_key(g, "k.i8")->type == ENG_GGUF_I8);

    /* Conversions that fit, and refusals that name file, key and types. */
    CHECK(eng_gguf_get_i64(g, "k.u32", &i64, &err) == 0 && i64 == 4000000000);
    CHECK(eng_gguf_get_u64(g, "k.u8", &u64, &err) == 0 && u64 == 200);
    CHECK(eng_gguf_get_u32(g, "k.i32", &u32, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.i32' value -2000000000 does not fit u32");
    CHECK(eng_gguf_get_u32(g, "k.u64", &u32, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.u64' value 9223372036854775813 does not fit u32");
    CHECK(eng_gguf_get_i64(g, "k.u64", &i64, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.u64' value 9223372036854775813 does not fit i64");
    CHECK(eng_gguf_get_u64(g, "k.i8", &u64, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.i8' value -100 does not fit u64");
    CHECK(eng_gguf_get_u32(g, "k.str", &u32, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.str' has type string, expected an integer");
    CHECK(eng_gguf_get_u32(g, "k.bool", &u32, &err) == AG_EPARSE);
    CHECK(eng_gguf_get_f32(g, "k.u32", &f32, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.u32' has type u32, expected a float");
    CHECK(eng_gguf_get_bool(g, "k.u8", &b, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.u8' has type u8, expected bool");
    CHECK(eng_gguf_get_str(g, "a.u8", &s, NULL, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'a.u8' is an array of u8, expected string");
    CHECK(eng_gguf_get_u32(g, "k.missing", &u32, &err) == AG_ENOTFOUND);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.missing' not found");

    /* Arrays. */
    const struct eng_gguf_kv *kv;
    const struct eng_gguf_str *str;
    double d;
    CHECK(eng_gguf_get_arr(g, "a.f32", ENG_GGUF_I32, &kv, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'a.f32' is an array of f32, expected an array of i32");
    CHECK(eng_gguf_get_arr(g, "k.u8", -1, &kv, &err) == AG_EPARSE);
    CHECK_STR(err.msg, "t.gguf: metadata key 'k.u8' has type u8, expected an array");
    CHECK(eng_gguf_get_arr(g, "a.nope", -1, &kv, &err) == AG_ENOTFOUND);

    static const struct {
        const char *key;
        uint64_t n;
        int64_t first, last;
    } ints[] = {
        {"a.u8", 3, 1, 255},         {"a.i8", 3, -128, 127},      {"a.u16", 2, 0, 65535},
        {"a.i16", 2, -32768, 32767}, {"a.u32", 2, 7, 4000000000}, {"a.i32", 2, -5, 2147483647},
        {"a.bool", 3, 1, 1},         {"a.i64", 2, INT64_MIN, 42},
    };
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        CHECKF(eng_gguf_get_arr(g, ints[k].key, -1, &kv, &err) == 0, "%s", ints[k].key);
        if (!kv) continue;
        CHECKF(kv->arr_n == ints[k].n, "%s", ints[k].key);
        CHECKF(eng_gguf_arr_int(kv, 0, &i64) == 0 && i64 == ints[k].first, "%s", ints[k].key);
        CHECKF(eng_gguf_arr_int(kv, kv->arr_n - 1, &i64) == 0 && i64 == ints[k].last, "%s",
               ints[k].key);
        CHECK(eng_gguf_arr_int(kv, kv->arr_n, &i64) == AG_EINVAL);
        CHECK(eng_gguf_arr_float(kv, 0, &d) == AG_EINVAL);
        CHECK(eng_gguf_arr_str(kv, 0, &str) == AG_EINVAL);
    }
    CHECK(eng_gguf_get_arr(g, "a.bool", ENG_GGUF_BOOL, &kv, &err) == 0);
    CHECK(eng_gguf_arr_int(kv, 1, &i64) == 0 && i64 == 0);
    CHECK(eng_gguf_get_arr(g, "a.u64", ENG_GGUF_U64, &kv, &err) == 0);
    CHECK(eng_gguf_arr_int(kv, 0, &i64) == 0 && i64 == 1);
    CHECK(eng_gguf_arr_int(kv, 1, &i64) == AG_EINVAL); /* UINT64_MAX does not fit */
    CHECK(eng_gguf_get_arr(g, "a.f32", ENG_GGUF_F32, &kv, &err) == 0 && kv->arr_n == 3);
    CHECK(eng_gguf_arr_float(kv, 0, &d) == 0 && d == 0.5);
    CHECK(eng_gguf_arr_float(kv, 1, &d) == 0 && d == -1.25);
    CHECK(eng_gguf_arr_float(kv, 2, &d) == 0 && (float)d == 1e30f);
    CHECK(eng_gguf_arr_float(kv, 3, &d) == AG_EINVAL);
    CHECK(eng_gguf_arr_int(kv, 0, &i64) == AG_EINVAL);
    CHECK(eng_gguf_get_arr(g, "a.f64", ENG_GGUF_F64, &kv, &err) == 0);
    CHECK(eng_gguf_arr_float(kv, 0, &d) == 0 && d == 3.141592653589793);
    CHECK(eng_gguf_arr_float(kv, 1, &d) == 0 && d == 0.0 && signbit(d));
    CHECK(eng_gguf_get_arr(g, "a.str", ENG_GGUF_STRING, &kv, &err) == 0 && kv->arr_n == 3);
    for (uint64_t i = 0; i < 3; i++) {
        CHECK(eng_gguf_arr_str(kv, i, &str) == 0);
        CHECK_STR(str->s, astr[i]);
        CHECK(str->len == strlen(astr[i]));
    }
    CHECK(eng_gguf_arr_str(kv, 3, &str) == AG_EINVAL);
    CHECK(eng_gguf_arr_int(kv, 0, &i64) == AG_EINVAL);
    CHECK(eng_gguf_get_arr(g, "a.empty", ENG_GGUF_I32, &kv, &err) == 0 && kv->arr_n == 0);
    CHECK(eng_gguf_arr_int(kv, 0, &i64) == AG_EINVAL);
    CHECK(eng_gguf_get_arr(g, "a.empty_str", ENG_GGUF_STRING, &kv, &err) == 0 && kv->arr_n == 0);
    CHECK(eng_gguf_arr_int(eng_gguf_find_key(g, "k.u8"), 0, &i64) == AG_EINVAL);

    eng_gguf_close(g);
    free(buf);
}

/* One tensor of each of several types, with its expected size. */
struct tcase {
    const char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[4];
    uint64_t n_bytes;
};

static const struct tcase tcases[] = {
    {"f32", ENG_GGML_F32, 2, {3, 2, 1, 1}, 24},
    {"f16", ENG_GGML_F16, 1, {7, 1, 1, 1}, 14},
    {"bf16", ENG_GGML_BF16, 2, {4, 3, 1, 1}, 24},
    {"q4_0", ENG_GGML_Q4_0, 2, {64, 2, 1, 1}, 4 * 18},
    {"q4_1", ENG_GGML_Q4_1, 1, {32, 1, 1, 1}, 20},
    {"q5_0", ENG_GGML_Q5_0, 2, {32, 3, 1, 1}, 3 * 22},
    {"q8_0", ENG_GGML_Q8_0, 3, {32, 2, 2, 1}, 4 * 34},
    {"q4_k", ENG_GGML_Q4_K, 2, {512, 1, 1, 1}, 2 * 144},
    {"q5_k", ENG_GGML_Q5_K, 1, {256, 1, 1, 1}, 176},
    {"q6_k", ENG_GGML_Q6_K, 2, {256, 3, 1, 1}, 3 * 210},
    {"i32", ENG_GGML_I32, 4, {2, 3, 1, 2}, 48},
};
#define N_TCASES (sizeof(tcases) / sizeof(tcases[0]))

/* Writes every tcase with alignment (0: default) and checks it reads back. */
static void round_trip_tensors(uint32_t alignment, bool via_file)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    unsigned char *data[N_TCASES];

    eng_gguf_writer_add_str(w, "general.architecture", "test");
    if (alignment) eng_gguf_writer_add_u32(w, "general.alignment", alignment);
    for (size_t i = 0; i < N_TCASES; i++) {
        data[i] = ag_malloc(tcases[i].n_bytes);
        fill(data[i], tcases[i].n_bytes, (uint32_t)i);
        int rc = eng_gguf_writer_add_tensor(w, tcases[i].name, tcases[i].type, tcases[i].n_dims,
                                            tcases[i].ne, data[i], tcases[i].n_bytes);
        CHECKF(rc == 0, "%s", tcases[i].name);
    }
    CHECK(eng_gguf_writer_add_tensor(w, "zeros", ENG_GGML_F32, 1, (const int64_t[]){5}, NULL, 0) ==
          0);

    struct eng_gguf *g = NULL;
    struct ag_err err = {0};
    void *buf = NULL;
    size_t len = 0;
    char dir[] = "/tmp/test_gguf.XXXXXX", path[64];
    if (via_file) {
        CHECK(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/m.gguf", dir);
        CHECKF(eng_gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
        eng_gguf_writer_free(w);
        CHECKF(eng_gguf_open(path, &g, &err) == 0, "%s", err.msg);
    } else {
        buf = finish(w, &len);
        g = open_buf(buf, len);
    }
    uint32_t align = alignment ? alignment : 32;
    if (g) {
        CHECK(eng_gguf_alignment(g) == align);
        CHECK(eng_gguf_n_tensors(g) == N_TCASES + 1);
        CHECK(eng_gguf_data_offset(g) % align == 0);
        for (size_t i = 0; i < N_TCASES; i++) {
            const struct eng_gguf_tensor *t = eng_gguf_find_tensor(g, tcases[i].name);
            CHECKF(t != NULL && t == eng_gguf_tensor_at(g, i), "%s", tcases[i].name);
            if (!t) continue;
            CHECK_STR(t->name, tcases[i].name);
            CHECK(t->type == tcases[i].type);
            CHECK(t->n_dims == tcases[i].n_dims);
            CHECK(memcmp(t->ne, tcases[i].ne, sizeof(t->ne)) == 0);
            CHECK(t->n_elements ==
                  tcases[i].ne[0] * tcases[i].ne[1] * tcases[i].ne[2] * tcases[i].ne[3]);
            CHECKF(t->n_bytes == tcases[i].n_bytes, "%s: %" PRIu64, t->name, t->n_bytes);
            CHECK(t->offset % align == 0);
            CHECK((const char *)t->data ==
                  (const char *)eng_gguf_base(g) + eng_gguf_data_offset(g) + t->offset);
            CHECK(memcmp(t->data, data[i], tcases[i].n_bytes) == 0);
            /* A mapping starts on a page, so data is aligned in memory too. */
            if (via_file) CHECK((uintptr_t)t->data % align == 0);
        }
        const struct eng_gguf_tensor *z = eng_gguf_find_tensor(g, "zeros");
        float last = 1;
        if (z) memcpy(&last, (const char *)z->data + 16, sizeof(last));
        CHECK(z && z->n_bytes == 20 && last == 0.0f);
        /* The file ends where the last tensor does. */
        CHECK(z && (const char *)z->data + z->n_bytes ==
                       (const char *)eng_gguf_base(g) + eng_gguf_file_bytes(g));
        CHECK(eng_gguf_find_tensor(g, "nope") == NULL);
        CHECK(eng_gguf_tensor_at(g, N_TCASES + 1) == NULL);
        /* Dropping a range from the resident set (or a borrowed buffer's, where nothing
         * happens) loses no byte: the pages come back from the file. */
        eng_gguf_drop_range(g, eng_gguf_base(g), eng_gguf_file_bytes(g));
        eng_gguf_drop_range(g, (const char *)eng_gguf_base(g) + 1, 1); /* no whole page */
        for (size_t i = 0; i < N_TCASES; i++) {
            const struct eng_gguf_tensor *t = eng_gguf_find_tensor(g, tcases[i].name);
            CHECKF(t && memcmp(t->data, data[i], tcases[i].n_bytes) == 0, "%s after the drop",
                   tcases[i].name);
        }
    }
    eng_gguf_close(g);
    free(buf);
    for (size_t i = 0; i < N_TCASES; i++) free(data[i]);
    if (via_file) {
        unlink(path);
        rmdir(dir);
    }
}

static void test_tensor_round_trip(void)
{
    round_trip_tensors(0, false);
}

static void test_alignment(void)
{
    round_trip_tensors(64, false);
    round_trip_tensors(1, false);
    round_trip_tensors(4096, false);
    round_trip_tensors(64, true);
}

static void test_type_tables(void)
{
    uint32_t be, bb;
    static const struct {
        uint32_t id;
        const char *name;
        uint32_t be, bb;
    } want[] = {
        {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
        {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
        {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
        {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
        {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {24, "I8", 1, 1},
        {25, "I16", 1, 2},      {26, "I32", 1, 4},      {27, "I64", 1, 8},
        {28, "F64", 1, 8},      {30, "BF16", 1, 2},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        CHECK_STR(eng_gguf_type_name(want[i].id), want[i].name);
        CHECKF(eng_gguf_type_block(want[i].id, &be, &bb) == 0 && be == want[i].be &&
                   bb == want[i].bb,
               "%s", want[i].name);
    }
    static const uint32_t unknown[] = {4, 5, 31, 32, 33, 36, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        CHECK(eng_gguf_type_block(unknown[i], &be, &bb) == AG_EUNSUPPORTED && be == 0 && bb == 0);
        CHECK_STR(eng_gguf_type_name(unknown[i]), "unknown");
    }
    CHECK(eng_gguf_type_block(ENG_GGML_Q4_K, NULL, NULL) == 0);
    CHECK(eng_gguf_type_bytes(ENG_GGML_Q4_K, 512) == 288);
    CHECK(eng_gguf_type_bytes(ENG_GGML_Q4_K, 300) == 0);
    CHECK(eng_gguf_type_bytes(ENG_GGML_F32, (int64_t)1 << 62) == 0); /* overflows */
    CHECK(eng_gguf_type_bytes(ENG_GGML_F32, -1) == 0);
    CHECK(eng_gguf_type_bytes(4, 32) == 0);
    CHECK_STR(eng_gguf_vtype_name(ENG_GGUF_STRING), "string");
    CHECK_STR(eng_gguf_vtype_name(ENG_GGUF_F64), "f64");
    CHECK_STR(eng_gguf_vtype_name(13), "unknown");
}

static void test_writer_refusals(void)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    struct ag_err err = {0};
    void *buf;
    size_t len;

    CHECK(eng_gguf_writer_add_tensor(w, "x", ENG_GGML_Q4_0, 1, (const int64_t[]){48}, NULL, 0) ==
          AG_EINVAL);
    /* The first failure sticks. */
    CHECK(eng_gguf_writer_add_u32(w, "k", 1) == AG_EINVAL);
    CHECK(eng_gguf_writer_finish(w, &buf, &len, &err) == AG_EINVAL && buf == NULL);
    CHECK_STR(err.msg,
              "gguf writer: tensor 'x': row length 48 is not a multiple of the Q4_0 block size 32");
    eng_gguf_writer_free(w);

    w = eng_gguf_writer_new();
    float f[2] = {0};
    CHECK(eng_gguf_writer_add_tensor(w, "x", ENG_GGML_F32, 1, (const int64_t[]){3}, f, sizeof(f)) ==
          AG_EINVAL);
    eng_gguf_writer_free(w);
    w = eng_gguf_writer_new();
    CHECK(eng_gguf_writer_add_tensor(w, "x", 4, 1, (const int64_t[]){32}, NULL, 0) == AG_EINVAL);
    eng_gguf_writer_free(w);
    w = eng_gguf_writer_new();
    CHECK(eng_gguf_writer_add_tensor(w, "x", ENG_GGML_F32, 5, (const int64_t[]){1, 1, 1, 1, 1},
                                     NULL, 0) == AG_EINVAL);
    eng_gguf_writer_free(w);
    w = eng_gguf_writer_new();
    CHECK(eng_gguf_writer_add_tensor(w, "x", ENG_GGML_F32, 1, (const int64_t[]){1}, NULL, 0) == 0);
    CHECK(eng_gguf_writer_add_tensor(w, "x", ENG_GGML_F32, 1, (const int64_t[]){1}, NULL, 0) ==
          AG_EINVAL);
    eng_gguf_writer_free(w);
    w = eng_gguf_writer_new();
    CHECK(eng_gguf_writer_add_arr(w, "a", ENG_GGUF_STRING, NULL, 0) == AG_EINVAL);
    CHECK(eng_gguf_writer_finish(w, &buf, &len, &err) == AG_EINVAL && buf == NULL);
    CHECK_STR(err.msg, "gguf writer: key 'a': eng_gguf_writer_add_arr takes numeric or bool "
                       "elements, not string");
    eng_gguf_writer_free(w);
    eng_gguf_writer_free(NULL);
}

/* ---- files on disk ---- */

static void test_files(void)
{
    char dir[] = "/tmp/test_gguf.XXXXXX";
    struct eng_gguf *g = (struct eng_gguf *)1;
    struct ag_err err = {0};
    char path[128], want[256];

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/missing.gguf", dir);
    CHECK(eng_gguf_open(path, &g, &err) == AG_ENOTFOUND && g == NULL);
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    CHECK_STR(err.msg, want);

    g = (struct eng_gguf *)1;
    CHECK(eng_gguf_open(dir, &g, &err) == AG_EIO && g == NULL);
    snprintf(want, sizeof(want), "%s: is a directory", dir);
    CHECK_STR(err.msg, want);

    snprintf(path, sizeof(path), "%s/empty.gguf", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) fclose(f);
    CHECK(eng_gguf_open(path, &g, &err) == AG_EPARSE && g == NULL);
    snprintf(want, sizeof(want), "%s: file truncated: magic needs 4 bytes but only 0 remain", path);
    CHECK_STR(err.msg, want);
    unlink(path);

    /* A small model on disk, opened twice at once. */
    size_t len;
    void *buf = small_file(&len);
    snprintf(path, sizeof(path), "%s/small.gguf", dir);
    f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, len, f) == len);
    if (f) fclose(f);
    struct eng_gguf *g2 = NULL;
    CHECKF(eng_gguf_open(path, &g, &err) == 0, "%s", err.msg);
    CHECKF(eng_gguf_open(path, &g2, &err) == 0, "%s", err.msg);
    if (g && g2) {
        CHECK(eng_gguf_file_bytes(g) == len);
        CHECK(memcmp(eng_gguf_base(g), buf, len) == 0);
        CHECK_STR(eng_gguf_name(g), path);
        const char *arch;
        CHECK(eng_gguf_get_str(g2, "general.architecture", &arch, NULL, &err) == 0);
        CHECK_STR(arch, "llama");
    }
    eng_gguf_close(g);
    eng_gguf_close(g2);
    eng_gguf_close(NULL);
    free(buf);
    unlink(path);
    rmdir(dir);
}

/* ---- hostile files ---- */

static void test_truncated_everywhere(void)
{
    size_t len;
    void *buf = small_file(&len);
    struct eng_gguf *g = open_buf(buf, len);
    CHECK(g != NULL);
    eng_gguf_close(g);

    /* Every proper prefix is refused as a parse error; a copy of exactly n bytes lets ASan
     * catch a read past the end. */
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        struct ag_err err = {0};
        unsigned char *copy = ag_malloc(n);
        memcpy(copy, buf, n);
        g = (struct eng_gguf *)1;
        int rc = eng_gguf_open_mem(copy, n, "t.gguf", &g, &err);
        if (rc != AG_EPARSE || g != NULL || strncmp(err.msg, "t.gguf: ", 8) != 0) {
            if (bad++ < 5) printf("  prefix %zu: rc %d: %s\n", n, rc, err.msg);
            if (rc == 0) eng_gguf_close(g);
        }
        free(copy);
    }
    CHECKF(bad == 0, "%d of %zu prefixes not refused properly", bad, len);

    /* A few exact messages along the way. */
    expect_err_at(__LINE__, buf, 2, AG_EPARSE,
                  "file truncated: magic needs 4 bytes but only 2 remain");
    expect_err_at(__LINE__, buf, 10, AG_EPARSE,
                  "file truncated: n_tensors needs 8 bytes but only 2 remain");
    expect_err_at(__LINE__, buf, 30, AG_EPARSE,
                  "n_kv 5 cannot fit in the remaining 6 bytes (each metadata entry takes at "
                  "least 13 bytes)");
    expect_err_at(__LINE__, buf, 100, AG_EPARSE,
                  "metadata key 1 'llama.block_count': file truncated: u32 needs 4 bytes but only "
                  "2 remain");
    char want[200];
    snprintf(want, sizeof(want),
             "tensor 1 'q': data [offset 32, size 68) extends past the end of the file (%zu "
             "bytes)",
             len - 1);
    expect_err_at(__LINE__, buf, len - 1, AG_EPARSE, want);
    free(buf);
}

static void test_bad_header(void)
{
    struct ag_buf b;

    b_header(&b, 3, 0, 0);
    memcpy(b.data, "GGML", 4);
    EXPECT_ERR(&b, AG_EPARSE, "not a GGUF file (magic bytes 47 47 4d 4c, expected \"GGUF\")");
    ag_buf_release(&b);

    b_header(&b, 2, 0, 0);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "GGUF version 2 is not supported (only version 3 is)");
    ag_buf_release(&b);
    b_header(&b, 1, 0, 0);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "GGUF version 1 is not supported (only version 3 is)");
    ag_buf_release(&b);
    b_header(&b, 0x03000000, 0, 0);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "big-endian GGUF files are not supported");
    ag_buf_release(&b);
    b_header(&b, 4, 0, 0);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "unknown GGUF version 4");
    ag_buf_release(&b);

    /* The smallest valid file: a header with no metadata and no tensors. */
    b_header(&b, 3, 0, 0);
    struct eng_gguf *g = open_buf(b.data, b.len);
    CHECK(g && eng_gguf_n_kv(g) == 0 && eng_gguf_n_tensors(g) == 0);
    CHECK(g && eng_gguf_data_offset(g) == 24);
    eng_gguf_close(g);
    ag_buf_release(&b);
}

static void test_huge_counts(void)
{
    struct ag_buf b;

    b_header(&b, 3, 1000000000000ull, 0);
    b_zeros(&b, 100);
    EXPECT_ERR(&b, AG_EPARSE,
               "n_tensors 1000000000000 cannot fit in the remaining 100 bytes (each tensor info "
               "takes at least 32 bytes)");
    ag_buf_release(&b);

    b_header(&b, 3, 0, UINT64_MAX);
    EXPECT_ERR(&b, AG_EPARSE,
               "n_kv 18446744073709551615 cannot fit in the remaining 0 bytes (each metadata "
               "entry takes at least 13 bytes)");
    ag_buf_release(&b);

    /* Enough bytes for the count, but past the limit. */
    b_header(&b, 3, 0, ENG_GGUF_MAX_KV + 1);
    b_zeros(&b, (ENG_GGUF_MAX_KV + 1) * 13);
    EXPECT_ERR(&b, AG_ETOOBIG, "n_kv 65537 exceeds the limit of 65536");
    ag_buf_release(&b);

    b_header(&b, 3, ENG_GGUF_MAX_TENSORS + 1, 0);
    b_zeros(&b, (ENG_GGUF_MAX_TENSORS + 1) * 32ull);
    EXPECT_ERR(&b, AG_ETOOBIG, "n_tensors 1048577 exceeds the limit of 1048576");
    ag_buf_release(&b);

    /* n_tensors fits the file but not what is left after the metadata. */
    b_header(&b, 3, 1, 1);
    b_str(&b, "k");
    b_u32(&b, ENG_GGUF_STRING);
    b_u64(&b, 30);
    b_zeros(&b, 30);
    b_zeros(&b, 10);
    EXPECT_ERR(&b, AG_EPARSE,
               "n_tensors 1 cannot fit in the 10 bytes after the metadata (each tensor info "
               "takes at least 32 bytes)");
    ag_buf_release(&b);
}

static void test_bad_strings(void)
{
    struct ag_buf b;

    b_header(&b, 3, 0, 1);
    b_u64(&b, UINT64_MAX);
    b_zeros(&b, 20);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0: key length 18446744073709551615 exceeds the remaining 20 bytes");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, ENG_GGUF_STRING);
    b_u64(&b, (uint64_t)1 << 63);
    b_zeros(&b, 7);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0 'k': string length 9223372036854775808 exceeds the remaining 7 "
               "bytes");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_u64(&b, 0);
    b_zeros(&b, 20);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0: empty key");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_u64(&b, 3);
    ag_buf_append(&b, "a\0b", 3);
    b_u32(&b, ENG_GGUF_U8);
    b_zeros(&b, 10);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0: key contains a NUL byte at position 1");
    ag_buf_release(&b);

    /* Truncated inside a fixed-size value. */
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, ENG_GGUF_U64);
    b_zeros(&b, 4);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0 'k': file truncated: u64 needs 8 bytes but only 4 "
               "remain");
    ag_buf_release(&b);
}

static void test_bad_values(void)
{
    struct ag_buf b;

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 99);
    b_zeros(&b, 8);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0 'k': value type 99 is unknown");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, ENG_GGUF_BOOL);
    ag_buf_putc(&b, 2);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0 'k': bool has value 2 (not 0 or 1)");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, ENG_GGUF_U32);
    b_u64(&b, (uint64_t)1 << 62);
    b_zeros(&b, 16);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0 'arr': array count 4611686018427387904 exceeds the remaining 16 "
               "bytes (u32 elements take 4 bytes each)");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, ENG_GGUF_STRING);
    b_u64(&b, UINT64_MAX);
    b_zeros(&b, 16);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0 'arr': array count 18446744073709551615 exceeds the remaining 16 "
               "bytes (each string takes at least 8 bytes)");
    ag_buf_release(&b);

    /* A string inside an array, too long. */
    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, ENG_GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ok");
    b_u64(&b, 1000);
    b_zeros(&b, 3);
    EXPECT_ERR(&b, AG_EPARSE,
               "metadata key 0 'arr': element 1 string length 1000 exceeds the remaining 3 "
               "bytes");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, 13);
    b_u64(&b, 1);
    b_zeros(&b, 8);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0 'arr': array element type 13 is unknown");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u64(&b, 1);
    b_zeros(&b, 16);
    EXPECT_ERR(&b, AG_EUNSUPPORTED,
               "metadata key 0 'arr': nested arrays (an array of arrays) are not supported");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, ENG_GGUF_ARRAY);
    b_u32(&b, ENG_GGUF_BOOL);
    b_u64(&b, 3);
    ag_buf_append(&b, "\x01\x00\x07", 3);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0 'arr': bool element 2 has value 7 (not 0 or 1)");
    ag_buf_release(&b);
}

static void test_duplicate_key(void)
{
    struct ag_buf b;

    b_header(&b, 3, 0, 3);
    b_kv_u32(&b, "a", 1);
    b_kv_u32(&b, "b", 2);
    b_kv_u32(&b, "a", 3);
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 2 'a': duplicate key (also metadata key 0)");
    ag_buf_release(&b);

    /* Same through the writer, which writes duplicates on purpose. */
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "general.name", "x");
    eng_gguf_writer_add_str(w, "general.name", "y");
    size_t len;
    void *buf = finish(w, &len);
    expect_err_at(__LINE__, buf, len, AG_EPARSE,
                  "metadata key 1 'general.name': duplicate key (also metadata key 0)");
    free(buf);
}

static void test_bad_alignment(void)
{
    struct ag_buf b;
    static const uint32_t bad[] = {0, 3, 48, 0x80000001u};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b_header(&b, 3, 0, 2);
        b_kv_u32(&b, "general.name.len", 1);
        b_kv_u32(&b, "general.alignment", bad[i]);
        EXPECT_ERRF(&b, AG_EPARSE,
                    "metadata key 1 'general.alignment': alignment %" PRIu32
                    " is not a power of two",
                    bad[i]);
        ag_buf_release(&b);
    }

    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 1u << 20);
    EXPECT_ERR(&b, AG_ETOOBIG,
               "metadata key 0 'general.alignment': alignment 1048576 exceeds the limit of 65536");
    ag_buf_release(&b);

    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, ENG_GGUF_STRING);
    b_str(&b, "32");
    EXPECT_ERR(&b, AG_EPARSE, "metadata key 0 'general.alignment': has type string, expected u32");
    ag_buf_release(&b);

    /* With alignment 16 an offset of 16 is fine; with the default 32 it is not. */
    b_header(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 16);
    b_tensor(&b, "w", 1, (const uint64_t[]){4}, ENG_GGML_F32, 16);
    b_pad(&b, 16);
    b_zeros(&b, 32);
    struct eng_gguf *g = open_buf(b.data, b.len);
    CHECK(g && eng_gguf_alignment(g) == 16 && eng_gguf_data_offset(g) % 16 == 0);
    eng_gguf_close(g);
    ag_buf_release(&b);
}

static void test_bad_shapes(void)
{
    struct ag_buf b;

    b_one_tensor(&b, 0, NULL, ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 0 'w': n_dims 0 is out of range (1..4)");
    ag_buf_release(&b);

    b_one_tensor(&b, 5, (const uint64_t[]){1, 1, 1, 1, 1}, ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 0 'w': n_dims 5 is out of range (1..4)");
    ag_buf_release(&b);

    b_one_tensor(&b, 2, (const uint64_t[]){4, 0}, ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 0 'w': dimension 1 is 0");
    ag_buf_release(&b);

    b_one_tensor(&b, 3, (const uint64_t[]){1ull << 32, 1ull << 32, 2}, ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_ETOOBIG,
               "tensor 0 'w': element count of 4294967296 x 4294967296 x 2 exceeds 2^62");
    ag_buf_release(&b);

    b_one_tensor(&b, 4, (const uint64_t[]){UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX},
                 ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_ETOOBIG,
               "tensor 0 'w': element count of 18446744073709551615 x 18446744073709551615 x "
               "18446744073709551615 x 18446744073709551615 exceeds 2^62");
    ag_buf_release(&b);

    /* 2^62 elements is allowed, but not 2^64 bytes of them. */
    b_one_tensor(&b, 2, (const uint64_t[]){1ull << 31, 1ull << 31}, ENG_GGML_F32, 0, 64);
    EXPECT_ERR(&b, AG_ETOOBIG, "tensor 0 'w': size of 4611686018427387904 F32 elements overflows");
    ag_buf_release(&b);

    b_one_tensor(&b, 1, (const uint64_t[]){32}, 4, 0, 64);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "tensor 0 'w': unknown tensor type 4");
    ag_buf_release(&b);
    b_one_tensor(&b, 1, (const uint64_t[]){32}, 12345, 0, 64);
    EXPECT_ERR(&b, AG_EUNSUPPORTED, "tensor 0 'w': unknown tensor type 12345");
    ag_buf_release(&b);

    b_one_tensor(&b, 2, (const uint64_t[]){48, 2}, ENG_GGML_Q4_0, 0, 64);
    EXPECT_ERR(&b, AG_EPARSE,
               "tensor 0 'w': row length 48 is not a multiple of the Q4_0 block "
               "size 32");
    ag_buf_release(&b);
    b_one_tensor(&b, 1, (const uint64_t[]){896}, ENG_GGML_Q4_K, 0, 4096);
    EXPECT_ERR(&b, AG_EPARSE,
               "tensor 0 'w': row length 896 is not a multiple of the Q4_K block "
               "size 256");
    ag_buf_release(&b);

    /* Truncated inside the dimensions. */
    b_header(&b, 3, 1, 0);
    b_str(&b, "w");
    b_u32(&b, 2);
    b_u64(&b, 4);
    b_u64(&b, 1);
    b_u32(&b, ENG_GGML_F32);
    b_zeros(&b, 7);
    EXPECT_ERR(&b, AG_EPARSE,
               "tensor 0 'w': file truncated: offset needs 8 bytes but only 7 "
               "remain");
    ag_buf_release(&b);

    b_header(&b, 3, 1, 0);
    b_u64(&b, 0);
    b_zeros(&b, 40);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 0: empty name");
    ag_buf_release(&b);
}

static void test_bad_placement(void)
{
    struct ag_buf b;
    size_t len;

    b_one_tensor(&b, 1, (const uint64_t[]){4}, ENG_GGML_F32, 1024, 16);
    EXPECT_ERRF(&b, AG_EPARSE,
                "tensor 0 'w': data [offset 1024, size 16) extends past the end of the file (%zu "
                "bytes)",
                b.len);
    ag_buf_release(&b);

    /* An offset that would wrap around when added to the size. */
    b_one_tensor(&b, 1, (const uint64_t[]){64}, ENG_GGML_F32, UINT64_MAX - 31, 16);
    EXPECT_ERRF(&b, AG_EPARSE,
                "tensor 0 'w': data [offset 18446744073709551584, size 256) extends past the "
                "end of the file (%zu bytes)",
                b.len);
    ag_buf_release(&b);

    b_one_tensor(&b, 1, (const uint64_t[]){4}, ENG_GGML_F32, 4, 64);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 0 'w': data offset 4 is not a multiple of the alignment 32");
    ag_buf_release(&b);

    b_one_tensor(&b, 1, (const uint64_t[]){64}, ENG_GGML_F32, 0, 100);
    len = b.len;
    EXPECT_ERRF(&b, AG_EPARSE,
                "tensor 0 'w': data [offset 0, size 256) extends past the end of the file (%zu "
                "bytes)",
                len);
    ag_buf_release(&b);

    /* The tensor infos end unaligned and the file ends with them. */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "w", 1, (const uint64_t[]){1}, ENG_GGML_F32, 0);
    len = b.len; /* 24 + 33 = 57 */
    EXPECT_ERRF(&b, AG_EPARSE,
                "file truncated: the data section would start at byte 64, past the end of the "
                "file (%zu bytes)",
                len);
    ag_buf_release(&b);

    b_header(&b, 3, 3, 0);
    b_tensor(&b, "a", 1, (const uint64_t[]){16}, ENG_GGML_F32, 0);
    b_tensor(&b, "c", 1, (const uint64_t[]){8}, ENG_GGML_F32, 128);
    b_tensor(&b, "b", 1, (const uint64_t[]){16}, ENG_GGML_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    EXPECT_ERR(&b, AG_EPARSE,
               "tensor 2 'b': data [offset 32, size 64) overlaps tensor 0 'a' [offset 0, size "
               "64)");
    ag_buf_release(&b);

    b_header(&b, 3, 2, 0);
    b_tensor(&b, "w", 1, (const uint64_t[]){8}, ENG_GGML_F32, 0);
    b_tensor(&b, "w", 1, (const uint64_t[]){8}, ENG_GGML_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 64);
    EXPECT_ERR(&b, AG_EPARSE, "tensor 1 'w': duplicate name (also tensor 0)");
    ag_buf_release(&b);

    /* Tensors out of file order and back to back are fine. */
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "hi", 1, (const uint64_t[]){8}, ENG_GGML_F32, 32);
    b_tensor(&b, "lo", 1, (const uint64_t[]){8}, ENG_GGML_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 64);
    struct eng_gguf *g = open_buf(b.data, b.len);
    CHECK(g && eng_gguf_find_tensor(g, "lo")->offset == 0);
    eng_gguf_close(g);
    ag_buf_release(&b);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_metadata_round_trip);
    RUN(test_tensor_round_trip);
    RUN(test_alignment);
    RUN(test_type_tables);
    RUN(test_writer_refusals);
    RUN(test_files);
    RUN(test_truncated_everywhere);
    RUN(test_bad_header);
    RUN(test_huge_counts);
    RUN(test_bad_strings);
    RUN(test_bad_values);
    RUN(test_duplicate_key);
    RUN(test_bad_alignment);
    RUN(test_bad_shapes);
    RUN(test_bad_placement);
    return TEST_END();
}
