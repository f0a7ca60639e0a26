-- Specs for rage.json: cjson with rage.null and arrays that stay arrays when empty.

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
