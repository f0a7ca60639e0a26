-- rage.app: loading an app directory.
--
--   config/application.lua              returns a settings table
--   config/environments/<env>.lua       returns overrides for one environment (optional)
--   config/routes.lua                   returns function(r) ... end
--   app/controllers/**/*.lua            one controller per file, named by its path
-- Boot runs inside a fiber, so config files may wait (rage.sleep, and later queries). Every
-- problem is reported as an app.load error naming the file (and line, for Lua errors).

local core = require("rage.core")
local router_mod = require("rage.router")
local controller = require("rage.controller")
local dispatcher = require("rage.dispatcher")
local errors = require("rage.errors")
local log = require("rage.log")
local cookies = require("rage.cookies")

local loadfile, unpack, type, pairs, ipairs, tostring, sort, pcall, xpcall, setmetatable =
  loadfile, unpack, type, pairs, ipairs, tostring, table.sort, pcall, xpcall, setmetatable

local _M = {}

local function fail(msg)
  errors.raise("app.load", msg, nil, 2)
end

local function exists(path)
  return core.stat(path) ~= nil
end

-- Runs a Lua file of the app and returns its results; raises app.load on any failure.
local function run_file(path, ...)
  local chunk, err = loadfile(path)
  if not chunk then fail(err) end
  local res = {xpcall(chunk, function(e)
    if type(e) == "table" then return e end
    return debug.traceback(tostring(e), 2)
  end, ...)}
  if not res[1] then
    local e = res[2]
    if type(e) == "table" and e.message then fail(path .. ": " .. tostring(e.message)) end
    fail(tostring(e))
  end
  return unpack(res, 2)
end

local function merge(into, from)
  for k, v in pairs(from) do
    if type(v) == "table" and type(into[k]) == "table" then merge(into[k], v) else into[k] = v end
  end
  return into
end

local function load_config(dir, env)
  local config = {}
  local path = dir .. "/config/application.lua"
  if exists(path) then
    local t = run_file(path)
    if t ~= nil and type(t) ~= "table" then fail(path .. " must return a table of settings") end
    merge(config, t or {})
  end
  path = dir .. "/config/environments/" .. env .. ".lua"
  if exists(path) then
    local t = run_file(path)
    if t ~= nil and type(t) ~= "table" then fail(path .. " must return a table of settings") end
    merge(config, t or {})
  end
  return config
end

local function scan(dir, prefix, out)
  local names = core.scandir(dir)
  if not names then return out end
  sort(names)
  for _, name in ipairs(names) do
    local path = dir .. "/" .. name
    local kind = core.stat(path)
    if kind == "directory" then
      scan(path, prefix .. name .. "/", out)
    elseif kind == "file" and name:sub(-4) == ".lua" then
      out[#out + 1] = {name = prefix .. name:sub(1, -5), path = path}
    end
  end
  return out
end

local function load_controllers(dir)
  controller.reset()
  local files = scan(dir .. "/app/controllers", "", {})
  -- The application controller first: the others inherit from it.
  sort(files, function(a, b)
    if a.name == "application" then return b.name ~= "application" end
    if b.name == "application" then return false end
    return a.name < b.name
  end)
  local controllers = {}
  for _, f in ipairs(files) do
    local class = run_file(f.path)
    if type(class) ~= "table" or not class.__callbacks then
      fail(f.path .. " must return its controller (end the file with `return " .. f.name:gsub(".*/", "") .. "`)")
    end
    controllers[f.name] = class
    controllers[class.__name] = controllers[class.__name] or class
  end
  return controllers
end

local function apply_config(config)
  local lcfg = config.log
  if lcfg ~= nil and type(lcfg) ~= "table" then fail("config.log must be a table") end
  if type(lcfg) == "table" then
    if lcfg.level then
      local ok, err = pcall(log.level, lcfg.level)
      if not ok then fail("config.log.level: " .. tostring(err)) end
    end
    if lcfg.format then
      local ok, err = pcall(log.format, lcfg.format)
      if not ok then fail("config.log.format: " .. tostring(err)) end
    end
    if lcfg.sink ~= nil then
      local ok, err = pcall(log.sink, lcfg.sink)
      if not ok then fail("config.log.sink: " .. tostring(err)) end
    end
  end
  if config.server ~= nil then
    if type(config.server) ~= "table" then fail("config.server must be a table") end
    local ok, err = pcall(core.configure_server, config.server)
    if not ok then fail("config.server: " .. tostring(err):gsub("^.-:%d+: ", "")) end
  end
  -- Request ids are the server's: it echoes a safe X-Request-Id or makes one, in every response.
  if config.request_id ~= nil and type(config.request_id) ~= "boolean" then
    fail("config.request_id must be true or false")
  end
  core.configure_server({request_id = config.request_id ~= false})
  local proxies = config.trusted_proxies
  if proxies ~= nil then
    if type(proxies) ~= "table" then fail("config.trusted_proxies must be a list of addresses") end
    for i, p in ipairs(proxies) do
      if type(p) ~= "string" then fail("config.trusted_proxies[" .. i .. "] must be a string") end
    end
  end
  require("rage.request").trust(proxies)
end

-- secret_key_base and the session settings; outside development and test, no secret, no boot.
local function cookie_settings(dir, env, config)
  local ok, settings = pcall(cookies.settings, dir, env, config)
  if not ok then fail(tostring(settings)) end
  return settings
end

-- A loaded app can be mounted inside another one's routes, Rails-engine style:
--   r:mount("/admin", require("rage.app").load("admin"))
-- It then serves the paths under the prefix with its own middleware, router and controllers.
local App = {}
App.__index = App

function App:call(req, params)
  self.handler(req.box, req.method, params.path_info or "/", req.query_string)
end

-- Loads the app in `dir` and installs its request handler. Returns the app table.
function _M.load(dir)
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local env = core.env
  -- App modules (lib/, app/) can be required by name.
  local app_path = dir .. "/app/?.lua;" .. dir .. "/lib/?.lua;"
  if package.path:sub(1, #app_path) ~= app_path then package.path = app_path .. package.path end
  local config = load_config(dir, env)
  apply_config(config)
  local cookie_conf = cookie_settings(dir, env, config)
  local controllers = load_controllers(dir)
  local routes_path = dir .. "/config/routes.lua"
  local draw = run_file(routes_path)
  if type(draw) ~= "function" then fail(routes_path .. " must return function(r) ... end") end
  local router = router_mod.new()
  local ok, err = pcall(router.draw, router, draw)
  if not ok then
    local msg = tostring(type(err) == "table" and err.message or err)
    -- The router names the line of routes.lua itself when it can.
    if msg:sub(1, #routes_path) ~= routes_path then msg = routes_path .. ": " .. msg end
    fail(msg)
  end
  router:compile()
  ok, err = pcall(dispatcher.prepare, router, controllers)
  if not ok then fail(routes_path .. ": " .. tostring(err)) end
  local app = setmetatable({dir = dir, env = env, config = config, router = router,
                            controllers = controllers, cookie_settings = cookie_conf}, App)
  ok, err = pcall(function() app.middleware = require("rage.middleware").stack(app) end)
  if not ok then fail(tostring(type(err) == "table" and err.message or err)) end
  app.handler, app.job = dispatcher.new(app)
  return app
end

-- ---- development reloading ------------------------------------------------------------------

-- A signature of every app file that loading reads: "path:mtime:size" lines, sorted.
local function signature(dir)
  local files = {}
  local function walk(d)
    local names = core.scandir(d)
    if not names then return end
    for _, name in ipairs(names) do
      local path = d .. "/" .. name
      local kind, mtime, size = core.stat(path)
      if kind == "directory" then
        walk(path)
      elseif kind == "file" and name:sub(-4) == ".lua" then
        files[#files + 1] = path .. ":" .. mtime .. ":" .. size
      end
    end
  end
  walk(dir .. "/config")
  walk(dir .. "/app")
  walk(dir .. "/lib")
  sort(files)
  return table.concat(files, "\n")
end

-- Forgets modules loaded from the app's own folders, so a reload reads them again.
local function forget_app_modules(dir)
  local prefix = dir .. "/"
  for name in pairs(package.loaded) do
    local path = package.searchpath and package.searchpath(name, package.path)
    if path and path:sub(1, #prefix) == prefix then package.loaded[name] = nil end
  end
end

-- In development, a handler that looks for changed files at most once a second and loads the
-- app again when one changed. A broken edit answers 500 with the load error (development only)
-- until it is fixed; the last good app is not used in the meantime.
local function reloading_handler(dir, app)
  local current, broken = app.handler, nil
  local sig = signature(dir)
  local last_check = core.now()
  return function(box, method, path, query)
    local now = core.now()
    if now - last_check >= 1 then
      last_check = now
      local s = signature(dir)
      if s ~= sig then
        sig = s
        forget_app_modules(dir)
        local ok, fresh = pcall(_M.load, dir)
        if ok then
          current, broken = fresh.handler, nil
          require("rage").app = fresh
          log.info("reloaded ", dir)
        else
          broken = tostring(type(fresh) == "table" and fresh.message or fresh)
          log.error("reload failed: ", broken)
        end
      end
    end
    if broken then
      box:respond(500, {["content-type"] = "text/plain; charset=utf-8"}, "The app failed to load:\n" .. broken .. "\n")
      return
    end
    return current(box, method, path, query)
  end
end

-- Boot entry point used by the core: load and serve.
function _M.boot(dir)
  local app = _M.load(dir)
  -- The server runs the dispatcher's fiber job (one protected call for many requests); the
  -- reloader, which swaps apps between requests, calls the plain handler.
  local handler = app.job
  if app.env == "development" and app.config.reload ~= false then
    handler = reloading_handler(app.dir, app)
  end
  core.set_handler(handler)
  require("rage").app = app
  return 0
end

return _M
