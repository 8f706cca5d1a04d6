/*
 * test_infer.c - runs build/agentd-infer (from $AGENTD_BIN_DIR) on SmolLM2-135M-Instruct:
 * greedy completion, --tokenize ids, the --json statistics line, and the exit codes of a
 * missing model (1) and a bad flag (2). Skips when the model file is absent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/base.h"
#include "../protocol/protocol.h"
#include "daemon_util.h"
#include "test.h"

#define MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* Runs "agentd-infer ARGS REDIR" through sh; returns the exit status (-1 when it did not exit)
 * and the captured output in *out (caller frees). */
static int run_infer(const char *args, const char *redir, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s/agentd-infer' %s %s", bin_dir(), args, redir);
    FILE *f = popen(cmd, "r");
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_puts(&b, "");
    if (!f) {
        *out = ag_buf_detach(&b, NULL);
        return -1;
    }
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) ag_buf_append(&b, chunk, n);
    int st = pclose(f);
    *out = ag_buf_detach(&b, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool have_model(void)
{
    return access(MODEL, R_OK) == 0;
}

static void test_paris(void)
{
    if (!have_model()) SKIP(MODEL " not found");
    char *out;
    int rc = run_infer("-m " MODEL " -p 'The capital of France is' -n 16 --temp 0 --threads 2",
                       "2>/dev/null", &out);
    CHECK(rc == 0);
    CHECKF(strstr(out, "Paris") != NULL, "output: %s", out);
    free(out);
}

static void test_tokenize(void)
{
    if (!have_model()) SKIP(MODEL " not found");
    char *out;
    int rc =
        run_infer("-m " MODEL " -p 'The capital of France is' --tokenize", "2>/dev/null", &out);
    CHECK(rc == 0);
    CHECK_STR(out, "[504, 3575, 282, 4649, 314]\n");
    free(out);
}

static void test_json(void)
{
    if (!have_model()) SKIP(MODEL " not found");
    char *out;
    int rc = run_infer("-m " MODEL " -p 'The capital of France is' -n 16 --seed 7 --json",
                       "2>/dev/null", &out);
    CHECK(rc == 0);
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n') len--;
    size_t start = len;
    while (start && out[start - 1] != '\n') start--;
    struct ag_err err = {0};
    struct proto_val *j = proto_parse(out + start, len - start, &err);
    CHECKF(j != NULL, "last line '%.*s': %s", (int)(len - start), out + start, err.msg);
    if (j) {
        int64_t gen = proto_int(proto_get(j, "generated_tokens"), -1);
        const char *stop = proto_get_str(j, "stop_reason");
        CHECK(proto_int(proto_get(j, "prompt_tokens"), -1) == 5);
        CHECKF(gen == 16 || (stop && !strcmp(stop, "eos")), "generated %lld stop %s",
               (long long)gen, stop ? stop : "(none)");
        CHECK(stop && (!strcmp(stop, "eos") || !strcmp(stop, "length")));
        CHECK(proto_num(proto_get(j, "decode_tokens_per_s"), -1) >= 0);
        CHECK(proto_num(proto_get(j, "prefill_ms"), -1) >= 0);
        CHECK(proto_int(proto_get(j, "peak_rss_kb"), 0) > 0);
        proto_val_free(j);
    }
    free(out);
}

static void test_missing_model(void)
{
    char *out;
    int rc = run_infer("-m /nonexistent/no-such-model.gguf -p hi", "2>&1 >/dev/null", &out);
    CHECK(rc == 1);
    CHECKF(strstr(out, "agentd-infer: ") && strstr(out, "/nonexistent/no-such-model.gguf"),
           "stderr: %s", out);
    free(out);
}

static void test_bad_flag(void)
{
    char *out;
    int rc = run_infer("-m " MODEL " -p hi --no-such-flag", "2>&1 >/dev/null", &out);
    CHECK(rc == 2);
    CHECKF(strstr(out, "--no-such-flag") != NULL, "stderr: %s", out);
    free(out);
    rc = run_infer("-p hi", "2>/dev/null", &out);
    CHECK(rc == 2); /* no model */
    free(out);
    rc = run_infer("-m " MODEL " -p hi -n lots", "2>/dev/null", &out);
    CHECK(rc == 2);
    free(out);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_paris);
    RUN(test_tokenize);
    RUN(test_json);
    RUN(test_missing_model);
    RUN(test_bad_flag);
    return TEST_END();
}
