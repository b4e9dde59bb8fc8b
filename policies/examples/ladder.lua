-- A degradation ladder for the embedder: after 3 errors in a minute send
-- smaller batches; while the breaker is open, store chunks without
-- embeddings and queue them. Step back up only after 30 s of calm.
return {
  include = "base.lua",
  degrade = {
    embedding = {
      breaker = "embedding",
      recover_after = 30,
      rungs = {
        { mode = "smaller_batches", errors = 3, window = 60 },
        { mode = "queue", state = "open" },
      },
    },
  },
}
