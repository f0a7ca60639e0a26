-- rage.router.pattern: route patterns, from the text in config/routes.lua to edges of the tree.
--
-- "/photos/:id(.:format)" is parsed into tokens: "lit" text, "sep" for "/", "param" and "glob"
-- with a name, and "group" for an optional part. url_for generates paths from those tokens.
-- For matching, optional groups are expanded into variants, each a plain list of segments, and
-- each segment becomes one edge of the segment tree in rage.router.tree, of one of the kinds
-- this module defines. All of it runs as a route is defined, so a bad pattern is reported at the
-- line that wrote it.

local byte, sub, find, match, gsub, char = string.byte, string.sub, string.find, string.match,
                                          string.gsub, string.char
local concat = table.concat

local util = require("rage.router.util")
local misuse, SLASH = util.misuse, util.SLASH
local escape_literal = require("rage.router.url").escape_literal
util.own()

local _M = {}

local SEP = {t = "sep"}
local MAX_VARIANTS = 64
local MAX_SEGMENT_CAPTURES = 6

-- parse(path) → tokens, the names of its parameters (a list that is also a set).
function _M.parse(path)
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

-- expand(toks, path) → the variants, each a flat list of tokens without groups.
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
_M.expand = expand

-- The kinds of edge edge_for() makes; the tree matches each kind its own way.
local K_STATIC, K_FORMAT, K_PARAM, K_ANY, K_PFORMAT, K_MIXED, K_GLOB = 1, 2, 3, 4, 5, 6, 7
_M.K_STATIC, _M.K_FORMAT, _M.K_PARAM, _M.K_ANY, _M.K_PFORMAT, _M.K_MIXED, _M.K_GLOB =
  K_STATIC, K_FORMAT, K_PARAM, K_ANY, K_PFORMAT, K_MIXED, K_GLOB

local function escape_magic(s)
  return (gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

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

-- variant(flat, cons, path, is_mount) turns one expanded variant into its edges, the names of its
-- captures in order and, when every edge is static, the exact path the static hash is keyed by.
function _M.variant(flat, cons, path, is_mount)
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

return _M
