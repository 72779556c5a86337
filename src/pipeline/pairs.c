/* Preference pairs from user-guided rewrites, and the store helpers every
 * pair stage shares.
 *
 * A rewrite pair comes from a user turn labelled reattempt_feedback at
 * message index f: the answer it reacts to is message f-1 (assistant) and
 * the request that answer replied to is message f-2 (user). The pair's
 * turn_index is f-2, the index of the request its prompt ends with, so that
 * rewrite and rank pairs name turns the same way. The model sees the
 * conversation up to f-2, the original answer and the feedback, and writes
 * a new answer; chosen = that answer, rejected = the original.
 *
 * Resuming. Candidate turns are walked in (conversation id, turn) order;
 * a turn whose pair is already stored is skipped before anything is sent
 * to the model, and each batch's pairs commit in one transaction, so a
 * killed run loses at most one batch and a rerun stores the same rows
 * (decoding is greedy, hence deterministic).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "pairs_internal.h"

/* ---- schema ------------------------------------------------------------ */

static const char pair_checks_sql[] =
    "CREATE TABLE IF NOT EXISTS pair_checks("
    "  pair_id INTEGER PRIMARY KEY,"
    "  judge TEXT,"
    "  ab INTEGER,"        /* verdict with chosen shown first: 1, 0, -1 */
    "  ba INTEGER,"        /* verdict with rejected shown first */
    "  reason TEXT,"       /* drop reason, NULL when kept */
    "  created TEXT NOT NULL)";

int rlhi_pairs_schema(struct rlhi_store *s)
{
    static const char head[] = "CREATE TABLE pairs";
    static const char old_check[] = "'rank')";
    sqlite3_stmt *st = NULL;
    struct rlhi_buf b = RLHI_BUF_INIT;
    const char *sql, *at;
    int rc;

    if ((rc = rlhi_store_begin(s)))
        return rc;
    if ((rc = rlhi_store_exec(s, pair_checks_sql)))
        goto out;
    if ((rc = rlhi_store_prepare(s, &st, "SELECT sql FROM sqlite_master "
                                 "WHERE type = 'table' AND name = "
                                 "'pairs'")))
        goto out;
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = rlhi_err(RLHI_EDB, "store '%s' has no pairs table",
                      rlhi_store_path(s));
        goto out;
    }
    sql = (const char *)sqlite3_column_text(st, 0);
    /* The store's schema v1 allows source 'rewrite' and 'rank' only; the
     * regenerate ablation needs a third value. SQLite cannot alter a CHECK,
     * so the table is rebuilt once with its rows (ids kept). */
    if (sql && !strstr(sql, "'regenerate'") &&
        (at = strstr(sql, old_check)) != NULL &&
        !strncmp(sql, head, sizeof head - 1)) {
        if (rlhi_buf_adds(&b, "CREATE TABLE pairs_new") ||
            rlhi_buf_add(&b, sql + sizeof head - 1,
                         (size_t)(at - sql) - (sizeof head - 1)) ||
            rlhi_buf_adds(&b, "'rank', 'regenerate')") ||
            rlhi_buf_adds(&b, at + sizeof old_check - 1)) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot migrate the pairs table");
            goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
        if ((rc = rlhi_store_exec(s, b.buf)) ||
            (rc = rlhi_store_exec(s, "INSERT INTO pairs_new SELECT * FROM "
                                     "pairs; DROP TABLE pairs; ALTER TABLE "
                                     "pairs_new RENAME TO pairs;")))
            goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    rc = rlhi_store_commit(s);
out:
    sqlite3_finalize(st);
    rlhi_buf_release(&b);
    if (rc)
        rlhi_store_rollback(s);
    return rc;
}

/* ---- shared helpers ---------------------------------------------------- */

void rlhi__conv_release(struct rlhi__conv *c)
{
    for (size_t i = 0; i < c->n; i++) {
        rlhi_free((char *)c->msgs[i].role);
        rlhi_free((char *)c->msgs[i].content);
    }
    rlhi_free(c->msgs);
    rlhi_free(c->hash);
    memset(c, 0, sizeof *c);
}

int rlhi__conv_load(struct rlhi_store *s, int64_t id, struct rlhi__conv *c)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc;

    memset(c, 0, sizeof *c);
    c->id = id;
    if ((rc = rlhi_store_prepare(s, &st, "SELECT hash, user_id FROM "
                                 "conversations WHERE id = ?")))
        return rc;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rlhi_err(RLHI_ENOTFOUND, "no conversation %lld in '%s'",
                        (long long)id, rlhi_store_path(s));
    }
    c->hash = rlhi_strdup((const char *)sqlite3_column_text(st, 0));
    c->user_id = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    if (!c->hash)
        goto nomem;
    if ((rc = rlhi_store_prepare(s, &st, "SELECT role, content FROM "
                                 "messages WHERE conversation_id = ? "
                                 "ORDER BY idx")))
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->n == cap) {
            size_t nc = cap ? 2 * cap : 8;
            void *p = rlhi_realloc(c->msgs, nc * sizeof *c->msgs);

            if (!p)
                goto nomem;
            c->msgs = p;
            cap = nc;
        }
        c->msgs[c->n].role =
            rlhi_strdup((const char *)sqlite3_column_text(st, 0));
        c->msgs[c->n].content =
            rlhi_strdup((const char *)sqlite3_column_text(st, 1));
        c->n++;
        if (!c->msgs[c->n - 1].role || !c->msgs[c->n - 1].content)
            goto nomem;
    }
    if (rc != SQLITE_DONE) {
        rc = rlhi_store_err(s, "cannot read messages");
        goto fail;
    }
    sqlite3_finalize(st);
    return 0;

nomem:
    rc = rlhi_err(RLHI_ENOMEM, "cannot load conversation %lld",
                  (long long)id);
fail:
    sqlite3_finalize(st);
    rlhi__conv_release(c);
    return rc;
}

int rlhi__persona_text(struct rlhi_store *s, int64_t user_id,
                       const char *backend, char **text)
{
    sqlite3_stmt *st;
    int rc;

    *text = NULL;
    if ((rc = rlhi_store_prepare(s, &st, "SELECT text FROM personas WHERE "
                                 "user_id = ? AND backend = ?")))
        return rc;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_text(st, 2, backend, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *text = rlhi_strdup((const char *)sqlite3_column_text(st, 0));
        rc = *text ? 0 : rlhi_err(RLHI_ENOMEM, "cannot read a persona");
    } else {
        rc = rc == SQLITE_DONE ? 0 : rlhi_store_err(s, "cannot read a "
                                                    "persona");
    }
    sqlite3_finalize(st);
    return rc;
}

char *rlhi__dup_redacted(const char *s, bool redact, uint64_t *count)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    char *r;
    int n;

    if (!redact) {
        r = rlhi_strdup(s);
        if (!r)
            rlhi_err(RLHI_ENOMEM, "cannot copy a text");
        return r;
    }
    n = rlhi_redact(s, strlen(s), &b);
    if (n < 0 || !(r = rlhi_buf_detach(&b, NULL))) {
        rlhi_buf_release(&b);
        rlhi_err(RLHI_ENOMEM, "cannot redact a text");
        return NULL;
    }
    if (count)
        *count += (uint64_t)n;
    return r;
}

int rlhi__prompt_json(const char *persona, const struct rlhi_chat_msg *msgs,
                      size_t n, struct rlhi_buf *out)
{
    int e = rlhi_buf_addc(out, '[');

    if (persona) {
        e |= rlhi_buf_adds(out, "{\"role\":\"system\",\"content\":");
        e |= rlhi_buf_add_json_str(out, persona, strlen(persona));
        e |= rlhi_buf_addc(out, '}');
    }
    for (size_t i = 0; i < n; i++) {
        if (persona || i)
            e |= rlhi_buf_addc(out, ',');
        e |= rlhi_buf_adds(out, "{\"role\":");
        e |= rlhi_buf_add_json_str(out, msgs[i].role, strlen(msgs[i].role));
        e |= rlhi_buf_adds(out, ",\"content\":");
        e |= rlhi_buf_add_json_str(out, msgs[i].content,
                                   strlen(msgs[i].content));
        e |= rlhi_buf_addc(out, '}');
    }
    e |= rlhi_buf_addc(out, ']');
    return e ? rlhi_err(RLHI_ENOMEM, "cannot build a prompt") : 0;
}

int rlhi__transcript(const struct rlhi_chat_msg *msgs, size_t n,
                     size_t max_chars, struct rlhi_buf *out)
{
    size_t first = 0, total = 0, cut = 0;
    int e = 0;

    for (size_t i = 0; i < n; i++)
        total += strlen(msgs[i].role) + strlen(msgs[i].content) + 3;
    /* Oldest messages go first: the latest ones say what is being asked. */
    while (max_chars && total > max_chars && first + 1 < n) {
        total -= strlen(msgs[first].role) + strlen(msgs[first].content) + 3;
        first++;
    }
    if (max_chars && total > max_chars)
        cut = max_chars / (n - first);
    for (size_t i = first; i < n; i++) {
        size_t len = strlen(msgs[i].content);

        if (cut && len > cut)
            len = cut;
        e |= rlhi_buf_addf(out, "%s: ", msgs[i].role);
        e |= rlhi_buf_add(out, msgs[i].content, len);
        e |= rlhi_buf_adds(out, len < strlen(msgs[i].content) ? " ...\n"
                                                               : "\n");
    }
    return e ? rlhi_err(RLHI_ENOMEM, "cannot build a transcript") : 0;
}

int rlhi__pair_exists(struct rlhi_store *s, const char *source,
                      int64_t conv, int turn, int round)
{
    sqlite3_stmt *st;
    int rc;

    if ((rc = rlhi_store_prepare(s, &st, "SELECT 1 FROM pairs WHERE "
                                 "source = ? AND conversation_id = ? AND "
                                 "turn_index = ? AND round = ?")))
        return rc;
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, conv);
    sqlite3_bind_int(st, 3, turn);
    sqlite3_bind_int(st, 4, round);
    rc = sqlite3_step(st);
    rc = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE
                                    ? 0 : rlhi_store_err(s, "cannot read "
                                                         "pairs");
    sqlite3_finalize(st);
    return rc;
}

int rlhi__pair_insert(struct rlhi_store *s, const struct rlhi__pair *p)
{
    sqlite3_stmt *st;
    int rc;

    /* ON CONFLICT DO NOTHING skips a stored key only; OR IGNORE would also
     * skip CHECK failures silently. */
    if ((rc = rlhi_store_prepare(s, &st, "INSERT INTO pairs("
                                 "conversation_id, turn_index, user_id, "
                                 "source, round, prompt, chosen, rejected, "
                                 "persona, chosen_score, rejected_score, "
                                 "margin, kept, drop_reason, created) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                                 "?, 1, NULL, strftime('%Y-%m-%dT%H:%M:%SZ',"
                                 " 'now')) ON CONFLICT DO NOTHING")))
        return rc;
    sqlite3_bind_int64(st, 1, p->conv);
    sqlite3_bind_int(st, 2, p->turn);
    if (p->user_id)
        sqlite3_bind_int64(st, 3, p->user_id);
    sqlite3_bind_text(st, 4, p->source, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, p->round);
    sqlite3_bind_text(st, 6, p->prompt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, p->chosen, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, p->rejected, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, p->persona, -1, SQLITE_STATIC);
    if (p->has_scores) {
        sqlite3_bind_double(st, 10, p->chosen_score);
        sqlite3_bind_double(st, 11, p->rejected_score);
        sqlite3_bind_double(st, 12, p->chosen_score - p->rejected_score);
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = rlhi_store_err(s, "cannot store a pair");
    else
        rc = sqlite3_changes(rlhi_store_db(s)) > 0;
    sqlite3_finalize(st);
    return rc;
}

char *rlhi_pairs_find_json(const char *reply)
{
    const char *p = reply ? strchr(reply, '{') : NULL;
    int depth = 0;
    bool str = false, esc = false;

    for (const char *q = p; q && *q; q++) {
        if (str) {
            if (esc)
                esc = false;
            else if (*q == '\\')
                esc = true;
            else if (*q == '"')
                str = false;
            continue;
        }
        if (*q == '"')
            str = true;
        else if (*q == '{')
            depth++;
        else if (*q == '}' && --depth == 0) {
            char *r = rlhi_strndup(p, (size_t)(q - p + 1));

            if (!r)
                rlhi_err(RLHI_ENOMEM, "cannot copy a verdict");
            return r;
        }
    }
    rlhi_err(RLHI_EFORMAT, "no JSON object in the model's reply '%.60s'",
             reply ? reply : "");
    return NULL;
}

/* Reads one reply as a verdict: finds the JSON object and checks it.
 * 0 with *obj, or RLHI_EFORMAT (or RLHI_ENOMEM) with the message set. */
static int read_verdict(const char *reply, int (*check)(void *, void *),
                        void *arg, json_t **obj)
{
    json_error_t jerr;
    char *js = rlhi_pairs_find_json(reply);
    int rc;

    *obj = NULL;
    if (!js)
        return RLHI_EFORMAT;
    if (!(*obj = json_loads(js, 0, &jerr)) || !json_is_object(*obj)) {
        rc = rlhi_err(RLHI_EFORMAT, "malformed JSON verdict '%.60s': %s",
                      js, *obj ? "not an object" : jerr.text);
    } else if ((rc = check(*obj, arg)) != 0) {
        rlhi_err_prefix(rc, "invalid verdict '%.60s'", js);
    }
    if (rc) {
        json_decref(*obj);
        *obj = NULL;
    }
    rlhi_free(js);
    return rc;
}

/* Asks every request of a batch once (attempt 0 or 1). */
static int ask_batch(struct rlhi_ask *ask, const struct rlhi_chat_msg *const *m,
                     const size_t *counts, size_t n, int attempt,
                     char **texts)
{
    int rc = 0;

    if (ask->many)
        return ask->many(ask, m, counts, n, attempt, texts);
    for (size_t i = 0; i < n && !rc; i++)
        rc = ask->fn(ask, m[i], counts[i], attempt, &texts[i]);
    if (rc)
        for (size_t i = 0; i < n; i++) {
            rlhi_free(texts[i]);
            texts[i] = NULL;
        }
    return rc;
}

int rlhi__ask_json_many(struct rlhi_ask *ask,
                        const struct rlhi_chat_msg *const *msgs,
                        const size_t *counts, size_t n,
                        int (*check)(void *obj, void *arg),
                        void *const *args, void **verdicts, int *rcs,
                        char **errs)
{
    char **texts = rlhi_calloc(2 * n + 1, sizeof *texts);
    struct rlhi_chat_msg **retry = rlhi_calloc(n + 1, sizeof *retry);
    const struct rlhi_chat_msg **rm = rlhi_calloc(n + 1, sizeof *rm);
    /* who[k]: the request of retry k; cnt[k]: its message count */
    size_t *who = rlhi_calloc(2 * n + 1, sizeof *who), *cnt = who + n;
    char **again;
    size_t nr = 0;
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        verdicts[i] = NULL;
        rcs[i] = 0;
        errs[i] = NULL;
    }
    if (!texts || !retry || !rm || !who) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot ask for %zu verdicts", n);
        goto out;
    }
    again = texts + n;
    if ((rc = ask_batch(ask, msgs, counts, n, 0, texts)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        json_t *obj;

        rcs[i] = read_verdict(texts[i], check, args[i], &obj);
        verdicts[i] = obj;
        if (rcs[i] == RLHI_ENOMEM) {
            rc = rcs[i];
            goto out;
        }
        if (!rcs[i])
            continue;
        /* One retry that shows the reply and says it was not valid. */
        if (!(retry[nr] = rlhi_calloc(counts[i] + 2, sizeof **retry))) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot retry a verdict");
            goto out;
        }
        memcpy(retry[nr], msgs[i], counts[i] * sizeof **msgs);
        retry[nr][counts[i]].role = "assistant";
        retry[nr][counts[i]].content = texts[i];
        retry[nr][counts[i] + 1].role = "user";
        retry[nr][counts[i] + 1].content =
            "That reply was not a valid verdict. Reply with the JSON "
            "object only, exactly in the format asked for.";
        rm[nr] = retry[nr];
        cnt[nr] = counts[i] + 2;
        who[nr++] = i;
    }
    if (nr) {
        if ((rc = ask_batch(ask, rm, cnt, nr, 1, again)))
            goto out;
        for (size_t k = 0; k < nr; k++) {
            size_t i = who[k];
            json_t *obj;

            rcs[i] = read_verdict(again[k], check, args[i], &obj);
            verdicts[i] = obj;
            if (rcs[i] == RLHI_ENOMEM) {
                rc = rcs[i];
                goto out;
            }
            if (rcs[i] && !(errs[i] = rlhi_strdup(rlhi_errmsg()))) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot keep a message");
                goto out;
            }
        }
    }

out:
    if (rc)
        for (size_t i = 0; i < n; i++) {
            json_decref(verdicts[i]);
            verdicts[i] = NULL;
            rlhi_free(errs[i]);
            errs[i] = NULL;
        }
    for (size_t i = 0; texts && i < 2 * n; i++)
        rlhi_free(texts[i]);
    for (size_t k = 0; retry && k < nr; k++)
        rlhi_free(retry[k]);
    rlhi_free(texts);
    rlhi_free(retry);
    rlhi_free(rm);
    rlhi_free(who);
    return rc;
}

int rlhi__ask_json(struct rlhi_ask *ask, const struct rlhi_chat_msg *msgs,
                   size_t n, int (*check)(void *obj, void *arg), void *arg,
                   void **verdict)
{
    void *const args[1] = {arg};
    char *err = NULL;
    int rcs[1], rc;

    rc = rlhi__ask_json_many(ask, &msgs, &n, 1, check, args, verdict, rcs,
                             &err);
    if (!rc && rcs[0]) {
        rc = rlhi_err(rcs[0], "%s", err);
    }
    rlhi_free(err);
    return rc;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return rlhi_buf_add(data, buf, size) ? -1 : 0;
}

int rlhi__json_dump(const void *json, size_t flags, struct rlhi_buf *out)
{
    if (json_dump_callback(json, dump_cb, out, flags))
        return rlhi_err(RLHI_ENOMEM, "cannot write JSON");
    return 0;
}

int rlhi_pairs_normalise_ws(const char *s, struct rlhi_buf *out)
{
    bool space = false;
    int e = 0;

    rlhi_buf_clear(out);
    e |= rlhi_buf_grow(out, strlen(s));
    for (; *s; s++) {
        if (isspace((unsigned char)*s)) {
            space = out->len > 0;
            continue;
        }
        if (space)
            e |= rlhi_buf_addc(out, ' ');
        space = false;
        e |= rlhi_buf_addc(out, *s);
    }
    if (!out->buf)
        e |= rlhi_buf_adds(out, "");
    return e ? rlhi_err(RLHI_ENOMEM, "cannot normalise a text") : 0;
}

int rlhi_pairs_content_hash(struct rlhi_store *s, char hex[65])
{
    sqlite3_stmt *st;
    struct rlhi_sha256 h;
    uint8_t d[32];
    int rc;

    if ((rc = rlhi_store_prepare(s, &st, "SELECT p.source, c.hash, "
                                 "p.turn_index, p.round, p.prompt, p.chosen, "
                                 "p.rejected, p.persona, p.chosen_score, "
                                 "p.rejected_score, p.margin, p.kept, "
                                 "p.drop_reason FROM pairs p LEFT JOIN "
                                 "conversations c ON c.id = "
                                 "p.conversation_id ORDER BY p.source, "
                                 "c.hash, p.turn_index, p.round")))
        return rc;
    rlhi_sha256_init(&h);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            unsigned char tag = (unsigned char)sqlite3_column_type(st, i);
            const void *p = sqlite3_column_blob(st, i);
            uint64_t len = (uint64_t)sqlite3_column_bytes(st, i);

            rlhi_sha256_update(&h, &tag, 1);
            rlhi_sha256_update(&h, &len, sizeof len);
            if (len)
                rlhi_sha256_update(&h, p, (size_t)len);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rlhi_store_err(s, "cannot hash the pairs");
    rlhi_sha256_final(&h, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* ---- rewrite ----------------------------------------------------------- */

/* 2000 characters of transcript: about 500-700 tokens of English, which
 * leaves room for the answer in a 2k-token context. Small local models
 * (stories260K: 512 tokens) need --max_prompt_chars lower. */
#define REWRITE_TRANSCRIPT_CHARS 2000

/* One pair in the making. */
struct job {
    struct rlhi__conv c;
    int req;             /* index of the request the prompt ends with */
    char *persona;       /* redacted when asked */
    struct rlhi_chat_msg *pm; /* the prompt's messages (redacted) */
    char *original;      /* the original answer (redacted) */
    struct rlhi_buf ask; /* the instruction sent to the model */
    struct rlhi_chat_msg *am; /* the request's messages */
    size_t nam;
    char *fb;            /* the feedback turn (redacted) */
    int first;           /* regenerate: first prompt message sent */
};

static void job_release(struct job *j)
{
    if (j->pm)
        for (size_t i = 0; i <= (size_t)j->req; i++)
            rlhi_free((char *)j->pm[i].content);
    rlhi_free(j->pm);
    rlhi__conv_release(&j->c);
    rlhi_free(j->persona);
    rlhi_free(j->original);
    rlhi_free(j->fb);
    rlhi_free(j->am);
    rlhi_buf_release(&j->ask);
    memset(j, 0, sizeof *j);
}

int rlhi__turn_refs_load(struct rlhi_store *s, const char *sql,
                         const char *backend, size_t first_cap,
                         const char *list_what, const char *read_err,
                         struct rlhi__turn_ref **refs, size_t *n)
{
    sqlite3_stmt *st;
    size_t cap = 0;
    int rc;

    *refs = NULL;
    *n = 0;
    if ((rc = rlhi_store_prepare(s, &st, sql)))
        return rc;
    sqlite3_bind_text(st, 1, backend, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? 2 * cap : first_cap;
            void *p = rlhi_realloc(*refs, nc * sizeof **refs);

            if (!p) {
                sqlite3_finalize(st);
                return rlhi_err(RLHI_ENOMEM, "cannot list %s", list_what);
            }
            *refs = p;
            cap = nc;
        }
        (*refs)[*n].conv = sqlite3_column_int64(st, 0);
        (*refs)[*n].turn = sqlite3_column_int(st, 1);
        (*n)++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : rlhi_store_err(s, read_err);
}

int rlhi__pairs_run_finish(struct rlhi_store *s, int64_t run,
                           const char *turns_key,
                           const struct rlhi_pairs_stats *stats)
{
    char counts[256];

    snprintf(counts, sizeof counts, "{\"%s\": %llu, \"done\": %llu, "
             "\"made\": %llu, \"skipped\": %llu, \"failed\": %llu}",
             turns_key, (unsigned long long)stats->turns,
             (unsigned long long)stats->done,
             (unsigned long long)stats->made,
             (unsigned long long)stats->skipped,
             (unsigned long long)stats->failed);
    return rlhi_store_run_finish(s, run, counts);
}

int rlhi__pair_seen(struct rlhi_store *s, const char *source, int64_t conv,
                   int turn, int round, struct rlhi_pairs_stats *stats)
{
    int rc;

    stats->turns++;
    rc = rlhi__pair_exists(s, source, conv, turn, round);
    if (rc > 0)
        stats->done++;
    return rc;
}

int64_t rlhi__pairs_cap(const struct rlhi_pairs_opts *o)
{
    int64_t cap = o->stop_after_pairs;

    if (o->limit && (!cap || o->limit < cap))
        cap = o->limit;
    return cap;
}

int rlhi__pairs_stop_hook(const struct rlhi_pairs_opts *o,
                          const struct rlhi_pairs_stats *stats)
{
    if (o->stop_after_pairs && (int64_t)stats->made >= o->stop_after_pairs)
        return rlhi_err(RLHI_EIO, "stopped after %lld pairs (test hook)",
                        (long long)stats->made);
    return 0;
}

/* Loads the candidate turns: feedback rows with `label` from `backend`. */
static int load_refs(struct rlhi_store *s, const char *backend,
                     struct rlhi__turn_ref **refs, size_t *n)
{
    return rlhi__turn_refs_load(s, "SELECT conversation_id, turn_index "
                                "FROM feedback WHERE backend = ? AND label "
                                "= 'reattempt_feedback' ORDER BY "
                                "conversation_id, turn_index", backend, 64,
                                "feedback turns", "cannot read feedback",
                                refs, n);
}

/* Prepares job `j` for the feedback turn `r`: 1 when ready, 0 when the
 * turn cannot make a pair (logged), or a negative code. */
static int job_prepare(struct rlhi_store *s,
                       const struct rlhi__turn_ref *r,
                       const struct rlhi_pairs_opts *o, size_t max_chars,
                       struct rlhi_pairs_stats *stats, struct job *j)
{
    const char *pb = o->persona_backend ? o->persona_backend : "builtin";
    char *fb = NULL, *raw = NULL;
    int rc;

    memset(j, 0, sizeof *j);
    if ((rc = rlhi__conv_load(s, r->conv, &j->c)))
        return rc;
    j->req = r->turn - 2;
    if (j->req < 0 || (size_t)r->turn >= j->c.n ||
        strcmp(j->c.msgs[r->turn].role, "user") ||
        strcmp(j->c.msgs[r->turn - 1].role, "assistant") ||
        strcmp(j->c.msgs[j->req].role, "user")) {
        rlhi_warn("conversation '%s' turn %d: no user request and answer "
                  "before the feedback; skipped", j->c.hash, r->turn);
        return 0;
    }

    /* The pair's prompt: persona, then the conversation to the request. */
    if ((rc = rlhi__persona_text(s, j->c.user_id, pb, &raw)))
        return rc;
    if (raw && !(j->persona = rlhi__dup_redacted(raw, o->redact,
                                                 &stats->redactions))) {
        rlhi_free(raw);
        return RLHI_ENOMEM;
    }
    rlhi_free(raw);
    if (!(j->pm = rlhi_calloc((size_t)j->req + 1, sizeof *j->pm)))
        return rlhi_err(RLHI_ENOMEM, "cannot build a prompt");
    for (int i = 0; i <= j->req; i++) {
        j->pm[i].role = j->c.msgs[i].role;
        j->pm[i].content = rlhi__dup_redacted(j->c.msgs[i].content,
                                              o->redact,
                                              &stats->redactions);
        if (!j->pm[i].content)
            return RLHI_ENOMEM;
    }
    if (!(j->original = rlhi__dup_redacted(j->c.msgs[r->turn - 1].content,
                                           o->redact, &stats->redactions)))
        return RLHI_ENOMEM;

    /* What the model is asked. */
    if (o->regenerate) {
        /* The ablation: the conversation as it stood before the answer,
         * so the model answers afresh without seeing the feedback; the
         * oldest messages go when it is too long. */
        size_t total = 0;

        for (int i = 0; i <= j->req; i++)
            total += strlen(j->pm[i].content);
        while (o->max_prompt_chars && total > o->max_prompt_chars &&
               j->first < j->req)
            total -= strlen(j->pm[j->first++].content);
        return 1;
    }
    if (!(fb = rlhi__dup_redacted(j->c.msgs[r->turn].content, o->redact,
                                  &stats->redactions)))
        return RLHI_ENOMEM;
    if (o->in_context) {
        /* The conversation as the user left it: the model's next answer
         * is the rewrite. Oldest messages go when it is too long. */
        size_t total = strlen(j->original) + strlen(fb), first = 0, k = 0;

        for (int i = 0; i <= j->req; i++)
            total += strlen(j->pm[i].content);
        while (o->max_prompt_chars && total > o->max_prompt_chars &&
               (int)first < j->req)
            total -= strlen(j->pm[first++].content);
        j->fb = fb;
        if (!(j->am = rlhi_calloc((size_t)j->req + 3 - first,
                                  sizeof *j->am)))
            return rlhi_err(RLHI_ENOMEM, "cannot build a rewrite request");
        for (int i = (int)first; i <= j->req; i++)
            j->am[k++] = j->pm[i];
        j->am[k].role = "assistant";
        j->am[k++].content = j->original;
        j->am[k].role = "user";
        j->am[k++].content = j->fb;
        j->nam = k;
        return 1;
    }
    rc = rlhi_buf_adds(&j->ask, "Here is a conversation between a user and "
                       "an assistant.\n\n") ? RLHI_ENOMEM : 0;
    if (!rc)
        rc = rlhi__transcript(j->pm, (size_t)j->req + 1, max_chars / 2,
                              &j->ask);
    if (!rc && rlhi_buf_adds(&j->ask, "\nThe assistant answered:\n"))
        rc = RLHI_ENOMEM;
    if (!rc && rlhi_buf_add(&j->ask, j->original,
                            strlen(j->original) > max_chars / 4
                                ? max_chars / 4 : strlen(j->original)))
        rc = RLHI_ENOMEM;
    if (!rc && rlhi_buf_addf(&j->ask, "\n\nThe user was not satisfied and "
                             "replied:\n%.*s\n\nRewrite the answer to follow "
                             "the user's feedback. Reply with the rewritten "
                             "answer only.", (int)(max_chars / 4), fb))
        rc = RLHI_ENOMEM;
    rlhi_free(fb);
    if (rc || !(j->am = rlhi_calloc(1, sizeof *j->am)))
        return rlhi_err(RLHI_ENOMEM, "cannot build a rewrite request");
    j->am[0].role = "user";
    j->am[0].content = j->ask.buf;
    j->nam = 1;
    return 1;
}

/* Trims the ends of a generated answer in place; returns it. */
static char *trim(char *t)
{
    size_t len = strlen(t);
    char *p = t;

    while (len && isspace((unsigned char)t[len - 1]))
        t[--len] = 0;
    while (isspace((unsigned char)*p))
        p++;
    memmove(t, p, strlen(p) + 1);
    return t;
}

int rlhi_pairs_rewrite(struct rlhi_store *s, struct rlhi_llm *gen,
                       const struct rlhi_pairs_opts *o,
                       struct rlhi_pairs_stats *stats)
{
    const char *fbk = o->feedback_backend ? o->feedback_backend : "builtin";
    const char *source = o->regenerate ? "regenerate" : "rewrite";
    int batch = o->batch > 0 ? o->batch : 16;
    int max_tokens = o->max_tokens > 0 ? o->max_tokens : 256;
    size_t max_chars = o->max_prompt_chars ? o->max_prompt_chars
                                           : REWRITE_TRANSCRIPT_CHARS;
    struct rlhi_llm_request *reqs = NULL;
    struct rlhi_llm_result *res = NULL;
    struct job *jobs = NULL;
    struct rlhi__turn_ref *refs = NULL;
    struct rlhi_progress prog;
    struct rlhi_buf prompt = RLHI_BUF_INIT;
    char *first_err = NULL;
    int first_code = 0;
    size_t nrefs = 0, next = 0;
    int64_t run = 0, cap = rlhi__pairs_cap(o);
    uint64_t batch_failed = 0; /* stats->failed before this batch */
    uint64_t refused = 0;      /* failures with HTTP 400 */
    double t0 = rlhi_time_now();
    int rc;

    memset(stats, 0, sizeof *stats);
    if ((rc = rlhi_pairs_schema(s)) ||
        (rc = load_refs(s, fbk, &refs, &nrefs)))
        goto out;
    if (!nrefs) {
        rc = rlhi_err(RLHI_ENOTFOUND, "no reattempt_feedback turns labelled "
                      "by '%s' in '%s'\nhint: run 'rlhi feedback --db %s' "
                      "first (after 'rlhi ingest')", fbk, rlhi_store_path(s),
                      rlhi_store_path(s));
        goto out;
    }
    jobs = rlhi_calloc((size_t)batch, sizeof *jobs);
    reqs = rlhi_calloc((size_t)batch, sizeof *reqs);
    res = rlhi_calloc((size_t)batch, sizeof *res);
    if (!jobs || !reqs || !res) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot make rewrite pairs");
        goto out;
    }
    if ((rc = rlhi_store_run_start(s, "pairs", o->args ? o->args : source,
                                   &run)))
        goto out;
    rlhi_progress_start(&prog, source, nrefs);

    while (next < nrefs) {
        int nj = 0;

        /* Gather a batch of turns that have no pair yet. */
        while (next < nrefs && nj < batch) {
            const struct rlhi__turn_ref *r = &refs[next];

            if (cap && (int64_t)stats->made + nj >= cap)
                break;
            next++;
            rc = rlhi__pair_seen(s, source, r->conv, r->turn - 2, o->round,
                                 stats);
            if (rc < 0)
                goto out_run;
            if (rc)
                continue;
            rc = job_prepare(s, r, o, max_chars, stats, &jobs[nj]);
            if (rc < 0) {
                job_release(&jobs[nj]);
                goto out_run;
            }
            if (!rc) {
                stats->skipped++;
                job_release(&jobs[nj]);
                continue;
            }
            rlhi_llm_request_init(&reqs[nj], RLHI_LLM_CHAT);
            if (o->regenerate) {
                reqs[nj].messages = jobs[nj].pm + jobs[nj].first;
                reqs[nj].n_messages =
                    (size_t)(jobs[nj].req + 1 - jobs[nj].first);
            } else {
                reqs[nj].messages = jobs[nj].am;
                reqs[nj].n_messages = jobs[nj].nam;
            }
            reqs[nj].max_tokens = max_tokens;
            reqs[nj].temperature = 0; /* greedy: reruns give the same */
            nj++;
        }
        if (!nj) {
            if (cap && (int64_t)stats->made >= cap)
                break;
            continue;
        }

        /* Ask, then store the batch in one transaction. */
        rc = rlhi_llm_run(gen, reqs, (size_t)nj, res);
        if (rc == RLHI_ENOMEM)
            goto out_jobs;
        if ((rc = rlhi_store_begin(s)))
            goto out_jobs;
        for (int i = 0; i < nj; i++) {
            struct rlhi__pair p = {0};
            char *chosen = NULL;

            if (res[i].status < 0 || res[i].n_texts < 1) {
                stats->failed++;
                refused += res[i].http_status == 400;
                if (!first_code) {
                    first_code = res[i].status < 0 ? res[i].status : RLHI_ENET;
                    first_err = rlhi_strdup(res[i].error ? res[i].error
                                                         : "no answer");
                }
                continue;
            }
            chosen = rlhi__dup_redacted(trim(res[i].texts[0]), o->redact,
                                        &stats->redactions);
            if (!chosen) {
                rc = RLHI_ENOMEM;
                break;
            }
            if (!*chosen) {
                rlhi_warn("conversation '%s' turn %d: the model gave an "
                          "empty answer; skipped", jobs[i].c.hash,
                          jobs[i].req);
                stats->skipped++;
                rlhi_free(chosen);
                continue;
            }
            rlhi_buf_clear(&prompt);
            if ((rc = rlhi__prompt_json(jobs[i].persona, jobs[i].pm,
                                        (size_t)jobs[i].req + 1, &prompt))) {
                rlhi_free(chosen);
                break;
            }
            p.conv = jobs[i].c.id;
            p.user_id = jobs[i].c.user_id;
            p.turn = jobs[i].req;
            p.round = o->round;
            p.source = source;
            p.prompt = prompt.buf;
            p.chosen = chosen;
            p.rejected = jobs[i].original;
            p.persona = jobs[i].persona;
            rc = rlhi__pair_insert(s, &p);
            rlhi_free(chosen);
            if (rc < 0)
                break;
            stats->made += (uint64_t)rc;
            rc = 0;
        }
        if (rc || (rc = rlhi_store_commit(s))) {
            rlhi_store_rollback(s);
            goto out_jobs;
        }
        for (int i = 0; i < nj; i++) {
            rlhi_llm_result_release(&res[i]);
            job_release(&jobs[i]);
        }
        rlhi_progress_update(&prog, next);
        /* Every request of the batch failed: the backend is down or
         * refuses these requests; stop rather than fail every turn. */
        if (stats->failed >= batch_failed + (uint64_t)nj) {
            rc = rlhi_err(first_code, "every request of a batch failed; "
                          "stopped. The first: %s",
                          first_err ? first_err : "?");
            goto out_run;
        }
        batch_failed = stats->failed;
        if ((rc = rlhi__pairs_stop_hook(o, stats)))
            goto out_run;
        if (o->limit && (int64_t)stats->made >= o->limit)
            break;
        continue;

    out_jobs:
        for (int i = 0; i < nj; i++) {
            rlhi_llm_result_release(&res[i]);
            job_release(&jobs[i]);
        }
        goto out_run;
    }
    rlhi_progress_finish(&prog);

out_run:
    if (!rc)
        rc = rlhi__pairs_run_finish(s, run, "turns", stats);
    if (!rc && first_code)
        rc = rlhi_err(first_code, "%llu of %llu model requests failed; the "
                      "first: %s%s", (unsigned long long)stats->failed,
                      (unsigned long long)(stats->failed + stats->made +
                                           stats->skipped),
                      first_err ? first_err : "?",
                      refused ? "\nhint: the model refused requests (HTTP "
                                "400), most often as longer than its "
                                "context; --max_prompt_chars N makes the "
                                "prompts shorter" : "");
out:
    stats->seconds = rlhi_time_now() - t0;
    rlhi_free(first_err);
    rlhi_free(refs);
    rlhi_free(jobs);
    rlhi_free(reqs);
    rlhi_free(res);
    rlhi_buf_release(&prompt);
    return rc;
}
