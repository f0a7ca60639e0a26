-- spec/support/upstreams/hostile.lua: an HTTP server that misbehaves on purpose, for the HTTP
-- client specs. Run with plain LuaJIT and LuaSocket:
--
--   luajit spec/support/upstreams/hostile.lua      -- prints "listening on PORT", then serves
--
-- It listens on 127.0.0.1 on an ephemeral port and serves many connections at once: each
-- connection is a coroutine and one socket.select() loop runs them all. The request path picks
-- the behaviour (see ROUTES). Every response that is not hostile carries the client's port and
-- a connection number, so a spec can tell whether a connection was reused.

local socket = require("socket")

local srv = assert(socket.bind("127.0.0.1", 0))
srv:settimeout(0)
local _, port = srv:getsockname()
io.stdout:write("listening on ", port, "\n")
io.stdout:flush()

local threads = {}   -- list of {co =, sock =, want = "r" | "w" | nil, wake = time}
local nconn = 0
local drop_next = {} -- connection id -> true: close when its next request arrives

local function wait(mode, sock, seconds)
  coroutine.yield(mode, sock, seconds)
end

local function sleep(seconds)
  wait(nil, nil, seconds)
end

-- Sends all of data; false when the client has gone.
local function send(c, data)
  local i = 1
  while i <= #data do
    local last, err, partial = c.sock:send(data, i)
    if last then
      i = last + 1
    else
      if err == "closed" then return false end
      i = (partial or i - 1) + 1
      if i <= #data then wait("w", c.sock) end
    end
  end
  return true
end

-- Reads until `n` bytes or a full head is buffered; nil when the client closed first.
local function fill(c, done)
  while not done(c.buf) do
    local data, err, partial = c.sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      c.buf = c.buf .. data
    elseif err == "closed" then
      return nil
    else
      wait("r", c.sock)
    end
  end
  return true
end

local function read_request(c)
  if not fill(c, function(b) return b:find("\r\n\r\n", 1, true) end) then return nil end
  local e = c.buf:find("\r\n\r\n", 1, true)
  local head = c.buf:sub(1, e + 3)
  c.buf = c.buf:sub(e + 4)
  local method, target = head:match("^(%u+) (%S+) HTTP/1%.1\r\n")
  local len = tonumber(head:lower():match("\r\ncontent%-length: *(%d+)")) or 0
  if not fill(c, function(b) return #b >= len end) then return nil end
  local body = c.buf:sub(1, len)
  c.buf = c.buf:sub(len + 1)
  return {method = method, target = target, head = head, body = body}
end

local function info(c, req)
  return string.format("peer=%d conn=%d n=%d method=%s", c.peer_port, c.id, c.n, req.method)
end

local function ok(c, req, extra)
  local body = info(c, req)
  return send(c, "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n" .. (extra or "") .. "\r\n" .. body)
end

local function param(req, name, default)
  return tonumber(req.target:match("[?&]" .. name .. "=(%d+)")) or default
end

local ROUTES = {}

-- A normal keep-alive response.
ROUTES["/peer"] = function(c, req) return ok(c, req) end

-- A keep-alive response, then the server closes the connection (the client pooled it).
ROUTES["/close-after"] = function(c, req)
  ok(c, req)
  sleep(0.05)
  return false
end

-- A keep-alive response, then, while the client has the connection idle, bytes nobody asked
-- for (a broken server): the connection stays open.
ROUTES["/late-bytes"] = function(c, req)
  ok(c, req)
  sleep(0.05)
  return send(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
end

-- A keep-alive response; the next request on this connection gets no answer, only a close.
ROUTES["/drop-next"] = function(c, req)
  drop_next[c.id] = true
  return ok(c, req)
end

-- Header lines for ever.
ROUTES["/endless-headers"] = function(c)
  if not send(c, "HTTP/1.1 200 OK\r\n") then return false end
  while send(c, "X-Filler: " .. string.rep("a", 100) .. "\r\n") do sleep(0.001) end
  return false
end

ROUTES["/many-headers"] = function(c)
  local h = {}
  for i = 1, param({target = c.target}, "n", 150) do h[#h + 1] = "X-H" .. i .. ": v\r\n" end
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" .. table.concat(h) .. "\r\nok")
  return true
end

-- The response head one byte at a time, `ms` apart (default 200).
ROUTES["/drip"] = function(c, req)
  local ms = param(req, "ms", 200)
  local resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
  for i = 1, #resp do
    if not send(c, resp:sub(i, i)) then return false end
    sleep(ms / 1000)
  end
  return true
end

-- A head at once, then the body one byte every `ms` (default 200).
ROUTES["/slow-body"] = function(c, req)
  local ms = param(req, "ms", 200)
  local n = param(req, "n", 20)
  if not send(c, "HTTP/1.1 200 OK\r\nContent-Length: " .. n .. "\r\n\r\n") then return false end
  for _ = 1, n do
    sleep(ms / 1000)
    if not send(c, "b") then return false end
  end
  return true
end

-- Reads the request and never answers.
ROUTES["/silent"] = function()
  sleep(30)
  return false
end

ROUTES["/cl-te"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
  return true
end

ROUTES["/dup-cl"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
  return true
end

ROUTES["/bad-chunk"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
  return true
end

ROUTES["/obs-fold"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok")
  return true
end

ROUTES["/bare-lf"] = function(c)
  send(c, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
  return true
end

-- A Content-Length of 100 MB (over the default limit); a few bytes are actually sent.
ROUTES["/huge"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" .. string.rep("h", 1000))
  sleep(1)
  return false
end

-- A chunked body of `n` KiB (default 1024).
ROUTES["/huge-chunked"] = function(c, req)
  local n = param(req, "n", 1024)
  if not send(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") then return false end
  local chunk = "400\r\n" .. string.rep("c", 1024) .. "\r\n"
  for _ = 1, n do
    if not send(c, chunk) then return false end
  end
  send(c, "0\r\n\r\n")
  return true
end

-- Promises 1000 bytes, sends 10, closes.
ROUTES["/early-close"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
  return false
end

ROUTES["/no-response"] = function() return false end

-- A body that ends when the connection closes (no Content-Length, no chunking).
ROUTES["/until-close"] = function(c)
  send(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
  return false
end

-- A complete response followed by bytes nobody asked for.
ROUTES["/extra"] = function(c, req)
  local body = info(c, req)
  send(c, "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body .. "GARBAGE")
  sleep(0.2)
  return false
end

ROUTES["/http10"] = function(c, req)
  local body = info(c, req)
  send(c, "HTTP/1.0 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
  sleep(0.2)
  return false
end

ROUTES["/204"] = function(c) return send(c, "HTTP/1.1 204 No Content\r\n\r\n") end
ROUTES["/304"] = function(c) return send(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n") end

ROUTES["/interim"] = function(c, req)
  local body = info(c, req)
  return send(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" ..
    "HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
end

-- Repeated headers and one with trailing spaces.
ROUTES["/repeated"] = function(c, req)
  local body = info(c, req)
  return send(c, "HTTP/1.1 200 OK\r\nX-Multi: a\r\nX-Multi: b\r\nX-Space: v  \r\n" ..
    "Set-Cookie: a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\nSet-Cookie: b=2\r\nSet-Cookie: c=3\r\n" ..
    "X-One-Cookie-Only: x\r\nContent-Length: " ..
    #body .. "\r\n\r\n" .. body)
end

local function serve(c)
  while true do
    local req = read_request(c)
    if not req then return end
    c.n = c.n + 1
    if drop_next[c.id] and c.n > 1 then return end
    local path = req.target:match("^[^?]*")
    local route = ROUTES[path]
    c.target = req.target
    local keep
    if route then
      keep = route(c, req)
    else
      keep = send(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    end
    if not keep then return end
  end
end

local function spawn(sock)
  nconn = nconn + 1
  sock:settimeout(0)
  sock:setoption("tcp-nodelay", true)
  local _, peer_port = sock:getpeername()
  local c = {sock = sock, buf = "", id = nconn, n = 0, peer_port = tonumber(peer_port)}
  local t = {sock = sock}
  t.co = coroutine.create(function()
    serve(c)
    sock:close()
  end)
  threads[#threads + 1] = t
end

local function step(t)
  local ok, mode, sock, seconds = coroutine.resume(t.co)
  if not ok then
    io.stderr:write("hostile: ", tostring(mode), "\n")
    pcall(t.sock.close, t.sock)
    t.dead = true
    return
  end
  if coroutine.status(t.co) == "dead" then
    t.dead = true
    return
  end
  t.want = mode
  t.wake = seconds and socket.gettime() + seconds or nil
end

while true do
  local readers, writers = {srv}, {}
  local now = socket.gettime()
  local timeout = 1
  for _, t in ipairs(threads) do
    if t.want == "r" then readers[#readers + 1] = t.sock
    elseif t.want == "w" then writers[#writers + 1] = t.sock end
    if t.wake then timeout = math.min(timeout, math.max(0, t.wake - now)) end
  end
  local r, w = socket.select(readers, writers, timeout)
  local ready = {}
  for _, s in ipairs(r) do ready[s] = true end
  for _, s in ipairs(w) do ready[s] = true end
  if ready[srv] then
    while true do
      local s = srv:accept()
      if not s then break end
      spawn(s)
    end
  end
  now = socket.gettime()
  local live = {}
  for _, t in ipairs(threads) do
    if t.co and not t.started then
      t.started = true
      step(t)
    elseif (t.want and ready[t.sock]) or (t.wake and t.wake <= now) then
      step(t)
    end
    if not t.dead then live[#live + 1] = t end
  end
  threads = live
end
