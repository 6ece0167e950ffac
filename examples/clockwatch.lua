#!/usr/bin/env lua
--- Print one line per wall-clock change, the moment it happens.
--
--     lua examples/clockwatch.lua [COUNT]
--
-- A step (by hand, or by NTP) prints "clock stepped +3.000 s", a resume
-- from suspend "resumed after 612.4 s asleep". With COUNT it exits after
-- that many changes. Try it with `sudo date -s "@$(date +%s.%N)"` (sets
-- the clock to its own value: a change of about 0 s).
--
-- `w:wait()` blocks in poll(2), which suits a standalone script like this
-- one; a program with a main loop watches `w:fd()` for readability there
-- and calls `w:read()` instead.
local clua = require("clua")

local count = tonumber(arg and arg[1])
local watch = assert(clua.clockwatch())

io.stdout:setvbuf("line")
print("watching the wall clock (" .. tostring(watch) .. ")")

local seen = 0
while not count or seen < count do
    local change, err = watch:wait()
    if change then
        seen = seen + 1
        if change.suspended >= 0.001 then
            print(("resumed after %.1f s asleep"):format(change.suspended))
        else
            print(("clock stepped %+.3f s"):format(change.jump))
        end
    elseif err then
        io.stderr:write("clockwatch: ", err, "\n")
        os.exit(1)
    end
end
watch:close()
