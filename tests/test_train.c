/* Tests for the training engine: every op's backward against finite
 * differences, the BLAS kernels against their plain twins, the whole model
 * against a float64 PyTorch reference (tests/ref/train_ref.py), AdamW and
 * the schedule against the same reference, and determinism.
 *
 * Finite differences. The model computes in float (24-bit mantissa). A
 * central difference with step eps has a truncation error O(eps^2) and a
 * rounding error of about (float rounding of the loss) / eps: with outputs
 * of order 1, rounding is ~1e-7 and eps = 1e-3 leaves ~1e-4 absolute. So
 * the op checks use eps 1e-3 and accept |fd - analytic| <= 1e-2 * max(|fd|,
 * |analytic|) + 5e-4; the losses are summed in double so only the op's own
 * float rounding counts. The precise check is the PyTorch float64
 * reference, which needs no step at all.
 */
#include <omp.h>
#include <stdint.h>

#include "check.h"
#include "model/kernels.h"
#include "model/train_ops.h"
#include "rlhi/bpe_train.h"
#include "rlhi/model.h"
#include "rlhi/sft.h"
#include "rlhi/train.h"

#define FD_EPS 1e-3f
#define FD_RTOL 1e-2
#define FD_ATOL 5e-4

static struct rlhi_rng rng;

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (float)rlhi_rng_normal(&rng);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;

    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static int fd_ok(double fd, double an)
{
    double m = fabs(fd) > fabs(an) ? fabs(fd) : fabs(an);

    return fabs(fd - an) <= FD_RTOL * m + FD_ATOL;
}

/* Counts mismatches of an analytic gradient `an` of x (n) against central
 * differences of `loss`, printing the first few. */
#define FD_CHECK(label, x, n, an, loss_expr)                                \
    do {                                                                    \
        int bad_ = 0;                                                       \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++) {                       \
            float keep_ = (x)[i_];                                          \
            double lp_, lm_, fd_;                                           \
            (x)[i_] = keep_ + FD_EPS;                                       \
            lp_ = (loss_expr);                                              \
            (x)[i_] = keep_ - FD_EPS;                                       \
            lm_ = (loss_expr);                                              \
            (x)[i_] = keep_;                                                \
            fd_ = (lp_ - lm_) / (2.0 * FD_EPS);                             \
            if (!fd_ok(fd_, (an)[i_]) && bad_++ < 3)                        \
                fprintf(stderr, "  %s[%zu]: fd %.6g analytic %.6g\n",       \
                        label, i_, fd_, (double)(an)[i_]);                  \
        }                                                                   \
        CHECK_MSG(bad_ == 0, "%s: %d of %zu gradients off", label, bad_,    \
                  (size_t)(n));                                             \
    } while (0)

/* ---- op-level scalar losses: sum(out * R) in double ----------------- */

static double rms_loss(float *o, float *rstd, const float *x, const float *w,
                       const float *R, int N, int C)
{
    rlhi__rmsnorm_fwd(o, rstd, x, w, N, C, 1e-5f);
    return dot(o, R, (size_t)N * C);
}

static double swiglu_loss(float *h, const float *g, const float *u,
                          const float *R, size_t n)
{
    rlhi__swiglu_fwd(h, g, u, n);
    return dot(h, R, n);
}

struct attn_case {
    int B, T, NH, KVH, HS;
    int32_t *start;
    float *q, *k, *v, *y, *lse, *R, *scratch;
};

static double attn_loss(struct attn_case *a)
{
    size_t N = (size_t)a->B * a->T;

    rlhi__attn_fwd(a->y, a->lse, a->q, a->k, a->v, a->start, a->B, a->T,
                   a->NH, a->KVH, a->HS, a->scratch, omp_get_max_threads());
    return dot(a->y, a->R, N * a->NH * a->HS);
}

static double rope_loss(float *tmp, const float *x, const float *R, int N,
                        int nh, int HS, const int32_t *pos, const float *cs,
                        const float *sn, enum rlhi_rope_style st)
{
    memcpy(tmp, x, (size_t)N * nh * HS * sizeof(float));
    rlhi__rope(tmp, N, nh, HS, pos, cs, sn, st, false);
    return dot(tmp, R, (size_t)N * nh * HS);
}

static double lin_loss(float *y, const float *x, const float *W,
                       const float *b, const float *R, int N, int in,
                       int out)
{
    rlhi__matmul(y, x, W, N, in, out);
    for (int r = 0; r < N; r++)
        for (int o = 0; o < out; o++)
            y[(size_t)r * out + o] += b[o];
    return dot(y, R, (size_t)N * out);
}

/* ---- fixtures ------------------------------------------------------- */

struct fixture {
    int n_params, B, T, V, steps;
    float *params, *logits, *grads, *final_params;
    int32_t *tokens, *targets, *seg;
    double loss, *step_loss;
};

static int read_fixture(const char *path, struct fixture *f)
{
    char *d = NULL;
    size_t len, at = 8, need;
    int32_t h[5];

    memset(f, 0, sizeof *f);
    if (rlhi_file_read(path, &d, &len) < 0)
        return -1;
    if (len < 28 || memcmp(d, "RLHITRF1", 8)) {
        rlhi_free(d);
        return -1;
    }
    memcpy(h, d + at, sizeof h);
    at += sizeof h;
    f->n_params = h[0], f->B = h[1], f->T = h[2], f->V = h[3];
    f->steps = h[4];
    need = at + 4 * ((size_t)f->n_params * 3 + (size_t)f->B * f->T * 3 +
                     (size_t)f->B * f->T * f->V) +
           8 * (1 + (size_t)f->steps);
    if (len != need) {
        fprintf(stderr, "fixture '%s' has %zu bytes, expected %zu\n", path,
                len, need);
        rlhi_free(d);
        return -1;
    }
#define TAKE(dst, n, sz)                                                    \
    do {                                                                    \
        dst = rlhi_malloc((size_t)(n) * (sz));                              \
        memcpy(dst, d + at, (size_t)(n) * (sz));                            \
        at += (size_t)(n) * (sz);                                           \
    } while (0)
    TAKE(f->params, f->n_params, 4);
    TAKE(f->tokens, f->B * f->T, 4);
    TAKE(f->targets, f->B * f->T, 4);
    TAKE(f->seg, f->B * f->T, 4);
    TAKE(f->logits, (size_t)f->B * f->T * f->V, 4);
    memcpy(&f->loss, d + at, 8);
    at += 8;
    TAKE(f->grads, f->n_params, 4);
    TAKE(f->step_loss, f->steps, 8);
    TAKE(f->final_params, f->n_params, 4);
#undef TAKE
    rlhi_free(d);
    return 0;
}

static void free_fixture(struct fixture *f)
{
    rlhi_free(f->params);
    rlhi_free(f->logits);
    rlhi_free(f->grads);
    rlhi_free(f->final_params);
    rlhi_free(f->tokens);
    rlhi_free(f->targets);
    rlhi_free(f->seg);
    rlhi_free(f->step_loss);
}

/* The tiny configurations of train_ref.py. */
static struct rlhi_model_config tiny_cfg(bool gqa)
{
    struct rlhi_model_config c = {
        .dim = 16, .hidden_dim = 32, .n_layers = 2, .n_heads = 4,
        .n_kv_heads = gqa ? 2 : 4, .head_dim = 4, .vocab_size = 40,
        .max_seq_len = 16, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
        .rope = gqa ? RLHI_ROPE_HALF : RLHI_ROPE_INTERLEAVED,
        .tied_embeddings = !gqa, .qkv_bias = gqa, .bos_id = -1,
        .eos_id = -1,
    };
    return c;
}

/* Max |a - b| over n, relative to max |b|. */
static double max_rel(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;

    for (size_t i = 0; i < n; i++) {
        double dd = fabs((double)a[i] - b[i]);

        if (dd > md || isnan(dd))
            md = isnan(dd) ? INFINITY : dd;
        if (fabs(b[i]) > mb)
            mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* One fwd + CE + bwd of the fixture batch; returns the loss. */
static double step_grads(struct rlhi_train *t, const struct fixture *f)
{
    struct rlhi_batch b = {f->B, f->T, f->tokens, f->seg, NULL};
    double loss = NAN;

    rlhi_train_zero_grad(t);
    if (rlhi_train_forward(t, &b) || rlhi_train_ce(t, f->targets, NULL, true,
                                                   &loss, NULL) ||
        rlhi_train_backward(t))
        return NAN;
    return loss;
}

static double loss_only(struct rlhi_train *t, const struct fixture *f)
{
    struct rlhi_batch b = {f->B, f->T, f->tokens, f->seg, NULL};
    double loss = NAN;

    if (rlhi_train_forward(t, &b) ||
        rlhi_train_ce(t, f->targets, NULL, false, &loss, NULL))
        return NAN;
    return loss;
}

static void fixture_tests(const char *name, bool gqa)
{
    char path[256];
    struct fixture f;
    struct rlhi_model_config cfg = tiny_cfg(gqa);
    struct rlhi_model *m = NULL;
    struct rlhi_train *t = NULL;
    struct rlhi_adamw opt;
    size_t N, i;
    float *logits;
    double loss;
    int s;

    snprintf(path, sizeof path, "tests/fixtures/train/%s.bin", name);
    if (read_fixture(path, &f)) {
        CHECK_MSG(0, "cannot read fixture '%s' (make fixtures)", path);
        return;
    }
    CHECK_OK(rlhi_model_new(&m, &cfg));
    if (!m)
        return;
    CHECK_INT_EQ(m->n_params, f.n_params);
    memcpy(m->params, f.params, m->n_params * sizeof(float));
    CHECK_OK(rlhi_train_new(&t, m, f.B, f.T));
    N = (size_t)f.B * f.T;

    /* Logits, loss and every gradient against float64 PyTorch. The float
     * model differs from float64 by accumulated rounding, ~1e-6 relative
     * on these sizes; 1e-5 (logits, loss) and 1e-4 (gradients, which
     * subtract nearly equal terms) leave a margin of ten. */
    loss = step_grads(t, &f);
    logits = rlhi_malloc(N * f.V * sizeof(float));
    rlhi_train_logits(t, logits);
    {
        double r = max_rel(logits, f.logits, N * f.V);

        CHECK_MSG(r < 1e-5, "%s logits off by %.3g (relative to max)", name,
                  r);
    }
    CHECK_NEAR(loss, f.loss, 0, 1e-5);
    {
        struct rlhi_tensor_info *info;
        int nt, bad = 0;
        size_t total;

        rlhi_model_tensor_list(&cfg, &info, &nt, &total);
        for (int k = 0; k < nt; k++) {
            double r = max_rel(t->grad.params + info[k].offset,
                               f.grads + info[k].offset, info[k].numel);

            if (r > 1e-4 && bad++ < 5)
                fprintf(stderr, "  %s grad %s off by %.3g\n", name,
                        info[k].name, r);
        }
        CHECK_MSG(bad == 0, "%s: %d gradient tensors off by > 1e-4", name,
                  bad);
        if (getenv("RLHI_TEST_VERBOSE"))
            fprintf(stderr, "  %s: all %d gradient tensors within 1e-4 of "
                    "max, grads total rel %.3g\n", name, nt,
                    max_rel(t->grad.params, f.grads, total));
        rlhi_free(info);
    }

    /* The fused head in chunks of 5 rows (not dividing N = 16) gives the
     * same loss and gradients as one chunk: the chunked path is the one
     * long batches take. */
    {
        float *g1 = rlhi_malloc(m->n_params * sizeof(float));
        int keep = t->head_rows;
        double l5;

        memcpy(g1, t->grad.params, m->n_params * sizeof(float));
        t->head_rows = 5;
        l5 = step_grads(t, &f);
        t->head_rows = keep;
        /* BLAS blocks 5 rows differently from 16: last-bit changes */
        CHECK_NEAR(l5, loss, 0, 1e-6);
        CHECK_MSG(max_rel(t->grad.params, g1, m->n_params) < 1e-6,
                  "chunked head gradients differ by %.3g",
                  max_rel(t->grad.params, g1, m->n_params));
        step_grads(t, &f);
        rlhi_free(g1);
    }

    /* The same against the inference forward (the lead's forward.c) for a
     * single-segment row: training and inference must agree. */
    if (!gqa) {
        struct rlhi_infer *inf = NULL;
        float *il = rlhi_malloc((size_t)f.T * f.V * sizeof(float));

        CHECK_OK(rlhi_infer_new(&inf, m, f.T));
        if (inf) {
            CHECK_OK(rlhi_infer_forward(inf, f.tokens + f.T, f.T, il, true));
            CHECK_MSG(max_rel(il, logits + (size_t)f.T * f.V,
                              (size_t)f.T * f.V) < 1e-6,
                      "training and inference logits differ");
        }
        rlhi_infer_free(inf);
        rlhi_free(il);
    }

    /* Fused CE's log-probs against the full logits, and the backward from
     * given d(logits) against the fused backward. */
    {
        float *lp = rlhi_malloc(N * sizeof(float));
        float *dl = rlhi_calloc(N * f.V, sizeof(float));
        float *g1 = rlhi_malloc(m->n_params * sizeof(float));
        int nvalid = 0, bad = 0;
        struct rlhi_batch b = {f.B, f.T, f.tokens, f.seg, NULL};
        double sums[2];
        int32_t slot[64];

        memcpy(g1, t->grad.params, m->n_params * sizeof(float));
        rlhi_train_forward(t, &b);
        CHECK_OK(rlhi_train_ce(t, f.targets, NULL, false, NULL, lp));
        for (i = 0; i < N; i++)
            nvalid += f.targets[i] >= 0;
        for (i = 0; i < N; i++) {
            const float *row = f.logits + i * f.V;
            double mx = row[0], se = 0, want;

            if (f.targets[i] < 0)
                continue;
            for (int j = 1; j < f.V; j++)
                mx = row[j] > mx ? row[j] : mx;
            for (int j = 0; j < f.V; j++)
                se += exp(row[j] - mx);
            want = row[f.targets[i]] - mx - log(se);
            bad += fabs(lp[i] - want) > 1e-5;
            for (int j = 0; j < f.V; j++)
                dl[i * f.V + j] = (float)(exp(row[j] - mx) / se / nvalid);
            dl[i * f.V + f.targets[i]] -= 1.0f / nvalid;
        }
        CHECK_MSG(bad == 0, "%d log-probs differ from log_softmax", bad);

        /* per-segment sums (DPO's log pi(y|x)): slot = row*2 + segment */
        for (i = 0; i < N && i < 64; i++)
            slot[i] = f.targets[i] >= 0 && i >= (size_t)f.T
                          ? (int32_t)f.seg[i] : -1;
        rlhi_logp_sums(lp, slot, (int)N, sums, 2);
        {
            double w0 = 0, w1 = 0;

            for (i = f.T; i < N; i++)
                if (f.targets[i] >= 0)
                    *(f.seg[i] ? &w1 : &w0) += lp[i];
            CHECK_NEAR(sums[0], w0, 1e-9, 0);
            CHECK_NEAR(sums[1], w1, 1e-9, 0);
        }

        rlhi_train_zero_grad(t);
        rlhi_train_forward(t, &b);
        rlhi_train_backward_logits(t, dl);
        rlhi_train_backward(t);
        CHECK_MSG(max_rel(t->grad.params, g1, m->n_params) < 1e-5,
                  "backward from d(logits) differs from fused CE: %.3g",
                  max_rel(t->grad.params, g1, m->n_params));
        rlhi_free(lp);
        rlhi_free(dl);
        rlhi_free(g1);
    }

    /* Whole-model finite differences along a random direction per tensor
     * (directional derivatives have one rounding error for many
     * parameters, so the tolerance can be tighter than per element). */
    {
        struct rlhi_tensor_info *info;
        int nt, bad = 0;
        size_t total;
        float *u = rlhi_malloc(m->n_params * sizeof(float));
        float *p0 = rlhi_malloc(m->n_params * sizeof(float));

        step_grads(t, &f);
        memcpy(p0, m->params, m->n_params * sizeof(float));
        rlhi_model_tensor_list(&cfg, &info, &nt, &total);
        for (int k = 0; k < nt; k++) {
            size_t o = info[k].offset, n = info[k].numel;
            double an, lp, lm, fd;

            fill(u, n, 1.0f / sqrtf((float)n));
            an = dot(t->grad.params + o, u, n);
            for (i = 0; i < n; i++)
                m->params[o + i] = p0[o + i] + FD_EPS * u[i];
            lp = loss_only(t, &f);
            for (i = 0; i < n; i++)
                m->params[o + i] = p0[o + i] - FD_EPS * u[i];
            lm = loss_only(t, &f);
            memcpy(m->params + o, p0 + o, n * sizeof(float));
            fd = (lp - lm) / (2 * FD_EPS);
            if (!fd_ok(fd, an) && bad++ < 5)
                fprintf(stderr, "  %s: fd %.6g analytic %.6g\n",
                        info[k].name, fd, an);
        }
        CHECK_MSG(bad == 0, "%s: %d tensors fail finite differences", name,
                  bad);
        rlhi_free(info);
        rlhi_free(u);
        rlhi_free(p0);
    }

    /* 10 AdamW steps with clipping and warmup + cosine, as train_ref.py.
     * The float run drifts from float64 by rounding amplified by Adam's
     * normalisation of tiny gradients; 1e-4 relative on the losses and
     * 1e-3 on the final weights hold with a margin. */
    memcpy(m->params, f.params, m->n_params * sizeof(float));
    CHECK_OK(rlhi_adamw_init(&opt, m->n_params, &cfg));
    {
        int bad = 0;

        for (s = 0; s < f.steps; s++) {
            double l = step_grads(t, &f);
            float lr = (float)rlhi_lr_cosine(1e-2, s, 3, f.steps);

            /* clipping folded into the update, as the trainers do */
            double gn = rlhi_grad_norm(t->grad.params, m->n_params);

            rlhi_adamw_step(&opt, m->params, t->grad.params, lr, 0.1f,
                            rlhi_clip_coef(gn, 0.5));
            if (fabs(l - f.step_loss[s]) > 1e-4 * fabs(f.step_loss[s]) &&
                bad++ < 3)
                fprintf(stderr, "  %s step %d loss %.8g want %.8g\n", name,
                        s, l, f.step_loss[s]);
        }
        CHECK_MSG(bad == 0, "%s: %d of %d AdamW step losses off", name, bad,
                  f.steps);
        CHECK_MSG(max_rel(m->params, f.final_params, m->n_params) < 1e-3,
                  "%s: weights after %d steps off by %.3g", name, f.steps,
                  max_rel(m->params, f.final_params, m->n_params));
    }
    rlhi_adamw_release(&opt);

    rlhi_free(logits);
    rlhi_train_free(t);
    rlhi_model_free(m);
    free_fixture(&f);
}

/* A small synthetic SFT set: random tokens, the second half scored. */
static void make_sft_data(struct rlhi_sft_data *d, int V)
{
    struct rlhi_rng r;
    int32_t tok[16];
    uint8_t sc[16];

    rlhi_rng_seed(&r, 99);
    for (int e = 0; e < 12; e++) {
        int n = 5 + (int)rlhi_rng_below(&r, 10);

        for (int i = 0; i < n; i++) {
            tok[i] = (int32_t)rlhi_rng_below(&r, (uint64_t)V);
            sc[i] = i >= n / 2;
        }
        rlhi_sft_data_add(d, tok, sc, n);
    }
}

/* Runs SFT on a fresh copy of the fixture weights; returns the final
 * parameters (caller frees) or NULL, and the library's code in *rc. */
static float *sft_run(bool gqa, const struct rlhi_sft_data *d,
                      const char *out, const char *resume, int64_t stop,
                      int64_t nan_at, int save_steps, int *rc)
{
    struct rlhi_model_config cfg = tiny_cfg(gqa);
    struct rlhi_model *m = NULL;
    struct rlhi_sft_config sc;
    struct rlhi_sft_result res;
    float *p = NULL;
    struct rlhi_rng r;

    rlhi_model_new(&m, &cfg);
    rlhi_rng_seed(&r, 5);
    fill(m->params, m->n_params, 0.3f);
    (void)r;
    rlhi_sft_config_init(&sc);
    sc.output_dir = out;
    sc.learning_rate = 1e-2;
    sc.max_steps = 10;
    sc.batch_size = 2;
    sc.grad_accum = 2;
    sc.max_length = 16;
    sc.seed = 3;
    sc.warmup_ratio = 0.1;
    sc.weight_decay = 0.1;
    sc.max_grad_norm = 1.0;
    sc.logging_steps = 2;
    sc.save_steps = save_steps;
    sc.packing = gqa;
    sc.resume_from = resume;
    sc.stop_after = stop;
    sc.nan_at_step = nan_at;
    *rc = rlhi_sft_train(m, d, &sc, &res);
    if (*rc == 0) {
        p = rlhi_malloc(m->n_params * sizeof(float));
        memcpy(p, m->params, m->n_params * sizeof(float));
    }
    rlhi_model_free(m);
    return p;
}

static void sft_resume_tests(bool gqa, const char *tmp)
{
    struct rlhi_sft_data d = {0};
    char a[512], b[512], ck[600], path[700];
    float *pa, *pc;
    size_t n;
    int rc;

    make_sft_data(&d, 40);
    snprintf(a, sizeof a, "%s/%s-straight", tmp, gqa ? "gqa" : "tied");
    snprintf(b, sizeof b, "%s/%s-killed", tmp, gqa ? "gqa" : "tied");
    /* the same weights every run: fill() draws from the shared rng */
    rlhi_rng_seed(&rng, 11);
    pa = sft_run(gqa, &d, a, NULL, 0, 0, 5, &rc);
    CHECK_MSG(rc == 0, "straight run: %s", rlhi_errmsg());
    rlhi_rng_seed(&rng, 11);
    rlhi_free(sft_run(gqa, &d, b, NULL, 5, 0, 5, &rc));
    CHECK_MSG(rc == 0, "killed run: %s", rlhi_errmsg());
    snprintf(ck, sizeof ck, "%s/checkpoint-5", b);
    snprintf(path, sizeof path, "%s/trainer_state.bin", ck);
    CHECK(rlhi_path_exists(path));
    snprintf(path, sizeof path, "%s/model.safetensors", b);
    CHECK(!rlhi_path_exists(path)); /* it stopped before the end */
    rlhi_rng_seed(&rng, 11);
    pc = sft_run(gqa, &d, b, ck, 0, 0, 5, &rc);
    CHECK_MSG(rc == 0, "resumed run: %s", rlhi_errmsg());
    {
        struct rlhi_model_config cfg = tiny_cfg(gqa);
        struct rlhi_tensor_info *info;
        int nt;

        rlhi_model_tensor_list(&cfg, &info, &nt, &n);
        rlhi_free(info);
    }
    CHECK_MSG(pa && pc && !memcmp(pa, pc, n * sizeof(float)),
              "%s: 10 steps straight and 5 + resume 5 differ",
              gqa ? "gqa" : "tied");
    /* The final model on disk loads back to the same bits. */
    if (pa) {
        struct rlhi_model *m = NULL;
        struct rlhi_adamw o;
        struct rlhi_trainer_state st;

        CHECK_OK(rlhi_checkpoint_load(a, &m, &o, &st));
        if (m) {
            CHECK(!memcmp(m->params, pa, n * sizeof(float)));
            CHECK_INT_EQ(st.step, 10);
            CHECK_INT_EQ(o.step, 10);
        }
        rlhi_adamw_release(&o);
        rlhi_model_free(m);
    }
    /* Metrics: one line every 2 steps with TRL's names. */
    {
        char *txt = NULL;
        size_t len = 0;
        int lines = 0;

        snprintf(path, sizeof path, "%s/metrics.jsonl", a);
        CHECK_OK(rlhi_file_read(path, &txt, &len));
        for (size_t i = 0; i < len; i++)
            lines += txt && txt[i] == '\n';
        CHECK_INT_EQ(lines, 5);
        CHECK(txt && strstr(txt, "\"loss\": ") &&
              strstr(txt, "\"grad_norm\": ") &&
              strstr(txt, "\"learning_rate\": ") &&
              strstr(txt, "\"num_tokens\": ") &&
              strstr(txt, "\"epoch\": ") && strstr(txt, "\"step\": 10}"));
        rlhi_free(txt);
    }
    /* The resumed run did 5 steps, not 10: 2 + 3 metrics lines. */
    {
        char *txt = NULL;
        size_t len = 0;
        int lines = 0;

        snprintf(path, sizeof path, "%s/metrics.jsonl", b);
        CHECK_OK(rlhi_file_read(path, &txt, &len));
        for (size_t i = 0; i < len; i++)
            lines += txt && txt[i] == '\n';
        CHECK_INT_EQ(lines, 5);
        rlhi_free(txt);
    }
    rlhi_free(pa);
    rlhi_free(pc);
    rlhi_sft_data_release(&d);
}

int main(void)
{
    char tmp[] = "/tmp/rlhi-test-train-XXXXXX";

    rlhi_rng_seed(&rng, 7);

    TEST("rmsnorm backward vs finite differences") {
        enum { N = 3, C = 8 };
        float x[N * C], w[C], R[N * C], o[N * C], rstd[N];
        float dx[N * C] = {0}, dw[C] = {0};

        fill(x, N * C, 1.0f);
        fill(w, C, 1.0f);
        fill(R, N * C, 1.0f);
        rms_loss(o, rstd, x, w, R, N, C);
        rlhi__rmsnorm_bwd(dx, dw, R, x, w, rstd, N, C);
        FD_CHECK("rmsnorm dx", x, N * C, dx, rms_loss(o, rstd, x, w, R, N, C));
        FD_CHECK("rmsnorm dw", w, C, dw, rms_loss(o, rstd, x, w, R, N, C));
    }

    TEST("swiglu backward vs finite differences") {
        enum { n = 24 };
        float g[n], u[n], R[n], h[n], dg[n], du[n];

        fill(g, n, 2.0f);
        fill(u, n, 1.0f);
        fill(R, n, 1.0f);
        rlhi__swiglu_bwd(dg, du, R, g, u, n);
        FD_CHECK("swiglu dg", g, n, dg, swiglu_loss(h, g, u, R, n));
        FD_CHECK("swiglu du", u, n, du, swiglu_loss(h, g, u, R, n));
    }

    TEST("rotary backward vs finite differences, both conventions") {
        enum { N = 3, NH = 2, HS = 6, P = 8 };
        float x[N * NH * HS], R[N * NH * HS], rt[N * NH * HS];
        float cs[P * HS / 2], sn[P * HS / 2], dx[N * NH * HS];
        int32_t pos[N] = {0, 5, 7};

        for (int p = 0; p < P; p++)
            for (int i = 0; i < HS / 2; i++) {
                float fr = 1.0f / powf(10000.0f, (float)(2 * i) / HS);

                cs[p * HS / 2 + i] = cosf(p * fr);
                sn[p * HS / 2 + i] = sinf(p * fr);
            }
        fill(x, N * NH * HS, 1.0f);
        fill(R, N * NH * HS, 1.0f);
        for (int st = 0; st < 2; st++) {
            memcpy(dx, R, sizeof dx);
            rlhi__rope(dx, N, NH, HS, pos, cs, sn, st, true);
            FD_CHECK(st ? "rope half" : "rope interleaved", x, N * NH * HS,
                     dx, rope_loss(rt, x, R, N, NH, HS, pos, cs, sn, st));
        }
    }

    TEST("attention backward vs finite differences (GQA, packed)") {
        enum { B = 2, T = 5, NH = 4, KVH = 2, HS = 4 };
        enum { QN = B * T * NH * HS, KN = B * T * KVH * HS };
        float q[QN], k[KN], v[KN], y[QN], R[QN], lse[B * T * NH];
        float dq[QN], dk[KN], dv[KN], scratch[64 * T];
        /* row 1 holds segments [0, 2) and [2, 5) */
        int32_t start[B * T] = {0, 0, 0, 0, 0, 0, 0, 2, 2, 2};
        struct attn_case a = {B, T, NH, KVH, HS, start, q, k, v, y, lse, R,
                              scratch};

        if (omp_get_max_threads() > 64)
            omp_set_num_threads(64);
        fill(q, QN, 1.0f);
        fill(k, KN, 1.0f);
        fill(v, KN, 1.0f);
        fill(R, QN, 1.0f);
        attn_loss(&a);
        rlhi__attn_bwd(dq, dk, dv, R, q, k, v, y, lse, start, B, T, NH, KVH,
                       HS, scratch, omp_get_max_threads());
        FD_CHECK("attn dq", q, QN, dq, attn_loss(&a));
        FD_CHECK("attn dk", k, KN, dk, attn_loss(&a));
        FD_CHECK("attn dv", v, KN, dv, attn_loss(&a));
        /* the second segment must not see the first: its outputs do not
         * move when the first segment's keys do */
        {
            float y0[QN];

            attn_loss(&a);
            memcpy(y0, y, sizeof y0);
            k[(size_t)(T + 0) * KVH * HS] += 1.0f;
            v[(size_t)(T + 1) * KVH * HS] += 1.0f;
            attn_loss(&a);
            CHECK(!memcmp(y + (size_t)(T + 2) * NH * HS,
                          y0 + (size_t)(T + 2) * NH * HS,
                          (size_t)3 * NH * HS * sizeof(float)));
        }
    }

    TEST("linear backward vs finite differences; BLAS vs plain twin") {
        enum { N = 4, IN = 6, OUT = 5 };
        float x[N * IN], W[OUT * IN], b[OUT], R[N * OUT], y[N * OUT];
        float dx[N * IN], dW[OUT * IN] = {0}, db[OUT] = {0};
        float dx2[N * IN], dW2[OUT * IN] = {0}, db2[OUT] = {0};

        fill(x, N * IN, 1.0f);
        fill(W, OUT * IN, 1.0f);
        fill(b, OUT, 1.0f);
        fill(R, N * OUT, 1.0f);
        rlhi__matmul_bwd(dx, dW, db, R, x, W, N, IN, OUT, false);
        FD_CHECK("linear dx", x, N * IN, dx,
                 lin_loss(y, x, W, b, R, N, IN, OUT));
        FD_CHECK("linear dW", W, OUT * IN, dW,
                 lin_loss(y, x, W, b, R, N, IN, OUT));
        FD_CHECK("linear db", b, OUT, db, lin_loss(y, x, W, b, R, N, IN, OUT));
        rlhi__matmul_bwd_ref(dx2, dW2, db2, R, x, W, N, IN, OUT, false);
        CHECK(max_rel(dx2, dx, N * IN) < 1e-6);
        CHECK(max_rel(dW2, dW, OUT * IN) < 1e-6);
        CHECK(max_rel(db2, db, OUT) < 1e-6);
    }

    TEST("BLAS backward kernels vs plain twins at model sizes") {
        int N = 37, IN = 96, OUT = 80;
        float *x = rlhi_malloc((size_t)N * IN * 4);
        float *W = rlhi_malloc((size_t)OUT * IN * 4);
        float *dy = rlhi_malloc((size_t)N * OUT * 4);
        float *dx1 = rlhi_malloc((size_t)N * IN * 4);
        float *dx2 = rlhi_malloc((size_t)N * IN * 4);
        float *dW1 = rlhi_calloc((size_t)OUT * IN, 4);
        float *dW2 = rlhi_calloc((size_t)OUT * IN, 4);
        float *db1 = rlhi_calloc(OUT, 4), *db2 = rlhi_calloc(OUT, 4);

        fill(x, (size_t)N * IN, 1.0f);
        fill(W, (size_t)OUT * IN, 1.0f);
        fill(dy, (size_t)N * OUT, 1.0f);
        fill(dx1, (size_t)N * IN, 1.0f);
        memcpy(dx2, dx1, (size_t)N * IN * 4);
        rlhi__matmul_bwd(dx1, dW1, db1, dy, x, W, N, IN, OUT, true);
        rlhi__matmul_bwd_ref(dx2, dW2, db2, dy, x, W, N, IN, OUT, true);
        /* float sums of ~100 terms in different orders: 1e-5 of max */
        CHECK(max_rel(dx1, dx2, (size_t)N * IN) < 1e-5);
        CHECK(max_rel(dW1, dW2, (size_t)OUT * IN) < 1e-5);
        CHECK(max_rel(db1, db2, OUT) < 1e-5);
        rlhi_free(x), rlhi_free(W), rlhi_free(dy), rlhi_free(dx1);
        rlhi_free(dx2), rlhi_free(dW1), rlhi_free(dW2), rlhi_free(db1);
        rlhi_free(db2);
    }

    TEST("schedule and clipping formulas") {
        /* HF get_cosine_schedule_with_warmup with 3 warmup of 10 steps */
        CHECK_NEAR(rlhi_lr_cosine(1.0, 0, 3, 10), 0.0, 1e-12, 0);
        CHECK_NEAR(rlhi_lr_cosine(1.0, 1, 3, 10), 1.0 / 3, 1e-12, 0);
        CHECK_NEAR(rlhi_lr_cosine(1.0, 3, 3, 10), 1.0, 1e-12, 0);
        CHECK_NEAR(rlhi_lr_cosine(1.0, 5, 3, 10),
                   0.5 * (1 + cos(M_PI * 2.0 / 7)), 1e-12, 0);
        CHECK_NEAR(rlhi_lr_cosine(1.0, 10, 3, 10), 0.0, 1e-12, 0);
        CHECK_INT_EQ(rlhi_warmup_steps(0.1, 25), 3);
        CHECK_INT_EQ(rlhi_warmup_steps(0.0, 25), 0);
        {
            float g[4] = {3, 4, 0, 0};

            CHECK_NEAR(rlhi_grad_clip(g, 4, 1.0), 5.0, 1e-12, 0);
            CHECK_NEAR(g[0], 3.0 / (5 + 1e-6), 1e-7, 0);
            g[2] = NAN;
            CHECK(isnan(rlhi_grad_clip(g, 4, 1.0)));
            CHECK(!rlhi_all_finite(g, 4));
        }
    }

    TEST("AdamW: vector path and scalar tail give the same bits") {
        /* o1 updates 16 elements (two AVX blocks); o2 the last 15 of them
         * (one block + a 7-element scalar tail), so elements 9..15 go
         * through different code in the two runs. */
        float p1[16], p2[16], g[16];
        struct rlhi_adamw o1, o2;

        fill(p1, 16, 1.0f);
        fill(g, 16, 1.0f);
        memcpy(p2, p1, sizeof p1);
        rlhi_adamw_init(&o1, 16, NULL);
        rlhi_adamw_init(&o2, 15, NULL);
        for (int s = 0; s < 3; s++) {
            rlhi_adamw_step(&o1, p1, g, 1e-2f, 0.1f, 0.7f);
            rlhi_adamw_step(&o2, p2 + 1, g + 1, 1e-2f, 0.1f, 0.7f);
        }
        CHECK(!memcmp(p1 + 1, p2 + 1, 15 * sizeof(float)));
        CHECK(!memcmp(o1.v + 1, o2.v, 15 * sizeof(float)));
        rlhi_adamw_release(&o1);
        rlhi_adamw_release(&o2);
    }

    TEST("gqa model (half rotary, biases, untied, packed) vs PyTorch") {
        fixture_tests("gqa", true);
    }

    TEST("tied model (interleaved rotary, MHA) vs PyTorch and inference") {
        fixture_tests("tied", false);
    }

    TEST("same seed, same data, same threads: identical bits") {
        struct fixture f;
        struct rlhi_model_config cfg = tiny_cfg(true);
        float *run[2] = {NULL, NULL};

        if (read_fixture("tests/fixtures/train/gqa.bin", &f)) {
            CHECK_MSG(0, "cannot read gqa fixture");
        } else {
            for (int k = 0; k < 2; k++) {
                struct rlhi_model *m = NULL;
                struct rlhi_train *t = NULL;
                struct rlhi_adamw opt;

                rlhi_model_new(&m, &cfg);
                memcpy(m->params, f.params, m->n_params * 4);
                rlhi_train_new(&t, m, f.B, f.T);
                rlhi_adamw_init(&opt, m->n_params, &cfg);
                for (int s = 0; s < 5; s++) {
                    step_grads(t, &f);
                    rlhi_grad_clip(t->grad.params, m->n_params, 0.5);
                    rlhi_adamw_step(&opt, m->params, t->grad.params,
                                    (float)rlhi_lr_cosine(1e-2, s, 1, 5),
                                    0.1f, 1.0f);
                }
                run[k] = rlhi_malloc(m->n_params * 4);
                memcpy(run[k], m->params, m->n_params * 4);
                CHECK(!memcmp(run[k], run[0], m->n_params * 4));
                rlhi_adamw_release(&opt);
                rlhi_train_free(t);
                rlhi_model_free(m);
            }
            free_fixture(&f);
        }
        rlhi_free(run[0]);
        rlhi_free(run[1]);
    }

    TEST("bad input: shapes, tokens, targets") {
        struct rlhi_model_config cfg = tiny_cfg(true);
        struct rlhi_model *m = NULL;
        struct rlhi_train *t = NULL;
        int32_t tok[4] = {1, 2, 99, 3}, tg[4] = {1, 2, 3, 40};
        struct rlhi_batch b = {1, 4, tok, NULL, NULL};

        rlhi_model_new(&m, &cfg);
        CHECK_INT_EQ(rlhi_train_new(&t, m, 1, 17), RLHI_EINVAL);
        CHECK_OK(rlhi_train_new(&t, m, 1, 4));
        CHECK_INT_EQ(rlhi_train_forward(t, &b), RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "token id 99 at row 0, column 2"));
        tok[2] = 5;
        b.B = 2;
        CHECK_INT_EQ(rlhi_train_forward(t, &b), RLHI_EINVAL);
        b.B = 1;
        CHECK_OK(rlhi_train_forward(t, &b));
        CHECK_INT_EQ(rlhi_train_ce(t, tg, NULL, true, NULL, NULL),
                     RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "target id 40"));
        {
            float w[4] = {1, NAN, 1, 1};

            tg[3] = 0;
            CHECK_INT_EQ(rlhi_train_ce(t, tg, w, true, NULL, NULL),
                         RLHI_ENUMERIC);
        }
        rlhi_train_free(t);
        rlhi_model_free(m);
    }

    TEST("checkpoint resume is bit-exact (packed, half rotary)") {
        if (mkdtemp(tmp))
            sft_resume_tests(true, tmp);
    }

    TEST("checkpoint resume is bit-exact (interleaved rotary, tied)") {
        sft_resume_tests(false, tmp);
    }

    TEST("NaN in the gradients stops training, names the step, saves "
         "nothing") {
        struct rlhi_sft_data d = {0};
        char out[512], path[700];
        int rc;

        make_sft_data(&d, 40);
        snprintf(out, sizeof out, "%s/nan", tmp);
        rlhi_rng_seed(&rng, 11);
        rlhi_free(sft_run(true, &d, out, NULL, 0, 3, 1, &rc));
        CHECK_INT_EQ(rc, RLHI_ENUMERIC);
        CHECK_MSG(strstr(rlhi_errmsg(), "step 3:") != NULL, "message: %s",
                  rlhi_errmsg());
        snprintf(path, sizeof path, "%s/checkpoint-2/trainer_state.bin", out);
        CHECK(rlhi_path_exists(path));
        snprintf(path, sizeof path, "%s/checkpoint-3", out);
        CHECK(!rlhi_path_exists(path));
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        CHECK(!rlhi_path_exists(path));
        rlhi_sft_data_release(&d);
    }

    TEST("corrupt trainer state is refused with the file named") {
        char path[700], *data = NULL;
        size_t len;
        struct rlhi_model *m = NULL;
        struct rlhi_adamw o;
        struct rlhi_trainer_state st;

        snprintf(path, sizeof path, "%s/gqa-straight/trainer_state.bin", tmp);
        if (rlhi_file_read(path, &data, &len) == 0) {
            data[len / 2] ^= 1;
            rlhi_file_write_atomic(path, data, len);
            snprintf(path, sizeof path, "%s/gqa-straight", tmp);
            CHECK_INT_EQ(rlhi_checkpoint_load(path, &m, &o, &st),
                         RLHI_EFORMAT);
            CHECK(strstr(rlhi_errmsg(), "checksum") != NULL);
            snprintf(path, sizeof path, "%s/gqa-straight/trainer_state.bin",
                     tmp);
            rlhi_file_write_atomic(path, data, len / 2);
            snprintf(path, sizeof path, "%s/gqa-straight", tmp);
            CHECK_INT_EQ(rlhi_checkpoint_load(path, &m, &o, &st),
                         RLHI_EFORMAT);
            CHECK(strstr(rlhi_errmsg(), "truncated") != NULL);
        } else {
            CHECK_MSG(0, "no checkpoint to corrupt");
        }
        rlhi_free(data);
        CHECK_INT_EQ(rlhi_checkpoint_load(tmp, &m, &o, &st), RLHI_ENOTFOUND);
    }

    TEST("SFT data: chat rendered, only assistant answers scored") {
        static const char *const specials[] = {
            "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
            "<|end|>",
        };
        static const char jsonl[] =
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi "
            "there\"}, {\"role\": \"assistant\", \"content\": \"hello, "
            "friend\"}]}\n"
            "not json\n"
            "{\"messages\": [{\"role\": \"user\", \"content\": \"no "
            "answer\"}]}\n"
            "{\"messages\": [{\"role\": \"system\", \"content\": \"be "
            "brief\"}, {\"role\": \"user\", \"content\": \"one\"}, "
            "{\"role\": \"assistant\", \"content\": \"first answer\"}, "
            "{\"role\": \"user\", \"content\": \"two\"}, {\"role\": "
            "\"assistant\", \"content\": \"second\"}]}\n";
        static const char *const want[] = {
            "hello, friend<|end|>", "first answer<|end|>second<|end|>",
        };
        struct rlhi_bpe_train_options bo = {0};
        struct rlhi_bpe_trainer *bt = NULL;
        struct rlhi_tokenizer *tk = NULL;
        struct rlhi_sft_data d = {0};
        char path[600], dir[600];

        snprintf(path, sizeof path, "%s/chat.jsonl", tmp);
        snprintf(dir, sizeof dir, "%s/tok", tmp);
        rlhi_file_write_atomic(path, jsonl, sizeof jsonl - 1);
        bo.vocab_size = 300;
        bo.special_tokens = specials;
        bo.n_special = 5;
        CHECK_OK(rlhi_bpe_trainer_new(&bt, &bo));
        if (bt) {
            CHECK_OK(rlhi_bpe_trainer_add_text(bt, jsonl, sizeof jsonl - 1));
            CHECK_OK(rlhi_bpe_trainer_train(bt));
            CHECK_OK(rlhi_bpe_trainer_save(bt, dir));
        }
        rlhi_bpe_trainer_free(bt);
        CHECK_OK(rlhi_tokenizer_load(&tk, dir));
        if (tk) {
            CHECK_OK(rlhi_sft_data_load(&d, path, tk, RLHI_CHAT_RLHI, 256));
            CHECK_INT_EQ(d.n, 2);
            CHECK_INT_EQ(d.skipped, 2);
            for (int e = 0; e < d.n && e < 2; e++) {
                struct rlhi_buf sc = RLHI_BUF_INIT;

                for (int i = 0; i < d.ex[e].n; i++)
                    if (d.ex[e].scored[i])
                        rlhi_tokenizer_decode(tk, d.ex[e].tokens + i, 1,
                                              false, &sc);
                CHECK_STR_EQ(sc.buf, want[e]);
                rlhi_buf_release(&sc);
            }
            /* truncation keeps the start */
            rlhi_sft_data_release(&d);
            CHECK_OK(rlhi_sft_data_load(&d, path, tk, RLHI_CHAT_RLHI, 5));
            CHECK(d.n == 2 && d.ex[0].n == 5 && d.ex[1].n == 5);
        }
        rlhi_sft_data_release(&d);
        rlhi_tokenizer_free(tk);
    }

    {
        char cmd[600];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd))
            fprintf(stderr, "could not remove '%s'\n", tmp);
    }
    return check_summary();
}
