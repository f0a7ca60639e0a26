-- rage: the one global the runtime gives app code (as OpenResty gives `ngx`).
--
-- The framework's own modules do not use this global; they require each other. App code uses
-- rage.controller, rage.sleep, rage.log, rage.json and the rest from here.

local core = require("rage.core")
local fiber = require("rage.fiber")
local errors = require("rage.errors")
local json = require("rage.json")
local log = require("rage.log")
local async = require("rage.async")

fiber.install()

local rage = {
  VERSION = core.version,
  env = core.env,
  sleep = fiber.sleep,
  spawn = async.spawn,
  await = async.await,
  await_any = async.await_any,
  timeout = async.timeout,
  semaphore = async.semaphore,
  channel = async.channel,
  fiber_local = async.fiber_local,
  log = log,
  json = json,
  null = json.null,
  errors = errors,
  error = errors.raise,
  http = require("rage.http"),
  db = require("rage.db"),
  c = require("rage.c"),   -- C functions registered by an embedding host
}

-- Monotonic time in seconds (the loop's cached clock), and a high-resolution clock.
rage.now = core.now
rage.clock = core.clock

function rage.controller(name, parent)
  return require("rage.controller").define(name, parent)
end

-- Environment predicates, as Rails.env.production?
function rage.is_production() return core.env == "production" end
function rage.is_development() return core.env == "development" end
function rage.is_test() return core.env == "test" end

_G.rage = rage
return rage
