/*
 * http_server.h - a small HTTP/1.1 test server on 127.0.0.1 (a thread per connection) with the
 * pages the fetch tests need: an article, redirects (to a private address, in chains), a 50 MB
 * body, a gzip bomb, a Latin-1 page, JSON, robots.txt rules and a slow answer.
 */
#ifndef AG_TEST_HTTP_SERVER_H
#define AG_TEST_HTTP_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

struct http_server {
    int fd;
    int port;
    pthread_t thread;
    unsigned char *bomb; /* gzip of BOMB_BYTES zeros */
    size_t bomb_len;
};

#define HTTP_BIG_BYTES  (50u << 20)
#define HTTP_BOMB_BYTES (200u << 20)

static const char HTTP_ARTICLE[] =
    "<!DOCTYPE html><html><head><title>The Pelican Report</title>"
    "<script>var secret = 'not this';</script><style>p { color: red }</style></head>"
    "<body><h1>Pelicans</h1><p>The secret word is <b>PELICAN</b>.</p>"
    "<ul><li>Pelicans eat fish.</li><li>They live near water.</li></ul></body></html>";

struct http_conn {
    struct http_server *s;
    int fd;
};

static inline void http_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

static inline void http_reply(int fd, int status, const char *extra, const char *ctype,
                              const void *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, ctype, len, extra ? extra : "");
    http_send(fd, head, (size_t)n);
    if (len) http_send(fd, body, len);
}

static inline void *http_conn_main(void *arg)
{
    struct http_conn *hc = arg;
    char req[4096], path[1024] = "";
    ssize_t n = recv(hc->fd, req, sizeof(req) - 1, 0);
    if (n > 0) {
        req[n] = '\0';
        sscanf(req, "%*s %1023s", path);
    }
    int fd = hc->fd;
    struct http_server *s = hc->s;
    char loc[256];
    if (strcmp(path, "/article") == 0) {
        http_reply(fd, 200, NULL, "text/html; charset=utf-8", HTTP_ARTICLE, strlen(HTTP_ARTICLE));
    } else if (strcmp(path, "/to-private") == 0) {
        http_reply(fd, 302, "Location: http://10.1.2.3/admin\r\n", "text/plain", "", 0);
    } else if (strcmp(path, "/to-metadata") == 0) {
        http_reply(fd, 302, "Location: http://169.254.169.254/latest/meta-data/\r\n", "text/plain",
                   "", 0);
    } else if (strncmp(path, "/hop/", 5) == 0) {
        int k = atoi(path + 5);
        if (k <= 0) {
            http_reply(fd, 200, NULL, "text/plain", "landed", 6);
        } else {
            snprintf(loc, sizeof(loc), "Location: /hop/%d\r\n", k - 1);
            http_reply(fd, 301, loc, "text/plain", "", 0);
        }
    } else if (strcmp(path, "/big") == 0) {
        char head[256];
        int h = snprintf(head, sizeof(head),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %u\r\n"
                         "Connection: close\r\n\r\n",
                         HTTP_BIG_BYTES);
        http_send(fd, head, (size_t)h);
        static char chunk[65536];
        memset(chunk, 'a', sizeof(chunk));
        for (size_t sent = 0; sent < HTTP_BIG_BYTES; sent += sizeof(chunk)) {
            if (send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL) <= 0) break;
        }
    } else if (strcmp(path, "/bomb") == 0) {
        http_reply(fd, 200, "Content-Encoding: gzip\r\n", "text/plain", s->bomb, s->bomb_len);
    } else if (strcmp(path, "/latin1") == 0) {
        http_reply(fd, 200, NULL, "text/plain; charset=iso-8859-1", "caf\xe9 cr\xe8me", 10);
    } else if (strcmp(path, "/data.json") == 0) {
        const char *j = "{\"answer\": 42, \"name\": \"agentd\"}";
        http_reply(fd, 200, NULL, "application/json", j, strlen(j));
    } else if (strcmp(path, "/robots.txt") == 0) {
        const char *r = "User-agent: *\nDisallow: /private\nAllow: /private/ok\n";
        http_reply(fd, 200, NULL, "text/plain", r, strlen(r));
    } else if (strncmp(path, "/private", 8) == 0) {
        http_reply(fd, 200, NULL, "text/plain", "private page", 12);
    } else if (strcmp(path, "/slow") == 0) {
        sleep(3);
        http_reply(fd, 200, NULL, "text/plain", "late", 4);
    } else {
        http_reply(fd, 404, NULL, "text/plain", "not found", 9);
    }
    close(fd);
    free(hc);
    return NULL;
}

static inline void *http_accept_main(void *arg)
{
    struct http_server *s = arg;
    for (;;) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0) return NULL;
        struct http_conn *hc = calloc(1, sizeof(*hc));
        hc->s = s;
        hc->fd = fd;
        pthread_t t;
        if (pthread_create(&t, NULL, http_conn_main, hc) == 0)
            pthread_detach(t);
        else
            close(fd), free(hc);
    }
}

static inline bool http_server_start(struct http_server *s)
{
    memset(s, 0, sizeof(*s));
    /* The bomb: zeros compress about 1000:1. */
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) return false;
    size_t cap = HTTP_BOMB_BYTES / 500 + 4096;
    s->bomb = malloc(cap);
    static unsigned char zeros[1 << 16];
    z.next_out = s->bomb;
    z.avail_out = (uInt)cap;
    for (size_t done = 0; done < HTTP_BOMB_BYTES; done += sizeof(zeros)) {
        z.next_in = zeros;
        z.avail_in = sizeof(zeros);
        deflate(&z, Z_NO_FLUSH);
    }
    deflate(&z, Z_FINISH);
    s->bomb_len = cap - z.avail_out;
    deflateEnd(&z);

    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->fd, 64) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0)
        return false;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, http_accept_main, s) == 0;
}

#endif
