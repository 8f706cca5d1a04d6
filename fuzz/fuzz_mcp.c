/*
 * fuzz_mcp.c - libFuzzer target for what an MCP server sends agentd: its stdout split into
 * bounded lines (and the id read from the head of an oversized one), an SSE stream, and a
 * tools/call result turned into capped text. Every split point must give the same lines and
 * events; nothing may outgrow its limit, crash or leak.
 */
#include <stdlib.h>
#include <string.h>

#include "../tools/mcp_int.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define LINE_MAX_BYTES 64
#define EVENT_MAX      128

struct tally {
    size_t n;     /* lines or events seen */
    size_t bytes; /* their lengths added up */
};

static void on_line(void *ud, const char *line, size_t len, size_t bytes)
{
    struct tally *t = ud;
    if (bytes ? len > MCP__HEAD_BYTES || bytes <= LINE_MAX_BYTES : len > LINE_MAX_BYTES) abort();
    (void)mcp__peek_id(line, len);
    t->n++;
    t->bytes += len + bytes;
}

static void on_event(void *ud, const char *d, size_t len, bool too_big)
{
    struct tally *t = ud;
    if (too_big ? d != NULL : len == 0 || len > EVENT_MAX) abort();
    t->n++;
    t->bytes += len;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0) return 0;
    size_t step = 1 + data[0] % 13; /* the second feeding's chunk size */
    const char *p = (const char *)data + 1;
    size_t n = size - 1;

    /* Lines: all at once and in chunks agree. */
    struct mcp__lines l1, l2;
    struct tally a = {0}, b = {0};
    mcp__lines_init(&l1, LINE_MAX_BYTES);
    mcp__lines_init(&l2, LINE_MAX_BYTES);
    mcp__lines_feed(&l1, p, n, on_line, &a);
    for (size_t i = 0; i < n; i += step)
        mcp__lines_feed(&l2, p + i, n - i < step ? n - i : step, on_line, &b);
    if (a.n != b.n || a.bytes != b.bytes) abort();
    mcp__lines_release(&l1);
    mcp__lines_release(&l2);

    /* SSE: the same. */
    struct mcp_sse s1, s2;
    struct tally c = {0}, d = {0};
    mcp_sse_init(&s1, EVENT_MAX);
    mcp_sse_init(&s2, EVENT_MAX);
    mcp_sse_feed(&s1, p, n, on_event, &c);
    for (size_t i = 0; i < n; i += step)
        mcp_sse_feed(&s2, p + i, n - i < step ? n - i : step, on_event, &d);
    if (c.n != d.n || c.bytes != d.bytes) abort();
    mcp_sse_release(&s1);
    mcp_sse_release(&s2);

    /* A tools/call result under a small cap: the text stays near the cap. */
    size_t cap = 1 + data[0] % 200;
    bool ok, truncated;
    char *text = NULL, *structured = NULL;
    struct ag_err err = {0};
    if (mcp_result_format(p, n, cap, &ok, &text, &structured, &truncated, &err) == 0) {
        if (!text || strlen(text) > cap + 200) abort();
        if (structured && strlen(structured) > cap) abort();
    }
    free(text);
    free(structured);
    return 0;
}
