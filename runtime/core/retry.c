#include "retry.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "status.h"

static const char *const jitter_names[MNEMO_JITTER_COUNT] = {
    [MNEMO_JITTER_NONE] = "none",
    [MNEMO_JITTER_FULL] = "full",
    [MNEMO_JITTER_EQUAL] = "equal",
    [MNEMO_JITTER_DECORRELATED] = "decorrelated",
    [MNEMO_JITTER_PROPORTIONAL] = "proportional",
};

int mnemo_jitter_parse(const char *name, mnemo_jitter_t *out) {
  int i;

  if (name == NULL)
    return MNEMO_EINVAL;
  for (i = 0; i < MNEMO_JITTER_COUNT; i++) {
    if (strcmp(name, jitter_names[i]) == 0) {
      *out = (mnemo_jitter_t)i;
      return 0;
    }
  }
  return MNEMO_EINVAL;
}

const char *mnemo_jitter_name(mnemo_jitter_t j) {
  if ((unsigned)j >= MNEMO_JITTER_COUNT)
    return "unknown";
  return jitter_names[j];
}

void mnemo_retry_policy_default(mnemo_retry_policy_t *p) {
  p->max_attempts = 3;
  p->base_ns = 500000000u;
  p->max_ns = 5000000000u;
  p->multiplier = 2.0;
  p->jitter = MNEMO_JITTER_FULL;
  p->retry_on =
      MNEMO_EC_BIT(MNEMO_EC_CONNECTION) | MNEMO_EC_BIT(MNEMO_EC_TIMEOUT);
  p->never_retry = MNEMO_RETRY_NEVER_DEFAULT;
}

/* Accumulates "\n"-separated problem lines in a caller's buffer, cutting
 * short (still NUL-terminated) when it is full. */
typedef struct problems {
  char *buf;
  size_t size;
  size_t len;
  int count;
} problems_t;

__attribute__((format(printf, 2, 3))) static void
problem(problems_t *pr, const char *fmt, ...) {
  va_list ap;
  int n;

  if (pr->buf != NULL && pr->len + 1 < pr->size) {
    if (pr->count > 0)
      pr->buf[pr->len++] = '\n';
    pr->buf[pr->len] = '\0';
    va_start(ap, fmt);
    n = vsnprintf(pr->buf + pr->len, pr->size - pr->len, fmt, ap);
    va_end(ap);
    if (n > 0)
      pr->len += (size_t)n;
    if (pr->len >= pr->size)
      pr->len = pr->size - 1;
  }
  pr->count++;
}

static double seconds(uint64_t ns) {
  return (double)ns / 1e9;
}

static void check_classes(problems_t *pr, const char *field, uint32_t set) {
  if ((set & ~MNEMO_EC_ALL) != 0)
    problem(pr, "%s: expected known error classes, got unknown bits 0x%x",
            field, (unsigned)(set & ~MNEMO_EC_ALL));
}

int mnemo_retry_policy_validate(const mnemo_retry_policy_t *p, char *err,
                                size_t errlen) {
  problems_t pr = {err, errlen, 0, 0};
  uint32_t both;
  int c;

  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (p->max_attempts < 1)
    problem(&pr, "attempts: expected integer >= 1, got %u",
            (unsigned)p->max_attempts);
  if (p->base_ns == 0)
    problem(&pr, "base: expected a duration > 0, got %g", seconds(p->base_ns));
  if (p->max_ns < p->base_ns)
    problem(&pr, "max: expected a duration >= base (%g), got %g",
            seconds(p->base_ns), seconds(p->max_ns));
  if (!(p->multiplier >= 1.0) || isinf(p->multiplier))
    problem(&pr, "multiplier: expected a finite number >= 1, got %g",
            p->multiplier);
  if ((unsigned)p->jitter >= MNEMO_JITTER_COUNT)
    problem(&pr,
            "jitter: expected none, full, equal, decorrelated or "
            "proportional, got %d",
            (int)p->jitter);
  check_classes(&pr, "on", p->retry_on);
  check_classes(&pr, "never", p->never_retry);
  both = p->retry_on & p->never_retry;
  for (c = 0; c < MNEMO_EC_COUNT; c++) {
    if (both & MNEMO_EC_BIT(c))
      problem(&pr, "on: class %s is also in never",
              mnemo_error_class_name((mnemo_error_class_t)c));
  }
  return pr.count == 0 ? 0 : MNEMO_EINVAL;
}

int mnemo_retry_should(const mnemo_retry_policy_t *p, mnemo_error_class_t c,
                       uint32_t attempt) {
  if (attempt >= p->max_attempts)
    return 0;
  if ((unsigned)c >= MNEMO_EC_COUNT)
    c = MNEMO_EC_UNKNOWN;
  if (p->never_retry & MNEMO_EC_BIT(c))
    return 0;
  return (p->retry_on & MNEMO_EC_BIT(c)) != 0;
}

/* min(max, base * multiplier^(attempt - 1)). In double: pow() saturates to
 * inf instead of overflowing, and the comparison below also catches NaN
 * from a policy that was never validated. */
static uint64_t exponential(const mnemo_retry_policy_t *p, uint32_t attempt) {
  double d;

  if (attempt <= 1 || p->multiplier == 1.0)
    return p->base_ns < p->max_ns ? p->base_ns : p->max_ns;
  d = (double)p->base_ns * pow(p->multiplier, (double)(attempt - 1));
  if (!(d < (double)p->max_ns))
    return p->max_ns;
  if (!(d >= 0.0))
    return 0;
  return (uint64_t)d;
}

uint64_t mnemo_retry_delay(const mnemo_retry_policy_t *p, uint32_t attempt,
                           uint64_t prev_delay_ns, mnemo_rng_t *rng) {
  uint64_t d, hi;

  if (rng == NULL)
    return exponential(p, attempt);
  switch (p->jitter) {
  case MNEMO_JITTER_FULL:
    return mnemo_rng_range(rng, 0, exponential(p, attempt));
  case MNEMO_JITTER_EQUAL:
    d = exponential(p, attempt);
    /* d - d/2, not d/2, so that an odd d can still be reached. */
    return d / 2 + mnemo_rng_range(rng, 0, d - d / 2);
  case MNEMO_JITTER_DECORRELATED:
    if (prev_delay_ns == 0) /* first retry: as if the last delay was base */
      prev_delay_ns = p->base_ns;
    hi = prev_delay_ns > UINT64_MAX / 3 ? UINT64_MAX : prev_delay_ns * 3;
    if (hi < p->base_ns)
      hi = p->base_ns;
    d = mnemo_rng_range(rng, p->base_ns, hi);
    return d < p->max_ns ? d : p->max_ns;
  case MNEMO_JITTER_PROPORTIONAL:
    /* d <= max already; the top of d * 1.25 is cut to max, so the draw is
     * uniform over what is left (no pile of draws on max itself). */
    d = exponential(p, attempt);
    hi = d > UINT64_MAX - d / 4 ? UINT64_MAX : d + d / 4;
    if (hi > p->max_ns)
      hi = p->max_ns;
    return mnemo_rng_range(rng, d - d / 4, hi);
  case MNEMO_JITTER_NONE:
  default:
    return exponential(p, attempt);
  }
}
