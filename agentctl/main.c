/*
 * main.c - agentctl, the command-line client of agentd: the command table, help, and dispatch.
 *
 * One process runs one command over one connection: parse options (args.c), find the command,
 * check its argument count, connect and initialize when it talks to the daemon (client.c), run
 * it, and turn what it returns into the exit status: 0 ok, 1 failed (the daemon's message is
 * printed as "agentctl: MESSAGE"), 2 usage error. Commands live in cmd_daemon.c and
 * cmd_agent.c; the table below is the only place a command is listed, and --help, `help
 * COMMAND` and the "did you mean" suggestions are all generated from it.
 */
#include "agentctl.h"
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmd_help(struct ctl_ctx *ctx, int argc, char **argv);

static const struct ctl_cmd commands[] = {
    {"ping", NULL, "", "check that agentd answers and print the round-trip time",
     "Sends `ping` and prints how long the answer took (the time to connect and initialize is "
     "not counted). Useful in scripts to wait for the daemon: it exits 1 while agentd is down.",
     "ping", 0, 0, cmd_ping},
    {"status", NULL, "", "daemon version, pid, uptime, connections, agents and paths",
     "Prints agentd's status as aligned \"key: value\" lines: version, pid, uptime, open "
     "connections, number of agents, data dir, socket, database path and schema version.",
     "status", 0, 0, cmd_status},
    {"methods", NULL, "", "list the protocol methods (and events) this agentd serves",
     "Prints the methods and events from the daemon's `initialize` answer, each with its "
     "one-line summary. With --json, prints that whole `initialize` result.",
     "methods", 0, 0, cmd_methods},
    {"call", NULL, "METHOD [PARAMS_JSON]", "send any JSON-RPC request and print its result",
     "Sends METHOD with PARAMS_JSON (a JSON object; {} when omitted, - reads it from stdin) and "
     "prints the result as indented JSON (one line with --json). For scripts and debugging: "
     "it reaches every method, including ones agentctl has no command for.",
     "call agent.get '{\"name\":\"assistant\"}'", 1, 2, cmd_call},
    {"agent create", NULL, "FILE [FILE...]", "create agents from definition files",
     "Reads each agent definition file (YAML or JSON, at most 1 MiB; - reads stdin) and sends "
     "it to agentd, which validates it and stores the agent at version 1. Stops at the first "
     "file agentd rejects and prints its message, which names the file, line and field.",
     "agent create examples/assistant.agent.yaml", 1, -1, cmd_agent_create},
    {"agent update", NULL, "FILE [FILE...]", "replace agents' definitions (bumps the version)",
     "Sends each definition file to agentd as the new definition of the agent it names; the "
     "agent keeps its sessions and its version goes up by one. The agent must exist.",
     "agent update examples/assistant.agent.yaml", 1, -1, cmd_agent_update},
    {"agent apply", NULL, "FILE [FILE...]", "create agents, or update the ones that exist",
     "Like `agent create`, but an agent that already exists is updated instead, so the same "
     "command brings agentd in line with a directory of definition files.",
     "agent apply examples/*.agent.yaml", 1, -1, cmd_agent_apply},
    {"agent list", "agent ls", "", "list agents",
     "Prints one line per agent: name, version, model, number of tools, last update (local "
     "time) and description, clipped to fit 100 columns.",
     "agent list", 0, 0, cmd_agent_list},
    {"agent show", "agent get", "NAME", "show one agent with its full definition",
     "Prints the agent's name, version, creation and update times, then its normalized "
     "definition (defaults filled in) as indented JSON.",
     "agent show assistant", 1, 1, cmd_agent_show},
    {"agent rm", "agent delete", "NAME [NAME...]", "delete agents with their sessions and messages",
     "Deletes each named agent, with its sessions and messages. Stops at the first agent "
     "agentd cannot delete (for example one that does not exist).",
     "agent rm assistant", 1, -1, cmd_agent_rm},
    {"exec", NULL, "[--session NAME] [--timeout S] FILE|-", "run Python code in a sandbox",
     "Runs the Python file (- reads stdin) in a sandbox and prints its output as it comes: a "
     "fresh one-shot sandbox, or with --session NAME a code-interpreter session that is created "
     "on first use and keeps its variables, imports and files for the next exec (the value of "
     "a final expression is printed, like a notebook). --timeout is the code's time limit. "
     "Exits with the code's exit status (1 for an exception in a session).",
     "exec --session scratch analysis.py", 1, 1, cmd_exec},
    {"sandbox list", "sandbox ls", "", "list code-interpreter sessions",
     "Prints one line per session: name, interpreter pid, state and idle time, then how this "
     "host enforces sandbox limits (cgroup v1 or v2 per controller, Landlock ABI).",
     "sandbox ls", 0, 0, cmd_sandbox_list},
    {"sandbox rm", "sandbox kill", "NAME [NAME...]", "destroy code-interpreter sessions",
     "Kills each named session's interpreter and frees its workspace.", "sandbox rm scratch", 1, -1,
     cmd_sandbox_rm},
    {"run", NULL, "[--session ID] AGENT MESSAGE...", "send an agent a message; stream its work",
     "Starts a run of AGENT on MESSAGE (in a new session, or with --session ID in an existing "
     "one, which keeps the conversation) and prints the answer as it is written, each tool "
     "call and its result. Exits 0 when the agent answered, 1 when the run failed, was "
     "cancelled or hit a budget (the reason is printed). Ctrl-C cancels the run. With --json, "
     "prints each event as one line of JSON.",
     "run coder \"What is 2**100? Use python.\"", 2, -1, cmd_run},
    {"chat", NULL, "[--session ID] AGENT", "talk with an agent, one message per line",
     "Reads messages from stdin, one per line, and runs AGENT on each in one session, so the "
     "agent sees the whole conversation. An empty line or end of input ends the chat; the "
     "session id is printed to resume it later with --session.",
     "chat assistant", 1, 1, cmd_chat},
    {"runs", "run list", "[AGENT]", "list recent runs",
     "Prints the newest runs (of AGENT, or all): id, agent, state, why it ended, steps, tool "
     "calls, when it started and the start of its input.",
     "runs coder", 0, 1, cmd_runs},
    {"logs", NULL, "[--follow] RUN", "print a run's events",
     "Prints the stored events of RUN in order. With --follow, keeps printing until the run "
     "ends; if the connection drops it reconnects and resumes after the last event it printed, "
     "so nothing is missed or shown twice.",
     "logs --follow run_8f3a2c1d4e5f6a7b", 1, 1, cmd_logs},
    {"generate", "gen", "TEXT...", "ask the loaded model (one chat turn, streamed)",
     "Sends TEXT as a user message to the model agentd serves (agentd --model FILE) and prints "
     "the answer as it is written. For sampling settings, tools or JSON output use `call "
     "engine.generate` with OpenAI-style parameters.",
     "generate Write a haiku about rain", 1, -1, cmd_generate},
    {"model", "model status", "", "the loaded model and the engine's load",
     "Prints the model agentd serves, its state (loading, ready, failed and why), the context, "
     "the paged KV cache (pages used, cached prefixes, free), running and waiting requests and "
     "recent tokens/s.",
     "model", 0, 0, cmd_model},
    {"help", NULL, "[COMMAND]", "show this help, or one command's",
     "Without an argument, lists every command; with one, shows its usage, what it does and an "
     "example. `agentctl COMMAND --help` does the same.",
     "help agent create", 0, 2, cmd_help},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* ---- output helpers (declared in agentctl.h) ---- */

static int vfail(int status, const char *fmt, va_list ap)
{
    fflush(stdout); /* what the command printed so far comes before the error */
    fputs("agentctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return status;
}

int ctl_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(CTL_EXIT_FAIL, fmt, ap);
    va_end(ap);
    return rc;
}

int ctl_usage_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(CTL_EXIT_USAGE, fmt, ap);
    va_end(ap);
    return rc;
}

void ctl_print_json(const struct proto_val *v)
{
    char *s = proto_print(v);
    puts(s);
    free(s);
}

void ctl_print_pretty(const struct proto_val *v)
{
    char *s = proto_print_pretty(v);
    puts(s);
    free(s);
}

int ctl_connect_or_fail(struct ctl_ctx *ctx)
{
    struct ag_err err = {0};
    char sock[256];

    if (ctx->connected) return 0;
    if (ctx->opts->socket) {
        snprintf(sock, sizeof(sock), "%s", ctx->opts->socket);
    } else if (proto_default_socket(sock, sizeof(sock), NULL, &err) != 0) {
        return ctl_fail("%s (use --socket PATH)", err.msg);
    }
    if (ctl_open(&ctx->client, sock, ctx->opts->timeout_ms, &err) != 0) {
        ctl_close(&ctx->client);
        return ctl_fail("%s", err.msg);
    }
    ctx->connected = true;
    return 0;
}

int ctl_call_or_fail(struct ctl_ctx *ctx, const char *method, const struct proto_val *params,
                     struct proto_val **result)
{
    struct ag_err err = {0};

    *result = NULL;
    if (ctl_connect_or_fail(ctx)) return CTL_EXIT_FAIL;
    if (ctl_call(&ctx->client, method, params, result, &err) != 0) return ctl_fail("%s", err.msg);
    return 0;
}

int ctl_read_input(const char *path, size_t max_bytes, char **text, size_t *len, struct ag_err *err)
{
    bool is_stdin = strcmp(path, "-") == 0;
    const char *shown = is_stdin ? "<stdin>" : path;
    int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) return ag_err_set(err, AG_EIO, "%s: cannot open: %s", shown, strerror(errno));
    int rc = ag_read_fd(fd, shown, max_bytes, text, len, err);
    if (!is_stdin) close(fd);
    if (rc == AG_ETOOBIG)
        ag_err_set(err, rc, "%s: larger than %zu MiB, the most agentctl sends", shown,
                   max_bytes >> 20);
    return rc;
}

/* ---- help ---- */

static void print_usage(FILE *f)
{
    char sock[256];
    int width = 0;

    if (proto_default_socket(sock, sizeof(sock), NULL, NULL) != 0) snprintf(sock, 256, "none");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        int w = (int)(strlen(commands[i].name) + 1 + strlen(commands[i].args));
        if (w > width) width = w;
    }
    fprintf(f, "agentctl - command-line client for agentd, the multi-agent runtime\n\n"
               "usage: agentctl [OPTIONS] COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char head[128];
        snprintf(head, sizeof(head), "%s %s", commands[i].name, commands[i].args);
        fprintf(f, "  %-*s  %s\n", width, head, commands[i].summary);
    }
    fprintf(f,
            "\noptions (before or after the command):\n"
            "  --socket PATH      agentd's socket (now: %s;\n"
            "                     default from $AGENTD_SOCKET, $XDG_RUNTIME_DIR or the data dir)\n"
            "  --timeout SECONDS  how long to wait for each answer (default %d; 0 waits forever)\n"
            "  --json             print each result as one line of JSON, for scripts\n"
            "  --session NAME     exec: run in this code-interpreter session\n"
            "  -h, --help         show this help (or a command's: agentctl help COMMAND)\n"
            "  --version          print agentctl's version\n"
            "\nexamples:\n"
            "  agentctl agent create examples/assistant.agent.yaml\n"
            "  agentctl agent list\n"
            "  agentctl --json agent list\n"
            "  agentctl call agent.get '{\"name\":\"assistant\"}'\n"
            "\nexit status: 0 ok, 1 failed (the daemon's message is printed), 2 usage error\n",
            sock, CTL_DEFAULT_TIMEOUT_MS / 1000);
}

static void print_cmd_help(const struct ctl_cmd *c)
{
    printf("usage: agentctl %s%s%s\n", c->name, c->args[0] ? " " : "", c->args);
    if (c->alias) printf("   or: agentctl %s%s%s\n", c->alias, c->args[0] ? " " : "", c->args);
    struct ag_buf b;
    ag_buf_init(&b);
    ctl_wrap(&b, c->details, 80);
    printf("\n%s\nexample:\n  agentctl %s\n", b.data, c->example);
    ag_buf_release(&b);
}

/* `help agent` lists the group's commands. Returns false when name is no group. */
static bool print_group_help(const char *name)
{
    size_t n = strlen(name);
    bool any = false;

    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct ctl_cmd *c = &commands[i];
        if (strncmp(c->name, name, n) != 0 || c->name[n] != ' ') continue;
        if (!any) printf("agentctl %s commands:\n", name);
        any = true;
        char head[128];
        snprintf(head, sizeof(head), "%s %s", c->name, c->args);
        printf("  %-28s  %s\n", head, c->summary);
    }
    if (any) printf("\nsee agentctl help %s SUBCOMMAND for details\n", name);
    return any;
}

static int cmd_help(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ag_err err = {0};
    int n_words;

    (void)ctx;
    if (argc == 0) {
        print_usage(stdout);
        return 0;
    }
    if (argc == 1 && print_group_help(argv[0])) return 0;
    const struct ctl_cmd *c = ctl_find_cmd(commands, N_COMMANDS, argc, argv, &n_words, &err);
    if (!c) return ctl_usage_fail("help: %s", err.msg);
    print_cmd_help(c);
    return 0;
}

/* ---- dispatch ---- */

static int run_command(const struct ctl_opts *o)
{
    struct ag_err err = {0};
    struct ctl_ctx ctx = {.opts = o};
    int n_words, rc;

    const struct ctl_cmd *c = ctl_find_cmd(commands, N_COMMANDS, o->argc, o->argv, &n_words, &err);
    if (!c) {
        /* `agentctl agent --help`: the group's listing beats an error. */
        if (o->help && o->argc == 1 && print_group_help(o->argv[0])) return 0;
        if (o->help) {
            print_usage(stdout);
            return 0;
        }
        return ctl_usage_fail("%s", err.msg);
    }
    if (o->help) {
        print_cmd_help(c);
        return 0;
    }
    int n_args = o->argc - n_words;
    char **args = o->argv + n_words;
    if (n_args < c->min_args || (c->max_args >= 0 && n_args > c->max_args))
        return ctl_usage_fail("%s: %s arguments (usage: agentctl %s%s%s)", c->name,
                              n_args < c->min_args ? "missing" : "too many", c->name,
                              c->args[0] ? " " : "", c->args);
    rc = c->run(&ctx, n_args, args);
    if (ctx.connected) ctl_close(&ctx.client);
    return rc;
}

int main(int argc, char **argv)
{
    struct ag_err err = {0};
    struct ctl_opts o;
    int rc;

    if (ctl_parse_args(argc, argv, &o, &err) != 0) return ctl_usage_fail("%s", err.msg);
    if (o.version) {
        printf("agentctl %s\n", CTL_VERSION);
        rc = 0;
    } else if (o.argc == 0 && o.help) {
        print_usage(stdout);
        rc = 0;
    } else if (o.argc == 0) {
        print_usage(stderr);
        rc = CTL_EXIT_USAGE;
    } else {
        rc = run_command(&o);
    }
    /* Output that never reached its destination (a full disk, a closed pipe with SIGPIPE
     * ignored) must not look like success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "agentctl: cannot write the output: %s\n", strerror(errno));
        if (rc == 0) rc = CTL_EXIT_FAIL;
    }
    return rc;
}
