/* Tests of src/eval: win rate and bootstrap on known inputs, answer
 * matching (also on the real GSM8K and MATH-500 files), and the simulated
 * comparison on a scripted world. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/eval.h"

static void test_winrate(void)
{
    TEST("win rate: ties count half") {
        int oc[4] = {1, 1, 0, -1};
        struct rlhi_eval_winrate w;

        CHECK_OK(rlhi_eval_winrate(oc, 4, 200, 7, &w));
        CHECK_NEAR(w.rate, 0.625, 1e-12, 0);
        CHECK_INT_EQ(w.wins, 2);
        CHECK_INT_EQ(w.losses, 1);
        CHECK_INT_EQ(w.ties, 1);
        CHECK(w.lo <= w.rate && w.rate <= w.hi);
    }
    TEST("win rate: degenerate inputs have a point interval") {
        int all[10], k;
        struct rlhi_eval_winrate w;

        for (k = 0; k < 10; k++)
            all[k] = 1;
        CHECK_OK(rlhi_eval_winrate(all, 10, 100, 1, &w));
        CHECK_NEAR(w.rate, 1.0, 0, 0);
        CHECK_NEAR(w.lo, 1.0, 0, 0);
        CHECK_NEAR(w.hi, 1.0, 0, 0);
        for (k = 0; k < 10; k++)
            all[k] = 0;
        CHECK_OK(rlhi_eval_winrate(all, 10, 100, 1, &w));
        CHECK_NEAR(w.rate, 0.5, 0, 0);
        CHECK_NEAR(w.lo, 0.5, 0, 0);
        CHECK_NEAR(w.hi, 0.5, 0, 0);
        CHECK_INT_EQ(rlhi_eval_winrate(all, 0, 100, 1, &w), RLHI_EINVAL);
    }
    TEST("win rate: bootstrap interval matches the normal approximation") {
        /* 240 wins, 160 losses: p = 0.6, sd = sqrt(.24/400) = 0.0245, so
         * the 95% interval is about 0.552..0.648. Percentile bootstrap
         * with 2000 resamples lands within 0.01 of it. */
        int oc[400], k;
        struct rlhi_eval_winrate w, w2;

        for (k = 0; k < 400; k++)
            oc[k] = k % 5 < 3 ? 1 : -1;
        CHECK_OK(rlhi_eval_winrate(oc, 400, 2000, 3, &w));
        CHECK_NEAR(w.rate, 0.6, 1e-12, 0);
        CHECK_NEAR(w.lo, 0.552, 0.01, 0);
        CHECK_NEAR(w.hi, 0.648, 0.01, 0);
        CHECK_OK(rlhi_eval_winrate(oc, 400, 2000, 3, &w2));
        CHECK(w.lo == w2.lo && w.hi == w2.hi);
    }
    TEST("precision and recall") {
        CHECK_NEAR(rlhi_eval_precision(3, 1), 0.75, 1e-12, 0);
        CHECK_NEAR(rlhi_eval_recall(3, 3), 0.5, 1e-12, 0);
        CHECK_NEAR(rlhi_eval_precision(0, 0), 0.0, 0, 0);
    }
}

static void test_numbers(void)
{
    char out[64];

    TEST("gsm8k: reference and model numbers") {
        CHECK_OK(rlhi_eval_gsm8k_reference("so 9 * 2 = 18\n#### 18", out,
                                           sizeof out));
        CHECK_STR_EQ(out, "18");
        CHECK_OK(rlhi_eval_gsm8k_reference("#### 1,234", out, sizeof out));
        CHECK_STR_EQ(out, "1234");
        CHECK_INT_EQ(rlhi_eval_gsm8k_reference("no marker 5", out,
                                               sizeof out), RLHI_ENOTFOUND);
        CHECK_OK(rlhi_eval_final_number("First 3 then 4.\nThe answer is "
                                        "$1,050.00 in total.", out,
                                        sizeof out));
        CHECK_STR_EQ(out, "1050");
        CHECK_OK(rlhi_eval_final_number("12 apples, then -7", out,
                                        sizeof out));
        CHECK_STR_EQ(out, "-7");
        CHECK_INT_EQ(rlhi_eval_final_number("none here", out, sizeof out),
                     RLHI_ENOTFOUND);
        CHECK(rlhi_eval_number_equal("18", "18.0"));
        CHECK(!rlhi_eval_number_equal("18", "19"));
        CHECK(!rlhi_eval_number_equal("x", "19"));
        CHECK(rlhi_eval_answer_correct(RLHI_EVAL_GSM8K, "it makes 18 "
                                       "dollars", "18"));
        CHECK(!rlhi_eval_answer_correct(RLHI_EVAL_GSM8K, "it makes 17 "
                                        "dollars", "18"));
    }
    TEST("math: boxed and normalisation") {
        char b[128];

        CHECK_OK(rlhi_eval_math_boxed("so $\\boxed{1}$ and $\\boxed{\\frac{1}"
                                      "{2}}$.", b, sizeof b));
        CHECK_STR_EQ(b, "\\frac{1}{2}");
        CHECK_OK(rlhi_eval_math_boxed("\\boxed 5$", b, sizeof b));
        CHECK_STR_EQ(b, "5");
        CHECK_INT_EQ(rlhi_eval_math_boxed("\\boxed{open", b, sizeof b),
                     RLHI_ENOTFOUND);
        CHECK_INT_EQ(rlhi_eval_math_boxed("no box", b, sizeof b),
                     RLHI_ENOTFOUND);
        CHECK(rlhi_eval_math_equal("\\dfrac12", "\\frac{1}{2}"));
        CHECK(rlhi_eval_math_equal("0.5", "\\frac{1}{2}"));
        CHECK(rlhi_eval_math_equal("1/2", "\\frac{1}{2}"));
        CHECK(rlhi_eval_math_equal("90^\\circ", "90"));
        CHECK(rlhi_eval_math_equal("\\text{(C)}", "(C)"));
        CHECK(rlhi_eval_math_equal("x = 3", "3"));
        CHECK(rlhi_eval_math_equal("\\left( 3, \\frac{\\pi}{2} \\right)",
                                   "(3,\\frac{\\pi}{2})"));
        CHECK(rlhi_eval_math_equal("\\sqrt2", "\\sqrt{2}"));
        CHECK(rlhi_eval_math_equal("10,000", "10000"));
        CHECK(!rlhi_eval_math_equal("\\frac{1}{3}", "\\frac{1}{2}"));
        CHECK(!rlhi_eval_math_equal("3", "4"));
        CHECK(!rlhi_eval_math_equal("(3,4)", "(4,3)"));
    }
}

/* The reference solutions of a real set score 100% against its answers,
 * and 0-5% against the next item's answer (the matcher is not lenient). */
static void check_set(const char *rel, enum rlhi_eval_set_kind kind,
                      int rows)
{
    const char *path = check_data(rel);
    struct rlhi_eval_set set;
    int i, right = 0, shifted = 0;

    if (!path) {
        SKIP("eval data absent");
        return;
    }
    CHECK_OK(rlhi_eval_set_load(path, kind, &set));
    CHECK_INT_EQ(set.n, rows);
    for (i = 0; i < set.n; i++) {
        right += rlhi_eval_answer_correct(kind, set.items[i].solution,
                                          set.items[i].answer);
        shifted += rlhi_eval_answer_correct(kind, set.items[i].solution,
                                            set.items[(i + 1) % set.n]
                                                .answer);
    }
    CHECK_INT_EQ(right, set.n);
    CHECK_MSG(shifted < set.n / 20, "%d of %d shifted answers matched",
              shifted, set.n);
    rlhi_eval_set_release(&set);
}

static void test_sets(void)
{
    TEST("gsm8k test: every line parses, references score 100%")
        check_set("eval/gsm8k_test.jsonl", RLHI_EVAL_GSM8K, 1319);
    TEST("math500: every line parses, references score 100%")
        check_set("eval/math500_test.jsonl", RLHI_EVAL_MATH, 500);
    TEST("eval set: a bad line is named") {
        char path[] = "/tmp/rlhi-eval-XXXXXX";
        int fd = mkstemp(path);
        const char *text = "{\"question\":\"q\",\"answer\":\"#### 3\"}\n"
                           "{\"question\":\"q\",\"answer\":\"no number\"}\n";
        struct rlhi_eval_set set;

        CHECK(fd >= 0);
        if (fd >= 0) {
            CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
            close(fd);
            CHECK_INT_EQ(rlhi_eval_set_load(path, RLHI_EVAL_GSM8K, &set),
                         RLHI_EFORMAT);
            CHECK_MSG(strstr(rlhi_errmsg(), "line 2") != NULL, "message: %s",
                      rlhi_errmsg());
            unlink(path);
        }
    }
}

static void test_sim_compare(void)
{
    TEST("simulated compare: preferred styles beat random ones") {
        char dir[] = "/tmp/rlhi-evalw-XXXXXX";
        struct rlhi_sim_config c;
        struct rlhi_sim_truth t;
        struct rlhi_eval_sim_result ev;
        struct rlhi_rng rng;
        char **oracle, **rnd, *truth;
        int i;

        CHECK(mkdtemp(dir) != NULL);
        rlhi_sim_config_default(&c);
        c.n_users = 60;
        c.seed = 5;
        CHECK_OK(rlhi_sim_world_write(&c, NULL, NULL, dir, NULL));
        truth = rlhi_path_join(dir, "truth.jsonl");
        CHECK_OK(rlhi_sim_truth_load(truth, &t));
        oracle = calloc((size_t)t.n_items, sizeof *oracle);
        rnd = calloc((size_t)t.n_items, sizeof *rnd);
        rlhi_rng_seed(&rng, 9);
        for (i = 0; i < t.n_items; i++) {
            struct rlhi_sim_style st;
            struct rlhi_buf a = RLHI_BUF_INIT, b = RLHI_BUF_INIT;

            rlhi_sim_style_for(&t.users[t.items[i].user].persona, &st, &rng);
            rlhi_sim_answer_write(&t.items[i].req, &st, 0, &rng, &a);
            rlhi_sim_style_random(&st, &rng);
            rlhi_sim_answer_write(&t.items[i].req, &st, 0, &rng, &b);
            oracle[i] = a.buf;
            rnd[i] = b.buf;
        }
        CHECK_OK(rlhi_eval_sim_compare(&t, oracle, rnd, 500, 1, &ev));
        CHECK_INT_EQ(ev.win.n, t.n_items);
        /* docs/SIMULATION.md measures 85% for this on 200 users. */
        CHECK_MSG(ev.win.rate > 0.75, "oracle vs random %.3f", ev.win.rate);
        CHECK_NEAR(ev.correct_a, 1.0, 1e-12, 0);
        CHECK_OK(rlhi_eval_sim_compare(&t, oracle, oracle, 500, 1, &ev));
        CHECK_NEAR(ev.win.rate, 0.5, 0, 0);
        for (i = 0; i < t.n_items; i++) {
            rlhi_free(oracle[i]);
            rlhi_free(rnd[i]);
        }
        free(oracle);
        free(rnd);
        rlhi_sim_truth_release(&t);
        rlhi_free(truth);
        {
            static const char *const f[] = {"logs.jsonl", "truth.jsonl",
                                            "users.jsonl", "heldout.jsonl"};

            for (i = 0; i < 4; i++) {
                char *p = rlhi_path_join(dir, f[i]);

                unlink(p);
                rlhi_free(p);
            }
            rmdir(dir);
        }
    }
}

int main(void)
{
    test_winrate();
    test_numbers();
    test_sets();
    test_sim_compare();
    return check_summary();
}
