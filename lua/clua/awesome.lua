---------------------------------------------------------------------------
--- Keep Awesome healthy on a systemd desktop, with one line in rc.lua.
--
--    local cluawm = require("clua.awesome")
--    cluawm.setup { subreaper = true, clock = true, watchdog = true, stall = 10 }
--
-- * **subreaper**: orphans of the programs Awesome starts re-parent to
--   Awesome (which reaps them) instead of init.
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
--   `stall` seconds without the main loop turning.
-- * **scopes**: under a systemd user manager, every application launched
--   with `awful.spawn` runs in a systemd scope of its own in `app.slice`, so
--   a watchdog kill or a crash of Awesome takes no application with it.
-- * **restore**: every window keeps its tags, screen and floating,
--   minimised and maximised state across any restart of Awesome.
--
-- Awesome >= 4.3 reaps its children in its own SIGCHLD handler; this module
-- never reaps there and never touches SIGCHLD (a `waitpid(-1)` from Lua would
-- steal the exit status `awful.spawn.easy_async` waits for).
--
-- @author clua
-- @module clua.awesome
---------------------------------------------------------------------------

local capi = { awesome = awesome, client = client, screen = screen }
local setmetatable = setmetatable
local tostring = tostring
local type = type
local error = error
local pairs = pairs
local string = string
local table = table
local getmetatable = getmetatable
local ipairs = ipairs
local math = math
local os = os
local pcall = pcall

local clua = require("clua")
local lgi = require("lgi")
local gtimer = require("gears.timer")
local gdebug = require("gears.debug")
local protected_call = require("gears.protected_call")

local cluawm = {}

-- Everything setup() started, and what status() reports.  Module state, so
-- a second setup() sees the first one.
local state = {
    done = false,
    options = nil,
    subreaper = nil,       -- true, or the error text
    sweep_timer = nil,
    swept = 0,
    clock = nil,           -- the clockwatch
    clock_how = nil,       -- which GLib call watches its fd
    clock_source = nil,    -- the GLib source id
    clock_events = 0,
    last_jump = nil,
    last_suspended = nil,
    textclocks = setmetatable({}, { __mode = "k" }),
    tz = nil,              -- the timezonewatch
    tz_how = nil,          -- which GLib call watches its fd
    tz_source = nil,       -- the GLib source id
    tz_changes = 0,
    tz_wakeups = 0,        -- times its fd woke the main loop
    watchdog_usec = nil,
    heartbeat = nil,       -- the gears.timer feeding the watchdog
    heartbeats = 0,
    ready_sent = false,
    managed = false,       -- a service manager listens (NOTIFY_SOCKET set)
    stall_limit = nil,
    guard = nil,
    stall_timer = nil,
    stalls_seen = 0,
    last_tick = nil,
    longest_stall = 0,
    errors = {},           -- features that failed to start, with why
}

-- The monotonic clock, in seconds (GLib's, like gears.timer's).
local monotonic
do
    local GLib = lgi.GLib
    monotonic = function() return GLib.get_monotonic_time() / 1e6 end
end

-- Reports an error without raising: on stderr through gears.debug and as
-- the `debug::error` signal, which Awesome's default rc.lua turns into a
-- notification.
local function report(message)
    message = "clua.awesome: " .. tostring(message)
    gdebug.print_error(message)
    if capi.awesome and capi.awesome.emit_signal then
        protected_call(capi.awesome.emit_signal, "debug::error", message)
    end
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

-- systemd notification, used by every part -------------------------

local status_line -- forward

-- A failed send is reported once, not at every heartbeat: a manager that
-- stops reading its socket makes every call fail at once (EAGAIN; none
-- ever waits) until it reads again.  Once a message gets through, the
-- next failure is reported anew.
local notify_failing = false

local function notify(name, ...)
    local f = clua[name]
    if not f then return end
    local ok, msg = f(...)
    if ok == nil and not notify_failing then
        notify_failing = true
        report(name .. ": " .. tostring(msg) ..
            " (reported once; clua.awesome goes on, and says so again after a success)")
    elseif ok then
        notify_failing = false
    end
    return ok
end

-- Tells systemd what changed (STATUS=), when the watchdog option is on and
-- a service manager listens: the status line scans /proc for children, work
-- not worth doing for nobody.
local function update_status()
    if state.options.watchdog and state.ready_sent and state.managed then
        notify("notify_status", status_line())
    end
end

-- Subreaper -------------------------------------------------------------

local function start_subreaper()
    local ok, msg = clua.setsubreap(true)
    if not ok then
        state.errors.subreaper = msg
        report("setsubreap: " .. tostring(msg))
        return
    end
    state.subreaper = true
    -- Awesome >= 4.3 has its own SIGCHLD handler reaping every child with
    -- waitpid(-1), adopted orphans included: reaping here would steal its
    -- statuses.  Only without a handler (older Awesome) do the zombies pile
    -- up, and then a coarse sweep, which leaves young zombies to whoever
    -- waits for them, collects them.
    local disposition = clua.sigchld and clua.sigchld()
    if disposition ~= "handler" and clua.sweep then
        state.sweep_timer = gtimer {
            timeout = 5,
            autostart = true,
            callback = function()
                local gone = clua.sweep()
                if gone then state.swept = state.swept + #gone end
            end,
        }
    end
end

-- Clock -----------------------------------------------------------------

-- Finds how this GLib/lgi watches an fd for readability.  Returns a name
-- for status() and a function(fd, callback) -> source id.  Looked up at
-- setup time (not at load time) so a test can hide a spelling.
local function find_fd_watch()
    local GLib = lgi.GLib
    local IN = GLib.IOCondition.IN
    -- GLib 2.74 with lgi 0.9.2 (Debian 12): only the *_full form exists.
    if GLib.unix_fd_add_full then
        return "GLib.unix_fd_add_full", function(fd, cb)
            return GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, fd, IN, cb)
        end
    end
    -- GLib >= 2.80 moved it to GLibUnix, and 2.88 dropped the old alias.
    local ok, GLibUnix = pcall(lgi.require, "GLibUnix")
    if ok and GLibUnix and GLibUnix.fd_add_full then
        return "GLibUnix.fd_add_full", function(fd, cb)
            return GLibUnix.fd_add_full(GLib.PRIORITY_DEFAULT, fd, IN, cb)
        end
    end
    -- Works everywhere.  The channel does not own the fd (close-on-unref is
    -- off by default): the clockwatch closes it.
    return "GLib.io_add_watch", function(fd, cb)
        local channel = GLib.IOChannel.unix_new(fd)
        return GLib.io_add_watch(channel, GLib.PRIORITY_DEFAULT, IN, cb)
    end
end

-- Makes every textclock created since setup show the current time.
local function refresh_textclocks()
    for clock in pairs(state.textclocks) do
        protected_call(clock.force_update, clock)
    end
end

-- Why the constructor is wrapped: nothing in Awesome lists the textclocks
-- that exist (each owns a private weak gears.timer), and walking the widget
-- trees of all wiboxes would miss a textclock not shown at the moment.
-- Wrapping `wibox.widget.textclock`'s constructor (its metatable's __call)
-- sees every textclock built after setup(), which is where rc.lua builds
-- them; a weak-keyed set keeps them collectable.
local function track_textclocks()
    local ok, textclock = pcall(require, "wibox.widget.textclock")
    if not ok or type(textclock) ~= "table" then return end
    local mt = getmetatable(textclock)
    if not mt or type(mt.__call) ~= "function" or mt.__clua_wrapped then return end
    local new = mt.__call
    mt.__call = function(...)
        local widget = new(...)
        if widget then state.textclocks[widget] = true end
        return widget
    end
    mt.__clua_wrapped = true
end

local function on_clock_readable()
    local event, msg = state.clock:read()
    if not event then
        if msg then report("clockwatch read: " .. tostring(msg)) end
        return
    end
    state.clock_events = state.clock_events + 1
    state.last_jump = event.jump
    state.last_suspended = event.suspended
    refresh_textclocks()
    capi.awesome.emit_signal("clua::clock_changed",
        { jump = event.jump, suspended = event.suspended })
    update_status()
end

-- Starts a feature built on a clua watch (`clua[ctor]()`) whose fd wakes
-- the main loop: tracks the textclocks and calls on_readable at each
-- wake-up; when it cannot, records and reports why.  Returns the watch, the
-- GLib call watching its fd and the source id, or nothing.
local function start_watch(feature, ctor, on_readable)
    if not clua[ctor] then
        state.errors[feature] = "this clua has no " .. ctor
        report(feature .. ": " .. state.errors[feature])
        return
    end
    local watch, msg = clua[ctor]()
    if not watch then
        state.errors[feature] = msg
        report(ctor .. ": " .. tostring(msg))
        return
    end
    track_textclocks()
    local how, add = find_fd_watch()
    return watch, how, add(watch:fd(), keep_source(on_readable))
end

local function start_clock()
    state.clock, state.clock_how, state.clock_source =
        start_watch("clock", "clockwatch", on_clock_readable)
end

-- Timezone --------------------------------------------------------------

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
    -- new_local().
    local zone = TimeZone.new_identifier and TimeZone.new_identifier(name)
    for clock in pairs(state.textclocks) do
        local private = clock._private
        if type(private) == "table" and private.tzid == nil then
            private.timezone = zone or nil
        end
    end
end

local function on_timezone_readable()
    state.tz_wakeups = state.tz_wakeups + 1
    local change, msg = state.tz:read()
    if not change then
        if msg then report("timezonewatch read: " .. tostring(msg)) end
        return
    end
    local ok, err = clua.tzset()
    if not ok then report("tzset: " .. tostring(err)) end
    state.tz_changes = state.tz_changes + 1
    rezone_textclocks(change.new)
    refresh_textclocks()
    capi.awesome.emit_signal("clua::timezone_changed",
        { old = change.old, new = change.new })
end

local function start_timezone()
    state.tz, state.tz_how, state.tz_source =
        start_watch("timezone", "timezonewatch", on_timezone_readable)
end

-- systemd notification and watchdog -------------------------------------

local function send_ready()
    if state.ready_sent then return end
    state.ready_sent = true
    notify("notify_ready", status_line())
end

local function start_notify()
    -- READY=1, RELOADING=1, STOPPING=1 and STATUS= go out whenever a
    -- service manager listens (each call is a no-op returning false without
    -- NOTIFY_SOCKET), so a Type=notify unit without WatchdogSec= starts too.
    -- The heartbeat timer runs only when the watchdog is on for this pid.
    state.managed = os.getenv("NOTIFY_SOCKET") ~= nil
    local usec = clua.watchdog_usec and clua.watchdog_usec()
    if usec then
        state.watchdog_usec = usec
        state.heartbeat = gtimer {
            timeout = usec / 1e6 / 2,
            autostart = true,
            callback = function()
                if notify("notify_watchdog") then
                    state.heartbeats = state.heartbeats + 1
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
    capi.awesome.connect_signal("exit", function(restart)
        if restart then
            -- The new image sends READY=1 again from its own setup().
            notify("notify_reloading")
        else
            notify("notify_stopping")
        end
    end)
end

-- Stall breaker ---------------------------------------------------------

-- How the longest stall is measured: the tick timer wants to run every
-- limit/4 seconds; it can only run late when the main loop did not turn, so
-- (time since the previous tick - limit/4) is how long the loop was held up.
-- The largest such delay is the longest stall seen, interrupted or not.
local function on_stall_tick()
    local now = monotonic()
    if state.last_tick then
        local late = now - state.last_tick - state.stall_limit / 4
        if late > state.longest_stall then state.longest_stall = late end
    end
    state.last_tick = now
    state.guard:tick()
    local n = state.guard:stalls()
    if n > state.stalls_seen then
        -- The error itself went to whichever pcall was nearest (awful.remote,
        -- a gears.timer...); report it here too, with its traceback.
        local detail = state.guard:last()
        state.stalls_seen = n
        report("Lua interrupted: the main loop did not turn for " ..
            string.format("%g", state.stall_limit) .. " s (" .. n ..
            (n == 1 and " stall" or " stalls") .. " so far)" ..
            (detail and ("\n" .. tostring(detail)) or ""))
        update_status()
    end
end

local function start_stall(limit)
    if not clua.stallguard then
        state.errors.stall = "this clua has no stallguard"
        report("stall: " .. state.errors.stall)
        return
    end
    local guard, msg = clua.stallguard(limit)
    if not guard then
        state.errors.stall = msg
        report("stallguard: " .. tostring(msg))
        return
    end
    state.guard = guard
    state.stall_limit = limit
    state.last_tick = monotonic()
    state.stall_timer = gtimer {
        timeout = limit / 4,
        autostart = true,
        callback = on_stall_tick,
    }
    -- Awesome tears itself down before exec'ing (restart) or exiting; that
    -- may take longer than the limit and must not be interrupted.
    capi.awesome.connect_signal("exit", function()
        state.stall_timer:stop()
        guard:stop()
    end)
end

-- Application scopes ----------------------------------------------------

-- Everything Awesome starts lives in its own control group, so when
-- systemd kills a hung Awesome (its watchdog) or cleans up after a crash,
-- every application goes with it.  clua-scope (tools/clua-scope.c) runs a
-- command in a transient scope of its own in app.slice instead, and
-- exec's it in place: the pid awful.spawn returns, startup notification
-- (DESKTOP_STARTUP_ID) and exit callbacks stay as they were.
local scopes = {
    helper = nil,       -- clua-scope's path, while on
    launched = 0,       -- commands started in a scope
    why_off = nil,      -- why not, for status()
}

--- Whether applications can have scopes here: nil and clua-scope's path,
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

--- The command `cmd` (awesome.spawn's first argument) run through
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

--- Makes `awesome.spawn`, which every awful.spawn function calls, start
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

--- One line per fact: "screen N", "tag INDEX NAME" for each tag, then each
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
-- @tparam[opt=true] boolean args.subreaper become Awesome's child subreaper
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
function cluawm.setup(args)
    if args ~= nil and type(args) ~= "table" then
        error("clua.awesome.setup: bad argument #1 (table expected, got " .. type(args) .. ")", 2)
    end
    args = args or {}
    for k in pairs(args) do
        if k ~= "subreaper" and k ~= "clock" and k ~= "watchdog" and k ~= "stall"
            and k ~= "scopes" and k ~= "restore" and k ~= "timezone" then
            error("clua.awesome.setup: unknown option '" .. tostring(k) .. "'", 2)
        end
    end
    local options = {
        subreaper = check_option(args, "subreaper"),
        clock = check_option(args, "clock"),
        timezone = check_option(args, "timezone"),
        watchdog = check_option(args, "watchdog"),
        stall = check_option(args, "stall", true),
        scopes = check_option(args, "scopes"),
        restore = check_option(args, "restore"),
    }
    if options.stall == true then options.stall = 10 end
    if state.done then return false end
    state.done = true
    state.options = options

    if options.subreaper then start_subreaper() end
    if options.clock then start_clock() end
    if options.timezone then start_timezone() end
    if options.stall then start_stall(options.stall) end
    if options.scopes then scopes.start() end
    if options.restore then restore.start() end
    if options.watchdog then start_notify() end
    return true
end

local function seconds(x)
    if x == nil then return "none" end
    return string.format("%+.3f s", x)
end

-- The one-line summary sent as systemd's STATUS=.
function status_line()
    local parts = {}
    if state.subreaper then
        local kids = clua.children and clua.children()
        parts[#parts + 1] = "subreaper" .. (kids and (", " .. #kids .. " children") or "")
    end
    if state.clock then
        parts[#parts + 1] = state.clock_events .. " clock changes"
    end
    if state.guard then
        parts[#parts + 1] = state.stalls_seen .. " stalls interrupted"
    end
    return "clua: " .. (#parts > 0 and table.concat(parts, "; ") or "idle")
end

--- A human-readable summary, several lines:
-- `awesome-client 'return require("clua.awesome").status()'`.
-- @treturn string
function cluawm.status()
    local lines = {}
    local function add(...) lines[#lines + 1] = table.concat({ ... }) end
    if not state.done then
        return "clua.awesome: setup() not called"
    end
    local o = state.options
    if state.subreaper then
        local on = clua.getsubreap()
        add("subreaper: ", on and "on" or "OFF",
            state.sweep_timer
                and (", sweeping (SIGCHLD has no handler), " .. state.swept .. " swept")
                or ", Awesome reaps (SIGCHLD handler)")
        local kids = clua.children and clua.children()
        add("children: ", kids and tostring(#kids) or "unknown")
    else
        add("subreaper: ",
            o.subreaper and ("failed: " .. tostring(state.errors.subreaper)) or "off")
    end
    if state.clock then
        add("clock: watching fd ", tostring(state.clock:fd()), " via ", state.clock_how)
        add("clock events: ", tostring(state.clock_events),
            ", last jump ", seconds(state.last_jump),
            ", last suspend ", seconds(state.last_suspended))
    else
        add("clock: ", o.clock and ("failed: " .. tostring(state.errors.clock)) or "off")
    end
    if state.tz then
        add("timezone: ", tostring(state.tz:zone() or "none"), " (/etc/localtime, fd ",
            tostring(state.tz:fd()), " via ", state.tz_how, ")",
            tz_overridden() and (", overridden by TZ=" .. os.getenv("TZ")) or "")
        add("timezone changes: ", tostring(state.tz_changes))
    else
        add("timezone: ", o.timezone and ("failed: " .. tostring(state.errors.timezone)) or "off")
    end
    if state.watchdog_usec then
        add("watchdog: every ", string.format("%g", state.watchdog_usec / 1e6),
            " s, heartbeat every ", string.format("%g", state.watchdog_usec / 2e6),
            " s, ", tostring(state.heartbeats), " heartbeats sent")
    else
        add("watchdog: ", o.watchdog and "not enabled by a service manager" or "off")
    end
    if state.guard then
        add("stall: limit ", string.format("%g", state.stall_limit), " s, ",
            tostring(state.guard:stalls()), " interrupted, longest main-loop stall ",
            string.format("%.1f", state.longest_stall), " s")
    else
        add("stall: ", o.stall and ("failed: " .. tostring(state.errors.stall)) or "off")
    end
    add(o.scopes and scopes.status() or "scopes: off")
    add(o.restore and restore.status() or "restore: off")
    return table.concat(lines, "\n")
end

-- For the specs: what setup() started (read-only use).
cluawm._state = state

return cluawm
