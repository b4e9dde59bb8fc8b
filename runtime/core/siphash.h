/* SipHash-1-3 (Aumasson, Bernstein): a keyed hash, so keys chosen from
 * outside (cache keys, error messages) cannot be made to collide and turn a
 * hash table into one long chain. Byte order does not matter here: the
 * values never leave the process. */
#ifndef MNEMO_SIPHASH_H
#define MNEMO_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t mnemo_siphash13(const void *data, size_t len, const uint64_t k[2]);

#endif
