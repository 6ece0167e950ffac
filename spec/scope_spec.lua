-- clua-scope (tools/clua-scope.c) against a real systemd --user manager:
-- the command runs in a scope of its own, as the very process clua-scope
-- was, and runs anyway when no scope can be made.
local systemd = require("support.systemd")
local shell = require("support.shell")
local quote, run = shell.quote, shell.run

local root = os.getenv("CLUA_ROOT") or "."
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")
local SCOPE = tools .. "/clua-scope"

describe("clua-scope #integration", function()
  local mgr, why

  setup(function()
    local ok, msg = systemd.available()
    if not ok then why = "needs a systemd user manager: " .. msg return end
    mgr, msg = systemd.start { own_cgroup = true }
    if not mgr then why = "needs a systemd user manager: " .. msg end
  end)

  teardown(function()
    if mgr then mgr:stop() end
  end)

  local function skip_unless_ready()
    if why then pending(why) return false end
    return true
  end

  -- Runs clua-scope ARGS under the manager's environment (killed after
  -- 20 s); returns ok, its output (stdout and stderr), exit status.
  local function scope(args, env)
    return run(mgr:envprefix() .. "timeout 20 env " .. (env or "") .. quote(SCOPE) .. " " .. args)
  end

  -- The name=systemd (cgroup v1) or unified (v2) path of /proc/PID/cgroup
  -- lines as printed by `cat /proc/self/cgroup`.
  local function unit_of(cgroup_text)
    return cgroup_text:match("[^\n]*:name=systemd:[^\n]*/([^/\n]+%.scope)")
      or cgroup_text:match("0::[^\n]*/([^/\n]+%.scope)")
  end

  it("runs the command in app-LAUNCHER-APPID-RANDOM.scope in app.slice, as the same process",
  function()
    if not skip_unless_ready() then return end
    -- The command replaced clua-scope: its parent is what started
    -- clua-scope (env, which exec's it, under timeout), not clua-scope.
    local ok, out = scope("-l awesome -- sh -c 'echo ppid=$PPID; cat /proc/self/cgroup' & "
      .. "echo started=$!; wait")
    assert.is_true(ok, out)
    assert.equal(out:match("started=(%d+)"), out:match("ppid=(%d+)"))
    local unit = unit_of(out)
    assert.is_string(unit, out)
    -- Named after the command sh -c runs.
    assert.matches("^app%-awesome%-echo%-%x%x%x%x%x%x%x%x%.scope$", unit)
    assert.matches("/app%.slice/" .. unit:gsub("%p", "%%%0"), out)
  end)

  it("keeps stdin, stdout, stderr, the environment and the exit status", function()
    if not skip_unless_ready() then return end
    local ok, out = scope("-- sh -c 'read line; echo \"got $line $CLUA_X\"; echo err >&2; exit 7'"
      .. " <<EOF\nhello\nEOF",
      "CLUA_X=there ")
    assert.is_false(ok)
    assert.equal("got hello there\nerr", out)
    local _, _, rc = scope("-- sh -c 'exit 7'")
    assert.equal(7, rc)
  end)

  it("hands the command exactly the file descriptors it was given", function()
    if not skip_unless_ready() then return end
    local list = "sh -c 'ls /proc/$$/fd' </dev/null 2>/dev/null"
    local ok, plain = run(list)
    assert.is_true(ok, plain)
    local scoped
    ok, scoped = scope("-- " .. list)
    assert.is_true(ok, scoped)
    assert.equal(plain, scoped)
  end)

  it("keeps what the command forks in the scope, and the scope lives as long as it does", function()
    if not skip_unless_ready() then return end
    local ok, out = scope("-l t -- sh -c 'sleep 30 >/dev/null 2>&1 & echo child=$!'")
    assert.is_true(ok, out)
    local child = out:match("child=(%d+)")
    local cgroup = shell.read_file("/proc/" .. child .. "/cgroup")
    local unit = unit_of(cgroup)
    assert.matches("^app%-t%-sleep%-", unit)
    assert.equal("active", mgr:show(unit, "ActiveState"))
    assert.equal("app.slice", mgr:show(unit, "Slice"))
    -- Stopped with the graphical session, but not ordered after it: the
    -- session target waits for the window manager's READY=1, and an
    -- application launched before that must not wait.
    assert.matches("graphical%-session%.target", mgr:show(unit, "PartOf"))
    assert.not_matches("graphical%-session%.target", mgr:show(unit, "After"))
    assert.matches("sleep 30", mgr:show(unit, "Description"), 1, true)
    run("kill " .. child)
    assert.is_true(mgr:wait_for(unit, "LoadState", "not-found", 5),
      "the scope is collected once its last process is gone")
  end)

  it("names the scope after sh -c's command and escapes the app id", function()
    if not skip_unless_ready() then return end
    local _, out = scope("-l awesome -- sh -c '/usr/bin/env cat /proc/self/cgroup'")
    assert.matches("^app%-awesome%-env%-%x+%.scope$", unit_of(out))
    _, out = scope("-a 'my-app 1.0' -- cat /proc/self/cgroup")
    assert.matches("^app%-my\\x2dapp\\x201%.0%-%x+%.scope$", unit_of(out))
    _, out = scope("-- cat /proc/self/cgroup")
    assert.matches("^app%-cat%-%x+%.scope$", unit_of(out))
  end)

  it("gives every launch a scope of its own", function()
    if not skip_unless_ready() then return end
    local seen = {}
    for _ = 1, 20 do
      local _, out = scope("-l awesome -- cat /proc/self/cgroup")
      local unit = unit_of(out)
      assert.is_nil(seen[unit], unit)
      seen[unit] = true
    end
  end)

  it("runs the command without a scope, saying so in one line, when there is no user manager",
  function()
    if not skip_unless_ready() then return end
    local ok, out = run("env XDG_RUNTIME_DIR=/nonexistent timeout 20 " .. quote(SCOPE)
      .. " -- sh -c 'echo ran; cat /proc/self/cgroup'")
    assert.is_true(ok, out)
    local first, rest = out:match("^([^\n]*)\n(.*)$")
    assert.matches("^clua%-scope: no systemd user manager: .*; running sh without a scope$", first)
    assert.matches("^ran\n", rest)
    assert.not_matches("/app%.slice/", rest)
  end)

  it("runs the command without a scope after 3 s when the manager does not answer", function()
    if not skip_unless_ready() then return end
    -- A socket that accepts connections and never says a word.
    local dir = shell.mktemp_dir("clua-scope")
    run("mkdir -p " .. quote(dir .. "/systemd"))
    local listener = assert(io.popen(("exec python3 -c %s %s"):format(quote(
      "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]);"
      .. " s.listen(8); print('up', flush=True); c=s.accept(); time.sleep(30)"),
      quote(dir .. "/systemd/private")), "r"))
    assert.equal("up", listener:read("*l"))
    local t0 = systemd.uptime()
    local ok, out = run("env XDG_RUNTIME_DIR=" .. quote(dir) .. " timeout 20 " .. quote(SCOPE)
      .. " -- echo ran")
    local took = systemd.uptime() - t0
    run("pkill -f " .. quote(dir .. "/systemd/private") .. "; rm -rf " .. quote(dir))
    listener:close()
    assert.is_true(ok, out)
    assert.equal("clua-scope: the user manager did not answer within 3 s; "
      .. "running echo without a scope\nran", out)
    assert.is_true(took >= 2.9 and took < 10, "took " .. took .. " s")
  end)

  it("says the manager queued the scope but did not start it in 3 s, cancels the job, runs "
    .. "the command", function()
    if not skip_unless_ready() then return end
    -- A manager of its own, where the scopes of launcher "t" (a drop-in
    -- for every app-t-*.scope) wait for a service that takes 60 s to
    -- start.
    local slow = assert(systemd.start { own_cgroup = true })
    finally(function() slow:stop() end)
    slow:install_unit("clua-hold.service",
      "[Service]\nType=oneshot\nExecStart=/bin/sleep 60\n")
    run("mkdir -p " .. quote(slow.unitdir .. "/app-t-.scope.d"))
    slow:install_unit("app-t-.scope.d/hold.conf",
      "[Unit]\nWants=clua-hold.service\nAfter=clua-hold.service\n")
    local t0 = systemd.uptime()
    local ok, out = run(slow:envprefix() .. "timeout 20 " .. quote(SCOPE)
      .. " -l t -- sh -c 'echo ran; cat /proc/self/cgroup'")
    local took = systemd.uptime() - t0
    assert.is_true(ok, out)
    local first, rest = out:match("^([^\n]*)\n(.*)$")
    assert.matches("^clua%-scope: the user manager queued the scope but did not start it "
      .. "within 3 s %(/org/freedesktop/systemd1/job/%d+ cancelled%); running sh without a scope$",
      first)
    assert.matches("^ran\n", rest)
    assert.not_matches("/app%.slice/", rest)
    assert.is_true(took >= 2.9 and took < 10, "took " .. took .. " s")
    -- Nothing of the scope stays queued.
    local _, jobs = slow:systemctl("list-jobs", "--no-legend")
    assert.not_matches("%.scope", jobs)
  end)

  it("exits 127 for a command not found, 126 for one not executable, 2 for usage", function()
    if not skip_unless_ready() then return end
    local _, out, rc = scope("-- /nonexistent/cmd")
    assert.equal(127, rc)
    assert.matches("^clua%-scope: /nonexistent/cmd: No such file or directory$", out)
    _, out, rc = scope("-- /etc/passwd")
    assert.equal(126, rc)
    assert.equal("clua-scope: /etc/passwd: Permission denied", out)
    local usage_errors = { "", "-l", "-l 'a-b' true", "-l '' true", "-a '' true", "--bogus true",
                           "-a myapp -zq true" }
    for _, args in ipairs(usage_errors) do
      -- A fresh local: Lua 5.5 makes loop variables, `_` too, read-only.
      local _, err, code = scope(args)
      assert.equal(2, code, args)
      assert.matches("^clua%-scope: [^\n]+$", err)
    end
    local ok
    ok, out = scope("--help")
    assert.is_true(ok)
    assert.matches("^Usage: clua%-scope", out)
    ok, out = scope("--version")
    assert.is_true(ok)
    assert.matches("^clua%-scope %d+%.%d+%.%d+$", out)
  end)

  it("names the unknown option itself, also inside a cluster of options", function()
    if not skip_unless_ready() then return end
    local _, out, rc = scope("-a myapp -zq true")
    assert.equal(2, rc)
    assert.equal("clua-scope: unknown option '-z' (see --help)", out)
    _, out, rc = scope("-l awesome --bogus true")
    assert.equal(2, rc)
    assert.equal("clua-scope: unknown option '--bogus' (see --help)", out)
    _, out, rc = scope("-a")
    assert.equal(2, rc)
    assert.equal("clua-scope: option '-a' needs an argument", out)
  end)

  it("refuses a command that cannot run in one line, without asking for a scope", function()
    if not skip_unless_ready() then return end
    -- The scopes of launcher "refuse" would wait 60 s for a service: a
    -- clua-scope that asked for one would take 3 s and say so.
    mgr:install_unit("clua-refuse-hold.service",
      "[Service]\nType=oneshot\nExecStart=/bin/sleep 60\n")
    run("mkdir -p " .. quote(mgr.unitdir .. "/app-refuse-.scope.d"))
    mgr:install_unit("app-refuse-.scope.d/hold.conf",
      "[Unit]\nWants=clua-refuse-hold.service\nAfter=clua-refuse-hold.service\n")
    local dir = shell.mktemp_dir("clua-scope-path")
    -- (busted keeps one finally per test: the last one given)
    finally(function()
      run("rm -rf " .. quote(dir) .. " " .. quote(mgr.unitdir .. "/app-refuse-.scope.d"))
      mgr:systemctl("daemon-reload")
      mgr:systemctl("stop", "clua-refuse-hold.service")
    end)
    -- With a user manager, and without one: one line, the command's
    -- name, the exit status execvp's error gives, at once.
    for _, env in ipairs { "", "XDG_RUNTIME_DIR=/nonexistent " } do
      for _, case in ipairs {
        { "clua-no-such-command arg", 127, "clua-no-such-command: No such file or directory" },
        { "/nonexistent/cmd", 127, "/nonexistent/cmd: No such file or directory" },
        { "/etc/passwd", 126, "/etc/passwd: Permission denied" },
        { "/etc", 126, "/etc: Permission denied" },
      } do
        local t0 = systemd.uptime()
        local _, out, rc = scope("-l refuse -- " .. case[1], env)
        local took = systemd.uptime() - t0
        assert.equal(case[2], rc, case[1])
        assert.equal("clua-scope: " .. case[3], out)
        assert.is_true(took < 1, case[1] .. " took " .. took .. " s")
      end
    end
    -- Found along PATH as execvp finds it, a non-executable file in an
    -- earlier folder notwithstanding.
    run("printf 'x' > " .. quote(dir .. "/true"))
    local ok, out = scope("-- true", "PATH=" .. quote(dir .. ":/usr/bin:/bin") .. " ")
    assert.is_true(ok, out)
    assert.equal("", out)
    local _, _, rc = scope("-- true", "PATH=" .. quote(dir) .. " ")
    assert.equal(126, rc)
  end)

  it("stops options at the first non-option", function()
    if not skip_unless_ready() then return end
    local ok, out = scope("echo -l x")
    assert.is_true(ok, out)
    assert.equal("-l x", out)
  end)
end)
