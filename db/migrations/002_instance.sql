-- A random identity for this database, made once. Cache keys of the
-- pipeline carry it: a Redis shared by several databases, or one that
-- outlives a database dropped and created again under the same name, can
-- then never answer "already stored" for rows this database does not hold.
CREATE TABLE mnemo_instance (
  id         text        PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO mnemo_instance (id) VALUES (md5(random()::text || clock_timestamp()::text));
