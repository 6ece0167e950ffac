/*
 * testkit.c - what the specs need from the system that plain Lua cannot do:
 * children that exit or die in a known way, orphans, clock steps.
 * Test scaffolding only; never installed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
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

/* grandchild(lifetime): forks a child that forks one grandchild living
 * `lifetime` seconds, then exits at once; reaps that child and returns the
 * grandchild's pid, now an orphan (adopted by a subreaper, or by init). */
static int l_grandchild(lua_State *L)
{
	double lifetime = luaL_optnumber(L, 1, 0);
	int fds[2], status;
	pid_t mid, gc = -1;

	if (pipe2(fds, O_CLOEXEC) != 0)
		return clua_pusherror(L, "pipe2", errno);
	mid = fork();
	if (mid < 0) {
		close(fds[0]);
		close(fds[1]);
		return clua_pusherror(L, "fork", errno);
	}
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
	luaL_newlib(L, testkit_funcs);
	return 1;
}
