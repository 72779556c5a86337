/* Reward-ranked preference pairs: N answers sampled from the policy for a
 * user request that drew no complaint, scored for the user's persona, best
 * versus worst.
 *
 * The N candidates of one request are one llm request with n = N, so the
 * local engine processes the prompt once and copies its KV cache to the
 * other N - 1 sequences. Sampling seeds derive from the conversation hash
 * and the turn, so a rerun (or a resumed run) samples the same answers.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "pairs_internal.h"
#include "rlhi/reward.h"

/* ---- the reward-model judge ------------------------------------------- */

struct reward_judge {
    struct rlhi_reward *rm;
    struct rlhi_tokenizer *tok;
    enum rlhi_chat_kind kind;
    struct toks tk;
};

void rlhi_judge_release(struct rlhi_judge *j)
{
    if (j && j->release)
        j->release(j);
}

static void reward_release(struct rlhi_judge *j)
{
    struct reward_judge *r = j->ctx;

    if (!r)
        return;
    rlhi_reward_free(r->rm);
    rlhi_tokenizer_free(r->tok);
    rlhi_free(r->tk.id);
    rlhi_free(r->tk.sc);
    rlhi_free(r);
    j->ctx = NULL;
}

/* Tokenizes {"messages": [system persona, conversation..., answer]}, as
 * the reward trainer renders its pairs, into r->tk; the length to score
 * (the start, as in training, when longer than the model's context). */
static int reward_tokens(struct reward_judge *r, const char *persona,
                         const struct rlhi_chat_msg *prompt, size_t n,
                         const char *answer, int *len)
{
    json_t *root = json_object(), *msgs = json_array();
    int rc = 0;

    if (!root || !msgs || json_object_set_new(root, "messages", msgs)) {
        json_decref(msgs);
        rc = RLHI_ENOMEM;
    }
    for (size_t i = 0; !rc && i <= n + 1; i++) {
        const char *role, *text;
        json_t *m;

        if (i == 0 && !persona)
            continue;
        role = i == 0 ? "system" : i <= n ? prompt[i - 1].role : "assistant";
        text = i == 0 ? persona : i <= n ? prompt[i - 1].content : answer;
        if (!(m = json_pack("{s:s, s:s}", "role", role, "content", text)) ||
            json_array_append_new(msgs, m))
            rc = RLHI_ENOMEM;
    }
    if (rc) {
        json_decref(root);
        return rlhi_err(RLHI_ENOMEM, "cannot build a reward input");
    }
    rc = rlhi__sft_example(root, r->tok, r->kind, &r->tk);
    json_decref(root);
    if (rc)
        return rc;
    *len = (int)r->tk.n;
    if (*len > r->rm->m->cfg.max_seq_len)
        *len = r->rm->m->cfg.max_seq_len;
    return 0;
}

static int reward_score(struct rlhi_judge *j, const char *persona,
                        const struct rlhi_chat_msg *prompt, size_t n,
                        const char *answer, double *score)
{
    struct reward_judge *r = j->ctx;
    const int32_t *seq;
    int rc, len;

    if ((rc = reward_tokens(r, persona, prompt, n, answer, &len)))
        return rc;
    seq = r->tk.id;
    return rlhi_reward_score(r->rm, &seq, &len, 1, score);
}

/* All candidates in one rlhi_reward_score call: one forward state, up to
 * 8 rows per pass. */
static int reward_score_many(struct rlhi_judge *j, const char *persona,
                             const struct rlhi_chat_msg *prompt, size_t n,
                             const char *const *answers, size_t k,
                             double *scores, int *rcs, char **errs)
{
    struct reward_judge *r = j->ctx;
    int32_t **seqs = rlhi_calloc(k + 1, sizeof *seqs);
    int *lens = rlhi_calloc(k + 1, sizeof *lens), rc = 0;

    for (size_t i = 0; i < k; i++) {
        rcs[i] = 0;
        errs[i] = NULL;
    }
    if (!seqs || !lens)
        rc = rlhi_err(RLHI_ENOMEM, "cannot score candidates");
    for (size_t i = 0; i < k && !rc; i++) {
        if ((rc = reward_tokens(r, persona, prompt, n, answers[i], &lens[i])))
            break;
        if (!(seqs[i] = rlhi_malloc((size_t)(lens[i] ? lens[i] : 1) *
                                    sizeof **seqs)))
            rc = rlhi_err(RLHI_ENOMEM, "cannot score candidates");
        else
            memcpy(seqs[i], r->tk.id, (size_t)lens[i] * sizeof **seqs);
    }
    if (!rc)
        rc = rlhi_reward_score(r->rm, (const int32_t *const *)seqs, lens,
                               (int)k, scores);
    if (rc && rc != RLHI_ENOMEM) {
        /* e.g. an empty rendering: every candidate lacks a score */
        for (size_t i = 0; i < k; i++) {
            rcs[i] = rc;
            errs[i] = rlhi_strdup(rlhi_errmsg());
        }
        rc = 0;
    }
    for (size_t i = 0; seqs && i < k; i++)
        rlhi_free(seqs[i]);
    rlhi_free(seqs);
    rlhi_free(lens);
    return rc;
}

static int reward_compare(struct rlhi_judge *j, const char *persona,
                          const struct rlhi_chat_msg *prompt, size_t n,
                          const char *a, const char *b, int *pref)
{
    double sa, sb;
    int rc;

    if ((rc = reward_score(j, persona, prompt, n, a, &sa)) ||
        (rc = reward_score(j, persona, prompt, n, b, &sb)))
        return rc;
    *pref = sa > sb ? 1 : sb > sa ? -1 : 0;
    return 0;
}

int rlhi_judge_reward(struct rlhi_judge *j, const char *dir,
                      const char *tokenizer, const char *chat_template)
{
    struct reward_judge *r = rlhi_calloc(1, sizeof *r);
    const char *tp = tokenizer ? tokenizer : dir;
    size_t tl = strlen(tp);
    int rc;

    memset(j, 0, sizeof *j);
    if (!r)
        return rlhi_err(RLHI_ENOMEM, "cannot load reward model '%s'", dir);
    j->name = "reward";
    j->score = reward_score;
    j->score_many = reward_score_many;
    j->compare = reward_compare;
    j->release = reward_release;
    j->ctx = r;
    if ((rc = rlhi_reward_load(&r->rm, dir)))
        goto fail;
    if (tl > 4 && !strcmp(tp + tl - 4, ".bin"))
        rc = rlhi_tokenizer_load_llama2c(&r->tok, tp,
                                         r->rm->m->cfg.vocab_size);
    else
        rc = rlhi_tokenizer_load(&r->tok, tp);
    if (rc)
        goto fail;
    if (chat_template)
        rc = rlhi_chat_kind_from_name(chat_template, &r->kind);
    else if (rlhi_chat_template_from_dir(dir, &r->kind))
        rc = rlhi_chat_kind_from_name("rlhi", &r->kind);
    if (rc)
        goto fail;
    rlhi_err_clear();
    return 0;

fail:
    reward_release(j);
    return rc;
}

/* ---- rank pairs ---------------------------------------------------------- */

/* User requests that were answered, drew no dissatisfied follow-up
 * (labels by `backend`) and are not themselves complaints about an earlier
 * answer. */
static int load_requests(struct rlhi_store *s, const char *backend,
                         struct rlhi__turn_ref **out, size_t *n)
{
    return rlhi__turn_refs_load(s, "SELECT m.conversation_id, m.idx FROM "
                                "messages m WHERE m.role = 'user' AND "
                                "EXISTS (SELECT 1 FROM messages a WHERE "
                                "a.conversation_id = m.conversation_id AND "
                                "a.idx = m.idx + 1 AND a.role = "
                                "'assistant') AND NOT EXISTS (SELECT 1 "
                                "FROM feedback f WHERE "
                                "f.conversation_id = m.conversation_id AND "
                                "f.backend = ?1 AND ((f.turn_index = "
                                "m.idx + 2 AND f.dissatisfied) OR "
                                "(f.turn_index = m.idx AND f.label IN "
                                "('reattempt_feedback', "
                                "'reattempt_no_guidance')))) ORDER BY "
                                "m.conversation_id, m.idx", backend, 256,
                                "requests", "cannot read requests", out, n);
}

/* Makes and stores the pair for one request. 1 stored, 0 not (counted in
 * stats), or a negative code for a store or memory failure. */
static int rank_one(struct rlhi_store *s, struct rlhi_llm *policy,
                    struct rlhi_judge *judge, const struct rlhi_pairs_opts *o,
                    const struct rlhi__turn_ref *c,
                    struct rlhi_pairs_stats *stats,
                    char **first_err, int *first_code)
{
    const char *pb = o->persona_backend ? o->persona_backend : "builtin";
    int ncand = o->num_candidates > 0 ? o->num_candidates : 4;
    struct rlhi__conv cv;
    struct rlhi_chat_msg *pm = NULL;
    struct rlhi_llm_request q;
    struct rlhi_llm_result r;
    struct rlhi_buf prompt = RLHI_BUF_INIT;
    char *persona = NULL, *raw = NULL, *best_t = NULL, *worst_t = NULL;
    char **errs = NULL;
    double best = 0, worst = 0, *scores = NULL;
    int ibest = -1, iworst = -1, rc, *rcs = NULL;

    memset(&r, 0, sizeof r);
    if ((rc = rlhi__conv_load(s, c->conv, &cv)))
        return rc;
    if ((rc = rlhi__persona_text(s, cv.user_id, pb, &raw)))
        goto out;
    if (raw && !(persona = rlhi__dup_redacted(raw, o->redact,
                                              &stats->redactions))) {
        rc = RLHI_ENOMEM;
        goto out;
    }
    if (!(pm = rlhi_calloc((size_t)c->turn + 2, sizeof *pm))) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot build a prompt");
        goto out;
    }
    /* The policy sees the persona too: it is what the pair's prompt
     * holds, and what a persona-conditioned policy is trained on. */
    if (persona) {
        pm[0].role = "system";
        pm[0].content = persona;
    }
    for (int i = 0; i <= c->turn; i++) {
        pm[i + !!persona].role = cv.msgs[i].role;
        if (!(pm[i + !!persona].content = rlhi__dup_redacted(
                  cv.msgs[i].content, o->redact, &stats->redactions))) {
            rc = RLHI_ENOMEM;
            goto out;
        }
    }

    /* N candidates in one request. A small model's context may not hold
     * the whole conversation: the oldest messages after the persona are
     * left out of the request (the stored prompt keeps them). */
    rlhi_llm_request_init(&q, RLHI_LLM_CHAT);
    q.messages = pm;
    q.n_messages = (size_t)c->turn + 1 + !!persona;
    if (o->max_prompt_chars) {
        size_t total = 0, first = !!persona;

        for (size_t i = 0; i < q.n_messages; i++)
            total += strlen(pm[i].content);
        while (total > o->max_prompt_chars && first + 1 < q.n_messages)
            total -= strlen(pm[first++].content);
        if (first > (size_t)!!persona) {
            /* Shift the kept tail next to the persona. */
            struct rlhi_chat_msg *sent =
                rlhi_calloc(q.n_messages - first + 1, sizeof *sent);

            if (!sent) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot build a request");
                goto out;
            }
            if (persona)
                sent[0] = pm[0];
            memcpy(sent + !!persona, pm + first,
                   (q.n_messages - first) * sizeof *sent);
            q.n_messages = q.n_messages - first + !!persona;
            q.messages = sent;
        }
    }
    q.max_tokens = o->max_tokens > 0 ? o->max_tokens : 256;
    q.temperature = o->temperature > 0 ? o->temperature : 1.0f;
    q.n = ncand;
    q.seed = (int64_t)((rlhi_fnv64(RLHI_FNV64_INIT, cv.hash,
                                   strlen(cv.hash)) ^
                        (uint64_t)c->turn * 0x9e3779b97f4a7c15ULL ^
                        o->seed) >> 2);
    rc = rlhi_llm_run(policy, &q, 1, &r);
    if (q.messages != pm)
        rlhi_free((void *)q.messages);
    if (rc == RLHI_ENOMEM)
        goto out;
    if (rc || r.n_texts < 2) {
        stats->failed++;
        if (!*first_code) {
            *first_code = rc ? rc : RLHI_ENET;
            *first_err = rlhi_strdup(rc ? rlhi_errmsg() : "fewer than 2 "
                                                          "candidates");
        }
        rc = 0;
        goto out;
    }

    /* Score each candidate for the persona; best versus worst. With
     * --redact the candidates are redacted in place first, since they go
     * to the judge and into the pair. A judge that can scores them all at
     * once (one reward-model pass, or concurrent LLM requests). */
    for (int i = 0; i < r.n_texts && o->redact; i++) {
        char *t = rlhi__dup_redacted(r.texts[i], true, &stats->redactions);

        if (!t) {
            rc = RLHI_ENOMEM;
            goto out;
        }
        rlhi_free(r.texts[i]);
        r.texts[i] = t;
    }
    if (!(scores = rlhi_calloc((size_t)r.n_texts, sizeof *scores)) ||
        !(rcs = rlhi_calloc((size_t)r.n_texts, sizeof *rcs)) ||
        !(errs = rlhi_calloc((size_t)r.n_texts, sizeof *errs))) {
        rc = RLHI_ENOMEM;
        goto out;
    }
    if (judge->score_many) {
        rc = judge->score_many(judge, persona, pm + !!persona,
                               (size_t)c->turn + 1,
                               (const char *const *)r.texts,
                               (size_t)r.n_texts, scores, rcs, errs);
        if (rc)
            goto out;
    } else {
        for (int i = 0; i < r.n_texts; i++) {
            rc = judge->score(judge, persona, pm + !!persona,
                              (size_t)c->turn + 1, r.texts[i], &scores[i]);
            if (rc == RLHI_EFORMAT || rc == RLHI_ENET) {
                rcs[i] = rc;
                if (!(errs[i] = rlhi_strdup(rlhi_errmsg()))) {
                    rc = RLHI_ENOMEM;
                    goto out;
                }
                rc = 0;
            } else if (rc) {
                goto out;
            }
        }
    }
    for (int i = 0; i < r.n_texts; i++) {
        double sc = scores[i];

        if (rcs[i]) {
            rlhi_warn("conversation '%s' turn %d candidate %d: %s", cv.hash,
                      c->turn, i, errs[i] ? errs[i] : "no score");
            continue;
        }
        if (ibest < 0 || sc > best) {
            best = sc;
            ibest = i;
        }
        if (iworst < 0 || sc < worst) {
            worst = sc;
            iworst = i;
        }
    }
    if (ibest < 0 || ibest == iworst) {
        /* No two candidates scored differently. */
        rlhi_debug("conversation '%s' turn %d: all candidates score the "
                   "same; no pair", cv.hash, c->turn);
        stats->skipped++;
        rc = 0;
        goto out;
    }
    best_t = rlhi__dup_redacted(r.texts[ibest], false, NULL);
    worst_t = rlhi__dup_redacted(r.texts[iworst], false, NULL);
    if (!best_t || !worst_t ||
        (rc = rlhi__prompt_json(persona, pm + !!persona,
                                (size_t)c->turn + 1, &prompt))) {
        rc = rc ? rc : RLHI_ENOMEM;
        goto out;
    }
    {
        struct rlhi__pair p = {0};

        p.conv = cv.id;
        p.user_id = cv.user_id;
        p.turn = c->turn;
        p.round = o->round;
        p.source = "rank";
        p.prompt = prompt.buf;
        p.chosen = best_t;
        p.rejected = worst_t;
        p.persona = persona;
        p.has_scores = true;
        p.chosen_score = best;
        p.rejected_score = worst;
        rc = rlhi__pair_insert(s, &p);
    }

out:
    if (pm)
        for (int i = 0; i <= c->turn; i++)
            rlhi_free((char *)pm[i + !!persona].content);
    rlhi_free(pm);
    rlhi_free(persona);
    rlhi_free(raw);
    rlhi_free(best_t);
    rlhi_free(worst_t);
    for (int i = 0; errs && i < r.n_texts; i++)
        rlhi_free(errs[i]);
    rlhi_free(errs);
    rlhi_free(scores);
    rlhi_free(rcs);
    rlhi_buf_release(&prompt);
    rlhi_llm_result_release(&r);
    rlhi__conv_release(&cv);
    return rc;
}

/* Consecutive failed requests that end a rank run: enough to ride out a
 * short outage that the llm's own retries did not. */
#define RANK_MAX_FAILED_IN_A_ROW 8

int rlhi_pairs_rank(struct rlhi_store *s, struct rlhi_llm *policy,
                    struct rlhi_judge *judge,
                    const struct rlhi_pairs_opts *o,
                    struct rlhi_pairs_stats *stats)
{
    const char *fbk = o->feedback_backend ? o->feedback_backend : "builtin";
    int batch = o->batch > 0 ? o->batch : 16;
    struct rlhi__turn_ref *cands = NULL;
    struct rlhi_progress prog;
    char *first_err = NULL;
    int first_code = 0, pending = 0, rc, run_failed = 0;
    uint64_t failed_before = 0;
    int64_t run = 0, cap = rlhi__pairs_cap(o);
    size_t n = 0;
    bool txn = false;
    double t0 = rlhi_time_now();

    memset(stats, 0, sizeof *stats);
    if (!judge)
        return rlhi_err(RLHI_EINVAL, "rank pairs need a judge or a reward "
                        "model to score the candidates");
    if ((rc = rlhi_pairs_schema(s)) ||
        (rc = load_requests(s, fbk, &cands, &n)))
        goto out;
    if (!n) {
        rc = rlhi_err(RLHI_ENOTFOUND, "no user requests in '%s'\nhint: run "
                      "'rlhi ingest' first", rlhi_store_path(s));
        goto out;
    }
    if ((rc = rlhi_store_run_start(s, "pairs", o->args ? o->args : "rank",
                                   &run)))
        goto out;
    rlhi_progress_start(&prog, "rank", n);

    /* One request at a time: its N candidates already fill the engine's
     * batch; transactions group `batch` pairs. */
    for (size_t k = 0; k < n; k++) {
        if (cap && (int64_t)stats->made >= cap)
            break;
        rc = rlhi__pair_seen(s, "rank", cands[k].conv, cands[k].turn,
                             o->round, stats);
        if (rc < 0)
            goto out_run;
        if (rc)
            continue;
        if (!txn && (rc = rlhi_store_begin(s)))
            goto out_run;
        txn = true;
        rc = rank_one(s, policy, judge, o, &cands[k], stats, &first_err,
                      &first_code);
        if (rc < 0)
            goto out_run;
        /* Requests failing one after another: the backend is down or
         * refuses them; stop rather than fail every request. */
        run_failed = rc == 0 && stats->failed > failed_before
                         ? run_failed + 1 : 0;
        failed_before = stats->failed;
        if (run_failed >= RANK_MAX_FAILED_IN_A_ROW) {
            rc = rlhi_err(first_code, "%d requests in a row failed; "
                          "stopped. The first: %s", run_failed,
                          first_err ? first_err : "?");
            goto out_run;
        }
        stats->made += (uint64_t)rc;
        pending += rc;
        if (pending >= batch || (cap && (int64_t)stats->made >= cap)) {
            if ((rc = rlhi_store_commit(s)))
                goto out_run;
            txn = false;
            pending = 0;
        }
        rlhi_progress_update(&prog, k + 1);
        if ((rc = rlhi__pairs_stop_hook(o, stats)))
            goto out_run;
    }
    if (txn) {
        if ((rc = rlhi_store_commit(s)))
            goto out_run;
        txn = false;
    }
    rlhi_progress_finish(&prog);
    rc = 0;

out_run:
    if (txn)
        rlhi_store_rollback(s);
    if (!rc)
        rc = rlhi__pairs_run_finish(s, run, "requests", stats);
    if (!rc && first_code)
        rc = rlhi_err(first_code, "%llu model requests failed; the first: "
                      "%s", (unsigned long long)stats->failed,
                      first_err ? first_err : "?");
out:
    stats->seconds = rlhi_time_now() - t0;
    rlhi_free(first_err);
    rlhi_free(cands);
    return rc;
}
