/*
 * run.c - one-shot execution: spawn, feed stdin, collect capped output, enforce the deadline,
 * and say why it stopped.
 *
 * The caller's thread waits in poll() on the output pipes, the stdin pipe and the sandbox's
 * pidfd. pid 1's exit kills the rest of the tree and its pidfd turns readable only after the
 * kernel has reaped them all, so once it fires the pipes are at EOF and nothing lingers. On the
 * deadline or when an output cap is passed the tree is SIGKILLed (no grace: it is a one-shot
 * run). A memory cgroup OOM kill during the run is reported as "memory" whatever the exit
 * status says.
 */
#include "sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

bool sbx__capture_add(struct sbx__capture *c, const char *data, size_t n)
{
    if (c->truncated) return true;
    size_t room = c->max > c->buf.len ? c->max - c->buf.len : 0;
    if (n <= room) {
        ag_buf_append(&c->buf, data, n);
        return true;
    }
    ag_buf_append(&c->buf, data, room);
    c->truncated = true;
    return false;
}

void sbx__capture_finish(struct sbx__capture *c, char **out, size_t *len)
{
    if (c->truncated)
        ag_buf_printf(&c->buf, "\n[agentd: output truncated: more than %zu bytes]\n", c->max);
    if (!c->buf.data) ag_buf_puts(&c->buf, "");
    *out = ag_buf_detach(&c->buf, len);
}

int sbx__pump(int fd, int stream, struct sbx__capture *c, sbx_output_fn fn, void *ud, bool *over)
{
    char buf[65536];
    int got = -1;
    for (int i = 0; i < 16; i++) { /* bounded, so one flooding stream cannot starve the rest */
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return got;
        if (n == 0) return 0;
        got = 1;
        size_t before = c->buf.len;
        bool was = c->truncated;
        if (!sbx__capture_add(c, buf, (size_t)n)) *over = true;
        if (fn && c->buf.len > before) fn(ud, stream, c->buf.data + before, c->buf.len - before);
        if (was) *over = true;
    }
    return got;
}

void sbx__classify(struct sbx_result *r, int status, bool timed_out, bool over, bool oom)
{
    r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (timed_out)
        r->stop = SBX_STOP_TIMEOUT;
    else if (over)
        r->stop = SBX_STOP_OUTPUT;
    else if (oom)
        r->stop = SBX_STOP_MEMORY;
    else if (WIFSIGNALED(status))
        r->stop = SBX_STOP_SIGNAL;
    else
        r->stop = SBX_STOP_EXIT;
}

static void set_nonblock(int fd)
{
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int sbx_exec(struct sbx_ctx *ctx, const struct sbx_exec_req *req, struct sbx_result *res,
             struct ag_err *err)
{
    struct sbx_limits dflt;
    const struct sbx_limits *lim = req->limits;
    struct sbx__proc p;
    int rc;

    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    if (!lim) {
        sbx_limits_default(&dflt);
        lim = &dflt;
    }
    if (!req->code) return ag_err_set(err, AG_EINVAL, "sandbox: no code to run");
    if (strlen(req->code) > SBX_MAX_CODE_BYTES)
        return ag_err_set(err, AG_ETOOBIG, "code: %zu bytes, the limit is %u", strlen(req->code),
                          SBX_MAX_CODE_BYTES);
    const char *argv_py[] = {ctx->python, "-I", "-c", req->code, NULL};
    const char *argv_sh[] = {"/bin/sh", "-c", req->code, NULL};
    int64_t t0 = ag_now_ns();
    rc = sbx__spawn(ctx, lim, req->lang == SBX_LANG_SHELL ? argv_sh : argv_py, NULL, &p, err);
    if (rc != 0) return rc;

    struct sbx__capture out = {.max = lim->stdout_max}, er = {.max = lim->stderr_max};
    ag_buf_init(&out.buf);
    ag_buf_init(&er.buf);
    size_t in_off = 0;
    bool exited = false, timed_out = false, over = false, cancelled = false;
    int64_t deadline = lim->timeout_ms > 0 ? ag_now_ms() + lim->timeout_ms : INT64_MAX;
    int64_t exit_deadline = INT64_MAX;

    set_nonblock(p.in_fd);
    set_nonblock(p.out_fd);
    set_nonblock(p.err_fd);
    if (!req->stdin_data || req->stdin_len == 0) close(p.in_fd), p.in_fd = -1;
    while (p.out_fd >= 0 || p.err_fd >= 0 || !exited) {
        struct pollfd fds[4];
        int nf = 0, i_out = -1, i_err = -1, i_in = -1, i_pid = -1;
        if (p.out_fd >= 0) i_out = nf, fds[nf++] = (struct pollfd){p.out_fd, POLLIN, 0};
        if (p.err_fd >= 0) i_err = nf, fds[nf++] = (struct pollfd){p.err_fd, POLLIN, 0};
        if (p.in_fd >= 0) i_in = nf, fds[nf++] = (struct pollfd){p.in_fd, POLLOUT, 0};
        if (!exited) i_pid = nf, fds[nf++] = (struct pollfd){p.pidfd, POLLIN, 0};
        int64_t now = ag_now_ms(), wait = (exited ? exit_deadline : deadline) - now;
        if (wait < 0) wait = 0;
        if (wait > 100) wait = 100; /* to notice req->cancel */
        int n = poll(fds, (nfds_t)nf, (int)wait);
        if (n < 0 && errno != EINTR) break;
        now = ag_now_ms();
        if (req->cancel && *req->cancel && !cancelled && !exited) {
            cancelled = true;
            sbx__proc_signal(&p, SIGKILL);
        }
        if (!exited && !timed_out && now >= deadline) {
            timed_out = true;
            deadline = INT64_MAX; /* pid 1's exit follows the kill */
            sbx__proc_signal(&p, SIGKILL);
        }
        if (exited && now >= exit_deadline) break; /* a writer outside pid 1's tree: give up */
        if (n <= 0) continue;
        if (i_out >= 0 && fds[i_out].revents &&
            sbx__pump(p.out_fd, 1, &out, req->on_output, req->ud, &over) == 0)
            close(p.out_fd), p.out_fd = -1;
        if (i_err >= 0 && fds[i_err].revents &&
            sbx__pump(p.err_fd, 2, &er, req->on_output, req->ud, &over) == 0)
            close(p.err_fd), p.err_fd = -1;
        if (over && !exited) sbx__proc_signal(&p, SIGKILL);
        if (i_in >= 0 && fds[i_in].revents) {
            ssize_t w = write(p.in_fd, req->stdin_data + in_off, req->stdin_len - in_off);
            if (w > 0) in_off += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == req->stdin_len)
                close(p.in_fd), p.in_fd = -1;
        }
        if (i_pid >= 0 && fds[i_pid].revents) {
            exited = true;
            exit_deadline = now + 2000;
        }
    }
    int status = 0;
    sbx__proc_reap(&p, &status);
    bool oom = sbx__cg_oom_kills(&ctx->cg, p.slot) > p.oom_before;
    sbx__proc_release(&p);
    res->duration_us = (ag_now_ns() - t0) / 1000;
    sbx__classify(res, status, timed_out, over, oom);
    if (cancelled && !timed_out && !over) res->stop = SBX_STOP_KILLED;
    res->out_truncated = out.truncated;
    res->err_truncated = er.truncated;
    sbx__capture_finish(&out, &res->out, &res->out_len);
    sbx__capture_finish(&er, &res->err, &res->err_len);
    return 0;
}
