/* Checks the indexer makes on file contents before parsing them. */
#ifndef MNEMO_TEXT_H
#define MNEMO_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Non-zero if s is well-formed UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF). *bad_offset gets the first bad byte's offset. */
int mnemo_utf8_valid(const char *s, size_t len, size_t *bad_offset);

/* Non-zero if the first `probe` bytes hold a NUL: how git tells binary. */
int mnemo_looks_binary(const char *s, size_t len, size_t probe);

/* 64-bit FNV-1a, for content hashes (not for security). */
uint64_t mnemo_hash64(const char *s, size_t len);

#endif
