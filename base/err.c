/*
 * err.c - the error table's messages and struct ag_err helpers.
 */
#include "base.h"

#include <stdio.h>
#include <string.h>

const char *ag_strerror(int code)
{
    switch (code) {
    case AG_OK:
        return "ok";
#define AG__ERR_MSG(name, num, msg)                                                                \
    case AG_E##name:                                                                               \
        return msg;
        AG_ERRNO_MAP(AG__ERR_MSG)
#undef AG__ERR_MSG
    }
    return "unknown error";
}

const char *ag_errname(int code)
{
    /* Generated names are upper-case ("NOTFOUND"); clients get readable snake_case ids. */
    switch (code) {
    case AG_OK:
        return "ok";
    case AG_ENOMEM:
        return "out_of_memory";
    case AG_EINVAL:
        return "invalid_argument";
    case AG_ENOTFOUND:
        return "not_found";
    case AG_EEXISTS:
        return "already_exists";
    case AG_EIO:
        return "io_error";
    case AG_EPARSE:
        return "parse_error";
    case AG_ETOOBIG:
        return "too_large";
    case AG_EBUSY:
        return "busy";
    case AG_EPROTO:
        return "protocol_error";
    case AG_EDB:
        return "database_error";
    case AG_ELOCKED:
        return "locked";
    case AG_ECLOSED:
        return "closed";
    case AG_ETIMEOUT:
        return "timeout";
    case AG_EUNSUPPORTED:
        return "unsupported";
    case AG_ESPEC:
        return "invalid_definition";
    case AG_ECTXOVERFLOW:
        return "context_overflow";
    case AG_EQUOTA:
        return "quota_exceeded";
    case AG_ETOOL:
        return "tool_failed";
    case AG_ESANDBOX:
        return "sandbox_gone";
    case AG_ECANCELLED:
        return "cancelled";
    case AG_ENOMETHOD:
        return "method_not_found";
    case AG_EPARAMS:
        return "invalid_params";
    case AG_ESHUTDOWN:
        return "shutting_down";
    case AG_EINTERNAL:
        return "internal_error";
    }
    return "unknown";
}

int ag_err_set(struct ag_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

void ag_err_prefix(struct ag_err *err, const char *fmt, ...)
{
    char prefix[256], old[sizeof(err->msg)];
    va_list ap;

    if (!err) return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t n = strnlen(prefix, sizeof(err->msg) - 1);
    memcpy(err->msg, prefix, n);
    size_t rest = strnlen(old, sizeof(err->msg) - 1 - n);
    memcpy(err->msg + n, old, rest);
    err->msg[n + rest] = '\0';
}

void ag_err_clear(struct ag_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
