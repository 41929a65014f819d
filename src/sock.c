/*
 * sock.c - blocking I/O that survives short writes and signals, for the
 * forked designs; socket option helpers shared by all modes.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forkloop/sock.h"

ssize_t sock_write_all(int fd, const void *buf, size_t n,
                       volatile const int *stop)
{
	const char *p = buf;
	size_t left = n;

	while (left > 0) {
		ssize_t w = write(fd, p, left);

		if (w < 0) {
			if (errno == EINTR && (stop == NULL || !*stop))
				continue;
			return -1;
		}
		p += w;
		left -= (size_t)w;
	}
	return (ssize_t)n;
}

ssize_t sock_read(int fd, void *buf, size_t n, volatile const int *stop)
{
	for (;;) {
		ssize_t r = read(fd, buf, n);

		if (r >= 0 || errno != EINTR || (stop != NULL && *stop))
			return r;
	}
}

int sock_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int sock_set_blocking(int fd, int blocking)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	if (fcntl(fd, F_SETFL,
	          blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK) < 0)
		return -1;
	return flags;
}
