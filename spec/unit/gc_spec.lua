-- The runtime's collector pause (core/src/runtime.c, gc_cycle_done): set again at the end of
-- every cycle so that the heap may grow by 8 MiB, at least 300% and at most 1000% of what the
-- cycle left alive.

local function pause()
  local p = collectgarbage("setpause", 300)
  collectgarbage("setpause", p)
  return p
end

-- Two full collections: the first ends the cycle the sentinel was planted in.
local function settle()
  collectgarbage()
  collectgarbage()
  return collectgarbage("count") * 1024
end

local function expected(live)
  local want = math.floor(100 + 8 * 1024 * 1024 / (math.floor(live / 100) + 1))
  return math.max(300, math.min(1000, want))
end

local function assert_pause_for(live)
  local got, want = pause(), expected(live)
  assert.is_true(math.abs(got - want) <= want * 0.05 + 1,
    ("pause %d, expected about %d for %d KiB live"):format(got, want, live / 1024))
end

describe("the collector's pause", function()
  it("is set from the live heap as each cycle ends", function()
    assert_pause_for(settle())
  end)

  it("keeps to 300% while the live heap is large, and follows it when it shrinks", function()
    local big = {}
    for i = 1, 200000 do big[i] = {i} end   -- ~ 12 MiB live
    settle()
    assert.equal(300, pause())
    big = nil
    assert_pause_for(settle())
  end)
end)
