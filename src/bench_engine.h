/*
 * bench_engine.h - what the files of one forkloop-bench worker share: a
 * connection, the worker's state, and the calls between the files
 * (bench_worker.h is what the run, bench_run.c, sees of a worker).
 *
 * A worker is one event loop with a plain event per connection. Messages
 * are written with send(2) straight from a pattern table and echoes read
 * into one buffer per worker, so the client costs about what a raw epoll
 * loop costs: one read and one write per message. With --threads,
 * bench_run.c runs one worker per thread, each on its share of the
 * connections and of the rate; a worker shares nothing it writes with
 * another, so the path of a message has no atomics or locks however many
 * threads there are.
 *
 * Nothing that was due is left out: a message is queued when it falls due,
 * on a connection that may not be up or writable yet, and whatever is still
 * queued or unanswered when the run ends is counted and enters the latency
 * histograms with its age (bench.h says why); with -i, what is unanswered
 * at an interval's end enters that interval's histograms likewise, and
 * nothing else (bench_interval.c cuts the intervals).
 *
 * Each file owns one idea:
 *   bench_conn.c    one connection: its connect (--source bind, the
 *                   target's next address, --connect-timeout), its queue
 *                   of messages due, writes, reads and the check of every
 *                   echoed byte, each echo's latency, --churn, its loss,
 *                   and --tls. An echo's whole path is in this file.
 *   bench_rate.c    the open loop's schedule (--rate): when a message
 *                   falls due, the timer that issues it, and what fell due
 *                   and was never issued.
 *   bench_worker.c  the worker's life: made, its connections opened
 *                   (--connect-rate), the load started, measured and
 *                   stopped, its timers, progress and intervals (-i), and
 *                   at the end what is still unanswered.
 *   bench_limits.c  what the machine allows, checked before a run
 *                   (descriptors, local ports); it needs none of this.
 */
#ifndef FORKLOOP_BENCH_ENGINE_H
#define FORKLOOP_BENCH_ENGINE_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "bench_worker.h"
#include "forkloop/bench.h"
#include "forkloop/bench_interval.h"

/*
 * Prime, so connection ids spread their start offsets over the table, and
 * not below RBUF_LEN: one read is checked against one contiguous run.
 */
#define PAT_LEN  65537u
#define RBUF_LEN 65536u
_Static_assert(PAT_LEN >= RBUF_LEN, "a read must fit one run of the table");
#define NSEC 1000000000ull

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

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

static inline struct timeval ns_tv(uint64_t ns)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ns / NSEC);
	tv.tv_usec = (suseconds_t)(ns % NSEC / 1000);
	return tv;
}

static inline uint64_t since(uint64_t t0, uint64_t now)
{
	return now > t0 ? now - t0 : 0;
}

/* Not stopping, and with -n, not every message answered or in flight. */
static inline int bench_may_issue(struct bench *b)
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
 * The calls between these files are the worker's own: hidden, so that with
 * -fPIC (the static library's default) the compiler knows no other
 * definition can take their place and inlines them within their file as it
 * would a static function: conn_refill, conn_queue and conn_flush are on
 * every echo's path.
 */
#pragma GCC visibility push(hidden)

/* bench_conn.c */
/* Open the slot's next connection, with the run's next id. */
void conn_open(struct conn *c);
/* Close c's socket; c becomes IDLE, its queued messages still due. */
void conn_close(struct conn *c);
/* A message falls due on c; it goes out once c is open and writable. */
void conn_queue(struct conn *c, uint64_t due);
/* Closed loop: keep c's pipeline full, and send once c is up. */
void conn_refill(struct conn *c, uint64_t now);
/* Write what is due on c until it is all out or the socket is full. */
void conn_flush(struct conn *c, uint64_t now);
/* c's connect failed with err: the next address, or c is lost. */
void conn_connect_failed(struct conn *c, int err);
/* c's handshake failed or timed out, for why: c is lost. */
void conn_hs_failed(struct conn *c, const char *why);

/* bench_rate.c */
/* The open loop's timer: issue what is due, then wait for the next. */
void bench_ratecb(evutil_socket_t fd, short what, void *arg);
/* Open loop: messages due by t and never issued; their youngest's age. */
uint64_t rate_unissued(const struct bench *b, uint64_t t, uint64_t *youngest);
/* At the end: count what was due and never issued, and record its ages. */
void bench_unissued(struct bench *b);

/* bench_worker.c */
/* The run cannot go on: keep the first reason, and break the loop. */
void __attribute__((format(printf, 2, 3)))
bench_fatal(struct bench *b, const char *fmt, ...);
/* End the load now, once: its end instant, and the loop breaks. */
void bench_stop(struct bench *b);
/* Every connection is up or has failed: note READY, once. */
void bench_connected_all(struct bench *b);

#pragma GCC visibility pop

#endif
