/*
 * storeq.c - the storage thread: one SQLite writer connection, fed FIFO jobs by the loop.
 *
 * The loop thread never touches SQLite, so an fsync never stalls a client. Jobs go in through a
 * mutex+condvar inbox; finished jobs come back through an outbox and one uv_async_send; the
 * loop drains the whole outbox per wake-up (several sends may coalesce into one callback).
 * FIFO order matters: an agent.create acknowledged to one client is visible to the next
 * agent.list of any client.
 */
#include "agentd.h"

#include <stdatomic.h>
#include <stdlib.h>

struct storeq {
    uv_loop_t *loop;             /* loop that receives completions */
    uv_async_t async;            /* wakes the loop when the outbox is non-empty */
    uv_thread_t thread;          /* the storage thread */
    uv_mutex_t mu;               /* guards the inbox, the outbox and stop */
    uv_cond_t cv;                /* signalled when the inbox gains a job or stop is set */
    struct storeq_job *in_head;  /* jobs waiting for the thread */
    struct storeq_job *in_tail;  /* last job in the inbox */
    struct storeq_job *out_head; /* finished jobs waiting for the loop */
    struct storeq_job *out_tail; /* last job in the outbox */
    bool stop;                   /* thread exits once the inbox is empty */
    _Atomic size_t pending;      /* submitted, done() not yet run */
    struct mem_store *st;        /* owned; used only by the thread */
};

static void push(struct storeq_job **head, struct storeq_job **tail, struct storeq_job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static void thread_main(void *arg)
{
    struct storeq *q = arg;

    uv_mutex_lock(&q->mu);
    for (;;) {
        while (!q->in_head && !q->stop) uv_cond_wait(&q->cv, &q->mu);
        if (!q->in_head) break;
        struct storeq_job *job = q->in_head;
        q->in_head = job->next;
        if (!q->in_head) q->in_tail = NULL;
        uv_mutex_unlock(&q->mu);

        job->work(job, q->st);

        uv_mutex_lock(&q->mu);
        push(&q->out_head, &q->out_tail, job);
        uv_async_send(&q->async);
    }
    uv_mutex_unlock(&q->mu);
}

static void drain_outbox(struct storeq *q)
{
    uv_mutex_lock(&q->mu);
    struct storeq_job *job = q->out_head;
    q->out_head = q->out_tail = NULL;
    uv_mutex_unlock(&q->mu);

    while (job) {
        struct storeq_job *next = job->next;
        atomic_fetch_sub(&q->pending, 1);
        job->done(job);
        job = next;
    }
}

static void on_async(uv_async_t *h)
{
    drain_outbox(h->data);
}

int storeq_start(uv_loop_t *loop, struct mem_store *st, struct storeq **out, struct ag_err *err)
{
    struct storeq *q = ag_calloc(1, sizeof(*q));
    int rc;

    q->loop = loop;
    q->st = st;
    uv_mutex_init(&q->mu);
    uv_cond_init(&q->cv);
    uv_async_init(loop, &q->async, on_async);
    q->async.data = q;
    if ((rc = uv_thread_create(&q->thread, thread_main, q)) != 0) {
        uv_close((uv_handle_t *)&q->async, NULL);
        return ag_err_set(err, AG_EINTERNAL, "cannot start the storage thread: %s",
                          uv_strerror(rc));
    }
    *out = q;
    return 0;
}

void storeq_submit(struct storeq *q, struct storeq_job *job)
{
    atomic_fetch_add(&q->pending, 1);
    uv_mutex_lock(&q->mu);
    push(&q->in_head, &q->in_tail, job);
    uv_cond_signal(&q->cv);
    uv_mutex_unlock(&q->mu);
}

size_t storeq_pending(const struct storeq *q)
{
    return atomic_load(&((struct storeq *)q)->pending);
}

static void free_after_close(uv_handle_t *h)
{
    struct storeq *q = h->data;
    uv_mutex_destroy(&q->mu);
    uv_cond_destroy(&q->cv);
    free(q);
}

void storeq_stop(struct storeq *q)
{
    uv_mutex_lock(&q->mu);
    q->stop = true;
    uv_cond_signal(&q->cv);
    uv_mutex_unlock(&q->mu);
    uv_thread_join(&q->thread);
    drain_outbox(q); /* jobs finished after the last async callback */
    mem_store_close(q->st);
    q->st = NULL;
    uv_close((uv_handle_t *)&q->async, free_after_close);
}
