/* rlhi reward: train a reward model on preference pairs (Bradley-Terry),
 * or score persona + conversation + answer records with one. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "learn/learn_internal.h"
#include "rlhi/chat.h"
#include "rlhi/jsonl.h"
#include "rlhi/reward.h"
#include "rlhi/tokenizer.h"

static const char usage_main[] =
    "usage: rlhi reward train --model DIR --data PAIRS.jsonl --output_dir "
    "DIR [options]\n"
    "       rlhi reward score --model DIR [--data FILE.jsonl] > scores.jsonl"
    "\n\n"
    "train: a scalar head on the model's last hidden state, Bradley-Terry "
    "loss\n  -logsigmoid(r_chosen - r_rejected - margin) on the pairs of "
    "'rlhi dpo'.\n"
    "score: reads {\"persona\"?, \"prompt\" or \"messages\", \"answer\"?} "
    "per line\n  (without \"answer\", the last message of \"messages\" is "
    "the answer) and\n  writes {\"score\": x} per line.";

/* Template of a model directory, else the rlhi one. */
static int pick_template(const char *tmpl, const char *dir,
                         enum rlhi_chat_kind *kind)
{
    if (tmpl)
        return rlhi_chat_kind_from_name(tmpl, kind);
    if (rlhi_chat_template_from_dir(dir, kind) == 0)
        return 0;
    return rlhi_chat_kind_from_name("rlhi", kind);
}

static int reward_train(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *data = NULL;
    const char *tmpl = NULL;
    struct rlhi_reward_config rc;
    struct rlhi_reward_result res;
    struct rlhi_dpo_data d = {0};
    struct rlhi_reward *rm = NULL;
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    enum rlhi_chat_kind kind;
    int64_t seed = 42;
    int max_length = 1024, r, result = EXIT_RUNTIME;
    bool no_persona = false;
    char *copy_dir = NULL;

    rlhi_reward_config_init(&rc);
    {
        const struct cli_opt opts[] = {
            {"model", CLI_STR, &model_dir, "Hugging Face model directory "
                                           "(a reward model continues "
                                           "training)"},
            {"tokenizer", CLI_STR, &tok_path, "default: the model's"},
            {"chat_template", CLI_STR, &tmpl, "default: the model's, else "
                                              "rlhi"},
            {"data", CLI_STR, &data, "preference pairs (JSONL, as rlhi "
                                     "dpo)"},
            {"output_dir", CLI_STR, &rc.output_dir, "where to write"},
            {"learning_rate", CLI_DOUBLE, &rc.learning_rate, "1e-5"},
            {"num_train_epochs", CLI_DOUBLE, &rc.num_train_epochs, "1"},
            {"max_steps", CLI_I64, &rc.max_steps, "> 0 overrides epochs"},
            {"per_device_train_batch_size", CLI_INT, &rc.batch_size, "8"},
            {"gradient_accumulation_steps", CLI_INT, &rc.grad_accum, "1"},
            {"max_length", CLI_INT, &max_length, "1024"},
            {"seed", CLI_I64, &seed, "42"},
            {"warmup_ratio", CLI_DOUBLE, &rc.warmup_ratio, "0"},
            {"weight_decay", CLI_DOUBLE, &rc.weight_decay, "0"},
            {"max_grad_norm", CLI_DOUBLE, &rc.max_grad_norm, "1.0"},
            {"center_rewards_coefficient", CLI_DOUBLE,
             &rc.center_rewards_coefficient, "0 (off)"},
            {"logging_steps", CLI_INT, &rc.logging_steps, "10"},
            {"save_steps", CLI_INT, &rc.save_steps, "500"},
            {"no_persona", CLI_BOOL, &no_persona, "drop the persona"},
            {NULL, 0, NULL, NULL},
        };

        r = cli_parse(argc, argv, opts, usage_main, NULL, NULL);
        if (r)
            return r < 0 ? EXIT_OK : r;
    }
    if (!model_dir || !data || !rc.output_dir) {
        fprintf(stderr, "rlhi: error: reward train needs --model, --data "
                        "and --output_dir\n");
        return EXIT_USAGE;
    }
    rc.seed = (uint64_t)seed;
    r = rlhi_reward_load(&rm, model_dir);
    if (r == RLHI_ENOTFOUND) {
        r = rlhi_model_load(&m, model_dir);
        if (!r)
            r = rlhi_reward_new(&rm, m, rc.seed);
    }
    if (r)
        return cli_fail(r, "cannot load the model");
    r = cli_load_tokenizer(tok_path ? tok_path : model_dir, &tok, &copy_dir);
    if (r) {
        result = r;
        goto out;
    }
    rc.copy_from = copy_dir;
    r = pick_template(tmpl, model_dir, &kind);
    if (!r)
        r = rlhi_dpo_data_load(&d, data, tok, kind, max_length, no_persona);
    if (r) {
        result = cli_fail(r, "cannot read the pairs");
        goto out;
    }
    r = rlhi_reward_train(rm, &d, &rc, &res);
    if (r) {
        result = cli_fail(r, "reward training failed");
        goto out;
    }
    rlhi_info("reward done: %lld steps, %.1f s, accuracy %.3f",
              (long long)res.steps, res.seconds, res.last.accuracy);
    result = d.skipped ? EXIT_DATA : EXIT_OK;
out:
    rlhi_dpo_data_release(&d);
    rlhi_tokenizer_free(tok);
    rlhi_reward_free(rm);
    rlhi_free(copy_dir);
    return result;
}

/* The record as {"prompt", "answer", "persona"}: without "answer", the
 * last message of "messages" is split off. New reference. */
static json_t *score_record(json_t *rec)
{
    json_t *msgs, *p, *a;
    size_t n;

    if (!json_is_object(rec))
        return NULL;
    if (json_object_get(rec, "answer"))
        return json_incref(rec);
    msgs = json_object_get(rec, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) < 2)
        return NULL;
    n = json_array_size(msgs);
    p = json_array();
    for (size_t i = 0; i + 1 < n; i++)
        json_array_append(p, json_array_get(msgs, i));
    a = json_pack("{sosO*}", "prompt", p, "persona",
                  json_object_get(rec, "persona"));
    if (a)
        json_object_set_new(a, "answer",
                            json_pack("[O]", json_array_get(msgs, n - 1)));
    return a;
}

static int reward_score(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *data = "-";
    const char *tmpl = NULL;
    struct rlhi_reward *rm = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_jsonl *rd = NULL;
    struct toks tk = {0};
    enum rlhi_chat_kind kind;
    bool no_persona = false;
    int r, result = EXIT_RUNTIME, bad = 0;
    json_t *rec;

    {
        const struct cli_opt opts[] = {
            {"model", CLI_STR, &model_dir, "reward model directory"},
            {"tokenizer", CLI_STR, &tok_path, "default: the model's"},
            {"chat_template", CLI_STR, &tmpl, "default: the model's"},
            {"data", CLI_STR, &data, "records (JSONL; default stdin)"},
            {"no_persona", CLI_BOOL, &no_persona, "drop the persona"},
            {NULL, 0, NULL, NULL},
        };

        r = cli_parse(argc, argv, opts, usage_main, NULL, NULL);
        if (r)
            return r < 0 ? EXIT_OK : r;
    }
    if (!model_dir) {
        fprintf(stderr, "rlhi: error: reward score needs --model\n");
        return EXIT_USAGE;
    }
    r = rlhi_reward_load(&rm, model_dir);
    if (r)
        return cli_fail(r, "cannot load the reward model");
    r = rlhi_tokenizer_load(&tok, tok_path ? tok_path : model_dir);
    if (!r)
        r = pick_template(tmpl, model_dir, &kind);
    if (!r)
        r = rlhi_jsonl_open(&rd, !strcmp(data, "-") ? "/dev/stdin" : data);
    if (r) {
        result = cli_fail(r, "cannot start scoring");
        goto out;
    }
    for (;;) {
        json_t *norm, *msgs;
        double score;
        int n;
        const int32_t *seq;

        r = rlhi_jsonl_next(rd, &rec);
        if (r == 0)
            break;
        if (r < 0) {
            rlhi_warn("%s", rlhi_errmsg());
            if (r != RLHI_EFORMAT)
                goto out;
            bad++;
            printf("{\"score\": null}\n");
            continue;
        }
        norm = score_record(rec);
        json_decref(rec);
        msgs = norm ? rlhi_dpo_record_messages(norm, "answer", no_persona)
                    : NULL;
        json_decref(norm);
        if (!norm && !msgs)
            rlhi_err(RLHI_EFORMAT, "expected \"answer\" or \"messages\" "
                     "ending in the answer");
        r = msgs ? rlhi__sft_example(msgs, tok, kind, &tk) : RLHI_EFORMAT;
        json_decref(msgs);
        n = (int)tk.n;
        seq = tk.id;
        if (!r && n > rm->m->cfg.max_seq_len)
            n = rm->m->cfg.max_seq_len; /* keep the start, as training */
        if (!r)
            r = rlhi_reward_score(rm, &seq, &n, 1, &score);
        if (r == RLHI_ENOMEM)
            goto out;
        if (r) {
            rlhi_warn("%s:%llu: %s", data,
                      (unsigned long long)rlhi_jsonl_line_no(rd),
                      rlhi_errmsg());
            bad++;
            printf("{\"score\": null}\n");
            continue;
        }
        printf("{\"score\": %.6g}\n", score);
    }
    fflush(stdout);
    result = bad ? EXIT_DATA : EXIT_OK;
out:
    rlhi_free(tk.id);
    rlhi_free(tk.sc);
    rlhi_jsonl_close(rd);
    rlhi_tokenizer_free(tok);
    rlhi_reward_free(rm);
    return result;
}

int cmd_reward(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "train"))
        return reward_train(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "score"))
        return reward_score(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts(usage_main);
        return EXIT_OK;
    }
    fprintf(stderr, "%s\n", usage_main);
    return EXIT_USAGE;
}
