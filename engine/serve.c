/*
 * serve.c - the engine thread: admission, continuous batching with chunked prefill, sampling
 * with grammar masks, streaming and cancellation (see serve.h). What a reply's text may stream,
 * where stop strings cut it and when a tool call's grammar applies is toolcall.c's filter.
 *
 * A request becomes a `struct seq`. Lists: the inbox (submitted, guarded by mu), then on the
 * engine thread the waiting list (FIFO) and the running list. A step:
 *   1. takes the inbox and the cancellations;
 *   2. admits waiting sequences in order while the cache has their pages (prompt plus the most
 *      they may generate), after taking the cached pages of their longest known prefix;
 *   3. builds one batch: a decode row for every sequence that has a sampled token to run, then
 *      prompt chunks in admission order until batch_tokens rows;
 *   4. runs it, registers the pages it filled, samples the sequences whose logits came out.
 * The thread sleeps on cv only when nothing is running or waiting.
 */
#include "serve.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grammar.h"
#include "kvcache.h"
#include "model.h"
#include "tokenizer.h"
#include "toolcall.h"

#define SERVE_PAGE_SHIFT     4 /* 16 positions per page */
#define SERVE_RATE_WINDOW_MS 5000.0

enum seq_state { SEQ_WAITING = 0, SEQ_PREFILL, SEQ_DECODE };

struct seq {
    struct seq *next;
    uint64_t id;
    struct eng_gen_req req;
    eng_gen_cb cb;
    void *ud;
    enum seq_state state;
    int32_t *tokens; /* prompt then generated tokens */
    int n_tokens;    /* in tokens */
    int n_prompt;    /* prompt tokens */
    int n_done;      /* positions computed (in the KV cache) */
    int n_cached;    /* prompt positions taken from the prefix cache */
    int max_total;   /* n_tokens may grow to this */
    int n_gen;       /* tokens generated */
    bool prepared;   /* tokens hold the prompt */
    struct eng_kvseq kv;
    struct eng_sampler *smp;
    struct eng_detok detok;
    struct ag_buf text;          /* generated text */
    struct eng_grammar *grammar; /* owned */
    struct eng_gmatch *gm;       /* owned */
    struct eng_toolcall filter;  /* stop strings, tool calls, streaming (toolcall.h) */
    double t_submit, t_admit, t_first;
    int batch_rows;    /* rows in the current step */
    bool batch_logits; /* the current step computes its logits */
};

struct eng_serve {
    struct eng_serve_params p;
    char model_path[512];
    char chat_template[32];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct seq *in_head, *in_tail; /* submitted, guarded by mu */
    uint64_t *cancels;             /* ids to cancel, guarded by mu */
    size_t n_cancels, cap_cancels;
    bool stop;        /* guarded by mu */
    uint64_t next_id; /* guarded by mu */

    /* Published by the engine thread (guarded by mu). */
    struct eng_serve_status st;

    /* Engine thread only. */
    struct eng_gguf *gguf; /* the mapped file, owned: the model and tok borrow it */
    struct eng_model *model;
    struct eng_tokenizer *tok;
    _Atomic int ready; /* model and tok may be read by other threads (tokenize) */
    enum eng_chat_family family;
    const struct eng_chat_markers *markers;
    struct eng_gvocab *gvocab;
    struct eng_kv_store kv;
    struct eng_kvc *kvc;
    struct eng_batch_buf *bb;
    float *logits;              /* (max_running, n_vocab) */
    float *mask_tmp;            /* (n_vocab) */
    int32_t *allowed;           /* (n_vocab) */
    struct eng_batch_seq *rows; /* (max_running + batch_tokens) */
    struct seq **row_seq;
    struct seq *wait_head, *wait_tail;
    struct seq *running;
    int n_running, n_waiting;
    /* Recent throughput. */
    double rate_t0;
    uint64_t rate_gen, rate_prompt;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- requests ---- */

static void own(struct eng_gen_req *r, void *p)
{
    if (r->n_owned_ == r->cap_owned_) {
        r->cap_owned_ = r->cap_owned_ ? 2 * r->cap_owned_ : 16;
        r->owned_ = ag_realloc(r->owned_, r->cap_owned_ * sizeof(void *));
    }
    r->owned_[r->n_owned_++] = p;
}

const char *eng_gen_req_strdup(struct eng_gen_req *r, const char *s)
{
    if (!s) return NULL;
    char *d = ag_strdup(s);
    own(r, d);
    return d;
}

void *eng_gen_req_alloc(struct eng_gen_req *r, size_t bytes)
{
    void *p = ag_calloc(1, bytes ? bytes : 1);
    own(r, p);
    return p;
}

void eng_gen_req_release(struct eng_gen_req *r)
{
    for (size_t i = 0; i < r->n_owned_; i++) free(r->owned_[i]);
    free(r->owned_);
    memset(r, 0, sizeof(*r));
}

static void seq_free(struct eng_serve *s, struct seq *q)
{
    if (s->kvc) eng_kvc_release(s->kvc, &q->kv);
    eng_gen_req_release(&q->req);
    free(q->tokens);
    eng_sampler_free(q->smp);
    eng_toolcall_release(&q->filter);
    eng_gmatch_free(q->gm);
    eng_grammar_free(q->grammar);
    ag_buf_release(&q->text);
    free(q);
}

static struct eng_gen_usage usage_of(const struct seq *q)
{
    double t = now_ms();
    return (struct eng_gen_usage){
        .prompt_tokens = q->n_prompt,
        .cached_tokens = q->n_cached,
        .completion_tokens = q->n_gen,
        .queue_ms = q->t_admit > 0 ? q->t_admit - q->t_submit : t - q->t_submit,
        .ttft_ms = q->t_first > 0 ? q->t_first - q->t_submit : 0,
        .total_ms = t - q->t_submit,
    };
}

/* Sends q's error event. */
static void fail_seq(struct eng_serve *s, struct seq *q, const struct ag_err *err)
{
    (void)s;
    struct eng_gen_event ev = {.type = ENG_EV_ERROR, .id = q->id, .err = err, .usage = usage_of(q)};
    if (err->code == AG_ECTXOVERFLOW) {
        ev.n_ctx = eng_model_n_ctx(s->model);
        ev.max_tokens = q->req.max_tokens;
    }
    q->cb(q->ud, &ev);
}

/* ---- the thread's lists ---- */

static void list_push(struct seq **head, struct seq **tail, struct seq *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

/* Removes q from the running list. */
static void running_remove(struct eng_serve *s, struct seq *q)
{
    for (struct seq **pp = &s->running; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            s->n_running--;
            return;
        }
}

static void publish_counts(struct eng_serve *s)
{
    pthread_mutex_lock(&s->mu);
    s->st.running = s->n_running;
    s->st.waiting = s->n_waiting;
    if (s->kvc) {
        s->st.pages_held = eng_kvc_held(s->kvc);
        s->st.pages_cached = eng_kvc_cached(s->kvc);
        s->st.pages_free = eng_kvc_n_pages(s->kvc) - s->st.pages_held - s->st.pages_cached;
    }
    double t = now_ms();
    if (t - s->rate_t0 >= 1000.0) {
        double dt = (t - s->rate_t0) / 1e3;
        /* An exponential average over about SERVE_RATE_WINDOW_MS. */
        double a = fmin(1.0, (t - s->rate_t0) / SERVE_RATE_WINDOW_MS);
        s->st.decode_tps = (1 - a) * s->st.decode_tps + a * (double)s->rate_gen / dt;
        s->st.prefill_tps = (1 - a) * s->st.prefill_tps + a * (double)s->rate_prompt / dt;
        s->rate_t0 = t;
        s->rate_gen = s->rate_prompt = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- preparing a request ---- */

/* Tokenizes the rendered chat prompt: the template's text with control tokens parsed, the
 * caller's spans as plain text. */
static int tokenize_chat(struct eng_serve *s, const char *text, size_t len,
                         const struct eng_chat_spans *sp, struct seq *q, struct ag_err *err)
{
    const struct eng_tok_specials *sx = eng_tokenizer_specials(s->tok);
    size_t pos = 0;
    if (sx->add_bos && sx->bos != ENG_TOKEN_NULL) q->tokens[q->n_tokens++] = sx->bos;
    for (size_t k = 0; k <= sp->n; k++) {
        size_t end = k < sp->n ? sp->v[k].off : len;
        size_t ranges[2][2] = {{pos, end}, {end, k < sp->n ? end + sp->v[k].len : end}};
        for (int pass = 0; pass < 2; pass++) {
            size_t a = ranges[pass][0], b = ranges[pass][1], n = 0;
            if (b <= a) continue;
            unsigned flags = pass == 0 ? ENG_TOKENIZE_PARSE_SPECIAL : 0;
            size_t cap = (size_t)(q->max_total - q->n_tokens);
            int rc =
                eng_tokenize(s->tok, text + a, b - a, flags, q->tokens + q->n_tokens, cap, &n, err);
            if (rc == AG_ETOOBIG) return AG_ECTXOVERFLOW;
            if (rc < 0) return rc;
            q->n_tokens += (int)n;
        }
        if (k < sp->n) pos = sp->v[k].off + sp->v[k].len;
    }
    return 0;
}

/* Builds the tools' call grammar: {"name": tool, "arguments": its parameters}, any tool (or the
 * one tool_choice names). */
static int tools_grammar(struct eng_serve *s, struct seq *q, struct ag_err *err)
{
    size_t n = 0, nt = q->req.chat.n_tools;
    const char **names = ag_calloc(nt, sizeof(char *)), **params = ag_calloc(nt, sizeof(char *));
    for (size_t i = 0; i < nt; i++) {
        const struct eng_chat_tool *t = &q->req.chat.tools[i];
        if (q->req.tool_name && strcmp(q->req.tool_name, t->name) != 0) continue;
        names[n] = t->name;
        params[n++] = t->parameters;
    }
    int rc = n == 0
                 ? ag_err_set(err, AG_EINVAL, "tool_choice names \"%s\", which is not in tools",
                              q->req.tool_name)
                 : eng_grammar_from_tools(names, params, n,
                                          s->family == ENG_CHAT_LLAMA3 ? "parameters" : "arguments",
                                          &q->grammar, err);
    free(names);
    free(params);
    return rc;
}

/* The request forces one tool call in a family that has an opener. */
static bool forced_call(const struct eng_serve *s, const struct seq *q)
{
    return q->req.tool_required && q->req.chat.n_tools > 0 && s->markers && s->markers->call_open &&
           *s->markers->call_open;
}

/* The filter's tokenizer (a forced completion's text). */
static int tokenize_plain(void *ud, const char *text, size_t len, int32_t **ids, size_t *n)
{
    const struct eng_serve *s = ud;
    return eng_tokenize_alloc(s->tok, text, len, 0, ids, n, NULL);
}

/* Renders and tokenizes q's prompt, checks it fits, builds its sampler, grammar and filter. */
static int prepare(struct eng_serve *s, struct seq *q, struct ag_err *err)
{
    const int n_ctx = eng_model_n_ctx(s->model);
    q->max_total = n_ctx;
    q->tokens = ag_calloc((size_t)n_ctx + 1, sizeof(int32_t));
    int rc;
    if (q->req.prompt) {
        size_t n = 0;
        rc = eng_tokenize(s->tok, q->req.prompt, strlen(q->req.prompt),
                          ENG_TOKENIZE_ADD_SPECIAL | ENG_TOKENIZE_PARSE_SPECIAL, q->tokens,
                          (size_t)n_ctx, &n, err);
        if (rc == AG_ETOOBIG) rc = AG_ECTXOVERFLOW;
        q->n_tokens = (int)n;
    } else {
        struct ag_buf text;
        struct eng_chat_spans sp = {0};
        ag_buf_init(&text);
        q->req.chat.add_generation_prompt = true;
        rc = eng_chat_render(s->family, &q->req.chat, &text, &sp, err);
        if (rc == 0 && forced_call(s, q)) /* the reply begins with the call's opener */
            ag_buf_printf(&text, "%s\n", s->markers->call_open);
        if (rc == 0) rc = tokenize_chat(s, text.data, text.len, &sp, q, err);
        ag_buf_release(&text);
        eng_chat_spans_release(&sp);
    }
    if (rc == AG_ECTXOVERFLOW || (rc == 0 && q->n_tokens >= n_ctx))
        return ag_err_set(err, AG_ECTXOVERFLOW,
                          "the prompt does not fit the context: %s%d tokens, the context holds "
                          "%d and at least one must be left to generate",
                          rc == 0 ? "" : "more than ", q->n_tokens, n_ctx);
    if (rc < 0) return rc;
    if (q->n_tokens == 0) return ag_err_set(err, AG_EINVAL, "the prompt is empty");
    q->n_prompt = q->n_tokens;
    if (q->req.max_tokens > 0) {
        if (q->n_prompt + q->req.max_tokens > n_ctx)
            return ag_err_set(err, AG_ECTXOVERFLOW,
                              "the prompt (%d tokens) plus max_tokens (%d) exceed the context of "
                              "%d tokens",
                              q->n_prompt, q->req.max_tokens, n_ctx);
        q->max_total = q->n_prompt + q->req.max_tokens;
    }
    int need = eng_kvc_pages_for(s->kvc, q->max_total);
    if (need > eng_kvc_n_pages(s->kvc))
        return ag_err_set(err, AG_EQUOTA,
                          "the request needs %d KV pages (%d tokens) and the cache has %d in all; "
                          "lower max_tokens or start agentd with a larger --kv-size",
                          need, q->max_total, eng_kvc_n_pages(s->kvc));
    if ((rc = eng_sampler_new(eng_model_n_vocab(s->model), &q->req.sampling, &q->smp, err)) < 0)
        return rc;
    struct eng_toolcall_params fp = {
        .stop = q->req.stop, .n_stop = q->req.n_stop, .tokenize = tokenize_plain, .tokenize_ud = s};
    if (q->req.json_schema) {
        rc = eng_grammar_from_schema(q->req.json_schema, strlen(q->req.json_schema), &q->grammar,
                                     err);
        if (rc < 0) return rc;
        fp.mode = ENG_TC_WHOLE;
    } else if (q->req.tool_grammar && q->req.chat.n_tools > 0 && s->markers &&
               s->markers->call_open && *s->markers->call_open) {
        if ((rc = tools_grammar(s, q, err)) < 0) return rc;
        fp.mode = ENG_TC_TOOLS;
        fp.call_open = s->markers->call_open;
        fp.call_close = s->markers->call_close;
        fp.required = forced_call(s, q);
    }
    if (q->grammar && (rc = eng_gmatch_new(q->grammar, &q->gm, err)) < 0) return rc;
    fp.gm = q->gm;
    eng_detok_init(&q->detok, s->tok, 0);
    ag_buf_init(&q->text);
    /* The opener of a required call is part of the reply's text (it was written into the
     * prompt). */
    if (fp.required) ag_buf_printf(&q->text, "%s\n", s->markers->call_open);
    eng_toolcall_init(&q->filter, &fp);
    q->prepared = true;
    return 0;
}

/* ---- streaming ---- */

/* Sends the text that may be streamed and is not yet (final: the sequence ended, nothing more
 * will come). */
static void stream_more(struct seq *q, bool final)
{
    if (!q->req.stream) return;
    size_t from, to;
    if (!eng_toolcall_stream(&q->filter, q->text.data, q->text.len, final, &from, &to)) return;
    struct eng_gen_event d = {
        .type = ENG_EV_DELTA, .id = q->id, .text = q->text.data + from, .len = to - from};
    q->cb(q->ud, &d);
}

/* ---- finishing ---- */

static void finish_seq(struct eng_serve *s, struct seq *q, const char *reason)
{
    eng_detok_flush(&q->detok, &q->text);
    struct eng_gen_event ev = {
        .type = ENG_EV_DONE,
        .id = q->id,
        .finish_reason = reason,
        .usage = usage_of(q),
    };
    /* What is left to stream (held back for stop strings that did not come). */
    stream_more(q, true);
    ev.text = q->text.data ? q->text.data : "";
    ev.len = q->text.len;
    struct eng_chat_reply reply = {0};
    struct ag_err perr = {0};
    if (!q->req.prompt && !q->req.json_schema) {
        if (eng_chat_parse(s->family, ev.text, ev.len, &reply, &perr) == 0) {
            ev.reply = &reply;
            if (reply.n_calls > 0 && strcmp(reason, "stop") == 0) ev.finish_reason = "tool_calls";
        } else {
            ev.parse_error = perr.msg;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->st.requests_done++;
    pthread_mutex_unlock(&s->mu);
    q->cb(q->ud, &ev);
    eng_chat_reply_release(&reply);
}

/* ---- sampling ---- */

/* Keeps only the grammar's tokens (and those mk adds: the whitespace after a call's opener,
 * the end-of-generation tokens once the value may end). */
static void apply_mask(struct eng_serve *s, struct seq *q, struct eng_tc_mask mk, float *logits)
{
    const int nv = eng_model_n_vocab(s->model);
    int n = eng_gmatch_allowed(q->gm, s->gvocab, s->allowed);
    for (int i = 0; i < n; i++) s->mask_tmp[i] = logits[s->allowed[i]];
    int32_t keep[8];
    float keep_v[8];
    int n_keep = 0;
    if (mk.lead_ws) {
        static const char *const ws[] = {"\n", " "};
        for (int i = 0; i < 2; i++) {
            int32_t id = eng_token_find(s->tok, ws[i], 1);
            if (id == ENG_TOKEN_NULL) {
                /* byte-level BPE stores "\n" as "Ċ" and " " as "Ġ" */
                const char *bl = i == 0 ? "\xc4\x8a" : "\xc4\xa0";
                id = eng_token_find(s->tok, bl, 2);
            }
            if (id != ENG_TOKEN_NULL && n_keep < 8) {
                keep[n_keep] = id;
                keep_v[n_keep++] = logits[id];
            }
        }
    }
    if (mk.can_end) {
        const int32_t *eog;
        size_t n_eog = eng_tokenizer_eog(s->tok, &eog);
        for (size_t i = 0; i < n_eog && n_keep < 8; i++) {
            keep[n_keep] = eog[i];
            keep_v[n_keep++] = logits[eog[i]];
        }
    }
    for (int i = 0; i < nv; i++) logits[i] = -INFINITY;
    for (int i = 0; i < n; i++) logits[s->allowed[i]] = s->mask_tmp[i];
    for (int i = 0; i < n_keep; i++) logits[keep[i]] = keep_v[i];
}

/* Samples q's next token from its logits; finishes it when done. Returns true when q goes on. */
static bool sample_seq(struct eng_serve *s, struct seq *q, float *logits)
{
    int32_t tok = eng_toolcall_forced(&q->filter, q->max_total - q->n_tokens);
    if (tok != ENG_TC_NONE) {
        eng_sampler_accept(q->smp, tok);
    } else {
        const struct eng_tc_mask mk = eng_toolcall_mask(&q->filter);
        if (mk.apply) apply_mask(s, q, mk, logits);
        if (q->req.ignore_eos) {
            const int32_t *eog;
            size_t n_eog = eng_tokenizer_eog(s->tok, &eog);
            for (size_t i = 0; i < n_eog; i++) logits[eog[i]] = -INFINITY;
        }
        tok = eng_sampler_sample(q->smp, logits);
        eng_sampler_accept(q->smp, tok);
    }
    if (q->n_gen == 0) q->t_first = now_ms();
    q->n_gen++;
    s->rate_gen++;
    pthread_mutex_lock(&s->mu);
    s->st.tokens_generated++;
    pthread_mutex_unlock(&s->mu);

    if (eng_token_is_eog(s->tok, tok)) {
        finish_seq(s, q, "stop");
        return false;
    }
    size_t prev_len = q->text.len, glen = 0;
    const char *gbytes = q->gm ? eng_gvocab_token(s->gvocab, tok, &glen) : NULL;
    eng_detok_push(&q->detok, tok, &q->text);
    q->tokens[q->n_tokens++] = tok;
    const struct eng_tc_step st =
        eng_toolcall_push(&q->filter, gbytes, glen, q->text.data, prev_len, q->text.len);
    if (st.rejected) {
        struct ag_err e;
        ag_err_set(&e, AG_EINTERNAL, "grammar rejected token %d it allowed", tok);
        fail_seq(s, q, &e);
        return false;
    }
    q->text.len = st.len; /* a stop string is cut off */
    if (st.append) ag_buf_printf(&q->text, "%s", st.append);
    if (st.done) {
        finish_seq(s, q, "stop");
        return false;
    }
    if (q->n_tokens >= q->max_total) {
        finish_seq(s, q, "length");
        return false;
    }
    stream_more(q, false);
    return true;
}

/* ---- the step ---- */

/* Admits waiting sequences while their pages can be had. */
static void admit(struct eng_serve *s)
{
    while (s->wait_head && s->n_running < s->p.max_running) {
        struct seq *q = s->wait_head;
        struct ag_err err = {0};
        if (!q->prepared) {
            int rc = prepare(s, q, &err);
            if (rc < 0) {
                s->wait_head = q->next;
                if (!s->wait_head) s->wait_tail = NULL;
                s->n_waiting--;
                fail_seq(s, q, &err);
                seq_free(s, q);
                continue;
            }
        }
        q->n_cached = eng_kvc_match(s->kvc, &q->kv, q->tokens, q->n_prompt);
        if (eng_kvc_grow(s->kvc, &q->kv, q->max_total, &err) < 0) {
            eng_kvc_release(s->kvc, &q->kv); /* try again when pages come back */
            q->n_cached = 0;
            break;
        }
        s->wait_head = q->next;
        if (!s->wait_head) s->wait_tail = NULL;
        s->n_waiting--;
        q->n_done = q->n_cached;
        q->state = SEQ_PREFILL;
        q->t_admit = now_ms();
        /* Appended: the running list is in admission order. */
        struct seq **pp = &s->running;
        while (*pp) pp = &(*pp)->next;
        q->next = NULL;
        *pp = q;
        s->n_running++;
        pthread_mutex_lock(&s->mu);
        s->st.tokens_prompt += (uint64_t)q->n_prompt;
        s->st.tokens_cached += (uint64_t)q->n_cached;
        pthread_mutex_unlock(&s->mu);
    }
}

/* Builds and runs one batch, then samples. */
static void step(struct eng_serve *s)
{
    int n_rows = 0, n_seq = 0, n_logits = 0;
    /* Decode rows first. */
    for (struct seq *q = s->running; q; q = q->next) {
        q->batch_rows = 0;
        q->batch_logits = false;
        if (q->state != SEQ_DECODE) continue;
        s->rows[n_seq] = (struct eng_batch_seq){.tokens = q->tokens + q->n_done,
                                                .n = 1,
                                                .pos = q->n_done,
                                                .pages = q->kv.pages,
                                                /* the float attention kernel for every
                                                 * row: the service needs rows independent of
                                                 * each other, not llama.cpp's f16 bits */
                                                .prefill = true,
                                                .want_logits = true};
        s->row_seq[n_seq++] = q;
        q->batch_rows = 1;
        q->batch_logits = true;
        n_rows++;
        n_logits++;
    }
    /* Then prompt chunks. */
    for (struct seq *q = s->running; q && n_rows < s->p.batch_tokens; q = q->next) {
        if (q->state != SEQ_PREFILL) continue;
        int left = q->n_prompt - q->n_done, take = s->p.batch_tokens - n_rows;
        if (take > left) take = left;
        bool last = take == left;
        s->rows[n_seq] = (struct eng_batch_seq){.tokens = q->tokens + q->n_done,
                                                .n = take,
                                                .pos = q->n_done,
                                                .pages = q->kv.pages,
                                                .prefill = true,
                                                .want_logits = last};
        s->row_seq[n_seq++] = q;
        q->batch_rows = take;
        q->batch_logits = last;
        n_rows += take;
        n_logits += last;
    }
    if (n_seq == 0) return;
    struct ag_err err = {0};
    if (eng_model_forward_seqs(s->model, s->bb, &s->kv, s->rows, n_seq, s->logits, &err) < 0) {
        /* Not expected: rows are built from checked requests. Fail them rather than loop. */
        ag_error("engine: forward failed: %s", err.msg);
        for (int i = 0; i < n_seq; i++) {
            struct seq *q = s->row_seq[i];
            running_remove(s, q);
            fail_seq(s, q, &err);
            seq_free(s, q);
        }
        return;
    }
    const int nv = eng_model_n_vocab(s->model);
    int li = 0;
    for (int i = 0; i < n_seq; i++) {
        struct seq *q = s->row_seq[i];
        q->n_done += q->batch_rows;
        if (q->state == SEQ_PREFILL) s->rate_prompt += (uint64_t)q->batch_rows;
        eng_kvc_commit(s->kvc, &q->kv, q->tokens, q->n_done);
        if (!q->batch_logits) continue;
        float *lg = s->logits + (size_t)li++ * nv;
        q->state = SEQ_DECODE;
        if (!sample_seq(s, q, lg)) {
            running_remove(s, q);
            seq_free(s, q);
        }
    }
}

/* Cancels id wherever it is. */
static void cancel_one(struct eng_serve *s, uint64_t id)
{
    struct ag_err err;
    ag_err_set(&err, AG_ECANCELLED, "request %llu was cancelled", (unsigned long long)id);
    for (struct seq **pp = &s->wait_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        struct seq *q = *pp;
        if (q->id != id) continue;
        *pp = q->next;
        if (s->wait_tail == q) s->wait_tail = prev;
        s->n_waiting--;
        fail_seq(s, q, &err);
        seq_free(s, q);
        return;
    }
    for (struct seq *q = s->running; q; q = q->next)
        if (q->id == id) {
            running_remove(s, q);
            fail_seq(s, q, &err);
            seq_free(s, q);
            return;
        }
}

/* ---- the thread ---- */

static int load(struct eng_serve *s, struct ag_err *err)
{
    int rc = eng_gguf_open(s->model_path, &s->gguf, err);
    if (rc < 0) return rc;
    struct eng_gguf *g = s->gguf;
    struct eng_model_params mp = {
        .n_threads = s->p.n_threads, .n_ctx = s->p.n_ctx, .n_ctx_cap = 8192, .kv_type = ENG_KV_F16};
    rc = eng_tokenizer_load(g, &s->tok, err);
    if (rc == 0) rc = eng_model_load_gguf(g, &mp, &s->model, err);
    if (rc < 0) {
        eng_tokenizer_free(s->tok);
        s->tok = NULL;
        eng_gguf_close(g);
        s->gguf = NULL;
        return rc;
    }
    const char *pack_env = getenv("AGENTD_PACK"); /* 0: keep llama.cpp's kernels (A/B tests) */
    size_t packed = pack_env && strcmp(pack_env, "0") == 0 ? 0 : eng_model_pack_batched(s->model);
    if (packed)
        ag_info("engine: %.1f MiB of weights repacked for batched decoding", packed / 1048576.0);
    if (s->chat_template[0])
        rc = eng_chat_family_by_name(s->chat_template, &s->family, err);
    else
        rc = eng_chat_family_from_gguf(g, &s->family, err);
    if (rc < 0) return rc;
    s->markers = eng_chat_markers(s->family);
    if ((rc = eng_gvocab_new(s->tok, &s->gvocab, err)) < 0) return rc;
    int n_pages = (s->p.kv_positions + (1 << SERVE_PAGE_SHIFT) - 1) >> SERVE_PAGE_SHIFT;
    if ((rc = eng_kv_store_init(s->model, n_pages, SERVE_PAGE_SHIFT, &s->kv, err)) < 0) return rc;
    if ((rc = eng_kvc_new(n_pages, SERVE_PAGE_SHIFT, &s->kvc, err)) < 0) return rc;
    if ((rc = eng_batch_buf_new(s->model, s->p.batch_tokens + s->p.max_running, &s->bb, err)) < 0)
        return rc;
    const size_t nv = (size_t)eng_model_n_vocab(s->model);
    s->logits = ag_calloc((size_t)s->p.max_running * nv, sizeof(float));
    s->mask_tmp = ag_calloc(nv, sizeof(float));
    s->allowed = ag_calloc(nv, sizeof(int32_t));
    s->rows = ag_calloc((size_t)(s->p.batch_tokens + s->p.max_running), sizeof(*s->rows));
    s->row_seq = ag_calloc((size_t)(s->p.batch_tokens + s->p.max_running), sizeof(*s->row_seq));

    const struct eng_hparams *hp = eng_model_hparams(s->model);
    pthread_mutex_lock(&s->mu);
    struct eng_serve_status *st = &s->st;
    const char *name = NULL;
    size_t name_len = 0;
    if (eng_gguf_get_str(g, "general.name", &name, &name_len, NULL) == 0)
        snprintf(st->model_name, sizeof(st->model_name), "%.*s", (int)name_len, name);
    snprintf(st->arch, sizeof(st->arch), "%s",
             hp->arch == ENG_ARCH_GEMMA3  ? "gemma3"
             : hp->arch == ENG_ARCH_QWEN2 ? "qwen2"
                                          : "llama");
    snprintf(st->chat_family, sizeof(st->chat_family), "%s", eng_chat_family_name(s->family));
    st->n_ctx = eng_model_n_ctx(s->model);
    st->n_vocab = (int)nv;
    st->n_threads = s->p.n_threads;
    st->model_bytes = (int64_t)eng_gguf_file_bytes(g);
    st->page_size = 1 << SERVE_PAGE_SHIFT;
    st->pages_total = n_pages;
    st->pages_free = n_pages;
    st->batch_tokens = s->p.batch_tokens;
    st->max_running = s->p.max_running;
    st->load_progress = 1.0;
    st->state = ENG_SERVE_READY;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *engine_main(void *arg)
{
    struct eng_serve *s = arg;
    struct ag_err err = {0};
    int rc = load(s, &err);
    if (rc < 0) {
        ag_error("engine: cannot load %s: %s", s->model_path, err.msg);
        pthread_mutex_lock(&s->mu);
        s->st.state = ENG_SERVE_FAILED;
        snprintf(s->st.error, sizeof(s->st.error), "%s", err.msg);
        pthread_mutex_unlock(&s->mu);
    } else {
        atomic_store(&s->ready, 1);
        ag_info("engine: %s ready (%s, context %d, %d KV pages of %d)", s->model_path, s->st.arch,
                s->st.n_ctx, s->st.pages_total, s->st.page_size);
    }
    s->rate_t0 = now_ms();

    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->in_head && s->n_cancels == 0 && !s->running && !s->wait_head)
            pthread_cond_wait(&s->cv, &s->mu);
        bool stop = s->stop;
        struct seq *in = s->in_head;
        s->in_head = s->in_tail = NULL;
        size_t n_cancels = s->n_cancels;
        uint64_t cancels[64];
        if (n_cancels > 64) n_cancels = 64;
        if (n_cancels > 0) {
            memcpy(cancels, s->cancels, n_cancels * sizeof(uint64_t));
            memmove(s->cancels, s->cancels + n_cancels,
                    (s->n_cancels - n_cancels) * sizeof(uint64_t));
            s->n_cancels -= n_cancels;
        }
        pthread_mutex_unlock(&s->mu);

        while (in) {
            struct seq *q = in;
            in = in->next;
            if (rc < 0) { /* no model */
                struct ag_err e;
                ag_err_set(&e, AG_EUNSUPPORTED, "the model failed to load: %s", err.msg);
                fail_seq(s, q, &e);
                seq_free(s, q);
                continue;
            }
            list_push(&s->wait_head, &s->wait_tail, q);
            s->n_waiting++;
        }
        for (size_t i = 0; i < n_cancels; i++) cancel_one(s, cancels[i]);
        if (stop) break;
        if (rc == 0) {
            admit(s);
            step(s);
        }
        publish_counts(s);
    }

    /* Shutting down: fail everything still here. */
    struct ag_err e;
    ag_err_set(&e, AG_ESHUTDOWN, "the engine is shutting down");
    while (s->running) {
        struct seq *q = s->running;
        running_remove(s, q);
        fail_seq(s, q, &e);
        seq_free(s, q);
    }
    while (s->wait_head) {
        struct seq *q = s->wait_head;
        s->wait_head = q->next;
        fail_seq(s, q, &e);
        seq_free(s, q);
    }
    return NULL;
}

/* ---- API ---- */

int eng_serve_start(const struct eng_serve_params *p, struct eng_serve **out, struct ag_err *err)
{
    *out = NULL;
    if (!p->model_path || !*p->model_path)
        return ag_err_set(err, AG_EINVAL, "engine: no model path");
    if (strlen(p->model_path) >= 512)
        return ag_err_set(err, AG_EINVAL, "engine: model path too long");
    struct eng_serve *s = ag_calloc(1, sizeof(*s));
    s->p = *p;
    snprintf(s->model_path, sizeof(s->model_path), "%s", p->model_path);
    if (p->chat_template)
        snprintf(s->chat_template, sizeof(s->chat_template), "%s", p->chat_template);
    s->p.model_path = s->model_path;
    if (s->p.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->p.n_threads = n > 0 ? (int)n : 1;
    }
    if (s->p.kv_positions <= 0) s->p.kv_positions = 65536;
    if (s->p.batch_tokens <= 0) s->p.batch_tokens = 256;
    if (s->p.max_running <= 0) s->p.max_running = 64;
    if (s->p.max_running > 1024 || s->p.batch_tokens > 2048 || s->p.kv_positions > (1 << 26)) {
        int rc = ag_err_set(err, AG_EINVAL,
                            "engine: max_running %d (<= 1024), batch_tokens %d (<= 2048) or KV "
                            "positions %d (<= 2^26) too large",
                            s->p.max_running, s->p.batch_tokens, s->p.kv_positions);
        free(s);
        return rc;
    }
    s->next_id = 1;
    snprintf(s->st.model_path, sizeof(s->st.model_path), "%s", s->model_path);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return ag_err_set(err, AG_EIO, "engine: cannot start its thread");
    }
    *out = s;
    return 0;
}

void eng_serve_stop(struct eng_serve *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    struct ag_err e;
    ag_err_set(&e, AG_ESHUTDOWN, "the engine is shutting down");
    while (s->in_head) { /* submitted after the thread's last look */
        struct seq *q = s->in_head;
        s->in_head = q->next;
        fail_seq(s, q, &e);
        seq_free(s, q);
    }
    free(s->cancels);
    free(s->logits);
    free(s->mask_tmp);
    free(s->allowed);
    free(s->rows);
    free(s->row_seq);
    eng_batch_buf_free(s->bb);
    eng_kvc_free(s->kvc);
    eng_kv_store_release(&s->kv);
    eng_gvocab_free(s->gvocab);
    eng_tokenizer_free(s->tok);
    eng_model_free(s->model);
    eng_gguf_close(s->gguf); /* after the model and the tokenizer, which borrow it */
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int eng_serve_submit(struct eng_serve *s, struct eng_gen_req *req, eng_gen_cb cb, void *ud,
                     uint64_t *id, struct ag_err *err)
{
    if (!req->prompt && req->chat.n_msgs == 0)
        return ag_err_set(err, AG_EINVAL, "a request needs a prompt or messages");
    if (req->n_stop < 0 || req->n_stop > 4)
        return ag_err_set(err, AG_EINVAL, "at most 4 stop strings (got %d)", req->n_stop);
    for (int i = 0; i < req->n_stop; i++)
        if (!req->stop[i] || !*req->stop[i])
            return ag_err_set(err, AG_EINVAL, "stop string %d is empty", i);
    if (req->max_tokens < 0)
        return ag_err_set(err, AG_EINVAL, "max_tokens %d < 0", req->max_tokens);
    struct seq *q = ag_calloc(1, sizeof(*q));
    q->req = *req;
    q->cb = cb;
    q->ud = ud;
    q->t_submit = now_ms();
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        free(q);
        return ag_err_set(err, AG_ESHUTDOWN, "the engine is shutting down");
    }
    q->id = s->next_id++;
    *id = q->id; /* before the engine thread can see q (it may finish and free it at once) */
    memset(req, 0, sizeof(*req));
    list_push(&s->in_head, &s->in_tail, q);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void eng_serve_cancel(struct eng_serve *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        s->cap_cancels = s->cap_cancels ? 2 * s->cap_cancels : 16;
        s->cancels = ag_realloc(s->cancels, s->cap_cancels * sizeof(uint64_t));
    }
    s->cancels[s->n_cancels++] = id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void eng_serve_get_status(struct eng_serve *s, struct eng_serve_status *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
}

static int check_ready(struct eng_serve *s, struct ag_err *err)
{
    if (atomic_load(&s->ready)) return 0;
    struct eng_serve_status st;
    eng_serve_get_status(s, &st);
    if (st.state == ENG_SERVE_FAILED)
        return ag_err_set(err, AG_EUNSUPPORTED, "the model failed to load: %s", st.error);
    return ag_err_set(err, AG_EBUSY, "the model is still loading");
}

int eng_serve_tokenize(struct eng_serve *s, const char *text, size_t len, bool special,
                       int32_t **ids, size_t *n, struct ag_err *err)
{
    int rc = check_ready(s, err);
    if (rc < 0) return rc;
    unsigned flags = special ? ENG_TOKENIZE_ADD_SPECIAL | ENG_TOKENIZE_PARSE_SPECIAL : 0;
    return eng_tokenize_alloc(s->tok, text, len, flags, ids, n, err);
}
