/*
 * bench_result.c - what forkloop-bench's figures add up to: the threads'
 * results (or, for forkloop-bench merge, the processes') added into one,
 * the rates and checks derived from a result, and the warnings that go
 * with the report.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "forkloop/bench.h"

void bench_result_merge(struct bench_result *dst,
                        const struct bench_result *src)
{
	uint64_t connects = dst->connects + src->connects;

	/* A mean of means, weighted by how many each holds; taken as it is
	 * when dst has none, so one thread reports what it measured. */
	if (dst->connects == 0)
		dst->connect_ms = src->connect_ms;
	else if (src->connects > 0)
		dst->connect_ms = (dst->connect_ms * (double)dst->connects +
		                   src->connect_ms * (double)src->connects) /
		                  (double)connects;
	dst->connects = connects;
	dst->messages += src->messages;
	dst->bytes += src->bytes;
	dst->errors += src->errors;
	dst->err.connect += src->err.connect;
	dst->err.mismatch += src->err.mismatch;
	dst->err.reset += src->err.reset;
	dst->err.closed += src->err.closed;
	dst->err.handshake += src->err.handshake;
	dst->err.truncated += src->err.truncated;
	dst->tls.handshakes += src->tls.handshakes;
	dst->tls.resumed += src->tls.resumed;
	if (dst->tls.version == NULL) {
		dst->tls.version = src->tls.version;
		dst->tls.cipher = src->tls.cipher;
	}
	if (dst->tls.why[0] == '\0')
		memcpy(dst->tls.why, src->tls.why, sizeof dst->tls.why);
	hist_merge(&dst->tls.latency, &src->tls.latency);
	dst->late_conns += src->late_conns;
	dst->conns_pending += src->conns_pending;
	dst->conns_lost += src->conns_lost;
	dst->in_flight += src->in_flight;
	dst->unsent += src->unsent;
	hist_merge(&dst->latency, &src->latency);
	hist_merge(&dst->latency_uncorrected, &src->latency_uncorrected);
	hist_merge(&dst->issue_lag, &src->issue_lag);
}

void bench_summarize(const struct bench_opts *o, const struct bench_result *r,
                     struct bench_summary *s)
{
	double due, answered, slack;

	s->msgs_per_sec = r->elapsed > 0 ? (double)r->messages / r->elapsed : 0;
	s->mbytes_per_sec =
	        r->elapsed > 0 ? (double)r->bytes / r->elapsed / 1e6 : 0;
	/* A merge's inputs ran over windows of their own: their rates add
	 * up, their messages over the common interval would not. */
	if (r->merged > 0) {
		s->msgs_per_sec = r->merged_msgs_per_sec;
		s->mbytes_per_sec = r->merged_mbytes_per_sec;
	}
	answered = r->merged > 0 ? s->msgs_per_sec * r->elapsed
	                         : (double)r->messages;
	slack = r->merged > 0 ? (double)r->merged : 1;
	s->rate_shortfall_pct = 0;
	s->rate_short = 0;
	s->little_ratio = 0;
	if (o->rate > 0 && r->elapsed > 0) {
		due = o->rate * r->elapsed;
		if (answered < due)
			s->rate_shortfall_pct = 100.0 * (due - answered) / due;
		s->rate_short = answered + slack <
		                due * (1 - BENCH_RATE_TOLERANCE / 100);
	}
	if (o->rate == 0 && !o->churn && r->latency.count > 0)
		s->little_ratio = hist_mean(&r->latency) / 1e9 *
		                  s->msgs_per_sec /
		                  (double)(o->conns * o->pipeline);
}

int bench_warnings(const struct bench_opts *o, const struct bench_result *r,
                   char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN])
{
	struct bench_summary s;
	int n = 0;

	bench_summarize(o, r, &s);
	if (s.rate_short)
		snprintf(w[n++], BENCH_WARNING_LEN,
		         "answered %.1f msgs/s, %.1f%% short of --rate %.1f",
		         s.msgs_per_sec, s.rate_shortfall_pct, o->rate);
	if (r->late_conns > 0)
		snprintf(w[n++], BENCH_WARNING_LEN,
		         "%" PRIu64 " of %" PRIu64 " connections were not up "
		         "when the load started, %.1f s after the first connect",
		         r->late_conns, o->conns, r->load_start_ms / 1e3);
	if (r->conns_pending > 0)
		snprintf(w[n++], BENCH_WARNING_LEN,
		         "%" PRIu64 " connections were still connecting at the "
		         "end",
		         r->conns_pending);
	if (r->unsent > 0)
		snprintf(w[n++], BENCH_WARNING_LEN,
		         "%" PRIu64 " messages were due and never sent; their "
		         "ages are in the latency",
		         r->unsent);
	if (r->merged > 0 && r->merged_overlap < BENCH_MERGE_OVERLAP)
		snprintf(w[n++], BENCH_WARNING_LEN,
		         "the %" PRIu64 " results ran together for %.0f%% of "
		         "the longest one's window: their rates, summed, are "
		         "not one load",
		         r->merged, 100.0 * r->merged_overlap);
	return n;
}
