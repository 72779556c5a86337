/* Tests of the pair stages: schema migration, filters and export from the
 * case files, the LLM-backed detector and summariser with a scripted model,
 * and rewrite / regenerate / rank against the real stories260K model with
 * resumption, redaction and bad input. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "pipeline/pairs_internal.h"
#include "rlhi/generate.h"
#include "rlhi/pairs.h"
#include "rlhi/reward.h"

static char tmpdir[] = "/tmp/rlhi_test_pairs_XXXXXX";

static struct rlhi_store *new_store(const char *name)
{
    struct rlhi_store *s = NULL;
    char path[256];

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
    if (rlhi_store_open(&s, path))
        fprintf(stderr, "cannot open store '%s': %s\n", path, rlhi_errmsg());
    return s;
}

/* A new store `name` holding the JSONL lines in `log` (ingested from a
 * file beside it); NULL (with the reason on stderr) when that fails. */
static struct rlhi_store *ingested(const char *name, const struct rlhi_buf *log)
{
    struct rlhi_store *s = new_store(name);
    struct rlhi_ingest_stats is;
    char path[300];
    const char *p = path;

    snprintf(path, sizeof path, "%s/%s.jsonl", tmpdir, name);
    if (s && (rlhi_file_write_atomic(path, log->buf, log->len) ||
              rlhi_ingest(s, &p, 1, NULL, &is))) {
        fprintf(stderr, "cannot ingest '%s': %s\n", path, rlhi_errmsg());
        rlhi_store_close(s);
        s = NULL;
    }
    return s;
}

/* ---- case files --------------------------------------------------------- */

#define MAXKEYS 16

struct kv {
    int n;
    char *key[MAXKEYS];
    char *val[MAXKEYS];
    int line;
};

static const char *get(const struct kv *c, const char *k)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->key[i], k))
            return c->val[i];
    return NULL;
}

/* "\n" escapes to newlines, in place. */
static char *unescape(char *s)
{
    char *w = s;

    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] == 'n') {
            *w++ = '\n';
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
    return s;
}

/* Reads the next case from f; 0 at the end. */
static int next_case(FILE *f, struct kv *c, int *lineno)
{
    char buf[8192];

    for (int i = 0; i < c->n; i++) {
        free(c->key[i]);
        free(c->val[i]);
    }
    c->n = 0;
    while (fgets(buf, sizeof buf, f)) {
        char *colon;
        size_t len = strlen(buf);

        (*lineno)++;
        if (len && buf[len - 1] == '\n')
            buf[--len] = 0;
        if (buf[0] == '#')
            continue;
        if (!len) {
            if (c->n)
                return 1;
            continue;
        }
        colon = strstr(buf, ": ");
        if (!colon || c->n == MAXKEYS) {
            fprintf(stderr, "bad case line %d: %s\n", *lineno, buf);
            continue;
        }
        if (!c->n)
            c->line = *lineno;
        *colon = 0;
        c->key[c->n] = strdup(buf);
        c->val[c->n] = strdup(colon + 2);
        /* Expected JSON lines keep their own escapes. */
        if (strcmp(c->key[c->n], "expect"))
            unescape(c->val[c->n]);
        c->n++;
    }
    return c->n > 0;
}

static FILE *open_case(const char *name)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof path, "tests/cases/%s", name);
    if (!(f = fopen(path, "r")))
        fprintf(stderr, "cannot open '%s'\n", path);
    return f;
}

/* A user and a conversation row for a hand-made pair; returns the
 * conversation id. */
static int64_t add_conv(struct rlhi_store *s, const char *user,
                        const char *hash, int64_t *uid)
{
    sqlite3_stmt *st;
    int64_t cid = 0;

    rlhi_store_prepare(s, &st, "INSERT OR IGNORE INTO users(key) VALUES "
                       "(?)");
    sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_finalize(st);
    rlhi_store_prepare(s, &st, "SELECT id FROM users WHERE key = ?");
    sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
    sqlite3_step(st);
    *uid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    rlhi_store_prepare(s, &st, "INSERT INTO conversations(hash, user_id, "
                       "turn_count, n_messages) VALUES (?, ?, 1, 2)");
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, *uid);
    if (sqlite3_step(st) == SQLITE_DONE)
        cid = sqlite3_last_insert_rowid(rlhi_store_db(s));
    sqlite3_finalize(st);
    return cid;
}

/* Stores the pair a case describes. */
static int add_case_pair(struct rlhi_store *s, const struct kv *c)
{
    struct rlhi_chat_msg m = {"user", get(c, "request")
                                          ? get(c, "request")
                                          : "Tell me about Australia."};
    struct rlhi_buf prompt = RLHI_BUF_INIT;
    struct rlhi__pair p = {0};
    const char *sc = get(c, "scores"), *drop = get(c, "drop");
    int rc;

    p.conv = add_conv(s, get(c, "user") ? get(c, "user") : "u",
                      get(c, "conversation") ? get(c, "conversation") : "c",
                      &p.user_id);
    p.turn = get(c, "turn") ? atoi(get(c, "turn")) : 0;
    p.source = get(c, "source") ? get(c, "source")
                                : sc ? "rank" : "rewrite";
    p.persona = get(c, "persona");
    rlhi__prompt_json(p.persona, &m, 1, &prompt);
    p.prompt = prompt.buf;
    p.chosen = get(c, "chosen");
    p.rejected = get(c, "rejected");
    if (sc) {
        p.has_scores = true;
        sscanf(sc, "%lf %lf", &p.chosen_score, &p.rejected_score);
    }
    rlhi_store_begin(s);
    rc = rlhi__pair_insert(s, &p);
    rlhi_store_commit(s);
    if (drop) {
        sqlite3_stmt *st;

        rlhi_store_prepare(s, &st, "UPDATE pairs SET kept = 0, "
                           "drop_reason = ?");
        sqlite3_bind_text(st, 1, drop, -1, SQLITE_STATIC);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
    rlhi_buf_release(&prompt);
    return rc;
}

/* A judge whose verdicts the test sets: ab for the first call (chosen
 * shown first), ba for the second. */
struct scripted {
    int ab, ba, calls;
    bool error;
    char first_a[64];
};

static int scripted_compare(struct rlhi_judge *j, const char *persona,
                            const struct rlhi_chat_msg *prompt, size_t n,
                            const char *a, const char *b, int *pref)
{
    struct scripted *sj = j->ctx;

    (void)persona;
    (void)prompt;
    (void)n;
    (void)b;
    if (sj->error)
        return rlhi_err(RLHI_EFORMAT, "scripted judge: no verdict");
    if (sj->calls == 0)
        snprintf(sj->first_a, sizeof sj->first_a, "%s", a);
    *pref = sj->calls++ == 0 ? sj->ab : sj->ba;
    return 0;
}

/* The same verdicts from an LLM judge over a batch backend: the reply is
 * {"winner": ...} from AB when the chosen answer is shown as A, from BA
 * when the rejected one is; "scripted error" replies with no JSON. */
struct verdicts {
    const char *chosen;
    int ab, ba, batches, asked;
    bool error;
};

static int verdict_many(struct rlhi_ask *a,
                        const struct rlhi_chat_msg *const *m,
                        const size_t *counts, size_t n, int attempt,
                        char **texts)
{
    struct verdicts *v = a->ctx;
    static const char *const w[] = {"{\"winner\": \"B\"}",
                                    "{\"winner\": \"tie\"}",
                                    "{\"winner\": \"A\"}"};

    (void)attempt;
    v->batches++;
    for (size_t i = 0; i < n; i++) {
        const char *u = m[i][1].content, *at = strstr(u, "Answer A:\n");
        bool chosen_first = at && !strncmp(at + 10, v->chosen,
                                           strlen(v->chosen));

        (void)counts;
        v->asked++;
        texts[i] = rlhi_strdup(v->error ? "I cannot decide."
                               : w[1 + (chosen_first ? v->ab : v->ba)]);
    }
    return 0;
}

static void test_filter_cases(void)
{
    FILE *f = open_case("pairs_filter.test");
    struct kv c = {0};
    int lineno = 0, ncases = 0;

    if (!f) {
        CHECK(f != NULL);
        return;
    }
    while (next_case(f, &c, &lineno)) {
        struct rlhi_store *s = new_store("filter.db");
        struct rlhi_filter_opts o = {0};
        struct rlhi_filter_stats st;
        struct rlhi_judge judge, *jp = NULL;
        struct scripted sj = {0};
        const char *js = get(&c, "judge"), *expect = get(&c, "expect");
        sqlite3_stmt *q;

        if (!s || !expect || !js) {
            CHECK_MSG(0, "case at line %d: no store, judge or expect",
                      c.line);
            rlhi_store_close(s);
            continue;
        }
        ncases++;
        CHECK_OK(rlhi_pairs_schema(s));
        CHECK_INT_EQ(add_case_pair(s, &c), 1);
        if (get(&c, "min_margin"))
            o.min_margin = atof(get(&c, "min_margin"));
        if (!strcmp(js, "style")) {
            rlhi_judge_style(&judge);
            jp = &judge;
        } else if (!strncmp(js, "scripted", 8)) {
            memset(&judge, 0, sizeof judge);
            judge.name = "scripted";
            judge.compare = scripted_compare;
            judge.ctx = &sj;
            if (!strcmp(js, "scripted error"))
                sj.error = true;
            else
                sscanf(js + 8, "%d %d", &sj.ab, &sj.ba);
            jp = &judge;
        }
        CHECK_OK(rlhi_pairs_filter(s, jp, &o, &st));
        CHECK_INT_EQ(st.checked, 1);
        rlhi_store_prepare(s, &q, "SELECT kept, drop_reason FROM pairs");
        if (sqlite3_step(q) == SQLITE_ROW) {
            const char *r = (const char *)sqlite3_column_text(q, 1);

            CHECK_MSG(!strcmp(expect, r ? r : "kept") &&
                          sqlite3_column_int(q, 0) == !r,
                      "case at line %d: expected %s, got %s (kept %d)",
                      c.line, expect, r ? r : "kept",
                      sqlite3_column_int(q, 0));
        } else {
            CHECK_MSG(0, "case at line %d: the pair is gone", c.line);
        }
        sqlite3_finalize(q);
        /* The scripted judge saw chosen first, then rejected first. */
        if (sj.calls)
            CHECK_MSG(sj.calls == 2 && !strcmp(sj.first_a, get(&c, "chosen")),
                      "case at line %d: judge calls %d, first a '%s'",
                      c.line, sj.calls, sj.first_a);

        /* A rerun checks nothing again, except a pair that got no
         * verdict: it is asked about again. */
        CHECK_OK(rlhi_pairs_filter(s, jp, &o, &st));
        if (!strcmp(expect, "judge_error")) {
            CHECK_INT_EQ(st.checked, 1);
            CHECK_INT_EQ(st.already, 0);
        } else {
            CHECK_INT_EQ(st.checked, 0);
            CHECK_INT_EQ(st.already, 1);
        }
        rlhi_store_close(s);

        /* A scripted case again through the LLM judge, whose two
         * comparisons go out as one batch (and one more for retries). */
        if (jp && !strncmp(js, "scripted", 8)) {
            struct verdicts v = {get(&c, "chosen"), sj.ab, sj.ba, 0, 0,
                                 sj.error};
            struct rlhi_ask ask = {NULL, &v, 0, verdict_many};
            struct rlhi_judge lj;
            const char *r;

            s = new_store("filter-llm.db");
            if (!s)
                continue;
            CHECK_OK(rlhi_pairs_schema(s));
            CHECK_INT_EQ(add_case_pair(s, &c), 1);
            rlhi_judge_llm(&lj, &ask);
            CHECK_OK(rlhi_pairs_filter(s, &lj, &o, &st));
            rlhi_store_prepare(s, &q, "SELECT drop_reason FROM pairs");
            r = sqlite3_step(q) == SQLITE_ROW
                    ? (const char *)sqlite3_column_text(q, 0) : "gone";
            CHECK_MSG(!strcmp(expect, r ? r : "kept"), "case at line %d "
                      "with the LLM judge: expected %s, got %s", c.line,
                      expect, r ? r : "kept");
            sqlite3_finalize(q);
            if (strcmp(expect, "identical") && strcmp(expect, "low_margin"))
                CHECK_MSG(v.asked == (sj.error ? 4 : 2) &&
                              v.batches == (sj.error ? 2 : 1),
                          "case at line %d: %d asked in %d batches",
                          c.line, v.asked, v.batches);
            rlhi_store_close(s);
        }
    }
    next_case(f, &c, &lineno);
    fclose(f);
    CHECK(ncases >= 15);
}

/* 40 pairs through a batching LLM judge: chunks of 16 pairs (32
 * comparisons) at a time, decisions recorded in order; then a judge that
 * never answers in the format stops the run after 8 pairs in a row. */
/* Scores for a batch: the number of words of the answer shown, capped at
 * 10; "garbled" answers get no valid score. */
static int score_batch(struct rlhi_ask *a, const struct rlhi_chat_msg *const *m,
                       const size_t *counts, size_t n, int attempt,
                       char **texts)
{
    struct verdicts *v = a->ctx;

    (void)counts;
    (void)attempt;
    v->batches++;
    for (size_t i = 0; i < n; i++) {
        const char *at = strstr(m[i][1].content, "The answer:\n");
        char buf[32];
        int words = 1;

        v->asked++;
        for (const char *p = at ? at + 12 : ""; *p && *p != '\n'; p++)
            words += *p == ' ';
        snprintf(buf, sizeof buf, "{\"score\": %d}", words > 10 ? 10 : words);
        texts[i] = rlhi_strdup(at && strstr(at, "garbled") ? "?" : buf);
    }
    return 0;
}

static void test_filter_batches(void)
{
    TEST("LLM judge: candidates scored in one batch") {
        struct verdicts v = {"", 0, 0, 0, 0, false};
        struct rlhi_ask ask = {NULL, &v, 0, score_batch};
        struct rlhi_chat_msg q = {"user", "Tell me about the sun."};
        const char *ans[4] = {"It is a star.", "garbled text here",
                              "Sun.", "The sun is a big hot ball of gas."};
        double sc[4];
        int rcs[4];
        char *errs[4];
        struct rlhi_judge lj;

        rlhi_judge_llm(&lj, &ask);
        CHECK_OK(lj.score_many(&lj, "Likes detail.", &q, 1, ans, 4, sc, rcs,
                               errs));
        CHECK_INT_EQ(v.batches, 2); /* the answers, then one retry */
        CHECK_INT_EQ(v.asked, 5);
        CHECK(!rcs[0] && !rcs[2] && !rcs[3]);
        CHECK_INT_EQ(rcs[1], RLHI_EFORMAT);
        CHECK(errs[1] != NULL);
        CHECK_NEAR(sc[0], 4, 0, 0);
        CHECK_NEAR(sc[2], 1, 0, 0);
        CHECK_NEAR(sc[3], 9, 0, 0);
        for (int i = 0; i < 4; i++)
            rlhi_free(errs[i]);
    }

    TEST("LLM judge: 40 pairs in 3 batches; a broken judge stops at 8") {
        struct rlhi_store *s = new_store("filter-many.db");
        struct verdicts v = {"good", 1, -1, 0, 0, false};
        struct rlhi_ask ask = {NULL, &v, 0, verdict_many};
        struct rlhi_filter_opts o = {0};
        struct rlhi_filter_stats st;
        struct rlhi_judge lj;
        int rc;

        if (!s)
            break;
        CHECK_OK(rlhi_pairs_schema(s));
        for (int i = 0; i < 40; i++) {
            char conv[16], chosen[32], rejected[32];
            const char *key[] = {"conversation", "chosen", "rejected"};
            char *val[] = {conv, chosen, rejected};
            struct kv c = {0};

            snprintf(conv, sizeof conv, "c%d", i);
            snprintf(chosen, sizeof chosen, "good answer %d", i);
            snprintf(rejected, sizeof rejected, "bad answer %d", i);
            for (int k = 0; k < 3; k++) {
                c.key[c.n] = (char *)key[k];
                c.val[c.n++] = val[k];
            }
            CHECK_INT_EQ(add_case_pair(s, &c), 1);
        }
        rlhi_judge_llm(&lj, &ask);
        CHECK_OK(rlhi_pairs_filter(s, &lj, &o, &st));
        CHECK_INT_EQ(st.checked, 40);
        CHECK_INT_EQ(st.kept, 40);
        CHECK_INT_EQ(v.batches, 3);
        CHECK_INT_EQ(v.asked, 80);

        o.force = true;
        v.error = true;
        v.batches = v.asked = 0;
        rc = rlhi_pairs_filter(s, &lj, &o, &st);
        CHECK_INT_EQ(rc, RLHI_EINVAL);
        CHECK_MSG(strstr(rlhi_errmsg(), "8 pairs in a row") &&
                  strstr(rlhi_errmsg(), "I cannot decide"), "%s",
                  rlhi_errmsg());
        CHECK_INT_EQ(st.checked, 8);
        CHECK_INT_EQ(v.batches, 2); /* the first chunk and its retries */
        rlhi_store_close(s);
    }
}

static void test_export_cases(void)
{
    FILE *f = open_case("pairs_export.test");
    struct kv c = {0};
    int lineno = 0, ncases = 0;

    if (!f) {
        CHECK(f != NULL);
        return;
    }
    while (next_case(f, &c, &lineno)) {
        struct rlhi_store *s = new_store("export.db");
        const char *args = get(&c, "args") ? get(&c, "args") : "";
        const char *expect = get(&c, "expect");
        const char *src = NULL;
        char *text = NULL;
        size_t len = 0;
        uint64_t n = 0;
        FILE *out;

        if (!s || !expect) {
            CHECK_MSG(0, "case at line %d: no store or expect", c.line);
            rlhi_store_close(s);
            continue;
        }
        ncases++;
        CHECK_OK(rlhi_pairs_schema(s));
        CHECK_INT_EQ(add_case_pair(s, &c), 1);
        if (!strncmp(args, "--source ", 9))
            src = args + 9;
        out = open_memstream(&text, &len);
        CHECK_OK(rlhi_pairs_export(s, src, strstr(args, "--include_dropped")
                                               != NULL, out, &n));
        fclose(out);
        if (!strcmp(expect, "nothing")) {
            CHECK_MSG(n == 0 && len == 0, "case at line %d: expected "
                      "nothing, got %s", c.line, text);
        } else {
            size_t el = strlen(expect);
            json_error_t je;
            json_t *j = json_loads(text, 0, &je);

            CHECK_INT_EQ(n, 1);
            CHECK_MSG(len == el + 1 && !strncmp(text, expect, el) &&
                          text[el] == '\n',
                      "case at line %d:\n  got:      %s  expected: %s",
                      c.line, text, expect);
            /* Each line is a JSON object TRL reads. */
            CHECK(j && json_is_array(json_object_get(j, "prompt")));
            json_decref(j);
        }
        free(text);
        rlhi_store_close(s);
    }
    fclose(f);
    CHECK(ncases >= 6);
}

/* ---- the scripted model for the LLM detector ---------------------------- */

struct script {
    const char *const *replies;
    int n, calls;
    size_t last_n;         /* messages in the last call */
    char last_user[4096];  /* its last message */
    int attempts[8];
};

static int scripted_ask(struct rlhi_ask *a, const struct rlhi_chat_msg *m,
                        size_t n, int attempt, char **text)
{
    struct script *sc = a->ctx;
    const char *r = sc->calls < sc->n ? sc->replies[sc->calls] : "{}";

    if (sc->calls < 8)
        sc->attempts[sc->calls] = attempt;
    sc->calls++;
    sc->last_n = n;
    snprintf(sc->last_user, sizeof sc->last_user, "%s", m[n - 1].content);
    *text = rlhi_strdup(r);
    return 0;
}

static int64_t count_sql(struct rlhi_store *s, const char *sql);

/* A batch backend: the verdict depends on the turn quoted in the prompt
 * ("BAD": malformed first, valid on the retry; "WORSE": malformed both
 * times; else positive). Counts batches, their sizes and attempts. */
struct batch_script {
    int batches, asked, retried;
    size_t largest;
};

static int batch_ask(struct rlhi_ask *a, const struct rlhi_chat_msg *const *m,
                     const size_t *counts, size_t n, int attempt,
                     char **texts)
{
    struct batch_script *b = a->ctx;

    b->batches++;
    b->largest = n > b->largest ? n : b->largest;
    for (size_t i = 0; i < n; i++) {
        /* the detector's prompt is the second message of each request */
        const char *u = m[i][1].content;
        bool bad = strstr(u, "WORSE") || (!attempt && strstr(u, "BAD"));

        *(attempt ? &b->retried : &b->asked) += 1;
        CHECK(counts[i] == (attempt ? 4u : 2u));
        texts[i] = rlhi_strdup(bad ? "no idea" :
                               "{\"label\": \"positive\", \"dissatisfied\""
                               ": false, \"actionable\": false}");
    }
    return 0;
}

static int one_ask(struct rlhi_ask *a, const struct rlhi_chat_msg *m,
                   size_t n, int attempt, char **text)
{
    (void)a; (void)m; (void)n; (void)attempt; (void)text;
    return rlhi_err(RLHI_EINVAL, "fn called though many is set");
}

/* Persona verdicts for a batch: "merged" for merge prompts, "chunk" for
 * chunks, nothing valid for a history that says NOPE. */
static int persona_batch(struct rlhi_ask *a,
                         const struct rlhi_chat_msg *const *m,
                         const size_t *counts, size_t n, int attempt,
                         char **texts)
{
    struct batch_script *b = a->ctx;

    (void)counts;
    b->batches++;
    for (size_t i = 0; i < n; i++) {
        const char *u = m[i][1].content;

        *(attempt ? &b->retried : &b->asked) += 1;
        if (strstr(u, "NOPE"))
            texts[i] = rlhi_strdup("no");
        else
            texts[i] = rlhi_strdup(
                strstr(u, "Combine them")
                    ? "{\"expertise\": \"expert\", \"informativeness\": "
                      "\"concise\", \"tone\": \"formal\", \"structure\""
                      ": \"prose\", \"text\": \"merged\"}"
                    : "{\"expertise\": \"novice\", \"informativeness\": "
                      "\"no signal\", \"tone\": \"casual\", "
                      "\"structure\": \"prose\", \"text\": \"chunk\"}");
    }
    return 0;
}

static void test_persona_batches(void)
{
    TEST("LLM personas: 20 users in batches of 16, chunks then merges") {
        struct batch_script bs = {0};
        struct rlhi_ask ask = {one_ask, &bs, 0, persona_batch};
        struct rlhi_persona_stats ps;
        struct rlhi_buf log = RLHI_BUF_INIT;
        struct rlhi_store *r;

        /* users 0-9: one short message (one chunk); 10-19: three long
         * ones (three chunks + a merge at 300 characters); user 7 NOPE */
        for (int u = 0; u < 20; u++)
            for (int c = 0; c < (u < 10 ? 1 : 3); c++)
                rlhi_buf_addf(&log, "{\"user\": \"user%02d\", \"messages\":"
                              " [{\"role\": \"user\", \"content\": \"%s "
                              "%d %.*s\"}, {\"role\": \"assistant\", "
                              "\"content\": \"ok\"}]}\n", u,
                              u == 7 ? "NOPE" : "hello", c, u < 10 ? 4 : 200,
                              "pad pad pad pad pad pad pad pad pad pad pad "
                              "pad pad pad pad pad pad pad pad pad pad pad "
                              "pad pad pad pad pad pad pad pad pad pad pad "
                              "pad pad pad pad pad pad pad pad pad pad pad "
                              "pad pad pad pad pad pad pad pad pad pad pad");
        r = ingested("llmpersona.db", &log);
        rlhi_buf_release(&log);
        CHECK(r != NULL);
        if (!r)
            break;
        CHECK_OK(rlhi_llm_persona_run(r, &ask, "llm", false, 300, &ps));
        CHECK_INT_EQ(ps.users, 20);
        CHECK_INT_EQ(ps.made, 19);
        /* 10 + 30 chunks, then 10 merges; user 7 asked twice */
        CHECK_INT_EQ(bs.asked, 50);
        CHECK_INT_EQ(bs.retried, 1);
        /* flush 1 (users 0-15): chunks, a retry, merges; flush 2: chunks,
         * merges */
        CHECK_INT_EQ(bs.batches, 5);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM personas WHERE "
                               "backend = 'llm' AND text = 'merged'"), 10);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM personas WHERE "
                               "backend = 'llm' AND text = 'chunk'"), 9);
        /* a rerun asks only for user 7 */
        memset(&bs, 0, sizeof bs);
        CHECK_OK(rlhi_llm_persona_run(r, &ask, "llm", false, 300, &ps));
        CHECK_INT_EQ(ps.unchanged, 19);
        CHECK_INT_EQ(bs.asked, 1);
        rlhi_store_close(r);
    }
}

static void test_llm_detector(void)
{
    TEST("feedback verdict: chatter around the JSON is tolerated") {
        const char *rep[] = {"Sure! ```json\n{\"label\": "
                             "\"reattempt_feedback\", \"dissatisfied\": "
                             "true, \"actionable\": true}\n```"};
        struct script sc = {rep, 1, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_fb_result r;

        CHECK_OK(rlhi_llm_feedback_classify(&a, "Explain DNS.", "DNS is a "
                                            "naming system...", "shorter "
                                            "please", false, &r));
        CHECK_INT_EQ(r.label, RLHI_FB_REATTEMPT_FEEDBACK);
        CHECK(r.dissatisfied && r.actionable);
        CHECK_INT_EQ(sc.calls, 1);
        CHECK(strstr(sc.last_user, "shorter please") != NULL);
    }

    TEST("feedback verdict: one retry after a malformed one") {
        const char *rep[] = {"{\"label\": \"happy\", \"dissatisfied\": "
                             "false, \"actionable\": false}",
                             "{\"label\": \"positive\", \"dissatisfied\": "
                             "false, \"actionable\": false}"};
        struct script sc = {rep, 2, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_fb_result r;

        CHECK_OK(rlhi_llm_feedback_classify(&a, NULL, "Here you go.",
                                            "thanks!", false, &r));
        CHECK_INT_EQ(r.label, RLHI_FB_POSITIVE);
        CHECK_INT_EQ(sc.calls, 2);
        CHECK_INT_EQ(sc.attempts[1], 1);
        /* The retry shows the bad reply and asks for the format again. */
        CHECK_INT_EQ(sc.last_n, 4);
        CHECK(strstr(sc.last_user, "not a valid verdict") != NULL);
    }

    TEST("feedback verdict: two malformed ones fail with the reply") {
        const char *rep[] = {"I think the user is happy.",
                             "{\"label\": \"positive\", \"dissatisfied\": "
                             "\"no\", \"actionable\": false}"};
        struct script sc = {rep, 2, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_fb_result r;
        int rc = rlhi_llm_feedback_classify(&a, NULL, "x", "y", false, &r);

        CHECK_INT_EQ(rc, RLHI_EFORMAT);
        CHECK_MSG(strstr(rlhi_errmsg(), "dissatisfied") != NULL, "%s",
                  rlhi_errmsg());
        CHECK_INT_EQ(sc.calls, 2);
    }

    TEST("feedback: --redact reaches the prompt") {
        const char *rep[] = {"{\"label\": \"new_request\", \"dissatisfied\""
                             ": false, \"actionable\": false}"};
        struct script sc = {rep, 1, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_fb_result r;

        CHECK_OK(rlhi_llm_feedback_classify(&a, NULL, "ok", "mail me at "
                                            "jane.doe@example.com", true,
                                            &r));
        CHECK(strstr(sc.last_user, "jane.doe@example.com") == NULL);
        CHECK(strstr(sc.last_user, "[EMAIL]") != NULL);
    }

    TEST("LLM feedback stage: batches of 32, retries, warnings, resume") {
        struct batch_script bs = {0};
        struct rlhi_ask ask = {one_ask, &bs, 0, batch_ask};
        struct rlhi_feedback_stats fs;
        struct rlhi_buf log = RLHI_BUF_INIT;
        struct rlhi_store *r;

        /* 70 conversations, one follow-up each: 3 batches (32, 32, 6);
         * turns 5, 15, ... say BAD; turn 40 says WORSE */
        for (int i = 0; i < 70; i++)
            rlhi_buf_addf(&log, "{\"conversation_hash\": \"b%02d\", "
                          "\"conversation\": [{\"role\": \"user\", "
                          "\"content\": \"question %d\"}, {\"role\": "
                          "\"assistant\", \"content\": \"answer %d\"}, "
                          "{\"role\": \"user\", \"content\": \"reply %d "
                          "%s\"}]}\n", i, i, i, i,
                          i == 40 ? "WORSE" : i % 10 == 5 ? "BAD" : "ok");
        r = ingested("llmbatch.db", &log);
        rlhi_buf_release(&log);
        CHECK(r != NULL);
        if (!r)
            break;
        CHECK_OK(rlhi_llm_feedback_run(r, &ask, "llm", false, &fs));
        CHECK_INT_EQ(bs.batches, 3 + 3); /* each batch had retries */
        CHECK_INT_EQ((long long)bs.largest, 32);
        CHECK_INT_EQ(bs.asked, 70);
        CHECK_INT_EQ(bs.retried, 8); /* 7 BAD, 1 WORSE */
        CHECK_INT_EQ(fs.turns, 69);  /* WORSE is left unlabelled */
        CHECK_INT_EQ(fs.by_label[RLHI_FB_POSITIVE], 69);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM feedback WHERE "
                               "backend = 'llm' AND evidence = 'llm'"), 69);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM feedback f JOIN "
                               "conversations c ON c.id = f.conversation_id "
                               "WHERE c.hash = 'b40'"), 0);
        /* a rerun asks only for the one left out */
        memset(&bs, 0, sizeof bs);
        CHECK_OK(rlhi_llm_feedback_run(r, &ask, "llm", false, &fs));
        CHECK_INT_EQ(bs.asked, 1);
        CHECK_INT_EQ(fs.turns, 0);
        rlhi_store_close(r);
    }

    TEST("persona: chunks and a merge prompt") {
        const char *v = "{\"expertise\": \"expert\", \"informativeness\": "
                        "\"concise\", \"tone\": \"no signal\", "
                        "\"structure\": \"structured\", \"text\": "
                        "\"Wants short expert lists.\"}";
        const char *rep[] = {v, v, v, v, v, v};
        struct script sc = {rep, 6, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_persona_msg msgs[6];
        struct rlhi_persona p;
        char texts[6][120];

        for (int i = 0; i < 6; i++) {
            snprintf(texts[i], sizeof texts[i], "message %d: explain the "
                     "TCP handshake in detail, with the state machine", i);
            msgs[i].id = NULL;
            msgs[i].text = texts[i];
            msgs[i].label = i == 2 ? "reattempt_feedback" : NULL;
        }
        /* 250 characters hold two of these messages: 3 chunks + merge. */
        CHECK_OK(rlhi_llm_persona_summarise(&a, msgs, 6, 250, false, &p));
        CHECK_INT_EQ(sc.calls, 4);
        CHECK(strstr(sc.last_user, "Combine them") != NULL);
        CHECK(strstr(sc.last_user, "3. {") != NULL);
        CHECK_STR_EQ(p.value[RLHI_DIM_EXPERTISE], "expert");
        CHECK_STR_EQ(p.value[RLHI_DIM_INFORMATIVENESS], "concise");
        CHECK_STR_EQ(p.value[RLHI_DIM_TONE], "no signal");
        CHECK_STR_EQ(p.text, "Wants short expert lists.");
        CHECK_STR_EQ(p.evidence[0], "[]");
        rlhi_persona_release(&p);

        /* One chunk: no merge. */
        sc.calls = 0;
        CHECK_OK(rlhi_llm_persona_summarise(&a, msgs, 6, 0, false, &p));
        CHECK_INT_EQ(sc.calls, 1);
        CHECK(strstr(sc.last_user, "[reattempt_feedback]") != NULL);
        rlhi_persona_release(&p);
    }

    TEST("persona: an invalid dimension value is refused") {
        const char *rep[] = {"{\"expertise\": \"guru\", \"informativeness\""
                             ": \"concise\", \"tone\": \"formal\", "
                             "\"structure\": \"prose\", \"text\": \"x\"}",
                             "not json"};
        struct script sc = {rep, 2, 0, 0, "", {0}};
        struct rlhi_ask a = {scripted_ask, &sc, 0, NULL};
        struct rlhi_persona_msg m = {NULL, "hello", NULL};
        struct rlhi_persona p;

        CHECK_INT_EQ(rlhi_llm_persona_summarise(&a, &m, 1, 0, false, &p),
                     RLHI_EFORMAT);
        CHECK_INT_EQ(sc.calls, 2);
    }

    TEST("find_json") {
        char *j = rlhi_pairs_find_json("x {\"a\": \"}{\", \"b\": {\"c\": "
                                       "1}} y");

        CHECK_STR_EQ(j, "{\"a\": \"}{\", \"b\": {\"c\": 1}}");
        rlhi_free(j);
        CHECK(rlhi_pairs_find_json("no object {") == NULL);
    }

    TEST("whitespace normalisation") {
        struct rlhi_buf b = RLHI_BUF_INIT;

        CHECK_OK(rlhi_pairs_normalise_ws("  a \n\t b  c ", &b));
        CHECK_STR_EQ(b.buf, "a b c");
        CHECK_OK(rlhi_pairs_normalise_ws(" \n ", &b));
        CHECK_STR_EQ(b.buf, "");
        rlhi_buf_release(&b);
    }
}

/* ---- the real model ----------------------------------------------------- */

/* Five conversations of two users: three with a feedback turn (one with
 * an e-mail address for redaction), two without. */
static const char logs[] =
    "{\"user\": \"alice\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"Tell me a story about a cat.\"},"
    "{\"role\": \"assistant\", \"content\": \"Once upon a time there was a "
    "cat who lived in a big house with a garden and many trees and it "
    "liked to climb them every day.\"},"
    "{\"role\": \"user\", \"content\": \"make it shorter\"}]}\n"
    "{\"user\": \"alice\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"Write to bob@example.com about "
    "the dog.\"},"
    "{\"role\": \"assistant\", \"content\": \"Hey Bob! The dog is fine "
    "lol.\"},"
    "{\"role\": \"user\", \"content\": \"more formal please\"}]}\n"
    "{\"user\": \"bob\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"What is a ball?\"},"
    "{\"role\": \"assistant\", \"content\": \"A ball is round.\"},"
    "{\"role\": \"user\", \"content\": \"can you put that in a list?\"}]}\n"
    "{\"user\": \"bob\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"Tell me about the sun.\"},"
    "{\"role\": \"assistant\", \"content\": \"The sun is a star.\"},"
    "{\"role\": \"user\", \"content\": \"thanks!\"}]}\n"
    "{\"user\": \"bob\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"Once upon a time\"},"
    "{\"role\": \"assistant\", \"content\": \"there was a girl.\"}]}\n";

static struct rlhi_store *world(const char *name, bool with_feedback)
{
    struct rlhi_store *s = new_store(name);
    struct rlhi_ingest_opts io = {0};
    struct rlhi_ingest_stats is;
    struct rlhi_feedback_opts fo = {0};
    struct rlhi_feedback_stats fs;
    struct rlhi_persona_opts po = {0};
    struct rlhi_persona_stats ps;
    char path[256];
    const char *p = path;

    snprintf(path, sizeof path, "%s/logs.jsonl", tmpdir);
    if (!s || rlhi_file_write_atomic(path, logs, strlen(logs)) ||
        rlhi_ingest(s, &p, 1, &io, &is) ||
        (with_feedback && (rlhi_feedback_run(s, &fo, &fs) ||
                           rlhi_persona_run(s, &po, &ps)))) {
        fprintf(stderr, "cannot build the world: %s\n", rlhi_errmsg());
        rlhi_store_close(s);
        return NULL;
    }
    return s;
}

static int64_t count_sql(struct rlhi_store *s, const char *sql)
{
    sqlite3_stmt *st;
    int64_t n = -1;

    if (rlhi_store_prepare(s, &st, sql))
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void test_model(void)
{
    const char *mp = check_data("models/llama2c-stories260K/stories260K.bin");
    char model[4096], tok[4096], local[4200];
    struct rlhi_llm_options lo;
    struct rlhi_llm *l = NULL;
    struct rlhi_pairs_opts o = {0};
    struct rlhi_pairs_stats st;
    struct rlhi_store *a = NULL, *b = NULL;
    int64_t nfb = 0;

    if (!mp) {
        SKIP("../shared/data/models/llama2c-stories260K is absent");
        return;
    }
    snprintf(model, sizeof model, "%s", mp);
    snprintf(tok, sizeof tok, "%s",
             check_data("models/llama2c-stories260K/tok512.bin"));
    snprintf(local, sizeof local, "local:%s", model);
    rlhi_llm_options_default(&lo);
    lo.endpoint = local;
    lo.tokenizer = tok;
    CHECK_OK(rlhi_llm_open(&l, &lo));
    if (!l)
        return;
    o.max_tokens = 12;
    o.max_prompt_chars = 300;

    TEST("rewrite pairs: one per feedback turn, resumable") {
        char ha[65], hb[65];

        a = world("a.db", true);
        b = world("b.db", true);
        if (!a || !b)
            break;
        nfb = count_sql(a, "SELECT count(*) FROM feedback WHERE label = "
                        "'reattempt_feedback' AND backend = 'builtin'");
        CHECK_INT_EQ(nfb, 3);

        /* a: killed after one pair, then rerun; b: one run. */
        o.stop_after_pairs = 1;
        CHECK_INT_EQ(rlhi_pairs_rewrite(a, l, &o, &st), RLHI_EIO);
        CHECK_INT_EQ(st.made, 1);
        CHECK_INT_EQ(rlhi_store_count(a, "pairs"), 1);
        o.stop_after_pairs = 0;
        CHECK_OK(rlhi_pairs_rewrite(a, l, &o, &st));
        CHECK_INT_EQ(st.made, nfb - 1);
        CHECK_INT_EQ(st.done, 1);
        CHECK_OK(rlhi_pairs_rewrite(b, l, &o, &st));
        CHECK_INT_EQ(st.made, nfb);
        CHECK_INT_EQ(rlhi_store_count(a, "pairs"), nfb);
        CHECK_OK(rlhi_pairs_content_hash(a, ha));
        CHECK_OK(rlhi_pairs_content_hash(b, hb));
        CHECK_STR_EQ(ha, hb);

        /* A rerun sends nothing and changes nothing. */
        CHECK_OK(rlhi_pairs_rewrite(a, l, &o, &st));
        CHECK_INT_EQ(st.made, 0);
        CHECK_INT_EQ(st.done, nfb);
        CHECK_OK(rlhi_pairs_content_hash(a, hb));
        CHECK_STR_EQ(ha, hb);

        /* What was stored: the request as the prompt's last message, the
         * original answer as rejected, the persona as system message. */
        CHECK_INT_EQ(count_sql(a, "SELECT count(*) FROM pairs p JOIN "
                               "messages m ON m.conversation_id = "
                               "p.conversation_id AND m.idx = 1 WHERE "
                               "p.rejected = m.content AND p.turn_index = 0"
                               " AND p.source = 'rewrite' AND p.chosen != "
                               "'' AND p.kept = 1"), nfb);
        CHECK_INT_EQ(count_sql(a, "SELECT count(*) FROM pairs WHERE prompt "
                               "LIKE '[{\"role\":\"system\",\"content\":%' "
                               "AND prompt LIKE '%\"role\":\"user\"%' AND "
                               "persona IS NOT NULL"), nfb);
        /* Without --redact the address is kept. */
        CHECK_INT_EQ(count_sql(a, "SELECT count(*) FROM pairs WHERE prompt "
                               "LIKE '%bob@example.com%'"), 1);
    }

    TEST("regenerate pairs sit beside rewrites") {
        if (!a)
            break;
        o.regenerate = true;
        CHECK_OK(rlhi_pairs_rewrite(a, l, &o, &st));
        CHECK_INT_EQ(st.made, nfb);
        o.regenerate = false;
        CHECK_INT_EQ(count_sql(a, "SELECT count(*) FROM pairs WHERE source "
                               "= 'regenerate'"), nfb);
        CHECK_INT_EQ(rlhi_store_count(a, "pairs"), 2 * nfb);
    }

    TEST("rank pairs: N candidates, best versus worst with margins") {
        struct rlhi_judge j;
        uint64_t n = 0;
        char *text = NULL;
        size_t len = 0;
        FILE *out;

        if (!a)
            break;
        rlhi_judge_style(&j);
        o.num_candidates = 4;
        o.max_tokens = 16;
        CHECK_OK(rlhi_pairs_rank(a, l, &j, &o, &st));
        /* Requests without a dissatisfied follow-up: "Tell me about the
         * sun." and "Once upon a time" (the others drew feedback). */
        CHECK_INT_EQ(st.turns, 2);
        CHECK_INT_EQ(st.made + st.skipped, 2);
        CHECK_INT_EQ(count_sql(a, "SELECT count(*) FROM pairs WHERE source "
                               "= 'rank' AND chosen_score >= rejected_score"
                               " AND abs(margin - (chosen_score - "
                               "rejected_score)) < 1e-9"), (int64_t)st.made);
        CHECK_OK(rlhi_pairs_rank(a, l, &j, &o, &st));
        CHECK_INT_EQ(st.made, 0);

        out = open_memstream(&text, &len);
        CHECK_OK(rlhi_pairs_export(a, "rank", false, out, &n));
        fclose(out);
        CHECK_INT_EQ(n, count_sql(a, "SELECT count(*) FROM pairs WHERE "
                                  "source = 'rank'"));
        CHECK(n == 0 || strstr(text, "\"margin\":") != NULL);
        free(text);
    }

    TEST("rank pairs scored by a reward model") {
        struct rlhi_model *m = NULL;
        struct rlhi_tokenizer *tk = NULL;
        struct rlhi_reward *rm = NULL;
        struct rlhi_judge j;
        struct rlhi_store *r = world("rm.db", true);
        char dir[300];
        double s1, s2;
        struct rlhi_chat_msg q = {"user", "Tell me about the sun."};

        snprintf(dir, sizeof dir, "%s/rm", tmpdir);
        CHECK_OK(rlhi_generate_load(model, tok, &m, &tk));
        rlhi_tokenizer_free(tk);
        if (!m || !r)
            break;
        /* A fresh head: the scores are arbitrary but must be stable. */
        CHECK_OK(rlhi_reward_new(&rm, m, 7));
        CHECK_OK(rlhi_reward_save(rm, dir, NULL));
        rlhi_reward_free(rm);
        CHECK_OK(rlhi_judge_reward(&j, dir, tok, NULL));
        if (!j.ctx) {
            rlhi_store_close(r);
            break;
        }
        CHECK_OK(j.score(&j, "Prefers concise answers.", &q, 1, "It is a "
                         "star.", &s1));
        CHECK_OK(j.score(&j, "Prefers concise answers.", &q, 1, "It is a "
                         "star.", &s2));
        CHECK(s1 == s2);
        /* all candidates at once (one forward pass over padded rows)
         * score as one by one */
        {
            const char *ans[3] = {"It is a star.", "The sun is a big hot "
                                  "ball of gas that gives us light and "
                                  "warmth.", "Sun."};
            double sm[3], one;
            int rcs[3];
            char *errs[3];

            CHECK(j.score_many != NULL);
            CHECK_OK(j.score_many(&j, "Prefers concise answers.", &q, 1, ans,
                                  3, sm, rcs, errs));
            for (int i = 0; i < 3; i++) {
                CHECK_INT_EQ(rcs[i], 0);
                CHECK_OK(j.score(&j, "Prefers concise answers.", &q, 1,
                                 ans[i], &one));
                CHECK_NEAR(sm[i], one, 1e-5, 1e-4);
                rlhi_free(errs[i]);
            }
        }
        CHECK_OK(rlhi_pairs_rank(r, l, &j, &o, &st));
        CHECK_INT_EQ(st.made, 2);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM pairs WHERE source "
                               "= 'rank' AND chosen_score > rejected_score"),
                     2);
        rlhi_judge_release(&j);
        rlhi_store_close(r);
    }

    TEST("redaction reaches stored pairs") {
        struct rlhi_store *r = world("r.db", true);

        if (!r)
            break;
        o.redact = true;
        CHECK_OK(rlhi_pairs_rewrite(r, l, &o, &st));
        o.redact = false;
        CHECK(st.redactions >= 1);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM pairs WHERE prompt "
                               "LIKE '%bob@example.com%'"), 0);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM pairs WHERE prompt "
                               "LIKE '%[EMAIL]%'"), 1);
        rlhi_store_close(r);
    }

    TEST("in-context rewrites: the model answers the feedback turn") {
        struct rlhi_store *r = world("ic.db", true);

        if (!r)
            break;
        o.in_context = true;
        CHECK_OK(rlhi_pairs_rewrite(r, l, &o, &st));
        o.in_context = false;
        CHECK_INT_EQ(st.made, nfb);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM pairs WHERE source "
                               "= 'rewrite' AND chosen != ''"), nfb);
        rlhi_store_close(r);
    }

    TEST("LLM-backed feedback and personas in the store feed the pairs") {
        const char *fbv = "{\"label\": \"reattempt_feedback\", "
                          "\"dissatisfied\": true, \"actionable\": true}";
        const char *pv = "{\"expertise\": \"novice\", "
                         "\"informativeness\": \"concise\", \"tone\": "
                         "\"casual\", \"structure\": \"prose\", "
                         "\"text\": \"Keep it short and simple.\"}";
        const char *rep[16];
        struct script sc = {rep, 16, 0, 0, "", {0}};
        struct rlhi_ask ask = {scripted_ask, &sc, 0, NULL};
        struct rlhi_feedback_stats fs;
        struct rlhi_persona_stats ps;
        struct rlhi_store *r = world("llm.db", false);

        if (!r)
            break;
        for (int i = 0; i < 16; i++)
            rep[i] = fbv;
        CHECK_OK(rlhi_llm_feedback_run(r, &ask, "llm", false, &fs));
        /* Four user turns follow an answer in the world. */
        CHECK_INT_EQ(fs.turns, 4);
        CHECK_INT_EQ(sc.calls, 4);
        CHECK_OK(rlhi_llm_feedback_run(r, &ask, "llm", false, &fs));
        CHECK_INT_EQ(fs.turns, 0);
        CHECK_INT_EQ(sc.calls, 4);

        for (int i = 0; i < 16; i++)
            rep[i] = pv;
        sc.calls = 0;
        CHECK_OK(rlhi_llm_persona_run(r, &ask, "llm", false, 0, &ps));
        CHECK_INT_EQ(ps.users, 2);
        CHECK_INT_EQ(ps.made, 2);
        CHECK_INT_EQ(sc.calls, 2);
        CHECK_OK(rlhi_llm_persona_run(r, &ask, "llm", false, 0, &ps));
        CHECK_INT_EQ(ps.unchanged, 2);
        CHECK_INT_EQ(sc.calls, 2);

        o.feedback_backend = "llm";
        o.persona_backend = "llm";
        CHECK_OK(rlhi_pairs_rewrite(r, l, &o, &st));
        o.feedback_backend = o.persona_backend = NULL;
        /* "thanks!" was labelled feedback too; it follows an answer to a
         * request, so it makes a pair like the other three. */
        CHECK_INT_EQ(st.made, 4);
        CHECK_INT_EQ(count_sql(r, "SELECT count(*) FROM pairs WHERE persona "
                               "= 'Keep it short and simple.'"), 4);
        rlhi_store_close(r);
    }

    TEST("no feedback rows: a clear message") {
        struct rlhi_store *e = world("e.db", false);
        int rc;

        if (!e)
            break;
        rc = rlhi_pairs_rewrite(e, l, &o, &st);
        CHECK_INT_EQ(rc, RLHI_ENOTFOUND);
        CHECK_MSG(strstr(rlhi_errmsg(), "no reattempt_feedback turns") &&
                      strstr(rlhi_errmsg(), "rlhi feedback"),
                  "%s", rlhi_errmsg());
        rlhi_store_close(e);
    }

    TEST("a refused connection names the URL") {
        struct rlhi_llm_options ho;
        struct rlhi_llm *h = NULL;
        int rc;

        if (!b)
            break;
        rlhi_llm_options_default(&ho);
        ho.endpoint = "http://127.0.0.1:9";
        ho.max_retries = 0;
        ho.timeout_s = 5;
        CHECK_OK(rlhi_llm_open(&h, &ho));
        if (!h)
            break;
        o.regenerate = true;
        rc = rlhi_pairs_rewrite(b, h, &o, &st);
        o.regenerate = false;
        CHECK(rc < 0);
        CHECK_INT_EQ(st.failed, nfb);
        CHECK_INT_EQ(st.made, 0);
        CHECK_MSG(strstr(rlhi_errmsg(), "127.0.0.1:9") != NULL, "%s",
                  rlhi_errmsg());
        rlhi_llm_close(h);
    }

    rlhi_store_close(a);
    rlhi_store_close(b);
    rlhi_llm_close(l);
}

static void test_schema(void)
{
    TEST("the pairs table accepts regenerate, once migrated") {
        struct rlhi_store *s = new_store("schema.db");
        int64_t uid;
        struct rlhi__pair p = {0};

        if (!s)
            break;
        CHECK_OK(rlhi_pairs_schema(s));
        CHECK_OK(rlhi_pairs_schema(s));
        p.conv = add_conv(s, "u", "c", &uid);
        p.user_id = uid;
        p.source = "regenerate";
        p.prompt = "[]";
        p.chosen = "a";
        p.rejected = "b";
        rlhi_store_begin(s);
        CHECK_INT_EQ(rlhi__pair_insert(s, &p), 1);
        CHECK_INT_EQ(rlhi__pair_insert(s, &p), 0);
        p.source = "bogus";
        CHECK(rlhi__pair_insert(s, &p) < 0);
        rlhi_store_commit(s);
        rlhi_store_close(s);
    }
}

static void test_filter_run(void)
{
    TEST("filter: a judge that never answers stops the run; --force") {
        struct rlhi_store *s = new_store("stop.db");
        struct rlhi_filter_opts o = {0};
        struct rlhi_filter_stats st;
        struct scripted sj = {0};
        struct rlhi_judge j = {0};
        char name[16];
        int rc;

        if (!s)
            break;
        CHECK_OK(rlhi_pairs_schema(s));
        for (int i = 0; i < 10; i++) {
            struct kv c = {0};

            snprintf(name, sizeof name, "c%d", i);
            c.n = 3;
            c.key[0] = "conversation", c.val[0] = name;
            c.key[1] = "chosen", c.val[1] = "good";
            c.key[2] = "rejected", c.val[2] = "bad";
            CHECK_INT_EQ(add_case_pair(s, &c), 1);
        }
        j.name = "scripted";
        j.compare = scripted_compare;
        j.ctx = &sj;
        sj.error = true;
        rc = rlhi_pairs_filter(s, &j, &o, &st);
        CHECK_INT_EQ(rc, RLHI_EINVAL);
        CHECK_MSG(strstr(rlhi_errmsg(), "8 pairs in a row") != NULL, "%s",
                  rlhi_errmsg());
        CHECK_INT_EQ(st.dropped[RLHI_DROP_JUDGE_ERROR], 8);

        /* A working judge later judges all ten. */
        sj.error = false;
        sj.ab = 1;
        sj.ba = -1;
        sj.calls = 0;
        CHECK_OK(rlhi_pairs_filter(s, &j, &o, &st));
        CHECK_INT_EQ(st.checked, 10);
        /* The scripted judge answers ab only on its first call. */
        CHECK_INT_EQ(st.kept, 1);
        CHECK_INT_EQ(rlhi_store_count(s, "pairs"), 10);

        /* --force forgets the decisions and judges again. */
        sj.calls = 0;
        o.force = true;
        CHECK_OK(rlhi_pairs_filter(s, NULL, &o, &st));
        CHECK_INT_EQ(st.checked, 10);
        CHECK_INT_EQ(st.kept, 10);
        rlhi_store_close(s);
    }
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_schema();
    TEST("filter cases") test_filter_cases();
    TEST("export cases") test_export_cases();
    test_filter_run();
    test_llm_detector();
    test_filter_batches();
    test_persona_batches();
    test_model();
    {
        char cmd[300];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove '%s'\n", tmpdir);
    }
    return check_summary();
}
