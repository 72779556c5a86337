/* Scoring of given text: per-token log-probabilities of a completion given
 * a prompt, the building block of DPO reference log-probs, reward data and
 * the server's `echo`.
 *
 * Layout. For prompt x[0..P-1] and completion y[0..N-1] the model sees
 * x[0..P-2] once (cache only, no logits), then for each completion the
 * rows in = [x[P-1], y[0], ..., y[N-2]] with all logits: row r predicts
 * y[r]. Completions of one prompt rewind the cache to P-1 positions and
 * reuse it. The rows run in chunks of at most CHUNK_FLOATS / V so that the
 * logits buffer stays bounded for any length.
 */
#include "rlhi/generate.h"

#include <math.h>
#include <string.h>

/* 16 Mi floats = 64 MiB of logits per chunk: 128 rows of a 128k
 * vocabulary, enough rows for the matrix products to run at full speed;
 * capped at 512 rows for tiny vocabularies. */
#define CHUNK_FLOATS (16u << 20)
#define CHUNK_MAX_ROWS 512

double rlhi_logprob_of(const float *logits, int V, int id)
{
    float mx = -INFINITY;
    double sum = 0.0;
    int i;

    for (i = 0; i < V; i++) {
        if (isnan(logits[i]))
            return NAN;
        if (logits[i] > mx)
            mx = logits[i];
    }
    if (!isfinite(mx))
        return NAN;
    for (i = 0; i < V; i++)
        sum += expf(logits[i] - mx);
    return (double)(logits[id] - mx) - log(sum);
}

/* Scores one completion from a state holding prompt[0..n_prompt-2]. */
static int score_one(struct rlhi_infer *s, int V, int32_t last,
                     const int32_t *y, int n, float *logprobs, double *sum,
                     int32_t *in, float *logits, int rows)
{
    double total = 0.0;
    int r0, r, err;

    if (n > 0) {
        in[0] = last;
        memcpy(in + 1, y, (size_t)(n - 1) * sizeof *in);
    }
    for (r0 = 0; r0 < n; r0 += rows) {
        int cn = n - r0 < rows ? n - r0 : rows;

        err = rlhi_infer_forward(s, in + r0, cn, logits, true);
        if (err)
            return err;
        for (r = 0; r < cn; r++) {
            double lp = rlhi_logprob_of(logits + (size_t)r * V, V,
                                        y[r0 + r]);

            if (isnan(lp))
                return rlhi_err(RLHI_ENUMERIC, "non-finite logits at "
                                "completion token %d", r0 + r);
            if (logprobs)
                logprobs[r0 + r] = (float)lp;
            total += lp;
        }
    }
    if (sum)
        *sum = total;
    return 0;
}

int rlhi_score_n(const struct rlhi_model *m, const int32_t *prompt,
                 int n_prompt, const int32_t *const *completions,
                 const int *n_completions, int k, float *const *logprobs,
                 double *sums)
{
    const int V = m->cfg.vocab_size;
    struct rlhi_infer *s = NULL;
    int32_t *in = NULL;
    float *logits = NULL;
    int i, nmax = 0, rows, err;

    /* Check everything before any work. */
    if (!prompt || n_prompt < 1)
        return rlhi_err(RLHI_EINVAL, "empty prompt: the first completion "
                        "token needs at least one token (BOS) before it");
    if (k < 0)
        return rlhi_err(RLHI_EINVAL, "number of completions must be >= 0");
    for (i = 0; i < k; i++) {
        int j;

        if (n_completions[i] < 0 || (n_completions[i] && !completions[i]))
            return rlhi_err(RLHI_EINVAL, "completion %d: bad length %d", i,
                            n_completions[i]);
        /* The last token is never run through the model: check all here. */
        for (j = 0; j < n_completions[i]; j++)
            if (completions[i][j] < 0 || completions[i][j] >= V)
                return rlhi_err(RLHI_EINVAL, "completion token %d is %d, "
                                "outside the vocabulary of %d", j,
                                completions[i][j], V);
        if (n_completions[i] > nmax)
            nmax = n_completions[i];
    }
    if ((long)n_prompt + nmax > m->cfg.max_seq_len)
        return rlhi_err(RLHI_ERANGE, "prompt (%d tokens) and completion "
                        "(%d tokens) exceed the context of %d", n_prompt,
                        nmax, m->cfg.max_seq_len);
    rows = (int)(CHUNK_FLOATS / (unsigned)V);
    if (rows > CHUNK_MAX_ROWS)
        rows = CHUNK_MAX_ROWS;
    if (rows < 1)
        rows = 1;
    if (rows > nmax)
        rows = nmax > 0 ? nmax : 1;

    err = rlhi_infer_new(&s, m, n_prompt + (nmax > 0 ? nmax - 1 : 0));
    if (err)
        return err;
    in = rlhi_malloc((size_t)(nmax > 0 ? nmax : 1) * sizeof *in);
    logits = rlhi_malloc((size_t)rows * V * sizeof *logits);
    if (!in || !logits) {
        err = rlhi_err(RLHI_ENOMEM, "cannot allocate %d rows of logits",
                       rows);
        goto done;
    }

    /* The prompt but its last token, once. */
    if (n_prompt > 1) {
        err = rlhi_infer_forward(s, prompt, n_prompt - 1, NULL, false);
        if (err)
            goto done;
    }
    for (i = 0; i < k; i++) {
        rlhi_infer_truncate(s, n_prompt - 1);
        err = score_one(s, V, prompt[n_prompt - 1], completions[i],
                        n_completions[i], logprobs ? logprobs[i] : NULL,
                        sums ? &sums[i] : NULL, in, logits, rows);
        if (err) {
            if (k > 1)
                rlhi_err_prefix(err, "completion %d", i);
            goto done;
        }
    }

done:
    rlhi_infer_free(s);
    rlhi_free(in);
    rlhi_free(logits);
    return err;
}

int rlhi_score(const struct rlhi_model *m, const int32_t *prompt,
               int n_prompt, const int32_t *completion, int n_completion,
               float *logprobs, double *sum)
{
    float *const lp[1] = {logprobs};

    return rlhi_score_n(m, prompt, n_prompt, &completion, &n_completion, 1,
                        lp, sum);
}
