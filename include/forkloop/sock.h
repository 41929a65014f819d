/*
 * sock.h - blocking I/O helpers for the forked designs, and socket options.
 */
#ifndef FORKLOOP_SOCK_H
#define FORKLOOP_SOCK_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Write all n bytes, retrying short writes and EINTR. Returns n, or -1 with
 * errno set. If *stop becomes non-zero during an EINTR, gives up with EINTR.
 */
ssize_t sock_write_all(int fd, const void *buf, size_t n,
                       volatile const int *stop);

/* read(2) retried on EINTR unless *stop is set. */
ssize_t sock_read(int fd, void *buf, size_t n, volatile const int *stop);

/* TCP_NODELAY on; returns 0 or -1. */
int sock_nodelay(int fd);

/*
 * TCP keepalive on fd (tcp(7): SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
 * TCP_KEEPCNT): the first probe after idle_s seconds (1 to 32767) without
 * traffic, then SOCK_KEEPALIVE_PROBES probes idle_s / 3 seconds apart (at
 * least 1), so a peer that vanished without a FIN or reset is dropped
 * within about twice idle_s. Returns 0, or -1 with errno set (EINVAL for
 * idle_s out of range).
 */
#define SOCK_KEEPALIVE_PROBES 3
#define SOCK_KEEPALIVE_MAX    32767
int sock_keepalive(int fd, unsigned idle_s);

/* Clear or set O_NONBLOCK; returns the previous flags or -1. */
int sock_set_blocking(int fd, int blocking);

#endif
