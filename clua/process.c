/*
 * process.c - child subreaper and reaping primitives.
 */
#include <errno.h>
#include <sys/prctl.h>

#include "clua.h"
#include "util.h"

/***
 * Processes: subreaping and reaping.
 * @submodule clua
 */

/***
 * Make this process a child subreaper, or stop being one.
 * @function setsubreap
 * @tparam boolean on
 * @treturn[1] true
 * @return[2] nil, message, errno
 * @see prctl(2)
 */
static int l_setsubreap(lua_State *L)
{
	int on = clua_checkboolean(L, 1);

	clua_checknargs(L, 1);
	if (prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)on, 0, 0, 0) != 0)
		return clua_pusherror(L, "prctl", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * Whether this process is a child subreaper.
 * @function getsubreap
 * @treturn[1] boolean
 * @return[2] nil, message, errno
 */
static int l_getsubreap(lua_State *L)
{
	int on = 0;

	clua_checknargs(L, 0);
	if (prctl(PR_GET_CHILD_SUBREAPER, (unsigned long)&on, 0, 0, 0) != 0)
		return clua_pusherror(L, "prctl", errno);
	lua_pushboolean(L, on);
	return 1;
}

static const luaL_Reg process_funcs[] = {
	{"setsubreap", l_setsubreap},
	{"getsubreap", l_getsubreap},
	{NULL, NULL}
};

void clua_open_process(lua_State *L)
{
	clua_register(L, process_funcs);
}
