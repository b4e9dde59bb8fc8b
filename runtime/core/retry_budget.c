#include "retry_budget.h"

#include <string.h>

#include "status.h"

#define NBUCKETS MNEMO_RETRY_BUDGET_BUCKETS

static int valid(double ratio, uint64_t window_ns) {
  /* Written so that NaN fails. */
  return ratio >= 0.0 && ratio <= 10.0 && window_ns > 0;
}

static uint64_t bucket_length(uint64_t window_ns) {
  uint64_t len = window_ns / NBUCKETS;
  return len > 0 ? len : 1;
}

int mnemo_retry_budget_init(mnemo_retry_budget_t *b, double ratio,
                            uint32_t min_retries, uint64_t window_ns) {
  if (!valid(ratio, window_ns))
    return MNEMO_EINVAL;
  memset(b, 0, sizeof(*b));
  b->ratio = ratio;
  b->min_retries = min_retries;
  b->window_ns = window_ns;
  b->bucket_ns = bucket_length(window_ns);
  return 0;
}

int mnemo_retry_budget_reconfigure(mnemo_retry_budget_t *b, double ratio,
                                   uint32_t min_retries, uint64_t window_ns) {
  if (!valid(ratio, window_ns))
    return MNEMO_EINVAL;
  b->ratio = ratio;
  b->min_retries = min_retries;
  if (window_ns != b->window_ns) {
    b->window_ns = window_ns;
    b->bucket_ns = bucket_length(window_ns);
    /* head is in units of the old bucket length: re-anchored at the next
     * call, each old bucket then standing for one of the new length. */
    b->anchored = 0;
  }
  return 0;
}

static void clear_bucket(mnemo_retry_budget_t *b, uint64_t slot) {
  unsigned i = (unsigned)(slot % NBUCKETS);

  b->window_requests -= b->requests[i];
  b->window_retries -= b->retries[i];
  b->requests[i] = 0;
  b->retries[i] = 0;
}

/* Sets head to `slot` keeping the buckets' order: the newest bucket moves
 * to the index of the new head (after a change of window length). */
static void anchor(mnemo_retry_budget_t *b, uint64_t slot) {
  unsigned from = (unsigned)(b->head % NBUCKETS);
  unsigned to = (unsigned)(slot % NBUCKETS);
  uint64_t req[NBUCKETS], ret[NBUCKETS];
  unsigned i;

  memcpy(req, b->requests, sizeof(req));
  memcpy(ret, b->retries, sizeof(ret));
  for (i = 0; i < NBUCKETS; i++) {
    b->requests[(i + to) % NBUCKETS] = req[(i + from) % NBUCKETS];
    b->retries[(i + to) % NBUCKETS] = ret[(i + from) % NBUCKETS];
  }
  b->head = slot;
  b->anchored = 1;
}

/* Moves the window to now_ns and returns the current bucket's index. */
static unsigned advance(mnemo_retry_budget_t *b, uint64_t now_ns) {
  uint64_t slot = now_ns / b->bucket_ns;

  if (!b->anchored) {
    anchor(b, slot);
  } else if (slot > b->head) {
    /* Clear at most one window's worth of buckets, however far time
     * jumped. */
    uint64_t n = slot - b->head < NBUCKETS ? slot - b->head : NBUCKETS;
    uint64_t k;
    for (k = 1; k <= n; k++)
      clear_bucket(b, slot - n + k);
    b->head = slot;
  }
  return (unsigned)(b->head % NBUCKETS);
}

void mnemo_retry_budget_on_request(mnemo_retry_budget_t *b, uint64_t now_ns) {
  unsigned i = advance(b, now_ns);

  b->requests[i]++;
  b->window_requests++;
  b->total_requests++;
}

/* floor(ratio * requests), saturating. */
static uint64_t ratio_limit(double ratio, uint64_t requests) {
  double x = ratio * (double)requests;

  if (!(x < 18446744073709551616.0)) /* 2^64 */
    return UINT64_MAX;
  /* Nudged up by a relative 1e-12 so that 0.29 * 100 is 29, not 28. */
  x += x * 1e-12;
  return x < 18446744073709551616.0 ? (uint64_t)x : UINT64_MAX;
}

int mnemo_retry_budget_try_retry(mnemo_retry_budget_t *b, uint64_t now_ns) {
  unsigned i = advance(b, now_ns);
  uint64_t limit = ratio_limit(b->ratio, b->window_requests);

  if (limit < b->min_retries)
    limit = b->min_retries;
  if (b->window_retries >= limit) {
    b->total_denied++;
    return 0;
  }
  b->retries[i]++;
  b->window_retries++;
  b->total_retries++;
  return 1;
}
