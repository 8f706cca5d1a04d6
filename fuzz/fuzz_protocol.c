/*
 * fuzz_protocol.c - libFuzzer target for NDJSON framing and JSON-RPC request parsing, the path
 * every byte from a client takes.
 *
 * The first input byte picks a read size, so the same frames are also cut at arbitrary points,
 * as a socket would deliver them; a small frame limit exercises the oversize path. For every
 * frame that parses, the response writers run too, and their output must itself be one valid
 * JSON line.
 */
#include <stdlib.h>
#include <string.h>

#include "../protocol/protocol.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_line(struct ag_buf *out)
{
    if (out->len == 0) return;
    if (out->data[out->len - 1] != '\n' || memchr(out->data, '\n', out->len - 1)) abort();
    struct proto_val *v = proto_parse(out->data, out->len - 1, NULL);
    if (!v) abort();
    proto_val_free(v);
    ag_buf_reset(out);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct proto_framer f;
    struct ag_buf out;
    size_t chunk, off = 0;

    if (size == 0) return 0;
    chunk = (size_t)(data[0] % 64) + 1;
    data++;
    size--;
    proto_framer_init(&f, 4096);
    ag_buf_init(&out);
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        const char *line;
        size_t len;
        int rc;
        proto_framer_feed(&f, (const char *)data + off, n);
        off += n;
        while ((rc = proto_framer_next(&f, &line, &len)) != 0) {
            if (rc < 0) continue;
            if (len > f.max_frame) abort();
            struct proto_req req;
            struct proto_val *bad_id = NULL;
            struct ag_err err = {0};
            if (proto_req_parse(line, len, &req, &bad_id, &err) == 0) {
                if (!req.method) abort();
                proto_write_result(&out, req.id, req.params);
                check_line(&out);
                proto_write_error(&out, req.id, AG_ENOTFOUND, req.method, req.params);
                check_line(&out);
                proto_req_release(&req);
            } else {
                if (!err.msg[0]) abort();
                proto_write_error(&out, bad_id, err.code, err.msg, NULL);
                check_line(&out);
                proto_val_free(bad_id);
            }
        }
    }
    ag_buf_release(&out);
    proto_framer_release(&f);
    return 0;
}
