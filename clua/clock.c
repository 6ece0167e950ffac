/*
 * clock.c - see every wall-clock change the moment it happens.
 *
 * A CLOCK_REALTIME timerfd armed with TFD_TIMER_ABSTIME and
 * TFD_TIMER_CANCEL_ON_SET is woken by the kernel whenever CLOCK_REALTIME is
 * set (by hand, by NTP stepping it, or on resume from suspend). Kernel facts
 * this file relies on (fs/timerfd.c, timerfd_create(2)):
 *  - CANCEL_ON_SET is silently ignored unless the clock is CLOCK_REALTIME
 *    (or CLOCK_REALTIME_ALARM) and ABSTIME is set;
 *  - after a change the fd stays readable until it is read, and that read
 *    fails with ECANCELED; the read itself resets the timer's notion of the
 *    clock offset, so no re-arm is needed and the next change fires again;
 *  - an fd left unread stays readable: a level-triggered main loop would spin.
 * The kernel reports only that the clock was set, not by how much, so each
 * watch keeps the offsets REALTIME - MONOTONIC and BOOTTIME - MONOTONIC seen
 * at the previous event and reports how they moved.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "clua.h"
#include "util.h"

/***
 * Clock changes: a watch that sees every wall-clock step and resume.
 * @submodule clua
 */

#define CLOCKWATCH_TNAME "clua.clockwatch"

struct clockwatch {
	int fd;			/* -1 once closed, or before timerfd_create */
	int64_t real_off;	/* REALTIME - MONOTONIC at the last event, ns */
	int64_t boot_off;	/* BOOTTIME - MONOTONIC at the last event, ns */
};

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Reads both offsets. The clocks cannot be read at one instant, so they
 * are read between two monotonic readings and compared with the midpoint;
 * a sample whose window is wide (the thread was preempted between the
 * calls, easily milliseconds on a loaded machine or under valgrind) is
 * taken again, keeping the narrowest of a few. */
static void read_offsets(int64_t *real_off, int64_t *boot_off)
{
	int64_t best = INT64_MAX;
	int i;

	for (i = 0; i < 5 && best > 20000; i++) {
		struct timespec m1, re, bo, m2;
		int64_t mid, width;

		clock_gettime(CLOCK_MONOTONIC, &m1);
		clock_gettime(CLOCK_REALTIME, &re);
		clock_gettime(CLOCK_BOOTTIME, &bo);
		clock_gettime(CLOCK_MONOTONIC, &m2);
		width = ts_ns(&m2) - ts_ns(&m1);
		if (width >= best)
			continue;
		best = width;
		mid = ts_ns(&m1) + width / 2;
		*real_off = ts_ns(&re) - mid;
		*boot_off = ts_ns(&bo) - mid;
	}
}

/* Arms the timer at the latest time the kernel accepts: it must never
 * expire, only be cancelled. The kernel clamps a huge ABSTIME value to its
 * own maximum; a kernel that refuses a 64-bit time_t (seen on some 32-bit
 * systems) gets the largest 32-bit value instead. */
static int arm(int fd)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	int flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET;

	its.it_value.tv_sec = sizeof(time_t) > 4 ? (time_t)INT64_MAX
						 : (time_t)INT32_MAX;
	if (timerfd_settime(fd, flags, &its, NULL) == 0)
		return 0;
	its.it_value.tv_sec = INT32_MAX;
	return timerfd_settime(fd, flags, &its, NULL);
}

static struct clockwatch *check_clockwatch(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CLOCKWATCH_TNAME);
}

/* A watch a method may use: raises on a closed one. */
static struct clockwatch *check_open_clockwatch(lua_State *L, int idx)
{
	struct clockwatch *w = check_clockwatch(L, idx);

	if (w->fd < 0)
		luaL_argerror(L, idx, CLOCKWATCH_TNAME " is closed");
	return w;
}

/***
 * Watch the wall clock: a CLOCK_REALTIME timerfd, non-blocking and
 * close-on-exec, that turns readable whenever the clock is set or the
 * machine resumes from suspend.
 * @function clockwatch
 * @treturn[1] clockwatch
 * @return[2] nil, message, errno
 * @usage
 * local watch = assert(clua.clockwatch())
 * @see timerfd_create(2)
 */
static int l_clockwatch(lua_State *L)
{
	struct clockwatch *w;

	clua_checknargs(L, 0);
	/* The metatable goes on before the fd exists, so the collector can
	 * finalise a watch whose creation failed half-way. */
	w = clua_newobject(L, sizeof *w, CLOCKWATCH_TNAME);
	w->fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
	if (w->fd < 0)
		return clua_pusherror(L, "timerfd_create", errno);
	if (arm(w->fd) != 0) {
		int err = errno;
		clua_closefd(&w->fd);
		return clua_pusherror(L, "timerfd_settime", err);
	}
	/* Baseline after arming: a change in between is then reported (with
	 * near-zero deltas) rather than missed. */
	read_offsets(&w->real_off, &w->boot_off);
	return 1;
}

/***
 * The watch's file descriptor, for a main loop to watch for readability.
 * @function clockwatch:fd
 * @treturn integer
 * @usage
 * -- GLib (lgi): call watch:read() whenever the fd turns readable
 * GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, watch:fd(),
 *     GLib.IOCondition.IN, on_readable)
 */
static int l_fd(lua_State *L)
{
	struct clockwatch *w = check_open_clockwatch(L, 1);

	clua_checknargs(L, 1);
	lua_pushinteger(L, w->fd);
	return 1;
}

/* Drains the fd. Returns 1 when the clock changed, 0 when it did not,
 * -errno on failure. */
static int drain(struct clockwatch *w)
{
	uint64_t ticks;
	ssize_t n;

	do
		n = read(w->fd, &ticks, sizeof ticks);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return 0;	/* the timer itself expired: not a change */
	if (errno == ECANCELED)
		return 1;
	if (errno == EAGAIN)
		return 0;
	return -errno;
}

static int push_event(lua_State *L, struct clockwatch *w)
{
	int64_t real_off, boot_off;

	read_offsets(&real_off, &boot_off);
	lua_createtable(L, 0, 2);
	lua_pushnumber(L, (lua_Number)(real_off - w->real_off) / 1e9);
	lua_setfield(L, -2, "jump");
	lua_pushnumber(L, (lua_Number)(boot_off - w->boot_off) / 1e9);
	lua_setfield(L, -2, "suspended");
	w->real_off = real_off;
	w->boot_off = boot_off;
	return 1;
}

/* read() and wait() share this: nil, an event table, or an OS error. */
static int read_event(lua_State *L, struct clockwatch *w)
{
	int r = drain(w);

	if (r < 0)
		return clua_pusherror(L, "read", -r);
	if (r == 0) {
		lua_pushnil(L);
		return 1;
	}
	return push_event(L, w);
}

/***
 * What changed since the previous event, draining the fd. Several changes
 * since the last read are reported once, with their deltas summed. A
 * resume shows `suspended > 0` (and a `jump` of about as much); a step of
 * the clock shows `jump ~= 0` and `suspended` under a millisecond. It
 * always drains the fd, so a level-triggered main loop never spins: call
 * it on every wake-up.
 * @function clockwatch:read
 * @treturn[1] table `{jump=, suspended=}` in seconds: how much
 * REALTIME - MONOTONIC and BOOTTIME - MONOTONIC moved since the previous
 * event
 * @treturn[2] nil when the clock has not changed
 * @return[3] nil, message, errno
 * @usage
 * local change = watch:read()
 * if change then print(change.jump, change.suspended) end
 * @see timerfd_create(2)
 */
static int l_read(lua_State *L)
{
	struct clockwatch *w = check_open_clockwatch(L, 1);

	clua_checknargs(L, 1);
	return read_event(L, w);
}

/* clua_wait_event's read_event. */
static int read_event_cb(lua_State *L, void *ud)
{
	/* Readable but no change (the far-future expiry): nil, so the wait
	 * goes on for what the caller asked for. */
	return read_event(L, ud);
}

/***
 * Blocks until the clock changes, for standalone scripts only: never call
 * it from inside a main loop (watch `w:fd()` there instead).
 * @function clockwatch:wait
 * @tparam[opt] number timeout seconds (>= 0); none or `math.huge` waits
 * for ever
 * @treturn[1] table as `read` returns
 * @treturn[2] nil when the timeout passed first
 * @return[3] nil, message, errno (EINTR when a signal arrived: Lua's own
 * Ctrl-C handler then gets its turn)
 * @usage
 * local change = watch:wait(60)   -- nil after a minute without one
 * @see poll(2)
 */
static int l_wait(lua_State *L)
{
	struct clockwatch *w = check_open_clockwatch(L, 1);
	double timeout = clua_optnumber(L, 2, 0, 0, HUGE_VAL, HUGE_VAL);

	clua_checknargs(L, 2);
	return clua_wait_event(L, w->fd, timeout, read_event_cb, w);
}

/***
 * Closes the watch; idempotent. `__gc` and (Lua 5.4) `__close` do the same.
 * Any other method on a closed watch raises an error.
 * @function clockwatch:close
 * @treturn true
 * @usage
 * watch:close()
 */
static int l_close(lua_State *L)
{
	clua_checknargs(L, 1);
	clua_closefd(&check_clockwatch(L, 1)->fd);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc and __close: no argument count check (__close gets the error too). */
static int m_close(lua_State *L)
{
	clua_closefd(&check_clockwatch(L, 1)->fd);
	return 0;
}

static int m_tostring(lua_State *L)
{
	return clua_pushfdobject(L, CLOCKWATCH_TNAME,
				 check_clockwatch(L, 1)->fd);
}

static const luaL_Reg clockwatch_methods[] = {
	{"fd", l_fd},
	{"read", l_read},
	{"wait", l_wait},
	{"close", l_close},
	{NULL, NULL}
};

static const luaL_Reg clockwatch_meta[] = {
	{"__gc", m_close},
	{"__close", m_close},
	{"__tostring", m_tostring},
	{NULL, NULL}
};

static const luaL_Reg clock_funcs[] = {
	{"clockwatch", l_clockwatch},
	{NULL, NULL}
};

void clua_open_clock(lua_State *L)
{
	clua_newclass(L, CLOCKWATCH_TNAME, clockwatch_methods, clockwatch_meta);
	clua_register(L, clock_funcs);
}
