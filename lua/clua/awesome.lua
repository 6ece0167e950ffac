---------------------------------------------------------------------------
--- Keep Awesome healthy on a systemd desktop, with one line in rc.lua.
--
--    require("clua.awesome").setup {}
--
-- is the same as
--
--    require("clua.awesome").setup { subreaper = true, clock = true, timezone = true,
--        watchdog = true, stall = 10, scopes = true, restore = true, sleep = true }
--
-- Call it near the top of rc.lua: before the widgets are built (only the
-- textclocks built after it are refreshed) and before anything launches
-- applications.  Every option is on by default; `false` turns it off.  A
-- second call changes nothing (it returns `false`).
--
-- * **subreaper**: Awesome becomes a child subreaper, so programs that
--   double-fork away (`awful.spawn.with_shell("cmd &")`, launchers,
--   browsers' helpers) stay under Awesome instead of init, and are reaped
--   there.  Every program `awful.spawn` starts, in any form, is a child
--   Awesome knows: Awesome 4.3 keeps a program as its own child only when
--   the caller asks for its exit status, so clua gives `awesome.spawn` an
--   exit callback that does nothing when the caller gave none (the pid,
--   startup notification and environment stay as they were; a call with
--   bad arguments reaches Awesome unchanged).  The orphans Awesome adopts,
--   which it cannot know, clua reaps itself, by their pidfds, the moment
--   each exits: Awesome's log gets no `Unknown child` line for either.
--   Stock Awesome's behaviour (init adopts orphans) comes back with
--   `subreaper = false`.
-- * **clock**: the wall clock is watched with a timerfd in Awesome's own
--   main loop (no polling).  When it changes (resume from suspend, NTP,
--   `date -s`), every `wibox.widget.textclock` built after `setup` shows the
--   right time at once, and `clua::clock_changed` is emitted with
--   `{jump = seconds, suspended = seconds}`.
-- * **timezone**: `/etc/localtime` is watched with inotify (no polling).
--   When the zone changes (`timedatectl set-timezone`, a laptop's automatic
--   zone, a tool rewriting the file in place), within milliseconds the C
--   library loads the new zone (`clua.tzset`), so `os.date` and every widget
--   built on it follow; every textclock built after `setup` shows the new
--   zone's time and abbreviation (a textclock with a `timezone` of its own
--   keeps it); and `clua::timezone_changed` is emitted once per change with
--   the names before and after, `{old = "Etc/UTC", new = "Asia/Tokyo"}` (the
--   names of `clua.timezonewatch`).  With `TZ` set in Awesome's environment
--   to a zone, that zone stays in force (`status()` says "overridden by
--   TZ="); the signal still tells of the system's change.  Other GLib users
--   in Awesome (`GLib.DateTime.new_now_local()`) follow a symlink change
--   (timedatectl's way) but not a rewrite in place that leaves
--   `/etc/timezone` as it was, until Awesome restarts.
-- * **watchdog**: under a service manager it sends `READY=1` once Awesome
--   has started, `RELOADING=1` on `awesome.restart()`, `STOPPING=1` on quit
--   and a one-line `STATUS=`, whatever the options say (the unit is
--   `Type=notify`: without `READY=1` it would stay "activating" and the
--   session's other units would wait); when the unit has `WatchdogSec=`, a
--   timer sends `WATCHDOG=1` every half interval, so a hung Awesome is
--   killed and restarted.  `false` turns off the heartbeat alone and tells
--   systemd to stop the unit's watchdog for this Awesome
--   (`WATCHDOG_USEC=0`), which would otherwise kill it; `true` arms it again
--   at the unit's interval.  Outside a service manager it starts no timer.
--   No message ever makes Awesome wait: when the manager stops reading, the
--   sends fail at once (`EAGAIN`), reported once, and the heartbeats go on.
-- * **stall** (seconds, above 0 and at most 86400; `true` is 10): a runaway
--   Lua loop is interrupted with an error and a traceback once one turn of
--   the main loop has been busy that long; Awesome lives on with its
--   windows and state.  Every shape of loop is broken, also one that runs
--   through Lua Awesome calls from its C code
--   (`while true do local t = screen[1].tags end`, a loop over
--   `client.get()` that never ends, a loop
--   in a signal handler or a widget's `draw`): the error is raised where it
--   reaches the loop's own `pcall` or Awesome's main loop, not inside a
--   property getter whose error Awesome would swallow, so Awesome answers
--   again within about one limit (two at most).  One `debug::error`
--   notification per stall, naming the loop's line, with one traceback;
--   the stall counts once in `status()`.  The guard follows Awesome's GLib
--   main loop (no timer): an idle Awesome is never woken by it, a stopped
--   Awesome is never taken for a stall, and Awesome's own C code is never
--   interrupted.  It cannot reach code inside a coroutine, and a stall in C
--   (a blocking `io.popen():read()`) is interrupted once the call returns;
--   the systemd watchdog stays the backstop.  Keep it below half of
--   `WatchdogSec`.
-- * **scopes**: under a systemd user manager, every application launched
--   with `awful.spawn` (and `with_shell`, `once`, `single_instance`, the
--   menus and prompts that use them) runs in a transient scope of its own in
--   `app.slice`, `app-awesome-NAME-RANDOM.scope`, through `clua-scope`: a
--   watchdog kill or a crash of Awesome ends Awesome's service alone, and
--   resource control and systemd-oomd act per application.  The pid
--   `awful.spawn` returns is the application's own; startup notification
--   and exit callbacks work as before; a command Awesome cannot run gets
--   Awesome's own error.  It starts at once, also from rc.lua before
--   `READY=1` and during a restart in place; when the manager does not make
--   the scope within 3 s it runs anyway, outside a scope (`clua-scope(1)`).
--   Commands whose output Awesome reads (`awful.spawn.easy_async`,
--   `with_line_callback`, `io.popen`) stay in Awesome's service.  The
--   `spawn::initiated` and `spawn::change` signals give the program's name
--   in `binary_name` (to handlers connected after `setup`); the sequence's
--   id still names `clua-scope` (Awesome 4.3 builds it from the first word
--   of what it runs), and a program without startup-notification support
--   ends its sequence at Awesome's 20 s timeout.  Without a user manager
--   (`$XDG_RUNTIME_DIR/systemd/private`) or without `clua-scope` on
--   Awesome's `PATH`, nothing changes and `status()` says why.
-- * **restore**: a restarted Awesome (the watchdog, a crash,
--   `awesome.restart()`, `systemctl --user reload awesome`) puts every
--   window that survived back on its screen and tags (by name, else by
--   position; at most 16), maximised (also only horizontally or
--   vertically), fullscreen, sticky, on top or minimised.  Awesome 4.3 by
--   itself keeps only the first tag and floating, maximised and minimised.
--   The place is a few 32-bit X properties of the window
--   (`clua.awesome.place`, `clua.awesome.place.tag1` to `tag16`): at
--   start-up a window costs at most 17 reads of 4 bytes, whatever other
--   clients put there, and 500 windows on 9 tags are put back in about
--   0.05 s.
-- * **sleep**: where logind answers on the system bus, Awesome holds one
--   logind delay inhibitor for sleep (`systemd-inhibit --list` shows it,
--   Who `awesome`).  Before a suspend or hibernation it emits `clua::sleep`,
--   starts the locker if one is set
--   (`sleep = { locker = { "i3lock", "-n" } }`) and waits until it holds
--   the keyboard, starts the user manager's
--   `sleep.target` and waits for it, and only then lets logind go on; all
--   of it within logind's `InhibitDelayMaxSec` (less 10%, at least 0.5 s),
--   so a locker that hangs or fails never holds a suspend back, and is
--   reported once.  After resume: a new inhibitor, `sleep.target` stopped,
--   `clua::resumed`, every wibox repainted whole and every textclock
--   refreshed.  logind's `Lock` for Awesome's own session
--   (`loginctl lock-session`, `HandleLidSwitch=lock`) starts the locker
--   (once, however many) and emits `clua::lock`; `Unlock` emits
--   `clua::unlock`.  The four signals have no arguments.  Awesome 4.3
--   allows one D-Bus handler per interface: clua connects its own to
--   `org.freedesktop.login1.Manager` and `org.freedesktop.login1.Session`
--   at setup(), and it calls every handler rc.lua connects to them after
--   setup() too (a lock script written for plain Awesome keeps working);
--   one connected before setup() turns the feature off, saying so.
--
-- Signals, on the `awesome` object:
--
--    awesome.connect_signal("clua::clock_changed", function(c)
--        if c.suspended > 0 then naughty.notify { text = "resumed" } end
--    end)
--    awesome.connect_signal("clua::timezone_changed", function(z)
--        naughty.notify { text = "timezone: " .. z.new }
--    end)
--
-- Every option is checked: an unknown one, or a value clua does not accept,
-- is reported in one line (`gears.debug` on stderr and the `debug::error`
-- signal, a notification in the default rc.lua) and turns off its own
-- feature alone; setup() never raises, and rc.lua goes on.  A feature that
-- fails to start is reported the same way and stops no other.  `status()`
-- says, feature by feature, what runs, or why not: `off (setup option)`,
-- `off (bad option ...)`, `failed: <why>`.
--
-- Awesome >= 4.3 reaps its children in its own SIGCHLD handler; this module
-- never touches SIGCHLD and never reaps a child someone waits for (a
-- `waitpid(-1)` from Lua would steal the exit status `awful.spawn.easy_async`
-- waits for).  It reaps, each by its pidfd, only the orphans Awesome
-- adopted and cannot know.
--
-- @author clua
-- @module clua.awesome
---------------------------------------------------------------------------

local capi = { awesome = awesome, client = client, screen = screen, tag = tag,
               dbus = dbus, drawin = drawin, keygrabber = keygrabber,
               mousegrabber = mousegrabber }
local setmetatable = setmetatable
local tostring = tostring
local tonumber = tonumber
local type = type
local pairs = pairs
local select = select
local string = string
local table = table
local getmetatable = getmetatable
local ipairs = ipairs
local math = math
local os = os
local pcall = pcall
local next = next
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

-- `value` for a one-line message: a string quoted, cut to 40 bytes, its
-- control characters shown as `?`; other values by type (a table's
-- __tostring may raise, or say nothing useful).
local function shown(value)
    if type(value) == "string" then
        local text = value:sub(1, 40):gsub("%c", "?")
        return '"' .. text .. (#value > 40 and '..."' or '"')
    elseif type(value) == "number" or type(value) == "boolean" then
        return tostring(value)
    end
    return "a " .. type(value)
end

-- A message as one line: its first line (an error raised with a
-- traceback keeps its message).
local function one_line(msg)
    msg = tostring(msg)
    return (msg:match("^[^\n]*"))
end

-- A feature that could not start: `call` (the clua function that failed)
-- said why; status() says it too.
local function failed(feature, call, msg)
    feature.error = msg ~= nil and one_line(msg) or "no reason given"
    report(call .. ": " .. feature.error)
end

-- status()'s line for a feature whose option is on but that did not start.
local function failed_line(feature)
    return feature.name .. ": failed: " .. tostring(feature.error or "no reason given")
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
-- NOTIFY_SOCKET), whatever the options: Awesome's unit is Type=notify, and
-- until READY=1 systemd holds it "activating" and every unit ordered after
-- it waiting.  So this feature always starts; its option, `on`, is the
-- heartbeat alone, which runs only when the watchdog is on for this pid.
local watchdog = {
    name = "watchdog",
    always = true,      -- started whatever its option says
    on = false,         -- the option: feed WatchdogSec=
    managed = false,    -- a service manager listens (NOTIFY_SOCKET set)
    usec = nil,         -- WatchdogSec= in microseconds, when on for this pid
    env_error = nil,    -- why WATCHDOG_USEC could not be read
    heartbeat = nil,    -- the gears.timer feeding the watchdog
    heartbeats = 0,
    ready_sent = false,
    stopped = nil,      -- true once WATCHDOG_USEC=0 went out (option off)
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

-- systemd (252 checked) takes WATCHDOG_USEC= from the main pid as this
-- service's watchdog interval from then on, and 0 as no watchdog at all.
local function set_watchdog_usec(usec)
    return sent("notify", clua.notify(string.format("WATCHDOG_USEC=%.0f", usec)))
end

function watchdog.start(on)
    watchdog.on = on and true or false
    watchdog.managed = os.getenv("NOTIFY_SOCKET") ~= nil
    local usec, msg = clua.watchdog_usec()
    if msg then watchdog.env_error = one_line(msg) end
    if usec then
        watchdog.usec = usec
        if watchdog.on then
            -- Armed again at the unit's interval: the previous image of
            -- an Awesome restarted in place may have turned it off.
            set_watchdog_usec(usec)
            watchdog.heartbeat = gtimer {
                timeout = usec / 1e6 / 2,
                autostart = true,
                callback = function()
                    if sent("notify_watchdog", clua.notify_watchdog()) then
                        watchdog.heartbeats = watchdog.heartbeats + 1
                    end
                end,
            }
        else
            -- No heartbeat under WatchdogSec=: systemd would kill this
            -- Awesome at the first interval.  Tell it to stop watching.
            watchdog.stopped = set_watchdog_usec(0)
        end
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

-- The watchdog's line, and what the service manager was told when one
-- listens.  `why_off` is why the heartbeat is off, when it is.
function watchdog.status(why_off)
    local interval = watchdog.usec and string.format("%g", watchdog.usec / 1e6)
    local line
    if why_off then
        line = "watchdog: off (" .. why_off .. ")"
        if watchdog.usec then
            line = line .. (watchdog.stopped
                and ("; systemd was told to stop its " .. interval ..
                    " s watchdog (WATCHDOG_USEC=0)")
                or ("; telling systemd to stop its " .. interval ..
                    " s watchdog failed: it will kill Awesome"))
        end
    elseif not watchdog.usec then
        line = "watchdog: not enabled by a service manager" ..
            (watchdog.env_error and (" (" .. watchdog.env_error .. ")") or "")
    else
        line = "watchdog: every " .. interval .. " s, heartbeat every " ..
            string.format("%g", watchdog.usec / 2e6) .. " s, " ..
            tostring(watchdog.heartbeats) .. " heartbeats sent"
    end
    if not watchdog.managed then return line end
    return line, "service manager: " .. (watchdog.ready_sent and "READY=1 sent"
        or "READY=1 once Awesome has started")
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
    awesome_told = nil, -- the stall error Awesome emitted itself, if any
}

-- A stall's error goes wherever the interrupted code's errors go: a pcall
-- (awful.remote's, gears.protected_call's: they print it or hand it back),
-- or Awesome's own C caller, which logs it and emits `debug::error` itself
-- (a key binding, a signal emitted from C).  Each stall is reported here
-- once more, with its traceback, unless Awesome already emitted it: one
-- notification per stall.
local function report_new_stalls()
    local n = stall.guard:stalls()
    if n <= stall.seen then return end
    local detail = tostring(stall.guard:last())
    local told = stall.awesome_told
    stall.seen, stall.awesome_told = n, nil
    if not (told and told:find(detail:match("[^\n]*"), 1, true)) then
        report("Lua interrupted: the main loop did not turn for " ..
            string.format("%g", stall.limit) .. " s (" .. n ..
            (n == 1 and " stall" or " stalls") .. " so far)\n" .. detail)
    end
    watchdog.changed()
end

-- Notes a stall's error that Awesome emitted as `debug::error` itself.
local function on_debug_error(err)
    if type(err) == "string" and err:find("main loop stalled for", 1, true)
        and err:sub(1, 13) ~= "clua.awesome:" then
        stall.awesome_told = err
    end
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
    capi.awesome.connect_signal("debug::error", on_debug_error)
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
    capi.awesome.disconnect_signal("debug::error", on_debug_error)
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
-- (DESKTOP_STARTUP_ID) and exit callbacks stay as they were.  The scope
-- starts at once, whenever the launch (clua-scope waits for nothing the
-- session does, Awesome's own READY=1 included).
--
-- What Awesome 4.3 names after the command: awesome.spawn gives libstartup-
-- notification argv[0] of what it runs, clua-scope's path, both as the
-- sequence's binary name and inside its id.  The binary name is set back to
-- the program's for `spawn::initiated` and `spawn::change` (a handler
-- connected at setup, so those connected after it see the program); the
-- id cannot change (the application announces it back), nor can Awesome's
-- own matching of a window to its sequence by binary name: a program that
-- does not support startup notification ends its sequence by Awesome's
-- 20 s timeout (`spawn::timeout`) rather than when its window appears.
local scopes = {
    name = "scopes",
    helper = nil,       -- clua-scope's path, while on
    launched = 0,       -- commands started in a scope
    unscoped = 0,       -- commands Awesome could not start through clua-scope
    why_off = nil,      -- why not, for status()
    programs = {},      -- startup id -> the program's argv[0], while it lasts
}

-- A systemd user manager runs for this Awesome (its private socket).
local function user_manager_runs()
    local runtime = os.getenv("XDG_RUNTIME_DIR")
    return runtime ~= nil and lgi.GLib.file_test(runtime .. "/systemd/private",
                                                lgi.GLib.FileTest.EXISTS)
end

-- Whether applications can have scopes here: nil and clua-scope's path,
-- or why not.
function scopes.unavailable()
    if not user_manager_runs() then return "no systemd user manager" end
    local helper = lgi.GLib.find_program_in_path("clua-scope")
    if not helper then return "clua-scope is not on PATH" end
    return nil, helper
end

-- The command `cmd` (awesome.spawn's first argument) run through
-- clua-scope, and the program's argv[0]; or `cmd` itself when Awesome
-- should see it unchanged: a string it cannot parse or a program it
-- cannot find is for Awesome to report, as it always has.
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
    return wrapped, argv[1]
end

-- Starts `wrapped` (`cmd` through clua-scope) with awesome.spawn's other
-- arguments `...`.  When Awesome cannot start clua-scope (the few
-- arguments it adds make the command line too long, clua-scope is gone),
-- `cmd` is started as Awesome starts it: Awesome's own error names the
-- program, and a program that can run runs, without a scope.
function scopes.launch(spawn, cmd, wrapped, program, ...)
    local pid, snid = spawn(wrapped, ...)
    if type(pid) ~= "number" then
        scopes.unscoped = scopes.unscoped + 1
        return spawn(cmd, ...)
    end
    scopes.launched = scopes.launched + 1
    if type(snid) == "string" then scopes.programs[snid] = program end
    return pid, snid
end

-- spawn::initiated and spawn::change: the program's name, not clua-scope's.
local function name_program(sequence)
    local program = type(sequence) == "table" and scopes.programs[sequence.id]
    if program then sequence.binary_name = program end
end

-- spawn::completed, spawn::canceled, spawn::timeout: the sequence is over.
local function forget_sequence(sequence)
    if type(sequence) == "table" and sequence.id ~= nil then
        scopes.programs[sequence.id] = nil
    end
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
    capi.awesome.connect_signal("spawn::initiated", name_program)
    capi.awesome.connect_signal("spawn::change", name_program)
    for _, signal in ipairs { "spawn::completed", "spawn::canceled", "spawn::timeout" } do
        capi.awesome.connect_signal(signal, forget_sequence)
    end
    local spawn = capi.awesome.spawn
    capi.awesome.spawn = function(cmd, ...)
        local _, stdin, stdout, stderr = ...
        if not (stdin or stdout or stderr) then
            local ok, wrapped, program = pcall(scopes.wrap, cmd)
            if not ok then
                report("scopes: " .. tostring(wrapped))
            elseif wrapped ~= cmd then
                return scopes.launch(spawn, cmd, wrapped, program, ...)
            end
        end
        -- The arguments exactly as given: awesome.spawn checks how many.
        return spawn(cmd, ...)
    end
end

function scopes.status()
    if scopes.helper then
        return "scopes: on, " .. scopes.launched .. " applications started in scopes (" ..
            scopes.helper .. ")" .. (scopes.unscoped > 0 and
                (", " .. scopes.unscoped .. " left to Awesome alone (it could not " ..
                 "start clua-scope for them)") or "")
    end
    return "scopes: off (" .. tostring(scopes.why_off or "no reason given") .. ")"
end

-- Window places across restarts -----------------------------------------

-- A restarted Awesome manages the windows that survived it, but Awesome
-- 4.3 gives each back only its first tag (_NET_WM_DESKTOP) and its
-- floating state.  Each window's place is kept in X properties of the
-- window itself, rewritten whenever it changes: the X server holds them, so
-- they outlive an Awesome killed by the watchdog as well as one restarted
-- in place, and the new Awesome puts the window back where it was.
--
-- Why numbers: any X client can set any property of its own windows, and
-- Awesome 4.3's get_xproperty reads a string property whole (an 8 MB one
-- cost 26 ms to read here, before any decoding).  A "number" property is
-- read as one 32-bit CARDINAL, whatever the window holds under that name
-- (another type reads as nothing).  So the place is a few numbers:
--
-- * `clua.awesome.place`: 0x41 (the format) in its top byte, then the
--   number of tags kept (at most MAX_TAGS), the screen's index (0 when
--   past 255) and one bit per flag (FLAGS, in order, from the lowest);
-- * `clua.awesome.place.tagN`, N from 1 to that number: the tag's position
--   on its screen (0 when past 127) in the top byte and a digest of its
--   name (0 for no name) in the low 24 bits.
--
-- (Awesome 4.3 sets a number property only from a C int: every value
-- stays below 2^31.)
--
-- At start-up each window costs at most 1 + MAX_TAGS reads of 4 bytes (17,
-- 68 bytes), and the start O(windows): each screen's tags are read once
-- into an index (awful's `s.tags` rebuilds and sorts the list at each
-- read), kept until a tag changes.
local restore = {
    name = "restore",
    PROPERTY = "clua.awesome.place",
    TAG_PROPERTY = {},  -- "clua.awesome.place.tagN", by N
    MAX_TAGS = 16,
    FORMAT = 0x41,
    -- Client properties kept, besides screen and tags.  Not `floating`:
    -- awful keeps that one itself (awful.client.property.persist), and
    -- c.floating also reads true for a window only floating because it is
    -- maximized, which would come back as floating for good.
    FLAGS = { "maximized", "maximized_horizontal", "maximized_vertical",
              "fullscreen", "sticky", "ontop", "minimized" },
    tracked = setmetatable({}, { __mode = "k" }),  -- clients whose place is kept
    written = setmetatable({}, { __mode = "k" }),  -- client -> tag properties it has
    dirty = setmetatable({}, { __mode = "k" }),    -- clients to write at the next turn
    index = setmetatable({}, { __mode = "k" }),    -- screen -> its tags, see tag_index
    restored = 0,
    took = 0,           -- seconds spent putting windows back at this start
    started = false,
}
for n = 1, restore.MAX_TAGS do
    restore.TAG_PROPERTY[n] = restore.PROPERTY .. ".tag" .. n
end

local TWO8, TWO16, TWO24 = 256, 65536, 16777216

-- A tag name's digest, 1 to 16777213 (0: no name): a polynomial hash,
-- exact in any Lua's numbers (it stays below 2^29).
function restore.digest(name)
    if type(name) ~= "string" or name == "" then return 0 end
    local h = 0
    for i = 1, #name do
        h = (h * 31 + name:byte(i)) % 16777213
    end
    return h + 1
end

-- Screen s's tags, read once: `position` (tag -> its place in s.tags),
-- `at` (place -> tag) and `named` (digest -> the first tag of that name).
local function tag_index(s)
    local index = restore.index[s]
    if index then return index end
    index = { position = {}, at = {}, named = {} }
    for i, t in ipairs(s.tags) do
        index.position[t] = i
        index.at[i] = t
        local d = restore.digest(t.name)
        if d ~= 0 and not index.named[d] then index.named[d] = t end
    end
    restore.index[s] = index
    return index
end

-- A tag was added, removed, renamed, moved: read the screens' tags anew.
local function forget_tags()
    restore.index = setmetatable({}, { __mode = "k" })
end

-- Writes client c's place: the numbers described above.
function restore.write(c)
    local s = c.screen
    local tags = c:tags()
    local n = math.min(#tags, restore.MAX_TAGS)
    local index = s and tag_index(s)
    local flags, bit = 0, 1
    for _, flag in ipairs(restore.FLAGS) do
        if c[flag] then flags = flags + bit end
        bit = bit * 2
    end
    local screen_index = s and s.index or 0
    if screen_index > 255 then screen_index = 0 end
    c:set_xproperty(restore.PROPERTY,
        restore.FORMAT * TWO24 + n * TWO16 + screen_index * TWO8 + flags)
    for i = 1, n do
        local position = index and index.position[tags[i]] or 0
        if position > 127 then position = 0 end
        c:set_xproperty(restore.TAG_PROPERTY[i], position * TWO24 + restore.digest(tags[i].name))
    end
    -- Those of a former, longer list (all of them the first time: the
    -- window may come from another Awesome, or another client).
    for i = n + 1, restore.written[c] or restore.MAX_TAGS do
        c:set_xproperty(restore.TAG_PROPERTY[i], nil)
    end
    restore.written[c] = n
end

-- The place kept in client c's properties, or nil when there is none in
-- this format: { screen = index or 0, flags = { name = true },
-- tags = { { position =, digest = } } }.
function restore.read(c)
    local value = c:get_xproperty(restore.PROPERTY)
    if type(value) ~= "number" or math.floor(value / TWO24) ~= restore.FORMAT then
        return nil
    end
    local place = { tags = {}, flags = {} }
    local n = math.min(math.floor(value / TWO16) % TWO8, restore.MAX_TAGS)
    place.screen = math.floor(value / TWO8) % TWO8
    local bit = 1
    for _, flag in ipairs(restore.FLAGS) do
        if math.floor(value / bit) % 2 == 1 then place.flags[flag] = true end
        bit = bit * 2
    end
    for i = 1, n do
        local tag = c:get_xproperty(restore.TAG_PROPERTY[i])
        if type(tag) ~= "number" then break end
        place.tags[#place.tags + 1] = { position = math.floor(tag / TWO24), digest = tag % TWO24 }
    end
    return place
end

-- Saves client c's place at the end of this turn of the main loop: a
-- change of tags comes as several signals (untagged, tagged...).
local function flush()
    for c in pairs(restore.dirty) do
        restore.dirty[c] = nil
        if restore.tracked[c] and c.valid then protected_call(restore.write, c) end
    end
end

function restore.save(c)
    if not restore.tracked[c] then return end
    if next(restore.dirty) == nil then gtimer.delayed_call(flush) end
    restore.dirty[c] = true
end

-- Puts client c back where `place` says: its screen, each saved tag found
-- by name, else by position, and every flag.
function restore.apply(c, place)
    local s = place.screen ~= 0 and place.screen <= capi.screen.count()
        and capi.screen[place.screen]
    if s then c.screen = s end
    s = c.screen
    local index = tag_index(s)
    local tags, seen = {}, {}
    for _, saved in ipairs(place.tags) do
        local t = (saved.digest ~= 0 and index.named[saved.digest]) or index.at[saved.position]
        if t and not seen[t] then
            seen[t] = true
            tags[#tags + 1] = t
        end
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
        local t0 = lgi.GLib.get_monotonic_time()
        local place = restore.read(c)
        if place then restore.apply(c, place) end
        restore.took = restore.took + (lgi.GLib.get_monotonic_time() - t0) / 1e6
    end
    restore.tracked[c] = true
    restore.save(c)
end

function restore.start()
    capi.awesome.register_xproperty(restore.PROPERTY, "number")
    for _, name in ipairs(restore.TAG_PROPERTY) do
        capi.awesome.register_xproperty(name, "number")
    end
    for _, signal in ipairs { "property::name", "property::index", "property::screen",
                              "property::activated" } do
        capi.tag.connect_signal(signal, forget_tags)
    end
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
    restore.started = true
end

-- Awesome exits or restarts: the changes of this last turn of the loop
-- are written now (Awesome syncs with the X server after `exit`).
function restore.stop()
    flush()
end

function restore.status()
    if not restore.started then return failed_line(restore) end
    return "restore: windows keep their tags, screen and state across restarts, " ..
        restore.restored .. " put back at this start" ..
        (restore.restored > 0 and string.format(" (%.3f s)", restore.took) or "")
end

-- Suspend and lock ------------------------------------------------------

-- logind says everything on the system bus: PrepareForSleep(true) before a
-- suspend or hibernation, PrepareForSleep(false) after it, and Lock/Unlock
-- for a session (`loginctl lock-session`, HandleLidSwitch=lock).  A delay
-- inhibitor makes logind wait, at most InhibitDelayMaxUSec, until its fd is
-- closed: the time to lock the screen and start the user manager's
-- sleep.target before the machine sleeps.
--
-- The signals come through Awesome's own D-Bus module (its connection to
-- the system bus, a source of its GLib loop): a match rule for the two
-- signals and a handler per interface, nothing that wakes Awesome while
-- logind is silent.
--
-- The inhibitor is held by a child, `systemd-inhibit ... cat`, whose stdin
-- is a pipe from Awesome: closing our end makes cat exit, and
-- systemd-inhibit with it, which closes the inhibitor's fd.  GLib makes its
-- pipe ends close-on-exec, so a restart in place (exec) or the death of
-- Awesome (watchdog, crash) closes it too: logind never waits for an
-- Awesome that is gone, and the next Awesome takes a new one.  The child
-- is not put in a scope of its own (awesome.spawn with a stdin pipe is
-- left alone by the scopes wrapper): it belongs to this Awesome.
--
-- The locker is "ready" once it holds the keyboard grab, which every X
-- locker takes before it shows itself as locked (i3lock, slock,
-- xsecurelock, xtrlock): clua-grabwait (tools/clua-grabwait.c) tries to
-- grab the keyboard and exits 0 once it is AlreadyGrabbed.  The locker is
-- started with awesome.spawn without pipes: with scopes on it runs in a
-- scope of its own and survives a restart of Awesome (which must never
-- unlock the screen).
local sleep = {
    name = "sleep",
    -- systemd-inhibit's --why, with a locker and without.
    WHY_LOCKER = "clua.awesome: lock the screen and start sleep.target before sleep",
    WHY_TARGET = "clua.awesome: start sleep.target before sleep",
    DEFAULT_DELAY = 5,  -- seconds, when logind's InhibitDelayMaxUSec is unknown
    LOGIND = "org.freedesktop.login1",
    MANAGER = "org.freedesktop.login1.Manager",
    SESSION = "org.freedesktop.login1.Session",
    locker = nil,       -- the locker's argument list, or nil
    state = nil,        -- "asking" (reading logind), "on", "off"
    why_off = nil,      -- why it is off, at run time
    tools = {},         -- program name -> path
    delay = nil,        -- InhibitDelayMaxUSec in seconds
    delay_error = nil,  -- why it is unknown
    ask_timer = nil,    -- bounds the wait for logind's first answer
    user_manager = false, -- a systemd user manager runs: sleep.target is driven
    session_path = nil, -- Awesome's own logind session, when followed
    session_connected = nil, -- its path, once our handler holds the Session interface
    manager_refused = nil, -- why Awesome refused our Manager handler
    dbus_shared = false, -- dbus.connect_signal/disconnect_signal wrapped
    lock_why = "logind not asked yet", -- why Lock/Unlock are not followed
    inhibitor = nil,    -- { pid, stdin, err } while held (or asked for)
    inhibitor_error = nil, -- why the last one ended when not released by us
    inhibitors = 0,     -- taken so far
    cycle = nil,        -- the suspend in progress, from PrepareForSleep(true) to (false)
    suspends = 0,
    resumes = 0,
    late = 0,           -- suspends let go by the deadline
    last_took = nil,    -- seconds the last suspend was held back
    locks = 0,
    unlocks = 0,
    locker_pid = nil,   -- while the locker we started runs
    locker_waiters = nil, -- while ensure_locker checks the keyboard: who waits
    lockers = 0,        -- lockers started
    locker_exit = nil,  -- how it ended, the last time
    locker_failures = 0,
    locker_error = nil, -- the last failure
    target_error = nil, -- why systemctl failed, the last time (reported once)
}

-- The keys a `sleep` table may hold.
sleep.KEYS = { locker = true }

-- The value of the `sleep` option: { locker = argv or nil }, false, or nil
-- and what was expected and the part of the option that is wrong.
function sleep.option(v)
    if v == nil or v == true then return {} end
    if v == false then return false end
    local expected = "true, false or { locker = { PROGRAM, ARG... } }"
    if type(v) ~= "table" then return nil, expected end
    for k in pairs(v) do
        if not sleep.KEYS[k] then
            local key = type(k) == "string" and k or ("[" .. shown(k) .. "]")
            return nil, expected, "sleep." .. key .. " (unknown key)"
        end
    end
    local locker = v.locker
    if locker == nil then return {} end
    local what = "sleep.locker = " .. shown(locker)
    local list = "a list of strings (the program first, no shell)"
    if type(locker) ~= "table" then return nil, list, what end
    local n = #locker
    if n == 0 or locker[1] == "" then return nil, list, what end
    for k, arg in pairs(locker) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
            return nil, list, what .. " (key " .. shown(k) .. ")"
        end
        if type(arg) ~= "string" then
            return nil, list, "sleep.locker[" .. k .. "] = " .. shown(arg)
        end
    end
    local argv = {}
    for i = 1, n do argv[i] = locker[i] end
    return { locker = argv }
end

-- logind's object path of session `id`: sd-bus escapes every byte but
-- [A-Za-z0-9] as _XX, and a leading digit too ("2" is /session/_32).
function sleep.session_object(id)
    local escaped = id:gsub("[^%w]", function(c) return string.format("_%02x", c:byte()) end)
    escaped = escaped:gsub("^%d", function(c) return string.format("_%02x", c:byte()) end)
    return "/org/freedesktop/login1/session/" .. escaped
end

-- The locker's command line, for messages.
local function locker_line()
    local parts = {}
    for i, arg in ipairs(sleep.locker) do parts[i] = i == 1 and arg or shown(arg) end
    return table.concat(parts, " ")
end

-- "exit 1", "signal 9": how a child ended (awesome.spawn's exit callback).
local function ended(reason, code)
    return tostring(reason) .. " " .. tostring(code)
end

-- A Gio stream owning the Unix fd `fd`; `kind` "Input" or "Output".
-- GLib 2.80 moved these classes to GioUnix (GioUnix.InputStream, ...),
-- and testing's GLib (2.90) no longer has the old Gio.UnixInputStream
-- names; GLib 2.74 (Debian 12) has only those.
local function unix_stream(kind, fd)
    local class = lgi.Gio["Unix" .. kind .. "Stream"]
    if not class then
        local ok, GioUnix = pcall(lgi.require, "GioUnix")
        class = ok and GioUnix and GioUnix[kind .. "Stream"]
    end
    if not class then
        error("neither Gio.Unix" .. kind .. "Stream nor GioUnix." .. kind .. "Stream exists")
    end
    return class.new(fd, true)
end

-- Closes our end of a pipe to a child, once.  GLib.close (g_close, GLib
-- >= 2.36, checked with lgi 0.9.2 and GLib 2.74) where lgi can call it,
-- else a Gio stream that owns the fd.  A close that ran and failed is not
-- tried again another way: the number may already name someone else's fd
-- (Linux frees it even when close fails).
local function close_fd(fd)
    if lgi.GLib.close then
        local called, closed = pcall(lgi.GLib.close, fd)
        if called then return closed end
    end
    return pcall(function() unix_stream("Output", fd):close() end)
end

-- Reads a child's stderr pipe `fd` to its end, keeping its last line in
-- `into.err`; `done()` at the end.
local function read_stderr(fd, into, done)
    local stream = unix_stream("Input", fd)
    require("awful.spawn").read_lines(stream, function(line)
        if line ~= "" then into.err = line end
    end, done, true)
end

-- The delay inhibitor --------------------------------------------------

-- An inhibitor child ended without our asking, once both its exit and the
-- end of its stderr are seen: reported once, with systemd-inhibit's own
-- message.  A new one is asked for at the next resume.
local function inhibitor_lost(inh)
    if not (inh.exit and inh.eof) or inh.released or inh.reported then return end
    inh.reported = true
    sleep.inhibitor_error = "systemd-inhibit " .. inh.exit ..
        (inh.err and (": " .. inh.err) or "")
    report("sleep: the delay inhibitor is gone (" .. sleep.inhibitor_error ..
        "); a suspend no longer waits for the locker and sleep.target")
end

-- Asks logind for a delay inhibitor, held by a child until released.
function sleep.take_inhibitor()
    if sleep.inhibitor then return end
    local inh = {}
    local pid, _, stdin, _, stderr = capi.awesome.spawn({
        sleep.tools["systemd-inhibit"], "--what=sleep", "--mode=delay", "--who=awesome",
        "--why=" .. (sleep.locker and sleep.WHY_LOCKER or sleep.WHY_TARGET), sleep.tools.cat,
    }, false, true, false, true, function(reason, code)
        inh.exit = ended(reason, code)
        if sleep.inhibitor == inh then sleep.inhibitor = nil end
        sleep.close_stdin(inh)
        protected_call(inhibitor_lost, inh)
    end)
    if type(pid) ~= "number" then
        sleep.inhibitor_error = "systemd-inhibit: " .. one_line(pid)
        report("sleep: " .. sleep.inhibitor_error)
        return
    end
    inh.pid, inh.stdin = pid, stdin
    sleep.inhibitor = inh
    sleep.inhibitors = sleep.inhibitors + 1
    if stderr then
        read_stderr(stderr, inh, function()
            inh.eof = true
            inhibitor_lost(inh)
        end)
    else
        inh.eof = true
    end
end

-- Our end of an inhibitor child's stdin, closed once: to release it, or
-- once the child is gone.
function sleep.close_stdin(inh)
    if inh.stdin and not inh.closed then
        inh.closed = true
        close_fd(inh.stdin)
    end
end

-- Lets logind go on: our end of cat's stdin is closed.
function sleep.release_inhibitor()
    local inh = sleep.inhibitor
    if not inh then return end
    sleep.inhibitor = nil
    inh.released = true
    sleep.close_stdin(inh)
end

-- The locker ------------------------------------------------------------

-- Lets go of Awesome's own keyboard and pointer grabs (an awful.prompt, a
-- menu, a mouse drag): the locker could not take the keyboard (i3lock
-- gives up), and clua-grabwait would take Awesome's grab for the locker's.
-- awful.keygrabber keeps a stack of grabbers over the one C grab: each is
-- stopped through it (a C stop alone would leave awful thinking it still
-- grabs, and no prompt would grab again); what is left was started with
-- the C API, and is stopped there.
function sleep.drop_awesome_grabs()
    local keygrabber, mousegrabber = capi.keygrabber, capi.mousegrabber
    if keygrabber and keygrabber.isrunning() then
        local ok, awful_keygrabber = pcall(require, "awful.keygrabber")
        for _ = 1, 100 do
            if not (ok and keygrabber.isrunning()) then break end
            protected_call(awful_keygrabber.stop)
        end
        if keygrabber.isrunning() then protected_call(keygrabber.stop) end
    end
    if mousegrabber and mousegrabber.isrunning() then protected_call(mousegrabber.stop) end
end

-- The locker we started has ended: `reason`, `code` as awesome.spawn says.
local function locker_ended(reason, code)
    sleep.locker_pid = nil
    sleep.locker_exit = ended(reason, code)
    local cycle = sleep.cycle
    if cycle and cycle.stage == "locker" and not (reason == "exit" and code == 0) then
        -- It failed before it was ready (exit 0 is a locker that forked,
        -- i3lock without -n: clua-grabwait goes on waiting for its child).
        sleep.locker_failed(cycle, "it ended (" .. sleep.locker_exit .. ")")
    end
end

-- Starts the locker.  Returns false and why when Awesome could not.
local function spawn_locker()
    local pid = capi.awesome.spawn(sleep.locker, false, false, false, false,
        function(reason, code) protected_call(locker_ended, reason, code) end)
    if type(pid) ~= "number" then return false, one_line(pid) end
    sleep.locker_pid = pid
    sleep.locker_exit = nil
    sleep.lockers = sleep.lockers + 1
    return true
end

-- Makes sure the locker runs, then calls done(ok, why): ok when it was
-- started, or the screen is locked already: the locker we started still
-- runs, or another client holds the keyboard (a locker that forked, as
-- i3lock without -n does, or one from before a restart of Awesome): a
-- second one would fail to grab.  Calls that come while one such check
-- runs wait for it: however many Lock signals, one locker.
function sleep.ensure_locker(done)
    if sleep.locker_pid then return done(true) end
    sleep.drop_awesome_grabs()
    local grabwait = sleep.tools["clua-grabwait"]
    if not grabwait then return done(spawn_locker()) end
    if sleep.locker_waiters then
        table.insert(sleep.locker_waiters, done)
        return
    end
    sleep.locker_waiters = { done }
    require("awful.spawn").easy_async({ grabwait, "0" }, function(_, _, reason, code)
        local ok, why = true, nil
        if not (reason == "exit" and code == 0) and not sleep.locker_pid then
            ok, why = spawn_locker()
        end
        local waiters = sleep.locker_waiters
        sleep.locker_waiters = nil
        for _, waiter in ipairs(waiters) do protected_call(waiter, ok, why) end
    end)
end

-- A locker failure: reported once for this suspend, counted, and the
-- suspend goes on.
function sleep.locker_failed(cycle, why)
    if cycle.locker_failed then return end
    cycle.locker_failed = true
    sleep.locker_failures = sleep.locker_failures + 1
    sleep.locker_error = "locker " .. locker_line() .. " not ready: " .. why
    report("sleep: " .. sleep.locker_error .. "; the machine sleeps unlocked")
    if cycle.stage == "locker" then sleep.start_target(cycle) end
end

-- Waits, through clua-grabwait, at most `limit` seconds for the locker to hold
-- the keyboard, then goes on with sleep.target.
function sleep.await_locker(cycle, limit)
    local grabwait = sleep.tools["clua-grabwait"]
    if not grabwait then
        return sleep.locker_failed(cycle, "clua-grabwait is not on PATH, nothing can tell")
    end
    require("awful.spawn").easy_async({ grabwait, string.format("%.3f", limit) },
        function(_, stderr, reason, code)
            if sleep.cycle ~= cycle or cycle.stage ~= "locker" then return end
            if reason == "exit" and code == 0 then
                cycle.locked = true
                return sleep.start_target(cycle)
            end
            local why = reason == "exit" and code == 1
                and string.format("it did not take the keyboard within %.1f s", limit)
                or ("clua-grabwait " .. ended(reason, code) .. ": " ..
                    one_line(stderr ~= "" and stderr or "no message"))
            if sleep.locker_exit then why = why .. " (it ended: " .. sleep.locker_exit .. ")" end
            sleep.locker_failed(cycle, why)
        end)
end

-- sleep.target ----------------------------------------------------------

-- systemctl --user `verb` sleep.target; `done(ok)` when it returns.  A
-- failure is reported once (a unit file missing fails at every suspend).
local function systemctl_target(verb, done)
    require("awful.spawn").easy_async({ sleep.tools.systemctl, "--user", verb, "sleep.target" },
        function(_, stderr, reason, code)
            local ok = reason == "exit" and code == 0
            if not ok then
                local why = "systemctl --user " .. verb .. " sleep.target: " ..
                    ended(reason, code) .. ": " .. one_line(stderr ~= "" and stderr or "no message")
                if not sleep.target_error then
                    report("sleep: " .. why .. " (reported once)")
                end
                sleep.target_error = why
            end
            if done then done(ok) end
        end)
end

function sleep.start_target(cycle)
    cycle.stage = "target"
    if not sleep.user_manager then return sleep.finish(cycle, "done") end
    systemctl_target("start", function(ok)
        cycle.target_started = ok
        if sleep.cycle == cycle then sleep.finish(cycle, "done") end
    end)
end

-- A suspend ----------------------------------------------------------------

-- Seconds left to logind's limit once the margin is taken off: 10% of the
-- limit, at least 0.5 s, at most half of it.
function sleep.budget(delay)
    local margin = math.min(math.max(0.5, delay * 0.1), delay / 2)
    return delay - margin
end

-- The suspend is let go: the deadline timer stopped, the inhibitor
-- released.  `how`: "done", "deadline" or "resumed" (it went ahead anyway).
function sleep.finish(cycle, how)
    if cycle.stage == "done" then return end
    local pending = cycle.stage
    cycle.stage = "done"
    if cycle.timer then cycle.timer:stop() end
    sleep.last_took = lgi.GLib.get_monotonic_time() / 1e6 - cycle.t0
    if how == "deadline" then
        sleep.late = sleep.late + 1
        if pending == "locker" then
            sleep.locker_failed(cycle, string.format(
                "it did not take the keyboard within %.1f s", sleep.last_took))
        end
    end
    sleep.release_inhibitor()
end

-- PrepareForSleep(true).
function sleep.before()
    if sleep.cycle then return end
    sleep.suspends = sleep.suspends + 1
    local cycle = { t0 = lgi.GLib.get_monotonic_time() / 1e6, stage = "locker" }
    sleep.cycle = cycle
    capi.awesome.emit_signal("clua::sleep")
    local budget = sleep.budget(sleep.delay or sleep.DEFAULT_DELAY)
    cycle.timer = gtimer.start_new(budget, function()
        protected_call(sleep.finish, cycle, "deadline")
        return false
    end)
    if not sleep.locker then return sleep.start_target(cycle) end
    sleep.ensure_locker(function(ok, why)
        if sleep.cycle ~= cycle or cycle.stage ~= "locker" then return end
        if not ok then return sleep.locker_failed(cycle, "it could not start: " .. why) end
        -- The locker's share leaves sleep.target a second (a quarter at
        -- most) of the budget.
        local now = lgi.GLib.get_monotonic_time() / 1e6
        sleep.await_locker(cycle, math.max(0, cycle.t0 + budget - math.min(1, budget / 4) - now))
    end)
end

-- Makes every wibox draw itself whole again (Awesome issue 2470: after a
-- resume a bar can keep showing what it showed before).  A wibox's
-- drawable repaints everything when its surface changes: that signal,
-- emitted on each drawin's drawable, asks for exactly this.
function sleep.redraw()
    for _, d in ipairs(capi.drawin.get()) do
        protected_call(function() d.drawable:emit_signal("property::surface") end)
    end
end

-- PrepareForSleep(false): also after a suspend that failed or was
-- cancelled.
function sleep.after()
    local cycle = sleep.cycle
    if cycle then sleep.finish(cycle, "resumed") end
    sleep.cycle = nil
    sleep.resumes = sleep.resumes + 1
    sleep.take_inhibitor()
    if sleep.user_manager then systemctl_target("stop") end
    capi.awesome.emit_signal("clua::resumed")
    sleep.redraw()
    refresh_textclocks()
end

-- D-Bus --------------------------------------------------------------------

local function on_manager(data, start)
    if sleep.state ~= "on" or type(data) ~= "table" or data.member ~= "PrepareForSleep"
        or data.bus ~= "system" then
        return
    end
    if start == true then
        protected_call(sleep.before)
    elseif start == false then
        protected_call(sleep.after)
    end
end

local function on_session(data)
    if type(data) ~= "table" or data.path ~= sleep.session_path or data.bus ~= "system" then
        return
    end
    if data.member == "Lock" then
        sleep.locks = sleep.locks + 1
        if sleep.locker then
            sleep.ensure_locker(function(ok, why)
                if not ok then
                    report("sleep: locker " .. locker_line() .. " could not start: " .. why)
                end
            end)
        end
        capi.awesome.emit_signal("clua::lock")
    elseif data.member == "Unlock" then
        sleep.unlocks = sleep.unlocks + 1
        capi.awesome.emit_signal("clua::unlock")
    end
end

-- Awesome 4.3 keeps one handler per D-Bus interface, and refuses a second
-- with a warning.  So that rc.lua may still follow logind itself after
-- setup() (a lock script written for plain Awesome), the handler clua
-- connects calls, after its own, every handler connected later to the same
-- interface: dbus.connect_signal and dbus.disconnect_signal keep those in
-- a list of clua's for the interfaces it holds, and pass every other call
-- on unchanged.  Each runs protected: one that fails stops no other.
local shared_dbus = {}      -- interface -> the handlers connected after clua's

local function share_dbus_calls()
    if sleep.dbus_shared then return end
    sleep.dbus_shared = true
    local dbus = capi.dbus
    local connect, disconnect = dbus.connect_signal, dbus.disconnect_signal
    dbus.connect_signal = function(name, fn, ...)
        local others = shared_dbus[name]
        if not (others and type(fn) == "function") then return connect(name, fn, ...) end
        others[#others + 1] = fn
        return true
    end
    dbus.disconnect_signal = function(name, fn, ...)
        local others = shared_dbus[name]
        if others then
            for i = #others, 1, -1 do
                if others[i] == fn then table.remove(others, i) return end
            end
        end
        return disconnect(name, fn, ...)
    end
end

-- Connects `ours` to D-Bus interface `name` as Awesome's one handler,
-- sharing it with those connected later.  true, or nil and Awesome's
-- message when rc.lua connected one first.
local function connect_shared(name, ours)
    share_dbus_calls()
    local others = {}
    local ok, msg = capi.dbus.connect_signal(name, function(data, ...)
        protected_call(ours, data, ...)
        for _, fn in ipairs({ unpack(others) }) do
            protected_call(fn, data, ...)
        end
    end)
    if ok then shared_dbus[name] = others end
    return ok, msg
end

-- Connects clua's handlers to logind's interfaces at setup(), before the
-- rest of rc.lua runs, so that a handler rc.lua connects to them afterwards
-- is shared, not refused.  When rc.lua (or a library) connected one
-- before setup(), Awesome refuses ours: the feature then fails once logind
-- answers, rather than hold an inhibitor nobody releases at the right
-- moment.
function sleep.connect()
    local ok, msg = connect_shared(sleep.MANAGER, on_manager)
    if not ok then sleep.manager_refused = one_line(msg or "refused") end
    local id = os.getenv("XDG_SESSION_ID")
    if not id or id == "" then
        sleep.lock_why = "no XDG_SESSION_ID in Awesome's environment"
        return
    end
    ok, msg = connect_shared(sleep.SESSION, on_session)
    if ok then
        sleep.session_connected = sleep.session_object(id)
    else
        sleep.lock_why = "dbus.connect_signal: " .. one_line(msg or "refused")
    end
end

-- logind answered: follow its signals and take the inhibitor.
function sleep.follow()
    if sleep.manager_refused then
        sleep.state = "failed"
        return failed(sleep, "sleep: dbus.connect_signal", sleep.manager_refused ..
            " (rc.lua follows logind's PrepareForSleep before setup(): connect it " ..
            "after setup(), or to clua::sleep and clua::resumed)")
    end
    local sender = "type='signal',sender='" .. sleep.LOGIND .. "',"
    sleep.state = "on"
    capi.dbus.add_match("system", sender .. "interface='" .. sleep.MANAGER ..
        "',member='PrepareForSleep',path='/org/freedesktop/login1'")
    if sleep.session_connected then
        sleep.session_path = sleep.session_connected
        capi.dbus.add_match("system", sender .. "interface='" .. sleep.SESSION ..
            "',path='" .. sleep.session_path .. "'")
    elseif sleep.lock_why:match("^dbus") then
        report("sleep: Lock/Unlock not followed: " .. sleep.lock_why ..
            " (rc.lua follows logind's sessions before setup())")
    end
    sleep.take_inhibitor()
end

-- InhibitDelayMaxUSec, read once: busctl's answer ("t 5000000") says
-- whether logind answers on the system bus at all.  busctl's own limit
-- covers the call; ASK_LIMIT covers the rest (a bus that accepts the
-- connection and never answers): busctl is then killed and the feature
-- is off, saying so.
sleep.ASK_LIMIT = 10

function sleep.ask_logind()
    local pid = require("awful.spawn").easy_async({ sleep.tools.busctl, "--system", "--timeout=5",
        "get-property", sleep.LOGIND, "/org/freedesktop/login1", sleep.MANAGER,
        "InhibitDelayMaxUSec" }, function(stdout, stderr, reason, code)
            if sleep.state ~= "asking" then return end
            -- No wake-up left behind once busctl answered.
            if sleep.ask_timer then sleep.ask_timer:stop() end
            if reason ~= "exit" or code ~= 0 then
                sleep.state = "off"
                sleep.why_off = "no logind on the system bus: busctl " .. ended(reason, code) ..
                    ": " .. one_line(stderr ~= "" and stderr or "no message")
                return
            end
            local usec = tonumber(stdout:match("^t%s+(%d+)"))
            if usec and usec > 0 then
                sleep.delay = usec / 1e6
            else
                sleep.delay_error = "InhibitDelayMaxUSec unreadable: " .. one_line(stdout)
            end
            protected_call(sleep.follow)
        end)
    if type(pid) ~= "number" then
        sleep.state, sleep.why_off = "off", "busctl could not start: " .. one_line(pid)
        return
    end
    sleep.ask_timer = gtimer.start_new(sleep.ASK_LIMIT, function()
        if sleep.state == "asking" then
            sleep.state = "off"
            sleep.why_off = "logind did not answer on the system bus within " ..
                sleep.ASK_LIMIT .. " s"
            capi.awesome.kill(pid, 15)
        end
        return false
    end)
end

function sleep.start(opts)
    sleep.locker = opts.locker
    track_textclocks()
    if type(capi.dbus) ~= "table" then
        sleep.state, sleep.why_off = "off", "this Awesome has no D-Bus support"
        return
    end
    for _, program in ipairs { "busctl", "systemd-inhibit", "cat", "systemctl", "clua-grabwait" } do
        sleep.tools[program] = lgi.GLib.find_program_in_path(program)
        if not sleep.tools[program] and program ~= "clua-grabwait" then
            sleep.state, sleep.why_off = "off", program .. " is not on PATH"
            return
        end
    end
    sleep.user_manager = user_manager_runs()
    sleep.connect()
    sleep.state = "asking"
    sleep.ask_logind()
end

-- Awesome exits or exec's itself: the pipe would close anyway (close-on-
-- exec); closing it here says so.
function sleep.stop()
    sleep.release_inhibitor()
end

function sleep.status()
    if sleep.state == "off" then
        return "sleep: off (" .. tostring(sleep.why_off or "no reason given") .. ")"
    elseif sleep.state == "asking" then
        return "sleep: starting (asking logind for InhibitDelayMaxUSec)"
    elseif sleep.state ~= "on" then
        return failed_line(sleep)
    end
    local inh = sleep.inhibitor
    local line = "sleep: on, " ..
        (inh and ("delay inhibitor held (systemd-inhibit pid " .. inh.pid .. ")")
            or ("no delay inhibitor" ..
                (sleep.cycle and " (let go for the suspend under way)" or "") ..
                (sleep.inhibitor_error and (", last error: " .. sleep.inhibitor_error) or ""))) ..
        ", " .. (not sleep.locker and "no locker"
            or ("locker " .. sleep.locker[1] .. (sleep.locker_pid
                and (" running (pid " .. sleep.locker_pid .. ")") or " not running") ..
                " (" .. sleep.locker_failures .. " failures)")) ..
        ", " .. sleep.suspends .. " suspends seen, " .. sleep.resumes .. " resumes, " ..
        sleep.late .. " let go by the deadline" ..
        (sleep.last_took and string.format(" (last held %.3f s)", sleep.last_took) or "") ..
        ", logind waits at most " ..
        (sleep.delay and string.format("%g s", sleep.delay)
            or string.format("%g s (assumed: %s)", sleep.DEFAULT_DELAY,
                tostring(sleep.delay_error or "InhibitDelayMaxUSec unknown")))
    local locker
    if not sleep.locker then
        locker = "locker: none (setup{ sleep = { locker = {...} } })"
    else
        locker = "locker: " .. locker_line() .. ", " .. sleep.lockers .. " started" ..
            ", " .. (sleep.tools["clua-grabwait"] and "ready once it holds the keyboard"
                or "NOT waited for (clua-grabwait is not on PATH)") ..
            ", " .. sleep.locker_failures .. " failures" ..
            (sleep.locker_error and (", last: " .. sleep.locker_error) or "")
    end
    local lock = sleep.session_path
        and ("lock: following Lock/Unlock of " .. sleep.session_path .. ", " ..
             sleep.locks .. " locks, " .. sleep.unlocks .. " unlocks")
        or ("lock: Lock/Unlock not followed (" .. tostring(sleep.lock_why) .. ")")
    local target = sleep.user_manager
        and ("sleep.target: started before each suspend, stopped after" ..
             (sleep.target_error and (", last error: " .. sleep.target_error) or ""))
        or "sleep.target: not driven (no systemd user manager)"
    return line, locker, lock, target
end

-- Public API ------------------------------------------------------------

-- The features in the order setup() starts them; Awesome's `exit` stops
-- them in reverse.  The watchdog comes last: the STATUS= line its READY=1
-- carries tells of the others, and at exit it is the first to tell the
-- manager (RELOADING=1 or STOPPING=1).
local FEATURES = { subreaper, clock, timezone, stall, scopes, restore, sleep, watchdog }

-- Each feature by its option's name.
local BY_NAME = {}
for _, feature in ipairs(FEATURES) do BY_NAME[feature.name] = feature end

-- For the specs (read-only use): each feature's table, by option name, and
-- the options setup() ran with (set by setup).
cluawm._state = { options = nil }
for name, feature in pairs(BY_NAME) do cluawm._state[name] = feature end

-- The order the README and setup's LDoc list the options in, and status()
-- reports them in.
local DOCUMENTED = { subreaper, clock, timezone, watchdog, stall, scopes, restore, sleep }

-- The options of the setup() that ran; nil before.
local options = nil

-- Why each feature is off, by name, once setup() ran: "setup option" when
-- its option is false, "bad option: ..." when clua refused its value.
local off = {}

-- Awesome emits `exit` once its main loop has ended, right before it
-- exec's itself (restart) or exits: no timer or fd source runs any more,
-- and every fd is close-on-exec, so only the features with a `stop` have
-- something to undo.  Each runs protected: one failing stops no other.
local function on_exit(restart)
    for i = #FEATURES, 1, -1 do
        local feature = FEATURES[i]
        if feature.stop and feature.running then
            protected_call(feature.stop, restart)
        end
    end
end

-- What clua accepts for the stall limit, in seconds (clua.stallguard's).
local STALL_MAX = 86400

-- The value of option `name` given `v`: true when nil (every option
-- defaults to on), the boolean itself, for `stall` a number of seconds
-- (true is 10), for `sleep` a table (sleep.option).  nil, what was
-- expected and, when it is a part of the value, which part, when clua
-- refuses it.
local function option_value(name, v)
    if v == nil then v = true end
    if name == "stall" then
        if v == true then return 10 end
        if v == false then return false end
        if type(v) == "number" and v > 0 and v <= STALL_MAX then return v end
        return nil, "true, false or a number of seconds above 0 and at most " .. STALL_MAX
    end
    if name == "sleep" then return sleep.option(v) end
    if type(v) == "boolean" then return v end
    return nil, "true or false"
end

-- Checks every option, reporting each unknown or refused one in a line of
-- its own.  Returns the options (name -> value, false for off) and why
-- each off feature is off.
local function check_options(args)
    local given, why_off = {}, {}
    if type(args) ~= "table" then
        report("setup: bad argument #1 (a table of options expected, got " .. shown(args) ..
            "): every feature starts with its default")
        args = {}
    end
    local unknown = {}
    for k in pairs(args) do
        if type(k) ~= "string" or not BY_NAME[k] then unknown[#unknown + 1] = shown(k) end
    end
    table.sort(unknown)
    for _, k in ipairs(unknown) do
        report("setup: unknown option " .. k .. " (ignored; the options are " ..
            "subreaper, clock, timezone, watchdog, stall, scopes, restore, sleep)")
    end
    for _, feature in ipairs(DOCUMENTED) do
        local name = feature.name
        local value, expected, part = option_value(name, args[name])
        if value == nil then
            local what = part or (name .. " = " .. shown(args[name]))
            why_off[name] = "bad option " .. (part or shown(args[name])) .. ", " ..
                expected .. " expected"
            report("setup: bad option " .. what .. " (" ..
                expected .. " expected): " .. name .. " is off")
            value = false
        elseif value == false then
            why_off[name] = "setup option"
        end
        given[name] = value
    end
    return given, why_off
end

--- Start everything.  Call once, near the top of rc.lua (before the
-- textclocks are built).  A second call changes nothing.
--
-- It never raises and never stops rc.lua: an unknown option, or a value
-- clua does not accept, is reported in one line (`gears.debug` on stderr,
-- and the `debug::error` signal, a notification in the default rc.lua) and
-- turns that feature alone off; a feature that fails to start is
-- reported and stops no other.  `status()` says which and why.
--
-- Under a service manager (`NOTIFY_SOCKET` set) `READY=1` goes out once
-- Awesome has started, whatever the options: `watchdog = false` turns off
-- the heartbeat alone, and tells systemd to stop the unit's watchdog for
-- this Awesome (`WATCHDOG_USEC=0`), which would otherwise kill it.
-- @tparam[opt] table args
-- @tparam[opt=true] boolean args.subreaper become Awesome's child subreaper;
--   every program `awful.spawn` starts gets an exit callback, and adopted
--   orphans are reaped by their pidfds, so Awesome logs neither as unknown
-- @tparam[opt=true] boolean args.clock watch wall-clock changes
-- @tparam[opt=true] boolean args.timezone follow timezone changes
--   (`/etc/localtime`)
-- @tparam[opt=true] boolean args.watchdog feed `WatchdogSec=` when the unit
--   sets it (READY, STOPPING, RELOADING and STATUS go out in any case)
-- @tparam[opt=10] number|boolean args.stall interrupt Lua after this many
--   seconds without the main loop turning (above 0, at most 86400); `true`
--   is 10, `false` turns it off
-- @tparam[opt=true] boolean args.scopes under a systemd user manager, run
--   each application started with `awful.spawn` in a scope of its own
-- @tparam[opt=true] boolean args.restore give every window its tags, screen
--   and state back after a restart
-- @tparam[opt=true] boolean|table args.sleep hold logind's delay inhibitor:
--   emit `clua::sleep` and `clua::resumed` around a suspend, `clua::lock` and
--   `clua::unlock` at logind's Lock and Unlock of this session, start the
--   user manager's `sleep.target` before a suspend and stop it after; a
--   table `{ locker = { PROGRAM, ARG... } }` also starts that screen locker
--   (an argument list, no shell) at Lock and before each suspend, and lets
--   the suspend go on once it holds the keyboard (within logind's
--   `InhibitDelayMaxSec`); `false` turns it off
-- @treturn boolean true the first time, false when already set up
-- @usage
-- -- rc.lua, before the widgets are built: everything on
-- require("clua.awesome").setup {}
-- -- or a stall limit of 5 s and no scopes
-- require("clua.awesome").setup { stall = 5, scopes = false }
-- -- or the screen locked before every suspend
-- require("clua.awesome").setup { sleep = { locker = { "i3lock", "-n" } } }
function cluawm.setup(args)
    local given, why_off = check_options(args)
    if options then return false end
    options = given
    off = why_off
    cluawm._state.options = given
    cluawm._state.off = why_off

    for _, feature in ipairs(FEATURES) do
        if given[feature.name] or feature.always then
            local ok, err = pcall(feature.start, given[feature.name])
            if ok then
                feature.running = true
            else
                feature.broken = true
                feature.error = one_line(err)
                report(feature.name .. ": could not start: " .. feature.error)
            end
        end
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
-- order of setup's options, saying what each does, or why it does not:
-- "off (setup option)", "off (bad option ...)", "failed: why", or what
-- keeps it from working here ("scopes: off (no systemd user manager)").
--
-- It tells the subreaper state, the live children and the orphans clua
-- reaped, the clock events (last jump and suspend), the timezone and the
-- changes seen, the watchdog interval and heartbeats sent (and, under a
-- service manager, whether `READY=1` went out), the stalls interrupted and
-- the longest main-loop stall seen (the longest turn of the loop, from the
-- moment it woke to the moment its Lua work was done, the end of Awesome's
-- `refresh`, on the monotonic clock, time the process was stopped left out;
-- under LuaJIT one more line says whether compiled loops are covered), the
-- applications started in scopes, and the windows put back at this start
-- and how long that took (README.md shows an example).
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
        local why_off = off[feature.name]
        if feature.broken then
            append(lines, failed_line(feature))
        elseif why_off and not feature.always then
            append(lines, feature.name .. ": off (" .. why_off .. ")")
        else
            local ok, err = pcall(function() append(lines, feature.status(why_off)) end)
            if not ok then append(lines, feature.name .. ": status failed: " .. one_line(err)) end
        end
    end
    return table.concat(lines, "\n")
end

return cluawm
