/*
 * util.h - the argument checks and error shape every clua binding shares.
 *
 * Conventions, the same in every file (the LDoc reference promises them
 * to users):
 *  - a wrong argument is a Lua error naming the function and the argument,
 *    raised through luaL_argerror, so Lua fills in "bad argument #N to 'f'";
 *    nothing is coerced, nothing crashes;
 *  - a failing system call returns nil, strerror(errno), errno (one helper,
 *    clua_pusherror, which takes errno explicitly: a call made in between
 *    cannot change it).
 * Types are checked strictly: no string-to-number coercion, no number where
 * a boolean is expected, no float where an integer is expected.
 */
#ifndef CLUA_UTIL_H
#define CLUA_UTIL_H

#include "compat.h"

/* Raises "bad argument #arg to 'f' (<expected> expected, got <type>)". */
int clua_typeerror(lua_State *L, int arg, const char *expected);

/* Raises an argument error unless at most maxargs arguments were passed. */
void clua_checknargs(lua_State *L, int maxargs);

int clua_checkboolean(lua_State *L, int arg);

/* A string, strictly: a number is not coerced (luaL_checklstring would
 * turn 12 into "12"). Sets *len. */
const char *clua_checklstring(lua_State *L, int arg, size_t *len);
int clua_optboolean(lua_State *L, int arg, int def);

/* A number with an integral value in [min, max]; NaN, inf, fractions and
 * strings are argument errors. */
lua_Integer clua_checkinteger(lua_State *L, int arg, lua_Integer min,
			      lua_Integer max);
lua_Integer clua_optinteger(lua_State *L, int arg, lua_Integer min,
			    lua_Integer max, lua_Integer def);

/* A finite number in [min, max]; with min_open, min itself is refused. */
double clua_checknumber(lua_State *L, int arg, double min, int min_open,
			double max);
double clua_optnumber(lua_State *L, int arg, double min, int min_open,
		      double max, double def);

/* Pushes nil, "what: strerror(err)" (or just strerror when what is NULL),
 * err; returns 3 for use as `return clua_pusherror(L, "read", errno);`. */
int clua_pusherror(lua_State *L, const char *what, int err);

/* The userdata types (clockwatch, timezonewatch, stallguard) share one
 * layout, file by file:
 *  - #define <TYPE>_TNAME "clua.<type>", the metatable's name, also what
 *    getmetatable() and __tostring show;
 *  - check_<type>(L, idx), luaL_checkudata on it, and where methods refuse
 *    a closed object check_open_<type>(L, idx), raising "<tname> is closed";
 *  - one release function m_close, idempotent, serving __gc and __close
 *    (no argument count check: __close also gets the error object); the
 *    Lua method (close, stop) calls the same release after its checks;
 *  - <type>_methods and <type>_meta luaL_Reg tables ({"__gc", m_close},
 *    {"__close", m_close}, {"__tostring", m_tostring}), registered by
 *    clua_newclass in clua_open_<file>. __close is registered under every
 *    Lua: 5.4 and later call it for a to-be-closed variable, older ones and
 *    LuaJIT never look it up. */

/* Registers a userdata type: a metatable named tname holding meta (which
 * should hold __gc and friends) plus __index = methods and __name. Leaves
 * nothing on the stack. */
void clua_newclass(lua_State *L, const char *tname, const luaL_Reg *methods,
		   const luaL_Reg *meta);

/* Pushes a new userdata of size bytes, zeroed, with tname's metatable
 * already set: the collector can then finalise an object whose creation
 * fails half-way, so a constructor calls this before it acquires anything
 * (and marks what it holds as not held yet, such as fd = -1, before its
 * next Lua call). */
void *clua_newobject(lua_State *L, size_t size, const char *tname);

/* Closes *fd unless it is already closed (-1), then sets it to -1. */
void clua_closefd(int *fd);

/* __tostring of an object holding one fd: pushes "tname (fd N)", or
 * "tname (closed)" when fd is -1; returns 1. */
int clua_pushfdobject(lua_State *L, const char *tname, int fd);

/* The body of a watch's wait() method (clockwatch, timezonewatch): blocks
 * in ppoll(2) until fd turns readable or timeout seconds (HUGE_VAL: for
 * ever) have passed, then calls read_event(L, ud), which pushes its results
 * and returns their count, or pushes a single nil for "woken, but nothing
 * to report", in which case the wait goes on. Pushes nil on timeout and
 * nil, message, errno when poll fails (EINTR included, so that Lua's own
 * Ctrl-C handler gets its turn). */
int clua_wait_event(lua_State *L, int fd, double timeout,
		    int (*read_event)(lua_State *L, void *ud), void *ud);

/* Sets t[name] = f for each entry of funcs, t being the table at the top. */
#define clua_register(L, funcs) luaL_setfuncs(L, funcs, 0)

#endif
