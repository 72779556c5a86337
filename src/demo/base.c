/* The demo's base model recipe: a generic world corpus, a BPE tokenizer
 * trained on it, a tiny Llama trained from scratch with SFT; cached under
 * the work dir by a hash of the recipe. Plus a check of how well a model
 * follows styles and feedback, read back by the world's style reader. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "rlhi/bpe_train.h"
#include "rlhi/chat.h"
#include "rlhi/demo.h"
#include "rlhi/eval.h"
#include "rlhi/generate.h"
#include "rlhi/model.h"
#include "rlhi/sft.h"

void rlhi_demo_base_opts_default(struct rlhi_demo_base_opts *o)
{
    memset(o, 0, sizeof *o);
    o->conversations = 6000;
    o->seed = 1;
    /* The world's text has about 2,400 distinct pretokens: 1,024 ids
     * cover most words as one token, so answers are ~150 tokens. */
    o->vocab_size = 1024;
    /* About 0.9M parameters: SFT of this size costs ~0.75 ms of CPU per
     * token here (measured: 6,744 tokens in 5.0 s on one core), so 240
     * steps of 8 conversations (~450k tokens) take about 3 minutes on
     * two cores. */
    o->dim = 128;
    o->hidden_dim = 384;
    o->n_layers = 4;
    o->n_heads = 4;
    o->max_seq_len = 512;
    o->sft_steps = 240;
    o->batch_size = 8;
    o->learning_rate = 3e-3;
    o->max_length = 320;
}

/* N(0, 0.02) matrices (Hugging Face's initializer_range), unit norms. */
static void init_weights(struct rlhi_model *m, uint64_t seed)
{
    struct rlhi_rng rng;
    size_t i;
    int l;

    rlhi_rng_seed(&rng, seed);
    for (i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.02 * rlhi_rng_normal(&rng));
    for (l = 0; l < m->cfg.n_layers; l++)
        for (i = 0; i < (size_t)m->cfg.dim; i++)
            m->w.layers[l].attn_norm[i] = m->w.layers[l].ffn_norm[i] = 1.0f;
    for (i = 0; i < (size_t)m->cfg.dim; i++)
        m->w.final_norm[i] = 1.0f;
}

/* The last "loss" of a metrics.jsonl file, or -1. */
static double last_loss(const char *dir)
{
    char *path = rlhi_path_join(dir, "metrics.jsonl"), *data = NULL, *p;
    size_t len;
    double loss = -1;

    if (path && !rlhi_file_read(path, &data, &len)) {
        for (p = data; (p = strstr(p, "\"loss\":")); p++)
            sscanf(p + 7, "%lf", &loss);
    }
    rlhi_free(data);
    rlhi_free(path);
    return loss;
}

static int write_corpus(const char *path, int64_t n, uint64_t seed)
{
    FILE *f = fopen(path, "wb");
    int r;

    if (!f)
        return rlhi_err_errno(RLHI_EIO, "cannot create '%s'", path);
    r = rlhi_sim_corpus_write(f, n, seed, false);
    if (fclose(f) && !r)
        r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", path);
    return r;
}

static int train_tokenizer(const struct rlhi_demo_base_opts *o,
                           const char *corpus, const char *dir)
{
    static const char *const specials[] = {"<|endoftext|>", "<|system|>",
                                           "<|user|>", "<|assistant|>",
                                           "<|end|>"};
    struct rlhi_bpe_train_options to = {0};
    struct rlhi_bpe_trainer *t = NULL;
    int r;

    to.vocab_size = o->vocab_size;
    to.special_tokens = specials;
    to.n_special = 5;
    to.bos_token = "<|endoftext|>";
    to.eos_token = "<|end|>";
    to.pad_token = "<|endoftext|>";
    to.chat_template = rlhi_chat_rlhi_jinja();
    r = rlhi_bpe_trainer_new(&t, &to);
    if (!r)
        r = rlhi_bpe_trainer_add_file(t, corpus, NULL);
    if (!r)
        r = rlhi_bpe_trainer_train(t);
    if (!r)
        r = rlhi_bpe_trainer_save(t, dir);
    rlhi_bpe_trainer_free(t);
    return r;
}

static int train_model(const struct rlhi_demo_base_opts *o,
                       const char *corpus, const char *tokdir,
                       const char *dir, int64_t *n_params)
{
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_model *m = NULL;
    struct rlhi_model_config c;
    struct rlhi_sft_data d = {0};
    struct rlhi_sft_config sc;
    struct rlhi_sft_result res;
    int r;

    r = rlhi_tokenizer_load(&tok, tokdir);
    if (r)
        return r;
    memset(&c, 0, sizeof c);
    c.dim = o->dim;
    c.hidden_dim = o->hidden_dim;
    c.n_layers = o->n_layers;
    c.n_heads = c.n_kv_heads = o->n_heads;
    c.head_dim = o->dim / o->n_heads;
    c.vocab_size = rlhi_tokenizer_vocab_size(tok);
    c.max_seq_len = o->max_seq_len;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope = RLHI_ROPE_HALF;
    c.tied_embeddings = true;
    c.bos_id = rlhi_tokenizer_bos(tok);
    c.eos_id = rlhi_tokenizer_eos(tok);
    r = rlhi_model_new(&m, &c);
    if (r)
        goto out;
    init_weights(m, o->seed);
    *n_params = (int64_t)m->n_params;
    rlhi_info("base model: %lld parameters (dim %d, %d layers, %d heads, "
              "ffn %d, vocab %d)", (long long)m->n_params, c.dim,
              c.n_layers, c.n_heads, c.hidden_dim, c.vocab_size);

    r = rlhi_sft_data_load(&d, corpus, tok, RLHI_CHAT_RLHI, o->max_length);
    if (r)
        goto out;
    rlhi_sft_config_init(&sc);
    sc.output_dir = dir;
    sc.learning_rate = o->learning_rate;
    sc.max_steps = o->sft_steps;
    sc.batch_size = o->batch_size;
    sc.max_length = o->max_length;
    sc.seed = o->seed;
    sc.warmup_ratio = 0.05;
    sc.logging_steps = 10;
    sc.save_steps = 0;
    sc.copy_from = tokdir;
    r = rlhi_sft_train(m, &d, &sc, &res);
out:
    rlhi_sft_data_release(&d);
    rlhi_model_free(m);
    rlhi_tokenizer_free(tok);
    return r;
}

int rlhi_demo_base_model(const struct rlhi_demo_base_opts *o,
                         const char *work_dir, char **model_dir,
                         struct rlhi_demo_base_info *info)
{
    char key[512], hex[65], name[64];
    char *dir = NULL, *corpus = NULL, *tokdir = NULL, *mark = NULL;
    double t0 = rlhi_time_now();
    int r;

    memset(info, 0, sizeof *info);
    *model_dir = NULL;
    /* Everything that changes the weights goes into the key. */
    snprintf(key, sizeof key, "rlhi-demo-base v1 conv=%lld seed=%llu "
             "vocab=%d dim=%d ffn=%d layers=%d heads=%d ctx=%d steps=%lld "
             "batch=%d lr=%.6g maxlen=%d", (long long)o->conversations,
             (unsigned long long)o->seed, o->vocab_size, o->dim,
             o->hidden_dim, o->n_layers, o->n_heads, o->max_seq_len,
             (long long)o->sft_steps, o->batch_size, o->learning_rate,
             o->max_length);
    rlhi_sha256_hex(key, strlen(key), hex);
    snprintf(name, sizeof name, "base-%.12s", hex);
    dir = rlhi_path_join(work_dir, name);
    mark = dir ? rlhi_path_join(dir, "recipe.txt") : NULL;
    corpus = dir ? rlhi_path_join(dir, "corpus.jsonl") : NULL;
    tokdir = dir ? rlhi_path_join(dir, "tokenizer") : NULL;
    if (!dir || !mark || !corpus || !tokdir) {
        r = rlhi_err(RLHI_ENOMEM, "cannot build paths");
        goto out;
    }
    if (rlhi_path_exists(mark)) {
        info->cached = true;
        rlhi_info("base model: cached in '%s' (delete it to retrain)", dir);
        goto done;
    }
    r = rlhi_mkdir_p(dir);
    if (r)
        goto out;
    rlhi_info("base model: world corpus of %lld conversations",
              (long long)o->conversations);
    r = write_corpus(corpus, o->conversations, o->seed);
    if (r)
        goto out;
    rlhi_info("base model: training a %d-id BPE tokenizer", o->vocab_size);
    r = train_tokenizer(o, corpus, tokdir);
    if (r)
        goto out;
    rlhi_info("base model: SFT from scratch, %lld steps of %d "
              "conversations", (long long)o->sft_steps, o->batch_size);
    r = train_model(o, corpus, tokdir, dir, &info->n_params);
    if (r)
        goto out;
    /* The marker last: a directory without it is an unfinished run. */
    r = rlhi_file_write_atomic(mark, key, strlen(key));
    if (r)
        goto out;
done:
    info->final_loss = last_loss(dir);
    info->seconds = rlhi_time_now() - t0;
    if (!info->n_params) {
        struct rlhi_model *m = NULL;

        if (!rlhi_model_load(&m, dir))
            info->n_params = (int64_t)m->n_params;
        rlhi_model_free(m);
    }
    *model_dir = dir;
    dir = NULL;
    r = 0;
out:
    rlhi_free(dir);
    rlhi_free(mark);
    rlhi_free(corpus);
    rlhi_free(tokdir);
    return r;
}

int rlhi_demo_base_quality(const char *model_dir, int n, uint64_t seed,
                           struct rlhi_demo_quality *q)
{
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_eval_chatbot bot;
    struct rlhi_rng rng;
    struct rlhi_buf first = RLHI_BUF_INIT;
    int i, d, r, tried[RLHI_SIM_NDIM] = {0}, readable = 0;
    double t0 = rlhi_time_now();

    memset(q, 0, sizeof *q);
    r = rlhi_generate_load(model_dir, NULL, &m, &tok);
    if (r)
        return r;
    r = rlhi_eval_chatbot_init(&bot, m, tok, RLHI_CHAT_RLHI);
    if (r)
        goto out;
    rlhi_rng_seed(&rng, seed);
    for (i = 0; i < n; i++) {
        struct rlhi_sim_request req;
        struct rlhi_sim_reading rd;
        struct rlhi_chat_msg msgs[3];
        char fb[320];
        const char *reply;
        int target, c;

        rlhi_sim_request_sample(&req, 0.0, &rng);
        msgs[0].role = "user";
        msgs[0].content = req.text;
        r = rlhi_eval_chatbot_reply(&bot, msgs, 1, rlhi_rng_u64(&rng), &reply);
        if (r)
            goto out;
        rlhi_buf_clear(&first);
        if (rlhi_buf_adds(&first, reply)) {
            r = rlhi_err(RLHI_ENOMEM, "cannot keep an answer");
            goto out;
        }
        rlhi_sim_style_read(first.buf, &rd);
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            readable += rd.style.v[d] >= 0;
        c = rlhi_sim_check(first.buf, &req, NULL, NULL);
        q->correct += c == RLHI_SIM_RIGHT;
        q->wrong += c == RLHI_SIM_WRONG;

        /* Ask to move one dimension to the side it is not on. */
        d = i % RLHI_SIM_NDIM;
        target = rd.style.v[d] == 1 ? 0 : 1;
        rlhi_sim_feedback_text(d, target, &req, &rng, fb, sizeof fb);
        msgs[1].role = "assistant";
        msgs[1].content = first.buf;
        msgs[2].role = "user";
        msgs[2].content = fb;
        r = rlhi_eval_chatbot_reply(&bot, msgs, 3, rlhi_rng_u64(&rng), &reply);
        if (r)
            goto out;
        rlhi_sim_style_read(reply, &rd);
        tried[d]++;
        q->follow_dim[d] += rd.style.v[d] == target;
        q->follow += rd.style.v[d] == target;
    }
    q->n = n;
    if (n) {
        q->readable = (double)readable / (n * RLHI_SIM_NDIM);
        q->correct /= n;
        q->wrong /= n;
        q->follow /= n;
    }
    for (d = 0; d < RLHI_SIM_NDIM; d++)
        if (tried[d])
            q->follow_dim[d] /= tried[d];
    q->seconds = rlhi_time_now() - t0;
out:
    rlhi_buf_release(&first);
    rlhi_eval_chatbot_release(&bot);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    return r;
}
