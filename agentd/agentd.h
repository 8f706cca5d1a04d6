/*
 * agentd.h - the daemon's internal interfaces: its state, client connections, the storage
 * thread and the method table. Only agentd/ includes this file.
 *
 * Threads: the loop thread (libuv) owns every handle, connection and response buffer; the
 * storage thread owns the SQLite writer connection and runs jobs handed to it in FIFO order.
 * A job's work() runs on the storage thread and must not touch loop state; its done() runs on
 * the loop thread afterwards. Requests of one connection are handled one at a time, in order:
 * while a request waits on a job, later frames stay buffered, so responses leave in request
 * order without any per-request bookkeeping.
 */
#ifndef AGENTD_AGENTD_H
#define AGENTD_AGENTD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "../base/base.h"
#include "../engine/engine.h"
#include "../memory/memory.h"
#include "../protocol/protocol.h"
#include "../sandbox/sandbox.h"
#include "../tools/fetch.h"

#define AGENTD_VERSION "0.1.0"

/* Pause reading a client whose unsent responses exceed this (it sends but never reads). */
#define AGENTD_OUT_HIGH_BYTES (4u * 1024 * 1024)
/* Resume once they drain below this. */
#define AGENTD_OUT_LOW_BYTES (1u * 1024 * 1024)
/* Pause reading while a request waits on storage and this much input is already buffered. */
#define AGENTD_IN_PAUSE_BYTES (1u * 1024 * 1024)

struct agentd;

/* ---- configuration (config.c) ---- */
struct agentd_config {
    char data_dir[4096];         /* database, lock file, default socket */
    char socket_path[108];       /* Unix socket the daemon listens on */
    char agents_dir[4096];       /* load *.agent.{yaml,yml,json} from here at start; "" for none */
    enum ag_log_level log_level; /* logging threshold */
    size_t max_frame_bytes;      /* longest accepted request line */
    int drain_timeout_ms;        /* on SIGTERM, force-close clients after this long */
    char model_path[4096];       /* --model: GGUF to serve; "" for none */
    char chat_template[32];      /* --chat-template: family name; "" from the file */
    int threads;                 /* --threads; 0: online cores */
    int ctx;                     /* --ctx; 0: trained context, at most 8192 */
    int kv_size;                 /* --kv-size positions; 0: 65536 */
    int batch;                   /* --batch rows per step; 0: 256 */
    int parallel;                /* --parallel sequences; 0: 64 */
    char fetch_allow[1024];      /* --fetch-allow: CIDR list the SSRF guard lets through */
};

/* Fills defaults, then the config file (when given), then flags; flags win. Returns 0, a
 * negative AG_E code with err set, or 1 when --help/--version was printed (exit 0). */
int agentd_config_load(struct agentd_config *cfg, int argc, char **argv, struct ag_err *err);

/* ---- hand-off between the loop and worker threads (handoff.c) ----
 *
 * The one way work crosses threads (DESIGN.md section 2), after libuv's thread pool. Items
 * embed a struct ag_list. The loop submits items to an inbox; worker threads pop them in FIFO
 * order and run work() on each. A finished item, or one any thread posts, joins an outbox and
 * one uv_async_send wakes the loop, which takes the whole outbox at once and runs done() on
 * each item in order (several sends may coalesce into one wake-up). An item is on one list at
 * a time and belongs to whichever side holds it. A handoff without work() has no inbox and no
 * threads: it is the outbox of a thread agentd does not own (the engine's).
 *
 * Threads start with the handoff (min_threads) or when an item arrives and none is idle (up to
 * max_threads); they live until handoff_stop. Threads are uv_thread_t, locks uv_mutex_t.
 */
#define HANDOFF_MAX_THREADS 64

/* Runs on a worker thread (work) or on the loop thread (done, which may free item). */
typedef void (*handoff_fn)(struct ag_list *item, void *ud);

struct handoff {
    uv_async_t async;                         /* wakes the loop; async.data is the handoff */
    uv_mutex_t mu;                            /* guards the lists, the counts and stop */
    uv_cond_t cv;                             /* the inbox gained an item, or stop was set */
    struct ag_list inbox;                     /* items waiting for a worker */
    struct ag_list outbox;                    /* items waiting for the loop */
    uv_thread_t threads[HANDOFF_MAX_THREADS]; /* the workers started */
    int n_threads;                            /* entries of threads in use */
    int max_threads;                          /* the most that may start */
    int n_idle;                               /* workers waiting for an item */
    bool stop;                                /* set by handoff_stop; written on the loop only */
    handoff_fn work;                          /* NULL: an outbox only */
    handoff_fn done;                          /* runs on the loop for each outbox item */
    void *ud;                                 /* passed to work and done */
    void (*closed)(struct handoff *h);        /* handoff_close's callback */
};

/* Initializes h (in memory the caller owns) and starts min_threads workers. On failure the
 * async handle is closing: h must stay allocated until the loop has run. */
int handoff_start(struct handoff *h, uv_loop_t *loop, handoff_fn work, handoff_fn done, void *ud,
                  int min_threads, int max_threads, struct ag_err *err);
/* Loop thread: queues item for a worker, starting one when none is idle and max allows. */
void handoff_submit(struct handoff *h, struct ag_list *item);
/* Any thread: queues item for the loop's done() and wakes the loop. */
void handoff_post(struct handoff *h, struct ag_list *item);
/* Loop thread: runs done() on everything in the outbox now (the async callback does this). */
void handoff_drain(struct handoff *h);
/* Loop thread: lets the workers finish the inbox, joins them, then drains the outbox. */
void handoff_stop(struct handoff *h);
/* Loop thread, after handoff_stop: closes the async handle; closed(h) runs once it is closed
 * and the lock is destroyed, and may free the memory that holds h. */
void handoff_close(struct handoff *h, void (*closed)(struct handoff *h));

/* ---- storage thread (storeq.c) ---- */
struct storeq_job;
typedef void (*storeq_fn)(struct storeq_job *job, struct mem_store *st);
typedef void (*storeq_done_fn)(struct storeq_job *job);

/* Embed at the start of a job struct; the storage queue links jobs through it. */
struct storeq_job {
    struct ag_list node; /* in the storage thread's hand-off */
    storeq_fn work;      /* runs on the storage thread */
    storeq_done_fn done; /* runs on the loop thread; frees the job */
};

struct storeq;
/* Starts the storage thread; it takes ownership of st and closes it when stopped. */
int storeq_start(uv_loop_t *loop, struct mem_store *st, struct storeq **out, struct ag_err *err);
void storeq_submit(struct storeq *q, struct storeq_job *job);
/* Number of jobs submitted and not yet done. */
size_t storeq_pending(const struct storeq *q);
/* Runs every queued job, stops the thread, closes the store and the async handle. */
void storeq_stop(struct storeq *q);

/* ---- connections (server.c) ---- */
struct conn;

struct conn {
    uv_pipe_t pipe;         /* the client socket; pipe.data points back here */
    struct agentd *d;       /* the daemon */
    struct ag_list node;    /* in agentd.conns */
    uint64_t id;            /* sequential, for logs */
    uid_t uid;              /* peer credentials from SO_PEERCRED */
    pid_t pid;              /* peer pid (0 when unknown) */
    struct proto_framer fr; /* request bytes -> lines */
    struct ag_buf out;      /* responses not yet handed to the kernel or libuv */
    int refs;               /* 1 for the open handle + 1 per job in flight */
    bool busy;              /* a request waits on a job; later frames wait in fr */
    bool reading;           /* uv_read_start is active */
    bool eof;               /* the client closed its side; close after answering */
    bool closing;           /* uv_close called */
    bool initialized;       /* initialize was called (optional for now) */
};

/* Appends a result or error response for id to c's output (flushed by the caller). */
void conn_reply(struct conn *c, const struct proto_val *id, const struct proto_val *result);
void conn_reply_error(struct conn *c, const struct proto_val *id, const struct ag_err *err);
/* Called on the loop thread when a job started by conn_begin_async finishes: flushes output,
 * resumes processing buffered frames, drops the job's reference. */
void conn_end_async(struct conn *c);
/* Marks c busy and takes a reference for a job. */
void conn_begin_async(struct conn *c);

int server_start(struct agentd *d, struct ag_err *err);
/* Stops accepting; open connections finish what they are doing. */
void server_stop_listening(struct agentd *d);
/* Closes every connection now. */
void server_close_all(struct agentd *d);

/* ---- the method table (methods.c) ---- */
#define METHOD_ASYNC 1 /* a handler took ownership of the request and will reply later */

/*
 * A method handler. params were checked against the row's schema before it runs. Returns 0 with
 * *result set (may stay NULL for {}), a negative AG_E code with err set, or METHOD_ASYNC after
 * taking over req (req->root is NULL then) and calling conn_begin_async.
 */
typedef int (*method_fn)(struct conn *c, struct proto_req *req, struct proto_val **result,
                         struct ag_err *err);

enum method_flags {
    METHOD_DRAINING = 1u << 0, /* still served while the daemon drains */
    METHOD_LATER = 1u << 1,    /* may answer later (METHOD_ASYNC) */
    METHOD_NOTIFIES = 1u << 2, /* may send notifications before its answer */
};

/* One row of the table: every method the protocol knows, served or not yet. */
struct method {
    const char *name;    /* "agent.create" */
    method_fn fn;        /* NULL: catalogued, not built yet (answers "unsupported") */
    const char *params;  /* JSON Schema of params (checked before fn); NULL: no parameters */
    unsigned flags;      /* enum method_flags */
    const char *summary; /* one line for agentctl, initialize and the README */
};

/* Each subsystem's rows (a group), gathered into one table by methods.c. */
struct method_group {
    const struct method *rows;
    size_t n;
};
#define METHOD_GROUP(name, rows)                                                                   \
    const struct method_group name = {rows, sizeof(rows) / sizeof((rows)[0])}
extern const struct method_group core_methods, store_methods, sbxd_methods, engd_methods,
    webd_methods, run_methods;

/* Builds the table (parses every schema once); a malformed schema is a bug: AG_EINVAL. */
int methods_init(struct ag_err *err);
void methods_release(void);
/* The row called name (one lookup), or NULL. */
const struct method *methods_find(const char *name);
/* Every row, sorted by name. */
const struct method *const *methods_all(size_t *n);
/* Runs the method named in req for c: looks it up, checks its params, calls its handler. */
int methods_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                     struct ag_err *err);
/* Loads agent definition files from dir into st at start-up (before the storage thread). */
int methods_load_agents_dir(struct mem_store *st, const char *dir, int *n_loaded,
                            struct ag_err *err);

/* ---- sandboxes (sandboxes.c) ---- */
struct sbxd;
/* Starts the sandbox workers; when the host cannot make sandboxes, sandbox.* methods answer
 * "unsupported" with the reason. */
void sbxd_start(struct agentd *d);
/* Kills every sandbox, joins the workers, closes the handles (the loop frees the rest). */
void sbxd_stop(struct agentd *d);
/* Sandbox jobs submitted and not yet answered. */
int sbxd_in_flight(struct agentd *d);
/* A cell's end (loop thread): res with valid UTF-8 texts, or err. */
typedef void (*sbxd_cell_fn)(void *ud, const struct sbx_result *res, const struct ag_err *err);
/* Runs code as a cell of the session called session, created on first use with lim (NULL: the
 * defaults). Errors at once: unavailable, a busy session (AG_EBUSY), a dead interpreter
 * (AG_ESANDBOX), a bad name. */
int sbxd_cell(struct agentd *d, const char *session, const char *code, int64_t timeout_ms,
              const struct sbx_limits *lim, sbxd_cell_fn done, void *ud, struct ag_err *err);
/* Destroys a session (what runs in it is killed; its cell's callback follows). */
void sbxd_kill(struct agentd *d, const char *session);
/* The daemon's sandbox context (sandboxed MCP servers spawn in it), or NULL when the host
 * cannot make sandboxes or they are stopped. */
struct sbx_ctx *sbxd_ctx(struct agentd *d);
/* Sends a notification to c now (loop thread). */
void conn_notify(struct conn *c, const char *method, const struct proto_val *params);
/* conn_reply_error with members added to the error's data (borrowed, may be NULL). */
void conn_reply_error_data(struct conn *c, const struct proto_val *id, const struct ag_err *err,
                           const struct proto_val *data);

/* ---- the inference engine (engined.c) ---- */
struct engd;
/* Starts the engine thread when --model is set (the model loads in the background). */
int engd_start(struct agentd *d, struct ag_err *err);
/* Fails what is in flight, stops the engine thread, closes the handle. */
void engd_stop(struct agentd *d);
/* c closed or stopped sending: its engine requests are cancelled. */
void engd_conn_gone(struct conn *c);
/* Generations not yet finished. */
int engd_in_flight(struct agentd *d);

/* The end of a generation, borrowed for the done callback. */
struct engd_result {
    uint64_t id;                             /* the engine's id (engd_cancel, call ids) */
    const char *request_id;                  /* its name */
    const char *text;                        /* chat: the content outside the calls; else all */
    size_t len;                              /* bytes of text */
    const char *raw;                         /* the whole generated text */
    size_t raw_len;                          /* bytes of raw */
    bool chat;                               /* messages were given: calls are parsed */
    const struct eng_chat_reply_call *calls; /* n_calls tool calls, in order */
    size_t n_calls;
    const char *parse_error;   /* the model wrote a call that does not parse, or NULL */
    const char *finish_reason; /* stop, length, tool_calls */
    struct eng_gen_usage usage;
    int n_ctx, max_tokens; /* on AG_ECTXOVERFLOW: the context and the max_tokens asked */
};

/* Callbacks of a generation, on the loop thread. delta may be NULL; done comes exactly once
 * (err set on failure or cancel; res is filled either way, for the usage). */
struct engd_gen_cb {
    void (*delta)(void *ud, const char *text, size_t n);
    void (*done)(void *ud, const struct engd_result *res, const struct ag_err *err);
};

/* Submits r (its contents move into the engine; r is left zeroed on success). name: the
 * request's unique name (engine.cancel finds it), or NULL for a generated one. owner: the
 * connection whose closing cancels it, or NULL. *id gets its id. Errors at once: no model
 * (AG_EUNSUPPORTED), a name in use (AG_EEXISTS), a bad request (AG_EINVAL). */
int engd_generate(struct agentd *d, struct eng_gen_req *r, const char *name, const void *owner,
                  const struct engd_gen_cb *cb, void *ud, uint64_t *id, struct ag_err *err);
/* Cancels generation id (its done callback follows with AG_ECANCELLED); no-op when finished. */
void engd_cancel(struct agentd *d, uint64_t id);
/* A seed for a request that names none. */
uint64_t engd_random_seed(struct agentd *d);
/* The id a tool call gets in results: "call_<id>_<i>". */
void engd_call_id(char *buf, size_t n, uint64_t id, size_t i);

/* ---- the web (web.c) ---- */
/* Starts the fetcher; fails on a bad --fetch-allow. */
int webd_start(struct agentd *d, struct ag_err *err);
void webd_stop(struct agentd *d);
void webd_conn_gone(struct conn *c);
int webd_in_flight(struct agentd *d);
/* Fetches url (the daemon's --fetch-allow ranges added to o); done gets the result on the loop
 * (res is the callee's to release). Returns the fetch's id for webd_cancel, 0 when the web client
 * is not running (done is not called then). */
uint64_t webd_fetch(struct agentd *d, const char *url, const struct fetch_opts *o, fetch_cb done,
                    void *ud);
/* Cancels fetch id: its callback follows with AG_ECANCELLED. */
void webd_cancel(struct agentd *d, uint64_t id);

/* ---- archival memory (memd.c) ---- */
struct memd_result {
    int64_t id;         /* add: the new memory's id */
    char *const *texts; /* search: n matches, best first (borrowed for the callback) */
    size_t n;
};
typedef void (*memd_fn)(void *ud, const struct memd_result *res, const struct ag_err *err);
/* Stores a fact of agent; done runs on the loop once it is committed (err on failure). */
void memd_add(struct agentd *d, const char *agent, const char *text, memd_fn done, void *ud);
/* Searches agent's facts (FTS5); limit 0 means 5. */
void memd_search(struct agentd *d, const char *agent, const char *query, size_t limit, memd_fn done,
                 void *ud);

/* ---- MCP servers of agents (mcpd.c) ---- */
struct mcpd;
struct tool_def;
void mcpd_start(struct agentd *d);
/* Stops every server (calls in flight fail); waits still open are answered without tools. */
void mcpd_stop(struct agentd *d);
/* The tools of an agent's MCP servers (list: its definition's mcp entries). ready runs later
 * on the loop, once every server is ready or has failed, with the rows to offer (valid until
 * mcpd_stop) and, when some server is unavailable, why (else NULL). */
typedef void (*mcpd_ready_fn)(void *ud, const struct tool_def *const *rows, size_t n,
                              const char *problems);
int mcpd_tools(struct agentd *d, const char *agent, const struct proto_val *list,
               mcpd_ready_fn ready, void *ud, uint64_t *wait_id, struct ag_err *err);
/* The waiter went away first: ready will not run. */
void mcpd_forget(struct agentd *d, uint64_t wait_id);

/* ---- agent runs (runner.c, run_methods.c) ---- */
struct run;
struct runner;
struct ev;

/* The model a runner thinks with: the engine service (engd_generate), or a scripted double in
 * tests/test_runner.c. generate follows engd_generate's contract; cancel engd_cancel's. */
struct run_model {
    int (*generate)(void *ctx, struct eng_gen_req *req, const char *name,
                    const struct engd_gen_cb *cb, void *ud, uint64_t *id, struct ag_err *err);
    void (*cancel)(void *ctx, uint64_t id);
    void *ctx;
};

/* What a run's creator hears, on the loop thread. */
struct run_watch {
    /* The run exists (its run.created event is stored next), or could not start (err: the
     * agent or session is unknown, the store failed); after an error r is gone. */
    void (*started)(void *ud, struct run *r, const struct ag_err *err);
    /* One event, once stored. May be NULL. */
    void (*event)(void *ud, const struct run *r, const struct ev *e);
    /* Every event is stored: r's final state is readable until this returns. */
    void (*ended)(void *ud, struct run *r);
};

struct run_opts {
    const char *agent;       /* a new session with this agent, or NULL with session */
    const char *session;     /* continue this session, or NULL */
    const char *input;       /* the user's message, non-empty */
    const char *tool_choice; /* first step: "auto", "required", "none" or a tool name; NULL */
    int max_steps;           /* 0: the agent's limits.max_steps */
    int max_tool_calls;      /* < 0: the agent's limits.max_tool_calls */
    bool no_grammar;         /* tool calls unconstrained */
};

void runner_start(struct agentd *d);
/* Ends every live run (reason "shutdown"); they finish storing their events. */
void runner_drain(struct agentd *d);
void runner_stop(struct agentd *d);
/* Starts a run; NULL with err set when it cannot (a busy session, too many runs, no model).
 * Otherwise w->started follows, then events, then w->ended. */
struct run *runner_create(struct runner *R, const struct run_opts *o, const struct run_watch *w,
                          void *ud, struct ag_err *err);
/* Cancels a live run; AG_ENOTFOUND when none is in progress under that id. */
int runner_cancel(struct runner *R, const char *run_id, struct ag_err *err);
/* c is closing: its subscriptions end and its foreground runs are cancelled. */
void runner_conn_gone(struct conn *c);
/* Runs not yet finished. */
int runner_in_flight(struct agentd *d);
/* An MCP server of agent changed state: an mcp.server event for the agent's live runs. */
void runner_mcp_state(struct agentd *d, const char *agent, const char *server, const char *state,
                      const char *msg);

/* ---- the daemon ---- */
struct agentd {
    uv_loop_t *loop;          /* the event loop */
    struct agentd_config cfg; /* effective configuration */
    uv_pipe_t listener;       /* the listening Unix socket */
    bool listening;           /* listener is open */
    uv_signal_t sig_term;     /* SIGTERM: drain and exit */
    uv_signal_t sig_int;      /* SIGINT: drain and exit */
    uv_timer_t drain_timer;   /* force-close deadline while draining */
    bool draining;            /* a stop signal arrived */
    struct storeq *sq;        /* storage thread */
    struct sbxd *sbx;         /* sandbox workers and sessions */
    void *sbx_mem;            /* the stopped sandbox manager, freed after the loop ends */
    struct engd *eng;         /* the inference engine service */
    struct runner *runner;    /* agent runs */
    struct webd *web;         /* web fetches */
    struct mcpd *mcp;         /* agents' MCP servers */
    struct ag_list conns;     /* open connections (struct conn.node), newest first */
    uint64_t n_conns;         /* open connections */
    uint64_t next_conn_id;    /* for logs */
    uint64_t n_requests;      /* requests answered since start */
    int64_t n_agents;         /* agents in the store (kept current by agent methods) */
    int schema_version;       /* store schema after migrations */
    int64_t started_ms;       /* monotonic start time */
    char db_path[4200];       /* SQLite file */
    int lock_fd;              /* flock'ed lock file in the data dir */
};

/* Begins a clean shutdown (signal handler or fatal condition). */
void agentd_drain(struct agentd *d);

#endif
