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
--              `systemd --user` (spec/support/systemd.lua) with WatchdogSec=60:
--              session/awesome.service as installed, with a drop-in.
-- After 4 s of settling (plus 6 s more each round, see below) it reads
-- VmRSS, then counts over the same 12 s the
-- voluntary context switches of all of each Awesome's threads (a thread
-- switches voluntarily each time it blocks: one per wake-up), then traces
-- the next 12 s with `strace -c -f -p` (counts only; strace's own stops are
-- not in the wake-up counts).  Per-minute figures are the 12 s counts x 5,
-- so the 5 rounds together cover one minute.
--
-- Other programs on a shared machine may set the clock, and every clua
-- clockwatch in those Awesomes then wakes up (as it should).  A watcher
-- (bench/clock_waiter.lua) counts such changes; a round with one inside its
-- windows is redone, up to 8 rounds in all; if fewer than 5 came out clean,
-- the table uses every round and its note says how many changes fell in.
--
--    lua5.3 bench/idle.lua [ROUNDS [MAX_ROUNDS]]
--
-- (MAX_ROUNDS, default ROUNDS + 3: how many rounds it may run in all to
-- get ROUNDS free of clock changes, on a machine where others set the
-- clock often.)

local lib = require("bench.lib")

local ROUNDS, WINDOW, SETTLE = tonumber(arg[1]) or 5, 12, 4
local MAX_ROUNDS = tonumber(arg[2]) or ROUNDS + 3
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

-- An input of this tree that is gone fails the row; only what the machine
-- lacks (a program, root, a user manager) is a skip.
local hok, harness = pcall(require, "support.awesome")
if not hok then return report_all("failed: " .. tostring(harness):match("[^\n]*")) end
if not lib.readfile(lib.root .. "/lua/clua/awesome.lua") then
  return report_all("failed: lua/clua/awesome.lua is missing")
end
local ok, why = harness.available()
if not ok then return report_all("skipped: " .. why) end
local _, have_strace = lib.sh("command -v strace >/dev/null")

-- The manager for the watchdog configuration, when this machine can run
-- one; mgr_status says why there is none ("skipped: ..." or "failed: ...").
local mgr, mgr_status
local systemd = require("support.systemd")
if not lib.readfile(lib.root .. "/session/awesome.service") then
  mgr_status = "failed: session/awesome.service is missing"
else
  local avail, w = systemd.available()
  if avail then
    local m, mw = systemd.start()
    if m then mgr = m else mgr_status = "skipped: " .. tostring(mw) end
  else
    mgr_status = "skipped: " .. w
  end
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
    if not mgr then return nil, mgr_status end
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

-- Clock changes made by anybody during the run: CLOCK_MONOTONIC stamps.
local clockdir = lib.tmpdir()
local stamps = clockdir .. "/stamps"
lib.writefile(stamps, "")
local watcher
if lib.has(lib.clua(), "clockwatch") then
  local p = io.popen((os.getenv("CLUA_LUA") or "lua5.3") .. " " .. lib.root ..
    "/bench/clock_waiter.lua " .. lib.shq(stamps) .. " >/dev/null 2>&1 & echo $!")
  watcher = p:read("l")
  p:close()
end
local function clock_changes(t0, t1)
  local n = 0
  for line in io.lines(stamps) do
    local t = tonumber(line:match("^%S+"))
    if t and t >= t0 and t <= t1 then n = n + 1 end
  end
  return n
end

local cfgs = { "plain", "setup", "nostall", "watchdog" }
-- Per round: wake[cfg], sys[cfg], mem[cfg], changes.
local rounds = {}
local failed
local clean = 0
for round = 1, MAX_ROUNDS do
  if clean >= ROUNDS or (round > ROUNDS and not watcher) then break end
  local wake, sys, mem = {}, {}, {}
  local t_start
  local wms, pids = {}, {}
  for _, cfg in ipairs(cfgs) do
    local wm, err = start(cfg)
    if wm then
      wms[cfg], pids[cfg] = wm, wm:pid()
    elseif cfg ~= "watchdog" or mgr then
      -- (a manager that runs but where the unit did not start: a failure)
      failed = "failed: " .. cfg .. ": " .. tostring(err):match("[^\n]*")
    end
  end
  if not failed then
    -- The watchdog's heartbeat comes every 30 s from its start: a window
    -- always as old as Awesome would always miss it (or always see it).
    -- Round k waits 6 (k - 1) s more, so over 5 rounds the windows move
    -- through the whole 30 s.
    lib.sleep(SETTLE + ((round - 1) % 5) * 6)
    for cfg, pid in pairs(pids) do mem[cfg] = rss(pid) end
    t_start = lib.now()
    local before = {}
    for cfg, pid in pairs(pids) do before[cfg] = switches(pid) end
    lib.sleep(WINDOW)
    for cfg, pid in pairs(pids) do
      wake[cfg] = (switches(pid) - before[cfg]) * PER_MIN
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
        sys[cfg] = calls * PER_MIN
      end
      lib.sh("rm -rf " .. lib.shq(dir))
    end
    local changes = watcher and clock_changes(t_start, lib.now()) or 0
    if changes == 0 then clean = clean + 1 end
    rounds[#rounds + 1] = { wake = wake, sys = sys, mem = mem, changes = changes }
    lib.log("row 3 round %d: wake-ups/min plain %s, setup %s, nostall %s, watchdog %s;" ..
      " %d clock changes by others", round, wake.plain, wake.setup, wake.nostall,
      tostring(wake.watchdog), changes)
  end
  for _, wm in pairs(wms) do wm:stop() end
  if failed then break end
end
if mgr then mgr:stop() end
if watcher then lib.sh("kill " .. watcher .. " 2>/dev/null") end
lib.sh("rm -rf " .. lib.shq(clockdir))
if failed then return report_all(failed) end

-- The clean rounds when there are enough, else all of them.
local used, dirty_changes = {}, 0
for _, r in ipairs(rounds) do
  if r.changes == 0 or clean < ROUNDS then
    used[#used + 1] = r
    dirty_changes = dirty_changes + r.changes
  end
end
local basis = watcher and (dirty_changes == 0 and
  string.format("%d rounds free of clock changes by others", #used) or
  string.format("%d rounds; %d clock changes by other programs fell inside them" ..
    " and woke clua's clockwatch", #used, dirty_changes)) or
  "clock changes by others not counted (no clua.clockwatch)"

-- field: "wake", "sys" or "mem"; the per-round series of cfg.
local function series(field, cfg)
  local v = {}
  for _, r in ipairs(used) do
    if r[field][cfg] == nil then return {} end
    v[#v + 1] = r[field][cfg]
  end
  return v
end
local function deltas(field, cfg, base)
  local a, b = series(field, cfg), series(field, base)
  if #a == 0 or #a ~= #b then return nil end
  local d = {}
  for i = 1, #a do d[i] = a[i] - b[i] end
  return d
end
local function mean(v)
  local s = 0
  for _, x in ipairs(v) do s = s + x end
  return s / #v
end
local function note(field, r)
  local a, b = series(field, r.cfg), series(field, r.base)
  if #a == 0 or #b == 0 then return nil end
  return string.format("mean per minute: %s %.1f, %s %.1f; %s", r.cfg, mean(a), r.base,
    mean(b), basis)
end
for _, r in ipairs(W) do
  local d = deltas("wake", r.cfg, r.base)
  lib.result { id = r.id, what = r.what, unit = "/min", values = d, stat = "mean", op = "<=",
    target = r.target, how = how, note = note("wake", r),
    status = not d and (mgr_status or "failed: no measurement") or nil }
end
for _, r in ipairs(S) do
  local d = have_strace and deltas("sys", r.cfg, r.base)
  lib.result { id = r.id, what = r.what, unit = "/min", values = d or nil, stat = "mean",
    op = r.target and "<=", target = r.target, how = how, note = d and note("sys", r),
    status = not d and (have_strace and (mgr_status or "failed: no measurement")
      or "skipped: strace missing") or nil }
end
local d = deltas("mem", "setup", "plain")
lib.result { id = RSS.id, what = RSS.what, unit = RSS.unit, values = d, how = how,
  note = string.format("VmRSS after %d s idle; median plain %d KiB, setup{} %d KiB", SETTLE,
    lib.median(series("mem", "plain")) or 0, lib.median(series("mem", "setup")) or 0) }
