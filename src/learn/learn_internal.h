/* Pieces the SFT, DPO and reward trainers share: rendering and
 * tokenizing one conversation with its assistant tokens marked, copying
 * tokenizer files next to a saved model (sft.c); the epoch order, the
 * step schedule, metrics lines, reading JSONL records and the benchmark
 * helpers (common.c). */
#ifndef RLHI_LEARN_INTERNAL_H
#define RLHI_LEARN_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/chat.h"
#include "rlhi/jsonl.h"
#include "rlhi/model.h"
#include "rlhi/tokenizer.h"

/* Growable token list with a scored flag per token (sft.c). */
struct toks {
    int32_t *id;
    uint8_t *sc;
    size_t n, cap;
};

/* Renders `root` = {"messages": [...]} with template `kind`, tokenizes it
 * (BOS added when the tokenizer wants it and the template did not write
 * it) and marks each assistant answer and its end-of-turn marker as
 * scored (sc = 1). out->n is reset first; out's arrays are grown as
 * needed and stay the caller's (rlhi_free). 0, RLHI_EFORMAT (the message
 * says what is wrong with the record) or RLHI_ENOMEM. */
int rlhi__sft_example(json_t *root, const struct rlhi_tokenizer *tok,
                      enum rlhi_chat_kind kind, struct toks *out);

/* Copies the tokenizer and template files found in `from` (NULL: none)
 * into `to`. 0 or RLHI_EIO / RLHI_ENOMEM. */
int rlhi__copy_tokenizer(const char *from, const char *to);

/* ---- common.c: the training loop ---- */

/* The order of rows in `epoch`: Fisher-Yates with a generator seeded by
 * the run's seed and the epoch. Leaves the generator in *rng. */
void rlhi__epoch_order(int *perm, int n, uint64_t seed, int64_t epoch,
                       struct rlhi_rng *rng);

/* The schedule of a run over `rows` rows in micro-batches of `batch`
 * rows, `accum` micro-batches a step (the last ones possibly short).
 * Returns the optimiser steps per epoch; sets *total to max_steps when
 * > 0, else epochs x steps per epoch rounded up, and *warmup to the
 * warm-up steps that warmup_ratio gives. */
int64_t rlhi__schedule(int64_t rows, int batch, int accum,
                       int64_t max_steps, double epochs, double warmup_ratio,
                       int64_t *total, int64_t *warmup);

/* 0 when `gnorm` is finite, else RLHI_ENUMERIC naming step + 1 (the step
 * being taken). */
int rlhi__check_grad_norm(double gnorm, int64_t step);

/* Whether step `step` (counted from 1) logs metrics: every `every` steps
 * (never when every <= 0) and at the last step `total`. */
bool rlhi__is_log_step(int64_t step, int every, int64_t total);

/* Whether step `step` saves a checkpoint: every `every` steps (never when
 * every <= 0) except the last, which saves the final model instead. */
bool rlhi__is_save_step(int64_t step, int every, int64_t total);

/* Sets *dir to a new output_dir/checkpoint-STEP (the caller frees it).
 * 0 or RLHI_ENOMEM. */
int rlhi__checkpoint_dir(const char *output_dir, int64_t step, char **dir);

/* Appends printf-formatted text (one metrics line) to `path`, creating
 * it. 0 or RLHI_EIO naming the file. */
int rlhi__append_line(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- common.c: data ---- */

/* The next record of `rd` into *root (the caller json_decref()s it),
 * skipping unparsable lines with a warning and counting them in
 * *skipped. 1 for a record, 0 at the end, or a negative error. */
int rlhi__next_record(struct rlhi_jsonl *rd, json_t **root,
                      int64_t *skipped);

/* Warns "path:line: <the current error message>" for the record just read
 * from `rd` and counts it in *skipped. */
void rlhi__skip_record(const char *path, const struct rlhi_jsonl *rd,
                       int64_t *skipped);

/* ---- common.c: benchmarks ---- */

/* DESIGN.md section 6's Llama shape, 124.7M parameters. */
extern const struct rlhi_model_config rlhi__bench_cfg;

/* Seeds *rng with 1234 and fills m with N(0, 0.02) weights and norms of
 * 1; *rng is left for the caller's random tokens. */
void rlhi__bench_weights(struct rlhi_model *m, struct rlhi_rng *rng);

/* Process CPU seconds (all threads). */
double rlhi__cpu_now(void);

/* Runs head + the rlhi__bench_cfg model in PyTorch + tail as a python3
 * script with `args`, calling on_line(line, ctx) for each line it prints
 * (stderr is dropped). The script is written to /tmp/rlhi-bench-TAG-*
 * and removed. 0, or -1 when PyTorch is missing or the script cannot be
 * written. */
int rlhi__run_torch(const char *tag, const char *head, const char *tail,
                    const char *args,
                    void (*on_line)(const char *line, void *ctx), void *ctx);

#endif
