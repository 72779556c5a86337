/* rlhi sim: a simulated chat service whose users have known, hidden
 * preferences (DESIGN.md section 5).
 *
 * The world makes the whole RLHI method runnable and checkable on two CPU
 * cores. It holds:
 *   - users with a hidden persona over four style dimensions (expertise,
 *     informativeness, tone, structure), each a preference or indifference,
 *     sampled with the marginals the RLHI paper measured on WildChat, and a
 *     long-tailed number of conversations each;
 *   - a small knowledge world (topics with facts written in plain and in
 *     technical words; arithmetic tasks with one integer answer) from which
 *     users draw requests, with varied phrasing and seeded typos;
 *   - an answer writer that realises any of the 16 styles, optionally with a
 *     deliberate error, and a style reader that reads the four values back
 *     from any text (a model's output too);
 *   - users' reactions (feedback, corrections, redo requests, thanks, new
 *     requests...) with a truth label per user turn;
 *   - a judge that scores an answer for a persona from the read-back style
 *     and from correctness, and a win rate with a bootstrap interval;
 *   - writers for WildChat-schema logs, the hidden truth, and a generic chat
 *     corpus for training a base model.
 *
 * Style values. Each dimension is binary: 1 is the "high" side (expert,
 * detailed, formal, structured), 0 the "low" side (novice, concise, casual,
 * prose). The reader answers -1 where the text gives no evidence either way.
 * A persona's preference per dimension is +1 (wants the high side), -1 (the
 * low side) or 0 (indifferent).
 *
 * Everything is seeded: the same configuration and seed give the same bytes.
 * Results obtained in this world are simulated and must be labelled so.
 */
#ifndef RLHI_SIM_H
#define RLHI_SIM_H

/* Bumped whenever the same seed makes a different world (users' reactions,
 * answers, labels), so that caches of worlds (rlhi demo) are remade.
 * 2: a rhetorical tag ("Pretty cool, right?") is not a question. */
#define RLHI_SIM_VERSION 2

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rlhi/base.h"

/* ---- style and persona ---------------------------------------------- */

enum rlhi_sim_dim {
    RLHI_SIM_EXPERTISE = 0,  /* 1 expert vocabulary, 0 plain words */
    RLHI_SIM_INFORM = 1,     /* 1 detailed, 0 concise */
    RLHI_SIM_TONE = 2,       /* 1 formal, 0 casual */
    RLHI_SIM_STRUCTURE = 3,  /* 1 structured (lists), 0 prose */
    RLHI_SIM_NDIM = 4,
};

/* A style: v[d] is 1 (high side), 0 (low side) or -1 (unknown; only the
 * reader produces it). */
struct rlhi_sim_style {
    int8_t v[RLHI_SIM_NDIM];
};

/* A hidden persona: pref[d] is +1 (prefers the high side), -1 (the low
 * side) or 0 (indifferent). */
struct rlhi_sim_persona {
    int8_t pref[RLHI_SIM_NDIM];
};

/* "expertise", "informativeness", "tone", "structure". */
const char *rlhi_sim_dim_name(int dim);
/* The word for side `v` (1 or 0) of a dimension: "expert"/"novice",
 * "detailed"/"concise", "formal"/"casual", "structured"/"prose";
 * "unknown" for -1. */
const char *rlhi_sim_side_name(int dim, int v);
/* The inverse of rlhi_sim_side_name: 1 or 0, or -1 when `word` is none of
 * the two sides of `dim` ("any" and "unknown" give -1 too). */
int rlhi_sim_side_parse(int dim, const char *word);

/* The WildChat marginals of the high side (RLHI paper, section 2): 59.8%
 * prefer expert answers, 49.9% detailed, 84.5% formal, 77.1% structured. */
extern const double rlhi_sim_marginal_high[RLHI_SIM_NDIM];
/* Of the users who do not prefer the high side, this share prefers the low
 * side and the rest are indifferent (our choice; see docs/SIMULATION.md). */
#define RLHI_SIM_LOW_SHARE 0.75

/* Draws a persona with the marginals above. */
void rlhi_sim_persona_sample(struct rlhi_sim_persona *p, struct rlhi_rng *r);

/* Appends a one-paragraph natural-language description of the persona,
 * e.g. "Prefers expert-level, technical answers. Prefers concise answers
 * ...". 0 or RLHI_ENOMEM. */
int rlhi_sim_persona_describe(const struct rlhi_sim_persona *p,
                              struct rlhi_buf *out);

/* ---- knowledge world and requests ----------------------------------- */

enum rlhi_sim_kind { RLHI_SIM_FACTS = 0, RLHI_SIM_ARITH = 1 };

/* One request: what the user asked and what is true about it. Plain data,
 * safe to copy. */
struct rlhi_sim_request {
    int kind;       /* RLHI_SIM_FACTS or RLHI_SIM_ARITH */
    int topic;      /* FACTS: index of the topic */
    int form;       /* ARITH: which task template */
    int a, b, c;    /* ARITH: operands */
    long answer;    /* ARITH: the correct integer answer */
    char text[320]; /* the request as the user wrote it */
};

/* Number of topics, and a topic's name ("planets", ...), or NULL when out
 * of range. */
int rlhi_sim_topic_count(void);
const char *rlhi_sim_topic_name(int topic);
/* The index of a topic by name, or -1. */
int rlhi_sim_topic_find(const char *name);
/* Number of facts each topic holds. */
int rlhi_sim_topic_facts(int topic);

/* Draws a request: a topic or an arithmetic task, phrased with one of many
 * templates; with probability `typo_rate` one or two typos are added. */
void rlhi_sim_request_sample(struct rlhi_sim_request *q, double typo_rate,
                             struct rlhi_rng *r);

/* Appends the request's hidden task as a JSON object, e.g.
 * {"kind":"facts","topic":"planets"} or {"kind":"arith","form":2,"a":..,
 * "b":..,"c":..,"answer":..}. 0 or RLHI_ENOMEM. */
int rlhi_sim_task_json(const struct rlhi_sim_request *q, struct rlhi_buf *out);

/* ---- answers -------------------------------------------------------- */

enum rlhi_sim_error { RLHI_SIM_ERR_NONE = 0, RLHI_SIM_ERR_WRONG = 1 };

/* Writes an answer to `q` in style `st` (every v[d] 0 or 1), appended to
 * `out`. With err == RLHI_SIM_ERR_WRONG one fact carries a wrong number,
 * or the arithmetic result is wrong. Which facts are stated (four when
 * detailed, the first of the same four when concise) and the wrong number
 * are drawn from `content`; the wording from `r`. So a revision written
 * with the same `content` states the same facts in another style, and a
 * correction (err 0) fixes the very fact that was wrong. 0 or
 * RLHI_ENOMEM. */
int rlhi_sim_answer_write_content(const struct rlhi_sim_request *q,
                                  const struct rlhi_sim_style *st, int err,
                                  uint64_t content, struct rlhi_rng *r,
                                  struct rlhi_buf *out);

/* The same with the content seed drawn from `r`. */
int rlhi_sim_answer_write(const struct rlhi_sim_request *q,
                          const struct rlhi_sim_style *st, int err,
                          struct rlhi_rng *r, struct rlhi_buf *out);

/* Draws a uniformly random style (each dimension a fair coin). */
void rlhi_sim_style_random(struct rlhi_sim_style *st, struct rlhi_rng *r);

/* The style a persona likes best; indifferent dimensions are drawn at
 * random. */
void rlhi_sim_style_for(const struct rlhi_sim_persona *p,
                        struct rlhi_sim_style *st, struct rlhi_rng *r);

/* ---- style reader --------------------------------------------------- */

/* What the reader found in a text, and the style it decides on. */
struct rlhi_sim_reading {
    struct rlhi_sim_style style;
    int tech;       /* technical terms and framings */
    int plain;      /* plain-language framings */
    int formal;     /* formal markers (openers, connectives, closings) */
    int casual;     /* casual markers (slang, contractions, '!') */
    int words;      /* whitespace-separated words */
    int sentences;  /* sentences and list items */
    int list_lines; /* lines that start with a bullet or a number */
};

/* Reads the four style values back from any text (NUL-terminated, UTF-8).
 * Never fails; an empty text reads as unknown on every dimension except
 * informativeness (concise). */
void rlhi_sim_style_read(const char *text, struct rlhi_sim_reading *rd);

/* ---- judge ---------------------------------------------------------- */

enum rlhi_sim_correct {
    RLHI_SIM_WRONG = -1,   /* a wrong fact or a wrong result */
    RLHI_SIM_ABSENT = 0,   /* nothing checkable about the request */
    RLHI_SIM_RIGHT = 1,    /* right facts / result and nothing wrong */
};

struct rlhi_sim_verdict {
    struct rlhi_sim_reading reading;
    int correct;      /* enum rlhi_sim_correct */
    int facts_right;  /* FACTS: facts stated with the right number */
    int facts_wrong;  /* FACTS: facts stated with a wrong number */
    int match;        /* dimensions the persona cares about that match */
    int mismatch;     /* ... that are the opposite of what it wants */
    int missed_dim;   /* one mismatched dimension (first), or -1 */
    double score;     /* 10 * correct + match - mismatch */
};

/* Correctness of `text` for request `q` alone (enum rlhi_sim_correct);
 * *right and *wrong (may be NULL) count facts. */
int rlhi_sim_check(const char *text, const struct rlhi_sim_request *q,
                   int *right, int *wrong);

/* Scores `text` as an answer to `q` for persona `p`: correctness outweighs
 * style (10 points against at most 4); each dimension the persona cares
 * about counts +1 when the read-back style matches, -1 when it is the
 * opposite, 0 when unknown; indifferent dimensions count 0. Returns the
 * score; fills *v when not NULL. */
double rlhi_sim_judge(const char *text, const struct rlhi_sim_request *q,
                      const struct rlhi_sim_persona *p,
                      struct rlhi_sim_verdict *v);

/* 1 when the judge prefers a, -1 when it prefers b, 0 on a tie. */
int rlhi_sim_compare(const char *a, const char *b,
                     const struct rlhi_sim_request *q,
                     const struct rlhi_sim_persona *p);

/* Win rate of A over B from n outcomes (1 A wins, -1 B wins, 0 tie; ties
 * count half) with a percentile bootstrap 95% interval from `nboot`
 * resamples drawn with `seed`. 0, or RLHI_EINVAL when n <= 0, or
 * RLHI_ENOMEM. */
int rlhi_sim_winrate(const int *outcome, int n, int nboot, uint64_t seed,
                     double *rate, double *lo, double *hi);

/* ---- reactions ------------------------------------------------------ */

/* Truth labels of user turns, the same set the pipeline's detector uses. */
enum rlhi_sim_label {
    RLHI_SIM_L_NEW_REQUEST = 0,
    RLHI_SIM_L_REATTEMPT_FEEDBACK,
    RLHI_SIM_L_REATTEMPT_NO_GUIDANCE,
    RLHI_SIM_L_CLARIFICATION,
    RLHI_SIM_L_POSITIVE,
    RLHI_SIM_L_CONTINUE,
    RLHI_SIM_L_OTHER,
    RLHI_SIM_L_COUNT,
};
/* "new_request", "reattempt_feedback", ... */
const char *rlhi_sim_label_name(int label);

/* A user turn and what is true about it. */
struct rlhi_sim_reaction {
    int label;         /* enum rlhi_sim_label */
    bool dissatisfied; /* the user is unhappy with the last answer */
    bool actionable;   /* the turn says how the answer should change */
    int dim;           /* feedback: the style dimension, else -1 */
    int target;        /* feedback: the side asked for (0/1), else -1 */
    bool correction;   /* feedback about a wrong fact or result */
    char text[320];    /* what the user wrote */
};

/* Knobs of the users' behaviour. Defaults (rlhi_sim_config_default) are
 * tuned so that about 26% of follow-up user turns are feedback with the
 * scripted assistant, as measured on WildChat (26.5%). */
struct rlhi_sim_behaviour {
    double p_feedback;    /* answer misses a preference: say so */
    double p_no_guidance; /* ... or just ask to try again */
    double p_correction;  /* answer is wrong: correct it */
    double p_end;         /* satisfied: end the conversation */
    double p_positive;    /* satisfied: say thanks (then maybe more) */
    double p_continue;    /* satisfied: ask to continue */
    double p_other;       /* satisfied: a stray remark */
    double typo_rate;     /* share of user turns with typos */
    double p_cue;         /* per dimension the user cares about: the
                             conversation's first request states it
                             ("in simple terms", "bullet points please"),
                             as real users' requests reveal preferences */
    int max_user_turns;   /* per conversation */
};

/* Writes feedback text asking to move dimension `dim` to side `target`,
 * in one of many phrasings. `q` names the subject where a phrasing needs
 * one. */
void rlhi_sim_feedback_text(int dim, int target,
                            const struct rlhi_sim_request *q,
                            struct rlhi_rng *r, char *out, size_t cap);

/* Writes a correction of `answer`, a wrong answer to `q`; where a phrasing
 * names the right number it is that of the first wrong fact found in
 * `answer` (or the arithmetic result). `answer` may be NULL. */
void rlhi_sim_correction_text(const struct rlhi_sim_request *q,
                              const char *answer, struct rlhi_rng *r,
                              char *out, size_t cap);

/* ---- the world ------------------------------------------------------ */

struct rlhi_sim_msg {
    const char *role;    /* "user" or "assistant" */
    const char *content;
};

/* What the world knows about the answer it asks for. A real model must
 * ignore it (it sees only the history); the scripted assistant uses it to
 * write answers without parsing text. */
struct rlhi_sim_ask {
    const struct rlhi_sim_request *req;       /* the request being served */
    /* The truth of the last user turn (a reaction, or a new request
     * within the conversation); NULL for the conversation's first turn. */
    const struct rlhi_sim_reaction *reaction;
    const struct rlhi_sim_style *prev_style;  /* style of the previous
                                                 answer, or NULL */
    int prev_error;                           /* error of the previous one */
    struct rlhi_rng *rng;                     /* a stream for the answerer */
    /* Set by the answerer when it can (the scripted assistant does): the
     * style it meant and whether it erred; left at -1 otherwise. */
    struct rlhi_sim_style out_style;
    int out_error;
};

/* An answerer: returns the assistant's reply to the n messages of
 * `history` (the last one is the user's). The string stays owned by the
 * answerer and valid until its next call. NULL on failure, with the
 * message set by rlhi_err(). */
typedef const char *(*rlhi_sim_answer_fn)(void *ctx,
                                          const struct rlhi_sim_msg *history,
                                          int n, struct rlhi_sim_ask *ask);

/* The built-in scripted assistant: a random style per request, errors at
 * `error_rate`, follows feedback with probability `p_follow`, and asks a
 * clarifying question with probability `p_ask`. */
struct rlhi_sim_scripted {
    double error_rate;
    double p_follow;
    double p_ask;
    uint64_t content;    /* content seed of the current request's answers */
    struct rlhi_buf out; /* the last reply */
};
/* Sets the defaults (error_rate 0.1, p_follow 0.9, p_ask 0.04). */
void rlhi_sim_scripted_init(struct rlhi_sim_scripted *s);
void rlhi_sim_scripted_release(struct rlhi_sim_scripted *s);
/* The rlhi_sim_answer_fn of the scripted assistant; ctx is a
 * struct rlhi_sim_scripted. */
const char *rlhi_sim_scripted_answer(void *ctx,
                                     const struct rlhi_sim_msg *history,
                                     int n, struct rlhi_sim_ask *ask);

struct rlhi_sim_config {
    int n_users;            /* users in the world */
    uint64_t seed;
    int heldout_per_user;   /* held-out requests per user (not in logs) */
    int max_conversations;  /* cap of the long tail per user */
    double conv_mu;         /* log-normal count: exp(mu + sigma * N(0,1)) */
    double conv_sigma;
    const char *model_name; /* the logs' "model" field */
    struct rlhi_sim_behaviour beh;
};
/* Defaults: 200 users, seed 1, 2 held-out requests each, counts capped at
 * 60, mu 0.8, sigma 1.15, model "rlhi-sim-scripted", and tuned behaviour. */
void rlhi_sim_config_default(struct rlhi_sim_config *c);

/* Counts of what a world run produced. */
struct rlhi_sim_stats {
    long users, conversations, user_turns, followups;
    long label[RLHI_SIM_L_COUNT];
    long dissatisfied; /* follow-up user turns marked dissatisfied */
    long max_conv, min_conv;
    double seconds;
};

/* Simulates the world and writes into directory `dir` (created):
 *   logs.jsonl     conversations in WildChat's schema;
 *   truth.jsonl    hidden truth: {"type":"user"} personas, {"type":"turn"}
 *                  labels of every user message and {"type":"answer"}
 *                  written styles, {"type":"heldout"} held-out tasks;
 *   users.jsonl    one line per user: hashed_ip, persona, counts;
 *   heldout.jsonl  held-out requests {"id","hashed_ip","messages"} for
 *                  models to answer (no hidden fields).
 * `fn`/`ctx` answer the users (NULL fn: the scripted assistant with its
 * defaults). Returns 0 and fills *st (may be NULL), or a negative code
 * (file errors name the file; a failing answerer's message is kept). */
int rlhi_sim_world_write(const struct rlhi_sim_config *c,
                         rlhi_sim_answer_fn fn, void *ctx, const char *dir,
                         struct rlhi_sim_stats *st);

/* Writes a generic chat corpus of n conversations to `f`: JSONL
 * {"messages":[...]} when !text, else plain text (messages separated by
 * blank lines) for tokenizer training. Answers have random styles; often a
 * user feedback turn follows and the assistant revises to follow it; no
 * personas. 0 or RLHI_EIO (write error) / RLHI_ENOMEM. */
int rlhi_sim_corpus_write(FILE *f, long n, uint64_t seed, bool text);

/* ---- truth files ---------------------------------------------------- */

struct rlhi_sim_truth_user {
    char hashed_ip[65];
    struct rlhi_sim_persona persona;
};
struct rlhi_sim_truth_item {
    char id[80];
    int user; /* index into users */
    struct rlhi_sim_request req;
};
struct rlhi_sim_truth {
    struct rlhi_sim_truth_user *users;
    int n_users;
    struct rlhi_sim_truth_item *items; /* held-out requests */
    int n_items;
};

/* Loads the users and held-out items of a truth.jsonl file (turn and
 * answer records are skipped). Errors name the file and line. The caller
 * releases *t with rlhi_sim_truth_release. */
int rlhi_sim_truth_load(const char *path, struct rlhi_sim_truth *t);
void rlhi_sim_truth_release(struct rlhi_sim_truth *t);
/* Index of a held-out item by id, or -1. */
int rlhi_sim_truth_find(const struct rlhi_sim_truth *t, const char *id);
/* Index of a user by hashed_ip, or -1. */
int rlhi_sim_truth_user(const struct rlhi_sim_truth *t, const char *ip);

#endif
