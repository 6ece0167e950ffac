/*
 * process.c - child subreaper and reaping primitives.
 *
 * Inside a window manager another waiter (Awesome's own SIGCHLD handler,
 * GLib's child watches) owns some of the children. Reaping one of those
 * loses its exit status for good, so sweep() only takes zombies that have
 * stayed zombies for a grace period: peek with WNOWAIT, remember when each
 * was first seen, and reap pid by pid.
 *
 * childwatch() gives one child's pidfd: it turns readable the moment that
 * child exits, and waitid(P_PIDFD) collects exactly that process, never
 * another one that reused its pid after someone else reaped it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clua.h"
#include "util.h"

/***
 * Processes: subreaping and reaping.
 * @submodule clua
 */

#define CHILDWATCH_TNAME "clua.childwatch"

struct childwatch {
	int fd;			/* the pidfd; -1 once closed, or before */
	pid_t pid;
};

/* sweep()'s memory of the zombies it has seen, in the registry:
 * pid -> {first_seen (monotonic seconds), starttime (clock ticks)}. */
static const char seen_key = 'z';

/* One child of this process, as /proc/<pid>/stat describes it. */
struct child {
	pid_t pid;
	char state;			/* 'Z' for a zombie */
	unsigned long long start;	/* starttime: tells a reused pid apart */
};

/* Reads /proc/<pid>/stat into c; returns the parent's pid, or -1 when the
 * process has gone (or the file does not parse). */
static pid_t read_stat(pid_t pid, struct child *c)
{
	char path[32], buf[1024], *p;
	int fd, field, ppid;
	ssize_t len;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	do
		len = read(fd, buf, sizeof buf - 1);
	while (len < 0 && errno == EINTR);
	close(fd);
	if (len <= 0)
		return -1;
	buf[len] = '\0';
	/* The command name is in parentheses and may itself hold ") ". */
	p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 1, " %c %d", &c->state, &ppid) != 2)
		return -1;
	/* starttime is field 22; p + 1 is the space before field 3. */
	for (field = 2; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL)
		return -1;
	c->start = strtoull(p + 1, NULL, 10);
	c->pid = pid;
	return (pid_t)ppid;
}

/* Stores this process's children in kids[0..cap) and returns how many there
 * are, which may exceed cap (then only cap were stored); -errno when /proc
 * cannot be read. Scans /proc/<pid>/stat for our pid as the parent: the
 * task/<tid>/children file needs CONFIG_PROC_CHILDREN. */
static int scan_children(struct child *kids, int cap)
{
	pid_t self = getpid();
	struct dirent *d;
	int n = 0;
	DIR *dir = opendir("/proc");	/* glibc opens it O_CLOEXEC */

	if (dir == NULL)
		return -errno;
	while ((d = readdir(dir)) != NULL) {
		struct child c;
		char *end;
		long pid = strtol(d->d_name, &end, 10);

		if (*end != '\0' || pid <= 0 || end == d->d_name)
			continue;
		if (read_stat((pid_t)pid, &c) != self)
			continue;
		if (n < cap)
			kids[n] = c;
		n++;
	}
	closedir(dir);
	return n;
}

static int by_pid(const void *a, const void *b)
{
	pid_t x = ((const struct child *)a)->pid, y = ((const struct child *)b)->pid;

	return (x > y) - (x < y);
}

/* Pushes a userdata holding the children (so a Lua error cannot leak it),
 * sets *kids and *n; returns 0 or an errno. */
static int push_children(lua_State *L, struct child **kids, int *n)
{
	int cap = 64;

	for (;;) {
		struct child *buf = lua_newuserdata(L, (size_t)cap * sizeof *buf);
		int found = scan_children(buf, cap);

		if (found < 0) {
			lua_pop(L, 1);
			return -found;
		}
		if (found <= cap) {
			qsort(buf, (size_t)found, sizeof *buf, by_pid);
			*kids = buf;
			*n = found;
			return 0;
		}
		/* More children than room: scan again with room to spare. */
		lua_pop(L, 1);
		cap = found + found / 2 + 16;
	}
}

static double monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* waitid() that retries on EINTR; info->si_pid stays 0 when WNOHANG found
 * nothing. Returns 0 or an errno. */
static int wait_child(idtype_t idtype, pid_t pid, siginfo_t *info, int flags)
{
	memset(info, 0, sizeof *info);
	while (waitid(idtype, (id_t)pid, info, flags) != 0) {
		if (errno != EINTR)
			return errno;
	}
	return 0;
}

/* "exited" with an exit code in si_status, or "killed" with a signal
 * number there (CLD_KILLED, or CLD_DUMPED when a core was dumped). */
static const char *status_how(const siginfo_t *info)
{
	return info->si_code == CLD_EXITED ? "exited" : "killed";
}

/* Pushes reap()'s results for a waitid() that found something: pid,
 * "exited", code or pid, "killed", signal, core dumped. */
static int push_status(lua_State *L, const siginfo_t *info)
{
	lua_pushinteger(L, info->si_pid);
	lua_pushstring(L, status_how(info));
	lua_pushinteger(L, info->si_status);
	if (info->si_code == CLD_EXITED)
		return 3;
	lua_pushboolean(L, info->si_code == CLD_DUMPED);
	return 4;
}

/***
 * Make this process a child subreaper, or stop being one.
 * Orphans among its descendants are then re-parented to it instead of init.
 * @function setsubreap
 * @tparam boolean on
 * @treturn[1] true
 * @return[2] nil, message, errno
 * @usage
 * -- in rc.lua: orphans of what Awesome starts come back to it
 * clua.setsubreap(true)
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
 * @usage
 * print(clua.getsubreap())   --> true
 * @see prctl(2)
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

/* Reaps one exited child of `idtype`/`id` without blocking, and pushes
 * what reap() returns: its status, nil while none has exited, or nil,
 * message, errno. */
static int push_reaped(lua_State *L, idtype_t idtype, pid_t id)
{
	siginfo_t info;
	int err = wait_child(idtype, id, &info, WEXITED | WNOHANG);

	if (err != 0)
		return clua_pusherror(L, "waitid", err);
	if (info.si_pid == 0) {
		lua_pushnil(L);
		return 1;
	}
	return push_status(L, &info);
}

/***
 * Reap one exited child, without blocking.
 * @function reap
 * @tparam[opt] integer pid the child to reap; any child by default
 * @treturn[1] integer pid
 * @treturn[1] string `"exited"`
 * @treturn[1] integer exit code
 * @treturn[2] integer pid
 * @treturn[2] string `"killed"`
 * @treturn[2] integer signal number
 * @treturn[2] boolean whether a core was dumped
 * @return[3] nil when children exist but none has exited
 * @return[4] nil, message, errno (`ECHILD` when there is no such child)
 * @usage
 * local pid, how, code = clua.reap()
 * if pid then print(pid, how, code) end   --> 1234 exited 0
 * @see waitid(2)
 */
static int l_reap(lua_State *L)
{
	pid_t pid = (pid_t)clua_optinteger(L, 1, 1, INT_MAX, 0);

	clua_checknargs(L, 1);
	return push_reaped(L, pid > 0 ? P_PID : P_ALL, pid);
}

/* Pushes the registry's table of zombies seen by sweep(). */
static void push_seen(lua_State *L)
{
	lua_pushlightuserdata(L, (void *)&seen_key);
	lua_rawget(L, LUA_REGISTRYINDEX);
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
	}
}

/* Replaces the registry's table of zombies with the one on the top. */
static void store_seen(lua_State *L)
{
	lua_pushlightuserdata(L, (void *)&seen_key);
	lua_insert(L, -2);
	lua_rawset(L, LUA_REGISTRYINDEX);
}

/* When sweep() first saw zombie c (looked up in the table at index old),
 * or now if it is new to it or its pid now names another process. */
static double first_seen(lua_State *L, int old, const struct child *c,
			 double now)
{
	double t = now;

	lua_pushinteger(L, c->pid);
	lua_rawget(L, old);
	if (lua_istable(L, -1)) {
		lua_rawgeti(L, -1, 1);
		lua_rawgeti(L, -2, 2);
		if ((unsigned long long)lua_tonumber(L, -1) == c->start)
			t = lua_tonumber(L, -2);
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
	return t;
}

/* Appends {pid=, how=, code=, core=} to the array at index out. */
static void append_reaped(lua_State *L, int out, const siginfo_t *info)
{
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, info->si_pid);
	lua_setfield(L, -2, "pid");
	lua_pushstring(L, status_how(info));
	lua_setfield(L, -2, "how");
	lua_pushinteger(L, info->si_status);
	lua_setfield(L, -2, "code");
	lua_pushboolean(L, info->si_code == CLD_DUMPED);
	lua_setfield(L, -2, "core");
	lua_rawseti(L, out, (int)lua_rawlen(L, out) + 1);
}

/***
 * Reap the zombie children that have stayed zombies for at least `grace`
 * seconds, never blocking. A younger zombie is left alone, so a co-waiter
 * (Awesome's SIGCHLD handler, a GLib child watch) always gets its own
 * children first; sweep() only remembers when it first saw each zombie, so
 * call it from a timer at least every `grace` seconds.
 *
 * A co-waiter that comes later than `grace` loses the status to sweep():
 * `io.popen(cmd):close()` called more than `grace` seconds after the
 * command exited then returns nil, message, `ECHILD`.  Choose `grace`
 * longer than the longest delay between a child's exit and its own
 * waiter in the program (the default 2 s suits waiters that run at once,
 * like a SIGCHLD handler or a GLib child watch), or do not sweep where
 * another waiter reaps every child.
 * @function sweep
 * @tparam[opt=2] number grace seconds, finite, >= 0
 * @treturn[1] table an array of `{pid=, how=, code=, core=}` (`how` is
 * `"exited"` or `"killed"`, `code` the exit code or signal number), empty
 * when nothing was reaped
 * @return[2] nil, message, errno
 * @usage
 * -- from a timer, where nothing else reaps the children:
 * for _, z in ipairs(clua.sweep(5)) do print(z.pid, z.how, z.code) end
 * @see waitid(2)
 */
static int l_sweep(lua_State *L)
{
	double grace = clua_optnumber(L, 1, 0, 0, DBL_MAX, 2.0);
	double now = monotonic_now();
	struct child *kids;
	siginfo_t info;
	int out, old, fresh, n, i, err;

	clua_checknargs(L, 1);
	lua_settop(L, 1);
	lua_newtable(L);
	out = lua_gettop(L);

	/* The cheap common case: no zombie at all (or no child), forget all. */
	err = wait_child(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
	if (err != 0 && err != ECHILD)
		return clua_pusherror(L, "waitid", err);
	if (err == ECHILD || info.si_pid == 0) {
		lua_newtable(L);
		store_seen(L);
		return 1;
	}

	/* waitid() shows one zombie at a time: list them all through /proc. */
	err = push_children(L, &kids, &n);
	if (err != 0)
		return clua_pusherror(L, "/proc", err);
	push_seen(L);
	old = lua_gettop(L);
	lua_newtable(L);
	fresh = lua_gettop(L);
	for (i = 0; i < n; i++) {
		const struct child *c = &kids[i];
		double t;

		if (c->state != 'Z')
			continue;
		if (wait_child(P_PID, c->pid, &info,
			       WEXITED | WNOHANG | WNOWAIT) != 0 ||
		    info.si_pid != c->pid)
			continue;	/* gone already: a co-waiter took it */
		t = first_seen(L, old, c, now);
		if (now - t >= grace) {
			if (wait_child(P_PID, c->pid, &info,
				       WEXITED | WNOHANG) == 0 &&
			    info.si_pid == c->pid)
				append_reaped(L, out, &info);
			continue;
		}
		lua_createtable(L, 2, 0);
		lua_pushnumber(L, t);
		lua_rawseti(L, -2, 1);
		lua_pushnumber(L, (lua_Number)c->start);
		lua_rawseti(L, -2, 2);
		lua_rawseti(L, fresh, c->pid);
	}
	/* Zombies no longer there drop out: only this scan's are kept. */
	store_seen(L);
	lua_settop(L, out);
	return 1;
}

/* Reads the pid list ("12 345 ") of /proc/self/task/<tid>/children into
 * pids[0..cap); returns how many it lists (which may exceed cap: then
 * only cap were stored), 0 for a thread that has ended, or -errno. No Lua
 * call happens while the file is open: nothing can leak its fd. */
static int read_task_children(pid_t tid, pid_t *pids, int cap)
{
	char path[64], chunk[4096];
	long pid = 0;
	int fd, n = 0, digits = 0;
	ssize_t len, i;

	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	for (;;) {
		int eof;

		len = read(fd, chunk, sizeof chunk);
		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0) {
			int err = errno;
			close(fd);
			return -err;
		}
		/* The end of the file ends the last pid, as a space does. */
		eof = len == 0;
		if (eof)
			chunk[len++] = ' ';
		for (i = 0; i < len; i++) {
			if (chunk[i] >= '0' && chunk[i] <= '9') {
				pid = pid * 10 + (chunk[i] - '0');
				digits = 1;
			} else if (digits) {
				if (n < cap)
					pids[n] = (pid_t)pid;
				n++;
				pid = 0;
				digits = 0;
			}
		}
		if (eof)
			break;
	}
	close(fd);
	return n;
}

static int by_pid_t(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;

	return (x > y) - (x < y);
}

/* The threads of this process, at most cap of them, into tids; returns
 * how many there are, or -errno. */
static int list_tasks(pid_t *tids, int cap)
{
	struct dirent *d;
	int n = 0;
	DIR *dir = opendir("/proc/self/task");	/* O_CLOEXEC by glibc */

	if (dir == NULL)
		return -errno;
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] < '0' || d->d_name[0] > '9')
			continue;
		if (n < cap)
			tids[n] = (pid_t)atoi(d->d_name);
		n++;
	}
	closedir(dir);
	return n;
}

/* Pushes an array of this process's children, ascending, from each
 * thread's /proc/self/task/<tid>/children (CONFIG_PROC_CHILDREN): a few
 * small files however many processes the system has, where the walk of
 * /proc reads one file per process. Returns 0, or an errno (and pushes
 * nothing) when those files are not there or cannot be read. */
static int push_children_of_tasks(lua_State *L)
{
	pid_t tids[256], *pids;
	int ntids, total = 0, cap, n = 0, i, got;
	char path[64];

	/* The main thread's file: there unless the kernel has none at all. */
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	if (access(path, R_OK) != 0)
		return errno;
	ntids = list_tasks(tids, 256);
	if (ntids < 0)
		return -ntids;
	if (ntids > 256)
		return E2BIG;
	/* Count first, then read into room for that many (and some that
	 * appear meanwhile): no Lua allocation while a file is open. */
	for (i = 0; i < ntids; i++) {
		got = read_task_children(tids[i], NULL, 0);
		if (got < 0)
			return -got;
		total += got;
	}
	cap = total + 64;
	pids = lua_newuserdata(L, (size_t)cap * sizeof *pids);
	for (i = 0; i < ntids && n < cap; i++) {
		got = read_task_children(tids[i], pids + n, cap - n);
		if (got < 0) {
			lua_pop(L, 1);
			return -got;
		}
		n += got < cap - n ? got : cap - n;
	}
	qsort(pids, (size_t)n, sizeof *pids, by_pid_t);
	lua_createtable(L, n, 0);
	for (i = 0; i < n; i++) {
		lua_pushinteger(L, pids[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_remove(L, -2);
	return 0;
}

/***
 * The pids of this process's children, live and zombie.
 * Read from /proc (each thread's list of children where the kernel has
 * one, else a walk of every process), which is racy by nature: a child
 * may exit, or a new one appear, right after.
 * @function children
 * @treturn[1] table an array of pids, ascending
 * @return[2] nil, message, errno
 * @usage
 * print(#clua.children() .. ' children')
 * @see proc(5)
 */
static int l_children(lua_State *L)
{
	struct child *kids;
	int n, i, err;

	clua_checknargs(L, 0);
	if (push_children_of_tasks(L) == 0)
		return 1;
	err = push_children(L, &kids, &n);
	if (err != 0)
		return clua_pusherror(L, "/proc", err);
	lua_createtable(L, n, 0);
	for (i = 0; i < n; i++) {
		lua_pushinteger(L, kids[i].pid);
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

/* Whether SIGCHLD runs a function of the program's. */
static int has_handler(const struct sigaction *sa)
{
	if (sa->sa_flags & SA_SIGINFO)
		return 1;
	return sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN;
}

/***
 * SIGCHLD's disposition, read only.
 * @function sigchld
 * @treturn[1] string `"default"`, `"ignore"` or `"handler"`
 * @return[2] nil, message, errno
 * @usage
 * if clua.sigchld() ~= "handler" then
 *     -- nobody reaps: sweep from a timer
 * end
 * @see sigaction(2)
 */
static int l_sigchld(lua_State *L)
{
	struct sigaction sa;

	clua_checknargs(L, 0);
	if (sigaction(SIGCHLD, NULL, &sa) != 0)
		return clua_pusherror(L, "sigaction", errno);
	if (has_handler(&sa))
		lua_pushliteral(L, "handler");
	else if (sa.sa_handler == SIG_IGN)
		lua_pushliteral(L, "ignore");
	else
		lua_pushliteral(L, "default");
	return 1;
}

/***
 * Set SIGCHLD to SIG_IGN, so the kernel reaps every child at once.
 * When SIGCHLD already has a handler nothing changes unless `force` is true:
 * Awesome >= 4.3 reaps its children in its own handler, and ignoring SIGCHLD
 * there breaks every `awful.spawn` exit callback, `io.popen():close()` and
 * `os.execute()`.
 * @function ignore_SIGCHLD
 * @tparam[opt=false] boolean force replace a handler too
 * @treturn[1] true
 * @return[2] nil, message, `EBUSY` when SIGCHLD has a handler
 * @return[3] nil, message, errno
 * @usage
 * -- a daemon that never waits for its children:
 * assert(clua.ignore_SIGCHLD())
 * @see sigaction(2)
 */
static int l_ignore_SIGCHLD(lua_State *L)
{
	int force = clua_optboolean(L, 1, 0);
	struct sigaction sa;

	clua_checknargs(L, 1);
	if (sigaction(SIGCHLD, NULL, &sa) != 0)
		return clua_pusherror(L, "sigaction", errno);
	if (has_handler(&sa) && !force)
		return clua_pusherror(L, "SIGCHLD has a handler", EBUSY);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		return clua_pusherror(L, "sigaction", errno);
	lua_pushboolean(L, 1);
	return 1;
}

static struct childwatch *check_childwatch(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CHILDWATCH_TNAME);
}

static struct childwatch *check_open_childwatch(lua_State *L, int idx)
{
	struct childwatch *w = check_childwatch(L, idx);

	if (w->fd < 0)
		luaL_argerror(L, idx, CHILDWATCH_TNAME " is closed");
	return w;
}

/***
 * Watch one process for its exit: a pidfd (close-on-exec) that turns
 * readable the moment the process exits.  Any process can be watched;
 * only a child of this process can be reaped with `childwatch:reap`.
 * A process that has exited but is not reaped yet (a zombie) can be
 * watched: its fd is readable at once.
 * @function childwatch
 * @tparam integer pid
 * @treturn[1] childwatch
 * @return[2] nil, message, errno (`ESRCH` when there is no such process,
 *   `ENOSYS` before Linux 5.3)
 * @usage
 * local watch = assert(clua.childwatch(pid))
 * -- when watch:fd() turns readable:
 * print(watch:reap())   --> 1234 exited 0
 * @see pidfd_open(2)
 */
static int l_childwatch(lua_State *L)
{
	pid_t pid = (pid_t)clua_checkinteger(L, 1, 1, INT_MAX);
	struct childwatch *w;

	clua_checknargs(L, 1);
	w = clua_newobject(L, sizeof *w, CHILDWATCH_TNAME);
	w->fd = -1;
	w->pid = pid;
	/* Always close-on-exec (pidfd_open(2)); no glibc wrapper before 2.36. */
	w->fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (w->fd < 0)
		return clua_pusherror(L, "pidfd_open", errno);
	return 1;
}

/***
 * The watch's file descriptor, for a main loop to watch for readability.
 * @function childwatch:fd
 * @treturn integer
 * @usage
 * GLib.unix_fd_add_full(GLib.PRIORITY_HIGH, watch:fd(),
 *     GLib.IOCondition.IN, on_exit)
 */
static int l_childwatch_fd(lua_State *L)
{
	struct childwatch *w = check_open_childwatch(L, 1);

	clua_checknargs(L, 1);
	lua_pushinteger(L, w->fd);
	return 1;
}

/***
 * The pid the watch was made for.
 * @function childwatch:pid
 * @treturn integer
 */
static int l_childwatch_pid(lua_State *L)
{
	struct childwatch *w = check_childwatch(L, 1);

	clua_checknargs(L, 1);
	lua_pushinteger(L, w->pid);
	return 1;
}

/***
 * Reap the watched child if it has exited, without blocking
 * (`waitid(P_PIDFD)`, Linux >= 5.4).  Results as `reap`.
 * @function childwatch:reap
 * @treturn[1] integer pid
 * @treturn[1] string `"exited"`
 * @treturn[1] integer exit code
 * @treturn[2] integer pid
 * @treturn[2] string `"killed"`
 * @treturn[2] integer signal number
 * @treturn[2] boolean whether a core was dumped
 * @return[3] nil while the child still runs
 * @return[4] nil, message, errno (`ECHILD` when it is not a child of this
 *   process, or was reaped already)
 * @usage
 * local pid, how, code = watch:reap()
 * @see waitid(2)
 */
static int l_childwatch_reap(lua_State *L)
{
	struct childwatch *w = check_open_childwatch(L, 1);

	clua_checknargs(L, 1);
	return push_reaped(L, P_PIDFD, (pid_t)w->fd);
}

/* The pidfd turned readable: the process has exited. */
static int push_exited(lua_State *L, void *ud)
{
	(void)ud;
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * Blocks until the process exits or `timeout` seconds pass; it reaps
 * nothing (`childwatch:reap` does).  Inside a main loop, only for a
 * bound of milliseconds.
 * @function childwatch:wait
 * @tparam[opt] number timeout seconds (>= 0); none or `math.huge` waits
 * for ever
 * @treturn[1] true once the process has exited (at once if it had)
 * @treturn[2] nil when the timeout passed first
 * @return[3] nil, message, errno (`EINTR` when a signal came first)
 * @usage
 * if watch:wait(0.003) then print(watch:reap()) end
 */
static int l_childwatch_wait(lua_State *L)
{
	struct childwatch *w = check_open_childwatch(L, 1);
	double timeout = clua_optnumber(L, 2, 0, 0, HUGE_VAL, HUGE_VAL);

	clua_checknargs(L, 2);
	return clua_wait_event(L, w->fd, timeout, push_exited, NULL);
}

/***
 * Closes the watch; idempotent. `__gc` and (Lua 5.4) `__close` do the same.
 * @function childwatch:close
 * @treturn true
 */
static int l_childwatch_close(lua_State *L)
{
	clua_checknargs(L, 1);
	clua_closefd(&check_childwatch(L, 1)->fd);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc and __close: no argument count check (__close gets the error too). */
static int m_childwatch_close(lua_State *L)
{
	clua_closefd(&check_childwatch(L, 1)->fd);
	return 0;
}

static int m_childwatch_tostring(lua_State *L)
{
	return clua_pushfdobject(L, CHILDWATCH_TNAME,
				 check_childwatch(L, 1)->fd);
}

static const luaL_Reg childwatch_methods[] = {
	{"fd", l_childwatch_fd},
	{"pid", l_childwatch_pid},
	{"reap", l_childwatch_reap},
	{"wait", l_childwatch_wait},
	{"close", l_childwatch_close},
	{NULL, NULL}
};

static const luaL_Reg childwatch_meta[] = {
	{"__gc", m_childwatch_close},
	{"__close", m_childwatch_close},
	{"__tostring", m_childwatch_tostring},
	{NULL, NULL}
};

static const luaL_Reg process_funcs[] = {
	{"setsubreap", l_setsubreap},
	{"getsubreap", l_getsubreap},
	{"reap", l_reap},
	{"sweep", l_sweep},
	{"children", l_children},
	{"sigchld", l_sigchld},
	{"ignore_SIGCHLD", l_ignore_SIGCHLD},
	{"childwatch", l_childwatch},
	{NULL, NULL}
};

void clua_open_process(lua_State *L)
{
	clua_newclass(L, CHILDWATCH_TNAME, childwatch_methods, childwatch_meta);
	clua_register(L, process_funcs);
}
