-- mnemo's default policy: the seeds' values. Plain data evaluated in a
-- sandbox (no io, os, require); see docs/POLICIES.md for every key.
return {
  timeouts = {
    tree_sitter_parse = 5.0,
    embedding_generation = 10.0,
    lsp_query = 3.0,
    graph_traversal = 2.0,
    vector_search = 5.0,
    cache_operation = 1.0,
    database_query = 10.0,
    index_file = 30.0,
    error_flush = 5.0,
    alert_webhook = 5.0,
    default = 30.0,
  },
  retry = {
    -- Redis answers in a millisecond or not at all: a short base and a
    -- 5 s cap keep a cache miss cheaper than going without (POLICIES.md).
    cache = { attempts = 3, base = 0.5, max = 5, jitter = "full", on = { "connection", "timeout" } },
    -- Pool exhaustion, deadlock and timeout, as the specification's
    -- database policy says, and a dropped connection. Every operation on
    -- it is idempotent (below); a timed-out attempt's connection is closed,
    -- so its transaction rolls back or has committed, and running it again
    -- leaves the same rows.
    database = { attempts = 3, base = 1.0, max = 10, jitter = "full",
                 on = { "connection", "deadlock", "too_many_connections", "timeout" } },
    embedding = { attempts = 2, base = 2.0, max = 10, jitter = "full",
                  on = { "connection", "timeout", "http_5xx", "rate_limited" } },
    -- Operations this file does not name, once operations.default says
    -- they are idempotent (it does not: unnamed operations are tried once).
    default = { attempts = 3, base = 1.0, max = 30, jitter = "full",
                on = { "connection", "timeout", "too_many_connections", "busy", "rate_limited", "http_5xx",
                       "deadlock" } },
  },
  breakers = {
    redis = { failure_threshold = 5, recovery_timeout = 30, half_open_max_calls = 1 },
    -- By rate, not by a streak: an embedder that fails 20 % of requests is
    -- flaky, not down (retries and the backfill absorb it); 3 failures in a
    -- row, retries included, opened it 7 times in one `make recovery` run
    -- and left 9,034 chunks queued at the end. Half the last 20 attempts
    -- failing (10 at least) is an outage.
    embedding = { failure_threshold = 0, failure_rate = 0.5, window = "count", window_size = 20,
                  minimum_calls = 10, recovery_timeout = 30, critical = true },
    database = { failure_threshold = 3, recovery_timeout = 10, critical = true },
    alert_webhook = { failure_threshold = 3, recovery_timeout = 60 },
  },
  bulkheads = {
    embedding = { max_concurrent = 4, max_queue = 64, max_wait = 2.0 },
  },
  degrade = { redis = "l1_only", embedding = "queue", lsp = "skip" },
  operations = {
    redis_get = { timeout = "cache_operation", retry = "cache", breaker = "redis", idempotent = true },
    redis_set = { timeout = "cache_operation", retry = "cache", breaker = "redis", idempotent = true },
    embed_batch = { timeout = "embedding_generation", retry = "embedding", breaker = "embedding",
                    bulkhead = "embedding", idempotent = true },
    parse_file = { timeout = "tree_sitter_parse" },
    db_connect = { timeout = "database_query", retry = "database", breaker = "database", idempotent = true },
    db_query = { timeout = "database_query", retry = "database", breaker = "database", idempotent = true },
    -- A file's transaction replaces its rows: running it twice is safe.
    db_write = { timeout = "database_query", retry = "database", breaker = "database", idempotent = true },
    graph_neighbors = { timeout = "graph_traversal", retry = "database", breaker = "database", idempotent = true },
    vector_search = { timeout = "vector_search", retry = "database", breaker = "database", idempotent = true },
    index_file = { timeout = "index_file" },
    -- Error tracking's own writes: no retry (the flusher tries again at its
    -- next interval, the batch kept), no shared breaker (a failing flush
    -- must not fail the pipeline's database calls).
    error_flush = { timeout = "error_flush" },
    -- An alert POST is not repeated by the guard; the next check retries.
    alert_webhook = { timeout = "alert_webhook", breaker = "alert_webhook" },
  },
  -- Error events: held in memory (newest kept), aggregated per window,
  -- flushed in batches, pruned after retention_days.
  error_tracking = { capacity = 10000, window = 60, batch = 500, interval = 1, retention_days = 30 },
  -- Alert when, in the last `window` seconds, there are more than
  -- `critical` CRITICAL, `error` ERROR, `warning` WARNING events;
  -- webhook = "http://..." to be POSTed each alert.
  alerts = { interval = 60, window = 3600, critical = 0, error = 10, warning = 50 },
  -- During an incident, a mechanism can be turned off here without a
  -- deploy (the file is watched): breakers are bypassed with their state
  -- kept, nothing is retried, no timeout is armed, no error is recorded.
  switches = { timeouts = true, retries = true, breakers = true, error_tracking = true },
}
