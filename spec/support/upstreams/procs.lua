-- spec/support/upstreams: the servers the HTTP client specs talk to, all on 127.0.0.1.
--
--   local upstreams = require("spec.support.upstreams.procs")
--   local app = upstreams.app()          -- the rage-lua app in upstreams/app (well behaved)
--   local bad = upstreams.hostile()      -- upstreams/hostile.lua under luajit (misbehaves)
--   local tls = upstreams.tls(certs)     -- openssl s_server -www with a generated certificate
--   local certs = upstreams.certs()      -- a CA and server certificates made with the openssl CLI
--   bad:stop()                           -- every process is stopped by its PID
--
-- Processes run in the background through a shell wrapper that records their PID; a watchdog
-- kills them if the spec process dies, so none outlives a run.

local socket = require("socket")
local server = require("spec.support.server")

local sh, capture, read_file, quote = server.sh, server.capture, server.read_file, server.quote

local _M = {}

local Proc = {}
Proc.__index = Proc

-- Starts `cmd` (a shell command line) and waits until its output matches `ready`.
function _M.spawn(cmd, ready, timeout)
  local dir = capture("mktemp -d /tmp/rage-upstream.XXXXXX"):gsub("%s+$", "")
  local log, pidfile = dir .. "/log", dir .. "/pid"
  local me = server.spec_pid()
  local script = table.concat({
    "(", cmd, " >", log, " 2>&1 </dev/null & p=$!; echo $p >", pidfile, ";",
    " ( while kill -0 ", me, " 2>/dev/null && kill -0 $p 2>/dev/null; do sleep 1; done;",
    "   kill -0 ", me, " 2>/dev/null || kill -9 $p 2>/dev/null ) &",
    " wait $p ) </dev/null >/dev/null 2>&1 &",
  })
  assert(sh(script), "cannot start: " .. cmd)
  local p = setmetatable({dir = dir, log_path = log}, Proc)
  p.pid = server.wait_for(function()
    local s = read_file(pidfile)
    return s and tonumber(s:match("%d+"))
  end, 5)
  assert(p.pid, "no PID for: " .. cmd)
  local out = server.wait_for(function()
    local text = read_file(log) or ""
    if text:find(ready) then return text end
    if not server.alive(p.pid) then return false end
    return nil
  end, timeout or 10)
  if not out then
    local text = p:log()
    p:stop()
    error("did not start: " .. cmd .. "\n" .. text, 2)
  end
  p.output = out
  return p
end

function Proc:log()
  return read_file(self.log_path) or ""
end

-- Stops the process by its PID: SIGTERM, then SIGKILL after a second. Safe to call twice.
function Proc:stop()
  if self.stopped then return end
  self.stopped = true
  if server.alive(self.pid) then
    sh("kill " .. self.pid .. " 2>/dev/null")
    if not server.wait_for(function() return not server.alive(self.pid) end, 1) then
      sh("kill -9 " .. self.pid .. " 2>/dev/null")
      server.wait_for(function() return not server.alive(self.pid) end, 2)
    end
  end
  sh("rm -rf " .. quote(self.dir))
end

-- The well-behaved rage-lua upstream: {port =, url =, stop = fn}.
function _M.app()
  local srv = assert(server.start{app = "spec/support/upstreams/app"})
  return {port = srv.port, url = "http://127.0.0.1:" .. srv.port, pid = srv.pid,
          stop = function() srv:stop() end}
end

local function source_dir()
  return os.getenv("RAGE_SOURCE_DIR") or "."
end

-- The hostile server: {port =, url =, stop = fn}.
function _M.hostile()
  local p = _M.spawn("exec luajit " .. quote(source_dir() .. "/spec/support/upstreams/hostile.lua"),
    "listening on %d+")
  p.port = tonumber(p.output:match("listening on (%d+)"))
  p.url = "http://127.0.0.1:" .. p.port
  return p
end

-- A free TCP port on 127.0.0.1 (bound and released; good enough for a test server).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Generates, in a temporary directory: ca.pem (a test CA), server.pem/server.key (for
-- localhost and 127.0.0.1, signed by the CA), other.pem/other.key (for other.test only, signed
-- by the CA). Returns {dir =, ca =, cert =, key =, other_cert =, other_key =, cleanup = fn}.
function _M.certs()
  local dir = capture("mktemp -d /tmp/rage-certs.XXXXXX"):gsub("%s+$", "")
  local q = quote(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local function cert(name, san)
    return table.concat({
      "openssl req ", ec, " -keyout ", q, "/", name, ".key -out ", q, "/", name, ".csr -subj /CN=", name,
      " 2>/dev/null && printf 'basicConstraints=CA:FALSE\\nsubjectAltName=", san, "\\n' >", q, "/", name, ".ext",
      " && openssl x509 -req -in ", q, "/", name, ".csr -CA ", q, "/ca.pem -CAkey ", q, "/ca.key",
      " -CAcreateserial -days 2 -extfile ", q, "/", name, ".ext -out ", q, "/", name, ".pem 2>/dev/null",
    })
  end
  local cmd = table.concat({
    "openssl req -x509 ", ec, " -keyout ", q, "/ca.key -out ", q, "/ca.pem -days 2 -subj '/CN=rage test CA' 2>/dev/null",
    " && ", cert("server", "DNS:localhost,IP:127.0.0.1"),
    " && ", cert("other", "DNS:other.test"),
  })
  assert(sh(cmd), "openssl could not make the test certificates")
  return {dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key",
          other_cert = dir .. "/other.pem", other_key = dir .. "/other.key",
          cleanup = function() sh("rm -rf " .. q) end}
end

-- openssl s_server answering every request with its status page (HTTP/1.0, then close).
function _M.tls(cert, key)
  local port = free_port()
  local p = _M.spawn(table.concat({"exec openssl s_server -www -accept 127.0.0.1:", port,
    " -cert ", quote(cert), " -key ", quote(key)}), "ACCEPT")
  p.port = port
  return p
end

-- Open file descriptors of this process.
function _M.fd_count()
  return #require("rage.core").scandir("/proc/self/fd")
end

-- Resident memory of this process, in KiB.
function _M.rss_kb()
  local s = read_file("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

return _M
