/*
 * tools.h - the registry of built-in tools an agent can be given: each tool's name, what it
 * does (shown to the model) and its arguments as a JSON Schema (shown to the model, compiled
 * into the tool-call grammar, and checked again before the tool runs, since a model may call
 * with constrained decoding off).
 *
 * The registry only describes and checks; agentd/runner.c runs a tool by calling the daemon
 * method that does the work (sandbox.exec, sandbox.files.*, memory.*, fetch).
 */
#ifndef TOOLS_TOOLS_H
#define TOOLS_TOOLS_H

#include <stddef.h>

#include "../base/base.h"

enum tool_kind {
    TOOL_PYTHON = 1, /* a cell in the session's code interpreter */
    TOOL_SHELL,      /* a shell command in the session's sandbox */
    TOOL_READ_FILE,  /* workspace files */
    TOOL_WRITE_FILE,
    TOOL_LIST_FILES,
    TOOL_FETCH_URL, /* an http(s) page as text */
    TOOL_REMEMBER,  /* archival memory */
    TOOL_RECALL,
};

struct tool_def {
    const char *name;
    enum tool_kind kind;
    const char *description; /* for the model */
    const char *parameters;  /* JSON Schema of the arguments object */
};

/* The tool called name, or NULL. */
const struct tool_def *tools_find(const char *name);
/* Every built-in tool. */
const struct tool_def *tools_all(size_t *n);
/* Parses a call's arguments (JSON text; NULL or "" is {}) and checks them against the tool's
 * schema. 0 with *args set (a cJSON object, free with cJSON_Delete), or AG_EPARAMS with a
 * message naming the argument at fault, written for the model to fix its call. */
int tools_check_args(const struct tool_def *t, const char *arguments, void **args,
                     struct ag_err *err);

#endif
