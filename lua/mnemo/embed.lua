-- Embedding providers. Each is fn(chunks) -> list of PostgreSQL array
-- literals, raising a classified error on failure (the pipeline calls it
-- through the "embed_batch" guard).
--   embed.hashing(dims)             built in, deterministic, no model files;
--                                   a large batch runs on the uv thread pool
--                                   (the loop stays free, a deadline cuts it)
--   embed.http{ url = ..., model = ..., dims = ... }
--                                   an OpenAI-compatible /v1/embeddings server
--                                   (each request carries the caller's
--                                   correlation id as X-Request-Id: the
--                                   indexed file's, see mnemo.http_client)
local core = require "mnemo_core"
local cjson = require "cjson.safe"
local http = require "mnemo.http_client"
local errors = require "mnemo.errors"
local timeout = require "mnemo.timeout"

local pcall, error, tostring, ipairs = pcall, error, tostring, ipairs
local embed_hashing, in_task = core.embed_hashing, core.in_task

local _M = {}

local function text_of(chunk)
  return (chunk.name_path or "") .. "\n" .. (chunk.source or "")
end

-- Below this much work a batch is embedded inline, on the loop thread.
-- The work is counted in bytes of text plus one per dimension of each
-- vector (7-9 ns each here). A pool round trip costs 25-55 us of the loop
-- thread and 40-100 us of CPU in all (the thread hand-off, the copies, the
-- result strings), and as much latency. At 64 KiB of work (about 0.45 ms
-- inline, the longest the loop is held) the pool frees ~0.4 ms of the
-- loop for 8-25 % more CPU, at 128 KiB for ~5 %; below, inline is
-- measurably cheaper (+25-30 % CPU on the pool at 32 KiB, 2-3x at 4 KiB)
-- and the loop is held for less than a file's other work takes. An
-- indexed file's batch (a few chunks of 1-8 KB) stays inline; a huge file
-- or a batch of large chunks goes to the pool. Measured by
-- bench/embed_bench.lua (docs/PERFORMANCE.md, "Embedding on the thread
-- pool").
_M.INLINE_COST = 64 * 1024
-- A larger batch goes to the pool in slices of about this much work (some
-- 10 ms of a pool thread): the texts are copied into each job on the loop
-- thread (a slice at a time, not a whole 100 MB batch at once), the
-- literals come back a slice at a time, and work queued behind it on the
-- pool (file reads, parses) gets the thread between two slices.
_M.SLICE_COST = 1024 * 1024

local FAILURES = {
  cancelled = { "cancelled", "the embedding was cancelled" },
  nomem = { "unknown", "out of memory" },
}

-- One slice on the uv thread pool while the task waits (the loop runs
-- on). Inside a deadline, an expiry raises the TimeoutError at the wait,
-- like any wait, and cancels the job: the pool thread stops before its
-- next vector and the job's memory is freed once it has.
local function slice_on_pool(texts, dims)
  local handle, start_err
  local ok, literals, status = pcall(timeout.await, function(wake)
    local h, err = core.embed_start(texts, dims, wake)
    if not h then
      start_err = err
      wake(nil, "start")
      return
    end
    handle = h
  end)
  if not ok then
    if handle then
      handle:cancel()
    end
    error(literals, 0)
  end
  if literals then
    return literals
  end
  if start_err then
    error(errors.new("unknown", "embed.hashing: could not start: " .. tostring(start_err)), 0)
  end
  local failure = FAILURES[status] or { "unknown", tostring(status) }
  error(errors.new(failure[1], "embed.hashing: " .. failure[2], { texts = #texts }), 0)
end

local function cost_of(chunk, dims)
  return #(chunk.name_path or "") + 1 + #(chunk.source or "") + dims
end

-- chunks[1..n] in slices of at most slice_cost work (at least one chunk
-- each), one after the other on one pool thread. A slice's texts are made
-- just before it is sent, so the loop never builds a huge batch's texts
-- at once either.
local function on_pool(chunks, n, dims, slice_cost)
  local out, first = {}, 1
  while first <= n do
    local texts = { text_of(chunks[first]) }
    local last, cost = first, #texts[1] + dims
    while last < n do
      local c = cost_of(chunks[last + 1], dims)
      if cost + c > slice_cost then
        break
      end
      last, cost = last + 1, cost + c
      texts[last - first + 1] = text_of(chunks[last])
    end
    local literals = slice_on_pool(texts, dims)
    for i = 1, last - first + 1 do
      out[first + i - 1] = literals[i]
    end
    first = last + 1
  end
  return out
end

-- embed.hashing(dims, opts) -> fn(chunks) -> literals. A batch whose work
-- reaches opts.inline_cost (default _M.INLINE_COST; 0: every batch,
-- math.huge: none) is embedded on the uv thread pool in slices of
-- opts.slice_cost (_M.SLICE_COST), the rest inline; outside a task (no
-- wait possible) every batch is inline. The vectors and literals are the
-- same either way (runtime/core/embed.c makes both).
function _M.hashing(dims, opts)
  dims = dims or 384
  local inline_cost = opts and opts.inline_cost or _M.INLINE_COST
  local slice_cost = opts and opts.slice_cost or _M.SLICE_COST
  return function(chunks)
    local n, cost = 0, 0
    for _, c in ipairs(chunks) do
      n, cost = n + 1, cost + cost_of(c, dims)
    end
    if cost >= inline_cost and in_task() then
      return on_pool(chunks, n, dims, slice_cost)
    end
    local out = {}
    for i = 1, n do
      out[i] = embed_hashing(text_of(chunks[i]), dims)
    end
    return out
  end
end

function _M.http(opts)
  local url = opts.url or os.getenv("MNEMO_EMBED_URL")
  assert(url, "embed.http: no url (set MNEMO_EMBED_URL)")
  if not url:find("/v1/embeddings", 1, true) then
    url = url:gsub("/*$", "") .. "/v1/embeddings"
  end
  return function(chunks)
    local input = {}
    for i, c in ipairs(chunks) do
      input[i] = text_of(c)
    end
    local resp, err = http.request { url = url, method = "POST",
      headers = { ["Content-Type"] = "application/json" },
      body = cjson.encode { model = opts.model or "mnemo", input = input } }
    if not resp then
      error(err, 0)
    end
    local doc = cjson.decode(resp.body)
    if type(doc) ~= "table" or type(doc.data) ~= "table" or #doc.data ~= #chunks then
      error(errors.new("invalid_input", "embedding server: unexpected response"), 0)
    end
    local out = {}
    for i, item in ipairs(doc.data) do
      local idx = (tonumber(item.index) or (i - 1)) + 1
      if type(item.embedding) ~= "table" then
        error(errors.new("invalid_input", "embedding server: no embedding for input " .. idx), 0)
      end
      out[idx] = "{" .. table.concat(item.embedding, ",") .. "}"
    end
    return out
  end
end

return _M
