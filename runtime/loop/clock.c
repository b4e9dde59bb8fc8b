#include "clock.h"

void mnemo_clock_init(mnemo_clock_t *clock, uv_loop_t *loop) {
  clock->loop = loop;
  clock->is_virtual = 0;
  clock->virtual_ns = 0;
}

uint64_t mnemo_clock_now(const mnemo_clock_t *clock) {
  if (clock->is_virtual)
    return clock->virtual_ns;
  return uv_hrtime();
}

uint64_t mnemo_clock_cached(const mnemo_clock_t *clock) {
  if (clock->is_virtual)
    return clock->virtual_ns;
  if (clock->loop == NULL)
    return uv_hrtime();
  return uv_now(clock->loop) * MNEMO_NS_PER_MS;
}

void mnemo_clock_update(mnemo_clock_t *clock) {
  if (!clock->is_virtual && clock->loop != NULL)
    uv_update_time(clock->loop);
}

void mnemo_clock_set_virtual(mnemo_clock_t *clock, int on) {
  if (on && !clock->is_virtual) {
    mnemo_clock_update(clock);
    clock->virtual_ns = mnemo_clock_cached(clock);
  }
  clock->is_virtual = on ? 1 : 0;
}

uint64_t mnemo_seconds_to_ns(double seconds) {
  if (!(seconds > 0))
    return 0;
  if (seconds >= 18446744073.0) /* about 584 years */
    return UINT64_MAX;
  return (uint64_t)(seconds * 1e9 + 0.5);
}
