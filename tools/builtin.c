/*
 * builtin.c - the table of built-in tools (tools.h) and what every tool shares: argument checks
 * against the row's schema, the failure observation, cancel.
 *
 * A new built-in tool is one file with its row plus one line in `builtin[]` below.
 */
#include "tools.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const struct tool_def *const builtin[] = {
    &tool_python,    &tool_shell,    &tool_read_file, &tool_write_file, &tool_list_files,
    &tool_fetch_url, &tool_remember, &tool_recall,    &tool_now,
};

#define N_TOOLS (sizeof(builtin) / sizeof(builtin[0]))

const struct tool_def *tools_find(const char *name)
{
    for (size_t i = 0; name && i < N_TOOLS; i++)
        if (strcmp(builtin[i]->name, name) == 0) return builtin[i];
    return NULL;
}

const struct tool_def *const *tools_all(size_t *n)
{
    *n = N_TOOLS;
    return builtin;
}

int tools_check_args(const struct tool_def *t, const char *arguments, struct proto_val **args,
                     struct ag_err *err)
{
    *args = NULL;
    if (!arguments || !*arguments) arguments = "{}";
    struct proto_val *a = proto_parse(arguments, strlen(arguments), NULL);
    if (!a)
        return ag_err_set(err, AG_EPARAMS,
                          "the arguments of %s are not valid JSON; send one JSON object such as "
                          "%s",
                          t->name,
                          strcmp(t->name, "python") == 0 ? "{\"code\": \"print(1)\"}" : "{...}");
    if (proto_type(a) != PROTO_OBJECT) {
        proto_val_free(a);
        return ag_err_set(err, AG_EPARAMS, "the arguments of %s must be a JSON object", t->name);
    }
    struct ag_err verr = {0};
    if (proto_schema_validate_text(t->parameters, arguments, &verr) != 0) {
        proto_val_free(a);
        return ag_err_set(err, AG_EPARAMS, "invalid arguments for %s: %s", t->name, verr.msg);
    }
    *args = a;
    return 0;
}

char *tool_error_text(const char *fmt, va_list ap)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_puts(&b, "error: ");
    ag_buf_vprintf(&b, fmt, ap);
    ag_buf_putc(&b, '\0');
    return b.data;
}

void tool_call_fail(struct tool_call *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = tool_error_text(fmt, ap);
    va_end(ap);
    tool_call_done(call, false, text);
    free(text);
}

void tool_call_cancel(struct tool_call *call)
{
    if (call->def->ops->cancel)
        call->def->ops->cancel(call);
    else
        call->ctx->env->cancel(call);
}

const char *tool_arg_str(const struct tool_call *call, const char *key, const char *fallback)
{
    const char *s = proto_get_str(call->args, key);
    return s ? s : fallback;
}
