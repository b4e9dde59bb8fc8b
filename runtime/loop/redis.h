/* Redis on the libuv loop: one hiredis async connection, driven by a
 * uv_poll on its socket. No Lua here (see lua_redis.c).
 *
 * hiredis' own libuv adapter is not used: it points the poll handle's data
 * at its own struct, and luv, which shares the loop, takes every handle
 * with non-NULL data for one of its own (uv.walk and the shutdown that
 * closes luv's handles would crash on it). It also ignores libuv's error
 * status, which on POLLERR (connection refused or reset) stops the poll
 * for good: the connection would hang instead of failing. The hooks here
 * keep data NULL (container_of, like pg.c) and let hiredis see the error.
 *
 * The struct is caller-owned and must stay valid until the close callback.
 * Commands may be pipelined: each gets its own callback, in order. The
 * poll handle keeps the loop alive only while connecting or while replies
 * are awaited, so an idle connection does not keep a program running. */
#ifndef MNEMO_REDIS_H
#define MNEMO_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct mnemo_redis mnemo_redis_t;

/* status 0, or -1 with r->error and r->err_type set. */
typedef void (*mnemo_redis_connect_cb)(mnemo_redis_t *r, int status);
/* The reply (hiredis frees it after the callback returns; an error reply
 * is a reply, of type REDIS_REPLY_ERROR), or NULL when the connection
 * failed or was closed, with r->error and r->err_type set. */
typedef void (*mnemo_redis_reply_cb)(mnemo_redis_t *r, redisReply *reply,
                                     void *arg);
typedef void (*mnemo_redis_close_cb)(mnemo_redis_t *r);

enum mnemo_redis_state {
  MNEMO_REDIS_CLOSED = 0, /* not connected: never, failed, or lost */
  MNEMO_REDIS_CONNECTING,
  MNEMO_REDIS_CONNECTED,
  MNEMO_REDIS_CLOSING /* mnemo_redis_close was called */
};

struct mnemo_redis {
  uv_poll_t poll; /* data stays NULL (luv shares the loop) */
  uv_loop_t *loop;
  redisAsyncContext *ac; /* NULL once hiredis has freed it */
  enum mnemo_redis_state state;
  int events;       /* UV_READABLE | UV_WRITABLE, as hiredis asked */
  int poll_open;    /* poll initialised and uv_close not called */
  int poll_closing; /* uv_close called, its callback not run yet */
  int in_hiredis;   /* inside redisAsyncHandleRead/Write */
  int free_pending; /* close requested inside hiredis: free after it */
  int pending;      /* commands awaiting their reply */
  int lost;         /* the connection failed (r->error says why) */
  mnemo_redis_connect_cb on_connect;
  mnemo_redis_close_cb on_close;
  void *data;
  int err_type; /* hiredis REDIS_ERR_* of the failure; 0 if none */
  char error[256];
};

/* Starts connecting to host (an IP address or a name; a name is resolved
 * by hiredis with a blocking getaddrinfo, so resolve first) and port.
 * Returns 0, or -1 with r->error set (then no callback comes; call
 * mnemo_redis_close to release). */
int mnemo_redis_connect(uv_loop_t *loop, mnemo_redis_t *r, const char *host,
                        int port, mnemo_redis_connect_cb cb);

/* Sends a command (binary-safe arguments). Only once connected (commands
 * may be pipelined). Returns 0, or -1 with r->error set (then cb is not
 * called). SUBSCRIBE, PSUBSCRIBE, the UNSUBSCRIBEs and MONITOR are
 * refused: their replies do not pair with commands. */
int mnemo_redis_command(mnemo_redis_t *r, int argc, const char **argv,
                        const size_t *argvlen, mnemo_redis_reply_cb cb,
                        void *arg);

/* Closes the connection at once: every command still waiting gets its
 * callback with reply NULL ("connection closed"), possibly before this
 * returns. cb (may be NULL) runs once hiredis and libuv let go of
 * everything; until then r must stay valid. cb may run before this
 * returns if nothing was left to release. Safe in any state, once. */
void mnemo_redis_close(mnemo_redis_t *r, mnemo_redis_close_cb cb);

#endif
