/*
 * migrate.c - the store's schema, as a numbered list of migrations applied at open.
 *
 * Migration N is the SQL in migrations[N - 1]. The schema version of a file is the highest
 * version recorded in its schema_version table (0 when the table does not exist yet: a new,
 * empty file). At open we apply migrations version+1 .. latest in order, each in its own
 * IMMEDIATE transaction together with the schema_version row that records it, so a crash or
 * kill -9 mid-upgrade leaves the file at the previous version, never in between.
 *
 * Each step re-reads the version under the write lock, so two processes opening the same old
 * file at once cannot apply a migration twice. A file whose version is newer than this build
 * knows is refused rather than touched: an old binary must not write rows a newer schema
 * interprets differently. A SQLite file that is not ours (a foreign application_id, or tables but
 * no schema_version) is refused too, rather than having our tables added to it.
 *
 * Rules for adding a migration: append, never edit or reorder an existing entry (files in the
 * field have already run it); one migration may hold several statements; do not put BEGIN or
 * COMMIT in it.
 */
#include "memory_int.h"

#include <stdio.h>

/* The schema, oldest first. DESIGN.md §6 lists the tables still to come (runs, run_events,
 * memories, memories_fts, memory_blocks, tasks); they arrive as new entries here. */
static const char *const migrations[] = {
    /* 1: agents, their sessions and the sessions' messages. Child rows go with their parent
     * (ON DELETE CASCADE, with foreign_keys=ON set per connection). Every foreign key column is
     * indexed so cascades and per-parent listings do not scan. Message ids grow in append order,
     * which is what mem_message_list pages on. */
    "PRAGMA application_id = 1634168420;" /* MEM__APPLICATION_ID, "agnd" */
    "CREATE TABLE schema_version ("
    "  version INTEGER PRIMARY KEY,"
    "  applied_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE agents ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL,"
    "  version INTEGER NOT NULL DEFAULT 1,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE sessions ("
    "  id INTEGER PRIMARY KEY,"
    "  uid TEXT NOT NULL UNIQUE,"
    "  agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,"
    "  title TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX sessions_agent ON sessions(agent_id, id);"
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),"
    "  content TEXT NOT NULL DEFAULT '',"
    "  tool_calls TEXT,"
    "  n_tokens INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX messages_session ON messages(session_id, id);",

    /* 2: agent runs and their event logs, tool messages' call ids, and archival memories with a
     * full-text index. An event is keyed by (run, seq) so a resubscribing client pages on seq.
     * The FTS5 table indexes memories' text as an external-content table kept in step by
     * triggers (cascading deletes fire them too). */
    "ALTER TABLE messages ADD COLUMN tool_call_id TEXT;"
    "ALTER TABLE messages ADD COLUMN name TEXT;"
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  uid TEXT NOT NULL UNIQUE,"
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  state TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'cancelled',"
    "                                       'interrupted')),"
    "  input TEXT NOT NULL,"
    "  output TEXT,"
    "  error TEXT,"
    "  reason TEXT,"
    "  steps INTEGER NOT NULL DEFAULT 0,"
    "  tool_calls INTEGER NOT NULL DEFAULT 0,"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,"
    "  last_seq INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  ended_ms INTEGER"
    ");"
    "CREATE INDEX runs_session ON runs(session_id, id);"
    "CREATE TABLE run_events ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, seq)"
    ") WITHOUT ROWID;"
    "CREATE TABLE memories ("
    "  id INTEGER PRIMARY KEY,"
    "  agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,"
    "  text TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX memories_agent ON memories(agent_id, id);"
    "CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='id');"
    "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN"
    "  INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text);"
    "END;"
    "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN"
    "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    "END;",
};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

static int db_fail(sqlite3 *db, const char *path, const char *what, struct ag_err *err)
{
    return ag_err_set(err, AG_EDB, "database '%s': %s: %s", path, what, sqlite3_errmsg(db));
}

/* Runs a query that yields one integer (or no row, read as 0). Returns a SQLite code. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

    *out = 0;
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Reads the file's schema version, refusing files that are not ours. Runs inside the caller's
 * transaction so the answer holds until it commits. */
static int read_version(sqlite3 *db, const char *path, int64_t *version, struct ag_err *err)
{
    int64_t app_id, has_table, n_tables;

    *version = 0;
    if (query_int(db, "PRAGMA application_id", &app_id) != SQLITE_OK)
        return db_fail(db, path, "read application_id", err);
    if (app_id != 0 && app_id != MEM__APPLICATION_ID)
        return ag_err_set(err, AG_EDB,
                          "database '%s' belongs to another application (application_id %#llx, "
                          "agentd's is %#x)",
                          path, (unsigned long long)(uint32_t)app_id,
                          (unsigned)MEM__APPLICATION_ID);
    if (query_int(db,
                  "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                  "name = 'schema_version'",
                  &has_table) != SQLITE_OK)
        return db_fail(db, path, "read schema", err);
    if (has_table) {
        if (query_int(db, "SELECT coalesce(max(version), 0) FROM schema_version", version) !=
            SQLITE_OK)
            return db_fail(db, path, "read schema_version", err);
        return 0;
    }
    if (query_int(db, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                  &n_tables) != SQLITE_OK)
        return db_fail(db, path, "read schema", err);
    if (n_tables > 0)
        return ag_err_set(err, AG_EDB,
                          "database '%s' is not an agentd database (it has %lld tables but no "
                          "schema_version)",
                          path, (long long)n_tables);
    return 0;
}

static int exec(sqlite3 *db, const char *path, const char *sql, const char *what,
                struct ag_err *err)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    ag_err_set(err, AG_EDB, "database '%s': %s: %s", path, what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return AG_EDB;
}

/* Applies migration number to (1-based) and records it; the caller holds the transaction. */
static int apply(sqlite3 *db, const char *path, int to, struct ag_err *err)
{
    char what[64], record[128];

    snprintf(what, sizeof(what), "migration %d", to);
    if (exec(db, path, migrations[to - 1], what, err) < 0) return AG_EDB;
    snprintf(record, sizeof(record),
             "INSERT INTO schema_version (version, applied_ms) VALUES (%d, %lld)", to,
             (long long)ag_wall_ms());
    return exec(db, path, record, what, err);
}

int mem__migrate(sqlite3 *db, const char *path, int *version, struct ag_err *err)
{
    for (;;) {
        int64_t v;
        int rc;

        if (exec(db, path, "BEGIN IMMEDIATE", "begin migration", err) < 0) return AG_EDB;
        rc = read_version(db, path, &v, err);
        if (rc == 0 && v > N_MIGRATIONS)
            rc = ag_err_set(err, AG_EUNSUPPORTED,
                            "database '%s' has schema version %lld, newer than this agentd "
                            "knows (%d); upgrade agentd or use another data dir",
                            path, (long long)v, N_MIGRATIONS);
        if (rc == 0 && v < N_MIGRATIONS) {
            rc = apply(db, path, (int)v + 1, err);
            if (rc == 0) ag_info("database '%s': applied migration %lld", path, (long long)v + 1);
        }
        if (rc == 0) rc = exec(db, path, "COMMIT", "commit migration", err);
        if (rc < 0) {
            /* A failed COMMIT may already have rolled back; a second ROLLBACK is harmless. */
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        if (v >= N_MIGRATIONS) {
            *version = (int)v;
            return 0;
        }
    }
}
