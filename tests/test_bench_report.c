/*
 * test_bench_report.c - what forkloop-bench concludes from a run: the rate
 * shortfall, Little's law check and the warnings, on made-up results.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rate_met_within_tolerance),
	        cmocka_unit_test(test_rate_short),
	        cmocka_unit_test(test_little_ratio),
	        cmocka_unit_test(test_every_warning),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
