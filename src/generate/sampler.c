/* Samplers: greedy, modern (temperature, top-k, min-p, top-p) and llama2.c
 * run.c's sampler reproduced bit for bit. See include/rlhi/sampler.h for
 * the order of the filters.
 *
 * Modern mode, per token: one vectorised pass for the maximum (and NaN
 * check), one for the unnormalised weights e = exp(z - z_max) and their
 * sum, then only what the filters need. Without filters the draw walks e
 * directly. top-k keeps a heap of k entries (O(V log k)); top-p first drops
 * tokens that cannot be in the nucleus with the bound run.c uses, then
 * finds the nucleus by quickselect on weight (see nucleus()). The full
 * vocabulary is never sorted.
 */
#include "rlhi/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rlhi_sampler_params_default(struct rlhi_sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->mode = RLHI_SAMPLER_MODERN;
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->seed = 0;
}

void rlhi_sampler_params_llama2c(struct rlhi_sampler_params *p)
{
    rlhi_sampler_params_default(p);
    p->mode = RLHI_SAMPLER_LLAMA2C;
    p->top_p = 0.9f; /* run.c's default */
}

int rlhi_sampler_params_check(const struct rlhi_sampler_params *p)
{
    if (p->mode != RLHI_SAMPLER_MODERN && p->mode != RLHI_SAMPLER_LLAMA2C)
        return rlhi_err(RLHI_EINVAL, "unknown sampler mode %d", (int)p->mode);
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return rlhi_err(RLHI_EINVAL, "temperature must be a finite number "
                        ">= 0, got %g", (double)p->temperature);
    if (p->top_k < 0)
        return rlhi_err(RLHI_EINVAL, "top_k must be >= 0, got %d", p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return rlhi_err(RLHI_EINVAL, "top_p must be in [0, 1], got %g",
                        (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return rlhi_err(RLHI_EINVAL, "min_p must be in [0, 1], got %g",
                        (double)p->min_p);
    return 0;
}

void rlhi_sampler_reseed(struct rlhi_sampler *s, uint64_t seed)
{
    if (seed == 0)
        seed = RLHI_SAMPLER_DEFAULT_SEED;
    s->p.seed = seed;
    rlhi_rng_seed(&s->rng, seed);
    s->l2c_state = seed; /* run.c: sampler->rng_state = rng_seed */
}

int rlhi_sampler_init(struct rlhi_sampler *s,
                      const struct rlhi_sampler_params *p, int vocab_size)
{
    int r = rlhi_sampler_params_check(p);

    memset(s, 0, sizeof *s);
    if (r)
        return r;
    if (vocab_size < 1)
        return rlhi_err(RLHI_EINVAL, "sampler vocabulary size must be >= 1, "
                        "got %d", vocab_size);
    s->p = *p;
    s->vocab_size = vocab_size;
    s->probs = rlhi_malloc((size_t)vocab_size * sizeof *s->probs);
    s->cand = rlhi_malloc((size_t)vocab_size * sizeof *s->cand);
    if (!s->probs || !s->cand) {
        rlhi_sampler_release(s);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate sampler scratch for "
                        "%d tokens", vocab_size);
    }
    rlhi_sampler_reseed(s, p->seed);
    return 0;
}

void rlhi_sampler_release(struct rlhi_sampler *s)
{
    rlhi_free(s->probs);
    rlhi_free(s->cand);
    s->probs = NULL;
    s->cand = NULL;
}

int rlhi_sampler_argmax(const float *x, int n)
{
    int i, best = 0;

    for (i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Fails on a NaN anywhere or when no logit is finite; -inf entries (masked
 * tokens) are fine. Returns the index of the first largest logit. Eight
 * independent lanes let the compiler vectorise the scan (a single running
 * maximum is a dependency chain it must keep scalar); at V = 151k this
 * took the scan from 11% of a decode step's sampling time to noise. */
static int check_logits(const float *x, int n)
{
    float lane[8], mx;
    int i, j, bad = 0;

    for (j = 0; j < 8; j++)
        lane[j] = -INFINITY;
    for (i = 0; i + 8 <= n; i += 8)
        for (j = 0; j < 8; j++) {
            float v = x[i + j];

            bad |= v != v;
            lane[j] = v > lane[j] ? v : lane[j];
        }
    for (; i < n; i++) {
        bad |= x[i] != x[i];
        lane[0] = x[i] > lane[0] ? x[i] : lane[0];
    }
    mx = lane[0];
    for (j = 1; j < 8; j++)
        mx = lane[j] > mx ? lane[j] : mx;
    if (bad) {
        for (i = 0; i < n && !isnan(x[i]); i++)
            ;
        return rlhi_err(RLHI_ENUMERIC, "logit of token %d is NaN", i);
    }
    if (!isfinite(mx))
        return rlhi_err(RLHI_ENUMERIC, "no finite logit (largest is %g)",
                        (double)mx);
    for (i = 0; x[i] != mx; i++)
        ;
    return i;
}

/* ---- llama2.c run.c, reproduced ------------------------------------- */

uint32_t rlhi_sampler_l2c_u32(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1DULL) >> 32);
}

float rlhi_sampler_l2c_f32(uint64_t *state)
{
    return (float)(rlhi_sampler_l2c_u32(state) >> 8) / 16777216.0f;
}

/* run.c's softmax: max, expf of the difference, float sum, divide. */
static void l2c_softmax(float *x, int n)
{
    float max_val = x[0], sum = 0.0f;
    int i;

    for (i = 1; i < n; i++)
        if (x[i] > max_val)
            max_val = x[i];
    for (i = 0; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (i = 0; i < n; i++)
        x[i] /= sum;
}

static int l2c_sample_mult(const float *probs, int n, float coin)
{
    float cdf = 0.0f;
    int i;

    for (i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf)
            return i;
    }
    return n - 1; /* rounding */
}

/* run.c's comparator: descending by probability, equal is 0, so that the
 * C library's qsort orders ties exactly as it does for run.c. */
static int l2c_compare(const void *a, const void *b)
{
    const struct rlhi_prob_index *x = a, *y = b;

    if (x->prob > y->prob)
        return -1;
    if (x->prob < y->prob)
        return 1;
    return 0;
}

static int l2c_sample_topp(const float *probs, int n, float topp,
                           struct rlhi_prob_index *pi, float coin)
{
    /* Tokens below the cutoff cannot be part of the nucleus (run.c). */
    const float cutoff = (1.0f - topp) / (float)(n - 1);
    float cumulative_prob = 0.0f, r, cdf = 0.0f;
    int i, n0 = 0, last_idx;

    for (i = 0; i < n; i++) {
        if (probs[i] >= cutoff) {
            pi[n0].index = i;
            pi[n0].prob = probs[i];
            n0++;
        }
    }
    qsort(pi, (size_t)n0, sizeof *pi, l2c_compare);

    last_idx = n0 - 1;
    for (i = 0; i < n0; i++) {
        cumulative_prob += pi[i].prob;
        if (cumulative_prob > topp) {
            last_idx = i;
            break;
        }
    }

    r = coin * cumulative_prob;
    for (i = 0; i <= last_idx; i++) {
        cdf += pi[i].prob;
        if (r < cdf)
            return pi[i].index;
    }
    return pi[last_idx].index; /* rounding */
}

static int l2c_sample(struct rlhi_sampler *s, const float *logits)
{
    int n = s->vocab_size, q;
    float *x = s->probs, coin;

    memcpy(x, logits, (size_t)n * sizeof *x);
    for (q = 0; q < n; q++)
        x[q] /= s->p.temperature;
    l2c_softmax(x, n);
    coin = rlhi_sampler_l2c_f32(&s->l2c_state);
    if (s->p.top_p <= 0 || s->p.top_p >= 1)
        return l2c_sample_mult(x, n, coin);
    return l2c_sample_topp(x, n, s->p.top_p, s->cand, coin);
}

/* ---- modern --------------------------------------------------------- */

/* True when a ranks before b: more probable, or as probable and a lower
 * id. A strict total order, so every selection below is deterministic. */
static inline int before(const struct rlhi_prob_index *a,
                         const struct rlhi_prob_index *b)
{
    return a->prob > b->prob || (a->prob == b->prob && a->index < b->index);
}

static int cmp_rank(const void *a, const void *b)
{
    const struct rlhi_prob_index *x = a, *y = b;

    return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

/* Min-heap on rank: the root is the candidate that ranks last. */
static void heap_down(struct rlhi_prob_index *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        struct rlhi_prob_index t;

        if (l < n && before(&h[m], &h[l]))
            m = l;
        if (r < n && before(&h[m], &h[r]))
            m = r;
        if (m == i)
            return;
        t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Keeps the k best tokens with e[i] >= th in c[0..return), sorted by
 * rank, straight from the (V) array e: a heap of k entries whose root is
 * the worst kept, so most tokens cost one comparison. */
static int top_k(struct rlhi_prob_index *c, const float *e, int V, float th,
                 int k)
{
    int i, n = 0;

    for (i = 0; i < V; i++) {
        struct rlhi_prob_index x;

        if (!(e[i] > 0.0f && e[i] >= th))
            continue;
        x.prob = e[i];
        x.index = i;
        if (n < k) {
            c[n++] = x;
            if (n == k) {
                int j;

                for (j = k / 2 - 1; j >= 0; j--)
                    heap_down(c, k, j);
            }
        } else if (before(&x, &c[0])) {
            c[0] = x;
            heap_down(c, k, 0);
        }
    }
    qsort(c, (size_t)n, sizeof *c, cmp_rank);
    return n;
}

static void swap_pi(struct rlhi_prob_index *a, struct rlhi_prob_index *b)
{
    struct rlhi_prob_index t = *a;

    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi) around a median-of-three pivot by rank: returns k
 * with c[lo..k) ranked before c[k] and c(k..hi) after it. */
static int partition(struct rlhi_prob_index *c, int lo, int hi)
{
    int mid = lo + (hi - lo) / 2, last = hi - 1, i, k;

    if (before(&c[mid], &c[lo]))
        swap_pi(&c[mid], &c[lo]);
    if (before(&c[last], &c[lo]))
        swap_pi(&c[last], &c[lo]);
    if (before(&c[last], &c[mid]))
        swap_pi(&c[last], &c[mid]);
    swap_pi(&c[mid], &c[last]); /* the median is the pivot, at the end */
    for (i = k = lo; i < last; i++)
        if (before(&c[i], &c[last]))
            swap_pi(&c[i], &c[k++]);
    swap_pi(&c[k], &c[last]);
    return k;
}

/* Keeps the nucleus of the survivors (n_all tokens of total weight
 * `mass`, of which c[0..n-1] hold every one that can matter): the
 * shortest prefix in rank order whose weight reaches top_p * mass, at
 * least one token. Moves it to c[0..return), in no particular order when
 * c was not sorted (sampling needs the set, not the order).
 *
 * A token below cutoff = (1 - top_p) * mass / (n_all - 1) is never needed:
 * at most n_all - 1 tokens lie below it, so together they weigh less than
 * (1 - top_p) * mass and the tokens above it already reach top_p * mass
 * (the bound run.c uses). What remains is found by quickselect on weight,
 * O(n) expected: for a peaked distribution a few tokens remain, but for a
 * flat one (an untrained model) 90% of a 151k vocabulary can, and a full
 * sort there cost 40 ms per token. */
static int nucleus(struct rlhi_prob_index *c, int n, bool sorted,
                   double mass, int n_all, float top_p)
{
    double acc = 0.0, want = (double)top_p * mass;
    int i, lo = 0, hi = n;

    if (!sorted && n_all > 1) {
        double cutoff = (1.0 - (double)top_p) * mass / (double)(n_all - 1);

        hi = 0;
        for (i = 0; i < n; i++)
            if ((double)c[i].prob >= cutoff)
                c[hi++] = c[i];
    }

    /* Invariant: c[0..lo) all rank before c[lo..hi), weigh acc < want,
     * and the answer lies in (lo, hi]. */
    while (!sorted && hi - lo > 16) {
        int k = partition(c, lo, hi);
        double w = 0.0;

        for (i = lo; i < k; i++)
            w += c[i].prob;
        if (acc + w >= want) {
            hi = k;
        } else if (acc + w + c[k].prob >= want) {
            return k + 1;
        } else {
            acc += w + c[k].prob;
            lo = k + 1;
        }
    }
    if (!sorted)
        qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_rank);
    for (i = lo; i < hi; i++) {
        acc += c[i].prob;
        if (acc >= want)
            return i + 1;
    }
    return hi > 0 ? hi : 1;
}

/* Bits of -87.3f: below it expf's result is denormal or 0. */
#define EXP_UNDER_BITS 0xc2ae999au

/* exp(x) for the modern sampler's weights, where x = z - z_max <= 0:
 * Cody-Waite reduction x = n ln2 + r with |r| <= ln2/2, the polynomial of
 * Cephes' expf (S. L. Moshier, Cephes Math Library, expf.c coefficients),
 * then scaling by 2^n built in the exponent bits. Within a few ulp of
 * expf; below -87.3 the weight is 0. Every step is unconditional
 * arithmetic or bit masking (a float compare or a conditional product
 * stops GCC from vectorising under -ftrapping-math), so the loop in
 * weights() vectorises, which the C library's expf does not. For negative
 * floats a larger magnitude has larger bits, so x < -87.3 (or -inf) is an
 * unsigned compare. The llama2c mode keeps the C library's expf for
 * bit-exactness with run.c. */
static inline float exp_neg(float x)
{
    const float log2e = 1.44269504088896341f;
    const float c1 = 0.693359375f, c2 = -2.12194440e-4f;
    float fx, r, y, scale;
    uint32_t ux, m, fb;
    int32_t n, bits;

    memcpy(&ux, &x, sizeof ux);
    m = 0u - (uint32_t)(ux > EXP_UNDER_BITS); /* all ones when too small */
    fb = (ux & ~m) | (EXP_UNDER_BITS & m);
    memcpy(&fx, &fb, sizeof fx);

    n = (int32_t)(fx * log2e - 0.5f); /* rounds to nearest for fx <= 0 */
    r = fx - (float)n * c1 - (float)n * c2;
    y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    bits = (n + 127) << 23; /* n >= -126: a normal power of two */
    memcpy(&scale, &bits, sizeof scale);
    y *= scale;

    memcpy(&ux, &y, sizeof ux);
    ux &= ~m;
    memcpy(&y, &ux, sizeof y);
    return y;
}

/* e[i] = exp(logits[i] / T - zmax) for i < V; returns their sum, in eight
 * double lanes, a fixed order, so results repeat bit for bit. Measured on
 * the 2-core dev machine (CPU time, one sample call at V = 151669, no
 * filter): 1.30 ms with expf, 0.41 ms with this loop. */
static double weights(float *e, const float *logits, int V, float T,
                      float zmax)
{
    double lane[8] = {0}, sum = 0.0;
    int i, j;

#pragma omp simd
    for (i = 0; i < V; i++)
        e[i] = exp_neg(logits[i] / T - zmax);
    for (i = 0; i + 8 <= V; i += 8)
        for (j = 0; j < 8; j++)
            lane[j] += e[i + j];
    for (; i < V; i++)
        lane[0] += e[i];
    for (j = 0; j < 8; j++)
        sum += lane[j];
    return sum;
}

/* Applies temperature and the filters. Weights are unnormalised: e[i] =
 * exp(z[i] - z_max) with z = logits / T, so the most probable token weighs
 * exactly 1 and min-p's threshold min_p * p_max is min_p itself. Returns
 * the number of candidates in s->cand (greedy: the argmax alone with
 * weight 1), or 0 when no filter is active: then every token is a
 * candidate with weight s->probs[i] and *mass is their sum. Negative on
 * bad logits. */
static int modern_candidates(struct rlhi_sampler *s, const float *logits,
                             double *mass)
{
    const struct rlhi_sampler_params *p = &s->p;
    struct rlhi_prob_index *c = s->cand;
    float *e = s->probs;
    int V = s->vocab_size, i, n = 0, best, n_all = 0;
    float zmax, th = p->min_p;
    double sum = 0.0;

    best = check_logits(logits, V);
    if (best < 0)
        return best;
    if (p->temperature == 0.0f || p->top_k == 1) {
        c[0].index = best;
        c[0].prob = 1.0f;
        *mass = 1.0;
        return 1;
    }

    /* e = exp(logits / T - max), summed in double. */
    zmax = logits[best] / p->temperature;
    sum = weights(e, logits, V, p->temperature, zmax);
    *mass = sum;
    if (p->top_k == 0 && p->min_p == 0.0f && p->top_p >= 1.0f)
        return 0;

    /* top-k and min-p together (they commute: both keep an upper set). */
    if (p->top_k > 0 && p->top_k < V) {
        n = top_k(c, e, V, th, p->top_k);
        if (p->top_p >= 1.0f)
            return n;
        for (i = 0, sum = 0.0; i < n; i++)
            sum += c[i].prob;
        *mass = sum;
        return nucleus(c, n, true, sum, n, p->top_p);
    }

    /* min-p, and with it the first cut of top-p: with min-p off the
     * survivors are the (at most V) tokens of weight > 0, so the nucleus
     * bound with n_all = V already applies here. */
    if (p->min_p == 0.0f && p->top_p < 1.0f && V > 1)
        th = (float)((1.0 - (double)p->top_p) * sum / (double)(V - 1));
    for (i = 0; i < V; i++) {
        if (e[i] > 0.0f && e[i] >= p->min_p) {
            n_all++;
            if (e[i] >= th) {
                c[n].prob = e[i];
                c[n].index = i;
                n++;
            }
        }
    }
    if (p->min_p > 0.0f) {
        for (i = 0, sum = 0.0; i < n; i++)
            sum += c[i].prob;
        n_all = n;
    }
    *mass = sum;
    if (p->top_p >= 1.0f)
        return n;
    return nucleus(c, n, false, sum, n_all, p->top_p);
}

int rlhi_sampler_distribution(struct rlhi_sampler *s, const float *logits,
                              float *probs)
{
    double total = 0.0, mass;
    int n, i;

    if (s->p.mode != RLHI_SAMPLER_MODERN)
        return rlhi_err(RLHI_EINVAL, "the sampling distribution is only "
                        "defined for the modern sampler");
    n = modern_candidates(s, logits, &mass);
    if (n < 0)
        return n;
    if (n == 0) {
        for (i = 0; i < s->vocab_size; i++) {
            probs[i] = (float)(s->probs[i] / mass);
            n += probs[i] > 0.0f;
        }
        return n;
    }
    memset(probs, 0, (size_t)s->vocab_size * sizeof *probs);
    for (i = 0; i < n; i++)
        total += s->cand[i].prob;
    for (i = 0; i < n; i++)
        probs[s->cand[i].index] = (float)(s->cand[i].prob / total);
    return n;
}

int rlhi_sampler_sample(struct rlhi_sampler *s, const float *logits)
{
    double total = 0.0, r, cdf = 0.0, mass;
    int n, i;

    if (s->p.mode == RLHI_SAMPLER_LLAMA2C) {
        int best = check_logits(logits, s->vocab_size);

        if (best < 0 || s->p.temperature == 0.0f)
            return best; /* run.c: sample_argmax, first max */
        return l2c_sample(s, logits);
    }

    n = modern_candidates(s, logits, &mass);
    if (n < 0 || s->p.temperature == 0.0f)
        return n < 0 ? n : s->cand[0].index;

    /* One draw per sampled token, even when a single candidate is left,
     * so that draw i always belongs to step i whatever the filters do. */
    if (n == 0) { /* no filter: walk the whole vocabulary */
        const float *e = s->probs;
        int last = 0;

        r = rlhi_rng_double(&s->rng) * mass;
        for (i = 0; i < s->vocab_size; i++) {
            if (e[i] > 0.0f)
                last = i;
            cdf += e[i];
            if (r < cdf)
                return i;
        }
        return last; /* rounding */
    }
    for (i = 0; i < n; i++)
        total += s->cand[i].prob;
    r = rlhi_rng_double(&s->rng) * total;
    for (i = 0; i < n; i++) {
        cdf += s->cand[i].prob;
        if (r < cdf)
            return s->cand[i].index;
    }
    return s->cand[n - 1].index; /* rounding */
}
