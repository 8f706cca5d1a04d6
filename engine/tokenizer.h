/*
 * tokenizer.h - the engine's tokenizers: text to token ids and back, for the models we run, with
 * exact parity against llama.cpp (the reference implementation), loaded from a GGUF file's
 * tokenizer.ggml.* metadata.
 *
 * Two kinds of vocabulary (tokenizer.ggml.model):
 *   "gpt2"   byte-level BPE (SmolLM2, Qwen2, Llama 3): the text is split into words by the model's
 *            pre-tokenizer (tokenizer.ggml.pre: "smollm", "qwen2", "llama-bpe", "gpt2"), each
 *            byte of a word is mapped to a printable character (GPT-2's byte <-> unicode table)
 *            and the word is merged pairwise by merge rank (tokenizer.ggml.merges).
 *   "llama"  SentencePiece-style (Gemma 3, Llama 2): spaces become U+2581, characters are merged
 *            pairwise by token score (tokenizer.ggml.scores), and what no token covers falls back
 *            to <0xXX> byte tokens.
 *
 * Special tokens (control, user-defined and unknown tokens) are split out of the text before
 * either algorithm runs, longest first. With ENG_TOKENIZE_PARSE_SPECIAL, control-token text in
 * the input ("<|im_end|>", "<end_of_turn>") becomes its id: what a chat template's own text
 * needs. Without it, control tokens are ordinary text (what user content needs); user-defined
 * tokens (Gemma's runs of spaces and newlines, "<table>", ...) are split out either way, as in
 * the reference. Neither flag adds BOS/EOS; ENG_TOKENIZE_ADD_SPECIAL does, as the model says.
 *
 * Detokenization: eng_token_piece() is a token's text as the reference renders it (byte-level
 * characters decoded to bytes, U+2581 to a space, <0xXX> to its byte); control and unknown
 * tokens render as their text only with ENG_DETOK_SPECIAL. eng_detokenize() concatenates pieces
 * (what llama.cpp's server returns from /detokenize and streams while generating; llama.cpp's
 * llama_detokenize() "clean_spaces" pass is not applied: none of our models asks for it).
 * struct eng_detok streams: it takes ids one at a time and hands out only complete UTF-8
 * sequences, holding back a piece that ends inside a character (a byte token, an emoji split
 * over tokens) until the rest arrives.
 *
 * Threads: a loaded tokenizer is read-only; any number of threads may tokenize with it at once
 * (each call uses its own scratch memory). A struct eng_detok belongs to one stream.
 */
#ifndef ENG_TOKENIZER_H
#define ENG_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"
#include "gguf.h"

#define ENG_TOKEN_NULL (-1) /* "no such token" */

/* Longest text eng_tokenize() takes, in bytes (token counts and offsets stay in int32_t). */
#define ENG_TOKENIZE_MAX_BYTES ((size_t)1 << 30)

enum eng_tok_type {
    ENG_TOK_SPM = 1, /* tokenizer.ggml.model "llama" */
    ENG_TOK_BPE = 2, /* tokenizer.ggml.model "gpt2" */
};

/* Byte-level BPE pre-tokenizers (how text is cut into words before merging). */
enum eng_tok_pre {
    ENG_TOK_PRE_NONE = 0, /* SPM vocabularies have none */
    ENG_TOK_PRE_GPT2,     /* "gpt2": 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    ENG_TOK_PRE_SMOLLM,   /* "smollm": every \p{N} alone first, then GPT-2's */
    ENG_TOK_PRE_LLAMA3,   /* "llama-bpe", "llama3", "llama-v3": \p{N}{1,3}, (?i) contractions */
    ENG_TOK_PRE_QWEN2,    /* "qwen2", "deepseek-r1-qwen": as Llama 3 but \p{N} one by one */
};

/* Token attributes, numbered as llama.cpp's llama_token_attr so dumps compare directly. */
enum {
    ENG_TOKATTR_UNKNOWN = 1 << 0,
    ENG_TOKATTR_UNUSED = 1 << 1,
    ENG_TOKATTR_NORMAL = 1 << 2,
    ENG_TOKATTR_CONTROL = 1 << 3,
    ENG_TOKATTR_USER_DEFINED = 1 << 4,
    ENG_TOKATTR_BYTE = 1 << 5,
    ENG_TOKATTR_LSTRIP = 1 << 7, /* eat ASCII whitespace before the token's text */
    ENG_TOKATTR_RSTRIP = 1 << 8, /* eat ASCII whitespace after it */
};

/* Flags of eng_tokenize(). */
enum {
    ENG_TOKENIZE_ADD_SPECIAL = 1 << 0,   /* BOS first / EOS last where the model adds them */
    ENG_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* control-token text in the input becomes its id */
};

/* Flags of the detokenizers. */
enum {
    ENG_DETOK_SPECIAL = 1 << 0, /* render control and unknown tokens' text (else: nothing) */
    /* Drop one leading space from the first piece when the vocabulary adds a space prefix
     * (tokenizer.ggml.add_space_prefix), as llama_detokenize() does; no-op otherwise. */
    ENG_DETOK_STRIP_PREFIX_SPACE = 1 << 1,
};

/* The model's special tokens, ENG_TOKEN_NULL when it has none. Defaults and auto-detection
 * follow the reference: an absent eot is looked for by text ("<|im_end|>", "<end_of_turn>",
 * "<|eot_id|>", ...). */
struct eng_tok_specials {
    int32_t bos;           /* beginning of sequence */
    int32_t eos;           /* end of sequence */
    int32_t eot;           /* end of turn */
    int32_t eom;           /* end of message (Llama 3 tool calls) */
    int32_t unk;           /* unknown */
    int32_t sep;           /* separator */
    int32_t pad;           /* padding */
    int32_t mask;          /* mask */
    int32_t nl;            /* the token of "\n" */
    bool add_bos;          /* ENG_TOKENIZE_ADD_SPECIAL puts bos first */
    bool add_eos;          /* ENG_TOKENIZE_ADD_SPECIAL puts eos last */
    bool add_space_prefix; /* SPM: a space goes before text that starts the input or follows a
                              special token */
};

struct eng_tokenizer; /* a loaded vocabulary, opaque, read-only after load */

/* ---- load ---- */

/* Builds the tokenizer of an open GGUF file. Errors: AG_ENOTFOUND (no tokenizer.ggml.model or
 * tokens; no merges for BPE), AG_EUNSUPPORTED (another tokenizer model or pre-tokenizer; the
 * message lists the supported ones), AG_EPARSE (malformed arrays: too few scores or types, a
 * value of the wrong type), AG_ETOOBIG (over 2^30 tokens, over 4 GiB of token text, a token
 * rendering to over 1 MiB: only hostile files have them). The
 * tokenizer copies what it needs: g may be closed afterwards. */
int eng_tokenizer_load(const struct eng_gguf *g, struct eng_tokenizer **out, struct ag_err *err);
void eng_tokenizer_free(struct eng_tokenizer *t); /* NULL is fine */

/* ---- the vocabulary ---- */

enum eng_tok_type eng_tokenizer_type(const struct eng_tokenizer *t);
enum eng_tok_pre eng_tokenizer_pre(const struct eng_tokenizer *t);
/* tokenizer.ggml.pre as in the file ("smollm", ...), or "" when absent. */
const char *eng_tokenizer_pre_name(const struct eng_tokenizer *t);
uint32_t eng_tokenizer_n_vocab(const struct eng_tokenizer *t);
const struct eng_tok_specials *eng_tokenizer_specials(const struct eng_tokenizer *t);

/* End-of-generation tokens (eos, eot, eom and every token the reference treats as one, e.g.
 * "<|im_end|>" and "<|endoftext|>" for ChatML models, "<end_of_turn>" and "<eos>" for Gemma),
 * ascending. *ids lives as long as t. */
size_t eng_tokenizer_eog(const struct eng_tokenizer *t, const int32_t **ids);
bool eng_token_is_eog(const struct eng_tokenizer *t, int32_t id);

/* ENG_TOKATTR_* bits, 0 when id is out of range. */
unsigned eng_token_attr(const struct eng_tokenizer *t, int32_t id);
/* tokenizer.ggml.scores[id] (0 without scores or out of range). */
float eng_token_score(const struct eng_tokenizer *t, int32_t id);
/* The token whose vocabulary string is exactly text[0..len), or ENG_TOKEN_NULL. */
int32_t eng_token_find(const struct eng_tokenizer *t, const char *text, size_t len);

/* ---- tokenize ---- */

/* Tokenizes len bytes of text (any bytes; invalid UTF-8 is handled as the reference does) with
 * ENG_TOKENIZE_* flags into ids[0..cap). Returns 0 with *n_out = the count, or AG_ETOOBIG with
 * *n_out = the count needed when cap is too small (ids then holds the first cap), or AG_ETOOBIG
 * for a text over ENG_TOKENIZE_MAX_BYTES, or AG_EINVAL when the vocabulary lacks a token the
 * text needs (a byte token for SPM byte fallback, BOS/EOS for ADD_SPECIAL). Cost: linear in the
 * text (times log of a word's length); a 100 KB text takes milliseconds. */
int eng_tokenize(const struct eng_tokenizer *t, const char *text, size_t len, unsigned flags,
                 int32_t *ids, size_t cap, size_t *n_out, struct ag_err *err);
/* The same into a malloc'd array (*ids, freed by the caller with free(); NULL when empty). */
int eng_tokenize_alloc(const struct eng_tokenizer *t, const char *text, size_t len, unsigned flags,
                       int32_t **ids, size_t *n_out, struct ag_err *err);

/* ---- detokenize ---- */

/* The bytes id renders as (see the file comment; ENG_DETOK_SPECIAL is the only flag used), and
 * *len; "" for ids that render as nothing; NULL for an id out of range. Lives as long as t. */
const char *eng_token_piece(const struct eng_tokenizer *t, int32_t id, unsigned flags, size_t *len);
/* Appends the concatenated pieces of ids[0..n) to out, bytes as the reference gives them (not
 * necessarily valid UTF-8). AG_EINVAL (out unchanged) when an id is out of range. */
int eng_detokenize(const struct eng_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                   struct ag_buf *out, struct ag_err *err);

/* A streaming detokenizer: push ids one at a time; each push appends to out only complete,
 * valid UTF-8 (a piece ending inside a character waits for the next push). Bytes that can
 * never become valid UTF-8 are replaced, one U+FFFD per maximal ill-formed subsequence (the
 * Unicode "best practice"), so the output is always valid UTF-8; for valid text it equals
 * eng_detokenize(). No allocation beyond out's growth. */
struct eng_detok {
    const struct eng_tokenizer *t; /* borrowed; outlives the stream */
    unsigned flags;                /* ENG_DETOK_* */
    bool started;                  /* a piece has been seen (for STRIP_PREFIX_SPACE) */
    uint8_t pend[4];               /* the start of an incomplete UTF-8 sequence */
    uint8_t n_pend;                /* bytes in pend (0..3) */
};

void eng_detok_init(struct eng_detok *d, const struct eng_tokenizer *t, unsigned flags);
/* Appends what id completes. AG_EINVAL (nothing appended) when id is out of range. */
int eng_detok_push(struct eng_detok *d, int32_t id, struct ag_buf *out);
/* Ends the stream: an incomplete sequence still held becomes U+FFFD. d may be reused. */
void eng_detok_flush(struct eng_detok *d, struct ag_buf *out);

#endif
