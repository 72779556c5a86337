/* The Llama-family transformer: configuration, weights, loading, and the
 * inference forward pass with a KV cache.
 *
 * Dimension legend, used in every shape comment in rlhi:
 *   B   batch size               T   sequence length (tokens)
 *   C   model width (dim)        F   SwiGLU inner width (hidden_dim)
 *   L   layers                   V   vocabulary size
 *   NH  query heads              KVH key/value heads (grouped-query)
 *   HS  head size (C / NH unless the config says otherwise)
 *
 * Weights are fp32 in memory. Matrices are stored as Hugging Face's
 * nn.Linear keeps them: (out, in), row-major, so y = W x reads row i of W
 * for output i. All tensors of a model live in one block, in the canonical
 * order that rlhi_model_tensor_list() gives; the named views in struct
 * rlhi_weights point into it. Hugging Face files are copied into an owned
 * block (bf16/fp16 widened). llama2.c checkpoints are not copied: the
 * views point into the read-only mapping of the file, whose grouped layout
 * is not the canonical order (params_owned false); rlhi_model_own() makes
 * an owned canonical copy for code that writes weights or uses offsets.
 *
 * Rotary embeddings come in two conventions with the same frequencies
 * theta^(-2i/HS): llama2.c and GGUF rotate interleaved pairs (x[2i],
 * x[2i+1]); Hugging Face checkpoints rotate halves (x[i], x[i+HS/2]).
 */
#ifndef RLHI_MODEL_H
#define RLHI_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"

enum rlhi_rope_style {
    RLHI_ROPE_INTERLEAVED = 0, /* llama2.c, GGUF */
    RLHI_ROPE_HALF = 1,        /* Hugging Face */
};

struct rlhi_model_config {
    int dim;          /* C */
    int hidden_dim;   /* F */
    int n_layers;     /* L */
    int n_heads;      /* NH */
    int n_kv_heads;   /* KVH; NH % KVH == 0 */
    int head_dim;     /* HS */
    int vocab_size;   /* V */
    int max_seq_len;  /* longest context the model supports */
    float norm_eps;   /* RMSNorm epsilon (llama2.c: 1e-5) */
    float rope_theta; /* rotary base (10000 for Llama 2) */
    enum rlhi_rope_style rope;
    bool tied_embeddings; /* output head shares the token embedding */
    bool qkv_bias;        /* q/k/v projections have biases (Qwen2) */
    int bos_id;           /* -1 when unknown */
    int eos_id;           /* -1 when unknown */
};

/* Named views of one layer's tensors. Shapes as (rows, cols). */
struct rlhi_layer_weights {
    float *attn_norm; /* (C) */
    float *wq;        /* (NH*HS, C) */
    float *wk;        /* (KVH*HS, C) */
    float *wv;        /* (KVH*HS, C) */
    float *bq;        /* (NH*HS) or NULL */
    float *bk;        /* (KVH*HS) or NULL */
    float *bv;        /* (KVH*HS) or NULL */
    float *wo;        /* (C, NH*HS) */
    float *ffn_norm;  /* (C) */
    float *w_gate;    /* (F, C)  "w1" in llama2.c */
    float *w_up;      /* (F, C)  "w3" */
    float *w_down;    /* (C, F)  "w2" */
};

struct rlhi_weights {
    float *tok_embed;                  /* (V, C) */
    struct rlhi_layer_weights *layers; /* L entries */
    float *final_norm;                 /* (C) */
    float *lm_head;                    /* (V, C); == tok_embed when tied */
};

struct rlhi_model {
    struct rlhi_model_config cfg;
    struct rlhi_weights w;
    float *params;        /* the block all views point into */
    size_t n_params;      /* floats in the block */
    bool params_owned;    /* false when `params` is a file mapping */
    struct rlhi_mmap map; /* the mapping, when weights come from one */
    char *path;           /* where it was loaded from, for messages */
};

/* One tensor of the canonical layout. `name` uses Hugging Face's names
 * ("model.layers.3.self_attn.q_proj.weight"); `offset` counts floats from
 * the start of the parameter block. */
struct rlhi_tensor_info {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t offset;
    size_t numel;
};

/* Checks a configuration for consistency (positive sizes, NH % KVH == 0,
 * even HS). Returns 0 or RLHI_EINVAL with a message naming the field. */
int rlhi_model_config_check(const struct rlhi_model_config *cfg);

/* Lists the tensors of `cfg` in canonical order: embed_tokens; per layer
 * input_layernorm, q/k/v/o_proj (q/k/v biases after v_proj when
 * qkv_bias), post_attention_layernorm, gate/up/down_proj; norm; lm_head
 * unless tied. On success *out is a new array (caller frees with
 * rlhi_free) of *n entries and *total is the block size in floats. */
int rlhi_model_tensor_list(const struct rlhi_model_config *cfg,
                           struct rlhi_tensor_info **out, int *n,
                           size_t *total);

/* Points m->w's views into `params` (laid out as rlhi_model_tensor_list
 * says) for m->cfg, and sets m->params and m->n_params. Allocates
 * m->w.layers, freeing a previous one: m must be zeroed or bound before.
 * Does not change params_owned. 0 or RLHI_ENOMEM. */
int rlhi_model_bind(struct rlhi_model *m, float *params);

/* Loads a model from `path`:
 *   - a llama2.c checkpoint file (.bin, legacy header; negative vocab size
 *     means an unshared classifier), rotary interleaved;
 *   - a Hugging Face directory: config.json and model.safetensors, or
 *     shards listed in model.safetensors.index.json; fp32, bf16 or fp16;
 *     rotary half-split.
 * On success *out is a new model that the caller frees with
 * rlhi_model_free(). Truncated, corrupt or mismatched files fail with
 * RLHI_EFORMAT and a message naming the file and what is wrong (expected
 * and found sizes, a missing tensor's name). */
int rlhi_model_load(struct rlhi_model **out, const char *path);

/* Makes a model with an owned, zeroed parameter block for `cfg`. */
int rlhi_model_new(struct rlhi_model **out,
                   const struct rlhi_model_config *cfg);

void rlhi_model_free(struct rlhi_model *m);

/* Makes m's parameters an owned, writable block in canonical order, as
 * training needs: a model loaded from a llama2.c file has read-only views
 * into the file's mapping, in its grouped layout (params_owned false). The
 * views move to the copy and the mapping is closed. No-op when owned.
 * 0 or RLHI_ENOMEM (m unchanged). */
int rlhi_model_own(struct rlhi_model *m);

/* Saves `m` as a Hugging Face directory `dir` (created if needed):
 * config.json (LlamaForCausalLM, or Qwen2ForCausalLM when qkv_bias) and
 * model.safetensors, F32 or, when `bf16`, BF16 rounded to nearest even.
 * Each file is written atomically. Models with interleaved rotary (llama2.c)
 * get the rows of q_proj/k_proj (and their biases) permuted to the half-split
 * convention, as transformers' conversion script does, so the directory
 * loads back (rope half) with the same outputs and works in transformers.
 * Errors: RLHI_EIO, RLHI_ENOMEM, with a message naming the file. */
int rlhi_model_save_hf(const struct rlhi_model *m, const char *dir,
                       bool bf16);

/* ---- inference ------------------------------------------------------ */

/* One sequence being decoded: its KV cache (L, max_seq, KVH*HS) for keys
 * and for values, the number of positions filled, and scratch space. */
struct rlhi_infer;

/* Makes a decoding state for `m` that can hold `max_seq` positions (0 =
 * the model's max_seq_len). The model must outlive the state. */
int rlhi_infer_new(struct rlhi_infer **out, const struct rlhi_model *m,
                   int max_seq);
void rlhi_infer_free(struct rlhi_infer *s);

/* Positions filled so far, and the most the state can hold. */
int rlhi_infer_pos(const struct rlhi_infer *s);
int rlhi_infer_max_seq(const struct rlhi_infer *s);
/* Forgets every position at or after `pos` (0 resets), so a shared prefix
 * can be kept and the rest recomputed. */
void rlhi_infer_truncate(struct rlhi_infer *s, int pos);
/* Copies `src`'s filled positions into `dst` (same model, dst->max_seq >=
 * src's filled length), so several continuations can share one prefix. */
int rlhi_infer_copy(struct rlhi_infer *dst, const struct rlhi_infer *src);

/* Runs `n` tokens at positions pos..pos+n-1 and appends their keys and
 * values to the cache. When `all_logits` is set, writes (n, V) logits;
 * otherwise (V) logits of the last token only. `logits` may be NULL to only
 * fill the cache. RLHI_ERANGE when the cache would overflow, RLHI_EINVAL
 * for a token id outside the vocabulary. */
int rlhi_infer_forward(struct rlhi_infer *s, const int32_t *tokens, int n,
                       float *logits, bool all_logits);

/* As rlhi_infer_forward, but writes the last token's final hidden state
 * (C), after the final norm (what the output head or a reward model's
 * score head reads), instead of logits. */
int rlhi_infer_forward_hidden(struct rlhi_infer *s, const int32_t *tokens,
                              int n, float *hidden);

/* One decoding step for `nseq` distinct states of the same model: token
 * tokens[i] runs at the next position of seqs[i], and its (V) logits go to
 * row i of `logits` (nseq, V). All sequences share each pass over the
 * weights, which is what makes N-candidate sampling and server batching
 * cheap. Errors as rlhi_infer_forward(); on error no state advances. */
int rlhi_infer_forward_batch(struct rlhi_infer **seqs, int nseq,
                             const int32_t *tokens, float *logits);

#endif
