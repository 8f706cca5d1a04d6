/*
 * run_tools.c - the services the daemon lends to tools (struct tool_env, tools/tools.h): a cell
 * in the agent session's sandboxed interpreter (sandboxes.c), a web fetch with the daemon's SSRF
 * exceptions (web.c), and the agent's archival memory (a job for the storage thread). Each
 * adapts a tool's request to the daemon's typed service and brings the answer back to the tool
 * on the loop thread. The call in flight is recorded on its run (env_kind, env_id), so a cancel
 * reaches the right service.
 */
#include "runner_int.h"

#include <stdlib.h>
#include <string.h>

enum { ENV_NONE, ENV_CELL, ENV_FETCH, ENV_MEMORY };

/* The run a tool call belongs to. */
static struct run *run_of(struct tool_call *call)
{
    return call->ud;
}

static struct agentd *daemon_of(struct tool_call *call)
{
    return call->ctx->env->ud;
}

/* ---- cells ---- */

struct cell_wait {
    struct tool_call *call;
    tool_cell_fn done;
};

static void cell_done(void *ud, const struct sbx_result *res, const struct ag_err *err)
{
    struct cell_wait *w = ud;
    struct tool_call *call = w->call;
    tool_cell_fn done = w->done;
    free(w);
    run_of(call)->env_kind = ENV_NONE;
    if (err && err->code == AG_ESANDBOX) {
        /* A dead interpreter: drop the session so the next call makes a fresh one. */
        sbxd_kill(daemon_of(call), call->ctx->session);
    }
    done(call, res, err);
}

static int env_cell(struct tool_call *call, const char *code, int64_t timeout_ms, tool_cell_fn done,
                    struct ag_err *err)
{
    const struct proto_val *sb = proto_get(call->ctx->spec, "sandbox");
    struct sbx_limits lim;
    sbx_limits_default(&lim);
    lim.memory_bytes = proto_int(proto_get(sb, "memory_mb"), 512) << 20;
    lim.pids = proto_int(proto_get(sb, "pids"), 64);
    lim.workspace_bytes = proto_int(proto_get(sb, "disk_mb"), 256) << 20;
    struct cell_wait *w = ag_calloc(1, sizeof(*w));
    w->call = call;
    w->done = done;
    int rc =
        sbxd_cell(daemon_of(call), call->ctx->session, code, timeout_ms, &lim, cell_done, w, err);
    if (rc < 0) {
        free(w);
        return rc;
    }
    run_of(call)->env_kind = ENV_CELL;
    return 0;
}

/* ---- fetches ---- */

struct fetch_wait {
    struct tool_call *call;
    tool_fetch_fn done;
};

static void fetch_done(void *ud, struct fetch_result *res)
{
    struct fetch_wait *w = ud;
    struct tool_call *call = w->call;
    tool_fetch_fn done = w->done;
    free(w);
    run_of(call)->env_kind = ENV_NONE;
    done(call, res);
    fetch_result_release(res);
}

static int env_fetch(struct tool_call *call, const char *url, const struct fetch_opts *o,
                     tool_fetch_fn done, struct ag_err *err)
{
    struct fetch_wait *w = ag_calloc(1, sizeof(*w));
    w->call = call;
    w->done = done;
    uint64_t id = webd_fetch(daemon_of(call), url, o, fetch_done, w);
    if (!id) {
        free(w);
        return ag_err_set(err, AG_EUNSUPPORTED, "the web client is not running");
    }
    run_of(call)->env_kind = ENV_FETCH;
    run_of(call)->env_id = id;
    return 0;
}

/* ---- memory ---- */

struct mem_wait {
    struct tool_call *call;
    tool_memory_fn done;
};

static void memory_done(void *ud, const struct memd_result *res, const struct ag_err *err)
{
    struct mem_wait *w = ud;
    struct tool_call *call = w->call;
    tool_memory_fn done = w->done;
    free(w);
    run_of(call)->env_kind = ENV_NONE;
    done(call, res->texts, res->n, err);
}

static int memory_call(struct tool_call *call, bool search, const char *text, int limit,
                       tool_memory_fn done, struct ag_err *err)
{
    if (!*text) return ag_err_set(err, AG_EPARAMS, "the text must not be empty");
    struct mem_wait *w = ag_calloc(1, sizeof(*w));
    w->call = call;
    w->done = done;
    run_of(call)->env_kind = ENV_MEMORY;
    if (search)
        memd_search(daemon_of(call), call->ctx->agent, text,
                    (size_t)(limit < 1     ? 1
                             : limit > 100 ? 100
                                           : limit),
                    memory_done, w);
    else
        memd_add(daemon_of(call), call->ctx->agent, text, memory_done, w);
    return 0;
}

static int env_memory_add(struct tool_call *call, const char *text, tool_memory_fn done,
                          struct ag_err *err)
{
    return memory_call(call, false, text, 0, done, err);
}

static int env_memory_search(struct tool_call *call, const char *query, int limit,
                             tool_memory_fn done, struct ag_err *err)
{
    return memory_call(call, true, query, limit, done, err);
}

/* ---- cancel ---- */

static void env_cancel(struct tool_call *call)
{
    struct run *r = run_of(call);
    if (r->env_kind == ENV_CELL)
        /* The sandbox session dies with what runs in it; the next call starts a fresh one. */
        sbxd_kill(daemon_of(call), call->ctx->session);
    else if (r->env_kind == ENV_FETCH)
        webd_cancel(daemon_of(call), r->env_id);
    /* A memory job is one short transaction: it finishes. */
}

void run__env_init(struct tool_env *env, struct agentd *d)
{
    *env = (struct tool_env){
        .cell = env_cell,
        .fetch = env_fetch,
        .memory_add = env_memory_add,
        .memory_search = env_memory_search,
        .cancel = env_cancel,
        .ud = d,
    };
}
