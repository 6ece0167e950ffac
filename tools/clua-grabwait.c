/*
 * clua-grabwait - wait until another X client holds the keyboard.
 *
 *   clua-grabwait SECONDS
 *
 * A screen locker shows itself as locked only once it holds the keyboard
 * grab (i3lock, slock, xsecurelock, xtrlock all grab it first, and give
 * up when they cannot): "the keyboard is grabbed" is the one sign of a
 * locked screen that every X locker gives, whatever its own protocol.
 * clua.awesome runs this before it lets a suspend go on.
 *
 * How: grab the keyboard on the root window.  AlreadyGrabbed (or Frozen:
 * another client froze it with a synchronous grab) means someone else
 * holds it: exit 0.  Success means nobody does: let go at once and try
 * again INTERVAL_MS later, until SECONDS have passed.  Our own grab lasts
 * one request: a locker grabbing in that instant fails once and, as they
 * all do, tries again.
 *
 * Exit status: 0 another client holds the keyboard; 1 nobody did within
 * SECONDS (0: one try); 2 usage error; 3 the X display cannot be reached,
 * or the connection broke.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xcb/xcb.h>

#include "toolmsg.h"

enum {
	EXIT_GRABBED = 0,
	EXIT_TIMEOUT = 1,
	EXIT_USAGE = 2,
	EXIT_DISPLAY = 3,
	INTERVAL_MS = 50,
};

/* A day: beyond that the argument is surely a mistake. */
#define MAX_SECONDS 86400.0

/* One line on stderr, "clua-grabwait: ...". */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	toolmsg_vsay("clua-grabwait", 0, fmt, ap);
	va_end(ap);
}

static void usage(FILE *to)
{
	fprintf(to,
		"Usage: clua-grabwait SECONDS\n"
		"Wait until another X client holds the keyboard grab (a screen\n"
		"locker that is locked), at most SECONDS (0: one try).\n"
		"Exit status: 0 grabbed by another client, 1 not within SECONDS,\n"
		"2 usage error, 3 no X display.\n");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sleeps `seconds`, through signals that interrupt it. */
static void pause_for(double seconds)
{
	struct timespec ts = {
		.tv_sec = (time_t)seconds,
		.tv_nsec = (long)((seconds - (time_t)seconds) * 1e9),
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* SECONDS: a finite number from 0 to MAX_SECONDS, nothing after it. */
static int parse_seconds(const char *arg, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (end == arg || *end != '\0' || errno || !isfinite(v) || v < 0 || v > MAX_SECONDS)
		return -1;
	*out = v;
	return 0;
}

/* One try.  Returns 1 when another client holds the keyboard, 0 when not
 * (our grab, if it succeeded, is already let go), -1 when the connection
 * broke. */
static int held_by_other(xcb_connection_t *c, xcb_window_t root)
{
	xcb_grab_keyboard_reply_t *r;
	int status;

	r = xcb_grab_keyboard_reply(c, xcb_grab_keyboard(c, 0, root, XCB_CURRENT_TIME,
							   XCB_GRAB_MODE_ASYNC,
							   XCB_GRAB_MODE_ASYNC), NULL);
	if (!r)
		return -1;
	status = r->status;
	free(r);
	if (status == XCB_GRAB_STATUS_SUCCESS) {
		xcb_ungrab_keyboard(c, XCB_CURRENT_TIME);
		if (xcb_flush(c) <= 0)
			return -1;
	}
	return status == XCB_GRAB_STATUS_ALREADY_GRABBED || status == XCB_GRAB_STATUS_FROZEN;
}

/* The root window of the display's default screen, or 0. */
static xcb_window_t default_root(xcb_connection_t *c, int screen)
{
	xcb_screen_iterator_t it = xcb_setup_roots_iterator(xcb_get_setup(c));

	for (; it.rem; xcb_screen_next(&it), screen--)
		if (screen == 0)
			return it.data->root;
	return 0;
}

static int wait_for_grab(xcb_connection_t *c, xcb_window_t root, double limit)
{
	double deadline = now() + limit;

	for (;;) {
		double left;

		switch (held_by_other(c, root)) {
		case 1:
			return EXIT_GRABBED;
		case -1:
			say("the connection to the X display broke");
			return EXIT_DISPLAY;
		}
		left = deadline - now();
		if (left <= 0)
			return EXIT_TIMEOUT;
		pause_for(left < INTERVAL_MS / 1e3 ? left : INTERVAL_MS / 1e3);
	}
}

int main(int argc, char **argv)
{
	xcb_connection_t *c;
	xcb_window_t root;
	double limit;
	int screen = 0, status;

	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("clua-grabwait %s\n", CLUA_VERSION);
		return 0;
	}
	if (argc != 2 || parse_seconds(argv[1], &limit) < 0) {
		if (argc == 2)
			say("bad SECONDS \"%.40s\": a number from 0 to %g expected", argv[1],
			    MAX_SECONDS);
		else
			say("one argument expected, SECONDS (--help)");
		return EXIT_USAGE;
	}
	c = xcb_connect(NULL, &screen);
	if (xcb_connection_has_error(c)) {
		const char *display = getenv("DISPLAY");

		say("cannot open the X display \"%.40s\"", display ? display : "");
		xcb_disconnect(c);
		return EXIT_DISPLAY;
	}
	root = default_root(c, screen);
	if (!root) {
		say("the X display has no screen %d", screen);
		xcb_disconnect(c);
		return EXIT_DISPLAY;
	}
	status = wait_for_grab(c, root, limit);
	xcb_disconnect(c);
	return status;
}
