-- Decision hooks: the embedder answers 413 when a batch is too big (not
-- worth retrying) and sends Retry-After on 429; the fallback serves a
-- marker the pipeline understands as "queue this batch for later".
-- Hooks run sandboxed with an instruction budget; if one fails, the
-- built-in decision is used.
return {
  include = "base.lua",
  operations = {
    embed_batch = {
      timeout = "embedding_generation", retry = "embedding", breaker = "embedding",
      idempotent = true,
      should_retry = function(err, attempt)
        return err.status ~= 413
      end,
      next_delay = function(attempt, err, proposed)
        if err.retry_after then
          return math.max(proposed, err.retry_after)
        end
        return proposed
      end,
      fallback = function(err, ctx)
        return { queued = true, reason = err.kind }
      end,
    },
  },
}
