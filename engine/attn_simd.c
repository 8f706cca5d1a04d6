/*
 * attn_simd.c - AVX-512 attention over an F16 cache (attn_simd.h): tiles of prompt rows, and
 * the grouped kernel for decode rows of the service (at the end of the file).
 *
 * Tiled, one task: Q <= 16 query vectors (the G query heads of KV head kvh for n_rows rows, vector
 * i = row i / G, head i % G) against the keys any of them sees, in blocks of KB keys:
 *   1. scores: for each key, its 16-value chunks widened once and multiplied into 16
 *      accumulators (one per query, the queries read from a local copy in L1); the 16
 *      accumulators reduced together into one vector whose lane i is query i's score, masked to
 *      -inf where the key is outside query i's causal range or window. Scores are stored
 *      key-major, 16 per key.
 *   2. softmax, online: the block's maximum per query, the running sums and outputs rescaled by
 *      exp(old max - new max), the block's weights exp(s - max).
 *   3. values: for each 16-value chunk of the head, the 16 outputs in registers while the
 *      block's value rows stream through, each chunk widened once for all queries.
 * Unused lanes (Q < 16) are masked everywhere and never written out.
 */
#include "attn_simd.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#include "cpu.h"

#define KB     128                      /* keys per block */
#define UNROLL _Pragma("GCC unroll 16") /* keeps the 16 accumulators in registers */
#define TQ     ENG_ATTN_TILE_Q

size_t eng__attn_tiled_scratch(int head_dim)
{
    return (size_t)2 * TQ * (size_t)head_dim + (size_t)KB * TQ;
}

int eng__attn_tiled_rows(const struct eng_attn *a)
{
    return TQ / (a->n_head / a->n_head_kv);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENG_NO_SIMD)
#include "simd_avx512.h"
#define SIMD_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))

bool eng__attn_tiled_ok(const struct eng_attn *a)
{
    if (eng_cpu_level() < ENG_CPU_AVX512 || a->kv_type != ENG_KV_F16 || a->head_dim % 16 != 0 ||
        a->head_dim > 256 || a->n_head_kv < 1 || a->n_head % a->n_head_kv != 0 ||
        a->n_head / a->n_head_kv > TQ)
        return false;
    for (int t = 0; t < a->n_tok; t++)
        if (!(a->row_tiled ? a->row_tiled[t] : a->tiled)) return false;
    return true;
}

/* Scores of keys p0..p0+n-1 (rows krow[]) for the 16 queries in qb, scaled and masked. */
SIMD_TARGET static void block_scores(const struct eng_attn *a, const float *qb,
                                     const uint16_t *const *krow, int p0, int n, __m512i first,
                                     __m512i last, float *sb)
{
    const int nc = a->head_dim / 16, hd = a->head_dim;
    const __m512 scale = _mm512_set1_ps(a->scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j++) {
        __m512 d[TQ];
        UNROLL
        for (int i = 0; i < TQ; i++) d[i] = _mm512_setzero_ps();
        for (int c = 0; c < nc; c++) {
            const __m512 k =
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(krow[j] + 16 * c)));
            UNROLL
            for (int i = 0; i < TQ; i++)
                d[i] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + i * hd + 16 * c), k, d[i]);
        }
        const __m512i p = _mm512_set1_epi32(p0 + j);
        const __mmask16 in = _mm512_cmp_epi32_mask(p, first, _MM_CMPINT_NLT) &
                             _mm512_cmp_epi32_mask(p, last, _MM_CMPINT_LE);
        _mm512_storeu_ps(sb + j * TQ, _mm512_mask_mul_ps(ninf, in, eng__reduce16_avx512(d), scale));
    }
}

/* out[i] += sum over the block's keys of weight(j, i) * v(j), chunk by chunk of the head. */
SIMD_TARGET static void block_values(const struct eng_attn *a, const uint16_t *const *vrow, int n,
                                     const float *sb, const float *corr, float *ob)
{
    const int nc = a->head_dim / 16, hd = a->head_dim;
    for (int c = 0; c < nc; c++) {
        __m512 o[TQ];
        UNROLL
        for (int i = 0; i < TQ; i++)
            o[i] = _mm512_mul_ps(_mm512_loadu_ps(ob + i * hd + 16 * c), _mm512_set1_ps(corr[i]));
        for (int j = 0; j < n; j++) {
            const __m512 v =
                _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vrow[j] + 16 * c)));
            UNROLL
            for (int i = 0; i < TQ; i++)
                o[i] = _mm512_fmadd_ps(_mm512_set1_ps(sb[j * TQ + i]), v, o[i]);
        }
        UNROLL
        for (int i = 0; i < TQ; i++) _mm512_storeu_ps(ob + i * hd + 16 * c, o[i]);
    }
}

/* Rows rows[0..n_rows-1], all of one sequence (the same pages). */
SIMD_TARGET static void tile_run(const struct eng_attn *a, const int *rows, int n_rows, int kvh,
                                 float *scratch)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv, Q = n_rows * G;
    const int q_stride = a->n_head * hd;
    float *qb = scratch, *ob = qb + TQ * hd, *sb = ob + TQ * hd;
    int32_t first[TQ], last[TQ];
    int lo = INT_MAX, hi = -1;
    for (int i = 0; i < TQ; i++) {
        if (i >= Q) { /* an unused lane: sees no key */
            memset(qb + i * hd, 0, (size_t)hd * sizeof(float));
            first[i] = INT_MAX;
            last[i] = -1;
            continue;
        }
        const int t = rows[i / G], h = kvh * G + i % G;
        memcpy(qb + i * hd, a->q + (int64_t)t * q_stride + h * hd, (size_t)hd * sizeof(float));
        const int pos = a->row_pos ? a->row_pos[t] : a->pos + t;
        last[i] = pos;
        first[i] = a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
        if (first[i] < lo) lo = first[i];
        if (pos > hi) hi = pos;
    }
    memset(ob, 0, (size_t)TQ * hd * sizeof(float));
    const __m512i vfirst = _mm512_loadu_si512(first), vlast = _mm512_loadu_si512(last);
    const struct eng_kv_rows r = {
        .pages = a->row_pages ? a->row_pages[rows[0]] : NULL,
        .shift = a->page_shift,
        .mask = (int32_t)((1u << a->page_shift) - 1),
    };
    const uint16_t *kb = (const uint16_t *)a->k + kvh * hd, *vb = (const uint16_t *)a->v + kvh * hd;
    float M[TQ], L[TQ];
    for (int i = 0; i < TQ; i++) M[i] = -INFINITY, L[i] = 0.0f;

    for (int p0 = lo; p0 <= hi; p0 += KB) {
        const int n = hi + 1 - p0 < KB ? hi + 1 - p0 : KB;
        const uint16_t *krow[KB], *vrow[KB];
        for (int j = 0; j < n; j++) {
            const int64_t row = eng_kv_row(&r, p0 + j);
            krow[j] = kb + row * a->kv_stride;
            vrow[j] = vb + row * a->kv_stride;
        }
        block_scores(a, qb, krow, p0, n, vfirst, vlast, sb);
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < n; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sb + j * TQ));
        float bm[TQ], corr[TQ], sum[TQ];
        _mm512_storeu_ps(bm, mx);
        for (int i = 0; i < TQ; i++) {
            const float m = bm[i] > M[i] ? bm[i] : M[i];
            corr[i] = m == -INFINITY ? 1.0f : expf(M[i] - m);
            M[i] = m;
            sum[i] = 0.0f;
        }
        for (int j = 0; j < n; j++) {
            float *s = sb + j * TQ;
            for (int i = 0; i < TQ; i++) {
                s[i] = M[i] == -INFINITY ? 0.0f : expf(s[i] - M[i]);
                sum[i] += s[i];
            }
        }
        for (int i = 0; i < TQ; i++) L[i] = L[i] * corr[i] + sum[i];
        block_values(a, vrow, n, sb, corr, ob);
    }
    for (int i = 0; i < Q; i++) {
        const int t = rows[i / G], h = kvh * G + i % G;
        float *out = a->out + (int64_t)t * q_stride + h * hd;
        const float inv = 1.0f / L[i];
        for (int e = 0; e < hd; e++) out[e] = ob[i * hd + e] * inv;
    }
}

void eng__attn_tiled(const struct eng_attn *a, int t0, int n_rows, int kvh, float *scratch)
{
    /* Runs of rows from one sequence (the same pages) share a tile. */
    int rows[TQ];
    for (int r = 0; r < n_rows;) {
        int n = 0;
        const int32_t *pages = a->row_pages ? a->row_pages[t0 + r] : NULL;
        while (r < n_rows && (a->row_pages ? a->row_pages[t0 + r] : NULL) == pages)
            rows[n++] = t0 + r++;
        tile_run(a, rows, n, kvh, scratch);
    }
}

/* ---- decode rows: the query heads of one KV head together ---- */

#define GQ_MAX 4 /* query heads per pass */

/* One head's 64 F16 values of a cache row (128 bytes: two lines of a page-aligned store) into
 * L1. */
SIMD_TARGET static inline void prefetch_head(const uint16_t *p)
{
    _mm_prefetch((const char *)p, _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 32), _MM_HINT_T0);
}
#ifndef ATTN_AHEAD
#define ATTN_AHEAD 64 /* keys prefetched ahead */
#endif

size_t eng__attn_group_scratch(int max_kv)
{
    return (size_t)GQ_MAX * (size_t)max_kv;
}

bool eng__attn_group_ok(const struct eng_attn *a)
{
    if (!a->row_pages || !a->row_pos || a->kv_type != ENG_KV_F16 || a->head_dim != 64 ||
        eng_cpu_level() < ENG_CPU_AVX512 || a->n_head_kv < 1 || a->n_head % a->n_head_kv != 0)
        return false;
    for (int t = 0; t < a->n_tok; t++)
        if (!(a->row_tiled ? a->row_tiled[t] : a->tiled)) return false;
    return true;
}

/* Query heads h0..h0+G-1 of KV head kvh for decode row t (G constant where inlined: the
 * queries, keys, values and outputs stay in registers). */
#define UNROLL4 _Pragma("GCC unroll 4")
SIMD_TARGET static inline __attribute__((always_inline)) void
group_pass(const struct eng_attn *a, int t, int kvh, int h0, const int G, float *scores,
           const struct eng_kv_rows r, int first, int n_kv, const uint16_t *kb, const uint16_t *vb)
{
    const int group = a->n_head / a->n_head_kv, q_stride = a->n_head * 64;
    __m512 q[GQ_MAX][4];
    float mx[GQ_MAX];
    UNROLL4
    for (int g = 0; g < G; g++) {
        const float *qp = a->q + (int64_t)t * q_stride + (kvh * group + h0 + g) * 64;
        UNROLL4
        for (int i = 0; i < 4; i++) q[g][i] = _mm512_loadu_ps(qp + 16 * i);
        mx[g] = -INFINITY;
    }
    /* Scores 16 keys at a time: each key's products per head summed to one vector,
     * the 16 vectors of a head reduced together into the keys' scores. */
    __m512 mxv[GQ_MAX];
    UNROLL4
    for (int g = 0; g < G; g++) mxv[g] = _mm512_set1_ps(-INFINITY);
    for (int p0 = 0; p0 < n_kv; p0 += 16) {
        const int n = n_kv - p0 < 16 ? n_kv - p0 : 16;
        const __mmask16 in = (__mmask16)((1u << n) - 1);
        __m512 part[GQ_MAX][16];
        for (int jk = 0; jk < 16; jk++) {
            if (jk >= n) {
                UNROLL4
                for (int g = 0; g < G; g++) part[g][jk] = _mm512_setzero_ps();
                continue;
            }
            const uint16_t *kp = kb + eng_kv_row(&r, first + p0 + jk) * a->kv_stride;
            /* The rows are paged and strided: fetch the key ATTN_AHEAD positions on, and this
             * position's value for the pass below, ahead of their use. */
            if (p0 + ATTN_AHEAD + jk < n_kv) {
                const uint16_t *kn =
                    kb + eng_kv_row(&r, first + p0 + ATTN_AHEAD + jk) * a->kv_stride;
                prefetch_head(kn);
            }
            const uint16_t *vq = vb + eng_kv_row(&r, first + p0 + jk) * a->kv_stride;
            prefetch_head(vq);
            __m512 k[4];
            UNROLL4
            for (int i = 0; i < 4; i++)
                k[i] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kp + 16 * i)));
            UNROLL4
            for (int g = 0; g < G; g++) {
                __m512 d = _mm512_mul_ps(q[g][0], k[0]);
                d = _mm512_fmadd_ps(q[g][1], k[1], d);
                d = _mm512_fmadd_ps(q[g][2], k[2], d);
                part[g][jk] = _mm512_fmadd_ps(q[g][3], k[3], d);
            }
        }
        UNROLL4
        for (int g = 0; g < G; g++) {
            const __m512 s = _mm512_mul_ps(eng__reduce16_avx512(part[g]), _mm512_set1_ps(a->scale));
            _mm512_mask_storeu_ps(scores + g * n_kv + p0, in, s);
            mxv[g] = _mm512_mask_max_ps(mxv[g], in, mxv[g], s);
        }
    }
    UNROLL4
    for (int g = 0; g < G; g++) mx[g] = _mm512_reduce_max_ps(mxv[g]);
    float sum[GQ_MAX];
    UNROLL4
    for (int g = 0; g < G; g++) {
        float *sg = scores + g * n_kv;
        const __m512 m = _mm512_set1_ps(mx[g]);
        __m512 acc = _mm512_setzero_ps();
        for (int p0 = 0; p0 < n_kv; p0 += 16) {
            const int n = n_kv - p0 < 16 ? n_kv - p0 : 16;
            const __mmask16 in = (__mmask16)((1u << n) - 1);
            const __m512 e =
                eng__v_expf_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(in, sg + p0), m));
            _mm512_mask_storeu_ps(sg + p0, in, e);
            acc = _mm512_mask_add_ps(acc, in, acc, e);
        }
        sum[g] = _mm512_reduce_add_ps(acc);
    }
    __m512 o[GQ_MAX][4];
    UNROLL4
    for (int g = 0; g < G; g++) UNROLL4 for (int i = 0; i < 4; i++) o[g][i] = _mm512_setzero_ps();
    for (int p = 0; p < n_kv; p++) {
        const uint16_t *vp = vb + eng_kv_row(&r, first + p) * a->kv_stride;
        if (p + 16 < n_kv) { /* from L2, where the score pass fetched it, to L1 */
            const uint16_t *vn = vb + eng_kv_row(&r, first + p + 16) * a->kv_stride;
            prefetch_head(vn);
        }
        __m512 v[4];
        UNROLL4
        for (int i = 0; i < 4; i++)
            v[i] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vp + 16 * i)));
        UNROLL4
        for (int g = 0; g < G; g++) {
            const __m512 w = _mm512_set1_ps(scores[g * n_kv + p]);
            UNROLL4
            for (int i = 0; i < 4; i++) o[g][i] = _mm512_fmadd_ps(w, v[i], o[g][i]);
        }
    }
    UNROLL4
    for (int g = 0; g < G; g++) {
        float *out = a->out + (int64_t)t * q_stride + (kvh * group + h0 + g) * 64;
        const __m512 inv = _mm512_set1_ps(1.0f / sum[g]);
        UNROLL4
        for (int i = 0; i < 4; i++) _mm512_storeu_ps(out + 16 * i, _mm512_mul_ps(o[g][i], inv));
    }
}

SIMD_TARGET void eng__attn_group(const struct eng_attn *a, int t, int kvh, float *scores)
{
    const int group = a->n_head / a->n_head_kv;
    const int q_pos = a->row_pos[t];
    const struct eng_kv_rows r = {
        .pages = a->row_pages[t],
        .shift = a->page_shift,
        .mask = (int32_t)((1u << a->page_shift) - 1),
    };
    const int first = a->window > 0 && q_pos - a->window + 1 > 0 ? q_pos - a->window + 1 : 0;
    const int n_kv = q_pos + 1 - first;
    const uint16_t *kb = (const uint16_t *)a->k + kvh * 64;
    const uint16_t *vb = (const uint16_t *)a->v + kvh * 64;
    for (int p = 0; p < n_kv && p < ATTN_AHEAD; p++) { /* the keys before the loop fetches */
        const uint16_t *kp = kb + eng_kv_row(&r, first + p) * a->kv_stride;
        prefetch_head(kp);
    }
    for (int h0 = 0; h0 < group; h0 += GQ_MAX) {
        switch (group - h0 < GQ_MAX ? group - h0 : GQ_MAX) {
        case 1:
            group_pass(a, t, kvh, h0, 1, scores, r, first, n_kv, kb, vb);
            break;
        case 2:
            group_pass(a, t, kvh, h0, 2, scores, r, first, n_kv, kb, vb);
            break;
        case 3:
            group_pass(a, t, kvh, h0, 3, scores, r, first, n_kv, kb, vb);
            break;
        default:
            group_pass(a, t, kvh, h0, 4, scores, r, first, n_kv, kb, vb);
            break;
        }
    }
}

#else

size_t eng__attn_group_scratch(int max_kv)
{
    (void)max_kv;
    return 0;
}

bool eng__attn_group_ok(const struct eng_attn *a)
{
    (void)a;
    return false;
}

void eng__attn_group(const struct eng_attn *a, int t, int kvh, float *scores)
{
    (void)a, (void)t, (void)kvh, (void)scores;
}

bool eng__attn_tiled_ok(const struct eng_attn *a)
{
    (void)a;
    return false;
}

void eng__attn_tiled(const struct eng_attn *a, int t0, int n_rows, int kvh, float *scratch)
{
    (void)a, (void)t0, (void)n_rows, (void)kvh, (void)scratch;
}

#endif
