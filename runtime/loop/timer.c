#include "timer.h"

#include <stdlib.h>

#define TIMER_OF(node_ptr)                                                     \
  ((mnemo_timer_t *)((char *)(node_ptr)-offsetof(mnemo_timer_t, node)))

static int timer_less(const mnemo_heap_node_t *a, const mnemo_heap_node_t *b) {
  const mnemo_timer_t *ta = TIMER_OF(a);
  const mnemo_timer_t *tb = TIMER_OF(b);
  if (ta->due_ns != tb->due_ns)
    return ta->due_ns < tb->due_ns;
  return ta->seq < tb->seq;
}

/* The uv timer is heap-allocated so it can outlive its owner while libuv
 * closes it. Its `data` stays NULL on purpose: when luv owns the loop (plain
 * luajit), luv's loop finaliser closes every handle with a callback that
 * skips handles whose data is NULL, so ours is never mistaken for luv's. */
struct mnemo_timer_driver {
  uv_timer_t handle;
  mnemo_timers_t *timers;
};

static void on_uv_timer(uv_timer_t *handle) {
  struct mnemo_timer_driver *driver = (struct mnemo_timer_driver *)handle;
  mnemo_timers_t *timers = driver->timers;
  timers->armed_due_ns = 0;
  mnemo_timers_run_due(timers);
}

static void free_driver(uv_handle_t *handle) {
  free(handle);
}

int mnemo_timers_init(mnemo_timers_t *timers, mnemo_clock_t *clock,
                      uv_loop_t *loop) {
  mnemo_heap_init(&timers->heap, timer_less);
  timers->clock = clock;
  timers->next_seq = 0;
  timers->driver = NULL;
  timers->armed_due_ns = 0;
  timers->weak_count = 0;
  if (loop != NULL) {
    int rc;
    struct mnemo_timer_driver *driver = malloc(sizeof(*driver));
    if (driver == NULL)
      return UV_ENOMEM;
    rc = uv_timer_init(loop, &driver->handle);
    if (rc != 0) {
      free(driver);
      return rc;
    }
    driver->handle.data = NULL;
    driver->timers = timers;
    timers->driver = driver;
  }
  return 0;
}

void mnemo_timers_close(mnemo_timers_t *timers) {
  mnemo_heap_node_t *node;
  while ((node = mnemo_heap_min(&timers->heap)) != NULL)
    mnemo_timer_stop(TIMER_OF(node));
  if (timers->driver != NULL) {
    uv_handle_t *handle = (uv_handle_t *)&timers->driver->handle;
    timers->driver->timers = NULL;
    if (uv_is_closing(handle))
      free(timers->driver); /* already closed by luv's loop finaliser */
    else
      uv_close(handle, free_driver);
    timers->driver = NULL;
  }
}

/* Keeps the single uv timer armed no later than the earliest due time.
 *
 * Arming is lazy, because deadlines are mostly entered and left again
 * long before they are due: a head that moves later keeps the earlier
 * arming (the timer then fires early, finds nothing due and re-arms), and
 * an empty heap only unrefs the uv timer so it no longer keeps the loop
 * alive. So a deadline entered and left costs no libuv call in the steady
 * state. */
void mnemo_timers_rearm(mnemo_timers_t *timers) {
  mnemo_heap_node_t *head = mnemo_heap_min(&timers->heap);
  uv_timer_t *handle;
  uint64_t due, now, delay_ms;

  if (timers->driver == NULL)
    return;
  handle = &timers->driver->handle;
  /* Only weak timers (or none) pending: let the loop end. */
  if (timers->weak_count == timers->heap.count)
    uv_unref((uv_handle_t *)handle);
  else
    uv_ref((uv_handle_t *)handle);
  if (head == NULL || timers->clock->is_virtual) {
    if (timers->clock->is_virtual && timers->armed_due_ns != 0) {
      uv_timer_stop(handle);
      timers->armed_due_ns = 0;
    }
    return;
  }
  due = TIMER_OF(head)->due_ns;
  if (due == 0)
    due = 1;
  if (timers->armed_due_ns != 0 && timers->armed_due_ns <= due)
    return;
  now = mnemo_clock_cached(timers->clock);
  /* Round up: libuv fires when loop time >= start + timeout, and a timer
   * must never fire before its due time. */
  delay_ms =
      due > now ? (due - now + MNEMO_NS_PER_MS - 1) / MNEMO_NS_PER_MS : 0;
  uv_timer_start(handle, on_uv_timer, delay_ms, 0);
  timers->armed_due_ns = due;
}

void mnemo_timer_init(mnemo_timer_t *timer, mnemo_timer_cb cb, void *data) {
  timer->node.left = timer->node.right = timer->node.parent = NULL;
  timer->due_ns = 0;
  timer->seq = 0;
  timer->cb = cb;
  timer->data = data;
  timer->owner = NULL;
  timer->weak = 0;
}

void mnemo_timer_start_at(mnemo_timers_t *timers, mnemo_timer_t *timer,
                          uint64_t due_ns) {
  if (timer->owner != NULL)
    mnemo_timer_stop(timer);
  timer->due_ns = due_ns;
  timer->seq = timers->next_seq++;
  timer->owner = timers;
  timers->weak_count += timer->weak ? 1 : 0;
  mnemo_heap_insert(&timers->heap, &timer->node);
  /* Re-arm when the head changed or the loop's reference may change. */
  if (mnemo_heap_min(&timers->heap) == &timer->node || timer->weak ||
      timers->weak_count + 1 == timers->heap.count)
    mnemo_timers_rearm(timers);
}

void mnemo_timer_start(mnemo_timers_t *timers, mnemo_timer_t *timer,
                       uint64_t delay_ns) {
  /* Not the loop's cached time: see mnemo_deadline_enter. */
  uint64_t now = mnemo_clock_now(timers->clock);
  uint64_t due = delay_ns > UINT64_MAX - now ? UINT64_MAX : now + delay_ns;
  mnemo_timer_start_at(timers, timer, due);
}

void mnemo_timer_stop(mnemo_timer_t *timer) {
  mnemo_timers_t *timers = timer->owner;
  if (timers == NULL)
    return;
  mnemo_heap_remove(&timers->heap, &timer->node);
  timer->owner = NULL;
  timers->weak_count -= timer->weak ? 1 : 0;
  /* A later head keeps the current arming; only the loop reference may
   * need to drop. */
  if (timers->weak_count == timers->heap.count)
    mnemo_timers_rearm(timers);
}

/* Pops and fires the head if it is due at `now`. Returns 1 if it fired. */
static int fire_head_if_due(mnemo_timers_t *timers, uint64_t now) {
  mnemo_heap_node_t *head = mnemo_heap_min(&timers->heap);
  mnemo_timer_t *timer;
  if (head == NULL)
    return 0;
  timer = TIMER_OF(head);
  if (timer->due_ns > now)
    return 0;
  mnemo_heap_remove(&timers->heap, head);
  timer->owner = NULL;
  timers->weak_count -= timer->weak ? 1 : 0;
  /* The callback may restart this timer or free the struct holding it. */
  timer->cb(timer);
  return 1;
}

void mnemo_timers_run_due(mnemo_timers_t *timers) {
  uint64_t now = mnemo_clock_cached(timers->clock);
  while (fire_head_if_due(timers, now))
    ;
  mnemo_timers_rearm(timers);
}

uint64_t mnemo_timers_advance(mnemo_timers_t *timers, uint64_t delta_ns) {
  mnemo_clock_t *clock = timers->clock;
  uint64_t target, fired = 0;
  mnemo_heap_node_t *head;

  if (!clock->is_virtual)
    return 0;
  target = delta_ns > UINT64_MAX - clock->virtual_ns
               ? UINT64_MAX
               : clock->virtual_ns + delta_ns;
  while ((head = mnemo_heap_min(&timers->heap)) != NULL &&
         TIMER_OF(head)->due_ns <= target) {
    if (TIMER_OF(head)->due_ns > clock->virtual_ns)
      clock->virtual_ns = TIMER_OF(head)->due_ns;
    fired += (uint64_t)fire_head_if_due(timers, clock->virtual_ns);
  }
  clock->virtual_ns = target;
  return fired;
}
