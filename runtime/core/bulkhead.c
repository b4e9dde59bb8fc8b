#include "bulkhead.h"

#include <stdio.h>
#include <string.h>

#include "status.h"

int mnemo_bulkhead_config_validate(const mnemo_bulkhead_config_t *cfg,
                                   char *err, size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  /* max_queue and max_wait_ns take any value. */
  if (cfg->max_concurrent >= 1)
    return 0;
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "max_concurrent: expected integer >= 1, got %u",
             cfg->max_concurrent);
  return MNEMO_EINVAL;
}

int mnemo_bulkhead_init(mnemo_bulkhead_t *b, const char *name,
                        const mnemo_bulkhead_config_t *cfg) {
  if (mnemo_bulkhead_config_validate(cfg, NULL, 0) != 0)
    return MNEMO_EINVAL;
  memset(b, 0, sizeof(*b));
  snprintf(b->name, sizeof(b->name), "%s", name != NULL ? name : "");
  b->config = *cfg;
  return 0;
}

void mnemo_bulkhead_waiter_init(mnemo_bulkhead_waiter_t *w,
                                mnemo_bulkhead_admit_cb cb, void *data) {
  w->prev = w->next = NULL;
  w->on_admit = cb;
  w->data = data;
  w->queued = 0;
}

int mnemo_bulkhead_try_enter(mnemo_bulkhead_t *b) {
  if (b->active < b->config.max_concurrent && b->head == NULL) {
    b->active++;
    b->admitted++;
    return 0;
  }
  if (b->queued < b->config.max_queue)
    return MNEMO_EAGAIN;
  b->rejected++;
  return MNEMO_EBULKHEAD_FULL;
}

void mnemo_bulkhead_enqueue(mnemo_bulkhead_t *b, mnemo_bulkhead_waiter_t *w) {
  if (w->queued)
    return;
  w->next = NULL;
  w->prev = b->tail;
  if (b->tail != NULL)
    b->tail->next = w;
  else
    b->head = w;
  b->tail = w;
  w->queued = 1;
  b->queued++;
}

static void unlink_waiter(mnemo_bulkhead_t *b, mnemo_bulkhead_waiter_t *w) {
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    b->head = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    b->tail = w->prev;
  w->prev = w->next = NULL;
  w->queued = 0;
  b->queued--;
}

void mnemo_bulkhead_cancel(mnemo_bulkhead_t *b, mnemo_bulkhead_waiter_t *w) {
  if (!w->queued)
    return;
  unlink_waiter(b, w);
  b->timed_out++;
}

/* Hands free slots to waiters, FIFO. An on_admit may call leave() (or
 * reconfigure()) at once: that inner call only frees its slot and returns,
 * and this loop goes on, so 10,000 waiters admitted back to back run one
 * after the other instead of 10,000 frames deep. */
static void hand_over(mnemo_bulkhead_t *b) {
  if (b->handing_over)
    return;
  b->handing_over = 1;
  while (b->head != NULL && b->active < b->config.max_concurrent) {
    mnemo_bulkhead_waiter_t *w = b->head;
    unlink_waiter(b, w);
    b->active++;
    b->admitted++;
    if (w->on_admit != NULL)
      w->on_admit(w); /* may free w */
  }
  b->handing_over = 0;
}

void mnemo_bulkhead_leave(mnemo_bulkhead_t *b) {
  if (b->active > 0)
    b->active--;
  hand_over(b);
}

int mnemo_bulkhead_reconfigure(mnemo_bulkhead_t *b,
                               const mnemo_bulkhead_config_t *cfg, char *err,
                               size_t errlen) {
  int rc = mnemo_bulkhead_config_validate(cfg, err, errlen);

  if (rc != 0)
    return rc;
  b->config = *cfg;
  hand_over(b);
  return 0;
}
