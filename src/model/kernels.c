/* Matrix kernels: BLAS for many rows, a streaming kernel for a few rows
 * (decoding), and a plain reference twin of both.
 *
 * Why a kernel of our own for a few rows: with 2..16 rows (a batched decode
 * step) sgemm packs the whole weight matrix into its own buffers first, so
 * every weight is copied and read again: on the 124.7M shape 8 batched
 * sequences took 131 ms a step, 4x one sequence's 34 ms, although both read
 * the same weights once. Streaming each weight row once against all input
 * rows keeps the step at the cost of reading the weights.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "model/kernels.h"

/* -1 = not decided yet, read RLHI_KERNELS on first use. */
static int use_ref = -1;

void rlhi__kernels_use_ref(bool on)
{
    use_ref = on;
}

void rlhi__matmul_ref(float *y, const float *x, const float *W, int n,
                      int in, int out)
{
    int r;

#pragma omp parallel for collapse(2) schedule(static)
    for (r = 0; r < n; r++)
        for (int i = 0; i < out; i++) {
            const float *w = W + (size_t)i * in;
            const float *xr = x + (size_t)r * in;
            float val = 0.0f;

            for (int j = 0; j < in; j++)
                val += w[j] * xr[j];
            y[(size_t)r * out + i] = val;
        }
}

bool rlhi__kernels_ref(void)
{
    if (use_ref < 0) {
        const char *e = getenv("RLHI_KERNELS");

        use_ref = e && !strcmp(e, "ref");
    }
    return use_ref;
}

#ifdef __AVX2__
/* Input rows handled per pass over a weight row: 8 accumulators of 8
 * floats plus the weight vector fit in the 16 AVX registers. */
#define SMALL_GROUP 8

static float hsum(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);

    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* y (n, out) = x (n, in) . W^T for a few rows, each weight row read once
 * from memory for all n inputs; `in` a multiple of 8. */
static void matmul_small(float *y, const float *x, const float *W, int n,
                         int in, int out)
{
#pragma omp parallel for schedule(static) if ((double)in * out > 1e5)
    for (int i = 0; i < out; i++) {
        const float *w = W + (size_t)i * in;

        for (int r0 = 0; r0 < n; r0 += SMALL_GROUP) {
            int g = n - r0 < SMALL_GROUP ? n - r0 : SMALL_GROUP;
            __m256 acc[SMALL_GROUP];

            for (int r = 0; r < g; r++)
                acc[r] = _mm256_setzero_ps();
            for (int j = 0; j < in; j += 8) {
                __m256 wv = _mm256_loadu_ps(w + j);

                for (int r = 0; r < g; r++)
                    acc[r] = _mm256_fmadd_ps(
                        wv, _mm256_loadu_ps(x + (size_t)(r0 + r) * in + j),
                        acc[r]);
            }
            for (int r = 0; r < g; r++)
                y[(size_t)(r0 + r) * out + i] = hsum(acc[r]);
        }
    }
}
#endif

void rlhi__matmul(float *y, const float *x, const float *W, int n, int in,
                  int out)
{
    if (rlhi__kernels_ref()) {
        rlhi__matmul_ref(y, x, W, n, in, out);
        return;
    }
#ifdef __AVX2__
    if (n > 1 && n <= RLHI__SMALL_ROWS && in % 8 == 0) {
        matmul_small(y, x, W, n, in, out);
        return;
    }
#endif
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1,
                    0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
                    x, in, W, in, 0.0f, y, out);
}
