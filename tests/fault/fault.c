/*
 * fault.c - a preload library for tests (LD_PRELOAD, never installed): makes
 * chosen calls of the process it is loaded into fail on a schedule read from
 * the environment, so a test can see what the program does with errors the
 * kernel rarely returns on demand.
 *
 * FORKLOOP_FAULT is a list of rules separated by ';':
 *
 *	RULE   = CALL "=" FAULT [ ":" OPTION *( "," OPTION ) ]
 *	OPTION = "after=" N | "every=" N | "count=" N | "from=accept"
 *
 * CALL and the faults it takes:
 *	accept    accept, accept4   EMFILE, ENFILE, ECONNABORTED
 *	fork      fork              EAGAIN
 *	read      read, readv, recv, recvfrom, recvmsg, recvmmsg
 *	                            EINTR, short
 *	write     write, writev, send, sendto, sendmsg
 *	                            EINTR, short
 *	socket    socket            ENOMEM
 *	epoll_ctl epoll_ctl         ENOMEM (EPOLL_CTL_ADD only: what allocates)
 *	alloc     libevent's malloc and realloc (event_set_mem_functions)
 *	                            ENOMEM (returns NULL)
 *
 * A rule counts the calls of its CALL that it could apply to, from 0: it
 * lets the first `after` (default 0) through, then fails one in `every`
 * (default 1), at most `count` times (default: no limit). With from=accept
 * it counts only calls made after the process (or, in a child, its parent)
 * first accepted a connection: start-up is left alone. Each rule counts
 * every call on its own; where several rules of one CALL fail a call, the
 * first listed decides how. Counters are atomic: each call, on any thread,
 * takes one turn, so exactly the scheduled turns fail (which thread's call
 * takes which turn is up to the scheduler); a child of fork(2) carries on
 * from its parent's counts. A schedule that does not parse ends the process
 * before main, with a message and exit status 2.
 *
 * read and write apply only to IPv4 and IPv6 sockets (fstat(2) S_ISSOCK,
 * then SO_DOMAIN): standard error, pipes, eventfds, /proc files, Unix
 * sockets (libevent's signal socket pair, the service manager's) are left
 * alone and not counted. "short" moves at most 1 byte, on stream sockets
 * only (a datagram is never cut), or receives 1 message with recvmmsg.
 * accept's EMFILE and ENFILE leave the connection in the backlog, as the
 * kernel does; ECONNABORTED takes it off, resets it, and fails (with
 * none waiting, accept's own error is returned and no fault is made).
 *
 * FORKLOOP_FAULT_LOG=PATH appends a line "PID FUNCTION FAULT" to PATH for
 * each fault made, so a test can count them.
 *
 * Example: FORKLOOP_FAULT='accept=EMFILE:every=3,after=2;read=short:every=2'
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_RULES   16
#define FAULT_SHORT (-1)

enum fault_call {
	FC_ACCEPT,
	FC_FORK,
	FC_READ,
	FC_WRITE,
	FC_SOCKET,
	FC_EPOLL_CTL,
	FC_ALLOC,
	FC_NCALLS
};

static const char *const call_names[FC_NCALLS] = {
        "accept", "fork", "read", "write", "socket", "epoll_ctl", "alloc",
};

struct fault_name {
	const char *name;
	int fault;      /* errno, or FAULT_SHORT */
	unsigned calls; /* bit per enum fault_call that takes it */
};

#define BIT(c) (1U << (c))
static const struct fault_name fault_names[] = {
        {"EMFILE", EMFILE, BIT(FC_ACCEPT)},
        {"ENFILE", ENFILE, BIT(FC_ACCEPT)},
        {"ECONNABORTED", ECONNABORTED, BIT(FC_ACCEPT)},
        {"EAGAIN", EAGAIN, BIT(FC_FORK)},
        {"EINTR", EINTR, BIT(FC_READ) | BIT(FC_WRITE)},
        {"short", FAULT_SHORT, BIT(FC_READ) | BIT(FC_WRITE)},
        {"ENOMEM", ENOMEM, BIT(FC_SOCKET) | BIT(FC_EPOLL_CTL) | BIT(FC_ALLOC)},
};

struct fault_rule {
	enum fault_call call;
	const struct fault_name *fault;
	uint64_t after, every, count; /* count 0: no limit */
	int from_accept;
	atomic_uint_fast64_t seen; /* calls counted */
};

static struct fault_rule rules[MAX_RULES];
static int nrules;
static unsigned active;     /* bit per enum fault_call with a rule */
static atomic_int accepted; /* a connection was accepted */
static const char *log_path;

/* The next definition of each function: libc's, or a sanitizer's. */
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, __SOCKADDR_ARG,
                                socklen_t *);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static int (*real_recvmmsg)(int, struct mmsghdr *, unsigned, int,
                            struct timespec *);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int,
                              __CONST_SOCKADDR_ARG, socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_accept)(int, __SOCKADDR_ARG, socklen_t *);
static int (*real_accept4)(int, __SOCKADDR_ARG, socklen_t *, int);
static pid_t (*real_fork)(void);
static int (*real_socket)(int, int, int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);

static void *next_fn(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (f == NULL) {
		static const char msg[] = "fault: a function is missing\n";
		(void)!write(2, msg, sizeof msg - 1);
		abort();
	}
	return f;
}

/* Resolved when first needed too: another constructor may call first. */
#define REAL(fn)                                                               \
	(real_##fn != NULL ? real_##fn                                         \
	                   : (*(void **)&real_##fn = next_fn(#fn), real_##fn))

static void die(const char *why, const char *at)
{
	fprintf(stderr, "FORKLOOP_FAULT: %s: %s\n", why, at);
	_exit(2);
}

static uint64_t parse_num(const char *s, size_t len, const char *at)
{
	uint64_t v = 0;

	if (len == 0 || len > 18)
		die("bad number", at);
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			die("bad number", at);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return v;
}

static int span_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(s, word, len) == 0;
}

static void parse_option(struct fault_rule *r, const char *s, size_t len)
{
	const char *eq = memchr(s, '=', len);
	size_t klen = eq != NULL ? (size_t)(eq - s) : len;
	const char *v = eq != NULL ? eq + 1 : s + len;
	size_t vlen = len - klen - (eq != NULL);

	if (span_is(s, klen, "after"))
		r->after = parse_num(v, vlen, s);
	else if (span_is(s, klen, "every")) {
		if ((r->every = parse_num(v, vlen, s)) == 0)
			die("every must be at least 1", s);
	} else if (span_is(s, klen, "count")) {
		if ((r->count = parse_num(v, vlen, s)) == 0)
			die("count must be at least 1", s);
	} else if (span_is(s, klen, "from") && span_is(v, vlen, "accept"))
		r->from_accept = 1;
	else
		die("unknown option", s);
}

static void parse_rule(const char *s, size_t len)
{
	struct fault_rule *r;
	const char *eq = memchr(s, '=', len), *colon, *end = s + len;
	size_t i;

	if (nrules == MAX_RULES)
		die("too many rules", s);
	r = &rules[nrules++];
	r->every = 1;
	if (eq == NULL)
		die("expected CALL=FAULT", s);
	for (i = 0; i < FC_NCALLS; i++)
		if (span_is(s, (size_t)(eq - s), call_names[i]))
			break;
	if (i == FC_NCALLS)
		die("unknown call", s);
	r->call = (enum fault_call)i;
	colon = memchr(eq, ':', (size_t)(end - eq));
	if (colon == NULL)
		colon = end;
	for (i = 0; i < sizeof fault_names / sizeof fault_names[0]; i++)
		if (span_is(eq + 1, (size_t)(colon - eq - 1),
		            fault_names[i].name))
			break;
	if (i == sizeof fault_names / sizeof fault_names[0] ||
	    !(fault_names[i].calls & BIT(r->call)))
		die("fault not made for this call", s);
	r->fault = &fault_names[i];
	while (colon < end) {
		const char *o = colon + 1,
		           *comma = memchr(o, ',', (size_t)(end - o));

		if (comma == NULL)
			comma = end;
		parse_option(r, o, (size_t)(comma - o));
		colon = comma;
	}
	active |= BIT(r->call);
}

/* Appends "PID FUNCTION FAULT\n": open, one write, close; signal-safe. */
static void log_fault(const char *fn, const struct fault_name *f)
{
	char line[128], digits[24];
	size_t n = 0, d = 0;
	unsigned long pid = (unsigned long)getpid();
	int fd, saved;

	if (log_path == NULL)
		return;
	saved = errno;
	do {
		digits[d++] = (char)('0' + pid % 10);
		pid /= 10;
	} while (pid > 0);
	while (d > 0)
		line[n++] = digits[--d];
	line[n++] = ' ';
	for (const char *p = fn; *p != '\0' && n < 80; p++)
		line[n++] = *p;
	line[n++] = ' ';
	for (const char *p = f->name; *p != '\0' && n < 120; p++)
		line[n++] = *p;
	line[n++] = '\n';
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0) {
		(void)!REAL(write)(fd, line, n);
		close(fd);
	}
	errno = saved;
}

/*
 * The fault for this call, or NULL: every rule of call counts it (stream:
 * 0 for a datagram socket, which "short" does not apply to).
 */
static const struct fault_name *fault_next(enum fault_call call, int stream)
{
	const struct fault_name *hit = NULL;

	for (int i = 0; i < nrules; i++) {
		struct fault_rule *r = &rules[i];
		uint64_t k, turn;

		if (r->call != call ||
		    (!stream && r->fault->fault == FAULT_SHORT))
			continue;
		if (r->from_accept && !atomic_load(&accepted))
			continue;
		k = atomic_fetch_add(&r->seen, 1);
		if (k < r->after || (k - r->after) % r->every != 0)
			continue;
		turn = (k - r->after) / r->every;
		if (r->count != 0 && turn >= r->count)
			continue;
		if (hit == NULL)
			hit = r->fault;
	}
	return hit;
}

/* Fail with f's errno, logged as fn's. */
static int fail(const char *fn, const struct fault_name *f)
{
	log_fault(fn, f);
	errno = f->fault;
	return -1;
}

/*
 * read and write: -1 if fd is not an IPv4 or IPv6 socket, else 1 for a
 * stream socket, 0 for a datagram one.
 */
static int inet_socket(int fd)
{
	struct stat st;
	int domain, type, saved = errno;
	socklen_t len = sizeof domain;
	int r = -1;

	if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
	    (domain == AF_INET || domain == AF_INET6)) {
		len = sizeof type;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0)
			r = type == SOCK_STREAM;
	}
	errno = saved;
	return r;
}

/* The fault for a read or write call on fd, or NULL. */
static const struct fault_name *fault_io(enum fault_call call, int fd,
                                         int *stream)
{
	if (!(active & BIT(call)) || (*stream = inet_socket(fd)) < 0)
		return NULL;
	return fault_next(call, *stream);
}

/* The first byte that iov of n buffers points to, as one 1-byte buffer. */
static int first_byte(const struct iovec *iov, size_t n, struct iovec *one)
{
	for (size_t i = 0; i < n; i++) {
		if (iov[i].iov_len > 0) {
			one->iov_base = iov[i].iov_base;
			one->iov_len = 1;
			return 1;
		}
	}
	return 0;
}

ssize_t read(int fd, void *buf, size_t n)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_READ, fd, &stream)) == NULL)
		return REAL(read)(fd, buf, n);
	if (f->fault != FAULT_SHORT)
		return fail("read", f);
	log_fault("read", f);
	return REAL(read)(fd, buf, n > 0 ? 1 : 0);
}

ssize_t readv(int fd, const struct iovec *iov, int n)
{
	const struct fault_name *f;
	struct iovec one;
	int stream;

	if ((f = fault_io(FC_READ, fd, &stream)) == NULL)
		return REAL(readv)(fd, iov, n);
	if (f->fault != FAULT_SHORT)
		return fail("readv", f);
	log_fault("readv", f);
	if (n < 0 || !first_byte(iov, (size_t)n, &one))
		return REAL(readv)(fd, iov, n);
	return REAL(readv)(fd, &one, 1);
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_READ, fd, &stream)) == NULL)
		return REAL(recv)(fd, buf, n, flags);
	if (f->fault != FAULT_SHORT)
		return fail("recv", f);
	log_fault("recv", f);
	return REAL(recv)(fd, buf, n > 0 ? 1 : 0, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, __SOCKADDR_ARG sa,
                 socklen_t *salen)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_READ, fd, &stream)) == NULL)
		return REAL(recvfrom)(fd, buf, n, flags, sa, salen);
	if (f->fault != FAULT_SHORT)
		return fail("recvfrom", f);
	log_fault("recvfrom", f);
	return REAL(recvfrom)(fd, buf, n > 0 ? 1 : 0, flags, sa, salen);
}

ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	const struct fault_name *f;
	struct msghdr one;
	struct iovec iov;
	ssize_t r;
	int stream;

	if ((f = fault_io(FC_READ, fd, &stream)) == NULL)
		return REAL(recvmsg)(fd, m, flags);
	if (f->fault != FAULT_SHORT)
		return fail("recvmsg", f);
	log_fault("recvmsg", f);
	if (!first_byte(m->msg_iov, m->msg_iovlen, &iov))
		return REAL(recvmsg)(fd, m, flags);
	one = *m;
	one.msg_iov = &iov;
	one.msg_iovlen = 1;
	r = REAL(recvmsg)(fd, &one, flags);
	m->msg_namelen = one.msg_namelen;
	m->msg_controllen = one.msg_controllen;
	m->msg_flags = one.msg_flags;
	return r;
}

int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags,
             struct timespec *timeout)
{
	const struct fault_name *f;

	/* "short" is one message, which cuts no datagram. */
	if (!(active & BIT(FC_READ)) || inet_socket(fd) < 0 ||
	    (f = fault_next(FC_READ, 1)) == NULL)
		return REAL(recvmmsg)(fd, v, n, flags, timeout);
	if (f->fault != FAULT_SHORT)
		return fail("recvmmsg", f);
	log_fault("recvmmsg", f);
	return REAL(recvmmsg)(fd, v, n > 0 ? 1 : 0, flags, timeout);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_WRITE, fd, &stream)) == NULL)
		return REAL(write)(fd, buf, n);
	if (f->fault != FAULT_SHORT)
		return fail("write", f);
	log_fault("write", f);
	return REAL(write)(fd, buf, n > 0 ? 1 : 0);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	const struct fault_name *f;
	struct iovec one;
	int stream;

	if ((f = fault_io(FC_WRITE, fd, &stream)) == NULL)
		return REAL(writev)(fd, iov, n);
	if (f->fault != FAULT_SHORT)
		return fail("writev", f);
	log_fault("writev", f);
	if (n < 0 || !first_byte(iov, (size_t)n, &one))
		return REAL(writev)(fd, iov, n);
	return REAL(writev)(fd, &one, 1);
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_WRITE, fd, &stream)) == NULL)
		return REAL(send)(fd, buf, n, flags);
	if (f->fault != FAULT_SHORT)
		return fail("send", f);
	log_fault("send", f);
	return REAL(send)(fd, buf, n > 0 ? 1 : 0, flags);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags,
               __CONST_SOCKADDR_ARG sa, socklen_t salen)
{
	const struct fault_name *f;
	int stream;

	if ((f = fault_io(FC_WRITE, fd, &stream)) == NULL)
		return REAL(sendto)(fd, buf, n, flags, sa, salen);
	if (f->fault != FAULT_SHORT)
		return fail("sendto", f);
	log_fault("sendto", f);
	return REAL(sendto)(fd, buf, n > 0 ? 1 : 0, flags, sa, salen);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	const struct fault_name *f;
	struct msghdr one;
	struct iovec iov;
	int stream;

	if ((f = fault_io(FC_WRITE, fd, &stream)) == NULL)
		return REAL(sendmsg)(fd, m, flags);
	if (f->fault != FAULT_SHORT)
		return fail("sendmsg", f);
	log_fault("sendmsg", f);
	if (!first_byte(m->msg_iov, m->msg_iovlen, &iov))
		return REAL(sendmsg)(fd, m, flags);
	one = *m;
	one.msg_iov = &iov;
	one.msg_iovlen = 1;
	return REAL(sendmsg)(fd, &one, flags);
}

/*
 * ECONNABORTED: the connection is taken and reset, as if the peer had; with
 * none waiting, accept's own error is returned, and no fault is made.
 */
static int accept_fault(const char *fn, const struct fault_name *f, int fd,
                        __SOCKADDR_ARG sa, socklen_t *salen)
{
	struct linger off = {1, 0};
	int c;

	if (f->fault != ECONNABORTED)
		return fail(fn, f);
	c = REAL(accept4)(fd, sa, salen, SOCK_CLOEXEC);
	if (c < 0)
		return -1;
	setsockopt(c, SOL_SOCKET, SO_LINGER, &off, sizeof off);
	close(c);
	return fail(fn, f);
}

static int accept_done(int c)
{
	if (c >= 0)
		atomic_store(&accepted, 1);
	return c;
}

int accept(int fd, __SOCKADDR_ARG sa, socklen_t *salen)
{
	const struct fault_name *f = NULL;

	if (active & BIT(FC_ACCEPT))
		f = fault_next(FC_ACCEPT, 1);
	if (f != NULL)
		return accept_fault("accept", f, fd, sa, salen);
	return accept_done(REAL(accept)(fd, sa, salen));
}

int accept4(int fd, __SOCKADDR_ARG sa, socklen_t *salen, int flags)
{
	const struct fault_name *f = NULL;

	if (active & BIT(FC_ACCEPT))
		f = fault_next(FC_ACCEPT, 1);
	if (f != NULL)
		return accept_fault("accept4", f, fd, sa, salen);
	return accept_done(REAL(accept4)(fd, sa, salen, flags));
}

pid_t fork(void)
{
	const struct fault_name *f;

	if ((active & BIT(FC_FORK)) && (f = fault_next(FC_FORK, 1)) != NULL)
		return fail("fork", f);
	return REAL(fork)();
}

int socket(int domain, int type, int protocol)
{
	const struct fault_name *f;

	if ((active & BIT(FC_SOCKET)) && (f = fault_next(FC_SOCKET, 1)) != NULL)
		return fail("socket", f);
	return REAL(socket)(domain, type, protocol);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	const struct fault_name *f;

	if ((active & BIT(FC_EPOLL_CTL)) && op == EPOLL_CTL_ADD &&
	    (f = fault_next(FC_EPOLL_CTL, 1)) != NULL)
		return fail("epoll_ctl", f);
	return REAL(epoll_ctl)(epfd, op, fd, ev);
}

static void *alloc_malloc(size_t n)
{
	const struct fault_name *f;

	if ((active & BIT(FC_ALLOC)) && (f = fault_next(FC_ALLOC, 1)) != NULL) {
		(void)fail("malloc", f);
		return NULL;
	}
	return malloc(n);
}

static void *alloc_realloc(void *p, size_t n)
{
	const struct fault_name *f;

	if ((active & BIT(FC_ALLOC)) && (f = fault_next(FC_ALLOC, 1)) != NULL) {
		(void)fail("realloc", f);
		return NULL;
	}
	return realloc(p, n);
}

static void alloc_free(void *p)
{
	free(p);
}

static void resolve_all(void)
{
	(void)REAL(read);
	(void)REAL(readv);
	(void)REAL(recv);
	(void)REAL(recvfrom);
	(void)REAL(recvmsg);
	(void)REAL(recvmmsg);
	(void)REAL(write);
	(void)REAL(writev);
	(void)REAL(send);
	(void)REAL(sendto);
	(void)REAL(sendmsg);
	(void)REAL(accept);
	(void)REAL(accept4);
	(void)REAL(fork);
	(void)REAL(socket);
	(void)REAL(epoll_ctl);
}

/*
 * Before main: parse the schedule, resolve what is wrapped while there is
 * one thread, and give libevent the allocator before it allocates.
 */
__attribute__((constructor)) static void fault_init(void)
{
	const char *spec = getenv("FORKLOOP_FAULT");
	void (*set_mem)(void *(*)(size_t), void *(*)(void *, size_t),
	                void (*)(void *));

	log_path = getenv("FORKLOOP_FAULT_LOG");
	if (spec != NULL) {
		const char *s = spec, *end = spec + strlen(spec);

		while (s < end) {
			const char *semi = memchr(s, ';', (size_t)(end - s));

			if (semi == NULL)
				semi = end;
			if (semi > s)
				parse_rule(s, (size_t)(semi - s));
			s = semi + 1;
		}
	}
	resolve_all();
	if (!(active & BIT(FC_ALLOC)))
		return;
	*(void **)&set_mem = dlsym(RTLD_DEFAULT, "event_set_mem_functions");
	if (set_mem == NULL)
		die("libevent has no event_set_mem_functions", "alloc");
	set_mem(alloc_malloc, alloc_realloc, alloc_free);
}
