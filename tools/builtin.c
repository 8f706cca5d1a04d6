/*
 * builtin.c - the built-in tools' descriptions and argument schemas (tools.h).
 */
#include "tools.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "../protocol/protocol.h"

#define OBJ(props, req)                                                                            \
    "{\"type\":\"object\",\"properties\":{" props "},\"required\":[" req                           \
    "],\"additionalProperties\":false}"

static const struct tool_def tools[] = {
    {"python", TOOL_PYTHON,
     "Run Python 3 code in a persistent interpreter (variables, imports and files stay between "
     "calls; no network). Returns what the code prints and the value of its last expression.",
     OBJ("\"code\":{\"type\":\"string\",\"description\":\"Python source to run\"}", "\"code\"")},
    {"shell", TOOL_SHELL,
     "Run a shell command in the sandboxed workspace (no network). Returns its output and exit "
     "status.",
     OBJ("\"command\":{\"type\":\"string\",\"description\":\"the command line\"}", "\"command\"")},
    {"read_file", TOOL_READ_FILE, "Read a text file from the workspace.",
     OBJ("\"path\":{\"type\":\"string\",\"description\":\"path relative to the workspace\"}",
         "\"path\"")},
    {"write_file", TOOL_WRITE_FILE,
     "Write a whole text file in the workspace (created or replaced).",
     OBJ("\"path\":{\"type\":\"string\",\"description\":\"path relative to the workspace\"},"
         "\"content\":{\"type\":\"string\",\"description\":\"the file's complete text\"}",
         "\"path\",\"content\"")},
    {"list_files", TOOL_LIST_FILES, "List the files in a workspace directory.",
     OBJ("\"path\":{\"type\":\"string\",\"description\":\"directory relative to the workspace "
         "(default: the workspace itself)\"}",
         "")},
    {"fetch_url", TOOL_FETCH_URL,
     "Fetch a web page over http or https and return its readable text.",
     OBJ("\"url\":{\"type\":\"string\",\"description\":\"an http:// or https:// URL\"}",
         "\"url\"")},
    {"remember", TOOL_REMEMBER,
     "Store a fact in long-term memory so it can be recalled in later conversations.",
     OBJ("\"text\":{\"type\":\"string\",\"description\":\"the fact, as one self-contained "
         "sentence\"}",
         "\"text\"")},
    {"recall", TOOL_RECALL, "Search long-term memory for facts stored earlier.",
     OBJ("\"query\":{\"type\":\"string\",\"description\":\"words to look for\"}", "\"query\"")},
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

const struct tool_def *tools_find(const char *name)
{
    for (size_t i = 0; name && i < N_TOOLS; i++)
        if (strcmp(tools[i].name, name) == 0) return &tools[i];
    return NULL;
}

const struct tool_def *tools_all(size_t *n)
{
    *n = N_TOOLS;
    return tools;
}

int tools_check_args(const struct tool_def *t, const char *arguments, void **args,
                     struct ag_err *err)
{
    *args = NULL;
    if (!arguments || !*arguments) arguments = "{}";
    cJSON *a = cJSON_Parse(arguments);
    if (!a)
        return ag_err_set(err, AG_EPARAMS,
                          "the arguments of %s are not valid JSON; send one JSON object such as "
                          "%s",
                          t->name, t->kind == TOOL_PYTHON ? "{\"code\": \"print(1)\"}" : "{...}");
    if (!cJSON_IsObject(a)) {
        cJSON_Delete(a);
        return ag_err_set(err, AG_EPARAMS, "the arguments of %s must be a JSON object", t->name);
    }
    /* A proto_val is a cJSON underneath (protocol/json.c): the arguments go to the validator
     * as they are, without a second parse. */
    struct proto_val *schema = proto_parse(t->parameters, strlen(t->parameters), NULL);
    struct ag_err verr = {0};
    int rc = proto_schema_validate(schema, (const struct proto_val *)a, &verr);
    proto_val_free(schema);
    if (rc != 0) {
        cJSON_Delete(a);
        return ag_err_set(err, AG_EPARAMS, "invalid arguments for %s: %s", t->name, verr.msg);
    }
    *args = a;
    return 0;
}
