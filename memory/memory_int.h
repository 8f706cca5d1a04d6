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
/* The newest schema version this build knows (the number of migrations). */
int mem__schema_latest(void);

#endif
