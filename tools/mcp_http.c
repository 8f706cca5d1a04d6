/*
 * mcp_http.c - the streamable HTTP transport of the MCP client: each message is a POST to the
 * server's URL, through libcurl's multi interface on the loop (as tools/fetch.c drives it: one
 * uv_poll_t per socket curl names, one uv_timer_t for curl's timeouts).
 *
 * A POST carrying a request is answered either with one JSON body or with an SSE stream whose
 * "message" events carry the answer (and maybe server requests and notifications before it);
 * a notification or a response is answered 202. The Mcp-Session-Id the server returns is sent
 * back on every later POST, with MCP-Protocol-Version once it is agreed; a 404 to a POST that
 * carried the session id means the session is over, which the client treats like a server
 * that exited (restart, new session). Stopping DELETEs the session.
 *
 * curl forbids removing transfers from inside its callbacks, and the client's callbacks may
 * stop the client. So nothing reaches the client from inside curl: what the write and header
 * callbacks learn is queued as events, and delivered after curl_multi_socket_action returns.
 *
 * Limits: bodies and SSE events are capped at cfg.max_message_bytes; the optional GET stream
 * for unsolicited server messages is not opened, and a broken SSE stream is not resumed with
 * Last-Event-ID (the call fails instead, with a clear message).
 */
#include "mcp_int.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONNECT_TIMEOUT_MS 10000
#define DELETE_TIMEOUT_MS  2000

enum hev_kind { HEV_MSG, HEV_FAIL, HEV_LOST };

/* Something to tell the client once curl is out of the way. */
struct hev {
    struct hev *next;
    enum hev_kind kind;
    int64_t id; /* HEV_FAIL: the request */
    int code;   /* HEV_FAIL: AG_E... */
    char *text; /* HEV_MSG: the message; HEV_FAIL, HEV_LOST: why */
    size_t len;
};

struct hpost;

struct hsess {
    struct mcp_client *c;
    CURLM *multi;
    uv_timer_t timer;           /* curl's timeout */
    int open;                   /* uv handles not yet closed (timer and polls) */
    struct ag_list posts;       /* transfers in flight (struct hpost), newest first */
    struct hev *evq, *evq_tail; /* events not yet delivered */
    char *session_id;           /* Mcp-Session-Id, once the server gave one */
    int busy;                   /* inside drive(): curl and the queue are being worked */
    bool closing, close_begun, final, lost;
};

struct hsock {
    uv_poll_t poll;
    struct hsess *s;
};

struct hpost {
    struct ag_list node; /* in hsess.posts */
    struct hsess *s;
    CURL *easy;
    struct curl_slist *hdrs;
    int64_t id;            /* the request's id; 0 for a notification or a response */
    bool is_delete;        /* the DELETE at stop */
    bool with_session;     /* sent with the session id */
    bool sse;              /* the answer is an event stream */
    bool answered;         /* an event with our id came */
    bool too_big;          /* over the message limit: stopped */
    char ctype[128];       /* Content-Type of the answer */
    struct ag_buf body;    /* a JSON answer, or the start of an error page */
    struct mcp_sse events; /* the SSE parser */
};

static void drive(struct hsess *s, curl_socket_t fd, int ev);

/* ---- the event queue ---- */

static void ev_push(struct hsess *s, enum hev_kind kind, int64_t id, int code, const char *text,
                    size_t len)
{
    struct hev *e = ag_calloc(1, sizeof(*e));
    e->kind = kind;
    e->id = id;
    e->code = code;
    e->text = ag_strndup(text, len);
    e->len = len;
    if (s->evq_tail)
        s->evq_tail->next = e;
    else
        s->evq = e;
    s->evq_tail = e;
}

static void ev_failf(struct hsess *s, int64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void ev_failf(struct hsess *s, int64_t id, int code, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (id > 0)
        ev_push(s, HEV_FAIL, id, code, why, strlen(why));
    else
        ag_debug("MCP server '%s': %s", mcp__config(s->c)->name, why);
}

static void ev_free_all(struct hsess *s)
{
    while (s->evq) {
        struct hev *e = s->evq;
        s->evq = e->next;
        free(e->text);
        free(e);
    }
    s->evq_tail = NULL;
}

/* ---- transfers ---- */

static void post_free(struct hsess *s, struct hpost *p)
{
    ag_list_remove(&p->node);
    if (p->easy) {
        curl_multi_remove_handle(s->multi, p->easy);
        curl_easy_cleanup(p->easy);
    }
    curl_slist_free_all(p->hdrs);
    ag_buf_release(&p->body);
    mcp_sse_release(&p->events);
    free(p);
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct hpost *p = ud;
    size_t len = size * n;
    char line[512];
    size_t k = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, data, k);
    line[k] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        p->ctype[0] = '\0'; /* a new response (after a 100 Continue) */
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon) return len;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (strcasecmp(line, "content-type") == 0) {
        snprintf(p->ctype, sizeof(p->ctype), "%s", v);
        p->sse = strncasecmp(v, "text/event-stream", 17) == 0;
    } else if (strcasecmp(line, "mcp-session-id") == 0 && *v && !p->is_delete) {
        /* Visible ASCII only, as the spec requires: it goes back into a header. */
        bool ok = strlen(v) < 256;
        for (const char *q = v; *q && ok; q++) ok = *q >= 0x21 && *q <= 0x7E;
        if (ok && (!p->s->session_id || strcmp(p->s->session_id, v) != 0)) {
            free(p->s->session_id);
            p->s->session_id = ag_strdup(v);
        }
    }
    return len;
}

static void on_sse_event(void *ud, const char *data, size_t len, bool too_big)
{
    struct hpost *p = ud;
    struct hsess *s = p->s;
    if (too_big) {
        if (p->id > 0 && !p->answered) {
            p->answered = true;
            ev_failf(s, p->id, AG_ETOOBIG, "sent an event over the %zu-byte message limit",
                     mcp__config(s->c)->max_message_bytes);
        }
        return;
    }
    if (p->id > 0 && mcp__peek_id(data, len < MCP__HEAD_BYTES ? len : MCP__HEAD_BYTES) == p->id)
        p->answered = true;
    ev_push(s, HEV_MSG, 0, 0, data, len);
}

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    struct hpost *p = ud;
    size_t len = size * n, max = mcp__config(p->s->c)->max_message_bytes;
    if (p->sse) {
        mcp_sse_feed(&p->events, data, len, on_sse_event, p);
        return len;
    }
    if (p->body.len + len > max) {
        p->too_big = true;
        return 0; /* stops the transfer */
    }
    ag_buf_append(&p->body, data, len);
    return len;
}

/* A transfer ended: what it means for the client goes on the queue. */
static void post_done(struct hsess *s, struct hpost *p, CURLcode cc)
{
    const struct mcp__cfg *cfg = mcp__config(s->c);
    long status = 0;
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    if (p->is_delete) return;
    if (p->too_big) {
        ev_failf(s, p->id, AG_ETOOBIG, "answered with a body over the %zu-byte message limit",
                 cfg->max_message_bytes);
        return;
    }
    if (cc != CURLE_OK) {
        ev_failf(s, p->id, cc == CURLE_OPERATION_TIMEDOUT ? AG_ETIMEOUT : AG_EIO,
                 "could not be reached at %s: %s", cfg->url, curl_easy_strerror(cc));
        return;
    }
    if (status == 404 && p->with_session) {
        const char *why = "ended its session (HTTP 404)";
        ev_push(s, HEV_LOST, 0, 0, why, strlen(why));
        return;
    }
    if (status >= 300) {
        size_t k = p->body.len < 200 ? p->body.len : 200;
        ev_failf(s, p->id, AG_EIO, "answered HTTP %ld at %s%s%.*s", status, cfg->url, k ? ": " : "",
                 (int)k, p->body.data ? p->body.data : "");
        return;
    }
    if (p->sse) {
        mcp_sse_feed(&p->events, "\n\n", 2, on_sse_event, p); /* an event cut at the end */
        if (p->id > 0 && !p->answered)
            ev_failf(s, p->id, AG_ECLOSED, "ended its event stream without an answer");
        return;
    }
    if (p->body.len > 0) {
        ev_push(s, HEV_MSG, 0, 0, p->body.data, p->body.len);
        return;
    }
    if (p->id > 0)
        ev_failf(s, p->id, AG_EPROTO, "answered HTTP %ld with no body (%s)", status,
                 p->ctype[0] ? p->ctype : "no content type");
}

static void collect(struct hsess *s)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct hpost *p = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&p);
        if (!p) continue;
        post_done(s, p, m->data.result);
        post_free(s, p);
    }
}

static struct hpost *post_start(struct hsess *s, int64_t id, const char *json, size_t n,
                                bool is_delete)
{
    const struct mcp__cfg *cfg = mcp__config(s->c);
    struct hpost *p = ag_calloc(1, sizeof(*p));
    p->s = s;
    p->id = id;
    p->is_delete = is_delete;
    ag_buf_init(&p->body);
    mcp_sse_init(&p->events, cfg->max_message_bytes);
    CURL *e = curl_easy_init();
    if (!e) {
        free(p);
        return NULL;
    }
    p->easy = e;
    p->hdrs = curl_slist_append(p->hdrs, "Accept: application/json, text/event-stream");
    if (!is_delete) p->hdrs = curl_slist_append(p->hdrs, "Content-Type: application/json");
    char h[320];
    if (s->session_id) {
        snprintf(h, sizeof(h), "Mcp-Session-Id: %s", s->session_id);
        p->hdrs = curl_slist_append(p->hdrs, h);
        p->with_session = true;
    }
    const char *v = mcp__protocol_version(s->c);
    if (*v) {
        snprintf(h, sizeof(h), "MCP-Protocol-Version: %s", v);
        p->hdrs = curl_slist_append(p->hdrs, h);
    }
    curl_easy_setopt(e, CURLOPT_URL, cfg->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, p);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->hdrs);
    if (is_delete) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)DELETE_TIMEOUT_MS);
    } else {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, json);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, p);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "agentd-mcp/0.1");
    /* Answers are not compressed or cached by proxies in between: an SSE stream must flow. */
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    ag_list_insert_head(&s->posts, &p->node);
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
        post_free(s, p);
        return NULL;
    }
    return p;
}

/* ---- the multi handle on the loop ---- */

static void on_closed(uv_handle_t *h)
{
    struct hsess *s = h->data;
    if (h != (uv_handle_t *)&s->timer) free(h); /* a struct hsock */
    if (--s->open > 0) return;
    struct mcp_client *c = s->c;
    free(s->session_id);
    free(s);
    mcp__gone(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct hsock *k = (struct hsock *)h;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)h, &fd);
    drive(k->s, (curl_socket_t)fd, flags);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp)
{
    struct hsess *s = ud;
    struct hsock *k = sockp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            uv_poll_stop(&k->poll);
            uv_close((uv_handle_t *)&k->poll, on_closed);
            curl_multi_assign(s->multi, fd, NULL);
        }
        return 0;
    }
    if (!k) {
        k = ag_calloc(1, sizeof(*k));
        k->s = s;
        if (uv_poll_init_socket(mcp__loop(s->c), &k->poll, fd) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = s;
        s->open++;
        curl_multi_assign(s->multi, fd, k);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    uv_poll_start(&k->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    drive(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer_change(CURLM *m, long timeout_ms, void *ud)
{
    struct hsess *s = ud;
    (void)m;
    if (s->final) return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The last step of a close: no transfer left. */
static void finalize(struct hsess *s)
{
    if (s->final) return;
    s->final = true;
    curl_multi_cleanup(s->multi); /* sockets go through on_socket's REMOVE first */
    s->multi = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_closed);
}

static void begin_close(struct hsess *s)
{
    s->close_begun = true;
    ev_free_all(s);
    for (struct ag_list *it; (it = ag_list_pop(&s->posts)) != NULL;)
        post_free(s, ag_list_entry(it, struct hpost, node));
    /* A polite goodbye; a server that ended the session already needs none. */
    if (s->session_id && !s->lost) post_start(s, 0, NULL, 0, true);
    if (ag_list_empty(&s->posts)) finalize(s);
}

/* Hands queued events to the client, outside every curl callback. */
static void deliver(struct hsess *s)
{
    if (s->busy) return;
    s->busy++;
    while (s->evq && !s->closing) {
        struct hev *e = s->evq;
        s->evq = e->next;
        if (!s->evq) s->evq_tail = NULL;
        if (e->kind == HEV_MSG) {
            mcp__received(s->c, s, e->text, e->len);
        } else if (e->kind == HEV_FAIL) {
            mcp__send_failed(s->c, s, e->id, e->code, e->text);
        } else if (!s->lost) {
            s->lost = true;
            mcp__lost(s->c, s, e->text);
        }
        free(e->text);
        free(e);
    }
    s->busy--;
    if (s->closing && !s->close_begun)
        begin_close(s);
    else if (s->close_begun && ag_list_empty(&s->posts))
        finalize(s);
}

static void drive(struct hsess *s, curl_socket_t fd, int ev)
{
    if (s->final) return;
    int running;
    s->busy++;
    curl_multi_socket_action(s->multi, fd, ev, &running);
    collect(s);
    s->busy--;
    deliver(s);
}

/* ---- the transport ---- */

static void *http_start(struct mcp_client *c, struct ag_err *err)
{
    static bool global_done;
    const struct mcp__cfg *cfg = mcp__config(c);
    if (strncasecmp(cfg->url, "http://", 7) != 0 && strncasecmp(cfg->url, "https://", 8) != 0) {
        ag_err_set(err, AG_EINVAL, "url '%s' is not an http(s) URL", cfg->url);
        return NULL;
    }
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            ag_err_set(err, AG_EIO, "libcurl failed to initialize");
            return NULL;
        }
        global_done = true;
    }
    struct hsess *s = ag_calloc(1, sizeof(*s));
    s->c = c;
    ag_list_init(&s->posts);
    s->multi = curl_multi_init();
    if (!s->multi) {
        free(s);
        ag_err_set(err, AG_EIO, "libcurl: cannot create a multi handle");
        return NULL;
    }
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    uv_timer_init(mcp__loop(c), &s->timer);
    s->timer.data = s;
    s->open = 1;
    return s;
}

static void http_send(void *tp, int64_t id, const char *json, size_t n)
{
    struct hsess *s = tp;
    if (s->closing) return;
    if (!post_start(s, id, json, n, false))
        ev_failf(s, id, AG_EIO, "could not be sent a request (libcurl refused the transfer)");
    deliver(s);
}

static void http_abandon(void *tp, int64_t id)
{
    struct hsess *s = tp;
    if (s->closing) return;
    ag_list_foreach_safe (it, &s->posts) {
        struct hpost *p = ag_list_entry(it, struct hpost, node);
        if (p->id == id) {
            post_free(s, p);
            return;
        }
    }
}

static void http_close(void *tp)
{
    struct hsess *s = tp;
    if (s->closing) return;
    s->closing = true;
    if (!s->busy) begin_close(s);
}

const struct mcp__transport mcp__http = {
    .name = "http",
    .start = http_start,
    .send = http_send,
    .abandon = http_abandon,
    .close = http_close,
    .stderr_tail = NULL,
};
