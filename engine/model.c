/*
 * model.c - loads a transformer from GGUF (hyperparameters, weights bound in place, run state)
 * and runs its forward pass through the backend ops table.
 *
 * Loading trusts nothing in the file: every count is range-checked before it sizes anything,
 * every tensor must exist with exactly the shape the hyperparameters imply (the error names the
 * tensor and both shapes) and a type the matmul kernels support. After that the forward pass
 * needs no checks beyond the caller's token ids and positions.
 *
 * The forward pass takes up to ENG_MODEL_MAX_BATCH tokens per step as rows of every buffer.
 * Per layer (llama):
 *   xb = rmsnorm(x) * attn_norm
 *   q, k, v = xb Wq, xb Wk, xb Wv         one matmul call (one quantization of xb)
 *   rope(q), rope(k); k, v stored in the cache at their positions
 *   att = softmax(q k^T / sqrt(head_dim)) v   causal, grouped KV heads
 *   x += att Wo
 *   xb = rmsnorm(x) * ffn_norm
 *   x += (silu(xb Wgate) * (xb Wup)) Wdown
 * and after the last layer logits = (rmsnorm(x) * output_norm) Woutput for the last row only.
 */
#include "model.h"
#include "model_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- hyperparameters ---- */

/* Reads "<arch>.<suffix>" as an integer in [lo, hi]. When the key is absent, uses def if
 * def_ok, else fails. */
static int get_int(struct eng_gguf *g, const char *arch, const char *suffix, int64_t lo, int64_t hi,
                   bool def_ok, int def, int *out, struct ag_err *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int64_t v;
    int rc = eng_gguf_get_i64(g, key, &v, err);
    if (rc == AG_ENOTFOUND && def_ok) {
        ag_err_clear(err);
        *out = def;
        return 0;
    }
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_EPARSE, "%s: missing metadata key %s", eng_gguf_name(g), key);
    if (rc < 0) return rc;
    if (v < lo || v > hi)
        return ag_err_set(err, AG_EINVAL, "%s: %s = %" PRId64 " is outside %" PRId64 "..%" PRId64,
                          eng_gguf_name(g), key, v, lo, hi);
    *out = (int)v;
    return 0;
}

/* Reads "<arch>.<suffix>" as a float in (lo, hi), or def when absent and def_ok. */
static int get_float(struct eng_gguf *g, const char *arch, const char *suffix, float lo, float hi,
                     bool def_ok, float def, float *out, struct ag_err *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    float v;
    int rc = eng_gguf_get_f32(g, key, &v, err);
    if (rc == AG_ENOTFOUND && def_ok) {
        ag_err_clear(err);
        *out = def;
        return 0;
    }
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_EPARSE, "%s: missing metadata key %s", eng_gguf_name(g), key);
    if (rc < 0) return rc;
    if (!(v > lo && v < hi)) /* also refuses NaN */
        return ag_err_set(err, AG_EINVAL, "%s: %s = %g is outside (%g, %g)", eng_gguf_name(g), key,
                          (double)v, (double)lo, (double)hi);
    *out = v;
    return 0;
}

static int load_hparams(struct eng_gguf *g, struct eng_hparams *hp, struct ag_err *err)
{
    const char *name = eng_gguf_name(g);
    const char *arch;
    int rc = eng_gguf_get_str(g, "general.architecture", &arch, NULL, err);
    if (rc == AG_ENOTFOUND)
        return ag_err_set(err, AG_EPARSE, "%s: missing metadata key general.architecture", name);
    if (rc < 0) return rc;
    memset(hp, 0, sizeof(*hp));
    if (strcmp(arch, "llama") == 0)
        hp->arch = ENG_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0)
        hp->arch = ENG_ARCH_QWEN2;
    else if (strcmp(arch, "gemma3") == 0)
        hp->arch = ENG_ARCH_GEMMA3;
    else
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: llama, qwen2, "
                          "gemma3)",
                          name, arch);

    if ((rc = get_int(g, arch, "block_count", 1, ENG_MODEL_MAX_LAYERS, false, 0, &hp->n_layer,
                      err)) < 0 ||
        (rc = get_int(g, arch, "embedding_length", 1, ENG_MODEL_MAX_EMBD, false, 0, &hp->n_embd,
                      err)) < 0 ||
        (rc = get_int(g, arch, "feed_forward_length", 1, ENG_MODEL_MAX_FF, false, 0, &hp->n_ff,
                      err)) < 0 ||
        (rc = get_int(g, arch, "attention.head_count", 1, ENG_MODEL_MAX_HEADS, false, 0,
                      &hp->n_head, err)) < 0 ||
        (rc = get_int(g, arch, "attention.head_count_kv", 1, hp->n_head, true, hp->n_head,
                      &hp->n_head_kv, err)) < 0 ||
        (rc = get_int(g, arch, "context_length", 1, ENG_MODEL_MAX_CTX, false, 0, &hp->n_ctx_train,
                      err)) < 0 ||
        (rc = get_float(g, arch, "attention.layer_norm_rms_epsilon", 0.0f, 1.0f, false, 0.0f,
                        &hp->rms_eps, err)) < 0 ||
        (rc = get_float(g, arch, "rope.freq_base", 0.0f, 1e12f, true, 10000.0f, &hp->rope_base,
                        err)) < 0)
        return rc;
    if (hp->n_head % hp->n_head_kv != 0)
        return ag_err_set(err, AG_EINVAL, "%s: head_count %d is not a multiple of head_count_kv %d",
                          name, hp->n_head, hp->n_head_kv);
    int def_hd = hp->n_embd % hp->n_head == 0 ? hp->n_embd / hp->n_head : 0;
    if ((rc = get_int(g, arch, "attention.key_length", 1, ENG_MODEL_MAX_HEAD_DIM, def_hd > 0,
                      def_hd, &hp->head_dim, err)) < 0)
        return rc;
    int v_len;
    if ((rc = get_int(g, arch, "attention.value_length", 1, ENG_MODEL_MAX_HEAD_DIM, true,
                      hp->head_dim, &v_len, err)) < 0)
        return rc;
    if (v_len != hp->head_dim)
        return ag_err_set(err, AG_EUNSUPPORTED, "%s: key_length %d != value_length %d", name,
                          hp->head_dim, v_len);
    if (hp->head_dim < 1 || hp->head_dim > ENG_MODEL_MAX_HEAD_DIM)
        return ag_err_set(err, AG_EINVAL, "%s: head dimension %d is outside 1..%d", name,
                          hp->head_dim, ENG_MODEL_MAX_HEAD_DIM);
    if ((rc = get_int(g, arch, "rope.dimension_count", 2, hp->head_dim, true, hp->head_dim,
                      &hp->n_rot, err)) < 0)
        return rc;
    if (hp->n_rot % 2 != 0)
        return ag_err_set(err, AG_EINVAL, "%s: rope.dimension_count %d is odd", name, hp->n_rot);
    hp->q_dim = hp->n_head * hp->head_dim;
    hp->kv_dim = hp->n_head_kv * hp->head_dim;

    /* What the architecture fixes (llama.cpp's llama_model_rope_type and per-arch graphs). */
    hp->rope_neox = hp->arch != ENG_ARCH_LLAMA;
    hp->embd_scale = 1.0f;
    hp->q_scale = 1.0f;
    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->swa_pattern = 1;
    hp->rope_base_swa = hp->rope_base;
    if (hp->arch == ENG_ARCH_GEMMA3) {
        hp->embd_scale = sqrtf((float)hp->n_embd);
        hp->q_scale = 1.0f / sqrtf((float)hp->head_dim);
        hp->kq_scale = 1.0f;
        hp->qk_norm = true;
        hp->post_norms = true;
        hp->ffn_act = ENG_FFN_GELU;
        if ((rc = get_int(g, arch, "attention.sliding_window", 0, ENG_MODEL_MAX_CTX, true, 0,
                          &hp->n_swa, err)) < 0 ||
            (rc = get_int(g, arch, "attention.sliding_window_pattern", 1, ENG_MODEL_MAX_LAYERS,
                          true, 6, &hp->swa_pattern, err)) < 0 ||
            (rc = get_float(g, arch, "rope.freq_base_swa", 0.0f, 1e12f, true, 10000.0f,
                            &hp->rope_base_swa, err)) < 0)
            return rc;
    }

    /* The vocabulary size: <arch>.vocab_size when present, else the token list's length. */
    int n_vocab = 0;
    if ((rc = get_int(g, arch, "vocab_size", 1, ENG_MODEL_MAX_VOCAB, true, 0, &n_vocab, err)) < 0)
        return rc;
    const struct eng_gguf_kv *tokens = NULL;
    rc = eng_gguf_get_arr(g, "tokenizer.ggml.tokens", ENG_GGUF_STRING, &tokens, err);
    if (rc < 0 && rc != AG_ENOTFOUND) return rc;
    ag_err_clear(err);
    if (tokens) {
        if (tokens->arr_n < 1 || tokens->arr_n > ENG_MODEL_MAX_VOCAB)
            return ag_err_set(err, AG_EINVAL,
                              "%s: tokenizer.ggml.tokens has %" PRIu64 " entries, outside 1..%d",
                              name, tokens->arr_n, ENG_MODEL_MAX_VOCAB);
        if (n_vocab && (uint64_t)n_vocab != tokens->arr_n)
            return ag_err_set(err, AG_EINVAL, "%s: %s.vocab_size %d != %" PRIu64 " tokens", name,
                              arch, n_vocab, tokens->arr_n);
        n_vocab = (int)tokens->arr_n;
    }
    if (n_vocab == 0)
        return ag_err_set(err, AG_EPARSE,
                          "%s: no vocabulary size (%s.vocab_size or "
                          "tokenizer.ggml.tokens)",
                          name, arch);
    hp->n_vocab = n_vocab;
    return 0;
}

/* ---- weights ---- */

/* Formats a tensor's shape as "[a, b]" into buf. */
static const char *shape_str(const struct eng_gguf_tensor *t, char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < t->n_dims && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

/* Finds name and checks that its shape is (ne0) or (ne0, ne1) (ne1 = 0: one dimension). */
static int find_shaped(struct eng_gguf *g, const char *name, int64_t ne0, int64_t ne1,
                       const struct eng_gguf_tensor **out, struct ag_err *err)
{
    const struct eng_gguf_tensor *t = eng_gguf_find_tensor(g, name);
    if (!t) return ag_err_set(err, AG_EPARSE, "%s: missing tensor '%s'", eng_gguf_name(g), name);
    int64_t want1 = ne1 ? ne1 : 1;
    if (t->ne[0] != ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
        char found[128];
        if (ne1)
            return ag_err_set(err, AG_EPARSE,
                              "%s: tensor '%s': expected shape [%" PRId64 ", %" PRId64
                              "], found %s",
                              eng_gguf_name(g), name, ne0, ne1, shape_str(t, found, sizeof(found)));
        return ag_err_set(err, AG_EPARSE, "%s: tensor '%s': expected shape [%" PRId64 "], found %s",
                          eng_gguf_name(g), name, ne0, shape_str(t, found, sizeof(found)));
    }
    /* Block structs hold 16-bit fields and F32 rows floats: a start that is not 4-aligned
     * (possible only with a general.alignment below 4) would make every access misaligned. */
    if ((uintptr_t)t->data % 4 != 0)
        return ag_err_set(err, AG_EUNSUPPORTED, "%s: tensor '%s' data is not 4-byte aligned",
                          eng_gguf_name(g), name);
    *out = t;
    return 0;
}

/* Binds the matrix name, which must have n_rows rows of n_cols values of a type be's matmul
 * supports. */
static int bind_mat(struct eng_gguf *g, const struct eng_backend *be, const char *name,
                    int64_t n_cols, int64_t n_rows, struct eng_mat *m, struct ag_err *err)
{
    const struct eng_gguf_tensor *t;
    int rc = find_shaped(g, name, n_cols, n_rows, &t, err);
    if (rc < 0) return rc;
    const struct eng_qtype *qt = eng_qtype_get((int)t->type);
    m->data = t->data;
    m->qt = qt;
    m->n_cols = n_cols;
    m->n_rows = n_rows;
    m->row_bytes = eng_qtype_row_bytes(qt, n_cols);
    const struct eng_mat *mp = m;
    bool ok = qt && qt->weight && qt->vec_dot && m->row_bytes != 0;
    if (ok && qt->quantize_act) ok = be->ops->matmul_act_bytes(be->ctx, 1, &mp, 1) != 0;
    if (!ok)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "%s: tensor '%s' has type %s, which matmul does "
                          "not support",
                          eng_gguf_name(g), name, eng_gguf_type_name(t->type));
    return 0;
}

/* Dequantizes the vector name (n values) into dst. */
static int load_norm(struct eng_gguf *g, const char *name, int64_t n, float *dst,
                     struct ag_err *err)
{
    const struct eng_gguf_tensor *t;
    int rc = find_shaped(g, name, n, 0, &t, err);
    if (rc < 0) return rc;
    const struct eng_qtype *qt = eng_qtype_get((int)t->type);
    if (!qt || !qt->weight || eng_qtype_row_bytes(qt, n) == 0)
        return ag_err_set(err, AG_EUNSUPPORTED, "%s: tensor '%s' has unsupported type %s",
                          eng_gguf_name(g), name, eng_gguf_type_name(t->type));
    qt->dequantize(t->data, dst, n);
    return 0;
}

/* Binds an optional F32 vector: *out stays NULL when the file has no tensor name. */
static int load_opt_vec(struct eng_gguf *g, const char *name, int64_t n, float **cursor,
                        const float **out, struct ag_err *err)
{
    if (!eng_gguf_find_tensor(g, name)) return 0;
    int rc = load_norm(g, name, n, *cursor, err);
    if (rc < 0) return rc;
    *out = *cursor;
    *cursor += n;
    return 0;
}

/* Binds a required F32 vector. */
static int load_vec(struct eng_gguf *g, const char *name, int64_t n, float **cursor,
                    const float **out, struct ag_err *err)
{
    int rc = load_norm(g, name, n, *cursor, err);
    if (rc < 0) return rc;
    *out = *cursor;
    *cursor += n;
    return 0;
}

static int build_weights(struct eng_gguf *g, const struct eng_hparams *hp,
                         const struct eng_backend *be, struct eng_weights *w, struct ag_err *err)
{
    const int64_t E = hp->n_embd, HD = hp->head_dim;
    char name[96];
    int rc;

    /* Room for every vector any architecture may have: per layer four norms of n_embd, two of
     * head_dim and the Q, K, V biases; the output norm and bias. */
    const size_t per_layer = (size_t)(4 * E + 2 * HD + hp->q_dim + 2 * hp->kv_dim);
    w->layers = ag_calloc((size_t)hp->n_layer, sizeof(*w->layers));
    w->vecs =
        ag_calloc(per_layer * (size_t)hp->n_layer + (size_t)E + (size_t)hp->n_vocab, sizeof(float));
    float *cur = w->vecs;
    if ((rc = bind_mat(g, be, "token_embd.weight", E, hp->n_vocab, &w->tok_embd, err)) < 0)
        return rc;
    for (int l = 0; l < hp->n_layer; l++) {
        struct eng_layer_weights *L = &w->layers[l];
        struct {
            const char *suffix;
            struct eng_mat *m;
            int64_t n_cols, n_rows;
        } mats[] = {
            {"attn_q", &L->wq, E, hp->q_dim},      {"attn_k", &L->wk, E, hp->kv_dim},
            {"attn_v", &L->wv, E, hp->kv_dim},     {"attn_output", &L->wo, hp->q_dim, E},
            {"ffn_gate", &L->w_gate, E, hp->n_ff}, {"ffn_up", &L->w_up, E, hp->n_ff},
            {"ffn_down", &L->w_down, hp->n_ff, E},
        };
        for (size_t i = 0; i < sizeof(mats) / sizeof(mats[0]); i++) {
            snprintf(name, sizeof(name), "blk.%d.%s.weight", l, mats[i].suffix);
            if ((rc = bind_mat(g, be, name, mats[i].n_cols, mats[i].n_rows, mats[i].m, err)) < 0)
                return rc;
        }
        struct {
            const char *suffix;
            const float **v;
            int64_t n;
            bool required;
        } vecs[] = {
            {"attn_norm.weight", &L->attn_norm, E, true},
            {"ffn_norm.weight", &L->ffn_norm, E, true},
            {"attn_q.bias", &L->bq, hp->q_dim, hp->arch == ENG_ARCH_QWEN2},
            {"attn_k.bias", &L->bk, hp->kv_dim, hp->arch == ENG_ARCH_QWEN2},
            {"attn_v.bias", &L->bv, hp->kv_dim, hp->arch == ENG_ARCH_QWEN2},
            {"attn_q_norm.weight", &L->q_norm, HD, hp->qk_norm},
            {"attn_k_norm.weight", &L->k_norm, HD, hp->qk_norm},
            {"post_attention_norm.weight", &L->attn_post_norm, E, hp->post_norms},
            {"post_ffw_norm.weight", &L->ffn_post_norm, E, hp->post_norms},
        };
        for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
            snprintf(name, sizeof(name), "blk.%d.%s", l, vecs[i].suffix);
            rc = vecs[i].required ? load_vec(g, name, vecs[i].n, &cur, vecs[i].v, err)
                                  : load_opt_vec(g, name, vecs[i].n, &cur, vecs[i].v, err);
            if (rc < 0) return rc;
        }
    }
    if ((rc = load_vec(g, "output_norm.weight", E, &cur, &w->output_norm, err)) < 0) return rc;
    if (eng_gguf_find_tensor(g, "output.weight")) {
        if ((rc = bind_mat(g, be, "output.weight", E, hp->n_vocab, &w->output, err)) < 0) return rc;
    } else {
        w->output = w->tok_embd;
        w->tied_output = true;
    }
    if ((rc = load_opt_vec(g, "output.bias", hp->n_vocab, &cur, &w->output_bias, err)) < 0)
        return rc;
    return 0;
}

static void free_weights(struct eng_weights *w)
{
    free(w->layers);
    free(w->vecs);
    memset(w, 0, sizeof(*w));
}

/* ---- run state ---- */

/* The largest matmul scratch any call of the forward pass needs for B rows (the calls of
 * forward_rows: Q/K/V together, Wo, gate/up together, down; the output for up to B rows). */
static size_t max_act_bytes(const struct eng_model *m, int B)
{
    size_t (*act_bytes)(void *, int, const struct eng_mat *const *, int) =
        m->be.ops->matmul_act_bytes;
    void *ctx = m->be.ctx;
    const struct eng_mat *out = &m->w.output;
    size_t best = act_bytes(ctx, 1, &out, B);
    for (int l = 0; l < m->hp.n_layer; l++) {
        const struct eng_layer_weights *L = &m->w.layers[l];
        const struct eng_mat *qkv[] = {&L->wq, &L->wk, &L->wv}, *gu[] = {&L->w_gate, &L->w_up};
        const struct eng_mat *wo = &L->wo, *wd = &L->w_down;
        const size_t need[] = {act_bytes(ctx, 3, qkv, B), act_bytes(ctx, 1, &wo, B),
                               act_bytes(ctx, 2, gu, B), act_bytes(ctx, 1, &wd, B)};
        for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
            if (need[i] > best) best = need[i];
    }
    return best;
}

/* The activation buffers of a forward pass over up to B rows (no KV cache). */
static void alloc_buffers(const struct eng_model *m, struct eng_run_state *s, int B)
{
    const struct eng_hparams *hp = &m->hp;
    const size_t b = (size_t)B;
    s->max_rows = B;
    s->x = ag_calloc(b * (size_t)hp->n_embd, sizeof(float));
    s->xb = ag_calloc(b * (size_t)hp->n_embd, sizeof(float));
    s->xb2 = ag_calloc(b * (size_t)hp->n_embd, sizeof(float));
    s->q = ag_calloc(b * (size_t)hp->q_dim, sizeof(float));
    s->k = ag_calloc(b * (size_t)hp->kv_dim, sizeof(float));
    s->v = ag_calloc(b * (size_t)hp->kv_dim, sizeof(float));
    s->att = ag_calloc(b * (size_t)hp->q_dim, sizeof(float));
    s->hb = ag_calloc(b * (size_t)hp->n_ff, sizeof(float));
    s->hb2 = ag_calloc(b * (size_t)hp->n_ff, sizeof(float));
    s->rope_cs = ag_calloc(b * (size_t)hp->n_rot, sizeof(float));
    s->rope_cs_swa = ag_calloc(b * (size_t)hp->n_rot, sizeof(float));
    s->row_pos = ag_calloc(b, sizeof(*s->row_pos));
    s->row_pages = ag_calloc(b, sizeof(*s->row_pages));
    s->row_tiled = ag_calloc(b, sizeof(*s->row_tiled));
    s->row_dst = ag_calloc(b, sizeof(*s->row_dst));
    s->out_rows = ag_calloc(b, sizeof(*s->out_rows));
    s->tokens = ag_calloc(b, sizeof(*s->tokens));
    s->act_bytes = max_act_bytes(m, B);
    s->act = ag_calloc(s->act_bytes ? s->act_bytes : 1, 1);
}

static int build_run_state(struct eng_model *m, struct ag_err *err)
{
    const struct eng_hparams *hp = &m->hp;
    struct eng_run_state *s = &m->s;

    alloc_buffers(m, s, ENG_MODEL_MAX_BATCH);
    s->logits = ag_calloc((size_t)hp->n_vocab, sizeof(float));
    /* The KV cache is the one buffer whose size the caller's n_ctx drives: fail, not abort. */
    size_t per = (size_t)hp->n_layer * (size_t)m->n_ctx; /* fits: both bounded well below 2^32 */
    const size_t esize = eng_kv_type_size(m->kv_type);
    if (per > SIZE_MAX / esize / (size_t)hp->kv_dim / 2)
        return ag_err_set(err, AG_ENOMEM, "KV cache of %d positions does not fit in memory",
                          m->n_ctx);
    s->key_cache = calloc(per * (size_t)hp->kv_dim, esize);
    s->value_cache = calloc(per * (size_t)hp->kv_dim, esize);
    if (!s->key_cache || !s->value_cache)
        return ag_err_set(err, AG_ENOMEM, "cannot allocate a KV cache of %d positions (%zu MiB)",
                          m->n_ctx, 2 * per * (size_t)hp->kv_dim * esize >> 20);
    return 0;
}

static void free_run_state(struct eng_run_state *s)
{
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->rope_cs);
    free(s->rope_cs_swa);
    free(s->row_pos);
    free(s->row_pages);
    free(s->row_tiled);
    free(s->row_dst);
    free(s->out_rows);
    free(s->tokens);
    free(s->logits);
    free(s->act);
    free(s->key_cache);
    free(s->value_cache);
    memset(s, 0, sizeof(*s));
}

/* ---- load and free ---- */

static size_t pack_model(struct eng_model *m, bool batched);

int eng_model_load_gguf(struct eng_gguf *g, const struct eng_model_params *p,
                        struct eng_model **out, struct ag_err *err)
{
    *out = NULL;
    int n_ctx = p->n_ctx;
    if (p->n_threads < 1)
        return ag_err_set(err, AG_EINVAL, "%s: threads %d < 1", eng_gguf_name(g), p->n_threads);
    if (p->kv_type != ENG_KV_F16 && p->kv_type != ENG_KV_F32)
        return ag_err_set(err, AG_EINVAL, "%s: unknown KV cache type %d", eng_gguf_name(g),
                          (int)p->kv_type);
    struct eng_model *m = ag_calloc(1, sizeof(*m));
    m->gguf = g;
    m->n_threads = p->n_threads;
    m->kv_type = p->kv_type;
    int rc = load_hparams(g, &m->hp, err);
    if (rc < 0) goto fail;
    if (n_ctx == 0) n_ctx = m->hp.n_ctx_train;
    if (p->n_ctx == 0 && p->n_ctx_cap > 0 && n_ctx > p->n_ctx_cap) n_ctx = p->n_ctx_cap;
    if (n_ctx < 1 || n_ctx > m->hp.n_ctx_train) {
        rc = ag_err_set(err, AG_EINVAL, "%s: context %d is outside 1..%d (the trained context)",
                        eng_gguf_name(g), n_ctx, m->hp.n_ctx_train);
        goto fail;
    }
    m->n_ctx = n_ctx;
    /* The backend first: which weight types it multiplies and the scratch it needs are its. */
    if ((rc = eng_backend_cpu_init(&m->be, p->n_threads, n_ctx, m->hp.head_dim, err)) < 0)
        goto fail;
    if ((rc = build_weights(g, &m->hp, &m->be, &m->w, err)) < 0) goto fail;
    if ((rc = build_run_state(m, err)) < 0) goto fail;
    pack_model(m, false); /* what keeps llama.cpp's bits (CPU: Q4_K and Q5_0) */
    *out = m;
    return 0;
fail:
    eng_model_free(m);
    return rc;
}

int eng_model_load(const char *path, int n_threads, int n_ctx, struct eng_model **out,
                   struct ag_err *err)
{
    struct eng_gguf *g;
    *out = NULL;
    int rc = eng_gguf_open(path, &g, err);
    if (rc < 0) return rc;
    struct eng_model_params p = {.n_threads = n_threads, .n_ctx = n_ctx, .kv_type = ENG_KV_F16};
    rc = eng_model_load_gguf(g, &p, out, err);
    if (rc < 0) {
        eng_gguf_close(g);
        return rc;
    }
    (*out)->owns_gguf = true;
    return 0;
}

void eng_model_free(struct eng_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_packs; i++) free(m->packs[i]);
    free(m->packs);
    eng_backend_release(&m->be);
    free_run_state(&m->s);
    free_weights(&m->w);
    if (m->owns_gguf) eng_gguf_close(m->gguf);
    free(m);
}

/* ---- forward ---- */

/* y = rmsnorm(x) * w over n_tok rows of n, when w is set; otherwise nothing. */
static void norm_if(const struct eng_model *m, float *y, const float *x, const float *w, int n_tok,
                    int n)
{
    if (w) m->be.ops->rmsnorm(m->be.ctx, y, x, w, n_tok, n, m->hp.rms_eps);
}

/* The rows of one forward pass: tokens of one or more sequences, each at its own position,
 * with its sequence's block table (or NULL: the model's own contiguous cache). */
struct fwd_rows {
    int n;                       /* rows, 1..s->max_rows */
    const int32_t *tokens;       /* (n) */
    const int32_t *pos;          /* (n) position of each row */
    const int32_t *const *pages; /* (n) block table of each row's sequence, or NULL */
    const bool *tiled;           /* (n) tiled attention for the row (see struct eng_attn) */
    int n_out;                   /* rows whose logits are wanted, <= n */
    const int32_t *out_rows;     /* (n_out) their indexes */
    float *logits;               /* (n_out, n_vocab) */
};

/* Runs one forward pass over f's rows with the buffers of s and the cache kv. */
static void forward_rows(struct eng_model *m, struct eng_run_state *s,
                         const struct eng_kv_store *kv, const struct fwd_rows *f)
{
    const struct eng_hparams *hp = &m->hp;
    const struct eng_backend_ops *ops = m->be.ops;
    void *ctx = m->be.ctx;
    const int E = hp->n_embd, HD = hp->head_dim, n = f->n;
    const size_t esize = eng_kv_type_size(m->kv_type);
    const size_t row_bytes = (size_t)hp->kv_dim * esize;
    const size_t layer_kv = (size_t)kv->n_rows * row_bytes; /* bytes per layer */
    const int32_t mask = (int32_t)((1u << kv->page_shift) - 1);

    ops->get_rows(ctx, s->x, &m->w.tok_embd, f->tokens, n);
    if (hp->embd_scale != 1.0f) ops->scale(ctx, s->x, hp->embd_scale, (int64_t)n * E);
    for (int t = 0; t < n; t++) {
        eng_rope_cache(s->rope_cs + t * hp->n_rot, f->pos[t], hp->n_rot, hp->rope_base);
        if (hp->n_swa > 0)
            eng_rope_cache(s->rope_cs_swa + t * hp->n_rot, f->pos[t], hp->n_rot, hp->rope_base_swa);
        /* The cache row each new key and value goes to. */
        const int p = f->pos[t];
        s->row_dst[t] =
            f->pages ? ((int64_t)f->pages[t][p >> kv->page_shift] << kv->page_shift) | (p & mask)
                     : p;
    }

    for (int l = 0; l < hp->n_layer; l++) {
        const struct eng_layer_weights *L = &m->w.layers[l];
        unsigned char *kc = (unsigned char *)kv->k + l * layer_kv;
        unsigned char *vc = (unsigned char *)kv->v + l * layer_kv;
        const bool swa = eng_hparams_is_swa(hp, l);
        const float *cs = swa ? s->rope_cs_swa : s->rope_cs;

        /* Attention. */
        ops->rmsnorm(ctx, s->xb, s->x, L->attn_norm, n, E, hp->rms_eps);
        const struct eng_mat *qkv[] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[] = {s->q, s->k, s->v};
        ops->matmul(ctx, 3, qkv, qkv_out, s->xb, n, s->act);
        if (L->bq) ops->add_rows(ctx, s->q, L->bq, n, hp->q_dim);
        if (L->bk) ops->add_rows(ctx, s->k, L->bk, n, hp->kv_dim);
        if (L->bv) ops->add_rows(ctx, s->v, L->bv, n, hp->kv_dim);
        norm_if(m, s->q, s->q, L->q_norm, n * hp->n_head, HD);
        ops->rope(ctx, s->q, n, hp->n_head, HD, hp->n_rot, cs, hp->rope_neox);
        norm_if(m, s->k, s->k, L->k_norm, n * hp->n_head_kv, HD);
        ops->rope(ctx, s->k, n, hp->n_head_kv, HD, hp->n_rot, cs, hp->rope_neox);
        if (hp->q_scale != 1.0f) ops->scale(ctx, s->q, hp->q_scale, (int64_t)n * hp->q_dim);
        if (!f->pages) { /* contiguous rows pos[0].. */
            ops->store(ctx, kc + s->row_dst[0] * row_bytes, m->kv_type, s->k,
                       (int64_t)n * hp->kv_dim);
            ops->store(ctx, vc + s->row_dst[0] * row_bytes, m->kv_type, s->v,
                       (int64_t)n * hp->kv_dim);
        } else {
            for (int t = 0; t < n; t++) {
                ops->store(ctx, kc + s->row_dst[t] * row_bytes, m->kv_type,
                           s->k + (size_t)t * hp->kv_dim, hp->kv_dim);
                ops->store(ctx, vc + s->row_dst[t] * row_bytes, m->kv_type,
                           s->v + (size_t)t * hp->kv_dim, hp->kv_dim);
            }
        }
        struct eng_attn a = {
            .out = s->att,
            .q = s->q,
            .k = kc,
            .v = vc,
            .kv_type = m->kv_type,
            .n_tok = n,
            .window = swa ? hp->n_swa : 0,
            .n_head = hp->n_head,
            .n_head_kv = hp->n_head_kv,
            .head_dim = HD,
            .kv_stride = hp->kv_dim,
            .scale = hp->kq_scale,
            .row_pos = f->pos,
            .row_pages = f->pages,
            .row_tiled = f->tiled,
            .page_shift = kv->page_shift,
        };
        ops->attention(ctx, &a);
        const struct eng_mat *wo = &L->wo;
        ops->matmul(ctx, 1, &wo, &s->xb2, s->att, n, s->act);
        norm_if(m, s->xb2, s->xb2, L->attn_post_norm, n, E);
        ops->add(ctx, s->x, s->xb2, (int64_t)n * E);

        /* Feed-forward. */
        ops->rmsnorm(ctx, s->xb, s->x, L->ffn_norm, n, E, hp->rms_eps);
        const struct eng_mat *gu[] = {&L->w_gate, &L->w_up};
        float *gu_out[] = {s->hb, s->hb2};
        ops->matmul(ctx, 2, gu, gu_out, s->xb, n, s->act);
        if (hp->ffn_act == ENG_FFN_GELU)
            ops->geglu(ctx, s->hb, s->hb, s->hb2, n, hp->n_ff);
        else
            ops->swiglu(ctx, s->hb, s->hb, s->hb2, n, hp->n_ff);
        const struct eng_mat *wd = &L->w_down;
        ops->matmul(ctx, 1, &wd, &s->xb2, s->hb, n, s->act);
        norm_if(m, s->xb2, s->xb2, L->ffn_post_norm, n, E);
        ops->add(ctx, s->x, s->xb2, (int64_t)n * E);
    }

    if (f->n_out > 0) {
        for (int i = 0; i < f->n_out; i++)
            memcpy(s->xb + (size_t)i * E, s->x + (size_t)f->out_rows[i] * E, E * sizeof(float));
        ops->rmsnorm(ctx, s->xb, s->xb, m->w.output_norm, f->n_out, E, hp->rms_eps);
        const struct eng_mat *wout = &m->w.output;
        ops->matmul(ctx, 1, &wout, &f->logits, s->xb, f->n_out, s->act);
        if (m->w.output_bias)
            ops->add_rows(ctx, f->logits, m->w.output_bias, f->n_out, hp->n_vocab);
    }
}

/* Runs n (1..ENG_MODEL_MAX_BATCH) tokens of the model's own sequence at positions
 * pos..pos+n-1; computes the logits of the last one into s->logits when want_logits, or of
 * every row into all_logits (n, n_vocab) when that is set. */
static void forward_batch(struct eng_model *m, const int32_t *tokens, int n, int pos,
                          bool want_logits, float *all_logits, bool long_prompt)
{
    struct eng_run_state *s = &m->s;
    const struct eng_kv_store kv = {
        .k = s->key_cache, .v = s->value_cache, .n_rows = m->n_ctx, .page_shift = 0};
    for (int t = 0; t < n; t++) {
        s->row_pos[t] = pos + t;
        s->row_tiled[t] = long_prompt;
        s->out_rows[t] = t;
    }
    struct fwd_rows f = {
        .n = n,
        .tokens = tokens,
        .pos = s->row_pos,
        .tiled = s->row_tiled,
        .n_out = all_logits    ? n
                 : want_logits ? 1
                               : 0,
        .out_rows = all_logits ? s->out_rows : s->out_rows + n - 1,
        .logits = all_logits ? all_logits : s->logits,
    };
    forward_rows(m, s, &kv, &f);
}

/* Checks a forward call's arguments (see eng_model_forward). */
static int check_forward(const struct eng_model *m, const int32_t *tokens, int n, int pos,
                         struct ag_err *err)
{
    if (n < 1) return ag_err_set(err, AG_EINVAL, "forward: %d tokens", n);
    if (pos < 0 || pos > m->n_past)
        return ag_err_set(err, AG_EINVAL, "forward: position %d is outside 0..%d (filled)", pos,
                          m->n_past);
    if (n > m->n_ctx - pos)
        return ag_err_set(err, AG_ECTXOVERFLOW,
                          "forward: %d tokens at position %d do not fit in the context of %d", n,
                          pos, m->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return ag_err_set(err, AG_EINVAL, "forward: token %d (index %d) is outside 0..%d",
                              tokens[i], i, m->hp.n_vocab - 1);

    return 0;
}

int eng_model_forward(struct eng_model *m, const int32_t *tokens, int n, int pos, float **logits,
                      struct ag_err *err)
{
    int rc = check_forward(m, tokens, n, pos, err);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i += ENG_MODEL_MAX_BATCH) {
        int nb = n - i < ENG_MODEL_MAX_BATCH ? n - i : ENG_MODEL_MAX_BATCH;
        forward_batch(m, tokens + i, nb, pos + i, i + nb == n, NULL, n >= ENG_MODEL_LONG_PROMPT);
        m->n_past = pos + i + nb;
    }
    if (logits) *logits = m->s.logits;
    return 0;
}

int eng_model_forward_all(struct eng_model *m, const int32_t *tokens, int n, int pos, float *logits,
                          struct ag_err *err)
{
    int rc = check_forward(m, tokens, n, pos, err);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i += ENG_MODEL_MAX_BATCH) {
        int nb = n - i < ENG_MODEL_MAX_BATCH ? n - i : ENG_MODEL_MAX_BATCH;
        forward_batch(m, tokens + i, nb, pos + i, false, logits + (size_t)i * m->hp.n_vocab,
                      n >= ENG_MODEL_LONG_PROMPT);
        m->n_past = pos + i + nb;
    }
    return 0;
}

void eng_model_reset(struct eng_model *m)
{
    m->n_past = 0;
}

const struct eng_hparams *eng_model_hparams(const struct eng_model *m)
{
    return &m->hp;
}

int eng_model_n_vocab(const struct eng_model *m)
{
    return m->hp.n_vocab;
}

int eng_model_n_ctx(const struct eng_model *m)
{
    return m->n_ctx;
}

int eng_model_n_past(const struct eng_model *m)
{
    return m->n_past;
}

struct eng_gguf *eng_model_gguf(const struct eng_model *m)
{
    return m->gguf;
}

/* ---- many sequences ---- */

/* Asks for transparent huge pages over the 2 MiB-aligned part of [p, p + bytes) before it is
 * first written: the KV store and the packed weights are read in long strides every step, and
 * with 4 KiB pages a step spends much of its time in TLB misses. Only advice: where the kernel
 * has no huge pages to give, nothing changes. */
static void advise_huge(void *p, size_t bytes)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t e = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
}

int eng_kv_store_init(const struct eng_model *m, int n_pages, int page_shift,
                      struct eng_kv_store *kv, struct ag_err *err)
{
    memset(kv, 0, sizeof(*kv));
    if (n_pages < 1 || page_shift < 0 || page_shift > 12)
        return ag_err_set(err, AG_EINVAL, "KV store: %d pages of 2^%d rows", n_pages, page_shift);
    const size_t esize = eng_kv_type_size(m->kv_type);
    const size_t rows = (size_t)n_pages << page_shift;
    const size_t per = (size_t)m->hp.n_layer * rows;
    if (rows > (size_t)INT32_MAX || per > SIZE_MAX / esize / (size_t)m->hp.kv_dim / 2)
        return ag_err_set(err, AG_ENOMEM, "KV store of %zu rows does not fit in memory", rows);
    /* Mapped, not calloc'd: page-aligned, so every row starts a cache line (a head's 128 bytes
     * take two lines, not three), and zero pages only where rows are written. */
    kv->bytes = per * (size_t)m->hp.kv_dim * esize;
    kv->k = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    kv->v = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (kv->k == MAP_FAILED) kv->k = NULL;
    if (kv->v == MAP_FAILED) kv->v = NULL;
    if (kv->k) advise_huge(kv->k, kv->bytes);
    if (kv->v) advise_huge(kv->v, kv->bytes);
    if (!kv->k || !kv->v) {
        eng_kv_store_release(kv);
        return ag_err_set(err, AG_ENOMEM, "cannot allocate a KV store of %zu positions (%zu MiB)",
                          rows, 2 * per * (size_t)m->hp.kv_dim * esize >> 20);
    }
    kv->n_rows = (int64_t)rows;
    kv->n_pages = n_pages;
    kv->page_shift = page_shift;
    return 0;
}

void eng_kv_store_release(struct eng_kv_store *kv)
{
    if (kv->k) munmap(kv->k, kv->bytes);
    if (kv->v) munmap(kv->v, kv->bytes);
    memset(kv, 0, sizeof(*kv));
}

int eng_batch_buf_new(const struct eng_model *m, int max_rows, struct eng_batch_buf **out,
                      struct ag_err *err)
{
    *out = NULL;
    if (max_rows < 1 || max_rows > 4096)
        return ag_err_set(err, AG_EINVAL, "batch of %d rows is outside 1..4096", max_rows);
    struct eng_batch_buf *b = ag_calloc(1, sizeof(*b));
    alloc_buffers(m, &b->s, max_rows);
    *out = b;
    return 0;
}

void eng_batch_buf_free(struct eng_batch_buf *b)
{
    if (!b) return;
    free_run_state(&b->s);
    free(b);
}

int eng_model_forward_seqs(struct eng_model *m, struct eng_batch_buf *b,
                           const struct eng_kv_store *kv, const struct eng_batch_seq *seqs,
                           int n_seq, float *logits, struct ag_err *err)
{
    struct eng_run_state *s = &b->s;
    int n = 0, n_out = 0;
    for (int i = 0; i < n_seq; i++) {
        const struct eng_batch_seq *q = &seqs[i];
        if (q->n < 1 || q->n > s->max_rows - n)
            return ag_err_set(err, AG_EINVAL, "forward: sequence %d has %d rows (%d of %d used)", i,
                              q->n, n, s->max_rows);
        if (q->pos < 0 || q->pos + q->n > m->n_ctx)
            return ag_err_set(err, AG_EINVAL,
                              "forward: sequence %d at positions %d..%d is outside the context "
                              "of %d",
                              i, q->pos, q->pos + q->n - 1, m->n_ctx);
        const int last_page = (q->pos + q->n - 1) >> kv->page_shift;
        for (int p = 0; p <= last_page; p++)
            if (q->pages[p] < 0 || q->pages[p] >= kv->n_pages)
                return ag_err_set(err, AG_EINVAL, "forward: sequence %d: page %d is %d, not a page",
                                  i, p, q->pages[p]);
        for (int t = 0; t < q->n; t++) {
            if (q->tokens[t] < 0 || q->tokens[t] >= m->hp.n_vocab)
                return ag_err_set(err, AG_EINVAL,
                                  "forward: token %d of sequence %d is outside 0..%d", q->tokens[t],
                                  i, m->hp.n_vocab - 1);
            s->tokens[n] = q->tokens[t];
            s->row_pos[n] = q->pos + t;
            s->row_pages[n] = q->pages;
            s->row_tiled[n] = q->prefill;
            n++;
        }
        if (q->want_logits) s->out_rows[n_out++] = n - 1;
    }
    if (n == 0) return ag_err_set(err, AG_EINVAL, "forward: no rows");
    struct fwd_rows f = {
        .n = n,
        .tokens = s->tokens,
        .pos = s->row_pos,
        .pages = (const int32_t *const *)s->row_pages,
        .tiled = s->row_tiled,
        .n_out = n_out,
        .out_rows = s->out_rows,
        .logits = logits,
    };
    m->be.ops->row_invariant(m->be.ctx, true);
    forward_rows(m, s, kv, &f);
    m->be.ops->row_invariant(m->be.ctx, false);
    return 0;
}

/* Adds the backend's packed copy of w, if it has one (and `batched` asks for the copies only
 * row-invariant batches read). Returns the bytes added. */
static size_t pack_mat(struct eng_model *m, struct eng_mat *w, bool batched)
{
    if (!w->qt || w->packed) return 0;
    unsigned flags;
    const size_t bytes = m->be.ops->pack_bytes(m->be.ctx, w, batched, &flags);
    if (bytes == 0) return 0;
    /* Cache-line aligned: the kernels' 64-byte loads of a group block never straddle two
     * lines (malloc's 16-byte alignment made every one of them do so). */
    void *p = ag_malloc_aligned(64, bytes);
    advise_huge(p, bytes);
    m->be.ops->pack(m->be.ctx, p, w);
    /* Every matmul takes the packed copy (CPU: Q5_0, whose bits are the dot product's for any
     * number of tokens), so the mapped original need not stay resident. */
    if (flags & ENG_PACK_REPLACES)
        eng_gguf_drop_range(m->gguf, w->data, (size_t)w->n_rows * w->row_bytes);
    /* A tied output matrix is also the embedding table: lookups read the packed copy too (the
     * same values), and the original (Gemma 3: 178 MB) leaves the resident set. Matmuls of a
     * backend that is not row-invariant would still read it, from the page cache. */
    if ((flags & ENG_PACK_GET_ROWS) && w == &m->w.output && m->w.tied_output) {
        m->w.tok_embd.packed = p;
        eng_gguf_drop_range(m->gguf, w->data, (size_t)w->n_rows * w->row_bytes);
    }
    w->packed = p;
    m->packs = ag_realloc(m->packs, (size_t)(m->n_packs + 1) * sizeof(void *));
    m->packs[m->n_packs++] = p;
    return bytes;
}

/* Packs what has a packed kernel (pack_mat) among the layer matrices and the output. */
static size_t pack_model(struct eng_model *m, bool batched)
{
    size_t total = 0;
    for (int l = 0; l <= m->hp.n_layer; l++) {
        struct eng_mat *mats[7] = {NULL};
        if (l < m->hp.n_layer) {
            struct eng_layer_weights *L = &m->w.layers[l];
            struct eng_mat *lm[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                    &L->w_gate, &L->w_up, &L->w_down};
            memcpy(mats, lm, sizeof(lm));
        } else {
            mats[0] = &m->w.output; /* last: the output projection */
        }
        for (size_t i = 0; i < 7; i++)
            if (mats[i]) total += pack_mat(m, mats[i], batched);
    }
    return total;
}

size_t eng_model_pack_batched(struct eng_model *m)
{
    return pack_model(m, true);
}
