--- Row 4: time to reap 10,000 zombie children, clua.reap() in a Lua loop
-- against luaposix's wait(-1, WNOHANG) in a Lua loop and a plain C waitpid
-- loop.  Each paired run is one fresh Lua process where clua and luaposix
-- take turns wave by wave (bench/reap.lua), and build/bench/reap_c before
-- or after it (alternating).  Ratio: clua's time per reaped child over the
-- anchor's.
--
--    lua5.3 bench/reaping.lua [RUNS]

local lib = require("bench.lib")

local runs = tonumber(arg[1]) or 5
local N, WAVE = 10000, 2000
local lua = os.getenv("CLUA_LUA") or "lua5.3"

local how = "build/bench/reap_c 10000 2000; " .. lua ..
  " bench/reap.lua 10000 2000 clua luaposix (bench/run 4)"
local clua = lib.clua()
local function report(id, what, values, target, status)
  lib.result { id = id, what = what, unit = "ratio", values = values, stat = "median",
    op = "<=", target = target, status = status, how = how }
end
if not lib.has(clua, "reap") then
  report("4a", "clua.reap / C waitpid loop", nil, 1.1, lib.NOT_BUILT)
  report("4b", "clua.reap / luaposix wait", nil, 1.0, lib.NOT_BUILT)
  return
end
if not pcall(require, "posix.sys.wait") then
  -- bench/reap.lua forks with luaposix too.
  local why = "skipped: lua-posix missing (make bench-deps)"
  report("4a", "clua.reap / C waitpid loop", nil, 1.1, why)
  report("4b", "clua.reap / luaposix wait", nil, 1.0, why)
  return
end

-- Seconds per reaped child for each arm of one command.
local function measure(cmd, t)
  local out, ok = lib.sh(cmd .. " 2>&1")
  local found = false
  for name, n, s in out:gmatch("(%S+) reaped (%d+) seconds (%S+)") do
    t[name] = tonumber(s) / tonumber(n)
    found = true
  end
  assert(ok and found, cmd .. " failed: " .. out)
end
local c_cmd = lib.benchbin .. "/reap_c " .. N .. " " .. WAVE
local function lua_cmd(first, second)
  return lua .. " " .. lib.root .. "/bench/reap.lua " .. N .. " " .. WAVE .. " " .. first ..
    " " .. second
end

-- C first or last, and clua or luaposix first, in turn.
local vs_c, vs_posix, per = {}, {}, { c = {}, luaposix = {}, clua = {} }
for run = 1, runs do
  local t = {}
  local lua_first = run % 2 == 1 and { "clua", "luaposix" } or { "luaposix", "clua" }
  if run % 4 < 2 then measure(c_cmd, t) end
  measure(lua_cmd(lua_first[1], lua_first[2]), t)
  if run % 4 >= 2 then measure(c_cmd, t) end
  t.c = t.reap_c
  for name in pairs(per) do table.insert(per[name], t[name]) end
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
