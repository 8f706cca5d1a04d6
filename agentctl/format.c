/*
 * format.c - text layout for agentctl's human output (see format.h).
 *
 * Widths are computed from the UTF-8 text itself rather than with wcwidth(3): wcwidth depends
 * on the locale, and agentctl runs under LANG=C in scripts and CI as often as in a UTF-8
 * terminal. The small table of wide and zero-width ranges below covers CJK, Hangul, fullwidth
 * forms, emoji and combining marks, which is what agent names and descriptions contain in
 * practice; anything else is one column.
 */
#include "format.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Decodes one UTF-8 sequence at s. Returns its length (1 for an invalid byte, with *cp set to
 * U+FFFD) so that callers always make progress. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    size_t n;
    uint32_t c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, c &= 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, c &= 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, c &= 0x07;
    else
        goto invalid;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) goto invalid; /* also stops at the terminating NUL */
        c = (c << 6) | (s[i] & 0x3f);
    }
    *cp = c;
    return n;
invalid:
    *cp = 0xfffd;
    return 1;
}

static bool in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cp >= r[i][0] && cp <= r[i][1]) return true;
    return false;
}

static int cp_width(uint32_t cp)
{
    static const uint32_t zero[][2] = {
        {0x0300, 0x036f}, {0x0483, 0x0489}, {0x0591, 0x05bd}, {0x1ab0, 0x1aff}, {0x1dc0, 0x1dff},
        {0x200b, 0x200f}, {0x20d0, 0x20ff}, {0xfe00, 0xfe0f}, {0xfe20, 0xfe2f}, {0xfeff, 0xfeff},
    };
    static const uint32_t wide[][2] = {
        {0x1100, 0x115f},   {0x231a, 0x231b},   {0x2329, 0x232a},   {0x23e9, 0x23ec},
        {0x2614, 0x2615},   {0x2648, 0x2653},   {0x26a1, 0x26a1},   {0x26aa, 0x26ab},
        {0x26bd, 0x26be},   {0x26c4, 0x26c5},   {0x26ce, 0x26ce},   {0x26d4, 0x26d4},
        {0x26ea, 0x26ea},   {0x26f2, 0x26f5},   {0x26fa, 0x26fd},   {0x2705, 0x2705},
        {0x270a, 0x270b},   {0x2728, 0x2728},   {0x274c, 0x274c},   {0x2753, 0x2755},
        {0x2795, 0x2797},   {0x2b1b, 0x2b1c},   {0x2b50, 0x2b50},   {0x2e80, 0x303e},
        {0x3041, 0x33ff},   {0x3400, 0x4dbf},   {0x4e00, 0x9fff},   {0xa000, 0xa4cf},
        {0xa960, 0xa97f},   {0xac00, 0xd7a3},   {0xf900, 0xfaff},   {0xfe10, 0xfe19},
        {0xfe30, 0xfe6f},   {0xff00, 0xff60},   {0xffe0, 0xffe6},   {0x1f300, 0x1f64f},
        {0x1f680, 0x1f6ff}, {0x1f900, 0x1f9ff}, {0x1fa70, 0x1faff}, {0x20000, 0x3fffd},
    };
    if (in_ranges(cp, zero, sizeof(zero) / sizeof(zero[0]))) return 0;
    if (in_ranges(cp, wide, sizeof(wide) / sizeof(wide[0]))) return 2;
    return 1;
}

/* C0 and C1 controls and DEL: shown as a space so they cannot break or recolour a line. */
static bool is_control(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

int ctl_text_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    int w = 0;

    while (*p) {
        uint32_t cp;
        p += utf8_next(p, &cp);
        w += is_control(cp) ? 1 : cp_width(cp);
    }
    return w;
}

int ctl_put_clipped(struct ag_buf *b, const char *s, int max_cols)
{
    const unsigned char *p = (const unsigned char *)s;
    bool fits = ctl_text_width(s) <= max_cols;
    int limit = fits ? max_cols : max_cols - 1; /* keep a column for the ellipsis */
    int used = 0;

    if (max_cols <= 0) return 0;
    while (*p) {
        uint32_t cp;
        size_t n = utf8_next(p, &cp);
        int w = is_control(cp) ? 1 : cp_width(cp);
        if (used + w > limit) break;
        if (is_control(cp))
            ag_buf_putc(b, ' ');
        else
            ag_buf_append(b, p, n); /* invalid bytes pass through as they came */
        used += w;
        p += n;
    }
    if (!fits) {
        ag_buf_puts(b, "\xe2\x80\xa6"); /* U+2026 HORIZONTAL ELLIPSIS */
        used++;
    }
    return used;
}

void ctl_format_time(int64_t epoch_ms, int with_seconds, char *buf, size_t n)
{
    time_t t = (time_t)(epoch_ms / 1000);
    struct tm tm;

    if (epoch_ms <= 0 || !localtime_r(&t, &tm) ||
        !strftime(buf, n, with_seconds ? "%Y-%m-%d %H:%M:%S" : "%Y-%m-%d %H:%M", &tm))
        snprintf(buf, n, "-");
}

void ctl_format_duration(double seconds, char *buf, size_t n)
{
    if (!(seconds >= 0)) seconds = 0; /* also catches NaN */
    if (seconds < 10) {
        snprintf(buf, n, "%.1fs", seconds);
        return;
    }
    if (seconds < 60) {
        snprintf(buf, n, "%.0fs", seconds);
        return;
    }
    long long s = (long long)seconds;
    if (s < 3600)
        snprintf(buf, n, "%lldm %02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, n, "%lldh %02lldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, n, "%lldd %02lldh", s / 86400, s / 3600 % 24);
}

void ctl_wrap(struct ag_buf *b, const char *text, int width)
{
    const char *p = text;
    int col = 0;

    while (*p) {
        size_t n = strcspn(p, " \n");
        if (n) {
            char *word = ag_strndup(p, n);
            int w = ctl_text_width(word);
            if (col > 0 && col + 1 + w > width) {
                ag_buf_putc(b, '\n');
                col = 0;
            } else if (col > 0) {
                ag_buf_putc(b, ' ');
                col++;
            }
            ag_buf_append(b, p, n);
            col += w;
            free(word);
        }
        p += n;
        if (*p == '\n' && col > 0) {
            ag_buf_putc(b, '\n'); /* the text's own line breaks are kept */
            col = 0;
        }
        if (*p) p++;
    }
    if (col > 0) ag_buf_putc(b, '\n');
}

/* ---- tables ---- */

/* A copy of s with control characters blanked, so widths and output agree. */
static char *clean_copy(const char *s)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_reserve(&b, 0);
    ctl_put_clipped(&b, s ? s : "-", INT_MAX);
    return ag_buf_detach(&b, NULL);
}

static void table_push_row(struct ctl_table *t, const char *const *cells)
{
    size_t need = (t->n_rows + 2) * t->n_cols; /* the header, the rows so far, this row */
    if (need > t->cap) {
        t->cap = need * 2;
        t->cells = ag_realloc(t->cells, t->cap * sizeof(*t->cells));
    }
    size_t base = (t->n_rows + 1) * t->n_cols; /* row 0 is the header */
    for (size_t i = 0; i < t->n_cols; i++) t->cells[base + i] = clean_copy(cells[i]);
    t->n_rows++;
}

void ctl_table_init(struct ctl_table *t, const char *const *headers, size_t n_cols)
{
    t->n_cols = n_cols;
    t->n_rows = 0;
    t->cap = n_cols * 8;
    t->cells = ag_malloc(t->cap * sizeof(*t->cells));
    for (size_t i = 0; i < n_cols; i++) t->cells[i] = clean_copy(headers[i]);
}

void ctl_table_add(struct ctl_table *t, const char *const *cells)
{
    table_push_row(t, cells);
}

void ctl_table_render(const struct ctl_table *t, int max_cols, struct ag_buf *out)
{
    enum { GAP = 2, MIN_LAST = 12 }; /* spaces between columns; narrowest clipped last column */
    if (t->n_cols == 0) return;
    int *width = ag_calloc(t->n_cols, sizeof(int));
    size_t last = t->n_cols - 1;
    int prefix = 0;

    for (size_t r = 0; r <= t->n_rows; r++)
        for (size_t i = 0; i < t->n_cols; i++) {
            int w = ctl_text_width(t->cells[r * t->n_cols + i]);
            if (w > width[i]) width[i] = w;
        }
    for (size_t i = 0; i < last; i++) prefix += width[i] + GAP;
    int last_cols = max_cols > 0 ? max_cols - prefix : INT_MAX;
    if (last_cols < MIN_LAST) last_cols = MIN_LAST; /* wider than asked beats an unreadable cut */

    for (size_t r = 0; r <= t->n_rows; r++) {
        size_t row_start = out->len;
        for (size_t i = 0; i < t->n_cols; i++) {
            const char *cell = t->cells[r * t->n_cols + i];
            if (i == last) {
                ctl_put_clipped(out, cell, last_cols);
                break;
            }
            ag_buf_puts(out, cell);
            for (int pad = width[i] - ctl_text_width(cell) + GAP; pad > 0; pad--)
                ag_buf_putc(out, ' ');
        }
        /* An empty last cell would leave the padding of the one before it. */
        while (out->len > row_start && out->data[out->len - 1] == ' ') out->data[--out->len] = 0;
        ag_buf_putc(out, '\n');
    }
    free(width);
}

void ctl_table_release(struct ctl_table *t)
{
    for (size_t i = 0; i < (t->n_rows + 1) * t->n_cols; i++) free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}
