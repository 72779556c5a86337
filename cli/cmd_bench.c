/* rlhi bench: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rlhi: error: not implemented: bench\n");
    return EXIT_RUNTIME;
}
