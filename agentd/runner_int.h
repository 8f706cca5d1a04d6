/*
 * runner_int.h - what the agent runner's files share (agentd/runner.c: the run's state machine;
 * run_methods.c: the run.* methods; run_log.c: its events, their storage and delivery;
 * run_tools.c: the services its tools use). Every function here runs on the loop thread.
 */
#ifndef AGENTD_RUNNER_INT_H
#define AGENTD_RUNNER_INT_H

#include "agentd.h"

#include "../tools/tools.h"

/* Where a live run is. */
enum run_state {
    RS_STARTING,   /* loading the agent and the session, or between two calls */
    RS_GENERATING, /* the model is writing */
    RS_TOOL,       /* a tool call runs */
    RS_ENDING,     /* the final event is being stored */
    RS_DONE,       /* stored and answered; freed once its timers close */
};

/* How a run ended (stored as its name). */
enum run_end { RUN_RUNNING = 0, RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED };
const char *run_end_name(enum run_end e); /* "running", "completed", "failed", "cancelled" */

struct ev {
    int64_t seq;
    char *type;
    char *payload; /* JSON object text */
};

/* Someone who gets a run's events once they are stored: a connection (run.event
 * notifications) or a watcher callback. */
struct sub {
    struct sub *next;
    struct conn *c;                                                /* or NULL */
    void (*fn)(void *ud, const struct run *r, const struct ev *e); /* when c is NULL */
    void *ud;                                                      /* fn's; NULL once dropped */
};

/* One message of the conversation the model reads. Strings owned. */
struct run_msg {
    enum eng_chat_role role;
    char *content;
    struct eng_chat_call *calls; /* assistant: n_calls calls (id, name, arguments owned) */
    size_t n_calls;
    char *tool_call_id; /* tool: the call answered */
    char *name;         /* tool: the tool's name */
};

/* One tool call the model made. Strings owned. */
struct run_call {
    char *id, *name, *arguments;
};

struct run {
    struct ag_list node; /* in runner.live */
    struct runner *R;
    enum run_state st;
    char uid[32], session[32], agent[80];
    struct proto_val *spec; /* the agent's normalized definition */
    struct run_msg *conv;   /* the conversation: system prompt, history, this run's turns */
    size_t n_conv, cap_conv;
    const struct tool_def **tools; /* the agent's tools, as offered to the model */
    size_t n_tools;
    uint64_t mcp_wait; /* waiting for the agent's MCP servers (mcpd_tools), or 0 */

    /* events */
    struct ev *evs;
    size_t n_evs, cap_evs;
    int64_t persisted; /* events committed and sent */
    bool writing;      /* a flush is in flight */
    struct ag_buf delta;
    struct mem_message *msgs; /* session messages for the next flush */
    size_t n_msgs, cap_msgs;
    uv_timer_t flush_timer;
    bool flush_armed;

    /* who listens */
    struct sub *subs;
    int notifying;                 /* send_event is walking subs */
    struct conn *owner;            /* foreground caller, until answered */
    struct proto_req req;          /* its request */
    bool stream;                   /* the owner also gets the events */
    bool background;               /* answered at once */
    const struct run_watch *watch; /* typed creator (runner_create), or NULL */
    void *watch_ud;

    /* progress and budgets */
    int steps, n_tool_calls, max_steps, max_tool_calls;
    int64_t max_tokens, max_wall_s, prompt_tokens, completion_tokens;
    int64_t started_ms;              /* monotonic */
    int64_t created_ms;              /* wall clock, as stored */
    double gen_ms, ttft_ms, tool_ms; /* engine and tool time, for the overhead figure */
    uv_timer_t wall_timer;
    char tool_choice[72]; /* first step only; "" for auto */
    char step_id[64];     /* name of the generation in flight */
    uint64_t gen_id;      /* its id, for cancel */

    /* the step's tool calls */
    struct run_call *calls;
    size_t n_calls, call_i;
    int64_t tool_started_us;
    struct tool_call call;  /* the call running */
    struct tool_ctx tctx;   /* what it may use */
    struct proto_val *args; /* its checked arguments */
    bool in_start;          /* inside the tool's start(): its done is deferred */
    bool call_over;         /* the tool reported (deferred result below) */
    bool call_ok;           /* ... ok */
    char *call_output;      /* ... observation */
    uint64_t env_id;        /* the service call in flight (fetch id) */
    int env_kind;           /* which service (run_tools.c) */

    /* the end */
    bool cancel;               /* run.cancel or owner gone */
    bool wall_hit;             /* max_wall_s */
    bool shutdown;             /* agentd is stopping */
    size_t hist_from, hist_to; /* conv[hist_from, hist_to): the session's earlier messages */
    int dropped;               /* earlier messages left out to fit the context */
    int attempts;              /* model requests made, for their names */
    bool no_grammar;           /* tool calls are not constrained (run.create grammar: false) */
    enum run_end end;          /* completed, failed, cancelled */
    char end_reason[32];       /* answer, max_steps, ... */
    char *end_error;           /* failed: why */
    char *output;              /* completed: the answer */
    int handles_open;          /* timers not yet closed */
};

struct runner {
    struct agentd *d;
    struct ag_list live; /* runs not yet finished (struct run.node) */
    int n_live;
    struct run_model model;              /* who thinks */
    struct tool_env env;                 /* what tools may use */
    const struct tool_def *const *extra; /* tool rows beside the built-ins (tests) */
    size_t n_extra;
    uint64_t n_seeds; /* for seeds of requests that name none */
};

/* The agent definition's obj.key. */
static inline const struct proto_val *run__spec_get(const struct run *r, const char *obj,
                                                    const char *key)
{
    return proto_get(proto_get(r->spec, obj), key);
}

/* ---- the run (runner.c) ---- */
/* Stops what runs now (generation or a tool); its callback then ends the run. */
void run__interrupt(struct run *r);
/* Cancels r (a no-op once it is ending): what runs is interrupted, the run ends "cancelled". */
void run__cancel(struct run *r);
struct run *run__find_live(struct runner *R, const char *uid);

/* ---- events (run_log.c) ---- */
/* Appends an event (payload taken over); pending text deltas become an event first. */
void run__event(struct run *r, const char *type, struct proto_val *payload);
/* The text deltas gathered so far become one event. */
void run__take_delta(struct run *r);
/* A message for the session, written with the next flush. */
void run__add_msg(struct run *r, const char *role, const char *content, const char *tool_calls,
                  const char *call_id, const char *name, int64_t n_tokens);
/* The run.event notification of one event: {run_id, seq, type, ...payload}. */
struct proto_val *run__event_params(const char *run_id, int64_t seq, const char *type,
                                    const char *payload);
void run__send_event(struct run *r, const struct ev *e);
void run__subscribe(struct run *r, struct conn *c);
void run__watch(struct run *r, void (*fn)(void *, const struct run *, const struct ev *), void *ud);
void run__unsubscribe(struct run *r, struct conn *c);
void run__purge_subs(struct run *r);
/* Stores what is new (one transaction), then sends it; at most one write in flight. */
void run__flush(struct run *r);
/* Now for a step event, within FLUSH_MS for text. */
void run__flush_soon(struct run *r, bool now);
/* Every event is stored and sent: answers the creator, drops subscribers, frees. */
void run__finish(struct run *r);
struct proto_val *run__json(const struct run *r);
struct proto_val *run__json_stored(const struct mem_run *m);

/* ---- services for tools (run_tools.c) ---- */
/* The daemon's tool environment (sandbox cells, fetches, memory). */
void run__env_init(struct tool_env *env, struct agentd *d);

#endif
