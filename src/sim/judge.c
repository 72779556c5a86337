/* The simulator's judge: correctness of an answer, its style against a
 * persona, pairwise preference, and win rates with bootstrap intervals.
 *
 * Correctness. A FACTS answer is split into sentences; a sentence that
 * holds one of a fact's cue words (at a word start) states that fact, and
 * its integers say whether the number is right. An ARITH answer is judged
 * by its last integer, which is where both the writer and most models put
 * the result.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

/* Does `cue` ('|'-separated alternatives) start a word in [s, e)? */
static bool has_cue(const char *s, const char *e, const char *cue)
{
    while (*cue) {
        const char *bar = strchr(cue, '|');
        size_t n = bar ? (size_t)(bar - cue) : strlen(cue);
        const char *p;

        for (p = s; p + n <= e; p++)
            if ((p == s || !isalnum((unsigned char)p[-1])) &&
                !strncasecmp(p, cue, n))
                return true;
        cue += n + (bar != NULL);
    }
    return false;
}

/* Reads the integers of [s, e) into v (at most cap); returns the count. */
static int integers(const char *s, const char *e, long *v, int cap)
{
    int n = 0;

    while (s < e) {
        if (isdigit((unsigned char)*s) &&
            (n < cap)) {
            long x = 0;

            while (s < e && (isdigit((unsigned char)*s) ||
                             (*s == ',' && s + 3 < e &&
                              isdigit((unsigned char)s[1]) &&
                              isdigit((unsigned char)s[2]) &&
                              isdigit((unsigned char)s[3])))) {
                if (*s != ',')
                    x = x * 10 + (*s - '0');
                if (x > 1000000000L)
                    x = 1000000000L;
                s++;
            }
            v[n++] = x;
            continue;
        }
        s++;
    }
    return n;
}

/* The end of the sentence that starts at s: after . ! ? followed by space,
 * or at a newline. */
static const char *sentence_end(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            return s;
        if ((*s == '.' || *s == '!' || *s == '?') &&
            (!s[1] || isspace((unsigned char)s[1])))
            return s + 1;
    }
    return s;
}

static int check_facts(const char *text, const struct rlhi_sim_request *q,
                       int *right, int *wrong, int *first_wrong)
{
    const struct rlhi__topic *t = &rlhi__topics[q->topic];
    int state[RLHI__FACTS_PER_TOPIC] = {0}; /* 1 right, -1 wrong */
    const char *s = text;
    int f, nr = 0, nw = 0;

    while (*s) {
        const char *e = sentence_end(s);
        long v[16];
        int n = integers(s, e, v, 16), i;

        for (f = 0; f < RLHI__FACTS_PER_TOPIC && n; f++) {
            bool ok = false;

            if (!has_cue(s, e, t->facts[f].cue))
                continue;
            for (i = 0; i < n; i++)
                ok |= v[i] == t->facts[f].value;
            /* A wrong statement anywhere spoils the fact. */
            if (!ok)
                state[f] = -1;
            else if (state[f] == 0)
                state[f] = 1;
        }
        s = *e ? e + (*e == '\n') : e;
        if (s == e && *s)
            s++;
    }
    for (f = 0; f < RLHI__FACTS_PER_TOPIC; f++) {
        nr += state[f] == 1;
        nw += state[f] == -1;
        if (first_wrong && state[f] == -1 && *first_wrong < 0)
            *first_wrong = f;
    }
    if (right)
        *right = nr;
    if (wrong)
        *wrong = nw;
    return nw ? RLHI_SIM_WRONG : nr ? RLHI_SIM_RIGHT : RLHI_SIM_ABSENT;
}

int rlhi_sim_check(const char *text, const struct rlhi_sim_request *q,
                   int *right, int *wrong)
{
    long v[4096];
    int n;

    if (!text)
        text = "";
    if (q->kind == RLHI_SIM_FACTS)
        return check_facts(text, q, right, wrong, NULL);
    if (right)
        *right = 0;
    if (wrong)
        *wrong = 0;
    n = integers(text, text + strlen(text), v, 4096);
    if (!n)
        return RLHI_SIM_ABSENT;
    return v[n - 1] == q->answer ? RLHI_SIM_RIGHT : RLHI_SIM_WRONG;
}

int rlhi__first_wrong_fact(const char *text, const struct rlhi_sim_request *q)
{
    int f = -1;

    if (text && q->kind == RLHI_SIM_FACTS)
        check_facts(text, q, NULL, NULL, &f);
    return f;
}

double rlhi_sim_judge(const char *text, const struct rlhi_sim_request *q,
                      const struct rlhi_sim_persona *p,
                      struct rlhi_sim_verdict *v)
{
    struct rlhi_sim_verdict tmp;
    int d;

    if (!v)
        v = &tmp;
    memset(v, 0, sizeof *v);
    v->missed_dim = -1;
    rlhi_sim_style_read(text, &v->reading);
    v->correct = rlhi_sim_check(text, q, &v->facts_right, &v->facts_wrong);
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        int want = p->pref[d], got = v->reading.style.v[d];

        if (!want || got < 0)
            continue;
        if ((want > 0) == (got == 1)) {
            v->match++;
        } else {
            v->mismatch++;
            if (v->missed_dim < 0)
                v->missed_dim = d;
        }
    }
    /* Correctness outweighs any style: a right answer in the wrong style
     * still beats a wrong one in the right style. */
    v->score = 10.0 * v->correct + v->match - v->mismatch;
    return v->score;
}

int rlhi_sim_compare(const char *a, const char *b,
                     const struct rlhi_sim_request *q,
                     const struct rlhi_sim_persona *p)
{
    double sa = rlhi_sim_judge(a, q, p, NULL);
    double sb = rlhi_sim_judge(b, q, p, NULL);

    return sa > sb ? 1 : sa < sb ? -1 : 0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;

    return a < b ? -1 : a > b;
}

int rlhi_sim_winrate(const int *outcome, int n, int nboot, uint64_t seed,
                     double *rate, double *lo, double *hi)
{
    struct rlhi_rng r;
    double *boot, sum = 0;
    int i, k;

    if (n <= 0)
        return rlhi_err(RLHI_EINVAL, "cannot compute a win rate of no "
                                     "comparisons");
    for (i = 0; i < n; i++)
        sum += outcome[i] > 0 ? 1.0 : outcome[i] == 0 ? 0.5 : 0.0;
    *rate = sum / n;
    if (nboot < 1)
        nboot = 1;
    boot = rlhi_malloc((size_t)nboot * sizeof *boot);
    if (!boot)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate %d bootstrap samples",
                        nboot);
    rlhi_rng_seed(&r, seed);
    for (k = 0; k < nboot; k++) {
        double s = 0;

        for (i = 0; i < n; i++) {
            int o = outcome[rlhi_rng_below(&r, (uint64_t)n)];

            s += o > 0 ? 1.0 : o == 0 ? 0.5 : 0.0;
        }
        boot[k] = s / n;
    }
    /* Percentile interval: the 2.5th and 97.5th of the resampled rates. */
    qsort(boot, (size_t)nboot, sizeof *boot, cmp_double);
    *lo = boot[(int)(0.025 * (nboot - 1) + 0.5)];
    *hi = boot[(int)(0.975 * (nboot - 1) + 0.5)];
    rlhi_free(boot);
    return 0;
}
