/*
 * ops.h - the compute backend interface: the tensor operations a forward pass needs, as an ops
 * table behind an opaque context (after ggml-backend), the helpers every backend shares (ops.c)
 * and the CPU backend's constructor (cpu/ops_cpu.c).
 *
 * What: model code (model.c) never loops over tensor elements itself; it calls the operations
 * below through `struct eng_backend`. The CPU backend is the oracle; a CUDA or a remote backend
 * is another table with the same contract, tested against this one, and needs no change to the
 * model code.
 *
 * Conventions:
 *   - Activations are row-major F32 with one row per token: a "(n_tok, n)" buffer holds n_tok
 *     rows of n floats. Every op takes n_tok rows so that prefill can batch tokens; decode is
 *     n_tok = 1. Results for a row never depend on the other rows (so batching cannot change
 *     numbers).
 *   - Pointers are the backend's memory (host memory for the CPU backend). Weights are borrowed
 *     from the model file's mapping and live as long as the model.
 *   - Ops do not fail: shapes were checked when the model was loaded, and every op requires
 *     what its comment says. Nothing allocates after init.
 *   - A matmul quantizes its input once (to each weight's activation format, see quant.h) and
 *     then dots every weight row with it in integers. Several matrices that read the same
 *     input (Q, K and V; gate and up) go in one call: one quantization, one parallel loop.
 *   - What differs between backends at load time goes through the table too: the matmul
 *     scratch size, repacked weight copies and row invariance. The model code calls a backend's
 *     init and then nothing of it but its table.
 */
#ifndef ENG_OPS_H
#define ENG_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"
#include "quant.h"

#define ENG_MATMUL_MAX 4 /* matrices per matmul call */

/* A weight matrix: n_rows rows of n_cols values of one type. Computes y = W x per token. */
struct eng_mat {
    const void *data;           /* (n_rows, row_bytes) borrowed, usually from the mapping */
    const struct eng_qtype *qt; /* the weight type (eng_qtype_get); a backend picks its own
                                   kernels for qt->type */
    int64_t n_cols;             /* values per row: the input dimension */
    int64_t n_rows;             /* rows: the output dimension */
    size_t row_bytes;           /* bytes per row */
    const void *packed;         /* or NULL: a repacked copy (cpu/mm_packed.h, cpu/mm_q4_k.h) that
                                   the kernels of its type use instead of data (Q4_1 and
                                   Q8_0 only when the backend is row-invariant); a packed
                                   Q8_0 embedding table serves get_rows too */
};

/* KV cache element types. F16 is llama.cpp's default and what the CPU backend's attention
 * reproduces bit for bit (its flash-attention kernel: f16 queries, an f16 accumulator); F32 is
 * plain float attention, the accurate reference. */
enum eng_kv_type {
    ENG_KV_F16 = 0,
    ENG_KV_F32 = 1,
};

/* Arguments of one causal attention over a layer's KV cache. */
struct eng_attn {
    float *out;               /* (n_tok, n_head * head_dim) per head the weighted sum of V */
    const float *q;           /* (n_tok, n_head * head_dim) queries, RoPE applied */
    const void *k;            /* (n_kv, kv_stride) keys of positions 0.., RoPE applied, of
                                 kv_type; query head h reads KV head h / (n_head / n_head_kv)
                                 at element offset kv_head * head_dim */
    const void *v;            /* (n_kv, kv_stride) values, same layout */
    enum eng_kv_type kv_type; /* element type of k and v */
    int n_tok;                /* query rows */
    int pos;                  /* position of query row 0; row t sees keys 0..pos + t */
    int window;               /* 0, or a sliding window: row t sees only the keys p with
                                 pos + t - p < window */
    int n_head;               /* query heads, a multiple of n_head_kv */
    int n_head_kv;            /* KV heads */
    int head_dim;             /* values per head, at most the backend's max_head_dim */
    int kv_stride;            /* elements per KV cache row (at least n_head_kv * head_dim) */
    float scale;              /* multiplies q.k before the softmax, usually 1/sqrt(head_dim) */
    bool tiled;               /* F16 cache: the rows belong to a long prompt (llama.cpp takes
                                 another kernel for 64 or more query rows): f32 queries,
                                 scores and accumulator, a two-pass softmax; much faster, equal
                                 to the one-row kernel up to rounding */
    /* Rows of several sequences in one call (continuous batching). When row_pos is set, row t
     * sits at position row_pos[t] (pos is ignored) and, when row_tiled is set, takes the tiled
     * kernel when row_tiled[t]. When row_pages is set, the keys and values of row t's sequence
     * are paged: position p of it is cache row (row_pages[t][p >> page_shift] << page_shift) +
     * (p & (2^page_shift - 1)) of k and v. Without row_pages, position p is row p. */
    const int32_t *row_pos;          /* (n_tok) or NULL */
    const int32_t *const *row_pages; /* (n_tok) block tables or NULL */
    const bool *row_tiled;           /* (n_tok) or NULL: every row takes `tiled` */
    int page_shift;                  /* log2 of the page size, with row_pages */
};

/* Bits of pack_bytes' *flags: what a packed copy stands in for. */
#define ENG_PACK_REPLACES                                                                          \
    1u /* every matmul of the matrix reads the copy: the original need not                         \
          stay resident */
#define ENG_PACK_GET_ROWS                                                                          \
    2u /* get_rows reads the copy too: a tied embedding table may share it                         \
        */

/* The operations. ctx is the backend's context (struct eng_backend.ctx). */
struct eng_backend_ops {
    const char *name; /* "cpu", ... */
    void (*release)(void *ctx);

    /* ---- set-up: called while no op runs ---- */

    /* Scratch bytes the matmul op needs for these matrices (same n_cols) and n_tok rows, or 0
     * when a type has no usable activation format (the loader refuses such weights). */
    size_t (*matmul_act_bytes)(void *ctx, int n_mat, const struct eng_mat *const *w, int n_tok);
    /* With on, every matmul output row is the same whatever the other rows of the call (the CPU
     * backend then never takes llama.cpp's 4-token Q4_K order, which sums batches of 4
     * differently from single tokens): what a continuous-batching server needs so that a
     * sequence's tokens do not depend on its neighbours. Off (the default) reproduces llama.cpp's
     * prompt arithmetic. */
    void (*row_invariant)(void *ctx, bool on);
    /* Bytes of a repacked copy of w (w->packed unset) that this backend's kernels would read
     * instead of w->data, or 0 when it has none for w. batched: also the copies only
     * row-invariant batches read (results then differ from llama.cpp's in the last bits).
     * *flags gets ENG_PACK_* bits. */
    size_t (*pack_bytes)(void *ctx, const struct eng_mat *w, bool batched, unsigned *flags);
    /* Fills dst (pack_bytes() bytes, 64-byte aligned) with w's copy; the caller then sets
     * w->packed = dst and keeps dst as long as w. */
    void (*pack)(void *ctx, void *dst, const struct eng_mat *w);

    /* ---- the forward pass's ops ---- */

    /* y = x / sqrt(mean(x^2) + eps) * w per row; x, y (n_tok, n); w (n). y may be x. */
    void (*rmsnorm)(void *ctx, float *y, const float *x, const float *w, int n_tok, int n,
                    float eps);
    /* For each i < n_mat: y[i] (n_tok, w[i]->n_rows) = x (n_tok, n_cols) times w[i]'s rows,
     * where every w[i] has n_cols columns. act is scratch of at least matmul_act_bytes()
     * bytes for these matrices and n_tok. y[i] must not overlap x or act. */
    void (*matmul)(void *ctx, int n_mat, const struct eng_mat *const *w, float *const *y,
                   const float *x, int n_tok, void *act);
    /* y (n_tok, n) = row ids[t] of w, dequantized; every id < w->n_rows, n = w->n_cols. */
    void (*get_rows)(void *ctx, float *y, const struct eng_mat *w, const int32_t *ids, int n_tok);
    /* Rotates the first n_rot values of every head of x (n_tok, n_head * head_dim) in place;
     * cs (n_tok, n_rot) holds cos, sin pairs from eng_rope_cache() for each row's position.
     * neox false: pairs (2i, 2i+1) (ggml's "normal" mode, llama); true: pairs (i, i + n_rot/2). */
    void (*rope)(void *ctx, float *x, int n_tok, int n_head, int head_dim, int n_rot,
                 const float *cs, bool neox);
    /* Softmax of n values in place. */
    void (*softmax)(void *ctx, float *x, int n);
    /* y = silu(gate) * up per row; y, gate, up (n_tok, n). y may be gate or up. */
    void (*swiglu)(void *ctx, float *y, const float *gate, const float *up, int n_tok, int n);
    /* y = gelu(gate) * up per row (tanh approximation, as ggml computes it); shapes as swiglu. */
    void (*geglu)(void *ctx, float *y, const float *gate, const float *up, int n_tok, int n);
    /* y += x, n values. */
    void (*add)(void *ctx, float *y, const float *x, int64_t n);
    /* y (n_tok, n) += b (n) on every row. */
    void (*add_rows)(void *ctx, float *y, const float *b, int n_tok, int n);
    /* y *= v, n values. */
    void (*scale)(void *ctx, float *y, float v, int64_t n);
    /* Stores n floats of src as n elements of type at dst (a KV cache row). */
    void (*store)(void *ctx, void *dst, enum eng_kv_type type, const float *src, int64_t n);
    /* Causal multi-head attention with grouped KV heads (see struct eng_attn). */
    void (*attention)(void *ctx, const struct eng_attn *a);
};

/* A backend: its table and its context. Created by a backend's init, ended by
 * eng_backend_release(). */
struct eng_backend {
    const struct eng_backend_ops *ops; /* NULL when not initialized */
    void *ctx;                         /* owned by the backend */
};

/* The CPU backend (cpu/ops_cpu.c) with a pool of n_threads (1..ENG_THREADPOOL_MAX_THREADS)
 * and attention scratch for up to max_kv keys of up to max_head_dim values. Its matmuls use
 * eng_qtype_cpu()'s kernels (cpu/ggml_kernels.h). Errors: AG_EINVAL, AG_EIO (threads). */
int eng_backend_cpu_init(struct eng_backend *be, int n_threads, int max_kv, int max_head_dim,
                         struct ag_err *err);
void eng_backend_release(struct eng_backend *be); /* zeroed or released is fine */

/* Bytes of one element of a KV cache type. */
size_t eng_kv_type_size(enum eng_kv_type type);

/* Fills cs (n_rot) with cos, sin pairs for position pos: pair i uses the angle
 * pos * base^(-2i / n_rot), computed as ggml does (a running product in float) so that the
 * angles match llama.cpp's to the bit. n_rot is even. */
void eng_rope_cache(float *cs, int pos, int n_rot, float base);

#endif
