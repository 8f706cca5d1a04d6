/*
 * cmd_sandbox.c - running code in sandboxes: `exec`, `sandbox ls`, `sandbox rm`.
 *
 * exec asks for streamed output (sandbox.exec with stream: true) and prints each
 * sandbox.output notification as it arrives, stdout to stdout and stderr to stderr, so a long
 * computation shows progress; the final result only adds what was not streamed: the value of a
 * session's last expression, an exception's traceback, or why the run stopped early.
 */
#include "agentctl.h"
#include "format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTL_MAX_CODE_BYTES (120 * 1024)

static void on_output(void *ud, const char *method, const struct proto_val *params)
{
    (void)ud;
    if (strcmp(method, "sandbox.output") != 0) return;
    const char *data = proto_get_str(params, "data");
    const char *stream = proto_get_str(params, "stream");
    if (!data) return;
    FILE *f = stream && strcmp(stream, "stderr") == 0 ? stderr : stdout;
    fputs(data, f);
    fflush(f);
}

int cmd_exec(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ag_err err = {0};
    char *code = NULL;
    (void)argc;

    if (ctl_read_input(argv[0], CTL_MAX_CODE_BYTES, &code, NULL, &err) != 0)
        return ctl_fail("%s", err.msg);
    struct proto_val *p = proto_obj();
    proto_add_str(p, "code", code);
    free(code);
    if (ctx->opts->session) proto_add_str(p, "session", ctx->opts->session);
    if (ctx->opts->timeout_set) proto_add_int(p, "timeout_ms", ctx->opts->timeout_ms);
    proto_add_bool(p, "stream", !ctx->opts->json);
    if (ctl_connect_or_fail(ctx)) {
        proto_val_free(p);
        return CTL_EXIT_FAIL;
    }
    /* The code's own limit governs; the client waits for it plus the kill grace. */
    ctx->client.timeout_ms =
        ctx->opts->timeout_set && ctx->opts->timeout_ms > 0 ? ctx->opts->timeout_ms + 15000 : 0;
    struct proto_val *r = NULL;
    ctx->client.on_notification = on_output;
    int rc = ctl_call(&ctx->client, "sandbox.exec", p, &r, &err);
    proto_val_free(p);
    if (rc != 0) return ctl_fail("%s", err.msg);
    if (ctx->opts->json) {
        ctl_print_json(r);
        proto_val_free(r);
        return 0;
    }
    fflush(stdout);
    const char *value = proto_get_str(r, "value");
    if (value) printf("%s\n", value);
    const struct proto_val *e = proto_get(r, "error");
    if (e) fputs(proto_get_str(e, "traceback") ? proto_get_str(e, "traceback") : "", stderr);
    const char *stop = proto_get_str(r, "stop");
    int status = (int)proto_int(proto_get(r, "exit_code"), 1);
    if (stop && strcmp(stop, "exit") != 0) {
        fprintf(stderr, "agentctl: the code stopped: %s\n", stop);
        status = status > 0 ? status : 1;
    }
    if (proto_bool(proto_get(r, "session_lost"), false))
        fprintf(stderr,
                "agentctl: the session's interpreter is gone; `agentctl call "
                "sandbox.restart '{\"session\":\"%s\"}'` starts a fresh one\n",
                ctx->opts->session);
    proto_val_free(r);
    fflush(stdout);
    return status;
}

int cmd_sandbox_list(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *r;
    (void)argc, (void)argv;
    if (ctl_call_or_fail(ctx, "sandbox.list", NULL, &r)) return CTL_EXIT_FAIL;
    if (ctx->opts->json) {
        ctl_print_json(r);
        proto_val_free(r);
        return 0;
    }
    const struct proto_val *list = proto_get(r, "sandboxes");
    printf("%-24s %8s  %-8s %10s\n", "NAME", "PID", "STATE", "IDLE");
    for (size_t i = 0; i < proto_len(list); i++) {
        const struct proto_val *s = proto_at(list, i);
        char idle[32];
        ctl_format_duration(proto_num(proto_get(s, "idle_s"), 0), idle, sizeof(idle));
        const char *state = proto_bool(proto_get(s, "busy"), false)    ? "running"
                            : proto_bool(proto_get(s, "alive"), false) ? "idle"
                                                                       : "dead";
        printf("%-24s %8lld  %-8s %10s\n", proto_get_str(s, "name"),
               (long long)proto_int(proto_get(s, "pid"), 0), state, idle);
    }
    const struct proto_val *h = proto_get(r, "host");
    printf("limits: memory %s, pids %s, cpu %s (cgroup); Landlock ABI %lld; %lld warm\n",
           proto_get_str(h, "memory"), proto_get_str(h, "pids"), proto_get_str(h, "cpu"),
           (long long)proto_int(proto_get(h, "landlock_abi"), 0),
           (long long)proto_int(proto_get(h, "pool_ready"), 0));
    proto_val_free(r);
    return 0;
}

int cmd_sandbox_rm(struct ctl_ctx *ctx, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        struct proto_val *p = proto_obj(), *r;
        proto_add_str(p, "session", argv[i]);
        int rc = ctl_call_or_fail(ctx, "sandbox.kill", p, &r);
        proto_val_free(p);
        if (rc) return CTL_EXIT_FAIL;
        if (ctx->opts->json)
            ctl_print_json(r);
        else
            printf("killed %s\n", argv[i]);
        proto_val_free(r);
    }
    return 0;
}
