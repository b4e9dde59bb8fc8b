-- Timeouts per repository and per path: the policy's `repositories` and
-- `paths` sections, for the known slow corners of a codebase (a vendored
-- tree, generated parsers, one huge repository).
--
--   repositories = { [name] = { timeouts = { parse = 20 } } },
--   paths = { { glob = "vendor/**", timeouts = { parse = 30 } },
--             { glob = "**/*.min.js", repository = "web", timeouts = { index_file = 60 } } }
--
--   overrides.configure(policy)            (mnemo.configure does it)
--   overrides.for_file(repository, path) -> timeouts, rules | nil
--       timeouts: name -> seconds, for the guard's opts.timeouts
--       rules: which entries applied, in order ("repositories.web",
--       "paths[2] **/*.min.js")
--   overrides.match(glob, path) -> boolean
--   overrides.check(ck, c)                  validation (mnemo.config)
--
-- Rules:
-- - The names are the `timeouts` section's: an operation whose timeout is
--   that name gets the override; one with a number of its own does not.
-- - Precedence: the policy's timeouts, then the repository's, then every
--   matching `paths` entry in order (a later one wins, as in
--   .gitattributes).
-- - Globs are matched against the path relative to the repository root,
--   '/'-separated: `*` and `?` stay within one segment, `**` spans any
--   number of them (also none: `**/x` matches `x`). The matcher is a
--   bounded dynamic program, not a pattern translation: a hostile glob
--   cannot backtrack exponentially.
local type, ipairs, pairs, next, format, byte, tostring = type, ipairs, pairs, next, string.format, string.byte, tostring

local _M = {}

_M.MAX_GLOB = 256
_M.MAX_RULES = 1000

local STAR, QUESTION = byte("*"), byte("?")

-- One segment against a glob segment with `*` and `?`: the classic greedy
-- match that backs up to the last star, O(#seg * #glob) at worst.
local function segment_match(g, s)
  local gi, si, ng, ns = 1, 1, #g, #s
  local star_g, star_s = nil, 0
  while si <= ns do
    local gc = byte(g, gi)
    if gi <= ng and (gc == QUESTION or (gc ~= STAR and gc == byte(s, si))) then
      gi, si = gi + 1, si + 1
    elseif gi <= ng and gc == STAR then
      star_g, star_s = gi, si
      gi = gi + 1
    elseif star_g then
      gi, star_s = star_g + 1, star_s + 1
      si = star_s
    else
      return false
    end
  end
  while gi <= ng and byte(g, gi) == STAR do
    gi = gi + 1
  end
  return gi > ng
end

local function split(text)
  local out = {}
  for part in (text .. "/"):gmatch("([^/]*)/") do
    out[#out + 1] = part
  end
  return out
end

local compiled = setmetatable({}, { __mode = "k" })

-- Segments of the glob against segments of the path, `**` spanning any
-- number: a table of (glob segment, path segment) reachability, filled
-- row by row: O(#glob segments * #path segments) segment matches.
function _M.match(glob, path)
  local gs = compiled[glob]
  if not gs then
    gs = split(glob)
    compiled[glob] = gs
  end
  local ps = split(path)
  local ng, np = #gs, #ps
  -- reach[j]: path segments 1..j matched by the glob segments so far
  local reach = { [0] = true }
  for i = 1, ng do
    local g = gs[i]
    local nxt = {}
    if g == "**" then
      local any = false
      for j = 0, np do
        any = any or reach[j] == true
        nxt[j] = any
      end
    else
      nxt[0] = false
      for j = 1, np do
        nxt[j] = reach[j - 1] == true and segment_match(g, ps[j])
      end
    end
    reach = nxt
  end
  return reach[np] == true
end

-- ---- the rules in force ----

local by_repository = {} -- name -> timeouts
local path_rules = {}    -- { glob, repository, timeouts, label }

function _M.configure(c)
  local repos, rules = {}, {}
  for name, r in pairs(c and c.repositories or {}) do
    repos[name] = r.timeouts or {}
  end
  for i, r in ipairs(c and c.paths or {}) do
    rules[i] = { glob = r.glob, repository = r.repository, timeouts = r.timeouts or {},
      label = format("paths[%d] %s", i, r.glob) }
  end
  by_repository, path_rules = repos, rules
end

function _M.active()
  return next(by_repository) ~= nil or #path_rules > 0
end

function _M.for_file(repository, path)
  local out, rules
  local r = repository and by_repository[repository]
  if r and next(r) then
    out, rules = {}, { "repositories." .. repository }
    for k, v in pairs(r) do
      out[k] = v
    end
  end
  for _, rule in ipairs(path_rules) do
    if (rule.repository == nil or rule.repository == repository) and path and _M.match(rule.glob, path) then
      out, rules = out or {}, rules or {}
      for k, v in pairs(rule.timeouts) do
        out[k] = v
      end
      rules[#rules + 1] = rule.label
    end
  end
  return out, rules
end

-- ---- validation (called by mnemo.config with its checker) ----

local function check_timeouts(ck, t, path, known)
  if not ck:table(t, path) then
    return
  end
  for name, v in pairs(t) do
    local p = path .. "." .. tostring(name)
    if type(name) ~= "string" or not known[name] then
      ck.problems[#ck.problems + 1] = format("%s: expected a name in timeouts, got %s", p,
        type(name) == "string" and format("%q", name) or tostring(name))
    elseif not (type(v) == "number" and v > 0 and v < math.huge) then
      ck:problem(p, "a number of seconds > 0", v)
    end
  end
end

function _M.check(ck, c, known)
  if c.repositories ~= nil and ck:table(c.repositories, "repositories") then
    for name, r in pairs(c.repositories) do
      ck:name("repositories", name)
      local p = "repositories." .. tostring(name)
      if ck:table(r, p) then
        ck:keys(r, p, { timeouts = true })
        if r.timeouts ~= nil then
          check_timeouts(ck, r.timeouts, p .. ".timeouts", known)
        end
      end
    end
  end
  if c.paths ~= nil and ck:table(c.paths, "paths") then
    local n = 0
    for k in pairs(c.paths) do
      n = n + 1
      if type(k) ~= "number" or k < 1 or k % 1 ~= 0 or k > #c.paths then
        ck.problems[#ck.problems + 1] = "paths: expected a list of rules { glob = ..., timeouts = ... }"
        return
      end
    end
    if n > _M.MAX_RULES then
      ck:problem("paths", format("at most %d rules", _M.MAX_RULES), n .. " rules")
      return
    end
    for i, r in ipairs(c.paths) do
      local p = format("paths[%d]", i)
      if ck:table(r, p) then
        ck:keys(r, p, { glob = true, repository = true, timeouts = true })
        local g = r.glob
        if type(g) ~= "string" or #g == 0 or #g > _M.MAX_GLOB or g:find("%z") then
          ck:problem(p .. ".glob", format("a glob of 1 to %d characters", _M.MAX_GLOB), g)
        end
        if r.repository ~= nil and type(r.repository) ~= "string" then
          ck:problem(p .. ".repository", "a repository name", r.repository)
        end
        if r.timeouts == nil then
          ck:problem(p .. ".timeouts", "a table of timeouts", nil)
        else
          check_timeouts(ck, r.timeouts, p .. ".timeouts", known)
        end
      end
    end
  end
end

return _M
