-- A fake language server on stdio, for lsp_client_spec. Run with plain
-- luajit (luv, cjson): luajit tests/tools/fake_lsp.lua MODE [ARG]
-- Modes: ok, garbage, truncated, huge, badjson, exit_on_init,
-- slow SECONDS (answers after that delay), stall (silent after initialize),
-- batch N (documentSymbol requests are held until N arrived, then answered
-- in reverse order: proves they were in flight at once).
local dir = arg[0]:match("^(.*)/tests/tools/") or "."
package.path = dir .. "/lua/?.lua;" .. package.path
local uv = require "luv"
local cjson = require "cjson.safe"
local frame = require "mnemo.lsp_frame"

local mode, marg = arg[1] or "ok", arg[2]
local stdin, stdout = uv.new_pipe(false), uv.new_pipe(false)
stdin:open(0)
stdout:open(1)
local decoder = frame.decoder.new()
local held = {}

local function write(s, cb)
  stdout:write(s, cb)
end
local function reply(id, result)
  write(frame.encode({ jsonrpc = "2.0", id = id, result = result == nil and cjson.null or result }))
end
local function quit(code)
  stdout:shutdown(function()
    os.exit(code)
  end)
end

local symbols = {
  { name = "greet", kind = 12, range = { start = { line = 0, character = 0 }, ["end"] = { line = 2, character = 0 } },
    selectionRange = { start = { line = 0, character = 4 }, ["end"] = { line = 0, character = 9 } } },
  { name = "Point", kind = 5, range = { start = { line = 4, character = 0 }, ["end"] = { line = 6, character = 0 } },
    selectionRange = { start = { line = 4, character = 6 }, ["end"] = { line = 4, character = 11 } } },
}

local function on_request(m)
  if m.method == "initialize" then
    if mode == "exit_on_init" then os.exit(3) end
    if mode == "garbage" then write("this is not the protocol\r\n\r\n") return end
    if mode == "truncated" then write("Content-Length: 100\r\n\r\n{\"id\":1,") return end
    if mode == "huge" then write("Content-Length: 99999999999\r\n\r\n") return end
    if mode == "badjson" then write("Content-Length: 9\r\n\r\n{not json") return end
    -- a server->client request and a notification before the answer
    write(frame.encode({ jsonrpc = "2.0", id = "cfg1", method = "workspace/configuration",
      params = { items = { { section = "x" } } } }))
    write(frame.encode({ jsonrpc = "2.0", method = "window/logMessage", params = { type = 3, message = "hi" } }))
    reply(m.id, { capabilities = { documentSymbolProvider = true, hoverProvider = true },
      serverInfo = { name = "fake-lsp", version = "0.1" } })
    return
  end
  if mode == "stall" and m.method ~= "shutdown" then return end
  if m.method == "shutdown" then reply(m.id, nil) return end
  local answer
  if m.method == "textDocument/documentSymbol" then
    answer = symbols
  elseif m.method == "textDocument/hover" then
    answer = { contents = { kind = "plaintext", value = "greet(name): say hello" } }
  elseif m.method == "fake/seen" then
    answer = { client_answers = held.answers or {} }
  else
    write(frame.encode({ jsonrpc = "2.0", id = m.id, error = { code = -32601, message = "no " .. tostring(m.method) } }))
    return
  end
  if mode == "slow" then
    local t = uv.new_timer()
    t:start(math.floor((tonumber(marg) or 1) * 1000), 0, function() t:close() reply(m.id, answer) end)
  elseif mode == "batch" then
    held[#held + 1] = { id = m.id, answer = answer }
    if #held >= (tonumber(marg) or 50) then
      for i = #held, 1, -1 do reply(held[i].id, held[i].answer) end
      for i = #held, 1, -1 do held[i] = nil end
    end
  else
    reply(m.id, answer)
  end
end

stdin:read_start(function(_, data)
  if not data then quit(0) return end
  local msgs = decoder:feed(data)
  for _, m in ipairs(msgs or {}) do
    if m.method and m.id ~= nil then
      on_request(m)
    elseif m.method == "exit" then
      quit(0)
    elseif m.id ~= nil then -- a client's answer to our request
      held.answers = held.answers or {}
      held.answers[#held.answers + 1] = m
    end
  end
end)
uv.run()
