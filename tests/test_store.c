/*
 * test_store.c - the SQLite store (memory/store.c, memory/migrate.c): migrations and reopening,
 * agent, session and message operations with their error codes, cascading deletes, refusal of
 * garbage, foreign and newer files, and durability across kill -9.
 *
 * Each test works in its own mkdtemp directory under /tmp and removes it. A few checks open the
 * file with plain SQLite beside the store, to see what the store's API does not show (journal
 * mode, rows left behind by a cascade) or to tamper with the file.
 */
#include "../memory/memory.h"
#include "test.h"

#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A temporary data dir and the database path inside it. */
struct tmp {
    char dir[64]; /* mkdtemp result */
    char db[128]; /* dir + "/" MEM_DB_FILE */
};

static int tmp_make(struct tmp *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/agentd-test-store-XXXXXX");
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->db, sizeof(t->db), "%s/%s", t->dir, MEM_DB_FILE);
    return 0;
}

/* Removes the directory and the files in it (the database, its -wal and -shm). */
static void tmp_remove(struct tmp *t)
{
    DIR *d = opendir(t->dir);
    struct dirent *e;
    char path[512];

    if (!d) return;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof(path), "%s/%s", t->dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(t->dir);
}

/* Opens a fresh store in a new temp dir; NULL (after a failed check) when that fails. */
static struct mem_store *open_fresh(struct tmp *t)
{
    struct mem_store *st = NULL;
    struct ag_err err = {0};

    if (tmp_make(t) < 0) {
        CHECKF(0, "mkdtemp failed");
        return NULL;
    }
    int rc = mem_store_open(t->db, &st, &err);
    CHECKF(rc == 0, "open: %s", err.msg);
    return st;
}

/* Runs SQL on the file through a separate plain connection; returns the first column of the
 * first row as an integer (0 when there is none), or -1 on error (printed unless quiet). */
static int64_t raw_sql(const char *path, const char *sql, int quiet)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t v = -1;

    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
        if (rc == SQLITE_DONE) v = 0;
    }
    if (v < 0 && !quiet) printf("  raw sql \"%s\": %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static int64_t raw(const char *path, const char *sql)
{
    return raw_sql(path, sql, 0);
}

static int is_session_uid(const char *uid)
{
    if (!uid || strlen(uid) != 20 || strncmp(uid, "ses_", 4) != 0) return 0;
    for (int i = 4; i < 20; i++)
        if (!strchr("0123456789abcdef", uid[i])) return 0;
    return 1;
}

static void test_open_migrate_reopen(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_agent a = {0};
    int version;

    if (!st) return;
    version = mem_store_schema_version(st);
    CHECKF(version >= 1, "schema version %d", version);
    CHECK(mem_agent_create(st, "keeper", "{\"model\":\"m\"}", NULL, &err) == 0);
    mem_store_close(st);

    /* Each applied migration is one row; the WAL setting is stored in the file. */
    CHECK(raw(t.db, "SELECT count(*) FROM schema_version") == version);
    CHECK(raw(t.db, "SELECT max(version) FROM schema_version") == version);
    CHECK(raw(t.db, "SELECT journal_mode = 'wal' FROM pragma_journal_mode") == 1);
    CHECK(raw(t.db, "PRAGMA application_id") == 0x61676e64);

    /* Reopening finds the data and runs no migration again. */
    st = NULL;
    CHECKF(mem_store_open(t.db, &st, &err) == 0, "reopen: %s", err.msg);
    if (st) {
        CHECK(mem_store_schema_version(st) == version);
        CHECKF(mem_agent_get(st, "keeper", &a, &err) == 0, "%s", err.msg);
        CHECK_STR(a.spec_json, "{\"model\":\"m\"}");
        mem_agent_release(&a);
        mem_store_close(st);
    }
    CHECK(raw(t.db, "SELECT count(*) FROM schema_version") == version);
    tmp_remove(&t);
}

static void test_open_bad_arguments(void)
{
    struct mem_store *st = (struct mem_store *)&st; /* must be reset to NULL on failure */
    struct ag_err err = {0};

    CHECK(mem_store_open(NULL, &st, &err) == AG_EINVAL);
    CHECK(st == NULL);
    CHECK(mem_store_open("", &st, &err) == AG_EINVAL);
    CHECK(mem_store_open("/nonexistent-agentd-dir/sub/agentd.db", &st, &err) == AG_EDB);
    CHECKF(strstr(err.msg, "/nonexistent-agentd-dir/sub/agentd.db") != NULL, "%s", err.msg);
    CHECK(st == NULL);
    mem_store_close(NULL);
}

static void test_agent_crud(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_agent a = {0}, b = {0};
    int64_t n = -1;

    if (!st) return;
    CHECKF(mem_agent_create(st, "alice", "{\"v\":1}", &a, &err) == 0, "%s", err.msg);
    CHECK(a.id > 0);
    CHECK_STR(a.name, "alice");
    CHECK_STR(a.spec_json, "{\"v\":1}");
    CHECK(a.version == 1);
    CHECK(a.created_ms > 0 && a.updated_ms == a.created_ms);

    CHECKF(mem_agent_get(st, "alice", &b, &err) == 0, "%s", err.msg);
    CHECK(b.id == a.id && b.version == 1 && b.created_ms == a.created_ms);
    CHECK_STR(b.spec_json, "{\"v\":1}");
    mem_agent_release(&b);

    /* Duplicate name. */
    CHECK(mem_agent_create(st, "alice", "{}", &b, &err) == AG_EEXISTS);
    CHECK(err.code == AG_EEXISTS);
    CHECKF(strstr(err.msg, "'alice' already exists") != NULL, "%s", err.msg);
    CHECK(b.name == NULL);

    /* Update bumps the version and updated_ms, keeps id and created_ms. */
    CHECKF(mem_agent_update(st, "alice", "{\"v\":2}", 0, &b, &err) == 0, "%s", err.msg);
    CHECK(b.id == a.id && b.version == 2 && b.created_ms == a.created_ms);
    CHECK(b.updated_ms >= a.updated_ms);
    CHECK_STR(b.spec_json, "{\"v\":2}");
    mem_agent_release(&b);
    CHECK(mem_agent_get(st, "alice", &b, &err) == 0);
    CHECK(b.version == 2);
    CHECK_STR(b.spec_json, "{\"v\":2}");
    mem_agent_release(&b);

    /* Optimistic concurrency: a stale expected version is refused and changes nothing. */
    CHECK(mem_agent_update(st, "alice", "{\"v\":3}", 1, &b, &err) == AG_EBUSY);
    CHECKF(strstr(err.msg, "version 2") && strstr(err.msg, "expected 1"), "%s", err.msg);
    CHECK(mem_agent_get(st, "alice", &b, &err) == 0);
    CHECK(b.version == 2);
    CHECK_STR(b.spec_json, "{\"v\":2}");
    mem_agent_release(&b);
    CHECKF(mem_agent_update(st, "alice", "{\"v\":3}", 2, &b, &err) == 0, "%s", err.msg);
    CHECK(b.version == 3);
    mem_agent_release(&b);
    CHECK(mem_agent_update(st, "alice", "{}", 0, NULL, &err) == 0);

    /* Not found. */
    CHECK(mem_agent_get(st, "bob", &b, &err) == AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "agent 'bob' not found") != NULL, "%s", err.msg);
    CHECK(mem_agent_update(st, "bob", "{}", 0, &b, &err) == AG_ENOTFOUND);
    CHECK(mem_agent_delete(st, "bob", &err) == AG_ENOTFOUND);

    /* Invalid arguments. */
    CHECK(mem_agent_create(st, NULL, "{}", NULL, &err) == AG_EINVAL);
    CHECK(mem_agent_create(st, "", "{}", NULL, &err) == AG_EINVAL);
    CHECKF(strstr(err.msg, "agent name is empty") != NULL, "%s", err.msg);
    CHECK(mem_agent_create(st, "x", NULL, NULL, &err) == AG_EINVAL);
    CHECK(mem_agent_create(st, "x", "", NULL, &err) == AG_EINVAL);
    CHECK(mem_agent_update(st, "alice", "{}", -1, NULL, &err) == AG_EINVAL);
    CHECK(mem_agent_get(st, NULL, NULL, &err) == AG_EINVAL);
    CHECK(mem_agent_delete(st, "", &err) == AG_EINVAL);
    /* A NULL err is allowed everywhere. */
    CHECK(mem_agent_get(st, "bob", NULL, NULL) == AG_ENOTFOUND);

    CHECK(mem_agent_count(st, &n, &err) == 0 && n == 1);
    CHECKF(mem_agent_delete(st, "alice", &err) == 0, "%s", err.msg);
    CHECK(mem_agent_get(st, "alice", NULL, &err) == AG_ENOTFOUND);
    CHECK(mem_agent_count(st, &n, &err) == 0 && n == 0);
    /* The name is free again. */
    CHECK(mem_agent_create(st, "alice", "{}", NULL, &err) == 0);

    mem_agent_release(&a);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_agent_list_order(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_agent *list = NULL;
    size_t n = 99;

    if (!st) return;
    CHECK(mem_agent_list(st, &list, &n, &err) == 0);
    CHECK(n == 0 && list == NULL);
    mem_agent_list_free(list, n);

    CHECK(mem_agent_create(st, "charlie", "{\"c\":1}", NULL, &err) == 0);
    CHECK(mem_agent_create(st, "alpha", "{\"a\":1}", NULL, &err) == 0);
    CHECK(mem_agent_create(st, "bravo", "{\"b\":1}", NULL, &err) == 0);
    CHECK(mem_agent_update(st, "alpha", "{\"a\":2}", 1, NULL, &err) == 0);
    CHECKF(mem_agent_list(st, &list, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 3);
    if (n == 3) {
        CHECK_STR(list[0].name, "alpha");
        CHECK_STR(list[0].spec_json, "{\"a\":2}");
        CHECK(list[0].version == 2);
        CHECK_STR(list[1].name, "bravo");
        CHECK_STR(list[2].name, "charlie");
        CHECK(list[2].version == 1);
    }
    mem_agent_list_free(list, n);

    /* Enough agents to make the list grow its array a few times. */
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "z%03d", 99 - i);
        CHECK(mem_agent_create(st, name, "{}", NULL, &err) == 0);
    }
    CHECK(mem_agent_list(st, &list, &n, &err) == 0);
    CHECK(n == 103);
    if (n == 103) {
        CHECK_STR(list[3].name, "z000");
        CHECK_STR(list[102].name, "z099");
    }
    mem_agent_list_free(list, n);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_agent_delete_cascades(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_session s1 = {0}, s2 = {0}, keep = {0};

    if (!st) return;
    CHECK(mem_agent_create(st, "doomed", "{}", NULL, &err) == 0);
    CHECK(mem_agent_create(st, "other", "{}", NULL, &err) == 0);
    CHECK(mem_session_create(st, "doomed", "one", &s1, &err) == 0);
    CHECK(mem_session_create(st, "doomed", "two", &s2, &err) == 0);
    CHECK(mem_session_create(st, "other", NULL, &keep, &err) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(mem_message_append(st, s1.uid, "user", "hi", NULL, 1, NULL, &err) == 0);
        CHECK(mem_message_append(st, s2.uid, "user", "hi", NULL, 1, NULL, &err) == 0);
        CHECK(mem_message_append(st, keep.uid, "user", "hi", NULL, 1, NULL, &err) == 0);
    }
    CHECK(raw(t.db, "SELECT count(*) FROM messages") == 9);

    CHECKF(mem_agent_delete(st, "doomed", &err) == 0, "%s", err.msg);
    CHECK(mem_session_get(st, s1.uid, NULL, &err) == AG_ENOTFOUND);
    CHECK(mem_session_get(st, s2.uid, NULL, &err) == AG_ENOTFOUND);
    CHECK(mem_session_get(st, keep.uid, NULL, &err) == 0);
    CHECK(raw(t.db, "SELECT count(*) FROM sessions") == 1);
    CHECK(raw(t.db, "SELECT count(*) FROM messages") == 3);
    CHECK(raw(t.db, "SELECT count(*) FROM messages WHERE session_id <> "
                    "(SELECT id FROM sessions)") == 0);

    /* Deleting a session takes its messages too. */
    CHECK(mem_session_delete(st, keep.uid, &err) == 0);
    CHECK(raw(t.db, "SELECT count(*) FROM messages") == 0);

    mem_session_release(&s1);
    mem_session_release(&s2);
    mem_session_release(&keep);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_sessions(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_session a1 = {0}, a2 = {0}, b1 = {0}, got = {0};
    struct mem_session *list = NULL;
    size_t n = 0;

    if (!st) return;
    CHECK(mem_agent_create(st, "a", "{}", NULL, &err) == 0);
    CHECK(mem_agent_create(st, "b", "{}", NULL, &err) == 0);

    CHECKF(mem_session_create(st, "a", "first chat", &a1, &err) == 0, "%s", err.msg);
    CHECKF(is_session_uid(a1.uid), "uid %s", a1.uid ? a1.uid : "(null)");
    CHECK(a1.id > 0);
    CHECK_STR(a1.agent, "a");
    CHECK_STR(a1.title, "first chat");
    CHECK(a1.created_ms > 0 && a1.updated_ms == a1.created_ms);
    CHECK(mem_session_create(st, "a", NULL, &a2, &err) == 0);
    CHECK(a2.title == NULL);
    CHECK(is_session_uid(a2.uid));
    CHECK(a1.uid && a2.uid && strcmp(a1.uid, a2.uid) != 0);
    CHECK(mem_session_create(st, "b", "bee", &b1, &err) == 0);

    CHECKF(mem_session_get(st, a1.uid, &got, &err) == 0, "%s", err.msg);
    CHECK(got.id == a1.id && got.created_ms == a1.created_ms);
    CHECK_STR(got.uid, a1.uid);
    CHECK_STR(got.agent, "a");
    CHECK_STR(got.title, "first chat");
    mem_session_release(&got);
    CHECK(mem_session_get(st, a2.uid, &got, &err) == 0);
    CHECK(got.title == NULL);
    mem_session_release(&got);

    /* Newest first, per agent or all. */
    CHECKF(mem_session_list(st, "a", &list, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(list[0].uid, a2.uid);
        CHECK_STR(list[1].uid, a1.uid);
        CHECK_STR(list[1].title, "first chat");
    }
    mem_session_list_free(list, n);
    CHECK(mem_session_list(st, NULL, &list, &n, &err) == 0);
    CHECK(n == 3);
    if (n == 3) {
        CHECK_STR(list[0].uid, b1.uid);
        CHECK_STR(list[0].agent, "b");
        CHECK_STR(list[2].uid, a1.uid);
    }
    mem_session_list_free(list, n);

    /* Missing agent or session. */
    CHECK(mem_session_create(st, "nobody", NULL, &got, &err) == AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "agent 'nobody' not found") != NULL, "%s", err.msg);
    CHECK(got.uid == NULL);
    CHECK(raw(t.db, "SELECT count(*) FROM sessions") == 3);
    CHECK(mem_session_list(st, "nobody", &list, &n, &err) == AG_ENOTFOUND);
    CHECK(list == NULL && n == 0);
    CHECK(mem_session_get(st, "ses_0000000000000000", &got, &err) == AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "session 'ses_0000000000000000' not found") != NULL, "%s", err.msg);
    CHECK(mem_session_create(st, "", NULL, NULL, &err) == AG_EINVAL);
    CHECK(mem_session_get(st, NULL, NULL, &err) == AG_EINVAL);
    CHECK(mem_session_list(st, "", &list, &n, &err) == AG_EINVAL);

    /* Delete. */
    CHECKF(mem_session_delete(st, a1.uid, &err) == 0, "%s", err.msg);
    CHECK(mem_session_get(st, a1.uid, NULL, &err) == AG_ENOTFOUND);
    CHECK(mem_session_delete(st, a1.uid, &err) == AG_ENOTFOUND);
    CHECK(mem_session_list(st, "a", &list, &n, &err) == 0 && n == 1);
    mem_session_list_free(list, n);

    mem_session_release(&a1);
    mem_session_release(&a2);
    mem_session_release(&b1);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_messages(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    struct mem_session ses = {0}, other = {0}, got = {0};
    struct mem_message m = {0}, *list = NULL;
    static const char *const roles[] = {"system", "user", "assistant", "tool", "user"};
    int64_t ids[5] = {0};
    size_t n = 0;

    if (!st) return;
    CHECK(mem_agent_create(st, "a", "{}", NULL, &err) == 0);
    CHECK(mem_session_create(st, "a", NULL, &ses, &err) == 0);
    CHECK(mem_session_create(st, "a", NULL, &other, &err) == 0);

    for (int i = 0; i < 5; i++) {
        char text[32];
        const char *calls = i == 2 ? "[{\"name\":\"shell\",\"arguments\":{}}]" : NULL;
        snprintf(text, sizeof(text), "message %d", i);
        CHECKF(mem_message_append(st, ses.uid, roles[i], text, calls, 10 + i, &m, &err) == 0, "%s",
               err.msg);
        ids[i] = m.id;
        CHECK(m.session_id == ses.id);
        CHECK_STR(m.role, roles[i]);
        CHECK_STR(m.content, text);
        CHECK(m.n_tokens == 10 + i);
        CHECK(i > 0 ? m.id > ids[i - 1] : m.id > 0);
        /* Interleave the other session so ids within one session are not contiguous. */
        CHECK(mem_message_append(st, other.uid, "user", "x", NULL, 0, NULL, &err) == 0);
        if (i == 4) {
            /* The append bumped the session's updated_ms to the message's time. */
            CHECK(mem_session_get(st, ses.uid, &got, &err) == 0);
            CHECK(got.updated_ms == m.created_ms && got.updated_ms >= got.created_ms);
            mem_session_release(&got);
        }
        mem_message_release(&m);
    }

    CHECKF(mem_message_list(st, ses.uid, 0, 0, &list, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 5);
    for (size_t i = 0; i < n && i < 5; i++) {
        char text[32];
        snprintf(text, sizeof(text), "message %zu", i);
        CHECK(list[i].id == ids[i]);
        CHECK_STR(list[i].role, roles[i]);
        CHECK_STR(list[i].content, text);
        CHECK(list[i].n_tokens == (int64_t)(10 + i));
        CHECK(list[i].created_ms > 0);
        if (i == 2)
            CHECK_STR(list[i].tool_calls, "[{\"name\":\"shell\",\"arguments\":{}}]");
        else
            CHECK(list[i].tool_calls == NULL);
    }
    mem_message_list_free(list, n);

    /* Paging: after_id, limit, both. */
    CHECK(mem_message_list(st, ses.uid, ids[1], 0, &list, &n, &err) == 0);
    CHECK(n == 3 && list[0].id == ids[2] && list[2].id == ids[4]);
    mem_message_list_free(list, n);
    CHECK(mem_message_list(st, ses.uid, 0, 2, &list, &n, &err) == 0);
    CHECK(n == 2 && list[0].id == ids[0] && list[1].id == ids[1]);
    mem_message_list_free(list, n);
    CHECK(mem_message_list(st, ses.uid, ids[2], 1, &list, &n, &err) == 0);
    CHECK(n == 1 && list[0].id == ids[3]);
    mem_message_list_free(list, n);
    CHECK(mem_message_list(st, ses.uid, ids[4], 0, &list, &n, &err) == 0);
    CHECK(n == 0 && list == NULL);
    mem_message_list_free(list, n);
    CHECK(mem_message_list(st, other.uid, 0, 0, &list, &n, &err) == 0 && n == 5);
    mem_message_list_free(list, n);

    /* Rejected appends write nothing, and leave the store usable. */
    CHECK(mem_message_append(st, ses.uid, "bogus", "x", NULL, 0, &m, &err) == AG_EINVAL);
    CHECKF(strstr(err.msg, "role 'bogus'") != NULL, "%s", err.msg);
    CHECK(m.role == NULL);
    CHECK(mem_message_append(st, ses.uid, NULL, "x", NULL, 0, NULL, &err) == AG_EINVAL);
    CHECK(mem_message_append(st, ses.uid, "user", "x", NULL, -1, NULL, &err) == AG_EINVAL);
    CHECK(mem_message_append(st, "ses_ffffffffffffffff", "user", "x", NULL, 0, NULL, &err) ==
          AG_ENOTFOUND);
    CHECKF(strstr(err.msg, "session 'ses_ffffffffffffffff' not found") != NULL, "%s", err.msg);
    CHECK(mem_message_list(st, "ses_ffffffffffffffff", 0, 0, &list, &n, &err) == AG_ENOTFOUND);
    CHECK(mem_message_list(st, ses.uid, -1, 0, &list, &n, &err) == AG_EINVAL);
    CHECK(raw(t.db, "SELECT count(*) FROM messages") == 10);

    /* A tool-calls-only assistant turn may have no content. */
    CHECKF(mem_message_append(st, ses.uid, "assistant", NULL, "[]", 0, &m, &err) == 0, "%s",
           err.msg);
    CHECK_STR(m.content, "");
    mem_message_release(&m);

    /* The schema's CHECK backs up the role validation for anything writing the file directly. */
    CHECK(raw_sql(t.db,
                  "INSERT INTO messages (session_id, role, content, created_ms) "
                  "VALUES ((SELECT min(id) FROM sessions), 'bogus', 'x', 0)",
                  1) == -1);

    mem_session_release(&ses);
    mem_session_release(&other);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_garbage_file(void)
{
    struct tmp t;
    struct mem_store *st = NULL;
    struct ag_err err = {0};
    FILE *f;

    if (tmp_make(&t) < 0) {
        CHECKF(0, "mkdtemp failed");
        return;
    }
    f = fopen(t.db, "w");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 512; i++) fputs("this is not a database, just text. ", f);
        fclose(f);
    }
    CHECK(mem_store_open(t.db, &st, &err) == AG_EDB);
    CHECK(err.code == AG_EDB);
    CHECK(st == NULL);
    CHECKF(strstr(err.msg, "not a database") != NULL, "%s", err.msg);
    CHECKF(strstr(err.msg, t.db) != NULL, "%s", err.msg);
    tmp_remove(&t);
}

static void test_foreign_sqlite_file(void)
{
    struct tmp t;
    struct mem_store *st = NULL;
    struct ag_err err = {0};

    if (tmp_make(&t) < 0) {
        CHECKF(0, "mkdtemp failed");
        return;
    }
    /* Some other program's database: refused, and left without our tables. */
    CHECK(raw(t.db, "CREATE TABLE notes (body TEXT)") == 0);
    CHECK(mem_store_open(t.db, &st, &err) == AG_EDB);
    CHECK(st == NULL);
    CHECKF(strstr(err.msg, "not an agentd database") != NULL, "%s", err.msg);
    CHECK(raw(t.db, "SELECT count(*) FROM sqlite_master WHERE name = 'agents'") == 0);
    unlink(t.db);

    CHECK(raw(t.db, "PRAGMA application_id = 1234") == 0);
    CHECK(mem_store_open(t.db, &st, &err) == AG_EDB);
    CHECKF(strstr(err.msg, "another application") != NULL, "%s", err.msg);
    tmp_remove(&t);
}

static void test_durability_kill9(void)
{
    struct tmp t;
    struct mem_store *st = NULL;
    struct ag_err err = {0};
    struct mem_agent a = {0};
    struct mem_session *ses = NULL;
    struct mem_message *msgs = NULL;
    size_t n_ses = 0, n_msgs = 0;
    int status = 0;
    pid_t pid;

    if (tmp_make(&t) < 0) {
        CHECKF(0, "mkdtemp failed");
        return;
    }
    fflush(stdout);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child writes and dies without closing: no checkpoint, no atexit, nothing. */
        struct mem_session s = {0};
        if (mem_store_open(t.db, &st, NULL) < 0) _exit(2);
        if (mem_agent_create(st, "survivor", "{\"k\":9}", NULL, NULL) < 0) _exit(3);
        if (mem_session_create(st, "survivor", "t", &s, NULL) < 0) _exit(4);
        if (mem_message_append(st, s.uid, "user", "remember me", NULL, 2, NULL, NULL) < 0) _exit(5);
        raise(SIGKILL);
        _exit(6);
    }
    if (pid < 0) return;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %#x", status);

    CHECKF(mem_store_open(t.db, &st, &err) == 0, "reopen: %s", err.msg);
    if (st) {
        CHECKF(mem_agent_get(st, "survivor", &a, &err) == 0, "%s", err.msg);
        CHECK_STR(a.spec_json, "{\"k\":9}");
        mem_agent_release(&a);
        CHECK(mem_session_list(st, "survivor", &ses, &n_ses, &err) == 0 && n_ses == 1);
        if (n_ses == 1) {
            CHECK(mem_message_list(st, ses[0].uid, 0, 0, &msgs, &n_msgs, &err) == 0);
            CHECK(n_msgs == 1);
            if (n_msgs == 1) CHECK_STR(msgs[0].content, "remember me");
            mem_message_list_free(msgs, n_msgs);
        }
        mem_session_list_free(ses, n_ses);
        mem_store_close(st);
    }
    tmp_remove(&t);
}

/* Runs: created with the user's message and event 1, written step by step, listed, paged by
 * seq; a run cut off by a crash becomes interrupted with a final event; ended runs take no
 * more writes; memories are found by their words and not by another agent. */
static void test_runs_and_memories(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    if (!st) return;
    CHECK(mem_agent_create(st, "a", "{}", NULL, &err) == 0);
    CHECK(mem_agent_create(st, "b", "{}", NULL, &err) == 0);

    struct mem_run r;
    struct mem_message *hist;
    size_t nh;
    CHECKF(mem_run_create(st, "a", NULL, "first question", &r, &hist, &nh, &err) == 0, "%s",
           err.msg);
    CHECK(nh == 0 && r.last_seq == 1 && strncmp(r.uid, "run_", 4) == 0);
    char ses[32];
    snprintf(ses, sizeof(ses), "%s", r.session);
    struct mem_event ev[2] = {{.seq = 2, .type = "text.delta", .payload = "{\"text\":\"hi\"}"},
                              {.seq = 3, .type = "run.completed", .payload = "{}"}};
    struct mem_message am = {.role = "assistant", .content = "hi"};
    struct mem_run_write w = {.run_uid = r.uid,
                              .events = ev,
                              .n_events = 2,
                              .msgs = &am,
                              .n_msgs = 1,
                              .state = "completed",
                              .output = "hi",
                              .reason = "answer",
                              .steps = 1,
                              .completion_tokens = 2};
    CHECKF(mem_run_write(st, &w, &err) == 0, "%s", err.msg);
    /* Ended: no more writes; a gap in seq is refused. */
    CHECK(mem_run_write(st, &w, &err) == AG_EINVAL);
    char first[32];
    snprintf(first, sizeof(first), "%s", r.uid);
    mem_run_release(&r);

    CHECK(mem_run_create(st, "b", ses, "wrong agent", &r, NULL, NULL, &err) == AG_EINVAL);
    CHECK(mem_run_create(st, NULL, "ses_nope", "x", &r, NULL, NULL, &err) == AG_ENOTFOUND);
    CHECKF(mem_run_create(st, NULL, ses, "second", &r, &hist, &nh, &err) == 0, "%s", err.msg);
    CHECK(nh == 2 && strcmp(hist[0].role, "user") == 0 && strcmp(hist[1].content, "hi") == 0);
    mem_message_list_free(hist, nh);
    struct mem_event gap = {.seq = 5, .type = "text.delta", .payload = "{}"};
    w = (struct mem_run_write){.run_uid = r.uid, .events = &gap, .n_events = 1};
    CHECK(mem_run_write(st, &w, &err) == AG_EINVAL);
    gap.seq = 2;
    struct mem_message tm = {.role = "tool", .content = "42", .tool_call_id = "c1", .name = "py"};
    w.msgs = &tm;
    w.n_msgs = 1;
    CHECK(mem_run_write(st, &w, &err) == 0);

    int64_t n = 0;
    CHECK(mem_run_interrupt_all(st, &n, &err) == 0 && n == 1);
    struct mem_run g;
    CHECK(mem_run_get(st, r.uid, &g, &err) == 0);
    CHECK(strcmp(g.state, "interrupted") == 0 && g.last_seq == 3 && g.ended_ms > 0);
    mem_run_release(&g);
    struct mem_event *evs;
    size_t ne;
    CHECK(mem_run_events(st, r.uid, 1, 0, &evs, &ne, &err) == 0);
    CHECK(ne == 2 && evs[0].seq == 2 && strcmp(evs[1].type, "run.failed") == 0 &&
          strstr(evs[1].payload, "interrupted"));
    mem_event_list_free(evs, ne);
    CHECK(mem_run_events(st, first, 0, 0, &evs, &ne, &err) == 0);
    CHECK(ne == 3 && strcmp(evs[0].type, "run.created") == 0 && strstr(evs[0].payload, first));
    mem_event_list_free(evs, ne);
    struct mem_run *list;
    size_t nl;
    CHECK(mem_run_list(st, "a", NULL, 0, &list, &nl, &err) == 0 && nl == 2);
    CHECK(strcmp(list[0].uid, r.uid) == 0 && strcmp(list[1].output, "hi") == 0);
    mem_run_list_free(list, nl);
    CHECK(mem_message_list(st, ses, 0, 0, &hist, &nh, &err) == 0 && nh == 4);
    CHECK(strcmp(hist[3].tool_call_id, "c1") == 0 && strcmp(hist[3].name, "py") == 0);
    mem_message_list_free(hist, nh);
    mem_run_release(&r);

    CHECK(mem_memory_add(st, "a", "The user's cat is called Miso.", NULL, &err) == 0);
    CHECK(mem_memory_add(st, "a", "Deploys happen on Tuesdays.", NULL, &err) == 0);
    CHECK(mem_memory_add(st, "b", "Miso soup recipe.", NULL, &err) == 0);
    CHECK(mem_memory_add(st, "zz", "x", NULL, &err) == AG_ENOTFOUND);
    char **texts;
    size_t nt;
    CHECK(mem_memory_search(st, "a", "what is my cat's name? \"miso\" OR*", 5, &texts, &nt, &err) ==
          0);
    CHECK(nt == 1 && strstr(texts[0], "Miso"));
    mem_strings_free(texts, nt);
    CHECK(mem_memory_search(st, "a", "", 5, &texts, &nt, &err) == 0 && nt == 2);
    mem_strings_free(texts, nt);
    mem_store_close(st);
    tmp_remove(&t);
}

static void test_newer_schema_refused(void)
{
    struct tmp t;
    struct mem_store *st = open_fresh(&t);
    struct ag_err err = {0};
    char known[32];

    if (!st) return;
    snprintf(known, sizeof(known), "(%d)", mem_store_schema_version(st));
    CHECK(mem_agent_create(st, "a", "{}", NULL, &err) == 0);
    mem_store_close(st);

    CHECK(raw(t.db, "UPDATE schema_version SET version = 999 WHERE version = "
                    "(SELECT max(version) FROM schema_version)") == 0);
    st = NULL;
    CHECK(mem_store_open(t.db, &st, &err) == AG_EUNSUPPORTED);
    CHECK(st == NULL);
    CHECKF(strstr(err.msg, "999") && strstr(err.msg, known), "%s", err.msg);
    /* Refused without being touched. */
    CHECK(raw(t.db, "SELECT max(version) FROM schema_version") == 999);
    CHECK(raw(t.db, "SELECT count(*) FROM agents") == 1);
    tmp_remove(&t);
}

int main(int argc, char **argv)
{
    TEST_BEGIN(argc, argv);
    ag_log_set_level(AG_LOG_WARN);
    RUN(test_open_migrate_reopen);
    RUN(test_open_bad_arguments);
    RUN(test_agent_crud);
    RUN(test_agent_list_order);
    RUN(test_agent_delete_cascades);
    RUN(test_sessions);
    RUN(test_messages);
    RUN(test_garbage_file);
    RUN(test_foreign_sqlite_file);
    RUN(test_durability_kill9);
    RUN(test_newer_schema_refused);
    RUN(test_runs_and_memories);
    return TEST_END();
}
