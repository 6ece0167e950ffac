/*
 * stall.c - the stall breaker: interrupt a runaway Lua loop on the main
 * thread, the way lua.c stops a script on Ctrl-C, but from a watchdog
 * thread instead of a terminal.
 *
 * Who touches what, so that it is thread-safe by construction:
 *  - the main thread ticks: one atomic store of the monotonic time;
 *  - the watcher thread only reads that time and, when it is older than the
 *    limit, sends a real-time signal to the main thread with pthread_kill;
 *    it never touches the Lua state, and has every signal blocked so it
 *    never runs the handler itself;
 *  - the signal handler, on the main thread, only sets a hook on the main
 *    Lua thread (lua_sethook is meant to be safe there: lua.c does it);
 *  - the hook, at the next Lua instruction, puts back whatever hook was
 *    there before, re-checks the stall by the clock, and raises.
 *
 * One long stall gives one interrupt per limit period, not a storm: after
 * signalling, the watcher waits another full limit before it signals again.
 * The ticks are never reset by an interrupt, so the message says how long
 * the main loop has really gone without a tick.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clua.h"
#include "util.h"

/***
 * Stall breaker: interrupt a runaway Lua loop on the main thread.
 * @submodule clua
 */

#define GUARD_TNAME "clua.stallguard"
#define HOOK_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)
#define LIMIT_MAX 86400.0		/* a day; also keeps ns within 64 bits */
#define NSEC_PER_SEC 1000000000LL
#define REFIRE_MIN_NS 10000000LL	/* never signal more than 100 times/s */

/* The userdata. Only the main thread reads or writes it. */
struct guard {
	int running;
	int signo;
	double limit;
	lua_Integer stalls;
};

/*
 * One guard per process, so its shared state is static. Fields marked
 * (atomic) are only read and written with __atomic builtins.
 */
static struct {
	int busy;			/* (atomic) a guard owns this state */
	lua_State *L;			/* (atomic) main Lua thread, for the handler */
	long long last_tick;		/* (atomic) monotonic ns of the last tick */
	struct guard *owner;		/* main thread only */
	long long limit_ns;		/* set before the watcher starts */
	int signo;
	struct sigaction old_action;	/* what signo was before we took it */
	pthread_t main_thread, watcher;
	pid_t pid;			/* process that started the watcher */
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* stop() wakes the watcher at once */
	int stopping;			/* under lock */
	/* Written by the handler, read by the hook: both on the main thread. */
	volatile lua_Hook saved_hook;
	volatile int saved_mask, saved_count;
} st = {.lock = PTHREAD_MUTEX_INITIALIZER};

static long long monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static void stall_hook(lua_State *L, lua_Debug *ar);

/* The watcher thread: sleeps until the last tick (or the last signal it
 * sent) is a limit old, then signals the main thread. Never touches Lua. */
static void *watch(void *unused)
{
	long long fired = 0;

	(void)unused;
	pthread_mutex_lock(&st.lock);
	while (!st.stopping) {
		long long since = __atomic_load_n(&st.last_tick, __ATOMIC_ACQUIRE);
		long long due, now = monotonic_ns();
		struct timespec ts;

		if (fired > since)
			since = fired;
		due = since + st.limit_ns;
		if (fired != 0 && due < fired + REFIRE_MIN_NS)
			due = fired + REFIRE_MIN_NS;
		if (now >= due) {
			pthread_kill(st.main_thread, st.signo);
			fired = now;
			continue;
		}
		ts.tv_sec = (time_t)(due / NSEC_PER_SEC);
		ts.tv_nsec = (long)(due % NSEC_PER_SEC);
		pthread_cond_timedwait(&st.wake, &st.lock, &ts);
	}
	pthread_mutex_unlock(&st.lock);
	return NULL;
}

/* On the main thread, at any point: only arm the hook (and remember the
 * hook it replaces, so a debugger's or profiler's hook comes back). */
static void on_stall_signal(int signo)
{
	int saved_errno = errno;
	lua_State *L = __atomic_load_n(&st.L, __ATOMIC_ACQUIRE);

	(void)signo;
	if (L != NULL && lua_gethook(L) != stall_hook) {
		st.saved_hook = lua_gethook(L);
		st.saved_mask = lua_gethookmask(L);
		st.saved_count = lua_gethookcount(L);
		lua_sethook(L, stall_hook, HOOK_MASK, 1);
	}
	errno = saved_errno;
}

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

#define LAST_KEY "clua.stallguard.last"

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

/* At the next Lua instruction of the main thread, after a signal. */
static void stall_hook(lua_State *L, lua_Debug *ar)
{
	long long stalled;

	(void)ar;
	lua_sethook(L, st.saved_hook, st.saved_mask, st.saved_count);
	if (st.owner == NULL)
		return;
	/* A tick may have come from a coroutine, or the signal from someone
	 * else: only a main loop that is still stalled is interrupted. */
	stalled = monotonic_ns() - __atomic_load_n(&st.last_tick, __ATOMIC_ACQUIRE);
	if (stalled < st.limit_ns)
		return;
	st.owner->stalls++;
	raise_stall(L, stalled);
}

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
	 * handler instead of failing with EINTR. */
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
	pthread_condattr_t attr;
	sigset_t all, old;
	int signo, err;

	signo = claim_signal(&st.old_action);
	if (signo < 0)
		return -signo;
	st.signo = signo;
	st.limit_ns = (long long)(limit * 1e9);
	if (st.limit_ns < 1)
		st.limit_ns = 1;
	st.stopping = 0;
	st.main_thread = pthread_self();
	st.pid = getpid();
	st.owner = g;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	err = pthread_cond_init(&st.wake, &attr);
	pthread_condattr_destroy(&attr);
	if (err != 0)
		goto fail;
	/* Starting counts as a tick. */
	__atomic_store_n(&st.last_tick, monotonic_ns(), __ATOMIC_RELEASE);
	__atomic_store_n(&st.L, main, __ATOMIC_RELEASE);
	/* The watcher inherits this mask: it never takes any signal. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&st.watcher, NULL, watch, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		pthread_cond_destroy(&st.wake);
		goto fail;
	}
	g->running = 1;
	g->signo = signo;
	g->limit = limit;
	return 0;
fail:
	release_signal();
	st.owner = NULL;
	return err;
}

static void guard_stop(struct guard *g)
{
	lua_State *main = __atomic_load_n(&st.L, __ATOMIC_ACQUIRE);

	if (!g->running)
		return;
	g->running = 0;
	/* In a forked child the watcher does not exist: nothing to join. */
	if (st.pid == getpid()) {
		pthread_mutex_lock(&st.lock);
		st.stopping = 1;
		pthread_cond_signal(&st.wake);
		pthread_mutex_unlock(&st.lock);
		pthread_join(st.watcher, NULL);
	}
	release_signal();
	pthread_cond_destroy(&st.wake);
	if (main != NULL && lua_gethook(main) == stall_hook)
		lua_sethook(main, st.saved_hook, st.saved_mask, st.saved_count);
	st.owner = NULL;
	__atomic_store_n(&st.busy, 0, __ATOMIC_RELEASE);
}

static struct guard *check_guard(lua_State *L)
{
	return luaL_checkudata(L, 1, GUARD_TNAME);
}

/***
 * Start the stall breaker: a watcher thread that interrupts the main Lua
 * thread when it has gone `limit` seconds without a tick.
 * The interrupted code gets the error "main loop stalled for N s:
 * interrupted" with a traceback. One guard per process.
 * @function stallguard
 * @tparam number limit seconds without a tick that count as a stall
 *   (more than 0, at most 86400)
 * @treturn[1] clua.stallguard a running guard
 * @return[2] nil, message, errno (EBUSY while another guard runs; EAGAIN
 *   when every real-time signal is taken)
 * @see pthread_kill(3)
 */
static int l_stallguard(lua_State *L)
{
	double limit = clua_checknumber(L, 1, 0, 1, LIMIT_MAX);
	lua_State *main;
	struct guard *g;
	int err;

	clua_checknargs(L, 1);
	main = main_lua_thread(L);
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
 * Mark the main loop alive. An atomic store of the monotonic time: no
 * system call beyond clock_gettime (vDSO).
 * @function stallguard:tick
 * @treturn boolean true while the guard runs, false once stopped (a tick
 *   on a stopped guard does nothing)
 */
static int l_tick(lua_State *L)
{
	struct guard *g = check_guard(L);

	clua_checknargs(L, 1);
	if (g->running)
		__atomic_store_n(&st.last_tick, monotonic_ns(), __ATOMIC_RELEASE);
	lua_pushboolean(L, g->running);
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
 * Stop the watcher thread and give its signal back. Idempotent; `__gc` and
 * (Lua 5.4) `__close` do the same.
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

	if (g->running)
		lua_pushfstring(L, GUARD_TNAME " (limit %f s, signal %d)",
				(lua_Number)g->limit, g->signo);
	else
		lua_pushliteral(L, GUARD_TNAME " (stopped)");
	return 1;
}

static const luaL_Reg guard_methods[] = {
	{"tick", l_tick},
	{"stalls", l_stalls},
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
