/*
 * echo_event.c - the echo daemon in one process: an event_base per thread
 * (--threads), an evconnlistener per listening socket, one bufferevent per
 * connection.
 *
 * The hot path reads into the connection's input evbuffer and, when nothing
 * is queued for output, writes the input straight back to the socket; only
 * bytes the kernel does not take are moved (not copied) to the bufferevent's
 * output buffer, which libevent then flushes when the socket is writable.
 * A textbook bufferevent echo instead arms and disarms its write event for
 * every message (two epoll_ctl calls) and asks FIONREAD before every read:
 * this file avoids both while keeping the bufferevent for queued output and
 * errors.
 *
 * A connection closed for any reason but the client's FIN or an error, with
 * input unread or echo not yet acknowledged, lingers (echo.h): FIN sent,
 * input read and discarded until the client's FIN, then closed.
 *
 * Threads (--threads N): loop 0 runs on the main thread and owns what is
 * process-wide: the listeners, signals, UDP, the --max-conns count, the
 * drain. It accepts every connection and serves it, or hands it to the
 * loop with the fewest open connections, as memcached's dispatcher does:
 * the socket goes on that loop's inbox (a list under a mutex) and an
 * eventfd wakes it. Each event_base, and everything on it, is touched by
 * its own thread only, so libevent needs no locks (no evthread). The
 * workers answer the main loop (statistics for SIGUSR1, a loop that has
 * drained) the same way, through the main loop's eventfd. One acceptor
 * serves sockets inherited from systemd as well as bound ones, and makes
 * --max-conns exact: only the main thread counts a connection in.
 *
 * TLS (a tls:// listener): the connection's bufferevent is an OpenSSL one
 * (bufferevent_openssl_socket_new, event2/bufferevent_ssl.h), made on the
 * connection's own loop from the one SSL_CTX of tls.c, and the echo takes
 * the textbook path: its read callback moves the input to the output,
 * libevent encrypts and writes. Backpressure, idle timeout, drain and
 * statistics are those of plain connections; a handshake timer closes a
 * client that has not finished the handshake in --tls-handshake-timeout,
 * and closing sends close_notify (SSL_shutdown) before the socket's FIN.
 * SIGHUP reloads the certificate on the main loop; tls.c publishes the new
 * SSL_CTX under a mutex, so every loop's next handshake uses it. With
 * --tls-verify-client, OpenSSL refuses a client certificate during the
 * handshake; the event callback only logs why (tls_handshake_error).
 *
 * Admission (admit.h): the main loop asks admit_conn first thing for each
 * socket it accepts and closes a refused one unread; then --max-conns. The
 * ticket travels with the socket to its loop and into struct conn, and
 * conn_free, on whichever thread, gives it back (admit_release locks).
 *
 * Counts (SIGUSR1, --metrics, the service manager's STATUS=): each loop
 * keeps its own connections' counts, touched by its thread only, so the
 * hot path adds nothing but the plain c->in it always kept; the main loop
 * gathers them by asking each worker through its inbox and answers when
 * the last has replied (server_gather): a scrape waits for that (evhttp
 * sends a reply later), and is answered with counts taken after it
 * arrived. With the service manager's watchdog, each worker also bumps a
 * heartbeat from a timer of its own loop, and the main loop pings only
 * when every worker's has moved since the last ping (server_alivecb).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/notify.h"
#include "forkloop/sock.h"
#include "forkloop/tls.h"
#include "forkloop/udp.h"

/*
 * Bytes asked of the kernel per read, per connection, between these bounds.
 * An evbuffer chain holds its header in the same allocation, rounded up to a
 * power of two, and is allocated for every read and freed when the write
 * drains it: READ_MIN keeps a small message's chain at 1 KiB, which malloc
 * serves from its per-thread cache; READ_MAX stays under 64 KiB so a
 * streaming connection's chain is one 64 KiB block, not 128 KiB.
 */
#define READ_MIN (1024 - 128)
#define READ_MAX (65536 - 256)
/* Most bytes the bufferevent writes per writable event (libevent: 16 KiB). */
#define WRITE_CHUNK (256 * 1024)
/* How long accepting pauses when the process runs out of descriptors. */
#define ACCEPT_PAUSE_MS 100
#define NSIGNALS        (3 + ECHO_NIGNORED_SIGNALS)

struct echo_server;
struct echo_loop;

/* --idle-timeout's tick, and what moved by the last one. */
struct conn_idle {
	struct event ev;
	struct echo_progress progress;
	unsigned ticks; /* ticks in a row with nothing moved */
};

struct conn {
	TAILQ_ENTRY(conn) entry;
	struct echo_loop *loop;
	struct bufferevent *bev;
	struct event rev;       /* readable socket; discards input in linger */
	struct conn_idle *idle; /* NULL without --idle-timeout */
	uint64_t in;            /* bytes read from the client */
	uint64_t dropped;       /* echo given up when nothing moved */
	uint64_t linger_end;    /* CLOCK_MONOTONIC ms: lingering ends */
	uint64_t start;         /* CLOCK_MONOTONIC ms: accepted (-v only) */
	double born;            /* CLOCK_MONOTONIC s: accepted (histogram) */
	enum echo_end why;      /* why it is closing */
	uint32_t rsize;         /* bytes to ask for: grows when reads fill it */
	unsigned reading : 1;   /* rev is added */
	unsigned closing : 1;   /* no more reads: close once output drains */
	unsigned eof : 1;       /* the client's FIN was read */
	unsigned lingering : 1; /* our FIN sent, discarding input */
	unsigned tls : 1;       /* an OpenSSL bufferevent */
	unsigned handshaking : 1; /* TLS: hs is added */
	struct event *hs;         /* TLS: --tls-handshake-timeout; a pointer,
	                             so plain connections stay small */
	char *name;             /* peer address, kept only with -v */
	struct admit_ticket ticket; /* admit_conn's: given back when freed */
};

/* A socket the main loop accepted for a worker to serve. */
struct handoff {
	struct handoff *next;
	evutil_socket_t fd;
	socklen_t salen;
	int tls;
	struct sockaddr_storage sa;
	struct admit_ticket ticket;
};

/* One thread's event loop and the connections it serves. */
struct echo_loop {
	struct echo_server *srv;
	struct event_base *base;
	const struct timeval *idle_tv; /* one tick of --idle-timeout */
	const struct timeval *hs_tv;   /* --tls-handshake-timeout */
	TAILQ_HEAD(, conn) conns;
	uint64_t bytes_in, bytes_out; /* of closed connections */
	struct metrics_hist durations; /* of closed connections */
	atomic_size_t nconns;         /* open here: the main loop picks by it */
	char *sink;                   /* READ_MAX bytes: lingering reads */
	int draining;
	int drained;                  /* loop_drained has run */
	size_t index;
	/* Workers (index > 0) only. */
	pthread_t thread;
	int started;
	int efd;                 /* eventfd: the inbox has something */
	struct event *inbox_ev;  /* efd readable */
	pthread_mutex_t lock;    /* guards inbox to ended */
	struct handoff *inbox, **inbox_tail;
	unsigned want;           /* WANT_*: what the main loop asks */
	struct echo_stats reply; /* answer to HANDOFF_STATS */
	int replied;
	int ended;               /* drained or stopped: the thread ends */
	int asked;               /* main thread only: a reply is awaited */
	struct echo_stats answer; /* main thread only: the last reply */
	/* With the watchdog: beats counts beat_ev's turns, written by the
	 * worker alone; beats_seen is the main thread's, at its last ping. */
	atomic_uint_fast64_t beats;
	struct event *beat_ev;
	uint64_t beats_seen;
};

struct echo_server {
	const struct echo_opts *opts;
	struct event_base *base;  /* loops[0].base, the main thread's */
	struct echo_loop *loops;  /* opts->threads of them */
	size_t nloops;
	size_t next;              /* where the search for the fewest starts */
	struct evconnlistener *lev[ECHO_MAX_SOCKETS];
	size_t nlev;
	struct event *sigs[NSIGNALS];
	struct event *resume_ev; /* re-enables accepting: burst, EMFILE */
	struct event *drain_ev;  /* ends a SIGTERM drain */
	int efd;                 /* eventfd: a worker replied or ended */
	struct event *reply_ev;  /* efd readable */
	atomic_uint_fast64_t open; /* counted in here, out by any loop */
	uint64_t accepted, refused;
	size_t stats_wait;       /* workers yet to answer a gather */
	struct echo_stats stats_snap; /* the main loop's part of it */
	unsigned gathering;      /* GATHER_*: what the gather under way is for */
	unsigned gather_next;    /* GATHER_*: asked for during it */
	struct metrics *metrics; /* --metrics; NULL without */
	struct notify *notify;   /* NULL without NOTIFY_SOCKET */
	unsigned burst;           /* accepts since the loop last had a turn */
	struct echo_pause pause;
	struct echo_loglimit refusals;
	struct echo_loglimit accept_errors;
	int draining;
	struct udp_echo *udp; /* NULL unless UDP is served */
	struct tls_server *tls;        /* NULL without a tls:// listener */
	int lev_tls[ECHO_MAX_SOCKETS]; /* lev[i] serves TLS */
	struct admit *admit; /* NULL without admission rules */
};

static void conn_readcb(evutil_socket_t fd, short what, void *arg);
static void conn_writecb(struct bufferevent *bev, void *arg);
static void conn_eventcb(struct bufferevent *bev, short what, void *arg);

static uint64_t conn_pending(const struct conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) +
	       evbuffer_get_length(bufferevent_get_input(c->bev));
}

/* Bytes handed to the kernel for the client. */
static uint64_t conn_out(const struct conn *c)
{
	return c->in - conn_pending(c) - c->dropped;
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

static void conn_idle_stop(struct conn *c)
{
	if (c->idle == NULL)
		return;
	event_del(&c->idle->ev);
	free(c->idle);
	c->idle = NULL;
}

static void loop_drained(struct echo_loop *loop);

/*
 * A connection counted in by the main loop (open, and loop's nconns, and
 * with admission rules its source, t) is gone: count it out of all. Any
 * thread; the main loop alone counts in.
 */
static void loop_count_out(struct echo_loop *loop, const struct admit_ticket *t)
{
	if (loop->srv->admit != NULL)
		admit_release(loop->srv->admit, t);
	atomic_fetch_sub_explicit(&loop->nconns, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&loop->srv->open, 1, memory_order_relaxed);
}

/* The one place a connection is freed; error says what failed, or NULL. */
static void conn_free(struct conn *c, enum echo_end why, const char *error)
{
	struct echo_loop *loop = c->loop;
	uint64_t out = conn_out(c);

	if (c->name != NULL) {
		echo_log_close(c->name, 0, c->in, out, why, error,
		               now_ms() - c->start);
		free(c->name);
	}
	loop->bytes_in += c->in;
	loop->bytes_out += out;
	metrics_hist_record(&loop->durations, now_sec() - c->born);
	TAILQ_REMOVE(&loop->conns, c, entry);
	event_del(&c->rev);
	if (c->hs != NULL)
		event_free(c->hs);
	conn_idle_stop(c);
	bufferevent_free(c->bev); /* closes the socket */
	/* Counted out once the descriptor is closed: --max-conns and
	 * --max-conns-per-source count what is open. */
	loop_count_out(loop, &c->ticket);
	free(c);
	if (loop->draining && TAILQ_EMPTY(&loop->conns))
		loop_drained(loop);
}

/*
 * Start (on) or stop reading c. Returns -1 if the read event could not be
 * added (epoll_ctl(2) fails with ENOMEM or ENOSPC): the caller frees c,
 * which would otherwise wait for input it is never told of.
 */
static int conn_read_enable(struct conn *c, int on)
{
	if (c->tls) {
		if (on && bufferevent_enable(c->bev, EV_READ) < 0)
			return -1;
		if (!on)
			bufferevent_disable(c->bev, EV_READ);
		c->reading = on ? 1 : 0;
		return 0;
	}
	if (on && !c->reading && event_add(&c->rev, NULL) < 0)
		return -1;
	if (!on && c->reading)
		event_del(&c->rev);
	c->reading = on ? 1 : 0;
	return 0;
}

/* Lingering: discard input until the client's FIN, a pause or the end. */
static void conn_lingercb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct echo_loop *loop = c->loop;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		conn_free(c, c->why, NULL);
		return;
	}
	/* One buffer per loop, its thread's own, for what is thrown away. */
	if (loop->sink == NULL && (loop->sink = malloc(READ_MAX)) == NULL) {
		conn_free(c, c->why, NULL);
		return;
	}
	n = read(fd, loop->sink, READ_MAX);
	if (n > 0 && now_ms() < c->linger_end)
		return;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	conn_free(c, c->why, NULL);
}

/*
 * TLS: everything owed went through SSL_write; send close_notify
 * (SSL_shutdown(3)) once, not waiting for the client's: the bufferevent
 * is done with the socket.
 */
static void conn_tls_notify(struct conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	if (ssl != NULL && SSL_shutdown(ssl) < 0)
		ERR_clear_error();
}

/*
 * Everything owed is with the kernel. After the client's FIN nothing more
 * can arrive, and with nothing unread or unacknowledged nothing can be
 * lost: close. Otherwise send our FIN and linger (echo.h).
 */
static void conn_close(struct conn *c)
{
	static const struct timeval pause = {ECHO_LINGER_MS / 1000,
	                                     ECHO_LINGER_MS % 1000 * 1000};
	evutil_socket_t fd = bufferevent_getfd(c->bev);

	if (c->tls && !c->handshaking)
		conn_tls_notify(c);
	if (c->eof || !echo_linger_needed(fd) || shutdown(fd, SHUT_WR) < 0) {
		conn_free(c, c->why, NULL);
		return;
	}
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	conn_idle_stop(c);
	c->lingering = 1;
	c->linger_end = now_ms() + ECHO_LINGER_MAX_MS;
	event_del(&c->rev);
	event_assign(&c->rev, c->loop->base, fd, EV_READ | EV_PERSIST,
	             conn_lingercb, c);
	if (event_add(&c->rev, &pause) < 0) {
		conn_free(c, c->why, NULL);
		return;
	}
	c->reading = 1;
}

/* Stop reading; close once the output drains. */
static void conn_finish(struct conn *c, enum echo_end why)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->why = why;
	conn_read_enable(c, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_close(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

/* Nothing moved for --idle-timeout: give up the echo still queued, close. */
static void conn_idlecb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *out = bufferevent_get_output(c->bev);

	(void)fd;
	(void)what;
	if (echo_progress_moved(bufferevent_getfd(c->bev), c->in, conn_out(c),
	                        &c->idle->progress)) {
		c->idle->ticks = 0;
		return;
	}
	if (++c->idle->ticks < ECHO_IDLE_TICKS)
		return;
	c->dropped += evbuffer_get_length(out);
	evbuffer_drain(out, evbuffer_get_length(out));
	if (c->closing) {
		c->why = ECHO_END_IDLE;
		conn_close(c);
		return;
	}
	conn_finish(c, ECHO_END_IDLE);
}

/*
 * Send what was just read. With nothing queued, write it at once; whatever
 * the kernel refuses moves to the output buffer behind anything queued.
 * Returns -1 if the connection failed.
 */
static int conn_echo(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (evbuffer_get_length(out) == 0) {
		if (evbuffer_write(in, bufferevent_getfd(c->bev)) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			return -1;
		if (evbuffer_get_length(in) == 0)
			return 0;
	}
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) >= c->loop->srv->opts->max_pending)
		conn_read_enable(c, 0); /* resumed by conn_writecb */
	return 0;
}

/* Read one chunk into the input buffer: FIONREAD is not asked first. */
static ssize_t conn_read(struct conn *c, evutil_socket_t fd)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_iovec v;
	ssize_t n;

	if (evbuffer_reserve_space(in, c->rsize, &v, 1) < 1) {
		errno = ENOMEM;
		return -1;
	}
	n = read(fd, v.iov_base, v.iov_len);
	if (n <= 0)
		return n;
	/* A full read means more is waiting: ask for twice as much. */
	if ((size_t)n == v.iov_len && c->rsize < READ_MAX)
		c->rsize = c->rsize * 2 > READ_MAX ? READ_MAX : c->rsize * 2;
	v.iov_len = (size_t)n;
	evbuffer_commit_space(in, &v, 1);
	c->in += (uint64_t)n;
	return n;
}

static void conn_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	ssize_t n;

	(void)what;
	n = conn_read(c, fd);
	if (n > 0) {
		if (conn_echo(c) < 0)
			conn_free(c, echo_end_errno(errno), strerror(errno));
		return;
	}
	if (n == 0) {
		c->eof = 1;
		conn_finish(c, ECHO_END_EOF);
		return;
	}
	if (errno == EAGAIN || errno == EINTR)
		return;
	conn_free(c, echo_end_errno(errno), strerror(errno));
}

/* The output buffer fell to its low-water mark. */
static void conn_writecb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->lingering)
		return;
	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_close(c);
		return;
	}
	if (conn_read_enable(c, 1) < 0)
		conn_free(c, echo_end_errno(errno), strerror(errno));
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	(void)what;
	conn_free(c, echo_end_errno(err), evutil_socket_error_to_string(err));
}

/* TLS: whatever arrived goes back out; libevent encrypts and writes. */
static void conn_tls_readcb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);

	if (c->closing) { /* reading is off: only what one read brought */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	c->in += evbuffer_get_length(in);
	evbuffer_add_buffer(out, in);
	if (evbuffer_get_length(out) >= c->loop->srv->opts->max_pending)
		conn_read_enable(c, 0); /* resumed by conn_writecb */
}

static void conn_tls_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	unsigned long e;
	char reason[160];
	enum echo_end why;

	if (what & BEV_EVENT_CONNECTED) {
		c->handshaking = 0;
		event_free(c->hs);
		c->hs = NULL;
		return;
	}
	e = bufferevent_get_openssl_error(bev);
	/*
	 * libevent 2.1 (conn_closed in bufferevent_openssl.c) reports the
	 * client's close_notify or FIN as EOF, and, with dirty shutdowns
	 * allowed, a reset too: that one comes with SSL_ERROR_SYSCALL queued
	 * as an error. On either it stops writing, which the echo still owed
	 * after an end of input must undo.
	 */
	if ((what & BEV_EVENT_EOF) && !c->handshaking && e == 0) {
		c->eof = 1;
		/* Unwatched (epoll_ctl(2): ENOMEM), the echo still owed
		 * would never go out. */
		if (bufferevent_enable(bev, EV_WRITE) < 0) {
			conn_free(c, echo_end_errno(errno), strerror(errno));
			return;
		}
		conn_finish(c, ECHO_END_EOF);
		return;
	}
	while (bufferevent_get_openssl_error(bev) != 0)
		;
	/* After the handshake, a socket's failure is named as on plain TCP. */
	why = c->handshaking ? ECHO_END_TLS_HANDSHAKE : ECHO_END_TLS_ERROR;
	/* A client certificate that did not verify says why (tls.h). */
	if (e != 0 && c->handshaking) {
		tls_handshake_error(bufferevent_openssl_get_ssl(bev), e, reason,
		                    sizeof reason);
	} else if (e == SSL_ERROR_SYSCALL && EVUTIL_SOCKET_ERROR() != 0) {
		snprintf(reason, sizeof reason, "%s",
		         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		if (!c->handshaking)
			why = echo_end_errno(EVUTIL_SOCKET_ERROR());
	} else if (e != 0) {
		tls_strerror(e, reason, sizeof reason);
	} else if (what & BEV_EVENT_EOF) {
		snprintf(reason, sizeof reason, "closed by the client");
	} else {
		snprintf(reason, sizeof reason, "%s",
		         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		if (!c->handshaking)
			why = echo_end_errno(EVUTIL_SOCKET_ERROR());
	}
	c->handshaking = 0; /* no close_notify: there is no session */
	conn_free(c, why, reason);
}

static void conn_hs_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	conn_free(c, ECHO_END_TLS_HANDSHAKE_TIMEOUT, NULL);
}

/* The bufferevent for fd: an OpenSSL one, accepting, if tls. */
static struct bufferevent *conn_bev_new(struct echo_loop *loop,
                                        evutil_socket_t fd, int tls)
{
	struct bufferevent *bev;
	SSL *ssl;

	if (!tls)
		return bufferevent_socket_new(loop->base, fd,
		                              BEV_OPT_CLOSE_ON_FREE);
	ssl = tls_server_ssl(loop->srv->tls);
	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(loop->base, fd, ssl,
	                                     BUFFEREVENT_SSL_ACCEPTING,
	                                     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* A FIN without close_notify ends the input (tls.h). */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/*
 * Arm c's handshake and idle deadlines. Returns -1 if one cannot be armed
 * (libevent's timer heap cannot grow: out of memory): the caller frees c,
 * which would otherwise be held past its deadlines for good.
 */
static int conn_arm(struct conn *c)
{
	if (c->hs != NULL && evtimer_add(c->hs, c->loop->hs_tv) < 0)
		return -1;
	if (c->idle != NULL && event_add(&c->idle->ev, c->loop->idle_tv) < 0)
		return -1;
	return 0;
}

static struct conn *conn_new(struct echo_loop *loop, evutil_socket_t fd,
                             const struct sockaddr *sa, socklen_t salen,
                             int tls, const struct admit_ticket *t)
{
	const struct echo_opts *o = loop->srv->opts;
	struct conn *c;
	char name[ADDR_STRLEN];

	c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->loop = loop;
	c->rsize = READ_MIN;
	c->ticket = *t;
	c->born = now_sec();
	if (loop->idle_tv != NULL) {
		c->idle = calloc(1, sizeof *c->idle);
		if (c->idle == NULL) {
			free(c);
			return NULL;
		}
	}
	/* Made before the bufferevent, which would close fd if freed. */
	if (tls && (c->hs = evtimer_new(loop->base, conn_hs_timeoutcb, c)) ==
	                   NULL) {
		free(c->idle);
		free(c);
		return NULL;
	}
	c->bev = conn_bev_new(loop, fd, tls);
	if (c->bev == NULL) {
		if (c->hs != NULL)
			event_free(c->hs);
		free(c->idle);
		free(c);
		return NULL;
	}
	if (log_get_level() >= LOG_VERBOSE) {
		c->name = strdup(listener_peer_name(fd, sa, salen, name,
		                                    sizeof name));
		c->start = now_ms();
		echo_log_open(c->name != NULL ? c->name : "?", "loop",
		              loop->index);
	}
	event_assign(&c->rev, loop->base, fd, EV_READ | EV_PERSIST,
	             conn_readcb, c);
	if (tls) {
		c->tls = 1;
		c->handshaking = 1;
		bufferevent_setcb(c->bev, conn_tls_readcb, conn_writecb,
		                  conn_tls_eventcb, c);
	} else {
		/*
		 * A socket bufferevent freezes the end of its input buffer so
		 * that only its own read callback adds to it; this file reads
		 * for it instead.
		 */
		evbuffer_unfreeze(bufferevent_get_input(c->bev), 0);
		bufferevent_setcb(c->bev, NULL, conn_writecb, conn_eventcb, c);
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, o->max_pending / 2, 0);
	bufferevent_set_max_single_write(c->bev, WRITE_CHUNK);
	if (c->idle != NULL) {
		event_assign(&c->idle->ev, loop->base, -1, EV_PERSIST,
		             conn_idlecb, c);
	}
	TAILQ_INSERT_TAIL(&loop->conns, c, entry);
	return c;
}

/*
 * Serve fd on loop, from loop's own thread. The main loop counted it in
 * (open, nconns, its source's ticket t); on failure it is closed and
 * counted out.
 */
static void loop_take(struct echo_loop *loop, evutil_socket_t fd,
                      const struct sockaddr *sa, socklen_t salen, int tls,
                      const struct admit_ticket *t)
{
	struct conn *c;

	if (echo_conn_setup(loop->srv->opts, fd, sa->sa_family) < 0)
		log_verbose("cannot set socket options: %s", strerror(errno));
	if ((c = conn_new(loop, fd, sa, salen, tls, t)) != NULL) {
		if (conn_arm(c) < 0 || conn_read_enable(c, 1) < 0)
			conn_free(c, echo_end_errno(errno), strerror(errno));
		return;
	}
	log_error("cannot set up a connection: out of memory");
	evutil_closesocket(fd);
	loop_count_out(loop, t);
}

/* Add the counts of loop's closed and open connections to s. */
static void loop_stats(struct echo_loop *loop, struct echo_stats *s)
{
	struct conn *c;

	s->bytes_in += loop->bytes_in;
	s->bytes_out += loop->bytes_out;
	metrics_hist_add(&s->duration, &loop->durations);
	TAILQ_FOREACH(c, &loop->conns, entry)
	{
		s->bytes_in += c->in;
		s->bytes_out += conn_out(c);
	}
}

/* Start finishing every connection of loop: SIGINT or SIGTERM. */
static void loop_drain(struct echo_loop *loop)
{
	struct conn *c, *next;

	if (loop->draining)
		return;
	loop->draining = 1;
	for (c = TAILQ_FIRST(&loop->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		conn_finish(c, ECHO_END_SHUTDOWN);
	}
	if (TAILQ_EMPTY(&loop->conns))
		loop_drained(loop);
}

/* Wake the thread behind an eventfd (eventfd(2): adds to its counter). */
static void efd_wake(int efd)
{
	uint64_t one = 1;

	while (write(efd, &one, sizeof one) < 0 && errno == EINTR)
		;
}

static void efd_clear(int efd)
{
	uint64_t v;

	while (read(efd, &v, sizeof v) < 0 && errno == EINTR)
		;
}

/*
 * A worker's end, on its own thread: drained, or told to stop. Leave the
 * final counts for the main loop and tell it; the loop then returns.
 */
static void loop_end(struct echo_loop *loop)
{
	struct echo_stats s;

	memset(&s, 0, sizeof s);
	loop_stats(loop, &s);
	pthread_mutex_lock(&loop->lock);
	loop->reply = s;
	loop->ended = 1;
	pthread_mutex_unlock(&loop->lock);
	efd_wake(loop->srv->efd);
	event_base_loopexit(loop->base, NULL);
}

static void server_check_done(struct echo_server *srv);

/* A draining loop has closed its last connection; said once. */
static void loop_drained(struct echo_loop *loop)
{
	if (loop->drained)
		return;
	loop->drained = 1;
	if (loop->index == 0)
		server_check_done(loop->srv);
	else
		loop_end(loop);
}

/*
 * A worker's inbox: sockets to serve, in the order accepted, then what
 * the main loop asked (statistics, drain, stop), as flags.
 */
#define WANT_STATS 1u
#define WANT_DRAIN 2u
#define WANT_STOP  4u

static void loop_inboxcb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_loop *loop = arg;
	struct handoff *h, *next;
	struct echo_stats s;
	struct conn *c;
	unsigned want;

	(void)what;
	efd_clear(fd);
	pthread_mutex_lock(&loop->lock);
	h = loop->inbox;
	loop->inbox = NULL;
	loop->inbox_tail = &loop->inbox;
	want = loop->want;
	loop->want = 0;
	pthread_mutex_unlock(&loop->lock);
	for (; h != NULL; h = next) {
		next = h->next;
		loop_take(loop, h->fd, (struct sockaddr *)&h->sa, h->salen,
		          h->tls, &h->ticket);
		free(h);
	}
	if (want & WANT_STATS) {
		memset(&s, 0, sizeof s);
		loop_stats(loop, &s);
		pthread_mutex_lock(&loop->lock);
		loop->reply = s;
		loop->replied = 1;
		pthread_mutex_unlock(&loop->lock);
		efd_wake(loop->srv->efd);
	}
	if (want & WANT_STOP) {
		loop->draining = 0; /* one loop_end, below */
		while ((c = TAILQ_FIRST(&loop->conns)) != NULL)
			conn_free(c, ECHO_END_DRAIN_TIMEOUT, NULL);
		loop_end(loop);
	} else if (want & WANT_DRAIN) {
		loop_drain(loop);
	}
}

/* The CPUs of the process's affinity mask, before any thread is pinned. */
static cpu_set_t echo_allowed;

/* --cpu-affinity: loop i runs on the i-th CPU this process may use. */
static void loop_pin(struct echo_loop *loop)
{
	cpu_set_t one;
	int cpu, seen = -1, want, err;

	if (!loop->srv->opts->cpu_affinity)
		return;
	want = (int)(loop->index % (size_t)CPU_COUNT(&echo_allowed));
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &echo_allowed) && ++seen == want)
			break;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	err = pthread_setaffinity_np(pthread_self(), sizeof one, &one);
	if (err != 0)
		log_warn("cannot pin loop %zu to CPU %d: %s", loop->index, cpu,
		         strerror(err));
	else
		log_verbose("loop %zu on CPU %d", loop->index, cpu);
}

static void *loop_thread(void *arg)
{
	struct echo_loop *loop = arg;

	loop_pin(loop);
	if (event_base_dispatch(loop->base) < 0)
		log_error("event loop %zu failed", loop->index);
	return NULL;
}

/*
 * Accept on every listener (on 1) or on none (0). Returns -1, with every
 * listener off again, if one could not be enabled (epoll_ctl(2): ENOMEM).
 */
static int server_listen_enable(struct echo_server *srv, int on)
{
	for (size_t i = 0; i < srv->nlev; i++) {
		if (!on) {
			evconnlistener_disable(srv->lev[i]);
		} else if (evconnlistener_enable(srv->lev[i]) < 0) {
			server_listen_enable(srv, 0);
			return -1;
		}
	}
	return 0;
}

/*
 * An evconnlistener accepts until accept(2) fails, unless its callback
 * disables it: after ECHO_ACCEPT_BURST accepts, disable them all and let
 * the loop run its signals, timers and connections before the zero
 * timeout of resume_ev enables them again.
 */
static void server_accept_yield(struct echo_server *srv)
{
	if (echo_accept_burst(&srv->burst, srv->resume_ev))
		server_listen_enable(srv, 0);
}

/* The loop with the fewest open connections, ties taken in turn. */
static struct echo_loop *server_pick(struct echo_server *srv)
{
	struct echo_loop *best = NULL, *l;
	size_t i, k, bestk = 0;

	for (i = 0; i < srv->nloops; i++) {
		l = &srv->loops[(srv->next + i) % srv->nloops];
		k = atomic_load_explicit(&l->nconns, memory_order_relaxed);
		if (best == NULL || k < bestk) {
			best = l;
			bestk = k;
		}
	}
	srv->next = (best->index + 1) % srv->nloops;
	return best;
}

/* Put fd on a worker's inbox and wake it; -1 if out of memory. */
static int loop_post(struct echo_loop *loop, evutil_socket_t fd,
                     const struct sockaddr *sa, socklen_t salen, int tls,
                     const struct admit_ticket *t)
{
	struct handoff *h = malloc(sizeof *h);

	if (h == NULL)
		return -1;
	h->next = NULL;
	h->fd = fd;
	h->tls = tls;
	h->ticket = *t;
	h->salen = salen <= sizeof h->sa ? salen : sizeof h->sa;
	memcpy(&h->sa, sa, h->salen);
	pthread_mutex_lock(&loop->lock);
	*loop->inbox_tail = h;
	loop->inbox_tail = &h->next;
	pthread_mutex_unlock(&loop->lock);
	efd_wake(loop->efd);
	return 0;
}

/* Ask a worker for something (WANT_*). */
static void loop_ask(struct echo_loop *loop, unsigned want)
{
	pthread_mutex_lock(&loop->lock);
	loop->want |= want;
	pthread_mutex_unlock(&loop->lock);
	efd_wake(loop->efd);
}

static void server_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct echo_server *srv = arg;
	struct echo_loop *loop;
	struct admit_ticket t = {0};
	char peer[ADDR_STRLEN];
	uint64_t open;
	int tls = 0;

	for (size_t i = 0; i < srv->nlev; i++)
		if (srv->lev[i] == lev)
			tls = srv->lev_tls[i];
	echo_pause_over(&srv->pause);
	server_accept_yield(srv);
	if (srv->admit != NULL &&
	    echo_admit_conn(srv->opts, fd, sa, (socklen_t)salen, &t) < 0)
		return;
	/* Only this thread counts in: the check cannot be overtaken. */
	open = atomic_load_explicit(&srv->open, memory_order_relaxed);
	if (srv->opts->max_conns != 0 && open >= srv->opts->max_conns) {
		if (srv->admit != NULL)
			admit_release(srv->admit, &t);
		srv->refused++;
		if (log_get_level() >= LOG_VERBOSE)
			echo_refused_log(&srv->refusals,
			                 listener_peer_name(fd, sa,
			                                    (socklen_t)salen,
			                                    peer, sizeof peer),
			                 open, srv->opts->max_conns);
		evutil_closesocket(fd);
		return;
	}
	srv->accepted++;
	atomic_fetch_add_explicit(&srv->open, 1, memory_order_relaxed);
	loop = server_pick(srv);
	atomic_fetch_add_explicit(&loop->nconns, 1, memory_order_relaxed);
	if (loop->index == 0) {
		loop_take(loop, fd, sa, (socklen_t)salen, tls, &t);
	} else if (loop_post(loop, fd, sa, (socklen_t)salen, tls, &t) < 0) {
		log_error("cannot hand over a connection: out of memory");
		evutil_closesocket(fd);
		loop_count_out(loop, &t);
	}
}

/*
 * accept() failed. Out of descriptors or memory, the pending connection
 * stays queued and the listener stays readable: pause instead of spinning.
 */
static void server_accept_errorcb(struct evconnlistener *lev, void *arg)
{
	struct echo_server *srv = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
	uint64_t held;

	(void)lev;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		/* One connect's failure (EPERM, EPROTO): a flood repeats it. */
		if (echo_loglimit_pass(&srv->accept_errors,
		                       (int64_t)now_ms(), &held))
			log_warn("accept: %s (%llu more not logged)",
			         strerror(err), (unsigned long long)held);
		return;
	}
	echo_pause_note(&srv->pause, "accept", err);
	server_listen_enable(srv, 0);
	listener_timer_add(srv->resume_ev, &tv);
}

static void server_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_server *srv = arg;

	(void)fd;
	(void)what;
	srv->burst = 0;
	if (server_listen_enable(srv, 1) < 0) {
		struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};

		/* Left off, the listeners would never accept again. */
		echo_pause_note(&srv->pause, "listen", errno);
		listener_timer_add(srv->resume_ev, &tv);
	}
}

/* What a gather of every loop's counts is for (server_gather). */
#define GATHER_LOG    1u /* SIGUSR1: the statistics line */
#define GATHER_SCRAPE 2u /* --metrics: the scrapes metrics_begin took */
#define GATHER_STATUS 4u /* the service manager's STATUS= line */

static void server_gather(struct echo_server *srv, unsigned why);

/* The metrics text of s, to every scrape taken. */
static void server_scrape_answer(struct echo_server *srv,
                                 const struct echo_stats *s)
{
	struct evbuffer *text = evbuffer_new();

	if (text != NULL)
		echo_metrics_write(s, ECHO_MODE_EVENT, text);
	metrics_answer(srv->metrics, text);
	if (text != NULL)
		evbuffer_free(text);
}

/*
 * The gather is done: srv->stats_snap and every worker's answer make the
 * counts, for whatever it was for; then the one asked for meanwhile.
 */
static void server_gathered(struct echo_server *srv)
{
	struct echo_stats s = srv->stats_snap;
	unsigned why = srv->gathering;
	size_t i;

	for (i = 1; i < srv->nloops; i++) {
		s.bytes_in += srv->loops[i].answer.bytes_in;
		s.bytes_out += srv->loops[i].answer.bytes_out;
		metrics_hist_add(&s.duration, &srv->loops[i].answer.duration);
	}
	srv->gathering = 0;
	if (why & GATHER_LOG)
		echo_stats_log(&s, 0);
	if (why & GATHER_STATUS)
		echo_notify_status(srv->notify, &s);
	if (why & GATHER_SCRAPE)
		server_scrape_answer(srv, &s);
	why = srv->gather_next;
	srv->gather_next = 0;
	if (why != 0)
		server_gather(srv, why);
}

/*
 * The sum over every loop, for why (GATHER_*). What the main loop counts
 * (open, accepted, refused, its own connections, UDP) is taken now;
 * workers count their own connections' bytes and durations, and the counts
 * are complete once the last has answered (a worker that has ended
 * answered with its final counts). A SIGUSR1 while a gather is under way
 * is answered by the same line; a scrape or a status line then waits for
 * the next gather, so that its counts are taken after it asked.
 */
static void server_gather(struct echo_server *srv, unsigned why)
{
	struct echo_stats *s = &srv->stats_snap;
	struct echo_loop *l;
	size_t i;
	int ended;

	if (srv->stats_wait > 0) {
		srv->gathering |= why & GATHER_LOG;
		srv->gather_next |= why & ~GATHER_LOG;
		return;
	}
	srv->gathering = why;
	if (why & GATHER_SCRAPE)
		metrics_begin(srv->metrics);
	memset(s, 0, sizeof *s);
	s->open = atomic_load_explicit(&srv->open, memory_order_relaxed);
	s->accepted = srv->accepted;
	s->refused = srv->refused;
	s->draining = srv->draining;
	loop_stats(&srv->loops[0], s);
	udp_echo_stats(srv->udp, s);
	echo_admit_stats(srv->opts, s);
	for (i = 1; i < srv->nloops; i++) {
		l = &srv->loops[i];
		/* A worker that has ended left its final counts. */
		pthread_mutex_lock(&l->lock);
		ended = l->ended;
		if (ended)
			l->answer = l->reply;
		pthread_mutex_unlock(&l->lock);
		if (ended)
			continue;
		l->asked = 1;
		srv->stats_wait++;
		loop_ask(l, WANT_STATS);
	}
	if (srv->stats_wait == 0)
		server_gathered(srv);
}

/* Every loop has drained: end the main one. */
static void server_check_done(struct echo_server *srv)
{
	size_t i;
	int ended;

	if (!srv->draining || !TAILQ_EMPTY(&srv->loops[0].conns))
		return;
	for (i = 1; i < srv->nloops; i++) {
		pthread_mutex_lock(&srv->loops[i].lock);
		ended = srv->loops[i].ended;
		pthread_mutex_unlock(&srv->loops[i].lock);
		if (!ended)
			return;
	}
	event_base_loopexit(srv->base, NULL);
}

/* A worker answered a gather, or ended. */
static void server_replycb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_server *srv = arg;
	struct echo_loop *l;
	size_t i;
	int answered;

	(void)what;
	efd_clear(fd);
	for (i = 1; i < srv->nloops; i++) {
		l = &srv->loops[i];
		if (!l->asked)
			continue;
		pthread_mutex_lock(&l->lock);
		answered = l->replied || l->ended;
		if (answered)
			l->answer = l->reply;
		l->replied = 0;
		pthread_mutex_unlock(&l->lock);
		if (answered) {
			l->asked = 0;
			if (--srv->stats_wait == 0)
				server_gathered(srv);
		}
	}
	server_check_done(srv);
}

static void server_drain_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_server *srv = arg;
	struct echo_loop *main_loop = &srv->loops[0];
	struct conn *c;
	size_t i;

	(void)fd;
	(void)what;
	main_loop->draining = 0; /* the loop exits here, not on the last */
	while ((c = TAILQ_FIRST(&main_loop->conns)) != NULL)
		conn_free(c, ECHO_END_DRAIN_TIMEOUT, NULL);
	for (i = 1; i < srv->nloops; i++)
		loop_ask(&srv->loops[i], WANT_STOP);
	event_base_loopexit(srv->base, NULL);
}

/* Stop accepting, give every connection drain-timeout to get its echo. */
static void server_drain(struct echo_server *srv)
{
	struct timeval tv;
	size_t i;

	if (srv->draining)
		return;
	srv->draining = 1;
	for (i = 0; i < srv->nlev; i++)
		evconnlistener_free(srv->lev[i]); /* frees the port at once */
	srv->nlev = 0;
	udp_echo_stop(srv->udp);
	evtimer_del(srv->resume_ev);
	log_info("shutting down: %llu connections to drain",
	         (unsigned long long)atomic_load(&srv->open));
	notify_stopping(srv->notify, "draining: %llu connections",
	                (unsigned long long)atomic_load(&srv->open));
	tv.tv_sec = (time_t)srv->opts->drain_timeout;
	tv.tv_usec =
	        (suseconds_t)((srv->opts->drain_timeout - tv.tv_sec) * 1e6);
	/* No deadline could be armed (out of memory): end the drain now. */
	listener_timer_add(srv->drain_ev, &tv);
	/* Sockets handed over before now reach their loop first (FIFO). */
	for (i = 1; i < srv->nloops; i++)
		loop_ask(&srv->loops[i], WANT_DRAIN);
	loop_drain(&srv->loops[0]);
}

static void server_signalcb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	if (sig == SIGUSR1)
		server_gather(arg, GATHER_LOG);
	else if (sig == SIGINT || sig == SIGTERM)
		server_drain(arg);
	else if (sig == SIGHUP && ((struct echo_server *)arg)->tls != NULL)
		tls_server_reload(((struct echo_server *)arg)->tls);
	else
		echo_signal_log((int)sig);
}

/* Serve one socket: TCP through an evconnlistener, UDP through udp_echo. */
static int server_serve(void *arg, const struct echo_socket *s)
{
	struct echo_server *srv = arg;
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct evconnlistener *lev;

	if (s->socktype == SOCK_DGRAM) {
		if (udp_echo_serve(&srv->udp, srv->base, srv->opts->udp_rate,
		                   s->fd) < 0)
			return -1;
		udp_echo_admit(srv->udp, srv->opts);
	} else {
		/* Backlog 0: the socket listens already. */
		lev = evconnlistener_new(srv->base, server_acceptcb, srv, flags,
		                         0, s->fd);
		if (lev == NULL) {
			log_error("cannot listen: out of memory");
			evutil_closesocket(s->fd);
			return -1;
		}
		evconnlistener_set_error_cb(lev, server_accept_errorcb);
		srv->lev_tls[srv->nlev] = s->tls;
		srv->lev[srv->nlev++] = lev;
	}
	return 0;
}

/* Set up loop i's base and, for a worker, its inbox. */
static int loop_init(struct echo_server *srv, size_t i)
{
	struct echo_loop *loop = &srv->loops[i];
	const struct echo_opts *o = srv->opts;

	loop->srv = srv;
	loop->index = i;
	loop->efd = -1;
	TAILQ_INIT(&loop->conns);
	atomic_init(&loop->nconns, 0);
	loop->inbox_tail = &loop->inbox;
	loop->base = i == 0 ? srv->base : event_base_new();
	if (loop->base == NULL)
		return -1;
	if (o->idle_timeout > 0) {
		double tick = o->idle_timeout / ECHO_IDLE_TICKS;
		struct timeval tv;

		tv.tv_sec = (time_t)tick;
		tv.tv_usec = (suseconds_t)((tick - (double)tv.tv_sec) * 1e6);
		if (tv.tv_sec == 0 && tv.tv_usec == 0)
			tv.tv_usec = 1;
		/* A common timeout: adding one per connection is O(1). */
		loop->idle_tv = event_base_init_common_timeout(loop->base, &tv);
	}
	if (o->tls) {
		struct timeval tv;

		tv.tv_sec = (time_t)o->tls_handshake;
		tv.tv_usec =
		        (suseconds_t)((o->tls_handshake - (double)tv.tv_sec) *
		                      1e6);
		loop->hs_tv = event_base_init_common_timeout(loop->base, &tv);
	}
	if (i == 0)
		return 0;
	if (pthread_mutex_init(&loop->lock, NULL) != 0)
		return -1;
	loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->efd < 0)
		return -1;
	loop->inbox_ev = event_new(loop->base, loop->efd, EV_READ | EV_PERSIST,
	                           loop_inboxcb, loop);
	if (loop->inbox_ev == NULL || event_add(loop->inbox_ev, NULL) < 0)
		return -1;
	return 0;
}

/*
 * Start the workers with every signal blocked, so that signals reach the
 * main thread's loop only (libevent's evsignal, pthread_sigmask(3)).
 */
static int server_start_workers(struct echo_server *srv)
{
	sigset_t all, old;
	char name[32]; /* "echo-loop-255" at most: within the 15 bytes */
	size_t i;
	int err = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 1; i < srv->nloops && err == 0; i++) {
		err = pthread_create(&srv->loops[i].thread, NULL, loop_thread,
		                     &srv->loops[i]);
		if (err != 0)
			break;
		srv->loops[i].started = 1;
		/* What top -H and /proc/PID/task/TID/comm show (15 bytes at
		 * most), set before the first "listening on". */
		snprintf(name, sizeof name, "echo-loop-%zu", i);
		pthread_setname_np(srv->loops[i].thread, name);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		log_error("cannot start a thread: %s", strerror(err));
		return -1;
	}
	loop_pin(&srv->loops[0]);
	return 0;
}

/* --metrics: a scrape arrived. */
static void server_scrapecb(void *arg)
{
	server_gather(arg, GATHER_SCRAPE);
}

/* /healthz: serving until a drain starts. */
static int server_healthcb(void *arg)
{
	return !((struct echo_server *)arg)->draining;
}

/* The service manager's STATUS= line is due. */
static void server_tickcb(void *arg)
{
	server_gather(arg, GATHER_STATUS);
}

/*
 * Before a WATCHDOG=1: has every worker's loop turned since the last ping?
 * A worker that has ended (drained) has nothing left to turn. Each beats
 * has one writer, its worker; a relaxed load sees some recent count, and
 * one that moved shows the loop ran its timer.
 */
static int server_alivecb(void *arg)
{
	struct echo_server *srv = arg;
	struct echo_loop *l;
	size_t i;
	int ended;

	for (i = 1; i < srv->nloops; i++) {
		l = &srv->loops[i];
		pthread_mutex_lock(&l->lock);
		ended = l->ended;
		pthread_mutex_unlock(&l->lock);
		if (!ended && atomic_load_explicit(&l->beats,
		                                   memory_order_relaxed) ==
		                      l->beats_seen)
			return 0;
	}
	for (i = 1; i < srv->nloops; i++)
		srv->loops[i].beats_seen = atomic_load_explicit(
		        &srv->loops[i].beats, memory_order_relaxed);
	return 1;
}

/* A worker's loop has turned: what server_alivecb looks for. */
static void loop_beatcb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_loop *loop = arg;

	(void)fd;
	(void)what;
	atomic_fetch_add_explicit(&loop->beats, 1, memory_order_relaxed);
}

/*
 * --metrics and the service manager, on the main loop; with the watchdog,
 * a heartbeat on each worker's loop every quarter of its timeout, so that
 * about two fall between pings (sent every half). Called before the
 * workers start, while their bases are still this thread's.
 */
static int server_report_init(struct echo_server *srv)
{
	const struct echo_opts *o = srv->opts;
	struct echo_loop *l;
	struct timeval tv;
	uint64_t usec;
	size_t i;

	if (o->metrics_on &&
	    (srv->metrics = metrics_new(srv->base, &o->metrics, o->admit,
	                                server_scrapecb, server_healthcb,
	                                srv)) == NULL)
		return -1;
	if (notify_new(&srv->notify, srv->base, server_tickcb,
	               srv->nloops > 1 ? server_alivecb : NULL, srv) < 0)
		return -1;
	if (notify_watchdog_usec(srv->notify) == 0)
		return 0;
	usec = notify_watchdog_usec(srv->notify) / 4;
	usec = usec > 0 ? usec : 1;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	for (i = 1; i < srv->nloops; i++) {
		l = &srv->loops[i];
		atomic_init(&l->beats, 0);
		l->beat_ev = event_new(l->base, -1, EV_PERSIST, loop_beatcb, l);
		if (l->beat_ev == NULL || event_add(l->beat_ev, &tv) < 0) {
			log_error("cannot set up the watchdog: out of memory");
			return -1;
		}
	}
	return 0;
}

static int server_init(struct echo_server *srv, const struct echo_opts *o)
{
	int signals[NSIGNALS] = {SIGINT, SIGTERM, SIGUSR1};
	size_t i;

	memcpy(signals + 3, echo_ignored_signals, sizeof echo_ignored_signals);
	memset(srv, 0, sizeof *srv);
	srv->opts = o;
	srv->efd = -1;
	srv->admit = admit_active(o->admit) ? o->admit : NULL;
	atomic_init(&srv->open, 0);
	if (sched_getaffinity(0, sizeof echo_allowed, &echo_allowed) < 0 ||
	    CPU_COUNT(&echo_allowed) == 0) {
		CPU_ZERO(&echo_allowed);
		CPU_SET(0, &echo_allowed);
	}
	/* Loaded once, before any thread or socket: a bad pair stops here. */
	if (o->tls && (srv->tls = tls_server_new(o->tls_cert, o->tls_key,
	                                         o->tls_verify_client)) == NULL)
		return -1;
	srv->base = event_base_new();
	srv->loops = calloc(o->threads, sizeof *srv->loops);
	if (srv->base == NULL || srv->loops == NULL) {
		log_error("cannot create the event base");
		return -1;
	}
	srv->nloops = o->threads;
	for (i = 0; i < srv->nloops; i++) {
		if (loop_init(srv, i) < 0) {
			log_error("cannot set up event loop %zu: %s", i,
			          strerror(errno));
			return -1;
		}
	}
	for (i = 0; i < NSIGNALS; i++) {
		srv->sigs[i] = evsignal_new(srv->base, signals[i],
		                            server_signalcb, srv);
		if (srv->sigs[i] == NULL || evsignal_add(srv->sigs[i], NULL))
			return -1;
	}
	srv->resume_ev = evtimer_new(srv->base, server_resumecb, srv);
	srv->drain_ev = evtimer_new(srv->base, server_drain_timeoutcb, srv);
	if (srv->resume_ev == NULL || srv->drain_ev == NULL)
		return -1;
	if (srv->nloops > 1) {
		srv->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (srv->efd < 0)
			return -1;
		srv->reply_ev = event_new(srv->base, srv->efd,
		                          EV_READ | EV_PERSIST, server_replycb,
		                          srv);
		if (srv->reply_ev == NULL || event_add(srv->reply_ev, NULL) < 0)
			return -1;
	}
	return server_report_init(srv);
}

/* Stop and join a worker, then free what it served and its loop. */
static void loop_free(struct echo_loop *loop)
{
	struct handoff *h, *next;
	struct conn *c;

	if (loop->started) {
		loop_ask(loop, WANT_STOP);
		pthread_join(loop->thread, NULL);
	}
	/* Joined: this thread may touch the loop now. */
	loop->draining = 0;
	while ((c = TAILQ_FIRST(&loop->conns)) != NULL)
		conn_free(c, ECHO_END_EXIT, NULL);
	for (h = loop->inbox; h != NULL; h = next) {
		next = h->next;
		evutil_closesocket(h->fd);
		loop_count_out(loop, &h->ticket);
		free(h);
	}
	free(loop->sink);
	if (loop->beat_ev != NULL)
		event_free(loop->beat_ev);
	if (loop->inbox_ev != NULL)
		event_free(loop->inbox_ev);
	if (loop->efd >= 0)
		close(loop->efd);
	if (loop->base != NULL)
		event_base_free(loop->base);
	pthread_mutex_destroy(&loop->lock);
}

/*
 * The final statistics line, once every loop has stopped and every
 * connection is closed: the counts SIGUSR1 would show now.
 */
static void server_final_stats(struct echo_server *srv)
{
	struct echo_stats s;
	size_t i;

	memset(&s, 0, sizeof s);
	s.open = atomic_load_explicit(&srv->open, memory_order_relaxed);
	s.accepted = srv->accepted;
	s.refused = srv->refused;
	for (i = 0; i < srv->nloops; i++)
		loop_stats(&srv->loops[i], &s);
	udp_echo_stats(srv->udp, &s);
	echo_admit_stats(srv->opts, &s);
	echo_stats_log(&s, 1);
}

/* served: the daemon served (its loop ran): log the final statistics. */
static void server_free(struct echo_server *srv, int served)
{
	struct conn *c;
	size_t i;

	for (i = 1; i < srv->nloops; i++)
		loop_free(&srv->loops[i]);
	if (srv->loops != NULL) {
		srv->loops[0].draining = 0;
		while ((c = TAILQ_FIRST(&srv->loops[0].conns)) != NULL)
			conn_free(c, ECHO_END_EXIT, NULL);
		free(srv->loops[0].sink);
	}
	if (served)
		server_final_stats(srv);
	for (i = 0; i < srv->nlev; i++)
		evconnlistener_free(srv->lev[i]);
	udp_echo_free(srv->udp);
	metrics_free(srv->metrics); /* open until now, through the drain */
	notify_free(srv->notify);
	for (i = 0; i < NSIGNALS; i++)
		if (srv->sigs[i] != NULL)
			event_free(srv->sigs[i]);
	if (srv->resume_ev != NULL)
		event_free(srv->resume_ev);
	if (srv->drain_ev != NULL)
		event_free(srv->drain_ev);
	if (srv->reply_ev != NULL)
		event_free(srv->reply_ev);
	if (srv->efd >= 0)
		close(srv->efd);
	free(srv->loops);
	if (srv->base != NULL)
		event_base_free(srv->base);
	tls_server_free(srv->tls);
}

int echo_event_run(const struct echo_opts *o)
{
	struct echo_server srv;
	int status = 1, served = 0;

	echo_signals_ignore();
	/* Every loop runs before the first "listening on" and READY=1. */
	if (server_init(&srv, o) == 0 && server_start_workers(&srv) == 0 &&
	    echo_sockets_serve(o, server_serve, &srv) == 0) {
		served = 1;
		if (event_base_dispatch(srv.base) == 0)
			status = 0;
		else
			log_error("event loop failed");
	}
	server_free(&srv, served);
	return status;
}
