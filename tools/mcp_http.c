/*
 * mcp_http.c - the streamable HTTP transport of the MCP client (not built yet).
 */
#include "mcp_int.h"

static void *http_start(struct mcp_client *c, struct ag_err *err)
{
    ag_err_set(err, AG_EUNSUPPORTED, "the streamable HTTP transport is not built yet (%s)",
               mcp__config(c)->url);
    return NULL;
}

static void http_send(void *tp, int64_t id, const char *json, size_t n)
{
    (void)tp, (void)id, (void)json, (void)n;
}

static void http_close(void *tp)
{
    (void)tp;
}

const struct mcp__transport mcp__http = {
    .name = "http", .start = http_start, .send = http_send, .close = http_close};
