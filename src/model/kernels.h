/* Matrix kernels shared by the forward and backward passes. Internal. */
#ifndef RLHI_MODEL_KERNELS_H
#define RLHI_MODEL_KERNELS_H

#include <stdbool.h>

/* From 2 up to this many rows a product streams the weights once (batched
 * decoding); one row goes to sgemv and more rows to sgemm. Measured here
 * (2 Zen 3 cores): 8 batched sequences of the 124.7M shape 60.8 -> 92.4
 * tok/s with the streaming kernel; at 16 rows sgemm was faster again (a
 * 15M model, 643 vs 460 tok/s served), and for one row sgemv reads the
 * weights slightly faster (29.8 vs 26.4 tok/s). */
#define RLHI__SMALL_ROWS 8

/* y (n, out) = x (n, in) . W (out, in)^T, overwriting y. Uses BLAS unless
 * the environment says RLHI_KERNELS=ref (or rlhi__kernels_use_ref(true)),
 * in which case the plain loop below runs. */
void rlhi__matmul(float *y, const float *x, const float *W, int n, int in,
                  int out);

/* The plain loop: for each output, a float sum over `in` in index order,
 * exactly as llama2.c's run.c computes it. */
void rlhi__matmul_ref(float *y, const float *x, const float *W, int n,
                      int in, int out);

/* Forces the reference kernels on or off (tests). */
void rlhi__kernels_use_ref(bool on);

/* True when the reference kernels are in use. */
bool rlhi__kernels_ref(void);

#endif
