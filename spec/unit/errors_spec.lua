-- Specs for rage.errors: error objects with a stable dotted kind.

local errors = require("rage.errors")

describe("rage.errors", function()

  describe("new", function()
    it("builds an object with kind and message", function()
      local e = errors.new("db.timeout", "the query took too long")
      assert.equal("db.timeout", e.kind)
      assert.equal("the query took too long", e.message)
    end)

    it("uses the kind as the message when none is given", function()
      assert.equal("http.closed", errors.new("http.closed").message)
    end)

    it("keeps extra fields", function()
      local e = errors.new("db.unique_violation", "duplicate key", {sqlstate = "23505", status = 422})
      assert.equal("23505", e.sqlstate)
      assert.equal(422, e.status)
    end)

    it("prints as 'kind: message'", function()
      assert.equal("db.timeout: too slow", tostring(errors.new("db.timeout", "too slow")))
    end)
  end)

  describe("raise", function()
    it("raises the object itself, so pcall gives it back with its fields", function()
      local ok, e = pcall(errors.raise, "payment.declined", "card refused", {code = 51})
      assert.is_false(ok)
      assert.equal("payment.declined", e.kind)
      assert.equal("card refused", e.message)
      assert.equal(51, e.code)
      assert.is_true(errors.is(e))
    end)

    it("rejects a kind that is not a string at the caller's line", function()
      for _, bad in ipairs({404, "", false}) do
        local line
        local ok, err = pcall(function()
          line = debug.getinfo(1, "l").currentline + 1
          rage.error(bad, "not found")
        end)
        assert.is_false(ok)
        assert.is_string(err)
        assert.matches("errors_spec.lua:" .. line .. ": rage.error: the kind must be a non-empty string", err, 1, true)
      end
      assert.matches("errors_spec.lua:%d+: rage.error: the kind", select(2, pcall(function() errors.new(nil) end)))
    end)

    it("is what rage.error is", function()
      assert.equal(errors.raise, rage.error)
      local ok, e = pcall(rage.error, "x.y", "m")
      assert.is_false(ok)
      assert.equal("x.y", e.kind)
    end)
  end)

  describe("is", function()
    local e = errors.new("db.unique_violation", "dup")

    it("matches the exact kind", function()
      assert.is_true(errors.is(e, "db.unique_violation"))
    end)

    it("matches every dotted prefix", function()
      assert.is_true(errors.is(e, "db"))
      assert.is_true(errors.is(errors.new("a.b.c"), "a.b"))
      assert.is_true(errors.is(errors.new("a.b.c"), "a"))
    end)

    it("does not match a prefix that stops inside a segment", function()
      assert.is_false(errors.is(e, "d"))
      assert.is_false(errors.is(e, "db.unique"))
      assert.is_false(errors.is(errors.new("dbx.timeout"), "db"))
    end)

    it("does not match a longer kind or a sibling", function()
      assert.is_false(errors.is(e, "db.unique_violation.extra"))
      assert.is_false(errors.is(e, "db.timeout"))
    end)

    it("without a kind tells whether the value is an error object at all", function()
      assert.is_true(errors.is(e))
      assert.is_false(errors.is("db.timeout: a string"))
      assert.is_false(errors.is({kind = "db.timeout", message = "a look-alike table"}))
      assert.is_false(errors.is(nil))
    end)
  end)

  describe("kind", function()
    it("is the kind of an error object", function()
      assert.equal("db.timeout", errors.kind(errors.new("db.timeout")))
    end)

    it("is 'lua' for strings, look-alike tables and other values", function()
      assert.equal("lua", errors.kind("boom"))
      assert.equal("lua", errors.kind({kind = "db.timeout"}))
      assert.equal("lua", errors.kind(nil))
      local _, err = pcall(function() local t = nil; return t.x end)
      assert.equal("lua", errors.kind(err))
    end)
  end)
end)
