/*
 * test_tokenizer.c - the tokenizers (engine/tokenizer.c, tok_bpe.c, tok_spm.c, tok_unicode.c).
 *
 * Two halves. Self-contained tests build tiny vocabularies with the GGUF writer and check the
 * mechanics: merge order, byte fallback, special-token splitting with and without
 * PARSE_SPECIAL, the pre-tokenizers' word boundaries, the Unicode table, streaming
 * detokenization of split characters. Parity tests run the real models (models/, fetched by
 * `make model`; skipped when absent) over tests/data/tokenizer_<model>.jsonl, which llama.cpp's
 * server produced (tests/data/gen_tokenizer_data.py): every string must give exactly the
 * reference's ids with PARSE_SPECIAL ("ids") and without ("ids_plain"), detokenize back to
 * itself, and stream out as complete UTF-8 only. A mismatch prints the text and both id lists.
 *
 * Speed (not asserted: timings are no test): on the development machine a 100 KB English text
 * tokenizes in a few milliseconds with either model (see test_long_input, which prints it).
 */
#include "../engine/tokenizer.h"
#include "../engine/tokenizer_int.h"
#include "../protocol/protocol.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SMOLLM2_FILE "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define GEMMA3_FILE  "models/gemma-3-270m-q4_k_m.gguf"

/* ---- helpers ---- */

/* A strict UTF-8 check (no overlongs, surrogates or values past U+10FFFF). */
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

/* Prints ids as "[1, 2, 3]" (the first 48) into b. */
static void ids_str(struct ag_buf *b, const int32_t *ids, size_t n)
{
    ag_buf_putc(b, '[');
    for (size_t i = 0; i < n && i < 48; i++) ag_buf_printf(b, "%s%d", i ? ", " : "", ids[i]);
    if (n > 48) ag_buf_printf(b, ", ... (%zu in all)", n);
    ag_buf_putc(b, ']');
}

/* The text with control characters and quotes escaped, at most 120 bytes of it. */
static void text_str(struct ag_buf *b, const char *s, size_t n)
{
    ag_buf_putc(b, '"');
    for (size_t i = 0; i < n && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            ag_buf_puts(b, "\\n");
        else if (c == '"' || c == '\\')
            ag_buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            ag_buf_printf(b, "\\x%02x", c);
        else
            ag_buf_putc(b, (char)c);
    }
    ag_buf_puts(b, n > 120 ? "\"..." : "\"");
}

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Tokenizes s and compares with want[0..n_want). */
static bool tok_is(const struct eng_tokenizer *t, const char *s, unsigned flags,
                   const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    struct ag_err err = {0};
    int rc = eng_tokenize_alloc(t, s, strlen(s), flags, &ids, &n, &err);
    bool ok = rc == 0 && ids_equal(ids, n, want, n_want);
    if (!ok) {
        struct ag_buf b;
        ag_buf_init(&b);
        text_str(&b, s, strlen(s));
        ag_buf_puts(&b, ": got ");
        if (rc)
            ag_buf_printf(&b, "error %d (%s)", rc, err.msg);
        else
            ids_str(&b, ids, n);
        ag_buf_puts(&b, ", want ");
        ids_str(&b, want, n_want);
        printf("  %s\n", b.data);
        ag_buf_release(&b);
    }
    free(ids);
    return ok;
}

#define TOK_IS(t, s, flags, ...)                                                                   \
    CHECK(tok_is((t), (s), (flags), (const int32_t[]){__VA_ARGS__},                                \
                 sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)))

/* ---- the Unicode table and the byte table ---- */

static void test_unicode_classes(void)
{
    CHECK(eng__ucd_flags('a') == ENG__UCD_LETTER);
    CHECK(eng__ucd_flags('7') == ENG__UCD_NUMBER);
    CHECK(eng__ucd_flags(' ') == (ENG__UCD_SEPARATOR | ENG__UCD_WHITESPACE));
    CHECK(eng__ucd_flags('\n') == (ENG__UCD_OTHER | ENG__UCD_WHITESPACE));
    CHECK(eng__ucd_flags('$') == ENG__UCD_SYMBOL);
    CHECK(eng__ucd_flags('!') == ENG__UCD_PUNCT);
    CHECK(eng__ucd_flags(0x00A0) == (ENG__UCD_SEPARATOR | ENG__UCD_WHITESPACE)); /* NBSP */
    CHECK(eng__ucd_flags(0x0085) == (ENG__UCD_OTHER | ENG__UCD_WHITESPACE));     /* NEL */
    CHECK(eng__ucd_flags(0x00E9) == ENG__UCD_LETTER);                            /* é */
    CHECK(eng__ucd_flags(0x0301) == ENG__UCD_MARK);   /* combining acute */
    CHECK(eng__ucd_flags(0x0663) == ENG__UCD_NUMBER); /* Arabic-Indic 3 */
    CHECK(eng__ucd_flags(0x00B2) == ENG__UCD_NUMBER); /* superscript 2 */
    CHECK(eng__ucd_flags(0x4E2D) == ENG__UCD_LETTER); /* 中 */
    CHECK(eng__ucd_flags(0x1F600) == ENG__UCD_SYMBOL);
    CHECK(eng__ucd_flags(0x200B) == ENG__UCD_OTHER); /* zero width space: Cf, not \s */
    CHECK(eng__ucd_flags(0x3000) == (ENG__UCD_SEPARATOR | ENG__UCD_WHITESPACE));
    CHECK(eng__ucd_flags(0xD800) == ENG__UCD_OTHER); /* surrogate */
    CHECK(eng__ucd_flags(0x0378) == ENG__UCD_UNASSIGNED);
    CHECK(eng__ucd_flags(0x2EBF0) == ENG__UCD_LETTER); /* CJK Ext. I: new in Unicode 15.1 */
    CHECK(eng__ucd_flags(0x10FFFF) == ENG__UCD_UNASSIGNED);
    CHECK(eng__ucd_flags(0x110000) == ENG__UCD_UNASSIGNED);
}

static void test_byte_table(void)
{
    bool seen[400] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = eng__byte_to_cpt((uint8_t)b);
        CHECKF(cp < 400 && !seen[cp], "byte %d -> U+%04X", b, cp);
        if (cp < 400) seen[cp] = true;
        CHECKF(eng__cpt_to_byte(cp) == b, "U+%04X -> %d, want %d", cp, eng__cpt_to_byte(cp), b);
    }
    CHECK(eng__byte_to_cpt(' ') == 0x120);  /* 'Ġ' */
    CHECK(eng__byte_to_cpt('\n') == 0x10A); /* 'Ċ' */
    CHECK(eng__byte_to_cpt('a') == 'a');
    CHECK(eng__cpt_to_byte(0x144) == -1);
    CHECK(eng__cpt_to_byte(0xAD) == -1); /* soft hyphen stands for nothing: 0xAD is remapped */
}

/* ---- pre-tokenizers ---- */

/* Splits s with pre and compares the words with the '|'-separated want. */
static bool split_is(enum eng_tok_pre pre, const char *s, const char *want)
{
    size_t *lens = NULL, n = 0, cap = 0;
    eng__bpe_split(pre, s, strlen(s), &lens, &n, &cap);
    struct ag_buf got;
    ag_buf_init(&got);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) ag_buf_putc(&got, '|');
        ag_buf_append(&got, s + at, lens[i]);
        at += lens[i];
    }
    bool ok = strcmp(got.data ? got.data : "", want) == 0;
    if (!ok) printf("  pre %d: \"%s\" -> \"%s\", want \"%s\"\n", pre, s, got.data, want);
    ag_buf_release(&got);
    free(lens);
    return ok;
}

/* Expectations checked against llama.cpp's unicode_regex_split() (build b9749), quirks
 * included: a whitespace run ending a digit-split piece is one word (smollm "a  1"); Llama 3
 * glues punctuation to the newlines after it and leaves a lone space before a digit alone. */
static void test_pre_split(void)
{
    const enum eng_tok_pre G = ENG_TOK_PRE_GPT2, S = ENG_TOK_PRE_SMOLLM, L = ENG_TOK_PRE_LLAMA3,
                           Q = ENG_TOK_PRE_QWEN2;
    CHECK(split_is(G, "Hello world", "Hello| world"));
    CHECK(split_is(G, "I'm here, it's", "I|'m| here|,| it|'s"));
    CHECK(split_is(G, "x   y", "x|  | y")); /* \s+(?!\S) leaves one space to the word */
    CHECK(split_is(G, "x   ", "x|   "));    /* at the end: all of it */
    CHECK(split_is(G, "abc123 456", "abc|123| 456"));
    CHECK(split_is(G, "a\n\nb", "a|\n|\n|b"));
    CHECK(split_is(G, "I'M 12345", "I|'|M| 12345")); /* case-sensitive contractions */
    CHECK(split_is(G, " !!", " !!"));
    CHECK(split_is(G, "a  1", "a| | 1"));
    CHECK(split_is(S, "abc123 456", "abc|1|2|3| |4|5|6")); /* digits alone first */
    CHECK(split_is(S, "a  1", "a|  |1"));
    CHECK(split_is(S, "x\xC2\xB2", "x|\xC2\xB2")); /* \p{N} beyond ASCII: superscript 2 */
    CHECK(split_is(S, "(x)", "(|x|)"));
    CHECK(split_is(L, "Hello world", "Hello| world"));
    CHECK(split_is(L, "I'M 12345", "I|'M| |123|45"));
    CHECK(split_is(L, "foo\n\n  bar", "foo|\n\n| | bar"));
    CHECK(split_is(L, "a,\n\nb", "a|,\n\n|b"));
    CHECK(split_is(L, "(x)", "(x|)"));
    CHECK(split_is(L, "a  1", "a| | |1"));
    CHECK(split_is(L, "a ", "a| "));
    CHECK(split_is(Q, "I'M 12345", "I|'M| |1|2|3|4|5"));
    CHECK(split_is(Q, "\xE4\xB8\xAD\xE6\x96\x87 text", "\xE4\xB8\xAD\xE6\x96\x87| text"));
    /* Invalid UTF-8 is read as U+FFFD (3 bytes), like the reference. */
    size_t *lens = NULL, n = 0, cap = 0;
    eng__bpe_split(G, "a\xFF", 2, &lens, &n, &cap);
    CHECK(n == 2 && lens[0] == 1 && lens[1] == 3);
    free(lens);
}

/* ---- tiny vocabularies ---- */

/* A byte-level BPE vocabulary: the 256 byte characters (ids 0..255, token i stands for byte i)
 * then the words below; merges in rank order. */
static struct eng_tokenizer *tiny_bpe(const char *pre, struct ag_err *err)
{
    static const char *const extra[] = {
        "he",          /* 256 */
        "ll",          /* 257 */
        "hell",        /* 258 */
        "<|im_end|>",  /* 259: control */
        "<u>",         /* 260: user-defined */
        "\xC4\xA0w",   /* 261: "Ġw" = " w" */
        "or",          /* 262 */
        "\xC4\xA0wor", /* 263 */
        "wow",         /* 264: no merges lead to it */
    };
    static const char *const merges[] = {"h e", "l l",          "he ll", "\xC4\xA0 w",
                                         "o r", "\xC4\xA0w or", "x y"};
    const size_t n_extra = sizeof extra / sizeof *extra, n = 256 + n_extra;
    char bytes[256][4];
    const char *toks[256 + sizeof extra / sizeof *extra];
    int32_t types[256 + sizeof extra / sizeof *extra];
    for (int b = 0; b < 256; b++) {
        size_t k = eng__utf8_encode(eng__byte_to_cpt((uint8_t)b), bytes[b]);
        bytes[b][k] = '\0';
        toks[b] = bytes[b];
        types[b] = 1;
    }
    for (size_t i = 0; i < n_extra; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = 1;
    }
    types[259] = 3;
    types[260] = 4;

    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, n);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types, n);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, sizeof merges / sizeof *merges);
    eng_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 259);
    void *buf = NULL;
    size_t len;
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *t = NULL;
    if (eng_gguf_writer_finish(w, &buf, &len, err) == 0 &&
        eng_gguf_open_mem(buf, len, "tiny-bpe", &g, err) == 0)
        eng_tokenizer_load(g, &t, err);
    eng_gguf_close(g);
    free(buf);
    eng_gguf_writer_free(w);
    return t;
}

static void test_tiny_bpe(void)
{
    struct ag_err err = {0};
    struct eng_tokenizer *t = tiny_bpe("smollm", &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK(eng_tokenizer_type(t) == ENG_TOK_BPE);
    CHECK(eng_tokenizer_pre(t) == ENG_TOK_PRE_SMOLLM);
    const int32_t P = ENG_TOKENIZE_PARSE_SPECIAL;
    TOK_IS(t, "hello", 0, 258, 'o'); /* h+e, l+l, he+ll by rank */
    TOK_IS(t, "hello world", 0, 258, 'o', 263, 'l', 'd');
    TOK_IS(t, "a12", 0, 'a', '1', '2');
    TOK_IS(t, "xy", 0, 'x', 'y'); /* merged into "xy", no token: its bytes, one by one */
    TOK_IS(t, "wow", 0, 'w', 'o', 'w');
    TOK_IS(t, "he<|im_end|>he", P, 256, 259, 256);
    TOK_IS(t, "he<|im_end|>", 0, 256, '<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|', '>');
    TOK_IS(t, "a<u>b", 0, 'a', 260, 'b'); /* user-defined: split out either way */
    TOK_IS(t, "a<u>b", P, 'a', 260, 'b');
    TOK_IS(t, "", 0, );
    /* ADD_SPECIAL adds nothing: BPE default add_bos is false, and there is no add_eos. */
    TOK_IS(t, "he", ENG_TOKENIZE_ADD_SPECIAL, 256);

    CHECK(eng_token_is_eog(t, 259)); /* eos, and "<|im_end|>" by its text */
    CHECK(eng_tokenizer_specials(t)->eot == 259);
    CHECK(eng_tokenizer_specials(t)->nl == '\n');
    size_t len;
    const char *p = eng_token_piece(t, 263, 0, &len);
    CHECK(p && len == 4 && memcmp(p, " wor", 4) == 0);
    p = eng_token_piece(t, 259, 0, &len);
    CHECK(p && len == 0);
    p = eng_token_piece(t, 259, ENG_DETOK_SPECIAL, &len);
    CHECK(p && len == 10);
    CHECK(eng_token_piece(t, 265, 0, &len) == NULL);

    /* An é split over two byte tokens streams out whole. */
    struct eng_detok d;
    struct ag_buf out;
    ag_buf_init(&out);
    eng_detok_init(&d, t, 0);
    CHECK(eng_detok_push(&d, 'a', &out) == 0 && out.len == 1);
    CHECK(eng_detok_push(&d, 0xC3, &out) == 0 && out.len == 1);
    CHECK(eng_detok_push(&d, 0xA9, &out) == 0 && out.len == 3);
    CHECK(memcmp(out.data, "a\xC3\xA9", 3) == 0);
    /* Garbage becomes U+FFFD, a dangling lead byte too at the flush. */
    CHECK(eng_detok_push(&d, 0xFF, &out) == 0 && out.len == 6);
    CHECK(eng_detok_push(&d, 0xE2, &out) == 0 && out.len == 6);
    CHECK(eng_detok_push(&d, 'z', &out) == 0 && out.len == 10); /* FFFD + z */
    CHECK(eng_detok_push(&d, 0xF0, &out) == 0 && out.len == 10);
    eng_detok_flush(&d, &out);
    CHECK(out.len == 13 && valid_utf8(out.data, out.len));
    CHECK(eng_detok_push(&d, -1, &out) == AG_EINVAL);
    ag_buf_release(&out);
    eng_tokenizer_free(t);

    /* Llama 3 takes a word that is a token whole, merges or not. */
    t = tiny_bpe("llama-bpe", &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (t) {
        TOK_IS(t, "wow", 0, 264);
        TOK_IS(t, "hello", 0, 258, 'o');
        CHECK(eng_tokenizer_specials(t)->add_bos); /* the reference's default for llama-bpe */
        eng_tokenizer_free(t);
    }

    /* Unknown pre-tokenizers are refused by name. */
    struct eng_tokenizer *bad = tiny_bpe("no-such-pre", &err);
    CHECK(bad == NULL && err.code == AG_EUNSUPPORTED && strstr(err.msg, "no-such-pre"));
}

/* An SPM vocabulary: <unk>, <s>, </s>, 256 byte tokens, then pieces with scores. */
static struct eng_tokenizer *tiny_spm(bool space_prefix)
{
    static const char *const extra[] = {"\xE2\x96\x81",
                                        "a",
                                        "b",
                                        "ab",
                                        "\xE2\x96\x81"
                                        "a",
                                        "\xE2\x96\x81"
                                        "ab",
                                        "<ctl>"};
    static const float extra_score[] = {-3, -4, -4, -1, -2, -0.5f, 0};
    const size_t n_extra = sizeof extra / sizeof *extra, n = 3 + 256 + n_extra;
    const char *toks[3 + 256 + sizeof extra / sizeof *extra];
    float scores[3 + 256 + sizeof extra / sizeof *extra];
    int32_t types[3 + 256 + sizeof extra / sizeof *extra];
    char hex[256][8];
    toks[0] = "<unk>", types[0] = 2, scores[0] = 0;
    toks[1] = "<s>", types[1] = 3, scores[1] = 0;
    toks[2] = "</s>", types[2] = 3, scores[2] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(hex[b], sizeof hex[b], "<0x%02X>", b);
        toks[3 + b] = hex[b];
        types[3 + b] = 6;
        scores[3 + b] = 0;
    }
    for (size_t i = 0; i < n_extra; i++) {
        toks[259 + i] = extra[i];
        types[259 + i] = 1;
        scores[259 + i] = extra_score[i];
    }
    types[265] = 3; /* <ctl> */

    struct eng_gguf_writer *w = eng_gguf_writer_new();
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, n);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.scores", ENG_GGUF_F32, scores, n);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ENG_GGUF_I32, types, n);
    eng_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", space_prefix);
    void *buf = NULL;
    size_t len;
    struct ag_err err = {0};
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *t = NULL;
    if (eng_gguf_writer_finish(w, &buf, &len, &err) != 0 ||
        eng_gguf_open_mem(buf, len, "tiny-spm", &g, &err) != 0 ||
        eng_tokenizer_load(g, &t, &err) != 0)
        printf("  tiny_spm: %s\n", err.msg);
    eng_gguf_close(g);
    free(buf);
    eng_gguf_writer_free(w);
    return t;
}

static void test_tiny_spm(void)
{
    struct eng_tokenizer *t = tiny_spm(false);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(eng_tokenizer_type(t) == ENG_TOK_SPM);
    const unsigned A = ENG_TOKENIZE_ADD_SPECIAL, P = ENG_TOKENIZE_PARSE_SPECIAL;
    /* "ab▁ab": both "ab" (-1, leftmost first), then "▁ab" (-0.5) beats the stale "▁a". */
    TOK_IS(t, "ab ab", 0, 262, 264);
    TOK_IS(t, "ab ab", A, 1, 262, 264);           /* SPM adds BOS by default */
    TOK_IS(t, "\xC3\xA9", 0, 3 + 0xC3, 3 + 0xA9); /* byte fallback */
    TOK_IS(t, "a<ctl>b", P, 260, 265, 261);
    TOK_IS(t, "a<ctl>b", 0, 260, 3 + '<', 3 + 'c', 3 + 't', 3 + 'l', 3 + '>', 261);
    TOK_IS(t, " ", 0, 259);
    CHECK(eng_tokenizer_specials(t)->nl == 3 + '\n');
    CHECK(eng_token_is_eog(t, 2));

    size_t len;
    const char *p = eng_token_piece(t, 264, 0, &len);
    CHECK(p && len == 3 && memcmp(p, " ab", 3) == 0);
    p = eng_token_piece(t, 3 + 'A', 0, &len);
    CHECK(p && len == 1 && p[0] == 'A');
    struct ag_buf out;
    ag_buf_init(&out);
    const int32_t ids[] = {1, 264, 262};
    CHECK(eng_detokenize(t, ids, 3, 0, &out, NULL) == 0);
    CHECK_STR(out.data, " abab");
    ag_buf_reset(&out);
    CHECK(eng_detokenize(t, ids, 3, ENG_DETOK_SPECIAL, &out, NULL) == 0);
    CHECK_STR(out.data, "<s> abab");
    const int32_t bad[] = {1, 9999};
    CHECK(eng_detokenize(t, bad, 2, 0, &out, NULL) == AG_EINVAL);
    eng_tokenizer_free(t);

    /* With a space prefix (Llama 2 style): a space before the text and after each special
     * token; STRIP_PREFIX_SPACE takes the first one off again. */
    t = tiny_spm(true);
    CHECK(t != NULL);
    if (!t) {
        ag_buf_release(&out);
        return;
    }
    CHECK(eng_tokenizer_specials(t)->add_space_prefix);
    TOK_IS(t, "ab", 0, 264);
    TOK_IS(t, "a<ctl>b", P, 263, 265, 259, 261);
    TOK_IS(t, "ab", A, 1, 264);
    const int32_t two[] = {264, 262};
    ag_buf_reset(&out);
    CHECK(eng_detokenize(t, two, 2, ENG_DETOK_STRIP_PREFIX_SPACE, &out, NULL) == 0);
    CHECK_STR(out.data, "abab");
    ag_buf_release(&out);
    eng_tokenizer_free(t);
}

/* Loads a vocabulary written by fill(); returns the error code (0: loaded). */
static int load_code(void (*fill)(struct eng_gguf_writer *), struct ag_err *err)
{
    struct eng_gguf_writer *w = eng_gguf_writer_new();
    fill(w);
    void *buf = NULL;
    size_t len;
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *t = NULL;
    int rc = eng_gguf_writer_finish(w, &buf, &len, err);
    if (rc == 0) rc = eng_gguf_open_mem(buf, len, "bad", &g, err);
    if (rc == 0) rc = eng_tokenizer_load(g, &t, err);
    eng_tokenizer_free(t);
    eng_gguf_close(g);
    free(buf);
    eng_gguf_writer_free(w);
    return rc;
}

static const char *const two_tokens[] = {"a", "b"};

static void fill_no_model(struct eng_gguf_writer *w)
{
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
}

static void fill_t5(struct eng_gguf_writer *w)
{
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "t5");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
}

static void fill_no_merges(struct eng_gguf_writer *w)
{
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    eng_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
}

static void fill_short_scores(struct eng_gguf_writer *w)
{
    const float one[] = {0};
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
    eng_gguf_writer_add_arr(w, "tokenizer.ggml.scores", ENG_GGUF_F32, one, 1);
}

static void fill_str_types(struct eng_gguf_writer *w)
{
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.token_type", two_tokens, 2);
}

static void fill_minimal_spm(struct eng_gguf_writer *w)
{
    eng_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    eng_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", two_tokens, 2);
}

static void test_load_errors(void)
{
    struct ag_err err = {0};
    CHECK(load_code(fill_no_model, &err) == AG_ENOTFOUND);
    CHECK(strstr(err.msg, "tokenizer.ggml.model") != NULL);
    CHECK(load_code(fill_t5, &err) == AG_EUNSUPPORTED);
    CHECK(strstr(err.msg, "'t5'") != NULL);
    CHECK(load_code(fill_no_merges, &err) == AG_ENOTFOUND);
    CHECK(strstr(err.msg, "merges") != NULL);
    CHECK(load_code(fill_short_scores, &err) == AG_EPARSE);
    CHECK(strstr(err.msg, "scores") != NULL);
    CHECK(load_code(fill_str_types, &err) == AG_EPARSE);
    /* The least a vocabulary needs: tokens. Default ids out of range become "none". */
    CHECK(load_code(fill_minimal_spm, &err) == 0);
}

/* ---- parity with the reference ---- */

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

struct model {
    struct eng_gguf *g;
    struct eng_tokenizer *t;
};

/* Opens a model's tokenizer, or says why not (returns false; skip). */
static bool model_open(const char *path, struct model *m, char *why, size_t why_len)
{
    struct ag_err err = {0};
    m->g = NULL;
    m->t = NULL;
    if (!file_exists(path)) {
        snprintf(why, why_len, "%s is missing: run `make model MODEL=%s` to fetch it", path,
                 strstr(path, "gemma") ? "gemma3" : "smollm2");
        return false;
    }
    if (eng_gguf_open(path, &m->g, &err) != 0 || eng_tokenizer_load(m->g, &m->t, &err) != 0) {
        snprintf(why, why_len, "%s", err.msg);
        eng_gguf_close(m->g);
        m->g = NULL;
        return false;
    }
    return true;
}

static void model_close(struct model *m)
{
    eng_tokenizer_free(m->t);
    eng_gguf_close(m->g);
}

/* Reads a JSON array of ints into a malloc'd array. */
static int32_t *json_ids(const struct proto_val *arr, size_t *n)
{
    *n = proto_len(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)proto_int(proto_at(arr, i), -2);
    return ids;
}

/* One reference list against ours; prints a mismatch. */
static bool compare(const char *label, const char *text, const int32_t *want, size_t n_want,
                    const int32_t *got, size_t n_got)
{
    if (ids_equal(want, n_want, got, n_got)) return true;
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(&b, "%s mismatch for ", label);
    text_str(&b, text, strlen(text));
    ag_buf_puts(&b, "\n    want ");
    ids_str(&b, want, n_want);
    ag_buf_puts(&b, "\n    got  ");
    ids_str(&b, got, n_got);
    printf("  %s\n", b.data);
    ag_buf_release(&b);
    return false;
}

/* Streams ids one by one: every chunk must be valid UTF-8 on its own, and all of them must
 * equal eng_detokenize() where that is valid UTF-8. */
static bool stream_ok(const struct eng_tokenizer *t, const int32_t *ids, size_t n,
                      const char *whole, size_t whole_len)
{
    struct eng_detok d;
    struct ag_buf out, chunk;
    ag_buf_init(&out);
    ag_buf_init(&chunk);
    eng_detok_init(&d, t, ENG_DETOK_SPECIAL);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        ag_buf_reset(&chunk);
        if (eng_detok_push(&d, ids[i], &chunk) != 0 || !valid_utf8(chunk.data, chunk.len))
            ok = false;
        ag_buf_append(&out, chunk.data ? chunk.data : "", chunk.len);
    }
    eng_detok_flush(&d, &out);
    if (valid_utf8(whole, whole_len) &&
        (out.len != whole_len || (whole_len && memcmp(out.data, whole, whole_len) != 0)))
        ok = false;
    ag_buf_release(&out);
    ag_buf_release(&chunk);
    return ok;
}

struct parity {
    int lines;        /* strings checked */
    int ids_ok;       /* "ids" (PARSE_SPECIAL) equal */
    int plain_ok;     /* "ids_plain" equal */
    int roundtrip_ok; /* both detokenize back to the text */
    int stream_ok;    /* streaming gave complete UTF-8 and the same text */
};

static void run_parity(const char *model_path, const char *jsonl, const char *name)
{
    struct model m;
    char why[600];
    if (!model_open(model_path, &m, why, sizeof why)) SKIP(why);

    char *data = NULL;
    size_t size = 0;
    struct ag_err err = {0};
    if (ag_read_file(jsonl, 64u << 20, &data, &size, &err) != 0) {
        CHECKF(0, "%s", err.msg);
        model_close(&m);
        return;
    }
    struct parity p = {0};
    struct ag_buf text;
    ag_buf_init(&text);
    for (char *line = data, *nl; line < data + size; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(data + size - line));
        if (!nl) nl = data + size;
        if (nl == line) continue;
        struct proto_val *v = proto_parse(line, (size_t)(nl - line), &err);
        CHECKF(v != NULL, "%s line %d: %s", jsonl, p.lines + 1, err.msg);
        if (!v) continue;
        p.lines++;
        const char *s = proto_get_str(v, "text");
        size_t n_want, n_plain;
        int32_t *want = json_ids(proto_get(v, "ids"), &n_want);
        int32_t *plain = json_ids(proto_get(v, "ids_plain"), &n_plain);

        int32_t *got = NULL, *got_plain = NULL;
        size_t n_got = 0, n_got_plain = 0;
        int rc1 =
            eng_tokenize_alloc(m.t, s, strlen(s), ENG_TOKENIZE_PARSE_SPECIAL, &got, &n_got, &err);
        int rc2 = eng_tokenize_alloc(m.t, s, strlen(s), 0, &got_plain, &n_got_plain, &err);
        CHECKF(rc1 == 0 && rc2 == 0, "tokenize failed: %s", err.msg);
        p.ids_ok += compare("ids", s, want, n_want, got, n_got);
        p.plain_ok += compare("ids_plain", s, plain, n_plain, got_plain, n_got_plain);

        /* The reference round-trips every string (its meta file lists no exceptions). */
        bool rt = true;
        const int32_t *lists[2] = {want, plain};
        size_t counts[2] = {n_want, n_plain};
        for (int k = 0; k < 2; k++) {
            ag_buf_reset(&text);
            if (eng_detokenize(m.t, lists[k], counts[k], ENG_DETOK_SPECIAL, &text, &err) != 0 ||
                text.len != strlen(s) || (text.len && memcmp(text.data, s, text.len) != 0)) {
                if (rt) {
                    struct ag_buf b;
                    ag_buf_init(&b);
                    ag_buf_puts(&b, "round trip of ");
                    text_str(&b, s, strlen(s));
                    ag_buf_puts(&b, " gave ");
                    text_str(&b, text.data ? text.data : "", text.len);
                    printf("  %s\n", b.data);
                    ag_buf_release(&b);
                }
                rt = false;
            }
        }
        p.roundtrip_ok += rt;
        bool st = stream_ok(m.t, plain, n_plain, s, strlen(s));
        if (!st) printf("  streaming mismatch for line %d\n", p.lines);
        p.stream_ok += st;
        free(want);
        free(plain);
        free(got);
        free(got_plain);
        proto_val_free(v);
    }
    printf("  %s: %d strings: ids %d/%d, ids_plain %d/%d, round trip %d/%d, stream %d/%d\n", name,
           p.lines, p.ids_ok, p.lines, p.plain_ok, p.lines, p.roundtrip_ok, p.lines, p.stream_ok,
           p.lines);
    CHECK(p.lines >= 300);
    CHECK(p.ids_ok == p.lines);
    CHECK(p.plain_ok == p.lines);
    CHECK(p.roundtrip_ok == p.lines);
    CHECK(p.stream_ok == p.lines);
    ag_buf_release(&text);
    free(data);
    model_close(&m);
}

static void test_smollm2_parity(void)
{
    run_parity(SMOLLM2_FILE, "tests/data/tokenizer_smollm2.jsonl", "smollm2");
}

static void test_gemma3_parity(void)
{
    run_parity(GEMMA3_FILE, "tests/data/tokenizer_gemma3.jsonl", "gemma3");
}

/* BOS/EOS handling and the stop tokens, against tests/data/tokenizer_<model>_meta.json. */
static void test_smollm2_specials(void)
{
    struct model m;
    char why[600];
    if (!model_open(SMOLLM2_FILE, &m, why, sizeof why)) SKIP(why);
    const struct eng_tok_specials *sp = eng_tokenizer_specials(m.t);
    CHECK(eng_tokenizer_type(m.t) == ENG_TOK_BPE);
    CHECK(eng_tokenizer_pre(m.t) == ENG_TOK_PRE_SMOLLM);
    CHECK(!sp->add_bos && !sp->add_eos);
    CHECK(sp->bos == 1 && sp->eos == 2 && sp->eot == 2);
    CHECK(sp->nl == 198);
    const unsigned A = ENG_TOKENIZE_ADD_SPECIAL, P = ENG_TOKENIZE_PARSE_SPECIAL;
    TOK_IS(m.t, "Hello world", A | P, 19556, 905);
    TOK_IS(m.t, "", A | P, );
    TOK_IS(m.t, "<|im_start|>Hello world", A | P, 1, 19556, 905);
    CHECK(eng_token_is_eog(m.t, 2));  /* <|im_end|> */
    CHECK(eng_token_is_eog(m.t, 0));  /* <|endoftext|> */
    CHECK(!eng_token_is_eog(m.t, 1)); /* <|im_start|> */
    model_close(&m);
}

static void test_gemma3_specials(void)
{
    struct model m;
    char why[600];
    if (!model_open(GEMMA3_FILE, &m, why, sizeof why)) SKIP(why);
    const struct eng_tok_specials *sp = eng_tokenizer_specials(m.t);
    CHECK(eng_tokenizer_type(m.t) == ENG_TOK_SPM);
    CHECK(sp->add_bos && !sp->add_eos && !sp->add_space_prefix);
    CHECK(sp->bos == 2 && sp->eos == 1 && sp->eot == 106);
    const unsigned A = ENG_TOKENIZE_ADD_SPECIAL, P = ENG_TOKENIZE_PARSE_SPECIAL;
    TOK_IS(m.t, "Hello world", A | P, 2, 9259, 1902);
    TOK_IS(m.t, "", A | P, 2);
    TOK_IS(m.t, "<bos>Hello world", A | P, 2, 2, 9259, 1902); /* the reference doubles it too */
    CHECK(eng_token_is_eog(m.t, 106));                        /* <end_of_turn> */
    CHECK(eng_token_is_eog(m.t, 1));                          /* <eos> */
    CHECK(!eng_token_is_eog(m.t, 105));                       /* <start_of_turn> */
    model_close(&m);
}

/* A long input tokenizes fast (printed, not asserted) and detokenizes back to itself. */
static void test_long_input(void)
{
    const char *files[] = {SMOLLM2_FILE, GEMMA3_FILE};
    const char *para = "The quick brown fox jumps over the lazy dog; it's 1234 times faster "
                       "than   before.\n\tNaïve café déjà vu — 東京 😀 x²+y²=z².\n";
    struct ag_buf text;
    ag_buf_init(&text);
    while (text.len < 100 * 1024) ag_buf_puts(&text, para);
    int ran = 0;
    for (size_t f = 0; f < 2; f++) {
        struct model m;
        char why[600];
        if (!model_open(files[f], &m, why, sizeof why)) continue;
        ran++;
        int32_t *ids;
        size_t n;
        int64_t t0 = ag_now_ns();
        CHECK(eng_tokenize_alloc(m.t, text.data, text.len, 0, &ids, &n, NULL) == 0);
        int64_t t1 = ag_now_ns();
        printf("  %s: %zu bytes -> %zu tokens in %.2f ms\n", ag_basename(files[f]), text.len, n,
               (double)(t1 - t0) / 1e6);
        struct ag_buf back;
        ag_buf_init(&back);
        CHECK(eng_detokenize(m.t, ids, n, 0, &back, NULL) == 0);
        CHECK(back.len == text.len && memcmp(back.data, text.data, text.len) == 0);
        /* The cap-limited form reports the count it needs. */
        int32_t few[4];
        size_t need = 0;
        CHECK(eng_tokenize(m.t, text.data, text.len, 0, few, 4, &need, NULL) == AG_ETOOBIG);
        CHECK(need == n);
        ag_buf_release(&back);
        free(ids);
        model_close(&m);
    }
    ag_buf_release(&text);
    if (!ran) SKIP("no model in models/: run `make model MODEL=all`");
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_unicode_classes);
    RUN(test_byte_table);
    RUN(test_pre_split);
    RUN(test_tiny_bpe);
    RUN(test_tiny_spm);
    RUN(test_load_errors);
    RUN(test_smollm2_parity);
    RUN(test_gemma3_parity);
    RUN(test_smollm2_specials);
    RUN(test_gemma3_specials);
    RUN(test_long_input);
    return TEST_END();
}
