/* rlhi generate: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rlhi: error: not implemented: generate\n");
    return EXIT_RUNTIME;
}
