/*
 * util.c - argument checks and the error shape shared by every binding.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int clua_typeerror(lua_State *L, int arg, const char *expected)
{
	const char *msg = lua_pushfstring(L, "%s expected, got %s", expected,
					  luaL_typename(L, arg));
	return luaL_argerror(L, arg, msg);
}

void clua_checknargs(lua_State *L, int maxargs)
{
	int nargs = lua_gettop(L);

	if (nargs > maxargs)
		luaL_argerror(L, maxargs + 1, lua_pushfstring(L,
			"no more than %d argument%s expected, got %d",
			maxargs, maxargs == 1 ? "" : "s", nargs));
}

int clua_checkboolean(lua_State *L, int arg)
{
	if (lua_type(L, arg) != LUA_TBOOLEAN)
		clua_typeerror(L, arg, "boolean");
	return lua_toboolean(L, arg);
}

const char *clua_checklstring(lua_State *L, int arg, size_t *len)
{
	if (lua_type(L, arg) != LUA_TSTRING)
		clua_typeerror(L, arg, "string");
	return lua_tolstring(L, arg, len);
}

int clua_optboolean(lua_State *L, int arg, int def)
{
	return lua_isnoneornil(L, arg) ? def : clua_checkboolean(L, arg);
}

static const char *integer_range_message(lua_State *L, long long min,
					 long long max)
{
	char buf[96];

	snprintf(buf, sizeof buf, "out of range (expected %lld to %lld)", min,
		 max);
	lua_pushstring(L, buf);
	return lua_tostring(L, -1);
}

lua_Integer clua_checkinteger(lua_State *L, int arg, lua_Integer min,
			      lua_Integer max)
{
	lua_Number n;

	if (lua_type(L, arg) != LUA_TNUMBER)
		clua_typeerror(L, arg, "integer");
#if LUA_VERSION_NUM >= 503
	if (lua_isinteger(L, arg)) {
		lua_Integer i = lua_tointeger(L, arg);
		if (i < min || i > max)
			goto out_of_range;
		return i;
	}
#endif
	n = lua_tonumber(L, arg);
	if (isnan(n) || n != floor(n))
		luaL_argerror(L, arg, "number has no integer representation");
	/* Compare as doubles first: converting an out-of-range double to an
	 * integer type is undefined behaviour. */
	if (n < (lua_Number)min || n > (lua_Number)max)
		goto out_of_range;
	return (lua_Integer)n;
out_of_range:
	return luaL_argerror(L, arg, integer_range_message(L, (long long)min,
							  (long long)max));
}

lua_Integer clua_optinteger(lua_State *L, int arg, lua_Integer min,
			    lua_Integer max, lua_Integer def)
{
	return lua_isnoneornil(L, arg) ? def
				       : clua_checkinteger(L, arg, min, max);
}

double clua_checknumber(lua_State *L, int arg, double min, int min_open,
			double max)
{
	double n;

	if (lua_type(L, arg) != LUA_TNUMBER)
		clua_typeerror(L, arg, "number");
	n = (double)lua_tonumber(L, arg);
	if (isnan(n))
		luaL_argerror(L, arg, "number expected, got NaN");
	if (n < min || (min_open && n == min) || n > max) {
		char buf[96];
		snprintf(buf, sizeof buf, "out of range (expected %s %g and <= %g)",
			 min_open ? ">" : ">=", min, max);
		lua_pushstring(L, buf);
		luaL_argerror(L, arg, lua_tostring(L, -1));
	}
	return n;
}

double clua_optnumber(lua_State *L, int arg, double min, int min_open,
		      double max, double def)
{
	return lua_isnoneornil(L, arg)
		       ? def
		       : clua_checknumber(L, arg, min, min_open, max);
}

int clua_pusherror(lua_State *L, const char *what, int err)
{
	lua_pushnil(L);
	if (what != NULL)
		lua_pushfstring(L, "%s: %s", what, strerror(err));
	else
		lua_pushstring(L, strerror(err));
	lua_pushinteger(L, err);
	return 3;
}

void clua_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
		   const luaL_Reg *meta)
{
	luaL_newmetatable(L, tname);
	luaL_setfuncs(L, meta, 0);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushstring(L, tname);
	lua_setfield(L, -2, "__name");
	/* getmetatable() on a clua object returns this string, not the table
	 * that holds __gc: Lua code cannot swap out the finaliser. */
	lua_pushstring(L, tname);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
}

void *clua_newobject(lua_State *L, size_t size, const char *tname)
{
	void *obj = lua_newuserdata(L, size);

	memset(obj, 0, size);
	luaL_setmetatable(L, tname);
	return obj;
}

void clua_closefd(int *fd)
{
	if (*fd >= 0) {
		/* close(2) frees the fd even when it reports EINTR/EIO;
		 * retrying could close an fd another thread just got. */
		close(*fd);
		*fd = -1;
	}
}

int clua_pushfdobject(lua_State *L, const char *tname, int fd)
{
	if (fd < 0)
		lua_pushfstring(L, "%s (closed)", tname);
	else
		lua_pushfstring(L, "%s (fd %d)", tname, fd);
	return 1;
}

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int clua_wait_event(lua_State *L, int fd, double timeout,
		    int (*read_event)(lua_State *L, void *ud), void *ud)
{
	int forever = isinf(timeout);
	int64_t deadline = 0;

	if (!forever) {
		/* Beyond a century is for ever in practice; capping keeps the
		 * nanosecond arithmetic far from overflow. */
		if (timeout > 3.2e9)
			timeout = 3.2e9;
		deadline = monotonic_ns() + (int64_t)(timeout * 1e9);
	}
	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};
		struct timespec ts, *tsp = NULL;
		int n;

		if (!forever) {
			int64_t left = deadline - monotonic_ns();
			if (left < 0)
				left = 0;
			ts.tv_sec = (time_t)(left / 1000000000);
			ts.tv_nsec = (long)(left % 1000000000);
			tsp = &ts;
		}
		n = ppoll(&pfd, 1, tsp, NULL);
		if (n < 0)
			return clua_pusherror(L, "poll", errno);
		if (n == 0) {
			lua_pushnil(L);
			return 1;
		}
		n = read_event(L, ud);
		if (n != 1 || !lua_isnil(L, -1))
			return n;
		lua_pop(L, 1);
	}
}
