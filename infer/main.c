/*
 * agentd-infer - runs the built-in inference engine on one prompt from the command line: loads a
 * GGUF model, tokenizes the prompt, prefills it in one forward call, then samples and decodes up
 * to -n tokens, streaming the text to stdout as it completes (UTF-8 sequences are never split).
 *
 * The tool side of the engine library (as curl's src/ is to lib/): it owns argument parsing,
 * progress on stderr and exit codes (0 ok, 1 error, 2 usage). --json appends one line of
 * statistics; --tokenize prints the prompt's token ids and loads no weights.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../base/base.h"
#include "../engine/engine.h"
#include "../protocol/protocol.h"

#define PROG "agentd-infer"

struct opts {
    const char *model;            /* -m path */
    const char *prompt;           /* -p text */
    const char *system;           /* --system text (with --chat) */
    int n_predict;                /* -n, tokens to generate at most */
    int n_threads;                /* --threads */
    int n_ctx;                    /* --ctx, 0: prompt + n_predict, capped at the trained one */
    bool json;                    /* --json: a statistics line at the end */
    bool tokenize;                /* --tokenize: print the prompt's ids and exit */
    bool chat;                    /* --chat: wrap the prompt in the model's chat template */
    const char *chat_template;    /* --chat-template NAME: the family, instead of the file's */
    struct eng_sampler_params sp; /* sampling */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " -m MODEL -p PROMPT [options]\n"
            "  -m, --model PATH      GGUF model file\n"
            "  -p, --prompt TEXT     prompt text\n"
            "  -n, --n-predict N     tokens to generate at most (default 128)\n"
            "  --temp T              temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K             keep the K best tokens (default 40; 0 = off)\n"
            "  --top-p P             nucleus sampling (default 0.95; 1 = off)\n"
            "  --min-p P             drop tokens below P * p_max (default 0.05; 0 = off)\n"
            "  --repeat-penalty R    penalize the last 64 tokens (default 1 = off)\n"
            "  --seed S              random seed (default: from the clock)\n"
            "  --threads N           compute threads (default: number of cores)\n"
            "  --ctx N               context size (default: prompt + N, at most the trained one)\n"
            "  --chat                wrap the prompt in the model's chat template (a user turn)\n"
            "  --system TEXT         system message for --chat (default: the template's)\n"
            "  --chat-template NAME  chatml | qwen2 | llama3 | gemma (default: from the file)\n"
            "  --json                print a line of JSON statistics after the text\n"
            "  --tokenize            print the prompt's token ids as JSON and exit\n"
            "  -h, --help            this help\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try --help)\n");
    va_end(ap);
    return 2;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

/* Returns -1 when parsed, or the exit code to end with. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (struct opts){.n_predict = 128, .n_threads = cores > 0 ? (int)cores : 1};
    o->sp = eng_sampler_params_default();
    o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--tokenize")) {
            o->tokenize = true;
            continue;
        }
        if (!strcmp(a, "--chat")) {
            o->chat = true;
            continue;
        }
        static const char *const with_value[] = {"-m",
                                                 "--model",
                                                 "-p",
                                                 "--prompt",
                                                 "-n",
                                                 "--n-predict",
                                                 "--temp",
                                                 "--top-k",
                                                 "--top-p",
                                                 "--min-p",
                                                 "--seed",
                                                 "--threads",
                                                 "--ctx",
                                                 "--system",
                                                 "--repeat-penalty",
                                                 "--chat-template",
                                                 NULL};
        bool known = false;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) return usage_error("unknown option '%s'", a);
        if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);
        const char *v = argv[++i];
        long n;
        float f;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            o->prompt = v;
        else if (!strcmp(a, "--system"))
            o->system = v;
        else if (!strcmp(a, "--chat-template"))
            o->chat_template = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!parse_long(v, 0, ENG_MODEL_MAX_CTX, &n)) return usage_error("bad -n '%s'", v);
            o->n_predict = (int)n;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_long(v, 1, 1024, &n)) return usage_error("bad --threads '%s'", v);
            o->n_threads = (int)n;
        } else if (!strcmp(a, "--ctx")) {
            if (!parse_long(v, 1, ENG_MODEL_MAX_CTX, &n)) return usage_error("bad --ctx '%s'", v);
            o->n_ctx = (int)n;
        } else if (!strcmp(a, "--top-k")) {
            if (!parse_long(v, 0, 1 << 24, &n)) return usage_error("bad --top-k '%s'", v);
            o->sp.top_k = (int)n;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || *v == '-') return usage_error("bad --seed '%s'", v);
            o->sp.seed = s;
        } else if (!strcmp(a, "--temp")) {
            if (!parse_float(v, 0, 100, &f)) return usage_error("bad --temp '%s'", v);
            o->sp.temperature = f;
        } else if (!strcmp(a, "--top-p")) {
            if (!parse_float(v, 0, 1, &f)) return usage_error("bad --top-p '%s'", v);
            o->sp.top_p = f;
        } else if (!strcmp(a, "--min-p")) {
            if (!parse_float(v, 0, 1, &f)) return usage_error("bad --min-p '%s'", v);
            o->sp.min_p = f;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (!parse_float(v, 0, 100, &f)) return usage_error("bad --repeat-penalty '%s'", v);
            o->sp.repeat_penalty = f;
        }
    }
    if (!o->model) return usage_error("%s", "missing -m MODEL");
    if (!o->prompt) return usage_error("%s", "missing -p PROMPT");
    if (o->system && !o->chat) return usage_error("%s", "--system needs --chat");
    if (o->chat_template && !o->chat) return usage_error("%s", "--chat-template needs --chat");
    return -1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int fail(const struct ag_err *err)
{
    fprintf(stderr, PROG ": %s\n", err->msg[0] ? err->msg : "failed");
    return 1;
}

/* The prompt as the model sees it: the text, or with --chat a system turn (when given) and a
 * user turn in the model's chat template, ready for the assistant's reply. */
static int build_prompt(const struct opts *o, const struct eng_gguf *g, struct ag_buf *out,
                        struct ag_err *err)
{
    if (!o->chat) {
        ag_buf_puts(out, o->prompt);
        return 0;
    }
    enum eng_chat_family fam;
    int rc = o->chat_template ? eng_chat_family_by_name(o->chat_template, &fam, err)
                              : eng_chat_family_from_gguf(g, &fam, err);
    if (rc != 0) return rc;
    struct eng_chat_msg msgs[2] = {
        {.role = ENG_CHAT_SYSTEM, .content = o->system},
        {.role = ENG_CHAT_USER, .content = o->prompt},
    };
    struct eng_chat c = {.msgs = o->system ? msgs : msgs + 1,
                         .n_msgs = o->system ? 2 : 1,
                         .add_generation_prompt = true};
    return eng_chat_render(fam, &c, out, NULL, err);
}

/* Reads <arch>.context_length, 0 when absent. */
static int trained_ctx(const struct eng_gguf *g)
{
    const char *arch = NULL;
    char key[128];
    uint32_t v = 0;
    if (eng_gguf_get_str(g, "general.architecture", &arch, NULL, NULL) != 0) return 0;
    snprintf(key, sizeof(key), "%s.context_length", arch);
    if (eng_gguf_get_u32(g, key, &v, NULL) != 0 || v > ENG_MODEL_MAX_CTX) return 0;
    return (int)v;
}

static void emit(struct ag_buf *b)
{
    if (b->len) {
        fwrite(b->data, 1, b->len, stdout);
        fflush(stdout);
        ag_buf_reset(b);
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;

    struct ag_err err = {0};
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *tok = NULL;
    struct eng_model *m = NULL;
    struct eng_sampler *smp = NULL;
    struct ag_buf text, piece;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ag_buf_init(&text);
    ag_buf_init(&piece);
    rc = 1;

    struct stat st;
    if (stat(o.model, &st) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", o.model, strerror(errno));
        return 1;
    }
    double t0 = now_ms();
    if (!o.tokenize) {
        fprintf(stderr, "loading %s (%.1f MiB)... ", o.model, (double)st.st_size / 1048576.0);
        fflush(stderr);
    }
    if (eng_gguf_open(o.model, &g, &err) != 0 || eng_tokenizer_load(g, &tok, &err) != 0) {
        if (!o.tokenize) fprintf(stderr, "failed\n");
        rc = fail(&err);
        goto out;
    }
    if (build_prompt(&o, g, &text, &err) != 0) {
        if (!o.tokenize) fprintf(stderr, "failed\n");
        rc = fail(&err);
        goto out;
    }
    if (eng_tokenize_alloc(tok, text.data ? text.data : "", text.len,
                           ENG_TOKENIZE_ADD_SPECIAL | ENG_TOKENIZE_PARSE_SPECIAL, &ids, &n_ids,
                           &err) != 0) {
        if (!o.tokenize) fprintf(stderr, "failed\n");
        rc = fail(&err);
        goto out;
    }
    if (o.tokenize) {
        putchar('[');
        for (size_t i = 0; i < n_ids; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
        printf("]\n");
        rc = 0;
        goto out;
    }
    if (n_ids == 0) {
        fprintf(stderr, "failed\n" PROG ": the prompt is empty (no tokens)\n");
        goto out;
    }

    int n_ctx = o.n_ctx;
    if (n_ctx == 0) {
        long want = (long)n_ids + o.n_predict, train = trained_ctx(g);
        if (train > 0 && want > train) want = train;
        n_ctx = (int)(want < ENG_MODEL_MAX_CTX ? want : ENG_MODEL_MAX_CTX);
    }
    struct eng_model_params mp = {.n_threads = o.n_threads, .n_ctx = n_ctx};
    if (eng_model_load_gguf(g, &mp, &m, &err) != 0) {
        fprintf(stderr, "failed\n");
        rc = fail(&err);
        goto out;
    }
    fprintf(stderr, "done in %.1f s\n", (now_ms() - t0) / 1e3);
    if ((long)n_ids > eng_model_n_ctx(m)) {
        fprintf(stderr, PROG ": the prompt has %zu tokens, more than the context of %d\n", n_ids,
                eng_model_n_ctx(m));
        goto out;
    }
    if (eng_sampler_new(eng_model_n_vocab(m), &o.sp, &smp, &err) != 0) {
        rc = fail(&err);
        goto out;
    }
    for (size_t i = 0; i < n_ids; i++) eng_sampler_accept(smp, ids[i]);

    /* prefill */
    float *logits = NULL;
    double tp = now_ms();
    if (eng_model_forward(m, ids, (int)n_ids, 0, &logits, &err) != 0) {
        rc = fail(&err);
        goto out;
    }
    double prefill_ms = now_ms() - tp;

    /* decode */
    struct eng_detok dt;
    eng_detok_init(&dt, tok, 0);
    const char *stop = "length";
    int n_gen = 0, n_eval = 0, pos = (int)n_ids;
    double td = now_ms();
    while (n_gen < o.n_predict) {
        int32_t t = eng_sampler_sample(smp, logits);
        if (eng_token_is_eog(tok, t)) {
            stop = "eos";
            break;
        }
        eng_sampler_accept(smp, t);
        n_gen++;
        if (eng_detok_push(&dt, t, &piece) == 0) emit(&piece);
        if (n_gen == o.n_predict || pos >= eng_model_n_ctx(m)) break;
        if (eng_model_forward(m, &t, 1, pos, &logits, &err) != 0) {
            eng_detok_flush(&dt, &piece);
            emit(&piece);
            putchar('\n');
            rc = fail(&err);
            goto out;
        }
        pos++;
        n_eval++;
    }
    double decode_ms = now_ms() - td;
    eng_detok_flush(&dt, &piece);
    emit(&piece);
    putchar('\n');

    if (o.json) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        struct proto_val *j = proto_obj();
        proto_add_int(j, "prompt_tokens", (int64_t)n_ids);
        proto_add_int(j, "generated_tokens", n_gen);
        proto_add_num(j, "prefill_tokens_per_s",
                      prefill_ms > 0 ? round((double)n_ids * 1e5 / prefill_ms) / 100 : 0);
        proto_add_num(j, "decode_tokens_per_s",
                      decode_ms > 0 ? round(n_eval * 1e5 / decode_ms) / 100 : 0);
        proto_add_num(j, "prefill_ms", round(prefill_ms * 1000) / 1000);
        proto_add_num(j, "decode_ms", round(decode_ms * 1000) / 1000);
        proto_add_int(j, "peak_rss_kb", (int64_t)ru.ru_maxrss);
        proto_add_str(j, "stop_reason", stop);
        char *s = proto_print(j);
        printf("%s\n", s);
        free(s);
        proto_val_free(j);
    }
    fflush(stdout);
    rc = 0;
out:
    free(ids);
    eng_sampler_free(smp);
    eng_model_free(m);
    eng_tokenizer_free(tok);
    eng_gguf_close(g);
    ag_buf_release(&text);
    ag_buf_release(&piece);
    return rc;
}
