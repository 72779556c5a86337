/* The training-step benchmark behind `rlhi bench train`: our step against
 * the same step in PyTorch (fp32) on the 124.7M Llama shape. Library code:
 * it measures and returns figures; the command prints them. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rlhi/train.h"

/* DESIGN.md section 6's Llama shape (as cmd_bench's generate benchmark). */
static const struct rlhi_model_config bench_cfg = {
    .dim = 768, .hidden_dim = 2048, .n_layers = 12, .n_heads = 12,
    .n_kv_heads = 4, .head_dim = 64, .vocab_size = 32000,
    .max_seq_len = 1024, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
    .rope = RLHI_ROPE_HALF, .tied_embeddings = false, .qkv_bias = false,
    .bos_id = 1, .eos_id = 2,
};

/* The same model and step in plain PyTorch; prints "ms <mean>". */
static const char torch_script[] =
    "import sys, time, math, torch\n"
    "import torch.nn.functional as F\n"
    "B, T, steps, thr = (int(a) for a in sys.argv[1:5])\n"
    "torch.set_num_threads(thr); torch.manual_seed(0)\n"
    "C, L, NH, KVH, HS, FF, V = 768, 12, 12, 4, 64, 2048, 32000\n"
    "def lin(o, i): return torch.nn.Parameter(torch.randn(o, i) * 0.02)\n"
    "P = [lin(V, C)]\n"
    "for l in range(L):\n"
    "    P += [torch.nn.Parameter(torch.ones(C)), lin(NH*HS, C),\n"
    "          lin(KVH*HS, C), lin(KVH*HS, C), lin(C, NH*HS),\n"
    "          torch.nn.Parameter(torch.ones(C)), lin(FF, C), lin(FF, C),\n"
    "          lin(C, FF)]\n"
    "P += [torch.nn.Parameter(torch.ones(C)), lin(V, C)]\n"
    "half = HS // 2\n"
    "fr = 1.0 / 10000.0 ** (torch.arange(half).float() * 2 / HS)\n"
    "ang = torch.arange(T).float()[:, None] * fr\n"
    "cs, sn = torch.cos(ang), torch.sin(ang)\n"
    "mask = torch.ones(T, T).tril().bool()\n"
    "def rms(x, w):\n"
    "    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)"
    " + 1e-5))\n"
    "def rope(x):\n"
    "    a, b = x[..., :half], x[..., half:]\n"
    "    return torch.cat((a * cs - b * sn, a * sn + b * cs), -1)\n"
    "def fwd(tok):\n"
    "    x = P[0][tok]\n"
    "    for l in range(L):\n"
    "        an, wq, wk, wv, wo, fn, wg, wu, wd = P[1+9*l:10+9*l]\n"
    "        h = rms(x, an)\n"
    "        q = (h @ wq.T).view(B, T, NH, HS).transpose(1, 2)\n"
    "        k = (h @ wk.T).view(B, T, KVH, HS).transpose(1, 2)\n"
    "        v = (h @ wv.T).view(B, T, KVH, HS).transpose(1, 2)\n"
    "        q, k = rope(q), rope(k)\n"
    "        k = k.repeat_interleave(NH // KVH, 1)\n"
    "        v = v.repeat_interleave(NH // KVH, 1)\n"
    "        a = (q @ k.transpose(-1, -2)) / math.sqrt(HS)\n"
    "        a = a.masked_fill(~mask, float('-inf')).softmax(-1)\n"
    "        x = x + (a @ v).transpose(1, 2).reshape(B, T, C) @ wo.T\n"
    "        h = rms(x, fn)\n"
    "        x = x + (F.silu(h @ wg.T) * (h @ wu.T)) @ wd.T\n"
    "    return rms(x, P[-2]) @ P[-1].T\n"
    "opt = torch.optim.AdamW(P, lr=1e-4, weight_decay=0.1)\n"
    "tok = torch.randint(0, V, (B, T + 1))\n"
    "def step():\n"
    "    opt.zero_grad()\n"
    "    lo = F.cross_entropy(fwd(tok[:, :-1]).reshape(-1, V),\n"
    "                         tok[:, 1:].reshape(-1))\n"
    "    lo.backward()\n"
    "    torch.nn.utils.clip_grad_norm_(P, 1.0)\n"
    "    opt.step()\n"
    "step()\n"
    "t0, c0 = time.perf_counter(), time.process_time()\n"
    "for _ in range(steps): step()\n"
    "print('ms', (time.perf_counter() - t0) * 1000 / steps,\n"
    "      (time.process_time() - c0) * 1000 / steps)\n";

/* Process CPU seconds (all threads). */
static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the PyTorch step; returns its ms (and CPU ms in *cpu) or -1 when
 * PyTorch is missing. */
static double run_torch(int B, int T, int steps, int threads, double *cpu)
{
    char path[] = "/tmp/rlhi-bench-train-XXXXXX";
    char cmd[512], line[256];
    double ms = -1;
    FILE *p;
    int fd;

    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1"))
        return -1;
    fd = mkstemp(path);
    if (fd < 0)
        return -1;
    if (write(fd, torch_script, sizeof torch_script - 1) !=
        (ssize_t)(sizeof torch_script - 1)) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %d %d %d %d 2>/dev/null",
             path, B, T, steps, threads);
    p = popen(cmd, "r");
    if (p) {
        while (fgets(line, sizeof line, p))
            if (!strncmp(line, "ms ", 3) &&
                sscanf(line + 3, "%lf %lf", &ms, cpu) != 2)
                ms = -1;
        pclose(p);
    }
    unlink(path);
    return ms;
}

int rlhi_bench_train(int B, int T, int steps, bool torch,
                     struct rlhi_bench_train_result *r)
{
    const struct rlhi_model_config *c = &bench_cfg;
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
    rlhi_rng_seed(&rng, 1234);
    for (i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.02 * rlhi_rng_normal(&rng));
    for (s = 0; s < c->n_layers; s++)
        for (i = 0; i < (size_t)c->dim; i++)
            m->w.layers[s].attn_norm[i] = m->w.layers[s].ffn_norm[i] = 1;
    for (i = 0; i < (size_t)c->dim; i++)
        m->w.final_norm[i] = 1;
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
            c0 = cpu_now();
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
    r->cpu_ms = (cpu_now() - c0) * 1e3 / steps;
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
