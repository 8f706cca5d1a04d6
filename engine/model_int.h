/*
 * model_int.h - the layout of a loaded model (model.c): its weights, the buffers of a forward
 * pass and its backend, after llama2.c's TransformerWeights and RunState. Engine-internal, for
 * model.c and for tests that look inside; everything else goes through model.h's functions.
 */
#ifndef ENG_MODEL_INT_H
#define ENG_MODEL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model.h"
#include "ops.h"

/* One transformer block's weights. Matrices point into the mapping; vectors (norms, biases)
 * are F32 copies, NULL when the architecture or the file has none. */
struct eng_layer_weights {
    const float *attn_norm;      /* (n_embd) */
    struct eng_mat wq;           /* (q_dim rows, n_embd cols) */
    struct eng_mat wk;           /* (kv_dim, n_embd) */
    struct eng_mat wv;           /* (kv_dim, n_embd) */
    const float *bq, *bk, *bv;   /* (q_dim), (kv_dim), (kv_dim) biases or NULL */
    const float *q_norm;         /* (head_dim) with qk_norm */
    const float *k_norm;         /* (head_dim) with qk_norm */
    struct eng_mat wo;           /* (n_embd, q_dim) */
    const float *attn_post_norm; /* (n_embd) with post_norms */
    const float *ffn_norm;       /* (n_embd) */
    struct eng_mat w_gate;       /* (n_ff, n_embd) */
    struct eng_mat w_up;         /* (n_ff, n_embd) */
    struct eng_mat w_down;       /* (n_embd, n_ff) */
    const float *ffn_post_norm;  /* (n_embd) with post_norms */
};

struct eng_weights {
    struct eng_mat tok_embd;          /* (n_vocab rows, n_embd cols) */
    struct eng_layer_weights *layers; /* (n_layer) */
    const float *output_norm;         /* (n_embd) */
    struct eng_mat output;            /* (n_vocab, n_embd); token_embd's data when tied */
    const float *output_bias;         /* (n_vocab) or NULL */
    bool tied_output;                 /* the file has no output.weight */
    float *vecs;                      /* F32 copies of every norm and bias, end to end */
};

/* Every buffer a forward pass touches, allocated at load (B = ENG_MODEL_MAX_BATCH) or by
 * eng_batch_buf_new (B = its max_rows). */
struct eng_run_state {
    float *x;                  /* (B, n_embd) residual stream */
    float *xb;                 /* (B, n_embd) normed input of a sublayer */
    float *xb2;                /* (B, n_embd) output of wo and w_down, before the residual add */
    float *q;                  /* (B, q_dim) queries */
    float *k;                  /* (B, kv_dim) new keys, before they are stored in the cache */
    float *v;                  /* (B, kv_dim) new values, before they are stored in the cache */
    float *att;                /* (B, q_dim) attention output, input of wo */
    float *hb;                 /* (B, n_ff) gate, then silu(gate) * up */
    float *hb2;                /* (B, n_ff) up */
    float *rope_cs;            /* (B, n_rot) cos, sin pairs per row's position (rope_base) */
    float *rope_cs_swa;        /* (B, n_rot) the same for sliding-window layers (rope_base_swa) */
    float *logits;             /* (n_vocab) logits of the last token of the last forward */
    void *act;                 /* act_bytes: quantized matmul inputs */
    size_t act_bytes;          /* the largest matmul_act_bytes() of any matmul in the pass */
    void *key_cache;           /* (n_layer, n_ctx, kv_dim) of kv_type, RoPE applied; NULL in a
                                  struct eng_batch_buf */
    void *value_cache;         /* (n_layer, n_ctx, kv_dim) of kv_type */
    int max_rows;              /* B */
    int32_t *row_pos;          /* (B) position of each row */
    const int32_t **row_pages; /* (B) block table of each row's sequence */
    bool *row_tiled;           /* (B) tiled attention for the row */
    int64_t *row_dst;          /* (B) cache row of each row's new key and value */
    int32_t *out_rows;         /* (B) rows whose logits are wanted */
    int32_t *tokens;           /* (B) the rows' tokens */
};

struct eng_model {
    struct eng_gguf *gguf;    /* the mapped file; weights point into it */
    bool owns_gguf;           /* eng_model_free() closes gguf */
    struct eng_hparams hp;    /* hyperparameters */
    struct eng_weights w;     /* weights */
    struct eng_run_state s;   /* buffers and KV cache */
    struct eng_backend be;    /* compute backend (CPU) */
    int n_threads;            /* compute threads, the caller included */
    int n_ctx;                /* positions the KV cache holds */
    enum eng_kv_type kv_type; /* KV cache element type */
    int n_past;               /* positions 0..n_past-1 of the cache are filled */
    void **packs;             /* repacked weight copies (eng_model_pack_batched), owned */
    int n_packs;
};

/* Activation buffers for forward calls of up to max_rows rows. */
struct eng_batch_buf {
    struct eng_run_state s;
};

#endif
