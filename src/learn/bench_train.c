/* The training-step benchmark behind `rlhi bench train`: our step against
 * the same step in PyTorch (fp32) on the 124.7M Llama shape. Library code:
 * it measures and returns figures; the command prints them. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "rlhi/train.h"

/* The same step in plain PyTorch; prints "ms <mean> <cpu mean>". The
 * model between head and tail comes from rlhi__run_torch(). */
static const char torch_head[] =
    "import sys, time, math, torch\n"
    "import torch.nn.functional as F\n"
    "B, T, steps, thr = (int(a) for a in sys.argv[1:5])\n"
    "torch.set_num_threads(thr); torch.manual_seed(0)\n";
static const char torch_tail[] =
    "opt = torch.optim.AdamW(P, lr=1e-4, weight_decay=0.1)\n"
    "tok = torch.randint(0, V, (B, T + 1))\n"
    "def step():\n"
    "    opt.zero_grad()\n"
    "    lo = F.cross_entropy(fwd(P, tok[:, :-1]).reshape(-1, V),\n"
    "                         tok[:, 1:].reshape(-1))\n"
    "    lo.backward()\n"
    "    torch.nn.utils.clip_grad_norm_(P, 1.0)\n"
    "    opt.step()\n"
    "step()\n"
    "t0, c0 = time.perf_counter(), time.process_time()\n"
    "for _ in range(steps): step()\n"
    "print('ms', (time.perf_counter() - t0) * 1000 / steps,\n"
    "      (time.process_time() - c0) * 1000 / steps)\n";

struct torch_out {
    double ms, *cpu;
};

static void torch_line(const char *line, void *ctx)
{
    struct torch_out *o = ctx;

    if (!strncmp(line, "ms ", 3) &&
        sscanf(line + 3, "%lf %lf", &o->ms, o->cpu) != 2)
        o->ms = -1;
}

/* Runs the PyTorch step; returns its ms (and CPU ms in *cpu) or -1 when
 * PyTorch is missing. */
static double run_torch(int B, int T, int steps, int threads, double *cpu)
{
    struct torch_out o = {-1, cpu};
    char args[128];

    snprintf(args, sizeof args, "%d %d %d %d", B, T, steps, threads);
    if (rlhi__run_torch("train", torch_head, torch_tail, args, torch_line,
                        &o))
        return -1;
    return o.ms;
}

int rlhi_bench_train(int B, int T, int steps, bool torch,
                     struct rlhi_bench_train_result *r)
{
    const struct rlhi_model_config *c = &rlhi__bench_cfg;
    struct rlhi_model *m = NULL;
    struct rlhi_train *t = NULL;
    struct rlhi_adamw opt = {0};
    struct rlhi_rng rng;
    int32_t *tok = NULL, *tgt = NULL;
    double flops, t_f = 0, t_b = 0, t_o = 0, c0 = 0;
    size_t i, N = (size_t)B * T, matrix_params;
    int s, err;

    memset(r, 0, sizeof *r);
    r->torch_ms = -1;
    if (steps < 1)
        steps = 1;
    err = rlhi_model_new(&m, c);
    if (!err)
        err = rlhi_train_new(&t, m, B, T);
    if (!err)
        err = rlhi_adamw_init(&opt, m->n_params, c);
    tok = rlhi_malloc(N * sizeof *tok);
    tgt = rlhi_malloc(N * sizeof *tgt);
    if (!err && (!tok || !tgt))
        err = rlhi_err(RLHI_ENOMEM, "cannot allocate benchmark tokens");
    if (err)
        goto done;

    /* Random weights N(0, 0.02), norms 1; random tokens. */
    rlhi__bench_weights(m, &rng);
    for (i = 0; i < N; i++) {
        tok[i] = (int32_t)rlhi_rng_below(&rng, c->vocab_size);
        tgt[i] = (int32_t)rlhi_rng_below(&rng, c->vocab_size);
    }

    for (s = -1; s < steps; s++) {
        struct rlhi_batch b = {B, T, tok, NULL, NULL};
        double t0 = rlhi_time_now(), t1, t2, t3, loss;

        rlhi_train_zero_grad(t);
        err = rlhi_train_forward(t, &b);
        if (!err)
            err = rlhi_train_ce(t, tgt, NULL, true, &loss, NULL);
        t1 = rlhi_time_now();
        if (!err)
            err = rlhi_train_backward(t);
        if (err)
            goto done;
        t2 = rlhi_time_now();
        rlhi_adamw_step(&opt, m->params, t->grad.params, 1e-4f, 0.1f,
                        rlhi_clip_coef(rlhi_grad_norm(t->grad.params,
                                                      m->n_params), 1.0));
        t3 = rlhi_time_now();
        if (s < 0)
            c0 = rlhi__cpu_now();
        if (s >= 0) {
            t_f += t1 - t0;
            t_b += t2 - t1;
            t_o += t3 - t2;
        }
    }

    /* FLOPs: 6 per matrix weight per token (forward 2, backward 4), plus
     * causal attention (q k^T and p v, half the T x T square, x3). */
    matrix_params = m->n_params - (size_t)c->vocab_size * c->dim -
                    (size_t)(2 * c->n_layers + 1) * c->dim;
    flops = 6.0 * (double)N * (double)matrix_params +
            6.0 * B * c->n_layers * c->n_heads * c->head_dim * (double)T * T;
    r->n_params = (int64_t)m->n_params;
    r->ms_forward = t_f * 1e3 / steps;
    r->ms_backward = t_b * 1e3 / steps;
    r->ms_optim = t_o * 1e3 / steps;
    r->ms_per_step = r->ms_forward + r->ms_backward + r->ms_optim;
    r->cpu_ms = (rlhi__cpu_now() - c0) * 1e3 / steps;
    r->tokens_per_s = (double)N / (r->ms_per_step / 1e3);
    r->gflops = flops / (r->ms_per_step / 1e3) / 1e9;
    r->peak_rss_mib = (double)rlhi_peak_rss() / (1 << 20);
    r->threads = omp_get_max_threads();
    if (torch)
        r->torch_ms = run_torch(B, T, steps, r->threads, &r->torch_cpu_ms);

done:
    rlhi_free(tok);
    rlhi_free(tgt);
    rlhi_adamw_release(&opt);
    rlhi_train_free(t);
    rlhi_model_free(m);
    return err;
}
