/* Reward model: the transformer with a scalar head read at the last token,
 * trained with the Bradley-Terry loss on preference pairs (TRL's
 * RewardTrainer semantics), and scoring of persona + conversation +
 * answer.
 *
 * The head is a (C) vector w: reward = w . out[last], where out is the
 * final-norm hidden state of the last token of [prompt | answer] (the
 * answer's end-of-turn marker). It is saved as `score.weight` of shape
 * (1, C) in model.safetensors, the name and shape transformers'
 * LlamaForSequenceClassification uses (num_labels 1); the causal head
 * (lm_head) is kept unchanged beside it.
 *
 * Loss per pair (TRL RewardTrainer.compute_loss):
 *     -logsigmoid(r_c - r_r - margin)
 * averaged over the batch, plus center_rewards_coefficient *
 * mean((r_c + r_r)^2) when the coefficient is > 0 (Eisenstein et al.
 * 2023, as TRL). Pairs and persona handling are those of DPO (dpo.h).
 */
#ifndef RLHI_REWARD_H
#define RLHI_REWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/dpo.h"
#include "rlhi/model.h"

struct rlhi_reward {
    struct rlhi_model *m; /* the transformer; owned */
    float *score;         /* (C) the scalar head; owned */
};

/* Wraps model `m` (taken: freed with the reward model) with a new head
 * drawn from N(0, 0.02^2) (transformers' initializer_range) with `seed`.
 * 0 or RLHI_ENOMEM (m is then freed too). */
int rlhi_reward_new(struct rlhi_reward **out, struct rlhi_model *m,
                    uint64_t seed);

/* Loads a reward model directory written by rlhi_reward_save(): the
 * transformer (rlhi_model_load) and `score.weight` (1, C) from
 * model.safetensors. RLHI_ENOTFOUND when the directory has no score
 * head (hint: train one with `rlhi reward train`), or the loader's
 * errors. */
int rlhi_reward_load(struct rlhi_reward **out, const char *dir);

/* Writes `dir` as a Hugging Face directory (the model, then
 * model.safetensors rewritten with score.weight added) and copies the
 * tokenizer files of `copy_from` (may be NULL). Errors: RLHI_EIO,
 * RLHI_ENOMEM naming the file. */
int rlhi_reward_save(const struct rlhi_reward *rm, const char *dir,
                     const char *copy_from);

void rlhi_reward_free(struct rlhi_reward *rm);

/* Rewards of `n` token sequences seqs[i] (lens[i] tokens, > 0), run in
 * micro-batches of up to 8. 0, RLHI_EINVAL (a sequence longer than the
 * model's context or a token outside the vocabulary), RLHI_ENOMEM. */
int rlhi_reward_score(struct rlhi_reward *rm, const int32_t *const *seqs,
                      const int *lens, int n, double *out);

struct rlhi_reward_config {
    const char *output_dir;   /* required */
    double learning_rate;     /* 1e-5 (see cmd_reward.c) */
    double num_train_epochs;  /* 1 */
    int64_t max_steps;        /* > 0 overrides epochs; -1 */
    int batch_size;           /* pairs per micro-batch, 8 */
    int grad_accum;           /* 1 */
    uint64_t seed;            /* 42 */
    double warmup_ratio;      /* 0 */
    double weight_decay;      /* 0 */
    double max_grad_norm;     /* 1.0 */
    double center_rewards_coefficient; /* 0: off */
    int logging_steps;        /* 10 */
    int save_steps;           /* 500; 0 none */
    const char *copy_from;    /* tokenizer files to copy, or NULL */
    bool save_final;          /* true */
};

void rlhi_reward_config_init(struct rlhi_reward_config *c);

/* TRL's reward metrics over a set of pairs. */
struct rlhi_reward_metrics {
    double loss;
    double accuracy;   /* fraction with r_c > r_r */
    double margin;     /* mean r_c - r_r */
    double min, mean, max; /* over every reward (chosen and rejected) */
    int pairs;
};

struct rlhi_reward_result {
    int64_t steps;
    double seconds;
    struct rlhi_reward_metrics last; /* last logging window */
};

/* Trains `rm` on pairs `d` (their `margin`s used) with AdamW under warmup
 * + cosine. Every logging step: an INFO line and a JSON line {"loss",
 * "accuracy", "margin", "min_reward", "mean_reward", "max_reward",
 * "grad_norm", "learning_rate", "num_tokens", "epoch", "step"} in
 * output_dir/metrics.jsonl; checkpoints every save_steps, the final model
 * in output_dir. Errors: RLHI_EINVAL, RLHI_ENUMERIC "step N: ...", or
 * those of training and saving. */
int rlhi_reward_train(struct rlhi_reward *rm, const struct rlhi_dpo_data *d,
                      const struct rlhi_reward_config *cfg,
                      struct rlhi_reward_result *res);

/* Metrics of `rm` on pairs `d` (forward only; loss without the centring
 * term). 0 or an error of rlhi_reward_score(). */
int rlhi_reward_eval(struct rlhi_reward *rm, const struct rlhi_dpo_data *d,
                     struct rlhi_reward_metrics *mt);

#endif
