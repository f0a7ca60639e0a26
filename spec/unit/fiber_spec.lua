-- Specs for rage.fiber: rage.sleep and coroutine.* inside fibers. Every spec already runs in a
-- fiber of the real scheduler, so each wait below really suspends and is resumed by the loop.

local fiber = require("rage.fiber")
local errors = require("rage.errors")
local controller = require("rage.controller")
local router = require("rage.router")
local dispatcher = require("rage.dispatcher")
local t = require("rage.test")

local clock = rage.clock

-- Seconds `fn` takes on the high-resolution clock. It starts right after a timer fired, when
-- the loop's cached clock is fresh (see the pending spec below).
local function timed(fn)
  rage.sleep(0.001)
  local t0 = clock()
  fn()
  return clock() - t0
end

local function here()
  return "fiber_spec.lua:" .. debug.getinfo(2, "l").currentline .. ":"
end

describe("rage.fiber", function()

  describe("rage.sleep", function()
    it("waits at least the given time", function()
      local elapsed = timed(function() rage.sleep(0.03) end)
      assert.is_true(elapsed >= 0.029, "slept only " .. elapsed)
      assert.is_true(elapsed < 0.5, "slept " .. elapsed)
    end)

    it("with 0 yields to the loop and comes back", function()
      local elapsed = timed(function()
        for _ = 1, 5 do rage.sleep(0) end
      end)
      assert.is_true(elapsed < 0.1)
    end)

    it("runs waits in sequence in one fiber", function()
      local order = {}
      local elapsed = timed(function()
        rage.sleep(0.01)
        order[#order + 1] = 1
        rage.sleep(0.01)
        order[#order + 1] = 2
      end)
      assert.same({1, 2}, order)
      assert.is_true(elapsed >= 0.019, "slept only " .. elapsed)
    end)

    -- The timer is started against the loop's cached clock, which is not refreshed first: a
    -- fiber that has been busy since the loop last woke up is woken early by that much, or at
    -- once. Pending until the core refreshes the clock before starting a timer.
    it("waits its full time after the fiber has been busy", function()
      rage.sleep(0.001)
      local t0 = clock()
      while clock() - t0 < 0.03 do end
      local t1 = clock()
      rage.sleep(0.02)
      local elapsed = clock() - t1
      assert.is_true(elapsed >= 0.019, "woke after " .. elapsed)
    end)

    it("rejects bad durations at the caller's line", function()
      for _, bad in ipairs({-1, 0 / 0, math.huge, 2e9, "1", {}}) do
        local line
        local ok, err = pcall(function()
          line = here(); rage.sleep(bad)
        end)
        assert.is_false(ok)
        assert.matches(line, err, 1, true)
        assert.matches("rage.sleep: seconds must be a number", err, 1, true)
      end
    end)
  end)

  describe("concurrent fibers", function()
    it("wake in the order of their deadlines, not of their start", function()
      local order = {}
      local elapsed = timed(function()
        local a = rage.spawn(function() rage.sleep(0.03); order[#order + 1] = "a" end)
        local b = rage.spawn(function() rage.sleep(0.01); order[#order + 1] = "b" end)
        local c = rage.spawn(function() rage.sleep(0); order[#order + 1] = "c" end)
        a:wait(); b:wait(); c:wait()
      end)
      assert.same({"c", "b", "a"}, order)
      assert.is_true(elapsed < 0.04 + 0.02, "the sleeps did not overlap: " .. elapsed)
    end)

    it("wake fibers sleeping the same time in the order they fell asleep", function()
      local order, hs = {}, {}
      for i = 1, 50 do
        hs[i] = rage.spawn(function() rage.sleep(0.005); order[#order + 1] = i end)
      end
      for i = 1, 50 do hs[i]:wait() end
      for i = 1, 50 do assert.equal(i, order[i]) end
    end)

    it("leave the rest of a queue asleep when some of its sleepers are cancelled", function()
      local order, hs = {}, {}
      for i = 1, 5 do
        hs[i] = rage.spawn(function() rage.sleep(0.005); order[#order + 1] = i end)
      end
      hs[1]:cancel() -- the oldest, whose wake-up the queue's timer is set for
      hs[3]:cancel()
      hs[5]:cancel() -- the newest
      for _, i in ipairs({2, 4}) do hs[i]:wait() end
      assert.same({2, 4}, order)
      for _, i in ipairs({1, 3, 5}) do assert.equal("cancelled", hs[i]:status()) end
      -- The queue keeps working once emptied by cancellations.
      local again = rage.spawn(function() rage.sleep(0.005); return "woke" end)
      assert.equal("woke", again:wait())
    end)

    it("let a fiber looping on rage.sleep(0) share the loop with the others", function()
      local woke, spins = false, 0
      local sleeper = rage.spawn(function() rage.sleep(0.002); woke = true end)
      local spinner = rage.spawn(function()
        while not woke and spins < 100000 do
          rage.sleep(0)
          spins = spins + 1
        end
      end)
      sleeper:wait(); spinner:wait()
      assert.is_true(woke)
      assert.is_true(spins < 100000, "the spinner held the loop")
    end)

    it("keep working across more distinct durations than queues are kept for", function()
      -- 70 durations make 70 queues; the next 70 close the empty ones before making theirs.
      for round = 0, 1 do
        local order, hs = {}, {}
        for i = 1, 70 do
          hs[i] = rage.spawn(function()
            rage.sleep((round * 70 + i) / 1000); order[#order + 1] = i
          end)
        end
        for i = 1, 70 do hs[i]:wait() end
        for i = 1, 70 do assert.equal(i, order[i]) end
      end
    end)
  end)

  describe("pcall across waits", function()
    it("returns the results of a function that waited", function()
      assert.same({true, 1, 2}, {pcall(function() rage.sleep(0.001); return 1, 2 end)})
    end)

    it("catches an error raised after a wait", function()
      local ok, err = pcall(function()
        rage.sleep(0.001)
        error("after the wait")
      end)
      assert.is_false(ok)
      assert.matches("after the wait", err)
    end)

    it("catches error objects and keeps their fields", function()
      local ok, err = pcall(function()
        rage.sleep(0)
        rage.error("db.timeout", "slow", {ms = 5})
      end)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "db"))
      assert.equal(5, err.ms)
    end)

    it("nests, and xpcall's handler sees the stack of the failed wait", function()
      local ok, tb = xpcall(function()
        local inner_ok = pcall(function() rage.sleep(0); error("inner") end)
        assert.is_false(inner_ok)
        rage.sleep(0)
        error("outer")
      end, debug.traceback)
      assert.is_false(ok)
      assert.matches("outer", tb)
      assert.matches("fiber_spec.lua", tb)
    end)
  end)

  describe("user coroutines", function()
    it("resume across waits, passing values both ways", function()
      local co = coroutine.create(function(a)
        rage.sleep(0.001)
        local b = coroutine.yield(a + 1)
        rage.sleep(0)
        local c = coroutine.yield(b * 2)
        rage.sleep(0.001)
        return "done", c
      end)
      assert.same({true, 2}, {coroutine.resume(co, 1)})
      assert.equal("suspended", coroutine.status(co))
      assert.same({true, 20}, {coroutine.resume(co, 10)})
      assert.same({true, "done", "x"}, {coroutine.resume(co, "x")})
      assert.equal("dead", coroutine.status(co))
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("dead coroutine", err)
    end)

    it("see themselves as running while their wait is pending", function()
      local co
      co = coroutine.create(function()
        rage.sleep(0.001)
        return coroutine.running() == co, coroutine.status(co)
      end)
      assert.same({true, true, "running"}, {coroutine.resume(co)})
    end)

    it("suspend the whole fiber while they wait", function()
      local order = {}
      local co = coroutine.create(function()
        order[#order + 1] = "before"
        rage.sleep(0.01)
        order[#order + 1] = "after"
      end)
      local elapsed = timed(function() coroutine.resume(co) end)
      order[#order + 1] = "resume returned"
      assert.same({"before", "after", "resume returned"}, order)
      assert.is_true(elapsed >= 0.009)
    end)

    it("work as generators through coroutine.wrap", function()
      local gen = coroutine.wrap(function(n)
        for i = 1, n do
          rage.sleep(0)
          coroutine.yield(i)
        end
      end)
      local got = {gen(3), gen(), gen()}
      assert.same({1, 2, 3}, got)
    end)

    it("nest, with waits at every level", function()
      local outer = coroutine.wrap(function()
        local inner = coroutine.wrap(function()
          rage.sleep(0.001)
          coroutine.yield("inner 1")
          rage.sleep(0.001)
          coroutine.yield("inner 2")
        end)
        coroutine.yield(inner())
        rage.sleep(0)
        coroutine.yield(inner())
        coroutine.yield("outer")
      end)
      assert.same({"inner 1", "inner 2", "outer"}, {outer(), outer(), outer()})
    end)

    it("report an error raised after a wait through resume", function()
      local co = coroutine.create(function()
        rage.sleep(0)
        error("inside")
      end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("inside", err)
    end)

    it("propagate an error raised after a wait through wrap", function()
      local f = coroutine.wrap(function()
        rage.sleep(0)
        rage.error("x.y", "from the coroutine")
      end)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.is_true(errors.is(err, "x.y"))
    end)

    it("can be abandoned while suspended without harm", function()
      local co = coroutine.create(function()
        rage.sleep(0)
        coroutine.yield(1)
        error("never reached")
      end)
      assert.same({true, 1}, {coroutine.resume(co)})
      co = nil   -- luacheck: ignore
      collectgarbage()
      rage.sleep(0)
    end)
  end)

  describe("check", function()
    it("passes results through", function()
      assert.same({1, "a"}, {fiber.check(1, "a")})
      assert.same({false}, {fiber.check(false)})
    end)

    it("raises the error a failed wait returned", function()
      local ok, err = pcall(fiber.check, nil, "http.timeout", "no answer")
      assert.is_false(ok)
      assert.equal("http.timeout", err.kind)
      assert.equal("no answer", err.message)
    end)
  end)

  describe("cancellation", function()
    local log = require("rage.log")
    local saved_error, saved_level

    before_each(function()
      saved_error, saved_level = log.error, log.level()
      log.error = function() end
      log.level("warn")
      controller.reset()
    end)

    after_each(function()
      log.error = saved_error
      log.level(saved_level)
      controller.reset()
    end)

    -- A request object that records whether the dispatcher answered at all.
    local function box()
      return {
        calls = 0,
        header = function() return nil end,
        responded = function(self) return self.calls > 0 end,
        respond = function(self) self.calls = self.calls + 1 end,
      }
    end

    local function app()
      local r = router.new()
      r:draw(function(m)
        m:get("/cancel", "work#cancel")
        m:get("/fail", "work#fail")
      end)
      r:compile()
      dispatcher.prepare(r, controller.registry)
      return {router = r, handler = dispatcher.new({router = r})}
    end

    it("is not caught by rescue_from(\"lua\"), and no response is sent", function()
      local rescued = {}
      local Work = rage.controller("work")
      Work:rescue_from("lua", function(self, err)
        rescued[#rescued + 1] = err
        self:render{plain = "rescued", status = 503}
      end)
      function Work:cancel()
        rage.sleep(0)
        fiber.check(nil, "cancelled", "the request was cancelled")
      end
      function Work:fail()
        rage.sleep(0)
        error("plain failure")
      end

      local a = app()
      local b = box()
      a.handler(b, "GET", "/cancel", nil)
      assert.equal(0, b.calls)
      assert.equal(0, #rescued)

      local res = t.request(a, "GET", "/fail")
      assert.equal(503, res.status)
      assert.equal(1, #rescued)
    end)

    it("unwinds callbacks and around_action to the dispatcher, which logs nothing", function()
      local logged, seen = {}, {}
      log.error = function(...) logged[#logged + 1] = table.concat({...}) end
      local Work = rage.controller("work")
      Work:around_action(function(_, action)
        action()
        seen[#seen + 1] = "around after"
      end)
      Work:after_action(function() seen[#seen + 1] = "after" end)
      function Work:cancel() rage.sleep(0); rage.error("cancelled", "gone") end
      function Work:fail() error("x") end
      local b = box()
      app().handler(b, "GET", "/cancel", nil)
      assert.equal(0, b.calls)
      assert.same({}, seen)
      assert.equal(0, #logged)
    end)
  end)
end)
