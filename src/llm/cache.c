/* The llm client's response cache: one SQLite table, llm_cache, in a file
 * the caller names (it may be the pipeline's store; the table is separate
 * and created when missing).
 *
 *   key       SHA-256 hex of endpoint, NUL, model, NUL, request body
 *   endpoint, model, request   what was asked, for inspection
 *   response  the response body as received (200 only)
 *   created_at
 *
 * One connection, serialised by a mutex: requests take milliseconds to
 * seconds, a cache lookup microseconds.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

#include "llm/llm_internal.h"

struct rlhi__cache {
    sqlite3 *db;
    pthread_mutex_t mu;
    char *path;
};

void rlhi_llm_cache_key(const char *endpoint, const char *model,
                        const char *body, size_t len, char hex[65])
{
    struct rlhi_sha256 s;
    uint8_t d[32];
    int i;

    rlhi_sha256_init(&s);
    rlhi_sha256_update(&s, endpoint, strlen(endpoint) + 1);
    rlhi_sha256_update(&s, model, strlen(model) + 1);
    rlhi_sha256_update(&s, body, len);
    rlhi_sha256_final(&s, d);
    for (i = 0; i < 32; i++) {
        hex[2 * i] = "0123456789abcdef"[d[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[d[i] & 15];
    }
    hex[64] = 0;
}

int rlhi__cache_open(struct rlhi__cache **out, const char *path)
{
    struct rlhi__cache *c;
    char *err = NULL;
    int r;

    *out = NULL;
    c = rlhi_calloc(1, sizeof *c);
    if (!c || !(c->path = rlhi_strdup(path))) {
        rlhi_free(c);
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    r = sqlite3_open_v2(path, &c->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_FULLMUTEX, NULL);
    if (r != SQLITE_OK) {
        r = rlhi_err(RLHI_EDB, "cannot open cache '%s': %s", path,
                     c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(r));
        rlhi__cache_close(c);
        return r;
    }
    /* Other processes (a pipeline stage) may hold the file briefly. */
    sqlite3_busy_timeout(c->db, 10000);
    if (sqlite3_exec(c->db,
                     "CREATE TABLE IF NOT EXISTS llm_cache ("
                     " key TEXT PRIMARY KEY,"
                     " endpoint TEXT NOT NULL,"
                     " model TEXT NOT NULL,"
                     " request TEXT NOT NULL,"
                     " response TEXT NOT NULL,"
                     " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
                     NULL, NULL, &err) != SQLITE_OK) {
        r = rlhi_err(RLHI_EDB, "cannot create table llm_cache in '%s': %s",
                     path, err ? err : "?");
        sqlite3_free(err);
        rlhi__cache_close(c);
        return r;
    }
    *out = c;
    return 0;
}

void rlhi__cache_close(struct rlhi__cache *c)
{
    if (!c)
        return;
    sqlite3_close(c->db);
    pthread_mutex_destroy(&c->mu);
    rlhi_free(c->path);
    rlhi_free(c);
}

int rlhi__cache_get(struct rlhi__cache *c, const char *key, char **response)
{
    sqlite3_stmt *st = NULL;
    int r;

    *response = NULL;
    pthread_mutex_lock(&c->mu);
    r = sqlite3_prepare_v2(c->db,
                           "SELECT response FROM llm_cache WHERE key = ?1",
                           -1, &st, NULL);
    if (r == SQLITE_OK)
        r = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (r == SQLITE_OK) {
        r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            const char *s = (const char *)sqlite3_column_text(st, 0);

            *response = rlhi_strdup(s ? s : "");
            r = *response ? 1 : RLHI_ENOMEM;
        } else if (r == SQLITE_DONE) {
            r = 0;
        } else {
            r = rlhi_err(RLHI_EDB, "cannot read cache '%s': %s", c->path,
                         sqlite3_errmsg(c->db));
        }
    } else {
        r = rlhi_err(RLHI_EDB, "cannot read cache '%s': %s", c->path,
                     sqlite3_errmsg(c->db));
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&c->mu);
    return r;
}

int rlhi__cache_put(struct rlhi__cache *c, const char *key,
                    const char *endpoint, const char *model,
                    const char *request, const char *response)
{
    sqlite3_stmt *st = NULL;
    int r;

    pthread_mutex_lock(&c->mu);
    r = sqlite3_prepare_v2(c->db,
                           "INSERT OR REPLACE INTO llm_cache (key, endpoint,"
                           " model, request, response) VALUES (?1, ?2, ?3,"
                           " ?4, ?5)", -1, &st, NULL);
    if (r == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, endpoint, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, request, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, response, -1, SQLITE_STATIC);
        r = sqlite3_step(st);
    }
    r = r == SQLITE_DONE ? 0
                         : rlhi_err(RLHI_EDB, "cannot write cache '%s': %s",
                                    c->path, sqlite3_errmsg(c->db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&c->mu);
    return r;
}
