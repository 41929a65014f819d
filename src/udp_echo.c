/*
 * udp_echo.c - UDP echo (RFC 862) on an event_base shared with TCP.
 *
 * Datagrams are read in batches with recvmmsg(2) into 64 KiB buffers, so any
 * datagram IPv4 or IPv6 can carry (65,507 or 65,527 bytes) comes back whole;
 * MSG_TRUNC would mean one did not fit, and such a datagram is dropped rather
 * than echoed cut. Each reply is one sendmsg(2), never blocking: a reply the
 * kernel refuses is dropped and counted, as UDP allows.
 *
 * Echo over UDP is a reflector: a forged source address turns it against a
 * third party, or against another service that answers any datagram, or
 * against the daemon itself, in a loop that never ends. So, in this order:
 * - the access lists (--allow, --deny): no reply to a source they refuse;
 * - udp_guard: no reply to the system ports (below 1024), where echo,
 *   chargen and their kind live, nor to an address that is not unicast;
 * - udp_echo_serves: no reply to any address and port the daemon itself
 *   receives on, through any of its sockets. For a wildcard socket that is
 *   its port on every address of the host: getifaddrs(3) lists them, and a
 *   NETLINK_ROUTE socket subscribed to address changes says when to list them
 *   again. It is drained right before each verdict that needs the list: the
 *   kernel queues the notice when the address is added, before anything can
 *   be sent from it, so a datagram from a new address never meets a stale
 *   list;
 * - the rate cap (on by default in forkloop-echo): at most N replies to a
 *   source address in any one second, so that a loop with another echo
 *   service on an ordinary port ends when one of the two runs out of
 *   replies.
 *
 * The rate cap counts the replies to each source in tenths of a second over
 * the last eleven tenths: a sliding window of at least one second, where a
 * token bucket holding N would allow 2N in the first second. A source stays
 * in the fixed table while its window holds a reply, so a source at its cap
 * cannot be pushed out by others and come back with a fresh allowance; while
 * the table is full of such sources, new sources get no reply. An entry is
 * reused only once its window is empty, when forgetting it changes nothing.
 *
 * A socket bound to a wildcard address asks for the destination of each
 * datagram (IP_PKTINFO, IPV6_RECVPKTINFO) and replies from it, so that a
 * client hears back from the address it wrote to.
 */
#include <sys/queue.h>

#include <errno.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/util.h>

#include "forkloop/listener.h"
#include "forkloop/log.h"
#include "forkloop/udp.h"

#define UDP_BUFSIZE 65536
#define UDP_BATCH   8
/* Batches per readable event, so TCP connections get their turn. */
#define UDP_ROUNDS 8
/* Steps a source's window spans: the current one and UDP_RATE_STEPS more. */
#define UDP_RATE_RING (UDP_RATE_STEPS + 1)

/* An address reduced to what the guards compare; IPv4-mapped is IPv4. */
struct udp_key {
	int family;
	unsigned char addr[16];
	unsigned port;
};

/* One source address of the rate cap: its replies, step by step. */
struct udp_source {
	struct udp_key key;
	int64_t step;   /* the latest step ring holds */
	int64_t last;   /* the step of the latest reply */
	uint64_t total; /* replies in ring */
	uint32_t ring[UDP_RATE_RING];
	LIST_ENTRY(udp_source) chain;
	TAILQ_ENTRY(udp_source) lru; /* by last, oldest first */
};

LIST_HEAD(udp_chain, udp_source);
TAILQ_HEAD(udp_lru, udp_source);

struct udp_rate {
	uint64_t rate;
	uint32_t seed;
	int64_t now; /* the latest step seen */
	size_t nused;
	struct udp_lru lru;
	struct udp_chain chains[UDP_RATE_SLOTS];
	struct udp_source s[UDP_RATE_SLOTS];
};

struct udp_sock {
	struct udp_echo *u;
	struct event *ev;
	int fd;
	int wildcard;  /* bound to 0.0.0.0 or :: */
	int dualstack; /* bound to :: and serving IPv4 too */
	struct udp_key key;
	struct sockaddr_storage local;
	socklen_t locallen;
};

struct udp_ctl {
	_Alignas(struct cmsghdr) char buf
	        [CMSG_SPACE(sizeof(struct in6_pktinfo)) +
	         CMSG_SPACE(sizeof(struct in_pktinfo))];
};

/* The host's addresses, for sockets bound to a wildcard address. */
struct udp_self {
	int nl;    /* NETLINK_ROUTE socket told of address changes; -1: none */
	int known; /* addrs lists the host's addresses */
	struct udp_key *addrs;
	size_t n;
};

struct udp_echo {
	struct event_base *base;
	struct udp_rate *rate;
	const struct echo_opts *opts; /* its access lists; NULL: none */
	struct udp_sock socks[UDP_MAX_SOCKS];
	size_t nsocks;
	struct udp_self self;
	uint64_t in, out, dropped;
	uint64_t drop[ECHO_UDP_NDROP]; /* dropped, by reason */
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sockaddr_storage names[UDP_BATCH];
	struct udp_ctl ctl[UDP_BATCH];
	unsigned char *bufs;
};

static const struct {
	unsigned port;
	const char *why;
} udp_reflectors[] = {
        {0, "source port 0"},
        {7, "source port 7 (echo)"},
        {13, "source port 13 (daytime)"},
        {17, "source port 17 (qotd)"},
        {19, "source port 19 (chargen)"},
        {37, "source port 37 (time)"},
};

static int udp_key(const struct sockaddr *sa, struct udp_key *k)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	memset(k, 0, sizeof *k);
	if (sa->sa_family == AF_INET) {
		k->family = AF_INET;
		memcpy(k->addr, &sin->sin_addr, 4);
		k->port = ntohs(sin->sin_port);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	k->port = ntohs(sin6->sin6_port);
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		k->family = AF_INET;
		memcpy(k->addr, sin6->sin6_addr.s6_addr + 12, 4);
		return 0;
	}
	k->family = AF_INET6;
	memcpy(k->addr, &sin6->sin6_addr, 16);
	return 0;
}

static int udp_key_same_addr(const struct udp_key *a, const struct udp_key *b)
{
	return a->family == b->family && memcmp(a->addr, b->addr, 16) == 0;
}

static int udp_key_wildcard(const struct udp_key *k)
{
	static const unsigned char zero[16];

	return memcmp(k->addr, zero, sizeof zero) == 0;
}

static int udp_key_loopback(const struct udp_key *k)
{
	static const unsigned char v6[16] = {[15] = 1};

	if (k->family == AF_INET)
		return k->addr[0] == 127;
	return memcmp(k->addr, v6, sizeof v6) == 0;
}

/* Unspecified, multicast or limited broadcast: a reply reaches none or many. */
static int udp_key_unicast(const struct udp_key *k)
{
	static const unsigned char ones[4] = {255, 255, 255, 255};

	if (k->family == AF_INET)
		return k->addr[0] != 0 && (k->addr[0] & 0xf0) != 0xe0 &&
		       memcmp(k->addr, ones, 4) != 0;
	return !udp_key_wildcard(k) && k->addr[0] != 0xff;
}

static const char *udp_port_why(unsigned port)
{
	for (size_t i = 0; i < sizeof udp_reflectors / sizeof udp_reflectors[0];
	     i++)
		if (port == udp_reflectors[i].port)
			return udp_reflectors[i].why;
	return "source port below 1024";
}

const char *udp_guard(const struct sockaddr *src, const struct sockaddr *local,
                      const struct sockaddr *dst)
{
	struct udp_key s, l, d;

	if (udp_key(src, &s) < 0)
		return "unknown address family";
	if (s.port < UDP_MIN_SOURCE_PORT)
		return udp_port_why(s.port);
	if (!udp_key_unicast(&s))
		return "not a unicast address";
	if (local == NULL || udp_key(local, &l) < 0 || s.port != l.port)
		return NULL;
	if (!udp_key_wildcard(&l))
		return udp_key_same_addr(&s, &l) ? "own address" : NULL;
	if (udp_key_loopback(&s))
		return "own address";
	if (dst != NULL && udp_key(dst, &d) == 0 && udp_key_same_addr(&s, &d))
		return "own address";
	return NULL;
}

/* -- rate cap --------------------------------------------------------- */

struct udp_rate *udp_rate_new(uint64_t rate)
{
	struct udp_rate *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->rate = rate;
	TAILQ_INIT(&r->lru);
	/* Unpredictable chains: a sender cannot aim at another's. */
	evutil_secure_rng_get_bytes(&r->seed, sizeof r->seed);
	return r;
}

void udp_rate_free(struct udp_rate *r)
{
	free(r);
}

static uint32_t udp_rate_hash(const struct udp_rate *r, const struct udp_key *k)
{
	uint32_t h = 2166136261u ^ r->seed;
	size_t len = k->family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < len; i++)
		h = (h ^ k->addr[i]) * 16777619u;
	return h;
}

static struct udp_source *udp_rate_find(struct udp_rate *r,
                                        const struct udp_key *k)
{
	struct udp_source *e;

	LIST_FOREACH(e, &r->chains[udp_rate_hash(r, k) % UDP_RATE_SLOTS], chain)
		if (udp_key_same_addr(&e->key, k))
			return e;
	return NULL;
}

/*
 * An entry for the new source k: a free one, or the one whose latest reply
 * is oldest if that has left the window. NULL while every entry holds a
 * reply in its window.
 */
static struct udp_source *udp_rate_take(struct udp_rate *r,
                                        const struct udp_key *k, int64_t step)
{
	struct udp_source *e;

	if (r->nused < UDP_RATE_SLOTS) {
		e = &r->s[r->nused++];
	} else {
		e = TAILQ_FIRST(&r->lru);
		if (step - e->last < UDP_RATE_RING)
			return NULL;
		LIST_REMOVE(e, chain);
		TAILQ_REMOVE(&r->lru, e, lru);
	}
	memset(e->ring, 0, sizeof e->ring);
	e->key = *k;
	e->step = e->last = step;
	e->total = 0;
	LIST_INSERT_HEAD(&r->chains[udp_rate_hash(r, k) % UDP_RATE_SLOTS], e,
	                 chain);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
	return e;
}

/* Move e's window on to step: forget the replies of the steps it leaves. */
static void udp_source_advance(struct udp_source *e, int64_t step)
{
	if (step <= e->step)
		return;
	if (step - e->step >= UDP_RATE_RING) {
		memset(e->ring, 0, sizeof e->ring);
		e->total = 0;
	} else {
		for (int64_t s = e->step + 1; s <= step; s++) {
			e->total -= e->ring[s % UDP_RATE_RING];
			e->ring[s % UDP_RATE_RING] = 0;
		}
	}
	e->step = step;
}

int udp_rate_allow(struct udp_rate *r, const struct sockaddr *sa, double now,
                   const char **why)
{
	const char *unused;
	struct udp_source *e;
	struct udp_key k;
	int64_t step;

	if (why == NULL)
		why = &unused;
	if (udp_key(sa, &k) < 0) {
		*why = "unknown address family";
		return 0;
	}
	k.port = 0;
	step = (int64_t)floor(now * UDP_RATE_STEPS);
	if (step < r->now)
		step = r->now;
	r->now = step;
	e = udp_rate_find(r, &k);
	if (e == NULL && (e = udp_rate_take(r, &k, step)) == NULL) {
		*why = "rate table full";
		return 0;
	}
	udp_source_advance(e, step);
	if (e->total >= r->rate) {
		*why = "rate limit";
		return 0;
	}
	e->ring[step % UDP_RATE_RING]++;
	e->total++;
	e->last = step;
	TAILQ_REMOVE(&r->lru, e, lru);
	TAILQ_INSERT_TAIL(&r->lru, e, lru);
	return 1;
}

/* -- the host's addresses --------------------------------------------- */

/*
 * Subscribe to address changes before the first listing, so that no change
 * falls between the two.
 */
static void udp_self_open(struct udp_self *self)
{
	struct sockaddr_nl nl;

	self->nl = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
	                  NETLINK_ROUTE);
	if (self->nl < 0)
		return;
	memset(&nl, 0, sizeof nl);
	nl.nl_family = AF_NETLINK;
	nl.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
	if (bind(self->nl, (struct sockaddr *)&nl, sizeof nl) < 0) {
		close(self->nl);
		self->nl = -1;
	}
}

static void udp_self_close(struct udp_self *self)
{
	if (self->nl >= 0)
		close(self->nl);
	self->nl = -1;
	free(self->addrs);
	self->addrs = NULL;
	self->n = 0;
	self->known = 0;
}

/* List the host's addresses again; on failure, none is known. */
static void udp_self_load(struct udp_self *self)
{
	struct ifaddrs *ifa, *i;
	struct udp_key *addrs;
	size_t n = 0;

	self->known = 0;
	if (getifaddrs(&ifa) < 0)
		return;
	for (i = ifa; i != NULL; i = i->ifa_next)
		n++;
	addrs = reallocarray(self->addrs, n + 1, sizeof *addrs);
	if (addrs == NULL) {
		freeifaddrs(ifa);
		return;
	}
	self->addrs = addrs;
	self->n = 0;
	for (i = ifa; i != NULL; i = i->ifa_next)
		if (i->ifa_addr != NULL &&
		    udp_key(i->ifa_addr, &self->addrs[self->n]) == 0)
			self->n++;
	freeifaddrs(ifa);
	self->known = 1;
}

/*
 * Did the kernel report an address change since the last call? Reads every
 * notice queued; a queue that overflowed (ENOBUFS) lost some, so it counts
 * as a change too.
 */
static int udp_self_changed(int nl)
{
	char buf[512];
	int changed = 0;

	for (;;) {
		ssize_t n = recv(nl, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);

		if (n >= 0) {
			changed = 1;
			continue;
		}
		if (errno == EINTR)
			continue;
		return changed || errno != EAGAIN;
	}
}

/* Is k one of the host's addresses (or, if they are unknown, any)? */
static int udp_self_has(struct udp_self *self, const struct udp_key *k)
{
	if (udp_key_loopback(k))
		return 1;
	if (self->nl < 0 || udp_self_changed(self->nl) || !self->known)
		udp_self_load(self);
	if (!self->known)
		return 1;
	for (size_t i = 0; i < self->n; i++)
		if (udp_key_same_addr(k, &self->addrs[i]))
			return 1;
	return 0;
}

/* Does us receive what is sent to k's family? */
static int udp_sock_family(const struct udp_sock *us, const struct udp_key *k)
{
	return us->key.family == k->family ||
	       (us->dualstack && k->family == AF_INET);
}

int udp_echo_serves(struct udp_echo *u, const struct sockaddr *sa)
{
	struct udp_key k;

	if (udp_key(sa, &k) < 0)
		return 0;
	for (size_t i = 0; i < u->nsocks; i++) {
		const struct udp_sock *us = &u->socks[i];

		if (us->key.port != k.port || !udp_sock_family(us, &k))
			continue;
		if (!us->wildcard ? udp_key_same_addr(&us->key, &k)
		                  : udp_self_has(&u->self, &k))
			return 1;
	}
	return 0;
}

/* -- serving ---------------------------------------------------------- */

static double udp_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void udp_prepare(struct udp_echo *u)
{
	for (size_t i = 0; i < UDP_BATCH; i++) {
		struct msghdr *h = &u->msgs[i].msg_hdr;

		u->iov[i].iov_base = u->bufs + i * UDP_BUFSIZE;
		u->iov[i].iov_len = UDP_BUFSIZE;
		memset(h, 0, sizeof *h);
		h->msg_name = &u->names[i];
		h->msg_namelen = sizeof u->names[i];
		h->msg_iov = &u->iov[i];
		h->msg_iovlen = 1;
		h->msg_control = u->ctl[i].buf;
		h->msg_controllen = sizeof u->ctl[i].buf;
		u->msgs[i].msg_len = 0;
	}
}

/*
 * From the destination the kernel reported, fill dst (for the guard) and
 * the control message that makes the reply leave from that address.
 * Returns the control length, 0 if there is none.
 */
static size_t udp_pktinfo(struct msghdr *h, struct sockaddr_storage *dst,
                          struct udp_ctl *reply)
{
	struct cmsghdr *c, *out = (struct cmsghdr *)reply->buf;

	memset(reply, 0, sizeof *reply);
	for (c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			struct sockaddr_in *sin = (struct sockaddr_in *)dst;

			memcpy(&pi, CMSG_DATA(c), sizeof pi);
			sin->sin_family = AF_INET;
			sin->sin_addr = pi.ipi_addr;
			pi.ipi_ifindex = 0;
			pi.ipi_addr.s_addr = 0;
			out->cmsg_level = IPPROTO_IP;
			out->cmsg_type = IP_PKTINFO;
			out->cmsg_len = CMSG_LEN(sizeof pi);
			memcpy(CMSG_DATA(out), &pi, sizeof pi);
			return CMSG_SPACE(sizeof pi);
		}
		if (c->cmsg_level == IPPROTO_IPV6 &&
		    c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)dst;

			memcpy(&pi, CMSG_DATA(c), sizeof pi);
			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = pi.ipi6_addr;
			out->cmsg_level = IPPROTO_IPV6;
			out->cmsg_type = IPV6_PKTINFO;
			out->cmsg_len = CMSG_LEN(sizeof pi);
			memcpy(CMSG_DATA(out), &pi, sizeof pi);
			return CMSG_SPACE(sizeof pi);
		}
	}
	return 0;
}

static void udp_drop(struct udp_echo *u, struct msghdr *h, size_t len,
                     enum echo_udp_drop d, const char *why)
{
	char name[ADDR_STRLEN];

	u->dropped++;
	u->drop[d]++;
	if (log_get_level() < LOG_VERBOSE)
		return;
	log_verbose("udp: dropped %zu bytes from %s: %s", len,
	            addr_format(h->msg_name, h->msg_namelen, name, sizeof name),
	            why);
}

/* Why h gets no reply, with *d its reason, or NULL if it gets one. */
static const char *udp_check(struct udp_sock *us, struct msghdr *h,
                             const struct sockaddr *dst, double now,
                             enum echo_udp_drop *d)
{
	const char *why;

	*d = ECHO_UDP_DROP_TRUNCATED;
	if (h->msg_flags & MSG_TRUNC)
		return "larger than 64 KiB";
	*d = ECHO_UDP_DROP_GUARD;
	why = udp_guard(h->msg_name, (struct sockaddr *)&us->local,
	                dst->sa_family != AF_UNSPEC ? dst : NULL);
	if (why != NULL)
		return why;
	if (udp_echo_serves(us->u, h->msg_name))
		return "own address";
	*d = ECHO_UDP_DROP_RATE;
	if (us->u->rate != NULL &&
	    !udp_rate_allow(us->u->rate, h->msg_name, now, &why))
		return why;
	return NULL;
}

/* Do the access lists refuse h's source? If so, count and log it. */
static int udp_refused(struct udp_echo *u, const struct msghdr *h)
{
	struct admit *a = u->opts->admit;
	struct admit_ticket t;

	if (admit_check_addr(a, h->msg_name, h->msg_namelen) == ADMIT_OK)
		return 0;
	u->dropped++;
	u->drop[ECHO_UDP_DROP_ACL]++;
	admit_count(a, ADMIT_DENIED);
	admit_source(a, h->msg_name, h->msg_namelen, &t);
	echo_admit_refused(u->opts, -1, h->msg_name, h->msg_namelen, &t,
	                   ADMIT_DENIED, admit_now());
	return 1;
}

static void udp_answer(struct udp_sock *us, struct mmsghdr *m, double now)
{
	struct udp_echo *u = us->u;
	struct msghdr *h = &m->msg_hdr, r;
	struct sockaddr_storage dst;
	struct udp_ctl ctl;
	struct iovec iov;
	size_t ctllen;
	const char *why;
	enum echo_udp_drop d;
	ssize_t sent;

	u->in++;
	if (u->opts != NULL && udp_refused(u, h))
		return;
	memset(&dst, 0, sizeof dst);
	ctllen = udp_pktinfo(h, &dst, &ctl);
	why = udp_check(us, h, (struct sockaddr *)&dst, now, &d);
	if (why != NULL) {
		udp_drop(u, h, m->msg_len, d, why);
		return;
	}
	iov.iov_base = h->msg_iov->iov_base;
	iov.iov_len = m->msg_len;
	memset(&r, 0, sizeof r);
	r.msg_name = h->msg_name;
	r.msg_namelen = h->msg_namelen;
	r.msg_iov = &iov;
	r.msg_iovlen = 1;
	if (ctllen > 0) {
		r.msg_control = ctl.buf;
		r.msg_controllen = ctllen;
	}
	/* A signal that lands before anything is sent is no reason to drop. */
	while ((sent = sendmsg(us->fd, &r, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 &&
	       errno == EINTR)
		;
	if (sent < 0) {
		udp_drop(u, h, m->msg_len, ECHO_UDP_DROP_SEND_ERROR,
		         strerror(errno));
		return;
	}
	u->out++;
}

static void udp_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct udp_sock *us = arg;
	struct udp_echo *u = us->u;
	double now;
	int n;

	(void)what;
	for (int round = 0; round < UDP_ROUNDS; round++) {
		udp_prepare(u);
		n = recvmmsg(fd, u->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_verbose("udp: receive: %s",
				            strerror(errno));
			return;
		}
		now = udp_now();
		for (int i = 0; i < n; i++)
			udp_answer(us, &u->msgs[i], now);
		if (n < UDP_BATCH)
			return;
	}
}

struct udp_echo *udp_echo_new(struct event_base *base, uint64_t rate)
{
	struct udp_echo *u = calloc(1, sizeof *u);

	if (u == NULL)
		return NULL;
	u->base = base;
	u->self.nl = -1;
	u->bufs = malloc((size_t)UDP_BATCH * UDP_BUFSIZE);
	if (rate > 0)
		u->rate = udp_rate_new(rate);
	if (u->bufs == NULL || (rate > 0 && u->rate == NULL)) {
		udp_echo_free(u);
		return NULL;
	}
	return u;
}

void udp_echo_stop(struct udp_echo *u)
{
	if (u == NULL)
		return;
	for (size_t i = 0; i < u->nsocks; i++) {
		event_free(u->socks[i].ev);
		close(u->socks[i].fd);
	}
	u->nsocks = 0;
	udp_self_close(&u->self);
}

void udp_echo_free(struct udp_echo *u)
{
	if (u == NULL)
		return;
	udp_echo_stop(u);
	udp_rate_free(u->rate);
	free(u->bufs);
	free(u);
}

/* Ask for each datagram's destination: the reply must come from it. */
static int udp_want_pktinfo(int fd, int family)
{
	int one = 1;

	if (family == AF_INET)
		return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
	return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
}

/* Does a socket bound to :: receive IPv4 too? Assume so if it cannot say. */
static int udp_dualstack(int fd)
{
	int v6only = 0;
	socklen_t len = sizeof v6only;

	if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) < 0)
		return 1;
	return !v6only;
}

static int udp_sock_init(struct udp_echo *u, struct udp_sock *us, int fd)
{
	us->u = u;
	us->fd = fd;
	us->locallen = sizeof us->local;
	if (getsockname(fd, (struct sockaddr *)&us->local, &us->locallen) < 0)
		return -1;
	if (udp_key((struct sockaddr *)&us->local, &us->key) < 0) {
		errno = EAFNOSUPPORT;
		return -1;
	}
	us->wildcard = udp_key_wildcard(&us->key);
	if (us->wildcard) {
		if (udp_want_pktinfo(fd, us->local.ss_family) < 0)
			return -1;
		us->dualstack = us->key.family == AF_INET6 && udp_dualstack(fd);
		if (u->self.nl < 0 && !u->self.known) {
			udp_self_open(&u->self);
			udp_self_load(&u->self);
		}
	}
	us->ev = event_new(u->base, fd, EV_READ | EV_PERSIST, udp_readcb, us);
	if (us->ev == NULL || event_add(us->ev, NULL) < 0) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

int udp_echo_add(struct udp_echo *u, int fd, char *err, size_t errlen)
{
	struct udp_sock *us;
	char name[ADDR_STRLEN];

	listener_local_name(fd, name, sizeof name);
	if (u->nsocks == UDP_MAX_SOCKS) {
		snprintf(err, errlen,
		         "cannot serve udp on %s: too many sockets", name);
		close(fd);
		return -1;
	}
	us = &u->socks[u->nsocks];
	memset(us, 0, sizeof *us);
	if (udp_sock_init(u, us, fd) < 0) {
		snprintf(err, errlen, "cannot serve udp on %s: %s", name,
		         strerror(errno));
		if (us->ev != NULL)
			event_free(us->ev);
		close(fd);
		return -1;
	}
	u->nsocks++;
	return 0;
}

int udp_echo_serve(struct udp_echo **up, struct event_base *base, uint64_t rate,
                   int fd)
{
	char err[512];

	if (*up == NULL)
		*up = udp_echo_new(base, rate);
	if (*up == NULL) {
		log_error("cannot serve udp: out of memory");
		close(fd);
		return -1;
	}
	if (udp_echo_add(*up, fd, err, sizeof err) < 0) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

void udp_echo_admit(struct udp_echo *u, const struct echo_opts *o)
{
	if (u != NULL)
		u->opts = admit_active(o->admit) ? o : NULL;
}

void udp_echo_stats(const struct udp_echo *u, struct echo_stats *s)
{
	if (u == NULL)
		return;
	s->udp = 1;
	s->udp_in += u->in;
	s->udp_out += u->out;
	s->udp_dropped += u->dropped;
	for (int i = 0; i < ECHO_UDP_NDROP; i++)
		s->udp_drop[i] += u->drop[i];
}
