/*
 * listener.h - bind listening sockets for every address a spec resolves to,
 * for forkloop-echo and forkloop-chat alike.
 */
#ifndef FORKLOOP_LISTENER_H
#define FORKLOOP_LISTENER_H

#include <netdb.h>
#include <stddef.h>

#include "forkloop/addr.h"

/* Listen backlog: libevent's -1 means 128, which 1,000 connects overflow. */
#define LISTENER_BACKLOG 4096

/*
 * Create non-blocking, close-on-exec sockets of socktype (SOCK_STREAM or
 * SOCK_DGRAM) for a, listening if stream: a PORT alone gives one socket on
 * "[::]" that serves IPv6 and IPv4 (IPV6_V6ONLY off, ipv6(7); "0.0.0.0"
 * where the system has no IPv6); a host, one socket per address it resolves
 * to (getaddrinfo(3)), all on one port: with port 0 the first bind picks
 * it. Addresses another one already serves are dropped: duplicates, those
 * of a family whose wildcard is listed, an IPv4-mapped IPv6 address whose
 * IPv4 address is listed; and "[::]" keeps to IPv6 when IPv4 addresses are
 * listed, or its bind would take their port (ipv6(7), IPV6_V6ONLY). Stores
 * up to max descriptors in fds and returns how many, or -1 with nothing
 * left open and a message in err such as "cannot listen on
 * 127.0.0.1:6666: Address already in use" or "cannot resolve
 * nosuch.invalid: Name or service not known", or LISTENER_TOO_MANY when it
 * needs more than max sockets ("cannot listen on NAME:PORT: it resolves to
 * 17 addresses, and only 16 more can be served here (give one address, or
 * a port alone for every address)").
 *
 * A Unix address (unix(7)) gives one socket. A socket file already at its
 * path is tried first: if a connect to it is refused, its daemon is gone
 * and the file is replaced; if one succeeds, it fails with "cannot listen
 * on unix:/PATH: address in use" and the file is left to its daemon; a path
 * that is not a socket is never removed ("... exists and is not a
 * socket"). a->unix_mode, if 0 or more, is given to the file (chmod(2))
 * before listen(2), so no client connects while the umask's permissions
 * hold. The files bound are removed at exit (listener_remove_files).
 */
#define LISTENER_TOO_MANY (-2)
int listener_bind(const struct addr *a, int socktype, int *fds, size_t max,
                  char *err, size_t errlen);

/*
 * listener_bind's work on addresses already resolved: bind every address in
 * res (a names them in messages; a->v6only applies to "::"). Same result.
 */
int listener_bind_list(const struct addrinfo *res, const struct addr *a,
                       int socktype, int *fds, size_t max, char *err,
                       size_t errlen);

/* The local address of fd, formatted by addr_format, into buf; returns buf. */
char *listener_local_name(int fd, char *buf, size_t buflen);

/*
 * The peer of the accepted socket fd, whose address accept(2) gave as sa
 * and len, for logs, into buf (ADDR_STRLEN bytes suffice); returns buf.
 * An IP peer is addr_format's "127.0.0.1:40000". A Unix peer is named by
 * its own address, or by the listener's if it has none (clients rarely
 * bind), with its credentials where SO_PEERCRED gives them (unix(7)):
 * "unix:/run/x.sock (uid 1000 pid 4242)".
 */
char *listener_peer_name(int fd, const struct sockaddr *sa, socklen_t len,
                         char *buf, size_t buflen);

/*
 * Remove the socket files listener_bind created in this process, unless
 * another file has since taken the path: the daemon's clean exit. Called
 * at exit (atexit(3)) too, and then only in the process that bound them,
 * never in a child forked since. Safe to call more than once.
 */
void listener_remove_files(void);

/*
 * Add the timer ev to fire after tv (evtimer_add, libevent's event.h). If
 * libevent cannot (its timer heap cannot grow: out of memory), make ev
 * active now instead (event_active), so that its callback still runs, on
 * the loop's next turn: what waits for it, listeners turned off for a
 * pause or a drain's deadline, is never left waiting for good.
 */
struct event;
struct timeval;
void listener_timer_add(struct event *ev, const struct timeval *tv);

#endif
