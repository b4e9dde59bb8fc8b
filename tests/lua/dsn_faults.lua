-- Faults of a database connection for the specs: DSNs whose password
-- libpq cannot use, and a server that never answers.
local uv = require "luv"

local _M = {}

-- DSNs with a password libpq cannot use, of every form; each password
-- starts with "S3c" and ends with "PW9", split where libpq splits it.
_M.BAD_DSNS = {
  "postgresql://mnemo:S3cretPW9@127.0.0.1:99999/mnemo", -- invalid port
  "postgresql://mnemo:S3cretPW9@127.0.0.1:5432/mnemo?bogus=1", -- invalid URI query parameter
  "postgres://mnemo:S3cretPW9@host.invalid/mnemo", -- could not translate host name
  "postgresql://mnemo:S3c/PW9@127.0.0.1/mnemo", -- '/': "S3c" read as the port
  "postgresql://mnemo:S3c@PW9@127.0.0.1/mnemo", -- '@': "PW9@127.0.0.1" read as the host
  "postgresql://mnemo:S3c%zzPW9@127.0.0.1/mnemo", -- invalid percent-encoded token
  "postgresql://mnemo@127.0.0.1/mnemo?password=S3c%zzPW9", -- the same in the query
  "postgresql://mnemo@127.0.0.1/mnemo?password=S3cretPW9&bogus=1",
  "postgresql://mnemo:S3cr%65tPW9@127.0.0.1:abc/mnemo", -- percent-encoded, bad port
  "postgresql://mnemo:S3cretPW9", -- cut short: "S3cretPW9" read as the port
  "postgresql://mnemo:S3cretPW9@[::1/mnemo", -- the whole URI quoted back
  "postgresql://mnemo@127.0.0.1/mnemo?S3cretPW9",
  "host=127.0.0.1 port=abc user=mnemo password=S3cretPW9",
  "host=127.0.0.1 password=S3c PW9 user=mnemo", -- missing "=" after "PW9"
  "host=127.0.0.1 password = S3c PW9=x", -- invalid connection option "PW9"
  "PASSWORD=S3cretPW9 host=127.0.0.1",
  "host=127.0.0.1 password='S3c PW9' junk",
  "host=127.0.0.1 password='S3c PW9", -- unterminated quoted string
  "S3cretPW9",
  "host=127.0.0.1 port=1 password=S3cretPW9", -- refused
  "user=mnemo password=S3cretPW9 sslmode=bogus",
}

-- Fails when text holds any piece of those passwords.
function _M.assert_no_password(text, what)
  for _, piece in ipairs { "S3c", "PW9" } do
    if text:find(piece, 1, true) then
      error(("%s: the password shows (%q) in:\n%s"):format(what or "text", piece, text), 2)
    end
  end
end

-- A TCP server on 127.0.0.1 that accepts every connection and never
-- writes a byte: a database that hangs after the handshake. On the shared
-- loop (luv), so it serves while a spec's task waits, also for a child
-- process. Counts connections accepted and those the client closed.
function _M.black_hole()
  local server = uv.new_tcp()
  assert(server:bind("127.0.0.1", 0))
  local hole = { accepted = 0, closed_by_client = 0, clients = {} }
  assert(server:listen(16, function(err)
    assert(not err, err)
    local client = uv.new_tcp()
    server:accept(client)
    hole.accepted = hole.accepted + 1
    hole.clients[#hole.clients + 1] = client
    client:read_start(function(rerr, data)
      if rerr or not data then -- EOF (or a reset): the client closed its end
        hole.closed_by_client = hole.closed_by_client + 1
        client:read_stop()
      end
    end)
  end))
  hole.port = server:getsockname().port
  function hole.close()
    for _, c in ipairs(hole.clients) do
      if not c:is_closing() then
        c:close()
      end
    end
    server:close()
  end
  return hole
end

return _M
