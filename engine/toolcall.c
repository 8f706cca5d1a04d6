/*
 * toolcall.c - the streaming filter of a reply: stop strings, hidden tool calls and forced
 * completions (see toolcall.h).
 *
 * Invariants: sent never exceeds the text's length; the bytes of a call (from hide_from) are
 * never streamed: once its closing marker (or free text) follows, sent jumps past them. Forced
 * tokens are those of one completion, planned once per constrained value (a new call drops a
 * plan left from the last one).
 */
#include "toolcall.h"

#include <stdlib.h>
#include <string.h>

#include "../base/base.h"

/* A completion is planned only this close to the end of the budget: earlier, the model has
 * room to finish the value itself. */
#define PLAN_WITHIN_TOKENS 128

void eng_toolcall_init(struct eng_toolcall *f, const struct eng_toolcall_params *p)
{
    memset(f, 0, sizeof(*f));
    f->p = *p;
    f->hide_from = f->closing_from = ENG_TC_NO_POS;
    if (p->mode == ENG_TC_WHOLE) f->active = true;
    if (p->mode == ENG_TC_TOOLS && p->required) {
        f->hide_from = 0; /* the whole reply is the call */
        f->active = true;
        f->started = true; /* no whitespace before the JSON: the newline is there */
        if (p->call_close && *p->call_close) {
            size_t n = strlen(p->call_close);
            f->append = ag_malloc(n + 2);
            f->append[0] = '\n';
            memcpy(f->append + 1, p->call_close, n + 1);
        }
    }
}

void eng_toolcall_release(struct eng_toolcall *f)
{
    free(f->append);
    free(f->forced);
    memset(f, 0, sizeof(*f));
}

/* When the tokens left would not fit the shortest completion of the constrained value (plus
 * one), switches to writing that completion: a value cut by max_tokens would not parse. */
static void plan_completion(struct eng_toolcall *f, int left)
{
    if (f->forced || left > PLAN_WITHIN_TOKENS) return;
    struct ag_buf comp;
    ag_buf_init(&comp);
    if (eng_gmatch_completion(f->p.gm, &comp) == 0 && comp.len > 0) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (f->p.tokenize(f->p.tokenize_ud, comp.data, comp.len, &ids, &n) == 0 &&
            (int)n + 1 >= left) {
            f->forced = ids;
            f->n_forced = n;
            f->i_forced = 0;
            ids = NULL;
        }
        free(ids);
    }
    ag_buf_release(&comp);
}

int32_t eng_toolcall_forced(struct eng_toolcall *f, int left)
{
    if (!f->active) return ENG_TC_NONE;
    plan_completion(f, left);
    if (f->forced && f->i_forced < f->n_forced) return f->forced[f->i_forced++];
    return ENG_TC_NONE;
}

struct eng_tc_mask eng_toolcall_mask(const struct eng_toolcall *f)
{
    if (!f->active) return (struct eng_tc_mask){0};
    return (struct eng_tc_mask){
        .apply = true,
        .lead_ws = f->p.mode == ENG_TC_TOOLS && !f->started,
        .can_end = f->p.mode == ENG_TC_WHOLE && eng_gmatch_can_end(f->p.gm),
    };
}

/* Finds the earliest stop string in the text not yet streamed (and a little before, where a
 * stop could have begun); returns its offset or -1. */
static long find_stop(const struct eng_toolcall *f, const char *text, size_t prev_len, size_t len)
{
    long best = -1;
    for (int i = 0; i < f->p.n_stop; i++) {
        size_t sl = strlen(f->p.stop[i]);
        size_t from = prev_len >= sl ? prev_len - sl + 1 : 0;
        if (from < f->sent) from = f->sent;
        const char *hit = memmem(text + from, len - from, f->p.stop[i], sl);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Watches for the tool-call opener in free text; switches the grammar on after it. */
static void watch_tool_open(struct eng_toolcall *f, const char *text, size_t len)
{
    const char *open = f->p.call_open;
    size_t ol = strlen(open);
    if (len < f->scan_from + ol) return;
    const char *hit = memmem(text + f->scan_from, len - f->scan_from, open, ol);
    if (!hit) {
        f->scan_from = len - ol + 1;
        return;
    }
    size_t after = (size_t)(hit - text) + ol;
    for (size_t i = after; i < len; i++)
        if (text[i] != ' ' && text[i] != '\n') return; /* not at a token edge */
    f->active = true;
    f->started = false;
    f->hide_from = (size_t)(hit - text); /* the call is not streamed as text */
    f->closing_from = ENG_TC_NO_POS;
    eng_gmatch_reset(f->p.gm);
    free(f->forced);
    f->forced = NULL;
    f->scan_from = len;
}

struct eng_tc_step eng_toolcall_push(struct eng_toolcall *f, const char *gbytes, size_t glen,
                                     const char *text, size_t prev_len, size_t len)
{
    struct eng_tc_step st = {.len = len};
    struct eng_gmatch *gm = f->p.gm;
    if (f->active) {
        if (!gbytes || glen == 0 || !eng_gmatch_accept(gm, gbytes, glen)) {
            /* Only the whitespace let through before a call's JSON is outside the grammar. */
            if (!(f->p.mode == ENG_TC_TOOLS && !f->started)) {
                st.rejected = true;
                return st;
            }
        } else {
            f->started = true;
        }
    }
    if (f->p.n_stop > 0) {
        long at = find_stop(f, text, prev_len, len);
        if (at >= 0) {
            st.len = (size_t)at;
            if (f->sent > st.len) f->sent = st.len;
            st.done = true;
            return st;
        }
    }
    if (f->p.mode == ENG_TC_WHOLE &&
        (eng_gmatch_done(gm) ||
         (f->forced && f->i_forced == f->n_forced && eng_gmatch_can_end(gm)))) {
        st.done = true;
        return st;
    }
    if (f->p.mode == ENG_TC_TOOLS && f->p.required && eng_gmatch_done(gm)) {
        st.append = f->append; /* the call is complete: close it and end the reply */
        st.done = true;
        return st;
    }
    if (f->p.mode == ENG_TC_TOOLS) {
        if (f->active && f->started && eng_gmatch_done(gm)) {
            f->active = false; /* the call's JSON is complete: free text again */
            f->scan_from = len;
            f->closing_from = len;
        } else if (!f->active) {
            watch_tool_open(f, text, len);
        }
    }
    return st;
}

/* Length of the longest suffix of text that is a proper prefix of a stop string. */
static size_t stop_holdback(const struct eng_toolcall *f, const char *text, size_t len)
{
    size_t best = 0;
    for (int i = 0; i < f->p.n_stop; i++) {
        size_t sl = strlen(f->p.stop[i]);
        for (size_t k = sl - 1; k > best; k--)
            if (k <= len && memcmp(text + len - k, f->p.stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* How far the text may be streamed. Stop strings that may still come are held back; with tools,
 * so is a call: its opener (and what may be the start of one), its JSON and its closing marker
 * stay out of the stream (the call arrives parsed in the result), and streaming resumes with the
 * free text after it. */
static size_t stream_end(struct eng_toolcall *f, const char *text, size_t len, bool final)
{
    size_t end = final ? len : len - stop_holdback(f, text, len);
    if (f->p.mode != ENG_TC_TOOLS) return end;
    const char *close = f->p.call_close ? f->p.call_close : "";
    if (f->hide_from != ENG_TC_NO_POS && f->closing_from != ENG_TC_NO_POS) {
        /* After the JSON: whitespace, then the closing marker, is still the call. */
        size_t i = f->closing_from;
        while (i < len && (text[i] == ' ' || text[i] == '\n')) i++;
        size_t cl = strlen(close), have = len - i;
        bool prefix = memcmp(text + i, close, have < cl ? have : cl) == 0;
        if (prefix && have >= cl) { /* the whole marker: skip the call */
            f->sent = i + cl;
            f->hide_from = f->closing_from = ENG_TC_NO_POS;
        } else if (!prefix || final) { /* free text right after the JSON */
            f->sent = f->closing_from > f->sent ? f->closing_from : f->sent;
            f->hide_from = f->closing_from = ENG_TC_NO_POS;
        }
    }
    if (f->hide_from != ENG_TC_NO_POS) return f->hide_from < end ? f->hide_from : end;
    if (final) return end;
    /* Free text: hold back what may be the start of an opener. */
    const char *open = f->p.call_open;
    size_t ol = strlen(open);
    for (size_t k = ol - 1; k > 0; k--)
        if (k <= len && memcmp(text + len - k, open, k) == 0) {
            size_t at = len - k;
            return at < end ? at : end;
        }
    return end;
}

bool eng_toolcall_stream(struct eng_toolcall *f, const char *text, size_t len, bool final,
                         size_t *from, size_t *to)
{
    size_t end = stream_end(f, text, len, final);
    if (end <= f->sent) return false;
    *from = f->sent;
    *to = end;
    f->sent = end;
    return true;
}
