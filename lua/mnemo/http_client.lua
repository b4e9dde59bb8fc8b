-- A small HTTP/1.1 client on the shared loop, for the embedding provider
-- and alert webhooks: one request per connection (Connection: close),
-- Content-Length or read-to-close bodies. The calling task waits; its
-- deadline closes the socket (luv handles opened in a scope are closed
-- when it expires). Errors carry a class: connection, timeout, http_5xx,
-- rate_limited (with retry_after), invalid_input, auth, not_found.
--
-- A request made under a correlation id (mnemo.correlation: an HTTP
-- request's, an indexed file's, a guarded call's) carries it as
-- X-Request-Id, so the server's logs name the same id, unless the caller
-- sets that header itself; an id that is not safe in a header (anything
-- but A-Z a-z 0-9 . _ : -, or longer than 128) is not sent.
local uv = require "luv"
local core = require "mnemo_core"
local timeout = require "mnemo.timeout"
local errors = require "mnemo.errors"
local correlation = require "mnemo.correlation"

local _M = {}

local function parse_url(url)
  local scheme, host, port, path = url:match("^(https?)://([^:/]+):?(%d*)(.*)$")
  if not scheme then
    return nil, "not an http:// URL: " .. tostring(url)
  end
  if scheme == "https" then
    return nil, "https is not supported (use a local http endpoint or a TLS proxy)"
  end
  return { host = host, port = tonumber(port) or 80, path = path ~= "" and path or "/" }
end
_M.parse_url = parse_url

local function parse_response(raw)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then
    return nil
  end
  local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    headers[k:lower()] = v
  end
  local len = tonumber(headers["content-length"])
  if len and #body < len then
    return nil -- not all there yet
  end
  return { status = status, headers = headers, body = len and body:sub(1, len) or body }
end

-- request{ url = ..., method = "POST", headers = {...}, body = "..." }
-- -> response {status, headers, body} | nil, err  (inside a task)
function _M.request(req)
  local u, uerr = parse_url(req.url)
  if not u then
    return nil, errors.new("invalid_input", uerr)
  end
  local body = req.body or ""
  local lines = { ("%s %s HTTP/1.1"):format(req.method or "GET", u.path), "Host: " .. u.host,
    "Connection: close", "Content-Length: " .. #body }
  local own_id = false
  for k, v in pairs(req.headers or {}) do
    lines[#lines + 1] = k .. ": " .. v
    if type(k) == "string" and k:lower() == "x-request-id" then
      own_id = true
    end
  end
  local id = not own_id and correlation.current()
  if id and #id <= 128 and id:find("^[A-Za-z0-9._:%-]+$") then
    lines[#lines + 1] = "X-Request-Id: " .. id
  end
  local wire = table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
  local tcp = uv.new_tcp()
  local chunks = {}
  local ok, raw, cerr = pcall(timeout.await, function(wake)
    tcp:connect(u.host, u.port, function(cerr)
      if cerr then
        return wake(nil, cerr)
      end
      tcp:write(wire)
      tcp:read_start(function(rerr, data)
        if rerr then
          return wake(nil, rerr)
        end
        if data then
          chunks[#chunks + 1] = data
        else
          wake(table.concat(chunks))
        end
      end)
    end)
  end)
  if not tcp:is_closing() then
    tcp:close()
  end
  if not ok then
    error(raw, 0) -- the task's deadline: not ours to handle
  end
  if not raw then
    local kind = errors.classify(tostring(cerr))
    return nil, errors.new(kind ~= "unknown" and kind or "connection", "HTTP " .. req.url .. ": " .. tostring(cerr))
  end
  local resp = parse_response(raw)
  if not resp or not resp.status then
    return nil, errors.new("connection", "HTTP " .. req.url .. ": connection closed before a full response")
  end
  if resp.status >= 400 then
    local kind = core.class_from_http_status(resp.status)
    return nil, errors.new(kind, ("HTTP %s: status %d"):format(req.url, resp.status), {
      status = resp.status, retry_after = tonumber(resp.headers["retry-after"]), body = resp.body:sub(1, 200) })
  end
  return resp
end

return _M
