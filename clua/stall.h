/*
 * stall.h - the stall breaker: its parts, and the one table of its states.
 *
 *   stall.c      the Lua API (stallguard and its methods), which wires
 *                the parts below together;
 *   stallwatch.c the watcher thread: times each busy stretch of the main
 *                loop and sends the main thread a signal when one reaches
 *                the limit; it never touches the Lua state;
 *   stallhook.c  on the main thread: the signal's handler and the Lua hook
 *                that turns the signal into an error where Lua stalled;
 *   mainloop.c   GLib's poll function, wrapped: the loop's sleeps are its
 *                idle periods (no ticks, no wake-ups while idle); it calls
 *                back whatever it was given and knows nothing else;
 *   stalljit.c   LuaJIT: its profiler sends compiled code back to the
 *                interpreter, where the hook can run.
 * Calls only go down this list (stall.c uses all; stallhook.c uses
 * stallwatch.c, mainloop.c and stalljit.c); nothing calls up.
 *
 * A "stretch" is one busy period of the main loop: from the moment it
 * wakes (or ticks) to the moment it is idle again (or ticks again). It
 * "stalls" when it lasts the limit.
 *
 * The states of the main thread in one stretch, and what moves it on.
 * The hook is set on the main Lua thread: WAKE fires on calls and
 * returns, STALL on every instruction too. stallhook.c's on_hook() is
 * the SIGNALLED and BREAKING rows.
 *
 *  IDLE (WAKE)       idle() was called, or the loop is about to sleep
 *    Lua runs, the poll returns, or a tick                   -> BUSY
 *  BUSY (no hook)    the loop woke, or ticked
 *    the watcher sees it busy for the limit: a signal        -> SIGNALLED
 *  SIGNALLED (STALL) the signal's handler set the hook; at the first event:
 *    a call from C with no Lua below: the host's own C code
 *    stalled, not Lua; nothing is raised                     -> BUSY
 *    any other Lua event                                     -> BREAKING
 *  BREAKING (STALL)  Lua stalled; at each Lua event:
 *    an error raised here unwinds through Lua frames alone to
 *    Lua's own pcall or xpcall, or out to the host: raise    -> BUSY
 *    it would meet a C function first (a host's lua_pcall,
 *    which may swallow it): wait, a Lua caller runs soon     (stays)
 *    none did for a quarter of the limit (or, for LuaJIT's
 *    compiled code, the watcher signals again): raise here;
 *    the caller raises again when it runs                    (stays)
 *    a call from C with no Lua below: the stalled Lua is
 *    gone (its error went out to the host)                   -> BUSY
 *  any state: the stretch ends (idle, a tick); hook off      -> IDLE, BUSY
 *
 * So a stall stays broken until control is back in the main loop: an error
 * swallowed by a C caller is raised again in its caller, up to the
 * outermost frame, while code that catches it itself (pcall) gets it once,
 * as it would any error. The error handlers a host runs from C on the way
 * out (Awesome's debug::error) are not interrupted: they run below a C
 * function, for far less than the breaker waits there. A stall is
 * counted, and its message kept for last(), once: at its first raise.
 */
#ifndef CLUA_STALL_H
#define CLUA_STALL_H

#include <pthread.h>
#include <sys/types.h>

#include "compat.h"

/* Monotonic time in nanoseconds (vDSO: no system call). */
long long stall_now(void);

/* --- stallwatch.c: the watcher thread --------------------------------- */

struct stallwatch_config {
	long long limit_ns;	/* busy this long without a tick: stalled */
	int signo;		/* sent to main_thread on a stall */
	pthread_t main_thread;
	pid_t main_tid;		/* for /proc/self/task/TID */
};

/* Starts the thread; 0 or an errno value. The loop starts BUSY. */
int stallwatch_start(const struct stallwatch_config *c);
/* Stops and joins it (not in a forked child: the thread is not there). */
void stallwatch_stop(void);
/* In a forked child: closes what the parent's thread used. */
void stallwatch_forked(void);

/* Main thread only. A tick: the current stretch ends, a new one begins. */
void stallwatch_tick(void);
/* The loop is about to sleep: the current stretch ends (-> IDLE). */
void stallwatch_idle(void);
/* The loop woke up: a new stretch begins (nothing when already busy).
 * When the watcher sleeps, arms its timer (a quarter of the limit). */
void stallwatch_wake(void);
int stallwatch_is_idle(void);

/* For the hook: whether the stretch the watcher last signalled about is
 * still going; if so *stalled_ns is how long it has been busy (frozen time
 * left out). */
int stallwatch_still_stalled(long long *stalled_ns);
/* The hook acted on a signal: the next one for this stretch waits a
 * limit. */
void stallwatch_handled(void);
/* The longest stretch seen so far, in ns. */
long long stallwatch_longest(void);

/* --- stallhook.c: the signal handler and the hook --------------------- */

/* Where stallguard:last() finds the last stall's message. */
#define STALL_LAST_KEY "clua.stallguard.last"

/* Claims a free real-time signal for the handler, into *signo; each stall
 * adds one to *stalls. 0, or an errno value (EAGAIN: every signal is
 * taken). */
int stallhook_start(lua_State *main, lua_Integer *stalls, long long limit_ns,
		    int *signo);
/* Gives the signal back and takes the hook off (the watcher is gone). */
void stallhook_stop(void);
/* idle(): -> IDLE, with the hook that sees Lua run again. */
void stallhook_idle(void);
/* In a forked child: gives the signal back. Async-signal-safe. */
void stallhook_forked(void);
/* For mainloop_follow, on the thread that polls: the loop is about to
 * sleep; its poll returned. */
void stallhook_loop_sleeps(void);
void stallhook_loop_woke(void);

/* --- mainloop.c: GLib's default main context -------------------------- */

/* Wraps the default context's poll function; around each poll it calls
 * sleeps() and woke(). 0, or an errno value with a static message in
 * *why (ENOENT: GLib is not loaded in this process). */
int mainloop_follow(void (*sleeps)(void), void (*woke)(void),
		    const char **why);
/* Puts the wrapped poll function back (if nobody wrapped ours since). */
void mainloop_unfollow(void);
/* After fork: the child's wrapper only passes calls through. */
void mainloop_forked(void);
/* 0: not following; 1: following GLib's own poll; 2: a host's own poll
 * function (Awesome's), which needs idle() calls. */
int mainloop_following(void);
/* Inside a host's poll function, before its poll(2) has returned: the
 * host is still doing its pre-sleep work (Awesome's refresh). */
int mainloop_before_poll(void);

/* --- stalljit.c: LuaJIT ------------------------------------------------ */

/* 1: compiled code can be interrupted from now on; 0: not LuaJIT; -1:
 * LuaJIT, but it cannot (why says so). */
int stalljit_start(lua_State *L, const char **why);
/* From the signal handler: make compiled code return to the interpreter.
 * Async-signal-safe. */
void stalljit_kick(void);
void stalljit_stop(lua_State *L);

#endif
