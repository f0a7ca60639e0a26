-- Specs for rage.json: lua-cjson's output from a Lua encoder, with rage.null, arrays that stay
-- arrays when empty, and integers in full digits.

local json = require("rage.json")
local errors = require("rage.errors")

describe("rage.json", function()

  describe("null", function()
    it("is rage.null", function()
      assert.equal(json.null, rage.null)
    end)

    it("encodes as null and decodes back to rage.null", function()
      assert.equal('{"a":null}', json.encode({a = rage.null}))
      assert.equal("null", json.encode(rage.null))
      local v = json.decode('{"a":null,"b":[1,null]}')
      assert.equal(rage.null, v.a)
      assert.equal(rage.null, v.b[2])
    end)
  end)

  describe("arrays", function()
    it("encodes an unmarked empty table as an object", function()
      assert.equal("{}", json.encode({}))
    end)

    it("encodes a marked empty table as []", function()
      assert.equal("[]", json.encode(json.array()))
      assert.equal('{"items":[]}', json.encode({items = json.array()}))
    end)

    it("marks an existing table and returns it", function()
      local t = {1, 2}
      assert.equal(t, json.array(t))
      assert.is_true(json.is_array(t))
      assert.is_false(json.is_array({}))
      assert.equal("[1,2]", json.encode(t))
    end)

    it("encodes empty arrays nested in arrays and objects", function()
      assert.equal("[[]]", json.encode(json.array({json.array()})))
      assert.equal('{"a":{"b":[[],{}]}}', json.encode({a = {b = json.array({json.array(), {}})}}))
      local deep = json.decode(json.encode({x = {y = {z = json.array()}}, w = json.array({1})}))
      assert.same({x = {y = {z = {}}}, w = {1}}, deep)
    end)

    it("leaves the encoded value untouched", function()
      local inner = json.array()
      local v = {list = inner, other = {}}
      json.encode(v)
      assert.equal(inner, v.list)
      assert.is_true(json.is_array(v.list))
      assert.is_nil(next(v.list))
    end)

    it("keeps a string that merely contains {} as it is", function()
      local v = json.decode(json.encode({s = "{} and []", a = json.array()}))
      assert.equal("{} and []", v.s)
      assert.same({}, v.a)
      assert.equal('["{}",[]]', json.encode(json.array({"{}", json.array()})))
    end)
  end)

  describe("numbers", function()
    it("keeps integers that need more than 14 digits exact", function()
      assert.equal("123456789012345", json.encode(123456789012345))
      assert.equal("9007199254740992", json.encode(2^53))
      assert.equal('{"id":1234567890123456}', json.encode({id = 1234567890123456}))
      assert.equal('[-9007199254740992,1152921504606846976]', json.encode({-2^53, 2^60}))
    end)

    it("still writes small integers and fractions as cjson does", function()
      assert.equal("[1,-2,0.5,100000000000000]", json.encode({1, -2, 0.5, 1e14}))
    end)
  end)

  describe("encode, compared with lua-cjson", function()
    local cjson = require("cjson")
    cjson.encode_sparse_array(true)   -- sparse arrays become objects instead of errors

    -- Random values of every shape lua-cjson writes the same way rage.json does (no numbers of
    -- 1e14 and over, no marked empty arrays).
    local function random_string(rand)
      local n, bytes = rand(0, 12), {}
      for i = 1, n do
        local r = rand(1, 6)
        bytes[i] = r == 1 and rand(0, 255) or r == 2 and ("/\\\"\127\n"):byte(rand(1, 5)) or rand(97, 122)
      end
      return string.char(unpack(bytes))
    end

    local function random_number(rand)
      local r = rand(1, 6)
      if r == 1 then return rand(-1000, 1000) end
      if r == 2 then return rand(-1e9, 1e9) / (2 * rand(1, 500) + 1) end   -- see the next spec
      if r == 3 then return (rand() - 0.5) * 10 ^ rand(-20, 13) end
      if r == 4 then return rand(0, 99999999) * 1e5 + rand(0, 99999) end   -- up to 14 digits
      if r == 5 then return -0.0 end
      return rand(1, 3) / 7
    end

    local function random_value(rand, depth)
      local r = rand(1, depth > 3 and 5 or 9)
      if r == 1 then return random_string(rand) end
      if r == 2 then return random_number(rand) end
      if r == 3 then return rand(0, 1) == 1 end
      if r == 4 then return rage.null end
      if r == 5 then return random_string(rand) end
      local t = {}
      if r == 6 then           -- an object
        for _ = 1, rand(0, 6) do t[random_string(rand)] = random_value(rand, depth + 1) end
      elseif r == 7 then       -- an array, sometimes with holes
        for i = 1, rand(0, 8) do
          if rand(1, 5) > 1 then t[i] = random_value(rand, depth + 1) end
        end
      elseif r == 8 then       -- integer keys, sparse or not
        for _ = 1, rand(1, 5) do t[rand(1, 40)] = random_value(rand, depth + 1) end
      else                     -- mixed keys
        for i = 1, rand(1, 3) do t[i] = random_value(rand, depth + 1) end
        t[random_number(rand)] = random_value(rand, depth + 1)
        t[random_string(rand) .. "k"] = random_value(rand, depth + 1)
      end
      return t
    end

    it("writes the same bytes for 5,000 random values", function()
      local seed = 20261124
      local rand = math.random
      math.randomseed(seed)
      for i = 1, 5000 do
        local v = random_value(rand, 0)
        local expected = cjson.encode(v)
        local got = json.encode(v)
        if got ~= expected then
          error(("value %d (seed %d): rage.json wrote %q, lua-cjson %q"):format(i, seed, got, expected))
        end
      end
    end)

    it("rounds a number exactly halfway at the 14th digit as tostring does", function()
      -- -223718.142578125 is exact in binary: C's printf rounds it to even (...12), LuaJIT's
      -- tostring, which rage.json writes numbers with, away from zero (...13).
      assert.equal(tostring(-223718.142578125), json.encode(-223718.142578125))
      assert.equal("-223718.14257813", json.encode(-223718.142578125))
    end)

    it("escapes every byte as lua-cjson does", function()
      local all = {}
      for c = 0, 255 do all[#all + 1] = string.char(c) end
      local s = table.concat(all)
      assert.equal(cjson.encode(s), json.encode(s))
      assert.equal(cjson.encode({[s] = s}), json.encode({[s] = s}))
      assert.equal('"a\\/b"', json.encode("a/b"))
    end)

    it("gives the same errors", function()
      for _, v in ipairs({{[true] = 1}, {f = print}, {0 / 0}, {n = -math.huge}, {[math.huge] = 1}}) do
        local _, expected = pcall(cjson.encode, v)
        local ok, err = pcall(json.encode, v)
        assert.is_false(ok)
        assert.equal(expected, err.message)
      end
      local t = {}
      t.t = t
      local _, expected = pcall(cjson.encode, t)
      local _, err = pcall(json.encode, t)
      assert.equal(expected, err.message)
    end)

    it("is usable again after an error", function()
      pcall(json.encode, {a = "x", b = print})
      assert.equal('{"a":1}', json.encode({a = 1}))
    end)

    it("encodes large values", function()
      local rows = json.array()
      for i = 1, 5000 do rows[i] = {id = i, title = ("item %d"):format(i), price = i / 4} end
      assert.same(cjson.decode(cjson.encode(rows)), json.decode(json.encode(rows)))
      assert.equal(cjson.encode(rows), json.encode(rows))
    end)
  end)

  describe("encode errors", function()
    local function encode_error(v)
      local ok, err = pcall(json.encode, v)
      assert.is_false(ok)
      return err
    end

    it("raise a json.encode error object for functions", function()
      local err = encode_error({f = function() end})
      assert.is_true(errors.is(err, "json.encode"))
      assert.matches("function", err.message)
    end)

    it("raise json.encode for cycles", function()
      local t = {}
      t.self = t
      assert.is_true(errors.is(encode_error(t), "json.encode"))
    end)

    it("raise json.encode for NaN and infinity", function()
      assert.is_true(errors.is(encode_error({n = 0 / 0}), "json.encode"))
      assert.is_true(errors.is(encode_error({math.huge}), "json.encode"))
    end)

    it("raise json.encode for userdata and coroutines", function()
      assert.is_true(errors.is(encode_error({co = coroutine.create(print)}), "json.encode"))
    end)
  end)

  describe("decode", function()
    it("decodes objects, arrays, strings and numbers", function()
      assert.same({a = {1, 2, {b = "c"}}, d = true, e = 1.5}, json.decode('{"a":[1,2,{"b":"c"}],"d":true,"e":1.5}'))
      assert.equal("x\ny", json.decode('"x\\ny"'))
      assert.equal(42, json.decode("42"))
    end)

    it("returns nil and a message for invalid JSON instead of raising", function()
      for _, text in ipairs({"", "{", "{a:1}", "[1,]", "nul", "{\"a\":1}x"}) do
        local v, err = json.decode(text)
        assert.is_nil(v, text)
        assert.is_string(err, text)
      end
    end)
  end)
end)
