#include "redis.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REDIS_OF(handle) ((mnemo_redis_t *)(handle))

/* What a command's reply goes to: hiredis carries one pointer. */
typedef struct pending_cmd {
  mnemo_redis_reply_cb cb;
  void *arg;
} pending_cmd_t;

static void on_poll(uv_poll_t *handle, int status, int events);

static void set_error(mnemo_redis_t *r, int err_type, const char *message) {
  r->err_type = err_type;
  snprintf(r->error, sizeof(r->error), "%s",
           message && *message ? message : "unknown error");
}

/* The poll keeps the loop alive only while something is awaited. */
static void update_ref(mnemo_redis_t *r) {
  if (!r->poll_open)
    return;
  if (r->state == MNEMO_REDIS_CONNECTING || r->pending > 0)
    uv_ref((uv_handle_t *)&r->poll);
  else
    uv_unref((uv_handle_t *)&r->poll);
}

/* The connection went away without mnemo_redis_close: keep why. */
static void lost(mnemo_redis_t *r, const redisAsyncContext *ac) {
  r->state = MNEMO_REDIS_CLOSED;
  r->lost = 1;
  if (ac->c.err != 0)
    set_error(r, ac->c.err, ac->c.errstr);
  else
    set_error(r, REDIS_ERR_EOF, "connection closed");
}

/* ---- event hooks (hiredis' ev.*), in place of its libuv adapter ---- */

static void watch(mnemo_redis_t *r) {
  if (!r->poll_open)
    return;
  if (r->events != 0)
    uv_poll_start(&r->poll, r->events, on_poll);
  else
    uv_poll_stop(&r->poll);
}

static void ev_add_read(void *privdata) {
  mnemo_redis_t *r = privdata;
  r->events |= UV_READABLE;
  watch(r);
}

static void ev_del_read(void *privdata) {
  mnemo_redis_t *r = privdata;
  r->events &= ~UV_READABLE;
  watch(r);
}

static void ev_add_write(void *privdata) {
  mnemo_redis_t *r = privdata;
  r->events |= UV_WRITABLE;
  watch(r);
}

static void ev_del_write(void *privdata) {
  mnemo_redis_t *r = privdata;
  r->events &= ~UV_WRITABLE;
  watch(r);
}

static void on_poll_closed(uv_handle_t *handle) {
  mnemo_redis_t *r = REDIS_OF(handle);
  r->poll_closing = 0;
  if (r->state == MNEMO_REDIS_CLOSING && r->on_close != NULL)
    r->on_close(r);
}

/* hiredis is freeing the context (once, after the pending callbacks ran
 * and before it closes the socket; uv_close stops the poll at once). */
static void ev_cleanup(void *privdata) {
  mnemo_redis_t *r = privdata;
  if (r->state == MNEMO_REDIS_CONNECTING || r->state == MNEMO_REDIS_CONNECTED)
    lost(r, r->ac);
  r->ac = NULL;
  r->events = 0;
  /* (luv's loop finaliser closes every handle left open; should it come
   * first at exit, the handle is closing already and must not be again.) */
  if (r->poll_open && !uv_is_closing((uv_handle_t *)&r->poll)) {
    r->poll_open = 0;
    r->poll_closing = 1;
    uv_close((uv_handle_t *)&r->poll, on_poll_closed);
  }
  r->poll_open = 0;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  mnemo_redis_t *r = REDIS_OF(handle);
  redisAsyncContext *ac = r->ac;
  if (ac == NULL)
    return;
  /* hiredis may free the context in any of these calls (then ev_cleanup
   * cleared r->ac), and must not be freed by us from inside them. */
  r->in_hiredis++;
  if (status < 0) {
    /* POLLERR, and libuv stopped the poll. hiredis learns the cause
     * (refused, reset) when it touches the socket, and fails; should it
     * go on instead, so must the poll. */
    if (!(ac->c.flags & REDIS_CONNECTED))
      redisAsyncHandleWrite(ac);
    else
      redisAsyncHandleRead(ac);
    if (r->ac != NULL)
      watch(r);
  } else {
    if (events & UV_READABLE)
      redisAsyncHandleRead(ac);
    if (r->ac != NULL && (events & UV_WRITABLE))
      redisAsyncHandleWrite(ac);
  }
  r->in_hiredis--;
  if (r->ac != NULL && r->free_pending) {
    r->free_pending = 0;
    redisAsyncFree(r->ac);
  }
}

/* ---- callbacks from hiredis ---- */

static void on_connect(const redisAsyncContext *ac, int status) {
  mnemo_redis_t *r = ac->data;
  if (r->state != MNEMO_REDIS_CONNECTING)
    return;
  if (status == REDIS_OK) {
    r->state = MNEMO_REDIS_CONNECTED;
    update_ref(r);
    r->on_connect(r, 0);
  } else {
    /* hiredis frees the context right after this. */
    r->state = MNEMO_REDIS_CLOSED;
    r->lost = 1;
    set_error(r, ac->c.err, ac->c.errstr);
    r->on_connect(r, -1);
  }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  mnemo_redis_t *r = ac->data;
  pending_cmd_t cmd = *(pending_cmd_t *)privdata;
  free(privdata);
  r->pending--;
  if (r->state == MNEMO_REDIS_CLOSING) {
    /* Closed by us; replies read after that are not handed out either.
     * If it was lost first, the reason stays. */
    reply = NULL;
    if (!r->lost)
      set_error(r, REDIS_ERR_EOF, "connection closed");
  } else if (reply == NULL && r->state == MNEMO_REDIS_CONNECTED) {
    lost(r, ac);
  }
  update_ref(r);
  cmd.cb(r, reply, cmd.arg);
}

/* hiredis writes with write(2), so a write to a connection the server has
 * just closed raises SIGPIPE, whose default action ends the process. The
 * EPIPE error is all we need. A handler someone installed is left alone. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

int mnemo_redis_connect(uv_loop_t *loop, mnemo_redis_t *r, const char *host,
                        int port, mnemo_redis_connect_cb cb) {
  redisAsyncContext *ac;
  int rc;

  memset(r, 0, sizeof(*r));
  r->loop = loop;
  r->on_connect = cb;
  ignore_sigpipe();
  ac = redisAsyncConnect(host, port);
  if (ac == NULL) {
    set_error(r, REDIS_ERR_OOM, "out of memory");
    return -1;
  }
  if (ac->err != 0) {
    /* A name that does not resolve, or a connect(2) that failed at once. */
    set_error(r, ac->err, ac->errstr);
    redisAsyncFree(ac);
    return -1;
  }
  rc = uv_poll_init(loop, &r->poll, ac->c.fd);
  if (rc != 0) {
    r->err_type = REDIS_ERR_IO;
    snprintf(r->error, sizeof(r->error), "uv_poll_init: %s", uv_strerror(rc));
    redisAsyncFree(ac);
    return -1;
  }
  r->poll.data = NULL;
  r->poll_open = 1;
  r->ac = ac;
  r->state = MNEMO_REDIS_CONNECTING;
  ac->data = r;
  ac->ev.data = r;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  /* Also watches for writing: the first write event tells hiredis that
   * connect(2) is done. */
  redisAsyncSetConnectCallback(ac, on_connect);
  update_ref(r);
  return 0;
}

/* Commands whose replies do not pair one-to-one with commands. */
static int unpaired(const char *name, size_t len) {
  static const char *const names[] = {
      "subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
      "punsubscribe", "sunsubscribe", "monitor"};
  size_t i;
  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
      return 1;
  return 0;
}

int mnemo_redis_command(mnemo_redis_t *r, int argc, const char **argv,
                        const size_t *argvlen, mnemo_redis_reply_cb cb,
                        void *arg) {
  pending_cmd_t *cmd;
  if (r->state != MNEMO_REDIS_CONNECTED || r->ac == NULL) {
    /* A lost connection keeps its reason in r->error. */
    if (r->state == MNEMO_REDIS_CONNECTING)
      set_error(r, REDIS_ERR_OTHER, "not connected yet");
    else if (r->state == MNEMO_REDIS_CLOSING && !r->lost)
      set_error(r, REDIS_ERR_EOF, "connection closed");
    else if (r->err_type == 0)
      set_error(r, REDIS_ERR_EOF, "not connected");
    return -1;
  }
  if (argc < 1) {
    set_error(r, REDIS_ERR_OTHER, "empty command");
    return -1;
  }
  if (unpaired(argv[0], argvlen[0])) {
    r->err_type = REDIS_ERR_OTHER;
    snprintf(r->error, sizeof(r->error),
             "%.*s is not supported (its replies do not pair with commands)",
             (int)(argvlen[0] > 32 ? 32 : argvlen[0]), argv[0]);
    return -1;
  }
  cmd = malloc(sizeof(*cmd));
  if (cmd == NULL) {
    set_error(r, REDIS_ERR_OOM, "out of memory");
    return -1;
  }
  cmd->cb = cb;
  cmd->arg = arg;
  if (redisAsyncCommandArgv(r->ac, on_reply, cmd, argc, argv, argvlen) !=
      REDIS_OK) {
    free(cmd);
    set_error(r, REDIS_ERR_OTHER, "cannot send the command");
    return -1;
  }
  r->pending++;
  update_ref(r);
  return 0;
}

void mnemo_redis_close(mnemo_redis_t *r, mnemo_redis_close_cb cb) {
  if (r->state == MNEMO_REDIS_CLOSING)
    return;
  r->state = MNEMO_REDIS_CLOSING;
  r->on_close = cb;
  if (r->ac != NULL) {
    /* Runs the pending callbacks with NULL, then ev_cleanup closes the
     * poll, whose close callback ends this. Inside a hiredis callback it
     * has to wait until hiredis is out of it (see on_poll). */
    if (r->in_hiredis)
      r->free_pending = 1;
    else
      redisAsyncFree(r->ac);
    return;
  }
  if (r->poll_closing)
    return; /* hiredis let go already; on_poll_closed ends this */
  if (cb != NULL)
    cb(r);
}
