/*
 * base64.c - RFC 4648 base64 with padding, for binary data inside JSON (sandbox files).
 *
 * Decoding is forgiving where it costs nothing: it stops at the first '=' and drops the bits
 * of an incomplete last group, so unpadded input decodes too. Any other byte outside the
 * alphabet (whitespace included) is an error.
 */
#include "base.h"

#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ag_base64_encode(const void *data, size_t n)
{
    char *out = ag_malloc(4 * ((n + 2) / 3) + 1), *o = out;
    const unsigned char *u = data;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)u[i] << 16 | (i + 1 < n ? (uint32_t)u[i + 1] << 8 : 0) |
                     (i + 2 < n ? u[i + 2] : 0);
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* The 6-bit value of c, or -1 outside the alphabet. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int ag_base64_decode(const char *s, char **out, size_t *n_out)
{
    size_t n = 0;
    while (s[n] && s[n] != '=') n++;
    char *buf = ag_malloc(n / 4 * 3 + 3);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = sextet((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return AG_EINVAL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)(acc >> bits);
        }
    }
    buf[o] = '\0';
    *out = buf;
    *n_out = o;
    return 0;
}
