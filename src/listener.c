/*
 * listener.c - bind listening sockets for every address a spec resolves to,
 * the one mechanism forkloop-echo and forkloop-chat (and its relay) share.
 *
 * Done by hand rather than with evconnlistener_new_bind so that one name can
 * give several sockets, each error names the address that failed, and the
 * backlog is ours (LISTENER_BACKLOG) rather than libevent's 128.
 *
 * Unix sockets (unix(7)) are bound here too: a stale socket file is
 * replaced, a live one refused, and the files made are removed at exit.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "forkloop/admit.h"
#include "forkloop/listener.h"

/*
 * The socket files this process bound, to remove at exit: the path, and
 * the file's identity, so that a file another daemon put there since (after
 * finding this one stale) is left alone. Only the process that bound them
 * removes them: a forked child's exit must not.
 */
#define LISTENER_MAX_FILES 64
struct listener_file {
	char path[ADDR_UNIXLEN];
	dev_t dev;
	ino_t ino;
};
static struct listener_file listener_files[LISTENER_MAX_FILES];
static size_t listener_nfiles;
static pid_t listener_files_pid;

static int listener_is_v6any(const struct sockaddr *sa)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	return sa->sa_family == AF_INET6 &&
	       IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
}

static int listener_open_one(const struct addrinfo *ai, int socktype,
                             int v6only)
{
	int fd, one = 1, saved;

	fd = socket(ai->ai_family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	            ai->ai_protocol);
	if (fd < 0)
		return -1;
	/*
	 * For TCP, SO_REUSEADDR only skips TIME_WAIT; for UDP it would let two
	 * processes bind one port and hide "Address already in use".
	 */
	if (socktype == SOCK_STREAM &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		goto fail;
	/*
	 * "[::]" takes IPv4 too unless told otherwise (addr_dual_stack); set
	 * either way, since net.ipv6.bindv6only changes the default.
	 */
	if (listener_is_v6any(ai->ai_addr) &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
	               sizeof v6only) < 0)
		goto fail;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		goto fail;
	if (socktype == SOCK_STREAM && listen(fd, LISTENER_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

static in_port_t *listener_port(struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6)
		return &((struct sockaddr_in6 *)sa)->sin6_port;
	return &((struct sockaddr_in *)sa)->sin_port;
}

static in_port_t listener_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	return *listener_port((struct sockaddr *)&ss);
}

static int listener_is_any(const struct sockaddr *sa)
{
	return listener_is_v6any(sa) ||
	       (sa->sa_family == AF_INET &&
	        ((const struct sockaddr_in *)sa)->sin_addr.s_addr ==
	                htonl(INADDR_ANY));
}

/* The IPv4 address an IPv4-mapped IPv6 one (::ffff:a.b.c.d) stands for. */
static int listener_mapped(const struct sockaddr *sa, struct in_addr *v4)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family != AF_INET6 ||
	    !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return 0;
	memcpy(v4, &sin6->sin6_addr.s6_addr[12], sizeof *v4);
	return 1;
}

/*
 * Does another address of res already serve ai, so that binding ai too
 * would only fail with "Address already in use"? An earlier duplicate; the
 * wildcard of ai's family (it takes every address of the family on the
 * port); for an IPv4-mapped address, the IPv4 address or wildcard it maps
 * to (ipv6(7): a mapped bind is an IPv4 bind).
 */
static int listener_covered(const struct addrinfo *res,
                            const struct addrinfo *ai)
{
	const struct addrinfo *p;
	const struct sockaddr_in *sin;
	struct in_addr m;
	int before = 1;

	for (p = res; p != NULL; p = p->ai_next) {
		if (p == ai) {
			before = 0;
			continue;
		}
		if (before && p->ai_addrlen == ai->ai_addrlen &&
		    memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
			return 1;
		if (p->ai_family == ai->ai_family &&
		    listener_is_any(p->ai_addr) &&
		    !listener_is_any(ai->ai_addr))
			return 1;
		sin = (const struct sockaddr_in *)p->ai_addr;
		if (p->ai_family == AF_INET &&
		    listener_mapped(ai->ai_addr, &m) &&
		    (sin->sin_addr.s_addr == m.s_addr ||
		     listener_is_any(p->ai_addr)))
			return 1;
	}
	return 0;
}

/* Any IPv4 address in res: then "[::]" among them keeps to IPv6. */
static int listener_has_v4(const struct addrinfo *res)
{
	for (; res != NULL; res = res->ai_next)
		if (res->ai_family == AF_INET)
			return 1;
	return 0;
}

/*
 * A PORT alone: the IPv6 wildcard, which serves IPv4 too, or the IPv4 one
 * where the system has no IPv6.
 */
static const struct addrinfo *listener_wildcard(const struct addrinfo *res,
                                                int socktype, int *fd)
{
	const struct addrinfo *ai, *v4 = NULL;

	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && v4 == NULL)
			v4 = ai;
		if (ai->ai_family != AF_INET6)
			continue;
		*fd = listener_open_one(ai, socktype, 0);
		if (*fd >= 0 || errno != EAFNOSUPPORT)
			return ai;
	}
	if (v4 != NULL)
		*fd = listener_open_one(v4, socktype, 0);
	return v4;
}

int listener_bind_list(const struct addrinfo *res, const struct addr *a,
                       int socktype, int *fds, size_t max, char *err,
                       size_t errlen)
{
	const struct addrinfo *ai;
	struct sockaddr_storage ss;
	struct addrinfo one;
	char spec[ADDR_STRLEN], name[ADDR_STRLEN], first[ADDR_STRLEN];
	in_port_t port = 0;
	size_t n = 0, naddr = 0;
	int saved, v4 = listener_has_v4(res);

	for (ai = res; ai != NULL; ai = ai->ai_next)
		naddr += !listener_covered(res, ai);
	addr_spec_format(a, spec, sizeof spec);
	if (naddr > max && naddr > 1) {
		snprintf(err, errlen,
		         "cannot listen on %s: it resolves to %zu addresses, "
		         "and only %zu more can be served here (give one "
		         "address, or a port alone for every address)",
		         spec, naddr, max);
		return LISTENER_TOO_MANY;
	}
	if (naddr > max) {
		snprintf(err, errlen, "cannot listen on %s: no more sockets "
		         "can be served here", spec);
		return LISTENER_TOO_MANY;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int fd;

		if (ai->ai_addrlen > sizeof ss || listener_covered(res, ai))
			continue;
		/* Port 0: the first bind picks the port, the others take it. */
		one = *ai;
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		one.ai_addr = (struct sockaddr *)&ss;
		if (port != 0)
			*listener_port(one.ai_addr) = port;
		/* A dual-stack "[::]" would hold the IPv4 port the list's
		 * IPv4 addresses need. */
		fd = listener_open_one(&one, socktype, a->v6only || v4);
		if (fd < 0) {
			saved = errno;
			addr_format(one.ai_addr, one.ai_addrlen, name,
			            sizeof name);
			if (port != 0)
				snprintf(err, errlen,
				         "cannot listen on %s: %s (%s takes one "
				         "port on every address: the one %s got)",
				         name, strerror(saved), spec, first);
			else
				snprintf(err, errlen, "cannot listen on %s: %s",
				         name, strerror(saved));
			goto fail;
		}
		fds[n++] = fd;
		if (n == 1 && *listener_port(one.ai_addr) == 0) {
			listener_local_name(fd, first, sizeof first);
			port = listener_local_port(fd);
		}
	}
	return (int)n;
fail:
	while (n > 0)
		close(fds[--n]);
	return -1;
}

/* A PORT alone: one socket, on the wildcard listener_wildcard picks. */
static int listener_bind_any(const struct addrinfo *res, const struct addr *a,
                             int socktype, int *fds, size_t max, char *err,
                             size_t errlen)
{
	const struct addrinfo *ai;
	char name[ADDR_STRLEN];
	int fd = -1, saved;

	if (max == 0) {
		snprintf(err, errlen, "cannot listen on %s: no more sockets "
		         "can be served here",
		         addr_spec_format(a, name, sizeof name));
		return LISTENER_TOO_MANY;
	}
	ai = listener_wildcard(res, socktype, &fd);
	if (ai == NULL) {
		snprintf(err, errlen, "cannot listen on %s: no wildcard address",
		         addr_spec_format(a, name, sizeof name));
		return -1;
	}
	if (fd < 0) {
		saved = errno;
		snprintf(err, errlen, "cannot listen on %s: %s",
		         addr_format(ai->ai_addr, ai->ai_addrlen, name,
		                     sizeof name),
		         strerror(saved));
		return -1;
	}
	fds[0] = fd;
	return 1;
}

void listener_remove_files(void)
{
	struct stat st;

	if (listener_files_pid != getpid())
		return;
	for (size_t i = 0; i < listener_nfiles; i++) {
		const struct listener_file *f = &listener_files[i];

		if (lstat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_dev == f->dev && st.st_ino == f->ino)
			unlink(f->path);
	}
	listener_nfiles = 0;
}

/* Remember the file a just bound, for listener_remove_files. */
static void listener_file_add(const struct addr *a)
{
	struct listener_file *f;
	struct stat st;

	if (listener_nfiles == LISTENER_MAX_FILES || lstat(a->path, &st) < 0)
		return;
	if (listener_files_pid != getpid()) {
		if (listener_files_pid == 0)
			atexit(listener_remove_files);
		listener_files_pid = getpid();
		listener_nfiles = 0;
	}
	f = &listener_files[listener_nfiles++];
	memcpy(f->path, a->path, strlen(a->path) + 1);
	f->dev = st.st_dev;
	f->ino = st.st_ino;
}

/* connect(2) to su on a fresh socket of type: 0, or the errno it got. */
static int listener_unix_probe(const struct sockaddr_un *su, socklen_t len,
                               int type)
{
	int fd, r, saved;

	fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	r = connect(fd, (const struct sockaddr *)su, len);
	saved = errno;
	close(fd);
	return r == 0 ? 0 : saved;
}

/*
 * A file at a's path before bind(2): nothing (0), a stale socket removed
 * (0), or -1 with err set: a live socket (a connect succeeded, its backlog
 * is full, or a socket is bound there that does not listen yet or is of
 * another type), not a socket, or an error.
 */
static int listener_unix_stale(const struct addr *a,
                               const struct sockaddr_un *su, socklen_t len,
                               char *err, size_t errlen)
{
	struct stat st, now;
	int saved;

	if (lstat(a->path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot listen on unix:%s: %s", a->path,
		         strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "cannot listen on unix:%s: the path "
		         "exists and is not a socket (left alone)", a->path);
		return -1;
	}
	saved = listener_unix_probe(su, len, SOCK_STREAM);
	/*
	 * A stream socket bound there but not listening yet (another daemon
	 * between its bind(2) and listen(2)) refuses too; a datagram probe
	 * tells it from a file no socket holds: EPROTOTYPE where a socket of
	 * another type is bound, ECONNREFUSED where none is (unix(7)).
	 */
	if (saved == ECONNREFUSED)
		saved = listener_unix_probe(su, len, SOCK_DGRAM);
	if (saved == 0 || saved == EAGAIN || saved == EPROTOTYPE) {
		snprintf(err, errlen, "cannot listen on unix:%s: address in use",
		         a->path);
		return -1;
	}
	/* Gone meanwhile (removed as stale by another): bind(2) decides. */
	if (saved == ENOENT)
		return 0;
	/* Refused: nothing listens; anything else (EACCES) is not ours. */
	if (saved != ECONNREFUSED) {
		snprintf(err, errlen, "cannot listen on unix:%s: %s", a->path,
		         strerror(saved));
		return -1;
	}
	/* Another daemon may have replaced the stale file since the lstat. */
	if (lstat(a->path, &now) < 0)
		return 0;
	if (now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
		snprintf(err, errlen, "cannot listen on unix:%s: address in use",
		         a->path);
		return -1;
	}
	if (unlink(a->path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove the stale socket unix:%s: "
		         "%s", a->path, strerror(errno));
		return -1;
	}
	return 0;
}

static int listener_bind_unix(const struct addr *a, int socktype, int *fds,
                              size_t max, char *err, size_t errlen)
{
	struct sockaddr_un su;
	socklen_t len = addr_unix_sockaddr(a, &su);
	int fd, r, saved, abstract = addr_is_abstract(a);
	int moded = !abstract && a->unix_mode >= 0;
	mode_t old = 0;

	if (max == 0) {
		snprintf(err, errlen, "cannot listen on unix:%s: no more "
		         "sockets can be served here", a->path);
		return LISTENER_TOO_MANY;
	}
	if (!abstract && listener_unix_stale(a, &su, len, err, errlen) < 0)
		return -1;
	fd = socket(AF_UNIX, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/*
	 * bind(2) makes the file with mode 0777 less the umask (unix(7)): a
	 * umask of the mode's complement gives it --unix-mode from the
	 * start, with no chmod(2) by path that a file swapped in meanwhile
	 * could redirect. The umask is the process's: nothing else creates
 * files while the daemons bind (forkloop-echo's worker loops, if started,
 * have no connection yet).
	 */
	if (moded)
		old = umask(~(mode_t)a->unix_mode & 0777);
	r = bind(fd, (struct sockaddr *)&su, len);
	saved = errno;
	if (moded)
		umask(old);
	if (r < 0) {
		close(fd);
		errno = saved;
		goto fail;
	}
	if (socktype == SOCK_STREAM && listen(fd, LISTENER_BACKLOG) < 0) {
		saved = errno;
		close(fd);
		if (!abstract)
			unlink(a->path);
		errno = saved;
		goto fail;
	}
	if (!abstract)
		listener_file_add(a);
	fds[0] = fd;
	return 1;
fail:
	if (errno == EADDRINUSE)
		snprintf(err, errlen, "cannot listen on unix:%s: address in use",
		         a->path);
	else
		snprintf(err, errlen, "cannot listen on unix:%s: %s", a->path,
		         strerror(errno));
	return -1;
}

int listener_bind(const struct addr *a, int socktype, int *fds, size_t max,
                  char *err, size_t errlen)
{
	struct addrinfo *res;
	int gai_err, n;

	if (a->is_unix)
		return listener_bind_unix(a, socktype, fds, max, err, errlen);
	res = addr_resolve(a, socktype, 1, &gai_err);
	if (res == NULL) {
		snprintf(err, errlen, "cannot resolve %s: %s",
		         a->host[0] != '\0' ? a->host : "*",
		         addr_strerror(gai_err));
		return -1;
	}
	if (a->host[0] == '\0')
		n = listener_bind_any(res, a, socktype, fds, max, err, errlen);
	else
		n = listener_bind_list(res, a, socktype, fds, max, err, errlen);
	addr_free(res);
	return n;
}

char *listener_local_name(int fd, char *buf, size_t buflen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(buf, buflen, "?");
		return buf;
	}
	return addr_format((struct sockaddr *)&ss, len, buf, buflen);
}


char *listener_peer_name(int fd, const struct sockaddr *sa, socklen_t len,
                         char *buf, size_t buflen)
{
	char name[ADDR_STRLEN];
	uid_t uid;
	gid_t gid;
	pid_t pid;

	if (sa->sa_family != AF_UNIX)
		return addr_format(sa, len, buf, buflen);
	addr_format(sa, len, name, sizeof name);
	if (strcmp(name, ADDR_UNIX_PREFIX) == 0)
		listener_local_name(fd, name, sizeof name);
	if (admit_peercred(fd, &uid, &gid, &pid) < 0)
		snprintf(buf, buflen, "%s", name);
	else
		snprintf(buf, buflen, "%s (uid %lu pid %ld)", name,
		         (unsigned long)uid, (long)pid);
	return buf;
}

void listener_timer_add(struct event *ev, const struct timeval *tv)
{
	if (evtimer_add(ev, tv) < 0)
		event_active(ev, EV_TIMEOUT, 1);
}
