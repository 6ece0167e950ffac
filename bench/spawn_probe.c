/*
 * spawn_probe FILE TAG - appends "TAG MICROSECONDS" to FILE, the time on
 * CLOCK_MONOTONIC (GLib's g_get_monotonic_time clock) at which it started
 * running.  Row 7 (bench/spawn.lua) launches it from Awesome and subtracts
 * the moment awful.spawn was called.
 */
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv)
{
	struct timespec ts;
	FILE *f;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (argc != 3)
		return 2;
	f = fopen(argv[1], "a");
	if (!f)
		return 1;
	fprintf(f, "%s %lld\n", argv[2],
		(long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	return fclose(f) == 0 ? 0 : 1;
}
