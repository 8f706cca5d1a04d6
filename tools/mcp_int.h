/*
 * mcp_int.h - what mcp.c (the JSON-RPC client) shares with its transports, mcp_stdio.c and
 * mcp_http.c, and with mcp_msg.c (the pure parsing helpers).
 *
 * A transport instance is one connection to the server: one child process, or one HTTP
 * session. It is made by start, carries messages both ways, and reports its end once with
 * mcp__lost. close tears it down (it may be called before or after mcp__lost); the instance
 * then calls mcp__gone once its last handle is closed and never touches the client again.
 * A restart is a new instance; the client is freed only when no instance is left.
 */
#ifndef TOOLS_MCP_INT_H
#define TOOLS_MCP_INT_H

#include "mcp.h"

#include "../sandbox/sandbox.h"

struct mcp__transport {
    const char *name; /* "stdio", "http" */
    /* Opens a connection; NULL with err set when it cannot be started at all. */
    void *(*start)(struct mcp_client *c, struct ag_err *err);
    /* Sends one JSON-RPC message (n bytes, no newline). id is the request's id, or 0 for a
     * notification or a response: a transport that learns of a failure per message (HTTP)
     * reports it with mcp__send_failed(id). */
    void (*send)(void *tp, int64_t id, const char *json, size_t n);
    /* The call with request id ended here (timeout, cancel): stop waiting for its answer. May
     * be NULL. */
    void (*abandon)(void *tp, int64_t id);
    /* Starts tearing the connection down (idempotent). */
    void (*close)(void *tp);
    /* The server's stderr tail, or NULL. */
    const char *(*stderr_tail)(void *tp);
};

extern const struct mcp__transport mcp__stdio;
extern const struct mcp__transport mcp__http;

/* The client's copy of its configuration (every string owned). */
struct mcp__cfg {
    char *name;
    char *command;
    char **args; /* NULL-terminated, or NULL */
    char **env;  /* NULL-terminated, or NULL */
    char *cwd;
    char *url;
    int64_t start_timeout_ms;
    size_t max_message_bytes;
    int max_restarts;
    struct sbx_ctx *sandbox;          /* borrowed, or NULL: not sandboxed */
    struct sbx_limits sandbox_limits; /* the sandbox's limits */
    char **sandbox_paths;             /* NULL-terminated, or NULL */
    bool sandbox_network;
};

/* Read-only access for transports. */
uv_loop_t *mcp__loop(struct mcp_client *c);
const struct mcp__cfg *mcp__config(struct mcp_client *c);
/* Protocol version agreed at initialize ("" before): HTTP sends it as a header. */
const char *mcp__protocol_version(struct mcp_client *c);

/* From a transport instance tp of c: one message received (JSON text, n bytes). */
void mcp__received(struct mcp_client *c, void *tp, const char *json, size_t n);
/* A message over the size limit; head holds its first bytes (for its id). */
void mcp__received_too_big(struct mcp_client *c, void *tp, const char *head, size_t n,
                           size_t bytes);
/* The message with request id could not be delivered or answered (HTTP errors). */
void mcp__send_failed(struct mcp_client *c, void *tp, int64_t id, int code, const char *why);
/* The connection is over ("exited (status 3)"); once per instance. */
void mcp__lost(struct mcp_client *c, void *tp, const char *why);
/* The instance's handles are all closed; it is freed. */
void mcp__gone(struct mcp_client *c);

/* ---- mcp_msg.c ---- */

/* Splits newline-delimited messages, bounded: a line over max_bytes is dropped, but its first
 * bytes are kept so the caller can tell which request it answered. */
struct mcp__lines {
    struct ag_buf buf; /* the current line's bytes (only the head when over) */
    size_t max_bytes;  /* longest line accepted, without its newline */
    size_t over_bytes; /* > 0: inside an oversized line of this many bytes so far */
};

#define MCP__HEAD_BYTES 256

void mcp__lines_init(struct mcp__lines *l, size_t max_bytes);
void mcp__lines_release(struct mcp__lines *l);
/* Feeds bytes; on_line runs for each complete non-empty line (without "\n" or a final "\r"),
 * with bytes > 0 (the oversized line's full length) and the first MCP__HEAD_BYTES as line when
 * it was over the limit. */
void mcp__lines_feed(struct mcp__lines *l, const char *p, size_t n,
                     void (*on_line)(void *ud, const char *line, size_t len, size_t bytes),
                     void *ud);
/* The integer "id" of a JSON-RPC message from the start of its text (for a message too big to
 * parse), or -1. */
int64_t mcp__peek_id(const char *head, size_t n);

#endif
