/*
 * cmd_agent.c - the `agent` commands: create, update, apply, list, show, rm.
 *
 * Definition files are read here and sent as text ({text, filename}), not as a path: the daemon
 * may run as another user or in another mount namespace, and parsing on the daemon's side means
 * its messages carry the file's own line numbers ("assistant.agent.yaml:12: tools[1]...").
 * filename is the base name, so messages stay short and the same on every machine.
 *
 * Commands over several files or names stop at the first failure: what succeeded before it has
 * been printed, the failure is the last line, and the exit status is 1.
 */
#include "agentctl.h"
#include "format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Builds {text, filename} from a definition file ("-" is stdin, named "<stdin>"). */
static int definition_params(const char *path, struct proto_val **params, struct ag_err *err)
{
    char *text;
    size_t len;
    int rc = ctl_read_input(path, CTL_MAX_FILE_BYTES, &text, &len, err);

    if (rc) return rc;
    /* JSON strings cannot carry a NUL byte, so a binary file would arrive cut short and fail
     * with a confusing message about the wrong line; say what is wrong here instead. */
    if (memchr(text, '\0', len)) {
        free(text);
        return ag_err_set(err, AG_EINVAL, "%s: contains a NUL byte; is it a text file?",
                          strcmp(path, "-") == 0 ? "<stdin>" : path);
    }
    *params = proto_obj();
    proto_add_str(*params, "text", text);
    proto_add_str(*params, "filename", strcmp(path, "-") == 0 ? "<stdin>" : ag_basename(path));
    free(text);
    return 0;
}

/* Stdin can be read only once; catching a second "-" early avoids sending an empty file. */
static int check_stdin_once(const char *cmd, int argc, char **argv)
{
    int n = 0;
    for (int i = 0; i < argc; i++) n += strcmp(argv[i], "-") == 0;
    if (n > 1) return ctl_usage_fail("%s: '-' (stdin) can be given only once", cmd);
    return 0;
}

static void print_agent_done(struct ctl_ctx *ctx, const char *verb, const struct proto_val *agent)
{
    if (ctx->opts->json) {
        ctl_print_json(agent);
        return;
    }
    const char *name = proto_get_str(agent, "name");
    printf("%s agent '%s' (version %lld)\n", verb, name ? name : "?",
           (long long)proto_int(proto_get(agent, "version"), 0));
}

enum define_mode { DEFINE_CREATE, DEFINE_UPDATE, DEFINE_APPLY };

static int define_agents(struct ctl_ctx *ctx, enum define_mode mode, const char *cmd, int argc,
                         char **argv)
{
    int rc = check_stdin_once(cmd, argc, argv);

    for (int i = 0; i < argc && rc == 0; i++) {
        struct ag_err err = {0};
        struct proto_val *params = NULL, *agent = NULL;
        const char *verb = mode == DEFINE_UPDATE ? "updated" : "created";

        if (definition_params(argv[i], &params, &err) != 0) return ctl_fail("%s", err.msg);
        if (ctl_connect_or_fail(ctx)) {
            proto_val_free(params);
            return CTL_EXIT_FAIL;
        }
        rc = ctl_call(&ctx->client, mode == DEFINE_UPDATE ? "agent.update" : "agent.create", params,
                      &agent, &err);
        /* apply: an existing agent is updated. The type is what the daemon promises; the code
         * is the same fact for a daemon that sends no data.type. */
        if (rc && mode == DEFINE_APPLY &&
            (strcmp(ctx->client.err_type, "already_exists") == 0 || err.code == AG_EEXISTS)) {
            ag_err_clear(&err);
            verb = "updated";
            rc = ctl_call(&ctx->client, "agent.update", params, &agent, &err);
        }
        proto_val_free(params);
        if (rc && mode == DEFINE_CREATE && strcmp(ctx->client.err_type, "already_exists") == 0)
            return ctl_fail("%s (use 'agentctl agent apply' to update it)", err.msg);
        if (rc) return ctl_fail("%s", err.msg);
        print_agent_done(ctx, verb, agent);
        proto_val_free(agent);
    }
    return rc;
}

int cmd_agent_create(struct ctl_ctx *ctx, int argc, char **argv)
{
    return define_agents(ctx, DEFINE_CREATE, "agent create", argc, argv);
}

int cmd_agent_update(struct ctl_ctx *ctx, int argc, char **argv)
{
    return define_agents(ctx, DEFINE_UPDATE, "agent update", argc, argv);
}

int cmd_agent_apply(struct ctl_ctx *ctx, int argc, char **argv)
{
    return define_agents(ctx, DEFINE_APPLY, "agent apply", argc, argv);
}

int cmd_agent_list(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const char *const headers[] = {"NAME",  "VERSION", "MODEL",
                                          "TOOLS", "UPDATED", "DESCRIPTION"};
    struct proto_val *result;
    struct ctl_table t;
    struct ag_buf out;
    (void)argc, (void)argv;

    if (ctl_call_or_fail(ctx, "agent.list", NULL, &result)) return CTL_EXIT_FAIL;
    if (ctx->opts->json) {
        ctl_print_json(result);
        proto_val_free(result);
        return 0;
    }
    const struct proto_val *agents = proto_get(result, "agents");
    if (proto_len(agents) == 0) {
        printf("no agents (create one with: agentctl agent create "
               "examples/assistant.agent.yaml)\n");
        proto_val_free(result);
        return 0;
    }
    ctl_table_init(&t, headers, 6);
    for (const struct proto_val *a = proto_child(agents); a; a = proto_next(a)) {
        char version[24], tools[24], updated[32];
        const char *model = proto_get_str(a, "model");
        snprintf(version, sizeof(version), "%lld",
                 (long long)proto_int(proto_get(a, "version"), 0));
        snprintf(tools, sizeof(tools), "%lld", (long long)proto_int(proto_get(a, "tools"), 0));
        ctl_format_time(proto_int(proto_get(a, "updated_ms"), 0), 0, updated, sizeof(updated));
        const char *row[] = {proto_get_str(a, "name"),
                             version,
                             model && model[0] ? model : "-",
                             tools,
                             updated,
                             proto_get_str(a, "description") ? proto_get_str(a, "description")
                                                             : ""};
        ctl_table_add(&t, row);
    }
    ag_buf_init(&out);
    ctl_table_render(&t, CTL_TABLE_COLS, &out);
    fputs(out.data, stdout);
    ag_buf_release(&out);
    ctl_table_release(&t);
    proto_val_free(result);
    return 0;
}

int cmd_agent_show(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct proto_val *params = proto_obj(), *agent;
    char created[32], updated[32];
    int rc;
    (void)argc;

    proto_add_str(params, "name", argv[0]);
    rc = ctl_call_or_fail(ctx, "agent.get", params, &agent);
    proto_val_free(params);
    if (rc) return rc;
    if (ctx->opts->json) {
        ctl_print_json(agent);
        proto_val_free(agent);
        return 0;
    }
    ctl_format_time(proto_int(proto_get(agent, "created_ms"), 0), 1, created, sizeof(created));
    ctl_format_time(proto_int(proto_get(agent, "updated_ms"), 0), 1, updated, sizeof(updated));
    printf("name:     %s\n"
           "version:  %lld\n"
           "created:  %s\n"
           "updated:  %s\n"
           "spec:\n",
           proto_get_str(agent, "name") ? proto_get_str(agent, "name") : argv[0],
           (long long)proto_int(proto_get(agent, "version"), 0), created, updated);
    const struct proto_val *spec = proto_get(agent, "spec");
    if (spec)
        ctl_print_pretty(spec);
    else
        printf("(none)\n");
    proto_val_free(agent);
    return 0;
}

int cmd_agent_rm(struct ctl_ctx *ctx, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        struct proto_val *params = proto_obj(), *result;
        proto_add_str(params, "name", argv[i]);
        int rc = ctl_call_or_fail(ctx, "agent.delete", params, &result);
        proto_val_free(params);
        if (rc) return rc;
        if (ctx->opts->json) {
            ctl_print_json(result);
        } else {
            const char *name = proto_get_str(result, "deleted");
            printf("deleted agent '%s'\n", name ? name : argv[i]);
        }
        proto_val_free(result);
    }
    return 0;
}
