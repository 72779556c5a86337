/* Assertions for rlhi's test programs.
 *
 * Each test program is one file tests/test_<name>.c with a main() made of
 * TEST(...) blocks. Every CHECK prints both values on failure and counts;
 * the program's last line is "N passed, N failed[, N skipped]" and its
 * exit status is 1 when anything failed. tests/run.sh runs each program in
 * its own process with a timeout and adds the counts up.
 */
#ifndef RLHI_TEST_CHECK_H
#define RLHI_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/base.h"

static int check__passed, check__failed, check__skipped;
static const char *check__test = "";

#define CHECK__FAIL(...)                                                    \
    do {                                                                    \
        check__failed++;                                                    \
        fprintf(stderr, "FAIL %s (%s:%d): ", check__test, __FILE__,         \
                __LINE__);                                                  \
        fprintf(stderr, __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                \
    } while (0)

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond)                                                           \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL("%s", #cond);                                       \
    } while (0)

#define CHECK_MSG(cond, ...)                                                \
    do {                                                                    \
        if (cond)                                                           \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL(__VA_ARGS__);                                       \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                  \
    do {                                                                    \
        long long check__a = (long long)(a), check__b = (long long)(b);     \
        if (check__a == check__b)                                           \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL("%s == %s: %lld != %lld", #a, #b, check__a,         \
                        check__b);                                          \
    } while (0)

/* A library call that must succeed; prints the library's message if not. */
#define CHECK_OK(call)                                                      \
    do {                                                                    \
        int check__r = (call);                                              \
        if (check__r >= 0)                                                  \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL("%s returned %d (%s): %s", #call, check__r,         \
                        rlhi_strerror(check__r), rlhi_errmsg());            \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                  \
    do {                                                                    \
        const char *check__a = (a), *check__b = (b);                        \
        if (check__a && check__b && strcmp(check__a, check__b) == 0)        \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL("%s == %s:\n  got:      \"%s\"\n  expected: \"%s\"", \
                        #a, #b, check__a ? check__a : "(null)",             \
                        check__b ? check__b : "(null)");                    \
    } while (0)

/* |a - b| <= atol + rtol * |b|, and both finite. */
#define CHECK_NEAR(a, b, atol, rtol)                                        \
    do {                                                                    \
        double check__a = (a), check__b = (b);                              \
        if (isfinite(check__a) && isfinite(check__b) &&                     \
            fabs(check__a - check__b) <=                                    \
                (atol) + (rtol) * fabs(check__b))                           \
            check__passed++;                                                \
        else                                                                \
            CHECK__FAIL("%s ~ %s: %.9g vs %.9g (diff %.3g)", #a, #b,        \
                        check__a, check__b, check__a - check__b);           \
    } while (0)

/* Returns a path under the shared data folder (RLHI_DATA, by default
 * ../shared/data beside the repository) in a static buffer, or NULL when
 * the folder is absent, so tests can skip with a message. */
static inline const char *check_data(const char *rel)
{
    static char path[4096];
    const char *dir = getenv("RLHI_DATA");

    if (!dir)
        dir = "../shared/data";
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (!rlhi_path_exists(path))
        return NULL;
    return path;
}

#define SKIP(why)                                                           \
    do {                                                                    \
        check__skipped++;                                                   \
        fprintf(stderr, "skip %s: %s\n", check__test, why);                 \
    } while (0)

/* Opens a named group of checks; prints its name when RLHI_TEST_VERBOSE. */
#define TEST(name)                                                          \
    for (int check__once = (check__test = (name),                           \
                            getenv("RLHI_TEST_VERBOSE")                     \
                                ? fprintf(stderr, "test %s\n", name)        \
                                : 0,                                        \
                            1);                                             \
         check__once; check__once = 0)

static inline int check_summary(void)
{
    if (check__skipped)
        printf("%d passed, %d failed, %d skipped\n", check__passed,
               check__failed, check__skipped);
    else
        printf("%d passed, %d failed\n", check__passed, check__failed);
    return check__failed ? 1 : 0;
}

#endif
