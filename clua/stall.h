/*
 * stall.h - how the parts of the stall breaker talk to each other.
 *
 *   stall.c      the Lua API;
 *   stallhook.c  the signal handler and the hook: what runs on the main
 *                thread and touches the Lua state to interrupt it;
 *   stallwatch.c the watcher thread: measures each busy stretch of the
 *                main loop and decides when to send the signal;
 *   mainloop.c   GLib's poll function, wrapped, so that the loop's own
 *                sleeps mark it idle (no ticks, no wake-ups while idle);
 *   stalljit.c   LuaJIT: its profiler sends compiled code back to the
 *                interpreter, where the hook can run.
 *
 * Vocabulary. A "stretch" is one busy period of the main loop: from the
 * moment it wakes (or ticks) to the moment it is idle again (or ticks
 * again). While the loop is idle the watcher sleeps without a timeout, and
 * a stretch shorter than a quarter of the limit does not wake it.
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

/* Starts the thread; 0 or an errno value. The loop starts busy. */
int stallwatch_start(const struct stallwatch_config *c);
/* Stops and joins it (not in a forked child: the thread is not there). */
void stallwatch_stop(void);
/* In a forked child: closes what the parent's thread used. */
void stallwatch_forked(void);

/* Main thread only. A tick: the current stretch ends, a new one begins. */
void stallwatch_tick(void);
/* The loop is about to sleep: the current stretch ends. */
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

/* --- mainloop.c: GLib's default main context -------------------------- */

/* Wraps the default context's poll function. 0, or an errno value with a
 * static message in *why (ENOENT: GLib is not loaded in this process). */
int mainloop_follow(const char **why);
/* Puts the wrapped poll function back (if nobody wrapped ours since). */
void mainloop_unfollow(void);
/* After fork: the child's wrapper only passes calls through. */
void mainloop_forked(void);
/* Whether the loop follows GLib, and whether through a host's own poll
 * function (Awesome's), which needs stall_idle() calls. */
int mainloop_following(void);
int mainloop_host_poll(void);
/* Inside a host's poll function, before its poll(2) has returned: the
 * host is still doing its pre-sleep work (Awesome's refresh). */
int mainloop_before_poll(void);

/* --- stallhook.c: the signal handler and the hook --------------------- */

/* Where stallguard:last() finds the last interrupt's message. */
#define STALL_LAST_KEY "clua.stallguard.last"

/* Claims a free real-time signal for the handler; each interrupt adds one
 * to *stalls. 0, or an errno value (EAGAIN: every signal is taken). */
int stallhook_start(lua_State *main, lua_Integer *stalls);
int stallhook_signal(void);
/* Gives the signal back and takes the hook off (the watcher is gone). */
void stallhook_stop(void);
/* idle(): sets the hook that sees Lua run again. */
void stallhook_idle(void);
/* In a forked child: gives the signal back. Async-signal-safe. */
void stallhook_forked(void);

/* Called by mainloop.c on the thread that polls. */
void stall_loop_sleeps(void);	/* the loop is about to sleep in poll */
void stall_loop_woke(void);	/* its poll returned */

/* --- stalljit.c: LuaJIT ------------------------------------------------ */

/* 1: compiled code can be interrupted from now on; 0: not LuaJIT; -1:
 * LuaJIT, but it cannot (why says so). */
int stalljit_start(lua_State *L, const char **why);
/* From the signal handler: make compiled code return to the interpreter.
 * Async-signal-safe. */
void stalljit_kick(void);
void stalljit_stop(lua_State *L);

#endif
