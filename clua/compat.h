/*
 * compat.h - the few Lua C API differences clua meets between Lua 5.1,
 * 5.2, 5.3, 5.4, 5.5 and LuaJIT, papered over in one place so the rest of
 * the sources are written against the 5.3/5.4 API. Lua 5.5 needs nothing
 * here: what its API changed (lua_newstate's seed, lua_resetthread and the
 * unsigned conversions gone) is nothing clua calls.
 */
#ifndef CLUA_COMPAT_H
#define CLUA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* Lua 5.1 and LuaJIT */
#define lua_rawlen(L, i) lua_objlen(L, i)
#ifndef luaL_newlibtable
/* PUC Lua 5.1 only: LuaJIT 2.1 has these three already. */
#define CLUA_COMPAT_AUXLIB 1
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs(L, l, 0))
void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
void *luaL_testudata(lua_State *L, int ud, const char *tname);
/* Only for L1 == L (the stall breaker's hook): debug.traceback's text. */
void luaL_traceback(lua_State *L, lua_State *L1, const char *msg, int level);
#define luaL_setmetatable(L, tname) \
	(luaL_getmetatable(L, tname), lua_setmetatable(L, -2))
#endif
#endif

#if LUA_VERSION_NUM < 503
/* An integer-valued number is an "integer" before 5.3 too. */
int clua_compat_isinteger(lua_State *L, int idx);
#define lua_isinteger(L, i) clua_compat_isinteger(L, i)
#endif

#endif
