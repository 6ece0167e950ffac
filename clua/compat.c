/*
 * compat.c - implementations behind compat.h for the Lua versions that
 * lack them.  Empty (but for a typedef that keeps ISO C happy) on 5.3+.
 */
#include <math.h>
#include <string.h>

#include "compat.h"

#ifdef CLUA_COMPAT_AUXLIB
void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	luaL_checkstack(L, nup, "too many upvalues");
	for (; l->name != NULL; l++) {
		int i;
		for (i = 0; i < nup; i++)
			lua_pushvalue(L, -nup);
		lua_pushcclosure(L, l->func, nup);
		lua_setfield(L, -(nup + 2), l->name);
	}
	lua_pop(L, nup);
}

void *luaL_testudata(lua_State *L, int ud, const char *tname)
{
	void *p = lua_touserdata(L, ud);
	int same;

	if (p == NULL || !lua_getmetatable(L, ud))
		return NULL;
	luaL_getmetatable(L, tname);
	same = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	return same ? p : NULL;
}

/* debug.traceback, found through package.loaded so that no global is
 * read; called from C, its level 1 is the function running in L. Without
 * the debug library, the message alone. */
void luaL_traceback(lua_State *L, lua_State *L1, const char *msg, int level)
{
	(void)L1;
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_getfield(L, -1, "debug");
	lua_remove(L, -2);
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "traceback");
		lua_remove(L, -2);
	}
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 1);
		lua_pushstring(L, msg);
		return;
	}
	lua_pushstring(L, msg);
	lua_pushinteger(L, level + 1);
	lua_call(L, 2, 1);
}
#endif

#if LUA_VERSION_NUM < 503
int clua_compat_isinteger(lua_State *L, int idx)
{
	lua_Number n;

	if (lua_type(L, idx) != LUA_TNUMBER)
		return 0;
	n = lua_tonumber(L, idx);
	return n == floor(n) && fabs(n) < 9007199254740992.0;
}
#endif

typedef int clua_compat_nonempty;
