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

-- Below this much work a batch is embedded inline, on the loop thread:
-- a thread-pool round trip costs more than the work itself. The work is
-- counted in bytes of text plus one per dimension of each vector (about
-- 8 ns each here). Measured by bench/embed_bench.lua (docs/PERFORMANCE.md,
-- "Embedding").
_M.INLINE_COST = 4096

local FAILURES = {
  cancelled = { "cancelled", "the embedding was cancelled" },
  nomem = { "unknown", "out of memory" },
}

-- Embeds texts on the uv thread pool while the task waits (the loop runs
-- on). Inside a deadline, an expiry raises the TimeoutError at the wait,
-- like any wait, and cancels the job: the pool thread stops before its
-- next vector and the job's memory is freed once it has.
local function on_pool(texts, dims)
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

-- embed.hashing(dims, opts): opts.inline_cost (default _M.INLINE_COST)
-- is the work below which a batch is embedded inline; 0 sends every
-- batch to the pool, math.huge none. Outside a task (no wait possible)
-- batches are embedded inline. The vectors and literals are the same
-- either way (runtime/core/embed.c makes both).
function _M.hashing(dims, opts)
  dims = dims or 384
  local inline_cost = opts and opts.inline_cost or _M.INLINE_COST
  return function(chunks)
    local texts, cost = {}, 0
    for i, c in ipairs(chunks) do
      local text = text_of(c)
      texts[i] = text
      cost = cost + #text + dims
    end
    if cost >= inline_cost and in_task() then
      return on_pool(texts, dims)
    end
    local out = {}
    for i = 1, #texts do
      out[i] = embed_hashing(texts[i], dims)
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
