/*
 * echo_event.c - the echo daemon in one process: one event_base, an
 * evconnlistener per listening socket, one bufferevent per connection.
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
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>

#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/sock.h"
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

/* --idle-timeout's tick, and what moved by the last one. */
struct conn_idle {
	struct event ev;
	struct echo_progress progress;
	unsigned ticks; /* ticks in a row with nothing moved */
};

struct conn {
	TAILQ_ENTRY(conn) entry;
	struct echo_server *srv;
	struct bufferevent *bev;
	struct event rev;       /* readable socket; discards input in linger */
	struct conn_idle *idle; /* NULL without --idle-timeout */
	uint64_t in;            /* bytes read from the client */
	uint64_t dropped;       /* echo given up when nothing moved */
	uint64_t linger_end;    /* CLOCK_MONOTONIC ms: lingering ends */
	const char *why;        /* why it is closing */
	uint32_t rsize;         /* bytes to ask for: grows when reads fill it */
	unsigned reading : 1;   /* rev is added */
	unsigned closing : 1;   /* no more reads: close once output drains */
	unsigned eof : 1;       /* the client's FIN was read */
	unsigned lingering : 1; /* our FIN sent, discarding input */
	char *name;             /* peer address, kept only with -v */
};

struct echo_server {
	const struct echo_opts *opts;
	struct event_base *base;
	struct evconnlistener *lev[ECHO_MAX_SOCKETS];
	size_t nlev;
	struct event *sigs[NSIGNALS];
	struct event *resume_ev; /* re-enables accepting: burst, EMFILE */
	struct event *drain_ev;  /* ends a SIGTERM drain */
	const struct timeval *idle_tv; /* one tick of --idle-timeout */
	TAILQ_HEAD(, conn) conns;
	struct echo_stats closed; /* bytes of closed connections, counters */
	unsigned burst;           /* accepts since the loop last had a turn */
	struct echo_pause pause;
	struct echo_loglimit refusals;
	struct echo_loglimit accept_errors;
	int draining;
	struct udp_echo *udp; /* NULL unless UDP is served */
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

static void conn_idle_stop(struct conn *c)
{
	if (c->idle == NULL)
		return;
	event_del(&c->idle->ev);
	free(c->idle);
	c->idle = NULL;
}

/* The one place a connection is freed. */
static void conn_free(struct conn *c, const char *why)
{
	struct echo_server *srv = c->srv;
	uint64_t out = conn_out(c);

	if (c->name != NULL) {
		log_verbose("%s closed (%s): %llu bytes in, %llu out", c->name,
		            why, (unsigned long long)c->in,
		            (unsigned long long)out);
		free(c->name);
	}
	srv->closed.bytes_in += c->in;
	srv->closed.bytes_out += out;
	srv->closed.open--;
	TAILQ_REMOVE(&srv->conns, c, entry);
	event_del(&c->rev);
	conn_idle_stop(c);
	bufferevent_free(c->bev); /* closes the socket */
	free(c);
	if (srv->draining && TAILQ_EMPTY(&srv->conns))
		event_base_loopexit(srv->base, NULL);
}

static void conn_read_enable(struct conn *c, int on)
{
	if (on && !c->reading)
		event_add(&c->rev, NULL);
	else if (!on && c->reading)
		event_del(&c->rev);
	c->reading = on ? 1 : 0;
}

/* Lingering: discard input until the client's FIN, a pause or the end. */
static void conn_lingercb(evutil_socket_t fd, short what, void *arg)
{
	static char sink[READ_MAX];
	struct conn *c = arg;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		conn_free(c, c->why);
		return;
	}
	n = read(fd, sink, sizeof sink);
	if (n > 0 && now_ms() < c->linger_end)
		return;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	conn_free(c, c->why);
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

	if (c->eof || !echo_linger_needed(fd) || shutdown(fd, SHUT_WR) < 0) {
		conn_free(c, c->why);
		return;
	}
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	conn_idle_stop(c);
	c->lingering = 1;
	c->linger_end = now_ms() + ECHO_LINGER_MAX_MS;
	event_del(&c->rev);
	event_assign(&c->rev, c->srv->base, fd, EV_READ | EV_PERSIST,
	             conn_lingercb, c);
	event_add(&c->rev, &pause);
	c->reading = 1;
}

/* Stop reading; close once the output drains. */
static void conn_finish(struct conn *c, const char *why)
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
		c->why = "idle";
		conn_close(c);
		return;
	}
	conn_finish(c, "idle");
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
	if (evbuffer_get_length(out) >= c->srv->opts->max_pending)
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
			conn_free(c, strerror(errno));
		return;
	}
	if (n == 0) {
		c->eof = 1;
		conn_finish(c, "end of input");
		return;
	}
	if (errno == EAGAIN || errno == EINTR)
		return;
	conn_free(c, strerror(errno));
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
	conn_read_enable(c, 1);
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	(void)what;
	conn_free(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static struct conn *conn_new(struct echo_server *srv, evutil_socket_t fd,
                             const struct sockaddr *sa, int salen)
{
	struct conn *c;
	char name[ADDR_STRLEN];

	c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->srv = srv;
	c->rsize = READ_MIN;
	if (srv->idle_tv != NULL) {
		c->idle = calloc(1, sizeof *c->idle);
		if (c->idle == NULL) {
			free(c);
			return NULL;
		}
	}
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		free(c->idle);
		free(c);
		return NULL;
	}
	if (log_get_level() >= LOG_VERBOSE) {
		c->name = strdup(
		        addr_format(sa, (socklen_t)salen, name, sizeof name));
		log_verbose("%s connected", c->name != NULL ? c->name : "?");
	}
	/*
	 * A socket bufferevent freezes the end of its input buffer so that only
	 * its own read callback adds to it; this file reads for it instead.
	 */
	evbuffer_unfreeze(bufferevent_get_input(c->bev), 0);
	event_assign(&c->rev, srv->base, fd, EV_READ | EV_PERSIST, conn_readcb,
	             c);
	bufferevent_setcb(c->bev, NULL, conn_writecb, conn_eventcb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, srv->opts->max_pending / 2,
	                         0);
	bufferevent_set_max_single_write(c->bev, WRITE_CHUNK);
	if (c->idle != NULL) {
		event_assign(&c->idle->ev, srv->base, -1, EV_PERSIST,
		             conn_idlecb, c);
		event_add(&c->idle->ev, srv->idle_tv);
	}
	TAILQ_INSERT_TAIL(&srv->conns, c, entry);
	conn_read_enable(c, 1);
	return c;
}

static void server_listen_enable(struct echo_server *srv, int on)
{
	for (size_t i = 0; i < srv->nlev; i++) {
		if (on)
			evconnlistener_enable(srv->lev[i]);
		else
			evconnlistener_disable(srv->lev[i]);
	}
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

static void server_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct echo_server *srv = arg;
	char peer[ADDR_STRLEN];

	(void)lev;
	echo_pause_over(&srv->pause);
	server_accept_yield(srv);
	if (srv->opts->max_conns != 0 &&
	    srv->closed.open >= srv->opts->max_conns) {
		srv->closed.refused++;
		if (log_get_level() >= LOG_VERBOSE)
			echo_refused_log(&srv->refusals,
			                 addr_format(sa, (socklen_t)salen, peer,
			                             sizeof peer),
			                 srv->closed.open, srv->opts->max_conns);
		evutil_closesocket(fd);
		return;
	}
	if (echo_conn_setup(srv->opts, fd) < 0)
		log_verbose("cannot set socket options: %s", strerror(errno));
	if (conn_new(srv, fd, sa, salen) == NULL) {
		log_error("cannot set up a connection: out of memory");
		evutil_closesocket(fd);
		return;
	}
	srv->closed.open++;
	srv->closed.accepted++;
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
			log_error("accept: %s (%llu more not logged)",
			          strerror(err), (unsigned long long)held);
		return;
	}
	echo_pause_note(&srv->pause, "accept", err);
	server_listen_enable(srv, 0);
	evtimer_add(srv->resume_ev, &tv);
}

static void server_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_server *srv = arg;

	(void)fd;
	(void)what;
	srv->burst = 0;
	server_listen_enable(srv, 1);
}

static void server_stats(struct echo_server *srv)
{
	struct echo_stats s = srv->closed;
	struct conn *c;

	TAILQ_FOREACH(c, &srv->conns, entry)
	{
		s.bytes_in += c->in;
		s.bytes_out += conn_out(c);
	}
	udp_echo_stats(srv->udp, &s);
	echo_stats_log(&s);
}

static void server_drain_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
	struct echo_server *srv = arg;
	struct conn *c;

	(void)fd;
	(void)what;
	while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
		conn_free(c, "drain timeout");
	event_base_loopexit(srv->base, NULL);
}

/* Stop accepting, give every connection drain-timeout to get its echo. */
static void server_drain(struct echo_server *srv)
{
	struct timeval tv;
	struct conn *c, *next;

	if (srv->draining)
		return;
	srv->draining = 1;
	for (size_t i = 0; i < srv->nlev; i++)
		evconnlistener_free(srv->lev[i]); /* frees the port at once */
	srv->nlev = 0;
	udp_echo_stop(srv->udp);
	evtimer_del(srv->resume_ev);
	log_info("shutting down: %llu connections to drain",
	         (unsigned long long)srv->closed.open);
	for (c = TAILQ_FIRST(&srv->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		conn_finish(c, "shutdown");
	}
	if (TAILQ_EMPTY(&srv->conns)) {
		event_base_loopexit(srv->base, NULL);
		return;
	}
	tv.tv_sec = (time_t)srv->opts->drain_timeout;
	tv.tv_usec =
	        (suseconds_t)((srv->opts->drain_timeout - tv.tv_sec) * 1e6);
	evtimer_add(srv->drain_ev, &tv);
}

static void server_signalcb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	if (sig == SIGUSR1)
		server_stats(arg);
	else if (sig == SIGINT || sig == SIGTERM)
		server_drain(arg);
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
		srv->lev[srv->nlev++] = lev;
	}
	return 0;
}

static int server_init(struct echo_server *srv, const struct echo_opts *o)
{
	int signals[NSIGNALS] = {SIGINT, SIGTERM, SIGUSR1};

	memcpy(signals + 3, echo_ignored_signals, sizeof echo_ignored_signals);
	memset(srv, 0, sizeof *srv);
	srv->opts = o;
	TAILQ_INIT(&srv->conns);
	srv->base = event_base_new();
	if (srv->base == NULL) {
		log_error("cannot create the event base");
		return -1;
	}
	for (size_t i = 0; i < NSIGNALS; i++) {
		srv->sigs[i] = evsignal_new(srv->base, signals[i],
		                            server_signalcb, srv);
		if (srv->sigs[i] == NULL || evsignal_add(srv->sigs[i], NULL))
			return -1;
	}
	srv->resume_ev = evtimer_new(srv->base, server_resumecb, srv);
	srv->drain_ev = evtimer_new(srv->base, server_drain_timeoutcb, srv);
	if (srv->resume_ev == NULL || srv->drain_ev == NULL)
		return -1;
	if (o->idle_timeout > 0) {
		double tick = o->idle_timeout / ECHO_IDLE_TICKS;
		struct timeval tv;

		tv.tv_sec = (time_t)tick;
		tv.tv_usec = (suseconds_t)((tick - (double)tv.tv_sec) * 1e6);
		if (tv.tv_sec == 0 && tv.tv_usec == 0)
			tv.tv_usec = 1;
		/* A common timeout: adding one per connection is O(1). */
		srv->idle_tv = event_base_init_common_timeout(srv->base, &tv);
	}
	return 0;
}

static void server_free(struct echo_server *srv)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
		conn_free(c, "exit");
	for (size_t i = 0; i < srv->nlev; i++)
		evconnlistener_free(srv->lev[i]);
	udp_echo_free(srv->udp);
	for (size_t i = 0; i < NSIGNALS; i++)
		if (srv->sigs[i] != NULL)
			event_free(srv->sigs[i]);
	if (srv->resume_ev != NULL)
		event_free(srv->resume_ev);
	if (srv->drain_ev != NULL)
		event_free(srv->drain_ev);
	if (srv->base != NULL)
		event_base_free(srv->base);
}

int echo_event_run(const struct echo_opts *o)
{
	struct echo_server srv;
	int status = 1;

	echo_signals_ignore();
	if (server_init(&srv, o) == 0 &&
	    echo_sockets_serve(o, server_serve, &srv) == 0) {
		if (event_base_dispatch(srv.base) == 0)
			status = 0;
		else
			log_error("event loop failed");
	}
	server_free(&srv);
	return status;
}
