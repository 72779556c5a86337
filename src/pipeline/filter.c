/* Quality filters for preference pairs, and the judges they use: the
 * builtin "style" judge (no model) and an LLM judge over struct rlhi_ask.
 *
 * The paper's filtering (drop a pair unless a persona-aware judge prefers
 * chosen, drop identical texts, drop tiny margins) took its gain from +2.5
 * to +23.4 points. Judges favour whichever answer they see first, so the
 * judge is asked twice with the answers swapped, and chosen must win both
 * times.
 */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "pairs_internal.h"

static const char *const drop_names[RLHI_DROP_N] = {
    "identical", "low_margin", "judge_prefers_rejected",
    "judge_not_consistent", "judge_error",
};

const char *rlhi_drop_name(int reason)
{
    return reason >= 0 && reason < RLHI_DROP_N ? drop_names[reason] : "?";
}

/* ---- the style judge --------------------------------------------------- */

/* Case-insensitive substring test. */
static bool has(const char *text, const char *word)
{
    size_t n = strlen(word);

    for (; *text; text++)
        if (!strncasecmp(text, word, n))
            return true;
    return false;
}

/* The persona's wish on each dimension: +1 for the first side (expert,
 * detailed, formal, structured), -1 for the second, 0 for none. Read from
 * the words the builtin persona text and most hand-written ones use;
 * "informal" is tested before "formal" because it contains it. */
static void wishes(const char *persona, int w[4])
{
    memset(w, 0, 4 * sizeof *w);
    if (!persona)
        return;
    if (has(persona, "novice") || has(persona, "beginner") ||
        has(persona, "plain language") || has(persona, "simple terms"))
        w[0] = -1;
    else if (has(persona, "expert") || has(persona, "technical"))
        w[0] = 1;
    if (has(persona, "concise") || has(persona, "brief") ||
        has(persona, "short"))
        w[1] = -1;
    else if (has(persona, "detailed") || has(persona, "thorough"))
        w[1] = 1;
    if (has(persona, "casual") || has(persona, "informal"))
        w[2] = -1;
    else if (has(persona, "formal"))
        w[2] = 1;
    if (has(persona, "prose") || has(persona, "paragraph"))
        w[3] = -1;
    else if (has(persona, "structured") || has(persona, "bullet") ||
             has(persona, "list"))
        w[3] = 1;
}

/* What an answer shows on each dimension, each a number around 0..1:
 * share of long words (technical vocabulary), log length in words,
 * formality (1 minus casual markers), share of list lines. */
static void features(const char *t, double f[4])
{
    static const char *const casual[] = {"!", "lol", "hey", "gonna",
                                         "wanna", "cool", "awesome", "yeah",
                                         " ya ", ":)", NULL};
    int words = 0, long_words = 0, lines = 0, list_lines = 0, cas = 0;
    bool line_start = true;
    const char *p = t;

    while (*p) {
        while (*p && isspace((unsigned char)*p)) {
            if (*p == '\n')
                line_start = true;
            p++;
        }
        if (!*p)
            break;
        if (line_start) {
            lines++;
            if (*p == '-' || *p == '*' || !strncmp(p, "\xe2\x80\xa2", 3) ||
                (isdigit((unsigned char)*p) && (p[1] == '.' || p[1] == ')')))
                list_lines++;
            line_start = false;
        }
        {
            int len = 0;

            while (*p && !isspace((unsigned char)*p)) {
                len += isalpha((unsigned char)*p) != 0;
                p++;
            }
            words++;
            long_words += len >= 10;
        }
    }
    for (int i = 0; casual[i]; i++)
        for (const char *q = t; (q = strcasestr(q, casual[i])); q++)
            cas++;
    f[0] = words ? 4.0 * long_words / words : 0;
    f[1] = log1p(words) / 3;
    f[2] = -(double)cas / (1 + words / 20.0);
    f[3] = lines >= 2 ? (double)list_lines / lines : 0;
}

static int style_score(struct rlhi_judge *j, const char *persona,
                       const struct rlhi_chat_msg *prompt, size_t n,
                       const char *answer, double *score)
{
    int w[4];
    double f[4], sc = 0;

    (void)j;
    (void)prompt;
    (void)n;
    wishes(persona, w);
    features(answer, f);
    for (int d = 0; d < 4; d++)
        sc += w[d] * f[d];
    /* An empty answer is never better than a real one. */
    *score = *answer ? sc : -100;
    return 0;
}

static int style_compare(struct rlhi_judge *j, const char *persona,
                         const struct rlhi_chat_msg *prompt, size_t n,
                         const char *a, const char *b, int *pref)
{
    double sa, sb;

    style_score(j, persona, prompt, n, a, &sa);
    style_score(j, persona, prompt, n, b, &sb);
    /* Differences under 0.01 are ties: a word or two of length. */
    *pref = sa > sb + 0.01 ? 1 : sb > sa + 0.01 ? -1 : 0;
    return 0;
}

void rlhi_judge_style(struct rlhi_judge *j)
{
    memset(j, 0, sizeof *j);
    j->name = "style";
    j->compare = style_compare;
    j->score = style_score;
}

/* ---- the LLM judge ----------------------------------------------------- */

/* Each answer shown to the judge is cut to this many characters, and the
 * conversation to twice that: together about 1.5k tokens. */
#define JUDGE_ANSWER_CHARS 2000

static int judge_prompt(const char *persona, const struct rlhi_chat_msg *pr,
                        size_t n, size_t max_chars, const char *task,
                        struct rlhi_buf *sys, struct rlhi_buf *user)
{
    int e = rlhi_buf_addf(sys, "You judge answers of an AI assistant for "
                          "one particular user. What is known about the "
                          "user:\n%s\n\n%s", persona ? persona
                                                     : "(nothing)", task);

    e |= rlhi_buf_adds(user, "The conversation so far:\n");
    if (!e)
        e = rlhi__transcript(pr, n, 2 * max_chars, user);
    return e ? rlhi_err(RLHI_ENOMEM, "cannot build a judge prompt") : 0;
}

static int winner_check(void *obj, void *arg)
{
    json_t *w = json_object_get(obj, "winner");
    const char *v = json_is_string(w) ? json_string_value(w) : NULL;

    if (!v)
        return rlhi_err(RLHI_EFORMAT, "\"winner\" is missing or not a "
                        "string");
    if (!strcasecmp(v, "A"))
        *(int *)arg = 1;
    else if (!strcasecmp(v, "B"))
        *(int *)arg = -1;
    else if (!strcasecmp(v, "tie"))
        *(int *)arg = 0;
    else
        return rlhi_err(RLHI_EFORMAT, "\"winner\" must be \"A\", \"B\" or "
                        "\"tie\", not '%s'", v);
    return 0;
}

/* Asks the judge the system prompt `sys` and user prompt `user` and parses
 * its verdict with `check` into `arg`, unless `rc` (the status of building
 * the prompts) is already an error. Releases both buffers; returns rc or
 * the status of the question. */
static int judge_ask(struct rlhi_judge *j, int rc, struct rlhi_buf *sys,
                     struct rlhi_buf *user, int (*check)(void *, void *),
                     void *arg)
{
    struct rlhi_chat_msg m[2];
    void *v = NULL;

    if (!rc) {
        m[0].role = "system";
        m[0].content = sys->buf;
        m[1].role = "user";
        m[1].content = user->buf;
        rc = rlhi__ask_json(j->ctx, m, 2, check, arg, &v);
        json_decref(v);
    }
    rlhi_buf_release(sys);
    rlhi_buf_release(user);
    return rc;
}

/* The system and user prompts of one comparison. 0 or RLHI_ENOMEM. */
static int compare_prompt(struct rlhi_judge *j, const char *persona,
                          const struct rlhi_chat_msg *prompt, size_t n,
                          const char *a, const char *b, struct rlhi_buf *sys,
                          struct rlhi_buf *user)
{
    size_t cut = j->max_chars ? j->max_chars : JUDGE_ANSWER_CHARS;
    int rc;

    rc = judge_prompt(persona, prompt, n, cut, "Compare two answers to the last "
                      "message and say which one this user would prefer. "
                      "Reply with one JSON object only, no other text: "
                      "{\"winner\": \"A\"} or {\"winner\": \"B\"} or "
                      "{\"winner\": \"tie\"}.", sys, user);
    if (!rc && rlhi_buf_addf(user, "\nAnswer A:\n%.*s\n\nAnswer B:\n%.*s\n"
                             "\nWhich answer does this user prefer?",
                             (int)cut, a, (int)cut, b))
        rc = rlhi_err(RLHI_ENOMEM, "cannot build a judge prompt");
    return rc;
}

static int llm_compare(struct rlhi_judge *j, const char *persona,
                       const struct rlhi_chat_msg *prompt, size_t n,
                       const char *a, const char *b, int *pref)
{
    struct rlhi_buf sys = RLHI_BUF_INIT, user = RLHI_BUF_INIT;
    int rc = compare_prompt(j, persona, prompt, n, a, b, &sys, &user);

    return judge_ask(j, rc, &sys, &user, winner_check, pref);
}

/* Asks k judge questions as one batch (rlhi_ask.many): build(i) makes
 * question i's prompts, check reads its verdict into element i of `out`
 * (elements of `size` bytes). Per
 * question rcs[i] and errs[i] as rlhi_judge.compare_many's; a failure of
 * the whole batch (the network) is every question's failure. 0 or
 * RLHI_ENOMEM. */
static int judge_many(struct rlhi_judge *j, size_t k,
                      int (*build)(struct rlhi_judge *j, const void *ctx,
                                   size_t i, struct rlhi_buf *sys,
                                   struct rlhi_buf *user),
                      const void *ctx, int (*check)(void *, void *),
                      void *out, size_t size, int *rcs, char **errs)
{
    struct rlhi_buf *bufs = rlhi_calloc(2 * k + 1, sizeof *bufs);
    void **args = rlhi_calloc(k + 1, sizeof *args);
    struct rlhi_chat_msg *m = rlhi_calloc(2 * k + 1, sizeof *m);
    const struct rlhi_chat_msg **msgs = rlhi_calloc(k + 1, sizeof *msgs);
    size_t *counts = rlhi_calloc(k + 1, sizeof *counts);
    void **verdicts = rlhi_calloc(k + 1, sizeof *verdicts);
    int rc = 0;

    for (size_t i = 0; i < k; i++) {
        rcs[i] = 0;
        errs[i] = NULL;
    }
    if (!bufs || !args || !m || !msgs || !counts || !verdicts) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot ask the judge");
        goto out;
    }
    for (size_t i = 0; i < k && !rc; i++) {
        args[i] = (char *)out + i * size;
        rc = build(j, ctx, i, &bufs[2 * i], &bufs[2 * i + 1]);
        m[2 * i].role = "system";
        m[2 * i].content = bufs[2 * i].buf;
        m[2 * i + 1].role = "user";
        m[2 * i + 1].content = bufs[2 * i + 1].buf;
        msgs[i] = &m[2 * i];
        counts[i] = 2;
    }
    if (rc)
        goto out;
    rc = rlhi__ask_json_many(j->ctx, msgs, counts, k, check,
                             (void *const *)args, verdicts, rcs, errs);
    if (rc && rc != RLHI_ENOMEM) {
        for (size_t i = 0; i < k; i++) {
            rcs[i] = rc;
            errs[i] = rlhi_strdup(rlhi_errmsg());
        }
        rc = 0;
    }
    for (size_t i = 0; i < k; i++)
        json_decref(verdicts[i]);
out:
    for (size_t i = 0; bufs && i < 2 * k; i++)
        rlhi_buf_release(&bufs[i]);
    rlhi_free(bufs);
    rlhi_free(args);
    rlhi_free(m);
    rlhi_free(msgs);
    rlhi_free(counts);
    rlhi_free(verdicts);
    return rc;
}

static int build_compare(struct rlhi_judge *j, const void *ctx, size_t i,
                         struct rlhi_buf *sys, struct rlhi_buf *user)
{
    const struct rlhi_judge_cmp *c = (const struct rlhi_judge_cmp *)ctx + i;

    return compare_prompt(j, c->persona, c->prompt, c->n, c->a, c->b, sys,
                          user);
}

static int llm_compare_many(struct rlhi_judge *j,
                            const struct rlhi_judge_cmp *c, size_t n,
                            int *prefs, int *rcs, char **errs)
{
    return judge_many(j, n, build_compare, c, winner_check, prefs,
                      sizeof *prefs, rcs, errs);
}

static int score_check(void *obj, void *arg)
{
    json_t *s = json_object_get(obj, "score");

    if (!json_is_number(s))
        return rlhi_err(RLHI_EFORMAT, "\"score\" is missing or not a "
                        "number");
    *(double *)arg = json_number_value(s);
    if (!(*(double *)arg >= 1 && *(double *)arg <= 10))
        return rlhi_err(RLHI_EFORMAT, "\"score\" must be from 1 to 10, not "
                        "%g", *(double *)arg);
    return 0;
}

/* The system and user prompts that ask for one answer's score. */
static int score_prompt(struct rlhi_judge *j, const char *persona,
                        const struct rlhi_chat_msg *prompt, size_t n,
                        const char *answer, struct rlhi_buf *sys,
                        struct rlhi_buf *user)
{
    size_t cut = j->max_chars ? j->max_chars : JUDGE_ANSWER_CHARS;
    int rc;

    rc = judge_prompt(persona, prompt, n, cut, "Rate how well an answer to the "
                      "last message suits this user, from 1 (badly) to 10 "
                      "(perfectly): correctness, and the user's preferred "
                      "expertise level, detail, tone and structure. Reply "
                      "with one JSON object only, no other text: "
                      "{\"score\": <number>}.", sys, user);
    if (!rc && rlhi_buf_addf(user, "\nThe answer:\n%.*s\n\nRate it for "
                             "this user.", (int)cut, answer))
        rc = rlhi_err(RLHI_ENOMEM, "cannot build a judge prompt");
    return rc;
}

static int llm_score(struct rlhi_judge *j, const char *persona,
                     const struct rlhi_chat_msg *prompt, size_t n,
                     const char *answer, double *score)
{
    struct rlhi_buf sys = RLHI_BUF_INIT, user = RLHI_BUF_INIT;
    int rc = score_prompt(j, persona, prompt, n, answer, &sys, &user);

    return judge_ask(j, rc, &sys, &user, score_check, score);
}

/* The answers of llm_score_many, for build_score. */
struct score_set {
    const char *persona;
    const struct rlhi_chat_msg *prompt;
    size_t n;
    const char *const *answers;
};

static int build_score(struct rlhi_judge *j, const void *ctx, size_t i,
                       struct rlhi_buf *sys, struct rlhi_buf *user)
{
    const struct score_set *q = ctx;

    return score_prompt(j, q->persona, q->prompt, q->n, q->answers[i], sys,
                        user);
}

/* Every answer's score asked at once (rlhi_ask.many). */
static int llm_score_many(struct rlhi_judge *j, const char *persona,
                          const struct rlhi_chat_msg *prompt, size_t n,
                          const char *const *answers, size_t k,
                          double *scores, int *rcs, char **errs)
{
    struct score_set q = {persona, prompt, n, answers};

    return judge_many(j, k, build_score, &q, score_check, scores,
                      sizeof *scores, rcs, errs);
}

void rlhi_judge_llm(struct rlhi_judge *j, struct rlhi_ask *ask)
{
    memset(j, 0, sizeof *j);
    j->name = "llm";
    j->compare = llm_compare;
    j->compare_many = llm_compare_many;
    j->score_many = llm_score_many;
    j->score = llm_score;
    j->ctx = ask;
}

/* ---- the filter stage -------------------------------------------------- */

/* Parses a stored prompt (a JSON message list) into the persona (its
 * system message) and the other messages, which point into *root. */
static int parse_prompt(const char *text, json_t **root,
                        struct rlhi_chat_msg **msgs, size_t *n,
                        const char **persona)
{
    json_error_t e;
    size_t i, k = 0;

    *msgs = NULL;
    *n = 0;
    *persona = NULL;
    if (!(*root = json_loads(text, 0, &e)) || !json_is_array(*root))
        return rlhi_err(RLHI_EFORMAT, "a stored prompt is not a JSON "
                        "message list: %s", *root ? "not a list" : e.text);
    if (!(*msgs = rlhi_calloc(json_array_size(*root) + 1, sizeof **msgs)))
        return rlhi_err(RLHI_ENOMEM, "cannot read a prompt");
    for (i = 0; i < json_array_size(*root); i++) {
        json_t *m = json_array_get(*root, i);
        const char *r = json_string_value(json_object_get(m, "role"));
        const char *c = json_string_value(json_object_get(m, "content"));

        if (!r || !c)
            return rlhi_err(RLHI_EFORMAT, "a stored prompt's message %zu "
                            "has no role or content", i);
        if (!strcmp(r, "system") && i == 0) {
            *persona = c;
            continue;
        }
        (*msgs)[k].role = r;
        (*msgs)[k].content = c;
        k++;
    }
    *n = k;
    return 0;
}

/* Pairs read and judged together: 32 comparisons at once for a judge
 * that can run them concurrently. */
#define FILTER_CHUNK 16

/* A pair's decision: the drop reason, or KEEP. */
#define KEEP RLHI_DROP_N
/* ... or not yet known: the judge must be asked. */
#define ASK_JUDGE (RLHI_DROP_N + 1)

/* One pair being decided. The judge sees chosen and rejected in both
 * orders: ab with chosen first, ba with rejected first (2: not asked). */
struct fpair {
    int64_t id;
    int reason;
    int ab, ba;
    json_t *root;              /* the parsed prompt; msgs point into it */
    struct rlhi_chat_msg *msgs;
    size_t n;
    const char *persona;
    char *persona_col, *c, *r; /* copies (redacted for the judge) */
    char *err;                 /* why the judge gave no verdict */
};

static void fpair_release(struct fpair *f)
{
    json_decref(f->root);
    rlhi_free(f->msgs);
    rlhi_free(f->persona_col);
    rlhi_free(f->c);
    rlhi_free(f->r);
    rlhi_free(f->err);
    memset(f, 0, sizeof *f);
}

/* Decides what needs no judge (identical texts, a low margin) and readies
 * the rest for it. 0 or a negative code. */
static int prepare(struct rlhi_judge *judge, const struct rlhi_filter_opts *o,
                   const char *prompt, const char *persona_col,
                   const char *chosen, const char *rejected, bool has_margin,
                   double margin, struct fpair *f, struct rlhi_buf *t1,
                   struct rlhi_buf *t2)
{
    int rc;

    f->ab = f->ba = 2;
    f->reason = KEEP;
    if ((rc = rlhi_pairs_normalise_ws(chosen, t1)) ||
        (rc = rlhi_pairs_normalise_ws(rejected, t2)))
        return rc;
    if (!strcmp(t1->buf, t2->buf)) {
        f->reason = RLHI_DROP_IDENTICAL;
        return 0;
    }
    if (has_margin && margin < o->min_margin) {
        f->reason = RLHI_DROP_MARGIN;
        return 0;
    }
    if (!judge)
        return 0;
    if ((rc = parse_prompt(prompt, &f->root, &f->msgs, &f->n, &f->persona)))
        return rc;
    if (!f->persona && persona_col) {
        if (!(f->persona_col = rlhi_strdup(persona_col)))
            return rlhi_err(RLHI_ENOMEM, "cannot hold a pair");
        f->persona = f->persona_col;
    }
    f->c = rlhi__dup_redacted(chosen, o->redact, NULL);
    f->r = rlhi__dup_redacted(rejected, o->redact, NULL);
    if (!f->c || !f->r)
        return rlhi_err(RLHI_ENOMEM, "cannot hold a pair");
    f->reason = ASK_JUDGE;
    return 0;
}

/* The decision from the two verdicts (or the lack of one). */
static void verdict(struct fpair *f, int rab, int rba)
{
    if (rab || rba) {
        /* A malformed verdict, or a request the backend refused (too
         * long, unreachable): this pair has no verdict. */
        rlhi_warn("judge gave no verdict: %s",
                  f->err ? f->err : "(no message)");
        f->reason = RLHI_DROP_JUDGE_ERROR;
    } else if (f->ab == 1 && f->ba == -1) {
        f->reason = KEEP;
    } else if (f->ab - f->ba < 0) {
        f->reason = RLHI_DROP_JUDGE_REJECTED;
    } else {
        f->reason = RLHI_DROP_JUDGE_UNSURE;
    }
}

/* Asks the judge about every pair of the chunk that needs it: all the
 * comparisons at once when the judge can (compare_many), else one by one.
 * 0, or RLHI_ENOMEM / RLHI_EDB, which stop the stage. */
static int judge_chunk(struct rlhi_judge *judge, struct fpair *fp, size_t n)
{
    struct rlhi_judge_cmp cmp[2 * FILTER_CHUNK];
    int prefs[2 * FILTER_CHUNK], rcs[2 * FILTER_CHUNK];
    char *errs[2 * FILTER_CHUNK];
    size_t who[FILTER_CHUNK], m = 0;
    int rc;

    for (size_t i = 0; i < n; i++)
        if (fp[i].reason == ASK_JUDGE)
            who[m++] = i;
    if (!m)
        return 0;
    if (!judge->compare_many) {
        for (size_t k = 0; k < m; k++) {
            struct fpair *f = &fp[who[k]];
            int rab, rba = 0;

            rab = judge->compare(judge, f->persona, f->msgs, f->n, f->c,
                                 f->r, &f->ab);
            if (!rab)
                rba = judge->compare(judge, f->persona, f->msgs, f->n, f->r,
                                     f->c, &f->ba);
            rc = rab ? rab : rba;
            if (rc == RLHI_ENOMEM || rc == RLHI_EDB)
                return rc;
            if (rc && !(f->err = rlhi_strdup(rlhi_errmsg())))
                return rlhi_err(RLHI_ENOMEM, "cannot keep a message");
            verdict(f, rab, rba);
        }
        return 0;
    }
    for (size_t k = 0; k < m; k++) {
        struct fpair *f = &fp[who[k]];

        cmp[2 * k] = (struct rlhi_judge_cmp){f->persona, f->msgs, f->n,
                                             f->c, f->r};
        cmp[2 * k + 1] = (struct rlhi_judge_cmp){f->persona, f->msgs, f->n,
                                                 f->r, f->c};
    }
    if ((rc = judge->compare_many(judge, cmp, 2 * m, prefs, rcs, errs)))
        return rc;
    for (size_t k = 0; k < m; k++) {
        struct fpair *f = &fp[who[k]];

        f->ab = prefs[2 * k];
        f->ba = prefs[2 * k + 1];
        f->err = rcs[2 * k] ? errs[2 * k] : errs[2 * k + 1];
        errs[rcs[2 * k] ? 2 * k : 2 * k + 1] = NULL;
        verdict(f, rcs[2 * k], rcs[2 * k + 1]);
    }
    for (size_t i = 0; i < 2 * m; i++)
        rlhi_free(errs[i]);
    return 0;
}

/* Pairs in a row without a verdict that end a run: the judge is down or
 * cannot produce the format, and every further pair would fail too. */
#define FILTER_MAX_ERRORS_IN_A_ROW 8

int rlhi_pairs_filter(struct rlhi_store *s, struct rlhi_judge *judge,
                      const struct rlhi_filter_opts *o,
                      struct rlhi_filter_stats *stats)
{
    sqlite3_stmt *list = NULL, *upd = NULL, *rec = NULL;
    struct rlhi_buf t1 = RLHI_BUF_INIT, t2 = RLHI_BUF_INIT;
    struct rlhi_progress prog;
    struct fpair fp[FILTER_CHUNK];
    int64_t run = 0, *ids = NULL;
    size_t nids = 0, cap = 0;
    int pending = 0, rc, errors_in_a_row = 0;
    bool txn = false;
    double t0 = rlhi_time_now();

    memset(stats, 0, sizeof *stats);
    memset(fp, 0, sizeof fp);
    if ((rc = rlhi_pairs_schema(s)))
        return rc;
    if (o->force) {
        if ((rc = rlhi_store_begin(s)))
            return rc;
        rc = rlhi_store_exec(s, "UPDATE pairs SET kept = 1, drop_reason = "
                             "NULL WHERE id IN (SELECT pair_id FROM "
                             "pair_checks); DELETE FROM pair_checks;");
        if (rc || (rc = rlhi_store_commit(s))) {
            rlhi_store_rollback(s);
            return rc;
        }
    }
    if ((rc = rlhi_store_run_start(s, "filter", o->args, &run)))
        return rc;

    /* The pairs to check, listed first so that updates do not disturb a
     * running query. */
    if ((rc = rlhi_store_prepare(s, &list, "SELECT p.id, "
                                 "(SELECT count(*) FROM pair_checks k WHERE "
                                 "k.pair_id = p.id) FROM pairs p WHERE "
                                 "(?1 IS NULL OR p.source = ?1) ORDER BY "
                                 "p.id")))
        goto out;
    sqlite3_bind_text(list, 1, o->source, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(list)) == SQLITE_ROW) {
        if (sqlite3_column_int(list, 1)) {
            stats->already++;
            continue;
        }
        if (nids == cap) {
            size_t nc = cap ? 2 * cap : 256;
            void *p = rlhi_realloc(ids, nc * sizeof *ids);

            if (!p) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot list pairs");
                goto out;
            }
            ids = p;
            cap = nc;
        }
        ids[nids++] = sqlite3_column_int64(list, 0);
    }
    sqlite3_finalize(list);
    list = NULL;
    if (rc != SQLITE_DONE) {
        rc = rlhi_store_err(s, "cannot list pairs");
        goto out;
    }
    if ((rc = rlhi_store_prepare(s, &list, "SELECT prompt, persona, chosen, "
                                 "rejected, margin FROM pairs WHERE id = "
                                 "?")) ||
        (rc = rlhi_store_prepare(s, &upd, "UPDATE pairs SET kept = ?, "
                                 "drop_reason = ? WHERE id = ?")) ||
        (rc = rlhi_store_prepare(s, &rec, "INSERT OR REPLACE INTO "
                                 "pair_checks(pair_id, judge, ab, ba, "
                                 "reason, created) VALUES (?, ?, ?, ?, ?, "
                                 "strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))")))
        goto out;
    rlhi_progress_start(&prog, "filter", nids);

    for (size_t k0 = 0; k0 < nids; k0 += FILTER_CHUNK) {
        size_t n = nids - k0 < FILTER_CHUNK ? nids - k0 : FILTER_CHUNK;

        /* Read the chunk, decide what needs no judge, ask the judge. */
        for (size_t i = 0; i < n; i++) {
            struct fpair *f = &fp[i];

            f->id = ids[k0 + i];
            sqlite3_reset(list);
            sqlite3_bind_int64(list, 1, f->id);
            if (sqlite3_step(list) != SQLITE_ROW) {
                rc = rlhi_store_err(s, "cannot read a pair");
                goto out;
            }
            rc = prepare(judge, o, (const char *)sqlite3_column_text(list, 0),
                         (const char *)sqlite3_column_text(list, 1),
                         (const char *)sqlite3_column_text(list, 2),
                         (const char *)sqlite3_column_text(list, 3),
                         sqlite3_column_type(list, 4) != SQLITE_NULL,
                         sqlite3_column_double(list, 4), f, &t1, &t2);
            sqlite3_reset(list);
            if (rc)
                goto out;
        }
        if (judge && (rc = judge_chunk(judge, fp, n)))
            goto out;

        /* Record the decisions in order. */
        for (size_t i = 0; i < n; i++) {
            const struct fpair *f = &fp[i];
            int reason = f->reason;

            if (!txn && (rc = rlhi_store_begin(s)))
                goto out;
            txn = true;
            sqlite3_reset(upd);
            sqlite3_bind_int(upd, 1, reason == KEEP);
            if (reason != KEEP)
                sqlite3_bind_text(upd, 2, drop_names[reason], -1,
                                  SQLITE_STATIC);
            else
                sqlite3_bind_null(upd, 2);
            sqlite3_bind_int64(upd, 3, f->id);
            sqlite3_reset(rec);
            sqlite3_bind_int64(rec, 1, f->id);
            if (judge)
                sqlite3_bind_text(rec, 2, judge->name, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(rec, 2);
            if (f->ab != 2) {
                sqlite3_bind_int(rec, 3, f->ab);
                sqlite3_bind_int(rec, 4, f->ba);
            } else {
                sqlite3_bind_null(rec, 3);
                sqlite3_bind_null(rec, 4);
            }
            if (reason != KEEP)
                sqlite3_bind_text(rec, 5, drop_names[reason], -1,
                                  SQLITE_STATIC);
            else
                sqlite3_bind_null(rec, 5);
            /* A pair without a verdict is not recorded as checked, so
             * that a rerun (with a working judge) asks again. */
            if (sqlite3_step(upd) != SQLITE_DONE ||
                (reason != RLHI_DROP_JUDGE_ERROR &&
                 sqlite3_step(rec) != SQLITE_DONE)) {
                rc = rlhi_store_err(s, "cannot record a filter decision");
                goto out;
            }
            stats->checked++;
            if (reason == KEEP)
                stats->kept++;
            else
                stats->dropped[reason]++;
            if (++pending >= RLHI_STORE_BATCH) {
                if ((rc = rlhi_store_commit(s)))
                    goto out;
                txn = false;
                pending = 0;
            }
            rlhi_progress_update(&prog, k0 + i + 1);
            errors_in_a_row = reason == RLHI_DROP_JUDGE_ERROR
                                  ? errors_in_a_row + 1 : 0;
            if (errors_in_a_row >= FILTER_MAX_ERRORS_IN_A_ROW) {
                rc = rlhi_err(RLHI_EINVAL, "the judge '%s' gave no valid "
                              "verdict for %d pairs in a row; stopped (the "
                              "last: %s)\nhint: a rerun asks again for pairs "
                              "without a verdict", judge->name,
                              errors_in_a_row, f->err ? f->err : "?");
                if (txn && !rlhi_store_commit(s))
                    txn = false;
                goto out;
            }
        }
        for (size_t i = 0; i < n; i++)
            fpair_release(&fp[i]);
    }
    if (txn) {
        if ((rc = rlhi_store_commit(s)))
            goto out;
        txn = false;
    }
    rlhi_progress_finish(&prog);
    {
        char counts[320];

        snprintf(counts, sizeof counts, "{\"checked\": %llu, \"kept\": %llu"
                 ", \"identical\": %llu, \"low_margin\": %llu, "
                 "\"judge_prefers_rejected\": %llu, \"judge_not_consistent\""
                 ": %llu, \"judge_error\": %llu}",
                 (unsigned long long)stats->checked,
                 (unsigned long long)stats->kept,
                 (unsigned long long)stats->dropped[0],
                 (unsigned long long)stats->dropped[1],
                 (unsigned long long)stats->dropped[2],
                 (unsigned long long)stats->dropped[3],
                 (unsigned long long)stats->dropped[4]);
        rc = rlhi_store_run_finish(s, run, counts);
    }
out:
    if (txn)
        rlhi_store_rollback(s);
    sqlite3_finalize(list);
    sqlite3_finalize(upd);
    sqlite3_finalize(rec);
    for (size_t i = 0; i < FILTER_CHUNK; i++)
        fpair_release(&fp[i]);
    rlhi_free(ids);
    rlhi_buf_release(&t1);
    rlhi_buf_release(&t2);
    stats->seconds = rlhi_time_now() - t0;
    return rc;
}
