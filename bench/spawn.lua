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
--
-- With --session (7c, 7d) the same three arms run in the Awesome of the
-- X session the command runs in (DISPLAY and the session bus from the
-- environment; awesome-client), whose rc.lua called setup{}: in a real
-- login, Awesome as awesome.service of user@UID.service on cgroup v2
-- (`.ci/check-login --bench` runs it so, in a booted container).  There
-- the plain arm is awesome.spawn with a stdin pipe, which clua.awesome
-- leaves unwrapped (the pipe is closed at once).
--
--    lua5.3 bench/spawn.lua SAMPLES --session

local lib = require("bench.lib")
local harness = require("support.awesome")
local systemd = require("support.systemd")
local shell = require("support.shell")

local samples, session = 50, false
for _, a in ipairs(arg) do
  if a == "--session" then session = true else samples = tonumber(a) or samples end
end
local how = "lua5.3 bench/spawn.lua " .. samples .. " (bench/run 7)"
local ids = { "7a", "7b" }
local A = "awful.spawn to running: a scope adds"
local B = "anchor: systemd-run --scope adds"
if session then
  how = "lua5.3 bench/spawn.lua " .. samples .. " --session (.ci/check-login --bench)"
  ids = { "7c", "7d" }
  A = A .. " (real login, cgroup v2)"
  B = B .. " (real login, cgroup v2)"
end

local function report(status, added, anchor, note)
  lib.result { id = ids[1], what = A, unit = "ms", values = added, stat = "median", op = "<=",
    target = 10, status = status, how = how, note = note }
  lib.result { id = ids[2], what = B, unit = "ms", values = anchor, stat = "median",
    status = status, how = how }
end

local probe = lib.benchbin .. "/spawn_probe"
if not io.open(probe) or not (session or io.open(lib.tools .. "/clua-scope")) then
  return report(lib.NOT_BUILT)
end
local mgr, wm
if session then
  -- The session's Awesome, through awesome-client, as a harness Awesome.
  wm = { stop = function() end }
  function wm.client(_, chunk)
    local ok, out = shell.run("timeout 15 awesome-client " .. shell.quote(chunk) .. " </dev/null")
    assert(ok, "awesome-client: " .. out)
    local values, n = harness.parse_reply(out)
    return table.unpack(values, 1, n)
  end
  local ok, status = pcall(wm.client, wm, 'return require("clua.awesome").status()')
  if not ok or not tostring(status):find("scopes: on", 1, true) then
    return report("skipped: no Awesome with clua.awesome's scopes in this session: "
      .. tostring(status))
  end
  mgr = { stop = function() end }
else
  local ok, why = harness.available()
  if ok then ok, why = systemd.available() end
  if ok then mgr, why = systemd.start() end
  if not mgr then return report("skipped: " .. why) end
end
local dir = lib.tmpdir()
local PRELUDE = session and [[
local GLib = require("lgi").GLib
local function plain_spawn(argv, sn)
    local pid, _, stdin = awesome.spawn(argv, sn, true)
    if stdin then GLib.close(stdin) end
    return pid
end
]] or [[
local plain_spawn = awesome.spawn
require("clua.awesome").setup { stall = false }
]]
local RC = PRELUDE .. ([[
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

if session then
  wm:client(RC)
else
  local err
  wm, err = harness.start { rc = harness.rc(RC), manager = mgr }
  if not wm then
    mgr:stop()
    return report("failed: " .. tostring(err))
  end
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
