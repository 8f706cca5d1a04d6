/*
 * memd.c - the agents' archival memory as a typed service: add a fact, search facts, each a job
 * for the storage thread whose answer comes back on the loop. The memory.add and memory.search
 * methods and the remember/recall tools are both thin adapters over it.
 */
#include "agentd.h"

#include <stdlib.h>
#include <string.h>

struct memjob {
    struct storeq_job base; /* must be first */
    memd_fn done;           /* the caller's, on the loop */
    void *ud;
    bool search;
    char *agent, *text;
    size_t limit;
    char **texts; /* search: the matches */
    size_t n;
    int64_t id; /* add: the new memory's id */
    int rc;
    struct ag_err err;
};

static void memjob_work(struct storeq_job *base, struct mem_store *st)
{
    struct memjob *j = (struct memjob *)base;
    if (j->search)
        j->rc = mem_memory_search(st, j->agent, j->text, j->limit, &j->texts, &j->n, &j->err);
    else
        j->rc = mem_memory_add(st, j->agent, j->text, &j->id, &j->err);
}

static void memjob_done(struct storeq_job *base)
{
    struct memjob *j = (struct memjob *)base;
    struct memd_result res = {.id = j->id, .texts = j->texts, .n = j->n};
    j->done(j->ud, &res, j->rc ? &j->err : NULL);
    mem_strings_free(j->texts, j->n);
    free(j->agent);
    free(j->text);
    free(j);
}

static void submit(struct agentd *d, bool search, const char *agent, const char *text, size_t limit,
                   memd_fn done, void *ud)
{
    struct memjob *j = ag_calloc(1, sizeof(*j));
    j->base.work = memjob_work;
    j->base.done = memjob_done;
    j->done = done;
    j->ud = ud;
    j->search = search;
    j->agent = ag_strdup(agent);
    j->text = text ? ag_strdup(text) : NULL; /* search: NULL lists the latest */
    j->limit = limit;
    storeq_submit(d->sq, &j->base);
}

void memd_add(struct agentd *d, const char *agent, const char *text, memd_fn done, void *ud)
{
    submit(d, false, agent, text, 0, done, ud);
}

void memd_search(struct agentd *d, const char *agent, const char *query, size_t limit, memd_fn done,
                 void *ud)
{
    submit(d, true, agent, query, limit ? limit : 5, done, ud);
}
