/* Samplers: turn one row of logits (V) into the next token id.
 *
 * Two modes share one interface:
 *
 *   RLHI_SAMPLER_MODERN  the filters of current inference engines, applied
 *     in this fixed order to the distribution p = softmax(logits / T):
 *       1. temperature T (T == 0: greedy argmax, first max on ties; the
 *          other filters are then irrelevant);
 *       2. top-k: keep the k most probable tokens (ties broken towards the
 *          lower id), k == 0 = off;
 *       3. min-p: keep tokens with p >= min_p * p_max, min_p == 0 = off;
 *       4. top-p (nucleus): sort the survivors by probability, descending,
 *          renormalise them, keep the smallest prefix whose cumulative
 *          probability reaches top_p (at least one token), top_p >= 1 = off;
 *       5. renormalise the kept tokens and draw one with rlhi_rng (a
 *          uniform double from xoshiro256** seeded with `seed`).
 *     top-k and min-p commute (both keep an upper set of the same ranking),
 *     so their order only matters for the documentation; top-p sees the
 *     renormalised survivors of both, as in Hugging Face's warpers and
 *     llama.cpp.
 *
 *   RLHI_SAMPLER_LLAMA2C  Andrej Karpathy's llama2.c run.c sampler and RNG,
 *     bit for bit: xorshift64* random_u32 / random_f32, softmax in float in
 *     run.c's order, sample_mult when top_p <= 0 or >= 1, else sample_topp
 *     with its cutoff prefilter, C-library qsort with run.c's comparator and
 *     cdf walk. top_k and min_p are ignored. run.c seeds with time(NULL)
 *     when the seed is 0; rlhi uses RLHI_SAMPLER_DEFAULT_SEED instead so
 *     that runs reproduce.
 *
 * A sampler owns scratch space of V floats plus V (prob, index) pairs; one
 * sampler per sequence (it carries the RNG state). Not thread-safe.
 */
#ifndef RLHI_SAMPLER_H
#define RLHI_SAMPLER_H

#include <stdint.h>

#include "rlhi/base.h"

/* Used when a caller passes seed 0. Any fixed non-zero value would do; it
 * must be non-zero because xorshift64* never leaves the all-zero state. */
#define RLHI_SAMPLER_DEFAULT_SEED 133742ULL

enum rlhi_sampler_mode {
    RLHI_SAMPLER_MODERN = 0,
    RLHI_SAMPLER_LLAMA2C = 1,
};

struct rlhi_sampler_params {
    enum rlhi_sampler_mode mode;
    float temperature; /* >= 0; 0 = greedy argmax */
    int top_k;         /* >= 0; 0 = off (modern only) */
    float top_p;       /* in [0, 1]; 1 = off (llama2c: <= 0 is also off) */
    float min_p;       /* in [0, 1]; 0 = off (modern only) */
    uint64_t seed;     /* 0 = RLHI_SAMPLER_DEFAULT_SEED */
};

/* (prob, index) pair, laid out as run.c's ProbIndex so that qsort sees the
 * same element size and order. */
struct rlhi_prob_index {
    float prob;
    int index;
};

struct rlhi_sampler {
    struct rlhi_sampler_params p;
    int vocab_size;               /* V */
    struct rlhi_rng rng;          /* modern mode */
    uint64_t l2c_state;           /* llama2c mode: xorshift64* state */
    float *probs;                 /* (V) scratch */
    struct rlhi_prob_index *cand; /* (V) scratch */
};

/* Fills `p` with the modern defaults: temperature 1, top_k 0, top_p 1,
 * min_p 0, seed 0 (the default seed). */
void rlhi_sampler_params_default(struct rlhi_sampler_params *p);

/* Fills `p` with run.c's defaults: llama2c mode, temperature 1, top_p 0.9,
 * seed 0 (the default seed). */
void rlhi_sampler_params_llama2c(struct rlhi_sampler_params *p);

/* Checks the ranges listed in struct rlhi_sampler_params. 0 or RLHI_EINVAL
 * with a message naming the parameter and its value. */
int rlhi_sampler_params_check(const struct rlhi_sampler_params *p);

/* Prepares `s` for vocabularies of `vocab_size` ids and seeds its RNG.
 * `p` is copied. 0, RLHI_EINVAL (bad parameter or vocab_size < 1) or
 * RLHI_ENOMEM. On failure `s` holds nothing to release. */
int rlhi_sampler_init(struct rlhi_sampler *s,
                      const struct rlhi_sampler_params *p, int vocab_size);

/* Frees the scratch space; `s` may be re-initialised afterwards. Safe on a
 * zeroed struct. */
void rlhi_sampler_release(struct rlhi_sampler *s);

/* Restarts the RNG from `seed` (0 = the default seed), keeping the other
 * parameters. */
void rlhi_sampler_reseed(struct rlhi_sampler *s, uint64_t seed);

/* Draws the next token from `logits` (V, not modified). Returns the id
 * (>= 0), or RLHI_ENUMERIC when the logits hold a NaN or no finite value
 * (the message says which). With temperature > 0 every call takes exactly
 * one random number, whatever the filters leave; with temperature 0 none,
 * as run.c does. */
int rlhi_sampler_sample(struct rlhi_sampler *s, const float *logits);

/* Modern mode only: writes into `probs` (V) the distribution that
 * rlhi_sampler_sample() draws from (zero for filtered tokens, the rest
 * summing to 1; greedy gives a one-hot vector). Uses no randomness. Returns
 * the number of tokens kept, RLHI_EINVAL in llama2c mode, or
 * RLHI_ENUMERIC as above. */
int rlhi_sampler_distribution(struct rlhi_sampler *s, const float *logits,
                              float *probs);

/* Index of the first largest value of x[0..n-1] (n >= 1). */
int rlhi_sampler_argmax(const float *x, int n);

/* llama2.c run.c's xorshift64* generator on `*state`: the next 32 random
 * bits, and a float in [0, 1) from their top 24 bits. */
uint32_t rlhi_sampler_l2c_u32(uint64_t *state);
float rlhi_sampler_l2c_f32(uint64_t *state);

#endif
