/* Allocation wrappers with failure injection for tests. */
#include "rlhi/base.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long count;
static atomic_long fail_at;

long rlhi__alloc_fail_at(long n)
{
    long c = atomic_exchange(&count, 0);

    atomic_store(&fail_at, n);
    return c;
}

/* True when this allocation is the one a test asked to fail. */
static bool should_fail(void)
{
    long c = atomic_fetch_add(&count, 1) + 1;
    long f = atomic_load(&fail_at);

    if (f > 0 && c == f) {
        atomic_store(&fail_at, 0);
        return true;
    }
    return false;
}

void *rlhi_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *rlhi_calloc(size_t count_, size_t size)
{
    if (should_fail())
        return NULL;
    if (!count_ || !size)
        return calloc(1, 1);
    return calloc(count_, size);
}

void *rlhi_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void rlhi_free(void *p)
{
    free(p);
}

char *rlhi_strndup(const char *s, size_t n)
{
    char *d = rlhi_malloc(n + 1);

    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *rlhi_strdup(const char *s)
{
    return rlhi_strndup(s, strlen(s));
}

void *rlhi_malloc_aligned(size_t align, size_t n)
{
    void *p = NULL;

    if (should_fail())
        return NULL;
    if (posix_memalign(&p, align, n ? n : align))
        return NULL;
    return p;
}
