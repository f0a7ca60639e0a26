-- rage.router: the routes DSL, the request matcher and the named-route helpers.
--
-- An application describes its routes once at boot with a Rails-shaped DSL (verbs, resources,
-- namespaces, scopes, mounts). Each route's pattern is parsed as it is defined, so a mistake is
-- reported at the line of config/routes.lua that made it. compile() then freezes the table into
-- two structures: a hash from fully static paths to their route, which answers the common case
-- with one lookup, and a segment tree that answers everything else, with the answer a linear scan
-- in definition order would give, as in Rails.
--
-- This module is the router object and its public methods; the work is done in rage.router.dsl
-- (the DSL and the route table), rage.router.pattern (patterns and tree edges),
-- rage.router.tree (compile and match), rage.router.url (percent-encoding and url_for) and
-- rage.router.util (what they share, misuse errors included).
--
-- A router's fields: _entries (one per route, in definition order, for compile and url_for),
-- _list (the route tables routes() copies) and _names (route name → entry), which the DSL fills;
-- _static (the static hash, nil until compile()), _root (the tree), _has_head and uses_host,
-- which compile() sets; and _state, the scratch space of its searches.

local type, pairs, setmetatable, getmetatable = type, pairs, setmetatable, getmetatable
local rep = string.rep
local concat, sort = table.concat, table.sort

local util = require("rage.router.util")
local dsl = require("rage.router.dsl")
local tree = require("rage.router.tree")
local url = require("rage.router.url")
local misuse = util.misuse
local compile, url_for = tree.compile, url.url_for
util.own()

local _M = {}

local Router = {}
Router.__index = Router

function _M.new()
  return setmetatable({
    _entries = {}, _list = {}, _names = {}, _static = nil, _root = nil, _has_head = false,
    uses_host = false, _state = tree.new_state(),
  }, Router)
end

-- Runs a routes function (the one config/routes.lua returns). May be called more than once
-- before compile(); routes accumulate in call order.
function Router:draw(fn)
  if getmetatable(self) ~= Router then misuse("draw: call it with ':' (router:draw(fn))") end
  if type(fn) ~= "function" then misuse("draw: a function(r) ... end is required") end
  if self._static ~= nil then misuse("draw: routes are compiled; draw every route before compile()") end
  fn(dsl.mapper(self))
  return self
end

-- Freezes the route table and builds the match structures. Calling it again does nothing; match()
-- calls it on first use.
function Router:compile()
  compile(self)
  return self
end

-- match(method, path, host) → route, params | nil, allowed | nil, nil.
-- The matcher itself, not a wrapper around it: the static hit path is one hash lookup and one new
-- table, on purpose, as it runs on every request.
Router.match = tree.match

-- url_for(name, params) → path (with a query string for the params the path does not use).
function Router:url_for(name, params)
  return url_for(self, name, params)
end

function Router:routes()
  local list = {}
  for i = 1, #self._list do list[i] = self._list[i] end
  return list
end

---------------------------------------------------------------------------------------------------
-- The table `rage-lua routes` prints, shaped like `rails routes`.

local function target_of(r)
  if r.controller then return r.controller .. "#" .. r.action end
  local h = r.handler
  if type(h) == "table" and type(h.name) == "string" then return h.name end
  return r.mount and "<mounted app>" or "<function>"
end

local function constraints_text(c)
  if c == nil then return "" end
  local keys = {}
  for k in pairs(c) do keys[#keys + 1] = k end
  sort(keys)
  local parts = {}
  for i = 1, #keys do parts[i] = keys[i] .. " = \"" .. c[keys[i]] .. "\"" end
  return " {" .. concat(parts, ", ") .. "}"
end

function _M.format(routes)
  if type(routes) ~= "table" then misuse("format: a list of routes is required") end
  if #routes == 0 then return "No routes defined.\n" end
  local rows = {{"Prefix", "Verb", "URI Pattern", "Controller#Action"}}
  for i = 1, #routes do
    local r = routes[i]
    rows[#rows + 1] = {r.name or "", r.verb, r.path, target_of(r) .. constraints_text(r.constraints)}
  end
  local w1, w2, w3 = 0, 0, 0
  for i = 1, #rows do
    local row = rows[i]
    if #row[1] > w1 then w1 = #row[1] end
    if #row[2] > w2 then w2 = #row[2] end
    if #row[3] > w3 then w3 = #row[3] end
  end
  local lines = {}
  for i = 1, #rows do
    local row = rows[i]
    lines[i] = rep(" ", w1 - #row[1]) .. row[1] .. " " .. row[2] .. rep(" ", w2 - #row[2]) .. " "
               .. row[3] .. rep(" ", w3 - #row[3]) .. " " .. row[4]
  end
  return concat(lines, "\n") .. "\n"
end

return _M
