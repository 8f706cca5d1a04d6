/*
 * threadpool.h - the engine's persistent compute thread pool (threadpool.c).
 *
 * What: n threads that stay alive for the lifetime of a model and run one parallel loop at a
 * time. The caller of eng_threadpool_for() is thread 0 and works too, so a pool of n threads
 * starts n - 1 workers. Work is handed out in chunks of `chunk` indices through an atomic
 * counter, so a thread that finishes early takes the next chunk instead of idling (rows of a
 * weight matrix cost the same, but threads share cores with the rest of the daemon).
 *
 * Why this way: a decode step runs a few hundred small parallel loops (seven matmuls per
 * layer); waking sleeping threads through a condition variable for each would cost more than
 * the loops. Workers therefore spin briefly on a generation counter after each loop and only
 * then sleep on the condition variable, like llama.cpp's pool; a loop whose workers are spinning
 * costs no lock and no system call. The caller waits only for workers that took part in a loop:
 * when another process holds a core, a worker that has not started by the time the chunks run
 * out is left out rather than waited for. Nothing is allocated per loop.
 *
 * Threads: one loop at a time per pool; eng_threadpool_for() must not be called concurrently
 * on the same pool, nor from inside a task. A pool belongs to whoever created it.
 */
#ifndef ENG_THREADPOOL_H
#define ENG_THREADPOOL_H

#include <stdint.h>

#include "../../base/base.h"

#define ENG_THREADPOOL_MAX_THREADS 256

/* One chunk of a parallel loop: indices [begin, end); ith is the running thread (0 = caller),
 * below eng_threadpool_n_threads(). */
typedef void (*eng_task_fn)(void *arg, int64_t begin, int64_t end, int ith);

struct eng_threadpool; /* opaque */

/* Starts n_threads - 1 workers (n_threads 1..ENG_THREADPOOL_MAX_THREADS; 1 runs everything on
 * the caller). Errors: AG_EINVAL (bad count), AG_EIO (pthread_create failed). */
int eng_threadpool_new(int n_threads, struct eng_threadpool **out, struct ag_err *err);
/* Stops and joins the workers. NULL is fine. */
void eng_threadpool_free(struct eng_threadpool *tp);
int eng_threadpool_n_threads(const struct eng_threadpool *tp);

/* Runs fn over [0, n) in chunks of chunk indices (chunk < 1 counts as 1) on every thread and
 * returns when all chunks are done. A loop with a single chunk runs on the caller alone. */
void eng_threadpool_for(struct eng_threadpool *tp, int64_t n, int64_t chunk, eng_task_fn fn,
                        void *arg);
/* The same with chunks that shrink as the loop drains: each is a share of the indices left
 * (whole multiples of grain, at least grain; grain < 1 counts as 1), so the threads run out of
 * work together where equal chunks would leave one waiting for another's last chunk. */
void eng_threadpool_for_guided(struct eng_threadpool *tp, int64_t n, int64_t grain, eng_task_fn fn,
                               void *arg);

#endif
