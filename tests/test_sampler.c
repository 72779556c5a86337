/* Tests for the samplers: greedy, top-k, min-p, top-p against distributions
 * computed here in double, frequencies against a chi-square bound,
 * determinism, and llama2.c run.c's RNG and sampler rules. */
#include <math.h>
#include <stdint.h>

#include "check.h"
#include "rlhi/sampler.h"

/* Reference softmax of logits / T in double. */
static void ref_softmax(const float *x, int n, double t, double *p)
{
    double m = -INFINITY, sum = 0;
    int i;

    for (i = 0; i < n; i++)
        if (x[i] / t > m)
            m = x[i] / t;
    for (i = 0; i < n; i++) {
        p[i] = exp(x[i] / t - m);
        sum += p[i];
    }
    for (i = 0; i < n; i++)
        p[i] /= sum;
}

/* Reference top-p by a full selection sort over all n tokens: keeps the
 * shortest most-probable prefix reaching top_p, marks kept[i]. */
static int ref_top_p(const double *p, int n, double top_p, int *kept)
{
    double cum = 0;
    int k = 0, i;

    for (i = 0; i < n; i++)
        kept[i] = 0;
    while (k < n) {
        int best = -1;

        for (i = 0; i < n; i++)
            if (!kept[i] && (best < 0 || p[i] > p[best]))
                best = i;
        kept[best] = 1;
        k++;
        cum += p[best];
        if (cum >= top_p)
            break;
    }
    return k;
}

/* Independent xorshift64* from llama2.c run.c's random_u32. */
static uint32_t ref_u32(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Fixed pseudo-random logits in [-4, 4). */
static void fill_logits(float *x, int n, uint64_t seed)
{
    struct rlhi_rng r;
    int i;

    rlhi_rng_seed(&r, seed);
    for (i = 0; i < n; i++)
        x[i] = (float)(rlhi_rng_double(&r) * 8.0 - 4.0);
}

int main(void)
{
    enum { V = 1000, V2 = 333 };
    static float logits[V], probs[V];
    static double ref[V];
    static int kept[V];
    struct rlhi_sampler_params p;
    struct rlhi_sampler s;

    fill_logits(logits, V, 7);

    TEST("greedy: temperature 0 gives the first largest logit") {
        float x[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};

        rlhi_sampler_params_default(&p);
        p.temperature = 0;
        CHECK_OK(rlhi_sampler_init(&s, &p, 5));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, x), 1);
        rlhi_sampler_release(&s);

        rlhi_sampler_params_llama2c(&p);
        p.temperature = 0;
        CHECK_OK(rlhi_sampler_init(&s, &p, 5));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, x), 1);
        rlhi_sampler_release(&s);
    }

    TEST("top_k = 1 and top_p = 0 equal greedy for any seed") {
        int am = rlhi_sampler_argmax(logits, V), seed, ok1 = 1, ok2 = 1;

        for (seed = 1; seed <= 50; seed++) {
            rlhi_sampler_params_default(&p);
            p.temperature = 1.3f;
            p.top_k = 1;
            p.seed = (uint64_t)seed;
            rlhi_sampler_init(&s, &p, V);
            ok1 &= rlhi_sampler_sample(&s, logits) == am;
            rlhi_sampler_release(&s);
            p.top_k = 0;
            p.top_p = 0.0f;
            rlhi_sampler_init(&s, &p, V);
            ok2 &= rlhi_sampler_sample(&s, logits) == am;
            rlhi_sampler_release(&s);
        }
        CHECK(ok1);
        CHECK(ok2);
    }

    TEST("no filters: the distribution is softmax(logits / T)") {
        double maxerr = 0;
        int i;

        rlhi_sampler_params_default(&p);
        p.temperature = 0.7f;
        CHECK_OK(rlhi_sampler_init(&s, &p, V));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, logits, probs), V);
        ref_softmax(logits, V, 0.7f, ref);
        for (i = 0; i < V; i++)
            maxerr = fmax(maxerr, fabs(probs[i] - ref[i]) / ref[i]);
        /* float exp and division: a few ulp of relative error */
        CHECK_NEAR(maxerr, 0, 1e-5, 0);
        rlhi_sampler_release(&s);
    }

    TEST("weights stay accurate over a wide range of logits") {
        /* Logits from -110 to 0 (exp underflows below -87.3) and two
         * masked tokens: relative error 1e-6 where the weight is a normal
         * float, 0 for the masked ones. */
        float x[V2];
        double worst = 0;
        int i;

        for (i = 0; i < V2; i++)
            x[i] = -110.0f * (float)i / (V2 - 1);
        x[7] = -INFINITY;
        x[100] = -INFINITY;
        rlhi_sampler_params_default(&p);
        CHECK_OK(rlhi_sampler_init(&s, &p, V2));
        rlhi_sampler_distribution(&s, x, probs);
        ref_softmax(x, V2, 1.0, ref);
        for (i = 0; i < V2; i++)
            if (ref[i] > 1e-37)
                worst = fmax(worst, fabs(probs[i] - ref[i]) / ref[i]);
        CHECK_NEAR(worst, 0, 1e-6, 0);
        CHECK(probs[7] == 0 && probs[100] == 0);
        CHECK(probs[V2 - 1] == 0); /* exp(-110) is below float's range */
        rlhi_sampler_release(&s);
    }

    TEST("top-k keeps the k most probable, renormalised") {
        double tot = 0, maxerr = 0;
        int i, nz = 0, j;

        rlhi_sampler_params_default(&p);
        p.top_k = 10;
        CHECK_OK(rlhi_sampler_init(&s, &p, V));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, logits, probs), 10);
        ref_softmax(logits, V, 1.0, ref);
        /* a token is in the top 10 iff fewer than 10 tokens beat it */
        for (i = 0; i < V; i++) {
            int better = 0;

            for (j = 0; j < V; j++)
                better += ref[j] > ref[i];
            kept[i] = better < 10;
            if (kept[i])
                tot += ref[i];
        }
        for (i = 0; i < V; i++) {
            nz += probs[i] > 0;
            if (kept[i])
                maxerr = fmax(maxerr, fabs(probs[i] - ref[i] / tot));
            else if (probs[i] != 0)
                maxerr = 1;
        }
        CHECK_INT_EQ(nz, 10);
        CHECK_NEAR(maxerr, 0, 1e-6, 0);
        rlhi_sampler_release(&s);
    }

    TEST("min-p keeps p >= min_p * p_max") {
        double pmax = 0, tot = 0, maxerr = 0;
        int i, nk = 0;

        rlhi_sampler_params_default(&p);
        p.min_p = 0.3f;
        CHECK_OK(rlhi_sampler_init(&s, &p, V));
        ref_softmax(logits, V, 1.0, ref);
        for (i = 0; i < V; i++)
            pmax = fmax(pmax, ref[i]);
        for (i = 0; i < V; i++) {
            kept[i] = ref[i] >= 0.3 * pmax;
            nk += kept[i];
            tot += kept[i] ? ref[i] : 0;
        }
        CHECK(nk > 5 && nk < V / 2); /* the test means something */
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, logits, probs), nk);
        for (i = 0; i < V; i++)
            maxerr = fmax(maxerr, fabs(probs[i] - (kept[i] ? ref[i] / tot
                                                           : 0)));
        CHECK_NEAR(maxerr, 0, 1e-6, 0);
        rlhi_sampler_release(&s);
    }

    TEST("top-p on a known distribution and against a full sort") {
        float x[4];
        double q[4] = {0.5, 0.25, 0.15, 0.1};
        int i, nk, big = 32000;
        float *bl = rlhi_malloc((size_t)big * sizeof *bl);
        float *bp = rlhi_malloc((size_t)big * sizeof *bp);
        double *br = rlhi_malloc((size_t)big * sizeof *br);
        int *bk = rlhi_malloc((size_t)big * sizeof *bk);
        int bad = 0;

        for (i = 0; i < 4; i++)
            x[i] = (float)log(q[i]);
        rlhi_sampler_params_default(&p);
        p.top_p = 0.7f; /* 0.5 < 0.7 <= 0.75: keeps {0, 1} */
        CHECK_OK(rlhi_sampler_init(&s, &p, 4));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, x, probs), 2);
        CHECK_NEAR(probs[0], 2.0 / 3, 1e-6, 0);
        CHECK_NEAR(probs[1], 1.0 / 3, 1e-6, 0);
        CHECK(probs[2] == 0 && probs[3] == 0);
        rlhi_sampler_release(&s);
        p.top_p = 0.8f; /* 0.75 < 0.8 <= 0.9: keeps {0, 1, 2} */
        CHECK_OK(rlhi_sampler_init(&s, &p, 4));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, x, probs), 3);
        CHECK_NEAR(probs[2], 0.15 / 0.9, 1e-6, 0);
        rlhi_sampler_release(&s);

        /* A Llama-2-sized vocabulary: the cutoff prefilter must not change
         * the nucleus that a plain full sort finds. */
        fill_logits(bl, big, 99);
        for (i = 0; i < big; i++)
            bl[i] *= 2.0f;
        ref_softmax(bl, big, 1.0, br);
        nk = ref_top_p(br, big, 0.9, bk);
        p.top_p = 0.9f;
        CHECK_OK(rlhi_sampler_init(&s, &p, big));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, bl, bp), nk);
        for (i = 0; i < big; i++)
            bad += (bp[i] > 0) != bk[i];
        CHECK_INT_EQ(bad, 0);
        rlhi_sampler_release(&s);
        rlhi_free(bl);
        rlhi_free(bp);
        rlhi_free(br);
        rlhi_free(bk);
    }

    TEST("frequencies of 20000 draws fit the distribution (chi-square)") {
        /* 8 tokens, temperature 0.8, top_k 6: the expected distribution is
         * computed here. Chi-square with 5 degrees of freedom; 20.52 is its
         * 0.999 quantile, so a correct sampler fails this with probability
         * 0.001 for a random seed (and never for this fixed one). */
        float x[8] = {2.0f, 1.5f, 1.0f, 0.2f, -0.3f, -1.0f, -2.0f, -3.0f};
        double e[8], chi = 0, tot = 0;
        int count[8] = {0}, i, n = 20000;

        ref_softmax(x, 8, 0.8f, e);
        for (i = 0; i < 6; i++)
            tot += e[i];
        rlhi_sampler_params_default(&p);
        p.temperature = 0.8f;
        p.top_k = 6;
        p.seed = 12345;
        CHECK_OK(rlhi_sampler_init(&s, &p, 8));
        for (i = 0; i < n; i++) {
            int t = rlhi_sampler_sample(&s, x);

            if (t >= 0 && t < 8)
                count[t]++;
        }
        CHECK_INT_EQ(count[6] + count[7], 0);
        for (i = 0; i < 6; i++) {
            double ex = n * e[i] / tot;

            chi += (count[i] - ex) * (count[i] - ex) / ex;
        }
        CHECK_MSG(chi < 20.52, "chi-square %.3f >= 20.52", chi);
        rlhi_sampler_release(&s);

        /* No filter at all takes another path (a walk over the whole
         * vocabulary): 7 degrees of freedom, 0.999 quantile 24.32. */
        p.top_k = 0;
        CHECK_OK(rlhi_sampler_init(&s, &p, 8));
        memset(count, 0, sizeof count);
        for (i = 0; i < n; i++) {
            int t = rlhi_sampler_sample(&s, x);

            if (t >= 0 && t < 8)
                count[t]++;
        }
        for (i = 0, chi = 0; i < 8; i++) {
            double ex = n * e[i];

            chi += (count[i] - ex) * (count[i] - ex) / ex;
        }
        CHECK_MSG(chi < 24.32, "chi-square %.3f >= 24.32", chi);
        rlhi_sampler_release(&s);
    }

    TEST("same seed, same tokens; another seed, other tokens") {
        struct rlhi_sampler a, b, c;
        int i, same = 1, diff = 0;

        rlhi_sampler_params_default(&p);
        p.top_p = 0.95f;
        p.seed = 2024;
        CHECK_OK(rlhi_sampler_init(&a, &p, V));
        CHECK_OK(rlhi_sampler_init(&b, &p, V));
        p.seed = 2025;
        CHECK_OK(rlhi_sampler_init(&c, &p, V));
        for (i = 0; i < 200; i++) {
            int ta = rlhi_sampler_sample(&a, logits);

            same &= ta == rlhi_sampler_sample(&b, logits);
            diff += ta != rlhi_sampler_sample(&c, logits);
        }
        CHECK(same);
        CHECK(diff > 100);
        /* reseeding restarts the sequence */
        rlhi_sampler_reseed(&a, 2024);
        rlhi_sampler_reseed(&b, 2024);
        CHECK_INT_EQ(rlhi_sampler_sample(&a, logits),
                     rlhi_sampler_sample(&b, logits));
        rlhi_sampler_release(&a);
        rlhi_sampler_release(&b);
        rlhi_sampler_release(&c);
    }

    TEST("llama2.c RNG for seed 133742") {
        /* The recurrence, run here; and its first values computed
         * separately with Python's integers. */
        static const uint32_t known[4] = {0xb4d0037eu, 0x9f67c4b0u,
                                          0x89db8337u, 0x8857315bu};
        uint64_t a = 133742, b = 133742, c = 133742;
        int i, same = 1;

        for (i = 0; i < 4; i++) {
            uint32_t u = rlhi_sampler_l2c_u32(&a);

            CHECK_INT_EQ(u, known[i]);
            CHECK_INT_EQ(u, ref_u32(&b));
        }
        for (i = 0; i < 1000; i++) {
            uint64_t d = c;
            float f = rlhi_sampler_l2c_f32(&c);

            same &= f == (float)(ref_u32(&d) >> 8) / 16777216.0f;
            same &= f >= 0.0f && f < 1.0f;
        }
        CHECK(same);
        c = 133742;
        CHECK(rlhi_sampler_l2c_f32(&c) == 0.7062990069389343f);
    }

    TEST("llama2.c sampler: first draw of a uniform distribution") {
        /* Four equal logits: run.c's sample_mult returns floor(coin * 4)
         * with coin the first random_f32 of the seed. */
        float x[4] = {0.5f, 0.5f, 0.5f, 0.5f};
        uint64_t st = 133742;
        float coin = (float)(ref_u32(&st) >> 8) / 16777216.0f;

        rlhi_sampler_params_llama2c(&p);
        p.top_p = 1.0f;
        p.seed = 133742;
        CHECK_OK(rlhi_sampler_init(&s, &p, 4));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, x), (int)(coin * 4));
        rlhi_sampler_release(&s);

        /* top-p 0.85 over {0.5, 0.25, 0.15, 0.1}: the cumulative 0.9 of
         * the first three exceeds 0.85, r = coin * 0.9 = 0.636 falls in
         * [0.5, 0.75): token 1. */
        x[0] = logf(0.5f);
        x[1] = logf(0.25f);
        x[2] = logf(0.15f);
        x[3] = logf(0.1f);
        p.top_p = 0.85f;
        CHECK_OK(rlhi_sampler_init(&s, &p, 4));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, x), 1);
        rlhi_sampler_release(&s);
    }

    TEST("bad logits and parameters are errors, not crashes") {
        float x[3] = {0.0f, NAN, 1.0f};
        float y[2] = {-INFINITY, -INFINITY};

        rlhi_sampler_params_default(&p);
        CHECK_OK(rlhi_sampler_init(&s, &p, 3));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, x), RLHI_ENUMERIC);
        CHECK(strstr(rlhi_errmsg(), "NaN") != NULL);
        rlhi_sampler_release(&s);
        CHECK_OK(rlhi_sampler_init(&s, &p, 2));
        CHECK_INT_EQ(rlhi_sampler_sample(&s, y), RLHI_ENUMERIC);
        rlhi_sampler_release(&s);

        p.top_p = 1.5f;
        CHECK_INT_EQ(rlhi_sampler_init(&s, &p, 3), RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "top_p") != NULL);
        rlhi_sampler_params_default(&p);
        p.temperature = -1;
        CHECK_INT_EQ(rlhi_sampler_init(&s, &p, 3), RLHI_EINVAL);
        rlhi_sampler_params_default(&p);
        CHECK_INT_EQ(rlhi_sampler_init(&s, &p, 0), RLHI_EINVAL);
        rlhi_sampler_params_llama2c(&p);
        CHECK_OK(rlhi_sampler_init(&s, &p, 3));
        CHECK_INT_EQ(rlhi_sampler_distribution(&s, x, probs), RLHI_EINVAL);
        rlhi_sampler_release(&s);
    }

    TEST("allocation failure is reported") {
        rlhi_sampler_params_default(&p);
        rlhi__alloc_fail_at(1);
        CHECK_INT_EQ(rlhi_sampler_init(&s, &p, 10), RLHI_ENOMEM);
        rlhi__alloc_fail_at(2);
        CHECK_INT_EQ(rlhi_sampler_init(&s, &p, 10), RLHI_ENOMEM);
        rlhi__alloc_fail_at(0);
    }

    return check_summary();
}
