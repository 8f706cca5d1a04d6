/*
 * test_sandbox_daemon.c - the sandbox.* methods over the wire, against the real agentd: one-shot
 * runs, named sessions (created on first use), files, streaming, interrupt, kill, idle expiry,
 * and that whatever a sandbox does, the daemon keeps serving other clients.
 */
#include "daemon_util.h"
#include "test.h"

static struct tdaemon D;
static bool UP;            /* daemon started */
static char SKIP_WHY[600]; /* sandboxes unavailable here */

#define NEED()                                                                                     \
    do {                                                                                           \
        if (!UP) SKIP("the daemon did not start");                                                 \
        if (SKIP_WHY[0]) SKIP(SKIP_WHY);                                                           \
    } while (0)

static struct proto_val *call(struct tconn *c, const char *method, const char *params)
{
    static int id = 100;
    return tcall(c, ++id, method, params);
}

/* ms for a ping on a fresh connection, or -1. */
static int64_t ping_ms(void)
{
    struct tconn c;
    if (!tconn_open(&c, D.sock)) return -1;
    int64_t t0 = ag_now_ms();
    struct proto_val *r = call(&c, "ping", NULL);
    int64_t ms = r && proto_get(r, "result") ? ag_now_ms() - t0 : -1;
    proto_val_free(r);
    tconn_close(&c);
    return ms;
}

static void test_oneshot(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = call(&c, "sandbox.exec", "{\"code\":\"print(6*7)\"}");
    const struct proto_val *res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "stdout"), "42\n");
    CHECK_STR(proto_get_str(res, "stop"), "exit");
    CHECK(proto_int(proto_get(res, "exit_code"), -1) == 0);
    proto_val_free(r);
    r = call(&c, "sandbox.exec",
             "{\"code\":\"cat; echo; id -u; exit 4\",\"language\":\"shell\",\"stdin\":\"in\"}");
    res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "stdout"), "in\n1000\n");
    CHECK(proto_int(proto_get(res, "exit_code"), -1) == 4);
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"code\":\"while True: pass\",\"timeout_ms\":300}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "stop"), "timeout");
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"code\":\"x\",\"language\":\"ruby\"}");
    CHECK(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), "language"));
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"cod\":\"x\"}");
    CHECK(resp_error_code(r) == -32602 && strstr(resp_error_msg(r), "did you mean 'code'"));
    proto_val_free(r);
    tconn_close(&c);
}

static void test_session_over_wire(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    /* Created on first use, then reused. */
    struct proto_val *r = call(&c, "sandbox.exec", "{\"session\":\"w1\",\"code\":\"a = 20\\na\"}");
    const struct proto_val *res = proto_get(r, "result");
    CHECK(proto_bool(proto_get(res, "created"), false));
    CHECK_STR(proto_get_str(res, "value"), "20");
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w1\",\"code\":\"a + 1\"}");
    res = proto_get(r, "result");
    CHECK_STR(proto_get_str(res, "value"), "21");
    CHECK(proto_get(res, "created") == NULL);
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w1\",\"code\":\"[][1]\"}");
    res = proto_get(r, "result");
    CHECK(!proto_bool(proto_get(res, "ok"), true));
    CHECK_STR(proto_get_str(proto_get(res, "error"), "name"), "IndexError");
    proto_val_free(r);
    /* Files: text and binary. */
    r = call(&c, "sandbox.files.put", "{\"session\":\"w1\",\"path\":\"in/t.txt\",\"data\":\"hé\"}");
    CHECK(proto_int(proto_get(proto_get(r, "result"), "size"), 0) == 3);
    proto_val_free(r);
    r = call(&c, "sandbox.files.put",
             "{\"session\":\"w1\",\"path\":\"b.bin\",\"base64\":\"AAEC/w==\"}");
    CHECK(proto_get(r, "result") != NULL);
    proto_val_free(r);
    r = call(&c, "sandbox.exec",
             "{\"session\":\"w1\",\"code\":\"open('in/t.txt').read(), list(open('b.bin','rb')."
             "read())\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "value"), "('hé', [0, 1, 2, 255])");
    proto_val_free(r);
    r = call(&c, "sandbox.files.get", "{\"session\":\"w1\",\"path\":\"b.bin\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "base64"), "AAEC/w==");
    proto_val_free(r);
    r = call(&c, "sandbox.files.get", "{\"session\":\"w1\",\"path\":\"../etc/passwd\"}");
    CHECK(resp_error_code(r) == -32602);
    proto_val_free(r);
    r = call(&c, "sandbox.list", NULL);
    const struct proto_val *list = proto_get(proto_get(r, "result"), "sandboxes");
    bool seen = false;
    for (size_t i = 0; i < proto_len(list); i++)
        seen |= strcmp(proto_get_str(proto_at(list, i), "name"), "w1") == 0;
    CHECK(seen);
    CHECK(proto_get(proto_get(r, "result"), "host") != NULL);
    proto_val_free(r);
    r = call(&c, "sandbox.create", "{\"name\":\"w1\"}");
    CHECK(resp_error_code(r) == -32002); /* exists */
    proto_val_free(r);
    r = call(&c, "sandbox.kill", "{\"session\":\"w1\"}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "killed"), false));
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w1\",\"code\":\"a\",\"create\":false}");
    CHECK(resp_error_code(r) == -32001);
    proto_val_free(r);
    tconn_close(&c);
}

static void test_crash_restart_over_wire(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = call(&c, "sandbox.create",
                               "{\"name\":\"w2\",\"limits\":{\"memory_mb\":"
                               "128,\"timeout_ms\":5000}}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "created"), false));
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w2\",\"code\":\"import os; os._exit(9)\"}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "session_lost"), false));
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w2\",\"code\":\"1\"}");
    CHECK(resp_error_code(r) == -32005 && strstr(resp_error_msg(r), "restart"));
    proto_val_free(r);
    r = call(&c, "sandbox.restart", "{\"session\":\"w2\"}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "alive"), false));
    proto_val_free(r);
    r = call(&c, "sandbox.exec", "{\"session\":\"w2\",\"code\":\"2 + 2\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "value"), "4");
    proto_val_free(r);
    r = call(&c, "sandbox.kill", "{\"session\":\"w2\"}");
    proto_val_free(r);
    tconn_close(&c);
}

static void test_streaming(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sandbox.exec\",\"params\":"
                         "{\"session\":\"w3\",\"stream\":true,\"code\":\"import time\\nfor i in "
                         "range(3): print('line', i); time.sleep(0.2)\"}}\n"));
    int notes = 0;
    struct ag_buf got;
    ag_buf_init(&got);
    for (;;) {
        struct proto_val *m = tconn_read(&c, 10000);
        if (!m) break;
        const char *method = proto_get_str(m, "method");
        if (method && strcmp(method, "sandbox.output") == 0) {
            notes++;
            ag_buf_puts(&got, proto_get_str(proto_get(m, "params"), "data"));
            CHECK_STR(proto_get_str(proto_get(m, "params"), "session"), "w3");
            proto_val_free(m);
            continue;
        }
        CHECK(proto_int(proto_get(m, "id"), 0) == 7);
        CHECK(notes >= 3); /* every line arrived before the result */
        CHECK_STR(proto_get_str(proto_get(m, "result"), "stdout"), "line 0\nline 1\nline 2\n");
        proto_val_free(m);
        break;
    }
    CHECK(got.data && strcmp(got.data, "line 0\nline 1\nline 2\n") == 0);
    ag_buf_release(&got);
    struct proto_val *r = call(&c, "sandbox.kill", "{\"session\":\"w3\"}");
    proto_val_free(r);
    tconn_close(&c);
}

/* Hostile work on one connection; a second connection is served promptly throughout. */
static void test_daemon_keeps_serving(void)
{
    NEED();
    struct tconn a, b;
    CHECK(tconn_open(&a, D.sock) && tconn_open(&b, D.sock));
    static const char *const hostile[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sandbox.exec\",\"params\":{\"session\":"
        "\"busy\",\"code\":\"while True: pass\",\"timeout_ms\":60000}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"sandbox.exec\",\"params\":{\"code\":\"import "
        "os\\nwhile True:\\n    try: os.fork()\\n    except OSError: "
        "pass\",\"timeout_ms\":1500}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"sandbox.exec\",\"params\":{\"code\":\"b=[]\\n"
        "while True: b.append(bytearray(1<<24))\",\"limits\":{\"memory_mb\":64}}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"sandbox.exec\",\"params\":{\"code\":\"while "
        "True: print('x' * 10000)\",\"stream\":true}}\n",
    };
    struct tconn h[4];
    for (int i = 0; i < 4; i++) {
        CHECK(tconn_open(&h[i], D.sock));
        CHECK(tconn_send(&h[i], hostile[i]));
    }
    usleep(300000);
    /* Meanwhile: pings, a one-shot run and the list, on other connections. */
    for (int i = 0; i < 5; i++) {
        int64_t ms = ping_ms();
        CHECKF(ms >= 0 && ms < 500, "ping took %lld ms", (long long)ms);
        usleep(100000);
    }
    struct proto_val *r = call(&b, "sandbox.exec", "{\"code\":\"print('still fine')\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "stdout"), "still fine\n");
    proto_val_free(r);
    r = call(&b, "sandbox.exec", "{\"session\":\"busy\",\"code\":\"1\"}");
    CHECK(resp_error_code(r) == -32003); /* that session is busy */
    proto_val_free(r);
    /* Interrupt the endless cell from the other connection: it ends, the session lives. */
    r = call(&b, "sandbox.interrupt", "{\"session\":\"busy\"}");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "interrupted"), false));
    proto_val_free(r);
    r = tconn_read(&h[0], 10000);
    CHECK_STR(proto_get_str(proto_get(proto_get(r, "result"), "error"), "name"),
              "KeyboardInterrupt");
    proto_val_free(r);
    r = call(&h[0], "sandbox.exec", "{\"session\":\"busy\",\"code\":\"'alive'\"}");
    CHECK_STR(proto_get_str(proto_get(r, "result"), "value"), "'alive'");
    proto_val_free(r);
    r = tconn_read(&h[1], 10000);
    CHECK_STR(proto_get_str(proto_get(r, "result"), "stop"), "timeout");
    proto_val_free(r);
    r = tconn_read(&h[2], 10000);
    CHECK_STR(proto_get_str(proto_get(r, "result"), "stop"), "memory");
    proto_val_free(r);
    for (;;) { /* the flood: notifications, then the capped result */
        r = tconn_read(&h[3], 10000);
        if (!r || proto_get(r, "id")) break;
        proto_val_free(r);
    }
    CHECK_STR(proto_get_str(proto_get(r, "result"), "stop"), "output_limit");
    CHECK(proto_bool(proto_get(proto_get(r, "result"), "stdout_truncated"), false));
    proto_val_free(r);
    for (int i = 0; i < 4; i++) tconn_close(&h[i]);
    r = call(&b, "sandbox.kill", "{\"session\":\"busy\"}");
    proto_val_free(r);
    CHECK(ping_ms() >= 0);
    tconn_close(&a);
    tconn_close(&b);
}

static void test_idle_expiry(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = call(&c, "sandbox.create", "{\"name\":\"idle1\"}");
    int64_t pid = proto_int(proto_get(proto_get(r, "result"), "pid"), 0);
    CHECK(pid > 0);
    proto_val_free(r);
    r = tconn_read(&c, 10000); /* AGENTD_SANDBOX_IDLE_S=2 */
    CHECK_STR(proto_get_str(r, "method"), "sandbox.expired");
    CHECK_STR(proto_get_str(proto_get(r, "params"), "session"), "idle1");
    proto_val_free(r);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) {
        gone = kill((pid_t)pid, 0) != 0;
        if (!gone) usleep(20000);
    }
    CHECK(gone);
    r = call(&c, "sandbox.exec", "{\"session\":\"idle1\",\"code\":\"1\",\"create\":false}");
    CHECK(resp_error_code(r) == -32001);
    proto_val_free(r);
    tconn_close(&c);
}

/* Runs a shell command line, returns its exit status and stdout (caller frees). */
static int sh(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    struct ag_buf b;
    char buf[4096];
    size_t n;
    ag_buf_init(&b);
    while (p && (n = fread(buf, 1, sizeof(buf), p)) > 0) ag_buf_append(&b, buf, n);
    int st = p ? pclose(p) : -1;
    *out = b.data ? ag_buf_detach(&b, &n) : ag_strdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_agentctl_exec(void)
{
    NEED();
    char cmd[1024], *out = NULL;
    const char *ctl = bin_dir();
    snprintf(cmd, sizeof(cmd),
             "printf 'v = 6\\nprint(\"hi\")\\nv * 7\\n' | %s/agentctl --socket %s exec "
             "--session cli -",
             ctl, D.sock);
    CHECK(sh(cmd, &out) == 0);
    CHECK_STR(out, "hi\n42\n");
    free(out);
    snprintf(cmd, sizeof(cmd), "echo 'v + 1' | %s/agentctl --socket %s exec --session cli -", ctl,
             D.sock);
    CHECK(sh(cmd, &out) == 0);
    CHECK_STR(out, "7\n");
    free(out);
    snprintf(cmd, sizeof(cmd),
             "echo 'import sys; sys.exit(5)' | %s/agentctl --socket %s exec - 2>/dev/null", ctl,
             D.sock);
    CHECK(sh(cmd, &out) == 5);
    free(out);
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s sandbox ls", ctl, D.sock);
    CHECK(sh(cmd, &out) == 0 && strstr(out, "cli") && strstr(out, "idle"));
    free(out);
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s sandbox rm cli", ctl, D.sock);
    CHECK(sh(cmd, &out) == 0 && strstr(out, "killed cli"));
    free(out);
}

/* Last: stopping agentd takes every sandbox with it. */
static void test_sandboxes_die_with_daemon(void)
{
    NEED();
    struct tconn c;
    CHECK(tconn_open(&c, D.sock));
    struct proto_val *r = call(&c, "sandbox.create", "{\"name\":\"last\"}");
    pid_t pid = (pid_t)proto_int(proto_get(proto_get(r, "result"), "pid"), 0);
    proto_val_free(r);
    /* Busy in an endless cell, so the interpreter is not waiting on its command pipe. */
    CHECK(tconn_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"sandbox.exec\",\"params\":"
                         "{\"session\":\"last\",\"code\":\"while True: pass\"}}\n"));
    usleep(300000);
    CHECK(pid > 0 && kill(pid, 0) == 0);
    tdaemon_kill9(&D); /* even kill -9: PR_SET_PDEATHSIG */
    tconn_close(&c);
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        gone = kill(pid, 0) != 0;
        if (!gone) usleep(10000);
    }
    CHECK(gone);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    setenv("AGENTD_SANDBOX_IDLE_S", "2", 1);
    setenv("AGENTD_SANDBOX_POOL", "1", 1);
    UP = tdaemon_start(&D);
    if (UP) {
        struct tconn c;
        if (tconn_open(&c, D.sock)) {
            struct proto_val *r = tcall(&c, 1, "sandbox.list", NULL);
            if (resp_error_code(r) == -32013)
                snprintf(SKIP_WHY, sizeof(SKIP_WHY), "%s", resp_error_msg(r));
            proto_val_free(r);
            tconn_close(&c);
        }
    }
    RUN(test_oneshot);
    RUN(test_session_over_wire);
    RUN(test_crash_restart_over_wire);
    RUN(test_streaming);
    RUN(test_daemon_keeps_serving);
    RUN(test_idle_expiry);
    RUN(test_agentctl_exec);
    RUN(test_sandboxes_die_with_daemon);
    if (UP) {
        D.pid = 0; /* killed by the last test */
        if (!tdaemon_cleanup(&D)) test__failed++;
    }
    return TEST_END();
}
