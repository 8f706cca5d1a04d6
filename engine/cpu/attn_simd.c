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

/* ---- decode rows: the query heads of a row's KV heads together ---- */

#define GQ_MAX 4 /* query heads per pass */

/* One head's 64 F16 values of a cache row (128 bytes: two lines of a page-aligned store) into
 * L1. */
SIMD_TARGET static inline void prefetch_head(const uint16_t *p)
{
    _mm_prefetch((const char *)p, _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 32), _MM_HINT_T0);
}

/* The lanes of the first min(n, 16) of 16 keys. */
static inline __mmask16 keys_mask(int n)
{
    return (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1);
}
#ifndef ATTN_AHEAD
#define ATTN_AHEAD 64 /* keys prefetched ahead */
#endif

size_t eng__attn_group_scratch(int max_kv)
{
    return (size_t)ENG_ATTN_ROW_HEADS * (size_t)((max_kv + 15) & ~15);
}

bool eng__attn_group_ok(const struct eng_attn *a)
{
    if (!a->row_pages || !a->row_pos || a->kv_type != ENG_KV_F16 || a->head_dim != 64 ||
        eng_cpu_level() < ENG_CPU_AVX512 || a->n_head_kv < 1 || a->n_head % a->n_head_kv != 0 ||
        a->n_head / a->n_head_kv > ENG_ATTN_ROW_HEADS)
        return false;
    for (int t = 0; t < a->n_tok; t++)
        if (!(a->row_tiled ? a->row_tiled[t] : a->tiled)) return false;
    return true;
}

int eng__attn_group_kv_heads(const struct eng_attn *a)
{
    const int per = ENG_ATTN_ROW_HEADS / (a->n_head / a->n_head_kv);
    return per < a->n_head_kv ? per : a->n_head_kv;
}

/* The bytes of KV heads kvh0..kvh0+nk-1 in the cache rows of positions p..p+n-1 (n <= 16), keys
 * and values, on their way into the cache. */
SIMD_TARGET static inline void prefetch_rows(const struct eng_attn *a, const struct eng_kv_rows *r,
                                             int p, int n, int kvh0, int nk)
{
    const char *kb = (const char *)a->k + (size_t)kvh0 * 128;
    const char *vb = (const char *)a->v + (size_t)kvh0 * 128;
    const int64_t row_bytes = (int64_t)a->kv_stride * 2;
    for (int j = 0; j < n; j++) {
        const int64_t off = eng_kv_row(r, p + j) * row_bytes;
        for (int o = 0; o < nk * 128; o += 64) {
            _mm_prefetch(kb + off + o, _MM_HINT_T0);
            _mm_prefetch(vb + off + o, _MM_HINT_T0);
        }
    }
}

/* Scores of keys p0..p0+n-1 (n <= 16, cache row offsets off[]) for query heads h..h+G-1 of row t
 * (G constant where inlined: queries and products stay in registers): each key's products per
 * head summed to one vector, the 16 vectors of a head reduced together into the keys' scores. */
#define UNROLL4 _Pragma("GCC unroll 4")
SIMD_TARGET static inline __attribute__((always_inline)) void
score_block(const struct eng_attn *a, int t, int h, const int G, const uint16_t *kb,
            const int64_t *off, int n, float *sc, int ns)
{
    const float *qp = a->q + (int64_t)t * a->n_head * 64 + h * 64;
    __m512 q[GQ_MAX][4];
    UNROLL4
    for (int g = 0; g < G; g++)
        UNROLL4 for (int i = 0; i < 4; i++) q[g][i] = _mm512_loadu_ps(qp + g * 64 + 16 * i);
    __m512 part[GQ_MAX][16];
    for (int jk = 0; jk < 16; jk++) {
        if (jk >= n) {
            UNROLL4
            for (int g = 0; g < G; g++) part[g][jk] = _mm512_setzero_ps();
            continue;
        }
        const uint16_t *kp = kb + off[jk];
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
    const __mmask16 in = keys_mask(n);
    UNROLL4
    for (int g = 0; g < G; g++)
        _mm512_mask_storeu_ps(
            sc + g * ns, in,
            _mm512_mul_ps(eng__reduce16_avx512(part[g]), _mm512_set1_ps(a->scale)));
}

/* out of query heads h..h+G-1 of row t = sum over the keys of weight * value, the weights
 * (unnormalized, n_kv of each head at stride ns) in w, their sums in sum. */
SIMD_TARGET static inline __attribute__((always_inline)) void
value_pass(const struct eng_attn *a, int t, int h, const int G, const uint16_t *vb,
           const struct eng_kv_rows *r, int first, int n_kv, const float *w, int ns,
           const float *sum)
{
    __m512 o[GQ_MAX][4];
    UNROLL4
    for (int g = 0; g < G; g++) UNROLL4 for (int i = 0; i < 4; i++) o[g][i] = _mm512_setzero_ps();
    for (int p = 0; p < n_kv; p++) {
        const uint16_t *vp = vb + eng_kv_row(r, first + p) * a->kv_stride;
        if (p + 16 < n_kv) /* from L2, where the score pass fetched it, to L1 */
            prefetch_head(vb + eng_kv_row(r, first + p + 16) * a->kv_stride);
        __m512 v[4];
        UNROLL4
        for (int i = 0; i < 4; i++)
            v[i] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vp + 16 * i)));
        UNROLL4
        for (int g = 0; g < G; g++) {
            const __m512 wg = _mm512_set1_ps(w[g * ns + p]);
            UNROLL4
            for (int i = 0; i < 4; i++) o[g][i] = _mm512_fmadd_ps(wg, v[i], o[g][i]);
        }
    }
    float *out = a->out + (int64_t)t * a->n_head * 64 + h * 64;
    UNROLL4
    for (int g = 0; g < G; g++) {
        const __m512 inv = _mm512_set1_ps(1.0f / sum[g]);
        UNROLL4
        for (int i = 0; i < 4; i++)
            _mm512_storeu_ps(out + g * 64 + 16 * i, _mm512_mul_ps(o[g][i], inv));
    }
}

/* Calls body with G = n (1..GQ_MAX) as a constant. */
#define WITH_G(n, body)                                                                            \
    switch (n) {                                                                                   \
    case 1: {                                                                                      \
        const int G_ = 1;                                                                          \
        body;                                                                                      \
    } break;                                                                                       \
    case 2: {                                                                                      \
        const int G_ = 2;                                                                          \
        body;                                                                                      \
    } break;                                                                                       \
    case 3: {                                                                                      \
        const int G_ = 3;                                                                          \
        body;                                                                                      \
    } break;                                                                                       \
    default: {                                                                                     \
        const int G_ = GQ_MAX;                                                                     \
        body;                                                                                      \
    } break;                                                                                       \
    }

SIMD_TARGET void eng__attn_group(const struct eng_attn *a, int t, int kvh0, int nk, float *scores)
{
    const int group = a->n_head / a->n_head_kv, q_pos = a->row_pos[t];
    const struct eng_kv_rows r = {
        .pages = a->row_pages[t],
        .shift = a->page_shift,
        .mask = (int32_t)((1u << a->page_shift) - 1),
    };
    const int first = a->window > 0 && q_pos - a->window + 1 > 0 ? q_pos - a->window + 1 : 0;
    const int n_kv = q_pos + 1 - first, ns = (n_kv + 15) & ~15;
    const uint16_t *k0 = a->k, *v0 = a->v;

    /* Scores, 16 keys at a time for all the KV heads: the keys' cache rows are read once,
     * front to back, while the rows ATTN_AHEAD positions on (keys and values) are fetched. */
    for (int p = 0; p < n_kv && p < ATTN_AHEAD; p += 16)
        prefetch_rows(a, &r, first + p, n_kv - p < 16 ? n_kv - p : 16, kvh0, nk);
    for (int p0 = 0; p0 < n_kv; p0 += 16) {
        const int n = n_kv - p0 < 16 ? n_kv - p0 : 16;
        if (p0 + ATTN_AHEAD < n_kv) {
            const int pa = p0 + ATTN_AHEAD;
            prefetch_rows(a, &r, first + pa, n_kv - pa < 16 ? n_kv - pa : 16, kvh0, nk);
        }
        int64_t off[16];
        for (int j = 0; j < n; j++) off[j] = eng_kv_row(&r, first + p0 + j) * a->kv_stride;
        for (int kvh = kvh0; kvh < kvh0 + nk; kvh++) {
            const uint16_t *kb = k0 + kvh * 64;
            for (int g0 = 0; g0 < group; g0 += GQ_MAX) {
                float *sc = scores + (size_t)((kvh - kvh0) * group + g0) * ns + p0;
                const int h = kvh * group + g0;
                WITH_G(group - g0, score_block(a, t, h, G_, kb, off, n, sc, ns));
            }
        }
    }
    /* Softmax weights, unnormalized: exp(s - max) per head, through ggml's vector expf. */
    float sum[ENG_ATTN_ROW_HEADS];
    for (int hh = 0; hh < nk * group; hh++) {
        float *sg = scores + (size_t)hh * ns;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int p0 = 0; p0 < n_kv; p0 += 16) {
            const __mmask16 in = keys_mask(n_kv - p0);
            mx = _mm512_mask_max_ps(mx, in, mx, _mm512_maskz_loadu_ps(in, sg + p0));
        }
        const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 acc = _mm512_setzero_ps();
        for (int p0 = 0; p0 < n_kv; p0 += 16) {
            const __mmask16 in = keys_mask(n_kv - p0);
            const __m512 e =
                eng__v_expf_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(in, sg + p0), m));
            _mm512_mask_storeu_ps(sg + p0, in, e);
            acc = _mm512_mask_add_ps(acc, in, acc, e);
        }
        sum[hh] = _mm512_reduce_add_ps(acc);
    }
    /* Values, one KV head at a time: its query heads' sums in registers, the rows from L2. */
    for (int kvh = kvh0; kvh < kvh0 + nk; kvh++) {
        const uint16_t *vb = v0 + kvh * 64;
        for (int p = 0; p < n_kv && p < 16; p++)
            prefetch_head(vb + eng_kv_row(&r, first + p) * a->kv_stride);
        for (int g0 = 0; g0 < group; g0 += GQ_MAX) {
            const int hh = (kvh - kvh0) * group + g0;
            const float *w = scores + (size_t)hh * ns;
            WITH_G(group - g0,
                   value_pass(a, t, kvh * group + g0, G_, vb, &r, first, n_kv, w, ns, sum + hh));
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

int eng__attn_group_kv_heads(const struct eng_attn *a)
{
    (void)a;
    return 1;
}

void eng__attn_group(const struct eng_attn *a, int t, int kvh0, int nk, float *scores)
{
    (void)a, (void)t, (void)kvh0, (void)nk, (void)scores;
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
