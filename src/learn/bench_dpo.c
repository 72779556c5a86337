/* The DPO-step benchmark behind `rlhi bench dpo`: one step (reference
 * forward, policy forward + backward on chosen and rejected, clipping,
 * AdamW) on the 124.7M Llama shape, with and without prefix sharing, and
 * the same step in PyTorch (fp32, prompt run twice, reference in memory).
 * Library code: it measures and returns figures; the command prints
 * them. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "rlhi/dpo.h"

/* The same DPO step in plain PyTorch, TRL's way: chosen and rejected
 * concatenated into 2P rows of T tokens (the prompt twice), reference
 * model in memory under no_grad. Prints "ms <mean>" and "cpu <mean>".
 * The model between head and tail comes from rlhi__run_torch(). */
static const char torch_head[] =
    "import sys, time, math, copy, torch\n"
    "import torch.nn.functional as F\n"
    "P_, T, steps, thr = (int(a) for a in sys.argv[1:5])\n"
    "B = 2 * P_; NP = T // 2\n"
    "torch.set_num_threads(thr); torch.manual_seed(0)\n";
static const char torch_tail[] =
    "R = [p.detach().clone() for p in P]\n"
    "tok = torch.randint(0, V, (B, T))\n"
    "tok[P_:, :NP] = tok[:P_, :NP]\n"
    "m = torch.zeros(B, T - 1); m[:, NP - 1:] = 1\n"
    "def logps(P, tok):\n"
    "    lp = fwd(P, tok)[:, :-1].log_softmax(-1)\n"
    "    g = lp.gather(-1, tok[:, 1:, None])[..., 0]\n"
    "    s = (g * m).sum(-1)\n"
    "    return s[:P_], s[P_:]\n"
    "opt = torch.optim.AdamW(P, lr=1e-6, weight_decay=0.0)\n"
    "def step():\n"
    "    opt.zero_grad()\n"
    "    with torch.no_grad(): rc, rr = logps(R, tok)\n"
    "    pc, pr = logps(P, tok)\n"
    "    lo = -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()\n"
    "    lo.backward()\n"
    "    torch.nn.utils.clip_grad_norm_(P, 1.0)\n"
    "    opt.step()\n"
    "step()\n"
    "t0 = time.perf_counter(); c0 = time.process_time()\n"
    "for _ in range(steps): step()\n"
    "print('ms', (time.perf_counter() - t0) * 1000 / steps)\n"
    "print('cpu', (time.process_time() - c0) * 1000 / steps)\n";

struct torch_out {
    double ms, cpu_ms;
};

static void torch_line(const char *line, void *ctx)
{
    struct torch_out *o = ctx;

    if (!strncmp(line, "ms ", 3))
        o->ms = atof(line + 3);
    else if (!strncmp(line, "cpu ", 4))
        o->cpu_ms = atof(line + 4);
}

/* The PyTorch step's ms (and CPU ms in *cpu_ms, left alone when it does
 * not print one), or -1 when PyTorch is missing or fails. */
static double run_torch(int pairs, int T, int steps, int threads,
                        double *cpu_ms)
{
    struct torch_out o = {-1, *cpu_ms};
    char args[128];

    snprintf(args, sizeof args, "%d %d %d %d", pairs, T, steps, threads);
    if (rlhi__run_torch("dpo", torch_head, torch_tail, args, torch_line, &o))
        return -1;
    *cpu_ms = o.cpu_ms;
    return o.ms;
}

/* Mean time of `steps` DPO steps (after one warm-up) in one layout. */
static int time_steps(struct rlhi_model *m, struct rlhi_model *ref,
                      const struct rlhi_dpo_data *d, bool share, int steps,
                      double *ms, double *cpu_ms, double *ms_ref,
                      int64_t *ntok)
{
    struct rlhi_train *t = NULL;
    struct rlhi_adamw opt = {0};
    struct rlhi_dpo_loss_cfg lc;
    struct rlhi_dpo_metrics mt;
    int idx[64], B, T, err;
    double rc[64], rr[64], tot = 0, tref = 0, tcpu = 0;

    for (int i = 0; i < d->n; i++)
        idx[i] = i;
    rlhi_dpo_loss_parse(&lc, "sigmoid", NULL);
    rlhi_dpo_batch_shape(d, d->n, share, &B, &T);
    err = rlhi_train_new(&t, m, B, T);
    if (!err)
        err = rlhi_adamw_init(&opt, m->n_params, &m->cfg);
    for (int s = -1; s < steps && !err; s++) {
        double t0 = rlhi_time_now(), c0 = rlhi__cpu_now(), t1;

        err = rlhi_dpo_logps(t, ref, d, idx, d->n, share, rc, rr);
        t1 = rlhi_time_now();
        rlhi_train_zero_grad(t);
        if (!err)
            err = rlhi_dpo_micro_step(t, d, idx, d->n, rc, rr, &lc, 1.0,
                                      share, &mt);
        if (err)
            break;
        rlhi_adamw_step(&opt, m->params, t->grad.params, 1e-6f, 0.0f,
                        rlhi_clip_coef(rlhi_grad_norm(t->grad.params,
                                                      m->n_params), 1.0));
        if (s >= 0) {
            tot += rlhi_time_now() - t0;
            tcpu += rlhi__cpu_now() - c0;
            tref += t1 - t0;
        }
        *ntok = mt.tokens;
    }
    *ms = tot * 1e3 / steps;
    *cpu_ms = tcpu * 1e3 / steps;
    *ms_ref = tref * 1e3 / steps;
    rlhi_adamw_release(&opt);
    rlhi_train_free(t);
    return err;
}

int rlhi_bench_dpo(int pairs, int T, int steps, bool torch,
                   struct rlhi_bench_dpo_result *r)
{
    const struct rlhi_model_config *c = &rlhi__bench_cfg;
    struct rlhi_model *m = NULL, *ref = NULL;
    struct rlhi_dpo_data d = {0};
    struct rlhi_rng rng;
    int32_t *buf = NULL;
    int np = T / 2, na = T - T / 2, err;
    double ms_ref2;

    memset(r, 0, sizeof *r);
    r->torch_ms = r->torch_cpu_ms = -1;
    if (steps < 1)
        steps = 1;
    if (pairs < 1 || pairs > 64 || T < 4 || 2 * T > c->max_seq_len)
        return rlhi_err(RLHI_EINVAL, "bench dpo: %d pairs of %d tokens "
                        "(need 1..64 pairs, 4..%d tokens)", pairs, T,
                        c->max_seq_len / 2);
    err = rlhi_model_new(&m, c);
    if (!err)
        err = rlhi_model_new(&ref, c);
    buf = rlhi_malloc((size_t)T * 2 * sizeof *buf);
    if (!err && !buf)
        err = rlhi_err(RLHI_ENOMEM, "cannot allocate benchmark tokens");
    if (err)
        goto done;

    /* Random weights N(0, 0.02), norms 1; reference = policy. */
    rlhi__bench_weights(m, &rng);
    memcpy(ref->params, m->params, m->n_params * sizeof(float));

    /* pairs of [prompt T/2 | answer T/2] */
    for (int p = 0; p < pairs && !err; p++) {
        for (int i = 0; i < np + 2 * na; i++)
            buf[i] = (int32_t)rlhi_rng_below(&rng, (uint64_t)c->vocab_size);
        err = rlhi_dpo_data_add(&d, buf, np, buf + np, na, buf + np + na, na,
                                0, T);
        if (err > 0)
            err = 0;
    }
    if (err)
        goto done;

#ifdef RLHI_TRAIN_HAS_PREFIX
    err = time_steps(m, ref, &d, true, steps, &r->ms_step, &r->cpu_ms_step,
                     &r->ms_ref, &r->tokens_share);
#else
    r->ms_step = -1;
#endif
    if (!err)
        err = time_steps(m, ref, &d, false, steps, &r->ms_step_noshare,
                         &r->cpu_ms_noshare, &ms_ref2, &r->tokens_noshare);
    if (err)
        goto done;
    if (r->ms_step < 0)
        r->ms_ref = ms_ref2;
    r->peak_rss_mib = (double)rlhi_peak_rss() / (1 << 20);
    r->threads = omp_get_max_threads();
    if (torch)
        r->torch_ms = run_torch(pairs, T, steps, r->threads,
                                &r->torch_cpu_ms);
done:
    rlhi_dpo_data_release(&d);
    rlhi_free(buf);
    rlhi_model_free(m);
    rlhi_model_free(ref);
    return err;
}
