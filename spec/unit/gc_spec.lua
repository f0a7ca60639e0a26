-- The runtime's collector pause (RAGE_GC_PAUSE in core/src/config.h): Lua's 200%, so that a
-- request's garbage is collected while it is still in the CPU's cache rather than piling up to
-- many times the live heap.

local function pause()
  local p = collectgarbage("setpause", 200)
  collectgarbage("setpause", p)
  return p
end

-- The live heap after two full collections, and the largest heap seen while `n` short-lived
-- tables are made, as requests make them (KiB). Each is kept in a ring of 64 for a while, so
-- that the compiler cannot leave it unallocated.
local function churn(n)
  local ring = {}
  for i = 1, 64 do ring[i] = false end
  collectgarbage()
  collectgarbage()
  local live = collectgarbage("count")
  local peak = live
  for i = 1, n do
    ring[i % 64 + 1] = {i, i}
    if i % 64 == 0 then
      local c = collectgarbage("count")
      if c > peak then peak = c end
    end
  end
  return live, peak
end

describe("the collector's pause", function()
  it("is 200% in the runtime's Lua state", function()
    assert.equal(200, pause())
  end)

  it("keeps the heap within about twice the live heap while garbage is made", function()
    local live, peak = churn(1000000)
    assert.is_true(peak <= live * 3 + 512,
      ("heap reached %d KiB with %d KiB live"):format(peak, live))
  end)

  it("does the same with a large live heap", function()
    local big = {}
    for i = 1, 100000 do big[i] = {i} end   -- ~ 10 MiB live
    local live, peak = churn(1000000)
    assert.is_true(peak <= live * 3 + 512,
      ("heap reached %d KiB with %d KiB live"):format(peak, live))
    assert.equal(100000, #big)
  end)
end)
