/*
 * ctx.c - the sandbox context: what the host offers (probed once), the seccomp programs, the
 * cgroup directories, and the slots that give each live sandbox its cgroups and host ids.
 *
 * Host ids (agentd as root): a context claims one range of SBX__MAX_SLOTS ids, range r being
 * AGENTD_SBX_UID_BASE + r * SBX__MAX_SLOTS + slot. Two daemons on one host must never share a
 * range, whatever their data dirs, so the claim is an flock on <r>.lock in one fixed host
 * directory (AGENTD_SBX_UID_DIR), held while the context lives and dropped by the kernel when
 * its holder dies, however it dies. The search starts at pid % SBX__UID_RANGES, so a daemon
 * usually gets its first try. Two contexts of one process hold two locks (each opens its own
 * file description) and so get two ranges too.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

#define SBX__UID_RANGES 1000 /* ranges from AGENTD_SBX_UID_BASE */

const char *sbx_stop_name(enum sbx_stop stop)
{
    switch (stop) {
    case SBX_STOP_EXIT:
        return "exit";
    case SBX_STOP_SIGNAL:
        return "signal";
    case SBX_STOP_TIMEOUT:
        return "timeout";
    case SBX_STOP_MEMORY:
        return "memory";
    case SBX_STOP_OUTPUT:
        return "output_limit";
    case SBX_STOP_KILLED:
        return "killed";
    }
    return "unknown";
}

void sbx_limits_default(struct sbx_limits *lim)
{
    lim->memory_bytes = 512ll << 20;
    lim->pids = 64;
    lim->cpu_percent = 100;
    lim->workspace_bytes = 64ll << 20;
    lim->timeout_ms = 30000;
    lim->kill_grace_ms = 2000;
    lim->stdout_max = 1u << 20;
    lim->stderr_max = 1u << 20;
    lim->file_bytes = 64ll << 20;
    lim->open_files = 256;
}

void sbx_result_release(struct sbx_result *r)
{
    free(r->out);
    free(r->err);
    free(r->value);
    free(r->error_name);
    free(r->error_message);
    free(r->traceback);
    memset(r, 0, sizeof(*r));
}

/* Top-level names of a merged-/usr system that are symlinks into /usr: recreated as such. */
static void probe_links(struct sbx_ctx *ctx)
{
    static const char *const names[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[16], target[32];
        snprintf(path, sizeof(path), "/%s", names[i]);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strncmp(target, "usr/", 4) != 0 && strncmp(target, "/usr/", 5) != 0) continue;
        snprintf(ctx->links[ctx->n_links][0], sizeof(ctx->links[0][0]), "%s", names[i]);
        snprintf(ctx->links[ctx->n_links][1], sizeof(ctx->links[0][1]), "%s", target);
        ctx->n_links++;
    }
}

/* Claims a free host id range for ctx (see the file comment). A directory that cannot be made
 * or is not agentd's own alone falls back to the range by pid, unlocked, with a warning. */
static int take_uid_range(struct sbx_ctx *ctx, struct ag_err *err)
{
    const char *dir = getenv("AGENTD_SBX_UID_DIR");       /* tests: a directory of their own */
    const char *first_s = getenv("AGENTD_SBX_UID_RANGE"); /* tests: the first range tried */
    int first = (int)(getpid() % SBX__UID_RANGES);
    struct stat st;
    if (!dir || !*dir) dir = AGENTD_SBX_UID_DIR;
    if (first_s && *first_s) first = abs(atoi(first_s)) % SBX__UID_RANGES;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ag_warn("sandbox: cannot create %s (%s): host ids by pid, another daemon may share them",
                dir, strerror(errno));
        ctx->uid_range = first;
        return 0;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
        ag_warn("sandbox: %s is not a directory of agentd's user alone: host ids by pid, another "
                "daemon may share them",
                dir);
        if (dfd >= 0) close(dfd);
        ctx->uid_range = first;
        return 0;
    }
    for (int i = 0; i < SBX__UID_RANGES; i++) {
        int r = (first + i) % SBX__UID_RANGES;
        char name[32];
        snprintf(name, sizeof(name), "%d.lock", r);
        int fd = openat(dfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            close(dfd);
            return ag_err_set(err, AG_EIO, "sandbox: cannot open %s/%s: %s", dir, name,
                              strerror(e));
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            close(dfd);
            ctx->uid_range = r;
            ctx->uid_lock_fd = fd;
            return 0;
        }
        int e = errno;
        close(fd);
        if (e != EWOULDBLOCK) {
            close(dfd);
            return ag_err_set(err, AG_EIO, "sandbox: cannot lock %s/%s: %s", dir, name,
                              strerror(e));
        }
    }
    close(dfd);
    return ag_err_set(err, AG_EQUOTA, "sandbox: all %d host id ranges under %s are taken",
                      SBX__UID_RANGES, dir);
}

int sbx_ctx_new(const struct sbx_ctx_opts *opts, struct sbx_ctx **out, struct ag_err *err)
{
    char tag[64], why[512];
    int rc;

    const char *py = opts && opts->python ? opts->python : "/usr/bin/python3";
    if (strncmp(py, "/usr/", 5) != 0 || access(py, X_OK) != 0)
        return ag_err_set(err, AG_EUNSUPPORTED,
                          "sandbox: %s is not an executable under /usr (the sandbox exposes "
                          "only /usr); install Debian's python3",
                          py);
    struct sbx_ctx *ctx = ag_calloc(1, sizeof(*ctx));
    ag_list_init(&ctx->procs);
    ctx->uid_range = ctx->uid_lock_fd = -1;
    snprintf(ctx->python, sizeof(ctx->python), "%s", py);
    if ((rc = sbx__seccomp_build(&ctx->seccomp, false, err)) != 0 ||
        (rc = sbx__seccomp_build(&ctx->seccomp_net, true, err)) != 0) {
        free(ctx->seccomp.filter);
        free(ctx);
        return rc;
    }
    ctx->root = geteuid() == 0;
    ctx->uid = geteuid();
    ctx->gid = getegid();
    if (ctx->root && (rc = take_uid_range(ctx, err)) != 0) {
        free(ctx->seccomp.filter);
        free(ctx->seccomp_net.filter);
        free(ctx);
        return rc;
    }
    ctx->landlock_abi = sbx__landlock_abi();
    /* A kernel without it answers ENOSYS before looking at the arguments. The variable is a
     * test hook for the fallback (spawn.c). */
    const char *no_ms = getenv("AGENTD_SBX_NO_MOUNT_SETATTR");
    ctx->mount_setattr = !(no_ms && *no_ms == '1') &&
                         !(syscall(SYS_mount_setattr, -1, "", 0, NULL, 0) != 0 && errno == ENOSYS);
    ssize_t n = readlink("/etc/localtime", ctx->localtime, sizeof(ctx->localtime) - 1);
    ctx->localtime[n > 0 && ctx->localtime[0] == '/' ? n : 0] = '\0';
    probe_links(ctx);
    pthread_mutex_init(&ctx->mu, NULL);
    if (opts && opts->tag)
        snprintf(tag, sizeof(tag), "%s", opts->tag);
    else
        snprintf(tag, sizeof(tag), "agentd-%d", (int)getpid());
    sbx__cg_init(&ctx->cg, tag, why, sizeof(why));
    if (why[0]) ag_info("sandbox: %s", why);
    if (opts && opts->pool_size > 0) sbx__pool_start(ctx, opts->pool_size);
    *out = ctx;
    return 0;
}

void sbx__ctx_destroy(struct sbx_ctx *ctx)
{
    sbx__cg_release(&ctx->cg);
    free(ctx->seccomp.filter);
    free(ctx->seccomp_net.filter);
    if (ctx->uid_lock_fd >= 0) close(ctx->uid_lock_fd); /* the range is free again */
    pthread_mutex_destroy(&ctx->mu);
    free(ctx);
}

void sbx_ctx_free(struct sbx_ctx *ctx)
{
    if (!ctx) return;
    sbx__pool_stop(ctx);
    /* Long-lived processes belong to their spawners (an event loop that frees them once it has
     * seen them exit): kill them now, and leave the last one to release the context. */
    pthread_mutex_lock(&ctx->mu);
    ctx->closing = true;
    sbx__procs_kill_all(ctx);
    bool last = ctx->n_procs == 0;
    pthread_mutex_unlock(&ctx->mu);
    if (last) sbx__ctx_destroy(ctx);
}

static const char *mode_name(int m)
{
    return m == SBX__CG_V2 ? "v2" : m == SBX__CG_V1 ? "v1" : "none";
}

void sbx_ctx_info(struct sbx_ctx *ctx, struct sbx_info *info)
{
    info->memory = mode_name(ctx->cg.mode[SBX__CG_MEMORY]);
    info->pids = mode_name(ctx->cg.mode[SBX__CG_PIDS]);
    info->cpu = mode_name(ctx->cg.mode[SBX__CG_CPU]);
    info->landlock_abi = ctx->landlock_abi;
    pthread_mutex_lock(&ctx->mu);
    info->n_alive = ctx->n_alive;
    pthread_mutex_unlock(&ctx->mu);
    info->pool_ready = sbx__pool_ready(ctx);
}

int sbx__slot_get(struct sbx_ctx *ctx, struct ag_err *err)
{
    pthread_mutex_lock(&ctx->mu);
    for (int i = 0; i < SBX__MAX_SLOTS; i++) {
        if (ctx->slots[i]) continue;
        ctx->slots[i] = 1;
        ctx->n_alive++;
        pthread_mutex_unlock(&ctx->mu);
        return i;
    }
    pthread_mutex_unlock(&ctx->mu);
    return ag_err_set(err, AG_EQUOTA, "too many sandboxes alive (%d)", SBX__MAX_SLOTS);
}

void sbx__slot_put(struct sbx_ctx *ctx, int slot)
{
    pthread_mutex_lock(&ctx->mu);
    if (slot >= 0 && slot < SBX__MAX_SLOTS && ctx->slots[slot]) {
        ctx->slots[slot] = 0;
        ctx->n_alive--;
    }
    pthread_mutex_unlock(&ctx->mu);
}

static unsigned id_of(const struct sbx_ctx *ctx, int slot)
{
    return AGENTD_SBX_UID_BASE + (unsigned)ctx->uid_range * SBX__MAX_SLOTS + (unsigned)slot;
}

uid_t sbx__host_uid(const struct sbx_ctx *ctx, int slot)
{
    return ctx->root ? (uid_t)id_of(ctx, slot) : ctx->uid;
}

gid_t sbx__host_gid(const struct sbx_ctx *ctx, int slot)
{
    return ctx->root ? (gid_t)id_of(ctx, slot) : ctx->gid;
}
