/* rlhi ingest: chat logs (WildChat, plain chat or ShareGPT JSONL) into the
 * store.
 *
 * Malformed lines are reported as "rlhi: warning: FILE:LINE: what", counted
 * and skipped; the summary line says how many, and the exit status is then
 * 3. A killed run is resumed by running the same command again.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/pipeline.h"

static const char usage[] =
    "usage: rlhi ingest FILE... --db DB [--language L] [--drop_toxic]\n"
    "                   [--drop_redacted] [--min_conversations_per_user N]\n"
    "                   [--max_turns N] [--force]\n"
    "\n"
    "Loads WildChat JSONL (conversation_hash, hashed_ip, conversation[...]),\n"
    "plain chat JSONL ({\"messages\": [...], \"user\": ...}) or ShareGPT\n"
    "JSONL ({\"id\", \"conversations\": [{\"from\", \"value\"}...]}) into the\n"
    "SQLite store DB. FILE may be plain, gzip or zstd; \"-\" reads stdin.\n"
    "Conversations already stored are skipped; an interrupted run resumes\n"
    "where it stopped. Malformed lines are reported and counted (exit 3).";

/* Joins argv into one string for the runs table (static, truncated). */
static const char *join_args(int argc, char **argv)
{
    static char buf[1024];
    size_t k = 0;

    buf[0] = 0;
    for (int i = 0; i < argc && k + 2 < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", i ? " " : "",
                              argv[i]);
    return buf;
}

int cmd_ingest(int argc, char **argv)
{
    struct rlhi_ingest_opts o = {0};
    struct rlhi_ingest_stats st;
    struct rlhi_store *s = NULL;
    const char *db = NULL;
    char **files;
    int nfiles, rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store (created if absent)"},
        {"language", CLI_STR, &o.language,
         "keep only these languages, comma-separated (e.g. English); "
         "records without a language field pass as English when their "
         "text looks English"},
        {"drop_toxic", CLI_BOOL, &o.drop_toxic,
         "drop conversations flagged toxic"},
        {"drop_redacted", CLI_BOOL, &o.drop_redacted,
         "drop conversations marked redacted"},
        {"min_conversations_per_user", CLI_INT,
         &o.min_conversations_per_user,
         "then delete users with fewer conversations in the store"},
        {"max_turns", CLI_INT, &o.max_turns,
         "drop conversations with more user turns"},
        {"force", CLI_BOOL, &o.force,
         "re-read files already ingested (nothing is duplicated)"},
        {NULL, 0, NULL, NULL},
    };
    const char *args = join_args(argc, argv);

    rc = cli_parse(argc, argv, opts, usage, &nfiles, &files);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!db || !nfiles) {
        fprintf(stderr, "rlhi: error: %s\nhint: see 'rlhi ingest --help'\n",
                !db ? "--db is required" : "no input FILE given");
        return EXIT_USAGE;
    }
    if (o.min_conversations_per_user < 0 || o.max_turns < 0) {
        fprintf(stderr, "rlhi: error: --min_conversations_per_user and "
                        "--max_turns must not be negative\n");
        return EXIT_USAGE;
    }
    o.args = args;
    if ((rc = rlhi_store_open(&s, db)))
        return cli_fail(rc, NULL);
    rc = rlhi_ingest(s, (const char *const *)files, nfiles, &o, &st);
    rlhi_store_close(s);
    if (rc)
        return cli_fail(rc, "ingest");

    fprintf(stderr, "rlhi: ingested %llu conversations (%llu messages) from "
            "%llu lines in %llu file%s, %.1f MB in %.2f s (%.1f MB/s); "
            "%llu duplicates, %llu filtered, %llu malformed skipped",
            (unsigned long long)st.inserted,
            (unsigned long long)st.messages, (unsigned long long)st.lines,
            (unsigned long long)st.files, st.files == 1 ? "" : "s",
            (double)st.bytes / 1e6, st.seconds,
            st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0,
            (unsigned long long)st.duplicates,
            (unsigned long long)st.filtered,
            (unsigned long long)st.malformed);
    if (st.filtered)
        fprintf(stderr, " (language %llu, toxic %llu, redacted %llu, turns "
                "%llu)", (unsigned long long)st.filtered_language,
                (unsigned long long)st.filtered_toxic,
                (unsigned long long)st.filtered_redacted,
                (unsigned long long)st.filtered_turns);
    if (st.pruned_users)
        fprintf(stderr, "; pruned %llu users with %llu conversations",
                (unsigned long long)st.pruned_users,
                (unsigned long long)st.pruned_conversations);
    fputc('\n', stderr);
    return st.malformed ? EXIT_DATA : EXIT_OK;
}
