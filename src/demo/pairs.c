/* The demo's preference pairs, built from the store the pipeline filled
 * (conversations, builtin feedback labels, builtin personas).
 *
 * Why not src/pipeline/pairs.c's rlhi_pairs_rewrite(): it asks the model
 * to rewrite through an instruction ("Here is a conversation ... Rewrite
 * the answer to follow the user's feedback"), which a one-million-
 * parameter model trained on plain chats cannot follow. A model that
 * follows feedback in context produces the rewrite by answering the
 * conversation with the feedback turn in it, and in on-policy logs that
 * answer is already there: the assistant message right after the
 * feedback. So a rewrite pair here is
 *     prompt   = the conversation up to the request (persona separate)
 *     chosen   = the model's answer after the user's feedback
 *     rejected = the answer the feedback was about.
 * The persona-aware judge is the pipeline's builtin "style" judge
 * (rlhi_judge_style), reading the derived persona's text; nothing here
 * uses the world's hidden truth.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "demo_internal.h"

void rlhi__demo_data_release(struct rlhi__demo_data *d)
{
    int i, k;

    for (i = 0; i < d->n_conv; i++) {
        struct rlhi__demo_conv *c = &d->conv[i];

        for (k = 0; k < c->n; k++) {
            rlhi_free(c->role[k]);
            rlhi_free(c->content[k]);
        }
        rlhi_free(c->role);
        rlhi_free(c->content);
        rlhi_free(c->label);
    }
    for (i = 0; i < d->n_users; i++) {
        rlhi_free(d->users[i].key);
        rlhi_free(d->users[i].persona);
    }
    rlhi_free(d->conv);
    rlhi_free(d->users);
    memset(d, 0, sizeof *d);
}

int rlhi__demo_user_find(const struct rlhi__demo_data *d, const char *key)
{
    int i;

    for (i = 0; i < d->n_users; i++)
        if (!strcmp(d->users[i].key, key))
            return i;
    return -1;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);

    return rlhi_strdup(t ? t : "");
}

/* Makes room for n messages in c. 0 or RLHI_ENOMEM. */
static int grow_msgs(struct rlhi__demo_conv *c, int n)
{
    void *p;

    if (!(p = rlhi_realloc(c->role, (size_t)n * sizeof(char *))))
        return RLHI_ENOMEM;
    c->role = p;
    if (!(p = rlhi_realloc(c->content, (size_t)n * sizeof(char *))))
        return RLHI_ENOMEM;
    c->content = p;
    if (!(p = rlhi_realloc(c->label, (size_t)n * sizeof(int))))
        return RLHI_ENOMEM;
    c->label = p;
    return 0;
}

int rlhi__demo_data_load(struct rlhi_store *s, struct rlhi__demo_data *d)
{
    sqlite3_stmt *st = NULL, *ms = NULL, *fs = NULL;
    int rc, i;

    memset(d, 0, sizeof *d);
    /* Users and their personas. */
    rc = rlhi_store_prepare(s, &st, "SELECT u.key, u.n_conversations, "
                            "(SELECT p.text FROM personas p WHERE p.user_id "
                            "= u.id AND p.backend = 'builtin') FROM users u "
                            "ORDER BY u.key");
    if (rc)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct rlhi__demo_user *u;
        void *p = rlhi_realloc(d->users, (size_t)(d->n_users + 1) *
                                             sizeof *d->users);

        if (!p) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot load users");
            goto out;
        }
        d->users = p;
        u = &d->users[d->n_users++];
        memset(u, 0, sizeof *u);
        u->key = dup_col(st, 0);
        u->n_conv = sqlite3_column_int(st, 1);
        if (sqlite3_column_type(st, 2) != SQLITE_NULL)
            u->persona = dup_col(st, 2);
    }
    if (rc != SQLITE_DONE) {
        rc = rlhi_store_err(s, "cannot read users");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    /* Conversations, messages and labels. */
    rc = rlhi_store_prepare(s, &st, "SELECT c.id, c.hash, u.key FROM "
                            "conversations c JOIN users u ON u.id = "
                            "c.user_id ORDER BY c.hash");
    if (!rc)
        rc = rlhi_store_prepare(s, &ms, "SELECT idx, role, content FROM "
                                "messages WHERE conversation_id = ? ORDER "
                                "BY idx");
    if (!rc)
        rc = rlhi_store_prepare(s, &fs, "SELECT turn_index, label FROM "
                                "feedback WHERE conversation_id = ? AND "
                                "backend = 'builtin'");
    if (rc)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct rlhi__demo_conv *c;
        int64_t id = sqlite3_column_int64(st, 0);
        void *p = rlhi_realloc(d->conv, (size_t)(d->n_conv + 1) *
                                            sizeof *d->conv);

        if (!p) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot load conversations");
            goto out;
        }
        d->conv = p;
        c = &d->conv[d->n_conv++];
        memset(c, 0, sizeof *c);
        snprintf(c->hash, sizeof c->hash, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        c->user = rlhi__demo_user_find(d, (const char *)
                                       sqlite3_column_text(st, 2));
        sqlite3_reset(ms);
        sqlite3_bind_int64(ms, 1, id);
        while ((rc = sqlite3_step(ms)) == SQLITE_ROW) {
            int k = c->n;

            if (grow_msgs(c, k + 1)) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot load messages");
                goto out;
            }
            c->role[k] = dup_col(ms, 1);
            c->content[k] = dup_col(ms, 2);
            c->label[k] = -1;
            c->n++;
        }
        if (rc != SQLITE_DONE) {
            rc = rlhi_store_err(s, "cannot read messages");
            goto out;
        }
        sqlite3_reset(fs);
        sqlite3_bind_int64(fs, 1, id);
        while ((rc = sqlite3_step(fs)) == SQLITE_ROW) {
            int k = sqlite3_column_int(fs, 0);
            const char *l = (const char *)sqlite3_column_text(fs, 1);

            if (k >= 0 && k < c->n)
                c->label[k] = rlhi_feedback_label_parse(l ? l : "");
        }
        if (rc != SQLITE_DONE) {
            rc = rlhi_store_err(s, "cannot read feedback");
            goto out;
        }
    }
    rc = rc == SQLITE_DONE ? 0 : rlhi_store_err(s, "cannot read "
                                                   "conversations");
    for (i = 0; !rc && i < d->n_conv; i++)
        for (int k = 0; k < d->conv[i].n; k++)
            if (!d->conv[i].role[k] || !d->conv[i].content[k])
                rc = rlhi_err(RLHI_ENOMEM, "cannot copy messages");
out:
    sqlite3_finalize(st);
    sqlite3_finalize(ms);
    sqlite3_finalize(fs);
    if (rc)
        rlhi__demo_data_release(d);
    return rc;
}

/* First message of the prompt that ends with request `req`: whole user /
 * assistant exchanges before it are kept while they fit in `max_chars`,
 * so prompts fit the tiny model's context. */
int rlhi__demo_prompt_start(const struct rlhi__demo_conv *c, int req,
                            size_t max_chars)
{
    size_t total = strlen(c->content[req]);
    int start = req;

    while (start >= 2) {
        size_t add = strlen(c->content[start - 1]) +
                     strlen(c->content[start - 2]);

        if (total + add > max_chars)
            break;
        total += add;
        start -= 2;
    }
    return start;
}

void rlhi__demo_pairs_release(struct rlhi__demo_pairs *p)
{
    int i;

    for (i = 0; i < p->n; i++) {
        rlhi_free(p->p[i].chosen);
        rlhi_free(p->p[i].rejected);
    }
    rlhi_free(p->p);
    memset(p, 0, sizeof *p);
}

int rlhi__demo_pairs_add(struct rlhi__demo_pairs *p, int conv, int req,
                         int start, const char *chosen, const char *rejected,
                         double cs, double rs)
{
    struct rlhi__demo_pair *e;

    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 64;
        void *q = rlhi_realloc(p->p, (size_t)nc * sizeof *p->p);

        if (!q)
            return rlhi_err(RLHI_ENOMEM, "cannot grow pairs");
        p->p = q;
        p->cap = nc;
    }
    e = &p->p[p->n];
    memset(e, 0, sizeof *e);
    e->conv = conv;
    e->req = req;
    e->start = start;
    e->chosen = rlhi_strdup(chosen);
    e->rejected = rlhi_strdup(rejected);
    e->cs = cs;
    e->rs = rs;
    e->kept = true;
    if (!e->chosen || !e->rejected) {
        rlhi_free(e->chosen);
        rlhi_free(e->rejected);
        return rlhi_err(RLHI_ENOMEM, "cannot copy a pair");
    }
    p->n++;
    return 0;
}

/* Appends msgs [start, end] of c as JSON objects to `b`. */
static int add_msgs(struct rlhi_buf *b, const struct rlhi__demo_conv *c,
                    int start, int end)
{
    int k, r = 0;

    for (k = start; k <= end; k++) {
        r |= rlhi_buf_adds(b, k > start ? ",{\"role\":" : "{\"role\":");
        r |= rlhi_buf_add_json_str(b, c->role[k], strlen(c->role[k]));
        r |= rlhi_buf_adds(b, ",\"content\":");
        r |= rlhi_buf_add_json_str(b, c->content[k], strlen(c->content[k]));
        r |= rlhi_buf_adds(b, "}");
    }
    return r;
}

int rlhi__demo_pairs_write(const struct rlhi__demo_data *d,
                           const struct rlhi__demo_pairs *p,
                           const char *source, bool only_kept, int limit,
                           bool sft, const char *path, int *written)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    int i, n = 0, r = 0;

    for (i = 0; i < p->n && (!limit || n < limit); i++) {
        const struct rlhi__demo_pair *e = &p->p[i];
        const struct rlhi__demo_conv *c = &d->conv[e->conv];
        const char *persona = c->user >= 0 && d->users[c->user].persona
                                  ? d->users[c->user].persona : "";

        if (only_kept && !e->kept)
            continue;
        if (sft) {
            r |= rlhi_buf_adds(&b, "{\"messages\":[");
            if (*persona) {
                r |= rlhi_buf_adds(&b, "{\"role\":\"system\",\"content\":");
                r |= rlhi_buf_add_json_str(&b, persona, strlen(persona));
                r |= rlhi_buf_adds(&b, "},");
            }
            r |= add_msgs(&b, c, e->start, e->req);
            r |= rlhi_buf_adds(&b, ",{\"role\":\"assistant\",\"content\":");
            r |= rlhi_buf_add_json_str(&b, e->chosen, strlen(e->chosen));
            r |= rlhi_buf_adds(&b, "}]}\n");
        } else {
            r |= rlhi_buf_adds(&b, "{\"prompt\":[");
            r |= add_msgs(&b, c, e->start, e->req);
            r |= rlhi_buf_adds(&b, "],\"chosen\":[{\"role\":\"assistant\","
                                   "\"content\":");
            r |= rlhi_buf_add_json_str(&b, e->chosen, strlen(e->chosen));
            r |= rlhi_buf_adds(&b, "}],\"rejected\":[{\"role\":"
                                   "\"assistant\",\"content\":");
            r |= rlhi_buf_add_json_str(&b, e->rejected, strlen(e->rejected));
            r |= rlhi_buf_adds(&b, "}],\"persona\":");
            r |= rlhi_buf_add_json_str(&b, persona, strlen(persona));
            r |= rlhi_buf_adds(&b, ",\"user_id\":");
            r |= rlhi_buf_add_json_str(&b, c->user >= 0
                                               ? d->users[c->user].key : "",
                                       c->user >= 0
                                           ? strlen(d->users[c->user].key)
                                           : 0);
            r |= rlhi_buf_addf(&b, ",\"conversation_hash\":\"%s\",\"turn\":%d,"
                               "\"source\":\"%s\",\"chosen_score\":%.4g,"
                               "\"rejected_score\":%.4g,\"margin\":%.4g}\n",
                               c->hash, e->req, source, e->cs, e->rs,
                               e->cs - e->rs);
        }
        n++;
    }
    if (r) {
        rlhi_buf_release(&b);
        return rlhi_err(RLHI_ENOMEM, "cannot format pairs");
    }
    r = rlhi_file_write_atomic(path, b.buf ? b.buf : "", b.len);
    rlhi_buf_release(&b);
    *written = n;
    return r;
}
