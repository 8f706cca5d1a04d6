/*
 * test_handoff.c - the loop/worker hand-off (agentd/handoff.c): FIFO order with one worker,
 * every item done exactly once with a growing pool, posts from a foreign thread, and stop
 * running what is queued.
 */
#include "../agentd/agentd.h"
#include "test.h"

#include <stdatomic.h>

struct item {
    struct ag_list node;
    int id;
    atomic_int worked; /* work() runs */
    int done;          /* done() runs (loop thread) */
};

struct rig {
    int order[1000]; /* ids in done() order */
    int n_done;
    atomic_int n_worked;
    int sleep_ms; /* work() takes this long */
};

static void rig_work(struct ag_list *node, void *ud)
{
    struct rig *r = ud;
    struct item *it = ag_list_entry(node, struct item, node);
    if (r->sleep_ms) uv_sleep((unsigned)r->sleep_ms);
    atomic_fetch_add(&it->worked, 1);
    atomic_fetch_add(&r->n_worked, 1);
}

static void rig_done(struct ag_list *node, void *ud)
{
    struct rig *r = ud;
    struct item *it = ag_list_entry(node, struct item, node);
    it->done++;
    if (r->n_done < 1000) r->order[r->n_done] = it->id;
    r->n_done++;
}

static void run_until(uv_loop_t *loop, const struct rig *r, int n)
{
    for (int spins = 0; r->n_done < n && spins < 20000; spins++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (r->n_done < n) uv_sleep(1);
    }
}

static void test_fifo_one_worker(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct rig r;
    static struct item items[200];
    memset(&r, 0, sizeof(r));
    struct handoff h;
    struct ag_err err = {0};
    CHECK(handoff_start(&h, &loop, rig_work, rig_done, &r, 1, 1, &err) == 0);
    CHECK(h.n_threads == 1);
    for (int i = 0; i < 200; i++) {
        items[i] = (struct item){.id = i};
        handoff_submit(&h, &items[i].node);
    }
    run_until(&loop, &r, 200);
    CHECK(r.n_done == 200);
    int in_order = 1;
    for (int i = 0; i < 200; i++) in_order &= r.order[i] == i && items[i].done == 1;
    CHECK(in_order);
    CHECK(h.n_threads == 1); /* a full pool of one does not grow */
    handoff_stop(&h);
    handoff_close(&h, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_pool_grows_and_stop_runs_the_rest(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct rig r;
    static struct item items[64];
    memset(&r, 0, sizeof(r));
    r.sleep_ms = 2;
    struct handoff h;
    struct ag_err err = {0};
    CHECK(handoff_start(&h, &loop, rig_work, rig_done, &r, 0, 4, &err) == 0);
    CHECK(h.n_threads == 0);
    for (int i = 0; i < 64; i++) {
        items[i] = (struct item){.id = i};
        handoff_submit(&h, &items[i].node);
    }
    CHECK(h.n_threads >= 1 && h.n_threads <= 4);
    /* Stop before the loop ran: the workers finish the inbox, stop delivers every done(). */
    handoff_stop(&h);
    CHECK(r.n_done == 64 && atomic_load(&r.n_worked) == 64);
    int once = 1;
    for (int i = 0; i < 64; i++) once &= items[i].done == 1 && atomic_load(&items[i].worked) == 1;
    CHECK(once);
    handoff_close(&h, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

struct poster {
    struct handoff *h;
    struct item *items;
    int n;
};

static void post_main(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < p->n; i++) handoff_post(p->h, &p->items[i].node);
}

static int closed_calls;
static void on_closed(struct handoff *h)
{
    (void)h;
    closed_calls++;
}

static void test_outbox_only(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct rig r;
    static struct item items[300];
    memset(&r, 0, sizeof(r));
    struct handoff h;
    struct ag_err err = {0};
    CHECK(handoff_start(&h, &loop, NULL, rig_done, &r, 1, 8, &err) == 0);
    CHECK(h.n_threads == 0 && h.max_threads == 0); /* no work(): no threads */
    for (int i = 0; i < 300; i++) items[i] = (struct item){.id = i};
    struct poster p = {.h = &h, .items = items, .n = 300};
    uv_thread_t t;
    CHECK(uv_thread_create(&t, post_main, &p) == 0);
    run_until(&loop, &r, 300);
    uv_thread_join(&t);
    handoff_stop(&h);
    CHECK(r.n_done == 300);
    int in_order = 1;
    for (int i = 0; i < 300; i++) in_order &= r.order[i] == i;
    CHECK(in_order); /* one poster's items arrive in its order */
    closed_calls = 0;
    handoff_close(&h, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed_calls == 1);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_fifo_one_worker);
    RUN(test_pool_grows_and_stop_runs_the_rest);
    RUN(test_outbox_only);
    return TEST_END();
}
