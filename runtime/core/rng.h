/* A small, fast, seedable PRNG (xoshiro256**, seeded through splitmix64)
 * for retry jitter. Not for anything secret. Caller-owned state; the same
 * seed gives the same sequence on every platform. */
#ifndef MNEMO_RNG_H
#define MNEMO_RNG_H

#include <stdint.h>

typedef struct mnemo_rng {
  uint64_t s[4];
} mnemo_rng_t;

void mnemo_rng_seed(mnemo_rng_t *rng, uint64_t seed);
uint64_t mnemo_rng_next(mnemo_rng_t *rng);
/* Uniform in [0, 1), on a grid of 2^-53. */
double mnemo_rng_uniform(mnemo_rng_t *rng);
/* Uniform in [lo, hi], both included, without bias. Requires lo <= hi
 * (returns lo otherwise). */
uint64_t mnemo_rng_range(mnemo_rng_t *rng, uint64_t lo, uint64_t hi);

#endif
