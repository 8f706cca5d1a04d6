/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizers (engine/tokenizer.c, tok_bpe.c,
 * tok_spm.c). Self-contained: small vocabularies are built once with the GGUF writer (a
 * byte-level BPE one under each pre-tokenizer, and an SPM one with byte fallback), each with
 * control and user-defined tokens that overlap, so special-token splitting is exercised too.
 *
 * The first input byte picks the vocabulary and the flags; the rest is the text. Checked:
 * every id is in range; valid UTF-8 detokenizes back to itself (SPM: unless it holds a U+2581
 * of its own, which comes back as a space, as in the reference); the streaming detokenizer hands
 * out only valid UTF-8, and for valid text exactly what eng_detokenize() gives; the cap-limited
 * eng_tokenize() agrees with the allocating one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/tokenizer.h"
#include "../engine/tokenizer_int.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define N_BPE 4
static struct eng_tokenizer *bpe[N_BPE]; /* gpt2, smollm, llama-bpe, qwen2 */
static struct eng_tokenizer *spm;

static struct eng_tokenizer *load(struct eng_gguf_writer *w)
{
    void *buf;
    size_t len;
    struct eng_gguf *g;
    struct eng_tokenizer *t = NULL;
    struct ag_err err = {0};
    if (eng_gguf_writer_finish(w, &buf, &len, &err) != 0 ||
        eng_gguf_open_mem(buf, len, "fuzz", &g, &err) != 0)
        abort();
    if (eng_tokenizer_load(g, &t, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
        abort();
    }
    eng_gguf_close(g);
    free(buf);
    eng_gguf_writer_free(w);
    return t;
}

static struct eng_tokenizer *make_bpe(const char *pre)
{
    static const char *const extra[] = {
        "he",        "ll",         "hell", "<|im_end|>", "<|im",        "<u>", "u>",
        "\xC4\xA0t", "\xC4\xA0th", "th",   "the",        "\xC4\xA0the", "12",  "\xC4\x8A\xC4\x8A"};
    static const char *const merges[] = {
        "h e",         "l l",  "he ll",        "t h", "\xC4\xA0 t",
        "\xC4\xA0t h", "th e", "\xC4\xA0th e", "1 2", "\xC4\x8A \xC4\x8A",
        "x y",         "< |"};
    enum { N_EXTRA = sizeof extra / sizeof *extra, N = 256 + N_EXTRA };
    static char bytes[256][4];
    const char *toks[N];
    int32_t types[N];
    for (int b = 0; b < 256; b++) {
        size_t k = eng__utf8_encode(eng__byte_to_cpt((uint8_t)b), bytes[b]);
        bytes[b][k] = '\0';
        toks[b] = bytes[b];
        types[b] = 1;
    }
    for (int i = 0; i < N_EXTRA; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = 1;
    }
    types[256 + 3] = 3; /* <|im_end|> */
    types[256 + 4] = 3; /* <|im, overlapping it */
    types[256 + 5] = 4; /* <u> */
    types[256 + 6] = 4; /* u>, overlapping it */
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, N);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types, N);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, sizeof merges / sizeof *merges);
    eng_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 256 + 4);
    eng_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 256 + 3);
    return load(w);
}

static struct eng_tokenizer *make_spm(void)
{
    static const char *const extra[] = {"\xE2\x96\x81",
                                        "a",
                                        "b",
                                        "ab",
                                        "\xE2\x96\x81"
                                        "a",
                                        "\xE2\x96\x81"
                                        "ab",
                                        "<ctl>",
                                        "<ct",
                                        "\n\n",
                                        "  "};
    static const float extra_score[] = {-3, -4, -4, -1, -2, -0.5f, 0, 0, 0, 0};
    enum { N_EXTRA = sizeof extra / sizeof *extra, N = 3 + 256 + N_EXTRA };
    static char hex[256][8];
    const char *toks[N];
    float scores[N];
    int32_t types[N];
    toks[0] = "<unk>", types[0] = 2, scores[0] = 0;
    toks[1] = "<s>", types[1] = 3, scores[1] = 0;
    toks[2] = "</s>", types[2] = 3, scores[2] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(hex[b], sizeof hex[b], "<0x%02X>", b);
        toks[3 + b] = hex[b];
        types[3 + b] = 6;
        scores[3 + b] = 0;
    }
    for (int i = 0; i < N_EXTRA; i++) {
        toks[259 + i] = extra[i];
        types[259 + i] = 1;
        scores[259 + i] = extra_score[i];
    }
    types[259 + 6] = 3; /* <ctl> */
    types[259 + 7] = 3; /* <ct */
    types[259 + 8] = 4; /* \n\n */
    types[259 + 9] = 4; /* two spaces */
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, N);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores, N);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types, N);
    /* As Gemma: with a space prefix, text after a special token would gain a space. */
    eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", false);
    return load(w);
}

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        size_t len = c < 0x80                   ? 1
                     : (c >= 0xC2 && c <= 0xDF) ? 2
                     : (c >= 0xE0 && c <= 0xEF) ? 3
                     : (c >= 0xF0 && c <= 0xF4) ? 4
                                                : 0;
        if (len == 0 || i + len > n) return false;
        for (size_t j = 1; j < len; j++) {
            unsigned d = (unsigned char)s[i + j], lo = 0x80, hi = 0xBF;
            if (j == 1 && c == 0xE0) lo = 0xA0;
            if (j == 1 && c == 0xED) hi = 0x9F;
            if (j == 1 && c == 0xF0) lo = 0x90;
            if (j == 1 && c == 0xF4) hi = 0x8F;
            if (d < lo || d > hi) return false;
        }
        i += len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (!spm) {
        const char *pres[N_BPE] = {"gpt2", "smollm", "llama-bpe", "qwen2"};
        for (int i = 0; i < N_BPE; i++) bpe[i] = make_bpe(pres[i]);
        spm = make_spm();
    }
    if (size == 0) return 0;
    unsigned sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const struct eng_tokenizer *t = (sel & 7) < N_BPE ? bpe[sel & 7] : spm;
    unsigned flags =
        (sel & 8 ? ENG_TOKENIZE_PARSE_SPECIAL : 0) | (sel & 16 ? ENG_TOKENIZE_ADD_SPECIAL : 0);

    int32_t *ids;
    size_t n;
    if (eng_tokenize_alloc(t, text, len, flags, &ids, &n, NULL) != 0) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= eng_tokenizer_n_vocab(t)) abort();

    /* The cap-limited form agrees. */
    int32_t few[8];
    size_t need;
    int rc = eng_tokenize(t, text, len, flags, few, 8, &need, NULL);
    if (need != n || (rc != 0) != (n > 8) || memcmp(few, ids, (n < 8 ? n : 8) * sizeof *ids))
        abort();

    struct ag_buf whole, streamed, chunk;
    ag_buf_init(&whole);
    ag_buf_init(&streamed);
    ag_buf_init(&chunk);
    if (eng_detokenize(t, ids, n, ENG_DETOK_SPECIAL, &whole, NULL) != 0) abort();
    /* Without ADD_SPECIAL, valid UTF-8 comes back (invalid bytes are read as U+FFFD by BPE,
     * and by SPM a bad lead byte swallows the next ones, an escaped space included, as in the
     * reference); for SPM, unless it holds a U+2581 of its own, which renders as a space. */
    if (!(flags & ENG_TOKENIZE_ADD_SPECIAL) && valid_utf8(text, len) &&
        (eng_tokenizer_type(t) == ENG_TOK_BPE || !memmem(text, len, "\xE2\x96\x81", 3)) &&
        (whole.len != len || (len && memcmp(whole.data, text, len) != 0)))
        abort();

    struct eng_detok d;
    eng_detok_init(&d, t, ENG_DETOK_SPECIAL);
    for (size_t i = 0; i < n; i++) {
        ag_buf_reset(&chunk);
        if (eng_detok_push(&d, ids[i], &chunk) != 0) abort();
        if (!valid_utf8(chunk.data, chunk.len)) abort();
        ag_buf_append(&streamed, chunk.data ? chunk.data : "", chunk.len);
    }
    eng_detok_flush(&d, &streamed);
    if (!valid_utf8(streamed.data, streamed.len)) abort();
    if (valid_utf8(whole.data, whole.len) &&
        (streamed.len != whole.len || (whole.len && memcmp(streamed.data, whole.data, whole.len))))
        abort();

    ag_buf_release(&whole);
    ag_buf_release(&streamed);
    ag_buf_release(&chunk);
    free(ids);
    return 0;
}
