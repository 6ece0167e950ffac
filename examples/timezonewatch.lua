#!/usr/bin/env lua
--- Print one line per timezone change, the moment it happens, with the time
-- in the new zone.
--
--     lua examples/timezonewatch.lua [COUNT [PATH]]
--
-- `sudo timedatectl set-timezone Asia/Tokyo` prints
-- "timezone Etc/UTC -> Asia/Tokyo: 06:15 JST". With COUNT it exits after
-- that many changes; PATH watches another zone file than /etc/localtime
-- (run it with TZ=:PATH for os.date to follow that one).
--
-- `w:wait()` blocks in poll(2), which suits a standalone script like this
-- one; a program with a main loop watches `w:fd()` for readability there
-- and calls `w:read()` instead. Either way `clua.tzset()` is what makes
-- os.date follow: the C library does not read the zone again by itself.
local clua = require("clua")

local count = tonumber(arg and arg[1])
local path = arg and arg[2]
local watch = assert(clua.timezonewatch(path))

io.stdout:setvbuf("line")
print(("watching %s (zone %s)"):format(path or "/etc/localtime", tostring(watch:zone())))

local seen = 0
while not count or seen < count do
    local change, err = watch:wait()
    if change then
        seen = seen + 1
        assert(clua.tzset())
        print(("timezone %s -> %s: %s"):format(tostring(change.old), change.new,
            os.date("%H:%M %Z")))
    elseif err then
        io.stderr:write("timezonewatch: ", err, "\n")
        os.exit(1)
    end
end
watch:close()
