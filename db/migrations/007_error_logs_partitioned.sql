-- error_logs at scale (issue 10): partitioned by window_start (daily
-- ranges, UTC days), a DEFAULT partition for anything no daily partition
-- covers, a GIN index on context, and retention by dropping whole
-- partitions instead of DELETE (lua/mnemo/tracking.lua calls the two
-- functions below: partitions are created ahead by the flusher, today and
-- the next 2 days, and dropped by its retention sweep).
--
-- The table of 001/003/005 is migrated in place: renamed, a partitioned
-- parent made LIKE it (every column, default and NOT NULL, whatever
-- migration added them), its rows moved, its indexes made again on the
-- parent (each partition gets its own), the old table dropped. A
-- partitioned table's unique keys must hold the partition key: the
-- upsert's ON CONFLICT (fingerprint, window_start) already does, the
-- primary key becomes (id, window_start) (id stays unique: one sequence).
-- Rows from before 003 have no window_start: they take their first_seen.
-- Migrations run in one transaction each (mnemo.pg.migrate): on any
-- failure nothing changed. Run again on a partitioned table, it does
-- nothing.

-- Day partitions of error_logs for the UTC days from `first` to `first +
-- days - 1` that do not exist yet: error_logs_pYYYYMMDD. Rows of such a
-- day already in the DEFAULT partition are moved into the new one (else
-- creating it would fail). Returns the partitions created.
CREATE OR REPLACE FUNCTION error_logs_create_partitions(first date, days integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  d date;
  lo timestamptz;
  hi timestamptz;
  part text;
  created integer := 0;
BEGIN
  FOR i IN 0 .. days - 1 LOOP
    d := first + i;
    part := 'error_logs_p' || to_char(d, 'YYYYMMDD');
    CONTINUE WHEN to_regclass(part) IS NOT NULL;
    -- Two flushers (two processes) may create the same day.
    PERFORM pg_advisory_xact_lock(727276);
    CONTINUE WHEN to_regclass(part) IS NOT NULL;
    lo := d::timestamp AT TIME ZONE 'UTC';
    hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
    IF to_regclass('error_logs_default') IS NOT NULL
       AND EXISTS (SELECT 1 FROM error_logs_default WHERE window_start >= lo AND window_start < hi) THEN
      EXECUTE format('CREATE TABLE %I (LIKE error_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
      EXECUTE format('WITH moved AS (DELETE FROM error_logs_default WHERE window_start >= $1 AND window_start < $2
        RETURNING *) INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
      EXECUTE format('ALTER TABLE error_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    ELSE
      EXECUTE format('CREATE TABLE %I PARTITION OF error_logs FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    END IF;
    created := created + 1;
  END LOOP;
  RETURN created;
END $$;

-- Retention: drops the day partitions that end at or before `cutoff`
-- (whole, no DELETE), then deletes the rows older than it from what is
-- left (partition pruning keeps that to the one day partition that
-- straddles the cutoff, and the DEFAULT partition). Returns the
-- partitions dropped and the rows deleted.
CREATE OR REPLACE FUNCTION error_logs_drop_before(cutoff timestamptz, OUT partitions_dropped integer,
  OUT rows_deleted bigint) LANGUAGE plpgsql AS $$
DECLARE
  p record;
BEGIN
  partitions_dropped := 0;
  FOR p IN
    SELECT c.oid::regclass AS part,
      (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'error_logs'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
  LOOP
    IF p.hi <= cutoff THEN
      EXECUTE format('DROP TABLE %s', p.part);
      partitions_dropped := partitions_dropped + 1;
    END IF;
  END LOOP;
  DELETE FROM error_logs WHERE window_start < cutoff;
  GET DIAGNOSTICS rows_deleted = ROW_COUNT;
END $$;

DO $$
DECLARE
  defs text[];
  def text;
  d date;
BEGIN
  IF (SELECT relkind FROM pg_class WHERE oid = 'error_logs'::regclass) = 'p' THEN
    RETURN; -- partitioned already
  END IF;
  ALTER TABLE error_logs RENAME TO error_logs_unpartitioned;
  -- Its indexes but the primary key, to make again on the parent.
  SELECT coalesce(array_agg(pg_get_indexdef(x.indexrelid)), '{}') INTO defs
    FROM pg_index x WHERE x.indrelid = 'error_logs_unpartitioned'::regclass AND NOT x.indisprimary;
  UPDATE error_logs_unpartitioned SET window_start = first_seen WHERE window_start IS NULL;
  CREATE TABLE error_logs (LIKE error_logs_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
    INCLUDING STATISTICS) PARTITION BY RANGE (window_start);
  ALTER TABLE error_logs ALTER COLUMN window_start SET NOT NULL;
  CREATE TABLE error_logs_default PARTITION OF error_logs DEFAULT;
  -- A partition for each day that has rows, and today and the next 2.
  FOR d IN SELECT DISTINCT (window_start AT TIME ZONE 'UTC')::date FROM error_logs_unpartitioned LOOP
    PERFORM error_logs_create_partitions(d, 1);
  END LOOP;
  PERFORM error_logs_create_partitions((now() AT TIME ZONE 'UTC')::date, 3);
  INSERT INTO error_logs SELECT * FROM error_logs_unpartitioned;
  -- The id sequence outlives the old table.
  ALTER SEQUENCE error_logs_id_seq OWNED BY error_logs.id;
  DROP TABLE error_logs_unpartitioned;
  ALTER TABLE error_logs ADD CONSTRAINT error_logs_pkey PRIMARY KEY (id, window_start);
  FOREACH def IN ARRAY defs LOOP
    EXECUTE regexp_replace(def, ' ON (ONLY )?(\S+\.)?error_logs_unpartitioned ', ' ON \2error_logs ');
  END LOOP;
END $$;

-- jsonb containment and key queries on the context (context @> '{...}',
-- context ? 'file_path').
CREATE INDEX IF NOT EXISTS error_logs_context ON error_logs USING gin (context);

-- The error summary grouped by all four fields at once (what
-- tracking.stats{ group_by = "category,service,error_type,severity" }
-- returns for a time range).
CREATE OR REPLACE VIEW error_summary AS
  SELECT category, service, error_type, severity, sum(occurrences) AS count,
    min(first_seen) AS first_seen, max(last_seen) AS last_seen
  FROM error_logs GROUP BY category, service, error_type, severity;
