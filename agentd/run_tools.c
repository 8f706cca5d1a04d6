/*
 * run_tools.c - a run's tool calls (runner_int.h): each call's arguments are checked against the
 * tool's schema, then the tool runs as a call of the daemon's own method (sandbox.exec for
 * python, shell and the file tools, which all run in the agent session's interpreter; web.fetch;
 * memory.add and memory.search), and its answer becomes the observation the model reads. Any
 * failure is an observation too (ok false): the run goes on.
 */
#include "runner_int.h"

#include "../tools/tools.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_OUT_MAX  16000    /* bytes of a tool's output shown to the model */
#define READ_FILE_MAX "262144" /* bytes read_file returns */

/* The spec's entry for tool name (bare names are normalized to objects), or NULL. */
static const struct proto_val *spec_tool(const struct run *r, const char *name)
{
    const struct proto_val *tools = proto_get(r->spec, "tools");
    for (size_t i = 0; i < proto_len(tools); i++) {
        const struct proto_val *t = proto_at(tools, i);
        const char *n = proto_str(t) ? proto_str(t) : proto_get_str(t, "name");
        if (n && strcmp(n, name) == 0 && proto_bool(proto_get(t, "enabled"), true)) return t;
    }
    return NULL;
}

static char *json_quote(const char *s)
{
    struct ag_buf b;
    ag_buf_init(&b);
    proto_buf_quote(&b, s ? s : "");
    ag_buf_putc(&b, '\0');
    return b.data;
}

/* ---- tools ---- */

/* The tool's result joins the conversation and the log; then the next call, or a new step. */
static void tool_done(struct run *r, bool ok, const char *output)
{
    char *cut = NULL;
    size_t n = strlen(output);
    if (n > TOOL_OUT_MAX) {
        size_t k = TOOL_OUT_MAX;
        while (k > 0 && ((unsigned char)output[k] & 0xC0) == 0x80) k--;
        cut = ag_asprintf("%.*s\n[... %zu more bytes not shown]", (int)k, output, n - k);
        output = cut;
    }
    double ms = (double)((ag_now_ns() / 1000) - r->tool_started_us) / 1000.0;
    r->tool_ms += ms;
    struct proto_val *tm = proto_obj();
    proto_add_str(tm, "role", "tool");
    proto_add_str(tm, "tool_call_id", r->call_id);
    proto_add_str(tm, "name", r->call_name);
    proto_add_str(tm, "content", output);
    proto_push(r->messages, tm);
    run__add_msg(r, "tool", output, NULL, r->call_id, r->call_name, 0);
    struct proto_val *ev = proto_obj();
    proto_add_str(ev, "call_id", r->call_id);
    proto_add_str(ev, "name", r->call_name);
    proto_add_bool(ev, "ok", ok);
    proto_add_str(ev, "output", output);
    proto_add_num(ev, "duration_ms", ms);
    run__event(r, "tool.result", ev);
    free(cut);
    run__flush_soon(r, true);
    r->tool = NULL;
    r->st = RS_STARTING;
    r->call_i++;
    run__next_tool(r);
}

static void tool_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tool_error(struct run *r, const char *fmt, ...)
{
    struct ag_buf b;
    ag_buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    ag_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    ag_buf_putc(&b, '\0');
    char *m = b.data;
    char *out = ag_asprintf("error: %s", m);
    tool_done(r, false, out);
    free(out);
    free(m);
}

/* The python code a shell, list or file tool runs in the session's interpreter. */
static char *tool_code(const struct tool_def *t, const cJSON *args)
{
    const cJSON *a1 = cJSON_GetObjectItemCaseSensitive(args, t->kind == TOOL_SHELL    ? "command"
                                                             : t->kind == TOOL_PYTHON ? "code"
                                                                                      : "path");
    const char *s1 = cJSON_IsString(a1) ? a1->valuestring : ".";
    if (t->kind == TOOL_PYTHON) return ag_strdup(s1);
    char *q1 = json_quote(s1), *code = NULL;
    switch (t->kind) {
    case TOOL_SHELL:
        code = ag_asprintf(
            "import subprocess as _sp, sys as _sys\n"
            "_r = _sp.run(%s, shell=True, capture_output=True, text=True, errors='replace')\n"
            "print(_r.stdout, end='')\n"
            "print(_r.stderr, end='', file=_sys.stderr)\n"
            "print('[exit status %%d]' %% _r.returncode)\n",
            q1);
        break;
    case TOOL_READ_FILE:
        code = ag_asprintf("with open(%s, errors='replace') as _f:\n"
                           "    print(_f.read(" READ_FILE_MAX "), end='')\n",
                           q1);
        break;
    case TOOL_WRITE_FILE: {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(args, "content");
        char *q2 = json_quote(cJSON_IsString(c) ? c->valuestring : "");
        code = ag_asprintf("import os as _os\n"
                           "_p = %s\n"
                           "if _os.path.dirname(_p): _os.makedirs(_os.path.dirname(_p), "
                           "exist_ok=True)\n"
                           "with open(_p, 'w') as _f:\n"
                           "    _n = _f.write(%s)\n"
                           "print('wrote %%d characters to %%s' %% (_n, _p))\n",
                           q1, q2);
        free(q2);
        break;
    }
    case TOOL_LIST_FILES:
        code = ag_asprintf("import os as _os\n"
                           "_p = %s\n"
                           "for _n in sorted(_os.listdir(_p)):\n"
                           "    _q = _os.path.join(_p, _n)\n"
                           "    print(_n + '/' if _os.path.isdir(_q) else '%%s  %%d bytes' %% "
                           "(_n, _os.path.getsize(_q)))\n",
                           q1);
        break;
    default:
        break;
    }
    free(q1);
    return code;
}

void run__next_tool(struct run *r)
{
    if (run__stopped(r)) return;
    if (r->call_i >= proto_len(r->calls)) {
        run__step(r);
        return;
    }
    const struct proto_val *c = proto_at(r->calls, r->call_i), *f = proto_get(c, "function");
    r->call_id = proto_get_str(c, "id");
    r->call_name = proto_get_str(f, "name");
    if (!r->call_id) r->call_id = "";
    if (!r->call_name) r->call_name = "";
    r->tool_started_us = (ag_now_ns() / 1000);
    r->st = RS_TOOL;
    if (r->n_tool_calls >= r->max_tool_calls) {
        char msg[112];
        snprintf(msg, sizeof(msg), "the run made %d tool calls (limits.max_tool_calls)",
                 r->n_tool_calls);
        r->st = RS_STARTING;
        run__end(r, "failed", "max_tool_calls", msg);
        return;
    }
    r->n_tool_calls++;
    const struct tool_def *t = tools_find(r->call_name);
    const struct proto_val *st = t ? spec_tool(r, t->name) : NULL;
    if (!t || !st) {
        struct ag_buf names;
        ag_buf_init(&names);
        for (size_t i = 0; i < proto_len(r->tools); i++)
            ag_buf_printf(&names, "%s%s", i ? ", " : "",
                          proto_get_str(proto_get(proto_at(r->tools, i), "function"), "name"));
        ag_buf_putc(&names, '\0');
        tool_error(r, "there is no tool named '%s'; the tools are: %s", r->call_name,
                   names.data ? names.data : "(none)");
        ag_buf_release(&names);
        return;
    }
    void *argsv = NULL;
    struct ag_err err = {0};
    if (tools_check_args(t, proto_get_str(f, "arguments"), &argsv, &err) != 0) {
        tool_error(r, "%s", err.msg);
        return;
    }
    cJSON *args = argsv;
    r->tool = t;
    int64_t timeout_ms = proto_int(proto_get(st, "timeout_ms"), 30000);
    struct proto_val *p = proto_obj();
    const char *method = NULL;
    if (t->kind <= TOOL_LIST_FILES) {
        char *code = tool_code(t, args);
        proto_add_str(p, "session", r->session);
        proto_add_str(p, "code", code);
        proto_add_int(p, "timeout_ms", timeout_ms);
        const struct proto_val *sb = proto_get(r->spec, "sandbox");
        struct proto_val *lim = proto_add(p, "limits", proto_obj());
        proto_add_int(lim, "memory_mb", proto_int(proto_get(sb, "memory_mb"), 512));
        proto_add_int(lim, "pids", proto_int(proto_get(sb, "pids"), 64));
        proto_add_int(lim, "workspace_mb", proto_int(proto_get(sb, "disk_mb"), 256));
        free(code);
        method = "sandbox.exec";
    } else if (t->kind == TOOL_REMEMBER) {
        proto_add_str(p, "agent", r->agent);
        proto_add_str(p, "text", cJSON_GetObjectItemCaseSensitive(args, "text")->valuestring);
        method = "memory.add";
    } else if (t->kind == TOOL_RECALL) {
        proto_add_str(p, "agent", r->agent);
        proto_add_str(p, "query", cJSON_GetObjectItemCaseSensitive(args, "query")->valuestring);
        proto_add_int(
            p, "limit",
            proto_int(proto_get(proto_get(proto_get(r->spec, "memory"), "recall"), "top_k"), 5));
        method = "memory.search";
    } else if (t->kind == TOOL_FETCH_URL) {
        const struct proto_val *b = proto_get(r->spec, "browse");
        proto_add_str(p, "url", cJSON_GetObjectItemCaseSensitive(args, "url")->valuestring);
        proto_add_int(p, "max_bytes", proto_int(proto_get(b, "max_bytes"), 2097152));
        int64_t browse_ms = proto_int(proto_get(b, "timeout_s"), 20) * 1000;
        proto_add_int(p, "timeout_ms", proto_get(st, "timeout_ms") ? timeout_ms : browse_ms);
        proto_add_bool(p, "robots", proto_bool(proto_get(b, "robots"), true));
        if (proto_len(proto_get(b, "allow")))
            proto_add(p, "allow", proto_val_dup(proto_get(b, "allow")));
        if (proto_len(proto_get(b, "deny")))
            proto_add(p, "deny", proto_val_dup(proto_get(b, "deny")));
        proto_add_str(p, "request_id", r->step_id);
        method = "web.fetch";
    } else {
        cJSON_Delete(args);
        proto_val_free(p);
        r->tool = NULL;
        tool_error(r, "the tool '%s' is not available in this build", t->name);
        return;
    }
    cJSON_Delete(args);
    conn_call(&r->ic, method, p);
}

/* The observation the model reads for a sandbox.exec result. */
static char *exec_text(const struct tool_def *t, const struct proto_val *res, bool *ok)
{
    struct ag_buf b;
    ag_buf_init(&b);
    const char *out = proto_get_str(res, "stdout"), *err = proto_get_str(res, "stderr");
    const char *stop = proto_get_str(res, "stop");
    *ok = proto_bool(proto_get(res, "ok"), true);
    if (out && *out) ag_buf_puts(&b, out);
    if (proto_bool(proto_get(res, "stdout_truncated"), false)) ag_buf_puts(&b, "\n[output cut]");
    if (err && *err) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_puts(&b, err);
    }
    const struct proto_val *e = proto_get(res, "error");
    if (!*ok && e) {
        const char *tb = proto_get_str(e, "traceback");
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        if (tb && *tb)
            ag_buf_puts(&b, tb);
        else
            ag_buf_printf(&b, "%s: %s", proto_get_str(e, "name"), proto_get_str(e, "message"));
    }
    const char *value = proto_get_str(res, "value");
    if (*ok && t->kind == TOOL_PYTHON && value && *value) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_puts(&b, value);
    }
    if (stop && strcmp(stop, "exit") != 0) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_printf(&b, "[stopped: %s]", stop);
        *ok = false;
    }
    if (proto_bool(proto_get(res, "session_lost"), false)) {
        ag_buf_puts(&b, "\n[the interpreter died; the next call starts a fresh one]");
        *ok = false;
    }
    if (!b.len) ag_buf_puts(&b, "(no output)");
    ag_buf_putc(&b, '\0');
    return b.data;
}

void run__tool_reply(struct run *r, const struct proto_val *res, const struct ag_err *err)
{
    const struct tool_def *t = r->tool;
    if (run__stopped(r)) return;
    if (err) {
        if (t && t->kind <= TOOL_LIST_FILES && err->code == AG_ESANDBOX) {
            /* A dead interpreter: drop the session so the next call makes a fresh one. */
            struct conn tmp;
            conn_init_internal(&tmp, r->R->d, &run__ignore_sink, NULL);
            struct proto_val *p = proto_obj();
            proto_add_str(p, "session", r->session);
            conn_call(&tmp, "sandbox.kill", p);
        }
        tool_error(r, "%s", err->msg);
        return;
    }
    if (t->kind <= TOOL_LIST_FILES) {
        bool ok;
        char *text = exec_text(t, res, &ok);
        tool_done(r, ok, text);
        free(text);
    } else if (t->kind == TOOL_FETCH_URL) {
        struct ag_buf b;
        ag_buf_init(&b);
        const char *title = proto_get_str(res, "title");
        if (title && *title) ag_buf_printf(&b, "Title: %s\n", title);
        ag_buf_printf(&b, "URL: %s (HTTP %lld)\n\n%s", proto_get_str(res, "url"),
                      (long long)proto_int(proto_get(res, "status"), 0),
                      proto_get_str(res, "text") ? proto_get_str(res, "text") : "");
        if (proto_bool(proto_get(res, "truncated"), false))
            ag_buf_printf(&b, "\n[the page was cut at %lld bytes]",
                          (long long)proto_int(proto_get(res, "bytes"), 0));
        ag_buf_putc(&b, '\0');
        int64_t status = proto_int(proto_get(res, "status"), 0);
        tool_done(r, status >= 200 && status < 300, b.data);
        ag_buf_release(&b);
    } else if (t->kind == TOOL_REMEMBER) {
        tool_done(r, true, "Stored in long-term memory.");
    } else if (t->kind == TOOL_RECALL) {
        const struct proto_val *m = proto_get(res, "memories");
        struct ag_buf b;
        ag_buf_init(&b);
        for (size_t i = 0; i < proto_len(m); i++)
            ag_buf_printf(&b, "- %s\n", proto_str(proto_at(m, i)));
        if (!b.len) ag_buf_puts(&b, "No stored memory matches.");
        ag_buf_putc(&b, '\0');
        tool_done(r, true, b.data);
        ag_buf_release(&b);
    }
}
