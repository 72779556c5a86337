/* Persona-conditioned Direct Preference Optimisation (DPO), with TRL's
 * DPOTrainer semantics (names, loss formulas, metrics) so that runs can be
 * compared with TRL.
 *
 * Data flow: JSONL {"prompt": [messages], "chosen": [assistant message],
 * "rejected": [assistant message], "persona"?: string, "margin"?: number}
 * -> rlhi_dpo_data_load() (persona into the system message, render with
 * the chat template, tokenize, keep-start truncation) -> reference
 * log-probs computed once and cached on disk -> rlhi_dpo_train().
 *
 * Persona text. With a non-empty "persona" P the conversation gets a
 * system message: if the prompt already starts with a system message S,
 * its content becomes  P + "\n\n" + S;  otherwise a system message with
 * content P is put first. --no_persona (no_persona = true) ignores P: the
 * user-agnostic ablation.
 *
 * Scoring. log pi(y|x) is the sum of the log-probs of the final answer's
 * tokens: the tokens of the last assistant span, including its
 * end-of-turn marker (TRL appends the EOS to each completion). Earlier
 * assistant turns of a multi-turn prompt are context, not scored.
 *
 * Prefix sharing. Chosen and rejected share the prompt. With `share`
 * each pair is one row
 *     [prompt | chosen | last prompt token, rejected]
 * where the rejected segment attends to the first np-1 prompt tokens
 * (struct rlhi_batch.prefix) and itself, with positions continuing from
 * the prompt: the prompt runs once instead of twice. The last prompt
 * token is repeated because its logits predict the first token of each
 * answer. Without `share` a pair is two rows, as TRL computes it.
 */
#ifndef RLHI_DPO_H
#define RLHI_DPO_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/chat.h"
#include "rlhi/model.h"
#include "rlhi/tokenizer.h"
#include "rlhi/train.h"

/* ---- losses (dpo_loss.c) -------------------------------------------- */

enum rlhi_dpo_loss_kind {
    RLHI_DPO_SIGMOID = 0, /* -logsig(b h)(1-ls) - logsig(-b h) ls */
    RLHI_DPO_IPO,         /* (h_norm - 1/(2b))^2, length-normalised */
    RLHI_DPO_HINGE,       /* relu(1 - b h) */
    RLHI_DPO_ROBUST,      /* ((1-ls)(-logsig(b h)) + ls logsig(-b h))
                           * / (1 - 2 ls) */
    RLHI_DPO_SFT,         /* NLL of chosen, mean over tokens (RPO) */
    RLHI_DPO_SIGMOID_NORM, /* sigmoid on length-normalised h */
    RLHI_DPO_NKINDS,
};

#define RLHI_DPO_MAX_LOSSES 6

/* A weighted sum of loss types, as TRL's loss_type=[...] with
 * loss_weights=[...]. */
struct rlhi_dpo_loss_cfg {
    int n;
    enum rlhi_dpo_loss_kind kind[RLHI_DPO_MAX_LOSSES];
    double weight[RLHI_DPO_MAX_LOSSES];
    double beta;            /* 0.1 */
    double label_smoothing; /* 0; sigmoid, robust, sigmoid_norm */
};

/* Log-probs of one pair: summed over its answer tokens. */
struct rlhi_dpo_logps {
    double pc, pr; /* policy, chosen and rejected */
    double rc, rr; /* reference */
    int nc, nr;    /* answer tokens (> 0) */
};

/* Name of a loss kind ("sigmoid", ...), or "unknown". */
const char *rlhi_dpo_loss_name(enum rlhi_dpo_loss_kind k);

/* Fills `c` from comma-separated `types` ("sigmoid,sft") and `weights`
 * ("1,0.5"; NULL or "": all 1), beta 0.1, label smoothing 0. Returns 0 or
 * RLHI_EINVAL naming the unknown type or the count mismatch. */
int rlhi_dpo_loss_parse(struct rlhi_dpo_loss_cfg *c, const char *types,
                        const char *weights);

/* Loss of a batch of `n` pairs: the mean over pairs of
 * sum_k weight_k * loss_k (the sft term is the mean NLL over all the
 * batch's chosen tokens, as TRL's cross-entropy over the batch). When
 * dpc/dpr (n) are not NULL they get d loss / d p[i].pc and d p[i].pr:
 * the per-sequence coefficients that turn the gradient of summed
 * log-probs into the gradient of the loss. */
double rlhi_dpo_loss(const struct rlhi_dpo_loss_cfg *c,
                     const struct rlhi_dpo_logps *p, int n, double *dpc,
                     double *dpr);

/* ---- data (dpo.c) --------------------------------------------------- */

struct rlhi_dpo_pair {
    int32_t *prompt;   /* (np) */
    int32_t *chosen;   /* (nc) final answer incl. end-of-turn marker */
    int32_t *rejected; /* (nr) */
    int np, nc, nr;
    float margin;      /* "margin" of the record, 0 when absent */
};

struct rlhi_dpo_data {
    struct rlhi_dpo_pair *p;
    int n, cap;
    int64_t skipped; /* malformed records */
    int64_t dropped; /* prompts longer than max_length */
};

/* Appends one pair, truncated to `max_length` (keep the start: answers
 * are cut so that np + n_answer <= max_length). Returns 0, 1 when the
 * prompt alone leaves no room for an answer token (the pair is dropped
 * and counted in d->dropped), RLHI_EINVAL for an empty prompt or answer,
 * RLHI_ENOMEM. */
int rlhi_dpo_data_add(struct rlhi_dpo_data *d, const int32_t *prompt,
                      int np, const int32_t *chosen, int nc,
                      const int32_t *rejected, int nr, float margin,
                      int max_length);
void rlhi_dpo_data_release(struct rlhi_dpo_data *d);

/* Reads pair records (format above) from `path`, tokenizes them with
 * `tok` and template `kind`. A malformed record is reported through
 * rlhi_warn with file and line and counted in d->skipped; pairs whose
 * prompt exceeds max_length are counted in d->dropped. Errors: those of
 * the reader, RLHI_ENOMEM, RLHI_EFORMAT when no record gave a pair. */
int rlhi_dpo_data_load(struct rlhi_dpo_data *d, const char *path,
                       const struct rlhi_tokenizer *tok,
                       enum rlhi_chat_kind kind, int max_length,
                       bool no_persona);

/* Builds the message list of one record (persona folded into the system
 * message as described above) followed by `answer_key`'s final message,
 * as a new JSON object {"messages": [...]} (caller decrefs). NULL with
 * RLHI_EFORMAT set when the record is malformed. Shared with reward.c. */
struct json_t;
struct json_t *rlhi_dpo_record_messages(struct json_t *rec,
                                        const char *answer_key,
                                        bool no_persona);

/* ---- log-probs and the gradient step (dpo.c) ------------------------ */

/* Summed answer log-probs of pairs idx[0..n) of `d` under model `m`
 * (forward passes only, in micro-batches that fit `t`; t->m is swapped
 * for m during the call and restored). Writes lc[i], lr[i] for pair
 * idx[i]. `idx` NULL: all pairs in order. 0 or a training error. */
int rlhi_dpo_logps(struct rlhi_train *t, struct rlhi_model *m,
                   const struct rlhi_dpo_data *d, const int *idx, int n,
                   bool share, double *lc, double *lr);

/* Metrics of a batch, TRL's names: rewards/chosen = mean beta*(pc - rc),
 * rewards/rejected, rewards/margins, rewards/accuracies (strict >),
 * logps/chosen, logps/rejected (means of summed log-probs). */
struct rlhi_dpo_metrics {
    double loss;
    double reward_chosen, reward_rejected, margin, accuracy;
    double logps_chosen, logps_rejected;
    int pairs;
    int64_t tokens; /* input tokens run through the policy */
};

/* One micro-batch of pairs idx[0..n) (n <= what `t` was made for: n rows
 * of max (np+nc+nr+1) tokens with `share`, 2n rows of max(np+n_answer)
 * otherwise): forward of the policy t->m, the loss against reference
 * log-probs ref_c[i], ref_r[i], and backward, accumulating
 * scale * d loss / d params into t->grad. Metrics of the batch (loss
 * unscaled) go to *mt (may be NULL). 0, RLHI_ENUMERIC when the loss is
 * not finite, or a training error. */
int rlhi_dpo_micro_step(struct rlhi_train *t, const struct rlhi_dpo_data *d,
                        const int *idx, int n, const double *ref_c,
                        const double *ref_r,
                        const struct rlhi_dpo_loss_cfg *lc, double scale,
                        bool share, struct rlhi_dpo_metrics *mt);

/* The rows (*B) and columns (*T) a training state needs for micro-batches
 * of `batch` pairs of `d` (at most d->n pairs). */
void rlhi_dpo_batch_shape(const struct rlhi_dpo_data *d, int batch,
                          bool share, int *B, int *T);

/* ---- training (dpo.c) ----------------------------------------------- */

struct rlhi_dpo_config {
    const char *output_dir;        /* required */
    struct rlhi_dpo_loss_cfg loss; /* sigmoid, beta 0.1 */
    double learning_rate;          /* 1e-6 (see cmd_dpo.c) */
    double num_train_epochs;       /* 1 */
    int64_t max_steps;             /* > 0 overrides epochs; -1 */
    int batch_size;                /* pairs per micro-batch, 8 */
    int grad_accum;                /* 1 */
    int max_length;                /* 1024 (used for the cache key) */
    uint64_t seed;                 /* 42 */
    double warmup_ratio;           /* 0 */
    double weight_decay;           /* 0 */
    double max_grad_norm;          /* 1.0 */
    int logging_steps;             /* 10 */
    int save_steps;                /* 500; 0 none */
    bool precompute_ref;           /* true: cached reference log-probs;
                                    * false: a reference copy in memory,
                                    * run every step as TRL does */
    const char *ref_cache_dir;     /* NULL: output_dir */
    const struct rlhi_model *ref_model; /* the reference; NULL: the
                                    * initial policy */
    bool share;                    /* prefix sharing, true */
    const char *copy_from;         /* tokenizer files to copy, or NULL */
    bool save_final;               /* true */
};

void rlhi_dpo_config_init(struct rlhi_dpo_config *c);

struct rlhi_dpo_result {
    int64_t steps;
    double last_loss;
    int64_t num_tokens;
    double seconds;
    bool ref_cache_hit;      /* the reference log-probs came from disk */
    struct rlhi_dpo_metrics last; /* metrics of the last logging window */
};

/* Trains `m` (made writable) on `d` with AdamW under warmup + cosine.
 * Reference log-probs: computed from cfg->ref_model (or `m` as it is on
 * entry) before the first step and, with precompute_ref, cached in
 * <ref_cache_dir>/ref_logps-<sha256 prefix>.bin, keyed by the SHA-256 of
 * the tokenized pairs, max_length and the reference weights' bytes; a
 * later run with the same key reads it instead (logged). Every logging
 * step: a line at INFO level and a JSON line in output_dir/metrics.jsonl
 * with TRL's names (loss, rewards/chosen, rewards/rejected,
 * rewards/margins, rewards/accuracies, logps/chosen, logps/rejected,
 * grad_norm, learning_rate, num_tokens, epoch, step). Checkpoints every
 * save_steps (output_dir/checkpoint-N), final model in output_dir.
 * Errors: RLHI_EINVAL (settings, empty data), RLHI_ENUMERIC "step N: ..."
 * for a non-finite loss or gradient, or those of training and saving. */
int rlhi_dpo_train(struct rlhi_model *m, const struct rlhi_dpo_data *d,
                   const struct rlhi_dpo_config *cfg,
                   struct rlhi_dpo_result *res);

/* ---- iterative DPO (dpo.c) ------------------------------------------ */

struct rlhi_reward;
struct rlhi_tokenizer;

struct rlhi_dpo_iter_config {
    int iterations;      /* rounds, >= 1 */
    int num_candidates;  /* answers sampled per prompt, >= 2 */
    double min_margin;   /* best - worst reward below this: pair dropped */
    int max_new_tokens;  /* per answer, 128 */
    double temperature;  /* 1.0 */
    double top_p;        /* 1.0 */
};

void rlhi_dpo_iter_config_init(struct rlhi_dpo_iter_config *c);

/* Online (iterative) DPO with a reward model. Each round: for every
 * distinct prompt of `prompts` (only their prompts are used), sample
 * num_candidates answers from the current policy `m` (one prefill shared
 * by the candidates, rlhi_generate_n), each ended with the end-of-turn
 * token the data's answers end with; score [prompt | answer] with `rm`;
 * pair the best against the worst, dropping identical answers and pairs
 * whose reward margin is below min_margin; then train one DPO round
 * (cfg, with output_dir/iteration-K as its output directory) from the
 * current policy, always against the original model as reference (a copy
 * of `m` on entry, kept in memory). The final policy is left in `m` and
 * saved in cfg->output_dir. Errors: RLHI_EINVAL (settings, a round
 * without a usable pair), or those of generation, scoring and training. */
int rlhi_dpo_iterate(struct rlhi_model *m, const struct rlhi_tokenizer *tok,
                     struct rlhi_reward *rm,
                     const struct rlhi_dpo_data *prompts,
                     const struct rlhi_dpo_config *cfg,
                     const struct rlhi_dpo_iter_config *ic,
                     struct rlhi_dpo_result *res);

/* ---- benchmark (bench_dpo.c) ---------------------------------------- */

struct rlhi_bench_dpo_result {
    double ms_step;        /* mean timed DPO step, shared prompt */
    double ms_step_noshare; /* the same with two rows per pair */
    double ms_ref;         /* the reference forward inside a step */
    double cpu_ms_step;    /* process CPU time per step (all threads),
                            * shared prompt: steadier than wall time on a
                            * busy machine */
    double cpu_ms_noshare; /* the same, two rows per pair */
    int64_t tokens_share, tokens_noshare; /* tokens run per step */
    double peak_rss_mib;
    double torch_ms;       /* PyTorch fp32 step, -1 when not run */
    double torch_cpu_ms;   /* its process CPU time per step */
    int threads;
};

/* One DPO step (reference forward, policy forward + backward on chosen and
 * rejected, AdamW) for the 124.7M Llama shape, `pairs` pairs of `T`
 * tokens (prompt T/2, answers T/2), random weights; `steps` timed steps
 * after a warm-up, with and without prefix sharing. With `torch` and a
 * working /usr/bin/python3 + torch, the same step in PyTorch (fp32,
 * prompt twice, reference in memory). 0 or an error. */
int rlhi_bench_dpo(int pairs, int T, int steps, bool torch,
                   struct rlhi_bench_dpo_result *r);

#endif
