-- rage.log: leveled logging through the core's logger, so Lua and C lines share one stream.
--
--   rage.log.info("user ", id, " signed in")   -- arguments are joined with tostring
--   rage.log.level("debug")                    -- change the level at run time
--   rage.log.format("json")                    -- one JSON object per line ("text" by default)
--   rage.log.context{user_id = 42}             -- fields on every line of this fiber's job
--   rage.log.tagged("billing", function() ... end)
--   rage.log.sink(function(level, line, record) ... end)  -- send lines elsewhere
--
-- Tags and context live in the job's fiber-local table, so concurrent requests never mix them
-- and fibers spawned by a request inherit its request id, tags and context.

local core = require("rage.core")

local tostring, select, concat, type, pairs, ipairs, error, pcall, sort, date, unpack, rawget, next =
  tostring, select, table.concat, type, pairs, ipairs, error, pcall, table.sort, os.date, unpack, rawget, next
local core_log, core_level, core_line, core_locals =
  core.log, core.log_level, core.log_line, core.locals
local fiber_id = require("rage.leaf").fiber_id

local _M = {}

local LEVELS = {debug = core.DEBUG, info = core.INFO, warn = core.WARN, error = core.ERROR}
local NAMES = {}
for k, v in pairs(LEVELS) do NAMES[v] = k end
_M.LEVELS = LEVELS

local function join(...)
  local n = select("#", ...)
  if n == 1 then return tostring((...)) end
  local parts = {...}
  for i = 1, n do parts[i] = tostring(parts[i]) end
  return concat(parts)
end

-- The level is cached here; log.level() is the one way to change it after boot.
local current = core_level()
local json_format = false
local sink = nil

-- The fiber's log state: {tags = {...}, fields = {...}} or nil.
local function state(create)
  local l = core_locals(create)
  if not l then return nil end
  local st = rawget(l, "__log")
  if not st and create then
    -- A child fiber sees its parent's state through the locals' __index; copy on write.
    st = {tags = {}, fields = {}}
    local parent = l.__log
    l.__log = st
    if parent then
      for i, t in ipairs(parent.tags) do st.tags[i] = t end
      for k, v in pairs(parent.fields) do st.fields[k] = v end
    end
  end
  return st
end

-- "[tag] [tag] message key=value key=value" (keys sorted).
local function text_line(msg, tags, fields)
  local out = {}
  if tags then
    for i, t in ipairs(tags) do out[i] = "[" .. tostring(t) .. "]" end
  end
  out[#out + 1] = msg
  if fields then
    local keys = {}
    for k in pairs(fields) do keys[#keys + 1] = k end
    sort(keys)
    for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. tostring(fields[k]) end
  end
  return concat(out, " ")
end

-- Request ids bound to fibers (the C fiber's address as a number, rage.leaf.fiber_id): those
-- that serve no request of the core's themselves, the fibers a request spawns and rage.test's
-- requests. A request's own fiber asks the core (core.request_id), which makes the id only
-- when a line needs it.
local request_ids = {}
local core_request_id = core.request_id

-- Binds `id` to the calling fiber (nil unbinds). Returns the id bound before.
function _M.bind_request_id(id)
  local f = fiber_id()
  if f == 0 then return nil end
  local before = request_ids[f]
  request_ids[f] = id
  return before
end

-- The request id of the calling fiber, or nil.
local function request_id()
  local f = fiber_id()
  if f == 0 then return nil end
  return request_ids[f] or core_request_id()
end
_M.request_id = request_id

local function emit(level, msg, extra)
  local l = core_locals(false)
  local st = l and l.__log
  local rid = request_id()
  -- Fields of the line: the job's context, its request id, then this call's own.
  local fields
  if rid or (st and next(st.fields)) or extra then
    fields = {}
    if st then for k, v in pairs(st.fields) do fields[k] = v end end
    if rid then fields.request_id = rid end
    if extra then for k, v in pairs(extra) do fields[k] = v end end
  end
  local tags = st and #st.tags > 0 and {unpack(st.tags)} or nil
  if sink or json_format then
    local rec = {level = NAMES[level], msg = msg, pid = core.pid, tags = tags}
    if fields then for k, v in pairs(fields) do if rec[k] == nil then rec[k] = v end end end
    if sink then
      local ok, err = pcall(sink, NAMES[level], text_line(msg, tags, fields), rec)
      if not ok then core_log(LEVELS.error, "log sink failed: " .. tostring(err)) end
      return
    end
    rec.ts = date("!%Y-%m-%dT%H:%M:%S") .. "Z"
    local ok, line = pcall(require("rage.json").encode, rec)
    core_line(ok and line or '{"level":"error","msg":"unencodable log record"}')
    return
  end
  core_log(level, text_line(msg, tags, fields))
end

local function writer(level)
  return function(...)
    if level >= current then emit(level, join(...)) end
  end
end

_M.debug = writer(LEVELS.debug)
_M.info = writer(LEVELS.info)
_M.warn = writer(LEVELS.warn)
_M.error = writer(LEVELS.error)

-- log.event(level, msg, fields): a line with structured fields (JSON keys, or key=value in text).
function _M.event(level, msg, fields)
  local n = LEVELS[level]
  if not n then error("rage.log.event: unknown level '" .. tostring(level) .. "'", 2) end
  if n >= current then emit(n, msg, fields) end
end

-- Returns the current level's name; with a name, sets it first.
function _M.level(name)
  if name ~= nil then
    local n = LEVELS[name]
    if not n then error("rage.log.level: unknown level '" .. tostring(name) .. "' (debug, info, warn, error)", 2) end
    core_level(n)
    current = n
  end
  return NAMES[current]
end

function _M.enabled(name)
  return LEVELS[name] >= current
end

-- "text" (default) or "json"; returns the current format.
function _M.format(name)
  if name ~= nil then
    if name ~= "text" and name ~= "json" then error("rage.log.format: 'text' or 'json'", 2) end
    json_format = name == "json"
  end
  return json_format and "json" or "text"
end

-- Sends every line to fn(level, text_line, record) instead of stderr; nil restores stderr.
function _M.sink(fn)
  if fn ~= nil and type(fn) ~= "function" then error("rage.log.sink expects a function or nil", 2) end
  sink = fn
end

-- Adds fields to every line this job (and the fibers it spawns) writes from now on.
function _M.context(fields)
  if type(fields) ~= "table" then error("rage.log.context expects a table", 2) end
  local st = state(true)
  for k, v in pairs(fields) do st.fields[k] = v end
end

-- Runs fn with `tag` on every line it writes; the tag is removed afterwards, even on error.
function _M.tagged(tag, fn, ...)
  local st = state(true)
  local tags = st.tags
  tags[#tags + 1] = tag
  local res = {pcall(fn, ...)}
  for i = #tags, 1, -1 do
    if tags[i] == tag then table.remove(tags, i) break end
  end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2)
end

return _M
