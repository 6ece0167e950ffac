---------------------------------------------------------------------------
--- Keep Awesome healthy on a systemd desktop, with one line in rc.lua.
--
--    local cluawm = require("clua.awesome")
--    cluawm.setup { subreaper = true, clock = true, watchdog = true, stall = 10 }
--
-- * **subreaper**: orphans of the programs Awesome starts re-parent to
--   Awesome instead of init, and are reaped there; neither they nor the
--   programs awful.spawn starts leave an "Unknown child" line in its log.
-- * **clock**: a wall-clock change (resume from suspend, NTP, `date -s`) is
--   seen the moment it happens: the `clua::clock_changed` signal is emitted
--   and every `wibox.widget.textclock` shows the right time at once.
-- * **timezone**: a change of `/etc/localtime` (`timedatectl set-timezone`,
--   travel) is seen the moment it happens: the C library reloads the zone
--   (so `os.date` follows), every textclock shows the new zone and the
--   `clua::timezone_changed` signal is emitted.
-- * **watchdog**: under a systemd user service with `WatchdogSec=`, a timer
--   feeds the watchdog, so a hung Awesome is killed and restarted.
-- * **stall**: a runaway Lua loop is interrupted with a traceback after
--   `stall` seconds without the main loop turning. The guard follows
--   Awesome's GLib main loop: nothing wakes an idle Awesome.
-- * **scopes**: under a systemd user manager, every application launched
--   with `awful.spawn` runs in a systemd scope of its own in `app.slice`, so
--   a watchdog kill or a crash of Awesome takes no application with it.
-- * **restore**: every window keeps its tags, screen and floating,
--   minimised and maximised state across any restart of Awesome.
--
-- Awesome >= 4.3 reaps its children in its own SIGCHLD handler; this module
-- never touches SIGCHLD and never reaps a child someone waits for (a
-- `waitpid(-1)` from Lua would steal the exit status `awful.spawn.easy_async`
-- waits for).  It gives every program awesome.spawn starts an exit callback,
-- so that Awesome knows it, and reaps, each by its pidfd, only the orphans
-- Awesome adopted and cannot know.
--
-- @author clua
-- @module clua.awesome
---------------------------------------------------------------------------

local capi = { awesome = awesome, client = client, screen = screen }
local setmetatable = setmetatable
local tostring = tostring
local tonumber = tonumber
local type = type
local error = error
local pairs = pairs
local select = select
local string = string
local table = table
local getmetatable = getmetatable
local ipairs = ipairs
local math = math
local os = os
local pcall = pcall
local unpack = table.unpack or unpack -- luacheck: compat (Lua 5.1 and LuaJIT: unpack)

local EINTR = 4     -- Linux errno

local clua = require("clua")
local lgi = require("lgi")
local gtimer = require("gears.timer")
local gdebug = require("gears.debug")
local protected_call = require("gears.protected_call")

local cluawm = {}

-- Each feature is a small table named after its option, with its own
-- state and `start(option)`, `status()` (its lines of status(), while its
-- option is on), `summary()` where it has a piece of systemd's STATUS=
-- line, and `stop(restart)` where something must be undone when Awesome
-- exits.  setup() starts them in order, and one `exit` handler
-- stops them in reverse order (Public API, at the end).  The glue ships
-- with the clua module of the same version: every clua function it calls
-- exists, and nothing here probes for one.

-- Reports an error without raising: on stderr through gears.debug and as
-- the `debug::error` signal, which Awesome's default rc.lua turns into a
-- notification.
local function report(message)
    message = "clua.awesome: " .. tostring(message)
    gdebug.print_error(message)
    protected_call(capi.awesome.emit_signal, "debug::error", message)
end

-- A feature that could not start: `call` (the clua function that failed)
-- said why; status() says it too.
local function failed(feature, call, msg)
    feature.error = msg
    report(call .. ": " .. tostring(msg))
end

-- status()'s line for a feature whose option is on but that did not start.
local function failed_line(feature)
    return feature.name .. ": failed: " .. tostring(feature.error)
end

-- Wraps a main-loop callback: it runs through gears.protected_call (an
-- error is reported with its traceback) and the wrapper always returns
-- true, because lgi removes a GLib source whose callback returns false or
-- raises.
local function keep_source(f)
    return function(...)
        protected_call(f, ...)
        return true
    end
end

-- systemd notification and watchdog -------------------------------------

-- A failed send is reported once, not at every heartbeat: a manager that
-- stops reading its socket makes every call fail at once (EAGAIN; none
-- ever waits) until it reads again.  Once a message gets through, the
-- next failure is reported anew.  `call` names the clua function whose
-- results `ok, msg` are: sent("notify_watchdog", clua.notify_watchdog()).
local notify_failing = false

local function sent(call, ok, msg)
    if ok == nil and not notify_failing then
        notify_failing = true
        report(call .. ": " .. tostring(msg) ..
            " (reported once; clua.awesome goes on, and says so again after a success)")
    elseif ok then
        notify_failing = false
    end
    return ok
end

-- The one-line summary sent as systemd's STATUS=: "clua: " and the piece
-- of each feature that counts something, in setup's order (the subreaper,
-- the clock and the stall breaker add their `summary` below), or "idle".
local summaries = {}

local function status_line()
    local parts = {}
    for _, summary in ipairs(summaries) do
        local part = summary()
        if part then parts[#parts + 1] = part end
    end
    return "clua: " .. (#parts > 0 and table.concat(parts, "; ") or "idle")
end

-- READY=1, RELOADING=1, STOPPING=1 and STATUS= go out whenever a service
-- manager listens (each call is a no-op returning false without
-- NOTIFY_SOCKET), so a Type=notify unit without WatchdogSec= starts too.
-- The heartbeat timer runs only when the watchdog is on for this pid.
local watchdog = {
    name = "watchdog",
    managed = false,    -- a service manager listens (NOTIFY_SOCKET set)
    usec = nil,         -- WatchdogSec= in microseconds, when on for this pid
    heartbeat = nil,    -- the gears.timer feeding the watchdog
    heartbeats = 0,
    ready_sent = false,
}

-- Tells systemd what changed (STATUS=), once READY=1 went out to a manager
-- that listens: the status line scans /proc for children, work not worth
-- doing for nobody.
function watchdog.changed()
    if watchdog.ready_sent and watchdog.managed then
        sent("notify_status", clua.notify_status(status_line()))
    end
end

local function send_ready()
    if watchdog.ready_sent then return end
    watchdog.ready_sent = true
    sent("notify_ready", clua.notify_ready(status_line()))
end

function watchdog.start()
    watchdog.managed = os.getenv("NOTIFY_SOCKET") ~= nil
    local usec = clua.watchdog_usec()
    if usec then
        watchdog.usec = usec
        watchdog.heartbeat = gtimer {
            timeout = usec / 1e6 / 2,
            autostart = true,
            callback = function()
                if sent("notify_watchdog", clua.notify_watchdog()) then
                    watchdog.heartbeats = watchdog.heartbeats + 1
                end
            end,
        }
    end
    if capi.awesome.startup then
        capi.awesome.connect_signal("startup", send_ready)
    else
        -- setup() called after startup (from awesome-client, or late in a
        -- config loaded some other way).
        send_ready()
    end
end

function watchdog.stop(restart)
    if restart then
        -- The new image sends READY=1 again from its own setup().
        sent("notify_reloading", clua.notify_reloading())
    else
        sent("notify_stopping", clua.notify_stopping())
    end
end

function watchdog.status()
    if not watchdog.usec then
        return "watchdog: not enabled by a service manager"
    end
    return "watchdog: every " .. string.format("%g", watchdog.usec / 1e6) ..
        " s, heartbeat every " .. string.format("%g", watchdog.usec / 2e6) ..
        " s, " .. tostring(watchdog.heartbeats) .. " heartbeats sent"
end

-- Shared by the clock and the timezone ----------------------------------

-- Finds how this GLib/lgi watches an fd for readability.  Returns a name
-- for status() and a function(fd, callback[, priority]) -> source id
-- (priority: GLib.PRIORITY_DEFAULT unless given).  Looked up at setup time
-- (not at load time) so a test can hide a spelling.  These probes stay:
-- GLib's API is what varies between systems.
local function find_fd_watch()
    local GLib = lgi.GLib
    local IN = GLib.IOCondition.IN
    local DEFAULT = GLib.PRIORITY_DEFAULT
    -- GLib 2.74 with lgi 0.9.2 (Debian 12): only the *_full form exists.
    if GLib.unix_fd_add_full then
        return "GLib.unix_fd_add_full", function(fd, cb, priority)
            return GLib.unix_fd_add_full(priority or DEFAULT, fd, IN, cb)
        end
    end
    -- GLib >= 2.80 moved it to GLibUnix, and 2.88 dropped the old alias.
    local ok, GLibUnix = pcall(lgi.require, "GLibUnix")
    if ok and GLibUnix and GLibUnix.fd_add_full then
        return "GLibUnix.fd_add_full", function(fd, cb, priority)
            return GLibUnix.fd_add_full(priority or DEFAULT, fd, IN, cb)
        end
    end
    -- Works everywhere.  The channel does not own the fd (close-on-unref is
    -- off by default): the watch closes it.
    return "GLib.io_add_watch", function(fd, cb, priority)
        local channel = GLib.IOChannel.unix_new(fd)
        return GLib.io_add_watch(channel, priority or DEFAULT, IN, cb)
    end
end

-- Every textclock built since setup, weak-keyed so they stay collectable.
local textclocks = setmetatable({}, { __mode = "k" })

-- Makes every tracked textclock show the current time.
local function refresh_textclocks()
    for clock in pairs(textclocks) do
        protected_call(clock.force_update, clock)
    end
end

-- Why the constructor is wrapped: nothing in Awesome lists the textclocks
-- that exist (each owns a private weak gears.timer), and walking the widget
-- trees of all wiboxes would miss a textclock not shown at the moment.
-- Wrapping `wibox.widget.textclock`'s constructor (its metatable's __call)
-- sees every textclock built after setup(), which is where rc.lua builds
-- them.  The checks stay: they test Awesome's wibox, not clua, and a wibox
-- built some other way leaves the textclocks alone rather than failing.
local function track_textclocks()
    local ok, textclock = pcall(require, "wibox.widget.textclock")
    if not ok or type(textclock) ~= "table" then return end
    local mt = getmetatable(textclock)
    if not mt or type(mt.__call) ~= "function" or mt.__clua_wrapped then return end
    local new = mt.__call
    mt.__call = function(...)
        local widget = new(...)
        if widget then textclocks[widget] = true end
        return widget
    end
    mt.__clua_wrapped = true
end

-- A feature built on a clua watch whose fd wakes the main loop (the clock
-- and the timezone): its start() makes the watch with `new` (the clua
-- function named `call`), tracks the textclocks and calls the feature's
-- `readable()` at each wake-up.  Fields once started: `watch` (nil when it
-- could not be made, and `error` says why), `how` (the GLib call watching
-- its fd) and `source` (the GLib source id).
local function watch_feature(name, call, new)
    local feature = { name = name }
    function feature.start()
        local watch, msg = new()
        if not watch then return failed(feature, call, msg) end
        track_textclocks()
        local how, add = find_fd_watch()
        feature.watch, feature.how = watch, how
        feature.source = add(watch:fd(), keep_source(feature.readable))
    end
    return feature
end

-- The lines of status() for a watch: which fd, through which GLib call.
local function fd_via(feature)
    return "fd " .. tostring(feature.watch:fd()) .. " via " .. feature.how
end

-- Subreaper -------------------------------------------------------------

-- Orphans of the programs Awesome starts re-parent to Awesome, not init.
local subreaper = {
    name = "subreaper",
    on = false,         -- true once Awesome is a subreaper
    error = nil,        -- why it is not, when setsubreap failed
    sweep_timer = nil,  -- collects zombies, only when SIGCHLD has no handler
    swept = 0,
    known_children = false, -- awesome.spawn gives every program an exit callback
}

-- Programs Awesome knows.  Awesome 4.3 keeps a program it starts as a
-- child of its own only when the caller asks for its exit (awesome.spawn's
-- 6th argument, an exit callback): otherwise GLib forks twice and the
-- program is orphaned at once.  The subreaper makes Awesome adopt it, and
-- when it exits Awesome's SIGCHLD handler, finding a pid it never
-- registered, logs "Unknown child N exited with status S": one line for
-- every application started with plain awful.spawn.  So awesome.spawn (which
-- every awful.spawn function calls) gets an exit callback that does nothing
-- when its caller gave none: the program is then Awesome's registered
-- child from the start, reaped in silence, with the same pid, startup
-- notification and environment, and what it forks stays under Awesome.
-- A callback the caller gave is kept and called as before.  Each exit is
-- also the moment the program's own orphans pass to Awesome: see orphans.
local known = {
    -- Awesome's defaults for arguments 2 to 5: use_sn, stdin, stdout, stderr.
    DEFAULTS = { true, false, false, false },
    pids = {},          -- pid -> true: running, with an exit callback Awesome holds
}

-- Orphans of the programs Awesome started (a terminal's shell when the
-- terminal closes, what `with_shell("cmd &")` leaves running) are adopted
-- by Awesome too, and no callback can be registered for them: Awesome's
-- handler would log each as unknown.  clua reaps them itself, and nothing
-- else: at each exit of a known program (when its orphans have just passed
-- to Awesome) it lists Awesome's children, reaps the orphans that have
-- exited already, and watches each other one's pidfd at a priority above
-- Awesome's SIGCHLD handler, so that it reaps the orphan the moment it
-- exits, before that handler runs.  A child someone waits for is never
-- taken: not a known program (Awesome has its callback), not one that was
-- there before setup (rc.lua may have started it with a callback).  An
-- io.popen() child still running at such a moment is watched like an
-- orphan: if it exits while the main loop runs, before its close(), clua
-- reaps it where Awesome's handler would have (close() then has no status
-- in either case).
local orphans = {
    HANDOFF = "CLUA_AWESOME_CHILDREN",  -- the children an image left to the next
    -- At most this many pidfds at once: Awesome's own fds come first (its
    -- soft limit is 1024 on Debian, under systemd or not).  Orphans beyond
    -- are left to Awesome, which reaps them and logs each.
    MAX_WATCHED = 400,
    -- A pidfd turns readable only once its process has exited; one that
    -- wakes this often with nothing to reap is left to Awesome rather
    -- than spin the main loop.
    MAX_EMPTY_WAKES = 50,
    -- Seconds to wait, at a program's exit, for the orphans it has just
    -- handed over (see orphans.settle).
    SETTLE = 0.003,
    before = {},        -- pid -> true: children at setup, left to Awesome
    watched = {},       -- pid -> { watch = clua.childwatch, source = GLib source id,
                        --          empty = wakes with nothing to reap }
    count = 0,          -- entries in watched
    reaped = 0,
    error = nil,        -- why an orphan could not be watched, the last time
    add = nil,          -- function(fd, callback, priority) -> GLib source id
}

-- Forgets the watched orphan `pid`: closes its pidfd and, unless its own
-- callback is running (which then returns false), removes its source.
function orphans.forget(pid, in_callback)
    local entry = orphans.watched[pid]
    if not entry then return end
    orphans.watched[pid] = nil
    orphans.count = orphans.count - 1
    if entry.source and not in_callback then lgi.GLib.source_remove(entry.source) end
    entry.watch:close()
end

-- Reaps the watched orphan `pid` if it has exited.  Returns true once it
-- is gone: reaped here, or by someone else (an io.popen() closed).
function orphans.collect(pid, in_callback)
    local got, msg = orphans.watched[pid].watch:reap()
    if got == nil and msg == nil then return false end
    if got then orphans.reaped = orphans.reaped + 1 end
    orphans.forget(pid, in_callback)
    return true
end

-- Reaps every watched orphan that has exited.
function orphans.collect_all()
    for pid in pairs(orphans.watched) do orphans.collect(pid) end
end

-- Reaps the orphan `pid` now if it has exited, else watches it.  Returns
-- true when it is watched from now on (it was not, and still runs).
function orphans.watch(pid)
    local entry = orphans.watched[pid]
    local fresh = entry == nil
    if not entry then
        if orphans.count >= orphans.MAX_WATCHED then return end
        local watch, msg = clua.childwatch(pid)
        if not watch then
            if orphans.error == nil then report("childwatch: " .. tostring(msg)) end
            orphans.error = msg
            return
        end
        entry = { watch = watch, empty = 0 }
        orphans.watched[pid] = entry
        orphans.count = orphans.count + 1
    end
    if orphans.collect(pid) or entry.source then return false end
    entry.source = orphans.add(entry.watch:fd(), function()
        if orphans.watched[pid] ~= entry then return false end
        local done = protected_call(orphans.collect, pid, true)
        if done == nil then
            orphans.forget(pid, true)   -- the error is reported; no busy loop
            return false
        end
        -- Awesome's handler runs next (SIGCHLD woke it too): take every
        -- other orphan that has exited meanwhile, before it does.
        if done then protected_call(orphans.collect_all) end
        if not done then
            entry.empty = entry.empty + 1
            if entry.empty >= orphans.MAX_EMPTY_WAKES then
                orphans.forget(pid, true)
                return false
            end
        end
        return not done
    end, lgi.GLib.PRIORITY_HIGH)
    return fresh
end

-- Watches (or reaps) every child of Awesome nobody waits for.  Returns
-- the pids it watches from now on.
function orphans.scan()
    local kids = clua.children()
    if not kids then return {} end
    local here, fresh = {}, {}
    for _, pid in ipairs(kids) do
        here[pid] = true
        if not known.pids[pid] and not orphans.before[pid] and orphans.watch(pid) then
            fresh[#fresh + 1] = pid
        end
    end
    -- A child from before setup that is gone: its pid may name an orphan next.
    for pid in pairs(orphans.before) do
        if not here[pid] then orphans.before[pid] = nil end
    end
    return fresh
end

-- A program's own children often end with it, a moment after it: a
-- terminal's shell gets SIGHUP as the terminal closes.  The program's exit
-- callback runs inside Awesome's SIGCHLD handler, which goes on reaping
-- once it returns, and would take such an orphan exiting just then.  So
-- the orphans that exit has handed over get a bound of SETTLE seconds to
-- end, and are reaped here if they do; the others are watched as usual.
-- (A process that goes on, as a `cmd &` does, costs that bound once.)
function orphans.settle(pids)
    local GLib = lgi.GLib
    local deadline = GLib.get_monotonic_time() + orphans.SETTLE * 1e6
    for _, pid in ipairs(pids) do
        while orphans.watched[pid] do
            local left = (deadline - GLib.get_monotonic_time()) / 1e6
            if left <= 0 then return end
            local exited, _, errno = orphans.watched[pid].watch:wait(left)
            if exited then
                orphans.collect(pid)
            elseif errno ~= EINTR then
                break
            end
        end
    end
end

-- awesome.restart() exec's Awesome in place: the new image has the same
-- children and knows none of them (Awesome's list, like every exit
-- callback, is gone), so its handler would log each as unknown.  The old
-- image leaves their pids in the environment the exec passes on, and the
-- new setup() takes them as orphans; every other child there is left to
-- Awesome.
function orphans.start()
    orphans.add = select(2, find_fd_watch())
    local handed = {}
    for pid in (os.getenv(orphans.HANDOFF) or ""):gmatch("%d+") do
        handed[tonumber(pid)] = true
    end
    lgi.GLib.unsetenv(orphans.HANDOFF)
    for _, pid in ipairs(clua.children() or {}) do
        if handed[pid] then orphans.watch(pid) else orphans.before[pid] = true end
    end
end

function orphans.stop(restart)
    if not restart then return end
    local kids = clua.children()
    if kids and #kids > 0 then
        lgi.GLib.setenv(orphans.HANDOFF, table.concat(kids, " "), true)
    end
end

function orphans.status()
    return "orphans: " .. orphans.reaped .. " reaped by clua, " .. orphans.count .. " watched" ..
        (orphans.error and (", last error: " .. tostring(orphans.error)) or "")
end

-- A known program has exited: Awesome has already reaped it.
function known.exited(child)
    if child.pid then known.pids[child.pid] = nil end
    orphans.settle(orphans.scan())
end

local function pack(...) return { n = select("#", ...), ... } end

-- awesome.spawn(cmd, use_sn, stdin, stdout, stderr, exit_callback, env)
-- through `spawn`, with an exit callback always.  Any call this does not
-- understand goes through exactly as it was, so Awesome answers a bad
-- argument as it always has: a command that is not a string or a table,
-- an argument 2 to 5 given but not a boolean, a 6th that is not a
-- function.  Arguments 2 to 5 are filled in only when absent (beyond the
-- last one given); an explicit nil there is for Awesome to reject.
-- `spawn` is never tail-called: an error Awesome raises then names it
-- 'spawn', as when awful.spawn calls it.
function known.wrap(spawn)
    return function(...)
        local n = select("#", ...)
        local args = { ... }
        local cmd, callback = args[1], args[6]
        if (type(cmd) ~= "string" and type(cmd) ~= "table")
                or (callback ~= nil and type(callback) ~= "function") then
            local r = pack(spawn(...))
            return unpack(r, 1, r.n)
        end
        for i = 2, 5 do
            if i > n then
                args[i] = known.DEFAULTS[i - 1]
            elseif type(args[i]) ~= "boolean" then
                local r = pack(spawn(...))
                return unpack(r, 1, r.n)
            end
        end
        local child = {}
        args[6] = function(...)
            protected_call(known.exited, child)
            if callback then return callback(...) end
        end
        local r = pack(spawn(unpack(args, 1, math.max(n, 6))))
        if type(r[1]) == "number" then
            child.pid = r[1]
            known.pids[r[1]] = true
        end
        return unpack(r, 1, r.n)
    end
end

-- Only where Awesome reaps its children itself (>= 4.3, which also has the
-- exit callback); scopes' wrapper, installed later, wraps this one.
function known.start()
    if clua.sigchld() ~= "handler" then return end
    orphans.start()
    capi.awesome.spawn = known.wrap(capi.awesome.spawn)
    subreaper.known_children = true
end

function subreaper.start()
    local ok, msg = clua.setsubreap(true)
    if not ok then return failed(subreaper, "setsubreap", msg) end
    subreaper.on = true
    known.start()
    -- Awesome >= 4.3 has its own SIGCHLD handler reaping every child with
    -- waitpid(-1): a reap from here, but of the orphans nobody waits for
    -- (above), would steal its statuses.  Only without a handler (older
    -- Awesome) do the zombies pile up, and then a coarse sweep, which
    -- leaves young zombies to whoever waits for them, collects them.
    if clua.sigchld() ~= "handler" then
        subreaper.sweep_timer = gtimer {
            timeout = 5,
            autostart = true,
            callback = function()
                local gone = clua.sweep()
                if gone then subreaper.swept = subreaper.swept + #gone end
            end,
        }
    end
end

function subreaper.stop(restart)
    if subreaper.known_children then orphans.stop(restart) end
end

function subreaper.summary()
    if not subreaper.on then return nil end
    -- children() fails (nil, message) when /proc cannot be read.
    local kids = clua.children()
    return "subreaper" .. (kids and (", " .. #kids .. " children") or "")
end
summaries[#summaries + 1] = subreaper.summary

function subreaper.status()
    if not subreaper.on then return failed_line(subreaper) end
    local kids = clua.children()
    return "subreaper: " .. (clua.getsubreap() and "on" or "OFF") ..
            (subreaper.sweep_timer
                and (", sweeping (SIGCHLD has no handler), " .. subreaper.swept .. " swept")
                or ", Awesome reaps (SIGCHLD handler)"),
        "children: " .. (kids and tostring(#kids) or "unknown"),
        subreaper.known_children and orphans.status() or nil
end

-- Clock -----------------------------------------------------------------

-- A wall-clock change (resume, NTP, `date -s`) refreshes the textclocks and
-- emits `clua::clock_changed`.
local clock = watch_feature("clock", "clockwatch", clua.clockwatch)
clock.events = 0        -- changes seen; clock.last_jump and
                        -- clock.last_suspended are those of the last one

function clock.readable()
    local event, msg = clock.watch:read()
    if not event then
        if msg then report("clockwatch read: " .. tostring(msg)) end
        return
    end
    clock.events = clock.events + 1
    clock.last_jump = event.jump
    clock.last_suspended = event.suspended
    refresh_textclocks()
    capi.awesome.emit_signal("clua::clock_changed",
        { jump = event.jump, suspended = event.suspended })
    watchdog.changed()
end

function clock.summary()
    if clock.watch then return clock.events .. " clock changes" end
end
summaries[#summaries + 1] = clock.summary

local function seconds(x)
    if x == nil then return "none" end
    return string.format("%+.3f s", x)
end

function clock.status()
    if not clock.watch then return failed_line(clock) end
    return "clock: watching " .. fd_via(clock),
        "clock events: " .. tostring(clock.events) ..
        ", last jump " .. seconds(clock.last_jump) ..
        ", last suspend " .. seconds(clock.last_suspended)
end

-- Timezone --------------------------------------------------------------

-- A change of /etc/localtime reloads the C library's zone, rezones and
-- refreshes the textclocks and emits `clua::timezone_changed`.
local timezone = watch_feature("timezone", "timezonewatch", clua.timezonewatch)
timezone.changes = 0    -- changes seen
timezone.wakeups = 0    -- times its fd woke the main loop

-- Whether TZ in Awesome's environment names a zone of its own: the C
-- library and GLib then follow TZ, not /etc/localtime.
local function tz_overridden()
    local tz = os.getenv("TZ")
    return tz ~= nil and tz ~= "/etc/localtime" and tz ~= ":/etc/localtime"
end

-- Gives every tracked textclock that shows the local zone (no timezone of
-- its own) the zone the watch reported, as a GLib zone.  Why not leave them
-- on GLib.TimeZone.new_local(): GLib (2.74 at least) caches the local zone
-- under the name it reads from the /etc/localtime symlink, or from
-- /etc/timezone when /etc/localtime is a plain file; a file rewritten in
-- place keeps that name, and new_local() the old zone, for the rest of the
-- session.  The watch's names are valid GLib identifiers.
local function rezone_textclocks(name)
    if tz_overridden() then return end
    local TimeZone = lgi.GLib.TimeZone
    -- new_identifier (GLib >= 2.68) returns nil for a name it cannot load
    -- (TimeZone.new would silently give UTC): the clocks then stay on
    -- new_local().  The probe stays: it tests GLib, not clua.
    local zone = TimeZone.new_identifier and TimeZone.new_identifier(name)
    for clock_widget in pairs(textclocks) do
        local private = clock_widget._private
        if type(private) == "table" and private.tzid == nil then
            private.timezone = zone or nil
        end
    end
end

function timezone.readable()
    timezone.wakeups = timezone.wakeups + 1
    local change, msg = timezone.watch:read()
    if not change then
        if msg then report("timezonewatch read: " .. tostring(msg)) end
        return
    end
    local ok, err = clua.tzset()
    if not ok then report("tzset: " .. tostring(err)) end
    timezone.changes = timezone.changes + 1
    rezone_textclocks(change.new)
    refresh_textclocks()
    capi.awesome.emit_signal("clua::timezone_changed",
        { old = change.old, new = change.new })
end

function timezone.status()
    if not timezone.watch then return failed_line(timezone) end
    return "timezone: " .. tostring(timezone.watch:zone() or "none") ..
            " (/etc/localtime, " .. fd_via(timezone) .. ")" ..
            (tz_overridden() and (", overridden by TZ=" .. os.getenv("TZ")) or ""),
        "timezone changes: " .. tostring(timezone.changes)
end

-- Stall breaker ---------------------------------------------------------

-- A runaway Lua loop is interrupted after `limit` seconds without the main
-- loop turning.
local stall = {
    name = "stall",
    limit = nil,        -- seconds
    guard = nil,        -- the stallguard
    error = nil,        -- why there is no guard
    follows = nil,      -- true once the guard follows the GLib loop
    follow_error = nil, -- why it does not
    timer = nil,        -- a tick timer, only when it cannot follow
    seen = 0,           -- stalls reported so far
}

-- An interrupt's error went to whichever pcall was nearest (awful.remote,
-- a gears.timer...); report it here too, with its traceback.
local function report_new_stalls()
    local n = stall.guard:stalls()
    if n <= stall.seen then return end
    local detail = stall.guard:last()
    stall.seen = n
    report("Lua interrupted: the main loop did not turn for " ..
        string.format("%g", stall.limit) .. " s (" .. n ..
        (n == 1 and " stall" or " stalls") .. " so far)" ..
        (detail and ("\n" .. tostring(detail)) or ""))
    watchdog.changed()
end

-- Runs last in Awesome's "refresh" signal, which Awesome emits from its
-- GLib poll function, every turn of the loop, right before it sleeps:
-- the loop's Lua work is done (gears.timer's delayed calls ran just
-- before, in the same signal), so the guard may sleep until Lua runs again.
local function on_refresh()
    report_new_stalls()
    stall.guard:idle()
end

-- Only when the guard cannot follow the loop: tick every quarter of the
-- limit, which wakes Awesome 4 times per limit.
local function start_tick_timer()
    stall.timer = gtimer {
        timeout = stall.limit / 4,
        autostart = true,
        callback = function()
            stall.guard:tick()
            report_new_stalls()
        end,
    }
end

-- Awesome sets its own GLib poll function right before its main loop
-- starts, after rc.lua: the guard wraps it from the loop's first turn (a
-- GLib timeout runs in the loop, never before it).
local function follow_loop()
    local ok, msg = stall.guard:glib()
    if ok then
        stall.follows = true
        return
    end
    stall.follow_error = msg
    report("stallguard:glib: " .. tostring(msg) .. "; ticking instead")
    start_tick_timer()
end

function stall.start(limit)
    local guard, msg = clua.stallguard(limit)
    if not guard then return failed(stall, "stallguard", msg) end
    stall.guard = guard
    stall.limit = limit
    capi.awesome.connect_signal("refresh", on_refresh)
    gtimer.start_new(0, function()
        protected_call(follow_loop)
        return false
    end)
end

-- Awesome tears itself down before exec'ing (restart) or exiting; that
-- may take longer than the limit and must not be interrupted.
function stall.stop()
    if not stall.guard then return end
    if stall.timer then stall.timer:stop() end
    capi.awesome.disconnect_signal("refresh", on_refresh)
    stall.guard:stop()
end

function stall.summary()
    if stall.guard then return stall.seen .. " stalls interrupted" end
end
summaries[#summaries + 1] = stall.summary

-- What status() says of the guard under LuaJIT; nil under PUC Lua.
local function stall_jit_line()
    local covered, why = stall.guard:jit()
    if covered == nil then return nil end
    return covered and "stall: LuaJIT: compiled loops are interrupted too (LuaJIT profiler hook)"
        or ("stall: LuaJIT: compiled loops are NOT interrupted: " .. tostring(why))
end

function stall.status()
    if not stall.guard then return failed_line(stall) end
    return "stall: limit " .. string.format("%g", stall.limit) .. " s, " ..
            tostring(stall.guard:stalls()) .. " interrupted, longest main-loop stall " ..
            string.format("%.3f", stall.guard:longest()) .. " s, " ..
            (stall.follows and "following the GLib main loop"
                or stall.timer and "ticking every quarter of the limit"
                or "not following the main loop yet"),
        stall_jit_line()
end

-- Application scopes ----------------------------------------------------

-- Everything Awesome starts lives in its own control group, so when
-- systemd kills a hung Awesome (its watchdog) or cleans up after a crash,
-- every application goes with it.  clua-scope (tools/clua-scope.c) runs a
-- command in a transient scope of its own in app.slice instead, and
-- exec's it in place: the pid awful.spawn returns, startup notification
-- (DESKTOP_STARTUP_ID) and exit callbacks stay as they were.
local scopes = {
    name = "scopes",
    helper = nil,       -- clua-scope's path, while on
    launched = 0,       -- commands started in a scope
    why_off = nil,      -- why not, for status()
}

-- Whether applications can have scopes here: nil and clua-scope's path,
-- or why not.
function scopes.unavailable()
    local runtime = os.getenv("XDG_RUNTIME_DIR")
    if not runtime or not lgi.GLib.file_test(runtime .. "/systemd/private",
                                            lgi.GLib.FileTest.EXISTS) then
        return "no systemd user manager"
    end
    local helper = lgi.GLib.find_program_in_path("clua-scope")
    if not helper then return "clua-scope is not on PATH" end
    return nil, helper
end

-- The command `cmd` (awesome.spawn's first argument) run through
-- clua-scope, or `cmd` itself when Awesome should see it unchanged: a
-- string it cannot parse or a program it cannot find is for Awesome to
-- report, as it always has.
function scopes.wrap(cmd)
    local argv = cmd
    if type(cmd) == "string" then
        -- GLib's parser, like Awesome's own: false, error for bad quoting.
        argv = lgi.GLib.shell_parse_argv(cmd)
    end
    if type(argv) ~= "table" or #argv == 0 then return cmd end
    for i = 1, #argv do
        if type(argv[i]) ~= "string" then return cmd end
    end
    if not lgi.GLib.find_program_in_path(argv[1]) then return cmd end
    local wrapped = { scopes.helper, "--launcher", "awesome", "--" }
    for i = 1, #argv do wrapped[#wrapped + 1] = argv[i] end
    scopes.launched = scopes.launched + 1
    return wrapped
end

-- Makes `awesome.spawn`, which every awful.spawn function calls, start
-- applications in scopes.  A command whose stdin, stdout or stderr Awesome
-- reads (`easy_async`, `with_line_callback`) keeps running beside Awesome
-- instead: it is short, or a helper of this very Awesome (a monitor whose
-- output a widget reads), and a scope of its own would outlive the Awesome
-- that reads it.
function scopes.start()
    local why, helper = scopes.unavailable()
    if why then
        scopes.why_off = why
        return
    end
    scopes.helper = helper
    local spawn = capi.awesome.spawn
    capi.awesome.spawn = function(cmd, ...)
        local _, stdin, stdout, stderr = ...
        if not (stdin or stdout or stderr) then
            local ok, wrapped = pcall(scopes.wrap, cmd)
            if ok then
                cmd = wrapped
            else
                report("scopes: " .. tostring(wrapped))
            end
        end
        -- The arguments exactly as given: awesome.spawn checks how many.
        return spawn(cmd, ...)
    end
end

function scopes.status()
    if scopes.helper then
        return "scopes: on, " .. scopes.launched .. " applications started in scopes (" ..
            scopes.helper .. ")"
    end
    return "scopes: off" .. (scopes.why_off and (" (" .. scopes.why_off .. ")") or "")
end

-- Window places across restarts -----------------------------------------

-- A restarted Awesome manages the windows that survived it, but Awesome
-- 4.3 gives each back only its first tag (_NET_WM_DESKTOP) and its
-- floating state.  Each window's place is kept in an X property of the window
-- itself, rewritten whenever it changes: the X server holds it, so it
-- outlives an Awesome killed by the watchdog as well as one restarted in
-- place, and the new Awesome puts the window back where it was.
local restore = {
    name = "restore",
    PROPERTY = "clua.awesome.place",
    -- Client properties kept, besides screen and tags.  Not `floating`:
    -- awful keeps that one itself (awful.client.property.persist), and
    -- c.floating also reads true for a window only floating because it is
    -- maximized, which would come back as floating for good.
    FLAGS = { "maximized", "maximized_horizontal", "maximized_vertical",
              "fullscreen", "sticky", "ontop", "minimized" },
    tracked = setmetatable({}, { __mode = "k" }),  -- clients whose place is kept
    restored = 0,
}

-- One line per fact: "screen N", "tag INDEX NAME" for each tag, then each
-- flag that is on.
function restore.encode(c)
    local lines = { "screen " .. c.screen.index }
    for _, t in ipairs(c:tags()) do
        lines[#lines + 1] = "tag " .. t.index .. " " .. tostring(t.name or ""):gsub("\n", " ")
    end
    for _, flag in ipairs(restore.FLAGS) do
        if c[flag] then lines[#lines + 1] = flag end
    end
    return table.concat(lines, "\n")
end

function restore.decode(text)
    local place = { tags = {}, flags = {} }
    for line in text:gmatch("[^\n]+") do
        local index, name = line:match("^tag (%d+) ?(.*)$")
        if index then
            place.tags[#place.tags + 1] = { index = tonumber(index), name = name }
        elseif line:match("^screen %d+$") then
            place.screen = tonumber(line:match("%d+"))
        else
            place.flags[line] = true
        end
    end
    return place
end

function restore.save(c)
    if restore.tracked[c] and c.valid then
        c:set_xproperty(restore.PROPERTY, restore.encode(c))
    end
end

-- A saved tag on screen s: by name, else by position.
local function find_tag(s, saved)
    for _, t in ipairs(s.tags) do
        if saved.name ~= "" and t.name == saved.name then return t end
    end
    return s.tags[saved.index]
end

function restore.apply(c, place)
    local s = place.screen and place.screen <= capi.screen.count() and capi.screen[place.screen]
    if s then c.screen = s end
    s = c.screen
    local tags = {}
    for _, saved in ipairs(place.tags) do
        tags[#tags + 1] = find_tag(s, saved)
    end
    if #tags > 0 then c:tags(tags) end
    -- Every flag, on or off: rules may have changed them at manage time.
    for _, flag in ipairs(restore.FLAGS) do
        c[flag] = place.flags[flag] == true
    end
    restore.restored = restore.restored + 1
end

-- Windows that exist when Awesome starts get their saved place back (after
-- awful.rules, which ran first, placed them); then every change is kept.
-- Before that, a client's changes are not saved: rules and Awesome's own
-- startup move it, and would overwrite the place being restored.
function restore.on_manage(c)
    if capi.awesome.startup then
        local text = c:get_xproperty(restore.PROPERTY)
        if type(text) == "string" and text ~= "" then
            restore.apply(c, restore.decode(text))
        end
    end
    restore.tracked[c] = true
    restore.save(c)
end

function restore.start()
    capi.awesome.register_xproperty(restore.PROPERTY, "string")
    capi.client.connect_signal("manage", function(c) protected_call(restore.on_manage, c) end)
    local function save(c) protected_call(restore.save, c) end
    for _, signal in ipairs { "tagged", "untagged", "property::screen" } do
        capi.client.connect_signal(signal, save)
    end
    for _, flag in ipairs(restore.FLAGS) do
        capi.client.connect_signal("property::" .. flag, save)
    end
    -- Clients managed before setup() (it ran late): keep theirs from now.
    for _, c in ipairs(capi.client.get()) do
        restore.tracked[c] = true
        save(c)
    end
end

function restore.status()
    return "restore: windows keep their tags, screen and state across restarts, " ..
        restore.restored .. " put back at this start"
end

-- Public API ------------------------------------------------------------

-- The features in the order setup() starts them; Awesome's `exit` stops
-- them in reverse.  The watchdog comes last: the STATUS= line its READY=1
-- carries tells of the others, and at exit it is the first to tell the
-- manager (RELOADING=1 or STOPPING=1).
local FEATURES = { subreaper, clock, timezone, stall, scopes, restore, watchdog }

-- Each feature by its option's name.
local BY_NAME = {}
for _, feature in ipairs(FEATURES) do BY_NAME[feature.name] = feature end

-- For the specs (read-only use): each feature's table, by option name, and
-- the options setup() ran with (set by setup).
cluawm._state = { options = nil }
for name, feature in pairs(BY_NAME) do cluawm._state[name] = feature end

-- The order the README and setup's LDoc list the options in, and status()
-- reports them in.
local DOCUMENTED = { subreaper, clock, timezone, watchdog, stall, scopes, restore }

-- The options of the setup() that ran; nil before.
local options = nil

-- Awesome emits `exit` once its main loop has ended, right before it
-- exec's itself (restart) or exits: no timer or fd source runs any more,
-- and every fd is close-on-exec, so only the features with a `stop` have
-- something to undo.  Each runs protected: one failing stops no other.
local function on_exit(restart)
    for i = #FEATURES, 1, -1 do
        local feature = FEATURES[i]
        if feature.stop and options[feature.name] then
            protected_call(feature.stop, restart)
        end
    end
end

local function check_option(args, name, allow_number)
    local v = args[name]
    if v == nil then return true end
    if type(v) == "boolean" then return v end
    if allow_number and type(v) == "number" and v > 0 and v == v and v < math.huge then
        return v
    end
    error("clua.awesome.setup: bad option '" .. name .. "' (" ..
        (allow_number and "false or a number > 0" or "boolean") ..
        " expected, got " .. type(v) .. " " .. tostring(v) .. ")", 3)
end

--- Start everything.  Call once, near the top of rc.lua (before the
-- textclocks are built).  A second call changes nothing.
-- @tparam[opt] table args
-- @tparam[opt=true] boolean args.subreaper become Awesome's child subreaper;
--   every program `awful.spawn` starts gets an exit callback, and adopted
--   orphans are reaped by their pidfds, so Awesome logs neither as unknown
-- @tparam[opt=true] boolean args.clock watch wall-clock changes
-- @tparam[opt=true] boolean args.timezone follow timezone changes
--   (`/etc/localtime`)
-- @tparam[opt=true] boolean args.watchdog talk to systemd (READY, STOPPING,
--   RELOADING, STATUS) and feed `WatchdogSec=` when set
-- @tparam[opt=10] number|boolean args.stall interrupt Lua after this many
--   seconds without the main loop turning; `false` turns it off
-- @tparam[opt=true] boolean args.scopes under a systemd user manager, run
--   each application started with `awful.spawn` in a scope of its own
-- @tparam[opt=true] boolean args.restore give every window its tags, screen
--   and state back after a restart
-- @treturn boolean true the first time, false when already set up
-- @usage
-- -- rc.lua, before the widgets are built: everything on
-- require("clua.awesome").setup {}
-- -- or a stall limit of 5 s and no scopes
-- require("clua.awesome").setup { stall = 5, scopes = false }
function cluawm.setup(args)
    if args ~= nil and type(args) ~= "table" then
        error("clua.awesome.setup: bad argument #1 (table expected, got " .. type(args) .. ")", 2)
    end
    args = args or {}
    for k in pairs(args) do
        if not BY_NAME[k] then
            error("clua.awesome.setup: unknown option '" .. tostring(k) .. "'", 2)
        end
    end
    local given = {}
    for _, feature in ipairs(DOCUMENTED) do
        given[feature.name] = check_option(args, feature.name, feature == stall)
    end
    if given.stall == true then given.stall = 10 end
    if options then return false end
    options = given
    cluawm._state.options = given

    for _, feature in ipairs(FEATURES) do
        if given[feature.name] then feature.start(given[feature.name]) end
    end
    capi.awesome.connect_signal("exit", on_exit)
    return true
end

-- Appends the lines among `...` (nil for none) to `lines`.
local function append(lines, ...)
    for i = 1, select("#", ...) do
        local line = select(i, ...)
        if line then lines[#lines + 1] = line end
    end
end

--- A human-readable summary, several lines: one or two per option, in the
-- order of setup's options, saying what each does or why it does not.
-- @treturn string
-- @usage
-- -- from a terminal (a shell command):
-- --   awesome-client 'return require("clua.awesome").status()'
-- -- or shown by rc.lua, from a key binding say:
-- naughty.notify { text = require("clua.awesome").status() }
function cluawm.status()
    if not options then
        return "clua.awesome: setup() not called"
    end
    local lines = {}
    for _, feature in ipairs(DOCUMENTED) do
        if options[feature.name] then
            append(lines, feature.status())
        else
            append(lines, feature.name .. ": off")
        end
    end
    return table.concat(lines, "\n")
end

return cluawm
