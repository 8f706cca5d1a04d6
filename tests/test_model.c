/*
 * test_model.c - the engine's forward pass: model loading and greedy parity with llama.cpp
 * (the ops underneath are tested on their own in test_ops.c).
 *
 * Two layers of evidence, each independent of the other:
 *   1. A tiny random-weight llama written with the GGUF writer: our forward pass against a
 *      plain float implementation below (dequantize everything, double sums, no batching, its
 *      own KV cache) to 1e-4 relative with F32/F16 weights and an F32 KV cache, and more
 *      loosely with an F16 cache and with quantized weights. This covers the KV-cache path,
 *      GQA, RoPE and batching without the real file.
 *   2. SmolLM2-135M-Instruct Q4_1: greedy decoding from the prompt ids in
 *      tests/data/greedy_smollm2.jsonl must reproduce llama.cpp's tokens on at least 9 of the
 *      10 prompts. The CPU backend reproduces llama.cpp's arithmetic, so all 10 match today;
 *      the margin allows for a reference regenerated on a machine whose llama.cpp build takes
 *      other SIMD paths. Skipped when the model file is missing.
 */
#include "../engine/cpu/ggml_kernels.h"
#include "../engine/model_int.h"
#include "../engine/cpu/threadpool.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_util.h"
#include "test.h"

#define SMOLLM2_PATH       "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GREEDY_PATH        "tests/data/greedy_smollm2.jsonl"
#define GEMMA3_PATH        "models/gemma-3-270m-q4_k_m.gguf"
#define GREEDY_GEMMA3_PATH "tests/data/greedy_gemma3.jsonl"

/* Under ASan the real-model checks run on a part of their data (a forward pass is ~20x slower
 * there, and the sanitizer adds nothing a few steps do not already show); `make test` runs all. */

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ---- a tiny random llama ---- */

struct tiny_cfg {
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    int types[3]; /* weight types cycled over the matrices */
    bool tied;    /* no output.weight */
};

/* The naive model: every weight dequantized to float. */
struct naive_layer {
    float *an, *fn;           /* (n_embd) */
    float *wq, *wk, *wv, *wo; /* (rows, cols) as the model sees them */
    float *wg, *wu, *wd;      /* feed-forward */
};

struct naive {
    struct tiny_cfg c;
    int head_dim;
    float *tok, *on, *out; /* (n_vocab, n_embd), (n_embd), (n_vocab, n_embd) */
    struct naive_layer l[4];
    float *kc, *vc; /* (n_layer, n_ctx, kv_dim) */
    float **owned;  /* every allocation above */
    int n_owned;
};

static float *naive_keep(struct naive *nv, float *p)
{
    nv->owned = realloc(nv->owned, (size_t)(nv->n_owned + 1) * sizeof(*nv->owned));
    nv->owned[nv->n_owned++] = p;
    return p;
}

/* Adds a random matrix to the writer and returns its dequantized copy. */
static float *tiny_mat(struct eng_gguf_writer *w, struct naive *nv, const char *name, int type,
                       int n_cols, int n_rows)
{
    struct test_mat tm;
    test_mat_init(&tm, type, n_cols, n_rows, 1.0f / sqrtf((float)n_cols) * 1.7f);
    int64_t ne[2] = {n_cols, n_rows};
    CHECK(eng_gguf_writer_add_tensor(w, name, (uint32_t)type, 2, ne, tm.bytes,
                                     tm.m.row_bytes * (size_t)n_rows) == 0);
    free(tm.bytes);
    return naive_keep(nv, tm.deq);
}

static float *tiny_norm(struct eng_gguf_writer *w, struct naive *nv, const char *name, int n)
{
    float *v = naive_keep(nv, malloc((size_t)n * sizeof(float)));
    for (int i = 0; i < n; i++) v[i] = 1.0f + 0.2f * frand();
    int64_t ne[1] = {n};
    CHECK(eng_gguf_writer_add_tensor(w, name, ENG_GGML_F32, 1, ne, v, (size_t)n * 4) == 0);
    return v;
}

/* Writes a tiny llama GGUF into *buf and fills nv with the same weights. */
static void tiny_build(const struct tiny_cfg *c, struct naive *nv, void **buf, size_t *len)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    struct ag_err err = {0};
    const int E = c->n_embd, hd = E / c->n_head, kvd = c->n_head_kv * hd;
    memset(nv, 0, sizeof(*nv));
    nv->c = *c;
    nv->head_dim = hd;

    eng_gguf_writer_add_str(w, "general.architecture", "llama");
    eng_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)c->n_layer);
    eng_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)c->n_ctx);
    eng_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)E);
    eng_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)c->n_ff);
    eng_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
    eng_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_head_kv);
    eng_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
    eng_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    eng_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)hd);
    const char **toks = malloc((size_t)c->n_vocab * sizeof(*toks));
    char *tok_text = malloc((size_t)c->n_vocab * 16);
    for (int i = 0; i < c->n_vocab; i++) {
        snprintf(tok_text + i * 16, 16, "t%d", i % 100000);
        toks[i] = tok_text + i * 16;
    }
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)c->n_vocab);
    free(toks);
    free(tok_text);

    int ti = 0;
#define NEXT_TYPE (c->types[ti++ % 3])
    nv->tok = tiny_mat(w, nv, "token_embd.weight", NEXT_TYPE, E, c->n_vocab);
    for (int l = 0; l < c->n_layer; l++) {
        struct naive_layer *L = &nv->l[l];
        char name[64];
#define MAT(field, nm, cols, rows)                                                                 \
    (snprintf(name, sizeof(name), "blk.%d." nm ".weight", l),                                      \
     L->field = tiny_mat(w, nv, name, NEXT_TYPE, cols, rows))
        snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", l);
        L->an = tiny_norm(w, nv, name, E);
        MAT(wq, "attn_q", E, E);
        MAT(wk, "attn_k", E, kvd);
        MAT(wv, "attn_v", E, kvd);
        MAT(wo, "attn_output", E, E);
        snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", l);
        L->fn = tiny_norm(w, nv, name, E);
        MAT(wg, "ffn_gate", E, c->n_ff);
        MAT(wu, "ffn_up", E, c->n_ff);
        MAT(wd, "ffn_down", c->n_ff, E);
#undef MAT
    }
    nv->on = tiny_norm(w, nv, "output_norm.weight", E);
    nv->out = c->tied ? nv->tok : tiny_mat(w, nv, "output.weight", NEXT_TYPE, E, c->n_vocab);
#undef NEXT_TYPE
    CHECK(eng_gguf_writer_finish(w, buf, len, &err) == 0);
    eng_gguf_writer_free(w);
    nv->kc = naive_keep(nv, calloc((size_t)(c->n_layer * c->n_ctx * kvd), sizeof(float)));
    nv->vc = naive_keep(nv, calloc((size_t)(c->n_layer * c->n_ctx * kvd), sizeof(float)));
}

static void naive_release(struct naive *nv)
{
    for (int i = 0; i < nv->n_owned; i++) free(nv->owned[i]);
    free(nv->owned);
}

/* The reference forward pass of one token at pos: plain loops, double sums. */
static void naive_forward(struct naive *nv, int token, int pos, float *logits)
{
    const struct tiny_cfg *c = &nv->c;
    const int E = c->n_embd, hd = nv->head_dim, kvd = c->n_head_kv * hd, F = c->n_ff;
    float x[256], xb[256], q[256], att[256], tmp[256], g[512], u[512];

    memcpy(x, nv->tok + (size_t)token * E, (size_t)E * sizeof(float));
    for (int l = 0; l < c->n_layer; l++) {
        struct naive_layer *L = &nv->l[l];
        float *kc = nv->kc + ((size_t)l * c->n_ctx + pos) * kvd;
        float *vc = nv->vc + ((size_t)l * c->n_ctx + pos) * kvd;
        naive_rmsnorm(xb, x, L->an, E, 1e-5f);
        naive_matvec(q, L->wq, xb, E, E);
        naive_matvec(kc, L->wk, xb, E, kvd);
        naive_matvec(vc, L->wv, xb, E, kvd);
        naive_rope(q, c->n_head, hd, hd, pos, 10000.0f, false);
        naive_rope(kc, c->n_head_kv, hd, hd, pos, 10000.0f, false);
        for (int h = 0; h < c->n_head; h++) {
            const int kvh = h / (c->n_head / c->n_head_kv);
            float sc[256];
            for (int p = 0; p <= pos; p++) {
                const float *k = nv->kc + ((size_t)l * c->n_ctx + p) * kvd + kvh * hd;
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * k[i];
                sc[p] = (float)(d / sqrt(hd));
            }
            naive_softmax(sc, pos + 1);
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int p = 0; p <= pos; p++)
                    o += (double)sc[p] * nv->vc[((size_t)l * c->n_ctx + p) * kvd + kvh * hd + i];
                att[h * hd + i] = (float)o;
            }
        }
        naive_matvec(tmp, L->wo, att, E, E);
        for (int i = 0; i < E; i++) x[i] += tmp[i];
        naive_rmsnorm(xb, x, L->fn, E, 1e-5f);
        naive_matvec(g, L->wg, xb, E, F);
        naive_matvec(u, L->wu, xb, E, F);
        for (int i = 0; i < F; i++) g[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
        naive_matvec(tmp, L->wd, g, F, E);
        for (int i = 0; i < E; i++) x[i] += tmp[i];
    }
    naive_rmsnorm(xb, x, nv->on, E, 1e-5f);
    naive_matvec(logits, nv->out, xb, E, c->n_vocab);
}

/* Prefills a 40-token prompt (more than one batch) and decodes 8 more tokens, comparing the
 * logits after every step with the naive model's. Returns the worst relative error. */
static double tiny_compare(const struct tiny_cfg *c, int n_threads, enum eng_kv_type kv,
                           int *argmax_diff)
{
    struct naive nv;
    void *buf;
    size_t len;
    struct ag_err err = {0};
    tiny_build(c, &nv, &buf, &len);
    struct eng_gguf *g;
    struct eng_model *m = NULL;
    double worst = INFINITY;
    *argmax_diff = 0;
    CHECK(eng_gguf_open_mem(buf, len, "tiny", &g, &err) == 0);
    struct eng_model_params mp = {.n_threads = n_threads, .kv_type = kv};
    int rc = eng_model_load_gguf(g, &mp, &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0) {
        enum { PROMPT = 40, GEN = 8 };
        int32_t toks[PROMPT];
        float *want = malloc((size_t)c->n_vocab * sizeof(float)), *logits;
        for (int i = 0; i < PROMPT; i++) toks[i] = (int32_t)((i * 37 + 11) % c->n_vocab);
        for (int p = 0; p < PROMPT; p++) naive_forward(&nv, toks[p], p, want);
        CHECK(eng_model_forward(m, toks, PROMPT, 0, &logits, &err) == 0);
        worst = rel_err(logits, want, (size_t)c->n_vocab);
        int32_t next = (int32_t)argmax(logits, c->n_vocab);
        for (int s = 0; s < GEN; s++) {
            *argmax_diff += argmax(want, c->n_vocab) != next;
            naive_forward(&nv, next, PROMPT + s, want);
            CHECK(eng_model_forward(m, &next, 1, PROMPT + s, &logits, &err) == 0);
            double e = rel_err(logits, want, (size_t)c->n_vocab);
            if (e > worst) worst = e;
            next = (int32_t)argmax(logits, c->n_vocab);
        }
        free(want);
    }
    eng_model_free(m);
    eng_gguf_close(g);
    free(buf);
    naive_release(&nv);
    return worst;
}

static const struct tiny_cfg tiny_default = {
    .n_layer = 2,
    .n_embd = 64,
    .n_head = 4,
    .n_head_kv = 2,
    .n_ff = 96,
    .n_vocab = 100,
    .n_ctx = 64,
    .types = {ENG_GGML_F32, ENG_GGML_F16, ENG_GGML_F32},
    .tied = false,
};

/* F32 and F16 weights (activations stay F32) with an F32 KV cache: the whole pass is float
 * arithmetic, so it must match the naive model closely. */
static void test_tiny_float(void)
{
    rng_seed(10);
    for (int nt = 1; nt <= 2; nt++) {
        for (int tied = 0; tied <= 1; tied++) {
            struct tiny_cfg c = tiny_default;
            c.tied = tied;
            int amd;
            double e = tiny_compare(&c, nt, ENG_KV_F32, &amd);
            printf("  tiny float model, %d threads, tied=%d: worst relative error %.2e\n", nt, tied,
                   e);
            CHECKF(e < 1e-4, "threads %d tied %d: %g", nt, tied, e);
            CHECK(amd == 0);
        }
    }
}

/* The same with an F16 KV cache: llama.cpp's flash-attention arithmetic costs accuracy. */
static void test_tiny_f16_cache(void)
{
    rng_seed(10);
    int amd;
    double e = tiny_compare(&tiny_default, 2, ENG_KV_F16, &amd);
    printf("  tiny float model, F16 KV cache: worst relative error %.2e, %d argmax differences\n",
           e, amd);
    CHECKF(e < 1e-2, "%g", e);
}

static void test_tiny_quantized(void)
{
    rng_seed(11);
    struct tiny_cfg c = tiny_default;
    c.types[0] = ENG_GGML_Q8_0;
    c.types[1] = ENG_GGML_Q4_1;
    c.types[2] = ENG_GGML_Q8_0;
    int amd;
    double e = tiny_compare(&c, 2, ENG_KV_F16, &amd);
    printf("  tiny Q8_0/Q4_1 model: worst relative error %.2e, %d argmax differences\n", e, amd);
    CHECKF(e < 0.05, "%g", e);
}

/* Batching, rewinding and the refusals, on the tiny model. */
static void test_tiny_api(void)
{
    rng_seed(12);
    struct naive nv;
    void *buf;
    size_t len;
    struct ag_err err = {0};
    struct tiny_cfg c = tiny_default;
    c.n_ctx = 48;
    c.types[1] = ENG_GGML_Q4_1;
    tiny_build(&c, &nv, &buf, &len);
    struct eng_gguf *g;
    struct eng_model *m;
    CHECK(eng_gguf_open_mem(buf, len, "tiny", &g, &err) == 0);
    struct eng_model_params mp = {.n_threads = 2};
    CHECK(eng_model_load_gguf(g, &mp, &m, &err) == 0);
    CHECK(eng_model_n_ctx(m) == 48);
    CHECK(eng_model_n_vocab(m) == 100);
    CHECK(eng_model_hparams(m)->head_dim == 16 && eng_model_hparams(m)->kv_dim == 32);
    CHECK(eng_model_gguf(m) == g);

    int32_t toks[48];
    for (int i = 0; i < 48; i++) toks[i] = (int32_t)((i * 13 + 5) % 100);
    float *logits, all[100], one[100];
    /* One call of 45 tokens (two batches) equals 45 calls of one token, bit for bit. */
    CHECK(eng_model_forward(m, toks, 45, 0, &logits, &err) == 0);
    memcpy(all, logits, sizeof(all));
    CHECK(eng_model_n_past(m) == 45);
    eng_model_reset(m);
    CHECK(eng_model_n_past(m) == 0);
    for (int i = 0; i < 45; i++) CHECK(eng_model_forward(m, toks + i, 1, i, &logits, &err) == 0);
    memcpy(one, logits, sizeof(one));
    CHECK(memcmp(all, one, sizeof(all)) == 0);
    /* Rewinding to 30 and running the same tokens again gives the same logits. */
    CHECK(eng_model_forward(m, toks + 30, 15, 30, &logits, &err) == 0);
    CHECK(memcmp(all, logits, sizeof(all)) == 0);

    /* Refusals leave the sequence as it was. */
    CHECK(eng_model_forward(m, toks, 4, 45, &logits, &err) == AG_ECTXOVERFLOW);
    CHECK(strstr(err.msg, "context") != NULL);
    CHECK(eng_model_forward(m, toks, 0, 45, &logits, &err) == AG_EINVAL);
    CHECK(eng_model_forward(m, toks, 1, 46, &logits, &err) == AG_EINVAL);
    CHECK(eng_model_forward(m, toks, 1, -1, &logits, &err) == AG_EINVAL);
    int32_t bad[2] = {3, 100};
    CHECK(eng_model_forward(m, bad, 2, 45, &logits, &err) == AG_EINVAL);
    bad[1] = -1;
    CHECK(eng_model_forward(m, bad, 2, 45, &logits, &err) == AG_EINVAL);
    CHECK(eng_model_n_past(m) == 45);
    /* Exactly filling the context works. */
    CHECK(eng_model_forward(m, toks + 45, 3, 45, &logits, &err) == 0);
    CHECK(eng_model_n_past(m) == 48);
    CHECK(eng_model_forward(m, toks, 1, 48, &logits, &err) == AG_ECTXOVERFLOW);
    eng_model_free(m);

    /* Argument refusals at load. */
    struct eng_model_params bad_p[] = {{.n_threads = 0},
                                       {.n_threads = 1, .n_ctx = 49},
                                       {.n_threads = 1, .n_ctx = -1},
                                       {.n_threads = 1, .kv_type = (enum eng_kv_type)7}};
    for (size_t i = 0; i < sizeof(bad_p) / sizeof(bad_p[0]); i++)
        CHECK(eng_model_load_gguf(g, &bad_p[i], &m, &err) == AG_EINVAL && m == NULL);
    eng_gguf_close(g);
    free(buf);
    naive_release(&nv);
    eng_model_free(NULL);
}

/* A model file with one thing wrong must fail with a message naming it. */
struct bad_case {
    const char *what;
    const char *skip_tensor;  /* tensor to leave out (NULL: none) */
    const char *shape_tensor; /* tensor written with a wrong shape */
    const char *key;          /* metadata key to override, as u32 */
    uint32_t value;
    int want_rc;
    const char *want_msg; /* substring of the error */
};

static int write_bad(const struct bad_case *bc, void **buf, size_t *len)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    const int E = 64, F = 96, V = 40, KV = 32;
    eng_gguf_writer_add_str(w, "general.architecture", "llama");
#define U32(k, v) eng_gguf_writer_add_u32(w, k, bc->key && !strcmp(bc->key, k) ? bc->value : v)
    U32("llama.block_count", 1);
    U32("llama.context_length", 32);
    U32("llama.embedding_length", E);
    U32("llama.feed_forward_length", F);
    U32("llama.attention.head_count", 4);
    U32("llama.attention.head_count_kv", 2);
    U32("llama.vocab_size", V);
#undef U32
    eng_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    struct {
        const char *name;
        int64_t ne0, ne1;
    } ts[] = {{"token_embd.weight", E, V},     {"blk.0.attn_norm.weight", E, 0},
              {"blk.0.attn_q.weight", E, E},   {"blk.0.attn_k.weight", E, KV},
              {"blk.0.attn_v.weight", E, KV},  {"blk.0.attn_output.weight", E, E},
              {"blk.0.ffn_norm.weight", E, 0}, {"blk.0.ffn_gate.weight", E, F},
              {"blk.0.ffn_up.weight", E, F},   {"blk.0.ffn_down.weight", F, E},
              {"output_norm.weight", E, 0}};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        if (bc->skip_tensor && !strcmp(bc->skip_tensor, ts[i].name)) continue;
        int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        if (bc->shape_tensor && !strcmp(bc->shape_tensor, ts[i].name)) ne[1] += 32;
        uint32_t nd = ne[1] ? 2 : 1;
        eng_gguf_writer_add_tensor(w, ts[i].name, ENG_GGML_F32, nd, ne, NULL, 0);
    }
    struct ag_err err = {0};
    int rc = eng_gguf_writer_finish(w, buf, len, &err);
    eng_gguf_writer_free(w);
    return rc;
}

static void test_load_refusals(void)
{
    static const struct bad_case cases[] = {
        {"good", NULL, NULL, NULL, 0, 0, NULL},
        {"missing tensor", "blk.0.ffn_up.weight", NULL, NULL, 0, AG_EPARSE,
         "missing tensor 'blk.0.ffn_up.weight'"},
        {"wrong shape", NULL, "blk.0.attn_k.weight", NULL, 0, AG_EPARSE,
         "tensor 'blk.0.attn_k.weight': expected shape [64, 32], found [64, 64]"},
        {"huge layer count", NULL, NULL, "llama.block_count", 100000, AG_EINVAL,
         "llama.block_count = 100000"},
        {"zero heads", NULL, NULL, "llama.attention.head_count", 0, AG_EINVAL, "head_count"},
        {"kv heads not dividing", NULL, NULL, "llama.attention.head_count_kv", 3, AG_EINVAL,
         "not a multiple"},
        {"kv heads above heads", NULL, NULL, "llama.attention.head_count_kv", 8, AG_EINVAL,
         "head_count_kv"},
        {"more layers than tensors", NULL, NULL, "llama.block_count", 2, AG_EPARSE,
         "missing tensor 'blk.1."},
        {"embedding mismatch", NULL, NULL, "llama.embedding_length", 128, AG_EPARSE,
         "token_embd.weight': expected shape [128, 40], found [64, 40]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct bad_case *bc = &cases[i];
        void *buf;
        size_t len;
        struct ag_err err = {0};
        struct eng_gguf *g;
        struct eng_model *m = NULL;
        CHECK(write_bad(bc, &buf, &len) == 0);
        CHECK(eng_gguf_open_mem(buf, len, "bad.gguf", &g, &err) == 0);
        struct eng_model_params mp = {.n_threads = 1};
        int rc = eng_model_load_gguf(g, &mp, &m, &err);
        CHECKF(rc == bc->want_rc, "%s: rc %d (%s)", bc->what, rc, err.msg);
        if (bc->want_msg) {
            CHECKF(strstr(err.msg, bc->want_msg) != NULL, "%s: message '%s'", bc->what, err.msg);
            CHECK(strncmp(err.msg, "bad.gguf", 8) == 0);
            CHECK(m == NULL);
        }
        eng_model_free(m);
        eng_gguf_close(g);
        free(buf);
    }

    /* Missing file; an architecture we do not run. */
    struct ag_err err = {0};
    struct eng_model *m;
    CHECK(eng_model_load("/nonexistent/model.gguf", 1, 0, &m, &err) == AG_ENOTFOUND);
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "general.architecture", "mamba");
    void *buf;
    size_t len;
    struct eng_gguf *g;
    CHECK(eng_gguf_writer_finish(w, &buf, &len, &err) == 0);
    eng_gguf_writer_free(w);
    CHECK(eng_gguf_open_mem(buf, len, "m.gguf", &g, &err) == 0);
    struct eng_model_params mp = {.n_threads = 1};
    CHECK(eng_model_load_gguf(g, &mp, &m, &err) == AG_EUNSUPPORTED);
    CHECK(strstr(err.msg, "mamba") != NULL);
    eng_gguf_close(g);
    free(buf);
}

/* ---- SmolLM2 greedy parity with llama.cpp ---- */

static int json_ids(const cJSON *arr, int32_t *out, int cap)
{
    int n = cJSON_GetArraySize(arr);
    if (n > cap) return -1;
    for (int i = 0; i < n; i++) out[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
    return n;
}

/* One real model's greedy check: its file, the reference data, and the shape it must have. */
struct greedy_case {
    const char *model;
    const char *data;
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
};

static void greedy_parity(const struct greedy_case *gc)
{
    FILE *f = fopen(gc->model, "rb");
    if (!f) {
        printf("  %s is missing: run `make model MODEL=all`\n", gc->model);
        SKIP("model file missing");
    }
    fclose(f);
    struct ag_err err = {0};
    struct eng_model *m;
    int rc = eng_model_load(gc->model, 2, 512, &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    const struct eng_hparams *hp = eng_model_hparams(m);
    CHECK(hp->n_layer == gc->n_layer && hp->n_embd == gc->n_embd && hp->n_ff == gc->n_ff &&
          hp->n_head == gc->n_head && hp->n_head_kv == gc->n_head_kv &&
          hp->head_dim == gc->head_dim && hp->n_rot == gc->head_dim && hp->n_vocab == gc->n_vocab);
    CHECK(m->w.tied_output);

    char *text;
    size_t len;
    rc = ag_read_file(gc->data, 1 << 24, &text, &len, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0) {
        eng_model_free(m);
        return;
    }
    int n_prompts = 0, n_same = 0;
    int64_t t_prefill = 0, t_decode = 0, n_prefill = 0, n_decode = 0;
    const int max_prompts = SANITIZED ? 2 : 10;
    for (char *line = strtok(text, "\n"); line && n_prompts < max_prompts;
         line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL);
        if (!j) continue;
        const cJSON *jname = cJSON_GetObjectItem(j, "name");
        const char *name = cJSON_IsString(jname) ? jname->valuestring : "?";
        int32_t prompt[512], want[128], got[128];
        int np = json_ids(cJSON_GetObjectItem(j, "prompt_ids"), prompt, 512);
        int nw = json_ids(cJSON_GetObjectItem(j, "ids"), want, 128);
        CHECK(np > 0 && nw > 0);
        if (np <= 0 || nw <= 0) {
            cJSON_Delete(j);
            continue;
        }
        float *logits;
        eng_model_reset(m);
        int64_t t0 = ag_now_ns();
        CHECK(eng_model_forward(m, prompt, np, 0, &logits, &err) == 0);
        t_prefill += ag_now_ns() - t0;
        n_prefill += np;
        int diverge = -1;
        t0 = ag_now_ns();
        for (int i = 0; i < nw; i++) {
            got[i] = (int32_t)argmax(logits, hp->n_vocab);
            if (diverge < 0 && got[i] != want[i]) diverge = i;
            if (i + 1 < nw) CHECK(eng_model_forward(m, &got[i], 1, np + i, &logits, &err) == 0);
        }
        t_decode += ag_now_ns() - t0;
        n_decode += nw - 1;
        n_prompts++;
        if (diverge < 0) {
            n_same++;
            printf("  %-15s %2d/%d tokens identical\n", name, nw, nw);
        } else {
            printf("  %-15s first divergence at token %d (got %d, want %d)\n", name, diverge,
                   got[diverge], want[diverge]);
        }
        cJSON_Delete(j);
    }
    free(text);
    printf("  greedy parity: %d/%d prompts identical; prefill %.1f tok/s, decode %.1f tok/s "
           "(2 threads, includes the check)\n",
           n_same, n_prompts, n_prefill * 1e9 / (double)(t_prefill ? t_prefill : 1),
           n_decode * 1e9 / (double)(t_decode ? t_decode : 1));
    CHECK(n_prompts == max_prompts);
    CHECKF(n_same >= max_prompts - 1, "only %d of %d prompts match llama.cpp", n_same, n_prompts);
    eng_model_free(m);
}

static void test_smollm2_greedy(void)
{
    const struct greedy_case gc = {SMOLLM2_PATH, GREEDY_PATH, 30, 576, 1536, 9, 3, 64, 49152};
    greedy_parity(&gc);
}

static void test_gemma3_greedy(void)
{
    const struct greedy_case gc = {GEMMA3_PATH, GREEDY_GEMMA3_PATH, 18, 640, 2048, 4, 1, 256,
                                   262144};
    greedy_parity(&gc);
}

/* ---- teacher forcing over 512 tokens ---- */

/* Runs the 512 tokens of tests/data/teacher_<name>.json through the model in batches, as a
 * prompt is run, and counts the positions where our argmax is llama.cpp's (which evaluated the
 * whole sequence in one batch, so its attention took other kernels: agreement is close, not
 * exact). The issue asks for at least 99%. */
static void teacher_forcing(const char *model, const char *data)
{
    FILE *f = fopen(model, "rb");
    if (!f) {
        printf("  %s is missing: run `make model MODEL=all`\n", model);
        SKIP("model file missing");
    }
    fclose(f);
    struct ag_err err = {0};
    char *text;
    size_t len;
    int rc = ag_read_file(data, 1 << 22, &text, &len, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    cJSON *j = cJSON_Parse(text);
    free(text);
    CHECK(j != NULL);
    if (!j) return;
    int32_t ids[512], want[512];
    int n = json_ids(cJSON_GetObjectItem(j, "ids"), ids, 512);
    int nw = json_ids(cJSON_GetObjectItem(j, "argmax"), want, 512);
    cJSON_Delete(j);
    CHECK(n == 512 && nw == 512);
    if (n != 512 || nw != 512) return;
    if (SANITIZED) n = 64;

    struct eng_model *m;
    rc = eng_model_load(model, 2, 512, &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0) return;
    const int V = eng_model_n_vocab(m);
    float *logits = malloc((size_t)ENG_MODEL_MAX_BATCH * (size_t)V * sizeof(float));
    int agree = 0, first_miss = -1;
    int64_t t0 = ag_now_ns();
    for (int i = 0; i < n; i += ENG_MODEL_MAX_BATCH) {
        int nb = n - i < ENG_MODEL_MAX_BATCH ? n - i : ENG_MODEL_MAX_BATCH;
        CHECK(eng_model_forward_all(m, ids + i, nb, i, logits, &err) == 0);
        for (int t = 0; t < nb; t++) {
            if (argmax(logits + (size_t)t * V, V) == want[i + t])
                agree++;
            else if (first_miss < 0)
                first_miss = i + t;
        }
    }
    double secs = (double)(ag_now_ns() - t0) / 1e9;
    printf("  %s: top-1 agrees with llama.cpp at %d/%d positions (%.1f%%, first miss at %d), "
           "%.1f tok/s\n",
           data, agree, n, 100.0 * agree / n, first_miss, n / secs);
    CHECKF(agree * 100 >= 99 * n, "top-1 agreement %d/%d is below 99%%", agree, n);
    free(logits);
    eng_model_free(m);
}

static void test_smollm2_teacher_forcing(void)
{
    teacher_forcing(SMOLLM2_PATH, "tests/data/teacher_smollm2.json");
}

static void test_gemma3_teacher_forcing(void)
{
    teacher_forcing(GEMMA3_PATH, "tests/data/teacher_gemma3.json");
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_tiny_float);
    RUN(test_tiny_f16_cache);
    RUN(test_tiny_quantized);
    RUN(test_tiny_api);
    RUN(test_load_refusals);
    RUN(test_smollm2_greedy);
    RUN(test_gemma3_greedy);
    RUN(test_smollm2_teacher_forcing);
    RUN(test_gemma3_teacher_forcing);
    return TEST_END();
}
