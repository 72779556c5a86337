/* The training ops one by one (forward and backward), for train.c, loss.c
 * and the finite-difference tests. Internal.
 *
 * Shapes use N rows; every backward ADDS into parameter gradients (dw, dW,
 * db) and, where it says so, into input gradients. Matrices are (out, in)
 * as in model.h.
 */
#ifndef RLHI_MODEL_TRAIN_OPS_H
#define RLHI_MODEL_TRAIN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/model.h"

/* Whether a loop of `work` element operations is worth a parallel region:
 * below 32k the fork/join costs more than the loop (measured on 2 cores,
 * and far worse when the machine is oversubscribed, where spinning
 * threads wait for a core). */
#define PAR(work) ((size_t)(work) >= ((size_t)1 << 15))

/* o (N, C) = x * rstd * w, rstd (N) = 1/sqrt(mean(x^2) + eps). */
void rlhi__rmsnorm_fwd(float *o, float *rstd, const float *x, const float *w,
                       int N, int C, float eps);
/* dx (N, C) += d(o)/d(x)^T dout; dw (C) += sum over rows. */
void rlhi__rmsnorm_bwd(float *dx, float *dw, const float *dout,
                       const float *x, const float *w, const float *rstd,
                       int N, int C);

/* Rotates the nh heads (HS each) of every row of x (N, nh*HS) in place by
 * the angles of pos[r] (tables (P, HS/2)); inverse: the backward pass. */
void rlhi__rope(float *x, int N, int nh, int HS, const int32_t *pos,
                const float *cos_t, const float *sin_t,
                enum rlhi_rope_style style, bool inverse);

/* Causal attention within segments. Row r = b*T + t attends to rows
 * b*T + s for start[r] <= s <= t. q, y (N, NH*HS); k, v (N, KVH*HS);
 * lse (N, NH). `scratch` holds nthr * T floats. */
void rlhi__attn_fwd(float *y, float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T,
                    int NH, int KVH, int HS, float *scratch, int nthr);
/* Overwrites dq (N, NH*HS), dk, dv (N, KVH*HS) from dy. */
void rlhi__attn_bwd(float *dq, float *dk, float *dv, const float *dy,
                    const float *q, const float *k, const float *v,
                    const float *y, const float *lse, const int32_t *start,
                    int B, int T, int NH, int KVH, int HS, float *scratch,
                    int nthr);
/* The same two with prefix sharing: when `prefix` is not NULL, row r also
 * attends to rows b*T + s for s < prefix[r] (prefix[r] <= start[r]). The
 * functions above are these with prefix NULL. */
void rlhi__attn_fwd_prefix(float *y, float *lse, const float *q,
                           const float *k, const float *v,
                           const int32_t *start, const int32_t *prefix,
                           int B, int T, int NH, int KVH, int HS,
                           float *scratch, int nthr);
void rlhi__attn_bwd_prefix(float *dq, float *dk, float *dv, const float *dy,
                           const float *q, const float *k, const float *v,
                           const float *y, const float *lse,
                           const int32_t *start, const int32_t *prefix,
                           int B, int T, int NH, int KVH, int HS,
                           float *scratch, int nthr);

/* h (n) = silu(g) * u, and its backward (dg, du overwritten; dg may be
 * dh). */
void rlhi__swiglu_fwd(float *h, const float *g, const float *u, size_t n);
void rlhi__swiglu_bwd(float *dg, float *du, const float *dh, const float *g,
                      const float *u, size_t n);

/* Backward of y (N, out) = x (N, in) W^T + b:
 *     dx (N, in)   = dy W        (added to dx when acc_dx, else written;
 *                                 dx may be NULL)
 *     dW (out, in) += dy^T x
 *     db (out)     += column sums of dy (db may be NULL)
 * BLAS, or the plain loops of rlhi__matmul_bwd_ref when RLHI_KERNELS=ref
 * or rlhi__train_kernels_use_ref(true). */
void rlhi__matmul_bwd(float *dx, float *dW, float *db, const float *dy,
                      const float *x, const float *W, int N, int in, int out,
                      bool acc_dx);
void rlhi__matmul_bwd_ref(float *dx, float *dW, float *db, const float *dy,
                          const float *x, const float *W, int N, int in,
                          int out, bool acc_dx);
void rlhi__train_kernels_use_ref(bool on);

/* Rows of logits per chunk of the fused head for a vocabulary of V. */
int rlhi__head_rows(int V, int N);

#endif
