/*
 * chat.h - chat templates: a conversation (system prompt, messages, tool definitions, tool calls
 * and tool results) rendered to the exact prompt text a model was trained on, and a model's reply
 * parsed back into free text and tool calls.
 *
 * Why not a Jinja interpreter: the engine runs a handful of model families, and each family's
 * template is a few dozen lines of fixed logic. Writing that logic in C keeps the engine free of
 * a template language, makes every byte of a prompt reviewable, and lets tests compare each
 * family against the real template rendered by llama.cpp's Jinja engine and by Python's jinja2
 * (tests/data/chat_templates.jsonl, made by tests/data/gen_chat_templates.py).
 *
 * Families (enum eng_chat_family), told apart by eng_chat_family_detect():
 *   chatml  SmolLM2-Instruct: <|im_start|>role\n...<|im_end|>\n, and the system turn "You are a
 *           helpful AI assistant named SmolLM, trained by Hugging Face" when the conversation has
 *           none. SmolLM2's template knows no tools; tools, calls and results follow Qwen2.5's
 *           ChatML convention below (the one ChatML models trained for tools use).
 *   qwen2   Qwen2.5-Instruct: ChatML with the default system "You are Qwen, created by Alibaba
 *           Cloud. You are a helpful assistant."; tools as a "# Tools" section of the system turn
 *           listing one JSON object per line inside <tools></tools>; a call as
 *           <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> in the assistant turn;
 *           results as <tool_response>\n...\n</tool_response> blocks in one user turn.
 *   llama3  Llama 3.1 / 3.2 / 3.3 Instruct: turns are
 *           <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>; the system turn always
 *           carries "Cutting Knowledge Date: December 2023" and "Today Date: " + struct
 *           eng_chat.date; tools go into the first user turn as indented JSON; a call is the
 *           whole assistant turn, {"name": ..., "parameters": {...}}; results are ipython turns
 *           holding the result as a JSON string. The template allows one call per assistant
 *           message: a message with several is written as that many consecutive assistant
 *           turns. The text of an assistant message with calls is not shown (the template
 *           drops it).
 *   gemma   Gemma 3 Instruct: <start_of_turn>user|model\n...<end_of_turn>\n; the system prompt
 *           opens the first user turn, followed by a blank line; every turn's text is trimmed.
 *           Gemma has no tool format, so this module defines one on top of the template:
 *           tools are described after the system prompt (one JSON object per line, then how to
 *           call); a call is a fenced block in the model turn,
 *               ```tool_call
 *               {"name": "get_weather", "arguments": {"city": "Paris"}}
 *               ```
 *           and a result is a ```tool_result fenced block in a user turn. The template insists
 *           on alternating user/model turns, so messages that land in the same role in a row (a
 *           tool result then a user message, two results) are joined with a blank line. A
 *           conversation whose first turn after the system prompt is the model's is refused, as
 *           the template refuses it.
 *
 * BOS is the tokenizer's business: no family writes it (tokenize with ENG_TOKENIZE_ADD_SPECIAL).
 *
 * JSON written into prompts (tool definitions, call arguments) is printed the way the templates'
 * tojson prints it under Python: ", " and ": " separators (or 4-space indentation for Llama 3's
 * tool list), key order and non-ASCII text kept, only '"', '\\' and control characters escaped.
 * Numbers are written exactly as given: llama.cpp's engine rounds and wraps some (1.0 becomes 1,
 * integers above 2^63 wrap); Python keeps them, and so does this module. Trimming (Llama 3,
 * Gemma) removes what Python's str.strip() removes, Unicode spaces included.
 *
 * Content and the template's own text: a prompt is one string, but it must not be tokenized as
 * one. Control-token text typed by a user or returned by a tool ("<|im_end|>", "<end_of_turn>")
 * has to stay text, or a tool result could close its turn and write a system turn of its own.
 * eng_chat_render() can therefore report the byte ranges that came from the caller (struct
 * eng_chat_spans); tokenize those without ENG_TOKENIZE_PARSE_SPECIAL and the rest with it.
 *
 * Parsing replies (eng_chat_parse): the family's call format, tolerant of whitespace around and
 * inside the markers and of a missing closing marker at the very end of the reply (generation
 * stopped there). chatml/qwen2 also accept a JSON array of calls inside one <tool_call> (what
 * SmolLM2-1.7B writes), llama3 accepts a leading <|python_tag|> and calls separated by ';' or
 * newlines, and every family accepts "parameters" for "arguments" and arguments given as a JSON
 * string holding an object. Llama 3.1's built-in tools (<|python_tag|>name.call(...)) are not
 * recognized and stay text. A call that opens but is malformed (bad JSON, no name, arguments that
 * are not an object, no closing marker before more text) is an error naming the call and the
 * fault, never silently dropped.
 *
 * Files: chat.c (families, rendering), chat_parse.c (replies), chat_json.c (the JSON reader and
 * printer both use, chat_int.h).
 *
 * Ownership: inputs are borrowed for the duration of the call. eng_chat_render() appends to the
 * caller's ag_buf (and span list); on failure both are restored to what they held. A parsed
 * reply owns its strings until eng_chat_reply_release(). Nothing here keeps state between calls:
 * any number of threads may render and parse at once.
 */
#ifndef ENG_CHAT_H
#define ENG_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "../base/base.h"
#include "gguf.h"

enum eng_chat_family {
    ENG_CHAT_CHATML = 1, /* SmolLM2-Instruct */
    ENG_CHAT_QWEN2,      /* Qwen2.5-Instruct */
    ENG_CHAT_LLAMA3,     /* Llama 3.1 / 3.2 / 3.3 Instruct */
    ENG_CHAT_GEMMA,      /* Gemma 3 Instruct */
};

enum eng_chat_role {
    ENG_CHAT_SYSTEM = 0,
    ENG_CHAT_USER,
    ENG_CHAT_ASSISTANT,
    ENG_CHAT_TOOL, /* a tool's result */
};

/* Default "Today Date" of the llama3 family: the one Llama 3.1's template falls back to. */
#define ENG_CHAT_LLAMA3_DATE "26 Jul 2024"

/* One tool call made by the assistant. */
struct eng_chat_call {
    const char *id;        /* the runtime's id for the call; no family prints it; may be NULL */
    const char *name;      /* the tool's name; required, non-empty */
    const char *arguments; /* a JSON object as text; NULL means {} */
};

/* One message of a conversation. */
struct eng_chat_msg {
    enum eng_chat_role role;           /* who speaks */
    const char *content;               /* NULL means "" */
    const struct eng_chat_call *calls; /* assistant only: n_calls calls, in order */
    size_t n_calls;                    /* 0 for a message without calls */
    const char *tool_call_id; /* tool only: the call this answers (not printed); may be NULL */
    const char *name;         /* tool only: the tool's name (not printed); may be NULL */
};

/* A tool the model may call. */
struct eng_chat_tool {
    const char *name;        /* required, non-empty */
    const char *description; /* NULL means "" */
    const char *parameters;  /* JSON Schema of the arguments (a JSON object) as text; NULL: {} */
};

/* A conversation to render. Every pointer is borrowed for the call. */
struct eng_chat {
    const struct eng_chat_msg *msgs;   /* n_msgs messages; a system prompt is msgs[0] */
    size_t n_msgs;                     /* may be 0 */
    const struct eng_chat_tool *tools; /* n_tools tool definitions; 0 means no tools section */
    size_t n_tools;                    /* count of tools */
    bool add_generation_prompt;        /* end with the opening of the assistant's turn */
    const char *date;                  /* llama3 "Today Date", e.g. "02 Jan 2025"; NULL: the
                                          ENG_CHAT_LLAMA3_DATE */
};

/* A byte range of a rendered prompt that holds caller text (content, tool JSON, names). */
struct eng_chat_span {
    size_t off; /* from the start of the ag_buf's data */
    size_t len; /* bytes, > 0 */
};

/* Caller text ranges of a prompt, in order, never overlapping, adjacent ranges merged. */
struct eng_chat_spans {
    struct eng_chat_span *v; /* owned; n used, cap allocated */
    size_t n;                /* spans in v */
    size_t cap;              /* entries allocated */
};

/* Markers for a streaming runtime. */
struct eng_chat_markers {
    /* Literal text that opens a tool call: where grammar-constrained decoding can switch on.
     * llama3's counts only at the start of the reply or of a line, after optional spaces or
     * <|python_tag|>. */
    const char *call_open;
    const char *call_close; /* text that closes a call; "" when the JSON object ends it */
    const char *eot;        /* the end-of-turn token's text */
    /* Texts that end the assistant's turn, NULL-terminated (eot first). */
    const char *stops[4];
};

/* One call found in a reply. */
struct eng_chat_reply_call {
    char *name;      /* owned, NUL-terminated */
    char *arguments; /* owned: the arguments object as compact JSON (numbers as written) */
};

/* A reply split into text and calls. */
struct eng_chat_reply {
    char *content; /* owned: the text outside the calls (never NULL after a successful parse) */
    struct eng_chat_reply_call *calls; /* owned: n_calls calls, in order */
    size_t n_calls;                    /* 0 when the reply is text only */
};

/* ---- families ---- */

/* "chatml", "qwen2", "llama3", "gemma"; "unknown" for anything else. */
const char *eng_chat_family_name(enum eng_chat_family f);
/* An explicit choice by name: the names above, case-insensitive, and the aliases "smollm2",
 * "qwen", "qwen2.5", "llama3.1", "llama3.2", "llama3.3", "gemma3". AG_ENOTFOUND otherwise (err
 * lists the names). */
int eng_chat_family_by_name(const char *name, enum eng_chat_family *out, struct ag_err *err);
/*
 * Tells the family from a GGUF's tokenizer.chat_template (may be NULL), general.architecture and
 * general.name (either may be NULL). The template decides when present: <start_of_turn> is
 * gemma, <|start_header_id|> llama3, <|im_start|> with Qwen's system prompt or <tool_call> qwen2,
 * other <|im_start|> chatml. Without one the architecture does: gemma*, qwen2, llama with
 * "llama" and "3" in the name is llama3, llama with "smollm" is chatml. AG_ENOTFOUND when none of
 * this applies (err says so and lists the names eng_chat_family_by_name() takes).
 */
int eng_chat_family_detect(const char *chat_template, const char *arch, const char *model_name,
                           enum eng_chat_family *out, struct ag_err *err);
/* The same from an open GGUF file. */
int eng_chat_family_from_gguf(const struct eng_gguf *g, enum eng_chat_family *out,
                              struct ag_err *err);

/* The family's markers; NULL for an unknown family. Static, never freed. */
const struct eng_chat_markers *eng_chat_markers(enum eng_chat_family f);

/* ---- render ---- */

/*
 * Appends the prompt for conversation c in family f to out, and, when spans is not NULL, the
 * ranges of caller text to spans. Errors (out and spans untouched): AG_EINVAL for an unknown
 * family or role, calls on a message that is not the assistant's, a call or tool without a name,
 * arguments or parameters that are not a JSON object (err names the message and call, or the
 * tool, and the byte at fault), a gemma conversation whose first turn is the model's, a llama3
 * conversation with tools but no message after the system prompt to put them in.
 */
int eng_chat_render(enum eng_chat_family f, const struct eng_chat *c, struct ag_buf *out,
                    struct eng_chat_spans *spans, struct ag_err *err);
void eng_chat_spans_release(struct eng_chat_spans *s); /* frees v; s may be reused after */

/* ---- parse ---- */

/*
 * Splits a reply (text[0..len), the generated text, with or without a trailing stop text) into
 * free text and calls in family f's format. Without calls, content is the text as is (a trailing
 * stop text dropped); with calls, it is the text around them, each piece trimmed and non-empty
 * pieces joined with "\n". Errors: AG_EPARSE with err naming the call (1-based) and what is
 * wrong; AG_EINVAL for an unknown family. On failure *out is empty (safe to release).
 */
int eng_chat_parse(enum eng_chat_family f, const char *text, size_t len, struct eng_chat_reply *out,
                   struct ag_err *err);
void eng_chat_reply_release(struct eng_chat_reply *r); /* frees everything; r is left empty */

#endif
