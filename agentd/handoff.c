/*
 * handoff.c - the inbox/outbox + uv_async hand-off between the loop and worker threads (see
 * agentd.h): the storage thread, the sandbox workers and the engine's events all use it.
 *
 * Why this shape: the loop must never block, so it only ever holds the lock for a list splice;
 * a worker sleeps on the condition variable while the inbox is empty; uv_async_send coalesces,
 * so the loop takes the whole outbox per wake-up rather than one item per send. Items keep
 * their order through both lists, which the users rely on (a sandbox cell's output before its
 * result, an acknowledged write before the next read).
 */
#include "agentd.h"

#include <string.h>

static void worker_main(void *arg)
{
    struct handoff *h = arg;

    uv_mutex_lock(&h->mu);
    for (;;) {
        while (ag_list_empty(&h->inbox) && !h->stop) {
            h->n_idle++;
            uv_cond_wait(&h->cv, &h->mu);
            h->n_idle--;
        }
        struct ag_list *item = ag_list_pop(&h->inbox);
        if (!item) break; /* stopping, and nothing is left to do */
        uv_mutex_unlock(&h->mu);

        h->work(item, h->ud);

        uv_mutex_lock(&h->mu);
        ag_list_insert_tail(&h->outbox, item);
        uv_async_send(&h->async);
    }
    uv_mutex_unlock(&h->mu);
}

/* With h->mu held and h->n_threads < h->max_threads: 0 or libuv's error. */
static int start_thread(struct handoff *h)
{
    int rc = uv_thread_create(&h->threads[h->n_threads], worker_main, h);
    if (rc == 0) h->n_threads++;
    return rc;
}

static void on_async(uv_async_t *a)
{
    handoff_drain(a->data);
}

int handoff_start(struct handoff *h, uv_loop_t *loop, handoff_fn work, handoff_fn done, void *ud,
                  int min_threads, int max_threads, struct ag_err *err)
{
    memset(h, 0, sizeof(*h));
    h->work = work;
    h->done = done;
    h->ud = ud;
    h->max_threads = !work                               ? 0
                     : max_threads > HANDOFF_MAX_THREADS ? HANDOFF_MAX_THREADS
                                                         : max_threads;
    ag_list_init(&h->inbox);
    ag_list_init(&h->outbox);
    uv_mutex_init(&h->mu);
    uv_cond_init(&h->cv);
    uv_async_init(loop, &h->async, on_async);
    h->async.data = h;
    uv_mutex_lock(&h->mu);
    int rc = 0;
    while (rc == 0 && h->n_threads < min_threads && h->n_threads < h->max_threads)
        rc = start_thread(h);
    uv_mutex_unlock(&h->mu);
    if (rc == 0) return 0;
    handoff_stop(h); /* joins the ones that did start */
    uv_close((uv_handle_t *)&h->async, NULL);
    uv_mutex_destroy(&h->mu);
    uv_cond_destroy(&h->cv);
    return ag_err_set(err, AG_EINTERNAL, "cannot start a worker thread: %s", uv_strerror(rc));
}

void handoff_submit(struct handoff *h, struct ag_list *item)
{
    uv_mutex_lock(&h->mu);
    ag_list_insert_tail(&h->inbox, item);
    /* A failed start leaves the item to the workers there are, as a full pool does. */
    if (h->n_idle == 0 && !h->stop && h->n_threads < h->max_threads) (void)start_thread(h);
    uv_cond_signal(&h->cv);
    uv_mutex_unlock(&h->mu);
}

void handoff_post(struct handoff *h, struct ag_list *item)
{
    uv_mutex_lock(&h->mu);
    ag_list_insert_tail(&h->outbox, item);
    uv_mutex_unlock(&h->mu);
    uv_async_send(&h->async);
}

void handoff_drain(struct handoff *h)
{
    struct ag_list batch;
    ag_list_init(&batch);
    uv_mutex_lock(&h->mu);
    ag_list_move(&h->outbox, &batch);
    uv_mutex_unlock(&h->mu);
    for (struct ag_list *item; (item = ag_list_pop(&batch)) != NULL;) h->done(item, h->ud);
}

void handoff_stop(struct handoff *h)
{
    uv_mutex_lock(&h->mu);
    h->stop = true;
    uv_cond_broadcast(&h->cv);
    uv_mutex_unlock(&h->mu);
    /* n_threads only grows on the loop thread, which is here. */
    for (int i = 0; i < h->n_threads; i++) uv_thread_join(&h->threads[i]);
    h->n_threads = 0;
    handoff_drain(h); /* items finished after the last async callback */
}

static void on_closed(uv_handle_t *a)
{
    struct handoff *h = a->data;
    uv_mutex_destroy(&h->mu);
    uv_cond_destroy(&h->cv);
    if (h->closed) h->closed(h);
}

void handoff_close(struct handoff *h, void (*closed)(struct handoff *h))
{
    h->closed = closed;
    uv_close((uv_handle_t *)&h->async, on_closed);
}
