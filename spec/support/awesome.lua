--- A real, headless Awesome 4.3 for the specs.
--
--    local harness = require("support.awesome")
--    local ok, why = harness.available()
--    local wm = assert(harness.start { rc = harness.rc [[ ... ]] })
--    print(wm:client("return awesome.version"))   --> v4.3
--    wm:stop()
--
-- `start` runs `dbus-run-session -- spec/support/xvfb-session`, which
-- starts Xvfb on a free display (`-displayfd`) and `awesome -c RC`, with
-- LUA_PATH and LUA_CPATH pointing at this tree's lua/ and spec/ folders and at
-- $CLUA_BUILD (Awesome on Debian 12 is built against Lua 5.3, so the specs
-- using this run in the 5.3 integration stage).  It then waits, with a
-- timeout, until Awesome answers on D-Bus, and fails unless Awesome loaded
-- that very rc.lua (a broken rc.lua makes Awesome fall back silently to the
-- system one) with no `awesome.startup_errors`.
--
-- The session is a child of the spec process and reaps everything it
-- starts; `stop` kills Awesome's descendants, Awesome and Xvfb, and waits for
-- the session to end, so nothing is left running (not even a zombie: PID 1
-- on the build machines reaps nothing).
--
-- Every wait here has a time limit (support.shell): the session's start
-- (30 s), Awesome's first answer (`timeout`, 20 s), each awesome-client call
-- (15 s unless told), a unit becoming active (20 s), the session's end
-- (10 s, then it is killed).
--
-- With `start { rc = ..., manager = mgr }` (a manager from support.systemd)
-- only Xvfb and the bus run in the session; Awesome itself runs as the user
-- service "awesome.service" of that manager: the units of session/ as they
-- are, plus a drop-in giving it this session's environment (LUA_PATH,
-- LUA_CPATH and a PATH that finds the built clua-scope: what an install
-- provides), our rc.lua and `unit_extra` lines (WatchdogSec=3, ...).  With
-- `session = true` the session command session/awesome-session starts it,
-- as ~/.xsession would (`wm:session_exit()` waits for the command's exit
-- status); otherwise the unit is started alone.  `start` waits until the
-- unit is active (Type=notify: clua.awesome sent READY=1), and `wm:pid()`
-- follows its MainPID across watchdog restarts.
--
-- With `start { rc = ..., etc = copy }` (a copy from support.private_etc)
-- the session (Xvfb, the bus, Awesome; not with `manager`) runs in a mount
-- namespace of its own that sees the copy at /etc.

local testkit = require("testkit")

local harness = {}

local root = os.getenv("CLUA_ROOT") or "."
local build = os.getenv("CLUA_BUILD") or (root .. "/build/lua5.3")
local tools = os.getenv("CLUA_TOOLS") or (root .. "/build/tools")
harness.root = root

local shell = require("support.shell")
local shq, readfile, writefile = shell.quote, shell.read_file, shell.write_file
harness.shq = shq
harness.readfile = readfile

local run = shell.run
harness.run = run

local function mktemp_dir()
  return shell.mktemp_dir("clua-awesome")
end

--- Whether every program the harness needs is installed.
-- @treturn boolean ok
-- @treturn string why not
function harness.available()
  for _, prog in ipairs { "awesome", "awesome-client", "Xvfb", "dbus-run-session", "dbus-send" } do
    local ok = run("command -v " .. prog)
    if not ok then return false, prog .. " is not installed" end
  end
  return true
end

--- Writes the text of an rc.lua to a fresh temporary file; returns its path.
-- A first line loading awful.remote is added (awesome-client talks to it).
-- The file is removed by `stop` of the Awesome started with it.
function harness.rc(text)
  local dir = mktemp_dir()
  local path = dir .. "/rc.lua"
  writefile(path, 'require("awful.remote") -- for awesome-client (spec/support/awesome.lua)\n'
    .. text)
  return path, dir
end

--- An rc.lua (its path) for the specs of setup(): it records every
-- debug::error in `clua_spec.errors` from the start, runs `before` (Lua),
-- calls `require("clua.awesome").setup(OPTIONS)` (`options`: Lua text) into
-- `clua_spec.returned`, sets `clua_spec.after`, then runs `after` (Lua).
function harness.setup_rc(options, before, after)
  return harness.rc(([[
    clua_spec = { errors = {} }
    awesome.connect_signal("debug::error", function(msg)
      table.insert(clua_spec.errors, tostring(msg))
    end)
    %s
    clua_spec.returned = require("clua.awesome").setup(%s)
    clua_spec.after = true
    %s
  ]]):format(before or "", options, after or ""))
end

-- /proc helpers (the spec process is root on the build machines, so it can
-- read every process's fd table).

harness.stat = shell.proc_stat
harness.alive = shell.alive

--- The number of open fds of process PID.
function harness.fd_count(pid)
  local ok, out = run("ls /proc/" .. pid .. "/fd")
  assert(ok, out)
  local n = 0
  for _ in out:gmatch("%d+") do n = n + 1 end
  return n
end

--- What the fds of process PID point to, one "fd -> target" a line (for
-- failure messages).
function harness.fd_list(pid)
  local _, list = run("cd /proc/" .. pid .. "/fd && "
    .. "for f in *; do echo \"$f -> $(readlink $f)\"; done")
  return list
end

--- The pids of the processes whose parent is PID (live and zombie).
function harness.children(pid)
  local _, out = run("ps -o pid= --ppid " .. pid)
  local pids = {}
  for p in out:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

--- Every descendant of PID, deepest first.
function harness.descendants(pid)
  local all = {}
  local function walk(p)
    for _, c in ipairs(harness.children(p)) do
      walk(c)
      all[#all + 1] = c
    end
  end
  walk(pid)
  return all
end

--- Calls f() every `step` seconds until it returns a true value or `timeout`
-- seconds passed; returns that value, or nil (the caller reports).  Use
-- `harness.wait_for` (support.shell) for a wait that fails the test by
-- itself, naming what it waited for.
harness.wait_until = shell.poll
harness.wait_for = shell.wait_for

-- Parses what `awesome-client` prints (dbus-send --print-reply minus its
-- first line): one "   string \"...\"", "   double N" or "   boolean B"
-- per returned value.  Strings are printed raw, newlines included.
local function parse_reply(out)
  local values, marks = {}, {}
  local text = "\n" .. out
  local pos = 1
  while true do
    local s, e, ty = text:find("\n   (%a+) ", pos)
    if not s then break end
    if ty == "string" or ty == "double" or ty == "boolean" then
      marks[#marks + 1] = { s = s, e = e, ty = ty }
    end
    pos = e
  end
  -- A string value runs to the next mark that follows a closing quote.
  local kept = {}
  for i, m in ipairs(marks) do
    local prev = kept[#kept]
    -- After a string, a mark not preceded by its closing quote sits inside
    -- that string's text.
    if not (prev and prev.ty == "string" and text:sub(m.s - 1, m.s - 1) ~= '"') then
      kept[#kept + 1] = m
    end
    marks[i] = nil
  end
  for i, m in ipairs(kept) do
    local stop = kept[i + 1] and kept[i + 1].s - 1 or #text
    local raw = text:sub(m.e + 1, stop):gsub("\n$", "")
    if m.ty == "string" then
      values[i] = raw:match('^"(.*)"$') or raw
    elseif m.ty == "double" then
      values[i] = tonumber(raw)
    else
      values[i] = raw == "true"
    end
  end
  return values, #kept
end
harness.parse_reply = parse_reply

local Awesome = {}
Awesome.__index = Awesome

--- The environment (as a sh prefix) Awesome's peers need: DISPLAY and the
-- session bus.
function Awesome:envprefix()
  return "DISPLAY=" .. shq(self.display) ..
    " DBUS_SESSION_BUS_ADDRESS=" .. shq(self.bus) .. " "
end

--- Runs `awesome-client CHUNK` (killed after `timeout` s, default 15).
-- @treturn[1] true, then the values the chunk returned (strings, numbers,
--   booleans; dbus-send prints numbers with 6 significant digits, so return
--   large ones with tostring); an error inside the chunk comes back as the string
--   "Error during execution: ..." (that is what awful.remote does)
-- @treturn[2] false, what awesome-client or dbus-send printed
function Awesome:try_client(chunk, timeout)
  local errf = self.dir .. "/client.err"
  local cmd = self:envprefix() .. "timeout -k 2 " .. (timeout or 15) ..
    " awesome-client " .. shq(chunk) .. " </dev/null 2>" .. shq(errf)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok = p:close()
  if not ok then
    return false, (readfile(errf) or "") .. out
  end
  local values, n = parse_reply(out)
  return true, table.unpack(values, 1, n)
end

--- Like try_client, but raises when awesome-client fails, and returns the
-- chunk's values only.
function Awesome:client(chunk, timeout)
  local res = table.pack(self:try_client(chunk, timeout))
  if not res[1] then
    error("awesome-client failed: " .. tostring(res[2]) .. "\n" .. self:logtail(), 2)
  end
  return table.unpack(res, 2, res.n)
end

--- The last lines of Awesome's log (stderr).
function Awesome:logtail(n)
  local text
  if self.manager then
    local _, out = self.manager:systemctl("status", "--no-pager", self.unit)
    text = out .. "\n--- manager log ---\n" .. self.manager:log()
  else
    text = readfile(self.dir .. "/awesome.log") or ""
  end
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return "--- awesome log ---\n" .. table.concat(lines, "\n", math.max(1, #lines - (n or 20) + 1))
end

--- The pid of the running Awesome (under a manager: its current MainPID).
function Awesome:pid()
  if self.manager then
    local p = tonumber(self.manager:show(self.unit, "MainPID"))
    return p ~= 0 and p or nil
  end
  return self.awesome_pid
end

--- Waits until Awesome answers and checks it loaded our rc.lua without
-- startup errors.  Returns true, or nil and why.
function Awesome:wait_ready(timeout)
  timeout = timeout or 20
  local answer
  local ok = harness.wait_until(timeout, function()
    if not self.manager and not harness.alive(self.awesome_pid) then
      return "dead"
    end
    local res = table.pack(self:try_client(
      "return awesome.conffile, tostring(awesome.startup_errors), "
      .. "rawget(_G, 'clua_harness_old') == nil", 3))
    if res[1] and res[4] == true then
      answer = res
      return true
    end
  end, 0.1)
  if not ok then
    return nil, "Awesome did not answer within " .. timeout .. " s\n" .. self:logtail()
  end
  if ok == "dead" then
    return nil, "Awesome exited during startup\n" .. self:logtail()
  end
  if answer[2] ~= self.rc then
    return nil, "Awesome loaded " .. tostring(answer[2]) .. " instead of " ..
      self.rc .. " (our rc.lua failed; startup errors: " .. tostring(answer[3]) .. ")\n"
      .. self:logtail()
  end
  if answer[3] ~= "nil" then
    return nil, "startup errors: " .. tostring(answer[3])
  end
  return true
end

--- Restarts Awesome in place (awesome.restart(): exec, same pid) and waits
-- until the new image has loaded the rc.lua again.  (After the watchdog
-- restarted the unit, a fresh Awesome is up once wait_ready() returns.)
function Awesome:restart(timeout)
  -- The reply may never come: the exec ends the D-Bus connection.
  self:try_client("rawset(_G, 'clua_harness_old', true) awesome.restart()", 5)
  return self:wait_ready(timeout)
end

local function kill_and_wait(pid, grace)
  if not pid or not harness.alive(pid) then return end
  testkit.kill(pid, 15)
  if not harness.wait_until(grace or 3, function() return not harness.alive(pid) end) then
    testkit.kill(pid, 9)
    harness.wait_until(3, function() return not harness.alive(pid) end)
  end
end

--- Stops everything this Awesome session started: Awesome's descendants
-- (which Awesome, still alive, reaps), Awesome (or its unit), Xvfb, the
-- bus; then removes the temporary folder.  Idempotent.
function Awesome:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self:pid()
  if pid and harness.alive(pid) then
    for _, d in ipairs(harness.descendants(pid)) do testkit.kill(d, 9) end
    harness.wait_until(2, function() return #harness.descendants(pid) == 0 end)
  end
  if self.manager then
    if self.session_pid then
      self.manager:systemctl("stop", "awesome-session.target")
      self:session_exit(5)
    end
    self.manager:stop_unit(self.unit)
  else
    kill_and_wait(self.awesome_pid)
  end
  kill_and_wait(self.xvfb_pid)
  if self.session then
    -- dbus-run-session ends once the session script's children (Awesome,
    -- Xvfb) have; should it not, it and what it started are killed, so
    -- close(), which waits for it, cannot hang.
    local sp = self.session_pid
    if sp and not harness.wait_until(10, function() return not harness.alive(sp) end) then
      for _, d in ipairs(harness.descendants(sp)) do testkit.kill(d, 9) end
      testkit.kill(sp, 9)
    end
    self.session:close()
    self.session = nil
  end
  run("rm -rf " .. shq(self.dir))
  if self.rcdir then run("rm -rf " .. shq(self.rcdir)) end
end

--- The environment Awesome runs with, as NAME=value strings.
local function awesome_env()
  return {
    "LUA_PATH=" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;;",
    "LUA_CPATH=" .. build .. "/?.so;;",
  }
end
harness.awesome_env = awesome_env

--- The drop-in that runs session/awesome.service (installed verbatim)
-- headless under a spec's manager: the environment of this session, our
-- rc.lua, and `extra` lines for [Service] (WatchdogSec=3, say).  With
-- `via_session`, DISPLAY, the bus and PATH are left to the session command,
-- which hands them to the manager.
function harness.dropin_text(rc, wm, extra, via_session)
  local env = awesome_env()
  if not via_session then
    env[#env + 1] = "DISPLAY=" .. wm.display
    env[#env + 1] = "DBUS_SESSION_BUS_ADDRESS=" .. wm.bus
    env[#env + 1] = "PATH=" .. tools .. ":/usr/local/bin:/usr/bin:/bin"
  end
  env[#env + 1] = "XDG_CACHE_HOME=" .. wm.dir .. "/cache"
  local lines = { "[Service]" }
  for _, e in ipairs(env) do lines[#lines + 1] = 'Environment="' .. e .. '"' end
  lines[#lines + 1] = "ExecStart="
  lines[#lines + 1] = "ExecStart=/usr/bin/awesome -c " .. rc
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  return table.concat(lines, "\n") .. "\n"
end

--- The session's units, each as it is shipped, into the manager.
function harness.install_session_units(mgr)
  local _, out = run("ls " .. shq(root .. "/session"))
  for name in out:gmatch("[^\n]+") do
    if name:match("%.service$") or name:match("%.target$") then
      writefile(mgr.unitdir .. "/" .. name, assert(readfile(root .. "/session/" .. name)))
    end
  end
end

--- The environment of this X session, as a sh prefix: what ~/.xsession
-- would run the session command with.  `vars` ({NAME = value}) adds to it
-- or replaces a variable (values may hold anything: they are quoted).
function Awesome:session_env(vars)
  local m = self.manager.env
  local env = {
    DISPLAY = self.display, DBUS_SESSION_BUS_ADDRESS = self.bus,
    XDG_RUNTIME_DIR = m.XDG_RUNTIME_DIR, HOME = m.HOME,
    PATH = tools .. ":/usr/local/bin:/usr/bin:/bin",
  }
  for k, v in pairs(self.session_vars or {}) do env[k] = v end
  for k, v in pairs(vars or {}) do env[k] = v end
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  local words = { "env -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID" }
  for _, k in ipairs(names) do words[#words + 1] = k .. "=" .. shq(env[k]) end
  return table.concat(words, " ") .. " "
end

--- Runs the session command in the background, in a process group (and
-- session) of its own as xinit runs its client: `wm.session_pid` is its pid
-- and process group.  Its stdout and stderr go to DIR/session-command.log
-- and its exit status to DIR/session-command.rc.
function Awesome:run_session_command()
  local pidfile = self.dir .. "/session-command.pid"
  local cmd = ("setsid -w sh -c 'echo $$ >\"$1\"; shift; exec \"$@\"' sh %s %s sh %s >%s 2>&1 "
    .. "</dev/null; echo $? >%s"):format(
    shq(pidfile), self:session_env(), shq(root .. "/session/awesome-session"),
    shq(self.dir .. "/session-command.log"), shq(self.dir .. "/session-command.rc"))
  run("(" .. cmd .. ") >/dev/null 2>&1 &")
  self.session_pid = harness.wait_until(5, function() return tonumber(readfile(pidfile) or "") end)
end

--- Waits up to `timeout` seconds for the session command to exit.
-- @treturn[1] number its exit status
-- @return[2] nil, what it printed so far
function Awesome:session_exit(timeout)
  local rcfile = self.dir .. "/session-command.rc"
  local code = harness.wait_until(timeout, function()
    return tonumber(readfile(rcfile) or "")
  end)
  return code, readfile(self.dir .. "/session-command.log") or ""
end

--- Installs the session's units and the drop-in, then starts Awesome: the
-- unit alone, or through the session command.  Waits until it is active.
function Awesome:start_unit(args)
  local mgr = self.manager
  local dropin = mgr.env.HOME .. "/.config/systemd/user/" .. self.unit .. ".d"
  run("mkdir -p " .. shq(dropin))
  writefile(dropin .. "/clua-spec.conf",
    harness.dropin_text(self.rc, self, args.unit_extra, args.session))
  harness.install_session_units(mgr)
  if self.unit ~= "awesome.service" then
    writefile(mgr.unitdir .. "/" .. self.unit, assert(readfile(root .. "/session/awesome.service")))
  end
  assert(mgr:systemctl("daemon-reload"))
  if args.session then
    self.session_vars = args.session_env
    self:run_session_command()
  else
    mgr:start(self.unit)
  end
  if args.wait == false then return true end
  -- Type=notify: active only once clua.awesome sent READY=1.
  local ok, state = mgr:wait_for(self.unit, "ActiveState", "active", args.timeout or 20)
  if not ok then
    local log = args.session and ("\n--- session command ---\n" ..
      (readfile(self.dir .. "/session-command.log") or "")) or ""
    return nil, self.unit .. " is " .. tostring(state) .. ", not active\n" .. self:logtail() .. log
  end
  return true
end

--- Starts a headless Awesome.
-- @tparam table args
-- @tparam string args.rc path of the rc.lua (see `harness.rc`)
-- @tparam[opt=20] number args.timeout seconds to wait for it to answer
-- @param[opt] args.manager a support.systemd manager: run Awesome as its
--   unit `args.unit` (default "awesome.service") instead
-- @tparam[opt] {string,...} args.unit_extra lines added to [Service]
-- @tparam[opt] boolean args.session start it through the session command
-- @tparam[opt] table args.session_env variables ({NAME = value}) the
--   session command gets besides DISPLAY, the bus, HOME, PATH... (see
--   `Awesome:session_env`), as ~/.xsession would export them
-- @tparam[opt=true] boolean args.wait false: with `manager`, return once
--   the unit (or the session command) is started, without waiting for
--   Awesome (then call `wm:wait_ready()`)
-- @tparam[opt] boolean args.display_only start Xvfb and the bus, not Awesome
-- @param[opt] args.etc a support.private_etc copy to run the session on
-- @tparam[opt] table args.env variables (`{NOTIFY_SOCKET = "@x"}`) for
--   Awesome alone, not for the bus or Xvfb (when the harness starts
--   Awesome itself: not with `manager` or `display_only`)
-- @treturn[1] the Awesome object: fields `display`, `bus`, `dir`, `rc`;
--   methods `client`, `try_client`, `pid`, `restart`, `wait_ready`, `stop`
-- @return[2] nil, why
function harness.start(args)
  local self = setmetatable({
    rc = assert(args.rc, "harness.start: rc expected"),
    dir = mktemp_dir(),
    manager = args.manager,
    unit = args.unit or "awesome.service",
  }, Awesome)
  self.rcdir = self.rc:match("^(.*/clua%-awesome%.[^/]+)/rc%.lua$")
  local env = awesome_env()
  env[#env + 1] = "XDG_CACHE_HOME=" .. self.dir .. "/cache"
  env[#env + 1] = "XDG_CONFIG_HOME=" .. self.dir .. "/config"
  local assigns = {}
  for _, e in ipairs(env) do
    local k, v = e:match("^([^=]+)=(.*)$")
    assigns[#assigns + 1] = k .. "=" .. shq(v)
  end
  if args.env then
    local lines = {}
    for k, v in pairs(args.env) do lines[#lines + 1] = "export " .. k .. "=" .. shq(v) end
    writefile(self.dir .. "/awesome.env", table.concat(lines, "\n") .. "\n")
  end
  -- The session's own sh writes its pid, then execs: that is
  -- dbus-run-session's pid.  Its report lines go to a file, read below
  -- with a deadline.
  local report = self.dir .. "/session.out"
  local cmd = "echo $$ >" .. shq(self.dir .. "/session.pid") .. "; " ..
    "exec env -u LUA_PATH_5_3 -u LUA_CPATH_5_3 -u LUA_INIT -u LUA_INIT_5_3 " ..
    "-u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID -u XDG_RUNTIME_DIR " ..
    table.concat(assigns, " ") .. " " ..
    (args.etc and (args.etc:prefix() .. " ") or "") ..
    "dbus-run-session -- sh " .. shq(root .. "/spec/support/xvfb-session") .. " " ..
    shq(self.dir) .. ((self.manager or args.display_only) and "" or " " .. shq(self.rc)) ..
    " >" .. shq(report) .. " 2>" .. shq(self.dir .. "/session.log")
  self.session = assert(io.popen(cmd, "r"))
  local LIMIT = 30
  local ended = shell.poll(LIMIT, function()
    self.session_pid = self.session_pid or tonumber(readfile(self.dir .. "/session.pid") or "")
    local text = readfile(report) or ""
    if text:find("\nready\n") or text:find("^ready\n") or text:find("\nerror ")
      or text:find("^error ") then
      return "reported"
    end
    if self.session_pid and not harness.alive(self.session_pid) then return "ended" end
  end)
  for line in (readfile(report) or ""):gmatch("[^\n]+") do
    local key, value = line:match("^(%S+) ?(.*)$")
    if key == "xvfb" then self.xvfb_pid = tonumber(value)
    elseif key == "display" then self.display = value
    elseif key == "bus" then self.bus = value
    elseif key == "awesome" then self.awesome_pid = tonumber(value)
    elseif key == "error" then self.err = value
    elseif key == "ready" then break
    end
  end
  if self.err or ended ~= "reported" or not self.display then
    local why = self.err
      or (not ended and shell.timed_out(LIMIT, "Xvfb and the session bus to start") .. ": "
        .. (readfile(self.dir .. "/session.log") or ""))
      or ("session ended early: " .. (readfile(self.dir .. "/session.log") or ""))
    self:stop()
    return nil, why
  end
  if args.display_only then return self end
  if self.manager then
    local ok, why = self:start_unit(args)
    if not ok then
      self:stop()
      return nil, why
    end
    if args.wait == false then return self end
  end
  local ok, why = self:wait_ready(args.timeout)
  if not ok then
    self:stop()
    return nil, why
  end
  return self
end

return harness
