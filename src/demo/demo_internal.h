/* Internals shared by the demo's files: the store's contents in memory
 * and the demo's preference pairs (src/demo/pairs.c). */
#ifndef RLHI_DEMO_INTERNAL_H
#define RLHI_DEMO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "rlhi/demo.h"
#include "rlhi/pipeline.h"
#include "rlhi/store.h"

struct rlhi__demo_user {
    char *key;     /* hashed_ip */
    char *persona; /* derived persona text (builtin), or NULL */
    int n_conv;
};

struct rlhi__demo_conv {
    char hash[40];
    int user;       /* index into users, or -1 */
    int n;          /* messages */
    char **role;    /* (n) */
    char **content; /* (n) */
    int *label;     /* (n) builtin feedback label of a user turn, or -1 */
};

struct rlhi__demo_data {
    struct rlhi__demo_user *users;
    int n_users;
    struct rlhi__demo_conv *conv;
    int n_conv;
};

/* Loads users (with personas), conversations, messages and builtin
 * feedback labels from the store. Release with rlhi__demo_data_release. */
int rlhi__demo_data_load(struct rlhi_store *s, struct rlhi__demo_data *d);
void rlhi__demo_data_release(struct rlhi__demo_data *d);
int rlhi__demo_user_find(const struct rlhi__demo_data *d, const char *key);

/* First message index of a prompt ending with request `req` that keeps
 * earlier whole exchanges within max_chars. */
int rlhi__demo_prompt_start(const struct rlhi__demo_conv *c, int req,
                            size_t max_chars);

struct rlhi__demo_pair {
    int conv, req, start; /* prompt = conv messages [start, req] */
    char *chosen, *rejected;
    double cs, rs;        /* judge scores (derived persona) */
    bool kept;            /* passed the quality filter */
};

struct rlhi__demo_pairs {
    struct rlhi__demo_pair *p;
    int n, cap;
};

int rlhi__demo_pairs_add(struct rlhi__demo_pairs *p, int conv, int req,
                         int start, const char *chosen, const char *rejected,
                         double cs, double rs);
void rlhi__demo_pairs_release(struct rlhi__demo_pairs *p);

/* Writes pairs (only kept ones when only_kept; at most `limit`, 0: all)
 * as TRL JSONL with a "persona" field, or, with `sft`, as chat JSONL
 * {"messages": [system persona, prompt..., chosen]}. *written gets the
 * count. */
int rlhi__demo_pairs_write(const struct rlhi__demo_data *d,
                           const struct rlhi__demo_pairs *p,
                           const char *source, bool only_kept, int limit,
                           bool sft, const char *path, int *written);

#endif
