/* DPO: pair data (persona, render, tokenize, truncate), micro-batches of
 * pairs with or without a shared prompt, the loss step, and the training
 * loop with logging and checkpoints.
 *
 * Rows of a micro-batch of n pairs (see dpo.h for the shared layout):
 *   two rows per pair   row 2i   = prompt | chosen
 *                       row 2i+1 = prompt | rejected
 *   shared              row i    = prompt | chosen | p_last rejected
 * Answer token j of a segment is predicted by the row position before it;
 * that position's target is the token, and slot[] maps it to 2i (chosen)
 * or 2i+1 (rejected), so rlhi_logp_sums() gives the summed log-probs.
 *
 * Gradient. d loss / d params = sum_s coef_s * d logp_s / d params with
 * coef_s = d loss / d logp_s from rlhi_dpo_loss(); rlhi_train_ce()
 * accumulates -sum_r w_r d logp_r, so w_r = -coef for each answer token.
 * The log-probs are needed first, so the head runs twice (once without
 * gradient): about a third more head work, but one backward pass.
 *
 * The head only runs on rows that have a target (answer positions): their
 * final hidden states are gathered into a compact block, t->out and
 * t->d_out point at it during rlhi_train_ce(), and the block's gradient
 * rows are scattered back. Prompt rows have no target, so this removes
 * the prompt's share of the head's work (V x C per row: at V = 32000 the
 * head is a quarter of a 124M model's FLOPs per token).
 *
 * Normalisation as TRL's Trainer: a micro-batch's loss is the mean over
 * its pairs, and each of the k micro-batches of an optimiser step counts
 * 1/k.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "rlhi/dpo.h"
#include "rlhi/generate.h"
#include "rlhi/jsonl.h"
#include "rlhi/reward.h"

void rlhi_dpo_config_init(struct rlhi_dpo_config *c)
{
    memset(c, 0, sizeof *c);
    rlhi_dpo_loss_parse(&c->loss, "sigmoid", NULL);
    c->learning_rate = 1e-6;
    c->num_train_epochs = 1;
    c->max_steps = -1;
    c->batch_size = 8;
    c->grad_accum = 1;
    c->max_length = 1024;
    c->seed = 42;
    c->max_grad_norm = 1.0;
    c->logging_steps = 10;
    c->save_steps = 500;
    c->precompute_ref = true;
#ifdef RLHI_TRAIN_HAS_PREFIX
    c->share = true;
#endif
    c->save_final = true;
}

/* ---- data ----------------------------------------------------------- */

int rlhi_dpo_data_add(struct rlhi_dpo_data *d, const int32_t *prompt,
                      int np, const int32_t *chosen, int nc,
                      const int32_t *rejected, int nr, float margin,
                      int max_length)
{
    struct rlhi_dpo_pair *p;
    int32_t *buf;

    if (np <= 0 || nc <= 0 || nr <= 0)
        return rlhi_err(RLHI_EINVAL, "empty prompt or answer (%d, %d, %d "
                        "tokens)", np, nc, nr);
    /* keep_start: drop when the prompt leaves no room for an answer */
    if (np >= max_length) {
        d->dropped++;
        return 1;
    }
    if (np + nc > max_length)
        nc = max_length - np;
    if (np + nr > max_length)
        nr = max_length - np;
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        void *q = rlhi_realloc(d->p, (size_t)cap * sizeof *d->p);

        if (!q)
            return rlhi_err(RLHI_ENOMEM, "cannot grow the DPO dataset");
        d->p = q;
        d->cap = cap;
    }
    buf = rlhi_malloc((size_t)(np + nc + nr) * sizeof *buf);
    if (!buf)
        return rlhi_err(RLHI_ENOMEM, "cannot store a DPO pair");
    p = &d->p[d->n++];
    p->prompt = buf;
    p->chosen = buf + np;
    p->rejected = buf + np + nc;
    memcpy(p->prompt, prompt, (size_t)np * sizeof *buf);
    memcpy(p->chosen, chosen, (size_t)nc * sizeof *buf);
    memcpy(p->rejected, rejected, (size_t)nr * sizeof *buf);
    p->np = np;
    p->nc = nc;
    p->nr = nr;
    p->margin = margin;
    return 0;
}

void rlhi_dpo_data_release(struct rlhi_dpo_data *d)
{
    for (int i = 0; i < d->n; i++)
        rlhi_free(d->p[i].prompt);
    rlhi_free(d->p);
    memset(d, 0, sizeof *d);
}

/* A copy of message `m` checked to have string role and content. */
static json_t *msg_copy(json_t *m, const char *what, size_t i)
{
    json_t *role = json_object_get(m, "role");
    json_t *content = json_object_get(m, "content");

    if (!json_is_string(role) || !json_is_string(content)) {
        rlhi_err(RLHI_EFORMAT, "%s message %zu needs string \"role\" and "
                 "\"content\"", what, i);
        return NULL;
    }
    return json_pack("{sOsO}", "role", role, "content", content);
}

json_t *rlhi_dpo_record_messages(json_t *rec, const char *answer_key,
                                 bool no_persona)
{
    json_t *prompt, *ans, *persona, *out = NULL, *msgs, *last;
    size_t i, n;

    if (!json_is_object(rec)) {
        rlhi_err(RLHI_EFORMAT, "expected a JSON object");
        return NULL;
    }
    prompt = json_object_get(rec, "prompt");
    if (!prompt)
        prompt = json_object_get(rec, "messages");
    ans = json_object_get(rec, answer_key);
    persona = json_object_get(rec, "persona");
    if (!json_is_array(prompt) || json_array_size(prompt) == 0) {
        rlhi_err(RLHI_EFORMAT, "expected a non-empty \"prompt\" message "
                 "list");
        return NULL;
    }
    /* the answer: a list whose last element is the assistant message, as
     * TRL's conversational format; a plain string is accepted too */
    if (json_is_array(ans) && json_array_size(ans) > 0)
        last = json_array_get(ans, json_array_size(ans) - 1);
    else if (json_is_string(ans))
        last = NULL;
    else {
        rlhi_err(RLHI_EFORMAT, "expected \"%s\": a non-empty message list",
                 answer_key);
        return NULL;
    }
    if (persona && !json_is_string(persona) && !json_is_null(persona)) {
        rlhi_err(RLHI_EFORMAT, "\"persona\" must be a string");
        return NULL;
    }
    msgs = json_array();
    out = json_pack("{so}", "messages", msgs);
    if (!msgs || !out)
        goto fail;
    n = json_array_size(prompt);
    for (i = 0; i < n; i++) {
        json_t *c = msg_copy(json_array_get(prompt, i), "prompt", i);

        if (!c)
            goto fail_quiet;
        if (json_array_append_new(msgs, c))
            goto fail;
    }

    /* The persona goes into the system message (see dpo.h). */
    if (!no_persona && json_is_string(persona) &&
        json_string_length(persona) > 0) {
        json_t *first = json_array_get(msgs, 0);
        const char *role = json_string_value(json_object_get(first, "role"));

        if (!strcmp(role, "system")) {
            const char *s = json_string_value(json_object_get(first,
                                                              "content"));
            json_t *c = json_sprintf("%s\n\n%s", json_string_value(persona),
                                     s);

            if (!c || json_object_set_new(first, "content", c))
                goto fail;
        } else {
            json_t *c = json_pack("{ssss}", "role", "system", "content",
                                  json_string_value(persona));

            if (!c || json_array_insert_new(msgs, 0, c))
                goto fail;
        }
    }
    {
        json_t *c;

        if (last) {
            const char *role = json_string_value(json_object_get(last,
                                                                 "role"));

            if (role && strcmp(role, "assistant")) {
                rlhi_err(RLHI_EFORMAT, "the last \"%s\" message has role "
                         "'%s', expected 'assistant'", answer_key, role);
                goto fail_quiet;
            }
            c = msg_copy(last, answer_key, json_array_size(ans) - 1);
            if (!c)
                goto fail_quiet;
        } else
            c = json_pack("{ssss}", "role", "assistant", "content",
                          json_string_value(ans));
        if (!c || json_array_append_new(msgs, c))
            goto fail;
    }
    return out;
fail:
    rlhi_err(RLHI_ENOMEM, "cannot build the conversation");
fail_quiet:
    json_decref(out);
    return NULL;
}

/* Tokens of one side: everything before the last assistant span is the
 * prompt, the span (with its end-of-turn marker) the answer. */
static int split_last(const struct toks *t, size_t *ps, size_t *pe)
{
    size_t e = t->n;

    while (e > 0 && !t->sc[e - 1])
        e--;
    if (e == 0)
        return rlhi_err(RLHI_EFORMAT, "the answer renders to no tokens");
    *pe = e;
    while (e > 0 && t->sc[e - 1])
        e--;
    *ps = e;
    return 0;
}

/* Tokenizes one record and adds it. 0, 1 dropped, or an error. */
static int one_pair(struct rlhi_dpo_data *d, json_t *rec,
                    const struct rlhi_tokenizer *tok, enum rlhi_chat_kind kind,
                    int max_length, bool no_persona, struct toks *tc,
                    struct toks *tr)
{
    json_t *mc, *mr, *mg;
    size_t cs, ce, rs, re;
    int r;

    mc = rlhi_dpo_record_messages(rec, "chosen", no_persona);
    if (!mc)
        return RLHI_EFORMAT;
    mr = rlhi_dpo_record_messages(rec, "rejected", no_persona);
    if (!mr) {
        json_decref(mc);
        return RLHI_EFORMAT;
    }
    r = rlhi__sft_example(mc, tok, kind, tc);
    if (!r)
        r = rlhi__sft_example(mr, tok, kind, tr);
    json_decref(mc);
    json_decref(mr);
    if (r)
        return r;
    r = split_last(tc, &cs, &ce);
    if (!r)
        r = split_last(tr, &rs, &re);
    if (r)
        return r;
    /* both sides must render the same prompt (they do unless a template
     * looks at the answer when writing what comes before it) */
    if (cs != rs || memcmp(tc->id, tr->id, cs * sizeof *tc->id))
        return rlhi_err(RLHI_EFORMAT, "chosen and rejected render different "
                        "prompts");
    mg = json_object_get(rec, "margin");
    if (mg && !json_is_number(mg))
        return rlhi_err(RLHI_EFORMAT, "\"margin\" must be a number");
    return rlhi_dpo_data_add(d, tc->id, (int)cs, tc->id + cs, (int)(ce - cs),
                             tr->id + rs, (int)(re - rs),
                             mg ? (float)json_number_value(mg) : 0.0f,
                             max_length);
}

int rlhi_dpo_data_load(struct rlhi_dpo_data *d, const char *path,
                       const struct rlhi_tokenizer *tok,
                       enum rlhi_chat_kind kind, int max_length,
                       bool no_persona)
{
    struct rlhi_jsonl *rd = NULL;
    struct toks tc = {0}, tr = {0};
    json_t *root;
    int r;

    r = rlhi_jsonl_open(&rd, path);
    if (r)
        return r;
    while ((r = rlhi__next_record(rd, &root, &d->skipped)) > 0) {
        r = one_pair(d, root, tok, kind, max_length, no_persona, &tc, &tr);
        json_decref(root);
        if (r == RLHI_ENOMEM)
            goto out;
        if (r < 0)
            rlhi__skip_record(path, rd, &d->skipped);
    }
    if (r < 0)
        goto out;
    r = 0;
    if (d->dropped)
        rlhi_warn("%s: %lld pairs dropped: the prompt alone is longer than "
                  "max_length %d", path, (long long)d->dropped, max_length);
    if (d->n == 0)
        r = rlhi_err(RLHI_EFORMAT, "no usable pair in '%s' (%lld records "
                     "skipped, %lld too long)", path, (long long)d->skipped,
                     (long long)d->dropped);
out:
    rlhi_free(tc.id);
    rlhi_free(tc.sc);
    rlhi_free(tr.id);
    rlhi_free(tr.sc);
    rlhi_jsonl_close(rd);
    return r;
}

/* ---- micro-batches -------------------------------------------------- */

static int row_len(const struct rlhi_dpo_pair *p, bool share, int side)
{
    if (share)
        return p->np + p->nc + 1 + p->nr;
    return p->np + (side ? p->nr : p->nc);
}

void rlhi_dpo_batch_shape(const struct rlhi_dpo_data *d, int batch,
                          bool share, int *B, int *T)
{
    int t = 1;

    for (int i = 0; i < d->n; i++) {
        int a = row_len(&d->p[i], share, 0), b = row_len(&d->p[i], share, 1);

        t = a > t ? a : t;
        t = b > t ? b : t;
    }
    batch = batch < d->n ? batch : (d->n > 0 ? d->n : 1);
    *B = share ? batch : 2 * batch;
    *T = t;
}

/* Buffers of one micro-batch, (B, T) each. */
struct mb {
    int B, T, cap;
    int32_t *tok, *tgt, *seg, *pos, *pre, *slot;
    float *w, *logp;
    /* the rows with a target, compacted (nsc of them) */
    int nsc;
    int32_t *rows, *ctgt, *cslot; /* (nsc) row, target, slot */
    float *cout, *cdout;          /* (nsc, C) hidden states, gradients */
    size_t ccap;                  /* floats in cout (and in cdout) */
};

static void mb_release(struct mb *b)
{
    rlhi_free(b->tok);
    rlhi_free(b->cout);
    memset(b, 0, sizeof *b);
}

static int mb_reserve(struct mb *b, int n)
{
    int32_t *blk;

    if (n <= b->cap)
        return 0;
    rlhi_free(b->tok);
    /* one block: nine int32 arrays and two float arrays */
    blk = rlhi_malloc((size_t)n * 11 * sizeof(int32_t));
    if (!blk) {
        b->tok = NULL;
        b->cap = 0;
        return rlhi_err(RLHI_ENOMEM, "cannot allocate DPO batches (%d "
                        "tokens)", n);
    }
    b->tok = blk;
    b->tgt = blk + n;
    b->seg = blk + 2 * (size_t)n;
    b->pos = blk + 3 * (size_t)n;
    b->pre = blk + 4 * (size_t)n;
    b->slot = blk + 5 * (size_t)n;
    b->w = (float *)(blk + 6 * (size_t)n);
    b->logp = (float *)(blk + 7 * (size_t)n);
    b->rows = blk + 8 * (size_t)n;
    b->ctgt = blk + 9 * (size_t)n;
    b->cslot = blk + 10 * (size_t)n;
    b->cap = n;
    return 0;
}

/* The output head on the rows with a target (file head). `w` NULL:
 * gathers those rows and writes their log-probs to b->logp (compact
 * order; slots in b->cslot). Otherwise the backward pass with weights w
 * (compact order): the head's gradient accumulates in t->grad and the
 * rows' d_out is added into t->d_out. */
static int head_pass(struct rlhi_train *t, struct mb *b, const float *w)
{
    const size_t C = (size_t)t->m->cfg.dim;
    float *out = t->out, *dout = t->d_out;
    int nB = t->nB, nT = t->nT, r, k;

    if (!w) {
        b->nsc = 0;
        for (int i = 0; i < b->B * b->T; i++)
            if (b->tgt[i] >= 0) {
                b->rows[b->nsc] = i;
                b->ctgt[b->nsc] = b->tgt[i];
                b->cslot[b->nsc] = b->slot[i];
                b->nsc++;
            }
        if (b->nsc == 0)
            return rlhi_err(RLHI_EINVAL, "a DPO batch without answer "
                            "tokens");
        if ((size_t)b->nsc * C > b->ccap) {
            rlhi_free(b->cout);
            b->ccap = (size_t)b->nsc * C;
            b->cout = rlhi_malloc(2 * b->ccap * sizeof(float));
            if (!b->cout) {
                b->ccap = 0;
                return rlhi_err(RLHI_ENOMEM, "cannot allocate the answer "
                                "rows");
            }
            b->cdout = b->cout + b->ccap;
        }
        for (k = 0; k < b->nsc; k++)
            memcpy(b->cout + k * C, out + (size_t)b->rows[k] * C,
                   C * sizeof(float));
    } else
        memset(b->cdout, 0, (size_t)b->nsc * C * sizeof(float));

    t->out = b->cout;
    t->d_out = b->cdout;
    t->nB = 1;
    t->nT = b->nsc;
    r = rlhi_train_ce(t, b->ctgt, w, w != NULL, NULL, w ? NULL : b->logp);
    t->out = out;
    t->d_out = dout;
    t->nB = nB;
    t->nT = nT;
    if (!r && w)
        for (k = 0; k < b->nsc; k++) {
            float *d = dout + (size_t)b->rows[k] * C;
            const float *s = b->cdout + k * C;

            for (size_t j = 0; j < C; j++)
                d[j] += s[j];
        }
    return r;
}

/* Writes `n` answer tokens starting at column `at` of row `row`, with the
 * targets on the column before each. */
static void put_answer(struct mb *b, int row, int at, const int32_t *a,
                       int n, int slot)
{
    int32_t *tk = b->tok + (size_t)row * b->T;
    int32_t *tg = b->tgt + (size_t)row * b->T;
    int32_t *sl = b->slot + (size_t)row * b->T;

    for (int j = 0; j < n; j++) {
        tk[at + j] = a[j];
        tg[at + j - 1] = a[j];
        sl[at + j - 1] = slot;
    }
}

/* Lays pairs idx[0..n) out as rows (layout in the file head). Returns
 * the tokens that are not padding, or RLHI_EINVAL when the rows do not
 * fit the buffers. */
static int64_t mb_build(struct mb *b, const struct rlhi_dpo_data *d,
                        const int *idx, int n, bool share)
{
    int64_t ntok = 0;
    int i, r, T = 1;

    for (i = 0; i < n; i++)
        for (int s = 0; s < 2; s++) {
            int l = row_len(&d->p[idx[i]], share, s);

            T = l > T ? l : T;
        }
    if ((int64_t)(share ? n : 2 * n) * T > b->cap)
        return rlhi_err(RLHI_EINVAL, "%d pairs of up to %d tokens do not "
                        "fit the training state", n, T);
    b->B = share ? n : 2 * n;
    b->T = T;
    for (r = 0; r < b->B * T; r++) {
        b->tok[r] = 0;
        b->tgt[r] = -1;
        b->seg[r] = -1;
        b->pos[r] = 0;
        b->pre[r] = 0;
        b->slot[r] = -1;
    }
    for (i = 0; i < n; i++) {
        const struct rlhi_dpo_pair *p = &d->p[idx[i]];

        for (int s = 0; s < (share ? 1 : 2); s++) {
            int row = share ? i : 2 * i + s, na = s ? p->nr : p->nc, c;
            size_t o = (size_t)row * T;

            /* prompt, then the first (or only) answer, one segment */
            memcpy(b->tok + o, p->prompt, (size_t)p->np * sizeof *b->tok);
            put_answer(b, row, p->np, s ? p->rejected : p->chosen, na,
                       2 * i + s);
            for (c = 0; c < p->np + na; c++) {
                b->seg[o + c] = 0;
                b->pos[o + c] = c;
            }
            ntok += p->np + na;
            if (!share)
                continue;

            /* the rejected segment: last prompt token + answer, reading
             * the first np-1 prompt tokens through the prefix */
            c = p->np + p->nc;
            b->tok[o + c] = p->prompt[p->np - 1];
            put_answer(b, row, c + 1, p->rejected, p->nr, 2 * i + 1);
            for (int j = 0; j <= p->nr; j++) {
                b->seg[o + c + j] = 1;
                b->pos[o + c + j] = p->np - 1 + j;
                b->pre[o + c + j] = p->np - 1;
            }
            ntok += 1 + p->nr;
        }
    }
    return ntok;
}

/* Forward of the batch in `b` through t->m. */
static int mb_forward(struct rlhi_train *t, const struct mb *b, bool share)
{
    struct rlhi_batch bt = {b->B, b->T, b->tok, b->seg, b->pos};

#ifdef RLHI_TRAIN_HAS_PREFIX
    return rlhi_train_forward_prefix(t, &bt, share ? b->pre : NULL);
#else
    if (share)
        return rlhi_err(RLHI_ENOTIMPL, "not implemented: prefix sharing "
                        "needs prefix attention in the training engine");
    return rlhi_train_forward(t, &bt);
#endif
}

/* Micro-batch capacity in pairs of a training state. */
static int pairs_fit(const struct rlhi_train *t, bool share)
{
    return share ? t->B : t->B / 2;
}

int rlhi_dpo_logps(struct rlhi_train *t, struct rlhi_model *m,
                   const struct rlhi_dpo_data *d, const int *idx, int n,
                   bool share, double *lc, double *lr)
{
    struct rlhi_model *keep = t->m;
    struct mb b = {0};
    int *all = NULL, fit = pairs_fit(t, share), r = 0, i;
    double *sums = NULL;

    if (fit < 1)
        return rlhi_err(RLHI_EINVAL, "training state too small for a pair");
    if (!idx) {
        all = rlhi_malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
        if (!all)
            return rlhi_err(RLHI_ENOMEM, "cannot allocate pair indices");
        for (i = 0; i < n; i++)
            all[i] = i;
        idx = all;
    }
    sums = rlhi_malloc((size_t)2 * fit * sizeof *sums);
    r = sums ? mb_reserve(&b, t->B * t->T)
             : rlhi_err(RLHI_ENOMEM, "cannot allocate log-prob sums");
    t->m = m;
    for (i = 0; i < n && !r; i += fit) {
        int k = n - i < fit ? n - i : fit;

        r = mb_build(&b, d, idx + i, k, share) < 0 ? RLHI_EINVAL : 0;
        if (!r)
            r = mb_forward(t, &b, share);
        if (!r)
            r = head_pass(t, &b, NULL);
        if (r)
            break;
        rlhi_logp_sums(b.logp, b.cslot, b.nsc, sums, 2 * k);
        for (int j = 0; j < k; j++) {
            lc[i + j] = sums[2 * j];
            lr[i + j] = sums[2 * j + 1];
        }
    }
    t->m = keep;
    mb_release(&b);
    rlhi_free(sums);
    rlhi_free(all);
    return r;
}

int rlhi_dpo_micro_step(struct rlhi_train *t, const struct rlhi_dpo_data *d,
                        const int *idx, int n, const double *ref_c,
                        const double *ref_r,
                        const struct rlhi_dpo_loss_cfg *lc, double scale,
                        bool share, struct rlhi_dpo_metrics *mt)
{
    struct rlhi_dpo_logps *lp = NULL;
    struct mb b = {0};
    double *sums = NULL, *dpc = NULL, *dpr = NULL, loss;
    int64_t ntok;
    int r, i;

    if (n < 1 || n > pairs_fit(t, share))
        return rlhi_err(RLHI_EINVAL, "%d pairs do not fit a micro-batch of "
                        "%d", n, pairs_fit(t, share));
    r = mb_reserve(&b, t->B * t->T);
    if (r)
        return r;
    sums = rlhi_malloc((size_t)4 * n * sizeof *sums);
    lp = rlhi_malloc((size_t)n * sizeof *lp);
    if (!sums || !lp) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate DPO sums");
        goto out;
    }
    dpc = sums + 2 * n;
    dpr = sums + 3 * n;

    /* Policy forward and the answers' summed log-probs. */
    ntok = mb_build(&b, d, idx, n, share);
    r = ntok < 0 ? (int)ntok : mb_forward(t, &b, share);
    if (!r)
        r = head_pass(t, &b, NULL);
    if (r)
        goto out;
    rlhi_logp_sums(b.logp, b.cslot, b.nsc, sums, 2 * n);
    for (i = 0; i < n; i++) {
        lp[i].pc = sums[2 * i];
        lp[i].pr = sums[2 * i + 1];
        lp[i].rc = ref_c[i];
        lp[i].rr = ref_r[i];
        lp[i].nc = d->p[idx[i]].nc;
        lp[i].nr = d->p[idx[i]].nr;
    }

    /* Loss, per-sequence coefficients, and the backward pass. */
    loss = rlhi_dpo_loss(lc, lp, n, dpc, dpr);
    if (!isfinite(loss)) {
        r = rlhi_err(RLHI_ENUMERIC, "DPO loss is not finite (%g)", loss);
        goto out;
    }
    for (i = 0; i < b.nsc; i++) {
        int s = b.cslot[i];

        b.w[i] = (float)(-scale * (s & 1 ? dpr[s / 2] : dpc[s / 2]));
    }
    r = head_pass(t, &b, b.w);
    if (!r)
        r = rlhi_train_backward(t);
    if (r)
        goto out;

    if (mt) {
        double beta = lc->beta;

        memset(mt, 0, sizeof *mt);
        mt->loss = loss;
        for (i = 0; i < n; i++) {
            double rc = beta * (lp[i].pc - lp[i].rc);
            double rr = beta * (lp[i].pr - lp[i].rr);

            mt->reward_chosen += rc / n;
            mt->reward_rejected += rr / n;
            mt->margin += (rc - rr) / n;
            mt->accuracy += (rc > rr ? 1.0 : 0.0) / n;
            mt->logps_chosen += lp[i].pc / n;
            mt->logps_rejected += lp[i].pr / n;
        }
        mt->pairs = n;
        mt->tokens = ntok;
    }
out:
    mb_release(&b);
    rlhi_free(sums);
    rlhi_free(lp);
    return r;
}

/* ---- reference log-probs and their cache ---------------------------- */

#define REF_MAGIC "RLHIREF1"

/* SHA-256 of what the reference log-probs depend on. */
static void ref_key(const struct rlhi_dpo_data *d, const struct rlhi_model *ref,
                    int max_length, uint8_t key[32])
{
    struct rlhi_sha256 s;
    int32_t hdr[3];

    rlhi_sha256_init(&s);
    rlhi_sha256_update(&s, REF_MAGIC, 8);
    hdr[0] = max_length;
    hdr[1] = d->n;
    hdr[2] = (int32_t)ref->cfg.rope;
    rlhi_sha256_update(&s, hdr, sizeof hdr);
    for (int i = 0; i < d->n; i++) {
        const struct rlhi_dpo_pair *p = &d->p[i];
        int32_t n3[3] = {p->np, p->nc, p->nr};

        rlhi_sha256_update(&s, n3, sizeof n3);
        rlhi_sha256_update(&s, p->prompt,
                           (size_t)(p->np + p->nc + p->nr) * sizeof(int32_t));
    }
    rlhi_sha256_update(&s, &ref->cfg, sizeof ref->cfg);
    rlhi_sha256_update(&s, ref->params, ref->n_params * sizeof(float));
    rlhi_sha256_final(&s, key);
}

static char *cache_path(const char *dir, const uint8_t key[32])
{
    char name[64];
    int i;

    memcpy(name, "ref_logps-", 10);
    for (i = 0; i < 8; i++)
        snprintf(name + 10 + 2 * i, 3, "%02x", key[i]);
    strcpy(name + 26, ".bin");
    return rlhi_path_join(dir, name);
}

/* Reads the cache into ref (2n doubles: chosen, rejected per pair); 0 on
 * a hit, 1 on a miss or a stale file. */
static int cache_read(const char *path, const uint8_t key[32], int n,
                      double *ref)
{
    char *data = NULL;
    size_t len, want = 8 + 4 + 32 + (size_t)n * 2 * sizeof(double);
    int32_t nn;
    int r = 1;

    if (!rlhi_path_exists(path) || rlhi_file_read(path, &data, &len))
        return 1;
    if (len == want && !memcmp(data, REF_MAGIC, 8)) {
        memcpy(&nn, data + 8, 4);
        if (nn == n && !memcmp(data + 12, key, 32)) {
            memcpy(ref, data + 44, (size_t)n * 2 * sizeof(double));
            r = 0;
        }
    }
    if (r)
        rlhi_warn("ignoring stale reference cache '%s'", path);
    rlhi_free(data);
    return r;
}

static int cache_write(const char *path, const uint8_t key[32], int n,
                       const double *ref)
{
    size_t len = 8 + 4 + 32 + (size_t)n * 2 * sizeof(double);
    char *data = rlhi_malloc(len);
    int32_t nn = n;
    int r;

    if (!data)
        return rlhi_err(RLHI_ENOMEM, "cannot write the reference cache");
    memcpy(data, REF_MAGIC, 8);
    memcpy(data + 8, &nn, 4);
    memcpy(data + 12, key, 32);
    memcpy(data + 44, ref, (size_t)n * 2 * sizeof(double));
    r = rlhi_file_write_atomic(path, data, len);
    rlhi_free(data);
    return r;
}

/* Reference log-probs of every pair into ref_c, ref_r: from the cache
 * when it matches, else computed with `ref` (and cached). */
static int reference_logps(struct rlhi_train *t, struct rlhi_model *ref,
                           const struct rlhi_dpo_data *d,
                           const struct rlhi_dpo_config *cfg, double *ref_c,
                           double *ref_r, bool *hit)
{
    uint8_t key[32];
    double *both = rlhi_malloc((size_t)d->n * 2 * sizeof *both);
    char *path = NULL;
    double t0 = rlhi_time_now();
    int r = 0, i;

    *hit = false;
    if (!both)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate reference log-probs");
    if (cfg->precompute_ref) {
        const char *dir = cfg->ref_cache_dir ? cfg->ref_cache_dir
                                             : cfg->output_dir;

        ref_key(d, ref, cfg->max_length, key);
        r = rlhi_mkdir_p(dir);
        path = r ? NULL : cache_path(dir, key);
        if (!r && !path)
            r = rlhi_err(RLHI_ENOMEM, "cannot name the reference cache");
        if (!r && cache_read(path, key, d->n, both) == 0) {
            *hit = true;
            rlhi_info("dpo: reference log-probs of %d pairs read from the "
                      "cache '%s'", d->n, path);
            goto done;
        }
    }
    if (r)
        goto fail;
    r = rlhi_dpo_logps(t, ref, d, NULL, d->n, cfg->share, ref_c, ref_r);
    if (r)
        goto fail;
    for (i = 0; i < d->n; i++) {
        both[2 * i] = ref_c[i];
        both[2 * i + 1] = ref_r[i];
    }
    rlhi_info("dpo: reference log-probs of %d pairs computed in %.1f s",
              d->n, rlhi_time_now() - t0);
    if (path) {
        r = cache_write(path, key, d->n, both);
        if (r)
            goto fail;
        rlhi_info("dpo: reference log-probs cached in '%s'", path);
    }
done:
    for (i = 0; i < d->n; i++) {
        ref_c[i] = both[2 * i];
        ref_r[i] = both[2 * i + 1];
    }
fail:
    rlhi_free(path);
    rlhi_free(both);
    return r;
}

/* ---- the loop ------------------------------------------------------- */

static int check_config(const struct rlhi_dpo_config *c)
{
    if (!c->output_dir || !*c->output_dir)
        return rlhi_err(RLHI_EINVAL, "dpo needs an output directory");
    if (c->batch_size < 1 || c->grad_accum < 1 || c->max_length < 2)
        return rlhi_err(RLHI_EINVAL, "invalid batch settings: batch size "
                        "%d, accumulation %d, max length %d", c->batch_size,
                        c->grad_accum, c->max_length);
    if (!(c->learning_rate >= 0) || !(c->warmup_ratio >= 0) ||
        !(c->weight_decay >= 0) ||
        !(c->num_train_epochs > 0 || c->max_steps > 0))
        return rlhi_err(RLHI_EINVAL, "invalid optimiser settings: learning "
                        "rate %g, warmup ratio %g, weight decay %g, epochs "
                        "%g", c->learning_rate, c->warmup_ratio,
                        c->weight_decay, c->num_train_epochs);
    if (!(c->loss.beta > 0) || c->loss.n < 1 ||
        !(c->loss.label_smoothing >= 0 && c->loss.label_smoothing < 0.5))
        return rlhi_err(RLHI_EINVAL, "invalid loss settings: beta %g, "
                        "label smoothing %g (need beta > 0, 0 <= ls < 0.5)",
                        c->loss.beta, c->loss.label_smoothing);
    return 0;
}

static int log_metrics(const char *path, const struct rlhi_dpo_metrics *m,
                       double gnorm, double lr, int64_t ntok, double epoch,
                       int64_t step)
{
    return rlhi__append_line(
        path, "{\"loss\": %.6g, \"rewards/chosen\": %.6g, "
              "\"rewards/rejected\": %.6g, \"rewards/margins\": %.6g, "
              "\"rewards/accuracies\": %.6g, \"logps/chosen\": %.6g, "
              "\"logps/rejected\": %.6g, \"grad_norm\": %.6g, "
              "\"learning_rate\": %.6g, \"num_tokens\": %lld, "
              "\"epoch\": %.4f, \"step\": %lld}\n", m->loss,
        m->reward_chosen, m->reward_rejected, m->margin, m->accuracy,
        m->logps_chosen, m->logps_rejected, gnorm, lr, (long long)ntok,
        epoch, (long long)step);
}

/* Adds batch metrics `b` into the window sum `w` (pair-weighted). */
static void metrics_add(struct rlhi_dpo_metrics *w,
                        const struct rlhi_dpo_metrics *b, double k)
{
    w->loss += k * b->loss;
    w->reward_chosen += k * b->reward_chosen;
    w->reward_rejected += k * b->reward_rejected;
    w->margin += k * b->margin;
    w->accuracy += k * b->accuracy;
    w->logps_chosen += k * b->logps_chosen;
    w->logps_rejected += k * b->logps_rejected;
    w->tokens += b->tokens;
}

static void metrics_scale(struct rlhi_dpo_metrics *w, double k)
{
    w->loss *= k;
    w->reward_chosen *= k;
    w->reward_rejected *= k;
    w->margin *= k;
    w->accuracy *= k;
    w->logps_chosen *= k;
    w->logps_rejected *= k;
}

static int save_dir(const char *dir, const struct rlhi_dpo_config *cfg,
                    const struct rlhi_model *m, const struct rlhi_adamw *o,
                    const struct rlhi_trainer_state *st)
{
    int r = rlhi_checkpoint_save(dir, m, o, st);

    if (!r)
        r = rlhi__copy_tokenizer(cfg->copy_from, dir);
    if (!r)
        rlhi_info("saved '%s'", dir);
    return r;
}

int rlhi_dpo_train(struct rlhi_model *m, const struct rlhi_dpo_data *d,
                   const struct rlhi_dpo_config *cfg,
                   struct rlhi_dpo_result *res)
{
    struct rlhi_train *t = NULL;
    struct rlhi_model *ref_mem = NULL;
    struct rlhi_adamw opt = {0};
    struct rlhi_trainer_state st;
    struct rlhi_progress prog;
    struct rlhi_dpo_metrics win;
    struct rlhi_dpo_config unshared;
    int *perm = NULL, B, T, bs = cfg->batch_size, r;
    double *ref_c = NULL, *ref_r = NULL, *rc_mb = NULL, *rr_mb = NULL;
    char *metrics = NULL;
    int64_t steps_per_epoch, warmup, win_steps = 0;
    double t0 = rlhi_time_now();
    bool prog_on = false;

    memset(res, 0, sizeof *res);
    memset(&st, 0, sizeof st);
    memset(&win, 0, sizeof win);
    r = check_config(cfg);
    if (r)
        return r;
    if (d->n == 0)
        return rlhi_err(RLHI_EINVAL, "no DPO pairs to train on");
    r = rlhi_model_own(m);
    if (r)
        return r;
    /* A shared row (prompt | chosen | rejected) is longer than either of
     * the two rows it replaces; when it would not fit the model's context,
     * every pair takes two rows (the same losses, more prompt tokens). */
    if (cfg->share) {
        rlhi_dpo_batch_shape(d, bs, true, &B, &T);
        if (T > m->cfg.max_seq_len) {
            rlhi_info("dpo: with a shared prompt the longest pair needs %d "
                      "positions, more than the model's context of %d; "
                      "each pair takes two rows instead", T,
                      m->cfg.max_seq_len);
            unshared = *cfg;
            unshared.share = false;
            cfg = &unshared;
        }
    }

    steps_per_epoch = rlhi__schedule(d->n, bs, cfg->grad_accum,
                                     cfg->max_steps, cfg->num_train_epochs,
                                     cfg->warmup_ratio, &st.total_steps,
                                     &warmup);
    st.seed = cfg->seed;
    st.rope = m->cfg.rope;

    perm = rlhi_malloc((size_t)d->n * sizeof *perm);
    ref_c = rlhi_malloc((size_t)d->n * 2 * sizeof *ref_c);
    rc_mb = rlhi_malloc((size_t)bs * 2 * sizeof *rc_mb);
    metrics = rlhi_path_join(cfg->output_dir, "metrics.jsonl");
    if (!perm || !ref_c || !rc_mb || !metrics) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate DPO state");
        goto out;
    }
    ref_r = ref_c + d->n;
    rr_mb = rc_mb + bs;
    r = rlhi_mkdir_p(cfg->output_dir);
    if (r)
        goto out;
    rlhi_dpo_batch_shape(d, bs, cfg->share, &B, &T);
    r = rlhi_train_new(&t, m, B, T);
    if (r)
        goto out;

    /* Reference: log-probs once (cached), or a copy kept in memory and run
     * every step as TRL does without precompute_ref_log_probs. */
    if (cfg->precompute_ref) {
        r = reference_logps(t, cfg->ref_model
                                   ? (struct rlhi_model *)cfg->ref_model
                                   : m, d, cfg, ref_c, ref_r,
                            &res->ref_cache_hit);
    } else {
        const struct rlhi_model *src = cfg->ref_model ? cfg->ref_model : m;

        r = rlhi_model_new(&ref_mem, &src->cfg);
        if (!r)
            memcpy(ref_mem->params, src->params,
                   src->n_params * sizeof(float));
    }
    if (r)
        goto out;
    r = rlhi_adamw_init(&opt, m->n_params, &m->cfg);
    if (r)
        goto out;
    rlhi__epoch_order(perm, d->n, st.seed, st.epoch, &st.rng);

    rlhi_info("dpo: %d pairs, %lld steps (%lld per epoch), batch %d x %d "
              "accumulation, rows %d x %d (%s), loss %s beta %g", d->n,
              (long long)st.total_steps, (long long)steps_per_epoch, bs,
              cfg->grad_accum, B, T, cfg->share ? "shared prompt"
                                                : "two rows per pair",
              rlhi_dpo_loss_name(cfg->loss.kind[0]), cfg->loss.beta);
    rlhi_progress_start(&prog, "dpo", (uint64_t)st.total_steps);
    prog_on = true;

    while (st.step < st.total_steps) {
        int64_t r0 = st.row;
        int mb, nmicro = 0;
        double loss = 0, lr, gnorm;

        for (mb = 0; mb < cfg->grad_accum && r0 < d->n; mb++) {
            r0 += d->n - r0 < bs ? d->n - r0 : bs;
            nmicro++;
        }

        rlhi_train_zero_grad(t);
        for (mb = 0; mb < nmicro; mb++) {
            int nb = d->n - (int)st.row < bs ? d->n - (int)st.row : bs;
            const int *idx = perm + st.row;
            const double *rc = rc_mb, *rr = rr_mb;
            struct rlhi_dpo_metrics bm;

            if (ref_mem) {
                r = rlhi_dpo_logps(t, ref_mem, d, idx, nb, cfg->share,
                                   rc_mb, rr_mb);
                if (r)
                    goto out;
            } else
                for (int i = 0; i < nb; i++) {
                    rc_mb[i] = ref_c[idx[i]];
                    rr_mb[i] = ref_r[idx[i]];
                }
            r = rlhi_dpo_micro_step(t, d, idx, nb, rc, rr, &cfg->loss,
                                    1.0 / nmicro, cfg->share, &bm);
            if (r == RLHI_ENUMERIC) {
                r = rlhi_err(RLHI_ENUMERIC, "step %lld: %s; stopping "
                             "without saving", (long long)st.step + 1,
                             rlhi_errmsg());
                goto out;
            }
            if (r)
                goto out;
            loss += bm.loss / nmicro;
            metrics_add(&win, &bm, (double)nb);
            win.pairs += nb;
            st.num_tokens += bm.tokens;
            st.row += nb;
        }

        gnorm = rlhi_grad_norm(t->grad.params, m->n_params);
        r = rlhi__check_grad_norm(gnorm, st.step);
        if (r)
            goto out;
        lr = rlhi_lr_cosine(cfg->learning_rate, st.step, warmup,
                            st.total_steps);
        rlhi_adamw_step(&opt, m->params, t->grad.params, (float)lr,
                        (float)cfg->weight_decay,
                        rlhi_clip_coef(gnorm, cfg->max_grad_norm));
        st.step++;
        res->last_loss = loss;
        win_steps++;
        if (st.row >= d->n) {
            st.epoch++;
            st.row = 0;
            rlhi__epoch_order(perm, d->n, st.seed, st.epoch, &st.rng);
        }

        if (rlhi__is_log_step(st.step, cfg->logging_steps,
                              st.total_steps)) {
            double ep = (double)st.step / (double)steps_per_epoch;

            metrics_scale(&win, 1.0 / (win.pairs ? win.pairs : 1));
            rlhi_info("step %lld/%lld: loss %.4f rewards/chosen %.4f "
                      "rewards/rejected %.4f rewards/margins %.4f "
                      "rewards/accuracies %.3f logps/chosen %.2f "
                      "logps/rejected %.2f grad_norm %.4f learning_rate "
                      "%.3g num_tokens %lld epoch %.2f",
                      (long long)st.step, (long long)st.total_steps,
                      win.loss, win.reward_chosen, win.reward_rejected,
                      win.margin, win.accuracy, win.logps_chosen,
                      win.logps_rejected, gnorm, lr,
                      (long long)st.num_tokens, ep);
            r = log_metrics(metrics, &win, gnorm, lr, st.num_tokens, ep,
                            st.step);
            if (r)
                goto out;
            res->last = win;
            memset(&win, 0, sizeof win);
            win_steps = 0;
        }
        if (rlhi__is_save_step(st.step, cfg->save_steps, st.total_steps)) {
            char *dir = NULL;

            r = rlhi__checkpoint_dir(cfg->output_dir, st.step, &dir);
            if (!r)
                r = save_dir(dir, cfg, m, &opt, &st);
            rlhi_free(dir);
            if (r)
                goto out;
        }
        rlhi_progress_update(&prog, (uint64_t)st.step);
    }
    (void)win_steps;

    if (cfg->save_final)
        r = save_dir(cfg->output_dir, cfg, m, &opt, &st);
out:
    if (prog_on)
        rlhi_progress_finish(&prog);
    res->steps = st.step;
    res->num_tokens = st.num_tokens;
    res->seconds = rlhi_time_now() - t0;
    rlhi_train_free(t);
    rlhi_model_free(ref_mem);
    rlhi_adamw_release(&opt);
    rlhi_free(perm);
    rlhi_free(ref_c);
    rlhi_free(rc_mb);
    rlhi_free(metrics);
    return r;
}

/* ---- iterative DPO -------------------------------------------------- */

void rlhi_dpo_iter_config_init(struct rlhi_dpo_iter_config *c)
{
    memset(c, 0, sizeof *c);
    c->iterations = 1;
    c->num_candidates = 4;
    c->max_new_tokens = 128;
    c->temperature = 1.0;
    c->top_p = 1.0;
}

/* True when prompt i equals an earlier one (the same prompt paired
 * several times is sampled once per round). */
static bool seen_prompt(const struct rlhi_dpo_data *d, int i)
{
    for (int j = 0; j < i; j++)
        if (d->p[j].np == d->p[i].np &&
            !memcmp(d->p[j].prompt, d->p[i].prompt,
                    (size_t)d->p[i].np * sizeof(int32_t)))
            return true;
    return false;
}

/* One round's pairs: sample, score, best vs worst. */
static int round_pairs(struct rlhi_model *m, const struct rlhi_tokenizer *tok,
                       struct rlhi_reward *rm,
                       const struct rlhi_dpo_data *prompts,
                       const struct rlhi_dpo_iter_config *ic, uint64_t seed,
                       int max_length, struct rlhi_dpo_data *out)
{
    const int N = ic->num_candidates;
    struct rlhi_gen_result *res = rlhi_calloc((size_t)N, sizeof *res);
    int32_t **seqs = rlhi_calloc((size_t)N, sizeof *seqs);
    int *lens = rlhi_calloc((size_t)N, sizeof *lens);
    double *score = rlhi_calloc((size_t)N, sizeof *score);
    struct rlhi_gen_opts go;
    int r = 0, same = 0, small = 0;

    if (!res || !seqs || !lens || !score) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate candidates");
        goto out;
    }
    rlhi_gen_opts_default(&go);
    go.sampler.temperature = (float)ic->temperature;
    go.sampler.top_p = (float)ic->top_p;
    go.max_tokens = ic->max_new_tokens;
    for (int i = 0; i < prompts->n && !r; i++) {
        const struct rlhi_dpo_pair *p = &prompts->p[i];
        int32_t eot = p->chosen[p->nc - 1];
        int best = 0, worst = 0;

        if (seen_prompt(prompts, i))
            continue;
        go.stop_ids = &eot;
        go.n_stop_ids = 1;
        go.sampler.seed = seed + (uint64_t)i * (uint64_t)N;
        r = rlhi_generate_n(m, tok, p->prompt, p->np, &go, NULL, N, res);
        if (r)
            break;

        /* [prompt | answer | eot] for each candidate, scored */
        for (int j = 0; j < N && !r; j++) {
            int n = p->np + res[j].n_tokens + 1;

            seqs[j] = rlhi_malloc((size_t)n * sizeof **seqs);
            if (!seqs[j]) {
                r = rlhi_err(RLHI_ENOMEM, "cannot store a candidate");
                break;
            }
            memcpy(seqs[j], p->prompt, (size_t)p->np * sizeof **seqs);
            memcpy(seqs[j] + p->np, res[j].tokens,
                   (size_t)res[j].n_tokens * sizeof **seqs);
            seqs[j][n - 1] = eot;
            lens[j] = n;
        }
        if (!r)
            r = rlhi_reward_score(rm, (const int32_t *const *)seqs, lens, N,
                                  score);
        for (int j = 1; j < N && !r; j++) {
            best = score[j] > score[best] ? j : best;
            worst = score[j] < score[worst] ? j : worst;
        }
        if (!r) {
            if (lens[best] == lens[worst] &&
                !memcmp(seqs[best], seqs[worst],
                        (size_t)lens[best] * sizeof **seqs))
                same++;
            else if (score[best] - score[worst] < ic->min_margin)
                small++;
            else {
                r = rlhi_dpo_data_add(out, p->prompt, p->np,
                                      seqs[best] + p->np,
                                      lens[best] - p->np,
                                      seqs[worst] + p->np,
                                      lens[worst] - p->np,
                                      (float)(score[best] - score[worst]),
                                      max_length);
                r = r > 0 ? 0 : r;
            }
        }
        for (int j = 0; j < N; j++) {
            rlhi_free(seqs[j]);
            seqs[j] = NULL;
            rlhi_gen_result_release(&res[j]);
        }
    }
    if (!r)
        rlhi_info("dpo: round pairs: %d kept, %d identical, %d below "
                  "min_margin %g", out->n, same, small, ic->min_margin);
out:
    rlhi_free(res);
    rlhi_free(seqs);
    rlhi_free(lens);
    rlhi_free(score);
    return r;
}

int rlhi_dpo_iterate(struct rlhi_model *m, const struct rlhi_tokenizer *tok,
                     struct rlhi_reward *rm,
                     const struct rlhi_dpo_data *prompts,
                     const struct rlhi_dpo_config *cfg,
                     const struct rlhi_dpo_iter_config *ic,
                     struct rlhi_dpo_result *res)
{
    struct rlhi_model *orig = NULL;
    struct rlhi_dpo_result rr;
    int r, k;

    memset(res, 0, sizeof *res);
    if (ic->iterations < 1 || ic->num_candidates < 2 ||
        ic->max_new_tokens < 1)
        return rlhi_err(RLHI_EINVAL, "iterative dpo needs iterations >= 1, "
                        "num_candidates >= 2, max_new_tokens >= 1 (got %d, "
                        "%d, %d)", ic->iterations, ic->num_candidates,
                        ic->max_new_tokens);
    if (!cfg->output_dir)
        return rlhi_err(RLHI_EINVAL, "dpo needs an output directory");
    r = rlhi_model_own(m);
    if (!r)
        r = rlhi_model_new(&orig, &m->cfg);
    if (r)
        return r;
    memcpy(orig->params, m->params, m->n_params * sizeof(float));

    for (k = 1; k <= ic->iterations && !r; k++) {
        struct rlhi_dpo_data round = {0};
        struct rlhi_dpo_config c = *cfg;
        char name[64], *dir;

        rlhi_info("dpo: iteration %d/%d: sampling %d answers per prompt",
                  k, ic->iterations, ic->num_candidates);
        r = round_pairs(m, tok, rm, prompts, ic,
                        cfg->seed * 1000003ULL + (uint64_t)k * 7919ULL,
                        cfg->max_length, &round);
        if (!r && round.n == 0)
            r = rlhi_err(RLHI_EINVAL, "iteration %d: no pair survived the "
                         "filters (identical answers or reward margin "
                         "below %g)", k, ic->min_margin);
        snprintf(name, sizeof name, "iteration-%d", k);
        dir = r ? NULL : rlhi_path_join(cfg->output_dir, name);
        if (!r && !dir)
            r = rlhi_err(RLHI_ENOMEM, "cannot name the round's directory");
        if (!r) {
            c.output_dir = dir;
            c.ref_model = orig;
            if (!c.ref_cache_dir)
                c.ref_cache_dir = cfg->output_dir;
            r = rlhi_dpo_train(m, &round, &c, &rr);
            if (!r) {
                res->steps += rr.steps;
                res->num_tokens += rr.num_tokens;
                res->seconds += rr.seconds;
                res->last_loss = rr.last_loss;
                res->last = rr.last;
            }
        }
        rlhi_free(dir);
        rlhi_dpo_data_release(&round);
    }
    if (!r && cfg->save_final) {
        r = rlhi_model_save_hf(m, cfg->output_dir, false);
        if (!r)
            r = rlhi__copy_tokenizer(cfg->copy_from, cfg->output_dir);
    }
    rlhi_model_free(orig);
    return r;
}
