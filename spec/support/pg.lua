-- spec/support/pg.lua: a throwaway PostgreSQL server for specs, through tools/pg-throwaway.
--
--   local pg = require("spec.support.pg")
--   if not pg.available() then pending(pg.why()) end   -- only when PostgreSQL is not installed
--   local srv = pg.start()     -- srv.url = "postgres://USER@127.0.0.1:PORT/rage_test"
--   srv:down(); srv:up()       -- stop the server and start it again (same data, same port)
--   srv:stop()                 -- stop it and remove its directory
--
-- With DATABASE_URL set, that database is used and nothing is started (down and up then
-- raise: specs that need them check srv.own). A server started here is stopped by a watcher
-- when the spec process ends, however it ends.

local _M = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a command; returns its exit status and its whole stdout.
local function run(cmd)
  local f = assert(io.popen(cmd .. "; echo \"exit:$?\"", "r"))
  local out = f:read("*a")
  f:close()
  local status = tonumber(out:match("exit:(%d+)%s*$"))
  return status, (out:gsub("exit:%d+%s*$", ""))
end

local function tool()
  local root = os.getenv("RAGE_SOURCE_DIR")
  if not root or root == "" then root = "." end
  return root .. "/tools/pg-throwaway"
end

local checked, why_not

-- True when a server can be started (or DATABASE_URL names one).
function _M.available()
  local url = os.getenv("DATABASE_URL")
  if url and url ~= "" then return true end
  if checked == nil then
    local status, _ = run(sh_quote(tool()) .. " check 2>&1")
    checked = status == 0
    if status == 3 then
      why_not = "PostgreSQL server binaries not found (install the Debian package postgresql, see tools/deps)"
    elseif status ~= 0 then
      error("tools/pg-throwaway check failed with status " .. tostring(status))
    end
  end
  return checked
end

function _M.why()
  return why_not
end

local Server = {}
Server.__index = Server

-- Starts a server (or wraps DATABASE_URL). Raises when a server cannot be started although
-- PostgreSQL is installed.
function _M.start()
  local url = os.getenv("DATABASE_URL")
  if url and url ~= "" then return setmetatable({url = url, own = false}, Server) end
  local pid = tonumber((select(2, run("echo $PPID")):match("%d+")))
  local status, out = run(sh_quote(tool()) .. " start --owner " .. pid .. " 2>&1")
  if status ~= 0 then error("tools/pg-throwaway failed (" .. tostring(status) .. "):\n" .. out) end
  local srv = setmetatable({own = true}, Server)
  srv.url = out:match("DATABASE_URL=(%S+)")
  srv.dir = out:match("PG_THROWAWAY_DIR=(%S+)")
  if not srv.url or not srv.dir then error("unexpected output from tools/pg-throwaway:\n" .. out) end
  return srv
end

local function control(srv, command)
  if not srv.own then error("this server was not started by the specs (DATABASE_URL is set)", 3) end
  local status, out = run(sh_quote(tool()) .. " " .. command .. " " .. sh_quote(srv.dir) .. " 2>&1")
  if status ~= 0 then error("tools/pg-throwaway " .. command .. " failed:\n" .. out, 3) end
end

function Server:down()
  control(self, "down")
end

function Server:up()
  control(self, "up")
end

function Server:stop()
  if self.own and self.dir then
    control(self, "stop")
    self.dir = nil
  end
end

return _M
