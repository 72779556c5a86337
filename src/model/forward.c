/* Inference forward pass of the Llama-family transformer with a KV cache.
 *
 * One call processes a list of "rows": each row is one token of one
 * sequence at one position. A prompt prefill is many rows of one sequence;
 * a batched decode step is one row from each of several sequences. All
 * rows go through every weight matrix together (one matrix product per
 * weight), so the weights are read from memory once per call however many
 * sequences are decoded; only attention is per row.
 *
 * Per layer, as straight-line steps (shapes for R rows):
 *   xb  = rmsnorm(x, attn_norm)                  (R, C)
 *   q   = xb Wq^T (+bq); k, v likewise           (R, NH*HS), (R, KVH*HS)
 *   rotate q and k at each row's position; store k, v in the row's cache
 *   att = softmax(q k^T / sqrt(HS)) v over positions 0..pos, per head,
 *         query head h reading kv head h / (NH / KVH)       (R, NH*HS)
 *   x  += att Wo^T
 *   xb  = rmsnorm(x, ffn_norm)
 *   x  += (silu(xb Wg^T) * (xb Wu^T)) Wd^T
 * then logits = rmsnorm(x, final_norm) Wout^T for the rows asked for.
 *
 * The arithmetic follows llama2.c's run.c operation for operation (float
 * accumulation, the same RMSNorm, softmax and rotary formulas), so that its
 * greedy outputs are reproduced exactly; the matrix products go through
 * BLAS, or through the plain loop in kernels.c when RLHI_KERNELS=ref.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "rlhi/model.h"

/* Attention runs on several threads only above this many multiply-adds per
 * layer: below it (a small model, or a short context) waking the thread
 * team costs more than it saves (stories260K decode was 30x slower with 2
 * threads on a loaded machine). */
#define PAR_MIN_WORK 65536.0

/* Prompt chunks of at least this many tokens use blocked (BLAS) attention;
 * shorter ones, and decoding, the per-row loop, whose arithmetic follows
 * run.c. 16 rows is where the matrix products start to pay. */
#define BLOCK_MIN_ROWS 16

struct rlhi_infer {
    const struct rlhi_model *m;
    int max_seq;
    int pos;        /* positions filled */
    float *k_cache; /* (L, max_seq, KVH*HS) */
    float *v_cache; /* (L, max_seq, KVH*HS) */
    float *rope_cos; /* (max_seq, HS/2) */
    float *rope_sin; /* (max_seq, HS/2) */
    /* scratch, grown to the largest row count seen */
    int cap_rows;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2; /* (R, ...) */
    float *scores;  /* (threads, cap_scores) attention weights */
    int cap_scores;
    float *blk;     /* (NH, R, ctx) score matrices of blocked attention */
    size_t cap_blk;
    int n_threads;
};

/* One token to run: which sequence, at which position. */
struct row {
    struct rlhi_infer *s;
    int pos;
};

static void free_scratch(struct rlhi_infer *s)
{
    rlhi_free(s->x);
    rlhi_free(s->xb);
    rlhi_free(s->q);
    rlhi_free(s->k);
    rlhi_free(s->v);
    rlhi_free(s->att);
    rlhi_free(s->hb);
    rlhi_free(s->hb2);
    s->x = s->xb = s->q = s->k = s->v = s->att = s->hb = s->hb2 = NULL;
    s->cap_rows = 0;
}

/* Makes room for `rows` rows of activations. 0 or RLHI_ENOMEM. */
static int reserve_rows(struct rlhi_infer *s, int rows)
{
    const struct rlhi_model_config *c = &s->m->cfg;
    size_t r, qd, kvd;

    if (rows <= s->cap_rows)
        return 0;
    free_scratch(s);
    r = (size_t)rows;
    qd = (size_t)c->n_heads * c->head_dim;
    kvd = (size_t)c->n_kv_heads * c->head_dim;
    s->x = rlhi_malloc_aligned(64, r * c->dim * sizeof(float));
    s->xb = rlhi_malloc_aligned(64, r * c->dim * sizeof(float));
    s->q = rlhi_malloc_aligned(64, r * qd * sizeof(float));
    s->k = rlhi_malloc_aligned(64, r * kvd * sizeof(float));
    s->v = rlhi_malloc_aligned(64, r * kvd * sizeof(float));
    s->att = rlhi_malloc_aligned(64, r * qd * sizeof(float));
    s->hb = rlhi_malloc_aligned(64, r * c->hidden_dim * sizeof(float));
    s->hb2 = rlhi_malloc_aligned(64, r * c->hidden_dim * sizeof(float));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att || !s->hb ||
        !s->hb2) {
        free_scratch(s);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate activations for %d "
                        "tokens", rows);
    }
    s->cap_rows = rows;
    return 0;
}

int rlhi_infer_new(struct rlhi_infer **out, const struct rlhi_model *m,
                   int max_seq)
{
    const struct rlhi_model_config *c = &m->cfg;
    struct rlhi_infer *s;
    size_t kv, half = (size_t)c->head_dim / 2;
    int p, i;

    *out = NULL;
    if (max_seq <= 0 || max_seq > c->max_seq_len)
        max_seq = c->max_seq_len;
    s = rlhi_calloc(1, sizeof *s);
    if (!s)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate decoding state");
    s->m = m;
    s->max_seq = max_seq;
    s->n_threads = omp_get_max_threads();
    kv = (size_t)c->n_layers * max_seq * c->n_kv_heads * c->head_dim;
    s->k_cache = rlhi_malloc_aligned(64, kv * sizeof(float));
    s->v_cache = rlhi_malloc_aligned(64, kv * sizeof(float));
    s->rope_cos = rlhi_malloc((size_t)max_seq * half * sizeof(float));
    s->rope_sin = rlhi_malloc((size_t)max_seq * half * sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->rope_cos || !s->rope_sin) {
        rlhi_infer_free(s);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate a KV cache of %d "
                        "positions (%zu MiB)", max_seq,
                        kv * 2 * sizeof(float) >> 20);
    }

    /* Rotary table, computed with run.c's float expressions so that the
     * angles are bit-identical to llama2.c's. */
    for (p = 0; p < max_seq; p++)
        for (i = 0; i < (int)half; i++) {
            float freq = 1.0f / powf(c->rope_theta,
                                     (float)(2 * i) / (float)c->head_dim);
            float val = (float)p * freq;

            s->rope_cos[(size_t)p * half + i] = cosf(val);
            s->rope_sin[(size_t)p * half + i] = sinf(val);
        }
    *out = s;
    return 0;
}

void rlhi_infer_free(struct rlhi_infer *s)
{
    if (!s)
        return;
    free_scratch(s);
    rlhi_free(s->k_cache);
    rlhi_free(s->v_cache);
    rlhi_free(s->rope_cos);
    rlhi_free(s->rope_sin);
    rlhi_free(s->scores);
    rlhi_free(s->blk);
    rlhi_free(s);
}

int rlhi_infer_pos(const struct rlhi_infer *s)
{
    return s->pos;
}

int rlhi_infer_max_seq(const struct rlhi_infer *s)
{
    return s->max_seq;
}

void rlhi_infer_truncate(struct rlhi_infer *s, int pos)
{
    if (pos < 0)
        pos = 0;
    if (pos < s->pos)
        s->pos = pos;
}

int rlhi_infer_copy(struct rlhi_infer *dst, const struct rlhi_infer *src)
{
    const struct rlhi_model_config *c = &src->m->cfg;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    int l;

    if (dst->m != src->m)
        return rlhi_err(RLHI_EINVAL, "cannot copy a decoding state between "
                        "different models");
    if (src->pos > dst->max_seq)
        return rlhi_err(RLHI_ERANGE, "cannot copy %d positions into a "
                        "state of %d", src->pos, dst->max_seq);
    for (l = 0; l < c->n_layers; l++) {
        size_t so = (size_t)l * src->max_seq * kvd;
        size_t d = (size_t)l * dst->max_seq * kvd;
        size_t n = (size_t)src->pos * kvd * sizeof(float);

        memcpy(dst->k_cache + d, src->k_cache + so, n);
        memcpy(dst->v_cache + d, src->v_cache + so, n);
    }
    dst->pos = src->pos;
    return 0;
}

/* run.c's rmsnorm: float sum of squares, mean, + eps, 1/sqrt, scale. */
static void rmsnorm(float *o, const float *x, const float *w, int n,
                    float eps)
{
    float ss = 0.0f;
    int j;

    for (j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (j = 0; j < n; j++)
        o[j] = w[j] * (ss * x[j]);
}

/* Rotates one head vector (HS) at a position whose table rows are given. */
static void rope(float *v, int hs, const float *cs, const float *sn,
                 enum rlhi_rope_style style)
{
    int i, half = hs / 2;

    if (style == RLHI_ROPE_INTERLEAVED) {
        for (i = 0; i < half; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];

            v[2 * i] = v0 * cs[i] - v1 * sn[i];
            v[2 * i + 1] = v0 * sn[i] + v1 * cs[i];
        }
    } else {
        for (i = 0; i < half; i++) {
            float v0 = v[i], v1 = v[i + half];

            v[i] = v0 * cs[i] - v1 * sn[i];
            v[i + half] = v0 * sn[i] + v1 * cs[i];
        }
    }
}

static void add_bias(float *y, const float *b, int rows, int n)
{
    int r, j;

    if (!b)
        return;
    for (r = 0; r < rows; r++)
        for (j = 0; j < n; j++)
            y[(size_t)r * n + j] += b[j];
}

/* Attention of one query head for one row: scores over the row's cache,
 * softmax as run.c does it, weighted sum of values into `out` (HS). */
static void attend(float *out, const float *q, const float *kc,
                   const float *vc, int npos, int kvd, int hs, float *sc)
{
    float scale = sqrtf((float)hs), max, sum = 0.0f;
    int t, i;

    for (t = 0; t < npos; t++) {
        const float *k = kc + (size_t)t * kvd;
        float score = 0.0f;

        for (i = 0; i < hs; i++)
            score += q[i] * k[i];
        sc[t] = score / scale;
    }
    max = sc[0];
    for (t = 1; t < npos; t++)
        if (sc[t] > max)
            max = sc[t];
    for (t = 0; t < npos; t++) {
        sc[t] = expf(sc[t] - max);
        sum += sc[t];
    }
    for (t = 0; t < npos; t++)
        sc[t] /= sum;
    memset(out, 0, (size_t)hs * sizeof(float));
    for (t = 0; t < npos; t++) {
        const float *v = vc + (size_t)t * kvd;
        float a = sc[t];

        for (i = 0; i < hs; i++)
            out[i] += a * v[i];
    }
}

/* Attention for `n` consecutive positions p0..p0+n-1 of one sequence (a
 * prompt chunk), one head at a time as two matrix products:
 *     S = Q_h K_g^T / sqrt(HS)   (n, ctx), causal: row i sees 0..p0+i
 *     att_h = softmax(S) V_g     (n, HS)
 * where g is the head's kv group and ctx = p0 + n. Same mathematics as
 * attend(), with BLAS doing the sums, which is what makes long prompts
 * fast: the per-row loop spends most of a prefill in scalar dot
 * products. `S` is (NH, n, ctx) scratch. */
static void attend_block(float *att, const float *q, const float *kc,
                         const float *vc, int p0, int n, int NH, int group,
                         int HS, int KVD, float *S)
{
    const int QD = NH * HS, ctx = p0 + n;
    const float scale = 1.0f / sqrtf((float)HS);

#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < NH; h++) {
        const int g = h / group;
        float *sh = S + (size_t)h * n * ctx;

        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ctx, HS,
                    scale, q + h * HS, QD, kc + g * HS, KVD, 0.0f, sh, ctx);
        for (int i = 0; i < n; i++) {
            float *row = sh + (size_t)i * ctx, max, sum = 0.0f;
            int t, last = p0 + i;

            max = row[0];
            for (t = 1; t <= last; t++)
                if (row[t] > max)
                    max = row[t];
            for (t = 0; t <= last; t++) {
                row[t] = expf(row[t] - max);
                sum += row[t];
            }
            for (t = 0; t <= last; t++)
                row[t] /= sum;
            for (; t < ctx; t++)
                row[t] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HS, ctx,
                    1.0f, sh, ctx, vc + g * HS, KVD, 0.0f, att + h * HS, QD);
    }
}

/* Runs `n` rows through the model, using the scratch of `sc`. Logits of
 * the rows whose index is in `logit_rows` (nl of them) go to `logits`
 * (nl, V) in that order. */
static int forward_rows(struct rlhi_infer *sc, const struct row *rows,
                        const int32_t *tok, int n, float *logits,
                        const int *logit_rows, int nl, bool block)
{
    const struct rlhi_model *m = sc->m;
    const struct rlhi_model_config *c = &m->cfg;
    const int C = c->dim, F = c->hidden_dim, HS = c->head_dim;
    const int NH = c->n_heads, KVH = c->n_kv_heads;
    const int QD = NH * HS, KVD = KVH * HS, half = HS / 2;
    const int group = NH / KVH;
    double attn_work;
    int r, l, j, err;

    err = reserve_rows(sc, n);
    if (err)
        return err;
    for (r = 0, j = 0; r < n; r++)
        if (rows[r].pos + 1 > j)
            j = rows[r].pos + 1;
    attn_work = (double)n * NH * j * HS;
    if (block) {
        size_t need = (size_t)NH * n * j;

        if (need > sc->cap_blk) {
            float *p = rlhi_realloc(sc->blk, need * sizeof(float));

            if (!p)
                return rlhi_err(RLHI_ENOMEM, "cannot allocate attention "
                                "scores for %d tokens", n);
            sc->blk = p;
            sc->cap_blk = need;
        }
    }
    if (j > sc->cap_scores) {
        float *p = rlhi_realloc(sc->scores, (size_t)sc->n_threads * j *
                                                sizeof(float));

        if (!p)
            return rlhi_err(RLHI_ENOMEM, "cannot allocate attention scores");
        sc->scores = p;
        sc->cap_scores = j;
    }

    /* Token embeddings into the residual stream. */
    for (r = 0; r < n; r++) {
        if (tok[r] < 0 || tok[r] >= c->vocab_size)
            return rlhi_err(RLHI_EINVAL, "token id %d is outside the "
                            "vocabulary (0..%d)", tok[r], c->vocab_size - 1);
        memcpy(sc->x + (size_t)r * C,
               m->w.tok_embed + (size_t)tok[r] * C, C * sizeof(float));
    }

    for (l = 0; l < c->n_layers; l++) {
        const struct rlhi_layer_weights *w = &m->w.layers[l];

        /* Attention block: norm, projections, rotary, cache, attend. */
        for (r = 0; r < n; r++)
            rmsnorm(sc->xb + (size_t)r * C, sc->x + (size_t)r * C,
                    w->attn_norm, C, c->norm_eps);
        rlhi__matmul(sc->q, sc->xb, w->wq, n, C, QD);
        rlhi__matmul(sc->k, sc->xb, w->wk, n, C, KVD);
        rlhi__matmul(sc->v, sc->xb, w->wv, n, C, KVD);
        add_bias(sc->q, w->bq, n, QD);
        add_bias(sc->k, w->bk, n, KVD);
        add_bias(sc->v, w->bv, n, KVD);
        for (r = 0; r < n; r++) {
            struct rlhi_infer *s = rows[r].s;
            int p = rows[r].pos;
            const float *cs = s->rope_cos + (size_t)p * half;
            const float *sn = s->rope_sin + (size_t)p * half;
            size_t at = ((size_t)l * s->max_seq + p) * KVD;

            for (j = 0; j < NH; j++)
                rope(sc->q + (size_t)r * QD + j * HS, HS, cs, sn, c->rope);
            for (j = 0; j < KVH; j++)
                rope(sc->k + (size_t)r * KVD + j * HS, HS, cs, sn, c->rope);
            memcpy(s->k_cache + at, sc->k + (size_t)r * KVD,
                   KVD * sizeof(float));
            memcpy(s->v_cache + at, sc->v + (size_t)r * KVD,
                   KVD * sizeof(float));
        }
        if (block) {
            size_t base = (size_t)l * sc->max_seq * KVD;

            attend_block(sc->att, sc->q, sc->k_cache + base,
                         sc->v_cache + base, rows[0].pos, n, NH, group, HS,
                         KVD, sc->blk);
        } else {
#pragma omp parallel for schedule(dynamic, 1) if (attn_work > PAR_MIN_WORK)
        for (int rh = 0; rh < n * NH; rh++) {
            int rr = rh / NH, h = rh % NH;
            const struct rlhi_infer *s = rows[rr].s;
            size_t base = (size_t)l * s->max_seq * KVD + (h / group) * HS;

            attend(sc->att + (size_t)rr * QD + h * HS,
                   sc->q + (size_t)rr * QD + h * HS, s->k_cache + base,
                   s->v_cache + base, rows[rr].pos + 1, KVD, HS,
                   sc->scores + (size_t)omp_get_thread_num() * sc->cap_scores);
        }
        }
        rlhi__matmul(sc->xb, sc->att, w->wo, n, QD, C);
        for (j = 0; j < n * C; j++)
            sc->x[j] += sc->xb[j];

        /* Feed-forward block: norm, SwiGLU, down projection. */
        for (r = 0; r < n; r++)
            rmsnorm(sc->xb + (size_t)r * C, sc->x + (size_t)r * C,
                    w->ffn_norm, C, c->norm_eps);
        rlhi__matmul(sc->hb, sc->xb, w->w_gate, n, C, F);
        rlhi__matmul(sc->hb2, sc->xb, w->w_up, n, C, F);
        for (j = 0; j < n * F; j++) {
            float g = sc->hb[j];

            sc->hb[j] = g * (1.0f / (1.0f + expf(-g))) * sc->hb2[j];
        }
        rlhi__matmul(sc->xb, sc->hb, w->w_down, n, F, C);
        for (j = 0; j < n * C; j++)
            sc->x[j] += sc->xb[j];
    }

    /* Final norm and output head for the rows that want logits. */
    if (logits && nl > 0) {
        for (r = 0; r < nl; r++)
            rmsnorm(sc->xb + (size_t)r * C,
                    sc->x + (size_t)logit_rows[r] * C, m->w.final_norm, C,
                    c->norm_eps);
        rlhi__matmul(logits, sc->xb, m->w.lm_head, nl, C, c->vocab_size);
    }
    return 0;
}

int rlhi_infer_forward(struct rlhi_infer *s, const int32_t *tokens, int n,
                       float *logits, bool all_logits)
{
    struct row *rows;
    int *lr, nl, i, err;

    if (n <= 0)
        return rlhi_err(RLHI_EINVAL, "no tokens to run");
    if (s->pos + n > s->max_seq)
        return rlhi_err(RLHI_ERANGE, "sequence of %d tokens exceeds the "
                        "context of %d", s->pos + n, s->max_seq);
    rows = rlhi_malloc((size_t)n * sizeof *rows);
    lr = rlhi_malloc((size_t)n * sizeof *lr);
    if (!rows || !lr) {
        rlhi_free(rows);
        rlhi_free(lr);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate %d rows", n);
    }
    for (i = 0; i < n; i++) {
        rows[i].s = s;
        rows[i].pos = s->pos + i;
        lr[i] = i;
    }
    nl = all_logits ? n : 1;
    err = forward_rows(s, rows, tokens, n, logits, all_logits ? lr : lr + n - 1,
                       nl, n >= BLOCK_MIN_ROWS && !rlhi__kernels_ref());
    if (!err)
        s->pos += n;
    rlhi_free(rows);
    rlhi_free(lr);
    return err;
}

int rlhi_infer_forward_hidden(struct rlhi_infer *s, const int32_t *tokens,
                              int n, float *hidden)
{
    int err = rlhi_infer_forward(s, tokens, n, NULL, false);

    /* forward_rows leaves the rows' residual stream in the scratch */
    if (!err)
        rmsnorm(hidden, s->x + (size_t)(n - 1) * s->m->cfg.dim,
                s->m->w.final_norm, s->m->cfg.dim, s->m->cfg.norm_eps);
    return err;
}

int rlhi_infer_forward_batch(struct rlhi_infer **seqs, int nseq,
                             const int32_t *tokens, float *logits)
{
    struct row *rows;
    int *lr, i, err;

    if (nseq <= 0)
        return rlhi_err(RLHI_EINVAL, "no sequences to run");
    for (i = 0; i < nseq; i++) {
        if (seqs[i]->m != seqs[0]->m)
            return rlhi_err(RLHI_EINVAL, "batched sequences use different "
                            "models");
        if (seqs[i]->pos + 1 > seqs[i]->max_seq)
            return rlhi_err(RLHI_ERANGE, "sequence %d is full (%d "
                            "positions)", i, seqs[i]->max_seq);
    }
    rows = rlhi_malloc((size_t)nseq * sizeof *rows);
    lr = rlhi_malloc((size_t)nseq * sizeof *lr);
    if (!rows || !lr) {
        rlhi_free(rows);
        rlhi_free(lr);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate %d rows", nseq);
    }
    for (i = 0; i < nseq; i++) {
        rows[i].s = seqs[i];
        rows[i].pos = seqs[i]->pos;
        lr[i] = i;
    }
    err = forward_rows(seqs[0], rows, tokens, nseq, logits, lr, nseq, false);
    if (!err)
        for (i = 0; i < nseq; i++)
            seqs[i]->pos++;
    rlhi_free(rows);
    rlhi_free(lr);
    return err;
}
