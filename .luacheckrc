-- luacheck configuration: the framework defines no globals; apps and specs see `rage`.
std = "luajit"
max_line_length = 120
files["lua/rage/init.lua"] = {globals = {"rage"}}
files["lua/rage/fiber.lua"] = {globals = {"coroutine"}}
files["lua/rage/cli.lua"] = {globals = {"arg", "os"}}
files["apps/"] = {read_globals = {"rage"}}
files["spec/"] = {std = "+busted", read_globals = {"rage"}}
