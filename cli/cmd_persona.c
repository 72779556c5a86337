/* rlhi persona: derive each user's persona (expertise, informativeness,
 * tone, structure, with evidence) from their whole history. */
#include <stdio.h>

#include "cli.h"
#include "rlhi/pipeline.h"

static const char usage[] =
    "usage: rlhi persona --db DB [--backend builtin] [--redact] [--force]\n"
    "\n"
    "Makes or refreshes the persona of every user in the store whose\n"
    "history changed since their persona was made (run 'rlhi feedback'\n"
    "first: feedback turns are the strongest evidence). --redact replaces\n"
    "e-mail addresses, phone numbers, secrets and URLs in the evidence.\n"
    "Export with 'rlhi export personas'.";

/* Parses, checks --db and opens the store: cmd_feedback.c. */
int cli_stage_open(int argc, char **argv, const struct cli_opt *opts,
                   const char *help, const char *name,
                   const char *const *db, struct rlhi_store **s);

int cmd_persona(int argc, char **argv)
{
    struct rlhi_persona_opts o = {0};
    struct rlhi_persona_stats st;
    struct rlhi_store *s = NULL;
    const char *db = NULL;
    int rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store"},
        {"backend", CLI_STR, &o.backend, "builtin (default)"},
        {"redact", CLI_BOOL, &o.redact,
         "redact e-mails, phones, secrets and URLs in evidence"},
        {"force", CLI_BOOL, &o.force,
         "recompute every persona, even with an unchanged history"},
        {NULL, 0, NULL, NULL},
    };

    rc = cli_stage_open(argc, argv, opts, usage, "persona", &db, &s);
    if (!s)
        return rc;
    o.args = o.redact ? "persona --redact" : "persona";
    rc = rlhi_persona_run(s, &o, &st);
    rlhi_store_close(s);
    if (rc)
        return cli_fail(rc, "persona");
    fprintf(stderr, "rlhi: personas for %llu users: %llu made, %llu "
            "unchanged, in %.2f s\n", (unsigned long long)st.users,
            (unsigned long long)st.made, (unsigned long long)st.unchanged,
            st.seconds);
    return EXIT_OK;
}
