/* rlhi eval: the simulated evaluation of two models (judge win rate,
 * persona and feedback accuracy of a store against the truth), accuracy
 * on reasoning sets (GSM8K, MATH-500) by answer matching, and pairwise
 * LLM judging in both orders. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rlhi/eval.h"
#include "rlhi/generate.h"
#include "rlhi/jsonl.h"
#include "rlhi/llm.h"

/* Answers every held-out request of `t` with the model in `dir`;
 * personas[i] (may be NULL) goes into the system message. */
static int answer_all(const char *dir, const struct rlhi_sim_truth *t,
                      char *const *personas, int max_tokens, uint64_t seed,
                      char ***out)
{
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_eval_chatbot bot;
    enum rlhi_chat_kind kind;
    char **a;
    int i, r;

    *out = NULL;
    r = rlhi_generate_load(dir, NULL, &m, &tok);
    if (r)
        return r;
    if (rlhi_chat_template_from_dir(dir, &kind))
        kind = RLHI_CHAT_RLHI;
    a = calloc((size_t)t->n_items + 1, sizeof *a);
    r = a ? rlhi_eval_chatbot_init(&bot, m, tok, kind)
          : rlhi_err(RLHI_ENOMEM, "cannot allocate answers");
    if (!r)
        bot.max_tokens = max_tokens;
    for (i = 0; !r && i < t->n_items; i++) {
        struct rlhi_chat_msg msgs[2];
        const char *reply;
        size_t n = 0;

        if (personas && personas[i]) {
            msgs[n].role = "system";
            msgs[n++].content = personas[i];
        }
        msgs[n].role = "user";
        msgs[n++].content = t->items[i].req.text;
        r = rlhi_eval_chatbot_reply(&bot, msgs, n, seed + (uint64_t)i,
                                    &reply);
        if (!r && !(a[i] = strdup(reply)))
            r = rlhi_err(RLHI_ENOMEM, "cannot keep an answer");
    }
    if (a)
        rlhi_eval_chatbot_release(&bot);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    if (r) {
        for (i = 0; a && i < t->n_items; i++)
            free(a[i]);
        free(a);
        return r;
    }
    *out = a;
    return 0;
}

/* personas[i] = the store's builtin persona text of item i's user. */
static int store_personas(struct rlhi_store *s, const struct rlhi_sim_truth *t,
                          char ***out)
{
    sqlite3_stmt *st;
    char **p = calloc((size_t)t->n_items + 1, sizeof *p);
    int i, r;

    if (!p)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate personas");
    r = rlhi_store_prepare(s, &st, "SELECT p.text FROM personas p JOIN users "
                           "u ON u.id = p.user_id WHERE u.key = ? AND "
                           "p.backend = 'builtin'");
    for (i = 0; !r && i < t->n_items; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, t->users[t->items[i].user].hashed_ip, -1,
                          SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            p[i] = strdup((const char *)sqlite3_column_text(st, 0));
    }
    if (!r)
        sqlite3_finalize(st);
    *out = p;
    return r;
}

static void free_strs(char **a, int n)
{
    for (int i = 0; a && i < n; i++)
        free(a[i]);
    free(a);
}

static int eval_sim(int argc, char **argv)
{
    const char *world = NULL, *ma = NULL, *mb = NULL, *db = NULL;
    int64_t seed = 1;
    int max_tokens = 160, r, d, result = EXIT_RUNTIME;
    bool json = false;
    struct rlhi_sim_truth t = {0};
    struct rlhi_store *s = NULL;
    char *truth = NULL, **pers = NULL, **a = NULL, **b = NULL;
    struct rlhi_eval_sim_result ev;
    const struct cli_opt opts[] = {
        {"world", CLI_STR, &world, "world directory (truth.jsonl)"},
        {"model_a", CLI_STR, &ma, "model A (Hugging Face directory)"},
        {"model_b", CLI_STR, &mb, "model B, usually the base model"},
        {"store", CLI_STR, &db, "pipeline store of the world's logs: "
                                "personas for the prompts, and persona / "
                                "feedback accuracy"},
        {"max_tokens", CLI_INT, &max_tokens, "tokens per answer (160)"},
        {"seed", CLI_I64, &seed, "sampling and bootstrap seed (1)"},
        {"json", CLI_BOOL, &json, "print one JSON object"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi eval sim --world DIR [--model_a A --model_b B]"
                  " [--store DB]\nSimulated evaluation: both models answer "
                  "every held-out request; the judge,\nwho knows each "
                  "user's true persona, decides. With --store, also the "
                  "accuracy\nof the pipeline's personas and feedback labels "
                  "against the truth.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!world || (!!ma != !!mb) || (!ma && !db)) {
        fprintf(stderr, "rlhi: error: eval sim needs --world and --model_a "
                        "with --model_b, or --store\n");
        return EXIT_USAGE;
    }
    truth = rlhi_path_join(world, "truth.jsonl");
    r = truth ? rlhi_sim_truth_load(truth, &t) : RLHI_ENOMEM;
    if (!r && db)
        r = rlhi_store_open(&s, db);
    if (r) {
        result = cli_fail(r, NULL);
        goto out;
    }
    if (s) {
        struct rlhi_eval_persona_result pr;
        struct rlhi_eval_feedback_result fr;
        int k;

        r = rlhi_eval_persona_accuracy(s, &t, &pr);
        if (!r)
            r = rlhi_eval_feedback_prf(s, truth, &fr);
        if (r) {
            result = cli_fail(r, "eval sim");
            goto out;
        }
        printf("persona accuracy over %d users [simulated]:\n", pr.users);
        for (d = 0; d < RLHI_SIM_NDIM; d++)
            printf("  %-16s %.1f%% (users with a preference: %.1f%%; "
                   "derived 'no signal' %.1f%%)\n", rlhi_sim_dim_name(d),
                   100 * pr.acc[d], 100 * pr.acc_pref[d],
                   100 * pr.no_signal[d]);
        printf("feedback detection over %d turns [simulated]: label "
               "accuracy %.1f%%; dissatisfied precision %.1f%% recall "
               "%.1f%%\n", fr.turns, 100 * fr.accuracy,
               100 * rlhi_eval_precision(fr.dis_tp, fr.dis_fp),
               100 * rlhi_eval_recall(fr.dis_tp, fr.dis_fn));
        for (k = 0; k < RLHI_SIM_L_COUNT; k++)
            printf("  %-24s precision %5.1f%% recall %5.1f%% (truth %d)\n",
                   rlhi_sim_label_name(k),
                   100 * rlhi_eval_precision(fr.tp[k], fr.fp[k]),
                   100 * rlhi_eval_recall(fr.tp[k], fr.fn[k]),
                   fr.tp[k] + fr.fn[k]);
        r = store_personas(s, &t, &pers);
        if (r) {
            result = cli_fail(r, NULL);
            goto out;
        }
    }
    if (ma) {
        r = answer_all(ma, &t, pers, max_tokens, (uint64_t)seed, &a);
        if (!r)
            r = answer_all(mb, &t, pers, max_tokens, (uint64_t)seed, &b);
        if (!r)
            r = rlhi_eval_sim_compare(&t, a, b, 1000, (uint64_t)seed, &ev);
        if (r) {
            result = cli_fail(r, "eval sim");
            goto out;
        }
        if (json)
            printf("{\"simulated\":true,\"n\":%d,\"win_rate\":%.4f,"
                   "\"ci95\":[%.4f,%.4f],\"correct_a\":%.4f,"
                   "\"correct_b\":%.4f}\n", ev.win.n, ev.win.rate,
                   ev.win.lo, ev.win.hi, ev.correct_a, ev.correct_b);
        else
            printf("personalisation win rate A over B: %.1f%% (95%% CI "
                   "%.1f-%.1f) over %d held-out requests; correct: A "
                   "%.1f%%, B %.1f%% [simulated]\n", 100 * ev.win.rate,
                   100 * ev.win.lo, 100 * ev.win.hi, ev.win.n,
                   100 * ev.correct_a, 100 * ev.correct_b);
    }
    result = EXIT_OK;
out:
    free_strs(a, t.n_items);
    free_strs(b, t.n_items);
    free_strs(pers, t.n_items);
    rlhi_store_close(s);
    rlhi_sim_truth_release(&t);
    rlhi_free(truth);
    return result;
}

static int eval_reasoning(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *set = NULL, *tmpl = NULL;
    int limit = 0, max_tokens = 512, r, n = 0, i, right = 0;
    bool reference = false;
    struct rlhi_eval_set es;
    enum rlhi_eval_set_kind kind;
    double acc = 0;
    const struct cli_opt opts[] = {
        {"data", CLI_STR, &data, "GSM8K or MATH-500 JSONL"},
        {"set", CLI_STR, &set, "gsm8k | math (default: from the file name)"},
        {"model", CLI_STR, &model, "model to answer (Hugging Face dir or "
                                   "llama2.c .bin)"},
        {"chat_template", CLI_STR, &tmpl, "template name (default: the "
                                          "model's, else rlhi)"},
        {"limit", CLI_INT, &limit, "first N items only (0: all)"},
        {"max_tokens", CLI_INT, &max_tokens, "tokens per answer (512)"},
        {"reference", CLI_BOOL, &reference,
         "score the reference solutions themselves (a check of the "
         "answer matching: must be 100%)"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi eval reasoning --data FILE (--model DIR | "
                  "--reference)\nAccuracy by answer matching: GSM8K's "
                  "number after '####' (or the last number),\nMATH's "
                  "\\boxed{} answer, normalised. Greedy decoding.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!data || (!model && !reference)) {
        fprintf(stderr, "rlhi: error: eval reasoning needs --data and "
                        "--model or --reference\n");
        return EXIT_USAGE;
    }
    if (set)
        kind = !strcmp(set, "math") ? RLHI_EVAL_MATH : RLHI_EVAL_GSM8K;
    else
        kind = strstr(data, "math") || strstr(data, "MATH") ? RLHI_EVAL_MATH
                                                            : RLHI_EVAL_GSM8K;
    if (set && strcmp(set, "math") && strcmp(set, "gsm8k")) {
        fprintf(stderr, "rlhi: error: --set must be gsm8k or math\n");
        return EXIT_USAGE;
    }
    r = rlhi_eval_set_load(data, kind, &es);
    if (r)
        return cli_fail(r, NULL);
    if (reference) {
        n = limit > 0 && limit < es.n ? limit : es.n;
        for (i = 0; i < n; i++)
            right += rlhi_eval_answer_correct(kind, es.items[i].solution,
                                              es.items[i].answer);
        acc = n ? (double)right / n : 0;
    } else {
        struct rlhi_model *m = NULL;
        struct rlhi_tokenizer *tok = NULL;
        struct rlhi_eval_chatbot bot;
        enum rlhi_chat_kind ck = RLHI_CHAT_RLHI;

        r = rlhi_generate_load(model, NULL, &m, &tok);
        if (!r) {
            if (tmpl)
                r = rlhi_chat_kind_from_name(tmpl, &ck);
            else if (rlhi_chat_template_from_dir(model, &ck))
                ck = RLHI_CHAT_RLHI;
        }
        if (!r)
            r = rlhi_eval_chatbot_init(&bot, m, tok, ck);
        if (!r) {
            bot.temperature = 0;
            bot.max_tokens = max_tokens;
            r = rlhi_eval_reasoning_run(&bot, &es, limit, &acc, &n);
            rlhi_eval_chatbot_release(&bot);
        }
        rlhi_tokenizer_free(tok);
        rlhi_model_free(m);
        if (r) {
            rlhi_eval_set_release(&es);
            return cli_fail(r, "eval reasoning");
        }
    }
    printf("%s: accuracy %.2f%% (%d of %d items%s)\n",
           kind == RLHI_EVAL_MATH ? "MATH-500" : "GSM8K", 100 * acc,
           (int)(acc * n + 0.5), n, reference ? ", reference solutions" : "");
    rlhi_eval_set_release(&es);
    return EXIT_OK;
}

/* The texts of a JSONL answer file by "id" (or line order). */
static int load_texts(const char *path, const char *key, char ***out, int *n)
{
    struct rlhi_jsonl *j;
    json_t *o;
    char **v = NULL;
    int r, cap = 0;

    *n = 0;
    r = rlhi_jsonl_open(&j, path);
    if (r)
        return r;
    while ((r = rlhi_jsonl_next(j, &o)) > 0) {
        const char *s = json_string_value(json_object_get(o, key));

        if (!s)
            s = json_string_value(json_object_get(o, "answer"));
        if (!s) {
            r = rlhi_err(RLHI_EFORMAT, "'%s': line %llu: no \"%s\"", path,
                         (unsigned long long)rlhi_jsonl_line_no(j), key);
            json_decref(o);
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            v = realloc(v, (size_t)cap * sizeof *v);
            if (!v) {
                json_decref(o);
                r = rlhi_err(RLHI_ENOMEM, "cannot grow texts");
                break;
            }
        }
        v[(*n)++] = strdup(s);
        json_decref(o);
    }
    rlhi_jsonl_close(j);
    *out = v;
    return r < 0 ? r : 0;
}

/* 1 when the verdict names A, -1 for B, 0 otherwise (tie or unclear). */
static int verdict(const char *t)
{
    const char *a = strstr(t, "[[A]]"), *b = strstr(t, "[[B]]");

    if (a && !b)
        return 1;
    if (b && !a)
        return -1;
    if (!a && !b) {
        while (*t == ' ' || *t == '\n')
            t++;
        if (*t == 'A')
            return 1;
        if (*t == 'B')
            return -1;
    }
    return 0;
}

static int eval_pairwise(int argc, char **argv)
{
    const char *judge = NULL, *model = NULL, *pp = NULL, *fa = NULL,
               *fb = NULL, *cache = NULL, *key = NULL;
    int np = 0, na = 0, nb = 0, i, r, n, *oc = NULL, first = 0, decided = 0;
    char **prompts = NULL, **a = NULL, **b = NULL;
    struct rlhi_llm *l = NULL;
    struct rlhi_llm_options lo;
    struct rlhi_eval_winrate w;
    const struct cli_opt opts[] = {
        {"judge", CLI_STR, &judge, "judge endpoint: local:PATH or an "
                                   "OpenAI-compatible base URL"},
        {"judge_model", CLI_STR, &model, "model name sent to the endpoint"},
        {"api_key", CLI_STR, &key, "API key for the endpoint"},
        {"prompts", CLI_STR, &pp, "JSONL of {\"prompt\"} (or \"text\")"},
        {"a", CLI_STR, &fa, "answers of A, JSONL {\"answer\"}, same order"},
        {"b", CLI_STR, &fb, "answers of B, same order"},
        {"cache", CLI_STR, &cache, "SQLite cache of judge calls"},
        {NULL, 0, NULL, NULL},
    };

    r = cli_parse(argc, argv, opts,
                  "usage: rlhi eval pairwise --judge ENDPOINT --prompts F "
                  "--a A.jsonl --b B.jsonl\nAsks an LLM judge which answer "
                  "is better, in both orders; a pair counts as a\nwin only "
                  "when both orders agree, else a tie. Reports the win rate "
                  "of A with a\nbootstrap 95% interval and the judge's "
                  "position bias.",
                  NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!judge || !pp || !fa || !fb) {
        fprintf(stderr, "rlhi: error: eval pairwise needs --judge, "
                        "--prompts, --a and --b\n");
        return EXIT_USAGE;
    }
    r = load_texts(pp, "prompt", &prompts, &np);
    if (!r)
        r = load_texts(fa, "answer", &a, &na);
    if (!r)
        r = load_texts(fb, "answer", &b, &nb);
    if (!r && (np != na || np != nb))
        r = rlhi_err(RLHI_EFORMAT, "%d prompts but %d and %d answers", np,
                     na, nb);
    rlhi_llm_options_default(&lo);
    lo.endpoint = judge;
    lo.model = model;
    lo.api_key = key;
    lo.cache_path = cache;
    if (!r)
        r = rlhi_llm_open(&l, &lo);
    n = np;
    oc = calloc((size_t)n + 1, sizeof *oc);
    if (!r && !oc)
        r = rlhi_err(RLHI_ENOMEM, "cannot allocate outcomes");
    for (i = 0; !r && i < n; i++) {
        int v[2], k;

        for (k = 0; k < 2 && !r; k++) {
            char *body = NULL, *text = NULL;
            struct rlhi_chat_msg m[2];
            const char *x = k ? b[i] : a[i], *y = k ? a[i] : b[i];

            if (asprintf(&body, "[User question]\n%s\n\n[The start of "
                         "assistant A's answer]\n%s\n[The end of assistant "
                         "A's answer]\n\n[The start of assistant B's "
                         "answer]\n%s\n[The end of assistant B's answer]\n\n"
                         "Which answer is better? Reply with [[A]], [[B]] "
                         "or [[C]] for a tie.", prompts[i], x, y) < 0) {
                r = rlhi_err(RLHI_ENOMEM, "cannot build a judge prompt");
                break;
            }
            m[0].role = "system";
            m[0].content = "You are an impartial judge of two AI "
                           "assistants' answers.";
            m[1].role = "user";
            m[1].content = body;
            r = rlhi_llm_chat(l, m, 2, 16, 0.0f, &text);
            free(body);
            if (r)
                break;
            v[k] = verdict(text);
            rlhi_free(text);
        }
        if (r)
            break;
        /* v[0]: A shown first; v[1]: B shown first (1 = first wins). */
        first += (v[0] == 1) + (v[1] == 1);
        decided += (v[0] != 0) + (v[1] != 0);
        oc[i] = v[0] == 1 && v[1] == -1 ? 1 : v[0] == -1 && v[1] == 1 ? -1
                                                                      : 0;
    }
    if (!r)
        r = rlhi_eval_winrate(oc, n, 1000, 1, &w);
    if (!r)
        printf("pairwise LLM judge: win rate A over B %.1f%% (95%% CI "
               "%.1f-%.1f) over %d prompts (A %d, B %d, ties or "
               "inconsistent %d); position bias: the first answer won "
               "%.1f%% of %d decided verdicts\n", 100 * w.rate, 100 * w.lo,
               100 * w.hi, n, w.wins, w.losses, w.ties,
               decided ? 100.0 * first / decided : 0.0, decided);
    rlhi_llm_close(l);
    free(oc);
    free_strs(prompts, np);
    free_strs(a, na);
    free_strs(b, nb);
    return r ? cli_fail(r, "eval pairwise") : EXIT_OK;
}

int cmd_eval(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "sim"))
        return eval_sim(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "reasoning"))
        return eval_reasoning(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "pairwise"))
        return eval_pairwise(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--help") && strcmp(argv[1], "-h")) {
        fprintf(stderr, "rlhi: error: unknown eval command '%s'\n", argv[1]);
        return EXIT_USAGE;
    }
    printf("usage: rlhi eval <sim|reasoning|pairwise> [options]\n"
           "  sim        two models on a simulated world's held-out "
           "requests; pipeline accuracy [simulated]\n"
           "  reasoning  GSM8K / MATH-500 accuracy by answer matching\n"
           "  pairwise   LLM judge in both orders, with position bias\n");
    return argc >= 2 ? EXIT_OK : EXIT_USAGE;
}
