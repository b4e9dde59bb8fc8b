/* Error tracking: error events recorded on the caller's path without ever
 * blocking it, scrubbed of secrets, aggregated in memory and handed out in
 * batches to a flusher that writes them to PostgreSQL.
 *
 * mnemo_error_record() is the one entry point. It scrubs the message
 * (mnemo_scrub: home directories, DSN passwords, bearer tokens, key=value
 * secrets; mnemo_scrub_dsn adds the pieces of a known DSN), then either adds
 * one occurrence to an identical event of the same aggregation window (same
 * severity, category, service, operation, error_type, scrubbed message and
 * context repository: the repository is part of the identity so that statistics
 * per repository stay true) or appends a new entry. Nothing else happens on the
 * caller's path: no I/O, no clock read (the caller passes the wall-clock time),
 * at most one allocation for a new entry; an aggregated one allocates only
 * to keep a correlation id not seen before (below), and never once the
 * entry's sample is full.
 *
 * Correlation ids: an entry keeps the first event's id (correlation_id) and
 * a sample of the distinct ids of all its occurrences, the first included,
 * at most MNEMO_ERROR_MAX_CORRELATION_IDS (each cut like a name), in the
 * order first seen: the id of a request that failed 5th in a group of 100
 * identical errors still finds the group. Occurrences whose id did not fit
 * are counted (correlation_ids_omitted; it counts occurrences, so one id
 * seen twice past the bound counts twice). An empty id is no id. The
 * sample is a separate allocation, made when a second distinct id comes
 * and grown by doubling (at most a few times per entry); it is charged to
 * the entry's bytes, and an allocation failure only counts the id as
 * omitted.
 *
 * The queue is bounded by entry count (`capacity`) and by bytes
 * (`max_bytes`); when either is exceeded the OLDEST entries are dropped
 * (the newest are the ones worth keeping when something floods) and their
 * occurrences counted in stats.dropped. An entry that gets a new occurrence
 * counts as new again (it moves to the newest end).
 *
 * The flusher takes batches from the oldest end (mnemo_error_take), writes
 * them, then commits the batch (freed, counted as flushed) or requeues it
 * (the write failed: the entries go back to the oldest end, merged with
 * identical entries recorded meanwhile, and the bounds apply again).
 *
 * Not thread-safe: call everything on one thread (the loop's). Like the
 * rest of the core it knows nothing about Lua or libuv. */
#ifndef MNEMO_ERROR_TRACK_H
#define MNEMO_ERROR_TRACK_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum {
  MNEMO_SEV_DEBUG = 0,
  MNEMO_SEV_INFO,
  MNEMO_SEV_WARNING,
  MNEMO_SEV_ERROR,
  MNEMO_SEV_CRITICAL,
  MNEMO_SEV_COUNT
} mnemo_severity_t;

typedef enum {
  MNEMO_CAT_DATABASE = 0,
  MNEMO_CAT_EMBEDDING,
  MNEMO_CAT_CACHE,
  MNEMO_CAT_TIMEOUT,
  MNEMO_CAT_CIRCUIT_BREAKER,
  MNEMO_CAT_PARSE,
  MNEMO_CAT_POLICY,
  MNEMO_CAT_API,
  MNEMO_CAT_UNKNOWN,
  MNEMO_CAT_GRAPH, /* after UNKNOWN: the earlier values stay as they were */
  MNEMO_CAT_COUNT
} mnemo_error_category_t;

/* "DEBUG" ... "CRITICAL"; NULL out of range. */
const char *mnemo_severity_name(mnemo_severity_t s);
/* The severity named name[0..len) (exact, upper case): 0, or MNEMO_EINVAL. */
int mnemo_severity_parse(const char *name, size_t len, mnemo_severity_t *out);
/* "DEBUG, INFO, WARNING, ERROR, CRITICAL" (for error messages). */
const char *mnemo_severity_list(void);

/* "database" ... "unknown"; NULL out of range. */
const char *mnemo_error_category_name(mnemo_error_category_t c);
int mnemo_error_category_parse(const char *name, size_t len,
                               mnemo_error_category_t *out);
const char *mnemo_error_category_list(void);

/* Scrubs in[0..len) into out (at most cap bytes written, no NUL added;
 * out may be NULL when cap is 0) and returns the length of the whole
 * scrubbed text, like snprintf: a result > cap means the output was cut.
 * The scrubbed text is never longer than 3 * len. Idempotent.
 *   /home/USER/...  /Users/USER/...  /root/...   -> ~/...
 *   scheme://user:SECRET@host                    -> scheme://user:***@host
 *   scheme://user:SECRET (no '@', not a port), scheme://user:SE/CRET@host
 *                                                -> scheme://user:***...
 *   Bearer TOKEN                                 -> Bearer ***
 *   password=V passwd=V secret=V token=V key=V (also api_key, access_token,
 *   "password": "V", password='V V', PASSWORD = V, ?password=V, ...)
 *                                                -> NAME=***
 *   password=TWO WORDS host=db (unquoted, a name= after it)
 *                                                -> password=*** host=db */
size_t mnemo_scrub(const char *in, size_t len, char *out, size_t cap);

/* mnemo_scrub, knowing the connection string the text is about (libpq's
 * errors). Every span of dsn that may hold a password is masked where it
 * occurs in the text (3 bytes or more): the userinfo and ?password= of a
 * URI, even a malformed one; password= values of name=value, with the
 * words of an unquoted one; bare words (also of a DSN that is neither)
 * unless they look like a keyword (lower-case letters and '_'). So is any
 * double-quoted piece of the text that is part of such a span, starts with
 * its end or ends with its start: libpq quotes the piece it could not use
 * (`invalid integer value "S3c" for connection option "port"` for the
 * password "S3c/ret"). Same contract as mnemo_scrub. */
size_t mnemo_scrub_dsn(const char *in, size_t len, const char *dsn,
                       size_t dsn_len, char *out, size_t cap);

/* A string by pointer and length (Lua strings may hold NULs); s == NULL
 * means absent. */
typedef struct mnemo_str {
  const char *s;
  size_t n;
} mnemo_str_t;

typedef enum {
  MNEMO_CTX_STRING = 0,
  MNEMO_CTX_NUMBER,
  MNEMO_CTX_BOOL
} mnemo_ctx_kind_t;

/* One context field: file_path, repository, language, attempt, ... */
typedef struct mnemo_error_ctx {
  mnemo_str_t key;
  mnemo_ctx_kind_t kind;
  mnemo_str_t str; /* MNEMO_CTX_STRING: scrubbed when stored */
  double number;   /* MNEMO_CTX_NUMBER (NaN and infinities become null) */
  int boolean;     /* MNEMO_CTX_BOOL */
} mnemo_error_ctx_t;

typedef struct mnemo_error_event {
  mnemo_severity_t severity;
  mnemo_error_category_t category;
  mnemo_str_t service;        /* required */
  mnemo_str_t operation;      /* optional */
  mnemo_str_t error_type;     /* required */
  mnemo_str_t message;        /* required; scrubbed */
  mnemo_str_t correlation_id; /* optional; "" is none */
  mnemo_str_t traceback;      /* optional; scrubbed */
  const mnemo_error_ctx_t *context;
  size_t ncontext;
  /* Optional, for callers whose context is costly to gather (the Lua
   * binding walks a table): called only when the event starts a new entry
   * (an aggregated occurrence needs no context), it fills up to `max`
   * fields (they replace context/ncontext) and returns how many. The
   * identity's repository is then `repository`, given by the caller. */
  size_t (*context_fn)(void *ud, mnemo_error_ctx_t *out, size_t max);
  void *context_ud;
  mnemo_str_t repository;
} mnemo_error_event_t;

/* The most fields context_fn is asked for. */
#define MNEMO_ERROR_MAX_CTX_FIELDS 32

/* What one stored entry holds, bounded so that max_bytes means something:
 * longer texts are cut (at a UTF-8 boundary), context fields beyond
 * MNEMO_ERROR_MAX_CONTEXT bytes of JSON are left out. */
#define MNEMO_ERROR_MAX_NAME 256 /* service, operation, error_type, ... */
#define MNEMO_ERROR_MAX_MESSAGE 2048
#define MNEMO_ERROR_MAX_TRACEBACK 8192
#define MNEMO_ERROR_MAX_CONTEXT 4096   /* the context's JSON text */
#define MNEMO_ERROR_MAX_CTX_VALUE 1024 /* one string value of it */
/* Distinct correlation ids kept per entry (the first included). */
#define MNEMO_ERROR_MAX_CORRELATION_IDS 16
/* The smallest max_bytes allowed: room for a few entries of maximum size. */
#define MNEMO_ERROR_MIN_BYTES (64u * 1024u)

typedef struct mnemo_error_config {
  size_t capacity;   /* entries kept (>= 1); default 10000 */
  size_t max_bytes;  /* bytes charged to entries (>= MNEMO_ERROR_MIN_BYTES) */
  int64_t window_us; /* aggregation window (> 0); default 60 s */
  uint64_t seed[2];  /* key of the in-memory hash (messages may come from
                        outside: keep them from being made to collide) */
} mnemo_error_config_t;

/* Counters are in occurrences (events), except `entries` and `bytes`. */
typedef struct mnemo_error_stats {
  uint64_t recorded;       /* events accepted by mnemo_error_record */
  uint64_t aggregated;     /* of those, added to an existing entry */
  uint64_t dropped;        /* events lost to the bounds */
  uint64_t flushed;        /* events of committed batches */
  uint64_t flush_failures; /* batches requeued */
  uint64_t pending;        /* events held (queue and batches taken) */
  size_t entries;          /* entries in the queue (not in taken batches) */
  size_t bytes;            /* bytes charged to the queue's entries */
} mnemo_error_stats_t;

typedef struct mnemo_error_entry mnemo_error_entry_t;

/* The last few short messages, raw, with their scrubbed text and its hash:
 * a failure that repeats (the common case: a dependency down) is then
 * neither scrubbed nor hashed again. Looked up by content, never stale. */
#define MNEMO_ERROR_MEMO 4
#define MNEMO_ERROR_MEMO_RAW 256
typedef struct mnemo_error_memo {
  uint32_t raw_n, out_n; /* raw_n 0: empty slot */
  uint64_t hash;
  char raw[MNEMO_ERROR_MEMO_RAW];
  char out[MNEMO_ERROR_MEMO_RAW];
} mnemo_error_memo_t;

typedef struct mnemo_error_tracker {
  mnemo_error_config_t config;
  mnemo_error_entry_t **buckets;
  size_t nbuckets;             /* a power of two */
  mnemo_error_entry_t *oldest; /* next to be taken, or dropped */
  mnemo_error_entry_t *newest;
  mnemo_error_stats_t stats;
  mnemo_error_memo_t memo[MNEMO_ERROR_MEMO];
  unsigned memo_next;
} mnemo_error_tracker_t;

/* A config with the defaults (capacity 10000, 16 MiB, 60 s, seed 0). */
void mnemo_error_config_default(mnemo_error_config_t *config);

/* 0, MNEMO_EINVAL (a bound out of range) or MNEMO_ENOMEM. */
int mnemo_error_tracker_init(mnemo_error_tracker_t *t,
                             const mnemo_error_config_t *config);
/* Frees every queued entry (not batches taken). May be inited again. */
void mnemo_error_tracker_free(mnemo_error_tracker_t *t);
/* Empties the queue (nothing counted as dropped) and zeroes the counters;
 * events of batches taken stay pending. For tests and restarts. */
void mnemo_error_tracker_clear(mnemo_error_tracker_t *t);
/* New bounds and window (the seed stays): entries beyond the new bounds
 * are dropped, oldest first; the window applies to events from now on.
 * 0 or MNEMO_EINVAL (nothing changed). */
int mnemo_error_tracker_configure(mnemo_error_tracker_t *t,
                                  const mnemo_error_config_t *config);

/* Records one event at wall-clock time now_us (microseconds since the
 * Unix epoch). 0; MNEMO_EINVAL (severity or category out of range, a
 * required string missing); MNEMO_ENOMEM (the event is lost and counted as
 * dropped). Never blocks. */
int mnemo_error_record(mnemo_error_tracker_t *t, const mnemo_error_event_t *ev,
                       int64_t now_us);

/* A batch taken from the queue: its entries belong to the caller until it
 * is committed, requeued or freed. Caller-owned; zero it before use. */
typedef struct mnemo_error_batch {
  mnemo_error_entry_t *first; /* oldest */
  mnemo_error_entry_t *last;
  size_t entries;
  uint64_t events;
} mnemo_error_batch_t;

/* Moves up to max of the oldest entries into batch (which must be empty).
 * Returns the number taken (0: nothing queued). */
size_t mnemo_error_take(mnemo_error_tracker_t *t, mnemo_error_batch_t *batch,
                        size_t max);
/* The batch was written: frees it, counts its events as flushed. */
void mnemo_error_batch_commit(mnemo_error_tracker_t *t,
                              mnemo_error_batch_t *batch);
/* The write failed: the entries go back as the oldest, merged into
 * identical entries recorded meanwhile; the bounds apply (the oldest go,
 * counted as dropped). Counts one flush failure. The batch is empty after. */
void mnemo_error_batch_requeue(mnemo_error_tracker_t *t,
                               mnemo_error_batch_t *batch);
/* The batch cannot be written (the server refuses its data): frees it,
 * counts its events as dropped. */
void mnemo_error_batch_drop(mnemo_error_tracker_t *t,
                            mnemo_error_batch_t *batch);
/* Frees a batch whose tracker is gone: counts nothing anywhere. */
void mnemo_error_batch_free(mnemo_error_batch_t *batch);

/* The batch as a JSON array for jsonb_to_recordset: one object per entry
 * with severity, category, service, operation, error_type, message,
 * context (an object), correlation_id (the first event's, else the first
 * id seen; null when none), correlation_ids (an array, the sample in the
 * order first seen, [] when none), correlation_ids_omitted, traceback
 * (null when absent), occurrences, and first_seen, last_seen, window_start
 * in seconds since
 * the epoch (microsecond precision). *json is malloc'd (free it); its text
 * is valid UTF-8 without NULs (invalid bytes become U+FFFD), as jsonb
 * requires. 0 or MNEMO_ENOMEM. */
int mnemo_error_batch_json(const mnemo_error_batch_t *batch, char **json,
                           size_t *len);

/* A read-only view of one entry (for tests and counts). Strings are
 * NUL-terminated; absent ones are NULL. */
typedef struct mnemo_error_view {
  mnemo_severity_t severity;
  mnemo_error_category_t category;
  const char *service, *operation, *error_type, *message, *correlation_id,
      *traceback, *repository;
  const char *context_json; /* "{...}" */
  uint64_t count;
  int64_t first_us, last_us, window_start_us;
  size_t ncorrelation_ids;          /* the sample's size, the first included */
  uint64_t correlation_ids_omitted; /* occurrences whose id did not fit */
} mnemo_error_view_t;

/* Iteration from the oldest entry of the queue (or of a batch). */
const mnemo_error_entry_t *mnemo_error_oldest(const mnemo_error_tracker_t *t);
const mnemo_error_entry_t *
mnemo_error_batch_first(const mnemo_error_batch_t *b);
const mnemo_error_entry_t *mnemo_error_next(const mnemo_error_entry_t *e);
void mnemo_error_view(const mnemo_error_entry_t *e, mnemo_error_view_t *view);
/* The i-th id of the entry's correlation sample (0: the first seen), NUL
 * terminated, its length in *len; NULL when i >= ncorrelation_ids. */
const char *mnemo_error_correlation_id(const mnemo_error_entry_t *e, size_t i,
                                       size_t *len);

/* Events still queued per severity whose last occurrence is >= since_us
 * (what the alert rules add to what is already stored). */
void mnemo_error_pending_by_severity(const mnemo_error_tracker_t *t,
                                     int64_t since_us,
                                     uint64_t out[MNEMO_SEV_COUNT]);

#endif
