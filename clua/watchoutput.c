/*
 * watchoutput - run a command and feed systemd's watchdog while it prints.
 *
 *   watchoutput [OPTIONS] [--] COMMAND [ARG...]
 *
 * Some daemons hang on the network now and then and never notice, but
 * print steadily while they are healthy.  Run under a Type=notify unit with
 * WatchdogSec=, watchoutput relays every byte of the command's output
 * unchanged and sends WATCHDOG=1 when output arrives (a few times per
 * watchdog interval at most); once the command falls silent the pings stop
 * and systemd kills and restarts the unit.
 *
 * Shape (after tini): signals are blocked at start and read from a
 * signalfd in the same poll() set as the child's pipes, so the whole
 * program is one synchronous loop.  While the child is silent the loop
 * sleeps in poll() with no timeout: zero wakeups.
 *
 * Exit status: the child's code; 128+N when it was killed by signal N;
 * 127 command not found; 126 not executable; 2 usage error; 1 for a
 * failure of watchoutput itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sdnotify.h"

#ifndef WATCHOUTPUT_VERSION
#define WATCHOUTPUT_VERSION "unknown"
#endif

/* ---- logging ------------------------------------------------------- */

/* One line on stderr, "watchoutput: ...", written with a single write()
 * so it never interleaves with the child's relayed stderr. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[1024];
	int n = snprintf(line, sizeof line, "watchoutput: ");
	va_list ap;

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}

#define LOG_ERRNO(call) say("%s: %s", (call), strerror(errno))

/* ---- constants and usage ------------------------------------------- */

enum {
	EXIT_FAIL = 1,		/* watchoutput itself failed */
	EXIT_USAGE = 2,
	EXIT_NOEXEC = 126,
	EXIT_NOTFOUND = 127,
	MAX_SIGNAL = 64,
	RELAY_CHUNK = 65536,	/* one default pipe's worth, for read() */
	SPLICE_CHUNK = 1 << 20,	/* splice() moves page references, not bytes */
	SPLICE_BURST = 16,	/* splices per wakeup, so signals still come */
	PIPE_SIZE = 1 << 20,	/* the child's pipes: fewer wakeups in bulk */
	STATUS_LINE_MAX = 256,	/* of the child's last line, in STATUS= */
};

static const char usage_text[] =
	"Usage: watchoutput [OPTIONS] [--] COMMAND [ARG...]\n"
	"\n"
	"Run COMMAND and send systemd's watchdog a heartbeat (WATCHDOG=1)\n"
	"whenever it writes output; relay that output unchanged.  Meant for a\n"
	"Type=notify unit with WatchdogSec=: once COMMAND falls silent, systemd\n"
	"kills and restarts the unit.\n"
	"\n"
	"Options (they end at the first non-option):\n"
	"  --retry-on-exit CODES    run COMMAND again when it exits with one of\n"
	"                           CODES (comma-separated; -N: killed by\n"
	"                           signal N)\n"
	"  --wait-before-retry SEC  wait SEC seconds before a retry (default 1)\n"
	"  --max-retries N          retry at most N times (default 1000)\n"
	"  --ignore-stderr          pass stderr through untouched; it is no\n"
	"                           heartbeat\n"
	"  -h, --help               show this help\n"
	"  -V, --version            show the version\n"
	"\n"
	"Exit status: COMMAND's own; 128+N when it was killed by signal N;\n"
	"127 COMMAND not found; 126 not executable; 2 usage error.\n";

/* Signals passed on to the child; the signalfd takes these and SIGCHLD. */
static const int forwarded[] = {
	SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
};

/* The environment the child must not see: it is not the main process of
 * the unit, and a second pinger would defeat the watchdog. */
static const char *const scrubbed_env[] = {
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
};

/* ---- state --------------------------------------------------------- */

struct options {
	bool retry_code[256];		/* exit codes that trigger a retry */
	bool retry_signal[MAX_SIGNAL + 1];	/* deaths by signal that do */
	double wait_before_retry;	/* seconds */
	long max_retries;
	bool ignore_stderr;
	char **command;			/* NULL-terminated argv */
};

/* One relayed stream: the child's end of a pipe and where it goes. */
struct stream {
	int from;		/* read end of the child's pipe, -1 once at EOF */
	int to;			/* our own stdout or stderr */
	ssize_t capacity;	/* of the pipe: the most a drain reads */
};

struct run {
	const struct options *opt;
	pid_t pid;			/* the running child, 0 between runs */
	int status;			/* its wait status once reaped */
	int sigfd;
	struct stream out, err;
	bool splice_ok;			/* splice(2) to stdout works */
	int stop_signal;		/* a terminating signal forwarded, or 0 */

	/* heartbeat and status */
	bool notify;			/* NOTIFY_SOCKET is set */
	uint64_t watchdog_usec;		/* 0: no watchdog for us */
	uint64_t gap_usec;		/* least time between two messages */
	uint64_t next_send;		/* monotonic usec: earliest next one */
	bool pending;			/* output arrived since the last one */
	bool line_fresh;		/* `line` was taken after the last one */
	char line[STATUS_LINE_MAX];	/* last line of output seen */
	size_t line_len;
	char buf[RELAY_CHUNK];
};

/* ---- option parsing ------------------------------------------------ */

/* strtol with the checks atoi lacks: the whole text, in [min, max]. */
static bool parse_long(const char *text, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* "2,-9,3": exit codes 0-255, or -N for "killed by signal N". */
static bool parse_codes(const char *text, struct options *opt)
{
	char copy[1024], *save = NULL, *item;

	if (strlen(text) >= sizeof copy || text[0] == '\0')
		return false;
	strcpy(copy, text);
	if (copy[strlen(copy) - 1] == ',' || strstr(copy, ",,") || copy[0] == ',')
		return false;
	for (item = strtok_r(copy, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		long v;

		if (!parse_long(item, -MAX_SIGNAL, 255, &v))
			return false;
		if (v < 0)
			opt->retry_signal[-v] = true;
		else if (item[0] == '-')
			return false;	/* "-0" is no signal */
		else
			opt->retry_code[v] = true;
	}
	return true;
}

static bool parse_seconds(const char *text, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(v) ||
	    v < 0 || v > 86400.0 * 365)
		return false;
	*out = v;
	return true;
}

/* Returns -1 to go on, else the exit status (0 after --help). */
static int parse_options(int argc, char **argv, struct options *opt)
{
	enum { OPT_RETRY = 256, OPT_WAIT, OPT_MAX, OPT_IGNORE };
	static const struct option longopts[] = {
		{ "retry-on-exit", required_argument, NULL, OPT_RETRY },
		{ "wait-before-retry", required_argument, NULL, OPT_WAIT },
		{ "max-retries", required_argument, NULL, OPT_MAX },
		{ "ignore-stderr", no_argument, NULL, OPT_IGNORE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opt->wait_before_retry = 1.0;
	opt->max_retries = 1000;
	opterr = 0;	/* our own one-line messages instead of getopt's */
	/* "+": stop at the first non-option, so `watchoutput ls -h` runs
	 * `ls -h` rather than printing our help. */
	while ((c = getopt_long(argc, argv, "+:hV", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_RETRY:
			if (!parse_codes(optarg, opt)) {
				say("--retry-on-exit: '%s' is not a list of exit codes (e.g. 2,-9)",
				    optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_WAIT:
			if (!parse_seconds(optarg, &opt->wait_before_retry)) {
				say("--wait-before-retry: '%s' is not a number of seconds",
				    optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_MAX:
			if (!parse_long(optarg, 0, LONG_MAX, &opt->max_retries)) {
				say("--max-retries: '%s' is not a count", optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_IGNORE:
			opt->ignore_stderr = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("watchoutput %s\n", WATCHOUTPUT_VERSION);
			return 0;
		case ':':
			say("option %s needs a value (see --help)", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			if (optopt)
				say("unknown option -%c (see --help)", optopt);
			else
				say("unknown option %s (see --help)", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		say("no command given (see --help)");
		return EXIT_USAGE;
	}
	opt->command = argv + optind;
	return -1;
}

/* ---- time ---------------------------------------------------------- */

/* CLOCK_MONOTONIC in microseconds: a vDSO call, no system call. */
static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- file descriptors and signals ---------------------------------- */

/* A closed stdin, stdout or stderr at start would let pipe2() hand out
 * fd 1 or 2, and the child would lose its output at exec: fill the gaps
 * with /dev/null (without O_CLOEXEC: they are the child's too). */
static int open_std_fds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= STDERR_FILENO)
		;
	if (fd < 0) {
		LOG_ERRNO("open /dev/null");
		return -1;
	}
	close(fd);
	return 0;
}

/* Blocks the signals we take synchronously and opens their signalfd.
 * A signal ignored when we start (SIGHUP under nohup, SIGINT and SIGQUIT
 * in a shell's background job) stays ignored, for us and the child: the
 * kernel drops it, so it is never forwarded.
 * SIGPIPE is blocked too (not read): a vanished reader of our stdout
 * shows up as EPIPE from write().  *old receives the mask to restore in
 * the child. */
static int block_signals(sigset_t *old)
{
	sigset_t set;
	size_t i;
	int fd;

	sigemptyset(&set);
	for (i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(&set, forwarded[i]);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &set, old) < 0) {
		LOG_ERRNO("sigprocmask");
		return -1;
	}
	sigdelset(&set, SIGPIPE);
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		LOG_ERRNO("signalfd");
	return fd;
}

/* ---- the child ----------------------------------------------------- */

/* Runs in the forked child: never returns.  Reports an exec failure to
 * the parent as an errno on errfd (close-on-exec, so success is EOF). */
static void exec_child(struct run *r, const sigset_t *mask, pid_t parent,
		       int outw, int errw, int errfd)
{
	const struct options *opt = r->opt;
	int e;
	size_t i;

	/* Die with watchoutput, even by SIGKILL; if it already died between
	 * fork() and prctl(), the signal was missed: check by hand. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(EXIT_FAIL);
	if (dup2(outw, STDOUT_FILENO) < 0 ||
	    (!opt->ignore_stderr && dup2(errw, STDERR_FILENO) < 0))
		goto fail;
	for (i = 0; i < sizeof scrubbed_env / sizeof scrubbed_env[0]; i++)
		unsetenv(scrubbed_env[i]);
	if (sigprocmask(SIG_SETMASK, mask, NULL) < 0)
		goto fail;
	execvp(opt->command[0], opt->command);
fail:
	e = errno;
	if (write(errfd, &e, sizeof e) < 0) {
		/* the parent sees EOF and a failed child either way */
	}
	_exit(EXIT_NOTFOUND);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Starts the command.  Returns 0 when it runs, else the exit status
 * (127, 126 or 1) after a one-line message. */
static int spawn(struct run *r, const sigset_t *mask)
{
	int outp[2], errp[2] = { -1, -1 }, exe[2], e = 0;
	pid_t parent = getpid();
	ssize_t n;

	if (pipe2(outp, O_CLOEXEC) < 0 ||
	    (!r->opt->ignore_stderr && pipe2(errp, O_CLOEXEC) < 0) ||
	    pipe2(exe, O_CLOEXEC) < 0) {
		LOG_ERRNO("pipe2");
		return EXIT_FAIL;
	}
	/* Best effort: a bigger pipe lets a bulk writer run longer between
	 * our reads; pipe-max-size or the user's pipe quota may refuse. */
	fcntl(outp[0], F_SETPIPE_SZ, PIPE_SIZE);
	r->out.capacity = fcntl(outp[0], F_GETPIPE_SZ);
	if (errp[0] >= 0) {
		fcntl(errp[0], F_SETPIPE_SZ, PIPE_SIZE);
		r->err.capacity = fcntl(errp[0], F_GETPIPE_SZ);
	}
	r->pid = fork();
	if (r->pid < 0) {
		LOG_ERRNO("fork");
		return EXIT_FAIL;
	}
	if (r->pid == 0)
		exec_child(r, mask, parent, outp[1], errp[1], exe[1]);

	close(outp[1]);
	if (errp[1] >= 0)
		close(errp[1]);
	close(exe[1]);
	/* EOF: exec succeeded (the pipe closed on exec); else its errno. */
	do
		n = read(exe[0], &e, sizeof e);
	while (n < 0 && errno == EINTR);
	close(exe[0]);
	r->out.from = outp[0];
	r->err.from = errp[0];
	if (n == (ssize_t)sizeof e) {
		waitpid(r->pid, NULL, 0);
		r->pid = 0;
		say("cannot run %s: %s", r->opt->command[0], strerror(e));
		return e == ENOENT || e == ENOTDIR ? EXIT_NOTFOUND : EXIT_NOEXEC;
	}
	/* Non-blocking, so draining after the child's exit stops at "empty"
	 * even when a grandchild still holds the pipe open. */
	if (set_nonblock(r->out.from) < 0 ||
	    (r->err.from >= 0 && set_nonblock(r->err.from) < 0)) {
		LOG_ERRNO("fcntl");
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- heartbeat and status ----------------------------------------- */

/* Keeps the last non-empty line of a chunk of output for STATUS=. */
static void take_line(struct run *r, const char *data, size_t len)
{
	size_t end = len, start;

	while (end > 0 && (data[end - 1] == '\n' || data[end - 1] == '\r'))
		end--;
	if (end == 0)
		return;
	start = end;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	r->line_len = end - start < sizeof r->line ? end - start : sizeof r->line;
	memcpy(r->line, data + start, r->line_len);
	r->line_fresh = true;
}

/* Sends `first` (READY=1, WATCHDOG=1 or nothing) and STATUS= made of a
 * format; the whole status, command name included, is sanitised, so no
 * output of the child can inject an assignment. */
static void send_state(const char *first, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void send_state(const char *first, const char *fmt, ...)
{
	static bool reported;
	char raw[1024], safe[1024], msg[CLUA_NOTIFY_MAX];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	clua_sd_sanitize(safe, sizeof safe, raw, strlen(raw));
	snprintf(msg, sizeof msg, "%sSTATUS=%s", first, safe);
	rc = clua_sd_send(msg);
	if (rc < 0 && !reported) {	/* once: the child's output goes on */
		say("sd_notify: %s", strerror(-rc));
		reported = true;
	}
}

/* "offlineimap (pid 42): <its last line>" */
static void send_running(struct run *r, const char *first)
{
	send_state(first, "%s (pid %ld)%s%.*s", r->opt->command[0],
		   (long)r->pid, r->line_len ? ": " : "", (int)r->line_len,
		   r->line);
}

static void heartbeat(struct run *r, uint64_t now)
{
	send_running(r, r->watchdog_usec ? "WATCHDOG=1\n" : "");
	r->pending = false;
	r->line_fresh = false;
	r->next_send = now + r->gap_usec;
}

/* Output arrived: ping now, or once the rate limit allows. */
static void output_seen(struct run *r)
{
	uint64_t now;

	if (!r->notify)
		return;
	now = now_usec();
	if (now >= r->next_send)
		heartbeat(r, now);
	else
		r->pending = true;
}

/* poll()'s timeout: none at all unless a rate-limited ping waits. */
static int poll_timeout(struct run *r)
{
	uint64_t now;

	if (!r->pending)
		return -1;
	now = now_usec();
	if (now >= r->next_send) {
		heartbeat(r, now);
		return -1;
	}
	return (int)((r->next_send - now + 999) / 1000);
}

/* ---- relaying ------------------------------------------------------ */

/* Our stdout or stderr failed (its reader is gone: EPIPE).  The child's
 * pipe is then closed, so the child sees what it would see without us:
 * SIGPIPE or EPIPE at its next write. */
static void destination_failed(struct stream *s)
{
	say("write to %s: %s; closing the command's %s",
	    s->to == STDOUT_FILENO ? "stdout" : "stderr", strerror(errno),
	    s->to == STDOUT_FILENO ? "stdout" : "stderr");
}

static bool write_all(struct stream *s, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(s->to, data, len);

		if (n > 0) {
			data += n, len -= n;
		} else if (n < 0 && errno == EAGAIN) {
			/* someone made our stdout non-blocking */
			struct pollfd p = { .fd = s->to, .events = POLLOUT };
			poll(&p, 1, -1);
		} else if (n < 0 && errno != EINTR) {
			destination_failed(s);
			return false;
		}
	}
	return true;
}

/* Moves pipe pages from the child's pipe to stdout with splice(2), not
 * copying them through us.  poll() said the pipe is readable, so the
 * first call waits only for the reader of stdout; while data keeps
 * coming, up to SPLICE_BURST more calls follow without a poll() between.
 * All are non-blocking (the kernel makes a pipe-to-pipe splice so anyway
 * when either end is O_NONBLOCK, and ours is).  Returns the bytes moved,
 * 0 at EOF, -1 when nothing moved, -2 when splice does not work here (the
 * caller reads instead). */
static ssize_t splice_burst(struct run *r, struct stream *s)
{
	ssize_t total = 0;
	bool waited = false;
	int i = 0;

	while (i < SPLICE_BURST) {
		ssize_t n = splice(s->from, NULL, s->to, NULL, SPLICE_CHUNK,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

		if (n > 0) {
			total += n, i++;
		} else if (n == 0) {
			return total;	/* EOF; poll() shows it again if total > 0 */
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN && (i > 0 || waited)) {
			break;		/* drained for now */
		} else if (errno == EAGAIN) {
			/* The pipe is readable, so stdout is full: wait for
			 * room, once (a second EAGAIN goes back to poll()). */
			struct pollfd p = { .fd = s->to, .events = POLLOUT };
			poll(&p, 1, -1);
			waited = true;
		} else if (errno == EPIPE) {
			destination_failed(s);
			return 0;	/* closes the child's pipe */
		} else {
			/* EINVAL: stdout is a file opened O_APPEND, ... */
			r->splice_ok = false;
			return total ? total : -2;
		}
	}
	return total ? total : -1;
}

/* Moves output from the child's pipe to its destination.  Returns the
 * bytes moved, 0 at EOF (or when the destination failed), -1 when the
 * pipe is empty (EAGAIN). */
static ssize_t relay_once(struct run *r, struct stream *s, bool may_splice)
{
	ssize_t n;

	/* Spliced bytes are never seen, so a chunk is read instead whenever
	 * STATUS= wants a fresh line. */
	if (may_splice && s->to == STDOUT_FILENO && r->splice_ok &&
	    (!r->notify || r->line_fresh)) {
		n = splice_burst(r, s);
		if (n != -2)
			return n;
	}
	do
		n = read(s->from, r->buf, sizeof r->buf);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -1 : 0;	/* an error ends it like EOF */
	if (n > 0) {
		take_line(r, r->buf, n);
		if (!write_all(s, r->buf, n))
			return 0;	/* closes the child's pipe */
	}
	return n;
}

static void close_stream(struct stream *s)
{
	if (s->from >= 0)
		close(s->from);
	s->from = -1;
}

/* The pipe is readable: relay one chunk.  EOF while the child lives is
 * silence: the fd leaves the poll set, so nothing spins. */
static void relay(struct run *r, struct stream *s)
{
	ssize_t n = relay_once(r, s, true);

	if (n == 0)
		close_stream(s);
	else if (n > 0)
		output_seen(r);
}

/* After the child's exit everything it wrote is already in the pipe,
 * at most its capacity: read that, until empty or EOF, never waiting and
 * never more (a grandchild may hold the pipe open, or keep writing). */
static void drain(struct run *r, struct stream *s)
{
	ssize_t left = s->capacity > 0 ? s->capacity : RELAY_CHUNK;

	while (s->from >= 0 && left > 0) {
		ssize_t n = relay_once(r, s, false);

		if (n <= 0)
			break;
		left -= n;
	}
	close_stream(s);
}

/* ---- the loop ------------------------------------------------------ */

/* Reads the signalfd: forwards signals, reaps the child.  Returns true
 * once the child has exited. */
static bool take_signals(struct run *r)
{
	struct signalfd_siginfo si;
	bool exited = false;

	while (read(r->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		int sig = (int)si.ssi_signo;

		if (sig == SIGCHLD) {
			if (waitpid(r->pid, &r->status, WNOHANG) == r->pid)
				exited = true;
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT ||
		    sig == SIGHUP)
			r->stop_signal = sig;	/* no retry after this */
		/* Once reaped, the pid may belong to someone else. */
		if (!exited && kill(r->pid, sig) < 0 && errno != ESRCH)
			LOG_ERRNO("kill");
	}
	return exited;
}

/* Relays until the child exits, then drains its pipes. */
static int supervise(struct run *r)
{
	for (;;) {
		struct pollfd p[3] = {
			{ .fd = r->sigfd, .events = POLLIN },
			{ .fd = r->out.from, .events = POLLIN },
			{ .fd = r->err.from, .events = POLLIN },
		};
		int n = poll(p, 3, poll_timeout(r));	/* fd -1 is skipped */

		if (n < 0 && errno != EINTR) {
			LOG_ERRNO("poll");
			return -1;
		}
		if (n <= 0)
			continue;
		if (p[1].revents)
			relay(r, &r->out);
		if (p[2].revents)
			relay(r, &r->err);
		if (p[0].revents && take_signals(r))
			break;
	}
	drain(r, &r->out);
	drain(r, &r->err);
	if (r->pending)
		heartbeat(r, now_usec());
	return 0;
}

/* Ends watchoutput by signal sig when that is a clean end in systemd's
 * eyes (SIGTERM, SIGINT, SIGHUP: `systemctl stop` sends SIGTERM to the
 * whole unit, and an exit code of 143 would leave it "failed"); a shell
 * sees 128+sig either way.  Otherwise, or if still alive, returns
 * 128+sig. */
static int die_by(int sig)
{
	sigset_t set;

	if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
		signal(sig, SIG_DFL);
		sigemptyset(&set);
		sigaddset(&set, sig);
		raise(sig);	/* pending while blocked */
		sigprocmask(SIG_UNBLOCK, &set, NULL);
	}
	return 128 + sig;
}

/* Waits between runs; a signal meant for the child ends watchoutput.
 * Returns -1 to go on, else the exit status. */
static int pause_before_retry(struct run *r)
{
	uint64_t until = now_usec() + (uint64_t)(r->opt->wait_before_retry * 1e6);

	for (;;) {
		struct signalfd_siginfo si;
		struct pollfd p = { .fd = r->sigfd, .events = POLLIN };
		uint64_t now = now_usec(), ms;

		if (now >= until)
			return -1;
		/* poll() takes an int: a long wait is a few calls */
		ms = (until - now + 999) / 1000;
		if (poll(&p, 1, ms > 3600000 ? 3600000 : (int)ms) < 0 &&
		    errno != EINTR) {
			LOG_ERRNO("poll");
			return EXIT_FAIL;
		}
		while (read(r->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
			if (si.ssi_signo != SIGCHLD) {
				say("%s while waiting to retry %s: exiting",
				    strsignal((int)si.ssi_signo), r->opt->command[0]);
				return die_by((int)si.ssi_signo);
			}
		}
	}
}

/* Whether this way of ending asks for another run. */
static bool wants_retry(const struct options *opt, int status)
{
	if (WIFEXITED(status))
		return opt->retry_code[WEXITSTATUS(status)];
	return WTERMSIG(status) <= MAX_SIGNAL && opt->retry_signal[WTERMSIG(status)];
}

/* Says, on stderr and in STATUS=, that a retry comes. */
static void announce_retry(struct run *r, long retry)
{
	const struct options *opt = r->opt;
	char text[512];

	snprintf(text, sizeof text, "%s %s %d; retry %ld of %ld in %g s",
		 opt->command[0],
		 WIFEXITED(r->status) ? "exited with code" : "killed by signal",
		 WIFEXITED(r->status) ? WEXITSTATUS(r->status) : WTERMSIG(r->status),
		 retry, opt->max_retries, opt->wait_before_retry);
	say("%s", text);
	if (r->notify)
		send_state("", "%s", text);
}

/* The shell's convention: the code, or 128+N for signal N. */
static int exit_code(const struct run *r)
{
	int st = r->status;
	bool asked = WIFSIGNALED(st) && WTERMSIG(st) == r->stop_signal;

	if (WIFEXITED(st)) {
		if (WEXITSTATUS(st) != 0)
			say("%s exited with code %d", r->opt->command[0],
			    WEXITSTATUS(st));
		return WEXITSTATUS(st);
	}
	say("%s killed by signal %d (%s)", r->opt->command[0], WTERMSIG(st),
	    strsignal(WTERMSIG(st)));
	/* Killed by the signal we were sent and passed on: die by it too. */
	return asked ? die_by(WTERMSIG(st)) : 128 + WTERMSIG(st);
}

/* ---- main ---------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct options opt;
	static struct run r;
	sigset_t old_mask;
	uint64_t usec = 0;
	long retries = 0;
	int rc;

	rc = parse_options(argc, argv, &opt);
	if (rc >= 0)
		return rc;

	if (open_std_fds() < 0)
		return EXIT_FAIL;
	r.opt = &opt;
	r.out = (struct stream){ .from = -1, .to = STDOUT_FILENO };
	r.err = (struct stream){ .from = -1, .to = STDERR_FILENO };
	r.splice_ok = true;
	r.notify = getenv("NOTIFY_SOCKET") != NULL;
	if (clua_sd_watchdog_usec(&usec) > 0)
		r.watchdog_usec = usec;
	/* A quarter of the interval: a few pings per interval, however fast
	 * the child prints. */
	r.gap_usec = r.watchdog_usec ? r.watchdog_usec / 4 : 1000000;

	r.sigfd = block_signals(&old_mask);
	if (r.sigfd < 0)
		return EXIT_FAIL;

	for (;;) {
		rc = spawn(&r, &old_mask);
		if (rc != 0)
			return rc;
		if (r.notify) {
			send_running(&r, retries == 0 ? "READY=1\n" : "");
			r.next_send = now_usec() + r.gap_usec;
		}
		if (supervise(&r) < 0)
			return EXIT_FAIL;
		if (r.stop_signal || !wants_retry(&opt, r.status) ||
		    retries >= opt.max_retries)
			return exit_code(&r);

		retries++;
		announce_retry(&r, retries);
		r.pid = 0;
		r.line_len = 0;
		rc = pause_before_retry(&r);
		if (rc >= 0)
			return rc;
	}
}
