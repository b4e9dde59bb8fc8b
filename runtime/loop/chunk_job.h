/* A chunking job on the uv thread pool (uv_queue_work), cancellable
 * through a token: setting token->flag (e.g. from a deadline, on the loop
 * thread) makes tree-sitter stop within ~100 parse actions, so the pool
 * thread is free again, not abandoned.
 *
 * Ownership: the job struct belongs to the caller and must stay valid (not
 * moved, not freed) from mnemo_chunk_job_start() until its callback has
 * been called; the callback may free it. The job keeps its own copy of the
 * source, freed before the callback. The token must stay valid until the
 * callback too (the worker reads it). On success job->chunks holds the
 * result and belongs to the callback: keep it or mnemo_chunk_list_free()
 * it. */
#ifndef MNEMO_CHUNK_JOB_H
#define MNEMO_CHUNK_JOB_H

#include <stdint.h>
#include <uv.h>

#include "chunker.h"
#include "deadline.h"

typedef struct mnemo_chunk_job mnemo_chunk_job_t;

/* Called on the loop thread with 0, MNEMO_ECANCELED (token set, or the job
 * was taken off the queue), MNEMO_CHUNK_ETOODEEP or MNEMO_ENOMEM. */
typedef void (*mnemo_chunk_job_cb)(mnemo_chunk_job_t *job, int status);

struct mnemo_chunk_job {
  mnemo_chunk_options_t options; /* set before start; zeros: defaults */
  void *data;                    /* for the caller */
  mnemo_chunk_list_t chunks;     /* the result when the status is 0 */
  uint64_t work_ns;              /* time spent in the worker */
  /* private */
  uv_work_t req;
  const char *language;
  char *src;
  size_t len;
  mnemo_cancel_token_t *token;
  mnemo_chunk_job_cb cb;
  int status;
};

/* Queues the chunking of src[0..len) (copied). Returns 0, MNEMO_EINVAL
 * (unknown language, NULL argument), MNEMO_ENOMEM,
 * or a libuv error; the callback is called only after a 0. */
int mnemo_chunk_job_start(uv_loop_t *loop, mnemo_chunk_job_t *job,
                          const char *language, const char *src, size_t len,
                          mnemo_cancel_token_t *token, mnemo_chunk_job_cb cb);

/* Takes a job that has not started running off the pool's queue (its
 * callback then comes with MNEMO_ECANCELED); a running one is stopped by
 * cancelling its token. Returns 0 or a libuv error (UV_EBUSY: running or
 * done). */
int mnemo_chunk_job_cancel(mnemo_chunk_job_t *job);

#endif
