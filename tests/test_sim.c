/* Tests for the simulated world: the knowledge table, answer styles read
 * back, the judge, win rates, persona marginals, reactions, logs and truth,
 * determinism, and the corpus. */
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/sim.h"
#include "sim/sim_internal.h"

static char tmpdir[256];

static char *path_in(const char *name)
{
    static char p[512];

    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void file_sha(const char *path, char hex[65])
{
    char *data = NULL;
    size_t len = 0;

    hex[0] = 0;
    if (rlhi_file_read(path, &data, &len) == 0) {
        rlhi_sha256_hex(data, len, hex);
        rlhi_free(data);
    }
}

/* Integers in a string, as the judge reads them. */
static int count_ints(const char *s, long *first)
{
    int n = 0;

    while (*s) {
        if (*s >= '0' && *s <= '9') {
            if (!n)
                *first = strtol(s, NULL, 10);
            n++;
            while (*s >= '0' && *s <= '9')
                s++;
        } else {
            s++;
        }
    }
    return n;
}

/* An answerer that always says the same thing, and one that fails. */
static const char *fixed_answer(void *ctx, const struct rlhi_sim_msg *h,
                                int n, struct rlhi_sim_ask *ask)
{
    int *calls = ctx;

    (void)h;
    (void)ask;
    (*calls)++;
    return n % 4 == 1 ? "Mars has 2 moons." : "ok";
}

static const char *failing_answer(void *ctx, const struct rlhi_sim_msg *h,
                                  int n, struct rlhi_sim_ask *ask)
{
    (void)ctx;
    (void)h;
    (void)n;
    (void)ask;
    rlhi_err(RLHI_EIO, "model 'x' is gone");
    return NULL;
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rlhi-test-sim-%d", (int)getpid());
    rlhi_mkdir_p(tmpdir);

    TEST("knowledge table: one number, own cue, no other cue, vocabulary") {
        int t, f, bad = 0;

        CHECK(rlhi_sim_topic_count() >= 20);
        for (t = 0; t < rlhi__ntopics; t++) {
            for (f = 0; f < RLHI__FACTS_PER_TOPIC; f++) {
                const struct rlhi__fact *x = &rlhi__topics[t].facts[f];
                const char *s[2] = {x->plain, x->tech};
                int k;

                for (k = 0; k < 2; k++) {
                    struct rlhi_buf b = RLHI_BUF_INIT;
                    struct rlhi_sim_reading rd;
                    struct rlhi_sim_request q;
                    long v = -1;
                    int right, wrong;

                    rlhi__fact_put(&b, s[k], x->value);
                    memset(&q, 0, sizeof q);
                    q.kind = RLHI_SIM_FACTS;
                    q.topic = t;
                    /* The judge finds exactly this fact, right, and no
                     * other fact's cue (which would read as wrong). */
                    rlhi_sim_check(b.buf, &q, &right, &wrong);
                    if (count_ints(b.buf, &v) != 1 || v != x->value ||
                        right != 1 || wrong != 0) {
                        fprintf(stderr, "  fact %s/%d/%d: '%s' ints %d "
                                "right %d wrong %d\n",
                                rlhi__topics[t].name, f, k, b.buf,
                                count_ints(b.buf, &v), right, wrong);
                        bad++;
                    }
                    /* Plain sentences hold no technical term; technical
                     * ones at least one. */
                    rlhi_sim_style_read(b.buf, &rd);
                    if ((k == 0 && rd.tech) || (k == 1 && !rd.tech) ||
                        rd.formal || rd.casual || rd.plain) {
                        fprintf(stderr, "  fact %s/%d/%d markers: tech %d "
                                "plain %d formal %d casual %d: '%s'\n",
                                rlhi__topics[t].name, f, k, rd.tech,
                                rd.plain, rd.formal, rd.casual, b.buf);
                        bad++;
                    }
                    /* With a wrong number it reads as wrong. */
                    rlhi_buf_clear(&b);
                    rlhi__fact_put(&b, s[k], x->value + 1);
                    rlhi_sim_check(b.buf, &q, &right, &wrong);
                    if (right != 0 || wrong != 1) {
                        fprintf(stderr, "  fact %s/%d/%d wrong not found\n",
                                rlhi__topics[t].name, f, k);
                        bad++;
                    }
                    rlhi_buf_release(&b);
                }
            }
        }
        CHECK_INT_EQ(bad, 0);
    }

    TEST("style read-back of 20000 generated answers") {
        struct rlhi_rng r;
        long ok[RLHI_SIM_NDIM] = {0}, n = 20000, i;
        int d, maxc_w = 0, minc_w = 1 << 30, maxc_s = 0, mind_s = 1 << 30;
        int mind_w = 1 << 30;
        long right_ok = 0, wrong_ok = 0, nerr = 0;

        rlhi_rng_seed(&r, 11);
        for (i = 0; i < n; i++) {
            struct rlhi_sim_request q;
            struct rlhi_sim_style st;
            struct rlhi_sim_reading rd;
            struct rlhi_buf b = RLHI_BUF_INIT;
            int err = rlhi_rng_below(&r, 4) == 0, c;

            rlhi_sim_request_sample(&q, 0.1, &r);
            rlhi_sim_style_random(&st, &r);
            CHECK_OK(rlhi_sim_answer_write(&q, &st, err, &r, &b));
            rlhi_sim_style_read(b.buf, &rd);
            for (d = 0; d < RLHI_SIM_NDIM; d++)
                ok[d] += rd.style.v[d] == st.v[d];
            if (i < 3 && getenv("RLHI_TEST_VERBOSE"))
                fprintf(stderr, "%s\n---\n", b.buf);
            if (st.v[RLHI_SIM_INFORM]) {
                mind_s = rd.sentences < mind_s ? rd.sentences : mind_s;
                mind_w = rd.words < mind_w ? rd.words : mind_w;
            } else {
                maxc_s = rd.sentences > maxc_s ? rd.sentences : maxc_s;
                maxc_w = rd.words > maxc_w ? rd.words : maxc_w;
                minc_w = rd.words < minc_w ? rd.words : minc_w;
            }
            c = rlhi_sim_check(b.buf, &q, NULL, NULL);
            if (err) {
                nerr++;
                wrong_ok += c == RLHI_SIM_WRONG;
            } else {
                right_ok += c == RLHI_SIM_RIGHT;
            }
            rlhi_buf_release(&b);
        }
        printf("read-back accuracy over %ld answers: expertise %.4f, "
               "informativeness %.4f, tone %.4f, structure %.4f\n", n,
               (double)ok[0] / n, (double)ok[1] / n, (double)ok[2] / n,
               (double)ok[3] / n);
        printf("concise: at most %d sentences, %d-%d words; detailed: at "
               "least %d sentences, %d words\n", maxc_s, minc_w, maxc_w,
               mind_s, mind_w);
        printf("correctness read: right answers %.4f, wrong answers %.4f\n",
               (double)right_ok / (n - nerr), (double)wrong_ok / nerr);
        /* The writer and reader are built together: every answer must read
         * back exactly. */
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            CHECK_MSG(ok[d] == n, "%s read back %ld of %ld",
                      rlhi_sim_dim_name(d), ok[d], n);
        CHECK_INT_EQ(right_ok, n - nerr);
        CHECK_INT_EQ(wrong_ok, nerr);
    }

    TEST("style reader on free text") {
        struct rlhi_sim_reading rd;

        rlhi_sim_style_read("", &rd);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_EXPERTISE], -1);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_TONE], -1);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_STRUCTURE], -1);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_INFORM], 0);
        rlhi_sim_style_read("hey lol that's super cool!", &rd);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_TONE], 0);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_STRUCTURE], 0);
        rlhi_sim_style_read("Furthermore, the sidereal month lasts 27 days."
                            "\n\n1. one\n2. two\n", &rd);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_TONE], 1);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_EXPERTISE], 1);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_STRUCTURE], 1);
        CHECK_INT_EQ(rd.list_lines, 2);
        /* A possessive is not a contraction; "it's" is. */
        rlhi_sim_style_read("Jupiter's moons", &rd);
        CHECK_INT_EQ(rd.casual, 0);
        rlhi_sim_style_read("it's fine", &rd);
        CHECK_INT_EQ(rd.casual, 1);
        rlhi_sim_style_read("don't, you're, we'll, I've, I'm, she'd", &rd);
        CHECK_INT_EQ(rd.casual, 6);
        rlhi_sim_style_read("**Key points:**\nMars has 2 moons.", &rd);
        CHECK_INT_EQ(rd.style.v[RLHI_SIM_STRUCTURE], 1);
    }

    TEST("judge prefers the persona-matched and the correct answer") {
        struct rlhi_rng r;
        int i, wins = 0, n = 0, correct_wins = 0, nc = 0, ties = 0;

        rlhi_rng_seed(&r, 5);
        for (i = 0; i < 2000; i++) {
            struct rlhi_sim_persona p;
            struct rlhi_sim_request q;
            struct rlhi_sim_style good, bad;
            struct rlhi_buf a = RLHI_BUF_INIT, b = RLHI_BUF_INIT;
            int d, cares = 0;

            rlhi_sim_persona_sample(&p, &r);
            rlhi_sim_request_sample(&q, 0, &r);
            rlhi_sim_style_for(&p, &good, &r);
            bad = good;
            for (d = 0; d < RLHI_SIM_NDIM; d++)
                if (p.pref[d]) {
                    bad.v[d] = (int8_t)!good.v[d];
                    cares++;
                }
            rlhi_sim_answer_write(&q, &good, 0, &r, &a);
            rlhi_sim_answer_write(&q, &bad, 0, &r, &b);
            if (cares) {
                int c = rlhi_sim_compare(a.buf, b.buf, &q, &p);

                n++;
                wins += c == 1;
            } else {
                ties += rlhi_sim_compare(a.buf, b.buf, &q, &p) == 0;
            }
            /* Right in the wrong style beats wrong in the right style. */
            rlhi_buf_clear(&a);
            rlhi_sim_answer_write(&q, &good, 1, &r, &a);
            nc++;
            correct_wins += rlhi_sim_compare(b.buf, a.buf, &q, &p) == 1;
            rlhi_buf_release(&a);
            rlhi_buf_release(&b);
        }
        CHECK_INT_EQ(wins, n);
        CHECK_INT_EQ(correct_wins, nc);
        CHECK(n > 1900);
        (void)ties;
    }

    TEST("win rate and bootstrap interval") {
        int o[400], i, r;
        double rate, lo, hi, rate2, lo2, hi2;

        /* 200 wins, 100 losses, 100 ties: (200 + 50) / 400. */
        for (i = 0; i < 400; i++)
            o[i] = i < 200 ? 1 : i < 300 ? -1 : 0;
        CHECK_OK(rlhi_sim_winrate(o, 400, 2000, 3, &rate, &lo, &hi));
        CHECK_NEAR(rate, 0.625, 1e-12, 0);
        /* Binomial-like sd: sqrt(var/n), var of {1,0,.5} with these
         * shares = 0.171875; sd = 0.0207; the 95% interval is about
         * +-0.0406. Tolerance 0.01 for resampling noise. */
        CHECK_NEAR(hi - lo, 2 * 1.96 * sqrt(0.171875 / 400), 0.01, 0);
        CHECK(lo < rate && rate < hi);
        CHECK_OK(rlhi_sim_winrate(o, 400, 2000, 3, &rate2, &lo2, &hi2));
        CHECK(lo == lo2 && hi == hi2);
        r = rlhi_sim_winrate(o, 0, 10, 1, &rate, &lo, &hi);
        CHECK_INT_EQ(r, RLHI_EINVAL);
    }

    TEST("persona marginals over 20000 users") {
        struct rlhi_rng r;
        long hi[RLHI_SIM_NDIM] = {0}, lo[RLHI_SIM_NDIM] = {0}, n = 20000, i;
        int d;

        rlhi_rng_seed(&r, 99);
        for (i = 0; i < n; i++) {
            struct rlhi_sim_persona p;

            rlhi_sim_persona_sample(&p, &r);
            for (d = 0; d < RLHI_SIM_NDIM; d++) {
                hi[d] += p.pref[d] > 0;
                lo[d] += p.pref[d] < 0;
            }
        }
        /* Binomial sd at n=20000 is at most 0.0035; 0.02 is > 5 sd. */
        for (d = 0; d < RLHI_SIM_NDIM; d++) {
            double ph = (double)hi[d] / n, pl = (double)lo[d] / n;

            printf("persona %-16s high %.4f (target %.3f), low %.4f "
                   "(target %.4f)\n", rlhi_sim_dim_name(d), ph,
                   rlhi_sim_marginal_high[d], pl,
                   (1 - rlhi_sim_marginal_high[d]) * RLHI_SIM_LOW_SHARE);
            CHECK_NEAR(ph, rlhi_sim_marginal_high[d], 0.02, 0);
            CHECK_NEAR(pl, (1 - rlhi_sim_marginal_high[d]) *
                               RLHI_SIM_LOW_SHARE, 0.02, 0);
        }
    }

    TEST("reactions: every feedback kind has text; corrections") {
        struct rlhi_rng r;
        struct rlhi_sim_request q;
        char text[320];
        int d, v, k;

        rlhi_rng_seed(&r, 2);
        rlhi_sim_request_sample(&q, 0, &r);
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            for (v = 0; v < 2; v++)
                for (k = 0; k < 20; k++) {
                    rlhi_sim_feedback_text(d, v, &q, &r, text, sizeof text);
                    CHECK(strlen(text) > 3 && !strchr(text, '%'));
                }
        memset(&q, 0, sizeof q);
        q.kind = RLHI_SIM_ARITH;
        q.form = 0;
        q.a = 37;
        q.b = 12;
        q.answer = 444;
        for (k = 0, v = 0; k < 60; k++) {
            rlhi_sim_correction_text(&q, NULL, &r, text, sizeof text);
            v += strstr(text, "444") != NULL;
            CHECK(!strchr(text, '%'));
        }
        CHECK(v > 5);
    }

    TEST("world: determinism, WildChat keys, truth covers every user turn") {
        struct rlhi_sim_config c;
        struct rlhi_sim_stats st;
        char h1[4][65], h2[4][65], h3[65];
        static const char *const files[4] = {"logs.jsonl", "truth.jsonl",
                                             "users.jsonl", "heldout.jsonl"};
        int k;

        rlhi_sim_config_default(&c);
        c.n_users = 120;
        c.seed = 7;
        CHECK_OK(rlhi_sim_world_write(&c, NULL, NULL, tmpdir, &st));
        for (k = 0; k < 4; k++)
            file_sha(path_in(files[k]), h1[k]);
        CHECK_OK(rlhi_sim_world_write(&c, NULL, NULL, tmpdir, &st));
        for (k = 0; k < 4; k++) {
            file_sha(path_in(files[k]), h2[k]);
            CHECK_STR_EQ(h1[k], h2[k]);
        }
        c.seed = 8;
        CHECK_OK(rlhi_sim_world_write(&c, NULL, NULL, tmpdir, &st));
        file_sha(path_in("logs.jsonl"), h3);
        CHECK(strcmp(h3, h1[0]) != 0);
        CHECK_INT_EQ(st.users, 120);
        CHECK(st.max_conv > 5 && st.min_conv == 1);
    }

    TEST("world: logs parse, alternate roles, labels match the truth") {
        FILE *f = fopen(path_in("logs.jsonl"), "r");
        FILE *g = fopen(path_in("truth.jsonl"), "r");
        char *line = NULL;
        size_t cap = 0;
        long nconv = 0, nuser = 0, nlab = 0, bad = 0, missing = 0;
        json_t *labels = json_object();

        CHECK(f && g);
        while (g && getline(&line, &cap, g) > 0) {
            json_t *o = json_loads(line, 0, NULL);
            const char *type = json_string_value(json_object_get(o, "type"));

            if (!o) {
                bad++;
                continue;
            }
            if (type && !strcmp(type, "turn")) {
                char key[128];
                const char *lab =
                    json_string_value(json_object_get(o, "label"));

                snprintf(key, sizeof key, "%s/%lld",
                         json_string_value(
                             json_object_get(o, "conversation_hash")),
                         (long long)json_integer_value(
                             json_object_get(o, "turn_index")));
                json_object_set_new(labels, key, json_string(lab));
                nlab++;
            }
            json_decref(o);
        }
        while (f && getline(&line, &cap, f) > 0) {
            static const char *const top[] = {
                "conversation_hash", "model", "timestamp", "turn",
                "language", "toxic", "redacted", "hashed_ip", "conversation",
            };
            static const char *const per[] = {
                "role", "content", "hashed_ip", "timestamp",
                "turn_identifier", "language", "toxic",
            };
            json_t *o = json_loads(line, 0, NULL), *conv;
            size_t i, k;

            nconv++;
            if (!o) {
                bad++;
                continue;
            }
            for (k = 0; k < sizeof top / sizeof *top; k++)
                bad += json_object_get(o, top[k]) == NULL;
            conv = json_object_get(o, "conversation");
            bad += json_array_size(conv) < 2 ||
                   json_array_size(conv) % 2 != 0;
            bad += (size_t)json_integer_value(json_object_get(o, "turn")) !=
                   json_array_size(conv) / 2;
            for (i = 0; i < json_array_size(conv); i++) {
                json_t *m = json_array_get(conv, i);
                const char *role =
                    json_string_value(json_object_get(m, "role"));

                for (k = 0; k < sizeof per / sizeof *per; k++)
                    bad += json_object_get(m, per[k]) == NULL;
                bad += !role ||
                       strcmp(role, i % 2 ? "assistant" : "user") != 0;
                if (role && !strcmp(role, "user")) {
                    char key[128];

                    nuser++;
                    snprintf(key, sizeof key, "%s/%zu",
                             json_string_value(json_object_get(
                                 o, "conversation_hash")), i);
                    missing += json_object_get(labels, key) == NULL;
                }
            }
            json_decref(o);
        }
        free(line);
        if (f)
            fclose(f);
        if (g)
            fclose(g);
        json_decref(labels);
        CHECK_INT_EQ(bad, 0);
        CHECK_INT_EQ(missing, 0);
        CHECK_INT_EQ(nlab, nuser);
        CHECK(nconv > 200);
    }

    TEST("world: the scripted assistant follows feedback") {
        FILE *g = fopen(path_in("truth.jsonl"), "r");
        char *line = NULL;
        size_t cap = 0;
        long asked = 0, followed = 0;
        json_t *prev = NULL;

        /* Truth records of a conversation come in message order: a
         * feedback turn, then the answer to it with its read-back style. */
        while (g && getline(&line, &cap, g) > 0) {
            json_t *o = json_loads(line, 0, NULL);
            const char *type = json_string_value(json_object_get(o, "type"));

            if (prev && type && !strcmp(type, "answer")) {
                const char *dim = json_string_value(
                    json_object_get(prev, "dimension"));
                const char *want = json_string_value(
                    json_object_get(prev, "target"));
                const char *got = json_string_value(json_object_get(
                    json_object_get(o, "read"), dim));

                asked++;
                followed += got && !strcmp(got, want);
            }
            json_decref(prev);
            prev = NULL;
            if (type && !strcmp(type, "turn") &&
                json_object_get(o, "dimension") &&
                !strcmp(json_string_value(json_object_get(o, "label")),
                        "reattempt_feedback"))
                prev = json_incref(o);
            json_decref(o);
        }
        json_decref(prev);
        free(line);
        if (g)
            fclose(g);
        printf("scripted assistant followed %ld of %ld feedback turns\n",
               followed, asked);
        /* p_follow is 0.9; binomial sd at n ~ 100 is 0.03. */
        CHECK(asked > 50);
        CHECK_NEAR((double)followed / (double)(asked ? asked : 1), 0.9,
                   0.1, 0);
    }

    TEST("world: any answerer through the callback; failures propagate") {
        struct rlhi_sim_config c;
        struct rlhi_sim_stats st;
        int calls = 0, r;
        char *data = NULL;
        size_t len = 0;
        char dir[300];

        snprintf(dir, sizeof dir, "%s/cb", tmpdir);
        rlhi_sim_config_default(&c);
        c.n_users = 10;
        CHECK_OK(rlhi_sim_world_write(&c, fixed_answer, &calls, dir, &st));
        CHECK(calls > 10);
        CHECK_OK(rlhi_file_read(path_in("cb/logs.jsonl"), &data, &len));
        CHECK(data && strstr(data, "\"Mars has 2 moons.\""));
        rlhi_free(data);
        r = rlhi_sim_world_write(&c, failing_answer, NULL, dir, &st);
        CHECK_INT_EQ(r, RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "model 'x' is gone") != NULL);
    }

    TEST("truth loads; held-out items; oracle beats random") {
        struct rlhi_sim_truth t;
        struct rlhi_rng r;
        int i, o[1024], n = 0;
        double rate, lo, hi;

        CHECK_OK(rlhi_sim_truth_load(path_in("truth.jsonl"), &t));
        CHECK_INT_EQ(t.n_users, 120);
        CHECK_INT_EQ(t.n_items, 240);
        rlhi_rng_seed(&r, 4);
        for (i = 0; i < t.n_items && n < 1024; i++) {
            struct rlhi_sim_style a, b;
            struct rlhi_buf x = RLHI_BUF_INIT, y = RLHI_BUF_INIT;
            const struct rlhi_sim_persona *p =
                &t.users[t.items[i].user].persona;

            rlhi_sim_style_for(p, &a, &r);
            rlhi_sim_style_random(&b, &r);
            rlhi_sim_answer_write(&t.items[i].req, &a, 0, &r, &x);
            rlhi_sim_answer_write(&t.items[i].req, &b, 0, &r, &y);
            o[n++] = rlhi_sim_compare(x.buf, y.buf, &t.items[i].req, p);
            rlhi_buf_release(&x);
            rlhi_buf_release(&y);
        }
        CHECK_OK(rlhi_sim_winrate(o, n, 1000, 1, &rate, &lo, &hi));
        printf("oracle style vs random style win rate %.3f [%.3f, %.3f] "
               "(simulated)\n", rate, lo, hi);
        CHECK(lo > 0.7);
        if (t.n_items)
            CHECK_INT_EQ(rlhi_sim_truth_find(&t, t.items[3].id), 3);
        rlhi_sim_truth_release(&t);
    }

    TEST("truth: bad file gives file and line") {
        struct rlhi_sim_truth t;
        FILE *f = fopen(path_in("bad.jsonl"), "w");
        int r;

        fputs("{\"type\":\"user\",\"hashed_ip\":\"x\",\"persona\":"
              "{\"expertise\":\"expert\",\"informativeness\":\"any\","
              "\"tone\":\"formal\",\"structure\":\"prose\"}}\n{oops\n", f);
        fclose(f);
        r = rlhi_sim_truth_load(path_in("bad.jsonl"), &t);
        CHECK_INT_EQ(r, RLHI_EFORMAT);
        CHECK(strstr(rlhi_errmsg(), "bad.jsonl") &&
              strstr(rlhi_errmsg(), "line 2"));
        r = rlhi_sim_truth_load(path_in("none.jsonl"), &t);
        CHECK_INT_EQ(r, RLHI_EIO);
    }

    TEST("feedback share of follow-up turns over 2000 users") {
        struct rlhi_sim_config c;
        struct rlhi_sim_stats st;
        double share;

        rlhi_sim_config_default(&c);
        c.n_users = 2000;
        c.seed = 3;
        c.heldout_per_user = 0;
        CHECK_OK(rlhi_sim_world_write(&c, NULL, NULL, tmpdir, &st));
        share = (double)st.dissatisfied / (double)st.followups;
        printf("2000 users: %ld conversations, %ld follow-up turns, "
               "feedback share %.4f (WildChat 0.265), %.2f s\n",
               st.conversations, st.followups, share, st.seconds);
        /* The band: WildChat's 26.5% +- 3 points. */
        CHECK_NEAR(share, 0.265, 0.03, 0);
        CHECK(st.label[RLHI_SIM_L_REATTEMPT_FEEDBACK] > 0 &&
              st.label[RLHI_SIM_L_REATTEMPT_NO_GUIDANCE] > 0 &&
              st.label[RLHI_SIM_L_CLARIFICATION] > 0 &&
              st.label[RLHI_SIM_L_POSITIVE] > 0 &&
              st.label[RLHI_SIM_L_CONTINUE] > 0 &&
              st.label[RLHI_SIM_L_OTHER] > 0);
    }

    TEST("corpus: deterministic JSONL with revisions after feedback") {
        FILE *f = fopen(path_in("corpus.jsonl"), "w");
        char h1[65], h2[65];
        char *line = NULL;
        size_t cap = 0;
        long n = 0, bad = 0, revised = 0;

        CHECK_OK(rlhi_sim_corpus_write(f, 500, 9, false));
        fclose(f);
        file_sha(path_in("corpus.jsonl"), h1);
        f = fopen(path_in("corpus.jsonl"), "w");
        CHECK_OK(rlhi_sim_corpus_write(f, 500, 9, false));
        fclose(f);
        file_sha(path_in("corpus.jsonl"), h2);
        CHECK_STR_EQ(h1, h2);
        f = fopen(path_in("corpus.jsonl"), "r");
        while (f && getline(&line, &cap, f) > 0) {
            json_t *o = json_loads(line, 0, NULL);
            json_t *m = json_object_get(o, "messages");
            size_t i;

            n++;
            bad += !o || json_array_size(m) < 2;
            for (i = 0; i < json_array_size(m); i++) {
                const char *role = json_string_value(
                    json_object_get(json_array_get(m, i), "role"));

                bad += !role ||
                       strcmp(role, i % 2 ? "assistant" : "user") != 0;
            }
            /* A feedback turn: the two answers differ in exactly one
             * read-back dimension. */
            if (json_array_size(m) >= 4) {
                struct rlhi_sim_reading a, b;
                int d, diff = 0;

                rlhi_sim_style_read(json_string_value(json_object_get(
                                        json_array_get(m, 1), "content")),
                                    &a);
                rlhi_sim_style_read(json_string_value(json_object_get(
                                        json_array_get(m, 3), "content")),
                                    &b);
                for (d = 0; d < RLHI_SIM_NDIM; d++)
                    diff += a.style.v[d] != b.style.v[d];
                revised += diff == 1;
            }
            json_decref(o);
        }
        free(line);
        if (f)
            fclose(f);
        CHECK_INT_EQ(n, 500);
        CHECK_INT_EQ(bad, 0);
        printf("corpus: %ld of %ld conversations revise one dimension after "
               "feedback\n", revised, n);
        CHECK(revised > 150);
    }

    {
        char cmd[600];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return check_summary();
}
