#include "rng.h"

/* splitmix64: spreads any seed, 0 included, over the xoshiro state. Its
 * outputs for consecutive counters are distinct, so the state is never all
 * zero (the one state xoshiro cannot leave). */
static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

void mnemo_rng_seed(mnemo_rng_t *rng, uint64_t seed) {
  int i;

  for (i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&seed);
}

/* xoshiro256** 1.0 (Blackman and Vigna, public domain). */
uint64_t mnemo_rng_next(mnemo_rng_t *rng) {
  uint64_t *s = rng->s;
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

double mnemo_rng_uniform(mnemo_rng_t *rng) {
  return (double)(mnemo_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t mnemo_rng_range(mnemo_rng_t *rng, uint64_t lo, uint64_t hi) {
  uint64_t n, threshold, x;

  if (hi <= lo)
    return lo;
  if (hi - lo == UINT64_MAX)
    return mnemo_rng_next(rng);
  n = hi - lo + 1;
  /* Reject the 2^64 mod n lowest values, so that x % n is exactly uniform;
   * fewer than half of all draws are rejected, whatever n. */
  threshold = (0 - n) % n;
  do {
    x = mnemo_rng_next(rng);
  } while (x < threshold);
  return lo + x % n;
}
