/* rlhi demo: the whole RLHI method end to end in the simulated world
 * (DESIGN.md section 5), small enough for two CPU cores:
 *
 *   base model  world corpus -> BPE tokenizer -> tiny Llama -> SFT
 *               (cached under the work dir, keyed by the recipe)
 *   interact    simulated users chat with that model: on-policy
 *               WildChat-schema logs + hidden truth
 *   pipeline    ingest -> feedback labels -> personas -> pairs
 *               (rewrite, regenerate, reward-ranked; quality filter)
 *   training    SFT on rewrites; DPO with and without persona; ablations
 *   evaluation  simulated judge on held-out requests of every user:
 *               personalisation win rate vs the base model with a
 *               bootstrap 95% interval, correctness; persona and feedback
 *               accuracy against the truth
 *
 * Every number it reports comes from the simulated world and is labelled
 * so. Rows whose pieces are missing are reported as "not run: <why>",
 * never with a number. Progress goes through the log hook; the table goes
 * to the FILE the caller gives; an HTML report goes to the work dir.
 */
#ifndef RLHI_DEMO_H
#define RLHI_DEMO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rlhi/base.h"
#include "rlhi/sim.h"

/* ---- base model recipe ------------------------------------------------ */

struct rlhi_demo_base_opts {
    int64_t conversations; /* corpus size */
    uint64_t seed;
    int vocab_size;        /* BPE ids, specials included */
    int dim, hidden_dim, n_layers, n_heads, max_seq_len;
    int64_t sft_steps;
    int batch_size;
    double learning_rate;
    int max_length;        /* SFT rows, tokens */
};

/* The quick recipe (see src/demo/base.c for the measured reasons). */
void rlhi_demo_base_opts_default(struct rlhi_demo_base_opts *o);

struct rlhi_demo_base_info {
    bool cached;        /* found under the work dir, not retrained */
    double seconds;     /* wall time of this call */
    double final_loss;  /* last logged SFT loss (from metrics.jsonl) */
    int64_t n_params;
};

/* Makes (or finds) the base model under `work_dir`/base-<key>, where
 * <key> hashes every recipe option: a Hugging Face directory with
 * config.json, model.safetensors, tokenizer.json, tokenizer_config.json
 * and metrics.jsonl. *model_dir is a new string (rlhi_free). Errors of
 * the stages, naming the file. */
int rlhi_demo_base_model(const struct rlhi_demo_base_opts *o,
                         const char *work_dir, char **model_dir,
                         struct rlhi_demo_base_info *info);

/* How well a model follows the world's styles and feedback: for `n`
 * sampled requests, the first answer is read back (readable share,
 * correctness), then a feedback turn asks to move one dimension to the
 * other side and the revision is read back on that dimension. */
struct rlhi_demo_quality {
    int n;
    double readable;           /* dimensions read as other than unknown */
    double correct, wrong;     /* first answers judged right / wrong */
    double follow;             /* revisions that moved as asked */
    double follow_dim[RLHI_SIM_NDIM];
    double seconds;
};

int rlhi_demo_base_quality(const char *model_dir, int n, uint64_t seed,
                           struct rlhi_demo_quality *q);

/* ---- simulated users chatting with a model ----------------------------- */

/* Runs the world of `c` with a real model answering (the rlhi template,
 * sampling seeded per turn from the world's answer stream) and writes the
 * world's files into `out_dir` (logs.jsonl, truth.jsonl, users.jsonl,
 * heldout.jsonl). `temperature` < 0 means the default 0.7. */
int rlhi_demo_interact(const char *model_dir, const struct rlhi_sim_config *c,
                       float temperature, const char *out_dir,
                       struct rlhi_sim_stats *st);

/* ---- the demo ---------------------------------------------------------- */

struct rlhi_demo_opts {
    const char *work_dir; /* "demo-out" */
    uint64_t seed;        /* 1 */
    bool full;            /* the larger run */
    /* 0: the size --full or the quick default chooses. */
    int users;
    int heldout;          /* held-out requests per user (6; tiny 2) */
    int64_t base_steps;
    int train_epochs;
    /* Miniature run for the tests: tiny model and world. */
    bool tiny;
};

void rlhi_demo_opts_default(struct rlhi_demo_opts *o);

#define RLHI_DEMO_MAX_ROWS 12

struct rlhi_demo_row {
    char name[80];
    bool run;              /* false: see why */
    char why[192];         /* "not run: ..." reason */
    double win, lo, hi;    /* personalisation win rate vs base, 95% CI */
    double correct;        /* share of held-out answers judged right */
    int pairs;             /* training pairs used */
    char metrics[512];     /* the training metrics.jsonl, or "" */
};

struct rlhi_demo_result {
    struct rlhi_demo_row rows[RLHI_DEMO_MAX_ROWS];
    int n_rows;
    /* Reasoning: arithmetic accuracy on held-out arithmetic requests. */
    bool reasoning_run;
    char reasoning_why[160];
    double arith_before, arith_after;
    int arith_n, arith_pairs;
    /* Base model and pipeline figures. */
    struct rlhi_demo_base_info base;
    struct rlhi_demo_quality quality;
    double persona_acc[RLHI_SIM_NDIM];
    double fb_precision, fb_recall, fb_accuracy;
    int heldout, users, conversations;
    double dissatisfied_share;
    int persona_counts[RLHI_SIM_NDIM][3]; /* high, low, no signal */
    double seconds;
    char report_path[512];
};

/* Runs the demo. Progress is logged at INFO level. *res is filled (the
 * rows that ran and the reasons of those that did not); the HTML report
 * is written to work_dir/report.html. Errors of the stages. */
int rlhi_demo_run(const struct rlhi_demo_opts *o,
                  struct rlhi_demo_result *res);

/* Writes the result as a text table shaped like the RLHI paper's. */
int rlhi_demo_table_write(const struct rlhi_demo_result *res, FILE *f);

#endif
