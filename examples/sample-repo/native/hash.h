#ifndef SAMPLE_HASH_H
#define SAMPLE_HASH_H
#include <stddef.h>
#include <stdint.h>

struct hash_state {
  uint64_t value;
  size_t length;
};

uint64_t fnv1a(const char *data, size_t len);
#endif
