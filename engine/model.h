/*
 * model.h - a transformer loaded from a GGUF file, its run state and the forward pass
 * (model.c): the in-process model API of engine.h (agentd-infer and the benchmarks use it; the
 * daemon goes through the service, serve.h).
 *
 * Layout after llama2.c: `struct eng_hparams` (what the file says, here), and in model_int.h
 * `struct eng_weights` (pointers into the file's mapping; quantized weights are never copied)
 * and `struct eng_run_state` (every activation buffer and the KV cache, allocated once at load:
 * nothing is allocated per token); struct eng_model is opaque outside model.c. The forward pass
 * calls the backend's ops table (ops.h) only, so another backend runs the same code.
 *
 * Architectures (what differs is data in struct eng_hparams, not separate code paths):
 *   - `llama` (SmolLM2, Llama 3.x): RMSNorm, grouped-query attention with RoPE in ggml's
 *     "normal" mode (pairs of adjacent values: the GGUF converter permutes Q and K rows from
 *     Hugging Face's rotate-half order into it), SwiGLU feed-forward.
 *   - `qwen2`: llama plus biases on Q, K and V, and NEOX RoPE (pairs i, i + n_rot/2).
 *   - `gemma3`: the embedding scaled by sqrt(n_embd); RMSNorm of each query and key head
 *     (QK-norm) before NEOX RoPE; queries scaled by 1/sqrt(head_dim) instead of the scores;
 *     "sandwich" norms (a second RMSNorm on the attention and feed-forward outputs before
 *     each residual add); GeGLU (tanh GELU) feed-forward; layers alternate between sliding-window
 *     attention (a key is seen when query position - key position < n_swa) with RoPE base
 *     rope_base_swa, and every swa_pattern-th layer global attention with rope_base.
 *     Norm weights in Gemma GGUF files already include Gemma's "1 +".
 * Every architecture takes its output projection from token_embd when the file has no
 * output.weight, and adds biases on Q, K, V or the output where the file has them.
 *
 * KV cache: (n_layer, n_ctx, kv_dim) keys and the same for values, one sequence, F16 by
 * default (as llama.cpp; the CPU backend then reproduces llama.cpp's arithmetic bit for bit, see
 * cpu/ggml_kernels.h) or F32 (plain float attention). A forward pass that would go past n_ctx fails
 * with AG_ECTXOVERFLOW; nothing is ever truncated or shifted.
 *
 * Threads: a model is used by one thread at a time; it owns its compute threads.
 */
#ifndef ENG_MODEL_H
#define ENG_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "../base/base.h"
#include "gguf.h"
#include "ops.h"

/* Limits on what a file may declare, beyond "its tensors must have these shapes". */
#define ENG_MODEL_MAX_LAYERS   512
#define ENG_MODEL_MAX_EMBD     65536
#define ENG_MODEL_MAX_HEADS    1024
#define ENG_MODEL_MAX_HEAD_DIM 1024
#define ENG_MODEL_MAX_FF       (1 << 20)
#define ENG_MODEL_MAX_VOCAB    (1 << 22)
#define ENG_MODEL_MAX_CTX      (1 << 24)
/* Tokens per forward batch: a longer prompt is processed in batches of this many rows. */
#define ENG_MODEL_MAX_BATCH 32
/* A forward call of this many tokens or more runs attention with float accumulation (struct
 * eng_attn.tiled), as llama.cpp does for a batch of 64 or more rows; shorter calls (every decode
 * step, short prompts) reproduce llama.cpp's one-row kernel bit for bit. */
#define ENG_MODEL_LONG_PROMPT 64

enum eng_arch {
    ENG_ARCH_LLAMA = 0,
    ENG_ARCH_QWEN2 = 1,
    ENG_ARCH_GEMMA3 = 2,
};

/* The feed-forward gate's activation. */
enum eng_ffn_act {
    ENG_FFN_SILU = 0, /* SwiGLU */
    ENG_FFN_GELU = 1, /* GeGLU, tanh approximation */
};

/* Hyperparameters, from the file's metadata (keys prefixed with the architecture name). */
struct eng_hparams {
    enum eng_arch arch;       /* from general.architecture */
    int n_vocab;              /* tokenizer.ggml.tokens length (= <arch>.vocab_size when present) */
    int n_ctx_train;          /* <arch>.context_length */
    int n_embd;               /* <arch>.embedding_length */
    int n_layer;              /* <arch>.block_count, 1..ENG_MODEL_MAX_LAYERS */
    int n_head;               /* <arch>.attention.head_count */
    int n_head_kv;            /* <arch>.attention.head_count_kv (default n_head), divides n_head */
    int head_dim;             /* <arch>.attention.key_length, default n_embd / n_head */
    int n_rot;                /* <arch>.rope.dimension_count, default head_dim; even, <= head_dim */
    int n_ff;                 /* <arch>.feed_forward_length */
    int q_dim;                /* n_head * head_dim */
    int kv_dim;               /* n_head_kv * head_dim */
    float rms_eps;            /* <arch>.attention.layer_norm_rms_epsilon */
    float rope_base;          /* <arch>.rope.freq_base, default 10000 */
    bool rope_neox;           /* RoPE pairs (i, i + n_rot/2) rather than (2i, 2i+1) */
    int n_swa;                /* <arch>.attention.sliding_window, 0: every layer global */
    int swa_pattern;          /* with n_swa: layer l is global when l % swa_pattern ==
                                 swa_pattern - 1 (<arch>.attention.sliding_window_pattern, default 6) */
    float rope_base_swa;      /* RoPE base of sliding-window layers (<arch>.rope.freq_base_swa,
                                 default 10000) */
    float embd_scale;         /* the token embedding is multiplied by this (1: not at all) */
    float q_scale;            /* queries are multiplied by this before attention (1: not at all) */
    float kq_scale;           /* scores q.k are multiplied by this (usually 1/sqrt(head_dim)) */
    bool qk_norm;             /* RMSNorm of every query and key head (attn_q_norm, attn_k_norm) */
    bool post_norms;          /* RMSNorm of the attention and FFN outputs (post_attention_norm,
                                 post_ffw_norm) before the residual adds */
    enum eng_ffn_act ffn_act; /* gate activation */
};

/* Whether layer l uses sliding-window attention. */
static inline bool eng_hparams_is_swa(const struct eng_hparams *hp, int l)
{
    return hp->n_swa > 0 && l % hp->swa_pattern < hp->swa_pattern - 1;
}

/* The model (model_int.h): a forward pass's weights, buffers, KV cache and backend. */
struct eng_model;

/* How to build a model. Zero-initialized fields mean the defaults noted. */
struct eng_model_params {
    int n_threads;            /* compute threads including the caller, >= 1 */
    int n_ctx;                /* KV cache positions; 0: the trained context length */
    int n_ctx_cap;            /* with n_ctx 0 and this > 0: min(trained, n_ctx_cap) */
    enum eng_kv_type kv_type; /* ENG_KV_F16 (default, llama.cpp's numerics) or ENG_KV_F32 */
};

/* Opens path, checks it and builds everything a forward pass needs, with an F16 KV cache.
 * n_threads >= 1; n_ctx 0 means the trained context length, otherwise 1..n_ctx_train.
 * Errors: the file's (see eng_gguf_open), AG_EUNSUPPORTED (architecture, tensor type),
 * AG_EPARSE (a missing key or tensor, a shape that does not match: the message names the
 * tensor, expected and found shapes), AG_EINVAL (arguments, values out of range), AG_ENOMEM
 * (KV cache). */
int eng_model_load(const char *path, int n_threads, int n_ctx, struct eng_model **out,
                   struct ag_err *err);
/* The same from an open file, which the model borrows (g must outlive the model), with
 * explicit parameters. */
int eng_model_load_gguf(struct eng_gguf *g, const struct eng_model_params *p,
                        struct eng_model **out, struct ag_err *err);
void eng_model_free(struct eng_model *m); /* NULL is fine */

/* Runs tokens[0..n) at positions pos..pos+n-1 and sets *logits to the n_vocab logits after the
 * last one (valid until the next forward or free). pos may be at most eng_model_n_past(): a
 * smaller pos rewinds the sequence and overwrites the cache from there. Errors: AG_EINVAL
 * (n < 1, pos out of range, a token id outside the vocabulary: nothing is run),
 * AG_ECTXOVERFLOW (pos + n > n_ctx: nothing is run). */
int eng_model_forward(struct eng_model *m, const int32_t *tokens, int n, int pos, float **logits,
                      struct ag_err *err);
/* The same, writing the logits after every token into logits (n, n_vocab), caller-owned:
 * for teacher forcing and perplexity. */
int eng_model_forward_all(struct eng_model *m, const int32_t *tokens, int n, int pos, float *logits,
                          struct ag_err *err);
/* Forgets the sequence: the next forward starts at position 0. */
void eng_model_reset(struct eng_model *m);

/* ---- many sequences at once (the engine service's continuous batching) ----
 *
 * The service keeps the keys and values of all its sequences in one paged store: fixed-size
 * pages of rows, every layer with the same page numbering. A sequence owns a block table (page
 * ids for positions 0.., page i holding positions i * page_size ..); who owns which page, prefix
 * sharing and eviction are the caller's (kvcache.h). One forward call runs rows of several
 * sequences: a few prompt rows of some, one decode row of others. Each row's result depends only
 * on its own sequence (the backend is switched to row-invariant matmuls while these run), so a
 * sequence's tokens are the same alone or batched. */
struct eng_kv_store {
    void *k, *v;    /* (n_layer, n_rows, kv_dim) of the model's kv_type */
    int64_t n_rows; /* rows per layer: n_pages << page_shift */
    int n_pages;    /* pages */
    int page_shift; /* log2 of the page size */
    size_t bytes;   /* of k, and of v (mapped) */
};

/* One sequence's rows in a batch: tokens[0..n) at positions pos..pos+n-1. */
struct eng_batch_seq {
    const int32_t *tokens; /* (n) */
    int n;                 /* >= 1 */
    int pos;               /* position of tokens[0] */
    const int32_t *pages;  /* block table covering positions 0..pos+n-1 */
    bool prefill;          /* prompt rows: the tiled attention kernel (see struct eng_attn);
                              decode rows take the one-row kernel */
    bool want_logits;      /* the logits after the last row are wanted */
};

/* Activation buffers for forward calls of up to max_rows rows (model_int.h). */
struct eng_batch_buf;

/* Adds repacked copies of the layer matrices that a faster row-invariant batch kernel can use
 * (Q4_1 and Q8_0 with rows in multiples of 16, on CPUs with AVX-512 VNNI; cpu/mm_packed.h), as the
 * engine service does at start: batched decoding then costs far less per token, and results are no
 * longer llama.cpp's bits (equal up to rounding), which the service does not need. Returns the
 * bytes added (0 when nothing applies). */
size_t eng_model_pack_batched(struct eng_model *m);

/* Allocates a page store of n_pages pages of 2^page_shift rows for m's layers. Memory is
 * touched only when pages are written. Errors: AG_EINVAL, AG_ENOMEM. */
int eng_kv_store_init(const struct eng_model *m, int n_pages, int page_shift,
                      struct eng_kv_store *kv, struct ag_err *err);
void eng_kv_store_release(struct eng_kv_store *kv); /* zeroed is fine */

int eng_batch_buf_new(const struct eng_model *m, int max_rows, struct eng_batch_buf **out,
                      struct ag_err *err);
void eng_batch_buf_free(struct eng_batch_buf *b); /* NULL is fine */

/* Runs the rows of seqs[0..n_seq) in one pass (at most b's max_rows rows in all) and writes the
 * logits after the last row of each sequence with want_logits into logits, one n_vocab row per
 * such sequence in order. Errors: AG_EINVAL (no rows, too many, a token outside the vocabulary,
 * a position beyond n_ctx or not covered by valid pages: nothing is run). */
int eng_model_forward_seqs(struct eng_model *m, struct eng_batch_buf *b,
                           const struct eng_kv_store *kv, const struct eng_batch_seq *seqs,
                           int n_seq, float *logits, struct ag_err *err);

const struct eng_hparams *eng_model_hparams(const struct eng_model *m);
int eng_model_n_vocab(const struct eng_model *m);
int eng_model_n_ctx(const struct eng_model *m);
int eng_model_n_past(const struct eng_model *m);
struct eng_gguf *eng_model_gguf(const struct eng_model *m); /* lives as long as the model */

#endif
