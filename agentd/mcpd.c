/*
 * mcpd.c - the MCP servers agents use (tools/mcp.h does the protocol): one client per agent and
 * server name, started when a run of that agent first needs it and kept for the next runs, and
 * the servers' tools as rows of the tools' ops table ("server.tool"), so the runner calls them
 * like any built-in: with the same argument checks, output cap, cancel and wall clock.
 *
 * Life of a server. A run's start asks for the agent's servers (mcpd_tools); the ones not
 * running are started, and the run goes on once every one is ready or has failed (a failed
 * server is named in the run's events; the run goes on without its tools). A server whose
 * definition changed (the agent was updated) is replaced: the old client stops, its rows stay
 * allocated until the daemon stops, so a run still holding them reads valid memory and gets
 * "the server stopped" from a call. Restarts after a crash are the client's (backoff in
 * tools/mcp.c); each change of state becomes an `mcp.server` event of the agent's live runs.
 *
 * Sandboxes. A definition with `sandbox:` (an object once normalized) runs its server in the
 * daemon's sandbox context (sandboxes.c) with the limits, network and paths it names; where the
 * host cannot make sandboxes such a server fails to start, never runs unconfined. sbxd_stop,
 * after mcpd_stop, kills what is left of them.
 *
 * Threads: the loop thread only.
 */
#include "runner_int.h"

#include "../sandbox/sandbox.h"
#include "../tools/mcp.h"

#include <stdlib.h>
#include <string.h>

#define MCP_TOOL_OUT_MAX 65536 /* bytes of a call's output kept (the runner shows 16000) */

struct msrv;

/* One tool row's data: which server, which of its tools. */
struct mtool {
    struct msrv *s;
    char *tool;
};

/* The rows of one listing (a later listing makes a new set; old ones stay until stop). */
struct mrows {
    struct mrows *next;
    struct tool_def *rows; /* n rows: names "server.tool", strings owned */
    struct mtool *data;    /* n */
    size_t n;
};

struct msrv {
    struct msrv *next;
    struct mcpd *m;
    char agent[80];          /* whose */
    char name[40];           /* the definition's name: the tools' prefix */
    char *def_json;          /* the definition it was started from */
    struct proto_val *allow; /* tools: the names to offer, or NULL for all */
    int64_t timeout_ms;      /* per call */
    struct mcp_client *c;    /* NULL once stopped (replaced, or failed to start) */
    enum mcp_state st;       /* last state heard */
    char why[512];           /* last failure */
    struct mrows *sets;      /* sets[0]: the current rows */
};

/* A run waiting for its agent's servers. */
struct mwait {
    struct mwait *next;
    uint64_t id;
    char agent[80];
    struct msrv **need; /* the servers it waits for */
    size_t n_need;
    mcpd_ready_fn ready;
    void *ud;
};

struct mcpd {
    struct agentd *d;
    struct msrv *servers;
    struct mwait *waits;
    uint64_t next_wait;
    uv_timer_t kick; /* answers new waits from the loop */
};

/* ---- tool rows ---- */

struct mcall {
    struct tool_call *call;
    uint64_t id;
};

static void call_done(void *ud, const struct mcp_result *res)
{
    struct tool_call *call = ud;
    const char *text = res->text;
    if (res->err_code) {
        tool_call_fail(call, "%s", text);
        return;
    }
    if ((!text || !*text) && res->structured_json) text = res->structured_json;
    tool_call_done(call, res->ok, text && *text ? text : "(no output)");
}

static int call_start(struct tool_call *call, struct ag_err *err)
{
    const struct mtool *t = call->def->data;
    struct msrv *s = t->s;
    if (!s->c)
        return ag_err_set(err, AG_ECLOSED, "the MCP server '%s' is not running%s%s", s->name,
                          s->why[0] ? ": " : "", s->why);
    int64_t timeout_ms = proto_int(proto_get(call->ctx->entry, "timeout_ms"), s->timeout_ms);
    char *args = proto_print(call->args);
    uint64_t id = 0;
    int rc = mcp_call(s->c, t->tool, args, timeout_ms, MCP_TOOL_OUT_MAX, call_done, call, &id, err);
    free(args);
    if (rc == 0) call->n_arg = (int64_t)id;
    return rc;
}

static void call_cancel(struct tool_call *call)
{
    const struct mtool *t = call->def->data;
    if (t->s->c) mcp_cancel(t->s->c, (uint64_t)call->n_arg);
}

static const struct tool_ops mcp_ops = {call_start, call_cancel};

static bool allowed(const struct msrv *s, const char *tool)
{
    if (!s->allow) return true;
    for (size_t i = 0; i < proto_len(s->allow); i++)
        if (proto_str(proto_at(s->allow, i)) && strcmp(proto_str(proto_at(s->allow, i)), tool) == 0)
            return true;
    return false;
}

/* The server's tools became known (again): a new set of rows. */
static void relist(struct msrv *s)
{
    const struct mcp_tool *tl;
    size_t n = mcp_client_tools(s->c, &tl);
    struct mrows *set = ag_calloc(1, sizeof(*set));
    set->rows = ag_calloc(n ? n : 1, sizeof(*set->rows));
    set->data = ag_calloc(n ? n : 1, sizeof(*set->data));
    for (size_t i = 0; i < n; i++) {
        if (!allowed(s, tl[i].name)) continue;
        struct mtool *t = &set->data[set->n];
        t->s = s;
        t->tool = ag_strdup(tl[i].name);
        set->rows[set->n] = (struct tool_def){
            .name = ag_asprintf("%s.%s", s->name, tl[i].name),
            .description = ag_strdup(tl[i].description),
            .parameters = ag_strdup(tl[i].input_schema_json && *tl[i].input_schema_json
                                        ? tl[i].input_schema_json
                                        : "{\"type\":\"object\"}"),
            .ops = &mcp_ops,
            .data = t,
        };
        set->n++;
    }
    set->next = s->sets;
    s->sets = set;
}

/* ---- waits ---- */

static bool settled(const struct msrv *s)
{
    return !s->c || s->st == MCP_READY || s->st == MCP_FAILED || s->st == MCP_RESTARTING;
}

/* Answers the waits whose servers have all settled. */
static void check_waits(struct mcpd *m)
{
    for (struct mwait **pp = &m->waits; *pp;) {
        struct mwait *w = *pp;
        bool ok = true;
        for (size_t i = 0; i < w->n_need && ok; i++) ok = settled(w->need[i]);
        if (!ok) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        size_t n = 0;
        for (size_t i = 0; i < w->n_need; i++)
            if (w->need[i]->sets) n += w->need[i]->sets->n;
        const struct tool_def **rows = ag_calloc(n ? n : 1, sizeof(*rows));
        struct ag_buf why;
        ag_buf_init(&why);
        n = 0;
        for (size_t i = 0; i < w->n_need; i++) {
            struct msrv *s = w->need[i];
            if (s->sets && s->c && s->st != MCP_FAILED)
                for (size_t k = 0; k < s->sets->n; k++) rows[n++] = &s->sets->rows[k];
            else
                ag_buf_printf(&why, "%sMCP server '%s' is unavailable: %s", why.len ? "; " : "",
                              s->name, s->why[0] ? s->why : "it did not start");
        }
        ag_buf_putc(&why, '\0');
        w->ready(w->ud, rows, n, why.len > 1 ? why.data : NULL);
        ag_buf_release(&why);
        free(rows);
        free(w->need);
        free(w);
    }
}

static void on_state(void *ud, struct mcp_client *c, enum mcp_state st, const char *msg)
{
    struct msrv *s = ud;
    (void)c;
    s->st = st;
    if (st == MCP_READY) relist(s);
    if ((st == MCP_FAILED || st == MCP_RESTARTING) && msg)
        snprintf(s->why, sizeof(s->why), "%s", msg);
    ag_info("MCP server '%s' of agent %s: %s%s%s", s->name, s->agent, mcp_state_name(st),
            msg ? ": " : "", msg ? msg : "");
    runner_mcp_state(s->m->d, s->agent, s->name, mcp_state_name(st), msg);
    check_waits(s->m);
}

/* ---- servers ---- */

static void on_kick(uv_timer_t *t)
{
    check_waits(t->data);
}

static struct msrv *find(struct mcpd *m, const char *agent, const char *name)
{
    for (struct msrv *s = m->servers; s; s = s->next)
        if (s->c && strcmp(s->agent, agent) == 0 && strcmp(s->name, name) == 0) return s;
    return NULL;
}

/* A NULL-terminated array of the strings of a list (borrowed), or of "K=V" for an object. */
static const char **strings(const struct proto_val *v, char ***owned)
{
    size_t n = proto_len(v);
    const char **a = ag_calloc(n + 1, sizeof(*a));
    *owned = NULL;
    if (proto_type(v) == PROTO_OBJECT) {
        *owned = ag_calloc(n + 1, sizeof(**owned));
        size_t i = 0;
        for (const struct proto_val *m = proto_child(v); m; m = proto_next(m), i++) {
            (*owned)[i] = ag_asprintf("%s=%s", proto_key(m), proto_str(m) ? proto_str(m) : "");
            a[i] = (*owned)[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) a[i] = proto_str(proto_at(v, i));
    }
    return a;
}

static struct msrv *start_server(struct mcpd *m, const char *agent, const struct proto_val *def)
{
    struct msrv *s = ag_calloc(1, sizeof(*s));
    s->m = m;
    snprintf(s->agent, sizeof(s->agent), "%s", agent);
    snprintf(s->name, sizeof(s->name), "%s", proto_get_str(def, "name"));
    s->def_json = proto_print(def);
    if (proto_type(proto_get(def, "tools")) == PROTO_ARRAY)
        s->allow = proto_val_dup(proto_get(def, "tools"));
    s->timeout_ms = proto_int(proto_get(def, "timeout_ms"), 60000);
    s->st = MCP_STARTING;
    s->next = m->servers;
    m->servers = s;

    char **args_owned, **env_owned, **paths_owned;
    const char **args = strings(proto_get(def, "args"), &args_owned);
    const char **env = strings(proto_get(def, "env"), &env_owned);
    const struct proto_val *box = proto_get(def, "sandbox");
    bool boxed = proto_type(box) == PROTO_OBJECT;
    const char **paths = strings(proto_get(box, "paths"), &paths_owned);
    struct sbx_limits lim;
    sbx_limits_default(&lim);
    if (boxed) {
        lim.memory_bytes = proto_int(proto_get(box, "memory_mb"), 512) << 20;
        lim.pids = proto_int(proto_get(box, "pids"), lim.pids);
        lim.cpu_percent = proto_int(proto_get(box, "cpu_percent"), lim.cpu_percent);
        lim.workspace_bytes = proto_int(proto_get(box, "disk_mb"), 64) << 20;
    }
    struct mcp_server_cfg cfg = {
        .name = s->name,
        .command = proto_get_str(def, "command"),
        .args = args,
        .env = env,
        .cwd = proto_get_str(def, "cwd"),
        .url = proto_get_str(def, "url"),
        .start_timeout_ms = proto_int(proto_get(def, "start_timeout_ms"), 0),
        .sandbox = boxed ? sbxd_ctx(m->d) : NULL,
        .sandbox_limits = &lim,
        .sandbox_paths = paths,
        .sandbox_network = boxed && proto_bool(proto_get(box, "network"), false),
    };
    struct ag_err err = {0};
    if (boxed && !cfg.sandbox) {
        ag_err_set(&err, AG_EUNSUPPORTED,
                   "MCP server '%s' asks for a sandbox, and this host cannot make sandboxes "
                   "(see agentd's log)",
                   s->name);
        snprintf(s->why, sizeof(s->why), "%s", err.msg);
        s->c = NULL;
        s->st = MCP_FAILED;
        ag_warn("agent %s: %s", agent, err.msg);
    } else if (mcp_client_new(m->d->loop, &cfg, on_state, s, &s->c, &err) != 0) {
        snprintf(s->why, sizeof(s->why), "%s", err.msg);
        s->c = NULL;
        s->st = MCP_FAILED;
        ag_warn("agent %s: %s", agent, err.msg);
    }
    for (size_t i = 0; env_owned && env_owned[i]; i++) free(env_owned[i]);
    free(env_owned);
    free(args_owned);
    free(paths_owned);
    free(args);
    free(env);
    free(paths);
    return s;
}

int mcpd_tools(struct agentd *d, const char *agent, const struct proto_val *list,
               mcpd_ready_fn ready, void *ud, uint64_t *wait_id, struct ag_err *err)
{
    struct mcpd *m = d->mcp;
    if (!m) return ag_err_set(err, AG_EUNSUPPORTED, "MCP servers are not available here");
    struct mwait *w = ag_calloc(1, sizeof(*w));
    w->id = ++m->next_wait;
    snprintf(w->agent, sizeof(w->agent), "%s", agent);
    w->need = ag_calloc(proto_len(list) + 1, sizeof(*w->need));
    w->ready = ready;
    w->ud = ud;
    for (size_t i = 0; i < proto_len(list); i++) {
        const struct proto_val *def = proto_at(list, i);
        const char *name = proto_get_str(def, "name");
        if (!name) continue;
        struct msrv *s = find(m, agent, name);
        char *json = proto_print(def);
        if (s && strcmp(s->def_json, json) != 0) {
            /* The agent was updated: the old server stops, its rows stay valid. */
            ag_info("MCP server '%s' of agent %s: definition changed, restarting", name, agent);
            mcp_client_free(s->c);
            s->c = NULL;
            snprintf(s->why, sizeof(s->why), "replaced by a newer definition");
            s = NULL;
        }
        free(json);
        if (!s) s = start_server(m, agent, def);
        w->need[w->n_need++] = s;
    }
    w->next = m->waits;
    m->waits = w;
    *wait_id = w->id;
    /* Answered from the loop, never inside this call (the servers may all be ready). */
    uv_timer_start(&m->kick, on_kick, 0, 0);
    return 0;
}

void mcpd_forget(struct agentd *d, uint64_t wait_id)
{
    struct mcpd *m = d->mcp;
    for (struct mwait **pp = m ? &m->waits : NULL; pp && *pp; pp = &(*pp)->next)
        if ((*pp)->id == wait_id) {
            struct mwait *w = *pp;
            *pp = w->next;
            free(w->need);
            free(w);
            return;
        }
}

void mcpd_start(struct agentd *d)
{
    struct mcpd *m = ag_calloc(1, sizeof(*m));
    m->d = d;
    uv_timer_init(d->loop, &m->kick);
    m->kick.data = m;
    d->mcp = m;
}

static void free_server(struct msrv *s)
{
    while (s->sets) {
        struct mrows *set = s->sets;
        s->sets = set->next;
        for (size_t i = 0; i < set->n; i++) {
            free((char *)set->rows[i].name);
            free((char *)set->rows[i].description);
            free((char *)set->rows[i].parameters);
            free(set->data[i].tool);
        }
        free(set->rows);
        free(set->data);
        free(set);
    }
    proto_val_free(s->allow);
    free(s->def_json);
    free(s);
}

static void on_kick_closed(uv_handle_t *h)
{
    struct mcpd *m = h->data;
    while (m->servers) {
        struct msrv *s = m->servers;
        m->servers = s->next;
        free_server(s);
    }
    free(m);
}

void mcpd_stop(struct agentd *d)
{
    struct mcpd *m = d->mcp;
    if (!m) return;
    /* Runs still waiting get their answer: no tools. */
    for (struct msrv *s = m->servers; s; s = s->next)
        if (s->c) {
            mcp_client_free(s->c); /* calls in flight end now, with AG_ESHUTDOWN */
            s->c = NULL;
            snprintf(s->why, sizeof(s->why), "agentd is stopping");
        }
    check_waits(m);
    d->mcp = NULL;
    uv_close((uv_handle_t *)&m->kick, on_kick_closed);
}
