/*
 * main.c - agentd's entry point: configuration, the data-dir lock, the store, the storage
 * thread, the socket server and a clean shutdown on SIGTERM/SIGINT.
 *
 * Shutdown drains: the listener closes at once, requests already in progress finish and are
 * answered, then every connection is closed, the storage thread commits what it holds and the
 * socket file is removed. A second signal (or drain_timeout_ms) cuts the wait short.
 */
#include "agentd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static int64_t drain_started_ms;

/* One agentd per data dir: an flock held for the daemon's lifetime, with our pid inside. */
static int lock_data_dir(struct agentd *d, struct ag_err *err)
{
    char path[4200], pid[32] = "";
    snprintf(path, sizeof(path), "%s/agentd.lock", d->cfg.data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return ag_err_set(err, AG_EIO, "cannot open %s: %s", path, strerror(errno));
    for (int tries = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; tries++) {
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        /* The owner is dead (kill -9) but a sandbox child it was cloning at that moment may
         * still hold the lock for the instant before it closes inherited descriptors. */
        if (pid[0] && kill(atoi(pid), 0) != 0 && errno == ESRCH && tries < 200) {
            usleep(10000);
            continue;
        }
        close(fd);
        return ag_err_set(err, AG_ELOCKED,
                          "data dir %s is in use by another agentd%s%s%s; stop it first or "
                          "choose another directory with --data",
                          d->cfg.data_dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
    }
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        ag_warn("cannot write pid to %s", path);
    d->lock_fd = fd;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static bool all_idle(struct agentd *d)
{
    if (storeq_pending(d->sq) != 0 || sbxd_in_flight(d) != 0 || engd_in_flight(d) != 0 ||
        runner_in_flight(d) != 0 || webd_in_flight(d) != 0)
        return false;
    ag_list_foreach (it, &d->conns) {
        struct conn *c = ag_list_entry(it, struct conn, node);
        if (c->busy || c->out.len || uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe))
            return false;
    }
    return true;
}

static void finish(struct agentd *d)
{
    server_close_all(d);
    runner_drain(d);
    engd_stop(d);
    mcpd_stop(d);
    webd_stop(d);
    sbxd_stop(d);
    uv_timer_stop(&d->drain_timer);
    uv_close((uv_handle_t *)&d->drain_timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&d->sig_int, on_handle_closed);
    storeq_stop(d->sq);
    d->sq = NULL;
    runner_stop(d);
}

static void on_drain_tick(uv_timer_t *t)
{
    struct agentd *d = t->data;
    bool late = ag_now_ms() - drain_started_ms >= d->cfg.drain_timeout_ms;
    if (!all_idle(d) && !late) return;
    if (late && !all_idle(d)) ag_warn("drain timeout: closing busy connections");
    finish(d);
}

void agentd_drain(struct agentd *d)
{
    if (d->draining) {
        /* A second signal: stop waiting for clients. */
        d->cfg.drain_timeout_ms = 0;
        return;
    }
    d->draining = true;
    drain_started_ms = ag_now_ms();
    ag_info("shutting down: finishing %zu queued storage jobs, %llu connections open",
            storeq_pending(d->sq), (unsigned long long)d->n_conns);
    server_stop_listening(d);
    runner_drain(d);
    uv_timer_start(&d->drain_timer, on_drain_tick, 0, 10);
}

static void on_signal(uv_signal_t *h, int signum)
{
    ag_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    agentd_drain(h->data);
}

static int start(struct agentd *d, struct ag_err *err)
{
    struct mem_store *st = NULL;
    int rc, n_loaded = 0;

    if ((rc = methods_init(err)) != 0) return rc;
    if ((rc = ag_mkdir_p(d->cfg.data_dir, 0700, err)) != 0) return rc;
    if ((rc = lock_data_dir(d, err)) != 0) return rc;
    snprintf(d->db_path, sizeof(d->db_path), "%s/%s", d->cfg.data_dir, MEM_DB_FILE);
    if ((rc = mem_store_open(d->db_path, &st, err)) != 0) return rc;
    d->schema_version = mem_store_schema_version(st);
    if (d->cfg.agents_dir[0] &&
        (rc = methods_load_agents_dir(st, d->cfg.agents_dir, &n_loaded, err)) != 0) {
        mem_store_close(st);
        return rc;
    }
    if ((rc = mem_agent_count(st, &d->n_agents, err)) != 0) {
        mem_store_close(st);
        return rc;
    }
    /* Runs still "running" were cut off when the last agentd died. */
    int64_t n_cut = 0;
    if ((rc = mem_run_interrupt_all(st, &n_cut, err)) != 0) {
        mem_store_close(st);
        return rc;
    }
    if (n_cut)
        ag_warn("%lld runs were in progress when agentd last stopped: marked interrupted",
                (long long)n_cut);
    if ((rc = storeq_start(d->loop, st, &d->sq, err)) != 0) {
        mem_store_close(st);
        return rc;
    }
    sbxd_start(d);
    if ((rc = webd_start(d, err)) != 0) {
        sbxd_stop(d);
        storeq_stop(d->sq);
        uv_run(d->loop, UV_RUN_DEFAULT);
        return rc;
    }
    if ((rc = engd_start(d, err)) != 0) {
        webd_stop(d);
        sbxd_stop(d);
        storeq_stop(d->sq);
        uv_run(d->loop, UV_RUN_DEFAULT);
        return rc;
    }
    mcpd_start(d);
    runner_start(d);
    if ((rc = server_start(d, err)) != 0) {
        runner_stop(d);
        mcpd_stop(d);
        engd_stop(d);
        webd_stop(d);
        sbxd_stop(d);
        storeq_stop(d->sq);
        uv_run(d->loop, UV_RUN_DEFAULT);
        return rc;
    }
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_int);
    d->sig_term.data = d->sig_int.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_timer_init(d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    ag_info("agentd %s listening on %s (data dir %s, %lld agents%s)", AGENTD_VERSION,
            d->cfg.socket_path, d->cfg.data_dir, (long long)d->n_agents,
            d->cfg.agents_dir[0] ? ", definitions from --agents loaded" : "");
    return 0;
}

/* agentd --methods: the method table as the README's markdown list. */
static int print_methods(void)
{
    struct ag_err err = {0};
    if (methods_init(&err) != 0) {
        fprintf(stderr, "agentd: %s\n", err.msg);
        return 1;
    }
    size_t n;
    const struct method *const *all = methods_all(&n);
    printf("| method | what it does |\n|---|---|\n");
    for (size_t i = 0; i < n; i++)
        printf("| `%s` | %s%s |\n", all[i]->name, all[i]->summary,
               all[i]->fn ? "" : " (not built yet: answers `unsupported`)");
    methods_release();
    return 0;
}

int main(int argc, char **argv)
{
    static struct agentd d;
    struct ag_err err = {0};
    int rc;

    if (argc == 2 && strcmp(argv[1], "--methods") == 0) return print_methods();
    rc = agentd_config_load(&d.cfg, argc, argv, &err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "agentd: %s\n", err.msg);
        return 2;
    }
    ag_log_set_level(d.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    d.loop = uv_default_loop();
    d.lock_fd = -1;
    ag_list_init(&d.conns);
    d.started_ms = ag_now_ms();
    if ((rc = start(&d, &err)) != 0) {
        fprintf(stderr, "agentd: %s\n", err.msg);
        if (d.lock_fd >= 0) close(d.lock_fd);
        return 1;
    }
    uv_run(d.loop, UV_RUN_DEFAULT);
    free(d.sbx_mem);
    methods_release();
    uv_loop_close(d.loop);
    close(d.lock_fd);
    ag_info("agentd stopped");
    return 0;
}
