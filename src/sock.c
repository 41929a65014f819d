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

int sock_keepalive(int fd, unsigned idle_s)
{
	int on = 1, idle = (int)idle_s, cnt = SOCK_KEEPALIVE_PROBES;
	int intvl = idle / 3 > 0 ? idle / 3 : 1;

	if (idle_s < 1 || idle_s > SOCK_KEEPALIVE_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) <
	            0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
		return -1;
	return 0;
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
