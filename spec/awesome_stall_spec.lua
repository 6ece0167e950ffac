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
