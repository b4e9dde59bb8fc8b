-- Correlation ids of error_logs rows. A row is an aggregate: identical
-- events of one window are one row, and `correlation_id` keeps only the
-- first event's id, so the id of a request that failed second found
-- nothing. `correlation_ids` keeps a bounded sample of the distinct ids of
-- the row's occurrences (the flusher merges them, at most 16, the order
-- first seen); `correlation_ids_omitted` counts the occurrences whose id
-- did not fit. A search by id matches either column (rows written before
-- this migration have only correlation_id). IF NOT EXISTS: safe to run on
-- a schema that already has them.
ALTER TABLE error_logs
  ADD COLUMN IF NOT EXISTS correlation_ids text[] NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS correlation_ids_omitted bigint NOT NULL DEFAULT 0;

-- correlation_id = $1 (a partial index: most rows of old data have none)
-- and correlation_ids @> ARRAY[$1] (GIN), combined by a bitmap OR.
CREATE INDEX IF NOT EXISTS error_logs_correlation_id ON error_logs (correlation_id)
  WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS error_logs_correlation_ids ON error_logs USING gin (correlation_ids);
