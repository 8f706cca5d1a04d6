/*
 * spawn.c - creating one sandboxed process: clone into new namespaces, build the root, lock
 * the process down, exec.
 *
 * The parent prepares everything the child needs (strings, file contents, the seccomp program)
 * before clone(), because between clone and exec the child of a multi-threaded daemon may only
 * make system calls: no allocation, no locks. The child is a fork-like clone (no CLONE_VM) in
 * new user, pid, mount, net, IPC and UTS namespaces; it becomes pid 1 of its pid namespace.
 *
 * Handshake over a SOCK_SEQPACKET pair ("ctl"):
 *   child:  first joins its slot's v1 cgroups itself (writes "0" to their `tasks` files, which
 *           the parent opened);
 *   parent: writes uid_map/gid_map, moves the child into its v2 cgroups, sends "g";
 *   child:  opens the host paths it is to bind (O_PATH, still with the daemon's host uid: a
 *           bind source must be reachable by the daemon, not by the sandbox's id; and opened in
 *           the child's own mount namespace, as a bind mount requires of its source), then
 *           drops to uid/gid 1000 (still holding every capability in its own user namespace),
 *           enters a cgroup namespace rooted at its cgroup, builds the root, sends the /work
 *           directory fd when asked ("W" + SCM_RIGHTS), locks itself down and execs; a failure
 *           sends "E<stage>: <errno text>" and exits 127. ctl is close-on-exec, so EOF tells
 *           the parent that exec happened.
 *
 * Order of the lock-down, each step needing the previous one's privileges: rlimits, empty
 * capability bounding and ambient sets, empty capability sets, no_new_privs, Landlock, seccomp
 * (last, so the setup's own calls are not in the allowlist), exec.
 *
 * The parent also sets the child's oom_score_adj to 1000 before it runs: the OOM killer then
 * takes any sandboxed process before the daemon (whose model makes it the largest process).
 * When the daemon is root the write also raises the child's floor (oom_score_adj_min), so the
 * sandbox cannot lower it again.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT           47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* mount_setattr(2) (Linux 5.12), declared here: the system headers may be older. */
struct ms_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
#define MS_ATTR_RDONLY 0x1
#define MS_ATTR_NOSUID 0x2
#define MS_ATTR_NODEV  0x4

/* The new root is a tmpfs mounted over the host's /tmp (in the child's own mount namespace). */
#define NEW_ROOT "/tmp"

/* Landlock rights by ABI (the system headers may be older than the kernel). */
#define LL_FS_EXECUTE     (1ULL << 0)
#define LL_FS_WRITE_FILE  (1ULL << 1)
#define LL_FS_READ_FILE   (1ULL << 2)
#define LL_FS_READ_DIR    (1ULL << 3)
#define LL_FS_ABI1        ((1ULL << 13) - 1)
#define LL_FS_REFER       (1ULL << 13)
#define LL_FS_TRUNCATE    (1ULL << 14)
#define LL_FS_IOCTL_DEV   (1ULL << 15)
#define LL_NET_BIND_TCP   (1ULL << 0)
#define LL_NET_CONNECT    (1ULL << 1)
#define LL_SCOPE_ABSTRACT (1ULL << 0)
#define LL_SCOPE_SIGNAL   (1ULL << 1)

struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};
struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

/* Everything the child needs, computed before clone. */
struct plan {
    const struct sbx_ctx *ctx;
    const char *const *argv;
    char *const *envp;
    int ctl;          /* child's end of the handshake socket */
    int fds[5];       /* become the child's fds 0..n_fds-1 */
    int n_fds;        /* 3, or 5 for sessions */
    bool send_ws;     /* send the /work fd */
    bool setgroups;   /* agentd is root: clear supplementary groups */
    char ws_opts[96]; /* tmpfs options of /work and /tmp */
    char tmp_opts[96];
    char passwd[160]; /* generated /etc files */
    char group[96];
    struct rlimit rl_nproc, rl_fsize, rl_nofile, rl_as, rl_cpu;
    bool set_nproc, set_as, set_cpu;
    int cg_self[SBX__CG_N];     /* v1 `tasks` files the child writes "0" to, or -1 */
    bool network;               /* the host's network: no Landlock net rules, DNS in nsswitch */
    char cwd[SBX_MAX_PATH_LEN]; /* working directory inside */
    int n_binds;                /* entries of binds in use */
    struct {
        char path[SBX_MAX_PATH_LEN]; /* host path, and the place inside */
        bool dir;                    /* a directory (else a file) */
        unsigned long flags;         /* locked flags of its host mount */
        int fd;                      /* child: O_PATH fd of the host path */
    } binds[SBX_MAX_PATHS + 2];
};

/* ---- child side: system calls only ---- */

__attribute__((noreturn)) static void child_fail(const struct plan *pl, const char *stage)
{
    char msg[256];
    int e = errno;
    size_t n = strlen(stage);
    if (n > 120) n = 120;
    msg[0] = 'E';
    memcpy(msg + 1, stage, n);
    /* strerror is not async-signal-safe in general; errno goes as a number. */
    int len = 1 + (int)n;
    len += snprintf(msg + len, sizeof(msg) - (size_t)len, ": errno %d", e);
    (void)!write(pl->ctl, msg, (size_t)len);
    _exit(127);
}

static void write_file(const struct plan *pl, const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) child_fail(pl, path);
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) child_fail(pl, path);
    close(fd);
}

/* Decodes mountinfo's octal escapes (\040 for a space...) in place. */
static void unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* One line of /proc/self/mountinfo: remounts its mount read-only, nosuid, nodev if it lies at or
 * beneath want (want_n bytes). noexec is kept: a user namespace may not clear it, and a remount
 * without atime flags keeps the mount's own. */
static void remount_line(const struct plan *pl, char *line, const char *want, size_t want_n)
{
    char *f[6]; /* id, parent id, major:minor, root, mount point, mount options */
    int n = 0;
    for (char *q = line; q && n < 6;) {
        f[n++] = q;
        if ((q = strchr(q, ' ')) != NULL) *q++ = '\0';
    }
    if (n < 6) return;
    unescape(f[4]);
    if (strncmp(f[4], want, want_n) != 0 || (f[4][want_n] != '\0' && f[4][want_n] != '/')) return;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV;
    for (char *o = f[5]; o;) {
        char *next = strchr(o, ',');
        if (next) *next++ = '\0';
        if (strcmp(o, "noexec") == 0) flags |= MS_NOEXEC;
        o = next;
    }
    /* ENOENT, EINVAL: a mount of the host's own /tmp, listed but hidden by the new root. */
    if (mount(NULL, f[4], NULL, flags, NULL) != 0 && errno != ENOENT && errno != EINVAL)
        child_fail(pl, f[4]);
}

/* Without mount_setattr: every mount at or beneath dst (relative to the new root), as this
 * process's mountinfo lists them, gets its own remount. Read in a stack buffer, line by line. */
static void ro_tree_walk(const struct plan *pl, const char *dst)
{
    char want[64], buf[8192];
    int want_n = snprintf(want, sizeof(want), NEW_ROOT "/%s", dst);
    if (want_n <= 0 || want_n >= (int)sizeof(want)) child_fail(pl, dst);
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) child_fail(pl, "/proc/self/mountinfo");
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0) child_fail(pl, "read /proc/self/mountinfo");
        len += (size_t)n;
        char *line = buf, *nl;
        while ((nl = memchr(line, '\n', (size_t)(buf + len - line))) != NULL) {
            *nl = '\0';
            remount_line(pl, line, want, (size_t)want_n);
            line = nl + 1;
        }
        len = (size_t)(buf + len - line);
        if (n == 0) break;
        if (len == sizeof(buf) - 1) {
            errno = ENAMETOOLONG;
            child_fail(pl, "a /proc/self/mountinfo line");
        }
        memmove(buf, line, len);
    }
    close(fd);
}

/* Read-only, nosuid, nodev bind of a host path with every mount beneath it (a remount of the
 * top alone would leave a host submount, say a tmpfs under /usr, writable): one mount_setattr
 * over the tree, or one remount per mount on kernels before 5.12. Flags the host mounts have
 * (noexec, atime) stay: these calls only add. */
static void bind_ro(const struct plan *pl, const char *src, const char *dst)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) child_fail(pl, dst);
    if (pl->ctx->mount_setattr) {
        struct ms_attr a = {.attr_set = MS_ATTR_RDONLY | MS_ATTR_NOSUID | MS_ATTR_NODEV};
        if (syscall(SYS_mount_setattr, AT_FDCWD, dst, AT_RECURSIVE, &a, sizeof(a)) == 0) return;
        if (errno != ENOSYS) child_fail(pl, dst);
    }
    ro_tree_walk(pl, dst);
}

static void bind_dev(const struct plan *pl, const char *name)
{
    char src[32], dst[32];
    snprintf(src, sizeof(src), "/dev/%s", name);
    snprintf(dst, sizeof(dst), "dev/%s", name);
    int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) child_fail(pl, dst);
    close(fd);
    if (mount(src, dst, NULL, MS_BIND, NULL) != 0) child_fail(pl, dst);
}

static void make_dir(const struct plan *pl, const char *path, mode_t mode)
{
    if (mkdir(path, mode) != 0) child_fail(pl, path);
}

static void send_ws(const struct plan *pl)
{
    int fd = open("work", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) child_fail(pl, "open /work");
    char tag = 'W';
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (sendmsg(pl->ctl, &mh, 0) != 1) child_fail(pl, "send /work");
    close(fd);
}

/* Creates the directories of path (relative to the new root) down to its parent. */
static void make_parents(struct plan *pl, char *path)
{
    for (char *q = strchr(path, '/'); q; q = strchr(q + 1, '/')) {
        *q = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) child_fail(pl, path);
        *q = '/';
    }
}

/* Binds host path i, opened as binds[i].fd, read-only at the same place in the new root. Not
 * recursive: mounts beneath it on the host stay hidden. */
static void bind_path(struct plan *pl, int i)
{
    char *dst = pl->binds[i].path + 1; /* relative to the new root, the cwd now */
    char src[32];
    make_parents(pl, dst);
    if (pl->binds[i].dir) {
        if (mkdir(dst, 0755) != 0 && errno != EEXIST) child_fail(pl, pl->binds[i].path);
    } else {
        int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) child_fail(pl, pl->binds[i].path);
        close(fd);
    }
    /* The fd's magic link in our own /proc names the host file, in our mount namespace. */
    snprintf(src, sizeof(src), "proc/self/fd/%d", pl->binds[i].fd);
    if (mount(src, dst, NULL, MS_BIND, NULL) != 0) child_fail(pl, pl->binds[i].path);
    if (mount(NULL, dst, NULL,
              MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | pl->binds[i].flags,
              NULL) != 0)
        child_fail(pl, pl->binds[i].path);
    close(pl->binds[i].fd);
    pl->binds[i].fd = -1;
}

static void build_root(struct plan *pl)
{
    const struct sbx_ctx *ctx = pl->ctx;

    /* Nothing we mount may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) child_fail(pl, "make / private");
    if (mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV,
              "size=1m,nr_inodes=256,mode=0755") != 0)
        child_fail(pl, "mount the root tmpfs");
    if (chdir(NEW_ROOT) != 0) child_fail(pl, "chdir to the new root");

    make_dir(pl, "usr", 0755);
    bind_ro(pl, "/usr", "usr");
    for (int i = 0; i < ctx->n_links; i++)
        if (symlink(ctx->links[i][1], ctx->links[i][0]) != 0) child_fail(pl, ctx->links[i][0]);

    make_dir(pl, "etc", 0755);
    write_file(pl, "etc/passwd", pl->passwd);
    write_file(pl, "etc/group", pl->group);
    write_file(pl, "etc/hosts", "127.0.0.1 localhost sandbox\n::1 localhost\n");
    write_file(pl, "etc/hostname", "sandbox\n");
    write_file(pl, "etc/nsswitch.conf",
               pl->network ? "passwd: files\ngroup: files\nhosts: files dns\n"
                           : "passwd: files\ngroup: files\nhosts: files\n");
    write_file(pl, "etc/ld.so.cache", "");
    bind_ro(pl, "/etc/ld.so.cache", "etc/ld.so.cache");
    if (ctx->localtime[0] && symlink(ctx->localtime, "etc/localtime") != 0)
        child_fail(pl, "etc/localtime");

    make_dir(pl, "dev", 0755);
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755") !=
        0)
        child_fail(pl, "mount /dev");
    bind_dev(pl, "null");
    bind_dev(pl, "zero");
    bind_dev(pl, "random");
    bind_dev(pl, "urandom");
    if (symlink("/proc/self/fd", "dev/fd") != 0 || symlink("/proc/self/fd/0", "dev/stdin") != 0 ||
        symlink("/proc/self/fd/1", "dev/stdout") != 0 ||
        symlink("/proc/self/fd/2", "dev/stderr") != 0)
        child_fail(pl, "/dev links");
    make_dir(pl, "dev/shm", 0755);
    if (mount("tmpfs", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, pl->tmp_opts) != 0)
        child_fail(pl, "mount /dev/shm");

    /* A fresh /proc for the new pid namespace; mounted while the host's /proc is still
     * visible, as the kernel requires of a user namespace. */
    make_dir(pl, "proc", 0555);
    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        child_fail(pl, "mount /proc");

    make_dir(pl, "work", 0755);
    if (mount("tmpfs", "work", "tmpfs", MS_NOSUID | MS_NODEV, pl->ws_opts) != 0)
        child_fail(pl, "mount /work");
    if (pl->send_ws) send_ws(pl);
    make_dir(pl, "tmp", 0755);
    if (mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, pl->tmp_opts) != 0)
        child_fail(pl, "mount /tmp");
    /* Last, so that a path under /work or /tmp lands on their tmpfs. */
    for (int i = 0; i < pl->n_binds; i++) bind_path(pl, i);

    make_dir(pl, "oldroot", 0755);
    if (syscall(SYS_pivot_root, ".", "oldroot") != 0) child_fail(pl, "pivot_root");
    if (chdir("/") != 0) child_fail(pl, "chdir /");
    if (umount2("/oldroot", MNT_DETACH) != 0) child_fail(pl, "detach the old root");
    if (rmdir("/oldroot") != 0) child_fail(pl, "rmdir /oldroot");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
        child_fail(pl, "remount / read-only");
    if (chdir(pl->cwd) != 0) child_fail(pl, pl->cwd);
}

static void add_rule(const struct plan *pl, int ruleset, const char *path, uint64_t access)
{
    struct ll_path_beneath pb = {.allowed_access = access};
    pb.parent_fd = open(path, O_PATH | O_CLOEXEC);
    if (pb.parent_fd < 0) child_fail(pl, path);
    if (syscall(SYS_landlock_add_rule, ruleset, 1 /* PATH_BENEATH */, &pb, 0) != 0)
        child_fail(pl, "landlock_add_rule");
    close(pb.parent_fd);
}

static void landlock(const struct plan *pl)
{
    int abi = pl->ctx->landlock_abi;
    if (abi <= 0) return;
    uint64_t fs = LL_FS_ABI1;
    if (abi >= 2) fs |= LL_FS_REFER;
    if (abi >= 3) fs |= LL_FS_TRUNCATE;
    if (abi >= 5) fs |= LL_FS_IOCTL_DEV;
    struct ll_ruleset_attr attr = {.handled_access_fs = fs};
    size_t size = sizeof(uint64_t);
    if (abi >= 4) {
        attr.handled_access_net = pl->network ? 0 : LL_NET_BIND_TCP | LL_NET_CONNECT;
        size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        attr.scoped = LL_SCOPE_ABSTRACT | LL_SCOPE_SIGNAL;
        size = sizeof(attr);
    }
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (rs < 0) child_fail(pl, "landlock_create_ruleset");
    uint64_t ro = LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR;
    uint64_t rw = fs & ~((1ULL << 6) /* MAKE_CHAR */ | (1ULL << 11) /* MAKE_BLOCK */);
    if (abi >= 5) rw &= ~LL_FS_IOCTL_DEV;
    add_rule(pl, rs, "/", ro);
    add_rule(pl, rs, "/dev", LL_FS_READ_FILE | LL_FS_WRITE_FILE);
    add_rule(pl, rs, "/work", rw);
    add_rule(pl, rs, "/tmp", rw);
    add_rule(pl, rs, "/dev/shm", rw);
    if (syscall(SYS_landlock_restrict_self, rs, 0) != 0) child_fail(pl, "landlock_restrict_self");
    close(rs);
}

static void lock_down(const struct plan *pl)
{
    struct rlimit zero = {0, 0}, one = {1, 1};
    if (pl->set_nproc && setrlimit(RLIMIT_NPROC, &pl->rl_nproc) != 0) child_fail(pl, "NPROC");
    if (setrlimit(RLIMIT_FSIZE, &pl->rl_fsize) != 0) child_fail(pl, "RLIMIT_FSIZE");
    if (setrlimit(RLIMIT_NOFILE, &pl->rl_nofile) != 0) child_fail(pl, "RLIMIT_NOFILE");
    if (pl->set_as && setrlimit(RLIMIT_AS, &pl->rl_as) != 0) child_fail(pl, "RLIMIT_AS");
    if (pl->set_cpu && setrlimit(RLIMIT_CPU, &pl->rl_cpu) != 0) child_fail(pl, "RLIMIT_CPU");
    /* 1, not 0: a core_pattern pipe (systemd-coredump, apport: host root) ignores a limit of 0
     * but takes 1 to mean "no dump", and a core file needs a page. The seccomp filter keeps it
     * at 1. Not dumpable would stop every kind of dump (also Linux 6.16's "@socket" pattern,
     * which ignores the limit), but exec makes the program dumpable again. */
    if (setrlimit(RLIMIT_CORE, &one) != 0) child_fail(pl, "RLIMIT_CORE");
    setrlimit(RLIMIT_MEMLOCK, &zero);
    setrlimit(RLIMIT_MSGQUEUE, &zero);

    for (int cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            child_fail(pl, "drop the capability bounding set");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        child_fail(pl, "clear ambient capabilities");
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &hdr, data) != 0) child_fail(pl, "capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(pl, "no_new_privs");
    landlock(pl);
    const struct sock_fprog *filter = pl->network ? &pl->ctx->seccomp_net : &pl->ctx->seccomp;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, filter, 0, 0) != 0) child_fail(pl, "seccomp");
}

__attribute__((noreturn)) static void child_main(struct plan *pl)
{
    char go;

    /* Into the slot's v1 cgroups, by the child itself: a task moving only itself takes no
     * global lock, where the parent writing the pid would take cgroup_threadgroup_rwsem for
     * writing and wait out an RCU grace period (about 10 ms here) whenever nobody had done
     * so just before. The daemon opened the files, so their permission is the daemon's. */
    for (int i = 0; i < SBX__CG_N; i++)
        if (pl->cg_self[i] >= 0 && write(pl->cg_self[i], "0", 1) != 1)
            child_fail(pl, "join the sandbox's cgroup");

    /* Then let go of the daemon's descriptors (its data dir lock among them): our fds above
     * everything we place, ctl kept close-on-exec, the rest closed. */
    int moved[5];
    for (int i = 0; i < pl->n_fds; i++) {
        moved[i] = fcntl(pl->fds[i], F_DUPFD_CLOEXEC, 16);
        if (moved[i] < 0) child_fail(pl, "dup");
    }
    int ctl = fcntl(pl->ctl, F_DUPFD_CLOEXEC, 16);
    if (ctl < 0) child_fail(pl, "dup ctl");
    pl->ctl = ctl;
    for (int i = 0; i < pl->n_fds; i++)
        if (dup2(moved[i], i) != i) child_fail(pl, "dup2");
    if (syscall(SYS_close_range, pl->n_fds, ctl - 1, 0) != 0 ||
        syscall(SYS_close_range, ctl + 1, ~0U, 0) != 0)
        child_fail(pl, "close_range");

    if (read(pl->ctl, &go, 1) != 1 || go != 'g') _exit(126);
    for (int i = 0; i < pl->n_binds; i++)
        if ((pl->binds[i].fd = open(pl->binds[i].path, O_PATH | O_CLOEXEC)) < 0)
            child_fail(pl, pl->binds[i].path);
    /* Raw system calls, not glibc's wrappers: those make every thread of the process change
     * ids together (a signal to each, then a wait), and this clone has copied the daemon's
     * thread list without its threads: the wrapper would wait for them forever. */
    if (pl->setgroups && syscall(SYS_setgroups, 0, NULL) != 0) child_fail(pl, "setgroups");
    if (syscall(SYS_setresgid, SBX_INNER_ID, SBX_INNER_ID, SBX_INNER_ID) != 0)
        child_fail(pl, "setresgid");
    if (syscall(SYS_setresuid, SBX_INNER_ID, SBX_INNER_ID, SBX_INNER_ID) != 0)
        child_fail(pl, "setresuid");
    /* Die with the spawning thread. Set only now: a change of uid or gid clears it. If the
     * parent is already gone, its end of ctl is closed and the poll below sees it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(pl, "PR_SET_PDEATHSIG");
    struct pollfd pfd = {.fd = pl->ctl, .events = POLLIN};
    if (poll(&pfd, 1, 0) != 0) _exit(126); /* the parent sends nothing more: EOF or error */
    /* Now in its cgroups: make them the root of what it can see. */
    if (unshare(CLONE_NEWCGROUP) != 0) child_fail(pl, "cgroup namespace");

    if (setsid() < 0) child_fail(pl, "setsid");

    build_root(pl);
    if (sethostname("sandbox", 7) != 0) child_fail(pl, "sethostname");
    lock_down(pl);
    execve(pl->argv[0], (char *const *)pl->argv, pl->envp);
    child_fail(pl, pl->argv[0]);
}

/* ---- parent side ---- */

static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    unsigned long f = 0;
    if (statvfs(path, &sv) != 0) return 0;
    if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

static int write_proc(pid_t pid, const char *file, const char *text)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = n < 0 ? -errno : 0;
    close(fd);
    return e;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* Reads the child's setup messages until exec (EOF). */
static int await_exec(struct sbx__proc *p, int ctl, struct ag_err *err)
{
    for (;;) {
        char msg[256];
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } u;
        struct iovec iov = {.iov_base = msg, .iov_len = sizeof(msg) - 1};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = u.buf,
                            .msg_controllen = sizeof(u.buf)};
        ssize_t n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        msg[n] = '\0';
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        if (c && c->cmsg_type == SCM_RIGHTS) {
            int fd;
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
            if (msg[0] == 'W' && p->ws_fd < 0)
                p->ws_fd = fd;
            else
                close(fd);
            continue;
        }
        if (msg[0] == 'E') {
            const char *e = strstr(msg, ": errno ");
            int code = e ? atoi(e + 8) : 0;
            return ag_err_set(err, AG_ESANDBOX, "sandbox setup failed at %.*s: %s",
                              (int)(e ? e - msg - 1 : n - 1), msg + 1,
                              code ? strerror(code) : "unknown error");
        }
    }
}

/* The sandbox's environment with extra's "K=V" entries added or replacing; the array is the
 * caller's to free, the strings are borrowed. */
static char **make_env(const char *const *extra)
{
    static const char *const base[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
                                       "HOME=/work",
                                       "TMPDIR=/tmp",
                                       "USER=sandbox",
                                       "LOGNAME=sandbox",
                                       "LANG=C.UTF-8",
                                       "PYTHONUNBUFFERED=1"};
    size_t nb = sizeof(base) / sizeof(base[0]), m = 0, k = 0;
    while (extra && extra[m]) m++;
    char **env = ag_calloc(nb + m + 1, sizeof(*env));
    for (size_t i = 0; i < nb; i++) {
        size_t kl = (size_t)(strchr(base[i], '=') - base[i]);
        bool replaced = false;
        for (size_t j = 0; j < m && !replaced; j++)
            replaced = strncmp(extra[j], base[i], kl) == 0 && extra[j][kl] == '=';
        if (!replaced) env[k++] = (char *)base[i];
    }
    for (size_t j = 0; j < m; j++) env[k++] = (char *)extra[j];
    return env;
}

int sbx__spawn(struct sbx_ctx *ctx, const struct sbx_limits *lim, const char *const *argv,
               const struct sbx__spawn_opts *o, struct sbx__proc *p, struct ag_err *err)
{
    static const struct sbx__spawn_opts none = {0};
    int in[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1}, cmd[2] = {-1, -1}, rep[2] = {-1, -1},
        ctl[2] = {-1, -1};
    struct plan pl;
    char **envp = NULL;
    int rc;

    if (!o) o = &none;
    bool session = o->session;

    memset(p, 0, sizeof(*p));
    p->ctx = ctx;
    p->pidfd = p->in_fd = p->out_fd = p->err_fd = p->cmd_fd = p->rep_fd = p->ws_fd = -1;
    p->started_ns = ag_now_ns();
    if ((p->slot = sbx__slot_get(ctx, err)) < 0) return p->slot;
    if ((rc = sbx__cg_prepare(&ctx->cg, p->slot, lim, err)) != 0) {
        sbx__slot_put(ctx, p->slot);
        p->slot = -1;
        return rc;
    }
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(er, O_CLOEXEC) != 0 ||
        (session && (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0)) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0) {
        rc = ag_err_set(err, AG_EIO, "cannot create the sandbox's pipes: %s", strerror(errno));
        goto fail_fds;
    }

    envp = make_env(o->env);
    memset(&pl, 0, sizeof(pl));
    pl.ctx = ctx;
    pl.argv = argv;
    pl.envp = envp;
    pl.ctl = ctl[1];
    pl.fds[0] = in[0];
    pl.fds[1] = out[1];
    pl.fds[2] = er[1];
    pl.n_fds = 3;
    if (session) {
        pl.fds[3] = cmd[0];
        pl.fds[4] = rep[1];
        pl.n_fds = 5;
    }
    pl.send_ws = session;
    pl.network = o->network;
    snprintf(pl.cwd, sizeof(pl.cwd), "%s", o->cwd ? o->cwd : "/work");
    for (int i = 0; i < o->n_binds && i < (int)(sizeof(pl.binds) / sizeof(pl.binds[0])); i++) {
        struct stat st;
        snprintf(pl.binds[i].path, sizeof(pl.binds[i].path), "%s", o->binds[i]);
        pl.binds[i].dir = stat(o->binds[i], &st) == 0 && S_ISDIR(st.st_mode);
        pl.binds[i].flags = locked_flags(o->binds[i]);
        pl.binds[i].fd = -1;
        pl.n_binds++;
    }
    pl.setgroups = ctx->root;
    long long ws = lim->workspace_bytes;
    snprintf(pl.ws_opts, sizeof(pl.ws_opts), "size=%lld,nr_inodes=%lld,mode=0755", ws,
             ws / 4096 + 64);
    snprintf(pl.tmp_opts, sizeof(pl.tmp_opts), "size=%lld,nr_inodes=%lld,mode=1777", ws,
             ws / 4096 + 64);
    snprintf(pl.passwd, sizeof(pl.passwd),
             "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
             "sandbox:x:%d:%d:sandbox:/work:/bin/sh\n"
             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
             SBX_INNER_ID, SBX_INNER_ID);
    snprintf(pl.group, sizeof(pl.group), "root:x:0:\nsandbox:x:%d:\nnogroup:x:65534:\n",
             SBX_INNER_ID);
    /* One host uid per slot makes RLIMIT_NPROC a per-sandbox backstop; with agentd's own uid
     * it would count agentd's processes too. */
    pl.set_nproc = ctx->root;
    pl.rl_nproc.rlim_cur = pl.rl_nproc.rlim_max = (rlim_t)lim->pids;
    pl.rl_fsize.rlim_cur = pl.rl_fsize.rlim_max = (rlim_t)lim->file_bytes;
    pl.rl_nofile.rlim_cur = pl.rl_nofile.rlim_max = (rlim_t)lim->open_files;
    /* Address space: the backstop when there is no memory cgroup; far above the cgroup limit
     * otherwise, so the cgroup's OOM killer (reported as "memory") fires first. */
    pl.set_as = true;
    rlim_t as = (rlim_t)lim->memory_bytes;
    if (ctx->cg.mode[SBX__CG_MEMORY] != SBX__CG_NONE) as = as * 4 + (1ull << 30);
    pl.rl_as.rlim_cur = pl.rl_as.rlim_max = as;
    if (!session && !o->long_lived && lim->timeout_ms > 0) {
        pl.set_cpu = true;
        pl.rl_cpu.rlim_cur = pl.rl_cpu.rlim_max = (rlim_t)(lim->timeout_ms / 1000 + 2);
    }

    if ((rc = sbx__cg_open_self(&ctx->cg, p->slot, pl.cg_self, err)) != 0) goto fail_fds;

    long flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                 (o->network ? 0 : CLONE_NEWNET) | SIGCHLD;
    pid_t pid = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, 0);
    if (pid == 0) child_main(&pl);
    for (int i = 0; i < SBX__CG_N; i++) close_fd(&pl.cg_self[i]);
    free(envp);
    envp = NULL;
    if (pid < 0) {
        rc = ag_err_set(err, AG_ESANDBOX, "cannot create the sandbox's namespaces: %s",
                        strerror(errno));
        goto fail_fds;
    }
    p->pid = pid;
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&er[1]);
    close_fd(&cmd[0]);
    close_fd(&rep[1]);
    close_fd(&ctl[1]);
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = er[0];
    p->cmd_fd = cmd[1];
    p->rep_fd = rep[0];

    char map[64];
    if (!ctx->root && (rc = write_proc(pid, "setgroups", "deny")) != 0) {
        rc =
            ag_err_set(err, AG_ESANDBOX, "cannot write the sandbox's setgroups: %s", strerror(-rc));
        goto fail_child;
    }
    snprintf(map, sizeof(map), "%d %u 1\n", SBX_INNER_ID, (unsigned)sbx__host_uid(ctx, p->slot));
    if ((rc = write_proc(pid, "uid_map", map)) != 0) {
        rc = ag_err_set(err, AG_ESANDBOX, "cannot write the sandbox's uid_map: %s", strerror(-rc));
        goto fail_child;
    }
    snprintf(map, sizeof(map), "%d %u 1\n", SBX_INNER_ID, (unsigned)sbx__host_gid(ctx, p->slot));
    if ((rc = write_proc(pid, "gid_map", map)) != 0) {
        rc = ag_err_set(err, AG_ESANDBOX, "cannot write the sandbox's gid_map: %s", strerror(-rc));
        goto fail_child;
    }
    if ((rc = write_proc(pid, "oom_score_adj", "1000")) != 0) {
        rc = ag_err_set(err, AG_ESANDBOX, "cannot write the sandbox's oom_score_adj: %s",
                        strerror(-rc));
        goto fail_child;
    }
    if ((rc = sbx__cg_attach(&ctx->cg, p->slot, pid, true, err)) != 0) goto fail_child;
    p->oom_before = sbx__cg_oom_kills(&ctx->cg, p->slot);
    if (write(ctl[0], "g", 1) != 1) {
        rc = ag_err_set(err, AG_ESANDBOX, "the sandbox died during setup");
        goto fail_child;
    }
    if ((rc = await_exec(p, ctl[0], err)) != 0) goto fail_child;
    close_fd(&ctl[0]);
    if (session && p->ws_fd < 0) {
        rc = ag_err_set(err, AG_ESANDBOX, "the sandbox did not hand over its workspace");
        goto fail_child;
    }
    return 0;

fail_child:
    close_fd(&ctl[0]);
    sbx__proc_release(p);
    return rc;
fail_fds:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&er[i]);
        close_fd(&cmd[i]);
        close_fd(&rep[i]);
        close_fd(&ctl[i]);
    }
    free(envp);
    sbx__slot_put(ctx, p->slot);
    p->slot = -1;
    return rc;
}

void sbx__proc_signal(struct sbx__proc *p, int sig)
{
    if (p->pid <= 0) return;
    if (p->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
    else
        kill(p->pid, sig);
}

int sbx__proc_reap(struct sbx__proc *p, int *status)
{
    if (p->pid <= 0) return 0;
    int st = 0;
    pid_t r;
    do r = waitpid(p->pid, &st, __WALL);
    while (r < 0 && errno == EINTR);
    p->pid = 0;
    p->status = st;
    if (status) *status = st;
    return r < 0 ? AG_EIO : 0;
}

int sbx__proc_try_reap(struct sbx__proc *p, int *status)
{
    if (p->pid <= 0) {
        if (status) *status = p->status;
        return 1;
    }
    int st = 0;
    pid_t r;
    do r = waitpid(p->pid, &st, __WALL | WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    p->pid = 0;
    p->status = st;
    if (status) *status = st;
    return r < 0 ? AG_EIO : 1;
}

void sbx__proc_release(struct sbx__proc *p)
{
    if (p->pid > 0) {
        sbx__proc_signal(p, SIGKILL);
        sbx__proc_reap(p, NULL);
    }
    close_fd(&p->pidfd);
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    close_fd(&p->cmd_fd);
    close_fd(&p->rep_fd);
    close_fd(&p->ws_fd);
    if (p->slot >= 0) sbx__slot_put(p->ctx, p->slot);
    p->slot = -1;
}
