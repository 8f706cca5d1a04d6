/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (engine/gguf.c) and the model loader
 * (engine/model.c). Any input either opens, and then every metadata entry, array element and
 * tensor can be read through the accessors without leaving the input (ASan watches), or is
 * refused with a message and one of the reader's documented error codes. An input that opens is
 * then loaded as a model (a small context, one thread): it is either refused with a message, or
 * it runs two forward steps whose logits stay inside their buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "../engine/engine.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* Keeps the reads from being optimized away. */
static volatile unsigned sink;

/* Touches every element of an array entry through the accessors. */
static unsigned walk_array(const struct eng_gguf_kv *kv)
{
    unsigned acc = 0;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        const struct eng_gguf_str *s;
        int64_t v;
        double d;
        if (eng_gguf_arr_str(kv, i, &s) == 0) {
            if (s->s[s->len] != '\0') abort();
            acc += s->len ? (unsigned char)s->s[0] : 0;
        } else if (eng_gguf_arr_int(kv, i, &v) == 0) {
            acc += (unsigned)v;
        } else if (eng_gguf_arr_float(kv, i, &d) == 0) {
            acc += d > 0;
        } else if (kv->arr_type != ENG_GGUF_U64) {
            abort(); /* only a u64 above INT64_MAX may be refused */
        }
    }
    if (eng_gguf_arr_int(kv, kv->arr_n, &(int64_t){0}) != AG_EINVAL) abort();
    return acc;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct eng_gguf *g = NULL;
    struct ag_err err = {0};
    unsigned acc = 0;

    int rc = eng_gguf_open_mem(data, size, "fuzz.gguf", &g, &err);
    if (rc != 0) {
        if (g || !err.msg[0] || err.code != rc) abort();
        if (rc != AG_EPARSE && rc != AG_EUNSUPPORTED && rc != AG_ETOOBIG) abort();
        return 0;
    }

    for (uint64_t i = 0; i < eng_gguf_n_kv(g); i++) {
        const struct eng_gguf_kv *kv = eng_gguf_kv_at(g, i);
        if (eng_gguf_find_key(g, kv->key) != kv) abort();
        if (strlen(kv->key) != kv->key_len || kv->key_len == 0) abort();
        uint32_t u32;
        uint64_t u64;
        int64_t i64;
        float f;
        bool b;
        const char *s;
        size_t len;
        const struct eng_gguf_kv *arr;
        /* Each getter either succeeds or says why; none may crash. */
        acc += eng_gguf_get_u32(g, kv->key, &u32, &err) == 0;
        acc += eng_gguf_get_u64(g, kv->key, &u64, &err) == 0;
        acc += eng_gguf_get_i64(g, kv->key, &i64, &err) == 0;
        acc += eng_gguf_get_f32(g, kv->key, &f, &err) == 0;
        acc += eng_gguf_get_bool(g, kv->key, &b, &err) == 0;
        if (eng_gguf_get_str(g, kv->key, &s, &len, &err) == 0 && s[len] != '\0') abort();
        if (eng_gguf_get_arr(g, kv->key, -1, &arr, &err) == 0) acc += walk_array(arr);
    }
    if (eng_gguf_kv_at(g, eng_gguf_n_kv(g)) != NULL) abort();

    const unsigned char *end = data + size;
    for (uint64_t i = 0; i < eng_gguf_n_tensors(g); i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        if (eng_gguf_find_tensor(g, t->name) != t) abort();
        if (eng_gguf_type_bytes(t->type, t->n_elements) != t->n_bytes) abort();
        const unsigned char *p = t->data;
        if (p < data || p + t->n_bytes > end || t->n_bytes == 0) abort();
        acc += p[0] + p[t->n_bytes - 1]; /* ASan checks both ends */
        (void)eng_gguf_type_name(t->type);
    }
    if (eng_gguf_tensor_at(g, eng_gguf_n_tensors(g)) != NULL) abort();

    /* The model loader on the same file: refusal with a message, or a working model. Files
     * declaring a context above 64 positions get 64 (the KV cache is the caller's choice). */
    struct eng_model *m = NULL;
    struct eng_model_params mp = {.n_threads = 1, .n_ctx = 8};
    rc = eng_model_load_gguf(g, &mp, &m, &err);
    if (rc == AG_EINVAL && strstr(err.msg, "context 8 is outside")) {
        mp.n_ctx = 0; /* the file's own context is smaller: use it */
        rc = eng_model_load_gguf(g, &mp, &m, &err);
    }
    if (rc != 0) {
        if (m || !err.msg[0]) abort();
    } else {
        const int32_t toks[2] = {0, eng_model_n_vocab(m) - 1};
        float *logits = NULL;
        if (eng_model_forward(m, toks, eng_model_n_ctx(m) > 1 ? 2 : 1, 0, &logits, &err) != 0)
            abort();
        float f = logits[0] + logits[eng_model_n_vocab(m) - 1];
        acc += f == f;
        eng_model_free(m);
    }
    eng_gguf_close(g);
    sink = acc;
    return 0;
}
