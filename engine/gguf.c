/*
 * gguf.c - reads GGUF v3 model files: header, metadata, tensor infos, and the lookups on them.
 *
 * Why this way: a model file is untrusted input that is also large (hundreds of MB). So the file
 * is mapped, not read; one forward pass over the header checks each field before it is used,
 * and nothing is allocated in proportion to a count until that count has been checked against
 * the bytes that remain (every entry takes a known minimum number of bytes). Allocations are
 * therefore bounded by a small multiple of the file size, and the hard limits in gguf.h bound
 * them further.
 *
 * Invariants after a successful open:
 *   - every string is copied into the pool, NUL-terminated; keys and tensor names are unique
 *     (checked with the same hash indexes that serve lookups);
 *   - every tensor has a known type, 1..4 dimensions of at least 1 element, a row length that
 *     is a multiple of its block size, an aligned offset, and data [offset, offset + n_bytes)
 *     inside the file and overlapping no other tensor's;
 *   - every numeric array's elements lie inside the file.
 *
 * Error messages name the file, then the entry ("metadata key 7 'general.name'", "tensor 12
 * 'blk.1.attn_q.weight'"), then what is wrong with which numbers.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Smallest possible encodings, used to refuse counts the remaining bytes cannot hold:
 * a metadata entry is a key length (8), a value type (4) and at least a one-byte value; a
 * tensor info is a name length (8), n_dims (4), one dimension (8), a type (4), an offset (8). */
#define KV_MIN_BYTES     13
#define TENSOR_MIN_BYTES 32
#define MAX_ELEMENTS     ((int64_t)1 << 62)

/* ---- type tables ---- */

/* Block geometry of each ggml type (from ggml's type traits and gguf-py's GGML_QUANT_SIZES). */
struct type_info {
    const char *name;     /* ggml's name for the type; NULL for an unused id */
    uint32_t block_elems; /* values per block */
    uint32_t block_bytes; /* bytes per block */
};

static const struct type_info type_table[ENG_GGML_TYPE_COUNT] = {
    [ENG_GGML_F32] = {"F32", 1, 4},
    [ENG_GGML_F16] = {"F16", 1, 2},
    [ENG_GGML_Q4_0] = {"Q4_0", 32, 18},
    [ENG_GGML_Q4_1] = {"Q4_1", 32, 20},
    [ENG_GGML_Q5_0] = {"Q5_0", 32, 22},
    [ENG_GGML_Q5_1] = {"Q5_1", 32, 24},
    [ENG_GGML_Q8_0] = {"Q8_0", 32, 34},
    [ENG_GGML_Q8_1] = {"Q8_1", 32, 36},
    [ENG_GGML_Q2_K] = {"Q2_K", 256, 84},
    [ENG_GGML_Q3_K] = {"Q3_K", 256, 110},
    [ENG_GGML_Q4_K] = {"Q4_K", 256, 144},
    [ENG_GGML_Q5_K] = {"Q5_K", 256, 176},
    [ENG_GGML_Q6_K] = {"Q6_K", 256, 210},
    [ENG_GGML_Q8_K] = {"Q8_K", 256, 292},
    [ENG_GGML_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [ENG_GGML_IQ2_XS] = {"IQ2_XS", 256, 74},
    [ENG_GGML_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [ENG_GGML_IQ1_S] = {"IQ1_S", 256, 50},
    [ENG_GGML_IQ4_NL] = {"IQ4_NL", 32, 18},
    [ENG_GGML_IQ3_S] = {"IQ3_S", 256, 110},
    [ENG_GGML_IQ2_S] = {"IQ2_S", 256, 82},
    [ENG_GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
    [ENG_GGML_I8] = {"I8", 1, 1},
    [ENG_GGML_I16] = {"I16", 1, 2},
    [ENG_GGML_I32] = {"I32", 1, 4},
    [ENG_GGML_I64] = {"I64", 1, 8},
    [ENG_GGML_F64] = {"F64", 1, 8},
    [ENG_GGML_IQ1_M] = {"IQ1_M", 256, 56},
    [ENG_GGML_BF16] = {"BF16", 1, 2},
    [ENG_GGML_TQ1_0] = {"TQ1_0", 256, 54},
    [ENG_GGML_TQ2_0] = {"TQ2_0", 256, 66},
};

static const char *const vtype_names[ENG_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Bytes of one element of a fixed-size value type; 0 for string and array. */
size_t eng__gguf_vtype_size(uint32_t t)
{
    switch (t) {
    case ENG_GGUF_U8:
    case ENG_GGUF_I8:
    case ENG_GGUF_BOOL:
        return 1;
    case ENG_GGUF_U16:
    case ENG_GGUF_I16:
        return 2;
    case ENG_GGUF_U32:
    case ENG_GGUF_I32:
    case ENG_GGUF_F32:
        return 4;
    case ENG_GGUF_U64:
    case ENG_GGUF_I64:
    case ENG_GGUF_F64:
        return 8;
    }
    return 0;
}

static bool vtype_is_int(uint32_t t)
{
    return t <= ENG_GGUF_I32 || t == ENG_GGUF_U64 || t == ENG_GGUF_I64;
}

static bool vtype_is_signed(uint32_t t)
{
    return t == ENG_GGUF_I8 || t == ENG_GGUF_I16 || t == ENG_GGUF_I32 || t == ENG_GGUF_I64;
}

const char *eng_gguf_type_name(uint32_t type)
{
    if (type < ENG_GGML_TYPE_COUNT && type_table[type].name) return type_table[type].name;
    return "unknown";
}

const char *eng_gguf_vtype_name(uint32_t vtype)
{
    return vtype < ENG_GGUF_VTYPE_COUNT ? vtype_names[vtype] : "unknown";
}

int eng_gguf_type_block(uint32_t type, uint32_t *block_elems, uint32_t *block_bytes)
{
    const struct type_info *ti = type < ENG_GGML_TYPE_COUNT ? &type_table[type] : NULL;
    bool known = ti && ti->name;

    if (block_elems) *block_elems = known ? ti->block_elems : 0;
    if (block_bytes) *block_bytes = known ? ti->block_bytes : 0;
    return known ? 0 : AG_EUNSUPPORTED;
}

uint64_t eng_gguf_type_bytes(uint32_t type, int64_t n_elements)
{
    uint32_t be, bb;
    uint64_t bytes;

    if (eng_gguf_type_block(type, &be, &bb) != 0 || n_elements < 0) return 0;
    if ((uint64_t)n_elements % be != 0) return 0;
    if (__builtin_mul_overflow((uint64_t)n_elements / be, (uint64_t)bb, &bytes)) return 0;
    return bytes;
}

/* ---- little-endian decoding (portable: no host byte order assumed) ---- */

static uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static float f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static double f64_from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

/* ---- string pool: strings packed back to back in chunks, freed with the handle ---- */

struct pool_chunk {
    struct pool_chunk *next; /* older chunk */
    size_t used;             /* bytes handed out */
    size_t cap;              /* bytes in data */
    char data[];
};

/* Copies n bytes and a NUL into the pool. chunk_bytes is the size of a new ordinary chunk; a
 * longer string gets a chunk of its own. */
static const char *pool_copy(struct pool_chunk **pool, size_t chunk_bytes, const void *s, size_t n)
{
    struct pool_chunk *c = *pool;

    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > chunk_bytes ? n + 1 : chunk_bytes;
        c = ag_malloc(sizeof(*c) + cap);
        c->used = 0;
        c->cap = cap;
        c->next = *pool;
        *pool = c;
    }
    char *p = c->data + c->used;
    memcpy(p, s, n);
    p[n] = '\0';
    c->used += n + 1;
    return p;
}

static void pool_free(struct pool_chunk *c)
{
    while (c) {
        struct pool_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- name index: open addressing over item indexes, keyed by a name field ---- */

/* The names live in the items themselves: item i's name is the `const char *` at
 * base + i * stride (the first field of struct eng_gguf_kv and struct eng_gguf_tensor). */
struct name_index {
    uint32_t *slots;  /* item index + 1, or 0 for an empty slot */
    uint64_t mask;    /* slot count - 1 (a power of two, at least twice the items) */
    const char *base; /* first item */
    size_t stride;    /* bytes between items */
};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *index_name(const struct name_index *ix, uint64_t i)
{
    const char *const *name = (const char *const *)(const void *)(ix->base + i * ix->stride);
    return *name;
}

static void index_init(struct name_index *ix, const void *base, size_t stride, uint64_t n)
{
    uint64_t slots = 8;
    while (slots < 2 * n) slots *= 2;
    ix->slots = ag_calloc(slots, sizeof(*ix->slots));
    ix->mask = slots - 1;
    ix->base = base;
    ix->stride = stride;
}

/* Finds name; returns its item index, or -1 after storing *slot_out (when not NULL) as the
 * empty slot where it would go. */
static int64_t index_find(const struct name_index *ix, const char *name, uint64_t *slot_out)
{
    if (!ix->slots) return -1;
    for (uint64_t s = hash_name(name) & ix->mask;; s = (s + 1) & ix->mask) {
        if (ix->slots[s] == 0) {
            if (slot_out) *slot_out = s;
            return -1;
        }
        if (strcmp(index_name(ix, ix->slots[s] - 1), name) == 0) return ix->slots[s] - 1;
    }
}

/* Adds item i (whose name must already be set); returns -1, or the index of an earlier item
 * with the same name (and then adds nothing). */
static int64_t index_add(struct name_index *ix, uint64_t i)
{
    uint64_t slot = 0;
    int64_t dup = index_find(ix, index_name(ix, i), &slot);
    if (dup < 0) ix->slots[slot] = (uint32_t)(i + 1);
    return dup;
}

/* ---- the handle ---- */

struct eng_gguf {
    char *name;                      /* path or caller's name, starts error messages */
    const unsigned char *base;       /* the file's bytes */
    size_t len;                      /* bytes at base */
    bool mapped;                     /* base is our mapping, unmapped on close */
    uint32_t version;                /* the header's version (3) */
    uint32_t alignment;              /* of the data section and of each tensor offset */
    size_t data_off;                 /* start of the data section, from base */
    uint64_t n_kv;                   /* entries in kvs */
    struct eng_gguf_kv *kvs;         /* (n_kv) in file order */
    uint64_t n_tensors;              /* entries in tensors */
    struct eng_gguf_tensor *tensors; /* (n_tensors) in file order */
    struct name_index kv_index;      /* key -> kvs index */
    struct name_index tensor_index;  /* name -> tensors index */
    struct pool_chunk *pool;         /* every string of the file, NUL-terminated */
    size_t pool_chunk_bytes;         /* size of an ordinary pool chunk */
};

/* ---- the parser ---- */

struct parser {
    struct eng_gguf *g; /* handle being filled */
    size_t pos;         /* next byte to read */
    char where[160];    /* the entry being read, e.g. "tensor 3 'output.weight'", or "" */
    struct ag_err *err; /* caller's, may be NULL */
};

/* Records an error as "<file>: <where>: <message>". Returns code. */
static int fail(struct parser *P, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parser *P, int code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (P->where[0]) return ag_err_set(P->err, code, "%s: %s: %s", P->g->name, P->where, msg);
    return ag_err_set(P->err, code, "%s: %s", P->g->name, msg);
}

static size_t remaining(const struct parser *P)
{
    return P->g->len - P->pos;
}

/* Checks that n more bytes exist for the field called what. */
static int need(struct parser *P, size_t n, const char *what)
{
    if (remaining(P) >= n) return 0;
    return fail(P, AG_EPARSE, "file truncated: %s needs %zu bytes but only %zu remain", what, n,
                remaining(P));
}

static int read_u32(struct parser *P, uint32_t *out, const char *what)
{
    int rc = need(P, 4, what);
    if (rc) return rc;
    *out = le32(P->g->base + P->pos);
    P->pos += 4;
    return 0;
}

static int read_u64(struct parser *P, uint64_t *out, const char *what)
{
    int rc = need(P, 8, what);
    if (rc) return rc;
    *out = le64(P->g->base + P->pos);
    P->pos += 8;
    return 0;
}

#define NO_ELEM UINT64_MAX

/* Reads a string (u64 length + bytes) into the pool. what names it in messages ("key",
 * "string"), preceded by "element <elem>" for an array element. The message is only formatted
 * on failure: a vocabulary has hundreds of thousands of strings. */
static int read_str(struct parser *P, struct eng_gguf_str *out, const char *what, uint64_t elem)
{
    char name[64];
    uint64_t n;

    if (remaining(P) < 8 || le64(P->g->base + P->pos) > remaining(P) - 8) {
        if (elem == NO_ELEM)
            snprintf(name, sizeof(name), "%s", what);
        else
            snprintf(name, sizeof(name), "element %" PRIu64 " %s", elem, what);
        if (remaining(P) < 8)
            return fail(P, AG_EPARSE, "file truncated: %s length needs 8 bytes but only %zu remain",
                        name, remaining(P));
        return fail(P, AG_EPARSE, "%s length %" PRIu64 " exceeds the remaining %zu bytes", name,
                    le64(P->g->base + P->pos), remaining(P) - 8);
    }
    n = le64(P->g->base + P->pos);
    P->pos += 8;
    out->s = pool_copy(&P->g->pool, P->g->pool_chunk_bytes, P->g->base + P->pos, (size_t)n);
    out->len = (size_t)n;
    P->pos += (size_t)n;
    return 0;
}

/* Reads a key or a tensor name: a string that must be non-empty and free of NUL bytes. */
static int read_name(struct parser *P, struct eng_gguf_str *out, const char *what)
{
    int rc = read_str(P, out, what, NO_ELEM);
    if (rc) return rc;
    if (out->len == 0) return fail(P, AG_EPARSE, "empty %s", what);
    if (strlen(out->s) != out->len)
        return fail(P, AG_EPARSE, "%s contains a NUL byte at position %zu", what, strlen(out->s));
    return 0;
}

/* Decodes one scalar of fixed-size type t at p into kv's value. */
static void decode_scalar(struct eng_gguf_kv *kv, uint32_t t, const unsigned char *p)
{
    switch (t) {
    case ENG_GGUF_U8:
    case ENG_GGUF_BOOL:
        kv->v.u64 = p[0];
        break;
    case ENG_GGUF_I8:
        kv->v.i64 = (int8_t)p[0];
        break;
    case ENG_GGUF_U16:
        kv->v.u64 = le16(p);
        break;
    case ENG_GGUF_I16:
        kv->v.i64 = (int16_t)le16(p);
        break;
    case ENG_GGUF_U32:
        kv->v.u64 = le32(p);
        break;
    case ENG_GGUF_I32:
        kv->v.i64 = (int32_t)le32(p);
        break;
    case ENG_GGUF_F32:
        kv->v.f64 = f32_from_bits(le32(p));
        break;
    case ENG_GGUF_U64:
        kv->v.u64 = le64(p);
        break;
    case ENG_GGUF_I64:
        kv->v.i64 = (int64_t)le64(p);
        break;
    case ENG_GGUF_F64:
        kv->v.f64 = f64_from_bits(le64(p));
        break;
    }
}

static int read_array(struct parser *P, struct eng_gguf_kv *kv)
{
    uint32_t et;
    uint64_t n;
    int rc;

    if ((rc = read_u32(P, &et, "array element type")) != 0) return rc;
    if (et == ENG_GGUF_ARRAY)
        return fail(P, AG_EUNSUPPORTED, "nested arrays (an array of arrays) are not supported");
    if (et >= ENG_GGUF_VTYPE_COUNT)
        return fail(P, AG_EPARSE, "array element type %" PRIu32 " is unknown", et);
    if ((rc = read_u64(P, &n, "array count")) != 0) return rc;
    kv->arr_type = (enum eng_gguf_vtype)et;
    kv->arr_n = n;

    if (et == ENG_GGUF_STRING) {
        /* Each string takes at least its 8-byte length. */
        if (n > remaining(P) / 8)
            return fail(P, AG_EPARSE,
                        "array count %" PRIu64 " exceeds the remaining %zu bytes (each string "
                        "takes at least 8 bytes)",
                        n, remaining(P));
        if (n > ENG_GGUF_MAX_STR_ARRAY)
            return fail(P, AG_ETOOBIG, "array of %" PRIu64 " strings exceeds the limit of %u", n,
                        ENG_GGUF_MAX_STR_ARRAY);
        struct eng_gguf_str *strs = ag_calloc(n ? n : 1, sizeof(*strs));
        kv->v.arr_str = strs; /* owned by the kv from here, freed on close */
        for (uint64_t i = 0; i < n; i++)
            if ((rc = read_str(P, &strs[i], "string", i)) != 0) return rc;
        return 0;
    }

    size_t es = eng__gguf_vtype_size(et);
    if (n > remaining(P) / es)
        return fail(P, AG_EPARSE,
                    "array count %" PRIu64 " exceeds the remaining %zu bytes (%s elements take "
                    "%zu bytes each)",
                    n, remaining(P), vtype_names[et], es);
    kv->v.raw = P->g->base + P->pos;
    if (et == ENG_GGUF_BOOL) {
        for (uint64_t i = 0; i < n; i++)
            if (kv->v.raw[i] > 1)
                return fail(P, AG_EPARSE, "bool element %" PRIu64 " has value %u (not 0 or 1)", i,
                            kv->v.raw[i]);
    }
    P->pos += (size_t)(n * es);
    return 0;
}

static int read_kv(struct parser *P, uint64_t i)
{
    struct eng_gguf_kv *kv = &P->g->kvs[i];
    struct eng_gguf_str key;
    uint32_t t;
    int rc;

    snprintf(P->where, sizeof(P->where), "metadata key %" PRIu64, i);
    if ((rc = read_name(P, &key, "key")) != 0) return rc;
    kv->key = key.s;
    kv->key_len = key.len;
    snprintf(P->where, sizeof(P->where), "metadata key %" PRIu64 " '%s'", i, kv->key);
    /* Added to the index now, so n_kv counts exactly the entries whose key is set. */
    P->g->n_kv = i + 1;
    int64_t dup = index_add(&P->g->kv_index, i);
    if (dup >= 0) return fail(P, AG_EPARSE, "duplicate key (also metadata key %" PRId64 ")", dup);

    if ((rc = read_u32(P, &t, "value type")) != 0) return rc;
    if (t >= ENG_GGUF_VTYPE_COUNT)
        return fail(P, AG_EPARSE, "value type %" PRIu32 " is unknown", t);
    kv->type = (enum eng_gguf_vtype)t;
    if (t == ENG_GGUF_STRING) return read_str(P, &kv->v.str, "string", NO_ELEM);
    if (t == ENG_GGUF_ARRAY) return read_array(P, kv);

    size_t es = eng__gguf_vtype_size(t);
    if ((rc = need(P, es, vtype_names[t])) != 0) return rc;
    decode_scalar(kv, t, P->g->base + P->pos);
    P->pos += es;
    if (t == ENG_GGUF_BOOL && kv->v.u64 > 1)
        return fail(P, AG_EPARSE, "bool has value %" PRIu64 " (not 0 or 1)", kv->v.u64);
    return 0;
}

/* Reads general.alignment if present (default 32). */
static int read_alignment(struct parser *P)
{
    const struct eng_gguf_kv *kv = eng_gguf_find_key(P->g, "general.alignment");

    P->g->alignment = ENG_GGUF_DEFAULT_ALIGNMENT;
    if (!kv) return 0;
    snprintf(P->where, sizeof(P->where), "metadata key %td 'general.alignment'", kv - P->g->kvs);
    if (kv->type != ENG_GGUF_U32)
        return fail(P, AG_EPARSE, "has type %s, expected u32", vtype_names[kv->type]);
    uint64_t a = kv->v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(P, AG_EPARSE, "alignment %" PRIu64 " is not a power of two", a);
    if (a > ENG_GGUF_MAX_ALIGNMENT)
        return fail(P, AG_ETOOBIG, "alignment %" PRIu64 " exceeds the limit of %u", a,
                    ENG_GGUF_MAX_ALIGNMENT);
    P->g->alignment = (uint32_t)a;
    return 0;
}

/* Reads tensor info i: name, shape, type, offset; checks the shape and computes the size. */
static int read_tensor_info(struct parser *P, uint64_t i)
{
    struct eng_gguf_tensor *t = &P->g->tensors[i];
    struct eng_gguf_str name;
    uint64_t dims[ENG_GGUF_MAX_DIMS];
    uint32_t n_dims, type, be, bb;
    int rc;

    snprintf(P->where, sizeof(P->where), "tensor %" PRIu64, i);
    if ((rc = read_name(P, &name, "name")) != 0) return rc;
    t->name = name.s;
    snprintf(P->where, sizeof(P->where), "tensor %" PRIu64 " '%s'", i, t->name);
    P->g->n_tensors = i + 1;
    int64_t dup = index_add(&P->g->tensor_index, i);
    if (dup >= 0) return fail(P, AG_EPARSE, "duplicate name (also tensor %" PRId64 ")", dup);

    if ((rc = read_u32(P, &n_dims, "n_dims")) != 0) return rc;
    if (n_dims < 1 || n_dims > ENG_GGUF_MAX_DIMS)
        return fail(P, AG_EPARSE, "n_dims %" PRIu32 " is out of range (1..%d)", n_dims,
                    ENG_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims; d++) {
        char what[32];
        snprintf(what, sizeof(what), "dimension %" PRIu32, d);
        if ((rc = read_u64(P, &dims[d], what)) != 0) return rc;
        if (dims[d] == 0) return fail(P, AG_EPARSE, "dimension %" PRIu32 " is 0", d);
    }
    if ((rc = read_u32(P, &type, "type")) != 0) return rc;
    if ((rc = read_u64(P, &t->offset, "offset")) != 0) return rc;

    /* The product is built up with an overflow check at each step. */
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (__builtin_mul_overflow(n, dims[d], &n) || n > (uint64_t)MAX_ELEMENTS) {
            char shape[128];
            int k = 0;
            for (uint32_t e = 0; e < n_dims; e++)
                k += snprintf(shape + k, sizeof(shape) - (size_t)k, "%s%" PRIu64, e ? " x " : "",
                              dims[e]);
            return fail(P, AG_ETOOBIG, "element count of %s exceeds 2^62", shape);
        }
    }
    for (uint32_t d = 0; d < ENG_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? (int64_t)dims[d] : 1;
    t->n_elements = (int64_t)n;

    if (eng_gguf_type_block(type, &be, &bb) != 0)
        return fail(P, AG_EUNSUPPORTED, "unknown tensor type %" PRIu32, type);
    t->type = (enum eng_ggml_type)type;
    if (dims[0] % be != 0)
        return fail(P, AG_EPARSE,
                    "row length %" PRIu64 " is not a multiple of the %s block size %" PRIu32,
                    dims[0], type_table[type].name, be);
    if (__builtin_mul_overflow(n / be, (uint64_t)bb, &t->n_bytes))
        return fail(P, AG_ETOOBIG, "size of %" PRIu64 " %s elements overflows", n,
                    type_table[type].name);
    return 0;
}

/* A tensor's data range, sorted by offset for the overlap check. */
struct span {
    uint64_t offset;  /* from the data section */
    uint64_t n_bytes; /* size */
    uint64_t idx;     /* tensor index */
};

static int cmp_span(const void *a, const void *b)
{
    uint64_t x = ((const struct span *)a)->offset, y = ((const struct span *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Places each tensor's data: aligned, inside the file, overlapping no other tensor. */
static int place_tensors(struct parser *P)
{
    struct eng_gguf *g = P->g;
    size_t align = g->alignment;

    /* pos <= len, and len is far below SIZE_MAX - align for any real object. */
    size_t pad = (align - P->pos % align) % align;
    if (pad > remaining(P) && g->n_tensors > 0) {
        P->where[0] = '\0';
        return fail(P, AG_EPARSE,
                    "file truncated: the data section would start at byte %zu, past the end of "
                    "the file (%zu bytes)",
                    P->pos + pad, g->len);
    }
    g->data_off = pad > remaining(P) ? g->len : P->pos + pad;

    size_t data_bytes = g->len - g->data_off;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        struct eng_gguf_tensor *t = &g->tensors[i];
        snprintf(P->where, sizeof(P->where), "tensor %" PRIu64 " '%s'", i, t->name);
        if (t->offset % align != 0)
            return fail(P, AG_EPARSE,
                        "data offset %" PRIu64 " is not a multiple of the alignment %zu", t->offset,
                        align);
        if (t->offset > data_bytes || t->n_bytes > data_bytes - t->offset)
            return fail(P, AG_EPARSE,
                        "data [offset %" PRIu64 ", size %" PRIu64
                        ") extends past the end of the file (%zu bytes)",
                        t->offset, t->n_bytes, g->len);
        t->data = g->base + g->data_off + t->offset;
    }

    if (g->n_tensors < 2) return 0;
    struct span *spans = ag_malloc(g->n_tensors * sizeof(*spans));
    for (uint64_t i = 0; i < g->n_tensors; i++)
        spans[i] = (struct span){g->tensors[i].offset, g->tensors[i].n_bytes, i};
    qsort(spans, g->n_tensors, sizeof(*spans), cmp_span);
    int rc = 0;
    for (uint64_t k = 1; k < g->n_tensors && rc == 0; k++) {
        const struct span *a = &spans[k - 1], *b = &spans[k];
        /* Both ranges are inside the file, so a->offset + a->n_bytes cannot overflow. */
        if (b->offset < a->offset + a->n_bytes) {
            snprintf(P->where, sizeof(P->where), "tensor %" PRIu64 " '%s'", b->idx,
                     g->tensors[b->idx].name);
            rc =
                fail(P, AG_EPARSE,
                     "data [offset %" PRIu64 ", size %" PRIu64 ") overlaps tensor %" PRIu64
                     " '%s' [offset %" PRIu64 ", size %" PRIu64 ")",
                     b->offset, b->n_bytes, a->idx, g->tensors[a->idx].name, a->offset, a->n_bytes);
        }
    }
    free(spans);
    return rc;
}

static int parse(struct parser *P)
{
    struct eng_gguf *g = P->g;
    uint64_t n_tensors, n_kv;
    uint32_t v;
    int rc;

    if ((rc = need(P, 4, "magic")) != 0) return rc;
    if (memcmp(g->base, "GGUF", 4) != 0)
        return fail(P, AG_EPARSE,
                    "not a GGUF file (magic bytes %02x %02x %02x %02x, expected \"GGUF\")",
                    g->base[0], g->base[1], g->base[2], g->base[3]);
    P->pos = 4;
    if ((rc = read_u32(P, &v, "version")) != 0) return rc;
    if (v == 1 || v == 2)
        return fail(P, AG_EUNSUPPORTED,
                    "GGUF version %" PRIu32 " is not supported (only version 3 is)", v);
    if (v == __builtin_bswap32(ENG_GGUF_VERSION))
        return fail(P, AG_EUNSUPPORTED, "big-endian GGUF files are not supported");
    if (v != ENG_GGUF_VERSION) return fail(P, AG_EUNSUPPORTED, "unknown GGUF version %" PRIu32, v);
    g->version = v;
    if ((rc = read_u64(P, &n_tensors, "n_tensors")) != 0) return rc;
    if ((rc = read_u64(P, &n_kv, "n_kv")) != 0) return rc;

    /* Counts are checked against the bytes left before anything is allocated for them. */
    if (n_kv > remaining(P) / KV_MIN_BYTES)
        return fail(P, AG_EPARSE,
                    "n_kv %" PRIu64 " cannot fit in the remaining %zu bytes (each metadata entry "
                    "takes at least %d bytes)",
                    n_kv, remaining(P), KV_MIN_BYTES);
    if (n_tensors > remaining(P) / TENSOR_MIN_BYTES)
        return fail(P, AG_EPARSE,
                    "n_tensors %" PRIu64 " cannot fit in the remaining %zu bytes (each tensor "
                    "info takes at least %d bytes)",
                    n_tensors, remaining(P), TENSOR_MIN_BYTES);
    if (n_kv > ENG_GGUF_MAX_KV)
        return fail(P, AG_ETOOBIG, "n_kv %" PRIu64 " exceeds the limit of %d", n_kv,
                    ENG_GGUF_MAX_KV);
    if (n_tensors > ENG_GGUF_MAX_TENSORS)
        return fail(P, AG_ETOOBIG, "n_tensors %" PRIu64 " exceeds the limit of %u", n_tensors,
                    ENG_GGUF_MAX_TENSORS);

    g->kvs = ag_calloc(n_kv ? n_kv : 1, sizeof(*g->kvs));
    index_init(&g->kv_index, g->kvs, sizeof(*g->kvs), n_kv);
    for (uint64_t i = 0; i < n_kv; i++)
        if ((rc = read_kv(P, i)) != 0) return rc;
    if ((rc = read_alignment(P)) != 0) return rc;

    P->where[0] = '\0';
    if (n_tensors > remaining(P) / TENSOR_MIN_BYTES)
        return fail(P, AG_EPARSE,
                    "n_tensors %" PRIu64 " cannot fit in the %zu bytes after the metadata (each "
                    "tensor info takes at least %d bytes)",
                    n_tensors, remaining(P), TENSOR_MIN_BYTES);
    g->tensors = ag_calloc(n_tensors ? n_tensors : 1, sizeof(*g->tensors));
    index_init(&g->tensor_index, g->tensors, sizeof(*g->tensors), n_tensors);
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((rc = read_tensor_info(P, i)) != 0) return rc;
    return place_tensors(P);
}

/* Stands in for the bytes of an empty file or buffer, so base is never NULL. */
static const unsigned char empty_file[1];

/* Builds a handle over len bytes at base and parses them; frees the handle on failure. */
static int open_bytes(const unsigned char *base, size_t len, bool mapped, const char *name,
                      struct eng_gguf **out, struct ag_err *err)
{
    struct eng_gguf *g = ag_calloc(1, sizeof(*g));
    struct parser P = {.g = g, .err = err};

    g->name = ag_strdup(name);
    g->base = base;
    g->len = len;
    g->mapped = mapped;
    /* Small files get small chunks; a big vocabulary fills 1 MiB chunks. */
    g->pool_chunk_bytes = len / 4 < 4096 ? 4096 : len / 4 > (1u << 20) ? (1u << 20) : len / 4;
    int rc = parse(&P);
    if (rc != 0) {
        eng_gguf_close(g);
        *out = NULL;
        return rc;
    }
    *out = g;
    return 0;
}

int eng_gguf_open_mem(const void *buf, size_t len, const char *name, struct eng_gguf **out,
                      struct ag_err *err)
{
    return open_bytes(buf ? buf : empty_file, buf ? len : 0, false, name ? name : "<memory>", out,
                      err);
}

void eng_gguf_drop_range(const struct eng_gguf *g, const void *p, size_t n)
{
    const uintptr_t base = (uintptr_t)g->base, lo = (uintptr_t)p, hi = lo + n;
    if (!g->mapped || lo < base || hi > base + g->len) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t first = (lo + page - 1) & ~(page - 1), last = hi & ~(page - 1);
    if (last > first) (void)madvise((void *)first, last - first, MADV_DONTNEED);
}

int eng_gguf_open(const char *path, struct eng_gguf **out, struct ag_err *err)
{
    struct stat st;
    void *base = NULL;

    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ag_err_set(err, errno == ENOENT ? AG_ENOTFOUND : AG_EIO, "%s: cannot open: %s", path,
                          strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ag_err_set(err, AG_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ag_err_set(err, AG_EIO, "%s: %s", path,
                          S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file");
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return ag_err_set(err, AG_ETOOBIG, "%s: file of %jd bytes cannot be mapped", path,
                          (intmax_t)st.st_size);
    }
    size_t len = (size_t)st.st_size;
    if (len > 0) {
        base = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            int e = errno;
            close(fd);
            return ag_err_set(err, AG_EIO, "%s: cannot map %zu bytes: %s", path, len, strerror(e));
        }
    }
    close(fd); /* the mapping keeps the file */
    if (len == 0) return open_bytes(empty_file, 0, false, path, out, err);
    return open_bytes(base, len, true, path, out, err);
}

void eng_gguf_close(struct eng_gguf *g)
{
    if (!g) return;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        struct eng_gguf_kv *kv = &g->kvs[i];
        if (kv->type == ENG_GGUF_ARRAY && kv->arr_type == ENG_GGUF_STRING)
            free((void *)kv->v.arr_str);
    }
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    pool_free(g->pool);
    if (g->mapped) munmap((void *)g->base, g->len);
    free(g->name);
    free(g);
}

/* ---- the file as a whole ---- */

const char *eng_gguf_name(const struct eng_gguf *g)
{
    return g->name;
}

uint32_t eng_gguf_version(const struct eng_gguf *g)
{
    return g->version;
}

uint32_t eng_gguf_alignment(const struct eng_gguf *g)
{
    return g->alignment;
}

const void *eng_gguf_base(const struct eng_gguf *g)
{
    return g->base;
}

size_t eng_gguf_file_bytes(const struct eng_gguf *g)
{
    return g->len;
}

size_t eng_gguf_data_offset(const struct eng_gguf *g)
{
    return g->data_off;
}

/* ---- metadata ---- */

uint64_t eng_gguf_n_kv(const struct eng_gguf *g)
{
    return g->n_kv;
}

const struct eng_gguf_kv *eng_gguf_kv_at(const struct eng_gguf *g, uint64_t i)
{
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const struct eng_gguf_kv *eng_gguf_find_key(const struct eng_gguf *g, const char *key)
{
    int64_t i = index_find(&g->kv_index, key, NULL);
    return i >= 0 ? &g->kvs[i] : NULL;
}

/* Finds key or reports it missing. */
static int lookup(const struct eng_gguf *g, const char *key, const struct eng_gguf_kv **kv,
                  struct ag_err *err)
{
    *kv = eng_gguf_find_key(g, key);
    if (*kv) return 0;
    return ag_err_set(err, AG_ENOTFOUND, "%s: metadata key '%s' not found", g->name, key);
}

static int wrong_type(const struct eng_gguf *g, const struct eng_gguf_kv *kv, const char *want,
                      struct ag_err *err)
{
    if (kv->type == ENG_GGUF_ARRAY)
        return ag_err_set(err, AG_EPARSE, "%s: metadata key '%s' is an array of %s, expected %s",
                          g->name, kv->key, vtype_names[kv->arr_type], want);
    return ag_err_set(err, AG_EPARSE, "%s: metadata key '%s' has type %s, expected %s", g->name,
                      kv->key, vtype_names[kv->type], want);
}

/* Finds an entry that must hold an integer. */
static int get_int(const struct eng_gguf *g, const char *key, const struct eng_gguf_kv **kv,
                   struct ag_err *err)
{
    int rc = lookup(g, key, kv, err);
    if (rc) return rc;
    if (!vtype_is_int((*kv)->type)) return wrong_type(g, *kv, "an integer", err);
    return 0;
}

static int out_of_range(const struct eng_gguf *g, const struct eng_gguf_kv *kv, const char *want,
                        struct ag_err *err)
{
    if (vtype_is_signed(kv->type))
        return ag_err_set(err, AG_EPARSE, "%s: metadata key '%s' value %" PRId64 " does not fit %s",
                          g->name, kv->key, kv->v.i64, want);
    return ag_err_set(err, AG_EPARSE, "%s: metadata key '%s' value %" PRIu64 " does not fit %s",
                      g->name, kv->key, kv->v.u64, want);
}

int eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = get_int(g, key, &kv, err);
    if (rc) return rc;
    bool neg = vtype_is_signed(kv->type) && kv->v.i64 < 0;
    uint64_t u = vtype_is_signed(kv->type) ? (uint64_t)kv->v.i64 : kv->v.u64;
    if (neg || u > UINT32_MAX) return out_of_range(g, kv, "u32", err);
    *out = (uint32_t)u;
    return 0;
}

int eng_gguf_get_u64(const struct eng_gguf *g, const char *key, uint64_t *out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = get_int(g, key, &kv, err);
    if (rc) return rc;
    if (vtype_is_signed(kv->type) && kv->v.i64 < 0) return out_of_range(g, kv, "u64", err);
    *out = vtype_is_signed(kv->type) ? (uint64_t)kv->v.i64 : kv->v.u64;
    return 0;
}

int eng_gguf_get_i64(const struct eng_gguf *g, const char *key, int64_t *out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = get_int(g, key, &kv, err);
    if (rc) return rc;
    if (vtype_is_signed(kv->type)) {
        *out = kv->v.i64;
        return 0;
    }
    if (kv->v.u64 > INT64_MAX) return out_of_range(g, kv, "i64", err);
    *out = (int64_t)kv->v.u64;
    return 0;
}

int eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc) return rc;
    if (kv->type != ENG_GGUF_F32 && kv->type != ENG_GGUF_F64)
        return wrong_type(g, kv, "a float", err);
    *out = (float)kv->v.f64;
    return 0;
}

int eng_gguf_get_bool(const struct eng_gguf *g, const char *key, bool *out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc) return rc;
    if (kv->type != ENG_GGUF_BOOL) return wrong_type(g, kv, "bool", err);
    *out = kv->v.u64 != 0;
    return 0;
}

int eng_gguf_get_str(const struct eng_gguf *g, const char *key, const char **s, size_t *len,
                     struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc) return rc;
    if (kv->type != ENG_GGUF_STRING) return wrong_type(g, kv, "string", err);
    *s = kv->v.str.s;
    if (len) *len = kv->v.str.len;
    return 0;
}

int eng_gguf_get_arr(const struct eng_gguf *g, const char *key, int elem_type,
                     const struct eng_gguf_kv **out, struct ag_err *err)
{
    const struct eng_gguf_kv *kv;
    char want[32];
    int rc = lookup(g, key, &kv, err);
    if (rc) return rc;
    if (elem_type < 0)
        snprintf(want, sizeof(want), "an array");
    else
        snprintf(want, sizeof(want), "an array of %s", eng_gguf_vtype_name((uint32_t)elem_type));
    if (kv->type != ENG_GGUF_ARRAY) return wrong_type(g, kv, want, err);
    if (elem_type >= 0 && kv->arr_type != (enum eng_gguf_vtype)elem_type)
        return wrong_type(g, kv, want, err);
    *out = kv;
    return 0;
}

int eng_gguf_arr_int(const struct eng_gguf_kv *kv, uint64_t i, int64_t *out)
{
    if (kv->type != ENG_GGUF_ARRAY || i >= kv->arr_n) return AG_EINVAL;
    const unsigned char *p = kv->v.raw + i * eng__gguf_vtype_size(kv->arr_type);
    switch (kv->arr_type) {
    case ENG_GGUF_U8:
    case ENG_GGUF_BOOL:
        *out = p[0];
        return 0;
    case ENG_GGUF_I8:
        *out = (int8_t)p[0];
        return 0;
    case ENG_GGUF_U16:
        *out = le16(p);
        return 0;
    case ENG_GGUF_I16:
        *out = (int16_t)le16(p);
        return 0;
    case ENG_GGUF_U32:
        *out = le32(p);
        return 0;
    case ENG_GGUF_I32:
        *out = (int32_t)le32(p);
        return 0;
    case ENG_GGUF_I64:
        *out = (int64_t)le64(p);
        return 0;
    case ENG_GGUF_U64:
        if (le64(p) > INT64_MAX) return AG_EINVAL;
        *out = (int64_t)le64(p);
        return 0;
    default:
        return AG_EINVAL;
    }
}

int eng_gguf_arr_float(const struct eng_gguf_kv *kv, uint64_t i, double *out)
{
    if (kv->type != ENG_GGUF_ARRAY || i >= kv->arr_n) return AG_EINVAL;
    if (kv->arr_type == ENG_GGUF_F32) {
        *out = f32_from_bits(le32(kv->v.raw + i * 4));
        return 0;
    }
    if (kv->arr_type == ENG_GGUF_F64) {
        *out = f64_from_bits(le64(kv->v.raw + i * 8));
        return 0;
    }
    return AG_EINVAL;
}

int eng_gguf_arr_str(const struct eng_gguf_kv *kv, uint64_t i, const struct eng_gguf_str **out)
{
    if (kv->type != ENG_GGUF_ARRAY || kv->arr_type != ENG_GGUF_STRING || i >= kv->arr_n)
        return AG_EINVAL;
    *out = &kv->v.arr_str[i];
    return 0;
}

/* ---- tensors ---- */

uint64_t eng_gguf_n_tensors(const struct eng_gguf *g)
{
    return g->n_tensors;
}

const struct eng_gguf_tensor *eng_gguf_tensor_at(const struct eng_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name)
{
    int64_t i = index_find(&g->tensor_index, name, NULL);
    return i >= 0 ? &g->tensors[i] : NULL;
}
