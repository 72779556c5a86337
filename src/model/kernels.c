/* Matrix kernels: a BLAS path and a plain reference twin. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

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

void rlhi__matmul(float *y, const float *x, const float *W, int n, int in,
                  int out)
{
    if (rlhi__kernels_ref()) {
        rlhi__matmul_ref(y, x, W, n, in, out);
        return;
    }
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1,
                    0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
                    x, in, W, in, 0.0f, y, out);
}
