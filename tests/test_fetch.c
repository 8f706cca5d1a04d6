/*
 * test_fetch.c - web.fetch (the fetch_url tool) against a local HTTP server, through the real
 * daemon: readable text from HTML, the SSRF guard on redirects, the redirect limit, the size
 * cap on a 50 MB page and on a gzip bomb, charsets, robots.txt, host lists, the time limit, and
 * a daemon that keeps answering while fetches run. Also the guard's and robots' rules alone.
 */
#include <signal.h>
#include <sys/socket.h>

#include "../tools/fetch.h"
#include "daemon_util.h"
#include "http_server.h"
#include "test.h"

static struct tdaemon D;
static bool UP;
static struct http_server H;

static struct proto_val *fetch(const char *path, const char *extra)
{
    struct tconn c;
    if (!tconn_open(&c, D.sock)) return NULL;
    char *p = ag_asprintf("{\"url\":\"http://127.0.0.1:%d%s\"%s%s}", H.port, path, extra ? "," : "",
                          extra ? extra : "");
    char *line =
        ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"web.fetch\",\"params\":%s}\n", p);
    free(p);
    struct proto_val *r = tconn_send(&c, line) ? tconn_read(&c, 30000) : NULL;
    free(line);
    tconn_close(&c);
    return r;
}

static const struct proto_val *res(const struct proto_val *r)
{
    return proto_get(r, "result");
}

#define NEED()                                                                                     \
    do {                                                                                           \
        if (!UP) SKIP("the daemon or the test HTTP server did not start");                         \
    } while (0)

static void test_guard_rules(void)
{
    struct fetch_net n[2];
    struct ag_err err = {0};
    uint8_t a[16];
    CHECK(fetch_net_parse("127.0.0.1/32", &n[0], &err) == 0);
    CHECK(fetch_net_parse("fd00::/8", &n[1], &err) == 0);
    CHECK(fetch_net_parse("300.1.1.1", &n[0], &err) == AG_EINVAL);
    CHECK(fetch_net_parse("10.0.0.0/33", &n[0], &err) == AG_EINVAL);
    static const char *const denied4[] = {
        "127.0.0.1",  "10.9.8.7", "172.16.0.1", "172.31.255.255",  "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0",  "224.0.0.1",  "255.255.255.255", NULL};
    for (int i = 0; denied4[i]; i++) {
        inet_pton(AF_INET, denied4[i], a);
        CHECKF(!fetch_addr_allowed(AF_INET, a, NULL, 0), "%s", denied4[i]);
    }
    static const char *const allowed4[] = {"8.8.8.8", "172.32.0.1", "93.184.216.34", NULL};
    for (int i = 0; allowed4[i]; i++) {
        inet_pton(AF_INET, allowed4[i], a);
        CHECKF(fetch_addr_allowed(AF_INET, a, NULL, 0), "%s", allowed4[i]);
    }
    static const char *const denied6[] = {"::1",
                                          "::",
                                          "fc00::1",
                                          "fd12::5",
                                          "fe80::1",
                                          "::ffff:127.0.0.1",
                                          "::ffff:169.254.169.254",
                                          "ff02::1",
                                          NULL};
    for (int i = 0; denied6[i]; i++) {
        inet_pton(AF_INET6, denied6[i], a);
        CHECKF(!fetch_addr_allowed(AF_INET6, a, NULL, 0), "%s", denied6[i]);
    }
    inet_pton(AF_INET6, "2606:4700::1111", a);
    CHECK(fetch_addr_allowed(AF_INET6, a, NULL, 0));
    /* IPv6 forms that lead to an IPv4 address are refused when it is internal, and IPv4 allow
     * ranges admit only the mapped one (the others never reach the host's IPv4 stack). */
    static const char *const embedded[] = {"::127.0.0.1",
                                           "::10.1.2.3",
                                           "::172.16.0.1",
                                           "::192.168.1.1",
                                           "::169.254.169.254",
                                           "::100.64.0.1",
                                           "::ffff:10.1.2.3",
                                           "::ffff:192.168.1.1",
                                           "::ffff:0:127.0.0.1",
                                           "::ffff:0:10.1.2.3",
                                           "::ffff:0:169.254.169.254",
                                           "64:ff9b::127.0.0.1",
                                           "64:ff9b::10.1.2.3",
                                           "64:ff9b::169.254.169.254",
                                           "64:ff9b::192.168.1.1",
                                           "64:ff9b:1::8.8.8.8",
                                           "2002:7f00:1::1",
                                           "2002:a01:203::1",
                                           "2002:a9fe:a9fe::1",
                                           "fe80::1",
                                           "febf::1",
                                           "fec0::1",
                                           "fc00::1",
                                           "fdff::1",
                                           "::1",
                                           NULL};
    for (int i = 0; embedded[i]; i++) {
        CHECK(inet_pton(AF_INET6, embedded[i], a) == 1);
        CHECKF(!fetch_addr_allowed(AF_INET6, a, NULL, 0), "%s", embedded[i]);
    }
    static const char *const public6[] = {"64:ff9b::8.8.8.8", "::ffff:8.8.8.8", "2002:808:808::1",
                                          "::ffff:0:8.8.8.8", NULL};
    for (int i = 0; public6[i]; i++) {
        CHECK(inet_pton(AF_INET6, public6[i], a) == 1);
        CHECKF(fetch_addr_allowed(AF_INET6, a, NULL, 0), "%s", public6[i]);
    }
    /* The allowlist admits exactly its ranges. */
    CHECK(fetch_net_parse("127.0.0.1/32", &n[0], &err) == 0);
    inet_pton(AF_INET, "127.0.0.1", a);
    CHECK(fetch_addr_allowed(AF_INET, a, n, 2));
    inet_pton(AF_INET, "127.0.0.2", a);
    CHECK(!fetch_addr_allowed(AF_INET, a, n, 2));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", a);
    CHECK(fetch_addr_allowed(AF_INET6, a, n, 2));
    inet_pton(AF_INET6, "fd00::9", a);
    CHECK(fetch_addr_allowed(AF_INET6, a, n, 2));
    static const char *const not_by_v4_range[] = {"::127.0.0.1", "::ffff:0:127.0.0.1",
                                                  "64:ff9b::127.0.0.1", "2002:7f00:1::1", NULL};
    for (int i = 0; not_by_v4_range[i]; i++) {
        inet_pton(AF_INET6, not_by_v4_range[i], a);
        CHECKF(!fetch_addr_allowed(AF_INET6, a, n, 2), "%s", not_by_v4_range[i]);
    }
    CHECK(fetch_net_parse("::127.0.0.0/104", &n[1], &err) == 0); /* an IPv6 range does */
    inet_pton(AF_INET6, "::127.0.0.1", a);
    CHECK(fetch_addr_allowed(AF_INET6, a, n, 2));

    CHECK(fetch_host_match("*.example.org", "docs.example.org"));
    CHECK(!fetch_host_match("*.example.org", "example.org"));
    CHECK(!fetch_host_match("*.example.org", "evilexample.org"));
    CHECK(fetch_host_match("Example.org", "example.ORG"));

    const char *robots = "User-agent: somebot\nDisallow: /\n\n"
                         "User-agent: *\nDisallow: /private\nAllow: /private/ok\n"
                         "Disallow: /*.pdf$\n";
    CHECK(fetch_robots_allows(robots, "/"));
    CHECK(!fetch_robots_allows(robots, "/private/x"));
    CHECK(fetch_robots_allows(robots, "/private/ok/1"));
    CHECK(
        fetch_robots_allows("User-agent: agentd\nAllow: /\n\nUser-agent: *\nDisallow: /\n", "/a"));
    CHECK(!fetch_robots_allows("User-agent: *\nDisallow: /\n", "/anything"));
    CHECK(fetch_robots_allows("", "/x"));
}

static void test_html_to_text(void)
{
    struct ag_buf b;
    ag_buf_init(&b);
    char *title = NULL;
    struct ag_err err = {0};
    CHECK(html_to_text(HTTP_ARTICLE, strlen(HTTP_ARTICLE), NULL, &b, &title, &err) == 0);
    ag_buf_putc(&b, '\0');
    CHECKF(strcmp(b.data, "Pelicans\n\nThe secret word is PELICAN.\n\n- Pelicans eat fish.\n- "
                          "They live near water.") == 0,
           "[%s]", b.data);
    CHECK(title && strcmp(title, "The Pelican Report") == 0);
    free(title);
    ag_buf_reset(&b);
    /* Broken markup, a declared charset, <pre>. */
    const char *h = "<html><head><meta charset=\"iso-8859-1\"></head><body><p>caf\xe9<div>a  "
                    "b</div><pre>x  y\n z</pre><table><tr><td>1</td><td>2</td></tr></table>";
    CHECK(html_to_text(h, strlen(h), NULL, &b, NULL, &err) == 0);
    ag_buf_putc(&b, '\0');
    CHECKF(strstr(b.data, "caf\xc3\xa9") && strstr(b.data, "a b") && strstr(b.data, "x  y\n z") &&
               strstr(b.data, "1 | 2"),
           "[%s]", b.data);
    ag_buf_release(&b);
}

static void test_article(void)
{
    NEED();
    struct proto_val *r = fetch("/article", NULL);
    const char *text = proto_get_str(res(r), "text");
    CHECKF(text && strstr(text, "The secret word is PELICAN."), "%s", resp_error_msg(r));
    CHECK(text && !strstr(text, "not this") && !strstr(text, "color"));
    CHECK(strcmp(proto_get_str(res(r), "title"), "The Pelican Report") == 0);
    CHECK(proto_int(proto_get(res(r), "status"), 0) == 200);
    proto_val_free(r);
    r = fetch("/data.json", NULL);
    CHECK(strcmp(proto_get_str(res(r), "text"), "{\"answer\": 42, \"name\": \"agentd\"}") == 0);
    proto_val_free(r);
    r = fetch("/latin1", NULL);
    CHECKF(strcmp(proto_get_str(res(r), "text"), "caf\xc3\xa9 cr\xc3\xa8me") == 0, "%s",
           proto_get_str(res(r), "text"));
    proto_val_free(r);
    r = fetch("/missing", NULL);
    CHECK(proto_int(proto_get(res(r), "status"), 0) == 404);
    proto_val_free(r);
}

static void test_redirects(void)
{
    NEED();
    struct proto_val *r = fetch("/to-private", NULL);
    CHECKF(resp_error_code(r) != 0 && strstr(resp_error_msg(r), "10.1.2.3"), "%s",
           resp_error_msg(r));
    proto_val_free(r);
    r = fetch("/to-metadata", NULL);
    CHECKF(strstr(resp_error_msg(r), "169.254.169.254"), "%s", resp_error_msg(r));
    proto_val_free(r);
    r = fetch("/hop/5", NULL);
    CHECKF(strcmp(proto_get_str(res(r), "text"), "landed") == 0, "%s", resp_error_msg(r));
    CHECK(proto_int(proto_get(res(r), "redirects"), 0) == 5);
    proto_val_free(r);
    r = fetch("/hop/6", NULL);
    CHECKF(resp_error_code(r) == -32006 && strstr(resp_error_msg(r), "more than 5 redirects"), "%s",
           resp_error_msg(r));
    proto_val_free(r);
}

/* An IPv6 literal that embeds the IPv4 loopback is refused by the guard itself, before any
 * connection, although the daemon's allowlist admits 127.0.0.1. */
static void test_guard_v6_literals(void)
{
    NEED();
    static const char *const hosts[] = {"[::127.0.0.1]", "[::ffff:0:127.0.0.1]",
                                        "[64:ff9b::127.0.0.1]", "[::1]", NULL};
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    for (int i = 0; hosts[i]; i++) {
        char *p = ag_asprintf("{\"url\":\"http://%s:%d/article\"}", hosts[i], H.port);
        struct proto_val *r = tcall(&c, 10 + i, "web.fetch", p);
        free(p);
        CHECKF(resp_error_code(r) != 0 && strstr(resp_error_msg(r), "refused to connect to") &&
                   strstr(resp_error_msg(r), "off limits"),
               "%s: %s", hosts[i], resp_error_msg(r));
        proto_val_free(r);
    }
    tconn_close(&c);
}

static long rss_kb(void)
{
    return proc_rss_kb(D.pid);
}

static void test_size_limits(void)
{
    NEED();
    long before = rss_kb();
    int64_t t0 = ag_now_ms();
    struct proto_val *r = fetch("/big", "\"max_bytes\":1048576");
    CHECKF(proto_bool(proto_get(res(r), "truncated"), false), "%s", resp_error_msg(r));
    CHECK(proto_int(proto_get(res(r), "bytes"), 0) == 1048576);
    CHECKF(ag_now_ms() - t0 < 5000, "%lld ms", (long long)(ag_now_ms() - t0));
    proto_val_free(r);
    /* 200 MB of zeros in a ~200 KB gzip body: decoding stops at the cap. */
    r = fetch("/bomb", "\"max_bytes\":1048576");
    CHECKF(proto_bool(proto_get(res(r), "truncated"), false), "%s", resp_error_msg(r));
    CHECK(proto_int(proto_get(res(r), "bytes"), 0) == 1048576);
    proto_val_free(r);
    long after = rss_kb();
    CHECKF(after - before < 64 * 1024, "RSS grew from %ld to %ld kB", before, after);
}

static void test_policy(void)
{
    NEED();
    struct proto_val *r = fetch("/private/x", "\"robots\":true");
    CHECKF(strstr(resp_error_msg(r), "robots.txt disallows /private/x"), "%s", resp_error_msg(r));
    proto_val_free(r);
    r = fetch("/private/ok", "\"robots\":true");
    CHECK(strcmp(proto_get_str(res(r), "text"), "private page") == 0);
    proto_val_free(r);
    r = fetch("/private/x", NULL);
    CHECK(strcmp(proto_get_str(res(r), "text"), "private page") == 0);
    proto_val_free(r);
    r = fetch("/article", "\"deny\":[\"127.0.0.1\"]");
    CHECK(strstr(resp_error_msg(r), "deny list"));
    proto_val_free(r);
    r = fetch("/article", "\"allow\":[\"*.example.org\"]");
    CHECK(strstr(resp_error_msg(r), "allow list"));
    proto_val_free(r);
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    r = tcall(&c, 2, "web.fetch", "{\"url\":\"file:///etc/passwd\"}");
    CHECKF(strstr(resp_error_msg(r), "only http and https"), "%s", resp_error_msg(r));
    proto_val_free(r);
    r = tcall(&c, 3, "web.fetch", "{\"url\":\"ht tp://x\"}");
    CHECK(resp_error_code(r) != 0);
    proto_val_free(r);
    r = tcall(&c, 4, "web.fetch", "{\"url\":\"http://127.0.0.1:1/\",\"max_bytes\":-5}");
    CHECK(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), "max_bytes"));
    proto_val_free(r);
    tconn_close(&c);
}

/* A slow server hits the time limit; the daemon answers others meanwhile. */
static void test_timeout_and_responsive(void)
{
    NEED();
    struct tconn slow, p;
    CHECK(tconn_open(&slow, D.sock));
    char *line = ag_asprintf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"web.fetch\",\"params\":"
                             "{\"url\":\"http://127.0.0.1:%d/slow\",\"timeout_ms\":1000}}\n",
                             H.port);
    CHECK(tconn_send(&slow, line));
    free(line);
    CHECK(tconn_open(&p, D.sock));
    int64_t t0 = ag_now_ms();
    struct proto_val *r = tcall(&p, 2, "ping", NULL);
    CHECK(r && proto_get(r, "result") && ag_now_ms() - t0 < 200);
    proto_val_free(r);
    r = tconn_read(&slow, 10000);
    CHECKF(resp_error_code(r) == -32014, "%s", resp_error_msg(r));
    CHECK(ag_now_ms() - t0 < 2500);
    proto_val_free(r);
    tconn_close(&slow);
    tconn_close(&p);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (http_server_start(&H) && tdaemon_init(&D)) {
        const char *args[] = {"--fetch-allow", "127.0.0.1/32", NULL};
        UP = tdaemon_start_args(&D, args);
    }
    RUN(test_guard_rules);
    RUN(test_html_to_text);
    RUN(test_article);
    RUN(test_redirects);
    RUN(test_guard_v6_literals);
    RUN(test_size_limits);
    RUN(test_policy);
    RUN(test_timeout_and_responsive);
    if (D.pid) CHECK(tdaemon_cleanup(&D));
    return TEST_END();
}
