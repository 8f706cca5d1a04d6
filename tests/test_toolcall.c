/*
 * test_toolcall.c - the streaming filter of a reply (engine/toolcall.c), driven token by token
 * as the engine service drives it, with real grammars and no model: a "token" here is a piece
 * of text whose grammar bytes are its text, and forced completions are tokenized one byte per
 * token.
 *
 * Covered: plain text streams fully; a stop string split across tokens is held back, then cut;
 * text that only starts like a stop string is released; a tool-call opener is hidden and its
 * JSON withheld; free text after a call (with or without its closing marker) streams again;
 * a required call is closed for the model; stop strings inside and after a hidden call; forced
 * completion near the token budget.
 */
#include <stdlib.h>
#include <string.h>

#include "../base/base.h"
#include "../engine/toolcall.h"
#include "test.h"

#define OPEN  "<tool_call>"
#define CLOSE "</tool_call>"

static const char *const TOOL_PARAMS =
    "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}";

/* One byte per token, the byte's value its id. */
static int tokenize_bytes(void *ud, const char *text, size_t len, int32_t **ids, size_t *n)
{
    (void)ud;
    *ids = malloc((len ? len : 1) * sizeof(int32_t));
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = len;
    return 0;
}

/* A reply being generated: its text, what was streamed, how it ended. */
struct reply {
    struct eng_toolcall f;
    struct eng_grammar *g;
    struct eng_gmatch *gm;
    struct ag_buf text;     /* the reply's text */
    struct ag_buf streamed; /* the deltas, end to end */
    bool done, rejected;
    int n_tokens; /* tokens pushed */
};

static void reply_init(struct reply *r, struct eng_toolcall_params p, struct eng_grammar *g)
{
    memset(r, 0, sizeof(*r));
    struct ag_err err = {0};
    r->g = g;
    if (g) CHECK(eng_gmatch_new(g, &r->gm, &err) == 0);
    p.gm = r->gm;
    p.tokenize = tokenize_bytes;
    ag_buf_init(&r->text);
    ag_buf_init(&r->streamed);
    if (p.required) ag_buf_printf(&r->text, "%s\n", p.call_open);
    eng_toolcall_init(&r->f, &p);
}

static void reply_release(struct reply *r)
{
    eng_toolcall_release(&r->f);
    eng_gmatch_free(r->gm);
    eng_grammar_free(r->g);
    ag_buf_release(&r->text);
    ag_buf_release(&r->streamed);
}

static void stream(struct reply *r, bool final)
{
    size_t from, to;
    if (eng_toolcall_stream(&r->f, r->text.data, r->text.len, final, &from, &to))
        ag_buf_append(&r->streamed, r->text.data + from, to - from);
}

/* Pushes one token of text piece, as serve.c does after sampling it. */
static void push(struct reply *r, const char *piece)
{
    CHECK(!r->done && !r->rejected);
    size_t prev = r->text.len, n = strlen(piece);
    ag_buf_append(&r->text, piece, n);
    r->n_tokens++;
    struct eng_tc_step st = eng_toolcall_push(&r->f, piece, n, r->text.data, prev, r->text.len);
    if (st.rejected) {
        r->rejected = true;
        return;
    }
    r->text.len = st.len;
    if (st.append) ag_buf_printf(&r->text, "%s", st.append);
    if (st.done) {
        r->done = true;
        stream(r, true);
        return;
    }
    stream(r, false);
}

/* The sequence ends (end of generation or budget): what was held back goes out. */
static void finish(struct reply *r)
{
    r->done = true;
    stream(r, true);
}

static bool streamed_is(const struct reply *r, const char *want)
{
    bool ok = r->streamed.len == strlen(want) &&
              (r->streamed.len == 0 || memcmp(r->streamed.data, want, r->streamed.len) == 0);
    if (!ok)
        printf("  streamed \"%.*s\", want \"%s\"\n", (int)r->streamed.len,
               r->streamed.len ? r->streamed.data : "", want);
    return ok;
}

static bool text_is(const struct reply *r, const char *want)
{
    bool ok = r->text.len == strlen(want) &&
              (r->text.len == 0 || memcmp(r->text.data, want, r->text.len) == 0);
    if (!ok)
        printf("  text \"%.*s\", want \"%s\"\n", (int)r->text.len, r->text.len ? r->text.data : "",
               want);
    return ok;
}

static struct eng_grammar *tools_grammar(void)
{
    const char *names[] = {"search"}, *params[] = {TOOL_PARAMS};
    struct eng_grammar *g = NULL;
    struct ag_err err = {0};
    CHECK(eng_grammar_from_tools(names, params, 1, "arguments", &g, &err) == 0);
    return g;
}

static struct eng_grammar *schema_grammar(const char *schema)
{
    struct eng_grammar *g = NULL;
    struct ag_err err = {0};
    CHECK(eng_grammar_from_schema(schema, strlen(schema), &g, &err) == 0);
    return g;
}

static void test_plain_text_streams(void)
{
    struct reply r;
    reply_init(&r, (struct eng_toolcall_params){0}, NULL);
    CHECK(eng_toolcall_forced(&r.f, 1) == ENG_TC_NONE);
    CHECK(!eng_toolcall_mask(&r.f).apply);
    push(&r, "Hello");
    CHECK(streamed_is(&r, "Hello")); /* nothing held back */
    push(&r, ", <tool");             /* no tools: looks like nothing */
    CHECK(streamed_is(&r, "Hello, <tool"));
    push(&r, " world");
    CHECK(!r.done);
    finish(&r);
    CHECK(streamed_is(&r, "Hello, <tool world"));
    CHECK(text_is(&r, "Hello, <tool world"));
    reply_release(&r);
}

static void test_stop_split_across_tokens(void)
{
    const char *stop[] = {"END"};
    struct reply r;
    reply_init(&r, (struct eng_toolcall_params){.stop = stop, .n_stop = 1}, NULL);
    push(&r, "abc E");
    CHECK(streamed_is(&r, "abc ")); /* "E" may begin the stop string */
    push(&r, "N");
    CHECK(streamed_is(&r, "abc "));
    CHECK(!r.done);
    push(&r, "D and more");
    CHECK(r.done);
    CHECK(text_is(&r, "abc "));
    CHECK(streamed_is(&r, "abc "));
    reply_release(&r);

    /* Two stop strings: the earlier one in the text wins, wherever it is in the list. */
    const char *stops[] = {"zz", "\n\n"};
    reply_init(&r, (struct eng_toolcall_params){.stop = stops, .n_stop = 2}, NULL);
    push(&r, "one\n");
    CHECK(streamed_is(&r, "one"));
    push(&r, "\nzz");
    CHECK(r.done);
    CHECK(text_is(&r, "one"));
    CHECK(streamed_is(&r, "one"));
    reply_release(&r);
}

static void test_stop_prefix_released(void)
{
    const char *stop[] = {"END"};
    struct reply r;
    reply_init(&r, (struct eng_toolcall_params){.stop = stop, .n_stop = 1}, NULL);
    push(&r, "x E");
    CHECK(streamed_is(&r, "x "));
    push(&r, "N");
    CHECK(streamed_is(&r, "x "));
    push(&r, "d");
    CHECK(streamed_is(&r, "x ENd")); /* "ENd" is not "END": released */
    push(&r, " EN");
    CHECK(streamed_is(&r, "x ENd "));
    finish(&r); /* the reply ended: the held-back "EN" is text */
    CHECK(streamed_is(&r, "x ENd EN"));
    CHECK(text_is(&r, "x ENd EN"));
    reply_release(&r);
}

static void test_tool_call_hidden(void)
{
    struct reply r;
    reply_init(
        &r,
        (struct eng_toolcall_params){.mode = ENG_TC_TOOLS, .call_open = OPEN, .call_close = CLOSE},
        tools_grammar());
    push(&r, "Let me look. ");
    CHECK(streamed_is(&r, "Let me look. "));
    CHECK(!eng_toolcall_mask(&r.f).apply);
    push(&r, "<tool");
    CHECK(streamed_is(&r, "Let me look. ")); /* may be the opener: held back */
    CHECK(!eng_toolcall_mask(&r.f).apply);
    push(&r, "_call>");
    struct eng_tc_mask mk = eng_toolcall_mask(&r.f);
    CHECK(mk.apply && mk.lead_ws && !mk.can_end); /* the call's grammar, whitespace first */
    push(&r, "\n");
    CHECK(!r.rejected);
    CHECK(eng_toolcall_mask(&r.f).lead_ws);
    push(&r, "{\"name\": \"search\", ");
    CHECK(!r.rejected);
    mk = eng_toolcall_mask(&r.f);
    CHECK(mk.apply && !mk.lead_ws);
    push(&r, "\"arguments\": {\"q\": \"cats\"}");
    CHECK(streamed_is(&r, "Let me look. ")); /* the JSON is withheld */
    push(&r, "}");
    CHECK(!r.rejected);
    CHECK(!eng_toolcall_mask(&r.f).apply); /* the JSON is complete: free text again */
    CHECK(streamed_is(&r, "Let me look. "));
    push(&r, "\n</tool");
    CHECK(streamed_is(&r, "Let me look. "));
    push(&r, "_call>");
    CHECK(streamed_is(&r, "Let me look. "));
    push(&r, " Done.");
    CHECK(streamed_is(&r, "Let me look.  Done.")); /* free text after the call resumes */
    finish(&r);
    CHECK(streamed_is(&r, "Let me look.  Done."));
    CHECK(text_is(&r, "Let me look. <tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": "
                      "\"cats\"}}\n</tool_call> Done."));
    CHECK(!r.done || !r.rejected);
    reply_release(&r);
}

static void test_free_text_after_call(void)
{
    /* No closing marker: text right after the JSON is free text. */
    struct reply r;
    reply_init(
        &r,
        (struct eng_toolcall_params){.mode = ENG_TC_TOOLS, .call_open = OPEN, .call_close = CLOSE},
        tools_grammar());
    push(&r, "<tool_call>");
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"x\"}}");
    CHECK(streamed_is(&r, ""));
    push(&r, " ok");
    CHECK(streamed_is(&r, " ok"));
    /* A second call is hidden as the first was. */
    push(&r, " <tool_call>");
    CHECK(streamed_is(&r, " ok "));
    CHECK(eng_toolcall_mask(&r.f).apply);
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"y\"}}");
    CHECK(!r.rejected);
    push(&r, "</tool_call>");
    push(&r, "bye");
    CHECK(streamed_is(&r, " ok bye"));
    finish(&r);
    CHECK(streamed_is(&r, " ok bye"));
    reply_release(&r);

    /* The reply ends right after the JSON: nothing of the call leaks at the end. */
    reply_init(
        &r,
        (struct eng_toolcall_params){.mode = ENG_TC_TOOLS, .call_open = OPEN, .call_close = CLOSE},
        tools_grammar());
    push(&r, "A");
    push(&r, "<tool_call>\n");
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"x\"}}");
    finish(&r);
    CHECK(streamed_is(&r, "A"));
    reply_release(&r);

    /* The grammar refuses what is not the call's JSON once the call has begun. */
    reply_init(
        &r,
        (struct eng_toolcall_params){.mode = ENG_TC_TOOLS, .call_open = OPEN, .call_close = CLOSE},
        tools_grammar());
    push(&r, "<tool_call> ");
    push(&r, "{\"name\"");
    CHECK(!r.rejected);
    push(&r, " oops");
    CHECK(r.rejected);
    reply_release(&r);
}

static void test_required_call(void)
{
    const char *stop[] = {"\n\n"};
    struct reply r;
    reply_init(&r,
               (struct eng_toolcall_params){.mode = ENG_TC_TOOLS,
                                            .call_open = OPEN,
                                            .call_close = CLOSE,
                                            .required = true,
                                            .stop = stop,
                                            .n_stop = 1},
               tools_grammar());
    struct eng_tc_mask mk = eng_toolcall_mask(&r.f);
    CHECK(mk.apply && !mk.lead_ws); /* the JSON from the first token */
    push(&r, "{\"name\":\"search\",");
    push(&r, "\"arguments\":{\"q\":\"a\"}");
    CHECK(!r.done);
    push(&r, "}");
    CHECK(r.done); /* closed for the model */
    CHECK(text_is(&r,
                  "<tool_call>\n{\"name\":\"search\",\"arguments\":{\"q\":\"a\"}}\n</tool_call>"));
    CHECK(streamed_is(&r, "")); /* the whole reply is the call */
    reply_release(&r);
}

static void test_stop_inside_hidden_call(void)
{
    const char *stop[] = {"cats"};
    struct reply r;
    reply_init(&r,
               (struct eng_toolcall_params){.mode = ENG_TC_TOOLS,
                                            .call_open = OPEN,
                                            .call_close = CLOSE,
                                            .stop = stop,
                                            .n_stop = 1},
               tools_grammar());
    push(&r, "Hi <tool_call>");
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"ca");
    CHECK(!r.done);
    push(&r, "ts");
    CHECK(r.done); /* stop strings apply inside a call too */
    CHECK(text_is(&r, "Hi <tool_call>{\"name\":\"search\",\"arguments\":{\"q\":\""));
    CHECK(streamed_is(&r, "Hi ")); /* and the cut call is still not streamed */
    reply_release(&r);
}

static void test_stop_after_hidden_call(void)
{
    /* A stop string that would begin inside the skipped closing marker does not end the reply:
     * only text not yet streamed is searched. */
    const char *stop[] = {">X"};
    struct reply r;
    reply_init(&r,
               (struct eng_toolcall_params){.mode = ENG_TC_TOOLS,
                                            .call_open = OPEN,
                                            .call_close = CLOSE,
                                            .stop = stop,
                                            .n_stop = 1},
               tools_grammar());
    push(&r, "<tool_call>");
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"x\"}}");
    push(&r, "</tool_call>");
    push(&r, "X");
    CHECK(!r.done);
    CHECK(streamed_is(&r, "X"));
    push(&r, " a>");
    CHECK(streamed_is(&r, "X a")); /* a stop string in free text still holds back and cuts */
    push(&r, "X b");
    CHECK(r.done);
    CHECK(streamed_is(&r, "X a"));
    reply_release(&r);
}

static void test_forced_completion(void)
{
    struct reply r;
    reply_init(&r, (struct eng_toolcall_params){.mode = ENG_TC_WHOLE},
               schema_grammar("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},"
                              "\"required\":[\"a\"]}"));
    struct eng_tc_mask mk = eng_toolcall_mask(&r.f);
    CHECK(mk.apply && !mk.can_end);
    CHECK(eng_toolcall_forced(&r.f, 500) == ENG_TC_NONE); /* far from the budget */
    push(&r, "{\"a\": \"hel");
    CHECK(streamed_is(&r, "{\"a\": \"hel")); /* a constrained value streams as it comes */
    /* The completion is "\"}": two tokens; with 10 left the model may still finish. */
    CHECK(eng_toolcall_forced(&r.f, 10) == ENG_TC_NONE);
    push(&r, "lo");
    /* With 3 left, two tokens plus one is all there is: force them. */
    int32_t t = eng_toolcall_forced(&r.f, 3);
    CHECK(t == '"');
    push(&r, "\"");
    CHECK(!r.done);
    t = eng_toolcall_forced(&r.f, 2);
    CHECK(t == '}');
    push(&r, "}");
    CHECK(r.done);
    CHECK(text_is(&r, "{\"a\": \"hello\"}"));
    CHECK(streamed_is(&r, "{\"a\": \"hello\"}"));
    reply_release(&r);

    /* A number can end the value without the grammar being done: forced tokens end it. */
    reply_init(&r, (struct eng_toolcall_params){.mode = ENG_TC_WHOLE},
               schema_grammar("{\"type\":\"integer\"}"));
    push(&r, "12");
    CHECK(eng_toolcall_mask(&r.f).can_end);
    CHECK(!r.done);
    reply_release(&r);

    /* In a tool call, the plan is dropped when a new call opens. */
    reply_init(
        &r,
        (struct eng_toolcall_params){.mode = ENG_TC_TOOLS, .call_open = OPEN, .call_close = CLOSE},
        tools_grammar());
    CHECK(eng_toolcall_forced(&r.f, 1) == ENG_TC_NONE); /* free text: nothing is forced */
    push(&r, "<tool_call>");
    push(&r, "{\"name\":\"search\",\"arguments\":{\"q\":\"");
    t = eng_toolcall_forced(&r.f, 4); /* "\"}}": three tokens plus one */
    CHECK(t == '"');
    push(&r, "\"");
    CHECK(eng_toolcall_forced(&r.f, 3) == '}');
    push(&r, "}");
    CHECK(eng_toolcall_forced(&r.f, 2) == '}');
    push(&r, "}");
    CHECK(!eng_toolcall_mask(&r.f).apply);
    CHECK(!r.done); /* not required: the reply goes on */
    reply_release(&r);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_plain_text_streams);
    RUN(test_stop_split_across_tokens);
    RUN(test_stop_prefix_released);
    RUN(test_tool_call_hidden);
    RUN(test_free_text_after_call);
    RUN(test_required_call);
    RUN(test_stop_inside_hidden_call);
    RUN(test_stop_after_hidden_call);
    RUN(test_forced_completion);
    return TEST_END();
}
