/* rlhi feedback: label every user turn that follows an assistant answer
 * (reattempt_feedback, reattempt_no_guidance, clarification, positive,
 * continue, new_request, other) and store the labels. */
#include <stdio.h>

#include "cli.h"
#include "rlhi/pipeline.h"

static const char usage[] =
    "usage: rlhi feedback --db DB [--backend builtin] [--force]\n"
    "\n"
    "Labels the follow-up user turns of every conversation in the store\n"
    "not yet labelled by this backend, and prints the label counts.\n"
    "builtin needs no model (patterns and rules, see\n"
    "src/pipeline/feedback.c). Export with 'rlhi export feedback'.";

/* Prints the label distribution of `st` to stderr. */
void feedback_print_stats(const struct rlhi_feedback_stats *st);
void feedback_print_stats(const struct rlhi_feedback_stats *st)
{
    double t = st->turns ? (double)st->turns : 1;

    for (int l = 0; l < RLHI_FB_NLABELS; l++)
        fprintf(stderr, "  %-22s %8llu  %5.1f%%\n",
                rlhi_feedback_label_name(l),
                (unsigned long long)st->by_label[l],
                100.0 * (double)st->by_label[l] / t);
    fprintf(stderr, "rlhi: feedback turns (dissatisfied): %.1f%% of %llu "
            "follow-up turns; actionable: %.1f%%\n",
            100.0 * (double)st->dissatisfied / t,
            (unsigned long long)st->turns,
            100.0 * (double)st->actionable / t);
}

/* The start of a builtin stage command (feedback, persona): hands a model
 * backend over to the LLM stages (cmd_pairs.c), parses `opts` (one of
 * which fills *db), requires --db and opens the store in *s. Returns with
 * *s open to go on (the caller closes it), or with *s NULL and the exit
 * code for the command to return. */
int cli_stage_open(int argc, char **argv, const struct cli_opt *opts,
                   const char *help, const char *name,
                   const char *const *db, struct rlhi_store **s);
int cli_stage_open(int argc, char **argv, const struct cli_opt *opts,
                   const char *help, const char *name,
                   const char *const *db, struct rlhi_store **s)
{
    int rc;

    *s = NULL;
    if (cli_backend_is_model(argc, argv))
        return cmd_llm_stage(argc, argv);
    rc = cli_parse(argc, argv, opts, help, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    return cli_open_store(*db, name, s); /* leaves *s NULL on failure */
}

int cmd_feedback(int argc, char **argv)
{
    struct rlhi_feedback_opts o = {0};
    struct rlhi_feedback_stats st;
    struct rlhi_store *s = NULL;
    const char *db = NULL;
    int rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store"},
        {"backend", CLI_STR, &o.backend, "builtin (default)"},
        {"force", CLI_BOOL, &o.force, "relabel every conversation"},
        {"threads", CLI_INT, &o.threads,
         "classifying threads (default: the CPUs, at most 8)"},
        {NULL, 0, NULL, NULL},
    };

    rc = cli_stage_open(argc, argv, opts, usage, "feedback", &db, &s);
    if (!s)
        return rc;
    o.args = "feedback";
    rc = rlhi_feedback_run(s, &o, &st);
    rlhi_store_close(s);
    if (rc)
        return cli_fail(rc, "feedback");
    fprintf(stderr, "rlhi: labelled %llu turns in %llu conversations in "
            "%.2f s (%.2f million turns/minute)\n",
            (unsigned long long)st.turns,
            (unsigned long long)st.conversations, st.seconds,
            st.seconds > 0 ? (double)st.turns / st.seconds * 60 / 1e6 : 0);
    if (st.turns)
        feedback_print_stats(&st);
    return EXIT_OK;
}
