-- Embedding providers. Each is fn(chunks) -> list of PostgreSQL array
-- literals, raising a classified error on failure (the pipeline calls it
-- through the "embed_batch" guard).
--   embed.hashing(dims)             built in, deterministic, no model files
--   embed.http{ url = ..., model = ..., dims = ... }
--                                   an OpenAI-compatible /v1/embeddings server
--                                   (each request carries the caller's
--                                   correlation id as X-Request-Id: the
--                                   indexed file's, see mnemo.http_client)
local core = require "mnemo_core"
local cjson = require "cjson.safe"
local http = require "mnemo.http_client"
local errors = require "mnemo.errors"

local _M = {}

local function text_of(chunk)
  return (chunk.name_path or "") .. "\n" .. (chunk.source or "")
end

function _M.hashing(dims)
  dims = dims or 384
  return function(chunks)
    local out = {}
    for i, c in ipairs(chunks) do
      out[i] = core.embed_hashing(text_of(c), dims)
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
