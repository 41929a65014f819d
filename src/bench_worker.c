/*
 * bench_worker.c - one forkloop-bench worker's life (bench_worker.h says how
 * the run drives it): made with its share of the options, and the pattern
 * table every connection's stream is read from; its connections opened,
 * all at once or at --connect-rate; the load started at the run's instant,
 * measured after --warmup, and stopped at -d, -n, a stall or a signal; its
 * timers, its progress and its intervals (-i); and at the end what was due
 * and is still unanswered, counted into its result.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "bench_engine.h"
#include "forkloop/log.h"

/* How often connect timeouts and stalls are looked for. */
#define WATCH_S 0.1
/* Workers sit on separate cache lines, and so do their results. */
#define BENCH_ALIGN 64

/* What stops the run from going on: said once, by the run, not here. */
void __attribute__((format(printf, 2, 3)))
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

/*
 * Every connection is up or has failed: the run starts the load once every
 * worker is there, unless the setup timeout started it already; setup_ms
 * is reported either way.
 */
void bench_connected_all(struct bench *b)
{
	if (b->o->churn || b->setup_done || b->up + b->down < b->o->conns)
		return;
	b->setup_done = 1;
	b->r->setup_done = 1;
	b->r->setup_ms = (double)(now_ns() - b->t_open) / 1e6;
	b->note(b, BENCH_NOTE_READY, b->note_arg);
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

void bench_stop(struct bench *b)
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
	if (evtimer_add(b->ival_ev, &tv) < 0) {
		bench_fatal(b, "cannot arm the interval timer: out of memory");
		return -1;
	}
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
