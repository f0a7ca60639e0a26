-- Specs for rage.log's formats, per-fiber tags and context, and sinks.

local log = require("rage.log")
local json = require("rage.json")

describe("rage.log context", function()
  local lines

  -- Each example runs as its own job, as a request does, so context never carries over.
  local function job(fn)
    return function() rage.spawn(fn):wait() end
  end

  before_each(function()
    lines = {}
    log.level("debug")
    log.sink(function(level, line, record) lines[#lines + 1] = {level = level, line = line, record = record} end)
  end)

  after_each(function()
    log.sink(nil)
    log.format("text")
    log.level("warn")
  end)

  it("adds context fields and tags to this job's lines only", job(function()
    local other = rage.spawn(function()
      rage.sleep(0.01)
      log.info("from the other job")
    end):detach()
    log.context{user_id = 42}
    log.tagged("billing", function() log.info("charged") end)
    log.info("after")
    other:wait()
    assert.equal("[billing] charged user_id=42", lines[1].line)
    assert.equal("after user_id=42", lines[2].line)
    assert.equal(42, lines[1].record.user_id)
    assert.same({"billing"}, lines[1].record.tags)
  end))

  it("lets spawned fibers inherit the context without leaking theirs back", job(function()
    log.context{request = "r1"}
    rage.spawn(function()
      log.context{child = true}
      log.info("in child")
    end):wait()
    log.info("in parent")
    assert.equal("in child child=true request=r1", lines[1].line)
    assert.equal("in parent request=r1", lines[2].line)
  end))

  it("keeps concurrent jobs apart", job(function()
    local a = rage.spawn(function() log.context{job = "a"}; rage.sleep(0.01); log.info("x") end)
    local b = rage.spawn(function() log.context{job = "b"}; rage.sleep(0.005); log.info("y") end)
    a:wait(); b:wait()
    local seen = {}
    for _, l in ipairs(lines) do seen[l.line] = true end
    assert.is_true(seen["x job=a"])
    assert.is_true(seen["y job=b"])
  end))

  it("writes structured events", job(function()
    log.event("warn", "slow query", {ms = 120})
    assert.equal("warn", lines[1].level)
    assert.equal(120, lines[1].record.ms)
    assert.equal("slow query ms=120", lines[1].line)
  end))

  it("removes a tag even when the tagged function fails", job(function()
    assert.has_error(function() log.tagged("t", function() error("boom") end) end)
    log.info("clean")
    assert.equal("clean", lines[1].line)
  end))

  it("validates its arguments", job(function()
    assert.has_error(function() log.format("xml") end)
    assert.has_error(function() log.context("nope") end)
    assert.has_error(function() log.event("loud", "x") end)
  end))
end)

describe("rage.log json format", function()
  it("produces one JSON object per line", function()
    -- Capture through a pipe: run a child rage-lua with the json format and read its stderr.
    local bin = require("spec.support.server").bin()
    local script = os.tmpname() .. ".lua"
    local f = io.open(script, "w")
    f:write('local log = require("rage.log"); log.format("json"); log.context{user = "u1"}; log.warn("hello ", 1)\n')
    f:close()
    local out = io.popen("RAGE_LOG_LEVEL=info " .. bin .. " test " .. script .. " 2>&1 >/dev/null"):read("*a")
    os.remove(script)
    os.remove((script:gsub("%.lua$", "")))
    local line = out:match("(%b{})")
    assert.is_string(line, out)
    local rec = json.decode(line)
    assert.equal("warn", rec.level)
    assert.equal("hello 1", rec.msg)
    assert.equal("u1", rec.user)
    assert.is_string(rec.ts)
  end)
end)
