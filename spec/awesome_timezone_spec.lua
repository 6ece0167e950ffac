-- clua.awesome's timezone feature in a real, headless Awesome 4.3.
--
-- The Awesome under test runs on a private copy of /etc (a mount namespace
-- of its own, spec/support/private_etc.lua), and the spec changes that
-- copy's localtime the ways timedatectl and other tools change
-- /etc/localtime. Awesome, GLib, glibc and inotify meet the same directory
-- and the same file operations as on a real change, while /etc/localtime of
-- this machine, which everything else running here reads, stays as it is.
-- That needs root (a mount namespace): without it these tests skip.
local harness = require("support.awesome")
local private_etc = require("support.private_etc")
local shell = require("support.shell")
local testkit = require("testkit")
local clua = require("clua")

-- The glue with its defaults, a textclock built after setup that shows the
-- zone and refreshes only once an hour (so only the glue can make it right
-- after a change), one with a zone of its own, and a log of
-- clua::timezone_changed with what the clocks showed in the handler.
local RC = [[
local GLib = require("lgi").GLib
clua_spec = { tz = {} }
require("clua.awesome").setup {}
local wibox = require("wibox")
clua_spec.textclock = wibox.widget.textclock("%H:%M %Z", 3600)
clua_spec.paris = wibox.widget.textclock("%Z", 3600, "Europe/Paris")
awesome.connect_signal("clua::timezone_changed", function(change)
    table.insert(clua_spec.tz, {
        t = GLib.get_monotonic_time() / 1e6,
        old = change.old, new = change.new,
        shown = clua_spec.textclock.text, date = os.date("%Z"), now = os.time(),
    })
end)
]]

local function skip_unless_available()
  local ok, why = harness.available()
  if not ok then
    pending("needs Awesome under Xvfb: " .. why)
    return false
  end
  ok, why = private_etc.available()
  if not ok then
    pending("needs a mount namespace for a private /etc (root): " .. why)
    return false
  end
  return true
end

-- How many timezone signals Awesome has seen.
local function count(wm)
  return wm:client("return #clua_spec.tz")
end

-- Waits until no signal came for 0.5 s (for 10 s at most); returns the
-- count.
local function settle(wm)
  local n = count(wm)
  shell.wait_for("no clua::timezone_changed for 0.5 s", 10, function()
    local before = n
    testkit.sleep(0.5)
    n = count(wm)
    return n == before, n .. " signals"
  end, 0)
  return n
end

-- The local time `offset` hours east of UTC at `now`, as the textclock's
-- format shows it.
local function clock_text(now, offset, abbr)
  return os.date("!%H:%M", now + offset * 3600) .. " " .. abbr
end

-- Makes one change (`act`), then checks everything a user relies on: the
-- signal came once, with both names, within 0.5 s of the change (it takes
-- milliseconds; the rest is room for a busy machine, where Awesome waits
-- for a core; a watch that polled would miss it by seconds); in its
-- handler the textclock already showed the new zone's time and
-- abbreviation and os.date("%Z") the new abbreviation; and they still do.
local function check_change(wm, act, want)
  local n0 = count(wm)
  act()
  local t_change = testkit.now("monotonic")
  assert.is_truthy(harness.wait_until(5, function() return count(wm) > n0 end),
    "no clua::timezone_changed within 5 s of the change to " .. want.new)
  local n = settle(wm)
  assert.are.equal(n0 + 1, n, "one signal per change")
  local t, old, new, shown, date, now = wm:client([[
    local e = clua_spec.tz[#clua_spec.tz]
    return tostring(e.t), e.old, e.new, e.shown, e.date, tostring(e.now)
  ]])
  assert.are.equal(want.old, old)
  assert.are.equal(want.new, new)
  local late = tonumber(t) - t_change
  assert.is_true(late <= 0.5, ("the signal came %.3f s after the change"):format(late))
  now = tonumber(now)
  -- a minute may turn between the refresh and os.time() in the handler
  local ok_text = shown == clock_text(now, want.offset, want.abbr) or
    shown == clock_text(now - 1, want.offset, want.abbr)
  assert.is_true(ok_text, ("textclock showed %q at %s, want %s"):format(
    shown, os.date("!%H:%M:%S", now), clock_text(now, want.offset, want.abbr)))
  assert.are.equal(want.abbr, date)
  -- and afterwards: os.date, a fresh textclock refresh, the clock with a
  -- zone of its own left on it
  local date_now, text_now, paris = wm:client([[
    clua_spec.textclock:force_update()
    return os.date("%Z"), clua_spec.textclock.text, clua_spec.paris.text
  ]])
  assert.are.equal(want.abbr, date_now)
  assert.matches(" " .. want.abbr .. "$", text_now)
  assert.matches("^CES?T$", paris)
end

describe("clua.awesome timezone changes #integration", function()
  local wm, etc

  setup(function()
    if harness.available() and private_etc.available() then
      etc = private_etc.new()
      etc:link("Etc/UTC") -- a known zone to start from
      wm = assert(harness.start { rc = harness.rc(RC), etc = etc })
    end
  end)

  teardown(function()
    if wm then wm:stop() end
    if etc then etc:remove() end
  end)

  -- Puts the copy back as it started (a symlink to Etc/UTC) and waits
  -- until Awesome has seen it, so one test's change never lands in the
  -- next one.
  local function restore()
    if etc:state() ~= "link ../usr/share/zoneinfo/Etc/UTC" then
      etc:link("Etc/UTC")
    end
    settle(wm)
  end

  it("runs Awesome on the private /etc, with the zone the copy names", function()
    if not skip_unless_available() then return end
    local pid = wm:pid()
    local _, mine = harness.run("readlink /proc/" .. pid .. "/root/etc/localtime")
    assert.are.equal("../usr/share/zoneinfo/Etc/UTC", mine)
    assert.are.equal("UTC", wm:client("return os.date('%Z')"))
    assert.matches("^timezone: Etc/UTC %(/etc/localtime, fd %d+ via [%w._]+%)$",
      wm:client("return require('clua.awesome').status()"):match("\n(timezone: [^\n]*)"))
  end)

  it("follows /etc/localtime replaced the way timedatectl does it, and back", function()
    if not skip_unless_available() then return end
    finally(restore)
    check_change(wm, function() etc:link("Asia/Tokyo") end,
      { old = "Etc/UTC", new = "Asia/Tokyo", abbr = "JST", offset = 9 })
    check_change(wm, function() etc:link("Etc/UTC") end,
      { old = "Asia/Tokyo", new = "Etc/UTC", abbr = "UTC", offset = 0 })
  end)

  it("follows /etc/localtime rewritten in place, and back", function()
    if not skip_unless_available() then return end
    finally(restore)
    -- a plain file first (renamed into place: a change of its own)
    check_change(wm, function() etc:copy("Etc/UTC") end,
      { old = "Etc/UTC", new = "UTC0", abbr = "UTC", offset = 0 })
    -- GLib keeps its local zone cached under the name from /etc/timezone
    -- here, which does not change: the glue must still get it right
    check_change(wm, function() etc:rewrite("Asia/Tokyo") end,
      { old = "UTC0", new = "JST-9", abbr = "JST", offset = 9 })
    check_change(wm, function() etc:rewrite("Etc/UTC") end,
      { old = "JST-9", new = "UTC0", abbr = "UTC", offset = 0 })
  end)

  it("counts the changes in status()", function()
    if not skip_unless_available() then return end
    local n = settle(wm)
    local text = wm:client("return require('clua.awesome').status()")
    assert.matches("\ntimezone changes: " .. n .. "\n", text, 1, true)
    assert.is_true(n >= 5, "changes seen by the earlier tests: " .. n)
  end)
end)

-- Voluntary context switches of every thread of pid: a thread switches
-- voluntarily each time it blocks, so one per wake-up (as bench/idle.lua
-- counts them).
local function switches(pid)
  local n = 0
  local _, out = harness.run("ls /proc/" .. pid .. "/task")
  for tid in out:gmatch("%d+") do
    local s = harness.readfile("/proc/" .. pid .. "/task/" .. tid .. "/status") or ""
    n = n + (tonumber(s:match("voluntary_ctxt_switches:%s*(%d+)")) or 0)
  end
  return n
end

describe("clua.awesome timezone watch, idle #integration", function()
  it("adds no wake-up in an idle minute with nothing changing", function()
    local ok, why = harness.available()
    if not ok then
      pending("needs Awesome under Xvfb: " .. why)
      return
    end
    -- Two Awesomes side by side, differing only in the timezone option.
    -- Neither runs the stall breaker (its tick timer) nor the clock watch
    -- (other programs here set the clock, each set waking both Awesomes,
    -- and the two counts cannot be read at the very same instant): with
    -- those off an idle Awesome does not wake at all, so any wake-up the
    -- timezone watch added would stand out.
    -- (busted keeps one `finally` per test: this one undoes everything)
    local on, off, guard
    finally(function()
      if guard then guard:close() end
      if off then off:stop() end
      if on then on:stop() end
    end)
    on = assert(harness.start { rc = harness.rc([[
      require("clua.awesome").setup { stall = false, clock = false }
    ]]) })
    off = assert(harness.start { rc = harness.rc([[
      require("clua.awesome").setup { stall = false, clock = false, timezone = false }
    ]]) })
    assert.is_true(on:client("return require('clua.awesome')._state.timezone.watch ~= nil"))
    assert.matches("\ntimezone: off (setup option)\n",
      off:client("return require('clua.awesome').status()"), 1, true)
    -- A change in /etc by anybody else would wake the watch, rightly; this
    -- process's own watch on /etc tells whether one came.
    guard = assert(clua.timezonewatch())
    local result
    for _ = 1, 2 do
      testkit.sleep(3) -- past the start-up work
      guard:read()
      local woke0 = on:client("return require('clua.awesome')._state.timezone.wakeups")
      local a0, b0 = switches(on:pid()), switches(off:pid())
      testkit.sleep(60)
      local a1, b1 = switches(on:pid()), switches(off:pid())
      local woke1 = on:client("return require('clua.awesome')._state.timezone.wakeups")
      if not testkit.poll_readable(guard:fd(), 0) then
        result = { on = a1 - a0, off = b1 - b0, woke = woke1 - woke0 }
        break
      end
      shell.retried("/etc changed during the idle minute (another program)")
    end
    if not result then
      pending("/etc changed during each of two idle minutes (another program): not idle")
      return
    end
    assert.are.equal(0, result.woke, "the watch's fd woke Awesome")
    assert.is_true(result.on <= result.off, ("wake-ups in the minute: %d with the timezone " ..
      "watch, %d without"):format(result.on, result.off))
  end)
end)
