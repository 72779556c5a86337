/* rlhi bench ingest: runs bench/bench_ingest.py, which times `rlhi ingest`
 * on a generated WildChat-shaped file against the obvious Python script
 * (json + sqlite3 executemany) and prints both and their ratio. The lead's
 * cmd_bench dispatches "ingest" here. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int bench_ingest(int argc, char **argv);

int bench_ingest(int argc, char **argv)
{
    static const char script[] = "bench/bench_ingest.py";
    char self[PATH_MAX];
    char *args[64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    int k = 0;

    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: rlhi bench ingest [--mb N] [--dir DIR] [--keep]\n\n"
               "Generates an N MB (default 200) WildChat-shaped JSONL file\n"
               "and times 'rlhi ingest' against json + sqlite3 in Python.\n"
               "Run from the repository root (it runs %s).\n", script);
        return EXIT_OK;
    }
    if (n <= 0) {
        fprintf(stderr, "rlhi: error: cannot find this program's path\n");
        return EXIT_RUNTIME;
    }
    self[n] = 0;
    if (access(script, R_OK)) {
        fprintf(stderr, "rlhi: error: cannot find '%s'\nhint: run 'rlhi "
                        "bench ingest' from the repository root\n", script);
        return EXIT_RUNTIME;
    }
    args[k++] = "python3";
    args[k++] = (char *)script;
    args[k++] = "--rlhi";
    args[k++] = self;
    for (int i = 1; i < argc && k < 62; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    execvp("python3", args);
    perror("rlhi: error: cannot run python3");
    return EXIT_RUNTIME;
}
