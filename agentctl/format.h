/*
 * format.h - text layout for agentctl's human output: column widths of UTF-8 text, clipping
 * with "…", aligned tables, local times and durations.
 *
 * Pure functions writing into a struct ag_buf, so tests can check the exact bytes; the commands
 * decide where the text goes.
 */
#ifndef CTL_FORMAT_H
#define CTL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

/* Terminal columns s takes: East Asian wide characters and most emoji count 2, combining marks
 * 0, other code points 1; each byte of invalid UTF-8 counts 1 (it is shown as one glyph). */
int ctl_text_width(const char *s);

/*
 * Appends s to b using at most max_cols columns: when s is wider it is cut at a character
 * boundary and ends in "…". Control characters (a multi-line description's newlines, tabs)
 * become spaces, so one value never breaks a table row. Returns the columns used.
 */
int ctl_put_clipped(struct ag_buf *b, const char *s, int max_cols);

/* "2026-11-22 06:19" (or with ":SS" when with_seconds) in local time; "-" for ms <= 0. */
void ctl_format_time(int64_t epoch_ms, int with_seconds, char *buf, size_t n);

/* A duration for humans: "0.4s", "42s", "5m 02s", "3h 07m", "2d 04h". */
void ctl_format_duration(double seconds, char *buf, size_t n);

/* Appends text word-wrapped to lines of at most width columns (a longer word gets a line of its
 * own), each line ending in "\n". */
void ctl_wrap(struct ag_buf *b, const char *text, int width);

/*
 * A table of text cells printed with columns separated by two spaces and padded to the widest
 * cell. The last column is clipped so a row fits max_cols (when the others leave it at least
 * a few columns); rows end without trailing spaces.
 */
struct ctl_table {
    size_t n_cols; /* columns, fixed at init */
    size_t n_rows; /* rows added, header excluded */
    size_t cap;    /* cells allocated in cells */
    char **cells;  /* (n_rows + 1, n_cols), row 0 is the header; owned, control chars blanked */
};

void ctl_table_init(struct ctl_table *t, const char *const *headers, size_t n_cols);
/* Adds a row of n_cols cells (copied; NULL shows as "-"). */
void ctl_table_add(struct ctl_table *t, const char *const *cells);
void ctl_table_render(const struct ctl_table *t, int max_cols, struct ag_buf *out);
void ctl_table_release(struct ctl_table *t);

#endif
