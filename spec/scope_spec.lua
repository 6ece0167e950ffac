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
    mgr, msg = systemd.start()
    if not mgr then why = msg end
  end)

  teardown(function()
    if mgr then mgr:stop() end
  end)

  local function skip_unless_ready()
    if why then pending(why) return false end
    return true
  end

  -- Runs clua-scope ARGS under the manager's environment; returns ok, its
  -- output (stdout and stderr), exit status.
  local function scope(args, env)
    return run(mgr:envprefix() .. (env or "") .. quote(SCOPE) .. " " .. args)
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
    -- $PPID of the inner sh is the shell that ran clua-scope: the command
    -- replaced clua-scope, so its pid is the one the caller started.
    local ok, out = scope("-l awesome -- sh -c 'echo pid=$$; cat /proc/self/cgroup' & "
      .. "echo started=$!; wait")
    assert.is_true(ok, out)
    assert.equal(out:match("started=(%d+)"), out:match("pid=(%d+)"))
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
    -- Stopped with the graphical session, after it.
    assert.matches("graphical%-session%.target", mgr:show(unit, "PartOf"))
    assert.matches("graphical%-session%.target", mgr:show(unit, "After"))
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
    local ok, out = run("env XDG_RUNTIME_DIR=/nonexistent " .. quote(SCOPE)
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
    local ok, out = run("env XDG_RUNTIME_DIR=" .. quote(dir) .. " " .. quote(SCOPE)
      .. " -- echo ran")
    local took = systemd.uptime() - t0
    run("pkill -f " .. quote(dir .. "/systemd/private") .. "; rm -rf " .. quote(dir))
    listener:close()
    assert.is_true(ok, out)
    assert.equal("clua-scope: the user manager did not answer: Connection timed out; "
      .. "running echo without a scope\nran", out)
    assert.is_true(took >= 2.9 and took < 10, "took " .. took .. " s")
  end)

  it("exits 127 for a command not found, 126 for one not executable, 2 for usage", function()
    if not skip_unless_ready() then return end
    local _, out, rc = scope("-- /nonexistent/cmd")
    assert.equal(127, rc)
    assert.matches("^clua%-scope: /nonexistent/cmd: No such file or directory$", out)
    _, out, rc = scope("-- /etc/passwd")
    assert.equal(126, rc)
    assert.equal("clua-scope: /etc/passwd: Permission denied", out)
    local usage_errors = { "", "-l", "-l 'a-b' true", "-l '' true", "-a '' true", "--bogus true" }
    for _, args in ipairs(usage_errors) do
      _, out, rc = scope(args)
      assert.equal(2, rc, args)
      assert.matches("^clua%-scope: [^\n]+$", out)
    end
    local ok
    ok, out = scope("--help")
    assert.is_true(ok)
    assert.matches("^Usage: clua%-scope", out)
    ok, out = scope("--version")
    assert.is_true(ok)
    assert.matches("^clua%-scope %d+%.%d+%.%d+$", out)
  end)

  it("stops options at the first non-option", function()
    if not skip_unless_ready() then return end
    local ok, out = scope("echo -l x")
    assert.is_true(ok, out)
    assert.equal("-l x", out)
  end)
end)
