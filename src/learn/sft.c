/* Supervised fine-tuning: data preparation (render, tokenize, mark the
 * assistant tokens) and the training loop with logging, checkpoints and
 * exact resume.
 *
 * Rows. Without packing each example is one row. With packing, examples
 * are laid end to end, in data order, into rows of at most max_length
 * tokens (an example that does not fit starts a new row); each keeps its
 * own segment id, so attention stays inside it and its positions restart
 * at 0. The rows are made once; each epoch visits them in an order drawn
 * from a generator seeded by (seed, epoch), so a resumed run rebuilds the
 * same order from the saved epoch and row.
 *
 * Targets. Token t of a segment is trained to predict token t+1 when t+1
 * is in the same segment and is scored (part of an assistant answer).
 * Every scored target of the micro-batches that make one optimiser step
 * weighs 1 / (their count), so the step's loss is the mean over them.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "learn/learn_internal.h"
#include "rlhi/jsonl.h"
#include "rlhi/sft.h"
#include "rlhi/train.h"

void rlhi_sft_config_init(struct rlhi_sft_config *c)
{
    memset(c, 0, sizeof *c);
    c->learning_rate = 2e-5;
    c->num_train_epochs = 3;
    c->max_steps = -1;
    c->batch_size = 8;
    c->grad_accum = 1;
    c->max_length = 1024;
    c->seed = 42;
    c->max_grad_norm = 1.0;
    c->logging_steps = 10;
    c->save_steps = 500;
    c->save_final = true;
}

/* ---- data ----------------------------------------------------------- */

int rlhi_sft_data_add(struct rlhi_sft_data *d, const int32_t *tokens,
                      const uint8_t *scored, int n)
{
    struct rlhi_sft_example *e;

    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        void *p = rlhi_realloc(d->ex, (size_t)cap * sizeof *d->ex);

        if (!p)
            return rlhi_err(RLHI_ENOMEM, "cannot grow the SFT dataset");
        d->ex = p;
        d->cap = cap;
    }
    e = &d->ex[d->n];
    e->n = n;
    e->tokens = rlhi_malloc((size_t)(n ? n : 1) * sizeof *e->tokens);
    e->scored = rlhi_malloc((size_t)(n ? n : 1));
    if (!e->tokens || !e->scored) {
        rlhi_free(e->tokens);
        rlhi_free(e->scored);
        return rlhi_err(RLHI_ENOMEM, "cannot store an SFT example");
    }
    memcpy(e->tokens, tokens, (size_t)n * sizeof *tokens);
    memcpy(e->scored, scored, (size_t)n);
    d->n++;
    return 0;
}

void rlhi_sft_data_release(struct rlhi_sft_data *d)
{
    for (int i = 0; i < d->n; i++) {
        rlhi_free(d->ex[i].tokens);
        rlhi_free(d->ex[i].scored);
    }
    rlhi_free(d->ex);
    memset(d, 0, sizeof *d);
}

/* struct toks: learn/learn_internal.h (shared with dpo.c, reward.c). */

static int toks_add(struct toks *t, const int32_t *ids, size_t n, int sc)
{
    if (t->n + n > t->cap) {
        size_t cap = (t->n + n) * 2 + 16;
        int32_t *a = rlhi_realloc(t->id, cap * sizeof *a);
        uint8_t *b;

        if (!a)
            return RLHI_ENOMEM;
        t->id = a;
        b = rlhi_realloc(t->sc, cap);
        if (!b)
            return RLHI_ENOMEM;
        t->sc = b;
        t->cap = cap;
    }
    memcpy(t->id + t->n, ids, n * sizeof *ids);
    memset(t->sc + t->n, sc, n);
    t->n += n;
    return 0;
}

/* Renders and tokenizes one conversation into `out`. 0, RLHI_EFORMAT
 * (message says what is wrong with the record) or RLHI_ENOMEM. */
int rlhi__sft_example(json_t *root, const struct rlhi_tokenizer *tok,
                      enum rlhi_chat_kind kind, struct toks *out)
{
    json_t *msgs = json_is_object(root) ? json_object_get(root, "messages")
                                        : NULL;
    struct rlhi_chat_msg *cm = NULL;
    struct rlhi_chat_span *sp = NULL;
    struct rlhi_buf text = RLHI_BUF_INIT;
    size_t n, i, ns = 0, at = 0;
    int r = 0;

    out->n = 0;
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return rlhi_err(RLHI_EFORMAT, "expected a non-empty \"messages\" "
                        "array");
    n = json_array_size(msgs);
    cm = rlhi_calloc(n, sizeof *cm);
    sp = rlhi_calloc(n, sizeof *sp);
    if (!cm || !sp) {
        r = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");

        if (!json_is_string(role) || !json_is_string(content)) {
            r = rlhi_err(RLHI_EFORMAT, "message %zu needs string \"role\" "
                         "and \"content\"", i);
            goto out;
        }
        cm[i].role = json_string_value(role);
        cm[i].content = json_string_value(content);
    }
    r = rlhi_chat_render(kind, cm, n, NULL, &text, sp, &ns);
    if (r)
        goto out;
    if (ns == 0) {
        r = rlhi_err(RLHI_EFORMAT, "no assistant message to train on");
        goto out;
    }

    /* BOS when the tokenizer wants one and the template did not write
     * it (llama3.1's template writes "<|begin_of_text|>" itself). */
    if (rlhi_tokenizer_wants_bos(tok) && rlhi_tokenizer_bos(tok) >= 0) {
        int32_t bos = rlhi_tokenizer_bos(tok), *first = NULL;
        size_t nf = 0;

        if (rlhi_tokenizer_encode(tok, text.buf, text.len < 64 ? text.len
                                                               : 64,
                                  RLHI_ENC_SPECIAL, &first, &nf) == 0 &&
            (nf == 0 || first[0] != bos))
            r = toks_add(out, &bos, 1, 0);
        rlhi_free(first);
        if (r)
            goto out;
    }
    /* Pieces between span boundaries, tokenized one by one: the
     * boundaries fall on template markers, where byte-level BPE does not
     * merge across. */
    for (i = 0; i <= ns; i++) {
        size_t stops[2], k;

        stops[0] = i < ns ? sp[i].start : text.len;
        stops[1] = i < ns ? sp[i].eot_end : text.len;
        for (k = 0; k < 2; k++) {
            int32_t *ids = NULL;
            size_t nid = 0;

            if (stops[k] <= at)
                continue;
            r = rlhi_tokenizer_encode(tok, text.buf + at, stops[k] - at,
                                      RLHI_ENC_SPECIAL, &ids, &nid);
            if (!r)
                r = toks_add(out, ids, nid, (int)k);
            rlhi_free(ids);
            if (r)
                goto out;
            at = stops[k];
        }
    }
out:
    rlhi_free(cm);
    rlhi_free(sp);
    rlhi_buf_release(&text);
    return r;
}

int rlhi_sft_data_load(struct rlhi_sft_data *d, const char *path,
                       const struct rlhi_tokenizer *tok,
                       enum rlhi_chat_kind kind, int max_length)
{
    struct rlhi_jsonl *rd = NULL;
    struct toks t = {0};
    json_t *root;
    int r;

    r = rlhi_jsonl_open(&rd, path);
    if (r)
        return r;
    while ((r = rlhi__next_record(rd, &root, &d->skipped)) > 0) {
        r = rlhi__sft_example(root, tok, kind, &t);
        json_decref(root);
        if (r == RLHI_ENOMEM)
            goto out;
        if (r) {
            rlhi__skip_record(path, rd, &d->skipped);
            continue;
        }
        r = rlhi_sft_data_add(d, t.id, t.sc,
                              (int)(t.n < (size_t)max_length
                                        ? t.n : (size_t)max_length));
        if (r)
            goto out;
    }
    if (r < 0)
        goto out;
    r = 0;
    if (d->n == 0)
        r = rlhi_err(RLHI_EFORMAT, "no usable conversation in '%s' (%lld "
                     "lines skipped)", path, (long long)d->skipped);
out:
    rlhi_free(t.id);
    rlhi_free(t.sc);
    rlhi_jsonl_close(rd);
    return r;
}

/* ---- rows and batches ----------------------------------------------- */

/* A row: examples [first, first + count), laid end to end. */
struct row {
    int first, count, len;
};

static int make_rows(const struct rlhi_sft_data *d, int max_len, bool pack,
                     struct row **out, int *nrows)
{
    struct row *rows = rlhi_malloc((size_t)d->n * sizeof *rows);
    int i, n = 0;

    if (!rows)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate %d rows", d->n);
    for (i = 0; i < d->n; i++) {
        int len = d->ex[i].n < max_len ? d->ex[i].n : max_len;

        if (len <= 0)
            continue;
        if (pack && n > 0 && rows[n - 1].len + len <= max_len &&
            rows[n - 1].first + rows[n - 1].count == i) {
            rows[n - 1].count++;
            rows[n - 1].len += len;
            continue;
        }
        rows[n].first = i;
        rows[n].count = 1;
        rows[n].len = len;
        n++;
    }
    *out = rows;
    *nrows = n;
    return 0;
}

/* Builds micro-batch (B, T) from rows perm[at .. at+nb). Padding has
 * token 0, its own segment and no target. Returns scored targets; adds
 * real tokens to *ntok. */
static int fill_batch(const struct rlhi_sft_data *d, const struct row *rows,
                      const int *perm, int at, int nb, int T, int max_len,
                      int32_t *tok, int32_t *tgt, int32_t *seg,
                      int64_t *ntok)
{
    int b, scored = 0;

    for (b = 0; b < nb; b++) {
        const struct row *rw = &rows[perm[at + b]];
        int32_t *tk = tok + (size_t)b * T, *tg = tgt + (size_t)b * T;
        int32_t *sg = seg + (size_t)b * T;
        int t = 0, e, i;

        for (e = 0; e < rw->count; e++) {
            const struct rlhi_sft_example *ex = &d->ex[rw->first + e];
            int len = ex->n < max_len ? ex->n : max_len;

            for (i = 0; i < len; i++, t++) {
                tk[t] = ex->tokens[i];
                sg[t] = e;
                tg[t] = i + 1 < len && ex->scored[i + 1] ? ex->tokens[i + 1]
                                                         : -1;
                scored += tg[t] >= 0;
            }
        }
        *ntok += t;
        for (; t < T; t++) {
            tk[t] = 0;
            sg[t] = -1;
            tg[t] = -1;
        }
    }
    return scored;
}

/* ---- saving --------------------------------------------------------- */

/* Tokenizer and template files a saved model needs to be usable. */
static const char *const tok_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "chat_template.jinja", "generation_config.json",
    NULL,
};

int rlhi__copy_tokenizer(const char *from, const char *to)
{
    int i, r = 0;

    if (!from)
        return 0;
    for (i = 0; tok_files[i] && !r; i++) {
        char *src = rlhi_path_join(from, tok_files[i]);
        char *dst = rlhi_path_join(to, tok_files[i]);
        char *data = NULL;
        size_t len;

        if (!src || !dst)
            r = rlhi_err(RLHI_ENOMEM, "cannot copy tokenizer files");
        else if (rlhi_path_exists(src)) {
            r = rlhi_file_read(src, &data, &len);
            if (!r)
                r = rlhi_file_write_atomic(dst, data, len);
        }
        rlhi_free(data);
        rlhi_free(src);
        rlhi_free(dst);
    }
    return r;
}

static int save_checkpoint(const struct rlhi_sft_config *cfg,
                           const struct rlhi_model *m,
                           const struct rlhi_adamw *o,
                           const struct rlhi_trainer_state *st)
{
    char *dir;
    int r;

    r = rlhi__checkpoint_dir(cfg->output_dir, st->step, &dir);
    if (r)
        return r;
    r = rlhi_checkpoint_save(dir, m, o, st);
    if (!r)
        r = rlhi__copy_tokenizer(cfg->copy_from, dir);
    if (!r)
        rlhi_info("saved checkpoint '%s'", dir);
    rlhi_free(dir);
    return r;
}

/* Appends one metrics line to output_dir/metrics.jsonl. */
static int log_metrics(const char *path, double loss, double gnorm,
                       double lr, int64_t ntok, double epoch, int64_t step)
{
    return rlhi__append_line(path, "{\"loss\": %.6g, \"grad_norm\": %.6g, "
                             "\"learning_rate\": %.6g, \"num_tokens\": "
                             "%lld, \"epoch\": %.4f, \"step\": %lld}\n",
                             loss, gnorm, lr, (long long)ntok, epoch,
                             (long long)step);
}

/* ---- the loop ------------------------------------------------------- */

static int check_config(const struct rlhi_sft_config *c)
{
    if (!c->output_dir || !*c->output_dir)
        return rlhi_err(RLHI_EINVAL, "sft needs an output directory");
    if (c->batch_size < 1 || c->grad_accum < 1 || c->max_length < 2)
        return rlhi_err(RLHI_EINVAL, "invalid batch settings: batch size "
                        "%d, accumulation %d, max length %d (need >= 1, "
                        ">= 1, >= 2)", c->batch_size, c->grad_accum,
                        c->max_length);
    if (!(c->learning_rate >= 0) || !(c->warmup_ratio >= 0) ||
        !(c->weight_decay >= 0) || !(c->num_train_epochs > 0 ||
                                     c->max_steps > 0))
        return rlhi_err(RLHI_EINVAL, "invalid optimiser settings: learning "
                        "rate %g, warmup ratio %g, weight decay %g, epochs "
                        "%g", c->learning_rate, c->warmup_ratio,
                        c->weight_decay, c->num_train_epochs);
    return 0;
}

int rlhi_sft_train(struct rlhi_model *m, const struct rlhi_sft_data *d,
                   const struct rlhi_sft_config *cfg,
                   struct rlhi_sft_result *res)
{
    struct rlhi_train *t = NULL;
    struct rlhi_adamw opt = {0};
    struct rlhi_trainer_state st;
    struct rlhi_progress prog;
    struct row *rows = NULL;
    int *perm = NULL, nrows = 0, B = cfg->batch_size, T, r;
    int32_t *tok = NULL, *tgt = NULL, *seg = NULL;
    float *w = NULL;
    char *metrics = NULL;
    int64_t steps_per_epoch, warmup;
    double t0 = rlhi_time_now(), gnorm = 0;
    bool prog_on = false;

    memset(res, 0, sizeof *res);
    memset(&st, 0, sizeof st);
    r = check_config(cfg);
    if (r)
        return r;
    if (d->n == 0)
        return rlhi_err(RLHI_EINVAL, "no SFT examples to train on");
    r = rlhi_model_own(m);
    if (r)
        return r;
    r = make_rows(d, cfg->max_length, cfg->packing, &rows, &nrows);
    if (r)
        return r;
    if (nrows == 0) {
        r = rlhi_err(RLHI_EINVAL, "every SFT example is empty");
        goto out;
    }

    /* Schedule length, from the epochs unless max_steps is given. */
    steps_per_epoch = rlhi__schedule(nrows, B, cfg->grad_accum,
                                     cfg->max_steps, cfg->num_train_epochs,
                                     cfg->warmup_ratio, &st.total_steps,
                                     &warmup);
    st.seed = cfg->seed;
    st.rope = m->cfg.rope;

    /* Buffers: T is the longest row (packing fills rows up to it). */
    T = 0;
    for (int i = 0; i < nrows; i++)
        T = rows[i].len > T ? rows[i].len : T;
    perm = rlhi_malloc((size_t)nrows * sizeof *perm);
    tok = rlhi_malloc((size_t)B * T * sizeof *tok);
    tgt = rlhi_malloc((size_t)B * T * sizeof *tgt);
    seg = rlhi_malloc((size_t)B * T * sizeof *seg);
    w = rlhi_malloc((size_t)B * T * sizeof *w);
    metrics = rlhi_path_join(cfg->output_dir, "metrics.jsonl");
    if (!perm || !tok || !tgt || !seg || !w || !metrics) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate SFT batches");
        goto out;
    }
    r = rlhi_mkdir_p(cfg->output_dir);
    if (r)
        goto out;

    /* Start fresh or from a checkpoint. */
    if (cfg->resume_from) {
        struct rlhi_model *cm = NULL;
        struct rlhi_trainer_state saved;

        r = rlhi_checkpoint_load(cfg->resume_from, &cm, &opt, &saved);
        if (r)
            goto out;
        if (cm->n_params != m->n_params || cm->cfg.rope != m->cfg.rope) {
            rlhi_model_free(cm);
            r = rlhi_err(RLHI_EINVAL, "checkpoint '%s' does not match the "
                         "model being trained", cfg->resume_from);
            goto out;
        }
        memcpy(m->params, cm->params, m->n_params * sizeof(float));
        rlhi_model_free(cm);
        if (saved.seed != cfg->seed || saved.total_steps != st.total_steps)
            rlhi_warn("resuming '%s' with a different seed or length than "
                      "it was saved with (seed %llu, %lld steps)",
                      cfg->resume_from, (unsigned long long)saved.seed,
                      (long long)saved.total_steps);
        st = saved;
        rlhi_info("resuming from '%s' at step %lld", cfg->resume_from,
                  (long long)st.step);
    } else {
        r = rlhi_adamw_init(&opt, m->n_params, &m->cfg);
        if (r)
            goto out;
    }
    r = rlhi_train_new(&t, m, B, T);
    if (r)
        goto out;
    rlhi__epoch_order(perm, nrows, st.seed, st.epoch, &st.rng);

    rlhi_info("sft: %d examples in %d rows of up to %d tokens, %lld steps "
              "(%lld per epoch), batch %d x %d accumulation", d->n, nrows,
              T, (long long)st.total_steps, (long long)steps_per_epoch, B,
              cfg->grad_accum);
    rlhi_progress_start(&prog, "sft", (uint64_t)st.total_steps);
    rlhi_progress_update(&prog, (uint64_t)st.step);
    prog_on = true;

    while (st.step < st.total_steps) {
        int64_t r0 = st.row, ntok = 0;
        int mb, nmicro = 0, scored = 0;
        double loss = 0, lr;

        /* Count the scored targets of this step's micro-batches, which
         * never cross an epoch boundary. */
        for (mb = 0; mb < cfg->grad_accum && r0 < nrows; mb++) {
            int nb = nrows - (int)r0 < B ? nrows - (int)r0 : B;
            int64_t dummy = 0;

            scored += fill_batch(d, rows, perm, (int)r0, nb, T,
                                 cfg->max_length, tok, tgt, seg, &dummy);
            r0 += nb;
            nmicro++;
        }

        /* Forward, loss and backward of each micro-batch. */
        rlhi_train_zero_grad(t);
        for (mb = 0; mb < nmicro; mb++) {
            int nb = nrows - (int)st.row < B ? nrows - (int)st.row : B;
            int Tb = 0;
            double l = 0;

            for (int b = 0; b < nb; b++) {
                int len = rows[perm[st.row + b]].len;

                Tb = len > Tb ? len : Tb;
            }
            fill_batch(d, rows, perm, (int)st.row, nb, Tb, cfg->max_length,
                       tok, tgt, seg, &ntok);
            for (int i = 0; i < nb * Tb; i++)
                w[i] = tgt[i] >= 0 ? 1.0f / (float)scored : 0.0f;
            {
                struct rlhi_batch b = {nb, Tb, tok, seg, NULL};

                r = rlhi_train_forward(t, &b);
            }
            if (!r)
                r = rlhi_train_ce(t, tgt, w, true, &l, NULL);
            if (r == RLHI_ENUMERIC) {
                r = rlhi_err(RLHI_ENUMERIC, "step %lld: loss is not finite "
                             "(%g); stopping without saving",
                             (long long)st.step + 1, l);
                goto out;
            }
            if (!r)
                r = rlhi_train_backward(t);
            if (r)
                goto out;
            loss += l;
            st.row += nb;
        }
        if (cfg->nan_at_step && st.step + 1 == cfg->nan_at_step)
            t->grad.params[0] = NAN;

        /* Clip, check, update. */
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
        st.num_tokens += ntok;
        st.log_loss += loss;
        st.log_steps++;
        res->last_loss = loss;

        /* Next epoch: a new order. */
        if (st.row >= nrows) {
            st.epoch++;
            st.row = 0;
            rlhi__epoch_order(perm, nrows, st.seed, st.epoch, &st.rng);
        }

        if (rlhi__is_log_step(st.step, cfg->logging_steps,
                              st.total_steps)) {
            double ml = st.log_loss / (double)st.log_steps;
            double ep = (double)st.step / (double)steps_per_epoch;

            rlhi_info("step %lld/%lld: loss %.4f grad_norm %.4f "
                      "learning_rate %.3g num_tokens %lld epoch %.2f",
                      (long long)st.step, (long long)st.total_steps, ml,
                      gnorm, lr, (long long)st.num_tokens, ep);
            r = log_metrics(metrics, ml, gnorm, lr, st.num_tokens, ep,
                            st.step);
            if (r)
                goto out;
            st.log_loss = 0;
            st.log_steps = 0;
        }
        if (rlhi__is_save_step(st.step, cfg->save_steps, st.total_steps)) {
            r = save_checkpoint(cfg, m, &opt, &st);
            if (r)
                goto out;
        }
        rlhi_progress_update(&prog, (uint64_t)st.step);
        if (cfg->stop_after && st.step == cfg->stop_after)
            break;
    }

    /* The final model, unless stopped early for a test. */
    if (st.step == st.total_steps && cfg->save_final) {
        r = rlhi_checkpoint_save(cfg->output_dir, m, &opt, &st);
        if (!r)
            r = rlhi__copy_tokenizer(cfg->copy_from, cfg->output_dir);
        if (!r)
            rlhi_info("saved the model to '%s'", cfg->output_dir);
    }
out:
    if (prog_on)
        rlhi_progress_finish(&prog);
    res->steps = st.step;
    res->num_tokens = st.num_tokens;
    res->seconds = rlhi_time_now() - t0;
    rlhi_train_free(t);
    rlhi_adamw_release(&opt);
    rlhi_free(rows);
    rlhi_free(perm);
    rlhi_free(tok);
    rlhi_free(tgt);
    rlhi_free(seg);
    rlhi_free(w);
    rlhi_free(metrics);
    return r;
}
