/* Training forward (keeping activations) and backward of the Llama-family
 * transformer, op by op, as straight lines of named steps (llm.c style).
 *
 * Forward, per layer l, for N = B*T rows (views in t->layer[l]):
 *   xn1  = rmsnorm(res, attn_norm)                      (N, C), rstd1 (N)
 *   q    = xn1 Wq^T + bq, k, v likewise; rotate q, k     (N, NH*HS) ...
 *   y    = softmax(q k^T / sqrt(HS)) v, causal within each segment,
 *          query head h reading kv head h / (NH/KVH)     (N, NH*HS), lse
 *   res2 = res + y Wo^T                                  (N, C)
 *   xn2  = rmsnorm(res2, ffn_norm)
 *   gate = xn2 Wg^T, up = xn2 Wu^T                       (N, F)
 *   next res = res2 + (silu(gate) * up) Wd^T
 * then out = rmsnorm(res_final, final_norm). The arithmetic is that of
 * forward.c (same RMSNorm, rotary table, score scaling, SiLU), so a
 * training forward gives the inference logits.
 *
 * Backward walks the same steps in reverse with d_res carrying the
 * gradient of the residual stream. Attention probabilities are not saved:
 * the backward pass recomputes them from q, k and the saved log-sum-exp
 * (as FlashAttention does), which keeps memory at O(N) per layer instead
 * of O(B*NH*T^2) (2.4 GB for 12 layers of 4 x 1024 tokens).
 *
 * Determinism: every reduction has a fixed order that does not depend on
 * the thread count (rows or columns are split between threads, never a
 * sum), except inside OpenBLAS, whose sgemm is deterministic for a given
 * thread count.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/train_ops.h"
#include "rlhi/train.h"

/* ---- kernels -------------------------------------------------------- */

static int use_ref = -1; /* -1: read RLHI_KERNELS on first use */

void rlhi__train_kernels_use_ref(bool on)
{
    use_ref = on;
}

void rlhi__rmsnorm_fwd(float *o, float *rstd, const float *x, const float *w,
                       int N, int C, float eps)
{
    int r;

#pragma omp parallel for schedule(static) if(PAR(N * C))
    for (r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * C;
        float *orow = o + (size_t)r * C;
        float ss = 0.0f;
        int j;

        /* forward.c's (run.c's) order of operations, in float */
        for (j = 0; j < C; j++)
            ss += xr[j] * xr[j];
        ss /= (float)C;
        ss += eps;
        ss = 1.0f / sqrtf(ss);
        rstd[r] = ss;
        for (j = 0; j < C; j++)
            orow[j] = w[j] * (ss * xr[j]);
    }
}

void rlhi__rmsnorm_bwd(float *dx, float *dw, const float *dout,
                       const float *x, const float *w, const float *rstd,
                       int N, int C)
{
    int r, j;

    /* dx_j = rstd * w_j do_j - rstd^3 / C * x_j * sum_k w_k do_k x_k */
#pragma omp parallel for schedule(static) if(PAR(N * C))
    for (r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * C, *dr = dout + (size_t)r * C;
        float *dxr = dx + (size_t)r * C;
        float s = rstd[r], dot = 0.0f, c;
        int i;

        for (i = 0; i < C; i++)
            dot += w[i] * dr[i] * xr[i];
        c = s * s * s * dot / (float)C;
        for (i = 0; i < C; i++)
            dxr[i] += s * w[i] * dr[i] - c * xr[i];
    }
    /* dw_j = sum_r do_rj * x_rj * rstd_r, columns split between threads so
     * each sum runs over rows in order */
#pragma omp parallel for schedule(static) if(PAR(N * C))
    for (j = 0; j < C; j++) {
        float acc = 0.0f;

        for (r = 0; r < N; r++)
            acc += dout[(size_t)r * C + j] * x[(size_t)r * C + j] * rstd[r];
        dw[j] += acc;
    }
}

void rlhi__rope(float *x, int N, int nh, int HS, const int32_t *pos,
                const float *cos_t, const float *sin_t,
                enum rlhi_rope_style style, bool inverse)
{
    int r, half = HS / 2;

#pragma omp parallel for schedule(static) if(PAR((size_t)N * nh * HS))
    for (r = 0; r < N; r++) {
        const float *cs = cos_t + (size_t)pos[r] * half;
        const float *sn = sin_t + (size_t)pos[r] * half;

        for (int h = 0; h < nh; h++) {
            float *v = x + ((size_t)r * nh + h) * HS;

            for (int i = 0; i < half; i++) {
                /* the backward of a rotation is the rotation by -angle */
                float c = cs[i], s = inverse ? -sn[i] : sn[i];
                int a = style == RLHI_ROPE_INTERLEAVED ? 2 * i : i;
                int b = style == RLHI_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
                float v0 = v[a], v1 = v[b];

                v[a] = v0 * c - v1 * s;
                v[b] = v0 * s + v1 * c;
            }
        }
    }
}

/* q . k over n floats with 8 partial sums in a fixed order, so the
 * compiler can use vector lanes (a single running sum cannot be
 * reordered) and the result is still the same on every run. */
static inline float dot8(const float *a, const float *b, int n)
{
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0, j;

    for (; i + 8 <= n; i += 8)
        for (j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Key columns of a query at column t: [0, p0), a shared prefix (p0 = 0
 * when none), then [s0, t], its own segment up to itself. */
#define KEY_FIRST(p0, s0) ((p0) > 0 ? 0 : (s0))
#define KEY_NEXT(s, p0, s0) ((s) + 1 == (p0) ? (s0) : (s) + 1)

void rlhi__attn_fwd(float *y, float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T,
                    int NH, int KVH, int HS, float *scratch, int nthr)
{
    rlhi__attn_fwd_prefix(y, lse, q, k, v, start, NULL, B, T, NH, KVH, HS,
                          scratch, nthr);
}

void rlhi__attn_fwd_prefix(float *y, float *lse, const float *q,
                           const float *k, const float *v,
                           const int32_t *start, const int32_t *prefix,
                           int B, int T, int NH, int KVH, int HS,
                           float *scratch, int nthr)
{
    const int QD = NH * HS, KVD = KVH * HS, group = NH / KVH;
    const float scale = sqrtf((float)HS);
    int task;

#pragma omp parallel for schedule(dynamic, 4) num_threads(nthr)             \
    if (PAR((size_t)B * NH * T * T * HS))
    for (task = 0; task < B * NH * T; task++) {
        int b = task / (NH * T), h = (task / T) % NH, t = task % T;
        size_t r = (size_t)b * T + t;
        const float *qr = q + r * QD + (size_t)h * HS;
        const float *kb = k + (size_t)b * T * KVD + (size_t)(h / group) * HS;
        const float *vb = v + (size_t)b * T * KVD + (size_t)(h / group) * HS;
        float *sc = scratch + (size_t)omp_get_thread_num() * T;
        float *yr = y + r * QD + (size_t)h * HS;
        float max = -INFINITY, sum = 0.0f;
        int s, i, s0 = start[r], p0 = prefix ? prefix[r] : 0;

        for (s = KEY_FIRST(p0, s0); s <= t; s = KEY_NEXT(s, p0, s0)) {
            sc[s] = dot8(qr, kb + (size_t)s * KVD, HS) / scale;
            if (sc[s] > max)
                max = sc[s];
        }
        for (s = KEY_FIRST(p0, s0); s <= t; s = KEY_NEXT(s, p0, s0)) {
            sc[s] = expf(sc[s] - max);
            sum += sc[s];
        }
        memset(yr, 0, (size_t)HS * sizeof(float));
        for (s = KEY_FIRST(p0, s0); s <= t; s = KEY_NEXT(s, p0, s0)) {
            const float *vs = vb + (size_t)s * KVD;
            float a = sc[s] / sum;

            for (i = 0; i < HS; i++)
                yr[i] += a * vs[i];
        }
        lse[r * NH + h] = max + logf(sum);
    }
}

void rlhi__attn_bwd(float *dq, float *dk, float *dv, const float *dy,
                    const float *q, const float *k, const float *v,
                    const float *y, const float *lse, const int32_t *start,
                    int B, int T, int NH, int KVH, int HS, float *scratch,
                    int nthr)
{
    rlhi__attn_bwd_prefix(dq, dk, dv, dy, q, k, v, y, lse, start, NULL, B,
                          T, NH, KVH, HS, scratch, nthr);
}

void rlhi__attn_bwd_prefix(float *dq, float *dk, float *dv, const float *dy,
                           const float *q, const float *k, const float *v,
                           const float *y, const float *lse,
                           const int32_t *start, const int32_t *prefix,
                           int B, int T, int NH, int KVH, int HS,
                           float *scratch, int nthr)
{
    const int QD = NH * HS, KVD = KVH * HS, group = NH / KVH;
    const float scale = sqrtf((float)HS);
    int task;

    (void)scratch; /* probabilities are recomputed one at a time */
    /* One task per (sequence, kv head): it owns that head's dk and dv, so
     * the query heads of its group add into them in a fixed order. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)             \
    if (PAR((size_t)B * NH * T * T * HS))
    for (task = 0; task < B * KVH; task++) {
        int b = task / KVH, kh = task % KVH;
        size_t kvoff = (size_t)b * T * KVD + (size_t)kh * HS;
        for (int t = 0; t < T; t++) {
            float *dkr = dk + kvoff + (size_t)t * KVD;
            float *dvr = dv + kvoff + (size_t)t * KVD;

            memset(dkr, 0, (size_t)HS * sizeof(float));
            memset(dvr, 0, (size_t)HS * sizeof(float));
        }
        for (int h = kh * group; h < (kh + 1) * group; h++)
            for (int t = 0; t < T; t++) {
                size_t r = (size_t)b * T + t;
                const float *qr = q + r * QD + (size_t)h * HS;
                const float *dyr = dy + r * QD + (size_t)h * HS;
                const float *yr = y + r * QD + (size_t)h * HS;
                float *dqr = dq + r * QD + (size_t)h * HS;
                float l = lse[r * NH + h], D = 0.0f;
                int s, i, s0 = start[r], p0 = prefix ? prefix[r] : 0;

                /* D = sum_s p_s (dy . v_s) = dy . y */
                D = dot8(dyr, yr, HS);
                memset(dqr, 0, (size_t)HS * sizeof(float));
                for (s = KEY_FIRST(p0, s0); s <= t; s = KEY_NEXT(s, p0, s0)) {
                    const float *ks = k + kvoff + (size_t)s * KVD;
                    const float *vs = v + kvoff + (size_t)s * KVD;
                    float *dks = dk + kvoff + (size_t)s * KVD;
                    float *dvs = dv + kvoff + (size_t)s * KVD;
                    float p = expf(dot8(qr, ks, HS) / scale - l);
                    float ds = p * (dot8(dyr, vs, HS) - D) / scale;
                    for (i = 0; i < HS; i++) {
                        dqr[i] += ds * ks[i];
                        dks[i] += ds * qr[i];
                        dvs[i] += p * dyr[i];
                    }
                }
            }
    }
}

void rlhi__swiglu_fwd(float *h, const float *g, const float *u, size_t n)
{
    size_t i;

#pragma omp parallel for schedule(static) if(PAR(n))
    for (i = 0; i < n; i++) {
        float x = g[i];

        h[i] = x * (1.0f / (1.0f + expf(-x))) * u[i];
    }
}

void rlhi__swiglu_bwd(float *dg, float *du, const float *dh, const float *g,
                      const float *u, size_t n)
{
    size_t i;

    /* silu'(x) = sig(x) (1 + x (1 - sig(x))) */
#pragma omp parallel for schedule(static) if(PAR(n))
    for (i = 0; i < n; i++) {
        float x = g[i], d = dh[i];
        float sig = 1.0f / (1.0f + expf(-x));

        du[i] = d * x * sig;
        dg[i] = d * u[i] * sig * (1.0f + x * (1.0f - sig));
    }
}

void rlhi__matmul_bwd_ref(float *dx, float *dW, float *db, const float *dy,
                          const float *x, const float *W, int N, int in,
                          int out, bool acc_dx)
{
    int r, o;

    if (dx) {
#pragma omp parallel for schedule(static) if(PAR((size_t)N * in * out))
        for (r = 0; r < N; r++)
            for (int i = 0; i < in; i++) {
                float acc = 0.0f;

                for (int oo = 0; oo < out; oo++)
                    acc += dy[(size_t)r * out + oo] * W[(size_t)oo * in + i];
                dx[(size_t)r * in + i] = acc_dx ? dx[(size_t)r * in + i] + acc
                                                : acc;
            }
    }
#pragma omp parallel for schedule(static) if(PAR((size_t)N * in * out))
    for (o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) {
            float acc = 0.0f;

            for (int rr = 0; rr < N; rr++)
                acc += dy[(size_t)rr * out + o] * x[(size_t)rr * in + i];
            dW[(size_t)o * in + i] += acc;
        }
        if (db) {
            float acc = 0.0f;

            for (int rr = 0; rr < N; rr++)
                acc += dy[(size_t)rr * out + o];
            db[o] += acc;
        }
    }
}

void rlhi__matmul_bwd(float *dx, float *dW, float *db, const float *dy,
                      const float *x, const float *W, int N, int in, int out,
                      bool acc_dx)
{
    if (use_ref < 0) {
        const char *e = getenv("RLHI_KERNELS");

        use_ref = e && !strcmp(e, "ref");
    }
    if (use_ref) {
        rlhi__matmul_bwd_ref(dx, dW, db, dy, x, W, N, in, out, acc_dx);
        return;
    }
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out,
                    1.0f, dy, out, W, in, acc_dx ? 1.0f : 0.0f, dx, in);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f,
                dy, out, x, in, 1.0f, dW, in);
    if (db) {
        int o;

#pragma omp parallel for schedule(static) if(PAR((size_t)N * out))
        for (o = 0; o < out; o++) {
            float acc = 0.0f;

            for (int r = 0; r < N; r++)
                acc += dy[(size_t)r * out + o];
            db[o] += acc;
        }
    }
}

/* The fused head works on this many floats of logits at a time: 32 MiB,
 * which holds a whole 4 x 64-token batch of a 32k vocabulary, so the
 * benchmark's head is one matrix product, while an 8 x 1024 batch needs
 * 256 MiB less than materialising everything. */
#define HEAD_FLOATS (1 << 23)

int rlhi__head_rows(int V, int N)
{
    int r = HEAD_FLOATS / V;

    if (r < 16)
        r = 16;
    return r < N ? r : N;
}

/* ---- the training state --------------------------------------------- */

static int nthreads(void)
{
    return omp_get_max_threads();
}

int rlhi_train_new(struct rlhi_train **out, struct rlhi_model *m, int B,
                   int T)
{
    const struct rlhi_model_config *c = &m->cfg;
    size_t N = (size_t)B * T, C = c->dim, F = c->hidden_dim;
    size_t QD = (size_t)c->n_heads * c->head_dim;
    size_t KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t NH = c->n_heads, half = c->head_dim / 2, per_layer, n, sn;
    struct rlhi_train *t;
    float *p;
    int l, i, err, nthr = nthreads();

    *out = NULL;
    if (B <= 0 || T <= 0)
        return rlhi_err(RLHI_EINVAL, "invalid training batch %d x %d", B, T);
    if (T > c->max_seq_len)
        return rlhi_err(RLHI_EINVAL, "training length %d exceeds the "
                        "model's context of %d", T, c->max_seq_len);
    t = rlhi_calloc(1, sizeof *t);
    if (!t)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate a training state");
    t->m = m;
    t->B = B;
    t->T = T;
    t->nthr = nthr;

    /* Gradients: the model's layout, bound like a model. */
    t->grad.cfg = *c;
    t->grad.params = rlhi_malloc_aligned(64, m->n_params * sizeof(float));
    t->layer = rlhi_calloc((size_t)c->n_layers, sizeof *t->layer);
    if (!t->grad.params || !t->layer)
        goto nomem;
    err = rlhi_model_bind(&t->grad, t->grad.params);
    if (err) {
        rlhi_train_free(t);
        return err;
    }
    t->grad.params_owned = true;
    memset(t->grad.params, 0, m->n_params * sizeof(float));

    /* Activations: one block, carved. */
    per_layer = N * (4 * C + 2 + 2 * QD + 2 * KVD + NH + 2 * F);
    n = per_layer * c->n_layers + N * (2 * C + 1) + 3 * N;
    t->n_acts = n;
    t->acts = rlhi_malloc_aligned(64, n * sizeof(float));
    if (!t->acts)
        goto nomem;
    p = t->acts;
    for (l = 0; l < c->n_layers; l++) {
        struct rlhi_train_layer_acts *a = &t->layer[l];

        a->res = p, p += N * C;
        a->rstd1 = p, p += N;
        a->xn1 = p, p += N * C;
        a->q = p, p += N * QD;
        a->k = p, p += N * KVD;
        a->v = p, p += N * KVD;
        a->lse = p, p += N * NH;
        a->y = p, p += N * QD;
        a->res2 = p, p += N * C;
        a->rstd2 = p, p += N;
        a->xn2 = p, p += N * C;
        a->gate = p, p += N * F;
        a->up = p, p += N * F;
    }
    t->res_final = p, p += N * C;
    t->rstdf = p, p += N;
    t->out = p, p += N * C;
    /* int32 views share the float block (same size and alignment) */
    t->tok = (int32_t *)p, p += N;
    t->pos = (int32_t *)p, p += N;
    t->start = (int32_t *)p, p += N;
    RLHI_ASSERT((size_t)(p - t->acts) == n);

    /* Scratch: gradients of activations, the head chunk, rotary tables,
     * per-thread attention rows. */
    t->head_rows = rlhi__head_rows(c->vocab_size, (int)N);
    sn = N * (2 * C + 2 * QD + 2 * KVD + 3 * F + C) +
         (size_t)t->head_rows * c->vocab_size +
         2 * (size_t)c->max_seq_len * half + (size_t)nthr * T;
    t->scratch = rlhi_malloc_aligned(64, sn * sizeof(float));
    if (!t->scratch)
        goto nomem;
    p = t->scratch;
    t->hb = p, p += N * F;
    t->d_res = p, p += N * C;
    t->d_xn = p, p += N * C;
    t->d_y = p, p += N * QD;
    t->d_q = p, p += N * QD;
    t->d_k = p, p += N * KVD;
    t->d_v = p, p += N * KVD;
    t->d_gate = p, p += N * F;
    t->d_up = p, p += N * F;
    t->d_out = p, p += N * C;
    t->head = p, p += (size_t)t->head_rows * c->vocab_size;
    t->rope_cos = p, p += (size_t)c->max_seq_len * half;
    t->rope_sin = p, p += (size_t)c->max_seq_len * half;
    /* the attention rows sit at the end: nthr * T floats */
    RLHI_ASSERT((size_t)(p - t->scratch) + (size_t)nthr * T == sn);

    /* Rotary table, with forward.c's float expressions. */
    for (l = 0; l < c->max_seq_len; l++)
        for (i = 0; i < (int)half; i++) {
            float freq = 1.0f / powf(c->rope_theta,
                                     (float)(2 * i) / (float)c->head_dim);
            float val = (float)l * freq;

            t->rope_cos[(size_t)l * half + i] = cosf(val);
            t->rope_sin[(size_t)l * half + i] = sinf(val);
        }
    *out = t;
    return 0;

nomem:
    rlhi_train_free(t);
    return rlhi_err(RLHI_ENOMEM, "cannot allocate training state for "
                    "batch %d x %d (%.1f MiB of activations)", B, T,
                    (double)((size_t)B * T *
                             (4 * C + 2 * QD + 2 * KVD + NH + 2 * F) *
                             c->n_layers) * 4 / (1 << 20));
}

void rlhi_train_free(struct rlhi_train *t)
{
    if (!t)
        return;
    rlhi_free(t->grad.params);
    rlhi_free(t->grad.w.layers);
    rlhi_free(t->layer);
    rlhi_free(t->acts);
    rlhi_free(t->scratch);
    rlhi_free(t->pre);
    rlhi_free(t);
}

void rlhi_train_zero_grad(struct rlhi_train *t)
{
    memset(t->grad.params, 0, t->m->n_params * sizeof(float));
}

static float *attn_scratch(struct rlhi_train *t)
{
    const struct rlhi_model_config *c = &t->m->cfg;

    return t->rope_sin + (size_t)c->max_seq_len * (c->head_dim / 2);
}

static void add_bias(float *y, const float *b, int rows, int n)
{
    int r;

    if (!b)
        return;
#pragma omp parallel for schedule(static) if(PAR((size_t)rows * n))
    for (r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
            y[(size_t)r * n + j] += b[j];
}

static void add_into(float *y, const float *x, size_t n)
{
    size_t i;

#pragma omp parallel for schedule(static) if(PAR(n))
    for (i = 0; i < n; i++)
        y[i] += x[i];
}

int rlhi_train_forward(struct rlhi_train *t, const struct rlhi_batch *b)
{
    return rlhi_train_forward_prefix(t, b, NULL);
}

int rlhi_train_forward_prefix(struct rlhi_train *t, const struct rlhi_batch *b,
                              const int32_t *prefix)
{
    struct rlhi_model *m = t->m;
    const struct rlhi_model_config *c = &m->cfg;
    const int C = c->dim, F = c->hidden_dim, HS = c->head_dim;
    const int NH = c->n_heads, KVH = c->n_kv_heads;
    const int QD = NH * HS, KVD = KVH * HS;
    int N, r, l;

    if (b->B <= 0 || b->T <= 0 || b->B > t->B || b->T > t->T)
        return rlhi_err(RLHI_EINVAL, "batch %d x %d does not fit the "
                        "training state (%d x %d)", b->B, b->T, t->B, t->T);
    N = b->B * b->T;
    if (!t->pre) {
        t->pre = rlhi_calloc((size_t)t->B * t->T, sizeof *t->pre);
        if (!t->pre)
            return rlhi_err(RLHI_ENOMEM, "cannot allocate prefix columns");
    }
    t->nB = b->B;
    t->nT = b->T;

    /* Tokens, segment starts and positions. */
    for (r = 0; r < N; r++) {
        int bt = r % b->T;
        int32_t tk = b->tokens[r];

        if (tk < 0 || tk >= c->vocab_size)
            return rlhi_err(RLHI_EINVAL, "token id %d at row %d, column %d "
                            "is outside the vocabulary (0..%d)", tk,
                            r / b->T, bt, c->vocab_size - 1);
        t->tok[r] = tk;
        if (bt > 0 && (!b->seg || b->seg[r] == b->seg[r - 1]))
            t->start[r] = t->start[r - 1];
        else
            t->start[r] = bt;
        t->pre[r] = prefix ? prefix[r] : 0;
        if (t->pre[r] < 0 || t->pre[r] > t->start[r])
            return rlhi_err(RLHI_EINVAL, "prefix %d at row %d, column %d "
                            "is outside 0..%d (its segment's start)",
                            t->pre[r], r / b->T, bt, t->start[r]);
        t->pos[r] = b->pos ? b->pos[r] : bt - t->start[r];
        if (t->pos[r] < 0 || t->pos[r] >= c->max_seq_len)
            return rlhi_err(RLHI_EINVAL, "position %d at row %d, column %d "
                            "is outside the context (0..%d)", t->pos[r],
                            r / b->T, bt, c->max_seq_len - 1);
    }

    /* Token embeddings into the residual stream. */
    for (r = 0; r < N; r++)
        memcpy(t->layer[0].res + (size_t)r * C,
               m->w.tok_embed + (size_t)t->tok[r] * C, C * sizeof(float));

    for (l = 0; l < c->n_layers; l++) {
        const struct rlhi_layer_weights *w = &m->w.layers[l];
        struct rlhi_train_layer_acts *a = &t->layer[l];
        float *res_next = l + 1 < c->n_layers ? t->layer[l + 1].res
                                              : t->res_final;

        /* Attention block. */
        rlhi__rmsnorm_fwd(a->xn1, a->rstd1, a->res, w->attn_norm, N, C,
                          c->norm_eps);
        rlhi__matmul(a->q, a->xn1, w->wq, N, C, QD);
        rlhi__matmul(a->k, a->xn1, w->wk, N, C, KVD);
        rlhi__matmul(a->v, a->xn1, w->wv, N, C, KVD);
        add_bias(a->q, w->bq, N, QD);
        add_bias(a->k, w->bk, N, KVD);
        add_bias(a->v, w->bv, N, KVD);
        rlhi__rope(a->q, N, NH, HS, t->pos, t->rope_cos, t->rope_sin,
                   c->rope, false);
        rlhi__rope(a->k, N, KVH, HS, t->pos, t->rope_cos, t->rope_sin,
                   c->rope, false);
        rlhi__attn_fwd_prefix(a->y, a->lse, a->q, a->k, a->v, t->start,
                              t->pre, b->B, b->T,
                       NH, KVH, HS, attn_scratch(t), t->nthr);
        rlhi__matmul(t->d_xn, a->y, w->wo, N, QD, C);
        memcpy(a->res2, a->res, (size_t)N * C * sizeof(float));
        add_into(a->res2, t->d_xn, (size_t)N * C);

        /* Feed-forward block. */
        rlhi__rmsnorm_fwd(a->xn2, a->rstd2, a->res2, w->ffn_norm, N, C,
                          c->norm_eps);
        rlhi__matmul(a->gate, a->xn2, w->w_gate, N, C, F);
        rlhi__matmul(a->up, a->xn2, w->w_up, N, C, F);
        rlhi__swiglu_fwd(t->hb, a->gate, a->up, (size_t)N * F);
        rlhi__matmul(t->d_xn, t->hb, w->w_down, N, F, C);
        memcpy(res_next, a->res2, (size_t)N * C * sizeof(float));
        add_into(res_next, t->d_xn, (size_t)N * C);
    }

    /* Final norm. */
    rlhi__rmsnorm_fwd(t->out, t->rstdf, t->res_final, m->w.final_norm, N, C,
                      c->norm_eps);
    memset(t->d_out, 0, (size_t)N * C * sizeof(float));
    return 0;
}

void rlhi_train_logits(struct rlhi_train *t, float *logits)
{
    const struct rlhi_model_config *c = &t->m->cfg;

    rlhi__matmul(logits, t->out, t->m->w.lm_head, t->nB * t->nT, c->dim,
                 c->vocab_size);
}

void rlhi_train_backward_logits(struct rlhi_train *t, const float *dlogits)
{
    const struct rlhi_model_config *c = &t->m->cfg;

    rlhi__matmul_bwd(t->d_out, t->grad.w.lm_head, NULL, dlogits, t->out,
                     t->m->w.lm_head, t->nB * t->nT, c->dim, c->vocab_size,
                     true);
}

int rlhi_train_backward(struct rlhi_train *t)
{
    struct rlhi_model *m = t->m;
    const struct rlhi_model_config *c = &m->cfg;
    const int C = c->dim, F = c->hidden_dim, HS = c->head_dim;
    const int NH = c->n_heads, KVH = c->n_kv_heads;
    const int QD = NH * HS, KVD = KVH * HS;
    const int N = t->nB * t->nT;
    struct rlhi_weights *g = &t->grad.w;
    int l, r;

    if (N <= 0)
        return rlhi_err(RLHI_EINVAL, "backward pass without a forward pass");

    /* Final norm. */
    memset(t->d_res, 0, (size_t)N * C * sizeof(float));
    rlhi__rmsnorm_bwd(t->d_res, g->final_norm, t->d_out, t->res_final,
                      m->w.final_norm, t->rstdf, N, C);

    for (l = c->n_layers - 1; l >= 0; l--) {
        const struct rlhi_layer_weights *w = &m->w.layers[l];
        struct rlhi_layer_weights *gw = &g->layers[l];
        struct rlhi_train_layer_acts *a = &t->layer[l];

        /* Feed-forward block: down projection, SwiGLU, gate and up. */
        rlhi__swiglu_fwd(t->hb, a->gate, a->up, (size_t)N * F);
        rlhi__matmul_bwd(t->d_gate, gw->w_down, NULL, t->d_res, t->hb,
                         w->w_down, N, F, C, false);
        rlhi__swiglu_bwd(t->d_gate, t->d_up, t->d_gate, a->gate, a->up,
                         (size_t)N * F);
        rlhi__matmul_bwd(t->d_xn, gw->w_gate, NULL, t->d_gate, a->xn2,
                         w->w_gate, N, C, F, false);
        rlhi__matmul_bwd(t->d_xn, gw->w_up, NULL, t->d_up, a->xn2, w->w_up,
                         N, C, F, true);
        rlhi__rmsnorm_bwd(t->d_res, gw->ffn_norm, t->d_xn, a->res2,
                          w->ffn_norm, a->rstd2, N, C);

        /* Attention block: output projection, attention, rotary, q/k/v. */
        rlhi__matmul_bwd(t->d_y, gw->wo, NULL, t->d_res, a->y, w->wo, N, QD,
                         C, false);
        rlhi__attn_bwd_prefix(t->d_q, t->d_k, t->d_v, t->d_y, a->q, a->k,
                              a->v, a->y, a->lse, t->start, t->pre, t->nB,
                              t->nT, NH, KVH, HS,
                       attn_scratch(t), t->nthr);
        rlhi__rope(t->d_q, N, NH, HS, t->pos, t->rope_cos, t->rope_sin,
                   c->rope, true);
        rlhi__rope(t->d_k, N, KVH, HS, t->pos, t->rope_cos, t->rope_sin,
                   c->rope, true);
        rlhi__matmul_bwd(t->d_xn, gw->wq, gw->bq, t->d_q, a->xn1, w->wq, N,
                         C, QD, false);
        rlhi__matmul_bwd(t->d_xn, gw->wk, gw->bk, t->d_k, a->xn1, w->wk, N,
                         C, KVD, true);
        rlhi__matmul_bwd(t->d_xn, gw->wv, gw->bv, t->d_v, a->xn1, w->wv, N,
                         C, KVD, true);
        rlhi__rmsnorm_bwd(t->d_res, gw->attn_norm, t->d_xn, a->res,
                          w->attn_norm, a->rstd1, N, C);
    }

    /* Embeddings: rows in order, so repeated tokens add up the same way
     * on every run. */
    for (r = 0; r < N; r++) {
        float *ge = g->tok_embed + (size_t)t->tok[r] * C;
        const float *d = t->d_res + (size_t)r * C;

        for (int j = 0; j < C; j++)
            ge[j] += d[j];
    }
    return 0;
}

void rlhi_logp_sums(const float *logp, const int32_t *slot, int n,
                    double *sums, int nslots)
{
    int i;

    memset(sums, 0, (size_t)nslots * sizeof *sums);
    for (i = 0; i < n; i++)
        if (slot[i] >= 0 && slot[i] < nslots)
            sums[slot[i]] += logp[i];
}

bool rlhi_all_finite(const float *x, size_t n)
{
    size_t i;
    int bad = 0;

#pragma omp parallel for reduction(| : bad) schedule(static) if(PAR(n))
    for (i = 0; i < n; i++)
        bad |= !isfinite(x[i]);
    return !bad;
}
