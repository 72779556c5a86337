/* Seeded random numbers: xoshiro256** (Blackman and Vigna, 2018) seeded by
 * splitmix64, as the authors recommend. Chosen because it is small, fast,
 * passes BigCrush, and its state is four integers that a checkpoint can
 * store. */
#include "rlhi/base.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rlhi_rng_seed(struct rlhi_rng *r, uint64_t seed)
{
    int i;

    for (i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rlhi_rng_u64(struct rlhi_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rlhi_rng_float(struct rlhi_rng *r)
{
    return (float)(rlhi_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

double rlhi_rng_double(struct rlhi_rng *r)
{
    return (double)(rlhi_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t rlhi_rng_below(struct rlhi_rng *r, uint64_t n)
{
    /* Rejection from the top of the range keeps every value equally
     * likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;

    do
        x = rlhi_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double rlhi_rng_normal(struct rlhi_rng *r)
{
    double u1, u2;

    do
        u1 = rlhi_rng_double(r);
    while (u1 <= 0.0);
    u2 = rlhi_rng_double(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
