-- End to end: 10,000 requests in flight at once on one worker, each waiting 100 ms.
--
--   RAGE_BIN=build/rage-lua RAGE_FLOOD=build/spec/rage-flood build/rage-lua test spec/e2e/concurrency_spec.lua
--
-- rage-flood (spec/support/flood.c) opens all connections first, then sends every request in
-- one burst, so the server holds 10,000 sleeping requests together. Done one after the other
-- they would take 1,000 s; done concurrently they take a little more than 100 ms plus the
-- connection setup. The bound below is a functional property (the requests overlap), not a
-- benchmark.

local server = require("spec.support.server")

local N = 10000
local NOFILE = 20000

-- The hard limit of open files bounds what the flood can use.
local function hard_nofile()
  local out = server.capture("ulimit -Hn")
  if out:match("unlimited") then return math.huge end
  return tonumber(out:match("%d+")) or 0
end

describe("concurrency", function()
  it("answers 10,000 concurrent /sleep?ms=100 requests, all with 200, well under the serial time", function()
    local hard = hard_nofile()
    if hard < N + 200 then
      pending(("the open-files hard limit (%s) is below %d"):format(tostring(hard), N + 200))
      return
    end
    local flood = server.flood_bin()
    assert(io.open(flood, "rb"), "rage-flood not found at " .. flood .. " (set RAGE_FLOOD)"):close()
    local nofile = math.min(NOFILE, hard)
    local srv = assert(server.start{app = "apps/hello", nofile = nofile, workers = 1})
    finally(function() srv:stop() end)

    local function open_fds()
      return tonumber(server.capture("ls /proc/" .. srv.pid .. "/fd | wc -l"):match("%d+"))
    end
    local baseline = open_fds()

    local t0 = server.now()
    local cmd = ("%s --host 127.0.0.1 --port %d --path %s --connections %d --connect-concurrency 500 --timeout 60 2>&1; echo 'exit status '$?")
      :format(server.quote(flood), srv.port, server.quote("/sleep?ms=100"), N)
    local f = assert(io.popen(cmd))
    local out = f:read("*a")
    f:close()
    local elapsed = server.now() - t0

    local ok_n, failed_n = out:match("(%d+) ok, (%d+) failed")
    assert(ok_n, "unexpected rage-flood output: " .. out)
    assert.equal(N, tonumber(ok_n), out)
    assert.equal(0, tonumber(failed_n), out)
    assert.equal("0", out:match("exit status (%d+)"), out)
    -- all requests were open together
    local open_at_once = tonumber(out:match("(%d+) connections open at once"))
    assert.equal(N, open_at_once, out)
    -- serially: N x 100 ms = 1000 s
    assert.is_true(elapsed < 10, ("took %.2f s: %s"):format(elapsed, out))

    -- every connection was closed: the file descriptors are back to the baseline
    local fds
    assert.is_truthy(server.wait_for(function()
      fds = open_fds()
      return fds <= baseline
    end, 5), ("%d open file descriptors after the flood, %d before"):format(fds or -1, baseline))

    -- the server is still healthy and still one process
    assert.is_true(srv:running())
    assert.equal(1, srv:process_count())
    local client = require("spec.support.client")
    local res = assert(client.request(srv.port, "GET", "/json"))
    assert.equal(200, res.status)
    assert.equal('{"message":"Hello, World!"}', res.body)
  end)
end)
