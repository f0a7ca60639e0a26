-- rage.leaf: the core's leaf functions through the FFI, and their fallback for request objects
-- that are not the core's (rage.test's and the unit specs' stand-ins). The core's own request
-- objects are covered end to end (spec/e2e/http_spec.lua, spec/e2e/request_id_spec.lua).

local leaf = require("rage.leaf")
local core = require("rage.core")

describe("rage.leaf", function()
  it("gives the loop time as core.now() does", function()
    local a, b = leaf.now(), core.now()
    assert.is_number(a)
    assert.is_true(math.abs(a - b) < 1)
  end)

  it("names the running fiber with a number, the same for the whole job", function()
    local id = leaf.fiber_id()
    assert.is_number(id)
    assert.is_true(id > 0, "specs run inside a fiber")
    rage.sleep(0.001)
    assert.equal(id, leaf.fiber_id())
    local other = rage.spawn(function() return leaf.fiber_id() end):wait()
    assert.is_number(other)
    assert.not_equal(id, other)
  end)

  it("falls back to the methods of request objects that are not the core's", function()
    local box = {
      header = function(_, name) return name == "x-a" and "1" or nil end,
      responded = function() return true end,
    }
    assert.equal("1", leaf.header(box, "x-a"))
    assert.is_nil(leaf.header(box, "x-b"))
    assert.is_true(leaf.responded(box))
    local sent
    box.respond = function(_, status, headers, body) sent = {status, headers, body} end
    leaf.respond(box, 201, {["x-a"] = "1"}, "made")
    assert.same({201, {["x-a"] = "1"}, "made"}, sent)
    leaf.respond_type(box, 200, "text/plain", "hi")
    assert.same({200, {["content-type"] = "text/plain"}, "hi"}, sent)
    leaf.respond_type(box, 204, nil, nil)
    assert.same({204, {}, ""}, sent)
  end)

  it("finds the bytes JSON escapes and quotes strings as JSON", function()
    local ffi = require("ffi")
    assert.equal(5, tonumber(leaf.json_plain("plain", 5)))
    assert.equal(2, tonumber(leaf.json_plain('ab"c', 4)))
    assert.equal(0, tonumber(leaf.json_plain("\n", 1)))
    local s = 'a"\\/\n\1\127é'
    local out = ffi.new("uint8_t[?]", #s * 6 + 2)
    local n = tonumber(leaf.json_quote(s, #s, out))
    assert.equal('"a\\"\\\\\\/\\n\\u0001\\u007fé"', ffi.string(out, n))
  end)

  it("finds the first byte JSON escapes at every offset of short strings", function()
    -- Lengths around the 4- and 8-byte steps of json_plain, every byte at every offset, alone
    -- and followed by a '"' at the end.
    local char, rep = string.char, string.rep
    local function escaped(c) return c < 32 or c == 34 or c == 47 or c == 92 or c == 127 end
    for len = 1, 20 do
      for at = 1, len do
        for c = 0, 255 do
          local s = rep("a", at - 1) .. char(c) .. rep("b", len - at)
          local want = escaped(c) and at - 1 or len
          local got = tonumber(leaf.json_plain(s, len))
          if got ~= want then error(("json_plain(%q) = %d, not %d"):format(s, got, want)) end
          if at < len then
            s = s:sub(1, -2) .. '"'
            want = escaped(c) and at - 1 or len - 1
            got = tonumber(leaf.json_plain(s, len))
            if got ~= want then error(("json_plain(%q) = %d, not %d"):format(s, got, want)) end
          end
        end
      end
    end
  end)
end)
