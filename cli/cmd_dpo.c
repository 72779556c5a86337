/* rlhi dpo: persona-conditioned DPO on preference pairs (TRL's
 * conversational JSONL), with TRL's option names. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/chat.h"
#include "rlhi/dpo.h"
#include "rlhi/model.h"
#include "rlhi/reward.h"
#include "rlhi/tokenizer.h"

static const char usage[] =
    "usage: rlhi dpo --model DIR --data FILE.jsonl --output_dir DIR "
    "[options]\n\n"
    "Trains a model with Direct Preference Optimisation on pairs\n"
    "  {\"prompt\": [messages], \"chosen\": [{\"role\": \"assistant\", ...}],"
    "\n   \"rejected\": [...], \"persona\": \"...\"}\n"
    "The persona goes into the system message (prepended to an existing "
    "one,\nseparated by a blank line). Only the final answer is scored. "
    "Reference\nlog-probs come from the initial model, computed once and "
    "cached in\nOUTPUT_DIR (or --ref_cache_dir). Metrics (TRL's names) go "
    "to stderr and\nOUTPUT_DIR/metrics.jsonl.\n"
    "Default learning rate 1e-6: TRL's 1e-6 is for 7B-scale models; small "
    "models\ntrained from scratch usually want 1e-5 .. 1e-4.\n"
    "Iterative (online) DPO: --iterations K --num_candidates N "
    "--reward_model DIR\nsamples N answers per prompt from the newest "
    "policy each round, pairs the\nreward model's best against its worst "
    "and trains one round against the\noriginal model "
    "(OUTPUT_DIR/iteration-K per round).";

int cmd_dpo(int argc, char **argv)
{
    const char *model_dir = NULL, *tok_path = NULL, *data = NULL;
    const char *tmpl = NULL, *loss_type = "sigmoid", *loss_weights = NULL;
    struct rlhi_dpo_config dc;
    struct rlhi_dpo_data d = {0};
    struct rlhi_dpo_result res;
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    enum rlhi_chat_kind kind;
    double beta = 0.1, ls = 0;
    int64_t seed = 42;
    bool no_persona = false, two_rows = false;
    char *copy_dir = NULL;
    const char *reward_dir = NULL;
    struct rlhi_dpo_iter_config ic;
    struct rlhi_reward *rm = NULL;
    int iterations = 0, r, result = EXIT_RUNTIME;

    rlhi_dpo_config_init(&dc);
    rlhi_dpo_iter_config_init(&ic);
    {
        const struct cli_opt opts[] = {
            {"model", CLI_STR, &model_dir, "Hugging Face model directory "
                                           "(policy and reference)"},
            {"tokenizer", CLI_STR, &tok_path, "tokenizer (default: the "
                                              "model directory)"},
            {"chat_template", CLI_STR, &tmpl, "template name (default: the "
                                              "model's, else rlhi)"},
            {"data", CLI_STR, &data, "preference pairs (JSONL)"},
            {"output_dir", CLI_STR, &dc.output_dir, "where to write"},
            {"beta", CLI_DOUBLE, &beta, "0.1"},
            {"loss_type", CLI_STR, &loss_type, "sigmoid, ipo, hinge, "
                                               "robust, sft, sigmoid_norm; "
                                               "comma-separated to combine"},
            {"loss_weights", CLI_STR, &loss_weights, "one weight per loss "
                                                     "type (default 1)"},
            {"label_smoothing", CLI_DOUBLE, &ls, "0"},
            CLI_TRAIN_OPTS(dc, seed, "1e-6", "1"),
            {"precompute_ref_log_probs", CLI_BOOL, &dc.precompute_ref,
             "reference log-probs once, cached on disk (default true)"},
            {"ref_cache_dir", CLI_STR, &dc.ref_cache_dir, "where the "
                                                          "reference cache "
                                                          "lives"},
            {"logging_steps", CLI_INT, &dc.logging_steps, "10"},
            {"save_steps", CLI_INT, &dc.save_steps, "500 (0: only the "
                                                    "final model)"},
            {"no_persona", CLI_BOOL, &no_persona, "drop the persona (the "
                                                  "user-agnostic ablation)"},
            {"no_prefix_sharing", CLI_BOOL, &two_rows, "run the prompt "
                                                       "twice, as TRL"},
            {"iterations", CLI_INT, &iterations, "rounds of online DPO "
                                                 "(0: offline, the default)"},
            {"num_candidates", CLI_INT, &ic.num_candidates, "answers "
                                                            "sampled per "
                                                            "prompt (4)"},
            {"reward_model", CLI_STR, &reward_dir, "reward model directory "
                                                   "(iterative DPO)"},
            {"min_margin", CLI_DOUBLE, &ic.min_margin, "drop pairs whose "
                                                       "reward margin is "
                                                       "smaller (0)"},
            {"max_new_tokens", CLI_INT, &ic.max_new_tokens, "per sampled "
                                                            "answer (128)"},
            {"temperature", CLI_DOUBLE, &ic.temperature, "sampling (1.0)"},
            {NULL, 0, NULL, NULL},
        };

        r = cli_parse(argc, argv, opts, usage, NULL, NULL);
        if (r)
            return r < 0 ? EXIT_OK : r;
    }
    if (!model_dir || !data || !dc.output_dir) {
        fprintf(stderr, "rlhi: error: dpo needs --model, --data and "
                        "--output_dir\nhint: see 'rlhi dpo --help'\n");
        return EXIT_USAGE;
    }
    if (iterations > 0 && !reward_dir) {
        fprintf(stderr, "rlhi: error: --iterations needs --reward_model\n");
        return EXIT_USAGE;
    }
    ic.iterations = iterations;
    dc.seed = (uint64_t)seed;
    dc.share = dc.share && !two_rows; /* default: on when the engine has it */
    r = rlhi_dpo_loss_parse(&dc.loss, loss_type, loss_weights);
    if (r) {
        fprintf(stderr, "rlhi: error: %s\n", rlhi_errmsg());
        return EXIT_USAGE;
    }
    dc.loss.beta = beta;
    dc.loss.label_smoothing = ls;

    r = rlhi_model_load(&m, model_dir);
    if (r)
        return cli_fail(r, "cannot load the model");
    r = cli_load_tokenizer(tok_path ? tok_path : model_dir, &tok, &copy_dir);
    if (r) {
        result = r;
        goto out;
    }
    dc.copy_from = copy_dir;
    if (tmpl)
        r = rlhi_chat_kind_from_name(tmpl, &kind);
    else if (rlhi_chat_template_from_dir(model_dir, &kind) != 0) {
        rlhi_info("no chat template in '%s': using the rlhi template",
                  model_dir);
        r = rlhi_chat_kind_from_name("rlhi", &kind);
    }
    if (r) {
        result = cli_fail(r, "cannot choose a chat template");
        goto out;
    }

    r = rlhi_dpo_data_load(&d, data, tok, kind, dc.max_length, no_persona);
    if (r) {
        result = cli_fail(r, "cannot read the preference pairs");
        goto out;
    }
    rlhi_info("%d pairs from '%s' (%lld skipped, %lld dropped as too long), "
              "template %s%s", d.n, data, (long long)d.skipped,
              (long long)d.dropped, rlhi_chat_kind_name(kind),
              no_persona ? ", personas dropped" : "");
    if (iterations > 0) {
        r = rlhi_reward_load(&rm, reward_dir);
        if (r) {
            result = cli_fail(r, "cannot load the reward model");
            goto out;
        }
        r = rlhi_dpo_iterate(m, tok, rm, &d, &dc, &ic, &res);
    } else
        r = rlhi_dpo_train(m, &d, &dc, &res);
    if (r) {
        result = cli_fail(r, "dpo failed");
        goto out;
    }
    rlhi_info("dpo done: %lld steps, %lld tokens, %.1f s, final loss %.4f, "
              "rewards/accuracies %.3f", (long long)res.steps,
              (long long)res.num_tokens, res.seconds, res.last_loss,
              res.last.accuracy);
    result = d.skipped ? EXIT_DATA : EXIT_OK;
out:
    rlhi_dpo_data_release(&d);
    rlhi_reward_free(rm);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    rlhi_free(copy_dir);
    return result;
}
