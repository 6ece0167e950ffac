/*
 * stalljit.c - under LuaJIT, let the stall breaker reach compiled code.
 *
 * LuaJIT runs no hooks inside compiled traces: the hook the signal handler
 * sets waits for the interpreter, which a compiled `while true do end`
 * never returns to. LuaJIT's own sampling profiler has the way back: while
 * it runs in its line mode ('l'), every trace is compiled with a check at
 * each new source line of a flag, HOOK_PROFILE, and leaves for the
 * interpreter when the flag is set; LuaJIT's SIGPROF handler sets it. So:
 *  - the guard starts the profiler in line mode with a sampling interval
 *    of about 24 days of CPU time (ITIMER_PROF counts CPU time only): its
 *    own timer practically never fires, and an idle process gets nothing;
 *  - the stall signal's handler, after setting the hook, calls LuaJIT's
 *    SIGPROF handler itself: the trace leaves at its next check, the
 *    interpreter calls our (empty) profile callback, and then runs the hook.
 * The checks cost compiled code a load and a test per source line.
 *
 * luaJIT_profile_start is found with dlsym, not linked: one clua.so built
 * for Lua 5.1 also serves LuaJIT, and LuaJIT 2.0 has no profiler at all.
 */
#include <dlfcn.h>
#include <signal.h>

#include "stall.h"

/* luajit.h, LuaJIT 2.1 */
typedef void (*profile_callback)(void *data, lua_State *L, int samples,
				 int vmstate);
typedef void (*profile_start_fn)(lua_State *L, const char *mode,
				 profile_callback cb, void *data);
typedef void (*profile_stop_fn)(lua_State *L);

/* 'l': a check at every new line; i2000000000: a 2e9 ms sampling interval */
#define PROFILE_MODE "li2000000000"

static struct {
	profile_stop_fn stop;
	void (*sigprof)(int);	/* (atomic) LuaJIT's SIGPROF handler */
} jit;

/* Whether L belongs to LuaJIT: LuaJIT's luaL_openlibs always loads its
 * `jit` library, which PUC Lua has not. */
static int is_luajit(lua_State *L)
{
	int yes;

	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_getfield(L, -1, "jit");
	yes = lua_istable(L, -1);
	lua_pop(L, 2);
	return yes;
}

/* Called by LuaJIT's interpreter after each (our) sample: nothing to do,
 * returning is what lets the hook run. */
static void on_sample(void *data, lua_State *L, int samples, int vmstate)
{
	(void)data;
	(void)L;
	(void)samples;
	(void)vmstate;
}

static void *find(const char *name)
{
	return dlsym(RTLD_DEFAULT, name);
}

int stalljit_start(lua_State *L, const char **why)
{
	profile_start_fn start;
	struct sigaction sa;

	if (!is_luajit(L))
		return 0;
	*(void **)&start = find("luaJIT_profile_start");
	*(void **)&jit.stop = find("luaJIT_profile_stop");
	if (start == NULL || jit.stop == NULL) {
		*why = "this LuaJIT has no profiler (LuaJIT 2.0): compiled "
		       "loops are not interrupted";
		return -1;
	}
	/* Stop first whatever runs (in the child of a fork, the profiler of
	 * the parent's guard): LuaJIT's start, when the profiler runs, stops
	 * it after reading the mode, and that stop clears the line mode. */
	jit.stop(L);
	start(L, PROFILE_MODE, on_sample, NULL);
	/* LuaJIT's handler, from the sigaction it just made. A build that
	 * samples from a thread instead (not Linux) leaves none. */
	if (sigaction(SIGPROF, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO)
	    || sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN) {
		jit.stop(L);
		*why = "this LuaJIT's profiler has no SIGPROF handler: compiled "
		       "loops are not interrupted";
		return -1;
	}
	__atomic_store_n(&jit.sigprof, sa.sa_handler, __ATOMIC_RELEASE);
	return 1;
}

void stalljit_kick(void)
{
	void (*sigprof)(int) = __atomic_load_n(&jit.sigprof, __ATOMIC_ACQUIRE);

	if (sigprof != NULL)
		sigprof(SIGPROF);
}

void stalljit_stop(lua_State *L)
{
	__atomic_store_n(&jit.sigprof, NULL, __ATOMIC_RELEASE);
	if (jit.stop != NULL)
		jit.stop(L);
}
