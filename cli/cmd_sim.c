/* rlhi sim: the simulated chat world (world, corpus, judge, style, answer).
 * Everything it prints about quality is simulated and says so. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rlhi/demo.h"
#include "rlhi/jsonl.h"
#include "rlhi/sim.h"

static int sim_world(int argc, char **argv)
{
    struct rlhi_sim_config c;
    struct rlhi_sim_scripted s;
    struct rlhi_sim_stats st;
    const char *out = NULL;
    int64_t seed = 1;
    double error_rate, p_follow;
    int r, k;
    struct cli_opt opts[] = {
        {"out", CLI_STR, &out, "output directory (required)"},
        {"users", CLI_INT, &c.n_users, "number of users (200)"},
        {"seed", CLI_I64, &seed, "random seed (1)"},
        {"heldout", CLI_INT, &c.heldout_per_user,
         "held-out requests per user (2)"},
        {"max_conversations", CLI_INT, &c.max_conversations,
         "cap of conversations per user (60)"},
        {"max_turns", CLI_INT, &c.beh.max_user_turns,
         "user turns per conversation at most (6)"},
        {"p_feedback", CLI_DOUBLE, &c.beh.p_feedback,
         "chance to give feedback on a missed preference (0.115)"},
        {"p_correction", CLI_DOUBLE, &c.beh.p_correction,
         "chance to correct a wrong answer (0.50)"},
        {"typo_rate", CLI_DOUBLE, &c.beh.typo_rate,
         "share of user turns with typos (0.08)"},
        {"error_rate", CLI_DOUBLE, &error_rate,
         "scripted assistant: share of wrong answers (0.10)"},
        {"p_follow", CLI_DOUBLE, &p_follow,
         "scripted assistant: chance to follow feedback (0.90)"},
        {"model", CLI_STR, &c.model_name, "the logs' model name"},
        {NULL, 0, NULL, NULL},
    };

    rlhi_sim_config_default(&c);
    rlhi_sim_scripted_init(&s);
    error_rate = s.error_rate;
    p_follow = s.p_follow;
    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim world --out DIR [--users N] [--seed S]\n"
                  "Simulates users with hidden personas chatting with the "
                  "scripted assistant;\nwrites DIR/logs.jsonl (WildChat "
                  "schema), truth.jsonl, users.jsonl, heldout.jsonl.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!out) {
        fprintf(stderr, "rlhi: error: sim world needs --out DIR\n");
        return EXIT_USAGE;
    }
    c.seed = (uint64_t)seed;
    s.error_rate = error_rate;
    s.p_follow = p_follow;
    r = rlhi_sim_world_write(&c, rlhi_sim_scripted_answer, &s, out, &st);
    rlhi_sim_scripted_release(&s);
    if (r)
        return cli_fail(r, "sim world");

    printf("simulated world: %ld users (conversations per user %ld..%ld), "
           "%ld conversations, %ld user turns, %.2f s\n",
           st.users, st.min_conv, st.max_conv, st.conversations,
           st.user_turns, st.seconds);
    printf("follow-up user turns: %ld, dissatisfied (feedback) %.1f%%\n",
           st.followups,
           st.followups ? 100.0 * st.dissatisfied / st.followups : 0.0);
    for (k = 0; k < RLHI_SIM_L_COUNT; k++)
        printf("  %-22s %6ld\n", rlhi_sim_label_name(k), st.label[k]);
    return EXIT_OK;
}

static int sim_corpus(int argc, char **argv)
{
    const char *out = NULL;
    int64_t n = 1000, seed = 1;
    bool text = false;
    FILE *f = stdout;
    int r;
    struct cli_opt opts[] = {
        {"out", CLI_STR, &out, "output file (default stdout)"},
        {"conversations", CLI_I64, &n, "number of conversations (1000)"},
        {"seed", CLI_I64, &seed, "random seed (1)"},
        {"text", CLI_BOOL, &text,
         "plain text (messages split by blank lines) instead of JSONL"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim corpus [--out FILE] [--conversations N] "
                  "[--seed S] [--text]\nWrites generic chat conversations "
                  "{\"messages\":[...]} with random styles and\nanswers "
                  "revised after feedback, for training a base model.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (n < 0) {
        fprintf(stderr, "rlhi: error: --conversations must be >= 0\n");
        return EXIT_USAGE;
    }
    if (out && strcmp(out, "-")) {
        f = fopen(out, "wb");
        if (!f) {
            rlhi_err_errno(RLHI_EIO, "cannot create '%s'", out);
            return cli_fail(RLHI_EIO, NULL);
        }
    }
    r = rlhi_sim_corpus_write(f, n, (uint64_t)seed, text);
    if (f != stdout && fclose(f) && !r)
        r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", out);
    return r ? cli_fail(r, "sim corpus") : EXIT_OK;
}

/* The answer text of a JSON line: a string, or an object's "answer",
 * "response", "output", "text" or "content", or the last assistant
 * message of "messages". NULL when there is none. */
static const char *answer_of(json_t *o)
{
    static const char *const keys[] = {"answer", "response", "output",
                                       "text", "content"};
    json_t *m;
    size_t i;

    if (json_is_string(o))
        return json_string_value(o);
    if (!json_is_object(o))
        return NULL;
    for (i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *v = json_object_get(o, keys[i]);

        if (json_is_string(v))
            return json_string_value(v);
    }
    m = json_object_get(o, "messages");
    for (i = json_array_size(m); i > 0; i--) {
        json_t *e = json_array_get(m, i - 1);
        json_t *role = json_object_get(e, "role");

        if (json_is_string(role) &&
            !strcmp(json_string_value(role), "assistant") &&
            json_is_string(json_object_get(e, "content")))
            return json_string_value(json_object_get(e, "content"));
    }
    return NULL;
}

/* Reads an answer file into ans[item] (strings the caller frees); lines
 * whose id is not a held-out item are reported and counted. */
static int load_answers(const char *path, const struct rlhi_sim_truth *t,
                        char **ans, long *bad)
{
    struct rlhi_jsonl *j;
    json_t *o;
    int r;
    long line = 0;

    r = rlhi_jsonl_open(&j, path);
    if (r)
        return r;
    while ((r = rlhi_jsonl_next(j, &o)) != 0) {
        json_t *id;
        const char *a;
        int k;

        line++;
        if (r == RLHI_EFORMAT) {
            rlhi_warn("%s", rlhi_errmsg());
            (*bad)++;
            continue;
        }
        if (r < 0)
            break;
        id = json_object_get(o, "id");
        a = answer_of(o);
        k = json_is_string(id) ? rlhi_sim_truth_find(t, json_string_value(id))
                               : -1;
        if (k < 0 || !a) {
            rlhi_warn("'%s': record %ld: %s", path, line,
                      k < 0 ? "no held-out item with this 'id'"
                            : "no answer text");
            (*bad)++;
        } else if (!ans[k]) {
            ans[k] = strdup(a);
        }
        json_decref(o);
    }
    rlhi_jsonl_close(j);
    return r < 0 ? r : 0;
}

static int sim_judge(int argc, char **argv)
{
    const char *truth = NULL, *fa = NULL, *fb = NULL;
    int64_t seed = 1;
    int nboot = 1000, r, i, n = 0, d, wins = 0, losses = 0;
    bool json = false;
    struct rlhi_sim_truth t;
    char **a = NULL, **b = NULL;
    int *out = NULL;
    long bad = 0;
    double rate, lo, hi, ra = 0, rb = 0;
    long match[2][RLHI_SIM_NDIM] = {{0}}, cared[RLHI_SIM_NDIM] = {0};
    struct cli_opt opts[] = {
        {"truth", CLI_STR, &truth, "the world's truth.jsonl (required)"},
        {"a", CLI_STR, &fa, "answers of model A: JSONL {\"id\",\"answer\"}"},
        {"b", CLI_STR, &fb, "answers of model B, same ids"},
        {"bootstrap", CLI_INT, &nboot, "bootstrap resamples (1000)"},
        {"seed", CLI_I64, &seed, "bootstrap seed (1)"},
        {"json", CLI_BOOL, &json, "print one JSON object"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim judge --truth FILE --a A.jsonl --b B.jsonl\n"
                  "Compares two models' answers to the held-out requests "
                  "with the simulated\njudge; prints the personalisation win "
                  "rate of A over B (ties half) with a\nbootstrap 95% "
                  "interval.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!truth || !fa || !fb) {
        fprintf(stderr, "rlhi: error: sim judge needs --truth, --a and --b\n");
        return EXIT_USAGE;
    }
    r = rlhi_sim_truth_load(truth, &t);
    if (r)
        return cli_fail(r, NULL);
    a = calloc((size_t)t.n_items + 1, sizeof *a);
    b = calloc((size_t)t.n_items + 1, sizeof *b);
    out = calloc((size_t)t.n_items + 1, sizeof *out);
    if (!a || !b || !out) {
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate answers");
        goto done;
    }
    r = load_answers(fa, &t, a, &bad);
    if (!r)
        r = load_answers(fb, &t, b, &bad);
    if (r)
        goto done;

    for (i = 0; i < t.n_items; i++) {
        const struct rlhi_sim_persona *p = &t.users[t.items[i].user].persona;
        struct rlhi_sim_verdict va, vb;

        if (!a[i] || !b[i])
            continue;
        rlhi_sim_judge(a[i], &t.items[i].req, p, &va);
        rlhi_sim_judge(b[i], &t.items[i].req, p, &vb);
        out[n] = va.score > vb.score ? 1 : va.score < vb.score ? -1 : 0;
        wins += out[n] > 0;
        losses += out[n] < 0;
        n++;
        ra += va.correct == RLHI_SIM_RIGHT;
        rb += vb.correct == RLHI_SIM_RIGHT;
        for (d = 0; d < RLHI_SIM_NDIM; d++) {
            int want = p->pref[d];

            if (!want)
                continue;
            cared[d]++;
            match[0][d] += va.reading.style.v[d] == (want > 0);
            match[1][d] += vb.reading.style.v[d] == (want > 0);
        }
    }
    if (!n) {
        r = rlhi_err(RLHI_EFORMAT, "no held-out item has an answer in both "
                                   "'%s' and '%s'", fa, fb);
        goto done;
    }
    r = rlhi_sim_winrate(out, n, nboot, (uint64_t)seed, &rate, &lo, &hi);
    if (r)
        goto done;
    if (json) {
        printf("{\"simulated\":true,\"n\":%d,\"win_rate\":%.4f,"
               "\"ci95\":[%.4f,%.4f],\"a_wins\":%d,\"b_wins\":%d,"
               "\"ties\":%d,\"a_correct\":%.4f,\"b_correct\":%.4f,"
               "\"skipped\":%ld}\n",
               n, rate, lo, hi, wins, losses, n - wins - losses, ra / n,
               rb / n, bad);
    } else {
        printf("simulated judge: %d held-out requests answered by both "
               "(of %d)\n", n, t.n_items);
        printf("personalisation win rate A over B: %.1f%% "
               "(95%% CI %.1f-%.1f, bootstrap %d) [simulated]\n",
               100 * rate, 100 * lo, 100 * hi, nboot);
        printf("A wins %d, B wins %d, ties %d; correct: A %.1f%%, "
               "B %.1f%%\n", wins, losses, n - wins - losses, 100 * ra / n,
               100 * rb / n);
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            printf("  %-16s matches the user's preference: A %.1f%%, "
                   "B %.1f%% (of %ld who care)\n", rlhi_sim_dim_name(d),
                   cared[d] ? 100.0 * match[0][d] / cared[d] : 0.0,
                   cared[d] ? 100.0 * match[1][d] / cared[d] : 0.0,
                   cared[d]);
    }

done:
    for (i = 0; a && b && i < t.n_items; i++) {
        free(a[i]);
        free(b[i]);
    }
    free(a);
    free(b);
    free(out);
    rlhi_sim_truth_release(&t);
    if (r)
        return cli_fail(r, "sim judge");
    return bad ? EXIT_DATA : EXIT_OK;
}

static int sim_style(int argc, char **argv)
{
    struct rlhi_jsonl *j;
    const char *in = "-";
    const char *line;
    size_t len;
    long n = 0, bad = 0;
    int r, d;
    struct cli_opt opts[] = {
        {"in", CLI_STR, &in, "input JSONL (default stdin)"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim style [--in FILE] < texts.jsonl\n"
                  "Reads the four style values back from each text (a JSON "
                  "string, or an object\nwith \"text\", \"answer\", "
                  "\"content\" or \"messages\"); prints one JSON line each.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    r = rlhi_jsonl_open(&j, in);
    if (r)
        return cli_fail(r, NULL);
    while ((r = rlhi_jsonl_next_line(j, &line, &len)) > 0) {
        json_error_t je;
        json_t *o = json_loadb(line, len, JSON_DECODE_ANY, &je);
        const char *text = o ? answer_of(o) : NULL;
        struct rlhi_sim_reading rd;

        n++;
        if (!text) {
            rlhi_warn("'%s': record %ld: %s", in, n,
                      o ? "no text found" : je.text);
            bad++;
            json_decref(o);
            continue;
        }
        rlhi_sim_style_read(text, &rd);
        printf("{");
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            printf("\"%s\":\"%s\",", rlhi_sim_dim_name(d),
                   rlhi_sim_side_name(d, rd.style.v[d]));
        printf("\"counts\":{\"tech\":%d,\"plain\":%d,\"formal\":%d,"
               "\"casual\":%d,\"words\":%d,\"sentences\":%d,"
               "\"list_lines\":%d}}\n",
               rd.tech, rd.plain, rd.formal, rd.casual, rd.words,
               rd.sentences, rd.list_lines);
        json_decref(o);
    }
    rlhi_jsonl_close(j);
    if (r < 0)
        return cli_fail(r, NULL);
    return bad ? EXIT_DATA : EXIT_OK;
}

static int sim_answer(int argc, char **argv)
{
    const char *truth = NULL, *out = NULL, *policy = "random";
    int64_t seed = 1;
    double error_rate = 0.1;
    struct rlhi_sim_truth t;
    struct rlhi_buf b = RLHI_BUF_INIT;
    struct rlhi_rng rng;
    FILE *f = stdout;
    int r, i, mode;
    struct cli_opt opts[] = {
        {"truth", CLI_STR, &truth, "the world's truth.jsonl (required)"},
        {"out", CLI_STR, &out, "output JSONL (default stdout)"},
        {"policy", CLI_STR, &policy,
         "random (any style) | oracle (the user's preferred style)"},
        {"error_rate", CLI_DOUBLE, &error_rate, "share of wrong answers"},
        {"seed", CLI_I64, &seed, "random seed (1)"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim answer --truth FILE [--policy "
                  "random|oracle] [--out FILE]\nScripted answers "
                  "{\"id\",\"answer\"} to the held-out requests, as "
                  "reference points\nfor 'rlhi sim judge'.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    mode = !strcmp(policy, "random") ? 0 : !strcmp(policy, "oracle") ? 1 : -1;
    if (!truth || mode < 0) {
        fprintf(stderr, "rlhi: error: sim answer needs --truth and a "
                        "--policy of random or oracle\n");
        return EXIT_USAGE;
    }
    r = rlhi_sim_truth_load(truth, &t);
    if (r)
        return cli_fail(r, NULL);
    if (out && strcmp(out, "-") && !(f = fopen(out, "wb"))) {
        rlhi_sim_truth_release(&t);
        rlhi_err_errno(RLHI_EIO, "cannot create '%s'", out);
        return cli_fail(RLHI_EIO, NULL);
    }
    rlhi_rng_seed(&rng, (uint64_t)seed);
    for (i = 0; i < t.n_items && !r; i++) {
        struct rlhi_sim_style st;
        int err = rlhi_rng_double(&rng) < error_rate;

        if (mode)
            rlhi_sim_style_for(&t.users[t.items[i].user].persona, &st, &rng);
        else
            rlhi_sim_style_random(&st, &rng);
        rlhi_buf_clear(&b);
        r = rlhi_buf_adds(&b, "{\"id\":");
        r |= rlhi_buf_add_json_str(&b, t.items[i].id, strlen(t.items[i].id));
        r |= rlhi_buf_adds(&b, ",\"answer\":");
        {
            struct rlhi_buf a = RLHI_BUF_INIT;

            r |= rlhi_sim_answer_write(&t.items[i].req, &st, err, &rng, &a);
            r |= rlhi_buf_add_json_str(&b, a.buf ? a.buf : "", a.len);
            rlhi_buf_release(&a);
        }
        r |= rlhi_buf_adds(&b, "}\n");
        if (r)
            r = rlhi_err(RLHI_ENOMEM, "cannot format an answer");
        else if (fwrite(b.buf, 1, b.len, f) != b.len)
            r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'",
                               out ? out : "stdout");
    }
    if (f != stdout && fclose(f) && !r)
        r = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", out);
    rlhi_buf_release(&b);
    rlhi_sim_truth_release(&t);
    return r ? cli_fail(r, "sim answer") : EXIT_OK;
}

/* rlhi sim interact: the world's users chat with a real model. */
static int sim_interact(int argc, char **argv)
{
    struct rlhi_sim_config c;
    struct rlhi_sim_stats st;
    const char *model = NULL, *out = NULL;
    int64_t seed = 1;
    double temperature = 0.7;
    int r;
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model, "model directory (required)"},
        {"out", CLI_STR, &out, "output directory (required)"},
        {"users", CLI_INT, &c.n_users, "number of users (200)"},
        {"seed", CLI_I64, &seed, "random seed (1)"},
        {"heldout", CLI_INT, &c.heldout_per_user,
         "held-out requests per user (2)"},
        {"max_turns", CLI_INT, &c.beh.max_user_turns,
         "user turns per conversation at most (6)"},
        {"temperature", CLI_DOUBLE, &temperature,
         "sampling temperature of the model (0.7)"},
        {NULL, 0, NULL, NULL},
    };

    rlhi_sim_config_default(&c);
    r = cli_parse(argc, argv, opts,
                  "usage: rlhi sim interact --model DIR --out DIR [--users N]"
                  " [--seed S]\nSimulated users chat with a real model "
                  "(on-policy logs); writes the same files\nas 'rlhi sim "
                  "world'. Sampling is seeded per turn.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!model || !out || temperature < 0) {
        fprintf(stderr, "rlhi: error: sim interact needs --model and --out"
                        " (and a temperature >= 0)\n");
        return EXIT_USAGE;
    }
    c.seed = (uint64_t)seed;
    c.model_name = model;
    r = rlhi_demo_interact(model, &c, (float)temperature, out, &st);
    if (r)
        return cli_fail(r, "sim interact");
    printf("simulated users with model '%s': %ld users, %ld conversations, "
           "%ld user turns, %.1f s\n", model, st.users, st.conversations,
           st.user_turns, st.seconds);
    printf("follow-up user turns: %ld, dissatisfied (feedback) %.1f%% "
           "[simulated]\n", st.followups,
           st.followups ? 100.0 * st.dissatisfied / st.followups : 0.0);
    return EXIT_OK;
}

int cmd_sim(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *help;
    } subs[] = {
        {"world", sim_world, "simulate users and write logs + truth"},
        {"corpus", sim_corpus, "generic chat corpus for a base model"},
        {"judge", sim_judge, "win rate of answers A over B (simulated)"},
        {"style", sim_style, "read the style of texts (JSONL on stdin)"},
        {"answer", sim_answer, "scripted answers to held-out requests"},
        {"interact", sim_interact, "simulated users chat with a model"},
    };
    size_t i;

    if (argc >= 2)
        for (i = 0; i < sizeof subs / sizeof *subs; i++)
            if (!strcmp(argv[1], subs[i].name))
                return subs[i].fn(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--help") && strcmp(argv[1], "-h"))
        fprintf(stderr, "rlhi: error: unknown sim command '%s'\n", argv[1]);
    fprintf(argc >= 2 && (!strcmp(argv[1], "--help") ||
                          !strcmp(argv[1], "-h")) ? stdout : stderr,
            "usage: rlhi sim <world|corpus|judge|style|answer|interact> "
            "[options]\n"
            "The simulated chat world (docs/SIMULATION.md); results from "
            "it are simulated.\n");
    for (i = 0; i < sizeof subs / sizeof *subs; i++)
        fprintf(argc >= 2 && (!strcmp(argv[1], "--help") ||
                              !strcmp(argv[1], "-h")) ? stdout : stderr,
                "  %-8s %s\n", subs[i].name, subs[i].help);
    return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
               ? EXIT_OK : EXIT_USAGE;
}
