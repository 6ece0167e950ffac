/*
 * testkit.c - what the specs need from the system that plain Lua cannot do:
 * children that exit or die in a known way, orphans, clock steps.
 * Test scaffolding only; never installed.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../clua/util.h"

__attribute__((visibility("default"))) int luaopen_testkit(lua_State *L);

static void sleep_seconds(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* spawn(how, value, delay): a child that sleeps delay seconds then either
 * _exit(value) (how "exit") or raises signal value (how "signal", with core
 * dumps allowed when value dumps core). Returns its pid. */
static int l_spawn(lua_State *L)
{
	const char *how = luaL_checkstring(L, 1);
	int value = (int)luaL_checkinteger(L, 2);
	double delay = luaL_optnumber(L, 3, 0);
	pid_t pid = fork();

	if (pid < 0)
		return clua_pusherror(L, "fork", errno);
	if (pid == 0) {
		sleep_seconds(delay);
		if (strcmp(how, "signal") == 0) {
			struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
			setrlimit(RLIMIT_CORE, &unlimited);
			signal(value, SIG_DFL);
			raise(value);
		}
		_exit(value);
	}
	lua_pushinteger(L, pid);
	return 1;
}

/* orphans(n, lifetime): forks a child that forks n grandchildren, each
 * living `lifetime` seconds, then exits at once, so the grandchildren are
 * orphaned. Reaps that middle child; returns how many grandchildren it
 * managed to create (fork may fail under a pids limit). */
static int l_orphans(lua_State *L)
{
	int n = (int)luaL_checkinteger(L, 1);
	double lifetime = luaL_optnumber(L, 2, 0);
	int fds[2], created = 0, status;
	pid_t mid;

	if (pipe(fds) != 0)
		return clua_pusherror(L, "pipe", errno);
	mid = fork();
	if (mid < 0)
		return clua_pusherror(L, "fork", errno);
	if (mid == 0) {
		int i;
		close(fds[0]);
		for (i = 0; i < n; i++) {
			pid_t p = fork();
			if (p == 0) {
				close(fds[1]);
				sleep_seconds(lifetime);
				_exit(0);
			}
			if (p > 0)
				created++;
		}
		if (write(fds[1], &created, sizeof created) != sizeof created)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &created, sizeof created) != sizeof created)
		created = -1;
	close(fds[0]);
	while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
		;
	lua_pushinteger(L, created);
	return 1;
}

static int l_kill(lua_State *L)
{
	if (kill((pid_t)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)))
		return clua_pusherror(L, "kill", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* clock_step(delta): sets CLOCK_REALTIME to itself plus delta seconds
 * (0: to its own value, which fires CANCEL_ON_SET timers and moves nothing).
 * Returns true, or nil, msg, errno (EPERM without CAP_SYS_TIME). */
static int l_clock_step(lua_State *L)
{
	double delta = luaL_optnumber(L, 1, 0);
	struct timespec now;
	long long ns;

	clock_gettime(CLOCK_REALTIME, &now);
	ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec +
	     (long long)(delta * 1e9);
	now.tv_sec = (time_t)(ns / 1000000000LL);
	now.tv_nsec = (long)(ns % 1000000000LL);
	if (clock_settime(CLOCK_REALTIME, &now) != 0)
		return clua_pusherror(L, "clock_settime", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* now(clock): "realtime", "monotonic" or "boottime", as float seconds. */
static int l_now(lua_State *L)
{
	static const char *const names[] = {"realtime", "monotonic",
					    "boottime", NULL};
	static const clockid_t ids[] = {CLOCK_REALTIME, CLOCK_MONOTONIC,
					CLOCK_BOOTTIME};
	struct timespec ts;

	clock_gettime(ids[luaL_checkoption(L, 1, "monotonic", names)], &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

static int l_sleep(lua_State *L)
{
	sleep_seconds(luaL_checknumber(L, 1));
	return 0;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

/* Opens a close-on-exec pipe into fds and forks, *pid as fork() gives it.
 * Returns 0, or (nothing left open) the count of nil, message, errno pushed
 * for the caller to return. */
static int pipe_fork(lua_State *L, int fds[2], pid_t *pid)
{
	int err;

	if (pipe2(fds, O_CLOEXEC) != 0)
		return clua_pusherror(L, "pipe2", errno);
	*pid = fork();
	if (*pid < 0) {
		err = errno;
		close(fds[0]);
		close(fds[1]);
		return clua_pusherror(L, "fork", err);
	}
	return 0;
}

/* grandchild(lifetime): forks a child that forks one grandchild living
 * `lifetime` seconds, then exits at once; reaps that child and returns the
 * grandchild's pid, now an orphan (adopted by a subreaper, or by init). */
static int l_grandchild(lua_State *L)
{
	double lifetime = luaL_optnumber(L, 1, 0);
	int fds[2], status, n;
	pid_t mid, gc = -1;

	if ((n = pipe_fork(L, fds, &mid)) != 0)
		return n;
	if (mid == 0) {
		gc = fork();
		if (gc == 0) {
			sleep_seconds(lifetime);
			_exit(0);
		}
		_exit(write(fds[1], &gc, sizeof gc) == sizeof gc ? 0 : 1);
	}
	close(fds[1]);
	if (read(fds[0], &gc, sizeof gc) != sizeof gc)
		gc = -1;
	close(fds[0]);
	while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
		;
	if (gc <= 0)
		return clua_pusherror(L, "fork", EAGAIN);
	lua_pushinteger(L, gc);
	return 1;
}

static void dummy_handler(int sig)
{
	(void)sig;
}

/* set_sigchld(how): SIGCHLD's disposition to "default", "ignore" or
 * "handler" (a handler that does nothing). Returns true. */
static int l_set_sigchld(lua_State *L)
{
	static const char *const names[] = {"default", "ignore", "handler",
					    NULL};
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	switch (luaL_checkoption(L, 1, NULL, names)) {
	case 0:
		sa.sa_handler = SIG_DFL;
		break;
	case 1:
		sa.sa_handler = SIG_IGN;
		break;
	default:
		sa.sa_handler = dummy_handler;
		sa.sa_flags = SA_RESTART;
	}
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		return clua_pusherror(L, "sigaction", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* spawn_core(dir): a child that runs, in dir, a shell that kills itself
 * with SIGQUIT (which dumps core) with the core size limit raised to its
 * hard limit. A small exec'd program, not a fork of this Lua, so the core
 * is small and neither valgrind nor a sanitizer runtime stands in between.
 * Returns its pid. */
static int l_spawn_core(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	pid_t pid = fork();

	if (pid < 0)
		return clua_pusherror(L, "fork", errno);
	if (pid == 0) {
		struct rlimit rl;
		if (chdir(dir) != 0)
			_exit(126);
		/* An ignored SIGQUIT (inherited from a shell's background job)
		 * would outlive exec: sh cannot undo it. */
		signal(SIGQUIT, SIG_DFL);
		if (getrlimit(RLIMIT_CORE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_CORE, &rl);
		}
		/* A sanitizer runtime preloaded into sh lowers the soft limit
		 * again at start-up: raise it from within too. */
		execl("/bin/sh", "sh", "-c",
		      "ulimit -S -c \"$(ulimit -H -c)\"; kill -s QUIT $$", (char *)NULL);
		_exit(127);
	}
	lua_pushinteger(L, pid);
	return 1;
}

/* poll_readable(fd, timeout_ms): whether fd turns readable within the
 * timeout (poll(2), restarted on EINTR with the full timeout). */
static int l_poll_readable(lua_State *L)
{
	struct pollfd pfd = {(int)luaL_checkinteger(L, 1), POLLIN, 0};
	int n;

	do
		n = poll(&pfd, 1, (int)luaL_checkinteger(L, 2));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return clua_pusherror(L, "poll", errno);
	lua_pushboolean(L, n > 0 && (pfd.revents & POLLIN));
	return 1;
}

/* count_fds(): how many fds this process has open (/proc/self/fd entries,
 * less the one opendir itself uses). */
static int l_count_fds(lua_State *L)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return clua_pusherror(L, "opendir", errno);
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	lua_pushinteger(L, n - 1);
	return 1;
}

/* setenv(name, value): sets, or with value nil unsets, an environment
 * variable of this process (os.getenv reads it; plain Lua cannot set it). */
static int l_setenv(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	int r = lua_isnoneornil(L, 2) ? unsetenv(name)
				      : setenv(name, luaL_checkstring(L, 2), 1);

	if (r != 0)
		return clua_pusherror(L, "setenv", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* sigdisposition(signo): "default", "ignore" or "handler", and whether
 * the calling thread blocks it. */
static int l_sigdisposition(lua_State *L)
{
	int signo = (int)luaL_checkinteger(L, 1);
	struct sigaction sa;
	sigset_t mask;

	if (sigaction(signo, NULL, &sa) != 0)
		return clua_pusherror(L, "sigaction", errno);
	if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL)
		lua_pushliteral(L, "default");
	else if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN)
		lua_pushliteral(L, "ignore");
	else
		lua_pushliteral(L, "handler");
	pthread_sigmask(SIG_BLOCK, NULL, &mask);
	lua_pushboolean(L, sigismember(&mask, signo) == 1);
	return 2;
}

/* sigset(signo, "default" | "ignore"): sets that disposition. */
static int l_sigset(lua_State *L)
{
	static const char *const names[] = {"default", "ignore", NULL};
	int signo = (int)luaL_checkinteger(L, 1);
	int how = luaL_checkoption(L, 2, NULL, names);
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = how == 0 ? SIG_DFL : SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(signo, &sa, NULL) != 0)
		return clua_pusherror(L, "sigaction", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* dgram_listen(address): a bound AF_UNIX datagram socket, the receiving
 * end a service manager holds.  address is a path, or "@name" for the
 * abstract name, spelled as NOTIFY_SOCKET spells it.  Returns an object
 * with recv(timeout_ms) -> the next datagram's bytes, or nil on timeout;
 * and close(). */
#define DGRAM "testkit.dgram"

static int *check_dgram(lua_State *L)
{
	int *fd = luaL_checkudata(L, 1, DGRAM);

	if (*fd < 0)
		luaL_error(L, "socket is closed");
	return fd;
}

static int l_dgram_recv(lua_State *L)
{
	int fd = *check_dgram(L);
	struct pollfd p = {fd, POLLIN, 0};
	static char buf[65536];
	ssize_t n;

	if (poll(&p, 1, (int)luaL_optinteger(L, 2, 1000)) <= 0)
		return 0;
	n = recv(fd, buf, sizeof buf, 0);
	if (n < 0)
		return clua_pusherror(L, "recv", errno);
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

static int l_dgram_close(lua_State *L)
{
	int *fd = luaL_checkudata(L, 1, DGRAM);

	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return 0;
}

static int l_dgram_listen(lua_State *L)
{
	size_t len;
	const char *addr = luaL_checklstring(L, 1, &len);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int *fd;

	luaL_argcheck(L, len > 0 && len < sizeof sa.sun_path, 1, "bad length");
	fd = lua_newuserdata(L, sizeof *fd);
	*fd = -1;
	luaL_setmetatable(L, DGRAM);
	memcpy(sa.sun_path, addr, len);
	if (addr[0] == '@')
		sa.sun_path[0] = '\0';	/* abstract: no trailing NUL */
	else
		len++;
	*fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (*fd < 0)
		return clua_pusherror(L, "socket", errno);
	if (bind(*fd, (struct sockaddr *)&sa,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len))) {
		int err = errno;
		close(*fd);
		*fd = -1;
		return clua_pusherror(L, "bind", err);
	}
	return 1;
}

static const luaL_Reg dgram_methods[] = {
	{"recv", l_dgram_recv},
	{"close", l_dgram_close},
	{NULL, NULL}
};

static const luaL_Reg dgram_meta[] = {
	{"__gc", l_dgram_close},
	{NULL, NULL}
};

/* sigrtrange(): SIGRTMIN, SIGRTMAX as this libc sees them. */
static int l_sigrtrange(lua_State *L)
{
	lua_pushinteger(L, SIGRTMIN);
	lua_pushinteger(L, SIGRTMAX);
	return 2;
}

/* fds(): a table fd -> what it points to (readlink of /proc/self/fd/N),
 * for every fd this process has open but the one the listing uses. */
static int l_fds(lua_State *L)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (d == NULL)
		return clua_pusherror(L, "opendir", errno);
	lua_newtable(L);
	while ((e = readdir(d)) != NULL) {
		char target[256];
		int fd = atoi(e->d_name);
		ssize_t n;

		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		n = readlinkat(dirfd(d), e->d_name, target, sizeof target);
		if (n < 0)
			continue;
		lua_pushlstring(L, target, (size_t)n);
		lua_rawseti(L, -2, fd);
	}
	closedir(d);
	return 1;
}

static void no_op(int sig)
{
	(void)sig;
}

/* deadline(seconds): from then on, every `seconds` (a float) a SIGALRM
 * whose handler does nothing and is not SA_RESTART interrupts whatever
 * system call this process is blocked in (it fails with EINTR), so a spec
 * checking that something never blocks fails instead of hanging.
 * deadline(nil) disarms it and puts SIGALRM back to its default. */
static int l_deadline(lua_State *L)
{
	struct itimerval it;
	struct sigaction sa;

	memset(&it, 0, sizeof it);
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_DFL;
	if (!lua_isnoneornil(L, 1)) {
		double s = luaL_checknumber(L, 1);

		it.it_value.tv_sec = (time_t)s;
		it.it_value.tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6);
		if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
			it.it_value.tv_usec = 1;
		it.it_interval = it.it_value;
		sa.sa_handler = no_op;	/* no SA_RESTART */
	}
	if (sigaction(SIGALRM, &sa, NULL) != 0 ||
	    setitimer(ITIMER_REAL, &it, NULL) != 0)
		return clua_pusherror(L, "setitimer", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* fork(): fork(2); returns the child's pid in the parent, 0 in the child,
 * which must end with exit_now(). */
static int l_fork(lua_State *L)
{
	pid_t pid = fork();

	if (pid < 0)
		return clua_pusherror(L, "fork", errno);
	lua_pushinteger(L, pid);
	return 1;
}

/* exit_now(code): _exit(code), for a forked child (no atexit, no Lua
 * teardown, no busted output). */
static int l_exit_now(lua_State *L)
{
	_exit((int)luaL_checkinteger(L, 1));
	return 0;
}

/* pipe(): a close-on-exec pipe; returns its read and write fds. */
static int l_pipe(lua_State *L)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) != 0)
		return clua_pusherror(L, "pipe2", errno);
	lua_pushinteger(L, fds[0]);
	lua_pushinteger(L, fds[1]);
	return 2;
}

/* dup2(from, to): returns true. */
static int l_dup2(lua_State *L)
{
	if (dup2((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)) < 0)
		return clua_pusherror(L, "dup2", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* close(fd): returns true. */
static int l_close(lua_State *L)
{
	if (close((int)luaL_checkinteger(L, 1)) != 0)
		return clua_pusherror(L, "close", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/* utf8(cp): the UTF-8 bytes of code point cp, 0 to 0x10FFFF, surrogates
 * included (the specs send them on purpose; Lua 5.1 has no utf8.char). */
static int l_utf8(lua_State *L)
{
	lua_Integer cp = luaL_checkinteger(L, 1);
	char b[4];
	size_t n;

	luaL_argcheck(L, cp >= 0 && cp <= 0x10FFFF, 1, "not a code point");
	if (cp < 0x80) {
		b[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | (cp >> 6)), n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | (cp >> 12)), n = 3;
	} else {
		b[0] = (char)(0xF0 | (cp >> 18)), n = 4;
	}
	for (size_t i = 1; i < n; i++)
		b[i] = (char)(0x80 | ((cp >> (6 * (n - 1 - i))) & 0x3F));
	lua_pushlstring(L, b, n);
	return 1;
}

/* --- For the stall breaker's specs (spec/stall_spec.lua) --------------- */

static double monotonic_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Busy in C, on the CPU, without calling Lua or any blocking function. */
static void spin_seconds(double s)
{
	double until = monotonic_seconds() + s;

	while (monotonic_seconds() < until)
		;
}

struct delayed_write {
	int fd;
	double delay;
};

static void *write_later(void *arg)
{
	struct delayed_write *dw = arg;

	sleep_seconds(dw->delay);
	if (write(dw->fd, "x", 1) != 1)
		dw->delay = -1;
	return NULL;
}

/* read_after(seconds): one read(2) on a pipe that a thread writes one
 * byte to after `seconds`, the way a Lua function blocks reading from a
 * slow command. Not retried on EINTR: returns the bytes read, or nil,
 * message, errno (4 if a signal cut it short). */
static int l_read_after(lua_State *L)
{
	struct delayed_write dw;
	pthread_t t;
	int fds[2], err = 0;
	ssize_t n;
	char c;

	dw.delay = luaL_checknumber(L, 1);
	if (pipe2(fds, O_CLOEXEC) != 0)
		return clua_pusherror(L, "pipe2", errno);
	dw.fd = fds[1];
	if ((err = pthread_create(&t, NULL, write_later, &dw)) != 0) {
		close(fds[0]);
		close(fds[1]);
		return clua_pusherror(L, "pthread_create", err);
	}
	n = read(fds[0], &c, 1);
	err = errno;
	pthread_join(t, NULL);
	close(fds[0]);
	close(fds[1]);
	if (n < 0)
		return clua_pusherror(L, "read", err);
	lua_pushinteger(L, (lua_Integer)n);
	return 1;
}

/* poll_once(ms): one poll(2) on no fds, a plain wait; nanosleep_once(s):
 * one nanosleep(2). Neither is retried on EINTR: each returns true once the
 * whole time passed, or nil, message, errno (4 if a signal cut it short).
 * last_errno() is the errno of the last of them (0: it ran to its end),
 * for when an error raised on its return hides what it returned. */
static int last_wait_errno;

static int wait_result(lua_State *L, const char *what, int failed)
{
	last_wait_errno = failed ? errno : 0;
	if (failed)
		return clua_pusherror(L, what, last_wait_errno);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_poll_once(lua_State *L)
{
	return wait_result(L, "poll",
			   poll(NULL, 0, (int)luaL_checkinteger(L, 1)) != 0);
}

static int l_nanosleep_once(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	struct timespec ts;

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	return wait_result(L, "nanosleep", nanosleep(&ts, NULL) != 0);
}

static int l_last_errno(lua_State *L)
{
	lua_pushinteger(L, last_wait_errno);
	return 1;
}

/* spin_c(seconds[, f]): busy on the CPU in C for `seconds`, like a host's
 * own code; then, when f is given, calls it (from C, as a host calls a Lua
 * callback) and returns what it returns. */
static int l_spin_c(lua_State *L)
{
	spin_seconds(luaL_checknumber(L, 1));
	if (lua_isnoneornil(L, 2))
		return 0;
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	lua_call(L, 0, LUA_MULTRET);
	return lua_gettop(L) - 1;
}

/* swallowing(f[, on_error]): a C function that calls f with its own
 * arguments under lua_pcall and swallows any error, as Awesome runs
 * property getters and signal handlers: its error handler (C) first calls
 * on_error(message) (Lua, like Awesome's debug::error handlers), then the
 * C function returns nothing. Without an error it returns what f returned.
 * For the stall breaker's specs: an error raised in f must be raised
 * again in the Lua that called the C function. */
static int swallow_handler(lua_State *L)
{
	if (!lua_isnil(L, lua_upvalueindex(1))) {
		lua_pushvalue(L, lua_upvalueindex(1));
		lua_pushvalue(L, 1);
		lua_call(L, 1, 0);
	}
	return 1;
}

static int swallowing_call(lua_State *L)
{
	int n = lua_gettop(L);

	lua_pushvalue(L, lua_upvalueindex(2));
	lua_pushcclosure(L, swallow_handler, 1);
	lua_insert(L, 1);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 2);
	if (lua_pcall(L, n, LUA_MULTRET, 1) != 0)
		return 0;
	return lua_gettop(L) - 1;
}

static int l_swallowing(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	lua_pushcclosure(L, swallowing_call, 2);
	return 1;
}

/* stop_me(after, duration): a shell that SIGSTOPs this process after
 * `after` seconds and SIGCONTs it `duration` seconds later, then exits.
 * Exec'd without LD_PRELOAD: no sanitizer runtime in it, and valgrind does
 * not follow an exec. Returns its pid; reap it. */
static int l_stop_me(lua_State *L)
{
	double after = luaL_checknumber(L, 1);
	double duration = luaL_checknumber(L, 2);
	char script[160];
	pid_t pid;

	snprintf(script, sizeof script,
		 "sleep %.3f; kill -STOP %d; sleep %.3f; kill -CONT %d",
		 after, (int)getpid(), duration, (int)getpid());
	pid = fork();
	if (pid < 0)
		return clua_pusherror(L, "fork", errno);
	if (pid == 0) {
		unsetenv("LD_PRELOAD");
		execl("/bin/sh", "sh", "-c", script, (char *)NULL);
		_exit(127);
	}
	lua_pushinteger(L, pid);
	return 1;
}

/* fork_coded(): in the parent, the child's pid and the fd its exit code
 * will come through (child_code); in the child, 0: it goes on running this
 * very Lua state and must end with exit_coded(code). The code goes through a pipe and
 * the child then SIGKILLs itself: no exit handlers, and no leak check of a
 * child whose threads stayed with the parent (valgrind). */
static int child_code_fd = -1;

static int l_fork_coded(lua_State *L)
{
	int fds[2], n;
	pid_t pid;

	if ((n = pipe_fork(L, fds, &pid)) != 0)
		return n;
	if (pid == 0) {
		close(fds[0]);
		child_code_fd = fds[1];
		lua_pushinteger(L, 0);
		return 1;
	}
	close(fds[1]);
	lua_pushinteger(L, pid);
	lua_pushinteger(L, fds[0]);
	return 2;
}

static int l_exit_coded(lua_State *L)
{
	unsigned char code = (unsigned char)luaL_checkinteger(L, 1);

	if (child_code_fd >= 0 && write(child_code_fd, &code, 1) != 1)
		_exit(code);
	kill(getpid(), SIGKILL);
	_exit(code);
	return 0;
}

/* child_code(fd, timeout_ms): the code a child passed to exit_coded(), or nil
 * when none came in time; closes fd. */
static int l_child_code(lua_State *L)
{
	int fd = (int)luaL_checkinteger(L, 1);
	struct pollfd p = {fd, POLLIN, 0};
	unsigned char code;
	int got = 0;

	if (poll(&p, 1, (int)luaL_checkinteger(L, 2)) == 1)
		got = read(fd, &code, 1) == 1;
	close(fd);
	if (!got)
		return 0;
	lua_pushinteger(L, code);
	return 1;
}

/* /proc/self/task/<tid>/<name> into buf (NUL-terminated, cut at the
 * first newline when line is set); "" when unreadable. */
static void read_task(const char *tid, const char *name, char *buf,
		      size_t size, int line)
{
	char path[300];
	size_t n = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/self/task/%s/%s", tid, name);
	if ((f = fopen(path, "re")) != NULL) {
		n = fread(buf, 1, size - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	if (line)
		buf[strcspn(buf, "\n")] = '\0';
}

/* task(comm): the first thread of this process named comm (see
 * pthread_setname_np): its tid, its voluntary context switches (one each
 * time it blocked: its wake-ups) and its /proc syscall line. nil if none. */
static int l_task(lua_State *L)
{
	const char *want = luaL_checkstring(L, 1);
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	char buf[4096];
	const char *p;

	if (d == NULL)
		return clua_pusherror(L, "opendir", errno);
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		read_task(e->d_name, "comm", buf, sizeof buf, 1);
		if (strcmp(buf, want) == 0)
			break;
	}
	if (e == NULL) {
		closedir(d);
		return 0;
	}
	lua_pushinteger(L, atoi(e->d_name));
	read_task(e->d_name, "status", buf, sizeof buf, 0);
	p = strstr(buf, "\nvoluntary_ctxt_switches:");
	lua_pushinteger(L, p ? atoll(p + 25) : -1);
	read_task(e->d_name, "syscall", buf, sizeof buf, 1);
	lua_pushstring(L, buf);
	closedir(d);
	return 3;
}

/* A host's own GLib poll function, shaped like Awesome's a_glib_poll: it
 * runs Lua (refresh) before it polls, then, after the poll, optionally
 * some C work of its own (cwork), then Lua again (events), all before it
 * returns to GLib. Lua errors go to the error function, as Awesome sends
 * them to debug::error. GLib is the copy lgi loaded. */
typedef int (*gpoll_fn)(struct pollfd *, unsigned int, int);

static struct {
	lua_State *L;
	int refresh, events, error;	/* registry references */
	double cwork;			/* one-shot */
	void *context;
	gpoll_fn g_poll, prev;
	void (*set)(void *, gpoll_fn);
	gpoll_fn (*get)(void *);
} host;

static void host_call(int ref)
{
	lua_State *L = host.L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	if (lua_pcall(L, 0, 0, 0) != 0) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, host.error);
		lua_insert(L, -2);
		if (lua_pcall(L, 1, 0, 0) != 0)
			lua_pop(L, 1);
	}
}

static int host_poll_fn(struct pollfd *fds, unsigned int n, int timeout)
{
	int r, err;

	host_call(host.refresh);
	r = host.g_poll(fds, n, timeout);
	err = errno;
	if (host.cwork > 0) {
		spin_seconds(host.cwork);
		host.cwork = 0;
	}
	host_call(host.events);
	errno = err;
	return r;
}

static int host_find(void)
{
	void *glib = dlopen("libglib-2.0.so.0", RTLD_LAZY | RTLD_NOLOAD);
	void *(*context_default)(void);

	if (glib == NULL)
		return 0;
	*(void **)&context_default = dlsym(glib, "g_main_context_default");
	*(void **)&host.g_poll = dlsym(glib, "g_poll");
	*(void **)&host.set = dlsym(glib, "g_main_context_set_poll_func");
	*(void **)&host.get = dlsym(glib, "g_main_context_get_poll_func");
	dlclose(glib);	/* lgi keeps it loaded */
	if (!context_default || !host.g_poll || !host.set || !host.get)
		return 0;
	host.context = context_default();
	return 1;
}

/* host_poll{refresh = f, events = f, error = f}: installs the host poll
 * function on GLib's default context (GLib must be loaded: require lgi
 * first). host_poll(): takes it out, and returns whether it was still the
 * context's poll function (nobody's wrapper left in front of it).
 * host_cwork(seconds): the next poll spins that long in C before calling
 * events. */
static int l_host_poll(lua_State *L)
{
	static const char *const names[] = {"refresh", "events", "error"};
	int *refs[] = {&host.refresh, &host.events, &host.error};
	int i, in_place = 0;

	if (host.L != NULL) {
		in_place = host.get(host.context) == host_poll_fn;
		host.set(host.context, host.prev);
		for (i = 0; i < 3; i++)
			luaL_unref(host.L, LUA_REGISTRYINDEX, *refs[i]);
		host.L = NULL;
	}
	if (lua_isnoneornil(L, 1)) {
		lua_pushboolean(L, in_place);
		return 1;
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	if (!host.context && !host_find())
		return clua_pusherror(L, "GLib is not loaded", ENOENT);
	for (i = 0; i < 3; i++) {
		lua_getfield(L, 1, names[i]);
		luaL_argcheck(L, lua_isfunction(L, -1), 1, names[i]);
		*refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	host.L = L;
	host.cwork = 0;
	host.prev = host.get(host.context);
	host.set(host.context, host_poll_fn);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_host_cwork(lua_State *L)
{
	host.cwork = luaL_checknumber(L, 1);
	return 0;
}

/* For the stall specs in a real Awesome: a bare X11 client speaking the
 * protocol itself (no Xlib or xcb headers needed), to grab the server and
 * make Awesome wait for a reply in its own C code. xclient(display) ->
 * object with grab(), map() (creates a window and maps it: Awesome gets a
 * MapRequest), ungrab(), close(); each returns true or nil, msg, errno.
 * Reads and writes on its socket give up after 10 s (SO_RCVTIMEO,
 * SO_SNDTIMEO), so an X server that does not answer fails the spec
 * instead of hanging it. */
#define XCLIENT "testkit.xclient"

struct xclient {
	int fd;
	uint32_t root, next_id;
};

static struct xclient *check_xclient(lua_State *L)
{
	struct xclient *x = luaL_checkudata(L, 1, XCLIENT);

	if (x->fd < 0)
		luaL_error(L, "X connection is closed");
	return x;
}

static int x_send(lua_State *L, struct xclient *x, const void *req, size_t len)
{
	if (write(x->fd, req, len) != (ssize_t)len)
		return clua_pusherror(L, "write", errno ? errno : EIO);
	lua_pushboolean(L, 1);
	return 1;
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

static uint32_t get32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static int read_full(int fd, unsigned char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int l_xclient(lua_State *L)
{
	const char *display = luaL_checkstring(L, 1);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval limit = {10, 0};
	unsigned char setup[12] = {0x6c, 0, 11, 0}, head[8], *body;
	size_t len;
	unsigned vendor, formats;
	struct xclient *x;

	luaL_argcheck(L, display[0] == ':', 1, "\":N\" expected");
	snprintf(sa.sun_path, sizeof sa.sun_path, "/tmp/.X11-unix/X%d",
		 atoi(display + 1));
	x = lua_newuserdata(L, sizeof *x);
	x->fd = -1;
	luaL_setmetatable(L, XCLIENT);
	x->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (x->fd < 0)
		return clua_pusherror(L, "socket", errno);
	if (setsockopt(x->fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) != 0
	    || setsockopt(x->fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0)
		return clua_pusherror(L, "setsockopt", errno);
	if (connect(x->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		return clua_pusherror(L, "connect", errno);
	if (write(x->fd, setup, sizeof setup) != sizeof setup
	    || read_full(x->fd, head, sizeof head) != 0)
		return clua_pusherror(L, "X connection setup", EIO);
	len = (size_t)(head[6] | head[7] << 8) * 4;
	if (head[0] != 1 || len < 40)
		return clua_pusherror(L, "X server refused the connection", EACCES);
	body = malloc(len + 8);
	if (body == NULL || read_full(x->fd, body + 8, len) != 0) {
		free(body);
		return clua_pusherror(L, "X connection setup", EIO);
	}
	/* Offsets from the start of the reply (X11 protocol, connection setup). */
	x->next_id = get32(body + 12);
	vendor = body[24] | body[25] << 8;
	formats = body[29];
	x->root = get32(body + 40 + ((vendor + 3) & ~3u) + 8 * formats);
	free(body);
	return 1;
}

static int l_x_grab(lua_State *L)
{
	static const unsigned char req[4] = {36, 0, 1, 0};	/* GrabServer */

	return x_send(L, check_xclient(L), req, sizeof req);
}

static int l_x_ungrab(lua_State *L)
{
	static const unsigned char req[4] = {37, 0, 1, 0};	/* UngrabServer */

	return x_send(L, check_xclient(L), req, sizeof req);
}

static int l_x_map(lua_State *L)
{
	struct xclient *x = check_xclient(L);
	unsigned char req[40] = {0};
	uint32_t id = x->next_id++;

	req[0] = 1;			/* CreateWindow, depth CopyFromParent */
	put16(req + 2, 8);
	put32(req + 4, id);
	put32(req + 8, x->root);
	put16(req + 16, 100);		/* width */
	put16(req + 18, 100);		/* height */
	put16(req + 22, 1);		/* InputOutput; visual, mask 0 */
	req[32] = 8;			/* MapWindow */
	put16(req + 34, 2);
	put32(req + 36, id);
	return x_send(L, x, req, sizeof req);
}

static int l_x_close(lua_State *L)
{
	struct xclient *x = luaL_checkudata(L, 1, XCLIENT);

	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
	return 0;
}

static const luaL_Reg xclient_methods[] = {
	{"grab", l_x_grab},
	{"ungrab", l_x_ungrab},
	{"map", l_x_map},
	{"close", l_x_close},
	{NULL, NULL}
};

static const luaL_Reg xclient_meta[] = {
	{"__gc", l_x_close},
	{NULL, NULL}
};

static const luaL_Reg stall_funcs[] = {
	{"read_after", l_read_after},
	{"poll_once", l_poll_once},
	{"nanosleep_once", l_nanosleep_once},
	{"last_errno", l_last_errno},
	{"spin_c", l_spin_c},
	{"swallowing", l_swallowing},
	{"stop_me", l_stop_me},
	{"fork_coded", l_fork_coded},
	{"exit_coded", l_exit_coded},
	{"child_code", l_child_code},
	{"task", l_task},
	{"host_poll", l_host_poll},
	{"host_cwork", l_host_cwork},
	{"xclient", l_xclient},
	{NULL, NULL}
};

static const luaL_Reg testkit_funcs[] = {
	{"spawn", l_spawn},
	{"orphans", l_orphans},
	{"kill", l_kill},
	{"clock_step", l_clock_step},
	{"now", l_now},
	{"sleep", l_sleep},
	{"getpid", l_getpid},
	{"grandchild", l_grandchild},
	{"set_sigchld", l_set_sigchld},
	{"spawn_core", l_spawn_core},
	{"poll_readable", l_poll_readable},
	{"count_fds", l_count_fds},
	{"setenv", l_setenv},
	{"dgram_listen", l_dgram_listen},
	{"sigdisposition", l_sigdisposition},
	{"sigset", l_sigset},
	{"sigrtrange", l_sigrtrange},
	{"fds", l_fds},
	{"deadline", l_deadline},
	{"fork", l_fork},
	{"exit_now", l_exit_now},
	{"pipe", l_pipe},
	{"dup2", l_dup2},
	{"close", l_close},
	{"utf8", l_utf8},
	{NULL, NULL}
};

int luaopen_testkit(lua_State *L)
{
	clua_newclass(L, DGRAM, dgram_methods, dgram_meta);
	clua_newclass(L, XCLIENT, xclient_methods, xclient_meta);
	luaL_newlib(L, testkit_funcs);
	clua_register(L, stall_funcs);
	return 1;
}
