/* rlhi serve: the OpenAI-compatible HTTP server; and rlhi bench serve, its
 * bounded load test. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/serve.h"

int cmd_serve(int argc, char **argv)
{
    struct rlhi_serve_options o;
    struct rlhi_server *s = NULL;
    const char *host = "127.0.0.1";
    int port = 8080, max_batch = 16, max_tokens = 4096, max_prompt = 0, r;
    int max_body = 1 << 20, max_conn = 64, sig;
    double timeout = 600;
    sigset_t set;
    const struct cli_opt opts[] = {
        {"model", CLI_STR, &o.engine.model_path,
         "llama2.c checkpoint or Hugging Face directory (required)"},
        {"tokenizer", CLI_STR, &o.engine.tokenizer_path,
         "tokenizer (default: the model directory, or tokenizer.bin "
         "beside a .bin)"},
        {"chat_template", CLI_STR, &o.engine.chat_template,
         "llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, rlhi "
         "(default: detected, else rlhi)"},
        {"model_id", CLI_STR, &o.engine.model_id,
         "id reported by /v1/models (default: the model's file name)"},
        {"host", CLI_STR, &host, "address to bind (127.0.0.1)"},
        {"port", CLI_INT, &port, "port; 0 picks a free one (8080)"},
        {"api_key", CLI_STR, &o.api_key,
         "require 'Authorization: Bearer KEY'"},
        {"max_batch", CLI_INT, &max_batch,
         "sequences decoded together in one pass (16)"},
        {"max_tokens_limit", CLI_INT, &max_tokens,
         "largest max_tokens a request may ask (4096)"},
        {"max_prompt_tokens", CLI_INT, &max_prompt,
         "longest prompt in tokens (default: the context)"},
        {"timeout", CLI_DOUBLE, &timeout, "seconds per request (600)"},
        {"max_body_bytes", CLI_INT, &max_body,
         "largest request body (1048576)"},
        {"max_connections", CLI_INT, &max_conn, "open connections (64)"},
        {NULL, 0, NULL, NULL},
    };

    memset(&o, 0, sizeof o);
    r = cli_parse(argc, argv, opts,
                  "usage: rlhi serve --model PATH [options]\n\n"
                  "Serves the model over HTTP with OpenAI's API:\n"
                  "POST /v1/completions, /v1/chat/completions; GET "
                  "/v1/models, /health.\nConcurrent requests share batched "
                  "forward passes. Stops on SIGINT or SIGTERM.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!o.engine.model_path) {
        fprintf(stderr, "rlhi: error: --model is required\n");
        return EXIT_USAGE;
    }
    if (max_batch < 1 || max_tokens < 1 || max_prompt < 0 || timeout <= 0 ||
        max_body < 1 || max_conn < 1) {
        fprintf(stderr, "rlhi: error: limits must be positive\n");
        return EXIT_USAGE;
    }
    o.engine.max_batch = max_batch;
    o.engine.max_tokens_limit = max_tokens;
    o.engine.max_prompt_tokens = max_prompt;
    o.host = host;
    o.port = port;
    o.timeout_s = timeout;
    o.max_body_bytes = (size_t)max_body;
    o.max_connections = max_conn;

    /* Signals go to this thread only: block them before any thread starts
     * (threads inherit the mask) and wait for them below. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    r = rlhi_serve_start(&s, &o);
    if (r)
        return cli_fail(r, "cannot start the server");
    rlhi_info("serving '%s' on http://%s%s%s:%d (max_batch %d)",
              rlhi_engine_model_id(rlhi_serve_engine(s)),
              strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
              rlhi_serve_port(s), max_batch);
    if (sigwait(&set, &sig) == 0)
        rlhi_info("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rlhi_serve_stop(s);
    return EXIT_OK;
}

/* The stories15M shape (llama2.c's 15M TinyStories model: dim 288, 6
 * layers, 6 heads, hidden 768) with a 32000-token vocabulary and random
 * weights: big enough that sharing a pass over the weights pays, small
 * enough to load in a second. */
static const struct rlhi_model_config synth_cfg = {
    .dim = 288, .hidden_dim = 768, .n_layers = 6, .n_heads = 6,
    .n_kv_heads = 6, .head_dim = 48, .vocab_size = 32000,
    .max_seq_len = 256, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
    .rope = RLHI_ROPE_INTERLEAVED, .tied_embeddings = true,
    .qkv_bias = false, .bos_id = 1, .eos_id = 2,
};

/* N(0, 0.02) matrices, unit norms. */
static void synth_init(struct rlhi_model *m)
{
    struct rlhi_rng rng;
    size_t i;
    int l;

    rlhi_rng_seed(&rng, 1);
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

/* rlhi bench serve: an in-process server on a free loopback port (or
 * --url), loaded by 1, 4 and 16 clients. */
int cmd_bench_serve(int argc, char **argv)
{
    struct rlhi_serve_options so;
    struct rlhi_server *s = NULL;
    const char *url = NULL, *model = NULL, *tokenizer = NULL;
    struct rlhi_model *sm = NULL;
    struct rlhi_tokenizer *st = NULL;
    bool synthetic = false;
    char base[128];
    int requests = 64, max_tokens = 32, max_batch = 16, r, i;
    double seconds = 60;
    static const int levels[] = {1, 4, 16};
    const struct cli_opt opts[] = {
        {"model", CLI_STR, &model,
         "model to serve in process (default: the shared stories260K)"},
        {"tokenizer", CLI_STR, &tokenizer, "its tokenizer"},
        {"url", CLI_STR, &url, "load a running server instead (loopback)"},
        {"requests", CLI_INT, &requests, "requests per level (64)"},
        {"max_tokens", CLI_INT, &max_tokens, "tokens per request (32)"},
        {"max_seconds", CLI_DOUBLE, &seconds, "time cap per level (60)"},
        {"max_batch", CLI_INT, &max_batch, "server batch size (16)"},
        {"synthetic", CLI_BOOL, &synthetic,
         "serve a random-weight model of the stories15M shape (vocab "
         "32000) with --tokenizer (default: the shared tok512)"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi bench serve [options]\n\n"
                  "Requests/s and tokens/s of rlhi serve at 1, 4 and 16 "
                  "concurrent clients\n(loopback only; a fixed request "
                  "count and a time cap per level).",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (requests < 1 || max_tokens < 1 || seconds <= 0 || max_batch < 1) {
        fprintf(stderr, "rlhi: error: counts must be positive\n");
        return EXIT_USAGE;
    }
    if (!url) {
        memset(&so, 0, sizeof so);
        if (!model) {
            model = "../shared/data/models/llama2c-stories260K/"
                    "stories260K.bin";
            if (!tokenizer)
                tokenizer = "../shared/data/models/llama2c-stories260K/"
                            "tok512.bin";
        }
        so.engine.model_path = model;
        so.engine.tokenizer_path = tokenizer;
        so.engine.max_batch = max_batch;
        if (synthetic) {
            r = rlhi_model_new(&sm, &synth_cfg);
            if (!r)
                r = rlhi_tokenizer_load(&st, tokenizer);
            if (r) {
                rlhi_model_free(sm);
                return cli_fail(r, "cannot make the synthetic model");
            }
            synth_init(sm);
            so.engine.model = sm;
            so.engine.tokenizer = st;
            so.engine.model_id = "synthetic-15M";
            model = "synthetic 15.2M (stories15M shape, vocab 32000)";
        }
        r = rlhi_serve_start(&s, &so);
        if (r) {
            rlhi_model_free(sm);
            rlhi_tokenizer_free(st);
            return cli_fail(r, "cannot start the server");
        }
        snprintf(base, sizeof base, "http://127.0.0.1:%d",
                 rlhi_serve_port(s));
        url = base;
        printf("server: %s in process on %s, max_batch %d\n", model, url,
               max_batch);
    }
    printf("load: /v1/completions, %d tokens per request (ignore_eos), "
           "%d requests or %.0f s per level\n", max_tokens, requests,
           seconds);
    printf("%8s %8s %8s %10s %10s %10s %10s\n", "clients", "done", "failed",
           "req/s", "tok/s", "p50 s", "p95 s");
    for (i = 0; i < 3; i++) {
        struct rlhi_bench_serve_options bo = {0};
        struct rlhi_bench_serve_result res;

        bo.url = url;
        bo.clients = levels[i];
        bo.requests = requests;
        bo.max_seconds = seconds;
        bo.max_tokens = max_tokens;
        r = rlhi_bench_serve(&bo, &res);
        if (r) {
            rlhi_serve_stop(s);
            rlhi_model_free(sm);
            rlhi_tokenizer_free(st);
            return cli_fail(r, "bench serve");
        }
        printf("%8d %8d %8d %10.1f %10.1f %10.3f %10.3f\n", levels[i],
               res.done, res.failed, res.req_per_s, res.tok_per_s,
               res.latency_p50_s, res.latency_p95_s);
        fflush(stdout);
    }
    rlhi_serve_stop(s);
    rlhi_model_free(sm);
    rlhi_tokenizer_free(st);
    return EXIT_OK;
}
