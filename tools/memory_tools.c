/*
 * memory_tools.c - remember and recall: the agent's archival memory in the store (FTS5 search
 * today; memory.recall.top_k in the definition sets how many facts recall returns).
 */
#include "tools.h"

static void added(struct tool_call *call, char *const *texts, size_t n, const struct ag_err *err)
{
    (void)texts, (void)n;
    if (err)
        tool_call_fail(call, "%s", err->msg);
    else
        tool_call_done(call, true, "Stored in long-term memory.");
}

static void found(struct tool_call *call, char *const *texts, size_t n, const struct ag_err *err)
{
    if (err) {
        tool_call_fail(call, "%s", err->msg);
        return;
    }
    struct ag_buf b;
    ag_buf_init(&b);
    for (size_t i = 0; i < n; i++) ag_buf_printf(&b, "- %s\n", texts[i]);
    if (!b.len) ag_buf_puts(&b, "No stored memory matches.");
    ag_buf_putc(&b, '\0');
    tool_call_done(call, true, b.data);
    ag_buf_release(&b);
}

static int remember(struct tool_call *call, struct ag_err *err)
{
    return call->ctx->env->memory_add(call, tool_arg_str(call, "text", ""), added, err);
}

static int recall(struct tool_call *call, struct ag_err *err)
{
    const struct proto_val *r = proto_get(proto_get(call->ctx->spec, "memory"), "recall");
    int limit = (int)proto_int(proto_get(r, "top_k"), 5);
    return call->ctx->env->memory_search(call, tool_arg_str(call, "query", ""), limit, found, err);
}

static const struct tool_ops remember_ops = {remember, NULL}, recall_ops = {recall, NULL};

const struct tool_def tool_remember = {
    "remember", "Store a fact in long-term memory so it can be recalled in later conversations.",
    "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\",\"description\":\"the "
    "fact, as one self-contained sentence\"}},\"required\":[\"text\"],\"additionalProperties\":"
    "false}",
    &remember_ops, NULL};

const struct tool_def tool_recall = {
    "recall", "Search long-term memory for facts stored earlier.",
    "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\",\"description\":\"words "
    "to look for\"}},\"required\":[\"query\"],\"additionalProperties\":false}",
    &recall_ops, NULL};
