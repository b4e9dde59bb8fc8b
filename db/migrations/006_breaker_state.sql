-- Circuit breaker state that survives a restart (lua/mnemo/breaker_store.lua):
-- the latest transition of each named breaker, written by a background task
-- of the process that saw it, read at start so a breaker that was OPEN less
-- than its recovery_timeout ago is opened again for the time it had left.
-- Times are the database server's (now() minus how long ago, as measured on
-- the writer's monotonic clock), never a host's wall clock. No CHECK
-- constraints: the reader refuses rows it cannot use (an unknown state, a
-- time that is not finite, a recovery_timeout that is not a sane number of
-- seconds) and warns once, and a newer mnemo may write states an older one
-- does not know.
CREATE TABLE IF NOT EXISTS circuit_breaker_state (
  name text PRIMARY KEY,
  state text NOT NULL,              -- closed | open | half_open
  opened_at timestamptz,            -- when it last opened (NULL when closed)
  recovery_timeout float8,          -- seconds, as configured when it opened
  updated_at timestamptz NOT NULL DEFAULT now(), -- when it moved to `state`
  process text                      -- host:pid of the writer
);
