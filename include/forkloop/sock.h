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

/* Clear or set O_NONBLOCK; returns the previous flags or -1. */
int sock_set_blocking(int fd, int blocking);

#endif
