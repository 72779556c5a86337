/* rlhi: the command line. Dispatches to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"generate", cmd_generate, "generate text from a model"},
    {"tokenize", cmd_tokenize, "text to token ids and back (JSONL)"},
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer"},
    {"score", cmd_score, "log-probabilities of given text under a model"},
    {"bench", cmd_bench, "benchmarks: generate, train, dpo, ingest, feedback, "
                         "serve"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
    {"sim", cmd_sim, "the simulated chat world (users, judge, corpus)"},
    {"ingest", cmd_ingest, "load chat logs (WildChat, chat, ShareGPT JSONL) "
                           "into a store"},
    {"status", cmd_status, "what a store holds and which stages ran"},
    {"feedback", cmd_feedback, "label follow-up turns (feedback detection)"},
    {"persona", cmd_persona, "derive per-user personas from their history"},
    {"export", cmd_export, "store contents as JSONL (feedback, personas, "
                           "pairs)"},
    {"pairs", cmd_pairs, "preference pairs: rewrite, rank, filter, export"},
    {"sft", cmd_sft, "supervised fine-tuning on chat JSONL"},
    {"eval", cmd_eval, "evaluation: simulated judge, reasoning sets, LLM judge"},
    {"demo", cmd_demo, "RLHI end to end in the simulated world (make demo)"},
    {"dpo", cmd_dpo, "persona-conditioned DPO on preference pairs"},
    {"reward", cmd_reward, "train or apply a reward model"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    const struct command *c;

    fprintf(f, "usage: rlhi <command> [options]   (rlhi <command> --help)\n"
               "\ncommands:\n");
    for (c = commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
}

int main(int argc, char **argv)
{
    const struct command *c;

    cli_setup_logging();
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    for (c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "rlhi: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
