/*
 * listener.c - bind listening sockets for every address a spec resolves to.
 *
 * Done by hand rather than with evconnlistener_new_bind so that one name can
 * give several sockets, each error names the address that failed, and the
 * backlog is ours (LISTENER_BACKLOG) rather than libevent's 128.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forkloop/listener.h"

static int listener_open_one(const struct evutil_addrinfo *ai, int socktype)
{
	int fd, one = 1, saved;

	fd = socket(ai->ai_family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	            ai->ai_protocol);
	if (fd < 0)
		return -1;
	/*
	 * For TCP, SO_REUSEADDR only skips TIME_WAIT; for UDP it would let two
	 * processes bind one port and hide "Address already in use".
	 */
	if (socktype == SOCK_STREAM &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		goto fail;
	/* "[::]:P" and "0.0.0.0:P" are separate sockets, as the user asked. */
	if (ai->ai_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
		goto fail;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		goto fail;
	if (socktype == SOCK_STREAM && listen(fd, LISTENER_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int listener_bind(const struct addr *a, int socktype, int *fds, size_t max,
                  char *err, size_t errlen)
{
	struct evutil_addrinfo *res, *ai;
	char name[ADDR_STRLEN];
	int gai_err;
	size_t n = 0;

	res = addr_resolve(a, socktype, 1, &gai_err);
	if (res == NULL) {
		snprintf(err, errlen, "cannot listen on %s: %s",
		         addr_spec_format(a, name, sizeof name),
		         evutil_gai_strerror(gai_err));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int fd;

		if (n == max) {
			snprintf(err, errlen, "cannot listen on %s: %s",
			         addr_spec_format(a, name, sizeof name),
			         "too many addresses");
			goto fail;
		}
		fd = listener_open_one(ai, socktype);
		if (fd < 0) {
			snprintf(err, errlen, "cannot listen on %s: %s",
			         addr_format(ai->ai_addr, ai->ai_addrlen, name,
			                     sizeof name),
			         strerror(errno));
			goto fail;
		}
		fds[n++] = fd;
	}
	evutil_freeaddrinfo(res);
	return (int)n;
fail:
	while (n > 0)
		close(fds[--n]);
	evutil_freeaddrinfo(res);
	return -1;
}

char *listener_local_name(int fd, char *buf, size_t buflen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(buf, buflen, "?");
		return buf;
	}
	return addr_format((struct sockaddr *)&ss, len, buf, buflen);
}
