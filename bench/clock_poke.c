/*
 * clock_poke.c - the setter of the clock-change latency benchmark (row 2).
 *
 *   build/bench/clock_poke N FILE [GAP_MS]
 *
 * N times: wait GAP_MS (default 20) so the watcher is blocked again, set
 * CLOCK_REALTIME to its own value (fires every TFD_TIMER_CANCEL_ON_SET
 * timer without moving the clock in any way that matters), take
 * CLOCK_MONOTONIC right after clock_settime() returned, then wait (up to
 * 2 s, with inotify) for the watcher to append a line to FILE holding the
 * CLOCK_MONOTONIC time, in seconds, at which its handler ran.  Prints
 * "latency_us X from_call_us Y [rest TEXT]" per change (Y: from just before
 * the call; TEXT: what followed the stamp on the watcher's line), or
 * "miss T0" when no line came.  A line stamped
 * before our clock_settime() was called came from somebody else's clock
 * change (the machine is shared) and is skipped.
 *
 * Exit status 3 with "error EPERM" when the clock may not be set (needs
 * root or CAP_SYS_TIME).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* What follows the stamp on the line next_stamp() last returned. */
static char rest[128];

/* The first stamp >= t0 in the lines FILE gained since *off (which is
 * advanced past every complete line read); 0 when there is none yet. */
static double next_stamp(FILE *f, long *off, double t0)
{
	char line[128], *end;

	clearerr(f);
	fseek(f, *off, SEEK_SET);
	while (fgets(line, sizeof(line), f)) {
		double t;

		if (!strchr(line, '\n'))
			break;	/* half-written: read it again next time */
		*off = ftell(f);
		t = strtod(line, &end);
		if (t >= t0) {
			end += strspn(end, " \t");
			end[strcspn(end, "\n")] = '\0';
			snprintf(rest, sizeof(rest), "%s", end);
			return t;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	long n, gap = 20, off;
	FILE *f;
	int in;

	if (argc < 3) {
		fprintf(stderr, "usage: clock_poke N FILE [GAP_MS]\n");
		return 2;
	}
	n = strtol(argv[1], NULL, 10);
	if (argc > 3)
		gap = strtol(argv[3], NULL, 10);
	f = fopen(argv[2], "re");
	in = inotify_init1(IN_CLOEXEC);
	if (!f || in < 0 || inotify_add_watch(in, argv[2], IN_MODIFY) < 0) {
		fprintf(stderr, "clock_poke: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	fseek(f, 0, SEEK_END);
	off = ftell(f);
	for (long i = 0; i < n; i++) {
		struct timespec now;
		double tb, t0, t1 = 0, deadline;
		char ev[4096];

		sleep_ms(gap);
		/* Whatever came meanwhile (other people's clock changes). */
		while (next_stamp(f, &off, 0) != 0)
			;
		/* The handler may run before clock_settime() even returns
		 * (the kernel wakes the watchers while it is still busy with
		 * the change): a stamp taken after tb counts, and its latency
		 * from t0 may come out negative. */
		tb = mono();
		clock_gettime(CLOCK_REALTIME, &now);
		if (clock_settime(CLOCK_REALTIME, &now) != 0) {
			printf("error %s\n", errno == EPERM ? "EPERM" : strerror(errno));
			return 3;
		}
		t0 = mono();
		deadline = t0 + 2;
		while ((t1 = next_stamp(f, &off, tb)) == 0 && mono() < deadline) {
			struct pollfd pfd = {in, POLLIN, 0};

			if (poll(&pfd, 1, 50) > 0)
				(void)!read(in, ev, sizeof(ev));
		}
		if (t1 == 0)
			printf("miss %.9f\n", t0);
		else
			printf("latency_us %.3f from_call_us %.3f%s%s\n",
			       (t1 - t0) * 1e6, (t1 - tb) * 1e6,
			       rest[0] ? " rest " : "", rest);
		fflush(stdout);
	}
	return 0;
}
