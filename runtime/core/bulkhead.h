/* Bulkhead: at most max_concurrent calls at once, and a bounded FIFO queue
 * of callers waiting for a slot. The waiters are caller-owned (an intrusive
 * list), and so is the max_wait timer (runtime/timer.h): the bulkhead only
 * keeps the queue and the counts. Knows nothing about Lua, libuv or clocks,
 * and never allocates. */
#ifndef MNEMO_BULKHEAD_H
#define MNEMO_BULKHEAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct mnemo_bulkhead_config {
  uint32_t max_concurrent; /* >= 1 */
  uint32_t max_queue;      /* >= 0 */
  uint64_t max_wait_ns;    /* 0 = wait forever (bounded by the caller's
                              deadline); only kept for the caller's timer */
} mnemo_bulkhead_config_t;

/* 0, or MNEMO_EINVAL with the problem written to err (may be NULL) as
 * "field: expected ..., got ...". */
int mnemo_bulkhead_config_validate(const mnemo_bulkhead_config_t *cfg,
                                   char *err, size_t errlen);

typedef struct mnemo_bulkhead_waiter mnemo_bulkhead_waiter_t;
/* The waiter holds a slot now (it is counted in `active`). It may call any
 * bulkhead function, leave() included. */
typedef void (*mnemo_bulkhead_admit_cb)(mnemo_bulkhead_waiter_t *w);

struct mnemo_bulkhead_waiter {
  mnemo_bulkhead_waiter_t *prev, *next;
  mnemo_bulkhead_admit_cb on_admit;
  void *data;
  int queued; /* read only: 1 while in the queue */
};

typedef struct mnemo_bulkhead {
  /* read only */
  char name[64];
  mnemo_bulkhead_config_t config;
  uint32_t active; /* calls holding a slot */
  uint32_t queued; /* waiters in the queue */
  uint64_t admitted, rejected, timed_out;
  /* private */
  mnemo_bulkhead_waiter_t *head, *tail;
  int handing_over; /* inside the hand-over loop (see leave()) */
} mnemo_bulkhead_t;

/* 0 or MNEMO_EINVAL (see validate). Nothing to free. */
int mnemo_bulkhead_init(mnemo_bulkhead_t *b, const char *name,
                        const mnemo_bulkhead_config_t *cfg);
void mnemo_bulkhead_waiter_init(mnemo_bulkhead_waiter_t *w,
                                mnemo_bulkhead_admit_cb cb, void *data);

/* 0: admitted now (active++). MNEMO_EAGAIN: no free slot (or waiters are
 * ahead: a newcomer never overtakes the queue) but the queue has room:
 * call enqueue. MNEMO_EBULKHEAD_FULL: the queue is full (counted in
 * rejected). */
int mnemo_bulkhead_try_enter(mnemo_bulkhead_t *b);
/* Queues the waiter at the tail; only after try_enter said MNEMO_EAGAIN.
 * Never calls on_admit itself: that comes from leave() or reconfigure(). */
void mnemo_bulkhead_enqueue(mnemo_bulkhead_t *b, mnemo_bulkhead_waiter_t *w);
/* The waiter gave up (its max_wait timer or the caller's deadline fired):
 * unlinks it and counts timed_out. No-op if it is not queued. */
void mnemo_bulkhead_cancel(mnemo_bulkhead_t *b, mnemo_bulkhead_waiter_t *w);
/* A call finished: frees its slot, or hands it to the first waiter (FIFO)
 * and calls its on_admit (the slot stays counted in active). An on_admit
 * that calls leave() at once does not recurse: the slot is handed on by the
 * outermost leave(), in a loop. */
void mnemo_bulkhead_leave(mnemo_bulkhead_t *b);
/* New limits. Active and queued calls carry over: a larger max_concurrent
 * admits waiters at once, a smaller one stops admitting until active drops
 * below it; a smaller max_queue keeps the waiters already queued and
 * rejects newcomers until the queue is shorter. On error nothing changes. */
int mnemo_bulkhead_reconfigure(mnemo_bulkhead_t *b,
                               const mnemo_bulkhead_config_t *cfg, char *err,
                               size_t errlen);

#endif
