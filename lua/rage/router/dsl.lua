-- rage.router.dsl: the routes DSL, Rails' own (verbs, match, root, resources, resource, member,
-- collection, namespace, scope, controller, defaults, constraints, mount).
--
-- config/routes.lua receives a mapper and every block receives a new one. A mapper holds a frame,
-- the immutable scope its block runs in, and each call checks its arguments, resolves the frame
-- into a full path, a controller, a name, defaults and constraints, and appends one entry to the
-- router's table with its pattern already parsed and expanded, so every mistake is reported at
-- the line of config/routes.lua that made it.

local type, pairs, next, tostring, setmetatable, getmetatable, pcall =
      type, pairs, next, tostring, setmetatable, getmetatable, pcall
local byte, sub, find, match, gsub, upper = string.byte, string.sub, string.find, string.match,
                                           string.gsub, string.upper
local concat = table.concat

local util = require("rage.router.util")
local misuse, EMPTY, SLASH = util.misuse, util.EMPTY, util.SLASH
local pattern = require("rage.router.pattern")
local parse_pattern, expand, compile_variant = pattern.parse, pattern.expand, pattern.variant
util.own()

local _M = {}

---------------------------------------------------------------------------------------------------
-- A tiny inflector: enough for resource names. `singular =` and `controller =` override it.

local IRREGULAR_SINGULAR = {
  people = "person", children = "child", men = "man", women = "woman", movies = "movie",
  cookies = "cookie", statuses = "status", aliases = "alias", news = "news", series = "series",
  species = "species", equipment = "equipment", information = "information",
}
local IRREGULAR_PLURAL = {}
for plural, singular in pairs(IRREGULAR_SINGULAR) do IRREGULAR_PLURAL[singular] = plural end

local function singularize(w)
  local irregular = IRREGULAR_SINGULAR[w]
  if irregular then return irregular end
  if find(w, "[^aeiou]ies$") then return sub(w, 1, -4) .. "y" end
  if find(w, "sses$") or find(w, "xes$") or find(w, "[cs]hes$") then return sub(w, 1, -3) end
  if find(w, "ss$") or find(w, "us$") or not find(w, "s$") then return w end
  return sub(w, 1, -2)
end

local function pluralize(w)
  local irregular = IRREGULAR_PLURAL[w]
  if irregular then return irregular end
  if find(w, "[^aeiou]y$") then return sub(w, 1, -2) .. "ies" end
  if find(w, "[sxz]$") or find(w, "[cs]h$") then return w .. "es" end
  return w .. "s"
end

---------------------------------------------------------------------------------------------------
-- Paths and names.

local function check_path_text(path, what)
  if type(path) ~= "string" then misuse(what .. ": path must be a string, got " .. type(path)) end
  if find(path, "[%s%?#%z\1-\31\127]") then
    misuse(what .. ": path " .. path .. " must not hold spaces, control characters, '?' or '#'")
  end
end

-- Joins a scope prefix ("" or "/api") and a relative path the way Rails' normalize_path does:
-- one slash between, none at the end, "(" and "." glued on ("(.:format)", "(/:locale)").
local function join_path(prefix, p)
  if p == nil then return prefix end
  local c = byte(p, 1)
  if c == 40 then
    local c2 = byte(p, 2)
    if c2 ~= SLASH and c2 ~= 46 then p = "(/" .. sub(p, 2) end
    return prefix .. p
  elseif c == 46 then
    return prefix .. p
  end
  p = gsub(gsub(p, "^/+", ""), "/+$", "")
  if p == "" then return prefix end
  return prefix .. "/" .. p
end

local function join_module(a, b)
  if b == nil then return a end
  b = gsub(gsub(b, "^/+", ""), "/+$", "")
  if a == nil or a == "" then return b end
  if b == "" then return a end
  return a .. "/" .. b
end

local function join_name(a, b, c, d)
  local parts = {}
  if a and a ~= "" then parts[#parts + 1] = a end
  if b and b ~= "" then parts[#parts + 1] = b end
  if c and c ~= "" then parts[#parts + 1] = c end
  if d and d ~= "" then parts[#parts + 1] = d end
  if #parts == 0 then return nil end
  return concat(parts, "_")
end

local function normalize_name(s)
  return (gsub(gsub(gsub(s, "^/+", ""), "/+$", ""), "[/%-]+", "_"))
end

---------------------------------------------------------------------------------------------------
-- Options.

local function set(list)
  local t = {}
  for i = 1, #list do t[list[i]] = true end
  return t
end

local VERB_OPTS = set{"to", "as", "controller", "action", "defaults", "constraints", "format", "on"}
local MATCH_OPTS = set{"to", "as", "controller", "action", "defaults", "constraints", "format", "on", "via"}
local ROOT_OPTS = set{"to", "as", "controller", "action", "defaults", "constraints"}
local RESOURCES_OPTS = set{"only", "except", "param", "path", "module", "controller", "as", "singular",
                           "constraints", "defaults", "format"}
local RESOURCE_OPTS = set{"only", "except", "path", "module", "controller", "as", "constraints", "defaults",
                          "format"}
local SCOPE_OPTS = set{"path", "module", "controller", "as", "constraints", "defaults", "format"}
local NAMESPACE_OPTS = set{"path", "module", "as", "constraints", "defaults", "format"}
local MOUNT_OPTS = set{"as", "constraints"}

local METHODS = set{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}

local PLURAL_ACTIONS = {"index", "create", "new", "edit", "show", "update", "destroy"}
local PLURAL_DEFAULT = set{"index", "create", "show", "update", "destroy"}
local SINGULAR_ACTIONS = {"create", "new", "edit", "show", "update", "destroy"}
local SINGULAR_DEFAULT = set{"create", "show", "update", "destroy"}

local function check_opts(opts, allowed, what)
  if opts == nil then return EMPTY end
  if type(opts) ~= "table" then misuse(what .. ": options must be a table, got " .. type(opts)) end
  for k in pairs(opts) do
    if not allowed[k] then misuse(what .. ": unknown option '" .. tostring(k) .. "'") end
  end
  return opts
end

local function check_string(v, what, field)
  if v ~= nil and type(v) ~= "string" then
    misuse(what .. ": " .. field .. " must be a string, got " .. type(v))
  end
end

local function check_format(v, what)
  if v ~= nil and type(v) ~= "boolean" then misuse(what .. ": format must be true or false") end
end

-- Constraint values are Lua patterns. Per-parameter patterns must match the whole (decoded) value,
-- as Rails requirements do, so anchors are added when missing.
local function anchor(pat)
  if byte(pat, 1) ~= 94 then pat = "^" .. pat end
  local trailing = match(pat, "(%%*)%$$")
  if trailing == nil or #trailing % 2 == 1 then pat = pat .. "$" end
  return pat
end

local function check_constraints(c, what)
  if c == nil then return nil end
  if type(c) ~= "table" then misuse(what .. ": constraints must be a table") end
  local out = {}
  for k, v in pairs(c) do
    if type(k) ~= "string" then misuse(what .. ": constraint keys must be strings") end
    if type(v) ~= "string" then
      misuse(what .. ": constraint '" .. k .. "' must be a string (a Lua pattern), got " .. type(v))
    end
    if k ~= "host" and k ~= "subdomain" then v = anchor(v) end
    if not pcall(find, "", v) then misuse(what .. ": constraint '" .. k .. "' is not a valid Lua pattern") end
    out[k] = v
  end
  return out
end

local function check_defaults(d, what)
  if d == nil then return nil end
  if type(d) ~= "table" then misuse(what .. ": defaults must be a table") end
  for k in pairs(d) do
    if type(k) ~= "string" then misuse(what .. ": default keys must be strings") end
  end
  return d
end

local function merge(a, b)
  if b == nil or next(b) == nil then return a end
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b) do t[k] = v end
  return t
end

local function is_handler(x)
  local t = type(x)
  if t == "function" then return true end
  return t == "table" and type(x.call) == "function"
end

local function list_of(v, what, field)
  if type(v) == "string" then return {v} end
  local ok = type(v) == "table"
  if ok then
    for i = 1, #v do
      if type(v[i]) ~= "string" then ok = false end
    end
  end
  if not ok then misuse(what .. ": " .. field .. " must be a string or a list of strings") end
  return v
end

---------------------------------------------------------------------------------------------------
-- Route definition. A frame is the immutable scope a DSL block runs in: path prefix, controller
-- module, name prefix, default controller, defaults, constraints, format, and which resource and
-- level (Rails' scope_level) the block belongs to.

local FRAME_FIELDS = {"path", "module", "as", "controller", "defaults", "constraints", "format",
                      "level", "resource"}

local function derive(f, t)
  for i = 1, #FRAME_FIELDS do
    local k = FRAME_FIELDS[i]
    if t[k] == nil then t[k] = f[k] end
  end
  return t
end

-- Rails' name_for_action: where the action's own prefix goes depends on the level it is defined at.
local function name_for(f, prefix, has_action)
  if prefix == nil and not has_action then return nil end
  local np, res = f.as, f.resource
  local cname, mname
  if res then cname, mname = res.collection_name, res.member_name end
  local level = f.level
  if level == "collection" then return join_name(prefix, np, cname)
  elseif level == "new" then return join_name(prefix, "new", np, mname)
  elseif level == "member" then return join_name(prefix, np, mname)
  elseif level == "root" then return join_name(np, cname, prefix)
  elseif level == "nested" then return join_name(np, prefix)
  end
  return join_name(np, mname, prefix)
end

-- o: controller, action, handler (all already resolved), as (explicit name or false), name_from
-- (the path or action an implicit name derives from), canonical (an implicit name without
-- prefix), defaults, constraints, format, mount, verbs (list) or any.
local function add_route(router, f, rel_path, o, what)
  local full = join_path(f.path, rel_path)
  if full == "" then full = "/" end
  if not o.mount and full ~= "/" and not find(full, ":format", 1, true) then
    local fmt = o.format
    if fmt == nil then fmt = f.format end
    if fmt == true then full = full .. ".:format" elseif fmt ~= false then full = full .. "(.:format)" end
  end
  check_path_text(full, what)
  local toks, pnames = parse_pattern(full)

  -- Constraints inherited from a scope apply to the parameters this route has; those given on
  -- the route itself must name one of its parameters, the host or the subdomain.
  local cons, host_cons = {}, nil
  for k, v in pairs(f.constraints) do
    if k == "host" or k == "subdomain" then
      host_cons = host_cons or {}
      host_cons[k] = v
    elseif pnames[k] then
      cons[k] = v
    end
  end
  if o.constraints then
    for k, v in pairs(o.constraints) do
      if k == "host" or k == "subdomain" then
        host_cons = host_cons or {}
        host_cons[k] = v
      elseif pnames[k] then
        cons[k] = v
      else
        misuse(what .. ": constraint '" .. k .. "' names no parameter of " .. full)
      end
    end
  end

  local controller, action, handler = o.controller, o.action, o.handler
  if handler == nil then
    if controller == nil then controller = f.controller end
    if controller == nil then
      misuse(what .. ": no controller for " .. full .. " (give \"controller#action\" or a scope controller)")
    end
    if action == nil then misuse(what .. ": no action for " .. full .. " (give \"controller#action\")") end
    if byte(controller, 1) == SLASH then
      controller = sub(controller, 2)
    else
      controller = join_module(f.module, controller)
    end
    if not find(controller, "^[%w_]+[%w_/]*$") or find(controller, "//", 1, true)
       or find(controller, "/$") then
      misuse(what .. ": bad controller name '" .. controller .. "'")
    end
    if not find(action, "^[%a_][%w_]*$") then misuse(what .. ": bad action name '" .. action .. "'") end
  end

  -- Names: an explicit `as` must be free; an implicit one is dropped when taken, which is how
  -- create, update and destroy share the name of index and show.
  local name
  if o.as ~= false then
    if o.as ~= nil then
      name = name_for(f, normalize_name(o.as), true)
      if name ~= nil and router._names[name] then
        misuse(what .. ": route name '" .. name .. "' is already in use")
      end
    else
      local prefix
      if o.name_from and not o.canonical then
        prefix = normalize_name(o.name_from)
        if prefix == "" then prefix = nil end
      end
      name = name_for(f, prefix, o.name_from ~= nil)
      if name ~= nil and (router._names[name] or not find(name, "^[%a_][%w_]*$")) then name = nil end
    end
  end

  local defaults = merge(f.defaults, o.defaults)
  local dcopy, dk, dv = {}, {}, {}
  for k, v in pairs(defaults) do
    dcopy[k] = v
    dk[#dk + 1] = k
    dv[#dv + 1] = v
  end

  local verb
  if o.any then verb = "ANY" else verb = concat(o.verbs, "|") end
  local route_cons
  if next(cons) ~= nil or host_cons ~= nil then
    route_cons = {}
    for k, v in pairs(cons) do route_cons[k] = v end
    if host_cons then for k, v in pairs(host_cons) do route_cons[k] = v end end
  end
  local route = {
    verb = verb, path = full, controller = handler == nil and controller or nil,
    action = handler == nil and action or nil, name = name, handler = handler,
    defaults = dcopy, constraints = route_cons, mount = o.mount or nil,
  }

  local flats = expand(toks, full)
  local variants = {}
  for i = 1, #flats do variants[i] = compile_variant(flats[i], cons, full, o.mount) end

  -- A dot inside an unconstrained parameter would be read back as the format separator, and one
  -- inside a wildcard followed by a format likewise; url_for escapes those dots.
  local escape_dot = {}
  for i = 1, #pnames do
    local pn = pnames[i]
    if cons[pn] == nil then escape_dot[pn] = true end
  end
  -- The entry is what rage.router.tree compiles and rage.router.url builds paths from; the route
  -- is what routes() lists.
  local entry = {
    route = route, toks = toks, variants = variants, cons = cons, host = host_cons,
    verbs = o.verbs, any = o.any, mount = o.mount, dk = dk, dv = dv, dn = #dk,
    escape_dot = escape_dot, has_format = pnames.format ~= nil,
  }
  local entries = router._entries
  entries[#entries + 1] = entry
  router._list[#router._list + 1] = route
  if name then router._names[name] = entry end
  return route
end

---------------------------------------------------------------------------------------------------
-- The DSL object handed to draw() and to every block.

local Mapper = {}
Mapper.__index = Mapper

local function new_mapper(router, frame)
  return setmetatable({_router = router, _f = frame}, Mapper)
end

local function live(m, what)
  if getmetatable(m) ~= Mapper then misuse(what .. ": call it with ':' (r:" .. what .. "(...))") end
  if m._router._static ~= nil then
    misuse(what .. ": routes are compiled; define every route before compile()")
  end
  return m._f
end

local function resource_level(f, what)
  if f.level ~= "resources" and f.level ~= "resource" then
    misuse(what .. " can only be used inside a resources or resource block")
  end
  return f
end

local function member_frame(f)
  local res = f.resource
  return derive(f, {path = res.member_path, level = "member", controller = res.controller})
end

local function collection_frame(f)
  local res = f.resource
  return derive(f, {path = res.path, level = "collection", controller = res.controller})
end

local function nested_frame(f)
  local res = f.resource
  local cons = f.constraints
  if not res.singleton and cons[res.param] then
    cons = merge(cons, {[res.nested_param] = cons[res.param]})
  end
  return derive(f, {path = res.nested_path, level = "nested", as = join_name(f.as, res.member_name),
                    constraints = cons})
end

-- Resolves the (target, opts) pair every verb method takes.
local function verb(m, what, verbs, any, path, target, opts, allowed)
  local f = live(m, what)
  check_path_text(path, what)
  if type(target) == "table" and not is_handler(target) then
    if opts ~= nil then misuse(what .. ": give either a target and options or one options table") end
    target, opts = nil, target
  end
  opts = check_opts(opts, allowed, what)
  if target ~= nil and opts.to ~= nil then misuse(what .. ": target given twice (argument and 'to')") end
  if target == nil then target = opts.to end
  check_string(opts.controller, what, "controller")
  check_string(opts.action, what, "action")
  if opts.as ~= nil and opts.as ~= false then check_string(opts.as, what, "as") end
  check_format(opts.format, what)

  local on = opts.on
  if on ~= nil then
    if on == "member" then f = member_frame(resource_level(f, "on = \"member\""))
    elseif on == "collection" then f = collection_frame(resource_level(f, "on = \"collection\""))
    else misuse(what .. ": on must be \"member\" or \"collection\"") end
  elseif f.level == "resources" then
    f = nested_frame(f)
  elseif f.level == "resource" then
    f = member_frame(f)
  end

  local controller, action, handler
  if type(target) == "string" then
    controller, action = match(target, "^([^#]+)#([^#]+)$")
    if controller == nil then misuse(what .. ": target '" .. target .. "' is not \"controller#action\"") end
  elseif target ~= nil then
    if not is_handler(target) then
      misuse(what .. ": target must be \"controller#action\", a function or an object with a call method")
    end
    handler = target
  end
  if opts.controller then
    if controller or handler then misuse(what .. ": controller given twice") end
    controller = opts.controller
  end
  if opts.action then
    if action or handler then misuse(what .. ": action given twice") end
    action = opts.action
  end

  -- A bare word path names its own action ("like" inside member → #like) and, as in Rails,
  -- a path of plain words names the route ("/photos/search" → photos_search).
  local stripped = gsub(path, "^/+", "")
  local simple = stripped ~= "" and find(stripped, "^[%w_%-/]+$") ~= nil
  if action == nil and handler == nil and simple and not find(stripped, "/", 1, true) then
    action = gsub(stripped, "%-", "_")
  end
  return add_route(m._router, f, path, {
    controller = controller, action = action, handler = handler, as = opts.as,
    name_from = simple and path or nil, defaults = check_defaults(opts.defaults, what),
    constraints = check_constraints(opts.constraints, what), format = opts.format,
    verbs = verbs, any = any,
  }, what)
end

local function verb_method(method, lname)
  local verbs = {method}
  return function(self, path, target, opts)
    return verb(self, lname, verbs, false, path, target, opts, VERB_OPTS)
  end
end

Mapper.get = verb_method("GET", "get")
Mapper.post = verb_method("POST", "post")
Mapper.put = verb_method("PUT", "put")
Mapper.patch = verb_method("PATCH", "patch")
Mapper.delete = verb_method("DELETE", "delete")
Mapper.head = verb_method("HEAD", "head")
Mapper.options = verb_method("OPTIONS", "options")

function Mapper:match(path, target, opts)
  live(self, "match")
  local o = opts
  if type(target) == "table" and not is_handler(target) then o = target end
  local via = type(o) == "table" and o.via or nil
  if via == nil then misuse("match: via is required (e.g. {via = {\"get\", \"post\"}} or via = \"all\")") end
  local verbs, any = {}, false
  if via == "all" then
    any = true
  else
    local list = list_of(via, "match", "via")
    for i = 1, #list do
      local mth = upper(list[i])
      if not METHODS[mth] then misuse("match: unknown HTTP method '" .. list[i] .. "' in via") end
      verbs[#verbs + 1] = mth
    end
    if #verbs == 0 then misuse("match: via is empty") end
  end
  return verb(self, "match", verbs, any, path, target, opts, MATCH_OPTS)
end

function Mapper:root(target)
  local f = live(self, "root")
  local opts
  if type(target) == "table" and not is_handler(target) then
    opts, target = target, nil
  end
  opts = check_opts(opts, ROOT_OPTS, "root")
  if target == nil then target = opts.to end
  if target == nil and opts.controller == nil then
    misuse("root: a target is required (r:root(\"pages#home\"))")
  end
  local path
  if f.level == "resources" or f.level == "resource" then f = derive(f, {level = "root"}) else path = "/" end
  local m = new_mapper(self._router, f)
  return verb(m, "root", {"GET"}, false, path or "", target, {
    as = opts.as or "root", controller = opts.controller, action = opts.action,
    defaults = opts.defaults, constraints = opts.constraints, format = false,
  }, VERB_OPTS)
end

function Mapper:mount(path, handler, opts)
  local f = live(self, "mount")
  check_path_text(path, "mount")
  if not is_handler(handler) then
    misuse("mount: handler must be a function or an object with a call method")
  end
  opts = check_opts(opts, MOUNT_OPTS, "mount")
  if opts.as ~= nil then check_string(opts.as, "mount", "as") end
  return add_route(self._router, f, path, {
    handler = handler, as = opts.as or false, constraints = check_constraints(opts.constraints, "mount"),
    any = true, mount = true,
  }, "mount")
end

-- Builds the frame a scope-like call runs its block in.
local function scoped(f, o, what)
  check_string(o.path, what, "path")
  check_string(o.module, what, "module")
  check_string(o.controller, what, "controller")
  check_string(o.as, what, "as")
  check_format(o.format, what)
  local path = f.path
  if o.path ~= nil then
    check_path_text(o.path, what)
    path = join_path(f.path, o.path)
  end
  return derive(f, {
    path = path, module = join_module(f.module, o.module),
    as = o.as and join_name(f.as, normalize_name(o.as)),
    controller = o.controller, defaults = merge(f.defaults, check_defaults(o.defaults, what)),
    constraints = merge(f.constraints, check_constraints(o.constraints, what)), format = o.format,
  })
end

local function run_block(m, frame, block)
  block(new_mapper(m._router, frame))
end

local function check_block(block, what)
  if type(block) ~= "function" then misuse(what .. ": a block function(r) ... end is required") end
end

function Mapper:scope(a, b, c)
  local f = live(self, "scope")
  local opts, block
  if type(a) == "string" then
    if type(b) == "function" then opts, block = {path = a}, b
    else
      opts = check_opts(b, SCOPE_OPTS, "scope")
      if opts.path ~= nil then misuse("scope: path given twice") end
      opts = merge(opts, {path = a})
      block = c
    end
  else
    opts, block = check_opts(a, SCOPE_OPTS, "scope"), b
  end
  check_block(block, "scope")
  run_block(self, scoped(f, opts, "scope"), block)
end

function Mapper:namespace(name, opts, block)
  local f = live(self, "namespace")
  if type(opts) == "function" and block == nil then opts, block = nil, opts end
  if type(name) ~= "string" or not find(name, "^[%a_][%w_]*$") then
    misuse("namespace: name must be a word like \"admin\"")
  end
  opts = check_opts(opts, NAMESPACE_OPTS, "namespace")
  check_block(block, "namespace")
  local o = {path = name, module = name, as = name, constraints = opts.constraints, defaults = opts.defaults,
             format = opts.format}
  if opts.path ~= nil then o.path = opts.path end
  if opts.module ~= nil then o.module = opts.module end
  if opts.as ~= nil then o.as = opts.as end
  run_block(self, scoped(f, o, "namespace"), block)
end

function Mapper:defaults(tbl, block)
  local f = live(self, "defaults")
  if type(tbl) ~= "table" then misuse("defaults: a table is required") end
  check_block(block, "defaults")
  run_block(self, scoped(f, {defaults = tbl}, "defaults"), block)
end

function Mapper:constraints(tbl, block)
  local f = live(self, "constraints")
  if type(tbl) ~= "table" then misuse("constraints: a table is required") end
  check_block(block, "constraints")
  run_block(self, scoped(f, {constraints = tbl}, "constraints"), block)
end

function Mapper:controller(name, block)
  local f = live(self, "controller")
  if type(name) ~= "string" then misuse("controller: a controller name is required") end
  check_block(block, "controller")
  run_block(self, scoped(f, {controller = name}, "controller"), block)
end

function Mapper:member(block)
  local f = resource_level(live(self, "member"), "member")
  check_block(block, "member")
  run_block(self, member_frame(f), block)
end

function Mapper:collection(block)
  local f = resource_level(live(self, "collection"), "collection")
  check_block(block, "collection")
  run_block(self, collection_frame(f), block)
end

local function select_actions(opts, all, default, what)
  local chosen = {}
  if opts.only ~= nil then
    local known = set(all)
    for _, a in pairs(list_of(opts.only, what, "only")) do
      if not known[a] then misuse(what .. ": unknown action '" .. a .. "' in only") end
      chosen[a] = true
    end
  else
    for k in pairs(default) do chosen[k] = true end
  end
  if opts.except ~= nil then
    local known = set(all)
    for _, a in pairs(list_of(opts.except, what, "except")) do
      if not known[a] then misuse(what .. ": unknown action '" .. a .. "' in except") end
      chosen[a] = nil
    end
  end
  return chosen
end

-- The parts of resources/resource options that act as a scope around the resource and its block.
local function resource_scope(f, opts, what)
  if f.level == "resources" or f.level == "resource" then f = nested_frame(f) end
  if opts.module ~= nil or opts.constraints ~= nil or opts.defaults ~= nil or opts.format ~= nil then
    f = scoped(f, {module = opts.module, constraints = opts.constraints, defaults = opts.defaults,
                   format = opts.format}, what)
  end
  return f
end

local function internal(router, f, verbs, path, action, canonical, what)
  return add_route(router, f, path, {
    action = action, name_from = path or action, canonical = canonical, verbs = verbs,
  }, what)
end

local GET, POST, PATCH, PUT, DELETE = {"GET"}, {"POST"}, {"PATCH"}, {"PUT"}, {"DELETE"}

local function member_routes(router, f, actions, what)
  local mf = member_frame(f)
  if actions.edit then internal(router, mf, GET, "edit", "edit", false, what) end
  if actions.show then internal(router, mf, GET, nil, "show", true, what) end
  if actions.update then
    internal(router, mf, PATCH, nil, "update", true, what)
    internal(router, mf, PUT, nil, "update", true, what)
  end
  if actions.destroy then internal(router, mf, DELETE, nil, "destroy", true, what) end
end

function Mapper:resources(name, opts, block)
  local f = live(self, "resources")
  if type(opts) == "function" and block == nil then opts, block = nil, opts end
  if type(name) ~= "string" or not find(name, "^[%a_][%w_]*$") then
    misuse("resources: name must be a word like \"photos\"")
  end
  opts = check_opts(opts, RESOURCES_OPTS, "resources")
  for _, k in pairs({"param", "path", "controller", "as", "singular"}) do
    check_string(opts[k], "resources", k)
  end
  if opts.param ~= nil and not find(opts.param, "^[%a_][%w_]*$") then
    misuse("resources: param must be a word")
  end
  if opts.path ~= nil then check_path_text(opts.path, "resources") end
  if block ~= nil then check_block(block, "resources") end
  check_format(opts.format, "resources")
  local actions = select_actions(opts, PLURAL_ACTIONS, PLURAL_DEFAULT, "resources")
  f = resource_scope(f, opts, "resources")

  local router = self._router
  local plural = opts.as and normalize_name(opts.as) or name
  local singular = opts.singular or singularize(plural)
  local param = opts.param or "id"
  local rpath = join_path(f.path, opts.path or name)
  local res = {
    singleton = false, member_name = singular,
    collection_name = singular == plural and plural .. "_index" or plural,
    controller = opts.controller or name, param = param, nested_param = singular .. "_" .. param,
    path = rpath, member_path = rpath .. "/:" .. param,
    nested_path = rpath .. "/:" .. singular .. "_" .. param,
  }
  local rf = derive(f, {level = "resources", resource = res, controller = res.controller, path = rpath})

  if block then run_block(self, rf, block) end
  local cf = collection_frame(rf)
  if actions.index then internal(router, cf, GET, nil, "index", true, "resources") end
  if actions.create then internal(router, cf, POST, nil, "create", true, "resources") end
  if actions.new then
    internal(router, derive(rf, {path = rpath .. "/new", level = "new"}), GET, nil, "new", true, "resources")
  end
  member_routes(router, rf, actions, "resources")
end

function Mapper:resource(name, opts, block)
  local f = live(self, "resource")
  if type(opts) == "function" and block == nil then opts, block = nil, opts end
  if type(name) ~= "string" or not find(name, "^[%a_][%w_]*$") then
    misuse("resource: name must be a word like \"profile\"")
  end
  opts = check_opts(opts, RESOURCE_OPTS, "resource")
  for _, k in pairs({"path", "controller", "as"}) do check_string(opts[k], "resource", k) end
  if opts.path ~= nil then check_path_text(opts.path, "resource") end
  if block ~= nil then check_block(block, "resource") end
  check_format(opts.format, "resource")
  local actions = select_actions(opts, SINGULAR_ACTIONS, SINGULAR_DEFAULT, "resource")
  f = resource_scope(f, opts, "resource")

  local router = self._router
  local singular = opts.as and normalize_name(opts.as) or name
  local rpath = join_path(f.path, opts.path or name)
  local res = {
    singleton = true, member_name = singular, collection_name = singular,
    controller = opts.controller or pluralize(name), path = rpath, member_path = rpath, nested_path = rpath,
  }
  local rf = derive(f, {level = "resource", resource = res, controller = res.controller, path = rpath})

  if block then run_block(self, rf, block) end
  if actions.new then
    internal(router, derive(rf, {path = rpath .. "/new", level = "new"}), GET, nil, "new", true, "resource")
  end
  member_routes(router, rf, actions, "resource")
  if actions.create then internal(router, collection_frame(rf), POST, nil, "create", true, "resource") end
end

-- The frame draw() runs the routes function in: no prefix, no module, no resource.
local ROOT_FRAME = {
  path = "", module = nil, as = nil, controller = nil, defaults = EMPTY, constraints = EMPTY,
  format = nil, level = false, resource = false,
}

-- mapper(router) → the mapper a routes function receives.
function _M.mapper(router)
  return new_mapper(router, ROOT_FRAME)
end

return _M
