/*
 * threadpool.c - persistent compute threads for the engine's parallel loops (see threadpool.h).
 *
 * Protocol. One word, `job`, holds the loop's generation, a "closed" bit and the number of
 * workers inside the loop. The caller writes the loop (fn, arg, n, chunk), resets the chunk
 * counter, then publishes the next generation, open and empty, with one release store. A worker
 * that sees a new generation joins it by incrementing the count with a compare-and-swap that
 * also checks the generation and the closed bit, takes chunks from `next` until they run out,
 * and leaves by decrementing the count. The caller takes chunks too; when none remain it sets
 * the closed bit and waits for the count to reach zero. A worker that had not joined by then
 * never will (its compare-and-swap sees the closed bit), so it never reads the loop's fields
 * once the caller may rewrite them, and the caller never waits for a worker that did nothing.
 *
 * Why: a decode step runs about 150 loops; when another process holds a core, a worker can be
 * off the CPU for a whole scheduler time slice (milliseconds). With a wait for every worker,
 * each loop then cost a slice and decoding ran 30 times slower on a busy 2-core machine; now the
 * caller finishes the chunks itself and waits only for chunks already taken.
 *
 * Sleeping. Workers spin on `job` for a while after each loop (the gaps between the loops of a
 * decode step are short), then sleep on the condition variable. A sleeper first counts itself
 * in `n_sleeping` under the mutex and re-reads `job`; the caller bumps `job` and then reads
 * `n_sleeping`, both sequentially consistent, so either the sleeper sees the new generation or
 * the caller sees the sleeper and broadcasts under the mutex. A loop whose workers are all
 * spinning therefore costs no system call and no lock.
 *
 * Memory ordering: the publication of `job` is a release and a worker's read of it an acquire
 * (the loop's fields and everything the caller wrote before, such as quantized activations,
 * are visible to the worker); leaving is a release and the caller's final read an acquire (the
 * workers' outputs are visible to the caller when eng_threadpool_for() returns).
 *
 * Layout: the words each side writes often live on their own cache lines, so that a worker
 * spinning on `job` is not disturbed by the chunk counter and the caller's stores of the next
 * loop move one line.
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

/* The job word: generation << JOB_GEN_SHIFT | closed bit | workers inside (up to 65535). */
#define JOB_ACTIVE_MASK 0xffffull
#define JOB_CLOSED      0x10000ull
#define JOB_GEN_SHIFT   17

#define CACHE_LINE 64

struct eng_threadpool {
    /* Written by the caller once per loop, read by every worker that joins it. */
    _Alignas(CACHE_LINE) _Atomic uint64_t job; /* generation, closed bit, workers inside */
    eng_task_fn fn;                            /* the current loop, valid while job is open */
    void *arg;
    int64_t n;
    int64_t chunk;
    bool guided; /* chunks shrink as the loop drains (eng_threadpool_for_guided) */
    /* Written by every thread that takes a chunk. */
    _Alignas(CACHE_LINE) _Atomic int64_t next; /* first index not yet handed out */
    /* The sleep handshake and set-up; rarely touched. */
    _Alignas(CACHE_LINE) _Atomic int n_sleeping; /* workers counted in before sleeping */
    _Atomic bool stop;                           /* workers exit when they see it */
    pthread_mutex_t mu;                          /* guards sleeping and waking */
    pthread_cond_t cv;                           /* signalled when job changes or stop is set */
    int n_threads;                               /* including the caller (thread 0) */
    pthread_t *workers;                          /* (n_threads - 1) started threads */
    int n_started;                               /* workers started (for cleanup after failure) */
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

static inline uint64_t job_gen(uint64_t job)
{
    return job >> JOB_GEN_SHIFT;
}

/* Takes chunks of the current loop until none remain. A guided loop's next chunk is what
 * remains over the thread count (in whole grains, at least one): the first chunks are large,
 * the last ones small, so the threads finish together. */
static void run_chunks(struct eng_threadpool *tp, int ith)
{
    const int64_t n = tp->n, chunk = tp->chunk, share = tp->n_threads;
    for (;;) {
        int64_t begin, size = chunk;
        if (!tp->guided) {
            begin = atomic_fetch_add_explicit(&tp->next, chunk, memory_order_relaxed);
            if (begin >= n) break;
        } else {
            begin = atomic_load_explicit(&tp->next, memory_order_relaxed);
            do {
                if (begin >= n) return;
                size = (n - begin) / share / chunk * chunk;
                if (size < chunk) size = chunk;
            } while (!atomic_compare_exchange_weak_explicit(
                &tp->next, &begin, begin + size, memory_order_relaxed, memory_order_relaxed));
        }
        int64_t end = begin + size < n ? begin + size : n;
        tp->fn(tp->arg, begin, end, ith);
    }
}

/* Waits until job's generation differs from seen (or stop is set) and returns job: spins for a
 * while, then sleeps. */
static uint64_t wait_for_job(struct eng_threadpool *tp, uint64_t seen)
{
    uint64_t j = atomic_load_explicit(&tp->job, memory_order_acquire);
    for (int i = 0; job_gen(j) == seen && i < WORKER_SPINS; i++) {
        cpu_relax();
        j = atomic_load_explicit(&tp->job, memory_order_acquire);
    }
    if (job_gen(j) != seen) return j;
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1); /* seq_cst: ordered before the re-read below */
    while (job_gen(j = atomic_load(&tp->job)) == seen &&
           !atomic_load_explicit(&tp->stop, memory_order_relaxed))
        pthread_cond_wait(&tp->cv, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    return j;
}

static void *worker_main(void *p)
{
    struct worker_arg wa = *(struct worker_arg *)p;
    struct eng_threadpool *tp = wa.tp;
    uint64_t seen = 0; /* the last generation this worker saw */

    free(p);
    for (;;) {
        uint64_t j = wait_for_job(tp, seen);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        seen = job_gen(j);
        /* Join unless the caller has closed the loop (it finished without this worker). */
        bool joined = false;
        while (job_gen(j) == seen && !(j & JOB_CLOSED))
            if (atomic_compare_exchange_weak_explicit(&tp->job, &j, j + 1, memory_order_acquire,
                                                      memory_order_acquire)) {
                joined = true;
                break;
            }
        if (!joined) continue;
        run_chunks(tp, wa.ith);
        atomic_fetch_sub_explicit(&tp->job, 1, memory_order_release);
    }
    return NULL;
}

int eng_threadpool_new(int n_threads, struct eng_threadpool **out, struct ag_err *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > ENG_THREADPOOL_MAX_THREADS)
        return ag_err_set(err, AG_EINVAL, "threads: %d is outside 1..%d", n_threads,
                          ENG_THREADPOOL_MAX_THREADS);
    struct eng_threadpool *tp = aligned_alloc(CACHE_LINE, sizeof(*tp));
    if (!tp) abort(); /* host OOM aborts, as ag_malloc does */
    memset(tp, 0, sizeof(*tp));
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    atomic_init(&tp->job, 0);
    atomic_init(&tp->next, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->stop, false);
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
    atomic_store(&tp->stop, true);
    /* A new generation, closed: spinners wake up, see stop and exit without joining. */
    const uint64_t j = atomic_load(&tp->job);
    atomic_store(&tp->job, ((job_gen(j) + 1) << JOB_GEN_SHIFT) | JOB_CLOSED);
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

static void threadpool_for(struct eng_threadpool *tp, int64_t n, int64_t chunk, bool guided,
                           eng_task_fn fn, void *arg)
{
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    if (tp->n_threads == 1 || chunk >= n) {
        if (guided) chunk = n; /* one thread: one chunk */
        for (int64_t b = 0; b < n; b += chunk) fn(arg, b, b + chunk < n ? b + chunk : n, 0);
        return;
    }
    /* The previous loop is closed and empty: no worker reads these fields now. */
    tp->fn = fn;
    tp->arg = arg;
    tp->n = n;
    tp->chunk = chunk;
    tp->guided = guided;
    atomic_store_explicit(&tp->next, 0, memory_order_relaxed);
    const uint64_t gen = job_gen(atomic_load_explicit(&tp->job, memory_order_relaxed)) + 1;
    atomic_store(&tp->job, gen << JOB_GEN_SHIFT); /* seq_cst: before the read of n_sleeping */
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }

    run_chunks(tp, 0);

    /* Close the loop to latecomers, then wait for the workers inside it. */
    uint64_t j = atomic_fetch_or_explicit(&tp->job, JOB_CLOSED, memory_order_acquire);
    for (unsigned spins = 0; j & JOB_ACTIVE_MASK; spins++) {
        if (spins < 4096)
            cpu_relax();
        else
            sched_yield(); /* a worker holding a chunk is off the CPU */
        j = atomic_load_explicit(&tp->job, memory_order_acquire);
    }
}

void eng_threadpool_for(struct eng_threadpool *tp, int64_t n, int64_t chunk, eng_task_fn fn,
                        void *arg)
{
    threadpool_for(tp, n, chunk, false, fn, arg);
}

void eng_threadpool_for_guided(struct eng_threadpool *tp, int64_t n, int64_t grain, eng_task_fn fn,
                               void *arg)
{
    threadpool_for(tp, n, grain, true, fn, arg);
}
