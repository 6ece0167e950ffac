--- What the specs, their harnesses and the benchmarks share for talking to
-- the system from plain Lua: shell commands and waits, each with a time
-- limit; whole files; temporary folders.
--
-- The rule (HACKING.md, "Build and test"): nothing in the suite waits without
-- a limit, and a limit that expires fails the test with a message naming
-- what it waited for, never a hang:
--
--    local shell = require("support.shell")
--    local ok, out, rc = shell.run("make -s doc", { timeout = 120, what = "make doc" })
--    shell.run("sleep 100", 1)   --> error: timed out after 1 s waiting for `sleep 100`
--    local pid = shell.wait_for("the pid file", 5, function()
--      return shell.read_file(dir .. "/pid")
--    end)                        --> error after 5 s: timed out after 5 s waiting for the pid file
--
-- `run` gives every command a limit (60 s unless told): `timeout -k`
-- ends it, and every process it started that stayed in its process group,
-- and the test fails.  `wait_for` polls a condition until a deadline and
-- fails the same way; `poll` is the same wait without failing, for a
-- caller that reports itself.  Both use CLOCK_MONOTONIC (testkit), or
-- /proc/uptime where testkit is not built: other specs step the wall clock.
--
-- Loaded under every Lua the suite runs (5.1 to 5.5, LuaJIT), under
-- valgrind and the sanitizers; plain Lua only.
-- @module support.shell

local shell = {}

--- The limit, in seconds, of a command run without one.
shell.DEFAULT_LIMIT = 60

-- How long `timeout` waits after SIGTERM before SIGKILL.
local KILL_AFTER = 2

local unpack = table.unpack or unpack
local function pack(...) return { n = select("#", ...), ... } end
local has_testkit, testkit = pcall(require, "testkit")
if not has_testkit then testkit = nil end

--- Seconds on a clock nobody steps (CLOCK_MONOTONIC; /proc/uptime without
-- testkit), as a float.
function shell.now()
  if testkit then return testkit.now("monotonic") end
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("*n")
  f:close()
  return t
end

--- Sleeps `s` seconds.
function shell.sleep(s)
  if testkit then return testkit.sleep(s) end
  os.execute("sleep " .. string.format("%.3f", s))
end

--- Quotes a string for sh.
function shell.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The whole content of a file, or nil when it cannot be read.
function shell.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Writes text to a file, replacing it; raises on failure.
function shell.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

-- What a command is called in a message: its first line, shortened.
local function name_of(cmd)
  local first = tostring(cmd):match("^%s*([^\n]*)")
  if #first > 100 then first = first:sub(1, 97) .. "..." end
  return "`" .. first .. "`"
end

-- The last `n` lines of a text, for a message.
local function tail(text, n)
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

--- The message of a wait that ran out of time:
-- "timed out after N s waiting for WHAT".
function shell.timed_out(limit, what)
  return ("timed out after %g s waiting for %s"):format(limit, what)
end

--- Runs a shell command (sh -c) with a time limit; returns ok (exit
-- status 0), its output (stdout and stderr together, trailing newline
-- removed) and the exit status.  Its stdin is /dev/null.  Works the same
-- under every Lua (5.1's io.popen():close() gives no status).
--
-- The output goes through a temporary file, not a pipe: a process the
-- command leaves running in the background cannot keep `run` waiting.
-- Past the limit, `timeout -k` sends SIGTERM to the command's process group
-- (then SIGKILL 2 s later) and `run` raises
-- "timed out after N s waiting for WHAT", followed by the last lines the
-- command printed.
-- @tparam string cmd
-- @tparam[opt] number|table opts the limit in seconds, or a table:
--   `timeout` (seconds, default `DEFAULT_LIMIT`), `what` (the message's
--   name for it, default the command's first line)
function shell.run(cmd, opts)
  if type(opts) ~= "table" then opts = { timeout = opts } end
  local limit = opts.timeout or shell.DEFAULT_LIMIT
  local outfile = os.tmpname()
  local t0 = shell.now()
  local p = assert(io.popen(("timeout -k %d %g sh -c %s >%s 2>&1 </dev/null; echo \"$?\"")
    :format(KILL_AFTER, limit, shell.quote(cmd), shell.quote(outfile))))
  local status = p:read("*a")
  p:close()
  local took = shell.now() - t0
  local out = shell.read_file(outfile) or ""
  os.remove(outfile)
  local rc = tonumber(status:match("(%d+)%s*$"))
  out = out:gsub("\n$", "")
  -- 124: timeout sent SIGTERM; 137: it had to send SIGKILL.  A command
  -- exiting so by itself before the limit is not a timeout.
  if (rc == 124 or rc == 137) and took >= limit - 0.05 then
    local printed = tail(out, 10)
    error(shell.timed_out(limit, opts.what or name_of(cmd))
      .. (printed ~= "" and ("; its last output:\n" .. printed) or ""), 2)
  end
  return rc == 0, out, rc
end

--- Calls `f()` every `step` seconds (default 0.05) until it returns a true
-- value or `timeout` seconds passed; returns what it returned, or nil and
-- the second value it returned the last time (what it saw; the caller
-- reports).
function shell.poll(timeout, f, step)
  local deadline = shell.now() + timeout
  local r
  repeat
    r = pack(f())
    if r[1] then return unpack(r, 1, r.n) end
    shell.sleep(step or 0.05)
  until shell.now() > deadline
  r = pack(f())
  if r[1] then return unpack(r, 1, r.n) end
  return nil, r[2]
end

--- Like `poll`, but a wait that runs out fails the test:
-- "timed out after TIMEOUT s waiting for WHAT", followed by "; last seen:
-- X" when `f` returned false or nil and a second value X (what it saw).
-- @tparam string what what is waited for ("the unit to be active")
-- @tparam number timeout seconds
-- @tparam function f the condition
-- @tparam[opt=0.05] number step seconds between two calls
-- @return what `f` returned
function shell.wait_for(what, timeout, f, step)
  local r = pack(shell.poll(timeout, f, step))
  if r[1] then return unpack(r, 1, r.n) end
  error(shell.timed_out(timeout, what)
    .. (r[2] ~= nil and ("; last seen: " .. tostring(r[2])) or ""), 2)
end

--- Notes, for `make check`'s report, that the running test had to take a
-- measurement again (`why`: what disturbed the first one).  The suite
-- retries nothing by itself; a spec that retakes a measurement disturbed
-- from outside (another program setting the clock) says so here, and the
-- report lists it.  Does nothing outside `make check`.
function shell.retried(why)
  local path = os.getenv("CLUA_TIMINGS")
  if not path or path == "" then return end
  local f = io.open(path, "a")
  if not f then return end
  f:write("retry\t", (tostring(why):gsub("[\t\n]", " ")), "\n")
  f:close()
end

--- The state letter of process `pid` in /proc/PID/stat ("Z" for a
-- zombie) and its parent's pid; nil when it does not exist (also when it
-- vanishes between open and read).  The command name may hold ") ": the
-- fields are read after the last one.
function shell.proc_stat(pid)
  local line = shell.read_file("/proc/" .. pid .. "/stat")
  if not line then return nil end
  local state, ppid = line:match(".*%) (%S) (%d+)")
  return state, tonumber(ppid)
end

--- Whether process `pid` runs (a zombie counts as gone: its parent may be
-- a subreaper that has not reaped it yet).
function shell.alive(pid)
  local state = shell.proc_stat(pid)
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- A fresh temporary folder (mktemp -d), named after `prefix`.
function shell.mktemp_dir(prefix)
  local ok, dir = shell.run("mktemp -d -t " .. shell.quote((prefix or "clua") .. ".XXXXXX"))
  assert(ok, "mktemp: " .. dir)
  return dir
end

return shell
