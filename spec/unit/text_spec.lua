-- Specs for rage.text: trimming that stays linear on hostile input.
local text = require("rage.text")

describe("rage.text", function()
  it("trims both ends or the right end", function()
    assert.equal("a b", text.trim("  \ta b \r\n"))
    assert.equal("", text.trim("   "))
    assert.equal("", text.trim(""))
    assert.equal("  a", text.rtrim("  a \t"))
    assert.equal("", text.rtrim(" "))
  end)

  it("stays fast on a long run of blanks followed by text", function()
    local hostile = "a" .. string.rep(" ", 200000) .. "b"
    local t0 = os.clock()
    text.trim(hostile)
    text.rtrim(hostile)
    assert.is_true(os.clock() - t0 < 0.5)
  end)
end)
