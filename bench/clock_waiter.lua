--- The watcher of row 2(a): a standalone Lua process blocked in poll on a
-- clua.clockwatch(); on each clock change it appends to FILE the
-- CLOCK_MONOTONIC time (seconds) at which its handler started, first thing,
-- then drains the event.  Runs until killed; writes a line "0 ready" once it
-- is about to block for the first time.
--
--    lua5.3 bench/clock_waiter.lua FILE
--
-- It blocks in w:wait() (clua's own poll) when the module has it, else in
-- luaposix's poll on w:fd().

local lib = require("bench.lib")
local clua = assert(lib.clua())
local ptime = require("posix.time")

local out = assert(io.open(assert(arg[1], "usage: clock_waiter.lua FILE"), "a"))
out:setvbuf("no")
local w = assert(clua.clockwatch())

local wait
if w.wait then
  wait = function() return w:wait() end
else
  local rpoll = require("posix.poll").rpoll
  local fd = w:fd()
  wait = function()
    rpoll(fd, -1)
    return w:read()
  end
end

local gettime, MONO = ptime.clock_gettime, ptime.CLOCK_MONOTONIC
out:write("0 ready\n")
while true do
  -- The stamp is taken in the handler, after wait() returned and drained
  -- the fd: that is when a user's handler would run.
  if wait() then
    local t = gettime(MONO)
    out:write(string.format("%d.%09d\n", t.tv_sec, t.tv_nsec))
  end
end
