/*
 * fuzz_chat.c - libFuzzer target for chat templates (engine/chat.c): the reply parser and the
 * renderer. The first byte picks the family; the rest is a model's reply. A reply either parses,
 * and then every call it yields renders back into a prompt of the same family (the arguments are
 * a JSON object), or is refused with AG_EPARSE and a message. The same bytes as message content
 * and as tool-call arguments render (or are refused with AG_EINVAL) with sane spans.
 */
#include <stdlib.h>
#include <string.h>

#include "../engine/engine.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_spans(const struct eng_chat_spans *sp, size_t len)
{
    for (size_t i = 0; i < sp->n; i++) {
        if (sp->v[i].len == 0 || sp->v[i].off + sp->v[i].len > len) abort();
        if (i && sp->v[i].off <= sp->v[i - 1].off + sp->v[i - 1].len) abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 1) return 0;
    enum eng_chat_family f = (enum eng_chat_family)(ENG_CHAT_CHATML + data[0] % 4);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    struct eng_chat_reply r;
    struct ag_err err = {0};
    int rc = eng_chat_parse(f, text, len, &r, &err);
    if (rc != 0) {
        if (rc != AG_EPARSE || err.msg[0] == '\0' || r.content || r.calls) abort();
    } else {
        if (!r.content) abort();
        struct eng_chat_call *calls = calloc(r.n_calls + 1, sizeof *calls);
        for (size_t i = 0; i < r.n_calls; i++) {
            calls[i].name = r.calls[i].name;
            calls[i].arguments = r.calls[i].arguments;
        }
        struct eng_chat_msg msgs[] = {
            {.role = ENG_CHAT_USER, .content = "go"},
            {.role = ENG_CHAT_ASSISTANT,
             .content = r.content,
             .calls = calls,
             .n_calls = r.n_calls},
        };
        struct eng_chat chat = {.msgs = msgs, .n_msgs = 2};
        struct ag_buf out;
        ag_buf_init(&out);
        if (eng_chat_render(f, &chat, &out, NULL, &err) != 0) abort();
        ag_buf_release(&out);
        free(calls);
        eng_chat_reply_release(&r);
    }

    /* the bytes as content (NUL-terminated copy) and as arguments */
    char *s = malloc(len + 1);
    memcpy(s, text, len);
    s[len] = '\0';
    struct eng_chat_call call = {NULL, "f", s};
    struct eng_chat_msg msgs[] = {
        {.role = ENG_CHAT_SYSTEM, .content = s},
        {.role = ENG_CHAT_USER, .content = s},
        {.role = ENG_CHAT_ASSISTANT, .content = s, .calls = &call, .n_calls = 1},
        {.role = ENG_CHAT_TOOL, .content = s},
    };
    struct eng_chat_tool tool = {"t", s, NULL};
    struct eng_chat chat = {
        .msgs = msgs, .n_msgs = 4, .tools = &tool, .n_tools = 1, .add_generation_prompt = true};
    struct ag_buf out;
    struct eng_chat_spans sp = {0};
    ag_buf_init(&out);
    rc = eng_chat_render(f, &chat, &out, &sp, &err);
    if (rc != 0 && rc != AG_EINVAL) abort();
    if (rc == 0) check_spans(&sp, out.len);
    if (rc != 0 && (out.len != 0 || sp.n != 0)) abort();
    ag_buf_release(&out);
    eng_chat_spans_release(&sp);
    free(s);
    return 0;
}
