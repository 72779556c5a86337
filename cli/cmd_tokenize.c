/* rlhi tokenize: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "rlhi: error: not implemented: tokenize\n");
    return EXIT_RUNTIME;
}
