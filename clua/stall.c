/*
 * stall.c - the stall breaker's Lua API: interrupt a runaway Lua loop on
 * the main thread, the way lua.c stops a script on Ctrl-C, but from a
 * watcher thread instead of a terminal. stall.h names the parts this file
 * wires together, and holds the table of states they follow.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clua.h"
#include "stall.h"
#include "util.h"

/***
 * Stall breaker: interrupt a runaway Lua loop on the main thread.
 * @submodule clua
 */

#define STALLGUARD_TNAME "clua.stallguard"
#define LIMIT_MAX 86400.0		/* a day; also keeps ns within 64 bits */

/* The userdata. Only the main thread reads or writes it. */
struct stallguard {
	int running;
	unsigned gen;		/* st.gen when started: a fork makes it stale */
	int signo;
	double limit;
	lua_Integer stalls;
	long long longest_ns;	/* kept at stop */
	int jit;		/* stalljit_start's answer */
	const char *jit_why;
};

/* One guard per process. */
static struct {
	int busy;			/* (atomic) a guard runs */
	unsigned gen;			/* bumped in a forked child */
	lua_State *L;			/* its main Lua thread */
} st;

/* In the child of a fork: the watcher thread stayed with the parent, so
 * every guard made before the fork is dead here (stop returns at once),
 * and a new guard may start. Only async-signal-safe calls. */
static void forked_child(void)
{
	st.gen++;
	if (__atomic_load_n(&st.busy, __ATOMIC_ACQUIRE)) {
		stallhook_forked();
		stallwatch_forked();
		__atomic_store_n(&st.busy, 0, __ATOMIC_RELEASE);
	}
	mainloop_forked();
}

static void register_fork_handler(void)
{
	pthread_atfork(NULL, NULL, forked_child);
}

/* --- Starting and stopping -------------------------------------------- */

/* Under Lua 5.2+ the main thread is in the registry; 5.1 and LuaJIT have no
 * way to find it, so stallguard must be called from it there. */
static lua_State *main_lua_thread(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
	lua_State *main;

	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
	main = lua_tothread(L, -1);
	lua_pop(L, 1);
	return main;
#else
	int is_main = lua_pushthread(L);

	lua_pop(L, 1);
	if (!is_main)
		luaL_error(L, "stallguard: call it from the main Lua thread, "
			      "not a coroutine");
	return L;
#endif
}

static int guard_start(struct stallguard *g, lua_State *main, double limit)
{
	struct stallwatch_config c;
	int err;

	c.limit_ns = (long long)(limit * 1e9);
	if (c.limit_ns < 1)
		c.limit_ns = 1;
	/* LuaJIT's profiler first: the signal's handler uses it. */
	g->jit = stalljit_start(main, &g->jit_why);
	err = stallhook_start(main, &g->stalls, c.limit_ns, &g->signo);
	if (err == 0) {
		st.L = main;
		g->gen = st.gen;
		g->limit = limit;
		c.signo = g->signo;
		c.main_thread = pthread_self();
		c.main_tid = (pid_t)syscall(SYS_gettid);
		err = stallwatch_start(&c);
		if (err == 0) {
			g->running = 1;
			return 0;
		}
		stallhook_stop();
	}
	if (g->jit > 0)
		stalljit_stop(main);
	return err;
}

static void guard_stop(struct stallguard *g)
{
	if (!g->running)
		return;
	g->running = 0;
	if (g->gen != st.gen)
		return;		/* made before a fork: nothing of it is here */
	mainloop_unfollow();
	stallwatch_stop();
	g->longest_ns = stallwatch_longest();
	stallhook_stop();	/* no signal can come now */
	if (g->jit > 0)
		stalljit_stop(st.L);
	__atomic_store_n(&st.busy, 0, __ATOMIC_RELEASE);
}

static int alive(const struct stallguard *g)
{
	return g->running && g->gen == st.gen;
}

static struct stallguard *check_stallguard(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, STALLGUARD_TNAME);
}

/***
 * Start the stall breaker: a watcher thread that interrupts the main Lua
 * thread when its loop has been busy `limit` seconds without a tick.
 * The interrupted code gets the error "main loop stalled for N s:
 * interrupted" with a traceback, raised where it unwinds through Lua alone
 * to a `pcall` or out of Lua (not inside Lua that a C function called and
 * whose errors it might swallow, such as a host's property getter), and
 * again in each caller until Lua is back in the host's loop if a C
 * function swallowed it. One guard per process.
 *
 * Under LuaJIT it starts LuaJIT's profiler (in its line mode, with a
 * sampling interval it never reaches), so that compiled loops can be sent
 * back to the interpreter; `stallguard:jit()` tells whether that worked.
 * @function stallguard
 * @tparam number limit seconds of busy loop that count as a stall
 *   (more than 0, at most 86400)
 * @treturn[1] clua.stallguard a running guard
 * @return[2] nil, message, errno (EBUSY while another guard runs; EAGAIN
 *   when every real-time signal is taken)
 * @usage
 * local guard = assert(clua.stallguard(10))   -- 10 s of busy loop
 * @see pthread_kill(3)
 */
static int l_stallguard(lua_State *L)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	double limit = clua_checknumber(L, 1, 0, 1, LIMIT_MAX);
	lua_State *main;
	struct stallguard *g;
	int err;

	clua_checknargs(L, 1);
	main = main_lua_thread(L);
	pthread_once(&once, register_fork_handler);
	/* The metatable first: a guard collected half-built stops nothing. */
	g = clua_newobject(L, sizeof *g, STALLGUARD_TNAME);
	if (__atomic_exchange_n(&st.busy, 1, __ATOMIC_ACQ_REL))
		return clua_pusherror(L, "stallguard: a guard is already running",
				      EBUSY);
	err = guard_start(g, main, limit);
	if (err != 0) {
		__atomic_store_n(&st.busy, 0, __ATOMIC_RELEASE);
		return clua_pusherror(L, err == EAGAIN
			? "stallguard: no unused real-time signal"
			: "stallguard", err);
	}
	return 1;
}

/***
 * A running (or stopped) stall guard, from `stallguard`.
 * @type stallguard
 */

/***
 * Mark the main loop alive: the busy stretch ends, a new one begins. A
 * few atomic stores and a read of the monotonic clock (vDSO, no system
 * call); when the loop was idle (`glib`, `idle`), one timerfd_settime.
 * @function stallguard:tick
 * @treturn boolean true while the guard runs, false once stopped (a tick
 *   on a stopped guard does nothing)
 * @usage
 * -- a program with a loop of its own: once per turn of it
 * guard:tick()
 */
static int l_tick(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);

	clua_checknargs(L, 1);
	if (alive(g))
		stallwatch_tick();
	lua_pushboolean(L, alive(g));
	return 1;
}

/***
 * Follow GLib's main loop instead of needing ticks: every turn of the
 * default main context's loop counts as a tick, and while the loop sleeps
 * in poll the watcher sleeps too, without a timeout (an idle process is
 * never woken, and a short turn of the loop does not wake the watcher).
 * Call it from inside the running loop (a host may install its own poll
 * function just before the loop starts: Awesome does).
 *
 * GLib is the copy already loaded in the process (by the host, or by
 * lgi); clua does not link it. When the loop polls through a host's own
 * poll function rather than GLib's, the host must also call `idle` when
 * its Lua work is done and it is about to sleep.
 * @function stallguard:glib
 * @treturn[1] true
 * @return[2] nil, message, errno (ENOENT when GLib is not loaded; EINVAL
 *   on a stopped guard)
 * @usage
 * -- lgi: every turn of GLib's main loop is a tick from now on
 * local GLib = require("lgi").GLib
 * assert(guard:glib())
 * GLib.MainLoop():run()
 */
static int l_glib(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);
	const char *why = NULL;
	int err;

	clua_checknargs(L, 1);
	if (!alive(g))
		return clua_pusherror(L, "stallguard:glib: the guard is stopped",
				      EINVAL);
	err = mainloop_follow(stallhook_loop_sleeps, stallhook_loop_woke, &why);
	if (err != 0)
		return clua_pusherror(L, why, err);
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * The loop's Lua work is done and it is about to sleep: the busy stretch
 * ends, and the watcher sleeps until Lua runs again after the host's poll
 * (the next Lua call or return, seen by a hook) or the poll function
 * returns. Meant for a host with its own GLib poll function that runs Lua
 * before it polls (`glib`): Awesome calls it from its "refresh" signal,
 * last. While another hook is set (a debugger, a profiler) Lua running
 * again cannot be seen, and the idle period lasts until the poll function
 * returns.
 * @function stallguard:idle
 * @treturn boolean true while the guard runs, false once stopped
 * @usage
 * -- Awesome: connected last to its "refresh" signal
 * awesome.connect_signal("refresh", function() guard:idle() end)
 */
static int l_idle(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);

	clua_checknargs(L, 1);
	if (alive(g)) {
		stallwatch_idle();
		stallhook_idle();
	}
	lua_pushboolean(L, alive(g));
	return 1;
}

/***
 * How many stalls this guard interrupted (also after stop): one each,
 * however many frames the error had to be raised in on its way out.
 * @function stallguard:stalls
 * @treturn integer
 * @usage
 * print(guard:stalls() .. " stalls interrupted")
 */
static int l_stalls(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);

	clua_checknargs(L, 1);
	lua_pushinteger(L, g->stalls);
	return 1;
}

/***
 * The longest busy stretch of the main loop so far, in seconds (also after
 * stop): from the moment the loop woke (or ticked) to the moment it was
 * idle again (or ticked again), to the precision of the monotonic clock.
 * Time the process spent stopped (SIGSTOP, a debugger) is left out. A
 * stretch still running counts with what the watcher has seen of it, to a
 * quarter of the limit.
 * @function stallguard:longest
 * @treturn number seconds
 * @usage
 * print(("the longest turn of the loop took %.3f s"):format(guard:longest()))
 */
static int l_longest(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);
	long long ns = alive(g) ? stallwatch_longest() : g->longest_ns;

	clua_checknargs(L, 1);
	lua_pushnumber(L, (lua_Number)ns / 1e9);
	return 1;
}

/***
 * Whether a loop LuaJIT compiled can be interrupted.
 * @function stallguard:jit
 * @treturn[1] nil under PUC Lua (there is no compiled code)
 * @treturn[2] true under LuaJIT, when its profiler hook sends compiled
 *   code back to the interpreter
 * @return[3] false, why: under a LuaJIT where that is not possible
 *   (LuaJIT 2.0 has no profiler); only interpreted code is interrupted then
 * @usage
 * local ok, why = guard:jit()
 * if ok == false then print("compiled loops run on: " .. why) end
 */
static int l_jit(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);

	clua_checknargs(L, 1);
	if (g->jit == 0) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushboolean(L, g->jit > 0);
	if (g->jit > 0)
		return 1;
	lua_pushstring(L, g->jit_why);
	return 2;
}

/***
 * The message (with its traceback) of the last interrupt of any guard in
 * this Lua state, for reporting it where the error itself is not seen.
 * @function stallguard:last
 * @treturn[1] string
 * @return[2] nil when Lua was never interrupted
 * @usage
 * local msg = guard:last()
 * if msg then io.stderr:write(msg, "\n") end
 */
static int l_last(lua_State *L)
{
	check_stallguard(L, 1);
	clua_checknargs(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, STALL_LAST_KEY);
	return 1;
}

/***
 * Stop the watcher thread, give its signal back, put GLib's poll function
 * back (after `glib`) and stop LuaJIT's profiler. Idempotent, and returns
 * at once in the child of a fork (the thread stayed with the parent).
 * `__gc` and (Lua 5.4) `__close` do the same.
 * @function stallguard:stop
 * @treturn true
 * @usage
 * guard:stop()
 */
static int l_stop(lua_State *L)
{
	struct stallguard *g = check_stallguard(L, 1);

	clua_checknargs(L, 1);
	guard_stop(g);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc and __close: like stop, but without the argument count check
 * (__close gets the error object too). */
static int m_close(lua_State *L)
{
	guard_stop(check_stallguard(L, 1));
	return 0;
}

static int m_tostring(lua_State *L)
{
	static const char *const following[] = {"", ", GLib", ", GLib host poll"};
	struct stallguard *g = check_stallguard(L, 1);

	if (alive(g))
		lua_pushfstring(L, STALLGUARD_TNAME " (limit %f s, signal %d%s)",
				(lua_Number)g->limit, g->signo,
				following[mainloop_following()]);
	else
		lua_pushliteral(L, STALLGUARD_TNAME " (stopped)");
	return 1;
}

static const luaL_Reg stallguard_methods[] = {
	{"tick", l_tick},
	{"glib", l_glib},
	{"idle", l_idle},
	{"stalls", l_stalls},
	{"longest", l_longest},
	{"jit", l_jit},
	{"last", l_last},
	{"stop", l_stop},
	{NULL, NULL}
};

static const luaL_Reg stallguard_meta[] = {
	{"__gc", m_close},
	{"__close", m_close},
	{"__tostring", m_tostring},
	{NULL, NULL}
};

static const luaL_Reg stall_funcs[] = {
	{"stallguard", l_stallguard},
	{NULL, NULL}
};

void clua_open_stall(lua_State *L)
{
	clua_newclass(L, STALLGUARD_TNAME, stallguard_methods,
		       stallguard_meta);
	clua_register(L, stall_funcs);
}
