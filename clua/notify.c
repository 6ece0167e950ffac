/*
 * notify.c - telling a service manager (systemd) about this process:
 * readiness, reloads, shutdown, status text and watchdog heartbeats.
 *
 * sdnotify.c sends the datagram, never waiting (a manager that stopped
 * reading gives EAGAIN at once: Awesome's main loop must not freeze on
 * it); this file only builds the state text and turns 1 / 0 / -errno into
 * Lua's true / false / nil, msg, errno.  Nothing here unsets the
 * environment: Awesome re-execs itself in place and needs NOTIFY_SOCKET
 * again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clua.h"
#include "sdnotify.h"
#include "util.h"

/***
 * systemd notification: readiness, reloads, shutdown, status text and
 * watchdog heartbeats for a `Type=notify` service.  Each call returns
 * `true` when sent, `false` when `NOTIFY_SOCKET` is unset, or nil,
 * message, errno, and never waits: when the service manager does not read
 * its socket and the socket's queue is full, the call returns nil,
 * message, `EAGAIN` (11) at once and the message is lost; send it again
 * later if it matters (a heartbeat need not be: the next one will do).
 * `NOTIFY_SOCKET` may be a path (`/run/...`) or an abstract name
 * (`@name`); another scheme (`vsock:`) gives `EAFNOSUPPORT`.
 * @submodule clua
 */

/* Pushes the Lua result of a send: "NOTIFY_SOCKET: <strerror>" names
 * what failed (the message is sent by clua itself, not by sd_notify). */
static int push_sent(lua_State *L, int r)
{
	if (r < 0)
		return clua_pusherror(L, "NOTIFY_SOCKET", -r);
	lua_pushboolean(L, r > 0);
	return 1;
}

/* Sends prefix followed by text made safe for a STATUS= value, the whole
 * cut to one datagram.  prefix ends in "STATUS=". */
static int send_with_status(lua_State *L, const char *prefix,
			    const char *text, size_t len)
{
	char buf[CLUA_NOTIFY_MAX + 1];
	size_t plen = strlen(prefix);

	memcpy(buf, prefix, plen);
	clua_sd_sanitize(buf + plen, sizeof buf - plen, text, len);
	return push_sent(L, clua_sd_send(buf));
}

/***
 * Send a raw state to the service manager.
 * @function notify
 * @tparam string state one or more `KEY=VALUE` lines (KEY of A-Z, 0-9,
 *   _), at most 4096 bytes, no NUL, no CR (systemd reads a CR as a line
 *   break); anything else is an argument error
 * @treturn[1] boolean `true` sent, `false` no service manager
 *   (`NOTIFY_SOCKET` unset)
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * -- starting takes longer than TimeoutStartSec=: ask for 30 s more
 * clua.notify("EXTEND_TIMEOUT_USEC=30000000")
 * @see sd_notify(3)
 */
static int l_notify(lua_State *L)
{
	size_t len;
	const char *state = clua_checklstring(L, 1, &len);
	const char *why;

	clua_checknargs(L, 1);
	why = clua_sd_state_invalid(state, len);
	if (why != NULL)
		return luaL_argerror(L, 1, why);
	return push_sent(L, clua_sd_send(state));
}

/***
 * Tell the service manager that start-up is finished (`READY=1`), with an
 * optional status text, sanitised as by `notify_status`.
 * @function notify_ready
 * @tparam[opt] string status
 * @treturn[1] boolean `true` sent, `false` no service manager
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * local sent = clua.notify_ready("serving")   -- false when not a service
 * @see sd_notify(3)
 */
static int l_notify_ready(lua_State *L)
{
	size_t len;
	const char *status;

	clua_checknargs(L, 1);
	if (lua_isnoneornil(L, 1))
		return push_sent(L, clua_sd_send("READY=1"));
	status = clua_checklstring(L, 1, &len);
	return send_with_status(L, "READY=1\nSTATUS=", status, len);
}

/***
 * Tell the service manager that this process reloads its configuration
 * (`RELOADING=1` with `MONOTONIC_USEC=`, which systemd 253's
 * `Type=notify-reload` requires);
 * send `notify_ready` when done.
 * @function notify_reloading
 * @treturn[1] boolean `true` sent, `false` no service manager
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * clua.notify_reloading()
 * -- ... read the configuration again ...
 * clua.notify_ready()
 * @see sd_notify(3)
 */
static int l_notify_reloading(lua_State *L)
{
	struct timespec ts;
	char buf[64];

	clua_checknargs(L, 0);
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return clua_pusherror(L, "clock_gettime", errno);
	snprintf(buf, sizeof buf, "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000ULL);
	return push_sent(L, clua_sd_send(buf));
}

/***
 * Tell the service manager that this process is shutting down
 * (`STOPPING=1`).
 * @function notify_stopping
 * @treturn[1] boolean `true` sent, `false` no service manager
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * clua.notify_stopping()   -- then let go of what the process holds, and exit
 * @see sd_notify(3)
 */
static int l_notify_stopping(lua_State *L)
{
	clua_checknargs(L, 0);
	return push_sent(L, clua_sd_send("STOPPING=1"));
}

/***
 * Set the status text the service manager shows (`STATUS=`).  Every
 * control character (CR and LF included) becomes a space and invalid
 * UTF-8 becomes U+FFFD, and the text is cut at a character boundary to
 * fit one datagram, so untrusted text can never add another assignment.
 * Unicode's noncharacters (U+FDD0 to U+FDEF, and U+FFFE and U+FFFF of
 * every plane) become U+FFFD too: systemd refuses a `STATUS=` holding one.
 * @function notify_status
 * @tparam string text
 * @treturn[1] boolean `true` sent, `false` no service manager
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * clua.notify_status("3 jobs queued")   -- systemctl status: Status: "3 jobs queued"
 * @see sd_notify(3)
 */
static int l_notify_status(lua_State *L)
{
	size_t len;
	const char *text = clua_checklstring(L, 1, &len);

	clua_checknargs(L, 1);
	return send_with_status(L, "STATUS=", text, len);
}

/***
 * Send a watchdog heartbeat (`WATCHDOG=1`).  One `sendto(2)` on a socket
 * kept open (close-on-exec) between calls; never waits.
 * @function notify_watchdog
 * @treturn[1] boolean `true` sent, `false` no service manager
 * @return[2] nil, message, errno (`EAGAIN`: the manager's queue is full)
 * @usage
 * -- from a timer firing every half of watchdog_usec():
 * clua.notify_watchdog()
 * @see sd_notify(3)
 * @see sd_watchdog_enabled(3)
 */
static int l_notify_watchdog(lua_State *L)
{
	clua_checknargs(L, 0);
	return push_sent(L, clua_sd_send("WATCHDOG=1"));
}

/***
 * The watchdog interval the service manager expects from this very
 * process (`WATCHDOG_USEC`, honouring `WATCHDOG_PID`).
 * @function watchdog_usec
 * @treturn[1] integer microseconds
 * @treturn[2] nil no watchdog for this process
 * @return[3] nil, message, errno when the environment is malformed
 * @usage
 * local usec = clua.watchdog_usec()
 * if usec then print(("a heartbeat every %g s"):format(usec / 2e6)) end
 * @see sd_watchdog_enabled(3)
 */
static int l_watchdog_usec(lua_State *L)
{
	uint64_t usec = 0;
	int r;

	clua_checknargs(L, 0);
	r = clua_sd_watchdog_usec(&usec);
	if (r < 0)
		return clua_pusherror(L, "sd_watchdog_enabled", -r);
	if (r == 0) {
		lua_pushnil(L);
		return 1;
	}
	/* Past 2^63 the value would wrap as an integer; a float is close
	 * enough for an interval of that size. */
	if (usec > (uint64_t)INT64_MAX)
		lua_pushnumber(L, (lua_Number)usec);
	else
		lua_pushinteger(L, (lua_Integer)usec);
	return 1;
}

static const luaL_Reg notify_funcs[] = {
	{"notify", l_notify},
	{"notify_ready", l_notify_ready},
	{"notify_reloading", l_notify_reloading},
	{"notify_stopping", l_notify_stopping},
	{"notify_status", l_notify_status},
	{"notify_watchdog", l_notify_watchdog},
	{"watchdog_usec", l_watchdog_usec},
	{NULL, NULL}
};

void clua_open_notify(lua_State *L)
{
	clua_register(L, notify_funcs);
}
