/*
 * test_threadpool.c - the engine's compute thread pool (engine/cpu/threadpool.h).
 *
 * Every index of a loop must be visited exactly once, by a thread index in range, and every
 * write a task makes must be visible to the caller when the loop returns, in the cases the
 * join/close protocol has to get right: loops back to back (workers spinning), loops after a
 * pause (workers asleep), more threads than cores (workers off the CPU, so the caller finishes
 * without them), and chunks that take a while (the caller waits for a worker inside a loop).
 * Every other loop is a guided one (eng_threadpool_for_guided), whose chunks must also start
 * and end on whole grains (the last one at the loop's end).
 */
#include "../engine/cpu/threadpool.h"
#include "test.h"

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum { N_MAX = 1000 };

struct count_job {
    _Atomic int *hits;   /* (N_MAX) times each index was visited */
    int *plain;          /* (N_MAX) plain writes: visible to the caller after the loop */
    int stamp;           /* the value this loop writes to plain */
    _Atomic int bad_ith; /* tasks with a bad thread index or (guided) chunk */
    int n_threads;
    int slow_every; /* 0, or: sleep 50 us in chunks whose begin is a multiple of this */
    int64_t grain;  /* a guided loop's grain, or 0 */
    int64_t n;      /* the loop's length */
};

static void count_task(void *arg, int64_t begin, int64_t end, int ith)
{
    struct count_job *j = arg;
    if (ith < 0 || ith >= j->n_threads) atomic_fetch_add(&j->bad_ith, 1);
    if (j->grain && (begin % j->grain || (end % j->grain && end != j->n)))
        atomic_fetch_add(&j->bad_ith, 1);
    if (j->slow_every && begin % j->slow_every == 0) {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    for (int64_t i = begin; i < end; i++) {
        atomic_fetch_add_explicit(&j->hits[i], 1, memory_order_relaxed);
        j->plain[i] = j->stamp;
    }
}

/* Runs iters loops on a pool of nt threads; pause_every > 0 sleeps 3 ms (longer than the
 * workers spin) before every pause_every-th loop. Returns the number of bad indices. */
static int run_loops(int nt, int iters, int pause_every, int slow_every)
{
    static _Atomic int hits[N_MAX];
    static int plain[N_MAX];
    struct ag_err err = {0};
    struct eng_threadpool *tp;
    if (eng_threadpool_new(nt, &tp, &err) != 0) return -1;
    struct count_job j = {.hits = hits, .plain = plain, .n_threads = nt, .slow_every = slow_every};
    atomic_init(&j.bad_ith, 0);
    int bad = 0;
    for (int iter = 0; iter < iters; iter++) {
        const int64_t n = 1 + (iter * 37) % N_MAX, chunk = 1 + iter % 7;
        for (int64_t i = 0; i < n; i++) atomic_store_explicit(&hits[i], 0, memory_order_relaxed);
        j.stamp = iter + 1;
        if (pause_every && iter % pause_every == 0) {
            struct timespec ts = {0, 3000000};
            nanosleep(&ts, NULL);
        }
        j.n = n;
        j.grain = iter % 2 ? chunk : 0;
        if (j.grain)
            eng_threadpool_for_guided(tp, n, chunk, count_task, &j);
        else
            eng_threadpool_for(tp, n, chunk, count_task, &j);
        for (int64_t i = 0; i < n; i++)
            bad +=
                atomic_load_explicit(&hits[i], memory_order_relaxed) != 1 || plain[i] != iter + 1;
    }
    bad += atomic_load(&j.bad_ith);
    eng_threadpool_free(tp);
    return bad;
}

static void test_errors(void)
{
    struct ag_err err = {0};
    struct eng_threadpool *tp;
    CHECK(eng_threadpool_new(0, &tp, &err) == AG_EINVAL);
    CHECK(eng_threadpool_new(ENG_THREADPOOL_MAX_THREADS + 1, &tp, &err) == AG_EINVAL);
    eng_threadpool_free(NULL);
    CHECK(eng_threadpool_new(3, &tp, &err) == 0);
    CHECK(eng_threadpool_n_threads(tp) == 3);
    eng_threadpool_for(tp, 0, 1, count_task, NULL); /* empty loops never call the task */
    eng_threadpool_for(tp, -5, 1, count_task, NULL);
    eng_threadpool_free(tp);
}

static void test_back_to_back(void)
{
    for (int nt = 1; nt <= 4; nt++) {
        const int bad = run_loops(nt, 5000, 0, 0);
        CHECKF(bad == 0, "%d threads: %d bad indices", nt, bad);
    }
}

static void test_sleeping_workers(void)
{
    for (int nt = 2; nt <= 3; nt++) {
        const int bad = run_loops(nt, 200, 2, 0);
        CHECKF(bad == 0, "%d threads: %d bad indices", nt, bad);
    }
}

static void test_oversubscribed(void)
{
    /* More threads than this machine has cores: workers are often off the CPU. */
    const int bad = run_loops(9, 3000, 0, 0);
    CHECKF(bad == 0, "%d bad indices", bad);
}

static void test_slow_chunks(void)
{
    for (int nt = 2; nt <= 5; nt += 3) {
        const int bad = run_loops(nt, 300, 50, 5);
        CHECKF(bad == 0, "%d threads: %d bad indices", nt, bad);
    }
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    RUN(test_errors);
    RUN(test_back_to_back);
    RUN(test_sleeping_workers);
    RUN(test_oversubscribed);
    RUN(test_slow_chunks);
    return TEST_END();
}
