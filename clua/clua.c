/***
 * Process, clock, timezone, systemd and stall primitives for a
 * Lua-configured window manager, or any Lua program (a daemon, another
 * window manager's config, a script). One flat table:
 *
 *     local clua = require("clua")
 *
 * Wrong argument types or values raise a Lua error naming the function and
 * the argument. A failing system call returns `nil, message, errno`. Every
 * fd the module opens is close-on-exec.
 *
 * **Processes.** Programs started from a window manager often double-fork
 * (a terminal, a script ending in `&`): their grandchildren then re-parent
 * to init and escape the session. As a child subreaper (`setsubreap`) the
 * window manager adopts them instead, and must then reap them, or they
 * linger as zombies. In rc.lua, adopt the session's orphans; sweep only
 * where nobody else reaps (Awesome 4.3 and later reap every child in their
 * own SIGCHLD handler, and a `waitpid(-1)` from Lua would steal the exit
 * status `awful.spawn.easy_async` waits for):
 *
 *     local gears = require("gears")
 *     clua.setsubreap(true)
 *     if clua.sigchld() ~= "handler" then     -- Awesome < 4.3: nobody reaps
 *         gears.timer { timeout = 5, autostart = true,
 *                       callback = function() clua.sweep() end }
 *     end
 *
 * From a shell, how many children Awesome has, and whether it adopts
 * orphans: `awesome-client 'return #require("clua").children()'`,
 * `awesome-client 'return require("clua").getsubreap()'`. The names of the
 * original 2014 module (`setsubreap`, `reap`, `ignore_SIGCHLD`) keep
 * working; `reap` now returns the pid first.
 *
 * **Clock changes.** `gears.timer` and friends run on the monotonic clock,
 * so they never notice when the wall clock is set, by hand, by NTP, or on
 * every resume from suspend. A `clockwatch` is told by the kernel the
 * moment that happens, without polling (`examples/clockwatch.lua`):
 *
 *     local watch = assert(clua.clockwatch())
 *     while true do
 *         local change = watch:wait()
 *         if change and change.suspended >= 0.001 then
 *             print(("resumed after %.1f s asleep"):format(change.suspended))
 *         elseif change then
 *             print(("clock stepped %+.3f s"):format(change.jump))
 *         end
 *     end
 *
 * **Timezone changes.** A process loads its timezone once: after
 * `timedatectl set-timezone` every running program goes on in the old
 * zone. A `timezonewatch` sees `/etc/localtime` change, and `tzset` makes
 * the C library load the zone again (`examples/timezonewatch.lua`):
 *
 *     local watch = assert(clua.timezonewatch())
 *     while true do
 *         local change = watch:wait()
 *         if change then
 *             clua.tzset()                  -- os.date follows from here on
 *             print(change.old, "->", change.new, os.date("%H:%M %Z"))
 *         end
 *     end
 *
 * In a program with its own main loop (GLib, luv, cqueues), watch a
 * watch's `fd()` for readability and call its `read()` on each wake-up
 * instead of `wait()`.
 *
 * **systemd notification.** For a program run as a `Type=notify` service,
 * optionally with `WatchdogSec=`, so systemd knows when it is up and kills
 * and restarts it when its heartbeats stop. The calls never wait: libsystemd's
 * `sd_notify()` (version 252) sends on a blocking socket, and once the
 * manager stops reading (10 messages fill its queue) the next call would
 * freeze a main loop for good; clua sends with `MSG_DONTWAIT` instead, on a
 * socket opened once and kept, so a full queue gives `EAGAIN` at once. A
 * daemon written in Lua, run with `Type=notify` and `WatchdogSec=10`:
 *
 *     local usec = clua.watchdog_usec()   -- nil when no watchdog is set
 *     clua.notify_ready("serving")
 *     while true do
 *         do_some_work()                  -- must come back well within 10 s
 *         if usec then clua.notify_watchdog() end
 *     end
 *
 * **Stall breaker.** A Lua loop that never returns freezes a window
 * manager until something kills it. A `stallguard` interrupts it instead,
 * the way `lua` stops a script on Ctrl-C, with the error
 * `"rc.lua:12: main loop stalled for 10.0 s: interrupted"` and a
 * traceback, and the program lives on with all its state:
 *
 *     local guard = assert(clua.stallguard(10))   -- seconds of busy loop
 *     guard:tick()      -- a program with its own loop: every turn or so
 *     guard:glib()      -- or, inside a running GLib main loop (lgi)
 *
 * It never wakes an idle process, never counts time the process was
 * stopped (SIGSTOP, the cgroup freezer, a debugger), never interrupts the
 * host's own C code, and sends its signal only into a system call that
 * `SA_RESTART` restarts, so no call fails with `EINTR`. Under LuaJIT
 * compiled loops are interrupted too (`stallguard:jit`). What it cannot
 * reach: a stall inside C (`io.popen("cmd"):read("a")` on a command that
 * hangs) is interrupted only once the call returns, in the Lua code that
 * made it; Lua running inside a coroutine of PUC Lua is interrupted only
 * when the coroutine yields or returns (LuaJIT reaches coroutines too);
 * under Lua 5.1 and LuaJIT, `stallguard` must be called from the main Lua
 * thread. Choose the limit longer than the longest legitimate piece of Lua
 * work in one turn of the loop, and shorter than half of `WatchdogSec`
 * (the pings come every half interval, so a stall may start up to half an
 * interval after the last one): the default of 10 s suits `WatchdogSec=30`
 * or more. How it decides, step by step, is in HACKING.md.
 * @module clua
 */

/*
 * clua.c - the module entry point: one flat `clua` table holding every
 * concern's functions (clua.reap, clua.clockwatch, clua.notify_ready...):
 * the names rc.lua snippets and other programs call, so none is ever
 * renamed or moved into a sub-table.
 */
#include "clua.h"

__attribute__((visibility("default"))) int luaopen_clua(lua_State *L);

int luaopen_clua(lua_State *L)
{
	lua_newtable(L);
	clua_open_process(L);
	clua_open_clock(L);
	clua_open_notify(L);
	clua_open_stall(L);
	clua_open_timezone(L);
	lua_pushliteral(L, CLUA_VERSION);
	lua_setfield(L, -2, "_VERSION");
	return 1;
}
