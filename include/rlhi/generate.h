/* Text generation and scoring of given text with a loaded model.
 *
 * Generation runs a prompt (token ids) through the model in one prefill
 * call, then samples one token at a time, streaming each piece of text to
 * a callback, until a stop condition or a length limit. N candidates for
 * the same prompt share the prefill: it runs once, its KV cache is copied
 * into N states, and each decoding step advances all unfinished candidates
 * in one batched forward (one pass over the weights for all N).
 *
 * Two behaviours:
 *   - modern (default): max_tokens counts new tokens; stops on the
 *     tokenizer's or model's EOS, on stop_ids and on stop strings; the text
 *     is the generated tokens' pieces, stop string excluded.
 *   - llama2c: llama2.c run.c's generate() exactly. max_tokens counts
 *     positions including the prompt (0 or more than the context: the
 *     context); the prompt tokens after the first are forced and their
 *     pieces are part of the output, as run.c prints them; generation
 *     stops when the sampled token is BOS (id 1), EOS is ordinary text;
 *     pieces are filtered with run.c's safe_printf rule (a single byte that
 *     is neither printable nor whitespace is dropped, and output stops at a
 *     NUL byte). run.c then prints "\n"; that is left to the caller.
 *
 * Scoring gives the log-probability of each completion token given the
 * prompt and the completion tokens before it: log softmax(logits)[token],
 * with the maximum subtracted and the sum of exponentials accumulated in
 * double. This is the log pi(y|x) of DPO and of reward-model data.
 */
#ifndef RLHI_GENERATE_H
#define RLHI_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"
#include "rlhi/model.h"
#include "rlhi/sampler.h"
#include "rlhi/tokenizer.h"

/* Receives text of candidate `seq` (0 for a single generation) as it is
 * decided. Pieces are raw bytes and may split a UTF-8 character; joined,
 * they are the candidate's text. Return 0 to go on, non-zero to stop that
 * candidate (its finish becomes RLHI_FINISH_ABORT). */
typedef int (*rlhi_gen_piece_fn)(int seq, const char *text, size_t len,
                                 void *user);

enum rlhi_finish {
    RLHI_FINISH_LENGTH = 0, /* max_tokens or the context was reached */
    RLHI_FINISH_STOP = 1,   /* EOS, a stop id, a stop string, or BOS in
                               llama2c mode */
    RLHI_FINISH_ABORT = 2,  /* the piece callback asked to stop */
};

struct rlhi_gen_opts {
    struct rlhi_sampler_params sampler;
    int max_tokens; /* modern: new tokens, 0 = until the context is full;
                       llama2c: positions including the prompt (run.c's
                       steps), 0 = the context */
    int max_seq;    /* context in positions; 0 = the model's max_seq_len */
    bool llama2c;   /* run.c's generate() (see above) */
    bool ignore_eos;           /* modern: EOS does not stop */
    const int32_t *stop_ids;   /* modern: more ids that stop generation */
    int n_stop_ids;
    const char *const *stop;   /* strings that stop generation; the text is
                                  cut before the first one */
    int n_stop;
    rlhi_gen_piece_fn on_piece; /* may be NULL */
    void *user;
};

struct rlhi_gen_result {
    int32_t *tokens;  /* sampled ids, the stop token excluded (caller frees
                         with rlhi_gen_result_release) */
    int n_tokens;
    char *text;       /* NUL-terminated text (llama2c: prompt included) */
    size_t text_len;
    enum rlhi_finish finish;
    int stop_token;   /* the id that stopped generation, or -1 */
    int n_prompt;     /* prompt tokens */
    double prefill_s; /* seconds in the prompt's forward pass */
    double decode_s;  /* seconds from the first sampled token to the end */
};

/* Fills `o` with modern defaults (rlhi_sampler_params_default, 256 new
 * tokens, no stop strings, no callback). */
void rlhi_gen_opts_default(struct rlhi_gen_opts *o);

/* Frees a result's arrays and zeroes it. Safe on a zeroed result. */
void rlhi_gen_result_release(struct rlhi_gen_result *r);

/* Generates one continuation of `prompt` (n_prompt >= 1 ids, BOS included
 * when the model wants one). `tok` turns ids into text. On success *res
 * holds the tokens and text (the caller releases it). Errors:
 * RLHI_EINVAL for bad options or an empty prompt, RLHI_ERANGE when the
 * prompt does not fit the context, those of the forward pass and the
 * sampler (RLHI_ENUMERIC for NaN logits), RLHI_ENOMEM. On error *res is
 * zeroed. */
int rlhi_generate(const struct rlhi_model *m, const struct rlhi_tokenizer *tok,
                  const int32_t *prompt, int n_prompt,
                  const struct rlhi_gen_opts *o, struct rlhi_gen_result *res);

/* Generates `n` candidates for one prompt, sharing its prefill. Candidate
 * i samples with seeds[i], or with o->sampler.seed + i when `seeds` is
 * NULL (seed 0 counts as RLHI_SAMPLER_DEFAULT_SEED first), so candidate i
 * equals rlhi_generate() with that seed. `res` has room for n results,
 * which the caller releases. Errors as rlhi_generate(); on error all n
 * results are zeroed. */
int rlhi_generate_n(const struct rlhi_model *m,
                    const struct rlhi_tokenizer *tok, const int32_t *prompt,
                    int n_prompt, const struct rlhi_gen_opts *o,
                    const uint64_t *seeds, int n,
                    struct rlhi_gen_result *res);

/* Loads a model and the tokenizer that goes with it, as `rlhi generate`
 * and `rlhi score` do. `tok_path` may be NULL: a Hugging Face directory
 * supplies its own tokenizer; a llama2.c checkpoint uses "tokenizer.bin"
 * beside it (run.c's default). A llama2.c tokenizer file is read with the
 * model's vocabulary size, as run.c does. On success *m and *tok are new
 * (the caller frees them with rlhi_model_free / rlhi_tokenizer_free).
 * Errors: those of the loaders; RLHI_ENOTFOUND with a hint when the
 * default tokenizer is missing. */
int rlhi_generate_load(const char *model_path, const char *tok_path,
                       struct rlhi_model **m, struct rlhi_tokenizer **tok);

/* ---- scoring -------------------------------------------------------- */

/* Log-probabilities of `completion` (n_completion >= 0 ids) given `prompt`
 * (n_prompt >= 1 ids): logprobs[j] = log p(completion[j] | prompt,
 * completion[0..j-1]), and *sum their sum (accumulated in double; may be
 * NULL). `logprobs` has room for n_completion floats (may be NULL when only
 * the sum is wanted). The prompt runs once without logits; the completion
 * runs in chunks with all logits, so memory stays at a few rows of V
 * whatever the length. Errors: RLHI_EINVAL for an empty prompt or a bad
 * id, RLHI_ERANGE when prompt + completion exceed the model's context,
 * RLHI_ENUMERIC for a non-finite logit, RLHI_ENOMEM. */
int rlhi_score(const struct rlhi_model *m, const int32_t *prompt,
               int n_prompt, const int32_t *completion, int n_completion,
               float *logprobs, double *sum);

/* Scores `k` completions of one prompt, running the prompt once: the KV
 * cache of prompt[0..n_prompt-2] is kept and each completion is run from
 * the prompt's last token. completions[i] has n_completions[i] ids;
 * logprobs[i] (or NULL) receives them and sums[i] (or NULL) their sum. For
 * DPO, chosen and rejected share a prompt. Errors as rlhi_score(). */
int rlhi_score_n(const struct rlhi_model *m, const int32_t *prompt,
                 int n_prompt, const int32_t *const *completions,
                 const int *n_completions, int k, float *const *logprobs,
                 double *sums);

/* log softmax(logits)[id] over V logits, with the maximum subtracted and
 * the exponentials summed in double. NAN when a logit is NaN or none is
 * finite. Exposed so that tests and the trainer share one definition. */
double rlhi_logprob_of(const float *logits, int V, int id);

#endif
