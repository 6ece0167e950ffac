--- One arm of the reaping benchmark (row 4): forks N children in waves of
-- WAVE, waits until every child of a wave is a zombie, then times a Lua loop
-- reaping them with either clua.reap() or luaposix's wait(-1, WNOHANG).
-- Prints "reaped COUNT seconds SECONDS" (reap loop time only).
--
--    lua5.3 bench/reap.lua clua|luaposix N WAVE
--
-- build/bench/reap_c is the same thing in C.

local lib = require("bench.lib")
local unistd = require("posix.unistd")

local arm, total, wave = arg[1], tonumber(arg[2]), tonumber(arg[3])
assert(arm and total and wave, "usage: reap.lua clua|luaposix N WAVE")

local reap
if arm == "clua" then
  local clua = assert(lib.clua())
  reap = assert(clua.reap, "clua.reap: not built yet")
elseif arm == "luaposix" then
  local wait = require("posix.sys.wait")
  local waitpid, WNOHANG = wait.wait, wait.WNOHANG
  reap = function() return waitpid(-1, WNOHANG) end
else
  error("unknown arm " .. tostring(arm))
end

local function is_zombie(pid)
  local s = lib.readfile("/proc/" .. pid .. "/stat")
  return s ~= nil and s:match("%) (%S)") == "Z"
end

local reaped, spent = 0, 0
while reaped < total do
  local pids = {}
  for _ = 1, math.min(wave, total - reaped) do
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
  spent = spent + lib.now() - t0
  reaped = reaped + got
end
print(string.format("reaped %d seconds %.9f", reaped, spent))
