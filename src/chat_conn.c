/*
 * chat_conn.c - setting up forkloop-chat's connection, the same for both
 * designs (listen on every address and accept one peer, or connect), and,
 * at its end, checking that the peer got everything.
 */
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/listener.h"
#include "forkloop/sock.h"

/* The connection's pending error (SO_ERROR), which reading clears. */
static int chat_sock_error(int fd)
{
	socklen_t len;
	int err = 0;

	len = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* TCP_CLOSE in the kernel's tcp_states.h: closed, or reset. */
#define CHAT_TCP_CLOSE 7

/*
 * tcpi_bytes_acked when the session started: it may count the SYN, and
 * chat_deliver counts from here.
 */
static uint64_t chat_acked_base;

/* Bytes of ours the peer's TCP acknowledged (tcp(7) TCP_INFO), or 0. */
static uint64_t chat_tcp_acked(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof ti;

	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return 0;
	return ti.tcpi_bytes_acked;
}

static long chat_ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 +
	       (now.tv_nsec - t0->tv_nsec) / 1000000;
}

int chat_deliver(int fd, uint64_t sent, uint64_t unsent, int reset)
{
	struct tcp_info ti;
	struct timespec t0;
	socklen_t len;
	uint64_t acked, lost;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		err = chat_sock_error(fd);
		if (err == ECONNRESET || err == EPIPE)
			reset = 1;
		memset(&ti, 0, sizeof ti);
		len = sizeof ti;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
			log_error("cannot tell what the peer received: %s",
			          strerror(errno));
			return 1;
		}
		/* Our FIN counts as one more byte once acknowledged. */
		acked = ti.tcpi_bytes_acked > chat_acked_base
		                ? ti.tcpi_bytes_acked - chat_acked_base
		                : 0;
		/* Closed with data unacknowledged: a reset already read. */
		if (ti.tcpi_state == CHAT_TCP_CLOSE && acked < sent)
			reset = 1;
		if (reset || acked >= sent || chat_sig_caught ||
		    chat_ms_since(&t0) >= CHAT_LINGER_MS)
			break;
		poll(NULL, 0, 5);
	}
	if (chat_sig_caught)
		return chat_sig_status();
	lost = unsent + (acked >= sent ? 0 : sent - acked);
	if (reset && lost > 0)
		log_error("peer reset the connection: %llu bytes not delivered",
		          (unsigned long long)lost);
	else if (reset)
		log_error("peer reset the connection");
	else if (lost > 0)
		log_error("%llu bytes not delivered to the peer",
		          (unsigned long long)lost);
	else
		return 0;
	return CHAT_UNDELIVERED;
}

int chat_listen(const struct chat_opts *o, struct chat_listeners *l)
{
	char err[512], name[ADDR_STRLEN];
	int n;
	size_t i;

	l->n = 0;
	n = listener_bind(&o->addr, SOCK_STREAM, l->fd, CHAT_MAX_LISTEN, err,
	                  sizeof err);
	if (n < 0) {
		log_error("%s", err);
		return -1;
	}
	l->n = (size_t)n;
	for (i = 0; i < l->n; i++)
		log_info("listening on %s",
		         listener_local_name(l->fd[i], name, sizeof name));
	return 0;
}

void chat_listen_close(struct chat_listeners *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		close(l->fd[i]);
	l->n = 0;
}

/*
 * Accept one connection queued on a ready socket of l; -1 with errno EAGAIN
 * when another process, or a peer that gave up, left nothing to take.
 */
static int chat_accept_ready(const struct chat_listeners *l,
                             const struct pollfd *pfd, struct sockaddr *sa,
                             socklen_t *len, size_t *which)
{
	size_t i;
	int fd;

	for (i = 0; i < l->n; i++) {
		if (pfd[i].revents == 0)
			continue;
		*which = i;
		fd = accept4(l->fd[i], sa, len, SOCK_CLOEXEC);
		if (fd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
		                errno != ECONNABORTED && errno != EINTR))
			return fd;
	}
	errno = EAGAIN;
	return -1;
}

int chat_accept(const struct chat_listeners *l)
{
	struct pollfd pfd[CHAT_MAX_LISTEN];
	struct sockaddr_storage ss;
	char name[ADDR_STRLEN];
	sigset_t stop, old;
	socklen_t len;
	size_t i, which = 0;
	int fd = -1, r;

	for (i = 0; i < l->n; i++) {
		pfd[i].fd = l->fd[i];
		pfd[i].events = POLLIN;
	}
	/* Blocked but for the wait itself: the flag is tested, then ppoll
	 * unblocks and waits in one step (ppoll(2), the race it closes). */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	while (!chat_sig_caught) {
		r = ppoll(pfd, (nfds_t)l->n, NULL, &old);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			log_error("cannot wait for a peer: %s", strerror(errno));
			break;
		}
		len = sizeof ss;
		fd = chat_accept_ready(l, pfd, (struct sockaddr *)&ss, &len,
		                       &which);
		if (fd >= 0)
			break;
		if (errno == EAGAIN)
			continue;
		log_error("cannot accept on %s: %s",
		          listener_local_name(l->fd[which], name, sizeof name),
		          strerror(errno));
		break;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (fd >= 0 && chat_sig_caught) {
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		sock_nodelay(fd);
		log_info("connected to %s",
		         addr_format((struct sockaddr *)&ss, len, name,
		                     sizeof name));
	}
	return fd;
}

/* A blocking connect; returns the socket or -1 with errno set. */
static int chat_connect_one(const struct evutil_addrinfo *ai)
{
	int fd, saved;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -1;
	chat_sig_wake_fd = fd;
	if (!chat_sig_caught && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
	    !chat_sig_caught) {
		chat_sig_wake_fd = -1;
		return fd;
	}
	saved = chat_sig_caught ? EINTR : errno;
	chat_sig_wake_fd = -1;
	close(fd);
	errno = saved;
	return -1;
}

int chat_connect(const struct chat_opts *o)
{
	struct evutil_addrinfo *res, *ai;
	char name[ADDR_STRLEN];
	int fd = -1, gai_err;

	res = addr_resolve(&o->addr, SOCK_STREAM, 0, &gai_err);
	if (res == NULL) {
		log_error("cannot resolve %s: %s", o->addr.host,
		          addr_strerror(gai_err));
		return -1;
	}
	for (ai = res; ai != NULL && !chat_sig_caught; ai = ai->ai_next) {
		addr_format(ai->ai_addr, ai->ai_addrlen, name, sizeof name);
		fd = chat_connect_one(ai);
		if (fd >= 0 || chat_sig_caught)
			break;
		if (ai->ai_next != NULL)
			log_verbose("cannot connect to %s: %s", name,
			            strerror(errno));
		else
			log_error("cannot connect to %s: %s", name,
			          strerror(errno));
	}
	evutil_freeaddrinfo(res);
	if (fd >= 0) {
		sock_nodelay(fd);
		log_info("connected to %s", name);
	}
	return fd;
}

void chat_deliver_start(int fd)
{
	chat_acked_base = chat_tcp_acked(fd);
}
