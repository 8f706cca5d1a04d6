/*
 * chat_json.c - the JSON reader/re-printer behind chat templates (see chat_int.h for why it is
 * not cJSON). One recursive-descent pass checks a value and, when asked, prints it again in a
 * template's style; numbers are copied as written, strings decoded and re-escaped.
 */
#include "chat_int.h"

#include <string.h>

const struct eng_chat__jstyle eng_chat__json_compact = {",", ":", -1};
const struct eng_chat__jstyle eng_chat__json_python = {", ", ": ", -1};
const struct eng_chat__jstyle eng_chat__json_indent4 = {",", ": ", 4};

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t eng_chat__json_ws(const char *s, size_t n, size_t pos)
{
    while (pos < n && is_ws(s[pos])) pos++;
    return pos;
}

/* "end of text" or the offending character, for error messages. */
static int fail_at(struct ag_err *err, const char *s, size_t n, size_t pos, const char *want)
{
    if (pos >= n)
        return ag_err_set(err, AG_EPARSE, "expected %s at byte %zu, found the end", want, pos);
    unsigned char c = (unsigned char)s[pos];
    if (c >= 0x20 && c < 0x7f)
        return ag_err_set(err, AG_EPARSE, "expected %s at byte %zu, found '%c'", want, pos, c);
    return ag_err_set(err, AG_EPARSE, "expected %s at byte %zu, found byte 0x%02x", want, pos, c);
}

static void put_utf8(struct ag_buf *b, unsigned cp)
{
    char u[4];
    size_t k;
    if (cp < 0x80) {
        u[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    ag_buf_append(b, u, k);
}

static int hex4(const char *s, size_t n, size_t pos, unsigned *out)
{
    unsigned v = 0;
    if (n - pos < 4) return -1;
    for (size_t i = 0; i < 4; i++) {
        char c = s[pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

int eng_chat__json_string(const char *s, size_t n, size_t *pos, struct ag_buf *out,
                          struct ag_err *err)
{
    size_t i = *pos;
    if (i >= n || s[i] != '"') return fail_at(err, s, n, i, "'\"'");
    size_t open = i++;
    for (;;) {
        size_t run = i;
        while (i < n && s[i] != '"' && s[i] != '\\') i++;
        if (out && i > run) ag_buf_append(out, s + run, i - run);
        if (i >= n) return ag_err_set(err, AG_EPARSE, "string opened at byte %zu never ends", open);
        if (s[i] == '"') break;
        /* an escape */
        if (i + 1 >= n)
            return ag_err_set(err, AG_EPARSE, "string opened at byte %zu never ends", open);
        char e = s[i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != 0 && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            if (out) ag_buf_putc(out, decoded[simple - "\"\\/bfnrt"]);
            i += 2;
            continue;
        }
        if (e != 'u')
            return ag_err_set(err, AG_EPARSE, "invalid escape at byte %zu of a string", i);
        unsigned cp;
        if (hex4(s, n, i + 2, &cp) != 0)
            return ag_err_set(err, AG_EPARSE, "\\u needs 4 hex digits at byte %zu", i);
        i += 6;
        /* A high surrogate followed by a low one is one code point; a lone surrogate is kept as
         * its own (WTF-8) bytes, as Python keeps it in a str. */
        if (cp >= 0xd800 && cp < 0xdc00 && i + 1 < n && s[i] == '\\' && s[i + 1] == 'u') {
            unsigned lo;
            if (hex4(s, n, i + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
        }
        if (out) put_utf8(out, cp);
    }
    *pos = i + 1;
    return 0;
}

void eng_chat__json_quote(struct ag_buf *out, const char *s, size_t n)
{
    ag_buf_putc(out, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (i > run) ag_buf_append(out, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            ag_buf_puts(out, "\\\"");
            break;
        case '\\':
            ag_buf_puts(out, "\\\\");
            break;
        case '\b':
            ag_buf_puts(out, "\\b");
            break;
        case '\f':
            ag_buf_puts(out, "\\f");
            break;
        case '\n':
            ag_buf_puts(out, "\\n");
            break;
        case '\r':
            ag_buf_puts(out, "\\r");
            break;
        case '\t':
            ag_buf_puts(out, "\\t");
            break;
        default:
            ag_buf_printf(out, "\\u%04x", c);
            break;
        }
    }
    if (n > run) ag_buf_append(out, s + run, n - run);
    ag_buf_putc(out, '"');
}

/* A string value or key: decoded into a scratch buffer, then quoted again. */
static int copy_string(const char *s, size_t n, size_t *pos, struct ag_buf *out, struct ag_err *err)
{
    if (!out) return eng_chat__json_string(s, n, pos, NULL, err);
    struct ag_buf tmp;
    ag_buf_init(&tmp);
    int rc = eng_chat__json_string(s, n, pos, &tmp, err);
    if (rc == 0) eng_chat__json_quote(out, tmp.data ? tmp.data : "", tmp.len);
    ag_buf_release(&tmp);
    return rc;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, copied as written. */
static int copy_number(const char *s, size_t n, size_t *pos, struct ag_buf *out, struct ag_err *err)
{
    size_t i = *pos, start = i;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    } else {
        return fail_at(err, s, n, i, "a digit");
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return fail_at(err, s, n, i, "a digit after '.'");
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return fail_at(err, s, n, i, "an exponent digit");
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (out) ag_buf_append(out, s + start, i - start);
    *pos = i;
    return 0;
}

static void newline_indent(struct ag_buf *out, const struct eng_chat__jstyle *st, int level)
{
    if (!out || st->indent < 0) return;
    ag_buf_putc(out, '\n');
    for (int k = 0; k < level * st->indent; k++) ag_buf_putc(out, ' ');
}

static int value(const char *s, size_t n, size_t *pos, const struct eng_chat__jstyle *st,
                 struct ag_buf *out, int level, struct ag_err *err);

/* An array or object: open is '[' or '{'. Empty ones print as "[]" / "{}" in every style. */
static int container(const char *s, size_t n, size_t *pos, const struct eng_chat__jstyle *st,
                     struct ag_buf *out, int level, struct ag_err *err)
{
    char open = s[*pos], close = open == '[' ? ']' : '}';
    if (level >= ENG_CHAT__JSON_MAX_DEPTH)
        return ag_err_set(err, AG_EPARSE, "nested deeper than %d levels at byte %zu",
                          ENG_CHAT__JSON_MAX_DEPTH, *pos);
    size_t i = eng_chat__json_ws(s, n, *pos + 1);
    if (out) ag_buf_putc(out, open);
    if (i < n && s[i] == close) {
        if (out) ag_buf_putc(out, close);
        *pos = i + 1;
        return 0;
    }
    for (size_t k = 0;; k++) {
        if (k > 0 && out) ag_buf_puts(out, st->item_sep);
        newline_indent(out, st, level + 1);
        if (open == '{') {
            if (i >= n || s[i] != '"') return fail_at(err, s, n, i, "a member name");
            int rc = copy_string(s, n, &i, out, err);
            if (rc) return rc;
            i = eng_chat__json_ws(s, n, i);
            if (i >= n || s[i] != ':') return fail_at(err, s, n, i, "':'");
            if (out) ag_buf_puts(out, st->key_sep);
            i++;
        }
        int rc = value(s, n, &i, st, out, level + 1, err);
        if (rc) return rc;
        i = eng_chat__json_ws(s, n, i);
        if (i < n && s[i] == ',') {
            i = eng_chat__json_ws(s, n, i + 1);
            continue;
        }
        if (i < n && s[i] == close) break;
        return fail_at(err, s, n, i, open == '[' ? "',' or ']'" : "',' or '}'");
    }
    newline_indent(out, st, level);
    if (out) ag_buf_putc(out, close);
    *pos = i + 1;
    return 0;
}

static int value(const char *s, size_t n, size_t *pos, const struct eng_chat__jstyle *st,
                 struct ag_buf *out, int level, struct ag_err *err)
{
    size_t i = eng_chat__json_ws(s, n, *pos);
    if (i >= n) return fail_at(err, s, n, i, "a value");
    switch (s[i]) {
    case '{':
    case '[':
        *pos = i;
        return container(s, n, pos, st, out, level, err);
    case '"':
        *pos = i;
        return copy_string(s, n, pos, out, err);
    case 't':
    case 'f':
    case 'n': {
        const char *lit = s[i] == 't' ? "true" : s[i] == 'f' ? "false" : "null";
        size_t k = strlen(lit);
        if (n - i < k || memcmp(s + i, lit, k) != 0) return fail_at(err, s, n, i, "a value");
        if (out) ag_buf_append(out, lit, k);
        *pos = i + k;
        return 0;
    }
    default:
        if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
            *pos = i;
            return copy_number(s, n, pos, out, err);
        }
        return fail_at(err, s, n, i, "a value");
    }
}

int eng_chat__json_value(const char *s, size_t n, size_t *pos, const struct eng_chat__jstyle *st,
                         struct ag_buf *out, struct ag_err *err)
{
    return value(s, n, pos, st, out, 0, err);
}
