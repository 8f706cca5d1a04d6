/*
 * serve.h - the engine as a shared service: one engine thread owns the model and a paged KV
 * cache and serves many generation requests at once with continuous batching.
 *
 * Scheduling (serve.c): every step runs one forward pass over one decode row of every running
 * sequence plus chunks of waiting prompts, up to batch_tokens rows (chunked prefill), so a long
 * prompt never stalls the others for more than one step. Each matmul of the step reads a weight
 * block once for all rows. Sequences are admitted in arrival order while the cache has pages for
 * the prompt and the most tokens they may generate; the rest wait. A new prompt first takes every
 * cached page that holds a prefix of it (kvcache.h), so agents with the same system prompt and
 * tools compute it once.
 *
 * Results never depend on batching: the forward pass is row-invariant (model.h), every row
 * takes the float (tiled) attention kernel, and Q4_1 matrices run a repacked batch kernel
 * (cpu/mm_packed.h) for any number of rows, so a prompt's greedy output is the same alone or among
 * others. (It can differ from agentd-infer's, which reproduces llama.cpp's arithmetic, in the
 * last bits, and so occasionally in a token.)
 *
 * Requests: a raw prompt or a chat (struct eng_chat, rendered with the model's template and
 * tokenized so that caller text can never become control tokens), max_tokens, sampling, stop
 * strings, and optionally a JSON Schema for the whole reply (response_format) or tool-call
 * constraint: when the request has tools, the service switches the grammar of the tools'
 * schemas on as soon as the model writes its family's tool-call opener (e.g. "<tool_call>"),
 * so free text stays free and every call parses. The grammar mask is applied to the logits before
 * sampling.
 *
 * Events: a request's callback runs on the engine thread: ENG_EV_DELTA for streamed text (only
 * when stream is set; UTF-8-complete, stop strings held back until they cannot match; with tools,
 * the free text only: a call's opener, JSON and closing marker are not streamed), then
 * exactly one ENG_EV_DONE or ENG_EV_ERROR, after which the callback is never called again for it.
 * Callbacks must be quick and must not call back into the service except eng_serve_cancel.
 *
 * Errors: AG_ECTXOVERFLOW when the prompt (plus max_tokens, when given) does not fit the context,
 * with the counts in the event; AG_EQUOTA when a request needs more KV pages than the whole cache
 * has; AG_ECANCELLED after eng_serve_cancel (the request's pages are freed within one step);
 * AG_EUNSUPPORTED for a schema the grammar compiler refuses (with its message).
 *
 * Threads: every function may be called from any thread; the model loads on the engine thread
 * (eng_serve_status reports progress), and requests submitted meanwhile wait for it.
 */
#ifndef ENG_SERVE_H
#define ENG_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"
#include "chat.h"
#include "sampler.h"

struct eng_serve;

/* Zero means the default noted. */
struct eng_serve_params {
    const char *model_path;    /* GGUF file (copied) */
    int n_threads;             /* compute threads; 0: the online cores */
    int n_ctx;                 /* positions per sequence; 0: min(trained context, 8192) */
    int kv_positions;          /* positions of the shared KV cache; 0: 65536 (pages are touched
                                  only when used) */
    int batch_tokens;          /* rows per step; 0: 256 */
    int max_running;           /* sequences generating at once; 0: 64 */
    const char *chat_template; /* family name overriding the file's (eng_chat_family_by_name) */
};

/* A generation request. Every pointer in it is owned by the request: allocate strings and
 * arrays with eng_gen_req_strdup / eng_gen_req_alloc, free with eng_gen_req_release. */
struct eng_gen_req {
    const char *prompt;   /* raw text (control-token text parsed, BOS added as the model
                             wants), or NULL for chat */
    struct eng_chat chat; /* messages and tools when prompt is NULL (add_generation_prompt
                             is forced on) */
    int max_tokens;       /* most tokens to generate; 0: up to the context end */
    struct eng_sampler_params sampling; /* see sampler.h (a zeroed struct is greedy) */
    const char *stop[4];                /* stop strings (not included in the text) */
    int n_stop;
    const char *json_schema; /* the whole reply must be JSON valid for this schema, or NULL */
    bool tool_grammar;       /* with tools: constrain every tool call to the tools' schemas */
    bool tool_required;      /* with tools: the reply is one tool call (OpenAI's tool_choice
                                "required"): the opener is written for the model and the call's
                                JSON is constrained from the first token */
    const char *tool_name;   /* with tool_required: only this tool (or NULL: any) */
    bool stream;             /* deliver ENG_EV_DELTA events */
    bool ignore_eos;         /* never sample end-of-generation tokens (benchmarks: exactly
                                max_tokens tokens) */
    void **owned_;           /* allocations, freed by eng_gen_req_release */
    size_t n_owned_, cap_owned_;
};

const char *eng_gen_req_strdup(struct eng_gen_req *r, const char *s); /* NULL stays NULL */
void *eng_gen_req_alloc(struct eng_gen_req *r, size_t bytes);         /* zeroed */
void eng_gen_req_release(struct eng_gen_req *r);                      /* r is left zeroed */

enum eng_ev_type {
    ENG_EV_DELTA = 1, /* text */
    ENG_EV_DONE,      /* the request finished */
    ENG_EV_ERROR,     /* the request failed or was cancelled */
};

struct eng_gen_usage {
    int prompt_tokens;     /* tokens of the rendered prompt */
    int cached_tokens;     /* of which taken from the prefix cache */
    int completion_tokens; /* tokens generated */
    double queue_ms;       /* from submit to admission */
    double ttft_ms;        /* from submit to the first generated token */
    double total_ms;       /* from submit to the end */
};

struct eng_gen_event {
    enum eng_ev_type type;
    uint64_t id;                        /* the request's id (eng_serve_submit) */
    const char *text;                   /* DELTA: new text; DONE: the whole generated text */
    size_t len;                         /* bytes of text */
    const char *finish_reason;          /* DONE: "stop", "length" or "tool_calls" */
    const struct eng_chat_reply *reply; /* DONE for a chat: content and tool calls */
    const char *parse_error;            /* DONE for a chat whose calls did not parse, or NULL */
    struct eng_gen_usage usage;         /* DONE, ERROR: what was done */
    const struct ag_err *err;           /* ERROR */
    int n_ctx;                          /* ERROR AG_ECTXOVERFLOW: the context */
    int max_tokens;                     /* ERROR AG_ECTXOVERFLOW: max_tokens asked (0: none) */
};

typedef void (*eng_gen_cb)(void *ud, const struct eng_gen_event *ev);

/* Starts the engine thread, which loads the model. Errors: AG_EINVAL (parameters), AG_EIO
 * (thread). A model that fails to load is reported by eng_serve_status (and every request gets
 * an error). */
int eng_serve_start(const struct eng_serve_params *p, struct eng_serve **out, struct ag_err *err);
/* Fails every request (AG_ESHUTDOWN), stops and joins the thread, frees everything. */
void eng_serve_stop(struct eng_serve *s); /* NULL is fine */

/* Queues req (its contents move into the service; *req is left zeroed) with its callback.
 * *id gets the request's id. Errors (req untouched): AG_ESHUTDOWN, AG_EINVAL (no prompt and
 * no messages, more than 4 stop strings, bad sampling values). */
int eng_serve_submit(struct eng_serve *s, struct eng_gen_req *req, eng_gen_cb cb, void *ud,
                     uint64_t *id, struct ag_err *err);
/* Cancels request id (no-op when unknown or finished); its ERROR event follows within a step. */
void eng_serve_cancel(struct eng_serve *s, uint64_t id);

enum eng_serve_state { ENG_SERVE_LOADING = 0, ENG_SERVE_READY, ENG_SERVE_FAILED };

struct eng_serve_status {
    enum eng_serve_state state;
    char error[512];      /* FAILED: why */
    double load_progress; /* LOADING: 0..1 */
    char model_path[512]; /* as given */
    char model_name[128]; /* general.name */
    char arch[32];        /* llama, qwen2, gemma3 */
    char chat_family[16]; /* chatml, ... */
    int n_ctx, n_vocab, n_threads;
    int64_t model_bytes; /* size of the file */
    int page_size;       /* positions per KV page */
    int pages_total, pages_held, pages_cached, pages_free;
    int batch_tokens, max_running;
    int running, waiting;   /* sequences */
    uint64_t requests_done; /* finished since start */
    uint64_t tokens_generated, tokens_prompt, tokens_cached;
    double decode_tps;  /* generated tokens per second over the last few seconds */
    double prefill_tps; /* prompt tokens per second over the last few seconds */
};
void eng_serve_get_status(struct eng_serve *s, struct eng_serve_status *st);

/* Tokenizes text with the loaded model (special tokens parsed when special). AG_EBUSY while
 * the model loads, AG_EUNSUPPORTED when it failed. *ids is malloc'd. */
int eng_serve_tokenize(struct eng_serve *s, const char *text, size_t len, bool special,
                       int32_t **ids, size_t *n, struct ag_err *err);

#endif
