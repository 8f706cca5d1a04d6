/*
 * test_agentctl.c - agentctl end to end against the real daemon: output a person reads, --json
 * output a script parses, exit statuses, and one-line errors.
 */
#include "daemon_util.h"
#include "test.h"

static struct tdaemon D;

/* Runs agentctl with args (a shell fragment); captures stdout+stderr; returns the exit status. */
static int ctl(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ctl(char *out, size_t n, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s %s 2>&1", bin_dir(), D.sock, args);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void test_ping_status(void)
{
    char out[8192];
    CHECK(ctl(out, sizeof(out), "ping") == 0);
    CHECK(strstr(out, "pong") != NULL);
    CHECK(ctl(out, sizeof(out), "status") == 0);
    CHECK(strstr(out, D.data) != NULL);
    CHECK(ctl(out, sizeof(out), "--json status") == 0);
    struct proto_val *v = proto_parse(out, strlen(out), NULL);
    CHECK_STR(proto_get_str(v, "data_dir"), D.data);
    proto_val_free(v);
}

static void test_agent_lifecycle(void)
{
    char out[65536];
    CHECK(ctl(out, sizeof(out),
              "agent create examples/assistant.agent.yaml "
              "examples/coder.agent.yaml") == 0);
    CHECK(strstr(out, "created agent 'assistant' (version 1)") != NULL);
    CHECK(strstr(out, "created agent 'coder' (version 1)") != NULL);
    CHECK(ctl(out, sizeof(out), "agent list") == 0);
    CHECK(strstr(out, "NAME") && strstr(out, "assistant") && strstr(out, "coder"));
    CHECK(ctl(out, sizeof(out), "--json agent list") == 0);
    struct proto_val *v = proto_parse(out, strlen(out), NULL);
    CHECK(proto_len(proto_get(v, "agents")) == 2);
    proto_val_free(v);
    CHECK(ctl(out, sizeof(out), "agent show coder") == 0);
    CHECK(strstr(out, "\"instructions\"") != NULL);
    CHECK(ctl(out, sizeof(out), "agent apply examples/coder.agent.yaml") == 0);
    CHECK(strstr(out, "version 2") != NULL);
    CHECK(ctl(out, sizeof(out), "agent create examples/coder.agent.yaml") == 1);
    CHECK(strstr(out, "already exists") != NULL && count_lines(out) == 1);
    CHECK(ctl(out, sizeof(out), "agent rm coder") == 0);
    CHECK(strstr(out, "deleted agent 'coder'") != NULL);
    CHECK(ctl(out, sizeof(out), "agent rm coder") == 1);
    CHECK(strstr(out, "not found") != NULL && count_lines(out) == 1);
}

static void test_invalid_file_error(void)
{
    char out[8192], path[400];
    snprintf(path, sizeof(path), "%s/broken.agent.yaml", D.dir);
    FILE *f = fopen(path, "w");
    fputs("name: broken\ntools:\n  - python\n  - name: shell\n    timeout_ms: soon\n", f);
    fclose(f);
    CHECK(ctl(out, sizeof(out), "agent create %s", path) == 1);
    static const char want[] = "agentctl: broken.agent.yaml:5: tools[1].timeout_ms:";
    CHECKF(strncmp(out, want, strlen(want)) == 0, "'%s'", out);
    CHECK(count_lines(out) == 1);
    CHECK(ctl(out, sizeof(out), "agent show broken") == 1); /* nothing was created */
}

static void test_usage_errors(void)
{
    char out[8192], cmd[600];
    CHECK(ctl(out, sizeof(out), "stauts") == 2);
    CHECK(strstr(out, "did you mean 'status'") != NULL);
    CHECK(ctl(out, sizeof(out), "--help") == 0);
    CHECK(strstr(out, "agent create") != NULL);
    /* No daemon behind the socket: exit 1 with a hint. */
    snprintf(cmd, sizeof(cmd), "%s/agentctl --socket %s/none.sock ping 2>&1", bin_dir(), D.dir);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CHECK(strstr(out, "cannot connect") != NULL && strstr(out, "is agentd running") != NULL);
}

/* The shared daemon exits 0 on SIGTERM with no sanitizer report in its log. */
static void test_clean_exit(void)
{
    CHECK(tdaemon_cleanup(&D));
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    if (!tdaemon_start(&D)) {
        printf("cannot start %s/agentd\n", bin_dir());
        return 1;
    }
    RUN(test_ping_status);
    RUN(test_agent_lifecycle);
    RUN(test_invalid_file_error);
    RUN(test_usage_errors);
    RUN(test_clean_exit);
    return TEST_END();
}
