-- mnemo's core schema (see ../shared/DESIGN.md, "Storage"). Applied by
-- `mnemo-run --migrate` and by mnemo.pg.migrate(); each file runs once, in
-- its own transaction, recorded in schema_migrations.

-- One row per chunk of a file. Re-indexing a file replaces its rows in one
-- transaction (delete + insert, or upsert on the unique key), so a retry
-- never duplicates. pgvector is not packaged for Debian 12: embeddings are
-- real[] and cosine similarity is computed natively over candidates.
CREATE TABLE code_chunks (
  id            bigserial PRIMARY KEY,
  repository    text        NOT NULL,
  file_path     text        NOT NULL,
  chunk_index   integer     NOT NULL,
  content_hash  text        NOT NULL,
  name_path     text        NOT NULL,
  kind          text        NOT NULL,
  language      text        NOT NULL,
  start_line    integer     NOT NULL,
  end_line      integer     NOT NULL,
  source        text        NOT NULL,
  embedding     real[],
  indexed_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (repository, file_path, chunk_index)
);
CREATE INDEX code_chunks_file ON code_chunks (repository, file_path);
CREATE INDEX code_chunks_name ON code_chunks (repository, name_path);
CREATE INDEX code_chunks_fts ON code_chunks
  USING gin (to_tsvector('simple', name_path || ' ' || source));

-- Chunks stored while the embedder was down, backfilled later.
CREATE TABLE pending_embeddings (
  chunk_id        bigint      PRIMARY KEY REFERENCES code_chunks (id) ON DELETE CASCADE,
  attempts        integer     NOT NULL DEFAULT 0,
  last_error      text,
  next_attempt_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_embeddings_due ON pending_embeddings (next_attempt_at);

-- The code graph, written in the same transaction as the file's chunks.
CREATE TABLE graph_nodes (
  id          bigserial PRIMARY KEY,
  repository  text NOT NULL,
  name_path   text NOT NULL,
  file_path   text NOT NULL,
  kind        text NOT NULL,
  UNIQUE (repository, name_path, file_path)
);
CREATE TABLE graph_edges (
  repository  text   NOT NULL,
  source_id   bigint NOT NULL REFERENCES graph_nodes (id) ON DELETE CASCADE,
  target_name text   NOT NULL,
  kind        text   NOT NULL, -- calls | imports
  file_path   text   NOT NULL,
  PRIMARY KEY (source_id, target_name, kind)
);
CREATE INDEX graph_edges_target ON graph_edges (repository, target_name);

-- Work queue for several workers: claimed with FOR UPDATE SKIP LOCKED.
CREATE TABLE index_jobs (
  id           bigserial PRIMARY KEY,
  repository   text        NOT NULL,
  file_path    text        NOT NULL,
  state        text        NOT NULL DEFAULT 'queued', -- queued | running | done | failed | skipped
  reason       text,
  attempts     integer     NOT NULL DEFAULT 0,
  claimed_by   text,
  claimed_at   timestamptz,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (repository, file_path)
);
CREATE INDEX index_jobs_queued ON index_jobs (repository, state);

-- Error tracking (issue 6): aggregated events; pruned by retention.
CREATE TABLE error_logs (
  id             bigserial PRIMARY KEY,
  first_seen     timestamptz NOT NULL DEFAULT now(),
  last_seen      timestamptz NOT NULL DEFAULT now(),
  occurrences    integer     NOT NULL DEFAULT 1,
  severity       text        NOT NULL,
  category       text        NOT NULL,
  service        text        NOT NULL,
  operation      text,
  error_type     text        NOT NULL,
  message        text        NOT NULL,
  context        jsonb       NOT NULL DEFAULT '{}',
  correlation_id text,
  traceback      text
);
CREATE INDEX error_logs_last_seen ON error_logs (last_seen);
CREATE INDEX error_logs_type ON error_logs (error_type, last_seen);
CREATE INDEX error_logs_operation ON error_logs (operation, last_seen);
