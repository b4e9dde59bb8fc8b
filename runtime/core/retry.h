/* Retry policies: which failures to retry, how many times, and how long to
 * wait between attempts (exponential backoff with jitter).
 *
 * Pure computation: the caller owns the policy and the rng, passes the
 * attempt number and sleeps itself. No allocation, no clock. */
#ifndef MNEMO_RETRY_H
#define MNEMO_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "error_class.h"
#include "rng.h"

typedef enum {
  MNEMO_JITTER_NONE = 0,
  MNEMO_JITTER_FULL,         /* uniform [0, d] */
  MNEMO_JITTER_EQUAL,        /* d/2 + uniform [0, d/2] */
  MNEMO_JITTER_DECORRELATED, /* uniform [base, 3 * previous delay] */
  MNEMO_JITTER_PROPORTIONAL, /* uniform [0.75 d, min(1.25 d, max)]: ±25% */
  MNEMO_JITTER_COUNT
} mnemo_jitter_t;

/* "none", "full", "equal", "decorrelated", "proportional". 0 or
 * MNEMO_EINVAL. */
int mnemo_jitter_parse(const char *name, mnemo_jitter_t *out);
/* "unknown" for a value out of range. */
const char *mnemo_jitter_name(mnemo_jitter_t j);

/* Classes never retried by default: retrying cannot change the answer. */
#define MNEMO_RETRY_NEVER_DEFAULT                                              \
  (MNEMO_EC_BIT(MNEMO_EC_INVALID_INPUT) | MNEMO_EC_BIT(MNEMO_EC_CONSTRAINT) |  \
   MNEMO_EC_BIT(MNEMO_EC_AUTH) | MNEMO_EC_BIT(MNEMO_EC_NOT_FOUND))

typedef struct mnemo_retry_policy {
  uint32_t max_attempts; /* >= 1, the first attempt included (1: no retry) */
  uint64_t base_ns;      /* > 0: the first delay before jitter */
  uint64_t max_ns;       /* >= base_ns: no delay is longer */
  double multiplier;     /* >= 1, finite */
  mnemo_jitter_t jitter;
  uint32_t retry_on;    /* MNEMO_EC_BIT()s of the classes to retry ("on") */
  uint32_t never_retry; /* classes never retried ("never"); wins over on */
} mnemo_retry_policy_t;

/* 3 attempts, base 0.5 s, max 5 s, multiplier 2, full jitter, retry on
 * connection and timeout, never retry MNEMO_RETRY_NEVER_DEFAULT. */
void mnemo_retry_policy_default(mnemo_retry_policy_t *p);

/* 0, or MNEMO_EINVAL with every problem in `err` as one line
 * "field: expected ..., got ..." (fields named as in policy files:
 * attempts, base, max, multiplier, jitter, on, never; durations in
 * seconds). err may be NULL; a message too long for it is cut short. */
int mnemo_retry_policy_validate(const mnemo_retry_policy_t *p, char *err,
                                size_t errlen);

/* 1 if attempt number `attempt` (1-based) just failed with class `c` and
 * another attempt may follow: attempt < max_attempts, c in retry_on and not
 * in never_retry. A class out of range is treated as unknown. */
int mnemo_retry_should(const mnemo_retry_policy_t *p, mnemo_error_class_t c,
                       uint32_t attempt);

/* The delay before attempt `attempt + 1`, after attempt `attempt` failed.
 * The exponential delay is d = min(max, base * multiplier^(attempt - 1))
 * (saturating; attempt 0 counts as 1), then jittered. Decorrelated jitter
 * ignores `attempt` and uses `prev_delay_ns`, the delay this function
 * returned last time (0 before the first retry, taken as base): min(max,
 * uniform [base, max(base, 3 * prev)]). Proportional jitter draws from
 * d * [0.75, 1.25] with the top cut to max: uniform [d - d/4, min(d + d/4,
 * max)] in integer ns (so d = max draws from [0.75 max, max], spread over
 * that range rather than clamped onto max). The result never exceeds
 * max_ns, for every jitter. `rng` may be NULL only with MNEMO_JITTER_NONE
 * (a NULL rng means no jitter). */
uint64_t mnemo_retry_delay(const mnemo_retry_policy_t *p, uint32_t attempt,
                           uint64_t prev_delay_ns, mnemo_rng_t *rng);

#endif
