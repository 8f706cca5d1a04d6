/*
 * runs.c - agent runs, their event logs and archival memories (memory.h).
 *
 * A run's log is what a client replays after a disconnect, so its writes follow one rule: an
 * event is committed before anyone sees it, and a commit carries everything that happened
 * together (the events of a step, the messages they append to the session, the run's counters
 * and state) in one transaction. After kill -9 the file holds a prefix of the run, never half a
 * step. Payloads are JSON text built by the caller; the store only checks that event numbers
 * follow on.
 */
#include "memory.h"
#include "memory_int.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_COLS                                                                                   \
    "r.id, r.uid, s.uid, a.name, r.state, r.input, r.output, r.error, r.reason, r.steps, "         \
    "r.tool_calls, r.prompt_tokens, r.completion_tokens, r.last_seq, r.created_ms, "               \
    "r.updated_ms, coalesce(r.ended_ms, 0)"
#define RUN_FROM                                                                                   \
    " FROM runs r JOIN sessions s ON s.id = r.session_id JOIN agents a ON a.id = s.agent_id"

/* Statement slots in the store's extra cache, with their SQL. */
enum {
    Q_SESSION_AGENT,
    Q_SESSION_NEW,
    Q_RUN_INSERT,
    Q_EVENT_INSERT,
    Q_CREATED_EVENT,
    Q_RUN_GET,
    Q_RUN_IDS,
    Q_RUN_UPDATE,
    Q_SESSION_TOUCH,
    Q_RUN_LIST,
    Q_RUN_LIST_SESSION,
    Q_RUN_LIST_AGENT,
    Q_EVENTS,
    Q_RUNNING,
    Q_INTERRUPT,
    Q_INTERRUPT_EVENT,
    Q_MEMORY_ADD,
    Q_MEMORY_SEARCH,
    Q_MEMORY_RECENT,
    Q_COUNT
};

static const char *const sql[Q_COUNT] = {
    [Q_SESSION_AGENT] = "SELECT s.id, a.name FROM sessions s JOIN agents a ON a.id = s.agent_id "
                        "WHERE s.uid = ?1",
    [Q_SESSION_NEW] = "INSERT INTO sessions (uid, agent_id, title, created_ms, updated_ms) "
                      "SELECT ?1, id, ?3, ?4, ?4 FROM agents WHERE name = ?2",
    [Q_RUN_INSERT] = "INSERT INTO runs (uid, session_id, state, input, last_seq, created_ms, "
                     "updated_ms) VALUES (?1, ?2, 'running', ?3, 1, ?4, ?4)",
    [Q_EVENT_INSERT] = "INSERT INTO run_events (run_id, seq, type, payload, created_ms) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_CREATED_EVENT] = "INSERT INTO run_events (run_id, seq, type, payload, created_ms) "
                        "VALUES (?1, 1, 'run.created', json_object('run_id', ?2, 'session_id', "
                        "?3, 'agent', ?4, 'input', ?5), ?6)",
    [Q_RUN_GET] = "SELECT " RUN_COLS RUN_FROM " WHERE r.uid = ?1",
    [Q_RUN_IDS] = "SELECT id, session_id, last_seq, state FROM runs WHERE uid = ?1",
    [Q_RUN_UPDATE] =
        "UPDATE runs SET state = coalesce(?2, state), output = coalesce(?3, output), "
        "error = coalesce(?4, error), reason = coalesce(?5, reason), steps = ?6, "
        "tool_calls = ?7, prompt_tokens = ?8, completion_tokens = ?9, last_seq = ?10, "
        "updated_ms = ?11, ended_ms = CASE WHEN ?2 IS NOT NULL AND ?2 <> 'running' THEN ?11 "
        "ELSE ended_ms END WHERE id = ?1",
    [Q_SESSION_TOUCH] = "UPDATE sessions SET updated_ms = ?2 WHERE id = ?1",
    [Q_RUN_LIST] = "SELECT " RUN_COLS RUN_FROM " ORDER BY r.id DESC LIMIT ?1",
    [Q_RUN_LIST_SESSION] = "SELECT " RUN_COLS RUN_FROM " WHERE s.uid = ?2 ORDER BY r.id DESC "
                           "LIMIT ?1",
    [Q_RUN_LIST_AGENT] = "SELECT " RUN_COLS RUN_FROM " WHERE a.name = ?2 ORDER BY r.id DESC "
                         "LIMIT ?1",
    [Q_EVENTS] = "SELECT e.seq, e.type, e.payload, e.created_ms FROM run_events e JOIN runs r ON "
                 "r.id = e.run_id WHERE r.uid = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3",
    [Q_RUNNING] = "SELECT id, uid, last_seq FROM runs WHERE state = 'running'",
    [Q_INTERRUPT] = "UPDATE runs SET state = 'interrupted', reason = 'interrupted', error = ?2, "
                    "last_seq = last_seq + 1, updated_ms = ?3, ended_ms = ?3 WHERE id = ?1",
    [Q_INTERRUPT_EVENT] = "INSERT INTO run_events (run_id, seq, type, payload, created_ms) "
                          "VALUES (?1, ?2, 'run.failed', json_object('run_id', ?3, 'state', "
                          "'interrupted', 'reason', 'interrupted', 'error', ?4), ?5)",
    [Q_MEMORY_ADD] = "INSERT INTO memories (agent_id, text, created_ms) "
                     "SELECT id, ?2, ?3 FROM agents WHERE name = ?1",
    [Q_MEMORY_SEARCH] = "SELECT m.text FROM memories_fts f JOIN memories m ON m.id = f.rowid "
                        "WHERE memories_fts MATCH ?1 AND m.agent_id = (SELECT id FROM agents "
                        "WHERE name = ?2) ORDER BY f.rank LIMIT ?3",
    [Q_MEMORY_RECENT] = "SELECT m.text FROM memories m JOIN agents a ON a.id = m.agent_id "
                        "WHERE a.name = ?1 ORDER BY m.id DESC LIMIT ?2",
};

_Static_assert(Q_COUNT <= MEM__EXTRA_STMTS, "raise MEM__EXTRA_STMTS");

#define INTERRUPTED_MSG "agentd stopped while the run was in progress (crash or kill)"

static sqlite3_stmt *q(struct mem_store *st, int id, struct ag_err *err)
{
    return mem__stmt(st, id, sql[id], err);
}

static int insert_event(struct mem_store *st, int64_t run_id, const struct mem_event *e,
                        int64_t now, struct ag_err *err)
{
    sqlite3_stmt *s = q(st, Q_EVENT_INSERT, err);
    if (!s) return AG_EDB;
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, e->seq);
    mem__bind_text(s, 3, e->type);
    mem__bind_text(s, 4, e->payload ? e->payload : "{}");
    sqlite3_bind_int64(s, 5, now);
    int rc = mem__step(st, s, "insert run event", NULL, err);
    mem__done(s);
    return rc < 0 ? rc : 0;
}

/* A session with a new message is the most recently updated. */
static int touch_session(struct mem_store *st, int64_t sid, int64_t now, struct ag_err *err)
{
    sqlite3_stmt *s = q(st, Q_SESSION_TOUCH, err);
    if (!s) return AG_EDB;
    sqlite3_bind_int64(s, 1, sid);
    sqlite3_bind_int64(s, 2, now);
    int rc = mem__step(st, s, "update session", NULL, err);
    mem__done(s);
    return rc < 0 ? rc : 0;
}

/* Finds or creates the run's session; *sid gets its rowid, uid (21 bytes) its public id. */
static int run_session(struct mem_store *st, const char *agent, const char *session_uid,
                       const char *input, int64_t now, int64_t *sid, char *uid, char **agent_out,
                       struct ag_err *err)
{
    sqlite3_stmt *s;
    int rc;
    if (session_uid && *session_uid) {
        if (!(s = q(st, Q_SESSION_AGENT, err))) return AG_EDB;
        mem__bind_text(s, 1, session_uid);
        rc = mem__step(st, s, "read session", NULL, err);
        if (rc == SQLITE_ROW) {
            *sid = sqlite3_column_int64(s, 0);
            *agent_out = mem__col_str(s, 1);
        }
        mem__done(s);
        if (rc == SQLITE_DONE)
            return ag_err_set(err, AG_ENOTFOUND, "session '%s' not found", session_uid);
        if (rc < 0) return rc;
        if (agent && *agent && strcmp(agent, *agent_out) != 0)
            return ag_err_set(err, AG_EINVAL, "session '%s' belongs to agent '%s', not '%s'",
                              session_uid, *agent_out, agent);
        snprintf(uid, 21, "%s", session_uid);
        return 0;
    }
    if (!agent || !*agent) return ag_err_set(err, AG_EINVAL, "a run needs an agent or a session");
    /* A new session is titled with the start of its first message. */
    char title[61];
    size_t n = ag_utf8_prefix(input, strlen(input), 60);
    memcpy(title, input, n);
    title[n] = '\0';
    if ((rc = mem__new_uid("ses_", uid, err)) < 0) return rc;
    if (!(s = q(st, Q_SESSION_NEW, err))) return AG_EDB;
    mem__bind_text(s, 1, uid);
    mem__bind_text(s, 2, agent);
    mem__bind_text(s, 3, title);
    sqlite3_bind_int64(s, 4, now);
    rc = mem__step(st, s, "insert session", NULL, err);
    mem__done(s);
    if (rc < 0) return rc;
    if (sqlite3_changes(mem__db(st)) == 0)
        return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", agent);
    *sid = sqlite3_last_insert_rowid(mem__db(st));
    *agent_out = ag_strdup(agent);
    return 0;
}

int mem_run_create(struct mem_store *st, const char *agent, const char *session_uid,
                   const char *input, struct mem_run *out, struct mem_message **history,
                   size_t *n_history, struct ag_err *err)
{
    int64_t now = ag_wall_ms(), sid = 0;
    char ses[21], run[21];
    char *agent_name = NULL;
    sqlite3_stmt *s;
    int rc;

    memset(out, 0, sizeof(*out));
    if (history) *history = NULL, *n_history = 0;
    if ((rc = mem__check_str("run input", input, err)) < 0) return rc;
    if ((rc = mem__new_uid("run_", run, err)) < 0) return rc;
    if ((rc = mem__tx_begin(st, err)) < 0) return rc;
    if ((rc = run_session(st, agent, session_uid, input, now, &sid, ses, &agent_name, err)) < 0)
        goto fail;
    if (history && (rc = mem_message_list(st, ses, 0, 0, history, n_history, err)) < 0) goto fail;

    rc = AG_EDB;
    if (!(s = q(st, Q_RUN_INSERT, err))) goto fail;
    mem__bind_text(s, 1, run);
    sqlite3_bind_int64(s, 2, sid);
    mem__bind_text(s, 3, input);
    sqlite3_bind_int64(s, 4, now);
    rc = mem__step(st, s, "insert run", NULL, err);
    mem__done(s);
    if (rc < 0) goto fail;
    int64_t run_id = sqlite3_last_insert_rowid(mem__db(st));

    struct mem_message m = {.role = "user", .content = (char *)input, .created_ms = now};
    if ((rc = mem__message_insert(st, sid, &m, err)) < 0) goto fail;
    if ((rc = touch_session(st, sid, now, err)) < 0) goto fail;

    rc = AG_EDB;
    if (!(s = q(st, Q_CREATED_EVENT, err))) goto fail;
    sqlite3_bind_int64(s, 1, run_id);
    mem__bind_text(s, 2, run);
    mem__bind_text(s, 3, ses);
    mem__bind_text(s, 4, agent_name);
    mem__bind_text(s, 5, input);
    sqlite3_bind_int64(s, 6, now);
    rc = mem__step(st, s, "insert run event", NULL, err);
    mem__done(s);
    if (rc < 0) goto fail;
    if ((rc = mem__tx_commit(st, err)) < 0) goto fail;

    out->id = run_id;
    out->uid = ag_strdup(run);
    out->session = ag_strdup(ses);
    out->agent = agent_name;
    out->state = ag_strdup("running");
    out->input = ag_strdup(input);
    out->last_seq = 1;
    out->created_ms = out->updated_ms = now;
    return 0;
fail:
    mem__tx_rollback(st);
    free(agent_name);
    if (history) {
        mem_message_list_free(*history, *n_history);
        *history = NULL, *n_history = 0;
    }
    return rc;
}

int mem_run_write(struct mem_store *st, const struct mem_run_write *w, struct ag_err *err)
{
    int64_t now = ag_wall_ms(), run_id = 0, sid = 0, last = 0;
    char *state = NULL;
    sqlite3_stmt *s;
    int rc;

    if ((rc = mem__check_str("run id", w->run_uid, err)) < 0) return rc;
    if ((rc = mem__tx_begin(st, err)) < 0) return rc;
    rc = AG_EDB;
    if (!(s = q(st, Q_RUN_IDS, err))) goto fail;
    mem__bind_text(s, 1, w->run_uid);
    rc = mem__step(st, s, "read run", NULL, err);
    if (rc == SQLITE_ROW) {
        run_id = sqlite3_column_int64(s, 0);
        sid = sqlite3_column_int64(s, 1);
        last = sqlite3_column_int64(s, 2);
        state = mem__col_str(s, 3);
    }
    mem__done(s);
    if (rc == SQLITE_DONE) rc = ag_err_set(err, AG_ENOTFOUND, "run '%s' not found", w->run_uid);
    if (rc < 0) goto fail;
    if (strcmp(state, "running") != 0) {
        rc = ag_err_set(err, AG_EINVAL, "run '%s' has ended (%s)", w->run_uid, state);
        goto fail;
    }
    for (size_t i = 0; i < w->n_events; i++) {
        if (w->events[i].seq != last + 1) {
            rc = ag_err_set(err, AG_EINVAL, "run '%s': event seq %lld does not follow %lld",
                            w->run_uid, (long long)w->events[i].seq, (long long)last);
            goto fail;
        }
        if ((rc = insert_event(st, run_id, &w->events[i], now, err)) < 0) goto fail;
        last++;
    }
    for (size_t i = 0; i < w->n_msgs; i++) {
        struct mem_message m = w->msgs[i];
        m.created_ms = now;
        if ((rc = mem__message_insert(st, sid, &m, err)) < 0) goto fail;
    }
    if (w->n_msgs && (rc = touch_session(st, sid, now, err)) < 0) goto fail;
    rc = AG_EDB;
    if (!(s = q(st, Q_RUN_UPDATE, err))) goto fail;
    sqlite3_bind_int64(s, 1, run_id);
    mem__bind_text(s, 2, w->state);
    mem__bind_text(s, 3, w->output);
    mem__bind_text(s, 4, w->error);
    mem__bind_text(s, 5, w->reason);
    sqlite3_bind_int64(s, 6, w->steps);
    sqlite3_bind_int64(s, 7, w->tool_calls);
    sqlite3_bind_int64(s, 8, w->prompt_tokens);
    sqlite3_bind_int64(s, 9, w->completion_tokens);
    sqlite3_bind_int64(s, 10, last);
    sqlite3_bind_int64(s, 11, now);
    rc = mem__step(st, s, "update run", NULL, err);
    mem__done(s);
    if (rc < 0) goto fail;
    if ((rc = mem__tx_commit(st, err)) < 0) goto fail;
    free(state);
    return 0;
fail:
    mem__tx_rollback(st);
    free(state);
    return rc;
}

static void read_run(sqlite3_stmt *s, struct mem_run *r)
{
    r->id = sqlite3_column_int64(s, 0);
    r->uid = mem__col_str(s, 1);
    r->session = mem__col_str(s, 2);
    r->agent = mem__col_str(s, 3);
    r->state = mem__col_str(s, 4);
    r->input = mem__col_str(s, 5);
    r->output = mem__col_str(s, 6);
    r->error = mem__col_str(s, 7);
    r->reason = mem__col_str(s, 8);
    r->steps = sqlite3_column_int64(s, 9);
    r->tool_calls = sqlite3_column_int64(s, 10);
    r->prompt_tokens = sqlite3_column_int64(s, 11);
    r->completion_tokens = sqlite3_column_int64(s, 12);
    r->last_seq = sqlite3_column_int64(s, 13);
    r->created_ms = sqlite3_column_int64(s, 14);
    r->updated_ms = sqlite3_column_int64(s, 15);
    r->ended_ms = sqlite3_column_int64(s, 16);
}

int mem_run_get(struct mem_store *st, const char *uid, struct mem_run *out, struct ag_err *err)
{
    sqlite3_stmt *s;
    int rc;
    memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("run id", uid, err)) < 0) return rc;
    if (!(s = q(st, Q_RUN_GET, err))) return AG_EDB;
    mem__bind_text(s, 1, uid);
    rc = mem__step(st, s, "read run", NULL, err);
    if (rc == SQLITE_ROW) read_run(s, out);
    mem__done(s);
    if (rc == SQLITE_DONE) return ag_err_set(err, AG_ENOTFOUND, "run '%s' not found", uid);
    return rc < 0 ? rc : 0;
}

int mem_run_list(struct mem_store *st, const char *agent, const char *session_uid, size_t limit,
                 struct mem_run **out, size_t *n, struct ag_err *err)
{
    struct mem_run *list = NULL;
    size_t len = 0, cap = 0;
    int id = session_uid ? Q_RUN_LIST_SESSION : agent ? Q_RUN_LIST_AGENT : Q_RUN_LIST;
    sqlite3_stmt *s = q(st, id, err);
    int rc;
    *out = NULL;
    *n = 0;
    if (!s) return AG_EDB;
    sqlite3_bind_int64(s, 1, limit ? (int64_t)limit : 100);
    if (id != Q_RUN_LIST) mem__bind_text(s, 2, session_uid ? session_uid : agent);
    while ((rc = mem__step(st, s, "list runs", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        memset(&list[len], 0, sizeof(*list));
        read_run(s, &list[len++]);
    }
    mem__done(s);
    if (rc < 0) {
        mem_run_list_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int mem_run_events(struct mem_store *st, const char *uid, int64_t after_seq, size_t limit,
                   struct mem_event **out, size_t *n, struct ag_err *err)
{
    struct mem_event *list = NULL;
    size_t len = 0, cap = 0;
    sqlite3_stmt *s = q(st, Q_EVENTS, err);
    int rc;
    *out = NULL;
    *n = 0;
    if (!s) return AG_EDB;
    mem__bind_text(s, 1, uid);
    sqlite3_bind_int64(s, 2, after_seq);
    sqlite3_bind_int64(s, 3, limit ? (int64_t)limit : -1);
    while ((rc = mem__step(st, s, "list run events", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        list[len].seq = sqlite3_column_int64(s, 0);
        list[len].type = mem__col_str(s, 1);
        list[len].payload = mem__col_str(s, 2);
        list[len].created_ms = sqlite3_column_int64(s, 3);
        len++;
    }
    mem__done(s);
    if (rc < 0) {
        mem_event_list_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int mem_run_interrupt_all(struct mem_store *st, int64_t *n_out, struct ag_err *err)
{
    int64_t now = ag_wall_ms(), n = 0;
    sqlite3_stmt *s, *u, *e;
    int rc;
    if (n_out) *n_out = 0;
    if ((rc = mem__tx_begin(st, err)) < 0) return rc;
    rc = AG_EDB;
    if (!(s = q(st, Q_RUNNING, err)) || !(u = q(st, Q_INTERRUPT, err)) ||
        !(e = q(st, Q_INTERRUPT_EVENT, err)))
        goto fail;
    while ((rc = mem__step(st, s, "list running runs", NULL, err)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0), last = sqlite3_column_int64(s, 2);
        sqlite3_bind_int64(e, 1, id);
        sqlite3_bind_int64(e, 2, last + 1);
        sqlite3_bind_text(e, 3, (const char *)sqlite3_column_text(s, 1), -1, SQLITE_TRANSIENT);
        mem__bind_text(e, 4, INTERRUPTED_MSG);
        sqlite3_bind_int64(e, 5, now);
        int r1 = mem__step(st, e, "insert run event", NULL, err);
        mem__done(e);
        sqlite3_bind_int64(u, 1, id);
        mem__bind_text(u, 2, INTERRUPTED_MSG);
        sqlite3_bind_int64(u, 3, now);
        int r2 = r1 < 0 ? r1 : mem__step(st, u, "update run", NULL, err);
        mem__done(u);
        if (r2 < 0) {
            rc = r2;
            break;
        }
        n++;
    }
    mem__done(s);
    if (rc < 0) goto fail;
    if ((rc = mem__tx_commit(st, err)) < 0) goto fail;
    if (n_out) *n_out = n;
    return 0;
fail:
    mem__tx_rollback(st);
    return rc;
}

void mem_run_release(struct mem_run *r)
{
    if (!r) return;
    free(r->uid);
    free(r->session);
    free(r->agent);
    free(r->state);
    free(r->input);
    free(r->output);
    free(r->error);
    free(r->reason);
    memset(r, 0, sizeof(*r));
}

void mem_run_list_free(struct mem_run *list, size_t n)
{
    for (size_t i = 0; i < n; i++) mem_run_release(&list[i]);
    free(list);
}

void mem_event_list_free(struct mem_event *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].type);
        free(list[i].payload);
    }
    free(list);
}

/* ---- memories ---- */

int mem_memory_add(struct mem_store *st, const char *agent, const char *text, int64_t *id,
                   struct ag_err *err)
{
    sqlite3_stmt *s;
    int rc;
    if ((rc = mem__check_str("agent name", agent, err)) < 0 ||
        (rc = mem__check_str("memory text", text, err)) < 0)
        return rc;
    if (!(s = q(st, Q_MEMORY_ADD, err))) return AG_EDB;
    mem__bind_text(s, 1, agent);
    mem__bind_text(s, 2, text);
    sqlite3_bind_int64(s, 3, ag_wall_ms());
    rc = mem__step(st, s, "insert memory", NULL, err);
    mem__done(s);
    if (rc < 0) return rc;
    if (sqlite3_changes(mem__db(st)) == 0)
        return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", agent);
    if (id) *id = sqlite3_last_insert_rowid(mem__db(st));
    return 0;
}

/* Words too common to say what a question is about (English; other text keeps every word). */
static bool stopword(const unsigned char *w, size_t n)
{
    static const char *const words[] = {
        "a",     "an",    "and",   "are",  "as",   "at",   "be",   "by",   "can",  "did",
        "do",    "does",  "for",   "from", "had",  "has",  "have", "how",  "i",    "in",
        "is",    "it",    "its",   "me",   "my",   "of",   "on",   "or",   "our",  "so",
        "that",  "the",   "their", "this", "to",   "was",  "we",   "were", "what", "when",
        "where", "which", "who",   "why",  "will", "with", "you",  "your", NULL};
    char low[8];
    if (n >= sizeof(low)) return false;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower(w[i]);
    low[n] = '\0';
    for (size_t i = 0; words[i]; i++)
        if (strcmp(words[i], low) == 0) return true;
    return false;
}

/* The FTS5 query for text's words: each run of letters and digits (and any byte of a UTF-8
 * sequence) becomes a quoted term, so no character of the input is FTS5 syntax; terms are ORed.
 * NULL when no word is left. */
static char *fts_query_words(const char *text, bool skip_common)
{
    struct ag_buf b;
    ag_buf_init(&b);
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        while (*p && !(isalnum(*p) || *p >= 0x80)) p++;
        const unsigned char *w = p;
        while (*p && (isalnum(*p) || *p >= 0x80)) p++;
        if (p > w && !(skip_common && stopword(w, (size_t)(p - w)))) {
            if (b.len) ag_buf_puts(&b, " OR ");
            ag_buf_putc(&b, '"');
            ag_buf_append(&b, w, (size_t)(p - w));
            ag_buf_putc(&b, '"');
        }
    }
    if (!b.len) {
        ag_buf_release(&b);
        return NULL;
    }
    ag_buf_putc(&b, '\0');
    return b.data;
}

/* Common words are left out, unless nothing else is left. */
static char *fts_query(const char *text)
{
    char *q = fts_query_words(text, true);
    return q ? q : fts_query_words(text, false);
}

int mem_memory_search(struct mem_store *st, const char *agent, const char *query, size_t limit,
                      char ***texts, size_t *n, struct ag_err *err)
{
    char **list = NULL;
    size_t len = 0, cap = 0;
    char *fq = fts_query(query ? query : "");
    sqlite3_stmt *s = fq ? q(st, Q_MEMORY_SEARCH, err) : q(st, Q_MEMORY_RECENT, err);
    int rc;
    *texts = NULL;
    *n = 0;
    if (!s) {
        free(fq);
        return AG_EDB;
    }
    if (fq) {
        mem__bind_text(s, 1, fq);
        mem__bind_text(s, 2, agent);
        sqlite3_bind_int64(s, 3, limit ? (int64_t)limit : 5);
    } else {
        mem__bind_text(s, 1, agent);
        sqlite3_bind_int64(s, 2, limit ? (int64_t)limit : 5);
    }
    while ((rc = mem__step(st, s, "search memories", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        list[len++] = mem__col_str(s, 0);
    }
    mem__done(s);
    free(fq);
    if (rc < 0) {
        mem_strings_free(list, len);
        return rc;
    }
    *texts = list;
    *n = len;
    return 0;
}

void mem_strings_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}
