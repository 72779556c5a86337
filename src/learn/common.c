/* Pieces the SFT, DPO and reward trainers and the training benchmarks
 * share: the epoch order, the step schedule, metrics lines, reading a
 * JSONL file record by record, and running the PyTorch comparison. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "learn/learn_internal.h"
#include "rlhi/train.h"

/* ---- the training loop ---------------------------------------------- */

void rlhi__epoch_order(int *perm, int n, uint64_t seed, int64_t epoch,
                       struct rlhi_rng *rng)
{
    rlhi_rng_seed(rng, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(epoch + 1)));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rlhi_rng_below(rng, (uint64_t)i + 1), x = perm[i];

        perm[i] = perm[j];
        perm[j] = x;
    }
}

int64_t rlhi__schedule(int64_t rows, int batch, int accum,
                       int64_t max_steps, double epochs, double warmup_ratio,
                       int64_t *total, int64_t *warmup)
{
    int64_t micro = (rows + batch - 1) / batch;
    int64_t per_epoch = (micro + accum - 1) / accum;

    *total = max_steps > 0 ? max_steps
                           : (int64_t)ceil(epochs * (double)per_epoch);
    *warmup = rlhi_warmup_steps(warmup_ratio, *total);
    return per_epoch;
}

int rlhi__check_grad_norm(double gnorm, int64_t step)
{
    if (isfinite(gnorm))
        return 0;
    return rlhi_err(RLHI_ENUMERIC, "step %lld: gradient norm is not finite "
                    "(%g); stopping without saving", (long long)step + 1,
                    gnorm);
}

bool rlhi__is_log_step(int64_t step, int every, int64_t total)
{
    return every > 0 && (step % every == 0 || step == total);
}

bool rlhi__is_save_step(int64_t step, int every, int64_t total)
{
    return every > 0 && step % every == 0 && step < total;
}

int rlhi__checkpoint_dir(const char *output_dir, int64_t step, char **dir)
{
    char name[64];

    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    *dir = rlhi_path_join(output_dir, name);
    if (!*dir)
        return rlhi_err(RLHI_ENOMEM, "cannot save a checkpoint");
    return 0;
}

int rlhi__append_line(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "a");
    va_list ap;
    int ok;

    if (!f)
        return rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    ok = !ferror(f);
    if (fclose(f) || !ok)
        return rlhi_err_errno(RLHI_EIO, "cannot write '%s'", path);
    return 0;
}

/* ---- data ----------------------------------------------------------- */

int rlhi__next_record(struct rlhi_jsonl *rd, json_t **root,
                      int64_t *skipped)
{
    for (;;) {
        int r = rlhi_jsonl_next(rd, root);

        if (r != RLHI_EFORMAT)
            return r;
        rlhi_warn("%s", rlhi_errmsg());
        (*skipped)++;
    }
}

void rlhi__skip_record(const char *path, const struct rlhi_jsonl *rd,
                       int64_t *skipped)
{
    rlhi_warn("%s:%llu: %s", path,
              (unsigned long long)rlhi_jsonl_line_no(rd), rlhi_errmsg());
    (*skipped)++;
}

/* ---- benchmarks ----------------------------------------------------- */

/* DESIGN.md section 6's Llama shape (as cmd_bench's generate benchmark). */
const struct rlhi_model_config rlhi__bench_cfg = {
    .dim = 768, .hidden_dim = 2048, .n_layers = 12, .n_heads = 12,
    .n_kv_heads = 4, .head_dim = 64, .vocab_size = 32000,
    .max_seq_len = 1024, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
    .rope = RLHI_ROPE_HALF, .tied_embeddings = false, .qkv_bias = false,
    .bos_id = 1, .eos_id = 2,
};

void rlhi__bench_weights(struct rlhi_model *m, struct rlhi_rng *rng)
{
    const struct rlhi_model_config *c = &m->cfg;

    rlhi_rng_seed(rng, 1234);
    for (size_t i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.02 * rlhi_rng_normal(rng));
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < c->dim; i++)
            m->w.layers[l].attn_norm[i] = m->w.layers[l].ffn_norm[i] = 1;
    for (int i = 0; i < c->dim; i++)
        m->w.final_norm[i] = 1;
}

double rlhi__cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* rlhi__bench_cfg in PyTorch, between the caller's head (which sets B, T
 * and the thread count) and tail (the step and its timing): the
 * parameters P and fwd(P, tok) -> logits (B, T, V). */
static const char torch_llama[] =
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
    "def fwd(P, tok):\n"
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
    "    return rms(x, P[-2]) @ P[-1].T\n";

static bool write_all(int fd, const char *s)
{
    size_t n = strlen(s);

    return write(fd, s, n) == (ssize_t)n;
}

int rlhi__run_torch(const char *tag, const char *head, const char *tail,
                    const char *args,
                    void (*on_line)(const char *line, void *ctx), void *ctx)
{
    char path[64], cmd[512], line[256];
    FILE *p;
    int fd;

    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1"))
        return -1;
    snprintf(path, sizeof path, "/tmp/rlhi-bench-%s-XXXXXX", tag);
    fd = mkstemp(path);
    if (fd < 0)
        return -1;
    if (!write_all(fd, head) || !write_all(fd, torch_llama) ||
        !write_all(fd, tail)) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s 2>/dev/null", path,
             args);
    p = popen(cmd, "r");
    if (p) {
        while (fgets(line, sizeof line, p))
            on_line(line, ctx);
        pclose(p);
    }
    unlink(path);
    return 0;
}
