/*
 * test_bench_report.c - what forkloop-bench concludes from a run: the rate
 * shortfall, Little's law check and the warnings, on made-up results, and
 * the threads' results added into one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/bench.h"

struct run {
	struct bench_opts o;
	struct bench_result r;
};

static struct run *run_new(double rate, uint64_t conns, double elapsed,
                           uint64_t messages)
{
	struct run *x = calloc(1, sizeof *x);

	assert_non_null(x);
	x->o.conns = conns;
	x->o.pipeline = 1;
	x->o.size = 64;
	x->o.rate = rate;
	x->r.elapsed = elapsed;
	x->r.messages = messages;
	x->r.bytes = messages * 64;
	hist_init(&x->r.latency);
	hist_init(&x->r.latency_uncorrected);
	return x;
}

static void test_rate_met_within_tolerance(void **state)
{
	/* 2,000 due; 1% short is 1,980, and one more may be in flight. */
	struct run *x = run_new(1000, 4, 2.0, 1979);
	struct bench_summary s;
	char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];

	(void)state;
	bench_summarize(&x->o, &x->r, &s);
	assert_false(s.rate_short);
	assert_true(s.rate_shortfall_pct > 1.0 && s.rate_shortfall_pct < 1.1);
	assert_int_equal(bench_warnings(&x->o, &x->r, w), 0);
	x->r.messages = 2000;
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.rate_shortfall_pct == 0);
	free(x);
}

static void test_rate_short(void **state)
{
	struct run *x = run_new(1000, 4, 2.0, 1978);
	struct bench_summary s;
	char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];

	(void)state;
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.rate_short);
	assert_int_equal(bench_warnings(&x->o, &x->r, w), 1);
	assert_non_null(strstr(w[0], "short of --rate 1000.0"));
	/* a closed loop has no rate to fall short of */
	x->o.rate = 0;
	bench_summarize(&x->o, &x->r, &s);
	assert_false(s.rate_short);
	assert_true(s.rate_shortfall_pct == 0);
	free(x);
}

static void test_little_ratio(void **state)
{
	/* 100 connections at 50,000 msgs/s: Little's law says 2 ms each. */
	struct run *x = run_new(0, 100, 1.0, 50000);
	struct bench_summary s;
	int i;

	(void)state;
	for (i = 0; i < 1000; i++)
		hist_record(&x->r.latency, 2000000);
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.little_ratio > 0.999 && s.little_ratio < 1.001);
	/* the same mean with 4 in flight per connection is a quarter */
	x->o.pipeline = 4;
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.little_ratio > 0.249 && s.little_ratio < 0.251);
	/* no Little's law check for an open loop or churn */
	x->o.rate = 10;
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.little_ratio == 0);
	x->o.rate = 0;
	x->o.churn = 1;
	bench_summarize(&x->o, &x->r, &s);
	assert_true(s.little_ratio == 0);
	free(x);
}

static void test_every_warning(void **state)
{
	struct run *x = run_new(1000, 8, 1.0, 10);
	char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];

	(void)state;
	x->r.late_conns = 6;
	x->r.load_start_ms = 200;
	x->r.conns_pending = 3;
	x->r.unsent = 42;
	assert_int_equal(bench_warnings(&x->o, &x->r, w), 4);
	assert_non_null(strstr(w[0], "99.0% short of --rate"));
	assert_string_equal(w[1], "6 of 8 connections were not up when the "
	                          "load started, 0.2 s after the first "
	                          "connect");
	assert_string_equal(w[2], "3 connections were still connecting at "
	                          "the end");
	assert_non_null(strstr(w[3], "42 messages were due and never sent"));
	free(x);
}

static void fill(struct bench_result *r, uint64_t k, uint64_t lat_us)
{
	uint64_t i;

	r->messages = 100 * k;
	r->bytes = 6400 * k;
	r->err.connect = k;
	r->err.mismatch = 2 * k;
	r->err.reset = 3 * k;
	r->err.closed = 4 * k;
	r->errors = 10 * k;
	r->connects = 10 * k;
	r->connect_ms = (double)k;
	r->late_conns = 5 * k;
	r->conns_pending = 6 * k;
	r->in_flight = 7 * k;
	r->unsent = 8 * k;
	for (i = 0; i < r->messages; i++) {
		hist_record(&r->latency, lat_us * 1000 + i);
		hist_record(&r->latency_uncorrected, lat_us * 900 + i);
		hist_record(&r->issue_lag, i);
	}
}

/*
 * Two threads' results: every count summed, the histograms those of all
 * the values, connect_ms the mean over all connects, and what belongs to
 * the run (elapsed, setup, interrupted, stalled) left to the run.
 */
static void test_merge_sums_every_count(void **state)
{
	struct run *a = run_new(0, 4, 2.0, 0), *b = run_new(0, 4, 9.0, 0);
	struct run *all = run_new(0, 4, 0, 0), *x = run_new(0, 4, 0, 0);

	(void)state;
	hist_init(&a->r.issue_lag);
	hist_init(&b->r.issue_lag);
	hist_init(&all->r.issue_lag);
	hist_init(&x->r.issue_lag);
	fill(&a->r, 1, 50);
	fill(&b->r, 3, 5000);
	fill(&all->r, 1, 50);
	fill(&all->r, 3, 5000); /* the histograms get both's values */
	a->r.setup_done = 1;
	a->r.setup_ms = 12;
	a->r.load_start_ms = 13;
	b->r.interrupted = 1;
	b->r.stalled = 1;
	bench_result_merge(&a->r, &b->r);
	assert_int_equal(a->r.messages, 400);
	assert_int_equal(a->r.bytes, 25600);
	assert_int_equal(a->r.errors, 40);
	assert_int_equal(a->r.err.connect, 4);
	assert_int_equal(a->r.err.mismatch, 8);
	assert_int_equal(a->r.err.reset, 12);
	assert_int_equal(a->r.err.closed, 16);
	assert_int_equal(a->r.connects, 40);
	/* (10 x 1 ms + 30 x 3 ms) / 40 */
	assert_true(a->r.connect_ms > 2.4999 && a->r.connect_ms < 2.5001);
	assert_int_equal(a->r.late_conns, 20);
	assert_int_equal(a->r.conns_pending, 24);
	assert_int_equal(a->r.in_flight, 28);
	assert_int_equal(a->r.unsent, 32);
	assert_memory_equal(&a->r.latency, &all->r.latency,
	                    sizeof a->r.latency);
	assert_memory_equal(&a->r.latency_uncorrected,
	                    &all->r.latency_uncorrected, sizeof a->r.latency);
	assert_memory_equal(&a->r.issue_lag, &all->r.issue_lag,
	                    sizeof a->r.latency);
	/* three quarters of the values are the slow thread's */
	assert_true(hist_quantile(&a->r.latency, 0.5) > 4000000);
	assert_true(a->r.elapsed == 2.0);
	assert_true(a->r.setup_done && a->r.setup_ms == 12 &&
	            a->r.load_start_ms == 13);
	assert_false(a->r.interrupted);
	assert_false(a->r.stalled);
	/* into an empty result: the same figures, connect_ms as it was */
	bench_result_merge(&x->r, &b->r);
	assert_int_equal(x->r.messages, b->r.messages);
	assert_true(x->r.connect_ms == b->r.connect_ms);
	assert_memory_equal(&x->r.latency, &b->r.latency, sizeof x->r.latency);
	free(a);
	free(b);
	free(all);
	free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rate_met_within_tolerance),
	        cmocka_unit_test(test_rate_short),
	        cmocka_unit_test(test_little_ratio),
	        cmocka_unit_test(test_every_warning),
	        cmocka_unit_test(test_merge_sums_every_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
