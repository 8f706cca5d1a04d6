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
#include "../memory/memory.h"
#include "../protocol/protocol.h"

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

/* An internal caller (the agent runner) calls methods through a struct conn with a sink: its
 * replies and notifications go to these callbacks on the loop thread instead of a socket. */
struct conn_sink {
    /* The one reply of a conn_call: result, or err (with data, may be NULL). */
    void (*reply)(struct conn *c, const struct proto_val *result, const struct ag_err *err,
                  const struct proto_val *data);
    void (*notify)(struct conn *c, const char *method, const struct proto_val *params);
};

struct conn {
    uv_pipe_t pipe;               /* the client socket; pipe.data points back here */
    struct agentd *d;             /* the daemon */
    struct ag_list node;          /* in agentd.conns */
    uint64_t id;                  /* sequential, for logs */
    uid_t uid;                    /* peer credentials from SO_PEERCRED */
    pid_t pid;                    /* peer pid (0 when unknown) */
    struct proto_framer fr;       /* request bytes -> lines */
    struct ag_buf out;            /* responses not yet handed to the kernel or libuv */
    int refs;                     /* 1 for the open handle + 1 per job in flight */
    bool busy;                    /* a request waits on a job; later frames wait in fr */
    bool reading;                 /* uv_read_start is active */
    bool eof;                     /* the client closed its side; close after answering */
    bool closing;                 /* uv_close called */
    bool initialized;             /* initialize was called (optional for now) */
    const struct conn_sink *sink; /* internal caller, or NULL for a socket */
    void *sink_ud;                /* the internal caller's state */
};

/* Sets c up as an internal caller of d's methods. */
void conn_init_internal(struct conn *c, struct agentd *d, const struct conn_sink *sink, void *ud);
/* Calls method with params (taken over) as c; the reply reaches c's sink, at once or later.
 * One call at a time per conn (c->busy while one is pending). Returns the synchronous result
 * code, for information: the sink has been told either way. */
int conn_call(struct conn *c, const char *method, struct proto_val *params);

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

/* ---- methods (methods.c) ---- */
#define METHOD_ASYNC 1 /* handler took ownership of the request and will reply later */

/*
 * Runs the method named in req for c. Returns 0 with *result set (may stay NULL for {}), a
 * negative AG_E code with err set, or METHOD_ASYNC after taking over req (req->root is NULL
 * then) and calling conn_begin_async.
 */
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
#define SBXD_NOT_MINE 2 /* sbxd_dispatch: not a sandbox method */
/* Handles a "sandbox.*" method like methods_dispatch; SBXD_NOT_MINE for an unknown name. */
int sbxd_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err);
/* Sandbox jobs submitted and not yet answered. */
int sbxd_in_flight(struct agentd *d);
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
/* Handles engine.* and model.* like methods_dispatch; ENGD_NOT_MINE for other names. */
#define ENGD_NOT_MINE 2
int engd_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err);
/* c closed or stopped sending: its engine requests are cancelled. */
void engd_conn_gone(struct conn *c);
/* engine.generate requests not yet answered. */
int engd_in_flight(struct agentd *d);

/* ---- the web (web.c) ---- */
/* Starts the fetcher; fails on a bad --fetch-allow. */
int webd_start(struct agentd *d, struct ag_err *err);
void webd_stop(struct agentd *d);
#define WEBD_NOT_MINE 2
/* Handles web.* like methods_dispatch; WEBD_NOT_MINE for other names. */
int webd_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                  struct ag_err *err);
void webd_conn_gone(struct conn *c);
int webd_in_flight(struct agentd *d);

/* ---- agent runs (runner.c) ---- */
struct runner;
void runner_start(struct agentd *d);
/* Ends every live run (reason "shutdown"); they finish storing their events. */
void runner_drain(struct agentd *d);
void runner_stop(struct agentd *d);
#define RUNNER_NOT_MINE 2
/* Handles run.* like methods_dispatch; RUNNER_NOT_MINE for other names. */
int runner_dispatch(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err);
/* c is closing: its subscriptions end and its foreground runs are cancelled. */
void runner_conn_gone(struct conn *c);
/* Runs not yet finished. */
int runner_in_flight(struct agentd *d);

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
