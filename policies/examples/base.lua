-- Shared settings other example policies include (`include = "base.lua"`).
return {
  timeouts = { embedding_generation = 10.0, default = 30.0 },
  retry = {
    embedding = { attempts = 3, base = 1.0, max = 10, jitter = "decorrelated",
                  on = { "connection", "timeout", "http_5xx", "rate_limited" },
                  budget = { ratio = 0.2, min_retries = 5, window = 30 } },
  },
  breakers = {
    embedding = { failure_threshold = 3, recovery_timeout = 60, critical = true },
  },
}
