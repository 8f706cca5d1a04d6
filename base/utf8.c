/*
 * utf8.c - one UTF-8 check for the whole tree (sandbox output, fetched pages, titles, schema
 * lengths), so that every place agrees on what is text.
 *
 * Validation follows RFC 3629's table: lead bytes C2..F4, and the second byte's range narrowed
 * after E0, ED, F0 and F4 so that overlong forms, surrogates and code points past U+10FFFF are
 * refused. Replacement is one U+FFFD per byte that starts no valid character.
 */
#include "base.h"

size_t ag_utf8_char(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0 || u[0] == 0) return 0;
    if (u[0] < 0x80) return 1;
    size_t len = u[0] >= 0xC2 && u[0] <= 0xDF   ? 2
                 : u[0] >= 0xE0 && u[0] <= 0xEF ? 3
                 : u[0] >= 0xF0 && u[0] <= 0xF4 ? 4
                                                : 0;
    if (len == 0 || len > n) return 0;
    for (size_t k = 1; k < len; k++)
        if ((u[k] & 0xC0) != 0x80) return 0;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (u[0] == 0xE0) lo = 0xA0;   /* overlong */
    if (u[0] == 0xED) hi = 0x9F;   /* surrogates */
    if (u[0] == 0xF0) lo = 0x90;   /* overlong */
    if (u[0] == 0xF4) hi = 0x8F;   /* past U+10FFFF */
    return u[1] >= lo && u[1] <= hi ? len : 0;
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
