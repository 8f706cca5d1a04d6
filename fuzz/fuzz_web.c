/*
 * fuzz_web.c - libFuzzer target for what a web server sends an agent: HTML into text (any bytes,
 * any declared charset), robots.txt rules, and the SSRF guard's CIDR parser. The text must be
 * valid UTF-8 without NUL bytes; nothing may crash or leak.
 */
#include <stdlib.h>
#include <string.h>

#include "../tools/fetch.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80    ? 1
                     : c > 0xF4  ? 0
                     : c >= 0xF0 ? 4
                     : c >= 0xE0 ? 3
                     : c >= 0xC2 ? 2
                                 : 0;
        if (len == 0 || i + len > n || c == 0) abort();
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) abort();
        i += len;
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static const char *const charsets[] = {NULL,           "utf-8",     "iso-8859-1",
                                           "windows-1252", "shift_jis", "no-such-charset"};
    if (size == 0) return 0;
    const char *cs = charsets[data[0] % 6];
    struct ag_buf b;
    ag_buf_init(&b);
    char *title = NULL;
    struct ag_err err = {0};
    if (html_to_text((const char *)data + 1, size - 1, cs, &b, &title, &err) == 0) {
        check_utf8((const unsigned char *)b.data, b.len);
        if (title) check_utf8((const unsigned char *)title, strlen(title));
    }
    free(title);
    ag_buf_release(&b);

    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    (void)fetch_robots_allows(text, "/some/path?q=1");
    struct fetch_net n;
    if (size < 64 && fetch_net_parse(text, &n, &err) == 0 && (n.bits < 0 || n.bits > 128)) abort();
    free(text);
    return 0;
}
