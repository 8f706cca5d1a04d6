/*
 * bench_ping.c - a load generator for agentd's socket, modelled on redis-benchmark.
 *
 *   bench_ping -s SOCKET [-c CLIENTS] [-n REQUESTS] [-P PIPELINE] [-t TIMEOUT_S] [--json]
 *              [--redis]
 *
 * One thread and one epoll set drive CLIENTS connections. Each connection sends a batch of
 * PIPELINE requests {"jsonrpc":"2.0","id":K,"method":"ping"} (K unique across the run), waits
 * for every response line, checks that each one answers the id it expects with a "result", and
 * only then sends the next batch: a closed loop, like redis-benchmark, so requests/s measures the
 * server's round trip and not how deep a queue can grow. The run stops after REQUESTS requests
 * in all; it prints requests/s and the p50/p99 latency (send of the batch to receipt of the
 * line, in microseconds), or one JSON line with --json.
 *
 * --redis sends inline "PING\r\n" and expects "+PONG\r\n" instead: the same client against
 * redis-server, so that a comparison with redis-benchmark can be checked for client cost.
 *
 * The client is kept lean on purpose (one write per batch, one read per readable event, no
 * epoll_ctl per request) so that on a small machine it steals as little CPU as it can from the
 * server it measures. Exit status: 0 when every request was answered correctly, 1 otherwise.
 */
#include "../base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define IN_BYTES   (64 * 1024) /* a response line longer than this is an error */
#define MAX_EVENTS 256

struct bconn {
    int fd;              /* non-blocking Unix stream socket; -1 once dead */
    char *out;           /* (out_cap) bytes of the batch being sent */
    size_t out_len;      /* bytes of the batch */
    size_t out_off;      /* bytes of the batch already written */
    size_t out_cap;      /* bytes allocated for out */
    char in[IN_BYTES];   /* received bytes not yet consumed as complete lines */
    size_t in_len;       /* bytes used in in */
    uint64_t first_id;   /* id of the oldest request awaiting its response */
    uint32_t n_inflight; /* requests of the batch still awaiting a response */
    bool want_out;       /* EPOLLOUT is registered (a write was partial) */
    int64_t sent_ns;     /* when the current batch was handed to the kernel (its first byte) */
};

struct bench {
    const char *socket_path; /* -s */
    int n_clients;           /* -c */
    uint64_t n_requests;     /* -n */
    uint32_t pipeline;       /* -P */
    int timeout_s;           /* -t: give up (and count the rest as errors) after this long */
    bool json;               /* --json */
    bool redis;              /* --redis: inline PING instead of JSON-RPC */
    int epfd;
    struct bconn *conns; /* (n_clients) */
    int n_live;          /* connections still open */
    uint64_t next_id;    /* next id to hand out; ids run 1..n_requests */
    uint64_t n_done;     /* responses received, good or bad */
    uint64_t n_errors;   /* bad responses, plus requests lost to a dead connection */
    int64_t *lat_ns;     /* (n_requests) latency of each good response */
    uint64_t n_lat;      /* entries used in lat_ns */
};

static void usage(void)
{
    fprintf(stderr, "usage: bench_ping -s SOCKET [-c CLIENTS] [-n REQUESTS] [-P PIPELINE] "
                    "[-t TIMEOUT_S] [--json] [--redis]\n");
    exit(2);
}

static void conn_kill(struct bench *b, struct bconn *c, const char *why)
{
    if (c->fd < 0) return;
    fprintf(stderr, "bench_ping: connection lost: %s\n", why);
    /* Whatever was in flight will never be answered. */
    b->n_errors += c->n_inflight;
    b->n_done += c->n_inflight;
    c->n_inflight = 0;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    b->n_live--;
}

static void set_want_out(struct bench *b, struct bconn *c, bool want)
{
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};

    if (c->want_out == want) return;
    c->want_out = want;
    epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is left of the batch; a partial write waits for EPOLLOUT. */
static void conn_write(struct bench *b, struct bconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_want_out(b, c, true);
            return;
        } else {
            conn_kill(b, c, n < 0 ? strerror(errno) : "write returned 0");
            return;
        }
    }
    set_want_out(b, c, false);
}

/* Starts the next batch of up to pipeline requests, if any are left to send. */
static void conn_send_batch(struct bench *b, struct bconn *c)
{
    uint32_t k = 0;

    c->out_len = c->out_off = 0;
    c->first_id = b->next_id;
    while (k < b->pipeline && b->next_id <= b->n_requests) {
        if (c->out_cap - c->out_len < 96) {
            c->out_cap = c->out_cap ? c->out_cap * 2 : 256;
            c->out = ag_realloc(c->out, c->out_cap);
        }
        int n = b->redis ? snprintf(c->out + c->out_len, c->out_cap - c->out_len, "PING\r\n")
                         : snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                                    "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"ping\"}\n",
                                    (unsigned long long)b->next_id);
        c->out_len += (size_t)n;
        b->next_id++;
        k++;
    }
    c->n_inflight = k;
    if (k == 0) return;
    c->sent_ns = ag_now_ns();
    conn_write(b, c);
}

/* True when line (without its newline) answers request id with a result. */
static bool response_ok(const struct bench *b, const char *line, size_t len, uint64_t id)
{
    char needle[40];
    int n;

    if (b->redis) return len == 6 && memcmp(line, "+PONG\r", 6) == 0;
    /* The response is one short line; a copy keeps the string functions within bounds. */
    char tmp[512];
    if (len >= sizeof(tmp)) return false;
    memcpy(tmp, line, len);
    tmp[len] = '\0';
    n = snprintf(needle, sizeof(needle), "\"id\":%llu", (unsigned long long)id);
    const char *p = strstr(tmp, needle);
    /* "id":12 must not match "id":123. */
    if (!p || (p[n] >= '0' && p[n] <= '9')) return false;
    return strstr(tmp, "\"result\"") != NULL;
}

static void conn_read(struct bench *b, struct bconn *c)
{
    ssize_t n;

    /* One read per readable event: a response is far smaller than the buffer, and a second
     * read would only return EAGAIN and double the system calls the client makes. */
    n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        conn_kill(b, c, n < 0 ? strerror(errno) : "server closed the connection");
        return;
    }
    c->in_len += (size_t)n;

    size_t off = 0;
    int64_t now = ag_now_ns();
    for (;;) {
        char *nl = memchr(c->in + off, '\n', c->in_len - off);
        if (!nl) break;
        size_t len = (size_t)(nl - (c->in + off));
        if (c->n_inflight == 0) {
            b->n_errors++; /* an answer nobody asked for */
        } else {
            if (response_ok(b, c->in + off, len, c->first_id)) {
                b->lat_ns[b->n_lat++] = now - c->sent_ns;
            } else {
                b->n_errors++;
                if (b->n_errors <= 3)
                    fprintf(stderr, "bench_ping: bad response to id %llu: %.*s\n",
                            (unsigned long long)c->first_id, (int)(len > 200 ? 200 : len),
                            c->in + off);
            }
            c->first_id++;
            c->n_inflight--;
            b->n_done++;
        }
        off += len + 1;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->in_len == sizeof(c->in)) {
        conn_kill(b, c, "response line too long");
        return;
    }
    if (c->n_inflight == 0) conn_send_batch(b, c);
}

static int conn_open(struct bench *b, struct bconn *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    if (strlen(b->socket_path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "bench_ping: socket path too long: %s\n", b->socket_path);
        return -1;
    }
    strcpy(sa.sun_path, b->socket_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* Connect blocking (it is instant on a Unix socket), then switch to non-blocking I/O. */
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "bench_ping: cannot connect to %s: %s\n", b->socket_path, strerror(errno));
        return -1;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        fprintf(stderr, "bench_ping: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    b->n_live++;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile in microseconds of the sorted latencies. */
static double percentile_us(const struct bench *b, double p)
{
    if (b->n_lat == 0) return 0;
    uint64_t i = (uint64_t)(p / 100.0 * (double)b->n_lat);
    if (i >= b->n_lat) i = b->n_lat - 1;
    return (double)b->lat_ns[i] / 1000.0;
}

static uint64_t parse_u64(const char *s, const char *opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v == 0) {
        fprintf(stderr, "bench_ping: %s wants a positive integer, got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    struct bench b = {.n_clients = 1, .n_requests = 100000, .pipeline = 1, .timeout_s = 120};
    struct epoll_event evs[MAX_EVENTS];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            b.json = true;
        } else if (strcmp(a, "--redis") == 0) {
            b.redis = true;
        } else if (i + 1 < argc && strcmp(a, "-s") == 0) {
            b.socket_path = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "-c") == 0) {
            b.n_clients = (int)parse_u64(argv[++i], a);
        } else if (i + 1 < argc && strcmp(a, "-n") == 0) {
            b.n_requests = parse_u64(argv[++i], a);
        } else if (i + 1 < argc && strcmp(a, "-P") == 0) {
            b.pipeline = (uint32_t)parse_u64(argv[++i], a);
        } else if (i + 1 < argc && strcmp(a, "-t") == 0) {
            b.timeout_s = (int)parse_u64(argv[++i], a);
        } else {
            usage();
        }
    }
    if (!b.socket_path) usage();

    b.epfd = epoll_create1(EPOLL_CLOEXEC);
    b.conns = ag_calloc((size_t)b.n_clients, sizeof(*b.conns));
    b.lat_ns = ag_malloc(b.n_requests * sizeof(*b.lat_ns));
    b.next_id = 1;
    for (int i = 0; i < b.n_clients; i++) {
        b.conns[i].fd = -1;
        if (conn_open(&b, &b.conns[i]) != 0) return 1;
    }

    /* The clock starts once every client is connected, as in redis-benchmark. */
    int64_t t0 = ag_now_ns();
    int64_t deadline = t0 + (int64_t)b.timeout_s * 1000000000;
    for (int i = 0; i < b.n_clients; i++) conn_send_batch(&b, &b.conns[i]);
    while (b.n_done < b.n_requests && b.n_live > 0) {
        int n = epoll_wait(b.epfd, evs, MAX_EVENTS, 1000);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "bench_ping: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct bconn *c = evs[i].data.ptr;
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT)) conn_write(&b, c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) conn_read(&b, c);
        }
        if (ag_now_ns() > deadline) {
            fprintf(stderr, "bench_ping: timed out after %d s\n", b.timeout_s);
            break;
        }
    }
    double secs = (double)(ag_now_ns() - t0) / 1e9;
    /* Requests never answered (timeout, or every connection lost) are errors too. */
    b.n_errors += b.n_requests - b.n_done;

    qsort(b.lat_ns, b.n_lat, sizeof(*b.lat_ns), cmp_i64);
    double rps = secs > 0 ? (double)b.n_lat / secs : 0;
    double p50 = percentile_us(&b, 50), p99 = percentile_us(&b, 99);
    if (b.json)
        printf("{\"target\":\"%s\",\"clients\":%d,\"requests\":%llu,\"pipeline\":%u,"
               "\"errors\":%llu,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
               b.redis ? "redis" : "agentd", b.n_clients, (unsigned long long)b.n_requests,
               b.pipeline, (unsigned long long)b.n_errors, secs, rps, p50, p99);
    else
        printf("%s ping: %d clients, %llu requests, pipeline %u: %.1f requests/s, "
               "p50 %.1f us, p99 %.1f us, %llu errors\n",
               b.redis ? "redis" : "agentd", b.n_clients, (unsigned long long)b.n_requests,
               b.pipeline, rps, p50, p99, (unsigned long long)b.n_errors);

    for (int i = 0; i < b.n_clients; i++) {
        if (b.conns[i].fd >= 0) close(b.conns[i].fd);
        free(b.conns[i].out);
    }
    free(b.conns);
    free(b.lat_ns);
    close(b.epfd);
    return b.n_errors ? 1 : 0;
}
