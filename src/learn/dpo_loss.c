/* DPO loss functions and their gradients w.r.t. the summed log-probs.
 *
 * Formulas follow TRL's DPOTrainer (huggingface.co/docs/trl/dpo_trainer,
 * "Loss functions"; trl/trainer/dpo_trainer.py dpo_loss()), with
 *     h = (pc - rc) - (pr - rr)          (TRL's `logits`)
 * and b = beta, ls = label_smoothing, logsig = log(sigmoid):
 *   sigmoid       -logsig(b h)(1 - ls) - logsig(-b h) ls     (DPO, cDPO)
 *   robust        ((1 - ls)(-logsig(b h)) + ls logsig(-b h)) / (1 - 2 ls)
 *   hinge         relu(1 - b h)                             (SLiC)
 *   ipo           (hn - 1/(2 b))^2, hn = h on log-probs averaged over
 *                 the answer's tokens (TRL divides all_logps by the
 *                 completion length for ipo)
 *   sigmoid_norm  sigmoid on hn
 *   sft           mean NLL of the chosen tokens (RPO's NLL term)
 * The per-pair terms are averaged over the batch; sft is the mean over
 * every chosen token of the batch. Each gradient is a coefficient on pc
 * and pr; the trainer hands it to rlhi_train_ce() as per-token weights.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/dpo.h"

static const char *const names[RLHI_DPO_NKINDS] = {
    "sigmoid", "ipo", "hinge", "robust", "sft", "sigmoid_norm",
};

const char *rlhi_dpo_loss_name(enum rlhi_dpo_loss_kind k)
{
    return (int)k >= 0 && k < RLHI_DPO_NKINDS ? names[k] : "unknown";
}

/* log(sigmoid(x)), stable for large |x|. */
static double logsig(double x)
{
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double sigm(double x)
{
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

int rlhi_dpo_loss_parse(struct rlhi_dpo_loss_cfg *c, const char *types,
                        const char *weights)
{
    const char *s = types && *types ? types : "sigmoid";
    int nw = 0;

    memset(c, 0, sizeof *c);
    c->beta = 0.1;
    while (*s) {
        size_t len = strcspn(s, ",");
        int k;

        for (k = 0; k < RLHI_DPO_NKINDS; k++)
            if (strlen(names[k]) == len && !strncmp(s, names[k], len))
                break;
        if (k == RLHI_DPO_NKINDS)
            return rlhi_err(RLHI_EINVAL, "unknown loss type '%.*s' (known: "
                            "sigmoid, ipo, hinge, robust, sft, "
                            "sigmoid_norm)", (int)len, s);
        if (c->n == RLHI_DPO_MAX_LOSSES)
            return rlhi_err(RLHI_EINVAL, "more than %d loss types in '%s'",
                            RLHI_DPO_MAX_LOSSES, types);
        c->kind[c->n] = (enum rlhi_dpo_loss_kind)k;
        c->weight[c->n] = 1.0;
        c->n++;
        s += len;
        if (*s == ',')
            s++;
    }
    if (weights && *weights) {
        const char *w = weights;

        while (*w) {
            char *end;
            double v = strtod(w, &end);

            if (end == w || (*end && *end != ',') || !isfinite(v))
                return rlhi_err(RLHI_EINVAL, "cannot read loss weight in "
                                "'%s'", weights);
            if (nw < c->n)
                c->weight[nw] = v;
            nw++;
            w = *end ? end + 1 : end;
        }
        if (nw != c->n)
            return rlhi_err(RLHI_EINVAL, "%d loss weights for %d loss types "
                            "('%s' for '%s')", nw, c->n, weights,
                            types && *types ? types : "sigmoid");
    }
    return 0;
}

/* One per-pair term and its derivative d/dh (h as the term sees it). */
static double term(enum rlhi_dpo_loss_kind k, double h, double b, double ls,
                   double *dh)
{
    double x = b * h;

    switch (k) {
    case RLHI_DPO_SIGMOID:
    case RLHI_DPO_SIGMOID_NORM:
        /* d/dx [-logsig(x)] = -sig(-x); d/dx [-logsig(-x)] = sig(x) */
        *dh = b * (-(1 - ls) * sigm(-x) + ls * sigm(x));
        return -logsig(x) * (1 - ls) - logsig(-x) * ls;
    case RLHI_DPO_ROBUST:
        *dh = b * (-(1 - ls) * sigm(-x) - ls * sigm(x)) / (1 - 2 * ls);
        return ((1 - ls) * -logsig(x) + ls * logsig(-x)) / (1 - 2 * ls);
    case RLHI_DPO_HINGE:
        /* relu's derivative at the kink taken as 0, as torch does */
        *dh = 1 - x > 0 ? -b : 0.0;
        return 1 - x > 0 ? 1 - x : 0.0;
    case RLHI_DPO_IPO: {
        double d = h - 1 / (2 * b);

        *dh = 2 * d;
        return d * d;
    }
    default:
        *dh = 0;
        return 0;
    }
}

double rlhi_dpo_loss(const struct rlhi_dpo_loss_cfg *c,
                     const struct rlhi_dpo_logps *p, int n, double *dpc,
                     double *dpr)
{
    double loss = 0, ntok = 0;
    int i, k;

    if (dpc)
        memset(dpc, 0, (size_t)n * sizeof *dpc);
    if (dpr)
        memset(dpr, 0, (size_t)n * sizeof *dpr);
    if (n <= 0)
        return 0;
    for (i = 0; i < n; i++)
        ntok += p[i].nc;
    for (k = 0; k < c->n; k++) {
        enum rlhi_dpo_loss_kind kind = c->kind[k];
        double w = c->weight[k], sum = 0;

        for (i = 0; i < n; i++) {
            const struct rlhi_dpo_logps *q = &p[i];
            double nc = q->nc > 0 ? q->nc : 1, nr = q->nr > 0 ? q->nr : 1;
            double h, dh, gc, gr;

            if (kind == RLHI_DPO_SFT) {
                sum += -q->pc * n / ntok;
                if (dpc)
                    dpc[i] += w * -1.0 / ntok;
                continue;
            }
            if (kind == RLHI_DPO_IPO || kind == RLHI_DPO_SIGMOID_NORM) {
                h = (q->pc - q->rc) / nc - (q->pr - q->rr) / nr;
                gc = 1 / nc;
                gr = -1 / nr;
            } else {
                h = (q->pc - q->rc) - (q->pr - q->rr);
                gc = 1;
                gr = -1;
            }
            sum += term(kind, h, c->beta, c->label_smoothing, &dh);
            if (dpc)
                dpc[i] += w * dh * gc / n;
            if (dpr)
                dpr[i] += w * dh * gr / n;
        }
        loss += w * sum / n;
    }
    return loss;
}
