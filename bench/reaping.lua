--- Row 4: time to reap 10,000 zombie children, clua.reap() in a Lua loop
-- against luaposix's wait(-1, WNOHANG) in a Lua loop and a plain C waitpid
-- loop.  Each paired run runs the three arms one after the other (the order
-- rotates from run to run), each in a fresh process: bench/reap.lua and
-- build/bench/reap_c.  Ratio: clua's time per reaped child over the anchor's.
--
--    lua5.3 bench/reaping.lua [RUNS]

local lib = require("bench.lib")

local runs = tonumber(arg[1]) or 5
local N, WAVE = 10000, 2000
local lua = os.getenv("CLUA_LUA") or "lua5.3"

local how = "build/bench/reap_c 10000 2000; " .. lua ..
  " bench/reap.lua clua|luaposix 10000 2000 (bench/run 4)"
local clua = lib.clua()
local function report(id, what, values, target, status)
  lib.result { id = id, what = what, unit = "ratio", values = values, stat = "median",
    op = "<=", target = target, status = status, how = how }
end
if not lib.has(clua, "reap") then
  report("4a", "clua.reap / C waitpid loop", nil, 1.1, "not built yet")
  report("4b", "clua.reap / luaposix wait", nil, 1.0, "not built yet")
  return
end
if not pcall(require, "posix.sys.wait") then
  report("4b", "clua.reap / luaposix wait", nil, 1.0, "skipped: lua-posix missing")
end

local commands = {
  c = lib.benchbin .. "/reap_c " .. N .. " " .. WAVE,
  luaposix = lua .. " " .. lib.root .. "/bench/reap.lua luaposix " .. N .. " " .. WAVE,
  clua = lua .. " " .. lib.root .. "/bench/reap.lua clua " .. N .. " " .. WAVE,
}

-- Seconds per reaped child for one arm.
local function measure(armname)
  local out, ok = lib.sh(commands[armname] .. " 2>&1")
  local n, s = out:match("reaped (%d+) seconds (%S+)")
  assert(ok and n, armname .. " failed: " .. out)
  return tonumber(s) / tonumber(n)
end

local orders = { { "c", "luaposix", "clua" }, { "clua", "c", "luaposix" },
  { "luaposix", "clua", "c" } }
local vs_c, vs_posix, per = {}, {}, { c = {}, luaposix = {}, clua = {} }
for run = 1, runs do
  local t = {}
  for _, armname in ipairs(orders[(run - 1) % #orders + 1]) do
    t[armname] = measure(armname)
    table.insert(per[armname], t[armname])
  end
  vs_c[run] = t.clua / t.c
  vs_posix[run] = t.clua / t.luaposix
  lib.log("row 4 run %d: per reap clua %.2f us, luaposix %.2f us, C %.2f us", run,
    t.clua * 1e6, t.luaposix * 1e6, t.c * 1e6)
end
local function note()
  return string.format("median per 10,000: clua %.1f ms, luaposix %.1f ms, C %.1f ms",
    lib.median(per.clua) * N * 1e3, lib.median(per.luaposix) * N * 1e3,
    lib.median(per.c) * N * 1e3)
end
lib.result { id = "4a", what = "clua.reap / C waitpid loop", unit = "ratio", values = vs_c,
  stat = "median", op = "<=", target = 1.1, how = how, note = note() }
lib.result { id = "4b", what = "clua.reap / luaposix wait", unit = "ratio", values = vs_posix,
  stat = "median", op = "<=", target = 1.0, how = how, note = note() }
