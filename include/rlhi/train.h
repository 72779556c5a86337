/* Training engine: a forward pass that keeps its activations, the backward
 * pass of every op, the fused output-head cross-entropy, AdamW, the
 * learning-rate schedule and gradient clipping.
 *
 * Dimensions as in model.h; N = B*T rows. The training state owns one
 * block per role, each carved into named views (llm.c style):
 *   gradients   the layout of rlhi_model_tensor_list(), views in t->grad.w
 *   activations every tensor the backward pass reads, per layer
 *   scratch     gradients of activations, reused layer after layer
 * The parameters stay in the model (t->m->params); AdamW state lives in
 * struct rlhi_adamw (optim.c), same layout again.
 *
 * One step, as the trainers use it:
 *     rlhi_train_zero_grad(t);
 *     for each micro-batch:
 *         rlhi_train_forward(t, &batch);          -> t->out (N, C)
 *         rlhi_train_ce(t, targets, weights, ...); -> loss, t->d_out
 *         rlhi_train_backward(t);                  -> t->grad (accumulated)
 *     norm = rlhi_grad_norm(t->grad.params, n);     (NaN/Inf: stop)
 *     rlhi_adamw_step(&opt, params, grads, lr, wd,
 *                     rlhi_clip_coef(norm, max_grad_norm));
 * A DPO or reward trainer replaces rlhi_train_ce() by its own loss: it
 * either calls rlhi_train_ce() with per-token weights (the DPO gradient is
 * a per-sequence coefficient times the gradient of summed log-probs), or
 * fills t->d_out itself (a scalar head on the final hidden state), or
 * hands rlhi_train_backward_logits() a (N, V) d(logits).
 *
 * Packing: several conversations may share one row. A segment id per token
 * (contiguous runs of equal ids form a segment) keeps attention inside its
 * segment, and positions restart at 0 at each segment's first token unless
 * the caller gives positions.
 */
#ifndef RLHI_TRAIN_H
#define RLHI_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/model.h"

/* One micro-batch of B rows of T tokens. */
struct rlhi_batch {
    int B, T;
    const int32_t *tokens; /* (B, T) input ids */
    const int32_t *seg;    /* (B, T) segment ids, or NULL: one per row */
    const int32_t *pos;    /* (B, T) rotary positions, or NULL: restart at
                            * 0 at each segment start */
};

/* Saved activations of one layer; every view has N = B*T rows. */
struct rlhi_train_layer_acts {
    float *res;    /* (N, C) residual entering the layer */
    float *rstd1;  /* (N) 1/rms of res */
    float *xn1;    /* (N, C) rmsnorm(res) * attn_norm */
    float *q;      /* (N, NH*HS) after bias and rotary */
    float *k;      /* (N, KVH*HS) after bias and rotary */
    float *v;      /* (N, KVH*HS) */
    float *lse;    /* (N, NH) log-sum-exp of the scaled scores */
    float *y;      /* (N, NH*HS) attention output before Wo */
    float *res2;   /* (N, C) residual after attention */
    float *rstd2;  /* (N) 1/rms of res2 */
    float *xn2;    /* (N, C) rmsnorm(res2) * ffn_norm */
    float *gate;   /* (N, F) xn2 Wg^T */
    float *up;     /* (N, F) xn2 Wu^T */
};

struct rlhi_train {
    struct rlhi_model *m;     /* parameters; not owned */
    struct rlhi_model grad;   /* gradient block (grad.params, n_params) and
                               * its views (grad.w), same layout as m */
    int B, T;                 /* capacity */
    int nB, nT;               /* shape of the last forward */

    float *acts;              /* the activation block */
    size_t n_acts;            /* floats in it */
    struct rlhi_train_layer_acts *layer; /* L entries */
    float *res_final;         /* (N, C) residual after the last layer */
    float *rstdf;             /* (N) 1/rms of res_final */
    float *out;               /* (N, C) rmsnorm(res_final) * final_norm */
    float *d_out;             /* (N, C) d loss / d out, filled by the loss */
    int32_t *tok;             /* (N) input ids of the last forward */
    int32_t *pos;             /* (N) rotary positions */
    int32_t *start;           /* (N) first row index of each token's
                               * segment within its sequence */
    int32_t *pre;             /* (N) columns [0, pre) of its sequence a
                               * token also attends to (prefix sharing;
                               * 0: none) */

    float *scratch;           /* the scratch block */
    float *hb;                /* (N, F) silu(gate) * up */
    float *d_res;             /* (N, C) gradient of the residual stream */
    float *d_xn;              /* (N, C) */
    float *d_y;               /* (N, NH*HS) */
    float *d_q;               /* (N, NH*HS) */
    float *d_k;               /* (N, KVH*HS) */
    float *d_v;               /* (N, KVH*HS) */
    float *d_gate;            /* (N, F) */
    float *d_up;              /* (N, F) */
    float *head;              /* (HR, V) logits of a chunk of rows */
    int head_rows;            /* HR */
    float *rope_cos;          /* (max_seq_len, HS/2) */
    float *rope_sin;          /* (max_seq_len, HS/2) */
    int nthr;                 /* threads the attention scratch is for */
};

/* Makes a training state for model `m` (kept by the caller, must outlive
 * the state; its parameter block must be writable for the optimiser) that
 * can run batches up to B x T. Gradients start at zero. Returns 0,
 * RLHI_EINVAL (T above the model's context, B or T not positive) or
 * RLHI_ENOMEM naming how much was asked. *out is freed with
 * rlhi_train_free(). */
int rlhi_train_new(struct rlhi_train **out, struct rlhi_model *m, int B,
                   int T);
void rlhi_train_free(struct rlhi_train *t);

/* Sets every gradient to zero. */
void rlhi_train_zero_grad(struct rlhi_train *t);

/* Runs the batch, keeping activations, and leaves the final hidden states
 * in t->out and zeros in t->d_out. RLHI_EINVAL for a shape above capacity
 * or a token outside the vocabulary (naming row and column). */
int rlhi_train_forward(struct rlhi_train *t, const struct rlhi_batch *b);

/* rlhi_train_forward() with prefix sharing: when `prefix` (B, T) is not
 * NULL, token (b, t) also attends to columns [0, prefix[b*T+t]) of its row
 * besides its own segment, so several segments can branch from one shared
 * prefix computed once (DPO: the rejected answer reads the prompt laid
 * out before the chosen one; give it positions that continue the
 * prefix). prefix <= the column where the token's segment starts;
 * otherwise RLHI_EINVAL naming row and column. The backward pass follows
 * the same attention pattern. */
#define RLHI_TRAIN_HAS_PREFIX 1
int rlhi_train_forward_prefix(struct rlhi_train *t, const struct rlhi_batch *b,
                              const int32_t *prefix);

/* Writes the (N, V) logits of the last forward into `logits`. */
void rlhi_train_logits(struct rlhi_train *t, float *logits);

/* Accumulates the output head's gradient and d_out from a given (N, V)
 * d(loss)/d(logits) of the last forward. */
void rlhi_train_backward_logits(struct rlhi_train *t, const float *dlogits);

/* The output head fused with cross-entropy, a chunk of rows at a time, so
 * the (N, V) logits are never all in memory. For each row r with
 * targets[r] >= 0, logp[r] = log softmax(logits_r)[targets[r]]; rows with
 * a negative target get logp 0 and weight 0. The loss is
 *     -sum_r weights[r] * logp[r]
 * (weights NULL: 1 / number of scored rows, the mean). When `backward`,
 * its gradient is accumulated into t->d_out and the head's gradient.
 * `loss` and `logp` (N) may be NULL. Returns 0, RLHI_EINVAL for a target
 * outside the vocabulary, RLHI_ENUMERIC when the loss is not finite. */
int rlhi_train_ce(struct rlhi_train *t, const int32_t *targets,
                  const float *weights, bool backward, double *loss,
                  float *logp);

/* Back-propagates t->d_out through the final norm and every layer to the
 * embeddings, adding into the gradient block. Call once per forward. */
int rlhi_train_backward(struct rlhi_train *t);

/* Sums per-token log-probs into per-sequence totals: for each i < n with
 * slot[i] >= 0, sums[slot[i]] += logp[i]. `sums` (nslots) is zeroed first.
 * This is how DPO reads log pi(y|x) for the answer tokens of each
 * segment. */
void rlhi_logp_sums(const float *logp, const int32_t *slot, int n,
                    double *sums, int nslots);

/* True when every one of the n floats is finite (NaN/Inf check of losses
 * and gradients). */
bool rlhi_all_finite(const float *x, size_t n);

/* ---- optimiser, schedule, clipping (optim.c) ------------------------ */

struct rlhi_adamw {
    size_t n;        /* parameters */
    float *m;        /* (n) first moment; m and v are one allocation */
    float *v;        /* (n) second moment */
    int64_t step;    /* updates done so far */
    float beta1, beta2, eps;
    /* (n_ranges) [start, end) float ranges that get weight decay: the
     * matrices (ndim 2), not norms and biases, as Hugging Face's Trainer
     * decides. NULL ranges: decay everything. */
    size_t (*ranges)[2];
    int n_ranges;
};

/* Makes AdamW state for `n` parameters, moments zero, betas (0.9, 0.999),
 * eps 1e-8 (PyTorch's defaults). When `cfg` is not NULL the weight-decay
 * ranges are the 2-D tensors of its layout. 0 or RLHI_ENOMEM. */
int rlhi_adamw_init(struct rlhi_adamw *o, size_t n,
                    const struct rlhi_model_config *cfg);
void rlhi_adamw_release(struct rlhi_adamw *o);

/* One update of `params` from `grads` (both n) with decoupled weight decay
 * and bias correction, exactly as torch.optim.AdamW:
 *     g *= grad_scale (the clipping coefficient; 1 for none)
 *     p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *     p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * Folding the clipping scale in saves a pass over the gradients. Weight
 * decay applies to o->ranges only. Increments o->step first
 * (t = o->step). */
void rlhi_adamw_step(struct rlhi_adamw *o, float *params, const float *grads,
                     float lr, float weight_decay, float grad_scale);

/* L2 norm of `n` gradients, summed in double in fixed chunks so that the
 * result does not depend on the thread count. */
double rlhi_grad_norm(const float *g, size_t n);

/* The factor clip_grad_norm_ scales gradients of global norm `norm` by:
 * max_norm / (norm + 1e-6) when that is below 1, else 1 (also for
 * max_norm <= 0 and non-finite norms). */
float rlhi_clip_coef(double norm, double max_norm);

/* Clips the gradients to global norm `max_norm` as
 * torch.nn.utils.clip_grad_norm_ does (scale by max_norm / (norm + 1e-6)
 * when that is below 1; max_norm <= 0: no clipping). Returns the norm
 * before clipping (NaN/Inf when the gradients are not finite; then the
 * gradients are left as they are). */
double rlhi_grad_clip(float *g, size_t n, double max_norm);

/* The learning rate of optimiser step `step` (0 = the first update) under
 * Hugging Face's get_cosine_schedule_with_warmup: linear from 0 over
 * `warmup` steps, then half a cosine down to 0 at `total`. */
double rlhi_lr_cosine(double base, int64_t step, int64_t warmup,
                      int64_t total);

/* Warmup steps for a warmup ratio, as the HF Trainer: ceil(ratio*total). */
int64_t rlhi_warmup_steps(double ratio, int64_t total);

/* ---- checkpoints (checkpoint.c) ------------------------------------ */

/* Where a training run stands, saved beside the weights so that a resumed
 * run continues bit for bit. */
struct rlhi_trainer_state {
    int64_t step;        /* optimiser steps done */
    int64_t total_steps; /* steps the schedule runs to */
    int64_t epoch;       /* epoch of the next micro-batch (0-based) */
    int64_t row;         /* position of the next row in that epoch's order */
    int64_t num_tokens;  /* input tokens trained on so far */
    uint64_t seed;       /* the run's seed */
    struct rlhi_rng rng; /* the trainer's generator, as it is now */
    double log_loss;     /* loss summed since the last log line */
    int64_t log_steps;   /* steps in that sum */
    int32_t rope;        /* rotary convention the run trains with */
};

/* Writes checkpoint directory `dir` (created if needed): the model as a
 * Hugging Face directory (rlhi_model_save_hf, fp32), then
 * trainer_state.bin (state, AdamW step and moments, a checksum) and a
 * readable trainer_state.json. trainer_state.bin is written last and
 * atomically, so a directory without it is an incomplete checkpoint.
 * Errors: RLHI_EIO / RLHI_ENOMEM naming the file. */
int rlhi_checkpoint_save(const char *dir, const struct rlhi_model *m,
                         const struct rlhi_adamw *o,
                         const struct rlhi_trainer_state *st);

/* Reads a checkpoint written by rlhi_checkpoint_save(): *m is a new model
 * (owned, writable parameters; caller frees), `o` is initialised (caller
 * releases) with the saved moments and step, *st filled. A model trained
 * with interleaved rotary is turned back to that convention, so that the
 * resumed run computes exactly what the first one did. Errors:
 * RLHI_ENOTFOUND (no trainer_state.bin), RLHI_EFORMAT (bad magic, version,
 * size or checksum, naming the file), or those of rlhi_model_load(). */
int rlhi_checkpoint_load(const char *dir, struct rlhi_model **m,
                         struct rlhi_adamw *o, struct rlhi_trainer_state *st);

/* ---- benchmark (bench_train.c) -------------------------------------- */

struct rlhi_bench_train_result {
    double ms_per_step;  /* mean of the timed steps (fwd + bwd + AdamW) */
    double ms_forward;   /* parts of one step: forward + loss */
    double ms_backward;  /* backward */
    double ms_optim;     /* clipping + AdamW */
    double tokens_per_s;
    double gflops;       /* model FLOPs per step / time (6 N P + attn) */
    double peak_rss_mib;
    double cpu_ms;       /* process CPU time per step (all threads):
                          * steadier than wall time on a busy machine */
    double torch_ms;     /* the same step in PyTorch fp32, or -1 when
                          * PyTorch did not run */
    double torch_cpu_ms; /* its process CPU time per step */
    int threads;         /* OpenMP threads used */
    int64_t n_params;
};

/* One training step (forward, cross-entropy, backward, clipping, AdamW) of
 * the 124.7M Llama shape (dim 768, 12 layers, 12 heads, 4 kv heads, ffn
 * 2048, vocab 32000) at batch B x T with random weights: one untimed
 * warm-up step, then `steps` timed ones. When `torch` is set and
 * /usr/bin/python3 can import torch, the same step runs in PyTorch (fp32,
 * as many threads as OpenMP uses here) and r->torch_ms is its time.
 * Returns 0 or RLHI_ENOMEM / a training error. */
int rlhi_bench_train(int B, int T, int steps, bool torch,
                     struct rlhi_bench_train_result *r);

#endif
