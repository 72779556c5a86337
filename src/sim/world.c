/* The simulated world: users with hidden personas hold conversations with
 * an answerer (the scripted assistant or a real model), and the world
 * writes the logs in WildChat's schema and the hidden truth beside them.
 *
 * Determinism. Every user and every conversation draws from its own
 * generator, seeded from (seed, user, conversation), so the bytes do not
 * depend on anything but the configuration and the answers; the answerer
 * gets its own stream per conversation.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sim_internal.h"

void rlhi_sim_config_default(struct rlhi_sim_config *c)
{
    memset(c, 0, sizeof *c);
    c->n_users = 200;
    c->seed = 1;
    c->heldout_per_user = 2;
    /* Log-normal counts: median e^0.8 = 2.2 conversations, a tail of a few
     * heavy users (p99 about 33) capped at 60, as the long tail of
     * WildChat's users (most come once or twice, a few hundreds of times;
     * scaled down to what two cores can train on). */
    c->max_conversations = 60;
    c->conv_mu = 0.8;
    c->conv_sigma = 1.15;
    c->model_name = "rlhi-sim-scripted";
    /* Tuned with the scripted assistant (random styles, 10% errors) so
     * that 26% of follow-up user turns are feedback (WildChat: 26.5%);
     * see docs/SIMULATION.md for the measured shares. */
    c->beh.p_feedback = 0.115;
    c->beh.p_no_guidance = 0.03;
    c->beh.p_correction = 0.50;
    c->beh.p_end = 0.40;
    c->beh.p_positive = 0.20;
    c->beh.p_continue = 0.15;
    c->beh.p_other = 0.06;
    c->beh.typo_rate = 0.08;
    /* Without cues in requests, a user with a few conversations and no
     * explicit feedback reveals nothing, and derived personas were "no
     * signal" for 50-57 of 60 users per dimension in the demo. 0.3 makes
     * about a third of first requests state each preference. */
    c->beh.p_cue = 0.3;
    c->beh.max_user_turns = 6;
}

/* ---- the scripted assistant ----------------------------------------- */

void rlhi_sim_scripted_init(struct rlhi_sim_scripted *s)
{
    memset(s, 0, sizeof *s);
    s->error_rate = 0.10;
    s->p_follow = 0.90;
    s->p_ask = 0.04;
}

void rlhi_sim_scripted_release(struct rlhi_sim_scripted *s)
{
    rlhi_buf_release(&s->out);
}

static const char *const formal_welcome[] = {
    "You are welcome. Please let me know if you require anything else.",
    "I am glad this was helpful.",
};
static const char *const casual_welcome[] = {
    "Anytime!", "No problem, happy to help!", "Glad it helped!",
};

const char *rlhi_sim_scripted_answer(void *ctx,
                                     const struct rlhi_sim_msg *history,
                                     int n, struct rlhi_sim_ask *ask)
{
    struct rlhi_sim_scripted *s = ctx;
    const struct rlhi_sim_reaction *re = ask->reaction;
    struct rlhi_rng *r = ask->rng;
    struct rlhi_sim_style st;
    int err, d;

    (void)history;
    (void)n;
    rlhi_buf_clear(&s->out);
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        ask->out_style.v[d] = -1;
    ask->out_error = 0;
    rlhi_sim_style_random(&st, r);
    err = rlhi_rng_double(r) < s->error_rate;

    if (!re || re->label == RLHI_SIM_L_NEW_REQUEST ||
        re->label == RLHI_SIM_L_CONTINUE || !ask->prev_style) {
        /* New content for a new request or a continuation; revisions
         * keep the content so that they state the same facts. */
        s->content = rlhi_rng_u64(r);
    }
    if (!re || re->label == RLHI_SIM_L_NEW_REQUEST) {
        if (ask->req->kind == RLHI_SIM_FACTS &&
            rlhi_rng_double(r) < s->p_ask) {
            if (rlhi_buf_addf(&s->out, "Would you like a brief overview or "
                                       "a detailed explanation of %s?",
                              rlhi__topics[ask->req->topic].phrase))
                goto nomem;
            return s->out.buf;
        }
    } else if (re->label == RLHI_SIM_L_POSITIVE ||
               re->label == RLHI_SIM_L_OTHER) {
        bool formal = ask->prev_style && ask->prev_style->v[RLHI_SIM_TONE] == 1;

        if (rlhi_buf_adds(&s->out, formal ? RLHI__PICK(formal_welcome, r)
                                          : RLHI__PICK(casual_welcome, r)))
            goto nomem;
        return s->out.buf;
    } else if (re->label == RLHI_SIM_L_REATTEMPT_FEEDBACK && ask->prev_style &&
               ask->prev_style->v[0] >= 0) {
        /* Revise: keep the style, fix the error or move the one dimension
         * the user asked about (most of the time). */
        st = *ask->prev_style;
        if (re->correction) {
            err = 0;
        } else {
            err = ask->prev_error;
            if (re->dim >= 0 && rlhi_rng_double(r) < s->p_follow)
                st.v[re->dim] = (int8_t)re->target;
        }
    } else if (re->label == RLHI_SIM_L_CLARIFICATION) {
        if (re->dim >= 0)
            st.v[re->dim] = (int8_t)re->target;
    } else if (re->label == RLHI_SIM_L_CONTINUE && ask->prev_style &&
               ask->prev_style->v[0] >= 0) {
        st = *ask->prev_style;
    }
    if (rlhi_sim_answer_write_content(ask->req, &st, err, s->content, r,
                                      &s->out))
        goto nomem;
    ask->out_style = st;
    ask->out_error = err;
    return s->out.buf;

nomem:
    rlhi_err(RLHI_ENOMEM, "cannot write a scripted answer");
    return NULL;
}

/* ---- seeds, names and time ------------------------------------------ */

static uint64_t derive(uint64_t seed, uint64_t a, uint64_t b, uint64_t tag)
{
    uint64_t v[4] = {seed, a, b, tag};

    return rlhi_fnv64(RLHI_FNV64_INIT, v, sizeof v);
}

static void hex_id(uint64_t seed, const char *what, long a, long b,
                   char *out, size_t len)
{
    char in[128], hex[65];

    snprintf(in, sizeof in, "rlhi-sim/%llu/%s/%ld/%ld",
             (unsigned long long)seed, what, a, b);
    rlhi_sha256_hex(in, strlen(in), hex);
    hex[len] = 0;
    memcpy(out, hex, len + 1);
}

/* 2024-01-01T00:00:00Z: the simulated logs start here. */
#define EPOCH_2024 1704067200LL

static void iso_time(long long t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

/* ---- writers -------------------------------------------------------- */

struct out_file {
    FILE *f;
    char *path;
};

static int out_open(struct out_file *o, const char *dir, const char *name)
{
    o->path = rlhi_path_join(dir, name);
    if (!o->path)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate a path");
    o->f = fopen(o->path, "wb");
    if (!o->f)
        return rlhi_err_errno(RLHI_EIO, "cannot create '%s'", o->path);
    return 0;
}

static int out_put(struct out_file *o, struct rlhi_buf *b)
{
    if (b->len && fwrite(b->buf, 1, b->len, o->f) != b->len)
        return rlhi_err_errno(RLHI_EIO, "cannot write '%s'", o->path);
    rlhi_buf_clear(b);
    return 0;
}

static int out_close(struct out_file *o, int rc)
{
    if (o->f) {
        if (fclose(o->f) && rc >= 0)
            rc = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", o->path);
    }
    rlhi_free(o->path);
    o->f = NULL;
    o->path = NULL;
    return rc;
}

static int put_persona(struct rlhi_buf *b, const struct rlhi_sim_persona *p)
{
    int d, r = rlhi_buf_adds(b, "{");

    for (d = 0; d < RLHI_SIM_NDIM && !r; d++)
        r = rlhi_buf_addf(b, "%s\"%s\":\"%s\"", d ? "," : "",
                          rlhi_sim_dim_name(d),
                          p->pref[d] ? rlhi_sim_side_name(d, p->pref[d] > 0)
                                     : "any");
    return r ? r : rlhi_buf_adds(b, "}");
}

static int put_style(struct rlhi_buf *b, const struct rlhi_sim_style *s)
{
    int d, r = rlhi_buf_adds(b, "{");

    for (d = 0; d < RLHI_SIM_NDIM && !r; d++)
        r = rlhi_buf_addf(b, "%s\"%s\":\"%s\"", d ? "," : "",
                          rlhi_sim_dim_name(d),
                          rlhi_sim_side_name(d, s->v[d]));
    return r ? r : rlhi_buf_adds(b, "}");
}

static int put_str(struct rlhi_buf *b, const char *s)
{
    return rlhi_buf_add_json_str(b, s, strlen(s));
}

/* ---- one conversation ----------------------------------------------- */

#define MAX_MSGS 64

struct conv {
    struct rlhi_sim_msg msg[MAX_MSGS];
    char *own[MAX_MSGS];
    struct rlhi_sim_reaction react[MAX_MSGS]; /* user turns */
    struct rlhi_sim_style style[MAX_MSGS];    /* assistant turns */
    int error[MAX_MSGS];
    int correct[MAX_MSGS];
    int n;
};

static void conv_clear(struct conv *c)
{
    int i;

    for (i = 0; i < c->n; i++)
        rlhi_free(c->own[i]);
    c->n = 0;
}

static int conv_add(struct conv *c, const char *role, const char *text)
{
    char *s = rlhi_strdup(text);

    if (!s)
        return rlhi_err(RLHI_ENOMEM, "cannot copy a message");
    c->own[c->n] = s;
    c->msg[c->n].role = role;
    c->msg[c->n].content = s;
    c->n++;
    return 0;
}

struct user {
    char ip[65];
    struct rlhi_sim_persona persona;
    double propensity; /* how readily this user gives feedback */
    int nconv;
    long long t0;
};

struct world {
    const struct rlhi_sim_config *cfg;
    rlhi_sim_answer_fn fn;
    void *ctx;
    struct out_file logs, truth, users, heldout;
    struct rlhi_buf line;
    struct conv conv;
    struct rlhi_sim_stats *st;
};

static int write_conv(struct world *w, const struct user *u, const char *hash,
                      long long t)
{
    struct conv *c = &w->conv;
    struct rlhi_buf *b = &w->line;
    char ts[32];
    int i, r = 0, turns = (c->n + 1) / 2;
    long long tm = t;
    long tid = 0;

    /* The WildChat record: conversation-level keys, then the turns. */
    iso_time(t, ts);
    r |= rlhi_buf_adds(b, "{\"conversation_hash\":");
    r |= put_str(b, hash);
    r |= rlhi_buf_adds(b, ",\"model\":");
    r |= put_str(b, w->cfg->model_name ? w->cfg->model_name : "unknown");
    r |= rlhi_buf_addf(b, ",\"timestamp\":\"%s\",\"conversation\":[", ts);
    for (i = 0; i < c->n; i++) {
        bool user = !strcmp(c->msg[i].role, "user");

        /* Each user turn and its answer share a turn_identifier. */
        if (user)
            tid = (long)(derive(w->cfg->seed, (uint64_t)tm, (uint64_t)i, 7) %
                         90000000ULL) + 10000000L;
        iso_time(tm, ts);
        r |= rlhi_buf_adds(b, i ? ",{\"content\":" : "{\"content\":");
        r |= put_str(b, c->msg[i].content);
        r |= rlhi_buf_adds(b, ",\"hashed_ip\":");
        if (user)
            r |= put_str(b, u->ip);
        else
            r |= rlhi_buf_adds(b, "null");
        r |= rlhi_buf_addf(b, ",\"language\":\"English\",\"role\":\"%s\","
                              "\"timestamp\":\"%s\",\"toxic\":false,"
                              "\"turn_identifier\":%ld}",
                           c->msg[i].role, ts, tid);
        tm += 20 + (long long)(strlen(c->msg[i].content) % 97);
    }
    r |= rlhi_buf_addf(b, "],\"turn\":%d,\"language\":\"English\","
                          "\"toxic\":false,\"redacted\":false,"
                          "\"hashed_ip\":", turns);
    r |= put_str(b, u->ip);
    r |= rlhi_buf_adds(b, "}\n");
    if (r)
        return rlhi_err(RLHI_ENOMEM, "cannot format a conversation");
    r = out_put(&w->logs, b);
    if (r)
        return r;

    /* The truth: a label for every user message, a style for every
     * answer, keyed by the 0-based message index. */
    for (i = 0; i < c->n && !r; i++) {
        r |= rlhi_buf_adds(b, "{\"type\":");
        if (!strcmp(c->msg[i].role, "user")) {
            const struct rlhi_sim_reaction *x = &c->react[i];

            r |= rlhi_buf_adds(b, "\"turn\",\"conversation_hash\":");
            r |= put_str(b, hash);
            r |= rlhi_buf_addf(b, ",\"turn_index\":%d,\"label\":\"%s\","
                                  "\"dissatisfied\":%s,\"actionable\":%s",
                               i, rlhi_sim_label_name(x->label),
                               x->dissatisfied ? "true" : "false",
                               x->actionable ? "true" : "false");
            if (x->correction)
                r |= rlhi_buf_adds(b, ",\"correction\":true");
            if (x->dim >= 0)
                r |= rlhi_buf_addf(b, ",\"dimension\":\"%s\","
                                      "\"target\":\"%s\"",
                                   rlhi_sim_dim_name(x->dim),
                                   rlhi_sim_side_name(x->dim, x->target));
        } else {
            struct rlhi_sim_reading rd;
            static const char *const cn[] = {"wrong", "absent", "right"};

            rlhi_sim_style_read(c->msg[i].content, &rd);
            r |= rlhi_buf_adds(b, "\"answer\",\"conversation_hash\":");
            r |= put_str(b, hash);
            r |= rlhi_buf_addf(b, ",\"turn_index\":%d,\"read\":", i);
            r |= put_style(b, &rd.style);
            if (c->style[i].v[0] >= 0) {
                r |= rlhi_buf_adds(b, ",\"intended\":");
                r |= put_style(b, &c->style[i]);
                r |= rlhi_buf_addf(b, ",\"error\":%s",
                                   c->error[i] ? "true" : "false");
            }
            r |= rlhi_buf_addf(b, ",\"correct\":\"%s\"",
                               cn[c->correct[i] + 1]);
        }
        r |= rlhi_buf_adds(b, ",\"hashed_ip\":");
        r |= put_str(b, u->ip);
        r |= rlhi_buf_adds(b, "}\n");
    }
    if (r)
        return rlhi_err(RLHI_ENOMEM, "cannot format the truth");
    return out_put(&w->truth, b);
}

/* Phrasings that state a preference in a request, per dimension and side
 * (index 0: the low side, 1: the high side, as persona.pref -1 / +1). */
static const char *const cue_text[RLHI_SIM_NDIM][2][2] = {
    {{"Explain it in simple terms.", "I'm new to this, keep it "
      "beginner-friendly."},
     {"I want the technical details.", "Include the implementation "
      "details."}},
    {{"Keep it brief.", "A short answer is fine."},
     {"Please explain in detail.", "Give me a thorough answer."}},
    {{"Keep it casual.", "Feel free to be conversational."},
     {"Please keep it formal.", "Use a professional tone."}},
    {{"Write it as one paragraph.", "In paragraphs, please."},
     {"Bullet points please.", "Give me a numbered list."}},
};

/* Appends, for each dimension the user prefers a side of, with
 * probability `rate`, a sentence stating that preference. */
static void add_cues(struct rlhi_sim_request *q,
                     const struct rlhi_sim_persona *p, double rate,
                     struct rlhi_rng *r)
{
    int d;

    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        const char *cue;
        size_t n = strlen(q->text);

        if (!p->pref[d] || rlhi_rng_double(r) >= rate)
            continue;
        cue = cue_text[d][p->pref[d] > 0][rlhi_rng_below(r, 2)];
        if (n + 1 + strlen(cue) + 1 > sizeof q->text)
            continue;
        q->text[n] = ' ';
        memcpy(q->text + n + 1, cue, strlen(cue) + 1);
    }
}

static int run_conv(struct world *w, const struct user *u, long ui, long ci,
                    long long t)
{
    const struct rlhi_sim_config *cfg = w->cfg;
    struct conv *c = &w->conv;
    struct rlhi_rng r, ar;
    struct rlhi_sim_request req;
    struct rlhi_sim_reaction re;
    struct rlhi_sim_style prev;
    int prev_err = 0, uturns = 1, rc = 0, d;
    bool pleasantry = false, have_prev = false;
    char hash[33];

    rlhi_rng_seed(&r, derive(cfg->seed, (uint64_t)ui, (uint64_t)ci, 1));
    rlhi_rng_seed(&ar, derive(cfg->seed, (uint64_t)ui, (uint64_t)ci, 2));
    hex_id(cfg->seed, "conv", ui, ci, hash, 32);
    conv_clear(c);

    rlhi_sim_request_sample(&req, cfg->beh.typo_rate, &r);
    add_cues(&req, &u->persona, cfg->beh.p_cue, &r);
    memset(&re, 0, sizeof re);
    re.label = RLHI_SIM_L_NEW_REQUEST;
    re.dim = re.target = -1;
    rlhi__copy(re.text, sizeof re.text, req.text);
    c->react[0] = re;
    rc = conv_add(c, "user", req.text);

    while (!rc) {
        struct rlhi_sim_ask ask;
        const char *ans;
        int i = c->n;

        /* The answer. */
        memset(&ask, 0, sizeof ask);
        ask.req = &req;
        ask.reaction = i > 1 ? &c->react[i - 1] : NULL;
        ask.prev_style = have_prev ? &prev : NULL;
        ask.prev_error = prev_err;
        ask.rng = &ar;
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            ask.out_style.v[d] = -1;
        ask.out_error = 0;
        ans = w->fn(w->ctx, c->msg, c->n, &ask);
        if (!ans)
            return rlhi_err_prefix(RLHI_EINVAL, "answerer failed");
        c->style[i] = ask.out_style;
        c->error[i] = ask.out_error;
        c->correct[i] = rlhi_sim_check(ans, &req, NULL, NULL);
        if (ask.out_style.v[0] >= 0) {
            prev = ask.out_style;
            prev_err = ask.out_error;
            have_prev = true;
        }
        rc = conv_add(c, "assistant", ans);
        if (rc || uturns >= cfg->beh.max_user_turns || c->n + 2 > MAX_MSGS)
            break;

        /* The user's reaction. */
        if (!rlhi__react(&u->persona, &cfg->beh, u->propensity, &req, ans,
                         pleasantry, &r, &re))
            break;
        pleasantry = re.label == RLHI_SIM_L_POSITIVE ||
                     re.label == RLHI_SIM_L_OTHER;
        if (re.label == RLHI_SIM_L_NEW_REQUEST) {
            rlhi_sim_request_sample(&req, cfg->beh.typo_rate, &r);
            rlhi__copy(re.text, sizeof re.text, req.text);
            have_prev = false;
        }
        c->react[c->n] = re;
        rc = conv_add(c, "user", re.text);
        uturns++;
    }
    if (rc)
        return rc;

    /* Counts for the report. */
    for (d = 0; d < c->n; d++) {
        if (strcmp(c->msg[d].role, "user"))
            continue;
        w->st->user_turns++;
        w->st->label[c->react[d].label]++;
        if (d > 0) {
            w->st->followups++;
            w->st->dissatisfied += c->react[d].dissatisfied;
        }
    }
    w->st->conversations++;
    return write_conv(w, u, hash, t);
}

static int write_user(struct world *w, const struct user *u, long ui)
{
    struct rlhi_buf *b = &w->line;
    struct rlhi_rng r;
    int r0 = 0, k;

    /* users.jsonl, then the same object with a type for the truth. */
    for (k = 0; k < 2; k++) {
        r0 |= rlhi_buf_adds(b, k ? "{\"type\":\"user\",\"hashed_ip\":"
                                 : "{\"hashed_ip\":");
        r0 |= put_str(b, u->ip);
        r0 |= rlhi_buf_addf(b, ",\"conversations\":%d,\"persona\":",
                            u->nconv);
        r0 |= put_persona(b, &u->persona);
        r0 |= rlhi_buf_adds(b, ",\"description\":\"");
        r0 |= rlhi_sim_persona_describe(&u->persona, b);
        r0 |= rlhi_buf_addf(b, "\",\"feedback_propensity\":%.3f}\n",
                            u->propensity);
        if (r0)
            return rlhi_err(RLHI_ENOMEM, "cannot format a user");
        r0 = out_put(k ? &w->truth : &w->users, b);
        if (r0)
            return r0;
    }

    /* Held-out requests: drawn from their own stream, never in the logs. */
    rlhi_rng_seed(&r, derive(w->cfg->seed, (uint64_t)ui, 0, 3));
    for (k = 0; k < w->cfg->heldout_per_user; k++) {
        struct rlhi_sim_request q;
        char id[96];

        rlhi_sim_request_sample(&q, w->cfg->beh.typo_rate, &r);
        snprintf(id, sizeof id, "%.16s-h%d", u->ip, k);
        r0 |= rlhi_buf_adds(b, "{\"type\":\"heldout\",\"id\":");
        r0 |= put_str(b, id);
        r0 |= rlhi_buf_adds(b, ",\"hashed_ip\":");
        r0 |= put_str(b, u->ip);
        r0 |= rlhi_buf_adds(b, ",\"request\":");
        r0 |= put_str(b, q.text);
        r0 |= rlhi_buf_adds(b, ",\"task\":");
        r0 |= rlhi_sim_task_json(&q, b);
        r0 |= rlhi_buf_adds(b, "}\n");
        if (r0)
            return rlhi_err(RLHI_ENOMEM, "cannot format a held-out item");
        r0 = out_put(&w->truth, b);
        if (r0)
            return r0;
        r0 |= rlhi_buf_adds(b, "{\"id\":");
        r0 |= put_str(b, id);
        r0 |= rlhi_buf_adds(b, ",\"hashed_ip\":");
        r0 |= put_str(b, u->ip);
        r0 |= rlhi_buf_adds(b, ",\"messages\":[{\"role\":\"user\","
                               "\"content\":");
        r0 |= put_str(b, q.text);
        r0 |= rlhi_buf_adds(b, "}]}\n");
        if (r0)
            return rlhi_err(RLHI_ENOMEM, "cannot format a held-out item");
        r0 = out_put(&w->heldout, b);
        if (r0)
            return r0;
    }
    return 0;
}

int rlhi_sim_world_write(const struct rlhi_sim_config *cfg,
                         rlhi_sim_answer_fn fn, void *ctx, const char *dir,
                         struct rlhi_sim_stats *st)
{
    struct world w;
    struct rlhi_sim_scripted scripted;
    struct rlhi_sim_stats local;
    struct rlhi_progress prog;
    double t_start = rlhi_time_now();
    long ui;
    int rc;

    if (cfg->n_users < 1 || cfg->max_conversations < 1 ||
        cfg->beh.max_user_turns < 1 || cfg->heldout_per_user < 0)
        return rlhi_err(RLHI_EINVAL, "invalid world configuration: users %d, "
                                     "max conversations %d, max turns %d",
                        cfg->n_users, cfg->max_conversations,
                        cfg->beh.max_user_turns);
    {
        const struct rlhi_sim_behaviour *b = &cfg->beh;
        const double ps[] = {b->p_feedback, b->p_no_guidance, b->p_correction,
                             b->p_end, b->p_positive, b->p_continue,
                             b->p_other, b->typo_rate};
        size_t i;

        for (i = 0; i < sizeof ps / sizeof *ps; i++)
            if (!(ps[i] >= 0 && ps[i] <= 1))
                return rlhi_err(RLHI_EINVAL, "invalid world configuration: "
                                             "probability %g is not in "
                                             "[0, 1]", ps[i]);
        if (b->p_end + b->p_positive + b->p_continue + b->p_other > 1)
            return rlhi_err(RLHI_EINVAL, "invalid world configuration: "
                                         "end, positive, continue and other "
                                         "add up to more than 1");
    }
    memset(&w, 0, sizeof w);
    memset(&local, 0, sizeof local);
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    st->min_conv = cfg->max_conversations;
    w.cfg = cfg;
    w.st = st;
    rlhi_sim_scripted_init(&scripted);
    w.fn = fn ? fn : rlhi_sim_scripted_answer;
    w.ctx = fn ? ctx : &scripted;

    rc = rlhi_mkdir_p(dir);
    if (!rc)
        rc = out_open(&w.logs, dir, "logs.jsonl");
    if (!rc)
        rc = out_open(&w.truth, dir, "truth.jsonl");
    if (!rc)
        rc = out_open(&w.users, dir, "users.jsonl");
    if (!rc)
        rc = out_open(&w.heldout, dir, "heldout.jsonl");

    if (!rc)
        rlhi_progress_start(&prog, "sim world: users",
                            (uint64_t)cfg->n_users);
    for (ui = 0; ui < cfg->n_users && !rc; ui++) {
        struct user u;
        struct rlhi_rng r;
        long ci;
        double z;

        /* Who the user is. */
        rlhi_rng_seed(&r, derive(cfg->seed, (uint64_t)ui, 0, 0));
        hex_id(cfg->seed, "user", ui, 0, u.ip, 64);
        rlhi_sim_persona_sample(&u.persona, &r);
        z = rlhi_rng_normal(&r);
        u.nconv = (int)floor(exp(cfg->conv_mu + cfg->conv_sigma * z) + 0.5);
        if (u.nconv < 1)
            u.nconv = 1;
        if (u.nconv > cfg->max_conversations)
            u.nconv = cfg->max_conversations;
        /* Some people complain readily, others rarely: 0.5 to 1.5. */
        u.propensity = 0.5 + rlhi_rng_double(&r);
        u.t0 = EPOCH_2024 + (long long)rlhi_rng_below(&r, 200 * 86400);
        st->users++;
        if (u.nconv > st->max_conv)
            st->max_conv = u.nconv;
        if (u.nconv < st->min_conv)
            st->min_conv = u.nconv;

        rc = write_user(&w, &u, ui);
        for (ci = 0; ci < u.nconv && !rc; ci++) {
            /* Conversations a few hours to a few days apart. */
            long long t = u.t0 + ci * 86400LL +
                          (long long)rlhi_rng_below(&r, 3 * 86400);

            rc = run_conv(&w, &u, ui, ci, t);
        }
        rlhi_progress_update(&prog, (uint64_t)ui + 1);
    }
    if (ui > 0)
        rlhi_progress_finish(&prog);

    conv_clear(&w.conv);
    rlhi_buf_release(&w.line);
    rlhi_sim_scripted_release(&scripted);
    rc = out_close(&w.logs, rc);
    rc = out_close(&w.truth, rc);
    rc = out_close(&w.users, rc);
    rc = out_close(&w.heldout, rc);
    st->seconds = rlhi_time_now() - t_start;
    return rc;
}
