/*
 * stallhook.c - the stall breaker on the main thread: the signal handler
 * and the hook, the SIGNALLED and BREAKING rows of stall.h's table.
 *
 * Only the main thread touches the Lua state: the handler only sets the
 * hook (lua_sethook is safe there: lua.c does it) and under LuaJIT sends
 * compiled code back to the interpreter; the hook decides. The main
 * thread's own hook changes (idle(), the hook itself) leave the handler a
 * note instead of racing with it (hooks_begin/_end).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "stall.h"

#define STALL_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)
#define WAKE_MASK (LUA_MASKCALL | LUA_MASKRET)
#define PATIENCE_MIN_NS 100000000LL	/* 0.1 s */

/* Registry key of the set of functions that catch errors for Lua code
 * itself: the base library's pcall and xpcall. */
#define CATCHERS_KEY "clua.stallguard.catchers"

/* Main thread only, but for the fields marked (atomic). */
static struct {
	lua_State *L;			/* (atomic) main Lua thread, for the handler */
	pthread_t main_thread;
	lua_Integer *stalls;		/* the guard's count of stalls */
	int signo;
	struct sigaction old_action;	/* what signo was before we took it */
	/* The hook that was set before ours, put back when ours goes. */
	lua_Hook saved_hook;
	int saved_mask, saved_count;
	/* BREAKING (stall.h); 2 once this stall has raised (and counted). */
	int breaking;
	long long waited_since;	/* BREAKING since, or last raised */
	long long patience_ns;	/* how long it waits for a clean frame */
} h;

/* Between the handler and the main thread's own hook changes. */
static volatile sig_atomic_t signalled;		/* a signal came: SIGNALLED */
static volatile sig_atomic_t hooks_changing;	/* main thread in arm/disarm */
static volatile sig_atomic_t deferred;		/* a signal came meanwhile */

static void on_hook(lua_State *L, lua_Debug *ar);

static lua_State *main_state(void)
{
	return __atomic_load_n(&h.L, __ATOMIC_ACQUIRE);
}

/* --- Setting and removing the hook ------------------------------------ */

/* Sets our hook, keeping the one it replaces (a debugger's, a profiler's)
 * to put back later. */
static void arm(lua_State *L, int mask, int count)
{
	if (lua_gethook(L) != on_hook) {
		h.saved_hook = lua_gethook(L);
		h.saved_mask = lua_gethookmask(L);
		h.saved_count = lua_gethookcount(L);
	}
	lua_sethook(L, on_hook, mask, count);
}

static void disarm(lua_State *L)
{
	if (lua_gethook(L) == on_hook)
		lua_sethook(L, h.saved_hook, h.saved_mask, h.saved_count);
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
		arm(L, STALL_MASK, 1);
		stalljit_kick();
	}
}

/* On the main thread, at any point: -> SIGNALLED. */
static void on_stall_signal(int signo)
{
	int saved_errno = errno;
	lua_State *L = main_state();

	(void)signo;
	if (L != NULL) {
		signalled = 1;
		if (hooks_changing) {
			deferred = 1;
		} else {
			arm(L, STALL_MASK, 1);
			stalljit_kick();
		}
	}
	errno = saved_errno;
}

/* --- Where to raise ---------------------------------------------------- */

/* Whether Lua had been running when the stall was signalled: an
 * instruction, or a call or return with a Lua function at or below it (a
 * Lua function called a C function that stalled, or that C function calls
 * back into Lua). A call from C with no Lua below is the host's own C code
 * calling in: the host stalled, not Lua. */
static int lua_was_running(lua_State *L, const lua_Debug *ar)
{
	lua_Debug d;
	int level = ar->event == LUA_HOOKRET ? 0 : 1;

	if (ar->event == LUA_HOOKCOUNT || ar->event == LUA_HOOKLINE)
		return 1;
	for (; lua_getstack(L, level, &d); level++)
		if (lua_getinfo(L, "S", &d) && strcmp(d.what, "C") != 0)
			return 1;
	return 0;
}

static int frame_is_c(lua_State *L, int level)
{
	lua_Debug d;

	return lua_getstack(L, level, &d) && lua_getinfo(L, "S", &d)
		&& strcmp(d.what, "C") == 0;
}

/* Whether the function on top of the stack is pcall or xpcall (pops it). */
static int is_catcher(lua_State *L)
{
	int yes;

	lua_getfield(L, LUA_REGISTRYINDEX, CATCHERS_KEY);
	lua_insert(L, -2);
	lua_rawget(L, -2);
	yes = lua_toboolean(L, -1);
	lua_pop(L, 2);
	return yes;
}

/* Whether an error raised now unwinds through Lua frames alone to Lua's
 * own pcall or xpcall, or to the bottom of the stack (the host's loop, or
 * coroutine.resume). A C function on the way may catch it and go on (the
 * host's lua_pcall: Awesome logs the error and returns to the Lua that
 * called it), so there the hook waits for a caller. A C function at level
 * 0 is the one being called or returning: the error starts above it. */
static int unwinds_cleanly(lua_State *L)
{
	lua_Debug d;
	int level;

	for (level = 1; lua_getstack(L, level, &d); level++) {
		if (!lua_getinfo(L, "Sf", &d))
			return 0;
		if (strcmp(d.what, "C") == 0)
			return is_catcher(L);
		lua_pop(L, 1);
	}
	return 1;
}

/* --- Raising ----------------------------------------------------------- */

/* Raises "<where>: main loop stalled for N s: interrupted" plus a
 * traceback of the interrupted code. The first raise of a stall counts it
 * and keeps a copy for stallguard:last(): the error itself lands in
 * whatever pcall is nearest, which may be code the guard's owner never
 * sees (awful.remote, a gears.timer). */
static int raise_stall(lua_State *L, long long stalled_ns, int first)
{
	char msg[80];

	snprintf(msg, sizeof msg, "main loop stalled for %.1f s: interrupted",
		 (double)stalled_ns / 1e9);
	/* "chunk:line: " of the Lua function running: at the return from a C
	 * function (a blocking read), level 0 is that C function. */
	luaL_where(L, frame_is_c(L, 0) ? 1 : 0);
	lua_pushstring(L, msg);
	lua_concat(L, 2);
	luaL_traceback(L, L, lua_tostring(L, -1), 0);
	lua_remove(L, -2);
	if (first) {
		if (h.stalls != NULL)
			(*h.stalls)++;
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, STALL_LAST_KEY);
	}
	return lua_error(L);
}

/* --- The hook: the table of stall.h ------------------------------------ */

/* Takes the hook off L and leaves BREAKING; when the loop went idle, keeps
 * watching for Lua to run again (WAKE) or marks the loop busy. */
static void stand_down(lua_State *L, lua_State *main)
{
	disarm(L);
	h.breaking = 0;
	if (main == NULL || !stallwatch_is_idle())
		return;
	if (mainloop_before_poll())
		arm(main, WAKE_MASK, 0);	/* still before its sleep */
	else
		stallwatch_wake();
}

/* One Lua event with our hook set: the rows SIGNALLED and BREAKING of the
 * table in stall.h. */
static void on_hook(lua_State *L, lua_Debug *ar)
{
	lua_State *main = main_state();
	long long stalled = 0;
	int again, clean, raise = 0, first = 0;

	hooks_begin();
	again = signalled;
	signalled = 0;
	if (main == NULL || !(again || h.breaking)
	    || !stallwatch_still_stalled(&stalled)) {
		stand_down(L, main);	/* no stall (any more) */
	} else if (!lua_was_running(L, ar)) {
		/* The host calls in afresh: it stalled in its own C code, or
		 * the stalled Lua is gone (its error went out to the host). */
		stallwatch_handled();
		stand_down(L, main);
	} else {
		if (!h.breaking) {	/* SIGNALLED: Lua stalled */
			stallwatch_handled();
			h.breaking = 1;
			h.waited_since = stall_now();
			again = 0;
		}
		clean = unwinds_cleanly(L);
		if (!clean && !again
		    && stall_now() - h.waited_since >= h.patience_ns)
			again = 1;	/* waited long enough for a caller */
		if (clean || again) {	/* BREAKING: raise here */
			raise = 1;
			first = h.breaking == 1;
			h.breaking = 2;
			h.waited_since = stall_now();
		}
		if (clean)
			stand_down(L, main);
	}
	hooks_end(main != NULL ? main : L);
	if (raise)
		raise_stall(L, stalled, first);
}

/* --- Called around the loop's poll (mainloop_follow) ------------------- */

static int on_main_thread(void)
{
	return main_state() != NULL
		&& pthread_equal(pthread_self(), h.main_thread);
}

void stallhook_loop_sleeps(void)
{
	if (on_main_thread())
		stallwatch_idle();
}

/* The host's poll returned. If no Lua ran since idle(), our wake hook is
 * still set: take it off, the loop is busy anyway from now. */
void stallhook_loop_woke(void)
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
	sigaddset(&one, h.signo);
	pthread_sigmask(SIG_BLOCK, &one, &old);
	while (sigtimedwait(&one, NULL, &zero) == h.signo)
		;
	__atomic_store_n(&h.L, NULL, __ATOMIC_RELEASE);
	sigaction(h.signo, &h.old_action, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Adds _G[name] to the set of catchers; the stack: set, _LOADED, _G. */
static void add_catcher(lua_State *L, const char *name)
{
	lua_getfield(L, -1, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	lua_pushboolean(L, 1);
	lua_rawset(L, -5);
}

/* Records pcall and xpcall as the base library has them now, as the keys
 * of the CATCHERS_KEY table (a function set later in _G is not Lua's). */
static void remember_catchers(lua_State *L)
{
	lua_newtable(L);
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_getfield(L, -1, "_G");
	if (lua_istable(L, -1)) {
		add_catcher(L, "pcall");
		add_catcher(L, "xpcall");
	}
	lua_pop(L, 2);
	lua_setfield(L, LUA_REGISTRYINDEX, CATCHERS_KEY);
}

/* --- For stall.c ------------------------------------------------------- */

int stallhook_start(lua_State *main, lua_Integer *stalls, long long limit_ns,
		    int *signo)
{
	*signo = claim_signal(&h.old_action);
	if (*signo < 0)
		return -*signo;
	remember_catchers(main);
	h.signo = *signo;
	h.main_thread = pthread_self();
	h.stalls = stalls;
	h.breaking = 0;
	/* A quarter of the limit, but long enough for the error handlers a
	 * host runs on the way out (Awesome's notification) never to be cut. */
	h.patience_ns = limit_ns / 4 > PATIENCE_MIN_NS ? limit_ns / 4
						       : PATIENCE_MIN_NS;
	signalled = deferred = hooks_changing = 0;
	__atomic_store_n(&h.L, main, __ATOMIC_RELEASE);
	return 0;
}

/* After the watcher is gone: no signal can come any more. */
void stallhook_stop(void)
{
	lua_State *L = main_state();

	release_signal();
	if (L != NULL)
		disarm(L);
	signalled = deferred = hooks_changing = 0;
	h.breaking = 0;
	h.stalls = NULL;
}

void stallhook_idle(void)
{
	lua_State *L = main_state();

	hooks_begin();
	if (lua_gethook(L) == NULL)
		arm(L, WAKE_MASK, 0);
	hooks_end(L);
}

void stallhook_forked(void)
{
	signalled = deferred = hooks_changing = 0;
	h.breaking = 0;
	if (main_state() == NULL)
		return;
	__atomic_store_n(&h.L, NULL, __ATOMIC_RELEASE);
	sigaction(h.signo, &h.old_action, NULL);
	h.stalls = NULL;
}
