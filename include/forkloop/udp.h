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
/* Source addresses the rate cap tracks at once; older ones are forgotten. */
#define UDP_RATE_SLOTS 1024

struct udp_echo;
struct udp_rate;

/* Echo on base; rate caps replies per second per source address (0: none). */
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

/* Add the UDP counters to s and mark them for printing; u may be NULL. */
void udp_echo_stats(const struct udp_echo *u, struct echo_stats *s);

/*
 * Why a datagram from src, received by a socket bound to local (at address
 * dst if the socket is bound to a wildcard address and dst is known), must
 * not be answered; NULL if it may. IPv4-mapped IPv6 addresses count as IPv4.
 */
const char *udp_guard(const struct sockaddr *src, const struct sockaddr *local,
                      const struct sockaddr *dst);

/* Token buckets of rate per second, burst rate, keyed by source address. */
struct udp_rate *udp_rate_new(uint64_t rate);
void udp_rate_free(struct udp_rate *r);
/* May sa send one more datagram at time now (seconds)? 1 yes, 0 no. */
int udp_rate_allow(struct udp_rate *r, const struct sockaddr *sa, double now);

#endif
