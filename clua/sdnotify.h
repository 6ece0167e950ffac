/*
 * sdnotify.h - the service-manager notification core shared by the Lua
 * module (notify.c) and watchoutput.  Plain C, no Lua.
 *
 * Results follow sd-daemon's shape: 1 sent, 0 no service manager
 * (NOTIFY_SOCKET unset), negative errno on failure.  Nothing here ever
 * waits: a manager that does not read its socket gives -EAGAIN.
 */
#ifndef CLUA_SDNOTIFY_H
#define CLUA_SDNOTIFY_H

#include <stddef.h>
#include <stdint.h>

/* systemd reads one datagram into a buffer of this size and drops a
 * longer one whole. */
#define CLUA_NOTIFY_MAX 4096

/* Sends state (KEY=VALUE lines) as one datagram to NOTIFY_SOCKET ("/path"
 * or "@abstract"), without blocking: -EAGAIN when the manager's queue is
 * full, -EAFNOSUPPORT for another scheme ("vsock:..."), -EINVAL for an
 * empty or relative address.  Never unsets the environment; safe from
 * several threads and in a forked child. */
int clua_sd_send(const char *state);

/* Whether state is one or more KEY=VALUE lines (KEY of A-Z, 0-9, _; an
 * optional final newline), len bytes, no NUL, no CR (systemd splits on
 * it too), at most CLUA_NOTIFY_MAX.
 * Returns NULL when it is, else a short reason. */
const char *clua_sd_state_invalid(const char *state, size_t len);

/* Writes to out (capacity cap > 0, always NUL-terminated) the text of in
 * made safe for one STATUS= value: every control character (C0, DEL, C1,
 * CR and LF included) becomes a space, each invalid UTF-8 byte (a
 * surrogate's too) becomes U+FFFD, so does each noncharacter (U+FDD0..
 * U+FDEF, U+xFFFE, U+xFFFF), which systemd refuses; and the result is
 * cut at a character boundary to fit.
 * Returns the length written. */
size_t clua_sd_sanitize(char *out, size_t cap, const char *in, size_t len);

/* sd_watchdog_enabled(0, ...) for this process: 1 and *usec set when a
 * watchdog is expected from this very process, 0 when not, negative errno
 * when the environment is malformed. */
int clua_sd_watchdog_usec(uint64_t *usec);

#endif
