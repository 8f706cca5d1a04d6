/*
 * args.c - agentctl's command line: global options and command lookup, with "did you mean"
 * suggestions for typos.
 *
 * Options are accepted anywhere before "--" (so `agentctl agent list --json` works as well as
 * `agentctl --json agent list`); no command takes options of its own, so there is nothing for
 * a global option to collide with. Everything here is pure: it reads argv and a command table
 * and returns results or a message, which keeps it testable without a daemon.
 */
#include "agentctl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Value-taking options accept "--opt VALUE" and "--opt=VALUE". Returns the value or NULL. */
static const char *option_value(const char *arg, const char *name, int *i, int argc, char **argv,
                                bool *matched)
{
    size_t n = strlen(name);
    *matched = false;
    if (strncmp(arg, name, n) != 0) return NULL;
    if (arg[n] == '=') {
        *matched = true;
        return arg + n + 1;
    }
    if (arg[n] != '\0') return NULL;
    *matched = true;
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

int ctl_parse_seconds(const char *s, int64_t *ms)
{
    char *end;
    double v;

    if (!s || !*s) return AG_EINVAL;
    v = strtod(s, &end);
    /* A year is plenty, and keeps the product an exact int64. */
    if (*end || !isfinite(v) || v < 0 || v > 366.0 * 86400) return AG_EINVAL;
    *ms = (int64_t)llround(v * 1000.0);
    if (v > 0 && *ms == 0) *ms = 1; /* "0.0001" means a tiny wait, not "forever" */
    return 0;
}

int ctl_parse_args(int argc, char **argv, struct ctl_opts *o, struct ag_err *err)
{
    static const char *const known[] = {"--json",    "--socket",  "--timeout", "--help",
                                        "--version", "--session", "--follow"};
    bool options_done = false;

    memset(o, 0, sizeof(*o));
    o->timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
    o->argv = argv + 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        bool matched;

        if (options_done || a[0] != '-' || a[1] == '\0') {
            o->argv[o->argc++] = argv[i]; /* never overtakes i: only words are kept */
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
            o->follow = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = true;
        } else if (strcmp(a, "--version") == 0) {
            o->version = true;
        } else if ((v = option_value(a, "--socket", &i, argc, argv, &matched)), matched) {
            if (!v || !*v) return ag_err_set(err, AG_EINVAL, "--socket needs a socket path");
            o->socket = v;
        } else if ((v = option_value(a, "--timeout", &i, argc, argv, &matched)), matched) {
            if (!v) return ag_err_set(err, AG_EINVAL, "--timeout needs a number of seconds");
            if (ctl_parse_seconds(v, &o->timeout_ms) != 0)
                return ag_err_set(err, AG_EINVAL,
                                  "--timeout: expected a number of seconds (0 waits forever), "
                                  "got '%s'",
                                  v);
            o->timeout_set = true;
        } else if ((v = option_value(a, "--session", &i, argc, argv, &matched)), matched) {
            if (!v || !*v) return ag_err_set(err, AG_EINVAL, "--session needs a session name");
            o->session = v;
        } else {
            char name[64];
            size_t n = strcspn(a, "=");
            snprintf(name, sizeof(name), "%.*s", (int)(n < 63 ? n : 63), a);
            const char *near = ctl_suggest(name, known, sizeof(known) / sizeof(known[0]));
            if (near)
                return ag_err_set(err, AG_EINVAL,
                                  "unknown option '%s' (did you mean '%s'? see agentctl --help)",
                                  name, near);
            return ag_err_set(err, AG_EINVAL, "unknown option '%s' (see agentctl --help)", name);
        }
    }
    return 0;
}

const char *ctl_suggest(const char *word, const char *const *candidates, size_t n)
{
    /* Two edits catch a swapped pair ("stauts"); for very short words one edit is already a
     * different word, so the bar is lower there. */
    int max = strlen(word) <= 3 ? 1 : 2;
    const char *best = NULL;
    int best_d = max + 1;

    for (size_t i = 0; i < n; i++) {
        if (!candidates[i]) continue;
        int d = ag_levenshtein(word, candidates[i]);
        if (d < best_d) best_d = d, best = candidates[i];
    }
    return best;
}

/* Splits "agent create" into its group ("agent", into buf) and the word after it. Returns the
 * second word, or NULL for a one-word name. */
static const char *split_name(const char *name, char *group, size_t n)
{
    const char *sp = strchr(name, ' ');
    if (!sp) {
        snprintf(group, n, "%s", name);
        return NULL;
    }
    snprintf(group, n, "%.*s", (int)(sp - name), name);
    return sp + 1;
}

static bool names_cmd(const struct ctl_cmd *c, const char *name)
{
    return strcmp(c->name, name) == 0 || (c->alias && strcmp(c->alias, name) == 0);
}

const struct ctl_cmd *ctl_find_cmd(const struct ctl_cmd *cmds, size_t n_cmds, int argc,
                                   char *const *argv, int *n_words, struct ag_err *err)
{
    const char **cands = ag_calloc(2 * n_cmds + 1, sizeof(*cands)); /* two names a command */
    const struct ctl_cmd *found = NULL;
    size_t n_cands = 0;
    bool is_group = false;
    char group[64];

    *n_words = 0;
    if (argc < 1) {
        free(cands);
        ag_err_set(err, AG_EINVAL, "missing command (see agentctl --help)");
        return NULL;
    }
    /* Two-word names first, so "agent list" is never taken for a command "agent". */
    if (argc >= 2) {
        char two[256];
        snprintf(two, sizeof(two), "%s %s", argv[0], argv[1]);
        for (size_t i = 0; i < n_cmds && !found; i++)
            if (names_cmd(&cmds[i], two)) found = &cmds[i], *n_words = 2;
    }
    for (size_t i = 0; i < n_cmds && !found; i++)
        if (names_cmd(&cmds[i], argv[0])) found = &cmds[i], *n_words = 1;
    if (found) {
        free(cands);
        return found;
    }

    for (size_t i = 0; i < n_cmds; i++) {
        split_name(cmds[i].name, group, sizeof(group));
        if (strcmp(group, argv[0]) == 0) is_group = true;
    }
    if (is_group) {
        /* "agent frob": suggest among the group's subcommands. */
        for (size_t i = 0; i < n_cmds; i++) {
            const char *names[2] = {cmds[i].name, cmds[i].alias};
            for (int k = 0; k < 2; k++) {
                const char *sub = names[k] ? split_name(names[k], group, sizeof(group)) : NULL;
                if (sub && strcmp(group, argv[0]) == 0) cands[n_cands++] = sub;
            }
        }
        if (argc < 2) {
            ag_err_set(err, AG_EINVAL, "'%s' needs a subcommand (see agentctl help %s)", argv[0],
                       argv[0]);
        } else {
            const char *near = ctl_suggest(argv[1], cands, n_cands);
            if (near)
                ag_err_set(err, AG_EINVAL,
                           "unknown command '%s %s' (did you mean '%s %s'? see agentctl help %s)",
                           argv[0], argv[1], argv[0], near, argv[0]);
            else
                ag_err_set(err, AG_EINVAL, "unknown command '%s %s' (see agentctl help %s)",
                           argv[0], argv[1], argv[0]);
        }
        free(cands);
        return NULL;
    }

    /* A subcommand typed without its group ("create") is a likely slip: name the full form. */
    for (size_t i = 0; i < n_cmds; i++) {
        const char *sub = split_name(cmds[i].name, group, sizeof(group));
        if (sub && strcmp(sub, argv[0]) == 0) {
            ag_err_set(err, AG_EINVAL,
                       "unknown command '%s' (did you mean '%s'? see agentctl --help)", argv[0],
                       cmds[i].name);
            free(cands);
            return NULL;
        }
    }
    /* Otherwise suggest among first words: one-word commands, aliases and group names. */
    char groups[8][64]; /* distinct group names ("agent"), which exist only inside names */
    size_t n_groups = 0;
    for (size_t i = 0; i < n_cmds; i++) {
        const char *names[2] = {cmds[i].name, cmds[i].alias};
        for (int k = 0; k < 2; k++) {
            if (!names[k]) continue;
            if (!split_name(names[k], group, sizeof(group))) {
                cands[n_cands++] = names[k];
                continue;
            }
            bool seen = false;
            for (size_t g = 0; g < n_groups; g++) seen |= strcmp(groups[g], group) == 0;
            if (seen || n_groups == sizeof(groups) / sizeof(groups[0])) continue;
            snprintf(groups[n_groups], sizeof(groups[0]), "%s", group);
            cands[n_cands++] = groups[n_groups++];
        }
    }
    const char *near = ctl_suggest(argv[0], cands, n_cands);
    if (near)
        ag_err_set(err, AG_EINVAL, "unknown command '%s' (did you mean '%s'? see agentctl --help)",
                   argv[0], near);
    else
        ag_err_set(err, AG_EINVAL, "unknown command '%s' (see agentctl --help)", argv[0]);
    free(cands);
    return NULL;
}
