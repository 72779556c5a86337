/* rlhi pairs: preference pairs from the store (rewrite, rank), their
 * quality filters, and their export as TRL JSONL. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/pairs.h"

static const char usage[] =
    "usage: rlhi pairs rewrite --db DB --backend local:MODEL|URL\n"
    "                  [--regenerate] [--redact] [--tokenizer TOK]\n"
    "       rlhi pairs rank --db DB --policy local:MODEL|URL\n"
    "                  [--num_candidates N] (--judge style|local:M|URL |\n"
    "                  --reward_model DIR)\n"
    "       rlhi pairs filter --db DB [--judge style|local:M|URL |\n"
    "                  --reward_model DIR]\n"
    "                  [--min_margin X] [--source S] [--force]\n"
    "       rlhi pairs export --db DB [--source rewrite|regenerate|rank]\n"
    "                  [--include_dropped]   (also: rlhi export pairs)\n"
    "\n"
    "rewrite: for every turn labelled reattempt_feedback ('rlhi feedback'),\n"
    "  the model rewrites the answer following the user's feedback; pair:\n"
    "  prompt = persona ('rlhi persona') + conversation up to the request,\n"
    "  chosen = rewrite, rejected = original answer. --regenerate answers\n"
    "  afresh ignoring the feedback (the paper's ablation; source\n"
    "  'regenerate'). --in_context sends the conversation with the answer\n"
    "  and the feedback as chat instead of a rewrite instruction. Reruns\n"
    "  skip turns already done.\n"
    "rank: N answers sampled per request without feedback (one request\n"
    "  with n = N), scored for the persona, best versus worst (source\n"
    "  'rank').\n"
    "filter: drops identical pairs, margins under --min_margin, and pairs\n"
    "  whose chosen answer the judge does not prefer in both orders; prints\n"
    "  the counts per reason. 'style' is a builtin judge without a model.\n"
    "export: TRL conversational explicit-prompt JSONL on stdout.\n"
    "--redact replaces e-mails, phones, secrets and URLs in everything sent\n"
    "to a model or stored in a pair. Local models: llama2.c .bin (give\n"
    "--tokenizer) or a Hugging Face directory.";



struct popts {
    const char *db, *backend, *policy, *judge, *reward_model, *tokenizer;
    const char *chat_template, *api_key, *cache, *source;
    const char *reward_tokenizer, *reward_chat_template;
    const char *feedback_backend, *persona_backend;
    bool regenerate, in_context, redact, include_dropped, force;
    int num_candidates, max_tokens, batch, concurrency, max_retries, round;
    int judge_max_tokens, max_prompt_chars;
    int64_t limit, seed;
    float temperature;
    double min_margin, timeout;
};

/* Opens an llm client for `endpoint` with the shared options. */
static int open_llm(const struct popts *p, const char *endpoint,
                    struct rlhi_llm **out)
{
    struct rlhi_llm_options o;
    int rc;

    rlhi_llm_options_default(&o);
    o.endpoint = endpoint;
    o.api_key = p->api_key;
    o.tokenizer = p->tokenizer;
    o.chat_template = p->chat_template;
    o.cache_path = p->cache;
    if (p->concurrency > 0)
        o.concurrency = p->concurrency;
    if (p->max_retries >= 0)
        o.max_retries = p->max_retries;
    if (p->timeout > 0)
        o.timeout_s = p->timeout;
    if ((rc = rlhi_llm_open(out, &o)))
        return cli_fail(rc, endpoint);
    return 0;
}

/* The judge: a reward model (--reward_model), "style" (builtin) or an
 * LLM (--judge). *l gets the client to close (NULL if none). */
static int open_judge(const struct popts *p, struct rlhi_judge *j,
                      struct rlhi_ask *ask, struct rlhi_llm **l)
{
    int rc;

    *l = NULL;
    if (p->reward_model) {
        rc = rlhi_judge_reward(j, p->reward_model, p->reward_tokenizer,
                               p->reward_chat_template);
        return rc ? cli_fail(rc, "cannot load the reward model") : 0;
    }
    if (!strcmp(p->judge, "style") || !strcmp(p->judge, "builtin")) {
        rlhi_judge_style(j);
        return 0;
    }
    if ((rc = open_llm(p, p->judge, l)))
        return rc;
    rlhi_ask_from_llm(ask, *l, p->judge_max_tokens);
    rlhi_judge_llm(j, ask);
    if (p->max_prompt_chars > 0)
        j->max_chars = (size_t)p->max_prompt_chars / 3;
    return 0;
}

static void print_stats(const char *what, const struct rlhi_pairs_stats *st)
{
    fprintf(stderr, "rlhi: %s: %llu turns, %llu new pairs, %llu already "
            "done, %llu skipped, %llu failed requests, in %.2f s\n", what,
            (unsigned long long)st->turns, (unsigned long long)st->made,
            (unsigned long long)st->done, (unsigned long long)st->skipped,
            (unsigned long long)st->failed, st->seconds);
    if (st->redactions)
        fprintf(stderr, "rlhi: %llu redactions\n",
                (unsigned long long)st->redactions);
}

int cmd_pairs(int argc, char **argv)
{
    struct popts p = {0};
    struct rlhi_store *s = NULL;
    struct rlhi_llm *gen = NULL, *jl = NULL;
    struct rlhi_judge judge = {0};
    struct rlhi_ask ask;
    char **pos, args[64];
    int npos, rc;
    const char *cmd;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &p.db, "the store"},
        {"backend", CLI_STR, &p.backend,
         "rewrite: the model, local:PATH or an OpenAI-compatible URL"},
        {"policy", CLI_STR, &p.policy, "rank: the model sampled"},
        {"judge", CLI_STR, &p.judge,
         "style (builtin, no model), local:PATH or a URL"},
        {"reward_model", CLI_STR, &p.reward_model,
         "rank: a persona-conditioned reward model directory"},
        {"reward_tokenizer", CLI_STR, &p.reward_tokenizer,
         "the reward model's tokenizer (default: its directory's)"},
        {"reward_chat_template", CLI_STR, &p.reward_chat_template,
         "the reward model's template (default: detect, else rlhi)"},
        {"tokenizer", CLI_STR, &p.tokenizer, "local llama2.c tokenizer .bin"},
        {"chat_template", CLI_STR, &p.chat_template,
         "local chat template name (default: detect)"},
        {"api_key", CLI_STR, &p.api_key, "HTTP API key"},
        {"cache", CLI_STR, &p.cache, "SQLite file caching model replies"},
        {"regenerate", CLI_BOOL, &p.regenerate,
         "rewrite: answer afresh, ignoring the feedback"},
        {"in_context", CLI_BOOL, &p.in_context,
         "rewrite: the model answers the feedback turn itself (no "
         "rewrite instruction)"},
        {"redact", CLI_BOOL, &p.redact, "redact personal data"},
        {"num_candidates", CLI_INT, &p.num_candidates,
         "rank: answers per request (4)"},
        {"temperature", CLI_FLOAT, &p.temperature, "rank: sampling (1)"},
        {"seed", CLI_I64, &p.seed, "rank: sampling seed (0)"},
        {"max_tokens", CLI_INT, &p.max_tokens, "per answer (256)"},
        {"max_prompt_chars", CLI_INT, &p.max_prompt_chars,
         "cut texts quoted to the model to this size (2000)"},
        {"judge_max_tokens", CLI_INT, &p.judge_max_tokens,
         "per judge verdict (256)"},
        {"batch", CLI_INT, &p.batch, "turns per model batch (16)"},
        {"concurrency", CLI_INT, &p.concurrency, "requests in flight (4)"},
        {"max_retries", CLI_INT, &p.max_retries, "HTTP retries (5)"},
        {"timeout", CLI_DOUBLE, &p.timeout, "seconds per request (300)"},
        {"limit", CLI_I64, &p.limit, "at most this many new pairs"},
        {"round", CLI_INT, &p.round, "iteration round stored (0)"},
        {"feedback_backend", CLI_STR, &p.feedback_backend,
         "whose feedback labels (builtin)"},
        {"persona_backend", CLI_STR, &p.persona_backend,
         "whose personas (builtin)"},
        {"min_margin", CLI_DOUBLE, &p.min_margin,
         "filter: smallest score margin kept (0)"},
        {"source", CLI_STR, &p.source, "filter/export: rewrite, "
                                       "regenerate or rank"},
        {"include_dropped", CLI_BOOL, &p.include_dropped,
         "export: also dropped pairs, with kept and drop_reason"},
        {"force", CLI_BOOL, &p.force, "filter: forget earlier decisions"},
        {NULL, 0, NULL, NULL},
    };

    p.max_retries = -1;
    if (argc >= 2 && !strcmp(argv[1], "export"))
        return cmd_pairs_export(argc - 1, argv + 1);
    rc = cli_parse(argc, argv, opts, usage, &npos, &pos);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (npos != 1 || (strcmp(pos[0], "rewrite") && strcmp(pos[0], "rank") &&
                      strcmp(pos[0], "filter"))) {
        fprintf(stderr, "rlhi: error: say what to do: rewrite, rank, filter "
                        "or export\nhint: see 'rlhi pairs --help'\n");
        return EXIT_USAGE;
    }
    cmd = pos[0];
    if (!strcmp(cmd, "rewrite") && !p.backend) {
        fprintf(stderr, "rlhi: error: rewrite needs --backend local:MODEL "
                        "or a URL\n");
        return EXIT_USAGE;
    }
    if (!strcmp(cmd, "rank")) {
        if (!p.policy) {
            fprintf(stderr, "rlhi: error: rank needs --policy local:MODEL "
                            "or a URL\n");
            return EXIT_USAGE;
        }
        if (!p.judge && !p.reward_model) {
            fprintf(stderr, "rlhi: error: rank needs --judge or "
                            "--reward_model to score the candidates\n");
            return EXIT_USAGE;
        }
    }
    if ((rc = cli_open_store(p.db, "pairs", &s)))
        return rc;

    if (!strcmp(cmd, "rewrite") || !strcmp(cmd, "rank")) {
        struct rlhi_pairs_opts o = {0};
        struct rlhi_pairs_stats st;

        o.feedback_backend = p.feedback_backend;
        o.persona_backend = p.persona_backend;
        o.regenerate = p.regenerate;
        o.in_context = p.in_context;
        o.redact = p.redact;
        o.max_tokens = p.max_tokens;
        o.max_prompt_chars = p.max_prompt_chars > 0
                                 ? (size_t)p.max_prompt_chars : 0;
        o.batch = p.batch;
        o.num_candidates = p.num_candidates;
        o.temperature = p.temperature;
        o.seed = (uint64_t)p.seed;
        o.round = p.round;
        o.limit = p.limit;
        snprintf(args, sizeof args, "pairs %s%s%s", cmd,
                 p.regenerate ? " --regenerate" : "",
                 p.redact ? " --redact" : "");
        o.args = args;
        if (!strcmp(cmd, "rewrite")) {
            if (!(rc = open_llm(&p, p.backend, &gen))) {
                rc = rlhi_pairs_rewrite(s, gen, &o, &st);
                if (rc)
                    rc = cli_fail(rc, p.regenerate ? "regenerate"
                                                   : "rewrite");
                print_stats(p.regenerate ? "regenerate" : "rewrite", &st);
            }
        } else if (!(rc = open_llm(&p, p.policy, &gen)) &&
                   !(rc = open_judge(&p, &judge, &ask, &jl))) {
            rc = rlhi_pairs_rank(s, gen, &judge, &o, &st);
            if (rc)
                rc = cli_fail(rc, "rank");
            print_stats("rank", &st);
        }
    } else {
        struct rlhi_filter_opts o = {0};
        struct rlhi_filter_stats st;

        o.source = p.source;
        o.min_margin = p.min_margin;
        o.redact = p.redact;
        o.force = p.force;
        o.args = "pairs filter";
        bool judged = p.judge || p.reward_model;

        if (!judged || !(rc = open_judge(&p, &judge, &ask, &jl))) {
            rc = rlhi_pairs_filter(s, judged ? &judge : NULL, &o, &st);
            if (rc) {
                rc = cli_fail(rc, "filter");
            } else {
                fprintf(stderr, "rlhi: filter: %llu pairs checked (%llu "
                        "checked before), %llu kept, %llu dropped, in "
                        "%.2f s\n", (unsigned long long)st.checked,
                        (unsigned long long)st.already,
                        (unsigned long long)st.kept,
                        (unsigned long long)(st.checked - st.kept),
                        st.seconds);
                for (int r = 0; r < RLHI_DROP_N; r++)
                    fprintf(stderr, "  %-24s %8llu\n", rlhi_drop_name(r),
                            (unsigned long long)st.dropped[r]);
                if (!judged)
                    fprintf(stderr, "rlhi: no --judge: only identical "
                                    "texts and margins were checked\n");
            }
        }
    }
    rlhi_judge_release(&judge);
    rlhi_llm_close(gen);
    rlhi_llm_close(jl);
    rlhi_store_close(s);
    return rc;
}

static const char export_usage[] =
    "usage: rlhi export pairs --db DB [--source rewrite|regenerate|rank]\n"
    "                         [--include_dropped]\n"
    "\n"
    "One line per kept pair in TRL's conversational explicit-prompt shape:\n"
    "{\"prompt\": [messages, the persona as the system message],\n"
    "\"chosen\": [{\"role\": \"assistant\", \"content\"}], \"rejected\": [...],\n"
    "\"persona\", \"user_id\", \"conversation_hash\", \"turn\", \"source\", \"round\",\n"
    "\"chosen_score\", \"rejected_score\", \"margin\"}; --include_dropped adds\n"
    "dropped pairs and the fields \"kept\" and \"drop_reason\".";

/* `rlhi export pairs` and `rlhi pairs export`; argv[0] is "pairs" or
 * "export". */
int cmd_pairs_export(int argc, char **argv)
{
    struct rlhi_store *s = NULL;
    const char *db = NULL, *source = NULL;
    bool dropped = false;
    uint64_t n = 0;
    int rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store"},
        {"source", CLI_STR, &source, "rewrite, regenerate or rank (all)"},
        {"include_dropped", CLI_BOOL, &dropped,
         "also pairs the filters dropped"},
        {NULL, 0, NULL, NULL},
    };

    rc = cli_parse(argc, argv, opts, export_usage, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (source && strcmp(source, "rewrite") && strcmp(source, "rank") &&
        strcmp(source, "regenerate")) {
        fprintf(stderr, "rlhi: error: invalid value '%s' for --source: "
                        "rewrite, regenerate or rank\n", source);
        return EXIT_USAGE;
    }
    if ((rc = cli_open_store(db, "export pairs", &s)))
        return rc;
    rc = rlhi_pairs_export(s, source, dropped, stdout, &n);
    rlhi_store_close(s);
    if (!rc && fflush(stdout)) {
        perror("rlhi: error: cannot write to stdout");
        return EXIT_RUNTIME;
    }
    if (rc)
        return cli_fail(rc, "export pairs");
    fprintf(stderr, "rlhi: exported %llu pairs\n", (unsigned long long)n);
    return EXIT_OK;
}

/* ---- model-backed feedback and personas ------------------------------- */

/* True when `--backend X` in argv names a model ("local:PATH" or an http
 * URL) rather than a builtin detector. */
bool cli_backend_is_model(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;

        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            v = argv[i + 1];
        else if (!strncmp(argv[i], "--backend=", 10))
            v = argv[i] + 10;
        if (v && (!strncmp(v, "local:", 6) || !strncmp(v, "http://", 7) ||
                  !strncmp(v, "https://", 8)))
            return true;
    }
    return false;
}

static const char llm_stage_usage[] =
    "usage: rlhi feedback|persona --db DB --backend local:MODEL|URL\n"
    "                  [--name llm] [--redact] [--tokenizer TOK]\n"
    "\n"
    "feedback: labels every follow-up user turn not yet labelled under\n"
    "  --name by asking the model for a JSON verdict {label, dissatisfied,\n"
    "  actionable}; a malformed verdict is asked for once more.\n"
    "persona: summarises each user's history (in chunks of --max_chars,\n"
    "  then a merge prompt) into the four dimensions and a text.\n"
    "Rows are stored under backend --name (default 'llm'): pass\n"
    "'--feedback_backend llm' / '--persona_backend llm' to 'rlhi pairs'.";

/* `rlhi feedback --backend MODEL` and `rlhi persona --backend MODEL`;
 * argv[0] is "feedback" or "persona". */
int cmd_llm_stage(int argc, char **argv)
{
    struct popts p = {0};
    const char *name = "llm";
    struct rlhi_store *s = NULL;
    struct rlhi_llm *l = NULL;
    struct rlhi_ask ask;
    int rc, max_chars = 0;
    bool persona = !strcmp(argv[0], "persona");
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &p.db, "the store"},
        {"backend", CLI_STR, &p.backend, "local:PATH or a URL"},
        {"name", CLI_STR, &name, "backend name stored with the rows (llm)"},
        {"redact", CLI_BOOL, &p.redact, "redact what is sent to the model"},
        {"tokenizer", CLI_STR, &p.tokenizer, "local llama2.c tokenizer .bin"},
        {"chat_template", CLI_STR, &p.chat_template, "local template name"},
        {"api_key", CLI_STR, &p.api_key, "HTTP API key"},
        {"cache", CLI_STR, &p.cache, "SQLite file caching model replies"},
        {"max_tokens", CLI_INT, &p.judge_max_tokens, "per verdict (256)"},
        {"max_chars", CLI_INT, &max_chars,
         "persona: history characters per chunk (6000)"},
        {"concurrency", CLI_INT, &p.concurrency, "requests in flight (4)"},
        {"max_retries", CLI_INT, &p.max_retries, "HTTP retries (5)"},
        {"timeout", CLI_DOUBLE, &p.timeout, "seconds per request (300)"},
        {NULL, 0, NULL, NULL},
    };

    p.max_retries = -1;
    rc = cli_parse(argc, argv, opts, llm_stage_usage, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_open_store(p.db, argv[0], &s)))
        return rc;
    if ((rc = open_llm(&p, p.backend, &l))) {
        rlhi_store_close(s);
        return rc;
    }
    rlhi_ask_from_llm(&ask, l, p.judge_max_tokens);
    if (persona) {
        struct rlhi_persona_stats st;

        rc = rlhi_llm_persona_run(s, &ask, name, p.redact,
                                  max_chars > 0 ? (size_t)max_chars : 0,
                                  &st);
        if (!rc)
            fprintf(stderr, "rlhi: personas ('%s') for %llu users: %llu "
                    "made, %llu unchanged, in %.2f s\n", name,
                    (unsigned long long)st.users,
                    (unsigned long long)st.made,
                    (unsigned long long)st.unchanged, st.seconds);
    } else {
        struct rlhi_feedback_stats st;

        rc = rlhi_llm_feedback_run(s, &ask, name, p.redact, &st);
        if (!rc) {
            fprintf(stderr, "rlhi: labelled ('%s') %llu turns in %llu "
                    "conversations in %.2f s\n", name,
                    (unsigned long long)st.turns,
                    (unsigned long long)st.conversations, st.seconds);
            for (int k = 0; k < RLHI_FB_NLABELS; k++)
                fprintf(stderr, "  %-22s %8llu\n",
                        rlhi_feedback_label_name(k),
                        (unsigned long long)st.by_label[k]);
        }
    }
    if (rc)
        rc = cli_fail(rc, argv[0]);
    rlhi_llm_close(l);
    rlhi_store_close(s);
    return rc;
}
