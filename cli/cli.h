/* Shared pieces of the `rlhi` command: option parsing, exit codes, output.
 *
 * Each subcommand lives in its own file cli/cmd_<name>.c as
 *     int cmd_<name>(int argc, char **argv);
 * where argv[0] is the subcommand's name. It returns an exit status:
 * 0 ok, 1 runtime error, 2 usage error, 3 bad input data.
 */
#ifndef RLHI_CLI_H
#define RLHI_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/base.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_DATA = 3 };

enum cli_type { CLI_STR, CLI_INT, CLI_I64, CLI_FLOAT, CLI_DOUBLE, CLI_BOOL };

/* One long option "--name". `dst` points to a const char *, int, int64_t,
 * float, double or bool matching `type`. A CLI_BOOL option takes no value
 * ("--name"), or an explicit "--name=true|false|1|0". */
struct cli_opt {
    const char *name;
    enum cli_type type;
    void *dst;
    const char *help;
};

/* The optimiser and schedule options of `rlhi sft` and `rlhi dpo`, in
 * their --help order: `c` is the command's config (fields named as in
 * struct rlhi_sft_config), `seed` an int64_t, `lr` and `epochs` the
 * defaults that --help shows. */
#define CLI_TRAIN_OPTS(c, seed, lr, epochs)                                \
    {"learning_rate", CLI_DOUBLE, &(c).learning_rate, lr},                 \
    {"num_train_epochs", CLI_DOUBLE, &(c).num_train_epochs, epochs},       \
    {"max_steps", CLI_I64, &(c).max_steps, "> 0 overrides epochs (-1)"},   \
    {"per_device_train_batch_size", CLI_INT, &(c).batch_size, "8"},        \
    {"gradient_accumulation_steps", CLI_INT, &(c).grad_accum, "1"},        \
    {"max_length", CLI_INT, &(c).max_length, "1024"},                      \
    {"seed", CLI_I64, &(seed), "42"},                                      \
    {"warmup_ratio", CLI_DOUBLE, &(c).warmup_ratio, "0"},                  \
    {"weight_decay", CLI_DOUBLE, &(c).weight_decay, "0"},                  \
    {"max_grad_norm", CLI_DOUBLE, &(c).max_grad_norm, "1.0"}

/* Parses argv[1..] against `opts` (terminated by a {NULL} entry).
 * "--name value" and "--name=value" both work; "--config FILE" reads a JSON
 * object with the same keys first, so that flags on the command line win.
 * "--help" prints `usage` and the options to stdout and returns -1 (the
 * caller exits 0). Positional arguments are collected into *pos (may be NULL
 * when none are allowed). Returns 0, -1 for help, or EXIT_USAGE after
 * printing the problem. */
int cli_parse(int argc, char **argv, const struct cli_opt *opts,
              const char *usage, int *npos, char ***pos);

/* Prints "rlhi: error: <what>: <library message>" to stderr and returns the
 * exit status that fits the library code (3 for bad data, else 1). */
int cli_fail(int code, const char *what);

/* Maps a library code to an exit status. */
int cli_exit_code(int code);

struct rlhi_tokenizer;

/* Loads the tokenizer at `path` (a tokenizer file or a directory holding
 * one) into *tok and sets *dir to a new copy of the directory it lies in
 * (NULL when out of memory), for copying next to a trained model. The
 * caller frees both. 0, or an exit status after printing the error. */
int cli_load_tokenizer(const char *path, struct rlhi_tokenizer **tok,
                       char **dir);

struct rlhi_store;

/* Opens the existing store `db` (stages other than ingest must not make an
 * empty one from a typo). 0, or an exit status after printing the error:
 * --db missing (db NULL; the hint names `cmd`), no such file (with a
 * hint), not a store. */
int cli_open_store(const char *db, const char *cmd, struct rlhi_store **s);

/* Installs the stderr log hook ("rlhi: <level>: <message>") and, on a
 * terminal, a progress bar. Called once by main. */
void cli_setup_logging(void);

/* Subcommands. */
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_status(int argc, char **argv);
int bench_ingest(int argc, char **argv);
int bench_feedback(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench_serve(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_feedback(int argc, char **argv);
int cmd_persona(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_pairs(int argc, char **argv);
int cmd_pairs_export(int argc, char **argv);
/* Model-backed feedback/persona stages (cmd_pairs.c): cmd_feedback and
 * cmd_persona hand over when cli_backend_is_model(argc, argv). */
bool cli_backend_is_model(int argc, char **argv);
int cmd_llm_stage(int argc, char **argv);
int cmd_sft(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_dpo(int argc, char **argv);
int cmd_reward(int argc, char **argv);

#endif
