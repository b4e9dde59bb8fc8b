#include "chunk_job.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

#define JOB_OF(r)                                                              \
  ((mnemo_chunk_job_t *)((char *)(r)-offsetof(mnemo_chunk_job_t, req)))

/* On a pool thread: touches only the job's own fields and the token. */
static void work(uv_work_t *req) {
  mnemo_chunk_job_t *job = JOB_OF(req);
  uint64_t start = uv_hrtime();
  /* tree-sitter reads the flag with an atomic load: the volatile
   * qualifier can go */
  job->status = mnemo_chunk_source(job->language, job->src, job->len,
                                   (const size_t *)&job->token->flag,
                                   &job->options, &job->chunks);
  job->work_ns = uv_hrtime() - start;
}

/* Back on the loop thread. */
static void after_work(uv_work_t *req, int status) {
  mnemo_chunk_job_t *job = JOB_OF(req);
  free(job->src);
  job->src = NULL;
  if (status == UV_ECANCELED) { /* taken off the queue before it ran */
    memset(&job->chunks, 0, sizeof(job->chunks));
    job->status = MNEMO_ECANCELED;
  }
  job->cb(job, job->status);
}

int mnemo_chunk_job_start(uv_loop_t *loop, mnemo_chunk_job_t *job,
                          const char *language, const char *src, size_t len,
                          mnemo_cancel_token_t *token, mnemo_chunk_job_cb cb) {
  int rc;
  if (loop == NULL || job == NULL || token == NULL || cb == NULL ||
      (src == NULL && len > 0))
    return MNEMO_EINVAL;
  job->language = mnemo_chunker_language_name(language);
  if (job->language == NULL)
    return MNEMO_EINVAL;
  job->src = malloc(len + 1);
  if (job->src == NULL)
    return MNEMO_ENOMEM;
  if (len > 0)
    memcpy(job->src, src, len);
  job->src[len] = '\0';
  job->len = len;
  job->token = token;
  job->cb = cb;
  job->status = 0;
  job->work_ns = 0;
  memset(&job->chunks, 0, sizeof(job->chunks));
  rc = uv_queue_work(loop, &job->req, work, after_work);
  if (rc != 0) {
    free(job->src);
    job->src = NULL;
  }
  return rc;
}

int mnemo_chunk_job_cancel(mnemo_chunk_job_t *job) {
  return uv_cancel((uv_req_t *)&job->req);
}
