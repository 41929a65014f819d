/*
 * activation.c - sockets inherited through systemd socket activation, and
 * readiness notification.
 *
 * With libsystemd, sd_listen_fds_with_names(3) reads the environment; without
 * it, activation_parse follows the same documented protocol: LISTEN_PID must
 * be this process, LISTEN_FDS descriptors start at 3, LISTEN_FDNAMES (if set)
 * names each of them. Either way each descriptor is made close-on-exec, its
 * type read with SO_TYPE, and a stream socket must be listening (Accept=no).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "forkloop/activation.h"
#include "forkloop/num.h"

static const char *activation_type_name(int type)
{
	switch (type) {
	case SOCK_STREAM:
		return "stream";
	case SOCK_DGRAM:
		return "datagram";
	case SOCK_SEQPACKET:
		return "seqpacket";
	default:
		return "unknown";
	}
}

/* Check fd, make it close-on-exec, and record it in a. */
static int activation_take(struct activation *a, int fd, const char *name,
                           size_t namelen, char *err, size_t errlen)
{
	struct activation_fd *f = &a->fds[a->n];
	int flags, type, listening = 0;
	socklen_t len = sizeof type;

	flags = fcntl(fd, F_GETFD);
	if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
		snprintf(err, errlen, "socket activation: fd %d: %s", fd,
		         strerror(errno));
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		snprintf(err, errlen, "socket activation: fd %d: %s", fd,
		         strerror(errno));
		return -1;
	}
	len = sizeof listening;
	if (type == SOCK_STREAM &&
	    (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
	     !listening)) {
		snprintf(err, errlen,
		         "socket activation: fd %d is a stream socket that is "
		         "not listening (a connection, as Accept=yes passes, "
		         "is not supported)",
		         fd);
		return -1;
	}
	if (type != SOCK_STREAM && type != SOCK_DGRAM) {
		snprintf(
		        err, errlen,
		        "socket activation: fd %d is a %s socket, not a stream "
		        "or datagram one",
		        fd, activation_type_name(type));
		return -1;
	}
	f->fd = fd;
	f->socktype = type;
	if (namelen >= sizeof f->name)
		namelen = sizeof f->name - 1;
	memcpy(f->name, name, namelen);
	f->name[namelen] = '\0';
	a->n++;
	return 0;
}

static size_t activation_count_names(const char *names)
{
	size_t n = 1;

	for (; *names != '\0'; names++)
		if (*names == ':')
			n++;
	return n;
}

int activation_parse(const char *listen_pid, const char *listen_fds,
                     const char *fdnames, pid_t self, int start,
                     struct activation *a, char *err, size_t errlen)
{
	uint64_t pid, n;
	const char *name = fdnames;

	a->n = 0;
	if (listen_pid == NULL || listen_fds == NULL)
		return 0;
	if (num_parse_u64(listen_pid, 1, INT_MAX, &pid) < 0) {
		snprintf(err, errlen, "socket activation: bad LISTEN_PID '%s'",
		         listen_pid);
		return -1;
	}
	if ((pid_t)pid != self)
		return 0;
	if (num_parse_u64(listen_fds, 0, INT_MAX - start, &n) < 0 ||
	    n > ACTIVATION_MAX_FDS) {
		snprintf(err, errlen,
		         "socket activation: bad LISTEN_FDS '%s' (at most %d)",
		         listen_fds, ACTIVATION_MAX_FDS);
		return -1;
	}
	if (fdnames != NULL && activation_count_names(fdnames) != n) {
		snprintf(err, errlen,
		         "socket activation: LISTEN_FDNAMES names %zu "
		         "descriptors, LISTEN_FDS says %d",
		         activation_count_names(fdnames), (int)n);
		return -1;
	}
	for (int i = 0; i < (int)n; i++) {
		size_t len = 0;

		if (name != NULL) {
			len = strcspn(name, ":");
		}
		if (activation_take(a, start + i, name != NULL ? name : "", len,
		                    err, errlen) < 0)
			return -1;
		if (name != NULL)
			name += len + (name[len] == ':');
	}
	return (int)a->n;
}

#ifdef HAVE_LIBSYSTEMD
static void activation_free_names(char **names)
{
	if (names == NULL)
		return;
	for (char **p = names; *p != NULL; p++)
		free(*p);
	free(names);
}

int activation_get(struct activation *a, char *err, size_t errlen)
{
	char **names = NULL;
	int n, r = 0;

	a->n = 0;
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		return -1;
	}
	if (n > ACTIVATION_MAX_FDS) {
		snprintf(err, errlen,
		         "socket activation: %d sockets (at most %d)", n,
		         ACTIVATION_MAX_FDS);
		activation_free_names(names);
		return -1;
	}
	for (int i = 0; i < n && r == 0; i++) {
		const char *name = names != NULL ? names[i] : "";

		r = activation_take(a, SD_LISTEN_FDS_START + i, name,
		                    strlen(name), err, errlen);
	}
	activation_free_names(names);
	return r < 0 ? -1 : (int)a->n;
}

void activation_notify(const char *state)
{
	sd_notify(0, state);
}
#else
int activation_get(struct activation *a, char *err, size_t errlen)
{
	int r;

	r = activation_parse(getenv("LISTEN_PID"), getenv("LISTEN_FDS"),
	                     getenv("LISTEN_FDNAMES"), getpid(),
	                     ACTIVATION_FDS_START, a, err, errlen);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}

void activation_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	size_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof sun.sun_path)
		return;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len);
	if (path[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	/*
	 * Nothing to do if the manager is gone: it will notice. A signal
	 * that lands before the datagram is sent is no reason to lose it.
	 */
	while (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
	              (struct sockaddr *)&sun,
	              (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	                          len)) < 0 &&
	       errno == EINTR)
		;
	close(fd);
}
#endif
