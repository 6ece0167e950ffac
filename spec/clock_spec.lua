-- clua/clock.c against the real kernel clock. Tests that set the clock need
-- CAP_SYS_TIME and skip without it. Other processes on a test machine may
-- set the clock too (each set is a real event for every watch), so where an
-- extra event from elsewhere could land, the assertions allow for it
-- without accepting what a bug would produce.
local clua = require("clua")
local testkit = require("testkit")
local checks = require("support.checks")
local shell = require("support.shell")

local EPERM = 1

-- Sets CLOCK_REALTIME to itself plus delta seconds (0: fires every watch,
-- moves nothing); skips the test when this process may not.
local function step(delta)
  local ok, msg, errno = testkit.clock_step(delta)
  if not ok and errno == EPERM then
    pending("needs CAP_SYS_TIME: " .. msg)
  end
  assert(ok, msg)
end

local function watch()
  local w = assert(clua.clockwatch())
  finally(function() w:close() end)
  return w
end

-- Reads what is pending: earlier changes, ours or another process's. A
-- bound, so that a watch that never drains fails instead of hanging.
local function drain(w)
  for _ = 1, 10 do
    if w:read() == nil then return end
  end
  error("the watch never stops reading changes")
end

local function fdinfo(fd)
  local f = assert(io.open("/proc/self/fdinfo/" .. fd))
  local text = f:read("*a")
  f:close()
  return text
end

local function bit(n, value) -- whether value has bit `n` set
  return math.floor(value / 2 ^ n) % 2 == 1
end

describe("clua.clockwatch", function()
  it("returns an open watch with an integer fd", function()
    local w = watch()
    local fd = w:fd()
    assert.is_number(fd)
    assert.is_true(fd >= 0 and fd == math.floor(fd))
    assert.are.equal("clua.clockwatch (fd " .. fd .. ")", tostring(w))
    assert.are.equal("clua.clockwatch", getmetatable(w))
  end)

  it("is a CLOCK_REALTIME timerfd, ABSTIME|CANCEL_ON_SET, NONBLOCK|CLOEXEC", function()
    local w = watch()
    local info = fdinfo(w:fd())
    local flags = tonumber(info:match("flags:%s*(%d+)"), 8)
    assert.is_true(bit(19, flags), "O_CLOEXEC (02000000) in " .. info)
    assert.is_true(bit(11, flags), "O_NONBLOCK (04000) in " .. info)
    assert.are.equal("0", info:match("clockid:%s*(%d+)"))
    -- TFD_TIMER_ABSTIME (1) | TFD_TIMER_CANCEL_ON_SET (2)
    assert.are.equal(3, tonumber(info:match("settime flags:%s*(%d+)"), 8))
    -- armed far in the future: more than 100 years to go
    local left = tonumber(info:match("it_value:%s*%((%d+),"))
    assert.is_true(left > 100 * 365 * 86400, info)
  end)

  it("reads nil when the clock has not changed", function()
    local w = watch()
    -- Another process may set the clock meanwhile: each table read here
    -- is such an event, and a watch that always reads a table fails.
    local result
    for _ = 1, 5 do
      result = w:read()
      if result == nil then break end
      shell.retried("a clock change by another program")
    end
    assert.is_nil(result)
  end)

  -- Watches are dropped in batches of 100, so a soft limit of 1,024 fds
  -- (valgrind takes some of it) cannot turn this into EMFILE before the
  -- collector runs.
  checks.watch_lifecycle(it, clua, "clockwatch", { { "fd" }, { "read" }, { "wait", 0 } }, 100)

  it("wait(timeout) returns nil after the timeout when the clock does not change", function()
    local w = watch()
    local t0 = testkit.now("monotonic")
    local result
    for _ = 1, 5 do -- a table here is another process's clock event
      result = w:wait(0.1)
      if result == nil then break end
      shell.retried("a clock change by another program")
    end
    assert.is_nil(result)
    assert.is_true(testkit.now("monotonic") - t0 >= 0.099)
  end)

  describe("bad arguments", function()
    local w

    before_each(function() w = assert(clua.clockwatch()) end)
    after_each(function() w:close() end)

    it("raise for clockwatch with surplus arguments", function()
      -- called from a closure: older Lua names a function only from its
      -- call site, and not from a tail call
      local ok, err = pcall(function() clua.clockwatch(1) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w.]*clockwatch' "
        .. "%(no more than 0 arguments expected, got 1%)", err)
    end)

    it("raise for methods called on something other than a watch",
      checks.methods_check_self(clua.clockwatch, "clua.clockwatch",
        { "fd", "read", "wait", "close" }))

    it("raise for methods with surplus arguments", function()
      assert.has_error(function() w:fd(1) end)
      assert.has_error(function() w:read(1) end)
      assert.has_error(function() w:close(1) end)
      assert.has_error(function() w:wait(1, 2) end)
    end)

    it("raise for wait with a bad timeout", function()
      for _, bad in ipairs({ -1, -0.001, 0 / 0, "1", true, {} }) do
        local ok, err = pcall(w.wait, w, bad)
        assert.is_false(ok, tostring(bad))
        assert.matches("bad argument #2", err, 1, true)
      end
    end)
  end)

  it("adds no globals", checks.adds_no_globals(function(fresh)
    local w = assert(fresh.clockwatch())
    w:read()
    w:wait(0)
    tostring(w)
    w:close()
  end))

  describe("on a clock change", function()
    it("turns readable; read returns the change once, then nil", function()
      local w = watch()
      step(0)
      assert.is_true(testkit.poll_readable(w:fd(), 1000))
      local change = w:read()
      assert.is_table(change)
      assert.is_number(change.jump)
      assert.is_number(change.suspended)
      -- right after: a read, and a poll, see nothing
      assert.is_nil(w:read())
      assert.is_false(testkit.poll_readable(w:fd(), 0))
    end)

    it("sees a second change again, with no re-arming", function()
      local w = watch()
      step(0)
      assert.is_true(testkit.poll_readable(w:fd(), 1000))
      assert.is_table(w:read())
      assert.is_nil(w:read())
      step(0)
      assert.is_true(testkit.poll_readable(w:fd(), 1000))
      assert.is_table(w:read())
      assert.is_nil(w:read())
    end)

    it("does not spin: after one read, polling 200 ms reports nothing", function()
      local w = watch()
      step(0)
      assert.is_true(testkit.poll_readable(w:fd(), 1000))
      assert.is_table(w:read())
      -- A wake-up in the window may be another process's clock event; it
      -- must read as one and be drained. An fd left readable by read never
      -- gives a quiet window.
      local quiet = false
      for _ = 1, 5 do
        if not testkit.poll_readable(w:fd(), 200) then
          quiet = true
          break
        end
        assert.is_table(w:read())
      end
      assert.is_true(quiet, "the fd stayed readable after read")
    end)

    it("reports two +1 s steps between two reads once, as +2 s within 50 ms", function()
      local w = watch()
      local moved = 0
      finally(function()
        if moved ~= 0 then assert(testkit.clock_step(-moved)) end
      end)
      local change, after
      for _ = 1, 5 do -- retaken when another process's step lands in it
        drain(w)
        step(1)
        moved = 1
        step(1)
        moved = 2
        assert.is_true(testkit.poll_readable(w:fd(), 1000))
        change = w:read()
        after = w:read()
        step(-2)
        moved = 0
        drain(w)
        if change and math.abs(change.jump - 2) < 0.5 then break end
        shell.retried("another program stepped the clock during the measurement")
      end
      assert.is_table(change)
      assert.is_true(math.abs(change.jump - 2) < 0.05, "jump " .. change.jump)
      assert.is_nil(after)
    end)

    it("wait returns the change", function()
      local w = watch()
      step(0)
      local change = w:wait(5)
      assert.is_table(change)
      assert.is_number(change.jump)
      assert.is_nil(w:read())
    end)

    it("measures a +2 s step and the -2 s step back within 50 ms, suspended under 1 ms", function()
      local w = watch()
      local moved = 0
      finally(function()
        if moved ~= 0 then assert(testkit.clock_step(-moved)) end
      end)
      local up, down
      -- Another process stepping the clock between our step and our read
      -- adds its own step (whole seconds); such a measurement is taken
      -- again. The last one is asserted whatever it is.
      for _ = 1, 5 do
        drain(w)
        step(2)
        moved = 2
        assert.is_true(testkit.poll_readable(w:fd(), 1000))
        up = w:read()
        step(-2)
        moved = 0
        assert.is_true(testkit.poll_readable(w:fd(), 1000))
        down = w:read()
        if up and down and math.abs(up.jump - 2) < 0.5
            and math.abs(down.jump + 2) < 0.5 then
          break
        end
        shell.retried("another program stepped the clock during the measurement")
      end
      assert.is_table(up)
      assert.is_table(down)
      assert.is_true(math.abs(up.jump - 2) < 0.05, "jump " .. up.jump)
      assert.is_true(math.abs(down.jump + 2) < 0.05, "jump " .. down.jump)
      assert.is_true(math.abs(up.suspended) < 0.001, "suspended " .. up.suspended)
      assert.is_true(math.abs(down.suspended) < 0.001, "suspended " .. down.suspended)
    end)

    it("examples/clockwatch.lua prints one line per change", function()
      step(0) -- skips here without CAP_SYS_TIME
      local cmd = ("exec timeout 20 %q %q/examples/clockwatch.lua 2")
        :format(os.getenv("CLUA_LUA"), os.getenv("CLUA_ROOT"))
      local out = assert(io.popen(cmd))
      finally(function() out:close() end)
      assert.matches("^watching the wall clock %(clua.clockwatch %(fd %d+%)%)$",
        out:read("*l"))
      step(0)
      local first = out:read("*l")
      step(0)
      local second = out:read("*l")
      -- each a step; another process's change may be among them
      assert.matches("^clock stepped [+-]%d+%.%d%d%d s$", first)
      assert.matches("^clock stepped [+-]%d+%.%d%d%d s$", second)
      assert.is_nil(out:read("*l")) -- it exits after COUNT changes
    end)
  end)
end)
