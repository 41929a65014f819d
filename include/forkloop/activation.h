/*
 * activation.h - sockets inherited through systemd socket activation
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), and readiness notification.
 */
#ifndef FORKLOOP_ACTIVATION_H
#define FORKLOOP_ACTIVATION_H

#include <stddef.h>
#include <sys/types.h>

/* The first inherited descriptor (SD_LISTEN_FDS_START). */
#define ACTIVATION_FDS_START 3
#define ACTIVATION_MAX_FDS   64
#define ACTIVATION_NAMELEN   256

struct activation_fd {
	int fd;
	int socktype; /* SOCK_STREAM (listening) or SOCK_DGRAM */
	char name[ACTIVATION_NAMELEN];
};

struct activation {
	size_t n;
	struct activation_fd fds[ACTIVATION_MAX_FDS];
};

/*
 * The sockets this process was given, through libsystemd's
 * sd_listen_fds_with_names when built with it, else activation_parse on the
 * environment. The variables are unset either way, so children do not see
 * them. Returns the number of sockets (0: not activated), or -1 with a
 * message in err.
 */
int activation_get(struct activation *a, char *err, size_t errlen);

/*
 * The documented protocol by hand: if listen_pid is self, listen_fds
 * descriptors from start on, named by the colon-separated fdnames (may be
 * NULL), each made close-on-exec and checked to be a listening stream socket
 * or a datagram socket. Returns as activation_get.
 */
int activation_parse(const char *listen_pid, const char *listen_fds,
                     const char *fdnames, pid_t self, int start,
                     struct activation *a, char *err, size_t errlen);

/*
 * Tell the service manager, if any (NOTIFY_SOCKET), something like
 * "READY=1": sd_notify when built with libsystemd, else the same datagram
 * by hand.
 */
void activation_notify(const char *state);

#endif
