-- clua/process.c: subreaper, reap, sweep, children, SIGCHLD, against real
-- children, orphans and zombies of this very process.
local clua = require("clua")
local checks = require("support.checks")
local testkit = require("testkit")

local ESRCH, ECHILD, EBUSY = 3, 10, 16 -- Linux errno values
local SIGQUIT, SIGKILL, SIGTERM = 3, 9, 15

-- Timing is relaxed (never skipped) under valgrind, which runs slower.
local slow = os.getenv("CLUA_UNDER_VALGRIND") and 10 or 1

local shell = require("support.shell")
local stat = shell.proc_stat

local function until_true(what, fn, timeout)
  shell.wait_for(what, (timeout or 5) * slow, fn, 0.005)
end

local function until_zombie(pid)
  until_true("pid " .. pid .. " to become a zombie", function()
    return stat(pid) == "Z"
  end)
end

local function pack(...) return { n = select("#", ...), ... } end

-- reap(pid) until it returns something: the results, packed.
local function reap_when_done(pid)
  local r
  until_true("pid " .. pid .. " to exit", function()
    r = pack(clua.reap(pid))
    return r[1] ~= nil or r[2] ~= nil
  end)
  return r
end

local function alive(pid)
  local state = stat(pid)
  return state ~= nil and state ~= "Z"
end

-- Finishes off a child a test left running.
local function dispose(pid)
  testkit.kill(pid, SIGKILL)
  reap_when_done(pid)
end

local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

local function find_pid(list, pid)
  for _, entry in ipairs(list) do
    if entry.pid == pid then return entry end
  end
end

describe("clua.setsubreap", function()
  after_each(function() clua.setsubreap(false) end)

  it("turns the subreaper flag on and off", function()
    assert.is_true(clua.setsubreap(true))
    assert.is_true(clua.getsubreap())
    assert.is_true(clua.setsubreap(false))
    assert.is_false(clua.getsubreap())
  end)

  it("makes a double-forked grandchild ours: its parent pid is this process", function()
    assert.is_true(clua.setsubreap(true))
    local gc = assert(testkit.grandchild(10))
    local state, ppid = stat(gc)
    assert.is_not_nil(state)
    assert.equal(testkit.getpid(), ppid)
    assert.is_true(contains(clua.children(), gc))
    dispose(gc)
  end)

  it("leaves a double-forked grandchild to someone else when off", function()
    assert.is_true(clua.setsubreap(false))
    local gc = assert(testkit.grandchild(10))
    local state, ppid = stat(gc)
    assert.is_not_nil(state)
    assert.not_equal(testkit.getpid(), ppid)
    assert.is_false(contains(clua.children(), gc))
    testkit.kill(gc, SIGKILL)
  end)
end)

describe("clua.reap", function()
  it("returns pid, 'exited', code for a finished child", function()
    for _, code in ipairs({ 0, 3, 255 }) do
      local pid = testkit.spawn("exit", code)
      local r = reap_when_done(pid)
      assert.same({ n = 3, pid, "exited", code }, r)
    end
  end)

  it("returns pid, 'killed', signo, false for a child killed without a core", function()
    local pid = testkit.spawn("exit", 0, 30)
    testkit.kill(pid, SIGTERM)
    assert.same({ n = 4, pid, "killed", SIGTERM, false }, reap_when_done(pid))
  end)

  it("reports the core dump flag exactly when the kernel wrote a core", function()
    local pattern = (shell.read_file("/proc/sys/kernel/core_pattern") or ""):gsub("%s+$", "")
    if pattern:match("^|") or pattern:match("/") then
      pending("needs a core_pattern that writes into the cwd, not " .. pattern)
      return
    end
    local dir = shell.mktemp_dir("clua-core")
    local pid = testkit.spawn_core(dir)
    local r = reap_when_done(pid)
    local _, files = shell.run("ls -A " .. shell.quote(dir))
    shell.run("rm -rf " .. shell.quote(dir))
    assert.same({ n = 4, pid, "killed", SIGQUIT }, { n = r.n, r[1], r[2], r[3] })
    assert.equal(files:match("core") ~= nil, r[4])
    -- The hard limit allows a core and the pattern writes one into the
    -- cwd: the kernel must have dumped one.
    if select(2, shell.run("ulimit -H -c")):match("^0") == nil then
      assert.is_true(r[4])
    end
  end)

  it("returns a plain nil while the child still runs", function()
    local pid = testkit.spawn("exit", 0, 30)
    assert.same({ n = 1 }, pack(clua.reap(pid)))
    assert.is_true(alive(pid))
    dispose(pid)
  end)

  it("reaps any child when called without a pid, pid first", function()
    local pid = testkit.spawn("exit", 9)
    until_zombie(pid)
    local got, how, code
    until_true("reap() to return our child", function()
      got, how, code = clua.reap()
      return got == pid
    end)
    assert.equal("exited", how)
    assert.equal(9, code)
  end)

  it("returns nil, message, ECHILD for a pid that is not our child", function()
    local ok, msg, errno = clua.reap(1)
    assert.is_nil(ok)
    assert.matches("waitid", msg)
    assert.equal(ECHILD, errno)
  end)

  it("returns nil, message, ECHILD for a child already reaped", function()
    local pid = testkit.spawn("exit", 0)
    reap_when_done(pid)
    local ok, _, errno = clua.reap(pid)
    assert.is_nil(ok)
    assert.equal(ECHILD, errno)
  end)
end)

describe("clua.childwatch", function()
  local ENOSYS = 38
  -- pidfd_open(2) is Linux >= 5.3, and valgrind 3.19 (Debian 12) does not
  -- know it: childwatch then says ENOSYS, which the glue copes with.
  local probe, probe_msg, probe_errno = clua.childwatch(testkit.getpid())
  if probe then probe:close() end
  local function no_pidfd()
    if probe_errno == ENOSYS then
      pending("needs pidfd_open(2): " .. tostring(probe_msg)
        .. " (Linux < 5.3, or valgrind < 3.20)")
      return true
    end
    return false
  end

  -- `it` for a test that needs pidfds.
  local function it_pidfd(name, body)
    it(name, function()
      if no_pidfd() then return end
      body()
    end)
  end

  local function fdinfo_flags(fd)
    local info = shell.read_file("/proc/self/fdinfo/" .. fd) or ""
    return tonumber(info:match("flags:%s*(%d+)"), 8)
  end

  it_pidfd("turns readable when the child exits, and reaps exactly it", function()
    local pid = testkit.spawn("exit", 7, 0.3)
    local w = assert(clua.childwatch(pid))
    assert.equal(pid, w:pid())
    assert.is_false(testkit.poll_readable(w:fd(), 0))
    assert.same({ n = 1 }, pack(w:reap()))
    assert.is_true(testkit.poll_readable(w:fd(), 5000 * slow))
    assert.same({ n = 3, pid, "exited", 7 }, pack(w:reap()))
    local ok, msg, errno = w:reap()
    assert.is_nil(ok)
    assert.matches("waitid", msg)
    assert.equal(ECHILD, errno)
    w:close()
  end)

  it_pidfd("reports a signal as pid, 'killed', signo, false", function()
    local pid = testkit.spawn("exit", 0, 30)
    local w = assert(clua.childwatch(pid))
    testkit.kill(pid, SIGTERM)
    assert.is_true(testkit.poll_readable(w:fd(), 5000 * slow))
    assert.same({ n = 4, pid, "killed", SIGTERM, false }, pack(w:reap()))
    w:close()
  end)

  it_pidfd("wait(timeout) returns nil while it runs, true once it has exited, reaping nothing",
  function()
    local pid = testkit.spawn("exit", 4, 0.3)
    local w = assert(clua.childwatch(pid))
    local t0 = testkit.now("monotonic")
    assert.same({ n = 1 }, pack(w:wait(0.05)))
    assert.is_true(testkit.now("monotonic") - t0 >= 0.049)
    assert.is_true(w:wait(5 * slow))
    assert.equal("Z", (stat(pid)))
    assert.is_true(w:wait(0))
    assert.is_true(w:wait())
    assert.same({ n = 3, pid, "exited", 4 }, pack(w:reap()))
    w:close()
  end)

  it_pidfd("wait refuses a bad timeout", function()
    local w = assert(clua.childwatch(testkit.getpid()))
    for _, bad in ipairs({ -1, 0 / 0, "1", true, {} }) do
      local ok, err = pcall(w.wait, w, bad)
      assert.is_false(ok, tostring(bad))
      assert.matches("bad argument #2", err, 1, true)
    end
    w:close()
  end)

  it_pidfd("watches a zombie: readable at once", function()
    local pid = testkit.spawn("exit", 3)
    until_zombie(pid)
    local w = assert(clua.childwatch(pid))
    assert.is_true(testkit.poll_readable(w:fd(), 0))
    assert.same({ n = 3, pid, "exited", 3 }, pack(w:reap()))
    w:close()
  end)

  it_pidfd("never reaps another child once its own was reaped elsewhere", function()
    local pid = testkit.spawn("exit", 0)
    local w = assert(clua.childwatch(pid))
    reap_when_done(pid)
    local other = testkit.spawn("exit", 5)
    until_zombie(other)
    local ok, _, errno = w:reap()
    assert.is_nil(ok)
    assert.equal(ECHILD, errno)
    assert.equal("Z", (stat(other)))
    assert.same({ n = 3, other, "exited", 5 }, reap_when_done(other))
    w:close()
  end)

  it_pidfd("watches any process, but reaps only a child of this one", function()
    local w = assert(clua.childwatch(testkit.getpid()))
    assert.is_false(testkit.poll_readable(w:fd(), 0))
    local ok, _, errno = w:reap()
    assert.is_nil(ok)
    assert.equal(ECHILD, errno)
    w:close()
  end)

  it_pidfd("returns nil, message, ESRCH for a process that is gone", function()
    local pid = testkit.spawn("exit", 0)
    reap_when_done(pid)
    local ok, msg, errno = clua.childwatch(pid)
    assert.is_nil(ok)
    assert.matches("pidfd_open", msg)
    assert.equal(ESRCH, errno)
  end)

  it_pidfd("is close-on-exec, and __tostring and the metatable name it", function()
    local w = assert(clua.childwatch(testkit.getpid()))
    local fd = w:fd()
    assert.is_true(math.floor(fdinfo_flags(fd) / 2 ^ 19) % 2 == 1, "O_CLOEXEC")
    assert.equal("clua.childwatch (fd " .. fd .. ")", tostring(w))
    assert.equal("clua.childwatch", getmetatable(w))
    w:close()
    assert.equal(testkit.getpid(), w:pid())
  end)

  local function open() return clua.childwatch(testkit.getpid()) end

  it_pidfd("closes idempotently, and __tostring says so",
    checks.closes_idempotently(open, "clua.childwatch"))
  it_pidfd("raises on fd, reap and wait of a closed watch",
    checks.raises_when_closed(open, "clua.childwatch", { { "fd" }, { "reap" }, { "wait", 0 } }))
  if _VERSION >= "Lua 5.4" then
    it_pidfd("closes through __close when a Lua 5.4 <close> variable goes out of scope", function()
      local chunk = assert(load([[
        local clua, pid = ...
        local kept
        do
          local w <close> = assert(clua.childwatch(pid))
          kept = w
        end
        return kept
      ]]))
      assert.equal("clua.childwatch (closed)", tostring(chunk(clua, testkit.getpid())))
    end)
  end
  it_pidfd("leaves no fd behind after 1,000 watches closed and 1,000 collected",
    checks.leaves_no_fd(open, 100))

  it_pidfd("raises for methods called on something other than a watch",
    checks.methods_check_self(open, "clua.childwatch",
      { "fd", "pid", "reap", "wait", "close" }))

  it_pidfd("raises for methods with surplus arguments", function()
    local w = assert(open())
    for _, name in ipairs({ "fd", "pid", "reap", "close" }) do
      local ok, err = pcall(w[name], w, 1)
      assert.is_false(ok, name)
      assert.matches("bad argument #2", err, 1, true)
    end
    local ok, err = pcall(w.wait, w, 1, 2)
    assert.is_false(ok)
    assert.matches("bad argument #3", err, 1, true)
    w:close()
  end)
end)

describe("clua.sweep", function()
  it("leaves a fresh zombie alone and reaps it once the grace period passed", function()
    local pid = testkit.spawn("exit", 7)
    until_zombie(pid)
    -- 0.75 s of margin for a busy machine between the first look and the
    -- second (the age counts from the first)
    local grace = 1 * slow
    assert.is_nil(find_pid(clua.sweep(grace), pid))
    assert.equal("Z", (stat(pid)))
    testkit.sleep(grace / 4)
    assert.is_nil(find_pid(clua.sweep(grace), pid))
    assert.equal("Z", (stat(pid)))
    testkit.sleep(grace * 3 / 4 + 0.05)
    assert.same({ pid = pid, how = "exited", code = 7, core = false },
      find_pid(clua.sweep(grace), pid))
    assert.is_nil(stat(pid))
  end)

  it("waits 2 seconds by default", function()
    local pid = testkit.spawn("exit", 1)
    until_zombie(pid)
    assert.is_nil(find_pid(clua.sweep(), pid))
    testkit.sleep(1)
    assert.is_nil(find_pid(clua.sweep(), pid))
    assert.equal("Z", (stat(pid)))
    testkit.sleep(1.05)
    assert.is_not_nil(find_pid(clua.sweep(), pid))
  end)

  it("reaps at once with a grace of 0 and reports signals", function()
    local pid = testkit.spawn("exit", 0, 30)
    testkit.kill(pid, SIGTERM)
    until_zombie(pid)
    assert.same({ pid = pid, how = "killed", code = SIGTERM, core = false },
      find_pid(clua.sweep(0), pid))
  end)

  it("reaps every old zombie in one call, not just the one waitid shows", function()
    local pids = {}
    for i = 1, 5 do pids[i] = testkit.spawn("exit", i) end
    for _, pid in ipairs(pids) do until_zombie(pid) end
    local swept = clua.sweep(0)
    for i, pid in ipairs(pids) do
      assert.same({ pid = pid, how = "exited", code = i, core = false }, find_pid(swept, pid))
    end
  end)

  it("never touches a live child", function()
    local pid = testkit.spawn("exit", 0, 30)
    assert.is_nil(find_pid(clua.sweep(0), pid))
    assert.is_true(alive(pid))
    dispose(pid)
  end)

  it("lets a co-waiter reap its child first and carries on", function()
    local pid = testkit.spawn("exit", 4)
    until_zombie(pid)
    assert.is_nil(find_pid(clua.sweep(0.2), pid))
    -- The co-waiter (Awesome's handler, say) takes its child.
    assert.same({ n = 3, pid, "exited", 4 }, reap_when_done(pid))
    testkit.sleep(0.25)
    local swept = assert(clua.sweep(0.2))
    assert.is_nil(find_pid(swept, pid))
  end)

  it("returns an empty table when nothing is old enough", function()
    assert.same({}, clua.sweep(1e9))
  end)
end)

describe("clua.children", function()
  it("lists live and zombie children", function()
    local live = testkit.spawn("exit", 0, 30)
    local zombie = testkit.spawn("exit", 0)
    until_zombie(zombie)
    local kids = clua.children()
    assert.is_true(contains(kids, live))
    assert.is_true(contains(kids, zombie))
    for _, pid in ipairs(kids) do
      assert.equal(testkit.getpid(), select(2, stat(pid)))
    end
    dispose(live)
    reap_when_done(zombie)
    kids = clua.children()
    assert.is_false(contains(kids, live))
    assert.is_false(contains(kids, zombie))
  end)

  it("returns an array of integers in ascending order", function()
    local a, b = testkit.spawn("exit", 0, 30), testkit.spawn("exit", 0, 30)
    local kids = clua.children()
    assert.is_true(#kids >= 2)
    for i = 2, #kids do assert.is_true(kids[i - 1] < kids[i]) end
    dispose(a)
    dispose(b)
  end)
end)

describe("clua.sigchld and clua.ignore_SIGCHLD", function()
  -- Ignoring SIGCHLD makes the kernel reap every child: later waits in
  -- this process would all fail.
  after_each(function() testkit.set_sigchld("default") end)

  it("reads the disposition without changing it", function()
    testkit.set_sigchld("default")
    assert.equal("default", clua.sigchld())
    testkit.set_sigchld("handler")
    assert.equal("handler", clua.sigchld())
    assert.equal("handler", clua.sigchld())
    testkit.set_sigchld("ignore")
    assert.equal("ignore", clua.sigchld())
  end)

  it("refuses with EBUSY while a handler is installed", function()
    testkit.set_sigchld("handler")
    local ok, msg, errno = clua.ignore_SIGCHLD()
    assert.is_nil(ok)
    assert.matches("handler", msg)
    assert.equal(EBUSY, errno)
    assert.is_nil((clua.ignore_SIGCHLD(false)))
    assert.equal("handler", clua.sigchld())
  end)

  it("replaces a handler when forced", function()
    testkit.set_sigchld("handler")
    assert.is_true(clua.ignore_SIGCHLD(true))
    assert.equal("ignore", clua.sigchld())
  end)

  it("ignores SIGCHLD when there is no handler: exited children vanish at once", function()
    testkit.set_sigchld("default")
    assert.is_true(clua.ignore_SIGCHLD())
    assert.equal("ignore", clua.sigchld())
    local pid = testkit.spawn("exit", 0)
    until_true("the kernel to reap pid " .. pid, function() return stat(pid) == nil end)
    local ok, _, errno = clua.reap(pid)
    assert.is_nil(ok)
    assert.equal(ECHILD, errno)
    assert.is_true(clua.ignore_SIGCHLD())
  end)
end)

describe("clua process functions", function()
  after_each(function() testkit.set_sigchld("default") end)

  local nan = 0 / 0
  local values = {
    ["nil"] = { nil }, ["true"] = { true }, ["false"] = { false },
    string = { "1" }, table = { {} }, ["function"] = { print },
    ["float 1.5"] = { 1.5 }, ["huge 2^63"] = { 2 ^ 63 },
    ["negative -1"] = { -1 }, ["huge negative -2^63"] = { -(2 ^ 63) },
    zero = { 0 }, NaN = { nan }, ["math.huge"] = { math.huge },
    ["2^31, beyond pid_t"] = { 2 ^ 31 },
  }
  -- Values each function accepts (every other one above must raise).
  local accepts = {
    setsubreap = { ["true"] = true, ["false"] = true },
    getsubreap = {},
    reap = { ["nil"] = true },
    sweep = { ["nil"] = true, ["float 1.5"] = true, ["huge 2^63"] = true, zero = true,
      ["2^31, beyond pid_t"] = true },
    children = {},
    sigchld = {},
    ignore_SIGCHLD = { ["nil"] = true, ["true"] = true, ["false"] = true },
    -- (a pid: a positive integer that fits pid_t; `true` is not one)
    childwatch = {},
  }
  local compile = loadstring or load

  -- Calls clua.<name>(...) the way a user writes it, so Lua names it.
  local function call(name, ...)
    local chunk = assert(compile("local clua = ...; clua." .. name .. "(select(2, ...))"))
    return pcall(chunk, clua, ...)
  end

  for name, ok_values in pairs(accepts) do
    for label, v in pairs(values) do
      if not ok_values[label] then
        it(name .. " raises a clean error for " .. label, function()
          local ok, err = call(name, v[1])
          assert.is_false(ok)
          assert.is_string(err)
          assert.matches("bad argument #1 to '" .. name .. "'", err, 1, true)
        end)
      end
    end
  end

  local surplus = {
    setsubreap = { false, 1 }, reap = { 1, 1 }, sweep = { 1, 1 },
    ignore_SIGCHLD = { false, 1 }, childwatch = { 1, 1 },
  }
  for name, args in pairs(surplus) do
    it(name .. " refuses a surplus argument", function()
      local ok, err = call(name, args[1], args[2])
      assert.is_false(ok)
      assert.matches("bad argument #2 to '" .. name .. "'", err, 1, true)
    end)
  end

  it("sweep accepts any finite grace >= 0", function()
    assert.is_table(clua.sweep(1.5))
    assert.is_table(clua.sweep(2 ^ 63))
    assert.is_table(clua.sweep(0))
  end)

  it("does not add globals", checks.adds_no_globals(function(fresh)
    assert.is_function(fresh.sweep)
  end))
end)

describe("clua.reap #load", function()
  local total_wanted, wave = 10000, 1000

  after_each(function() clua.setsubreap(false) end)

  it("reaps 10,000 orphans adopted through the subreaper, no zombie left, within 120 s", function()
    local start = testkit.now()
    assert.is_true(clua.setsubreap(true))
    local created, reaped, waves, failed_waves = 0, 0, 0, 0
    -- Waves: a pids cgroup limit (~4900 tasks, shared) caps how many can
    -- exist at once. Odd waves are reaped by reap(), even ones by sweep(0).
    while created < total_wanted do
      local n = testkit.orphans(math.min(wave, total_wanted - created), 0)
      if type(n) ~= "number" or n <= 0 then
        failed_waves = failed_waves + 1
        assert(failed_waves < 50, "could not fork orphans: " .. tostring(n))
        testkit.sleep(0.1)
        n = 0
      end
      waves = waves + 1
      created = created + n
      local got = 0
      local deadline = testkit.now() + 60
      while got < n do
        if waves % 2 == 1 then
          local pid, how, code = clua.reap()
          if pid then
            assert.equal("exited", how)
            assert.equal(0, code)
            got = got + 1
          else
            assert.is_nil(how, "reap failed")
            testkit.sleep(0.001)
          end
        else
          local swept = clua.sweep(0)
          got = got + #swept
          if #swept == 0 then testkit.sleep(0.001) end
        end
        assert(testkit.now() < deadline, "wave " .. waves .. " not reaped in 60 s")
      end
      reaped = reaped + got
    end
    assert.equal(total_wanted, created)
    assert.equal(total_wanted, reaped)
    for _, pid in ipairs(clua.children()) do
      assert.not_equal("Z", (stat(pid)))
    end
    assert.is_true(testkit.now() - start < 120, "took " .. (testkit.now() - start) .. " s")
  end)
end)
