/* rlhi status: what a store holds and which stages ran, for a person
 * deciding what to run next (the same numbers are in the tables, see
 * docs/STORE.md). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/store.h"

static const char usage[] =
    "usage: rlhi status --db DB [--runs N]\n"
    "\n"
    "What the store holds: users, conversations and messages; feedback\n"
    "labels and personas per backend; preference pairs per source (kept\n"
    "and dropped, by reason); and the last N runs of each stage (5).";

/* Prints the rows of `sql`, each as `fmt` applied to its columns as text
 * (at most 6); "(none)" when there are none. A missing table is no
 * error (an old store). 0 or the SQLite error's exit status. */
static int rows(struct rlhi_store *s, const char *title, const char *sql,
                int runs)
{
    sqlite3_stmt *st = NULL;
    int n = 0, rc = rlhi_store_prepare(s, &st, sql);

    printf("%s\n", title);
    if (rc) {
        printf("  (none)\n");
        return 0;
    }
    if (runs > 0)
        sqlite3_bind_int(st, 1, runs);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        printf(" ");
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);

            printf(" %s", t ? t : "-");
        }
        printf("\n");
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return cli_fail(rlhi_store_err(s, "cannot read the store"), NULL);
    if (!n)
        printf("  (none)\n");
    return 0;
}

int cmd_status(int argc, char **argv)
{
    struct rlhi_store *s = NULL;
    const char *db = NULL;
    int runs = 5, rc;
    const struct cli_opt opts[] = {
        {"db", CLI_STR, &db, "the store"},
        {"runs", CLI_INT, &runs, "runs shown per stage (5)"},
        {NULL, 0, NULL, NULL},
    };

    rc = cli_parse(argc, argv, opts, usage, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = cli_open_store(db, "status", &s)))
        return rc;
    printf("store %s\n", db);
    rc = rows(s, "contents",
              "SELECT printf('%-14s %d', 'users', (SELECT count(*) FROM "
              "users)) UNION ALL SELECT printf('%-14s %d (%d messages)', "
              "'conversations', (SELECT count(*) FROM conversations), "
              "(SELECT count(*) FROM messages))", 0);
    if (!rc)
        rc = rows(s, "feedback labels (backend: follow-up turns, "
                     "dissatisfied, actionable)",
                  "SELECT printf('%-10s %d turns, %.1f%% dissatisfied, "
                  "%.1f%% actionable', backend, count(*), 100.0 * "
                  "sum(dissatisfied) / count(*), 100.0 * sum(actionable) / "
                  "count(*)) FROM feedback GROUP BY backend ORDER BY "
                  "backend", 0);
    if (!rc)
        rc = rows(s, "personas (backend: users)",
                  "SELECT printf('%-10s %d users', backend, count(*)) FROM "
                  "personas GROUP BY backend ORDER BY backend", 0);
    if (!rc)
        rc = rows(s, "preference pairs (source: kept of all; drops by "
                     "reason)",
                  "SELECT printf('%-10s %d of %d kept', source, sum(kept), "
                  "count(*)) || coalesce('; ' || (SELECT group_concat("
                  "r || ' ' || n, ', ') FROM (SELECT drop_reason AS r, "
                  "count(*) AS n FROM pairs q WHERE q.source = p.source AND "
                  "q.drop_reason IS NOT NULL GROUP BY drop_reason)), '') "
                  "FROM pairs p GROUP BY source ORDER BY source", 0);
    if (!rc)
        rc = rows(s, "runs (the last of each stage; started, finished, "
                     "counts)",
                  "SELECT printf('%-8s %s  %s  %s', stage, started, "
                  "coalesce(finished, '(unfinished)'), coalesce(counts, "
                  "'')) FROM (SELECT *, row_number() OVER (PARTITION BY "
                  "stage ORDER BY id DESC) AS k FROM runs) WHERE k <= ?1 "
                  "ORDER BY id", runs > 0 ? runs : 5);
    rlhi_store_close(s);
    return rc;
}
