/* An embedding job on the uv thread pool (uv_queue_work): the hashing
 * embedder (runtime/core/embed.c) over a batch of texts, each vector
 * turned into its PostgreSQL array literal on the pool thread too, so a
 * large batch never holds the loop. Cancellable through a token: the
 * worker checks it between vectors, so setting token->flag (e.g. when a
 * deadline expired, on the loop thread) frees the pool thread after the
 * vector at hand (about 7.5 ns per byte of its text).
 *
 * Ownership: the job struct belongs to the caller and must stay valid (not
 * moved, not freed) from mnemo_embed_job_start() until its callback has
 * been called; the callback may free it. The job keeps its own copy of the
 * texts, freed before the callback. The token must stay valid until the
 * callback too (the worker reads it). On success the literals belong to
 * the callback: read them with mnemo_embed_job_literal(), then free them
 * with mnemo_embed_job_release() (or keep job->literals and job->offsets,
 * two malloc'd blocks, and free them yourself). On any other status the
 * job holds nothing. */
#ifndef MNEMO_EMBED_JOB_H
#define MNEMO_EMBED_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "deadline.h"

typedef struct mnemo_embed_job mnemo_embed_job_t;

/* Called on the loop thread with 0, MNEMO_ECANCELED (token set, or the job
 * was taken off the queue) or MNEMO_ENOMEM (the literals did not fit in
 * memory). */
typedef void (*mnemo_embed_job_cb)(mnemo_embed_job_t *job, int status);

struct mnemo_embed_job {
  void *data; /* for the caller */
  /* The result when the status is 0: literal i (NUL-terminated) starts at
   * literals + offsets[i], and is offsets[i + 1] - offsets[i] - 1 bytes
   * long. */
  char *literals;
  size_t *offsets; /* count + 1 entries */
  size_t count;    /* texts in the batch */
  size_t done;     /* vectors made: count on success, fewer if cancelled */
  int dims;
  uint64_t work_ns; /* time spent in the worker */
  /* private */
  uv_work_t req;
  char *texts;          /* the copies, one block */
  size_t *text_offsets; /* count + 1 entries */
  size_t literals_cap;
  mnemo_cancel_token_t *token;
  mnemo_embed_job_cb cb;
  int status;
};

/* Queues the embedding of count texts (texts[i] of lens[i] bytes, copied;
 * texts[i] may be NULL when lens[i] is 0) into dims-dimensional vectors.
 * Returns 0, MNEMO_EINVAL (NULL argument, dims out of range), MNEMO_ENOMEM
 * (the copies do not fit), or a libuv error; the callback is called only
 * after a 0. An empty batch (count 0) is a job too. */
int mnemo_embed_job_start(uv_loop_t *loop, mnemo_embed_job_t *job,
                          const char *const *texts, const size_t *lens,
                          size_t count, int dims, mnemo_cancel_token_t *token,
                          mnemo_embed_job_cb cb);

/* Takes a job that has not started running off the pool's queue (its
 * callback then comes with MNEMO_ECANCELED); a running one is stopped by
 * cancelling its token. Returns 0 or a libuv error (UV_EBUSY: running).
 * Only until the callback has been called: libuv's uv_cancel on a request
 * it already took off the queue and completed queues it again (a second
 * callback). */
int mnemo_embed_job_cancel(mnemo_embed_job_t *job);

/* Literal i of a finished job (status 0), its length in *len if not NULL;
 * NULL when i >= job->done. */
const char *mnemo_embed_job_literal(const mnemo_embed_job_t *job, size_t i,
                                    size_t *len);

/* Frees the literals (safe to call more than once, and on a job that
 * holds none). */
void mnemo_embed_job_release(mnemo_embed_job_t *job);

#endif
