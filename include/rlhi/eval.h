/* rlhi eval: win rates with bootstrap intervals, answer matching for
 * reasoning sets (GSM8K, MATH-500), a chat helper that answers with a
 * local model, and the simulated evaluations (judge win rate, persona
 * accuracy, feedback-detection precision and recall against the world's
 * hidden truth).
 *
 * Win rate. Outcomes are 1 (A wins), -1 (B wins) or 0 (tie); ties count
 * half, as in the RLHI paper and AlpacaEval. The 95% interval is the
 * percentile bootstrap: `nboot` resamples of the n outcomes with
 * replacement, the 2.5th and 97.5th percentiles of their win rates.
 *
 * Answer matching. GSM8K references end in "#### <number>"; a model's
 * answer is the number after "####" when it writes one, else the number
 * after "answer is", else the last number in the text; numbers compare by
 * value after removing thousands separators, "$" and "%". MATH answers are
 * the content of the last \boxed{...} (or \fbox{...}), normalised as the
 * MATH paper's evaluation does (Hendrycks et al. 2021, math_equivalence:
 * strip spaces, \left/\right, \!, units and "^\circ", "\$", \dfrac and
 * \tfrac to \frac, "a/b" to \frac{a}{b}, a leading "0" before ".", "x ="
 * prefixes, braces of \frac and \sqrt with single-character arguments),
 * then compared as strings, or as numbers when both parse as numbers.
 */
#ifndef RLHI_EVAL_H
#define RLHI_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"
#include "rlhi/chat.h"
#include "rlhi/model.h"
#include "rlhi/sim.h"
#include "rlhi/store.h"
#include "rlhi/tokenizer.h"

/* ---- win rates ------------------------------------------------------ */

struct rlhi_eval_winrate {
    double rate;     /* (wins + ties / 2) / n */
    double lo, hi;   /* percentile bootstrap 95% interval */
    int n, wins, losses, ties;
};

/* Win rate of A over B from n outcomes (1, -1, 0) with a percentile
 * bootstrap interval from `nboot` resamples (0: 1000) seeded with `seed`.
 * Same inputs, same interval. 0, RLHI_EINVAL when n <= 0, RLHI_ENOMEM. */
int rlhi_eval_winrate(const int *outcome, int n, int nboot, uint64_t seed,
                      struct rlhi_eval_winrate *out);

/* ---- answer matching ------------------------------------------------ */

enum rlhi_eval_set_kind {
    RLHI_EVAL_GSM8K = 1, /* {"question", "answer": "... #### 18"} */
    RLHI_EVAL_MATH = 2,  /* {"problem", "solution", "answer"} */
};

/* The number a GSM8K reference solution ends with (after "####"),
 * normalised (no separators), into out[cap]. 0, or RLHI_ENOTFOUND when
 * there is no "####" followed by a number. */
int rlhi_eval_gsm8k_reference(const char *solution, char *out, size_t cap);

/* The final number of a model's answer (see the file head), normalised,
 * into out[cap]. 0, or RLHI_ENOTFOUND when the text holds no number. */
int rlhi_eval_final_number(const char *text, char *out, size_t cap);

/* True when two number strings have the same value (|a-b| <= 1e-6 *
 * max(1, |b|)). False when either does not parse. */
bool rlhi_eval_number_equal(const char *a, const char *b);

/* The content of the last \boxed{...} or \fbox{...} in `text` (nested
 * braces balanced; also "\boxed 5"), into out[cap]. 0, RLHI_ENOTFOUND
 * when there is none or its braces do not close, RLHI_ERANGE when it does
 * not fit. */
int rlhi_eval_math_boxed(const char *text, char *out, size_t cap);

/* Normalises a MATH answer (see the file head) into out[cap] (truncated
 * to fit, always NUL-terminated). */
void rlhi_eval_math_normalize(const char *in, char *out, size_t cap);

/* True when two MATH answers are equivalent after normalisation. */
bool rlhi_eval_math_equal(const char *a, const char *b);

/* Scores a model's answer `text` against reference answer `ref` (for
 * GSM8K the number, for MATH the "answer" field): true when it matches. */
bool rlhi_eval_answer_correct(enum rlhi_eval_set_kind kind, const char *text,
                              const char *ref);

struct rlhi_eval_item {
    char *question; /* the problem as given to a model */
    char *solution; /* the reference solution text */
    char *answer;   /* the reference answer (GSM8K: the number) */
};

struct rlhi_eval_set {
    enum rlhi_eval_set_kind kind;
    struct rlhi_eval_item *items;
    int n;
};

/* Loads a GSM8K or MATH-500 JSONL file. Every line must parse and carry
 * the fields above, else RLHI_EFORMAT naming the file and line. The
 * caller releases *set with rlhi_eval_set_release(). */
int rlhi_eval_set_load(const char *path, enum rlhi_eval_set_kind kind,
                       struct rlhi_eval_set *set);
void rlhi_eval_set_release(struct rlhi_eval_set *set);

/* ---- answering with a local model ----------------------------------- */

/* A local model that answers chats: renders messages with its template,
 * generates until the end-of-turn marker, and returns the text without
 * it. When the rendered prompt leaves fewer than max_tokens positions,
 * the oldest messages after the system message are dropped (the last
 * message always stays). */
struct rlhi_eval_chatbot {
    const struct rlhi_model *m;       /* borrowed */
    const struct rlhi_tokenizer *tok; /* borrowed */
    enum rlhi_chat_kind kind;
    int32_t eot;        /* end-of-turn id, or -1 */
    const char *eot_text; /* end-of-turn marker (static), or NULL */
    int max_tokens;     /* new tokens per answer (160) */
    float temperature;  /* 0.7; 0 is greedy */
    float top_p;        /* 0.95 */
    int64_t tokens;     /* tokens generated so far (for rates) */
    struct rlhi_buf out; /* the last reply */
};

/* Sets up `b` for a loaded model and tokenizer; `kind` as rendered. 0 or
 * RLHI_EINVAL when the model's context is too short. */
int rlhi_eval_chatbot_init(struct rlhi_eval_chatbot *b,
                           const struct rlhi_model *m,
                           const struct rlhi_tokenizer *tok,
                           enum rlhi_chat_kind kind);
void rlhi_eval_chatbot_release(struct rlhi_eval_chatbot *b);

/* Answers `n` messages (the last a user's) with sampling seed `seed`.
 * *reply points into b->out, valid until the next call. 0 or the errors
 * of rendering, tokenizing and generation. */
int rlhi_eval_chatbot_reply(struct rlhi_eval_chatbot *b,
                            const struct rlhi_chat_msg *msgs, size_t n,
                            uint64_t seed, const char **reply);

/* Samples k answers to the same messages at once, candidate i with seed
 * seeds[i] (sharing the prompt's prefill and each decoding pass: see
 * rlhi_generate_n). out[i] are new strings (rlhi_free). Errors as
 * rlhi_eval_chatbot_reply; on error every out[i] is NULL. */
int rlhi_eval_chatbot_reply_n(struct rlhi_eval_chatbot *b,
                              const struct rlhi_chat_msg *msgs, size_t n,
                              const uint64_t *seeds, int k, char **out);

/* Answers each item of a reasoning set (at most `limit`, 0: all) with
 * the chatbot (greedy when its temperature is 0) and returns the share
 * answered right in *acc and the count in *n. */
int rlhi_eval_reasoning_run(struct rlhi_eval_chatbot *b,
                            const struct rlhi_eval_set *set, int limit,
                            double *acc, int *n);

/* ---- simulated evaluation ------------------------------------------- */

/* Judge results of answers A against answers B to the held-out requests
 * of a world (a[i], b[i] answer truth item i; NULL entries are skipped).
 * Simulated: the judge knows every user's true persona. */
struct rlhi_eval_sim_result {
    struct rlhi_eval_winrate win; /* A over B, ties half */
    double correct_a, correct_b;  /* share of answers judged right */
    double match_a[RLHI_SIM_NDIM], match_b[RLHI_SIM_NDIM]; /* style match
                                     among users who care */
    double arith_a, arith_b;      /* right among arithmetic requests */
    int n_arith;
};

int rlhi_eval_sim_compare(const struct rlhi_sim_truth *t,
                          char *const *a, char *const *b, int nboot,
                          uint64_t seed, struct rlhi_eval_sim_result *out);

/* Persona-derivation accuracy: pipeline personas (backend "builtin") in
 * the store against the world's truth. Per dimension, the share of the
 * store's users whose derived value is the truth's side (an indifferent
 * truth counts right when the pipeline says "no signal"), and the same
 * among users whose truth has a preference. */
struct rlhi_eval_persona_result {
    int users;                       /* users compared */
    double acc[RLHI_SIM_NDIM];       /* all users */
    double acc_pref[RLHI_SIM_NDIM];  /* users with a preference */
    double no_signal[RLHI_SIM_NDIM]; /* share derived as "no signal" */
};

int rlhi_eval_persona_accuracy(struct rlhi_store *s,
                               const struct rlhi_sim_truth *t,
                               struct rlhi_eval_persona_result *out);

/* Feedback-detection precision and recall: the store's labels (backend
 * "builtin") against the {"type":"turn"} records of truth.jsonl at
 * `truth_path`, matched by (conversation_hash, turn_index). Per truth
 * label and for the dissatisfied flag. Turns the pipeline did not label
 * (a conversation's first message) are not counted. */
struct rlhi_eval_feedback_result {
    int turns;                        /* turns in both */
    int tp[RLHI_SIM_L_COUNT], fp[RLHI_SIM_L_COUNT], fn[RLHI_SIM_L_COUNT];
    int dis_tp, dis_fp, dis_fn;
    double accuracy;                  /* label agreement */
};

int rlhi_eval_feedback_prf(struct rlhi_store *s, const char *truth_path,
                           struct rlhi_eval_feedback_result *out);

/* Precision and recall from counts (0 when the denominator is 0). */
double rlhi_eval_precision(int tp, int fp);
double rlhi_eval_recall(int tp, int fn);

#endif
