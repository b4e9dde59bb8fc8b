/* Monotonic clock, real or virtual.
 *
 * Real mode reads libuv's monotonic clock. Virtual mode holds time still
 * until a test advances it by hand (see timer.h: mnemo_timers_advance), so
 * time-dependent behaviour is tested deterministically, without sleeping.
 * All times are nanoseconds on one monotonic axis. */
#ifndef MNEMO_CLOCK_H
#define MNEMO_CLOCK_H

#include <stdint.h>
#include <uv.h>

#define MNEMO_NS_PER_MS 1000000ull
#define MNEMO_NS_PER_SEC 1000000000ull

typedef struct mnemo_clock {
  uv_loop_t *loop; /* may be NULL: then the cached time is read fresh */
  int is_virtual;
  uint64_t virtual_ns;
} mnemo_clock_t;

void mnemo_clock_init(mnemo_clock_t *clock, uv_loop_t *loop);

/* Precise current time (one clock read in real mode). For measuring. */
uint64_t mnemo_clock_now(const mnemo_clock_t *clock);

/* The loop's cached time (millisecond resolution, no system call), the
 * base every timer is scheduled on. For the hot path. */
uint64_t mnemo_clock_cached(const mnemo_clock_t *clock);

/* Refreshes the loop's cached time (real mode; a no-op when virtual). */
void mnemo_clock_update(mnemo_clock_t *clock);

/* Switch to virtual time, starting from the current real time so that
 * deadlines computed before the switch stay meaningful. */
void mnemo_clock_set_virtual(mnemo_clock_t *clock, int on);

/* Converts seconds to nanoseconds, saturating; negative and NaN give 0. */
uint64_t mnemo_seconds_to_ns(double seconds);

#endif
