#include "error_class.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "status.h"

static const char *const class_names[MNEMO_EC_COUNT] = {
    [MNEMO_EC_UNKNOWN] = "unknown",
    [MNEMO_EC_CONNECTION] = "connection",
    [MNEMO_EC_TIMEOUT] = "timeout",
    [MNEMO_EC_DEADLOCK] = "deadlock",
    [MNEMO_EC_TOO_MANY_CONNECTIONS] = "too_many_connections",
    [MNEMO_EC_HTTP_5XX] = "http_5xx",
    [MNEMO_EC_RATE_LIMITED] = "rate_limited",
    [MNEMO_EC_BUSY] = "busy",
    [MNEMO_EC_INVALID_INPUT] = "invalid_input",
    [MNEMO_EC_CONSTRAINT] = "constraint",
    [MNEMO_EC_AUTH] = "auth",
    [MNEMO_EC_NOT_FOUND] = "not_found",
    [MNEMO_EC_CIRCUIT_OPEN] = "circuit_open",
    [MNEMO_EC_BULKHEAD_FULL] = "bulkhead_full",
    [MNEMO_EC_CANCELLED] = "cancelled",
};

const char *mnemo_error_class_name(mnemo_error_class_t c) {
  if ((unsigned)c >= MNEMO_EC_COUNT)
    return class_names[MNEMO_EC_UNKNOWN];
  return class_names[c];
}

int mnemo_error_class_parse(const char *name, mnemo_error_class_t *out) {
  int i;

  if (name == NULL)
    return MNEMO_EINVAL;
  for (i = 0; i < MNEMO_EC_COUNT; i++) {
    if (strcmp(name, class_names[i]) == 0) {
      *out = (mnemo_error_class_t)i;
      return 0;
    }
  }
  return MNEMO_EINVAL;
}

/* libuv's getaddrinfo codes (UV__EAI_* in uv/errno.h, fixed numbers on every
 * platform), spelled out so that this file does not depend on uv.h;
 * tests/c/test_error_class.c checks them against the header. */
enum {
  EC_UV_EAI_ADDRFAMILY = -3000,
  EC_UV_EAI_AGAIN = -3001,
  EC_UV_EAI_BADFLAGS = -3002,
  EC_UV_EAI_CANCELED = -3003,
  EC_UV_EAI_FAIL = -3004,
  EC_UV_EAI_FAMILY = -3005,
  EC_UV_EAI_MEMORY = -3006,
  EC_UV_EAI_NODATA = -3007,
  EC_UV_EAI_NONAME = -3008,
  EC_UV_EAI_OVERFLOW = -3009,
  EC_UV_EAI_SERVICE = -3010,
  EC_UV_EAI_SOCKTYPE = -3011,
  EC_UV_EAI_BADHINTS = -3013,
  EC_UV_EAI_PROTOCOL = -3014,
};

static mnemo_error_class_t from_uv_eai(int err) {
  switch (err) {
  /* The name did not resolve (yet): the server is unreachable for us. */
  case EC_UV_EAI_AGAIN:
  case EC_UV_EAI_FAIL:
  case EC_UV_EAI_NONAME:
  case EC_UV_EAI_NODATA:
  case EC_UV_EAI_ADDRFAMILY:
    return MNEMO_EC_CONNECTION;
  case EC_UV_EAI_CANCELED:
    return MNEMO_EC_CANCELLED;
  /* Bad arguments to getaddrinfo: asking again will not help. */
  case EC_UV_EAI_BADFLAGS:
  case EC_UV_EAI_BADHINTS:
  case EC_UV_EAI_FAMILY:
  case EC_UV_EAI_SOCKTYPE:
  case EC_UV_EAI_SERVICE:
  case EC_UV_EAI_PROTOCOL:
    return MNEMO_EC_INVALID_INPUT;
  default:
    return MNEMO_EC_UNKNOWN;
  }
}

mnemo_error_class_t mnemo_error_class_from_errno(int err) {
  if (err == MNEMO_ECIRCUIT_OPEN)
    return MNEMO_EC_CIRCUIT_OPEN;
  if (err == MNEMO_EBULKHEAD_FULL)
    return MNEMO_EC_BULKHEAD_FULL;
  if (err <= EC_UV_EAI_ADDRFAMILY && err >= EC_UV_EAI_PROTOCOL)
    return from_uv_eai(err);
  if (err == INT_MIN)
    return MNEMO_EC_UNKNOWN;
  if (err < 0)
    err = -err;

  switch (err) {
  case ECONNREFUSED:
  case ECONNRESET:
  case ECONNABORTED:
  case EPIPE:
  case EHOSTUNREACH:
  case EHOSTDOWN:
  case ENETUNREACH:
  case ENETDOWN:
  case ENETRESET:
  case ENOTCONN:
    return MNEMO_EC_CONNECTION;
  case ETIMEDOUT:
    return MNEMO_EC_TIMEOUT;
  case ECANCELED:
    return MNEMO_EC_CANCELLED;
  case ENOENT:
    return MNEMO_EC_NOT_FOUND;
  case EACCES:
  case EPERM:
    return MNEMO_EC_AUTH;
  case EINVAL:
    return MNEMO_EC_INVALID_INPUT;
  case EAGAIN:
#if EWOULDBLOCK != EAGAIN
  case EWOULDBLOCK:
#endif
  case EBUSY:
    return MNEMO_EC_BUSY;
  case EMFILE:
  case ENFILE:
    return MNEMO_EC_TOO_MANY_CONNECTIONS;
  default:
    return MNEMO_EC_UNKNOWN;
  }
}

mnemo_error_class_t mnemo_error_class_from_sqlstate(const char *sqlstate) {
  const char *s = sqlstate;

  if (s == NULL || strlen(s) != 5)
    return MNEMO_EC_UNKNOWN;
  /* Exact codes first: some override their class (42501 is class 42). */
  /* 40001 serialization_failure is retried the same way as a deadlock. */
  if (strcmp(s, "40P01") == 0 || strcmp(s, "40001") == 0)
    return MNEMO_EC_DEADLOCK;
  if (strcmp(s, "53300") == 0)
    return MNEMO_EC_TOO_MANY_CONNECTIONS;
  /* admin_shutdown, crash_shutdown, cannot_connect_now: the server is going
   * away or not up yet; a new connection later may work. */
  if (strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
      strcmp(s, "57P03") == 0)
    return MNEMO_EC_CONNECTION;
  /* query_canceled: what statement_timeout raises. */
  if (strcmp(s, "57014") == 0)
    return MNEMO_EC_TIMEOUT;
  if (strcmp(s, "42501") == 0) /* insufficient_privilege */
    return MNEMO_EC_AUTH;

  if (strncmp(s, "08", 2) == 0)
    return MNEMO_EC_CONNECTION;
  if (strncmp(s, "23", 2) == 0)
    return MNEMO_EC_CONSTRAINT;
  if (strncmp(s, "28", 2) == 0)
    return MNEMO_EC_AUTH;
  if (strncmp(s, "22", 2) == 0 || strncmp(s, "42", 2) == 0)
    return MNEMO_EC_INVALID_INPUT;
  if (strncmp(s, "53", 2) == 0) /* insufficient resources */
    return MNEMO_EC_BUSY;
  return MNEMO_EC_UNKNOWN;
}

mnemo_error_class_t mnemo_error_class_from_http_status(int status) {
  if (status >= 500 && status <= 599)
    return MNEMO_EC_HTTP_5XX;
  switch (status) {
  case 429:
    return MNEMO_EC_RATE_LIMITED;
  case 401:
  case 403:
    return MNEMO_EC_AUTH;
  case 404:
  case 410:
    return MNEMO_EC_NOT_FOUND;
  case 408:
    return MNEMO_EC_TIMEOUT;
  case 409:
    return MNEMO_EC_CONSTRAINT;
  default:
    break;
  }
  if (status >= 400 && status <= 499)
    return MNEMO_EC_INVALID_INPUT;
  return MNEMO_EC_UNKNOWN;
}

/* hiredis redisContext.err values (hiredis/read.h); numbers so that the
 * core does not need hiredis headers. TIMEOUT exists from hiredis 1.0. */
enum {
  EC_REDIS_ERR_IO = 1,
  EC_REDIS_ERR_OTHER = 2,
  EC_REDIS_ERR_EOF = 3,
  EC_REDIS_ERR_PROTOCOL = 4,
  EC_REDIS_ERR_OOM = 5,
  EC_REDIS_ERR_TIMEOUT = 6,
};

typedef struct redis_code {
  const char *code;
  mnemo_error_class_t cls;
} redis_code_t;

/* Matched against the whole first word of the reply, so "BUSYKEY" is not
 * "BUSY". */
static const redis_code_t redis_codes[] = {
    {"LOADING", MNEMO_EC_BUSY}, /* loading the dataset into memory */
    {"BUSY", MNEMO_EC_BUSY},    /* a script is running */
    {"MASTERDOWN", MNEMO_EC_BUSY},
    {"TRYAGAIN", MNEMO_EC_BUSY}, /* cluster resharding */
    {"OOM", MNEMO_EC_BUSY},      /* maxmemory reached; may free up */
    {"NOAUTH", MNEMO_EC_AUTH},
    {"WRONGPASS", MNEMO_EC_AUTH},
    {"NOPERM", MNEMO_EC_AUTH},
    {"WRONGTYPE", MNEMO_EC_INVALID_INPUT},
    {"ERR", MNEMO_EC_INVALID_INPUT},
    {"EXECABORT", MNEMO_EC_INVALID_INPUT},
    {"BUSYKEY", MNEMO_EC_CONSTRAINT},   /* RESTORE onto an existing key */
    {"BUSYGROUP", MNEMO_EC_CONSTRAINT}, /* consumer group exists */
    {"NOSCRIPT", MNEMO_EC_NOT_FOUND},
};

static mnemo_error_class_t from_redis_reply(const char *reply) {
  /* The server is at maxclients; it says so with a plain ERR. */
  static const char max_clients[] = "ERR max number of clients reached";
  size_t len = strcspn(reply, " \t\r\n");
  size_t i;

  if (strncmp(reply, max_clients, sizeof(max_clients) - 1) == 0)
    return MNEMO_EC_TOO_MANY_CONNECTIONS;

  for (i = 0; i < sizeof(redis_codes) / sizeof(redis_codes[0]); i++) {
    if (strlen(redis_codes[i].code) == len &&
        strncmp(reply, redis_codes[i].code, len) == 0)
      return redis_codes[i].cls;
  }
  return MNEMO_EC_UNKNOWN;
}

mnemo_error_class_t mnemo_error_class_from_redis(int err_type,
                                                 const char *reply_error) {
  switch (err_type) {
  case EC_REDIS_ERR_IO:
  case EC_REDIS_ERR_EOF:
    return MNEMO_EC_CONNECTION;
  case EC_REDIS_ERR_TIMEOUT:
    return MNEMO_EC_TIMEOUT;
  default:
    break;
  }
  if (reply_error != NULL)
    return from_redis_reply(reply_error);
  return MNEMO_EC_UNKNOWN;
}
