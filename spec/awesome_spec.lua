-- clua.awesome (lua/clua/awesome.lua) inside a real, headless Awesome 4.3,
-- and under a real systemd user manager for the watchdog.
local harness = require("support.awesome")
local testkit = require("testkit")

local root = os.getenv("CLUA_ROOT") or "."

-- The rc.lua most tests share: the glue with its defaults, a textclock
-- showing seconds that refreshes only once an hour (so only the glue can
-- make it right after a clock step), and a log of clua::clock_changed.
local RC = [[
local GLib = require("lgi").GLib
clua_spec = { clock = {} }
require("clua.awesome").setup {}
local wibox = require("wibox")
clua_spec.textclock = wibox.widget.textclock("%s", 3600)
awesome.connect_signal("clua::clock_changed", function(change)
    table.insert(clua_spec.clock, {
        t = GLib.get_monotonic_time() / 1e6,
        jump = change.jump, suspended = change.suspended,
        shown = clua_spec.textclock.text, now = os.time(),
    })
end)
]]

local function skip_unless_available()
  local ok, why = harness.available()
  if not ok then pending("needs Awesome under Xvfb: " .. why) end
  return ok
end

-- awesome.restart() five times in a row: Awesome exec's itself in place, so
-- the pid must stay, and every fd must be close-on-exec, so the count must
-- come back to what it was.
local function restart_five_times(wm)
  local pid = wm:pid()
  local fds = harness.fd_count(pid)
  for _ = 1, 5 do
    assert(wm:restart())
  end
  assert.equal(pid, wm:pid())
  assert.is_truthy(harness.wait_until(2, function() return harness.fd_count(pid) == fds end),
    "fds: " .. fds .. " before, now:\n" .. harness.fd_list(pid))
end

describe("clua.awesome in a real Awesome #integration", function()
  local wm

  setup(function()
    if harness.available() then
      wm = assert(harness.start { rc = harness.rc(RC) })
    end
  end)

  teardown(function()
    if wm then wm:stop() end
  end)

  it("starts from rc.lua without startup errors and makes Awesome a subreaper", function()
    if not skip_unless_available() then return end
    assert.is_true(wm:client("return require('clua').getsubreap()"))
    assert.is_nil(wm:client("return awesome.startup_errors"))
  end)

  it("returns its summary through awesome-client", function()
    if not skip_unless_available() then return end
    local text = wm:client([[return require("clua.awesome").status()]])
    assert.is_string(text)
    assert.matches("subreaper: on", text, 1, true)
    assert.matches("\nclock: ", text, 1, true)
    assert.matches("\nwatchdog: not enabled by a service manager", text, 1, true)
    assert.matches("\nstall: ", text, 1, true)
    assert.is_true(select(2, text:gsub("\n", "")) >= 4, "several lines expected:\n" .. text)
  end)

  it("starts no heartbeat timer and raises nothing outside a service manager", function()
    if not skip_unless_available() then return end
    assert.is_nil(wm:client("return os.getenv('NOTIFY_SOCKET')"))
    assert.is_true(wm:client("return require('clua.awesome')._state.watchdog.heartbeat == nil"))
    assert.is_true(wm:client("return require('clua.awesome')._state.watchdog.ready_sent"))
    assert.is_nil(wm:client("return awesome.startup_errors"))
  end)

  it("changes nothing when setup is called a second time", function()
    if not skip_unless_available() then return end
    local snapshot = [[
      local s = require("clua.awesome")._state
      local t = {}
      for _, k in ipairs { "clock.watch", "clock.source", "stall.guard", "stall.timer",
                           "watchdog.heartbeat", "subreaper.sweep_timer" } do
        local feature, field = k:match("^(%w+)%.([%w_]+)$")
        t[#t + 1] = k .. "=" .. tostring(s[feature][field])
      end
      t[#t + 1] = "options=" .. tostring(s.options)
      return table.concat(t, " ")
    ]]
    local before = wm:client(snapshot)
    local fds = harness.fd_count(wm:pid())
    assert.is_false(wm:client(
      [[return require("clua.awesome").setup { stall = 3, clock = false }]]))
    assert.equal(before, wm:client(snapshot))
    assert.equal(fds, harness.fd_count(wm:pid()))
  end)

  it("reports bad options of a second call, one line each, without raising", function()
    if not skip_unless_available() then return end
    local out = wm:client([[
      local errors = {}
      local function on(msg) errors[#errors + 1] = tostring(msg) end
      awesome.connect_signal("debug::error", on)
      local ok, r = pcall(require("clua.awesome").setup,
        { stall = "10", subreaper = 1, clcok = true })
      awesome.disconnect_signal("debug::error", on)
      return tostring(ok) .. " " .. tostring(r) .. "\n" .. table.concat(errors, "\n")
    ]])
    local head, rest = out:match("^([^\n]*)\n(.*)$")
    assert.equal("true false", head)
    local lines = {}
    for l in rest:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(3, #lines, rest)
    assert.matches('unknown option "clcok"', lines[1], 1, true)
    assert.matches('bad option subreaper = 1 (true or false expected)', lines[2], 1, true)
    assert.matches('bad option stall = "10" (true, false or a number of seconds', lines[3], 1, true)
  end)

  it("never steals a status: 500 easy_async exit codes are right while orphans churn", function()
    if not skip_unless_available() then return end
    wm:client([[
      local awful, gears = require("awful"), require("gears")
      local A = { want = {}, got = {}, done = 0, orphans = 0 }
      clua_spec.async = A
      local n, inflight, started = 500, 0, 0
      local function launch()
        while started < n and inflight < 40 do
          started = started + 1
          local i, code = started, math.random(0, 255)
          A.want[i] = code
          inflight = inflight + 1
          awful.spawn.easy_async({ "sh", "-c", "exit " .. code }, function(_, _, reason, c)
            A.got[i] = reason .. " " .. tostring(c)
            A.done = A.done + 1
            inflight = inflight - 1
            launch()
          end)
        end
      end
      launch()
      -- Orphans: each shell exits at once, leaving two sleeps to Awesome.
      local churn
      churn = gears.timer { timeout = 0.05, autostart = true, callback = function()
        if A.done >= n then churn:stop() return end
        awful.spawn.with_shell("sleep 0.05 & sleep 0.1 &")
        A.orphans = A.orphans + 2
      end }
    ]])
    local done = harness.wait_until(90, function()
      return wm:client("return clua_spec.async.done") == 500
    end, 0.5)
    assert.is_truthy(done, "not all 500 callbacks ran: "
      .. tostring(wm:client("return clua_spec.async.done")))
    local wrong, orphans = wm:client([[
      local A, bad = clua_spec.async, {}
      for i = 1, 500 do
        if A.got[i] ~= "exit " .. A.want[i] then
          bad[#bad + 1] = i .. ": want exit " .. A.want[i] .. ", got " .. tostring(A.got[i])
        end
      end
      return table.concat(bad, "; "), A.orphans
    ]])
    assert.equal("", wrong)
    assert.is_true(orphans >= 20, "orphans churned: " .. orphans)
  end)

  it("leaves io.popen():close() and os.execute() their real statuses", function()
    if not skip_unless_available() then return end
    local out = wm:client([[
      local p = io.popen("exit 3")
      p:read("a")
      local a, b, c = p:close()
      local d, e, f = os.execute("exit 5")
      local g, h, i = os.execute("kill -9 $$")
      return table.concat({ tostring(a), b, c, tostring(d), e, f, tostring(g), h, i }, ",")
    ]])
    assert.equal("nil,exit,3,nil,exit,5,nil,signal,9", out)
  end)

  it("leaves SIGCHLD to Awesome's own handler", function()
    if not skip_unless_available() then return end
    assert.equal("handler", wm:client("return require('clua').sigchld()"))
    assert.is_nil(wm:client("return require('clua.awesome')._state.subreaper.sweep_timer"))
  end)

  it("adopts 1,000 double-forked grandchildren, no zombie 2 s after the last exits", function()
    if not skip_unless_available() then return end
    local pid = wm:pid()
    local baseline = {}
    for _, c in ipairs(harness.children(pid)) do baseline[c] = true end
    -- Each grandchild lives 5 s, longer than a wave takes to create, so a
    -- sample of Awesome's children after each wave sees all of that wave.
    local LIFETIME = 5
    local adopted, n = {}, 0
    local function sample()
      for _, c in ipairs(harness.children(pid)) do
        -- (the shells with_shell starts are Awesome's own children)
        local comm = (harness.readfile("/proc/" .. c .. "/comm") or ""):gsub("%s+$", "")
        if not baseline[c] and not adopted[c] and comm ~= "sh" and comm ~= "" then
          adopted[c] = true
          n = n + 1
        end
      end
    end
    -- awful.spawn.with_shell("sleep 5 &"), as rc.lua does it; then waves of
    -- testkit.orphans, which forks a child that forks the grandchildren and
    -- exits at once.  The machine allows about 4,900 tasks in all, shared
    -- with whatever else runs: fork may fail, so count what was created.
    wm:client(([[for _ = 1, 100 do require("awful").spawn.with_shell("sleep %d &") end]])
      :format(LIFETIME))
    local created = 100
    sample()
    for _ = 1, 10 do
      if created >= 1000 then break end
      created = created + wm:client(("return require('testkit').orphans(%d, %d)")
        :format(math.min(300, 1000 - created), LIFETIME))
      sample()
    end
    local last_created = testkit.now("monotonic")
    assert.equal(1000, created)
    assert.is_true(n >= 1000, "adopted by Awesome: " .. n .. " of 1000")
    -- 2 s after the last one exited, none is left, zombie or not.
    testkit.sleep(last_created + LIFETIME + 2 - testkit.now("monotonic"))
    local left, zombies = 0, 0
    for _, c in ipairs(harness.children(pid)) do
      if adopted[c] then left = left + 1 end
      if harness.stat(c) == "Z" then zombies = zombies + 1 end
    end
    assert.equal(0, zombies)
    assert.equal(0, left)
  end)

  describe("on a wall-clock change", function()
    -- Events logged since monotonic time t0 (and before t1, if given): how
    -- many, and the first one whose jump is near `near` (any, if nil):
    -- delay after t0, jump, suspended, what the textclock showed, os.time().
    local function clock_events(t0, t1, near)
      return wm:client(string.format([[
        local n, pick = 0
        for _, e in ipairs(clua_spec.clock) do
          if e.t >= %.6f and e.t < %.6f then
            n = n + 1
            if not pick and (%s == nil or math.abs(e.jump - (%s or 0)) < 1) then pick = e end
          end
        end
        if not pick then return n end
        -- (dbus-send prints a double with 6 digits: send big ones as text)
        return n, pick.t - %.6f, pick.jump, pick.suspended, pick.shown, tostring(pick.now)
      ]], t0, t1 or 1e12, tostring(near), tostring(near), t0))
    end

    it("emits clua::clock_changed once, within 100 ms, on setting the clock to itself", function()
      if not skip_unless_available() then return end
      -- Other programs on this shared machine may set the clock too (their
      -- specs and benchmarks do): only a quiet 0.3 s before and 0.3 s after
      -- our own set counts.  Try again while it is noisy, 10 rounds at most.
      local n, delay, jump, suspended, noisy
      for _ = 1, 10 do
        local before = testkit.now("monotonic")
        testkit.sleep(0.3)
        local t0 = testkit.now("monotonic")
        local ok, msg = testkit.clock_step(0)
        if not ok then
          pending("needs CAP_SYS_TIME to set the clock: " .. tostring(msg))
          return
        end
        testkit.sleep(0.3)
        noisy = clock_events(before, t0) > 0
        n, delay, jump, suspended = clock_events(t0)
        if not noisy and n == 1 then break end
        testkit.sleep(0.5)
      end
      if noisy then
        pending("another program set the clock in each of 10 rounds: "
          .. "our clua::clock_changed cannot be told from theirs")
        return
      end
      assert.equal(1, n)
      assert.is_true(delay < 0.1, "signal after " .. delay .. " s")
      assert.is_true(math.abs(jump) < 0.05, "jump " .. jump)
      assert.is_true(math.abs(suspended) < 0.001, "suspended " .. suspended)
    end)

    it("shows the right time in a textclock with seconds right after a +120 s step", function()
      if not skip_unless_available() then return end
      local t0 = testkit.now("monotonic")
      local ok, msg = testkit.clock_step(120)
      if not ok then
        pending("needs CAP_SYS_TIME to step the clock: " .. tostring(msg))
        return
      end
      finally(function() testkit.clock_step(-120) end)
      local seen = harness.wait_until(1, function()
        return select(2, clock_events(t0, nil, 120)) ~= nil
      end)
      local shown_now = tonumber(wm:client("return clua_spec.textclock.text"))
      local real_now = testkit.now("realtime")
      assert.is_truthy(seen, "no clua::clock_changed after the step")
      local _, _, jump, _, shown, awesome_now = clock_events(t0, nil, 120)
      assert.is_true(math.abs(jump - 120) < 1, "jump " .. tostring(jump))
      -- In the signal handler the textclock already shows the new time.
      assert.is_true(math.abs(tonumber(shown) - tonumber(awesome_now)) <= 1,
        "textclock showed " .. shown .. " at " .. awesome_now)
      assert.is_true(math.abs(shown_now - real_now) <= 1.5,
        "textclock shows " .. shown_now .. ", the time is " .. real_now)
    end)
  end)

  it("leaks no fd across five awesome.restart() (exec in place)", function()
    if not skip_unless_available() then return end
    restart_five_times(wm)
    -- And the glue is set up again in the new image.
    assert.is_true(wm:client("return require('clua').getsubreap()"))
    assert.matches("subreaper: on", wm:client([[return require("clua.awesome").status()]]), 1, true)
  end)
end)

-- The glue watches the clock's fd with the first of GLib.unix_fd_add_full
-- (GLib < 2.88 with lgi 0.9.2), GLibUnix.fd_add_full (GLib >= 2.80) and
-- GLib.io_add_watch (every GLib) that this GLib has. An rc.lua that hides
-- the first spelling, and GLibUnix too when `hide_glibunix`, from the glue
-- only (Awesome keeps the real lgi), and records which path this GLib
-- leaves: GLibUnix.fd_add_full where it has one, else GLib.io_add_watch.
local function fallback_rc(hide_glibunix)
  return harness.rc(([[
    local hide_glibunix = %s
    local lgi = require("lgi")
    local GLib = lgi.GLib
    local has_unix, GLibUnix = pcall(lgi.require, "GLibUnix")
    clua_spec = { events = 0, expect = "GLib.io_add_watch" }
    if not hide_glibunix and has_unix and GLibUnix and GLibUnix.fd_add_full then
      clua_spec.expect = "GLibUnix.fd_add_full"
    end
    package.loaded.lgi = setmetatable({
      GLib = setmetatable({}, { __index = function(_, k)
        if k ~= "unix_fd_add_full" then return GLib[k] end
      end }),
      require = function(name, ...)
        if hide_glibunix and name == "GLibUnix" then error("GLibUnix hidden by the spec") end
        return lgi.require(name, ...)
      end,
    }, { __index = lgi })
    local ok, err = pcall(require("clua.awesome").setup, { stall = false })
    package.loaded.lgi = lgi
    if not ok then error(err) end
    awesome.connect_signal("clua::clock_changed", function()
      clua_spec.events = clua_spec.events + 1
    end)
  ]]):format(tostring(hide_glibunix)))
end

-- Starts Awesome with fallback_rc, checks that status() names the path this
-- GLib needs, then that a clock set reaches clua::clock_changed through it.
local function check_fallback(hide_glibunix)
  if not skip_unless_available() then return end
  local wm = assert(harness.start { rc = fallback_rc(hide_glibunix) })
  finally(function() wm:stop() end)
  local expect = wm:client("return clua_spec.expect")
  local status = wm:client([[return require("clua.awesome").status()]])
  assert.matches("via " .. expect, status, 1, true)
  local ok, msg = testkit.clock_step(0)
  if not ok then
    pending("needs CAP_SYS_TIME to set the clock: " .. tostring(msg))
    return
  end
  assert.is_truthy(harness.wait_until(1, function()
    return wm:client("return clua_spec.events") >= 1
  end), "no clua::clock_changed through " .. expect)
end
describe("clua.awesome outside a user manager #integration", function()
  local wm

  setup(function()
    if harness.available() then
      wm = assert(harness.start { rc = harness.rc(RC) })
    end
  end)

  teardown(function()
    if wm then wm:stop() end
  end)

  it("starts programs exactly as Awesome does: no scope, the same errors", function()
    if not skip_unless_available() then return end
    assert.matches("\nscopes: off %(no systemd user manager%)",
      wm:client([[return require("clua.awesome").status()]]))
    local out = wm:client([[
      local awful = require("awful")
      local pid = awful.spawn({ "sleep", "1004" }, false)
      return tostring(pid) .. "\n" .. tostring(awful.spawn("clua-no-such-program"))
    ]])
    local pid, missing = out:match("^(%d+)\n(.*)$")
    -- The program itself, straight from Awesome: no clua-scope in between.
    assert.is_truthy(harness.wait_until(5, function()
      return harness.readfile("/proc/" .. pid .. "/cmdline") == "sleep\0" .. "1004\0"
    end))
    assert.equal(wm:pid(), select(2, harness.stat(pid)))
    testkit.kill(tonumber(pid), 15)
    assert.matches("^Failed to execute child process .*clua%-no%-such%-program", missing)
  end)
end)

-- rc.lua for the restore tests: two screens (the second a fake one,
-- made again by each start), each with tags a, b, c.
local RESTORE_RC = [[
require("clua.awesome").setup {}
local awful = require("awful")
if screen.count() == 1 then
    local g = screen[1].geometry
    screen[1]:fake_resize(g.x, g.y, g.width / 2, g.height)
    screen.fake_add(g.x + g.width / 2, g.y, g.width / 2, g.height)
end
awful.screen.connect_for_each_screen(function(s)
    awful.tag({ "a", "b", "c" }, s, awful.layout.suit.tile)
end)
]]

describe("clua.awesome's restore across restarts #integration", function()
  local wm

  setup(function()
    if harness.available() then
      wm = assert(harness.start { rc = harness.rc(RESTORE_RC) })
    end
  end)

  teardown(function()
    if wm then wm:stop() end
  end)

  -- Each window as "class screen tags flags", sorted.
  local function places()
    return wm:client([[
      local t = {}
      for _, c in ipairs(client.get()) do
          local tags = {}
          for _, tag in ipairs(c:tags()) do tags[#tags + 1] = tag.name end
          local flags = {}
          for _, f in ipairs { "floating", "maximized", "minimized", "sticky", "ontop" } do
              if c[f] then flags[#flags + 1] = f end
          end
          t[#t + 1] = c.class:lower() .. " " .. c.screen.index .. " " .. table.concat(tags, "+")
              .. " " .. table.concat(flags, ",")
      end
      table.sort(t)
      return table.concat(t, "\n")
    ]])
  end

  it("gives every window its tags, screen and state back after awesome.restart()", function()
    if not skip_unless_available() then return end
    assert.equal(2, wm:client("return screen.count()"))
    wm:client([[
      local awful = require("awful")
      for _, prog in ipairs { "xeyes", "xclock", "xlogo" } do awful.spawn({ prog }, false) end
    ]])
    local function three() return wm:client("return #client.get()") == 3 end
    assert.is_truthy(harness.wait_until(10, three))
    wm:client([=[
      local s1, s2 = screen[1], screen[2]
      for _, c in ipairs(client.get()) do
          local class = c.class:lower()
          if class == "xeyes" then
              c:tags({ s1.tags[1], s1.tags[3] })
              c.floating = true
          elseif class == "xclock" then
              c:move_to_screen(s2)
              c:tags({ s2.tags[2] })
              c.maximized = true
          else
              c:tags({ s1.tags[2] })
              c.ontop = true
              c.minimized = true
          end
      end
    ]=])
    local before = places()
    -- (A maximized window reads as floating in Awesome 4.3.)
    assert.equal("xclock 2 b floating,maximized\nxeyes 1 a+c floating\nxlogo 1 b minimized,ontop",
      before)
    assert(wm:restart())
    assert.is_truthy(harness.wait_until(5, three))
    assert.equal(before, places())
    assert.matches("3 put back at this start",
      wm:client([[return require("clua.awesome").status()]]))
  end)
end)

describe("clua.awesome without GLib.unix_fd_add_full #integration", function()
  it("watches the clock's fd through GLibUnix.fd_add_full where this GLib has it, "
    .. "else GLib.io_add_watch", function()
    check_fallback(false)
  end)

  it("falls back to GLib.io_add_watch without GLibUnix either", function()
    check_fallback(true)
  end)
end)

describe("examples/rc.lua #integration", function()
  it("loads under the harness without startup errors", function()
    if not skip_unless_available() then return end
    local wm = assert(harness.start { rc = root .. "/examples/rc.lua" })
    finally(function() wm:stop() end)
    assert.matches("subreaper: on", wm:client([[return require("clua.awesome").status()]]), 1, true)
  end)
end)

describe("clua.awesome under a real systemd user manager (WatchdogSec=3) #integration", function()
  local systemd = require("support.systemd")
  local clua = require("clua")
  local mgr, wm, why

  -- The stall breaker is off in this rc.lua: here the watchdog must act.
  local WATCHDOG_RC = [[
    require("clua.awesome").setup { stall = false }
  ]]

  local function skip_unless_ready()
    if why then pending(why) return false end
    return true
  end

  setup(function()
    local ok, msg = harness.available()
    if not ok then why = "needs Awesome under Xvfb: " .. msg return end
    if not clua.watchdog_usec then
      why = "clua.watchdog_usec and the notify calls are not in this build (notify.c)"
      return
    end
    mgr, msg = systemd.start { own_cgroup = true }
    if not mgr then why = "needs a systemd user manager: " .. msg return end
    wm = assert(harness.start {
      rc = harness.rc(WATCHDOG_RC), manager = mgr,
      unit_extra = { "WatchdogSec=3", "RestartSec=1" },
    })
  end)

  teardown(function()
    if wm then wm:stop() end
    if mgr then mgr:stop() end
  end)

  it("is started by the manager as Type=notify and feeds the watchdog every 1.5 s", function()
    if not skip_unless_ready() then return end
    assert.equal("active", mgr:show("awesome.service", "ActiveState"))
    assert.equal("3000000", wm:client("return os.getenv('WATCHDOG_USEC')"))
    local status = wm:client([[return require("clua.awesome").status()]])
    assert.matches("watchdog: every 3 s, heartbeat every 1.5 s", status, 1, true)
    assert.matches("^clua: ", mgr:show("awesome.service", "StatusText"))
  end)

  it("stays active with no restart for 15 s of normal work", function()
    if not skip_unless_ready() then return end
    local pid = wm:pid()
    local deadline = testkit.now("monotonic") + 15
    while testkit.now("monotonic") < deadline do
      wm:client([[require("awful").spawn.with_shell("sleep 0.2 &") return 1]])
      testkit.sleep(0.5)
    end
    assert.equal("active", mgr:show("awesome.service", "ActiveState"))
    assert.equal("0", mgr:show("awesome.service", "NRestarts"))
    assert.equal(pid, wm:pid())
    local beats = tonumber(wm:client("return require('clua.awesome')._state.watchdog.heartbeats"))
    assert.is_true(beats >= 9, "heartbeats sent: " .. beats)
  end)

  it("survives awesome.restart() five times in a row: no watchdog kill, no fd leaked", function()
    if not skip_unless_ready() then return end
    restart_five_times(wm)
    -- (READY=1 from the new image may trail its first D-Bus answer a bit)
    assert.is_true(mgr:wait_for("awesome.service", "ActiveState", "active", 5))
    assert.equal("0", mgr:show("awesome.service", "NRestarts"))
  end)

  it("names the program, not clua-scope, in spawn::initiated and in Awesome's errors", function()
    if not skip_unless_ready() then return end
    local pid, snid = wm:client([[
      clua_spec = { sn = {} }
      awesome.connect_signal("spawn::initiated", function(t)
        clua_spec.sn[t.id] = tostring(t.binary_name)
      end)
      local pid, snid = require("awful").spawn({ "sleep", "1002" })
      return tostring(pid), tostring(snid)
    ]])
    assert.matches("^%d+$", pid)
    local binary
    assert(harness.wait_until(5, function()
      binary = wm:client(("return clua_spec.sn[%q]"):format(snid))
      return binary
    end), "no spawn::initiated for " .. snid .. " within 5 s")
    assert.equal("sleep", binary)
    -- In its scope all the same (once clua-scope has it: it waits for the
    -- manager, then exec's sleep).
    local cgroup
    assert(harness.wait_until(5, function()
      cgroup = harness.readfile("/proc/" .. pid .. "/cgroup") or ""
      return cgroup:find("/app.slice/app-awesome-sleep-", 1, true)
    end), "sleep 1002 not in its scope within 5 s:\n" .. tostring(cgroup))
    testkit.kill(tonumber(pid), 15)
    -- A command line too long for the exec: Awesome's own error, naming
    -- the program, as without clua.
    local err = wm:client([[
      return tostring(require("awful").spawn({ "true", string.rep("x", 200000) }))
    ]])
    assert.matches("^Failed to execute child process %S*true%S* %(Argument list too long%)$", err)
    assert.not_matches("clua%-scope", err)
  end)

  it("is killed by the watchdog when its main loop hangs, and runs again (new pid)", function()
    if not skip_unless_ready() then return end
    local pid = wm:pid()
    local t0 = testkit.now("monotonic")
    -- Never answers: the main loop is gone.
    wm:try_client("while true do end", 1)
    local result
    local restarted = harness.wait_until(3 + 1 + 10, function()
      local r = mgr:show("awesome.service", "Result")
      if r ~= "success" then result = r end
      local p = wm:pid()
      return p and p ~= pid and mgr:show("awesome.service", "ActiveState") == "active"
    end, 0.05)
    local took = testkit.now("monotonic") - t0
    assert.is_truthy(restarted, "not running again after " .. took .. " s\n" .. wm:logtail())
    assert.equal("1", mgr:show("awesome.service", "NRestarts"))
    -- (Result stays "watchdog" from the kill until the restart, RestartSec=1)
    assert.equal("watchdog", result)
    assert(wm:wait_ready())
  end)
end)
