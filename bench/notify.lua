--- Row 5: time per WATCHDOG=1 sent to a local datagram receiver
-- (build/bench/notify_sink), clua.notify_watchdog() against lua-systemd's
-- kick_dog() (libsystemd's sd_notify: a socket opened, tuned, used and
-- closed per call, where clua keeps one socket and sends with one sendto)
-- and against running `systemd-notify WATCHDOG=1`.  Each paired run is one
-- fresh worker process (bench/notify_worker.lua) alternating the arms in
-- chunks of 1,000 calls (5 per chunk for systemd-notify), 10 rounds.
-- Targets: 5a at most 0.5 of lua-systemd's time per call; 5b no slower
-- than systemd-notify.
--
--    lua5.3 bench/notify.lua [RUNS]

local lib = require("bench.lib")

local runs = tonumber(arg[1]) or 5
local lua = os.getenv("CLUA_LUA") or "lua5.3"
local ROUNDS, CHUNK = 10, 1000
local how = "NOTIFY_SOCKET=S " .. lua .. " bench/notify_worker.lua " .. ROUNDS .. " " .. CHUNK ..
  " clua lua-systemd systemd-notify, receiver build/bench/notify_sink S (bench/run 5)"

local function report(id, what, values, target, status, note)
  lib.result { id = id, what = what, unit = "ratio", values = values, stat = "median",
    op = "<=", target = target, status = status, how = how, note = note }
end
local A = "clua.notify_watchdog / lua-systemd kick_dog"
local B = "clua.notify_watchdog / systemd-notify WATCHDOG=1"
if not lib.has(lib.clua(), "notify_watchdog") then
  report("5a", A, nil, 0.5, lib.NOT_BUILT)
  report("5b", B, nil, 1.0, lib.NOT_BUILT)
  return
end
local have_lsd = pcall(require, "systemd.daemon")
local _, have_sdn = lib.sh("command -v systemd-notify >/dev/null")

local dir = lib.tmpdir()
local sock = dir .. "/notify"
local sink = io.popen(lib.benchbin .. "/notify_sink " .. lib.shq(sock) .. " > " ..
  lib.shq(dir .. "/sink.out") .. " 2>&1 & echo $!")
local sink_pid = sink:read("l")
sink:close()
for _ = 1, 200 do
  if (lib.readfile(dir .. "/sink.out") or ""):find("ready") then break end
  lib.sleep(0.01)
end

local arms = { "clua" }
if have_lsd then arms[#arms + 1] = "lua-systemd" end
if have_sdn then arms[#arms + 1] = "systemd-notify" end
local ra, rb, per = {}, {}, {}
for run = 1, runs do
  -- Rotate which arm goes first.
  local order = {}
  for i = 0, #arms - 1 do order[#order + 1] = arms[(i + run - 1) % #arms + 1] end
  local out, ok = lib.sh("NOTIFY_SOCKET=" .. lib.shq(sock) .. " " .. lua .. " " ..
    lib.root .. "/bench/notify_worker.lua " .. ROUNDS .. " " .. CHUNK .. " " ..
    table.concat(order, " ") .. " 2>&1")
  assert(ok, "notify_worker failed: " .. out)
  local t = {}
  for name, n, s in out:gmatch("(%S+) calls (%d+) seconds (%S+)") do
    t[name] = tonumber(s) / tonumber(n)
    per[name] = per[name] or {}
    table.insert(per[name], t[name])
  end
  if t["lua-systemd"] then ra[#ra + 1] = t.clua / t["lua-systemd"] end
  if t["systemd-notify"] then rb[#rb + 1] = t.clua / t["systemd-notify"] end
  lib.log("row 5 run %d: per call clua %.2f us, lua-systemd %s us, systemd-notify %s us", run,
    t.clua * 1e6, t["lua-systemd"] and string.format("%.2f", t["lua-systemd"] * 1e6) or "-",
    t["systemd-notify"] and string.format("%.0f", t["systemd-notify"] * 1e6) or "-")
end
lib.sh("kill " .. sink_pid .. "; sleep 0.2")
lib.sh("rm -rf " .. lib.shq(dir))

local function us(a)
  return per[a] and string.format("%.1f us", lib.median(per[a]) * 1e6) or "-"
end
local note = "median per call: clua " .. us("clua") .. ", lua-systemd " .. us("lua-systemd") ..
  ", systemd-notify " .. us("systemd-notify")
report("5a", A, ra, 0.5, not have_lsd and "skipped: lua-systemd missing (make bench-deps)" or nil,
  note)
report("5b", B, rb, 1.0, not have_sdn and "skipped: systemd-notify missing" or nil, note)
