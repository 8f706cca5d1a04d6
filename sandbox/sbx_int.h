/*
 * sbx_int.h - what the sandbox module's files share: the context, the cgroup layout, a spawned
 * sandbox process and the I/O helpers. Only the sandbox module's own files include it.
 */
#ifndef SBX_SBX_INT_H
#define SBX_SBX_INT_H

#include <linux/filter.h>
#include <pthread.h>
#include <stdint.h>

#include "sandbox.h"

#define SBX__MAX_SLOTS 1024 /* sandboxes alive at once per context */

/* ---- cgroups (cgroup.c) ---- */
enum { SBX__CG_MEMORY = 0, SBX__CG_PIDS, SBX__CG_CPU, SBX__CG_N };
enum { SBX__CG_NONE = 0, SBX__CG_V1 = 1, SBX__CG_V2 = 2 };

struct sbx__cgroups {
    int mode[SBX__CG_N];        /* SBX__CG_NONE / V1 / V2 per controller */
    char base[SBX__CG_N][2048]; /* this context's directory per controller ("" when none) */
};

/* Detects where each controller lives and creates this context's directories under agentd's own
 * cgroups. Never fails: a controller that cannot be used is left at SBX__CG_NONE (why in why). */
void sbx__cg_init(struct sbx__cgroups *cg, const char *tag, char *why, size_t why_n);
/* Creates (once) and configures slot's cgroups with lim. Returns 0 or a negative AG_E code. */
int sbx__cg_prepare(struct sbx__cgroups *cg, int slot, const struct sbx_limits *lim,
                    struct ag_err *err);
/* Opens slot's v1 `tasks` files (write-only, close-on-exec) for a child to join itself by
 * writing "0": fds[i] is -1 for a controller that is not on v1. Closes what it opened on error. */
int sbx__cg_open_self(struct sbx__cgroups *cg, int slot, int fds[SBX__CG_N], struct ag_err *err);
/* Moves pid into slot's cgroups (only the v2 ones with v2_only: the child joined the v1 ones). */
int sbx__cg_attach(struct sbx__cgroups *cg, int slot, pid_t pid, bool v2_only, struct ag_err *err);
/* OOM kills counted so far in slot's memory cgroup (0 without one). */
uint64_t sbx__cg_oom_kills(struct sbx__cgroups *cg, int slot);
/* Removes the slot directories and the base directories. */
void sbx__cg_release(struct sbx__cgroups *cg);

/* ---- seccomp and Landlock (policy.c) ---- */
/* Builds the seccomp allowlist with libseccomp and exports it as a BPF program (*prog owns its
 * filter array). network: for a sandbox on the host's network (TCP and UDP sockets allowed). */
int sbx__seccomp_build(struct sock_fprog *prog, bool network, struct ag_err *err);
/* Landlock ABI version of the running kernel, 0 when unavailable. */
int sbx__landlock_abi(void);

/* ---- the context (ctx.c) ---- */
struct sbx__pool;

struct sbx_ctx {
    char python[256];              /* interpreter path (inside and outside: /usr is bound as is) */
    struct sock_fprog seccomp;     /* the exported filter, loaded by every child... */
    struct sock_fprog seccomp_net; /* ...or this one, for a child on the host's network */
    int landlock_abi;              /* 0: none */
    bool mount_setattr;            /* the kernel has mount_setattr(2) (AT_RECURSIVE binds) */
    struct sbx__cgroups cg;        /* per-controller layout */
    bool root;                     /* agentd runs as root: per-slot host ids, setgroups allowed */
    int uid_range;                 /* root: this context's range of host ids (ctx.c), else -1 */
    int uid_lock_fd;               /* root: the locked file that holds uid_range, else -1 */
    uid_t uid;                     /* agentd's uid and gid (the mapping when not root) */
    gid_t gid;
    char localtime[256];  /* /etc/localtime's link target, "" when not a link */
    char links[8][2][32]; /* top-level symlinks to recreate: name, target */
    int n_links;
    pthread_mutex_t mu;            /* guards slots, n_alive, the pool, procs and closing */
    uint8_t slots[SBX__MAX_SLOTS]; /* 1 = in use */
    int n_alive;                   /* slots in use */
    struct sbx__pool *pool;        /* warm sessions, or NULL */
    struct ag_list procs;          /* long-lived processes not yet freed (proc.c) */
    int n_procs;                   /* in that list or being freed: each keeps ctx allocated */
    bool closing;                  /* sbx_ctx_free was called: the last proc frees ctx */
};

/* Releases what sbx_ctx_new made (ctx.c); once no proc needs the context any more. */
void sbx__ctx_destroy(struct sbx_ctx *ctx);
/* SIGKILLs every long-lived process of ctx (proc.c); the caller holds ctx->mu. */
void sbx__procs_kill_all(struct sbx_ctx *ctx);

int sbx__slot_get(struct sbx_ctx *ctx, struct ag_err *err);
void sbx__slot_put(struct sbx_ctx *ctx, int slot);
uid_t sbx__host_uid(const struct sbx_ctx *ctx, int slot);
gid_t sbx__host_gid(const struct sbx_ctx *ctx, int slot);

/* ---- a sandboxed process tree (spawn.c) ---- */
struct sbx__proc {
    struct sbx_ctx *ctx; /* owner */
    pid_t pid;           /* host pid of the sandbox's pid 1; 0 once reaped */
    int pidfd;           /* pidfd of pid */
    int slot;            /* cgroup and host-id slot; -1 when released */
    int in_fd;           /* write end of its stdin, -1 when closed */
    int out_fd;          /* read end of its stdout */
    int err_fd;          /* read end of its stderr */
    int cmd_fd;          /* sessions: write end of its fd 3 (driver commands), else -1 */
    int rep_fd;          /* sessions: read end of its fd 4 (driver replies), else -1 */
    int ws_fd;           /* O_PATH directory fd of its /work tmpfs, -1 unless asked for */
    uint64_t oom_before; /* memory cgroup OOM kills before the run */
    int status;          /* wait status once reaped */
    int64_t started_ns;  /* spawn time */
};

/* How to spawn, beyond argv and the limits. */
struct sbx__spawn_opts {
    bool session;             /* fds 3 and 4 are a command and a reply pipe; ws_fd returned */
    bool long_lived;          /* no RLIMIT_CPU from timeout_ms */
    bool network;             /* keep the host's network namespace (and no Landlock net rules) */
    const char *cwd;          /* working directory inside; NULL: /work */
    const char *const *env;   /* "K=V" added to the sandbox's environment, or NULL */
    const char *const *binds; /* host paths bound read-only at the same place, already checked
                                 (absolute, clean, not visible otherwise), shortest first */
    int n_binds;              /* at most SBX_MAX_PATHS + 2 (network adds resolv.conf, ssl) */
};

/* Spawns argv (argv[0] an absolute path inside the sandbox) in a new sandbox with lim. With
 * o->session set, fds 3 and 4 are a command and a reply pipe, stdout/stderr stay open for its
 * life, and ws_fd is returned. o may be NULL (a one-shot run). */
int sbx__spawn(struct sbx_ctx *ctx, const struct sbx_limits *lim, const char *const *argv,
               const struct sbx__spawn_opts *o, struct sbx__proc *p, struct ag_err *err);
/* Reaps pid 1 without waiting: 1 with *status when it had exited (or was reaped before, then
 * *status is p->status), 0 while it runs, AG_EIO on a wait error. */
int sbx__proc_try_reap(struct sbx__proc *p, int *status);
/* SIGKILL (the whole tree goes with pid 1). */
void sbx__proc_signal(struct sbx__proc *p, int sig);
/* Waits for pid 1 (blocking) and fills status like waitpid; no-op when reaped. */
int sbx__proc_reap(struct sbx__proc *p, int *status);
/* Kills, reaps, closes every fd and gives the slot back. */
void sbx__proc_release(struct sbx__proc *p);

/* ---- output capture (run.c) ---- */
struct sbx__capture {
    struct ag_buf buf; /* kept bytes */
    size_t max;        /* cap */
    bool truncated;    /* passed the cap */
};
/* Appends what fits; returns false when the cap was passed now. */
bool sbx__capture_add(struct sbx__capture *c, const char *data, size_t n);
/* Hands the text (with a marker line when truncated) to *out / *len. */
void sbx__capture_finish(struct sbx__capture *c, char **out, size_t *len);
/* Reads what is available from fd (non-blocking) into c and to the callback. Returns 1 when
 * data was read, 0 at EOF, -1 when nothing was there. Sets *over when the cap was passed. */
int sbx__pump(int fd, int stream, struct sbx__capture *c, sbx_output_fn fn, void *ud, bool *over);
/* Fills stop, exit_code and signal from a wait status and what the runner knew. */
void sbx__classify(struct sbx_result *r, int status, bool timed_out, bool over, bool oom);

/* ---- workspace files (files.c) ---- */
/* put/get beneath ws_fd (see sbx_session_put), acting as host uid/gid (the sandbox's). */
int sbx__ws_put(int ws_fd, uid_t uid, gid_t gid, const char *path, const void *data, size_t n,
                struct ag_err *err);
int sbx__ws_get(int ws_fd, uid_t uid, gid_t gid, const char *path, size_t max_bytes, char **data,
                size_t *n, struct ag_err *err);

/* ---- the Python driver (driver.c) ---- */
extern const char sbx__driver_py[];

/* ---- warm pool (session.c) ---- */
void sbx__pool_start(struct sbx_ctx *ctx, int size);
void sbx__pool_stop(struct sbx_ctx *ctx);
int sbx__pool_ready(struct sbx_ctx *ctx);

#endif
