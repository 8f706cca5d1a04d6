/*
 * cmd_daemon.c - commands about the daemon itself: ping, status, methods, and the raw `call`.
 *
 * Human output is for people reading a terminal; --json prints the method's result untouched
 * (compact, one line) so scripts never parse the human format.
 */
#include "agentctl.h"
#include "format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_ping(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *result;
    (void)argc, (void)argv;

    /* Connecting and the handshake are not part of the round trip being measured. */
    if (ctl_connect_or_fail(ctx)) return CTL_EXIT_FAIL;
    int64_t t0 = ag_now_ns();
    if (ctl_call_or_fail(ctx, "ping", NULL, &result)) return CTL_EXIT_FAIL;
    double ms = (double)(ag_now_ns() - t0) / 1e6;
    if (ctx->opts->json)
        ctl_print_json(result);
    else
        printf("pong from %s in %.2f ms\n", ctx->client.path, ms);
    proto_val_free(result);
    return 0;
}

/* One status value as text: strings bare, integers without ".0", other numbers with one
 * decimal (with the human form for uptime), anything else as compact JSON. */
static void put_value(struct ag_buf *b, const char *key, const struct proto_val *v)
{
    if (proto_str(v)) {
        ag_buf_puts(b, proto_str(v));
    } else if (proto_is_int(v)) {
        ag_buf_printf(b, "%lld", (long long)proto_int(v, 0));
    } else if (proto_type(v) == PROTO_NUMBER) {
        ag_buf_printf(b, "%.1f", proto_num(v, 0));
    } else {
        proto_print_buf(v, b);
        return;
    }
    if (strcmp(key, "uptime_s") == 0 && proto_type(v) == PROTO_NUMBER) {
        char d[32];
        ctl_format_duration(proto_num(v, 0), d, sizeof(d));
        ag_buf_printf(b, " (%s)", d);
    }
}

int cmd_status(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *result;
    struct ag_buf out;
    int width = 0;
    (void)argc, (void)argv;

    if (ctl_call_or_fail(ctx, "status", NULL, &result)) return CTL_EXIT_FAIL;
    if (ctx->opts->json) {
        ctl_print_json(result);
        proto_val_free(result);
        return 0;
    }
    /* Keys in the daemon's order, so new fields show up without a client change. */
    for (const struct proto_val *m = proto_child(result); m; m = proto_next(m)) {
        int w = ctl_text_width(proto_key(m));
        if (w > width) width = w;
    }
    ag_buf_init(&out);
    for (const struct proto_val *m = proto_child(result); m; m = proto_next(m)) {
        ag_buf_printf(&out, "%s:%*s ", proto_key(m), width - ctl_text_width(proto_key(m)), "");
        put_value(&out, proto_key(m), m);
        ag_buf_putc(&out, '\n');
    }
    if (out.data) fputs(out.data, stdout);
    ag_buf_release(&out);
    proto_val_free(result);
    return 0;
}

/* Prints the names in arr (strings) with their summaries, aligned: methods' from the daemon's
 * catalogue (initialize's capabilities.catalog), events' from this client's. */
static void print_names(const struct proto_val *arr, const struct proto_val *catalog, bool methods)
{
    int width = 0;

    for (const struct proto_val *v = proto_child(arr); v; v = proto_next(v))
        if (proto_str(v) && (int)strlen(proto_str(v)) > width) width = (int)strlen(proto_str(v));
    for (const struct proto_val *v = proto_child(arr); v; v = proto_next(v)) {
        const char *name = proto_str(v);
        const char *summary = NULL;
        if (!name) continue;
        if (methods) {
            for (const struct proto_val *m = proto_child(catalog); m && !summary; m = proto_next(m))
                if (proto_get_str(m, "name") && strcmp(proto_get_str(m, "name"), name) == 0)
                    summary = proto_get_str(m, "summary");
        } else {
            size_t n;
            const struct proto_event_info *ei = proto_events(&n);
            for (size_t i = 0; i < n && !summary; i++)
                if (strcmp(ei[i].name, name) == 0) summary = ei[i].summary;
        }
        if (summary)
            printf("  %-*s  %s\n", width, name, summary);
        else
            printf("  %s\n", name); /* newer than this agentctl: no summary to show */
    }
}

int cmd_methods(struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)argc, (void)argv;

    /* The handshake already carried the catalogue: no second request. */
    if (ctl_connect_or_fail(ctx)) return CTL_EXIT_FAIL;
    const struct proto_val *init = ctx->client.server;
    const struct proto_val *server = proto_get(init, "server");
    const struct proto_val *caps = proto_get(init, "capabilities");
    const char *name = proto_get_str(server, "name");
    const char *version = proto_get_str(server, "version");
    const char *protocol = proto_get_str(init, "protocol_version");
    if (ctx->opts->json) {
        ctl_print_json(init);
        return 0;
    }
    printf("methods served by %s %s (protocol %s):\n", name ? name : "agentd",
           version ? version : "?", protocol ? protocol : "?");
    print_names(proto_get(caps, "methods"), proto_get(caps, "catalog"), true);
    if (proto_len(proto_get(caps, "events"))) {
        printf("\nevents (run.event notifications):\n");
        print_names(proto_get(caps, "events"), NULL, false);
    }
    return 0;
}

int cmd_call(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *params = NULL, *result;
    struct ag_err err = {0};
    char *text = NULL;
    int rc;

    if (argc == 2) {
        const char *src = argv[1];
        if (strcmp(src, "-") == 0) {
            if (ctl_read_input("-", CTL_MAX_FRAME_BYTES, &text, NULL, &err) != 0)
                return ctl_fail("%s", err.msg);
            src = text;
        }
        params = proto_parse(src, strlen(src), &err);
        free(text);
        if (!params) return ctl_usage_fail("call: PARAMS_JSON is not valid JSON: %s", err.msg);
        if (proto_type(params) != PROTO_OBJECT) {
            proto_val_free(params);
            return ctl_usage_fail(
                "call: PARAMS_JSON must be a JSON object, like '{\"name\":\"x\"}'");
        }
    }
    rc = ctl_call_or_fail(ctx, argv[0], params, &result);
    proto_val_free(params);
    if (rc) return rc;
    if (ctx->opts->json)
        ctl_print_json(result);
    else
        ctl_print_pretty(result);
    proto_val_free(result);
    return 0;
}
