/*
 * quant.h - quantized tensor formats, their scalar reference kernels and the type-traits table.
 *
 * What: the block layouts of every tensor type the engine reads from GGUF files (ggml's formats,
 * bit for bit), the two activation formats the integer dot products use, and one scalar
 * reference kernel per operation: dequantize a row, quantize a row, dot a weight row with a
 * quantized activation row. `struct eng_qtype` gathers them per type; the matmul code goes
 * through that table only, so faster kernels (AVX2, AVX-512 VNNI) plug in as another table whose
 * results tests compare with this one.
 *
 * Why this way: like llama.cpp, a matmul quantizes its activation vector once (to Q8_0, Q8_1 or
 * Q8_K, whichever the weight type asks for) and then every weight row is dotted in integers, one
 * int32 sum per block, scaled by the two block scales. That is what makes int8 SIMD pay off.
 * The reference kernels are written for clarity, not speed, and allocate nothing.
 *
 * Block layouts (little-endian; "f16" is an IEEE half stored as its 16 bits; "value i" counts
 * from 0 within the block; q is the stored unsigned code):
 *   Q4_0  32 values, 18 B: f16 d; 16 B of nibbles. Byte j holds value j in its low nibble and
 *         value j+16 in its high nibble. x = d * (q - 8).
 *   Q4_1  32 values, 20 B: f16 d, f16 m; nibbles as Q4_0. x = d * q + m.
 *   Q5_0  32 values, 22 B: f16 d; 4 B qh; nibbles as Q4_0. qh read as a little-endian u32 holds
 *         bit 4 of value i at bit i. x = d * (q - 16).
 *   Q5_1  32 values, 24 B: f16 d, f16 m; qh and nibbles as Q5_0. x = d * q + m.
 *   Q8_0  32 values, 34 B: f16 d; 32 int8. x = d * q.
 *   Q4_K  256 values in 8 sub-blocks of 32, 144 B: f16 d, f16 dmin; 12 B holding eight 6-bit
 *         scales sc[j] and eight 6-bit mins m[j]; 128 B of nibbles. x = d*sc[j]*q - dmin*m[j].
 *         The 12 bytes: for j < 4, byte j = sc[j] low 6 bits, byte j+4 = m[j] low 6 bits; for
 *         j >= 4 the low 4 bits of sc[j] and m[j] share byte j+4 (sc low nibble, m high nibble)
 *         and their top 2 bits sit in bits 6-7 of bytes j-4 (sc) and j (m).
 *         Nibbles come in 4 chunks of 32 bytes; chunk c covers values 64c..64c+63: byte l of the
 *         chunk holds value 64c+l in its low nibble and value 64c+32+l in its high nibble.
 *   Q5_K  256 values, 176 B: as Q4_K, plus 32 B qh before the nibbles: bit j of qh[l] is bit 4
 *         of value 32j+l (sub-block j, position l). x = d*sc[j]*q - dmin*m[j], q in 0..31.
 *   Q6_K  256 values in 16 groups of 16, 210 B: 128 B ql (low 4 bits), 64 B qh (high 2 bits),
 *         16 int8 scales, then f16 d. Each half h of 128 values uses ql[64h..64h+63] and
 *         qh[32h..32h+31]; for l < 32, value 128h+l+32k (k = 0..3) takes its low 4 bits from
 *         the low (k = 0, 1) or high (k = 2, 3) nibble of ql[64h + l + 32*(k&1)] and its high
 *         2 bits from bits 2k..2k+1 of qh[32h+l]. x = d * scale[i/16] * (q - 32).
 * Activation formats (never in files):
 *   Q8_0  as above, for Q4_0/Q5_0/Q8_0 weights.
 *   Q8_1  32 values, 40 B: f32 d, f32 s = d * sum(q); 32 int8. For Q4_1/Q5_1 weights, whose
 *         offset m multiplies the activation sum: the sum is computed once per activation block
 *         when quantizing instead of once per weight row in the dot. d and s stay f32 (ggml uses
 *         f16) because m*s and d*sum(q*a) can cancel, so rounding s to 11 bits would show.
 *   Q8_K  256 values, 292 B: f32 d; 256 int8; 16 int16 sums of each group of 16 codes. For
 *         K-quants: the mins term needs per-sub-block activation sums (bsums pairs for Q4_K/Q5_K).
 *
 * Invariants: a row of n values of a blocked type is n / block_elems whole blocks; every row
 * function requires n % block_elems == 0 (the GGUF loader checks tensor shapes before any kernel
 * runs). Activation codes are in [-127, 127], never -128, so SIMD sign tricks cannot overflow.
 * Activation quantizers round to nearest, ties to even (what cvtps2dq does), so SIMD versions
 * can reproduce them bit for bit. Weight reference quantizers for Q4_0..Q8_0 reproduce ggml's
 * (and gguf-py's) bit for bit; the K-quant ones are plain round-to-nearest, not llama.cpp's
 * search-based ones.
 *
 * Names: the table API and the F16 helpers are eng_ (any engine file uses them); the row kernels
 * are eng__ and meant to be reached through the table.
 */
#ifndef ENG_QUANT_H
#define ENG_QUANT_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fp16.h"
#include "gguf.h"

/* Type ids are gguf.h's ENG_GGML_* (the GGUF on-disk tensor type numbers). Q8_1 and Q8_K are
 * activation-only formats here. */

#define ENG_QK   32  /* values per block of the *_0 / *_1 / Q8_0 / Q8_1 formats */
#define ENG_QK_K 256 /* values per super-block of the K formats */

struct eng_block_q4_0 {
    uint16_t d;             /* f16 scale */
    uint8_t qs[ENG_QK / 2]; /* value j in low nibble of byte j, value j+16 in its high nibble */
};

struct eng_block_q4_1 {
    uint16_t d;             /* f16 scale */
    uint16_t m;             /* f16 offset (the block minimum) */
    uint8_t qs[ENG_QK / 2]; /* low 4 bits, packed as in Q4_0 */
};

struct eng_block_q5_0 {
    uint16_t d;             /* f16 scale */
    uint8_t qh[4];          /* bit 4 of value i at bit i of this little-endian u32 */
    uint8_t qs[ENG_QK / 2]; /* low 4 bits, packed as in Q4_0 */
};

struct eng_block_q5_1 {
    uint16_t d;             /* f16 scale */
    uint16_t m;             /* f16 offset (the block minimum) */
    uint8_t qh[4];          /* bit 4 of value i at bit i, as in Q5_0 */
    uint8_t qs[ENG_QK / 2]; /* low 4 bits, packed as in Q4_0 */
};

struct eng_block_q8_0 {
    uint16_t d;        /* f16 scale */
    int8_t qs[ENG_QK]; /* codes; x = d * q */
};

struct eng_block_q8_1 {
    float d;           /* scale */
    float s;           /* d * (sum of qs), for the offset term of Q4_1/Q5_1 dots */
    int8_t qs[ENG_QK]; /* codes in [-127, 127]; x = d * q */
};

struct eng_block_q4_K {
    uint16_t d;               /* f16 super-block scale of the 6-bit sub-block scales */
    uint16_t dmin;            /* f16 super-block scale of the 6-bit sub-block mins */
    uint8_t scales[12];       /* 8 scales + 8 mins, 6 bits each (packing in the file header) */
    uint8_t qs[ENG_QK_K / 2]; /* 4-bit codes in 4 chunks of 32 bytes (see the file header) */
};

struct eng_block_q5_K {
    uint16_t d;               /* f16 super-block scale of the 6-bit sub-block scales */
    uint16_t dmin;            /* f16 super-block scale of the 6-bit sub-block mins */
    uint8_t scales[12];       /* packed as in Q4_K */
    uint8_t qh[ENG_QK_K / 8]; /* bit j of byte l: bit 4 of value 32j+l */
    uint8_t qs[ENG_QK_K / 2]; /* low 4 bits, packed as in Q4_K */
};

struct eng_block_q6_K {
    uint8_t ql[ENG_QK_K / 2];     /* low 4 bits of the codes (see the file header) */
    uint8_t qh[ENG_QK_K / 4];     /* high 2 bits of the codes, 4 values per byte */
    int8_t scales[ENG_QK_K / 16]; /* signed scale of each group of 16 values */
    uint16_t d;                   /* f16 super-block scale */
};

struct eng_block_q8_K {
    float d;                      /* scale */
    int8_t qs[ENG_QK_K];          /* codes in [-127, 127]; x = d * q */
    int16_t bsums[ENG_QK_K / 16]; /* sum of each group of 16 codes */
};

_Static_assert(sizeof(struct eng_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct eng_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct eng_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(struct eng_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(struct eng_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct eng_block_q8_1) == 40, "q8_1 block");
_Static_assert(sizeof(struct eng_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(struct eng_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(struct eng_block_q6_K) == 210, "q6_K block");
_Static_assert(sizeof(struct eng_block_q8_K) == 292, "q8_K block");

/* Blocks of src (n values) to n floats. */
typedef void (*eng_dequantize_fn)(const void *src, float *dst, int64_t n);
/* n floats to n / block_elems blocks of dst. */
typedef void (*eng_quantize_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n values: one weight row with one activation row in the weight's act_type. */
typedef float (*eng_vec_dot_fn)(int n, const void *w_row, const void *act_row);

/* Everything the engine knows about one tensor type: an ops table, one per implementation. */
struct eng_qtype {
    int type;                     /* ggml type id (int) */
    const char *name;             /* ggml's lower-case name: "q4_0", "bf16", ... */
    int block_elems;              /* values per block (1 for F32, F16, BF16) */
    int block_bytes;              /* bytes per block */
    bool weight;                  /* may appear in a model file (false: Q8_1, Q8_K) */
    int act_type;                 /* activation format vec_dot takes; -1 for activation types */
    eng_dequantize_fn dequantize; /* every type */
    eng_quantize_fn quantize;     /* reference quantizer to this type (for weights and tests) */
    eng_quantize_fn quantize_act; /* f32 activations to act_type, once per matmul; NULL when
                                     act_type is F32 (the activations are used as they are) */
    eng_vec_dot_fn vec_dot;       /* NULL for activation-only types */
};

/* The entry the engine should use for a type id, or NULL for a type it does not support. Today
 * this is the scalar reference; SIMD tables will be chosen here once, by CPU features. */
const struct eng_qtype *eng_qtype_get(int type);
/* The scalar reference entry for a type id (NULL if unsupported), on every CPU: the oracle that
 * SIMD kernels are tested against. */
const struct eng_qtype *eng_qtype_ref(int type);
/* Bytes of a row of n values of qt, or 0 when qt is NULL, n is not a positive multiple of its
 * block or the size does not fit a size_t. */
size_t eng_qtype_row_bytes(const struct eng_qtype *qt, int64_t n);

/* Rounds a scaled activation to an int8 code: nearest, ties to even, clamped to [-127, 127],
 * NaN to 0. Shared by every activation quantizer so SIMD versions have one rule to match. */
static inline int8_t eng__act_round(float v)
{
    if (v != v) return 0;
    if (v <= -127.0f) return -127;
    if (v >= 127.0f) return 127;
    return (int8_t)nearbyintf(v);
}

/* ---- scalar reference kernels (quant_ref.c: legacy and float types; quant_kquants.c) ---- */

void eng__dequantize_row_f32(const void *src, float *dst, int64_t n);
void eng__dequantize_row_f16(const void *src, float *dst, int64_t n);
void eng__dequantize_row_bf16(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q5_0(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q5_1(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q8_1(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q4_K(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q5_K(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q6_K(const void *src, float *dst, int64_t n);
void eng__dequantize_row_q8_K(const void *src, float *dst, int64_t n);

/* Weight reference quantizers. */
void eng__quantize_row_f32_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_f16_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_bf16_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q4_0_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q4_1_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q5_0_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q5_1_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q8_0_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q4_K_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q5_K_ref(const float *src, void *dst, int64_t n);
void eng__quantize_row_q6_K_ref(const float *src, void *dst, int64_t n);

/* Activation quantizers: d = amax / 127, codes = eng__act_round(x * (127 / amax)). */
void eng__quantize_row_q8_0(const float *src, void *dst, int64_t n);
void eng__quantize_row_q8_1(const float *src, void *dst, int64_t n);
void eng__quantize_row_q8_K(const float *src, void *dst, int64_t n);

/* Dot products: int32 sums per block, scaled per block, blocks summed in double. */
float eng__vec_dot_f32_f32(int n, const void *w_row, const void *act_row);
float eng__vec_dot_f16_f32(int n, const void *w_row, const void *act_row);
float eng__vec_dot_bf16_f32(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q4_0_q8_0(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q4_1_q8_1(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q5_0_q8_0(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q5_1_q8_1(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q8_0_q8_0(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q4_K_q8_K(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q5_K_q8_K(int n, const void *w_row, const void *act_row);
float eng__vec_dot_q6_K_q8_K(int n, const void *w_row, const void *act_row);

/* Unpacks the 6-bit scale and min of sub-block j (0..7) from a Q4_K/Q5_K scales array. */
static inline void eng__kq_scale_min(const uint8_t scales[12], int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
        *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

#endif
