/* Deadline insert + cancel with 1,000,000 pending, against libuv's own
 * timers (uv_timer_start/uv_timer_stop on the same loop) as the baseline.
 * Prints ns per operation, the ratio, and the memory the pending deadlines
 * take. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "timer.h"

enum { N = 1000000 };

static void never(mnemo_timer_t *t) {
  (void)t;
}
static void never_uv(uv_timer_t *t) {
  (void)t;
}

static uint64_t delays[N];

static double ns_per(uint64_t start, uint64_t end) {
  return (double)(end - start) / N;
}

static long max_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

int main(void) {
  uv_loop_t loop;
  mnemo_clock_t clock;
  mnemo_timers_t timers;
  mnemo_timer_t *deadlines = calloc(N, sizeof(*deadlines));
  uv_timer_t *uv_timers = calloc(N, sizeof(*uv_timers));
  uint64_t t0, t1, t2;
  double ours_start, ours_stop, uv_start, uv_stop;
  long rss_before, rss_after;
  int i;

  if (deadlines == NULL || uv_timers == NULL)
    return 1;
  srand(1);
  for (i = 0; i < N; i++)
    delays[i] = (uint64_t)(rand() % 30000) * MNEMO_NS_PER_MS;

  uv_loop_init(&loop);
  mnemo_clock_init(&clock, &loop);
  mnemo_timers_init(&timers, &clock, &loop);

  rss_before = max_rss_kb();
  t0 = uv_hrtime();
  for (i = 0; i < N; i++) {
    mnemo_timer_init(&deadlines[i], never, NULL);
    mnemo_timer_start(&timers, &deadlines[i], delays[i]);
  }
  t1 = uv_hrtime();
  rss_after = max_rss_kb();
  for (i = 0; i < N; i++)
    mnemo_timer_stop(&deadlines[i]);
  t2 = uv_hrtime();
  ours_start = ns_per(t0, t1);
  ours_stop = ns_per(t1, t2);

  t0 = uv_hrtime();
  for (i = 0; i < N; i++) {
    uv_timer_init(&loop, &uv_timers[i]);
    uv_timer_start(&uv_timers[i], never_uv, delays[i] / MNEMO_NS_PER_MS, 0);
  }
  t1 = uv_hrtime();
  for (i = 0; i < N; i++)
    uv_timer_stop(&uv_timers[i]);
  t2 = uv_hrtime();
  uv_start = ns_per(t0, t1);
  uv_stop = ns_per(t1, t2);

  printf("timers: %d pending deadlines\n", N);
  printf("  mnemo deadline start  %7.1f ns/op   libuv uv_timer_start %7.1f "
         "ns/op   ratio %.2f\n",
         ours_start, uv_start, ours_start / uv_start);
  printf("  mnemo deadline cancel %7.1f ns/op   libuv uv_timer_stop  %7.1f "
         "ns/op   ratio %.2f\n",
         ours_stop, uv_stop, ours_stop / uv_stop);
  printf("  memory: %zu bytes per deadline (%.1f MB for %d; RSS grew %.1f MB "
         "while they were pending), no heap allocation per deadline\n",
         sizeof(mnemo_timer_t), sizeof(mnemo_timer_t) * (double)N / 1e6, N,
         (double)(rss_after - rss_before) / 1024.0);

  for (i = 0; i < N; i++)
    uv_close((uv_handle_t *)&uv_timers[i], NULL);
  mnemo_timers_close(&timers);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(deadlines);
  free(uv_timers);
  return 0;
}
