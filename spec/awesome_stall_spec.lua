-- The stall breaker inside a real Awesome (clua.awesome's `stall` option
-- over clua.stallguard, following Awesome's GLib main loop): a runaway Lua
-- loop is interrupted with a traceback and the desktop lives on; an idle
-- Awesome is never woken; a stopped Awesome, or Awesome's own C code
-- waiting for the X server, is never mistaken for a stall of Lua.
local harness = require("support.awesome")
local testkit = require("testkit")
local clua = require("clua")

-- Awesome with the guard at `limit` seconds; debug::error messages logged;
-- F12 runs a runaway loop from a key binding (handled right after
-- Awesome's poll, before its poll function returns to GLib).
local function start(limit)
  return assert(harness.start { rc = harness.rc(([[
    clua_spec = { errors = {}, managed = 0 }
    awesome.connect_signal("debug::error", function(e)
      table.insert(clua_spec.errors, tostring(e))
    end)
    client.connect_signal("manage", function()
      clua_spec.managed = clua_spec.managed + 1
    end)
    local awful = require("awful")
    local function runaway_key_binding()
      while true do end
    end
    root.keys(awful.key({}, "F12", runaway_key_binding))
    require("clua.awesome").setup { stall = %s }
  ]]):format(limit)) })
end

-- /proc of Awesome's threads: the main one (tid = pid) and the watcher
-- ("clua-stall"): voluntary context switches (one per wake-up) and the
-- syscall line (proc(5)).
local function thread(pid, tid)
  local dir = "/proc/" .. pid .. "/task/" .. tid
  local status = harness.readfile(dir .. "/status") or ""
  local syscall = (harness.readfile(dir .. "/syscall") or ""):match("[^\n]*")
  return tonumber(status:match("voluntary_ctxt_switches:%s*(%d+)")), syscall
end

local function watcher_tid(pid)
  local _, out = harness.run("grep -l '^clua-stall$' /proc/" .. pid .. "/task/*/comm")
  return out:match("/task/(%d+)/comm")
end

-- The watcher sleeps without a timeout: ppoll (syscall 271 on x86-64) on
-- two fds (its stop eventfd and the timerfd the main thread arms when the
-- loop wakes) with a NULL timeout.
local function parked(syscall)
  local nr, nfds, timeout = syscall:match("^(%d+) 0x%x+ (0x%x+) (0x%x+)")
  return nr == "271" and nfds == "0x2" and timeout == "0x0"
end

local function longest(wm)
  local status = wm:client([[return require("clua.awesome").status()]])
  return tonumber(status:match("longest main%-loop stall ([%d.]+) s")), status
end

local function skip_unless_ready()
  local ok, why = harness.available()
  if not ok then pending("needs Awesome under Xvfb: " .. why) return false end
  if not clua.stallguard then
    pending("clua.stallguard is not in this build (stall.c)")
    return false
  end
  return true
end

-- The glue's count of interrupted stalls.
local STALLS = "return require('clua.awesome')._state.stall.guard:stalls()"

local function stalls(wm)
  return tonumber(wm:client(STALLS))
end

describe("the stall breaker in a real Awesome #integration", function()
  describe("with a 2 s limit", function()
    local wm
    setup(function()
      if harness.available() and clua.stallguard then wm = start(2) end
    end)
    teardown(function() if wm then wm:stop() end end)

    it("interrupts 'while true do end' within limit + 1 s, and Awesome answers", function()
      if not skip_unless_ready() then return end
      local t0 = testkit.now("monotonic")
      local out = wm:client("while true do end", 10)
      local took = testkit.now("monotonic") - t0
      assert.matches("main loop stalled", out, 1, true)
      assert.is_true(took < 2 + 1, "interrupted after " .. took .. " s")
      assert.equal(1, wm:client("return 1"))
      assert.equal(1, stalls(wm))
      -- Reported through debug::error, and counted in status().
      local report = harness.wait_until(2, function()
        return wm:client([[
          for _, e in ipairs(clua_spec.errors) do
            if e:find("main loop stalled", 1, true) then return e end
          end
          return false
        ]])
      end)
      assert.is_truthy(report, "no debug::error about the stall")
      -- with the traceback of the code that was interrupted
      assert.matches("stack traceback:", report, 1, true)
      assert.matches('[string "while true do end"]:1:', report, 1, true)
      local seconds, status = longest(wm)
      assert.matches("stall: limit 2 s, 1 interrupted, longest main-loop stall ", status, 1, true)
      assert.matches("following the GLib main loop", status, 1, true)
      -- measured from the loop's wake-up to its next sleep: the 2 s until
      -- the interrupt, and what awful.remote did before and after
      assert.is_true(seconds >= 1.9 and seconds < 3, "longest stall " .. seconds)
    end)

    -- Runs `chunk` (which returns at once and sets up a runaway loop that
    -- runs later, in another turn of Awesome's loop); checks that it is
    -- interrupted within limit + 1 s and that some debug::error report
    -- holds every string of `traceback`.
    local function interrupted_later(chunk, traceback)
      local before = stalls(wm)
      local t0 = testkit.now("monotonic")
      wm:client(chunk)
      local n = harness.wait_until(10, function()
        local ok, count = wm:try_client(STALLS, 10)
        return ok and count > before and count
      end, 0.2)
      local took = testkit.now("monotonic") - t0
      assert.equal(before + 1, n)
      assert.is_true(took < 2 + 1, "interrupted after " .. took .. " s")
      local find = {}
      for _, t in ipairs(traceback) do
        find[#find + 1] = ("e:find(%q, 1, true)"):format(t)
      end
      local report = harness.wait_until(2, function()
        return wm:client(([[
          for _, e in ipairs(clua_spec.errors) do
            if %s then return e end
          end
          return false
        ]]):format(table.concat(find, " and ")))
      end)
      assert.is_truthy(report, "no debug::error with " .. table.concat(traceback, ", "))
    end

    it("interrupts a runaway key binding (run right after Awesome's poll) in time", function()
      if not skip_unless_ready() then return end
      -- XTEST: the key press reaches Awesome from the X server, in a later
      -- turn of its loop. The traceback is the key binding's: awful.key
      -- calls it "press".
      interrupted_later([[
        root.fake_input("key_press", "F12")
        root.fake_input("key_release", "F12")
      ]], { "main loop stalled", "awful/key.lua", "in upvalue 'press'" })
    end)

    it("interrupts a runaway delayed call (run in Awesome's refresh, before its poll)", function()
      if not skip_unless_ready() then return end
      interrupted_later([[
        require("gears.timer").delayed_call(function()
          local function runaway_delayed_call() while true do end end
          runaway_delayed_call()
        end)
      ]], { "main loop stalled", "runaway_delayed_call" })
    end)

    it("names the function that blocked in C (io.popen():read) in its traceback", function()
      if not skip_unless_ready() then return end
      local before = stalls(wm)
      local out = wm:client([[
        local function wait_for_the_network()
          return io.popen("sleep 5"):read("a")
        end
        return wait_for_the_network()
      ]], 15)
      assert.matches("main loop stalled", out, 1, true)
      assert.matches("wait_for_the_network", out, 1, true)
      assert.equal(before + 1, stalls(wm))
      assert.equal(1, wm:client("return 1"))
    end)

    it("never interrupts an idle Awesome over 30 s, nor wakes it", function()
      if not skip_unless_ready() then return end
      local before = stalls(wm)
      local pid = wm:pid()
      local wtid = assert(watcher_tid(pid), "no clua-stall thread in Awesome")
      testkit.sleep(1)   -- the watcher's last look after the client call
      local main0 = thread(pid, pid)
      local watcher0, syscall = thread(pid, wtid)
      assert.is_true(parked(syscall), "watcher not parked: " .. tostring(syscall))
      testkit.sleep(30)
      local main1 = thread(pid, pid)
      local watcher1 = thread(pid, wtid)
      assert.equal(before, stalls(wm))
      -- An idle Awesome wakes neither. (Another program changing the clock
      -- wakes Awesome's loop for a short turn, which wakes the watcher only
      -- if it lasts a quarter of the limit.)
      assert.is_true(watcher1 - watcher0 <= 1,
        ("watcher woke %d times while Awesome's main thread woke %d times")
          :format(watcher1 - watcher0, main1 - main0))
    end)

    it("is not fooled by SIGSTOP of an idle Awesome for 3 limits", function()
      if not skip_unless_ready() then return end
      local before, longest_before = stalls(wm), longest(wm)
      local pid = wm:pid()
      testkit.sleep(1)
      assert.is_true(testkit.kill(pid, 19))   -- SIGSTOP
      testkit.sleep(6)
      assert.is_true(testkit.kill(pid, 18))   -- SIGCONT
      assert.equal(1, wm:client("return 1"))
      assert.equal(before, stalls(wm))
      assert.is_true(longest(wm) < longest_before + 0.5, "the stop counted as a stall")
    end)

    it("leaves Awesome's C code alone while it waits 3 limits for a grabbed X server", function()
      if not skip_unless_ready() then return end
      local before = stalls(wm)
      local managed = wm:client("return clua_spec.managed")
      local pid = wm:pid()
      local wtid = assert(watcher_tid(pid))
      -- A second X client grabs the server, so that X handles nobody else's
      -- requests, then maps a window. Awesome gets the MapRequest and, in
      -- its event handler, asks X for the window's attributes before any
      -- Lua runs (event_handle_maprequest, Awesome 4.3): it waits there,
      -- in its own C code, until the grab ends.
      local x = assert(testkit.xclient(wm.display))
      assert(x:grab())
      assert(x:map())
      testkit.sleep(1)
      -- How we know no Lua ran: Awesome's main thread is blocked in
      -- poll(2) (libxcb waiting for the reply) at 1 s and at 6 s, and the
      -- watcher sleeps without a timeout at both times. It does so only
      -- while the loop is idle: Lua running after the loop's idle mark
      -- would have started a busy stretch, whose timer wakes the watcher
      -- after a quarter of the limit (0.5 s) to time it.
      local _, main_syscall = thread(pid, pid)
      local _, watcher_syscall = thread(pid, wtid)
      testkit.sleep(5)
      local _, main_later = thread(pid, pid)
      local _, watcher_later = thread(pid, wtid)
      assert(x:ungrab())
      assert.matches("^7 ", main_syscall)
      assert.matches("^7 ", main_later)
      assert.is_true(parked(watcher_syscall), "watcher: " .. tostring(watcher_syscall))
      assert.is_true(parked(watcher_later), "watcher: " .. tostring(watcher_later))
      -- Then Awesome manages the window (Lua runs) and answers.
      local got = harness.wait_until(5, function()
        return wm:client("return clua_spec.managed") > managed
      end, 0.2)
      x:close()
      assert.is_truthy(got, "the window was never managed")
      assert.equal(before, stalls(wm))
    end)
  end)

  -- Every shape of runaway loop a config writes, started from each place
  -- Lua runs in Awesome: awesome-client (D-Bus, awful.remote's pcall), a
  -- key binding (Awesome's C calls it), a gears.timer callback (GLib,
  -- gears.protected_call), a signal handler Awesome emits from C
  -- (`manage`), and a widget's draw method on the wibar (the refresh).
  -- Most of these loops run through Lua that Awesome calls from C under
  -- its own error handler (property getters, signal handlers).
  describe("breaks every shape of loop, wherever it runs (2 s limit)", function()
    local LIMIT = 2
    local RC = [[
      clua_spec = { errors = {}, keys = 0 }
      awesome.connect_signal("debug::error", function(e)
        table.insert(clua_spec.errors, tostring(e))
      end)
      local awful = require("awful")
      local gears = require("gears")
      local wibox = require("wibox")
      local GLib = require("lgi").GLib
      require("clua.awesome").setup { stall = 2 }
      awesome.connect_signal("x", function() clua_spec.x = (clua_spec.x or 0) + 1 end)
      local function started() clua_spec.started = GLib.get_monotonic_time() end
      local shapes = {}
      function shapes.tags()
        started()
        while true do local t = screen[1].tags end -- loop:tags
      end
      function shapes.focus()
        started()
        while true do local n = client.focus and client.focus.name end -- loop:focus
      end
      function shapes.emit()
        started()
        while true do awesome.emit_signal("x") end -- loop:emit
      end
      function shapes.geometry()
        started()
        while true do for _, c in ipairs(client.get()) do c:geometry() end end -- loop:geometry
      end
      -- The loop runs in a comparator, below table.sort (C): no caller
      -- runs, so the breaker raises in the loop itself after waiting; the
      -- delayed call, run later in the same turn of Awesome's loop (its
      -- refresh), must run undisturbed.
      function shapes.sort()
        started()
        gears.timer.delayed_call(function() clua_spec.after_sort = true end)
        table.sort({ 3, 1, 2 }, function() while true do end end) -- loop:sort
      end
      clua_spec.shapes = shapes
      root.keys(gears.table.join(
        awful.key({}, "F11", function() shapes[clua_spec.key_shape]() end),
        awful.key({}, "F10", function() clua_spec.keys = clua_spec.keys + 1 end)))
      client.connect_signal("manage", function()
        local shape = clua_spec.manage_shape
        clua_spec.manage_shape = nil
        if shape then shapes[shape]() end
      end)
      -- A widget of the wibar that loops when it is drawn, once asked to.
      local looper = wibox.widget.base.make_widget()
      function looper:fit(_, _, h) return 20, h end
      function looper:draw()
        if not clua_spec.draw_loops then return end
        clua_spec.draw_loops = false
        started()
        while true do end -- loop:draw
      end
      clua_spec.looper = looper
      awful.screen.connect_for_each_screen(function(s)
        awful.tag({ "1", "2" }, s, awful.layout.layouts[1])
        s.bar = awful.wibar { screen = s }
        s.bar:setup { layout = wibox.layout.fixed.horizontal, looper }
      end)
    ]]
    local wm, rcpath

    setup(function()
      if not (harness.available() and clua.stallguard) then return end
      rcpath = harness.rc(RC)
      wm = assert(harness.start { rc = rcpath })
      -- Three clients for the geometry loop.
      wm:client([[for _ = 1, 3 do require("awful").spawn({ "xlogo" }, false) end]])
      assert(harness.wait_until(10, function()
        return wm:client("return #client.get()") == 3
      end, 0.2), "the three xlogo windows were never managed")
    end)
    teardown(function() if wm then wm:stop() end end)

    -- The line of rc.lua holding `loop:NAME`.
    local function loop_line(name)
      local n = 0
      for line in harness.readfile(rcpath):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:find("loop:" .. name, 1, true) then return n end
      end
      error("no loop:" .. name .. " in rc.lua")
    end

    -- debug::error messages about stalls so far.
    local function stall_reports()
      return wm:client([[
        local n = {}
        for _, e in ipairs(clua_spec.errors) do
          if e:find("main loop stalled", 1, true) then n[#n + 1] = e end
        end
        return table.concat(n, "\n<<<>>>\n")
      ]])
    end

    -- (D-Bus strings hold no NUL: the reports come separated by a line)
    local function split0(text)
      local t = {}
      for e in (text .. "\n<<<>>>\n"):gmatch("(.-)\n<<<>>>\n") do
        if e ~= "" then t[#t + 1] = e end
      end
      return t
    end

    -- Runs `trigger` (an awesome-client chunk that starts the loop now or
    -- in a later turn of Awesome's loop), then checks: Awesome answers
    -- within 2 limits + 1 s of the loop's start, one stall is counted and
    -- reported once (one debug::error: a notification), naming the line
    -- `where`, and Awesome goes on working (a key binding and a spawn).
    local function breaks(trigger, where)
      local before, reports = stalls(wm), #split0(stall_reports())
      wm:client("clua_spec.started = nil")
      wm:try_client(trigger, 20)
      -- Awesome answers one request at a time: an answer saying the loop
      -- started comes once the loop is over.
      local t0 = harness.wait_until(20, function()
        local ok, started = wm:try_client("return tostring(clua_spec.started)", 10)
        return ok and tonumber(started)
      end, 0.05)
      local t1 = testkit.now("monotonic")
      assert.is_truthy(t0, "the loop never started, or Awesome never answered\n" .. wm:logtail())
      local took = t1 - t0 / 1e6
      assert.is_true(took <= 2 * LIMIT + 1,
        "Awesome answered " .. took .. " s after the loop began")
      assert.equal(before + 1, stalls(wm))
      local all = split0(stall_reports())
      assert.equal(reports + 1, #all, "stall reports:\n" .. table.concat(all, "\n---\n"))
      assert.matches(where .. ": main loop stalled for", all[#all], 1, true)
      assert.matches("stack traceback:", all[#all], 1, true)
      -- Awesome goes on: a key binding, and a spawn.
      local keys = wm:client("return clua_spec.keys")
      local flag = wm.dir .. "/spawned"
      os.remove(flag)
      wm:client(([[
        root.fake_input("key_press", "F10")
        root.fake_input("key_release", "F10")
        require("awful").spawn({ "touch", %q }, false)
      ]]):format(flag))
      assert.is_truthy(harness.wait_until(5, function()
        return wm:client("return clua_spec.keys") > keys and harness.readfile(flag)
      end, 0.1), "a key binding or a spawn did not work after the stall")
    end

    local LOOPS = {
      tags = "while true do local t = screen[1].tags end",
      focus = "while true do local n = client.focus and client.focus.name end",
      emit = "while true do awesome.emit_signal('x') end",
      geometry = "while true do for _, c in ipairs(client.get()) do local g = c:geometry() end end",
    }
    for _, shape in ipairs { "tags", "focus", "emit", "geometry" } do
      it(shape .. ": sent with awesome-client", function()
        if not skip_unless_ready() then return end
        local chunk = "clua_spec.started = require('lgi').GLib.get_monotonic_time() "
          .. LOOPS[shape]
        -- (Lua names a chunk by its first 40-odd characters)
        breaks(chunk, '[string "clua_spec.started = require(\'lgi\').GLib.get_m..."]:1')
      end)

      it(shape .. ": run from a key binding", function()
        if not skip_unless_ready() then return end
        breaks(([[
          clua_spec.key_shape = %q
          root.fake_input("key_press", "F11")
          root.fake_input("key_release", "F11")
        ]]):format(shape), "rc.lua:" .. loop_line(shape))
      end)

      it(shape .. ": run from a gears.timer callback", function()
        if not skip_unless_ready() then return end
        breaks(([[
          require("gears.timer").start_new(0.05, function() clua_spec.shapes[%q]() end)
        ]]):format(shape), "rc.lua:" .. loop_line(shape))
      end)

      it(shape .. ": run from a `manage` handler Awesome emits from C", function()
        if not skip_unless_ready() then return end
        breaks(([[
          clua_spec.manage_shape = %q
          require("awful").spawn({ "xlogo" }, false)
        ]]):format(shape), "rc.lua:" .. loop_line(shape))
      end)
    end

    it("a loop below a C function that passes errors on (a table.sort comparator), from C",
        function()
      if not skip_unless_ready() then return end
      breaks([[
        clua_spec.after_sort = false
        clua_spec.manage_shape = "sort"
        require("awful").spawn({ "xlogo" }, false)
      ]], "rc.lua:" .. loop_line("sort"))
      assert.is_true(wm:client("return clua_spec.after_sort"))
    end)

    it("a widget's draw method on the wibar", function()
      if not skip_unless_ready() then return end
      breaks([[
        clua_spec.draw_loops = true
        clua_spec.looper:emit_signal("widget::redraw_needed")
      ]], "rc.lua:" .. loop_line("draw"))
    end)
  end)

  describe("with a 3 s limit", function()
    local wm
    setup(function()
      if harness.available() and clua.stallguard then wm = start(3) end
    end)
    teardown(function() if wm then wm:stop() end end)

    it("never interrupts a legitimate 1 s computation, 20 times in a row", function()
      if not skip_unless_ready() then return end
      for i = 1, 20 do
        local out = wm:client([[
          local GLib = require("lgi").GLib
          local t0, n = GLib.get_monotonic_time(), 0
          while GLib.get_monotonic_time() - t0 < 1e6 do n = n + 1 end
          return n
        ]])
        assert.is_number(out, "run " .. i .. ": " .. tostring(out))
      end
      assert.equal(0, stalls(wm))
    end)
  end)
end)
