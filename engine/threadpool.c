/*
 * threadpool.c - persistent compute threads for the engine's parallel loops (see threadpool.h).
 *
 * Protocol: the caller writes the job (fn, arg, n, chunk), resets the chunk counter and the
 * done count, then bumps `gen` under the mutex and broadcasts. A worker remembers the last
 * generation it ran; it spins on `gen` for a while and then sleeps on the condition variable,
 * re-checking `gen` under the mutex so a bump cannot be missed. Every worker takes chunks from
 * `next` until they run out and then increments `n_done`; the caller, having taken chunks too,
 * waits until all workers have reported. Because every worker reports for every job before the
 * next one is written, the plain job fields are never read while being rewritten.
 *
 * Memory ordering: the bump of `gen` is a release and the workers' load of it an acquire, so the
 * job fields (and everything the caller wrote before, such as quantized activations) are
 * visible to the workers; `n_done` is incremented with release and read with acquire, so the
 * workers' outputs are visible to the caller once it returns.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Spins before a worker sleeps: long enough to bridge the gaps between the loops of one decode
 * step (the norms, RoPE and sampling between matmuls), short enough not to burn a core for
 * long when the engine goes idle (about a millisecond). */
#define WORKER_SPINS 65536

struct eng_threadpool {
    int n_threads;        /* including the caller (thread 0) */
    pthread_t *workers;   /* (n_threads - 1) started threads */
    int n_started;        /* workers actually started (for cleanup after a failure) */
    pthread_mutex_t mu;   /* guards the sleep/wake handshake on gen and stop */
    pthread_cond_t cv;    /* signalled when gen changes or stop is set */
    _Atomic uint64_t gen; /* job generation; bumped once per eng_threadpool_for() */
    _Atomic bool stop;    /* workers exit when they see it */
    _Atomic int64_t next; /* first index not yet handed out in the current job */
    _Atomic int n_done;   /* workers that finished the current job */
    /* The current job, written by the caller before the bump of gen. */
    eng_task_fn fn;
    void *arg;
    int64_t n;
    int64_t chunk;
};

/* One worker's start argument: the pool and the worker's thread index. */
struct worker_arg {
    struct eng_threadpool *tp;
    int ith;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Takes chunks of the current job until none remain. */
static void run_chunks(struct eng_threadpool *tp, int ith)
{
    const int64_t n = tp->n, chunk = tp->chunk;
    for (;;) {
        int64_t begin = atomic_fetch_add_explicit(&tp->next, chunk, memory_order_relaxed);
        if (begin >= n) break;
        int64_t end = begin + chunk < n ? begin + chunk : n;
        tp->fn(tp->arg, begin, end, ith);
    }
}

static void *worker_main(void *p)
{
    struct worker_arg wa = *(struct worker_arg *)p;
    struct eng_threadpool *tp = wa.tp;
    uint64_t seen = 0; /* the generation this worker ran last */

    free(p);
    for (;;) {
        uint64_t g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        for (int i = 0; g == seen && i < WORKER_SPINS; i++) {
            cpu_relax();
            g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&tp->mu);
            while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen &&
                   !atomic_load_explicit(&tp->stop, memory_order_relaxed))
                pthread_cond_wait(&tp->cv, &tp->mu);
            pthread_mutex_unlock(&tp->mu);
        }
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        seen = g;
        run_chunks(tp, wa.ith);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
    return NULL;
}

int eng_threadpool_new(int n_threads, struct eng_threadpool **out, struct ag_err *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > ENG_THREADPOOL_MAX_THREADS)
        return ag_err_set(err, AG_EINVAL, "threads: %d is outside 1..%d", n_threads,
                          ENG_THREADPOOL_MAX_THREADS);
    struct eng_threadpool *tp = ag_calloc(1, sizeof(*tp));
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->stop, false);
    atomic_init(&tp->next, 0);
    atomic_init(&tp->n_done, 0);
    if (n_threads > 1) tp->workers = ag_calloc((size_t)n_threads - 1, sizeof(pthread_t));
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = ag_malloc(sizeof(*wa));
        wa->tp = tp;
        wa->ith = i;
        int rc = pthread_create(&tp->workers[i - 1], NULL, worker_main, wa);
        if (rc != 0) {
            free(wa);
            eng_threadpool_free(tp);
            return ag_err_set(err, AG_EIO, "threads: cannot start worker %d of %d: %s", i,
                              n_threads - 1, strerror(rc));
        }
        tp->n_started++;
    }
    *out = tp;
    return 0;
}

void eng_threadpool_free(struct eng_threadpool *tp)
{
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store_explicit(&tp->stop, true, memory_order_release);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 0; i < tp->n_started; i++) pthread_join(tp->workers[i], NULL);
    pthread_cond_destroy(&tp->cv);
    pthread_mutex_destroy(&tp->mu);
    free(tp->workers);
    free(tp);
}

int eng_threadpool_n_threads(const struct eng_threadpool *tp)
{
    return tp->n_threads;
}

void eng_threadpool_for(struct eng_threadpool *tp, int64_t n, int64_t chunk, eng_task_fn fn,
                        void *arg)
{
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    if (tp->n_threads == 1 || chunk >= n) {
        for (int64_t b = 0; b < n; b += chunk) fn(arg, b, b + chunk < n ? b + chunk : n, 0);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    tp->n = n;
    tp->chunk = chunk;
    atomic_store_explicit(&tp->next, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);

    run_chunks(tp, 0);

    const int n_workers = tp->n_threads - 1;
    for (unsigned spins = 0; atomic_load_explicit(&tp->n_done, memory_order_acquire) < n_workers;
         spins++) {
        if (spins < 4096)
            cpu_relax();
        else
            sched_yield(); /* a worker is descheduled (more threads than free cores) */
    }
}
