/* A retry budget (as in Envoy and Finagle): retries may add at most `ratio`
 * extra load over first attempts (0.2: one retry per five requests) within
 * a sliding time window, with a floor of `min_retries` per window so that a
 * caller with little traffic can still retry. It stops retry storms: when a
 * dependency fails for everyone, retries stop multiplying its load.
 *
 * The window is kept in MNEMO_RETRY_BUDGET_BUCKETS buckets of
 * window_ns / MNEMO_RETRY_BUDGET_BUCKETS each (at least 1 ns), in the
 * struct (no allocation), cleared lazily as `now_ns` moves on: a count is
 * forgotten between 0.9 and 1 window after it was made. Time is passed in; the
 * budget never reads a clock. A `now_ns` earlier than the latest one seen
 * counts in the current bucket. */
#ifndef MNEMO_RETRY_BUDGET_H
#define MNEMO_RETRY_BUDGET_H

#include <stdint.h>

#define MNEMO_RETRY_BUDGET_BUCKETS 10

typedef struct mnemo_retry_budget {
  double ratio;         /* in [0, 10] */
  uint32_t min_retries; /* allowed per window whatever the traffic */
  uint64_t window_ns;   /* > 0 */
  /* private */
  uint64_t bucket_ns;
  uint64_t head; /* now_ns / bucket_ns of the newest bucket */
  int anchored;  /* 0 until head is set from a now_ns */
  uint64_t requests[MNEMO_RETRY_BUDGET_BUCKETS];
  uint64_t retries[MNEMO_RETRY_BUDGET_BUCKETS];
  /* read only: sums over the window as of the last call */
  uint64_t window_requests;
  uint64_t window_retries;
  /* read only: since init */
  uint64_t total_requests;
  uint64_t total_retries;
  uint64_t total_denied;
} mnemo_retry_budget_t;

/* 0, or MNEMO_EINVAL unless ratio is in [0, 10] and window_ns > 0. */
int mnemo_retry_budget_init(mnemo_retry_budget_t *b, double ratio,
                            uint32_t min_retries, uint64_t window_ns);
/* New limits, keeping the counts in the window and the totals. A new
 * window length re-buckets approximately: each old bucket becomes one of
 * the new length. MNEMO_EINVAL (and no change) on bad arguments. */
int mnemo_retry_budget_reconfigure(mnemo_retry_budget_t *b, double ratio,
                                   uint32_t min_retries, uint64_t window_ns);
/* Counts a first attempt. */
void mnemo_retry_budget_on_request(mnemo_retry_budget_t *b, uint64_t now_ns);
/* 1 if a retry is allowed now, and counts it; 0 if denied (counted in
 * total_denied). Allowed while the retries in the window are fewer than
 * max(min_retries, floor(ratio * requests in the window)). */
int mnemo_retry_budget_try_retry(mnemo_retry_budget_t *b, uint64_t now_ns);

#endif
