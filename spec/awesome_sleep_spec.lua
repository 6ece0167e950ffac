-- clua.awesome's `sleep` feature (lua/clua/awesome.lua) where this machine
-- can run it: a real, headless Awesome under Xvfb, with no logind and no
-- system bus.  Its option is checked like the others (a bad one is
-- reported in one line and turns off this feature alone), and status()
-- says why it is off.  The parts that need no logind run through the
-- feature's own functions (`_state.sleep`), against the real X server and
-- the real systemd-inhibit: the repaint after resume, Awesome's keyboard
-- grab let go before the locker, a refused inhibitor.  What it does with a
-- real logind (suspend, lock, the inhibitor held) is tested inside the
-- booted container of `make check-login`.
local harness = require("support.awesome")
local shell = require("support.shell")

local root = os.getenv("CLUA_ROOT") or "."
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")

local function skip_unless_available()
  local ok, why = harness.available()
  if not ok then pending("needs Awesome under Xvfb: " .. why) end
  return ok
end

-- Starts Awesome whose rc.lua records every debug::error, calls
-- setup(`options`) and runs `after` (Lua), runs fn(wm), stops it.
local function with_setup(options, fn, after)
  local wm = assert(harness.start { rc = harness.setup_rc(options, nil, after) })
  local ok, err = pcall(fn, wm)
  wm:stop()
  if not ok then error(err, 0) end
end

local function errors_of(wm)
  local text = wm:client("return table.concat(clua_spec.errors, '\\n')")
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return lines, text
end

-- status()'s lines, once the sleep line no longer says "starting" (busctl
-- answers within its own 5 s limit).
local function settled_status(wm)
  local status
  shell.poll(10, function()
    status = wm:client([[return require("clua.awesome").status()]])
    return not status:find("\nsleep: starting", 1, true) or nil
  end)
  return status
end

local function line_of(status, prefix)
  for l in status:gmatch("[^\n]+") do
    if l:sub(1, #prefix) == prefix then return l end
  end
end

-- Every other feature still runs: checked in Awesome itself.
local function others_run(wm)
  assert.equal("subreaper=true clock=true stall=true restore=true", wm:client([[
    local s = require("clua.awesome")._state
    return table.concat({
      "subreaper=" .. tostring(require("clua").getsubreap()),
      "clock=" .. tostring(s.clock.watch ~= nil),
      "stall=" .. tostring(s.stall.guard ~= nil),
      "restore=" .. tostring(s.restore.started),
    }, " ")
  ]]))
end

local LIST = "a list of strings %(the program first, no shell%) expected"

local BAD = {
  { "{ sleep = 3 }",
    "bad option sleep = 3 %(true, false or { locker = { PROGRAM, ARG%.%.%. } } expected%): "
      .. "sleep is off$",
    "^sleep: off %(bad option 3, true, false or " },
  { '{ sleep = { locker = "i3lock" } }',
    'bad option sleep%.locker = "i3lock" %(a list of strings %(the program first, no shell%) '
      .. 'expected%): sleep is off$',
    '^sleep: off %(bad option sleep%.locker = "i3lock", a list of strings %(the program first, '
      .. 'no shell%) expected%)$' },
  { "{ sleep = { locker = { 1 } } }",
    "bad option sleep%.locker%[1%] = 1 %(" .. LIST .. "%): sleep is off$",
    "^sleep: off %(bad option sleep%.locker%[1%] = 1, " },
  { "{ sleep = { locker = {} } }",
    "bad option sleep%.locker = a table %(" .. LIST .. "%): sleep is off$",
    "^sleep: off %(bad option sleep%.locker = a table, " },
  { '{ sleep = { locker = { "i3lock", x = "y" } } }',
    'bad option sleep%.locker = a table %(key "x"%) %(' .. LIST .. "%): sleep is off$",
    '^sleep: off %(bad option sleep%.locker = a table %(key "x"%), ' },
  { '{ sleep = { lockr = { "i3lock" } } }',
    'bad option sleep%.lockr %(unknown key%) %(true, false or { locker = ',
    "^sleep: off %(bad option sleep%.lockr %(unknown key%), " },
}

describe("clua.awesome sleep, without logind #integration", function()
  for _, case in ipairs(BAD) do
    local options, reported, status_line = case[1], case[2], case[3]
    it(options .. ": one line, sleep off, every other feature on", function()
      if not skip_unless_available() then return end
      with_setup(options, function(wm)
        assert.is_true(wm:client("return clua_spec.after"), "rc.lua did not go on after setup()")
        local lines, text = errors_of(wm)
        assert.equal(1, #lines, "reported:\n" .. text)
        assert.matches("^clua%.awesome: setup: " .. reported, lines[1])
        local status = wm:client([[return require("clua.awesome").status()]])
        assert.matches(status_line, line_of(status, "sleep: ") or "(no sleep line)")
        others_run(wm)
      end)
    end)
  end

  it("an unknown option names sleep among the options", function()
    if not skip_unless_available() then return end
    with_setup("{ nosuch = 1 }", function(wm)
      local lines, text = errors_of(wm)
      assert.equal(1, #lines, "reported:\n" .. text)
      assert.matches("the options are subreaper, clock, timezone, watchdog, stall, scopes, "
        .. "restore, sleep%)$", lines[1])
    end)
  end)

  it("sleep = false: off (setup option), nothing reported", function()
    if not skip_unless_available() then return end
    with_setup("{ sleep = false }", function(wm)
      assert.equal(0, #errors_of(wm))
      local status = wm:client([[return require("clua.awesome").status()]])
      assert.equal("sleep: off (setup option)", line_of(status, "sleep: "))
    end)
  end)

  -- After a resume clua.awesome repaints every wibox whole (Awesome issue
  -- 2470): checked with the function the resume runs, on a wibox whose
  -- widget counts its draws.  A plain draw() repaints nothing (no part is
  -- dirty): the count moves only for a complete repaint.
  it("the resume's redraw repaints every wibox whole", function()
    if not skip_unless_available() then return end
    with_setup("{}", function(wm)
      local function draws() return wm:client("return clua_spec.draws") end
      shell.wait_for("the first draw of the wibox", 10, function() return draws() > 0 end)
      local before = draws()
      wm:client("clua_spec.box:draw()")
      shell.sleep(0.3)
      assert.equal(before, draws())
      wm:client([[require("clua.awesome")._state.sleep.redraw()]])
      shell.wait_for("the wibox to be repainted", 10, function() return draws() > before end)
      assert.equal(0, #errors_of(wm))
    end, [[
      require("awful")
      local wibox = require("wibox")
      clua_spec.draws = 0
      local w = require("wibox.widget.base").make_widget()
      function w.fit() return 50, 10 end
      function w.draw() clua_spec.draws = clua_spec.draws + 1 end
      clua_spec.box = wibox { visible = true, x = 0, y = 0, width = 50, height = 10,
                              widget = w }
    ]])
  end)

  -- Before it starts the locker, clua.awesome lets go of Awesome's own
  -- keyboard grab (an open prompt or menu): the locker could not grab,
  -- and clua-grabwait would see Awesome's grab as the locker's.  Checked
  -- with the function it calls, against the real X server: the keyboard
  -- is free after it, and awful.keygrabber still grabs afterwards.
  it("lets go of Awesome's keyboard grab before the locker, and awful grabs again after",
    function()
    if not skip_unless_available() then return end
    with_setup("{}", function(wm)
      local function grabbed()
        local _, out, rc = shell.run(wm:envprefix() .. shell.quote(tools .. "/clua-grabwait")
          .. " 0 2>&1", { timeout = 10 })
        assert(rc == 0 or rc == 1, out)
        return rc == 0
      end
      wm:client([[require("awful.keygrabber").run(function() end)]])
      assert.is_true(wm:client("return keygrabber.isrunning()"))
      assert.is_true(grabbed())
      wm:client([[require("clua.awesome")._state.sleep.drop_awesome_grabs()]])
      assert.is_false(wm:client("return keygrabber.isrunning()"))
      assert.is_false(grabbed())
      wm:client([[clua_spec.g = require("awful.keygrabber").run(function() end)]])
      assert.is_true(wm:client("return keygrabber.isrunning()"))
      assert.is_true(grabbed())
      wm:client([[require("awful.keygrabber").stop(clua_spec.g)]])
      assert.equal(0, #errors_of(wm))
    end, [[require("awful")]])
  end)

  -- logind names session "2" /org/freedesktop/login1/session/_32 (sd-bus
  -- escapes every byte but [A-Za-z0-9], and a leading digit): the path
  -- whose Lock and Unlock clua follows.
  it("follows the D-Bus object path logind gives the session", function()
    if not skip_unless_available() then return end
    with_setup("{}", function(wm)
      assert.equal("_32 c1 _31_2d_5f c_2e4 _32a", wm:client([[
        local s = require("clua.awesome")._state.sleep
        local t = {}
        for _, id in ipairs { "2", "c1", "1-_", "c.4", "2a" } do
          t[#t + 1] = (s.session_object(id):match("/session/(.*)$"))
        end
        return table.concat(t, " ")
      ]]))
    end)
  end)

  -- Awesome 4.3 keeps one handler per D-Bus interface.  A handler rc.lua
  -- connects to logind's interfaces after setup() (a lock script written
  -- for plain Awesome) still runs: clua's, connected at setup(), calls it.
  -- Awesome dispatches by interface name on either bus, so a signal of
  -- that interface sent on the session bus reaches both here.
  it("shares logind's D-Bus interfaces with handlers rc.lua connects after setup()", function()
    if not skip_unless_available() then return end
    with_setup("{}", function(wm)
      local connected = wm:client([[return tostring(clua_spec.connected)]])
      assert.equal("true", connected)
      local send = "timeout 10 dbus-send --session --type=signal /org/freedesktop/login1 "
        .. "org.freedesktop.login1.Manager.PrepareForSleep boolean:"
      assert(shell.run(wm:envprefix() .. send .. "true", 15))
      assert(shell.run(wm:envprefix() .. send .. "false", 15))
      shell.wait_for("rc.lua's handler to see both signals", 10, function()
        return wm:client([[return #clua_spec.seen]]) == 2
      end)
      assert.equal("PrepareForSleep true,PrepareForSleep false",
        wm:client([[return table.concat(clua_spec.seen, ",")]]))
      -- Disconnected, it runs no more; clua's own stays.
      wm:client([[dbus.disconnect_signal("org.freedesktop.login1.Manager", clua_spec.handler)]])
      assert(shell.run(wm:envprefix() .. send .. "true", 15))
      assert(shell.run(wm:envprefix() .. "timeout 10 dbus-send --session --type=signal "
        .. "/clua org.clua.Spec.Done", 15))
      shell.wait_for("the marker signal", 10, function()
        return wm:client([[return clua_spec.done]]) == true
      end)
      assert.equal(2, wm:client([[return #clua_spec.seen]]))
      assert.equal(0, #errors_of(wm))
      others_run(wm)
    end, [[
      clua_spec.seen = {}
      function clua_spec.handler(data, start)
        if data.member == "PrepareForSleep" then
          table.insert(clua_spec.seen, data.member .. " " .. tostring(start))
        end
      end
      clua_spec.connected = dbus.connect_signal("org.freedesktop.login1.Manager",
        clua_spec.handler)
      dbus.add_match("session", "type='signal',interface='org.freedesktop.login1.Manager'")
      dbus.connect_signal("org.clua.Spec", function() clua_spec.done = true end)
      dbus.add_match("session", "type='signal',interface='org.clua.Spec'")
    ]])
  end)

  -- The inhibitor's child, when logind refuses it (here: no system bus at
  -- all, the real systemd-inhibit fails): reported once each, with
  -- systemd-inhibit's own message, and no fd left behind in Awesome.
  it("a refused inhibitor is reported with systemd-inhibit's message and leaves no fd", function()
    if not skip_unless_available() then return end
    with_setup("{}", function(wm)
      settled_status(wm)
      local before = harness.fd_count(wm:pid())
      for _ = 1, 3 do
        wm:client([[require("clua.awesome")._state.sleep.take_inhibitor()]])
      end
      shell.wait_for("three reports", 10, function() return #errors_of(wm) == 3 end)
      for _, line in ipairs(errors_of(wm)) do
        assert.matches("^clua%.awesome: sleep: the delay inhibitor is gone %(systemd%-inhibit "
          .. "exit 1: .+%); a suspend no longer waits for the locker and sleep%.target$", line)
      end
      shell.sleep(0.5)
      assert.equal(before, harness.fd_count(wm:pid()))
      assert.is_nil(wm:client([[return require("clua.awesome")._state.sleep.inhibitor]]))
    end)
  end)

  it("without logind on the system bus: status() says why, nothing reported, "
    .. "no inhibitor child", function()
    if not skip_unless_available() then return end
    with_setup('{ sleep = { locker = { "i3lock", "-n" } } }', function(wm)
      local status = settled_status(wm)
      assert.matches("^sleep: off %(no logind on the system bus: busctl exit %d+: .+%)$",
        line_of(status, "sleep: ") or status)
      assert.not_matches("nil", status)
      assert.equal(0, #errors_of(wm))
      -- Nothing of it left running: no systemd-inhibit, no locker.
      local kids = wm:client([[
        local names = {}
        for _, pid in ipairs(require("clua").children() or {}) do
          local f = io.open("/proc/" .. pid .. "/comm")
          if f then names[#names + 1] = f:read("*l"); f:close() end
        end
        return table.concat(names, " ")
      ]])
      assert.not_matches("systemd%-inhibit", kids)
      assert.not_matches("i3lock", kids)
      others_run(wm)
    end)
  end)
end)
