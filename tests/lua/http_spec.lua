-- mnemo.http through a real HTTP client (curl as a child process on the
-- loop, or a raw luv socket): routing, status codes, JSON bodies, errors,
-- handlers as tasks, and `mnemo-run --serve`.
local mnemo = require "mnemo"
local h = require "helpers"
local uv = require "luv"
local cjson = require "cjson"
local http = mnemo.http
local curl, child_env, start_serving = h.curl, h.child_env, h.start_serving

-- Runs fn(server) inside mnemo.run with a server on a free port; the
-- server is closed afterwards whatever happens.
local function with_server(opts, fn)
  opts.addr = opts.addr or "127.0.0.1:0"
  mnemo.run(function()
    local server = assert(http.serve(opts))
    local ok, err = pcall(fn, server)
    server:close()
    if not ok then
      error(err, 0)
    end
  end)
end


local restore_log
local log_lines

describe("mnemo.http", function()
  before_each(function()
    log_lines, restore_log = h.capture_log()
  end)
  after_each(function()
    restore_log()
  end)

  it("answers routes with status codes, JSON and text bodies, and keeps the loop alive until closed", function()
    with_server({ routes = {
      ["GET /json"] = function()
        return 200, { ok = true, n = 3 }
      end,
      ["GET /text"] = function()
        return "plain words"
      end,
      ["GET /created"] = function()
        return 201, "<b>hi</b>", { ["Content-Type"] = "text/html", ["X-Extra"] = 7 }
      end,
      ["GET /csv"] = function()
        return 200, "a,b\n", "text/csv"
      end,
      ["DELETE /nothing"] = function()
      end,
    } }, function(server)
      assert.matches("^http://127%.0%.0%.1:%d+$", server:url())
      assert.is_true(server:port() > 0)
      local r = curl(server:url() .. "/json")
      assert.equal(200, r.status)
      assert.equal("application/json", r.headers["content-type"])
      assert.same({ ok = true, n = 3 }, r.json)
      assert.equal(tostring(#r.body), r.headers["content-length"])
      assert.truthy(r.headers["x-request-id"])

      r = curl(server:url() .. "/text")
      assert.equal(200, r.status)
      assert.equal("text/plain; charset=utf-8", r.headers["content-type"])
      assert.equal("plain words", r.body)

      r = curl(server:url() .. "/created")
      assert.equal(201, r.status)
      assert.equal("text/html", r.headers["content-type"])
      assert.equal("7", r.headers["x-extra"])
      assert.equal("<b>hi</b>", r.body)

      r = curl(server:url() .. "/csv")
      assert.equal("text/csv", r.headers["content-type"])

      r = curl(server:url() .. "/nothing", { "-X", "DELETE" })
      assert.equal(204, r.status)
      assert.is_nil(r.headers["content-length"])
      assert.equal(5, server:stats().requests)
    end)
  end)

  it("gives the handler method, path, decoded query, lower-case headers and body", function()
    local seen
    with_server({ routes = {
      ["POST /echo"] = function(req)
        seen = req
        return { query = req.query, agent = req.headers["x-agent"], body = req.body }
      end,
    } }, function(server)
      local r = curl(server:url() .. "/echo?a=1&b=x%20y+z&a=2&flag&e=%C3%A9", {
        "-H", "X-Agent: Tester", "-H", "X-Request-Id: abc-123", "--data-binary", "payload" })
      assert.equal(200, r.status)
      assert.same({ a = "1", b = "x y z", flag = "", e = "é" }, r.json.query)
      assert.equal("Tester", r.json.agent)
      assert.equal("POST", seen.method)
      assert.equal("/echo", seen.path)
      assert.equal("a=1&b=x%20y+z&a=2&flag&e=%C3%A9", seen.raw_query)
      assert.equal("abc-123", seen.id)
      assert.equal("abc-123", r.headers["x-request-id"])
      assert.equal("POST /echo", seen.route)
    end)
  end)

  it("matches a route with a parameter, percent-decoded, and answers HEAD with the GET route", function()
    local hits = 0
    with_server({ routes = {
      ["POST /v1/breakers/:name/reset"] = function(req)
        return 202, { reset = req.params.name, body = req.body }
      end,
      ["GET /v1/items/:id"] = function(req)
        hits = hits + 1
        return "item " .. req.params.id
      end,
      ["GET /v1/items/special"] = function()
        return "the exact path wins"
      end,
    } }, function(server)
      local r = curl(server:url() .. "/v1/breakers/pg%2Fmain/reset", { "-X", "POST", "-d", "why=test" })
      assert.equal(202, r.status)
      assert.same({ reset = "pg/main", body = "why=test" }, r.json)

      r = curl(server:url() .. "/v1/items/special")
      assert.equal("the exact path wins", r.body)
      r = curl(server:url() .. "/v1/items/42", { "-I" })
      assert.equal(200, r.status)
      assert.equal(tostring(#"item 42"), r.headers["content-length"])
      assert.equal("", r.body)
      assert.equal(1, hits)
    end)
  end)

  it("answers an unknown path with 404 and a known path with the wrong method with 405, in JSON", function()
    with_server({ routes = {
      ["POST /v1/breakers/:name/reset"] = function()
        return 202
      end,
      ["DELETE /v1/breakers/:name/reset"] = function()
        return 202
      end,
    } }, function(server)
      local r = curl(server:url() .. "/nowhere?x=1")
      assert.equal(404, r.status)
      assert.equal("not_found", r.json.error)
      assert.matches("no route for GET /nowhere", r.json.message)

      r = curl(server:url() .. "/v1/breakers/x/reset")
      assert.equal(405, r.status)
      assert.equal("method_not_allowed", r.json.error)
      assert.equal("DELETE, POST", r.headers["allow"])
    end)
  end)

  it("turns a handler error into a 500 without the traceback, and logs it", function()
    with_server({ routes = {
      ["GET /boom"] = function()
        local t = nil
        return t.field -- a bug
      end,
      ["GET /bad-status"] = function()
        return 99, "nope"
      end,
      ["GET /raise-object"] = function()
        error(mnemo.error("connection", "the database is gone"))
      end,
      ["GET /own-length"] = function()
        return 200, "x", { ["Content-Length"] = "5" }
      end,
    } }, function(server)
      local r = curl(server:url() .. "/boom")
      assert.equal(500, r.status)
      assert.equal("internal_error", r.json.error)
      assert.equal("internal server error", r.json.message)
      assert.equal(r.headers["x-request-id"], r.json.request_id)
      assert.is_nil(r.body:find("traceback", 1, true))
      assert.is_nil(r.body:find("http_spec", 1, true))

      assert.equal(500, curl(server:url() .. "/bad-status").status)
      assert.equal(500, curl(server:url() .. "/raise-object").status)
      assert.equal(500, curl(server:url() .. "/own-length").status)

      local events = h.events(log_lines, "http_handler_failed")
      assert.equal(4, #events)
      assert.equal("GET /boom", events[1].route)
      -- The log names the request by its correlation id (the request id).
      assert.equal(r.json.request_id, events[1].correlation_id)
      assert.matches("attempt to index", events[1].error)
      assert.matches("stack traceback", events[1].traceback)
      assert.matches("invalid status 99", events[2].error)
      assert.equal("connection", events[3].error_kind)
      assert.equal("the database is gone", events[3].error)
      assert.matches("invalid response", events[4].error)

      -- the server still serves after all that
      assert.equal(404, curl(server:url() .. "/").status)
    end)
  end)

  it("runs the handler under the request id: echoed, in its errors, its log lines and its child tasks", function()
    mnemo.tracking.reset()
    local seen = {}
    with_server({ routes = {
      ["GET /work"] = function(req)
        seen.id, seen.current = req.id, mnemo.correlation.current()
        mnemo.errors.record { severity = "ERROR", category = "api", message = "work failed" }
        pcall(mnemo.guard, "http_spec_op", function()
          error(mnemo.error("invalid_input", "bad work"))
        end)
        mnemo.log.emit("info", "http_spec_work", {})
        local done = false
        mnemo.spawn(function()
          seen.child = mnemo.correlation.current()
          done = true
        end)
        while not done do
          mnemo.sleep(0.001)
        end
        return "ok"
      end,
    } }, function(server)
      local r = curl(server:url() .. "/work", { "-H", "X-Request-Id: abc" })
      assert.equal(200, r.status)
      assert.equal("abc", r.headers["x-request-id"])
      assert.same({ id = "abc", current = "abc", child = "abc" }, seen)
      assert.equal("abc", h.events(log_lines, "http_spec_work")[1].correlation_id)
      local ids = {}
      for _, e in ipairs(mnemo.tracking.queued()) do
        ids[e.message] = e.correlation_id
      end
      assert.equal("abc", ids["work failed"])
      assert.equal("abc", ids["bad work"])

      -- Without a header: a generated id, echoed, and the handler's too.
      r = curl(server:url() .. "/work")
      assert.matches("^%x+%-%x+$", r.headers["x-request-id"])
      assert.equal(r.headers["x-request-id"], seen.current)
      assert.equal(r.headers["x-request-id"], seen.child)
      -- Outside the request, no id is left behind.
      assert.is_nil(mnemo.correlation.current())
    end)
    mnemo.tracking.reset()
  end)

  it("replaces a hostile X-Request-Id by a generated one", function()
    local seen = {}
    with_server({ routes = {
      ["GET /id"] = function(req)
        seen[#seen + 1] = mnemo.correlation.current()
        return req.id
      end,
    } }, function(server)
      local given = { string.rep("a", 65), 'quote"d', "two words", "<script>", "caf\195\169", "semi;colon",
        "back\\slash" }
      for i, bad_id in ipairs(given) do
        local r = curl(server:url() .. "/id", { "-H", "X-Request-Id: " .. bad_id })
        assert.equal(200, r.status)
        local echoed = r.headers["x-request-id"]
        assert.matches("^%x+%-%x+$", echoed, 1, false, bad_id)
        assert.equal(echoed, r.body)
        assert.equal(echoed, seen[i])
      end
      -- 64 characters of the allowed set are taken as they are.
      local ok_id = string.rep("Az09._:-", 8)
      assert.equal(ok_id, curl(server:url() .. "/id", { "-H", "X-Request-Id: " .. ok_id }).headers["x-request-id"])
      -- A line break cannot come through a client: a raw request with a
      -- folded header line (obs-fold) must not get it echoed either.
      local raw = mnemo.await(function(wake)
        local tcp = uv.new_tcp()
        local got = {}
        tcp:connect("127.0.0.1", server:port(), function(err)
          assert(not err, err)
          tcp:write("GET /id HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\n def\r\nConnection: close\r\n\r\n")
          tcp:read_start(function(_, chunk)
            if chunk then
              got[#got + 1] = chunk
            else
              tcp:close()
              wake(table.concat(got))
            end
          end)
        end)
      end)
      local echoed = raw:match("\r\nX%-Request%-Id: ([^\r\n]*)\r\n")
      if raw:match("^HTTP/1%.1 200") then
        assert.matches("^%x+%-%x+$", echoed)
      else
        assert.matches("^HTTP/1%.1 400", raw) -- or the parser refuses it
      end
      assert.is_nil(raw:find("def", 1, true))
    end)
    -- Each generated id is new.
    local distinct = {}
    for _, id in ipairs(seen) do
      distinct[id] = true
    end
    local n = 0
    for _ in pairs(distinct) do
      n = n + 1
    end
    assert.equal(#seen, n)
  end)

  it("runs each request as its own task: a slow handler does not hold up a fast one", function()
    local order = {}
    with_server({ routes = {
      ["GET /slow"] = function()
        mnemo.sleep(0.4)
        order[#order + 1] = "slow"
        return "slow"
      end,
      ["GET /fast"] = function()
        order[#order + 1] = "fast"
        return "fast"
      end,
    } }, function(server)
      local slow = h.start(curl, server:url() .. "/slow")
      mnemo.sleep(0.05)
      local t0 = mnemo.now()
      local fast = curl(server:url() .. "/fast")
      assert.equal("fast", fast.body)
      assert.is_true(mnemo.now() - t0 < 0.35)
      while not slow.result do
        mnemo.sleep(0.01)
      end
      assert.is_true(slow.result[1], slow.result[2])
      assert.equal("slow", slow.result[2].body)
      assert.same({ "fast", "slow" }, order)
    end)
  end)

  it("answers 504 when a handler overruns handler_timeout, cancelling its wait", function()
    local after_sleep = false
    with_server({ handler_timeout = 0.1, routes = {
      ["GET /stuck"] = function()
        mnemo.sleep(5)
        after_sleep = true
      end,
    } }, function(server)
      local t0 = mnemo.now()
      local r = curl(server:url() .. "/stuck")
      assert.equal(504, r.status)
      assert.equal("timeout", r.json.error)
      assert.is_true(mnemo.now() - t0 < 2)
      assert.is_false(after_sleep)
    end)
  end)

  it("answers a malformed request with a JSON 400 and closes the connection", function()
    with_server({ routes = {} }, function(server)
      local data = mnemo.await(function(wake)
        local tcp = uv.new_tcp()
        local got = {}
        tcp:connect("127.0.0.1", server:port(), function(err)
          assert(not err, err)
          tcp:write("NOT HTTP AT ALL\r\n\r\n")
          tcp:read_start(function(rerr, chunk)
            if chunk then
              got[#got + 1] = chunk
            else
              tcp:close()
              wake(table.concat(got), rerr)
            end
          end)
        end)
      end)
      assert.matches("^HTTP/1%.1 400 Bad Request\r\n", data)
      assert.matches("Connection: close\r\n", data)
      assert.equal("bad_request", cjson.decode(data:match("\r\n\r\n(.*)$")).error)
      assert.equal(1, server:stats().bad_requests)
    end)
  end)

  it("serves the registry, with routes added after it started, and a default /health", function()
    local saved = {}
    for k, v in pairs(http.routes) do
      saved[k] = v
    end
    local ok, err = pcall(with_server, {}, function(server)
      local r = curl(server:url() .. "/health")
      assert.equal(200, r.status)
      assert.equal("healthy", r.json.status)
      assert.equal(404, curl(server:url() .. "/later").status)
      http.route("GET /later", function()
        return "added"
      end)
      assert.equal("added", curl(server:url() .. "/later").body)
    end)
    for k in pairs(http.routes) do
      http.routes[k] = nil
    end
    for k, v in pairs(saved) do
      http.routes[k] = v
    end
    assert(ok, err)
  end)

  it("says why it cannot serve: bad address, port in use, bad routes", function()
    mnemo.run(function()
      local server, err = http.serve{ addr = "example.com:80" }
      assert.is_nil(server)
      assert.equal("invalid_input", err.kind)
      assert.matches("HOST:PORT", err.message)

      local first = assert(http.serve{ addr = "127.0.0.1:0", routes = {} })
      server, err = http.serve{ addr = "127.0.0.1:" .. first:port(), routes = {} }
      first:close()
      assert.is_nil(server)
      assert.equal("EADDRINUSE", err.code)
    end)
    assert.has_error(function()
      http.serve{ routes = { ["/health"] = function() end } }
    end, 'http: route /health: expected "METHOD /path" (e.g. "GET /health", "POST /v1/breakers/:name/reset")')
    assert.has_error(function()
      http.route("GET /x", "not a function")
    end)
  end)

  it("uses $MNEMO_HTTP_ADDR as the default address", function()
    local r = h.mnemo_run({ "-e", [[
      local http = require "mnemo.http"
      local s = assert(http.serve{ routes = {} })
      print(s:url())
      s:close()
    ]] }, { env = child_env({ "MNEMO_HTTP_ADDR=127.0.0.1:0" }) })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^http://127%.0%.0%.1:%d+\n$", r.stdout)
  end)

  it("parses query strings", function()
    assert.same({}, http.parse_query(""))
    assert.same({ q = "a b&c", empty = "", k = "" }, http.parse_query("q=a+b%26c&empty=&k&&=skipped"))
  end)
end)

describe("mnemo-run --serve", function()
  local env = child_env()

  it("serves the default routes while the script runs and after it, until SIGTERM", function()
    local path = h.write_file(h.tmpname(".lua"), [[
      local http = require "mnemo.http"
      http.route("GET /hello", function(req) return { hello = req.query.name } end)
      print("script", arg[0] ~= nil, ...)
    ]])
    local p
    -- a failed assertion before p.stop() must not leave the child serving
    finally(function()
      if p and p.code == nil then
        uv.process_kill(p.handle, "sigkill")
      end
    end)
    mnemo.run(function()
      p = start_serving({ "--serve", "127.0.0.1:0", path, "a", "b" }, env)
      assert(p.url, "no URL on stderr: " .. table.concat(p.err))
      local r = curl(p.url .. "/health")
      assert.equal(200, r.status)
      assert.equal("healthy", r.json.status)
      r = curl(p.url .. "/hello?name=x")
      assert.same({ hello = "x" }, r.json)
      p.stop()
      assert.equal(143, p.code) -- 128 + SIGTERM, as the host reports signals
      assert.equal("script\ttrue\ta\tb\n", p.stdout)
    end)
    os.remove(path)
  end)

  it("serves without a script, and stops on SIGINT", function()
    local p
    finally(function()
      if p and p.code == nil then
        uv.process_kill(p.handle, "sigkill")
      end
    end)
    mnemo.run(function()
      p = start_serving({ "--serve", "127.0.0.1:0" }, env)
      assert(p.url, "no URL on stderr: " .. table.concat(p.err))
      assert.equal(404, curl(p.url .. "/nope").status)
      uv.process_kill(p.handle, "sigint")
      p.wait()
      assert.equal(130, p.code)
    end)
  end)

  it("exits 1 with a message for an address it cannot serve on", function()
    local r = h.mnemo_run({ "--serve", "nowhere", "-e", "print('not reached')" }, { env = env })
    assert.equal(1, r.code)
    assert.matches("mnemo%-run: %-%-serve nowhere: http.serve: cannot listen on nowhere", r.stderr)
    assert.equal("", r.stdout)
  end)

  it("runs -e code with its arguments after starting to serve", function()
    mnemo.run(function()
      local p = start_serving({ "--serve", "127.0.0.1:0", "-e",
        "print(...) require('mnemo.http').main_server:close()", "x", "y" }, env)
      p.wait()
      assert.equal(0, p.code, p.stderr)
      assert.equal("x\ty\n", p.stdout)
      assert.matches("mnemo: serving http://127%.0%.0%.1:%d+", p.stderr)
    end)
  end)
end)
