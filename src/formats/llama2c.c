/* llama2.c checkpoints (the legacy "version 0" .bin of export.py), read
 * without copying: the model's views point into the file's mapping.
 *
 * Layout (llama2.c run.c, read_checkpoint and memory_map_weights):
 *   7 x int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *                     vocab_size (negative: unshared classifier), seq_len
 *   fp32, each tensor type grouped across layers:
 *     token_embedding (V,C)  rms_att (L,C)  wq (L,C,C)  wk (L,KVH*HS,C)
 *     wv (L,KVH*HS,C)  wo (L,C,C)  rms_ffn (L,C)  w1 (L,F,C)  w2 (L,C,F)
 *     w3 (L,F,C)  rms_final (C)  freq_cis_real, freq_cis_imag
 *     (seq_len*HS/2 each, unused: we compute rotary angles ourselves)
 *     wcls (V,C) only when vocab_size was negative
 * The header is 28 bytes, so every tensor is 4-byte aligned in the page-
 * aligned mapping. The grouped order differs from the canonical per-layer
 * block, but the views are per-layer pointers, so they point straight into
 * the file: loading is O(1) and the pages are shared between processes.
 * params is then the mapping (params_owned false) and its layout is NOT the
 * canonical one; rlhi_model_own() makes a canonical, writable copy.
 * Rotary: interleaved pairs. Norm epsilon 1e-5 and theta 10000 are run.c's
 * constants; ids 1 and 2 are BOS and EOS in its tokenizers.
 *
 * Newer export.py versions (1: fp32, 2: int8 "Q8_0") start with the magic
 * 0x616b3432 ("ak42") and a 256-byte header; they are refused with a hint.
 */
#include "model/model_io.h"

#include <stdio.h>
#include <string.h>

#define HEADER_BYTES 28
#define MAGIC_AK42 0x616b3432u /* "ak42" read as little-endian uint32 */

static int32_t rd32(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* Reads and checks the header into cfg (seq_len goes to max_seq_len). */
static int read_header(const char *path, const unsigned char *p,
                       size_t size, struct rlhi_model_config *cfg)
{
    int32_t h[7];
    int i, r;

    if (size >= 8 && (uint32_t)rd32(p) == MAGIC_AK42)
        return rlhi_err(RLHI_ENOTIMPL, "'%s': llama2.c checkpoint version %d "
                        "(magic \"ak42\") is not supported yet; hint: "
                        "export it in the legacy format with llama2.c's "
                        "`python export.py OUT.bin --version 0 ...`",
                        path, (int)rd32(p + 4));
    if (size < HEADER_BYTES)
        return rlhi_err(RLHI_EFORMAT, "'%s': %zu bytes is too short for a "
                        "llama2.c checkpoint header (%d bytes)", path, size,
                        HEADER_BYTES);
    for (i = 0; i < 7; i++)
        h[i] = rd32(p + 4 * i);

    memset(cfg, 0, sizeof *cfg);
    cfg->dim = h[0];
    cfg->hidden_dim = h[1];
    cfg->n_layers = h[2];
    cfg->n_heads = h[3];
    cfg->n_kv_heads = h[4];
    cfg->tied_embeddings = h[5] > 0;
    /* -INT32_MIN overflows; any value that large is refused below. */
    cfg->vocab_size = h[5] == INT32_MIN ? 0 : (h[5] < 0 ? -h[5] : h[5]);
    cfg->max_seq_len = h[6];
    if (cfg->n_heads <= 0 || cfg->dim <= 0 || cfg->dim % cfg->n_heads)
        return rlhi_err(RLHI_EFORMAT, "'%s': not a llama2.c checkpoint: "
                        "dim = %d is not a positive multiple of n_heads = %d",
                        path, cfg->dim, cfg->n_heads);
    cfg->head_dim = cfg->dim / cfg->n_heads;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    cfg->rope = RLHI_ROPE_INTERLEAVED;
    cfg->qkv_bias = false;
    cfg->bos_id = 1;
    cfg->eos_id = 2;
    if (cfg->vocab_size <= 2) /* a vocabulary always has BOS and EOS */
        cfg->bos_id = cfg->eos_id = -1;
    r = rlhi_model_config_check(cfg);
    if (r)
        return rlhi_err_prefix(RLHI_EFORMAT, "'%s': not a llama2.c checkpoint",
                               path);
    return 0;
}

int rlhi__llama2c_load(struct rlhi_model **out, const char *path)
{
    struct rlhi_model *m = NULL;
    struct rlhi_model_config cfg;
    uint64_t C, F, KV, V, L, HS, want;
    const unsigned char *base;
    float *p, *wq, *wk, *wv, *wo, *rms_att, *rms_ffn, *w1, *w2, *w3;
    size_t n_params;
    int r, l;

    *out = NULL;
    m = rlhi_calloc(1, sizeof *m);
    if (!m || !(m->path = rlhi_strdup(path))) {
        rlhi_free(m);
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
    }
    r = rlhi_mmap_open(&m->map, path);
    if (r)
        goto fail;
    base = m->map.data;
    r = read_header(path, base, m->map.size, &cfg);
    if (r)
        goto fail;
    m->cfg = cfg;

    /* Exact size: the checks above bound every factor, so no overflow. */
    C = (uint64_t)cfg.dim;
    F = (uint64_t)cfg.hidden_dim;
    L = (uint64_t)cfg.n_layers;
    V = (uint64_t)cfg.vocab_size;
    HS = (uint64_t)cfg.head_dim;
    KV = (uint64_t)cfg.n_kv_heads * HS;
    want = V * C + L * (2 * C + 2 * C * C + 2 * KV * C + 3 * F * C) + C +
           (uint64_t)cfg.max_seq_len * HS + (cfg.tied_embeddings ? 0 : V * C);
    want = HEADER_BYTES + 4 * want;
    if (want != m->map.size) {
        r = rlhi_err(RLHI_EFORMAT, "'%s': expected %llu bytes for dim=%d "
                     "hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d "
                     "vocab_size=%d seq_len=%d, found %zu%s", path,
                     (unsigned long long)want, cfg.dim, cfg.hidden_dim,
                     cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                     cfg.tied_embeddings ? cfg.vocab_size : -cfg.vocab_size,
                     cfg.max_seq_len, m->map.size,
                     want > m->map.size ? " (truncated?)" : "");
        goto fail;
    }

    /* Point the views into the grouped layout. */
    m->w.layers = rlhi_calloc((size_t)L, sizeof *m->w.layers);
    if (!m->w.layers) {
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
        goto fail;
    }
    p = (float *)(void *)(base + HEADER_BYTES);
    m->w.tok_embed = p, p += V * C;
    rms_att = p, p += L * C;
    wq = p, p += L * C * C;
    wk = p, p += L * KV * C;
    wv = p, p += L * KV * C;
    wo = p, p += L * C * C;
    rms_ffn = p, p += L * C;
    w1 = p, p += L * F * C;
    w2 = p, p += L * C * F;
    w3 = p, p += L * F * C;
    m->w.final_norm = p, p += C;
    p += (uint64_t)cfg.max_seq_len * HS; /* freq_cis_real and _imag */
    m->w.lm_head = cfg.tied_embeddings ? m->w.tok_embed : p;
    for (l = 0; l < cfg.n_layers; l++) {
        struct rlhi_layer_weights *w = &m->w.layers[l];
        uint64_t i = (uint64_t)l;

        w->attn_norm = rms_att + i * C;
        w->wq = wq + i * C * C;
        w->wk = wk + i * KV * C;
        w->wv = wv + i * KV * C;
        w->wo = wo + i * C * C;
        w->ffn_norm = rms_ffn + i * C;
        w->w_gate = w1 + i * F * C;
        w->w_down = w2 + i * C * F;
        w->w_up = w3 + i * F * C;
    }
    m->params = (float *)(void *)(base + HEADER_BYTES);
    m->params_owned = false;
    /* Counted as the canonical block would be (freq_cis is not a weight). */
    n_params = (size_t)(V * C + L * (2 * C + 2 * C * C + 2 * KV * C +
                                     3 * F * C) +
                        C + (cfg.tied_embeddings ? 0 : V * C));
    m->n_params = n_params;
    *out = m;
    return 0;
fail:
    rlhi_model_free(m);
    return r;
}
