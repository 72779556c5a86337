/* rlhi bench feedback: turns per minute of the builtin feedback detector,
 * alone (one thread, texts in memory) and as the whole `rlhi feedback`
 * stage over a store (reading messages, classifying, writing labels) on
 * one thread and on all of them. The input is a simulated world's logs
 * (docs/SIMULATION.md: realistic mixes of feedback, clarifications and new
 * requests) or any JSONL log given with --log, e.g. a WildChat sample or
 * the file `rlhi bench ingest` generates. No peer is timed: no feedback
 * detector for chat logs can be installed from Debian. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "rlhi/pipeline.h"
#include "rlhi/sim.h"
#include "rlhi/store.h"

/* The follow-up turns of the store with their answer and request, in
 * memory, for timing the detector alone. */
struct turns {
    char **text; /* 3 per turn: request (may be NULL), answer, turn */
    size_t n, cap;
};

static char *dup_col(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);

    return t ? strdup(t) : NULL;
}

static int load_turns(struct rlhi_store *s, struct turns *t)
{
    sqlite3_stmt *st = NULL;
    int64_t conv = -1;
    char *req = NULL, *ans = NULL;
    int rc;

    if ((rc = rlhi_store_prepare(s, &st, "SELECT conversation_id, role, "
                                 "content FROM messages ORDER BY "
                                 "conversation_id, idx")))
        return rc;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *role = (const char *)sqlite3_column_text(st, 1);

        if (sqlite3_column_int64(st, 0) != conv) {
            conv = sqlite3_column_int64(st, 0);
            free(req);
            free(ans);
            req = ans = NULL;
        }
        if (!strcmp(role, "assistant")) {
            free(ans);
            ans = dup_col(st, 2);
        } else if (!strcmp(role, "user")) {
            char *turn = dup_col(st, 2);

            if (ans) {
                if (t->n == t->cap) {
                    size_t cap = t->cap ? 2 * t->cap : 4096;
                    char **p = realloc(t->text, 3 * cap * sizeof *p);

                    if (!p) {
                        free(turn);
                        break;
                    }
                    t->text = p;
                    t->cap = cap;
                }
                t->text[3 * t->n] = req ? strdup(req) : NULL;
                t->text[3 * t->n + 1] = ans;
                t->text[3 * t->n + 2] = strdup(turn);
                t->n++;
                ans = NULL;
            }
            free(req);
            req = turn;
        }
    }
    free(req);
    free(ans);
    sqlite3_finalize(st);
    return 0;
}

static void free_turns(struct turns *t)
{
    for (size_t i = 0; i < 3 * t->n; i++)
        free(t->text[i]);
    free(t->text);
}

/* Runs the stage from scratch (--force) with `threads`; turns/minute. */
static double time_stage(struct rlhi_store *s, int threads, uint64_t *turns)
{
    struct rlhi_feedback_opts o = {.force = true, .threads = threads,
                                   .args = "bench feedback"};
    struct rlhi_feedback_stats st;

    if (rlhi_feedback_run(s, &o, &st) || st.seconds <= 0)
        return 0;
    *turns = st.turns;
    return (double)st.turns / st.seconds * 60;
}

int bench_feedback(int argc, char **argv)
{
    const char *log = NULL;
    int users = 3000, rc, status = EXIT_RUNTIME;
    char dir[] = "/tmp/rlhi-bench-feedback-XXXXXX", path[512], db[512];
    const struct cli_opt opts[] = {
        {"log", CLI_STR, &log, "a JSONL log to label instead of a "
                               "simulated world"},
        {"users", CLI_INT, &users, "users of the simulated world (3000)"},
        {NULL, 0, NULL, NULL},
    };
    struct rlhi_store *s = NULL;
    struct rlhi_ingest_stats is;
    struct rlhi_feedback_detector *d = NULL;
    struct turns t = {0};
    uint64_t turns1 = 0, turnsn = 0;
    double dt, alone, one, all;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;

    rc = cli_parse(argc, argv, opts,
                   "usage: rlhi bench feedback [--log FILE] [--users N]\n"
                   "Turns per minute of the builtin feedback detector: "
                   "alone, and as the\nwhole stage over a store on one and "
                   "on all threads.",
                   NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!mkdtemp(dir)) {
        perror("rlhi: error: cannot make a temporary directory");
        return EXIT_RUNTIME;
    }
    if (!log) {
        struct rlhi_sim_config c;

        rlhi_sim_config_default(&c);
        c.n_users = users;
        printf("simulating %d users ...\n", users);
        if ((rc = rlhi_sim_world_write(&c, NULL, NULL, dir, NULL))) {
            status = cli_fail(rc, "bench feedback");
            goto out;
        }
        snprintf(path, sizeof path, "%s/logs.jsonl", dir);
        log = path;
    }
    snprintf(db, sizeof db, "%s/bench.db", dir);
    if ((rc = rlhi_store_open(&s, db)) ||
        (rc = rlhi_ingest(s, &log, 1, NULL, &is)) ||
        (rc = load_turns(s, &t)) ||
        (rc = rlhi_feedback_detector_new(&d))) {
        status = cli_fail(rc, "bench feedback");
        goto out;
    }
    if (!t.n) {
        fprintf(stderr, "rlhi: error: '%s' has no user turn after an "
                        "answer\n", log);
        goto out;
    }

    dt = rlhi_time_now();
    for (size_t i = 0; i < t.n; i++) {
        struct rlhi_fb_result r;

        rlhi_feedback_classify(d, t.text[3 * i], t.text[3 * i + 1],
                               t.text[3 * i + 2], &r);
    }
    dt = rlhi_time_now() - dt;
    alone = (double)t.n / dt * 60;
    one = time_stage(s, 1, &turns1);
    all = time_stage(s, nthreads, &turnsn);

    printf("feedback detection on %s: %llu conversations, %zu follow-up "
           "turns\n", log == path ? "a simulated world" : log,
           (unsigned long long)is.inserted, t.n);
    printf("                                   million turns/minute\n");
    printf("  detector alone (1 thread)              %8.2f\n", alone / 1e6);
    printf("  stage over the store, 1 thread         %8.2f\n", one / 1e6);
    printf("  stage over the store, %d threads        %8.2f\n", nthreads,
           all / 1e6);
    status = turns1 == t.n && turnsn == t.n ? EXIT_OK : EXIT_RUNTIME;
    if (status)
        fprintf(stderr, "rlhi: error: the stage labelled %llu and %llu "
                        "turns, not %zu\n", (unsigned long long)turns1,
                (unsigned long long)turnsn, t.n);

out:
    rlhi_feedback_detector_free(d);
    free_turns(&t);
    rlhi_store_close(s);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path) != 0)
        fprintf(stderr, "rlhi: warning: cannot remove '%s'\n", dir);
    return status;
}
