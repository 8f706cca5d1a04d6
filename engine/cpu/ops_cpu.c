/*
 * ops_cpu.c - the CPU backend: the ops table of ops.h on host memory, with the thread pool.
 *
 * What runs in parallel: matmuls (rows split in chunks across the pool, after the input is
 * quantized once, its token rows split the same way), attention (one task per query row and
 * head), and for batches of PAR_MIN_VALUES values or more the norms, RoPE, the gated units,
 * residual adds and KV stores (rows split in chunks). A single token's elementwise ops touch a
 * few thousand floats and run on the caller: a parallel loop would cost more than it saves;
 * from 8 decode rows of a small model (8 x 576 values) on, the other threads would otherwise
 * spin through them.
 * Which thread computes a row never changes its value, so results do not depend on the thread
 * count.
 *
 * Numerics are llama.cpp's, bit for bit (see ggml_kernels.h for why that matters): matmuls use
 * eng_qtype_cpu()'s kernels; RMSNorm sums float squares in double and applies (x * scale) * w;
 * RoPE angles are a running float product and the rotation fuses as GCC fuses ggml's
 * rotate_pairs (x0*c - x1*s with the first product fused); SiLU uses ggml's expf; attention over
 * an F16 cache follows ggml's flash-attention kernel for one query row
 * (ggml_compute_forward_flash_attn_ext_f16_one_chunk): the query rounded to f16, an online
 * softmax, V accumulated in f16. Over an F32 cache it is plain float attention with a two-pass
 * softmax, the accurate reference for tests.
 *
 * Limits of the reproduction: llama.cpp switches to other attention kernels for a batch of 64
 * or more query rows (tiled, f32 queries) and for one query over a KV view of 512 or more cells
 * (the keys split across threads, so its result depends on its thread count). We always compute
 * the one-row kernel, so a long prompt that llama.cpp evaluates in one batch, or a long context,
 * agrees with it closely but not bit for bit. Matmuls, norms and the rest do not depend on
 * batch size or threads in either engine.
 *
 * Invariants: no allocation after eng_backend_cpu_init(); each thread owns one scratch row.
 */
#include "../ops.h"

/* Exact emulation needs every fused multiply-add spelled out: GCC does not contract in ISO C
 * mode, Clang must be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_simd.h"
#include "cpu.h"
#include "ggml_kernels.h"
#include "ggml_kernels_q.h"
#include "mm_cpu.h"
#include "mm_q4_k.h"
#include "mm_q5_0.h"
#include "mm_q6_k.h"
#include "mm_packed.h"
#include "threadpool.h"

struct cpu_ctx {
    struct eng_threadpool *tp; /* the compute threads; the caller is thread 0 */
    int n_threads;             /* eng_threadpool_n_threads(tp) */
    int max_kv;                /* keys the attention scratch can hold */
    int max_head_dim;          /* head size the attention scratch can hold */
    size_t scratch_floats;     /* floats per thread in scratch */
    float *scratch;            /* (n_threads, scratch_floats): max_kv scores for F32
                                  attention, or 2 * max_head_dim f16 values for F16 */
    bool row_invariant;        /* never llama.cpp's 4-token Q4_K order (see cpu_matmul) */
};

/* ---- per-row ops on the pool ---- */

/* Batches with many values spread the per-row ops over the pool (rows split in chunks; a row's
 * value does not depend on who computes it); smaller ones (a token, or a decode step of a few
 * sequences) run on the caller, where a parallel loop's hand-off would cost more than it saves. */
#define PAR_MIN_VALUES 4096

/* One per-row op over a batch as the parallel loop sees it. */
enum row_op { ROW_RMSNORM, ROW_SWIGLU, ROW_GEGLU, ROW_ROPE, ROW_ADD, ROW_STORE, ROW_QUANT };
struct row_job {
    enum row_op op;
    float *y;
    const float *x, *x2; /* rmsnorm: x, weights; glu: gate, up; rope: cos-sin table */
    int n;               /* values per row */
    float eps;
    int n_head, head_dim, n_rot;
    bool neox;
    enum eng_kv_type type; /* store */
    void *dst;             /* store: the cache rows; quant: the activation rows */
    size_t dst_row_bytes;  /* quant */
    eng_quantize_fn quant;
    int64_t total; /* add, store: values in all (the last row may be short) */
};

static void rope_row(float *x, int n_head, int head_dim, int n_rot, const float *cs, bool neox)
{
    const int half = n_rot / 2;
    for (int h = 0; h < n_head; h++, x += head_dim) {
        for (int i = 0; i < half; i++) {
            const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float c = cs[2 * i], s = cs[2 * i + 1];
            const float x0 = x[a], x1 = x[b];
            x[a] = fmaf(x0, c, -(x1 * s));
            x[b] = fmaf(x0, s, x1 * c);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include <immintrin.h>
/* vcvtps2ph rounds to nearest even and quiets NaNs keeping their top bits, as eng_fp32_to_fp16
 * does: the same bits, 16 values per instruction. Returns how many values it stored. */
__attribute__((target("avx512f,f16c"))) static int64_t store_f16_avx512(uint16_t *h, const float *x,
                                                                        int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(h + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

#define ROWS_AVX512 __attribute__((target("avx512f")))
/* y[i] = x[i] * scale * w[i], 16 at a time: the scalar loop's two roundings. */
ROWS_AVX512 static int scale_mul_avx512(float *y, const float *x, float scale, const float *w,
                                        int n)
{
    const __m512 sc = _mm512_set1_ps(scale);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sc),
                                              _mm512_loadu_ps(w + i)));
    return i;
}

/* y[i] += x[i], 16 at a time. */
ROWS_AVX512 static int64_t add_avx512(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
    return i;
}
#endif

static void store_row(void *dst, enum eng_kv_type type, const float *src, int64_t n)
{
    if (type == ENG_KV_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *h = dst;
    int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
    if (eng_cpu_level() >= ENG_CPU_AVX512) i = store_f16_avx512(h, src, n);
#endif
    for (; i < n; i++) h[i] = eng_fp32_to_fp16(src[i]);
}

static void scale_row(float *y, const float *x, float scale, const float *w, int n)
{
    int i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
    if (eng_cpu_level() >= ENG_CPU_AVX512) i = scale_mul_avx512(y, x, scale, w, n);
#endif
    for (; i < n; i++) y[i] = x[i] * scale * w[i];
}

static void add_row(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
    if (eng_cpu_level() >= ENG_CPU_AVX512) i = add_avx512(y, x, n);
#endif
    for (; i < n; i++) y[i] += x[i];
}

static float rms_scale(double sum, int n, float eps)
{
    const float mean = (float)(sum / n);
    return 1.0f / sqrtf(mean + eps);
}

/* n_rows rows of n values, n apart (y may be x). Each row's sum of squares runs in ggml's
 * order, one double addition after another; four rows' sums run side by side, so their chains
 * of dependent additions overlap. */
static void rmsnorm_rows(float *y, const float *x, const float *w, int n, float eps, int64_t n_rows)
{
    int64_t t = 0;
    for (; t + 4 <= n_rows; t += 4) {
        const float *x0 = x + t * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (int i = 0; i < n; i++) {
            s0 += (double)(x0[i] * x0[i]);
            s1 += (double)(x1[i] * x1[i]);
            s2 += (double)(x2[i] * x2[i]);
            s3 += (double)(x3[i] * x3[i]);
        }
        const double sums[4] = {s0, s1, s2, s3};
        for (int r = 0; r < 4; r++)
            scale_row(y + (t + r) * n, x + (t + r) * n, rms_scale(sums[r], n, eps), w, n);
    }
    for (; t < n_rows; t++) {
        const float *xr = x + t * n;
        double sum = 0.0;
        for (int i = 0; i < n; i++) sum += (double)(xr[i] * xr[i]);
        scale_row(y + t * n, xr, rms_scale(sum, n, eps), w, n);
    }
}

static void row_task(void *arg, int64_t begin, int64_t end, int ith)
{
    const struct row_job *j = arg;
    (void)ith;
    if (j->op == ROW_RMSNORM) {
        rmsnorm_rows(j->y + begin * j->n, j->x + begin * j->n, j->x2, j->n, j->eps, end - begin);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        const int64_t off = t * j->n;
        const int len = j->total && j->total - off < j->n ? (int)(j->total - off) : j->n;
        switch (j->op) {
        case ROW_RMSNORM: /* above */
            break;
        case ROW_SWIGLU:
            eng__ggml_swiglu(j->n, j->y + off, j->x + off, j->x2 + off);
            break;
        case ROW_GEGLU:
            eng__ggml_geglu(j->n, j->y + off, j->x + off, j->x2 + off);
            break;
        case ROW_ROPE:
            rope_row(j->y + off, j->n_head, j->head_dim, j->n_rot, j->x2 + t * j->n_rot, j->neox);
            break;
        case ROW_ADD:
            add_row(j->y + off, j->x + off, len);
            break;
        case ROW_STORE:
            store_row((unsigned char *)j->dst + (size_t)off * eng_kv_type_size(j->type), j->type,
                      j->x + off, len);
            break;
        case ROW_QUANT:
            j->quant(j->x + off, (unsigned char *)j->dst + (size_t)t * j->dst_row_bytes, j->n);
            break;
        }
    }
}

/* Runs j over n_rows rows: on the pool for prompt batches, else on the caller. */
static void rows_run(struct cpu_ctx *c, const struct row_job *j, int64_t n_rows)
{
    if (n_rows * j->n < PAR_MIN_VALUES || n_rows < 2 || c->n_threads == 1) {
        row_task((void *)j, 0, n_rows, 0);
        return;
    }
    int64_t chunk = n_rows / ((int64_t)c->n_threads * 2);
    eng_threadpool_for(c->tp, n_rows, chunk < 1 ? 1 : chunk, row_task, (void *)j);
}

/* ---- matmul ---- */

/* One matmul call as the parallel loop sees it: the matrices laid end to end by rows. */
struct mm_job {
    int n_mat;
    const struct eng_mat *const *w;       /* (n_mat) */
    float *const *y;                      /* (n_mat) outputs (n_tok, w[i]->n_rows) */
    eng_vec_dot_fn dot[ENG_MATMUL_MAX];   /* per matrix: its dot kernel */
    eng_mm_fn mm[ENG_MATMUL_MAX];         /* per matrix: its block kernel (mm_cpu.h), which
                                             gives dot's bits faster; NULL: dot per output */
    const void *act[ENG_MATMUL_MAX];      /* per matrix: its quantized input (n_tok rows) or
                                             the F32 input itself */
    size_t act_row_bytes[ENG_MATMUL_MAX]; /* bytes per token row of act[i] */
    int64_t row0[ENG_MATMUL_MAX + 1];     /* first global row of each matrix; row0[n_mat] total */
    bool packed[ENG_MATMUL_MAX];          /* per matrix: use w->packed (mm_packed.h) */
    int n_tok;
};

static void mm_task(void *arg, int64_t begin, int64_t end, int ith)
{
    const struct mm_job *j = arg;
    (void)ith;
    for (int m = 0; m < j->n_mat; m++) {
        int64_t lo = begin > j->row0[m] ? begin : j->row0[m];
        int64_t hi = end < j->row0[m + 1] ? end : j->row0[m + 1];
        if (lo >= hi) continue;
        const struct eng_mat *w = j->w[m];
        const eng_vec_dot_fn dot = j->dot[m];
        const int n_cols = (int)w->n_cols;
        const unsigned char *act = j->act[m];
        float *y = j->y[m];
        if (j->packed[m]) { /* chunks and matrices start at multiples of 16 rows */
            const int64_t r0 = lo - j->row0[m];
            if (w->qt->type == ENG_GGML_Q4_K)
                eng__mm_q4_k_packed(
                    n_cols, (const unsigned char *)w->packed + eng__pack_q4_k_bytes(r0, n_cols),
                    (int)(hi - lo), act, j->act_row_bytes[m], j->n_tok, y + r0, w->n_rows);
            else if (w->qt->type == ENG_GGML_Q5_0)
                eng__mm_q5_0_packed(
                    n_cols, (const unsigned char *)w->packed + eng__pack_q5_0_bytes(r0, n_cols),
                    (int)(hi - lo), act, j->act_row_bytes[m], j->n_tok, y + r0, w->n_rows);
            else if (w->qt->type == ENG_GGML_Q4_1)
                eng__mm_q4_1_packed(
                    n_cols, (const unsigned char *)w->packed + eng__pack_q4_1_bytes(r0, n_cols),
                    (int)(hi - lo), act, j->act_row_bytes[m], j->n_tok, y + r0, w->n_rows);
            else
                eng__mm_q8_0_packed(
                    n_cols, (const unsigned char *)w->packed + eng__pack_q8_0_bytes(r0, n_cols),
                    (int)(hi - lo), act, j->act_row_bytes[m], j->n_tok, y + r0, w->n_rows);
            continue;
        }
        if (j->mm[m]) {
            const int64_t r0 = lo - j->row0[m];
            j->mm[m](n_cols, (const unsigned char *)w->data + (size_t)r0 * w->row_bytes,
                     w->row_bytes, (int)(hi - lo), act, j->act_row_bytes[m], j->n_tok, y + r0,
                     w->n_rows);
            continue;
        }
        for (int64_t r = lo - j->row0[m]; r < hi - j->row0[m]; r++) {
            const void *wrow = (const unsigned char *)w->data + (size_t)r * w->row_bytes;
            for (int t = 0; t < j->n_tok; t++)
                y[(int64_t)t * w->n_rows + r] = dot(n_cols, wrow, act + t * j->act_row_bytes[m]);
        }
    }
}

static size_t cpu_matmul_act_bytes(void *ctx, int n_mat, const struct eng_mat *const *w, int n_tok)
{
    (void)ctx;
    size_t total = 0;
    for (int i = 0; i < n_mat; i++) {
        const struct eng_qtype *qt = w[i]->qt ? eng_qtype_cpu(w[i]->qt->type) : NULL;
        if (!qt || !qt->vec_dot) return 0;
        if (!qt->quantize_act) continue; /* the F32 input is used as it is */
        size_t rb = eng_qtype_row_bytes(eng_qtype_get(qt->act_type), w[i]->n_cols);
        if (rb == 0) return 0;
        total += rb * (size_t)n_tok;
    }
    return total;
}

/* The activation quantizer of w's packed kernel when this call takes that kernel, else NULL.
 * Q4_K's (mm_q4_k.h) has the 4-token order's bits for any number of tokens: prompt batches and
 * row-invariant ones. Q5_0's (mm_packed.h) has the dot product's bits: always. Q4_1's and
 * Q8_0's sum in another order: row-invariant batches only. Each reads the activation rows its
 * type's block kernels write (the same bits as the usual quantizer, faster). */
static eng_quantize_fn packed_quantizer(const struct cpu_ctx *c, const struct eng_mat *w, bool gemm)
{
    if (!w->packed || eng_cpu_level() < ENG_CPU_AVX512) return NULL;
    switch (w->qt->type) {
    case ENG_GGML_Q4_K:
        return gemm || c->row_invariant ? eng__quantize_row_q8_K_gemm_ggml : NULL;
    case ENG_GGML_Q5_0:
        return eng__mm_kernels(ENG_GGML_Q8_0, eng_cpu_level())->quantize_act;
    case ENG_GGML_Q4_1:
    case ENG_GGML_Q8_0:
        return c->row_invariant ? eng__mm_kernels(w->qt->type, eng_cpu_level())->quantize_act
                                : NULL;
    default:
        return NULL;
    }
}

/* One matmul over n_tok tokens with the gemm kernels (eng_qtype_cpu_gemm) or the usual ones. */
static void matmul_run(struct cpu_ctx *c, int n_mat, const struct eng_mat *const *w,
                       float *const *y, const float *x, int n_tok, void *act, bool gemm)
{
    struct mm_job j = {.n_mat = n_mat, .w = w, .y = y, .n_tok = n_tok};
    const struct eng_qtype *qt[ENG_MATMUL_MAX];
    eng_quantize_fn quant[ENG_MATMUL_MAX];
    unsigned char *scratch = act;
    const int64_t n_cols = w[0]->n_cols;

    /* Quantize the input once per activation quantizer: matrices whose kernels share one (Q,
     * K and V of one type; gate and up) reuse the first one's rows. */
    for (int m = 0; m < n_mat; m++) {
        qt[m] =
            gemm ? eng_qtype_cpu_gemm(w[m]->qt->type, w[m]->n_rows) : eng_qtype_cpu(w[m]->qt->type);
        j.dot[m] = qt[m]->vec_dot;
        j.row0[m + 1] = j.row0[m] + w[m]->n_rows;
        /* Block kernels and their quantizers write the same bits as eng_qtype_cpu()'s, faster
         * (not those of a gemm entry that sums in another order). */
        const struct eng_mm_kernels *mk = qt[m] == eng_qtype_cpu(qt[m]->type)
                                              ? eng__mm_kernels(qt[m]->type, eng_cpu_level())
                                              : NULL;
        /* Q4_K in llama.cpp's 4-token order: its VNNI block kernel (mm_q4_k.c). */
        if (!mk && gemm && qt[m]->type == ENG_GGML_Q4_K && qt[m] != eng_qtype_cpu(ENG_GGML_Q4_K))
            mk = eng__mm_kernels_q4_k_gemm(eng_cpu_level());
        /* Q6_K in prompt batches: its VNNI block kernel (mm_q6_k.c). */
        if (!mk && n_tok >= 4 && qt[m] == eng_qtype_cpu(ENG_GGML_Q6_K))
            mk = eng__mm_kernels_q6_k(eng_cpu_level(), qt[m]->quantize_act);
        /* Q5_0 in prompt batches: through the Q8_0 block kernels (mm_q5_0.c). */
        if (!mk && n_tok >= 4 && qt[m] == eng_qtype_cpu(ENG_GGML_Q5_0))
            mk = eng__mm_kernels_q5_0(eng_cpu_level());
        j.mm[m] = mk ? mk->mm : NULL;
        quant[m] = mk ? mk->quantize_act : qt[m]->quantize_act;
        const eng_quantize_fn pq = packed_quantizer(c, w[m], gemm);
        j.packed[m] = pq != NULL;
        if (pq) {
            j.mm[m] = NULL;
            quant[m] = pq;
        }
        if (!quant[m]) {
            j.act[m] = x;
            j.act_row_bytes[m] = (size_t)n_cols * sizeof(float);
            continue;
        }
        j.act_row_bytes[m] = eng_qtype_row_bytes(eng_qtype_get(qt[m]->act_type), n_cols);
        int prev = -1;
        for (int p = 0; p < m && prev < 0; p++)
            if (quant[p] == quant[m]) prev = p;
        if (prev >= 0) {
            j.act[m] = j.act[prev];
            continue;
        }
        const struct row_job qj = {.op = ROW_QUANT,
                                   .x = x,
                                   .n = (int)n_cols,
                                   .dst = scratch,
                                   .dst_row_bytes = j.act_row_bytes[m],
                                   .quant = quant[m]};
        rows_run(c, &qj, n_tok);
        j.act[m] = scratch;
        scratch += (size_t)n_tok * j.act_row_bytes[m];
    }

    /* Chunks shrink as the loop drains: few chunks (each one a weight stream the prefetchers
     * follow from its start), and the threads still run out of rows together. Packed
     * matrices need chunks of whole row groups; others take the same grain. */
    eng_threadpool_for_guided(c->tp, j.row0[n_mat], ENG_PACK_ROWS, mm_task, &j);
}

/* llama.cpp multiplies the first n_tok - n_tok % 4 tokens of a batch by a repacked Q4_K matrix
 * with its 4-token kernel and the rest with the 1-token one, which sum in different orders; the
 * same split here keeps every output bit equal to llama.cpp's. Other matrices give the same
 * bits either way, so the split costs only a second pass over the weights. */
static void cpu_matmul(void *vctx, int n_mat, const struct eng_mat *const *w, float *const *y,
                       const float *x, int n_tok, void *act)
{
    struct cpu_ctx *c = vctx;
    const int n4 = n_tok - n_tok % 4;
    bool split = false;
    for (int m = 0; m < n_mat; m++)
        split |= n4 > 0 &&
                 eng_qtype_cpu_gemm(w[m]->qt->type, w[m]->n_rows) != eng_qtype_cpu(w[m]->qt->type);
    if (!split || c->row_invariant) {
        matmul_run(c, n_mat, w, y, x, n_tok, act, false);
        return;
    }
    matmul_run(c, n_mat, w, y, x, n4, act, true);
    if (n4 == n_tok) return;
    float *y_rest[ENG_MATMUL_MAX];
    for (int m = 0; m < n_mat; m++) y_rest[m] = y[m] + (int64_t)n4 * w[m]->n_rows;
    matmul_run(c, n_mat, w, y_rest, x + (int64_t)n4 * w[0]->n_cols, n_tok - n4, act, false);
}

/* ---- elementwise and per-row ops ---- */

static void cpu_rmsnorm(void *ctx, float *y, const float *x, const float *w, int n_tok, int n,
                        float eps)
{
    const struct row_job j = {.op = ROW_RMSNORM, .y = y, .x = x, .x2 = w, .n = n, .eps = eps};
    rows_run(ctx, &j, n_tok);
}

static void cpu_get_rows(void *ctx, float *y, const struct eng_mat *w, const int32_t *ids,
                         int n_tok)
{
    (void)ctx;
    const bool packed = w->packed && w->qt->type == ENG_GGML_Q8_0; /* a tied, packed output */
    for (int t = 0; t < n_tok; t++) {
        if (packed)
            eng__unpack_q8_0_row(w->packed, w->n_cols, ids[t], y + (int64_t)t * w->n_cols);
        else
            w->qt->dequantize((const unsigned char *)w->data + (size_t)ids[t] * w->row_bytes,
                              y + (int64_t)t * w->n_cols, w->n_cols);
    }
}

static void cpu_rope(void *ctx, float *x, int n_tok, int n_head, int head_dim, int n_rot,
                     const float *cs, bool neox)
{
    const struct row_job j = {.op = ROW_ROPE,
                              .y = x,
                              .x2 = cs,
                              .n = n_head * head_dim,
                              .n_head = n_head,
                              .head_dim = head_dim,
                              .n_rot = n_rot,
                              .neox = neox};
    rows_run(ctx, &j, n_tok);
}

static void cpu_softmax(void *ctx, float *x, int n)
{
    (void)ctx;
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

static void cpu_swiglu(void *ctx, float *y, const float *gate, const float *up, int n_tok, int n)
{
    const struct row_job j = {.op = ROW_SWIGLU, .y = y, .x = gate, .x2 = up, .n = n};
    rows_run(ctx, &j, n_tok);
}

static void cpu_geglu(void *ctx, float *y, const float *gate, const float *up, int n_tok, int n)
{
    const struct row_job j = {.op = ROW_GEGLU, .y = y, .x = gate, .x2 = up, .n = n};
    rows_run(ctx, &j, n_tok);
}

/* Elementwise ops on a whole batch go to the pool in rows of this many values. */
#define FLAT_ROW 4096

/* y += x. */
static void cpu_add(void *ctx, float *y, const float *x, int64_t n)
{
    const struct row_job j = {.op = ROW_ADD, .y = y, .x = x, .n = FLAT_ROW, .total = n};
    rows_run(ctx, &j, (n + FLAT_ROW - 1) / FLAT_ROW);
}

static void cpu_add_rows(void *ctx, float *y, const float *b, int n_tok, int n)
{
    (void)ctx;
    for (int t = 0; t < n_tok; t++, y += n)
        for (int i = 0; i < n; i++) y[i] += b[i];
}

static void cpu_scale(void *ctx, float *y, float v, int64_t n)
{
    (void)ctx;
    for (int64_t i = 0; i < n; i++) y[i] *= v;
}

static void cpu_store(void *ctx, void *dst, enum eng_kv_type type, const float *src, int64_t n)
{
    const struct row_job j = {
        .op = ROW_STORE, .x = src, .n = FLAT_ROW, .type = type, .dst = dst, .total = n};
    rows_run(ctx, &j, (n + FLAT_ROW - 1) / FLAT_ROW);
}

/* ---- attention ---- */

struct attn_job {
    const struct eng_attn *a;
    struct cpu_ctx *c;
    int kv_per_task; /* decode rows: KV heads per task */
};

/* Plain float attention of one query row and head over an F32 cache. */
static void attn_f32(const struct eng_attn *a, const struct eng_kv_rows *r, float *scores,
                     const float *q, int first, int n_kv, int kv_off, float *out)
{
    const int hd = a->head_dim;
    const float *k = (const float *)a->k + kv_off;
    const float *v = (const float *)a->v + kv_off;
    for (int p = 0; p < n_kv; p++) {
        const float *kp = k + eng_kv_row(r, first + p) * a->kv_stride;
        float dot = 0.0f;
        for (int i = 0; i < hd; i++) dot += q[i] * kp[i];
        scores[p] = dot * a->scale;
    }
    cpu_softmax(NULL, scores, n_kv);
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    for (int p = 0; p < n_kv; p++) {
        const float *vp = v + eng_kv_row(r, first + p) * a->kv_stride;
        const float sp = scores[p];
        for (int i = 0; i < hd; i++) out[i] += sp * vp[i];
    }
}

/* One query row and head over an F16 cache, as ggml's flash attention computes it (one
 * chunk, no KV split). scratch holds 2 * head_dim f16 values. */
static void attn_f16(const struct eng_attn *a, const struct eng_kv_rows *r, uint16_t *scratch,
                     const float *q, int first, int n_kv, int kv_off, float *out)
{
    const int hd = a->head_dim;
    const uint16_t *k = (const uint16_t *)a->k + kv_off;
    const uint16_t *v = (const uint16_t *)a->v + kv_off;
    uint16_t *q16 = scratch, *acc = scratch + hd; /* (hd) query, (hd) V accumulator */
    float M = -INFINITY, S = 0.0f;

    for (int i = 0; i < hd; i++) {
        q16[i] = eng_fp32_to_fp16(q[i]);
        acc[i] = 0;
    }
    for (int p = 0; p < n_kv; p++) {
        const int64_t row = eng_kv_row(r, first + p) * a->kv_stride;
        const uint16_t *kp = k + row, *vp = v + row;
        const float s = eng__ggml_dot_f16(hd, kp, q16) * a->scale;
        const float Mold = M;
        float ms = 1.0f, vs = 1.0f;
        if (s > M) {
            M = s;
            ms = expf(Mold - M);
            eng__ggml_scale_f16(hd, acc, ms);
        } else {
            vs = expf(s - M);
        }
        eng__ggml_mad_f16(hd, acc, vp, vs);
        S = fmaf(S, ms, vs);
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int i = 0; i < hd; i++) out[i] = eng_fp16_to_fp32(acc[i]) * inv;
}

/* One query row and head over an F16 cache with float arithmetic: scores q.k from keys widened
 * to f32, a two-pass softmax, V accumulated in f32. scratch holds n_kv + head_dim floats. */
static void attn_f16_tiled(const struct eng_attn *a, const struct eng_kv_rows *r, float *scratch,
                           const float *q, int first, int n_kv, int kv_off, float *out)
{
    const int hd = a->head_dim;
    const uint16_t *k = (const uint16_t *)a->k + kv_off;
    const uint16_t *v = (const uint16_t *)a->v + kv_off;
    float *scores = scratch, *acc = scratch + n_kv;
    float max = -INFINITY;
    for (int p = 0; p < n_kv; p++) {
        const float s =
            eng__f16_dot_f32(hd, k + eng_kv_row(r, first + p) * a->kv_stride, q) * a->scale;
        scores[p] = s;
        if (s > max) max = s;
    }
    float sum = 0.0f;
    for (int p = 0; p < n_kv; p++) {
        scores[p] = expf(scores[p] - max);
        sum += scores[p];
    }
    for (int i = 0; i < hd; i++) acc[i] = 0.0f;
    for (int p = 0; p < n_kv; p++)
        eng__f16_axpy_f32(hd, acc, v + eng_kv_row(r, first + p) * a->kv_stride, scores[p]);
    const float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++) out[i] = acc[i] * inv;
}

/* Tasks are (query row, head) pairs: index = t * n_head + h. */
static void attn_task(void *arg, int64_t begin, int64_t end, int ith)
{
    const struct attn_job *j = arg;
    const struct eng_attn *a = j->a;
    const int hd = a->head_dim, q_stride = a->n_head * hd, group = a->n_head / a->n_head_kv;
    float *scratch = j->c->scratch + (size_t)ith * j->c->scratch_floats;

    for (int64_t task = begin; task < end; task++) {
        const int t = (int)(task / a->n_head), h = (int)(task % a->n_head);
        const int q_pos = a->row_pos ? a->row_pos[t] : a->pos + t, kv_off = (h / group) * hd;
        const bool tiled = a->row_tiled ? a->row_tiled[t] : a->tiled;
        const struct eng_kv_rows r = {
            .pages = a->row_pages ? a->row_pages[t] : NULL,
            .shift = a->page_shift,
            .mask = (int32_t)((1u << a->page_shift) - 1),
        };
        /* Keys first..q_pos: the ones a sliding window masks are skipped, as ggml's kernel
         * skips keys whose mask is -inf. */
        const int first = a->window > 0 && q_pos - a->window + 1 > 0 ? q_pos - a->window + 1 : 0;
        const int n_kv = q_pos + 1 - first;
        const float *q = a->q + (int64_t)t * q_stride + h * hd;
        float *out = a->out + (int64_t)t * q_stride + h * hd;
        if (a->kv_type == ENG_KV_F16 && tiled)
            attn_f16_tiled(a, &r, scratch, q, first, n_kv, kv_off, out);
        else if (a->kv_type == ENG_KV_F16)
            attn_f16(a, &r, (uint16_t *)scratch, q, first, n_kv, kv_off, out);
        else
            attn_f32(a, &r, scratch, q, first, n_kv, kv_off, out);
    }
}

/* Tasks are (row, run of kv_per_task KV heads) pairs of decode rows (eng__attn_group). */
static void attn_group_task(void *arg, int64_t begin, int64_t end, int ith)
{
    const struct attn_job *j = arg;
    const int per = j->kv_per_task, runs = (j->a->n_head_kv + per - 1) / per;
    float *scores = j->c->scratch + (size_t)ith * j->c->scratch_floats;
    for (int64_t task = begin; task < end; task++) {
        const int kvh0 = (int)(task % runs) * per;
        const int nk = j->a->n_head_kv - kvh0 < per ? j->a->n_head_kv - kvh0 : per;
        eng__attn_group(j->a, (int)(task / runs), kvh0, nk, scores);
    }
}

/* Tasks are (tile of eng__attn_tiled_rows() query rows, KV head) pairs. */
static void attn_tiled_task(void *arg, int64_t begin, int64_t end, int ith)
{
    const struct attn_job *j = arg;
    const struct eng_attn *a = j->a;
    const int rows = eng__attn_tiled_rows(a);
    float *scratch = j->c->scratch + (size_t)ith * j->c->scratch_floats;
    for (int64_t task = begin; task < end; task++) {
        const int t0 = (int)(task / a->n_head_kv) * rows, kvh = (int)(task % a->n_head_kv);
        eng__attn_tiled(a, t0, a->n_tok - t0 < rows ? a->n_tok - t0 : rows, kvh, scratch);
    }
}

static void cpu_attention(void *vctx, const struct eng_attn *a)
{
    struct cpu_ctx *c = vctx;
    struct attn_job j = {.a = a, .c = c};
    /* Decode rows of the service: the query heads of a KV head together (attn_simd.h). */
    if (eng__attn_group_ok(a) && eng__attn_group_scratch(c->max_kv) <= c->scratch_floats) {
        /* With rows enough for every thread, a task takes all the KV heads of a row it can:
         * they share the row's cache lines, read once; with fewer rows, one KV head. */
        j.kv_per_task = a->n_tok >= 2 * c->n_threads ? eng__attn_group_kv_heads(a) : 1;
        const int runs = (a->n_head_kv + j.kv_per_task - 1) / j.kv_per_task;
        eng_threadpool_for(c->tp, (int64_t)a->n_tok * runs, 1, attn_group_task, &j);
        return;
    }
    /* Long prompts: tiles of query vectors (attn_simd.h). */
    if (eng__attn_tiled_ok(a) && a->head_dim <= c->max_head_dim &&
        eng__attn_tiled_scratch(a->head_dim) <= c->scratch_floats) {
        const int64_t tiles = (a->n_tok + eng__attn_tiled_rows(a) - 1) / eng__attn_tiled_rows(a);
        eng_threadpool_for(c->tp, tiles * a->n_head_kv, 1, attn_tiled_task, &j);
        return;
    }
    eng_threadpool_for(c->tp, (int64_t)a->n_tok * a->n_head, 1, attn_task, &j);
}

/* ---- set-up ---- */

static void cpu_row_invariant(void *vctx, bool on)
{
    struct cpu_ctx *c = vctx;
    c->row_invariant = on;
}

/* Packed copies (mm_packed.h, mm_q4_k.h), AVX-512 VNNI only: Q4_K and Q5_0 always (their packed
 * kernels keep llama.cpp's bits; every Q5_0 matmul takes the copy), Q4_1 and Q8_0 only for
 * row-invariant batches (a packed Q8_0 also serves get_rows). */
static size_t cpu_pack_bytes(void *ctx, const struct eng_mat *w, bool batched, unsigned *flags)
{
    (void)ctx;
    *flags = 0;
    if (!eng__pack_available() || w->n_rows % ENG_PACK_ROWS != 0) return 0;
    switch (w->qt->type) {
    case ENG_GGML_Q4_K:
        return w->n_cols % ENG_QK_K == 0 ? eng__pack_q4_k_bytes(w->n_rows, w->n_cols) : 0;
    case ENG_GGML_Q5_0:
        if (w->n_cols % ENG_QK != 0 || w->n_cols / ENG_QK > ENG_PACK_MAX_BLOCKS) return 0;
        *flags = ENG_PACK_REPLACES;
        return eng__pack_q5_0_bytes(w->n_rows, w->n_cols);
    case ENG_GGML_Q4_1:
        return batched && w->n_cols % ENG_QK == 0 ? eng__pack_q4_1_bytes(w->n_rows, w->n_cols) : 0;
    case ENG_GGML_Q8_0:
        if (!batched || w->n_cols % ENG_QK != 0 || w->n_cols / ENG_QK > ENG_PACK_MAX_BLOCKS)
            return 0;
        *flags = ENG_PACK_GET_ROWS;
        return eng__pack_q8_0_bytes(w->n_rows, w->n_cols);
    default:
        return 0;
    }
}

static void cpu_pack(void *ctx, void *dst, const struct eng_mat *w)
{
    (void)ctx;
    if (w->qt->type == ENG_GGML_Q4_K)
        eng__pack_q4_k(dst, w->data, w->row_bytes, w->n_rows, w->n_cols);
    else if (w->qt->type == ENG_GGML_Q5_0)
        eng__pack_q5_0(dst, w->data, w->row_bytes, w->n_rows, w->n_cols);
    else if (w->qt->type == ENG_GGML_Q4_1)
        eng__pack_q4_1(dst, w->data, w->row_bytes, w->n_rows, w->n_cols);
    else
        eng__pack_q8_0(dst, w->data, w->row_bytes, w->n_rows, w->n_cols);
}

/* ---- the table ---- */

static void cpu_release(void *vctx)
{
    struct cpu_ctx *c = vctx;
    if (!c) return;
    eng_threadpool_free(c->tp);
    free(c->scratch);
    free(c);
}

static const struct eng_backend_ops cpu_ops = {
    .name = "cpu",
    .release = cpu_release,
    .matmul_act_bytes = cpu_matmul_act_bytes,
    .row_invariant = cpu_row_invariant,
    .pack_bytes = cpu_pack_bytes,
    .pack = cpu_pack,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .get_rows = cpu_get_rows,
    .rope = cpu_rope,
    .softmax = cpu_softmax,
    .swiglu = cpu_swiglu,
    .geglu = cpu_geglu,
    .add = cpu_add,
    .add_rows = cpu_add_rows,
    .scale = cpu_scale,
    .store = cpu_store,
    .attention = cpu_attention,
};

int eng_backend_cpu_init(struct eng_backend *be, int n_threads, int max_kv, int max_head_dim,
                         struct ag_err *err)
{
    be->ops = NULL;
    be->ctx = NULL;
    if (max_kv < 1 || max_head_dim < 1)
        return ag_err_set(err, AG_EINVAL, "cpu backend: max_kv %d or max_head_dim %d < 1", max_kv,
                          max_head_dim);
    struct cpu_ctx *c = ag_calloc(1, sizeof(*c));
    int rc = eng_threadpool_new(n_threads, &c->tp, err);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->n_threads = n_threads;
    c->max_kv = max_kv;
    c->max_head_dim = max_head_dim;
    /* F32 attention needs max_kv scores, F16 attention 2 * max_head_dim halves, the tiled F16
     * path max_kv scores and max_head_dim sums; padded to a cache line so threads do not share
     * one. */
    size_t need = (size_t)max_kv + (size_t)max_head_dim;
    if (need < eng__attn_group_scratch(max_kv)) need = eng__attn_group_scratch(max_kv);
    if (need < eng__attn_tiled_scratch(max_head_dim)) need = eng__attn_tiled_scratch(max_head_dim);
    c->scratch_floats = (need + 15) & ~(size_t)15;
    c->scratch = ag_calloc((size_t)n_threads * c->scratch_floats, sizeof(float));
    be->ops = &cpu_ops;
    be->ctx = c;
    return 0;
}
