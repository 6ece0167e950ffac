/*
 * reap_c.c - the C anchor of the reaping benchmark (bench/reap.lua is the
 * Lua side): forks N children in waves of WAVE, waits until every child of
 * a wave is a zombie, then times a plain waitpid(-1, WNOHANG) loop reaping
 * them.  Prints "reap_c reaped COUNT seconds SECONDS" (reap loop time only).
 *
 *   build/bench/reap_c N WAVE
 *
 * Waves, because a pids cgroup limit (about 4,900 tasks on the build
 * machines, shared with everything else running) caps how many children
 * can exist at once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int sink;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether pid is a zombie (state Z in /proc/PID/stat). */
static int is_zombie(pid_t pid)
{
	char path[64], buf[256], *paren;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' && paren[2] == 'Z';
}

/* Forks up to n children that exit at once; returns how many were made. */
static int fork_wave(pid_t *pids, int n)
{
	int made = 0;

	while (made < n) {
		pid_t pid = fork();

		if (pid < 0)
			break;	/* EAGAIN under the pids limit: a smaller wave */
		if (pid == 0)
			_exit(0);
		pids[made++] = pid;
	}
	return made;
}

static void wait_zombies(const pid_t *pids, int n)
{
	int i = 0;
	struct timespec ms = {0, 1000000};

	while (i < n) {
		if (is_zombie(pids[i]))
			i++;
		else
			nanosleep(&ms, NULL);
	}
}

int main(int argc, char **argv)
{
	long total, wave;
	long reaped = 0;
	double spent = 0;
	pid_t *pids;

	if (argc != 3) {
		fprintf(stderr, "usage: reap_c N WAVE\n");
		return 2;
	}
	total = strtol(argv[1], NULL, 10);
	wave = strtol(argv[2], NULL, 10);
	if (total <= 0 || wave <= 0) {
		fprintf(stderr, "reap_c: N and WAVE must be positive\n");
		return 2;
	}
	pids = calloc((size_t)wave, sizeof(*pids));
	if (!pids)
		return 1;
	while (reaped < total) {
		int want = (int)(total - reaped < wave ? total - reaped : wave);
		int made = fork_wave(pids, want);
		int got = 0, status;
		double t0;

		if (made == 0) {
			fprintf(stderr, "reap_c: fork: %s\n", strerror(errno));
			return 1;
		}
		wait_zombies(pids, made);
		t0 = now();
		while (waitpid(-1, &status, WNOHANG) > 0) {
			/* decode the status, as the Lua bindings do */
			sink += WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
			got++;
		}
		spent += now() - t0;
		reaped += got;
	}
	printf("reap_c reaped %ld seconds %.9f\n", reaped, spent);
	free(pids);
	return 0;
}
