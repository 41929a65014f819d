/*
 * epoll_client.c - the minimal raw-epoll echo client that forkloop-bench is
 * measured against: closed loop, one message in flight per connection, one
 * read and one write per event, no checks beyond byte counts. Built and run
 * by bench/compare only; not part of forkloop.
 *
 * usage: epoll_client HOST PORT CONNS SIZE SECONDS
 * prints: {"msgs_per_sec": N, "messages": N, "duration_s": S}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct cl {
	int fd;
	size_t got;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dial(const struct sockaddr_in *sa)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 ||
	    connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct epoll_event evs[512];
	struct cl *cls;
	char *msg, *buf;
	size_t size;
	long i, nconns;
	unsigned long long msgs = 0;
	double secs, t0, end;
	int ep;

	if (argc != 6) {
		fprintf(stderr,
		        "usage: epoll_client HOST PORT CONNS SIZE SECONDS\n");
		return 2;
	}
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	sa.sin_port = htons(atoi(argv[2]));
	nconns = atol(argv[3]);
	size = strtoul(argv[4], NULL, 10);
	secs = atof(argv[5]);
	cls = calloc(nconns, sizeof *cls);
	msg = malloc(size);
	buf = malloc(65536);
	memset(msg, 'x', size);
	ep = epoll_create1(0);
	for (i = 0; i < nconns; i++) {
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = &cls[i]};

		cls[i].fd = dial(&sa);
		epoll_ctl(ep, EPOLL_CTL_ADD, cls[i].fd, &e);
	}
	t0 = now();
	end = t0 + secs;
	for (i = 0; i < nconns; i++)
		if (write(cls[i].fd, msg, size) != (ssize_t)size)
			return 1;
	while (now() < end) {
		int n = epoll_wait(ep, evs, 512, 100), k;

		for (k = 0; k < n; k++) {
			struct cl *c = evs[k].data.ptr;
			ssize_t r = read(c->fd, buf, 65536);

			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				fprintf(stderr,
				        "epoll_client: connection lost\n");
				return 1;
			}
			c->got += (size_t)r;
			if (c->got < size)
				continue;
			c->got -= size;
			msgs++;
			if (write(c->fd, msg, size) != (ssize_t)size)
				return 1;
		}
	}
	secs = now() - t0;
	printf("{\"msgs_per_sec\": %.1f, \"messages\": %llu, \"duration_s\": "
	       "%.3f}\n",
	       msgs / secs, msgs, secs);
	return 0;
}
