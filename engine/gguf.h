/*
 * gguf.h - the engine's GGUF v3 model file reader (gguf.c) and a small writer (gguf_write.c).
 *
 * A GGUF file is a header ("GGUF", version 3, tensor count, metadata count), typed metadata
 * key/value pairs, one info record per tensor (name, shape, ggml type, offset) and a data
 * section that starts at the next multiple of `general.alignment` (default 32) after the infos.
 * All numbers are little-endian.
 *
 * The reader maps the file read-only (MAP_PRIVATE) or borrows a caller's buffer, checks every
 * count, length, offset and size against the bytes that are really there (a hostile file gets
 * an error naming the entry at fault, never a crash or a huge allocation), and then answers
 * lookups. Tensor data is never copied: `struct eng_gguf_tensor.data` points into the mapping.
 *
 * Strings: every key, tensor name and string value (array elements included) is copied once at
 * load into a string pool owned by the handle, NUL-terminated, with its length kept beside it
 * (a value may contain NUL bytes; keys and tensor names may not). Numeric arrays are not copied:
 * their elements are read from the mapping by the eng_gguf_arr_* accessors.
 *
 * Lifetimes: everything a getter returns lives until eng_gguf_close(). A handle from
 * eng_gguf_open_mem() borrows the buffer, which must outlive the handle. A handle is read-only
 * after open, so any number of threads may use it at once.
 *
 * Limits (beyond "must fit in the file"): at most ENG_GGUF_MAX_KV metadata entries,
 * ENG_GGUF_MAX_TENSORS tensors, ENG_GGUF_MAX_STR_ARRAY strings per array, 1..4 dimensions,
 * 2^62 elements per tensor, alignment a power of two up to ENG_GGUF_MAX_ALIGNMENT. Nested
 * arrays (an array of arrays) are refused as unsupported; no known model file uses them.
 */
#ifndef ENG_GGUF_H
#define ENG_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

#define ENG_GGUF_VERSION           3
#define ENG_GGUF_DEFAULT_ALIGNMENT 32
#define ENG_GGUF_MAX_ALIGNMENT     65536
#define ENG_GGUF_MAX_DIMS          4
#define ENG_GGUF_MAX_KV            65536
#define ENG_GGUF_MAX_TENSORS       (1u << 20)
#define ENG_GGUF_MAX_STR_ARRAY     (1u << 24)

/* Metadata value types, numbered as in the file. */
enum eng_gguf_vtype {
    ENG_GGUF_U8 = 0,
    ENG_GGUF_I8 = 1,
    ENG_GGUF_U16 = 2,
    ENG_GGUF_I16 = 3,
    ENG_GGUF_U32 = 4,
    ENG_GGUF_I32 = 5,
    ENG_GGUF_F32 = 6,
    ENG_GGUF_BOOL = 7, /* one byte, 0 or 1 */
    ENG_GGUF_STRING = 8,
    ENG_GGUF_ARRAY = 9,
    ENG_GGUF_U64 = 10,
    ENG_GGUF_I64 = 11,
    ENG_GGUF_F64 = 12,
    ENG_GGUF_VTYPE_COUNT
};

/* ggml tensor types, numbered as in the file (ggml's enum ggml_type). Ids 4, 5 and 31..33 were
 * removed from ggml and are refused like any other unknown id. */
enum eng_ggml_type {
    ENG_GGML_F32 = 0,
    ENG_GGML_F16 = 1,
    ENG_GGML_Q4_0 = 2,
    ENG_GGML_Q4_1 = 3,
    ENG_GGML_Q5_0 = 6,
    ENG_GGML_Q5_1 = 7,
    ENG_GGML_Q8_0 = 8,
    ENG_GGML_Q8_1 = 9,
    ENG_GGML_Q2_K = 10,
    ENG_GGML_Q3_K = 11,
    ENG_GGML_Q4_K = 12,
    ENG_GGML_Q5_K = 13,
    ENG_GGML_Q6_K = 14,
    ENG_GGML_Q8_K = 15,
    ENG_GGML_IQ2_XXS = 16,
    ENG_GGML_IQ2_XS = 17,
    ENG_GGML_IQ3_XXS = 18,
    ENG_GGML_IQ1_S = 19,
    ENG_GGML_IQ4_NL = 20,
    ENG_GGML_IQ3_S = 21,
    ENG_GGML_IQ2_S = 22,
    ENG_GGML_IQ4_XS = 23,
    ENG_GGML_I8 = 24,
    ENG_GGML_I16 = 25,
    ENG_GGML_I32 = 26,
    ENG_GGML_I64 = 27,
    ENG_GGML_F64 = 28,
    ENG_GGML_IQ1_M = 29,
    ENG_GGML_BF16 = 30,
    ENG_GGML_TQ1_0 = 34,
    ENG_GGML_TQ2_0 = 35,
    ENG_GGML_TYPE_COUNT = 36 /* one past the largest id known here */
};

/* A string from the file. */
struct eng_gguf_str {
    const char *s; /* NUL-terminated copy in the handle's string pool */
    size_t len;    /* bytes, excluding the terminating NUL; s may hold NULs before it */
};

/* One metadata entry. Scalars are decoded at load; arrays keep their elements where they are. */
struct eng_gguf_kv {
    const char *key;              /* NUL-terminated, non-empty, no NUL bytes inside */
    size_t key_len;               /* strlen(key) */
    enum eng_gguf_vtype type;     /* the value's type */
    enum eng_gguf_vtype arr_type; /* element type when type == ENG_GGUF_ARRAY (never ARRAY) */
    uint64_t arr_n;               /* element count when type == ENG_GGUF_ARRAY */
    union {
        uint64_t u64;                       /* U8, U16, U32, U64, BOOL (0 or 1) */
        int64_t i64;                        /* I8, I16, I32, I64 */
        double f64;                         /* F32 (exactly), F64 */
        struct eng_gguf_str str;            /* STRING */
        const unsigned char *raw;           /* numeric or bool array: little-endian elements
                                               in the file, possibly unaligned */
        const struct eng_gguf_str *arr_str; /* string array: arr_n strings */
    } v;
};

/* One tensor. Unused dimensions have ne = 1. */
struct eng_gguf_tensor {
    const char *name;              /* NUL-terminated, non-empty, no NUL bytes inside */
    enum eng_ggml_type type;       /* a type eng_gguf_type_block() knows */
    uint32_t n_dims;               /* 1..4 */
    int64_t ne[ENG_GGUF_MAX_DIMS]; /* elements per dimension; ne[0] is the row (fastest) */
    int64_t n_elements;            /* product of ne, at most 2^62 */
    uint64_t n_bytes;              /* size of the data in the file */
    uint64_t offset;               /* from the start of the data section, alignment-aligned */
    const void *data;              /* n_bytes inside the mapping or the caller's buffer */
};

struct eng_gguf; /* an open file, opaque */

/* ---- open and close ---- */

/* Maps path and parses it. Errors: AG_ENOTFOUND (no such file), AG_EIO (cannot open, map or
 * not a regular file), AG_EPARSE (malformed), AG_EUNSUPPORTED (version, nested arrays, tensor
 * type), AG_ETOOBIG (past a limit above); err's message starts with the path. */
int eng_gguf_open(const char *path, struct eng_gguf **out, struct ag_err *err);
/* Parses len bytes at buf, which must stay valid and unchanged until eng_gguf_close(); name
 * (NULL: "<memory>") starts error messages. Same errors as eng_gguf_open() but no AG_EIO. */
int eng_gguf_open_mem(const void *buf, size_t len, const char *name, struct eng_gguf **out,
                      struct ag_err *err);
/* Tells the kernel that the bytes [p, p + n) of g's data will not be read again: the whole
 * pages among them leave the process's resident set (a later read maps them in again from the
 * page cache). For a weight whose repacked copy replaces it. Nothing happens for a borrowed
 * buffer (eng_gguf_open_mem). */
void eng_gguf_drop_range(const struct eng_gguf *g, const void *p, size_t n);
void eng_gguf_close(struct eng_gguf *g); /* NULL is fine */

/* ---- the file as a whole ---- */

const char *eng_gguf_name(const struct eng_gguf *g);   /* path or name given to open */
uint32_t eng_gguf_version(const struct eng_gguf *g);   /* always 3 */
uint32_t eng_gguf_alignment(const struct eng_gguf *g); /* general.alignment or 32 */
const void *eng_gguf_base(const struct eng_gguf *g);   /* first byte of the file */
size_t eng_gguf_file_bytes(const struct eng_gguf *g);
size_t eng_gguf_data_offset(const struct eng_gguf *g); /* where the data section starts */

/* ---- metadata ---- */

uint64_t eng_gguf_n_kv(const struct eng_gguf *g);
/* Entry i (in file order), or NULL when i >= eng_gguf_n_kv(). */
const struct eng_gguf_kv *eng_gguf_kv_at(const struct eng_gguf *g, uint64_t i);
/* The entry named key, or NULL. */
const struct eng_gguf_kv *eng_gguf_find_key(const struct eng_gguf *g, const char *key);

/* Typed getters. Each returns 0 and sets *out, AG_ENOTFOUND when the key is absent (so an
 * optional key is "rc == AG_ENOTFOUND"), or AG_EPARSE when the value has another type or does
 * not fit; err names the file, key and both types. Integer getters accept any integer type
 * whose value fits; get_f32 accepts F32 and F64; get_bool only BOOL; get_str only STRING. */
int eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out, struct ag_err *err);
int eng_gguf_get_u64(const struct eng_gguf *g, const char *key, uint64_t *out, struct ag_err *err);
int eng_gguf_get_i64(const struct eng_gguf *g, const char *key, int64_t *out, struct ag_err *err);
int eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out, struct ag_err *err);
int eng_gguf_get_bool(const struct eng_gguf *g, const char *key, bool *out, struct ag_err *err);
/* *s is NUL-terminated; len (may be NULL) receives its length. */
int eng_gguf_get_str(const struct eng_gguf *g, const char *key, const char **s, size_t *len,
                     struct ag_err *err);
/* An array entry whose elements have type elem_type (-1: any). Read its elements with the
 * eng_gguf_arr_* accessors; (*out)->arr_n is the count. */
int eng_gguf_get_arr(const struct eng_gguf *g, const char *key, int elem_type,
                     const struct eng_gguf_kv **out, struct ag_err *err);

/* Element i of an array entry. Each returns 0, or AG_EINVAL when kv is not an array of a
 * suitable type or i >= kv->arr_n. arr_int: integer (and bool) arrays, u64 values above
 * INT64_MAX are AG_EINVAL; arr_float: F32 and F64 arrays; arr_str: string arrays. */
int eng_gguf_arr_int(const struct eng_gguf_kv *kv, uint64_t i, int64_t *out);
int eng_gguf_arr_float(const struct eng_gguf_kv *kv, uint64_t i, double *out);
int eng_gguf_arr_str(const struct eng_gguf_kv *kv, uint64_t i, const struct eng_gguf_str **out);

/* ---- tensors ---- */

uint64_t eng_gguf_n_tensors(const struct eng_gguf *g);
/* Tensor i (in file order), or NULL when i >= eng_gguf_n_tensors(). */
const struct eng_gguf_tensor *eng_gguf_tensor_at(const struct eng_gguf *g, uint64_t i);
/* The tensor named name (a hash lookup), or NULL. */
const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name);

/* ---- types ---- */

/* "Q4_K", "F32", ... or "unknown". */
const char *eng_gguf_type_name(uint32_t type);
/* "u8", "string", "array", ... or "unknown". */
const char *eng_gguf_vtype_name(uint32_t vtype);
/* Elements per block and bytes per block of a tensor type; AG_EUNSUPPORTED for an unknown id
 * (and then both are set to 0). Either pointer may be NULL. */
int eng_gguf_type_block(uint32_t type, uint32_t *block_elems, uint32_t *block_bytes);
/* Bytes taken by n_elements values of type, or 0 when type is unknown, n_elements is not a
 * multiple of the block size or the size would overflow. */
uint64_t eng_gguf_type_bytes(uint32_t type, int64_t n_elements);

/* ---- writer (gguf_write.c): builds valid GGUF v3 files, for tests and tools ----
 *
 * Metadata is written in the order added, then the tensor infos in the order added, then the
 * data, each tensor padded to the alignment (the last one is not padded: the file ends with its
 * data). The alignment is 32, or the value of a "general.alignment" U32 entry when that is a
 * power of two (any other value is written as given, for tests of the reader's refusals, and
 * the layout keeps 32).
 *
 * The first failure (an unknown type, a bad shape, a data size that does not match, a duplicate
 * tensor name) sticks: later calls do nothing and finish/write report it. The add functions
 * also return it. Duplicate keys are not checked (tests write them on purpose).
 */
struct eng_gguf_writer;

struct eng_gguf_writer *eng_gguf_writer_new(void);
void eng_gguf_writer_free(struct eng_gguf_writer *w); /* NULL is fine */

int eng_gguf_writer_add_u8(struct eng_gguf_writer *w, const char *key, uint8_t v);
int eng_gguf_writer_add_i8(struct eng_gguf_writer *w, const char *key, int8_t v);
int eng_gguf_writer_add_u16(struct eng_gguf_writer *w, const char *key, uint16_t v);
int eng_gguf_writer_add_i16(struct eng_gguf_writer *w, const char *key, int16_t v);
int eng_gguf_writer_add_u32(struct eng_gguf_writer *w, const char *key, uint32_t v);
int eng_gguf_writer_add_i32(struct eng_gguf_writer *w, const char *key, int32_t v);
int eng_gguf_writer_add_f32(struct eng_gguf_writer *w, const char *key, float v);
int eng_gguf_writer_add_bool(struct eng_gguf_writer *w, const char *key, bool v);
int eng_gguf_writer_add_u64(struct eng_gguf_writer *w, const char *key, uint64_t v);
int eng_gguf_writer_add_i64(struct eng_gguf_writer *w, const char *key, int64_t v);
int eng_gguf_writer_add_f64(struct eng_gguf_writer *w, const char *key, double v);
int eng_gguf_writer_add_str(struct eng_gguf_writer *w, const char *key, const char *s);
int eng_gguf_writer_add_strn(struct eng_gguf_writer *w, const char *key, const char *s, size_t len);
/* A numeric or bool array: elems holds n values in the host's layout of elem_type (uint8_t,
 * int16_t, float, ... and bool for ENG_GGUF_BOOL); they are written little-endian. */
int eng_gguf_writer_add_arr(struct eng_gguf_writer *w, const char *key,
                            enum eng_gguf_vtype elem_type, const void *elems, uint64_t n);
/* A string array of n NUL-terminated strings. */
int eng_gguf_writer_add_arr_str(struct eng_gguf_writer *w, const char *key, const char *const *strs,
                                uint64_t n);
/* A tensor of n_dims (1..4) dimensions ne (ne[0] = row length, a multiple of the type's block
 * size). data holds exactly eng_gguf_type_bytes(type, product of ne) bytes, n_bytes says how
 * many were given (checked), and is copied; data NULL writes zeros. */
int eng_gguf_writer_add_tensor(struct eng_gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const int64_t *ne, const void *data,
                               size_t n_bytes);

/* The whole file in one malloc'd buffer (the caller frees it with free()). */
int eng_gguf_writer_finish(struct eng_gguf_writer *w, void **buf, size_t *len, struct ag_err *err);
/* The whole file written to path (created or truncated, mode 0644). */
int eng_gguf_writer_write(struct eng_gguf_writer *w, const char *path, struct ag_err *err);

/* Bytes of one element of a fixed-size metadata value type in the file (bool is one byte); 0
 * for string and array. Shared by the loader and the writer. */
size_t eng__gguf_vtype_size(uint32_t t);

#endif
