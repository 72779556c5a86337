/* rlhi demo: world -> base model -> on-policy logs -> ingest -> feedback
 * -> personas -> pairs -> SFT / DPO variants -> simulated evaluation,
 * printed as a table shaped like the RLHI paper's and written as an HTML
 * report. See include/rlhi/demo.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "demo_internal.h"
#include "rlhi/dpo.h"
#include "rlhi/eval.h"
#include "rlhi/generate.h"
#include "rlhi/pairs.h"
#include "rlhi/sft.h"

/* Characters of conversation kept before a request in a prompt: about
 * 150 tokens with the demo's tokenizer, so prompt + two answers fit the
 * base model's 512 positions. */
#define PROMPT_CHARS 600
/* Reward-ranked pairs: candidates per request (the paper samples N). */
#define RANK_N 4
/* A ranked pair is kept when best - worst is at least one style point
 * of the judge (one dimension more in line with the persona). */
#define RANK_MIN_MARGIN 1.0

void rlhi_demo_opts_default(struct rlhi_demo_opts *o)
{
    memset(o, 0, sizeof *o);
    o->work_dir = "demo-out";
    o->seed = 1;
}

/* Everything one run holds. */
struct run {
    const struct rlhi_demo_opts *o;
    struct rlhi_demo_result *res;
    char *base_dir;
    char *world_dir;
    char *truth_path;
    struct rlhi_sim_truth truth;
    struct rlhi__demo_data data;
    struct rlhi_model *base;
    struct rlhi_tokenizer *tok;
    struct rlhi_judge judge;
    int max_tokens;     /* per generated answer */
    int cap;            /* pairs per training set at most */
    int epochs;
    double dpo_lr, sft_lr;
    char **base_answers; /* (truth.n_items) */
};

static char *wpath(const struct run *R, const char *name)
{
    char *p = rlhi_path_join(R->o->work_dir, name);

    if (!p)
        rlhi_err(RLHI_ENOMEM, "cannot build a path");
    return p;
}

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = RLHI_FNV64_INIT;

    h = rlhi_fnv64(h, &a, sizeof a);
    return rlhi_fnv64(h, &b, sizeof b);
}

/* The derived persona text of held-out item i's user, or NULL. */
static const char *item_persona(const struct run *R, int i)
{
    const char *key = R->truth.users[R->truth.items[i].user].hashed_ip;
    int u = rlhi__demo_user_find(&R->data, key);

    return u >= 0 ? R->data.users[u].persona : NULL;
}

static void free_answers(char **a, int n)
{
    int i;

    for (i = 0; a && i < n; i++)
        rlhi_free(a[i]);
    rlhi_free(a);
}

/* Answers every held-out request with model m (persona in the system
 * message when `persona`), sampling with a seed per item that is the same
 * for every model. */
static int answer_heldout(struct run *R, const struct rlhi_model *m,
                          bool persona, const char *label, char ***out)
{
    struct rlhi_eval_chatbot bot;
    struct rlhi_progress p;
    char **a;
    int i, r;

    *out = NULL;
    a = rlhi_calloc((size_t)R->truth.n_items + 1, sizeof *a);
    if (!a)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate answers");
    r = rlhi_eval_chatbot_init(&bot, m, R->tok, RLHI_CHAT_RLHI);
    bot.max_tokens = R->max_tokens;
    rlhi_progress_start(&p, label, (uint64_t)R->truth.n_items);
    for (i = 0; !r && i < R->truth.n_items; i++) {
        struct rlhi_chat_msg msgs[2];
        const char *pt = persona ? item_persona(R, i) : NULL, *reply;
        size_t n = 0;

        if (pt && *pt) {
            msgs[n].role = "system";
            msgs[n++].content = pt;
        }
        msgs[n].role = "user";
        msgs[n++].content = R->truth.items[i].req.text;
        r = rlhi_eval_chatbot_reply(&bot, msgs, n, mix(R->o->seed, (uint64_t)i),
                                    &reply);
        if (!r && !(a[i] = rlhi_strdup(reply)))
            r = rlhi_err(RLHI_ENOMEM, "cannot keep an answer");
        rlhi_progress_update(&p, (uint64_t)i + 1);
    }
    rlhi_progress_finish(&p);
    rlhi_eval_chatbot_release(&bot);
    if (r) {
        free_answers(a, R->truth.n_items);
        return r;
    }
    *out = a;
    return 0;
}

/* ---- stages ------------------------------------------------------------- */

static int stage_world(struct run *R)
{
    struct rlhi_sim_config c;
    struct rlhi_sim_stats st;
    char key[1024], *mark = NULL;
    char *old = NULL;
    size_t len;
    int r;

    rlhi_sim_config_default(&c);
    c.n_users = R->o->users;
    c.heldout_per_user = R->o->heldout;
    c.seed = R->o->seed;
    c.model_name = "rlhi-demo-base";
    R->world_dir = wpath(R, "world");
    if (!R->world_dir)
        return RLHI_ENOMEM;
    R->truth_path = rlhi_path_join(R->world_dir, "truth.jsonl");
    mark = rlhi_path_join(R->world_dir, "done.txt");
    if (!R->truth_path || !mark) {
        rlhi_free(mark);
        return rlhi_err(RLHI_ENOMEM, "cannot build a path");
    }
    snprintf(key, sizeof key, "base=%s users=%d heldout=%d seed=%llu "
             "max_tokens=%d sim=%d", R->base_dir, c.n_users,
             c.heldout_per_user, (unsigned long long)c.seed, R->max_tokens,
             RLHI_SIM_VERSION);
    if (!rlhi_file_read(mark, &old, &len) && !strcmp(old, key)) {
        rlhi_info("world: on-policy logs cached in '%s'", R->world_dir);
        rlhi_free(old);
        rlhi_free(mark);
        return 0;
    }
    rlhi_free(old);
    rlhi_err_clear();
    rlhi_info("world: %d simulated users chat with the base model "
              "(on-policy logs)", c.n_users);
    r = rlhi_demo_interact(R->base_dir, &c, -1, R->world_dir, &st);
    if (!r) {
        rlhi_info("world: %ld conversations, %ld user turns, %.1f%% of "
                  "follow-ups dissatisfied [simulated]", st.conversations,
                  st.user_turns, st.followups
                                     ? 100.0 * st.dissatisfied / st.followups
                                     : 0.0);
        r = rlhi_file_write_atomic(mark, key, strlen(key));
    }
    rlhi_free(mark);
    return r;
}

static int stage_pipeline(struct run *R)
{
    struct rlhi_store *s = NULL;
    struct rlhi_ingest_opts io = {0};
    struct rlhi_ingest_stats is;
    struct rlhi_feedback_opts fo = {0};
    struct rlhi_feedback_stats fs;
    struct rlhi_persona_opts po = {0};
    struct rlhi_persona_stats ps;
    struct rlhi_eval_persona_result pr;
    struct rlhi_eval_feedback_result fr;
    char *db = wpath(R, "store.db"), *logs = NULL, *side = NULL;
    const char *paths[1];
    int r, d, i;

    if (!db)
        return RLHI_ENOMEM;
    /* A fresh store each run: the logs may have changed. */
    {
        static const char *const sfx[] = {"", "-wal", "-shm"};

        for (i = 0; i < 3; i++) {
            size_t n = strlen(db) + 8;

            side = rlhi_malloc(n);
            if (side) {
                snprintf(side, n, "%s%s", db, sfx[i]);
                unlink(side);
                rlhi_free(side);
            }
        }
    }
    logs = rlhi_path_join(R->world_dir, "logs.jsonl");
    r = logs ? rlhi_store_open(&s, db) : RLHI_ENOMEM;
    if (r)
        goto out;
    paths[0] = logs;
    rlhi_info("pipeline: ingest '%s'", logs);
    r = rlhi_ingest(s, paths, 1, &io, &is);
    if (r)
        goto out;
    if (is.malformed)
        rlhi_warn("pipeline: %llu malformed records in the logs",
                  (unsigned long long)is.malformed);
    rlhi_info("pipeline: feedback detection");
    r = rlhi_feedback_run(s, &fo, &fs);
    if (r)
        goto out;
    rlhi_info("pipeline: personas");
    r = rlhi_persona_run(s, &po, &ps);
    if (r)
        goto out;
    rlhi_info("pipeline: %llu conversations, %llu labelled turns "
              "(%llu dissatisfied), %llu personas",
              (unsigned long long)is.inserted, (unsigned long long)fs.turns,
              (unsigned long long)fs.dissatisfied,
              (unsigned long long)ps.made);

    /* How right the pipeline was, against the hidden truth. */
    r = rlhi_eval_persona_accuracy(s, &R->truth, &pr);
    if (!r)
        r = rlhi_eval_feedback_prf(s, R->truth_path, &fr);
    if (r)
        goto out;
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        R->res->persona_acc[d] = pr.acc[d];
    R->res->fb_precision = rlhi_eval_precision(fr.dis_tp, fr.dis_fp);
    R->res->fb_recall = rlhi_eval_recall(fr.dis_tp, fr.dis_fn);
    R->res->fb_accuracy = fr.accuracy;
    R->res->conversations = (int)is.inserted;

    r = rlhi__demo_data_load(s, &R->data);
    if (r)
        goto out;
    /* The persona distribution, for the report. */
    {
        sqlite3_stmt *st;

        r = rlhi_store_prepare(s, &st, "SELECT expertise, informativeness, "
                               "tone, structure FROM personas WHERE "
                               "backend = 'builtin'");
        if (r)
            goto out;
        while (sqlite3_step(st) == SQLITE_ROW)
            for (d = 0; d < RLHI_SIM_NDIM; d++) {
                const char *v = (const char *)sqlite3_column_text(st, d);
                int side_v = v ? rlhi_sim_side_parse(d, v) : -1;

                R->res->persona_counts[d][side_v == 1 ? 0 : side_v == 0
                                                              ? 1 : 2]++;
            }
        sqlite3_finalize(st);
    }
out:
    rlhi_store_close(s);
    rlhi_free(db);
    rlhi_free(logs);
    return r;
}

/* Makes room for `need` messages in *m (capacity *cap). 0 or
 * RLHI_ENOMEM. */
static int grow_msgs(struct rlhi_chat_msg **m, int *cap, int need)
{
    void *p;

    if (need <= *cap)
        return 0;
    p = rlhi_realloc(*m, (size_t)need * sizeof **m);
    if (!p)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate a prompt");
    *m = p;
    *cap = need;
    return 0;
}

/* The prompt of pair source conversation c ending at req, as chat
 * messages (no persona); returns the count. `m` has room for req+2. */
static size_t prompt_msgs(const struct rlhi__demo_conv *c, int start, int req,
                          struct rlhi_chat_msg *m)
{
    size_t n = 0;
    int k;

    for (k = start; k <= req; k++) {
        m[n].role = c->role[k];
        m[n++].content = c->content[k];
    }
    return n;
}

/* The quality filter: the persona-aware judge prefers chosen over rejected
 * in both orders, and the two texts differ. */
static bool judge_keeps(struct run *R, const char *persona,
                        const struct rlhi_chat_msg *m, size_t n,
                        const char *chosen, const char *rejected)
{
    int p1 = 0, p2 = 0;

    if (!strcmp(chosen, rejected))
        return false;
    if (R->judge.compare(&R->judge, persona, m, n, chosen, rejected, &p1) ||
        R->judge.compare(&R->judge, persona, m, n, rejected, chosen, &p2))
        return false;
    return p1 > 0 && p2 < 0;
}

static const char *conv_persona(const struct run *R,
                                const struct rlhi__demo_conv *c)
{
    return c->user >= 0 ? R->data.users[c->user].persona : NULL;
}

static double judge_score(struct run *R, const char *persona,
                          const struct rlhi_chat_msg *m, size_t n,
                          const char *text)
{
    double s = 0;

    if (R->judge.score(&R->judge, persona, m, n, text, &s))
        return 0;
    return s;
}

/* Rewrite pairs from feedback turns (see pairs.c), and the regenerate
 * ablation's pairs from the same turns. */
static int build_rewrite(struct run *R, struct rlhi__demo_pairs *rw,
                         struct rlhi__demo_pairs *regen)
{
    struct rlhi_eval_chatbot bot;
    struct rlhi_chat_msg *m = NULL;
    int i, k, r, cap = 0;

    r = rlhi_eval_chatbot_init(&bot, R->base, R->tok, RLHI_CHAT_RLHI);
    if (r)
        return r;
    bot.max_tokens = R->max_tokens;
    for (i = 0; !r && i < R->data.n_conv; i++) {
        const struct rlhi__demo_conv *c = &R->data.conv[i];
        const char *persona = conv_persona(R, c);

        r = grow_msgs(&m, &cap, c->n + 2);
        if (r)
            break;
        for (k = 2; !r && k + 1 < c->n; k++) {
            int start, req = k - 2;
            size_t n;
            const char *regen_text;

            if (strcmp(c->role[k], "user") ||
                c->label[k] != RLHI_FB_REATTEMPT_FEEDBACK ||
                strcmp(c->role[k - 1], "assistant") ||
                strcmp(c->role[k + 1], "assistant") ||
                strcmp(c->role[req], "user"))
                continue;
            start = rlhi__demo_prompt_start(c, req, PROMPT_CHARS);
            n = prompt_msgs(c, start, req, m);
            r = rlhi__demo_pairs_add(rw, i, req, start, c->content[k + 1],
                                     c->content[k - 1],
                                     judge_score(R, persona, m, n,
                                                 c->content[k + 1]),
                                     judge_score(R, persona, m, n,
                                                 c->content[k - 1]));
            if (r)
                break;
            rw->p[rw->n - 1].kept = judge_keeps(R, persona, m, n,
                                                c->content[k + 1],
                                                c->content[k - 1]);
            if (regen->n >= R->cap)
                continue;
            /* Regenerate: a fresh answer to the same prompt, without the
             * feedback. */
            r = rlhi_eval_chatbot_reply(&bot, m, n, mix(R->o->seed ^ 0x5eed,
                                                        (uint64_t)rw->n),
                                        &regen_text);
            if (!r)
                r = rlhi__demo_pairs_add(regen, i, req, start, regen_text,
                                         c->content[k - 1],
                                         judge_score(R, persona, m, n,
                                                     regen_text),
                                         judge_score(R, persona, m, n,
                                                     c->content[k - 1]));
            if (!r)
                regen->p[regen->n - 1].kept =
                    judge_keeps(R, persona, m, n, regen_text,
                                c->content[k - 1]);
        }
    }
    rlhi_free(m);
    rlhi_eval_chatbot_release(&bot);
    return r;
}

/* Reward-ranked pairs: RANK_N samples for requests whose answer drew no
 * dissatisfied reply, scored by the persona-aware judge; best vs worst. */
static int build_rank(struct run *R, struct rlhi__demo_pairs *rk)
{
    struct rlhi_eval_chatbot bot;
    struct rlhi_chat_msg *m = NULL;
    struct rlhi_progress p;
    char *cand[RANK_N] = {0};
    uint64_t seeds[RANK_N];
    double sc[RANK_N];
    int i, k, j, r, cap = 0, tried = 0;

    r = rlhi_eval_chatbot_init(&bot, R->base, R->tok, RLHI_CHAT_RLHI);
    if (r)
        return r;
    bot.max_tokens = R->max_tokens;
    rlhi_progress_start(&p, "pairs: reward-ranked samples",
                        (uint64_t)R->cap);
    for (i = 0; !r && i < R->data.n_conv && tried < R->cap; i++) {
        const struct rlhi__demo_conv *c = &R->data.conv[i];
        const char *persona = conv_persona(R, c);

        r = grow_msgs(&m, &cap, c->n + 2);
        if (r)
            break;
        for (k = 0; !r && k + 1 < c->n && tried < R->cap; k++) {
            int start, best = 0, worst = 0, next = k + 2;
            size_t n, off = 0;

            if (strcmp(c->role[k], "user") ||
                (k > 0 && c->label[k] != RLHI_FB_NEW_REQUEST) ||
                (next < c->n && (c->label[next] == RLHI_FB_REATTEMPT_FEEDBACK
                                 || c->label[next] ==
                                        RLHI_FB_REATTEMPT_NO_GUIDANCE)))
                continue;
            start = rlhi__demo_prompt_start(c, k, PROMPT_CHARS);
            if (persona && *persona) {
                m[0].role = "system";
                m[0].content = persona;
                off = 1;
            }
            n = prompt_msgs(c, start, k, m + off);
            /* N candidates share the prompt's prefill and every decoding
             * pass over the weights. */
            for (j = 0; j < RANK_N; j++)
                seeds[j] = mix(R->o->seed + 77,
                               (uint64_t)(tried * RANK_N + j));
            r = rlhi_eval_chatbot_reply_n(&bot, m, n + off, seeds, RANK_N,
                                          cand);
            for (j = 0; !r && j < RANK_N; j++) {
                sc[j] = judge_score(R, persona, m + off, n, cand[j]);
                best = sc[j] > sc[best] ? j : best;
                worst = sc[j] < sc[worst] ? j : worst;
            }
            if (!r)
                r = rlhi__demo_pairs_add(rk, i, k, start, cand[best],
                                         cand[worst], sc[best], sc[worst]);
            if (!r)
                rk->p[rk->n - 1].kept =
                    sc[best] - sc[worst] >= RANK_MIN_MARGIN &&
                    strcmp(cand[best], cand[worst]);
            for (j = 0; j < RANK_N; j++) {
                rlhi_free(cand[j]);
                cand[j] = NULL;
            }
            tried++;
            rlhi_progress_update(&p, (uint64_t)tried);
        }
    }
    rlhi_progress_finish(&p);
    rlhi_free(m);
    rlhi_eval_chatbot_release(&bot);
    return r;
}

/* ---- training ----------------------------------------------------------- */

static int train_variant(struct run *R, const char *name, const char *file,
                         bool sft, bool no_persona, struct rlhi_model **out)
{
    struct rlhi_model *m = NULL;
    char *dir = wpath(R, name), *cache = wpath(R, "ref-cache");
    int r;

    *out = NULL;
    if (!dir || !cache) {
        r = RLHI_ENOMEM;
        goto done;
    }
    r = rlhi_model_load(&m, R->base_dir);
    if (r)
        goto done;
    /* The trainers append to metrics.jsonl; a rerun starts its curve
     * afresh. */
    {
        char *mp = rlhi_path_join(dir, "metrics.jsonl");

        if (mp)
            unlink(mp);
        rlhi_free(mp);
    }
    if (sft) {
        struct rlhi_sft_data d = {0};
        struct rlhi_sft_config c;
        struct rlhi_sft_result res;

        r = rlhi_sft_data_load(&d, file, R->tok, RLHI_CHAT_RLHI,
                               R->base->cfg.max_seq_len);
        rlhi_sft_config_init(&c);
        c.output_dir = dir;
        c.learning_rate = R->sft_lr;
        c.num_train_epochs = R->epochs;
        c.batch_size = 8;
        c.max_length = R->base->cfg.max_seq_len;
        c.seed = R->o->seed;
        c.logging_steps = 2;
        c.save_steps = 0;
        c.copy_from = R->base_dir;
        if (!r)
            r = rlhi_sft_train(m, &d, &c, &res);
        rlhi_sft_data_release(&d);
    } else {
        struct rlhi_dpo_data d = {0};
        struct rlhi_dpo_config c;
        struct rlhi_dpo_result res;

        r = rlhi_dpo_data_load(&d, file, R->tok, RLHI_CHAT_RLHI,
                               R->base->cfg.max_seq_len, no_persona);
        rlhi_dpo_config_init(&c);
        c.output_dir = dir;
        c.learning_rate = R->dpo_lr;
        c.num_train_epochs = R->epochs;
        c.batch_size = 8;
        c.max_length = R->base->cfg.max_seq_len;
        c.seed = R->o->seed;
        c.logging_steps = 2;
        c.save_steps = 0;
        c.ref_cache_dir = cache;
        c.copy_from = R->base_dir;
        /* Two rows per pair, as TRL: a shared row needs np + nc + nr + 1
         * positions, more than the tiny model's context holds for the
         * longer pairs, while each of chosen and rejected fits on its
         * own. */
        c.share = false;
        if (!r)
            r = rlhi_mkdir_p(cache);
        if (!r)
            r = rlhi_dpo_train(m, &d, &c, &res);
        rlhi_dpo_data_release(&d);
    }
done:
    if (r)
        rlhi_model_free(m);
    else
        *out = m;
    rlhi_free(dir);
    rlhi_free(cache);
    return r;
}

static struct rlhi_demo_row *add_row(struct rlhi_demo_result *res,
                                     const char *name)
{
    struct rlhi_demo_row *row = &res->rows[res->n_rows++];

    memset(row, 0, sizeof *row);
    snprintf(row->name, sizeof row->name, "%s", name);
    return row;
}

/* Marks a row "not run: <why>". */
static void row_skip(struct rlhi_demo_row *row, const char *why)
{
    row->run = false;
    snprintf(row->why, sizeof row->why, "not run: %s", why);
    rlhi_warn("%s: %s", row->name, row->why);
}

/* Trains one variant on `pairs` (kept only unless !filtered), evaluates
 * it against the base answers and fills the row. Failures of training
 * make the row "not run" with the reason; the demo goes on. */
static int run_row(struct run *R, const char *name, const char *dirname,
                   const struct rlhi__demo_pairs *pairs, bool filtered,
                   bool sft, bool no_persona, const char *source,
                   const bool *user_ok, struct rlhi_model **keep)
{
    struct rlhi_demo_row *row = add_row(R->res, name);
    struct rlhi__demo_pairs sel = {0};
    struct rlhi_model *m = NULL;
    struct rlhi_eval_sim_result ev;
    char file[64], *path = NULL, **ans = NULL;
    int i, n = 0, r = 0;

    /* The training set: kept pairs (or all), of the chosen users. */
    for (i = 0; i < pairs->n && !r; i++) {
        const struct rlhi__demo_pair *e = &pairs->p[i];

        if ((filtered && !e->kept) ||
            (user_ok && !user_ok[R->data.conv[e->conv].user]))
            continue;
        r = rlhi__demo_pairs_add(&sel, e->conv, e->req, e->start, e->chosen,
                                 e->rejected, e->cs, e->rs);
    }
    snprintf(file, sizeof file, "%s.jsonl", dirname);
    path = wpath(R, file);
    if (!r && path)
        r = rlhi__demo_pairs_write(&R->data, &sel, source, false, R->cap,
                                   sft, path, &n);
    rlhi__demo_pairs_release(&sel);
    if (r || !path)
        goto out;
    row->pairs = n;
    if (n == 0) {
        row_skip(row, "no pairs passed the filter");
        goto out;
    }
    rlhi_info("%s: training on %d pairs", name, n);
    r = train_variant(R, dirname, path, sft, no_persona, &m);
    if (r) {
        char why[160];

        snprintf(why, sizeof why, "training failed: %s", rlhi_errmsg());
        row_skip(row, why);
        r = 0;
        goto out;
    }
    r = answer_heldout(R, m, !no_persona, name, &ans);
    if (!r)
        r = rlhi_eval_sim_compare(&R->truth, ans, R->base_answers, 1000,
                                  R->o->seed, &ev);
    if (r)
        goto out;
    row->run = true;
    row->win = ev.win.rate;
    row->lo = ev.win.lo;
    row->hi = ev.win.hi;
    row->correct = ev.correct_a;
    snprintf(row->metrics, sizeof row->metrics, "%s/%s/metrics.jsonl",
             R->o->work_dir, dirname);
    rlhi_info("%s: win rate vs base %.1f%% (95%% CI %.1f-%.1f), correct "
              "%.1f%% [simulated]", name, 100 * row->win, 100 * row->lo,
              100 * row->hi, 100 * row->correct);
    if (keep) {
        *keep = m;
        m = NULL;
        R->res->arith_after = ev.arith_a;
        R->res->arith_before = ev.arith_b;
        R->res->arith_n = ev.n_arith;
    }
out:
    rlhi_model_free(m);
    free_answers(ans, R->truth.n_items);
    rlhi_free(path);
    return r;
}

/* True when `text` ends in a different number from `other`: the rewrite
 * changed the result, as after a correction. */
static bool number_changed(const char *text, const char *other)
{
    char a[64], b[64];

    return !rlhi_eval_final_number(text, a, sizeof a) &&
           !rlhi_eval_final_number(other, b, sizeof b) && strcmp(a, b);
}

static int stage_train(struct run *R)
{
    struct rlhi__demo_pairs rw = {0}, regen = {0}, rk = {0}, corr = {0};
    struct rlhi_demo_result *res = R->res;
    bool *heavy = NULL;
    int r, i, kept;

    rlhi_info("pairs: rewrites from feedback turns, regenerations, "
              "reward-ranked samples");
    r = build_rewrite(R, &rw, &regen);
    if (!r)
        r = build_rank(R, &rk);
    if (r)
        goto out;
    for (i = kept = 0; i < rw.n; i++)
        kept += rw.p[i].kept;
    rlhi_info("pairs: %d rewrite (%d kept by the filter), %d regenerate, "
              "%d ranked", rw.n, kept, regen.n, rk.n);

    /* The ten heaviest users (most conversations; ties by key). */
    heavy = rlhi_calloc((size_t)R->data.n_users + 1, sizeof *heavy);
    if (!heavy) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate users");
        goto out;
    }
    for (int pick = 0; pick < 10 && pick < R->data.n_users; pick++) {
        int best = -1;

        for (i = 0; i < R->data.n_users; i++)
            if (!heavy[i] && (best < 0 || R->data.users[i].n_conv >
                                              R->data.users[best].n_conv))
                best = i;
        heavy[best] = true;
    }

    r = run_row(R, "SFT on rewrites", "sft-rewrites", &rw, true, true,
                false, "rewrite", NULL, NULL);
    if (!r)
        r = run_row(R, "DPO without persona (user-agnostic)",
                    "dpo-no-persona", &rw, true, false, true, "rewrite",
                    NULL, NULL);
    if (!r)
        r = run_row(R, "RLHI: user-guided rewrites", "rlhi-rewrites", &rw,
                    true, false, false, "rewrite", NULL, NULL);
    if (!r)
        r = run_row(R, "RLHI: user-based rewards", "rlhi-rewards", &rk,
                    true, false, false, "rank", NULL, NULL);
    if (!r)
        r = run_row(R, "ablation: regenerate instead of rewrite",
                    "ablation-regenerate", &regen, true, false, false,
                    "rewrite", NULL, NULL);
    if (!r)
        r = run_row(R, "ablation: no quality filter", "ablation-no-filter",
                    &rw, false, false, false, "rewrite", NULL, NULL);
    if (!r)
        r = run_row(R, "ablation: 10 heaviest users only",
                    "ablation-heavy-users", &rw, true, false, false,
                    "rewrite", heavy, NULL);
    if (r)
        goto out;

    /* Reasoning: pairs where the user's feedback changed the number. */
    for (i = 0; !r && i < rw.n; i++) {
        const struct rlhi__demo_pair *e = &rw.p[i];

        if (number_changed(e->chosen, e->rejected))
            r = rlhi__demo_pairs_add(&corr, e->conv, e->req, e->start,
                                     e->chosen, e->rejected, e->cs, e->rs);
    }
    if (r)
        goto out;
    res->arith_pairs = corr.n;
    if (!corr.n) {
        snprintf(res->reasoning_why, sizeof res->reasoning_why,
                 "not run: no corrected answers in the logs");
    } else {
        struct rlhi_model *m = NULL;
        int before = res->n_rows;

        r = run_row(R, "reasoning: DPO on corrected answers",
                    "reasoning-corrections", &corr, false, false, false,
                    "rewrite", NULL, &m);
        res->reasoning_run = m != NULL;
        res->arith_pairs = res->rows[res->n_rows - 1].pairs;
        if (!m && res->n_rows > before)
            snprintf(res->reasoning_why, sizeof res->reasoning_why, "%s",
                     res->rows[res->n_rows - 1].why);
        /* The reasoning result has its own line, not a table row. */
        res->n_rows = before;
        rlhi_model_free(m);
    }
out:
    rlhi_free(heavy);
    rlhi__demo_pairs_release(&rw);
    rlhi__demo_pairs_release(&regen);
    rlhi__demo_pairs_release(&rk);
    rlhi__demo_pairs_release(&corr);
    return r;
}

/* ---- report ------------------------------------------------------------- */

int rlhi_demo_table_write(const struct rlhi_demo_result *res, FILE *f)
{
    int i, d;

    fprintf(f, "\nRLHI demo results [simulated world: %d users, %d "
            "conversations, %d held-out requests]\n\n", res->users,
            res->conversations, res->heldout);
    fprintf(f, "| %-42s | %-40s | %-11s | %-5s |\n", "model",
            "personalisation win rate vs base (95% CI)", "correctness",
            "pairs");
    fprintf(f, "|%.44s|%.42s|%.13s|%.7s|\n",
            "--------------------------------------------",
            "------------------------------------------",
            "-------------", "-------");
    for (i = 0; i < res->n_rows; i++) {
        const struct rlhi_demo_row *r = &res->rows[i];
        char win[64], cor[32], np[16];

        if (r->run) {
            snprintf(win, sizeof win, "%.1f%% (%.1f-%.1f)", 100 * r->win,
                     100 * r->lo, 100 * r->hi);
            snprintf(cor, sizeof cor, "%.1f%%", 100 * r->correct);
        } else {
            snprintf(win, sizeof win, "%s", r->why);
            snprintf(cor, sizeof cor, "-");
        }
        snprintf(np, sizeof np, "%d", r->pairs);
        fprintf(f, "| %-42s | %-40s | %-11s | %-5s |\n", r->name, win, cor,
                i ? np : "-");
    }
    if (res->reasoning_run)
        fprintf(f, "\nreasoning (arithmetic accuracy on %d held-out "
                "arithmetic requests): before %.1f%%, after DPO on %d "
                "corrected answers %.1f%% [simulated]\n", res->arith_n,
                100 * res->arith_before, res->arith_pairs,
                100 * res->arith_after);
    else
        fprintf(f, "\nreasoning: %s\n", res->reasoning_why);
    fprintf(f, "\nbase model: %lld parameters, SFT loss %.3f%s; follows "
            "feedback %.0f%% (", (long long)res->base.n_params,
            res->base.final_loss, res->base.cached ? " (cached)" : "",
            100 * res->quality.follow);
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        fprintf(f, "%s%s %.0f%%", d ? ", " : "", rlhi_sim_dim_name(d),
                100 * res->quality.follow_dim[d]);
    fprintf(f, "), style readable %.0f%%, answers right %.0f%% / wrong "
            "%.0f%% (n=%d) [simulated]\n", 100 * res->quality.readable,
            100 * res->quality.correct, 100 * res->quality.wrong,
            res->quality.n);
    fprintf(f, "pipeline vs truth: feedback (dissatisfied) precision %.1f%% "
            "recall %.1f%%, label accuracy %.1f%%; persona accuracy",
            100 * res->fb_precision, 100 * res->fb_recall,
            100 * res->fb_accuracy);
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        fprintf(f, "%s %s %.0f%%", d ? "," : "", rlhi_sim_dim_name(d),
                100 * res->persona_acc[d]);
    fprintf(f, " [simulated]\nwall time %.0f s; report: %s\n", res->seconds,
            res->report_path);
    return ferror(f) ? rlhi_err(RLHI_EIO, "cannot write the table") : 0;
}

static void html_esc(struct rlhi_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            rlhi_buf_adds(b, "&lt;");
        else if (*s == '>')
            rlhi_buf_adds(b, "&gt;");
        else if (*s == '&')
            rlhi_buf_adds(b, "&amp;");
        else
            rlhi_buf_addc(b, *s);
    }
}

/* An inline SVG polyline of the "loss" values of a metrics.jsonl file. */
static void svg_loss(struct rlhi_buf *b, const char *path, const char *title)
{
    char *data = NULL, *p;
    size_t len;
    double v[512], lo = 1e30, hi = -1e30;
    int n = 0, i;

    if (rlhi_file_read(path, &data, &len)) {
        rlhi_err_clear();
        return;
    }
    for (p = data; n < 512 && (p = strstr(p, "\"loss\":")); p++)
        if (sscanf(p + 7, "%lf", &v[n]) == 1)
            n++;
    rlhi_free(data);
    if (n < 2)
        return;
    for (i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    if (hi - lo < 1e-9)
        hi = lo + 1;
    rlhi_buf_adds(b, "<figure><svg width='320' height='140' "
                     "style='border:1px solid #ccc'><polyline fill='none' "
                     "stroke='#2060c0' stroke-width='1.5' points='");
    for (i = 0; i < n; i++)
        rlhi_buf_addf(b, "%.1f,%.1f ", 10 + 300.0 * i / (n - 1),
                      10 + 110.0 * (hi - v[i]) / (hi - lo));
    rlhi_buf_addf(b, "'/><text x='12' y='134' font-size='10'>loss %.3f to "
                  "%.3f over %d logged steps</text></svg><figcaption>",
                  v[0], v[n - 1], n);
    html_esc(b, title);
    rlhi_buf_adds(b, "</figcaption></figure>\n");
}

static int write_report(const struct run *R, const char *path)
{
    const struct rlhi_demo_result *res = R->res;
    struct rlhi_buf b = RLHI_BUF_INIT;
    char *base_metrics = rlhi_path_join(R->base_dir, "metrics.jsonl");
    int i, d, r;

    rlhi_buf_adds(&b, "<!doctype html><html><head><meta charset='utf-8'>"
                      "<title>rlhi demo [simulated]</title><style>body{"
                      "font-family:sans-serif;max-width:960px;margin:2em "
                      "auto}td,th{border:1px solid #ccc;padding:4px 8px}"
                      "table{border-collapse:collapse}figure{display:"
                      "inline-block;margin:8px}</style></head><body>\n"
                      "<h1>rlhi demo</h1><p><b>All numbers come from the "
                      "simulated world</b> (docs/SIMULATION.md): users with "
                      "known hidden preferences chat with a tiny model; a "
                      "judge that knows their true personas scores answers. "
                      "They say whether the machinery recovers what was "
                      "planted, not how real users behave.</p>\n");
    rlhi_buf_addf(&b, "<p>%d users, %d conversations, %d held-out "
                  "requests; seed %llu; wall time %.0f s.</p>\n", res->users,
                  res->conversations, res->heldout,
                  (unsigned long long)R->o->seed, res->seconds);
    rlhi_buf_adds(&b, "<h2>Results</h2><table><tr><th>model</th><th>"
                      "personalisation win rate vs base (95% CI)</th><th>"
                      "correctness</th><th>pairs</th></tr>\n");
    for (i = 0; i < res->n_rows; i++) {
        const struct rlhi_demo_row *row = &res->rows[i];

        rlhi_buf_adds(&b, "<tr><td>");
        html_esc(&b, row->name);
        if (row->run)
            rlhi_buf_addf(&b, "</td><td>%.1f%% (%.1f&ndash;%.1f)</td><td>"
                          "%.1f%%</td><td>%d</td></tr>\n", 100 * row->win,
                          100 * row->lo, 100 * row->hi, 100 * row->correct,
                          row->pairs);
        else {
            rlhi_buf_adds(&b, "</td><td colspan='3'>");
            html_esc(&b, row->why);
            rlhi_buf_adds(&b, "</td></tr>\n");
        }
    }
    rlhi_buf_adds(&b, "</table>\n<h2>Reasoning</h2><p>");
    if (res->reasoning_run)
        rlhi_buf_addf(&b, "Arithmetic accuracy on %d held-out arithmetic "
                      "requests: %.1f%% before, %.1f%% after DPO on %d "
                      "answers users corrected.", res->arith_n,
                      100 * res->arith_before, 100 * res->arith_after,
                      res->arith_pairs);
    else
        html_esc(&b, res->reasoning_why);
    rlhi_buf_adds(&b, "</p>\n<h2>Base model</h2>");
    rlhi_buf_addf(&b, "<p>%lld parameters, final SFT loss %.3f. Follows "
                  "feedback in %.0f%% of %d tries; style readable %.0f%%; "
                  "answers right %.0f%%, wrong %.0f%%.</p>\n",
                  (long long)res->base.n_params, res->base.final_loss,
                  100 * res->quality.follow, res->quality.n,
                  100 * res->quality.readable, 100 * res->quality.correct,
                  100 * res->quality.wrong);
    rlhi_buf_adds(&b, "<h2>Training loss</h2>\n");
    if (base_metrics)
        svg_loss(&b, base_metrics, "base model SFT");
    for (i = 0; i < res->n_rows; i++)
        if (res->rows[i].run && res->rows[i].metrics[0])
            svg_loss(&b, res->rows[i].metrics, res->rows[i].name);
    rlhi_buf_adds(&b, "<h2>Pipeline against the truth</h2>");
    rlhi_buf_addf(&b, "<p>Feedback detection (dissatisfied turns): "
                  "precision %.1f%%, recall %.1f%%; label accuracy "
                  "%.1f%%.</p><table><tr><th>dimension</th><th>persona "
                  "accuracy</th><th>high</th><th>low</th><th>no signal"
                  "</th></tr>\n", 100 * res->fb_precision,
                  100 * res->fb_recall, 100 * res->fb_accuracy);
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        rlhi_buf_addf(&b, "<tr><td>%s</td><td>%.1f%%</td><td>%s %d</td><td>"
                      "%s %d</td><td>%d</td></tr>\n", rlhi_sim_dim_name(d),
                      100 * res->persona_acc[d], rlhi_sim_side_name(d, 1),
                      res->persona_counts[d][0], rlhi_sim_side_name(d, 0),
                      res->persona_counts[d][1], res->persona_counts[d][2]);
    rlhi_buf_adds(&b, "</table>\n<h2>Persona distribution</h2>\n");
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        int tot = res->persona_counts[d][0] + res->persona_counts[d][1] +
                  res->persona_counts[d][2];

        rlhi_buf_addf(&b, "<div>%-16s <svg width='300' height='14'>",
                      rlhi_sim_dim_name(d));
        if (tot) {
            double x = 0;
            static const char *const col[] = {"#2060c0", "#c06020", "#aaa"};

            for (i = 0; i < 3; i++) {
                double w = 300.0 * res->persona_counts[d][i] / tot;

                rlhi_buf_addf(&b, "<rect x='%.1f' y='0' width='%.1f' "
                              "height='14' fill='%s'/>", x, w, col[i]);
                x += w;
            }
        }
        rlhi_buf_addf(&b, "</svg> %s / %s / no signal</div>\n",
                      rlhi_sim_side_name(d, 1), rlhi_sim_side_name(d, 0));
    }
    rlhi_buf_adds(&b, "</body></html>\n");
    rlhi_free(base_metrics);
    if (!b.buf)
        return rlhi_err(RLHI_ENOMEM, "cannot build the report");
    r = rlhi_file_write_atomic(path, b.buf, b.len);
    rlhi_buf_release(&b);
    return r;
}

/* ---- the run ------------------------------------------------------------ */

int rlhi_demo_run(const struct rlhi_demo_opts *o, struct rlhi_demo_result *res)
{
    struct rlhi_demo_opts oo = *o;
    struct rlhi_demo_base_opts bo;
    struct rlhi_demo_row *row;
    struct run R;
    char *report = NULL;
    double t0 = rlhi_time_now();
    int r;

    memset(res, 0, sizeof *res);
    memset(&R, 0, sizeof R);
    rlhi_demo_base_opts_default(&bo);
    bo.seed = o->seed;
    /* Quick defaults, sized for about ten minutes on two idle cores:
     * base SFT ~3 min (training runs at ~2k tokens/s there), 60 users'
     * on-policy logs, 80 pairs per variant for 2 epochs, 128-token
     * answers. The learning rates suit a 1M-parameter model trained from
     * scratch at 3e-3; 1e-6 (TRL's DPO default for 8B models) would not
     * move it in 20 steps. */
    R.max_tokens = 128;
    R.cap = 80;
    R.epochs = 2;
    R.dpo_lr = 3e-4;
    R.sft_lr = 3e-4;
    if (!oo.users)
        oo.users = 60;
    /* 6 held-out requests per user: 360 in the quick run, so that a win
     * rate's 95% interval is about +-4.5 points (2 per user gave +-7.5,
     * too wide to order the variants); answering them is cheap. */
    if (!oo.heldout)
        oo.heldout = o->tiny ? 2 : 6;
    if (o->full) {
        bo.conversations = 20000;
        bo.sft_steps = 1200;
        R.max_tokens = 160;
        R.cap = 400;
        R.epochs = 3;
        if (!o->users)
            oo.users = 200;
    }
    if (o->tiny) {
        bo.conversations = 200;
        bo.vocab_size = 320;
        bo.dim = 32;
        bo.hidden_dim = 64;
        bo.n_layers = 1;
        bo.n_heads = 2;
        bo.max_seq_len = 256;
        bo.sft_steps = 4;
        bo.batch_size = 4;
        bo.max_length = 128;
        R.max_tokens = 16;
        R.cap = 8;
        R.epochs = 1;
        if (!o->users)
            oo.users = 6;
    }
    if (o->base_steps > 0)
        bo.sft_steps = o->base_steps;
    if (o->train_epochs > 0)
        R.epochs = o->train_epochs;
    R.o = &oo;
    R.res = res;
    rlhi_judge_style(&R.judge);

    r = rlhi_mkdir_p(oo.work_dir);
    if (r)
        goto out;
    rlhi_info("demo [simulated world]: work dir '%s', seed %llu, %d users",
              oo.work_dir, (unsigned long long)oo.seed, oo.users);

    /* 1. Base model, and how well it follows feedback. */
    r = rlhi_demo_base_model(&bo, oo.work_dir, &R.base_dir, &res->base);
    if (r)
        goto out;
    r = rlhi_demo_base_quality(R.base_dir, o->tiny ? 2 : 24, oo.seed + 1000,
                               &res->quality);
    if (r)
        goto out;
    rlhi_info("base model: follows feedback %.0f%%, style readable %.0f%%, "
              "right %.0f%% [simulated]", 100 * res->quality.follow,
              100 * res->quality.readable, 100 * res->quality.correct);
    r = rlhi_generate_load(R.base_dir, NULL, &R.base, &R.tok);
    if (r)
        goto out;

    /* 2. On-policy logs, 3. the pipeline. */
    r = stage_world(&R);
    if (!r)
        r = rlhi_sim_truth_load(R.truth_path, &R.truth);
    if (r)
        goto out;
    res->heldout = R.truth.n_items;
    res->users = R.truth.n_users;
    r = stage_pipeline(&R);
    if (r)
        goto out;

    /* 4. The base row: its own answers are the reference. */
    r = answer_heldout(&R, R.base, true, "eval: base", &R.base_answers);
    if (r)
        goto out;
    row = add_row(res, "base");
    {
        struct rlhi_eval_sim_result ev;

        r = rlhi_eval_sim_compare(&R.truth, R.base_answers, R.base_answers,
                                  1000, oo.seed, &ev);
        if (r)
            goto out;
        row->run = true;
        row->win = ev.win.rate;
        row->lo = ev.win.lo;
        row->hi = ev.win.hi;
        row->correct = ev.correct_a;
    }

    /* 5. Pairs, training, evaluation. */
    r = stage_train(&R);
    if (r)
        goto out;

    res->seconds = rlhi_time_now() - t0;
    report = wpath(&R, "report.html");
    if (!report) {
        r = RLHI_ENOMEM;
        goto out;
    }
    snprintf(res->report_path, sizeof res->report_path, "%s", report);
    r = write_report(&R, report);
out:
    res->seconds = rlhi_time_now() - t0;
    rlhi_free(report);
    free_answers(R.base_answers, R.truth.n_items);
    rlhi__demo_data_release(&R.data);
    rlhi_sim_truth_release(&R.truth);
    rlhi_model_free(R.base);
    rlhi_tokenizer_free(R.tok);
    rlhi_free(R.base_dir);
    rlhi_free(R.world_dir);
    rlhi_free(R.truth_path);
    return r;
}
