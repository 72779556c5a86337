/* Reward model: scalar head at the last token, Bradley-Terry training,
 * scoring, and saving the head as score.weight.
 *
 * A micro-batch of n pairs is 2n rows, row 2i = prompt | chosen and row
 * 2i+1 = prompt | rejected, padded at the end (causal attention keeps the
 * padding out of the real tokens). With r = w . out[last] the gradient is
 *     d out[last] = dL/dr * w,   d w += dL/dr * out[last]
 * written into t->d_out, then the engine's backward pass does the rest.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "rlhi/reward.h"
#include "rlhi/safetensors.h"
#include "rlhi/train.h"

/* Head initialisation: transformers' initializer_range. */
#define HEAD_STD 0.02

void rlhi_reward_config_init(struct rlhi_reward_config *c)
{
    memset(c, 0, sizeof *c);
    c->learning_rate = 1e-5;
    c->num_train_epochs = 1;
    c->max_steps = -1;
    c->batch_size = 8;
    c->grad_accum = 1;
    c->seed = 42;
    c->max_grad_norm = 1.0;
    c->logging_steps = 10;
    c->save_steps = 500;
    c->save_final = true;
}

int rlhi_reward_new(struct rlhi_reward **out, struct rlhi_model *m,
                    uint64_t seed)
{
    struct rlhi_reward *rm = rlhi_calloc(1, sizeof *rm);
    struct rlhi_rng rng;

    *out = NULL;
    if (rm)
        rm->score = rlhi_malloc((size_t)m->cfg.dim * sizeof(float));
    if (!rm || !rm->score) {
        rlhi_free(rm);
        rlhi_model_free(m);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate a reward head");
    }
    rm->m = m;
    rlhi_rng_seed(&rng, seed);
    for (int i = 0; i < m->cfg.dim; i++)
        rm->score[i] = (float)(HEAD_STD * rlhi_rng_normal(&rng));
    *out = rm;
    return 0;
}

void rlhi_reward_free(struct rlhi_reward *rm)
{
    if (!rm)
        return;
    rlhi_model_free(rm->m);
    rlhi_free(rm->score);
    rlhi_free(rm);
}

int rlhi_reward_load(struct rlhi_reward **out, const char *dir)
{
    struct rlhi_model *m = NULL;
    struct rlhi_safetensors *st = NULL;
    const struct rlhi_st_tensor *w;
    char *path = NULL;
    int r;

    *out = NULL;
    r = rlhi_model_load(&m, dir);
    if (r)
        return r;
    path = rlhi_path_join(dir, "model.safetensors");
    if (!path) {
        rlhi_model_free(m);
        return rlhi_err(RLHI_ENOMEM, "cannot load a reward model");
    }
    r = rlhi_safetensors_open(&st, path);
    if (r)
        goto fail;
    w = rlhi_safetensors_find(st, "score.weight");
    if (!w) {
        r = rlhi_err(RLHI_ENOTFOUND, "'%s' has no \"score.weight\": not a "
                     "reward model\nhint: train one with 'rlhi reward "
                     "train'", path);
        goto fail;
    }
    if (w->numel != (uint64_t)m->cfg.dim) {
        r = rlhi_err(RLHI_EFORMAT, "'%s': \"score.weight\" has %llu values, "
                     "expected (1, %d)", path, (unsigned long long)w->numel,
                     m->cfg.dim);
        goto fail;
    }
    r = rlhi_reward_new(out, m, 0);
    m = NULL;
    if (!r)
        r = rlhi_st_tensor_to_f32(w, (*out)->score);
    if (r) {
        rlhi_reward_free(*out);
        *out = NULL;
    }
fail:
    rlhi_safetensors_close(st);
    rlhi_model_free(m);
    rlhi_free(path);
    return r;
}

int rlhi_reward_save(const struct rlhi_reward *rm, const char *dir,
                     const char *copy_from)
{
    struct rlhi_safetensors *st = NULL;
    struct rlhi_st_out *o = NULL;
    float **bufs = NULL;
    char *path = NULL;
    int r, i, n = 0;

    r = rlhi_model_save_hf(rm->m, dir, false);
    if (r)
        return r;
    path = rlhi_path_join(dir, "model.safetensors");
    if (!path)
        return rlhi_err(RLHI_ENOMEM, "cannot save the reward head");
    r = rlhi_safetensors_open(&st, path);
    if (r)
        goto out;

    /* The file again, every tensor as it is, plus score.weight (1, C). */
    n = st->n_tensors;
    o = rlhi_calloc((size_t)n + 1, sizeof *o);
    bufs = rlhi_calloc((size_t)n + 1, sizeof *bufs);
    if (!o || !bufs) {
        r = rlhi_err(RLHI_ENOMEM, "cannot save the reward head");
        goto out;
    }
    for (i = 0; i < n && !r; i++) {
        const struct rlhi_st_tensor *t = &st->tensors[i];

        bufs[i] = rlhi_malloc((size_t)(t->numel ? t->numel : 1) *
                              sizeof(float));
        if (!bufs[i]) {
            r = rlhi_err(RLHI_ENOMEM, "cannot save the reward head");
            break;
        }
        r = rlhi_st_tensor_to_f32(t, bufs[i]);
        o[i].name = t->name;
        o[i].ndim = t->ndim;
        memcpy(o[i].shape, t->shape, sizeof o[i].shape);
        o[i].data = bufs[i];
    }
    if (r)
        goto out;
    o[n].name = "score.weight";
    o[n].ndim = 2;
    o[n].shape[0] = 1;
    o[n].shape[1] = rm->m->cfg.dim;
    o[n].data = rm->score;
    r = rlhi_safetensors_write(path, o, n + 1, NULL, 0);
    if (!r)
        r = rlhi__copy_tokenizer(copy_from, dir);
out:
    for (i = 0; bufs && i < n; i++)
        rlhi_free(bufs[i]);
    rlhi_free(bufs);
    rlhi_free(o);
    rlhi_safetensors_close(st);
    rlhi_free(path);
    return r;
}

/* ---- forward and backward of a batch of rows ------------------------ */

struct rows {
    int B, T;
    int32_t *tok; /* (B, T) */
    int *last;    /* (B) column of each row's last token */
};

/* Forward of rows; rewards into r (B). */
static int rows_forward(struct rlhi_train *t, const float *w,
                        const struct rows *rw, double *r)
{
    const int C = t->m->cfg.dim;
    struct rlhi_batch b = {rw->B, rw->T, rw->tok, NULL, NULL};
    int rc = rlhi_train_forward(t, &b);

    if (rc)
        return rc;
    for (int i = 0; i < rw->B; i++) {
        const float *o = t->out + ((size_t)i * rw->T + rw->last[i]) * C;
        double s = 0;

        for (int j = 0; j < C; j++)
            s += (double)o[j] * w[j];
        r[i] = s;
    }
    return 0;
}

int rlhi_reward_score(struct rlhi_reward *rm, const int32_t *const *seqs,
                      const int *lens, int n, double *out)
{
    const int C = rm->m->cfg.dim;
    struct rlhi_infer *st = NULL;
    float *h = NULL;
    int T = 1, r = 0;

    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] <= 0 || lens[i] > rm->m->cfg.max_seq_len)
            return rlhi_err(RLHI_EINVAL, "sequence %d has %d tokens (the "
                            "model takes 1..%d)", i, lens[i],
                            rm->m->cfg.max_seq_len);
        T = lens[i] > T ? lens[i] : T;
    }
    /* The inference forward pass (no activations kept for a backward
     * pass): one state as long as the longest sequence, reset for each. */
    if (!(h = rlhi_malloc((size_t)C * sizeof *h)))
        return rlhi_err(RLHI_ENOMEM, "cannot score sequences");
    r = rlhi_infer_new(&st, rm->m, T);
    for (int i = 0; i < n && !r; i++) {
        double sc = 0;

        rlhi_infer_truncate(st, 0);
        if ((r = rlhi_infer_forward_hidden(st, seqs[i], lens[i], h)))
            break;
        for (int j = 0; j < C; j++)
            sc += (double)h[j] * rm->score[j];
        out[i] = sc;
    }
    rlhi_infer_free(st);
    rlhi_free(h);
    return r;
}

/* Lays pairs idx[0..n) out as 2n rows. */
static void pair_rows(struct rows *rw, const struct rlhi_dpo_data *d,
                      const int *idx, int n, int64_t *ntok)
{
    int T = 1;

    for (int i = 0; i < n; i++) {
        const struct rlhi_dpo_pair *p = &d->p[idx[i]];
        int a = p->np + p->nc, b = p->np + p->nr;

        T = a > T ? a : T;
        T = b > T ? b : T;
    }
    rw->B = 2 * n;
    rw->T = T;
    memset(rw->tok, 0, (size_t)rw->B * T * sizeof *rw->tok);
    for (int i = 0; i < n; i++) {
        const struct rlhi_dpo_pair *p = &d->p[idx[i]];

        for (int s = 0; s < 2; s++) {
            int32_t *row = rw->tok + (size_t)(2 * i + s) * T;
            int na = s ? p->nr : p->nc;

            memcpy(row, p->prompt, (size_t)p->np * sizeof *row);
            memcpy(row + p->np, s ? p->rejected : p->chosen,
                   (size_t)na * sizeof *row);
            rw->last[2 * i + s] = p->np + na - 1;
            *ntok += p->np + na;
        }
    }
}

static double logsig(double x)
{
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

/* Loss, metrics and d loss / d r of n pairs with rewards r (2n). */
static double bt_loss(const double *r, const struct rlhi_dpo_data *d,
                      const int *idx, int n, double center, double *dr,
                      struct rlhi_reward_metrics *mt)
{
    double loss = 0;

    for (int i = 0; i < n; i++) {
        double rc = r[2 * i], rj = r[2 * i + 1];
        double x = rc - rj - d->p[idx[i]].margin;
        double g = -exp(logsig(-x)) / n; /* d/dx -logsig(x) = -sig(-x) */

        loss += -logsig(x) / n;
        if (dr) {
            dr[2 * i] = g;
            dr[2 * i + 1] = -g;
        }
        if (center > 0) {
            /* TRL: + coef * mean((r_c + r_r)^2) over pairs */
            loss += center * (rc + rj) * (rc + rj) / n;
            if (dr) {
                dr[2 * i] += 2 * center * (rc + rj) / n;
                dr[2 * i + 1] += 2 * center * (rc + rj) / n;
            }
        }
        if (mt) {
            mt->accuracy += rc > rj;
            mt->margin += rc - rj;
            for (int s = 0; s < 2; s++) {
                double v = r[2 * i + s];

                mt->min = mt->pairs || i || s ? fmin(mt->min, v) : v;
                mt->max = mt->pairs || i || s ? fmax(mt->max, v) : v;
                mt->mean += v;
            }
        }
    }
    if (mt) {
        mt->loss += loss * n;
        mt->pairs += n;
    }
    return loss;
}

/* Turns sums from bt_loss into means. */
static void metrics_finish(struct rlhi_reward_metrics *mt)
{
    if (mt->pairs) {
        mt->loss /= mt->pairs;
        mt->accuracy /= mt->pairs;
        mt->margin /= mt->pairs;
        mt->mean /= 2.0 * mt->pairs;
    }
}

int rlhi_reward_eval(struct rlhi_reward *rm, const struct rlhi_dpo_data *d,
                     struct rlhi_reward_metrics *mt)
{
    const int32_t **seqs = rlhi_malloc((size_t)2 * d->n * sizeof *seqs);
    int32_t *buf = NULL;
    int *lens = rlhi_malloc((size_t)2 * d->n * sizeof *lens), *idx = NULL;
    double *r = rlhi_malloc((size_t)2 * d->n * sizeof *r);
    size_t total = 0, at = 0;
    int rc;

    memset(mt, 0, sizeof *mt);
    for (int i = 0; i < d->n; i++)
        total += 2 * (size_t)d->p[i].np + d->p[i].nc + d->p[i].nr;
    buf = rlhi_malloc((total ? total : 1) * sizeof *buf);
    idx = rlhi_malloc((size_t)(d->n ? d->n : 1) * sizeof *idx);
    if (!seqs || !lens || !r || !buf || !idx) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot evaluate the reward model");
        goto out;
    }
    for (int i = 0; i < d->n; i++) {
        const struct rlhi_dpo_pair *p = &d->p[i];

        idx[i] = i;
        for (int s = 0; s < 2; s++) {
            int na = s ? p->nr : p->nc;

            memcpy(buf + at, p->prompt, (size_t)p->np * sizeof *buf);
            memcpy(buf + at + p->np, s ? p->rejected : p->chosen,
                   (size_t)na * sizeof *buf);
            seqs[2 * i + s] = buf + at;
            lens[2 * i + s] = p->np + na;
            at += (size_t)(p->np + na);
        }
    }
    rc = rlhi_reward_score(rm, seqs, lens, 2 * d->n, r);
    if (!rc) {
        bt_loss(r, d, idx, d->n, 0, NULL, mt);
        metrics_finish(mt);
    }
out:
    rlhi_free(seqs);
    rlhi_free(lens);
    rlhi_free(r);
    rlhi_free(buf);
    rlhi_free(idx);
    return rc;
}

/* ---- training ------------------------------------------------------- */

static int log_metrics(const char *path, const struct rlhi_reward_metrics *m,
                       double gnorm, double lr, int64_t ntok, double epoch,
                       int64_t step)
{
    return rlhi__append_line(
        path, "{\"loss\": %.6g, \"accuracy\": %.6g, \"margin\": %.6g, "
              "\"min_reward\": %.6g, \"mean_reward\": %.6g, "
              "\"max_reward\": %.6g, \"grad_norm\": %.6g, "
              "\"learning_rate\": %.6g, \"num_tokens\": %lld, "
              "\"epoch\": %.4f, \"step\": %lld}\n", m->loss, m->accuracy,
        m->margin, m->min, m->mean, m->max, gnorm, lr, (long long)ntok,
        epoch, (long long)step);
}

int rlhi_reward_train(struct rlhi_reward *rm, const struct rlhi_dpo_data *d,
                      const struct rlhi_reward_config *cfg,
                      struct rlhi_reward_result *res)
{
    struct rlhi_model *m = rm->m;
    const int C = m->cfg.dim;
    struct rlhi_train *t = NULL;
    struct rlhi_adamw opt = {0}, hopt = {0};
    struct rlhi_reward_metrics win;
    struct rlhi_rng rng;
    struct rows rw = {0};
    int *perm = NULL, B, T, bs = cfg->batch_size, r;
    double *rr = NULL, *dr = NULL, t0 = rlhi_time_now();
    float *gw = NULL;
    char *metrics = NULL;
    int64_t step = 0, total, epoch = 0, row = 0, ntok = 0, spe, warmup;

    memset(res, 0, sizeof *res);
    memset(&win, 0, sizeof win);
    if (!cfg->output_dir || bs < 1 || cfg->grad_accum < 1 ||
        !(cfg->learning_rate >= 0) ||
        !(cfg->num_train_epochs > 0 || cfg->max_steps > 0))
        return rlhi_err(RLHI_EINVAL, "invalid reward settings: output "
                        "directory, batch size %d, accumulation %d, "
                        "learning rate %g", bs, cfg->grad_accum,
                        cfg->learning_rate);
    if (d->n == 0)
        return rlhi_err(RLHI_EINVAL, "no pairs to train the reward model "
                        "on");
    r = rlhi_model_own(m);
    if (r)
        return r;
    spe = rlhi__schedule(d->n, bs, cfg->grad_accum, cfg->max_steps,
                         cfg->num_train_epochs, cfg->warmup_ratio, &total,
                         &warmup);
    rlhi_dpo_batch_shape(d, bs, false, &B, &T);
    perm = rlhi_malloc((size_t)d->n * sizeof *perm);
    rr = rlhi_malloc((size_t)4 * bs * sizeof *rr);
    gw = rlhi_malloc((size_t)C * sizeof *gw);
    rw.tok = rlhi_malloc((size_t)B * T * sizeof *rw.tok);
    rw.last = rlhi_malloc((size_t)B * sizeof *rw.last);
    metrics = rlhi_path_join(cfg->output_dir, "metrics.jsonl");
    if (!perm || !rr || !gw || !rw.tok || !rw.last || !metrics) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate reward training state");
        goto out;
    }
    dr = rr + 2 * bs;
    r = rlhi_mkdir_p(cfg->output_dir);
    if (!r)
        r = rlhi_train_new(&t, m, B, T);
    if (!r)
        r = rlhi_adamw_init(&opt, m->n_params, &m->cfg);
    if (!r)
        r = rlhi_adamw_init(&hopt, (size_t)C, NULL);
    if (r)
        goto out;
    rlhi__epoch_order(perm, d->n, cfg->seed, epoch, &rng);
    rlhi_info("reward: %d pairs, %lld steps, batch %d x %d accumulation",
              d->n, (long long)total, bs, cfg->grad_accum);

    while (step < total) {
        int nmicro = 0;
        int64_t r0 = row;
        double gn, lr, coef;

        for (int mb = 0; mb < cfg->grad_accum && r0 < d->n; mb++) {
            r0 += d->n - r0 < bs ? d->n - r0 : bs;
            nmicro++;
        }
        rlhi_train_zero_grad(t);
        memset(gw, 0, (size_t)C * sizeof *gw);
        for (int mb = 0; mb < nmicro; mb++) {
            int nb = d->n - (int)row < bs ? d->n - (int)row : bs;
            const int *idx = perm + row;

            pair_rows(&rw, d, idx, nb, &ntok);
            r = rows_forward(t, rm->score, &rw, rr);
            if (r)
                goto out;
            bt_loss(rr, d, idx, nb, cfg->center_rewards_coefficient, dr,
                    &win);
            /* the scalar head's backward into d_out and its gradient */
            for (int i = 0; i < rw.B; i++) {
                size_t o = ((size_t)i * rw.T + rw.last[i]) * C;
                float g = (float)(dr[i] / nmicro);

                for (int j = 0; j < C; j++) {
                    t->d_out[o + j] = g * rm->score[j];
                    gw[j] += g * t->out[o + j];
                }
            }
            r = rlhi_train_backward(t);
            if (r)
                goto out;
            row += nb;
        }

        /* one global norm over the transformer and the head */
        gn = rlhi_grad_norm(t->grad.params, m->n_params);
        gn = sqrt(gn * gn + pow(rlhi_grad_norm(gw, (size_t)C), 2));
        r = rlhi__check_grad_norm(gn, step);
        if (r)
            goto out;
        lr = rlhi_lr_cosine(cfg->learning_rate, step, warmup, total);
        coef = rlhi_clip_coef(gn, cfg->max_grad_norm);
        rlhi_adamw_step(&opt, m->params, t->grad.params, (float)lr,
                        (float)cfg->weight_decay, (float)coef);
        rlhi_adamw_step(&hopt, rm->score, gw, (float)lr,
                        (float)cfg->weight_decay, (float)coef);
        step++;
        if (row >= d->n) {
            row = 0;
            epoch++;
            rlhi__epoch_order(perm, d->n, cfg->seed, epoch, &rng);
        }
        if (rlhi__is_log_step(step, cfg->logging_steps, total)) {
            double ep = (double)step / (double)spe;

            metrics_finish(&win);
            rlhi_info("step %lld/%lld: loss %.4f accuracy %.3f margin %.4f "
                      "reward min %.3f mean %.3f max %.3f grad_norm %.4f "
                      "learning_rate %.3g", (long long)step,
                      (long long)total, win.loss, win.accuracy, win.margin,
                      win.min, win.mean, win.max, gn, lr);
            r = log_metrics(metrics, &win, gn, lr, ntok, ep, step);
            if (r)
                goto out;
            res->last = win;
            memset(&win, 0, sizeof win);
        }
        if (rlhi__is_save_step(step, cfg->save_steps, total)) {
            char *dir = NULL;

            r = rlhi__checkpoint_dir(cfg->output_dir, step, &dir);
            if (!r)
                r = rlhi_reward_save(rm, dir, cfg->copy_from);
            rlhi_free(dir);
            if (r)
                goto out;
        }
    }
    if (cfg->save_final) {
        r = rlhi_reward_save(rm, cfg->output_dir, cfg->copy_from);
        if (!r)
            rlhi_info("saved the reward model to '%s'", cfg->output_dir);
    }
out:
    res->steps = step;
    res->seconds = rlhi_time_now() - t0;
    rlhi_train_free(t);
    rlhi_adamw_release(&opt);
    rlhi_adamw_release(&hopt);
    rlhi_free(perm);
    rlhi_free(rr);
    rlhi_free(gw);
    rlhi_free(rw.tok);
    rlhi_free(rw.last);
    rlhi_free(metrics);
    return r;
}
