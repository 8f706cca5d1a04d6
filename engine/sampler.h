/*
 * sampler.h - picks the next token from a logits vector: penalties over recent tokens, then
 * greedy, or top-k / top-p / min-p truncation, temperature and a seeded random draw.
 *
 * Order (llama.cpp's default chain): repetition/frequency/presence penalties, top-k, top-p,
 * min-p, temperature, draw. top-p and min-p are measured on the untempered distribution of the
 * tokens top-k kept. Temperature <= 0 (or top_k == 1) is greedy: the argmax after penalties,
 * the lowest id on ties.
 *
 * The vocabulary is never fully sorted: top-k selects with a heap of k; without top-k, top-p
 * considers only the tokens within ENG_SAMPLER_LOGIT_RANGE of the best logit, sorts them when
 * there are at most ENG_SAMPLER_TOPP_CAP, and otherwise bins them by logit into
 * ENG_SAMPLER_BINS bins and sorts only the bin where the cumulative mass crosses top_p; min-p alone
 * and the untruncated case need no sort at all. Every buffer is allocated by eng_sampler_new();
 * sampling allocates nothing.
 */
#ifndef ENG_SAMPLER_H
#define ENG_SAMPLER_H

#include <stdint.h>

#include "../base/base.h"

/* Tokens further than this below the best logit are dropped before a top-p sort (their total
 * probability is below n_vocab * e^-30, about 3e-8 for 262,144 tokens). */
#define ENG_SAMPLER_LOGIT_RANGE 30.0f
/* Top-p without top-k sorts at most this many candidates; more are binned (see above). */
#define ENG_SAMPLER_TOPP_CAP 4096
#define ENG_SAMPLER_BINS     2048

/* Sampling settings. eng_sampler_params_default() gives llama.cpp's defaults; in a zeroed struct
 * every field means "off" and temperature 0 means greedy. */
struct eng_sampler_params {
    float temperature;    /* <= 0: greedy */
    float top_p;          /* keep the smallest set with probability >= top_p; >= 1 or <= 0: off */
    float min_p;          /* keep tokens with p >= min_p * p_max; <= 0: off */
    float repeat_penalty; /* divide positive / multiply negative logits of recent tokens; 0 or 1:
                             off */
    float frequency_penalty; /* subtract count * frequency_penalty from recent tokens; 0: off */
    float presence_penalty;  /* subtract presence_penalty from every recent token; 0: off */
    int top_k;               /* keep the k best; <= 0: off (all tokens) */
    int penalty_last_n;      /* window of accepted tokens the penalties look at; <= 0: off */
    uint64_t seed;           /* seeds the random draws: the same seed, the same choices */
};

struct eng_sampler; /* opaque; one per sequence, not thread-safe */

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off), penalty_last_n 64,
 * seed 0. */
struct eng_sampler_params eng_sampler_params_default(void);

/* A sampler for logits of n_vocab entries (1..2^24). Errors: AG_EINVAL (n_vocab, a NaN or
 * negative parameter, penalty_last_n > 2^20). */
int eng_sampler_new(int n_vocab, const struct eng_sampler_params *p, struct eng_sampler **out,
                    struct ag_err *err);
void eng_sampler_free(struct eng_sampler *s); /* NULL is fine */

/* Returns the chosen token id of logits[0..n_vocab). logits is modified (penalties applied in
 * place). Does not record the token: call eng_sampler_accept() with what the sequence takes. */
int32_t eng_sampler_sample(struct eng_sampler *s, float *logits);
/* Records token in the penalty window (ids outside the vocabulary are ignored). */
void eng_sampler_accept(struct eng_sampler *s, int32_t token);
/* Forgets the penalty window and reseeds the random generator with seed. */
void eng_sampler_reset(struct eng_sampler *s, uint64_t seed);

#endif
