/*
 * web_tools.c - fetch_url: a web page as readable text, through the daemon's fetcher (SSRF
 * guard, robots.txt, size and time limits) with the agent's browse policy (allow/deny host
 * patterns, max_bytes, timeout_s, robots).
 */
#include "tools.h"

#include <string.h>

#define BROWSE_MAX_PATTERNS 64

static void fetched(struct tool_call *call, const struct fetch_result *res)
{
    if (res->err_code) {
        tool_call_fail(call, "%s", res->err);
        return;
    }
    struct ag_buf b;
    ag_buf_init(&b);
    if (res->title && *res->title) ag_buf_printf(&b, "Title: %s\n", res->title);
    ag_buf_printf(&b, "URL: %s (HTTP %d)\n\n%s", res->url ? res->url : "", res->status,
                  res->text ? res->text : "");
    if (res->truncated) ag_buf_printf(&b, "\n[the page was cut at %zu bytes]", res->bytes);
    ag_buf_putc(&b, '\0');
    tool_call_done(call, res->status >= 200 && res->status < 300, b.data);
    ag_buf_release(&b);
}

/* browse.<key> as a NULL-terminated list of host patterns (borrowed from the spec). */
static void patterns(const struct proto_val *browse, const char *key, const char **out)
{
    const struct proto_val *a = proto_get(browse, key);
    size_t n = 0;
    for (size_t i = 0; i < proto_len(a) && n + 1 < BROWSE_MAX_PATTERNS; i++)
        if (proto_str(proto_at(a, i))) out[n++] = proto_str(proto_at(a, i));
    out[n] = NULL;
}

static int start(struct tool_call *call, struct ag_err *err)
{
    const struct proto_val *b = proto_get(call->ctx->spec, "browse");
    const struct proto_val *entry = call->ctx->entry;
    const char *allow[BROWSE_MAX_PATTERNS], *deny[BROWSE_MAX_PATTERNS];
    patterns(b, "allow", allow);
    patterns(b, "deny", deny);
    int64_t timeout_ms = proto_get(entry, "timeout_ms")
                             ? proto_int(proto_get(entry, "timeout_ms"), 20000)
                             : proto_int(proto_get(b, "timeout_s"), 20) * 1000;
    struct fetch_opts o = {
        .max_bytes = (size_t)proto_int(proto_get(b, "max_bytes"), 2097152),
        .timeout_ms = (int)timeout_ms,
        .allow_hosts = allow[0] ? allow : NULL,
        .deny_hosts = deny[0] ? deny : NULL,
        .robots = proto_bool(proto_get(b, "robots"), true),
    };
    return call->ctx->env->fetch(call, tool_arg_str(call, "url", ""), &o, fetched, err);
}

static const struct tool_ops fetch_ops = {start, NULL};

const struct tool_def tool_fetch_url = {
    "fetch_url", "Fetch a web page over http or https and return its readable text.",
    "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\",\"description\":\"an "
    "http:// or https:// URL\"}},\"required\":[\"url\"],\"additionalProperties\":false}",
    &fetch_ops, NULL};
