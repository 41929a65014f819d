/*
 * listener.h - bind listening sockets for every address a spec resolves to.
 */
#ifndef FORKLOOP_LISTENER_H
#define FORKLOOP_LISTENER_H

#include <stddef.h>

#include "forkloop/addr.h"

/* Listen backlog: libevent's -1 means 128, which 1,000 connects overflow. */
#define LISTENER_BACKLOG 4096

/*
 * Create non-blocking, close-on-exec sockets of socktype (SOCK_STREAM or
 * SOCK_DGRAM) bound to every address a resolves to, listening if stream.
 * Stores up to max descriptors in fds and returns how many, or -1 with a
 * message such as "cannot listen on 127.0.0.1:6666: Address already in use"
 * in err.
 */
int listener_bind(const struct addr *a, int socktype, int *fds, size_t max,
                  char *err, size_t errlen);

/* The local address of fd, formatted by addr_format, into buf. */
char *listener_local_name(int fd, char *buf, size_t buflen);

#endif
