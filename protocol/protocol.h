/*
 * protocol.h - agentd's wire protocol: JSON values, JSON-RPC 2.0 messages, NDJSON framing, the
 * catalogue of methods, events and error codes, and validation of agent definitions.
 *
 * Used by the daemon, agentctl and (later) the HTTP gateway. There are no sockets in here: the
 * module turns bytes into messages and messages into bytes.
 *
 * JSON values are opaque (struct proto_val); cJSON is the implementation and stays inside this
 * module. A value is owned by whoever created or parsed it; getters return borrowed pointers
 * that live as long as the root they came from. Adding a value to an object or array transfers
 * ownership to the container.
 *
 * JSON-RPC: one request or notification per line. Batches (a JSON array on one line) are
 * rejected with -32600 "batch requests are not supported": every client we ship pipelines
 * requests instead, and rejecting keeps per-connection ordering trivial.
 */
#ifndef PROTO_PROTOCOL_H
#define PROTO_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

#define PROTO_VERSION           "2026-11-01" /* protocol revision sent by initialize */
#define PROTO_MAX_FRAME_DEFAULT (16u * 1024 * 1024)

/* ---- JSON values ---- */
struct proto_val;

enum proto_type {
    PROTO_NULL = 0,
    PROTO_BOOL,
    PROTO_NUMBER,
    PROTO_STRING,
    PROTO_ARRAY,
    PROTO_OBJECT,
    PROTO_INVALID
};

/* Parses exactly one JSON text of n bytes (trailing whitespace allowed). */
struct proto_val *proto_parse(const char *text, size_t n, struct ag_err *err);
void proto_val_free(struct proto_val *v);
struct proto_val *proto_val_dup(const struct proto_val *v);
/* Compact one-line JSON (never contains a raw newline); caller frees. */
char *proto_print(const struct proto_val *v);
/* Indented JSON for humans; caller frees. */
char *proto_print_pretty(const struct proto_val *v);
/* Appends compact JSON to b. */
void proto_print_buf(const struct proto_val *v, struct ag_buf *b);

enum proto_type proto_type(const struct proto_val *v); /* PROTO_INVALID for NULL */
const char *proto_type_name(enum proto_type t);        /* "string", "object", ... */
bool proto_is_int(const struct proto_val *v);          /* a number with an integral value */

/* Getters: NULL / fallback when v is NULL or of another type. */
const struct proto_val *proto_get(const struct proto_val *obj, const char *key);
const char *proto_str(const struct proto_val *v);
const char *proto_get_str(const struct proto_val *obj, const char *key);
double proto_num(const struct proto_val *v, double fallback);
int64_t proto_int(const struct proto_val *v, int64_t fallback);
bool proto_bool(const struct proto_val *v, bool fallback);
size_t proto_len(const struct proto_val *v); /* array items or object members */
const struct proto_val *proto_at(const struct proto_val *v, size_t i);
/* Iteration over an object's members or an array's items: first child, then next sibling. */
const struct proto_val *proto_child(const struct proto_val *v);
const struct proto_val *proto_next(const struct proto_val *v);
const char *proto_key(const struct proto_val *member); /* member name inside an object */

/* Builders. The add functions take ownership of item and return it. */
struct proto_val *proto_obj(void);
struct proto_val *proto_arr(void);
struct proto_val *proto_new_str(const char *s);
struct proto_val *proto_new_num(double n);
struct proto_val *proto_new_int(int64_t n);
struct proto_val *proto_new_bool(bool b);
struct proto_val *proto_new_null(void);
struct proto_val *proto_add(struct proto_val *obj, const char *key, struct proto_val *item);
struct proto_val *proto_add_str(struct proto_val *obj, const char *key, const char *s);
struct proto_val *proto_add_int(struct proto_val *obj, const char *key, int64_t n);
struct proto_val *proto_add_num(struct proto_val *obj, const char *key, double n);
struct proto_val *proto_add_bool(struct proto_val *obj, const char *key, bool b);
struct proto_val *proto_add_null(struct proto_val *obj, const char *key);
/* Parses json and adds it under key; a parse failure adds the raw text as a string. */
struct proto_val *proto_add_raw(struct proto_val *obj, const char *key, const char *json);
struct proto_val *proto_push(struct proto_val *arr, struct proto_val *item);
/* Replaces (or adds) obj[key]; takes ownership of item. */
void proto_set(struct proto_val *obj, const char *key, struct proto_val *item);
void proto_del(struct proto_val *obj, const char *key);
bool proto_equal(const struct proto_val *a, const struct proto_val *b);
/* Appends s as a JSON string literal (with quotes and escapes) to b. */
void proto_buf_quote(struct ag_buf *b, const char *s);

/* ---- NDJSON framing ---- */
struct proto_framer {
    struct ag_buf in;     /* bytes received, not yet returned as frames */
    size_t scan_from;     /* offset in `in` already known to hold no newline */
    size_t max_frame;     /* longest accepted line, excluding the newline */
    bool discarding;      /* inside an oversized line: drop bytes up to its newline */
    uint64_t n_oversized; /* oversized lines seen (each reported once) */
    size_t consumed;      /* bytes at the front of `in` already returned; dropped at next feed */
};

void proto_framer_init(struct proto_framer *f, size_t max_frame);
void proto_framer_release(struct proto_framer *f);
void proto_framer_feed(struct proto_framer *f, const char *data, size_t n);
/*
 * Returns the next complete frame: 1 with *line and *len set (valid until the next feed/next call;
 * the line excludes "\n" and a trailing "\r"), 0 when more bytes are needed, or AG_ETOOBIG once
 * per oversized line (whose bytes are dropped; framing resumes after its newline). Empty lines
 * are skipped. Memory stays bounded by max_frame plus one read.
 */
int proto_framer_next(struct proto_framer *f, const char **line, size_t *len);
/* Bytes buffered in an incomplete frame (0 when idle): for "half a line then disconnect". */
size_t proto_framer_pending(const struct proto_framer *f);

/* ---- JSON-RPC 2.0 ---- */
enum {
    PROTO_RPC_PARSE_ERROR = -32700,
    PROTO_RPC_INVALID_REQUEST = -32600,
    PROTO_RPC_METHOD_NOT_FOUND = -32601,
    PROTO_RPC_INVALID_PARAMS = -32602,
    PROTO_RPC_INTERNAL_ERROR = -32603,
};

/* A parsed request. root owns everything; id is NULL for a notification. */
struct proto_req {
    struct proto_val *root;         /* owned */
    const struct proto_val *id;     /* borrowed from root; NULL for a notification */
    const char *method;             /* borrowed from root */
    const struct proto_val *params; /* borrowed; NULL when absent */
};

/*
 * Parses one frame into req. On failure returns a negative AG_E code with err set, and, where the
 * request's id could be recovered, *bad_id is a copy of it (caller frees) so the error response
 * can carry it; otherwise *bad_id is NULL (the response uses id null).
 */
int proto_req_parse(const char *line, size_t len, struct proto_req *req, struct proto_val **bad_id,
                    struct ag_err *err);
void proto_req_release(struct proto_req *req);

/* Appends a complete response line ("...\n") to out. result is borrowed (NULL means {}). */
void proto_write_result(struct ag_buf *out, const struct proto_val *id,
                        const struct proto_val *result);
/* Error response for an AG_E code: JSON-RPC code from proto_rpc_code, message, and data
 * {"type": ag_errname(code), ...extra members of data, if any}. data is borrowed, may be NULL. */
void proto_write_error(struct ag_buf *out, const struct proto_val *id, int ag_code,
                       const char *message, const struct proto_val *data);
/* Notification line {"jsonrpc":"2.0","method":...,"params":...}\n; params borrowed. */
void proto_write_notification(struct ag_buf *out, const char *method,
                              const struct proto_val *params);
/* Request line; id is an integer. params borrowed, may be NULL. */
void proto_write_request(struct ag_buf *out, int64_t id, const char *method,
                         const struct proto_val *params);

/* Maps an AG_E code to the JSON-RPC error code sent on the wire (see the catalogue). */
int proto_rpc_code(int ag_code);
/* Maps a wire error code back to an AG_E code (for clients). */
int proto_ag_code(int rpc_code);

/* ---- catalogue ---- */
struct proto_event_info {
    const char *name; /* "text.delta" */
    const char *summary;
};
struct proto_error_info {
    int rpc_code; /* on the wire */
    int ag_code;  /* AG_E... */
    const char *summary;
};

const struct proto_event_info *proto_events(size_t *n);
const struct proto_error_info *proto_errors(size_t *n);

/* ---- parameter validation helpers (messages name the field) ---- */
/* Each returns 0 or AG_EPARAMS with err naming "params.<key>". */
int proto_param_str(const struct proto_val *params, const char *key, bool required,
                    const char **out, struct ag_err *err);
int proto_param_int(const struct proto_val *params, const char *key, bool required, int64_t min,
                    int64_t max, int64_t *out, struct ag_err *err);
int proto_param_bool(const struct proto_val *params, const char *key, bool required, bool *out,
                     struct ag_err *err);
int proto_param_obj(const struct proto_val *params, const char *key, bool required,
                    const struct proto_val **out, struct ag_err *err);
/* Fails when params has a member not listed in keys (NULL-terminated), with a suggestion. */
int proto_param_known(const struct proto_val *params, const char *const *keys, struct ag_err *err);

/* ---- JSON Schema (jsonschema.c) ---- */
/*
 * The subset agentd's tools, structured outputs and methods use: type and type arrays,
 * properties, required, additionalProperties, items, minItems/maxItems, enum, const,
 * anyOf/oneOf, $ref to #, #/$defs/... and #/definitions/..., minLength/maxLength,
 * minimum/maximum/exclusiveMinimum/exclusiveMaximum. Other keywords are ignored. A NULL schema
 * accepts everything.
 *
 * Each returns 0 when the value is valid, AG_EPARAMS with err naming the first failing value
 * when it is not, AG_EINVAL when the schema itself is malformed (a $ref that does not resolve,
 * checks nested over 512 levels).
 */
/* For documents; errors use JSON pointers: "/city: expected string, got number",
 * "/: missing required property \"unit\"", "/tags/2: not one of the enum values". */
int proto_schema_validate(const struct proto_val *schema, const struct proto_val *instance,
                          struct ag_err *err);
/* The same from JSON texts (AG_EPARSE when either does not parse). */
int proto_schema_validate_text(const char *schema, const char *instance, struct ag_err *err);
/*
 * For JSON-RPC parameters; errors read as the param helpers above do:
 *   "params.name: required", "params.name: expected a string, got number",
 *   "params.limit: expected an integer from 1 to 100" (INT64_MIN/INT64_MAX without bounds),
 *   "params.temperature: expected a number from 0 to 2", "params.b: expected a boolean, got
 *   string", "params.o: expected an object, got array", "params.x: expected a string or null,
 *   got number", "params.mode: expected one of a, b, c", "params.text: must not be empty"
 *   (minLength or minItems 1), "params.stop: at most 4 strings", "params.nmae: unknown
 *   parameter (did you mean 'name'?)" (additionalProperties false), nested as
 *   "params.limits.memory_mb: ..." and "params.allow[2]: ...".
 * params NULL (or null) counts as {}; a member that is null counts as absent unless its type
 * lists "null". An object's unknown members are reported first, then its properties are
 * checked in the schema's order. anyOf/oneOf reports the first alternative whose type fits.
 */
int proto_schema_check_params(const struct proto_val *schema, const struct proto_val *params,
                              struct ag_err *err);
/* Parses a schema once (for a static table of JSON texts) and checks its own shape: known type
 * names, numeric bounds, required as names, $refs that resolve. *out: caller frees; AG_EINVAL
 * naming the place ("schema #.properties.limit.type: not a JSON Schema type") otherwise. */
int proto_schema_parse(const char *json, struct proto_val **out, struct ag_err *err);
/* proto_schema_parse + proto_schema_check_params, for one-off checks (parses every call). */
int proto_schema_check_params_text(const char *schema, const struct proto_val *params,
                                   struct ag_err *err);

/* ---- default locations, shared by agentd and agentctl (paths.c) ---- */
/* Data dir: $AGENTD_DATA, else $XDG_DATA_HOME/agentd, else $HOME/.local/share/agentd. */
int proto_default_data_dir(char *buf, size_t n, struct ag_err *err);
/* Socket: $AGENTD_SOCKET, else $XDG_RUNTIME_DIR/agentd.sock when that directory exists, else
 * DATA_DIR/agentd.sock (data_dir NULL means the default data dir). */
int proto_default_socket(char *buf, size_t n, const char *data_dir, struct ag_err *err);

/* ---- agent definitions (spec.c) ---- */
/*
 * Loads an agent definition file (YAML when the name ends in .yaml/.yml, JSON when .json; by
 * content otherwise), validates it and returns the normalized spec as a JSON object (*out,
 * caller frees). Errors name file, line and field:
 *   "researcher.agent.yaml:12: tools[1].timeout_ms: expected a positive integer".
 */
int proto_spec_load_file(const char *path, struct proto_val **out, struct ag_err *err);
/* Same for text already in memory; name is used in messages ("<params>" for RPC input). */
int proto_spec_load_text(const char *text, size_t len, const char *name, struct proto_val **out,
                         struct ag_err *err);
/* Validates a JSON spec received over the protocol (no line numbers); returns a normalized copy
 * in *out. Messages read "spec.tools[1].timeout_ms: expected a positive integer". */
int proto_spec_validate(const struct proto_val *spec, struct proto_val **out, struct ag_err *err);
/* True when name is a valid agent name ([a-z0-9][a-z0-9_-]{0,63}). */
bool proto_spec_name_ok(const char *name);

#endif
