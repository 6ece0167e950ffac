/*
 * stallwatch.c - the stall breaker's watcher thread.
 *
 * The main thread reports the state of its loop with a few atomic stores
 * (a tick, "idle", "woke"); this thread times each busy stretch and, when
 * one reaches the limit, sends the main thread the signal that stall.c
 * handles. It never touches the Lua state, and has every signal blocked.
 *
 * Three rules shape it:
 *  - An idle process is never woken, and a short turn of its loop does not
 *    wake this thread either. While the loop is idle this thread sleeps
 *    without a timeout. When the loop wakes, the main thread arms a timer
 *    (a timerfd, a quarter of the limit ahead) and disarms it when the loop
 *    is idle again: only a stretch that lasts that long wakes this thread.
 *    Two timerfd_settime calls per turn of the loop while this thread
 *    sleeps; none while it is awake timing a stretch.
 *  - Frozen time is not stall time. A stopped process (SIGSTOP, the cgroup
 *    freezer, a debugger stopping every thread, a paused VM) stops this
 *    thread too, and it wakes late. While the loop is busy it looks every
 *    quarter of the limit and credits each look with at most what it meant
 *    to sleep, or the time the main thread was runnable meanwhile if that
 *    is more (this thread merely waiting for a CPU, as under valgrind, is
 *    no freeze), plus slack: a freeze of any length adds at most a quarter
 *    of the limit and the slack. A main thread stopped alone (a debugger in non-stop
 *    mode) shows as stopped in /proc and is not credited at all.
 *  - No EINTR. The signal goes only to a main thread that is running, or
 *    blocked in a call that SA_RESTART restarts (read, write, wait4, ...).
 *    Never to one blocked in poll, select, nanosleep and the like: those
 *    would fail with EINTR. It looks again a quarter of the limit later.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "stall.h"

#define NSEC_PER_SEC 1000000000LL
#define MIN_SLEEP_NS 1000000LL		/* 1 ms */
#define MIN_SLACK_NS 20000000LL		/* 20 ms late is scheduling, not a freeze */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static struct {
	/* Set before the thread starts, read-only while it runs. */
	struct stallwatch_config c;
	long long look_ns;	/* how often it looks while the loop is busy */
	long long slack_ns;	/* lateness that still counts as running */
	clockid_t main_cpu;	/* the main thread's CPU clock */
	int have_main_cpu;
	pthread_t thread;
	/* Written by the main thread. */
	unsigned stretch;	/* (atomic) id of the current stretch, never 0 */
	long long busy_since;	/* (atomic) when it began */
	int idle;		/* (atomic) no stretch is running */
	long long ended_len;	/* (atomic) longest stretch ended since the last look */
	long long ended_at;	/* (atomic) when it ended */
	/* Written by the watcher. */
	unsigned fired;		/* (atomic) stretch of the last signal (0: none) */
	long long fired_seen;	/* (atomic) its busy time at that moment */
	long long fired_at;	/* (atomic) and that moment */
	long long longest;	/* (atomic) longest stretch, frozen time left out */
	long long freeze_from;	/* (atomic) the last freeze the watcher saw */
	long long freeze_to;	/* (atomic) */
	/* Written by the main thread's hook when it acted on a signal. */
	unsigned handled;	/* (atomic) stretch it was for */
	long long handled_at;	/* (atomic) and when */
	/* Sleeping and waking. */
	int parked;		/* (atomic) sleeping without a timeout */
	int stopping;		/* (atomic) */
	int timer_fd;		/* armed by the main thread while it is parked */
	int stop_fd;		/* an eventfd: stop() wakes it at once */
	int timer_armed;	/* main thread only */
} w = {.timer_fd = -1, .stop_fd = -1};

long long stall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static struct timespec to_timespec(long long ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / NSEC_PER_SEC);
	ts.tv_nsec = (long)(ns % NSEC_PER_SEC);
	return ts;
}

/* Sleeps until the stop eventfd is written, the absolute CLOCK_MONOTONIC
 * time at passes (at < 0: no timeout), or, when with_timer, the timerfd
 * expires. */
static void sleep_until(long long at, int with_timer)
{
	struct pollfd fds[2] = {{w.stop_fd, POLLIN, 0}, {w.timer_fd, POLLIN, 0}};
	struct timespec ts, *tsp = NULL;
	uint64_t n;

	if (at >= 0) {
		long long left = at - stall_now();
		ts = to_timespec(left > 0 ? left : 0);
		tsp = &ts;
	}
	ppoll(fds, with_timer ? 2 : 1, tsp, NULL);
	if (with_timer && read(w.timer_fd, &n, sizeof n) < 0)
		n = 0;		/* not expired: nothing to take */
}

static void set_timer(long long ns)
{
	struct itimerspec its = {{0, 0}, to_timespec(ns)};

	timerfd_settime(w.timer_fd, 0, &its, NULL);
}

/* --- The main thread's side ------------------------------------------ */

static void end_stretch(long long now)
{
	long long len = now - LOAD(&w.busy_since);

	/* A max: storing a value the watcher already took does no harm. */
	if (len > LOAD(&w.ended_len)) {
		STORE(&w.ended_at, now);
		STORE(&w.ended_len, len);
	}
}

static void begin_stretch(long long now)
{
	unsigned next = LOAD(&w.stretch) + 1;

	STORE(&w.busy_since, now);
	STORE(&w.stretch, next != 0 ? next : 1);
}

/* Busy again. With its counterpart in park() this is Dekker's pattern: we
 * store idle = 0 then read parked, it stores parked = 1 then reads idle;
 * one of the two sees the other, so a stretch is never missed. */
static void set_busy(void)
{
	__atomic_store_n(&w.idle, 0, __ATOMIC_SEQ_CST);
	if (!w.timer_armed && __atomic_load_n(&w.parked, __ATOMIC_SEQ_CST)) {
		set_timer(w.look_ns);
		w.timer_armed = 1;
	}
}

void stallwatch_tick(void)
{
	long long now = stall_now();

	if (!LOAD(&w.idle))
		end_stretch(now);
	begin_stretch(now);
	set_busy();
}

void stallwatch_idle(void)
{
	if (LOAD(&w.idle))
		return;
	end_stretch(stall_now());
	__atomic_store_n(&w.idle, 1, __ATOMIC_SEQ_CST);
	if (w.timer_armed) {
		set_timer(0);		/* a short stretch: never seen */
		w.timer_armed = 0;
	}
}

void stallwatch_wake(void)
{
	if (!LOAD(&w.idle))
		return;
	begin_stretch(stall_now());
	set_busy();
}

int stallwatch_is_idle(void)
{
	return LOAD(&w.idle);
}

int stallwatch_still_stalled(long long *stalled_ns)
{
	unsigned fired = LOAD(&w.fired);

	if (fired == 0 || fired != LOAD(&w.stretch) || LOAD(&w.idle))
		return 0;
	*stalled_ns = LOAD(&w.fired_seen) + (stall_now() - LOAD(&w.fired_at));
	return 1;
}

void stallwatch_handled(void)
{
	STORE(&w.handled_at, stall_now());
	STORE(&w.handled, LOAD(&w.stretch));
}

/* A stretch of len ns that ended at `to`, without the last freeze. */
static long long unfrozen(long long len, long long to)
{
	long long from = to - len, ff = LOAD(&w.freeze_from), ft = LOAD(&w.freeze_to);
	long long a = from > ff ? from : ff, b = to < ft ? to : ft;

	return b > a ? len - (b - a) : len;
}

long long stallwatch_longest(void)
{
	long long longest = LOAD(&w.longest), ended = LOAD(&w.ended_len);

	/* Ended since the watcher last looked: not counted there yet. */
	if (ended > 0)
		ended = unfrozen(ended, LOAD(&w.ended_at));
	return ended > longest ? ended : longest;
}

/* --- What the watcher reads in /proc about the main thread ------------ */

/* /proc/self/task/<main tid>/<name> into buf; its length, or -1. */
static ssize_t read_task_file(const char *name, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "/proc/self/task/%d/%s",
		 (int)w.c.main_tid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* Stopped on its own (job control or a debugger's ptrace stop: states T
 * and t of proc(5)). Unknown counts as not stopped. */
static int main_stopped(void)
{
	char buf[512], *p;

	if (read_task_file("stat", buf, sizeof buf) < 0)
		return 0;
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
}

/* The calls signal(7) lists as restarted after a handler installed with
 * SA_RESTART (on slow devices, sockets without timeouts). */
static int restartable(long nr)
{
	switch (nr) {
	case SYS_read: case SYS_readv: case SYS_write: case SYS_writev:
	case SYS_pread64: case SYS_pwrite64: case SYS_ioctl:
	case SYS_openat: case SYS_wait4: case SYS_waitid:
	case SYS_accept4: case SYS_connect: case SYS_recvfrom:
	case SYS_recvmsg: case SYS_sendto: case SYS_sendmsg:
	case SYS_flock: case SYS_fcntl: case SYS_futex: case SYS_getrandom:
#ifdef SYS_open
	case SYS_open:
#endif
#ifdef SYS_accept
	case SYS_accept:
#endif
		return 1;
	default:
		return 0;
	}
}

/* Whether the signal can go now without failing a call with EINTR: the
 * thread runs (proc(5) "running"), is blocked outside any call (-1), or
 * in a call SA_RESTART restarts. When /proc cannot tell, it goes (an
 * EINTR is then possible, as HACKING.md says). */
static int main_signalable(void)
{
	char buf[256];
	long nr;

	if (read_task_file("syscall", buf, sizeof buf) < 0)
		return 1;
	if (strncmp(buf, "running", 7) == 0)
		return 1;
	nr = strtol(buf, NULL, 10);
	return nr < 0 || restartable(nr);
}

/* --- The watcher ------------------------------------------------------- */

/* How long the main thread has been runnable, in ns: the time it ran
 * plus the time it waited for a CPU (/proc schedstat). Neither grows while
 * the process is stopped or frozen; both grow while it spins on a busy
 * machine, where its CPU time alone falls behind the clock. Without
 * schedstat, its CPU time (pthread_getcpuclockid); 0 when unknown. */
static long long main_runnable_ns(void)
{
	char buf[128];
	long long ran, waited;
	struct timespec ts;

	if (read_task_file("schedstat", buf, sizeof buf) > 0
	    && sscanf(buf, "%lld %lld", &ran, &waited) == 2)
		return ran + waited;
	if (!w.have_main_cpu || clock_gettime(w.main_cpu, &ts) != 0)
		return 0;
	return (long long)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* What the watcher knows of the stretch it is timing. */
struct look {
	long long at;		/* when it last looked */
	long long main_ran;	/* main_runnable_ns() then */
	unsigned stretch;	/* which stretch that was */
	long long seen;		/* busy time of it witnessed, freezes left out */
	long long next_fire;	/* signal once seen reaches this */
};

static void raise_longest(long long len)
{
	if (len > LOAD(&w.longest))
		STORE(&w.longest, len);
}

/* A stretch that ended since the last look, measured by the main thread
 * with its own clock readings: exact, but a freeze inside it counts. The
 * last freeze the watcher saw is taken out (the main thread may end the
 * stretch before or after the watcher's late look: both resume together). */
static void take_ended(void)
{
	long long len = __atomic_exchange_n(&w.ended_len, 0, __ATOMIC_ACQ_REL);

	if (len > 0)
		raise_longest(unfrozen(len, LOAD(&w.ended_at)));
}

/* Starts timing whatever stretch runs now. It began a quarter of the
 * limit ago when the main thread's timer woke us: count that, but never
 * more than a look would (the process may have been frozen in between). */
static void restart(struct look *lk)
{
	long long now = stall_now(), since = now - LOAD(&w.busy_since);
	long long most = w.look_ns + w.slack_ns;

	lk->at = now;
	lk->main_ran = main_runnable_ns();
	lk->stretch = LOAD(&w.stretch);
	lk->seen = since < 0 ? 0 : since < most ? since : most;
	lk->next_fire = w.c.limit_ns;
}

/* Sleeps without a timeout while the loop is idle or its stretches short:
 * until a stretch lasts a quarter of the limit (the main thread's timer),
 * or stop (see set_busy). */
static void park(void)
{
	__atomic_store_n(&w.parked, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&w.idle, __ATOMIC_SEQ_CST) && !LOAD(&w.stopping))
		sleep_until(-1, 1);
	__atomic_store_n(&w.parked, 0, __ATOMIC_SEQ_CST);
}

/* How long to sleep before the next look: a quarter of the limit, or less
 * when the next signal is due sooner. */
static long long plan_sleep(const struct look *lk)
{
	long long left = lk->next_fire - lk->seen;

	if (left <= 0 || left > w.look_ns)
		return w.look_ns;
	return left < MIN_SLEEP_NS ? MIN_SLEEP_NS : left;
}

/* The hook acted on a signal in this stretch less than a limit ago (it
 * raised, or saw that C had been running): the next signal waits. The
 * signals sent while the main thread was still in C all led to that one. */
static int handled_lately(unsigned stretch, long long now)
{
	return LOAD(&w.handled) == stretch
		&& now - LOAD(&w.handled_at) < w.c.limit_ns;
}

static void fire(unsigned stretch, long long seen, long long now)
{
	STORE(&w.fired_seen, seen);
	STORE(&w.fired_at, now);
	STORE(&w.fired, stretch);
	pthread_kill(w.c.main_thread, w.c.signo);
}

/* After a sleep of `planned` ns: credits the time, measures, and signals
 * the main thread when the stretch has reached its limit. */
static void look(struct look *lk, long long planned)
{
	long long now = stall_now(), elapsed = now - lk->at;
	long long runnable = main_runnable_ns(), ran = runnable - lk->main_ran;
	long long most = (ran > planned ? ran : planned) + w.slack_ns;
	long long credit = elapsed < most ? elapsed : most;
	unsigned stretch;

	lk->at = now;
	lk->main_ran = runnable;
	if (credit < elapsed) {		/* we could not run: frozen */
		STORE(&w.freeze_from, now - (elapsed - credit));
		STORE(&w.freeze_to, now);
	}
	take_ended();
	if (LOAD(&w.idle) || LOAD(&w.stopping))
		return;
	if (main_stopped())
		credit = 0;
	stretch = LOAD(&w.stretch);
	if (stretch != lk->stretch) {
		long long since = now - LOAD(&w.busy_since);

		lk->stretch = stretch;
		lk->seen = since < credit ? since : credit;
		lk->next_fire = w.c.limit_ns;
	} else {
		lk->seen += credit;
	}
	raise_longest(lk->seen);
	if (lk->seen >= lk->next_fire && !handled_lately(stretch, now)
	    && main_signalable()) {
		fire(stretch, lk->seen, now);
		/* One signal per limit of a long stall, not a storm. */
		lk->next_fire = lk->seen + w.c.limit_ns;
	}
}

static void *watch(void *unused)
{
	struct look lk;

	(void)unused;
	memset(&lk, 0, sizeof lk);
	restart(&lk);
	while (!LOAD(&w.stopping)) {
		long long planned;

		if (LOAD(&w.idle)) {
			park();
			restart(&lk);
			continue;
		}
		planned = plan_sleep(&lk);
		sleep_until(lk.at + planned, 0);
		look(&lk, planned);
	}
	return NULL;
}

static void close_fds(void)
{
	if (w.timer_fd >= 0)
		close(w.timer_fd);
	if (w.stop_fd >= 0)
		close(w.stop_fd);
	w.timer_fd = w.stop_fd = -1;
	w.timer_armed = 0;
}

int stallwatch_start(const struct stallwatch_config *c)
{
	sigset_t all, old;
	int err;

	w.c = *c;
	w.have_main_cpu = pthread_getcpuclockid(c->main_thread, &w.main_cpu) == 0;
	w.look_ns = c->limit_ns / 4 > MIN_SLEEP_NS ? c->limit_ns / 4 : MIN_SLEEP_NS;
	w.slack_ns = c->limit_ns / 8 > MIN_SLACK_NS ? c->limit_ns / 8 : MIN_SLACK_NS;
	w.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	w.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w.timer_fd < 0 || w.stop_fd < 0) {
		err = errno;
		close_fds();
		return err;
	}
	STORE(&w.busy_since, stall_now());	/* starting counts as a tick */
	STORE(&w.stretch, 1u);
	STORE(&w.idle, 0);
	STORE(&w.ended_len, 0LL);
	STORE(&w.freeze_from, 0LL);
	STORE(&w.freeze_to, 0LL);
	STORE(&w.fired, 0u);
	STORE(&w.handled, 0u);
	STORE(&w.longest, 0LL);
	STORE(&w.parked, 0);
	STORE(&w.stopping, 0);
	/* The thread inherits this mask: it never runs a signal handler. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&w.thread, NULL, watch, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		close_fds();
		return err;
	}
	pthread_setname_np(w.thread, "clua-stall");
	return 0;
}

void stallwatch_stop(void)
{
	uint64_t one = 1;

	__atomic_store_n(&w.stopping, 1, __ATOMIC_SEQ_CST);
	if (write(w.stop_fd, &one, sizeof one) < 0)
		one = 0;	/* a full eventfd: it is awake already */
	pthread_join(w.thread, NULL);
	close_fds();
}

void stallwatch_forked(void)
{
	close_fds();
}
