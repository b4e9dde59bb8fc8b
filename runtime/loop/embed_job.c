#include "embed_job.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "status.h"

#define JOB_OF(r)                                                              \
  ((mnemo_embed_job_t *)((char *)(r)-offsetof(mnemo_embed_job_t, req)))

/* Makes room for one more literal. The buffer doubles, so a batch costs
 * O(log n) reallocations; the first holds up to 8 literals. */
static int reserve(mnemo_embed_job_t *job, size_t used, size_t need) {
  size_t cap = job->literals_cap;
  char *grown;
  if (cap - used >= need)
    return 0;
  if (cap == 0)
    cap = need * (job->count < 8 ? job->count : 8);
  while (cap - used < need) {
    if (cap > SIZE_MAX / 2)
      return MNEMO_ENOMEM;
    cap *= 2;
  }
  grown = realloc(job->literals, cap);
  if (grown == NULL)
    return MNEMO_ENOMEM;
  job->literals = grown;
  job->literals_cap = cap;
  return 0;
}

/* On a pool thread: touches only the job's own fields and the token. The
 * token is read before each vector, so a cancelled job stops after the
 * vector at hand. */
static void work(uv_work_t *req) {
  mnemo_embed_job_t *job = JOB_OF(req);
  uint64_t start = uv_hrtime();
  size_t need = MNEMO_EMBED_LITERAL_MAX(job->dims), used = 0, i;
  float *v = malloc(sizeof(float) * (size_t)job->dims);
  job->status = v == NULL ? MNEMO_ENOMEM : 0;
  for (i = 0; job->status == 0 && i < job->count; i++) {
    const char *text = job->texts + job->text_offsets[i];
    size_t len = job->text_offsets[i + 1] - job->text_offsets[i];
    if (mnemo_cancel_token_is_cancelled(job->token)) {
      job->status = MNEMO_ECANCELED;
      break;
    }
    job->status = reserve(job, used, need);
    if (job->status != 0)
      break;
    mnemo_embed_hashing(text, len, v, job->dims); /* dims checked at start */
    job->offsets[i] = used;
    used += mnemo_embed_literal(v, job->dims, job->literals + used,
                                job->literals_cap - used) +
            1;
    job->done = i + 1;
  }
  job->offsets[job->done] = used;
  free(v);
  job->work_ns = uv_hrtime() - start;
}

/* Back on the loop thread. */
static void after_work(uv_work_t *req, int status) {
  mnemo_embed_job_t *job = JOB_OF(req);
  free(job->texts);
  free(job->text_offsets);
  job->texts = NULL;
  job->text_offsets = NULL;
  if (status == UV_ECANCELED) /* taken off the queue before it ran */
    job->status = MNEMO_ECANCELED;
  if (job->status != 0)
    mnemo_embed_job_release(job);
  job->cb(job, job->status);
}

int mnemo_embed_job_start(uv_loop_t *loop, mnemo_embed_job_t *job,
                          const char *const *texts, const size_t *lens,
                          size_t count, int dims, mnemo_cancel_token_t *token,
                          mnemo_embed_job_cb cb) {
  size_t total = 0, i;
  int rc;
  if (loop == NULL || job == NULL || token == NULL || cb == NULL ||
      (count > 0 && (texts == NULL || lens == NULL)))
    return MNEMO_EINVAL;
  if (dims < MNEMO_EMBED_MIN_DIMS || dims > MNEMO_EMBED_MAX_DIMS)
    return MNEMO_EINVAL;
  if (count >= SIZE_MAX / sizeof(size_t))
    return MNEMO_ENOMEM;
  for (i = 0; i < count; i++) {
    if (texts[i] == NULL && lens[i] > 0)
      return MNEMO_EINVAL;
    if (lens[i] > SIZE_MAX - total)
      return MNEMO_ENOMEM;
    total += lens[i];
  }
  job->literals = NULL;
  job->literals_cap = 0;
  job->count = count;
  job->done = 0;
  job->dims = dims;
  job->work_ns = 0;
  job->status = 0;
  job->token = token;
  job->cb = cb;
  job->texts = malloc(total > 0 ? total : 1);
  job->text_offsets = malloc(sizeof(size_t) * (count + 1));
  job->offsets = malloc(sizeof(size_t) * (count + 1));
  if (job->texts == NULL || job->text_offsets == NULL || job->offsets == NULL) {
    rc = MNEMO_ENOMEM;
    goto fail;
  }
  total = 0;
  for (i = 0; i < count; i++) {
    job->text_offsets[i] = total;
    if (lens[i] > 0)
      memcpy(job->texts + total, texts[i], lens[i]);
    total += lens[i];
  }
  job->text_offsets[count] = total;
  rc = uv_queue_work(loop, &job->req, work, after_work);
  if (rc == 0)
    return 0;
fail:
  free(job->texts);
  free(job->text_offsets);
  free(job->offsets);
  job->texts = NULL;
  job->text_offsets = NULL;
  job->offsets = NULL;
  return rc;
}

int mnemo_embed_job_cancel(mnemo_embed_job_t *job) {
  return uv_cancel((uv_req_t *)&job->req);
}

const char *mnemo_embed_job_literal(const mnemo_embed_job_t *job, size_t i,
                                    size_t *len) {
  if (job->literals == NULL || job->offsets == NULL || i >= job->done)
    return NULL;
  if (len != NULL)
    *len = job->offsets[i + 1] - job->offsets[i] - 1;
  return job->literals + job->offsets[i];
}

void mnemo_embed_job_release(mnemo_embed_job_t *job) {
  free(job->literals);
  free(job->offsets);
  job->literals = NULL;
  job->offsets = NULL;
  job->literals_cap = 0;
}
