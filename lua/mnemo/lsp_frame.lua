-- Incremental decoder / encoder for the LSP base protocol: a header of
-- "Name: value\r\n" lines ended by "\r\n\r\n" (Content-Length required,
-- other headers ignored, names case-insensitive), then a JSON body of
-- exactly Content-Length bytes. Pure Lua, no I/O. Memory is bounded: the
-- decoder never holds more than max_header + max_bytes bytes; a header
-- over max_header, a missing / invalid / oversize length, or a body that
-- is not JSON is an error, after which the decoder stays failed.
local cjson = require "cjson.safe"

local _M = {}

local Decoder = {}
Decoder.__index = Decoder

function _M.new(opts)
  opts = opts or {}
  return setmetatable({
    max_bytes = opts.max_bytes or 16 * 1024 * 1024,
    max_header = opts.max_header or 8 * 1024,
    buf = "",      -- unparsed bytes (header in progress, or body in progress)
    need = nil,    -- body length once the header is parsed
    err = nil,
  }, Decoder)
end

local function fail(self, msg)
  self.err = msg
  self.buf = ""
  return nil, msg
end

local function parse_header(self, header)
  local length
  for line in (header .. "\r\n"):gmatch("(.-)\r\n") do
    if line ~= "" then
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if not name then
        return nil, "malformed header line: " .. line:sub(1, 80)
      end
      if name:lower() == "content-length" then
        if not value:match("^%d+$") then
          return nil, "invalid Content-Length: " .. value:sub(1, 40)
        end
        if #value > 15 or tonumber(value) > self.max_bytes then
          return nil, string.format("Content-Length %s over the %d-byte frame limit", value:sub(1, 40), self.max_bytes)
        end
        length = tonumber(value)
      end
    end
  end
  if not length then
    return nil, "missing Content-Length header"
  end
  return length
end

-- feed(chunk) -> list of decoded messages (possibly empty) | nil, err
function Decoder:feed(chunk)
  if self.err then
    return nil, self.err
  end
  local out = {}
  local buf = self.buf .. (chunk or "")
  while true do
    if not self.need then
      local e = buf:find("\r\n\r\n", 1, true)
      if not e then
        -- A partial terminator may straddle the limit; allow its 3 bytes.
        if #buf > self.max_header + 3 then
          return fail(self, string.format("header longer than %d bytes", self.max_header))
        end
        break
      end
      if e - 1 > self.max_header then
        return fail(self, string.format("header longer than %d bytes", self.max_header))
      end
      local n, err = parse_header(self, buf:sub(1, e - 1))
      if not n then
        return fail(self, err)
      end
      self.need = n
      buf = buf:sub(e + 4)
    end
    if #buf < self.need then
      break
    end
    local body = buf:sub(1, self.need)
    buf = buf:sub(self.need + 1)
    self.need = nil
    local msg, jerr = cjson.decode(body)
    if type(msg) ~= "table" then
      return fail(self, "malformed JSON body: " .. tostring(jerr or "not an object"))
    end
    out[#out + 1] = msg
  end
  self.buf = buf
  return out
end

function Decoder:failed()
  return self.err
end

-- encode(tbl) -> "Content-Length: N\r\n\r\n<json>"
function _M.encode(tbl)
  local body = assert(cjson.encode(tbl))
  return "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

_M.decoder = _M
return _M
