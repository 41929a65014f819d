/*
 * echo_fork.c - forkloop-echo's fork design: the parent accepts connections
 * with libevent and forks one child per connection, which echoes with
 * blocking read(2) and write(2) through a bounded 64 KiB buffer.
 *
 * The child never touches the parent's event_base: the epoll descriptor and
 * the signal pipe are shared across fork(2), so an epoll_ctl or a signal
 * delivered through libevent's handler in the child would change the parent.
 * Signals are blocked around fork(2); the child resets the parent's handlers,
 * installs its own and closes every inherited descriptor but its connection
 * and standard I/O before unblocking them. A child never outlives the
 * parent: it asks for SIGKILL when the parent dies (PR_SET_PDEATHSIG).
 *
 * Byte counters live in a shared anonymous mapping that children add to, so
 * the parent's statistics include live connections; so does each closing
 * child's lifetime, in the buckets of the duration histogram (--metrics).
 * The parent answers --metrics and the service manager from its loop.
 *
 * TLS (a tls:// listener): the parent loads the SSL_CTX once (tls.c) and
 * reloads it on SIGHUP; a child makes its SSL from the SSL_CTX current when
 * it was forked, so a reload never reaches connections already open. The
 * child's socket is non-blocking and it polls for what OpenSSL asks
 * (SSL_ERROR_WANT_READ or _WANT_WRITE, SSL_get_error(3)): the handshake
 * against one deadline (--tls-handshake-timeout), however slowly its bytes
 * trickle in, then SSL_read and SSL_write with the idle ticks as the poll
 * timeout. It ends with close_notify (SSL_shutdown(3)). With
 * --tls-verify-client, SSL_accept fails for a client certificate that does
 * not verify, and the child logs why (tls_handshake_error).
 *
 * Admission (admit.h): the parent asks admit_conn first thing for each
 * socket it accepts and closes a refused one unread; then --max-conns. The
 * ticket is kept beside the child's pid and given back when the child is
 * reaped, or at once if no child is made.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/notify.h"
#include "forkloop/sock.h"
#include "forkloop/tls.h"
#include "forkloop/udp.h"

#define FORK_BUFSIZE    (64 * 1024)
#define FORK_RETRY_USEC 100000 /* pause after accept or fork fails */
#define FORK_NSIGNALS   (4 + ECHO_NIGNORED_SIGNALS)

/* Counters every process adds to. */
struct fork_shared {
	_Atomic uint64_t bytes_in;
	_Atomic uint64_t bytes_out;
	/* Closed connections' lifetimes: struct metrics_hist, shared. */
	_Atomic uint64_t duration[METRICS_NBUCKETS + 1];
	_Atomic uint64_t duration_us;
};

struct server {
	const struct echo_opts *o;
	struct event_base *base;
	struct evconnlistener *lev[ECHO_MAX_SOCKETS];
	size_t nlev;
	struct event *sigev[FORK_NSIGNALS];
	struct event *resume_ev; /* accept again: burst, failure */
	struct event *kill_ev;   /* drain deadline */
	struct fork_shared *shared;
	pid_t *pids; /* live children */
	struct admit_ticket *tickets; /* tickets[i]: the source of pids[i] */
	char **peers; /* -v: peers[i] names the client of pids[i]; else NULL */
	size_t npids, pidcap;
	uint64_t accepted, refused;
	unsigned burst; /* accepts since the loop last had a turn */
	struct echo_pause pause;
	struct echo_loglimit refusals;
	int stopping;
	uint64_t fork_failed;   /* of refused: no child could be made */
	struct metrics *metrics; /* --metrics; NULL without */
	struct notify *notify;   /* NULL without NOTIFY_SOCKET */
	struct udp_echo *udp;   /* served by the parent; NULL unless UDP */
	struct tls_server *tls; /* NULL without a tls:// listener */
	int lev_tls[ECHO_MAX_SOCKETS]; /* lev[i] serves TLS */
	struct admit *admit;    /* NULL without admission rules */
};

/* One connection, in the child. */
struct child {
	int fd;
	int family; /* the peer's address family: AF_UNIX takes no TCP options */
	const char *peer;
	struct fork_shared *shared;
	double idle_timeout;
	unsigned ticks; /* idle ticks in a row with nothing moved */
	struct echo_progress progress;
	uint64_t in, out;
	uint64_t start;    /* CLOCK_MONOTONIC ms: forked */
	const char *error; /* what failed, for the -v line; NULL */
	char ebuf[160];    /* room for error */
	SSL *ssl; /* NULL for plain TCP */
};

static volatile sig_atomic_t child_stop;

static void child_sighandler(int sig)
{
	(void)sig;
	child_stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* CLOCK_MONOTONIC in seconds: how long a connection lived. */
static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connection that lived seconds has closed: into the shared histogram. */
static void child_record(struct fork_shared *sh, double seconds)
{
	atomic_fetch_add_explicit(&sh->duration[metrics_hist_index(seconds)],
	                          1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->duration_us,
	                          (uint64_t)(seconds * 1e6 + 0.5),
	                          memory_order_relaxed);
}

/*
 * Die with the parent, whatever kills it, even SIGKILL: PR_SET_PDEATHSIG
 * (prctl(2)). The parent may have died before it took effect, so check
 * that it is still the one that forked us.
 */
static void child_die_with(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
}

/*
 * Handlers the parent installed (through libevent) reset to the default, a
 * flag for SIGTERM and SIGINT, installed without SA_RESTART so that a read
 * blocked on an idle client returns EINTR. SIGPIPE stays ignored; SIGUSR1
 * and the signals the parent only logs are ignored, so a signal sent to the
 * whole process group does not end connections.
 */
static void child_signals(const sigset_t *parentmask)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGUSR1, &sa, NULL);
	for (size_t i = 0; i < ECHO_NIGNORED_SIGNALS; i++)
		sigaction(echo_ignored_signals[i], &sa, NULL);
	sa.sa_handler = child_sighandler;
	sigfillset(&sa.sa_mask);
	sa.sa_flags = 0;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigprocmask(SIG_SETMASK, parentmask, NULL);
}

/* Everything but standard I/O and the connection: listeners, epoll, pipes. */
static void child_close_inherited(int fd)
{
	if (fd > 3)
		close_range(3, (unsigned)fd - 1, 0);
	close_range((unsigned)fd + 1, ~0U, 0);
}

/*
 * An idle tick is the socket's own timeout: a read that waits, or a write
 * that makes no progress, this long fails with EAGAIN. No poll per message.
 */
static void child_sockopts(const struct child *c, const struct echo_opts *o)
{
	double tick = c->idle_timeout / ECHO_IDLE_TICKS;
	struct timeval tv;

	sock_set_blocking(c->fd, 1);
	if (echo_conn_setup(o, c->fd, c->family) < 0)
		log_verbose("cannot set socket options: %s", strerror(errno));
	if (c->idle_timeout <= 0)
		return;
	tv.tv_sec = (time_t)tick;
	tv.tv_usec = (suseconds_t)((tick - (double)tv.tv_sec) * 1e6);
	if (tv.tv_sec == 0 && tv.tv_usec == 0)
		tv.tv_usec = 1;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Wait until readable: 1, timeout: 0, error: -1. */
static int child_wait(const struct child *c, int msec)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int r;

	do {
		r = poll(&pfd, 1, msec);
	} while (r < 0 && errno == EINTR);
	return r;
}

/* A socket timeout expired: 1 if nothing moved for the whole idle timeout. */
static int child_idle(struct child *c)
{
	if (echo_progress_moved(c->fd, c->in, c->out, &c->progress)) {
		c->ticks = 0;
		return 0;
	}
	return ++c->ticks >= ECHO_IDLE_TICKS;
}

/* n bytes of echo handed to the kernel, or to SSL_write: count them. */
static void child_sent(struct child *c, size_t n)
{
	atomic_fetch_add_explicit(&c->shared->bytes_out, (uint64_t)n,
	                          memory_order_relaxed);
	c->out += (uint64_t)n;
}

/*
 * Write all n bytes, through EINTR and through idle ticks in which bytes
 * still moved. Returns 0, or -1 with errno set (EAGAIN: idle).
 */
static int child_write(struct child *c, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, buf, n);

		if (w > 0) {
			child_sent(c, (size_t)w);
			buf += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			if (!child_idle(c))
				continue;
			errno = EAGAIN;
		}
		return -1;
	}
	return 0;
}

/* The socket failed with err: why it ends, and what failed. */
static enum echo_end child_fail(struct child *c, int err)
{
	c->error = strerror(err);
	return echo_end_errno(err);
}

/*
 * Echo until EOF, an error, the idle timeout or a stop signal; return why.
 * Every byte read is written back before the next read, so a stop signal
 * arriving during a write lets the write finish: the client is owed it.
 */
static enum echo_end child_echo(struct child *c, char *buf, size_t len)
{
	ssize_t n;

	for (;;) {
		/*
		 * A stop signal landing between this test and read(2) is seen
		 * at the next byte, the idle timeout, or the parent's drain
		 * deadline; nothing is owed then, as all that was read has
		 * been written. Closing that window with a poll per message
		 * would cost a third syscall on the hot path.
		 */
		if (child_stop)
			return ECHO_END_SHUTDOWN;
		n = read(c->fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!child_idle(c))
				continue;
			return ECHO_END_IDLE;
		}
		if (n == 0)
			return ECHO_END_EOF;
		if (n < 0)
			return child_fail(c, errno);
		atomic_fetch_add_explicit(&c->shared->bytes_in, (uint64_t)n,
		                          memory_order_relaxed);
		c->in += (uint64_t)n;
		if (child_write(c, buf, (size_t)n) < 0)
			return errno == EAGAIN ? ECHO_END_IDLE
			                       : child_fail(c, errno);
	}
}

/*
 * Closing with unread input, or with echo not yet acknowledged, can turn
 * into a reset that destroys echo still in flight to the peer (echo.h).
 * Send our FIN and discard input until the peer's FIN, a pause of
 * ECHO_LINGER_MS or ECHO_LINGER_MAX_MS in all.
 */
static void child_linger(struct child *c, char *buf, size_t len)
{
	uint64_t end = now_ms() + ECHO_LINGER_MAX_MS, now;

	if (!echo_linger_needed(c->fd) || shutdown(c->fd, SHUT_WR) < 0)
		return;
	while ((now = now_ms()) < end &&
	       child_wait(c, end - now < ECHO_LINGER_MS ? (int)(end - now)
	                                                : ECHO_LINGER_MS) > 0)
		if (sock_read(c->fd, buf, len, NULL) <= 0)
			return;
}

/*
 * Wait for what OpenSSL asked (err, from SSL_get_error) up to msec (-1: no
 * limit): 1 ready, 0 timeout, -1 a poll failure or, if stop, a stop signal.
 */
static int child_tls_wait(const struct child *c, int err, int msec, int stop)
{
	struct pollfd pfd = {.fd = c->fd};
	int r;

	pfd.events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
	for (;;) {
		if (stop && child_stop)
			return -1;
		r = poll(&pfd, 1, msec);
		if (r >= 0 || errno != EINTR)
			return r;
	}
}

/* Why an SSL call failed with ret: the end of input, OpenSSL's reason, or
 * errno's. */
static enum echo_end child_tls_why(struct child *c, int ret)
{
	int err = SSL_get_error(c->ssl, ret);

	if (err == SSL_ERROR_ZERO_RETURN)
		return ECHO_END_EOF;
	if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
		return errno != 0 ? child_fail(c, errno) : ECHO_END_EOF;
	c->error = tls_strerror(0, c->ebuf, sizeof c->ebuf);
	return ECHO_END_TLS_ERROR;
}

/* SSL_accept(3) against one deadline: ECHO_END_NONE, or why it failed. */
static enum echo_end child_tls_accept(struct child *c, double timeout)
{
	uint64_t end = now_ms() + (uint64_t)(timeout * 1000), now;
	int r, err;

	while ((r = SSL_accept(c->ssl)) != 1) {
		err = SSL_get_error(c->ssl, r);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			/* A client certificate that did not verify: why. */
			if (err == SSL_ERROR_SSL)
				c->error = tls_handshake_error(
				        c->ssl, 0, c->ebuf, sizeof c->ebuf);
			else if (child_tls_why(c, r) == ECHO_END_EOF)
				c->error = "closed by the client";
			return ECHO_END_TLS_HANDSHAKE;
		}
		now = now_ms();
		if (now >= end)
			return ECHO_END_TLS_HANDSHAKE_TIMEOUT;
		r = child_tls_wait(c, err, (int)(end - now), 1);
		if (r < 0)
			return ECHO_END_SHUTDOWN;
		if (r == 0)
			return ECHO_END_TLS_HANDSHAKE_TIMEOUT;
	}
	return ECHO_END_NONE;
}

/* The poll timeout between idle ticks, in ms; -1 without --idle-timeout. */
static int child_tick_ms(const struct child *c)
{
	double ms = c->idle_timeout * 1000 / ECHO_IDLE_TICKS;

	if (c->idle_timeout <= 0)
		return -1;
	return ms < 1 ? 1 : ms > 1e9 ? 1000000000 : (int)ms;
}

/*
 * Wait as OpenSSL asked, counting idle ticks: ECHO_END_NONE to go on, or
 * why to stop; a stop signal counts only if stop (a write owed finishes
 * first).
 */
static enum echo_end child_tls_block(struct child *c, int err, int stop)
{
	int r = child_tls_wait(c, err, child_tick_ms(c), stop);

	if (r < 0)
		return child_stop ? ECHO_END_SHUTDOWN : child_fail(c, errno);
	if (r == 0 && child_idle(c))
		return ECHO_END_IDLE;
	return ECHO_END_NONE;
}

/*
 * SSL_write(3) all n bytes, however OpenSSL splits it: ECHO_END_NONE, or
 * why not.
 */
static enum echo_end child_tls_write(struct child *c, const char *buf,
                                     size_t n)
{
	enum echo_end why;
	int w, err;

	while (n > 0) {
		w = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
		if (w > 0) {
			child_sent(c, (size_t)w);
			buf += w;
			n -= (size_t)w;
			continue;
		}
		err = SSL_get_error(c->ssl, w);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			return child_tls_why(c, w);
		/* Finished even through a stop signal: it is owed. */
		why = child_tls_block(c, err, 0);
		if (why != ECHO_END_NONE)
			return why;
	}
	return ECHO_END_NONE;
}

/* child_echo over TLS: SSL_read, then SSL_write all of it back. */
static enum echo_end child_tls_echo(struct child *c, char *buf, size_t len)
{
	enum echo_end why;
	int n, err;

	for (;;) {
		if (child_stop)
			return ECHO_END_SHUTDOWN;
		n = SSL_read(c->ssl, buf,
		             len > INT32_MAX ? INT32_MAX : (int)len);
		if (n > 0) {
			atomic_fetch_add_explicit(&c->shared->bytes_in,
			                          (uint64_t)n,
			                          memory_order_relaxed);
			c->in += (uint64_t)n;
			why = child_tls_write(c, buf, (size_t)n);
			if (why != ECHO_END_NONE)
				return why;
			continue;
		}
		err = SSL_get_error(c->ssl, n);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			return child_tls_why(c, n);
		why = child_tls_block(c, err, 1);
		if (why != ECHO_END_NONE)
			return why;
	}
}

/*
 * Send close_notify (SSL_shutdown(3)), waiting up to ECHO_LINGER_MS for
 * the socket to take it; the client's own close_notify is not awaited.
 */
static void child_tls_close(struct child *c)
{
	int r, err;

	while ((r = SSL_shutdown(c->ssl)) < 0) {
		err = SSL_get_error(c->ssl, r);
		if (err != SSL_ERROR_WANT_WRITE ||
		    child_tls_wait(c, err, ECHO_LINGER_MS, 0) <= 0)
			break;
	}
	ERR_clear_error();
}

/* The TLS connection: handshake, echo, close_notify; returns why it ended. */
static enum echo_end child_tls_run(struct child *c, struct server *srv,
                                   char *buf, size_t len)
{
	enum echo_end why;

	c->ssl = tls_server_ssl(srv->tls);
	if (c->ssl == NULL) {
		c->error = "out of memory";
		return ECHO_END_ERROR;
	}
	if (sock_set_blocking(c->fd, 0) < 0 ||
	    SSL_set_fd(c->ssl, c->fd) != 1) {
		c->error = "cannot set up TLS";
		return ECHO_END_ERROR;
	}
	why = child_tls_accept(c, srv->o->tls_handshake);
	if (why != ECHO_END_NONE) {
		SSL_free(c->ssl);
		return why;
	}
	why = child_tls_echo(c, buf, len);
	child_tls_close(c);
	SSL_free(c->ssl);
	/* The lingering close polls: back to blocking reads for it. */
	sock_set_blocking(c->fd, 1);
	return why;
}

static void __attribute__((noreturn))
child_run(struct server *srv, int fd, int family, const char *peer, int tls,
          const sigset_t *parentmask, pid_t parent)
{
	static char buf[FORK_BUFSIZE];
	struct child c;
	enum echo_end why;
	double born = now_sec();

	child_die_with(parent);
	memset(&c, 0, sizeof c);
	c.start = now_ms();
	/* Said by the child, so that it always comes before its close line. */
	echo_log_open(peer, "pid", (uint64_t)getpid());
	c.fd = fd;
	c.family = family;
	c.peer = peer;
	c.shared = srv->shared;
	c.idle_timeout = srv->o->idle_timeout;
	child_signals(parentmask);
	child_close_inherited(fd);
	child_sockopts(&c, srv->o);
	if (tls)
		why = child_tls_run(&c, srv, buf, sizeof buf);
	else
		why = child_echo(&c, buf, sizeof buf);
	if (why == ECHO_END_SHUTDOWN || why == ECHO_END_IDLE)
		child_linger(&c, buf, sizeof buf);
	else if (why == ECHO_END_EOF)
		shutdown(fd, SHUT_WR);
	close(fd);
	child_record(srv->shared, now_sec() - born);
	echo_log_close(peer, (long)getpid(), c.in, c.out, why, c.error,
	               now_ms() - c.start);
	_exit(0);
}

static void server_kill_all(struct server *srv, int sig)
{
	size_t i;

	for (i = 0; i < srv->npids; i++)
		kill(srv->pids[i], sig);
}

static int server_reserve_pid(struct server *srv)
{
	struct admit_ticket *t;
	char **peers;
	pid_t *p;
	size_t cap;

	if (srv->npids < srv->pidcap)
		return 0;
	cap = srv->pidcap == 0 ? 64 : srv->pidcap * 2;
	p = realloc(srv->pids, cap * sizeof *p);
	if (p == NULL)
		return -1;
	srv->pids = p;
	t = realloc(srv->tickets, cap * sizeof *t);
	if (t == NULL)
		return -1;
	srv->tickets = t;
	if (log_get_level() >= LOG_VERBOSE) {
		peers = realloc(srv->peers, cap * sizeof *peers);
		if (peers == NULL)
			return -1;
		srv->peers = peers;
	}
	srv->pidcap = cap;
	return 0;
}

/* A connection admitted with t is gone, or never got a child. */
static void server_release(struct server *srv, const struct admit_ticket *t)
{
	if (srv->admit != NULL)
		admit_release(srv->admit, t);
}

static void server_forget_pid(struct server *srv, pid_t pid)
{
	size_t i;

	for (i = 0; i < srv->npids; i++) {
		if (srv->pids[i] == pid) {
			server_release(srv, &srv->tickets[i]);
			srv->npids--;
			srv->pids[i] = srv->pids[srv->npids];
			srv->tickets[i] = srv->tickets[srv->npids];
			if (srv->peers != NULL) {
				free(srv->peers[i]);
				srv->peers[i] = srv->peers[srv->npids];
			}
			return;
		}
	}
}

/*
 * Accept on every listener (on 1) or on none (0). Returns -1, with every
 * listener off again, if one could not be enabled (epoll_ctl(2): ENOMEM).
 */
static int server_set_accepting(struct server *srv, int on)
{
	size_t i;

	for (i = 0; i < srv->nlev; i++) {
		if (!on) {
			evconnlistener_disable(srv->lev[i]);
		} else if (evconnlistener_enable(srv->lev[i]) < 0) {
			server_set_accepting(srv, 0);
			return -1;
		}
	}
	return 0;
}

/* Out of descriptors or processes: stop accepting for a while, no spinning. */
static void server_pause(struct server *srv, const char *what, int err)
{
	struct timeval tv = {0, FORK_RETRY_USEC};

	echo_pause_note(&srv->pause, what, err);
	server_set_accepting(srv, 0);
	listener_timer_add(srv->resume_ev, &tv);
}

static void server_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;

	(void)fd;
	(void)what;
	srv->burst = 0;
	/* Left off, the listeners would never accept again: retry. */
	if (!srv->stopping && server_set_accepting(srv, 1) < 0)
		server_pause(srv, "listen", errno);
}

/*
 * An evconnlistener accepts until accept(2) fails, unless its callback
 * disables it: after ECHO_ACCEPT_BURST accepts (and forks), disable the
 * listeners so that the loop reaps, answers signals and runs its timers,
 * and enable them again from the zero timeout of resume_ev.
 */
static void server_accept_yield(struct server *srv)
{
	if (echo_accept_burst(&srv->burst, srv->resume_ev))
		server_set_accepting(srv, 0);
}

static void server_spawn(struct server *srv, int fd, int family,
                         const char *peer, int tls,
                         const struct admit_ticket *t)
{
	sigset_t all, old;
	pid_t pid, parent = getpid();
	int err;

	if (server_reserve_pid(srv) < 0) {
		close(fd);
		server_release(srv, t);
		srv->refused++;
		srv->fork_failed++;
		server_pause(srv, "cannot track a child", ENOMEM);
		return;
	}
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0)
		child_run(srv, fd, family, peer, tls, &old, parent);
	err = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fd);
	if (pid < 0) {
		server_release(srv, t);
		srv->refused++;
		srv->fork_failed++;
		server_pause(srv, "cannot fork", err);
		return;
	}
	srv->tickets[srv->npids] = *t;
	/* -v: for the line said if the drain deadline kills the child. */
	if (srv->peers != NULL)
		srv->peers[srv->npids] = strdup(peer);
	srv->pids[srv->npids++] = pid;
	srv->accepted++;
	echo_pause_over(&srv->pause);
}

static void server_reap(struct server *srv);

/*
 * --max-conns counts open connections: a child that exited holds none,
 * even before SIGCHLD's turn in the loop comes, so reap before refusing.
 */
static int server_full(struct server *srv)
{
	if (srv->o->max_conns == 0 || srv->npids < srv->o->max_conns)
		return 0;
	server_reap(srv);
	return srv->npids >= srv->o->max_conns;
}

/*
 * The admission rules (echo_admit_conn), before anything is set up for
 * fd: 0 if admitted, or -1 with fd logged and closed. A child that has
 * exited holds no connection: reap first, so its source's count
 * is exact even before SIGCHLD's turn in the loop comes.
 */
static int server_admit(struct server *srv, int fd, const struct sockaddr *sa,
                        int salen, struct admit_ticket *t)
{
	if (admit_per_source(srv->admit) > 0)
		server_reap(srv);
	return echo_admit_conn(srv->o, fd, sa, (socklen_t)salen, t);
}

static void server_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct server *srv = arg;
	struct admit_ticket t = {0};
	char peer[ADDR_STRLEN];
	int tls = 0;

	for (size_t i = 0; i < srv->nlev; i++)
		if (srv->lev[i] == lev)
			tls = srv->lev_tls[i];
	server_accept_yield(srv);
	if (srv->admit != NULL && server_admit(srv, fd, sa, salen, &t) < 0)
		return;
	/* With -v, a Unix peer is named by its uid and pid (SO_PEERCRED). */
	if (log_get_level() >= LOG_VERBOSE)
		listener_peer_name(fd, sa, (socklen_t)salen, peer, sizeof peer);
	else
		addr_format(sa, (socklen_t)salen, peer, sizeof peer);
	if (server_full(srv)) {
		close(fd);
		server_release(srv, &t);
		srv->refused++;
		echo_refused_log(&srv->refusals, peer, srv->npids,
		                 srv->o->max_conns);
		return;
	}
	server_spawn(srv, fd, sa->sa_family, peer, tls, &t);
}

static void server_accepterrcb(struct evconnlistener *lev, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();

	(void)lev;
	server_pause(arg, "accept", err);
}

static void server_reap(struct server *srv)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		server_forget_pid(srv, pid);
		if (WIFSIGNALED(st) &&
		    !(srv->stopping && WTERMSIG(st) == SIGKILL))
			log_error("child %ld killed by signal %d", (long)pid,
			          WTERMSIG(st));
	}
	if (srv->stopping && srv->npids == 0)
		event_base_loopbreak(srv->base);
}

/*
 * The drain deadline: a child still there is killed and says nothing, so
 * the parent says its close line, without the byte counts it cannot know.
 */
static void server_killcb(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct log_kv kv;
	size_t i;

	(void)fd;
	(void)what;
	for (i = 0; srv->peers != NULL && i < srv->npids; i++) {
		log_kv_start(&kv, "close");
		log_kv_str(&kv, "peer",
		           srv->peers[i] != NULL ? srv->peers[i] : "?");
		log_kv_u64(&kv, "pid", (uint64_t)srv->pids[i]);
		log_kv_str(&kv, "reason", echo_end_name(ECHO_END_DRAIN_TIMEOUT));
		log_verbose("%s", kv.buf);
	}
	server_kill_all(srv, SIGKILL);
}

static void server_close_listeners(struct server *srv)
{
	while (srv->nlev > 0)
		evconnlistener_free(srv->lev[--srv->nlev]);
}

/*
 * Stop accepting and free the ports at once, ask every child to finish what
 * it owes, and kill those still there after the drain timeout. A second
 * signal kills them now.
 */
static void server_stop(struct server *srv)
{
	struct timeval tv;
	double d = srv->o->drain_timeout;

	if (srv->stopping) {
		server_kill_all(srv, SIGKILL);
		return;
	}
	srv->stopping = 1;
	notify_stopping(srv->notify, "draining: %zu connections", srv->npids);
	server_close_listeners(srv);
	udp_echo_stop(srv->udp);
	evtimer_del(srv->resume_ev);
	if (srv->npids == 0) {
		event_base_loopbreak(srv->base);
		return;
	}
	log_info("shutting down: %zu connections to drain", srv->npids);
	server_kill_all(srv, SIGTERM);
	tv.tv_sec = (time_t)d;
	tv.tv_usec = (suseconds_t)((d - (double)tv.tv_sec) * 1e6);
	/* No deadline could be armed (out of memory): end the drain now. */
	listener_timer_add(srv->kill_ev, &tv);
}

/* The counts now: the parent's, and the children's in the mapping. */
static void server_counts(struct server *srv, struct echo_stats *s)
{
	server_reap(srv); /* open= counts connections, not zombies */
	memset(s, 0, sizeof *s);
	s->open = srv->npids;
	s->accepted = srv->accepted;
	s->refused = srv->refused;
	s->fork_failed = srv->fork_failed;
	s->draining = srv->stopping;
	s->bytes_in = atomic_load(&srv->shared->bytes_in);
	s->bytes_out = atomic_load(&srv->shared->bytes_out);
	for (size_t i = 0; i <= METRICS_NBUCKETS; i++)
		s->duration.count[i] = atomic_load_explicit(
		        &srv->shared->duration[i], memory_order_relaxed);
	s->duration.sum_us = atomic_load_explicit(&srv->shared->duration_us,
	                                          memory_order_relaxed);
	udp_echo_stats(srv->udp, s);
	echo_admit_stats(srv->o, s);
}

/* final: the daemon's last line, after its loop stopped (echo_stats_log). */
static void server_stats(struct server *srv, int final)
{
	struct echo_stats s;

	server_counts(srv, &s);
	echo_stats_log(&s, final);
}

/* --metrics: a scrape arrived; the counts are at hand. */
static void server_scrapecb(void *arg)
{
	struct server *srv = arg;
	struct evbuffer *text = evbuffer_new();
	struct echo_stats s;

	server_counts(srv, &s);
	if (text != NULL)
		echo_metrics_write(&s, ECHO_MODE_FORK, text);
	metrics_begin(srv->metrics);
	metrics_answer(srv->metrics, text);
	if (text != NULL)
		evbuffer_free(text);
}

/* /healthz: serving until a drain starts. */
static int server_healthcb(void *arg)
{
	return !((struct server *)arg)->stopping;
}

/* The service manager's STATUS= line is due. */
static void server_tickcb(void *arg)
{
	struct echo_stats s;

	server_counts(arg, &s);
	echo_notify_status(((struct server *)arg)->notify, &s);
}

static void server_signalcb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	switch (sig) {
	case SIGCHLD:
		server_reap(arg);
		break;
	case SIGUSR1:
		server_stats(arg, 0);
		break;
	case SIGINT:
	case SIGTERM:
		server_stop(arg);
		break;
	case SIGHUP:
		if (((struct server *)arg)->tls != NULL) {
			tls_server_reload(((struct server *)arg)->tls);
			break;
		}
		echo_signal_log((int)sig);
		break;
	default:
		echo_signal_log((int)sig);
		break;
	}
}

/*
 * Serve one socket: TCP through an evconnlistener whose accepted sockets
 * stay blocking for the children, UDP in the parent's own loop (a datagram
 * needs no process of its own).
 */
static int server_serve(void *arg, const struct echo_socket *s)
{
	struct server *srv = arg;
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
	                       LEV_OPT_LEAVE_SOCKETS_BLOCKING;
	struct evconnlistener *lev;

	if (s->socktype == SOCK_DGRAM) {
		if (udp_echo_serve(&srv->udp, srv->base, srv->o->udp_rate,
		                   s->fd) < 0)
			return -1;
		udp_echo_admit(srv->udp, srv->o);
	} else {
		/* Backlog 0: the socket listens already. */
		lev = evconnlistener_new(srv->base, server_acceptcb, srv, flags,
		                         0, s->fd);
		if (lev == NULL) {
			log_error("cannot listen: out of memory");
			close(s->fd);
			return -1;
		}
		evconnlistener_set_error_cb(lev, server_accepterrcb);
		srv->lev_tls[srv->nlev] = s->tls;
		srv->lev[srv->nlev++] = lev;
	}
	return 0;
}

static int server_events(struct server *srv)
{
	int sigs[FORK_NSIGNALS] = {SIGCHLD, SIGUSR1, SIGINT, SIGTERM};
	size_t i;

	memcpy(sigs + 4, echo_ignored_signals, sizeof echo_ignored_signals);
	for (i = 0; i < FORK_NSIGNALS; i++) {
		srv->sigev[i] =
		        evsignal_new(srv->base, sigs[i], server_signalcb, srv);
		if (srv->sigev[i] == NULL || evsignal_add(srv->sigev[i], NULL))
			return -1;
	}
	srv->resume_ev = evtimer_new(srv->base, server_resumecb, srv);
	srv->kill_ev = evtimer_new(srv->base, server_killcb, srv);
	if (srv->resume_ev == NULL || srv->kill_ev == NULL)
		return -1;
	return 0;
}

static int server_init(struct server *srv, const struct echo_opts *o)
{
	void *p;

	memset(srv, 0, sizeof *srv);
	srv->o = o;
	srv->admit = admit_active(o->admit) ? o->admit : NULL;
	p = mmap(NULL, sizeof *srv->shared, PROT_READ | PROT_WRITE,
	         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		log_error("cannot map shared counters: %s", strerror(errno));
		return -1;
	}
	srv->shared = p;
	/* Loaded once, before the first fork: a bad pair stops here. */
	if (o->tls && (srv->tls = tls_server_new(o->tls_cert, o->tls_key,
	                                         o->tls_verify_client)) == NULL)
		return -1;
	srv->base = event_base_new();
	if (srv->base == NULL || server_events(srv) < 0) {
		log_error("cannot set up the event loop");
		return -1;
	}
	if (o->metrics_on &&
	    (srv->metrics = metrics_new(srv->base, &o->metrics, o->admit,
	                                server_scrapecb, server_healthcb,
	                                srv)) == NULL)
		return -1;
	return notify_new(&srv->notify, srv->base, server_tickcb, NULL, srv);
}

static void server_free(struct server *srv)
{
	size_t i;

	server_close_listeners(srv);
	udp_echo_free(srv->udp);
	for (i = 0; i < sizeof srv->sigev / sizeof srv->sigev[0]; i++)
		if (srv->sigev[i] != NULL)
			event_free(srv->sigev[i]);
	if (srv->resume_ev != NULL)
		event_free(srv->resume_ev);
	if (srv->kill_ev != NULL)
		event_free(srv->kill_ev);
	metrics_free(srv->metrics); /* open until now, through the drain */
	notify_free(srv->notify);
	if (srv->base != NULL)
		event_base_free(srv->base);
	if (srv->shared != NULL)
		munmap(srv->shared, sizeof *srv->shared);
	for (i = 0; srv->peers != NULL && i < srv->npids; i++)
		free(srv->peers[i]);
	free(srv->peers);
	free(srv->pids);
	free(srv->tickets);
	tls_server_free(srv->tls);
}

/* Only if the loop itself failed: leave nothing behind. */
static void server_abandon(struct server *srv)
{
	server_kill_all(srv, SIGKILL);
	while (srv->npids > 0) {
		pid_t pid = waitpid(-1, NULL, 0);

		if (pid < 0)
			break;
		server_forget_pid(srv, pid);
	}
}

int echo_fork_run(const struct echo_opts *o)
{
	struct server srv;
	int status = 1;

	echo_signals_ignore();
	if (server_init(&srv, o) < 0 ||
	    echo_sockets_serve(o, server_serve, &srv) < 0)
		goto out;
	if (event_base_dispatch(srv.base) < 0) {
		log_error("event loop failed");
		server_abandon(&srv);
	} else {
		status = 0;
	}
	server_stats(&srv, 1);
out:
	server_free(&srv);
	return status;
}
