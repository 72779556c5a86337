/* Tests for feedback detection: the case file tests/cases/feedback.test,
 * the rules' speed, the stage over a store (labels, export, resume), and
 * the held-out WildChat measurement (reported, never asserted on). */
#include <unistd.h>

#include "check.h"
#include "rlhi/pipeline.h"
#include "rlhi/store.h"

/* Reads "key: value" blocks; "\n" in values becomes a newline. Calls `fn`
 * with the block's values (NULL when absent). Returns blocks seen, or -1. */
struct fb_case {
    char *request, *answer, *turn, *expect;
    int line;
};

static char *unescape(const char *s)
{
    char *o = rlhi_malloc(strlen(s) + 1), *p = o;

    for (; *s; s++) {
        if (s[0] == '\\' && s[1] == 'n') {
            *p++ = '\n';
            s++;
        } else {
            *p++ = *s;
        }
    }
    *p = 0;
    return o;
}

static int read_cases(const char *path, struct fb_case **out)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    struct fb_case *cs = NULL, cur;
    int n = 0, lno = 0;
    bool open = false;

    if (!f)
        return -1;
    memset(&cur, 0, sizeof cur);
    for (;;) {
        char *got = fgets(line, sizeof line, f);
        size_t len = got ? strlen(line) : 0;

        lno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!got || len == 0) {
            if (open) {
                cs = rlhi_realloc(cs, (size_t)(n + 1) * sizeof *cs);
                cs[n++] = cur;
                memset(&cur, 0, sizeof cur);
                open = false;
            }
            if (!got)
                break;
            continue;
        }
        if (line[0] == '#')
            continue;
        if (!open)
            cur.line = lno;
        open = true;
        if (!strncmp(line, "request: ", 9))
            cur.request = unescape(line + 9);
        else if (!strncmp(line, "answer: ", 8))
            cur.answer = unescape(line + 8);
        else if (!strncmp(line, "turn: ", 6))
            cur.turn = unescape(line + 6);
        else if (!strncmp(line, "expect: ", 8))
            cur.expect = rlhi_strdup(line + 8);
        else
            fprintf(stderr, "%s:%d: unknown key\n", path, lno);
    }
    fclose(f);
    *out = cs;
    return n;
}

static void free_cases(struct fb_case *cs, int n)
{
    for (int i = 0; i < n; i++) {
        rlhi_free(cs[i].request);
        rlhi_free(cs[i].answer);
        rlhi_free(cs[i].turn);
        rlhi_free(cs[i].expect);
    }
    rlhi_free(cs);
}

/* Writes a small WildChat-shaped log with known turns. */
static void write_log(const char *path, int nconv)
{
    FILE *f = fopen(path, "w");

    for (int i = 0; i < nconv; i++)
        fprintf(f, "{\"conversation_hash\": \"c%04d\", \"hashed_ip\": "
                   "\"u%d\", \"conversation\": ["
                   "{\"role\": \"user\", \"content\": \"Write a poem about "
                   "the sea number %d\"},"
                   "{\"role\": \"assistant\", \"content\": \"The sea is "
                   "wide and deep and blue.\"},"
                   "{\"role\": \"user\", \"content\": \"make it shorter\"},"
                   "{\"role\": \"assistant\", \"content\": \"Blue sea.\"},"
                   "{\"role\": \"user\", \"content\": \"thanks!\"}]}\n",
                i, i % 7, i);
    fclose(f);
}

int main(void)
{
    const char *cases_path = getenv("RLHI_CASES") ? getenv("RLHI_CASES")
                                                  : "tests/cases";
    char path[4096];
    struct rlhi_feedback_detector *d = NULL;

    CHECK_OK(rlhi_feedback_detector_new(&d));
    if (!d)
        return check_summary();

    TEST("label names round-trip") {
        for (int i = 0; i < RLHI_FB_NLABELS; i++)
            CHECK_INT_EQ(rlhi_feedback_label_parse(
                             rlhi_feedback_label_name(i)), i);
        CHECK_INT_EQ(rlhi_feedback_label_parse("nope"), -1);
    }

    TEST("feedback.test cases") {
        struct fb_case *cs = NULL;
        int n, per_label[RLHI_FB_NLABELS] = {0};

        snprintf(path, sizeof path, "%s/feedback.test", cases_path);
        n = read_cases(path, &cs);
        CHECK_MSG(n >= 60, "%s: %d cases, want at least 60", path, n);
        for (int i = 0; i < n; i++) {
            struct fb_case *c = &cs[i];
            struct rlhi_fb_result r;
            char want[64] = "", got[128];
            bool wd, wa;
            int wl;

            if (!c->answer || !c->turn || !c->expect) {
                CHECK_MSG(0, "%s:%d: case lacks answer, turn or expect",
                          path, c->line);
                continue;
            }
            sscanf(c->expect, "%63s", want);
            wl = rlhi_feedback_label_parse(want);
            wd = strstr(c->expect, "dissatisfied") != NULL;
            wa = strstr(c->expect, "actionable") != NULL;
            CHECK_MSG(wl >= 0, "%s:%d: unknown label '%s'", path, c->line,
                      want);
            if (wl < 0)
                continue;
            per_label[wl]++;
            CHECK_OK(rlhi_feedback_classify(d, c->request, c->answer,
                                            c->turn, &r));
            snprintf(got, sizeof got, "%s%s%s (rule %s)",
                     rlhi_feedback_label_name(r.label),
                     r.dissatisfied ? " dissatisfied" : "",
                     r.actionable ? " actionable" : "", r.rule);
            CHECK_MSG(r.label == wl && r.dissatisfied == wd &&
                          r.actionable == wa,
                      "%s:%d: turn \"%.60s\": got %s, expected %s", path,
                      c->line, c->turn, got, c->expect);
        }
        for (int l = 0; l < RLHI_FB_NLABELS; l++)
            CHECK_MSG(per_label[l] >= 3, "label %s has %d cases, want 3+",
                      rlhi_feedback_label_name(l), per_label[l]);
        free_cases(cs, n);
    }

    TEST("70000 turns in a row: every one labelled (speed printed)") {
        static const char *turns[] = {
            "make it shorter", "thanks!", "continue",
            "No, that's wrong. The capital is Canberra.",
            "What about Germany?", "try again",
            "can you put that in a table with their distance from the sun?",
        };
        const char *answer =
            "Introducing the HydroMax, a sleek stainless steel water bottle "
            "designed for life on the go. With double-wall vacuum insulation "
            "it keeps drinks cold for 24 hours and hot for 12. Would you "
            "like a shorter version?";
        struct rlhi_fb_result r;
        double t0 = rlhi_time_now(), dt, per_min;
        int i, n = 70000, bad = 0, per_label[RLHI_FB_NLABELS] = {0};

        for (i = 0; i < n; i++) {
            if (rlhi_feedback_classify(d, "Write a product description for "
                                          "a water bottle.", answer,
                                       turns[i % 7], &r) ||
                r.label < 0 || r.label >= RLHI_FB_NLABELS)
                bad++;
            else
                per_label[r.label]++;
        }
        dt = rlhi_time_now() - t0;
        per_min = n / dt * 60;
        printf("feedback speed: %d turns in %.3f s = %.2f million "
               "turns/minute (one thread)\n", n, dt, per_min / 1e6);
        /* Speed is measured by `rlhi bench feedback`, not asserted here;
         * the same 7 turns always get the same labels. */
        CHECK_INT_EQ(bad, 0);
        for (int l = 0; l < RLHI_FB_NLABELS; l++)
            CHECK_INT_EQ(per_label[l] % (n / 7), 0);
    }

    TEST("stage over a store: labels, export, resume, unknown backend") {
        char dir[] = "/tmp/rlhi-fb-XXXXXX", logp[256], db1[256], db2[256];
        struct rlhi_store *s1 = NULL, *s2 = NULL;
        struct rlhi_ingest_stats is;
        struct rlhi_feedback_stats fs;
        struct rlhi_feedback_opts fo = {0};
        const char *paths[1];
        char h1[65], h2[65];
        int rc;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(logp, sizeof logp, "%s/log.jsonl", dir);
        snprintf(db1, sizeof db1, "%s/a.db", dir);
        snprintf(db2, sizeof db2, "%s/b.db", dir);
        /* 2500 conversations: three feedback batches of 1000. */
        write_log(logp, 2500);
        paths[0] = logp;
        CHECK_OK(rlhi_store_open(&s1, db1));
        CHECK_OK(rlhi_store_open(&s2, db2));
        if (!s1 || !s2)
            break;
        CHECK_OK(rlhi_ingest(s1, paths, 1, NULL, &is));
        CHECK_OK(rlhi_ingest(s2, paths, 1, NULL, &is));

        /* one thread here, three for s2: the stores must not differ */
        fo.threads = 1;
        CHECK_OK(rlhi_feedback_run(s1, &fo, &fs));
        fo.threads = 3;
        CHECK_INT_EQ(fs.turns, 5000);
        CHECK_INT_EQ(fs.by_label[RLHI_FB_REATTEMPT_FEEDBACK], 2500);
        CHECK_INT_EQ(fs.by_label[RLHI_FB_POSITIVE], 2500);
        CHECK_INT_EQ(fs.actionable, 2500);
        CHECK_INT_EQ(rlhi_store_count(s1, "feedback"), 5000);
        /* A rerun finds nothing to do. */
        CHECK_OK(rlhi_feedback_run(s1, &fo, &fs));
        CHECK_INT_EQ(fs.turns, 0);

        /* Stopped after one batch, then resumed: same store. */
        fo.stop_after_batches = 1;
        rc = rlhi_feedback_run(s2, &fo, &fs);
        CHECK_INT_EQ(rc, RLHI_EIO);
        CHECK_INT_EQ(rlhi_store_count(s2, "feedback"), 2000);
        fo.stop_after_batches = 0;
        CHECK_OK(rlhi_feedback_run(s2, &fo, &fs));
        CHECK_INT_EQ(fs.turns, 3000);
        CHECK_OK(rlhi_store_content_hash(s1, h1));
        CHECK_OK(rlhi_store_content_hash(s2, h2));
        CHECK_STR_EQ(h1, h2);

        /* Export: turn_index is the user message's index. */
        {
            char *buf = NULL;
            size_t len = 0;
            FILE *m = open_memstream(&buf, &len);

            CHECK_OK(rlhi_feedback_export(s1, "builtin", m, &fs));
            fclose(m);
            CHECK_INT_EQ(fs.turns, 5000);
            if (buf && getenv("RLHI_TEST_VERBOSE"))
                fprintf(stderr, "%.300s", buf);
            {
                const char *want =
                    "{\"conversation_hash\": \"c0000\", \"turn_index\": 2, "
                    "\"label\": \"reattempt_feedback\", \"dissatisfied\": "
                    "true, \"actionable\": true}\n"
                    "{\"conversation_hash\": \"c0000\", \"turn_index\": 4, "
                    "\"label\": \"positive\", \"dissatisfied\": false, "
                    "\"actionable\": false}\n";

                CHECK(buf && !strncmp(buf, want, strlen(want)));
            }
            free(buf);
        }

        fo.backend = "llm";
        rc = rlhi_feedback_run(s1, &fo, &fs);
        CHECK_INT_EQ(rc, RLHI_ENOTIMPL);
        CHECK_STR_EQ(rlhi_errmsg(), "not implemented: backend 'llm'");

        rlhi_store_close(s1);
        rlhi_store_close(s2);
        snprintf(path, sizeof path, "rm -rf '%s'", dir);
        CHECK(system(path) == 0);
    }

    TEST("held-out WildChat: label distribution (measured, not asserted)") {
        const char *wc = check_data("eval/wildchat_heldout/"
                                    "wildchat_sample.jsonl");
        char dir[] = "/tmp/rlhi-wc-XXXXXX", db[256];
        struct rlhi_store *s = NULL;
        struct rlhi_ingest_stats is;
        struct rlhi_feedback_stats fs;

        if (!wc) {
            SKIP("../shared/data/eval/wildchat_heldout absent");
            break;
        }
        /* Measured on request only, so that developing the rules never
         * shows the held-out turns (see its SOURCE.md). */
        if (!getenv("RLHI_HELDOUT")) {
            SKIP("set RLHI_HELDOUT=1 to measure on the held-out sample");
            break;
        }
        CHECK(mkdtemp(dir) != NULL);
        snprintf(db, sizeof db, "%s/wc.db", dir);
        CHECK_OK(rlhi_store_open(&s, db));
        if (!s)
            break;
        CHECK_OK(rlhi_ingest(s, &wc, 1, NULL, &is));
        CHECK_OK(rlhi_feedback_run(s, NULL, &fs));
        printf("held-out WildChat: %llu conversations, %llu follow-up "
               "turns\n", (unsigned long long)fs.conversations,
               (unsigned long long)fs.turns);
        for (int l = 0; l < RLHI_FB_NLABELS; l++)
            printf("  %-22s %5llu  %5.1f%%\n", rlhi_feedback_label_name(l),
                   (unsigned long long)fs.by_label[l],
                   fs.turns ? 100.0 * fs.by_label[l] / fs.turns : 0);
        printf("  feedback turns (dissatisfied) %.1f%%, actionable %.1f%% "
               "(paper: ~26.5%% on WildChat)\n",
               fs.turns ? 100.0 * fs.dissatisfied / fs.turns : 0,
               fs.turns ? 100.0 * fs.actionable / fs.turns : 0);
        CHECK(fs.turns > 0);
        rlhi_store_close(s);
        snprintf(path, sizeof path, "rm -rf '%s'", dir);
        CHECK(system(path) == 0);
    }

    rlhi_feedback_detector_free(d);
    return check_summary();
}
