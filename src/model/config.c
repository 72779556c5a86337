/* Model configuration checks, the canonical tensor layout, and the model
 * object's lifecycle (new, bind, free).
 *
 * The canonical layout is the order of rlhi_model_tensor_list(): tensors
 * packed back to back with no padding, so the block holds exactly the sum
 * of their sizes. Gradients and optimiser states use the same layout, which
 * is why it is computed in one place.
 */
#include "model/model_io.h"

#include <stdio.h>
#include <string.h>

/* Upper bounds that no real model reaches but that keep every size product
 * below 2^63 floats, so a corrupt header cannot overflow the arithmetic:
 * widths up to 2^20 (largest public models: 16384 wide, 53248 inner),
 * vocabularies up to 2^24 (largest common: 256k), contexts up to 2^24. */
#define MAX_WIDTH (1 << 20)
#define MAX_VOCAB (1 << 24)
#define MAX_LAYERS 4096
#define MAX_SEQ (1 << 24)

static int bad(const char *field, int value, const char *why)
{
    return rlhi_err(RLHI_EINVAL, "invalid model config: %s = %d %s", field,
                    value, why);
}

int rlhi_model_config_check(const struct rlhi_model_config *c)
{
    if (c->dim <= 0 || c->dim > MAX_WIDTH)
        return bad("dim", c->dim, "(must be 1..1048576)");
    if (c->hidden_dim <= 0 || c->hidden_dim > MAX_WIDTH)
        return bad("hidden_dim", c->hidden_dim, "(must be 1..1048576)");
    if (c->n_layers <= 0 || c->n_layers > MAX_LAYERS)
        return bad("n_layers", c->n_layers, "(must be 1..4096)");
    if (c->n_heads <= 0 || c->n_heads > MAX_WIDTH)
        return bad("n_heads", c->n_heads, "(must be positive)");
    if (c->n_kv_heads <= 0 || c->n_kv_heads > c->n_heads)
        return bad("n_kv_heads", c->n_kv_heads, "(must be 1..n_heads)");
    if (c->n_heads % c->n_kv_heads)
        return rlhi_err(RLHI_EINVAL, "invalid model config: n_heads = %d is "
                        "not a multiple of n_kv_heads = %d", c->n_heads,
                        c->n_kv_heads);
    if (c->head_dim <= 0 || c->head_dim % 2 ||
        (long long)c->head_dim * c->n_heads > MAX_WIDTH)
        return bad("head_dim", c->head_dim,
                   "(must be even, positive, head_dim * n_heads <= 2^20)");
    if (c->vocab_size <= 0 || c->vocab_size > MAX_VOCAB)
        return bad("vocab_size", c->vocab_size, "(must be 1..16777216)");
    if (c->max_seq_len <= 0 || c->max_seq_len > MAX_SEQ)
        return bad("max_seq_len", c->max_seq_len, "(must be 1..16777216)");
    if (!(c->norm_eps > 0) || c->norm_eps > 1)
        return rlhi_err(RLHI_EINVAL, "invalid model config: norm_eps = %g "
                        "(must be in (0, 1])", c->norm_eps);
    if (!(c->rope_theta > 0) || c->rope_theta > 1e30f)
        return rlhi_err(RLHI_EINVAL, "invalid model config: rope_theta = %g "
                        "(must be positive and finite)", c->rope_theta);
    if (c->rope != RLHI_ROPE_INTERLEAVED && c->rope != RLHI_ROPE_HALF)
        return bad("rope", (int)c->rope, "(unknown rotary convention)");
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size)
        return bad("bos_id", c->bos_id, "(outside the vocabulary)");
    if (c->eos_id < -1 || c->eos_id >= c->vocab_size)
        return bad("eos_id", c->eos_id, "(outside the vocabulary)");
    return 0;
}

static void add(struct rlhi_tensor_info *t, int *n, size_t *off,
                const char *name, int64_t rows, int64_t cols, int ndim)
{
    struct rlhi_tensor_info *e = &t[(*n)++];

    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = rows;
    e->shape[1] = ndim == 2 ? cols : 1;
    e->numel = (size_t)rows * (size_t)e->shape[1];
    e->offset = *off;
    *off += e->numel;
}

int rlhi_model_tensor_list(const struct rlhi_model_config *c,
                           struct rlhi_tensor_info **out, int *n,
                           size_t *total)
{
    int64_t C = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int64_t Q = (int64_t)c->n_heads * c->head_dim;
    int64_t KV = (int64_t)c->n_kv_heads * c->head_dim;
    int per_layer = 9 + (c->qkv_bias ? 3 : 0);
    struct rlhi_tensor_info *t;
    size_t off = 0;
    char name[96];
    int r, l, k = 0;

    *out = NULL;
    r = rlhi_model_config_check(c);
    if (r)
        return r;
    t = rlhi_calloc((size_t)c->n_layers * per_layer + 3, sizeof *t);
    if (!t)
        return rlhi_err(RLHI_ENOMEM, "cannot list model tensors: "
                        "out of memory");

    add(t, &k, &off, "model.embed_tokens.weight", V, C, 2);
    for (l = 0; l < c->n_layers; l++) {
#define L(suffix, rows, cols, nd)                                           \
    do {                                                                    \
        snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);       \
        add(t, &k, &off, name, rows, cols, nd);                             \
    } while (0)
        L("input_layernorm.weight", C, 1, 1);
        L("self_attn.q_proj.weight", Q, C, 2);
        L("self_attn.k_proj.weight", KV, C, 2);
        L("self_attn.v_proj.weight", KV, C, 2);
        if (c->qkv_bias) {
            L("self_attn.q_proj.bias", Q, 1, 1);
            L("self_attn.k_proj.bias", KV, 1, 1);
            L("self_attn.v_proj.bias", KV, 1, 1);
        }
        L("self_attn.o_proj.weight", C, Q, 2);
        L("post_attention_layernorm.weight", C, 1, 1);
        L("mlp.gate_proj.weight", F, C, 2);
        L("mlp.up_proj.weight", F, C, 2);
        L("mlp.down_proj.weight", C, F, 2);
#undef L
    }
    add(t, &k, &off, "model.norm.weight", C, 1, 1);
    if (!c->tied_embeddings)
        add(t, &k, &off, "lm_head.weight", V, C, 2);

    *out = t;
    *n = k;
    *total = off;
    return 0;
}

int rlhi_model_bind(struct rlhi_model *m, float *params)
{
    const struct rlhi_model_config *c = &m->cfg;
    size_t C = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t Q = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t KV = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    float *p = params;
    int l;

    rlhi_free(m->w.layers);
    m->w.layers = rlhi_calloc((size_t)c->n_layers, sizeof *m->w.layers);
    if (!m->w.layers)
        return rlhi_err(RLHI_ENOMEM, "cannot bind model weights: "
                        "out of memory");
    m->params = params;

    /* The same walk as rlhi_model_tensor_list(); test_loader checks that
     * every view lands on its listed offset. */
    m->w.tok_embed = p;
    p += (size_t)c->vocab_size * C;
    for (l = 0; l < c->n_layers; l++) {
        struct rlhi_layer_weights *w = &m->w.layers[l];

        w->attn_norm = p, p += C;
        w->wq = p, p += Q * C;
        w->wk = p, p += KV * C;
        w->wv = p, p += KV * C;
        if (c->qkv_bias) {
            w->bq = p, p += Q;
            w->bk = p, p += KV;
            w->bv = p, p += KV;
        } else {
            w->bq = w->bk = w->bv = NULL;
        }
        w->wo = p, p += C * Q;
        w->ffn_norm = p, p += C;
        w->w_gate = p, p += F * C;
        w->w_up = p, p += F * C;
        w->w_down = p, p += C * F;
    }
    m->w.final_norm = p, p += C;
    if (c->tied_embeddings) {
        m->w.lm_head = m->w.tok_embed;
    } else {
        m->w.lm_head = p;
        p += (size_t)c->vocab_size * C;
    }
    m->n_params = (size_t)(p - params);
    return 0;
}

int rlhi__model_views(const struct rlhi_model *m, float **v)
{
    const struct rlhi_model_config *c = &m->cfg;
    int l, k = 0;

    v[k++] = m->w.tok_embed;
    for (l = 0; l < c->n_layers; l++) {
        const struct rlhi_layer_weights *w = &m->w.layers[l];

        v[k++] = w->attn_norm;
        v[k++] = w->wq;
        v[k++] = w->wk;
        v[k++] = w->wv;
        if (c->qkv_bias) {
            v[k++] = w->bq;
            v[k++] = w->bk;
            v[k++] = w->bv;
        }
        v[k++] = w->wo;
        v[k++] = w->ffn_norm;
        v[k++] = w->w_gate;
        v[k++] = w->w_up;
        v[k++] = w->w_down;
    }
    v[k++] = m->w.final_norm;
    if (!c->tied_embeddings)
        v[k++] = m->w.lm_head;
    return k;
}

/* Alignment of owned parameter blocks: a cache line, and the widest AVX-512
 * load, so kernels may use aligned loads on the block's start. */
#define PARAM_ALIGN 64

int rlhi__model_alloc(struct rlhi_model **out,
                      const struct rlhi_model_config *cfg, bool zero)
{
    struct rlhi_tensor_info *info = NULL;
    struct rlhi_model *m;
    size_t total;
    int n, r;

    *out = NULL;
    r = rlhi_model_tensor_list(cfg, &info, &n, &total);
    if (r)
        return r;
    rlhi_free(info);
    m = rlhi_calloc(1, sizeof *m);
    if (!m)
        return rlhi_err(RLHI_ENOMEM, "cannot make model: out of memory");
    m->cfg = *cfg;
    m->params_owned = true;
    m->params = rlhi_malloc_aligned(PARAM_ALIGN, total * sizeof(float));
    if (!m->params) {
        rlhi_model_free(m);
        return rlhi_err(RLHI_ENOMEM, "cannot make model: out of memory for "
                        "%zu parameters (%.1f MiB)", total,
                        (double)total * 4 / (1 << 20));
    }
    if (zero)
        memset(m->params, 0, total * sizeof(float));
    r = rlhi_model_bind(m, m->params);
    if (r) {
        rlhi_model_free(m);
        return r;
    }
    RLHI_ASSERT(m->n_params == total);
    *out = m;
    return 0;
}

int rlhi_model_new(struct rlhi_model **out,
                   const struct rlhi_model_config *cfg)
{
    return rlhi__model_alloc(out, cfg, true);
}

void rlhi_model_free(struct rlhi_model *m)
{
    if (!m)
        return;
    if (m->params_owned)
        rlhi_free(m->params);
    rlhi_mmap_close(&m->map);
    rlhi_free(m->w.layers);
    rlhi_free(m->path);
    rlhi_free(m);
}
