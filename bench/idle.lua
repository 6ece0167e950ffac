--- Row 3: what `require("clua.awesome").setup{}` costs an idle headless
-- Awesome, in wake-ups and system calls per minute, and (row 6c) the
-- resident memory it adds.
--
-- Each of 5 rounds starts fresh Awesomes side by side (spec/support/
-- awesome.lua: Xvfb, a session bus, `awesome -c RC`), each with the same
-- small rc.lua (awful and wibox loaded, no timers of its own), differing
-- only in its last line:
--   plain      no clua;
--   setup      setup{} (every option at its default; no service manager,
--              so the watchdog is off);
--   nostall    setup{ stall = false };
--   watchdog   setup{}, Awesome run as a Type=notify user service of a real
--              `systemd --user` (spec/support/systemd.lua) with WatchdogSec=60.
-- After 4 s of settling it reads VmRSS, then counts over the same 12 s the
-- voluntary context switches of all of each Awesome's threads (a thread
-- switches voluntarily each time it blocks: one per wake-up), then traces
-- the next 12 s with `strace -c -f -p` (counts only; strace's own stops are
-- not in the wake-up counts).  Per-minute figures are the 12 s counts x 5,
-- so the 5 rounds together cover one minute.
--
--    lua5.3 bench/idle.lua [ROUNDS]

local lib = require("bench.lib")

local ROUNDS, WINDOW, SETTLE = tonumber(arg[1]) or 5, 12, 4
local PER_MIN = 60 / WINDOW
local how = "bench/idle.lua: 4 headless Awesomes side by side, 5 rounds x (12 s of " ..
  "/proc/PID/task/*/status voluntary_ctxt_switches, 12 s of strace -c -f -p PID) (bench/run 3)"

local W = {
  { id = "3a", cfg = "setup", base = "plain",
    what = "wake-ups/min added by setup{} (watchdog off)", target = 0 },
  { id = "3b", cfg = "nostall", base = "plain",
    what = "wake-ups/min added by setup{stall=false}", target = 0 },
  { id = "3c", cfg = "watchdog", base = "setup",
    what = "wake-ups/min added by WatchdogSec=60 to setup{}", target = 2 },
}
local S = {
  { id = "3d", cfg = "setup", base = "plain", what = "syscalls/min added by setup{} (watchdog off)",
    target = 0 },
  { id = "3e", cfg = "nostall", base = "plain", what = "syscalls/min added by setup{stall=false}",
    target = 0 },
  { id = "3f", cfg = "watchdog", base = "setup",
    what = "syscalls/min added by WatchdogSec=60 to setup{}" },
}
local RSS = { id = "6c", what = "RSS setup{} adds to Awesome", unit = "KiB" }

local function report_all(status)
  for _, r in ipairs(W) do
    lib.result { id = r.id, what = r.what, unit = "/min", stat = "mean", op = "<=",
      target = r.target, status = status, how = how }
  end
  for _, r in ipairs(S) do
    lib.result { id = r.id, what = r.what, unit = "/min", stat = "mean",
      op = r.target and "<=", target = r.target, status = status, how = how }
  end
  lib.result { id = RSS.id, what = RSS.what, unit = RSS.unit, status = status, how = how }
end

local hok, harness = pcall(require, "support.awesome")
if not hok or not lib.readfile(lib.root .. "/lua/clua/awesome.lua") then
  return report_all("not built yet")
end
local ok, why = harness.available()
if not ok then return report_all("skipped: " .. why) end
local _, have_strace = lib.sh("command -v strace >/dev/null")

-- The manager for the watchdog configuration, when this machine can run one.
local mgr, mgr_why
local sok, systemd = pcall(require, "support.systemd")
if sok and lib.readfile(lib.root .. "/examples/awesome.service") then
  local avail, w = systemd.available()
  if avail then
    mgr, mgr_why = systemd.start()
  else
    mgr_why = w
  end
else
  mgr_why = "no support.systemd or examples/awesome.service"
end

local RC = [[
local awful = require("awful")
local wibox = require("wibox")
local _ = awful and wibox
%s
]]
local LAST = {
  plain = "-- plain: no clua",
  setup = 'require("clua.awesome").setup {}',
  nostall = 'require("clua.awesome").setup { stall = false }',
  watchdog = 'require("clua.awesome").setup {}',
}

local function start(cfg)
  local rc = harness.rc(RC:format(LAST[cfg]))
  if cfg == "watchdog" then
    if not mgr then return nil, mgr_why end
    return harness.start { rc = rc, manager = mgr, unit = "awesome-bench.service",
      unit_extra = { "WatchdogSec=60" } }
  end
  return harness.start { rc = rc }
end

local function tids(pid)
  local out = lib.sh("ls /proc/" .. pid .. "/task 2>/dev/null")
  local t = {}
  for tid in out:gmatch("%d+") do t[#t + 1] = tid end
  return t
end

-- Voluntary context switches of every thread of pid.
local function switches(pid)
  local n = 0
  for _, tid in ipairs(tids(pid)) do
    local s = lib.readfile("/proc/" .. pid .. "/task/" .. tid .. "/status") or ""
    n = n + (tonumber(s:match("voluntary_ctxt_switches:%s*(%d+)")) or 0)
  end
  return n
end

local function rss(pid)
  local s = lib.readfile("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local cfgs = { "plain", "setup", "nostall", "watchdog" }
local wake = { plain = {}, setup = {}, nostall = {}, watchdog = {} }
local sys = { plain = {}, setup = {}, nostall = {}, watchdog = {} }
local mem = { plain = {}, setup = {} }
local failed
for round = 1, ROUNDS do
  local wms, pids = {}, {}
  for _, cfg in ipairs(cfgs) do
    local wm, err = start(cfg)
    if wm then
      wms[cfg], pids[cfg] = wm, wm:pid()
    elseif cfg ~= "watchdog" then
      failed = "failed: " .. tostring(err):match("[^\n]*")
    else
      mgr_why = mgr_why or tostring(err):match("[^\n]*")
    end
  end
  if not failed then
    lib.sleep(SETTLE)
    for cfg, pid in pairs(pids) do
      if mem[cfg] then table.insert(mem[cfg], rss(pid)) end
    end
    local before = {}
    for cfg, pid in pairs(pids) do before[cfg] = switches(pid) end
    lib.sleep(WINDOW)
    for cfg, pid in pairs(pids) do
      table.insert(wake[cfg], (switches(pid) - before[cfg]) * PER_MIN)
    end
    if have_strace then
      local dir = lib.tmpdir()
      local cmd = {}
      for cfg, pid in pairs(pids) do
        cmd[#cmd + 1] = "timeout -s INT " .. WINDOW .. " strace -c -f -q -p " .. pid ..
          " -o " .. lib.shq(dir .. "/" .. cfg) .. " 2>/dev/null &"
      end
      lib.sh(table.concat(cmd, " ") .. " wait")
      for cfg in pairs(pids) do
        local text = lib.readfile(dir .. "/" .. cfg) or ""
        local calls = tonumber(text:match("\n%s*[%d.]+%s+[%d.]+%s+%d+%s+(%d+)[^\n]*total")) or 0
        table.insert(sys[cfg], calls * PER_MIN)
      end
      lib.sh("rm -rf " .. lib.shq(dir))
    end
    lib.log("row 3 round %d: wake-ups/min plain %s, setup %s, nostall %s, watchdog %s",
      round, wake.plain[round], wake.setup[round], wake.nostall[round],
      tostring(wake.watchdog[round]))
  end
  for _, wm in pairs(wms) do wm:stop() end
  if failed then break end
end
if mgr then mgr:stop() end
if failed then return report_all(failed) end

local function deltas(t, cfg, base)
  if #t[cfg] ~= #t[base] or #t[cfg] == 0 then return nil end
  local d = {}
  for i = 1, #t[cfg] do d[i] = t[cfg][i] - t[base][i] end
  return d
end
local function mean(v)
  local s = 0
  for _, x in ipairs(v) do s = s + x end
  return s / #v
end
local function note(t, r)
  if not t[r.cfg][1] then return nil end
  return string.format("mean per minute: %s %.1f, %s %.1f", r.cfg, mean(t[r.cfg]), r.base,
    mean(t[r.base]))
end
for _, r in ipairs(W) do
  local d = deltas(wake, r.cfg, r.base)
  lib.result { id = r.id, what = r.what, unit = "/min", values = d, stat = "mean", op = "<=",
    target = r.target, how = how, note = note(wake, r),
    status = not d and ("skipped: " .. tostring(mgr_why)) or nil }
end
for _, r in ipairs(S) do
  local d = have_strace and deltas(sys, r.cfg, r.base)
  lib.result { id = r.id, what = r.what, unit = "/min", values = d or nil, stat = "mean",
    op = r.target and "<=", target = r.target, how = how, note = d and note(sys, r),
    status = not d and (have_strace and ("skipped: " .. tostring(mgr_why))
      or "skipped: strace missing") or nil }
end
local d = deltas(mem, "setup", "plain")
lib.result { id = RSS.id, what = RSS.what, unit = RSS.unit, values = d, how = how,
  note = string.format("VmRSS after %d s idle; median plain %d KiB, setup{} %d KiB", SETTLE,
    lib.median(mem.plain) or 0, lib.median(mem.setup) or 0) }
