/* The output head fused with cross-entropy, a chunk of rows at a time.
 *
 * For a chunk of HR rows (HR = t->head_rows, at most 32 MiB of logits):
 *   logits (HR, V) = out[rows] Wout^T
 *   logp_r = logits[r, target_r] - logsumexp(logits[r])   (sum in double)
 *   loss  -= w_r * logp_r
 * and for the backward pass, in the same buffer,
 *   dlogits[r] = w_r * (softmax(logits[r]) - onehot(target_r))
 *   d_out[rows] += dlogits Wout,  dWout += dlogits^T out[rows]
 * so the whole (N, V) logits never exist at once. The loss is summed over
 * rows in order, so it does not depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "model/kernels.h"
#include "model/train_ops.h"
#include "rlhi/train.h"

int rlhi_train_ce(struct rlhi_train *t, const int32_t *targets,
                  const float *weights, bool backward, double *loss,
                  float *logp)
{
    const struct rlhi_model_config *c = &t->m->cfg;
    const int N = t->nB * t->nT, V = c->vocab_size, C = c->dim;
    double total = 0.0, mean_w = 0.0, *row_loss;
    int r0, r, nvalid = 0;

    if (N <= 0)
        return rlhi_err(RLHI_EINVAL, "loss without a forward pass");
    for (r = 0; r < N; r++) {
        if (targets[r] >= V)
            return rlhi_err(RLHI_EINVAL, "target id %d at row %d, column %d "
                            "is outside the vocabulary (0..%d)", targets[r],
                            r / t->nT, r % t->nT, V - 1);
        nvalid += targets[r] >= 0;
    }
    if (!weights)
        mean_w = nvalid ? 1.0 / nvalid : 0.0;
    row_loss = rlhi_malloc((size_t)t->head_rows * sizeof *row_loss);
    if (!row_loss)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate the loss rows");

    for (r0 = 0; r0 < N; r0 += t->head_rows) {
        int hr = N - r0 < t->head_rows ? N - r0 : t->head_rows;

        rlhi__matmul(t->head, t->out + (size_t)r0 * C, t->m->w.lm_head, hr,
                     C, V);
#pragma omp parallel for schedule(static) if(PAR((size_t)hr * V))
        for (r = 0; r < hr; r++) {
            float *lg = t->head + (size_t)r * V;
            int tg = targets[r0 + r];
            float w, max;
            double sum = 0.0, lse;
            int j;

            row_loss[r] = 0.0;
            if (tg < 0) {
                if (logp)
                    logp[r0 + r] = 0.0f;
                if (backward)
                    memset(lg, 0, (size_t)V * sizeof(float));
                continue;
            }
            w = weights ? weights[r0 + r] : (float)mean_w;
            max = lg[0];
            for (j = 1; j < V; j++)
                if (lg[j] > max)
                    max = lg[j];
            /* float exponentials (3x cheaper than double over 32k
             * columns), summed in double */
            for (j = 0; j < V; j++)
                sum += expf(lg[j] - max);
            lse = (double)max + log(sum);
            if (logp)
                logp[r0 + r] = (float)((double)lg[tg] - lse);
            row_loss[r] = -(double)w * ((double)lg[tg] - lse);
            if (backward) {
                float lsef = (float)lse;

                for (j = 0; j < V; j++)
                    lg[j] = w * expf(lg[j] - lsef);
                lg[tg] -= w;
            }
        }
        for (r = 0; r < hr; r++)
            total += row_loss[r];
        if (backward)
            rlhi__matmul_bwd(t->d_out + (size_t)r0 * C, t->grad.w.lm_head,
                             NULL, t->head, t->out + (size_t)r0 * C,
                             t->m->w.lm_head, hr, C, V, true);
    }
    rlhi_free(row_loss);
    if (loss)
        *loss = total;
    if (!isfinite(total))
        return rlhi_err(RLHI_ENUMERIC, "loss is not finite (%g)", total);
    return 0;
}
