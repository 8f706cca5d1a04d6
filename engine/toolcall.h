/*
 * toolcall.h - the streaming filter of one generated reply: stop strings, tool calls and
 * constrained values, as the engine service applies them token by token (toolcall.c).
 *
 * What: a reply is generated one token at a time; before each token the filter says whether
 * the grammar mask applies (and which tokens it lets through besides the grammar's) or which
 * token it forces; after each token it says whether the reply is complete, where its text ends
 * (a stop string is cut off) and how far the text may be streamed. It holds back:
 *   - the beginning of a stop string, until the text either completes it (the reply ends
 *     before it) or moves past it (the text is released);
 *   - with tools, a tool call: the family's opener (and text that may be the start of one), the
 *     call's JSON and its closing marker. The grammar of the tools' calls switches on after
 *     the opener and off after the JSON; streaming resumes with the free text after the call.
 * And it forces the grammar's shortest completion when the tokens left would not fit it
 * otherwise, so that a value cut short by max_tokens still parses.
 *
 * Why a filter: these rules interact (a stop string inside a hidden call, a budget that ends
 * during a call) and are easiest to get right, and to test, away from batching and threads. The
 * filter is plain data and functions over the reply's text: no threads, no service state; the
 * caller (serve.c) owns the text, the tokens and the grammar matcher, and applies the filter's
 * answers.
 *
 * Use per token: eng_toolcall_forced(); when it forces nothing, sample with
 * eng_toolcall_mask()'s mask; append the token's text; eng_toolcall_push(); while the reply goes
 * on, eng_toolcall_stream(). After the last token (and any bytes flushed from the detokenizer)
 * eng_toolcall_stream() with final set.
 */
#ifndef ENG_TOOLCALL_H
#define ENG_TOOLCALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar.h"

/* How the grammar applies to a reply. */
enum eng_tc_mode {
    ENG_TC_FREE = 0, /* free text (stop strings only) */
    ENG_TC_WHOLE,    /* the whole reply is one constrained value (a JSON Schema reply) */
    ENG_TC_TOOLS,    /* free text, and tool calls constrained once the model opens one */
};

/* Tokenizes text as plain text (no control tokens) into *ids (malloc'd, the caller frees);
 * 0 or a negative error. */
typedef int (*eng_tc_tokenize_fn)(void *ud, const char *text, size_t len, int32_t **ids, size_t *n);

struct eng_toolcall_params {
    enum eng_tc_mode mode;
    struct eng_gmatch *gm;   /* WHOLE, TOOLS: the grammar's matcher; borrowed, outlives the
                                filter, which resets it and feeds it tokens */
    const char *call_open;   /* TOOLS: the family's call opener, non-empty ("<tool_call>") */
    const char *call_close;  /* TOOLS: its closing marker, or NULL or "" */
    bool required;           /* TOOLS: the reply is one call, whose opener and a newline
                                already begin the text; the filter appends the closing
                                marker when the JSON is complete */
    const char *const *stop; /* stop strings, non-empty, borrowed */
    int n_stop;
    eng_tc_tokenize_fn tokenize; /* WHOLE, TOOLS: for the forced completion */
    void *tokenize_ud;
};

/* The filter of one reply. Fields are the filter's; read them only in tests. */
struct eng_toolcall {
    struct eng_toolcall_params p;
    char *append;        /* required with a closing marker: "\n" and the marker (owned) */
    bool active;         /* the grammar mask applies now */
    bool started;        /* TOOLS: bytes went into the current call's JSON */
    size_t sent;         /* bytes of text streamed */
    size_t scan_from;    /* TOOLS: where to look for the next opener */
    size_t hide_from;    /* TOOLS: text from here is a call, not streamed (ENG_TC_NO_POS: none) */
    size_t closing_from; /* TOOLS: the call's JSON ended here; its closing marker may follow
                            (ENG_TC_NO_POS: still inside the call) */
    int32_t *forced;     /* tokens of the grammar's shortest completion, once planned (owned) */
    size_t n_forced, i_forced;
};

#define ENG_TC_NO_POS ((size_t)-1)
#define ENG_TC_NONE   (-1) /* eng_toolcall_forced(): no token forced */

/* What the mask lets through when it applies. */
struct eng_tc_mask {
    bool apply;   /* keep only the grammar's tokens ... */
    bool lead_ws; /* ... and "\n" and " " (before a call's JSON: the whitespace after the opener) */
    bool can_end; /* ... and the end-of-generation tokens (the value is complete) */
};

/* What a token did to the reply. */
struct eng_tc_step {
    bool rejected;      /* the grammar refused a token its mask allowed (the reply fails) */
    bool done;          /* the reply is complete (finish reason "stop") */
    size_t len;         /* the text's length from now on: shorter when a stop string was cut */
    const char *append; /* with done: text to append to the reply (the required call's closing
                           marker), or NULL; lives as long as the filter */
};

/* Starts the filter of a reply whose text is empty (or, with required, holds the opener). */
void eng_toolcall_init(struct eng_toolcall *f, const struct eng_toolcall_params *p);
void eng_toolcall_release(struct eng_toolcall *f); /* zeroed is fine */

/* Before sampling, with `left` tokens left in the budget: the token the filter forces, or
 * ENG_TC_NONE. A token is forced once the grammar's shortest completion (plus one token) needs
 * all that is left; from then on its tokens come one per call. */
int32_t eng_toolcall_forced(struct eng_toolcall *f, int left);
/* Before sampling a token that was not forced: the mask to apply. */
struct eng_tc_mask eng_toolcall_mask(const struct eng_toolcall *f);
/* A token was chosen (not an end-of-generation one) and its text appended: gbytes (glen) are
 * the token's bytes as the grammar reads them (eng_gvocab_token), text (len) the whole reply so
 * far, whose bytes prev_len.. came from this token. */
struct eng_tc_step eng_toolcall_push(struct eng_toolcall *f, const char *gbytes, size_t glen,
                                     const char *text, size_t prev_len, size_t len);
/* How far text (len bytes, the whole reply) may be streamed now; final: nothing more will come.
 * Returns true with [*from, *to) when there are new bytes to send, and counts them as sent. */
bool eng_toolcall_stream(struct eng_toolcall *f, const char *text, size_t len, bool final,
                         size_t *from, size_t *to);

#endif
