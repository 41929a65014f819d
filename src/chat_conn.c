/*
 * chat_conn.c - setting up forkloop-chat's connection, the same for both
 * designs (listen on every address and accept one peer, or connect, then
 * the TLS handshake if asked), and, at its end, checking that the peer got
 * everything. Also the relay's listening sockets: those systemd passed
 * (socket activation), or else those of --listen.
 *
 * The TLS handshake is done here, before either design starts, with ppoll
 * on the non-blocking socket: an endpoint has one peer and nothing else to
 * serve meanwhile, so both designs share one bounded handshake and one way
 * of reporting its failure, and get an established SSL.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "forkloop/activation.h"
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

/* Is fd a Unix socket (SO_DOMAIN)? 1 or 0. */
static int chat_sock_local(int fd)
{
	int family = AF_UNSPEC;
	socklen_t len = sizeof family;

	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) == 0 &&
	       family == AF_UNIX;
}

/*
 * On a Unix stream socket what was written stays charged to the sender
 * until the peer reads it (SIOCOUTQ, unix(7)): everything was read once
 * that is 0. A peer that closes with input unread leaves ECONNRESET.
 * Returns sent bytes or 0 in *acked, or -1 with errno set.
 */
static int chat_unix_read(int fd, uint64_t sent, uint64_t *acked)
{
	int outq = 0;

	if (ioctl(fd, SIOCOUTQ, &outq) < 0)
		return -1;
	*acked = outq == 0 ? sent : 0;
	return 0;
}

int chat_deliver(int fd, uint64_t sent, uint64_t unsent, int reset)
{
	struct tcp_info ti;
	struct timespec t0;
	socklen_t len;
	uint64_t acked, lost;
	int err, local = chat_sock_local(fd);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		err = chat_sock_error(fd);
		if (err == ECONNRESET || err == EPIPE)
			reset = 1;
		if (local) {
			if (chat_unix_read(fd, sent, &acked) < 0) {
				log_error("cannot tell what the peer received: "
				          "%s", strerror(errno));
				return 1;
			}
			if (reset || acked >= sent || chat_sig_caught ||
			    chat_ms_since(&t0) >= CHAT_LINGER_MS)
				break;
			poll(NULL, 0, 5);
			continue;
		}
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
		log_info("listening on %s%s",
		         listener_local_name(l->fd[i], name, sizeof name),
		         o->addr.tls ? " (tls)" : "");
	return 0;
}

/*
 * Whether the relay can serve inherited socket i of a: 0, or -1 with why in
 * buf. The relay speaks over connections: a datagram socket has no place
 * in it.
 */
static int chat_inherited_check(const struct activation *a, size_t i,
                                char *buf, size_t len)
{
	int fd = a->fds[i].fd;

	if (a->fds[i].socktype != SOCK_STREAM)
		snprintf(buf, len, "socket activation: fd %d is a datagram "
		         "socket: the relay serves stream sockets only", fd);
	else if (i >= CHAT_MAX_LISTEN)
		snprintf(buf, len, "socket activation: fd %d: the relay serves "
		         "at most %d sockets", fd, CHAT_MAX_LISTEN);
	else if (sock_set_blocking(fd, 0) < 0)
		snprintf(buf, len, "socket activation: fd %d: %s", fd,
		         strerror(errno));
	else
		return 0;
	return -1;
}

int chat_listen_inherited(const struct chat_opts *o, struct chat_listeners *l)
{
	char err[512], name[ADDR_STRLEN];
	struct activation a;
	size_t i;
	int n;

	l->n = 0;
	n = activation_get(&a, err, sizeof err);
	if (n < 0) {
		log_error("%s", err);
		return -1;
	}
	if (n == 0)
		return chat_listen(o, l);
	for (i = 0; i < a.n; i++) {
		if (chat_inherited_check(&a, i, err, sizeof err) < 0) {
			log_error("%s", err);
			for (i = 0; i < a.n; i++)
				close(a.fds[i].fd);
			l->n = 0;
			return -1;
		}
		l->fd[l->n++] = a.fds[i].fd;
	}
	for (i = 0; i < l->n; i++)
		log_info("listening on %s (%sactivated fd %d)",
		         listener_local_name(l->fd[i], name, sizeof name),
		         o->addr.tls ? "tls, " : "", l->fd[i]);
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

int chat_accept(const struct chat_listeners *l, int tls, struct admit *a,
                struct admit_ticket *t)
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
		if (fd >= 0 && chat_admit(a, fd, (struct sockaddr *)&ss, len,
		                          t) == ADMIT_OK)
			break;
		if (fd >= 0) {
			close(fd);
			fd = -1;
			continue;
		}
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
		admit_release(a, t);
		fd = -1;
	}
	if (fd >= 0) {
		if (ss.ss_family != AF_UNIX)
			sock_nodelay(fd);
		if (!tls)
			log_info("connected to %s",
			         listener_peer_name(fd, (struct sockaddr *)&ss,
			                            len, name, sizeof name));
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
		log_error("cannot resolve %s: %s",
		          o->addr.is_unix ? o->addr.path : o->addr.host,
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
	addr_free(res);
	if (fd >= 0) {
		if (!o->addr.is_unix)
			sock_nodelay(fd);
		if (!o->addr.tls)
			log_info("connected to %s", name);
	}
	return fd;
}

void chat_deliver_start(int fd)
{
	chat_acked_base = chat_tcp_acked(fd);
}

int chat_tls_init(const struct chat_opts *o, struct chat_tls *t)
{
	struct tls_client_conf conf;

	memset(t, 0, sizeof *t);
	if (!o->addr.tls)
		return 0;
	if (o->listen) {
		t->server = tls_server_new(o->tls_cert, o->tls_key,
		                           o->tls_verify_client);
		return t->server != NULL ? 0 : -1;
	}
	memset(&conf, 0, sizeof conf);
	conf.ca = o->tls_ca;
	conf.cert = o->tls_cert;
	conf.key = o->tls_key;
	conf.verify = !o->tls_insecure;
	t->client = tls_client_ctx_new(&conf);
	if (t->client == NULL)
		return -1;
	/* Errors only with -q, but this one the user must not miss. */
	if (o->tls_insecure)
		log_error("--tls-insecure: not verifying the server's "
		          "certificate");
	return 0;
}

void chat_tls_free(struct chat_tls *t)
{
	tls_server_free(t->server);
	SSL_CTX_free(t->client);
	memset(t, 0, sizeof *t);
}

/*
 * Wait until fd has events or the deadline passes, SIGINT and SIGTERM
 * blocked but for the wait (as chat_accept). Returns 1 when ready, 0 at
 * the deadline, -1 with errno (EINTR: a signal was caught).
 */
static int chat_tls_wait(int fd, short events, const struct timespec *end)
{
	struct pollfd pfd;
	struct timespec now, left;
	sigset_t stop, old;
	int r = -1;

	pfd.fd = fd;
	pfd.events = events;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	errno = EINTR;
	while (!chat_sig_caught) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = end->tv_sec - now.tv_sec;
		left.tv_nsec = end->tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000;
		}
		if (left.tv_sec < 0) {
			r = 0;
			break;
		}
		r = ppoll(&pfd, 1, &left, &old);
		if (r >= 0 || errno != EINTR)
			break;
	}
	if (chat_sig_caught) {
		r = -1;
		errno = EINTR;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return r > 0 ? 1 : r;
}

/* Why SSL_do_handshake's result r on ssl failed, into buf. */
static const char *chat_tls_why(SSL *ssl, int r, char *buf, size_t len)
{
	int e = SSL_get_error(ssl, r);

	if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		snprintf(buf, len, "%s",
		         errno != 0 && r < 0
		                 ? strerror(errno)
		                 : "the peer closed the connection");
		return buf;
	}
	return tls_handshake_error(ssl, 0, buf, len);
}

/*
 * Drive the handshake until done; -1 with why filled, or on a signal; -2
 * with why filled when secs passed.
 */
static int chat_tls_drive(SSL *ssl, int fd, double secs, char *why, size_t len)
{
	struct timespec end;
	int r, e;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += (time_t)secs;
	end.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
	if (end.tv_nsec >= 1000000000) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000;
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_do_handshake(ssl);
		if (r == 1)
			return 0;
		e = SSL_get_error(ssl, r);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			chat_tls_why(ssl, r, why, len);
			return -1;
		}
		r = chat_tls_wait(
		        fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, &end);
		if (r == 0) {
			snprintf(why, len, "not done in %g s", secs);
			return -2;
		}
		if (r < 0) {
			snprintf(why, len, "%s", strerror(errno));
			return -1;
		}
	}
}

SSL *chat_tls_handshake(const struct chat_opts *o, const struct chat_tls *t,
                        int fd)
{
	struct sockaddr_storage ss;
	socklen_t slen = sizeof ss;
	char why[256], name[ADDR_STRLEN];
	const char *what;
	int flags, r;
	SSL *ssl;

	ssl = o->listen ? tls_server_ssl(t->server)
	                : tls_client_ssl(t->client, o->addr.host);
	flags = fcntl(fd, F_GETFL);
	if (ssl == NULL || flags < 0 ||
	    fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    SSL_set_fd(ssl, fd) != 1) {
		log_error("cannot set up TLS: %s",
		          ssl == NULL ? "out of memory"
		                      : tls_strerror(0, why, sizeof why));
		SSL_free(ssl);
		return NULL;
	}
	/* tls_server_new ignores it for the echo; a chat reports it. */
	SSL_clear_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Before the handshake: a peer that refuses us may be gone after. */
	if (getpeername(fd, (struct sockaddr *)&ss, &slen) == 0)
		addr_format((struct sockaddr *)&ss, slen, name, sizeof name);
	else
		snprintf(name, sizeof name, "%s:%s", o->addr.host,
		         o->addr.port);
	r = chat_tls_drive(ssl, fd,
	                   o->listen ? o->tls_handshake
	                             : CHAT_DEFAULT_TLS_HANDSHAKE,
	                   why, sizeof why);
	/* Over TLS, connected means the handshake is done. */
	if (r == 0) {
		log_info("connected to %s (%s)", name, SSL_get_version(ssl));
		return ssl;
	}
	SSL_free(ssl);
	if (chat_sig_caught)
		return NULL;
	what = r == -2 ? "tls handshake timeout" : "tls handshake failed";
	if (o->listen) /* named as the relay names them */
		log_error("%s: %s: %s", name, what, why);
	else if (r == -2)
		log_error("cannot connect to %s: %s: %s", name, what, why);
	else
		log_error("cannot connect to %s: %s", name, why);
	return NULL;
}

unsigned long chat_tls_alert(SSL *ssl)
{
	unsigned long e;
	char b;

	ERR_clear_error();
	if (SSL_peek(ssl, &b, 1) > 0)
		return 0;
	e = ERR_peek_error();
	ERR_clear_error();
	if (ERR_GET_LIB(e) != ERR_LIB_SSL ||
	    ERR_GET_REASON(e) < SSL_AD_REASON_OFFSET)
		return 0;
	return e;
}

void chat_tls_quit(SSL *ssl)
{
	if (ssl == NULL || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
		return;
	ERR_clear_error();
	if (SSL_shutdown(ssl) < 0)
		log_verbose("cannot send close_notify");
	ERR_clear_error();
}

/* Bytes written to fd that its peer's TCP has not acknowledged. */
static int chat_outq(int fd, uint64_t *n)
{
	int q;

	if (ioctl(fd, SIOCOUTQ, &q) < 0)
		return -1;
	*n = q > 0 ? (uint64_t)q : 0;
	return 0;
}

uint64_t chat_tls_notify_mark(int fd)
{
	uint64_t q;

	if (chat_outq(fd, &q) < 0)
		return 0;
	return chat_tcp_acked(fd) + q;
}

int chat_deliver_tls(int fd, uint64_t unsent, int reset, uint64_t notify_at)
{
	struct tcp_info ti;
	struct timespec t0;
	socklen_t len;
	uint64_t q = 0;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		err = chat_sock_error(fd);
		if (err == ECONNRESET || err == EPIPE)
			reset = 1;
		memset(&ti, 0, sizeof ti);
		len = sizeof ti;
		if (chat_outq(fd, &q) < 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
			log_error("cannot tell what the peer received: %s",
			          strerror(errno));
			return 1;
		}
		if (ti.tcpi_state == CHAT_TCP_CLOSE && q > 0)
			reset = 1;
		if (reset || q == 0 || chat_sig_caught ||
		    chat_ms_since(&t0) >= CHAT_LINGER_MS)
			break;
		poll(NULL, 0, 5);
	}
	if (chat_sig_caught)
		return chat_sig_status();
	/*
	 * The peer closed first and its TCP acknowledged every record before
	 * our close_notify: a socket the peer closed answers that record
	 * with a reset, where a plain FIN draws none. Nothing was lost.
	 */
	if (unsent == 0 && notify_at > 0 && ti.tcpi_bytes_acked >= notify_at)
		return 0;
	if (reset && unsent > 0)
		log_error("peer reset the connection: %llu bytes not delivered",
		          (unsigned long long)unsent);
	else if (reset)
		log_error("peer reset the connection");
	else if (unsent > 0)
		log_error("%llu bytes not delivered to the peer",
		          (unsigned long long)unsent);
	else if (q > 0)
		log_error("%llu bytes of TLS records not acknowledged by the "
		          "peer",
		          (unsigned long long)q);
	else
		return 0;
	return CHAT_UNDELIVERED;
}
