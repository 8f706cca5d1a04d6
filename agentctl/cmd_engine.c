/*
 * cmd_engine.c - the built-in engine from the command line: `generate` (a one-turn chat with
 * the loaded model, streamed as it is written) and `model` (what is loaded and how busy it is).
 */
#include "agentctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_delta(void *ud, const char *method, const struct proto_val *params)
{
    (void)ud;
    if (strcmp(method, "engine.delta") != 0) return;
    const char *text = proto_get_str(params, "text");
    if (!text) return;
    fputs(text, stdout);
    fflush(stdout);
}

int cmd_generate(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ag_err err = {0};
    struct ag_buf text;
    ag_buf_init(&text);
    for (int i = 0; i < argc; i++) ag_buf_printf(&text, "%s%s", i ? " " : "", argv[i]);
    struct proto_val *p = proto_obj(), *msgs = proto_arr(), *m = proto_obj();
    proto_add_str(m, "role", "user");
    proto_add_str(m, "content", text.data);
    proto_push(msgs, m);
    proto_add(p, "messages", msgs);
    proto_add_bool(p, "stream", !ctx->opts->json);
    ag_buf_release(&text);
    if (ctl_connect_or_fail(ctx)) {
        proto_val_free(p);
        return CTL_EXIT_FAIL;
    }
    ctx->client.timeout_ms = 0; /* a long answer is not an error */
    ctx->client.on_notification = on_delta;
    struct proto_val *r = NULL;
    int rc = ctl_call(&ctx->client, "engine.generate", p, &r, &err);
    proto_val_free(p);
    if (rc != 0) return ctl_fail("%s", err.msg);
    if (ctx->opts->json) {
        ctl_print_json(r);
    } else {
        const struct proto_val *calls = proto_get(r, "tool_calls");
        for (size_t i = 0; i < proto_len(calls); i++) {
            const struct proto_val *f = proto_get(proto_at(calls, i), "function");
            printf("\n[tool call] %s %s", proto_get_str(f, "name"), proto_get_str(f, "arguments"));
        }
        const char *why = proto_get_str(r, "finish_reason");
        printf("\n");
        if (why && strcmp(why, "length") == 0)
            fprintf(stderr, "agentctl: the answer was cut at the token limit\n");
    }
    proto_val_free(r);
    return 0;
}

int cmd_model(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *r;
    (void)argc, (void)argv;
    if (ctl_call_or_fail(ctx, "model.status", NULL, &r)) return CTL_EXIT_FAIL;
    if (ctx->opts->json) {
        ctl_print_json(r);
        proto_val_free(r);
        return 0;
    }
    const char *state = proto_get_str(r, "state");
    printf("model    %s (%s, %s chat template)\n", proto_get_str(r, "path"),
           proto_get_str(r, "arch"), proto_get_str(r, "chat_template"));
    printf("state    %s", state ? state : "?");
    if (state && strcmp(state, "failed") == 0) printf(": %s", proto_get_str(r, "error"));
    printf("\ncontext  %lld positions per sequence, %lld threads\n",
           (long long)proto_int(proto_get(r, "n_ctx"), 0),
           (long long)proto_int(proto_get(r, "threads"), 0));
    const struct proto_val *kv = proto_get(r, "kv_cache");
    printf("kv cache %lld pages of %lld: %lld used, %lld cached prefixes, %lld free\n",
           (long long)proto_int(proto_get(kv, "pages_total"), 0),
           (long long)proto_int(proto_get(kv, "page_size"), 0),
           (long long)proto_int(proto_get(kv, "pages_used"), 0),
           (long long)proto_int(proto_get(kv, "pages_cached"), 0),
           (long long)proto_int(proto_get(kv, "pages_free"), 0));
    printf("load     %lld running, %lld waiting; %.1f tokens/s decode, %.1f prefill\n",
           (long long)proto_int(proto_get(r, "running"), 0),
           (long long)proto_int(proto_get(r, "waiting"), 0),
           proto_num(proto_get(r, "decode_tokens_per_s"), 0),
           proto_num(proto_get(r, "prefill_tokens_per_s"), 0));
    printf("totals   %lld requests, %lld tokens generated, %lld prompt tokens (%lld from the "
           "prefix cache)\n",
           (long long)proto_int(proto_get(r, "requests_done"), 0),
           (long long)proto_int(proto_get(r, "tokens_generated"), 0),
           (long long)proto_int(proto_get(r, "tokens_prompt"), 0),
           (long long)proto_int(proto_get(r, "tokens_cached"), 0));
    proto_val_free(r);
    return 0;
}
