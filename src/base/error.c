/* Error codes and the per-thread error message slot. */
#include "rlhi/base.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 KiB holds a path, a tensor name and a hint; longer messages are cut. */
#define MSG_MAX 1024

static _Thread_local char msg[MSG_MAX];

const char *rlhi_strerror(int code)
{
    switch (code) {
    case RLHI_OK: return "success";
    case RLHI_ENOMEM: return "out of memory";
    case RLHI_EIO: return "input/output error";
    case RLHI_EFORMAT: return "malformed input";
    case RLHI_EINVAL: return "invalid argument";
    case RLHI_ENOTIMPL: return "not implemented";
    case RLHI_ENOTFOUND: return "not found";
    case RLHI_ENUMERIC: return "non-finite number";
    case RLHI_EDB: return "database error";
    case RLHI_ENET: return "network error";
    case RLHI_ERANGE: return "value out of range";
    default: return "unknown error";
    }
}

const char *rlhi_errmsg(void)
{
    return msg;
}

void rlhi_err_clear(void)
{
    msg[0] = 0;
}

int rlhi_err(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return code;
}

int rlhi_err_errno(int code, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    n = strlen(msg);
    if (n < sizeof msg)
        snprintf(msg + n, sizeof msg - n, ": %s", strerror(saved));
    return code;
}

int rlhi_err_prefix(int code, const char *fmt, ...)
{
    char old[MSG_MAX];
    va_list ap;
    size_t n;

    memcpy(old, msg, sizeof old);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    n = strlen(msg);
    if (old[0] && n < sizeof msg)
        snprintf(msg + n, sizeof msg - n, ": %s", old);
    return code;
}

void rlhi__assert_fail(const char *file, int line, const char *e)
{
    rlhi_log(RLHI_LOG_ERROR, "assertion failed at %s:%d: %s", file, line, e);
    fprintf(stderr, "rlhi: assertion failed at %s:%d: %s\n", file, line, e);
    abort();
}
