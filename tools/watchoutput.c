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
 * signalfd in the same poll() set as the child's pipes and, while they
 * are full, our own stdout and stderr, so the whole program is one
 * synchronous loop that never blocks anywhere else: a reader of our
 * output that stops reading, or a service manager that stops reading its
 * notify socket, never makes it deaf to signals or to the child's exit.
 * While the child is silent the loop sleeps in poll() with no timeout:
 * zero wakeups.
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
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sdnotify.h"
#include "toolmsg.h"

/* ---- logging ------------------------------------------------------- */

/* One line on stderr, "watchoutput: ...", only when stderr has room: a
 * stderr nobody reads must not block the relay. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	toolmsg_vsay("watchoutput", 1, fmt, ap);
	va_end(ap);
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
	STOP_GRACE_USEC = 500000,	/* after a stop signal: how long
					 * output may wait for a reader
					 * that does not read */
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

/* Where a stream goes decides how bytes get there without waiting. */
enum dest_kind {
	DEST_PIPE,	/* splice(2) or tee(2) with SPLICE_F_NONBLOCK */
	DEST_FILE,	/* a regular file: splice(2), else write(2) */
	DEST_SOCKET,	/* send(2) with MSG_DONTWAIT (the journal's stream) */
	DEST_OTHER,	/* a terminal or device: write(2) on wfd */
};

/* One relayed stream: the child's end of a pipe and where it goes. */
struct stream {
	int from;		/* read end of the child's pipe, -1 once closed */
	int to;			/* our own stdout or stderr */
	int wfd;		/* what write() uses: `to`, or for a terminal
				 * a non-blocking open of it of our own */
	enum dest_kind kind;
	bool splice_ok;		/* splice(2) to `to` works */
	bool full;		/* `to` took nothing more: wait for POLLOUT */
	ssize_t capacity;	/* of the pipe: the most a drain reads */
	size_t pend_off, pend_len;	/* read into buf, not yet written */
	char buf[RELAY_CHUNK];
};

/* What one move from a child's pipe to its destination did. */
enum moved {
	MOVED,		/* some bytes moved */
	EMPTY,		/* the child's pipe is empty for now */
	FULL,		/* the destination has no room: s->full is set */
	ENDED,		/* end of file, or the destination failed: close */
};

struct run {
	const struct options *opt;
	pid_t pid;			/* the running child, 0 between runs */
	int status;			/* its wait status once reaped */
	bool reaped;			/* pid has exited and is ours no more */
	int sigfd;
	struct stream out, err;
	int stop_signal;		/* a terminating signal received, or 0 */
	uint64_t stop_at;		/* when (monotonic usec) */
	bool discard;			/* stopping, and nobody reads: drop output */

	/* heartbeat and status */
	bool notify;			/* NOTIFY_SOCKET is set */
	uint64_t watchdog_usec;		/* 0: no watchdog for us */
	uint64_t gap_usec;		/* least time between two messages */
	uint64_t next_send;		/* monotonic usec: earliest next one */
	bool pending;			/* output arrived since the last one */
	bool line_fresh;		/* `line` was taken after the last one */
	char line[STATUS_LINE_MAX];	/* last line of output seen */
	size_t line_len;
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
			printf("watchoutput %s\n", CLUA_VERSION);
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

/* Whether sig was ignored when we started. */
static bool ignored(int sig)
{
	struct sigaction sa;

	return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
	       sa.sa_handler == SIG_IGN;
}

/* Puts in order the signal state we inherited, blocks the signals we
 * take synchronously and opens their signalfd.
 *  - SIGCHLD goes back to its default.  Ignored (a parent that ignored
 *    it and then exec'd us: that survives exec), the kernel would reap
 *    the child itself and never tell us, and we would wait for ever.  The
 *    child gets the default too.
 *  - A forwarded signal that was ignored (SIGHUP under nohup, SIGINT and
 *    SIGQUIT in a shell's background job) stays ignored, for us and the
 *    child: it is not blocked, so the kernel drops it (a blocked signal
 *    would be queued even though ignored) and it is never forwarded.
 *  - SIGPIPE is blocked (not read): a vanished reader of our output shows
 *    up as EPIPE.  Its disposition is left for the child as it came
 *    (systemd's IgnoreSIGPIPE= sets it).
 * The child starts with no signal blocked (see exec_child), whatever
 * mask we inherited: a blocked SIGTERM would make it deaf to what we pass
 * on. */
static int block_signals(void)
{
	struct sigaction dfl;
	sigset_t set;
	size_t i;
	int fd;

	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;	/* and no SA_NOCLDWAIT */
	sigemptyset(&dfl.sa_mask);
	if (sigaction(SIGCHLD, &dfl, NULL) < 0) {
		LOG_ERRNO("sigaction");
		return -1;
	}
	sigemptyset(&set);
	for (i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		if (!ignored(forwarded[i]))
			sigaddset(&set, forwarded[i]);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGPIPE);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
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
static void exec_child(struct run *r, pid_t parent, int outw, int errw,
		       int errfd)
{
	const struct options *opt = r->opt;
	sigset_t none;
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
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
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

static void close_pair(int p[2])
{
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	p[0] = p[1] = -1;
}

/* Starts the command.  Returns 0 when it runs, else the exit status
 * (127, 126 or 1) after a one-line message. */
static int spawn(struct run *r)
{
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, exe[2] = { -1, -1 };
	int e = 0;
	pid_t parent = getpid();
	ssize_t n;

	if (pipe2(outp, O_CLOEXEC) < 0 ||
	    (!r->opt->ignore_stderr && pipe2(errp, O_CLOEXEC) < 0) ||
	    pipe2(exe, O_CLOEXEC) < 0) {
		LOG_ERRNO("pipe2");
		close_pair(outp);	/* those made before the failure */
		close_pair(errp);
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
		r->pid = 0;
		close_pair(outp);
		close_pair(errp);
		close_pair(exe);
		return EXIT_FAIL;
	}
	if (r->pid == 0)
		exec_child(r, parent, outp[1], errp[1], exe[1]);
	r->reaped = false;

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
		close(r->out.from);
		if (r->err.from >= 0)
			close(r->err.from);
		r->out.from = r->err.from = -1;
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
 * output of the child can inject an assignment.  Never waits: when the
 * manager does not read its socket (EAGAIN) this message is skipped and
 * the relay goes on; a failure is said once. */
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
		say("NOTIFY_SOCKET: %s (said once; the output is still relayed)",
		    strerror(-rc));
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

/* Milliseconds from now until `until` (monotonic usec), rounded up, as
 * poll() takes them: at most INT_MAX (a WATCHDOG_USEC of months would
 * wrap an int; poll() then just comes back early). */
static int ms_until(uint64_t until, uint64_t now)
{
	uint64_t ms = until > now ? (until - now + 999) / 1000 : 0;

	return ms > INT_MAX ? INT_MAX : (int)ms;
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
	return ms_until(r->next_send, now);
}

/* ---- relaying ------------------------------------------------------ */

/* Decides how to write to s->to without ever waiting for its reader.  A
 * pipe needs nothing: splice(2) and tee(2) with SPLICE_F_NONBLOCK never
 * wait on either pipe.  A socket (systemd's journal) takes
 * MSG_DONTWAIT.  A terminal (stopped by Ctrl-S, or slow) is opened again
 * through /proc, non-blocking: O_NONBLOCK on the description we share
 * with the shell would change it for every other user of it.  A regular
 * file never makes a writer wait for a reader. */
static void open_destination(struct stream *s)
{
	struct stat st;
	char path[32];
	int fd, fl;

	s->wfd = s->to;
	s->kind = DEST_OTHER;
	if (fstat(s->to, &st) < 0)
		return;
	if (S_ISFIFO(st.st_mode))
		s->kind = DEST_PIPE;
	else if (S_ISSOCK(st.st_mode))
		s->kind = DEST_SOCKET;
	else if (S_ISREG(st.st_mode))
		s->kind = DEST_FILE;
	s->splice_ok = s->kind == DEST_PIPE || s->kind == DEST_FILE;
	fl = fcntl(s->to, F_GETFL);
	if (s->kind != DEST_OTHER || !isatty(s->to) || fl < 0 || (fl & O_NONBLOCK))
		return;
	snprintf(path, sizeof path, "/proc/self/fd/%d", s->to);
	fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0)
		s->wfd = fd;	/* else (no /proc) the terminal may block us */
}

/* Our stdout or stderr failed (its reader is gone: EPIPE).  The child's
 * pipe is then closed, so the child sees what it would see without us:
 * SIGPIPE or EPIPE at its next write. */
static void destination_failed(struct stream *s)
{
	const char *name = s->to == STDOUT_FILENO ? "stdout" : "stderr";

	say("write to %s: %s; closing the command's %s", name, strerror(errno),
	    name);
}

/* Closes the child's end and forgets what was not written. */
static void close_stream(struct stream *s)
{
	if (s->from >= 0)
		close(s->from);
	s->from = -1;
	s->full = false;
	s->pend_len = s->pend_off = 0;
}

/* After EAGAIN from a splice or tee: the child's pipe was empty, or the
 * destination full (both say EAGAIN); FIONREAD tells them apart. */
static enum moved empty_or_full(struct stream *s)
{
	int avail = 0;

	if (ioctl(s->from, FIONREAD, &avail) == 0 && avail == 0)
		return EMPTY;
	s->full = true;
	return FULL;
}

/* Writes what is pending in s->buf, never waiting.  Returns MOVED when
 * all is out, FULL when the destination took no more, ENDED when it
 * failed. */
static enum moved flush(struct stream *s)
{
	while (s->pend_len > 0) {
		const char *data = s->buf + s->pend_off;
		ssize_t n = s->kind == DEST_SOCKET
			? send(s->wfd, data, s->pend_len, MSG_DONTWAIT | MSG_NOSIGNAL)
			: write(s->wfd, data, s->pend_len);

		if (n > 0) {
			s->pend_off += (size_t)n;
			s->pend_len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			s->full = true;
			return FULL;
		} else if (n == 0 || errno != EINTR) {
			if (n == 0)
				errno = EIO;
			destination_failed(s);
			return ENDED;
		}
	}
	s->pend_off = 0;
	return MOVED;
}

/* Pipe to pipe, or to a regular file, without copying through us:
 * splice(2) moves page references.  When STATUS= wants a fresh line
 * (look), tee(2) copies instead (pipe to pipe only) and a read() of the
 * same bytes shows them to us.  *count gets the bytes moved. */
static enum moved splice_chunk(struct run *r, struct stream *s, bool look,
			       size_t max, size_t *count)
{
	ssize_t n;

	for (;;) {
		n = look ? tee(s->from, s->to, max < sizeof s->buf ? max : sizeof s->buf,
			       SPLICE_F_NONBLOCK)
			 : splice(s->from, NULL, s->to, NULL,
				  max < SPLICE_CHUNK ? max : SPLICE_CHUNK,
				  SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n >= 0 || errno != EINTR)
			break;
	}
	if (n > 0) {
		if (look) {	/* take the bytes tee copied: exactly n */
			ssize_t got;

			do
				got = read(s->from, s->buf, (size_t)n);
			while (got < 0 && errno == EINTR);
			if (got > 0)
				take_line(r, s->buf, (size_t)got);
		}
		*count = (size_t)n;
		return MOVED;
	}
	if (n == 0)
		return ENDED;
	if (errno == EAGAIN)
		return empty_or_full(s);
	if (errno == EPIPE) {
		destination_failed(s);
		return ENDED;
	}
	/* EINVAL: a file opened O_APPEND, ...: read and write instead. */
	s->splice_ok = false;
	return EMPTY;
}

/* Moves at most max bytes from the child's pipe to its destination, never
 * waiting for either.  *count gets the bytes taken from the pipe. */
static enum moved move_chunk(struct run *r, struct stream *s, size_t max,
			     size_t *count)
{
	/* Spliced bytes are never seen: STATUS= wanting a fresh line needs
	 * a tee (to a pipe) or a read. */
	bool look = r->notify && !r->line_fresh;
	enum moved m;
	ssize_t n;

	*count = 0;
	if (r->discard)
		s->full = false, s->pend_len = 0;
	if (s->full)
		return FULL;
	if (s->pend_len > 0 && (m = flush(s)) != MOVED)
		return m;
	if (s->from < 0 || max == 0)
		return ENDED;
	if (s->splice_ok && !r->discard && (s->kind == DEST_PIPE || !look)) {
		m = splice_chunk(r, s, look, max, count);
		if (m != EMPTY || s->splice_ok)
			return m;
	}
	do
		n = read(s->from, s->buf, max < sizeof s->buf ? max : sizeof s->buf);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return EMPTY;
	if (n <= 0)
		return ENDED;	/* an error ends it like EOF */
	*count = (size_t)n;
	if (r->discard)
		return MOVED;
	take_line(r, s->buf, (size_t)n);
	s->pend_off = 0;
	s->pend_len = (size_t)n;
	m = flush(s);
	return m == ENDED ? ENDED : MOVED;	/* FULL: the bytes wait in buf */
}

/* poll() said the child's pipe (POLLIN) or the destination (POLLOUT) is
 * ready: move what can move, up to SPLICE_BURST chunks so that signals
 * are still read in between.  EOF while the child lives is silence: the
 * fd leaves the poll set, so nothing spins. */
static void relay(struct run *r, struct stream *s)
{
	size_t total = 0, n;
	int i;

	s->full = false;
	for (i = 0; i < SPLICE_BURST; i++) {
		enum moved m = move_chunk(r, s, SIZE_MAX, &n);

		total += n;
		if (m == ENDED)
			close_stream(s);
		if (m != MOVED)
			break;
	}
	if (total > 0 && !r->discard)
		output_seen(r);
}

/* What poll() should wait for on a stream: room in the destination while
 * it is full, else output from the child. */
static struct pollfd stream_poll(const struct stream *s)
{
	if (s->full)
		return (struct pollfd){ .fd = s->wfd, .events = POLLOUT };
	return (struct pollfd){ .fd = s->from, .events = POLLIN };	/* -1: skipped */
}

/* ---- the loop ------------------------------------------------------ */

/* After a stop signal, output waits for a reader that does not read at
 * most STOP_GRACE_USEC; then it is dropped, so that neither we nor the
 * child (blocked writing to its full pipe, the signal's trap pending)
 * wait for ever.  Returns poll()'s timeout for that deadline, or -1 when
 * there is none; starts dropping once it has passed. */
static int stop_grace(struct run *r)
{
	uint64_t now, until = r->stop_at + STOP_GRACE_USEC;

	if (!r->stop_signal || r->discard || !(r->out.full || r->err.full))
		return -1;
	now = now_usec();
	if (now < until)
		return ms_until(until, now);
	say("%s's output is not being read: dropping it, so it can stop",
	    r->opt->command[0]);
	r->discard = true;
	r->out.full = r->err.full = false;
	return -1;
}

/* The sooner of two poll() timeouts (-1: none). */
static int sooner(int a, int b)
{
	return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/* Whether the child got signal si already.  A terminal sends Ctrl-C's
 * SIGINT and Ctrl-\'s SIGQUIT (and SIGHUP when its controlling process
 * exits; a hangup sends it to the session leader alone) to its whole
 * foreground process group, with si_code SI_KERNEL: the child, unless it
 * left our group, got it too, and passing it on would deliver it twice.
 * A signal sent by a process (kill, systemctl) is passed on. */
static bool child_got_it(const struct run *r, const struct signalfd_siginfo *si)
{
	int sig = (int)si->ssi_signo;

	if (si->ssi_code != SI_KERNEL)
		return false;
	if (sig != SIGINT && sig != SIGQUIT &&
	    !(sig == SIGHUP && getsid(0) != getpid()))
		return false;
	return getpgid(r->pid) == getpgrp();
}

/* Reads the signalfd: passes signals on, reaps the child.  Returns true
 * once the child has exited. */
static bool take_signals(struct run *r)
{
	struct signalfd_siginfo si;

	while (read(r->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		int sig = (int)si.ssi_signo;

		if (sig == SIGCHLD) {
			if (!r->reaped &&
			    waitpid(r->pid, &r->status, WNOHANG) == r->pid)
				r->reaped = true;
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT ||
		    sig == SIGHUP) {
			r->stop_signal = sig;	/* no retry after this */
			r->stop_at = now_usec();
		}
		/* Once reaped, the pid may belong to someone else. */
		if (!r->reaped && !child_got_it(r, &si) &&
		    kill(r->pid, sig) < 0 && errno != ESRCH)
			LOG_ERRNO("kill");
	}
	return r->reaped;
}

/* After the child's exit everything it wrote is already in its pipes, at
 * most their capacity: relay that, until empty or EOF, never waiting for
 * the pipes and never reading more (a grandchild may hold them open, or
 * keep writing).  A destination with no room is waited for, with signals
 * served; after a stop signal only as long as stop_grace() allows. */
static void drain(struct run *r)
{
	struct stream *ss[2] = { &r->out, &r->err };
	size_t left[2];
	int i;

	for (i = 0; i < 2; i++)
		left[i] = ss[i]->capacity > 0 ? (size_t)ss[i]->capacity : RELAY_CHUNK;
	for (;;) {
		bool waiting = false;
		int timeout;

		for (i = 0; i < 2; i++) {
			struct stream *s = ss[i];
			enum moved m = MOVED;
			size_t n;

			while (m == MOVED && (s->from >= 0 || s->pend_len > 0)) {
				m = move_chunk(r, s, left[i], &n);
				left[i] -= n;
				if (n > 0 && !r->discard)
					output_seen(r);
			}
			if (m == FULL)
				waiting = true;
			else
				close_stream(s);
		}
		if (!waiting)
			return;
		timeout = stop_grace(r);
		if (r->discard)
			continue;	/* just started dropping: no waiting */
		{
			struct pollfd p[3] = {
				{ .fd = r->sigfd, .events = POLLIN },
				stream_poll(&r->out),	/* the full ones: POLLOUT */
				stream_poll(&r->err),
			};

			if (poll(p, 3, timeout) < 0 && errno != EINTR) {
				LOG_ERRNO("poll");
				return;
			}
			if (p[0].revents)
				take_signals(r);	/* nothing is passed on now */
			for (i = 0; i < 2; i++)
				if (p[i + 1].revents)
					ss[i]->full = false;
		}
	}
}

/* Relays until the child exits, then drains its pipes. */
static int supervise(struct run *r)
{
	for (;;) {
		/* First: stop_grace() may stop the waiting for room. */
		int timeout = sooner(poll_timeout(r), stop_grace(r));
		struct pollfd p[3] = {
			{ .fd = r->sigfd, .events = POLLIN },
			stream_poll(&r->out),	/* fd -1 is skipped */
			stream_poll(&r->err),
		};
		int n = poll(p, 3, timeout);

		if (n < 0 && errno != EINTR) {
			LOG_ERRNO("poll");
			return -1;
		}
		if (n <= 0)
			continue;	/* stop_grace() looks again */
		if (p[1].revents)
			relay(r, &r->out);
		if (p[2].revents)
			relay(r, &r->err);
		if (p[0].revents && take_signals(r))
			break;
	}
	drain(r);
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
		uint64_t now = now_usec();

		if (now >= until)
			return -1;
		if (poll(&p, 1, ms_until(until, now)) < 0 &&
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
	uint64_t usec = 0;
	long retries = 0;
	int rc;

	rc = parse_options(argc, argv, &opt);
	if (rc >= 0)
		return rc;

	if (open_std_fds() < 0)
		return EXIT_FAIL;
	r.opt = &opt;
	/* Field by field: a stream holds a 64 KiB buffer, not to be touched
	 * (nor copied) before it is needed. */
	r.out.from = r.err.from = -1;
	r.out.to = STDOUT_FILENO;
	r.err.to = STDERR_FILENO;
	open_destination(&r.out);
	if (!opt.ignore_stderr)
		open_destination(&r.err);
	r.notify = getenv("NOTIFY_SOCKET") != NULL;
	if (clua_sd_watchdog_usec(&usec) > 0)
		r.watchdog_usec = usec;
	/* A quarter of the interval: a few pings per interval, however fast
	 * the child prints. */
	r.gap_usec = r.watchdog_usec ? r.watchdog_usec / 4 : 1000000;

	r.sigfd = block_signals();
	if (r.sigfd < 0)
		return EXIT_FAIL;

	for (;;) {
		rc = spawn(&r);
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
