--- The notify benchmark's worker (row 5): sends WATCHDOG=1 to
-- $NOTIFY_SOCKET through each ARM in turn, CHUNK calls at a time, ROUNDS
-- times (so the arms share the machine's ups and downs), and prints one
-- line per arm: "ARM calls N seconds S".
--
--    NOTIFY_SOCKET=PATH lua5.3 bench/notify_worker.lua ROUNDS CHUNK ARM...
--
-- ARM: clua (clua.notify_watchdog()), lua-systemd (systemd.daemon's
-- kick_dog()), systemd-notify (fork and exec `systemd-notify WATCHDOG=1`
-- and wait for it, what a Lua program without a binding would do; it runs
-- CHUNK/200 times a chunk, at least once: it is a few hundred times slower).

local lib = require("bench.lib")

local rounds, chunk = tonumber(arg[1]), tonumber(arg[2])
assert(rounds and chunk and arg[3], "usage: notify_worker.lua ROUNDS CHUNK ARM...")

local function sender(arm)
  if arm == "clua" then
    return assert(lib.clua()).notify_watchdog, chunk
  elseif arm == "lua-systemd" then
    return require("systemd.daemon").kick_dog, chunk
  elseif arm == "systemd-notify" then
    local unistd = require("posix.unistd")
    local wait = require("posix.sys.wait").wait
    return function()
      local pid = assert(unistd.fork())
      if pid == 0 then
        unistd.execp("systemd-notify", { "WATCHDOG=1" })
        unistd._exit(127)
      end
      local _, how, code = wait(pid)
      return how == "exited" and code == 0
    end, math.max(1, chunk // 200)
  end
  error("unknown arm " .. tostring(arm))
end

local arms = {}
for i = 3, #arg do
  local send, n = sender(arg[i])
  assert(send() == true, arg[i] .. ": the first send failed (is NOTIFY_SOCKET set?)")
  arms[#arms + 1] = { name = arg[i], send = send, n = n, calls = 0, spent = 0 }
end
for _ = 1, rounds do
  for _, a in ipairs(arms) do
    local send = a.send
    local t0 = lib.now()
    for _ = 1, a.n do send() end
    a.spent = a.spent + lib.now() - t0
    a.calls = a.calls + a.n
  end
end
for _, a in ipairs(arms) do
  print(string.format("%s calls %d seconds %.9f", a.name, a.calls, a.spent))
end
