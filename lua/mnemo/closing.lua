-- Closing luv handles so that their close callbacks have run before the
-- state closes. luv calls into Lua from a close callback; one still
-- pending at lua_close (an fs_poll's close waits for its stat on the
-- thread pool, so one loop turn is not enough) crashed plain luajit.
--
--   closing.close(handle)   closes it (if not closing already), counted
--   closing.pending()       -> closes whose callback has not run yet
--   closing.drain()         runs the loop until none is pending (mnemo.run
--                           calls it when its task is done)
local uv = require "luv"

local _M = {}

local pending = 0

local function closed()
  pending = pending - 1
end

function _M.close(handle)
  local ok, is_closing = pcall(handle.is_closing, handle)
  if ok and not is_closing then
    pending = pending + 1
    handle:close(closed)
  end
end

function _M.pending()
  return pending
end

function _M.drain()
  while pending > 0 do
    uv.run("once")
  end
end

return _M
