/*
 * fetch.c - the web client of fetch.h: libcurl's multi interface on a libuv loop.
 *
 * Wiring. curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll_t per
 * socket) and when to wake it up (CURLMOPT_TIMERFUNCTION: one uv_timer_t); readiness and the
 * timer call curl_multi_socket_action, and finished transfers are collected after each call.
 * Nothing blocks the loop, DNS included (curl's threaded resolver).
 *
 * A request is a chain of transfers: robots.txt first when asked (cached per origin), then the
 * URL, then each redirect, which is followed by hand (never by curl) so that every hop goes
 * through the same checks: scheme, host patterns, robots, and the SSRF guard, which sits in
 * CURLOPT_OPENSOCKETFUNCTION and sees the address actually about to be connected, so DNS tricks
 * and redirects cannot reach an internal service.
 */
#include "fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_MAX_BYTES  (2u << 20)
#define DEFAULT_TIMEOUT_MS 20000
#define ROBOTS_MAX_BYTES   (64u << 10)
#define ROBOTS_TTL_MS      (10 * 60 * 1000)
#define USER_AGENT         "agentd/0.1 (+fetch_url tool)"

/* ---- the guard ---- */

int fetch_net_parse(const char *s, struct fetch_net *n, struct ag_err *err)
{
    char buf[64];
    memset(n, 0, sizeof(*n));
    snprintf(buf, sizeof(buf), "%s", s);
    char *slash = strchr(buf, '/');
    if (slash) *slash = '\0';
    if (inet_pton(AF_INET, buf, n->addr) == 1) {
        n->family = AF_INET;
        n->bits = 32;
    } else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
        n->family = AF_INET6;
        n->bits = 128;
    } else {
        return ag_err_set(err, AG_EINVAL,
                          "'%s' is not an address or CIDR prefix (e.g. 127.0.0.1/32, fd00::/8)", s);
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b < 0 || b > n->bits)
            return ag_err_set(err, AG_EINVAL, "'%s': the prefix length must be 0..%d", s, n->bits);
        n->bits = (int)b;
    }
    return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *p, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, p, (size_t)full) != 0) return false;
    if (!rest) return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[full] & mask) == (p[full] & mask);
}

/* Ranges no agent may reach unless the daemon allows them. */
static bool v4_internal(const uint8_t *a)
{
    static const struct {
        uint8_t p[4];
        int bits;
    } deny[] = {
        {{0, 0, 0, 0}, 8},      /* "this network", 0.0.0.0 */
        {{10, 0, 0, 0}, 8},     /* private */
        {{100, 64, 0, 0}, 10},  /* carrier-grade NAT */
        {{127, 0, 0, 0}, 8},    /* loopback */
        {{169, 254, 0, 0}, 16}, /* link-local, cloud metadata (169.254.169.254) */
        {{172, 16, 0, 0}, 12},  /* private */
        {{192, 0, 0, 0}, 24},   /* IETF protocol assignments */
        {{192, 168, 0, 0}, 16}, /* private */
        {{198, 18, 0, 0}, 15},  /* benchmarking */
        {{224, 0, 0, 0}, 4},    /* multicast */
        {{240, 0, 0, 0}, 4},    /* reserved, broadcast */
    };
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++)
        if (prefix_match(a, deny[i].p, deny[i].bits)) return true;
    return false;
}

static bool v6_internal(const uint8_t *a)
{
    static const uint8_t zero[16] = {0};
    static const uint8_t nat64_local[6] = {0, 0x64, 0xFF, 0x9B, 0, 0x01};
    if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1)) return true; /* ::, ::1 */
    if ((a[0] & 0xFE) == 0xFC) return true;                                  /* fc00::/7 */
    if (a[0] == 0xFE && (a[1] & 0x80)) return true;  /* fe80::/10, site-local fec0::/10 */
    if (a[0] == 0xFF) return true;                   /* multicast */
    if (memcmp(a, nat64_local, 6) == 0) return true; /* local-use NAT64, 64:ff9b:1::/48 */
    return false;
}

/*
 * Where an IPv4 address sits inside an IPv6 one that leads to it, or -1 for none. Each form
 * reaches its IPv4 address by other means than the host's IPv4 stack (a SIT tunnel, a
 * translator, a NAT64 gateway), so an internal address embedded in one is refused, and only an
 * IPv6 allow range admits it. The IPv4-mapped form is the kernel's own and is handled apart.
 */
static int v6_embedded_v4(const uint8_t *a)
{
    static const uint8_t at12[][12] = {
        {0},                                           /* ::a.b.c.d, compatible */
        {0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0},    /* ::ffff:0:a.b.c.d, SIIT */
        {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0}, /* 64:ff9b::a.b.c.d, NAT64 */
    };
    for (size_t i = 0; i < sizeof(at12) / sizeof(at12[0]); i++)
        if (memcmp(a, at12[i], 12) == 0) return 12;
    if (a[0] == 0x20 && a[1] == 0x02) return 2; /* 2002:a.b.c.d::/48, 6to4 */
    return -1;
}

bool fetch_addr_allowed(int family, const uint8_t *addr, const struct fetch_net *allow,
                        size_t n_allow)
{
    uint8_t v4[4];
    /* IPv4-mapped (::ffff:a.b.c.d): an IPv4 address, connected to over IPv4, which IPv4 allow
     * ranges admit. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        memcpy(v4, addr + 12, 4);
        family = AF_INET;
        addr = v4;
    }
    for (size_t i = 0; i < n_allow; i++)
        if (allow[i].family == family && prefix_match(addr, allow[i].addr, allow[i].bits))
            return true;
    if (family == AF_INET) return !v4_internal(addr);
    if (family != AF_INET6 || v6_internal(addr)) return false;
    int at = v6_embedded_v4(addr);
    return at < 0 || !v4_internal(addr + at);
}

bool fetch_host_match(const char *pattern, const char *host)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        size_t n = strlen(host), m = strlen(pattern + 1); /* ".example.org" */
        return n > m && strcasecmp(host + n - m, pattern + 1) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

/* ---- robots.txt ---- */

/* A robots.txt rule against a path: a prefix match where '*' stands for any run of characters
 * and a final '$' anchors the end. */
static bool robots_match(const char *rule, const char *path)
{
    for (;; rule++, path++) {
        if (*rule == '*') {
            while (*rule == '*') rule++;
            if (!*rule) return true;
            for (; *path; path++)
                if (robots_match(rule, path)) return true;
            return robots_match(rule, path);
        }
        if (*rule == '$' && !rule[1]) return !*path;
        if (!*rule) return true;
        if (*rule != *path) return false;
    }
}

/* The rules of the group that applies to us: "agentd" when present, else "*". Longest match
 * wins; Allow wins a tie. */
bool fetch_robots_allows(const char *robots, const char *path)
{
    int best_len = -1;
    bool best_allow = true;
    for (int pass = 0; pass < 2; pass++) {
        const char *want = pass == 0 ? "agentd" : "*";
        bool in_group = false, group_has_rules = false, found = false;
        const char *p = robots;
        while (p && *p) {
            const char *e = strchr(p, '\n');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char line[512];
            snprintf(line, sizeof(line), "%.*s", (int)(n < 511 ? n : 511), p);
            p = e ? e + 1 : NULL;
            char *hash = strchr(line, '#');
            if (hash) *hash = '\0';
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = '\0';
            char *key = line, *val = colon + 1;
            while (*key == ' ' || *key == '\t') key++;
            while (*val == ' ' || *val == '\t') val++;
            char *end = val + strlen(val);
            while (end > val && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = 0;
            for (char *k = key + strlen(key); k > key && (k[-1] == ' ' || k[-1] == '\t');) *--k = 0;
            if (strcasecmp(key, "user-agent") == 0) {
                if (group_has_rules) in_group = false, group_has_rules = false;
                if (strcasecmp(val, want) == 0) in_group = found = true;
            } else if (strcasecmp(key, "allow") == 0 || strcasecmp(key, "disallow") == 0) {
                group_has_rules = true;
                if (!in_group || !*val) continue;
                bool allow = strcasecmp(key, "allow") == 0;
                size_t vl = strlen(val);
                bool match = robots_match(val, path);
                if (match && ((int)vl > best_len || ((int)vl == best_len && allow)))
                    best_len = (int)vl, best_allow = allow;
            }
        }
        if (found) return best_allow;
    }
    return true;
}

struct robots_entry {
    struct robots_entry *next;
    char origin[256];
    char *text; /* NULL: none (404 and the like): everything allowed */
    int64_t fetched_ms;
};

/* ---- the multi handle on the loop ---- */

struct fetcher {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct ag_list reqs; /* in flight (struct freq.node), newest first */
    uint64_t next_id;
    struct robots_entry *robots;
    bool closing;
    int handles_open;
};

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct fetcher *f;
};

/* One request: a chain of transfers. */
struct freq {
    struct ag_list node; /* in fetcher.reqs */
    struct fetcher *f;
    uint64_t id;
    fetch_cb cb;
    void *ud;
    struct fetch_opts o;
    char **allow, **deny; /* owned copies of the patterns */
    struct fetch_net *nets;
    CURL *easy;
    char *url;           /* the hop being fetched */
    bool robots_stage;   /* easy fetches robots.txt for url */
    char origin[256];    /* scheme://host:port of url */
    struct ag_buf body;  /* decoded bytes */
    size_t cap;          /* byte cap of the current transfer */
    bool cut;            /* the write callback stopped at cap */
    char guard_msg[200]; /* why the guard refused a connection */
    int64_t deadline_ms;
    struct deferred *first; /* the first hop's start, not yet run */
    struct fetch_result res;
};

struct deferred {
    uv_idle_t idle;
    struct freq *q;
};

static void check_done(struct fetcher *f);
static void next_hop(struct freq *q);

static void finish(struct freq *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void req_free(struct freq *q)
{
    for (size_t i = 0; q->allow && q->allow[i]; i++) free(q->allow[i]);
    for (size_t i = 0; q->deny && q->deny[i]; i++) free(q->deny[i]);
    free(q->allow);
    free(q->deny);
    free(q->nets);
    free(q->url);
    ag_buf_release(&q->body);
    fetch_result_release(&q->res);
    free(q);
}

static void detach_easy(struct freq *q)
{
    if (!q->easy) return;
    curl_multi_remove_handle(q->f->multi, q->easy);
    curl_easy_cleanup(q->easy);
    q->easy = NULL;
}

/* Ends q: its callback gets the result (or the error when code != 0). */
static void finish(struct freq *q, int code, const char *fmt, ...)
{
    detach_easy(q);
    if (q->first) q->first->q = NULL; /* cancelled before its first hop started */
    if (code) {
        char msg[sizeof(q->res.err)]; /* the arguments may point into q->res.err */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        q->res.err_code = code;
        memcpy(q->res.err, msg, sizeof(msg));
    }
    ag_list_remove(&q->node);
    struct fetch_result res = q->res;
    memset(&q->res, 0, sizeof(q->res));
    q->cb(q->ud, &res);
    req_free(q);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp);

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *sc = h->data;
    int flags = 0, running;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    struct fetcher *f = sc->f;
    curl_multi_socket_action(f->multi, sc->fd, flags, &running);
    check_done(f);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct sock_ctx *sc = h->data;
    struct fetcher *f = sc->f;
    free(sc);
    if (--f->handles_open == 0 && f->closing) free(f);
}

static int on_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp)
{
    (void)easy;
    struct fetcher *f = userp;
    struct sock_ctx *sc = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (sc) {
            uv_poll_stop(&sc->poll);
            curl_multi_assign(f->multi, s, NULL);
            uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
        }
        return 0;
    }
    if (!sc) {
        sc = ag_calloc(1, sizeof(*sc));
        sc->fd = s;
        sc->f = f;
        if (uv_poll_init_socket(f->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        f->handles_open++;
        curl_multi_assign(f->multi, s, sc);
    }
    int ev = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT) ev |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT) ev |= UV_WRITABLE;
    uv_poll_start(&sc->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    struct fetcher *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct fetcher *f = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- one transfer ---- */

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    struct freq *q = ud;
    size_t len = size * n, room = q->cap > q->body.len ? q->cap - q->body.len : 0;
    if (len > room) {
        ag_buf_append(&q->body, data, room);
        q->cut = true;
        return 0; /* stops the transfer: the rest is never decoded */
    }
    ag_buf_append(&q->body, data, len);
    return len;
}

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct freq *q = ud;
    (void)purpose;
    const uint8_t *ip = NULL;
    char text[INET6_ADDRSTRLEN] = "?";
    if (a->family == AF_INET) {
        ip = (const uint8_t *)&((const struct sockaddr_in *)&a->addr)->sin_addr;
        inet_ntop(AF_INET, ip, text, sizeof(text));
    } else if (a->family == AF_INET6) {
        ip = (const uint8_t *)&((const struct sockaddr_in6 *)&a->addr)->sin6_addr;
        inet_ntop(AF_INET6, ip, text, sizeof(text));
    }
    if (!ip || !fetch_addr_allowed(a->family, ip, q->nets, q->o.n_allow_net)) {
        snprintf(q->guard_msg, sizeof(q->guard_msg),
                 "refused to connect to %s: loopback, private, link-local and metadata addresses "
                 "are off limits (agentd --fetch-allow admits ranges)",
                 text);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* The origin (scheme://host[:port]) and host of url, checked for scheme. 0 or an AG_E code
 * with q's result error set. */
static int parse_url(struct freq *q, const char *url, char *host, size_t host_size, char *path,
                     size_t path_size)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *h = NULL, *port = NULL, *p = NULL, *query = NULL;
    int rc = 0;
    /* The scheme is checked before curl parses the rest: file:, gopher: ... never get further. */
    size_t sl = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
    if (sl > 0 && sl < 32 && url[sl] == ':' && !(sl == 4 && strncasecmp(url, "http", 4) == 0) &&
        !(sl == 5 && strncasecmp(url, "https", 5) == 0)) {
        curl_url_cleanup(u);
        snprintf(q->res.err, sizeof(q->res.err),
                 "only http and https URLs can be fetched, not %.*s:", (int)sl, url);
        return AG_EUNSUPPORTED;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK) {
        rc = AG_EPARAMS;
        snprintf(q->res.err, sizeof(q->res.err), "'%s' is not a valid URL", url);
    } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        rc = AG_EUNSUPPORTED;
        snprintf(q->res.err, sizeof(q->res.err),
                 "only http and https URLs can be fetched, not %s:", scheme);
    } else {
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        curl_url_get(u, CURLUPART_PATH, &p, 0);
        curl_url_get(u, CURLUPART_QUERY, &query, 0);
        snprintf(host, host_size, "%s", h);
        /* Brackets of an IPv6 literal are not part of the host patterns match. */
        if (host[0] == '[') {
            memmove(host, host + 1, strlen(host));
            host[strcspn(host, "]")] = '\0';
        }
        snprintf(q->origin, sizeof(q->origin), "%s://%s%s%s", scheme, h, port ? ":" : "",
                 port ? port : "");
        snprintf(path, path_size, "%s%s%s", p ? p : "/", query ? "?" : "", query ? query : "");
    }
    curl_free(scheme);
    curl_free(h);
    curl_free(port);
    curl_free(p);
    curl_free(query);
    curl_url_cleanup(u);
    return rc;
}

static int start_transfer(struct freq *q, const char *url, size_t cap)
{
    struct fetcher *f = q->f;
    int64_t left = q->deadline_ms - ag_now_ms();
    if (left <= 0) return AG_ETIMEOUT;
    CURL *e = curl_easy_init();
    if (!e) return AG_ENOMEM;
    q->easy = e;
    q->cap = cap;
    q->cut = false;
    q->guard_msg[0] = '\0';
    ag_buf_reset(&q->body);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, q);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  /* followed by hand, each hop checked */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* every encoding curl decodes */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)left);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(left < 10000 ? left : 10000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*"); /* a proxy would hide the real address */
    curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)1 << 32);
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        q->easy = NULL;
        return AG_EIO;
    }
    return 0;
}

static struct robots_entry *robots_find(struct fetcher *f, const char *origin)
{
    for (struct robots_entry *r = f->robots; r; r = r->next)
        if (strcmp(r->origin, origin) == 0 && ag_now_ms() - r->fetched_ms < ROBOTS_TTL_MS) return r;
    return NULL;
}

/* Checks q->url against the policy and starts the next transfer for it. */
static void next_hop(struct freq *q)
{
    char host[256], path[2048];
    int rc = parse_url(q, q->url, host, sizeof(host), path, sizeof(path));
    if (rc) {
        finish(q, rc, "%s", q->res.err);
        return;
    }
    for (size_t i = 0; q->deny && q->deny[i]; i++)
        if (fetch_host_match(q->deny[i], host)) {
            finish(q, AG_EINVAL, "%s is on this agent's deny list (browse.deny)", host);
            return;
        }
    if (q->allow && q->allow[0]) {
        bool ok = false;
        for (size_t i = 0; q->allow[i] && !ok; i++) ok = fetch_host_match(q->allow[i], host);
        if (!ok) {
            finish(q, AG_EINVAL, "%s is not on this agent's allow list (browse.allow)", host);
            return;
        }
    }
    if (q->o.robots) {
        struct robots_entry *r = robots_find(q->f, q->origin);
        if (!r) {
            char robots_url[300];
            snprintf(robots_url, sizeof(robots_url), "%s/robots.txt", q->origin);
            q->robots_stage = true;
            if ((rc = start_transfer(q, robots_url, ROBOTS_MAX_BYTES)) != 0)
                finish(q, rc, "cannot start the request for %s", robots_url);
            return;
        }
        if (r->text && !fetch_robots_allows(r->text, path)) {
            finish(q, AG_EINVAL, "%s/robots.txt disallows %s", q->origin, path);
            return;
        }
    }
    q->robots_stage = false;
    if ((rc = start_transfer(q, q->url, q->o.max_bytes)) != 0)
        finish(q, rc, "%s: %s", q->url, rc == AG_ETIMEOUT ? "timed out" : "cannot start");
}

/* ---- turning a body into text ---- */

static void charset_of(const char *ctype, char *out, size_t n)
{
    out[0] = '\0';
    const char *c = ctype ? strcasestr(ctype, "charset=") : NULL;
    if (!c) return;
    c += 8;
    if (*c == '"' || *c == '\'') c++;
    size_t k = strcspn(c, "\"'; ");
    snprintf(out, n, "%.*s", (int)(k < n - 1 ? k : n - 1), c);
}

/* Converts text in charset to UTF-8 with iconv; unknown charsets are taken as UTF-8. */
static void to_utf8(struct ag_buf *out, const char *s, size_t n, const char *charset)
{
    if (!*charset || strcasecmp(charset, "utf-8") == 0 || strcasecmp(charset, "utf8") == 0 ||
        strcasecmp(charset, "us-ascii") == 0) {
        ag_utf8_append(out, s, n);
        return;
    }
    iconv_t cd = iconv_open("UTF-8//TRANSLIT", charset);
    if (cd == (iconv_t)-1) {
        ag_utf8_append(out, s, n);
        return;
    }
    size_t cap = n * 4 + 16;
    char *buf = ag_malloc(cap), *in = (char *)s, *o = buf;
    size_t il = n, ol = cap;
    while (il > 0) {
        if (iconv(cd, &in, &il, &o, &ol) == (size_t)-1) {
            if (errno == EILSEQ || errno == EINVAL) {
                in++, il--; /* skip a byte the charset does not have */
                continue;
            }
            break;
        }
    }
    iconv_close(cd);
    ag_utf8_append(out, buf, (size_t)(o - buf));
    free(buf);
}

static void make_text(struct freq *q)
{
    char cs[64];
    charset_of(q->res.content_type, cs, sizeof(cs));
    struct ag_buf t;
    ag_buf_init(&t);
    const char *ct = q->res.content_type ? q->res.content_type : "";
    bool html =
        strncasecmp(ct, "text/html", 9) == 0 || strncasecmp(ct, "application/xhtml", 17) == 0;
    if (!*ct && q->body.len) {
        /* No type: sniff for markup. */
        const char *b = q->body.data;
        size_t k = 0;
        while (k < q->body.len && (b[k] == ' ' || b[k] == '\n' || b[k] == '\r' || b[k] == '\t'))
            k++;
        html = k < q->body.len && b[k] == '<';
    }
    struct ag_err err = {0};
    if (html && html_to_text(q->body.data ? q->body.data : "", q->body.len, cs[0] ? cs : NULL, &t,
                             &q->res.title, &err) == 0) {
        /* done */
    } else if (html || strncasecmp(ct, "text/", 5) == 0 || strstr(ct, "json") ||
               strstr(ct, "xml") || strstr(ct, "javascript") || !*ct) {
        to_utf8(&t, q->body.data ? q->body.data : "", q->body.len, cs);
    } else {
        ag_buf_printf(&t, "[%zu bytes of %s: not text]", q->body.len, ct);
    }
    ag_buf_putc(&t, '\0');
    q->res.text = t.data;
}

/* A transfer of q ended with curl code cc. */
static void transfer_done(struct freq *q, CURLcode cc)
{
    long status = 0;
    char *ctype = NULL, *location = NULL;
    curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(q->easy, CURLINFO_CONTENT_TYPE, &ctype);
    curl_easy_getinfo(q->easy, CURLINFO_REDIRECT_URL, &location);
    char *loc = location ? ag_strdup(location) : NULL;
    char *ct = ctype ? ag_strdup(ctype) : NULL;
    bool ok = cc == CURLE_OK || (cc == CURLE_WRITE_ERROR && q->cut);

    if (q->robots_stage) {
        detach_easy(q);
        struct robots_entry *r = ag_calloc(1, sizeof(*r));
        snprintf(r->origin, sizeof(r->origin), "%s", q->origin);
        r->fetched_ms = ag_now_ms();
        if (q->guard_msg[0]) {
            free(r);
            free(loc);
            free(ct);
            finish(q, AG_EINVAL, "%s", q->guard_msg);
            return;
        }
        /* Only a 2xx robots.txt has rules; anything else allows everything. */
        if (ok && status >= 200 && status < 300) {
            ag_buf_putc(&q->body, '\0');
            r->text = ag_strdup(q->body.data);
        }
        r->next = q->f->robots;
        q->f->robots = r;
        free(loc);
        free(ct);
        next_hop(q);
        return;
    }
    detach_easy(q);
    if (!ok) {
        free(loc);
        free(ct);
        if (q->guard_msg[0])
            finish(q, AG_EINVAL, "%s", q->guard_msg);
        else if (cc == CURLE_OPERATION_TIMEDOUT)
            finish(q, AG_ETIMEOUT, "%s: no complete answer within the time limit", q->url);
        else
            finish(q, AG_EIO, "%s: %s", q->url, curl_easy_strerror(cc));
        return;
    }
    q->res.status = (int)status;
    if (status >= 300 && status < 400 && loc) {
        free(ct);
        if (q->res.redirects >= FETCH_MAX_REDIRECTS) {
            free(loc);
            finish(q, AG_EQUOTA, "more than %d redirects (last to %s)", FETCH_MAX_REDIRECTS,
                   q->url);
            return;
        }
        q->res.redirects++;
        free(q->url);
        q->url = loc;
        next_hop(q);
        return;
    }
    free(loc);
    q->res.url = ag_strdup(q->url);
    q->res.content_type = ct;
    q->res.bytes = q->body.len;
    q->res.truncated = q->cut;
    make_text(q);
    finish(q, 0, "%s", "");
}

static void check_done(struct fetcher *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct freq *q = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        if (q) transfer_done(q, m->data.result);
    }
}

/* ---- public ---- */

void fetch_result_release(struct fetch_result *r)
{
    free(r->url);
    free(r->content_type);
    free(r->title);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

int fetcher_new(uv_loop_t *loop, struct fetcher **out, struct ag_err *err)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return ag_err_set(err, AG_EIO, "libcurl failed to initialize");
        global_done = 1;
    }
    struct fetcher *f = ag_calloc(1, sizeof(*f));
    f->loop = loop;
    ag_list_init(&f->reqs);
    f->multi = curl_multi_init();
    if (!f->multi) {
        free(f);
        return ag_err_set(err, AG_EIO, "libcurl: cannot create a multi handle");
    }
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->handles_open = 1;
    *out = f;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct fetcher *f = h->data;
    if (--f->handles_open == 0) free(f);
}

void fetcher_free(struct fetcher *f)
{
    if (!f) return;
    while (!ag_list_empty(&f->reqs))
        finish(ag_list_entry(f->reqs.next, struct freq, node), AG_ECANCELLED,
               "cancelled: agentd is stopping");
    curl_multi_cleanup(f->multi); /* sockets are removed through on_socket first */
    f->multi = NULL;
    while (f->robots) {
        struct robots_entry *r = f->robots;
        f->robots = r->next;
        free(r->text);
        free(r);
    }
    f->closing = true;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

static char **copy_list(const char *const *l)
{
    if (!l) return NULL;
    size_t n = 0;
    while (l[n]) n++;
    char **c = ag_calloc(n + 1, sizeof(*c));
    for (size_t i = 0; i < n; i++) c[i] = ag_strdup(l[i]);
    return c;
}

static void on_deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_deferred(uv_idle_t *h)
{
    struct deferred *d = h->data;
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, on_deferred_closed);
    if (d->q) {
        d->q->first = NULL;
        next_hop(d->q);
    }
}

uint64_t fetch_start(struct fetcher *f, const char *url, const struct fetch_opts *opts, fetch_cb cb,
                     void *ud)
{
    struct freq *q = ag_calloc(1, sizeof(*q));
    q->f = f;
    q->id = ++f->next_id;
    q->cb = cb;
    q->ud = ud;
    q->o = *opts;
    if (!q->o.max_bytes) q->o.max_bytes = DEFAULT_MAX_BYTES;
    if (!q->o.timeout_ms) q->o.timeout_ms = DEFAULT_TIMEOUT_MS;
    q->allow = copy_list(opts->allow_hosts);
    q->deny = copy_list(opts->deny_hosts);
    q->o.allow_hosts = q->o.deny_hosts = NULL;
    if (opts->n_allow_net) {
        q->nets = ag_calloc(opts->n_allow_net, sizeof(*q->nets));
        memcpy(q->nets, opts->allow_net, opts->n_allow_net * sizeof(*q->nets));
    }
    q->o.allow_net = q->nets;
    q->url = ag_strdup(url ? url : "");
    q->deadline_ms = ag_now_ms() + q->o.timeout_ms;
    ag_buf_init(&q->body);
    ag_list_insert_head(&f->reqs, &q->node);
    /* The first hop starts from the loop, so cb can never run inside this call. */
    struct deferred *d = ag_calloc(1, sizeof(*d));
    d->q = q;
    q->first = d;
    uv_idle_init(f->loop, &d->idle);
    d->idle.data = d;
    uv_idle_start(&d->idle, on_deferred);
    return q->id;
}

void fetch_cancel(struct fetcher *f, uint64_t id)
{
    ag_list_foreach (it, &f->reqs) {
        struct freq *q = ag_list_entry(it, struct freq, node);
        if (q->id == id) {
            finish(q, AG_ECANCELLED, "cancelled");
            return;
        }
    }
}
