-- clua.stallguard (clua/stall.c): a watcher thread that interrupts a Lua
-- loop on the main thread when no tick came for `limit` seconds.
local clua = require("clua")
local checks = require("support.checks")
local testkit = require("testkit")
local shell = require("support.shell")

local VALGRIND = os.getenv("CLUA_UNDER_VALGRIND") == "1"
local TSAN = os.getenv("CLUA_UNDER_TSAN") == "1"
-- How late an interrupt may come: the watcher itself is exact, but the
-- machine is shared and valgrind runs threads one at a time. The valgrind
-- stage uses valgrind's fair scheduler (spec/support/check), which gives
-- the watcher its turn on time; still, on a loaded machine a late look
-- during which the main thread was not runnable either (it waits for
-- valgrind's lock, which /proc cannot tell from a stopped process) counts
-- only a quarter of the limit: seen 5 to 6 s.
local SLACK = VALGRIND and 10 or 1
local EBUSY, EAGAIN = 16, 11

local function now() return testkit.now("monotonic") end

-- A runaway loop, until the breaker interrupts it: one that gives up
-- after GIVE_UP seconds fails its test rather than hanging the suite.
local GIVE_UP = VALGRIND and 120 or 30
local clock = testkit.now
local function spin()
  local stop = clock("monotonic") + GIVE_UP
  repeat
    for _ = 1, 1e6 do end
  until clock("monotonic") > stop
  error("spin: not interrupted within " .. GIVE_UP .. " s", 0)
end
-- ThreadSanitizer holds a signal back until the thread next enters a libc
-- function it intercepts: a loop that calls none is never interrupted under
-- it. The tsan stage spins allocating instead (realloc is intercepted);
-- every other stage runs the bare loop.
if TSAN then
  spin = function()
    local stop = clock("monotonic") + GIVE_UP
    repeat
      for _ = 1, 1e4 do local _ = {} end
    until clock("monotonic") > stop
    error("spin: not interrupted within " .. GIVE_UP .. " s", 0)
  end
end
-- Under LuaJIT the inner loop is compiled to a trace, which checks no
-- hooks: every test using it also checks that the guard gets compiled code
-- back to the interpreter (through LuaJIT's profiler, see clua/stalljit.c).

-- Busy for `seconds`, in Lua, calling `each` (if given) every `period`.
local function busy(seconds, period, each)
  local t0 = now()
  local last = t0
  while true do
    local t = now()
    if t - t0 >= seconds then return "done" end
    if each and t - last >= period then
      each()
      last = t
    end
  end
end

local function signal_of(g)
  return tonumber(tostring(g):match("signal (%d+)"))
end

-- Dispositions of every real-time signal, as "default"/"ignore"/"handler"
-- (or "unavailable" when the kernel or valgrind refuses to tell).
local function rt_dispositions()
  local lo, hi = testkit.sigrtrange()
  local t = {}
  for s = lo, hi do
    local how, blocked = testkit.sigdisposition(s)
    t[s] = (how or "unavailable") .. (blocked and ",blocked" or "")
  end
  return t
end

-- Waits (up to `timeout` seconds) for child pid to end, and reaps it: its
-- exit code, or nil and why (it is killed then).
local function wait_child(pid, timeout)
  local deadline = now() + timeout
  repeat
    local got, how, code = clua.reap(pid)
    if got == pid then return how == "exited" and code or -1 end
    testkit.sleep(0.02)
  until now() > deadline
  testkit.kill(pid, 9)
  shell.wait_for("killed child " .. pid .. " to be reaped", 5, function() return clua.reap(pid) end)
  return nil, "child still running after " .. timeout .. " s"
end

-- How many times the watcher thread blocked so far (its wake-ups).
local function watcher_switches()
  local _, switches = testkit.task("clua-stall")
  return switches
end

-- Every guard a test starts is stopped when the test ends, pass or fail
-- (after_each below): one left running would make the next test's
-- stallguard fail with EBUSY.
local started = {}
local function guard(limit)
  local g, msg, err = clua.stallguard(limit)
  assert(g, tostring(msg) .. " " .. tostring(err))
  started[#started + 1] = g
  return g
end

describe("clua.stallguard", function()
  after_each(function()
    for i = #started, 1, -1 do
      started[i]:stop()
      started[i] = nil
    end
  end)

  it("interrupts `while true do end` under pcall within limit + 1 s, with a traceback", function()
    local t0 = now()
    local g = guard(0.5)
    local ok, err = pcall(spin)
    local elapsed = now() - t0
    assert.is_false(ok)
    assert.matches("main loop stalled for %d+%.%d s: interrupted", err)
    assert.matches("stack traceback:", err, 1, true)
    assert.is_true(elapsed >= 0.45, "interrupted after only " .. elapsed .. " s")
    assert.is_true(elapsed <= 0.5 + SLACK, "interrupted after " .. elapsed .. " s")
    assert.equal(1, g:stalls())
  end)

  it("interrupts once per limit period, not in a storm, and counts each", function()
    local t0 = now()
    local g = guard(0.5)
    for _ = 1, 3 do
      local ok, err = pcall(spin)
      assert.is_false(ok)
      assert.matches("main loop stalled", err, 1, true)
    end
    local elapsed = now() - t0
    assert.equal(3, g:stalls())
    assert.is_true(elapsed >= 1.45, "3 interrupts within " .. elapsed .. " s")
    assert.is_true(elapsed <= 1.5 + 3 * SLACK, "3 interrupts took " .. elapsed .. " s")
  end)

  it("never interrupts a busy loop that ticks every 0.1 s for 2 s", function()
    local limit = VALGRIND and 1.5 or 0.5
    local g = guard(limit)
    local ok, res = pcall(busy, 2, 0.1, function() g:tick() end)
    assert.is_true(ok, res)
    assert.equal("done", res)
    assert.equal(0, g:stalls())
  end)

  it("interrupts a Lua function blocked in a C call when the call returns, naming it", function()
    local g = guard(0.5)
    local function blocks_in_c()
      -- read(2) on a pipe written 1.2 s later: the signal comes while it
      -- waits; SA_RESTART makes the read go on to its end.
      testkit.read_after(1.2)
      return "returned"
    end
    local t0 = now()
    local ok, err = pcall(function()
      local r = blocks_in_c()
      return r
    end)
    local took = now() - t0
    assert.is_false(ok)
    assert.matches("main loop stalled for 1%.%d s: interrupted", err)
    assert.matches("blocks_in_c", err, 1, true)
    assert.is_true(took >= 1.15, "the read was cut short after " .. took .. " s")
    assert.equal(1, g:stalls())
  end)

  it("never signals into a poll or a nanosleep (no EINTR): both run to their end", function()
    local g = guard(0.3)
    -- Each waits about 3 limits. Once it returns, Lua runs on in the same
    -- stall, and may be interrupted right there (pcall): whether it was or
    -- not, the wait itself must have run to its end.
    for _, call in ipairs({ { testkit.poll_once, 870 }, { testkit.nanosleep_once, 0.87 } }) do
      local t0 = now()
      pcall(call[1], call[2])
      local took = now() - t0
      assert.equal(0, testkit.last_errno())
      assert.is_true(took >= 0.86, "cut short after " .. took .. " s")
      g:tick()
    end
    -- The watcher did see both stalls.
    assert.is_true(g:longest() >= 0.85, "longest stall " .. g:longest())
  end)

  it("does not raise in a callback that C code calls after stalling on its own", function()
    -- The host's own C code runs 3 times the limit, then calls Lua (as
    -- Awesome calls a signal handler). The signal came, the hook fired at
    -- that call, saw C below it, and raised nothing.
    local g = guard(0.4)
    local ok, res = pcall(testkit.spin_c, 1.2, function()
      g:tick()
      return "ran"
    end)
    assert.is_true(ok, res)
    assert.equal("ran", res)
    assert.equal(0, g:stalls())
    assert.is_true(g:longest() >= 1.1, "longest stall " .. g:longest())
  end)

  it("raises when a C function stalls and then returns into the Lua that called it", function()
    local g = guard(0.4)
    -- (valgrind runs one thread at a time, and under load the watcher may
    -- get its turn late: the C call lasts as long as an interrupt may take)
    local c_call = VALGRIND and 0.4 + SLACK or 1.2
    local function calls_slow_c()
      testkit.spin_c(c_call)
      return "after"
    end
    -- Lua goes on in the same stall after the C call: where the signal
    -- comes late (TSan holds it until the next libc call it intercepts; a
    -- loaded machine runs the watcher late), it lands here, never outside
    -- the pcall below.
    local function goes_on()
      local t0 = now()
      while now() - t0 < 2 + SLACK do local _ = {} end
    end
    -- The guard stops where the error is raised: what the test does after
    -- it runs in the same stall (no tick), and under valgrind on a loaded
    -- machine may take a limit, which is a second interrupt by design.
    local ok, err = xpcall(function()
      calls_slow_c()
      goes_on()
    end, function(e) g:stop() return e end)
    assert.is_false(ok)
    local line, seconds = tostring(err)
      :match("stall_spec%.lua:(%d+): main loop stalled for ([%d.]+) s")
    line, seconds = tonumber(line), tonumber(seconds)
    -- The frame named is the one that ran when the signal came: the Lua
    -- function the C call returned into, or (a late signal) the loop after
    -- it; either way the C call's time counts in the stall.
    local function inside(f)
      local info = debug.getinfo(f, "S")
      return line and line > info.linedefined and line <= info.lastlinedefined
    end
    assert.is_true(inside(calls_slow_c) or inside(goes_on), "raised elsewhere: " .. tostring(err))
    assert.is_true(seconds >= c_call - 0.1, "a stall of " .. seconds .. " s")
    assert.equal(1, g:stalls())
  end)

  -- A host runs Lua from C under its own lua_pcall and swallows the error
  -- (Awesome: property getters, signal handlers, widget drawing; it logs
  -- the error, through Lua handlers of its own, and returns). The stall
  -- must still end: the error is raised where it reaches the caller's
  -- own pcall or the loop, not in the swallowed callee, and the host's
  -- error handler is never interrupted.
  describe("with Lua that a C function calls under lua_pcall and swallows errors of", function()
    local limit = 0.5
    -- Each loop gives up after this long, so that a breaker that fails
    -- fails the test instead of hanging the suite.
    -- (the loops below read the time with a C function: a Lua helper in
    -- the loop would be a frame the error could be raised in, besides the
    -- loop's own)
    local swallowed, host_call, stop
    before_each(function()
      swallowed = {}
      stop = now() + GIVE_UP
      -- testkit.swallowing(f, on_error): a C function calling f under
      -- lua_pcall; its C error handler calls on_error (Lua) and returns.
      host_call = function(f)
        return testkit.swallowing(f, function(e) swallowed[#swallowed + 1] = tostring(e) end)
      end
    end)

    -- Runs `loop` under pcall; returns its error, the seconds it took, and
    -- the line the error names.
    local function run(loop)
      local t0 = now()
      local ok, err = pcall(loop)
      local took = now() - t0
      assert.is_false(ok, "not broken: the loop gave up by itself after " .. took .. " s")
      return tostring(err), took, tonumber(tostring(err):match("stall_spec%.lua:(%d+): main loop"))
    end

    local function line_of(f) return debug.getinfo(f, "S").linedefined end

    -- The loop's own function is named (a line of its body), within a
    -- limit (2 when the loop runs inside the swallowed callee).
    local function check(loop, err, took, line, limits)
      local info = debug.getinfo(loop, "S")
      assert.matches("main loop stalled for %d+%.%d s: interrupted", err)
      assert.is_true(line and line > info.linedefined and line <= info.lastlinedefined,
        "not raised in the loop's function (lines " .. info.linedefined .. " to " ..
        info.lastlinedefined .. "): " .. err)
      assert.is_true(took <= limits * limit + SLACK, "broken after " .. took .. " s")
    end

    it("a property read through a C __index (while true do local t = screen[1].tags end)",
        function()
      local g = guard(limit)
      local screen = setmetatable({}, { __index = host_call(function(_, key)
        local tags = {}
        for i = 1, 9 do tags[i] = key .. i end
        return tags
      end) })
      local function reads_a_property()
        while clock("monotonic") < stop do local _ = screen.tags end
      end
      local err, took, line = run(reads_a_property)
      check(reads_a_property, err, took, line, 1)
      assert.equal(1, g:stalls())
      assert.same({}, swallowed)
    end)

    it("a property of a property (while true do local n = client.focus and client.focus.name end)",
        function()
      local g = guard(limit)
      local focused = setmetatable({}, { __index = host_call(function() return "xterm" end) })
      local client = setmetatable({}, { __index = host_call(function() return focused end) })
      local function polls_focus()
        while clock("monotonic") < stop do local _ = client.focus and client.focus.name end
      end
      local err, took, line = run(polls_focus)
      check(polls_focus, err, took, line, 1)
      assert.equal(1, g:stalls())
    end)

    it("a signal emitted through C to a Lua handler (while true do awesome.emit_signal('x') end)",
        function()
      local g = guard(limit)
      local handled = 0
      local emit = host_call(function() handled = handled + 1 end)
      local function emits()
        while clock("monotonic") < stop do emit("x") end
      end
      local err, took, line = run(emits)
      check(emits, err, took, line, 1)
      assert.is_true(handled > 0)
      assert.equal(1, g:stalls())
    end)

    it("methods of every item of a list (for _, c in ipairs(client.get()) do c:geometry() end)",
        function()
      local g = guard(limit)
      local geometry = host_call(function(c) return { x = c.n, y = 0 } end)
      local clients = {}
      for n = 1, 3 do clients[n] = { n = n, geometry = geometry } end
      -- (busted reads the specs' globals through Lua functions of its own)
      local ipairs = ipairs
      local function walks_clients()
        while clock("monotonic") < stop do
          for _, c in ipairs(clients) do local _ = c:geometry() end
        end
      end
      local err, took, line = run(walks_clients)
      check(walks_clients, err, took, line, 1)
      assert.equal(1, g:stalls())
    end)

    it("a loop inside the callee (a widget's draw that never returns): raised there, "
      .. "then in its caller", function()
      local g = guard(limit)
      local function draws_forever()
        while clock("monotonic") < stop do local _ = {} end
      end
      local redraw = host_call(draws_forever)
      local function refreshes()
        redraw()
        return "went on"
      end
      local err, took, line = run(refreshes)
      -- Nothing above the callee runs while it loops: the next signal, a
      -- limit later, raises in the callee; the C function swallows it
      -- (its error handler ran, undisturbed) and returns, and the caller
      -- raises at once.
      check(refreshes, err, took, line, 2)
      assert.equal(1, #swallowed, "the host's error handler did not run once")
      -- One stall, reported as where it was stuck: the callee's loop (or
      -- a function it was calling at that moment, the loop's line then
      -- being in the traceback).
      local stuck = "stall_spec%.lua:" .. (line_of(draws_forever) + 1) .. ":"
      assert.matches(stuck, swallowed[1])
      assert.matches("main loop stalled", swallowed[1], 1, true)
      assert.equal(1, g:stalls())
      assert.equal(swallowed[1], g:last())
    end)

    it("leaves a caller that catches the error itself alone afterwards", function()
      local g = guard(limit)
      local function spins_under_pcall() return pcall(spin) end
      local ok, err = spins_under_pcall()
      assert.is_false(ok)
      assert.matches("main loop stalled", err, 1, true)
      -- The rest of this stall goes on undisturbed (it is the pcall's
      -- caller that chose to go on), until a tick ends it.
      local sum = 0
      for i = 1, 100000 do sum = sum + i end
      g:tick()
      assert.equal(5000050000, sum)
      assert.equal(1, g:stalls())
      assert.is_nil(debug.gethook())
    end)
  end)

  it("does not count the time stopped (SIGSTOP for 3 limits) in a tick loop", function()
    local limit = VALGRIND and 2 or 1
    local g = guard(limit)
    local stopper = assert(testkit.stop_me(0.3, 3 * limit))
    local longest_gap, last = 0, now()
    local ok, err = pcall(function()
      local t0 = now()
      while now() - t0 < 0.3 + 3 * limit + 1 do
        g:tick()
        testkit.sleep(0.1)
        local t = now()
        if t - last > longest_gap then longest_gap = t - last end
        last = t
      end
    end)
    assert.equal(0, wait_child(stopper, 5))
    assert.is_true(ok, err)
    assert.equal(0, g:stalls())
    assert.is_true(longest_gap >= 3 * limit - 0.2, "not stopped? longest gap " .. longest_gap)
    assert.is_true(g:longest() < limit, "frozen time counted: " .. g:longest())
  end)

  it("does not count the time the process was stopped in the middle of a computation", function()
    local limit = VALGRIND and 4 or 2
    local g = guard(limit)
    local t0 = now()
    local stopper = assert(testkit.stop_me(0.1, 3 * limit))
    local ok, res = pcall(busy, 0.1 + 3 * limit + 0.4)
    local took = now() - t0
    assert.equal(0, wait_child(stopper, 5))
    assert.is_true(ok, res)
    assert.equal(0, g:stalls())
    assert.is_true(took >= 3 * limit, "not stopped? " .. took .. " s")
  end)

  it("after idle(), counts Lua running again as busy, even a loop that calls nothing", function()
    local g = guard(0.4)
    local t0 = now()
    local ok, err = pcall(function()
      -- idle() from a callback, then back in Lua: the returns are seen
      testkit.spin_c(0, function() g:idle() end)
      spin()
    end)
    local took = now() - t0
    assert.is_false(ok)
    assert.matches("main loop stalled", err, 1, true)
    assert.is_true(took <= 0.4 + SLACK, "interrupted after " .. took .. " s")
  end)

  it("stops at once in the child of a fork, where a new guard works", function()
    -- (The parent waits in C for the child below: its own guard's limit is
    -- longer than that wait, however loaded the machine.)
    local g = guard(120)
    -- Fork only once the watcher thread has gone to sleep: a thread still
    -- starting (ASan's allocator sets it up under a lock) when the process
    -- forks leaves that lock taken for ever in the child, whose next thread
    -- then hangs.
    shell.wait_for("the watcher thread to sleep", 10, function()
      local tid, switches = testkit.task("clua-stall")
      return tid and switches >= 1
    end)
    local pid, fd = assert(testkit.fork_coded())
    if pid == 0 then
      -- The child: no watcher thread here; nothing may wait for it.
      local code, t0 = 0, now()
      local ok = pcall(g.stop, g)
      if not ok or now() - t0 > (VALGRIND and 1 or 0.1) then code = code + 1 end
      -- TSan ends a child that starts a thread after a multi-threaded
      -- fork (its die_after_fork): the new guard is checked elsewhere.
      if not TSAN then
        local g2 = clua.stallguard(0.3)
        if not g2 then
          code = code + 2
        else
          local ok2, err = pcall(spin)
          if ok2 or not tostring(err):find("main loop stalled", 1, true) then code = code + 4 end
          g2:stop()
        end
      end
      testkit.exit_coded(code)
    end
    local waited = false
    finally(function() if not waited then wait_child(pid, 0) end end)
    local code = testkit.child_code(fd, VALGRIND and 60000 or 30000)
    wait_child(pid, 5)
    waited = true
    assert.equal(0, code, "child failed: " .. tostring(code) ..
      " (nil: hung; 1: stop too slow; 2: no new guard; 4: it did not interrupt)")
    assert.is_true(g:tick())
  end)

  it("reports a stall inside a coroutine once the coroutine gives control back", function()
    if VALGRIND then
      -- Under valgrind the watcher's signal, sent while a coroutine runs,
      -- often arrives only after the coroutine has returned (half the runs
      -- here, even with seconds of slack). Every other stage, ASan and
      -- TSan included, runs this test.
      pending("valgrind delivers the signal too late inside a coroutine")
      return
    end
    local g = guard(0.5)
    local co = coroutine.wrap(function() return busy(1.2) end)
    local ok, err = pcall(function()
      local r = co()
      return r
    end)
    assert.is_false(ok)
    assert.matches("main loop stalled", err, 1, true)
    assert.equal(1, g:stalls())
  end)

  it("counts a tick from a coroutine", function()
    local g = guard(0.5)
    local ticker = coroutine.wrap(function()
      while true do
        g:tick()
        coroutine.yield()
      end
    end)
    local ok, res = pcall(busy, 1.5, 0.1, ticker)
    assert.is_true(ok, res)
    assert.equal(0, g:stalls())
  end)


  -- The guard following GLib's main loop (clua/mainloop.c), through lgi:
  -- GLib's own poll function, and a host's own one shaped like Awesome's
  -- (spec/support/testkit.c host_poll: Lua before its poll, optionally C
  -- work and then Lua after it, all before it returns to GLib).
  describe("following GLib's main loop", function()
    local lgi_ok, lgi = pcall(require, "lgi")
    local GLib = lgi_ok and lgi.GLib

    local function need_lgi()
      if not GLib then
        pending("lgi is not installed for " .. _VERSION)
        return false
      end
      return true
    end

    -- Runs the default main loop through `steps`, a list of {seconds,
    -- function} in time order; returns once the last one ran. An error in
    -- a step is raised here, after the loop.
    local function run_loop(steps)
      local loop, failed = GLib.MainLoop(), nil
      for i, step in ipairs(steps) do
        GLib.timeout_add(GLib.PRIORITY_DEFAULT, math.floor(step[1] * 1000), function()
          local ok, err = pcall(step[2])
          if not ok and not failed then failed = err end
          if i == #steps then loop:quit() end
          return false
        end)
      end
      loop:run()
      if failed then error(failed, 0) end
    end

    -- Watcher wake-ups while the loop sleeps 2 s between two callbacks.
    local function idle_wakeups()
      local a, b
      run_loop {
        { 0.3, function() a = watcher_switches() end },
        { 2.3, function() b = watcher_switches() end },
      }
      return b - a
    end

    local host_errors
    local function use_host(refresh, events)
      host_errors = {}
      assert(testkit.host_poll {
        refresh = refresh,
        events = events or function() end,
        error = function(e) host_errors[#host_errors + 1] = tostring(e) end,
      })
      finally(function() testkit.host_poll() end)
    end

    it("sleeps with an idle loop (GLib's poll): no wake-ups, where ticking needs them", function()
      if not need_lgi() then return end
      local g = guard(0.2)
      assert.is_true(g:glib())
      assert.matches(", GLib%)$", tostring(g))
      local following = idle_wakeups()
      g:stop()
      -- What the count shows when the watcher does wake: a guard that is
      -- not following looks every quarter of its limit, here for 3 s (a
      -- limit of 1 s: a loaded machine that keeps this thread off the CPU
      -- for a few tenths of a second between two ticks is no stall).
      local g2 = guard(1)
      local before = watcher_switches()
      busy(3, 0.05, function() g2:tick() end)
      g2:tick()
      local ticking = watcher_switches() - before
      -- (the loop itself woke once, for a short turn: no wake-up for that;
      -- the watcher may still have had a last look to take after the
      -- first callback, and under valgrind the one before it)
      assert.is_true(following <= 2, following .. " wake-ups in 2 s of idle loop")
      assert.is_true(ticking >= 8, "only " .. ticking .. " wake-ups in 3 s when not following")
    end)

    it("interrupts a runaway GLib callback within limit + 1 s", function()
      if not need_lgi() then return end
      local g = guard(0.5)
      assert.is_true(g:glib())
      local ok, err, took
      run_loop { { 0.1, function()
        local t0 = now()
        ok, err = pcall(spin)
        took = now() - t0
      end } }
      assert.is_false(ok)
      assert.matches("main loop stalled", err, 1, true)
      assert.is_true(took <= 0.5 + SLACK, "interrupted after " .. took .. " s")
      assert.equal(1, g:stalls())
    end)

    it("names a GLib callback that blocked in a C call", function()
      if not need_lgi() then return end
      local g = guard(0.5)
      assert.is_true(g:glib())
      local ok, err
      run_loop { { 0.1, function()
        local function waits_for_a_pipe()
          testkit.read_after(1.2)
        end
        ok, err = pcall(function()
          waits_for_a_pipe()
        end)
      end } }
      assert.is_false(ok)
      assert.matches("main loop stalled for 1%.%d s", err)
      assert.matches("waits_for_a_pipe", err, 1, true)
      assert.equal(1, g:stalls())
    end)

    it("measures each busy stretch of the loop exactly", function()
      if not need_lgi() then return end
      local g = guard(2)
      assert.is_true(g:glib())
      run_loop {
        { 0.1, function() busy(0.3) end },
        { 0.6, function() busy(0.7) end },
        { 1.5, function() end },
      }
      local longest = g:longest()
      assert.is_true(longest >= 0.7 and longest < 0.7 + (VALGRIND and 0.5 or 0.1),
        "longest stretch " .. longest)
    end)

    it("is not fooled by SIGSTOP for 3 limits while the loop is idle", function()
      if not need_lgi() then return end
      local limit = VALGRIND and 2 or 1
      local g = guard(limit)
      assert.is_true(g:glib())
      local stopper
      local t0 = now()
      run_loop {
        { 0.1, function() stopper = assert(testkit.stop_me(0.2, 3 * limit)) end },
        { 0.4 + 3 * limit, function() end },
      }
      assert.equal(0, wait_child(stopper, 5))
      assert.equal(0, g:stalls())
      assert.is_true(now() - t0 >= 0.3 + 3 * limit - 0.1)
      assert.is_true(g:longest() < limit, "frozen time counted: " .. g:longest())
    end)

    it("with a host's poll function, Lua after idle() in the host's refresh stays idle", function()
      if not need_lgi() then return end
      local g = guard(0.2)
      local extra = 0
      use_host(function()
        g:idle()
        -- Lua the host still runs before its poll (another refresh handler)
        local function more() extra = extra + 1 end
        more()
      end)
      assert.is_true(g:glib())
      assert.matches(", GLib host poll%)$", tostring(g))
      local wakeups = idle_wakeups()
      assert.is_true(wakeups <= 2, wakeups .. " wake-ups in 2 s of idle loop")
      assert.is_true(extra > 0)
      assert.same({}, host_errors)
    end)

    it("with a host's poll function, interrupts runaway Lua run after its poll", function()
      if not need_lgi() then return end
      local g = guard(0.5)
      local armed, took = false, nil
      use_host(function() g:idle() end, function()
        -- Like an X key binding in Awesome: after the poll, before GLib
        -- dispatches anything.
        if armed then
          armed = false
          local t0 = now()
          local _, err = pcall(spin)
          took = now() - t0
          error(err, 0)
        end
      end)
      assert.is_true(g:glib())
      run_loop {
        { 0.1, function() armed = true end },
        { 0.3, function() end },
      }
      assert.equal(1, #host_errors)
      assert.matches("main loop stalled", host_errors[1], 1, true)
      assert.is_true(took <= 0.5 + SLACK, "interrupted after " .. took .. " s")
      assert.equal(1, g:stalls())
    end)

    it("with a host's poll function, leaves the host's own C work after its poll alone", function()
      if not need_lgi() then return end
      local limit = VALGRIND and 1 or 0.4
      local g = guard(limit)
      local events = 0
      use_host(function() g:idle() end, function() events = events + 1 end)
      assert.is_true(g:glib())
      local before
      run_loop {
        { 0.1, function() before = events testkit.host_cwork(3 * limit) end },
        { 0.2, function() end },
      }
      assert.equal(0, g:stalls())
      assert.is_true(events > before, "the host's Lua did not run after its C work")
      assert.same({}, host_errors)
    end)

    it("puts the host's poll function back on stop, and can follow again", function()
      if not need_lgi() then return end
      local g = guard(0.5)
      use_host(function() g:idle() end)
      assert.is_true(g:glib())
      assert.is_true(g:glib())   -- twice changes nothing
      g:stop()
      -- testkit.host_poll() answers whether its function was still in place
      assert.is_true(testkit.host_poll())
      local g2 = guard(0.5)
      assert.is_true(g2:glib())
      assert.matches(", GLib%)$", tostring(g2))
      local ok, err
      run_loop { { 0.1, function() ok, err = pcall(spin) end } }
      assert.is_false(ok)
      assert.matches("main loop stalled", err, 1, true)
    end)

    it("refuses to follow on a stopped guard", function()
      if not need_lgi() then return end
      local g = guard(0.5)
      g:stop()
      local ok, msg, err = g:glib()
      assert.is_nil(ok)
      assert.matches("stopped", msg, 1, true)
      assert.equal(22, err)
    end)
  end)

  it("ignores its signal when the main loop is not stalled, and leaves no hook", function()
    local g = guard(5)
    local signo = signal_of(g)
    assert.is_number(signo)
    assert.is_true(testkit.kill(testkit.getpid(), signo))
    -- Delivered before kill returns; valgrind and TSan hold it until a
    -- blocking call, such as this one.
    testkit.sleep(0.05)
    local sum = 0
    for i = 1, 1000 do sum = sum + i end
    assert.equal(500500, sum)
    assert.equal(0, g:stalls())
    assert.is_nil(debug.gethook())
  end)

  it("puts back a hook that was set before it", function()
    local calls = 0
    local function counter() calls = calls + 1 end
    -- LuaJIT runs no count hook in compiled code: keep this one interpreted.
    local function loop()
      local stop = clock("monotonic") + GIVE_UP
      repeat
        for _ = 1, 1e4 do local _ = {} end
      until clock("monotonic") > stop
    end
    if jit then jit.off(loop) end
    debug.sethook(counter, "", 100000)
    finally(function() debug.sethook() end)
    local g = guard(0.5)
    local ok, err = pcall(loop)
    local f, mask, count = debug.gethook()
    debug.sethook()
    assert.is_false(ok)
    assert.matches("main loop stalled", err, 1, true)
    assert.equal(counter, f)
    assert.equal("", mask)
    assert.equal(100000, count)
    assert.is_true(calls > 0)
    assert.equal(1, g:stalls())
  end)

  it("returns nil, message, EBUSY while another guard runs; a new one works after stop", function()
    local g = guard(5)
    local none, msg, err = clua.stallguard(5)
    assert.is_nil(none)
    assert.matches("already running", msg, 1, true)
    assert.equal(EBUSY, err)
    -- The half-built second guard is collected without stopping the first.
    collectgarbage()
    collectgarbage()
    assert.is_true(g:tick())
    local signo = signal_of(g)
    assert.equal("handler", (testkit.sigdisposition(signo)))
    assert.is_true(g:stop())
    local g2 = guard(0.5)
    assert.is_false(pcall(spin))
    assert.equal(1, g2:stalls())
  end)

  it("claims an unused real-time signal and gives it back on stop", function()
    local before = rt_dispositions()
    local g = guard(5)
    local signo = signal_of(g)
    local during = rt_dispositions()
    assert.equal("handler", during[signo])
    for s, how in pairs(before) do
      if s ~= signo then assert.equal(how, during[s], "signal " .. s) end
    end
    assert.equal("default", before[signo])
    assert.is_true(g:stop())
    assert.is_true(g:stop())
    assert.same(before, rt_dispositions())
  end)

  it("passes over a real-time signal that is already in use", function()
    local g = guard(5)
    local first = signal_of(g)
    g:stop()
    assert.is_true(testkit.sigset(first, "ignore"))
    finally(function() testkit.sigset(first, "default") end)
    local g2 = guard(5)
    local second = signal_of(g2)
    assert.not_equal(first, second)
    assert.equal("ignore", (testkit.sigdisposition(first)))
    assert.equal("handler", (testkit.sigdisposition(second)))
    g2:stop()
    assert.equal("ignore", (testkit.sigdisposition(first)))
    assert.equal("default", (testkit.sigdisposition(second)))
  end)

  it("returns nil, message, EAGAIN when every real-time signal is taken", function()
    local lo, hi = testkit.sigrtrange()
    local taken, kept = {}, {}
    local g, msg, err
    finally(function()
      -- A guard this test got by mistake must not meet the next test.
      if g then g:stop() end
      for _, s in ipairs(taken) do testkit.sigset(s, "default") end
    end)
    for s = lo, hi do
      if testkit.sigdisposition(s) == "default" and testkit.sigset(s, "ignore") then
        taken[#taken + 1] = s
        -- gcc 16's AddressSanitizer answers success for SIGRTMAX and keeps
        -- its default disposition.
        if testkit.sigdisposition(s) ~= "ignore" then kept[#kept + 1] = s end
      end
    end
    if #kept > 0 then
      pending("cannot take every real-time signal here: sigaction() reported success "
        .. "but left signal " .. table.concat(kept, ", ") .. " at its default")
      return
    end
    g, msg, err = clua.stallguard(5)
    assert.is_nil(g)
    assert.matches("no unused real-time signal", msg, 1, true)
    assert.equal(EAGAIN, err)
    for _, s in ipairs(taken) do
      assert.equal("ignore", (testkit.sigdisposition(s)))
    end
  end)

  it("tick returns true while running and false after stop; stalls answers after stop", function()
    local g = guard(0.5)
    assert.is_true(g:tick())
    assert.is_false(pcall(spin))
    assert.is_true(g:stop())
    assert.is_false(g:tick())
    assert.equal(1, g:stalls())
    assert.equal("clua.stallguard (stopped)", tostring(g))
  end)

  it("keeps the last interrupt's message and traceback for last()", function()
    local g = guard(0.5)
    local ok, err = pcall(spin)
    assert.is_false(ok)
    assert.equal(err, g:last())
    assert.matches("stack traceback:", g:last(), 1, true)
    assert.has_error(function() g.last(g, 1) end)
  end)

  it("describes itself", function()
    local g = guard(2.5)
    assert.matches("^clua%.stallguard %(limit 2%.5 s, signal %d+%)$", tostring(g))
    assert.equal("clua.stallguard", getmetatable(g))
  end)

  it("is stopped when collected", function()
    (function() clua.stallguard(5) end)()
    collectgarbage()
    collectgarbage()
    local g = guard(5)
    assert.is_true(g:tick())
  end)

  if _VERSION >= "Lua 5.4" then
    it("is stopped by a to-be-closed variable (Lua 5.4)", function()
      local chunk = assert(load([[
        local clua = ...
        do local g <close> = clua.stallguard(5) end
        return clua.stallguard(5)
      ]]))
      local g = chunk(clua)
      assert.is_not_nil(g)
      started[#started + 1] = g
    end)
  end

  if _VERSION == "Lua 5.1" then
    it("must be started from the main Lua thread under Lua 5.1 and LuaJIT", function()
      local ok, err = coroutine.wrap(function()
        return pcall(clua.stallguard, 5)
      end)()
      assert.is_false(ok)
      assert.matches("main Lua thread", err, 1, true)
    end)
  else
    it("interrupts the main thread when started from a coroutine", function()
      local g = coroutine.wrap(function() return clua.stallguard(0.5) end)()
      assert.is_not_nil(g)
      started[#started + 1] = g
      assert.is_false(pcall(spin))
      assert.equal(1, g:stalls())
    end)
  end

  if jit then
    it("interrupts a loop LuaJIT compiled, within limit + 1 s", function()
      local g = guard(0.5)
      assert.is_true(g:jit())
      local function compiled()
        local x = 0
        -- (100 s or so when not interrupted: a loop that reads no clock)
        for _ = 1, 1e11 do x = x + 1 end
        error("not interrupted", 0)
      end
      jit.on(compiled, true)
      local t0 = now()
      local ok, err = pcall(compiled)
      local took = now() - t0
      assert.is_false(ok)
      assert.matches("main loop stalled for 0%.%d s: interrupted", err)
      assert.is_true(took <= 0.5 + SLACK, "interrupted after " .. took .. " s")
      assert.equal(1, g:stalls())
    end)

    it("interrupts `while true do end` in a fresh luajit, with the JIT on or off", function()
      local lua = os.getenv("CLUA_LUA")
      local script = 'local g = require("clua").stallguard(0.3) while true do end'
      local function run(flags)
        local p = io.popen(("timeout -s KILL 5 %s %s -e '%s' 2>&1; echo status=$?")
          :format(lua, flags, script))
        local out = p:read("*a")
        p:close()
        return out
      end
      for _, flags in ipairs({ "", "-joff" }) do
        local out = run(flags)
        assert.matches("main loop stalled", out, 1, true)
        assert.matches("status=1\n", out, 1, true)
      end
    end)
  else
    it("has no compiled code to care about under PUC Lua (jit() is nil)", function()
      assert.is_nil(guard(5):jit())
    end)
  end

  describe("rejects bad arguments", function()
    local bad = {
      {"zero", 0}, {"negative", -1}, {"NaN", 0 / 0}, {"inf", math.huge},
      {"-inf", -math.huge}, {"over a day", 86401}, {"string", "1"},
      {"nil", nil}, {"table", {}}, {"boolean", true},
    }
    -- Called from Lua (not straight from pcall) so that every Lua version
    -- can name the function: 'stallguard' or 'clua.stallguard'.
    local function start(...)
      local g = clua.stallguard(...)
      return g
    end
    for _, case in ipairs(bad) do
      it("limit " .. case[1], function()
        local ok, err = pcall(start, case[2])
        assert.is_false(ok)
        assert.matches("bad argument #1 to '[%w.]*stallguard' %(", err)
      end)
    end
    it("a surplus argument", function()
      local ok, err = pcall(start, 1, 2)
      assert.is_false(ok)
      assert.matches("bad argument #2 to '[%w.]*stallguard' %(", err)
    end)
    it("a method called on something else", function()
      local g = guard(5)
      for _, name in ipairs({"tick", "glib", "idle", "stalls", "longest", "jit", "last", "stop"}) do
        local ok, err = pcall(g[name], {})
        assert.is_false(ok)
        assert.matches("clua.stallguard expected", err, 1, true)
        ok, err = pcall(g[name], g, 1)
        assert.is_false(ok)
        assert.matches("bad argument #2", err, 1, true)
      end
      assert.is_true(g:tick())
    end)
  end)

  it("adds no globals", checks.adds_no_globals(function()
    local g = guard(0.5)
    g:tick()
    pcall(spin)
    g:stalls()
    tostring(g)
    g:stop()
  end))
end)
