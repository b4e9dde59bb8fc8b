#include "hash.h"

static uint64_t mix(uint64_t h, unsigned char byte) {
  h ^= byte;
  return h * 1099511628211ull;
}

uint64_t fnv1a(const char *data, size_t len) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++)
    h = mix(h, (unsigned char)data[i]);
  return h;
}
