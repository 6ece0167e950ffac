/*
 * sdnotify.c - the service-manager notification datagram, sent without
 * ever blocking, and the validation and sanitising around it.
 *
 * libsystemd 252's sd_notify() sends on a blocking socket: once the
 * manager stops reading its notify socket, the socket's queue fills
 * (net.unix.max_dgram_qlen, 10 datagrams by default) and the next send
 * waits until the manager reads again, for ever if it never does.  Inside
 * a window manager that wait freezes the whole desktop.  So the datagram
 * is sent here, with MSG_DONTWAIT: a full queue is -EAGAIN at once.  The
 * rest of the protocol (sd_watchdog_enabled) stays libsystemd's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

#include "sdnotify.h"

/* ---- sending ------------------------------------------------------- */

/* Fills *sa from NOTIFY_SOCKET's value e, spelled as systemd spells it:
 * "/path" or "@name" (abstract: a leading NUL).  Returns the address
 * length, or -errno: other schemes ("vsock:...") are -EAFNOSUPPORT, an
 * empty or relative value -EINVAL, a name too long -ENAMETOOLONG. */
static int notify_address(const char *e, struct sockaddr_un *sa)
{
	size_t n = strlen(e);

	if (e[0] != '/' && e[0] != '@')
		return strchr(e, ':') != NULL ? -EAFNOSUPPORT : -EINVAL;
	if (n < 2)
		return -EINVAL;
	/* A path needs its terminating NUL inside sun_path; an abstract
	 * name is counted by the length and has none. */
	if (n > sizeof sa->sun_path || (e[0] == '/' && n == sizeof sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, e, n);
	if (e[0] == '@') {
		sa->sun_path[0] = '\0';
		return (int)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	return (int)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* One datagram to sa, never waiting.  Returns 1 or -errno. */
static int send_to(int fd, const char *state, const struct sockaddr_un *sa,
		   int salen)
{
	ssize_t n;

	do
		n = sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)sa, (socklen_t)salen);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : 1;
}

static int new_socket(void)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	return fd < 0 ? -errno : fd;
}

/*
 * The sending socket, opened once and kept: a heartbeat is then one
 * sendto(), where sd_notify() opens, tunes, sends and closes.  It is not
 * connected (the address goes with every datagram), so a changed
 * NOTIFY_SOCKET, or a manager that re-created its socket (daemon-reexec),
 * needs nothing re-opened.  Close-on-exec: Awesome exec's itself in place
 * to restart and closes nothing.
 *
 * A forked child shares the socket, which is harmless for datagrams.  But
 * a child may have closed every fd (daemons do) and got the same number
 * back for a file of its own: so after a fork (another pid), or after a
 * failed send, the fd is checked to still be this very socket, and a new
 * one is opened if not (the old number is then left alone: it is not
 * ours any more).
 *
 * The lock is only ever tried: while another thread sends, or in a child
 * forked while a thread held it, the datagram goes through a socket of
 * its own.  Nothing here ever waits.
 */
static struct {
	pthread_mutex_t lock;
	int fd;			/* -1 until the first send */
	pid_t pid;		/* the process that checked it last */
	dev_t dev;		/* what fstat() says of it, to know it again */
	ino_t ino;
} cache = { PTHREAD_MUTEX_INITIALIZER, -1, 0, 0, 0 };

/* Whether cache.fd is still the socket cache.dev/ino names. */
static int cache_is_ours(void)
{
	struct stat st;

	return fstat(cache.fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       st.st_dev == cache.dev && st.st_ino == cache.ino;
}

/* Opens the cached socket anew.  Returns its fd or -errno. */
static int cache_open(void)
{
	struct stat st;
	int fd = new_socket();

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	cache.fd = fd;
	cache.pid = getpid();
	cache.dev = st.st_dev;
	cache.ino = st.st_ino;
	return fd;
}

/* The cached socket, checked after a fork.  Called with the lock held. */
static int cache_socket(void)
{
	if (cache.fd >= 0 && cache.pid != getpid()) {
		if (!cache_is_ours())
			cache.fd = -1;
		cache.pid = getpid();
	}
	return cache.fd >= 0 ? cache.fd : cache_open();
}

/* Sends through a socket opened and closed for this one datagram. */
static int send_once(const char *state, const struct sockaddr_un *sa,
		     int salen)
{
	int fd = new_socket(), r;

	if (fd < 0)
		return fd;
	r = send_to(fd, state, sa, salen);
	close(fd);
	return r;
}

int clua_sd_send(const char *state)
{
	const char *e = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	int salen, fd, r;

	if (e == NULL)
		return 0;
	salen = notify_address(e, &sa);
	if (salen < 0)
		return salen;
	if (pthread_mutex_trylock(&cache.lock) != 0)
		return send_once(state, &sa, salen);
	fd = cache_socket();
	r = fd < 0 ? fd : send_to(fd, state, &sa, salen);
	/* A full queue or a missing manager says nothing about our socket;
	 * anything else may mean the fd is no longer ours: check, and try
	 * once more on a fresh socket. */
	if (r < 0 && r != -EAGAIN && r != -ENOENT && r != -ECONNREFUSED &&
	    fd >= 0 && !cache_is_ours()) {
		cache.fd = -1;
		fd = cache_open();
		r = fd < 0 ? fd : send_to(fd, state, &sa, salen);
	}
	pthread_mutex_unlock(&cache.lock);
	return r;
}

/* ---- what may be sent ---------------------------------------------- */

static int is_key_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

const char *clua_sd_state_invalid(const char *state, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return "empty state";
	if (len > CLUA_NOTIFY_MAX)
		return "state longer than 4096 bytes";
	if (memchr(state, '\0', len) != NULL)
		return "state contains a NUL byte";
	/* systemd splits a message on CR as well as LF: a CR inside a value
	 * would start another assignment unseen by the line check below. */
	if (memchr(state, '\r', len) != NULL)
		return "state contains a carriage return";
	while (i < len) {
		size_t key = i;
		while (i < len && is_key_char((unsigned char)state[i]))
			i++;
		if (i == key || i == len || state[i] != '=')
			return "each line must be KEY=VALUE (KEY of A-Z, 0-9, _)";
		while (i < len && state[i] != '\n')
			i++;
		if (i < len)
			i++;	/* past '\n'; a final newline ends the text */
	}
	return NULL;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), 0 if
 * none; its code point in *cp.  Rejects overlong forms, surrogates and
 * code points past U+10FFFF. */
static size_t utf8_sequence(const unsigned char *s, size_t n,
			    unsigned long *cp)
{
	size_t need, i;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		need = 2, *cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		need = 3, *cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		need = 4, *cp = s[0] & 0x07;
	else
		return 0;
	if (need > n)
		return 0;
	for (i = 1; i < need; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (s[i] & 0x3F);
	}
	if ((need == 3 && *cp < 0x800) || (need == 4 && *cp < 0x10000) ||
	    (*cp >= 0xD800 && *cp <= 0xDFFF) || *cp > 0x10FFFF)
		return 0;
	return need;
}

/* Unicode's noncharacters: U+FDD0..U+FDEF and the last two code points
 * of every plane.  systemd's UTF-8 check refuses them (with surrogates)
 * and then drops the whole STATUS=, so one odd character in a wrapped
 * program's output would silently stop every status update. */
static int is_noncharacter(unsigned long cp)
{
	return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

size_t clua_sd_sanitize(char *out, size_t cap, const char *in, size_t len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, i = 0;

	while (i < len) {
		unsigned long cp = 0;
		const char *piece = (const char *)s + i;
		size_t n = utf8_sequence(s + i, len - i, &cp), take = n;

		if (n == 0) {
			piece = replacement, take = 3, n = 1;	/* per byte */
		} else if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) {
			piece = " ", take = 1;	/* C0, DEL, C1 */
		} else if (is_noncharacter(cp)) {
			piece = replacement, take = 3;	/* the whole sequence */
		}
		if (o + take >= cap)
			break;
		memcpy(out + o, piece, take);
		o += take;
		i += n;
	}
	out[o] = '\0';
	return o;
}

/* ---- the watchdog -------------------------------------------------- */

int clua_sd_watchdog_usec(uint64_t *usec)
{
	return sd_watchdog_enabled(0, usec);
}
