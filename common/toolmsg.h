/*
 * toolmsg.h - the one-line messages the command-line programs in tools/
 * write on stderr ("PROG: message"), and the version they print.
 *
 * Header only, so that the module, which links every C file of common/,
 * does not carry it.
 */
#ifndef CLUA_TOOLMSG_H
#define CLUA_TOOLMSG_H

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#ifndef CLUA_VERSION
#define CLUA_VERSION "unknown"	/* built without the Makefile */
#endif

/* Writes "PROG: message\n" in a single write(2): the program's stderr is
 * often the same file as its child's, and one write never interleaves
 * with the child's lines (a line is at most 1024 bytes, less than
 * PIPE_BUF, so even a pipe takes it whole; a longer message is cut).
 * With only_if_room, the line is written only when stderr has room at
 * once (a stderr nobody reads must not block the caller), else lost. */
static inline void toolmsg_vsay(const char *prog, int only_if_room,
				const char *fmt, va_list ap)
{
	char line[1024];
	int n = snprintf(line, sizeof line, "%s: ", prog);

	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (only_if_room &&
	    poll(&(struct pollfd){ .fd = STDERR_FILENO, .events = POLLOUT }, 1, 0) != 1)
		return;
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}

#endif
