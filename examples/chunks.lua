-- mnemo-run examples/chunks.lua REPOSITORY
-- Lists the stored chunks, one "file_path<TAB>name_path<TAB>start-end" line
-- each, to compare the chunker with another parser.
local mnemo = require "mnemo"
local repository = assert(arg[1], "usage: mnemo-run examples/chunks.lua REPOSITORY")
for _, c in ipairs(mnemo.chunks { repository = repository }) do
  print(("%s\t%s\t%d-%d"):format(c.file_path, c.name_path, c.start_line, c.end_line))
end
