#include "embed.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "status.h"

#define TOKEN_WEIGHT 1.0f
#define TRIGRAM_WEIGHT 0.35f
#define MAX_TOKEN 64

/* FNV-1a with a seed, then a final mix so low bits are well spread. */
static uint64_t hash_bytes(const char *s, size_t n, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

static void add_feature(float *v, int dims, const char *s, size_t n,
                        uint64_t seed, float weight) {
  uint64_t h = hash_bytes(s, n, seed);
  int dim = (int)(h % (uint64_t)dims);
  v[dim] += (h >> 63) ? -weight : weight;
}

static int is_ident(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c >= 0x80;
}

static int is_upper(unsigned char c) {
  return c >= 'A' && c <= 'Z';
}

static int is_lower_or_digit(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One sub-token: the token itself, and its trigrams (with boundary marks,
 * so "get" and "together" share less than their letters suggest). */
static void add_token(float *v, int dims, const char *tok, size_t n) {
  char padded[MAX_TOKEN + 2];
  size_t i;
  if (n == 0)
    return;
  if (n > MAX_TOKEN)
    n = MAX_TOKEN;
  add_feature(v, dims, tok, n, 1, TOKEN_WEIGHT);
  padded[0] = '^';
  memcpy(padded + 1, tok, n);
  padded[n + 1] = '$';
  for (i = 0; i + 3 <= n + 2; i++)
    add_feature(v, dims, padded + i, 3, 2, TRIGRAM_WEIGHT);
}

/* Splits an identifier run on '_' is done by the caller (not an ident
 * char); here camelCase and digit boundaries: parseHTTPRequest2 ->
 * parse, http, request, 2. Tokens are lower-cased. */
static void add_identifier(float *v, int dims, const char *s, size_t n) {
  char tok[MAX_TOKEN];
  size_t i = 0, t = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    int boundary = 0;
    if (t > 0 && i > 0) {
      unsigned char p = (unsigned char)s[i - 1];
      unsigned char nx = i + 1 < n ? (unsigned char)s[i + 1] : 0;
      if (is_upper(c) && is_lower_or_digit(p))
        boundary = 1; /* fooBar */
      else if (is_upper(c) && is_upper(p) && nx >= 'a' && nx <= 'z')
        boundary = 1; /* HTTPRequest */
      else if ((c >= '0' && c <= '9') != (p >= '0' && p <= '9'))
        boundary = 1; /* request2 */
    }
    if (boundary || t == MAX_TOKEN) {
      add_token(v, dims, tok, t);
      t = 0;
    }
    tok[t++] = (char)(is_upper(c) ? c - 'A' + 'a' : c);
    i++;
  }
  add_token(v, dims, tok, t);
}

int mnemo_embed_hashing(const char *text, size_t len, float *out, int dims) {
  size_t i = 0, start;
  double norm = 0;
  int d;
  if (dims < MNEMO_EMBED_MIN_DIMS || dims > MNEMO_EMBED_MAX_DIMS)
    return MNEMO_EINVAL;
  memset(out, 0, sizeof(float) * (size_t)dims);
  while (i < len) {
    while (i < len && !is_ident((unsigned char)text[i]))
      i++;
    start = i;
    while (i < len && is_ident((unsigned char)text[i]))
      i++;
    if (i > start)
      add_identifier(out, dims, text + start, i - start);
  }
  for (d = 0; d < dims; d++)
    norm += (double)out[d] * out[d];
  if (norm > 0) {
    float inv = (float)(1.0 / sqrt(norm));
    for (d = 0; d < dims; d++)
      out[d] *= inv;
  }
  return 0;
}

/* Writes v with 7 decimals, trailing zeros trimmed ("0", "-0.0421337").
 * Components of a unit vector lie in [-1, 1]: fixed point by integer
 * arithmetic is exact enough (1e-7) and about ten times faster than
 * snprintf("%.6g"), which took a quarter of the indexer's loop thread.
 * Anything else goes through snprintf. Returns the length, at most
 * MNEMO_EMBED_COMPONENT_MAX ("%.6g" of a float is at most 12 characters:
 * "-1.17549e-38"; out has room for MNEMO_EMBED_COMPONENT_MAX + 1). */
static size_t format_component(char *out, float v) {
  long long scaled;
  size_t len = 0, digits;
  int i;
  char frac[7];
  if (!(v > -1.0f && v < 1.0f)) {
    int n = snprintf(out, MNEMO_EMBED_COMPONENT_MAX + 1, "%.6g", (double)v);
    if (n < 0)
      n = 0;
    return n > MNEMO_EMBED_COMPONENT_MAX ? MNEMO_EMBED_COMPONENT_MAX
                                         : (size_t)n;
  }
  scaled = llroundf(v * 1e7f);
  if (scaled == 0) {
    out[0] = '0';
    return 1;
  }
  if (scaled < 0) {
    out[len++] = '-';
    scaled = -scaled;
  }
  if (scaled >= 10000000) { /* rounded up to 1 */
    out[len++] = '1';
    return len;
  }
  for (i = 6; i >= 0; i--) {
    frac[i] = (char)('0' + scaled % 10);
    scaled /= 10;
  }
  for (digits = 7; frac[digits - 1] == '0'; digits--)
    ;
  out[len++] = '0';
  out[len++] = '.';
  memcpy(out + len, frac, digits);
  return len + digits;
}

size_t mnemo_embed_literal(const float *v, int dims, char *out, size_t cap) {
  size_t len = 0;
  int i;
  if (dims < 0 || out == NULL || cap < MNEMO_EMBED_LITERAL_MAX(dims))
    return 0;
  out[len++] = '{';
  for (i = 0; i < dims; i++) {
    if (i)
      out[len++] = ',';
    len += format_component(out + len, v[i]);
  }
  out[len++] = '}';
  out[len] = '\0';
  return len;
}

double mnemo_embed_cosine(const float *a, const float *b, int n) {
  double dot = 0, na = 0, nb = 0;
  int i;
  for (i = 0; i < n; i++) {
    dot += (double)a[i] * b[i];
    na += (double)a[i] * a[i];
    nb += (double)b[i] * b[i];
  }
  if (na == 0 || nb == 0)
    return 0;
  return dot / (sqrt(na) * sqrt(nb));
}
