/*
 * gguf_write.c - builds GGUF v3 files in memory: the tests' (and tools') way to make models.
 *
 * Metadata is encoded as it is added, into one growing buffer; tensors are kept (name, shape,
 * type, a copy of the data) until finish lays out the file: header, metadata, tensor infos,
 * padding to the alignment, then each tensor's data padded to the alignment (except after the
 * last one, so that the file ends exactly where the last tensor does).
 *
 * The writer checks what makes a tensor valid (known type, 1..4 dimensions, row length a
 * multiple of the block size, data size matching the shape) but not metadata semantics:
 * duplicate keys and odd general.alignment values are written as given, so that tests can
 * build files the reader must refuse. Everything is encoded little-endian byte by byte.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A tensor waiting for finish. */
struct wtensor {
    char *name;                     /* owned copy */
    uint32_t type;                  /* ggml type id */
    uint32_t n_dims;                /* 1..4 */
    uint64_t ne[ENG_GGUF_MAX_DIMS]; /* dimensions; ne[0] is the row length */
    unsigned char *data;            /* owned copy of n_bytes bytes */
    uint64_t n_bytes;               /* eng_gguf_type_bytes(type, product of ne) */
};

struct eng_gguf_writer {
    struct ag_buf kv;        /* encoded metadata entries, in the order added */
    uint64_t n_kv;           /* entries in kv */
    struct wtensor *tensors; /* (n_tensors) in the order added */
    uint64_t n_tensors;      /* used entries of tensors */
    uint64_t cap_tensors;    /* allocated entries of tensors */
    uint32_t alignment;      /* data alignment used for the layout */
    struct ag_err err;       /* the first failure; err.code == 0 while all is well */
};

static void put_u32(struct ag_buf *b, uint32_t v)
{
    unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    ag_buf_append(b, p, sizeof(p));
}

static void put_u64(struct ag_buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_str(struct ag_buf *b, const char *s, size_t len)
{
    put_u64(b, len);
    ag_buf_append(b, s, len);
}

/* Appends one value of fixed-size type t, read from the host's layout at v. */
static void put_scalar(struct ag_buf *b, enum eng_gguf_vtype t, const void *v)
{
    switch (t) {
    case ENG_GGUF_U8:
    case ENG_GGUF_I8:
        ag_buf_append(b, v, 1);
        break;
    case ENG_GGUF_BOOL: {
        bool x;
        memcpy(&x, v, sizeof(x));
        ag_buf_putc(b, x ? 1 : 0);
        break;
    }
    case ENG_GGUF_U16:
    case ENG_GGUF_I16: {
        uint16_t x;
        memcpy(&x, v, sizeof(x));
        unsigned char p[2] = {(unsigned char)x, (unsigned char)(x >> 8)};
        ag_buf_append(b, p, 2);
        break;
    }
    case ENG_GGUF_U32:
    case ENG_GGUF_I32:
    case ENG_GGUF_F32: {
        uint32_t x;
        memcpy(&x, v, sizeof(x));
        put_u32(b, x);
        break;
    }
    case ENG_GGUF_U64:
    case ENG_GGUF_I64:
    case ENG_GGUF_F64: {
        uint64_t x;
        memcpy(&x, v, sizeof(x));
        put_u64(b, x);
        break;
    }
    default:
        break;
    }
}

/* Array elements are copied as laid out in the file, which holds for bool too. */
_Static_assert(sizeof(bool) == 1, "GGUF bools are one byte");

struct eng_gguf_writer *eng_gguf_writer_new(void)
{
    struct eng_gguf_writer *w = ag_calloc(1, sizeof(*w));
    ag_buf_init(&w->kv);
    w->alignment = ENG_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void eng_gguf_writer_free(struct eng_gguf_writer *w)
{
    if (!w) return;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    ag_buf_release(&w->kv);
    free(w);
}

/* Starts an entry: key and type. */
static void put_key(struct eng_gguf_writer *w, const char *key, enum eng_gguf_vtype t)
{
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, t);
    w->n_kv++;
}

static int add_scalar(struct eng_gguf_writer *w, const char *key, enum eng_gguf_vtype t,
                      const void *v)
{
    if (w->err.code) return w->err.code;
    put_key(w, key, t);
    put_scalar(&w->kv, t, v);
    return 0;
}

int eng_gguf_writer_add_u8(struct eng_gguf_writer *w, const char *key, uint8_t v)
{
    return add_scalar(w, key, ENG_GGUF_U8, &v);
}

int eng_gguf_writer_add_i8(struct eng_gguf_writer *w, const char *key, int8_t v)
{
    return add_scalar(w, key, ENG_GGUF_I8, &v);
}

int eng_gguf_writer_add_u16(struct eng_gguf_writer *w, const char *key, uint16_t v)
{
    return add_scalar(w, key, ENG_GGUF_U16, &v);
}

int eng_gguf_writer_add_i16(struct eng_gguf_writer *w, const char *key, int16_t v)
{
    return add_scalar(w, key, ENG_GGUF_I16, &v);
}

int eng_gguf_writer_add_u32(struct eng_gguf_writer *w, const char *key, uint32_t v)
{
    /* A usable alignment also shapes the layout; any other value is only recorded. */
    if (!w->err.code && strcmp(key, "general.alignment") == 0 && v != 0 && (v & (v - 1)) == 0 &&
        v <= ENG_GGUF_MAX_ALIGNMENT)
        w->alignment = v;
    return add_scalar(w, key, ENG_GGUF_U32, &v);
}

int eng_gguf_writer_add_i32(struct eng_gguf_writer *w, const char *key, int32_t v)
{
    return add_scalar(w, key, ENG_GGUF_I32, &v);
}

int eng_gguf_writer_add_f32(struct eng_gguf_writer *w, const char *key, float v)
{
    return add_scalar(w, key, ENG_GGUF_F32, &v);
}

int eng_gguf_writer_add_bool(struct eng_gguf_writer *w, const char *key, bool v)
{
    return add_scalar(w, key, ENG_GGUF_BOOL, &v);
}

int eng_gguf_writer_add_u64(struct eng_gguf_writer *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, ENG_GGUF_U64, &v);
}

int eng_gguf_writer_add_i64(struct eng_gguf_writer *w, const char *key, int64_t v)
{
    return add_scalar(w, key, ENG_GGUF_I64, &v);
}

int eng_gguf_writer_add_f64(struct eng_gguf_writer *w, const char *key, double v)
{
    return add_scalar(w, key, ENG_GGUF_F64, &v);
}

int eng_gguf_writer_add_str(struct eng_gguf_writer *w, const char *key, const char *s)
{
    return eng_gguf_writer_add_strn(w, key, s, strlen(s));
}

int eng_gguf_writer_add_strn(struct eng_gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (w->err.code) return w->err.code;
    put_key(w, key, ENG_GGUF_STRING);
    put_str(&w->kv, s, len);
    return 0;
}

int eng_gguf_writer_add_arr(struct eng_gguf_writer *w, const char *key,
                            enum eng_gguf_vtype elem_type, const void *elems, uint64_t n)
{
    size_t hs = eng__gguf_vtype_size((uint32_t)elem_type);

    if (w->err.code) return w->err.code;
    if (hs == 0)
        return ag_err_set(&w->err, AG_EINVAL,
                          "gguf writer: key '%s': eng_gguf_writer_add_arr takes numeric or bool "
                          "elements, not %s",
                          key, eng_gguf_vtype_name(elem_type));
    put_key(w, key, ENG_GGUF_ARRAY);
    put_u32(&w->kv, elem_type);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        put_scalar(&w->kv, elem_type, (const unsigned char *)elems + i * hs);
    return 0;
}

int eng_gguf_writer_add_arr_str(struct eng_gguf_writer *w, const char *key, const char *const *strs,
                                uint64_t n)
{
    if (w->err.code) return w->err.code;
    put_key(w, key, ENG_GGUF_ARRAY);
    put_u32(&w->kv, ENG_GGUF_STRING);
    put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, strs[i], strlen(strs[i]));
    return 0;
}

int eng_gguf_writer_add_tensor(struct eng_gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const int64_t *ne, const void *data, size_t n_bytes)
{
    uint32_t be;
    int64_t n = 1;

    if (w->err.code) return w->err.code;
    if (eng_gguf_type_block(type, &be, NULL) != 0)
        return ag_err_set(&w->err, AG_EINVAL, "gguf writer: tensor '%s': unknown type %" PRIu32,
                          name, type);
    if (n_dims < 1 || n_dims > ENG_GGUF_MAX_DIMS)
        return ag_err_set(&w->err, AG_EINVAL,
                          "gguf writer: tensor '%s': n_dims %" PRIu32 " is out of range (1..4)",
                          name, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || __builtin_mul_overflow(n, ne[d], &n) || n > ((int64_t)1 << 62))
            return ag_err_set(&w->err, AG_EINVAL,
                              "gguf writer: tensor '%s': bad dimension %" PRIu32 " (%" PRId64 ")",
                              name, d, ne[d]);
    }
    if (ne[0] % be != 0)
        return ag_err_set(&w->err, AG_EINVAL,
                          "gguf writer: tensor '%s': row length %" PRId64
                          " is not a multiple of the %s block size %" PRIu32,
                          name, ne[0], eng_gguf_type_name(type), be);
    uint64_t bytes = eng_gguf_type_bytes(type, n);
    if (bytes == 0 || bytes > SIZE_MAX || (data && n_bytes != bytes))
        return ag_err_set(
            &w->err, AG_EINVAL,
            "gguf writer: tensor '%s': %zu bytes of data given, the shape needs %" PRIu64, name,
            n_bytes, bytes);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return ag_err_set(&w->err, AG_EINVAL, "gguf writer: duplicate tensor name '%s'", name);

    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 16;
        w->tensors = ag_realloc(w->tensors, w->cap_tensors * sizeof(*w->tensors));
    }
    struct wtensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof(*t));
    t->name = ag_strdup(name);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < ENG_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? (uint64_t)ne[d] : 1;
    t->n_bytes = bytes;
    t->data = data ? ag_malloc((size_t)bytes) : ag_calloc(1, (size_t)bytes);
    if (data) memcpy(t->data, data, (size_t)bytes);
    return 0;
}

static void pad_to(struct ag_buf *b, size_t align)
{
    static const char zeros[64];
    size_t pad = (align - b->len % align) % align;
    while (pad > 0) {
        size_t k = pad < sizeof(zeros) ? pad : sizeof(zeros);
        ag_buf_append(b, zeros, k);
        pad -= k;
    }
}

int eng_gguf_writer_finish(struct eng_gguf_writer *w, void **buf, size_t *len, struct ag_err *err)
{
    struct ag_buf b;
    uint64_t offset = 0;

    *buf = NULL;
    *len = 0;
    if (w->err.code) return ag_err_set(err, w->err.code, "%s", w->err.msg);
    ag_buf_init(&b);
    ag_buf_append(&b, "GGUF", 4);
    put_u32(&b, ENG_GGUF_VERSION);
    put_u64(&b, w->n_tensors);
    put_u64(&b, w->n_kv);
    if (w->kv.len) ag_buf_append(&b, w->kv.data, w->kv.len);

    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        put_str(&b, t->name, strlen(t->name));
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, t->ne[d]);
        put_u32(&b, t->type);
        put_u64(&b, offset);
        offset += t->n_bytes;
        offset += (w->alignment - offset % w->alignment) % w->alignment;
    }
    if (w->n_tensors > 0) pad_to(&b, w->alignment);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        /* The data section starts aligned, so padding the whole buffer pads each offset. */
        if (i > 0) pad_to(&b, w->alignment);
        ag_buf_append(&b, w->tensors[i].data, (size_t)w->tensors[i].n_bytes);
    }
    *buf = ag_buf_detach(&b, len);
    return 0;
}

int eng_gguf_writer_write(struct eng_gguf_writer *w, const char *path, struct ag_err *err)
{
    void *buf;
    size_t len, done = 0;
    int rc = eng_gguf_writer_finish(w, &buf, &len, err);
    if (rc) return rc;

    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = ag_err_set(err, AG_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(buf);
        return rc;
    }
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = ag_err_set(err, AG_EIO, "%s: write failed: %s", path,
                            n < 0 ? strerror(errno) : "no progress");
            break;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0 && rc == 0)
        rc = ag_err_set(err, AG_EIO, "%s: close failed: %s", path, strerror(errno));
    free(buf);
    return rc;
}
