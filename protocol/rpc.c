/*
 * rpc.c - JSON-RPC 2.0 requests and responses, one per NDJSON line.
 *
 * Parsing checks the envelope only (jsonrpc, id, method, params type); each method validates its
 * own params with the helpers in params.c. Responses are written straight into the caller's
 * output buffer so a connection answering many pipelined requests makes one write.
 */
#include "protocol.h"

#include <string.h>

int proto_req_parse(const char *line, size_t len, struct proto_req *req, struct proto_val **bad_id,
                    struct ag_err *err)
{
    struct proto_val *root;
    const struct proto_val *id, *method, *params, *ver;

    memset(req, 0, sizeof(*req));
    *bad_id = NULL;
    root = proto_parse(line, len, err);
    if (!root) return AG_EPARSE;
    if (proto_type(root) == PROTO_ARRAY) {
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO,
                          "batch requests are not supported; send one request per line");
    }
    if (proto_type(root) != PROTO_OBJECT) {
        enum proto_type t = proto_type(root);
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO, "a request must be a JSON object, got %s",
                          proto_type_name(t));
    }
    id = proto_get(root, "id");
    if (id && proto_type(id) != PROTO_STRING && !proto_is_int(id) && proto_type(id) != PROTO_NULL) {
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO, "id: expected a string or an integer");
    }
    ver = proto_get(root, "jsonrpc");
    if (!proto_str(ver) || strcmp(proto_str(ver), "2.0") != 0) {
        *bad_id = id ? proto_val_dup(id) : NULL;
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO, "jsonrpc: expected \"2.0\"");
    }
    method = proto_get(root, "method");
    if (!proto_str(method) || !proto_str(method)[0]) {
        *bad_id = id ? proto_val_dup(id) : NULL;
        proto_val_free(root);
        return ag_err_set(err, AG_EPROTO, "method: expected a non-empty string");
    }
    params = proto_get(root, "params");
    if (params && proto_type(params) != PROTO_OBJECT && proto_type(params) != PROTO_NULL) {
        enum proto_type t = proto_type(params);
        *bad_id = id ? proto_val_dup(id) : NULL;
        proto_val_free(root);
        return ag_err_set(err, AG_EPARAMS, "params: expected an object, got %s",
                          proto_type_name(t));
    }
    req->root = root;
    req->id = id;
    req->method = proto_str(method);
    req->params = proto_type(params) == PROTO_OBJECT ? params : NULL;
    return 0;
}

void proto_req_release(struct proto_req *req)
{
    proto_val_free(req->root);
    memset(req, 0, sizeof(*req));
}

static void write_id(struct ag_buf *out, const struct proto_val *id)
{
    if (proto_is_int(id))
        ag_buf_printf(out, "%lld", (long long)proto_int(id, 0));
    else if (proto_str(id))
        proto_buf_quote(out, proto_str(id));
    else
        ag_buf_puts(out, "null");
}

void proto_write_result(struct ag_buf *out, const struct proto_val *id,
                        const struct proto_val *result)
{
    ag_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(out, id);
    ag_buf_puts(out, ",\"result\":");
    if (result)
        proto_print_buf(result, out);
    else
        ag_buf_puts(out, "{}");
    ag_buf_puts(out, "}\n");
}

void proto_write_error(struct ag_buf *out, const struct proto_val *id, int ag_code,
                       const char *message, const struct proto_val *data)
{
    ag_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    write_id(out, id);
    ag_buf_printf(out, ",\"error\":{\"code\":%d,\"message\":", proto_rpc_code(ag_code));
    proto_buf_quote(out, message && message[0] ? message : ag_strerror(ag_code));
    ag_buf_puts(out, ",\"data\":{\"type\":");
    proto_buf_quote(out, ag_errname(ag_code));
    for (const struct proto_val *m = proto_child(data); m; m = proto_next(m)) {
        if (!proto_key(m) || strcmp(proto_key(m), "type") == 0) continue;
        ag_buf_putc(out, ',');
        proto_buf_quote(out, proto_key(m));
        ag_buf_putc(out, ':');
        proto_print_buf(m, out);
    }
    ag_buf_puts(out, "}}}\n");
}

void proto_write_notification(struct ag_buf *out, const char *method,
                              const struct proto_val *params)
{
    ag_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"method\":");
    proto_buf_quote(out, method);
    if (params) {
        ag_buf_puts(out, ",\"params\":");
        proto_print_buf(params, out);
    }
    ag_buf_puts(out, "}\n");
}

void proto_write_request(struct ag_buf *out, int64_t id, const char *method,
                         const struct proto_val *params)
{
    ag_buf_printf(out, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":", (long long)id);
    proto_buf_quote(out, method);
    if (params) {
        ag_buf_puts(out, ",\"params\":");
        proto_print_buf(params, out);
    }
    ag_buf_puts(out, "}\n");
}
