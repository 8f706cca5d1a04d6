/*
 * fetch.h - web pages for agents: an http(s) client on the daemon's event loop (libcurl's multi
 * interface driven by libuv), with the policy an agent that reads the web needs.
 *
 * Policy, per request:
 *   - http and https only; at most 5 redirects, each hop checked again like the first;
 *   - an SSRF guard: every connection's resolved address is checked just before connect, so
 *     loopback, private, link-local (cloud metadata included), carrier-grade NAT, multicast and
 *     unspecified addresses are refused, whatever name or redirect led there, unless the
 *     daemon's allowlist (CIDR prefixes) admits them. IPv6 forms that lead to an IPv4 address
 *     (mapped, compatible, SIIT, NAT64, 6to4) are refused when that address would be;
 *   - host allow and deny patterns from the agent's definition ("example.org", "*.example.org");
 *   - robots.txt, when asked: the host's rules for "*" (or "agentd") are fetched once and
 *     cached, and a disallowed path is refused;
 *   - limits: a byte cap on the decoded body (so a decompression bomb stops at the cap, and a
 *     huge page is cut there with truncated set) and a total time limit.
 * Bodies become text: HTML through libxml2's parser into readable text (scripts, styles and
 * markup dropped, blocks on their own lines), JSON and text/plain passed through, other
 * charsets converted to UTF-8.
 */
#ifndef TOOLS_FETCH_H
#define TOOLS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../base/base.h"

#define FETCH_MAX_REDIRECTS 5

/* An address range the SSRF guard lets through: family AF_INET or AF_INET6, prefix bits. */
struct fetch_net {
    int family;
    uint8_t addr[16];
    int bits;
};

/* Parses "127.0.0.1", "10.0.0.0/8" or "::1/128" into n. 0 or AG_EINVAL. */
int fetch_net_parse(const char *s, struct fetch_net *n, struct ag_err *err);
/* The guard: true when the address (4 or 16 bytes) may be connected to. */
bool fetch_addr_allowed(int family, const uint8_t *addr, const struct fetch_net *allow,
                        size_t n_allow);
/* host matches pattern: equal (case-insensitive), or pattern "*.x" and host ends with ".x". */
bool fetch_host_match(const char *pattern, const char *host);
/* Whether robots.txt text lets user agent "agentd" fetch path. */
bool fetch_robots_allows(const char *robots, const char *path);

struct fetch_opts {
    size_t max_bytes;                  /* decoded body cap; 0: 2 MiB */
    int timeout_ms;                    /* whole request, redirects included; 0: 20000 */
    const char *const *allow_hosts;    /* NULL-terminated patterns, or NULL: any host */
    const char *const *deny_hosts;     /* NULL-terminated patterns, or NULL */
    bool robots;                       /* honour robots.txt */
    const struct fetch_net *allow_net; /* the guard's exceptions */
    size_t n_allow_net;
};

struct fetch_result {
    int status;         /* HTTP status of the last hop; 0 when no response */
    char *url;          /* the final URL (after redirects) */
    char *content_type; /* as sent, or NULL */
    char *title;        /* HTML <title>, or NULL */
    char *text;         /* the body as UTF-8 text */
    size_t bytes;       /* decoded body bytes read */
    bool truncated;     /* the body was cut at max_bytes */
    int redirects;      /* hops followed */
    int err_code;       /* 0, or AG_E...: AG_EPARAMS (URL), AG_EUNSUPPORTED (scheme), AG_EQUOTA
                           (too many redirects), AG_EINVAL (refused by policy), AG_ETIMEOUT,
                           AG_EIO (network), AG_ECANCELLED */
    char err[512];      /* why, for the model and the user */
};

void fetch_result_release(struct fetch_result *r);

struct fetcher;
typedef void (*fetch_cb)(void *ud, struct fetch_result *res); /* res is the callee's to release */

/* A fetcher on loop; every callback runs on the loop thread. */
int fetcher_new(uv_loop_t *loop, struct fetcher **out, struct ag_err *err);
/* Fails what is in flight (AG_ECANCELLED, callbacks run) and frees the fetcher once its
 * handles are closed. */
void fetcher_free(struct fetcher *f);
/* Starts fetching url; cb runs exactly once, never before this returns. opts and the arrays it
 * points to are copied. Returns the request's id (> 0). */
uint64_t fetch_start(struct fetcher *f, const char *url, const struct fetch_opts *opts, fetch_cb cb,
                     void *ud);
/* Cancels request id (its callback runs with AG_ECANCELLED); unknown ids are ignored. */
void fetch_cancel(struct fetcher *f, uint64_t id);

/* HTML to readable UTF-8 text (html.c). charset: from the Content-Type header, or NULL to let
 * the document say. *title (may be NULL) gets the <title>. */
int html_to_text(const char *html, size_t len, const char *charset, struct ag_buf *out,
                 char **title, struct ag_err *err);

#endif
