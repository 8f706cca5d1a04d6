/*
 * test_daemon.c - integration tests against the real agentd: real socket, real SQLite file,
 * real signals. Each bad-input test also checks that the daemon keeps serving (a second
 * client's ping is answered) and loses nothing.
 */
#include "daemon_util.h"
#include "test.h"

#include "../agentd/agentd.h"

static struct tdaemon D; /* shared daemon for the tests that do not restart it */

static bool ping_ok(const char *sock)
{
    struct tconn c;
    if (!tconn_open(&c, sock)) return false;
    struct proto_val *r = tcall(&c, 1, "ping", NULL);
    bool ok = r && proto_type(proto_get(r, "result")) == PROTO_OBJECT;
    proto_val_free(r);
    tconn_close(&c);
    return ok;
}

static void test_basics(void)
{
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = tcall(&c, 1, "initialize",
                                "{\"protocol_version\":\"" PROTO_VERSION "\",\"client\":"
                                "{\"name\":\"test\",\"version\":\"1\"}}");
    const struct proto_val *res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "protocol_version"), PROTO_VERSION);
    CHECK_STR(proto_get_str(proto_get(res, "server"), "name"), "agentd");
    CHECK(proto_len(proto_get(proto_get(res, "capabilities"), "methods")) >= 10);
    CHECK(proto_int(proto_get(proto_get(res, "capabilities"), "max_frame_bytes"), 0) > 0);
    proto_val_free(r);
    r = tcall(&c, 2, "status", NULL);
    res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "data_dir"), D.data);
    CHECK_STR(proto_get_str(res, "socket"), D.sock);
    CHECK(proto_int(proto_get(res, "connections"), 0) >= 1);
    CHECK(proto_int(proto_get(res, "pid"), 0) == D.pid);
    CHECK(proto_get(res, "uptime_s") != NULL);
    CHECK(proto_get(res, "agents") != NULL);
    proto_val_free(r);
    /* String ids come back as they were sent. */
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"ping\"}\n"));
    r = tconn_read(&c, 5000);
    CHECK_STR(proto_get_str(r, "id"), "abc");
    proto_val_free(r);
    tconn_close(&c);
}

static void test_socket_mode(void)
{
    struct stat st;
    CHECK(stat(D.sock, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    char *log = NULL;
    size_t n;
    CHECK(ag_read_file(D.log, 1 << 24, &log, &n, NULL) == 0);
    CHECK(log && strstr(log, "connected (uid ") != NULL); /* peer uid logged */
    free(log);
}

/* Sends raw bytes, expects one error response with the given code, then a working ping. */
static void expect_error(const char *raw, int64_t code, const char *msg_part, bool id_null)
{
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(tconn_send(&c, raw));
    struct proto_val *r = tconn_read(&c, 5000);
    CHECKF(r != NULL, "no answer to %.80s", raw);
    CHECKF(resp_error_code(r) == code, "got %lld for %.80s", (long long)resp_error_code(r), raw);
    CHECKF(strstr(resp_error_msg(r), msg_part) != NULL, "message '%s'", resp_error_msg(r));
    if (id_null) CHECK(proto_type(proto_get(r, "id")) == PROTO_NULL);
    proto_val_free(r);
    /* The same connection is still usable. */
    r = tcall(&c, 99, "ping", NULL);
    CHECK(r && proto_int(proto_get(r, "id"), 0) == 99 && proto_get(r, "result"));
    proto_val_free(r);
    tconn_close(&c);
    CHECK(ping_ok(D.sock));
}

static void test_malformed_json(void)
{
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n", -32700, "invalid JSON", true);
    expect_error("not json at all\n", -32700, "invalid JSON", true);
}

static void test_not_jsonrpc(void)
{
    expect_error("{\"hello\":\"world\"}\n", -32600, "jsonrpc", true);
    expect_error("[1,2,3]\n", -32600, "batch requests are not supported", true);
    expect_error("\"just a string\"\n", -32600, "must be a JSON object", true);
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":4}\n", -32600, "method", false);
}

/* The one method table: sorted, unique, every row summarised; built rows have handlers and the
 * catalogued ones that are not built have none; initialize's catalogue and the README's method
 * list are the table. */
static void test_method_table(void)
{
    struct ag_err err = {0};
    CHECKF(methods_init(&err) == 0, "%s", err.msg);
    size_t n;
    const struct method *const *all = methods_all(&n);
    CHECK(n > 30);
    for (size_t i = 0; i + 1 < n; i++) CHECK(strcmp(all[i]->name, all[i + 1]->name) < 0);
    for (size_t i = 0; i < n; i++) CHECK(all[i]->summary && *all[i]->summary);
    CHECK(methods_find("agent.create") && methods_find("agent.create")->fn);
    CHECK(methods_find("run.create") && methods_find("run.create")->fn);
    CHECK(methods_find("task.submit") && !methods_find("task.submit")->fn);
    CHECK(methods_find("nope") == NULL);

    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = tcall(&c, 1, "initialize", NULL);
    const struct proto_val *caps = proto_get(proto_get(r, "result"), "capabilities");
    const struct proto_val *cat = proto_get(caps, "catalog");
    CHECK(proto_len(cat) == n);
    size_t served = 0;
    for (size_t i = 0; i < proto_len(cat); i++) {
        const struct proto_val *e = proto_at(cat, i);
        const struct method *m = methods_find(proto_get_str(e, "name"));
        CHECK(m && proto_bool(proto_get(e, "served"), false) == (m->fn != NULL));
        served += m && m->fn;
    }
    CHECK(proto_len(proto_get(caps, "methods")) == served);
    proto_val_free(r);
    tconn_close(&c);

    /* README.md's method list is `agentd --methods`. */
    FILE *f = fopen("README.md", "r");
    CHECKF(f != NULL, "README.md not found from %s", getenv("PWD"));
    struct ag_buf readme;
    ag_buf_init(&readme);
    char buf[4096];
    size_t k;
    while (f && (k = fread(buf, 1, sizeof(buf), f)) > 0) ag_buf_append(&readme, buf, k);
    if (f) fclose(f);
    ag_buf_putc(&readme, '\0');
    for (size_t i = 0; i < n; i++) {
        char line[512];
        snprintf(line, sizeof(line), "| `%s` | %s%s |", all[i]->name, all[i]->summary,
                 all[i]->fn ? "" : " (not built yet: answers `unsupported`)");
        CHECKF(readme.data && strstr(readme.data, line), "README.md lacks the row: %s", line);
    }
    ag_buf_release(&readme);
    methods_release();
}

static void test_unknown_method(void)
{
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.lsit\"}\n", -32601,
                 "did you mean 'agent.list'", false);
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"task.submit\"}\n", -32013,
                 "not implemented", false);
}

static void test_bad_params(void)
{
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.get\"}\n", -32602,
                 "params.name: required", false);
    expect_error(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.get\",\"params\":{\"name\":5}}\n", -32602,
        "params.name: expected a string, got number", false);
    expect_error(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.get\",\"params\":{\"nme\":\"a\"}}"
        "\n",
        -32602, "did you mean 'name'", false);
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.create\",\"params\":{}}\n",
                 -32602, "exactly one of", false);
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.create\",\"params\":{\"path\":"
                 "\"rel.yaml\"}}\n",
                 -32602, "not an absolute path", false);
    expect_error("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":[]}\n", -32602,
                 "params: expected an object", false);
}

static void test_oversized_frame(void)
{
    /* D runs with --max-frame 1048576: a 3 MiB line gets one error, then the connection works. */
    size_t n = 3u << 20;
    char *big = ag_malloc(n + 1);
    memcpy(big, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"x\":\"", 54);
    memset(big + 54, 'a', n - 54 - 4);
    memcpy(big + n - 4, "\"}}\n", 4);
    big[n] = '\0';
    long rss0 = proc_rss_kb(D.pid);
    expect_error(big, -32009, "exceeds the 1048576-byte frame limit", true);
    long rss1 = proc_rss_kb(D.pid);
    CHECKF(rss1 - rss0 < 8 * 1024, "rss grew %ld kB", rss1 - rss0);
    free(big);
}

static void test_binary_garbage(void)
{
    struct tconn c;
    unsigned char junk[8192];
    unsigned seed = 12345;
    CHECK(tconn_open(&c, D.sock));
    for (size_t i = 0; i < sizeof(junk); i++) {
        seed = seed * 1103515245 + 12345;
        junk[i] = (unsigned char)(seed >> 16);
    }
    junk[sizeof(junk) - 1] = '\n';
    CHECK(send_all(c.fd, junk, sizeof(junk)));
    /* Every garbage line gets an error with id null; then a real request still works. */
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":4242,\"method\":\"ping\"}\n"));
    int errors = 0;
    bool found = false;
    for (int i = 0; i < 10000 && !found; i++) {
        struct proto_val *r = tconn_read(&c, 5000);
        if (!r) break;
        if (proto_int(proto_get(r, "id"), 0) == 4242) found = true;
        if (proto_get(r, "error")) errors++;
        proto_val_free(r);
    }
    CHECK(found);
    CHECK(errors > 0);
    tconn_close(&c);
    CHECK(ping_ok(D.sock));
}

static void test_half_line_disconnect(void)
{
    for (int i = 0; i < 20; i++) {
        int fd = tconnect(D.sock);
        CHECK(fd >= 0);
        CHECK(send_all(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"meth", 30));
        close(fd);
    }
    CHECK(ping_ok(D.sock));
}

static void test_notification_no_reply(void)
{
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n"
                         "{\"jsonrpc\":\"2.0\",\"method\":\"agent.list\"}\n"
                         "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\n"));
    struct proto_val *r = tcall(&c, 7, "ping", NULL);
    CHECK(proto_int(proto_get(r, "id"), 0) == 7); /* the first answer is for id 7 */
    proto_val_free(r);
    tconn_close(&c);
}

static void test_slow_reader_bounded(void)
{
    /* A client that sends requests and never reads: the daemon pauses it once its responses
     * back up, so memory stays bounded, and other clients are still served. */
    int fd = tconnect(D.sock);
    CHECK(fd >= 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int sz = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":123456789,\"method\":\"status\"}\n";
    char chunk[sizeof(req) * 100];
    for (int i = 0; i < 100; i++) memcpy(chunk + i * (sizeof(req) - 1), req, sizeof(req) - 1);
    size_t chunk_len = (sizeof(req) - 1) * 100;
    long rss0 = proc_rss_kb(D.pid);
    size_t sent = 0;
    int stalls = 0;
    int64_t t0 = ag_now_ms();
    while (sent < (64u << 20) && ag_now_ms() - t0 < 20000) {
        ssize_t w = write(fd, chunk, chunk_len);
        if (w > 0) {
            sent += (size_t)w;
            stalls = 0;
            continue;
        }
        if (w < 0 && errno != EAGAIN) break;
        /* The daemon stopped reading us: give it a moment to prove it stays stopped. */
        if (++stalls > 20) break;
        usleep(20000);
    }
    long rss1 = proc_rss_kb(D.pid);
    if (getenv("TEST_VERBOSE"))
        printf("  slow reader: sent %zu bytes, rss %ld -> %ld kB\n", sent, rss0, rss1);
    CHECKF(sent < (64u << 20), "daemon accepted %zu bytes without being read", sent);
    CHECKF(sent > (256u << 10), "only %zu bytes sent: the test did not exercise backpressure",
           sent);
    CHECKF(rss1 - rss0 < 48 * 1024, "rss grew from %ld to %ld kB", rss0, rss1);
    CHECK(ping_ok(D.sock));
    close(fd);
    usleep(100000);
    CHECK(ping_ok(D.sock));
}

/* 200 clients x 100 pipelined requests, a mix of immediate and storage-backed methods: every
 * request is answered, and each connection gets its answers in the order it asked. */
static void test_many_clients(void)
{
    enum { NC = 200, NR = 100 };
    static struct tconn cs[NC];
    static int next_id[NC];
    struct tconn setup;
    CHECK(tconn_open(&setup, D.sock));
    struct proto_val *r = tcall(&setup, 1, "agent.create",
                                "{\"spec\":{\"name\":\"many-clients\",\"description\":\"x\"}}");
    proto_val_free(r);
    tconn_close(&setup);

    int opened = 0;
    for (int i = 0; i < NC; i++) opened += tconn_open(&cs[i], D.sock);
    CHECK(opened == NC);
    for (int i = 0; i < NC; i++) {
        struct ag_buf b;
        ag_buf_init(&b);
        for (int k = 1; k <= NR; k++) {
            const char *m = k % 10 == 0 ? "agent.get" : k % 10 == 5 ? "agent.list" : "ping";
            if (k % 10 == 0)
                ag_buf_printf(&b,
                              "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":{"
                              "\"name\":\"many-clients\"}}\n",
                              k, m);
            else
                ag_buf_printf(&b, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"}\n", k, m);
        }
        CHECK(send_all(cs[i].fd, b.data, b.len));
        ag_buf_release(&b);
        next_id[i] = 1;
    }
    int done = 0, bad_order = 0, errors = 0;
    int64_t t0 = ag_now_ms();
    while (done < NC && ag_now_ms() - t0 < 60000) {
        for (int i = 0; i < NC; i++) {
            while (next_id[i] <= NR) {
                struct proto_val *v = tconn_read(&cs[i], 0);
                if (!v) break;
                if (proto_int(proto_get(v, "id"), -1) != next_id[i]) bad_order++;
                if (proto_get(v, "error")) errors++;
                proto_val_free(v);
                if (++next_id[i] > NR) done++;
            }
        }
        usleep(1000);
    }
    CHECKF(done == NC, "%d of %d clients got all answers", done, NC);
    CHECK(bad_order == 0);
    CHECK(errors == 0);
    for (int i = 0; i < NC; i++) tconn_close(&cs[i]);
}

static struct proto_val *create_text(struct tconn *c, const char *filename, const char *text)
{
    struct proto_val *p = proto_obj();
    proto_add_str(p, "text", text);
    proto_add_str(p, "filename", filename);
    char *ps = proto_print(p);
    struct proto_val *r = tcall(c, 1, "agent.create", ps);
    free(ps);
    proto_val_free(p);
    return r;
}

static void test_invalid_agent_files(void)
{
    static const struct {
        const char *file, *text, *msg;
    } cases[] = {
        {"a.agent.yaml", "name: ok\ninstructons: hi\n", "a.agent.yaml:2: instructons"},
        {"b.agent.yaml", "name: Bad Name\n", "b.agent.yaml:1: name"},
        {"c.agent.yaml", "name: c\ntools:\n  - python\n  - name: shell\n    timeout_ms: -5\n",
         "c.agent.yaml:5: tools[1].timeout_ms"},
        {"d.agent.yaml", "name: d\n  bad: [\n", "d.agent.yaml:"},
        {"e.agent.json", "{\"name\": \"e\",\n \"limits\": {\"max_steps\": \"x\"}}",
         "e.agent.json:2: limits.max_steps"},
        {"f.agent.yaml", "", "f.agent.yaml:1: empty"},
    };
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct proto_val *r = create_text(&c, cases[i].file, cases[i].text);
        CHECKF(resp_error_code(r) == -32008, "%s: code %lld", cases[i].file,
               (long long)resp_error_code(r));
        CHECKF(strstr(resp_error_msg(r), cases[i].msg) == resp_error_msg(r), "%s: '%s'",
               cases[i].file, resp_error_msg(r));
        CHECK_STR(resp_error_type(r), "invalid_definition");
        proto_val_free(r);
    }
    /* A spec object over the protocol names the field under "spec.". */
    struct proto_val *r =
        tcall(&c, 2, "agent.create", "{\"spec\":{\"name\":\"x\",\"limits\":{\"max_steps\":0}}}");
    CHECKF(strncmp(resp_error_msg(r), "spec.limits.max_steps", 21) == 0, "'%s'", resp_error_msg(r));
    proto_val_free(r);
    /* A missing file by path. */
    r = tcall(&c, 3, "agent.create", "{\"path\":\"/nonexistent/x.agent.yaml\"}");
    CHECK(resp_error_code(r) != 0 && strstr(resp_error_msg(r), "/nonexistent/x.agent.yaml"));
    proto_val_free(r);
    /* Nothing was created by any of these. */
    r = tcall(&c, 4, "agent.get", "{\"name\":\"ok\"}");
    CHECK_STR(resp_error_type(r), "not_found");
    proto_val_free(r);
    tconn_close(&c);
}

static void test_agent_crud(void)
{
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r =
        create_text(&c, "crud.agent.yaml", "name: crud\ndescription: first\ntools: [python]\n");
    CHECK(proto_int(proto_get(proto_get(r, "result"), "version"), 0) == 1);
    CHECK_STR(proto_get_str(proto_get(proto_get(r, "result"), "spec"), "description"), "first");
    proto_val_free(r);
    r = create_text(&c, "crud.agent.yaml", "name: crud\n");
    CHECK(resp_error_code(r) == -32002);
    CHECK(strstr(resp_error_msg(r), "crud") != NULL);
    proto_val_free(r);
    r = tcall(
        &c, 2, "agent.update",
        "{\"text\":\"name: crud\\ndescription: second\\n\",\"filename\":\"crud.agent.yaml\"}");
    CHECK(proto_int(proto_get(proto_get(r, "result"), "version"), 0) == 2);
    proto_val_free(r);
    r = tcall(&c, 3, "agent.update", "{\"spec\":{\"name\":\"crud\"},\"expect_version\":1}");
    CHECK_STR(resp_error_type(r), "busy");
    proto_val_free(r);
    r = tcall(&c, 4, "agent.update", "{\"spec\":{\"name\":\"crud\"},\"name\":\"other\"}");
    CHECK(resp_error_code(r) == -32602);
    proto_val_free(r);
    r = tcall(&c, 5, "agent.get", "{\"name\":\"crud\"}");
    CHECK_STR(proto_get_str(proto_get(proto_get(r, "result"), "spec"), "description"), "second");
    proto_val_free(r);
    r = tcall(&c, 6, "agent.list", NULL);
    const struct proto_val *list = proto_get(proto_get(r, "result"), "agents");
    bool seen = false;
    for (const struct proto_val *a = proto_child(list); a; a = proto_next(a))
        if (strcmp(proto_get_str(a, "name"), "crud") == 0) seen = true;
    CHECK(seen);
    proto_val_free(r);
    r = tcall(&c, 7, "session.create", "{\"agent\":\"crud\",\"title\":\"t\"}");
    const char *sid = proto_get_str(proto_get(r, "result"), "id");
    CHECK(sid && strncmp(sid, "ses_", 4) == 0);
    char *q = ag_asprintf("{\"session\":\"%s\"}", sid ? sid : "");
    proto_val_free(r);
    r = tcall(&c, 8, "session.get", q);
    CHECK_STR(proto_get_str(proto_get(r, "result"), "agent"), "crud");
    CHECK(proto_len(proto_get(proto_get(r, "result"), "messages")) == 0);
    proto_val_free(r);
    r = tcall(&c, 9, "agent.delete", "{\"name\":\"crud\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "deleted"), "crud");
    proto_val_free(r);
    r = tcall(&c, 10, "session.get", q); /* cascaded */
    CHECK_STR(resp_error_type(r), "not_found");
    proto_val_free(r);
    r = tcall(&c, 11, "agent.delete", "{\"name\":\"crud\"}");
    CHECK_STR(resp_error_type(r), "not_found");
    proto_val_free(r);
    free(q);
    tconn_close(&c);
}

static void test_second_daemon_refused(void)
{
    char cmd[1200], out[2048] = "";
    snprintf(cmd, sizeof(cmd), "timeout 20 %s/agentd --data %s --socket %s/other.sock 2>&1",
             bin_dir(), D.data, D.dir);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CHECKF(strstr(out, "in use by another agentd") != NULL, "'%s'", out);
    /* The same socket with another data dir is refused too. */
    snprintf(cmd, sizeof(cmd), "timeout 20 %s/agentd --data %s/d2 --socket %s 2>&1", bin_dir(),
             D.dir, D.sock);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CHECKF(strstr(out, "already listening") != NULL, "'%s'", out);
    CHECK(ping_ok(D.sock));
}

static void test_kill9_after_create(void)
{
    struct tdaemon k;
    CHECK(tdaemon_start(&k));
    for (int round = 0; round < 3; round++) {
        struct tconn c;
        char spec[128];
        snprintf(spec, sizeof(spec), "{\"spec\":{\"name\":\"durable-%d\"}}", round);
        CHECK(tconn_open(&c, k.sock));
        struct proto_val *r = tcall(&c, 1, "agent.create", spec);
        CHECK(proto_get(r, "result") != NULL);
        proto_val_free(r);
        tdaemon_kill9(&k); /* right after the acknowledgement */
        tconn_close(&c);
        CHECK(tdaemon_start_args(&k, NULL)); /* stale socket and lock are taken over */
        CHECK(tconn_open(&c, k.sock));
        for (int j = 0; j <= round; j++) {
            char q[64];
            snprintf(q, sizeof(q), "{\"name\":\"durable-%d\"}", j);
            r = tcall(&c, 2, "agent.get", q);
            CHECKF(proto_get(r, "result") != NULL, "durable-%d lost after kill -9", j);
            proto_val_free(r);
        }
        tconn_close(&c);
    }
    CHECK(tdaemon_cleanup(&k));
}

static void test_sigterm_drains(void)
{
    struct tdaemon k;
    CHECK(tdaemon_start(&k));
    struct tconn c;
    CHECK(tconn_open(&c, k.sock));
    /* Pipelined writes, then SIGTERM at once: every acknowledged one must be stored. */
    struct ag_buf b;
    ag_buf_init(&b);
    for (int i = 0; i < 50; i++)
        ag_buf_printf(&b,
                      "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"agent.create\",\"params\":"
                      "{\"spec\":{\"name\":\"drain-%d\"}}}\n",
                      i, i);
    CHECK(send_all(c.fd, b.data, b.len));
    ag_buf_release(&b);
    struct proto_val *first = tconn_read(&c, 5000);
    CHECK(first != NULL);
    proto_val_free(first);
    kill(k.pid, SIGTERM);
    int acked = 1;
    struct proto_val *r;
    while ((r = tconn_read(&c, 5000)) != NULL) {
        if (proto_get(r, "result")) acked++;
        proto_val_free(r);
    }
    tconn_close(&c);
    int st;
    CHECK(waitpid(k.pid, &st, 0) == k.pid);
    k.pid = 0;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct stat sst;
    CHECK(stat(k.sock, &sst) != 0); /* the socket file is removed */
    CHECK(tdaemon_start_args(&k, NULL));
    CHECK(tconn_open(&c, k.sock));
    r = tcall(&c, 1, "status", NULL);
    CHECKF(proto_int(proto_get(proto_get(r, "result"), "agents"), -1) >= acked,
           "acked %d, stored %lld", acked,
           (long long)proto_int(proto_get(proto_get(r, "result"), "agents"), -1));
    proto_val_free(r);
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&k));
}

static void test_agents_dir_loaded(void)
{
    struct tdaemon k;
    const char *args[] = {"--agents", "examples", NULL};
    CHECK(tdaemon_init(&k));
    CHECK(tdaemon_start_args(&k, args));
    struct tconn c;
    CHECK(tconn_open(&c, k.sock));
    struct proto_val *r = tcall(&c, 1, "agent.list", NULL);
    size_t n = proto_len(proto_get(proto_get(r, "result"), "agents"));
    CHECKF(n >= 3, "%zu agents loaded from examples/", n);
    proto_val_free(r);
    tconn_close(&c);
    /* Restarting with the same files changes nothing (versions stay 1). */
    CHECK(tdaemon_stop(&k) == 0);
    CHECK(tdaemon_start_args(&k, args));
    CHECK(tconn_open(&c, k.sock));
    r = tcall(&c, 2, "agent.get", "{\"name\":\"assistant\"}");
    CHECK(proto_int(proto_get(proto_get(r, "result"), "version"), 0) == 1);
    proto_val_free(r);
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&k));
}

static void test_config_file(void)
{
    struct tdaemon k;
    char cfg[400], cmd[1200], out[1024] = "";
    CHECK(tdaemon_init(&k));
    snprintf(cfg, sizeof(cfg), "%s/agentd.json", k.dir);
    FILE *f = fopen(cfg, "w");
    fputs("{\"max_frame_bytes\": 4096, \"log_level\": \"warn\", \"drain_timeout_ms\": 100}\n", f);
    fclose(f);
    const char *args[] = {"--config", cfg, NULL};
    CHECK(tdaemon_start_args(&k, args)); /* its --log-level debug flag wins over the file */
    struct tconn c;
    CHECK(tconn_open(&c, k.sock));
    struct proto_val *r = tcall(&c, 1, "initialize", NULL);
    CHECK(proto_int(proto_get(proto_get(proto_get(r, "result"), "capabilities"), "max_frame_bytes"),
                    0) == 4096);
    proto_val_free(r);
    tconn_close(&c);
    CHECK(tdaemon_cleanup(&k));

    /* A typo in the config file is an error that names the file and the key. */
    CHECK(tdaemon_init(&k));
    snprintf(cfg, sizeof(cfg), "%s/agentd.json", k.dir);
    f = fopen(cfg, "w");
    fputs("{\"max_frame\": 4096}\n", f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "timeout 20 %s/agentd --config %s --data %s 2>&1", bin_dir(), cfg,
             k.data);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECKF(strstr(out, "agentd.json: max_frame: unknown key (did you mean "
                       "'max_frame_bytes'?)") != NULL,
           "'%s'", out);
    CHECK(tdaemon_cleanup(&k));
}

static void test_bad_flags(void)
{
    char cmd[512], out[1024] = "";
    snprintf(cmd, sizeof(cmd), "%s/agentd --log-level loud 2>&1", bin_dir());
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK(strstr(out, "--log-level") != NULL);
    snprintf(cmd, sizeof(cmd), "%s/agentd --help", bin_dir());
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strstr(out, "--socket") && strstr(out, "--data"));
}

/* The shared daemon exits 0 on SIGTERM with no sanitizer report in its log. */
static void test_clean_exit(void)
{
    CHECK(tdaemon_cleanup(&D));
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const char *args[] = {"--max-frame", "1048576", NULL};
    if (!tdaemon_init(&D) || !tdaemon_start_args(&D, args)) {
        printf("cannot start %s/agentd (build it first); log in %s\n", bin_dir(), D.log);
        return 1;
    }
    RUN(test_basics);
    RUN(test_socket_mode);
    RUN(test_malformed_json);
    RUN(test_not_jsonrpc);
    RUN(test_method_table);
    RUN(test_unknown_method);
    RUN(test_bad_params);
    RUN(test_oversized_frame);
    RUN(test_binary_garbage);
    RUN(test_half_line_disconnect);
    RUN(test_notification_no_reply);
    RUN(test_slow_reader_bounded);
    RUN(test_many_clients);
    RUN(test_invalid_agent_files);
    RUN(test_agent_crud);
    RUN(test_second_daemon_refused);
    RUN(test_kill9_after_create);
    RUN(test_sigterm_drains);
    RUN(test_agents_dir_loaded);
    RUN(test_config_file);
    RUN(test_bad_flags);
    RUN(test_clean_exit);
    return TEST_END();
}
