/*
 * sandbox.h - run untrusted code: one-shot commands and persistent Python sessions, each in its
 * own set of namespaces, behind seccomp, Landlock, cgroups and rlimits (DESIGN.md §8).
 *
 * A sandbox is one process tree. Its first process is created with clone() in new user, pid,
 * mount, network, IPC, UTS and cgroup namespaces and becomes pid 1 there, so killing it kills
 * the whole tree. Before it execs the interpreter it builds a root of its own: a tmpfs with
 * read-only, nosuid, nodev binds of /usr, every mount beneath it included (and the /bin,
 * /lib... symlinks of a merged-/usr system), a handful of generated /etc files, a fresh /proc, a
 * /dev with null, zero, random and urandom only, a size-limited tmpfs workspace at /work (also
 * the home directory) and /tmp; then pivot_root, the old root detached. The network namespace
 * has only a loopback device that stays down: no network at all (a long-lived process may ask
 * for the host's; see sbx_proc).
 *
 * Why a user namespace even when agentd runs as root: it is what makes "root inside" nobody
 * outside. The sandbox runs as uid/gid 1000 inside, mapped to one unprivileged host id per
 * sandbox slot (from AGENTD_SBX_UID_BASE when agentd is root, agentd's own ids otherwise), holds
 * no capabilities in any namespace (bounding, ambient, permitted, effective and inheritable sets
 * are emptied), runs with no_new_privs, a Landlock ruleset when the kernel has one (read and
 * execute everywhere, write only in /work, /tmp and /dev/shm, no TCP, no signals or abstract
 * Unix sockets across the sandbox boundary), and a seccomp allowlist (sandbox/policy.c).
 *
 * Limits: memory, pids and CPU through a per-slot cgroup of each controller, v2 or v1 as the
 * host provides them (detected at sbx_ctx_new, never assumed); rlimits as backstops; a wall-clock
 * deadline after which the tree is SIGKILLed; stdout and stderr capped, with a marker line.
 * Sandboxed processes have oom_score_adj 1000, so the kernel's OOM killer takes them before the
 * daemon, and RLIMIT_CORE 1, which the kernel reads as "no core file and no core_pattern pipe"
 * (the seccomp filter keeps it there).
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL) against the thread that spawned it, so sandboxes
 * die with agentd: spawn from threads that live as long as the sandboxes do.
 *
 * Threads: a context is shared and thread-safe. A session may be used by one thread at a time,
 * except sbx_session_interrupt, sbx_session_kill, sbx_session_alive and sbx_session_pid, which
 * any thread may call while another runs a cell; they never wait for a process to be reaped.
 * The process ignores SIGPIPE (agentd does): a session whose driver stopped reading its
 * commands is found by the write's EPIPE.
 */
#ifndef SBX_SANDBOX_H
#define SBX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../base/base.h"

/* Host uids/gids of sandboxes when agentd runs as root: base + range * 1024 + slot, where each
 * context claims one of 1000 ranges with a lock file in AGENTD_SBX_UID_DIR (made 0700), so that
 * daemons side by side (tests start several) never share ids. Test hooks: $AGENTD_SBX_UID_DIR
 * replaces the directory, $AGENTD_SBX_UID_RANGE names the range tried first (else pid % 1000),
 * and AGENTD_SBX_NO_MOUNT_SETATTR=1 makes read-only binds use the fallback of kernels before
 * 5.12. */
#define AGENTD_SBX_UID_BASE 3200000
#define AGENTD_SBX_UID_DIR  "/run/agentd-uids"
/* Uid and gid the code runs as inside the sandbox. */
#define SBX_INNER_ID 1000

/* Why a run ended. Names (sbx_stop_name) are part of the protocol. */
enum sbx_stop {
    SBX_STOP_EXIT = 0, /* the process exited on its own ("exit") */
    SBX_STOP_SIGNAL,   /* killed by a signal it did not get from us ("signal") */
    SBX_STOP_TIMEOUT,  /* the wall-clock deadline passed ("timeout") */
    SBX_STOP_MEMORY,   /* the memory limit's OOM killer fired ("memory") */
    SBX_STOP_OUTPUT,   /* stdout or stderr passed its cap ("output_limit") */
    SBX_STOP_KILLED,   /* sbx_session_free / kill from outside ("killed") */
};
const char *sbx_stop_name(enum sbx_stop stop);

struct sbx_limits {
    int64_t memory_bytes;    /* cgroup memory limit (tmpfs pages count too) */
    int64_t pids;            /* cgroup pids limit and RLIMIT_NPROC */
    int64_t cpu_percent;     /* CPU bandwidth: 100 = one core */
    int64_t workspace_bytes; /* size of the /work tmpfs (and of /tmp) */
    int64_t timeout_ms;      /* wall clock per run or per cell; 0 = none */
    int64_t kill_grace_ms;   /* sessions: after an interrupt, time to answer before a kill */
    size_t stdout_max;       /* bytes kept per run or cell before the output cap stops it */
    size_t stderr_max;       /* same for stderr */
    int64_t file_bytes;      /* RLIMIT_FSIZE */
    int64_t open_files;      /* RLIMIT_NOFILE */
};
/* Defaults: 512 MiB, 64 pids, 100% CPU, 64 MiB workspace, 30 s, 2 s grace, 1 MiB outputs. */
void sbx_limits_default(struct sbx_limits *lim);

/* ---- the process-wide context ---- */
struct sbx_ctx;

struct sbx_ctx_opts {
    const char *python; /* interpreter to run; NULL means /usr/bin/python3 */
    const char *tag;    /* names this context's cgroup directories; NULL: "agentd-<pid>" */
    int pool_size;      /* warm sessions kept ready (default limits only); 0 = none */
};

/*
 * Probes the host (cgroup controllers v1/v2, Landlock ABI, python), builds the seccomp program
 * and creates this context's cgroup directories. Fails only when no sandbox can be made at all
 * (no user namespaces, no python); a missing cgroup controller or Landlock is reported by
 * sbx_ctx_describe and backed by rlimits.
 */
int sbx_ctx_new(const struct sbx_ctx_opts *opts, struct sbx_ctx **out, struct ag_err *err);
/* Stops the pool and SIGKILLs every sbx_proc still alive. The context (its cgroup directories
 * included) is released now, or when the last of those processes is freed. Sessions must be
 * freed before. */
void sbx_ctx_free(struct sbx_ctx *ctx);

struct sbx_info {
    const char *memory; /* "v2", "v1" or "none": where the memory limit is enforced */
    const char *pids;   /* same for pids */
    const char *cpu;    /* same for cpu */
    int landlock_abi;   /* 0 when Landlock is unavailable */
    int n_alive;        /* sandboxes (sessions and one-shot runs) alive now */
    int pool_ready;     /* warm sessions waiting */
};
void sbx_ctx_info(struct sbx_ctx *ctx, struct sbx_info *info);

/* ---- results ---- */
struct sbx_result {
    enum sbx_stop stop;  /* why it ended */
    int exit_code;       /* exit status when stop is SBX_STOP_EXIT, else -1 */
    int signal;          /* terminating signal, else 0 */
    int64_t duration_us; /* wall time of the run or cell */
    char *out;           /* stdout, NUL-terminated (owned) */
    size_t out_len;      /* bytes in out */
    char *err;           /* stderr, NUL-terminated (owned) */
    size_t err_len;      /* bytes in err */
    bool out_truncated;  /* out passed stdout_max (a marker line ends it) */
    bool err_truncated;  /* err passed stderr_max */
    /* Sessions only: */
    bool ok;             /* the cell ran without an exception */
    char *value;         /* repr() of the last expression when not None (owned), else NULL */
    char *error_name;    /* exception type name when !ok (owned), else NULL */
    char *error_message; /* str(exception) when !ok (owned), else NULL */
    char *traceback;     /* formatted traceback when !ok (owned), else NULL */
    bool session_lost;   /* the interpreter died or was killed; restart to continue */
};
void sbx_result_release(struct sbx_result *r);

/* Called with output as it arrives: stream 1 (stdout) or 2 (stderr). Runs on the calling
 * thread of sbx_exec / sbx_session_exec. */
typedef void (*sbx_output_fn)(void *ud, int stream, const char *data, size_t n);

/* ---- one-shot execution ---- */
enum sbx_lang {
    SBX_LANG_PYTHON = 0, /* code is a Python program: python3 -I -c CODE */
    SBX_LANG_SHELL,      /* code is a shell command: /bin/sh -c CODE */
};

struct sbx_exec_req {
    enum sbx_lang lang;              /* interpreter */
    const char *code;                /* program text (at most SBX_MAX_CODE_BYTES) */
    const char *stdin_data;          /* fed to stdin, then closed; NULL for an empty stdin */
    size_t stdin_len;                /* bytes of stdin_data */
    const struct sbx_limits *limits; /* NULL for the defaults */
    sbx_output_fn on_output;         /* optional streaming callback */
    void *ud;                        /* passed to on_output */
    const volatile int *cancel;      /* optional: non-zero kills the run (stop "killed") */
};
#define SBX_MAX_CODE_BYTES (120u * 1024)

/* Runs code in a fresh sandbox and waits for it. Returns 0 with *res filled (whatever the code
 * did), or a negative AG_E code when no sandbox could be made. */
int sbx_exec(struct sbx_ctx *ctx, const struct sbx_exec_req *req, struct sbx_result *res,
             struct ag_err *err);

/* ---- code-interpreter sessions ---- */
struct sbx_session;

/* Starts a session: a sandbox running the Python driver (sandbox/driver.py). Uses a warm one
 * from the pool when lim is NULL and the pool has one. */
int sbx_session_new(struct sbx_ctx *ctx, const struct sbx_limits *lim, struct sbx_session **out,
                    struct ag_err *err);
/*
 * Runs one cell. Variables, imports and files persist between cells. The value of a final
 * expression comes back in res->value; an exception in res->error_* and res->traceback. After
 * timeout_ms (0: the session's limit) the cell gets SIGINT (KeyboardInterrupt) and the session
 * lives on; if it does not answer within kill_grace_ms it is killed (res->session_lost), whatever
 * the cell writes: only the driver's answer carrying this cell's nonce ends it, and its fields
 * are cut to 64 KiB each. Returns 0 with *res filled, AG_ESANDBOX when the session was already
 * dead, AG_ETOOBIG for huge code.
 */
int sbx_session_exec(struct sbx_session *s, const char *code, int64_t timeout_ms,
                     sbx_output_fn on_output, void *ud, struct sbx_result *res, struct ag_err *err);
/* Interrupts the running cell (KeyboardInterrupt); any thread. */
int sbx_session_interrupt(struct sbx_session *s);
/* Kills the interpreter and starts a fresh one (a fresh workspace too). */
int sbx_session_restart(struct sbx_session *s, struct ag_err *err);
/* True while the interpreter runs. */
bool sbx_session_alive(struct sbx_session *s);
/* Host pid of the session's pid 1 (for tests and logs); 0 when dead. */
pid_t sbx_session_pid(struct sbx_session *s);
/* SIGKILLs the interpreter without freeing the session (any thread; a running cell returns
 * with session_lost). */
void sbx_session_kill(struct sbx_session *s);
/* Kills the session and frees it. */
void sbx_session_free(struct sbx_session *s);

/*
 * Files in the session's workspace. path is relative to /work (a leading "/work/" is accepted).
 * Resolution happens on the host beneath the workspace only: no "..", no symlinks anywhere in
 * the path, no other mounts, only regular files. put creates missing parent directories and
 * replaces the file; get reads at most max_bytes (AG_ETOOBIG beyond).
 */
int sbx_session_put(struct sbx_session *s, const char *path, const void *data, size_t n,
                    struct ag_err *err);
int sbx_session_get(struct sbx_session *s, const char *path, size_t max_bytes, char **data,
                    size_t *n, struct ag_err *err);

/* ---- long-lived processes (sandboxed MCP servers) ---- */

/*
 * A process that runs until it exits or is killed, talking to its spawner over stdin, stdout
 * and stderr: the spawner owns those three pipe ends and reads and writes them as it likes
 * (an event loop, typically). No output cap and no wall clock apply: timeout_ms, stdout_max and
 * stderr_max of the limits are not used; memory, pids, cpu_percent, workspace_bytes,
 * file_bytes and open_files are.
 *
 * What it sees: the sandbox root of every sandbox (read-only /usr and its top-level links, a
 * writable /work and /tmp, a fresh /proc, a minimal /dev and /etc), plus each of paths, a host
 * file or directory bound read-only, nosuid, nodev at the same place (not recursively: mounts
 * beneath it stay hidden). A path under /usr is visible already and is skipped, as is one
 * beneath another path of the list. Paths under /proc, /dev and /sys, and /, /work and /tmp
 * themselves, are refused. A path is opened by the sandbox's first process before it drops to
 * its sandbox ids, with the daemon's uid but no capabilities; what lies beneath is then read
 * as the sandbox's host uid, so files must be readable by others when agentd runs as root.
 *
 * Its environment is the sandbox's (PATH=/usr/local/bin:/usr/bin:/bin, HOME=/work, TMPDIR,
 * USER, LOGNAME, LANG, PYTHONUNBUFFERED) with env's entries added or replacing: nothing of
 * agentd's own environment leaks in. With network set it shares the host's network (and sees
 * the host's /etc/resolv.conf and /etc/ssl); otherwise it has none.
 *
 * Its end: pid 1 exits (which takes the whole tree with it: the pid namespace ends), or
 * sbx_proc_kill. The exit is learnt without blocking: sbx_proc_pidfd becomes readable (poll,
 * epoll, uv_poll) once pid 1 is a zombie, and sbx_proc_wait(block = false) reaps it.
 *
 * Threads: one thread at a time per process; sbx_ctx_free from another thread SIGKILLs every
 * process still alive, and the context stays allocated until the last one is freed.
 */
#define SBX_MAX_PATHS     16            /* paths bound into one process's sandbox */
#define SBX_MAX_PATH_LEN  1024          /* longest path bound or used as cwd, with its NUL */
#define SBX_MAX_ENV       64            /* env entries of one process */
#define SBX_MAX_ARG_BYTES (120u * 1024) /* argv and env together */

struct sbx_proc_req {
    const char *const *argv;         /* NULL-terminated; argv[0] an absolute path that is
                                        visible inside, or a name looked up in the sandbox's
                                        PATH */
    const char *const *env;          /* "K=V" entries, NULL-terminated, or NULL */
    const char *cwd;                 /* working directory inside (absolute, visible); NULL:
                                        /work */
    const char *const *paths;        /* host paths bound read-only, NULL-terminated, or NULL */
    const struct sbx_limits *limits; /* NULL for the defaults */
    bool network;                    /* share the host's network */
};

struct sbx_proc;

/*
 * Starts req's program in a fresh sandbox. Returns 0 with *out set and the other ends of its
 * stdin (write), stdout and stderr (read) in *stdin_fd, *stdout_fd and *stderr_fd: close-on-exec,
 * blocking, owned by the caller. Errors: AG_EINVAL (a bad request: a path refused, too many),
 * AG_ENOTFOUND (the program or a path does not exist, or the program would not be visible
 * inside), AG_ESANDBOX (the sandbox could not be made; its message names the setup stage),
 * AG_EQUOTA (too many sandboxes alive). Blocks until the program has been exec'ed (a few ms).
 */
int sbx_proc_spawn(struct sbx_ctx *ctx, const struct sbx_proc_req *req, struct sbx_proc **out,
                   int *stdin_fd, int *stdout_fd, int *stderr_fd, struct ag_err *err);
/* Host pid of its pid 1; 0 once reaped. */
pid_t sbx_proc_pid(const struct sbx_proc *p);
/* A pidfd of pid 1, readable once it has exited (-1 when the kernel has no pidfds: poll
 * sbx_proc_wait then). Owned by p: closed by sbx_proc_free. */
int sbx_proc_pidfd(const struct sbx_proc *p);
/* Sends sig to pid 1 (nothing once reaped). SIGKILL ends the whole tree; other signals reach
 * pid 1 only if it handles them (pid 1 of a namespace ignores default-action signals). */
void sbx_proc_kill(struct sbx_proc *p, int sig);
/*
 * Reaps pid 1. Returns 1 with *status (as waitpid fills it) when it has exited (also on later
 * calls), 0 while it runs (block false), or a negative AG_E code. *oom (may be NULL) says
 * whether the memory limit's OOM killer fired during the process's life.
 */
int sbx_proc_wait(struct sbx_proc *p, bool block, int *status, bool *oom);
/* SIGKILLs and reaps pid 1 if still needed (blocking: reap first to never wait), closes the
 * pidfd and frees p. The caller closes the three fds it was given. */
void sbx_proc_free(struct sbx_proc *p);

#endif
