/*
 * test_sandbox.c - the sandbox's escape suite and its session tests, against the real kernel,
 * the real /usr/bin/python3 and the real seccomp filter.
 *
 * Every escape test runs hostile code, asserts the intended failure from inside (the code
 * prints what the kernel answered) and then that the host is unaffected: the planted host file
 * is unchanged, the listener got no connection, no sandbox process outlived its run, this
 * process can still fork. Tests that need what the kernel does not offer here SKIP with the
 * precise reason (e.g. no user namespaces for this user). Last, long-lived processes
 * (sbx_proc): pipes, environment, bound paths, refused requests, kill and context teardown.
 */
#include "../sandbox/sandbox.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sbx_ctx *CTX;
static char SKIP_WHY[600]; /* set when no sandbox can be made here */
static unsigned UID_LO;    /* first host uid of CTX's range (agentd as root) */
static char HOSTDIR[64];   /* host temp dir with a planted secret */

/* Python helpers prepended to every snippet: sc() makes a raw system call and returns
 * (result, errno name). */
#define PRE                                                                                        \
    "import ctypes, errno, os, socket, sys\n"                                                      \
    "libc = ctypes.CDLL(None, use_errno=True)\n"                                                   \
    "def sc(*a):\n"                                                                                \
    "    ctypes.set_errno(0)\n"                                                                    \
    "    r = libc.syscall(*[ctypes.c_long(x) for x in a])\n"                                       \
    "    return r, errno.errorcode.get(ctypes.get_errno(), 'OK')\n"

static void limits(struct sbx_limits *l)
{
    sbx_limits_default(l);
    l->timeout_ms = 10000;
    l->memory_bytes = 256ll << 20;
}

static int run(const char *code, const struct sbx_limits *lim, struct sbx_result *r)
{
    struct sbx_limits l;
    struct ag_err err = {0};
    if (!lim) limits(&l);
    char *full = ag_asprintf("%s%s", PRE, code);
    struct sbx_exec_req req = {.lang = SBX_LANG_PYTHON, .code = full, .limits = lim ? lim : &l};
    int rc = sbx_exec(CTX, &req, r, &err);
    free(full);
    if (rc != 0) printf("  sbx_exec: %s\n", err.msg);
    return rc;
}

/* Runs code and checks its stdout contains want. */
static void expect(const char *code, const char *want)
{
    struct sbx_result r;
    if (run(code, NULL, &r) != 0) {
        CHECK(0);
        return;
    }
    CHECKF(r.out && strstr(r.out, want), "want '%s' in stdout '%s' (stderr '%.600s', stop %s)",
           want, r.out, r.err, sbx_stop_name(r.stop));
    sbx_result_release(&r);
}

/* No process of ours runs under a sandbox host uid any more. */
static bool no_sandbox_left(void)
{
    unsigned lo = UID_LO, hi = lo + 1024;
    DIR *d = opendir("/proc");
    struct dirent *de;
    bool none = true;
    while (d && (de = readdir(d)) != NULL) {
        char path[300], line[256];
        if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
        snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof(line), f)) {
            unsigned uid;
            if (sscanf(line, "Uid: %u", &uid) == 1) {
                if (geteuid() == 0 && uid >= lo && uid < hi) {
                    printf("  sandbox process %s (uid %u) still alive\n", de->d_name, uid);
                    none = false;
                }
                break;
            }
        }
        fclose(f);
    }
    if (d) closedir(d);
    return none;
}

/* The host is unaffected: we still fork and exec, and nothing of the sandbox is left. */
static void host_ok(void)
{
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    int st = -1;
    CHECK(posix_spawn(&pid, argv[0], NULL, NULL, argv, NULL) == 0);
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(no_sandbox_left());
}

#define NEED_SANDBOX()                                                                             \
    do {                                                                                           \
        if (!CTX) SKIP(SKIP_WHY);                                                                  \
    } while (0)

/* ---- basics ---- */

static void test_oneshot_python(void)
{
    NEED_SANDBOX();
    struct sbx_result r;
    CHECK(run("print(6 * 7)\nprint('err', file=sys.stderr)\nsys.exit(3)", NULL, &r) == 0);
    CHECK_STR(r.out, "42\n");
    CHECK_STR(r.err, "err\n");
    CHECK(r.stop == SBX_STOP_EXIT && r.exit_code == 3);
    CHECK(r.duration_us > 0);
    sbx_result_release(&r);
    host_ok();
}

static void test_oneshot_shell_stdin(void)
{
    NEED_SANDBOX();
    struct sbx_result r;
    struct ag_err err = {0};
    struct sbx_exec_req req = {.lang = SBX_LANG_SHELL,
                               .code = "tr a-z A-Z; id -u; hostname; pwd",
                               .stdin_data = "hello\n",
                               .stdin_len = 6};
    CHECK(sbx_exec(CTX, &req, &r, &err) == 0);
    CHECK_STR(r.out, "HELLO\n1000\nsandbox\n/work\n");
    CHECK(r.stop == SBX_STOP_EXIT && r.exit_code == 0);
    sbx_result_release(&r);
    host_ok();
}

/* ---- escape suite: files ---- */

static void test_escape_read_shadow(void)
{
    NEED_SANDBOX();
    expect("try:\n    open('/etc/shadow').read(); print('ESCAPED')\n"
           "except OSError as e: print('blocked', errno.errorcode[e.errno])",
           "blocked ENOENT");
    host_ok();
}

static void test_escape_root_listing(void)
{
    NEED_SANDBOX();
    /* Only what the sandbox provides: no /root, /home, /var, /sys, /boot, no host /tmp. */
    expect("print(sorted(n for n in os.listdir('/') if n not in ('lib32', 'lib64', 'libx32')))",
           "['bin', 'dev', 'etc', 'lib', 'proc', 'sbin', 'tmp', 'usr', 'work']");
    expect("print(sorted(os.listdir('/etc')))",
           "['group', 'hostname', 'hosts', 'ld.so.cache', 'localtime', 'nsswitch.conf', "
           "'passwd']");
    host_ok();
}

static void test_escape_host_tmp_and_data_dir(void)
{
    NEED_SANDBOX();
    /* A secret in a host directory (like agentd's data dir) is not reachable by path. */
    char *code = ag_asprintf("for p in ['%s/secret', '/root', '/var/lib', '/home']:\n"
                             "    try: os.listdir(p) if not p.endswith('secret') else open(p); "
                             "print('ESCAPED', p)\n"
                             "    except OSError as e: print('blocked', e.errno == errno.ENOENT)",
                             HOSTDIR);
    struct sbx_result r;
    CHECK(run(code, NULL, &r) == 0);
    CHECK(r.out && !strstr(r.out, "ESCAPED") && !strstr(r.out, "False"));
    CHECK(r.out && strstr(r.out, "blocked True"));
    sbx_result_release(&r);
    free(code);
    char *secret = NULL, *path = ag_asprintf("%s/secret", HOSTDIR);
    size_t n;
    CHECK(ag_read_file(path, 100, &secret, &n, NULL) == 0 && strcmp(secret, "s3cret") == 0);
    free(secret);
    free(path);
    host_ok();
}

static void test_escape_write_outside_workspace(void)
{
    NEED_SANDBOX();
    expect("res = []\n"
           "for p in ['/usr/agentd-escape', '/etc/passwd', '/agentd-escape', '/bin/agentd-x',\n"
           "          '/proc/sys/kernel/hostname']:\n"
           "    try: open(p, 'a').write('x'); res.append('ESCAPED ' + p)\n"
           "    except OSError as e: res.append(errno.errorcode[e.errno])\n"
           "open('/work/ok', 'w').write('fine'); open('/tmp/ok', 'w').write('fine')\n"
           "print(res, open('/work/ok').read())",
           "['EROFS', 'EROFS', 'EROFS', 'EROFS', 'EACCES'] fine");
    struct stat st;
    CHECK(stat("/usr/agentd-escape", &st) != 0 && stat("/agentd-escape", &st) != 0);
    host_ok();
}

static void test_escape_host_proc(void)
{
    NEED_SANDBOX();
    /* Its own pid namespace: pid 1 is the sandbox, the host's processes do not exist. */
    char *code =
        ag_asprintf("pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
                    "print('pids', pids, os.getpid())\n"
                    "print('host pid visible', os.path.exists('/proc/%d'))\n"
                    "for p in ['/proc/kcore', '/proc/sysrq-trigger', '/proc/1/root/etc/shadow']:\n"
                    "    try: open(p, 'rb').read(1); print('ESCAPED', p)\n"
                    "    except OSError as e: print('blocked', p)\n",
                    (int)getpid());
    struct sbx_result r;
    CHECK(run(code, NULL, &r) == 0);
    CHECKF(r.out && strstr(r.out, "pids [1] 1"), "%s", r.out);
    CHECK(r.out && strstr(r.out, "host pid visible False"));
    CHECK(r.out && !strstr(r.out, "ESCAPED"));
    sbx_result_release(&r);
    free(code);
    host_ok();
}

static void test_escape_devices(void)
{
    NEED_SANDBOX();
    expect("print(sorted(os.listdir('/dev')))\n"
           "for p in ['/dev/sda', '/dev/kmsg', '/dev/mem', '/dev/tty', '/dev/kvm']:\n"
           "    try: open(p, 'rb'); print('ESCAPED', p)\n"
           "    except OSError as e: pass\n"
           "try: os.mknod('/work/mem', 0o600 | 0o020000, os.makedev(1, 1)); print('ESCAPED')\n"
           "except OSError as e: print('mknod', errno.errorcode[e.errno])\n"
           "os.mkfifo('/work/fifo'); print('fifo ok')",
           "['fd', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero']\n"
           "mknod EPERM\nfifo ok");
    expect("print(open('/dev/urandom', 'rb').read(4).__len__(), open('/dev/null', 'w').write('x'))",
           "4 1");
    host_ok();
}

static void test_escape_setuid_binary(void)
{
    NEED_SANDBOX();
    /* nosuid mounts and no_new_privs: su stays uid 1000 and cannot authenticate anyone. */
    expect("import subprocess\n"
           "st = os.statvfs('/usr'); print('nosuid', bool(st.f_flag & os.ST_NOSUID))\n"
           "p = subprocess.run(['/usr/bin/su', '-c', 'id -u'], input=b'', capture_output=True)\n"
           "print('su', p.returncode != 0, b'0\\n' != p.stdout)\n"
           "print('euid', os.geteuid())",
           "nosuid True\nsu True True\neuid 1000");
    host_ok();
}

static void test_escape_capabilities(void)
{
    NEED_SANDBOX();
    expect("s = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if "
           "':\\t' in l)\n"
           "print([s[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', "
           "'NoNewPrivs', 'Seccomp')])",
           "['0000000000000000', '0000000000000000', '0000000000000000', '0000000000000000', "
           "'0000000000000000', '1', '2']");
    host_ok();
}

static void test_escape_leaked_fds(void)
{
    NEED_SANDBOX();
    /* None of the daemon's (here: the test's) descriptors reach the sandbox. */
    int fd = open("/etc/hostname", O_RDONLY); /* not close-on-exec on purpose */
    expect("print(sorted(int(f) for f in os.listdir('/proc/self/fd')))", "[0, 1, 2, 3]");
    if (fd >= 0) close(fd);
    host_ok();
}

/* ---- escape suite: network ---- */

static void test_escape_network_external(void)
{
    NEED_SANDBOX();
    /* Without the network the socket itself is refused (policy.c); the connect is a backstop. */
    expect("for a in [('1.1.1.1', 53), ('8.8.8.8', 443)]:\n"
           "    try:\n"
           "        s = socket.socket(); s.settimeout(2); s.connect(a); print('ESCAPED')\n"
           "    except OSError as e: print('blocked', errno.errorcode.get(e.errno, e))\n",
           "blocked");
    expect("try:\n"
           "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "    s.sendto(b'x', ('1.1.1.1', 53)); print('ESCAPED')\n"
           "except OSError as e: print('udp blocked')",
           "udp blocked");
    host_ok();
}

static void test_escape_host_loopback(void)
{
    NEED_SANDBOX();
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    CHECK(bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 8) == 0);
    CHECK(getsockname(ls, (struct sockaddr *)&sa, &sl) == 0);
    char *code = ag_asprintf("try:\n"
                             "    s = socket.socket(); s.settimeout(2)\n"
                             "    s.connect(('127.0.0.1', %d)); print('ESCAPED')\n"
                             "except OSError as e: print('blocked')\n",
                             ntohs(sa.sin_port));
    expect(code, "blocked");
    free(code);
    CHECK(accept(ls, NULL, NULL) < 0 && errno == EAGAIN); /* nobody reached the host listener */
    close(ls);
    host_ok();
}

static void test_escape_dns(void)
{
    NEED_SANDBOX();
    expect("try: socket.getaddrinfo('example.com', 80); print('ESCAPED')\n"
           "except OSError as e: print('dns blocked')",
           "dns blocked");
    host_ok();
}

static void test_escape_unix_sockets(void)
{
    NEED_SANDBOX();
    /* An abstract socket on the host (the kind a daemon might use) and a path socket. */
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    const char name[] = "agentd-test-abstract";
    memcpy(su.sun_path + 1, name, sizeof(name) - 1);
    CHECK(bind(ls, (struct sockaddr *)&su,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + sizeof(name) - 1)) == 0);
    CHECK(listen(ls, 8) == 0);
    expect("s = socket.socket(socket.AF_UNIX)\n"
           "try: s.connect('\\0agentd-test-abstract'); print('ESCAPED')\n"
           "except OSError as e: print('abstract blocked')\n"
           "try: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW); print('ESCAPED')\n"
           "except OSError as e: print('netlink', errno.errorcode[e.errno])\n"
           "try: socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print('ESCAPED')\n"
           "except OSError as e: print('packet', errno.errorcode[e.errno])",
           "abstract blocked\nnetlink EPERM\npacket EPERM");
    CHECK(accept(ls, NULL, NULL) < 0 && errno == EAGAIN);
    close(ls);
    host_ok();
}

/* ---- escape suite: kernel attack surface (seccomp) ---- */

static void expect_eperm(const char *what, const char *call)
{
    char *code = ag_asprintf("print('%s', %s)", what, call);
    char *want = ag_asprintf("%s (-1, 'EPERM')", what);
    expect(code, want);
    free(code);
    free(want);
    host_ok();
}

static void test_escape_ptrace(void)
{
    NEED_SANDBOX();
    expect_eperm("ptrace", "sc(101, 0, 0, 0, 0)"); /* PTRACE_TRACEME */
}

static void test_escape_ptrace_attach(void)
{
    NEED_SANDBOX();
    expect("import subprocess\n"
           "p = subprocess.Popen(['/bin/sleep', '5'])\n"
           "print('attach', sc(101, 16, p.pid, 0, 0)); p.kill()",
           "attach (-1, 'EPERM')");
    host_ok();
}

static void test_escape_process_vm_readv(void)
{
    NEED_SANDBOX();
    expect_eperm("pvr", "sc(310, 1, 0, 0, 0, 0, 0)");
    expect_eperm("pvw", "sc(311, 1, 0, 0, 0, 0, 0)");
}

static void test_escape_mount(void)
{
    NEED_SANDBOX();
    expect("print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), "
           "errno.errorcode[ctypes.get_errno()])\n"
           "print('umount', sc(166, ctypes.cast(ctypes.c_char_p(b'/proc'), ctypes.c_void_p).value, "
           "2))\n"
           "print('fsopen', sc(430, 0, 0))\n"
           "print('open_tree', sc(428, -100, 0, 0))\n"
           "print('move_mount', sc(429, -100, 0, -100, 0, 0))\n"
           "print('pivot_root', sc(155, 0, 0))\nprint('chroot', sc(161, 0))",
           "mount -1 EPERM\numount (-1, 'EPERM')\nfsopen (-1, 'EPERM')\n"
           "open_tree (-1, 'EPERM')\nmove_mount (-1, 'EPERM')\npivot_root (-1, 'EPERM')\n"
           "chroot (-1, 'EPERM')");
    host_ok();
}

static void test_escape_unshare_setns(void)
{
    NEED_SANDBOX();
    expect("print('unshare', sc(272, 0x00020000))\n" /* CLONE_NEWNS */
           "print('setns', sc(308, 0, 0))",
           "unshare (-1, 'EPERM')\nsetns (-1, 'EPERM')");
    host_ok();
}

static void test_escape_new_user_namespace(void)
{
    NEED_SANDBOX();
    /* unshare(CLONE_NEWUSER), clone(CLONE_NEWUSER|SIGCHLD), clone3 (ENOSYS: glibc falls back to
     * clone, whose flags the filter checks). */
    expect("print('unshare', sc(272, 0x10000000))\n"
           "print('clone', sc(56, 0x10000000 | 17, 0, 0, 0, 0))\n"
           "print('clone3', sc(435, 0, 0))\n"
           "import subprocess; print(subprocess.run(['/bin/true']).returncode)",
           "unshare (-1, 'EPERM')\nclone (-1, 'EPERM')\nclone3 (-1, 'ENOSYS')\n0");
    host_ok();
}

static void test_escape_keyctl(void)
{
    NEED_SANDBOX();
    expect("print('keyctl', sc(250, 0, -3, 0, 0, 0))\n"
           "print('add_key', sc(248, 0, 0, 0, 0, -3))\nprint('request_key', sc(249, 0, 0, 0, 0))",
           "keyctl (-1, 'EPERM')\nadd_key (-1, 'EPERM')\nrequest_key (-1, 'EPERM')");
    host_ok();
}

static void test_escape_bpf(void)
{
    NEED_SANDBOX();
    expect_eperm("bpf", "sc(321, 0, 0, 0)");
}

static void test_escape_perf_event_open(void)
{
    NEED_SANDBOX();
    expect_eperm("perf", "sc(298, 0, 0, -1, -1, 0)");
}

static void test_escape_userfaultfd(void)
{
    NEED_SANDBOX();
    expect_eperm("uffd", "sc(323, 0)");
}

static void test_escape_io_uring(void)
{
    NEED_SANDBOX();
    expect("print('setup', sc(425, 8, 0))\nprint('enter', sc(426, 0, 0, 0, 0, 0, 0))\n"
           "print('register', sc(427, 0, 0, 0, 0))",
           "setup (-1, 'EPERM')\nenter (-1, 'EPERM')\nregister (-1, 'EPERM')");
    host_ok();
}

static void test_escape_tiocsti(void)
{
    NEED_SANDBOX();
    /* TIOCSTI (0x5412) and TIOCLINUX (0x541C), also with garbage in the upper bits. */
    expect("c = ctypes.c_char(b'x')\n"
           "print('sti', sc(16, 0, 0x5412, ctypes.addressof(c)))\n"
           "print('sti_hi', sc(16, 0, 0x100005412, ctypes.addressof(c)))\n"
           "print('linux', sc(16, 0, 0x541C, ctypes.addressof(c)))",
           "sti (-1, 'EPERM')\nsti_hi (-1, 'EPERM')\nlinux (-1, 'EPERM')");
    host_ok();
}

static void test_escape_modules_kexec(void)
{
    NEED_SANDBOX();
    expect("print([sc(n, 0, 0, 0)[1] for n in (175, 313, 176, 246, 320, 169, 167, 304)])",
           "['EPERM', 'EPERM', 'EPERM', 'EPERM', 'EPERM', 'EPERM', 'EPERM', 'EPERM']");
    host_ok();
}

static void test_escape_x32_abi(void)
{
    NEED_SANDBOX();
    /* getpid through the x32 ABI: not the filter's architecture, so the process is killed. */
    struct sbx_result r;
    CHECK(run("sc(0x40000000 | 39); print('ESCAPED')", NULL, &r) == 0);
    CHECKF(r.stop == SBX_STOP_SIGNAL && r.signal == SIGSYS, "stop %s signal %d",
           sbx_stop_name(r.stop), r.signal);
    CHECK(r.out && !strstr(r.out, "ESCAPED"));
    sbx_result_release(&r);
    host_ok();
}

/* ---- escape suite: resources ---- */

static void test_escape_fork_bomb(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.pids = 32;
    l.timeout_ms = 3000;
    struct sbx_result r;
    CHECK(run("n = 0\n"
              "while True:\n"
              "    try: os.fork(); n += 1\n"
              "    except OSError as e:\n"
              "        if os.getpid() == 1: print('bomb stopped', errno.errorcode[e.errno]); "
              "sys.stdout.flush(); os._exit(0)\n",
              &l, &r) == 0);
    CHECKF(r.out && strstr(r.out, "bomb stopped EAGAIN"), "out '%s' err '%.300s' stop %s", r.out,
           r.err, sbx_stop_name(r.stop));
    CHECK(r.duration_us < 8000000);
    sbx_result_release(&r);
    host_ok();
}

static void test_escape_memory_bomb(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.memory_bytes = 64ll << 20;
    struct sbx_info in;
    sbx_ctx_info(CTX, &in);
    struct sbx_result r;
    CHECK(run("b = []\nwhile True: b.append(bytearray(16 << 20))", &l, &r) == 0);
    if (strcmp(in.memory, "none") == 0)
        CHECK(r.stop == SBX_STOP_EXIT && r.err && strstr(r.err, "MemoryError"));
    else
        CHECKF(r.stop == SBX_STOP_MEMORY, "stop %s signal %d err '%.200s'", sbx_stop_name(r.stop),
               r.signal, r.err);
    sbx_result_release(&r);
    host_ok();
}

static void test_escape_fill_disk(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.workspace_bytes = 8ll << 20;
    struct sbx_result r;
    CHECK(run("f = open('/work/big', 'wb')\n"
              "try:\n    while True: f.write(b'x' * 65536); f.flush()\n"
              "except OSError as e: print('full', errno.errorcode[e.errno], "
              "os.path.getsize('/work/big') <= 8 << 20)",
              &l, &r) == 0);
    CHECKF(r.out && strstr(r.out, "full ENOSPC True"), "out '%s' err '%.300s'", r.out, r.err);
    sbx_result_release(&r);
    host_ok();
}

static void test_escape_cpu_burn(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.timeout_ms = 1500;
    l.cpu_percent = 50;
    struct sbx_result r;
    int64_t t0 = ag_now_ms();
    CHECK(run("import multiprocessing as m\n"
              "def burn():\n    while True: pass\n"
              "ps = [m.Process(target=burn) for _ in range(4)]\n"
              "[p.start() for p in ps]\nburn()",
              &l, &r) == 0);
    int64_t took = ag_now_ms() - t0;
    CHECKF(r.stop == SBX_STOP_TIMEOUT, "stop %s err '%.300s'", sbx_stop_name(r.stop), r.err);
    CHECKF(took < 4000, "took %lld ms", (long long)took); /* the whole tree died on time */
    sbx_result_release(&r);
    host_ok();
}

static void test_escape_output_flood(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.stdout_max = 100000;
    struct sbx_result r;
    CHECK(run("while True: sys.stdout.write('A' * 4096)", &l, &r) == 0);
    CHECK(r.stop == SBX_STOP_OUTPUT && r.out_truncated);
    CHECK(r.out_len < 100000 + 200 && strstr(r.out, "[agentd: output truncated"));
    CHECK(r.duration_us < 5000000);
    sbx_result_release(&r);
    host_ok();
}

static void test_escape_signal_daemon(void)
{
    NEED_SANDBOX();
    char *code = ag_asprintf("try: os.kill(%d, 9); print('ESCAPED')\n"
                             "except OSError as e: print('kill', errno.errorcode[e.errno])\n"
                             "try: os.kill(-1, 9)\nexcept OSError: pass\nprint('still here')",
                             (int)getpid());
    expect(code, "kill ESRCH\nstill here");
    free(code);
    host_ok(); /* we are alive to check */
}

static void test_escape_hostname(void)
{
    NEED_SANDBOX();
    expect("print(socket.gethostname(), sc(170, 0, 0))", "sandbox (-1, 'EPERM')");
    host_ok();
}

/* ---- sessions ---- */

static struct sbx_session *new_session(const struct sbx_limits *lim)
{
    struct sbx_session *s = NULL;
    struct ag_err err = {0};
    if (sbx_session_new(CTX, lim, &s, &err) != 0) printf("  session: %s\n", err.msg);
    return s;
}

static int cell(struct sbx_session *s, const char *code, int64_t timeout_ms, struct sbx_result *r)
{
    struct ag_err err = {0};
    int rc = sbx_session_exec(s, code, timeout_ms, NULL, NULL, r, &err);
    if (rc != 0) printf("  cell: %s\n", err.msg);
    return rc;
}

static void test_session_persists(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    CHECK(s != NULL);
    if (!s) return;
    struct sbx_result r;
    CHECK(cell(s, "import math\nx = 41", 0, &r) == 0 && r.ok && !r.value);
    sbx_result_release(&r);
    CHECK(cell(s, "print('x is', x)\nx + 1", 0, &r) == 0 && r.ok);
    CHECK_STR(r.value, "42");
    CHECK_STR(r.out, "x is 41\n");
    sbx_result_release(&r);
    CHECK(cell(s, "math.sqrt(16), _", 0, &r) == 0);
    CHECK_STR(r.value, "(4.0, 42)");
    sbx_result_release(&r);
    CHECK(cell(s, "def f():\n    return 1 / 0\nf()", 0, &r) == 0);
    CHECK(!r.ok && !r.session_lost);
    CHECK_STR(r.error_name, "ZeroDivisionError");
    CHECK_STR(r.error_message, "division by zero");
    CHECK(r.traceback && strstr(r.traceback, "line 2, in f") && !strstr(r.traceback, "driver"));
    sbx_result_release(&r);
    CHECK(cell(s, "x", 0, &r) == 0);
    CHECK_STR(r.value, "41");
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

static void test_session_timeout_keeps_session(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    if (!s) {
        CHECK(0);
        return;
    }
    struct sbx_result r;
    CHECK(cell(s, "y = 5", 0, &r) == 0);
    sbx_result_release(&r);
    int64_t t0 = ag_now_ms();
    CHECK(cell(s, "while True: pass", 500, &r) == 0);
    CHECK(ag_now_ms() - t0 < 2000);
    CHECK(r.stop == SBX_STOP_TIMEOUT && !r.ok && !r.session_lost);
    CHECK_STR(r.error_name, "KeyboardInterrupt");
    sbx_result_release(&r);
    CHECK(cell(s, "y * 2", 0, &r) == 0 && r.ok);
    CHECK_STR(r.value, "10");
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

static void test_session_second_deadline_kills(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.kill_grace_ms = 300;
    struct sbx_session *s = new_session(&l);
    if (!s) {
        CHECK(0);
        return;
    }
    struct sbx_result r;
    CHECK(cell(s,
               "import time\nwhile True:\n    try: time.sleep(10)\n"
               "    except KeyboardInterrupt: pass",
               300, &r) == 0);
    CHECK(r.stop == SBX_STOP_TIMEOUT && r.session_lost && !sbx_session_alive(s));
    sbx_result_release(&r);
    struct ag_err err = {0};
    CHECK(sbx_session_exec(s, "1", 0, NULL, NULL, &r, &err) == AG_ESANDBOX);
    CHECK(sbx_session_restart(s, &err) == 0);
    CHECK(cell(s, "1 + 1", 0, &r) == 0);
    CHECK_STR(r.value, "2");
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

/* Python for a cell that writes forged reply frames (well formed, 1 MiB long, torn, a hello) to
 * every fd it holds and to every one it can reopen through /proc/self/fd: the reply pipe, the
 * command pipe, stdout and stderr. */
#define FORGE                                                                                      \
    "import os, struct\n"                                                                          \
    "def fr(body): return struct.pack('>I', len(body)) + body\n"                                   \
    "def fld(tag, text): return tag + struct.pack('>I', len(text)) + text\n"                       \
    "frames = [fr(b'R' + fld(b'v', b'forged')), fr(b'H'), b'\\x00\\x00\\x00\\x09R',\n"             \
    "          fr(b'R' + fld(b'v', b'F' * (1 << 20))), fr(b'R' + fld(b'v', b'forged2'))]\n"        \
    "def forge():\n"                                                                               \
    "    for fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"                         \
    "        for reopen in (False, True):\n"                                                       \
    "            try:\n"                                                                           \
    "                w = os.open('/proc/self/fd/%d' % fd, os.O_WRONLY | os.O_NONBLOCK) \\\n"       \
    "                    if reopen else fd\n"                                                      \
    "            except OSError:\n"                                                                \
    "                continue\n"                                                                   \
    "            for f in frames:\n"                                                               \
    "                try: os.write(w, f)\n"                                                        \
    "                except OSError: pass\n"                                                       \
    "            if reopen: os.close(w)\n"

/* Issue 22: what a cell writes cannot answer for it or for the next cell, the value cap holds,
 * and the deadlines are the daemon's whatever the cell wrote. */
static void test_escape_forged_reply(void)
{
    NEED_SANDBOX();
    struct sbx_limits l;
    limits(&l);
    l.stdout_max = l.stderr_max = 16u << 20; /* the forged frames go to stdout and stderr too */
    l.kill_grace_ms = 500;
    struct sbx_session *s = new_session(&l);
    if (!s) {
        CHECK(0);
        return;
    }
    struct sbx_result r;
    CHECK(cell(s, FORGE "forge()\n'real'", 10000, &r) == 0);
    CHECK(r.ok && !r.session_lost);
    CHECK_STR(r.value, "'real'");
    sbx_result_release(&r);
    CHECK(cell(s, "6 * 7", 10000, &r) == 0);
    CHECK_STR(r.value, "42");
    sbx_result_release(&r);
    CHECK(cell(s, "forge()\n'x' * (1 << 20)", 10000, &r) == 0);
    CHECKF(r.value && strlen(r.value) <= 64 * 1024 && strstr(r.value, "[truncated]"),
           "a %zu-byte value", r.value ? strlen(r.value) : 0);
    sbx_result_release(&r);
    /* Forged frames, then a busy loop: interrupted at its timeout. */
    int64_t t0 = ag_now_ms();
    CHECK(cell(s, "forge()\nwhile True: pass", 1000, &r) == 0);
    int64_t ms = ag_now_ms() - t0;
    CHECKF(ms < 2000, "a cell with a 1000 ms timeout took %lld ms", (long long)ms);
    CHECK(r.stop == SBX_STOP_TIMEOUT && !r.session_lost);
    CHECK_STR(r.error_name, "KeyboardInterrupt");
    sbx_result_release(&r);
    CHECK(cell(s, "'after'", 10000, &r) == 0);
    CHECK_STR(r.value, "'after'");
    sbx_result_release(&r);
    /* One that swallows the interrupt: killed at the second deadline. */
    t0 = ag_now_ms();
    CHECK(cell(s,
               "import time\nforge()\nwhile True:\n    try: time.sleep(10)\n"
               "    except KeyboardInterrupt: pass",
               1000, &r) == 0);
    ms = ag_now_ms() - t0;
    CHECKF(ms < 2500, "a cell with a 1000 ms timeout and 500 ms grace took %lld ms", (long long)ms);
    CHECKF(r.stop == SBX_STOP_TIMEOUT && r.session_lost, "stop %s, session_lost %d",
           sbx_stop_name(r.stop), r.session_lost);
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

static void test_session_crash_and_restart(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    if (!s) {
        CHECK(0);
        return;
    }
    struct sbx_result r;
    CHECK(cell(s, "z = 1\nimport ctypes\nctypes.string_at(0)", 0, &r) == 0);
    CHECK(r.session_lost && !r.ok && r.error_name);
    sbx_result_release(&r);
    CHECK(!sbx_session_alive(s));
    struct ag_err err = {0};
    CHECK(sbx_session_restart(s, &err) == 0);
    CHECK(cell(s, "'z' in dir()", 0, &r) == 0);
    CHECK_STR(r.value, "False"); /* a fresh interpreter */
    sbx_result_release(&r);
    CHECK(cell(s, "import os; os._exit(7)", 0, &r) == 0);
    CHECK(r.session_lost && r.stop == SBX_STOP_EXIT && r.exit_code == 7);
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

static void test_session_files(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    if (!s) {
        CHECK(0);
        return;
    }
    struct ag_err err = {0};
    struct sbx_result r;
    CHECK(sbx_session_put(s, "data/in.csv", "a,b\n1,2\n", 8, &err) == 0);
    CHECK(cell(s,
               "import csv\nrows = list(csv.reader(open('data/in.csv')))\n"
               "open('/work/data/out.txt', 'w').write(str(len(rows)))\nrows",
               0, &r) == 0);
    CHECK_STR(r.value, "[['a', 'b'], ['1', '2']]");
    sbx_result_release(&r);
    char *data = NULL;
    size_t n = 0;
    CHECK(sbx_session_get(s, "/work/data/out.txt", 1024, &data, &n, &err) == 0);
    CHECK(data && n == 1 && data[0] == '2');
    free(data);
    CHECK(sbx_session_get(s, "nope", 1024, &data, &n, &err) == AG_ENOTFOUND);
    /* Replacing a file the code made; the code can then modify what the host wrote. */
    CHECK(sbx_session_put(s, "data/in.csv", "x", 1, &err) == 0);
    CHECK(cell(s, "open('data/in.csv', 'a').write('y'); open('data/in.csv').read()", 0, &r) == 0);
    CHECK_STR(r.value, "'xy'");
    sbx_result_release(&r);
    sbx_session_free(s);
    host_ok();
}

static void test_escape_symlinks_files_put_get(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    if (!s) {
        CHECK(0);
        return;
    }
    struct sbx_result r;
    char *code = ag_asprintf("import os\n"
                             "os.symlink('/etc/passwd', 'link')\nos.symlink('/', 'root')\n"
                             "os.symlink('%s/secret', 'hostsecret')\n"
                             "os.mkdir('d'); os.symlink('..', 'd/up')\n"
                             "os.mkfifo('fifo')\nos.mkdir('sub'); os.symlink('/tmp', 'sub/t')",
                             HOSTDIR);
    CHECK(cell(s, code, 0, &r) == 0 && r.ok);
    free(code);
    sbx_result_release(&r);
    struct ag_err err = {0};
    char *data = NULL;
    size_t n;
    const char *bad_get[] = {"link",          "root/etc/shadow", "hostsecret", "d/up/link",
                             "../etc/passwd", "/etc/passwd",     "fifo",       "sub/t/x",
                             "./link",        "d/../link"};
    for (size_t i = 0; i < sizeof(bad_get) / sizeof(bad_get[0]); i++) {
        int rc = sbx_session_get(s, bad_get[i], 1 << 20, &data, &n, &err);
        CHECKF(rc != 0, "get %s succeeded", bad_get[i]);
        if (rc == 0) free(data);
    }
    const char *bad_put[] = {"link", "root/tmp/x", "hostsecret", "d/up/x", "sub/t/x", "../x"};
    for (size_t i = 0; i < sizeof(bad_put) / sizeof(bad_put[0]); i++)
        CHECKF(sbx_session_put(s, bad_put[i], "pwned", 5, &err) != 0, "put %s succeeded",
               bad_put[i]);
    /* The host files behind those links are untouched. */
    char *secret = NULL, *path = ag_asprintf("%s/secret", HOSTDIR);
    CHECK(ag_read_file(path, 100, &secret, &n, NULL) == 0 && strcmp(secret, "s3cret") == 0);
    free(secret);
    free(path);
    char *pw = NULL;
    CHECK(ag_read_file("/etc/passwd", 1 << 20, &pw, &n, NULL) == 0 && !strstr(pw, "pwned"));
    free(pw);
    sbx_session_free(s);
    host_ok();
}

static void test_escape_other_sandbox_workspace(void)
{
    NEED_SANDBOX();
    struct sbx_session *a = new_session(NULL), *b = new_session(NULL);
    if (!a || !b) {
        CHECK(0);
        sbx_session_free(a);
        sbx_session_free(b);
        return;
    }
    struct sbx_result r;
    CHECK(cell(a, "open('/work/a-secret', 'w').write('A'); os.getpid() if False else 1", 0, &r) ==
          0);
    sbx_result_release(&r);
    char *code = ag_asprintf("import os\nfound = []\n"
                             "for root in ['/work', '/tmp', '/proc/%d/root/work']:\n"
                             "    try: found += [n for n in os.listdir(root) if 'secret' in n]\n"
                             "    except OSError: pass\n"
                             "found",
                             (int)sbx_session_pid(a));
    CHECK(cell(b, code, 0, &r) == 0);
    free(code);
    CHECK_STR(r.value, "[]");
    sbx_result_release(&r);
    sbx_session_free(a);
    sbx_session_free(b);
    host_ok();
}

struct chunks {
    int n;             /* callbacks */
    int64_t first_ms;  /* when the first chunk came */
    struct ag_buf all; /* everything streamed */
};

static void on_chunk(void *ud, int stream, const char *data, size_t n)
{
    struct chunks *c = ud;
    if (c->n++ == 0) c->first_ms = ag_now_ms();
    if (stream == 1) ag_buf_append(&c->all, data, n);
}

static void test_session_output_streams(void)
{
    NEED_SANDBOX();
    struct sbx_session *s = new_session(NULL);
    if (!s) {
        CHECK(0);
        return;
    }
    struct chunks c = {0, 0, {0}};
    struct sbx_result r;
    struct ag_err err = {0};
    int64_t t0 = ag_now_ms();
    CHECK(sbx_session_exec(s, "import time\nfor i in range(3): print(i); time.sleep(0.3)", 0,
                           on_chunk, &c, &r, &err) == 0);
    int64_t end = ag_now_ms();
    CHECK(c.n >= 3);
    CHECK(c.first_ms - t0 < end - t0 - 400); /* the first line came well before the end */
    CHECK(c.all.data && strcmp(c.all.data, "0\n1\n2\n") == 0);
    CHECK_STR(r.out, "0\n1\n2\n");
    ag_buf_release(&c.all);
    sbx_result_release(&r);
    sbx_session_free(s);
}

/* The spawning side dies (kill -9): its sandboxes die with it. */
static void test_no_orphans(void)
{
    NEED_SANDBOX();
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t child = fork();
    if (child == 0) {
        struct sbx_ctx *c2;
        struct sbx_session *s;
        struct ag_err err;
        if (sbx_ctx_new(NULL, &c2, &err) != 0 || sbx_session_new(c2, NULL, &s, &err) != 0) _exit(1);
        pid_t sp = sbx_session_pid(s);
        (void)!write(pfd[1], &sp, sizeof(sp));
        /* Busy: the driver is not reading its command pipe, so only the death signal and
         * the pid namespace can end it. */
        struct sbx_result r;
        sbx_session_exec(s, "while True: pass", 600000, NULL, NULL, &r, &err);
        _exit(0);
    }
    pid_t sp = 0;
    CHECK(read(pfd[0], &sp, sizeof(sp)) == sizeof(sp) && sp > 0);
    close(pfd[0]);
    close(pfd[1]);
    CHECK(kill(sp, 0) == 0);
    usleep(200000); /* the cell is running */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        gone = kill(sp, 0) != 0;
        if (!gone) usleep(10000);
    }
    CHECK(gone);
}

static void test_pool(void)
{
    NEED_SANDBOX();
    struct sbx_ctx *c2;
    struct ag_err err = {0};
    struct sbx_ctx_opts o = {.pool_size = 2, .tag = "agentd-test-pool"};
    CHECK(sbx_ctx_new(&o, &c2, &err) == 0);
    struct sbx_info in;
    for (int i = 0; i < 300; i++) {
        sbx_ctx_info(c2, &in);
        if (in.pool_ready == 2) break;
        usleep(10000);
    }
    CHECK(in.pool_ready == 2);
    struct sbx_session *s = NULL;
    int64_t t0 = ag_now_ns();
    CHECK(sbx_session_new(c2, NULL, &s, &err) == 0);
    int64_t took_us = (ag_now_ns() - t0) / 1000;
    CHECKF(took_us < 50000, "took %lld us", (long long)took_us);
    struct sbx_result r;
    CHECK(s && sbx_session_exec(s, "6 * 7", 0, NULL, NULL, &r, &err) == 0);
    CHECK_STR(r.value, "42");
    sbx_result_release(&r);
    sbx_session_free(s);
    sbx_ctx_free(c2);
    host_ok();
}

/* ---- long-lived processes (sbx_proc) ---- */

/* Reads fd to its end (or 10 s) into buf; the length. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    int64_t end = ag_now_ms() + 10000;
    while (n + 1 < cap && ag_now_ms() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0) continue;
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    return n;
}

/* Waits (poll on the pidfd, never in waitpid) for p's exit; its wait status, or -1. */
static int exit_of(struct sbx_proc *p)
{
    struct pollfd pfd = {.fd = sbx_proc_pidfd(p), .events = POLLIN};
    CHECK(pfd.fd >= 0 && poll(&pfd, 1, 10000) == 1);
    int st = -1;
    CHECK(sbx_proc_wait(p, false, &st, NULL) == 1);
    return st;
}

static void test_proc_pipes_env_exit(void)
{
    NEED_SANDBOX();
    const char *argv[] = {"sh", "-c", "read x; echo \"got $x $FOO $HOME $PWD\"; echo e >&2; exit 4",
                          NULL};
    const char *env[] = {"FOO=bar", "HOME=/tmp", NULL};
    struct sbx_proc_req req = {.argv = argv, .env = env};
    struct sbx_proc *p = NULL;
    int in = -1, out = -1, er = -1;
    struct ag_err err = {0};
    CHECKF(sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    if (!p) return;
    CHECK(sbx_proc_pid(p) > 0);
    CHECK(sbx_proc_wait(p, false, NULL, NULL) == 0); /* waiting for its line */
    CHECK(write(in, "hi\n", 3) == 3);
    char buf[256];
    read_all(out, buf, sizeof(buf));
    CHECK_STR(buf, "got hi bar /tmp /work\n");
    read_all(er, buf, sizeof(buf));
    CHECK_STR(buf, "e\n");
    int st = exit_of(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 4);
    CHECK(sbx_proc_pid(p) == 0);
    close(in);
    close(out);
    close(er);
    sbx_proc_free(p);
    host_ok();
}

/* Bound host paths are there, read-only; the rest of the host is not. */
static void test_proc_binds(void)
{
    NEED_SANDBOX();
    char *script = ag_asprintf("cat secret; echo; pwd; (echo x > secret2) 2>/dev/null || echo "
                               "ro; ls %s/../ | grep -c agentd-sbx-test- ; cat /etc/shadow "
                               "2>/dev/null || echo noshadow",
                               HOSTDIR);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    const char *paths[] = {HOSTDIR, NULL};
    struct sbx_proc_req req = {.argv = argv, .cwd = HOSTDIR, .paths = paths};
    struct sbx_proc *p = NULL;
    int in = -1, out = -1, er = -1;
    struct ag_err err = {0};
    /* What is bound is read with the sandbox's host uid: mkdtemp's 0700 would shut it out. */
    chmod(HOSTDIR, 0755);
    CHECKF(sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    free(script);
    if (!p) {
        chmod(HOSTDIR, 0700);
        return;
    }
    close(in);
    char buf[512], want[256];
    read_all(out, buf, sizeof(buf));
    /* The sandbox's /tmp is its own: only the bound directory shows in it. */
    snprintf(want, sizeof(want), "s3cret\n%s\nro\n1\nnoshadow\n", HOSTDIR);
    CHECK_STR(buf, want);
    CHECK(WIFEXITED(exit_of(p)));
    chmod(HOSTDIR, 0700);
    close(out);
    close(er);
    sbx_proc_free(p);
    CHECK(access(HOSTDIR, F_OK) == 0);
    host_ok();
}

static void test_proc_refused(void)
{
    NEED_SANDBOX();
    struct {
        const char *prog, *cwd, *path;
        int code;
        const char *msg;
    } cases[] = {
        {"no-such-program", NULL, NULL, AG_ENOTFOUND, "not found in its PATH"},
        {"/sbin/../bin/sh", NULL, NULL, AG_EINVAL, "give an absolute path"},
        {HOSTDIR, NULL, NULL, AG_ENOTFOUND, "it is not visible there"},
        {"sh", "/srv", NULL, AG_EINVAL, "working directory '/srv' is not visible"},
        {"sh", NULL, "/tmp", AG_EINVAL, "sandbox path '/tmp': cannot be bound"},
        {"sh", NULL, "/proc/self", AG_EINVAL, "/proc cannot be bound"},
        {"sh", NULL, "/work/./x", AG_EINVAL, "not an absolute path without '.'"},
        {"sh", NULL, "/nonexistent", AG_ENOTFOUND, "No such file or directory"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *argv[] = {cases[i].prog, NULL};
        const char *paths[] = {cases[i].path, NULL};
        struct sbx_proc_req req = {.argv = argv, .cwd = cases[i].cwd, .paths = paths};
        struct sbx_proc *p = NULL;
        int in, out, er;
        struct ag_err err = {0};
        int rc = sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err);
        CHECKF(rc == cases[i].code && !p && strstr(err.msg, cases[i].msg), "case %zu: %d %s", i, rc,
               err.msg);
    }
    /* A path under /usr is visible already: skipped, not refused. */
    const char *argv[] = {"true", NULL};
    const char *paths[] = {"/usr/share", NULL};
    struct sbx_proc_req req = {.argv = argv, .paths = paths};
    struct sbx_proc *p = NULL;
    int in = -1, out = -1, er = -1;
    struct ag_err err = {0};
    CHECKF(sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    if (!p) return;
    CHECK(WIFEXITED(exit_of(p)));
    close(in);
    close(out);
    close(er);
    sbx_proc_free(p);
}

/* A kill ends the whole tree; so does freeing the context under a live process. */
static void test_proc_kill_and_ctx_free(void)
{
    NEED_SANDBOX();
    const char *argv[] = {"sh", "-c", "sleep 1000 & sleep 1000", NULL};
    struct sbx_proc_req req = {.argv = argv};
    struct sbx_proc *p = NULL;
    int in = -1, out = -1, er = -1;
    struct ag_err err = {0};
    CHECKF(sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    if (!p) return;
    sbx_proc_kill(p, SIGTERM); /* pid 1 without a handler: ignored */
    usleep(100 * 1000);
    CHECK(sbx_proc_wait(p, false, NULL, NULL) == 0);
    sbx_proc_kill(p, SIGKILL);
    int st = exit_of(p);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(in);
    close(out);
    close(er);
    sbx_proc_free(p);
    host_ok();

    struct sbx_ctx *c2 = NULL;
    struct sbx_ctx_opts o = {.tag = "agentd-test-proc"};
    CHECKF(sbx_ctx_new(&o, &c2, &err) == 0, "%s", err.msg);
    if (!c2) return;
    CHECKF(sbx_proc_spawn(c2, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    sbx_ctx_free(c2); /* kills p; c2 lives until p is freed */
    if (!p) return;
    st = exit_of(p);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(in);
    close(out);
    close(er);
    sbx_proc_free(p);
    host_ok();
}

/* ---- escape suite: what a sandbox may ask of the kernel and the host ---- */

/* Socket kinds a sandbox does not need, each a protocol module the kernel could load. */
#define BAD_SOCKETS                                                                                \
    "cases = [('mptcp', 2, 1, 262), ('udplite', 2, 2, 136), ('sctp', 2, 5, 132),\n"                \
    "         ('dccp6', 10, 6, 0), ('raw', 2, 3, 1), ('raw6', 10, 3, 58), ('icmp', 2, 2, 1),\n"    \
    "         ('tcp_udp', 2, 1, 17), ('packet', 17, 3, 0)]\n"                                      \
    "for name, fam, typ, proto in cases:\n"                                                        \
    "    try: socket.socket(fam, typ, proto).close(); print(name, 'OPEN')\n"                       \
    "    except OSError as e: print(name, errno.errorcode.get(e.errno, e.errno))\n"
#define BAD_SOCKETS_REFUSED                                                                        \
    "mptcp EPERM\nudplite EPERM\nsctp EPERM\ndccp6 EPERM\nraw EPERM\nraw6 EPERM\nicmp EPERM\n"     \
    "tcp_udp EPERM\npacket EPERM\n"

/* Without the network: only Unix sockets, and Python starts and runs asyncio as usual. */
static void test_escape_socket_kinds(void)
{
    NEED_SANDBOX();
    expect(BAD_SOCKETS "for name, fam, typ in [('tcp', 2, 1), ('udp6', 10, 2)]:\n"
                       "    try: socket.socket(fam, typ).close(); print(name, 'OPEN')\n"
                       "    except OSError as e: print(name, errno.errorcode[e.errno])\n"
                       "a, b = socket.socketpair(); a.send(b'u'); print('unix', b.recv(1))\n"
                       "import asyncio; print('asyncio', asyncio.run(asyncio.sleep(0, 'ok')))",
           BAD_SOCKETS_REFUSED "tcp EPERM\nudp6 EPERM\nunix b'u'\nasyncio ok");
    host_ok();
}

/* With the host's network: TCP and UDP over IPv4 and IPv6 (flags or-ed into the type, protocol
 * 0 or explicit), and nothing else. */
static void test_escape_socket_kinds_network(void)
{
    NEED_SANDBOX();
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    CHECK(bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 8) == 0);
    CHECK(getsockname(ls, (struct sockaddr *)&sa, &sl) == 0);
    char *code = ag_asprintf(
        "import ctypes, errno, socket\n" BAD_SOCKETS "S = socket\n"
        "for name, fam, typ, proto in [('tcp', 2, S.SOCK_STREAM | S.SOCK_NONBLOCK, 0),\n"
        "        ('tcp6', 10, 1, 6), ('udp', 2, 2, 17), ('udp6', 10, S.SOCK_DGRAM, 0)]:\n"
        "    try: socket.socket(fam, typ, proto).close(); print(name, 'ok')\n"
        "    except OSError as e: print(name, errno.errorcode[e.errno])\n"
        "c = socket.create_connection(('127.0.0.1', %d), timeout=5); print('connect ok')\n",
        ntohs(sa.sin_port));
    const char *argv[] = {"/usr/bin/python3", "-I", "-c", code, NULL};
    struct sbx_proc_req req = {.argv = argv, .network = true};
    struct sbx_proc *p = NULL;
    int in = -1, out = -1, er = -1;
    struct ag_err err = {0};
    CHECKF(sbx_proc_spawn(CTX, &req, &p, &in, &out, &er, &err) == 0, "%s", err.msg);
    free(code);
    if (p) {
        char buf[1024], ebuf[1024];
        close(in);
        read_all(out, buf, sizeof(buf));
        read_all(er, ebuf, sizeof(ebuf));
        CHECKF(strcmp(buf, BAD_SOCKETS_REFUSED "tcp ok\ntcp6 ok\nudp ok\nudp6 ok\nconnect ok\n") ==
                   0,
               "stdout '%s', stderr '%s'", buf, ebuf);
        int st = exit_of(p);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(out);
        close(er);
        sbx_proc_free(p);
    }
    int c = accept(ls, NULL, NULL);
    CHECK(c >= 0); /* the one connection asked for */
    if (c >= 0) close(c);
    close(ls);
    host_ok();
}

/* RLIMIT_CORE is 1 (no pipe dump, no core file) and stays there; other limits still change. */
static void test_escape_core_dumps(void)
{
    NEED_SANDBOX();
    expect("import resource as R\n"
           "print('core', R.getrlimit(R.RLIMIT_CORE))\n"
           "for what, f in [('set', lambda: R.setrlimit(R.RLIMIT_CORE, (0, 0))),\n"
           "                ('prlimit', lambda: R.prlimit(0, R.RLIMIT_CORE, (0, 1)))]:\n"
           "    try: f(); print(what, 'ESCAPED')\n"
           "    except (OSError, ValueError) as e: print(what, 'refused')\n" /* EPERM: ValueError */
           "r = (ctypes.c_ulong * 2)(0, 0)\n"
           "print('raw', sc(160, R.RLIMIT_CORE, ctypes.addressof(r)))\n" /* setrlimit */
           "print('high', sc(302, 0, (1 << 32) | R.RLIMIT_CORE, ctypes.addressof(r), 0))\n"
           "R.setrlimit(R.RLIMIT_NOFILE, (64, 64)); print('nofile', R.getrlimit(R.RLIMIT_NOFILE))\n"
           "print('core', R.getrlimit(R.RLIMIT_CORE))",
           "core (1, 1)\nset refused\nprlimit refused\nraw (-1, 'EPERM')\nhigh (-1, 'EPERM')\n"
           "nofile (64, 64)\ncore (1, 1)\n");
    host_ok();
}

/* A host mount beneath /usr is read-only, nosuid and nodev inside like /usr itself. The mount
 * is made in a private mount namespace of a child of ours, which also runs the sandbox: the
 * host never sees it. fallback: the kernels-before-5.12 path (a remount per mount). */
static void submount_case(bool fallback)
{
    static const char *const dirs[] = {"/usr/local/src", "/usr/src", "/usr/games",
                                       "/usr/share/doc"};
    const char *dir = NULL;
    struct stat st;
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !dir; i++)
        if (stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) dir = dirs[i];
    if (!dir) SKIP("no directory under /usr to mount on");
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct sbx_ctx *c = NULL;
        struct sbx_result r;
        struct ag_err err = {0};
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0777") != 0) {
            dprintf(fds[1], "setup: %s", strerror(errno));
            _exit(1);
        }
        struct sbx_ctx_opts o = {.tag = "agentd-test-submount"};
        if (fallback) {
            setenv("AGENTD_SBX_NO_MOUNT_SETATTR", "1", 1);
            if (sbx_ctx_new(&o, &c, &err) != 0) {
                dprintf(fds[1], "sbx_ctx_new: %s", err.msg);
                _exit(1);
            }
            CTX = c; /* this process's copy, for run() */
        }
        char *code = ag_asprintf("d = '%s'\n"
                                 "f = os.statvfs(d).f_flag\n"
                                 "print('mount', os.path.ismount(d), bool(f & os.ST_RDONLY),\n"
                                 "      bool(f & os.ST_NOSUID), bool(f & os.ST_NODEV))\n"
                                 "try: open(d + '/x', 'w'); print('ESCAPED')\n"
                                 "except OSError as e: print('write', errno.errorcode[e.errno])\n",
                                 dir);
        if (run(code, NULL, &r) != 0) _exit(1);
        dprintf(fds[1], "%s%s", r.out, r.err);
        sbx_result_release(&r);
        if (fallback) sbx_ctx_free(c); /* its cgroup directories */
        _exit(0);
    }
    close(fds[1]);
    char buf[2048];
    read_all(fds[0], buf, sizeof(buf));
    close(fds[0]);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECKF(strcmp(buf, "mount True True True True\nwrite EROFS\n") == 0, "%s: got '%s'",
           fallback ? "remount per mount" : "mount_setattr", buf);
    CHECK(access(dir, F_OK) == 0);
}

static void test_escape_submount_writable(void)
{
    NEED_SANDBOX();
    if (geteuid() != 0) SKIP("mounting a tmpfs under /usr needs root");
    submount_case(false);
    submount_case(true);
    host_ok();
}

/* The OOM killer takes sandboxed processes first, and they cannot change that. */
static void test_escape_oom_score(void)
{
    NEED_SANDBOX();
    struct sbx_result r;
    CHECK(run("print('adj', open('/proc/self/oom_score_adj').read().strip())\n"
              "import subprocess\n"
              "print('child', subprocess.run(['cat', '/proc/self/oom_score_adj'],\n"
              "      capture_output=True, text=True).stdout.strip())\n"
              "try:\n"
              "    with open('/proc/self/oom_score_adj', 'w') as f: f.write('0')\n"
              "    print('lowered to', open('/proc/self/oom_score_adj').read().strip())\n"
              "except OSError as e: print('lower', errno.errorcode[e.errno])\n",
              NULL, &r) == 0);
    CHECKF(r.out && strncmp(r.out, "adj 1000\nchild 1000\n", 20) == 0, "stdout '%s', stderr '%s'",
           r.out, r.err);
    /* Landlock refuses the write; without it, the floor a root daemon set (spawn.c) does. */
    struct sbx_info in;
    sbx_ctx_info(CTX, &in);
    if (geteuid() == 0 || in.landlock_abi > 0)
        CHECKF(r.out && strstr(r.out, "\nlower E"), "stdout '%s'", r.out);
    sbx_result_release(&r);
    host_ok();
}

/* The host uid c's sandboxes run as, from a fresh one's uid_map (its slot is 0 when c runs
 * nothing else); 0 when it cannot be read. */
static unsigned host_uid_in(struct sbx_ctx *c)
{
    struct sbx_result r;
    struct ag_err err = {0};
    struct sbx_exec_req req = {.lang = SBX_LANG_SHELL, .code = "cat /proc/self/uid_map"};
    unsigned in = 0, host = 0, n = 0;
    if (sbx_exec(c, &req, &r, &err) != 0) return 0;
    if (!r.out || sscanf(r.out, "%u %u %u", &in, &host, &n) != 3) host = 0;
    sbx_result_release(&r);
    return host;
}

static int range_of(unsigned uid)
{
    return uid >= AGENTD_SBX_UID_BASE ? (int)((uid - AGENTD_SBX_UID_BASE) / 1024) : -1;
}

/* Range of a context made by another process (another daemon), or -2. */
static int range_elsewhere(void)
{
    int fds[2], r = -2;
    char buf[32] = "";
    if (pipe(fds) != 0) return -2;
    pid_t pid = fork();
    if (pid == 0) {
        struct sbx_ctx *d = NULL;
        struct sbx_ctx_opts od = {.tag = "agentd-test-uid-d"};
        struct ag_err err = {0};
        int rd = sbx_ctx_new(&od, &d, &err) == 0 ? range_of(host_uid_in(d)) : -2;
        sbx_ctx_free(d);
        dprintf(fds[1], "%d", rd);
        _exit(0);
    }
    close(fds[1]);
    read_all(fds[0], buf, sizeof(buf));
    close(fds[0]);
    if (pid > 0 && waitpid(pid, NULL, 0) == pid && buf[0]) r = atoi(buf);
    return r;
}

/* Contexts never share a host id range, even when all of them want the same one, in one
 * process or in two; and a range is free again once its holder is gone. */
static void test_escape_shared_uid_range(void)
{
    NEED_SANDBOX();
    if (geteuid() != 0) SKIP("host id ranges are used only when agentd runs as root");
    char dir[128];
    struct ag_err err = {0};
    snprintf(dir, sizeof(dir), "%s/uids", HOSTDIR);
    setenv("AGENTD_SBX_UID_DIR", dir, 1);
    setenv("AGENTD_SBX_UID_RANGE", "7", 1);
    struct sbx_ctx *a = NULL, *b = NULL, *c = NULL;
    struct sbx_ctx_opts oa = {.tag = "agentd-test-uid-a"}, ob = {.tag = "agentd-test-uid-b"},
                        oc = {.tag = "agentd-test-uid-c"};
    CHECKF(sbx_ctx_new(&oa, &a, &err) == 0, "%s", err.msg);
    CHECKF(sbx_ctx_new(&ob, &b, &err) == 0, "%s", err.msg);
    if (a && b) {
        int ra = range_of(host_uid_in(a)), rb = range_of(host_uid_in(b));
        CHECKF(ra == 7 && rb >= 0 && rb != ra, "ranges %d and %d", ra, rb);
        int rd = range_elsewhere();
        CHECKF(rd >= 0 && rd != ra && rd != rb, "another process got range %d", rd);
        sbx_ctx_free(a);
        a = NULL;
        CHECKF(sbx_ctx_new(&oc, &c, &err) == 0, "%s", err.msg);
        int rc = c ? range_of(host_uid_in(c)) : -1;
        CHECKF(rc == 7, "range %d after its holder went", rc);
    }
    sbx_ctx_free(a);
    sbx_ctx_free(b);
    sbx_ctx_free(c);
    unsetenv("AGENTD_SBX_UID_DIR");
    unsetenv("AGENTD_SBX_UID_RANGE");
    DIR *dd = opendir(dir);
    struct dirent *de;
    while (dd && (de = readdir(dd)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    if (dd) closedir(dd);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    struct ag_err err = {0};
    TEST_BEGIN(argc, argv);
    snprintf(HOSTDIR, sizeof(HOSTDIR), "/tmp/agentd-sbx-test-XXXXXX");
    if (!mkdtemp(HOSTDIR)) return 1;
    char *secret = ag_asprintf("%s/secret", HOSTDIR);
    FILE *f = fopen(secret, "w");
    fputs("s3cret", f);
    fclose(f);

    struct sbx_ctx_opts o = {.tag = "agentd-test-sandbox"};
    if (sbx_ctx_new(&o, &CTX, &err) != 0) {
        snprintf(SKIP_WHY, sizeof(SKIP_WHY), "no sandbox on this host: %s", err.msg);
    } else {
        /* Probe: a kernel without user namespaces for this user refuses the first clone. */
        struct sbx_result r = {0};
        struct sbx_exec_req req = {.lang = SBX_LANG_SHELL, .code = "cat /proc/self/uid_map"};
        unsigned in_id, host_id, n_ids;
        if (sbx_exec(CTX, &req, &r, &err) != 0 && strstr(err.msg, "namespaces")) {
            snprintf(SKIP_WHY, sizeof(SKIP_WHY), "the kernel refuses sandboxes here: %s", err.msg);
            sbx_ctx_free(CTX);
            CTX = NULL;
        } else {
            /* The range CTX claimed (sandbox.h), from the probe's uid map. */
            if (r.out && sscanf(r.out, "%u %u %u", &in_id, &host_id, &n_ids) == 3 &&
                host_id >= AGENTD_SBX_UID_BASE)
                UID_LO = host_id - (host_id - AGENTD_SBX_UID_BASE) % 1024;
            sbx_result_release(&r);
            struct sbx_info in;
            sbx_ctx_info(CTX, &in);
            printf("sandbox: memory %s, pids %s, cpu %s, landlock ABI %d\n", in.memory, in.pids,
                   in.cpu, in.landlock_abi);
        }
    }

    RUN(test_oneshot_python);
    RUN(test_oneshot_shell_stdin);
    RUN(test_escape_read_shadow);
    RUN(test_escape_root_listing);
    RUN(test_escape_host_tmp_and_data_dir);
    RUN(test_escape_write_outside_workspace);
    RUN(test_escape_host_proc);
    RUN(test_escape_devices);
    RUN(test_escape_setuid_binary);
    RUN(test_escape_capabilities);
    RUN(test_escape_leaked_fds);
    RUN(test_escape_network_external);
    RUN(test_escape_host_loopback);
    RUN(test_escape_dns);
    RUN(test_escape_unix_sockets);
    RUN(test_escape_ptrace);
    RUN(test_escape_ptrace_attach);
    RUN(test_escape_process_vm_readv);
    RUN(test_escape_mount);
    RUN(test_escape_unshare_setns);
    RUN(test_escape_new_user_namespace);
    RUN(test_escape_keyctl);
    RUN(test_escape_bpf);
    RUN(test_escape_perf_event_open);
    RUN(test_escape_userfaultfd);
    RUN(test_escape_io_uring);
    RUN(test_escape_tiocsti);
    RUN(test_escape_modules_kexec);
    RUN(test_escape_x32_abi);
    RUN(test_escape_fork_bomb);
    RUN(test_escape_memory_bomb);
    RUN(test_escape_fill_disk);
    RUN(test_escape_cpu_burn);
    RUN(test_escape_output_flood);
    RUN(test_escape_signal_daemon);
    RUN(test_escape_hostname);
    RUN(test_escape_symlinks_files_put_get);
    RUN(test_escape_other_sandbox_workspace);
    RUN(test_session_persists);
    RUN(test_session_timeout_keeps_session);
    RUN(test_session_second_deadline_kills);
    RUN(test_escape_forged_reply);
    RUN(test_session_crash_and_restart);
    RUN(test_session_files);
    RUN(test_session_output_streams);
    RUN(test_no_orphans);
    RUN(test_pool);
    RUN(test_proc_pipes_env_exit);
    RUN(test_proc_binds);
    RUN(test_proc_refused);
    RUN(test_proc_kill_and_ctx_free);
    RUN(test_escape_socket_kinds);
    RUN(test_escape_socket_kinds_network);
    RUN(test_escape_core_dumps);
    RUN(test_escape_submount_writable);
    RUN(test_escape_oom_score);
    RUN(test_escape_shared_uid_range);

    sbx_ctx_free(CTX);
    unlink(secret);
    rmdir(HOSTDIR);
    free(secret);
    return TEST_END();
}
