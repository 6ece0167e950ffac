/*
 * notify_sink.c - a local datagram receiver standing in for the service
 * manager's notify socket in the notify and idle benchmarks: binds a unix
 * datagram socket at PATH, reads and counts every message until SIGTERM or
 * SIGINT, then prints "messages N" (and, with -v, each message as it comes,
 * prefixed with a CLOCK_MONOTONIC timestamp).
 *
 *   build/bench/notify_sink [-v] PATH
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct sigaction act = {.sa_handler = on_signal};	/* no SA_RESTART */
	int verbose = argc == 3 && strcmp(argv[1], "-v") == 0;
	const char *path = argv[argc - 1];
	long count = 0;
	char buf[4097];
	int fd, big = 4 << 20;

	if (argc < 2 || strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: notify_sink [-v] PATH\n");
		return 2;
	}
	strcpy(sa.sun_path, path);
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr, "notify_sink: %s: %s\n", path, strerror(errno));
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

		if (n < 0)
			continue;	/* EINTR: check stop */
		count++;
		if (verbose) {
			struct timespec ts;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			buf[n] = '\0';
			printf("%ld.%09ld %s\n", (long)ts.tv_sec, ts.tv_nsec, buf);
			fflush(stdout);
		}
	}
	printf("messages %ld\n", count);
	unlink(path);
	return 0;
}
