-- A real HTTP embedding server for fault tests, run as a separate process:
--   mnemo-run tests/tools/fake_embedder.lua SCRIPT
-- SCRIPT is a comma-separated list of behaviours, one per request, the
-- last one repeating: ok | 500 | 429 | stall | drop. It listens on a free
-- loopback port and prints "listening PORT" on stdout.
local uv = require "luv"
local cjson = require "cjson"
local core = require "mnemo_core"

local script = {}
for step in (arg[1] or "ok"):gmatch("[^,]+") do
  script[#script + 1] = step
end
local served = 0

local function respond(client, status, body, extra)
  local head = ("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n")
    :format(status, #body, extra or "")
  client:write(head .. body, function()
    client:close()
  end)
end

local function handle(client, request)
  served = served + 1
  local step = script[math.min(served, #script)]
  if step == "stall" then
    return -- never answers; the client's deadline must cut it
  elseif step == "drop" then
    client:close()
  elseif step == "500" then
    respond(client, 500, '{"error":"overloaded"}')
  elseif step == "429" then
    respond(client, 429, '{"error":"slow down"}', "Retry-After: 1\r\n")
  else
    local body = request:match("\r\n\r\n(.*)$")
    local doc = cjson.decode(body)
    local data = {}
    for i, text in ipairs(doc.input) do
      local lit = core.embed_hashing(text, 384)
      local vec = {}
      for x in lit:gmatch("[^{},]+") do
        vec[#vec + 1] = tonumber(x)
      end
      data[i] = { index = i - 1, embedding = vec }
    end
    respond(client, 200, cjson.encode { data = data })
  end
end

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
server:listen(64, function()
  local client = uv.new_tcp()
  server:accept(client)
  local buf = ""
  client:read_start(function(err, chunk)
    if err or not chunk then
      if not client:is_closing() then
        client:close()
      end
      return
    end
    buf = buf .. chunk
    local head, body = buf:match("^(.-)\r\n\r\n(.*)$")
    if head then
      local len = tonumber(head:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
      if #body >= len then
        client:read_stop()
        handle(client, buf)
      end
    end
  end)
end)
print("listening " .. server:getsockname().port)
io.stdout:flush()
