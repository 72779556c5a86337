/* Generation: prefill a prompt once, then sample N candidates step by step
 * with one batched forward per step, streaming text and applying stop
 * rules. rlhi_generate() is the N = 1 case of the same loop, so a
 * candidate of rlhi_generate_n() and a single run with the same seed take
 * the same path.
 *
 * Budget. `budget` is how many tokens each candidate may sample and `size`
 * how many positions its KV cache holds. The last sampled token is never
 * run through the model, so size = n_prompt + budget - 1. In llama2c mode
 * run.c's loop runs positions 0..steps-1 and samples at each position from
 * the prompt's last on, so budget = steps - n_prompt + 1 and size = steps.
 *
 * Stop strings. Text that might be the start of a stop string is held back
 * from the callback until it is known not to be; a candidate's text is cut
 * before the first stop string found. Every byte before `emitted` was
 * checked not to begin one, so the search starts at `emitted`.
 */
#include "rlhi/generate.h"

#include <string.h>

struct cand {
    struct rlhi_infer *s;
    struct rlhi_sampler smp;
    int prev;              /* last token in the context, for pieces */
    bool done;
    struct rlhi_buf text;
    size_t emitted;        /* bytes of text already given to the callback */
    int32_t *toks;         /* (budget) sampled ids */
    int ntoks;
    enum rlhi_finish finish;
    int stop_token;
};

void rlhi_gen_opts_default(struct rlhi_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    rlhi_sampler_params_default(&o->sampler);
    o->max_tokens = 256;
}

void rlhi_gen_result_release(struct rlhi_gen_result *r)
{
    rlhi_free(r->tokens);
    rlhi_free(r->text);
    memset(r, 0, sizeof *r);
}

/* run.c's safe_printf: how many bytes of a piece it prints. It skips an
 * empty piece and a single byte that is neither printable nor whitespace
 * (isprint/isspace in the C locale run.c runs in), and printf("%s") stops
 * at a NUL. */
static size_t l2c_visible(const char *p, size_t len)
{
    if (len == 0 || p[0] == 0)
        return 0;
    if (len == 1) {
        unsigned char c = (unsigned char)p[0];
        bool print = c >= 0x20 && c <= 0x7e;
        bool space = c == ' ' || (c >= '\t' && c <= '\r');

        if (!print && !space)
            return 0;
    }
    return strnlen(p, len);
}

/* Whether text[i..len) is a proper prefix of some stop string. */
static bool stop_prefix(const struct rlhi_gen_opts *o, const char *text,
                        size_t i, size_t len)
{
    int k;

    for (k = 0; k < o->n_stop; k++) {
        size_t sl = strlen(o->stop[k]);

        if (sl > len - i && !memcmp(text + i, o->stop[k], len - i))
            return true;
    }
    return false;
}

/* Gives the callback text[emitted..upto). Returns true when it asks to
 * stop. */
static bool emit(const struct rlhi_gen_opts *o, int seq, struct cand *c,
                 size_t upto)
{
    bool stop = false;

    if (upto > c->emitted && o->on_piece)
        stop = o->on_piece(seq, c->text.buf + c->emitted, upto - c->emitted,
                           o->user) != 0;
    c->emitted = upto;
    return stop;
}

/* Appends a piece to candidate `seq`'s text, cuts at a stop string, and
 * streams what is safe to show. Sets c->done and c->finish when the
 * candidate stops. 0 or RLHI_ENOMEM. */
static int add_text(const struct rlhi_gen_opts *o, int seq, struct cand *c,
                    const char *piece, size_t len)
{
    size_t hold, best = SIZE_MAX;
    int k, err;

    if (o->llama2c)
        len = l2c_visible(piece, len);
    if (len == 0)
        return 0;
    err = rlhi_buf_add(&c->text, piece, len);
    if (err)
        return rlhi_err(err, "cannot grow the generated text");
    if (o->n_stop == 0)
        goto show_all;

    /* A complete stop string ends the candidate, cut before it. */
    for (k = 0; k < o->n_stop; k++) {
        size_t sl = strlen(o->stop[k]);
        const char *hit;

        if (sl == 0)
            continue;
        hit = memmem(c->text.buf + c->emitted, c->text.len - c->emitted,
                     o->stop[k], sl);
        if (hit && (size_t)(hit - c->text.buf) < best)
            best = (size_t)(hit - c->text.buf);
    }
    if (best != SIZE_MAX) {
        c->text.len = best;
        c->text.buf[best] = 0;
        c->done = true;
        c->finish = RLHI_FINISH_STOP;
        if (emit(o, seq, c, best))
            c->finish = RLHI_FINISH_ABORT;
        return 0;
    }

    /* Hold back a tail that may grow into a stop string. */
    for (hold = c->emitted; hold < c->text.len; hold++)
        if (stop_prefix(o, c->text.buf, hold, c->text.len))
            break;
    if (emit(o, seq, c, hold)) {
        c->done = true;
        c->finish = RLHI_FINISH_ABORT;
    }
    return 0;

show_all:
    if (emit(o, seq, c, c->text.len)) {
        c->done = true;
        c->finish = RLHI_FINISH_ABORT;
    }
    return 0;
}

/* The text of token `id` after `prev`, added to candidate `seq`. */
static int add_token_text(const struct rlhi_tokenizer *tok,
                          const struct rlhi_gen_opts *o, int seq,
                          struct cand *c, int prev, int id)
{
    char scratch[8];
    size_t len = 0;
    const char *p = rlhi_tokenizer_piece(tok, prev, id, scratch, &len);

    if (!p)
        return rlhi_err(RLHI_EINVAL, "token %d is outside the tokenizer's "
                        "vocabulary of %d", id, rlhi_tokenizer_vocab_size(tok));
    return add_text(o, seq, c, p, len);
}

static bool is_stop_id(const struct rlhi_gen_opts *o, int eos1, int eos2,
                       int id)
{
    int k;

    if (!o->ignore_eos && (id == eos1 || id == eos2))
        return true;
    for (k = 0; k < o->n_stop_ids; k++)
        if (o->stop_ids[k] == id)
            return true;
    return false;
}

static int check_opts(const struct rlhi_model *m, const int32_t *prompt,
                      int n_prompt, const struct rlhi_gen_opts *o, int n)
{
    int err = rlhi_sampler_params_check(&o->sampler), k;

    if (err)
        return err;
    if (n < 1)
        return rlhi_err(RLHI_EINVAL, "number of candidates must be >= 1, "
                        "got %d", n);
    if (!prompt || n_prompt < 1)
        return rlhi_err(RLHI_EINVAL, "empty prompt: generation needs at "
                        "least one token (BOS)");
    if (o->max_tokens < 0 || o->max_seq < 0)
        return rlhi_err(RLHI_EINVAL, "max_tokens and max_seq must be >= 0, "
                        "got %d and %d", o->max_tokens, o->max_seq);
    if (o->n_stop < 0 || o->n_stop_ids < 0 || (o->n_stop && !o->stop) ||
        (o->n_stop_ids && !o->stop_ids))
        return rlhi_err(RLHI_EINVAL, "bad stop list");
    for (k = 0; k < o->n_stop; k++)
        if (!o->stop[k])
            return rlhi_err(RLHI_EINVAL, "stop string %d is NULL", k);
    if (m->cfg.max_seq_len < 1)
        return rlhi_err(RLHI_EINVAL, "model has no context (max_seq_len %d)",
                        m->cfg.max_seq_len);
    return 0;
}

/* Works out the sampling budget and cache size (see the file head). Sets
 * *budget to 0 when only forced prompt text remains (llama2c, prompt longer
 * than steps). */
static int plan(const struct rlhi_model *m, int n_prompt,
                const struct rlhi_gen_opts *o, int *budget, int *size)
{
    int ctx = m->cfg.max_seq_len;

    if (o->max_seq > 0 && o->max_seq < ctx)
        ctx = o->max_seq;
    if (o->llama2c) {
        int steps = o->max_tokens;

        if (steps == 0 || steps > ctx) /* run.c: clip to seq_len */
            steps = ctx;
        *budget = steps >= n_prompt ? steps - n_prompt + 1 : 0;
        *size = steps;
        return 0;
    }
    if (n_prompt >= ctx)
        return rlhi_err(RLHI_ERANGE, "prompt of %d tokens leaves no room in "
                        "the context of %d", n_prompt, ctx);
    *budget = ctx - n_prompt;
    if (o->max_tokens > 0 && o->max_tokens < *budget)
        *budget = o->max_tokens;
    *size = n_prompt + *budget - 1;
    return 0;
}

static void free_cands(struct cand *c, int n)
{
    int i;

    if (!c)
        return;
    for (i = 0; i < n; i++) {
        rlhi_infer_free(c[i].s);
        rlhi_sampler_release(&c[i].smp);
        rlhi_buf_release(&c[i].text);
        rlhi_free(c[i].toks);
    }
    rlhi_free(c);
}

/* The forced prompt pieces of llama2c mode: run.c prints prompt[1..] (up
 * to `steps` of them) and stops at a BOS among them. */
static int forced_text(const struct rlhi_tokenizer *tok,
                       const struct rlhi_gen_opts *o, int seq, struct cand *c,
                       const int32_t *prompt, int n_prompt, int steps,
                       int bos)
{
    int j, err;

    for (j = 1; j < n_prompt && j <= steps && !c->done; j++) {
        if (prompt[j] == bos) {
            c->done = true;
            c->finish = RLHI_FINISH_STOP;
            c->stop_token = bos;
            break;
        }
        err = add_token_text(tok, o, seq, c, prompt[j - 1], prompt[j]);
        if (err)
            return err;
    }
    return 0;
}

static int gen(const struct rlhi_model *m, const struct rlhi_tokenizer *tok,
               const int32_t *prompt, int n_prompt,
               const struct rlhi_gen_opts *o, const uint64_t *seeds, int n,
               struct rlhi_gen_result *res)
{
    const int V = m->cfg.vocab_size;
    struct cand *c = NULL;
    struct rlhi_infer **act = NULL;
    int32_t *next = NULL;
    int *who = NULL;
    float *logits = NULL, *out = NULL;
    int budget = 0, size = 0, i, t, err, bos, eos1, eos2;
    double t0, t1 = 0, t2;

    err = check_opts(m, prompt, n_prompt, o, n);
    if (err)
        return err;
    memset(res, 0, (size_t)n * sizeof *res);
    err = plan(m, n_prompt, o, &budget, &size);
    if (err)
        return err;
    if (rlhi_tokenizer_vocab_size(tok) > V)
        rlhi_debug("tokenizer has %d ids, model %d",
                   rlhi_tokenizer_vocab_size(tok), V);
    bos = o->llama2c ? 1 : rlhi_tokenizer_bos(tok); /* run.c: id 1 */
    eos1 = rlhi_tokenizer_eos(tok);
    eos2 = m->cfg.eos_id;

    /* Candidates: a cache, a sampler and buffers each. */
    err = RLHI_ENOMEM;
    c = rlhi_calloc((size_t)n, sizeof *c);
    act = rlhi_calloc((size_t)n, sizeof *act);
    next = rlhi_calloc((size_t)n, sizeof *next);
    who = rlhi_calloc((size_t)n, sizeof *who);
    logits = rlhi_malloc((size_t)n * V * sizeof *logits);
    out = rlhi_malloc((size_t)n * V * sizeof *out);
    if (!c || !act || !next || !who || !logits || !out) {
        rlhi_err(err, "cannot allocate generation state for %d candidates",
                 n);
        goto fail;
    }
    for (i = 0; i < n; i++) {
        struct rlhi_sampler_params sp = o->sampler;
        uint64_t base = sp.seed ? sp.seed : RLHI_SAMPLER_DEFAULT_SEED;

        sp.seed = seeds ? seeds[i] : base + (uint64_t)i;
        c[i].prev = prompt[n_prompt - 1];
        c[i].stop_token = -1;
        err = rlhi_sampler_init(&c[i].smp, &sp, V);
        if (!err && budget > 0)
            err = rlhi_infer_new(&c[i].s, m, size);
        if (err)
            goto fail;
        c[i].toks = rlhi_malloc((size_t)(budget ? budget : 1) *
                                sizeof *c[i].toks);
        if (!c[i].toks) {
            err = rlhi_err(RLHI_ENOMEM, "cannot allocate %d tokens", budget);
            goto fail;
        }
    }

    /* llama2c prints the forced prompt pieces; then prefill once and share
     * the cache. */
    t0 = rlhi_time_now();
    for (i = 0; i < n && o->llama2c; i++) {
        err = forced_text(tok, o, i, &c[i], prompt, n_prompt, size, bos);
        if (err)
            goto fail;
    }
    if (budget > 0 && !c[0].done) {
        err = rlhi_infer_forward(c[0].s, prompt, n_prompt, logits, false);
        if (err)
            goto fail;
        for (i = 1; i < n; i++) {
            err = rlhi_infer_copy(c[i].s, c[0].s);
            if (err)
                goto fail;
            memcpy(logits + (size_t)i * V, logits, (size_t)V * sizeof *logits);
        }
    }
    t1 = rlhi_time_now();

    /* Decode: sample every live candidate, then advance them together. */
    for (t = 0; t < budget; t++) {
        int na = 0;

        for (i = 0; i < n; i++) {
            struct cand *ci = &c[i];
            int id;

            if (ci->done)
                continue;
            id = rlhi_sampler_sample(&ci->smp, logits + (size_t)i * V);
            if (id < 0) {
                err = id;
                goto fail;
            }
            if (o->llama2c ? id == bos : is_stop_id(o, eos1, eos2, id)) {
                ci->done = true;
                ci->finish = RLHI_FINISH_STOP;
                ci->stop_token = id;
                continue;
            }
            ci->toks[ci->ntoks++] = id;
            err = add_token_text(tok, o, i, ci, ci->prev, id);
            if (err)
                goto fail;
            ci->prev = id;
            if (ci->done)
                continue;
            if (t == budget - 1) {
                ci->done = true;
                ci->finish = RLHI_FINISH_LENGTH;
                continue;
            }
            act[na] = ci->s;
            next[na] = id;
            who[na] = i;
            na++;
        }
        if (na == 0)
            break;
        err = rlhi_infer_forward_batch(act, na, next, out);
        if (err)
            goto fail;
        for (i = 0; i < na; i++)
            memcpy(logits + (size_t)who[i] * V, out + (size_t)i * V,
                   (size_t)V * sizeof *out);
    }
    t2 = rlhi_time_now();

    /* Results: the held-back tail of a candidate that ran out of length
     * is shown now. */
    for (i = 0; i < n; i++) {
        struct cand *ci = &c[i];

        if (!ci->done)
            ci->finish = RLHI_FINISH_LENGTH;
        if (ci->finish == RLHI_FINISH_LENGTH && emit(o, i, ci, ci->text.len))
            ci->finish = RLHI_FINISH_ABORT;
        res[i].text = rlhi_buf_detach(&ci->text, &res[i].text_len);
        if (!res[i].text) {
            err = rlhi_err(RLHI_ENOMEM, "cannot allocate the generated text");
            goto fail;
        }
        res[i].tokens = ci->toks;
        ci->toks = NULL;
        res[i].n_tokens = ci->ntoks;
        res[i].finish = ci->finish;
        res[i].stop_token = ci->stop_token;
        res[i].n_prompt = n_prompt;
        res[i].prefill_s = t1 - t0;
        res[i].decode_s = t2 - t1;
    }
    err = 0;
    goto done;

fail:
    for (i = 0; i < n; i++)
        rlhi_gen_result_release(&res[i]);
done:
    free_cands(c, n);
    rlhi_free(act);
    rlhi_free(next);
    rlhi_free(who);
    rlhi_free(logits);
    rlhi_free(out);
    return err;
}

int rlhi_generate(const struct rlhi_model *m, const struct rlhi_tokenizer *tok,
                  const int32_t *prompt, int n_prompt,
                  const struct rlhi_gen_opts *o, struct rlhi_gen_result *res)
{
    uint64_t seed = o->sampler.seed;

    return gen(m, tok, prompt, n_prompt, o, &seed, 1, res);
}

int rlhi_generate_n(const struct rlhi_model *m,
                    const struct rlhi_tokenizer *tok, const int32_t *prompt,
                    int n_prompt, const struct rlhi_gen_opts *o,
                    const uint64_t *seeds, int n,
                    struct rlhi_gen_result *res)
{
    return gen(m, tok, prompt, n_prompt, o, seeds, n, res);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && !strcmp(s + n - k, suffix);
}

int rlhi_generate_load(const char *model_path, const char *tok_path,
                       struct rlhi_model **m, struct rlhi_tokenizer **tok)
{
    bool l2c = !rlhi_path_is_dir(model_path);
    char *dflt = NULL;
    int err;

    *m = NULL;
    *tok = NULL;
    err = rlhi_model_load(m, model_path);
    if (err)
        return err;

    /* llama2.c: tokenizer.bin beside the model unless one is given. */
    if (!tok_path && l2c) {
        const char *slash = strrchr(model_path, '/');
        size_t dl = slash ? (size_t)(slash - model_path) : 1;
        char *dir = rlhi_strndup(slash ? model_path : ".", dl);

        dflt = dir ? rlhi_path_join(dir, "tokenizer.bin") : NULL;
        rlhi_free(dir);
        if (!dflt) {
            err = rlhi_err(RLHI_ENOMEM, "cannot allocate a path");
            goto fail;
        }
        if (!rlhi_path_exists(dflt)) {
            err = rlhi_err(RLHI_ENOTFOUND, "no tokenizer for llama2.c model "
                           "'%s': '%s' does not exist\nhint: give one with "
                           "--tokenizer (e.g. tok512.bin)", model_path, dflt);
            goto fail;
        }
        tok_path = dflt;
    }
    if (!tok_path)
        tok_path = model_path;
    if (l2c && !rlhi_path_is_dir(tok_path) && !ends_with(tok_path, ".json"))
        err = rlhi_tokenizer_load_llama2c(tok, tok_path,
                                          (*m)->cfg.vocab_size);
    else
        err = rlhi_tokenizer_load(tok, tok_path);
    if (err)
        goto fail;
    if (rlhi_tokenizer_vocab_size(*tok) > (*m)->cfg.vocab_size)
        rlhi_warn("tokenizer '%s' has %d ids but model '%s' only %d; larger "
                  "ids will be rejected", tok_path,
                  rlhi_tokenizer_vocab_size(*tok), model_path,
                  (*m)->cfg.vocab_size);
    rlhi_free(dflt);
    return 0;

fail:
    rlhi_free(dflt);
    rlhi_model_free(*m);
    *m = NULL;
    return err;
}
