/*
 * timezone.c - follow a change of the local timezone (/etc/localtime).
 *
 * Changing the timezone (timedatectl set-timezone, travel, a laptop's
 * automatic zone) rewrites /etc/localtime and moves no clock, so the clock
 * watch rightly sees nothing. Two things go wrong in a process that was
 * already running; facts from glibc's time/tzset.c, time/tzfile.c and
 * inotify(7):
 *  - glibc loads the zone in tzset(), which localtime_r() (what Lua 5.3
 *    and 5.4's os.date call) runs only the first time, so os.date keeps the
 *    old zone until the process restarts. Calling tzset() is not enough
 *    either: it returns at once while TZ holds the string it loaded last
 *    (TZ=:/etc/localtime, or any file), and with TZ unset it reads
 *    /etc/localtime again only when the file's device, inode or mtime (in
 *    whole seconds) differ, missing a rewrite in place within the second.
 *    clua.tzset() sets TZ to another string, calls tzset() (which leaves
 *    the zone file behind), puts TZ back exactly as it was (unset, or its
 *    old value) and calls tzset() again, which then loads the file afresh.
 *  - nothing tells the process. An inotify watch does, without polling. It
 *    watches the folder, for the file's name: timedatectl renames a new
 *    symlink over the old one (IN_MOVED_TO), and a watch on the file itself
 *    would stay on the old, unlinked inode; other tools rewrite the file in
 *    place (IN_CLOSE_WRITE) or create it anew (IN_CREATE).
 * One change can bring several events and several wake-ups (a temporary
 * name created, then renamed; a file created empty, then written). The
 * watch reads them all, then looks at the file once, and reports a change
 * only when it holds a whole zone different from the last one reported: a
 * missing or half-written file is not a zone, and the event that completes
 * it comes next.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clua.h"
#include "util.h"

/***
 * Timezone changes: reload the zone, and a watch on `/etc/localtime`.
 * @submodule clua
 */

#define TIMEZONEWATCH_TNAME "clua.timezonewatch"
#define LOCALTIME "/etc/localtime"
#define ZONEINFO "/usr/share/zoneinfo/"

/* No deletion or move-away: a missing file is not reported (see above), so
 * waking up for one would be a wake-up for nothing. */
#define WATCH_MASK (IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR)

/* Larger than any zone file (a few KiB); a bigger file is not one. */
#define ZONE_MAX (1 << 20)

struct timezonewatch {
	int fd;			/* -1 once closed, or before inotify_init1 */
	size_t base;		/* offset of the file name in path */
	int has_zone;		/* zone and hash describe the last zone seen */
	uint64_t hash;		/* of the zone file's bytes */
	char path[PATH_MAX];
	char zone[PATH_MAX];
};

/* What the watched file holds: a zone's name and a hash of its bytes. */
struct zone {
	char name[PATH_MAX];
	uint64_t hash;
};

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The size of a TZif data block (RFC 8536, 3.2) after the header h, for
 * transition times of timesize bytes (4 in version 1, 8 after). */
static uint64_t block_size(const unsigned char *h, uint64_t timesize)
{
	uint64_t isut = be32(h + 20), isstd = be32(h + 24);
	uint64_t leap = be32(h + 28), times = be32(h + 32);
	uint64_t types = be32(h + 36), chars = be32(h + 40);

	return times * timesize + times + types * 6 + chars +
	       leap * (timesize + 4) + isstd + isut;
}

#define TZIF_HEADER 44

static int tzif_header(const unsigned char *buf, uint64_t len, uint64_t at)
{
	return len >= at + TZIF_HEADER && memcmp(buf + at, "TZif", 4) == 0 &&
	       be32(buf + at + 36) != 0;
}

/* Whether buf is a whole TZif file: every block present, and in version 2
 * and later the footer's TZ string with both its newlines. *footer is that
 * string (not NUL-terminated; length 0 in version 1). A file caught
 * half-written fails here. */
static int parse_tzif(const unsigned char *buf, uint64_t len,
		      const char **footer, size_t *footer_len)
{
	uint64_t end;
	const unsigned char *nl;

	*footer = NULL;
	*footer_len = 0;
	if (!tzif_header(buf, len, 0))
		return 0;
	end = TZIF_HEADER + block_size(buf, 4);
	if (end > len)
		return 0;
	if (buf[4] == '\0')
		return 1;
	if (!tzif_header(buf, len, end))
		return 0;
	end += TZIF_HEADER + block_size(buf + end, 8);
	if (end >= len || buf[end] != '\n')
		return 0;
	nl = memchr(buf + end + 1, '\n', len - end - 1);
	if (nl == NULL)
		return 0;
	*footer = (const char *)buf + end + 1;
	*footer_len = (size_t)(nl - (buf + end + 1));
	return 1;
}

/* FNV-1a: changes the zone report only, so no need for more. */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
	uint64_t h = 14695981039346656037ULL;

	while (n--) {
		h ^= *p++;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Reads the regular file at path (following a symlink) into *buf, which
 * the caller frees. Returns its length, or -1 when there is no regular file
 * that can be read there. O_NONBLOCK: a FIFO put there must not block the
 * main loop in open(). */
static ssize_t slurp(const char *path, unsigned char **buf)
{
	struct stat st;
	ssize_t len = 0, n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

	*buf = NULL;
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > ZONE_MAX ||
	    (*buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -1;
	}
	/* A writer may be shortening the file: what was read is checked. */
	while (len < st.st_size) {
		n = read(fd, *buf + len, (size_t)(st.st_size - len));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	return len;
}

/* Appends the path components of s to out (length *n, size PATH_MAX),
 * dropping empty ones and ".", and taking ".." as a step up. Lexical: a
 * symlink along the way is not followed. Returns 0 when it does not fit. */
static int add_components(char *out, size_t *n, const char *s)
{
	while (*s) {
		size_t len = strcspn(s, "/");

		if (len == 2 && s[0] == '.' && s[1] == '.') {
			while (*n > 0 && out[--*n] != '/')
				;
		} else if (len > 0 && !(len == 1 && s[0] == '.')) {
			if (*n + 1 + len >= PATH_MAX)
				return 0;
			out[(*n)++] = '/';
			memcpy(out + *n, s, len);
			*n += len;
		}
		s += len;
		while (*s == '/')
			s++;
	}
	out[*n] = '\0';
	return 1;
}

/* The zone name a symlink target gives: made absolute against the link's
 * folder and cleaned up (timedatectl writes "../usr/share/zoneinfo/X"),
 * then relative to /usr/share/zoneinfo when below it ("Asia/Tokyo"), else
 * the absolute path. Either is a valid TZ value. */
static int link_name(const struct timezonewatch *w, const char *target,
		     char *out)
{
	size_t n = 0;

	out[0] = '\0';
	if (target[0] != '/') {
		char dir[PATH_MAX];

		memcpy(dir, w->path, w->base);
		dir[w->base] = '\0';
		if (!add_components(out, &n, dir))
			return 0;
	}
	if (!add_components(out, &n, target))
		return 0;
	if (n == 0)
		strcpy(out, "/");
	else if (strncmp(out, ZONEINFO, strlen(ZONEINFO)) == 0)
		memmove(out, out + strlen(ZONEINFO), n - strlen(ZONEINFO) + 1);
	return 1;
}

/* Looks at the watched file. Returns 1 and fills z when it holds a whole
 * zone, 0 when it does not (missing, a dangling symlink, half-written,
 * unreadable). */
static int look(const struct timezonewatch *w, struct zone *z)
{
	struct stat st;
	unsigned char *buf;
	const char *footer;
	size_t footer_len;
	ssize_t len;
	int ok;

	if (lstat(w->path, &st) != 0)
		return 0;
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(w->path, target, sizeof target);

		if (n <= 0 || n >= (ssize_t)sizeof target)
			return 0;
		target[n] = '\0';
		if (!link_name(w, target, z->name))
			return 0;
	}
	len = slurp(w->path, &buf);
	if (len < 0)
		return 0;
	ok = parse_tzif(buf, (uint64_t)len, &footer, &footer_len);
	if (ok && !S_ISLNK(st.st_mode)) {
		/* A plain file names no zone: its TZ string is the exact rule
		 * ("JST-9"); a version 1 file has none, and is its path. */
		if (footer_len > 0 && footer_len < sizeof z->name) {
			memcpy(z->name, footer, footer_len);
			z->name[footer_len] = '\0';
		} else {
			strcpy(z->name, w->path);
		}
	}
	if (ok)
		z->hash = hash_bytes(buf, (size_t)len);
	free(buf);
	return ok;
}

/* The zone reported from now on (the baseline, or a change read). */
static void remember(struct timezonewatch *w, const struct zone *z)
{
	strcpy(w->zone, z->name);
	w->hash = z->hash;
	w->has_zone = 1;
}

static struct timezonewatch *check_timezonewatch(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, TIMEZONEWATCH_TNAME);
}

/* A watch a method may use: raises on a closed one. */
static struct timezonewatch *check_open_timezonewatch(lua_State *L, int idx)
{
	struct timezonewatch *w = check_timezonewatch(L, idx);

	if (w->fd < 0)
		luaL_argerror(L, idx, TIMEZONEWATCH_TNAME " is closed");
	return w;
}

/* The path argument: absolute, with a file name, no NUL, fits PATH_MAX. */
static const char *checkpath(lua_State *L, int arg, size_t *base)
{
	size_t len;
	const char *path, *slash;

	if (lua_isnoneornil(L, arg)) {
		*base = strlen("/etc/");
		return LOCALTIME;
	}
	path = clua_checklstring(L, arg, &len);
	if (strlen(path) != len)
		luaL_argerror(L, arg, "path contains a NUL byte");
	if (len >= PATH_MAX)
		luaL_argerror(L, arg, "path too long");
	if (path[0] != '/')
		luaL_argerror(L, arg, "absolute path expected");
	slash = strrchr(path, '/');
	if (slash[1] == '\0' || strcmp(slash + 1, ".") == 0 ||
	    strcmp(slash + 1, "..") == 0)
		luaL_argerror(L, arg, "path names no file");
	*base = (size_t)(slash + 1 - path);
	return path;
}

/***
 * Watch the local timezone file: an inotify fd, non-blocking and
 * close-on-exec, that turns readable when `/etc/localtime` (or `path`) is
 * replaced, created or rewritten. It watches the file's folder for the
 * file's name, so other files changing there wake it too (`read` then
 * returns nil); nothing else wakes it, and it never polls.
 *
 * Zone names: a symlink names the zone it points to, relative to
 * `/usr/share/zoneinfo` when below it (`"Asia/Tokyo"`), else as an absolute
 * path; a plain file is named by its POSIX TZ string (`"JST-9"`, the last
 * line of a TZif file), or by its path when it has none. Each is a valid
 * value of `TZ` and of `GLib.TimeZone.new`.
 * @function timezonewatch
 * @tparam[opt="/etc/localtime"] string path the file to watch, absolute
 * @treturn[1] timezonewatch
 * @return[2] nil, message, errno (ENOENT, ENOTDIR: no such folder)
 * @usage
 * local watch = assert(clua.timezonewatch())
 * print(watch:zone())   --> Europe/Paris
 * @see inotify(7)
 */
static int l_timezonewatch(lua_State *L)
{
	struct timezonewatch *w;
	struct zone z;
	size_t base;
	const char *path;

	clua_checknargs(L, 1);
	path = checkpath(L, 1, &base);
	/* The metatable goes on before the fd exists, with fd = -1, so the
	 * collector can finalise a watch whose creation failed half-way. */
	w = clua_newobject(L, sizeof *w, TIMEZONEWATCH_TNAME);
	w->fd = -1;
	strcpy(w->path, path);
	w->base = base;

	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0)
		return clua_pusherror(L, "inotify_init1", errno);
	/* The folder: cut the path at its last slash ("/" for "/x"). */
	w->path[base > 1 ? base - 1 : base] = '\0';
	if (inotify_add_watch(w->fd, w->path, WATCH_MASK) < 0) {
		int err = errno;
		clua_closefd(&w->fd);
		return clua_pusherror(L, "inotify_add_watch", err);
	}
	strcpy(w->path, path);
	/* The baseline after the watch exists: a change in between is then
	 * reported rather than missed. */
	if (look(w, &z))
		remember(w, &z);
	return 1;
}

/***
 * The watch's file descriptor, for a main loop to watch for readability.
 * @function timezonewatch:fd
 * @treturn integer
 * @usage
 * -- GLib (lgi): call watch:read() whenever the fd turns readable
 * GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, watch:fd(),
 *     GLib.IOCondition.IN, on_readable)
 */
static int l_fd(lua_State *L)
{
	struct timezonewatch *w = check_open_timezonewatch(L, 1);

	clua_checknargs(L, 1);
	lua_pushinteger(L, w->fd);
	return 1;
}

/***
 * The zone the file held when last looked at (at creation, then at each
 * change `read` reported).
 * @function timezonewatch:zone
 * @treturn[1] string its name
 * @treturn[2] nil when the file held no whole zone yet
 * @usage
 * local name = watch:zone()   -- "Asia/Tokyo", "JST-9"
 */
static int l_zone(lua_State *L)
{
	struct timezonewatch *w = check_open_timezonewatch(L, 1);

	clua_checknargs(L, 1);
	if (w->has_zone)
		lua_pushstring(L, w->zone);
	else
		lua_pushnil(L);
	return 1;
}

/* Reads every queued event. Returns 1 when one may concern the file (its
 * name, or an event without a name: queue overflow, watch gone), 0 when
 * none does, -errno on failure. */
static int drain(struct timezonewatch *w)
{
	char buf[4096]
		__attribute__((aligned(__alignof__(struct inotify_event))));
	const char *name = w->path + w->base;
	int relevant = 0;

	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof buf);
		const char *p;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return relevant;
		if (n < 0)
			return -errno;
		if (n == 0)
			return relevant;
		for (p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const void *)p;

			if (ev->len == 0 || strcmp(ev->name, name) == 0)
				relevant = 1;
			p += sizeof *ev + ev->len;
		}
	}
}

/* read() and wait() share this: nil, an event table, or an OS error. */
static int read_event(lua_State *L, void *ud)
{
	struct timezonewatch *w = ud;
	struct zone z;
	int r = drain(w);

	if (r < 0)
		return clua_pusherror(L, "read", -r);
	if (r == 0 || !look(w, &z) ||
	    (w->has_zone && z.hash == w->hash && strcmp(z.name, w->zone) == 0)) {
		lua_pushnil(L);
		return 1;
	}
	lua_createtable(L, 0, 2);
	if (w->has_zone) {
		lua_pushstring(L, w->zone);
		lua_setfield(L, -2, "old");
	}
	lua_pushstring(L, z.name);
	lua_setfield(L, -2, "new");
	remember(w, &z);
	return 1;
}

/***
 * Whether the zone changed since the previous event, draining the fd.
 * Several events of one change, or several changes since the last read,
 * are reported once. It does not reload the zone: call `clua.tzset()`
 * for that.
 * @function timezonewatch:read
 * @treturn[1] table `{old=, new=}`, the zone names before and after (`old`
 * is nil when the file held no whole zone before)
 * @treturn[2] nil when the zone has not changed (also when the file is
 * missing or half-written: the event that completes it comes next)
 * @return[3] nil, message, errno
 * @usage
 * local change = watch:read()
 * if change then
 *     clua.tzset()
 *     print(change.old, "->", change.new, os.date("%H:%M %Z"))
 * end
 * @see inotify(7)
 */
static int l_read(lua_State *L)
{
	struct timezonewatch *w = check_open_timezonewatch(L, 1);

	clua_checknargs(L, 1);
	return read_event(L, w);
}

/***
 * Blocks until the zone changes, for standalone scripts only: never call
 * it from inside a main loop (watch `w:fd()` there instead).
 * @function timezonewatch:wait
 * @tparam[opt] number timeout seconds (>= 0); none or `math.huge` waits
 * for ever
 * @treturn[1] table as `read` returns
 * @treturn[2] nil when the timeout passed first
 * @return[3] nil, message, errno (EINTR when a signal arrived)
 * @usage
 * local change = watch:wait(60)   -- nil after a minute without one
 * @see poll(2)
 */
static int l_wait(lua_State *L)
{
	struct timezonewatch *w = check_open_timezonewatch(L, 1);
	double timeout = clua_optnumber(L, 2, 0, 0, HUGE_VAL, HUGE_VAL);

	clua_checknargs(L, 2);
	return clua_wait_event(L, w->fd, timeout, read_event, w);
}

/***
 * Closes the watch; idempotent. `__gc` and (Lua 5.4) `__close` do the same.
 * Any other method on a closed watch raises an error.
 * @function timezonewatch:close
 * @treturn true
 * @usage
 * watch:close()
 */
static int l_close(lua_State *L)
{
	clua_checknargs(L, 1);
	clua_closefd(&check_timezonewatch(L, 1)->fd);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc and __close: no argument count check (__close gets the error too). */
static int m_close(lua_State *L)
{
	clua_closefd(&check_timezonewatch(L, 1)->fd);
	return 0;
}

static int m_tostring(lua_State *L)
{
	return clua_pushfdobject(L, TIMEZONEWATCH_TNAME,
				 check_timezonewatch(L, 1)->fd);
}

/***
 * Makes the C library load the local timezone again, so that `os.date`
 * (and everything else in the process using localtime) follows a change
 * of `/etc/localtime`, or of the file `TZ` names. glibc loads the zone
 * once (`os.date` never asks again), and tzset(3) alone does not load it
 * again while `TZ` is unchanged (with `TZ` unset: unless the file's inode
 * or mtime second changed). So this sets `TZ` to another value (`"UTC0"`),
 * calls tzset(), puts `TZ` back exactly as it was (unset again, or its old
 * value) and calls tzset() once more. `TZ` ends as it was; a `TZ` naming a
 * zone (`"Europe/Paris"`) still wins over `/etc/localtime`.
 *
 * Changing the environment is not thread-safe: another thread of the
 * process calling getenv() (or localtime(), or anything that reads `TZ`) at
 * that moment may see `TZ` missing or set to `"UTC0"`, or, when `TZ` was
 * unset, read the environment while setenv() moves it. Call it from the
 * main thread, where the rest of the program runs, not in a loop.
 * @function tzset
 * @treturn[1] true
 * @return[2] nil, message, errno (ENOMEM; `TZ` may then be left as
 * `"UTC0"`)
 * @usage
 * assert(clua.tzset())
 * print(os.date("%H:%M %Z"))   -- in the zone /etc/localtime holds now
 * @see tzset(3)
 */
static int l_tzset(lua_State *L)
{
	const char *tz;
	char *saved = NULL;
	int r, err;

	clua_checknargs(L, 0);
	tz = getenv("TZ");
	if (tz != NULL && (saved = strdup(tz)) == NULL)
		return clua_pusherror(L, "strdup", ENOMEM);
	/* Any string other than the current one will do. */
	if (setenv("TZ", saved && strcmp(saved, "UTC0") == 0 ? "UTC1" : "UTC0", 1) != 0) {
		err = errno;
		free(saved);
		return clua_pusherror(L, "setenv", err);
	}
	tzset();
	r = saved != NULL ? setenv("TZ", saved, 1) : unsetenv("TZ");
	err = errno;
	free(saved);
	tzset();
	if (r != 0)
		return clua_pusherror(L, "setenv", err);
	lua_pushboolean(L, 1);
	return 1;
}

static const luaL_Reg timezonewatch_methods[] = {
	{"fd", l_fd},
	{"zone", l_zone},
	{"read", l_read},
	{"wait", l_wait},
	{"close", l_close},
	{NULL, NULL}
};

static const luaL_Reg timezonewatch_meta[] = {
	{"__gc", m_close},
	{"__close", m_close},
	{"__tostring", m_tostring},
	{NULL, NULL}
};

static const luaL_Reg timezone_funcs[] = {
	{"timezonewatch", l_timezonewatch},
	{"tzset", l_tzset},
	{NULL, NULL}
};

void clua_open_timezone(lua_State *L)
{
	clua_newclass(L, TIMEZONEWATCH_TNAME, timezonewatch_methods,
		       timezonewatch_meta);
	clua_register(L, timezone_funcs);
}
