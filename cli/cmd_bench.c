/* rlhi bench: benchmarks that print figures (never pass/fail tests). */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/dpo.h"
#include "rlhi/model.h"
#include "rlhi/train.h"

/* The 124.7M-parameter Llama shape that DESIGN.md's reference figures
 * (llama.cpp, PyTorch) were measured on. */
static const struct rlhi_model_config bench_cfg = {
    .dim = 768, .hidden_dim = 2048, .n_layers = 12, .n_heads = 12,
    .n_kv_heads = 4, .head_dim = 64, .vocab_size = 32000,
    .max_seq_len = 1024, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
    .rope = RLHI_ROPE_HALF, .tied_embeddings = false, .qkv_bias = false,
    .bos_id = 1, .eos_id = 2,
};

/* Random weights: N(0, 0.02) for matrices, 1 for norms. */
static void randomize(struct rlhi_model *m, uint64_t seed)
{
    struct rlhi_rng rng;
    size_t i;
    int l;

    rlhi_rng_seed(&rng, seed);
    for (i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.02 * rlhi_rng_normal(&rng));
    for (l = 0; l < m->cfg.n_layers; l++)
        for (i = 0; i < (size_t)m->cfg.dim; i++) {
            m->w.layers[l].attn_norm[i] = 1.0f;
            m->w.layers[l].ffn_norm[i] = 1.0f;
        }
    for (i = 0; i < (size_t)m->cfg.dim; i++)
        m->w.final_norm[i] = 1.0f;
}

static int bench_generate(int argc, char **argv)
{
    int prompt = 256, decode = 128, batch = 8, r;
    struct rlhi_model *m = NULL;
    struct rlhi_infer *s = NULL, **many = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    double t0, t_pp, t_dec, t_batch;
    int i, j, result = EXIT_RUNTIME;
    const struct cli_opt opts[] = {
        {"prompt_tokens", CLI_INT, &prompt, "tokens in the prompt (256)"},
        {"decode_tokens", CLI_INT, &decode, "tokens to decode (128)"},
        {"batch", CLI_INT, &batch, "sequences decoded together (8)"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi bench generate [options]\n\n"
                  "Prompt-processing and decode speed of the 124.7M Llama "
                  "shape\n(dim 768, 12 layers, 12 heads, 4 kv heads, ffn "
                  "2048, vocab 32000),\nrandom fp32 weights.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (prompt < 1 || decode < 1 || batch < 1 ||
        prompt + decode > bench_cfg.max_seq_len) {
        fprintf(stderr, "rlhi: error: token counts must be positive and "
                        "fit in %d\n", bench_cfg.max_seq_len);
        return EXIT_USAGE;
    }
    r = rlhi_model_new(&m, &bench_cfg);
    if (r)
        return cli_fail(r, "cannot make the benchmark model");
    randomize(m, 1);
    toks = rlhi_malloc(sizeof(int32_t) * (size_t)(prompt + batch));
    logits = rlhi_malloc(sizeof(float) * (size_t)bench_cfg.vocab_size *
                         (size_t)batch);
    many = rlhi_calloc((size_t)batch, sizeof *many);
    if (!toks || !logits || !many)
        goto out;
    for (i = 0; i < prompt + batch; i++)
        toks[i] = (i * 7919) % bench_cfg.vocab_size;
    r = rlhi_infer_new(&s, m, prompt + decode);
    if (r) {
        result = cli_fail(r, "bench generate");
        goto out;
    }

    printf("model: %.1fM parameters, fp32, %d threads\n",
           (double)m->n_params / 1e6, omp_get_max_threads());

    /* Prompt processing: the whole prompt in one call. */
    rlhi_infer_forward(s, toks, prompt, logits, false); /* warm-up */
    rlhi_infer_truncate(s, 0);
    t0 = rlhi_time_now();
    r = rlhi_infer_forward(s, toks, prompt, logits, false);
    t_pp = rlhi_time_now() - t0;

    /* Decode: one token at a time after the prompt. */
    t0 = rlhi_time_now();
    for (i = 0; i < decode && !r; i++)
        r = rlhi_infer_forward(s, toks + (i % prompt), 1, logits, false);
    t_dec = rlhi_time_now() - t0;

    /* Batched decode: `batch` sequences sharing each pass over the weights
     * (N-candidate sampling after a shared prompt). */
    for (i = 0; i < batch && !r; i++) {
        r = rlhi_infer_new(&many[i], m, prompt + decode);
        if (!r)
            r = rlhi_infer_copy(many[i], s);
        if (!r)
            rlhi_infer_truncate(many[i], prompt);
    }
    t0 = rlhi_time_now();
    for (j = 0; j < decode && !r; j++)
        r = rlhi_infer_forward_batch(many, batch, toks + j % prompt, logits);
    t_batch = rlhi_time_now() - t0;
    if (r) {
        result = cli_fail(r, "bench generate");
        goto out;
    }

    printf("prompt processing: %d tokens in %.3f s = %.1f tok/s\n", prompt,
           t_pp, prompt / t_pp);
    printf("decode (1 sequence): %d tokens in %.3f s = %.1f tok/s "
           "(%.1f ms/token)\n", decode, t_dec, decode / t_dec,
           1e3 * t_dec / decode);
    printf("decode (%d sequences batched): %d steps in %.3f s = %.1f tok/s "
           "total\n", batch, decode, t_batch, (double)batch * decode /
           t_batch);
    printf("weights %.0f MiB; decode reads them at %.1f GB/s\n",
           (double)m->n_params * 4 / (1 << 20),
           (double)m->n_params * 4 * decode / t_dec / 1e9);
    printf("peak memory: %.0f MiB\n", (double)rlhi_peak_rss() / (1 << 20));
    printf("reference on this machine (DESIGN.md): llama.cpp F32 ~950 tok/s "
           "prompt, 70 tok/s decode (BF16 104, Q8_0 300)\n");
    result = EXIT_OK;
out:
    if (many)
        for (i = 0; i < batch; i++)
            rlhi_infer_free(many[i]);
    rlhi_free(many);
    rlhi_infer_free(s);
    rlhi_free(toks);
    rlhi_free(logits);
    rlhi_model_free(m);
    return result;
}

static int bench_train(int argc, char **argv)
{
    struct rlhi_bench_train_result res;
    int B = 4, T = 64, steps = 3, r;
    bool no_torch = false;
    const struct cli_opt opts[] = {
        {"batch", CLI_INT, &B, "rows per step (4)"},
        {"seq_len", CLI_INT, &T, "tokens per row (64)"},
        {"steps", CLI_INT, &steps, "timed steps after one warm-up (3)"},
        {"no_torch", CLI_BOOL, &no_torch, "skip the PyTorch comparison"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi bench train [options]\n\n"
                  "One training step (forward, loss, backward, AdamW) of the "
                  "124.7M Llama\nshape with random weights, and the same "
                  "step in PyTorch fp32 when\n/usr/bin/python3 has torch.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (B < 1 || T < 1 || steps < 1) {
        fprintf(stderr, "rlhi: error: --batch, --seq_len and --steps must "
                        "be positive\n");
        return EXIT_USAGE;
    }
    r = rlhi_bench_train(B, T, steps, !no_torch, &res);
    if (r)
        return cli_fail(r, "bench train");
    printf("model: %.1fM parameters, fp32, %d threads, batch %d x %d\n",
           (double)res.n_params / 1e6, res.threads, B, T);
    printf("train step: %.1f ms (forward+loss %.1f, backward %.1f, AdamW "
           "%.1f), cpu %.1f ms\n", res.ms_per_step, res.ms_forward,
           res.ms_backward, res.ms_optim, res.cpu_ms);
    printf("throughput: %.1f tokens/s, %.1f GFLOP/s\n", res.tokens_per_s,
           res.gflops);
    printf("peak memory: %.0f MiB\n", res.peak_rss_mib);
    if (res.torch_ms > 0)
        printf("PyTorch fp32, same step: %.1f ms (cpu %.1f ms); rlhi is "
               "%.2fx its speed\n", res.torch_ms, res.torch_cpu_ms,
               res.torch_ms / res.ms_per_step);
    else
        printf("PyTorch: not run (no /usr/bin/python3 with torch; "
               "scripts/deps.sh --torch installs it)\n");
    printf("reference on the design machine (DESIGN.md): llm.c 5.65 s, "
           "PyTorch fp32 1.50 s, bf16 autocast 0.87 s (GPT-2 124M)\n");
    return EXIT_OK;
}

static int bench_dpo(int argc, char **argv)
{
    struct rlhi_bench_dpo_result res;
    int pairs = 2, T = 256, steps = 2, r;
    bool no_torch = false;
    const struct cli_opt opts[] = {
        {"pairs", CLI_INT, &pairs, "preference pairs per step (2)"},
        {"seq_len", CLI_INT, &T, "tokens per pair: prompt + answer (256)"},
        {"steps", CLI_INT, &steps, "timed steps after one warm-up (2)"},
        {"no_torch", CLI_BOOL, &no_torch, "skip the PyTorch comparison"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi bench dpo [options]\n\n"
                  "One DPO step of the 124.7M Llama shape (reference "
                  "forward, policy\nforward + backward on chosen and "
                  "rejected, AdamW), with the prompt\nshared and with two "
                  "rows per pair, and the same step in PyTorch fp32.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (pairs < 1 || T < 4 || steps < 1) {
        fprintf(stderr, "rlhi: error: --pairs and --steps must be positive "
                        "and --seq_len at least 4\n");
        return EXIT_USAGE;
    }
    r = rlhi_bench_dpo(pairs, T, steps, !no_torch, &res);
    if (r)
        return cli_fail(r, "bench dpo");
    printf("DPO step, 124.7M shape, %d pairs x %d tokens, fp32, %d "
           "threads\n", pairs, T, res.threads);
    printf("shared prompt: %.1f ms (cpu %.1f ms), %lld tokens run; "
           "reference forward %.1f ms\n", res.ms_step, res.cpu_ms_step,
           (long long)res.tokens_share, res.ms_ref);
    printf("two rows per pair: %.1f ms (cpu %.1f ms), %lld tokens run\n",
           res.ms_step_noshare, res.cpu_ms_noshare,
           (long long)res.tokens_noshare);
    printf("prefix sharing saves %.0f%% of tokens and %.0f%% of time\n",
           100.0 * (1.0 - (double)res.tokens_share /
                              (double)res.tokens_noshare),
           100.0 * (1.0 - res.ms_step / res.ms_step_noshare));
    printf("peak memory: %.0f MiB\n", res.peak_rss_mib);
    if (res.torch_ms > 0)
        printf("PyTorch fp32 (prompt twice, reference in memory): %.1f ms "
               "(cpu %.1f ms); rlhi is %.2fx its speed\n", res.torch_ms,
               res.torch_cpu_ms, res.torch_ms / res.ms_step);
    else
        printf("PyTorch: not run (no /usr/bin/python3 with torch; "
               "scripts/deps.sh --torch installs it)\n");
    printf("reference on the design machine (DESIGN.md): PyTorch fp32 "
           "5.14 s, bf16 autocast 2.46 s\n");
    return EXIT_OK;
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("usage: rlhi bench <what> [options]\n\n"
               "  generate   prompt-processing and decode tokens/s\n"
               "  train      one training step of the 124.7M shape\n"
               "  dpo        one DPO step of the 124.7M shape\n"
               "  ingest     MB/s of rlhi ingest against a Python script\n"
               "  feedback   turns/minute of the builtin feedback detector\n"
               "  serve      rlhi serve requests/s and tokens/s at 1, 4, "
               "16 clients\n");
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "serve"))
        return cmd_bench_serve(argc - 1, argv + 1);
    if (!strcmp(argv[1], "generate"))
        return bench_generate(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ingest"))
        return bench_ingest(argc - 1, argv + 1);
    if (!strcmp(argv[1], "feedback"))
        return bench_feedback(argc - 1, argv + 1);
    if (!strcmp(argv[1], "dpo"))
        return bench_dpo(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train"))
        return bench_train(argc - 1, argv + 1);
    fprintf(stderr, "rlhi: error: unknown benchmark '%s'\n", argv[1]);
    return EXIT_USAGE;
}
