/*
 * mcp_msg.c - the pure parts of the MCP client: splitting the stdio stream into lines, reading
 * an SSE stream, finding the id of a message too big to parse, and turning a tools/call result
 * into text for the model.
 *
 * Nothing here touches the loop, so each piece is fuzzed alone (fuzz/fuzz_mcp.c). Every buffer
 * is bounded by the caller's limit: a hostile server can make a message fail, never make
 * memory grow past the limit or the daemon crash.
 */
#include "mcp_int.h"

#include <stdlib.h>
#include <string.h>

#include "../protocol/protocol.h"

/* ---- newline-delimited messages ---- */

void mcp__lines_init(struct mcp__lines *l, size_t max_bytes)
{
    ag_buf_init(&l->buf);
    l->max_bytes = max_bytes;
    l->over_bytes = 0;
}

void mcp__lines_release(struct mcp__lines *l)
{
    ag_buf_release(&l->buf);
}

void mcp__lines_feed(struct mcp__lines *l, const char *p, size_t n,
                     void (*on_line)(void *ud, const char *line, size_t len, size_t bytes),
                     void *ud)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if (l->over_bytes) {
            size_t room = l->buf.len < MCP__HEAD_BYTES ? MCP__HEAD_BYTES - l->buf.len : 0;
            ag_buf_append(&l->buf, p, k < room ? k : room);
            l->over_bytes += k;
        } else if (l->buf.len + k > l->max_bytes) {
            /* Over the limit: keep only the head, count the rest. */
            size_t had = l->buf.len;
            if (had > MCP__HEAD_BYTES) l->buf.len = MCP__HEAD_BYTES;
            size_t room = l->buf.len < MCP__HEAD_BYTES ? MCP__HEAD_BYTES - l->buf.len : 0;
            ag_buf_append(&l->buf, p, k < room ? k : room);
            l->buf.data[l->buf.len] = '\0';
            l->over_bytes = had + k;
        } else {
            ag_buf_append(&l->buf, p, k);
        }
        if (!nl) return;
        p += k + 1;
        n -= k + 1;
        size_t len = l->buf.len, bytes = l->over_bytes;
        if (!bytes && len > 0 && l->buf.data[len - 1] == '\r') len--;
        l->over_bytes = 0;
        if (len > 0 || bytes) on_line(ud, l->buf.data ? l->buf.data : "", len, bytes);
        ag_buf_reset(&l->buf);
    }
}

/* The top-level "id" member's integer value, read without parsing the rest. */
int64_t mcp__peek_id(const char *s, size_t n)
{
    int depth = 0;
    size_t key_start = 0, key_len = 0;
    bool in_str = false, expect_colon = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\') {
                i++;
            } else if (ch == '"') {
                in_str = false;
                key_len = i - key_start;
                expect_colon = depth == 1;
            }
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') continue;
        if (ch == ':' && expect_colon && key_len == 2 && memcmp(s + key_start, "id", 2) == 0) {
            i++;
            while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
            int64_t v = 0;
            size_t d = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9' && d < 18) v = v * 10 + (s[i++] - '0'), d++;
            return d > 0 ? v : -1;
        }
        expect_colon = false;
        if (ch == '"') {
            in_str = true;
            key_start = i + 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return -1;
}

/* ---- text/event-stream ---- */

void mcp_sse_init(struct mcp_sse *s, size_t max_bytes)
{
    memset(s, 0, sizeof(*s));
    ag_buf_init(&s->line);
    ag_buf_init(&s->data);
    s->max_bytes = max_bytes;
}

void mcp_sse_release(struct mcp_sse *s)
{
    ag_buf_release(&s->line);
    ag_buf_release(&s->data);
}

/* One complete line of the stream (the field grammar of the SSE spec). */
static void sse_line(struct mcp_sse *s, void (*on_event)(void *, const char *, size_t, bool),
                     void *ud)
{
    const char *l = s->line.data ? s->line.data : "";
    size_t n = s->line.len;
    if (n == 0) {
        /* A blank line ends the event. */
        bool deliver = !s->event_other && (s->data.len > 0 || s->over);
        if (deliver && s->over) {
            on_event(ud, NULL, 0, true);
        } else if (deliver) {
            size_t len = s->data.len;
            if (len > 0 && s->data.data[len - 1] == '\n') len--; /* the last data line's end */
            if (len > 0) on_event(ud, s->data.data, len, false);
        }
        ag_buf_reset(&s->data);
        s->over = s->event_other = false;
        return;
    }
    if (l[0] == ':') return; /* a comment (keep-alive) */
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = (size_t)(l + n - v);
    if (vl > 0 && *v == ' ') v++, vl--;
    if (fl == 4 && memcmp(l, "data", 4) == 0) {
        if (s->over || s->data.len + vl + 1 > s->max_bytes) {
            s->over = true;
            ag_buf_reset(&s->data);
            return;
        }
        ag_buf_append(&s->data, v, vl);
        ag_buf_putc(&s->data, '\n');
    } else if (fl == 5 && memcmp(l, "event", 5) == 0) {
        s->event_other = !(vl == 7 && memcmp(v, "message", 7) == 0) && vl > 0;
    } else if (fl == 2 && memcmp(l, "id", 2) == 0) {
        if (vl < sizeof(s->last_id) && !memchr(v, '\0', vl)) {
            memcpy(s->last_id, v, vl);
            s->last_id[vl] = '\0';
        }
    }
    /* "retry" and unknown fields are ignored, as the spec says. */
}

void mcp_sse_feed(struct mcp_sse *s, const char *p, size_t n,
                  void (*on_event)(void *ud, const char *data, size_t len, bool too_big), void *ud)
{
    /* A field line longer than the event limit can only be dropped: it is kept short and its
     * event marked over. */
    size_t line_cap = s->max_bytes + 64;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (s->skip_lf) {
            s->skip_lf = false;
            if (ch == '\n') continue;
        }
        if (ch == '\r' || ch == '\n') {
            s->skip_lf = ch == '\r';
            sse_line(s, on_event, ud);
            ag_buf_reset(&s->line);
            continue;
        }
        if (s->line.len < line_cap) {
            /* Copy the run up to the next line end in one go. */
            size_t j = i;
            while (j < n && p[j] != '\r' && p[j] != '\n' && s->line.len + (j - i) < line_cap) j++;
            ag_buf_append(&s->line, p + i, j - i);
            i = j - 1;
        } else {
            s->over = true;
        }
    }
}

/* ---- tools/call results ---- */

/* The largest prefix of s (n bytes) no longer than max that ends on a UTF-8 boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    /* Back over continuation bytes (10xxxxxx) to the lead byte, which starts the cut-off
     * character; at most 3 steps for valid UTF-8. */
    for (int i = 0; i < 4 && k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80; i++) k--;
    if (((unsigned char)s[k] & 0xC0) == 0x80) k = max; /* not UTF-8 there: cut anyway */
    return k;
}

static void content_item(struct ag_buf *t, const struct proto_val *item)
{
    const char *type = proto_get_str(item, "type");
    if (!type) type = "unknown";
    if (strcmp(type, "text") == 0) {
        const char *s = proto_get_str(item, "text");
        ag_buf_puts(t, s ? s : "");
    } else if (strcmp(type, "image") == 0 || strcmp(type, "audio") == 0) {
        const char *mime = proto_get_str(item, "mimeType");
        const char *data = proto_get_str(item, "data");
        ag_buf_printf(t, "[%s content: %s, %zu bytes]", type, mime ? mime : "unknown type",
                      data ? strlen(data) / 4 * 3 : 0);
    } else if (strcmp(type, "resource_link") == 0) {
        const char *uri = proto_get_str(item, "uri");
        ag_buf_printf(t, "[resource link: %s]", uri ? uri : "?");
    } else if (strcmp(type, "resource") == 0) {
        const struct proto_val *r = proto_get(item, "resource");
        const char *uri = proto_get_str(r, "uri");
        const char *mime = proto_get_str(r, "mimeType");
        ag_buf_printf(t, "[resource: %s%s%s]", uri ? uri : "?", mime ? ", " : "", mime ? mime : "");
    } else {
        ag_buf_printf(t, "[%.40s content]", type);
    }
}

int mcp_result_format(const char *result_json, size_t n, size_t max_output_bytes, bool *ok,
                      char **text, char **structured, bool *truncated, struct ag_err *err)
{
    *text = *structured = NULL;
    *ok = false;
    *truncated = false;
    struct proto_val *r = proto_parse(result_json, n, err);
    if (!r) return AG_EPROTO;
    if (proto_type(r) != PROTO_OBJECT) {
        proto_val_free(r);
        return ag_err_set(err, AG_EPROTO, "the tools/call result is not an object");
    }
    const struct proto_val *content = proto_get(r, "content");
    const struct proto_val *sc = proto_get(r, "structuredContent");
    if (content && proto_type(content) != PROTO_ARRAY) {
        proto_val_free(r);
        return ag_err_set(err, AG_EPROTO, "the tools/call result's content is not an array");
    }
    if (!max_output_bytes) max_output_bytes = MCP_DEFAULT_OUTPUT_BYTES;
    *ok = !proto_bool(proto_get(r, "isError"), false);

    struct ag_buf t;
    ag_buf_init(&t);
    size_t i = 0;
    bool more = false; /* items left unrendered past the cap */
    for (const struct proto_val *it = proto_child(content); it; it = proto_next(it), i++) {
        if (i > 0) ag_buf_putc(&t, '\n');
        content_item(&t, it);
        if (t.len > max_output_bytes) { /* the rest would be cut anyway */
            more = proto_next(it) != NULL;
            break;
        }
    }
    char *sc_json = sc && proto_type(sc) != PROTO_NULL ? proto_print(sc) : NULL;
    /* A tool that answers with structured content only still tells the model something. */
    if (!proto_child(content) && sc_json) ag_buf_puts(&t, sc_json);

    if (t.len > max_output_bytes) {
        size_t total = t.len;
        size_t k = utf8_cut(t.data, t.len, max_output_bytes);
        t.len = k;
        t.data[k] = '\0';
        ag_buf_printf(&t, "\n[output truncated: the first %zu bytes of %s%zu are shown]", k,
                      more ? "more than " : "", total);
        *truncated = true;
    }
    if (sc_json && strlen(sc_json) > max_output_bytes) {
        ag_buf_printf(&t, "\n[structuredContent omitted: %zu bytes, over the %zu-byte cap]",
                      strlen(sc_json), max_output_bytes);
        free(sc_json);
        sc_json = NULL;
        *truncated = true;
    }
    if (!t.data) ag_buf_puts(&t, "");
    *text = ag_buf_detach(&t, NULL);
    *structured = sc_json;
    proto_val_free(r);
    return 0;
}
