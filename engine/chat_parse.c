/*
 * chat_parse.c - a model's reply split into free text and tool calls, in each family's call
 * format (chat.h lists the formats and what is tolerated).
 *
 * One pass over the reply: find the next call opener (a literal marker, or for Llama 3 a JSON
 * object at the start of a line), keep the text before it, read the call's JSON with the
 * chat_json.c reader (numbers stay as written) and expect the closer. Arguments come back as
 * compact JSON. An opener followed by anything but a well-formed call is an error that names the
 * call; nothing is dropped silently.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "chat_int.h"

struct parse {
    const char *s; /* the reply */
    size_t n;      /* its length, a trailing stop text excluded */
    struct eng_chat_reply *out;
    size_t cap_calls;      /* allocated entries of out->calls */
    struct ag_buf content; /* text outside the calls so far */
    struct ag_err *err;
};

static int ws_or_semicolon(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';';
}

static void add_call(struct parse *p, char *name, char *arguments)
{
    struct eng_chat_reply *o = p->out;
    if (o->n_calls == p->cap_calls) {
        p->cap_calls = p->cap_calls ? p->cap_calls * 2 : 4;
        o->calls = ag_realloc(o->calls, p->cap_calls * sizeof o->calls[0]);
    }
    o->calls[o->n_calls++] = (struct eng_chat_reply_call){name, arguments};
}

/* Adds the reply's text s[a, b) to the content: trimmed, after a "\n" when not the first. */
static void add_text(struct parse *p, size_t a, size_t b)
{
    eng_chat__strip(p->s, &a, &b);
    if (b == a) return;
    if (p->content.len) ag_buf_putc(&p->content, '\n');
    ag_buf_append(&p->content, p->s + a, b - a);
}

/* The number the next call will have, for messages (1-based). */
static size_t call_no(const struct parse *p)
{
    return p->out->n_calls + 1;
}

/* Arguments given as a value at s[*pos]: an object, or a string holding one. */
static int call_arguments(struct parse *p, size_t *pos, char **out)
{
    const char *s = p->s;
    struct ag_buf b;
    ag_buf_init(&b);
    size_t i = eng_chat__json_ws(s, p->n, *pos);
    int rc;
    if (i < p->n && s[i] == '"') {
        struct ag_buf inner;
        ag_buf_init(&inner);
        rc = eng_chat__json_string(s, p->n, &i, &inner, p->err);
        if (rc == 0) {
            const char *t = inner.data ? inner.data : "";
            size_t k = eng_chat__json_ws(t, inner.len, 0);
            if (k >= inner.len || t[k] != '{') {
                rc = ag_err_set(p->err, AG_EPARSE,
                                "arguments are a string that does not hold a JSON object");
            } else {
                rc = eng_chat__json_value(t, inner.len, &k, &eng_chat__json_compact, &b, p->err);
                if (rc == 0 && eng_chat__json_ws(t, inner.len, k) < inner.len)
                    rc = ag_err_set(p->err, AG_EPARSE,
                                    "arguments string has text after its JSON object");
                else if (rc)
                    ag_err_prefix(p->err, "arguments string: ");
            }
        }
        ag_buf_release(&inner);
    } else if (i < p->n && s[i] == '{') {
        rc = eng_chat__json_value(s, p->n, &i, &eng_chat__json_compact, &b, p->err);
    } else {
        rc = ag_err_set(p->err, AG_EPARSE, "arguments at byte %zu are not a JSON object", i);
    }
    if (rc) {
        ag_buf_release(&b);
        return rc;
    }
    *pos = i;
    *out = ag_buf_detach(&b, NULL);
    return 0;
}

/* One call object at s[*pos] ('{'): {"name": "...", "arguments"|"parameters": {...}}, other
 * members ("type", "id") ignored. Adds the call and moves *pos past the object. */
static int call_object(struct parse *p, size_t *pos)
{
    const char *s = p->s;
    size_t n = p->n, i = *pos + 1;
    char *name = NULL, *args = NULL;
    struct ag_buf key;
    ag_buf_init(&key);
    int rc = 0;
    i = eng_chat__json_ws(s, n, i);
    if (i < n && s[i] == '}')
        i++;
    else {
        for (;;) {
            i = eng_chat__json_ws(s, n, i);
            ag_buf_reset(&key);
            if (i >= n || s[i] != '"') {
                rc = ag_err_set(p->err, AG_EPARSE, "expected a member name at byte %zu", i);
                break;
            }
            if ((rc = eng_chat__json_string(s, n, &i, &key, p->err)) != 0) break;
            i = eng_chat__json_ws(s, n, i);
            if (i >= n || s[i] != ':') {
                rc = ag_err_set(p->err, AG_EPARSE, "expected ':' at byte %zu", i);
                break;
            }
            i++;
            const char *k = key.data ? key.data : "";
            if (strcmp(k, "name") == 0 && key.len == 4) {
                size_t v = eng_chat__json_ws(s, n, i);
                struct ag_buf nb;
                ag_buf_init(&nb);
                if (v >= n || s[v] != '"')
                    rc = ag_err_set(p->err, AG_EPARSE, "\"name\" is not a string");
                else
                    rc = eng_chat__json_string(s, n, &v, &nb, p->err);
                if (rc == 0 && (nb.len == 0 || memchr(nb.data, 0, nb.len)))
                    rc = ag_err_set(p->err, AG_EPARSE, "\"name\" is empty or holds a NUL");
                if (rc == 0 && name) rc = ag_err_set(p->err, AG_EPARSE, "\"name\" is given twice");
                if (rc) {
                    ag_buf_release(&nb);
                    break;
                }
                name = ag_buf_detach(&nb, NULL);
                i = v;
            } else if ((strcmp(k, "arguments") == 0 && key.len == 9) ||
                       (strcmp(k, "parameters") == 0 && key.len == 10)) {
                if (args) {
                    rc = ag_err_set(p->err, AG_EPARSE, "arguments are given twice");
                    break;
                }
                if ((rc = call_arguments(p, &i, &args)) != 0) break;
            } else if ((rc = eng_chat__json_value(s, n, &i, &eng_chat__json_compact, NULL,
                                                  p->err)) != 0) {
                break;
            }
            i = eng_chat__json_ws(s, n, i);
            if (i < n && s[i] == ',') {
                i++;
                continue;
            }
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            rc = ag_err_set(p->err, AG_EPARSE, "expected ',' or '}' at byte %zu", i);
            break;
        }
    }
    ag_buf_release(&key);
    if (rc == 0 && !name) rc = ag_err_set(p->err, AG_EPARSE, "the call object has no \"name\"");
    if (rc) {
        free(name);
        free(args);
        return rc;
    }
    add_call(p, name, args ? args : ag_strdup("{}"));
    *pos = i;
    return 0;
}

/* The JSON inside a call block at s[*pos]: one call object, or an array of them. */
static int call_body(struct parse *p, size_t *pos, const char *after)
{
    size_t i = eng_chat__json_ws(p->s, p->n, *pos);
    int rc;
    if (i < p->n && p->s[i] == '[') {
        i = eng_chat__json_ws(p->s, p->n, i + 1);
        if (i < p->n && p->s[i] == ']') {
            i++;
            rc = 0;
        } else {
            for (;;) {
                if (i >= p->n || p->s[i] != '{') {
                    rc = ag_err_set(p->err, AG_EPARSE, "expected a call object at byte %zu", i);
                    break;
                }
                if ((rc = call_object(p, &i)) != 0) break;
                i = eng_chat__json_ws(p->s, p->n, i);
                if (i < p->n && p->s[i] == ',') {
                    i = eng_chat__json_ws(p->s, p->n, i + 1);
                    continue;
                }
                if (i < p->n && p->s[i] == ']') {
                    i++;
                    break;
                }
                rc = ag_err_set(p->err, AG_EPARSE, "expected ',' or ']' at byte %zu", i);
                break;
            }
        }
    } else if (i < p->n && p->s[i] == '{') {
        rc = call_object(p, &i);
    } else {
        rc = ag_err_set(p->err, AG_EPARSE, "expected a JSON object after %s at byte %zu", after, i);
    }
    if (rc) {
        ag_err_prefix(p->err, "tool call %zu: ", call_no(p)); /* the one that failed */
        return rc;
    }
    *pos = i;
    return 0;
}

/* Calls between an opener and a closer: "<tool_call>...</tool_call>", "```tool_call...```". */
static int parse_tagged(struct parse *p, const char *open, const char *close)
{
    size_t seg = 0, lo = strlen(open), lc = strlen(close);
    for (;;) {
        const char *hit = memmem(p->s + seg, p->n - seg, open, lo);
        if (!hit) break;
        size_t at = (size_t)(hit - p->s), i = at + lo, no = call_no(p);
        add_text(p, seg, at);
        int rc = call_body(p, &i, open);
        if (rc) return rc;
        i = eng_chat__json_ws(p->s, p->n, i);
        if (p->n - i >= lc && memcmp(p->s + i, close, lc) == 0) {
            i += lc;
        } else if (i < p->n) {
            /* A missing closer is fine only where the reply ends (generation stopped there). */
            return ag_err_set(
                p->err, AG_EPARSE,
                "tool call %zu: expected %s after the JSON at byte %zu, found other text", no,
                close, i);
        }
        seg = i;
    }
    add_text(p, seg, p->n);
    return 0;
}

/* Does s[i] open an object whose first member is "name" (or "type" then "name")? */
static bool looks_like_call(const char *s, size_t n, size_t i)
{
    i = eng_chat__json_ws(s, n, i + 1);
    if (n - i >= 6 && memcmp(s + i, "\"name\"", 6) == 0) return true;
    return n - i >= 6 && memcmp(s + i, "\"type\"", 6) == 0 && memmem(s + i, n - i, "\"name\"", 6);
}

/* Llama 3: a call is a JSON object at the start of the reply or of a line (after spaces or
 * <|python_tag|>), or right after another call (separated by spaces, newlines or ';'). */
static int parse_llama3(struct parse *p)
{
    static const char tag[] = "<|python_tag|>";
    const char *s = p->s;
    size_t n = p->n, seg = 0, i = 0;
    bool after_call = false;
    while (i < n) {
        /* i is the start of a line, or just past a call */
        size_t q = i;
        if (after_call)
            while (q < n && ws_or_semicolon(s[q])) q++;
        else
            while (q < n && (s[q] == ' ' || s[q] == '\t')) q++;
        if (n - q >= sizeof tag - 1 && memcmp(s + q, tag, sizeof tag - 1) == 0)
            q = eng_chat__json_ws(s, n, q + sizeof tag - 1);
        if (q < n && s[q] == '{' && looks_like_call(s, n, q)) {
            add_text(p, seg, i);
            size_t no = call_no(p);
            int rc = call_object(p, &q);
            if (rc) {
                ag_err_prefix(p->err, "tool call %zu: ", no);
                return rc;
            }
            seg = i = q;
            after_call = true;
            continue;
        }
        after_call = false;
        const char *nl = memchr(s + i, '\n', n - i);
        i = nl ? (size_t)(nl - s) + 1 : n;
    }
    add_text(p, seg, n);
    return 0;
}

void eng_chat_reply_release(struct eng_chat_reply *r)
{
    if (!r) return;
    free(r->content);
    for (size_t i = 0; i < r->n_calls; i++) {
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    memset(r, 0, sizeof *r);
}

int eng_chat_parse(enum eng_chat_family f, const char *text, size_t len, struct eng_chat_reply *out,
                   struct ag_err *err)
{
    memset(out, 0, sizeof *out);
    const struct eng_chat_markers *mk = eng_chat_markers(f);
    if (!mk) return ag_err_set(err, AG_EINVAL, "unknown chat template family %d", (int)f);
    if (!text) text = "";
    for (size_t k = 0; mk->stops[k]; k++) {
        size_t ls = strlen(mk->stops[k]);
        if (len >= ls && memcmp(text + len - ls, mk->stops[k], ls) == 0) {
            len -= ls;
            break;
        }
    }
    struct parse p = {.s = text, .n = len, .out = out, .err = err};
    ag_buf_init(&p.content);
    int rc =
        f == ENG_CHAT_LLAMA3 ? parse_llama3(&p) : parse_tagged(&p, mk->call_open, mk->call_close);
    if (rc) {
        ag_buf_release(&p.content);
        eng_chat_reply_release(out);
        return rc;
    }
    if (out->n_calls == 0) {
        /* no calls: the text as it is */
        ag_buf_reset(&p.content);
        if (len) ag_buf_append(&p.content, text, len);
    }
    out->content = p.content.data ? ag_buf_detach(&p.content, NULL) : ag_strdup("");
    return 0;
}
