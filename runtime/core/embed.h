/* The built-in embedder: deterministic feature hashing, no model files.
 *
 * A text becomes a bag of features: identifier sub-tokens (fooBar_baz ->
 * foo, bar, baz, lower-cased) and character trigrams of each token. Each
 * feature is hashed to a dimension and a sign (the "hashing trick"), token
 * features weigh more than trigrams, and the vector is L2-normalised, so
 * the cosine of two vectors measures shared vocabulary. Same text, same
 * vector, on every machine. */
#ifndef MNEMO_EMBED_H
#define MNEMO_EMBED_H

#include <stddef.h>

#define MNEMO_EMBED_MIN_DIMS 16
#define MNEMO_EMBED_MAX_DIMS 4096
#define MNEMO_EMBED_DEFAULT_DIMS 384

/* Writes dims floats into out. Returns 0, or MNEMO_EINVAL for dims out of
 * range. An empty text gives the zero vector. */
int mnemo_embed_hashing(const char *text, size_t len, float *out, int dims);

/* Room a literal of dims components needs, with its NUL:
 * "{" + dims components of at most MNEMO_EMBED_COMPONENT_MAX characters
 * and dims - 1 commas + "}". */
#define MNEMO_EMBED_COMPONENT_MAX 16
#define MNEMO_EMBED_LITERAL_MAX(dims)                                          \
  ((size_t)(dims) * (MNEMO_EMBED_COMPONENT_MAX + 1) + 2)

/* Writes v as a PostgreSQL array literal ("{0,-0.0421337,...}": 7
 * decimals, trailing zeros trimmed) into out, NUL-terminated, and returns
 * its length. cap must be at least MNEMO_EMBED_LITERAL_MAX(dims); with
 * less, returns 0 and writes nothing. The form real[] columns take, made
 * once here for the Lua binding and the thread-pool job alike. */
size_t mnemo_embed_literal(const float *v, int dims, char *out, size_t cap);

/* Cosine similarity of two vectors of n floats (0 if either is zero). */
double mnemo_embed_cosine(const float *a, const float *b, int n);

#endif
