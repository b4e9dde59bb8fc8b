-- An OpenAI-compatible embedding server that fails a fixed, seeded share of
-- its requests, for the recovery run (scripts/recovery-run):
--   mnemo-run bench/recovery/embedder.lua SEED RATE
-- POST /v1/embeddings: request number k (in the order they arrive) is
-- answered 500 when the k-th draw of a Park-Miller generator seeded with
-- SEED is below RATE, else 200 with mnemo's hashing embedding of each input
-- (384 dimensions: the same vectors as the built-in embed.hashing, so a run
-- through this server can be compared with one without it).
-- GET /stats: {"requests":N,"ok":N,"served_500":N}. It listens on a free
-- loopback port and prints "listening PORT" on stdout.
-- The HTTP handling is tests/tools/fake_embedder.lua's.
local uv = require "luv"
local cjson = require "cjson"
local core = require "mnemo_core"

local seed, rate = tonumber(arg[1] or "1"), tonumber(arg[2] or "0.2")
assert(seed and rate and rate >= 0 and rate <= 1, "usage: embedder.lua SEED RATE")

-- Park-Miller (minimal standard) generator: exact in doubles.
local M = 2147483647
local state = (seed % (M - 1)) + 1
local function draw()
  state = (state * 48271) % M
  return state / M
end
-- A small seed's first draws are small (seed 1: 0.00004, 0.17, ...):
-- they are skipped.
for _ = 1, 32 do
  draw()
end

local stats = { requests = 0, ok = 0, served_500 = 0 }

local function respond(client, status, body)
  local head = ("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n")
    :format(status, #body)
  client:write(head .. body, function()
    if not client:is_closing() then
      client:close()
    end
  end)
end

local function handle(client, request)
  if request:match("^GET /stats") then
    return respond(client, 200, cjson.encode(stats))
  end
  stats.requests = stats.requests + 1
  if draw() < rate then
    stats.served_500 = stats.served_500 + 1
    return respond(client, 500, '{"error":"injected failure"}')
  end
  local body = request:match("\r\n\r\n(.*)$")
  local ok, doc = pcall(cjson.decode, body)
  if not ok or type(doc) ~= "table" or type(doc.input) ~= "table" then
    return respond(client, 400, '{"error":"bad request"}')
  end
  local data = {}
  for i, text in ipairs(doc.input) do
    local vec = {}
    for x in core.embed_hashing(text, 384):gmatch("[^{},]+") do
      vec[#vec + 1] = tonumber(x)
    end
    data[i] = { index = i - 1, embedding = vec }
  end
  stats.ok = stats.ok + 1
  respond(client, 200, cjson.encode { data = data })
end

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
assert(server:listen(128, function()
  local client = uv.new_tcp()
  server:accept(client)
  local parts = {}
  client:read_start(function(err, chunk)
    if err or not chunk then
      if not client:is_closing() then
        client:close()
      end
      return
    end
    parts[#parts + 1] = chunk
    local buf = table.concat(parts)
    parts = { buf }
    local head, body = buf:match("^(.-)\r\n\r\n(.*)$")
    if head then
      local len = tonumber(head:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
      if #body >= len then
        client:read_stop()
        handle(client, buf)
      end
    end
  end)
end))
print("listening " .. server:getsockname().port)
io.stdout:flush()
