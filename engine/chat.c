/*
 * chat.c - chat templates: family detection, prompt rendering and reply parsing (see chat.h for
 * the families and the conventions layered on the templates).
 *
 * Each family's renderer follows its Jinja template statement by statement, so that a reader can
 * hold the two side by side; comments name the template's quirks that the code reproduces on
 * purpose. Every renderer writes through two helpers: lit() for the template's own text and
 * txt() for caller text, which also records the range as a span (chat.h: why spans exist).
 *
 * Input is checked before anything is written (check_conv), so renderers cannot fail halfway on
 * bad JSON; the only errors they raise are the templates' own refusals. Reply parsing lives in
 * chat_parse.c.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat_int.h"

/* ---- families ---- */

static const char *const family_names[] = {
    [ENG_CHAT_CHATML] = "chatml",
    [ENG_CHAT_QWEN2] = "qwen2",
    [ENG_CHAT_LLAMA3] = "llama3",
    [ENG_CHAT_GEMMA] = "gemma",
};

static const struct {
    const char *name;
    enum eng_chat_family family;
} family_aliases[] = {
    {"chatml", ENG_CHAT_CHATML},   {"smollm2", ENG_CHAT_CHATML},  {"qwen2", ENG_CHAT_QWEN2},
    {"qwen", ENG_CHAT_QWEN2},      {"qwen2.5", ENG_CHAT_QWEN2},   {"llama3", ENG_CHAT_LLAMA3},
    {"llama3.1", ENG_CHAT_LLAMA3}, {"llama3.2", ENG_CHAT_LLAMA3}, {"llama3.3", ENG_CHAT_LLAMA3},
    {"gemma", ENG_CHAT_GEMMA},     {"gemma3", ENG_CHAT_GEMMA},
};

#define FAMILY_LIST "chatml, qwen2, llama3, gemma"

static bool family_ok(enum eng_chat_family f)
{
    return f >= ENG_CHAT_CHATML && f <= ENG_CHAT_GEMMA;
}

const char *eng_chat_family_name(enum eng_chat_family f)
{
    return family_ok(f) ? family_names[f] : "unknown";
}

int eng_chat_family_by_name(const char *name, enum eng_chat_family *out, struct ag_err *err)
{
    for (size_t i = 0; name && i < sizeof family_aliases / sizeof family_aliases[0]; i++) {
        if (strcasecmp(name, family_aliases[i].name) == 0) {
            *out = family_aliases[i].family;
            return 0;
        }
    }
    return ag_err_set(err, AG_ENOTFOUND, "unknown chat template family \"%s\" (known: %s)",
                      name ? name : "", FAMILY_LIST);
}

int eng_chat_family_detect(const char *chat_template, const char *arch, const char *model_name,
                           enum eng_chat_family *out, struct ag_err *err)
{
    const char *t = chat_template;
    if (t && *t) {
        if (strstr(t, "<start_of_turn>"))
            *out = ENG_CHAT_GEMMA;
        else if (strstr(t, "<|start_header_id|>"))
            *out = ENG_CHAT_LLAMA3;
        else if (strstr(t, "<|im_start|>") &&
                 (strstr(t, "You are Qwen, created by Alibaba Cloud") || strstr(t, "<tool_call>")))
            *out = ENG_CHAT_QWEN2;
        else if (strstr(t, "<|im_start|>"))
            *out = ENG_CHAT_CHATML;
        else
            return ag_err_set(err, AG_ENOTFOUND,
                              "the model's chat template matches no known family; name one (%s)",
                              FAMILY_LIST);
        return 0;
    }
    const char *name = model_name ? model_name : "";
    if (arch && strncmp(arch, "gemma", 5) == 0) {
        *out = ENG_CHAT_GEMMA;
        return 0;
    }
    if (arch && strcmp(arch, "qwen2") == 0) {
        *out = ENG_CHAT_QWEN2;
        return 0;
    }
    if (arch && strcmp(arch, "llama") == 0) {
        if (strcasestr(name, "smollm")) {
            *out = ENG_CHAT_CHATML;
            return 0;
        }
        if (strcasestr(name, "llama") && strchr(name, '3')) {
            *out = ENG_CHAT_LLAMA3;
            return 0;
        }
    }
    return ag_err_set(err, AG_ENOTFOUND,
                      "no chat template, and architecture \"%s\" / name \"%s\" say nothing about "
                      "the chat format; name one (%s)",
                      arch ? arch : "", name, FAMILY_LIST);
}

/* An optional string key: NULL when absent, an error when present with another type. */
static int gguf_opt_str(const struct eng_gguf *g, const char *key, const char **out,
                        struct ag_err *err)
{
    *out = NULL;
    int rc = eng_gguf_get_str(g, key, out, NULL, err);
    if (rc == AG_ENOTFOUND) {
        ag_err_clear(err);
        return 0;
    }
    return rc;
}

int eng_chat_family_from_gguf(const struct eng_gguf *g, enum eng_chat_family *out,
                              struct ag_err *err)
{
    const char *tmpl, *arch, *name;
    int rc = gguf_opt_str(g, "tokenizer.chat_template", &tmpl, err);
    if (!rc) rc = gguf_opt_str(g, "general.architecture", &arch, err);
    if (!rc) rc = gguf_opt_str(g, "general.name", &name, err);
    if (!rc) rc = eng_chat_family_detect(tmpl, arch, name, out, err);
    if (rc) ag_err_prefix(err, "%s: ", eng_gguf_name(g));
    return rc;
}

static const struct eng_chat_markers markers[] = {
    [ENG_CHAT_CHATML] = {"<tool_call>",
                         "</tool_call>",
                         "<|im_end|>",
                         {"<|im_end|>", "<|endoftext|>", NULL}},
    [ENG_CHAT_QWEN2] = {"<tool_call>",
                        "</tool_call>",
                        "<|im_end|>",
                        {"<|im_end|>", "<|endoftext|>", NULL}},
    [ENG_CHAT_LLAMA3] = {"{\"name\"",
                         "",
                         "<|eot_id|>",
                         {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", NULL}},
    [ENG_CHAT_GEMMA] = {"```tool_call", "```", "<end_of_turn>", {"<end_of_turn>", "<eos>", NULL}},
};

const struct eng_chat_markers *eng_chat_markers(enum eng_chat_family f)
{
    return family_ok(f) ? &markers[f] : NULL;
}

/* ---- text helpers ---- */

/* Length of the UTF-8 sequence at s[i] when it encodes a character that Python's str.isspace()
 * accepts, else 0. */
static size_t space_at(const unsigned char *s, size_t n, size_t i)
{
    unsigned c = s[i];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
    if (c == 0xc2 && i + 1 < n && (s[i + 1] == 0x85 || s[i + 1] == 0xa0)) return 2;
    if (c == 0xe1 && i + 2 < n && s[i + 1] == 0x9a && s[i + 2] == 0x80) return 3; /* U+1680 */
    if (c == 0xe2 && i + 2 < n) {
        unsigned b1 = s[i + 1], b2 = s[i + 2];
        if (b1 == 0x80 && ((b2 >= 0x80 && b2 <= 0x8a) || b2 == 0xa8 || b2 == 0xa9 || b2 == 0xaf))
            return 3;                           /* U+2000..U+200A, U+2028, U+2029, U+202F */
        if (b1 == 0x81 && b2 == 0x9f) return 3; /* U+205F */
    }
    if (c == 0xe3 && i + 2 < n && s[i + 1] == 0x80 && s[i + 2] == 0x80) return 3; /* U+3000 */
    return 0;
}

void eng_chat__strip(const char *s, size_t *a, size_t *b)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k;
    while (*a < *b && (k = space_at(u, *b, *a)) > 0) *a += k;
    while (*b > *a) {
        /* the last character starts at the last byte that is not a continuation byte */
        size_t j = *b - 1;
        while (j > *a && (u[j] & 0xc0) == 0x80) j--;
        if (space_at(u, *b, j) != *b - j) break;
        *b = j;
    }
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* ---- rendering ---- */

/* Where a renderer writes: the prompt and, optionally, the spans of caller text in it. */
struct rd {
    struct ag_buf *out;
    struct eng_chat_spans *spans; /* NULL: not wanted */
};

static void span_add(struct eng_chat_spans *sp, size_t off, size_t len)
{
    if (!sp || len == 0) return;
    if (sp->n > 0 && sp->v[sp->n - 1].off + sp->v[sp->n - 1].len == off) {
        sp->v[sp->n - 1].len += len;
        return;
    }
    if (sp->n == sp->cap) {
        sp->cap = sp->cap ? sp->cap * 2 : 16;
        sp->v = ag_realloc(sp->v, sp->cap * sizeof sp->v[0]);
    }
    sp->v[sp->n++] = (struct eng_chat_span){off, len};
}

void eng_chat_spans_release(struct eng_chat_spans *s)
{
    if (!s) return;
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* Template text. */
static void lit(struct rd *r, const char *s)
{
    ag_buf_puts(r->out, s);
}

/* Records out[from..len) as caller text. */
static void mark(struct rd *r, size_t from)
{
    span_add(r->spans, from, r->out->len - from);
}

/* Caller text. */
static void txtn(struct rd *r, const char *s, size_t n)
{
    size_t from = r->out->len;
    if (n > 0) ag_buf_append(r->out, s, n);
    mark(r, from);
}

static void txt(struct rd *r, const char *s)
{
    s = str_or_empty(s);
    txtn(r, s, strlen(s));
}

/* Caller text, trimmed as the templates' "| trim" does. */
static void txt_trim(struct rd *r, const char *s)
{
    s = str_or_empty(s);
    size_t a = 0, b = strlen(s);
    eng_chat__strip(s, &a, &b);
    txtn(r, s + a, b - a);
}

/* Caller JSON (already checked by check_conv) re-printed in style st; NULL prints {}. */
static void json_txt(struct rd *r, const char *json, const struct eng_chat__jstyle *st)
{
    size_t from = r->out->len, pos = 0;
    if (!json) json = "{}";
    struct ag_err e;
    if (eng_chat__json_value(json, strlen(json), &pos, st, r->out, &e) != 0) {
        /* check_conv() accepted this text, so the re-print cannot fail */
        ag_error("chat: re-printing checked JSON failed: %s", e.msg);
        abort();
    }
    mark(r, from);
}

/* The JSON text of a tool as a template sees it: with full_form, OpenAI's
 * {"type": "function", "function": {...}} (what Qwen and Llama print), else the bare function
 * object (our Gemma convention). Compact; the caller re-prints it in the template's style. */
static char *tool_json(const struct eng_chat_tool *t, bool full_form)
{
    struct ag_buf b;
    ag_buf_init(&b);
    const char *name = str_or_empty(t->name), *desc = str_or_empty(t->description);
    ag_buf_puts(&b, full_form ? "{\"type\":\"function\",\"function\":{\"name\":" : "{\"name\":");
    eng_chat__json_quote(&b, name, strlen(name));
    ag_buf_puts(&b, ",\"description\":");
    eng_chat__json_quote(&b, desc, strlen(desc));
    ag_buf_puts(&b, ",\"parameters\":");
    ag_buf_puts(&b, t->parameters ? t->parameters : "{}");
    ag_buf_puts(&b, full_form ? "}}" : "}");
    return ag_buf_detach(&b, NULL);
}

/* Checks that json is one JSON object and nothing else. */
static int check_object(const char *json, struct ag_err *err)
{
    struct ag_err e = {0};
    size_t n = strlen(json), pos = eng_chat__json_ws(json, n, 0);
    if (pos >= n || json[pos] != '{')
        return ag_err_set(err, AG_EINVAL, "not a JSON object (it must start with '{')");
    if (eng_chat__json_value(json, n, &pos, &eng_chat__json_compact, NULL, &e) != 0)
        return ag_err_set(err, AG_EINVAL, "not valid JSON: %s", e.msg);
    pos = eng_chat__json_ws(json, n, pos);
    if (pos < n) return ag_err_set(err, AG_EINVAL, "text after the JSON object at byte %zu", pos);
    return 0;
}

static const char *role_name(enum eng_chat_role role)
{
    switch (role) {
    case ENG_CHAT_SYSTEM:
        return "system";
    case ENG_CHAT_USER:
        return "user";
    case ENG_CHAT_ASSISTANT:
        return "assistant";
    case ENG_CHAT_TOOL:
        return "tool";
    }
    return "?";
}

static int check_conv(const struct eng_chat *c, struct ag_err *err)
{
    if (c->n_msgs && !c->msgs)
        return ag_err_set(err, AG_EINVAL, "n_msgs is %zu but msgs is NULL", c->n_msgs);
    if (c->n_tools && !c->tools)
        return ag_err_set(err, AG_EINVAL, "n_tools is %zu but tools is NULL", c->n_tools);
    for (size_t i = 0; i < c->n_msgs; i++) {
        const struct eng_chat_msg *m = &c->msgs[i];
        if ((unsigned)m->role > ENG_CHAT_TOOL)
            return ag_err_set(err, AG_EINVAL, "msgs[%zu]: unknown role %d", i, (int)m->role);
        if (m->n_calls == 0) continue;
        if (m->role != ENG_CHAT_ASSISTANT)
            return ag_err_set(err, AG_EINVAL,
                              "msgs[%zu]: a %s message has tool calls; only the assistant's may", i,
                              role_name(m->role));
        if (!m->calls)
            return ag_err_set(err, AG_EINVAL, "msgs[%zu]: n_calls is %zu but calls is NULL", i,
                              m->n_calls);
        for (size_t k = 0; k < m->n_calls; k++) {
            const struct eng_chat_call *call = &m->calls[k];
            if (!call->name || !*call->name)
                return ag_err_set(err, AG_EINVAL, "msgs[%zu].calls[%zu]: the call has no name", i,
                                  k);
            if (call->arguments && check_object(call->arguments, err) != 0) {
                ag_err_prefix(err, "msgs[%zu].calls[%zu] (%s): arguments: ", i, k, call->name);
                return AG_EINVAL;
            }
        }
    }
    for (size_t i = 0; i < c->n_tools; i++) {
        const struct eng_chat_tool *t = &c->tools[i];
        if (!t->name || !*t->name)
            return ag_err_set(err, AG_EINVAL, "tools[%zu]: the tool has no name", i);
        if (t->parameters && check_object(t->parameters, err) != 0) {
            ag_err_prefix(err, "tools[%zu] (%s): parameters: ", i, t->name);
            return AG_EINVAL;
        }
    }
    return 0;
}

/* -- chatml and qwen2: Qwen2.5's template; chatml differs only in the default system prompt -- */

#define QWEN_SYSTEM   "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#define SMOLLM_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static void render_chatml(struct rd *r, const struct eng_chat *c, const char *default_system)
{
    const struct eng_chat_msg *m = c->msgs;
    size_t n = c->n_msgs;
    bool first_is_system = n > 0 && m[0].role == ENG_CHAT_SYSTEM;

    lit(r, "<|im_start|>system\n");
    if (first_is_system)
        txt(r, m[0].content);
    else
        lit(r, default_system);
    if (c->n_tools) {
        lit(r,
            "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for (size_t i = 0; i < c->n_tools; i++) {
            char *t = tool_json(&c->tools[i], true);
            lit(r, "\n");
            json_txt(r, t, &eng_chat__json_python);
            free(t);
        }
        lit(r, "\n</tools>\n\nFor each function call, return a json object with function name and "
               "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
               "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
    }
    lit(r, "<|im_end|>\n");

    for (size_t i = 0; i < n; i++) {
        const struct eng_chat_msg *msg = &m[i];
        if (msg->role == ENG_CHAT_SYSTEM && i == 0) continue; /* written above */
        if (msg->role == ENG_CHAT_TOOL) {
            /* consecutive results share one user turn */
            if (i == 0 || m[i - 1].role != ENG_CHAT_TOOL) lit(r, "<|im_start|>user");
            lit(r, "\n<tool_response>\n");
            txt(r, msg->content);
            lit(r, "\n</tool_response>");
            if (i + 1 == n || m[i + 1].role != ENG_CHAT_TOOL) lit(r, "<|im_end|>\n");
        } else if (msg->role == ENG_CHAT_ASSISTANT && msg->n_calls > 0) {
            lit(r, "<|im_start|>assistant");
            if (msg->content && *msg->content) {
                lit(r, "\n");
                txt(r, msg->content);
            }
            for (size_t k = 0; k < msg->n_calls; k++) {
                /* the name goes in unescaped, as the template writes it */
                lit(r, "\n<tool_call>\n{\"name\": \"");
                txt(r, msg->calls[k].name);
                lit(r, "\", \"arguments\": ");
                json_txt(r, msg->calls[k].arguments, &eng_chat__json_python);
                lit(r, "}\n</tool_call>");
            }
            lit(r, "<|im_end|>\n");
        } else {
            lit(r, "<|im_start|>");
            lit(r, role_name(msg->role));
            lit(r, "\n");
            txt(r, msg->content);
            lit(r, "<|im_end|>\n");
        }
    }
    if (c->add_generation_prompt) lit(r, "<|im_start|>assistant\n");
}

/* -- llama3: Llama 3.1's template (3.2's and 3.3's render the same without builtin tools) -- */

static int render_llama3(struct rd *r, const struct eng_chat *c, struct ag_err *err)
{
    const struct eng_chat_msg *m = c->msgs;
    size_t n = c->n_msgs, i = 0;

    lit(r, "<|start_header_id|>system<|end_header_id|>\n\n");
    if (c->n_tools) lit(r, "Environment: ipython\n");
    lit(r, "Cutting Knowledge Date: December 2023\nToday Date: ");
    txt(r, c->date ? c->date : ENG_CHAT_LLAMA3_DATE);
    lit(r, "\n\n");
    if (n > 0 && m[0].role == ENG_CHAT_SYSTEM) txt_trim(r, m[i++].content);
    lit(r, "<|eot_id|>");

    if (c->n_tools) {
        /* The tools go into the first message after the system prompt, whatever its role. */
        if (i >= n)
            return ag_err_set(
                err, AG_EINVAL,
                "llama3: the tools go into the first user message, and the conversation has none");
        lit(r, "<|start_header_id|>user<|end_header_id|>\n\n"
               "Given the following functions, please respond with a JSON for a function call "
               "with its proper arguments that best answers the given prompt.\n\n"
               "Respond in the format {\"name\": function name, \"parameters\": dictionary of "
               "argument name and its value}.Do not use variables.\n\n");
        for (size_t k = 0; k < c->n_tools; k++) {
            char *t = tool_json(&c->tools[k], true);
            json_txt(r, t, &eng_chat__json_indent4);
            free(t);
            lit(r, "\n\n");
        }
        txt_trim(r, m[i++].content);
        lit(r, "<|eot_id|>");
    }

    for (; i < n; i++) {
        const struct eng_chat_msg *msg = &m[i];
        if (msg->n_calls > 0) {
            /* One call per turn; the message's text is not shown. */
            for (size_t k = 0; k < msg->n_calls; k++) {
                lit(r, "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"");
                txt(r, msg->calls[k].name);
                lit(r, "\", \"parameters\": ");
                json_txt(r, msg->calls[k].arguments, &eng_chat__json_python);
                lit(r, "}<|eot_id|>");
            }
        } else if (msg->role == ENG_CHAT_TOOL) {
            /* The template tests "content is iterable", which a string is: the result is
             * printed as a JSON string. */
            lit(r, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            size_t from = r->out->len;
            const char *s = str_or_empty(msg->content);
            eng_chat__json_quote(r->out, s, strlen(s));
            mark(r, from);
            lit(r, "<|eot_id|>");
        } else {
            lit(r, "<|start_header_id|>");
            lit(r, role_name(msg->role));
            lit(r, "<|end_header_id|>\n\n");
            txt_trim(r, msg->content);
            lit(r, "<|eot_id|>");
        }
    }
    if (c->add_generation_prompt) lit(r, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* -- gemma: Gemma 3's template over our tool convention -- */

#define GEMMA_TOOLS_HEAD                                                                           \
    "You can call the following tools, each described by a JSON object with its name, "            \
    "description and parameters (a JSON Schema):\n"
#define GEMMA_TOOLS_TAIL                                                                           \
    "\n\nTo call a tool, reply with a fenced block tagged tool_call that holds one JSON object, "  \
    "one block per call:\n```tool_call\n{\"name\": \"<tool name>\", \"arguments\": <arguments as " \
    "a JSON object>}\n```\nThe results come back in the next user turn, each in a fenced block "   \
    "tagged tool_result."

/* Text built aside (a turn before trimming, the system prefix) with its own spans. */
struct side {
    struct ag_buf buf;
    struct eng_chat_spans spans;
    struct rd rd; /* writes into buf and spans */
};

static void side_init(struct side *s, bool want_spans)
{
    ag_buf_init(&s->buf);
    memset(&s->spans, 0, sizeof s->spans);
    s->rd.out = &s->buf;
    s->rd.spans = want_spans ? &s->spans : NULL;
}

static void side_release(struct side *s)
{
    ag_buf_release(&s->buf);
    eng_chat_spans_release(&s->spans);
}

/* Appends side text [a, b) to r, carrying its spans over. */
static void side_emit(struct rd *r, const struct side *s, size_t a, size_t b)
{
    size_t base = r->out->len;
    if (b > a) ag_buf_append(r->out, s->buf.data + a, b - a);
    for (size_t k = 0; k < s->spans.n; k++) {
        size_t lo = s->spans.v[k].off, hi = lo + s->spans.v[k].len;
        if (lo < a) lo = a;
        if (hi > b) hi = b;
        if (hi > lo) span_add(r->spans, base + (lo - a), hi - lo);
    }
}

static void gemma_flush(struct rd *r, struct side *turn, bool model, const struct side *prefix)
{
    lit(r, model ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
    if (prefix) {
        side_emit(r, prefix, 0, prefix->buf.len);
        lit(r, "\n\n");
    }
    size_t a = 0, b = turn->buf.len;
    if (b) eng_chat__strip(turn->buf.data, &a, &b);
    side_emit(r, turn, a, b);
    lit(r, "<end_of_turn>\n");
    ag_buf_reset(&turn->buf);
    turn->spans.n = 0;
}

static int render_gemma(struct rd *r, const struct eng_chat *c, struct ag_err *err)
{
    const struct eng_chat_msg *m = c->msgs;
    size_t n = c->n_msgs, i = 0;
    bool want_spans = r->spans != NULL;

    /* The system prompt, then the tools, open the first turn. */
    struct side prefix, turn;
    side_init(&prefix, want_spans);
    side_init(&turn, want_spans);
    bool have_prefix = false;
    if (n > 0 && m[0].role == ENG_CHAT_SYSTEM) {
        txt(&prefix.rd, m[i++].content);
        have_prefix = true;
    }
    if (c->n_tools) {
        if (prefix.buf.len) lit(&prefix.rd, "\n\n");
        lit(&prefix.rd, GEMMA_TOOLS_HEAD);
        for (size_t k = 0; k < c->n_tools; k++) {
            char *t = tool_json(&c->tools[k], false);
            if (k) lit(&prefix.rd, "\n");
            json_txt(&prefix.rd, t, &eng_chat__json_python);
            free(t);
        }
        lit(&prefix.rd, GEMMA_TOOLS_TAIL);
        have_prefix = true;
    }

    /* Messages become user or model turns; a run of one role is one turn. */
    int rc = 0;
    bool first = true, open = false, turn_model = false;
    for (; i < n; i++) {
        const struct eng_chat_msg *msg = &m[i];
        bool model = msg->role == ENG_CHAT_ASSISTANT;
        if (open && model != turn_model) {
            gemma_flush(r, &turn, turn_model, first && have_prefix ? &prefix : NULL);
            first = false;
        }
        if (open && model == turn_model) {
            lit(&turn.rd, "\n\n");
        } else {
            if (first && model) {
                rc = ag_err_set(err, AG_EINVAL,
                                "gemma: the first turn after the system prompt "
                                "must be the user's (Gemma's template requires user/model "
                                "alternation), msgs[%zu] is the assistant's",
                                i);
                goto out;
            }
            open = true;
            turn_model = model;
        }
        struct rd *t = &turn.rd;
        if (msg->role == ENG_CHAT_TOOL) {
            lit(t, "```tool_result\n");
            txt(t, msg->content);
            lit(t, "\n```");
        } else if (model) {
            bool any = false;
            if (msg->content && *msg->content) {
                txt(t, msg->content);
                any = true;
            }
            for (size_t k = 0; k < msg->n_calls; k++, any = true) {
                const struct eng_chat_call *call = &msg->calls[k];
                if (any) lit(t, "\n");
                lit(t, "```tool_call\n");
                struct ag_buf j;
                ag_buf_init(&j);
                ag_buf_puts(&j, "{\"name\":");
                eng_chat__json_quote(&j, call->name, strlen(call->name));
                ag_buf_puts(&j, ",\"arguments\":");
                ag_buf_puts(&j, call->arguments ? call->arguments : "{}");
                ag_buf_putc(&j, '}');
                json_txt(t, j.data, &eng_chat__json_python);
                ag_buf_release(&j);
                lit(t, "\n```");
            }
        } else {
            txt(t, msg->content); /* user, or a later system message */
        }
    }
    if (open) gemma_flush(r, &turn, turn_model, first && have_prefix ? &prefix : NULL);
    if (c->add_generation_prompt) lit(r, "<start_of_turn>model\n");
out:
    side_release(&prefix);
    side_release(&turn);
    return rc;
}

int eng_chat_render(enum eng_chat_family f, const struct eng_chat *c, struct ag_buf *out,
                    struct eng_chat_spans *spans, struct ag_err *err)
{
    if (!family_ok(f)) return ag_err_set(err, AG_EINVAL, "unknown chat template family %d", (int)f);
    int rc = check_conv(c, err);
    if (rc) return rc;
    size_t out_len = out->len, spans_n = spans ? spans->n : 0;
    struct rd r = {out, spans};
    switch (f) {
    case ENG_CHAT_CHATML:
        render_chatml(&r, c, SMOLLM_SYSTEM);
        break;
    case ENG_CHAT_QWEN2:
        render_chatml(&r, c, QWEN_SYSTEM);
        break;
    case ENG_CHAT_LLAMA3:
        rc = render_llama3(&r, c, err);
        break;
    case ENG_CHAT_GEMMA:
        rc = render_gemma(&r, c, err);
        break;
    }
    if (rc) {
        out->len = out_len;
        if (out->data) out->data[out_len] = '\0';
        if (spans) spans->n = spans_n;
    }
    return rc;
}
