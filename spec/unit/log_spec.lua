-- Specs for rage.log: levels, shared with the core's logger.

local log = require("rage.log")

describe("rage.log", function()
  local saved

  before_each(function() saved = log.level() end)
  after_each(function() log.level(saved) end)

  it("is rage.log", function()
    assert.equal(log, rage.log)
  end)

  it("sets and reports the level by name", function()
    for _, name in ipairs({"debug", "info", "warn", "error"}) do
      assert.equal(name, log.level(name))
      assert.equal(name, log.level())
    end
  end)

  it("enables the chosen level and those above it only", function()
    log.level("warn")
    assert.is_false(log.enabled("debug"))
    assert.is_false(log.enabled("info"))
    assert.is_true(log.enabled("warn"))
    assert.is_true(log.enabled("error"))
  end)

  it("rejects an unknown level at the caller's line", function()
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline + 1
      log.level("loud")
    end)
    assert.is_false(ok)
    assert.matches("log_spec.lua:" .. line .. ": rage.log.level: unknown level 'loud'", err, 1, true)
    assert.equal(saved, log.level())
  end)
end)
