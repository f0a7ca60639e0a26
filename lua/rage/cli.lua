-- rage.cli: the commands of the rage-lua executable that are written in Lua. Each runs inside
-- a fiber of a fresh runtime and returns the process exit status.

local core = require("rage.core")

local _M = {}

local function stderr(msg)
  io.stderr:write("rage-lua: ", msg, "\n")
end

-- rage-lua routes DIR
function _M.routes(dir)
  local app = require("rage.app").load(dir)
  io.stdout:write(require("rage.router").format(app.router:routes()), "\n")
  return 0
end

-- rage-lua test [busted arguments...]: runs busted inside the runtime, so specs have the real
-- scheduler (rage.sleep and every other wait work in them).
function _M.test(...)
  local args = {...}
  -- Specs print their own results; request log lines would drown them (RAGE_LOG_LEVEL overrides).
  require("rage.log").level(os.getenv("RAGE_LOG_LEVEL") or "warn")
  _G.arg = {[0] = "rage-lua test"}
  for i, a in ipairs(args) do _G.arg[i] = a end
  local exit_code
  local real_exit = os.exit
  -- busted ends by calling os.exit (or raising, on Lua 5.1); turn both into a return value.
  os.exit = function(code)
    if code == true or code == nil then code = 0 elseif code == false then code = 1 end
    exit_code = code
    error({kind = "exit"}, 0)
  end
  local ok, err = pcall(function()
    local runner = require("busted.runner")
    runner({standalone = false})
  end)
  os.exit = real_exit
  if exit_code == nil then
    if not ok then
      if err ~= nil then stderr(tostring(type(err) == "table" and (err.message or err.kind) or err)) end
      return 1
    end
    return 0
  end
  return exit_code
end

return _M
