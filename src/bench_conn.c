/*
 * bench_conn.c - one connection of a forkloop-bench worker (bench_engine.h):
 * its connect, its queue of messages due, its writes, its reads and the
 * check of every echoed byte, each echo's latency, --churn, its loss, and
 * --tls.
 *
 * Every connection's byte stream is the pattern table started at an offset
 * of its own, so each echoed byte is checked with memcmp and another
 * connection's bytes (or a stale message) do not pass.
 *
 * --tls keeps the same loop and the same events: OpenSSL reads and writes
 * the socket itself (SSL_set_fd), non-blocking, and SSL_read, SSL_write and
 * SSL_do_handshake are called until they want to read or write, which
 * means read(2) or write(2) said EAGAIN, so the edge-triggered events
 * still come. A connection is CONN_CONNECTING until its handshake is done
 * (--connect-timeout covers both), then OPEN; a write that wants a read
 * (or the reverse) is retried from the other event. Records are 16 KiB
 * at most, and SSL_MODE_ENABLE_PARTIAL_WRITE makes SSL_write return after
 * each one, so a send is counted as soon as its record is out.
 *
 * An echo's path, conn_readcb to conn_input, conn_got, conn_complete,
 * bench_count, conn_refill and conn_flush, stays in this file: nothing on
 * it is a call into another file.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench_engine.h"
#include "forkloop/log.h"
#include "forkloop/sock.h"
#include "forkloop/tls.h"

static void conn_dial(struct conn *c);
static void conn_tls_read(struct conn *c);

static void ts_push(struct conn *c, uint64_t due)
{
	struct stamp *s;

	if (c->tlen == c->tmask + 1) {
		uint32_t ncap = 2 * (c->tmask + 1), i;
		struct stamp *n = malloc(ncap * sizeof *n);

		if (n == NULL) {
			log_error("out of memory");
			abort();
		}
		for (i = 0; i < c->tlen; i++)
			n[i] = c->ts[(c->thead + i) & c->tmask];
		if (c->ts != c->ts_small)
			free(c->ts);
		c->ts = n;
		c->tmask = ncap - 1;
		c->thead = 0;
	}
	s = &c->ts[(c->thead + c->tlen) & c->tmask];
	s->due = due;
	s->sent = 0;
	c->tlen++;
}

/* The oldest queued message, which has been sent: its echo is complete. */
static struct stamp ts_pop(struct conn *c)
{
	struct stamp s = c->ts[c->thead];

	c->thead = (c->thead + 1) & c->tmask;
	c->tlen--;
	c->tsent--;
	return s;
}

/* Advance a pattern offset by n <= PAT_LEN bytes. */
static uint32_t pat_advance(uint32_t off, size_t n)
{
	off += (uint32_t)n;
	return off >= PAT_LEN ? off - PAT_LEN : off;
}

/*
 * Close c's socket, if it has one; c becomes IDLE. Its queued messages stay
 * queued: still due, to go out on the next connection of the slot.
 */
void conn_close(struct conn *c)
{
	if (c->state == CONN_CONNECTING)
		c->b->connecting--;
	if (c->state == CONN_CONNECTING || c->state == CONN_OPEN) {
		event_del(&c->rev);
		event_del(&c->wev);
		if (c->ssl != NULL) {
			/* close_notify, not waiting for the server's: the
			 * TCP close follows at once. Not after a TLS error,
			 * when SSL_shutdown must not be called. */
			if (c->state == CONN_OPEN && c->tls_ok) {
				ERR_clear_error();
				SSL_shutdown(c->ssl);
				ERR_clear_error();
			}
			SSL_free(c->ssl);
			c->ssl = NULL;
		}
		close(c->fd);
		c->fd = -1;
	}
	c->state = CONN_IDLE;
}

static void bench_error(struct bench *b, uint64_t *counter)
{
	(*counter)++;
	b->r->errors++;
}

/*
 * A connection lost for good, after the error was counted: close it, stop
 * waiting for what it had queued (it is reported as never answered), and
 * end the run once no connection is left to carry load.
 */
static void conn_dead(struct conn *c)
{
	struct bench *b = c->b;

	conn_close(c);
	c->state = CONN_DEAD;
	b->inflight -= c->tlen;
	b->dead++;
	if (b->dead == b->o->conns && b->started)
		bench_stop(b);
}

static void conn_fail(struct conn *c, uint64_t *counter)
{
	bench_error(c->b, counter);
	conn_dead(c);
}

/*
 * One of c's events could not be added (epoll_ctl(2): ENOMEM, ENOSPC): it
 * would never fire, and c would stall the run unseen. c is lost: as a
 * failed connect while it connects, as a reset once open.
 */
static void conn_unwatched(struct conn *c)
{
	if (c->state == CONN_CONNECTING)
		conn_connect_failed(c, errno);
	else
		conn_fail(c, &c->b->r->err.reset);
}

/*
 * A message falls due on c, whatever its state; it goes out once c is open
 * and writable. One due on a dead connection is never sent: -n does not
 * wait for it.
 */
void conn_queue(struct conn *c, uint64_t due)
{
	ts_push(c, due);
	c->queued += c->b->o->size;
	if (c->state != CONN_DEAD)
		c->b->inflight++;
}

/* Closed loop: keep the pipeline full, and send once c is up. */
void conn_refill(struct conn *c, uint64_t now)
{
	struct bench *b = c->b;

	while (c->tlen < b->o->pipeline && bench_may_issue(b))
		conn_queue(c, now);
	if (c->state == CONN_OPEN)
		conn_flush(c, now);
}

/* Stamp the send time of every queued message whose first byte went. */
static void conn_stamp(struct conn *c, uint64_t now)
{
	uint64_t size = c->b->o->size;

	while (c->tsent < c->tlen && (c->done + c->tsent) * size < c->sent) {
		c->ts[(c->thead + c->tsent) & c->tmask].sent = now;
		c->tsent++;
	}
}

/* The first TLS failure's reason, for the report. */
static void bench_tls_why(struct bench *b, const char *why)
{
	if (b->r->tls.why[0] == '\0')
		snprintf(b->r->tls.why, sizeof b->r->tls.why, "%s", why);
}

/*
 * Why an SSL call on c failed with SSL_get_error e, errno err just after
 * it; empties the thread's error queue.
 */
static const char *conn_tls_why(struct conn *c, int e, int err, char *buf,
                                size_t len)
{
	if (e == SSL_ERROR_SSL)
		return tls_handshake_error(c->ssl, 0, buf, len);
	if (ERR_peek_error() != 0)
		return tls_strerror(0, buf, len);
	if (e == SSL_ERROR_SYSCALL && err != 0)
		snprintf(buf, len, "%s", strerror(err));
	else if (e == SSL_ERROR_SYSCALL)
		snprintf(buf, len, "the server closed the connection without "
		                   "close_notify");
	else
		snprintf(buf, len, "TLS error %d", e);
	return buf;
}

/* SSL_read calls on a broken connection while looking for an alert. */
#define ALERT_READS 8

/*
 * A write (or read) failed with a reset or EPIPE before any echo came
 * back. A TLS 1.3 server that refuses the client's certificate sends an
 * alert after the client's Finished and closes; the client's first
 * SSL_write then meets the RST before anything read the alert, which
 * still waits in the socket's receive queue. Read what the server sent,
 * without blocking and a few records at most: an alert turns e into
 * SSL_ERROR_SSL, the reason on the error queue. Returns e, or the read's.
 */
static int conn_tls_alert(struct conn *c, int e, int *err)
{
	struct bench *b = c->b;
	int i, n, r;

	if (c->got_data || e != SSL_ERROR_SYSCALL || *err == 0)
		return e;
	for (i = 0; i < ALERT_READS; i++) {
		ERR_clear_error();
		errno = 0;
		n = SSL_read(c->ssl, b->rbuf, RBUF_LEN);
		if (n > 0)
			continue;
		r = SSL_get_error(c->ssl, n);
		if (r == SSL_ERROR_SSL) {
			*err = 0;
			return r;
		}
		break;
	}
	ERR_clear_error();
	return e;
}

/*
 * A TLS connection that broke: a stream cut without close_notify
 * (OpenSSL 3's SSL_R_UNEXPECTED_EOF_WHILE_READING, or a bare EOF) is a
 * truncation; an alert before any echo is the server refusing the
 * handshake (TLS 1.3 sends it after the client's Finished, as for a
 * client certificate it does not accept, and it may be queued behind a
 * reset: conn_tls_alert); the rest are resets.
 */
static void conn_tls_lost(struct conn *c, int e, int err)
{
	struct bench *b = c->b;
	unsigned long code;
	char why[BENCH_TLS_WHY_LEN];
	uint64_t *counter = &b->r->err.reset;
	int trunc;

	e = conn_tls_alert(c, e, &err);
	code = ERR_peek_error();
	trunc = (e == SSL_ERROR_SYSCALL && code == 0 && err == 0) ||
	        (e == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
	         ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
	c->tls_ok = 0;
	if (trunc) {
		ERR_clear_error();
		counter = &b->r->err.truncated;
		snprintf(why, sizeof why, "the server closed the connection "
		                          "without close_notify (truncated)");
	} else {
		conn_tls_why(c, e, err, why, sizeof why);
		if (e == SSL_ERROR_SSL && !c->got_data)
			counter = &b->r->err.handshake;
	}
	bench_tls_why(b, why);
	conn_fail(c, counter);
}

/* SSL_write what is due; records go out one by one. */
static void conn_tls_flush(struct conn *c, uint64_t now)
{
	struct bench *b = c->b;

	while (c->sent < c->queued) {
		uint64_t left = c->queued - c->sent;
		size_t n = left < PAT_LEN ? (size_t)left : PAT_LEN;
		int w, e, err;

		ERR_clear_error();
		errno = 0;
		w = SSL_write(c->ssl, b->pat + c->soff, (int)n);
		if (w <= 0) {
			err = errno;
			e = SSL_get_error(c->ssl, w);
			if (e == SSL_ERROR_WANT_WRITE) {
				c->wwr = 0;
				if (event_add(&c->wev, NULL) < 0)
					conn_unwatched(c);
			} else if (e == SSL_ERROR_WANT_READ) {
				c->wwr = 1;
			} else {
				conn_tls_lost(c, e, err);
			}
			return;
		}
		c->wwr = 0;
		c->sent += (uint64_t)w;
		c->soff = pat_advance(c->soff, (size_t)w);
		conn_stamp(c, now);
	}
}

void conn_flush(struct conn *c, uint64_t now)
{
	struct bench *b = c->b;

	if (c->ssl != NULL) {
		conn_tls_flush(c, now);
		return;
	}
	while (c->sent < c->queued) {
		uint64_t left = c->queued - c->sent;
		size_t n = left < PAT_LEN ? (size_t)left : PAT_LEN;
		ssize_t w = send(c->fd, b->pat + c->soff, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (event_add(&c->wev, NULL) < 0)
					conn_unwatched(c);
				return;
			}
			conn_fail(c, &b->r->err.reset);
			return;
		}
		c->sent += (uint64_t)w;
		c->soff = pat_advance(c->soff, (size_t)w);
		conn_stamp(c, now);
	}
}

static void conn_tls_handshake(struct conn *c);

/* --tls: the socket is writable for the handshake, a write, or a read. */
static void conn_tls_writecb(struct conn *c)
{
	uint32_t gen = c->gen;

	if (c->hs) {
		conn_tls_handshake(c);
		return;
	}
	conn_flush(c, now_ns());
	if (c->gen == gen && c->state == CONN_OPEN && c->rww)
		conn_tls_read(c);
}

static void conn_writecb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (c->ssl != NULL)
		conn_tls_writecb(c);
	else
		conn_flush(c, now_ns());
}

static void bench_count(struct bench *b, struct stamp s, uint64_t now)
{
	if (!b->measuring)
		return;
	b->r->messages++;
	b->r->bytes += b->o->size;
	if (s.sent == s.due) {
		hist_record(&b->r->latency, since(s.due, now));
	} else {
		hist_record(b->late_due, since(s.due, now));
		hist_record(b->late_sent, since(s.sent, now));
	}
	if (b->o->messages > 0 && b->r->messages >= b->o->messages)
		bench_stop(b);
}

/* After the one message of a --churn connection: the next connection. */
static void conn_churn(struct conn *c)
{
	struct bench *b = c->b;

	conn_close(c);
	if (!b->stopping && bench_may_issue(b))
		conn_open(c);
}

static void conn_complete(struct conn *c, uint64_t now)
{
	struct bench *b = c->b;
	uint64_t size = b->o->size;

	while (c->tlen > 0 && c->rcvd >= (c->done + 1) * size) {
		struct stamp s = ts_pop(c);

		c->done++;
		b->inflight--;
		bench_count(b, s, now);
	}
	if (c->state != CONN_OPEN)
		return;
	if (b->o->churn) {
		if (c->tlen == 0)
			conn_churn(c);
	} else if (b->o->rate == 0) {
		conn_refill(c, now);
	}
}

static int conn_check(struct conn *c, size_t n)
{
	struct bench *b = c->b;

	if (n > c->sent - c->rcvd)
		return -1;
	return memcmp(b->rbuf, b->pat + c->roff, n) == 0 ? 0 : -1;
}

/* n bytes of echo in rbuf: checked and counted; 0 if they were wrong. */
static int conn_got(struct conn *c, size_t n)
{
	struct bench *b = c->b;

	if (conn_check(c, n) < 0) {
		conn_fail(c, &b->r->err.mismatch);
		return 0;
	}
	c->rcvd += (uint64_t)n;
	c->roff = pat_advance(c->roff, n);
	b->t_progress = now_ns();
	conn_complete(c, b->t_progress);
	return 1;
}

/* One read's worth of echo: 0 once there is nothing more to read. */
static int conn_input(struct conn *c, ssize_t n)
{
	struct bench *b = c->b;

	if (n < 0) {
		if (errno == EINTR)
			return 1;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		conn_fail(c, &b->r->err.reset);
		return 0;
	}
	if (n == 0) {
		conn_fail(c, &b->r->err.closed);
		return 0;
	}
	return conn_got(c, (size_t)n);
}

/*
 * The first echoed byte on c: the server accepted its handshake (a TLS 1.3
 * server may refuse one after the client's Finished), so its version and
 * cipher are what the report shows. --tls-resume: the session to resume,
 * taken now, by when a TLS 1.3 server's tickets (sent after the
 * handshake) have been read too. Each connection's replaces the last, as
 * a client that keeps its newest ticket does.
 */
static void conn_tls_keep(struct conn *c)
{
	struct bench *b = c->b;
	SSL_SESSION *s;

	c->got_data = 1;
	if (b->r->tls.version == NULL) {
		b->r->tls.version = SSL_get_version(c->ssl);
		b->r->tls.cipher =
		        SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
	}
	if (!b->o->tls_resume)
		return;
	s = SSL_get1_session(c->ssl);
	if (s != NULL && SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(b->sess);
		b->sess = s;
	} else {
		SSL_SESSION_free(s);
	}
}

/*
 * SSL_read until it wants more from the socket: that drains OpenSSL's
 * buffer and the socket both, as the edge-triggered event needs. The slot
 * may be closed, or reused by --churn, after any read.
 */
static void conn_tls_read(struct conn *c)
{
	struct bench *b = c->b;
	uint32_t gen = c->gen;
	int n, e, err;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		n = SSL_read(c->ssl, b->rbuf, RBUF_LEN);
		if (n > 0) {
			c->rww = 0;
			if (!c->got_data)
				conn_tls_keep(c);
			if (!conn_got(c, (size_t)n) || c->gen != gen ||
			    c->state != CONN_OPEN)
				return;
			continue;
		}
		err = errno;
		e = SSL_get_error(c->ssl, n);
		switch (e) {
		case SSL_ERROR_WANT_READ:
			c->rww = 0;
			return;
		case SSL_ERROR_WANT_WRITE:
			c->rww = 1;
			if (event_add(&c->wev, NULL) < 0)
				conn_unwatched(c);
			return;
		case SSL_ERROR_ZERO_RETURN: /* close_notify: a short echo */
			conn_fail(c, &b->r->err.closed);
			return;
		default:
			conn_tls_lost(c, e, err);
			return;
		}
	}
}

/* --tls: the socket is readable for the handshake, an echo, or a write. */
static void conn_tls_readcb(struct conn *c)
{
	uint32_t gen = c->gen;

	if (c->hs) {
		conn_tls_handshake(c);
		return;
	}
	conn_tls_read(c);
	if (c->gen == gen && c->state == CONN_OPEN && c->wwr)
		conn_flush(c, now_ns());
}

/*
 * Edge-triggered: read until a short read says the socket is drained, which
 * spares the kernel polling every socket a second time after each event as
 * level-triggered epoll does. A short read does not rule out a FIN behind
 * the data, so once EPOLLRDHUP (EV_CLOSED) is reported, read to the end.
 * The slot may be closed, or reused by --churn, after any read.
 */
static void conn_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	ssize_t n;

	if (c->ssl != NULL) {
		conn_tls_readcb(c);
		return;
	}
	do {
		n = read(fd, c->b->rbuf, RBUF_LEN);
		if (!conn_input(c, n) || c->fd != fd || c->state != CONN_OPEN)
			return;
	} while (n < 0 || (size_t)n == RBUF_LEN || (what & EV_CLOSED));
}

/*
 * Until one connection has worked, a failure moves on to the target's next
 * address ("localhost" may be ::1, then 127.0.0.1); past the last, nothing
 * is listening and the run cannot start. Each worker walks the list for
 * itself: what another thread found is not its to read.
 */
static void conn_retry(struct conn *c, int err)
{
	struct bench *b = c->b;
	char target[ADDR_STRLEN];

	if (c->ai == b->cur) {
		if (b->cur->ai_next == NULL) {
			addr_format(b->cur->ai_addr,
			            (socklen_t)b->cur->ai_addrlen, target,
			            sizeof target);
			bench_fatal(b, "cannot connect to %s: %s", target,
			            strerror(err));
			return;
		}
		b->cur = b->cur->ai_next;
	}
	conn_close(c);
	conn_dial(c);
}

/* A connect that failed, or a socket that could not be made. */
void conn_connect_failed(struct conn *c, int err)
{
	struct bench *b = c->b;

	if (!b->ever_connected) {
		conn_retry(c, err);
		return;
	}
	bench_error(b, &b->r->err.connect);
	b->down++;
	conn_dead(c);
	bench_connected_all(b);
}

/* Up, and with --tls its handshake done: the load may use it. */
static void conn_up(struct conn *c)
{
	struct bench *b = c->b;
	uint64_t now = now_ns();

	event_del(&c->wev);
	event_assign(&c->wev, b->base, c->fd, EV_WRITE | EV_ET, conn_writecb,
	             c);
	if (event_add(&c->rev, NULL) < 0) {
		conn_unwatched(c);
		return;
	}
	b->connecting--;
	c->state = CONN_OPEN;
	if (!b->o->churn)
		b->up++;
	/* Whatever fell due while it connected goes now. */
	if (b->started && b->o->rate == 0 && !b->o->churn)
		conn_refill(c, now);
	else
		conn_flush(c, now);
	bench_connected_all(b);
}

/* A handshake that failed or timed out: the connection is lost. */
void conn_hs_failed(struct conn *c, const char *why)
{
	struct bench *b = c->b;

	c->tls_ok = 0;
	bench_tls_why(b, why);
	bench_error(b, &b->r->err.handshake);
	b->down++;
	conn_dead(c);
	bench_connected_all(b);
}

/* The handshake is done: its latency from connect(2), and the load. */
static void conn_tls_done(struct conn *c)
{
	struct bench_tls *t = &c->b->r->tls;
	uint32_t gen = c->gen;

	hist_record(&t->latency, since(c->t_connect, now_ns()));
	t->handshakes++;
	if (SSL_session_reused(c->ssl))
		t->resumed++;
	c->hs = 0;
	c->tls_ok = 1;
	conn_up(c);
	/* Anything OpenSSL read past the handshake, before the next edge. */
	if (c->gen == gen && c->state == CONN_OPEN)
		conn_tls_read(c);
}

static void conn_tls_handshake(struct conn *c)
{
	char why[BENCH_TLS_WHY_LEN];
	int r, e, err;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		conn_tls_done(c);
		return;
	}
	err = errno;
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return;
	if (e == SSL_ERROR_WANT_WRITE) {
		if (event_add(&c->wev, NULL) < 0)
			conn_unwatched(c);
		return;
	}
	if (e == SSL_ERROR_SYSCALL && err == 0 && ERR_peek_error() == 0)
		snprintf(why, sizeof why, "the server closed the connection "
		                          "during the handshake");
	else
		conn_tls_why(c, e, err, why, sizeof why);
	conn_hs_failed(c, why);
}

/* --tls: a client SSL on the connected socket, and the handshake. */
static void conn_tls_start(struct conn *c)
{
	struct bench *b = c->b;

	c->hs = 1;
	c->tls_ok = c->got_data = c->rww = c->wwr = 0;
	c->ssl = tls_client_ssl(b->tls, b->o->target.host);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		ERR_clear_error();
		conn_hs_failed(c, "cannot make a TLS connection: out of "
		                  "memory");
		return;
	}
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* A truncation is an error to report, not an end of stream. */
	SSL_clear_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (b->o->tls_resume && b->sess != NULL)
		SSL_set_session(c->ssl, b->sess);
	event_assign(&c->wev, b->base, c->fd, EV_WRITE | EV_ET, conn_writecb,
	             c);
	if (event_add(&c->rev, NULL) < 0) {
		conn_unwatched(c);
		return;
	}
	conn_tls_handshake(c);
}

/* connect(2) is done: connect_ms counts to here, TLS or not. */
static void conn_tcp_up(struct conn *c)
{
	struct bench *b = c->b;

	b->ever_connected = 1;
	b->r->connects++;
	b->connect_ns += now_ns() - c->t_connect;
	if (b->tls != NULL)
		conn_tls_start(c);
	else
		conn_up(c);
}

static void conn_connectcb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	int err = 0;
	socklen_t len = sizeof err;

	(void)what;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		conn_connect_failed(c, err);
		return;
	}
	conn_tcp_up(c);
}

/*
 * --source: bind to the connection's source address, port 0, before
 * connect(2). IP_BIND_ADDRESS_NO_PORT (ip(7)) leaves the port to connect,
 * which picks one unique for the 4-tuple, so every source has the whole
 * port range for every target address; a kernel without it (before 4.2)
 * still binds, each socket's port then taken for that source alone. An
 * address bind refuses ends the run: every connection from it would fail
 * alike.
 */
static int conn_bind(struct conn *c, int fd)
{
	struct bench *b = c->b;
	const struct bench_opts *o = b->o;
	uint64_t k = c->id % o->source_addrs;
	struct sockaddr_storage ss;
	char host[NI_MAXHOST];
	socklen_t len;
	size_t i;
	int on = 1, err;

	for (i = 0; k >= o->sources[i].count; i++)
		k -= o->sources[i].count;
	len = addr_range_nth(&o->sources[i], (uint32_t)k, &ss);
	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on,
	                 sizeof on);
	if (bind(fd, (struct sockaddr *)&ss, len) == 0)
		return 0;
	err = errno;
	if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, NULL, 0,
	                NI_NUMERICHOST) != 0)
		snprintf(host, sizeof host, "?");
	if (err == EADDRNOTAVAIL)
		bench_fatal(b,
		            "cannot bind to source address %s: %s: it is not "
		            "an address of this host; add it to an interface "
		            "(ip address add %s/%d dev IFACE, an address the "
		            "server can route back to) or leave it out of "
		            "--source",
		            host, strerror(err), host,
		            ss.ss_family == AF_INET ? 32 : 128);
	else
		bench_fatal(b, "cannot bind to source address %s: %s", host,
		            strerror(err));
	return -1;
}

/*
 * Open the slot's next connection: the run's next id for it, its byte
 * stream and its --source address.
 */
void conn_open(struct conn *c)
{
	struct bench *b = c->b;

	c->id = b->next_id;
	b->next_id += b->id_step;
	conn_dial(c);
}

/*
 * Connect c, as connection c->id (a retry on the target's next address
 * keeps it). Messages already queued on the slot (due while it connected,
 * before a retry) start its new byte stream; a --churn connection's one
 * message is due from connect(2).
 */
static void conn_dial(struct conn *c)
{
	struct bench *b = c->b;
	const struct evutil_addrinfo *ai = b->cur;
	int fd;

	c->gen++;
	c->soff = c->roff = (uint32_t)(c->id * 7919u % PAT_LEN);
	c->queued = (uint64_t)c->tlen * b->o->size;
	c->sent = c->rcvd = c->done = 0;
	c->tsent = 0;
	c->t_connect = now_ns();
	c->ai = ai;
	if (b->o->churn && c->tlen == 0)
		conn_queue(c, c->t_connect);
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	            0);
	if (fd < 0) {
		if (!b->ever_connected) {
			bench_fatal(b, "socket: %s", strerror(errno));
			return;
		}
		conn_connect_failed(c, errno);
		return;
	}
	/* TCP options mean nothing on a Unix socket. */
	if (ai->ai_family != AF_UNIX)
		sock_nodelay(fd);
	if (b->o->nsources > 0 && conn_bind(c, fd) < 0) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->state = CONN_CONNECTING;
	b->connecting++;
	event_assign(&c->rev, b->base, fd,
	             EV_READ | EV_CLOSED | EV_PERSIST | EV_ET, conn_readcb, c);
	event_assign(&c->wev, b->base, fd, EV_WRITE | EV_ET, conn_connectcb, c);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		conn_tcp_up(c);
		return;
	}
	if (errno != EINPROGRESS) {
		conn_connect_failed(c, errno);
		return;
	}
	if (event_add(&c->wev, NULL) < 0)
		conn_unwatched(c);
}
