/***
 * Process, clock, timezone, systemd and stall primitives for a
 * Lua-configured window manager. One flat table: `local clua = require("clua")`.
 *
 * Wrong argument types or values raise a Lua error naming the function and
 * the argument. A failing system call returns `nil, message, errno`.
 * @module clua
 */

/*
 * clua.c - the module entry point: one flat `clua` table holding every
 * concern's functions, as the contract in design.md spells them.
 */
#include "clua.h"

__attribute__((visibility("default"))) int luaopen_clua(lua_State *L);

int luaopen_clua(lua_State *L)
{
	lua_newtable(L);
	clua_open_process(L);
	clua_open_clock(L);
	clua_open_notify(L);
	clua_open_stall(L);
	clua_open_timezone(L);
	lua_pushliteral(L, CLUA_VERSION);
	lua_setfield(L, -2, "_VERSION");
	return 1;
}
