-- rage.router.tree: the compiled matcher.
--
-- compile() freezes the routes defined so far into two structures: a hash from fully static paths
-- to their route, which answers the common case with one lookup, and a segment tree (static
-- children, then parameters, then wildcards) that answers everything else. The tree is searched
-- with backtracking and pruned by route rank, so the answer is always the route a linear scan in
-- definition order would pick, as in Rails. The hash holds only answers that compile() proved
-- equal to the tree's, so the two never disagree. match() runs on every request: a match creates
-- no table but the params it returns, and every search works in the scratch state of new_state().

local type, pairs, next, pcall = type, pairs, next, pcall
local byte, sub, find, match, gsub, lower, upper = string.byte, string.sub, string.find, string.match,
                                                  string.gsub, string.lower, string.upper
local sort = table.sort
local huge = math.huge

-- LuaJIT's table.new presizes the params table; plain Lua falls back to {}.
local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end

local util = require("rage.router.util")
local SLASH = util.SLASH
local unescape = require("rage.router.url").unescape
local pattern = require("rage.router.pattern")
local K_STATIC, K_FORMAT, K_PARAM, K_ANY, K_PFORMAT, K_GLOB =
      pattern.K_STATIC, pattern.K_FORMAT, pattern.K_PARAM, pattern.K_ANY, pattern.K_PFORMAT, pattern.K_GLOB
util.own()

local _M = {}

-- The methods a static route with via = "all" answers in the static hash, besides every method
-- some other route names.
local ALL_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

-- A node of the segment tree. min_rank is the lowest rank of any route in its subtree.
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

-- Depth-first search for the lowest-ranked route that matches, with an explicit stack so the JIT
-- compiles it as one loop. A frame is a node, the segment index it starts at, its phase (-2 on
-- entry, -1 once the static child is done, 0 once the format child is done, then the index of
-- the last dynamic edge tried), the capture count on entry, and for a wildcard edge the last
-- segment it was tried up to. A subtree is skipped as soon as it cannot hold anything ranked
-- before the best match found so far; dynamic edges are kept in rank order, so the first one
-- that cannot ends the loop.
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

-- compile(router) builds router._root and router._static from router._entries, which the DSL
-- filled, and sets router.uses_host. A second call does nothing.
local function compile(self)
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

-- match(router, method, path, host) → route, params | nil, allowed | nil, nil; it compiles the
-- router on first use. rage.router installs it as the method itself, so a request pays for no
-- extra call. The static hit path is one hash lookup, on purpose: it runs on every request. A
-- static route without defaults has no params (nil); one with defaults gets a new table.
local function match_route(self, method, path, host)
  local static = self._static
  if static == nil then
    compile(self)
    static = self._static
  end
  local e = static[path]
  if e ~= nil then
    local v = e[method]
    if v ~= nil then
      local dn = v.dn
      if dn == 0 then return v.route, nil end
      local params, dk, dv = {}, v.dk, v.dv
      for k = 1, dn do params[dk[k]] = dv[k] end
      return v.route, params
    end
  end
  return match_slow(self, method, path, host)
end

-- The scratch state of one router's searches: the path split into segments, the captures, the
-- best match so far and the explicit stack walk() runs on. A search never yields, so all the
-- searches of one router share one.
local function new_state()
  return {segs = {}, starts = {}, ends = {}, caps = {}, best_caps = {}, n = 0, ncaps = 0,
          best_ncaps = 0, best_rank = huge, fn = {}, fi = {}, fk = {}, fc = {}, fj = {}}
end

_M.compile, _M.match, _M.new_state = compile, match_route, new_state

return _M
