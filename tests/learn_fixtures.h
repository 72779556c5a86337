/* Test fixtures shared by the DPO and reward tests: a tiny random Llama
 * model, pairs whose chosen answer holds a marker token, and removing the
 * scratch directory. Header-only: each test program includes it once. */
#ifndef RLHI_TESTS_LEARN_FIXTURES_H
#define RLHI_TESTS_LEARN_FIXTURES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "rlhi/dpo.h"

/* The marker token and the vocabulary of the marker task. */
enum { MARK = 7, LV = 40 };

/* A 2-layer model of vocabulary V with N(0, scale) weights from `seed`
 * and norms of 1; NULL when it cannot be made. The caller frees it. */
static struct rlhi_model *tiny_model(int V, uint64_t seed, float scale)
{
    struct rlhi_model_config cfg = {
        .dim = 32, .hidden_dim = 64, .n_layers = 2, .n_heads = 4,
        .n_kv_heads = 2, .head_dim = 8, .vocab_size = V,
        .max_seq_len = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
        .rope = RLHI_ROPE_HALF, .tied_embeddings = false, .qkv_bias = false,
        .bos_id = -1, .eos_id = -1,
    };
    struct rlhi_model *m = NULL;
    struct rlhi_rng r;

    if (rlhi_model_new(&m, &cfg))
        return NULL;
    rlhi_rng_seed(&r, seed);
    for (size_t i = 0; i < m->n_params; i++)
        m->params[i] = (float)(scale * rlhi_rng_normal(&r));
    for (int l = 0; l < cfg.n_layers; l++)
        for (int j = 0; j < cfg.dim; j++)
            m->w.layers[l].attn_norm[j] = m->w.layers[l].ffn_norm[j] = 1;
    for (int j = 0; j < cfg.dim; j++)
        m->w.final_norm[j] = 1;
    return m;
}

/* Adds n pairs (vocabulary LV, max length 64) whose chosen answer holds
 * the marker token and rejected not, each with `margin`. */
static void marker_pairs(struct rlhi_dpo_data *d, uint64_t seed, int n,
                         float margin)
{
    struct rlhi_rng r;
    int32_t p[12], a[8], b[8];

    rlhi_rng_seed(&r, seed);
    for (int e = 0; e < n; e++) {
        int np = 3 + (int)rlhi_rng_below(&r, 6);
        int na = 3 + (int)rlhi_rng_below(&r, 4);

        for (int i = 0; i < np; i++)
            p[i] = 10 + (int32_t)rlhi_rng_below(&r, LV - 10);
        for (int i = 0; i < na; i++) {
            a[i] = 10 + (int32_t)rlhi_rng_below(&r, LV - 10);
            b[i] = 10 + (int32_t)rlhi_rng_below(&r, LV - 10);
        }
        a[rlhi_rng_below(&r, (uint64_t)na)] = MARK;
        rlhi_dpo_data_add(d, p, np, a, na, b, na, margin, 64);
    }
}

/* Removes the scratch directory `dir` and all below it; a failure is
 * reported on stderr, not counted. */
static void remove_tmpdir(const char *dir)
{
    char cmd[600];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove '%s'\n", dir);
}

#endif
