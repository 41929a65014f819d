/*
 * bench.c - forkloop-bench's load: one worker, one event loop, a plain
 * event per connection. Messages are written with send(2) straight from a
 * pattern table and echoes read into one buffer per worker, so the client
 * costs about what a raw epoll loop costs: one read and one write per
 * message. With --threads, bench_run.c runs one worker per thread, each on
 * its share of the connections and of the rate; a worker shares nothing
 * it writes with another, so the path of a message has no atomics or
 * locks however many threads there are.
 *
 * Nothing that was due is left out: a message is queued when it falls due,
 * on a connection that may not be up or writable yet, and whatever is still
 * queued or unanswered when the run ends is counted and enters the latency
 * histograms with its age (bench.h says why); with -i, what is unanswered
 * at an interval's end enters that interval's histograms likewise, and
 * nothing else (bench_interval.c cuts the intervals).
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
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench_worker.h"
#include "forkloop/bench.h"
#include "forkloop/log.h"
#include "forkloop/sock.h"
#include "forkloop/tls.h"

/*
 * Prime, so connection ids spread their start offsets over the table, and
 * not below RBUF_LEN: one read is checked against one contiguous run.
 */
#define PAT_LEN  65537u
#define RBUF_LEN 65536u
_Static_assert(PAT_LEN >= RBUF_LEN, "a read must fit one run of the table");
#define NSEC 1000000000ull
/* Open loop: messages issued per wake-up at most. */
#define RATE_BATCH 1024u
#define RATE_SLACK_NS 1000000ull
/* How often connect timeouts and stalls are looked for. */
#define WATCH_S 0.1
/* Workers sit on separate cache lines, and so do their results. */
#define BENCH_ALIGN 64

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_OPEN, CONN_DEAD };

/* One queued message: when it fell due, and when its first byte went. */
struct stamp {
	uint64_t due;
	uint64_t sent;
};

struct bench;

/*
 * One connection; its slot in bench.conns is reused by --churn. What every
 * echo touches comes first, to share the fewest cache lines.
 */
struct conn {
	int fd;
	enum conn_state state;
	uint64_t queued; /* stream bytes due to be sent */
	uint64_t sent;   /* stream bytes written */
	uint64_t rcvd;   /* stream bytes echoed and checked */
	uint64_t done;   /* messages completed */
	uint32_t soff;   /* pattern offsets of the next byte sent, */
	uint32_t roff;   /* and of the next byte expected back */
	struct stamp *ts; /* ring of queued messages, oldest first */
	uint32_t tmask;   /* ring size - 1, a power of two less one */
	uint32_t thead, tlen;
	uint32_t tsent;   /* queued messages whose first byte went out */
	struct bench *b;
	struct stamp ts_small[4];
	struct event rev, wev;
	uint64_t t_connect;               /* when connect(2) was called */
	uint64_t id; /* the run's index of the slot's connection, index +
	                k x threads: its stream and --source address */
	const struct evutil_addrinfo *ai; /* the address it dialled */
	SSL *ssl;       /* --tls: from the TCP connect on, else NULL */
	uint32_t gen;   /* counts the slot's connections: a callback that
	                   reads on after a call that may close and reopen the
	                   slot (--churn) checks it has not changed */
	uint8_t hs;     /* the handshake is under way */
	uint8_t tls_ok; /* no TLS error: it may end with a close_notify */
	uint8_t got_data; /* an echoed byte came back over TLS */
	uint8_t rww;    /* SSL_read wants the socket writable */
	uint8_t wwr;    /* SSL_write wants it readable */
};

struct bench {
	const struct bench_opts *o; /* &opts */
	struct bench_opts opts;     /* the run's, with this worker's share */
	struct bench_result *r;
	struct event_base *base;
	const struct evutil_addrinfo *ai;  /* every address of the target */
	const struct evutil_addrinfo *cur; /* the one in use */
	struct conn *conns;
	const unsigned char *pat; /* 2 * PAT_LEN: any PAT_LEN run is
	                             contiguous; shared by the workers */
	unsigned char *rbuf;
	uint64_t next_id, id_step; /* ids are index + k x threads: a stream
	                              of its own for every connection of the
	                              run */
	double connect_rate;       /* this worker's share, per second */
	uint64_t phase_ns;         /* open loop: t_first - t_start */
	uint64_t opened, up, down; /* connect phase */
	uint64_t connecting;       /* slots in CONN_CONNECTING */
	uint64_t t_progress;       /* the last read of an echo */
	uint64_t dead; /* slots whose connection failed: never reopened */
	uint64_t inflight;
	int ever_connected;
	int started, measuring, stopping, fatal, setup_done;
	uint64_t t_open, t_start, t_first, t_measure, t_end;
	uint64_t rate_next; /* open loop: next message's index */
	double connect_credit;
	uint64_t connect_ns;
	struct event *connect_ev, *warm_ev, *stop_ev, *rate_ev;
	struct event *watch_ev;
	bench_note_fn *note; /* tells the run what this worker reached */
	void *note_arg;
	int post_progress;
	char why[BENCH_WHY_LEN]; /* why the run could not go on, if fatal */
	/*
	 * Latency is recorded once per message: into r->latency when it was
	 * sent the moment it fell due (its two latencies are one value), else
	 * into the pair below; bench_finish merges them into the result.
	 */
	struct hist *late_due;  /* from the due time */
	struct hist *late_sent; /* from the send, if sent */
	SSL_CTX *tls;       /* --tls: shared by every worker, read only */
	SSL_SESSION *sess;  /* --tls-resume: what the next connection resumes */
	struct bench_ival_mark *ivm; /* -i: the figures at the last boundary */
	struct bench_ival *ival_out; /* the interval being noted */
	struct event *ival_ev;       /* the next boundary */
	uint64_t ival_k;             /* intervals noted */
};

static void conn_open(struct conn *c);
static void conn_dial(struct conn *c);
static void conn_flush(struct conn *c, uint64_t now);
static void bench_stop(struct bench *b);
static void conn_hs_failed(struct conn *c, const char *why);
static void conn_tls_read(struct conn *c);

/* What stops the run from going on: said once, by the run, not here. */
static void __attribute__((format(printf, 2, 3)))
bench_fatal(struct bench *b, const char *fmt, ...)
{
	va_list ap;

	if (!b->fatal) {
		va_start(ap, fmt);
		vsnprintf(b->why, sizeof b->why, fmt, ap);
		va_end(ap);
	}
	b->fatal = 1;
	event_base_loopbreak(b->base);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static struct timeval ns_tv(uint64_t ns)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ns / NSEC);
	tv.tv_usec = (suseconds_t)(ns % NSEC / 1000);
	return tv;
}

int bench_nofile(uint64_t conns, uint64_t threads)
{
	struct rlimit rl;
	uint64_t need = conns + BENCH_SPARE_FDS +
	                (threads > 1 ? threads * BENCH_THREAD_FDS : 0);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("getrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		log_error("%llu connections need %llu file descriptors, but "
		          "RLIMIT_NOFILE (ulimit -n) is %llu, hard limit %llu: "
		          "raise the hard limit (as root: ulimit -n %llu, or "
		          "LimitNOFILE= in a systemd unit, or nofile in "
		          "/etc/security/limits.conf), or split the load over "
		          "several forkloop-bench processes and merge their "
		          "results (bench/multi, forkloop-bench merge)",
		          (unsigned long long)conns, (unsigned long long)need,
		          (unsigned long long)rl.rlim_cur,
		          (unsigned long long)rl.rlim_max,
		          (unsigned long long)need);
		return -1;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("cannot raise the open file limit to %llu: %s",
		          (unsigned long long)need, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * net.ipv4.ip_local_port_range, which IPv6 connections use too. A range
 * that cannot be read (no /proc) means no check: connect(2) then says
 * EADDRNOTAVAIL when the ports run out.
 */
int bench_ports(const struct bench_opts *o)
{
	uint64_t sources = o->nsources > 0 ? o->source_addrs : 1, ports;
	unsigned long lo, hi;
	FILE *f;
	int n;

	if (o->target.is_unix)
		return 0;
	if ((f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re")) == NULL)
		return 0;
	n = fscanf(f, "%lu %lu", &lo, &hi);
	fclose(f);
	if (n != 2 || hi < lo)
		return 0;
	ports = hi - lo + 1;
	if (o->conns <= sources * ports)
		return 0;
	log_error("%llu connections need %llu local ports, but %llu source "
	          "address%s x %llu ports (net.ipv4.ip_local_port_range "
	          "%lu-%lu) allow %llu: add addresses with --source, or "
	          "widen the range (sysctl -w "
	          "net.ipv4.ip_local_port_range=\"1024 65535\")",
	          (unsigned long long)o->conns, (unsigned long long)o->conns,
	          (unsigned long long)sources, sources == 1 ? "" : "es",
	          (unsigned long long)ports, lo, hi,
	          (unsigned long long)(sources * ports));
	return -1;
}

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
static void conn_close(struct conn *c)
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

static int bench_may_issue(struct bench *b)
{
	const struct bench_opts *o = b->o;

	if (b->stopping)
		return 0;
	if (o->messages > 0 && b->measuring &&
	    b->r->messages + b->inflight >= o->messages)
		return 0;
	return 1;
}

/*
 * A message falls due on c, whatever its state; it goes out once c is open
 * and writable. One due on a dead connection is never sent: -n does not
 * wait for it.
 */
static void conn_queue(struct conn *c, uint64_t due)
{
	ts_push(c, due);
	c->queued += c->b->o->size;
	if (c->state != CONN_DEAD)
		c->b->inflight++;
}

/* Closed loop: keep the pipeline full, and send once c is up. */
static void conn_refill(struct conn *c, uint64_t now)
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
				event_add(&c->wev, NULL);
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

static void conn_flush(struct conn *c, uint64_t now)
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
				event_add(&c->wev, NULL);
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

static uint64_t since(uint64_t t0, uint64_t now)
{
	return now > t0 ? now - t0 : 0;
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
			event_add(&c->wev, NULL);
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
 * Every connection is up or has failed: the run starts the load once every
 * worker is there, unless the setup timeout started it already; setup_ms
 * is reported either way.
 */
static void bench_connected_all(struct bench *b)
{
	if (b->o->churn || b->setup_done || b->up + b->down < b->o->conns)
		return;
	b->setup_done = 1;
	b->r->setup_done = 1;
	b->r->setup_ms = (double)(now_ns() - b->t_open) / 1e6;
	b->note(b, BENCH_NOTE_READY, b->note_arg);
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
static void conn_connect_failed(struct conn *c, int err)
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
	event_add(&c->rev, NULL);
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
static void conn_hs_failed(struct conn *c, const char *why)
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
		event_add(&c->wev, NULL);
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
	event_add(&c->rev, NULL);
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
static void conn_open(struct conn *c)
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
	event_add(&c->wev, NULL);
}

static int bench_timer(struct bench *b, struct event **ev, event_callback_fn cb,
                       double secs, int flags);

/*
 * Every WATCH_S: a connect that has taken --connect-timeout fails with
 * ETIMEDOUT (the kernel would retry SYNs for two minutes), and a run bounded
 * only by -n ends once no echo has come back for BENCH_STALL_TIMEOUT while
 * messages are owed (the run says so, and stops the other workers).
 */
static void bench_watchcb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	const struct bench_opts *o = b->o;
	uint64_t now = now_ns(), i;
	uint64_t limit = (uint64_t)(o->connect_timeout * 1e9);

	(void)fd;
	(void)what;
	for (i = 0; b->connecting > 0 && i < o->conns && !b->fatal; i++) {
		struct conn *c = &b->conns[i];

		if (c->state != CONN_CONNECTING || now - c->t_connect < limit)
			continue;
		if (c->ssl != NULL)
			conn_hs_failed(c, "the handshake took longer than "
			                  "--connect-timeout");
		else
			conn_connect_failed(c, ETIMEDOUT);
	}
	if (o->duration == 0 && b->started && !b->stopping &&
	    b->inflight > 0 &&
	    now - b->t_progress >= (uint64_t)(BENCH_STALL_TIMEOUT * 1e9)) {
		b->r->stalled = 1;
		bench_stop(b);
	}
	if (b->post_progress)
		b->note(b, BENCH_NOTE_PROGRESS, b->note_arg);
}

/* --connect-rate: open what the elapsed time allows, every 10 ms. */
static void bench_connectcb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	(void)fd;
	(void)what;
	b->connect_credit += b->connect_rate / 100.0;
	while (b->connect_credit >= 1.0 && b->opened < b->o->conns &&
	       !b->fatal) {
		b->connect_credit -= 1.0;
		conn_open(&b->conns[b->opened++]);
	}
	if (b->opened < b->o->conns || b->fatal)
		return;
	event_del(b->connect_ev);
	b->note(b, BENCH_NOTE_OPENED, b->note_arg);
}

void bench_open(struct bench *b, uint64_t t_open)
{
	struct timeval tick = {0, 10000};

	b->t_open = t_open;
	b->t_progress = now_ns();
	if (bench_timer(b, &b->watch_ev, bench_watchcb, WATCH_S, EV_PERSIST) <
	    0)
		return;
	if (b->connect_rate == 0) {
		while (b->opened < b->o->conns && !b->fatal)
			conn_open(&b->conns[b->opened++]);
		if (!b->fatal)
			b->note(b, BENCH_NOTE_OPENED, b->note_arg);
		return;
	}
	b->connect_ev = event_new(b->base, -1, EV_PERSIST, bench_connectcb, b);
	if (b->connect_ev == NULL || event_add(b->connect_ev, &tick) < 0) {
		bench_fatal(b, "cannot create a timer");
		return;
	}
	bench_connectcb(-1, 0, b);
}

static void bench_stop(struct bench *b)
{
	if (b->stopping)
		return;
	b->stopping = 1;
	b->t_end = now_ns();
	event_base_loopbreak(b->base);
}

static void bench_measure(struct bench *b, uint64_t now)
{
	b->measuring = 1;
	b->t_measure = now;
}

static void bench_warmcb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bench_measure(arg, now_ns());
}

static void bench_stopcb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bench_stop(arg);
}

void bench_halt(struct bench *b, int interrupted)
{
	if (interrupted && !b->r->interrupted)
		b->r->interrupted = interrupted;
	bench_stop(b);
}

/*
 * Open loop: message j of this worker is due at t_first + j / rate (its
 * share of --rate), on its connection j mod conns, and its latency runs
 * from that time, however late it is sent.
 */
static uint64_t rate_due(const struct bench *b, uint64_t j)
{
	return b->t_first + (uint64_t)((double)j * (1e9 / b->o->rate));
}

/*
 * Issue what is due, RATE_BATCH messages at most per wake-up: past that the
 * timer fires again at once, after signals, the stop timer and the echoes
 * have had their turn, however far behind a rate the client cannot issue
 * leaves it. What it never catches up on is counted at the end.
 */
static void bench_ratecb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	uint64_t now = now_ns(), due = now;
	struct timeval tv = {0, 0};
	unsigned n;

	(void)fd;
	(void)what;
	for (n = 0; n < RATE_BATCH; n++) {
		struct conn *c;

		due = rate_due(b, b->rate_next);
		if (due > now || !bench_may_issue(b))
			break;
		c = &b->conns[b->rate_next++ % b->o->conns];
		if (b->measuring)
			hist_record(&b->r->issue_lag, now - due);
		conn_queue(c, due);
		if (c->state == CONN_OPEN)
			conn_flush(c, now);
	}
	if (b->stopping || !bench_may_issue(b))
		return;
	event_base_update_cache_time(b->base);
	if (n < RATE_BATCH)
		tv = ns_tv(due - now);
	evtimer_add(b->rate_ev, &tv);
}

void bench_progress(const struct bench *b, struct bench_progress *p)
{
	p->up = b->up;
	p->messages = b->r->messages;
	p->errors = b->r->errors;
	p->t_measure = b->t_measure;
	p->t_end = b->t_end;
	p->started = b->started;
	p->measuring = b->measuring;
	p->stalled = b->r->stalled;
	p->fatal = b->fatal;
	p->ival = b->ival_out;
}

static int bench_timer(struct bench *b, struct event **ev, event_callback_fn cb,
                       double secs, int flags)
{
	struct timeval tv = ns_tv((uint64_t)(secs * 1e9));

	*ev = event_new(b->base, -1, flags, cb, b);
	if (*ev == NULL || event_add(*ev, &tv) < 0) {
		bench_fatal(b, "cannot create a timer");
		return -1;
	}
	return 0;
}

/* A timer for secs after t0, an instant every worker shares. */
static int bench_timer_from(struct bench *b, struct event **ev,
                            event_callback_fn cb, uint64_t t0, double secs)
{
	uint64_t at = t0 + (uint64_t)(secs * 1e9), now = now_ns();

	return bench_timer(b, ev, cb, at > now ? (double)(at - now) / 1e9 : 0,
	                   0);
}

/*
 * Open loop: how many messages fell due by t (not counting the last
 * RATE_SLACK_NS, which may just be waiting for their timer) and were never
 * issued, because the client could not keep up with --rate; not those past
 * -n. *youngest is the youngest one's age at t.
 */
static uint64_t rate_unissued(const struct bench *b, uint64_t t,
                              uint64_t *youngest)
{
	uint64_t due_end;
	double per = 1e9 / b->o->rate;

	if (t < b->t_first + RATE_SLACK_NS)
		return 0;
	if (b->o->messages > 0 &&
	    b->r->messages + b->inflight >= b->o->messages)
		return 0;
	due_end = (uint64_t)((double)(t - RATE_SLACK_NS - b->t_first) / per) +
	          1;
	while (due_end > 0 && rate_due(b, due_end - 1) > t - RATE_SLACK_NS)
		due_end--;
	if (due_end <= b->rate_next)
		return 0;
	*youngest = t - rate_due(b, due_end - 1);
	return due_end - b->rate_next;
}

/*
 * -i: what bench_unanswered and bench_unissued record at the end, at an
 * interval's end instead, into the interval's histograms only: the age of
 * every message due and unanswered, a lower bound of its latency.
 */
static void bench_ival_owed(struct bench *b, struct bench_ival *iv,
                            uint64_t now)
{
	uint64_t i, n, youngest;
	uint32_t k;

	for (i = 0; b->measuring && i < b->o->conns; i++) {
		struct conn *c = &b->conns[i];

		for (k = 0; k < c->tlen; k++) {
			struct stamp *s = &c->ts[(c->thead + k) & c->tmask];

			hist_record(&iv->latency, since(s->due, now));
			if (k < c->tsent)
				hist_record(&iv->latency_uncorrected,
				            since(s->sent, now));
		}
	}
	if (b->o->rate > 0 && b->measuring &&
	    (n = rate_unissued(b, now, &youngest)) > 0)
		hist_record_series(&iv->latency, youngest, 1e9 / b->o->rate,
		                   n);
}

/*
 * Cut the interval that ends now off the worker's figures and hand it to
 * the run. The last one, after bench_finish, runs to the worker's end, and
 * the ages of what is owed then are in the result already.
 */
static void bench_ival_note(struct bench *b, int last)
{
	struct bench_result *r = b->r;
	struct bench_ival *iv;
	uint64_t i, now = now_ns();

	if (last)
		iv = bench_ival_take(b->ivm, r, &r->latency, NULL,
		                     &r->latency_uncorrected, NULL);
	else
		iv = bench_ival_take(b->ivm, r, &r->latency, b->late_due,
		                     &r->latency, b->late_sent);
	if (iv == NULL) {
		log_error("out of memory");
		abort();
	}
	if (!last)
		bench_ival_owed(b, iv, now);
	for (i = 0; i < b->o->conns; i++)
		if (b->conns[i].state == CONN_OPEN)
			iv->conns_open++;
	iv->index = b->ival_k++;
	iv->last = last;
	iv->t0 = b->started ? bench_ival_start(b->o, b->t_start) : 0;
	iv->t_end = b->t_end;
	b->ival_out = iv;
	b->note(b, BENCH_NOTE_INTERVAL, b->note_arg);
	b->ival_out = NULL;
}

static void bench_ivalcb(evutil_socket_t fd, short what, void *arg);

/* The timer for the end of interval ival_k, unless it runs to the end. */
static int bench_ival_arm(struct bench *b)
{
	uint64_t at = bench_ival_boundary(b->o, b->t_start, b->ival_k), now;
	struct timeval tv;

	if (at == 0)
		return 0;
	if (b->ival_ev == NULL &&
	    (b->ival_ev = evtimer_new(b->base, bench_ivalcb, b)) == NULL) {
		bench_fatal(b, "cannot create a timer");
		return -1;
	}
	event_base_update_cache_time(b->base);
	now = now_ns();
	tv = ns_tv(at > now ? at - now : 0);
	evtimer_add(b->ival_ev, &tv);
	return 0;
}

static void bench_ivalcb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;

	(void)fd;
	(void)what;
	if (b->stopping)
		return;
	bench_ival_note(b, 0);
	bench_ival_arm(b);
}

/*
 * All connections up, or the setup timeout (or, for --churn, none yet):
 * start the load, with the run's t_start. A worker told late still keeps
 * the run's instants: its timers count from t_start, not from now.
 */
void bench_start(struct bench *b, uint64_t t_start)
{
	const struct bench_opts *o = b->o;
	uint64_t i, now;

	if (b->started || b->stopping || b->fatal)
		return;
	/* Timers count from the loop's cached time, which is stale by however
	 * long connecting took in this iteration. */
	event_base_update_cache_time(b->base);
	now = now_ns();
	b->started = 1;
	b->t_start = t_start;
	b->t_first = t_start + b->phase_ns;
	if (!o->churn) {
		b->r->load_start_ms = (double)(t_start - b->t_open) / 1e6;
		b->r->late_conns = o->conns - b->up - b->down;
	}
	if (o->warmup > 0) {
		if (bench_timer_from(b, &b->warm_ev, bench_warmcb, t_start,
		                     o->warmup) < 0)
			return;
	} else {
		bench_measure(b, now);
	}
	if (o->duration > 0 &&
	    bench_timer_from(b, &b->stop_ev, bench_stopcb, t_start,
	                     o->warmup + o->duration) < 0)
		return;
	if (b->ivm != NULL && bench_ival_arm(b) < 0)
		return;
	if (b->dead == o->conns) {
		bench_stop(b);
		return;
	}
	if (o->rate > 0) {
		bench_timer(b, &b->rate_ev, bench_ratecb, 0, 0);
		return;
	}
	/* A connection not up yet has its first messages due now all the
	 * same; they go when it comes up. */
	for (i = 0; i < o->conns && !o->churn; i++)
		if (b->conns[i].state != CONN_DEAD)
			conn_refill(&b->conns[i], now);
}

unsigned char *bench_pattern_new(void)
{
	unsigned char *pat = malloc(2 * PAT_LEN);
	uint64_t i;

	if (pat == NULL)
		return NULL;
	srandom(1);
	for (i = 0; i < PAT_LEN; i++)
		pat[i] = pat[i + PAT_LEN] = (unsigned char)random();
	return pat;
}

/*
 * Whole cache lines of its own, for anything a worker writes as it runs:
 * made by the main thread, side by side with other workers' memory.
 */
static void *bench_alloc(size_t size)
{
	size = (size + BENCH_ALIGN - 1) / BENCH_ALIGN * BENCH_ALIGN;
	return aligned_alloc(BENCH_ALIGN, size);
}

static void bench_apply_share(struct bench *b, const struct bench_opts *o,
                              uint64_t index)
{
	struct bench_share s;

	bench_share(o, index, &s);
	b->opts = *o;
	b->opts.conns = s.conns;
	b->opts.messages = s.messages;
	b->opts.rate = s.rate;
	b->o = &b->opts;
	b->connect_rate = s.connect_rate;
	/* The first connect at once with one thread; with more, the
	 * threads' first ones a fraction of an interval apart, as for the
	 * open loop's messages. */
	b->connect_credit = 1.0 - (double)index / (double)o->threads;
	b->phase_ns = s.phase_ns;
	b->next_id = index;
	b->id_step = o->threads;
}

static int bench_init(struct bench *b)
{
	struct event_config *cfg;
	uint64_t i;

	b->conns = bench_alloc(b->o->conns * sizeof *b->conns);
	b->rbuf = bench_alloc(RBUF_LEN);
	b->late_due = bench_alloc(sizeof *b->late_due);
	b->late_sent = bench_alloc(sizeof *b->late_sent);
	if (b->conns == NULL || b->rbuf == NULL || b->late_due == NULL ||
	    b->late_sent == NULL) {
		log_error("out of memory for %llu connections",
		          (unsigned long long)b->o->conns);
		return -1;
	}
	memset(b->conns, 0, b->o->conns * sizeof *b->conns);
	hist_init(b->late_due);
	hist_init(b->late_sent);
	if (b->o->interval > 0 && (b->ivm = bench_ival_mark_new()) == NULL) {
		log_error("out of memory");
		return -1;
	}
	for (i = 0; i < b->o->conns; i++) {
		struct conn *c = &b->conns[i];

		c->b = b;
		c->fd = -1;
		c->ts = c->ts_small;
		c->tmask = 3;
	}
	/* Open loop needs send times to the microsecond: timerfd, not
	 * epoll_wait's milliseconds. */
	cfg = event_config_new();
	if (cfg != NULL && b->o->rate > 0)
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	b->base = cfg != NULL ? event_base_new_with_config(cfg) : NULL;
	if (cfg != NULL)
		event_config_free(cfg);
	if (b->base == NULL) {
		log_error("cannot create an event base");
		return -1;
	}
	return 0;
}

struct bench *bench_new(const struct bench_opts *o, uint64_t index,
                        const struct evutil_addrinfo *ai,
                        const unsigned char *pat, SSL_CTX *tls,
                        bench_note_fn *note, void *arg, int progress)
{
	struct bench *b = bench_alloc(sizeof *b);
	struct bench_result *r = bench_alloc(sizeof *r);

	if (b == NULL || r == NULL) {
		log_error("out of memory");
		free(b);
		free(r);
		return NULL;
	}
	memset(b, 0, sizeof *b);
	memset(r, 0, sizeof *r);
	hist_init(&r->latency);
	hist_init(&r->latency_uncorrected);
	hist_init(&r->issue_lag);
	hist_init(&r->tls.latency);
	bench_apply_share(b, o, index);
	b->tls = tls;
	b->r = r;
	b->ai = b->cur = ai;
	b->pat = pat;
	b->note = note;
	b->note_arg = arg;
	b->post_progress = progress;
	if (bench_init(b) < 0) {
		bench_free(b);
		return NULL;
	}
	return b;
}

struct event_base *bench_base(struct bench *b)
{
	return b->base;
}

const struct bench_result *bench_result_of(const struct bench *b)
{
	return b->r;
}

const char *bench_why(const struct bench *b)
{
	return b->fatal ? b->why : NULL;
}

void bench_free(struct bench *b)
{
	struct event *evs[] = {b->connect_ev, b->warm_ev, b->stop_ev,
	                       b->rate_ev, b->watch_ev, b->ival_ev};
	uint64_t i;

	for (i = 0; b->conns != NULL && i < b->o->conns; i++) {
		conn_close(&b->conns[i]);
		if (b->conns[i].ts != b->conns[i].ts_small)
			free(b->conns[i].ts);
	}
	SSL_SESSION_free(b->sess);
	for (i = 0; i < sizeof evs / sizeof evs[0]; i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (b->base != NULL)
		event_base_free(b->base);
	free(b->conns);
	free(b->rbuf);
	free(b->late_due);
	free(b->late_sent);
	bench_ival_mark_free(b->ivm);
	free(b->r);
	free(b);
}

/*
 * Open loop: the messages that fell due by the end and were never issued
 * (rate_unissued). They are unsent, and their ages, a series from the
 * youngest one's up by 1 / rate, are recorded at once.
 */
static void bench_unissued(struct bench *b)
{
	uint64_t n, youngest;

	if (b->o->rate <= 0 || !b->started || !b->measuring)
		return;
	n = rate_unissued(b, b->t_end, &youngest);
	if (n == 0)
		return;
	b->r->unsent += n;
	hist_record_series(b->late_due, youngest, 1e9 / b->o->rate, n);
}

/*
 * What was due and is unanswered at the end: counted, and its age then
 * recorded as a lower bound of its latency. A message whose first byte went
 * out is in flight; the rest were never sent (their connection was not up,
 * or not writable, or broke).
 */
static void bench_unanswered(struct bench *b)
{
	struct bench_result *r = b->r;
	uint64_t i;
	uint32_t k;

	for (i = 0; i < b->o->conns; i++) {
		struct conn *c = &b->conns[i];

		/* A --churn connection's connect is the first leg of its
		 * message's round trip: in flight, not late. */
		int churning = b->o->churn && c->state == CONN_CONNECTING;

		if (c->state == CONN_CONNECTING && !churning)
			r->conns_pending++;
		for (k = 0; b->measuring && k < c->tlen; k++) {
			struct stamp *s = &c->ts[(c->thead + k) & c->tmask];

			hist_record(b->late_due, since(s->due, b->t_end));
			if (k < c->tsent)
				hist_record(b->late_sent,
				            since(s->sent, b->t_end));
			if (k < c->tsent || churning)
				r->in_flight++;
			else
				r->unsent++;
		}
	}
	bench_unissued(b);
}

static void bench_finish(struct bench *b)
{
	struct bench_result *r = b->r;

	if (!b->stopping)
		b->t_end = now_ns();
	bench_unanswered(b);
	hist_merge(&r->latency_uncorrected, &r->latency);
	hist_merge(&r->latency_uncorrected, b->late_sent);
	hist_merge(&r->latency, b->late_due);
	r->elapsed = b->measuring ? (double)(b->t_end - b->t_measure) / 1e9 : 0;
	r->conns_lost = b->dead;
	r->connect_ms =
	        r->connects > 0 ? (double)b->connect_ns / 1e6 / r->connects : 0;
}

void bench_work(struct bench *b)
{
	if (!b->fatal && !b->stopping)
		event_base_dispatch(b->base);
	b->note(b, BENCH_NOTE_DONE, b->note_arg);
	bench_finish(b);
	if (b->ivm != NULL)
		bench_ival_note(b, 1);
}
