-- One call writes a file's rows: the pipeline's transaction is then BEGIN,
-- this, COMMIT — three round trips whatever the file's size, with plans
-- cached by PL/pgSQL instead of re-planned per statement. The body is what
-- lua/mnemo/indexer.lua sent as five statements before.
--
-- chunks: [{i, name_path, kind, start_line, end_line, source, embedding}]
--   (embedding: a real[] literal, or null -> queued in pending_embeddings)
-- nodes:  [{name_path, kind}]
-- edges:  [{name_path, target, kind}]
-- Returns the number of chunks queued for an embedding.
CREATE FUNCTION mnemo_store_file(p_repository text, p_file_path text, p_hash text, p_language text,
                                 p_chunks jsonb, p_nodes jsonb, p_edges jsonb)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  queued integer;
BEGIN
  -- Two writers of one file queue here instead of failing on the unique key.
  PERFORM pg_advisory_xact_lock(hashtextextended(p_repository || '/' || p_file_path, 0));
  DELETE FROM code_chunks WHERE repository = p_repository AND file_path = p_file_path;
  DELETE FROM graph_nodes WHERE repository = p_repository AND file_path = p_file_path;

  WITH ins AS (
    INSERT INTO code_chunks (repository, file_path, chunk_index, content_hash, name_path, kind, language,
                             start_line, end_line, source, embedding)
    SELECT p_repository, p_file_path, r.i, p_hash, r.name_path, r.kind, p_language,
           r.start_line, r.end_line, r.source, r.embedding::real[]
    FROM jsonb_to_recordset(p_chunks) AS r(i integer, name_path text, kind text, start_line integer,
                                           end_line integer, source text, embedding text)
    RETURNING id, embedding IS NULL AS pending
  ), q AS (
    INSERT INTO pending_embeddings (chunk_id) SELECT id FROM ins WHERE pending RETURNING 1
  )
  SELECT count(*) INTO queued FROM q;

  WITH nodes AS (
    INSERT INTO graph_nodes (repository, name_path, file_path, kind)
    SELECT DISTINCT ON (c.name_path) p_repository, c.name_path, p_file_path, c.kind
    FROM jsonb_to_recordset(p_nodes) AS c(name_path text, kind text)
    ORDER BY c.name_path
    ON CONFLICT (repository, name_path, file_path) DO UPDATE SET kind = EXCLUDED.kind
    RETURNING id, name_path
  )
  INSERT INTO graph_edges (repository, source_id, target_name, kind, file_path)
  SELECT DISTINCT p_repository, nodes.id, e.target, e.kind, p_file_path
  FROM jsonb_to_recordset(p_edges) AS e(name_path text, target text, kind text)
  JOIN nodes USING (name_path)
  ON CONFLICT DO NOTHING;

  RETURN queued;
END $$;

-- Replacing a file deletes its graph nodes by (repository, file_path):
-- without this index each delete scanned the table (quadratic over a run).
CREATE INDEX graph_nodes_file ON graph_nodes (repository, file_path);
