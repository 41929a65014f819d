/*
 * epoll_echo.c - the raw-epoll echo server that forkloop-echo is measured
 * against (the yardstick): one thread, one level-triggered epoll instance,
 * one read and one write per event, no features. Bytes a write does not take
 * are parked and the connection waits for EPOLLOUT only until they are gone,
 * so a peer that does not read is not read either. Built and run by
 * bench/compare only; not part of forkloop.
 *
 * usage: epoll_echo [--reuseport] [--unix PATH] PORT [ADDR]
 *   ADDR is an IPv4 address, 127.0.0.1 by default; PORT 0 lets the kernel pick.
 *   --reuseport sets SO_REUSEPORT on the listening socket, so that several
 *   independent instances (one thread each) can listen on one port and the
 *   kernel spreads the connections among them: bench/compare --cores N
 *   starts the first with PORT 0 and the others on the port it printed.
 *   --unix PATH also listens on a Unix stream socket at PATH (a file left
 *   there is removed first), served by the same loop: bench/compare's
 *   Unix socket cell.
 * prints: "epoll_echo: listening on port N" on standard error, then serves
 * until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <err.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
	char *left; /* bytes a write did not take, or NULL */
	size_t off, len;
};

static int again(void)
{
	return errno == EAGAIN || errno == EINTR;
}

static int watch(int ep, int op, int fd, uint32_t events)
{
	struct epoll_event e = {.events = events, .data.fd = fd};

	return epoll_ctl(ep, op, fd, &e);
}

static void conn_close(int fd, struct conn *c)
{
	free(c->left);
	c->left = NULL;
	close(fd);
}

static int conn_readcb(int ep, int fd, struct conn *c)
{
	char buf[65536];
	ssize_t r, w;

	if ((r = read(fd, buf, sizeof buf)) <= 0)
		return r < 0 && again() ? 0 : -1;
	if ((w = write(fd, buf, r)) < 0 && !again())
		return -1;
	if (w == r)
		return 0;
	c->off = 0;
	c->len = w < 0 ? r : r - w;
	if ((c->left = malloc(c->len)) == NULL)
		return -1;
	memcpy(c->left, buf + r - c->len, c->len);
	return watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
}

static int conn_writecb(int ep, int fd, struct conn *c)
{
	ssize_t w;

	if ((w = write(fd, c->left + c->off, c->len - c->off)) < 0)
		return again() ? 0 : -1;
	if ((c->off += w) < c->len)
		return 0;
	free(c->left);
	c->left = NULL;
	return watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
}

/*
 * Out of descriptors (EMFILE, ENFILE): stop, the rest wait in the backlog.
 * tcp: set TCP_NODELAY (not on a Unix socket).
 */
static void accept_all(int ep, int lfd, size_t nconns, int tcp)
{
	int fd, one = 1;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0)
			return;
		if (tcp)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
			           sizeof one);
		if ((size_t)fd >= nconns ||
		    watch(ep, EPOLL_CTL_ADD, fd, EPOLLIN))
			close(fd);
	}
}

static int listen_on(struct sockaddr_in *sa, int reuseport)
{
	socklen_t len = sizeof *sa;
	int fd, one = 1;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 ||
	    listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)sa, &len) < 0)
		return -1;
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof su.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(su.sun_path, path, strlen(path) + 1);
	unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&su, sizeof su) < 0 ||
	    listen(fd, 4096) < 0)
		return -1;
	return fd;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: epoll_echo [--reuseport] [--unix PATH] PORT [ADDR]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	const char *addr, *unix_path = NULL;
	struct epoll_event evs[512];
	struct rlimit rl;
	struct conn *conns;
	size_t nconns;
	char *end;
	long port;
	int ep, lfd, ufd = -1, n, k, rc, reuseport = 0;

	if (argc > 1 && strcmp(argv[1], "--reuseport") == 0) {
		reuseport = 1;
		argc--;
		argv++;
	}
	if (argc > 2 && strcmp(argv[1], "--unix") == 0) {
		unix_path = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2 || argc > 3)
		usage();
	addr = argc > 2 ? argv[2] : "127.0.0.1";
	port = strtol(argv[1], &end, 10);
	if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535 ||
	    inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		usage();
	sa.sin_port = htons(port);
	signal(SIGPIPE, SIG_IGN);
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	nconns = rl.rlim_cur < (1 << 20) ? rl.rlim_cur : (1 << 20);
	if ((conns = calloc(nconns, sizeof *conns)) == NULL)
		err(1, "calloc");
	if ((lfd = listen_on(&sa, reuseport)) < 0)
		err(1, "cannot listen on %s:%s", addr, argv[1]);
	if (unix_path != NULL && (ufd = listen_unix(unix_path)) < 0)
		err(1, "cannot listen on unix:%s", unix_path);
	if ((ep = epoll_create1(0)) < 0 ||
	    watch(ep, EPOLL_CTL_ADD, lfd, EPOLLIN) ||
	    (ufd >= 0 && watch(ep, EPOLL_CTL_ADD, ufd, EPOLLIN)))
		err(1, "epoll");
	fprintf(stderr, "epoll_echo: listening on port %d\n",
	        ntohs(sa.sin_port));
	fflush(stderr);

	for (;;) {
		if ((n = epoll_wait(ep, evs, 512, -1)) < 0 && errno != EINTR)
			err(1, "epoll_wait");
		for (k = 0; k < n; k++) {
			int fd = evs[k].data.fd;

			if (fd == lfd || fd == ufd) {
				accept_all(ep, fd, nconns, fd == lfd);
				continue;
			}
			if (evs[k].events & (EPOLLHUP | EPOLLERR))
				rc = -1;
			else if (evs[k].events & EPOLLOUT)
				rc = conn_writecb(ep, fd, &conns[fd]);
			else
				rc = conn_readcb(ep, fd, &conns[fd]);
			if (rc < 0)
				conn_close(fd, &conns[fd]);
		}
	}
}
