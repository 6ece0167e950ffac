--- `make demo`: clua at work inside a real, headless Awesome.
--
-- Runs examples/rc.lua in Awesome 4.3 under Xvfb, as the user service
-- session/awesome.service of a private `systemd --user` manager, and shows
-- each feature with timestamps: orphans adopted and gone, a clock change
-- seen at once with a textclock refreshed, a runaway loop interrupted by the
-- stall breaker, a hang in C killed by the watchdog and Awesome restarted,
-- with an application launched before it still running in its own scope
-- and its window back on its tag.
-- Ends with a screenshot of the Xvfb screen.
--
-- Needs root for the systemd manager's mount namespace and for setting the
-- clock; without it, it says which steps it skips and why.
-- Run through `make demo`, which sets LUA_PATH and LUA_CPATH.

local testkit = require("testkit")
local systemd = require("support.systemd")
local harness = require("support.awesome")

local root = os.getenv("CLUA_ROOT") or "."
local out_dir = root .. "/build/demo"
local t_start = testkit.now("monotonic")

-- The demo's rc: examples/rc.lua as shipped, but with a 2 s stall limit so
-- the demo need not wait 10 s for the breaker.
local STALL = 2
local WATCHDOG = 6

local function say(fmt, ...)
  io.write(("[%6.2f s] "):format(testkit.now("monotonic") - t_start), fmt:format(...), "\n")
  io.flush()
end

local function heading(text)
  io.write("\n== ", text, "\n")
end

local function skip(what, why)
  say("SKIPPED %s: %s", what, why)
end

local function read_rc()
  local f = assert(io.open(root .. "/examples/rc.lua"))
  local text = f:read("a")
  f:close()
  local replaced
  text, replaced = text:gsub("stall = 10", "stall = " .. STALL)
  assert(replaced == 1, "examples/rc.lua no longer sets stall = 10")
  return text
end

local function children_of(pid)
  local list = {}
  for _, c in ipairs(harness.children(pid)) do
    local state = harness.stat(c)
    if state then list[#list + 1] = ("%d(%s)"):format(c, state) end
  end
  return list
end

local function start_awesome(mgr)
  heading("Starting a headless Awesome with examples/rc.lua")
  local rc = harness.rc(read_rc())
  local wm, err = harness.start { rc = rc, manager = mgr,
    unit_extra = mgr and { "WatchdogSec=" .. WATCHDOG } or nil }
  assert(wm, err)
  if mgr then
    say("awesome.service is %s (Type=notify: clua.awesome sent READY=1), pid %d, WatchdogSec=%d",
      mgr:show("awesome.service", "ActiveState"), wm:pid(), WATCHDOG)
  else
    say("Awesome runs, pid %d, on display %s (no service manager)", wm:pid(), wm.display)
  end
  return wm
end

local function demo_orphans(wm)
  heading("1. Orphans stay in the session (child subreaper)")
  local pid = wm:pid()
  wm:client([[require("awful").spawn.with_shell("sleep 2 & sleep 2 & sleep 2 &")]])
  say("awful.spawn.with_shell(\"sleep 2 & sleep 2 & sleep 2 &\"): the shell exits at once")
  harness.wait_until(1, function() return #harness.children(pid) >= 3 end)
  say("Awesome's children now: %s  (the sleeps were adopted: ppid = %d)",
    table.concat(children_of(pid), " "), pid)
  harness.wait_until(5, function() return #harness.children(pid) == 0 end)
  say("2 s later: %d children, no zombie: Awesome reaped the adopted ones",
    #harness.children(pid))
end

local function demo_clock(wm, can_set_clock)
  heading("2. A wall-clock change is seen at once")
  if not can_set_clock then
    return skip("clock steps", "setting the clock needs root (CAP_SYS_TIME)")
  end
  -- A textclock that would refresh only once a minute on its own.
  wm:client([[
    demo_clock = require("wibox").widget.textclock("%H:%M:%S", 60)
    demo_events = {}
    awesome.connect_signal("clua::clock_changed", function(c)
      demo_events[#demo_events + 1] = string.format("jump %+.3f s, suspended %.3f s, textclock %s",
        c.jump, c.suspended, demo_clock.text)
    end)]])
  testkit.clock_step(0)
  say("clock set to its own value (as NTP or a resume does)")
  harness.wait_until(1, function() return wm:client("return #demo_events") >= 1 end)
  say("clua::clock_changed: %s", wm:client("return demo_events[1]"))

  testkit.clock_step(120)
  say("clock stepped +120 s; real time now %s", os.date("%H:%M:%S"))
  harness.wait_until(1, function() return wm:client("return #demo_events") >= 2 end)
  say("clua::clock_changed: %s", wm:client("return demo_events[2]"))
  say("textclock (refresh 60 s) shows %s right away", wm:client("return demo_clock.text"))
  testkit.clock_step(-120)
  harness.wait_until(1, function() return wm:client("return #demo_events") >= 3 end)
  say("clock stepped back -120 s; textclock shows %s", wm:client("return demo_clock.text"))
end

local function demo_stall(wm)
  heading(("3. A runaway loop is interrupted (stall breaker, limit %d s)"):format(STALL))
  local pid = wm:pid()
  say("awesome-client 'while true do end' ...")
  local t0 = testkit.now("monotonic")
  local _, reply = wm:try_client("while true do end", STALL + 10)
  say("after %.1f s it returned: %s", testkit.now("monotonic") - t0,
    (tostring(reply):match("[^\n]*main loop stalled[^\n]*") or tostring(reply)))
  say("Awesome still runs with the same pid (%d): awesome-client 'return 1' -> %s",
    pid, tostring(wm:client("return 1")))
end

local function demo_watchdog(wm, mgr)
  heading(("4. A hang in C is ended by the systemd watchdog (WatchdogSec=%d)"):format(WATCHDOG))
  if not mgr then
    return skip("watchdog", "a private systemd --user manager needs root")
  end
  local pid = wm:pid()
  local app = wm:client([[
    local pid = require("awful").spawn({ "xeyes" }, false)
    return pid]])
  local function xeyes_tag()
    return wm:client([[for _, c in ipairs(client.get()) do
        if c.class == "XEyes" then return c.first_tag.name end end]])
  end
  harness.wait_until(5, function() return xeyes_tag() end)
  wm:client([[for _, c in ipairs(client.get()) do
      if c.class == "XEyes" then c:move_to_tag(c.screen.tags[3]) end end]])
  local cgroup = harness.readfile("/proc/" .. app .. "/cgroup") or ""
  say("awful.spawn('xeyes'): pid %d, in %s, its window on tag %s", app,
    cgroup:match(":name=systemd:[^\n]*/([^/\n]+)") or cgroup:match("0::[^\n]*/([^/\n]+)") or "?",
    tostring(xeyes_tag()))
  say("awesome-client 'os.execute(\"sleep 600\")': Awesome blocks in C, where no hook runs")
  os.execute(wm:envprefix() .. "timeout 60 awesome-client 'os.execute(\"sleep 600\")' "
    .. ">/dev/null 2>&1 &")
  local t0 = testkit.now("monotonic")
  local killed, result = mgr:wait_for("awesome.service", "Result", "watchdog", WATCHDOG * 3)
  say("after %.1f s: Result=%s, systemd killed pid %d (SIGABRT)",
    testkit.now("monotonic") - t0, result, pid)
  assert(killed, "the watchdog did not fire")
  mgr:wait_for("awesome.service", "MainPID", function(v)
    return tonumber(v) ~= pid and tonumber(v) ~= 0 end, 15)
  say("Restart=on-failure started it again: new pid %s, %s restart(s)",
    mgr:show("awesome.service", "MainPID"), mgr:show("awesome.service", "NRestarts"))
  assert(wm:wait_ready(30))
  say("awesome.service is %s again", mgr:show("awesome.service", "ActiveState"))
  harness.wait_until(5, function() return xeyes_tag() end)
  say("xeyes (pid %d) %s, its window managed again on tag %s", app,
    harness.alive(app) and "lives on" or "DIED", tostring(xeyes_tag()))
end

local function demo_status(wm)
  heading("5. awesome-client 'return require(\"clua.awesome\").status()'")
  io.write(tostring(wm:client('return require("clua.awesome").status()')), "\n")
end

local function screenshot(wm)
  heading("Screenshot")
  os.execute("mkdir -p " .. harness.shq(out_dir))
  local file = out_dir .. "/screenshot.png"
  -- Show the window that lived through the watchdog restart, not an empty tag.
  wm:client([[for _, c in ipairs(client.get()) do
      if c.class == "XEyes" then c.first_tag:view_only(); client.focus = c end end]])
  harness.wait_until(5, function()
    return wm:client([[return client.focus ~= nil and client.focus.class == "XEyes"]]) end)
  local ok = harness.run("DISPLAY=" .. harness.shq(wm.display) ..
    " import -window root " .. harness.shq(file))
  if ok then say("saved %s", file) else skip("screenshot", "ImageMagick's import failed") end
end

local function main()
  local ok, why = harness.available()
  if not ok then
    print("make demo: cannot run Awesome here: " .. why)
    os.exit(1)
  end
  local mgr, sd_why = systemd.start()
  if mgr then
    say("private systemd --user manager running (pid %d)", mgr.pid)
  else
    skip("systemd --user", sd_why .. "; Awesome runs without a service manager")
  end
  local can_set_clock = testkit.clock_step(0) and true or false

  local wm = start_awesome(mgr)
  local steps = { demo_orphans, demo_clock, demo_stall, demo_watchdog, demo_status, screenshot }
  local failed
  for _, step in ipairs(steps) do
    local step_ok, err = pcall(step, wm, step == demo_clock and can_set_clock or mgr)
    if not step_ok then
      failed = err
      say("FAILED: %s", tostring(err))
      break
    end
  end
  wm:stop()
  if mgr then mgr:stop() end
  heading(failed and "Demo failed" or "Done")
  os.exit(failed and 1 or 0)
end

main()
