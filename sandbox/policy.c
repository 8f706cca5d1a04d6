/*
 * policy.c - the seccomp allowlist every sandboxed process runs under, and the Landlock probe.
 *
 * The filter is an allowlist: a system call that is not named here fails with EPERM. The list
 * is what CPython 3.11, a POSIX shell and coreutils use for computing, files, pipes, threads,
 * subprocesses and local sockets. Notably absent (so denied): ptrace, process_vm_readv/writev,
 * process_madvise, pidfd_getfd, kcmp, bpf, perf_event_open, userfaultfd, the io_uring calls, the
 * keyctl family, mount/umount/pivot_root/chroot and the new mount API (fsopen, fsconfig,
 * fsmount, fspick, move_mount, open_tree, mount_setattr), unshare, setns, kexec, module
 * loading, swap, reboot, clock setting, name_to_handle_at/open_by_handle_at, capset and the
 * set*id calls, personality, seccomp itself, Landlock, quotactl, acct, syslog, vmsplice,
 * mbind/migrate_pages/move_pages.
 *
 * Some calls are allowed only with certain arguments:
 *   clone       without any CLONE_NEW* flag (threads and fork only);
 *   clone3      fails with ENOSYS: its flags live in memory a filter cannot read, and glibc
 *               falls back to clone, whose flags it can;
 *   ioctl       only terminal queries and FIO* requests (compared on all 64 bits of the
 *               request, so high garbage bits cannot smuggle TIOCSTI or TIOCLINUX through);
 *   socket      AF_UNIX always; with the host's network (sbx_proc's network) also TCP and UDP
 *               over AF_INET and AF_INET6: type SOCK_STREAM or SOCK_DGRAM (SOCK_NONBLOCK and
 *               SOCK_CLOEXEC may be or-ed in), protocol 0 or IPPROTO_TCP / IPPROTO_UDP. Raw
 *               sockets, MPTCP, UDP-Lite, SCTP, DCCP, L2TP, netlink, packet and every other
 *               family or protocol are refused before the kernel looks the protocol up, so no
 *               module is autoloaded for them. Without the network no AF_INET or AF_INET6 at
 *               all: the namespace has only a loopback device, CPython's start-up opens no
 *               socket, and asyncio and multiprocessing use AF_UNIX. socketpair AF_UNIX only;
 *   prctl       naming threads, death signals, no_new_privs and a few getters;
 *   setrlimit,  any limit but RLIMIT_CORE, which stays at 1 (spawn.c: the kernel's "no pipe
 *   prlimit64   dump" value; lowering it to 0 would let a pipe core_pattern run again); reading
 *               every limit; prlimit64 on the calling process only. Resources are compared on
 *               the 32 bits the kernel reads, one rule per allowed one;
 *   mknod(at)   FIFOs only.
 * Other architectures (i386, x32 on x86_64) are killed: the filter is for the native ABI.
 */
#include "sbx_int.h"

#include <errno.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

/* Plainly allowed, by name (names this libseccomp does not know are skipped). */
static const char *const allowed[] = {
    /* files and directories */
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "lseek",
    "getdents",
    "getdents64",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "truncate",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "fadvise64",
    "readahead",
    "flock",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "umask",
    "sendfile",
    "copy_file_range",
    "splice",
    "tee",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "memfd_create",
    /* memory */
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "msync",
    "mincore",
    /* pipes, polling, events, timers */
    "pipe",
    "pipe2",
    "select",
    "pselect6",
    "poll",
    "ppoll",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "alarm",
    "pause",
    /* signals */
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sigaltstack",
    "kill",
    "tkill",
    "tgkill",
    /* processes and threads (clone is below) */
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "set_tid_address",
    "arch_prctl",
    "rseq",
    "membarrier",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "getpriority",
    "setpriority",
    "getcpu",
    "pidfd_open",
    "pidfd_send_signal",
    /* identity and limits (read-only, plus process groups and sessions) */
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "getpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "setpgid",
    "getrlimit",
    "getrusage",
    "times",
    "sysinfo",
    "uname",
    "capget",
    "getrandom",
    /* sockets (socket and socketpair are below) */
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    /* System V IPC: private to the sandbox's IPC namespace */
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
};

/* ioctl requests a program asks of pipes, files and terminals. */
static const unsigned long allowed_ioctls[] = {
    TCGETS,    TCSETS,   TCSETSW, TCSETSF, TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP,
    TIOCSPGRP, FIONREAD, FIONBIO, FIOCLEX, FIONCLEX,   FIOASYNC,
};

static const int allowed_prctls[] = {
    PR_SET_NAME,         PR_GET_NAME,         PR_SET_PDEATHSIG, PR_GET_PDEATHSIG,
    PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS, PR_GET_DUMPABLE,  PR_CAPBSET_READ,
    PR_GET_SECCOMP,      PR_GET_KEEPCAPS,     0x53564d41, /* PR_SET_VMA (glibc names its malloc
                                                             arenas) */
};

#define NS_FLAGS                                                                                   \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

/* One argument comparison, every field set (the SCMP_A* macros leave datum_b implicit). */
static struct scmp_arg_cmp arg(unsigned n, enum scmp_compare op, scmp_datum_t a, scmp_datum_t b)
{
    struct scmp_arg_cmp c = {.arg = n, .op = op, .datum_a = a, .datum_b = b};
    return c;
}

static int add(scmp_filter_ctx f, uint32_t action, const char *name, unsigned n,
               const struct scmp_arg_cmp *args)
{
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return 0; /* unknown to this libseccomp/arch: stays denied */
    return seccomp_rule_add_array(f, action, nr, n, args);
}

/* socket: see the header comment. */
static int add_sockets(scmp_filter_ctx f, bool network)
{
    static const int families[] = {AF_INET, AF_INET6};
    static const struct {
        int type, protocol;
    } kinds[] = {
        {SOCK_STREAM, 0}, {SOCK_STREAM, IPPROTO_TCP}, {SOCK_DGRAM, 0}, {SOCK_DGRAM, IPPROTO_UDP}};
    /* The kernel reads type as an int and takes SOCK_NONBLOCK and SOCK_CLOEXEC out of it. */
    const scmp_datum_t type_mask = 0xffffffffu & ~(unsigned)(SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct scmp_arg_cmp a_unix = arg(0, SCMP_CMP_EQ, AF_UNIX, 0);
    int rc = add(f, SCMP_ACT_ALLOW, "socket", 1, &a_unix);
    for (size_t i = 0; network && i < 2; i++)
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]) && rc == 0; k++) {
            struct scmp_arg_cmp a[3] = {
                arg(0, SCMP_CMP_EQ, (scmp_datum_t)families[i], 0),
                arg(1, SCMP_CMP_MASKED_EQ, type_mask, (scmp_datum_t)kinds[k].type),
                arg(2, SCMP_CMP_EQ, (scmp_datum_t)kinds[k].protocol, 0),
            };
            rc = add(f, SCMP_ACT_ALLOW, "socket", 3, a);
        }
    return rc;
}

/* setrlimit and prlimit64: see the header comment. An "unsigned int resource" is compared on
 * its low 32 bits, as the kernel reads it: a "!= RLIMIT_CORE" on all 64 would let
 * (1 << 32) | RLIMIT_CORE through. */
static int add_rlimits(scmp_filter_ctx f)
{
    int rc = 0;
    for (int r = 0; r < RLIM_NLIMITS && rc == 0; r++) {
        if (r == RLIMIT_CORE) continue;
        struct scmp_arg_cmp a_res = arg(0, SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)r);
        rc = add(f, SCMP_ACT_ALLOW, "setrlimit", 1, &a_res);
        struct scmp_arg_cmp a_set[2] = {arg(0, SCMP_CMP_EQ, 0, 0),
                                        arg(1, SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)r)};
        if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "prlimit64", 2, a_set);
    }
    /* Reading any limit (glibc's getrlimit is prlimit64 with no new value). */
    struct scmp_arg_cmp a_get[2] = {arg(0, SCMP_CMP_EQ, 0, 0), arg(2, SCMP_CMP_EQ, 0, 0)};
    if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "prlimit64", 2, a_get);
    return rc;
}

static int build(scmp_filter_ctx f, bool network)
{
    int rc = 0;
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && rc == 0; i++)
        rc = add(f, SCMP_ACT_ALLOW, allowed[i], 0, NULL);

    /* clone: threads and processes, never new namespaces. */
    struct scmp_arg_cmp a_clone = arg(0, SCMP_CMP_MASKED_EQ, NS_FLAGS, 0);
    if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "clone", 1, &a_clone);
    if (rc == 0) rc = add(f, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);

    for (size_t i = 0; i < sizeof(allowed_ioctls) / sizeof(allowed_ioctls[0]) && rc == 0; i++) {
        struct scmp_arg_cmp a = arg(1, SCMP_CMP_EQ, allowed_ioctls[i], 0);
        rc = add(f, SCMP_ACT_ALLOW, "ioctl", 1, &a);
    }
    /* TIOCSTI and TIOCLINUX are not in the list: they get the default EPERM, like every other
     * request (libseccomp refuses a rule whose action equals the default one). */

    if (rc == 0) rc = add_sockets(f, network);
    struct scmp_arg_cmp a_unix = arg(0, SCMP_CMP_EQ, AF_UNIX, 0);
    if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "socketpair", 1, &a_unix);

    for (size_t i = 0; i < sizeof(allowed_prctls) / sizeof(allowed_prctls[0]) && rc == 0; i++) {
        struct scmp_arg_cmp a = arg(0, SCMP_CMP_EQ, (scmp_datum_t)allowed_prctls[i], 0);
        rc = add(f, SCMP_ACT_ALLOW, "prctl", 1, &a);
    }

    struct scmp_arg_cmp a_fifo1 = arg(1, SCMP_CMP_MASKED_EQ, S_IFMT, S_IFIFO);
    struct scmp_arg_cmp a_fifo2 = arg(2, SCMP_CMP_MASKED_EQ, S_IFMT, S_IFIFO);
    if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "mknod", 1, &a_fifo1);
    if (rc == 0) rc = add(f, SCMP_ACT_ALLOW, "mknodat", 1, &a_fifo2);
    return rc == 0 ? add_rlimits(f) : rc;
}

int sbx__seccomp_build(struct sock_fprog *prog, bool network, struct ag_err *err)
{
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!f) return ag_err_set(err, AG_EINTERNAL, "seccomp_init failed");
    int rc = seccomp_attr_set(f, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    /* The filter is loaded by the child itself, after its own setup: no NNP toggling here. */
    if (rc == 0) rc = build(f, network);
    if (rc != 0) {
        seccomp_release(f);
        return ag_err_set(err, AG_EINTERNAL, "cannot build the seccomp filter: %s", strerror(-rc));
    }
    /* Export the BPF through a memfd and keep it: the child loads it with one prctl, no
     * allocation between clone and exec. */
    int fd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
    if (fd < 0 || (rc = seccomp_export_bpf(f, fd)) != 0) {
        if (fd >= 0) close(fd);
        seccomp_release(f);
        return ag_err_set(err, AG_EINTERNAL, "cannot export the seccomp filter");
    }
    seccomp_release(f);
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0 || len % (off_t)sizeof(struct sock_filter) != 0 ||
        len / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        close(fd);
        return ag_err_set(err, AG_EINTERNAL, "seccomp filter of unexpected size %lld",
                          (long long)len);
    }
    struct sock_filter *insns = ag_malloc((size_t)len);
    ssize_t got = pread(fd, insns, (size_t)len, 0);
    close(fd);
    if (got != len) {
        free(insns);
        return ag_err_set(err, AG_EINTERNAL, "cannot read back the seccomp filter");
    }
    prog->filter = insns;
    prog->len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
    return 0;
}

int sbx__landlock_abi(void)
{
#ifdef SYS_landlock_create_ruleset
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, 1u /* ..._VERSION */);
    return v > 0 ? (int)v : 0;
#else
    return 0;
#endif
}
