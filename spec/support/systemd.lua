--- A real `systemd --user` manager for specs, without systemd as PID 1.
--
-- `systemd --user` refuses to start unless /run/systemd/system exists. In a
-- private mount namespace with a tmpfs over /run/systemd it runs fine and
-- enforces Type=notify, WatchdogSec= and Restart= for real. Each manager
-- gets its own XDG_RUNTIME_DIR and HOME under a fresh temporary folder, so
-- several can run at once and none touches the machine's own.
--
--    local systemd = require("support.systemd")
--    local mgr, why = systemd.start()      -- nil, why: this machine cannot
--    if not mgr then return pending(why) end
--    mgr:install_unit("t.service", "[Service]\nExecStart=/bin/sleep 100\n")
--    mgr:start("t.service")                -- does not wait
--    assert(mgr:wait_for("t.service", "ActiveState", "active", 5))
--    print(mgr:show("t.service", "MainPID"))
--    mgr:stop()                            -- nothing left running
--
-- Units write their output to `mgr:log()` (read it before `stop`, which
-- removes the folder): there is no journal.
--
-- Every call has a time limit: each `systemctl` 60 s (support.shell.run:
-- past it the test fails, "timed out after 60 s waiting for systemctl
-- --user ..."), the manager's start 15 s, `stop` 10 s before SIGKILL;
-- `wait_for` takes its own. Units see the manager's
-- environment: XDG_RUNTIME_DIR, HOME, PATH; add more with
-- `mgr:set_environment{K = "v"}` or Environment=.
--
-- Needs root (mount namespaces), unshare(1) and /lib/systemd/systemd, a
-- root that is a mount point (a plain chroot, as sbuild and pbuilder use,
-- cannot make it private), and a systemd that runs on this machine's cgroup
-- hierarchy (systemd >= 258 refuses cgroup v1). Where one is missing,
-- `available()` or `start()` says which, for the spec's pending(): a skip
-- with its reason, never a failure. A manager that runs but does not
-- answer is an error: that is a failure.
-- @module support.systemd

local M = {}

local MANAGER = "/lib/systemd/systemd"
local unpack = table.unpack or unpack

local shell = require("support.shell")
local quote, run = shell.quote, shell.run
local write_file = shell.write_file

-- Seconds since boot: timeouts must not follow the wall clock, which specs
-- step on purpose.
local function uptime()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("*n")
  f:close()
  return t
end
M.uptime = uptime

local sleep = shell.sleep

local alive = shell.alive

--- Whether a manager can be started here, as far as can be told without
-- starting one (`start` tells the rest).
-- @treturn boolean
-- @treturn string why not
function M.available()
  local _, uid = run("id -u")
  if uid ~= "0" then
    return false, "needs root to create a mount namespace for systemd --user"
  end
  if not run("command -v unshare && test -x " .. MANAGER .. " && command -v systemctl") then
    return false, "needs unshare(1), systemctl and " .. MANAGER
  end
  -- In a plain chroot / is not a mount point: unshare cannot make it
  -- private, and a tmpfs over /run/systemd would show on the host.
  local ok, out = run("unshare -m --propagation private true")
  if not ok then
    return false, "cannot make a private mount namespace for systemd --user here "
      .. "(a plain chroot?): " .. out:gsub("\n", " ")
  end
  return true
end

-- The line of a manager's log that says why it gave up: the first that
-- names a reason, else the last one.
local function why_exited(log)
  local last
  for line in log:gmatch("[^\n]+") do
    local l = line:lower()
    if l:find("support") or l:find("refus") or l:find("fail") or l:find("cannot")
      or l:find("error") then
      return line
    end
    last = line
  end
  return last or "(no log)"
end

local Manager = {}
Manager.__index = Manager

-- Where `start()` makes the manager a control group of its own (unless
-- `start { own_cgroup = false }`): the hierarchy systemd tracks processes in (name=systemd on
-- cgroup v1, the unified one in the hybrid layout, /sys/fs/cgroup itself
-- on v2).  Every manager started where the specs run roots its units at
-- the same /session.slice/awesome.service otherwise: a manager stopping
-- its awesome.service (another spec's, or another checkout's running at
-- the same time on the machine) kills every Awesome in there, and its
-- ControlGroup= reads /clua-spec-.../session.slice/awesome.service.
local CGROUP_ROOTS = { "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup" }

--- Starts a manager and waits until it answers (up to 15 s).
-- Returns nil and the reason when this machine cannot run one (see
-- `available`, or the manager exited at once saying why); raises when it
-- ran but did not answer.
-- @tparam[opt] table opts `own_cgroup = false`: not in a control group of
--   its own (see CGROUP_ROOTS, where nothing another manager does reaches)
-- @treturn[1] Manager
-- @return[2] nil, reason
function M.start(opts)
  local ok, why = M.available()
  if not ok then return nil, why end

  local dir = shell.mktemp_dir("clua-systemd")
  local self = setmetatable({
    dir = dir,
    env = { XDG_RUNTIME_DIR = dir .. "/run", HOME = dir .. "/home" },
    logfile = dir .. "/manager.log",
  }, Manager)
  self.unitdir = self.env.HOME .. "/.config/systemd/user"
  assert(run(("mkdir -p -m 700 %s && mkdir -p %s"):format(
    quote(self.env.XDG_RUNTIME_DIR), quote(self.unitdir))))
  -- No journal here: send the manager's log and the units' output to the
  -- log file, where a failing spec can show them.
  write_file(self.env.HOME .. "/.config/systemd/user.conf",
    "[Manager]\nDefaultStandardOutput=inherit\nDefaultStandardError=inherit\n")

  -- With own_cgroup, a control group of its own (CGROUP_ROOTS), entered
  -- before the exec; where that fails the manager runs where it is.  unshare and sh
  -- exec, so the pid printed is the manager's own.
  local enter = { ":" }
  if not (opts and opts.own_cgroup == false) then
    self.cgroup = "clua-spec-" .. dir:match("([^./]+)$")
  end
  for _, d in ipairs(self.cgroup and CGROUP_ROOTS or {}) do
    local path = d .. "/" .. self.cgroup
    enter[#enter + 1] = ("if [ -f %s/cgroup.procs ]; then mkdir -p %s && "
      .. "echo $$ >%s/cgroup.procs; fi"):format(d, path, path)
  end
  local launch = ("env -i PATH=%s XDG_RUNTIME_DIR=%s HOME=%s SYSTEMD_LOG_TARGET=console "
    .. "SYSTEMD_LOG_LEVEL=info unshare -m --propagation private sh -c "
    .. "%s "
    .. "</dev/null >>%s 2>&1 & echo $!"):format(
      quote(os.getenv("PATH") or "/usr/bin:/bin"), quote(self.env.XDG_RUNTIME_DIR),
      quote(self.env.HOME),
      quote("{ " .. table.concat(enter, "; ") .. "; } 2>/dev/null; "
        .. "mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && exec "
        .. MANAGER .. " --user"),
      quote(self.logfile))
  local started, pid = run(launch)
  self.pid = tonumber(pid)
  if not started or not self.pid then
    self:stop()
    return nil, "could not launch systemd --user: " .. tostring(pid)
  end
  local state = shell.poll(15, function()
    if self:systemctl("show", "-P", "Version") then return "up" end
    if not alive(self.pid) then return "exited" end
  end, 0.1)
  if state == "up" then return self end
  local exited = state == "exited"
  local log = self:log()
  self:stop()
  if exited then
    -- e.g. systemd 262 on a cgroup v1 host: "Detected cgroup v1 hierarchy
    -- at /sys/fs/cgroup/, which is no longer supported ..."
    local _, version = run(MANAGER .. " --version | head -n 1")
    return nil, ("systemd --user cannot run here (%s): %s"):format(version, why_exited(log))
  end
  error("systemd --user did not answer within 15 s; its log:\n" .. log, 2)
end

--- The environment prefix for commands that talk to this manager.
function Manager:envprefix()
  return ("env XDG_RUNTIME_DIR=%s HOME=%s "):format(
    quote(self.env.XDG_RUNTIME_DIR), quote(self.env.HOME))
end

--- Runs `systemctl --user ARGS...` against this manager.
-- @treturn boolean ok
-- @treturn string output
function Manager:systemctl(...)
  local args, plain = {}, {}
  for i = 1, select("#", ...) do
    plain[i] = tostring((select(i, ...)))
    args[i] = quote(plain[i])
  end
  return run(self:envprefix() .. "systemctl --user " .. table.concat(args, " "),
    { what = "systemctl --user " .. table.concat(plain, " ") })
end

--- Writes a unit file and reloads the manager.
function Manager:install_unit(name, text)
  write_file(self.unitdir .. "/" .. name, text)
  return assert(self:systemctl("daemon-reload"))
end

--- Sets variables in the manager's environment for units started later.
function Manager:set_environment(vars)
  local args = {}
  for k, v in pairs(vars) do args[#args + 1] = k .. "=" .. v end
  return assert(self:systemctl("set-environment", unpack(args)))
end

--- Starts a unit without waiting for it (use `wait_for`).
function Manager:start(name)
  return self:systemctl("start", "--no-block", name)
end

--- Stops a unit and waits for the stop job.
function Manager:stop_unit(name)
  return self:systemctl("stop", name)
end

--- One property of a unit, as `systemctl --user show -P` prints it.
function Manager:show(name, prop)
  local _, out = self:systemctl("show", "-P", prop, name)
  return out
end

--- Waits until a property has a value.
-- @param name unit
-- @param prop property name
-- @param want a string, or a function(value) returning true when satisfied
-- @param timeout seconds
-- @treturn boolean whether it did within the timeout
-- @treturn string the last value seen
function Manager:wait_for(name, prop, want, timeout)
  local test = type(want) == "function" and want or function(v) return v == want end
  local deadline = uptime() + timeout
  local value
  repeat
    value = self:show(name, prop)
    if test(value) then return true, value end
    sleep(0.05)
  until uptime() > deadline
  value = self:show(name, prop)
  return test(value), value
end

--- Everything the manager logged, units' output included.
function Manager:log()
  return shell.read_file(self.logfile) or ""
end

--- Kills whatever still carries this manager's XDG_RUNTIME_DIR: the units'
-- processes of a manager that had to be killed.
function Manager:kill_leftovers()
  run(("for e in /proc/[0-9]*/environ; do "
    .. "if grep -qaF %s \"$e\" 2>/dev/null; then p=${e#/proc/}; kill -KILL ${p%%/environ}; fi; "
    .. "done"):format(quote("XDG_RUNTIME_DIR=" .. self.env.XDG_RUNTIME_DIR)))
end

--- Stops the manager (its units stop with it) and removes its folder.
-- Leaves nothing running. Idempotent.
function Manager:stop()
  if self.pid then
    run("kill -TERM " .. self.pid)
    -- Units get their TimeoutStopSec; don't wait forever for one.
    for _ = 1, 100 do
      if not alive(self.pid) then break end
      sleep(0.1)
    end
    run("kill -KILL " .. self.pid)
    self.pid = nil
  end
  self:kill_leftovers()
  -- Its control groups, once empty, deepest first.
  if self.cgroup then
    for _, d in ipairs(CGROUP_ROOTS) do
      local path = d .. "/" .. self.cgroup
      run(("[ -d %s ] && find %s -depth -type d -exec rmdir {} + 2>/dev/null"):format(
        quote(path), quote(path)))
    end
  end
  if self.dir and self.dir:match("^/tmp/clua%-systemd%.") then
    run("rm -rf " .. quote(self.dir))
  end
  self.dir = nil
end

return M
