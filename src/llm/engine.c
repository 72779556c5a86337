/* The local engine: one thread that owns a model and batches every request
 * in flight into shared forward passes (continuous batching).
 *
 * Loop: admit queued jobs while the batch has room (a job's n choices
 * enter together; a job is prefilled in one rlhi_infer_forward call, then
 * its cache is copied to its other choices), drop sequences whose job was
 * cancelled or that finished, then advance every remaining sequence by one
 * token with one rlhi_infer_forward_batch call. Sampling and log-softmax
 * run outside the lock; their results are committed under it, and each
 * job's waiter is signalled.
 *
 * A prompt is prefilled in chunks of PREFILL_CHUNK tokens with one
 * decoding step of the running sequences between two chunks, so a long
 * prompt slows the others down but does not stall them.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "llm/engine_internal.h"
#include "rlhi/generate.h"
#include "rlhi/model.h"
#include "rlhi/sampler.h"
#include "rlhi/tokenizer.h"

/* Prompt tokens per forward call. Between two chunks the running
 * sequences take a step, so a long prompt delays them by one chunk's time
 * at most; with the prompt's own log-probabilities it also bounds the
 * (rows, V) logits buffer (64 x 128k vocabulary = 32 MiB). 64 rows keep the
 * matrix products well shaped for BLAS. */
#define PREFILL_CHUNK 64

struct seq {
    struct rlhi__job *job;
    int choice;
    struct rlhi_infer *st;
    struct rlhi_sampler smp;
    int32_t prev;  /* last token fed or generated, for piece spacing */
    int32_t next;  /* token to feed at the next step */
};

/* What one logits row produced, computed without the lock. */
struct pick {
    int32_t id;
    float logprob;
    int ntop;
    struct rlhi__top top[RLHI__MAX_TOP];
    const char *piece;
    size_t plen;
    char scratch[8];
    int err;
};

struct rlhi_engine {
    struct rlhi_model *model;
    struct rlhi_tokenizer *tok;
    bool borrowed; /* model and tok belong to the caller */
    struct rlhi__engine_info info;
    char *model_id;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;
    struct rlhi__job *qhead, *qtail;
    int nqueued;

    struct seq **act; /* active sequences, max_batch slots */
    int nact;
    float *logits;    /* (max_batch, V) */
    struct pick *picks;
    struct rlhi_infer **batch;
    int32_t *btok;

    uint64_t seed_state;
    struct rlhi_engine_stats stats;
};

/* ---- jobs ------------------------------------------------------------- */

struct rlhi__job *rlhi__job_new(int n)
{
    struct rlhi__job *j = rlhi_calloc(1, sizeof *j);

    if (!j)
        return NULL;
    j->ch = rlhi_calloc((size_t)n, sizeof *j->ch);
    if (!j->ch) {
        rlhi_free(j);
        return NULL;
    }
    j->n = n;
    j->refs = 1;
    j->top_k = -1;
    return j;
}

static void toks_free(struct rlhi__tok *t, int n)
{
    int i;

    if (!t)
        return;
    for (i = 0; i < n; i++)
        rlhi_free(t[i].top);
    rlhi_free(t);
}

static void job_free(struct rlhi__job *j)
{
    int i;

    rlhi_free(j->prompt);
    for (i = 0; i < j->nstops; i++)
        rlhi_free(j->stops[i]);
    rlhi_free(j->stops);
    for (i = 0; i < j->n; i++) {
        rlhi_buf_release(&j->ch[i].text);
        toks_free(j->ch[i].toks, j->ch[i].ntoks);
    }
    rlhi_free(j->ch);
    toks_free(j->ptoks, j->ptoks ? j->nprompt : 0);
    rlhi_free(j->errmsg);
    rlhi_free(j);
}

/* Under the lock. */
static void job_unref(struct rlhi__job *j)
{
    if (--j->refs == 0)
        job_free(j);
}

static void job_notify(struct rlhi__job *j)
{
    j->version++;
    if (j->cond && (j->wake_each || j->done))
        pthread_cond_broadcast(j->cond);
}

/* Marks every running choice of `j` failed and the job done. Under the
 * lock. */
static void job_fail(struct rlhi__job *j, int code, const char *msg)
{
    int i;

    if (j->done)
        return;
    if (!j->error) {
        j->error = code;
        j->errmsg = rlhi_strdup(msg ? msg : rlhi_strerror(code));
    }
    for (i = 0; i < j->n; i++)
        if (j->ch[i].finish == RLHI__RUNNING) {
            j->ch[i].finish = RLHI__FAILED;
            j->ch[i].final_len = j->ch[i].text.len;
        }
    j->pending = 0;
    j->done = true;
    job_notify(j);
}

void rlhi__engine_lock(struct rlhi_engine *e)
{
    pthread_mutex_lock(&e->mu);
}

void rlhi__engine_unlock(struct rlhi_engine *e)
{
    pthread_mutex_unlock(&e->mu);
}

pthread_mutex_t *rlhi__engine_mutex(struct rlhi_engine *e)
{
    return &e->mu;
}

const struct rlhi__engine_info *rlhi__engine_info(const struct rlhi_engine *e)
{
    return &e->info;
}

uint64_t rlhi__engine_next_seed(struct rlhi_engine *e)
{
    uint64_t s;

    pthread_mutex_lock(&e->mu);
    /* splitmix64 step: distinct, well-mixed seeds per request. */
    e->seed_state += 0x9e3779b97f4a7c15ULL;
    s = e->seed_state;
    pthread_mutex_unlock(&e->mu);
    s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9ULL;
    s = (s ^ (s >> 27)) * 0x94d049bb133111ebULL;
    s ^= s >> 31;
    return s ? s : 1;
}

int rlhi__engine_submit(struct rlhi_engine *e, struct rlhi__job *j)
{
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        return rlhi_err(RLHI_EINVAL, "engine is shutting down");
    }
    j->refs++;
    j->queued = true;
    j->pending = j->n;
    j->next = NULL;
    if (e->qtail)
        e->qtail->next = j;
    else
        e->qhead = j;
    e->qtail = j;
    e->nqueued++;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void rlhi__job_release(struct rlhi_engine *e, struct rlhi__job *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&e->mu);
    if (!j->done) {
        j->cancel = true;
        pthread_cond_signal(&e->wake);
    }
    j->cond = NULL;
    job_unref(j);
    pthread_mutex_unlock(&e->mu);
}

/* ---- text and stops --------------------------------------------------- */

/* Length of the longest proper prefix of `s` that ends `text` (len). */
static size_t stop_overlap(const char *text, size_t len, const char *s)
{
    size_t k = strlen(s);

    if (k == 0)
        return 0;
    for (k = k - 1 < len ? k - 1 : len; k > 0; k--)
        if (!memcmp(text + len - k, s, k))
            return k;
    return 0;
}

size_t rlhi__choice_ready(const struct rlhi__job *j,
                          const struct rlhi__choice *c)
{
    size_t len = c->text.len, hold = 0, k, r;
    int i;

    if (c->finish != RLHI__RUNNING)
        return c->final_len;
    for (i = 0; i < j->nstops; i++) {
        k = stop_overlap(c->text.buf, len, j->stops[i]);
        if (k > hold)
            hold = k;
    }
    r = len - hold;

    /* Back off an incomplete UTF-8 character at the end: its remaining
     * bytes come with the next token. */
    for (k = 1; k <= 3 && k <= r; k++) {
        unsigned char b = (unsigned char)c->text.buf[r - k];
        size_t need;

        if ((b & 0xc0) == 0x80)
            continue;
        need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
        if (need > k)
            r -= k;
        break;
    }
    return r;
}

/* Earliest position at or after `from` where a stop string starts, or
 * (size_t)-1. */
static size_t find_stop(const struct rlhi__job *j, const char *text,
                        size_t len, size_t from)
{
    size_t best = (size_t)-1;
    int i;

    for (i = 0; i < j->nstops; i++) {
        size_t sl = strlen(j->stops[i]), start;
        const char *p;

        if (!sl)
            continue;
        start = from > sl - 1 ? from - (sl - 1) : 0;
        p = memmem(text + start, len - start, j->stops[i], sl);
        if (p && (size_t)(p - text) < best)
            best = (size_t)(p - text);
    }
    return best;
}

/* ---- one logits row -> a token ---------------------------------------- */

/* log-sum-exp of a row, in double so that 128k-entry rows stay exact to
 * float precision. */
static double row_lse(const float *x, int n)
{
    float mx = x[0];
    double s = 0;
    int i;

    for (i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    return mx + log(s);
}

/* The k largest entries of x, largest first, ties to the lower id. */
static int row_topk(const float *x, int n, int k, struct rlhi__top *top,
                    double lse)
{
    int i, m = 0, p;

    for (i = 0; i < n; i++) {
        if (m == k && x[i] <= top[m - 1].logprob)
            continue;
        p = m < k ? m++ : m - 1;
        while (p > 0 && top[p - 1].logprob < x[i]) {
            top[p] = top[p - 1];
            p--;
        }
        top[p].id = i;
        top[p].logprob = x[i];
    }
    for (i = 0; i < m; i++)
        top[i].logprob = (float)(top[i].logprob - lse);
    return m;
}

static bool is_end(const struct rlhi_engine *e, const struct rlhi__job *j,
                   int32_t id)
{
    if (j->ignore_eos)
        return false;
    if (id == e->info.eos || id == e->model->cfg.eos_id)
        return true;
    return j->chat && id == e->info.eot_id;
}

/* Samples from `row` for sequence `s` and fills `p`. No lock needed: the
 * sampler and row belong to this sequence. */
static void pick_token(struct rlhi_engine *e, struct seq *s, const float *row,
                       struct pick *p)
{
    struct rlhi__job *j = s->job;
    int V = e->info.vocab, id;
    double lse;

    p->err = 0;
    p->ntop = 0;
    p->piece = "";
    p->plen = 0;
    id = rlhi_sampler_sample(&s->smp, row);
    if (id < 0) {
        p->err = id;
        return;
    }
    p->id = id;
    lse = row_lse(row, V);
    p->logprob = (float)(row[id] - lse);
    if (j->top_k > 0)
        p->ntop = row_topk(row, V, j->top_k, p->top, lse);
    if (!is_end(e, j, id)) {
        p->piece = rlhi_tokenizer_piece(e->tok, s->prev, id, p->scratch,
                                        &p->plen);
        if (!p->piece) {
            p->piece = "";
            p->plen = 0;
        }
    }
}

static int tok_push(struct rlhi__choice *c, const struct pick *p,
                    size_t start, size_t end)
{
    struct rlhi__tok *t;

    if (c->ntoks == c->cap) {
        int cap = c->cap ? 2 * c->cap : 32;
        void *nt = rlhi_realloc(c->toks, sizeof *c->toks * (size_t)cap);

        if (!nt)
            return RLHI_ENOMEM;
        c->toks = nt;
        c->cap = cap;
    }
    t = &c->toks[c->ntoks];
    memset(t, 0, sizeof *t);
    t->id = p->id;
    t->logprob = p->logprob;
    t->text_start = start;
    t->text_end = end;
    if (p->ntop > 0) {
        t->top = rlhi_malloc(sizeof *t->top * (size_t)p->ntop);
        if (!t->top)
            return RLHI_ENOMEM;
        memcpy(t->top, p->top, sizeof *t->top * (size_t)p->ntop);
        t->ntop = p->ntop;
    }
    c->ntoks++;
    return 0;
}

/* Appends the picked token to its choice and decides whether the choice
 * is finished. Under the lock. Returns true when the sequence goes on. */
static bool commit(struct rlhi_engine *e, struct seq *s, const struct pick *p)
{
    struct rlhi__job *j = s->job;
    struct rlhi__choice *c = &j->ch[s->choice];
    size_t old = c->text.len, at;

    if (j->done || c->finish != RLHI__RUNNING)
        return false;
    if (p->err) {
        job_fail(j, p->err, "cannot sample: the model gave no finite logit");
        return false;
    }
    if (rlhi_buf_add(&c->text, p->piece, p->plen) ||
        tok_push(c, p, old, old + p->plen)) {
        job_fail(j, RLHI_ENOMEM, "out of memory");
        return false;
    }
    /* an empty buffer has no storage yet; give it its NUL */
    if (!c->text.buf && rlhi_buf_grow(&c->text, 1)) {
        job_fail(j, RLHI_ENOMEM, "out of memory");
        return false;
    }
    e->stats.tokens++;
    s->prev = p->id;
    s->next = p->id;

    if (is_end(e, j, p->id)) {
        c->finish = RLHI__STOP;
        c->final_len = c->text.len;
    } else if ((at = find_stop(j, c->text.buf, c->text.len, old)) !=
               (size_t)-1) {
        c->finish = RLHI__STOP;
        c->final_len = at;
    } else if (c->ntoks >= j->max_tokens ||
               rlhi_infer_pos(s->st) >= rlhi_infer_max_seq(s->st)) {
        c->finish = RLHI__LENGTH;
        c->final_len = c->text.len;
    }
    if (c->finish != RLHI__RUNNING && --j->pending == 0)
        j->done = true;
    job_notify(j);
    return c->finish == RLHI__RUNNING;
}

static void seq_free(struct seq *s)
{
    if (!s)
        return;
    rlhi_infer_free(s->st);
    rlhi_sampler_release(&s->smp);
    rlhi_free(s);
}

/* Drops sequences whose job is cancelled, failed or whose choice ended.
 * Under the lock. */
static void reap(struct rlhi_engine *e)
{
    int i, k = 0;

    for (i = 0; i < e->nact; i++) {
        struct seq *s = e->act[i];
        struct rlhi__job *j = s->job;

        if (j->cancel && !j->done) {
            job_fail(j, RLHI_EINVAL, "request cancelled");
            e->stats.cancelled++;
        }
        if (j->done || j->ch[s->choice].finish != RLHI__RUNNING) {
            job_unref(j);
            seq_free(s);
            continue;
        }
        e->act[k++] = s;
    }
    e->nact = k;
}

/* One token for every active sequence, in one batched forward pass.
 * Called and returns with the lock held; drops it for the computation. */
static void step(struct rlhi_engine *e)
{
    int V = e->info.vocab, i, n = e->nact, r;

    for (i = 0; i < n; i++) {
        e->batch[i] = e->act[i]->st;
        e->btok[i] = e->act[i]->next;
    }
    pthread_mutex_unlock(&e->mu);
    r = rlhi_infer_forward_batch(e->batch, n, e->btok, e->logits);
    if (!r)
        for (i = 0; i < n; i++)
            pick_token(e, e->act[i], e->logits + (size_t)i * (size_t)V,
                       &e->picks[i]);
    pthread_mutex_lock(&e->mu);
    e->stats.steps++;
    if (r) {
        for (i = 0; i < n; i++)
            job_fail(e->act[i]->job, r, rlhi_errmsg());
        return;
    }
    for (i = 0; i < n; i++)
        commit(e, e->act[i], &e->picks[i]);
}

/* Between two chunks of a prefill: lets the running sequences take one
 * step, so that a long prompt does not stall them. Returns 0 to go on, or
 * an error (with its message) when the job being prefilled was cancelled
 * or the engine is stopping. Called without the lock. */
static int between_chunks(struct rlhi_engine *e, struct rlhi__job *j)
{
    int r = 0;

    pthread_mutex_lock(&e->mu);
    reap(e);
    if (e->nact > 0 && !e->stopping) {
        step(e);
        e->stats.interleaved++;
    }
    if (e->stopping)
        r = rlhi_err(RLHI_EINVAL, "engine is shutting down");
    else if (j->cancel)
        r = rlhi_err(RLHI_EINVAL, "request cancelled");
    pthread_mutex_unlock(&e->mu);
    return r;
}

/* ---- prefill ---------------------------------------------------------- */

/* Log-probabilities of the prompt's tokens: row r of a chunk starting at
 * `at` predicts token at + r + 1. */
static void echo_rows(struct rlhi_engine *e, struct rlhi__job *j,
                      struct rlhi__tok *pt, const float *rows, int at, int n)
{
    int V = e->info.vocab, r, k = j->top_k > 0 ? j->top_k : 0;

    for (r = 0; r < n && at + r + 1 < j->nprompt; r++) {
        const float *row = rows + (size_t)r * (size_t)V;
        struct rlhi__tok *t = &pt[at + r + 1];
        double lse = row_lse(row, V);

        t->logprob = (float)(row[t->id] - lse);
        if (k) {
            t->top = rlhi_malloc(sizeof *t->top * (size_t)k);
            if (t->top)
                t->ntop = row_topk(row, V, k, t->top, lse);
        }
    }
}

/* Runs the prompt of `j`, makes its n sequences and samples each one's
 * first token. Called without the lock; takes it to commit. The
 * sequences that go on are appended to e->act. */
static void prefill(struct rlhi_engine *e, struct rlhi__job *j)
{
    int V = e->info.vocab, i, r = 0, max_seq, at;
    struct seq **seqs = NULL;
    struct rlhi__tok *pt = NULL;
    float *rows = NULL, *last = NULL;
    struct pick *picks = NULL;
    char msg[512] = "";

    max_seq = j->nprompt + (j->max_tokens > 0 ? j->max_tokens : 0);
    if (max_seq > e->info.ctx)
        max_seq = e->info.ctx;
    seqs = rlhi_calloc((size_t)j->n, sizeof *seqs);
    picks = rlhi_calloc((size_t)j->n, sizeof *picks);
    last = rlhi_malloc(sizeof(float) * (size_t)V);
    if (!seqs || !picks || !last) {
        r = RLHI_ENOMEM;
        goto out;
    }
    for (i = 0; i < j->n; i++) {
        struct rlhi_sampler_params sp = j->sp;

        seqs[i] = rlhi_calloc(1, sizeof **seqs);
        if (!seqs[i]) {
            r = RLHI_ENOMEM;
            goto out;
        }
        seqs[i]->job = j;
        seqs[i]->choice = i;
        sp.seed = j->sp.seed + (uint64_t)i;
        if (!sp.seed)
            sp.seed = 1;
        r = rlhi_sampler_init(&seqs[i]->smp, &sp, V);
        if (r)
            goto out;
    }
    r = rlhi_infer_new(&seqs[0]->st, e->model, max_seq);
    if (r)
        goto out;

    /* The prompt, in chunks with a decoding step for the others between
     * two chunks; every row's logits when the prompt's own
     * log-probabilities are wanted. */
    if (j->echo_lp) {
        pt = rlhi_calloc((size_t)j->nprompt, sizeof *pt);
        rows = rlhi_malloc(sizeof(float) * (size_t)V * PREFILL_CHUNK);
        if (!pt || !rows) {
            r = RLHI_ENOMEM;
            goto out;
        }
        for (i = 0; i < j->nprompt; i++) {
            pt[i].id = j->prompt[i];
            pt[i].logprob = NAN;
        }
    }
    for (at = 0; at < j->nprompt && !r; at += PREFILL_CHUNK) {
        int n = j->nprompt - at < PREFILL_CHUNK ? j->nprompt - at
                                                : PREFILL_CHUNK;

        if (at > 0 && (r = between_chunks(e, j)))
            break;
        if (j->echo_lp) {
            r = rlhi_infer_forward(seqs[0]->st, j->prompt + at, n, rows,
                                   true);
            if (!r) {
                echo_rows(e, j, pt, rows, at, n);
                memcpy(last, rows + (size_t)(n - 1) * (size_t)V,
                       sizeof(float) * (size_t)V);
            }
        } else {
            r = rlhi_infer_forward(seqs[0]->st, j->prompt + at, n, last,
                                   false);
        }
    }
    if (r)
        goto out;

    /* The other choices share the prompt's cache. */
    if (j->max_tokens > 0)
        for (i = 1; i < j->n && !r; i++) {
            r = rlhi_infer_new(&seqs[i]->st, e->model, max_seq);
            if (!r)
                r = rlhi_infer_copy(seqs[i]->st, seqs[0]->st);
        }
    if (r)
        goto out;
    if (j->max_tokens > 0)
        for (i = 0; i < j->n; i++) {
            seqs[i]->prev = j->prompt[j->nprompt - 1];
            pick_token(e, seqs[i], last, &picks[i]);
        }

out:
    if (r)
        snprintf(msg, sizeof msg, "%s", rlhi_errmsg()[0] ? rlhi_errmsg()
                                                         : rlhi_strerror(r));
    pthread_mutex_lock(&e->mu);
    if (pt) {
        j->ptoks = pt;
        pt = NULL;
    }
    if (r) {
        if (j->cancel)
            e->stats.cancelled++;
        job_fail(j, r, msg);
    } else if (j->max_tokens <= 0) {
        for (i = 0; i < j->n; i++) {
            j->ch[i].finish = RLHI__LENGTH;
            if (!j->ch[i].text.buf)
                rlhi_buf_grow(&j->ch[i].text, 1);
        }
        j->pending = 0;
        j->done = true;
        job_notify(j);
    } else {
        for (i = 0; i < j->n; i++)
            if (commit(e, seqs[i], &picks[i])) {
                e->act[e->nact++] = seqs[i];
                j->refs++;
                seqs[i] = NULL;
            }
    }
    pthread_mutex_unlock(&e->mu);
    if (seqs)
        for (i = 0; i < j->n; i++)
            seq_free(seqs[i]);
    rlhi_free(seqs);
    rlhi_free(picks);
    rlhi_free(rows);
    rlhi_free(last);
    toks_free(pt, j->nprompt);
}

/* ---- the loop --------------------------------------------------------- */

static void *loop(void *arg)
{
    struct rlhi_engine *e = arg;
    int i;

    pthread_mutex_lock(&e->mu);
    for (;;) {
        reap(e);
        if (e->stopping)
            break;

        /* Admit what fits; a job enters with all its choices. */
        if (e->qhead && e->nact + e->qhead->n <= e->info.max_batch) {
            struct rlhi__job *j = e->qhead;

            e->qhead = j->next;
            if (!e->qhead)
                e->qtail = NULL;
            e->nqueued--;
            j->queued = false;
            if (j->cancel) {
                job_fail(j, RLHI_EINVAL, "request cancelled");
                e->stats.cancelled++;
                job_unref(j);
                continue;
            }
            e->stats.requests++;
            pthread_mutex_unlock(&e->mu);
            prefill(e, j);
            pthread_mutex_lock(&e->mu);
            job_unref(j);
            continue;
        }
        if (e->nact == 0) {
            pthread_cond_wait(&e->wake, &e->mu);
            continue;
        }

        step(e);
    }

    /* Shutting down: fail whatever is left. */
    while (e->qhead) {
        struct rlhi__job *j = e->qhead;

        e->qhead = j->next;
        job_fail(j, RLHI_EINVAL, "engine is shutting down");
        job_unref(j);
    }
    e->qtail = NULL;
    e->nqueued = 0;
    for (i = 0; i < e->nact; i++) {
        job_fail(e->act[i]->job, RLHI_EINVAL, "engine is shutting down");
        job_unref(e->act[i]->job);
        seq_free(e->act[i]);
    }
    e->nact = 0;
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- open and close --------------------------------------------------- */

static char *model_id_from_path(const char *path)
{
    size_t len = strlen(path), start;

    while (len > 1 && path[len - 1] == '/')
        len--;
    start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    return rlhi_strndup(path + start, len - start);
}

int rlhi_engine_open(struct rlhi_engine **out,
                     const struct rlhi_engine_options *opt)
{
    struct rlhi_engine *e;
    int r, mb;

    *out = NULL;
    if (!opt || (!opt->model_path && !(opt->model && opt->model_id)))
        return rlhi_err(RLHI_EINVAL, "engine: no model path given");
    if (!opt->model != !opt->tokenizer)
        return rlhi_err(RLHI_EINVAL, "engine: give both a model and a "
                        "tokenizer, or neither");
    if (opt->max_batch < 0 || opt->max_prompt_tokens < 0 ||
        opt->max_tokens_limit < 0)
        return rlhi_err(RLHI_EINVAL, "engine: limits must not be negative");
    e = rlhi_calloc(1, sizeof *e);
    if (!e)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    e->info.eot_id = -1;

    if (opt->model) {
        e->model = opt->model;
        e->tok = opt->tokenizer;
        e->borrowed = true;
    } else {
        r = rlhi_generate_load(opt->model_path, opt->tokenizer_path,
                               &e->model, &e->tok);
        if (r)
            goto fail;
    }

    /* The chat template: asked for, found in the model directory, or ours
     * (which any tokenizer can encode as plain text). */
    if (opt->chat_template) {
        r = rlhi_chat_kind_from_name(opt->chat_template, &e->info.chat);
        if (r)
            goto fail;
    } else if (!opt->model_path || !rlhi_path_is_dir(opt->model_path) ||
               rlhi_chat_template_from_dir(opt->model_path, &e->info.chat)) {
        rlhi_err_clear();
        e->info.chat = RLHI_CHAT_RLHI;
    }
    e->info.eot_str = rlhi_chat_eot(e->info.chat);
    e->info.eot_id = e->info.eot_str
                         ? rlhi_tokenizer_token_id(e->tok, e->info.eot_str)
                         : -1;

    e->info.tok = e->tok;
    e->info.bos = rlhi_tokenizer_bos(e->tok);
    e->info.eos = rlhi_tokenizer_eos(e->tok);
    if (e->info.eos < 0)
        e->info.eos = e->model->cfg.eos_id;
    e->info.ctx = e->model->cfg.max_seq_len;
    e->info.vocab = e->model->cfg.vocab_size;
    mb = opt->max_batch ? opt->max_batch : 16;
    e->info.max_batch = mb;
    e->info.max_prompt = opt->max_prompt_tokens ? opt->max_prompt_tokens
                                                : e->info.ctx;
    if (e->info.max_prompt > e->info.ctx)
        e->info.max_prompt = e->info.ctx;
    e->info.max_tokens_limit = opt->max_tokens_limit ? opt->max_tokens_limit
                                                     : 4096;
    e->model_id = opt->model_id ? rlhi_strdup(opt->model_id)
                                : model_id_from_path(opt->model_path);
    e->act = rlhi_calloc((size_t)mb, sizeof *e->act);
    e->batch = rlhi_calloc((size_t)mb, sizeof *e->batch);
    e->btok = rlhi_calloc((size_t)mb, sizeof *e->btok);
    e->picks = rlhi_calloc((size_t)mb, sizeof *e->picks);
    e->logits = rlhi_malloc(sizeof(float) * (size_t)mb *
                            (size_t)e->info.vocab);
    if (!e->model_id || !e->act || !e->batch || !e->btok || !e->picks ||
        !e->logits) {
        r = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto fail;
    }
    e->seed_state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)e;

    if (pthread_create(&e->thread, NULL, loop, e)) {
        r = rlhi_err_errno(RLHI_EIO, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return 0;

fail:
    rlhi_engine_close(e);
    return r;
}

void rlhi_engine_shutdown(struct rlhi_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}

void rlhi_engine_close(struct rlhi_engine *e)
{
    if (!e)
        return;
    rlhi_engine_shutdown(e);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    rlhi_free(e->act);
    rlhi_free(e->batch);
    rlhi_free(e->btok);
    rlhi_free(e->picks);
    rlhi_free(e->logits);
    rlhi_free(e->model_id);
    if (!e->borrowed) {
        rlhi_tokenizer_free(e->tok);
        rlhi_model_free(e->model);
    }
    rlhi_free(e);
}

const char *rlhi_engine_model_id(const struct rlhi_engine *e)
{
    return e->model_id;
}

void rlhi_engine_get_stats(struct rlhi_engine *e, struct rlhi_engine_stats *s)
{
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    s->active = e->nact;
    s->queued = e->nqueued;
    pthread_mutex_unlock(&e->mu);
}
