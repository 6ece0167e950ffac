--- The Lua arms of the reaping benchmark (row 4): for each ARM, forks N
-- children in waves of WAVE, waits until every child of a wave is a zombie,
-- then times a Lua loop reaping them with clua.reap() (ARM clua) or
-- luaposix's wait(-1, WNOHANG) (ARM luaposix); the arms take turns, one wave
-- each.  Prints "ARM reaped COUNT seconds SECONDS" per arm (reap loop time
-- only).
--
--    lua5.3 bench/reap.lua N WAVE ARM...
--
-- build/bench/reap_c is the same thing in C.

local lib = require("bench.lib")
local unistd = require("posix.unistd")

local total, wave = tonumber(arg[1]), tonumber(arg[2])
assert(total and wave and arg[3], "usage: reap.lua N WAVE ARM...")

local function reaper(arm)
  if arm == "clua" then
    local clua = assert(lib.clua())
    return assert(clua.reap, "clua.reap: not built (make bench builds it)")
  elseif arm == "luaposix" then
    local wait = require("posix.sys.wait")
    local waitpid, WNOHANG = wait.wait, wait.WNOHANG
    return function() return waitpid(-1, WNOHANG) end
  end
  error("unknown arm " .. tostring(arm))
end

local function is_zombie(pid)
  return lib.proc_stat(pid) == "Z"
end

-- One wave: up to n children, all zombies before the clock starts.
local function wave_of(reap, n)
  local pids = {}
  for _ = 1, n do
    local pid = unistd.fork()
    if pid == nil then break end -- EAGAIN under the pids limit
    if pid == 0 then unistd._exit(0) end
    pids[#pids + 1] = pid
  end
  assert(#pids > 0, "fork failed")
  for _, pid in ipairs(pids) do
    while not is_zombie(pid) do lib.sleep(0.001) end
  end
  local got = 0
  local t0 = lib.now()
  while true do
    local pid = reap()
    if not pid or pid == 0 then break end
    got = got + 1
  end
  return got, lib.now() - t0
end

local arms = {}
for i = 3, #arg do
  arms[#arms + 1] = { name = arg[i], reap = reaper(arg[i]), reaped = 0, spent = 0 }
end
-- The arms take turns, a wave each, so they share the machine's ups and
-- downs.
local busy = true
while busy do
  busy = false
  for _, a in ipairs(arms) do
    if a.reaped < total then
      local got, spent = wave_of(a.reap, math.min(wave, total - a.reaped))
      a.reaped, a.spent = a.reaped + got, a.spent + spent
      busy = true
    end
  end
end
for _, a in ipairs(arms) do
  print(string.format("%s reaped %d seconds %.9f", a.name, a.reaped, a.spent))
end
