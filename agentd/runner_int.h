/*
 * runner_int.h - what the agent runner's files share (agentd/runner.c: the run's life and the
 * run.* methods; run_log.c: its events, their storage and delivery; run_tools.c: its tool
 * calls). Every function here runs on the loop thread.
 */
#ifndef AGENTD_RUNNER_INT_H
#define AGENTD_RUNNER_INT_H

#include "agentd.h"

enum run_state { RS_STARTING, RS_GENERATING, RS_TOOL, RS_ENDING, RS_DONE };

struct ev {
    int64_t seq;
    char *type;
    char *payload; /* JSON object text */
};

struct sub {
    struct sub *next;
    struct conn *c;
};

struct run {
    struct run *prev, *next; /* live runs */
    struct runner *R;
    enum run_state st;
    char uid[32], session[32], agent[80];
    struct proto_val *spec;     /* the agent's normalized definition */
    struct proto_val *messages; /* the conversation, in engine.generate form */
    struct proto_val *tools;    /* engine.generate tools */
    struct conn ic;             /* internal caller: engine, sandbox, memory methods */

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
    int notifying;        /* send_event is walking subs */
    struct conn *owner;   /* foreground caller, until answered */
    struct proto_req req; /* its request */
    bool stream;

    /* progress and budgets */
    int steps, n_tool_calls, max_steps, max_tool_calls;
    int64_t max_tokens, max_wall_s, prompt_tokens, completion_tokens;
    int64_t started_ms;              /* monotonic */
    int64_t created_ms;              /* wall clock, as stored */
    double gen_ms, ttft_ms, tool_ms; /* engine and tool time, for the overhead figure */
    uv_timer_t wall_timer;
    char tool_choice[72]; /* first step only; "" for auto */
    char step_id[64];     /* engine request_id of the step in flight */

    /* the step's tool calls */
    struct proto_val *calls;
    size_t call_i;
    int64_t tool_started_us;
    const struct tool_def *tool; /* running */
    const char *call_id, *call_name;

    /* the end */
    bool cancel;            /* run.cancel or owner gone */
    bool wall_hit;          /* max_wall_s */
    bool shutdown;          /* agentd is stopping */
    int hist_from, hist_to; /* r->messages[hist_from, hist_to): the session's earlier messages */
    int dropped;            /* earlier messages left out to fit the context */
    int attempts;           /* engine requests made, for their ids */
    bool no_grammar;        /* tool calls are not constrained (run.create grammar: false) */
    char end_state[16];     /* completed, failed, cancelled */
    char end_reason[32];    /* answer, max_steps, ... */
    char *end_error;        /* failed: why */
    char *output;           /* completed: the answer */
    int handles_open;       /* timers not yet closed */
};

struct runner {
    struct agentd *d;
    struct run *live;
    int n_live;
};

/* The agent definition's obj.key. */
static inline const struct proto_val *run__spec_get(const struct run *r, const char *obj,
                                                    const char *key)
{
    return proto_get(proto_get(r->spec, obj), key);
}

/* ---- the run (runner.c) ---- */
/* The next generation step, or the end when a budget is spent. */
void run__step(struct run *r);
/* Ends the run (state completed, failed or cancelled; why); its final event follows. */
void run__end(struct run *r, const char *state, const char *reason, const char *error);
/* Ends the run when a cancel, the wall clock or shutdown stopped it; true when it did. */
bool run__stopped(struct run *r);
/* Every event is stored and sent: answers the foreground caller, drops subscribers, frees. */
void run__finish(struct run *r);
/* For calls whose answers nobody needs (cancels, kills). */
extern const struct conn_sink run__ignore_sink;

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
void run__unsubscribe(struct run *r, struct conn *c);
void run__purge_subs(struct run *r);
/* Stores what is new (one transaction), then sends it; at most one write in flight. */
void run__flush(struct run *r);
/* Now for a step event, within FLUSH_MS for text. */
void run__flush_soon(struct run *r, bool now);
struct proto_val *run__json(const struct run *r);
struct proto_val *run__json_stored(const struct mem_run *m);

/* ---- tools (run_tools.c) ---- */
/* Runs the step's next tool call, or the next step when none is left. */
void run__next_tool(struct run *r);
/* The answer of the method a tool called. */
void run__tool_reply(struct run *r, const struct proto_val *res, const struct ag_err *err);

#endif
