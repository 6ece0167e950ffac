/*
 * stall.c - the stall breaker: interrupt a runaway Lua loop on the main
 * thread, the way lua.c stops a script on Ctrl-C, but from a watcher
 * thread (stallwatch.c) instead of a terminal. This file holds what runs
 * on the main thread: the Lua API, the signal handler and the hook.
 *
 * Who touches what, so that it is thread-safe by construction:
 *  - the main thread reports its loop's state to the watcher with atomic
 *    stores (stallwatch_tick / _idle / _wake);
 *  - the watcher only reads that state and, when a busy stretch reaches
 *    the limit, sends a real-time signal to the main thread; it never
 *    touches the Lua state;
 *  - the signal handler, on the main thread, only sets a hook on the main
 *    Lua thread (lua_sethook is meant to be safe there: lua.c does it), and
 *    under LuaJIT makes compiled code return to the interpreter;
 *  - the hook, at the next Lua event, puts back whatever hook was there
 *    before and raises, if the stall is still going and Lua was running.
 *
 * "Lua was running" is what keeps the error out of code that did not
 * stall. The hook fires at the first Lua event after the signal: an
 * instruction (a Lua loop), the return of a C function into Lua (a Lua
 * function blocked in io.popen():read()), or a call. A call from C into
 * Lua means C was running before it: the host's own code, or a process
 * that was stopped. Then it raises nothing.
 *
 * The same hook, set to fire on calls and returns, also tells the watcher
 * when Lua runs again after the host said its loop was idle (idle()): in
 * Awesome, X events are handled right after its poll, before the poll
 * function returns to GLib, and that is the first sign of life we get.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clua.h"
#include "stall.h"
#include "util.h"

/***
 * Stall breaker: interrupt a runaway Lua loop on the main thread.
 * @submodule clua
 */

#define GUARD_TNAME "clua.stallguard"
#define LAST_KEY "clua.stallguard.last"
#define INTERRUPT_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)
/* Lua runs again: a call, or a return (Lua that called a C function which
 * ran the host's loop, as Awesome's selection() does). */
#define WAKE_MASK (LUA_MASKCALL | LUA_MASKRET)
#define LIMIT_MAX 86400.0		/* a day; also keeps ns within 64 bits */

/* The userdata. Only the main thread reads or writes it. */
struct guard {
	int running;
	unsigned gen;		/* st.gen when started: a fork makes it stale */
	int signo;
	double limit;
	lua_Integer stalls;
	long long longest_ns;	/* kept at stop */
	int jit;		/* stalljit_start's answer */
	const char *jit_why;
};

/*
 * One guard per process, so its state is static. Fields marked (atomic)
 * are only read and written with __atomic builtins; the rest belong to the
 * main thread (and its signal handler, through the flags below).
 */
static struct {
	int busy;			/* (atomic) a guard owns this state */
	unsigned gen;			/* bumped in a forked child */
	lua_State *L;			/* (atomic) main Lua thread, for the handler */
	struct guard *owner;
	int signo;
	struct sigaction old_action;	/* what signo was before we took it */
	pthread_t main_thread;
	/* The hook that was set before ours, put back when ours fires. */
	lua_Hook saved_hook;
	int saved_mask, saved_count;
} st;

/* Between the handler and the main thread's own hook changes. */
static volatile sig_atomic_t interrupt_pending;	/* a signal came */
static volatile sig_atomic_t hooks_changing;	/* main thread in arm/disarm */
static volatile sig_atomic_t deferred;		/* a signal came meanwhile */

static void on_hook(lua_State *L, lua_Debug *ar);

static lua_State *main_state(void)
{
	return __atomic_load_n(&st.L, __ATOMIC_ACQUIRE);
}

/* --- Setting and removing the hook ------------------------------------ */

/* Sets our hook, keeping the one it replaces (a debugger's, a profiler's)
 * to put back later. */
static void arm(lua_State *L, int mask, int count)
{
	if (lua_gethook(L) != on_hook) {
		st.saved_hook = lua_gethook(L);
		st.saved_mask = lua_gethookmask(L);
		st.saved_count = lua_gethookcount(L);
	}
	lua_sethook(L, on_hook, mask, count);
}

static void disarm(lua_State *L)
{
	if (lua_gethook(L) == on_hook)
		lua_sethook(L, st.saved_hook, st.saved_mask, st.saved_count);
}

/* The main thread changes hooks between these two. A signal arriving in
 * between only leaves a note (the handler must not change a hook half
 * changed); the note is acted on here, once the hook is whole again. */
static void hooks_begin(void)
{
	hooks_changing = 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static void hooks_end(lua_State *L)
{
	for (;;) {
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		hooks_changing = 0;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		if (!deferred)
			return;
		hooks_changing = 1;
		deferred = 0;
		arm(L, INTERRUPT_MASK, 1);
		stalljit_kick();
	}
}

/* On the main thread, at any point: only arm the hook. */
static void on_stall_signal(int signo)
{
	int saved_errno = errno;
	lua_State *L = main_state();

	(void)signo;
	if (L != NULL) {
		interrupt_pending = 1;
		if (hooks_changing) {
			deferred = 1;
		} else {
			arm(L, INTERRUPT_MASK, 1);
			stalljit_kick();
		}
	}
	errno = saved_errno;
}

/* --- Raising ----------------------------------------------------------- */

/* Pushes "chunk:line: " of the innermost Lua function running: when the
 * hook fires on the return from a C function (a blocking read), level 0 is
 * that C function, which has no line. */
static void push_where(lua_State *L)
{
	lua_Debug ar;
	int level;

	for (level = 0; level < 8 && lua_getstack(L, level, &ar); level++) {
		if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
			lua_pushfstring(L, "%s:%d: ", ar.short_src,
					ar.currentline);
			return;
		}
	}
	lua_pushliteral(L, "");
}

/* Keeps a copy of the message on top of the stack for stallguard:last():
 * the error itself lands in whatever pcall is nearest, which may be code
 * the guard's owner never sees (awful.remote, a gears.timer). */
static int remember_and_raise(lua_State *L)
{
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, LAST_KEY);
	return lua_error(L);
}

/* Raises "<where>: main loop stalled for N s: interrupted" plus a
 * traceback of the interrupted code. */
static int raise_stall(lua_State *L, long long stalled_ns)
{
	char msg[80];

	snprintf(msg, sizeof msg, "main loop stalled for %.1f s: interrupted",
		 (double)stalled_ns / 1e9);
	push_where(L);
	lua_pushstring(L, msg);
	lua_concat(L, 2);
#ifdef CLUA_COMPAT_AUXLIB
	/* PUC Lua 5.1 has no luaL_traceback: debug.traceback does the same,
	 * found through package.loaded so that no global is read. */
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_getfield(L, -1, "debug");
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "traceback");
		if (lua_isfunction(L, -1)) {
			lua_pushvalue(L, -4);
			lua_pushinteger(L, 1);
			lua_call(L, 2, 1);
			return remember_and_raise(L);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
#else
	luaL_traceback(L, L, lua_tostring(L, -1), 0);
#endif
	return remember_and_raise(L);
}

/* --- The hook ---------------------------------------------------------- */

static int lua_at_level(lua_State *L, int level)
{
	lua_Debug d;

	return lua_getstack(L, level, &d) && lua_getinfo(L, "S", &d)
		&& strcmp(d.what, "C") != 0;
}

/* Whether Lua code was running when the stall ended (see the top). */
static int lua_was_running(lua_State *L, const lua_Debug *ar)
{
	switch (ar->event) {
	case LUA_HOOKCALL:
#ifdef LUA_HOOKTAILCALL
	case LUA_HOOKTAILCALL:
#endif
		/* Called by Lua: Lua ran. Called by C: C ran. */
		return lua_at_level(L, 1);
	case LUA_HOOKRET:
#ifdef LUA_HOOKTAILRET
	case LUA_HOOKTAILRET:
#endif
		/* A Lua function, or a C function returning into Lua. */
		return lua_at_level(L, 0) || lua_at_level(L, 1);
	default:
		return 1;	/* an instruction: Lua itself */
	}
}

/* At the next Lua event after idle() (a call or a return), or after the
 * signal. */
static void on_hook(lua_State *L, lua_Debug *ar)
{
	lua_State *main = main_state();
	long long stalled = 0;
	int raise = 0;

	hooks_begin();
	disarm(L);
	if (main == NULL) {
		/* No guard any more (stopped, or made before a fork). */
		interrupt_pending = 0;
	} else if (stallwatch_is_idle()) {
		/* Whatever stalled before ended when the loop went idle. */
		interrupt_pending = 0;
		if (mainloop_before_poll())
			arm(main, WAKE_MASK, 0);	/* still before its sleep */
		else
			stallwatch_wake();
	} else if (interrupt_pending) {
		interrupt_pending = 0;
		if (stallwatch_still_stalled(&stalled)) {
			stallwatch_handled();
			raise = lua_was_running(L, ar);
		}
	}
	hooks_end(main != NULL ? main : L);
	if (raise && st.owner != NULL) {
		st.owner->stalls++;
		raise_stall(L, stalled);
	}
}

/* --- Called by mainloop.c around the loop's poll ---------------------- */

static int on_main_thread(void)
{
	return main_state() != NULL
		&& pthread_equal(pthread_self(), st.main_thread);
}

void stall_loop_sleeps(void)
{
	if (on_main_thread())
		stallwatch_idle();
}

/* The host's poll returned. If no Lua ran since idle(), our wake hook is
 * still set: take it off, the loop is busy anyway from now. */
void stall_loop_woke(void)
{
	lua_State *L = main_state();

	if (!on_main_thread() || !stallwatch_is_idle())
		return;
	stallwatch_wake();
	hooks_begin();
	if (lua_gethook(L) == on_hook && lua_gethookmask(L) == WAKE_MASK)
		disarm(L);
	hooks_end(L);
}

/* --- The signal -------------------------------------------------------- */

/* Takes the first real-time signal nobody uses: default disposition and
 * not blocked on this thread. Returns it, or -errno. */
static int claim_signal(struct sigaction *old)
{
	struct sigaction sa;
	sigset_t blocked;
	int signo;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stall_signal;
	/* A read() the main thread is blocked in (io.popen) goes on after the
	 * handler instead of failing with EINTR; the watcher sends nothing
	 * while the thread waits in a call that would fail anyway. */
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (pthread_sigmask(SIG_BLOCK, NULL, &blocked) != 0)
		sigemptyset(&blocked);
	for (signo = SIGRTMIN; signo <= SIGRTMAX; signo++) {
		if (sigismember(&blocked, signo) == 1)
			continue;
		if (sigaction(signo, NULL, old) != 0)
			continue;
		if ((old->sa_flags & SA_SIGINFO) || old->sa_handler != SIG_DFL)
			continue;
		if (sigaction(signo, &sa, old) == 0)
			return signo;
	}
	return -EAGAIN;
}

/* Gives the signal back. A signal the watcher sent just before it ended
 * may still be pending: take it here, so it never meets SIG_DFL (which
 * would end the process). */
static void release_signal(void)
{
	struct timespec zero = {0, 0};
	sigset_t one, old;

	sigemptyset(&one);
	sigaddset(&one, st.signo);
	pthread_sigmask(SIG_BLOCK, &one, &old);
	while (sigtimedwait(&one, NULL, &zero) == st.signo)
		;
	__atomic_store_n(&st.L, NULL, __ATOMIC_RELEASE);
	sigaction(st.signo, &st.old_action, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* In the child of a fork: the watcher thread stayed with the parent, so
 * every guard made before the fork is dead here (stop returns at once),
 * and a new guard may start. Only async-signal-safe calls. */
static void forked_child(void)
{
	st.gen++;
	interrupt_pending = 0;
	deferred = 0;
	hooks_changing = 0;
	if (__atomic_load_n(&st.busy, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&st.L, NULL, __ATOMIC_RELEASE);
		sigaction(st.signo, &st.old_action, NULL);
		st.owner = NULL;
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

static int guard_start(struct guard *g, lua_State *main, double limit)
{
	struct stallwatch_config c;
	int signo, err;

	signo = claim_signal(&st.old_action);
	if (signo < 0)
		return -signo;
	st.signo = signo;
	st.main_thread = pthread_self();
	st.owner = g;
	g->gen = st.gen;
	g->signo = signo;
	g->limit = limit;
	/* Before the watcher exists: its signal's handler uses both. */
	g->jit = stalljit_start(main, &g->jit_why);
	__atomic_store_n(&st.L, main, __ATOMIC_RELEASE);
	c.limit_ns = (long long)(limit * 1e9);
	if (c.limit_ns < 1)
		c.limit_ns = 1;
	c.signo = signo;
	c.main_thread = st.main_thread;
	c.main_tid = (pid_t)syscall(SYS_gettid);
	err = stallwatch_start(&c);
	if (err != 0) {
		if (g->jit > 0)
			stalljit_stop(main);
		release_signal();
		st.owner = NULL;
		return err;
	}
	g->running = 1;
	return 0;
}

static void guard_stop(struct guard *g)
{
	lua_State *main = main_state();

	if (!g->running)
		return;
	g->running = 0;
	if (g->gen != st.gen)
		return;		/* made before a fork: nothing of it is here */
	mainloop_unfollow();
	stallwatch_stop();
	g->longest_ns = stallwatch_longest();
	if (g->jit > 0)
		stalljit_stop(main);
	release_signal();
	hooks_begin();
	disarm(main);
	interrupt_pending = 0;
	deferred = 0;
	hooks_changing = 0;
	st.owner = NULL;
	__atomic_store_n(&st.busy, 0, __ATOMIC_RELEASE);
}

static int alive(const struct guard *g)
{
	return g->running && g->gen == st.gen;
}

static struct guard *check_guard(lua_State *L)
{
	return luaL_checkudata(L, 1, GUARD_TNAME);
}

/***
 * Start the stall breaker: a watcher thread that interrupts the main Lua
 * thread when its loop has been busy `limit` seconds without a tick.
 * The interrupted code gets the error "main loop stalled for N s:
 * interrupted" with a traceback. One guard per process.
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
 * @see pthread_kill(3)
 */
static int l_stallguard(lua_State *L)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	double limit = clua_checknumber(L, 1, 0, 1, LIMIT_MAX);
	lua_State *main;
	struct guard *g;
	int err;

	clua_checknargs(L, 1);
	main = main_lua_thread(L);
	pthread_once(&once, register_fork_handler);
	g = lua_newuserdata(L, sizeof *g);
	memset(g, 0, sizeof *g);
	/* The metatable first: a guard collected half-built stops nothing. */
	luaL_setmetatable(L, GUARD_TNAME);
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
 */
static int l_tick(lua_State *L)
{
	struct guard *g = check_guard(L);

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
 */
static int l_glib(lua_State *L)
{
	struct guard *g = check_guard(L);
	const char *why = NULL;
	int err;

	clua_checknargs(L, 1);
	if (!alive(g))
		return clua_pusherror(L, "stallguard:glib: the guard is stopped",
				      EINVAL);
	err = mainloop_follow(&why);
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
 */
static int l_idle(lua_State *L)
{
	struct guard *g = check_guard(L);
	lua_State *main = main_state();

	clua_checknargs(L, 1);
	if (alive(g)) {
		stallwatch_idle();
		hooks_begin();
		if (lua_gethook(main) == NULL)
			arm(main, WAKE_MASK, 0);
		hooks_end(main);
	}
	lua_pushboolean(L, alive(g));
	return 1;
}

/***
 * How many times this guard interrupted Lua (also after stop).
 * @function stallguard:stalls
 * @treturn integer
 */
static int l_stalls(lua_State *L)
{
	struct guard *g = check_guard(L);

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
 */
static int l_longest(lua_State *L)
{
	struct guard *g = check_guard(L);
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
 */
static int l_jit(lua_State *L)
{
	struct guard *g = check_guard(L);

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
 */
static int l_last(lua_State *L)
{
	check_guard(L);
	clua_checknargs(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, LAST_KEY);
	return 1;
}

/***
 * Stop the watcher thread, give its signal back, put GLib's poll function
 * back (after `glib`) and stop LuaJIT's profiler. Idempotent, and returns
 * at once in the child of a fork (the thread stayed with the parent).
 * `__gc` and (Lua 5.4) `__close` do the same.
 * @function stallguard:stop
 * @treturn true
 */
static int l_stop(lua_State *L)
{
	struct guard *g = check_guard(L);

	clua_checknargs(L, 1);
	guard_stop(g);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc and __close: like stop, but without the argument count check
 * (__close gets the error object too). */
static int m_release(lua_State *L)
{
	guard_stop(check_guard(L));
	return 0;
}

static int m_tostring(lua_State *L)
{
	struct guard *g = check_guard(L);

	if (alive(g))
		lua_pushfstring(L, GUARD_TNAME " (limit %f s, signal %d%s)",
				(lua_Number)g->limit, g->signo,
				!mainloop_following() ? ""
				: mainloop_host_poll() ? ", GLib host poll"
				: ", GLib");
	else
		lua_pushliteral(L, GUARD_TNAME " (stopped)");
	return 1;
}

static const luaL_Reg guard_methods[] = {
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

static const luaL_Reg guard_meta[] = {
	{"__gc", m_release},
#if LUA_VERSION_NUM >= 504
	{"__close", m_release},
#endif
	{"__tostring", m_tostring},
	{NULL, NULL}
};

static const luaL_Reg stall_funcs[] = {
	{"stallguard", l_stallguard},
	{NULL, NULL}
};

void clua_open_stall(lua_State *L)
{
	clua_newclass(L, GUARD_TNAME, guard_methods, guard_meta);
	clua_register(L, stall_funcs);
}
