/* Tests for generation and scoring on the real stories260K model: llama2.c
 * run.c's golden outputs byte for byte, scoring against a log-softmax
 * computed here from token-by-token forward passes, N candidates with a
 * shared prefill against independent runs, stop rules. Skips when the
 * shared data is absent. */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "check.h"
#include "rlhi/generate.h"

#define DIR "models/llama2c-stories260K/"

struct capture {
    struct rlhi_buf text;
    int calls;
    int abort_after; /* stop after this many calls; 0 = never */
};

static int capture_piece(int seq, const char *text, size_t len, void *user)
{
    struct capture *c = (struct capture *)user + seq;

    rlhi_buf_add(&c->text, text, len);
    c->calls++;
    return c->abort_after && c->calls >= c->abort_after;
}

/* Runs llama2c-mode generation from BOS and compares the streamed text
 * with a golden file (run.c's stdout without its final "\n"). */
static void check_golden(const struct rlhi_model *m,
                         const struct rlhi_tokenizer *tok, const char *file,
                         float temperature, float top_p, uint64_t seed,
                         int steps)
{
    const char *path = check_data(file);
    struct capture cap = {RLHI_BUF_INIT, 0, 0};
    struct rlhi_gen_opts o;
    struct rlhi_gen_result res;
    int32_t *ids = NULL;
    size_t n = 0, glen = 0;
    char *golden = NULL;

    if (!path) {
        SKIP("golden file absent");
        return;
    }
    CHECK_OK(rlhi_file_read(path, &golden, &glen));
    CHECK_OK(rlhi_tokenizer_encode(tok, "", 0, RLHI_ENC_BOS, &ids, &n));
    CHECK_INT_EQ(n, 1); /* run.c: an empty prompt is just BOS */

    rlhi_gen_opts_default(&o);
    rlhi_sampler_params_llama2c(&o.sampler);
    o.sampler.temperature = temperature;
    o.sampler.top_p = top_p;
    o.sampler.seed = seed;
    o.llama2c = true;
    o.max_tokens = steps;
    o.on_piece = capture_piece;
    o.user = &cap;
    CHECK_OK(rlhi_generate(m, tok, ids, (int)n, &o, &res));
    CHECK_INT_EQ(cap.text.len, glen);
    CHECK_MSG(cap.text.buf && golden && cap.text.len == glen &&
                  !memcmp(cap.text.buf, golden, glen),
              "%s differs:\n  got:      \"%s\"\n  expected: \"%s\"", file,
              cap.text.buf ? cap.text.buf : "", golden ? golden : "");
    CHECK_INT_EQ(res.text_len, glen);
    CHECK(res.text && !memcmp(res.text, golden, glen));
    rlhi_gen_result_release(&res);
    rlhi_buf_release(&cap.text);
    rlhi_free(golden);
    rlhi_free(ids);
}

/* log softmax in double, written out here as the independent reference. */
static double ref_logprob(const float *x, int V, int id)
{
    double mx = x[0], s = 0;
    int i;

    for (i = 1; i < V; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < V; i++)
        s += exp((double)x[i] - mx);
    return (double)x[id] - mx - log(s);
}

int main(void)
{
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    char mp[4096], tpath[4096];

    /* One thread: a 64-wide model gains nothing from more, and on the
     * loaded 2-core machine OpenMP's waiting made this program take 29 s
     * instead of 0.7 s (forward.c's threading is tested on its own). */
    omp_set_num_threads(1);

    /* check_data() returns a static buffer: copy each path. */
    if (!check_data(DIR "stories260K.bin") || !check_data(DIR "tok512.bin")) {
        TEST("stories260K data") SKIP("../shared/data/" DIR " is absent");
        return check_summary();
    }
    snprintf(mp, sizeof mp, "%s", check_data(DIR "stories260K.bin"));
    snprintf(tpath, sizeof tpath, "%s", check_data(DIR "tok512.bin"));

    TEST("load the model and its tokenizer") {
        CHECK_OK(rlhi_generate_load(mp, tpath, &m, &tok));
    }
    if (!m || !tok)
        return check_summary();

    TEST("llama2.c golden: -t 0.0 -n 200") {
        check_golden(m, tok, DIR "expected_run_t0_n200.txt", 0.0f, 0.9f, 0,
                     200);
    }
    TEST("llama2.c golden: -t 0.0, default 256 steps") {
        check_golden(m, tok, DIR "expected_run_t0_default_steps256.txt",
                     0.0f, 0.9f, 0, 256);
    }
    TEST("llama2.c golden: -t 1.0 -p 0.9 -s 133742") {
        check_golden(m, tok, DIR "expected_run_t1_p0.9_s133742.txt", 1.0f,
                     0.9f, 133742, 256);
    }

    TEST("llama2.c mode: a forced prompt is printed and counts as steps") {
        /* Greedy from BOS writes "Once upon a time, ..."; forcing that
         * prompt must give the same 200-step text. */
        const char *g = check_data(DIR "expected_run_t0_n200.txt");
        struct rlhi_gen_opts o;
        struct rlhi_gen_result res;
        int32_t *ids = NULL;
        size_t n = 0, glen = 0;
        char *golden = NULL;

        CHECK_OK(rlhi_tokenizer_encode(tok, "Once upon a time", 16,
                                       RLHI_ENC_BOS, &ids, &n));
        rlhi_gen_opts_default(&o);
        rlhi_sampler_params_llama2c(&o.sampler);
        o.sampler.temperature = 0;
        o.llama2c = true;
        o.max_tokens = 200;
        CHECK_OK(rlhi_generate(m, tok, ids, (int)n, &o, &res));
        CHECK_INT_EQ(res.n_tokens, 200 - (int)n + 1);
        if (g && rlhi_file_read(g, &golden, &glen) == 0)
            CHECK(res.text_len == glen && !memcmp(res.text, golden, glen));
        rlhi_gen_result_release(&res);

        /* fewer steps than prompt tokens: only forced text, run.c style */
        o.max_tokens = 3;
        CHECK_OK(rlhi_generate(m, tok, ids, (int)n, &o, &res));
        CHECK_INT_EQ(res.n_tokens, 0);
        CHECK(res.text_len > 0 && res.text_len < 16);
        CHECK(!memcmp(res.text, "Once upon a time", res.text_len));
        rlhi_gen_result_release(&res);
        rlhi_free(golden);
        rlhi_free(ids);
    }

    TEST("score = log-softmax of token-by-token logits") {
        const int V = m->cfg.vocab_size;
        int32_t *p = NULL, *c = NULL, *all;
        size_t np = 0, nc = 0, i;
        struct rlhi_infer *s = NULL;
        float *lg = rlhi_malloc((size_t)V * sizeof *lg), *lp, *lp2;
        double sum = 0, sum2 = 0, rsum = 0, maxerr = 0;

        CHECK_OK(rlhi_tokenizer_encode(tok, "Once upon a time", 16,
                                       RLHI_ENC_BOS, &p, &np));
        CHECK_OK(rlhi_tokenizer_encode(tok, " there was a big dog named "
                                       "Max.", 31, 0, &c, &nc));
        all = rlhi_malloc((np + nc) * sizeof *all);
        lp = rlhi_malloc(nc * sizeof *lp);
        lp2 = rlhi_malloc(nc * sizeof *lp2);
        memcpy(all, p, np * sizeof *all);
        memcpy(all + np, c, nc * sizeof *all);
        CHECK_OK(rlhi_score(m, p, (int)np, c, (int)nc, lp, &sum));

        /* reference: one token per forward call, logits of the last */
        CHECK_OK(rlhi_infer_new(&s, m, 0));
        for (i = 0; i + 1 < np + nc; i++) {
            rlhi_infer_forward(s, all + i, 1, lg, false);
            if (i + 1 >= np) {
                double r = ref_logprob(lg, V, all[i + 1]);

                rsum += r;
                maxerr = fmax(maxerr, fabs(r - lp[i + 1 - np]));
            }
        }
        /* two orders of float summation inside the forward pass: agree to
         * well under 1e-4 in log space */
        CHECK_NEAR(maxerr, 0, 1e-4, 0);
        CHECK_NEAR(sum, rsum, 1e-3, 0);
        CHECK(sum < 0 && sum > -200);

        /* two completions sharing the prompt = two separate calls */
        {
            const int32_t *cs[2] = {c, p + 1};
            int ns[2] = {(int)nc, (int)np - 1};
            float *outs[2] = {lp2, NULL};
            double sums[2];
            double one = 0;

            CHECK_OK(rlhi_score_n(m, p, (int)np, cs, ns, 2, outs, sums));
            CHECK(sums[0] == sum);
            CHECK(!memcmp(lp, lp2, nc * sizeof *lp));
            CHECK_OK(rlhi_score(m, p, (int)np, p + 1, (int)np - 1, NULL,
                                &one));
            CHECK(one == sums[1]);
        }

        /* an empty completion scores 0; bad input is an error */
        CHECK_OK(rlhi_score(m, p, (int)np, c, 0, NULL, &sum2));
        CHECK(sum2 == 0);
        CHECK_INT_EQ(rlhi_score(m, p, 0, c, (int)nc, lp, NULL), RLHI_EINVAL);
        c[1] = V;
        CHECK_INT_EQ(rlhi_score(m, p, (int)np, c, (int)nc, lp, NULL),
                     RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "outside the vocabulary") != NULL);
        {
            int32_t *big = rlhi_calloc(600, sizeof *big);

            CHECK_INT_EQ(rlhi_score(m, p, (int)np, big, 600, NULL, NULL),
                         RLHI_ERANGE);
            rlhi_free(big);
        }
        rlhi_infer_free(s);
        rlhi_free(lg);
        rlhi_free(lp);
        rlhi_free(lp2);
        rlhi_free(all);
        rlhi_free(p);
        rlhi_free(c);
    }

    TEST("N candidates sharing the prefill = N independent runs") {
        enum { N = 4 };
        const uint64_t seeds[N] = {11, 22, 33, 44};
        struct capture cap[N];
        struct rlhi_gen_opts o;
        struct rlhi_gen_result rn[N], r1;
        int32_t *ids = NULL;
        size_t n = 0;
        int i, distinct = 0;

        memset(cap, 0, sizeof cap);
        CHECK_OK(rlhi_tokenizer_encode(tok, "The cat", 7, RLHI_ENC_BOS, &ids,
                                       &n));
        rlhi_gen_opts_default(&o);
        o.sampler.temperature = 1.0f;
        o.sampler.top_p = 0.95f;
        o.max_tokens = 60;
        o.on_piece = capture_piece;
        o.user = cap;
        CHECK_OK(rlhi_generate_n(m, tok, ids, (int)n, &o, seeds, N, rn));
        o.on_piece = NULL;
        for (i = 0; i < N; i++) {
            o.sampler.seed = seeds[i];
            CHECK_OK(rlhi_generate(m, tok, ids, (int)n, &o, &r1));
            CHECK_INT_EQ(rn[i].n_tokens, r1.n_tokens);
            CHECK(rn[i].n_tokens == r1.n_tokens &&
                  !memcmp(rn[i].tokens, r1.tokens,
                          (size_t)r1.n_tokens * sizeof *r1.tokens));
            CHECK_STR_EQ(rn[i].text, r1.text);
            CHECK_STR_EQ(cap[i].text.buf ? cap[i].text.buf : "", rn[i].text);
            if (i && strcmp(rn[i].text, rn[0].text))
                distinct++;
            rlhi_gen_result_release(&r1);
        }
        CHECK(distinct >= 2); /* the seeds did make different texts */

        /* seeds NULL: candidate i uses seed + i */
        o.sampler.seed = 11;
        {
            struct rlhi_gen_result r2[2];

            CHECK_OK(rlhi_generate_n(m, tok, ids, (int)n, &o, NULL, 2, r2));
            CHECK_STR_EQ(r2[0].text, rn[0].text);
            o.sampler.seed = 12;
            CHECK_OK(rlhi_generate(m, tok, ids, (int)n, &o, &r1));
            CHECK_STR_EQ(r2[1].text, r1.text);
            rlhi_gen_result_release(&r1);
            rlhi_gen_result_release(&r2[0]);
            rlhi_gen_result_release(&r2[1]);
        }
        for (i = 0; i < N; i++) {
            rlhi_gen_result_release(&rn[i]);
            rlhi_buf_release(&cap[i].text);
        }
        rlhi_free(ids);
    }

    TEST("modern mode: length, stop ids, stop strings, abort") {
        struct capture cap = {RLHI_BUF_INIT, 0, 0};
        struct rlhi_gen_opts o;
        struct rlhi_gen_result full, r;
        const char *stop[2] = {"zzz", "girl"};
        int32_t bos = 1, sid;
        const char *cut;
        int k;

        rlhi_gen_opts_default(&o);
        o.sampler.temperature = 0;
        o.max_tokens = 40;
        o.ignore_eos = true;
        CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &full));
        CHECK_INT_EQ(full.n_tokens, 40);
        CHECK_INT_EQ(full.finish, RLHI_FINISH_LENGTH);
        CHECK(!strncmp(full.text, "Once upon a time", 16));

        /* stop string: the text is cut before it, the stream agrees */
        o.stop = stop;
        o.n_stop = 2;
        o.on_piece = capture_piece;
        o.user = &cap;
        CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &r));
        cut = strstr(full.text, "girl");
        CHECK(cut != NULL);
        CHECK_INT_EQ(r.finish, RLHI_FINISH_STOP);
        CHECK_INT_EQ(r.text_len, cut ? (size_t)(cut - full.text) : 0);
        CHECK(cut && !strncmp(r.text, full.text, (size_t)(cut - full.text)));
        CHECK_STR_EQ(cap.text.buf, r.text);
        rlhi_gen_result_release(&r);

        /* a stop string across tokens, and near-misses that are held back
         * for a while and then shown */
        {
            const char *st[2] = {"a time, therex", "little girl"};

            rlhi_buf_clear(&cap.text);
            o.stop = st;
            CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &r));
            cut = strstr(full.text, "little girl");
            CHECK(cut != NULL);
            CHECK_INT_EQ(r.text_len, cut ? (size_t)(cut - full.text) : 0);
            CHECK_STR_EQ(cap.text.buf, r.text);
            rlhi_gen_result_release(&r);

            st[1] = "Lily.x";
            rlhi_buf_clear(&cap.text);
            CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &r));
            CHECK_INT_EQ(r.finish, RLHI_FINISH_LENGTH);
            CHECK_STR_EQ(r.text, full.text);
            CHECK_STR_EQ(cap.text.buf, full.text);
            rlhi_gen_result_release(&r);
        }
        o.stop = NULL;
        o.n_stop = 0;

        /* stop id: the first time token 10 of the greedy text appears */
        sid = full.tokens[10];
        for (k = 0; full.tokens[k] != sid; k++)
            ;
        o.stop_ids = &sid;
        o.n_stop_ids = 1;
        o.on_piece = NULL;
        CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &r));
        CHECK_INT_EQ(r.n_tokens, k);
        CHECK_INT_EQ(r.stop_token, sid);
        CHECK_INT_EQ(r.finish, RLHI_FINISH_STOP);
        rlhi_gen_result_release(&r);
        o.stop_ids = NULL;
        o.n_stop_ids = 0;

        /* the callback stops it */
        rlhi_buf_clear(&cap.text);
        cap.calls = 0;
        cap.abort_after = 3;
        o.on_piece = capture_piece;
        CHECK_OK(rlhi_generate(m, tok, &bos, 1, &o, &r));
        CHECK_INT_EQ(r.finish, RLHI_FINISH_ABORT);
        CHECK_INT_EQ(r.n_tokens, 3);
        rlhi_gen_result_release(&r);

        /* bad requests */
        o.on_piece = NULL;
        CHECK_INT_EQ(rlhi_generate(m, tok, &bos, 0, &o, &r), RLHI_EINVAL);
        o.sampler.top_p = 2;
        CHECK_INT_EQ(rlhi_generate(m, tok, &bos, 1, &o, &r), RLHI_EINVAL);
        rlhi_gen_result_release(&full);
        rlhi_buf_release(&cap.text);
    }

    TEST("every allocation of generate and score can fail cleanly") {
        /* Count the allocations of a short run, then fail each in turn:
         * each must give RLHI_ENOMEM (no crash; ASan checks for leaks). */
        struct rlhi_gen_opts o;
        struct rlhi_gen_result r[2];
        const uint64_t seeds[2] = {1, 2};
        int32_t p[3] = {1, 400, 428}, c[2] = {426, 383};
        const int32_t *cs[2] = {c, c};
        int nc[2] = {2, 1};
        long count, i;
        int bad = 0;

        rlhi_gen_opts_default(&o);
        o.max_tokens = 4;
        rlhi__alloc_fail_at(0);
        CHECK_OK(rlhi_generate_n(m, tok, p, 3, &o, seeds, 2, r));
        count = rlhi__alloc_fail_at(0);
        rlhi_gen_result_release(&r[0]);
        rlhi_gen_result_release(&r[1]);
        CHECK(count > 5);
        for (i = 1; i <= count; i++) {
            int e;

            rlhi__alloc_fail_at(i);
            e = rlhi_generate_n(m, tok, p, 3, &o, seeds, 2, r);
            rlhi__alloc_fail_at(0);
            if (e != RLHI_ENOMEM) {
                bad++;
                if (e == 0) {
                    rlhi_gen_result_release(&r[0]);
                    rlhi_gen_result_release(&r[1]);
                }
            }
        }
        CHECK_INT_EQ(bad, 0);

        rlhi__alloc_fail_at(0);
        CHECK_OK(rlhi_score_n(m, p, 3, cs, nc, 2, NULL, NULL));
        count = rlhi__alloc_fail_at(0);
        for (i = 1, bad = 0; i <= count; i++) {
            int e;

            rlhi__alloc_fail_at(i);
            e = rlhi_score_n(m, p, 3, cs, nc, 2, NULL, NULL);
            rlhi__alloc_fail_at(0);
            bad += e != RLHI_ENOMEM;
        }
        CHECK_INT_EQ(bad, 0);
    }

    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    return check_summary();
}
