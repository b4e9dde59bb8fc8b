/* SipHash-1-3 (Aumasson, Bernstein); see siphash.h. */
#include "siphash.h"

#include <string.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

uint64_t mnemo_siphash13(const void *data, size_t len, const uint64_t k[2]) {
  const unsigned char *in = data;
  uint64_t v0 = 0x736f6d6570736575ull ^ k[0];
  uint64_t v1 = 0x646f72616e646f6dull ^ k[1];
  uint64_t v2 = 0x6c7967656e657261ull ^ k[0];
  uint64_t v3 = 0x7465646279746573ull ^ k[1];
  uint64_t b = (uint64_t)len << 56;
  uint64_t m;
  size_t i, full = len - (len & 7);

  for (i = 0; i < full; i += 8) {
    memcpy(&m, in + i, 8);
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  for (i = full; i < len; i++)
    b |= (uint64_t)in[i] << (8 * (i - full));
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}
