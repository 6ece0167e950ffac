--- Row 7: the time from awful.spawn to the program running, with an
-- application scope and without, in one headless Awesome run as
-- awesome.service of a real systemd --user manager (session/awesome.service,
-- spec/support/awesome.lua).  The program is build/bench/spawn_probe, which
-- notes the monotonic time it started at; Awesome notes the time just
-- before each launch.  Three arms take turns, SAMPLES launches each, 150 ms
-- apart, driven by a gears.timer inside Awesome:
--   scope        awful.spawn as clua.awesome's `scopes` makes it (clua-scope)
--   plain        awesome.spawn as it was before setup{} wrapped it
--   systemd-run  that plain spawn of `systemd-run --user --scope ...`, the
--                other way to get a scope, for comparison
--
--    lua5.3 bench/spawn.lua [SAMPLES]

local lib = require("bench.lib")
local harness = require("support.awesome")
local systemd = require("support.systemd")

local samples = tonumber(arg[1]) or 50
local how = "lua5.3 bench/spawn.lua " .. samples .. " (bench/run 7)"
local A = "awful.spawn to running: a scope adds"
local B = "anchor: systemd-run --scope adds"

local function report(status, added, anchor, note)
  lib.result { id = "7a", what = A, unit = "ms", values = added, stat = "median", op = "<=",
    target = 10, status = status, how = how, note = note }
  lib.result { id = "7b", what = B, unit = "ms", values = anchor, stat = "median",
    status = status, how = how }
end

local probe = lib.benchbin .. "/spawn_probe"
if not io.open(probe) or not io.open(lib.tools .. "/clua-scope") then
  return report(lib.NOT_BUILT)
end
local ok, why = harness.available()
if ok then ok, why = systemd.available() end
local mgr
if ok then mgr, why = systemd.start() end
if not mgr then return report("skipped: " .. why) end
local dir = lib.tmpdir()
local RC = ([[
local plain_spawn = awesome.spawn
require("clua.awesome").setup { stall = false }
local awful, gears, GLib = require("awful"), require("gears"), require("lgi").GLib
local PROBE, OUT, SAMPLES = %q, %q, %d
local arms = {
    scope = function(tag) return awful.spawn({ PROBE, OUT, tag }, false) end,
    plain = function(tag) return plain_spawn({ PROBE, OUT, tag }, false) end,
    ["systemd-run"] = function(tag)
        return plain_spawn({ "systemd-run", "--user", "--scope", "--quiet", "--collect",
            "--slice=app.slice", "--", PROBE, OUT, tag }, false)
    end,
}
local order = { "scope", "plain", "systemd-run" }
bench_started, bench_done = {}, false
local i = 0
function bench_go()
    gears.timer { timeout = 0.15, autostart = true, callback = function(t)
        i = i + 1
        local n = (i - 1) // #order + 1
        if n > SAMPLES then t:stop() bench_done = true return end
        local arm = order[(i - 1) %% #order + 1]
        local tag = arm .. ":" .. n
        bench_started[tag] = GLib.get_monotonic_time()
        arms[arm](tag)
    end }
end
function bench_starts()
    local t = {}
    for tag, us in pairs(bench_started) do t[#t + 1] = tag .. " " .. string.format("%%d", us) end
    return table.concat(t, "\n")
end
]]):format(probe, dir .. "/probe.out", samples)

local wm, err = harness.start { rc = harness.rc(RC), manager = mgr }
if not wm then
  mgr:stop()
  return report("failed: " .. tostring(err))
end
wm:client("bench_go()")
harness.wait_until(samples * 0.5 + 30, function() return wm:client("return bench_done") end, 0.5)
lib.sleep(1)
local started = {}
for tag, us in wm:client("return bench_starts()"):gmatch("(%S+) (%d+)") do
  started[tag] = tonumber(us)
end
wm:stop()
mgr:stop()

local latency = { scope = {}, plain = {}, ["systemd-run"] = {} }
for tag, us in (lib.readfile(dir .. "/probe.out") or ""):gmatch("(%S+) (%d+)") do
  local arm, n = tag:match("^(.-):(%d+)$")
  if started[tag] then latency[arm][tonumber(n)] = (tonumber(us) - started[tag]) / 1000 end
end
lib.sh("rm -rf " .. lib.shq(dir))

-- Added time per round: each arm against the plain launch of its round.
local added, anchor = {}, {}
for n = 1, samples do
  local p = latency.plain[n]
  if p and latency.scope[n] then added[#added + 1] = latency.scope[n] - p end
  if p and latency["systemd-run"][n] then anchor[#anchor + 1] = latency["systemd-run"][n] - p end
end
local function ms(arm)
  local m = lib.median(latency[arm])
  return m and string.format("%.1f ms", m) or "-"
end
lib.log("row 7: median launch: plain %s, scope %s, systemd-run %s", ms("plain"), ms("scope"),
  ms("systemd-run"))
report(#added == 0 and "failed: no launch was measured" or nil, added, anchor,
  "median from awful.spawn to the program running: plain " .. ms("plain") .. ", clua-scope "
    .. ms("scope") .. ", systemd-run " .. ms("systemd-run") .. "; " .. #added .. " rounds")
