/*
 * tools.h - the tools an agent can be given, as an ops table: each tool is one row {name,
 * description, JSON Schema of its arguments, start, cancel}. Built-in tools are rows of a static
 * table (tools/builtin.c, one file per tool); an MCP server's tools become rows of the same kind
 * at run time, with row data pointing at the server.
 *
 * A tool never reaches into the daemon. agentd hands each call a context (struct tool_ctx): the
 * agent's definition, its session, and an environment of services (struct tool_env) that run the
 * work: a cell in the agent session's sandboxed interpreter, a web fetch, the memory store. A
 * service answers through a callback on the loop thread; the tool turns the answer into the
 * observation the model reads and calls tool_call_done() exactly once.
 *
 * Adding a tool: write tools/<name>.c with its `const struct tool_def tool_<name>` row and add
 * that row to builtin.c's table. Nothing else changes: the runner, the catalogue (tools.list)
 * and cancellation all go through the row.
 *
 * Threads: everything here runs on the daemon's loop thread.
 */
#ifndef TOOLS_TOOLS_H
#define TOOLS_TOOLS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../base/base.h"
#include "../protocol/protocol.h"
#include "../sandbox/sandbox.h"
#include "fetch.h"

struct tool_call;

/* ---- services a tool may use (implemented by agentd) ---- */

/* A cell's result; strings are valid UTF-8 (invalid bytes replaced). Borrowed for the call. */
typedef void (*tool_cell_fn)(struct tool_call *call, const struct sbx_result *res,
                             const struct ag_err *err);
/* A fetch's result (res->err_code set on failure). Borrowed for the call. */
typedef void (*tool_fetch_fn)(struct tool_call *call, const struct fetch_result *res);
/* memory: add gives no strings; search gives n texts, best first. err set on failure. */
typedef void (*tool_memory_fn)(struct tool_call *call, char *const *texts, size_t n,
                               const struct ag_err *err);

struct tool_env {
    /* Runs Python code as a cell of the agent session's interpreter (created on first use with
     * the agent's sandbox limits), with timeout_ms (0: none). */
    int (*cell)(struct tool_call *call, const char *code, int64_t timeout_ms, tool_cell_fn done,
                struct ag_err *err);
    /* Fetches url with the agent's browse policy applied to o. */
    int (*fetch)(struct tool_call *call, const char *url, const struct fetch_opts *o,
                 tool_fetch_fn done, struct ag_err *err);
    /* Archival memory of the agent. */
    int (*memory_add)(struct tool_call *call, const char *text, tool_memory_fn done,
                      struct ag_err *err);
    int (*memory_search)(struct tool_call *call, const char *query, int limit, tool_memory_fn done,
                         struct ag_err *err);
    /* Stops the service call in flight (a cell: its interpreter is killed; a fetch: cancelled);
     * its callback still comes, with an error. */
    void (*cancel)(struct tool_call *call);
    void *ud; /* agentd's */
};

/* What a call may use. Borrowed: lives as long as the call. */
struct tool_ctx {
    const char *agent;             /* the agent's name */
    const char *session;           /* its session id (also its sandbox session's name) */
    const char *run_id;            /* the run making the call */
    const struct proto_val *spec;  /* the agent's normalized definition */
    const struct proto_val *entry; /* the definition's entry for this tool ({"name": ...}) */
    const struct tool_env *env;    /* services */
};

/* ---- the ops table ---- */
struct tool_def;

struct tool_ops {
    /* Starts call (arguments already checked against the schema). Returns 0 and later calls
     * tool_call_done(), or a negative AG_E code with err set (the call failed at once; the
     * caller reports err to the model). */
    int (*start)(struct tool_call *call, struct ag_err *err);
    /* Stops a started call; tool_call_done() still follows. NULL: env->cancel. */
    void (*cancel)(struct tool_call *call);
};

struct tool_def {
    const char *name;           /* unique; "server.tool" for MCP tools */
    const char *description;    /* for the model */
    const char *parameters;     /* JSON Schema of the arguments object (compact JSON text) */
    const struct tool_ops *ops; /* how it runs */
    void *data;                 /* row data (an MCP server), NULL for built-ins */
};

/* One call of a tool (owned by the caller, who fills the first fields). */
struct tool_call {
    const struct tool_def *def;   /* the tool */
    const struct tool_ctx *ctx;   /* what it may use */
    const struct proto_val *args; /* the checked arguments object (borrowed) */
    /* Reports the observation (ok false for a failure the model should read); called once. */
    void (*done)(struct tool_call *call, bool ok, const char *output);
    void *ud;      /* the caller's */
    void *state;   /* the tool's own, for the call's life */
    int64_t n_arg; /* a tool's scratch integer */
};

/* Called by a tool when its call ends (output is copied by the receiver). The output is made
 * valid UTF-8 here, once for every tool, since it can quote what a sandbox, an MCP server or a
 * web page wrote: each byte that starts no valid character becomes U+FFFD. */
static inline void tool_call_done(struct tool_call *call, bool ok, const char *output)
{
    size_t n = strlen(output);
    if (ag_utf8_valid(output, n)) {
        call->done(call, ok, output);
        return;
    }
    struct ag_buf b;
    ag_buf_init(&b);
    ag_utf8_append(&b, output, n);
    ag_buf_putc(&b, '\0');
    call->done(call, ok, b.data);
    ag_buf_release(&b);
}
/* The observation of a failure: "error: " and the formatted message (caller frees). */
char *tool_error_text(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* tool_call_done with a formatted "error: ..." observation. */
void tool_call_fail(struct tool_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Stops call through its row's cancel, or the environment's. */
void tool_call_cancel(struct tool_call *call);
/* The string argument key of call, or fallback. */
const char *tool_arg_str(const struct tool_call *call, const char *key, const char *fallback);

/* ---- the built-in rows ---- */

/* The tool called name, or NULL. */
const struct tool_def *tools_find(const char *name);
/* Every built-in tool. */
const struct tool_def *const *tools_all(size_t *n);
/* Parses a call's arguments (JSON text; NULL or "" is {}) and checks them against the tool's
 * schema. 0 with *args set (an object; free with proto_val_free), or AG_EPARAMS with a message
 * naming the argument at fault, written for the model to fix its call. */
int tools_check_args(const struct tool_def *t, const char *arguments, struct proto_val **args,
                     struct ag_err *err);

/* The built-in rows, one per file. */
extern const struct tool_def tool_python, tool_shell, tool_read_file, tool_write_file,
    tool_list_files, tool_fetch_url, tool_remember, tool_recall, tool_now;

#endif
