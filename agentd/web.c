/*
 * web.c - the web.fetch and web.cancel methods: a page as text, fetched on the loop with the
 * policy of tools/fetch.h (the fetch_url tool of agent runs calls web.fetch).
 *
 * The SSRF guard's exceptions come from --fetch-allow. A fetch is cancelled by web.cancel
 * {request_id} or when its client goes away.
 */
#include "agentd.h"

#include "../tools/fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEB_MAX_BYTES_CAP (64u << 20) /* the most a caller may ask to read */
#define WEB_MAX_NETS      32
#define WEB_MAX_PATTERNS  64

struct wreq {
    struct ag_list node; /* in webd.live */
    struct webd *w;
    struct conn *c;
    struct proto_req req;
    uint64_t id;
    char request_id[80];
};

struct webd {
    struct agentd *d;
    struct fetcher *f;
    struct fetch_net nets[WEB_MAX_NETS];
    size_t n_nets;
    struct ag_list live; /* web.fetch requests in flight (struct wreq.node) */
    int n_live;
    uint64_t next_name;
};

static void unlink_req(struct webd *w, struct wreq *q)
{
    ag_list_remove(&q->node);
    w->n_live--;
}

static void on_fetched(void *ud, struct fetch_result *res)
{
    struct wreq *q = ud;
    struct webd *w = q->w;
    struct conn *c = q->c;
    unlink_req(w, q);
    if (!c->closing) {
        if (res->err_code) {
            struct ag_err err = {0};
            ag_err_set(&err, res->err_code, "%s", res->err);
            struct proto_val *data = proto_obj();
            if (res->status) proto_add_int(data, "status", res->status);
            conn_reply_error_data(c, q->req.id, &err, data);
            proto_val_free(data);
        } else {
            struct proto_val *r = proto_obj();
            proto_add_str(r, "request_id", q->request_id);
            proto_add_str(r, "url", res->url);
            proto_add_int(r, "status", res->status);
            if (res->content_type)
                proto_add_str(r, "content_type", res->content_type);
            else
                proto_add_null(r, "content_type");
            if (res->title) proto_add_str(r, "title", res->title);
            proto_add_str(r, "text", res->text ? res->text : "");
            proto_add_int(r, "bytes", (int64_t)res->bytes);
            proto_add_bool(r, "truncated", res->truncated);
            proto_add_int(r, "redirects", res->redirects);
            conn_reply(c, q->req.id, r);
            proto_val_free(r);
        }
    }
    fetch_result_release(res);
    proto_req_release(&q->req);
    free(q);
    conn_end_async(c);
}

/* A JSON array of host patterns -> NULL-terminated list (pointers into the request). */
static int patterns(const struct proto_val *p, const char *key, const char **out,
                    struct ag_err *err)
{
    const struct proto_val *a = proto_get(p, key);
    out[0] = NULL;
    if (!a || proto_type(a) == PROTO_NULL) return 0;
    if (proto_type(a) != PROTO_ARRAY || proto_len(a) >= WEB_MAX_PATTERNS)
        return ag_err_set(err, AG_EPARAMS,
                          "params.%s: expected an array of at most %d host "
                          "patterns",
                          key, WEB_MAX_PATTERNS - 1);
    for (size_t i = 0; i < proto_len(a); i++) {
        out[i] = proto_str(proto_at(a, i));
        if (!out[i] || !*out[i])
            return ag_err_set(err, AG_EPARAMS, "params.%s[%zu]: expected a host pattern", key, i);
    }
    out[proto_len(a)] = NULL;
    return 0;
}

static int m_fetch(struct webd *w, struct conn *c, struct proto_req *req, struct ag_err *err)
{
    const struct proto_val *p = req->params;
    const char *url = proto_get_str(p, "url"), *rid = proto_get_str(p, "request_id");
    int64_t max_bytes = proto_int(proto_get(p, "max_bytes"), 0);
    int64_t timeout_ms = proto_int(proto_get(p, "timeout_ms"), 0);
    bool robots = proto_bool(proto_get(p, "robots"), false);
    int rc;
    const char *allow[WEB_MAX_PATTERNS], *deny[WEB_MAX_PATTERNS];
    if ((rc = patterns(p, "allow", allow, err)) != 0 || (rc = patterns(p, "deny", deny, err)) != 0)
        return rc;
    if (rid && (!*rid || strlen(rid) >= 80))
        return ag_err_set(err, AG_EPARAMS, "params.request_id: 1 to 79 bytes");
    struct wreq *q = ag_calloc(1, sizeof(*q));
    q->w = w;
    q->c = c;
    if (rid)
        snprintf(q->request_id, sizeof(q->request_id), "%s", rid);
    else
        snprintf(q->request_id, sizeof(q->request_id), "fetch-%llu",
                 (unsigned long long)++w->next_name);
    struct fetch_opts o = {
        .max_bytes = (size_t)max_bytes,
        .timeout_ms = (int)timeout_ms,
        .allow_hosts = allow,
        .deny_hosts = deny,
        .robots = robots,
        .allow_net = w->nets,
        .n_allow_net = w->n_nets,
    };
    q->req = *req;
    memset(req, 0, sizeof(*req));
    ag_list_insert_head(&w->live, &q->node);
    w->n_live++;
    conn_begin_async(c);
    q->id = fetch_start(w->f, url, &o, on_fetched, q);
    return METHOD_ASYNC;
}

static int m_fetch_row(struct conn *c, struct proto_req *req, struct proto_val **result,
                       struct ag_err *err)
{
    (void)result;
    if (!c->d->web) return ag_err_set(err, AG_EUNSUPPORTED, "the web client is not running");
    return m_fetch(c->d->web, c, req, err);
}

static int m_cancel(struct conn *c, struct proto_req *req, struct proto_val **result,
                    struct ag_err *err)
{
    struct webd *w = c->d->web;
    const char *rid = proto_get_str(req->params, "request_id");
    if (w)
        ag_list_foreach (it, &w->live) {
            struct wreq *q = ag_list_entry(it, struct wreq, node);
            if (strcmp(q->request_id, rid) == 0) {
                fetch_cancel(w->f, q->id); /* answers the fetch, frees q */
                *result = proto_obj();
                proto_add_bool(*result, "cancelled", true);
                return 0;
            }
        }
    return ag_err_set(err, AG_ENOTFOUND, "no fetch '%s' is running", rid);
}

#define HOSTS "{\"type\":[\"array\",\"null\"],\"items\":{\"type\":\"string\",\"minLength\":1}}"

static const struct method rows[] = {
    {"web.fetch", m_fetch_row,
     "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"},\"max_bytes\":{\"type\":"
     "\"integer\",\"minimum\":1,\"maximum\":67108864},\"timeout_ms\":{\"type\":\"integer\","
     "\"minimum\":1,\"maximum\":600000},\"allow\":" HOSTS ",\"deny\":" HOSTS
     ",\"robots\":{\"type\":\"boolean\"},\"request_id\":{\"type\":\"string\"}},\"required\":["
     "\"url\"],\"additionalProperties\":false}",
     METHOD_LATER, "fetch an http(s) page as text (SSRF guard, size and time limits)"},
    {"web.cancel", m_cancel,
     "{\"type\":\"object\",\"properties\":{\"request_id\":{\"type\":\"string\"}},\"required\":["
     "\"request_id\"],\"additionalProperties\":false}",
     METHOD_DRAINING, "cancel a running web.fetch by its request_id"},
};
METHOD_GROUP(webd_methods, rows);

void webd_conn_gone(struct conn *c)
{
    struct webd *w = c->d->web;
    if (!w) return;
    ag_list_foreach_safe (it, &w->live) {
        struct wreq *q = ag_list_entry(it, struct wreq, node);
        if (q->c == c) fetch_cancel(w->f, q->id);
    }
}

uint64_t webd_fetch(struct agentd *d, const char *url, const struct fetch_opts *o, fetch_cb done,
                    void *ud)
{
    struct webd *w = d->web;
    if (!w) return 0;
    struct fetch_opts oo = *o;
    oo.allow_net = w->nets;
    oo.n_allow_net = w->n_nets;
    return fetch_start(w->f, url, &oo, done, ud);
}

void webd_cancel(struct agentd *d, uint64_t id)
{
    if (d->web) fetch_cancel(d->web->f, id);
}

int webd_in_flight(struct agentd *d)
{
    return d->web ? d->web->n_live : 0;
}

int webd_start(struct agentd *d, struct ag_err *err)
{
    struct webd *w = ag_calloc(1, sizeof(*w));
    w->d = d;
    ag_list_init(&w->live);
    char list[sizeof(d->cfg.fetch_allow)];
    snprintf(list, sizeof(list), "%s", d->cfg.fetch_allow);
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (w->n_nets == WEB_MAX_NETS) {
            free(w);
            return ag_err_set(err, AG_EINVAL, "--fetch-allow: at most %d ranges", WEB_MAX_NETS);
        }
        int rc = fetch_net_parse(t, &w->nets[w->n_nets], err);
        if (rc) {
            free(w);
            return ag_err_set(err, AG_EINVAL, "--fetch-allow: %s", err->msg);
        }
        w->n_nets++;
    }
    int rc = fetcher_new(d->loop, &w->f, err);
    if (rc) {
        free(w);
        return rc;
    }
    d->web = w;
    return 0;
}

void webd_stop(struct agentd *d)
{
    struct webd *w = d->web;
    if (!w) return;
    fetcher_free(w->f); /* fails what is in flight: on_fetched answers and frees each */
    d->web = NULL;
    free(w);
}
