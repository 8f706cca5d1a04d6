/*
 * memory.h - agentd's durable store: one SQLite file in the data dir (WAL mode, numbered
 * migrations run at open) holding agents, sessions and messages, later runs, events and
 * memories (DESIGN.md §6).
 *
 * A struct mem_store is one SQLite connection and is not thread-safe: the daemon gives its
 * writer connection to a single storage thread (agentd/storeq.c), so the event loop never
 * waits on an fsync. Every write is one transaction; when a call returns 0 the change is
 * committed and survives kill -9 of the process.
 */
#ifndef MEM_MEMORY_H
#define MEM_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

#define MEM_DB_FILE "agentd.db" /* file name inside the data dir */

struct mem_store;

/* An agent row. Strings are owned by the struct; release with mem_agent_release. */
struct mem_agent {
    int64_t id;         /* rowid */
    char *name;         /* unique agent name */
    char *spec_json;    /* normalized spec, compact JSON */
    int64_t version;    /* 1 on create, +1 on every update */
    int64_t created_ms; /* Unix epoch ms */
    int64_t updated_ms; /* Unix epoch ms */
};

struct mem_session {
    int64_t id;         /* rowid */
    char *uid;          /* public id, "ses_" + 16 hex digits */
    char *agent;        /* agent name */
    char *title;        /* optional, may be NULL */
    int64_t created_ms; /* Unix epoch ms */
    int64_t updated_ms; /* Unix epoch ms; bumped when a message is appended */
};

struct mem_message {
    int64_t id;         /* rowid, increasing in append order */
    int64_t session_id; /* mem_session.id */
    char *role;         /* "system", "user", "assistant", "tool" */
    char *content;      /* text */
    char *tool_calls;   /* JSON array or NULL */
    char *tool_call_id; /* role "tool": the call it answers, or NULL */
    char *name;         /* role "tool": the tool's name, or NULL */
    int64_t n_tokens;   /* tokens counted by the engine, 0 when unknown */
    int64_t created_ms; /* Unix epoch ms */
};

/* Opens (creating when missing) the database at path and runs pending migrations. */
int mem_store_open(const char *path, struct mem_store **out, struct ag_err *err);
void mem_store_close(struct mem_store *st);
/* Schema version after migrations (the number of the last applied migration). */
int mem_store_schema_version(struct mem_store *st);

/* Agents. create fails with AG_EEXISTS for a duplicate name; update/get/delete with AG_ENOTFOUND.
 */
int mem_agent_create(struct mem_store *st, const char *name, const char *spec_json,
                     struct mem_agent *out, struct ag_err *err);
/* Replaces the spec and bumps the version. When expect_version > 0 and differs from the stored
 * version, fails with AG_EBUSY (optimistic concurrency); 0 skips the check. */
int mem_agent_update(struct mem_store *st, const char *name, const char *spec_json,
                     int64_t expect_version, struct mem_agent *out, struct ag_err *err);
int mem_agent_get(struct mem_store *st, const char *name, struct mem_agent *out,
                  struct ag_err *err);
/* All agents ordered by name; *out is an array of *n agents (free with mem_agent_list_free). */
int mem_agent_list(struct mem_store *st, struct mem_agent **out, size_t *n, struct ag_err *err);
/* Deletes the agent with its sessions and messages. */
int mem_agent_delete(struct mem_store *st, const char *name, struct ag_err *err);
int mem_agent_count(struct mem_store *st, int64_t *n, struct ag_err *err);
void mem_agent_release(struct mem_agent *a);
void mem_agent_list_free(struct mem_agent *list, size_t n);

/* Sessions (AG_ENOTFOUND when the agent or session does not exist). */
int mem_session_create(struct mem_store *st, const char *agent, const char *title,
                       struct mem_session *out, struct ag_err *err);
int mem_session_get(struct mem_store *st, const char *uid, struct mem_session *out,
                    struct ag_err *err);
/* Sessions of one agent (all when agent is NULL), newest first. */
int mem_session_list(struct mem_store *st, const char *agent, struct mem_session **out, size_t *n,
                     struct ag_err *err);
int mem_session_delete(struct mem_store *st, const char *uid, struct ag_err *err);
void mem_session_release(struct mem_session *s);
void mem_session_list_free(struct mem_session *list, size_t n);

/* Messages: appended in order to a session; tool_calls may be NULL. */
int mem_message_append(struct mem_store *st, const char *session_uid, const char *role,
                       const char *content, const char *tool_calls, int64_t n_tokens,
                       struct mem_message *out, struct ag_err *err);
/* Messages of a session in append order, after message id after_id (0 for all), at most limit
 * (0 for no limit). */
int mem_message_list(struct mem_store *st, const char *session_uid, int64_t after_id, size_t limit,
                     struct mem_message **out, size_t *n, struct ag_err *err);
void mem_message_release(struct mem_message *m);
void mem_message_list_free(struct mem_message *list, size_t n);

/* ---- runs and their events (runs.c) ---- */

/* A run: one user input to an agent's session and everything the agent did in reply. */
struct mem_run {
    int64_t id;
    char *uid;     /* public id, "run_" + 16 hex digits */
    char *session; /* session uid */
    char *agent;   /* agent name */
    char *state;   /* running, completed, failed, cancelled, interrupted */
    char *input;   /* the user's message */
    char *output;  /* the final answer, or NULL */
    char *error;   /* why it failed or stopped, or NULL */
    char *reason;  /* machine-readable end: answer, max_steps, max_tool_calls, max_tokens,
                      max_wall_s, cancelled, engine, interrupted, ... (NULL while running) */
    int64_t steps, tool_calls, prompt_tokens, completion_tokens;
    int64_t last_seq;                         /* events persisted */
    int64_t created_ms, updated_ms, ended_ms; /* Unix epoch ms; ended 0 while running */
};

/* An event of a run's log. */
struct mem_event {
    int64_t seq;        /* 1, 2, ... per run */
    char *type;         /* run.created, text.delta, tool_call.done, tool.result, run.completed... */
    char *payload;      /* JSON object */
    int64_t created_ms; /* Unix epoch ms */
};

/* Starts a run on a session (created for agent when session_uid is NULL or "") in one
 * transaction: the run row, the user's message and event 1 (run.created, with payload). out gets
 * the run; history (when not NULL) gets the session's messages before the new one. Errors:
 * AG_ENOTFOUND (agent or session), AG_EINVAL (the session belongs to another agent). */
int mem_run_create(struct mem_store *st, const char *agent, const char *session_uid,
                   const char *input, struct mem_run *out, struct mem_message **history,
                   size_t *n_history, struct ag_err *err);

/* What one commit of a running run writes, all in one transaction: events (their seqs must
 * follow the run's last_seq), messages appended to its session, and its counters; state (NULL
 * to keep) with output, error, reason and ended_ms set when it is a final state. */
struct mem_run_write {
    const char *run_uid;
    const struct mem_event *events;
    size_t n_events;
    const struct mem_message *msgs; /* role, content, tool_calls, tool_call_id, name, n_tokens */
    size_t n_msgs;
    const char *state;
    const char *output, *error, *reason;
    int64_t steps, tool_calls, prompt_tokens, completion_tokens;
};
int mem_run_write(struct mem_store *st, const struct mem_run_write *w, struct ag_err *err);
int mem_run_get(struct mem_store *st, const char *uid, struct mem_run *out, struct ag_err *err);
/* Runs, newest first, of one session or one agent (both NULL: all), at most limit (0: 100). */
int mem_run_list(struct mem_store *st, const char *agent, const char *session_uid, size_t limit,
                 struct mem_run **out, size_t *n, struct ag_err *err);
/* Events of a run with seq > after_seq, in order, at most limit (0: all). */
int mem_run_events(struct mem_store *st, const char *uid, int64_t after_seq, size_t limit,
                   struct mem_event **out, size_t *n, struct ag_err *err);
/* At start-up: every run still "running" was cut off by a crash. Each becomes "interrupted"
 * with a final run.failed event (reason "interrupted") after its last committed one. */
int mem_run_interrupt_all(struct mem_store *st, int64_t *n, struct ag_err *err);
void mem_run_release(struct mem_run *r);
void mem_run_list_free(struct mem_run *list, size_t n);
void mem_event_list_free(struct mem_event *list, size_t n);

/* ---- archival memories (runs.c) ---- */

/* Stores a memory for agent; *id (may be NULL) gets its id. */
int mem_memory_add(struct mem_store *st, const char *agent, const char *text, int64_t *id,
                   struct ag_err *err);
/* Memories of agent matching query's words (full-text, best first), at most limit. *texts is
 * an array of *n strings, free with mem_strings_free. An empty query lists the newest. */
int mem_memory_search(struct mem_store *st, const char *agent, const char *query, size_t limit,
                      char ***texts, size_t *n, struct ag_err *err);
void mem_strings_free(char **list, size_t n);

#endif
