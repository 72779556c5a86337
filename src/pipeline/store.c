/* The SQLite store: schema, transactions, runs, resume markers.
 *
 * Row ids are internal; the stable keys are users.key, conversations.hash
 * and (conversation, message index). conversations uses AUTOINCREMENT so a
 * deleted row's id is never handed out again: stages resume "after the last
 * conversation id done", which would skip a reused id.
 */
#include "rlhi/store.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct rlhi_store {
    sqlite3 *db;
    char *path;
    bool bulk_rollback; /* in a bulk load with a rollback journal */
};

/* SQLite's allocation statistics take a global mutex on every malloc; the
 * store never reads them (measured: 3% of ingest's storing thread). Only
 * possible before SQLite is first used; afterwards the call is refused
 * with SQLITE_MISUSE and changes nothing. */
static pthread_once_t sqlite_once = PTHREAD_ONCE_INIT;

static void sqlite_setup(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* docs/STORE.md explains each table and column; keep the two in step. */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS meta("
    "  key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users("
    "  id INTEGER PRIMARY KEY,"
    "  key TEXT NOT NULL UNIQUE,"
    "  n_conversations INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS conversations("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  hash TEXT NOT NULL UNIQUE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  model TEXT,"
    "  timestamp TEXT,"
    "  language TEXT,"
    "  toxic INTEGER NOT NULL DEFAULT 0,"
    "  redacted INTEGER NOT NULL DEFAULT 0,"
    "  turn_count INTEGER NOT NULL,"
    "  n_messages INTEGER NOT NULL,"
    "  source TEXT,"
    "  source_line INTEGER);"
    "CREATE INDEX IF NOT EXISTS conversations_user"
    "  ON conversations(user_id);"
    "CREATE TABLE IF NOT EXISTS messages("
    "  conversation_id INTEGER NOT NULL REFERENCES conversations(id),"
    "  idx INTEGER NOT NULL,"
    "  role TEXT NOT NULL CHECK(role IN ('system', 'user', 'assistant')),"
    "  content TEXT NOT NULL,"
    "  timestamp TEXT,"
    "  turn_identifier INTEGER,"
    "  PRIMARY KEY(conversation_id, idx));"
    "CREATE TABLE IF NOT EXISTS feedback("
    "  conversation_id INTEGER NOT NULL REFERENCES conversations(id),"
    "  turn_index INTEGER NOT NULL,"
    "  label TEXT NOT NULL,"
    "  dissatisfied INTEGER NOT NULL,"
    "  actionable INTEGER NOT NULL,"
    "  backend TEXT NOT NULL,"
    "  evidence TEXT,"
    "  PRIMARY KEY(conversation_id, turn_index, backend));"
    "CREATE TABLE IF NOT EXISTS personas("
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  backend TEXT NOT NULL,"
    "  expertise TEXT NOT NULL,"
    "  expertise_evidence TEXT NOT NULL,"
    "  informativeness TEXT NOT NULL,"
    "  informativeness_evidence TEXT NOT NULL,"
    "  tone TEXT NOT NULL,"
    "  tone_evidence TEXT NOT NULL,"
    "  structure TEXT NOT NULL,"
    "  structure_evidence TEXT NOT NULL,"
    "  text TEXT NOT NULL,"
    "  history_hash TEXT NOT NULL,"
    "  redacted INTEGER NOT NULL DEFAULT 0,"
    "  updated TEXT NOT NULL,"
    "  PRIMARY KEY(user_id, backend));"
    "CREATE TABLE IF NOT EXISTS outputs("
    "  id INTEGER PRIMARY KEY,"
    "  conversation_id INTEGER NOT NULL REFERENCES conversations(id),"
    "  turn_index INTEGER NOT NULL,"
    "  model TEXT NOT NULL,"
    "  sample INTEGER NOT NULL DEFAULT 0,"
    "  kind TEXT NOT NULL DEFAULT 'sample',"
    "  text TEXT NOT NULL,"
    "  logprob REAL,"
    "  score REAL,"
    "  created TEXT NOT NULL,"
    "  UNIQUE(conversation_id, turn_index, model, kind, sample));"
    "CREATE TABLE IF NOT EXISTS pairs("
    "  id INTEGER PRIMARY KEY,"
    "  conversation_id INTEGER REFERENCES conversations(id),"
    "  turn_index INTEGER NOT NULL,"
    "  user_id INTEGER REFERENCES users(id),"
    "  source TEXT NOT NULL CHECK(source IN ('rewrite', 'regenerate', 'rank')),"
    "  round INTEGER NOT NULL DEFAULT 0,"
    "  prompt TEXT NOT NULL,"
    "  chosen TEXT NOT NULL,"
    "  rejected TEXT NOT NULL,"
    "  persona TEXT,"
    "  chosen_score REAL,"
    "  rejected_score REAL,"
    "  margin REAL,"
    "  kept INTEGER NOT NULL DEFAULT 1,"
    "  drop_reason TEXT,"
    "  created TEXT NOT NULL,"
    "  UNIQUE(source, conversation_id, turn_index, round));"
    "CREATE TABLE IF NOT EXISTS runs("
    "  id INTEGER PRIMARY KEY,"
    "  stage TEXT NOT NULL,"
    "  args TEXT,"
    "  started TEXT NOT NULL,"
    "  finished TEXT,"
    "  counts TEXT);"
    "CREATE TABLE IF NOT EXISTS progress("
    "  stage TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY(stage, key));";

int rlhi_store_err(struct rlhi_store *s, const char *what)
{
    return rlhi_err(RLHI_EDB, "%s in '%s': %s", what, s->path,
                    sqlite3_errmsg(s->db));
}

int rlhi_store_exec(struct rlhi_store *s, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = rlhi_err(RLHI_EDB, "database error in '%s': %s", s->path,
                          msg ? msg : sqlite3_errmsg(s->db));

        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

int rlhi_store_prepare(struct rlhi_store *s, sqlite3_stmt **st,
                       const char *sql)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return rlhi_store_err(s, "cannot prepare a statement");
    }
    return 0;
}

/* Reads meta('schema_version'): the number, 0 when absent, or negative. */
static int schema_version(struct rlhi_store *s)
{
    sqlite3_stmt *st;
    int rc, v = 0;

    rc = rlhi_store_prepare(s, &st, "SELECT value FROM meta WHERE key = "
                            "'schema_version'");
    if (rc)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int rlhi_store_open(struct rlhi_store **out, const char *path)
{
    struct rlhi_store *s = rlhi_calloc(1, sizeof *s);
    int rc, v;

    *out = NULL;
    if (!s || !(s->path = rlhi_strdup(path))) {
        rlhi_free(s);
        return rlhi_err(RLHI_ENOMEM, "cannot open store '%s'", path);
    }
    pthread_once(&sqlite_once, sqlite_setup);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
                        SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        rc = rlhi_err(RLHI_EDB, "cannot open store '%s': %s", path,
                      s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    /* A second process writing waits up to 10 s instead of failing. */
    sqlite3_busy_timeout(s->db, 10000);
    /* 16 KiB pages for a new store (an existing one keeps its own; the
     * size must be set before WAL mode is): message rows are 0.2-4 KiB of
     * text, and on ingest 16 KiB pages took 20% less time than SQLite's
     * default 4 KiB (bench/bench_ingest.py). WAL + NORMAL: commits survive
     * a killed process; see the header. The 64 MiB page cache keeps the
     * message index hot during ingest. */
    rc = rlhi_store_exec(s, "PRAGMA page_size=16384;"
                            "PRAGMA journal_mode=WAL;"
                            "PRAGMA synchronous=NORMAL;"
                            "PRAGMA cache_size=-65536;"
                            "PRAGMA temp_store=MEMORY;");
    if (rc) {
        rlhi_err(RLHI_EDB, "cannot open store '%s': %s", path,
                 sqlite3_errmsg(s->db));
        goto fail;
    }
    if ((rc = rlhi_store_exec(s, "BEGIN IMMEDIATE")))
        goto fail;
    rc = rlhi_store_exec(s, "CREATE TABLE IF NOT EXISTS meta("
                            "key TEXT PRIMARY KEY, value TEXT NOT NULL)");
    if (rc || (rc = v = schema_version(s)) < 0) {
        rlhi_store_rollback(s);
        goto fail;
    }
    if (v > RLHI_STORE_SCHEMA_VERSION) {
        rlhi_store_rollback(s);
        rc = rlhi_err(RLHI_EDB, "store '%s' has schema version %d, newer "
                      "than this rlhi's %d\nhint: use a newer rlhi", path,
                      v, RLHI_STORE_SCHEMA_VERSION);
        goto fail;
    }
    /* conversation_ids: how ingest names a conversation without an id
     * (rlhi_ingest_conversation_id). A store that already holds
     * conversations from before the user was part of the id keeps the
     * old way, so that ingesting the same logs again adds nothing. */
    if ((rc = rlhi_store_exec(s, schema_v1)) ||
        (rc = rlhi_store_exec(s, "INSERT OR IGNORE INTO meta VALUES "
                                 "('schema_version', '1')")) ||
        (rc = rlhi_store_exec(s, "INSERT OR IGNORE INTO meta SELECT "
                                 "'conversation_ids', CASE WHEN EXISTS "
                                 "(SELECT 1 FROM conversations) THEN "
                                 "'messages' ELSE 'user+messages' END")) ||
        (rc = rlhi_store_exec(s, "COMMIT"))) {
        rlhi_store_rollback(s);
        goto fail;
    }
    *out = s;
    return 0;

fail:
    rlhi_store_close(s);
    return rc ? rc : RLHI_EDB;
}

void rlhi_store_close(struct rlhi_store *s)
{
    if (!s)
        return;
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    rlhi_free(s->path);
    rlhi_free(s);
}

sqlite3 *rlhi_store_db(struct rlhi_store *s)
{
    return s->db;
}

const char *rlhi_store_path(const struct rlhi_store *s)
{
    return s->path;
}

int rlhi_store_begin(struct rlhi_store *s)
{
    return rlhi_store_exec(s, "BEGIN IMMEDIATE");
}

int rlhi_store_commit(struct rlhi_store *s)
{
    return rlhi_store_exec(s, "COMMIT");
}

void rlhi_store_rollback(struct rlhi_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Runs a PRAGMA that answers one text row, e.g. journal_mode; copies the
 * answer (lower case) into out. 0 or RLHI_EDB. */
static int pragma_text(struct rlhi_store *s, const char *sql, char *out,
                       size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc;

    out[0] = 0;
    if ((rc = rlhi_store_prepare(s, &st, sql)))
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        for (char *p = out; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    if (sqlite3_finalize(st) != SQLITE_OK)
        return rlhi_store_err(s, "cannot change the journal mode");
    return 0;
}

int rlhi_store_bulk_begin(struct rlhi_store *s)
{
    char mode[32];
    int rc;

    /* Refused (the mode stays "wal", or SQLITE_BUSY) while another
     * connection has the store open: WAL's readers must not be cut off. */
    if (pragma_text(s, "PRAGMA journal_mode=DELETE", mode, sizeof mode) ==
        0 && !strcmp(mode, "delete")) {
        s->bulk_rollback = true;
        return rlhi_store_exec(s, "PRAGMA synchronous=FULL");
    }
    rlhi_debug("%s: other connections are open; bulk load stays in WAL "
               "mode", s->path);
    rlhi_err_clear();
    if ((rc = rlhi_store_exec(s, "PRAGMA wal_autocheckpoint=0")))
        return rc;
    return 0;
}

int rlhi_store_bulk_end(struct rlhi_store *s)
{
    char mode[32];
    int rc;

    if (!s->bulk_rollback) {
        /* back to SQLite's default (1000 pages); fold the WAL in now */
        if ((rc = rlhi_store_exec(s, "PRAGMA wal_autocheckpoint=1000")))
            return rc;
        return rlhi_store_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)");
    }
    if ((rc = pragma_text(s, "PRAGMA journal_mode=WAL", mode, sizeof mode)))
        return rc;
    if (strcmp(mode, "wal"))
        return rlhi_err(RLHI_EDB, "cannot put store '%s' back in WAL mode "
                        "(journal mode is '%s'); the next open retries",
                        s->path, mode);
    s->bulk_rollback = false;
    return rlhi_store_exec(s, "PRAGMA synchronous=NORMAL");
}

int rlhi_store_run_start(struct rlhi_store *s, const char *stage,
                         const char *args, int64_t *run_id)
{
    sqlite3_stmt *st;
    int rc = rlhi_store_prepare(s, &st, "INSERT INTO runs(stage, args, "
                                "started) VALUES (?, ?, strftime("
                                "'%Y-%m-%dT%H:%M:%fZ', 'now'))");

    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, stage, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, args, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = rlhi_store_err(s, "cannot record a run");
    else
        *run_id = sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(st);
    return rc;
}

int rlhi_store_run_finish(struct rlhi_store *s, int64_t run_id,
                          const char *counts)
{
    sqlite3_stmt *st;
    int rc = rlhi_store_prepare(s, &st, "UPDATE runs SET finished = "
                                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
                                "counts = ? WHERE id = ?");

    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, counts, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, run_id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = rlhi_store_err(s, "cannot record a run");
    sqlite3_finalize(st);
    return rc;
}

/* The text of the one-row query `sql` with parameters a (and b when not
 * NULL): 1 with a new string in *value, 0 when there is no row. */
static int get_text(struct rlhi_store *s, const char *sql, const char *a,
                    const char *b, char **value)
{
    sqlite3_stmt *st;
    int rc = rlhi_store_prepare(s, &st, sql);

    *value = NULL;
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *value = rlhi_strdup((const char *)sqlite3_column_text(st, 0));
        rc = *value ? 1 : rlhi_err(RLHI_ENOMEM, "cannot read the store");
    } else if (rc == SQLITE_DONE) {
        rc = 0;
    } else {
        rc = rlhi_store_err(s, "cannot read the store");
    }
    sqlite3_finalize(st);
    return rc;
}

int rlhi_store_mark_get(struct rlhi_store *s, const char *stage,
                        const char *key, char **value)
{
    return get_text(s, "SELECT value FROM progress WHERE stage = ? AND "
                    "key = ?", stage, key, value);
}

int rlhi_store_meta_get(struct rlhi_store *s, const char *key, char **value)
{
    return get_text(s, "SELECT value FROM meta WHERE key = ?", key, NULL,
                    value);
}

/* Runs the statement `sql` with up to three text parameters (NULL ends
 * the list); `what` names it in an error. 0 or RLHI_EDB. */
static int run_text(struct rlhi_store *s, const char *sql, const char *what,
                    const char *a, const char *b, const char *c)
{
    const char *p[3] = {a, b, c};
    sqlite3_stmt *st;
    int rc = rlhi_store_prepare(s, &st, sql);

    if (rc)
        return rc;
    for (int i = 0; i < 3 && p[i]; i++)
        sqlite3_bind_text(st, i + 1, p[i], -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = rlhi_store_err(s, what);
    sqlite3_finalize(st);
    return rc;
}

int rlhi_store_mark_set(struct rlhi_store *s, const char *stage,
                        const char *key, const char *value)
{
    return run_text(s, "INSERT OR REPLACE INTO progress(stage, key, value) "
                    "VALUES (?, ?, ?)", "cannot write a resume marker",
                    stage, key, value);
}

int rlhi_store_mark_del(struct rlhi_store *s, const char *stage,
                        const char *key)
{
    return run_text(s, "DELETE FROM progress WHERE stage = ? AND key = ?",
                    "cannot delete a resume marker", stage, key, NULL);
}

int64_t rlhi_store_count(struct rlhi_store *s, const char *table)
{
    static const char *const ok[] = {"users", "conversations", "messages",
                                     "feedback", "personas", "outputs",
                                     "pairs", "runs", "progress", NULL};
    char sql[96];
    sqlite3_stmt *st;
    int64_t n = -1;
    int i, rc;

    for (i = 0; ok[i] && strcmp(ok[i], table); i++)
        ;
    if (!ok[i])
        return rlhi_err(RLHI_EINVAL, "no table '%s' in the store", table);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    if ((rc = rlhi_store_prepare(s, &st, sql)))
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        n = rlhi_store_err(s, "cannot count rows");
    sqlite3_finalize(st);
    return n;
}

/* Feeds every column of every row of `sql` into the hash, with type tags
 * and lengths so that ("ab", "c") and ("a", "bc") differ. */
static int hash_query(struct rlhi_store *s, struct rlhi_sha256 *h,
                      const char *sql)
{
    sqlite3_stmt *st;
    int rc = rlhi_store_prepare(s, &st, sql);

    if (rc)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int i, n = sqlite3_column_count(st);

        for (i = 0; i < n; i++) {
            unsigned char tag = (unsigned char)sqlite3_column_type(st, i);
            const void *p = sqlite3_column_blob(st, i);
            uint64_t len = (uint64_t)sqlite3_column_bytes(st, i);

            rlhi_sha256_update(h, &tag, 1);
            rlhi_sha256_update(h, &len, sizeof len);
            if (len)
                rlhi_sha256_update(h, p, (size_t)len);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : rlhi_store_err(s, "cannot hash the store");
}

int rlhi_store_content_hash(struct rlhi_store *s, char hex[65])
{
    static const char *const q[] = {
        "SELECT key, n_conversations FROM users ORDER BY key",
        "SELECT c.hash, u.key, c.model, c.timestamp, c.language, c.toxic,"
        " c.redacted, c.turn_count, c.n_messages FROM conversations c"
        " JOIN users u ON u.id = c.user_id ORDER BY c.hash",
        "SELECT c.hash, m.idx, m.role, m.content, m.timestamp,"
        " m.turn_identifier FROM messages m JOIN conversations c"
        " ON c.id = m.conversation_id ORDER BY c.hash, m.idx",
        "SELECT c.hash, f.turn_index, f.label, f.dissatisfied, f.actionable,"
        " f.backend FROM feedback f JOIN conversations c"
        " ON c.id = f.conversation_id ORDER BY c.hash, f.turn_index,"
        " f.backend",
        "SELECT u.key, p.backend, p.expertise, p.expertise_evidence,"
        " p.informativeness, p.informativeness_evidence, p.tone,"
        " p.tone_evidence, p.structure, p.structure_evidence, p.text,"
        " p.history_hash FROM personas p JOIN users u ON u.id = p.user_id"
        " ORDER BY u.key, p.backend",
        NULL,
    };
    struct rlhi_sha256 h;
    uint8_t d[32];
    int i, rc;

    rlhi_sha256_init(&h);
    for (i = 0; q[i]; i++)
        if ((rc = hash_query(s, &h, q[i])))
            return rc;
    rlhi_sha256_final(&h, d);
    for (i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}
