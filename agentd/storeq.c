/*
 * storeq.c - the storage thread: one SQLite writer connection, fed FIFO jobs by the loop.
 *
 * The loop thread never touches SQLite, so an fsync never stalls a client. Jobs cross through
 * a hand-off (handoff.c) with exactly one worker thread: its inbox feeds the thread, its
 * outbox returns finished jobs to the loop, which drains it whole per wake-up. FIFO order
 * matters: an agent.create acknowledged to one client is visible to the next agent.list of
 * any client.
 */
#include "agentd.h"

#include <stdatomic.h>
#include <stdlib.h>

struct storeq {
    struct handoff ho;      /* one thread; items are struct storeq_job.node */
    _Atomic size_t pending; /* submitted, done() not yet run */
    struct mem_store *st;   /* owned; used only by the thread */
};

static void job_work(struct ag_list *item, void *ud)
{
    struct storeq *q = ud;
    struct storeq_job *job = ag_list_entry(item, struct storeq_job, node);
    job->work(job, q->st);
}

static void job_done(struct ag_list *item, void *ud)
{
    struct storeq *q = ud;
    struct storeq_job *job = ag_list_entry(item, struct storeq_job, node);
    atomic_fetch_sub(&q->pending, 1);
    job->done(job);
}

int storeq_start(uv_loop_t *loop, struct mem_store *st, struct storeq **out, struct ag_err *err)
{
    struct storeq *q = ag_calloc(1, sizeof(*q));
    int rc;

    q->st = st;
    if ((rc = handoff_start(&q->ho, loop, job_work, job_done, q, 1, 1, err)) != 0) {
        ag_err_prefix(err, "storage: ");
        return rc; /* q stays allocated: its async handle is closing */
    }
    *out = q;
    return 0;
}

void storeq_submit(struct storeq *q, struct storeq_job *job)
{
    atomic_fetch_add(&q->pending, 1);
    handoff_submit(&q->ho, &job->node);
}

size_t storeq_pending(const struct storeq *q)
{
    return atomic_load(&((struct storeq *)q)->pending);
}

static void free_after_close(struct handoff *h)
{
    free(h->ud);
}

void storeq_stop(struct storeq *q)
{
    handoff_stop(&q->ho); /* runs every queued job, then their done() */
    mem_store_close(q->st);
    q->st = NULL;
    handoff_close(&q->ho, free_after_close);
}
