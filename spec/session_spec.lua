-- The Awesome session (session/): its units as shipped, under a real
-- systemd --user manager, started by the session command the way
-- ~/.xsession would, with a real Awesome on Xvfb.  The tests of the main
-- block share one session and run in order: its start, what runs in it,
-- a watchdog restart, a reload, and its end.
local harness = require("support.awesome")
local systemd = require("support.systemd")
local shell = require("support.shell")
local testkit = require("testkit")
local quote, run = shell.quote, shell.run

local root = harness.root

describe("session/ unit files #integration", function()
  it("pass systemd-analyze --user verify without a warning", function()
    local dir = shell.mktemp_dir("clua-verify")
    -- verify looks up the man pages that Documentation= names.
    assert(run(("mkdir -p %s/man/man1 && cp %s/session/*.service %s/session/*.target %s/ "
      .. "&& cp %s/session/awesome-session.1 %s/tools/clua-scope.1 %s/man/man1/"):format(
      dir, root, root, dir, root, root, dir)))
    local ok, out = run(("cd %s && MANPATH=%s/man: XDG_RUNTIME_DIR=%s systemd-analyze --user "
      .. "verify ./awesome.service ./awesome-session.target ./awesome-session-shutdown.target "
      .. "./sleep.target")
      :format(dir, dir, dir))
    run("rm -rf " .. quote(dir))
    assert.is_true(ok, out)
    -- systemd before 254 has no RestartMode= (nor the failed state on a
    -- restart that it avoids): the one line it may print about it.
    local _, version = run("systemctl --version | head -n 1")
    if tonumber(version:match("^systemd (%d+)")) < 254 then
      out = out:gsub("[^\n]*: Unknown key '?RestartMode'? in section [^\n]*, ignoring%.\n?", "")
    end
    assert.equal("", out)
  end)
end)

describe("session/sleep.target under a real systemd user manager #integration", function()
  -- What clua.awesome does around a suspend, done by hand: `systemctl
  -- --user start sleep.target` before, `stop` after.  A user service
  -- WantedBy= it runs before the suspend, stays active during it, and is
  -- stopped (ExecStop=) after resume.
  it("stays active once started, with its services, until stopped", function()
    local mgr, why = systemd.start()
    if not mgr then return pending(why) end
    local ok, err = pcall(function()
      mgr:install_unit("sleep.target", assert(shell.read_file(root .. "/session/sleep.target")))
      mgr:install_unit("around-sleep.service", table.concat({
        "[Unit]", "Before=sleep.target", "StopWhenUnneeded=yes",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        "ExecStart=/bin/echo around-sleep start", "ExecStop=/bin/echo around-sleep stop",
        "[Install]", "WantedBy=sleep.target", "" }, "\n"))
      assert(mgr:systemctl("enable", "around-sleep.service"))
      assert(mgr:systemctl("start", "sleep.target"))
      -- Nothing requires it: with StopWhenUnneeded=yes the manager would
      -- stop it (and the service) at once; give it the time to.
      shell.sleep(0.5)
      assert.equal("active", mgr:show("sleep.target", "ActiveState"))
      assert.equal("active", mgr:show("around-sleep.service", "ActiveState"))
      assert.not_matches("around%-sleep stop", mgr:log())
      assert(mgr:systemctl("stop", "sleep.target"))
      assert(mgr:wait_for("around-sleep.service", "ActiveState", "inactive", 10))
      assert.equal("inactive", mgr:show("sleep.target", "ActiveState"))
      assert.matches("around%-sleep start\n.*around%-sleep stop", mgr:log())
    end)
    mgr:stop()
    if not ok then error(err, 0) end
  end)
end)

-- rc.lua of the session: the stall breaker off (the watchdog must act),
-- three tags, and a count of the times it ran in a file beside it.
local RC = [[
local awful = require("awful")
require("clua.awesome").setup { stall = false }
awful.screen.connect_for_each_screen(function(s)
    awful.tag({ "one", "two", "three" }, s, awful.layout.suit.tile)
end)
local path = awesome.conffile:gsub("rc%.lua$", "runs")
local f = io.open(path, "a")
f:write("ran\n")
f:close()
]]

-- The pids of processes whose command line contains `marker` (pgrep's
-- pattern "[s]leep 1", so that the shell running pgrep is not one).
local function pids_with(marker)
  local _, out = run("pgrep -f " .. quote("[" .. marker:sub(1, 1) .. "]" .. marker:sub(2)))
  local pids = {}
  for p in out:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

-- The unit whose cgroup holds process `pid` (name=systemd on cgroup v1,
-- the unified hierarchy on v2).
local function unit_of(pid)
  local text = shell.read_file("/proc/" .. pid .. "/cgroup") or ""
  return text:match(":name=systemd:[^\n]*/([^/\n]+)\n") or text:match("0::[^\n]*/([^/\n]+)\n")
end

describe("awesome-session under a real systemd user manager #integration", function()
  local mgr, wm, why, failed
  local dir                      -- a folder for this test's files
  local launched = {}            -- name -> pid awful.spawn returned

  setup(function()
    local ok, msg = harness.available()
    if not ok then why = "needs Awesome under Xvfb: " .. msg return end
    ok, msg = systemd.available()
    if not ok then why = "needs a systemd user manager: " .. msg return end
    mgr, msg = systemd.start()
    if not mgr then why = "needs a systemd user manager: " .. msg return end
    local rc, rcdir = harness.rc(RC)
    dir = rcdir
    -- A user service a package would ship for the graphical session,
    -- enabled the usual way, and an XDG autostart entry.
    mgr:install_unit("clua-test-session-service.service", ([[
[Unit]
Description=clua test: a service of the graphical session
PartOf=graphical-session.target
After=graphical-session.target
[Service]
ExecStart=/bin/sleep 1000
[Install]
WantedBy=graphical-session.target
]]))
    assert(mgr:systemctl("enable", "clua-test-session-service.service"))
    shell.write_file(dir .. "/autostart.sh",
      "#!/bin/sh\necho started >>" .. quote(dir .. "/autostarted") .. "\nexec sleep 1001\n")
    assert(run("chmod +x " .. quote(dir .. "/autostart.sh")
      .. " && mkdir -p " .. quote(mgr.env.HOME .. "/.config/autostart")))
    shell.write_file(mgr.env.HOME .. "/.config/autostart/clua-test.desktop",
      "[Desktop Entry]\nType=Application\nName=clua test\nExec=" .. dir .. "/autostart.sh\n")
    wm, msg = harness.start { rc = rc, manager = mgr, session = true,
      unit_extra = { "WatchdogSec=3" } }
    if not wm then failed = msg end
  end)

  teardown(function()
    if wm then wm:stop() end
    if mgr then mgr:stop() end
  end)

  -- A machine that cannot run the peers skips; a session that did not come
  -- up is a failure of every test that needs it.
  local function skip_unless_ready()
    if why then pending(why) return false end
    assert(not failed, failed)
    return true
  end

  local function state(unit) return mgr:show(unit, "ActiveState") end

  it("brings up graphical-session.target once Awesome is ready", function()
    if not skip_unless_ready() then return end
    assert.equal("active", state("awesome-session.target"))
    assert.is_true(mgr:wait_for("graphical-session.target", "ActiveState", "active", 5),
      "timed out after 5 s waiting for graphical-session.target to be active")
    assert.equal("active", state("graphical-session-pre.target"))
    -- (below the control group of this spec's own manager)
    assert.matches("/session%.slice/awesome%.service$", mgr:show("awesome.service", "ControlGroup"))
  end)

  it("hands the display environment to the user manager", function()
    if not skip_unless_ready() then return end
    local _, env = mgr:systemctl("show-environment")
    assert.matches("\nDISPLAY=" .. wm.display:gsub("%p", "%%%0") .. "\n", "\n" .. env .. "\n")
    assert.matches("\nXDG_CURRENT_DESKTOP=awesome\n", "\n" .. env .. "\n")
    assert.matches("\nXDG_SESSION_TYPE=x11\n", "\n" .. env .. "\n")
  end)

  it("starts the services of the graphical session and the XDG autostart entries, once", function()
    if not skip_unless_ready() then return end
    assert.is_true(mgr:wait_for("clua-test-session-service.service", "ActiveState", "active", 5),
      "timed out after 5 s waiting for the session's service to be active")
    assert.is_truthy(harness.wait_until(5, function()
      return shell.read_file(dir .. "/autostarted") == "started\n"
    end), "timed out after 5 s waiting for the autostart entry to run: "
      .. tostring(shell.read_file(dir .. "/autostarted")))
    testkit.sleep(1)
    assert.equal("started\n", shell.read_file(dir .. "/autostarted"))
  end)

  it("runs each application awful.spawn launches in a scope of its own, with the pid it returned",
  function()
    if not skip_unless_ready() then return end
    local out = wm:client([[
      local awful = require("awful")
      local s = screen[1]
      local pids = {}
      for i, prog in ipairs { "xeyes", "xclock", "xlogo" } do
          local pid = awful.spawn({ prog }, false)
          pids[#pids + 1] = prog .. "=" .. tostring(pid)
      end
      awful.spawn.with_shell("sleep 1002 &")
      return table.concat(pids, " ")
    ]])
    for name, pid in out:gmatch("(%w+)=(%d+)") do launched[name] = tonumber(pid) end
    for _, name in ipairs { "xeyes", "xclock", "xlogo" } do
      local pid = launched[name]
      assert.is_number(pid, out)
      -- The very pid: clua-scope exec's the program once it is in the scope.
      assert.is_truthy(harness.wait_until(5, function()
        return (shell.read_file("/proc/" .. pid .. "/comm") or "") == name .. "\n"
      end), "timed out after 5 s waiting for " .. name .. " to run as pid " .. pid)
      assert.matches("^app%-awesome%-" .. name .. "%-%x+%.scope$", unit_of(pid))
    end
    -- The background job of `with_shell("... &")` lives on in its scope.
    local sleeper = harness.wait_until(3, function() return pids_with("sleep 1002")[1] end)
    assert.is_number(sleeper, "timed out after 3 s waiting for with_shell's background job")
    launched.sleeper = sleeper
    assert.matches("^app%-awesome%-sleep%-%x+%.scope$", unit_of(sleeper))
    local _, units = mgr:systemctl("list-units", "--plain", "--no-legend", "app-awesome-*")
    local n = 0
    for _ in units:gmatch("app%-awesome%-[^%s]+%.scope") do n = n + 1 end
    assert.equal(4, n, units)
    -- The three windows, one on each tag.
    assert.is_truthy(harness.wait_until(10, function()
      return wm:client("return #client.get()") == 3
    end), "timed out after 10 s waiting for three windows to be managed")
    wm:client([=[
      local order = { xeyes = 1, xclock = 2, xlogo = 3 }
      for _, c in ipairs(client.get()) do
          c:move_to_tag(screen[1].tags[order[c.class:lower()]])
      end
    ]=])
  end)

  it("keeps startup notification, exit callbacks and Awesome's own error for a missing program",
  function()
    if not skip_unless_ready() then return end
    local out = wm:client([[
      local awful = require("awful")
      local pid, snid = awful.spawn({ "sleep", "1003" })
      clua_spec_exit = nil
      awesome.spawn({ "sh", "-c", "exit 3" }, false, false, false, false, function(reason, code)
          clua_spec_exit = reason .. " " .. code
      end)
      local missing = awful.spawn("clua-no-such-program")
      return tostring(pid) .. " " .. tostring(snid) .. "\n" .. tostring(missing)
    ]])
    local pid, snid, missing = out:match("^(%d+) (%S+)\n(.*)$")
    assert.is_string(snid, out)
    assert.is_truthy(harness.wait_until(5, function()
      return (shell.read_file("/proc/" .. pid .. "/comm") or "") == "sleep\n"
    end), "timed out after 5 s waiting for sleep to run as pid " .. pid)
    assert.matches("^app%-awesome%-sleep%-", unit_of(pid))
    local environ = "\0" .. (shell.read_file("/proc/" .. pid .. "/environ") or "")
    assert.is_truthy(environ:find("\0DESKTOP_STARTUP_ID=" .. snid .. "\0", 1, true),
      "DESKTOP_STARTUP_ID reaches the program")
    testkit.kill(tonumber(pid), 15)
    assert.is_truthy(harness.wait_until(5, function()
      return wm:client("return clua_spec_exit") == "exit 3"
    end), "timed out after 5 s waiting for the exit callback to get the code")
    -- What Awesome says of a program it cannot find, as without clua.
    assert.matches("^Failed to execute child process .*clua%-no%-such%-program", missing)
  end)

  it("gets 500 easy_async exit codes right while scoped applications run and orphans churn",
  function()
    if not skip_unless_ready() then return end
    local ok = wm:client([[
      local awful = require("awful")
      -- Orphans, adopted by Awesome (the subreaper) and reaped by it.
      awful.spawn.with_shell("for i in $(seq 300); do (sleep 0.05 &); done")
      clua_spec_codes = {}
      -- 50 launches a tick: 500 at once would hold the main loop longer
      -- than this unit's WatchdogSec=3.
      local i = 0
      require("gears").timer { timeout = 0.05, autostart = true, callback = function(t)
          for _ = 1, 50 do
              i = i + 1
              local n = i
              awful.spawn.easy_async({ "sh", "-c", "exit " .. (n % 256) }, function(_, _, _, code)
                  clua_spec_codes[n] = code
              end)
          end
          if i >= 500 then t:stop() end
      end }
      return true
    ]])
    assert.is_true(ok)
    assert.is_truthy(harness.wait_until(30, function()
      local count = "local n = 0 for _ in pairs(clua_spec_codes) do n = n + 1 end return n"
      return wm:client(count) == 500
    end), "timed out after 30 s waiting for 500 exit codes")
    assert.is_true(wm:client([[
      for i = 1, 500 do
          if clua_spec_codes[i] ~= i % 256 then return false end
      end
      return true
    ]]))
  end)

  it("loses nothing to a watchdog restart: the applications live on, each window back on its tag",
  function()
    if not skip_unless_ready() then return end
    local old = wm:pid()
    -- Hang the main loop; the stall breaker is off, so the watchdog acts.
    wm:try_client("while true do end", 2)
    assert.is_truthy(mgr:wait_for("awesome.service", "Result", "watchdog", 10),
      "timed out after 10 s waiting for the watchdog to kill Awesome")
    assert.is_truthy(mgr:wait_for("awesome.service", "MainPID", function(v)
      local p = tonumber(v)
      return p and p ~= 0 and p ~= old
    end, 15), "timed out after 15 s waiting for a new Awesome process")
    assert.is_true(mgr:wait_for("awesome.service", "ActiveState", "active", 15),
      "timed out after 15 s waiting for the restarted Awesome to be active")
    assert(wm:wait_ready())
    for name, pid in pairs(launched) do
      assert.is_true(harness.alive(pid), name .. " (" .. pid .. ") died with Awesome")
    end
    assert.equal("active", state("awesome-session.target"))
    assert.equal("active", state("graphical-session.target"))
    local placed = wm:client([[
      local t = {}
      for _, c in ipairs(client.get()) do
          t[#t + 1] = c.class:lower() .. "@" .. c.first_tag.name .. "/" .. #c:tags()
      end
      table.sort(t)
      return table.concat(t, " ")
    ]])
    assert.equal("xclock@two/1 xeyes@one/1 xlogo@three/1", placed)
  end)

  it("restarts Awesome in place on systemctl --user reload: same pid, rc.lua again, no restart",
  function()
    if not skip_unless_ready() then return end
    local pid = wm:pid()
    local runs = #(shell.read_file(dir .. "/runs") or "")
    assert(mgr:systemctl("reload", "awesome.service"))
    assert.is_truthy(harness.wait_until(10, function()
      return #(shell.read_file(dir .. "/runs") or "") > runs
    end), "timed out after 10 s waiting for rc.lua to run again")
    assert.is_true(mgr:wait_for("awesome.service", "ActiveState", "active", 10),
      "timed out after 10 s waiting for awesome.service to be active again")
    assert(wm:wait_ready())
    assert.equal(pid, wm:pid())
    assert.equal("1", mgr:show("awesome.service", "NRestarts"))   -- the watchdog's, above
    testkit.sleep(4)   -- more than WatchdogSec: the heartbeat came back
    assert.equal("active", state("awesome.service"))
    assert.equal(pid, wm:pid())
  end)

  it("refuses a second session while one runs", function()
    if not skip_unless_ready() then return end
    local ok, out, rc = run("timeout 10 " .. wm:session_env() .. "sh "
      .. quote(root .. "/session/awesome-session"))
    assert.is_false(ok)
    assert.equal(1, rc)
    assert.matches("^awesome%-session: a graphical session is already running %([^\n]+%)$", out)
  end)

  it("ends on awesome.quit(): the command returns 0 within 5 s and nothing of the session remains",
  function()
    if not skip_unless_ready() then return end
    local service = tonumber(mgr:show("clua-test-session-service.service", "MainPID"))
    local autostarted = pids_with("sleep 1001")[1]
    local awesome = wm:pid()
    wm:try_client("awesome.quit()", 3)
    local code, log = wm:session_exit(5)
    assert.equal(0, code, "the session command did not exit 0 within 5 s: " .. log)
    assert.equal("", log)
    for _, unit in ipairs { "awesome-session.target", "graphical-session.target", "awesome.service",
                            "clua-test-session-service.service" } do
      assert.is_truthy(mgr:wait_for(unit, "ActiveState", "inactive", 5),
        "timed out after 5 s waiting for " .. unit .. " to be inactive")
    end
    local left = {}
    for name, pid in pairs(launched) do left[name] = pid end
    left.awesome, left.service, left.autostarted = awesome, service, autostarted
    assert.is_truthy(harness.wait_until(5, function()
      for _, pid in pairs(left) do
        if harness.alive(pid) then return false end
      end
      return true
    end), "timed out after 5 s waiting for the session's processes to end")
    local _, units = mgr:systemctl("list-units", "--plain", "--no-legend", "app-*")
    assert.equal("", units)
    local _, env = mgr:systemctl("show-environment")
    assert.not_matches("\nDISPLAY=", "\n" .. env)
    assert.not_matches("\nXDG_CURRENT_DESKTOP=", "\n" .. env)
  end)
end)

describe("awesome-session without systemd #integration", function()
  it("exits 1 with one line without a display", function()
    local ok, out, rc = run("env -u DISPLAY timeout 10 sh "
      .. quote(root .. "/session/awesome-session"))
    assert.is_false(ok)
    assert.equal(1, rc)
    assert.matches("^awesome%-session: DISPLAY is not set[^\n]*$", out)
  end)

  it("exits 2 with one line for an argument", function()
    local _, out, rc = run("DISPLAY=:99 timeout 10 sh " .. quote(root .. "/session/awesome-session")
      .. " --bogus")
    assert.equal(2, rc)
    assert.matches("^awesome%-session: [^\n]+$", out)
  end)

  it("runs awesome itself, in its own process, when there is no user manager", function()
    local ok, msg = harness.available()
    if not ok then pending("needs Awesome under Xvfb: " .. msg) return end
    -- An X session but no user manager: an empty runtime folder, no bus.
    local x = assert(harness.start { rc = harness.rc(""), display_only = true })
    local runtime = shell.mktemp_dir("clua-runtime")
    local bin = shell.mktemp_dir("clua-bin")
    -- `awesome` on PATH runs the spec's rc.lua (the command takes no
    -- arguments), and reports the pid it runs as.
    shell.write_file(bin .. "/awesome", "#!/bin/sh\necho $$ >" .. quote(bin .. "/pid")
      .. "\nexec /usr/bin/awesome -c " .. quote(x.rc) .. "\n")
    run("chmod +x " .. quote(bin .. "/awesome"))
    local p = assert(io.popen(("env -u DBUS_SESSION_BUS_ADDRESS DISPLAY=%s XDG_RUNTIME_DIR=%s "
      .. "PATH=%s:/usr/bin:/bin sh %s 2>%s & echo $!"):format(quote(x.display), quote(runtime),
      quote(bin), quote(root .. "/session/awesome-session"), quote(bin .. "/err"))))
    local session_pid = tonumber(p:read("*l"))
    p:close()
    local started = harness.wait_until(10, function() return shell.read_file(bin .. "/pid") end)
    local err = shell.read_file(bin .. "/err") or ""
    local cmdline = (shell.read_file("/proc/" .. session_pid .. "/cmdline") or ""):gsub("%z", " ")
    testkit.kill(session_pid, 15)
    x:stop()
    run("rm -rf " .. quote(runtime) .. " " .. quote(bin))
    assert.is_truthy(started, "timed out after 10 s waiting for plain awesome: " .. err)
    assert.equal(session_pid, tonumber(started))
    assert.matches("^/usr/bin/awesome %-c ", cmdline)
    assert.equal("awesome-session: no systemd user manager; starting awesome without systemd",
      err:match("^[^\n]*"))
  end)
end)
