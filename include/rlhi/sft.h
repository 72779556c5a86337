/* Supervised fine-tuning: chat conversations rendered with their template,
 * loss on the assistant tokens only, trained with AdamW under a warmup +
 * cosine schedule, with checkpoints that resume bit for bit.
 *
 * Data flow: JSONL {"messages": [...]} -> rlhi_sft_data_load() (render,
 * tokenize, mark assistant tokens) -> rows (one example per row, or
 * several packed into rows of max_length with a segment id each) ->
 * micro-batches in a seeded order per epoch -> rlhi_sft_train().
 *
 * Names and defaults follow TRL's SFTConfig where one exists, so a run
 * here and a TRL run with the same settings take the same steps:
 * the loss is the mean over every scored token of the accumulated
 * micro-batches (as transformers >= 4.46 normalises gradient
 * accumulation), and metrics carry TRL's names.
 */
#ifndef RLHI_SFT_H
#define RLHI_SFT_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/chat.h"
#include "rlhi/model.h"
#include "rlhi/tokenizer.h"

/* One tokenized example. */
struct rlhi_sft_example {
    int32_t *tokens; /* (n) */
    uint8_t *scored; /* (n) 1 where the token is trained on (assistant) */
    int n;
};

struct rlhi_sft_data {
    struct rlhi_sft_example *ex;
    int n, cap;
    int64_t skipped; /* input lines that could not be used */
};

/* Appends a copy of one example (truncated to n tokens). 0 or
 * RLHI_ENOMEM. */
int rlhi_sft_data_add(struct rlhi_sft_data *d, const int32_t *tokens,
                      const uint8_t *scored, int n);
void rlhi_sft_data_release(struct rlhi_sft_data *d);

/* Reads JSONL conversations {"messages": [{"role", "content"}, ...]} from
 * `path`, renders each with template `kind`, tokenizes it with `tok`
 * (special tokens recognised; BOS prepended when the tokenizer wants it and
 * the template did not write it) and marks the tokens of each assistant
 * answer and its end-of-turn marker as scored. Examples are truncated to
 * `max_length` tokens (keeping the start). A malformed line is reported
 * through rlhi_warn with file and line, counted in d->skipped, and
 * skipped. Errors: those of the reader; RLHI_EFORMAT when no line gave an
 * example. */
int rlhi_sft_data_load(struct rlhi_sft_data *d, const char *path,
                       const struct rlhi_tokenizer *tok,
                       enum rlhi_chat_kind kind, int max_length);

struct rlhi_sft_config {
    const char *output_dir;   /* required */
    double learning_rate;     /* 2e-5 */
    double num_train_epochs;  /* 3 */
    int64_t max_steps;        /* > 0 overrides the epochs; -1 */
    int batch_size;           /* per_device_train_batch_size, 8 */
    int grad_accum;           /* gradient_accumulation_steps, 1 */
    int max_length;           /* 1024 */
    uint64_t seed;            /* 42 */
    double warmup_ratio;      /* 0 */
    double weight_decay;      /* 0 */
    double max_grad_norm;     /* 1.0; <= 0 no clipping */
    int logging_steps;        /* 10 */
    int save_steps;           /* 500; 0: no intermediate checkpoints */
    bool packing;             /* several examples per row */
    const char *resume_from;  /* a checkpoint directory, or NULL */
    const char *copy_from;    /* a directory whose tokenizer files are
                               * copied into every saved model, or NULL */
    bool save_final;          /* write the final model into output_dir
                               * (default true) */
    /* For tests: return as if killed right after step `stop_after` (its
     * checkpoint, if due, written); poison the gradients at step
     * `nan_at_step` (1-based). 0 = off. */
    int64_t stop_after;
    int64_t nan_at_step;
};

/* Fills `c` with the defaults above. */
void rlhi_sft_config_init(struct rlhi_sft_config *c);

struct rlhi_sft_result {
    int64_t steps;      /* optimiser steps done in total */
    double last_loss;   /* loss of the last step */
    int64_t num_tokens; /* input tokens trained on */
    double seconds;     /* wall time of this call */
};

/* Trains `m` (its parameters are made writable with rlhi_model_own) on
 * `d`. Every logging step it logs a readable line at INFO level and
 * appends {"loss", "grad_norm", "learning_rate", "num_tokens", "epoch",
 * "step"} to output_dir/metrics.jsonl; every save_steps it writes
 * output_dir/checkpoint-<step> (rlhi_checkpoint_save); at the end the
 * final model goes to output_dir. With resume_from, the weights,
 * optimiser, data position and RNG come from that checkpoint and the run
 * continues exactly as if it had not stopped.
 * Errors: RLHI_EINVAL for bad settings or an empty dataset,
 * RLHI_ENUMERIC "step N: ..." when a loss or gradient is NaN/Inf (nothing
 * is saved for that step or after it), or those of training and saving. */
int rlhi_sft_train(struct rlhi_model *m, const struct rlhi_sft_data *d,
                   const struct rlhi_sft_config *cfg,
                   struct rlhi_sft_result *res);

#endif
