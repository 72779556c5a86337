/* Training checkpoints: a Hugging Face model directory plus
 * trainer_state.bin (optimiser moments, step, data position, RNG) so that
 * a resumed run reproduces the uninterrupted one bit for bit.
 *
 * trainer_state.bin, little-endian:
 *   "RLHICKPT"  u32 version (1)  u32 rope
 *   i64 step, total_steps, epoch, row, num_tokens, log_steps
 *   u64 seed, rng[4]   f64 log_loss
 *   f32 beta1, beta2, eps   i64 adamw step   u64 n
 *   f32 m[n], f32 v[n]
 *   u64 FNV-1a 64 of every byte before it
 * It is written to a temporary name, synced and renamed, so a kill leaves
 * either the old file or the new one.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "model/model_io.h"
#include "rlhi/train.h"

#define MAGIC "RLHICKPT"
#define VERSION 1u

struct writer {
    FILE *f;
    uint64_t h;
    int err;
};

static void put(struct writer *w, const void *p, size_t n)
{
    if (w->err)
        return;
    w->h = rlhi_fnv64(w->h, p, n);
    if (fwrite(p, 1, n, w->f) != n)
        w->err = 1;
}

static int write_state(const char *path, const struct rlhi_adamw *o,
                       const struct rlhi_trainer_state *st)
{
    struct writer w = {NULL, RLHI_FNV64_INIT, 0};
    char *tmp = NULL;
    uint32_t u32[2] = {VERSION, (uint32_t)st->rope};
    int64_t i64[7] = {st->step, st->total_steps, st->epoch, st->row,
                      st->num_tokens, st->log_steps, o->step};
    uint64_t n = o->n, seed = st->seed;
    float betas[3] = {o->beta1, o->beta2, o->eps};
    int r = 0;

    tmp = rlhi_malloc(strlen(path) + 5);
    if (!tmp)
        return rlhi_err(RLHI_ENOMEM, "cannot save '%s': out of memory", path);
    sprintf(tmp, "%s.tmp", path);
    w.f = fopen(tmp, "wb");
    if (!w.f) {
        r = rlhi_err_errno(RLHI_EIO, "cannot create '%s'", tmp);
        goto out;
    }
    put(&w, MAGIC, 8);
    put(&w, u32, sizeof u32);
    put(&w, i64, sizeof i64);
    put(&w, &seed, 8);
    put(&w, st->rng.s, sizeof st->rng.s);
    put(&w, &st->log_loss, 8);
    put(&w, betas, sizeof betas);
    put(&w, &n, 8);
    put(&w, o->m, o->n * sizeof(float));
    put(&w, o->v, o->n * sizeof(float));
    {
        uint64_t h = w.h;

        put(&w, &h, 8);
    }
    if (w.err || fflush(w.f) || fsync(fileno(w.f))) {
        r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);
        fclose(w.f);
        unlink(tmp);
        goto out;
    }
    if (fclose(w.f)) {
        r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path)) {
        r = rlhi_err_errno(RLHI_EIO, "cannot rename '%s' to '%s'", tmp,
                           path);
        unlink(tmp);
    }
out:
    rlhi_free(tmp);
    return r;
}

int rlhi_checkpoint_save(const char *dir, const struct rlhi_model *m,
                         const struct rlhi_adamw *o,
                         const struct rlhi_trainer_state *st)
{
    struct rlhi_buf js = RLHI_BUF_INIT;
    char *path = NULL;
    int r;

    r = rlhi_mkdir_p(dir);
    if (!r)
        r = rlhi_model_save_hf(m, dir, false);
    if (r)
        return r;

    /* A readable summary beside the binary state, as HF's
     * trainer_state.json. */
    path = rlhi_path_join(dir, "trainer_state.json");
    if (!path || rlhi_buf_addf(&js, "{\n  \"global_step\": %lld,\n"
                               "  \"max_steps\": %lld,\n"
                               "  \"epoch\": %lld,\n"
                               "  \"epoch_row\": %lld,\n"
                               "  \"num_tokens\": %lld,\n"
                               "  \"seed\": %llu\n}\n",
                               (long long)st->step,
                               (long long)st->total_steps,
                               (long long)st->epoch, (long long)st->row,
                               (long long)st->num_tokens,
                               (unsigned long long)st->seed)) {
        r = rlhi_err(RLHI_ENOMEM, "cannot save checkpoint '%s': out of "
                     "memory", dir);
        goto out;
    }
    r = rlhi_file_write_atomic(path, js.buf, js.len);
    if (r)
        goto out;
    rlhi_free(path);
    path = rlhi_path_join(dir, "trainer_state.bin");
    if (!path) {
        r = rlhi_err(RLHI_ENOMEM, "cannot save checkpoint '%s'", dir);
        goto out;
    }
    r = write_state(path, o, st);
out:
    rlhi_buf_release(&js);
    rlhi_free(path);
    return r;
}

struct reader {
    const char *p, *end;
    int short_read;
};

static void get(struct reader *rd, void *dst, size_t n)
{
    if ((size_t)(rd->end - rd->p) < n) {
        rd->short_read = 1;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, rd->p, n);
    rd->p += n;
}

/* Puts the q/k rows of a model loaded from HF (half-split) back into the
 * interleaved order it was trained in. */
static int to_interleaved(struct rlhi_model *m)
{
    const struct rlhi_model_config *c = &m->cfg;
    size_t C = c->dim, big = (size_t)c->n_heads * c->head_dim * C;
    float *tmp = rlhi_malloc(big * sizeof(float));
    int l;

    if (!tmp)
        return rlhi_err(RLHI_ENOMEM, "cannot convert rotary layout");
    for (l = 0; l < c->n_layers; l++) {
        struct rlhi_layer_weights *w = &m->w.layers[l];
        struct { float *p; int heads; size_t cols; } t[4] = {
            {w->wq, c->n_heads, C}, {w->wk, c->n_kv_heads, C},
            {w->bq, c->n_heads, 1}, {w->bk, c->n_kv_heads, 1},
        };

        for (int i = 0; i < 4; i++) {
            size_t n = (size_t)t[i].heads * c->head_dim * t[i].cols;

            if (!t[i].p)
                continue;
            rlhi__rope_permute(tmp, t[i].p, t[i].heads, c->head_dim,
                               t[i].cols, false);
            memcpy(t[i].p, tmp, n * sizeof(float));
        }
    }
    m->cfg.rope = RLHI_ROPE_INTERLEAVED;
    rlhi_free(tmp);
    return 0;
}

int rlhi_checkpoint_load(const char *dir, struct rlhi_model **mp,
                         struct rlhi_adamw *o, struct rlhi_trainer_state *st)
{
    struct rlhi_model *m = NULL;
    struct reader rd;
    char *path = NULL, *data = NULL, magic[8];
    size_t len;
    uint32_t u32[2];
    int64_t i64[7];
    uint64_t n, h, want;
    float betas[3];
    int r;

    *mp = NULL;
    memset(o, 0, sizeof *o);
    memset(st, 0, sizeof *st);
    path = rlhi_path_join(dir, "trainer_state.bin");
    if (!path)
        return rlhi_err(RLHI_ENOMEM, "cannot read checkpoint '%s'", dir);
    if (!rlhi_path_exists(path)) {
        r = rlhi_err(RLHI_ENOTFOUND, "'%s' is not a complete checkpoint: "
                     "no trainer_state.bin", dir);
        goto out;
    }
    r = rlhi_file_read(path, &data, &len);
    if (r)
        goto out;
    rd.p = data;
    rd.end = data + len;
    rd.short_read = 0;
    get(&rd, magic, 8);
    get(&rd, u32, sizeof u32);
    if (rd.short_read || memcmp(magic, MAGIC, 8)) {
        r = rlhi_err(RLHI_EFORMAT, "'%s' is not an rlhi trainer state "
                     "(bad magic)", path);
        goto out;
    }
    if (u32[0] != VERSION) {
        r = rlhi_err(RLHI_EFORMAT, "'%s' has trainer state version %u; "
                     "this build reads %u", path, u32[0], VERSION);
        goto out;
    }
    get(&rd, i64, sizeof i64);
    get(&rd, &st->seed, 8);
    get(&rd, st->rng.s, sizeof st->rng.s);
    get(&rd, &st->log_loss, 8);
    get(&rd, betas, sizeof betas);
    get(&rd, &n, 8);
    want = 8 + sizeof u32 + sizeof i64 + 8 + sizeof st->rng.s + 8 +
           sizeof betas + 8 + 8 * n + 8;
    if (rd.short_read || n > len || len != want) {
        r = rlhi_err(RLHI_EFORMAT, "'%s' is truncated or corrupt: %zu "
                     "bytes, expected %llu", path, len,
                     (unsigned long long)want);
        goto out;
    }
    memcpy(&h, data + len - 8, 8);
    if (h != rlhi_fnv64(RLHI_FNV64_INIT, data, len - 8)) {
        r = rlhi_err(RLHI_EFORMAT, "'%s' is corrupt: checksum mismatch",
                     path);
        goto out;
    }
    st->rope = (int32_t)u32[1];
    st->step = i64[0], st->total_steps = i64[1], st->epoch = i64[2];
    st->row = i64[3], st->num_tokens = i64[4], st->log_steps = i64[5];

    r = rlhi_model_load(&m, dir);
    if (!r)
        r = rlhi_model_own(m);
    if (!r && m->n_params != n)
        r = rlhi_err(RLHI_EFORMAT, "'%s' holds optimiser state for %llu "
                     "parameters but the model has %zu", path,
                     (unsigned long long)n, m->n_params);
    if (!r && st->rope == RLHI_ROPE_INTERLEAVED &&
        m->cfg.rope != RLHI_ROPE_INTERLEAVED)
        r = to_interleaved(m);
    if (!r)
        r = rlhi_adamw_init(o, n, &m->cfg);
    if (r)
        goto out;
    o->beta1 = betas[0], o->beta2 = betas[1], o->eps = betas[2];
    o->step = i64[6];
    memcpy(o->m, rd.p, n * sizeof(float));
    memcpy(o->v, rd.p + n * sizeof(float), n * sizeof(float));
    *mp = m;
    m = NULL;
out:
    rlhi_model_free(m);
    rlhi_free(data);
    rlhi_free(path);
    return r;
}
