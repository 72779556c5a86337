/* AdamW with decoupled weight decay and bias correction, global-norm
 * gradient clipping, and the warmup + cosine learning-rate schedule.
 *
 * Formulas follow PyTorch's torch.optim.AdamW (single-tensor path) and
 * torch.nn.utils.clip_grad_norm_, and Hugging Face's
 * get_cosine_schedule_with_warmup, so that a run here and the same run in
 * TRL take the same steps (tests/ref/train_ref.py checks 10 of them).
 */
#include <math.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include "model/train_ops.h"
#include "rlhi/train.h"

int rlhi_adamw_init(struct rlhi_adamw *o, size_t n,
                    const struct rlhi_model_config *cfg)
{
    struct rlhi_tensor_info *info = NULL;
    int ntens = 0, i, r;
    size_t total;

    memset(o, 0, sizeof *o);
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->n = n;
    o->m = rlhi_malloc_aligned(64, 2 * (n ? n : 1) * sizeof(float));
    if (!o->m)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate optimiser state for "
                        "%zu parameters", n);
    o->v = o->m + n;
    memset(o->m, 0, 2 * n * sizeof(float));
    if (!cfg)
        return 0;

    /* Decay the matrices only: Hugging Face's Trainer leaves out biases
     * and norm weights (get_decay_parameter_names). */
    r = rlhi_model_tensor_list(cfg, &info, &ntens, &total);
    if (r) {
        rlhi_adamw_release(o);
        return r;
    }
    if (total != n) {
        rlhi_free(info);
        rlhi_adamw_release(o);
        return rlhi_err(RLHI_EINVAL, "optimiser for %zu parameters given a "
                        "model of %zu", n, total);
    }
    o->ranges = rlhi_malloc((size_t)ntens * sizeof *o->ranges);
    if (!o->ranges) {
        rlhi_free(info);
        rlhi_adamw_release(o);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate optimiser ranges");
    }
    for (i = 0; i < ntens; i++)
        if (info[i].ndim == 2) {
            o->ranges[o->n_ranges][0] = info[i].offset;
            o->ranges[o->n_ranges][1] = info[i].offset + info[i].numel;
            o->n_ranges++;
        }
    rlhi_free(info);
    return 0;
}

void rlhi_adamw_release(struct rlhi_adamw *o)
{
    rlhi_free(o->m);
    rlhi_free(o->ranges);
    o->m = o->v = NULL;
    o->ranges = NULL;
    o->n_ranges = 0;
}

/* The update of one contiguous run. GCC at -O2 does not vectorise it
 * (sqrtf may set errno, and the cheap cost model refuses the loop), which
 * made the 124M benchmark's update 4-8x slower, so the AVX path is written
 * out. Both paths do the same float operations in the same order (no
 * fused multiply-add), so results do not depend on which one runs. */
static void update_run(float *restrict p, const float *restrict g,
                       float *restrict m, float *restrict v, size_t n,
                       float b1, float b2, float eps, float step_size,
                       float bc2s, float keep, float gs)
{
    size_t i = 0;

#ifdef __AVX__
    {
        const __m256 vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2);
        const __m256 vc1 = _mm256_set1_ps(1.0f - b1);
        const __m256 vc2 = _mm256_set1_ps(1.0f - b2);
        const __m256 veps = _mm256_set1_ps(eps), vbc = _mm256_set1_ps(bc2s);
        const __m256 vst = _mm256_set1_ps(step_size);
        const __m256 vkeep = _mm256_set1_ps(keep), vgs = _mm256_set1_ps(gs);

        for (; i + 8 <= n; i += 8) {
            __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), vgs);
            __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), vkeep);
            __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1,
                                                    _mm256_loadu_ps(m + i)),
                                      _mm256_mul_ps(vc1, gi));
            __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2,
                                                    _mm256_loadu_ps(v + i)),
                                      _mm256_mul_ps(_mm256_mul_ps(vc2, gi),
                                                    gi));
            __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi),
                                                     vbc), veps);

            pi = _mm256_sub_ps(pi, _mm256_mul_ps(vst,
                                                 _mm256_div_ps(mi, den)));
            _mm256_storeu_ps(m + i, mi);
            _mm256_storeu_ps(v + i, vi);
            _mm256_storeu_ps(p + i, pi);
        }
    }
#endif
    for (; i < n; i++) {
        float gi = g[i] * gs, denom;

        p[i] *= keep;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        denom = sqrtf(v[i]) / bc2s + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

/* Elements per parallel chunk of the update: 64 KiB of each array, so
 * the four streams stay in L2 while a thread works on them. */
#define UPDATE_CHUNK 16384

/* One AdamW update of params[a, b) from gradients times `gs`. */
static void update(struct rlhi_adamw *o, float *p, const float *g, size_t a,
                   size_t b, float lr, float decay, double bc1,
                   double bc2_sqrt, float gs)
{
    const float step_size = (float)(lr / bc1), bc2s = (float)bc2_sqrt;
    const float keep = 1.0f - lr * decay;
    size_t nch = (b - a + UPDATE_CHUNK - 1) / UPDATE_CHUNK, c;

#pragma omp parallel for schedule(static) if(PAR(b - a))
    for (c = 0; c < nch; c++) {
        size_t s = a + c * UPDATE_CHUNK;
        size_t n = b - s < UPDATE_CHUNK ? b - s : UPDATE_CHUNK;

        update_run(p + s, g + s, o->m + s, o->v + s, n, o->beta1, o->beta2,
                   o->eps, step_size, bc2s, keep, gs);
    }
}

void rlhi_adamw_step(struct rlhi_adamw *o, float *params, const float *grads,
                     float lr, float weight_decay, float grad_scale)
{
    double bc1, bc2s;
    float gs = grad_scale;
    size_t at = 0;
    int i;

    o->step++;
    bc1 = 1.0 - pow((double)o->beta1, (double)o->step);
    bc2s = sqrt(1.0 - pow((double)o->beta2, (double)o->step));
    if (!o->ranges) {
        update(o, params, grads, 0, o->n, lr, weight_decay, bc1, bc2s, gs);
        return;
    }
    /* undecayed gaps between the decayed ranges */
    for (i = 0; i < o->n_ranges; i++) {
        if (o->ranges[i][0] > at)
            update(o, params, grads, at, o->ranges[i][0], lr, 0.0f, bc1,
                   bc2s, gs);
        update(o, params, grads, o->ranges[i][0], o->ranges[i][1], lr,
               weight_decay, bc1, bc2s, gs);
        at = o->ranges[i][1];
    }
    if (at < o->n)
        update(o, params, grads, at, o->n, lr, 0.0f, bc1, bc2s, gs);
}

/* Chunk of the norm's partial sums: fixed, so the result is the same for
 * every thread count. */
#define NORM_CHUNK 65536

double rlhi_grad_norm(const float *g, size_t n)
{
    size_t nch = (n + NORM_CHUNK - 1) / NORM_CHUNK, c;
    double total = 0.0, *part;

    part = rlhi_malloc((nch ? nch : 1) * sizeof *part);
    if (!part) {
        /* no memory for partials: one serial sum, same value every time */
        for (c = 0; c < n; c++)
            total += (double)g[c] * g[c];
        return sqrt(total);
    }
#pragma omp parallel for schedule(static) if(PAR(n))
    for (c = 0; c < nch; c++) {
        size_t a = c * NORM_CHUNK, b = a + NORM_CHUNK < n ? a + NORM_CHUNK : n;
        double s = 0.0;

        for (size_t i = a; i < b; i++)
            s += (double)g[i] * g[i];
        part[c] = s;
    }
    for (c = 0; c < nch; c++)
        total += part[c];
    rlhi_free(part);
    return sqrt(total);
}

float rlhi_clip_coef(double norm, double max_norm)
{
    double coef;

    if (!isfinite(norm) || max_norm <= 0)
        return 1.0f;
    /* clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped to 1 */
    coef = max_norm / (norm + 1e-6);
    return coef >= 1.0 ? 1.0f : (float)coef;
}

double rlhi_grad_clip(float *g, size_t n, double max_norm)
{
    double norm = rlhi_grad_norm(g, n);
    float f = rlhi_clip_coef(norm, max_norm);
    size_t i;

    if (f == 1.0f)
        return norm;
#pragma omp parallel for schedule(static) if(PAR(n))
    for (i = 0; i < n; i++)
        g[i] *= f;
    return norm;
}

double rlhi_lr_cosine(double base, int64_t step, int64_t warmup,
                      int64_t total)
{
    double progress;

    if (step < warmup)
        return base * (double)step / (double)(warmup > 1 ? warmup : 1);
    if (total <= warmup)
        return 0.0;
    progress = (double)(step - warmup) / (double)(total - warmup);
    /* num_cycles = 0.5: one half cosine */
    progress = 0.5 * (1.0 + cos(M_PI * 2.0 * 0.5 * progress));
    return base * (progress > 0.0 ? progress : 0.0);
}

int64_t rlhi_warmup_steps(double ratio, int64_t total)
{
    if (ratio <= 0)
        return 0;
    return (int64_t)ceil(ratio * (double)total);
}
