/* rlhi sft: supervised fine-tuning on chat JSONL, loss on assistant
 * tokens, with TRL's option names. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/chat.h"
#include "rlhi/model.h"
#include "rlhi/sft.h"
#include "rlhi/tokenizer.h"
#include "rlhi/train.h"

static const char usage[] =
    "usage: rlhi sft (--model DIR | --init CONFIG.json --tokenizer PATH)\n"
    "                --data FILE.jsonl --output_dir DIR [options]\n\n"
    "Fine-tunes a model on conversations {\"messages\": [{\"role\", "
    "\"content\"}, ...]},\n"
    "rendered with the model's chat template; only assistant tokens are "
    "trained on.\n"
    "--init starts from random weights (N(0, 0.02), seeded) with the sizes "
    "of a\n"
    "Hugging Face config.json. Metrics go to stderr and to "
    "OUTPUT_DIR/metrics.jsonl;\n"
    "checkpoints to OUTPUT_DIR/checkpoint-STEP (resume with "
    "--resume_from_checkpoint).";

/* Reads the sizes of a Hugging Face config.json (Llama/Qwen2 keys). */
static int read_config(const char *path, struct rlhi_model_config *c)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *v;
    const char *mt;

    if (!root)
        return rlhi_err(RLHI_EFORMAT, "cannot read config '%s': line %d: "
                        "%s", path, je.line, je.text);
    memset(c, 0, sizeof *c);
    {
        static const char *const need[] = {
            "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "vocab_size", NULL,
        };

        for (int i = 0; need[i]; i++)
            if (!json_is_integer(json_object_get(root, need[i]))) {
                json_decref(root);
                return rlhi_err(RLHI_EFORMAT, "config '%s' has no integer "
                                "\"%s\"", path, need[i]);
            }
    }
#define INT(key, dst, dflt)                                                 \
    do {                                                                    \
        v = json_object_get(root, key);                                     \
        dst = json_is_integer(v) ? (int)json_integer_value(v) : (dflt);     \
    } while (0)
    INT("hidden_size", c->dim, 0);
    INT("intermediate_size", c->hidden_dim, 0);
    INT("num_hidden_layers", c->n_layers, 0);
    INT("num_attention_heads", c->n_heads, 0);
    INT("num_key_value_heads", c->n_kv_heads, c->n_heads);
    INT("head_dim", c->head_dim, c->n_heads ? c->dim / c->n_heads : 0);
    INT("vocab_size", c->vocab_size, 0);
    INT("max_position_embeddings", c->max_seq_len, 2048);
    INT("bos_token_id", c->bos_id, -1);
    INT("eos_token_id", c->eos_id, -1);
#undef INT
    v = json_object_get(root, "rms_norm_eps");
    c->norm_eps = json_is_number(v) ? (float)json_number_value(v) : 1e-6f;
    v = json_object_get(root, "rope_theta");
    c->rope_theta = json_is_number(v) ? (float)json_number_value(v)
                                      : 10000.0f;
    c->tied_embeddings = json_is_true(json_object_get(root,
                                                      "tie_word_embeddings"));
    mt = json_string_value(json_object_get(root, "model_type"));
    c->qkv_bias = json_is_true(json_object_get(root, "attention_bias")) ||
                  (mt && !strcmp(mt, "qwen2"));
    c->rope = RLHI_ROPE_HALF;
    json_decref(root);
    if (rlhi_model_config_check(c))
        return rlhi_err_prefix(RLHI_EFORMAT, "config '%s'", path);
    return 0;
}

/* Random initial weights: N(0, 0.02) (Hugging Face's initializer_range)
 * for matrices, 1 for norm weights, 0 for biases. */
static void init_weights(struct rlhi_model *m, uint64_t seed)
{
    struct rlhi_rng rng;
    size_t i;
    int l;

    rlhi_rng_seed(&rng, seed);
    for (i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.02 * rlhi_rng_normal(&rng));
    for (l = 0; l < m->cfg.n_layers; l++) {
        struct rlhi_layer_weights *w = &m->w.layers[l];
        size_t q = (size_t)m->cfg.n_heads * m->cfg.head_dim;
        size_t kv = (size_t)m->cfg.n_kv_heads * m->cfg.head_dim;

        for (i = 0; i < (size_t)m->cfg.dim; i++)
            w->attn_norm[i] = w->ffn_norm[i] = 1.0f;
        if (w->bq) {
            memset(w->bq, 0, q * sizeof(float));
            memset(w->bk, 0, kv * sizeof(float));
            memset(w->bv, 0, kv * sizeof(float));
        }
    }
    for (i = 0; i < (size_t)m->cfg.dim; i++)
        m->w.final_norm[i] = 1.0f;
}

int cmd_sft(int argc, char **argv)
{
    const char *model_dir = NULL, *init = NULL, *tok_path = NULL;
    const char *data = NULL, *tmpl = NULL;
    struct rlhi_sft_config sc;
    struct rlhi_sft_data d = {0};
    struct rlhi_sft_result res;
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    enum rlhi_chat_kind kind;
    int64_t seed = 42;
    char *copy_dir = NULL;
    int r, result = EXIT_RUNTIME;

    rlhi_sft_config_init(&sc);
    {
        const struct cli_opt opts[] = {
            {"model", CLI_STR, &model_dir, "Hugging Face model directory"},
            {"init", CLI_STR, &init, "start from random weights with this "
                                     "config.json"},
            {"tokenizer", CLI_STR, &tok_path, "tokenizer (default: the "
                                              "model directory)"},
            {"chat_template", CLI_STR, &tmpl, "template name (llama3, "
                                              "chatml, qwen2.5, rlhi, ...; "
                                              "default: the model's)"},
            {"data", CLI_STR, &data, "training conversations (JSONL)"},
            {"output_dir", CLI_STR, &sc.output_dir, "where to write"},
            CLI_TRAIN_OPTS(sc, seed, "2e-5", "3"),
            {"logging_steps", CLI_INT, &sc.logging_steps, "10"},
            {"save_steps", CLI_INT, &sc.save_steps, "500 (0: only the "
                                                    "final model)"},
            {"packing", CLI_BOOL, &sc.packing, "pack several conversations "
                                               "per row"},
            {"resume_from_checkpoint", CLI_STR, &sc.resume_from,
             "a checkpoint-STEP directory"},
            {NULL, 0, NULL, NULL},
        };

        r = cli_parse(argc, argv, opts, usage, NULL, NULL);
        if (r)
            return r < 0 ? EXIT_OK : r;
    }
    if (!!model_dir == !!init || !data || !sc.output_dir) {
        fprintf(stderr, "rlhi: error: sft needs one of --model or --init, "
                        "and --data and --output_dir\n"
                        "hint: see 'rlhi sft --help'\n");
        return EXIT_USAGE;
    }
    if (init && !tok_path) {
        fprintf(stderr, "rlhi: error: --init needs --tokenizer\n");
        return EXIT_USAGE;
    }
    sc.seed = (uint64_t)seed;

    /* Model, tokenizer, template. */
    if (model_dir) {
        r = rlhi_model_load(&m, model_dir);
        if (r)
            return cli_fail(r, "cannot load the model");
    } else {
        struct rlhi_model_config cfg;

        r = read_config(init, &cfg);
        if (!r)
            r = rlhi_model_new(&m, &cfg);
        if (r)
            return cli_fail(r, "cannot make the model");
        init_weights(m, sc.seed);
    }
    r = cli_load_tokenizer(tok_path ? tok_path : model_dir, &tok, &copy_dir);
    if (r) {
        result = r;
        goto out;
    }
    if (rlhi_tokenizer_vocab_size(tok) > m->cfg.vocab_size) {
        fprintf(stderr, "rlhi: error: the tokenizer has %d tokens but the "
                        "model only %d\n", rlhi_tokenizer_vocab_size(tok),
                m->cfg.vocab_size);
        result = EXIT_USAGE;
        goto out;
    }
    sc.copy_from = copy_dir;
    if (tmpl)
        r = rlhi_chat_kind_from_name(tmpl, &kind);
    else if (model_dir)
        r = rlhi_chat_template_from_dir(model_dir, &kind);
    else
        r = rlhi_chat_kind_from_name("rlhi", &kind);
    if (r) {
        result = cli_fail(r, "cannot choose a chat template");
        goto out;
    }

    /* Data, then training. */
    r = rlhi_sft_data_load(&d, data, tok, kind, sc.max_length);
    if (r) {
        result = cli_fail(r, "cannot read the training data");
        goto out;
    }
    rlhi_info("%d conversations from '%s' (%lld skipped), template %s", d.n,
              data, (long long)d.skipped, rlhi_chat_kind_name(kind));
    r = rlhi_sft_train(m, &d, &sc, &res);
    if (r) {
        result = cli_fail(r, "sft failed");
        goto out;
    }
    rlhi_info("sft done: %lld steps, %lld tokens, %.1f s (%.0f tokens/s), "
              "final loss %.4f", (long long)res.steps,
              (long long)res.num_tokens, res.seconds,
              res.seconds > 0 ? (double)res.num_tokens / res.seconds : 0.0,
              res.last_loss);
    /* records skipped in the input: exit status says so */
    result = d.skipped ? EXIT_DATA : EXIT_OK;
out:
    rlhi_sft_data_release(&d);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    rlhi_free(copy_dir);
    return result;
}
