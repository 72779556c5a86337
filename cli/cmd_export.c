/* rlhi export: store contents as JSONL on stdout (feedback labels,
 * personas). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/pipeline.h"

static const char usage[] =
    "usage: rlhi export feedback|personas --db DB [--backend builtin]\n"
    "\n"
    "feedback: one line per labelled turn, {\"conversation_hash\",\n"
    "  \"turn_index\" (index of the user message), \"label\",\n"
    "  \"dissatisfied\", \"actionable\"}; the share of feedback turns goes\n"
    "  to stderr.\n"
    "personas: one line per user, {\"user\", \"backend\", \"expertise\":\n"
    "  {\"value\", \"evidence\"}, ..., \"text\", \"history_hash\"}.";

void feedback_print_stats(const struct rlhi_feedback_stats *st);

int cmd_export(int argc, char **argv)
{
    struct rlhi_store *s = NULL;
    const char *db = NULL, *backend = NULL;
    char **pos;
    int npos, rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store"},
        {"backend", CLI_STR, &backend, "whose labels/personas (builtin)"},
        {NULL, 0, NULL, NULL},
    };

    if (argc >= 2 && !strcmp(argv[1], "pairs"))
        return cmd_pairs_export(argc - 1, argv + 1);
    rc = cli_parse(argc, argv, opts, usage, &npos, &pos);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (npos != 1 || (strcmp(pos[0], "feedback") &&
                      strcmp(pos[0], "personas"))) {
        fprintf(stderr, "rlhi: error: say what to export: feedback or "
                        "personas\nhint: see 'rlhi export --help'\n");
        return EXIT_USAGE;
    }
    if ((rc = cli_open_store(db, "export", &s)))
        return rc;
    if (!strcmp(pos[0], "feedback")) {
        struct rlhi_feedback_stats st;

        rc = rlhi_feedback_export(s, backend, stdout, &st);
        if (!rc) {
            fprintf(stderr, "rlhi: exported %llu labelled turns\n",
                    (unsigned long long)st.turns);
            if (st.turns)
                feedback_print_stats(&st);
        }
    } else {
        uint64_t n = 0;

        rc = rlhi_persona_export(s, backend, stdout, &n);
        if (!rc)
            fprintf(stderr, "rlhi: exported %llu personas\n",
                    (unsigned long long)n);
    }
    rlhi_store_close(s);
    if (!rc && fflush(stdout)) {
        perror("rlhi: error: cannot write to stdout");
        return EXIT_RUNTIME;
    }
    return rc ? cli_fail(rc, "export") : EXIT_OK;
}
