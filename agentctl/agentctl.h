/*
 * agentctl.h - what agentctl's files share: parsed options, the command table's entry, the
 * context a command runs with, and the commands themselves.
 *
 * Commands are functions returning the process exit status (0 ok, 1 failed, 2 usage), like
 * git's cmd_* functions: they are the top of the tool, and main() only returns what they say.
 * Everything below them (client.c, format.c) follows the house rule of 0 / negative AG_E codes.
 *
 * args.c (option parsing and command lookup) and format.c depend on nothing but base/ and
 * protocol/, so tests/test_agentctl_args.c can compile them in directly.
 */
#ifndef CTL_AGENTCTL_H
#define CTL_AGENTCTL_H

#include <stdbool.h>
#include <stdint.h>

#include "../protocol/protocol.h"
#include "client.h"

#define CTL_DEFAULT_TIMEOUT_MS 30000
#define CTL_MAX_FILE_BYTES     (1024 * 1024) /* largest agent definition file we send */
#define CTL_TABLE_COLS         100           /* human tables are clipped to this width */

/* Exit statuses. */
enum { CTL_EXIT_OK = 0, CTL_EXIT_FAIL = 1, CTL_EXIT_USAGE = 2 };

struct ctl_opts {
    bool json;           /* --json: print each result as one line of compact JSON */
    bool follow;         /* --follow / -f (logs): keep printing until the run ends */
    bool help;           /* -h / --help seen */
    bool version;        /* --version seen */
    const char *socket;  /* --socket PATH (borrowed from argv); NULL: proto_default_socket */
    int64_t timeout_ms;  /* --timeout, per request; 0 waits forever */
    bool timeout_set;    /* --timeout was given (exec: it is the code's time limit) */
    const char *session; /* --session NAME (exec), borrowed from argv; NULL for one-shot */
    int argc;            /* words left once options are removed: the command and its args */
    char **argv;         /* those words (points into main's argv, which is reordered) */
};

/* What a command runs with. The connection is opened on first use (ctl_connect_or_fail), so a
 * command checks its arguments and reads its files before it needs a daemon. */
struct ctl_ctx {
    const struct ctl_opts *opts;
    struct ctl_client client; /* valid when connected */
    bool connected;           /* client is open and initialized */
};

struct ctl_cmd {
    const char *name;    /* one or two words: "status", "agent create" */
    const char *alias;   /* another accepted name ("agent ls"), or NULL */
    const char *args;    /* argument synopsis for usage lines; "" when none */
    const char *summary; /* one line for --help */
    const char *details; /* a paragraph for `help COMMAND` */
    const char *example; /* one example command line, without "agentctl " */
    int min_args;        /* arguments after the command words */
    int max_args;        /* -1: no limit */
    int (*run)(struct ctl_ctx *ctx, int argc, char **argv); /* argv: the arguments only */
};

/* ---- args.c ---- */
/*
 * Parses argv (argc words, argv[0] the program) into o. Options may appear before or after the
 * command; "--" ends them and "-" is an argument (stdin). Positional words are moved to the
 * front of argv + 1 in their order. Returns 0, or AG_EINVAL with a usage message in err.
 */
int ctl_parse_args(int argc, char **argv, struct ctl_opts *o, struct ag_err *err);
/* Parses a number of seconds ("30", "0.5", "0" = no limit) into milliseconds. */
int ctl_parse_seconds(const char *s, int64_t *ms);
/* The candidate closest to word when it is close enough to be a typo ("stauts" -> "status");
 * NULL otherwise. */
const char *ctl_suggest(const char *word, const char *const *candidates, size_t n);
/*
 * Finds the command named by the first one or two words of argv. Returns it with *n_words set,
 * or NULL with err set to a message ("unknown command 'stauts' (did you mean 'status'? ...)").
 */
const struct ctl_cmd *ctl_find_cmd(const struct ctl_cmd *cmds, size_t n_cmds, int argc,
                                   char *const *argv, int *n_words, struct ag_err *err);

/* ---- main.c: output helpers for commands ---- */
/* Prints "agentctl: MESSAGE" to stderr (after flushing stdout, to keep the order) and returns
 * CTL_EXIT_FAIL, so a command can write `return ctl_fail("...")`. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same with CTL_EXIT_USAGE. */
int ctl_usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints v as compact JSON on one line (--json output). */
void ctl_print_json(const struct proto_val *v);
/* Prints v as indented JSON. */
void ctl_print_pretty(const struct proto_val *v);
/* Reads the file at path, or stdin for "-", into *text (NUL-terminated, caller frees; *len
 * may be NULL). More than max_bytes is an error, as is an unreadable file. */
int ctl_read_input(const char *path, size_t max_bytes, char **text, size_t *len,
                   struct ag_err *err);
/* Connects to agentd (--socket or the default path) and initializes, unless already done.
 * Returns 0, or prints the error and returns CTL_EXIT_FAIL. */
int ctl_connect_or_fail(struct ctl_ctx *ctx);
/* Connects if needed, calls method and, on failure, prints the error; returns 0 or
 * CTL_EXIT_FAIL. */
int ctl_call_or_fail(struct ctl_ctx *ctx, const char *method, const struct proto_val *params,
                     struct proto_val **result);

/* ---- cmd_daemon.c ---- */
int cmd_ping(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_status(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_methods(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_call(struct ctl_ctx *ctx, int argc, char **argv);

/* ---- cmd_engine.c ---- */
int cmd_generate(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_model(struct ctl_ctx *ctx, int argc, char **argv);

/* ---- cmd_sandbox.c ---- */
int cmd_exec(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_sandbox_list(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_sandbox_rm(struct ctl_ctx *ctx, int argc, char **argv);

/* ---- cmd_run.c ---- */
int cmd_run(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_chat(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_runs(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_logs(struct ctl_ctx *ctx, int argc, char **argv);

/* ---- cmd_agent.c ---- */
int cmd_agent_create(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_agent_update(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_agent_apply(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_agent_list(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_agent_show(struct ctl_ctx *ctx, int argc, char **argv);
int cmd_agent_rm(struct ctl_ctx *ctx, int argc, char **argv);

#endif
