/* rlhi demo: the whole RLHI method end to end in the simulated world;
 * prints a table shaped like the paper's. Every number is simulated. */
#include <stdio.h>

#include "cli.h"
#include "rlhi/demo.h"

int cmd_demo(int argc, char **argv)
{
    struct rlhi_demo_opts o;
    struct rlhi_demo_result res;
    int64_t seed;
    int r;

    rlhi_demo_opts_default(&o);
    seed = (int64_t)o.seed;
    {
        const struct cli_opt opts[] = {
            {"work_dir", CLI_STR, &o.work_dir,
             "where models, logs, the store and report.html go (demo-out)"},
            {"seed", CLI_I64, &seed, "seed of the world and every stage (1)"},
            {"full", CLI_BOOL, &o.full,
             "the larger run (200 users, longer training)"},
            {"users", CLI_INT, &o.users, "simulated users (60; --full 200)"},
            {"heldout", CLI_INT, &o.heldout,
             "held-out requests per user for the evaluation (6)"},
            {"base_steps", CLI_I64, &o.base_steps,
             "SFT steps of the base model (240; --full 1200)"},
            {"epochs", CLI_INT, &o.train_epochs,
             "epochs of each SFT/DPO variant (2; --full 3)"},
            {"tiny", CLI_BOOL, &o.tiny,
             "a miniature run (tiny model and world), for tests"},
            {NULL, 0, NULL, NULL},
        };

        r = cli_parse(argc, argv, opts,
                      "usage: rlhi demo [--work_dir DIR] [--seed S] [--full]\n"
                      "Runs RLHI end to end in the simulated world: base "
                      "model (cached), on-policy\nlogs, feedback, personas, "
                      "preference pairs, SFT and DPO variants, and the\n"
                      "simulated judge's win rates. Writes DIR/report.html. "
                      "Results are simulated.",
                      NULL, NULL);
        if (r)
            return r < 0 ? EXIT_OK : r;
    }
    if (seed < 0 || o.users < 0 || o.heldout < 0) {
        fprintf(stderr, "rlhi: error: --seed, --users and --heldout must "
                        "be >= 0\n");
        return EXIT_USAGE;
    }
    o.seed = (uint64_t)seed;
    r = rlhi_demo_run(&o, &res);
    if (r)
        return cli_fail(r, "demo");
    r = rlhi_demo_table_write(&res, stdout);
    fflush(stdout);
    return r ? cli_fail(r, NULL) : EXIT_OK;
}
