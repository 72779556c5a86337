/* The log hook: the library's only way to say something. */
#include "rlhi/base.h"

#include <stdio.h>

/* 4 KiB per line: longer lines are cut, never split. */
#define LINE_MAX_BYTES 4096

static rlhi_log_fn hook;
static void *hook_user;
static enum rlhi_log_level level = RLHI_LOG_INFO;

void rlhi_log_set_hook(rlhi_log_fn fn, void *user)
{
    hook = fn;
    hook_user = user;
}

void rlhi_log_set_level(enum rlhi_log_level l)
{
    level = l;
}

enum rlhi_log_level rlhi_log_get_level(void)
{
    return level;
}

void rlhi_log(enum rlhi_log_level l, const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;

    if (!hook || l > level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    hook(l, line, hook_user);
}
