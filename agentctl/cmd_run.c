/*
 * cmd_run.c - agents at work from the command line: `run` (one message, streamed), `chat` (a
 * conversation), `runs` (what ran) and `logs` (a run's events, resumable with --follow).
 *
 * Every command reads the same run.event notifications and prints them the same way: text as it
 * is written, then one line per tool call ("-> python {...}") and per result ("<- ..."), and
 * the end with its reason. --json prints the events as they arrive instead, one per line.
 */
#include "agentctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RESULT_LINES 12 /* lines of a tool's output shown */

/* What the printer has seen of a run. */
struct view {
    const struct ctl_opts *opts;
    int64_t last_seq;   /* highest seq printed */
    bool at_line_start; /* the last text printed ended a line */
    bool ended;         /* a terminal event was printed */
    bool ok;            /* it was run.completed */
    char run_id[64];
};

static void newline(struct view *v)
{
    if (!v->at_line_start) fputc('\n', stdout);
    v->at_line_start = true;
}

/* Prints the first lines of a tool's output, indented. */
static void print_output(struct view *v, const char *out)
{
    int lines = 0;
    const char *p = out ? out : "";
    while (*p && lines < RESULT_LINES) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        printf("   %.*s\n", (int)n, p);
        lines++;
        p = e ? e + 1 : p + n;
    }
    if (*p) printf("   [... more output]\n");
    v->at_line_start = true;
}

static void print_event(struct view *v, const struct proto_val *e)
{
    int64_t seq = proto_int(proto_get(e, "seq"), 0);
    if (seq && seq <= v->last_seq) return; /* already shown (a resumed subscription) */
    if (seq) v->last_seq = seq;
    const char *t = proto_get_str(e, "type");
    if (!t) return;
    const char *rid = proto_get_str(e, "run_id");
    if (rid) snprintf(v->run_id, sizeof(v->run_id), "%s", rid);
    bool end = strcmp(t, "run.completed") == 0 || strcmp(t, "run.failed") == 0 ||
               strcmp(t, "run.cancelled") == 0;
    if (end) {
        v->ended = true;
        v->ok = strcmp(t, "run.completed") == 0;
    }
    if (v->opts->json) {
        ctl_print_json(e);
        fflush(stdout);
        return;
    }
    if (strcmp(t, "text.delta") == 0) {
        const char *s = proto_get_str(e, "text");
        if (s && *s) {
            fputs(s, stdout);
            v->at_line_start = s[strlen(s) - 1] == '\n';
        }
    } else if (strcmp(t, "tool_call.done") == 0) {
        newline(v);
        printf("-> %s %s\n", proto_get_str(e, "name"), proto_get_str(e, "arguments"));
    } else if (strcmp(t, "tool.result") == 0) {
        newline(v);
        printf("<- %s%s (%.0f ms)\n", proto_get_str(e, "name"),
               proto_bool(proto_get(e, "ok"), true) ? "" : " failed",
               proto_num(proto_get(e, "duration_ms"), 0));
        print_output(v, proto_get_str(e, "output"));
    } else if (end) {
        newline(v);
        const char *why = proto_get_str(e, "reason");
        if (!v->ok) {
            const char *err = proto_get_str(e, "error");
            fprintf(stderr, "agentctl: run %s %s (%s)%s%s\n", v->run_id,
                    strcmp(t, "run.cancelled") == 0 ? "cancelled" : "failed", why ? why : "?",
                    err ? ": " : "", err ? err : "");
        }
    }
    fflush(stdout);
}

static void on_event(void *ud, const char *method, const struct proto_val *params)
{
    if (strcmp(method, "run.event") == 0) print_event(ud, params);
}

/* Runs one message; *session gets the session (for the next message). Returns the exit code. */
static int run_one(struct ctl_ctx *ctx, const char *agent, char *session, size_t session_size,
                   const char *input)
{
    struct view v = {.opts = ctx->opts, .at_line_start = true};
    struct proto_val *p = proto_obj();
    if (session[0])
        proto_add_str(p, "session", session);
    else
        proto_add_str(p, "agent", agent);
    proto_add_str(p, "input", input);
    proto_add_bool(p, "stream", true);
    ctx->client.timeout_ms = 0; /* the run's own budgets bound it */
    ctx->client.on_notification = on_event;
    ctx->client.notification_ud = &v;
    struct proto_val *r = NULL;
    struct ag_err err = {0};
    /* Ctrl-C ends agentctl, which closes the connection: agentd cancels the run. */
    int rc = ctl_call(&ctx->client, "run.create", p, &r, &err);
    proto_val_free(p);
    if (rc != 0) return ctl_fail("%s", err.msg);
    const char *sid = proto_get_str(r, "session_id");
    if (sid) snprintf(session, session_size, "%s", sid);
    newline(&v);
    bool ok = strcmp(proto_get_str(r, "state") ? proto_get_str(r, "state") : "", "completed") == 0;
    proto_val_free(r);
    return ok ? CTL_EXIT_OK : CTL_EXIT_FAIL;
}

int cmd_run(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ag_buf text;
    ag_buf_init(&text);
    for (int i = 1; i < argc; i++) ag_buf_printf(&text, "%s%s", i > 1 ? " " : "", argv[i]);
    char session[64] = "";
    if (ctx->opts->session) snprintf(session, sizeof(session), "%s", ctx->opts->session);
    if (ctl_connect_or_fail(ctx)) {
        ag_buf_release(&text);
        return CTL_EXIT_FAIL;
    }
    int rc = run_one(ctx, argv[0], session, sizeof(session), text.data);
    ag_buf_release(&text);
    fflush(stdout);
    if (!ctx->opts->json && session[0] && !ctx->opts->session)
        fprintf(stderr, "(session %s: continue with agentctl run --session %s %s ...)\n", session,
                session, argv[0]);
    return rc;
}

int cmd_chat(struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    char session[64] = "", line[16384];
    if (ctx->opts->session) snprintf(session, sizeof(session), "%s", ctx->opts->session);
    if (ctl_connect_or_fail(ctx)) return CTL_EXIT_FAIL;
    bool tty = isatty(0);
    int rc = 0;
    for (;;) {
        if (tty) {
            printf("you> ");
            fflush(stdout);
        }
        if (!fgets(line, sizeof(line), stdin)) break;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) break;
        if (tty) printf("%s> ", argv[0]);
        rc = run_one(ctx, argv[0], session, sizeof(session), line);
        if (rc != 0 && !ctx->client.server) break;
    }
    if (session[0]) fprintf(stderr, "(session %s)\n", session);
    return rc;
}

static void age(char *buf, size_t n, int64_t ms)
{
    int64_t s = ((int64_t)time(NULL) * 1000 - ms) / 1000;
    if (s < 120)
        snprintf(buf, n, "%llds ago", (long long)s);
    else if (s < 7200)
        snprintf(buf, n, "%lldm ago", (long long)s / 60);
    else
        snprintf(buf, n, "%lldh ago", (long long)s / 3600);
}

int cmd_runs(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *p = proto_obj(), *r;
    if (argc > 0) proto_add_str(p, "agent", argv[0]);
    int rc = ctl_call_or_fail(ctx, "run.list", p, &r);
    proto_val_free(p);
    if (rc) return CTL_EXIT_FAIL;
    if (ctx->opts->json) {
        ctl_print_json(r);
        proto_val_free(r);
        return 0;
    }
    const struct proto_val *runs = proto_get(r, "runs");
    printf("%-20s  %-12s  %-11s  %-14s  %5s  %5s  %-9s  %s\n", "RUN", "AGENT", "STATE", "REASON",
           "STEPS", "TOOLS", "STARTED", "INPUT");
    for (size_t i = 0; i < proto_len(runs); i++) {
        const struct proto_val *x = proto_at(runs, i);
        char when[32];
        age(when, sizeof(when), proto_int(proto_get(x, "created_ms"), 0));
        const char *in = proto_get_str(x, "input"), *why = proto_get_str(x, "reason");
        char clip[40];
        snprintf(clip, sizeof(clip), "%s", in ? in : "");
        for (char *c = clip; *c; c++)
            if (*c == '\n') *c = ' ';
        printf("%-20s  %-12s  %-11s  %-14s  %5lld  %5lld  %-9s  %s\n", proto_get_str(x, "run_id"),
               proto_get_str(x, "agent"), proto_get_str(x, "state"), why ? why : "-",
               (long long)proto_int(proto_get(x, "steps"), 0),
               (long long)proto_int(proto_get(x, "tool_calls"), 0), when, clip);
    }
    if (proto_len(runs) == 0) printf("(no runs yet: agentctl run AGENT MESSAGE)\n");
    proto_val_free(r);
    return 0;
}

int cmd_logs(struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    struct view v = {.opts = ctx->opts, .at_line_start = true};
    snprintf(v.run_id, sizeof(v.run_id), "%s", argv[0]);
    for (int attempt = 0;; attempt++) {
        if (!ctx->connected && ctl_connect_or_fail(ctx)) {
            if (!ctx->opts->follow || attempt > 50) return CTL_EXIT_FAIL;
            sleep(1);
            continue;
        }
        ctx->client.timeout_ms = 0;
        ctx->client.on_notification = on_event;
        ctx->client.notification_ud = &v;
        struct proto_val *p = proto_obj(), *r = NULL;
        proto_add_str(p, "run_id", argv[0]);
        proto_add_int(p, "after_seq", v.last_seq);
        struct ag_err err = {0};
        int rc = ctl_call(&ctx->client, "run.subscribe", p, &r, &err);
        proto_val_free(p);
        if (rc != 0 && err.code != AG_ECLOSED && err.code != AG_EIO) return ctl_fail("%s", err.msg);
        bool live = r && proto_bool(proto_get(r, "live"), false);
        proto_val_free(r);
        if (rc == 0 && (!live || !ctx->opts->follow)) break;
        if (rc == 0) {
            /* Follow: events arrive while we wait; a ping every 200 ms notices a daemon that
             * went away. */
            while (!v.ended) {
                struct proto_val *res = NULL;
                rc = ctl_call(&ctx->client, "ping", NULL, &res, &err);
                proto_val_free(res);
                if (rc != 0) break;
                usleep(200000);
            }
            if (v.ended) break;
        }
        /* The daemon went away: reconnect and resume after the last event shown. */
        ctl_close(&ctx->client);
        ctx->connected = false;
        newline(&v);
        fprintf(stderr, "agentctl: connection lost; resuming after event %lld\n",
                (long long)v.last_seq);
        sleep(1);
    }
    newline(&v);
    if (!v.ended && !ctx->opts->json) fprintf(stderr, "(run %s is still running)\n", argv[0]);
    return v.ended && !v.ok ? CTL_EXIT_FAIL : CTL_EXIT_OK;
}
