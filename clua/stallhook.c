/*
 * stallhook.c - the stall breaker on the main thread: the signal handler
 * and the hook. The watcher thread (stallwatch.c) sends the signal; this
 * file turns it into an error in the Lua code that stalled, or into
 * nothing when no Lua stalled.
 *
 * Who touches what, so that it is thread-safe by construction:
 *  - the signal handler, on the main thread, only sets a hook on the main
 *    Lua thread (lua_sethook is meant to be safe there: lua.c does it), and
 *    under LuaJIT makes compiled code return to the interpreter;
 *  - the hook, at the next Lua event, puts back whatever hook was there
 *    before and raises, if the stall is still going and Lua was running;
 *  - the main thread's own hook changes (idle(), the hook itself) leave
 *    the handler a note instead of racing with it (hooks_begin/_end).
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

#include "stall.h"

#define INTERRUPT_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)
/* Lua runs again: a call, or a return (Lua that called a C function which
 * ran the host's loop, as Awesome's selection() does). */
#define WAKE_MASK (LUA_MASKCALL | LUA_MASKRET)

/* Main thread only, but for the fields marked (atomic). */
static struct {
	lua_State *L;			/* (atomic) main Lua thread, for the handler */
	pthread_t main_thread;
	lua_Integer *stalls;		/* the guard's count of interrupts */
	int signo;
	struct sigaction old_action;	/* what signo was before we took it */
	/* The hook that was set before ours, put back when ours fires. */
	lua_Hook saved_hook;
	int saved_mask, saved_count;
} h;

/* Between the handler and the main thread's own hook changes. */
static volatile sig_atomic_t interrupt_pending;	/* a signal came */
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
	lua_setfield(L, LUA_REGISTRYINDEX, STALL_LAST_KEY);
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
	if (raise && h.stalls != NULL) {
		(*h.stalls)++;
		raise_stall(L, stalled);
	}
}

/* --- Called by mainloop.c around the loop's poll ---------------------- */

static int on_main_thread(void)
{
	return main_state() != NULL
		&& pthread_equal(pthread_self(), h.main_thread);
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
	sigaddset(&one, h.signo);
	pthread_sigmask(SIG_BLOCK, &one, &old);
	while (sigtimedwait(&one, NULL, &zero) == h.signo)
		;
	__atomic_store_n(&h.L, NULL, __ATOMIC_RELEASE);
	sigaction(h.signo, &h.old_action, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* --- For stall.c ------------------------------------------------------- */

int stallhook_start(lua_State *main, lua_Integer *stalls)
{
	int signo = claim_signal(&h.old_action);

	if (signo < 0)
		return -signo;
	h.signo = signo;
	h.main_thread = pthread_self();
	h.stalls = stalls;
	interrupt_pending = deferred = hooks_changing = 0;
	__atomic_store_n(&h.L, main, __ATOMIC_RELEASE);
	return 0;
}

int stallhook_signal(void)
{
	return h.signo;
}

/* After the watcher is gone: no signal can come any more. */
void stallhook_stop(void)
{
	lua_State *L = main_state();

	release_signal();
	if (L != NULL)
		disarm(L);
	interrupt_pending = deferred = hooks_changing = 0;
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
	interrupt_pending = deferred = hooks_changing = 0;
	if (main_state() == NULL)
		return;
	__atomic_store_n(&h.L, NULL, __ATOMIC_RELEASE);
	sigaction(h.signo, &h.old_action, NULL);
	h.stalls = NULL;
}
