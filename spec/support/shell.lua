--- What the specs and their harnesses share for talking to the system from
-- plain Lua: shell commands, whole files, temporary folders.
-- @module support.shell

local shell = {}

--- Quotes a string for sh.
function shell.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; returns ok (exit status 0), its output (stdout and
-- stderr together, trailing newline removed) and the exit status. Works
-- the same under every Lua (5.1's io.popen():close() gives no status).
function shell.run(cmd)
  local f = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"::rc=$?\""))
  local out = f:read("*a")
  f:close()
  local rc = tonumber(out:match("::rc=(%d+)%s*$"))
  out = out:gsub("::rc=%d+%s*$", ""):gsub("\n$", "")
  return rc == 0, out, rc
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
