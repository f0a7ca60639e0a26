-- Specs for lua/rage/async.lua: await, await_any, spawn handles, timeouts, cancellation races,
-- fiber-local storage, semaphores and channels, all on the real scheduler.

local async = require("rage.async")
local errors = require("rage.errors")

local function elapsed(f)
  local t0 = rage.clock()
  f()
  return rage.clock() - t0
end

describe("rage.await", function()
  it("runs functions concurrently and returns results in order", function()
    local a, b, c
    local dt = elapsed(function()
      a, b, c = rage.await(
        function() rage.sleep(0.10); return "a" end,
        function() rage.sleep(0.05); return "b" end,
        function() return "c" end)
    end)
    assert.same({"a", "b", "c"}, {a, b, c})
    assert.is_true(dt < 0.18, "took " .. dt)   -- concurrent: about 0.10, not 0.15
  end)

  it("re-raises the first error and cancels the others", function()
    local finished = false
    local ok, err = pcall(rage.await,
      function() rage.sleep(0.2); finished = true end,
      function() rage.sleep(0.01); rage.error("app.failure", "second failed") end)
    assert.is_false(ok)
    assert.equal("app.failure", err.kind)
    rage.sleep(0.25)
    assert.is_false(finished)
  end)

  it("nests", function()
    local x, y = rage.await(
      function() return (rage.await(function() rage.sleep(0.01); return 1 end)) end,
      function() local p, q = rage.await(function() return 2 end, function() return 3 end); return p + q end)
    assert.same({1, 5}, {x, y})
  end)

  it("rejects non-functions at the caller's line", function()
    local ok, err = pcall(rage.await, 42)
    assert.is_false(ok)
    assert.matches("expects functions", err)
  end)
end)

describe("rage.await_any", function()
  it("returns the first success and its position, cancelling the rest", function()
    local slow_done = false
    local v, i = rage.await_any(
      function() rage.sleep(0.2); slow_done = true; return "slow" end,
      function() rage.sleep(0.01); return "fast" end)
    assert.equal("fast", v)
    assert.equal(2, i)
    rage.sleep(0.25)
    assert.is_false(slow_done)
  end)

  it("raises when every function fails", function()
    local ok, err = pcall(rage.await_any,
      function() error("one") end,
      function() rage.sleep(0.01); rage.error("app.two", "two") end)
    assert.is_false(ok)
    assert.equal("app.two", err.kind)
  end)
end)

describe("rage.spawn", function()
  it("gives a handle to wait for results", function()
    local h = rage.spawn(function(a, b) rage.sleep(0.01); return a + b, "x" end, 2, 3)
    assert.equal("running", h:status())
    local s, x = h:wait()
    assert.equal(5, s)
    assert.equal("x", x)
    assert.equal("done", h:status())
    -- waiting again returns the same results at once
    assert.equal(5, (h:wait()))
  end)

  it("runs until the first wait before returning", function()
    local order = {}
    local h = rage.spawn(function() order[#order + 1] = "child"; rage.sleep(0); order[#order + 1] = "child2" end)
    order[#order + 1] = "parent"
    h:wait()
    assert.same({"child", "parent", "child2"}, order)
  end)

  it("cancels a sleeping fiber and releases its timer", function()
    local h = rage.spawn(function() rage.sleep(5) end)
    h:cancel()
    assert.equal("cancelled", h:status())
    local ok, err = pcall(h.wait, h)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "cancelled"))
  end)

  it("propagates a failure to waiters", function()
    local h = rage.spawn(function() rage.sleep(0.01); error("child broke") end)
    local ok, err = pcall(h.wait, h)
    assert.is_false(ok)
    assert.matches("child broke", tostring(err))
    assert.equal("failed", h:status())
  end)

  it("runs 10,000 fibers at once", function()
    local hs = {}
    local dt = elapsed(function()
      for i = 1, 10000 do hs[i] = rage.spawn(function() rage.sleep(0.05); return i end) end
      local sum = 0
      for i = 1, 10000 do sum = sum + hs[i]:wait() end
      assert.equal(10000 * 10001 / 2, sum)
    end)
    assert.is_true(dt < 5, "took " .. dt)
  end)

  it("shares fiber-local values with children", function()
    local l = rage.fiber_local()
    l.request_id = "abc"
    local seen = rage.spawn(function() return rage.fiber_local().request_id end):wait()
    assert.equal("abc", seen)
  end)
end)

describe("rage.timeout", function()
  it("returns results when in time", function()
    assert.equal(7, rage.timeout(0.5, function() rage.sleep(0.01); return 7 end))
  end)

  it("raises timeout and cancels the pending wait", function()
    local after = false
    local ok, err = pcall(rage.timeout, 0.05, function() rage.sleep(1); after = true end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    assert.is_false(after)
    -- the fiber is still usable afterwards
    rage.sleep(0.01)
  end)

  it("a timeout on the very tick of completion resumes the fiber once", function()
    for _ = 1, 20 do
      local ok = pcall(rage.timeout, 0.01, function() rage.sleep(0.01) end)
      -- either outcome is fine; what matters is that nothing resumes the fiber twice
      assert.is_boolean(ok)
      rage.sleep(0.015)
    end
  end)

  it("applies to awaits, cancelling the children", function()
    local finished = false
    local ok, err = pcall(rage.timeout, 0.05, function()
      rage.await(function() rage.sleep(0.5); finished = true end)
    end)
    assert.is_false(ok)
    assert.equal("timeout", err.kind)
    rage.sleep(0.6)
    assert.is_false(finished)
  end)
end)

describe("cancellation races", function()
  it("complete-then-cancel: a woken waiter cancelled before it runs keeps its semaphore permit", function()
    local sem = rage.semaphore(0)
    local h = rage.spawn(function() sem:acquire(); return "got" end)
    sem:release()      -- wakes h (resume queued)
    h:cancel()         -- cancelled before the queued resume runs
    rage.sleep(0)
    assert.equal(1, sem:available())   -- the permit was handed back, not lost
  end)

  it("cancel-then-complete: a cancelled waiter is skipped by release", function()
    local sem = rage.semaphore(0)
    local h1 = rage.spawn(function() sem:acquire() end)
    local h2 = rage.spawn(function() sem:acquire(); return "second" end)
    h1:cancel()
    sem:release()
    assert.equal("second", h2:wait())
    assert.equal(0, sem:available())
  end)
end)

describe("rage.semaphore", function()
  it("bounds concurrency", function()
    local sem = rage.semaphore(2)
    local running, peak = 0, 0
    local fns = {}
    for i = 1, 6 do
      fns[i] = function()
        return sem:with(function()
          running = running + 1
          if running > peak then peak = running end
          rage.sleep(0.01)
          running = running - 1
          return i
        end)
      end
    end
    rage.await(unpack(fns))
    assert.equal(2, peak)
    assert.equal(2, sem:available())
  end)
end)

describe("rage.channel", function()
  it("passes values between producer and consumer with backpressure", function()
    local ch = rage.channel(2)
    local got = {}
    local consumer = rage.spawn(function()
      while true do
        local v = ch:recv()
        if v == nil then return end
        got[#got + 1] = v
        rage.sleep(0.001)
      end
    end)
    for i = 1, 10 do ch:send(i) end
    ch:close()
    consumer:wait()
    assert.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, got)
  end)

  it("unbuffered send meets a receive", function()
    local ch = rage.channel(0)
    local h = rage.spawn(function() return ch:recv() end)
    ch:send("hi")
    assert.equal("hi", h:wait())
  end)

  it("refuses sends after close and drains what is buffered", function()
    local ch = rage.channel(3)
    ch:send(1)
    ch:close()
    assert.equal(1, ch:recv())
    local v, why = ch:recv()
    assert.is_nil(v)
    assert.equal("closed", why)
    local ok, err = pcall(ch.send, ch, 2)
    assert.is_false(ok)
    assert.equal("channel.closed", err.kind)
  end)

  it("a cancelled receiver that was handed a value gives it back", function()
    local ch = rage.channel(0)
    local r1 = rage.spawn(function() return ch:recv() end)
    ch:send("precious")   -- hands the value to r1 (resume queued)
    r1:cancel()           -- r1 is cancelled before it runs
    rage.sleep(0)
    assert.equal(1, ch:size())
    assert.equal("precious", ch:recv())
  end)
end)

describe("user coroutines", function()
  it("compose with scheduler waits and spawned fibers", function()
    local co = coroutine.wrap(function()
      local h = rage.spawn(function() rage.sleep(0.01); return 3 end)
      coroutine.yield(h:wait())
      return "end"
    end)
    assert.equal(3, co())
    assert.equal("end", co())
  end)
end)

describe("request scope", function()
  it("end_scope cancels undetached children, leaves detached ones", function()
    local attached = rage.spawn(function() rage.sleep(1) end)
    local free = rage.spawn(function() rage.sleep(0.05); return "ok" end):detach()
    assert.equal(1, async.detached_count())
    async.end_scope()
    assert.equal("cancelled", attached:status())
    assert.equal("ok", free:wait())
    assert.equal(0, async.detached_count())
  end)
end)
