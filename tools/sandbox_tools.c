/*
 * sandbox_tools.c - the tools that run in the agent session's sandboxed Python interpreter:
 * python (a cell as written), shell (a command through subprocess), read_file, write_file and
 * list_files (workspace files). All five share one interpreter per agent session, so python
 * variables and the files the agent writes persist across its calls and runs.
 *
 * The file and shell tools run as small Python programs in that interpreter rather than as
 * sandbox files.* calls: they see the same working directory as the agent's python code, and
 * their arguments reach the program as JSON string literals (valid Python), never spliced text.
 */
#include "tools.h"

#include <stdlib.h>
#include <string.h>

#define TOOL_TIMEOUT_MS 30000    /* a call's default time limit */
#define READ_FILE_MAX   "262144" /* bytes read_file returns */

static char *quoted(const char *s)
{
    struct ag_buf b;
    ag_buf_init(&b);
    proto_buf_quote(&b, s ? s : "");
    ag_buf_putc(&b, '\0');
    return b.data;
}

/* The observation the model reads for a cell. */
static char *cell_text(const struct tool_call *call, const struct sbx_result *res, bool *ok)
{
    struct ag_buf b;
    ag_buf_init(&b);
    *ok = res->ok;
    if (res->out_len) ag_buf_append(&b, res->out, res->out_len);
    if (res->out_truncated) ag_buf_puts(&b, "\n[output cut]");
    if (res->err_len) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_append(&b, res->err, res->err_len);
    }
    if (!res->ok) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        if (res->traceback && *res->traceback)
            ag_buf_puts(&b, res->traceback);
        else
            ag_buf_printf(&b, "%s: %s", res->error_name ? res->error_name : "",
                          res->error_message ? res->error_message : "");
    }
    if (res->ok && call->def == &tool_python && res->value && *res->value) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_puts(&b, res->value);
    }
    if (res->stop != SBX_STOP_EXIT) {
        if (b.len && b.data[b.len - 1] != '\n') ag_buf_putc(&b, '\n');
        ag_buf_printf(&b, "[stopped: %s]", sbx_stop_name(res->stop));
        *ok = false;
    }
    if (res->session_lost) {
        ag_buf_puts(&b, "\n[the interpreter died; the next call starts a fresh one]");
        *ok = false;
    }
    if (!b.len) ag_buf_puts(&b, "(no output)");
    ag_buf_putc(&b, '\0');
    return b.data;
}

static void cell_done(struct tool_call *call, const struct sbx_result *res,
                      const struct ag_err *err)
{
    if (err) {
        tool_call_fail(call, "%s", err->msg);
        return;
    }
    bool ok;
    char *text = cell_text(call, res, &ok);
    tool_call_done(call, ok, text);
    free(text);
}

/* The Python program a call runs. */
static char *program(const struct tool_call *call)
{
    const struct tool_def *t = call->def;
    if (t == &tool_python) return ag_strdup(tool_arg_str(call, "code", ""));
    char *q1 = quoted(tool_arg_str(call, t == &tool_shell ? "command" : "path", ".")), *code;
    if (t == &tool_shell) {
        code = ag_asprintf(
            "import subprocess as _sp, sys as _sys\n"
            "_r = _sp.run(%s, shell=True, capture_output=True, text=True, errors='replace')\n"
            "print(_r.stdout, end='')\n"
            "print(_r.stderr, end='', file=_sys.stderr)\n"
            "print('[exit status %%d]' %% _r.returncode)\n",
            q1);
    } else if (t == &tool_read_file) {
        code = ag_asprintf("with open(%s, errors='replace') as _f:\n"
                           "    print(_f.read(" READ_FILE_MAX "), end='')\n",
                           q1);
    } else if (t == &tool_write_file) {
        char *q2 = quoted(tool_arg_str(call, "content", ""));
        code = ag_asprintf("import os as _os\n"
                           "_p = %s\n"
                           "if _os.path.dirname(_p): _os.makedirs(_os.path.dirname(_p), "
                           "exist_ok=True)\n"
                           "with open(_p, 'w') as _f:\n"
                           "    _n = _f.write(%s)\n"
                           "print('wrote %%d characters to %%s' %% (_n, _p))\n",
                           q1, q2);
        free(q2);
    } else {
        code = ag_asprintf("import os as _os\n"
                           "_p = %s\n"
                           "for _n in sorted(_os.listdir(_p)):\n"
                           "    _q = _os.path.join(_p, _n)\n"
                           "    print(_n + '/' if _os.path.isdir(_q) else '%%s  %%d bytes' %% "
                           "(_n, _os.path.getsize(_q)))\n",
                           q1);
    }
    free(q1);
    return code;
}

static int start(struct tool_call *call, struct ag_err *err)
{
    char *code = program(call);
    int64_t timeout_ms = proto_int(proto_get(call->ctx->entry, "timeout_ms"), TOOL_TIMEOUT_MS);
    int rc = call->ctx->env->cell(call, code, timeout_ms, cell_done, err);
    free(code);
    return rc;
}

static const struct tool_ops cell_ops = {start, NULL};

#define OBJ(props, req)                                                                            \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"

const struct tool_def tool_python = {
    "python",
    "Run Python 3 code in a persistent interpreter (variables, imports and files stay between "
    "calls; no network). Returns what the code prints and the value of its last expression.",
    OBJ("\"code\":{\"type\":\"string\",\"description\":\"Python source to run\"}", "\"code\""),
    &cell_ops, NULL};

const struct tool_def tool_shell = {
    "shell",
    "Run a shell command in the sandboxed workspace (no network). Returns its output and exit "
    "status.",
    OBJ("\"command\":{\"type\":\"string\",\"description\":\"the command line\"}", "\"command\""),
    &cell_ops, NULL};

const struct tool_def tool_read_file = {
    "read_file", "Read a text file from the workspace.",
    OBJ("\"path\":{\"type\":\"string\",\"description\":\"path relative to the workspace\"}",
        "\"path\""),
    &cell_ops, NULL};

const struct tool_def tool_write_file = {
    "write_file", "Write a whole text file in the workspace (created or replaced).",
    OBJ("\"path\":{\"type\":\"string\",\"description\":\"path relative to the workspace\"},"
        "\"content\":{\"type\":\"string\",\"description\":\"the file's complete text\"}",
        "\"path\",\"content\""),
    &cell_ops, NULL};

const struct tool_def tool_list_files = {
    "list_files", "List the files in a workspace directory.",
    OBJ("\"path\":{\"type\":\"string\",\"description\":\"directory relative to the workspace "
        "(default: the workspace itself)\"}",
        ""),
    &cell_ops, NULL};
