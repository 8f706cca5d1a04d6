/*
 * mcp.h - a client for Model Context Protocol servers, so agents can use their tools.
 *
 * One struct mcp_client talks to one server, over one of two transports:
 *   - stdio: the server is a child process (command, args, extra environment) speaking
 *     newline-delimited JSON-RPC 2.0 on its stdin and stdout; its stderr goes to a bounded tail
 *     buffer (and to ag_debug), so a crash can be explained with the server's own last words.
 *     With cfg.sandbox set the process runs in a sandbox of its own (sandbox/sandbox.h,
 *     sbx_proc_spawn): no network unless asked, limits, and only /usr plus the paths bound
 *     read-only (cfg.sandbox_paths, cfg.cwd and the program's directory) to see;
 *   - streamable HTTP: every message is a POST to the server's URL, answered with either one
 *     JSON body or an SSE stream; the Mcp-Session-Id the server hands out at initialize is
 *     sent back on every later request, and the session is DELETEd at stop.
 *
 * Life of a client. mcp_client_new starts the server and returns; the handshake (initialize,
 * notifications/initialized, then tools/list following nextCursor) runs on the loop within
 * cfg.start_timeout_ms, and on_state reports MCP_READY when the tools are known, or MCP_FAILED
 * (with the reason) when a server that has never been ready cannot be started: such a server
 * is misconfigured, and retrying it would only hide that. A server that was ready and is lost
 * (its process exits or closes its stdout, its HTTP session expires) fails every call in flight
 * ("MCP server 'x' exited (status 3) during the call"), reports MCP_RESTARTING and is started
 * again after a backoff (0.5 s, 1 s, 2 s ... capped at 30 s; the backoff starts over once a
 * server has stayed up for a minute). After cfg.max_restarts failed restarts in a row it is
 * MCP_FAILED for good. Calls made while a server (re)starts wait for it, within their timeout.
 *
 * Calls. mcp_call sends tools/call and runs done exactly once, never inside mcp_call: with the
 * result, or with a clear error when the call timed out (the server is then sent
 * notifications/cancelled and stays usable), was cancelled, or the server was lost. The text
 * handed to done is capped at max_output_bytes, cut at a UTF-8 boundary with a note saying so.
 *
 * Threads: everything here runs on the loop thread, callbacks included. Protection: a line or
 * an HTTP body longer than cfg.max_message_bytes, or one that is not JSON-RPC, is reported
 * (failing the call it answers, when its id can be read) and never trusted further. No SSRF
 * guard applies to cfg.url: servers are configured by the daemon's operator or an agent's
 * author, never by a model.
 */
#ifndef TOOLS_MCP_H
#define TOOLS_MCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../base/base.h"

#define MCP_PROTOCOL_VERSION     "2025-06-18" /* the revision asked for at initialize */
#define MCP_START_TIMEOUT_MS     30000        /* default for cfg.start_timeout_ms */
#define MCP_MAX_MESSAGE_BYTES    (16u << 20)  /* default for cfg.max_message_bytes */
#define MCP_MAX_RESTARTS         8            /* default for cfg.max_restarts */
#define MCP_DEFAULT_OUTPUT_BYTES (1u << 20)   /* mcp_call's max_output_bytes when 0 */

struct sbx_ctx;
struct sbx_limits;

/* How to reach one server. Exactly one of command and url is set. Everything is copied. */
struct mcp_server_cfg {
    const char *name;         /* "github": the prefix of its tools ("github.search") */
    const char *command;      /* stdio: program, looked up in PATH */
    const char *const *args;  /* stdio: NULL-terminated arguments after the program, or NULL */
    const char *const *env;   /* stdio: NULL-terminated "K=V" added to (or replacing in)
                                 agentd's environment, or NULL */
    const char *cwd;          /* stdio: working directory, or NULL for agentd's */
    const char *url;          /* streamable HTTP: the endpoint, "http://host:port/mcp" */
    int64_t start_timeout_ms; /* whole handshake, tool listing included; 0: default */
    size_t max_message_bytes; /* longest line or HTTP body accepted; 0: default */
    int max_restarts;         /* failed restarts in a row before giving up; 0: default,
                                 -1: never restart */
    /* stdio only: run the server in a sandbox of this context, or NULL for a plain child
     * process. Borrowed: sbx_ctx_free kills the client's process and the client learns it as an
     * exit; the context memory stays until the process is freed. Sandboxed, the server gets
     * the sandbox's environment plus env (none of agentd's), cwd is a path inside (bound
     * read-only, as is the program's directory when command is a path), and command is
     * looked up in the sandbox's PATH. */
    struct sbx_ctx *sandbox;
    const struct sbx_limits *sandbox_limits; /* NULL: sbx_limits_default (copied) */
    const char *const *sandbox_paths; /* host paths bound read-only, NULL-terminated, or NULL */
    bool sandbox_network;             /* let the server use the host's network */
};

enum mcp_state {
    MCP_STARTING = 0, /* first start: spawned or connecting, handshake under way */
    MCP_READY,        /* tools listed; calls go out */
    MCP_RESTARTING,   /* lost after being ready; a restart is scheduled or under way */
    MCP_FAILED,       /* given up; calls fail at once (final) */
    MCP_STOPPED,      /* mcp_client_free was called */
};

/* "starting", "ready", ... */
const char *mcp_state_name(enum mcp_state st);

/* One tool of the server, as tools/list described it. Strings live until the next on_state
 * callback (a restart lists the tools again) or mcp_client_free. */
struct mcp_tool {
    const char *name;              /* the server's name for it ("search") */
    const char *description;       /* for the model; "" when the server gave none */
    const char *input_schema_json; /* JSON Schema of the arguments object, compact JSON text */
};

/* What done receives. Every pointer lives until done returns. */
struct mcp_result {
    uint64_t call_id;            /* as mcp_call returned it */
    int err_code;                /* 0 when the server answered the call; else AG_ETIMEOUT,
                                    AG_ECANCELLED, AG_ECLOSED (server lost), AG_ETOOL (a
                                    JSON-RPC error), AG_ETOOBIG (answer over the message
                                    limit), AG_EPROTO (an answer we cannot read),
                                    AG_ESHUTDOWN (client freed) */
    bool ok;                     /* err_code == 0 and the server did not set isError */
    const char *text;            /* the content items as text (text items verbatim, others as
                                    a placeholder line), or the error message; never NULL */
    const char *structured_json; /* structuredContent as compact JSON, or NULL */
    bool truncated;              /* text was cut at max_output_bytes (and says so) */
};

struct mcp_client;

typedef void (*mcp_state_cb)(void *ud, struct mcp_client *c, enum mcp_state st, const char *msg);
typedef void (*mcp_done_cb)(void *ud, const struct mcp_result *res);

/*
 * Starts the server of cfg on loop. Returns 0 with *out set, or an error without a client:
 * AG_EINVAL for a bad cfg, AG_ENOTFOUND when the command cannot be run ("MCP server 'x':
 * cannot run 'nope': no such file or directory"; sandboxed, also when it would not be visible
 * inside), AG_ESANDBOX when its sandbox cannot be made, AG_EIO otherwise. on_state (may be NULL)
 * runs on every change of state, from the loop, with a message for the run's events:
 * MCP_READY ("7 tools"), MCP_RESTARTING ("exited (status 3); restarting in 500 ms"),
 * MCP_FAILED (why). It never runs inside mcp_client_new or mcp_client_free.
 */
int mcp_client_new(uv_loop_t *loop, const struct mcp_server_cfg *cfg, mcp_state_cb on_state,
                   void *ud, struct mcp_client **out, struct ag_err *err);
/*
 * Stops the server (stdin closed, SIGTERM to its process group, SIGKILL 2 s later, which in a
 * sandbox ends the whole tree; an HTTP session is DELETEd) and frees the client once every handle
 * is closed, later on the loop. Calls in flight end first, here, with AG_ESHUTDOWN. on_state is not
 * called again.
 */
void mcp_client_free(struct mcp_client *c);

enum mcp_state mcp_client_state(const struct mcp_client *c);
const char *mcp_client_name(const struct mcp_client *c);
/* The tools of the last successful listing (0 before the first MCP_READY); *tools is valid
 * until the next on_state callback. */
size_t mcp_client_tools(const struct mcp_client *c, const struct mcp_tool **tools);
/* The last lines the server wrote to stderr (bounded; "" for none or for HTTP). */
const char *mcp_client_stderr(const struct mcp_client *c);
/* Why the client last failed or restarted ("" when it never did). */
const char *mcp_client_last_error(const struct mcp_client *c);

/*
 * Calls tool (the server's name, without the "server." prefix) with arguments_json (an
 * object; NULL or "" means {}). timeout_ms <= 0 means no limit; max_output_bytes 0 means
 * MCP_DEFAULT_OUTPUT_BYTES. Returns 0 with *call_id set (may be NULL), after which done runs
 * exactly once; or an error, and done never runs: AG_EPARAMS (arguments are not a JSON
 * object), AG_ECLOSED (the client is MCP_FAILED or stopping).
 */
int mcp_call(struct mcp_client *c, const char *tool, const char *arguments_json, int64_t timeout_ms,
             size_t max_output_bytes, mcp_done_cb done, void *ud, uint64_t *call_id,
             struct ag_err *err);
/* Ends call_id now: done runs before this returns, with AG_ECANCELLED, and the server is sent
 * notifications/cancelled. Unknown or finished ids are ignored. */
void mcp_cancel(struct mcp_client *c, uint64_t call_id);
/* Calls waiting for an answer (sent or waiting for the server to be ready). */
size_t mcp_calls_in_flight(const struct mcp_client *c);

/* ---- pure helpers (mcp_msg.c), exposed for tests and the fuzzer ---- */

/*
 * Turns a tools/call result object (JSON text) into what done receives: res->text (caller
 * frees *text) concatenates the content items, capped at max_output_bytes on a UTF-8
 * boundary; *structured (caller frees; NULL when absent) is structuredContent; res->ok is
 * !isError. Returns 0, or AG_EPROTO with err set when result is not a tools/call result.
 */
int mcp_result_format(const char *result_json, size_t n, size_t max_output_bytes, bool *ok,
                      char **text, char **structured, bool *truncated, struct ag_err *err);

/* An SSE stream parser (text/event-stream): bytes in, complete "message" events' data out. */
struct mcp_sse {
    struct ag_buf line; /* the line being read, without its end */
    struct ag_buf data; /* the event's data lines, joined with "\n" */
    size_t max_bytes;   /* longest event data accepted */
    bool over;          /* the current event went over max_bytes: dropped at its end */
    bool event_other;   /* the event has a type other than "message" */
    bool skip_lf;       /* the last line ended with "\r": a "\n" right after belongs to it */
    char last_id[128];  /* the last "id:" field seen (for Last-Event-ID) */
};

void mcp_sse_init(struct mcp_sse *s, size_t max_bytes);
void mcp_sse_release(struct mcp_sse *s);
/* Feeds n bytes; on_event runs for each complete message event (data, len; len 0 never),
 * with too_big set (and data NULL) for an event over max_bytes. */
void mcp_sse_feed(struct mcp_sse *s, const char *p, size_t n,
                  void (*on_event)(void *ud, const char *data, size_t len, bool too_big), void *ud);

#endif
