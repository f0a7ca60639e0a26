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

-- rage-lua test [APP_DIR | busted arguments...]: runs busted inside the runtime, so specs have
-- the real scheduler (rage.sleep and every other wait work in them). Given an app directory, runs
-- that app's spec/ from inside it (rage.test.app() then loads it).
function _M.test(...)
  local args = {...}
  local first = args[1]
  if first and first:sub(1, 1) ~= "-" and core.stat(first) == "directory" and core.stat(first .. "/config/routes.lua") then
    local dir = core.realpath(first)
    args = {"-C", dir, select(2, ...)}
    if #args == 2 then args[3] = "spec" end
    require("rage.test").root = dir
  end
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

-- ---- rage-lua db create|migrate|rollback|status DIR ------------------------------------------

local function database_url(app)
  local url = os.getenv("DATABASE_URL")
  local c = app.config.database
  if (not url or url == "") and type(c) == "table" then url = c.url end
  if (not url or url == "") and type(c) == "string" then url = c end
  return url
end

-- rage-lua db COMMAND DIR [STEPS]: the app's database and db/migrations/*.sql.
function _M.db(command, dir, steps)
  local usage = "usage: rage-lua db create|migrate|rollback|status DIR [STEPS]"
  if not command or not dir then
    stderr(usage)
    return 1
  end
  local rage = require("rage")
  local app = require("rage.app").load(dir)
  rage.app = app
  local db = rage.db
  local migrations = app.dir .. "/db/migrations"
  if command == "create" then
    local url = database_url(app)
    if not url then
      stderr("no database configured: set DATABASE_URL or `database = {url = ...}` in config/application.lua")
      return 1
    end
    local base, name, rest = url:match("^(postgres[%w]*://[^/]*)/([^?]+)(.*)$")
    if not name then
      stderr("DATABASE_URL must name a database: postgres://user@host:port/NAME")
      return 1
    end
    local admin = db.new({url = base .. "/postgres" .. rest, pool = 1})
    local exists = admin:query_one("SELECT 1 AS x FROM pg_database WHERE datname = $1", name)
    if exists then
      io.stdout:write("database ", name, " already exists\n")
    else
      admin:exec('CREATE DATABASE "' .. name:gsub('"', '""') .. '"')
      io.stdout:write("created database ", name, "\n")
    end
    admin:close()
    return 0
  elseif command == "migrate" then
    local done = db.migrate(migrations)
    if #done == 0 then io.stdout:write("no pending migrations\n") end
    for _, v in ipairs(done) do io.stdout:write("migrated ", v, "\n") end
    return 0
  elseif command == "rollback" then
    local n = tonumber(steps or "1")
    if not n or n < 1 then
      stderr("STEPS must be a positive number")
      return 1
    end
    local done = db.rollback(migrations, n)
    if #done == 0 then io.stdout:write("nothing to roll back\n") end
    for _, v in ipairs(done) do io.stdout:write("rolled back ", v, "\n") end
    return 0
  elseif command == "status" then
    io.stdout:write(string.format("%-8s %-28s %s\n", "status", "version", "file"))
    for _, m in ipairs(db.migration_status(migrations)) do
      io.stdout:write(string.format("%-8s %-28s %s\n", m.applied and "up" or "down", m.version,
        m.file and "" or "(no file)"))
    end
    return 0
  end
  stderr(usage)
  return 1
end

-- ---- rage-lua console DIR --------------------------------------------------------------------

local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" or depth > 3 then return tostring(v) end
  local json = require("rage.json")
  local ok, s = pcall(json.encode, v)
  if ok then return s end
  return tostring(v)
end

-- A REPL inside the runtime: each line runs in a fiber, so rage.sleep, rage.await and (later)
-- queries work. The app is loaded first and available as rage.app. Input is read with a blocking
-- read, so fibers spawned in the background only progress while a line runs.
function _M.console(dir)
  local app = require("rage.app").load(dir)
  local rage = require("rage")
  rage.app = app
  io.stdout:write("rage-lua ", core.version, " console (", app.env, ") - ", app.dir, "\n",
    "rage.app holds the app; Ctrl-D quits.\n")
  local buffer = ""
  while true do
    io.stdout:write(buffer == "" and "rage> " or "  ... ")
    io.stdout:flush()
    local line = io.read("*l")
    if line == nil then
      io.stdout:write("\n")
      return 0
    end
    buffer = buffer == "" and line or (buffer .. "\n" .. line)
    local chunk, err = loadstring("return " .. buffer, "=console")
    if not chunk then chunk, err = loadstring(buffer, "=console") end
    if not chunk and err and err:find("<eof>", 1, true) then
      -- an unfinished statement: keep reading
    else
      buffer = ""
      if not chunk then
        io.stdout:write(err, "\n")
      else
        local res = {pcall(chunk)}
        if not res[1] then
          local e = res[2]
          io.stdout:write("error: ", type(e) == "table" and tostring(e.kind) .. ": " .. tostring(e.message) or tostring(e), "\n")
        else
          for i = 2, #res do io.stdout:write(show(res[i]), i < #res and "\t" or "\n") end
        end
      end
    end
  end
end

-- ---- rage-lua new NAME ------------------------------------------------------------------------

local TEMPLATE = {
  ["config/application.lua"] = [[
-- Settings for %NAME%. config/environments/<env>.lua overrides them per environment.
return {
  log = {level = "info"},
  server = {
    max_body = 1024 * 1024,   -- bytes
  },
}
]],
  ["config/environments/development.lua"] = "return {}\n",
  ["config/environments/test.lua"] = "return {log = {level = \"warn\"}}\n",
  ["config/environments/production.lua"] = "return {log = {level = \"warn\"}}\n",
  ["config/routes.lua"] = [[
return function(r)
  r:root("welcome#index")
  r:get("/hello/:name", "welcome#hello")
end
]],
  ["app/controllers/application.lua"] = [[
-- Every controller inherits from this one: shared callbacks and error handling go here.
local Application = rage.controller("application")

return Application
]],
  ["app/controllers/welcome.lua"] = [[
local Welcome = rage.controller("welcome")

function Welcome:index()
  self:render{json = {app = "%NAME%", message = "Welcome to rage-lua!"}}
end

function Welcome:hello()
  self:render{json = {greeting = "Hello, " .. self.params.name .. "!"}}
end

return Welcome
]],
  ["spec/welcome_spec.lua"] = [[
local t = require("rage.test")

describe("welcome", function()
  local app = t.app()

  it("answers on /", function()
    local res = t.request(app, "GET", "/")
    assert.equal(200, res.status)
    assert.equal("%NAME%", res:json().app)
  end)

  it("greets by name", function()
    local res = t.request(app, "GET", "/hello/lua")
    assert.equal("Hello, lua!", res:json().greeting)
  end)
end)
]],
  ["public/robots.txt"] = "User-agent: *\nDisallow:\n",
  [".gitignore"] = "/tmp/\n/log/\n",
  ["README.md"] = [[
# %NAME%

A rage-lua app.

    rage-lua run .          # http://127.0.0.1:3000
    rage-lua test .         # the specs in spec/
    rage-lua routes .       # the routes
    rage-lua console .      # a Lua console with the app loaded
]],
}

-- rage-lua new NAME: a new app that runs and whose specs pass.
function _M.new(name)
  if not name or name == "" then
    stderr("usage: rage-lua new NAME")
    return 1
  end
  if not name:match("^[%w_%-%.%/]+$") then
    stderr("the app name may contain letters, digits, '_', '-', '.' and '/'")
    return 1
  end
  if core.stat(name) then
    stderr(name .. " already exists")
    return 1
  end
  local base = name:match("([^/]+)/*$")
  local paths = {}
  for path in pairs(TEMPLATE) do paths[#paths + 1] = path end
  table.sort(paths)
  for _, path in ipairs(paths) do
    local full = name .. "/" .. path
    local parent = full:match("^(.*)/[^/]+$")
    local ok = os.execute("mkdir -p '" .. parent:gsub("'", "'\\''") .. "'")
    if ok ~= 0 and ok ~= true then
      stderr("cannot create " .. parent)
      return 1
    end
    local f, err = io.open(full, "w")
    if not f then
      stderr(err)
      return 1
    end
    f:write((TEMPLATE[path]:gsub("%%NAME%%", base)))
    f:close()
    io.stdout:write("  create ", full, "\n")
  end
  io.stdout:write("\nNext:\n  rage-lua run ", name, "\n  rage-lua test ", name, "\n")
  return 0
end

return _M
