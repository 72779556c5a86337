/* The LLM-backed feedback detector and persona summariser: prompted
 * classification and summarisation through struct rlhi_ask, with JSON
 * verdicts that are validated and asked for once more when malformed.
 *
 * Persona histories longer than the model can read are cut into chunks of
 * whole messages (max_chars each); every chunk gets its own persona, and a
 * merge prompt combines them, so no message is ever dropped.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "pairs_internal.h"
#include "persona_internal.h"

/* Each text quoted to the detector is cut to this many characters: the
 * start of a turn carries its intent, and 1500 characters (~400 tokens)
 * for each of three texts fits a 2k-token context with the instructions. */
#define QUOTE_CHARS 1500

/* ---- the llm backend for struct rlhi_ask ------------------------------- */

static int ask_llm(struct rlhi_ask *a, const struct rlhi_chat_msg *msgs,
                   size_t n, int attempt, char **text)
{
    struct rlhi_llm_request q;
    struct rlhi_llm_result r;
    int rc;

    *text = NULL;
    rlhi_llm_request_init(&q, RLHI_LLM_CHAT);
    q.messages = msgs;
    q.n_messages = n;
    q.max_tokens = a->max_tokens > 0 ? a->max_tokens : 256;
    /* Greedy first, so that verdicts are reproducible; a retry samples,
     * since greedy decoding would repeat the malformed reply. */
    q.temperature = attempt ? 0.7f : 0.0f;
    q.seed = attempt;
    memset(&r, 0, sizeof r);
    rc = rlhi_llm_run(a->ctx, &q, 1, &r);
    if (!rc && r.n_texts > 0) {
        *text = rlhi_strdup(r.texts[0] ? r.texts[0] : "");
        if (!*text)
            rc = rlhi_err(RLHI_ENOMEM, "cannot copy a reply");
    } else if (!rc) {
        rc = rlhi_err(RLHI_ENET, "the model gave no choices");
    }
    rlhi_llm_result_release(&r);
    return rc;
}

/* A batch: one rlhi_llm_run, which keeps the client's concurrency busy
 * (HTTP requests in flight, or rows of the local engine's batch). */
static int ask_llm_many(struct rlhi_ask *a,
                        const struct rlhi_chat_msg *const *msgs,
                        const size_t *counts, size_t n, int attempt,
                        char **texts)
{
    struct rlhi_llm_request *q = rlhi_calloc(n ? n : 1, sizeof *q);
    struct rlhi_llm_result *r = rlhi_calloc(n ? n : 1, sizeof *r);
    int rc;

    if (!q || !r) {
        rlhi_free(q);
        rlhi_free(r);
        return rlhi_err(RLHI_ENOMEM, "cannot ask %zu questions", n);
    }
    for (size_t i = 0; i < n; i++) {
        texts[i] = NULL;
        rlhi_llm_request_init(&q[i], RLHI_LLM_CHAT);
        q[i].messages = msgs[i];
        q[i].n_messages = counts[i];
        q[i].max_tokens = a->max_tokens > 0 ? a->max_tokens : 256;
        q[i].temperature = attempt ? 0.7f : 0.0f; /* as ask_llm */
        q[i].seed = attempt;
    }
    rc = rlhi_llm_run(a->ctx, q, n, r);
    for (size_t i = 0; i < n && !rc; i++) {
        if (r[i].n_texts < 1)
            rc = rlhi_err(RLHI_ENET, "the model gave no choices");
        else if (!(texts[i] = rlhi_strdup(r[i].texts[0] ? r[i].texts[0]
                                                        : "")))
            rc = rlhi_err(RLHI_ENOMEM, "cannot copy a reply");
    }
    for (size_t i = 0; i < n; i++) {
        if (rc) {
            rlhi_free(texts[i]);
            texts[i] = NULL;
        }
        rlhi_llm_result_release(&r[i]);
    }
    rlhi_free(q);
    rlhi_free(r);
    return rc;
}

void rlhi_ask_from_llm(struct rlhi_ask *a, struct rlhi_llm *l,
                       int max_tokens)
{
    a->fn = ask_llm;
    a->many = ask_llm_many;
    a->ctx = l;
    a->max_tokens = max_tokens;
}

/* ---- feedback ---------------------------------------------------------- */

static const char fb_system[] =
    "You label one message a user wrote to an AI assistant, given the "
    "assistant's previous answer. Labels:\n"
    "reattempt_feedback: the user is unhappy with the answer and says how "
    "it should change (shorter, longer, a list, simpler, more formal, a "
    "correction, an error message to fix)\n"
    "reattempt_no_guidance: the user is unhappy or asks to redo it, without "
    "saying how\n"
    "clarification: the user answers a question the assistant asked\n"
    "positive: thanks or praise, no new task\n"
    "continue: asks the assistant to go on or give more\n"
    "new_request: a new task that does not judge the answer\n"
    "other: anything else\n"
    "Reply with one JSON object only, no other text: {\"label\": \"<one "
    "label>\", \"dissatisfied\": true or false, \"actionable\": true or "
    "false}. dissatisfied: the user is unhappy with the answer. actionable: "
    "the message says what to change.";

struct fb_check {
    struct rlhi_fb_result *out;
};

static int fb_check(void *obj, void *arg)
{
    struct fb_check *c = arg;
    json_t *o = obj, *l = json_object_get(o, "label"),
           *d = json_object_get(o, "dissatisfied"),
           *a = json_object_get(o, "actionable");
    int label;

    if (!json_is_string(l))
        return rlhi_err(RLHI_EFORMAT, "\"label\" is missing or not a "
                        "string");
    if ((label = rlhi_feedback_label_parse(json_string_value(l))) < 0)
        return rlhi_err(RLHI_EFORMAT, "unknown label '%s'",
                        json_string_value(l));
    if (!json_is_boolean(d) || !json_is_boolean(a))
        return rlhi_err(RLHI_EFORMAT, "\"dissatisfied\" and \"actionable\" "
                        "must be true or false");
    c->out->label = label;
    c->out->dissatisfied = json_is_true(d);
    c->out->actionable = json_is_true(a);
    c->out->rule = "llm";
    return 0;
}

/* The detector's user message for one turn, into `u`. 0 or RLHI_ENOMEM. */
static int fb_prompt(struct rlhi_buf *u, const char *request,
                     const char *answer, const char *turn, bool redact)
{
    const char *src[3] = {request, answer, turn};
    char *t[3] = {NULL, NULL, NULL};
    int rc = 0;

    rlhi_buf_clear(u);
    for (int i = 0; i < 3; i++)
        if (src[i] && !(t[i] = rlhi__dup_redacted(src[i], redact, NULL)))
            rc = RLHI_ENOMEM;
    if (!rc && t[0] &&
        rlhi_buf_addf(u, "The user asked:\n%.*s\n\n", QUOTE_CHARS, t[0]))
        rc = RLHI_ENOMEM;
    if (!rc && rlhi_buf_addf(u, "The assistant answered:\n%.*s\n\nThe user "
                             "then wrote:\n%.*s\n\nLabel the user's last "
                             "message.", QUOTE_CHARS, t[1] ? t[1] : "",
                             QUOTE_CHARS, t[2] ? t[2] : ""))
        rc = RLHI_ENOMEM;
    for (int i = 0; i < 3; i++)
        rlhi_free(t[i]);
    return rc ? rlhi_err(RLHI_ENOMEM, "cannot build a feedback prompt") : 0;
}

int rlhi_llm_feedback_classify(struct rlhi_ask *ask, const char *request,
                               const char *answer, const char *turn,
                               bool redact, struct rlhi_fb_result *out)
{
    struct rlhi_buf u = RLHI_BUF_INIT;
    struct rlhi_chat_msg m[2];
    struct fb_check c = {out};
    void *v = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = fb_prompt(&u, request, answer, turn, redact)) == 0) {
        m[0].role = "system";
        m[0].content = fb_system;
        m[1].role = "user";
        m[1].content = u.buf;
        rc = rlhi__ask_json(ask, m, 2, fb_check, &c, &v);
        json_decref(v);
    }
    rlhi_buf_release(&u);
    return rc;
}

/* ---- personas ---------------------------------------------------------- */

static const char *const dim_values[RLHI_DIM_N][3] = {
    {"expert", "novice", "no signal"},
    {"detailed", "concise", "no signal"},
    {"formal", "casual", "no signal"},
    {"structured", "prose", "no signal"},
};

static const char persona_system[] =
    "You describe how a user wants an AI assistant to answer, from "
    "messages the user wrote. Four dimensions: expertise (\"expert\", "
    "\"novice\" or \"no signal\"), informativeness (\"detailed\", "
    "\"concise\" or \"no signal\"), tone (\"formal\", \"casual\" or \"no "
    "signal\"), structure (\"structured\", \"prose\" or \"no signal\"). "
    "Reply with one JSON object only, no other text: {\"expertise\": ..., "
    "\"informativeness\": ..., \"tone\": ..., \"structure\": ..., \"text\": "
    "\"two or three sentences, addressed to the assistant, describing how "
    "to answer this user\"}.";

static int persona_check(void *obj, void *arg)
{
    struct rlhi_persona *p = arg;
    json_t *o = obj, *t = json_object_get(o, "text");

    for (int d = 0; d < RLHI_DIM_N; d++) {
        json_t *v = json_object_get(o, rlhi_persona_dim_name(d));
        int k;

        if (!json_is_string(v))
            return rlhi_err(RLHI_EFORMAT, "\"%s\" is missing or not a "
                            "string", rlhi_persona_dim_name(d));
        for (k = 0; k < 3; k++)
            if (!strcmp(json_string_value(v), dim_values[d][k]))
                break;
        if (k == 3)
            return rlhi_err(RLHI_EFORMAT, "\"%s\" must be \"%s\", \"%s\" or "
                            "\"no signal\", not '%s'",
                            rlhi_persona_dim_name(d), dim_values[d][0],
                            dim_values[d][1], json_string_value(v));
        p->value[d] = dim_values[d][k];
    }
    if (!json_is_string(t) || !*json_string_value(t))
        return rlhi_err(RLHI_EFORMAT, "\"text\" is missing or empty");
    return 0;
}

/* One user's persona being made: the prompts of the history's chunks,
 * then (several chunks) a merge prompt over their verdicts. */
struct pjob {
    struct rlhi_buf *chunk; /* the chunks' user prompts */
    int nchunks;
    struct rlhi_buf merge;
    struct rlhi_persona p;  /* the result */
    int rc;                 /* 0, or RLHI_EFORMAT with err */
    char *err;
};

static void pjob_release(struct pjob *j)
{
    for (int i = 0; i < j->nchunks; i++)
        rlhi_buf_release(&j->chunk[i]);
    rlhi_free(j->chunk);
    rlhi_buf_release(&j->merge);
    rlhi_persona_release(&j->p);
    rlhi_free(j->err);
    memset(j, 0, sizeof *j);
}

/* Cuts the history into the chunk prompts of j: whole messages, at most
 * max_chars of them per chunk (a longer message is cut to fit). */
static int pjob_chunks(struct pjob *j, const struct rlhi_persona_msg *msgs,
                       size_t n, size_t max_chars, bool redact)
{
    size_t i = 0;
    int rc = 0;

    memset(j, 0, sizeof *j);
    while (i < n || (n == 0 && j->nchunks == 0)) {
        struct rlhi_buf *c;
        void *q = rlhi_realloc(j->chunk, (size_t)(j->nchunks + 1) *
                                             sizeof *j->chunk);

        if (!q)
            goto nomem;
        j->chunk = q;
        c = &j->chunk[j->nchunks++];
        *c = (struct rlhi_buf)RLHI_BUF_INIT;
        if (rlhi_buf_adds(c, "Messages the user wrote (a label in "
                          "brackets marks a reaction to an answer):\n"))
            goto nomem;
        while (i < n) {
            char *t = rlhi__dup_redacted(msgs[i].text, redact, NULL);
            size_t len;

            if (!t)
                goto nomem;
            len = strlen(t) < max_chars ? strlen(t) : max_chars;
            if (c->len + len > max_chars && c->len > 80) {
                rlhi_free(t);
                break;
            }
            rc = rlhi_buf_addf(c, "- %s%s%s", msgs[i].label ? "[" : "",
                               msgs[i].label ? msgs[i].label : "",
                               msgs[i].label ? "] " : "");
            rc |= rlhi_buf_add(c, t, len);
            rc |= rlhi_buf_addc(c, '\n');
            rlhi_free(t);
            if (rc)
                goto nomem;
            i++;
        }
        if (n == 0)
            break;
    }
    return 0;
nomem:
    return rlhi_err(RLHI_ENOMEM, "cannot summarise a persona");
}

/* Takes a persona verdict into j->p (values are checked already): the
 * text, and its JSON appended to the merge prompt as item k (k > 0). */
static int pjob_take(struct pjob *j, json_t *v, int k)
{
    rlhi_free(j->p.text);
    j->p.text = rlhi_strdup(json_string_value(json_object_get(v, "text")));
    if (!j->p.text ||
        (k && (rlhi_buf_addf(&j->merge, "%d. ", k) ||
               rlhi__json_dump(v, JSON_COMPACT, &j->merge) ||
               rlhi_buf_addc(&j->merge, '\n'))))
        return rlhi_err(RLHI_ENOMEM, "cannot keep a persona");
    return 0;
}

static int pjob_fail(struct pjob *j, char **err)
{
    j->rc = RLHI_EFORMAT;
    j->err = *err;
    *err = NULL;
    return 0;
}

/* Makes the personas of jobs[0..n) with two rounds of questions, each
 * asked as one batch: every chunk of every job, then the merges. A job
 * whose verdict stays malformed gets rc RLHI_EFORMAT and err; the return
 * is 0 or a failure that stops everything (the network, memory). */
static int persona_many(struct rlhi_ask *ask, struct pjob *jobs, size_t n)
{
    static const char merge_head[] =
        "Descriptions of the same user made from different parts of their "
        "history:\n";
    struct rlhi_chat_msg *m = NULL;
    const struct rlhi_chat_msg **msgs = NULL;
    size_t *counts = NULL, total = 0, k;
    void **args = NULL, **verdicts = NULL;
    struct rlhi_persona *tmp = NULL;
    int *rcs = NULL, rc = 0;
    char **errs = NULL;

    for (size_t i = 0; i < n; i++)
        total += (size_t)jobs[i].nchunks;
    m = rlhi_calloc(2 * total + 1, sizeof *m);
    msgs = rlhi_calloc(total + 1, sizeof *msgs);
    counts = rlhi_calloc(total + 1, sizeof *counts);
    args = rlhi_calloc(total + 1, sizeof *args);
    verdicts = rlhi_calloc(total + 1, sizeof *verdicts);
    tmp = rlhi_calloc(total + 1, sizeof *tmp);
    rcs = rlhi_calloc(total + 1, sizeof *rcs);
    errs = rlhi_calloc(total + 1, sizeof *errs);
    if (!m || !msgs || !counts || !args || !verdicts || !tmp || !rcs ||
        !errs) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot summarise personas");
        goto out;
    }

    /* Round 1: every chunk. */
    k = 0;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < jobs[i].nchunks; c++, k++) {
            m[2 * k] = (struct rlhi_chat_msg){"system", persona_system};
            m[2 * k + 1] = (struct rlhi_chat_msg){"user",
                                                  jobs[i].chunk[c].buf};
            msgs[k] = &m[2 * k];
            counts[k] = 2;
            args[k] = &tmp[k];
        }
    if ((rc = rlhi__ask_json_many(ask, msgs, counts, total, persona_check,
                                  args, verdicts, rcs, errs)))
        goto out;
    k = 0;
    for (size_t i = 0; i < n; i++) {
        struct pjob *j = &jobs[i];

        if (j->nchunks > 1 && rlhi_buf_adds(&j->merge, merge_head)) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot summarise personas");
            goto out;
        }
        for (int c = 0; c < j->nchunks; c++, k++) {
            if (j->rc)
                continue;
            if (rcs[k]) {
                pjob_fail(j, &errs[k]);
                continue;
            }
            memcpy(j->p.value, tmp[k].value, sizeof j->p.value);
            if ((rc = pjob_take(j, verdicts[k], j->nchunks > 1 ? c + 1 : 0)))
                goto out;
        }
    }

    /* Round 2: the merges. */
    for (k = 0; k < total; k++) {
        json_decref(verdicts[k]);
        verdicts[k] = NULL;
        rlhi_free(errs[k]);
        errs[k] = NULL;
    }
    k = 0;
    for (size_t i = 0; i < n; i++) {
        struct pjob *j = &jobs[i];

        if (j->rc || j->nchunks < 2)
            continue;
        if (rlhi_buf_adds(&j->merge, "\nCombine them into one description "
                          "in the same JSON format. Where they disagree, "
                          "prefer the value most of them show; \"no "
                          "signal\" only when none shows one.")) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot summarise personas");
            goto out;
        }
        m[2 * k] = (struct rlhi_chat_msg){"system", persona_system};
        m[2 * k + 1] = (struct rlhi_chat_msg){"user", j->merge.buf};
        msgs[k] = &m[2 * k];
        args[k] = &tmp[k];
        k++;
    }
    if (k && (rc = rlhi__ask_json_many(ask, msgs, counts, k, persona_check,
                                       args, verdicts, rcs, errs)))
        goto out;
    k = 0;
    for (size_t i = 0; i < n; i++) {
        struct pjob *j = &jobs[i];

        if (j->rc || j->nchunks < 2)
            continue;
        if (rcs[k]) {
            pjob_fail(j, &errs[k]);
        } else {
            memcpy(j->p.value, tmp[k].value, sizeof j->p.value);
            if ((rc = pjob_take(j, verdicts[k], 0)))
                goto out;
        }
        k++;
    }
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < RLHI_DIM_N && !jobs[i].rc; d++)
            if (!(jobs[i].p.evidence[d] = rlhi_strdup("[]"))) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot summarise personas");
                goto out;
            }

out:
    for (k = 0; verdicts && errs && k < total; k++) {
        json_decref(verdicts[k]);
        rlhi_free(errs[k]);
    }
    rlhi_free(m);
    rlhi_free(msgs);
    rlhi_free(counts);
    rlhi_free(args);
    rlhi_free(verdicts);
    rlhi_free(tmp);
    rlhi_free(rcs);
    rlhi_free(errs);
    return rc;
}

int rlhi_llm_persona_summarise(struct rlhi_ask *ask,
                               const struct rlhi_persona_msg *msgs, size_t n,
                               size_t max_chars, bool redact,
                               struct rlhi_persona *out)
{
    struct pjob j;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = pjob_chunks(&j, msgs, n, max_chars ? max_chars : 6000,
                          redact)) ||
        (rc = persona_many(ask, &j, 1))) {
        pjob_release(&j);
        return rc;
    }
    if (j.rc) {
        rc = rlhi_err(j.rc, "%s", j.err ? j.err : "no valid persona");
        pjob_release(&j);
        return rc;
    }
    *out = j.p;
    memset(&j.p, 0, sizeof j.p);
    pjob_release(&j);
    return 0;
}

/* ---- store-level runs -------------------------------------------------- */

/* Conversation ids in id order. */
static int list_ids(struct rlhi_store *s, const char *sql, int64_t **ids,
                    size_t *n)
{
    sqlite3_stmt *st;
    size_t cap = 0;
    int rc;

    *ids = NULL;
    *n = 0;
    if ((rc = rlhi_store_prepare(s, &st, sql)))
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? 2 * cap : 256;
            void *p = rlhi_realloc(*ids, nc * sizeof **ids);

            if (!p) {
                sqlite3_finalize(st);
                return rlhi_err(RLHI_ENOMEM, "cannot list ids");
            }
            *ids = p;
            cap = nc;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : rlhi_store_err(s, "cannot list ids");
}

/* Turns asked together (and stored in one transaction): enough to keep a
 * client's concurrency busy; a kill loses at most one batch of answers,
 * and those are in the response cache. */
#define LLM_RUN_BATCH 32

/* Malformed verdicts in a row that end a run: a model that cannot give
 * the format would otherwise be asked twice for every turn in vain. */
#define LLM_MAX_BAD_IN_A_ROW 8

/* One turn waiting for its label. */
struct fb_job {
    int64_t cid;
    int idx;
    char *hash;
    struct rlhi_buf prompt;
    struct rlhi_chat_msg m[2];
    struct rlhi_fb_result res;
};

/* Asks for the labels of jobs[0..n) at once and stores them in order, in
 * one transaction. Malformed verdicts are warned about and left
 * unlabelled (a rerun asks again); too many in a row stop the run. */
static int fb_flush(struct rlhi_store *s, struct rlhi_ask *ask,
                    sqlite3_stmt *put, const char *backend,
                    struct fb_job *jobs, size_t n, int *bad_in_a_row,
                    struct rlhi_feedback_stats *stats)
{
    const struct rlhi_chat_msg *msgs[LLM_RUN_BATCH];
    size_t counts[LLM_RUN_BATCH];
    struct fb_check checks[LLM_RUN_BATCH];
    void *args[LLM_RUN_BATCH], *verdicts[LLM_RUN_BATCH];
    char *errs[LLM_RUN_BATCH];
    int rcs[LLM_RUN_BATCH], rc;

    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        msgs[i] = jobs[i].m;
        counts[i] = 2;
        checks[i].out = &jobs[i].res;
        args[i] = &checks[i];
    }
    if ((rc = rlhi__ask_json_many(ask, msgs, counts, n, fb_check, args,
                                  verdicts, rcs, errs)))
        return rc;
    if ((rc = rlhi_store_begin(s)))
        goto out;
    for (size_t i = 0; i < n && !rc; i++) {
        const struct fb_job *j = &jobs[i];

        if (rcs[i]) {
            rlhi_warn("conversation '%s' turn %d: %s; left unlabelled",
                      j->hash, j->idx, errs[i]);
            if (++*bad_in_a_row >= LLM_MAX_BAD_IN_A_ROW)
                rc = rlhi_err(RLHI_EFORMAT, "%d malformed verdicts in a "
                              "row; stopped\nhint: the model does not "
                              "follow the JSON format; use a larger "
                              "instruction-following model", *bad_in_a_row);
            continue;
        }
        *bad_in_a_row = 0;
        sqlite3_reset(put);
        sqlite3_bind_int64(put, 1, j->cid);
        sqlite3_bind_int(put, 2, j->idx);
        sqlite3_bind_text(put, 3, rlhi_feedback_label_name(j->res.label), -1,
                          SQLITE_STATIC);
        sqlite3_bind_int(put, 4, j->res.dissatisfied);
        sqlite3_bind_int(put, 5, j->res.actionable);
        sqlite3_bind_text(put, 6, backend, -1, SQLITE_STATIC);
        if (sqlite3_step(put) != SQLITE_DONE) {
            rc = rlhi_store_err(s, "cannot store a label");
            break;
        }
        stats->turns++;
        stats->by_label[j->res.label]++;
        stats->dissatisfied += j->res.dissatisfied;
        stats->actionable += j->res.actionable;
    }
    /* Labels stored before a run of malformed verdicts are good. */
    if (rc == 0 || rc == RLHI_EFORMAT) {
        int crc = rlhi_store_commit(s);

        if (crc)
            rc = crc;
    } else {
        rlhi_store_rollback(s);
    }
out:
    for (size_t i = 0; i < n; i++) {
        json_decref(verdicts[i]);
        rlhi_free(errs[i]);
    }
    return rc;
}

static void fb_jobs_clear(struct fb_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rlhi_free(jobs[i].hash);
}

int rlhi_llm_feedback_run(struct rlhi_store *s, struct rlhi_ask *ask,
                          const char *backend, bool redact,
                          struct rlhi_feedback_stats *stats)
{
    sqlite3_stmt *have = NULL, *put = NULL;
    struct fb_job jobs[LLM_RUN_BATCH];
    struct rlhi_progress prog;
    int64_t *ids = NULL, last_conv = -1;
    size_t nids = 0, nj = 0;
    int rc, bad_in_a_row = 0;
    double t0 = rlhi_time_now();

    memset(stats, 0, sizeof *stats);
    memset(jobs, 0, sizeof jobs);
    if ((rc = list_ids(s, "SELECT id FROM conversations ORDER BY id", &ids,
                       &nids)) ||
        (rc = rlhi_store_prepare(s, &have, "SELECT 1 FROM feedback WHERE "
                                 "conversation_id = ? AND turn_index = ? "
                                 "AND backend = ?")) ||
        (rc = rlhi_store_prepare(s, &put, "INSERT OR REPLACE INTO feedback("
                                 "conversation_id, turn_index, label, "
                                 "dissatisfied, actionable, backend, "
                                 "evidence) VALUES (?, ?, ?, ?, ?, ?, "
                                 "'llm')")))
        goto out;
    rlhi_progress_start(&prog, "llm feedback conversations", nids);
    for (size_t k = 0; k < nids; k++) {
        struct rlhi__conv c;

        if ((rc = rlhi__conv_load(s, ids[k], &c)))
            goto out;
        for (size_t i = 1; i < c.n && !rc; i++) {
            struct fb_job *j;
            bool done;

            if (strcmp(c.msgs[i].role, "user") ||
                strcmp(c.msgs[i - 1].role, "assistant"))
                continue;
            sqlite3_reset(have);
            sqlite3_bind_int64(have, 1, c.id);
            sqlite3_bind_int(have, 2, (int)i);
            sqlite3_bind_text(have, 3, backend, -1, SQLITE_STATIC);
            done = sqlite3_step(have) == SQLITE_ROW;
            sqlite3_reset(have);
            if (done)
                continue;
            j = &jobs[nj];
            j->cid = c.id;
            j->idx = (int)i;
            if (!(j->hash = rlhi_strdup(c.hash))) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot hold a turn");
                break;
            }
            if ((rc = fb_prompt(&j->prompt,
                                i >= 2 && !strcmp(c.msgs[i - 2].role, "user")
                                    ? c.msgs[i - 2].content : NULL,
                                c.msgs[i - 1].content, c.msgs[i].content,
                                redact))) {
                rlhi_free(j->hash);
                j->hash = NULL;
                break;
            }
            j->m[0].role = "system";
            j->m[0].content = fb_system;
            j->m[1].role = "user";
            j->m[1].content = j->prompt.buf;
            nj++;
            if (c.id != last_conv) {
                stats->conversations++;
                last_conv = c.id;
            }
            if (nj == LLM_RUN_BATCH) {
                rc = fb_flush(s, ask, put, backend, jobs, nj, &bad_in_a_row,
                              stats);
                fb_jobs_clear(jobs, nj);
                nj = 0;
            }
        }
        rlhi__conv_release(&c);
        if (rc)
            goto out;
        rlhi_progress_update(&prog, k + 1);
    }
    rc = fb_flush(s, ask, put, backend, jobs, nj, &bad_in_a_row, stats);
    if (!rc)
        rlhi_progress_finish(&prog);
out:
    fb_jobs_clear(jobs, nj);
    for (size_t i = 0; i < LLM_RUN_BATCH; i++)
        rlhi_buf_release(&jobs[i].prompt);
    sqlite3_finalize(have);
    sqlite3_finalize(put);
    rlhi_free(ids);
    stats->seconds = rlhi_time_now() - t0;
    return rc;
}

/* Users whose personas are asked for together: their chunks go out as one
 * batch (then their merges), and are stored in one transaction. */
#define PERSONA_BATCH 16

/* Stores the personas of the batch's users in one transaction; a user
 * whose verdict stayed malformed is warned about and left for a rerun.
 * Eight such users in a row stop the run. */
static int persona_flush(struct rlhi_store *s, struct rlhi_ask *ask,
                         sqlite3_stmt *put, const char *backend, bool redact,
                         struct pjob *jobs, const int64_t *uid,
                         char (*hex)[65], size_t n, int *bad_in_a_row,
                         struct rlhi_persona_stats *stats)
{
    int rc;

    if (!n)
        return 0;
    if ((rc = persona_many(ask, jobs, n)) || (rc = rlhi_store_begin(s)))
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        if (jobs[i].rc) {
            rlhi_warn("user %lld: %s; no persona yet (a rerun asks again)",
                      (long long)uid[i], jobs[i].err ? jobs[i].err : "?");
            if (++*bad_in_a_row >= LLM_MAX_BAD_IN_A_ROW)
                rc = rlhi_err(RLHI_EFORMAT, "%d users in a row without a "
                              "valid persona; stopped\nhint: the model does "
                              "not follow the JSON format; use a larger "
                              "instruction-following model", *bad_in_a_row);
            continue;
        }
        *bad_in_a_row = 0;
        rc = rlhi__persona_put(s, put, uid[i], backend, &jobs[i].p, hex[i],
                               redact);
        sqlite3_reset(put);
        if (!rc)
            stats->made++;
    }
    if (rc && rc != RLHI_EFORMAT) {
        rlhi_store_rollback(s);
        return rc;
    }
    /* personas stored before a run of malformed ones are good */
    {
        int crc = rlhi_store_commit(s);

        return crc ? crc : rc;
    }
}

int rlhi_llm_persona_run(struct rlhi_store *s, struct rlhi_ask *ask,
                         const char *backend, bool redact, size_t max_chars,
                         struct rlhi_persona_stats *stats)
{
    sqlite3_stmt *msgs = NULL, *old = NULL, *put = NULL;
    struct rlhi_persona_msg *pm = NULL;
    struct rlhi_buf text = RLHI_BUF_INIT;
    struct pjob jobs[PERSONA_BATCH];
    int64_t uid[PERSONA_BATCH];
    char hex[PERSONA_BATCH][65];
    size_t *off = NULL, cap = 0, nj = 0;
    int64_t *ids = NULL;
    size_t nids = 0;
    struct rlhi_progress prog;
    int rc, bad_in_a_row = 0;
    double t0 = rlhi_time_now();

    memset(stats, 0, sizeof *stats);
    memset(jobs, 0, sizeof jobs);
    if (!max_chars)
        max_chars = 6000;
    if ((rc = list_ids(s, "SELECT id FROM users ORDER BY id", &ids,
                       &nids)) ||
        (rc = rlhi__persona_stmts(s, &msgs, &old, &put)))
        goto out;
    rlhi_progress_start(&prog, "llm persona users", nids);
    for (size_t k = 0; k < nids; k++) {
        struct rlhi_sha256 sh;
        uint8_t dig[32];
        size_t n = 0;

        /* The history: text and label per message, NUL-separated in one
         * buffer; its hash decides whether to ask again. */
        stats->users++;
        rlhi_buf_clear(&text);
        rlhi_sha256_init(&sh);
        sqlite3_reset(msgs);
        sqlite3_bind_int64(msgs, 1, ids[k]);
        while (sqlite3_step(msgs) == SQLITE_ROW) {
            const char *t = (const char *)sqlite3_column_text(msgs, 2);
            const char *l = (const char *)sqlite3_column_text(msgs, 3);

            if (n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                void *q = rlhi_realloc(off, 2 * nc * sizeof *off);

                if (!q)
                    goto nomem;
                off = q;
                cap = nc;
            }
            off[2 * n] = text.len;
            if (rlhi_buf_adds(&text, t) || rlhi_buf_addc(&text, 0))
                goto nomem;
            off[2 * n + 1] = l ? text.len : (size_t)-1;
            if (l && (rlhi_buf_adds(&text, l) || rlhi_buf_addc(&text, 0)))
                goto nomem;
            rlhi_sha256_update(&sh, t, strlen(t) + 1);
            n++;
        }
        sqlite3_reset(msgs);
        rlhi_sha256_final(&sh, dig);
        for (int i = 0; i < 32; i++)
            snprintf(hex[nj] + 2 * i, 3, "%02x", dig[i]);
        rlhi_progress_update(&prog, k + 1);
        if (rlhi__persona_is_same(old, ids[k], backend, hex[nj])) {
            stats->unchanged++;
            continue;
        }
        if (!(pm = rlhi_realloc(pm, (n ? n : 1) * sizeof *pm)))
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            pm[i].id = NULL;
            pm[i].text = text.buf + off[2 * i];
            pm[i].label = off[2 * i + 1] == (size_t)-1
                              ? NULL : text.buf + off[2 * i + 1];
        }
        uid[nj] = ids[k];
        if ((rc = pjob_chunks(&jobs[nj], pm, n, max_chars, redact)))
            goto out;
        if (++nj == PERSONA_BATCH) {
            rc = persona_flush(s, ask, put, backend, redact, jobs, uid, hex,
                               nj, &bad_in_a_row, stats);
            for (size_t i = 0; i < nj; i++)
                pjob_release(&jobs[i]);
            nj = 0;
            if (rc)
                goto out;
        }
    }
    if ((rc = persona_flush(s, ask, put, backend, redact, jobs, uid, hex, nj,
                            &bad_in_a_row, stats)))
        goto out;
    rlhi_progress_finish(&prog);
    goto out;

nomem:
    rc = rlhi_err(RLHI_ENOMEM, "cannot read a user's history");
out:
    for (size_t i = 0; i < nj; i++)
        pjob_release(&jobs[i]);
    sqlite3_finalize(msgs);
    sqlite3_finalize(old);
    sqlite3_finalize(put);
    rlhi_free(ids);
    rlhi_free(off);
    rlhi_free(pm);
    rlhi_buf_release(&text);
    stats->seconds = rlhi_time_now() - t0;
    return rc;
}
