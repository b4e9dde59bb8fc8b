-- Severity and category rules of the specification: an embedding failure
-- other than a timeout is CRITICAL, graph operations have their own
-- category, and the cache cascade says once that it dropped to L1.
local mnemo = require "mnemo"
local h = require "helpers"
local tracking = mnemo.tracking

local n = 0
local function uniq(prefix)
  n = n + 1
  return prefix .. n
end

local function queued_for(op)
  local out = {}
  for _, e in ipairs(tracking.queued()) do
    if e.operation == op then
      out[#out + 1] = e
    end
  end
  return out
end

describe("severity and category rules", function()
  local restore
  before_each(function()
    local _
    _, restore = h.capture_log()
  end)
  after_each(function()
    restore()
    mnemo.configure {}
  end)

  it("records an embedding failure other than a timeout as CRITICAL, a timeout as a timeout", function()
    local op = uniq("embed_batch_")
    mnemo.configure { operations = { [op] = { timeout = 0.05 } } }
    mnemo.try(op, function()
      error(mnemo.error("http_5xx", "embedding server: 500"))
    end)
    mnemo.try(op, function()
      error("disk gone", 0)
    end, { fallback = function()
      return "queued"
    end })
    mnemo.run(function()
      mnemo.try(op, function()
        mnemo.sleep(1)
      end)
    end)
    local got = queued_for(op)
    local by_type = {}
    for _, e in ipairs(got) do
      by_type[e.error_type .. "/" .. e.severity] = e.category
    end
    assert.equal("embedding", by_type["Http5xxError/CRITICAL"])
    assert.equal("embedding", by_type["LuaError/CRITICAL"], "CRITICAL with a fallback too")
    assert.equal("timeout", by_type["TimeoutError/ERROR"])
  end)

  it("puts graph operations in the graph category", function()
    local op = uniq("graph_traversal_")
    mnemo.configure { operations = { [op] = { timeout = 1 } } }
    mnemo.try(op, function()
      error(mnemo.error("connection", "refused"))
    end)
    local got = queued_for(op)
    assert.equal(1, #got)
    assert.equal("graph", got[1].category)
  end)

  it("logs cache_cascade_degraded once while Redis fails, and cache_cascade_recovered once when it answers", function()
    local lines, restore_lines = h.capture_log()
    local calls = 0
    -- A Redis client that refuses 50 calls, then answers misses.
    local fake = {
      pipeline = function()
        calls = calls + 1
        if calls <= 50 then
          return nil, mnemo.error("connection", "refused")
        end
        return { mnemo.null or false, -2 }
      end,
    }
    mnemo.configure { operations = { redis_get = { timeout = 1 }, redis_set = { timeout = 1 } } }
    local c = mnemo.cache.cascade { redis = fake }
    for i = 1, 60 do
      c:get("k" .. i)
    end
    restore_lines()
    assert.equal(1, #h.events(lines, "cache_cascade_degraded"))
    assert.equal("l1_only", h.events(lines, "cache_cascade_degraded")[1].mode)
    assert.equal(1, #h.events(lines, "cache_cascade_recovered"))
  end)
end)
