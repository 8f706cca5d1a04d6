/*
 * proc.c - long-lived sandboxed processes (sbx_proc_*): a program such as an MCP server that
 * runs in a sandbox of its own until it exits or is killed, its stdin, stdout and stderr handed
 * to the spawner, which reads them from its event loop.
 *
 * Why this way. The sandbox itself is sbx__spawn's, as for runs and sessions; what is new is
 * what the program may see (host paths bound read-only, a working directory among them), its
 * environment, and that nobody here waits for it. The spawner learns of the exit from the
 * pidfd (readable once pid 1 is a zombie, which for the init of a pid namespace is after every
 * other process of the namespace is gone) and reaps it with a non-blocking wait, so an event
 * loop never blocks in waitpid.
 *
 * The checks happen here, on the host, before anything is spawned, so their errors are plain:
 * a path to bind must be absolute and clean (no ".", "..", "//"), must exist, and must not be
 * the root, the workspace or a kernel filesystem; the program must exist and be visible inside
 * (under /usr, or under a bound path), found in the sandbox's PATH when it is a bare name.
 *
 * Lifetime against the context: every process counts in ctx->n_procs from before its spawn to
 * the end of sbx_proc_free, and is on ctx->procs (under ctx->mu) while its pidfd is open.
 * sbx_ctx_free SIGKILLs the listed ones and leaves the context to the last free.
 */
#include "sbx_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct sbx_proc {
    struct sbx__proc p;  /* the sandbox; p.pid 0 once reaped */
    struct ag_list node; /* in ctx->procs, under ctx->mu */
    bool oom;            /* the OOM killer fired in its memory cgroup (known at reap) */
};

/* ---- path checks ---- */

/* path is dir or lies beneath it. */
static bool beneath(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Absolute, shorter than SBX_MAX_PATH_LEN, without empty, "." or ".." components, and without
 * a trailing slash (except "/" itself). */
static bool clean_abs(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || s[0] != '/' || n >= SBX_MAX_PATH_LEN) return false;
    if (n > 1 && s[n - 1] == '/') return false;
    for (const char *c = s; *c; c++) {
        if (*c != '/') continue;
        const char *e = c + 1;
        if (*e == '/' && n > 1) return false;
        if (e[0] == '.' && (e[1] == '/' || e[1] == '\0')) return false;
        if (e[0] == '.' && e[1] == '.' && (e[2] == '/' || e[2] == '\0')) return false;
    }
    return true;
}

/* Visible in every sandbox as on the host: /usr and the top-level links into it. */
static bool in_base(const struct sbx_ctx *ctx, const char *path)
{
    if (beneath(path, "/usr")) return true;
    for (int i = 0; i < ctx->n_links; i++) {
        char top[40];
        snprintf(top, sizeof(top), "/%s", ctx->links[i][0]);
        if (beneath(path, top)) return true;
    }
    return false;
}

static bool in_binds(const char *path, const char *const *binds, int n)
{
    for (int i = 0; i < n; i++)
        if (beneath(path, binds[i])) return true;
    return false;
}

static int by_length(const void *a, const void *b)
{
    size_t la = strlen(*(const char *const *)a), lb = strlen(*(const char *const *)b);
    return la < lb ? -1 : la > lb ? 1 : strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks req->paths into binds (borrowed strings, shortest first, without the ones visible
 * already); *n gets their count. */
static int check_paths(const struct sbx_ctx *ctx, const struct sbx_proc_req *req,
                       const char **binds, int *n, struct ag_err *err)
{
    static const char *const refused_under[] = {"/proc", "/dev", "/sys"};
    static const char *const refused_at[] = {"/", "/work", "/tmp"};
    const char *all[SBX_MAX_PATHS];
    int m = 0;

    for (size_t i = 0; req->paths && req->paths[i]; i++) {
        const char *path = req->paths[i];
        struct stat st;
        if (m == SBX_MAX_PATHS)
            return ag_err_set(err, AG_EINVAL, "more than %d paths to bind into the sandbox",
                              SBX_MAX_PATHS);
        if (!clean_abs(path))
            return ag_err_set(err, AG_EINVAL,
                              "sandbox path '%s': not an absolute path without '.', '..' or "
                              "'//' (of at most %d bytes)",
                              path, SBX_MAX_PATH_LEN - 1);
        for (size_t k = 0; k < sizeof(refused_under) / sizeof(refused_under[0]); k++)
            if (beneath(path, refused_under[k]))
                return ag_err_set(err, AG_EINVAL, "sandbox path '%s': %s cannot be bound", path,
                                  refused_under[k]);
        for (size_t k = 0; k < sizeof(refused_at) / sizeof(refused_at[0]); k++)
            if (strcmp(path, refused_at[k]) == 0)
                return ag_err_set(err, AG_EINVAL,
                                  "sandbox path '%s': cannot be bound (bind a directory beneath "
                                  "it)",
                                  path);
        if (stat(path, &st) != 0)
            return ag_err_set(err, errno == ENOENT ? AG_ENOTFOUND : AG_EIO, "sandbox path '%s': %s",
                              path, strerror(errno));
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
            return ag_err_set(err, AG_EINVAL,
                              "sandbox path '%s': neither a directory nor a regular file", path);
        all[m++] = path;
    }
    qsort(all, (size_t)m, sizeof(all[0]), by_length);
    *n = 0;
    for (int i = 0; i < m; i++)
        if (!in_base(ctx, all[i]) && !in_binds(all[i], binds, *n)) binds[(*n)++] = all[i];
    return 0;
}

/* The program as the sandbox will exec it: an absolute path, visible inside, executable. */
static int resolve_program(const struct sbx_ctx *ctx, const char *prog, const char *const *binds,
                           int n_binds, char *out, size_t out_n, struct ag_err *err)
{
    if (!strchr(prog, '/')) {
        static const char *const dirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            snprintf(out, out_n, "%s/%s", dirs[i], prog);
            if (in_base(ctx, out) && access(out, X_OK) == 0) return 0;
        }
        return ag_err_set(err, AG_ENOTFOUND,
                          "cannot run '%s' in the sandbox: not found in its PATH "
                          "(/usr/local/bin:/usr/bin:/bin)",
                          prog);
    }
    if (!clean_abs(prog))
        return ag_err_set(err, AG_EINVAL,
                          "cannot run '%s' in the sandbox: give an absolute path or a name "
                          "found in PATH",
                          prog);
    if (!in_base(ctx, prog) && !in_binds(prog, binds, n_binds))
        return ag_err_set(err, AG_ENOTFOUND,
                          "cannot run '%s' in the sandbox: it is not visible there (the sandbox "
                          "shows /usr and the paths bound into it; bind the program's "
                          "directory)",
                          prog);
    if (access(prog, X_OK) != 0)
        return ag_err_set(err, errno == ENOENT ? AG_ENOTFOUND : AG_EIO,
                          "cannot run '%s' in the sandbox: %s", prog, strerror(errno));
    snprintf(out, out_n, "%s", prog);
    return 0;
}

static int check_strings(const struct sbx_proc_req *req, struct ag_err *err)
{
    size_t bytes = 0, n_env = 0;
    for (size_t i = 0; req->argv[i]; i++) bytes += strlen(req->argv[i]) + 1;
    for (size_t i = 0; req->env && req->env[i]; i++, n_env++) {
        const char *eq = strchr(req->env[i], '=');
        if (!eq || eq == req->env[i])
            return ag_err_set(err, AG_EINVAL, "sandbox environment entry '%s' is not K=V",
                              req->env[i]);
        bytes += strlen(req->env[i]) + 1;
    }
    if (n_env > SBX_MAX_ENV)
        return ag_err_set(err, AG_EINVAL, "more than %d environment entries for the sandbox",
                          SBX_MAX_ENV);
    if (bytes > SBX_MAX_ARG_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "arguments and environment: %zu bytes, the limit is %u",
                          bytes, SBX_MAX_ARG_BYTES);
    return 0;
}

/* ---- the public calls ---- */

/* Counts a process against ctx (before its spawn); fails once the context is closing. */
static int hold(struct sbx_ctx *ctx, struct ag_err *err)
{
    pthread_mutex_lock(&ctx->mu);
    bool closing = ctx->closing;
    if (!closing) ctx->n_procs++;
    pthread_mutex_unlock(&ctx->mu);
    return closing ? ag_err_set(err, AG_ESHUTDOWN, "the sandbox context is closing") : 0;
}

/* Undoes hold; frees the context when it was the last thing holding it. */
static void unhold(struct sbx_ctx *ctx)
{
    pthread_mutex_lock(&ctx->mu);
    bool last = --ctx->n_procs == 0 && ctx->closing;
    pthread_mutex_unlock(&ctx->mu);
    if (last) sbx__ctx_destroy(ctx);
}

int sbx_proc_spawn(struct sbx_ctx *ctx, const struct sbx_proc_req *req, struct sbx_proc **out,
                   int *stdin_fd, int *stdout_fd, int *stderr_fd, struct ag_err *err)
{
    const char *binds[SBX_MAX_PATHS + 2];
    char prog[SBX_MAX_PATH_LEN + 64];
    int n_binds = 0, rc;
    struct stat st;

    *out = NULL;
    if (!req->argv || !req->argv[0] || !req->argv[0][0])
        return ag_err_set(err, AG_EINVAL, "no program to run in the sandbox");
    if ((rc = check_strings(req, err)) != 0) return rc;
    if ((rc = check_paths(ctx, req, binds, &n_binds, err)) != 0) return rc;
    const char *cwd = req->cwd ? req->cwd : "/work";
    if (!clean_abs(cwd) || !(beneath(cwd, "/work") || beneath(cwd, "/tmp") || in_base(ctx, cwd) ||
                             in_binds(cwd, binds, n_binds)))
        return ag_err_set(err, AG_EINVAL,
                          "sandbox working directory '%s' is not visible inside the sandbox (bind "
                          "it)",
                          cwd);
    if ((rc = resolve_program(ctx, req->argv[0], binds, n_binds, prog, sizeof(prog), err)) != 0)
        return rc;
    /* Name resolution and TLS need the host's resolver configuration and certificates. */
    if (req->network) {
        if (stat("/etc/resolv.conf", &st) == 0 && !in_binds("/etc/resolv.conf", binds, n_binds))
            binds[n_binds++] = "/etc/resolv.conf";
        if (stat("/etc/ssl", &st) == 0 && S_ISDIR(st.st_mode) &&
            !in_binds("/etc/ssl", binds, n_binds))
            binds[n_binds++] = "/etc/ssl";
    }

    size_t argc = 0;
    while (req->argv[argc]) argc++;
    const char **argv = ag_calloc(argc + 1, sizeof(*argv));
    argv[0] = prog;
    for (size_t i = 1; i < argc; i++) argv[i] = req->argv[i];

    struct sbx_limits lim;
    if (req->limits)
        lim = *req->limits;
    else
        sbx_limits_default(&lim);
    struct sbx__spawn_opts o = {
        .long_lived = true,
        .network = req->network,
        .cwd = cwd,
        .env = req->env,
        .binds = binds,
        .n_binds = n_binds,
    };
    if ((rc = hold(ctx, err)) != 0) {
        free(argv);
        return rc;
    }
    struct sbx_proc *p = ag_calloc(1, sizeof(*p));
    rc = sbx__spawn(ctx, &lim, argv, &o, &p->p, err);
    free(argv);
    if (rc != 0) {
        free(p);
        unhold(ctx);
        return rc;
    }
    /* The three pipe ends are the caller's now. */
    *stdin_fd = p->p.in_fd;
    *stdout_fd = p->p.out_fd;
    *stderr_fd = p->p.err_fd;
    p->p.in_fd = p->p.out_fd = p->p.err_fd = -1;
    pthread_mutex_lock(&ctx->mu);
    ag_list_insert_head(&ctx->procs, &p->node);
    /* sbx_ctx_free ran on another thread during the spawn: this one dies with the rest. */
    if (ctx->closing) sbx__proc_signal(&p->p, SIGKILL);
    pthread_mutex_unlock(&ctx->mu);
    *out = p;
    return 0;
}

pid_t sbx_proc_pid(const struct sbx_proc *p)
{
    return p->p.pid;
}

int sbx_proc_pidfd(const struct sbx_proc *p)
{
    return p->p.pidfd;
}

void sbx_proc_kill(struct sbx_proc *p, int sig)
{
    sbx__proc_signal(&p->p, sig);
}

int sbx_proc_wait(struct sbx_proc *p, bool block, int *status, bool *oom)
{
    bool was_alive = p->p.pid > 0;
    int st = 0, rc;
    if (block && was_alive) {
        rc = sbx__proc_reap(&p->p, &st);
        rc = rc == 0 ? 1 : rc;
    } else {
        rc = sbx__proc_try_reap(&p->p, &st); /* also gives the status of an earlier reap */
    }
    if (rc == 1 && was_alive)
        p->oom = sbx__cg_oom_kills(&p->p.ctx->cg, p->p.slot) > p->p.oom_before;
    if (rc == 1 && status) *status = st;
    if (oom) *oom = rc == 1 && p->oom;
    return rc;
}

void sbx_proc_free(struct sbx_proc *p)
{
    if (!p) return;
    struct sbx_ctx *ctx = p->p.ctx;
    /* Off the list first: sbx_ctx_free must not signal a pidfd being closed. */
    pthread_mutex_lock(&ctx->mu);
    ag_list_remove(&p->node);
    pthread_mutex_unlock(&ctx->mu);
    sbx__proc_release(&p->p);
    free(p);
    unhold(ctx);
}

void sbx__procs_kill_all(struct sbx_ctx *ctx)
{
    ag_list_foreach (it, &ctx->procs) {
        struct sbx_proc *p = ag_list_entry(it, struct sbx_proc, node);
        if (p->p.pidfd >= 0) syscall(SYS_pidfd_send_signal, p->p.pidfd, SIGKILL, NULL, 0);
    }
}
