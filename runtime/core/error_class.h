/* Error classes: what kind of failure an error is, whatever it came from
 * (errno or libuv code, PostgreSQL SQLSTATE, HTTP status, hiredis).
 * Retry policies and breakers decide on the class, never on the raw code.
 * Pure functions: no allocation, no Lua, no libuv. */
#ifndef MNEMO_ERROR_CLASS_H
#define MNEMO_ERROR_CLASS_H

typedef enum {
  MNEMO_EC_UNKNOWN = 0,
  MNEMO_EC_CONNECTION,
  MNEMO_EC_TIMEOUT,
  MNEMO_EC_DEADLOCK,
  MNEMO_EC_TOO_MANY_CONNECTIONS,
  MNEMO_EC_HTTP_5XX,
  MNEMO_EC_RATE_LIMITED,
  MNEMO_EC_BUSY,
  MNEMO_EC_INVALID_INPUT,
  MNEMO_EC_CONSTRAINT,
  MNEMO_EC_AUTH,
  MNEMO_EC_NOT_FOUND,
  MNEMO_EC_CIRCUIT_OPEN,
  MNEMO_EC_BULKHEAD_FULL,
  MNEMO_EC_CANCELLED,
  MNEMO_EC_COUNT
} mnemo_error_class_t;

/* A class as a bit in a uint32_t set (see mnemo_retry_policy_t). */
#define MNEMO_EC_BIT(c) (1u << (c))
/* Every valid class bit. */
#define MNEMO_EC_ALL (MNEMO_EC_BIT(MNEMO_EC_COUNT) - 1u)

/* The policy name of a class ("connection", "http_5xx", ...); "unknown" for
 * a value out of range. */
const char *mnemo_error_class_name(mnemo_error_class_t c);
/* The class named `name` (exact, lower case). 0, or MNEMO_EINVAL for an
 * unknown name (*out untouched). */
int mnemo_error_class_parse(const char *name, mnemo_error_class_t *out);

/* A positive errno, or a negative libuv / mnemo status (-errno, UV_EAI_*,
 * MNEMO_ECIRCUIT_OPEN, MNEMO_EBULKHEAD_FULL). */
mnemo_error_class_t mnemo_error_class_from_errno(int err);
/* A 5-character PostgreSQL SQLSTATE (PG_DIAG_SQLSTATE); NULL or any other
 * length gives MNEMO_EC_UNKNOWN. */
mnemo_error_class_t mnemo_error_class_from_sqlstate(const char *sqlstate);
/* An HTTP response status; 1xx-3xx give MNEMO_EC_UNKNOWN. */
mnemo_error_class_t mnemo_error_class_from_http_status(int status);
/* hiredis: `err_type` is redisContext.err (0 if the context is fine),
 * `reply_error` the text of an error reply ("BUSY Redis is busy ...") or
 * NULL. A context error wins over the reply. */
mnemo_error_class_t mnemo_error_class_from_redis(int err_type,
                                                 const char *reply_error);

#endif
