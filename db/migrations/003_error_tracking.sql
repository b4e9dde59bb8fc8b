-- Error tracking (issue 6): error_logs rows are aggregates. The flusher
-- (lua/mnemo/tracking.lua) upserts one row per event identity (severity,
-- category, service, operation, error_type, context repository, scrubbed
-- message: hashed into `fingerprint`) and aggregation window, adding to
-- `occurrences` when the same event comes back in a later flush.
ALTER TABLE error_logs
  ADD COLUMN fingerprint  text,
  ADD COLUMN window_start timestamptz,
  -- A busy window of a hot error can pass 2^31 occurrences.
  ALTER COLUMN occurrences TYPE bigint;

-- The upsert's conflict target.
CREATE UNIQUE INDEX error_logs_fingerprint_window ON error_logs (fingerprint, window_start);

-- What the statistics and the alerts filter and group on, each with
-- last_seen (every query asks for "the last N hours"). 001 has last_seen
-- alone, (error_type, last_seen) and (operation, last_seen).
CREATE INDEX error_logs_severity ON error_logs (severity, last_seen);
CREATE INDEX error_logs_service ON error_logs (service, last_seen);
CREATE INDEX error_logs_category ON error_logs (category, last_seen);
CREATE INDEX error_logs_repository ON error_logs ((context->>'repository'), last_seen);
