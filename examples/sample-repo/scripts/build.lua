-- Build script of the sample repository.
local M = {}

local function run(cmd)
  return os.execute(cmd)
end

function M.compile(target)
  return run("cc -O2 -c native/" .. target .. ".c")
end

function M:all()
  return M.compile("hash")
end

return M
