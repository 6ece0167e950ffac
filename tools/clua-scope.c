/*
 * clua-scope - run a command in a transient systemd user scope of its own.
 *
 *   clua-scope [OPTIONS] [--] COMMAND [ARG...]
 *
 * A window manager run as a systemd user service takes every program it
 * started down with it when it dies: they all live in its service's
 * control group, and the watchdog's kill (or a crash) kills that whole
 * group.  Started through clua-scope, each program lives in its own scope
 * in app.slice instead, named as systemd's desktop conventions ask
 * (app-LAUNCHER-APPID-RANDOM.scope), and outlives the window manager.
 *
 * How: ask the user manager, over its private socket, to create the scope
 * for our own pid (StartTransientUnit with PIDs=), wait until that job is
 * done, then exec COMMAND in place.  Same pid, same stdio, same
 * environment; and since COMMAND only runs once it is inside the scope,
 * nothing it forks can escape (a D-Bus call made by the parent after the
 * fork would race with a command that forks and exits at once).
 *
 * It never keeps COMMAND from running: without a user manager, when the
 * manager refuses, or when the scope does not exist within SCOPE_TIMEOUT,
 * one line goes to stderr and COMMAND runs anyway, outside a scope.
 *
 * The scope is PartOf=graphical-session.target: when the graphical
 * session ends, its applications are stopped with it.  It is not ordered
 * After= it: the session target becomes active only once the window
 * manager said READY=1, after its whole configuration ran, and a scope
 * ordered after it would keep every application launched before that
 * (from the configuration, during a restart in place) waiting.
 *
 * A COMMAND that cannot be run is refused before the manager is asked for
 * anything: one line, no scope.
 *
 * Exit status: none of its own once COMMAND runs; 127 COMMAND not found;
 * 126 not executable; 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <systemd/sd-bus.h>

#include "sdnotify.h"
#include "toolmsg.h"

/* ---- logging ------------------------------------------------------- */

/* One line on stderr, "clua-scope: ...". */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	toolmsg_vsay("clua-scope", 0, fmt, ap);
	va_end(ap);
}

/* ---- constants and usage ------------------------------------------- */

enum {
	EXIT_USAGE = 2,
	EXIT_NOEXEC = 126,
	EXIT_NOTFOUND = 127,
	UNIT_NAME_MAX = 255,	/* systemd's limit, without the NUL */
	APP_ID_MAX = 64,	/* of the escaped id, so names stay readable */
	DESCRIPTION_MAX = 200,
};

/* How long the manager may take to create the scope.  Past that the
 * command runs without one: an application that starts late because the
 * manager is stuck is better than one that never starts. */
static const uint64_t SCOPE_TIMEOUT_USEC = 3 * 1000000ULL;

/* Where the scopes go, and what ends them. */
static const char SLICE[] = "app.slice";
static const char SESSION_TARGET[] = "graphical-session.target";

static const char usage_text[] =
	"Usage: clua-scope [OPTIONS] [--] COMMAND [ARG...]\n"
	"\n"
	"Run COMMAND in a new transient systemd user scope in app.slice, named\n"
	"app-LAUNCHER-APPID-RANDOM.scope, so that it lives on when the program\n"
	"that started it (a window manager) is killed or restarted.  The scope\n"
	"stops with graphical-session.target (it does not wait for it to start).\n"
	"Without a user manager, or when the scope cannot be made within 3 s,\n"
	"COMMAND runs anyway, without one.\n"
	"\n"
	"Options (they end at the first non-option):\n"
	"  -l, --launcher NAME  who launches it (the scope's name says so)\n"
	"  -a, --app-id ID      the application's id in the scope's name\n"
	"                       (default: COMMAND's file name; for\n"
	"                       'sh -c \"CMD ...\"', CMD's)\n"
	"  -h, --help           show this help\n"
	"  -V, --version        show the version\n"
	"\n"
	"Exit status: COMMAND's own (it replaces clua-scope); 127 COMMAND not\n"
	"found; 126 not executable; 2 usage error.\n";

struct options {
	const char *launcher;	/* NULL: none */
	const char *app_id;	/* NULL: derived from the command */
	char **command;		/* NULL-terminated argv */
};

/* ---- option parsing ------------------------------------------------ */

/* A launcher name goes into the unit name unescaped: keep it to what
 * systemd's conventions allow there. */
static bool valid_launcher(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 32)
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") == n;
}

static int parse_options(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{"launcher", required_argument, NULL, 'l'},
		{"app-id", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	/* "+": options end at the first non-option, like a shell's. */
	while ((c = getopt_long(argc, argv, "+:l:a:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (!valid_launcher(optarg)) {
				say("--launcher: '%s' is not 1-32 of A-Z a-z 0-9 _ .",
				    optarg);
				return EXIT_USAGE;
			}
			opt->launcher = optarg;
			break;
		case 'a':
			if (optarg[0] == '\0') {
				say("--app-id: empty");
				return EXIT_USAGE;
			}
			opt->app_id = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		case 'V':
			printf("clua-scope %s\n", CLUA_VERSION);
			exit(0);
		case ':':
			say("option '%s' needs an argument", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			/* A short option may sit inside a cluster ("-zq"), where
			 * argv[optind - 1] is the word before: optopt names it.
			 * An unknown long option leaves optopt 0. */
			if (optopt)
				say("unknown option '-%c' (see --help)", optopt);
			else
				say("unknown option '%s' (see --help)", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		say("no command given (see --help)");
		return EXIT_USAGE;
	}
	opt->command = argv + optind;
	return 0;
}

/* ---- the scope's name ---------------------------------------------- */

/* The file name of the program a command runs: for `sh -c "CMD ..."`
 * (awful.spawn.with_shell) the first word of CMD, which names the
 * application better than "sh" does.  Writes at most size - 1 bytes. */
static void command_name(char **command, char *out, size_t size)
{
	const char *path = command[0], *base, *end;
	static const char separators[] = " \t\n;&|()<>";

	if (command[1] && command[2] && strcmp(command[1], "-c") == 0) {
		base = strrchr(path, '/');
		base = base ? base + 1 : path;
		if (strcmp(base, "sh") == 0 || strcmp(base, "bash") == 0 ||
		    strcmp(base, "dash") == 0 || strcmp(base, "zsh") == 0)
			path = command[2] + strspn(command[2], separators);
	}
	end = path + strcspn(path, separators);
	/* The file name of the first word: past its last '/'. */
	for (base = end; base > path && base[-1] != '/'; base--)
		;
	if (base == end) {	/* "sh -c ''", "/": the shell, then */
		base = strrchr(command[0], '/');
		base = base ? base + 1 : command[0];
		end = base + strlen(base);
	}
	snprintf(out, size, "%.*s", (int)(end - base), base);
}

/* Escapes text for the APPID part of a unit name the way systemd-escape
 * does, plus '-': systemd's desktop conventions split the name on dashes,
 * so a dash inside the id is written \x2d.  Cut at a whole escape. */
static void escape_app_id(const char *text, char *out, size_t size)
{
	static const char keep[] = "abcdefghijklmnopqrstuvwxyz"
				   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.";
	size_t o = 0;

	for (; *text; text++) {
		unsigned char ch = (unsigned char)*text;
		bool plain = ch != '\0' && strchr(keep, ch) != NULL &&
			     !(o == 0 && ch == '.');
		size_t need = plain ? 1 : 4;

		if (o + need >= size)
			break;
		if (plain)
			out[o++] = (char)ch;
		else
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
	}
	out[o] = '\0';
}

/* Eight hex digits, different for each launch. */
static void random_suffix(char out[9])
{
	uint32_t r;

	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = (uint32_t)getpid() * 2654435761u ^ (uint32_t)ts.tv_nsec;
	}
	snprintf(out, 9, "%08x", r);
}

static void unit_name(const struct options *opt, char *out, size_t size)
{
	char raw[UNIT_NAME_MAX + 1], id[APP_ID_MAX + 1], suffix[9];

	if (opt->app_id)
		snprintf(raw, sizeof raw, "%s", opt->app_id);
	else
		command_name(opt->command, raw, sizeof raw);
	escape_app_id(raw, id, sizeof id);
	if (id[0] == '\0')
		snprintf(id, sizeof id, "app");
	random_suffix(suffix);
	snprintf(out, size, "app-%s%s%s-%s.scope", opt->launcher ? opt->launcher : "",
		 opt->launcher ? "-" : "", id, suffix);
}

/* The command line, for `systemctl --user status`: the arguments joined
 * by spaces, made valid UTF-8 without control characters (D-Bus refuses
 * a string that is not UTF-8, and file names need not be), cut to fit. */
static void description(char **command, char *out, size_t size)
{
	char joined[4 * DESCRIPTION_MAX];
	size_t o = 0;

	joined[0] = '\0';
	for (; *command; command++) {
		int n = snprintf(joined + o, sizeof joined - o, "%s%s",
				 o ? " " : "", *command);

		if (n < 0 || (size_t)n >= sizeof joined - o) {
			o = strlen(joined);	/* cut: the rest does not fit */
			break;
		}
		o += (size_t)n;
	}
	clua_sd_sanitize(out, size, joined, o);
}

/* ---- talking to the user manager ----------------------------------- */

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* Where the request for the scope stands.  Everything runs
 * asynchronously under one deadline: connecting, authenticating, the call
 * and the job; sd-bus's own waits (90 s to authenticate) would be far
 * longer than an application may wait to start. */
struct request {
	int error;		/* negative errno once it failed */
	char why[512];		/* what failed, the whole message */
	char job[256];		/* the scope's job, "" before the reply */
	char result[32];	/* the job's result once removed, "" before */
	bool cancel_answered;	/* the job's Cancel was answered */
	bool cancelled;		/* ... and succeeded */
};

/* Records the first failure: what failed, and the system's word for
 * `error` (a negative errno). */
static void request_failed(struct request *req, int error, const char *what)
{
	if (req->error == 0) {
		req->error = error < 0 ? error : -EIO;
		snprintf(req->why, sizeof req->why, "%s: %s", what,
			 strerror(-req->error));
	}
}

/* Records a failure that `why` says all of. */
static void request_gave_up(struct request *req, int error, const char *why)
{
	if (req->error == 0) {
		req->error = error;
		snprintf(req->why, sizeof req->why, "%s", why);
	}
}

/* The reply to StartTransientUnit: the job that creates the scope. */
static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct request *req = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);
	const char *job;
	char why[sizeof req->why];

	(void)error;
	if (e != NULL) {
		snprintf(why, sizeof why, "StartTransientUnit: %s",
			 e->message ? e->message : e->name);
		request_gave_up(req, -sd_bus_message_get_errno(m), why);
	} else if (sd_bus_message_read(m, "o", &job) < 0) {
		request_failed(req, -EBADMSG, "StartTransientUnit's reply");
	} else {
		snprintf(req->job, sizeof req->job, "%s", job);
	}
	return 0;
}

/* JobRemoved(id, job, unit, result): the scope exists once this names
 * our job.  It may come before the reply is read: the manager's signals
 * then wait in sd-bus's queue until the reply has been dispatched. */
static int on_job_removed(sd_bus_message *m, void *userdata,
			  sd_bus_error *error)
{
	struct request *req = userdata;
	const char *job, *unit, *result;
	uint32_t id;

	(void)error;
	if (sd_bus_message_read(m, "uoss", &id, &job, &unit, &result) < 0)
		return 0;
	if (req->job[0] != '\0' && strcmp(job, req->job) == 0)
		snprintf(req->result, sizeof req->result, "%s", result);
	return 0;
}

/* The reply to the job's Cancel: an error means the job was gone already
 * (it ended meanwhile: JobRemoved says how). */
static int on_cancel_reply(sd_bus_message *m, void *userdata,
			   sd_bus_error *error)
{
	struct request *req = userdata;

	(void)error;
	req->cancel_answered = true;
	req->cancelled = !sd_bus_message_is_method_error(m, NULL);
	return 0;
}

/* The manager's private socket: a direct connection, no bus daemon in
 * between, and it exists whenever the user manager runs. */
static int connect_manager(sd_bus **bus)
{
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	char address[PATH_MAX + 32];
	int r;

	if (!runtime || runtime[0] != '/')
		return -ENOENT;
	if (snprintf(address, sizeof address, "unix:path=%s/systemd/private",
		     runtime) >= (int)sizeof address)
		return -ENAMETOOLONG;
	r = sd_bus_new(bus);
	if (r < 0)
		return r;
	r = sd_bus_set_address(*bus, address);
	if (r >= 0)
		r = sd_bus_start(*bus);
	return r;
}

/* Queues StartTransientUnit for a scope holding this very process.
 * `timeout` is sd-bus's own for the reply: longer than the deadline
 * run_until_done keeps, so that the deadline decides what is said. */
static int request_scope(sd_bus *bus, const char *unit, const char *desc,
			 uint64_t timeout, struct request *req)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
					   "/org/freedesktop/systemd1",
					   "org.freedesktop.systemd1.Manager",
					   "StartTransientUnit");
	if (r >= 0)
		r = sd_bus_message_append(m, "ss", unit, "fail");
	if (r >= 0)
		r = sd_bus_message_append(
			m, "a(sv)", 5,
			"PIDs", "au", 1, (uint32_t)getpid(),
			"Slice", "s", SLICE,
			"Description", "s", desc,
			"CollectMode", "s", "inactive-or-failed",
			/* Stopped with the session, and not After= it: see the
			 * top of this file. */
			"PartOf", "as", 1, SESSION_TARGET);
	if (r >= 0)
		r = sd_bus_message_append(m, "a(sa(sv))", 0);
	if (r >= 0)
		r = sd_bus_call_async(bus, NULL, m, on_reply, req, timeout);
	sd_bus_message_unref(m);
	return r;
}

/* Runs the connection until `done(req)`, an error on the connection, or
 * `deadline`.  Returns false at the deadline. */
static bool run_until(sd_bus *bus, struct request *req, uint64_t deadline,
		      bool (*done)(const struct request *))
{
	while (!done(req)) {
		uint64_t now = now_usec();
		int r = sd_bus_process(bus, NULL);

		if (r < 0) {
			request_failed(req, r, "talking to the user manager");
			return true;
		}
		if (r > 0)
			continue;
		if (now >= deadline)
			return false;
		r = sd_bus_wait(bus, deadline - now);
		if (r < 0 && r != -EINTR) {
			request_failed(req, r, "waiting for the user manager");
			return true;
		}
	}
	return true;
}

static bool job_over(const struct request *req)
{
	return req->error != 0 || req->result[0] != '\0';
}

static bool cancel_over(const struct request *req)
{
	return req->error != 0 || req->result[0] != '\0' || req->cancel_answered;
}

/* How long a Cancel may take once the manager is known to answer. */
static const uint64_t CANCEL_TIMEOUT_USEC = 500000;

/* Gives up on a job the manager has queued but not run by the deadline
 * (something it waits for is slow): cancels it, so that it neither stays
 * queued nor moves COMMAND into a scope later, while it runs.  Should the
 * job have finished meanwhile, the scope exists and holds this process:
 * that is a success after all. */
static void give_up_job(sd_bus *bus, struct request *req)
{
	char why[sizeof req->why];
	int r;

	r = sd_bus_call_method_async(bus, NULL, "org.freedesktop.systemd1",
				     req->job, "org.freedesktop.systemd1.Job",
				     "Cancel", on_cancel_reply, req, "");
	if (r >= 0)
		run_until(bus, req, now_usec() + CANCEL_TIMEOUT_USEC, cancel_over);
	if (strcmp(req->result, "done") == 0)
		return;
	snprintf(why, sizeof why, "the user manager queued the scope but did not "
		 "start it within %llu s (%s %s)",
		 (unsigned long long)(SCOPE_TIMEOUT_USEC / 1000000), req->job,
		 req->cancelled || strcmp(req->result, "canceled") == 0 ? "cancelled"
		 : req->result[0] != '\0' ? "ended otherwise"
		 : "left queued: the Cancel call failed");
	request_gave_up(req, -ETIMEDOUT, why);
}

/* Runs the connection until the job is removed, the request failed, or
 * the deadline passed. */
static void run_until_done(sd_bus *bus, struct request *req,
			   uint64_t deadline)
{
	if (!run_until(bus, req, deadline, job_over)) {
		char why[sizeof req->why];

		if (req->job[0] != '\0') {
			give_up_job(bus, req);
			return;
		}
		snprintf(why, sizeof why,
			 "the user manager did not answer within %llu s",
			 (unsigned long long)(SCOPE_TIMEOUT_USEC / 1000000));
		request_gave_up(req, -ETIMEDOUT, why);
		return;
	}
	if (req->error == 0 && strcmp(req->result, "done") != 0) {
		char why[sizeof req->why];

		snprintf(why, sizeof why, "the scope's job ended '%s'", req->result);
		request_gave_up(req, -EIO, why);
	}
}

/* Moves this process into a new scope `unit`.  0 when it is in; else a
 * negative errno, with req->why saying what failed. */
static int enter_scope(const char *unit, const char *desc, struct request *req)
{
	uint64_t deadline = now_usec() + SCOPE_TIMEOUT_USEC;
	sd_bus *bus = NULL;
	int r;

	r = connect_manager(&bus);
	if (r < 0) {
		request_failed(req, r, "no systemd user manager");
		goto done;
	}
	/* Before the call: JobRemoved can follow the reply at once. */
	r = sd_bus_match_signal(bus, NULL, "org.freedesktop.systemd1",
				"/org/freedesktop/systemd1",
				"org.freedesktop.systemd1.Manager",
				"JobRemoved", on_job_removed, req);
	if (r >= 0)
		r = request_scope(bus, unit, desc, SCOPE_TIMEOUT_USEC + 1000000, req);
	if (r < 0) {
		request_failed(req, r, "StartTransientUnit");
		goto done;
	}
	run_until_done(bus, req, deadline);
done:
	/* Closes the socket (close-on-exec anyway) before COMMAND runs.  No
	 * flush: nothing is left to send, and a flush would wait for a
	 * manager that does not answer for as long as sd-bus likes. */
	sd_bus_close_unref(bus);
	return req->error;
}

/* ---- running the command ------------------------------------------- */

/* Whether `path` can be executed: 0, or ENOENT, ENOTDIR or EACCES when it
 * surely cannot.  Any other doubt is left to execvp (0). */
static int runnable(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return errno == ENOENT || errno == ENOTDIR ? errno : 0;
	if (S_ISDIR(st.st_mode))
		return EACCES;
	if (access(path, X_OK) != 0)
		return errno == EACCES ? EACCES : 0;
	return 0;
}

/* What execvp(file) would surely fail with, or 0: searches PATH as
 * execvp does (a file name with a '/' is used as it is; an empty PATH
 * entry is the current folder; without PATH, /bin:/usr/bin), and prefers
 * EACCES (something found but not executable) to ENOENT. */
static int command_error(const char *file)
{
	const char *path = getenv("PATH"), *dir;
	char buf[PATH_MAX];
	int err = ENOENT;

	if (strchr(file, '/') != NULL)
		return runnable(file);
	if (path == NULL)
		path = "/bin:/usr/bin";
	for (dir = path;; dir += strcspn(dir, ":") + 1) {
		int n = (int)strcspn(dir, ":"), r;

		if (snprintf(buf, sizeof buf, "%.*s%s%s", n, dir, n ? "/" : "",
			     file) < (int)sizeof buf) {
			r = runnable(buf);
			if (r == 0)
				return 0;
			if (r == EACCES)
				err = EACCES;
		}
		if (dir[n] == '\0')
			return err;
	}
}

static int exit_for(int err)
{
	return err == ENOENT || err == ENOTDIR ? EXIT_NOTFOUND : EXIT_NOEXEC;
}

static int exec_command(char **command)
{
	int err;

	execvp(command[0], command);
	err = errno;
	say("%s: %s", command[0], strerror(err));
	return exit_for(err);
}

/* ---- main ---------------------------------------------------------- */

int main(int argc, char **argv)
{
	struct options opt = {NULL, NULL, NULL};
	char unit[UNIT_NAME_MAX + 1], desc[DESCRIPTION_MAX + 1];
	struct request req = {0, "", "", "", false, false};
	int rc, err;

	rc = parse_options(argc, argv, &opt);
	if (rc != 0)
		return rc;
	/* A command that cannot run: one line saying why, and no scope made
	 * for nothing (nor a second line about the scope). */
	err = command_error(opt.command[0]);
	if (err != 0) {
		say("%s: %s", opt.command[0], strerror(err));
		return exit_for(err);
	}
	unit_name(&opt, unit, sizeof unit);
	description(opt.command, desc, sizeof desc);
	if (enter_scope(unit, desc, &req) < 0)
		say("%s; running %s without a scope", req.why, opt.command[0]);
	return exec_command(opt.command);
}
