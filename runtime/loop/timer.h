/* Timers on a mnemo clock.
 *
 * A mnemo_timer_t is owned by the caller (embed it in your struct) and is
 * linked into an intrusive heap, so starting one costs no allocation. In
 * real mode one uv_timer_t, armed for the earliest due time, drives the
 * whole heap; in virtual mode nothing fires until mnemo_timers_advance(),
 * which fires every due timer in due-time order (FIFO among equal times). */
#ifndef MNEMO_TIMER_H
#define MNEMO_TIMER_H

#include <stdint.h>
#include <uv.h>

#include "clock.h"
#include "heap.h"

typedef struct mnemo_timer mnemo_timer_t;
typedef struct mnemo_timers mnemo_timers_t;
typedef void (*mnemo_timer_cb)(mnemo_timer_t *timer);

struct mnemo_timer {
  mnemo_heap_node_t node;
  uint64_t due_ns;
  uint64_t seq; /* start order, breaks ties between equal due times */
  mnemo_timer_cb cb;
  void *data;
  mnemo_timers_t *owner; /* non-NULL while pending */
  int weak;              /* does not keep the loop alive (background probes) */
};

struct mnemo_timers {
  mnemo_heap_t heap;
  mnemo_clock_t *clock;
  uint64_t next_seq;
  struct mnemo_timer_driver *driver; /* the uv timer; NULL without a loop */
  uint64_t armed_due_ns; /* due time the uv timer is armed for, or 0 */
  uint64_t weak_count;   /* pending timers with `weak` set */
};

/* loop may be NULL: then only virtual time can fire timers. */
int mnemo_timers_init(mnemo_timers_t *timers, mnemo_clock_t *clock,
                      uv_loop_t *loop);
/* Stops every pending timer (without calling them) and closes the uv
 * timer. Safe to call once the loop is gone only if loop was NULL. */
void mnemo_timers_close(mnemo_timers_t *timers);

void mnemo_timer_init(mnemo_timer_t *timer, mnemo_timer_cb cb, void *data);
/* (Re)starts the timer to fire at an absolute time on the clock. */
void mnemo_timer_start_at(mnemo_timers_t *timers, mnemo_timer_t *timer,
                          uint64_t due_ns);
/* (Re)starts the timer to fire delay_ns from now (a precise reading, see
 * mnemo_deadline_enter). */
void mnemo_timer_start(mnemo_timers_t *timers, mnemo_timer_t *timer,
                       uint64_t delay_ns);
void mnemo_timer_stop(mnemo_timer_t *timer);

static inline int mnemo_timer_is_pending(const mnemo_timer_t *timer) {
  return timer->owner != NULL;
}

static inline uint64_t mnemo_timers_count(const mnemo_timers_t *timers) {
  return timers->heap.count;
}

/* Fires, in order, every timer due at or before the cached time. */
void mnemo_timers_run_due(mnemo_timers_t *timers);

/* Virtual mode: moves time forward by delta_ns, firing due timers in order
 * with the clock set to each one's due time as it fires. Returns the
 * number of timers fired. */
uint64_t mnemo_timers_advance(mnemo_timers_t *timers, uint64_t delta_ns);

/* Re-evaluates the uv timer after a clock mode change. */
void mnemo_timers_rearm(mnemo_timers_t *timers);

#endif
