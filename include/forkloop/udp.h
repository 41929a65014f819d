/*
 * udp.h - UDP echo (RFC 862) on an event_base: each datagram sent back
 * whole, with guards against reflection and loops and a per-source rate cap.
 */
#ifndef FORKLOOP_UDP_H
#define FORKLOOP_UDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "forkloop/addr.h"
#include "forkloop/echo.h"

/* The largest UDP payload over IPv4: 65,535 - 20 (IP) - 8 (UDP). */
#define UDP_MAX_DATAGRAM 65507
/* Datagram sockets one udp_echo serves. */
#define UDP_MAX_SOCKS 64
/*
 * Source addresses the rate cap tracks at once. A source stays tracked while
 * it drew a reply in the last UDP_RATE_WINDOW seconds; while every entry is
 * taken by such a source, datagrams from untracked sources are not answered.
 */
#define UDP_RATE_SLOTS 4096
/*
 * The rate cap counts replies in steps of 1 / UDP_RATE_STEPS second over the
 * last UDP_RATE_STEPS + 1 steps: a window of at least one second, at most
 * UDP_RATE_WINDOW seconds.
 */
#define UDP_RATE_STEPS  10
#define UDP_RATE_WINDOW 1.1
/* forkloop-echo's --udp-rate when none is given (replies per second). */
#define UDP_DEFAULT_RATE 100
/*
 * Source ports below this get no reply: the system ports (RFC 6335, 0-1023),
 * where echo (7), chargen (19) and the other services that answer any
 * datagram live (CERT advisory CA-1996-01). No client's port is there: the
 * kernel picks ephemeral ports above it.
 */
#define UDP_MIN_SOURCE_PORT 1024

struct udp_echo;
struct udp_rate;

/*
 * A UDP echo on base. rate caps the replies per second to each source
 * address (0: no cap; see udp_rate_new). Returns NULL when out of memory.
 */
struct udp_echo *udp_echo_new(struct event_base *base, uint64_t rate);
/* Close every socket, keep the counters; NULL is fine. */
void udp_echo_stop(struct udp_echo *u);
/* Stop and free; NULL is fine. */
void udp_echo_free(struct udp_echo *u);

/*
 * Serve the non-blocking datagram socket fd, which u then owns. Returns 0,
 * or -1 with err set (fd closed).
 */
int udp_echo_add(struct udp_echo *u, int fd, char *err, size_t errlen);

/*
 * udp_echo_add on *up, made on base with rate the first time: what both
 * designs of the daemon do with a datagram socket. Returns 0, or -1 after
 * logging why (fd closed).
 */
int udp_echo_serve(struct udp_echo **up, struct event_base *base, uint64_t rate,
                   int fd);

/*
 * Apply o's access lists (--allow, --deny; admit_check_addr) to u's
 * datagrams: one from a refused source gets no reply, is counted in
 * udp_dropped and as ADMIT_DENIED, and is logged (echo_admit_refused).
 * Checked before any other rule. o must outlive u; u may be NULL.
 */
void udp_echo_admit(struct udp_echo *u, const struct echo_opts *o);

/*
 * Add the UDP counters to s (udp_dropped also by reason, udp_drop) and
 * mark them for printing; u may be NULL.
 */
void udp_echo_stats(const struct udp_echo *u, struct echo_stats *s);

/*
 * Is sa (IPv4, IPv6 or IPv4-mapped) an address and port one of u's sockets
 * receives on? A socket bound to a specific address serves that address; one
 * bound to a wildcard address serves its port on every address of the host
 * as getifaddrs(3) lists them now (re-read when the kernel reports an address
 * change on a NETLINK_ROUTE socket, rtnetlink(7)), on the whole loopback
 * range, and, when the host's addresses cannot be read, on every address.
 * Returns 1 or 0. A reply to such a source would come back to the daemon:
 * an endless loop.
 */
int udp_echo_serves(struct udp_echo *u, const struct sockaddr *sa);

/*
 * Why a datagram from src, received by a socket bound to local (at address
 * dst if the socket is bound to a wildcard address and dst is known), must
 * not be answered whatever else the daemon serves; NULL if it may. Refused:
 * an address family other than IPv4 and IPv6; a source port below
 * UDP_MIN_SOURCE_PORT; a source address that is not unicast (unspecified,
 * multicast, 255.255.255.255), since a reply to it would reach many hosts or
 * none; src equal to local, or to dst. IPv4-mapped IPv6 addresses count as
 * IPv4. local and dst may be NULL.
 */
const char *udp_guard(const struct sockaddr *src, const struct sockaddr *local,
                      const struct sockaddr *dst);

/*
 * A rate cap of rate replies per second (rate > 0) to each source address
 * (the port is not part of it): in any one-second window, at most rate
 * replies, including the first second. UDP_RATE_SLOTS addresses at most are
 * tracked; see there for what happens when all are taken. Returns NULL when
 * out of memory.
 */
struct udp_rate *udp_rate_new(uint64_t rate);
/* NULL is fine. */
void udp_rate_free(struct udp_rate *r);
/*
 * May sa be answered once more at time now (seconds, never decreasing from
 * one call to the next)? If so, the reply is counted: returns 1. Returns 0
 * when sa drew rate replies in the window, or sa is not tracked and the
 * table is full; why, if not NULL, then says which.
 */
int udp_rate_allow(struct udp_rate *r, const struct sockaddr *sa, double now,
                   const char **why);

#endif
