/*
 * tok_detok.c - token ids back to text: each token's rendering ("piece"), computed once at load,
 * and the whole-list and streaming detokenizers.
 *
 * A piece is what the reference (llama.cpp's token_to_piece) gives: control, unknown and
 * user-defined tokens render as their text; normal tokens of a byte-level BPE vocabulary map
 * each character back to the byte it stands for (a character that stands for none renders as
 * the reference's "[UNK_BYTE_0x...]" text); normal SPM tokens turn U+2581 into a space; byte
 * tokens ("<0xXX>") are their byte; anything else renders as nothing. Control and unknown
 * tokens render only when asked (ENG_DETOK_SPECIAL).
 *
 * The stream holds back an incomplete UTF-8 sequence (at most 3 bytes) between pushes and
 * replaces what can never be valid UTF-8 with U+FFFD, one per maximal ill-formed subsequence
 * (Unicode's recommended practice, which is also what browsers and Python do); so whatever it
 * hands out can go into JSON as is. Pieces are looked up, never built, per token.
 */
#include "tokenizer_int.h"

#include <string.h>

/* ---- pieces (how each token renders) ---- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xXX>" token: the hex digits at [3, 5), as the reference reads them. */
static unsigned byte_of(const char *s, size_t n)
{
    unsigned v = 0;
    for (size_t i = 3; i < 5 && i < n && hex_digit(s[i]) >= 0; i++) v = v * 16 + hex_digit(s[i]);
    return v & 0xFF;
}

/* Longest piece a token may render as: only a hostile vocabulary gets near it (a long token of
 * characters that stand for no byte repeats its whole text once per such character). */
#define MAX_PIECE_BYTES (1u << 20)

/* Appends id's piece to b; false when it would pass MAX_PIECE_BYTES. */
static bool render_piece(const struct eng_tokenizer *t, uint32_t id, struct ag_buf *b)
{
    size_t start = b->len;
    const char *s = eng__atom_str(t, (int32_t)id);
    size_t n = t->atom[id].len;
    unsigned a = t->attr[id];
    if (a & (ENG_TOKATTR_UNKNOWN | ENG_TOKATTR_CONTROL | ENG_TOKATTR_USER_DEFINED)) {
        ag_buf_append(b, s, n);
    } else if (a & ENG_TOKATTR_NORMAL) {
        if (t->type == ENG_TOK_SPM) {
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    ag_buf_putc(b, ' ');
                    i += 3;
                } else {
                    ag_buf_putc(b, s[i++]);
                }
            }
        } else {
            /* Byte-level characters back to bytes; a character that stands for no byte
             * renders as the reference renders it. */
            for (size_t i = 0; i < n;) {
                uint32_t cp = eng__utf8_decode(s, n, &i);
                int byte = eng__cpt_to_byte(cp);
                if (byte >= 0) {
                    ag_buf_putc(b, (char)byte);
                    continue;
                }
                if (b->len - start + n + 32 > MAX_PIECE_BYTES) return false;
                char u[4];
                size_t un = eng__utf8_encode(cp, u);
                ag_buf_puts(b, "[UNK_BYTE_0x");
                for (size_t j = 0; j < un; j++) ag_buf_printf(b, "%02x", (unsigned char)u[j]);
                ag_buf_append(b, s, n);
                ag_buf_putc(b, ']');
            }
        }
    } else if (a & ENG_TOKATTR_BYTE) {
        ag_buf_putc(b, (char)byte_of(s, n));
    }
    /* else (unused, undefined): nothing */
    return true;
}

int eng__build_pieces(struct eng_tokenizer *t, struct ag_err *err)
{
    struct ag_buf b;
    ag_buf_init(&b);
    t->piece = ag_malloc((size_t)t->n_vocab * sizeof *t->piece);
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        size_t start = b.len;
        if (!render_piece(t, i, &b) || b.len >= UINT32_MAX) {
            ag_buf_release(&b);
            return ag_err_set(err, AG_ETOOBIG, "tokenizer: token %u renders to over %u bytes", i,
                              MAX_PIECE_BYTES);
        }
        t->piece[i] = (struct eng__str){.off = (uint32_t)start, .len = (uint32_t)(b.len - start)};
        ag_buf_putc(&b, '\0');
    }
    t->piece_pool = ag_buf_detach(&b, NULL);
    return 0;
}

/* ---- detokenize ---- */

const char *eng_token_piece(const struct eng_tokenizer *t, int32_t id, unsigned flags, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab) return NULL;
    if (!(flags & ENG_DETOK_SPECIAL) &&
        (t->attr[id] & (ENG_TOKATTR_UNKNOWN | ENG_TOKATTR_CONTROL))) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->piece[id].len;
    return t->piece_pool + t->piece[id].off;
}

/* The piece of id for a stream: with STRIP_PREFIX_SPACE, the first token loses one leading
 * space where the vocabulary adds a space prefix. */
static const char *stream_piece(const struct eng_tokenizer *t, int32_t id, unsigned flags,
                                bool first, size_t *len)
{
    const char *p = eng_token_piece(t, id, flags, len);
    if (p && first && (flags & ENG_DETOK_STRIP_PREFIX_SPACE) && t->sp.add_space_prefix &&
        *len > 0 && p[0] == ' ') {
        p++;
        (*len)--;
    }
    return p;
}

int eng_detokenize(const struct eng_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                   struct ag_buf *out, struct ag_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab)
            return ag_err_set(err, AG_EINVAL, "detokenize: token %zu is %d, not in 0..%u", i,
                              ids[i], t->n_vocab - 1);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = stream_piece(t, ids[i], flags, i == 0, &len);
        ag_buf_append(out, p, len);
    }
    return 0;
}

void eng_detok_init(struct eng_detok *d, const struct eng_tokenizer *t, unsigned flags)
{
    *d = (struct eng_detok){.t = t, .flags = flags};
}

/* Total length of the UTF-8 sequence led by c: 1..4, or 0 for a byte that leads none. */
static unsigned seq_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* Whether c may follow the bytes held (lead first) in a well-formed sequence. */
static bool may_follow(const uint8_t *held, unsigned n_held, unsigned char c)
{
    unsigned lo = 0x80, hi = 0xBF;
    if (n_held == 1) {
        switch (held[0]) {
        case 0xE0:
            lo = 0xA0;
            break; /* no overlong 3-byte forms */
        case 0xED:
            hi = 0x9F;
            break; /* no surrogates */
        case 0xF0:
            lo = 0x90;
            break; /* no overlong 4-byte forms */
        case 0xF4:
            hi = 0x8F;
            break; /* nothing past U+10FFFF */
        default:
            break;
        }
    }
    return c >= lo && c <= hi;
}

static const char fffd[3] = {'\xEF', '\xBF', '\xBD'};

int eng_detok_push(struct eng_detok *d, int32_t id, struct ag_buf *out)
{
    size_t len;
    const char *p = stream_piece(d->t, id, d->flags, !d->started, &len);
    if (!p) return AG_EINVAL;
    d->started = true;
    /* Worst case every byte becomes U+FFFD (3 bytes), plus the held bytes. */
    ag_buf_reserve(out, 3 * (len + d->n_pend));
    char *o = out->data + out->len;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)p[i];
        if (d->n_pend == 0) {
            unsigned need = seq_len(c);
            i++;
            if (need == 1) {
                *o++ = (char)c;
            } else if (need == 0) {
                memcpy(o, fffd, 3);
                o += 3;
            } else {
                d->pend[d->n_pend++] = c;
            }
            continue;
        }
        if (!may_follow(d->pend, d->n_pend, c)) {
            /* The held bytes are a maximal ill-formed subsequence; c starts afresh. */
            memcpy(o, fffd, 3);
            o += 3;
            d->n_pend = 0;
            continue;
        }
        d->pend[d->n_pend++] = c;
        i++;
        if (d->n_pend == seq_len(d->pend[0])) {
            memcpy(o, d->pend, d->n_pend);
            o += d->n_pend;
            d->n_pend = 0;
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

void eng_detok_flush(struct eng_detok *d, struct ag_buf *out)
{
    if (d->n_pend) ag_buf_append(out, fffd, 3);
    d->n_pend = 0;
    d->started = false;
}
