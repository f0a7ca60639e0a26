-- rage.router: the routes DSL, the request matcher and the named-route helpers.
--
-- An application describes its routes once at boot with a Rails-shaped DSL (verbs, resources,
-- namespaces, scopes, mounts). Each route's pattern is parsed as it is defined, so a mistake is
-- reported at the line of config/routes.lua that made it. compile() then freezes the table into
-- two structures: a hash from fully static paths to their route, which answers the common case
-- with one lookup, and a segment tree (static children, then parameters, then wildcards) that
-- answers everything else. The tree is searched with backtracking and pruned by route rank, so the
-- answer is always the route a linear scan in definition order would pick, as in Rails. The hash
-- holds only answers that compile() proved equal to the tree's, so the two never disagree.

local type, error, pairs, next, tostring, tonumber, setmetatable, getmetatable, pcall =
      type, error, pairs, next, tostring, tonumber, setmetatable, getmetatable, pcall
local byte, sub, find, match, gsub, lower, upper, char, rep =
      string.byte, string.sub, string.find, string.match, string.gsub, string.lower,
      string.upper, string.char, string.rep
local concat, sort = table.concat, table.sort
local getinfo = debug.getinfo
local huge = math.huge

-- LuaJIT's table.new presizes the params table; plain Lua falls back to {}.
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end

local _M = {}

local SOURCE = getinfo(1, "S").source
local SLASH = 47

local EMPTY = setmetatable({}, {__newindex = function() error("read-only table", 2) end})

-- Misuse is reported at the first stack frame outside this file, which is the line of the
-- routes file (or the application code) that made the mistake, however deep the DSL call went.
local function misuse(msg)
  local level = 2
  while true do
    local info = getinfo(level, "S")
    if info == nil or info.source ~= SOURCE then break end
    level = level + 1
  end
  error("rage.router: " .. msg, level)
end

---------------------------------------------------------------------------------------------------
-- Percent-encoding. Replacement tables instead of functions keep gsub free of closures.

local ENC, DEC = {}, {}
do
  local hex = "0123456789ABCDEF"
  for b = 0, 255 do
    local h, l = (b - b % 16) / 16 + 1, b % 16 + 1
    local hi, lo = sub(hex, h, h), sub(hex, l, l)
    ENC[char(b)] = "%" .. hi .. lo
    DEC["%" .. hi .. lo] = char(b)
    DEC["%" .. lower(hi) .. lo] = char(b)
    DEC["%" .. hi .. lower(lo)] = char(b)
    DEC["%" .. lower(hi) .. lower(lo)] = char(b)
  end
end

local function unescape(s)
  if find(s, "%", 1, true) then return (gsub(s, "%%%x%x", DEC)) end
  return s
end

-- What may stay unescaped in a path segment (RFC 3986 pchar without "%"), in a wildcard value
-- (the same plus "/"), in a literal written in a pattern (the same plus "%", already encoded),
-- and in a query string component (unreserved only).
local SEGMENT_UNSAFE = "[^%w%-%._~!%$&'%(%)%*%+,;=:@]"
local GLOB_UNSAFE = "[^%w%-%._~!%$&'%(%)%*%+,;=:@/]"
local LITERAL_UNSAFE = "[^%w%-%._~!%$&'%*%+,;=:@%%]"
local QUERY_UNSAFE = "[^%w%-%._~]"

local function escape_literal(s)
  return (gsub(gsub(s, LITERAL_UNSAFE, ENC), "%%%x%x", upper))
end

local function escape_magic(s)
  return (gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

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
-- Patterns. "/photos/:id(.:format)" becomes tokens: "lit" text, "sep" for "/", "param" and "glob"
-- with a name, and "group" for an optional part. Optional groups are expanded into variants,
-- each a plain list of segments that the tree can hold.

local SEP = {t = "sep"}
local MAX_VARIANTS = 64
local MAX_SEGMENT_CAPTURES = 6

local function parse_pattern(path)
  local root = {}
  local stack, cur = {root}, root
  local names = {}
  local pos, len = 1, #path
  while pos <= len do
    local c = byte(path, pos)
    if c == SLASH then
      cur[#cur + 1] = SEP
      pos = pos + 1
    elseif c == 58 or c == 42 then -- ":" or "*"
      local name = match(path, "^[%a_][%w_]*", pos + 1)
      if name == nil then
        misuse("bad pattern " .. path .. ": '" .. char(c) .. "' must be followed by a name")
      end
      if names[name] then misuse("bad pattern " .. path .. ": parameter '" .. name .. "' appears twice") end
      names[name] = true
      names[#names + 1] = name
      cur[#cur + 1] = {t = c == 58 and "param" or "glob", name = name}
      pos = pos + 1 + #name
    elseif c == 40 then -- "("
      local group = {t = "group", toks = {}}
      cur[#cur + 1] = group
      cur = group.toks
      stack[#stack + 1] = cur
      pos = pos + 1
    elseif c == 41 then -- ")"
      if #stack == 1 then misuse("bad pattern " .. path .. ": unbalanced ')'") end
      if #cur == 0 then misuse("bad pattern " .. path .. ": empty optional group") end
      stack[#stack] = nil
      cur = stack[#stack]
      pos = pos + 1
    else
      local stop = find(path, "[/:%*%(%)]", pos)
      stop = stop and stop - 1 or len
      cur[#cur + 1] = {t = "lit", s = sub(path, pos, stop)}
      pos = stop + 1
    end
  end
  if #stack > 1 then misuse("bad pattern " .. path .. ": unbalanced '('") end
  return root, names
end

-- Rails matches an optional group greedily after a parameter (":id(.:format)" gives "1.json" to
-- :id when a constraint lets :id hold dots) and lazily after a wildcard ("*path(.:format)" splits
-- off the format). Variant order reproduces that: the variant tried first wins a tie.
local function expand(toks, path)
  local out = {{}}
  for i = 1, #toks do
    local tok = toks[i]
    if tok.t ~= "group" then
      for k = 1, #out do local list = out[k]; list[#list + 1] = tok end
    else
      local subs, nxt = expand(tok.toks, path), {}
      for k = 1, #out do
        local base = out[k]
        local with = {}
        for s = 1, #subs do
          local list = {}
          for j = 1, #base do list[j] = base[j] end
          for j = 1, #subs[s] do list[#list + 1] = subs[s][j] end
          with[s] = list
        end
        local last = base[#base]
        if last ~= nil and last.t == "glob" then
          for s = 1, #with do nxt[#nxt + 1] = with[s] end
          nxt[#nxt + 1] = base
        else
          nxt[#nxt + 1] = base
          for s = 1, #with do nxt[#nxt + 1] = with[s] end
        end
      end
      out = nxt
      if #out > MAX_VARIANTS then misuse("bad pattern " .. path .. ": too many optional groups") end
    end
  end
  return out
end

local K_STATIC, K_FORMAT, K_PARAM, K_ANY, K_PFORMAT, K_MIXED, K_GLOB = 1, 2, 3, 4, 5, 6, 7

-- One segment of a variant becomes one edge of the tree. A lone :param takes any segment without
-- a dot (the dot is the format separator, as in Rails) unless a constraint decides what it
-- takes; "photos.:format" is keyed by its static part, so a hundred formatted static routes
-- cost one hash lookup rather than a hundred pattern matches; ":id.:format" splits at the last
-- dot with a plain find; anything else mixed ("v:version") becomes an anchored Lua pattern; a
-- wildcard starts a segment and takes one or more whole segments.
local function edge_for(pieces, cons, names, path)
  local first = pieces[1]
  if #pieces == 1 and first.t == "lit" then
    return {kind = K_STATIC, key = escape_literal(first.s)}
  end
  local second = pieces[2]
  if #pieces == 2 and first.t == "lit" and second.t == "param" and not cons[second.name]
     and #first.s > 1 and byte(first.s, -1) == 46 then
    names[#names + 1] = second.name
    return {kind = K_FORMAT, key = escape_literal(sub(first.s, 1, -2)), ncap = 1}
  end
  local third = pieces[3]
  if #pieces == 3 and first.t == "param" and second.t == "lit" and second.s == "." and third.t == "param"
     and not cons[third.name] then
    names[#names + 1] = first.name
    names[#names + 1] = third.name
    -- An unconstrained first parameter holds no dot; a constrained one takes up to the last dot.
    if cons[first.name] then return {kind = K_PFORMAT, key = "F", ncap = 2, dots = true} end
    return {kind = K_PFORMAT, key = "f", ncap = 2, dots = false}
  end
  if #pieces == 1 and first.t == "param" then
    names[#names + 1] = first.name
    if cons[first.name] then return {kind = K_ANY, key = "P", ncap = 1} end
    return {kind = K_PARAM, key = "p", ncap = 1}
  end
  local buf, ncap, prev = {"^"}, 0, nil
  local glob = first.t == "glob"
  for k = 1, #pieces do
    local p = pieces[k]
    if p.t == "glob" then
      if k > 1 then misuse("bad pattern " .. path .. ": a wildcard must start a path segment") end
      buf[#buf + 1] = "(..-)"
      names[#names + 1] = p.name
      ncap = ncap + 1
    elseif p.t == "param" then
      if prev ~= "lit" and prev ~= nil then
        misuse("bad pattern " .. path .. ": two parameters need literal text between them")
      end
      buf[#buf + 1] = cons[p.name] and "([^/]+)" or "([^%./]+)"
      names[#names + 1] = p.name
      ncap = ncap + 1
    else
      buf[#buf + 1] = escape_magic(escape_literal(p.s))
    end
    prev = p.t == "lit" and "lit" or "cap"
  end
  if ncap > MAX_SEGMENT_CAPTURES then
    misuse("bad pattern " .. path .. ": too many parameters in one segment")
  end
  buf[#buf + 1] = "$"
  if glob then
    if #pieces == 1 then return {kind = K_GLOB, key = "g", ncap = 1} end
    local pat = concat(buf)
    return {kind = K_GLOB, key = "g" .. pat, pat = pat, ncap = ncap}
  end
  local pat = concat(buf)
  return {kind = K_MIXED, key = "m" .. pat, pat = pat, ncap = ncap}
end

-- Turns one expanded variant into its edges, the names of its captures in order and, when every
-- edge is static, the exact path the static hash is keyed by.
local function compile_variant(flat, cons, path, is_mount)
  local segs, cur = {}, nil
  for i = 1, #flat do
    local tok = flat[i]
    if tok == SEP then
      cur = nil
    else
      if cur == nil then cur = {}; segs[#segs + 1] = cur end
      local last = cur[#cur]
      if tok.t == "lit" and last ~= nil and last.t == "lit" then
        cur[#cur] = {t = "lit", s = last.s .. tok.s}
      else
        cur[#cur + 1] = tok
      end
    end
  end
  local edges, names, static = {}, {}, true
  for i = 1, #segs do
    local e = edge_for(segs[i], cons, names, path)
    if e.kind ~= K_STATIC then static = false end
    if is_mount and e.kind == K_GLOB then
      misuse("mount " .. path .. ": a mount path cannot hold a wildcard")
    end
    edges[i] = e
  end
  local static_path
  if static then
    local keys = {}
    for i = 1, #edges do keys[i] = edges[i].key end
    static_path = "/" .. concat(keys, "/")
  end
  return {edges = edges, names = names, static_path = static_path}
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
local ALL_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

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

---------------------------------------------------------------------------------------------------
-- The compiled tree and the matcher.

local function new_node(rank)
  return {min_rank = rank, static = nil, fmt = nil, dyn = nil, dynkey = nil, leaves = nil, mounts = nil}
end

local function insert(root, v, edges)
  local node = root
  for i = 1, #edges do
    local e = edges[i]
    local child
    if e.kind == K_STATIC or e.kind == K_FORMAT then
      local field = e.kind == K_STATIC and "static" or "fmt"
      local st = node[field]
      if st == nil then st = {}; node[field] = st end
      child = st[e.key]
      if child == nil then child = new_node(v.rank); st[e.key] = child end
    else
      local dk = node.dynkey
      if dk == nil then dk = {}; node.dynkey = dk; node.dyn = {} end
      local edge = dk[e.key]
      if edge == nil then
        edge = {kind = e.kind, pat = e.pat, ncap = e.ncap, dots = e.dots, node = new_node(v.rank)}
        dk[e.key] = edge
        node.dyn[#node.dyn + 1] = edge
      end
      child = edge.node
    end
    node = child
  end
  if v.mount then
    node.mounts = node.mounts or {}
    node.mounts[#node.mounts + 1] = v
  else
    node.leaves = node.leaves or {}
    node.leaves[#node.leaves + 1] = v
  end
end

-- Host and subdomain constraints: a value made only of host-name characters must equal the
-- request's host (case-insensitively, port removed); anything else is a Lua pattern.
local function host_test(v)
  if find(v, "^[%w%.%-:%[%]]+$") then return lower(v), nil end
  return nil, v
end

local function request_host(S)
  if not S.host_done then
    local h = S.host
    if type(h) == "string" then
      h = lower(h)
      if byte(h, 1) == 91 then
        h = match(h, "^%[[^%]]*%]") or h
      else
        local colon = find(h, ":", 1, true)
        if colon then h = sub(h, 1, colon - 1) end
      end
    else
      h = nil
    end
    S.host_norm, S.host_done = h, true
  end
  return S.host_norm
end

local function host_ok(S, v)
  local h = request_host(S)
  if h == nil then return false end
  if v.host_eq and h ~= v.host_eq then return false end
  if v.host_pat and not find(h, v.host_pat) then return false end
  if v.sub_eq or v.sub_pat then
    local subdomain = match(h, "^(.*)%.[^%.]+%.[^%.]+$") or ""
    if v.sub_eq and subdomain ~= v.sub_eq then return false end
    if v.sub_pat and not find(subdomain, v.sub_pat) then return false end
  end
  return true
end

-- Tries one route variant whose pattern matched; i is where a mount's remainder starts.
local function try_leaf(S, v, i)
  if v.host_check and not S.host_any and not host_ok(S, v) then return false end
  local checks = v.checks
  if checks then
    local caps = S.caps
    for k = 1, #checks, 2 do
      if not find(unescape(caps[checks[k]]), checks[k + 1]) then return false end
    end
  end
  local ok
  if S.explicit then ok = v.methods[S.method] else ok = v.any or v.methods[S.method] end
  if ok then
    S.best, S.best_rank, S.best_rest = v, v.rank, i
    local n, caps, bc = S.ncaps, S.caps, S.best_caps
    for k = 1, n do bc[k] = caps[k] end
    S.best_ncaps = n
    return true
  end
  if S.best == nil then
    local allowed = S.allowed
    if allowed == nil then allowed = {}; S.allowed = allowed end
    local verbs = v.allow
    for k = 1, #verbs do allowed[verbs[k]] = true end
  end
  return false
end

-- Depth-first search for the lowest-ranked route that matches, with an explicit stack so the JIT
-- compiles it as one loop. A frame is a node, the segment index it starts at, its phase (-2 on
-- entry, -1 once the static child is done, 0 once the format child is done, then the index of
-- the last dynamic edge tried), the capture count on entry, and for a wildcard edge the last
-- segment it was tried up to. A subtree is skipped as soon as it cannot hold anything ranked
-- before the best match found so far; dynamic edges are kept in rank order, so the first one
-- that cannot ends the loop.
-- Tries the mounts and the routes that end at a node reached with the whole path consumed;
-- returns the new best rank.
local function at_end(S, node, i, nc, best_rank)
  if node.min_rank >= best_rank then return best_rank end
  S.ncaps = nc
  local mounts = node.mounts
  if mounts then
    for m = 1, #mounts do
      local v = mounts[m]
      if v.rank >= best_rank then break end
      if try_leaf(S, v, i) then return v.rank end
    end
  end
  local leaves = node.leaves
  if leaves then
    for m = 1, #leaves do
      local v = leaves[m]
      if v.rank >= best_rank then break end
      if try_leaf(S, v, i) then return v.rank end
    end
  end
  return best_rank
end

-- The position of the last "." in s, or nil.
local function last_dot(s)
  local d = find(s, ".", 1, true)
  if d == nil then return nil end
  while true do
    local nxt = find(s, ".", d + 1, true)
    if nxt == nil then return d end
    d = nxt
  end
end

local function walk(S, root)
  local nodes, fis, fks, fcs, fjs = S.fn, S.fi, S.fk, S.fc, S.fj
  local segs, n, caps = S.segs, S.n, S.caps
  local best_rank = S.best_rank
  local d = 1
  nodes[1], fis[1], fks[1], fcs[1], fjs[1] = root, 1, -2, 0, 0
  while d > 0 do
    local node, i, k = nodes[d], fis[d], fks[d]
    local nc = fcs[d]
    if k == -2 then
      if i > n then
        best_rank = at_end(S, node, i, nc, best_rank)
        d = d - 1
        goto continue
      end
      if node.min_rank >= best_rank then
        d = d - 1
        goto continue
      end
      local mounts = node.mounts
      if mounts then
        S.ncaps = nc
        for m = 1, #mounts do
          local v = mounts[m]
          if v.rank >= best_rank then break end
          if try_leaf(S, v, i) then best_rank = v.rank; break end
        end
      end
      local st = node.static
      if st then
        local child = st[segs[i]]
        if child and child.min_rank < best_rank then
          if i == n then
            best_rank = at_end(S, child, i + 1, nc, best_rank)
          else
            fks[d] = -1
            d = d + 1
            nodes[d], fis[d], fks[d], fcs[d] = child, i + 1, -2, nc
            goto continue
          end
        end
      end
      k = -1
    end
    if k == -1 then
      local fmt = node.fmt
      if fmt then
        local seg = segs[i]
        local dot = last_dot(seg)
        local child = dot and dot < #seg and fmt[sub(seg, 1, dot - 1)]
        if child and child.min_rank < best_rank then
          caps[nc + 1] = sub(seg, dot + 1)
          if i == n then
            best_rank = at_end(S, child, i + 1, nc + 1, best_rank)
          else
            fks[d] = 0
            d = d + 1
            nodes[d], fis[d], fks[d], fcs[d] = child, i + 1, -2, nc + 1
            goto continue
          end
        end
      end
      k, fjs[d] = 0, 0
    end
    do
      local dyn, j = node.dyn, fjs[d]
      while dyn do
        local edge
        if k > 0 and j < n and dyn[k].kind == K_GLOB then
          edge, j = dyn[k], j + 1
        else
          k = k + 1
          edge = dyn[k]
          if edge == nil then break end
          j = i
        end
        local child = edge.node
        if child.min_rank >= best_rank then break end
        local kind, ok = edge.kind, false
        if kind == K_PARAM then
          local seg = segs[i]
          if not find(seg, ".", 1, true) then caps[nc + 1], ok = seg, true end
        elseif kind == K_ANY then
          caps[nc + 1], ok = segs[i], true
        elseif kind == K_PFORMAT then
          local seg = segs[i]
          local dot = last_dot(seg)
          if dot and dot > 1 and dot < #seg and (edge.dots or find(seg, ".", 1, true) == dot) then
            caps[nc + 1], caps[nc + 2], ok = sub(seg, 1, dot - 1), sub(seg, dot + 1), true
          end
        else
          local str = segs[i]
          if kind == K_GLOB then str = sub(S.path, S.starts[i], S.ends[j]) end
          local pat = edge.pat
          if pat == nil then
            caps[nc + 1], ok = str, true
          else
            local a, b, c, e, f, g = match(str, pat)
            if a then
              caps[nc + 1], caps[nc + 2], caps[nc + 3], caps[nc + 4], caps[nc + 5], caps[nc + 6] =
                a, b, c, e, f, g
              ok = true
            end
          end
        end
        if ok then
          if j == n then
            best_rank = at_end(S, child, j + 1, nc + edge.ncap, best_rank)
          else
            fks[d], fjs[d] = k, j
            d = d + 1
            nodes[d], fis[d], fks[d], fcs[d] = child, j + 1, -2, nc + edge.ncap
            goto continue
          end
        end
      end
      d = d - 1
    end
    ::continue::
  end
end

-- Splits a normalized path into the scratch segment arrays. A normalized path has no empty
-- segment, so "%2F" inside a segment never splits it: only a literal "/" does.
local function split(S, path)
  local segs, starts, ends = S.segs, S.starts, S.ends
  local n, pos, len = 0, 2, #path
  while pos <= len do
    local slash = find(path, "/", pos, true)
    local stop = slash and slash - 1 or len
    n = n + 1
    segs[n], starts[n], ends[n] = sub(path, pos, stop), pos, stop
    if slash == nil then break end
    pos = slash + 1
  end
  S.n, S.path = n, path
end

-- Runs the search for one method: HEAD first looks for routes that name HEAD explicitly, then is
-- served by GET routes, as Rails does.
local function search(self, S, method)
  S.best, S.best_rank, S.allowed, S.ncaps = nil, huge, nil, 0
  local root = self._root
  if method == "HEAD" then
    if self._has_head then
      S.method, S.explicit = "HEAD", true
      walk(S, root)
      if S.best then return S.best end
    end
    method = "GET"
  end
  S.method, S.explicit, S.ncaps = method, false, 0
  walk(S, root)
  return S.best
end

-- Rails' normalize_path: slashes squeezed, no trailing slash, percent escapes in upper case.
local function normalize(path)
  if find(path, "//", 1, true) then path = gsub(path, "//+", "/") end
  local trailing = false
  if #path > 1 and byte(path, -1) == SLASH then
    path = sub(path, 1, -2)
    trailing = true
  end
  if find(path, "%", 1, true) then path = gsub(path, "%%%x%x", upper) end
  return path, trailing
end

local function hit(v)
  local params = {}
  local dn = v.dn
  if dn > 0 then
    local dk, dv = v.dk, v.dv
    for k = 1, dn do params[dk[k]] = dv[k] end
  end
  return v.route, params
end

local compile

local function match_slow(self, method, path, host)
  local len = #path
  if len == 0 then
    path = "/"
  elseif byte(path, 1) ~= SLASH then
    return nil, nil
  end
  local trailing = false
  if (len > 1 and byte(path, len) == SLASH) or find(path, "//", 1, true) or find(path, "%", 1, true) then
    path, trailing = normalize(path)
    local e = self._static[path]
    if e then
      local v = e[method]
      if v then return hit(v) end
    end
  end
  local S = self._state
  split(S, path)
  S.host, S.host_done, S.host_any = host, false, false
  local v = search(self, S, method)
  if v == nil then
    local allowed = S.allowed
    if allowed == nil then return nil, nil end
    local list = {}
    for mth in pairs(allowed) do list[#list + 1] = mth end
    sort(list)
    return nil, list
  end
  local nb = S.best_ncaps
  local params = new_tab(0, v.dn + nb + (v.mount and 2 or 0))
  for k = 1, v.dn do params[v.dk[k]] = v.dv[k] end
  local names, bc = v.names, S.best_caps
  for k = 1, nb do params[names[k]] = unescape(bc[k]) end
  if v.mount then
    local rest = S.best_rest
    if rest <= S.n then
      local from = S.starts[rest] - 1
      params.path_info = sub(path, from) .. (trailing and "/" or "")
      params.script_name = sub(path, 1, from - 1)
    else
      params.path_info = "/"
      params.script_name = path == "/" and "" or path
    end
  end
  return v.route, params
end

compile = function(self)
  if self._static ~= nil then return end
  local root = new_node(huge)
  local rank, statics, has_head, uses_host, verb_universe = 0, {}, false, false, {}
  local entries = self._entries
  for i = 1, #entries do
    local entry = entries[i]
    local methods, allow = {}, {}
    if not entry.any then
      for k = 1, #entry.verbs do
        local mth = entry.verbs[k]
        methods[mth] = true
        verb_universe[mth] = true
        allow[#allow + 1] = mth
        if mth == "HEAD" then has_head = true end
      end
      if methods.GET and not methods.HEAD then allow[#allow + 1] = "HEAD" end
    end
    local host = entry.host
    local host_eq, host_pat, sub_eq, sub_pat
    if host then
      uses_host = true
      if host.host then host_eq, host_pat = host_test(host.host) end
      if host.subdomain then sub_eq, sub_pat = host_test(host.subdomain) end
    end
    for j = 1, #entry.variants do
      local var = entry.variants[j]
      rank = rank + 1
      if rank == 1 then root.min_rank = 1 end
      local checks
      for k = 1, #var.names do
        local pat = entry.cons[var.names[k]]
        if pat then
          checks = checks or {}
          checks[#checks + 1] = k
          checks[#checks + 1] = pat
        end
      end
      local v = {
        route = entry.route, rank = rank, names = var.names, checks = checks, methods = methods,
        any = entry.any or false, allow = allow, mount = entry.mount or false,
        host_check = host ~= nil, host_eq = host_eq, host_pat = host_pat, sub_eq = sub_eq, sub_pat = sub_pat,
        dk = entry.dk, dv = entry.dv, dn = entry.dn,
      }
      insert(root, v, var.edges)
      if var.static_path and not v.mount and host == nil then statics[#statics + 1] = {v, var.static_path} end
    end
  end
  -- uses_host tells the dispatcher whether the Host header is worth reading for match().
  self._root, self._has_head, self.uses_host = root, has_head, uses_host

  -- The static hash holds an answer only where the tree gives that same static route for that
  -- method whatever the host: the search runs with host constraints treated as met, so a
  -- host-constrained route ranked earlier keeps the path on the slow path.
  local static = {}
  self._static = static
  local S = self._state
  local fast = {}
  for i = 1, #statics do
    local v, path = statics[i][1], statics[i][2]
    local list
    if v.any then
      list = {}
      for k = 1, #ALL_METHODS do list[k] = ALL_METHODS[k] end
      for mth in pairs(verb_universe) do list[#list + 1] = mth end
    else
      list = v.allow
    end
    for k = 1, #list do
      local mth = list[k]
      local e = fast[path]
      if e == nil then e = {}; fast[path] = e end
      if e[mth] == nil then
        split(S, path)
        S.host, S.host_done, S.host_any = nil, false, true
        local winner = search(self, S, mth)
        e[mth] = winner == v and v or false
      end
    end
  end
  for path, e in pairs(fast) do
    local t = {}
    for mth, v in pairs(e) do if v then t[mth] = v end end
    if next(t) ~= nil then
      static[path] = t
      if path ~= "/" then static[path .. "/"] = t end
    end
  end
end

---------------------------------------------------------------------------------------------------
-- Named routes.

local function to_param(v, name, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    if type(v.to_param) == "function" then return tostring(v:to_param()) end
    if v.id ~= nil then return tostring(v.id) end
  end
  misuse(what .. ": param '" .. name .. "' must be a string, a number or a record with an id")
end

local function same(a, b)
  return a == b or tostring(a) == tostring(b)
end

-- Appends the pattern tokens to buf. Inside an optional group a missing parameter (or one equal to
-- its default) drops the group; outside one it is an error.
local function generate(entry, toks, params, used, buf, optional, what)
  local defaults = entry.route.defaults
  for i = 1, #toks do
    local tok = toks[i]
    local t = tok.t
    if t == "sep" then
      buf[#buf + 1] = "/"
    elseif t == "lit" then
      buf[#buf + 1] = escape_literal(tok.s)
    elseif t == "group" then
      local sub_buf, sub_used = {}, {}
      if generate(entry, tok.toks, params, sub_used, sub_buf, true, what) then
        for k = 1, #sub_buf do buf[#buf + 1] = sub_buf[k] end
        for k in pairs(sub_used) do used[k] = true end
      end
    else
      local name = tok.name
      local v = params[name]
      local d = defaults[name]
      if v == nil or (optional and d ~= nil and same(v, d)) then
        if optional then return false end
        v = d
        if v == nil then
          misuse(what .. ": missing required param '" .. name .. "' for " .. entry.route.path)
        end
      end
      v = to_param(v, name, what)
      if v == "" then
        if optional then return false end
        misuse(what .. ": param '" .. name .. "' is empty")
      end
      local pat = entry.cons[name]
      if pat and not find(v, pat) then
        misuse(what .. ": param '" .. name .. "' = '" .. v .. "' does not match its constraint " .. pat)
      end
      local enc
      if t == "glob" then
        enc = gsub(v, GLOB_UNSAFE, ENC)
        if entry.has_format and entry.escape_dot[name] then enc = gsub(enc, "%.", "%%2E") end
      else
        enc = gsub(v, SEGMENT_UNSAFE, ENC)
        if entry.escape_dot[name] then enc = gsub(enc, "%.", "%%2E") end
      end
      buf[#buf + 1] = enc
      used[name] = true
    end
  end
  return true
end

local function query_pairs(out, key, v, what)
  if type(v) == "table" and v.to_param == nil and v.id == nil then
    if #v > 0 or next(v) == nil then
      for i = 1, #v do query_pairs(out, key .. "[]", v[i], what) end
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      sort(keys)
      for i = 1, #keys do
        local k = keys[i]
        local sv = v[k]
        if sv == nil then sv = v[tonumber(k)] end
        query_pairs(out, key .. "[" .. k .. "]", sv, what)
      end
    end
    return
  end
  out[#out + 1] = gsub(key, QUERY_UNSAFE, ENC) .. "=" .. gsub(to_param(v, key, what), QUERY_UNSAFE, ENC)
end

---------------------------------------------------------------------------------------------------
-- The router object.

local Router = {}
Router.__index = Router

function _M.new()
  return setmetatable({
    _entries = {}, _list = {}, _names = {}, _static = nil, _root = nil, _has_head = false,
    uses_host = false,
    _state = {segs = {}, starts = {}, ends = {}, caps = {}, best_caps = {}, n = 0, ncaps = 0,
              best_ncaps = 0, best_rank = huge, fn = {}, fi = {}, fk = {}, fc = {}, fj = {}},
  }, Router)
end

local ROOT_FRAME = {
  path = "", module = nil, as = nil, controller = nil, defaults = EMPTY, constraints = EMPTY,
  format = nil, level = false, resource = false,
}

-- Runs a routes function (the one config/routes.lua returns). May be called more than once
-- before compile(); routes accumulate in call order.
function Router:draw(fn)
  if getmetatable(self) ~= Router then misuse("draw: call it with ':' (router:draw(fn))") end
  if type(fn) ~= "function" then misuse("draw: a function(r) ... end is required") end
  if self._static ~= nil then misuse("draw: routes are compiled; draw every route before compile()") end
  fn(new_mapper(self, ROOT_FRAME))
  return self
end

-- Freezes the route table and builds the match structures. Calling it again does nothing; match()
-- calls it on first use.
function Router:compile()
  compile(self)
  return self
end

-- match(method, path, host) → route, params | nil, allowed | nil, nil.
-- The static hit path is one hash lookup and one new table, on purpose: it runs on every request.
function Router:match(method, path, host)
  local static = self._static
  if static == nil then
    compile(self)
    static = self._static
  end
  local e = static[path]
  if e ~= nil then
    local v = e[method]
    if v ~= nil then
      local params = {}
      local dn = v.dn
      if dn > 0 then
        local dk, dv = v.dk, v.dv
        for k = 1, dn do params[dk[k]] = dv[k] end
      end
      return v.route, params
    end
  end
  return match_slow(self, method, path, host)
end

-- url_for(name, params) → path (with a query string for the params the path does not use).
function Router:url_for(name, params)
  local entry = self._names[name]
  if entry == nil then misuse("url_for: no route named '" .. tostring(name) .. "'") end
  if params == nil then params = EMPTY
  elseif type(params) ~= "table" then misuse("url_for: params must be a table") end
  local what = "url_for(\"" .. name .. "\")"
  local buf, used = {}, {}
  generate(entry, entry.toks, params, used, buf, false, what)
  local path = concat(buf)
  if path == "" then path = "/" end
  local defaults = entry.route.defaults
  local keys = {}
  for k, v in pairs(params) do
    if not used[k] and not (defaults[k] ~= nil and same(v, defaults[k])) then
      if type(k) ~= "string" then misuse(what .. ": param keys must be strings") end
      keys[#keys + 1] = k
    end
  end
  if #keys == 0 then return path end
  sort(keys)
  local out = {}
  for i = 1, #keys do query_pairs(out, keys[i], params[keys[i]], what) end
  if #out == 0 then return path end
  return path .. "?" .. concat(out, "&")
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
