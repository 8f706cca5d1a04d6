/*
 * test_agentctl_args.c - agentctl's pure parts: option parsing, command lookup with "did you
 * mean" suggestions, and the text layout of its tables.
 *
 * The Makefile links tests with the libraries and the daemon, not with agentctl's objects, so
 * the two pure files are compiled in here directly; they depend on nothing but base/ and
 * protocol/. Everything that talks to a daemon is covered by the integration tests.
 */
#include "../agentctl/args.c"
#include "../agentctl/format.c"

#include "test.h"

static int run_dummy(struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)ctx, (void)argc, (void)argv;
    return 0;
}

static const struct ctl_cmd cmds[] = {
    {"ping", NULL, "", "", "", "", 0, 0, run_dummy},
    {"status", NULL, "", "", "", "", 0, 0, run_dummy},
    {"agent create", NULL, "FILE", "", "", "", 1, -1, run_dummy},
    {"agent list", "agent ls", "", "", "", "", 0, 0, run_dummy},
    {"agent rm", "agent delete", "NAME", "", "", "", 1, -1, run_dummy},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

/* Parses a space-separated command line (argv[0] included) into o. */
static int parse(const char *line, struct ctl_opts *o, char **words, struct ag_err *err)
{
    static char buf[512];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t && n < 31; t = strtok(NULL, " ")) words[n++] = t;
    words[n] = NULL;
    return ctl_parse_args(n, words, o, err);
}

static void test_options_anywhere(void)
{
    struct ctl_opts o;
    struct ag_err err = {0};
    char *w[32];

    CHECK(parse("agentctl agent list --json --socket /tmp/s.sock", &o, w, &err) == 0);
    CHECK(o.json);
    CHECK_STR(o.socket, "/tmp/s.sock");
    CHECK(o.timeout_ms == CTL_DEFAULT_TIMEOUT_MS);
    CHECK(o.argc == 2);
    CHECK_STR(o.argv[0], "agent");
    CHECK_STR(o.argv[1], "list");

    CHECK(parse("agentctl --timeout=0.5 --socket=/x agent create - -- --json", &o, w, &err) == 0);
    CHECK(o.timeout_ms == 500);
    CHECK_STR(o.socket, "/x");
    CHECK(!o.json); /* after "--" it is a file name */
    CHECK(o.argc == 4);
    CHECK_STR(o.argv[2], "-");
    CHECK_STR(o.argv[3], "--json");

    CHECK(parse("agentctl -h --version", &o, w, &err) == 0);
    CHECK(o.help && o.version && o.argc == 0);
}

static void test_option_errors(void)
{
    struct ctl_opts o;
    struct ag_err err = {0};
    char *w[32];

    CHECK(parse("agentctl --jsn ping", &o, w, &err) == AG_EINVAL);
    CHECK(strstr(err.msg, "unknown option '--jsn'") && strstr(err.msg, "'--json'"));
    CHECK(parse("agentctl --frobnicate=3 ping", &o, w, &err) == AG_EINVAL);
    CHECK_STR(err.msg, "unknown option '--frobnicate' (see agentctl --help)");
    CHECK(parse("agentctl ping --socket", &o, w, &err) == AG_EINVAL);
    CHECK(strstr(err.msg, "--socket needs") != NULL);
    CHECK(parse("agentctl --timeout -1 ping", &o, w, &err) == AG_EINVAL);
    CHECK(parse("agentctl --timeout 1e400 ping", &o, w, &err) == AG_EINVAL);
    CHECK(parse("agentctl --timeout nan ping", &o, w, &err) == AG_EINVAL);
}

static void test_seconds(void)
{
    int64_t ms = -1;
    CHECK(ctl_parse_seconds("30", &ms) == 0 && ms == 30000);
    CHECK(ctl_parse_seconds("0", &ms) == 0 && ms == 0);
    CHECK(ctl_parse_seconds("0.0001", &ms) == 0 && ms == 1); /* tiny, not "forever" */
    CHECK(ctl_parse_seconds("", &ms) == AG_EINVAL);
    CHECK(ctl_parse_seconds("5s", &ms) == AG_EINVAL);
    CHECK(ctl_parse_seconds("inf", &ms) == AG_EINVAL);
}

static void test_find_cmd(void)
{
    struct ag_err err = {0};
    int n = 0;
    char *a1[] = {"status"}, *a2[] = {"agent", "ls", "x"}, *a3[] = {"agent", "delete", "bob"};

    CHECK(ctl_find_cmd(cmds, N_CMDS, 1, a1, &n, &err) == &cmds[1] && n == 1);
    CHECK(ctl_find_cmd(cmds, N_CMDS, 3, a2, &n, &err) == &cmds[3] && n == 2);
    CHECK(ctl_find_cmd(cmds, N_CMDS, 3, a3, &n, &err) == &cmds[4] && n == 2);
}

static void test_find_cmd_suggestions(void)
{
    struct ag_err err = {0};
    int n;
    char *typo[] = {"stauts"}, *foo[] = {"foo"}, *bare[] = {"create", "x"};
    char *group[] = {"agent"}, *sub[] = {"agent", "lst"}, *grp_typo[] = {"agnet", "list"};

    CHECK(!ctl_find_cmd(cmds, N_CMDS, 1, typo, &n, &err));
    CHECK_STR(err.msg, "unknown command 'stauts' (did you mean 'status'? see agentctl --help)");
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 1, foo, &n, &err));
    CHECK_STR(err.msg, "unknown command 'foo' (see agentctl --help)");
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 2, bare, &n, &err));
    CHECK(strstr(err.msg, "did you mean 'agent create'?") != NULL);
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 1, group, &n, &err));
    CHECK(strstr(err.msg, "'agent' needs a subcommand") != NULL);
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 2, sub, &n, &err));
    CHECK(strstr(err.msg, "did you mean 'agent list'?") != NULL);
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 2, grp_typo, &n, &err));
    CHECK(strstr(err.msg, "did you mean 'agent'?") != NULL);
    CHECK(!ctl_find_cmd(cmds, N_CMDS, 0, NULL, &n, &err));
}

static void test_suggest(void)
{
    const char *const c[] = {"ping", "status", "agent"};
    CHECK_STR(ctl_suggest("stauts", c, 3), "status");
    CHECK_STR(ctl_suggest("pign", c, 3), "ping");
    CHECK(ctl_suggest("x", c, 3) == NULL);
    CHECK(ctl_suggest("zzzzzz", c, 3) == NULL);
}

static void test_text_width(void)
{
    CHECK(ctl_text_width("") == 0);
    CHECK(ctl_text_width("abc") == 3);
    CHECK(ctl_text_width("h\xc3\xa9") == 2);                /* é */
    CHECK(ctl_text_width("\xe7\xa0\x94\xe7\xa9\xb6") == 4); /* 研究: wide */
    CHECK(ctl_text_width("e\xcc\x81") == 1);                /* e + combining acute */
    CHECK(ctl_text_width("\xff\xfe") == 2);                 /* invalid bytes: one each */
    CHECK(ctl_text_width("\xe2\x9c\x85") == 2);             /* ✅ */
}

static void test_clip(void)
{
    struct ag_buf b;

    ag_buf_init(&b);
    CHECK(ctl_put_clipped(&b, "hello", 5) == 5);
    CHECK_STR(b.data, "hello");
    ag_buf_reset(&b);
    CHECK(ctl_put_clipped(&b, "hello world", 6) == 6);
    CHECK_STR(b.data, "hello\xe2\x80\xa6");
    ag_buf_reset(&b);
    /* A wide character that would straddle the limit is left out whole. */
    CHECK(ctl_put_clipped(&b, "ab\xe7\xa0\x94\xe7\xa9\xb6", 4) == 3);
    CHECK_STR(b.data, "ab\xe2\x80\xa6");
    ag_buf_reset(&b);
    CHECK(ctl_put_clipped(&b, "line1\nline2\t.", 100) == 13);
    CHECK_STR(b.data, "line1 line2 .");
    ag_buf_reset(&b);
    CHECK(ctl_put_clipped(&b, "abc", 0) == 0);
    ag_buf_release(&b);
}

static void test_table(void)
{
    static const char *const h[] = {"NAME", "N", "DESCRIPTION"};
    const char *r1[] = {"alpha", "1", "short"};
    const char *r2[] = {"b", "12", "a rather long description that will not fit"};
    const char *r3[] = {"c", NULL, ""};
    struct ctl_table t;
    struct ag_buf out;

    ctl_table_init(&t, h, 3);
    ctl_table_add(&t, r1);
    ctl_table_add(&t, r2);
    ctl_table_add(&t, r3);
    ag_buf_init(&out);
    ctl_table_render(&t, 30, &out);
    CHECK_STR(out.data, "NAME   N   DESCRIPTION\n"
                        "alpha  1   short\n"
                        "b      12  a rather long desc\xe2\x80\xa6\n"
                        "c      -\n");
    ag_buf_reset(&out);
    ctl_table_render(&t, 0, &out); /* no limit */
    CHECK(strstr(out.data, "will not fit\n") != NULL);
    ag_buf_release(&out);
    ctl_table_release(&t);
}

static void test_duration_and_time(void)
{
    char d[32];
    ctl_format_duration(0.42, d, sizeof(d));
    CHECK_STR(d, "0.4s");
    ctl_format_duration(42, d, sizeof(d));
    CHECK_STR(d, "42s");
    ctl_format_duration(302, d, sizeof(d));
    CHECK_STR(d, "5m 02s");
    ctl_format_duration(3725.4, d, sizeof(d));
    CHECK_STR(d, "1h 02m");
    ctl_format_duration(2 * 86400 + 4 * 3600 + 5, d, sizeof(d));
    CHECK_STR(d, "2d 04h");
    ctl_format_time(0, 0, d, sizeof(d));
    CHECK_STR(d, "-");
    ctl_format_time(1795329351181, 0, d, sizeof(d));
    CHECK(strlen(d) == 16 && d[4] == '-' && d[13] == ':');
}

static void test_wrap(void)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ctl_wrap(&b, "aaa bbb ccc dddddddddddd e", 8);
    CHECK_STR(b.data, "aaa bbb\nccc\ndddddddddddd\ne\n");
    ag_buf_release(&b);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_options_anywhere);
    RUN(test_option_errors);
    RUN(test_seconds);
    RUN(test_find_cmd);
    RUN(test_find_cmd_suggestions);
    RUN(test_suggest);
    RUN(test_text_width);
    RUN(test_clip);
    RUN(test_table);
    RUN(test_duration_and_time);
    RUN(test_wrap);
    return TEST_END();
}
