/*
 * frame.c - NDJSON framing: split a byte stream into lines, bounded by a maximum frame size.
 *
 * Bytes are appended to one buffer; proto_framer_next scans for '\n' from where the previous
 * scan stopped (so a frame arriving in many small reads is scanned once, not quadratically).
 * Returned frames are consumed lazily: the buffer is compacted at the next feed, which keeps a
 * read that carries many frames down to one memmove.
 *
 * An oversized line is reported once and its bytes are dropped as they arrive, up to its
 * newline, so a hostile client cannot make us hold more than max_frame plus one read.
 */
#include "protocol.h"

#include <string.h>

void proto_framer_init(struct proto_framer *f, size_t max_frame)
{
    ag_buf_init(&f->in);
    f->scan_from = 0;
    f->max_frame = max_frame ? max_frame : PROTO_MAX_FRAME_DEFAULT;
    f->discarding = false;
    f->n_oversized = 0;
    f->consumed = 0;
}

void proto_framer_release(struct proto_framer *f)
{
    ag_buf_release(&f->in);
}

static void compact(struct proto_framer *f)
{
    if (f->consumed) {
        ag_buf_consume(&f->in, f->consumed);
        f->scan_from -= f->consumed;
        f->consumed = 0;
    }
}

void proto_framer_feed(struct proto_framer *f, const char *data, size_t n)
{
    compact(f);
    if (f->discarding) {
        /* Drop bytes of the oversized line up to and including its newline. */
        const char *nl = memchr(data, '\n', n);
        if (!nl) return;
        f->discarding = false;
        n -= (size_t)(nl + 1 - data);
        data = nl + 1;
    }
    ag_buf_append(&f->in, data, n);
}

int proto_framer_next(struct proto_framer *f, const char **line, size_t *len)
{
    for (;;) {
        if (f->discarding) return 0;
        char *start = f->in.data + f->consumed;
        size_t avail = f->in.len - f->consumed;
        size_t scanned = f->scan_from - f->consumed;
        char *nl = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;

        if (!nl) {
            f->scan_from = f->in.len;
            if (avail > f->max_frame) {
                /* No newline within the limit: drop what we hold and the rest of the line. */
                f->consumed = f->in.len;
                f->scan_from = f->in.len;
                f->discarding = true;
                f->n_oversized++;
                return AG_ETOOBIG;
            }
            return 0;
        }
        size_t n = (size_t)(nl - start);
        f->consumed += n + 1;
        f->scan_from = f->consumed;
        if (n > f->max_frame) {
            f->n_oversized++;
            return AG_ETOOBIG;
        }
        if (n && start[n - 1] == '\r') n--;
        if (n == 0) continue; /* blank lines are keep-alives */
        *line = start;
        *len = n;
        return 1;
    }
}

size_t proto_framer_pending(const struct proto_framer *f)
{
    return f->in.len - f->consumed;
}
