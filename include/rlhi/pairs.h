/* The second half of the RLHI pipeline: preference pairs from the store
 * (user-guided rewrites and reward-ranked samples), quality filters with a
 * persona-aware judge, TRL-style export, and the LLM-backed feedback
 * detector and persona summariser.
 *
 * Pairs live in the store's `pairs` table, one row per (source,
 * conversation, turn, round), where `turn_index` is the index of the user
 * request the prompt ends with, `prompt` the JSON message list (the
 * persona as the system message, then the conversation up to and including
 * that request), `chosen` and `rejected` plain answer texts. A rerun of a
 * stage skips rows already there (ON CONFLICT DO NOTHING on that key), so
 * a killed run resumes and nothing is duplicated. Filters write `kept` and
 * `drop_reason` and record which pairs they judged in a table of their own
 * (`pair_checks`), so they resume too.
 *
 * Everything that asks a model goes through struct rlhi_ask: one chat
 * request in, one text out. rlhi_ask_from_llm() backs it with an llm client
 * (local engine or HTTP); tests back it with a scripted function.
 */
#ifndef RLHI_PAIRS_H
#define RLHI_PAIRS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rlhi/base.h"
#include "rlhi/chat.h"
#include "rlhi/llm.h"
#include "rlhi/pipeline.h"
#include "rlhi/store.h"

/* ---- asking a model ---------------------------------------------------- */

/* One chat request -> one reply. `attempt` is 0 for the first try and 1+
 * for retries after a malformed verdict, so a backend can vary its seed.
 * On success *text is a new string the caller frees with rlhi_free().
 * `ctx` and `max_tokens` are the backend's. */
struct rlhi_ask {
    int (*fn)(struct rlhi_ask *a, const struct rlhi_chat_msg *msgs,
              size_t n, int attempt, char **text);
    void *ctx;
    int max_tokens;
    /* Optional: `n` independent requests at once (request i is msgs[i]
     * with counts[i] messages), so that a backend can run them
     * concurrently; texts[i] as fn's *text. Returns 0, or the first
     * failure's code and message (then no text is returned). NULL: fn is
     * called for each in turn. */
    int (*many)(struct rlhi_ask *a, const struct rlhi_chat_msg *const *msgs,
                const size_t *counts, size_t n, int attempt, char **texts);
};

/* Backs `a` with the llm client `l` (borrowed; it must outlive `a`):
 * greedy decoding on the first attempt, temperature 0.7 with seed =
 * attempt on later ones, at most `max_tokens` tokens (0: 256). Batches
 * (`many`) run with the client's concurrency. */
void rlhi_ask_from_llm(struct rlhi_ask *a, struct rlhi_llm *l,
                       int max_tokens);

/* Finds the JSON object in a model's reply: the text from the first '{'
 * to its matching '}' (string-aware), so that chatter or a ``` fence
 * around it is tolerated. Returns a new string (caller frees), or NULL
 * with an RLHI_EFORMAT message quoting the start of the reply. */
char *rlhi_pairs_find_json(const char *reply);

/* ---- judges ------------------------------------------------------------ */

/* A persona-aware judge. compare() sets *pref to 1 when answer a is
 * better for the persona, -1 when b is, 0 on a tie; score() gives a
 * number where higher is better. Either returns 0 or a negative code (a
 * malformed verdict after the retry is RLHI_EFORMAT). `persona` may be
 * NULL; `prompt` is the conversation (no system message), n messages. */
/* One comparison for rlhi_judge.compare_many. */
struct rlhi_judge_cmp {
    const char *persona;
    const struct rlhi_chat_msg *prompt;
    size_t n;
    const char *a, *b;
};

struct rlhi_judge {
    const char *name;
    int (*compare)(struct rlhi_judge *j, const char *persona,
                   const struct rlhi_chat_msg *prompt, size_t n,
                   const char *a, const char *b, int *pref);
    int (*score)(struct rlhi_judge *j, const char *persona,
                 const struct rlhi_chat_msg *prompt, size_t n,
                 const char *answer, double *score);
    /* Optional: n comparisons at once, which a backend may run
     * concurrently. Per comparison: prefs[i] as compare's *pref when
     * rcs[i] is 0, else rcs[i] < 0 and errs[i] says why (caller frees
     * with rlhi_free). Returns 0, or RLHI_ENOMEM. NULL: compare is
     * called for each in turn. */
    int (*compare_many)(struct rlhi_judge *j,
                        const struct rlhi_judge_cmp *c, size_t n,
                        int *prefs, int *rcs, char **errs);
    /* Optional: score answers[0..k) to the same prompt at once; results
     * as compare_many's. NULL: score is called for each in turn. */
    int (*score_many)(struct rlhi_judge *j, const char *persona,
                      const struct rlhi_chat_msg *prompt, size_t n,
                      const char *const *answers, size_t k, double *scores,
                      int *rcs, char **errs);
    void *ctx;
    void (*release)(struct rlhi_judge *j); /* NULL: nothing to free */
    /* LLM judge: each answer shown is cut to this many characters and
     * the conversation to twice that (0: 2000), for small contexts. */
    size_t max_chars;
};

/* Frees what a judge holds (a loaded reward model). NULL is fine. */
void rlhi_judge_release(struct rlhi_judge *j);

/* The builtin judge "style": no model. It reads the persona text for the
 * four dimensions (expert/novice, detailed/concise, formal/casual,
 * structured/prose) and scores an answer by the style it shows (length,
 * list lines, technical and casual words); see filter.c for the rules.
 * Deterministic, for tests and model-free runs. */
void rlhi_judge_style(struct rlhi_judge *j);

/* An LLM judge over `ask` (borrowed). compare() asks for
 * {"winner": "A"|"B"|"tie"} and score() for {"score": 1..10}, with the
 * persona in the system message; one retry on a malformed verdict. */
void rlhi_judge_llm(struct rlhi_judge *j, struct rlhi_ask *ask);

/* A judge backed by a persona-conditioned reward model directory
 * (reward.h, `rlhi reward train`): score() renders persona (system
 * message) + conversation + answer with the directory's chat template
 * (or `chat_template`; neither: the rlhi template), tokenizes with its
 * tokenizer (or `tokenizer`, a tokenizer.json directory or a llama2.c
 * .bin) and returns the reward read at the last token; compare() compares
 * two rewards. Long inputs keep their start, as in training. Errors: those
 * of the loaders, naming the directory. Release with
 * rlhi_judge_release(). */
int rlhi_judge_reward(struct rlhi_judge *j, const char *dir,
                      const char *tokenizer, const char *chat_template);

/* ---- pair stages ------------------------------------------------------- */

struct rlhi_pairs_opts {
    /* Which stored labels and personas to use; NULL: "builtin". */
    const char *feedback_backend;
    const char *persona_backend;
    bool regenerate;     /* rewrite: answer afresh, ignoring the feedback
                            (the paper's ablation); source 'regenerate' */
    /* rewrite: instead of an instruction ("rewrite the answer to follow
     * the feedback"), send the conversation with the original answer and
     * the feedback turn as chat and take the model's next answer, for
     * models trained to revise after feedback but not to follow
     * instructions about other texts. */
    bool in_context;
    bool redact;         /* rlhi_redact() on everything sent or stored */
    int max_tokens;      /* per generated answer; 0: 256 */
    /* Texts quoted in a rewrite instruction are cut to about this many
     * characters (oldest messages first; 0: 2000), and conversations sent
     * as chat (regenerate, rank) lose their oldest messages beyond it (0:
     * sent whole). For small local contexts. The stored prompt is whole. */
    size_t max_prompt_chars;
    int batch;           /* turns per llm batch and transaction; 0: 16 */
    int num_candidates;  /* rank: answers sampled per request; 0: 4 */
    float temperature;   /* rank sampling; 0 in a zeroed struct means 1 */
    uint64_t seed;       /* rank sampling seed base */
    int round;           /* stored in pairs.round (iterative rounds) */
    int64_t limit;       /* at most this many new pairs; 0: no limit */
    /* Test hook: stop with RLHI_EIO after this many new pairs have been
     * committed, as if the process had been killed. 0: off. */
    int64_t stop_after_pairs;
    const char *args;    /* recorded in `runs`; may be NULL */
};

struct rlhi_pairs_stats {
    uint64_t turns;      /* candidate turns seen */
    uint64_t done;       /* already had a pair (skipped on resume) */
    uint64_t made;       /* new pairs stored */
    uint64_t skipped;    /* turns that could not make a pair (see log) */
    uint64_t failed;     /* model requests that failed */
    uint64_t redactions; /* replacements made by --redact */
    double seconds;
};

/* Makes the tables and the one column change the pair stages need, once:
 * pairs.source also accepts 'regenerate' (the table is rebuilt with its
 * rows when its CHECK does not), and pair_checks is created. Idempotent;
 * every stage below calls it. 0 or RLHI_EDB. */
int rlhi_pairs_schema(struct rlhi_store *s);

/* User-guided rewrites: for every turn labelled reattempt_feedback by
 * opts->feedback_backend, asks `gen` (borrowed) to rewrite the answer
 * before it following the user's feedback (or, with opts->regenerate, to
 * answer the request afresh; source 'regenerate') and stores chosen = the
 * new answer, rejected = the original. Greedy decoding, so a rerun gives
 * the same text. Turns already paired are skipped before anything is
 * sent. Returns 0; RLHI_ENOTFOUND when the store has no such feedback rows
 * ("no reattempt_feedback turns labelled by 'builtin' in '<db>'" and a
 * hint); the code of the first failed model request (with its message,
 * e.g. the URL that refused the connection) when some failed: they are
 * counted in stats->failed, the others stored, and a batch in which every
 * request failed ends the run; or a store error. */
int rlhi_pairs_rewrite(struct rlhi_store *s, struct rlhi_llm *gen,
                       const struct rlhi_pairs_opts *opts,
                       struct rlhi_pairs_stats *stats);

/* Reward-ranked pairs: for every user request that was answered and drew
 * no dissatisfied follow-up (and is not itself a complaint), samples
 * opts->num_candidates answers from `policy` in one request (n = N, so
 * the prompt is processed once), scores each with `judge`->score
 * (persona-conditioned: a reward model, an LLM judge or the style judge),
 * and stores best vs worst with their scores and margin, source 'rank'.
 * Requests whose candidates all score the same make no pair (counted in
 * stats->skipped). */
int rlhi_pairs_rank(struct rlhi_store *s, struct rlhi_llm *policy,
                    struct rlhi_judge *judge,
                    const struct rlhi_pairs_opts *opts,
                    struct rlhi_pairs_stats *stats);

/* Reasons a filter drops a pair, as stored in pairs.drop_reason. */
enum rlhi_drop {
    RLHI_DROP_IDENTICAL = 0,    /* "identical": same text after whitespace
                                   normalisation */
    RLHI_DROP_MARGIN,           /* "low_margin": margin < min_margin */
    RLHI_DROP_JUDGE_REJECTED,   /* "judge_prefers_rejected": both orders */
    RLHI_DROP_JUDGE_UNSURE,     /* "judge_not_consistent": a tie, or the
                                   verdict flips with the order */
    RLHI_DROP_JUDGE_ERROR,      /* "judge_error": no valid verdict */
    RLHI_DROP_N
};
const char *rlhi_drop_name(int reason);

struct rlhi_filter_opts {
    const char *source;  /* only pairs of this source; NULL: all */
    double min_margin;   /* pairs with a margin below it are dropped; pairs
                            without a margin (rewrites) are not checked */
    bool redact;         /* redact what is sent to the judge */
    bool force;          /* forget earlier filter decisions first */
    const char *args;
};

struct rlhi_filter_stats {
    uint64_t checked;             /* pairs judged in this run */
    uint64_t already;             /* judged by an earlier run */
    uint64_t kept;
    uint64_t dropped[RLHI_DROP_N];
    double seconds;
};

/* Checks every pair not yet checked, in this order: identical texts,
 * margin, then the judge (NULL: no judge check) asked in both orders to
 * cancel position bias — chosen must win both. Sets kept/drop_reason and
 * records the check in pair_checks. 0 or a negative code. */
int rlhi_pairs_filter(struct rlhi_store *s, struct rlhi_judge *judge,
                      const struct rlhi_filter_opts *opts,
                      struct rlhi_filter_stats *stats);

/* Copies `s` with runs of whitespace made one space and the ends trimmed
 * into `out` (cleared first). 0 or RLHI_ENOMEM. */
int rlhi_pairs_normalise_ws(const char *s, struct rlhi_buf *out);

/* Writes one JSON line per pair in TRL's conversational explicit-prompt
 * shape: {"prompt": [messages], "chosen": [{"role": "assistant",
 * "content"}], "rejected": [...], "persona", "user_id",
 * "conversation_hash", "turn", "source", "round", "chosen_score",
 * "rejected_score", "margin"}, plus "kept" and "drop_reason" when
 * `include_dropped` (which also exports dropped pairs). `source` NULL:
 * all. Order: source, conversation hash, turn, round. *n (may be NULL)
 * gets the count. */
int rlhi_pairs_export(struct rlhi_store *s, const char *source,
                      bool include_dropped, FILE *out, uint64_t *n);

/* SHA-256 hex of the pairs (without row ids and times) in key order, for
 * comparing an interrupted run with an uninterrupted one. */
int rlhi_pairs_content_hash(struct rlhi_store *s, char hex[65]);

/* ---- LLM-backed feedback detector and persona summariser -------------- */

/* Labels user `turn` after assistant `answer` (to `request`, may be NULL)
 * by asking the model for {"label", "dissatisfied", "actionable"}. The
 * verdict is validated (a known label name, two booleans); a malformed one
 * is asked again once, telling the model what was wrong. `redact` passes
 * the texts through rlhi_redact() first. out->rule is "llm". Returns 0,
 * RLHI_EFORMAT when both verdicts were malformed (quoting the reply), or
 * the ask's error. */
int rlhi_llm_feedback_classify(struct rlhi_ask *ask, const char *request,
                               const char *answer, const char *turn,
                               bool redact, struct rlhi_fb_result *out);

/* Summarises a user's messages into a persona: the four dimensions and a
 * natural-language text, as JSON {"expertise", "informativeness", "tone",
 * "structure", "text"}. A history longer than `max_chars` (0: 6000, about
 * 1.5k tokens) is cut into chunks summarised one by one, then a merge
 * prompt combines the chunk personas. Verdicts are validated and retried
 * once. On success the caller releases *out with rlhi_persona_release();
 * evidence arrays are "[]" (the model gives none). */
int rlhi_llm_persona_summarise(struct rlhi_ask *ask,
                               const struct rlhi_persona_msg *msgs, size_t n,
                               size_t max_chars, bool redact,
                               struct rlhi_persona *out);

/* Store-level runs of the two above: label every follow-up user turn not
 * yet labelled by `backend_name` (e.g. "llm"), and make the persona of
 * every user without one by `backend_name`. Rows go to the feedback and
 * personas tables with that backend name, in transactions of `batch`
 * records (0: 32), so reruns resume. `stats` as for the builtin runs. */
int rlhi_llm_feedback_run(struct rlhi_store *s, struct rlhi_ask *ask,
                          const char *backend_name, bool redact,
                          struct rlhi_feedback_stats *stats);
int rlhi_llm_persona_run(struct rlhi_store *s, struct rlhi_ask *ask,
                         const char *backend_name, bool redact,
                         size_t max_chars, struct rlhi_persona_stats *stats);

#endif
