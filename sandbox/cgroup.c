/*
 * cgroup.c - memory, pids and CPU limits through cgroups, v2 or v1, whichever the host really
 * provides for each controller.
 *
 * Detection reads /proc/self/cgroup (where agentd is) and /proc/self/mountinfo (where each
 * hierarchy is mounted). A controller is used through v2 when the unified hierarchy lists it in
 * agentd's cgroup.controllers, else through its v1 hierarchy when one is mounted; hybrid hosts
 * (v2 mounted with no controllers, v1 doing the work) end up on v1, pure v2 hosts on v2.
 *
 * Layout: a directory named after the context's tag under agentd's own cgroup of each
 * hierarchy, and one child per sandbox slot ("s17"), created on first use and reused: slots are
 * recycled, so a busy daemon does not create and remove cgroups for every run. On v2 the
 * context directory must not hold processes, so limits live in the slot children and the
 * controllers are enabled in both subtree_control files; when agentd's own cgroup holds
 * processes (the no-internal-process rule refuses that), agentd moves itself into a leaf
 * "<tag>-daemon" first.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const ctl_names[SBX__CG_N] = {"memory", "pids", "cpu"};

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = write(fd, s, strlen(s));
    int e = n < 0 ? -errno : 0;
    close(fd);
    return e;
}

static int writef(const char *dir, const char *file, long long v)
{
    char path[4096], val[64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    snprintf(val, sizeof(val), "%lld", v);
    return write_str(path, val);
}

static bool read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return false;
    buf[r] = '\0';
    return true;
}

/* Has a word (space or comma separated) in list. */
static bool has_word(const char *list, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += wl) {
        bool start = p == list || p[-1] == ' ' || p[-1] == ',';
        bool end = p[wl] == '\0' || p[wl] == ' ' || p[wl] == ',' || p[wl] == '\n';
        if (start && end) return true;
    }
    return false;
}

struct mounts {
    char v2[512];                 /* unified mount point, "" when none */
    char v2_root[512];            /* its root inside the hierarchy */
    char v1[SBX__CG_N][512];      /* v1 mount point per controller */
    char v1_root[SBX__CG_N][512]; /* and its root */
    char path_v2[512];            /* our path in the unified hierarchy */
    char path_v1[SBX__CG_N][512]; /* our path per v1 controller */
};

static void read_mounts(struct mounts *m)
{
    char line[4096];
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            /* id parent major:minor root mountpoint opts [tags] - fstype source superopts */
            char root[512], mnt[512], fstype[64], super[1024];
            const char *dash = strstr(line, " - ");
            if (!dash) continue;
            if (sscanf(line, "%*s %*s %*s %511s %511s", root, mnt) != 2) continue;
            if (sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2) continue;
            if (strcmp(fstype, "cgroup2") == 0 && !m->v2[0]) {
                snprintf(m->v2, sizeof(m->v2), "%s", mnt);
                snprintf(m->v2_root, sizeof(m->v2_root), "%s", root);
            } else if (strcmp(fstype, "cgroup") == 0) {
                for (int i = 0; i < SBX__CG_N; i++)
                    if (has_word(super, ctl_names[i]) && !m->v1[i][0]) {
                        snprintf(m->v1[i], sizeof(m->v1[i]), "%s", mnt);
                        snprintf(m->v1_root[i], sizeof(m->v1_root[i]), "%s", root);
                    }
            }
        }
        fclose(f);
    }
    f = fopen("/proc/self/cgroup", "re");
    if (!f) return;
    while (fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = '\0';
        char *path = c2 + 1;
        path[strcspn(path, "\n")] = '\0';
        if (strncmp(line, "0:", 2) == 0 && c1[1] == '\0') {
            snprintf(m->path_v2, sizeof(m->path_v2), "%s", path);
            continue;
        }
        for (int i = 0; i < SBX__CG_N; i++)
            if (has_word(c1 + 1, ctl_names[i]))
                snprintf(m->path_v1[i], sizeof(m->path_v1[i]), "%s", path);
    }
    fclose(f);
}

/* mount point + our path relative to the mount's root. */
static void join(char *out, size_t n, const char *mnt, const char *root, const char *path)
{
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(path, root, rl) == 0) path += rl;
    if (strcmp(path, "/") == 0) path = "";
    snprintf(out, n, "%s%s", mnt, path);
}

static bool make_dir(const char *path)
{
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

static void init_v2(struct sbx__cgroups *cg, const struct mounts *m, const char *tag, bool want[],
                    char *why, size_t why_n)
{
    char own[1024], path[4096], avail[512], ctl[64];
    join(own, sizeof(own), m->v2, m->v2_root, m->path_v2);
    snprintf(path, sizeof(path), "%s/cgroup.controllers", own);
    if (!read_small(path, avail, sizeof(avail))) return;
    bool any = false;
    for (int i = 0; i < SBX__CG_N; i++) any |= want[i] = has_word(avail, ctl_names[i]);
    if (!any) return;
    /* Enable in our cgroup's subtree; EBUSY means we hold processes there: move to a leaf. */
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", own);
    for (int i = 0; i < SBX__CG_N; i++) {
        if (!want[i]) continue;
        snprintf(ctl, sizeof(ctl), "+%s", ctl_names[i]);
        int rc = write_str(path, ctl);
        if (rc == -EBUSY) {
            char leaf[2048], procs[4096], pid[32];
            snprintf(leaf, sizeof(leaf), "%s/%s-daemon", own, tag);
            snprintf(procs, sizeof(procs), "%s/cgroup.procs", leaf);
            snprintf(pid, sizeof(pid), "%d", (int)getpid());
            if (make_dir(leaf) && write_str(procs, pid) == 0) rc = write_str(path, ctl);
        }
        if (rc != 0) {
            snprintf(why, why_n, "cgroup v2 %s: cannot enable in %s: %s", ctl_names[i], own,
                     strerror(-rc));
            want[i] = false;
        }
    }
    char base[2048];
    snprintf(base, sizeof(base), "%s/%s", own, tag);
    if (!make_dir(base)) {
        snprintf(why, why_n, "cgroup v2: cannot create %s: %s", base, strerror(errno));
        return;
    }
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", base);
    for (int i = 0; i < SBX__CG_N; i++) {
        if (!want[i]) continue;
        snprintf(ctl, sizeof(ctl), "+%s", ctl_names[i]);
        if (write_str(path, ctl) != 0) continue;
        cg->mode[i] = SBX__CG_V2;
        snprintf(cg->base[i], sizeof(cg->base[i]), "%s", base);
    }
}

void sbx__cg_init(struct sbx__cgroups *cg, const char *tag, char *why, size_t why_n)
{
    struct mounts m;
    bool want[SBX__CG_N] = {false};

    memset(cg, 0, sizeof(*cg));
    memset(&m, 0, sizeof(m));
    why[0] = '\0';
    read_mounts(&m);
    if (m.v2[0]) init_v2(cg, &m, tag, want, why, why_n);
    for (int i = 0; i < SBX__CG_N; i++) {
        if (cg->mode[i] != SBX__CG_NONE || !m.v1[i][0]) continue;
        char own[1024], base[1200], probe[4096];
        join(own, sizeof(own), m.v1[i], m.v1_root[i], m.path_v1[i]);
        snprintf(base, sizeof(base), "%s/%s", own, tag);
        snprintf(probe, sizeof(probe), "%s/cgroup.procs", base);
        if (!make_dir(base) || access(probe, W_OK) != 0) {
            snprintf(why, why_n, "cgroup v1 %s: cannot create %s: %s", ctl_names[i], base,
                     strerror(errno));
            continue;
        }
        cg->mode[i] = SBX__CG_V1;
        snprintf(cg->base[i], sizeof(cg->base[i]), "%s", base);
    }
}

static void slot_dir(const struct sbx__cgroups *cg, int i, int slot, char *out, size_t n)
{
    snprintf(out, n, "%s/s%d", cg->base[i], slot);
}

int sbx__cg_prepare(struct sbx__cgroups *cg, int slot, const struct sbx_limits *lim,
                    struct ag_err *err)
{
    char dir[2200];
    for (int i = 0; i < SBX__CG_N; i++) {
        if (cg->mode[i] == SBX__CG_NONE) continue;
        slot_dir(cg, i, slot, dir, sizeof(dir));
        if (!make_dir(dir))
            return ag_err_set(err, AG_EIO, "cannot create cgroup %s: %s", dir, strerror(errno));
        int rc = 0;
        bool v2 = cg->mode[i] == SBX__CG_V2;
        switch (i) {
        case SBX__CG_MEMORY:
            if (v2) {
                rc = writef(dir, "memory.max", lim->memory_bytes);
                writef(dir, "memory.swap.max", 0);
            } else {
                /* memsw must stay >= limit: write the limit on both sides of it. */
                rc = writef(dir, "memory.limit_in_bytes", lim->memory_bytes);
                writef(dir, "memory.memsw.limit_in_bytes", lim->memory_bytes);
                if (rc != 0) rc = writef(dir, "memory.limit_in_bytes", lim->memory_bytes);
            }
            break;
        case SBX__CG_PIDS:
            rc = writef(dir, "pids.max", lim->pids);
            break;
        case SBX__CG_CPU: {
            long long quota = lim->cpu_percent * 1000; /* per 100 ms period */
            if (v2) {
                char val[64], path[4096];
                snprintf(val, sizeof(val), "%lld 100000", quota);
                snprintf(path, sizeof(path), "%s/cpu.max", dir);
                rc = write_str(path, val);
            } else {
                writef(dir, "cpu.cfs_period_us", 100000);
                rc = writef(dir, "cpu.cfs_quota_us", quota);
            }
            break;
        }
        }
        if (rc != 0)
            return ag_err_set(err, AG_EIO, "cannot set the %s limit in %s: %s", ctl_names[i], dir,
                              strerror(-rc));
    }
    return 0;
}

int sbx__cg_open_self(struct sbx__cgroups *cg, int slot, int fds[SBX__CG_N], struct ag_err *err)
{
    char dir[2200], path[4096];
    for (int i = 0; i < SBX__CG_N; i++) fds[i] = -1;
    for (int i = 0; i < SBX__CG_N; i++) {
        if (cg->mode[i] != SBX__CG_V1) continue;
        slot_dir(cg, i, slot, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/tasks", dir);
        if ((fds[i] = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
            int e = errno;
            for (int k = 0; k < i; k++)
                if (fds[k] >= 0) close(fds[k]), fds[k] = -1;
            return ag_err_set(err, AG_EIO, "cannot open %s: %s", path, strerror(e));
        }
    }
    return 0;
}

int sbx__cg_attach(struct sbx__cgroups *cg, int slot, pid_t pid, bool v2_only, struct ag_err *err)
{
    char dir[2200], path[4096], val[32];
    snprintf(val, sizeof(val), "%d", (int)pid);
    for (int i = 0; i < SBX__CG_N; i++) {
        if (cg->mode[i] == SBX__CG_NONE || (v2_only && cg->mode[i] == SBX__CG_V1)) continue;
        slot_dir(cg, i, slot, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
        int rc = write_str(path, val);
        if (rc != 0)
            return ag_err_set(err, AG_EIO, "cannot move the sandbox into %s: %s", dir,
                              strerror(-rc));
    }
    return 0;
}

uint64_t sbx__cg_oom_kills(struct sbx__cgroups *cg, int slot)
{
    char dir[2200], path[4096], buf[2048];
    if (cg->mode[SBX__CG_MEMORY] == SBX__CG_NONE) return 0;
    slot_dir(cg, SBX__CG_MEMORY, slot, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/%s", dir,
             cg->mode[SBX__CG_MEMORY] == SBX__CG_V2 ? "memory.events" : "memory.oom_control");
    if (!read_small(path, buf, sizeof(buf))) return 0;
    const char *p = strstr(buf, "oom_kill ");
    return p ? strtoull(p + 9, NULL, 10) : 0;
}

void sbx__cg_release(struct sbx__cgroups *cg)
{
    char dir[2200];
    for (int i = 0; i < SBX__CG_N; i++) {
        if (cg->mode[i] == SBX__CG_NONE) continue;
        for (int s = 0; s < SBX__MAX_SLOTS; s++) {
            slot_dir(cg, i, s, dir, sizeof(dir));
            rmdir(dir);
        }
        rmdir(cg->base[i]);
        cg->mode[i] = SBX__CG_NONE;
    }
}
