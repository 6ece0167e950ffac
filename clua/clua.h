/*
 * clua.h - what each concern's source file adds to the flat `clua` table.
 * Each clua_open_* is called with that table on the top of the stack and
 * leaves the stack as it found it.
 */
#ifndef CLUA_CLUA_H
#define CLUA_CLUA_H

#include "compat.h"

#define CLUA_VERSION "0.1.0"

void clua_open_process(lua_State *L);	/* process.c */
void clua_open_clock(lua_State *L);	/* clock.c */
void clua_open_notify(lua_State *L);	/* notify.c */
void clua_open_stall(lua_State *L);	/* stall.c */
void clua_open_timezone(lua_State *L);	/* timezone.c */

#endif
