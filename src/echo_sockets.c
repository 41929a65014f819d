/*
 * echo_sockets.c - which sockets forkloop-echo serves, the same for both
 * designs: those systemd passed through socket activation, or else TCP
 * sockets bound to every --listen address and UDP sockets beside them.
 * Everything is bound before anything is served, so a taken port fails the
 * start before a single "listening on" line is printed.
 *
 * Also what both designs ask of an accepted connection: its options,
 * whether bytes still move on it (--idle-timeout), and whether closing it
 * now would lose echo already owed.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forkloop/activation.h"
#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/sock.h"

struct echo_sockets {
	size_t n;
	struct echo_socket s[ECHO_MAX_SOCKETS];
};

static void sockets_close(struct echo_sockets *ss, size_t from)
{
	for (size_t i = from; i < ss->n; i++)
		close(ss->s[i].fd);
	ss->n = from;
}

static int sockets_add(struct echo_sockets *ss, int fd, int socktype,
                       int activated)
{
	if (ss->n == ECHO_MAX_SOCKETS) {
		log_error("too many sockets (at most %d)", ECHO_MAX_SOCKETS);
		close(fd);
		return -1;
	}
	ss->s[ss->n].fd = fd;
	ss->s[ss->n].socktype = socktype;
	ss->s[ss->n].activated = activated;
	ss->s[ss->n].tls = 0;
	ss->n++;
	return 0;
}

/* Bind every address a resolves to. */
static int sockets_bind(struct echo_sockets *ss, const struct addr *a,
                        int socktype)
{
	int fds[ECHO_MAX_SOCKETS];
	char err[512];
	int n;

	n = listener_bind(a, socktype, fds, ECHO_MAX_SOCKETS - ss->n, err,
	                  sizeof err);
	if (n == LISTENER_TOO_MANY) {
		log_error("%s: forkloop-echo serves at most %d sockets, one per "
		          "address of each --listen, two with --udp",
		          err, ECHO_MAX_SOCKETS);
		return -1;
	}
	if (n < 0) {
		log_error("%s", err);
		return -1;
	}
	for (int i = 0; i < n; i++)
		if (sockets_add(ss, fds[i], socktype, 0) == 0)
			ss->s[ss->n - 1].tls = a->tls;
	return 0;
}

/* UDP on the address and port a bound TCP socket got: port 0 picks one. */
static int sockets_bind_udp_beside(struct echo_sockets *ss, int tcpfd)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	struct addr a;
	const char *why;

	if (getsockname(tcpfd, (struct sockaddr *)&sa, &len) < 0 ||
	    getnameinfo((struct sockaddr *)&sa, len, host, sizeof host, serv,
	                sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		log_error("cannot serve udp: no local address");
		return -1;
	}
	if (addr_set(host, serv, &a, &why) < 0) {
		log_error("cannot serve udp on %s: %s", host, why);
		return -1;
	}
	/* "[::]" beside "0.0.0.0" keeps to IPv6 for UDP as for TCP. */
	len = sizeof a.v6only;
	if (sa.ss_family == AF_INET6 &&
	    getsockopt(tcpfd, IPPROTO_IPV6, IPV6_V6ONLY, &a.v6only, &len) < 0)
		a.v6only = 0;
	return sockets_bind(ss, &a, SOCK_DGRAM);
}

/* The address family of the socket fd (SO_DOMAIN), or AF_UNSPEC. */
static int socket_family(int fd)
{
	int family = AF_UNSPEC;
	socklen_t len = sizeof family;

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0)
		return AF_UNSPEC;
	return family;
}

static int sockets_inherit(struct echo_sockets *ss, const struct activation *a)
{
	for (size_t i = 0; i < a->n; i++) {
		const struct activation_fd *f = &a->fds[i];

		if (sock_set_blocking(f->fd, 0) < 0) {
			log_error("socket activation: fd %d: %s", f->fd,
			          strerror(errno));
			return -1;
		}
		if (sockets_add(ss, f->fd, f->socktype, 1) < 0)
			return -1;
	}
	return 0;
}

static int sockets_open(const struct echo_opts *o, struct echo_sockets *ss)
{
	struct activation act;
	char err[512];
	size_t i, ntcp;
	int n;

	ss->n = 0;
	n = activation_get(&act, err, sizeof err);
	if (n < 0) {
		log_error("%s", err);
		return -1;
	}
	if (n > 0) {
		if (sockets_inherit(ss, &act) < 0)
			goto fail;
		return 0;
	}
	for (i = 0; o->udp != ECHO_UDP_ONLY && i < o->nlisten; i++)
		if (sockets_bind(ss, &o->listen[i], SOCK_STREAM) < 0)
			goto fail;
	ntcp = ss->n;
	/*
	 * UDP has no TLS (that would be DTLS) and is not served on Unix
	 * sockets: beside plain IP listeners only.
	 */
	for (i = 0; o->udp == ECHO_UDP_ON && i < ntcp; i++)
		if (!ss->s[i].tls &&
		    socket_family(ss->s[i].fd) != AF_UNIX &&
		    sockets_bind_udp_beside(ss, ss->s[i].fd) < 0)
			goto fail;
	for (i = 0; o->udp == ECHO_UDP_ONLY && i < o->nlisten; i++)
		if (sockets_bind(ss, &o->listen[i], SOCK_DGRAM) < 0)
			goto fail;
	return 0;
fail:
	sockets_close(ss, 0);
	return -1;
}

/*
 * "listening on 127.0.0.1:6666 (udp, activated fd 3, event mode)",
 * "listening on 127.0.0.1:6443 (tls, event mode)"
 */
static void socket_log(const struct echo_socket *s, enum echo_mode mode)
{
	char name[ADDR_STRLEN], act[32] = "";

	if (s->activated)
		snprintf(act, sizeof act, "activated fd %d, ", s->fd);
	log_info("listening on %s (%s%s%s mode)",
	         listener_local_name(s->fd, name, sizeof name),
	         s->socktype == SOCK_DGRAM ? "udp, "
	         : s->tls                  ? "tls, "
	                                   : "",
	         act, echo_mode_name(mode));
}

int echo_sockets_serve(const struct echo_opts *o, echo_serve_fn *serve,
                       void *arg)
{
	struct echo_sockets ss;

	if (sockets_open(o, &ss) < 0)
		return -1;
	for (size_t i = 0; i < ss.n; i++) {
		if (serve(arg, &ss.s[i]) < 0) {
			sockets_close(&ss, i + 1);
			return -1;
		}
		socket_log(&ss.s[i], o->mode);
	}
	activation_notify("READY=1");
	return 0;
}

int echo_conn_setup(const struct echo_opts *o, int fd, int family)
{
	/* TCP options mean nothing on a Unix socket and would fail there. */
	if (family == AF_UNIX)
		return 0;
	if (sock_nodelay(fd) < 0)
		return -1;
	if (o->keepalive != 0 && sock_keepalive(fd, o->keepalive) < 0)
		return -1;
	return 0;
}

int echo_progress_moved(int fd, uint64_t in, uint64_t out,
                        struct echo_progress *p)
{
	struct echo_progress now = {.in = in, .out = out};
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	int moved;

	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	    len >= offsetof(struct tcp_info, tcpi_bytes_received) +
	                    sizeof ti.tcpi_bytes_received) {
		now.acked = ti.tcpi_bytes_acked;
		now.received = ti.tcpi_bytes_received;
	}
	moved = memcmp(&now, p, sizeof now) != 0;
	*p = now;
	return moved;
}

int echo_linger_needed(int fd)
{
	int unread = 0, unsent = 0;

	if (ioctl(fd, FIONREAD, &unread) < 0 || ioctl(fd, SIOCOUTQ, &unsent) < 0)
		return 1;
	return unread > 0 || unsent > 0;
}
