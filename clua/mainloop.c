/*
 * mainloop.c - follow GLib's default main loop for the stall breaker: the
 * loop's sleeps in poll are its idle periods, so an idle host is never
 * woken and needs no ticks.
 *
 * GLib lets a program replace the function its main loop polls with
 * (g_main_context_set_poll_func). We put ours in front of whatever is
 * there:
 *  - GLib's own g_poll (lgi programs): ours calls poll(2) itself and marks
 *    the loop idle for exactly the time it sleeps;
 *  - a host's own function (Awesome's a_glib_poll: its refresh runs Lua,
 *    then it polls, then it handles X events, running Lua again, all before
 *    returning): ours calls it, and the host says when its Lua work is done
 *    (stallguard:idle(), from Awesome's "refresh" signal). The stall
 *    breaker's hook then sees the first Lua call after the host's poll, and
 *    asks mainloop_before_poll() which side of it that was. To tell "after"
 *    from "before" (Lua may still run in the refresh after idle()), the
 *    host gets one more pollfd: fd -1, with a marker in revents. poll(2)
 *    writes every revents back when it returns (0 for fd -1, even on
 *    EINTR), so the marker is gone exactly when the host's poll returned.
 *    (Sleeping in our own poll instead would hide the sleep from Awesome's
 *    own "main loop iteration took N seconds" check and make it warn.)
 *
 * GLib is the copy already loaded in the process (dlopen RTLD_NOLOAD): the
 * host links it, or lgi loaded it. clua does not link it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "stall.h"

/* GPollFD is struct pollfd on Unix (g_poll passes it to poll(2)). */
typedef int (*poll_fn)(struct pollfd *fds, unsigned int n, int timeout);
typedef void *(*context_default_fn)(void);
typedef void (*set_poll_fn)(void *context, poll_fn func);
typedef poll_fn (*get_poll_fn)(void *context);

#define MARK ((short)0x7a7a)	/* any non-zero revents */
#define ON_STACK 32		/* pollfds copied without malloc */

static struct {
	void *glib;		/* dlopen handle of the loaded GLib */
	void *context;		/* g_main_context_default() */
	set_poll_fn set;
	get_poll_fn get;
	poll_fn inner;		/* the function we wrapped (kept after stop) */
	int own;		/* inner is GLib's own g_poll */
	int on;			/* (atomic) following; else pass calls through */
	short *mark;		/* in the host's poll: our pollfd's revents */
	void (*sleeps)(void);	/* called before each poll we make */
	void (*woke)(void);	/* called after each poll returned */
} ml;

static int own_poll(struct pollfd *fds, unsigned int n, int timeout)
{
	int r, err;

	ml.sleeps();
	r = poll(fds, n, timeout);
	err = errno;
	ml.woke();
	errno = err;
	return r;
}

static int host_poll(struct pollfd *fds, unsigned int n, int timeout)
{
	struct pollfd stack[ON_STACK], *all = stack;
	short *outer = ml.mark;
	unsigned int i;
	int r, err;

	if (n >= ON_STACK && (all = malloc((n + 1) * sizeof *all)) == NULL)
		return ml.inner(fds, n, timeout);	/* no marker then */
	memcpy(all, fds, n * sizeof *all);
	all[n].fd = -1;
	all[n].events = 0;
	all[n].revents = MARK;
	ml.mark = &all[n].revents;	/* a nested loop saves and restores it */
	r = ml.inner(all, n + 1, timeout);
	err = errno;
	ml.mark = outer;
	for (i = 0; i < n; i++)
		fds[i].revents = all[i].revents;
	if (all != stack)
		free(all);
	ml.woke();
	errno = err;
	return r;
}

/* Installed as the default context's poll function. Another thread
 * iterating that context is passed through (the callbacks check the
 * thread). */
static int wrapped_poll(struct pollfd *fds, unsigned int n, int timeout)
{
	if (!__atomic_load_n(&ml.on, __ATOMIC_ACQUIRE))
		return ml.inner(fds, n, timeout);
	return ml.own ? own_poll(fds, n, timeout) : host_poll(fds, n, timeout);
}

int mainloop_before_poll(void)
{
	volatile short *mark = ml.mark;

	return mark != NULL && *mark == MARK;
}

static void *find(const char *name)
{
	return dlsym(ml.glib, name);
}

int mainloop_follow(void (*sleeps)(void), void (*woke)(void),
		    const char **why)
{
	context_default_fn context_default;
	poll_fn current, g_poll;

	if (ml.glib == NULL)
		ml.glib = dlopen("libglib-2.0.so.0", RTLD_LAZY | RTLD_NOLOAD);
	if (ml.glib == NULL) {
		*why = "stallguard:glib: GLib is not loaded in this process";
		return ENOENT;
	}
	*(void **)&context_default = find("g_main_context_default");
	*(void **)&ml.set = find("g_main_context_set_poll_func");
	*(void **)&ml.get = find("g_main_context_get_poll_func");
	*(void **)&g_poll = find("g_poll");
	if (!context_default || !ml.set || !ml.get || !g_poll) {
		*why = "stallguard:glib: this GLib has no poll function to wrap";
		return ENOSYS;
	}
	ml.context = context_default();
	ml.sleeps = sleeps;
	ml.woke = woke;
	current = ml.get(ml.context);
	if (current != wrapped_poll) {
		ml.inner = current;
		ml.own = current == g_poll;
		ml.set(ml.context, wrapped_poll);
	}
	/* Else ours is still there from an earlier guard: inner is right. */
	__atomic_store_n(&ml.on, 1, __ATOMIC_RELEASE);
	return 0;
}

void mainloop_unfollow(void)
{
	if (!__atomic_load_n(&ml.on, __ATOMIC_ACQUIRE))
		return;
	__atomic_store_n(&ml.on, 0, __ATOMIC_RELEASE);
	/* If someone wrapped ours meanwhile, ours stays, passing through. */
	if (ml.get(ml.context) == wrapped_poll)
		ml.set(ml.context, ml.inner);
}

void mainloop_forked(void)
{
	__atomic_store_n(&ml.on, 0, __ATOMIC_RELEASE);
	ml.mark = NULL;
}

int mainloop_following(void)
{
	if (!__atomic_load_n(&ml.on, __ATOMIC_ACQUIRE))
		return 0;
	return ml.own ? 1 : 2;
}
