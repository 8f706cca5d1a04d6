/*
 * store.c - the SQLite store: one connection, its pragmas, and the agent, session and message
 * operations of memory.h.
 *
 * Durability. The file runs in WAL mode with synchronous=FULL, so a COMMIT returns only after the
 * WAL is fsynced: once a call here returns 0 its change survives kill -9 and power loss. Every
 * write is a single statement (SQLite wraps it in its own transaction) or an explicit BEGIN
 * IMMEDIATE .. COMMIT; IMMEDIATE takes the write lock up front so a read-then-write step cannot
 * fail half way with SQLITE_BUSY, and busy_timeout lets another writer finish first.
 *
 * Speed. Appending a message is on the generation hot path, so every statement is prepared once
 * at open (SQLITE_PREPARE_PERSISTENT) and kept on the handle. A statement is reset and its
 * bindings cleared right after use, which also means text bound with SQLITE_STATIC never outlives
 * the caller's string and no read transaction is left open between calls.
 *
 * Errors. A missing row is AG_ENOTFOUND, a duplicate AG_EEXISTS, a bad argument AG_EINVAL, a
 * version conflict AG_EBUSY; whatever SQLite itself reports is AG_EDB with SQLite's message.
 * Outputs are zeroed first, so releasing them is safe whatever the result.
 */
#include "memory.h"
#include "memory_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#define AGENT_COLS "id, name, spec, version, created_ms, updated_ms"
#define SESSION_SELECT                                                                             \
    "SELECT s.id, s.uid, a.name, s.title, s.created_ms, s.updated_ms "                             \
    "FROM sessions s JOIN agents a ON a.id = s.agent_id"
#define MESSAGE_COLS                                                                               \
    "id, session_id, role, content, tool_calls, n_tokens, created_ms, tool_call_id, name"

/* Every statement the store runs after open: name, SQL. */
#define STMT_MAP(X)                                                                                \
    X(BEGIN, "BEGIN IMMEDIATE")                                                                    \
    X(COMMIT, "COMMIT")                                                                            \
    X(ROLLBACK, "ROLLBACK")                                                                        \
    X(AGENT_INSERT, "INSERT INTO agents (name, spec, version, created_ms, updated_ms) "            \
                    "VALUES (?1, ?2, 1, ?3, ?3)")                                                  \
    X(AGENT_GET, "SELECT " AGENT_COLS " FROM agents WHERE name = ?1")                              \
    X(AGENT_UPDATE, "UPDATE agents SET spec = ?2, version = version + 1, updated_ms = ?3 "         \
                    "WHERE id = ?1")                                                               \
    X(AGENT_LIST, "SELECT " AGENT_COLS " FROM agents ORDER BY name")                               \
    X(AGENT_DELETE, "DELETE FROM agents WHERE name = ?1")                                          \
    X(AGENT_COUNT, "SELECT count(*) FROM agents")                                                  \
    X(AGENT_ID, "SELECT id FROM agents WHERE name = ?1")                                           \
    X(SESSION_INSERT, "INSERT INTO sessions (uid, agent_id, title, created_ms, updated_ms) "       \
                      "SELECT ?1, id, ?3, ?4, ?4 FROM agents WHERE name = ?2")                     \
    X(SESSION_GET, SESSION_SELECT " WHERE s.uid = ?1")                                             \
    X(SESSION_LIST, SESSION_SELECT " ORDER BY s.id DESC")                                          \
    X(SESSION_LIST_AGENT, SESSION_SELECT " WHERE s.agent_id = ?1 ORDER BY s.id DESC")              \
    X(SESSION_DELETE, "DELETE FROM sessions WHERE uid = ?1")                                       \
    X(SESSION_ID, "SELECT id FROM sessions WHERE uid = ?1")                                        \
    X(SESSION_TOUCH, "UPDATE sessions SET updated_ms = ?2 WHERE uid = ?1 RETURNING id")            \
    X(MESSAGE_INSERT, "INSERT INTO messages (session_id, role, content, tool_calls, n_tokens, "    \
                      "created_ms, tool_call_id, name) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")   \
    X(MESSAGE_LIST, "SELECT " MESSAGE_COLS " FROM messages WHERE session_id = ?1 AND id > ?2 "     \
                    "ORDER BY id LIMIT ?3")

enum stmt_id {
#define STMT_ENUM(name, sql) STMT_##name,
    STMT_MAP(STMT_ENUM)
#undef STMT_ENUM
        N_STMT
};

static const char *const stmt_sql[N_STMT] = {
#define STMT_SQL(name, sql) sql,
    STMT_MAP(STMT_SQL)
#undef STMT_SQL
};

struct mem_store {
    sqlite3 *db;                           /* the connection; owned */
    char *path;                            /* file path as given to open, for messages; owned */
    int schema_version;                    /* version after migrations at open */
    sqlite3_stmt *stmt[N_STMT];            /* prepared at open, indexed by enum stmt_id; owned */
    sqlite3_stmt *extra[MEM__EXTRA_STMTS]; /* other files' statements, prepared on first use */
};

/* Attempts at a fresh session uid before giving up: a collision among 2^64 is already rare. */
#define UID_ATTEMPTS 4

/* ---- statement helpers ---- */

static int db_fail(struct mem_store *st, const char *what, struct ag_err *err)
{
    return ag_err_set(err, AG_EDB, "database: %s: %s", what, sqlite3_errmsg(st->db));
}

/* Returns the cached statement for id, ready to bind. */
static sqlite3_stmt *stmt(struct mem_store *st, enum stmt_id id)
{
    return st->stmt[id];
}

/* Readies a statement for its next use and drops pointers to the caller's strings. */
void mem__done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Steps s once. Returns SQLITE_ROW or SQLITE_DONE, or AG_EDB with the message set (the caller
 * still calls mem__done()). Errors the caller maps itself (constraints) come back via *sqlite_rc.
 */
int mem__step(struct mem_store *st, sqlite3_stmt *s, const char *what, int *sqlite_rc,
              struct ag_err *err)
{
    int rc = sqlite3_step(s);

    if (sqlite_rc) *sqlite_rc = rc;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return rc;
    return db_fail(st, what, err);
}

/* Runs a statement that returns no rows (or whose rows are not needed). */
static int run(struct mem_store *st, enum stmt_id id, const char *what, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, id);
    int rc = mem__step(st, s, what, NULL, err);

    mem__done(s);
    return rc < 0 ? rc : 0;
}

int mem__tx_begin(struct mem_store *st, struct ag_err *err)
{
    return run(st, STMT_BEGIN, "begin transaction", err);
}

int mem__tx_commit(struct mem_store *st, struct ag_err *err)
{
    return run(st, STMT_COMMIT, "commit", err);
}

/* Rolls back the open transaction, if any (a failed COMMIT may have ended it already). */
void mem__tx_rollback(struct mem_store *st)
{
    if (!sqlite3_get_autocommit(st->db)) run(st, STMT_ROLLBACK, "rollback", NULL);
}

void mem__bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

char *mem__col_str(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? ag_strdup((const char *)t) : NULL;
}

/* Makes room for one more element in a growing array; returns the (possibly moved) array. */
void *mem__grow(void *arr, size_t n, size_t *cap, size_t elem_bytes)
{
    if (n < *cap) return arr;
    *cap = *cap ? *cap * 2 : 16;
    return ag_realloc(arr, *cap * elem_bytes);
}

int mem__check_str(const char *what, const char *v, struct ag_err *err)
{
    if (!v) return ag_err_set(err, AG_EINVAL, "%s is missing", what);
    if (!*v) return ag_err_set(err, AG_EINVAL, "%s is empty", what);
    return 0;
}

/* ---- open and close ---- */

/* Runs a pragma and returns its first column as text in buf (empty when it yields no row). */
static int pragma(struct mem_store *st, const char *sql, char *buf, size_t size, struct ag_err *err)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);

    buf[0] = '\0';
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            snprintf(buf, size, "%s", t ? (const char *)t : "");
            rc = SQLITE_DONE;
        }
    }
    if (rc != SQLITE_DONE)
        ag_err_set(err, AG_EDB, "database '%s': %s (running %s)", st->path, sqlite3_errmsg(st->db),
                   sql);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : AG_EDB;
}

/* Sets the connection up: durability and locking first, since migrations already write. */
static int configure(struct mem_store *st, struct ag_err *err)
{
    const char *file = sqlite3_db_filename(st->db, "main");
    char val[32];

    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, 5000);
    /* Refuse writes that could corrupt the file even if someone injects SQL some day. */
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);

    /* The first statement to read the file: a non-SQLite file fails here. */
    if (pragma(st, "PRAGMA journal_mode = WAL", val, sizeof(val), err) < 0) return AG_EDB;
    /* An in-memory database (tests) has no file name and cannot use WAL; that is fine. */
    if (strcmp(val, "wal") != 0 && file && *file)
        return ag_err_set(err, AG_EDB, "database '%s': cannot switch to WAL mode (journal_mode %s)",
                          st->path, val);
    if (pragma(st, "PRAGMA synchronous = FULL", val, sizeof(val), err) < 0) return AG_EDB;
    if (pragma(st, "PRAGMA foreign_keys = ON", val, sizeof(val), err) < 0) return AG_EDB;
    /* Cascading deletes depend on it; a SQLite built without foreign keys ignores the pragma. */
    if (pragma(st, "PRAGMA foreign_keys", val, sizeof(val), err) < 0) return AG_EDB;
    if (strcmp(val, "1") != 0)
        return ag_err_set(err, AG_EDB, "database '%s': SQLite lacks foreign key support", st->path);
    return 0;
}

int mem_store_open(const char *path, struct mem_store **out, struct ag_err *err)
{
    struct mem_store *st;
    int rc;

    if (!out) return ag_err_set(err, AG_EINVAL, "mem_store_open: out is NULL");
    *out = NULL;
    if ((rc = mem__check_str("database path", path, err)) < 0) return rc;

    st = ag_calloc(1, sizeof(*st));
    st->path = ag_strdup(path);
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = ag_err_set(err, AG_EDB, "database '%s': cannot open: %s", path,
                        st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    if ((rc = configure(st, err)) < 0) goto fail;
    if ((rc = mem__migrate(st->db, path, &st->schema_version, err)) < 0) goto fail;
    for (int i = 0; i < N_STMT; i++) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                               NULL) != SQLITE_OK) {
            rc = ag_err_set(err, AG_EDB, "database '%s': prepare \"%s\": %s", path, stmt_sql[i],
                            sqlite3_errmsg(st->db));
            goto fail;
        }
    }
    *out = st;
    return 0;
fail:
    mem_store_close(st);
    return rc;
}

void mem_store_close(struct mem_store *st)
{
    if (!st) return;
    for (int i = 0; i < N_STMT; i++) sqlite3_finalize(st->stmt[i]);
    for (int i = 0; i < MEM__EXTRA_STMTS; i++) sqlite3_finalize(st->extra[i]);
    /* Every statement is finalized, so this cannot be SQLITE_BUSY; the last connection to close
     * checkpoints the WAL into the main file and removes it. */
    if (sqlite3_close(st->db) != SQLITE_OK)
        ag_warn("database '%s': close: %s", st->path, sqlite3_errmsg(st->db));
    free(st->path);
    free(st);
}

sqlite3_stmt *mem__stmt(struct mem_store *st, int slot, const char *sql, struct ag_err *err)
{
    if (!st->extra[slot] && sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                               &st->extra[slot], NULL) != SQLITE_OK) {
        ag_err_set(err, AG_EDB, "database '%s': prepare \"%s\": %s", st->path, sql,
                   sqlite3_errmsg(st->db));
        return NULL;
    }
    return st->extra[slot];
}

sqlite3 *mem__db(struct mem_store *st)
{
    return st->db;
}

int mem_store_schema_version(struct mem_store *st)
{
    return st->schema_version;
}

/* ---- agents ---- */

static void read_agent(sqlite3_stmt *s, struct mem_agent *a)
{
    a->id = sqlite3_column_int64(s, 0);
    a->name = mem__col_str(s, 1);
    a->spec_json = mem__col_str(s, 2);
    a->version = sqlite3_column_int64(s, 3);
    a->created_ms = sqlite3_column_int64(s, 4);
    a->updated_ms = sqlite3_column_int64(s, 5);
}

int mem_agent_create(struct mem_store *st, const char *name, const char *spec_json,
                     struct mem_agent *out, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_INSERT);
    int64_t now = ag_wall_ms();
    int rc, src;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("agent name", name, err)) < 0) return rc;
    if ((rc = mem__check_str("agent spec", spec_json, err)) < 0) return rc;

    mem__bind_text(s, 1, name);
    mem__bind_text(s, 2, spec_json);
    sqlite3_bind_int64(s, 3, now);
    rc = mem__step(st, s, "insert agent", &src, err);
    mem__done(s);
    if (src == SQLITE_CONSTRAINT_UNIQUE || src == SQLITE_CONSTRAINT_PRIMARYKEY)
        return ag_err_set(err, AG_EEXISTS, "agent '%s' already exists", name);
    if (rc < 0) return rc;
    if (out) {
        out->id = sqlite3_last_insert_rowid(st->db);
        out->name = ag_strdup(name);
        out->spec_json = ag_strdup(spec_json);
        out->version = 1;
        out->created_ms = out->updated_ms = now;
    }
    return 0;
}

int mem_agent_update(struct mem_store *st, const char *name, const char *spec_json,
                     int64_t expect_version, struct mem_agent *out, struct ag_err *err)
{
    struct mem_agent cur = {0};
    sqlite3_stmt *s;
    int64_t now = ag_wall_ms();
    int rc;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("agent name", name, err)) < 0) return rc;
    if ((rc = mem__check_str("agent spec", spec_json, err)) < 0) return rc;
    if (expect_version < 0)
        return ag_err_set(err, AG_EINVAL, "expected version %lld is negative",
                          (long long)expect_version);

    /* Read, compare and write under one write lock, so no other writer slips in between. */
    if ((rc = mem__tx_begin(st, err)) < 0) return rc;
    s = stmt(st, STMT_AGENT_GET);
    mem__bind_text(s, 1, name);
    rc = mem__step(st, s, "read agent", NULL, err);
    if (rc == SQLITE_ROW) read_agent(s, &cur);
    mem__done(s);
    if (rc == SQLITE_DONE) rc = ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", name);
    if (rc < 0) goto fail;
    if (expect_version > 0 && expect_version != cur.version) {
        rc = ag_err_set(err, AG_EBUSY,
                        "agent '%s' is at version %lld, not the expected %lld (changed "
                        "meanwhile; read it again)",
                        name, (long long)cur.version, (long long)expect_version);
        goto fail;
    }

    s = stmt(st, STMT_AGENT_UPDATE);
    sqlite3_bind_int64(s, 1, cur.id);
    mem__bind_text(s, 2, spec_json);
    sqlite3_bind_int64(s, 3, now);
    rc = mem__step(st, s, "update agent", NULL, err);
    mem__done(s);
    if (rc < 0) goto fail;
    if ((rc = mem__tx_commit(st, err)) < 0) goto fail;

    if (out) {
        *out = cur;
        free(out->spec_json);
        out->spec_json = ag_strdup(spec_json);
        out->version = cur.version + 1;
        out->updated_ms = now;
    } else {
        mem_agent_release(&cur);
    }
    return 0;
fail:
    mem__tx_rollback(st);
    mem_agent_release(&cur);
    return rc;
}

int mem_agent_get(struct mem_store *st, const char *name, struct mem_agent *out, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_GET);
    int rc;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("agent name", name, err)) < 0) return rc;

    mem__bind_text(s, 1, name);
    rc = mem__step(st, s, "read agent", NULL, err);
    if (rc == SQLITE_ROW && out) read_agent(s, out);
    mem__done(s);
    if (rc == SQLITE_DONE) return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", name);
    return rc < 0 ? rc : 0;
}

int mem_agent_list(struct mem_store *st, struct mem_agent **out, size_t *n, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_LIST);
    struct mem_agent *list = NULL;
    size_t len = 0, cap = 0;
    int rc;

    if (!out || !n) return ag_err_set(err, AG_EINVAL, "mem_agent_list: out or n is NULL");
    *out = NULL;
    *n = 0;
    while ((rc = mem__step(st, s, "list agents", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        read_agent(s, &list[len++]);
    }
    mem__done(s);
    if (rc < 0) {
        mem_agent_list_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int mem_agent_delete(struct mem_store *st, const char *name, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_DELETE);
    int rc;

    if ((rc = mem__check_str("agent name", name, err)) < 0) return rc;
    /* One statement: the cascade to sessions and messages commits or fails with it. */
    mem__bind_text(s, 1, name);
    rc = mem__step(st, s, "delete agent", NULL, err);
    mem__done(s);
    if (rc < 0) return rc;
    if (sqlite3_changes(st->db) == 0)
        return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", name);
    return 0;
}

int mem_agent_count(struct mem_store *st, int64_t *n, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_COUNT);
    int rc;

    if (!n) return ag_err_set(err, AG_EINVAL, "mem_agent_count: n is NULL");
    *n = 0;
    rc = mem__step(st, s, "count agents", NULL, err);
    if (rc == SQLITE_ROW) *n = sqlite3_column_int64(s, 0);
    mem__done(s);
    return rc < 0 ? rc : 0;
}

void mem_agent_release(struct mem_agent *a)
{
    if (!a) return;
    free(a->name);
    free(a->spec_json);
    memset(a, 0, sizeof(*a));
}

void mem_agent_list_free(struct mem_agent *list, size_t n)
{
    for (size_t i = 0; i < n; i++) mem_agent_release(&list[i]);
    free(list);
}

/* ---- sessions ---- */

/* Writes prefix (4 bytes, "ses_") + 16 lower-case hex digits from the kernel's random pool into
 * buf[21]. */
int mem__new_uid(const char *prefix, char buf[21], struct ag_err *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[8];
    ssize_t got;

    do got = getrandom(r, sizeof(r), 0);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(r))
        return ag_err_set(err, AG_EIO, "getrandom for an id: %s",
                          got < 0 ? strerror(errno) : "short read");
    memcpy(buf, prefix, 4);
    for (size_t i = 0; i < sizeof(r); i++) {
        buf[4 + 2 * i] = hex[r[i] >> 4];
        buf[4 + 2 * i + 1] = hex[r[i] & 15];
    }
    buf[20] = '\0';
    return 0;
}

static void read_session(sqlite3_stmt *s, struct mem_session *ses)
{
    ses->id = sqlite3_column_int64(s, 0);
    ses->uid = mem__col_str(s, 1);
    ses->agent = mem__col_str(s, 2);
    ses->title = mem__col_str(s, 3);
    ses->created_ms = sqlite3_column_int64(s, 4);
    ses->updated_ms = sqlite3_column_int64(s, 5);
}

int mem_session_create(struct mem_store *st, const char *agent, const char *title,
                       struct mem_session *out, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_SESSION_INSERT);
    int64_t now = ag_wall_ms();
    char uid[21];
    int rc, src = SQLITE_OK;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("agent name", agent, err)) < 0) return rc;

    /* INSERT .. SELECT resolves the agent and inserts in one statement: no row, no agent. */
    for (int attempt = 0; attempt < UID_ATTEMPTS; attempt++) {
        if ((rc = mem__new_uid("ses_", uid, err)) < 0) return rc;
        mem__bind_text(s, 1, uid);
        mem__bind_text(s, 2, agent);
        mem__bind_text(s, 3, title);
        sqlite3_bind_int64(s, 4, now);
        rc = mem__step(st, s, "insert session", &src, err);
        mem__done(s);
        if (src != SQLITE_CONSTRAINT_UNIQUE) break;
    }
    if (src == SQLITE_CONSTRAINT_UNIQUE)
        return ag_err_set(err, AG_EDB, "session ids collided %d times; is getrandom broken?",
                          UID_ATTEMPTS);
    if (rc < 0) return rc;
    if (sqlite3_changes(st->db) == 0)
        return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", agent);
    if (out) {
        out->id = sqlite3_last_insert_rowid(st->db);
        out->uid = ag_strdup(uid);
        out->agent = ag_strdup(agent);
        out->title = title ? ag_strdup(title) : NULL;
        out->created_ms = out->updated_ms = now;
    }
    return 0;
}

int mem_session_get(struct mem_store *st, const char *uid, struct mem_session *out,
                    struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_SESSION_GET);
    int rc;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("session id", uid, err)) < 0) return rc;

    mem__bind_text(s, 1, uid);
    rc = mem__step(st, s, "read session", NULL, err);
    if (rc == SQLITE_ROW && out) read_session(s, out);
    mem__done(s);
    if (rc == SQLITE_DONE) return ag_err_set(err, AG_ENOTFOUND, "session '%s' not found", uid);
    return rc < 0 ? rc : 0;
}

/* Looks up an agent's rowid by name. */
static int agent_id(struct mem_store *st, const char *name, int64_t *id, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_AGENT_ID);
    int rc;

    mem__bind_text(s, 1, name);
    rc = mem__step(st, s, "read agent", NULL, err);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(s, 0);
    mem__done(s);
    if (rc == SQLITE_DONE) return ag_err_set(err, AG_ENOTFOUND, "agent '%s' not found", name);
    return rc < 0 ? rc : 0;
}

int mem_session_list(struct mem_store *st, const char *agent, struct mem_session **out, size_t *n,
                     struct ag_err *err)
{
    struct mem_session *list = NULL;
    size_t len = 0, cap = 0;
    sqlite3_stmt *s;
    int64_t aid = 0;
    int rc;

    if (!out || !n) return ag_err_set(err, AG_EINVAL, "mem_session_list: out or n is NULL");
    *out = NULL;
    *n = 0;
    if (agent) {
        if ((rc = mem__check_str("agent name", agent, err)) < 0) return rc;
        if ((rc = agent_id(st, agent, &aid, err)) < 0) return rc;
        s = stmt(st, STMT_SESSION_LIST_AGENT);
        sqlite3_bind_int64(s, 1, aid);
    } else {
        s = stmt(st, STMT_SESSION_LIST);
    }
    while ((rc = mem__step(st, s, "list sessions", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        read_session(s, &list[len++]);
    }
    mem__done(s);
    if (rc < 0) {
        mem_session_list_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int mem_session_delete(struct mem_store *st, const char *uid, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_SESSION_DELETE);
    int rc;

    if ((rc = mem__check_str("session id", uid, err)) < 0) return rc;
    mem__bind_text(s, 1, uid);
    rc = mem__step(st, s, "delete session", NULL, err);
    mem__done(s);
    if (rc < 0) return rc;
    if (sqlite3_changes(st->db) == 0)
        return ag_err_set(err, AG_ENOTFOUND, "session '%s' not found", uid);
    return 0;
}

void mem_session_release(struct mem_session *s)
{
    if (!s) return;
    free(s->uid);
    free(s->agent);
    free(s->title);
    memset(s, 0, sizeof(*s));
}

void mem_session_list_free(struct mem_session *list, size_t n)
{
    for (size_t i = 0; i < n; i++) mem_session_release(&list[i]);
    free(list);
}

/* ---- messages ---- */

static int check_role(const char *role, struct ag_err *err)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool"};

    if (!role) return ag_err_set(err, AG_EINVAL, "message role is missing");
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(role, roles[i]) == 0) return 0;
    return ag_err_set(err, AG_EINVAL,
                      "message role '%s' is not one of system, user, assistant, tool", role);
}

static void read_message(sqlite3_stmt *s, struct mem_message *m)
{
    m->id = sqlite3_column_int64(s, 0);
    m->session_id = sqlite3_column_int64(s, 1);
    m->role = mem__col_str(s, 2);
    m->content = mem__col_str(s, 3);
    m->tool_calls = mem__col_str(s, 4);
    m->n_tokens = sqlite3_column_int64(s, 5);
    m->created_ms = sqlite3_column_int64(s, 6);
    m->tool_call_id = mem__col_str(s, 7);
    m->name = mem__col_str(s, 8);
}

int mem__message_insert(struct mem_store *st, int64_t sid, const struct mem_message *m,
                        struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_MESSAGE_INSERT);
    int rc = check_role(m->role, err);
    if (rc < 0) return rc;
    sqlite3_bind_int64(s, 1, sid);
    mem__bind_text(s, 2, m->role);
    mem__bind_text(s, 3, m->content ? m->content : "");
    mem__bind_text(s, 4, m->tool_calls);
    sqlite3_bind_int64(s, 5, m->n_tokens);
    sqlite3_bind_int64(s, 6, m->created_ms);
    mem__bind_text(s, 7, m->tool_call_id);
    mem__bind_text(s, 8, m->name);
    rc = mem__step(st, s, "insert message", NULL, err);
    mem__done(s);
    return rc < 0 ? rc : 0;
}

int mem_message_append(struct mem_store *st, const char *session_uid, const char *role,
                       const char *content, const char *tool_calls, int64_t n_tokens,
                       struct mem_message *out, struct ag_err *err)
{
    int64_t now = ag_wall_ms(), sid = 0;
    sqlite3_stmt *s;
    int rc;

    if (out) memset(out, 0, sizeof(*out));
    if ((rc = mem__check_str("session id", session_uid, err)) < 0) return rc;
    if ((rc = check_role(role, err)) < 0) return rc;
    if (n_tokens < 0)
        return ag_err_set(err, AG_EINVAL, "message n_tokens %lld is negative", (long long)n_tokens);
    /* An assistant turn that only calls tools has no text; it is stored as "". */
    if (!content) content = "";

    /* Touching the session first also finds it and takes the write lock for both rows. */
    if ((rc = mem__tx_begin(st, err)) < 0) return rc;
    s = stmt(st, STMT_SESSION_TOUCH);
    mem__bind_text(s, 1, session_uid);
    sqlite3_bind_int64(s, 2, now);
    rc = mem__step(st, s, "update session", NULL, err);
    if (rc == SQLITE_ROW) sid = sqlite3_column_int64(s, 0);
    mem__done(s);
    if (rc == SQLITE_DONE)
        rc = ag_err_set(err, AG_ENOTFOUND, "session '%s' not found", session_uid);
    if (rc < 0) goto fail;

    rc = mem__message_insert(st, sid,
                             &(struct mem_message){.role = (char *)role,
                                                   .content = (char *)content,
                                                   .tool_calls = (char *)tool_calls,
                                                   .n_tokens = n_tokens,
                                                   .created_ms = now},
                             err);
    if (rc < 0) goto fail;
    if ((rc = mem__tx_commit(st, err)) < 0) goto fail;

    if (out) {
        out->id = sqlite3_last_insert_rowid(st->db);
        out->session_id = sid;
        out->role = ag_strdup(role);
        out->content = ag_strdup(content);
        out->tool_calls = tool_calls ? ag_strdup(tool_calls) : NULL;
        out->n_tokens = n_tokens;
        out->created_ms = now;
    }
    return 0;
fail:
    mem__tx_rollback(st);
    return rc;
}

/* Looks up a session's rowid by uid. */
int mem__session_id(struct mem_store *st, const char *uid, int64_t *id, struct ag_err *err)
{
    sqlite3_stmt *s = stmt(st, STMT_SESSION_ID);
    int rc;

    mem__bind_text(s, 1, uid);
    rc = mem__step(st, s, "read session", NULL, err);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(s, 0);
    mem__done(s);
    if (rc == SQLITE_DONE) return ag_err_set(err, AG_ENOTFOUND, "session '%s' not found", uid);
    return rc < 0 ? rc : 0;
}

int mem_message_list(struct mem_store *st, const char *session_uid, int64_t after_id, size_t limit,
                     struct mem_message **out, size_t *n, struct ag_err *err)
{
    struct mem_message *list = NULL;
    size_t len = 0, cap = 0;
    sqlite3_stmt *s = stmt(st, STMT_MESSAGE_LIST);
    int64_t sid = 0;
    int rc;

    if (!out || !n) return ag_err_set(err, AG_EINVAL, "mem_message_list: out or n is NULL");
    *out = NULL;
    *n = 0;
    if ((rc = mem__check_str("session id", session_uid, err)) < 0) return rc;
    if (after_id < 0)
        return ag_err_set(err, AG_EINVAL, "after_id %lld is negative", (long long)after_id);
    if ((rc = mem__session_id(st, session_uid, &sid, err)) < 0) return rc;

    sqlite3_bind_int64(s, 1, sid);
    sqlite3_bind_int64(s, 2, after_id);
    /* LIMIT -1 is SQLite's "no limit". */
    sqlite3_bind_int64(s, 3,
                       limit == 0 || (uint64_t)limit > (uint64_t)INT64_MAX ? -1 : (int64_t)limit);
    while ((rc = mem__step(st, s, "list messages", NULL, err)) == SQLITE_ROW) {
        list = mem__grow(list, len, &cap, sizeof(*list));
        read_message(s, &list[len++]);
    }
    mem__done(s);
    if (rc < 0) {
        mem_message_list_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

void mem_message_release(struct mem_message *m)
{
    if (!m) return;
    free(m->role);
    free(m->content);
    free(m->tool_calls);
    free(m->tool_call_id);
    free(m->name);
    memset(m, 0, sizeof(*m));
}

void mem_message_list_free(struct mem_message *list, size_t n)
{
    for (size_t i = 0; i < n; i++) mem_message_release(&list[i]);
    free(list);
}
