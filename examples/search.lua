-- mnemo-run examples/search.lua QUERY [REPOSITORY]
-- Hybrid search: full text on chunk source and name_path, plus vector
-- similarity of the built-in embeddings.
local mnemo = require "mnemo"
local query = assert(arg[1], "usage: mnemo-run examples/search.lua QUERY [REPOSITORY]")
local hits = mnemo.search { query = query, repository = arg[2] or "sample-repo", k = 10 }
print(("mode: %s"):format(hits.mode))
for i, h in ipairs(hits) do
  print(("%2d. %.3f  %s  %s:%d-%d"):format(i, h.score, h.name_path, h.file_path, h.start_line, h.end_line))
end
