-- The session command session/awesome-session at its edges, each case with
-- a session of its own (a fresh systemd --user manager, Xvfb, Awesome as
-- the shipped awesome.service): a crash while rc.lua runs, Awesome failing
-- for good, a second session during the first one's start-up, a logout by
-- signal, a manager that does not answer, and the X session's environment
-- handed over and put back.  The session that runs through every feature
-- is in session_spec.lua.
local harness = require("support.awesome")
local systemd = require("support.systemd")
local shell = require("support.shell")
local testkit = require("testkit")
local quote, run = shell.quote, shell.run

local root = harness.root
local script = root .. "/session/awesome-session"
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")

-- Waits for f() to return a true value; fails naming `what` after `timeout` s.
local function await(timeout, what, f)
  local v = harness.wait_until(timeout, f)
  assert(v, ("timed out after %g s waiting for %s"):format(timeout, what))
  return v
end

-- A unit property reaching a value; fails naming it after `timeout` s.
local function await_unit(mgr, unit, prop, want, timeout)
  local ok, last = mgr:wait_for(unit, prop, want, timeout)
  assert(ok, ("timed out after %g s waiting for %s %s (last: %s)"):format(
    timeout, unit, prop, tostring(last)))
  return last
end

-- The values of a NUL-separated environment (`env -0`, /proc/PID/environ).
local function parse_env(text)
  local env = {}
  for entry in (text or ""):gmatch("([^%z]+)%z") do
    local k, v = entry:match("^([^=]+)=(.*)$")
    if k then env[k] = v end
  end
  return env
end

local function manager_env(mgr)
  local ok, out = mgr:systemctl("show-environment")
  assert(ok, out)
  return out
end

-- What each test needs: a machine that runs the peers, and a fresh manager.
local why
local function peers()
  if why == nil then
    local ok, msg = harness.available()
    if not ok then why = "needs Awesome under Xvfb: " .. msg return false end
    ok, msg = systemd.available()
    if not ok then why = "needs a systemd user manager: " .. msg return false end
    why = false
  end
  if why then return false end
  return true
end

describe("awesome-session at the edges of a session #integration", function()
  local mgr, wm, cleanups

  before_each(function()
    cleanups = {}
    if not peers() then return end
    local msg
    mgr, msg = systemd.start()
    if not mgr then why = "needs a systemd user manager: " .. msg return end
    -- As after a login with dbus-user-session: the user bus's socket is up,
    -- and its ExecStartPost= has put DBUS_SESSION_BUS_ADDRESS in the
    -- manager's environment (started later, during a session, it would
    -- change that environment behind the session command's back).
    if run("test -e /usr/lib/systemd/user/dbus.socket") then
      assert(mgr:systemctl("start", "dbus.socket"))
    end
  end)

  after_each(function()
    for i = #cleanups, 1, -1 do pcall(cleanups[i]) end
    if wm then wm:stop() end
    if mgr then mgr:stop() end
    wm, mgr = nil, nil
  end)

  local function skip()
    if why then pending(why) return true end
    return false
  end

  local function state(unit) return mgr:show(unit, "ActiveState") end

  -- The session command is still waiting (no exit status yet, running).
  local function command_waits()
    return harness.alive(wm.session_pid)
      and shell.read_file(wm.dir .. "/session-command.rc") == nil
  end

  it("keeps the session through a crash while rc.lua runs (before READY=1): Awesome comes back, "
    .. "NRestarts=1, the command waits on", function()
    if skip() then return end
    -- The first run tells the test it runs, then takes 4 s before setup's
    -- READY=1 goes out (rc.lua returning); the runs after that are quick.
    local rc = harness.rc([[
      require("clua.awesome").setup { stall = false }
      local dir = awesome.conffile:gsub("rc%.lua$", "")
      local f = io.open(dir .. "runs", "a") f:write("ran\n") f:close()
      if #io.open(dir .. "runs"):read("a") == 4 then
          f = io.open(dir .. "rc-running", "w") f:write("yes\n") f:close()
          os.execute("sleep 4")
      end
    ]])
    local dir = rc:match("^(.*)/rc%.lua$")
    local err
    wm, err = harness.start { rc = rc, manager = mgr, session = true, wait = false }
    assert(wm, err)
    await(20, "rc.lua's first run", function() return shell.read_file(dir .. "/rc-running") end)
    local first = tonumber(mgr:show("awesome.service", "MainPID"))
    assert.equal("activating", state("awesome.service"))
    -- Meanwhile an application's scope, PartOf= the session as clua-scope
    -- makes it, starts at once: nothing in the session's units orders a
    -- launch after Awesome's READY=1.
    local t0 = testkit.now("monotonic")
    local ok, out = run(mgr:envprefix() .. "timeout 10 systemd-run --user --scope --quiet "
      .. "--slice=app.slice -p PartOf=graphical-session.target true")
    local took = testkit.now("monotonic") - t0
    assert.is_true(ok, out)
    assert.is_true(took < 2, ("a scope started %.1f s after it was asked for"):format(took))
    assert.is_true(testkit.kill(first, 11))
    await_unit(mgr, "awesome.service", "MainPID", function(v)
      local p = tonumber(v)
      return p and p ~= 0 and p ~= first
    end, 15)
    await_unit(mgr, "awesome.service", "ActiveState", "active", 20)
    assert(wm:wait_ready())
    assert.equal("1", mgr:show("awesome.service", "NRestarts"))
    assert.equal("active", state("awesome-session.target"))
    assert.equal("active", state("graphical-session.target"))
    assert.is_true(command_waits(), "the session command is still waiting")
    -- And it still ends the session when Awesome quits.
    wm:try_client("awesome.quit()", 3)
    local code, log = wm:session_exit(10)
    assert.equal(0, code, log .. wm:logtail(40))
    assert.equal("", log)
  end)

  it("ends the session when Awesome fails for good, and runs plain awesome instead, saying why",
  function()
    if skip() then return end
    -- awesome.service's ExecStart= fails at once: five restarts, then its
    -- start limit.  A stand-in `awesome` on the X session's PATH tells the
    -- test that plain awesome ran, in the command's own process.
    local bin = shell.mktemp_dir("clua-bin")
    cleanups[#cleanups + 1] = function() run("rm -rf " .. quote(bin)) end
    shell.write_file(bin .. "/awesome", "#!/bin/sh\nreadlink /proc/$$/fd/9 >"
      .. quote(bin .. "/fd9") .. "\necho $$ >" .. quote(bin .. "/pid") .. "\n")
    assert(run("chmod +x " .. quote(bin .. "/awesome")))
    local before = manager_env(mgr)
    local err
    wm, err = harness.start { rc = harness.rc(""), manager = mgr, session = true, wait = false,
      unit_extra = { "ExecStart=", "ExecStart=/bin/sh -c 'exit 3'" },
      session_env = { PATH = bin .. ":" .. tools .. ":/usr/local/bin:/usr/bin:/bin" } }
    assert(wm, err)
    local pid = harness.wait_until(30, function()
      return tonumber(shell.read_file(bin .. "/pid") or "")
    end)
    assert(pid, "timed out after 30 s waiting for plain awesome; the session command said:\n"
      .. (shell.read_file(wm.dir .. "/session-command.log") or "") .. wm:logtail())
    assert.equal(wm.session_pid, pid)
    -- without the session lock's descriptor
    assert.equal("", shell.read_file(bin .. "/fd9"))
    local code, log = wm:session_exit(5)
    assert.equal(0, code, log)
    log = log:gsub("\n$", "")
    assert.matches("^awesome%-session: awesome.service failed for good %(result: [%w-]+; see "
      .. "systemctl %-%-user status awesome.service%); starting awesome without systemd$", log)
    assert.equal("failed", state("awesome.service"))
    assert.equal("inactive", state("awesome-session.target"))
    assert.equal("inactive", state("graphical-session.target"))
    assert.equal(before, manager_env(mgr))
  end)

  it("refuses a second session started 0.1 s after the first, in one line, without touching "
    .. "the first one's environment", function()
    if skip() then return end
    local err
    wm, err = harness.start { rc = harness.rc('require("clua.awesome").setup {}'), manager = mgr,
      session = true, wait = false }
    assert(wm, err)
    testkit.sleep(0.1)
    local ok, out, code = run("timeout 10 " .. wm:session_env { DISPLAY = ":4242" } .. "sh "
      .. quote(script))
    assert.is_false(ok)
    assert.equal(1, code, out)
    assert.matches("^awesome%-session: a graphical session is already running %([^\n]+%)$", out)
    await_unit(mgr, "awesome.service", "ActiveState", "active", 20)
    assert(wm:wait_ready())
    local env = "\n" .. manager_env(mgr) .. "\n"
    assert.matches("\nDISPLAY=" .. wm.display:gsub("%p", "%%%0") .. "\n", env)
    assert.not_matches(":4242", env)
    assert.is_true(command_waits(), "the first session command is still waiting")
    -- Once the first has ended, a session may start again.
    wm:try_client("awesome.quit()", 3)
    local rc, log = wm:session_exit(10)
    assert.equal(0, rc, log)
  end)

  it("is not blocked by a session whose command was killed: it stops that one and starts its own",
  function()
    if skip() then return end
    local rc = 'require("clua.awesome").setup {}'
    local first = assert(harness.start { rc = harness.rc(rc), manager = mgr, session = true })
    cleanups[#cleanups + 1] = function() first:stop() end
    assert.is_true(testkit.kill(first.session_pid, 9))
    await(5, "the killed command's exit status", function()
      return shell.read_file(first.dir .. "/session-command.rc")
    end)
    assert.equal("active", state("awesome-session.target"))
    local err
    wm, err = harness.start { rc = harness.rc(rc), manager = mgr, session = true }
    assert(wm, err)
    local env = "\n" .. manager_env(mgr) .. "\n"
    assert.is_truthy(env:find("\nDISPLAY=" .. wm.display .. "\n", 1, true), env)
    assert.equal("active", state("graphical-session.target"))
    wm:try_client("awesome.quit()", 3)
    local code, log = wm:session_exit(10)
    assert.equal(0, code, log .. wm:logtail(40))
    assert.equal("awesome-session: stopping awesome-session.target, left by an earlier session\n",
      log)
  end)

  for _, case in ipairs {
    { signal = "HUP", number = 1, to = "process group", how = "as xinit ends its client" },
    { signal = "TERM", number = 15, to = "process", how = "as a display manager ends the session" },
  } do
    it(("returns 0 on SIG%s to its %s (%s): the targets stopped, the environment as before")
      :format(case.signal, case.to, case.how), function()
      if skip() then return end
      local before = manager_env(mgr)
      local err
      wm, err = harness.start { rc = harness.rc('require("clua.awesome").setup {}'),
        manager = mgr, session = true }
      assert(wm, err)
      assert.equal("active", state("graphical-session.target"))
      local target = case.to == "process group" and -wm.session_pid or wm.session_pid
      assert.is_true(testkit.kill(target, case.number))
      local code, log = wm:session_exit(15)
      assert.equal(0, code, log)
      assert.equal("", log)
      for _, unit in ipairs { "awesome-session.target", "graphical-session.target",
                              "awesome.service" } do
        assert.equal("inactive", state(unit), unit)
      end
      assert.equal(before, manager_env(mgr))
    end)
  end

  it("runs plain awesome within 5 s, saying why, when the user manager does not answer", function()
    if skip() then return end
    local x = assert(harness.start { rc = harness.rc(""), display_only = true })
    cleanups[#cleanups + 1] = function() x:stop() end
    harness.install_session_units(mgr)
    assert(mgr:systemctl("daemon-reload"))
    local before = manager_env(mgr)
    local bin = shell.mktemp_dir("clua-bin")
    cleanups[#cleanups + 1] = function() run("rm -rf " .. quote(bin)) end
    shell.write_file(bin .. "/awesome", "#!/bin/sh\necho $$ >" .. quote(bin .. "/pid")
      .. "\nexec sleep 30\n")
    assert(run("chmod +x " .. quote(bin .. "/awesome")))
    assert.is_true(testkit.kill(mgr.pid, 19))   -- SIGSTOP
    cleanups[#cleanups + 1] = function() testkit.kill(mgr.pid, 18) end
    local started = testkit.now("monotonic")
    local _, pid = run(("env -u DBUS_SESSION_BUS_ADDRESS DISPLAY=%s XDG_RUNTIME_DIR=%s HOME=%s "
      .. "PATH=%s sh %s >/dev/null 2>%s & echo $!"):format(quote(x.display),
      quote(mgr.env.XDG_RUNTIME_DIR), quote(mgr.env.HOME),
      quote(bin .. ":" .. tools .. ":/usr/bin:/bin"), quote(script), quote(bin .. "/err")))
    pid = tonumber(pid)
    cleanups[#cleanups + 1] = function() testkit.kill(pid, 9) end
    local ran = await(10, "plain awesome", function()
      return tonumber(shell.read_file(bin .. "/pid") or "")
    end)
    local took = testkit.now("monotonic") - started
    assert.equal(pid, ran)
    assert.is_true(took < 5, ("plain awesome ran after %.1f s"):format(took))
    assert.equal("awesome-session: the systemd user manager did not answer within 3 s; "
      .. "starting awesome without systemd\n", shell.read_file(bin .. "/err"))
    testkit.kill(mgr.pid, 18)   -- SIGCONT: it touched nothing
    assert.equal(before, manager_env(mgr))
  end)

  it("hands the X session's whole environment to Awesome, its programs and the session's services, "
    .. "and puts the manager's environment back as it was", function()
    if skip() then return end
    local home = mgr.env.HOME
    -- Before the session: a value from environment.d, and one with a tab
    -- and quotes set by hand; the session changes both.
    assert(run("mkdir -p " .. quote(home .. "/.config/environment.d") .. " "
      .. quote(home .. "/bin")))
    shell.write_file(home .. "/.config/environment.d/60-clua-test.conf",
      "LANG=C.UTF-8\nCLUA_ENVD=from environment.d\n")
    assert(mgr:systemctl("daemon-reload"))
    mgr:set_environment { CLUA_OLD = "it's\t\"old\" \\ $x `y` \\123 \1 \127 é ~\n" }
    local before = manager_env(mgr)
    assert.is_truthy(("\n" .. before .. "\n"):find("\nLANG=C.UTF-8\n", 1, true), before)
    local dir = shell.mktemp_dir("clua-env")
    cleanups[#cleanups + 1] = function() run("rm -rf " .. quote(dir)) end
    -- A program in ~/bin, and a service of the graphical session: each
    -- writes down the environment it got.
    shell.write_file(home .. "/bin/clua-test-tool",
      "#!/bin/sh\nexec env -0 >" .. quote(dir .. "/tool.env") .. "\n")
    assert(run("chmod +x " .. quote(home .. "/bin/clua-test-tool")))
    mgr:install_unit("clua-test-env.service", ([[
[Unit]
PartOf=graphical-session.target
After=graphical-session.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/env -0
StandardOutput=truncate:%s/service.env
[Install]
WantedBy=graphical-session.target
]]):format(dir))
    assert(mgr:systemctl("enable", "clua-test-env.service"))
    local path = home .. "/bin:" .. tools .. ":/usr/local/bin:/usr/bin:/bin"
    local session = {
      PATH = path, LANG = "de_DE.UTF-8", XMODIFIERS = "@im=ibus", FOO = "a b\nc",
      CLUA_OLD = "new", CLUA_ODD = "it's \"q\" $x \\ `y` \t",
      -- not UTF-8: the manager refuses it, and takes the others
      CLUA_BAD = "\255",
      -- names the session command uses for its own variables
      target = "the user's own", status = "mine",
      -- not for the manager: a shell's and a process's own
      OLDPWD = "/somewhere", SHLVL = "7", JOURNAL_STREAM = "8:1234", TERM = "linux",
    }
    local err
    wm, err = harness.start { rc = harness.rc('require("clua.awesome").setup {}'), manager = mgr,
      session = true, session_env = session }
    assert(wm, err)
    local want = { "PATH", "LANG", "XMODIFIERS", "FOO", "CLUA_OLD", "CLUA_ODD", "target", "status" }
    -- Awesome itself.
    for _, k in ipairs(want) do
      assert.equal(session[k], wm:client(("return os.getenv(%q)"):format(k)), k .. " in Awesome")
    end
    -- A program it starts, found on the session's PATH.
    wm:client('require("awful").spawn("clua-test-tool")')
    local tool = parse_env(await(5, "the program's environment", function()
      return shell.read_file(dir .. "/tool.env")
    end))
    -- A service of the session.
    await_unit(mgr, "clua-test-env.service", "ActiveState", "active", 10)
    local service = parse_env(shell.read_file(dir .. "/service.env"))
    for _, k in ipairs(want) do
      assert.equal(session[k], tool[k], k .. " in a program Awesome started")
      assert.equal(session[k], service[k], k .. " in a service of the session")
    end
    -- What is the shell's or the process's own stays as the manager had it.
    local function line(env, k) return ("\n" .. env .. "\n"):match("\n(" .. k .. "=[^\n]*)\n") end
    local during = manager_env(mgr)
    for _, k in ipairs { "OLDPWD", "SHLVL", "JOURNAL_STREAM", "TERM", "PWD" } do
      assert.equal(line(before, k), line(during, k), k .. " passed to the manager")
    end
    assert.is_nil(line(during, "CLUA_BAD"))
    wm:try_client("awesome.quit()", 3)
    local code, log = wm:session_exit(10)
    assert.equal(0, code, log .. wm:logtail(40))
    assert.equal("awesome-session: the user manager refused CLUA_BAD (not UTF-8?); "
      .. "not handed over\n", log)
    assert.equal(before, manager_env(mgr))
  end)
end)
