/*
 * chat_event.c - the event design: one process, one event_base. The socket
 * is a bufferevent; stdin is a second event source feeding its output buffer;
 * what the peer sends waits in an evbuffer until stdout takes it.
 *
 * Backpressure both ways: stdin is not read while the socket's output holds
 * CHAT_HIGH_WATER bytes, the socket is not read while stdout's does; each
 * resumes at CHAT_LOW_WATER. epoll refuses regular files, /dev/null and some
 * other devices (EPERM); such a stdin is read in chunks whenever the socket's
 * output drains to its low-water mark, and such a stdout is written directly
 * (it never blocks for long).
 *
 * stdin stays blocking: it is read once each time epoll says it is readable,
 * never in a loop, so no read waits. Its open file description is often the
 * terminal the shell shares, where O_NONBLOCK would outlive us. stdout must
 * not block the loop, so it is made non-blocking (chat_stdio_set_blocking:
 * undone while stopped and at exit).
 *
 * The peer's FIN is a half-close: what it sent is printed, and what stdin
 * already gave is still sent. At the end chat_deliver checks that the peer's
 * TCP acknowledged every byte; a reset is reported with what was lost.
 *
 * TLS: the handshake is done before the loop (chat_tls_handshake), so the
 * socket's bufferevent is an OpenSSL one made in BUFFEREVENT_SSL_OPEN, and
 * everything above holds unchanged, with records in place of bytes on the
 * wire. Half-close is close_notify: once stdin's last byte went through
 * SSL_write, SSL_shutdown sends it (once; libevent 2.1 has no call for
 * it), then a FIN, and the loop reads on until the peer's close_notify,
 * which libevent reports as BEV_EVENT_EOF. allow_dirty_shutdown stays off,
 * so a FIN without close_notify comes as BEV_EVENT_ERROR with OpenSSL's
 * "unexpected eof while reading": reported as a truncation. SIGINT and
 * SIGTERM send close_notify too, at teardown (chat_tls_quit). At the end
 * chat_deliver_tls checks that the peer's TCP acknowledged every record.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "forkloop/chat.h"

struct chat_ev {
	const struct chat_opts *o;
	struct event_base *base;
	int fd;
	SSL *ssl; /* TLS, or NULL; the bufferevent owns it once made */
	struct bufferevent *peer;
	struct event *notify_ev; /* TLS: close_notify waits for room */
	struct event *in_ev;     /* stdin readable; NULL if epoll refuses it */
	struct event *out_ev;    /* stdout writable; NULL if epoll refuses it */
	struct event *sigint_ev;
	struct event *sigterm_ev;
	struct evbuffer *out; /* from the peer, not yet on stdout */
	uint64_t in_bytes;    /* read from stdin for the peer */
	int in_paused;
	int in_eof;
	int fin_sent;
	int peer_paused;
	int peer_eof;
	int reset; /* the peer reset the connection (ECONNRESET, EPIPE) */
	uint64_t notify_at; /* TLS: chat_tls_notify_mark after the peer's */
	int status;         /* -1 while the session runs */
};

/*
 * Can epoll watch fd? Asked of epoll itself, since the answer depends on the
 * file type and driver, not only on S_ISREG.
 */
static int chat_pollable(int fd, unsigned events)
{
	struct epoll_event ev;
	struct stat st;
	int ep, ok;

	if (fstat(fd, &st) < 0 || S_ISREG(st.st_mode))
		return 0;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return 0;
	memset(&ev, 0, sizeof ev);
	ev.events = events;
	ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
	close(ep);
	return ok;
}

static void chat_ev_finish(struct chat_ev *c, int status)
{
	if (c->status >= 0)
		return;
	c->status = status;
	event_base_loopbreak(c->base);
}

/*
 * An event that could not be added (epoll_ctl(2): ENOMEM, ENOSPC) would
 * never fire, and the session would wait for good: end it.
 */
static void chat_ev_unwatched(struct chat_ev *c, const char *what)
{
	log_error("cannot watch %s: %s", what, strerror(errno));
	chat_ev_finish(c, 1);
}

/*
 * Done once the peer has finished sending, stdout has everything, and our
 * own FIN has gone out after all we read (or the peer reset).
 */
static void chat_ev_check_done(struct chat_ev *c)
{
	if (!c->peer_eof || evbuffer_get_length(c->out) > 0)
		return;
	if (!c->fin_sent && !c->reset)
		return;
	chat_ev_finish(c, 0);
}

/*
 * TLS: send close_notify (SSL_shutdown(3), not waiting for the peer's).
 * Returns 1 once sent, 0 while the socket has no room for it (notify_ev
 * retries), -1 if the peer is gone or on an error.
 */
static int chat_ev_notify(struct chat_ev *c)
{
	char why[256];
	int r;

	if (c->peer_eof && c->notify_at == 0)
		c->notify_at = chat_tls_notify_mark(c->fd);
	ERR_clear_error();
	errno = 0;
	r = SSL_shutdown(c->ssl);
	if (r >= 0)
		return 1;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
	case SSL_ERROR_WANT_READ:
		ERR_clear_error();
		if (event_add(c->notify_ev, NULL) < 0) {
			chat_ev_unwatched(c, "the connection");
			return -1;
		}
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == EPIPE || errno == ECONNRESET) {
			ERR_clear_error();
			c->reset = 1;
			return -1;
		}
		break;
	default:
		break;
	}
	log_error("cannot send close_notify: %s",
	          tls_strerror(0, why, sizeof why));
	chat_ev_finish(c, 1);
	return -1;
}

static void chat_ev_send_fin(struct chat_ev *c)
{
	int r;

	if (!c->in_eof || c->fin_sent ||
	    evbuffer_get_length(bufferevent_get_output(c->peer)) > 0)
		return;
	if (c->ssl != NULL) {
		r = chat_ev_notify(c);
		if (r == 0 || c->status >= 0)
			return;
		if (r < 0) { /* a reset: chat_deliver_tls reports it */
			c->fin_sent = 1;
			chat_ev_check_done(c);
			return;
		}
	}
	if (shutdown(c->fd, SHUT_WR) < 0) {
		/* ENOTCONN: a reset came first; chat_deliver reports it. */
		if (errno != ENOTCONN) {
			log_error("cannot shut down the connection: %s",
			          strerror(errno));
			chat_ev_finish(c, 1);
			return;
		}
		c->reset = 1;
	}
	c->fin_sent = 1;
	log_verbose(c->ssl != NULL
	                    ? "end of standard input; sent close_notify and FIN"
	                    : "end of standard input; sent FIN");
	chat_ev_check_done(c);
}

static void chat_ev_notifycb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	chat_ev_send_fin(arg);
}

static void chat_ev_in_eof(struct chat_ev *c)
{
	c->in_eof = 1;
	if (c->in_ev != NULL)
		event_del(c->in_ev);
	/* Now the write callback fires only once the output is empty. */
	bufferevent_setwatermark(c->peer, EV_WRITE, 0, 0);
	chat_ev_send_fin(c);
}

/* One read(2) of stdin into the socket's output: 1, 0 at EOF, -1. */
static int chat_ev_in_read(struct chat_ev *c)
{
	struct evbuffer *dst = bufferevent_get_output(c->peer);
	struct evbuffer_iovec v;
	ssize_t n;

	if (evbuffer_reserve_space(dst, CHAT_CHUNK, &v, 1) < 1) {
		log_error("out of memory");
		chat_ev_finish(c, 1);
		return -1;
	}
	n = read(STDIN_FILENO, v.iov_base,
	         v.iov_len < CHAT_CHUNK ? v.iov_len : CHAT_CHUNK);
	if (n > 0) {
		v.iov_len = (size_t)n;
		evbuffer_commit_space(dst, &v, 1);
		c->in_bytes += (uint64_t)n;
		/*
		 * libevent watches the socket for the new output itself, but
		 * drops a failure to (bufferevent_sock.c): ask again, so the
		 * last bytes of stdin cannot wait for good.
		 */
		if (!c->reset && bufferevent_enable(c->peer, EV_WRITE) < 0) {
			chat_ev_unwatched(c, "the connection");
			return -1;
		}
		return 1;
	}
	if (n == 0) {
		chat_ev_in_eof(c);
		return 0;
	}
	if (errno == EAGAIN || errno == EINTR)
		return -1;
	log_error("cannot read standard input: %s", strerror(errno));
	chat_ev_finish(c, 1);
	return -1;
}

/* A stdin epoll refuses: read until the socket's output is full or EOF. */
static void chat_ev_in_fill(struct chat_ev *c)
{
	struct evbuffer *dst = bufferevent_get_output(c->peer);

	while (!c->in_eof && c->status < 0 &&
	       evbuffer_get_length(dst) < CHAT_HIGH_WATER) {
		if (chat_ev_in_read(c) < 0 && errno != EINTR)
			return;
	}
}

static void chat_ev_in_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct chat_ev *c = arg;

	(void)fd;
	(void)what;
	if (chat_ev_in_read(c) <= 0)
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->peer)) >=
	    CHAT_HIGH_WATER) {
		event_del(c->in_ev);
		c->in_paused = 1;
	}
}

static void chat_ev_out_flush(struct chat_ev *c)
{
	size_t left;

	while ((left = evbuffer_get_length(c->out)) > 0) {
		if (evbuffer_write(c->out, STDOUT_FILENO) >= 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && c->out_ev != NULL) {
			if (event_add(c->out_ev, NULL) < 0) {
				chat_ev_unwatched(c, "standard output");
				return;
			}
			break;
		}
		log_error("cannot write standard output: %s", strerror(errno));
		chat_ev_finish(c, 1);
		return;
	}
	if (left > CHAT_HIGH_WATER && !c->peer_paused) {
		bufferevent_disable(c->peer, EV_READ);
		c->peer_paused = 1;
	} else if (left <= CHAT_LOW_WATER && c->peer_paused) {
		c->peer_paused = 0;
		if (!c->peer_eof && bufferevent_enable(c->peer, EV_READ) < 0) {
			chat_ev_unwatched(c, "the connection");
			return;
		}
	}
	chat_ev_check_done(c);
}

static void chat_ev_out_writecb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	chat_ev_out_flush(arg);
}

static void chat_ev_peer_readcb(struct bufferevent *bev, void *arg)
{
	struct chat_ev *c = arg;

	evbuffer_add_buffer(c->out, bufferevent_get_input(bev));
	chat_ev_out_flush(c);
}

/* The socket's output drained to its low-water mark. */
static void chat_ev_peer_writecb(struct bufferevent *bev, void *arg)
{
	struct chat_ev *c = arg;

	(void)bev;
	if (c->in_eof) {
		chat_ev_send_fin(c);
		return;
	}
	if (c->in_ev == NULL) {
		chat_ev_in_fill(c);
	} else if (c->in_paused) {
		c->in_paused = 0;
		if (event_add(c->in_ev, NULL) < 0)
			chat_ev_unwatched(c, "standard input");
	}
}

/*
 * TLS: what BEV_EVENT_ERROR meant, from the OpenSSL errors libevent queued
 * (among which it puts SSL_get_error's own codes, of no library). Returns
 * 1 if the session goes on to its end (a reset, as for TCP), 0 if it ended.
 */
static int chat_ev_tls_error(struct chat_ev *c, int err)
{
	unsigned long e, first = 0;
	int truncated = 0;
	char why[256];

	while ((e = bufferevent_get_openssl_error(c->peer)) != 0) {
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			truncated = 1;
		else if (first == 0 && ERR_GET_LIB(e) != 0)
			first = e;
	}
	/* A reset: the peer may have said why first. */
	if (!truncated && first == 0 && (err == ECONNRESET || err == EPIPE)) {
		first = chat_tls_alert(c->ssl);
		if (first == 0)
			return 1;
	}
	if (truncated)
		log_error("%s", CHAT_TLS_TRUNCATED);
	else if (first != 0)
		log_error("connection to the peer: %s",
		          tls_strerror(first, why, sizeof why));
	else
		log_error("connection to the peer: %s",
		          err != 0 ? strerror(err) : "unknown TLS error");
	chat_ev_finish(c, 1);
	return 0;
}

static void chat_ev_peer_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct chat_ev *c = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	/* Ended (an error reported, a signal): one report, no more work. */
	if (c->status >= 0)
		return;
	if ((what & BEV_EVENT_ERROR) && c->ssl != NULL) {
		if (!chat_ev_tls_error(c, err))
			return;
		err = ECONNRESET;
	}
	if ((what & BEV_EVENT_EOF) && c->peer_eof) {
		/* After a fatal alert OpenSSL takes a failed SSL_write for
		 * the peer's close; enabling EV_WRITE again would retry it. */
		log_error("cannot send to the peer: the connection is shut "
		          "down");
		chat_ev_finish(c, 1);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		c->peer_eof = 1;
		log_info("peer finished sending");
		/* libevent stops writing at the peer's close_notify
		 * (conn_closed); ours may still be owed what stdin gave. */
		if (c->ssl != NULL &&
		    bufferevent_enable(c->peer, EV_WRITE) < 0) {
			chat_ev_unwatched(c, "the connection");
			return;
		}
		/*
		 * A connecting endpoint reads no more stdin: it sends what it
		 * has, then its FIN. A listening one goes on until stdin ends.
		 */
		if (!c->o->listen && !c->in_eof)
			chat_ev_in_eof(c);
	} else if ((what & BEV_EVENT_ERROR) &&
	           (err == ECONNRESET || err == EPIPE)) {
		/* chat_deliver reports it, with what was lost. */
		c->peer_eof = 1;
		c->reset = 1;
		bufferevent_disable(c->peer, EV_READ | EV_WRITE);
	} else if (what & BEV_EVENT_ERROR) {
		log_error("connection to the peer: %s", strerror(err));
		chat_ev_finish(c, 1);
		return;
	}
	chat_ev_check_done(c);
}

static void chat_ev_sigcb(evutil_socket_t sig, short what, void *arg)
{
	struct chat_ev *c = arg;

	(void)what;
	chat_sig_caught = (int)sig;
	chat_ev_finish(c, chat_sig_status());
}

/* The socket's bufferevent: an OpenSSL one, handshake done, over TLS. */
static int chat_ev_new_peer(struct chat_ev *c)
{
	if (c->ssl == NULL) {
		c->peer = bufferevent_socket_new(c->base, c->fd,
		                                 BEV_OPT_CLOSE_ON_FREE);
		return c->peer != NULL ? 0 : -1;
	}
	c->notify_ev = event_new(c->base, c->fd, EV_WRITE, chat_ev_notifycb, c);
	if (c->notify_ev == NULL)
		return -1;
	c->peer = bufferevent_openssl_socket_new(c->base, c->fd, c->ssl,
	                                         BUFFEREVENT_SSL_OPEN,
	                                         BEV_OPT_CLOSE_ON_FREE);
	return c->peer != NULL ? 0 : -1;
}

static int chat_ev_setup_peer(struct chat_ev *c)
{
	if (evutil_make_socket_nonblocking(c->fd) < 0 ||
	    chat_ev_new_peer(c) < 0)
		return -1;
	bufferevent_setcb(c->peer, chat_ev_peer_readcb, chat_ev_peer_writecb,
	                  chat_ev_peer_eventcb, c);
	/* libevent 2.1 reads 4 KiB per call unless told otherwise. */
	bufferevent_set_max_single_read(c->peer, CHAT_CHUNK);
	bufferevent_set_max_single_write(c->peer, CHAT_CHUNK);
	bufferevent_setwatermark(c->peer, EV_WRITE, CHAT_LOW_WATER, 0);
	return bufferevent_enable(c->peer, EV_READ | EV_WRITE);
}

static int chat_ev_setup_stdio(struct chat_ev *c)
{
	if (chat_pollable(STDOUT_FILENO, EPOLLOUT)) {
		if (chat_stdio_set_blocking(STDOUT_FILENO, 0) < 0)
			return -1;
		c->out_ev = event_new(c->base, STDOUT_FILENO, EV_WRITE,
		                      chat_ev_out_writecb, c);
		if (c->out_ev == NULL)
			return -1;
	}
	if (!chat_pollable(STDIN_FILENO, EPOLLIN))
		return 0;
	c->in_ev = event_new(c->base, STDIN_FILENO, EV_READ | EV_PERSIST,
	                     chat_ev_in_readcb, c);
	if (c->in_ev == NULL)
		return -1;
	return event_add(c->in_ev, NULL);
}

static int chat_ev_setup(struct chat_ev *c)
{
	c->base = event_base_new();
	c->out = evbuffer_new();
	if (c->base == NULL || c->out == NULL)
		return -1;
	if (chat_ev_setup_peer(c) < 0 || chat_ev_setup_stdio(c) < 0)
		return -1;
	c->sigint_ev = evsignal_new(c->base, SIGINT, chat_ev_sigcb, c);
	c->sigterm_ev = evsignal_new(c->base, SIGTERM, chat_ev_sigcb, c);
	if (c->sigint_ev == NULL || c->sigterm_ev == NULL ||
	    evsignal_add(c->sigint_ev, NULL) < 0 ||
	    evsignal_add(c->sigterm_ev, NULL) < 0)
		return -1;
	return 0;
}

/*
 * A SIGINT or SIGTERM that libevent caught after the loop stopped would be
 * lost with its signal events: block both, let the loop deliver anything it
 * already holds, free the events (our handler is back) and unblock, so a
 * pending signal reaches chat_sig_handler.
 */
static void chat_ev_free_signals(struct chat_ev *c)
{
	sigset_t set, old;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, &old);
	if (c->sigint_ev != NULL && c->sigterm_ev != NULL)
		event_base_loop(c->base, EVLOOP_NONBLOCK);
	if (c->sigint_ev != NULL)
		event_free(c->sigint_ev);
	if (c->sigterm_ev != NULL)
		event_free(c->sigterm_ev);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/*
 * The session is over: only the signal events may run again. Above all
 * the socket's bufferevent, whose callbacks would go on as if the session
 * did (an OpenSSL one can report a write it cannot do as EOF, again and
 * again).
 */
static void chat_ev_quiet(struct chat_ev *c)
{
	if (c->peer != NULL) {
		bufferevent_setcb(c->peer, NULL, NULL, NULL, NULL);
		bufferevent_disable(c->peer, EV_READ | EV_WRITE);
	}
	if (c->in_ev != NULL)
		event_del(c->in_ev);
	if (c->out_ev != NULL)
		event_del(c->out_ev);
	if (c->notify_ev != NULL)
		event_del(c->notify_ev);
}

static void chat_ev_teardown(struct chat_ev *c)
{
	uint64_t unsent;

	chat_ev_quiet(c);
	chat_ev_free_signals(c);
	if (c->in_ev != NULL)
		event_free(c->in_ev);
	if (c->out_ev != NULL)
		event_free(c->out_ev);
	if (c->notify_ev != NULL)
		event_free(c->notify_ev);
	/* A deliberate quit ends TLS cleanly, as TCP's FIN does. */
	if (chat_sig_caught)
		chat_tls_quit(c->ssl);
	/* Whatever happened, the peer sees a FIN. */
	shutdown(c->fd, SHUT_WR);
	/* Stdin's bytes still in the socket's output count as not delivered. */
	if (c->status == 0 && c->peer != NULL && !chat_sig_caught) {
		unsent = evbuffer_get_length(bufferevent_get_output(c->peer));
		c->status = c->ssl != NULL
		                    ? chat_deliver_tls(c->fd, unsent, c->reset,
		                                       c->notify_at)
		                    : chat_deliver(c->fd, c->in_bytes - unsent,
		                                   unsent, c->reset);
	}
	if (c->peer != NULL) {
		bufferevent_free(c->peer);
	} else {
		SSL_free(c->ssl);
		close(c->fd);
	}
	if (c->out != NULL)
		evbuffer_free(c->out);
	if (c->base != NULL)
		event_base_free(c->base);
}

int chat_event_session(const struct chat_opts *o, int fd, SSL *ssl)
{
	struct chat_ev c;

	memset(&c, 0, sizeof c);
	c.o = o;
	c.fd = fd;
	c.ssl = ssl;
	c.status = -1;
	if (chat_sig_caught) {
		chat_tls_quit(ssl);
		SSL_free(ssl);
		close(fd);
		return chat_sig_status();
	}
	if (chat_ev_setup(&c) < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		c.status = 1;
	} else {
		/* A signal caught by chat_sig_handler during the set-up. */
		if (chat_sig_caught)
			chat_ev_finish(&c, chat_sig_status());
		if (c.in_ev == NULL)
			chat_ev_in_fill(&c);
		if (c.status < 0)
			event_base_dispatch(c.base);
	}
	chat_ev_teardown(&c);
	if (chat_sig_caught)
		return chat_sig_status();
	return c.status < 0 ? 1 : c.status;
}
