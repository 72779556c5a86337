/* rlhi score: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int cmd_score(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rlhi: error: not implemented: score\n");
    return EXIT_RUNTIME;
}
