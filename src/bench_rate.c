/*
 * bench_rate.c - the open loop's schedule (--rate): each of a worker's
 * messages falls due at an instant of its own, whether or not the server
 * keeps up; a timer issues what is due; and what fell due and was never
 * issued, because the client could not keep up, is counted at the end
 * (and, with -i, at each interval's end) with its age.
 */
#include <event2/event.h>

#include "bench_engine.h"

/* Open loop: messages issued per wake-up at most. */
#define RATE_BATCH 1024u
#define RATE_SLACK_NS 1000000ull

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
void bench_ratecb(evutil_socket_t fd, short what, void *arg)
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
	if (evtimer_add(b->rate_ev, &tv) < 0)
		bench_fatal(b, "cannot arm the rate timer: out of memory");
}

/*
 * Open loop: how many messages fell due by t (not counting the last
 * RATE_SLACK_NS, which may just be waiting for their timer) and were never
 * issued, because the client could not keep up with --rate; not those past
 * -n. *youngest is the youngest one's age at t.
 */
uint64_t rate_unissued(const struct bench *b, uint64_t t, uint64_t *youngest)
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
 * Open loop: the messages that fell due by the end and were never issued
 * (rate_unissued). They are unsent, and their ages, a series from the
 * youngest one's up by 1 / rate, are recorded at once.
 */
void bench_unissued(struct bench *b)
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
