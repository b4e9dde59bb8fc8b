-- Trip on a failure rate instead of a streak: a flaky dependency that fails
-- one call in three keeps its breaker closed under failure_threshold = 5,
-- but this opens it once half of the last 20 calls have failed.
return {
  breakers = {
    search = { failure_threshold = 0, failure_rate = 0.5, window = "count", window_size = 20,
               minimum_calls = 10, slow_call = 2.0, recovery_timeout = 15, half_open_max_calls = 3 },
  },
  timeouts = { vector_search = 5.0, default = 30 },
  operations = {
    vector_search = { timeout = "vector_search", breaker = "search" },
  },
}
