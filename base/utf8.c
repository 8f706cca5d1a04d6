/*
 * utf8.c - one UTF-8 check for the whole tree (sandbox output, fetched pages, titles, schema
 * lengths), so that every place agrees on what is text.
 *
 * Validation follows RFC 3629's table: lead bytes C2..F4, and the second byte's range narrowed
 * after E0, ED, F0 and F4 so that overlong forms, surrogates and code points past U+10FFFF are
 * refused. C0, C1 and F5..FF (the old 5- and 6-byte forms among them) lead nothing. Replacement
 * is one U+FFFD per byte that starts no valid character.
 */
#include "base.h"

/* Bytes of the character lead starts (1..4), or 0 when it can start none. */
static size_t lead_len(unsigned char lead)
{
    return lead == 0                      ? 0
           : lead < 0x80                  ? 1
           : lead >= 0xC2 && lead <= 0xDF ? 2
           : lead >= 0xE0 && lead <= 0xEF ? 3
           : lead >= 0xF0 && lead <= 0xF4 ? 4
                                          : 0;
}

/* True when the m bytes at u (m at most the character's length) can begin a valid character:
 * continuation bytes after the lead, the second one inside its narrowed range. */
static bool prefix_ok(const unsigned char *u, size_t m)
{
    for (size_t k = 1; k < m; k++)
        if ((u[k] & 0xC0) != 0x80) return false;
    if (m < 2) return true;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (u[0] == 0xE0) lo = 0xA0;   /* overlong */
    if (u[0] == 0xED) hi = 0x9F;   /* surrogates */
    if (u[0] == 0xF0) lo = 0x90;   /* overlong */
    if (u[0] == 0xF4) hi = 0x8F;   /* past U+10FFFF */
    return u[1] >= lo && u[1] <= hi;
}

size_t ag_utf8_char(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) return 0;
    size_t len = lead_len(u[0]);
    return len && len <= n && prefix_ok(u, len) ? len : 0;
}

bool ag_utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if ((k = ag_utf8_char(s + i, n - i)) == 0) return false;
    return true;
}

void ag_utf8_append(struct ag_buf *b, const char *s, size_t n)
{
    size_t run = 0; /* start of the valid bytes not yet appended */
    for (size_t i = 0; i < n;) {
        size_t k = ag_utf8_char(s + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        ag_buf_append(b, s + run, i - run);
        ag_buf_puts(b, "\xEF\xBF\xBD");
        run = ++i;
    }
    ag_buf_append(b, s + run, n - run);
}

size_t ag_utf8_tail(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    /* Walk back over at most three continuation bytes to the byte that leads them. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = u[n - k];
        if ((c & 0xC0) == 0x80) continue;
        size_t len = lead_len(c);
        return len > k && prefix_ok(u + n - k, k) ? k : 0;
    }
    return 0;
}

size_t ag_utf8_count(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

size_t ag_utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}
