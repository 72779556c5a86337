/* Saving a model as a Hugging Face directory (config.json and
 * model.safetensors) that transformers, vLLM and llama.cpp's converter
 * read, and the rotary row permutation between the two conventions.
 *
 * Hugging Face Llama code rotates halves (x[i], x[i+HS/2]); llama2.c and
 * Meta's original checkpoints rotate pairs (x[2i], x[2i+1]). The two give
 * identical outputs when the rows of q_proj and k_proj are permuted within
 * each head so that pair (2i, 2i+1) lands on (i, i+HS/2): q.k is a sum over
 * rows, so reordering q and k rows alike changes nothing else. That is the
 * `permute` of transformers' convert_llama_weights_to_hf.py.
 */
#include "model/model_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/safetensors.h"

void rlhi__rope_permute(float *dst, const float *src, int n_heads, int hs,
                        size_t cols, bool to_half)
{
    int h, i, half;

    for (h = 0; h < n_heads; h++) {
        for (i = 0; i < hs / 2; i++) {
            for (half = 0; half < 2; half++) {
                size_t inter = (size_t)h * hs + 2 * i + half;
                size_t halfrow = (size_t)h * hs + (size_t)half * (hs / 2) + i;
                size_t to = to_half ? halfrow : inter;
                size_t from = to_half ? inter : halfrow;

                memcpy(dst + to * cols, src + from * cols,
                       cols * sizeof(float));
            }
        }
    }
}

/* Appends the shortest decimal that reads back as the same float, as
 * Python prints it: 1e-5f as "1e-05" (not "9.99999975e-06"), 10000 as
 * "10000.0". */
static int add_float(struct rlhi_buf *b, float f)
{
    char s[32];
    int p;

    if (fabsf(f) < 1e16f && f == (float)(long long)f)
        return rlhi_buf_addf(b, "%.1f", (double)f);
    for (p = 1; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)f);
        if (strtof(s, NULL) == f)
            break;
    }
    return rlhi_buf_adds(b, s);
}

static int add_id(struct rlhi_buf *b, const char *key, int id)
{
    if (id < 0)
        return rlhi_buf_addf(b, "  \"%s\": null,\n", key);
    return rlhi_buf_addf(b, "  \"%s\": %d,\n", key, id);
}

/* config.json, keys as transformers writes them (sorted). */
static int build_config(struct rlhi_buf *b, const struct rlhi_model_config *c,
                        bool bf16)
{
    bool qwen = c->qkv_bias;

    if (rlhi_buf_addf(b, "{\n  \"architectures\": [\"%s\"],\n",
                      qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM") ||
        (!qwen && rlhi_buf_adds(b, "  \"attention_bias\": false,\n")) ||
        add_id(b, "bos_token_id", c->bos_id) ||
        add_id(b, "eos_token_id", c->eos_id) ||
        rlhi_buf_addf(b, "  \"head_dim\": %d,\n", c->head_dim) ||
        rlhi_buf_adds(b, "  \"hidden_act\": \"silu\",\n") ||
        rlhi_buf_addf(b, "  \"hidden_size\": %d,\n", c->dim) ||
        rlhi_buf_addf(b, "  \"intermediate_size\": %d,\n", c->hidden_dim) ||
        rlhi_buf_addf(b, "  \"max_position_embeddings\": %d,\n",
                      c->max_seq_len) ||
        (!qwen && rlhi_buf_adds(b, "  \"mlp_bias\": false,\n")) ||
        rlhi_buf_addf(b, "  \"model_type\": \"%s\",\n",
                      qwen ? "qwen2" : "llama") ||
        rlhi_buf_addf(b, "  \"num_attention_heads\": %d,\n", c->n_heads) ||
        rlhi_buf_addf(b, "  \"num_hidden_layers\": %d,\n", c->n_layers) ||
        rlhi_buf_addf(b, "  \"num_key_value_heads\": %d,\n", c->n_kv_heads) ||
        rlhi_buf_adds(b, "  \"rms_norm_eps\": ") ||
        add_float(b, c->norm_eps) ||
        rlhi_buf_adds(b, ",\n  \"rope_scaling\": null,\n  \"rope_theta\": ") ||
        add_float(b, c->rope_theta) ||
        rlhi_buf_addf(b, ",\n  \"tie_word_embeddings\": %s,\n",
                      c->tied_embeddings ? "true" : "false") ||
        rlhi_buf_addf(b, "  \"torch_dtype\": \"%s\",\n",
                      bf16 ? "bfloat16" : "float32") ||
        rlhi_buf_adds(b, "  \"use_cache\": true,\n") ||
        (qwen && rlhi_buf_adds(b, "  \"use_sliding_window\": false,\n")) ||
        rlhi_buf_addf(b, "  \"vocab_size\": %d\n}\n", c->vocab_size))
        return RLHI_ENOMEM;
    return 0;
}

/* True for the tensors whose rows the rotary convention orders. */
static bool is_rotary(const char *name)
{
    return strstr(name, ".q_proj.") || strstr(name, ".k_proj.");
}

int rlhi_model_save_hf(const struct rlhi_model *m, const char *dir,
                       bool bf16)
{
    static const char *const meta[] = {"format", "pt"};
    const struct rlhi_model_config *c = &m->cfg;
    struct rlhi_tensor_info *info = NULL;
    struct rlhi_st_out *outs = NULL;
    struct rlhi_buf cfg = RLHI_BUF_INIT;
    float **views = NULL, **perm = NULL;
    char *file = NULL;
    size_t total;
    int r, n, i;

    r = rlhi_mkdir_p(dir);
    if (!r)
        r = rlhi_model_tensor_list(c, &info, &n, &total);
    if (r)
        goto out;
    outs = rlhi_calloc((size_t)n, sizeof *outs);
    views = rlhi_calloc((size_t)n, sizeof *views);
    perm = rlhi_calloc((size_t)n, sizeof *perm);
    if (!outs || !views || !perm)
        goto nomem;
    rlhi__model_views(m, views);

    /* The tensors, q/k rows reordered for the half-split convention. */
    for (i = 0; i < n; i++) {
        outs[i].name = info[i].name;
        outs[i].ndim = info[i].ndim;
        outs[i].shape[0] = info[i].shape[0];
        outs[i].shape[1] = info[i].shape[1];
        outs[i].data = views[i];
        outs[i].bf16 = bf16;
        if (c->rope == RLHI_ROPE_INTERLEAVED && is_rotary(info[i].name)) {
            size_t cols = info[i].ndim == 2 ? (size_t)info[i].shape[1] : 1;
            int heads = (int)(info[i].shape[0] / c->head_dim);

            perm[i] = rlhi_malloc(info[i].numel * sizeof(float));
            if (!perm[i])
                goto nomem;
            rlhi__rope_permute(perm[i], views[i], heads, c->head_dim, cols,
                               true);
            outs[i].data = perm[i];
        }
    }
    file = rlhi_path_join(dir, "model.safetensors");
    if (!file)
        goto nomem;
    r = rlhi_safetensors_write(file, outs, n, meta, 1);
    if (r)
        goto out;

    rlhi_free(file);
    file = rlhi_path_join(dir, "config.json");
    if (!file || build_config(&cfg, c, bf16))
        goto nomem;
    r = rlhi_file_write_atomic(file, cfg.buf, cfg.len);
    goto out;
nomem:
    r = rlhi_err(RLHI_ENOMEM, "cannot save model to '%s': out of memory",
                 dir);
out:
    for (i = 0; perm && i < n; i++)
        rlhi_free(perm[i]);
    rlhi_free(perm);
    rlhi_free(views);
    rlhi_free(outs);
    rlhi_free(info);
    rlhi_free(file);
    rlhi_buf_release(&cfg);
    return r;
}
