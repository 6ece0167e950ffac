-- clua/notify.c against a plain AF_UNIX datagram socket standing in for the
-- service manager's receiving end: the exact bytes each call sends, to a
-- path address and to an abstract one, and what a call does when nobody
-- reads that socket.  The real systemd user manager is in
-- notify_systemd_spec.lua.
local clua = require("clua")
local checks = require("support.checks")
local testkit = require("testkit")

local ENV = { "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID" }

local function save_env()
  local saved = {}
  for _, name in ipairs(ENV) do saved[name] = os.getenv(name) end
  return saved
end

local function restore_env(saved)
  for _, name in ipairs(ENV) do testkit.setenv(name, saved[name]) end
end

local mktemp_dir = require("support.shell").mktemp_dir

-- A unique abstract name, so parallel runs never meet.
local function abstract_name()
  return ("@clua-notify-spec-%d-%d"):format(testkit.getpid(),
    math.floor(testkit.now("monotonic") * 1e6))
end

-- Whether msg is an argument error for argument #arg of clua.<fname>
-- (Lua 5.1 names it 'fname', 5.4 'clua.fname').
local function names(msg, fname, argn)
  msg = tostring(msg)
  local head = ("bad argument #%d to '"):format(argn)
  return msg:find(head .. fname .. "'", 1, true) ~= nil
    or msg:find(head .. "clua." .. fname .. "'", 1, true) ~= nil
end

local function is_utf8(s)
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    local n = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3
      or c >= 0xC2 and 2 or nil
    if not n then return false end
    for j = i + 1, i + n - 1 do
      local b = s:byte(j)
      if not b or b < 0x80 or b > 0xBF then return false end
    end
    i = i + n
  end
  return true
end

local utf8_char = testkit.utf8

-- The datagram receiver the tests of one describe block talk to: before
-- each test it listens on a fresh address (`kind` "abstract", or "path" in
-- a temporary folder) and, when `export` is true, points NOTIFY_SOCKET at
-- it (false: unsets it); after each test it closes, removes what it made
-- and puts the environment back. Its `sock` and `address` fields are the
-- current test's.
local function use_receiver(kind, export)
  local rx, saved, dir = {}, nil, nil
  before_each(function()
    saved = save_env()
    if kind == "path" then
      dir = mktemp_dir()
      rx.address = dir .. "/notify"
    else
      rx.address = abstract_name()
    end
    rx.sock = assert(testkit.dgram_listen(rx.address))
    testkit.setenv("NOTIFY_SOCKET", export and rx.address or nil)
  end)
  after_each(function()
    rx.sock:close()
    restore_env(saved)
    if dir then
      os.remove(rx.address)
      os.remove(dir)
      dir = nil
    end
  end)
  return rx
end

for _, kind in ipairs({ "path", "abstract" }) do
  local title = ("clua notify calls to %s %s NOTIFY_SOCKET")
    :format(kind == "path" and "a" or "an", kind)
  describe(title, function()
    local rx = use_receiver(kind, true)

    -- The one datagram a call sent; asserts no second one follows.
    local function sent()
      local got = rx.sock:recv(2000)
      assert.is_not_nil(got, "nothing was sent")
      assert.is_nil(rx.sock:recv(0), "more than one datagram was sent")
      return got
    end

    -- Calls f(...), which must return true, and asserts the one datagram
    -- it sent.
    local function sends(want, f, ...)
      assert.is_true(f(...))
      assert.equal(want, sent())
    end

    it("notify sends the state unchanged", function()
      sends("READY=1", clua.notify, "READY=1")
      sends("STATUS=a b\nERRNO=2\n", clua.notify, "STATUS=a b\nERRNO=2\n")
      sends("EXTEND_TIMEOUT_USEC=5000000", clua.notify, "EXTEND_TIMEOUT_USEC=5000000")
    end)

    it("notify sends a state of exactly 4096 bytes", function()
      local state = "STATUS=" .. ("x"):rep(4096 - 7)
      sends(state, clua.notify, state)
    end)

    it("notify_ready sends READY=1, with a STATUS= line when given one", function()
      sends("READY=1", clua.notify_ready)
      sends("READY=1", clua.notify_ready, nil)
      sends("READY=1\nSTATUS=up, 3 screens", clua.notify_ready, "up, 3 screens")
      sends("READY=1\nSTATUS=up STOPPING=1", clua.notify_ready, "up\nSTOPPING=1")
    end)

    it("notify_reloading sends RELOADING=1 and the CLOCK_MONOTONIC time", function()
      local before = math.floor(testkit.now("monotonic") * 1e6) - 1000
      assert.is_true(clua.notify_reloading())
      local after = math.ceil(testkit.now("monotonic") * 1e6) + 1000
      local usec = sent():match("^RELOADING=1\nMONOTONIC_USEC=(%d+)$")
      assert.is_not_nil(usec)
      usec = tonumber(usec)
      assert.is_true(usec >= before and usec <= after,
        ("MONOTONIC_USEC=%d not within [%d, %d]"):format(usec, before, after))
    end)

    it("notify_stopping sends STOPPING=1", function()
      sends("STOPPING=1", clua.notify_stopping)
    end)

    it("notify_status sends STATUS=text", function()
      sends("STATUS=fetching mail: 3 of 10", clua.notify_status, "fetching mail: 3 of 10")
      sends("STATUS=", clua.notify_status, "")
    end)

    it("notify_watchdog sends WATCHDOG=1", function()
      sends("WATCHDOG=1", clua.notify_watchdog)
    end)

    it("leaves NOTIFY_SOCKET set after every call", function()
      clua.notify("READY=1"); sent()
      clua.notify_ready("x"); sent()
      clua.notify_reloading(); sent()
      clua.notify_stopping(); sent()
      clua.notify_status("x"); sent()
      clua.notify_watchdog(); sent()
      clua.watchdog_usec()
      assert.equal(rx.address, os.getenv("NOTIFY_SOCKET"))
    end)
  end)
end

describe("clua.notify_status sanitising", function()
  local rx = use_receiver("abstract", true)

  local function status_of(text)
    assert.is_true(clua.notify_status(text))
    local got = assert(rx.sock:recv(2000), "nothing was sent")
    assert.is_nil(rx.sock:recv(0), "more than one datagram was sent")
    return got
  end

  it("turns an injection attempt into one STATUS= line with spaces", function()
    local got = status_of("ok\nSTOPPING=1\nWATCHDOG_USEC=1")
    assert.equal("STATUS=ok STOPPING=1 WATCHDOG_USEC=1", got)
    assert.is_nil(got:find("[\r\n]"))
    assert.equal("STATUS=ok  MAINPID=1", status_of("ok\r\nMAINPID=1"))
    assert.equal("STATUS=ok READY=1", status_of("ok\rREADY=1"))
  end)

  it("replaces every control character by a space", function()
    assert.equal("STATUS=a b c d e f g", status_of("a\tb\0c\27d\127e\194\133f\194\159g"))
  end)

  it("keeps valid UTF-8 and replaces invalid UTF-8 with U+FFFD", function()
    local fffd = "\239\191\189"
    assert.equal("STATUS=caf\195\169 \226\130\172 \240\159\152\128",
      status_of("caf\195\169 \226\130\172 \240\159\152\128"))
    assert.equal("STATUS=a" .. fffd .. "b", status_of("a\255b"))
    -- overlong "/", a UTF-16 surrogate, past U+10FFFF, a lone continuation
    for _, bad in ipairs({ "\192\175", "\237\160\128", "\244\144\128\128", "\128" }) do
      local got = status_of("x" .. bad .. "y")
      assert.is_true(is_utf8(got), ("%q"):format(got))
      assert.equal("STATUS=x" .. fffd:rep(#bad) .. "y", got)
    end
    -- a sequence cut short by the end of the text
    assert.equal("STATUS=x" .. fffd .. fffd, status_of("x\226\130"))
  end)

  it("replaces every Unicode noncharacter with one U+FFFD, as systemd refuses them", function()
    local fffd = "\239\191\189"
    local nonchars = {}
    for cp = 0xFDD0, 0xFDEF do nonchars[#nonchars + 1] = cp end
    for plane = 0, 16 do
      nonchars[#nonchars + 1] = plane * 0x10000 + 0xFFFE
      nonchars[#nonchars + 1] = plane * 0x10000 + 0xFFFF
    end
    assert.equal(66, #nonchars)
    for _, cp in ipairs(nonchars) do
      assert.equal("STATUS=x" .. fffd .. "y", status_of("x" .. utf8_char(cp) .. "y"),
        ("U+%04X"):format(cp))
    end
    -- their neighbours are characters, and stay
    for _, cp in ipairs({ 0xFDCF, 0xFDF0, 0xFFFD, 0x1FFFD, 0x10000, 0x10FFFD }) do
      local c = utf8_char(cp)
      assert.equal("STATUS=x" .. c .. "y", status_of("x" .. c .. "y"), ("U+%04X"):format(cp))
    end
  end)

  it("cuts a long text to fit one 4096-byte datagram", function()
    local got = status_of(("x"):rep(10000))
    assert.equal("STATUS=" .. ("x"):rep(4096 - 7), got)
  end)

  it("cuts a long text at a character boundary", function()
    local e = "\195\169" -- é, two bytes: 4089 bytes of room hold 2044 of them
    local got = status_of(e:rep(3000))
    assert.equal("STATUS=" .. e:rep(2044), got)
    assert.is_true(is_utf8(got))
    local fffd = "\239\191\189" -- 1 invalid byte grows to 3
    got = status_of(("\255"):rep(3000))
    assert.equal("STATUS=" .. fffd:rep(1363), got)
  end)

  it("cuts notify_ready's status so READY=1 still arrives", function()
    assert.is_true(clua.notify_ready(("y"):rep(5000)))
    local got = assert(rx.sock:recv(2000))
    assert.equal("READY=1\nSTATUS=" .. ("y"):rep(4096 - 15), got)
  end)
end)

describe("clua notify outside a service manager", function()
  local rx = use_receiver("abstract", false)

  it("returns false from every call, sends nothing, changes nothing", function()
    testkit.setenv("WATCHDOG_USEC", "2000000")
    assert.is_false(clua.notify("READY=1"))
    assert.is_false(clua.notify_ready())
    assert.is_false(clua.notify_ready("up"))
    assert.is_false(clua.notify_reloading())
    assert.is_false(clua.notify_stopping())
    assert.is_false(clua.notify_status("idle"))
    assert.is_false(clua.notify_watchdog())
    assert.is_nil(rx.sock:recv(100))
    assert.is_nil(os.getenv("NOTIFY_SOCKET"))
    assert.equal("2000000", os.getenv("WATCHDOG_USEC"))
  end)

  it("returns false from 1000 calls within 2 s", function()
    -- With NOTIFY_SOCKET unset there is nothing to connect to or wait on.
    local start = testkit.now("monotonic")
    for _ = 1, 1000 do
      assert.is_false(clua.notify_watchdog())
    end
    local limit = os.getenv("CLUA_UNDER_VALGRIND") and 20 or 2
    assert.is_true(testkit.now("monotonic") - start < limit)
  end)
end)

describe("clua notify failures", function()
  local saved

  before_each(function() saved = save_env() end)
  after_each(function() restore_env(saved) end)

  it("returns nil, message, errno when the socket does not exist", function()
    local dir = mktemp_dir()
    testkit.setenv("NOTIFY_SOCKET", dir .. "/missing")
    local ok, msg, err = clua.notify_watchdog()
    os.remove(dir)
    assert.is_nil(ok)
    assert.equal("string", type(msg))
    assert.truthy(msg:find("NOTIFY_SOCKET", 1, true))
    assert.equal(2, err) -- ENOENT
  end)

  it("returns nil, message, errno for an address it cannot send to", function()
    for _, case in ipairs({
      { "vsock:2:1234", 97 },         -- EAFNOSUPPORT: not a unix socket
      { "relative/path", 22 },        -- EINVAL
      { "", 22 },
      { "@", 22 },
      { "/" .. ("x"):rep(107), 36 },  -- ENAMETOOLONG: no room for the NUL
    }) do
      testkit.setenv("NOTIFY_SOCKET", case[1])
      local ok, msg, err = clua.notify_watchdog()
      assert.is_nil(ok, case[1])
      assert.truthy(msg:find("NOTIFY_SOCKET", 1, true), msg)
      assert.equal(case[2], err, case[1])
    end
  end)
end)

-- A service manager that stops reading its notify socket must never stall
-- the caller (Awesome's main loop): the socket's queue fills after a few
-- datagrams (net.unix.max_dgram_qlen, 10 by default) and each call after
-- that returns nil, message, EAGAIN at once.
describe("clua notify with a socket nobody reads", function()
  local rx = use_receiver("abstract", true)
  local EAGAIN = 11

  -- Should a call block after all, SIGALRM breaks it out with EINTR every
  -- 2 s, so the spec fails instead of hanging.
  before_each(function() testkit.deadline(2) end)
  after_each(function() testkit.deadline(nil) end)

  it("returns from 10,000 notify_watchdog() calls in under a second, each true or EAGAIN",
    function()
      local sent, full = 0, 0
      local start = testkit.now("monotonic")
      for i = 1, 10000 do
        local ok, msg, err = clua.notify_watchdog()
        if ok == true then
          sent = sent + 1
        elseif ok == nil and err == EAGAIN then
          full = full + 1
        else
          error(("call %d returned %s, %s, %s"):format(i, tostring(ok), tostring(msg),
            tostring(err)))
        end
      end
      local took = testkit.now("monotonic") - start
      assert.is_true(sent >= 1, "no call got through")
      assert.is_true(full >= 1, "the socket never filled up")
      assert.equal(10000, sent + full)
      -- Natively about 15 ms.  valgrind runs the interpreter's own work
      -- (building each error message) some 50 times slower, the sends
      -- themselves not: 0.3 to 0.9 s there, so it gets more room; a
      -- blocked call would take for ever either way.
      local limit = os.getenv("CLUA_UNDER_VALGRIND") and 5 or 1
      assert.is_true(took < limit, ("10,000 calls took %.3f s"):format(took))
    end)

  it("says EAGAIN with a message naming NOTIFY_SOCKET, and sends again once the manager reads",
    function()
      local ok, msg, err
      for _ = 1, 1000 do
        ok, msg, err = clua.notify_watchdog()
        if ok == nil then break end
      end
      assert.is_nil(ok)
      assert.equal(EAGAIN, err)
      assert.truthy(msg:find("NOTIFY_SOCKET", 1, true), msg)
      -- every call kind, not only the heartbeat
      assert.equal(EAGAIN, select(3, clua.notify_status("x")))
      assert.equal(EAGAIN, select(3, clua.notify_ready("x")))
      assert.equal(EAGAIN, select(3, clua.notify("READY=1")))
      -- the manager reads again: the queue drains, sending works again
      while rx.sock:recv(0) do end
      assert.is_true(clua.notify_status("back"))
      assert.equal("STATUS=back", rx.sock:recv(1000))
    end)
end)

describe("clua notify's socket", function()
  local rx = use_receiver("abstract", true)

  -- The datagram unix sockets of this process that are bound to no
  -- address, as a list of fds: the receivers are bound, notify's sending
  -- socket is not. (Only datagram ones: a stream socket the process may
  -- have inherited, say from whatever started `make check`, is not ours.)
  local function unbound_sockets()
    local unbound = {}
    local f = assert(io.open("/proc/net/unix"))
    for line in f:lines() do
      local kind, inode, path = line:match("^%S+: %S+ %S+ %S+ (%x+) %S+ (%d+) ?(.*)$")
      if inode and path == "" and tonumber(kind, 16) == 2 then unbound[inode] = true end
    end
    f:close()
    local fds = {}
    for fd, target in pairs(testkit.fds()) do
      local inode = target:match("^socket:%[(%d+)%]$")
      if inode and unbound[inode] then fds[#fds + 1] = fd end
    end
    table.sort(fds)
    return fds
  end

  local function is_cloexec(fd)
    local f = assert(io.open("/proc/self/fdinfo/" .. fd))
    local flags = tonumber(f:read("*a"):match("flags:%s*(%d+)"), 8)
    f:close()
    return math.floor(flags / 524288) % 2 == 1 -- O_CLOEXEC, 02000000
  end

  it("is one close-on-exec socket, kept across calls and NOTIFY_SOCKET changes", function()
    assert.is_true(clua.notify_watchdog())
    assert.equal("WATCHDOG=1", rx.sock:recv(1000))
    local fds = unbound_sockets()
    assert.equal(1, #fds)
    assert.is_true(is_cloexec(fds[1]), "not close-on-exec: Awesome's restart would leak it")
    local other = abstract_name() .. "-other"
    local rx2 = assert(testkit.dgram_listen(other))
    testkit.setenv("NOTIFY_SOCKET", other)
    for _ = 1, 1000 do
      assert.is_true(clua.notify_status("moved"))
      assert.equal("STATUS=moved", rx2:recv(1000))
    end
    rx2:close()
    assert.is_nil(rx.sock:recv(0), "a datagram went to the old address")
    assert.same(fds, unbound_sockets())
  end)

  it("works in a forked child that closed it and got its number back for a pipe", function()
    assert.is_true(clua.notify_watchdog())
    assert.equal("WATCHDOG=1", rx.sock:recv(1000))
    local fd = unbound_sockets()[1]
    local pid = assert(testkit.fork())
    if pid == 0 then
      -- The child, as a daemon that closes every fd and opens its own.
      local ok = pcall(function()
        local r, w = testkit.pipe()
        assert(testkit.dup2(w, fd))
        assert(clua.notify_status("from the child") == true)
        assert(not testkit.poll_readable(r, 0), "notify wrote into the pipe")
      end)
      testkit.exit_now(ok and 0 or 1)
    end
    local reaped, how, code
    for _ = 1, 500 do
      reaped, how, code = clua.reap(pid)
      if reaped then break end
      testkit.sleep(0.02)
    end
    assert.equal(pid, reaped)
    assert.same({ "exited", 0 }, { how, code })
    assert.equal("STATUS=from the child", rx.sock:recv(1000))
    -- the parent's socket is untouched
    assert.is_true(clua.notify_watchdog())
    assert.equal("WATCHDOG=1", rx.sock:recv(1000))
    assert.same({ fd }, unbound_sockets())
  end)
end)

describe("clua.watchdog_usec", function()
  local saved

  before_each(function()
    saved = save_env()
    testkit.setenv("WATCHDOG_USEC", nil)
    testkit.setenv("WATCHDOG_PID", nil)
  end)
  after_each(function() restore_env(saved) end)

  it("returns nil when no watchdog is set", function()
    assert.is_nil(clua.watchdog_usec())
    assert.equal(1, select("#", clua.watchdog_usec()))
  end)

  it("returns WATCHDOG_USEC when it is meant for this process", function()
    testkit.setenv("WATCHDOG_USEC", "2000000")
    assert.equal(2000000, clua.watchdog_usec())
    testkit.setenv("WATCHDOG_PID", tostring(testkit.getpid()))
    assert.equal(2000000, clua.watchdog_usec())
    assert.equal("2000000", os.getenv("WATCHDOG_USEC"))
    assert.equal(tostring(testkit.getpid()), os.getenv("WATCHDOG_PID"))
  end)

  it("returns nil when WATCHDOG_PID names another process", function()
    testkit.setenv("WATCHDOG_USEC", "2000000")
    testkit.setenv("WATCHDOG_PID", tostring(testkit.getpid() + 1))
    assert.is_nil(clua.watchdog_usec())
  end)

  it("returns nil, message, EINVAL for a malformed WATCHDOG_USEC", function()
    for _, bad in ipairs({ "abc", "0", "12x", "" }) do
      testkit.setenv("WATCHDOG_USEC", bad)
      local v, msg, err = clua.watchdog_usec()
      assert.is_nil(v, bad)
      assert.equal("string", type(msg))
      assert.equal(22, err)
    end
  end)
end)

describe("clua notify argument checks", function()
  local saved

  before_each(function()
    saved = save_env()
    testkit.setenv("NOTIFY_SOCKET", nil)
  end)
  after_each(function() restore_env(saved) end)

  -- Calls clua.<fname>(...) from a call site naming it, as user code
  -- does (a bare pcall(clua.notify) leaves Lua 5.2 and LuaJIT no name).
  local load_string = loadstring or load
  local function raises(fname, argn, ...)
    local call = assert(load_string("local clua = ...\n"
      .. "return function(...) return (clua." .. fname .. "(...)) end"))(clua)
    local ok, msg = pcall(call, ...)
    assert.is_false(ok, fname .. " accepted a bad argument")
    assert.is_true(names(msg, fname, argn), tostring(msg))
    return msg
  end

  it("notify refuses what is not KEY=VALUE lines", function()
    for _, bad in ipairs({ "", "READY", "ready=1", "=1", "READY =1",
        "READY=1\n\n", "READY=1\nhello", "\nREADY=1", "STATUS=a\rSTOPPING=1",
        "READY=1\r\n" }) do
      raises("notify", 1, bad)
    end
  end)

  it("notify refuses a NUL byte", function()
    raises("notify", 1, "READY=1\0STOPPING=1")
  end)

  it("notify refuses more than 4096 bytes", function()
    local msg = raises("notify", 1, "STATUS=" .. ("x"):rep(4096 - 7 + 1))
    assert.truthy(msg:find("4096", 1, true))
  end)

  it("refuses arguments of the wrong type", function()
    raises("notify", 1)
    raises("notify", 1, 1)
    raises("notify", 1, nil)
    raises("notify", 1, {})
    raises("notify_status", 1)
    raises("notify_status", 1, 42)
    raises("notify_status", 1, true)
    raises("notify_ready", 1, 42)
    raises("notify_ready", 1, false)
  end)

  it("refuses surplus arguments", function()
    raises("notify", 2, "READY=1", "x")
    raises("notify_ready", 2, "up", "x")
    raises("notify_status", 2, "up", "x")
    raises("notify_reloading", 1, "x")
    raises("notify_stopping", 1, "x")
    raises("notify_watchdog", 1, "x")
    raises("watchdog_usec", 1, "x")
  end)
end)

describe("clua notify module", function()
  it("adds no globals", checks.adds_no_globals(function(fresh)
    fresh.notify_watchdog()
    fresh.watchdog_usec()
  end))

  it("exposes every notify call as a function", function()
    for _, name in ipairs({ "notify", "notify_ready", "notify_reloading",
        "notify_stopping", "notify_status", "notify_watchdog",
        "watchdog_usec" }) do
      assert.equal("function", type(clua[name]), name)
    end
  end)
end)
