/*
 * memory_int.h - what the memory module's files share and nobody else sees.
 *
 * store.c owns the connection and the queries; migrate.c owns the schema. They meet at one call:
 * store.c opens the file, sets the connection's pragmas and hands the raw handle to
 * mem__migrate(), which brings the schema up to the newest version this build knows.
 */
#ifndef MEM_MEMORY_INT_H
#define MEM_MEMORY_INT_H

#include <sqlite3.h>

#include "memory.h"

/* Written to the file header by migration 1 so `file agentd.db` and our own open can tell an
 * agentd database from any other SQLite file ("agnd" in ASCII). */
#define MEM__APPLICATION_ID 0x61676e64

/* Applies every pending migration, each in its own IMMEDIATE transaction, and stores the
 * resulting schema version in *version. Fails with AG_EUNSUPPORTED when the file was written by a
 * newer agentd, and with AG_EDB when it is not an agentd database or SQLite reports an error.
 * path is used only in messages. */
int mem__migrate(sqlite3 *db, const char *path, int *version, struct ag_err *err);

/* Statement slots of the files beside store.c (runs.c), prepared on first use. */
#define MEM__EXTRA_STMTS 24

/* Helpers shared by store.c and runs.c (see store.c). */
sqlite3 *mem__db(struct mem_store *st);
/* The statement in slot, prepared from sql the first time; NULL with err set on failure. */
sqlite3_stmt *mem__stmt(struct mem_store *st, int slot, const char *sql, struct ag_err *err);
int mem__step(struct mem_store *st, sqlite3_stmt *s, const char *what, int *sqlite_rc,
              struct ag_err *err);
void mem__done(sqlite3_stmt *s);
void mem__bind_text(sqlite3_stmt *s, int i, const char *v);
char *mem__col_str(sqlite3_stmt *s, int i);
void *mem__grow(void *arr, size_t n, size_t *cap, size_t elem_bytes);
int mem__tx_begin(struct mem_store *st, struct ag_err *err);
int mem__tx_commit(struct mem_store *st, struct ag_err *err);
void mem__tx_rollback(struct mem_store *st);
int mem__check_str(const char *what, const char *v, struct ag_err *err);
int mem__new_uid(const char *prefix, char buf[21], struct ag_err *err);
int mem__session_id(struct mem_store *st, const char *uid, int64_t *id, struct ag_err *err);
/* Inserts m (role, content, tool_calls, tool_call_id, name, n_tokens, created_ms) into session
 * rowid sid; the caller holds the transaction and touches the session. */
int mem__message_insert(struct mem_store *st, int64_t sid, const struct mem_message *m,
                        struct ag_err *err);

#endif
