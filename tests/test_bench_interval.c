/*
 * test_bench_interval.c - forkloop-bench's intervals on made-up figures:
 * an interval cut off cumulative histograms holds exactly what was recorded
 * since, the boundaries fall where -i and -d put them, and the main
 * thread's side prints each interval once every worker has delivered it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/bench_interval.h"

/* A worker's cumulative figures, as its struct bench keeps them. */
struct cum {
	struct bench_result r;
	struct hist late_due, late_sent;
};

static struct cum *cum_new(void)
{
	struct cum *c = calloc(1, sizeof *c);

	assert_non_null(c);
	hist_init(&c->r.latency);
	hist_init(&c->r.latency_uncorrected);
	hist_init(&c->late_due);
	hist_init(&c->late_sent);
	return c;
}

static struct bench_ival *cut(struct bench_ival_mark *m, struct cum *c)
{
	struct bench_ival *iv =
	        bench_ival_take(m, &c->r, &c->r.latency, &c->late_due,
	                        &c->r.latency, &c->late_sent);

	assert_non_null(iv);
	return iv;
}

static void test_interval_holds_what_came_since(void **state)
{
	struct bench_ival_mark *m = bench_ival_mark_new();
	struct cum *c = cum_new();
	struct bench_ival *a, *b;

	(void)state;
	/* interval 0: two echoes sent when due, one late, an error */
	hist_record(&c->r.latency, 1000);
	hist_record(&c->r.latency, 5000000);
	hist_record(&c->late_due, 3000);
	hist_record(&c->late_sent, 2000);
	c->r.messages = 3;
	c->r.bytes = 192;
	c->r.errors = 1;
	c->r.err.reset = 1;
	a = cut(m, c);
	assert_int_equal(a->messages, 3);
	assert_int_equal(a->bytes, 192);
	assert_int_equal(a->errors, 1);
	assert_int_equal(a->err.reset, 1);
	assert_int_equal(a->latency.count, 3);
	assert_int_equal(a->latency.min, 1000);
	assert_int_equal(a->latency.max, 5000000);
	assert_int_equal(a->latency.sum, 5004000);
	assert_int_equal(a->latency_uncorrected.count, 3);
	assert_int_equal(a->latency_uncorrected.max, 5000000);
	/* interval 1: below the run's max, above its min: its own bucket
	 * edges, within 1/64 */
	hist_record(&c->r.latency, 200000);
	hist_record(&c->r.latency, 210000);
	c->r.messages = 5;
	c->r.bytes = 320;
	b = cut(m, c);
	assert_int_equal(b->messages, 2);
	assert_int_equal(b->bytes, 128);
	assert_int_equal(b->errors, 0);
	assert_int_equal(b->err.reset, 0);
	assert_int_equal(b->latency.count, 2);
	assert_int_equal(b->latency.sum, 410000);
	assert_true(b->latency.max >= 210000 &&
	            b->latency.max <= 210000 + 210000 / 64);
	assert_true(b->latency.min <= 200000 &&
	            b->latency.min >= 200000 - 200000 / 64);
	assert_int_equal(hist_bucket(b->latency.max), hist_bucket(210000));
	free(a);
	free(b);
	/* nothing since: an empty interval */
	a = cut(m, c);
	assert_int_equal(a->messages, 0);
	assert_int_equal(a->latency.count, 0);
	assert_int_equal(a->latency.max, 0);
	assert_int_equal(hist_quantile(&a->latency, 0.99), 0);
	free(a);
	/* after bench_finish the two ways are merged into the result's */
	hist_merge(&c->r.latency_uncorrected, &c->r.latency);
	hist_merge(&c->r.latency_uncorrected, &c->late_sent);
	hist_merge(&c->r.latency, &c->late_due);
	hist_record(&c->r.latency, 7000000);
	a = bench_ival_take(m, &c->r, &c->r.latency, NULL,
	                    &c->r.latency_uncorrected, NULL);
	assert_non_null(a);
	assert_int_equal(a->latency.count, 1);
	assert_int_equal(a->latency.max, 7000000);
	assert_int_equal(a->latency_uncorrected.count, 0);
	free(a);
	free(c);
	bench_ival_mark_free(m);
}

static void test_boundaries(void **state)
{
	struct bench_opts o;
	uint64_t t = 1000000000ull, k;

	(void)state;
	memset(&o, 0, sizeof o);
	o.interval = 0.5;
	o.duration = 3;
	o.warmup = 1;
	assert_int_equal(bench_ival_start(&o, t), t + 1000000000ull);
	for (k = 0; k < 5; k++)
		assert_int_equal(bench_ival_boundary(&o, t, k),
		                 t + 1000000000ull + (k + 1) * 500000000ull);
	/* the one at -d's end is left out: the last runs to the end */
	assert_int_equal(bench_ival_boundary(&o, t, 5), 0);
	/* -d 2.1 -i 0.7: 3 x 0.7 is 2.1, give or take rounding */
	o.warmup = 0;
	o.duration = 2.1;
	o.interval = 0.7;
	assert_true(bench_ival_boundary(&o, t, 1) != 0);
	assert_int_equal(bench_ival_boundary(&o, t, 2), 0);
	/* -n alone: no end known */
	o.duration = 0;
	assert_int_equal(bench_ival_boundary(&o, t, 1000),
	                 t + 1001 * 700000000ull);
}

static struct bench_ival *ival(uint64_t k, uint64_t messages, int last)
{
	struct bench_ival *iv = calloc(1, sizeof *iv);

	assert_non_null(iv);
	hist_init(&iv->latency);
	hist_init(&iv->latency_uncorrected);
	iv->index = k;
	iv->messages = messages;
	iv->bytes = messages * 64;
	iv->last = last;
	iv->t0 = 5000000000ull;
	iv->conns_open = 2;
	if (messages > 0)
		hist_record(&iv->latency, 1000 * messages);
	return iv;
}

static int lines(const char *s)
{
	int n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

static void test_printed_once_every_worker_delivered(void **state)
{
	struct bench_opts o;
	struct bench_ivals *s;
	struct bench_ival *last;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_non_null(f);
	memset(&o, 0, sizeof o);
	o.interval = 1;
	o.json_stream = 1;
	s = bench_ivals_new(&o, 2, f);
	assert_non_null(s);
	bench_ivals_put(s, 0, ival(0, 10, 0));
	bench_ivals_put(s, 0, ival(1, 20, 0));
	fflush(f);
	assert_int_equal(lines(buf), 0);
	bench_ivals_put(s, 1, ival(0, 1, 0));
	fflush(f);
	assert_int_equal(lines(buf), 1);
	assert_non_null(strstr(buf, "\"start_s\": 0.000000, \"end_s\": "
	                            "1.000000, \"messages\": 11, "
	                            "\"bytes\": 704"));
	assert_non_null(strstr(buf, "\"conns_open\": 4}\n"));
	/* worker 1 ends in interval 1: 1 and 2 go without it */
	last = ival(1, 2, 1);
	last->t_end = 5000000000ull + 1500000000ull;
	bench_ivals_put(s, 1, last);
	fflush(f);
	assert_int_equal(lines(buf), 2);
	assert_non_null(strstr(buf, "\"start_s\": 1.000000, \"end_s\": "
	                            "2.000000, \"messages\": 22,"));
	last = ival(2, 30, 1);
	last->t_end = 5000000000ull + 2250000000ull;
	bench_ivals_put(s, 0, last);
	fflush(f);
	assert_int_equal(lines(buf), 3);
	assert_non_null(strstr(buf, "\"start_s\": 2.000000, \"end_s\": "
	                            "2.250000, \"messages\": 30,"));
	assert_non_null(strstr(buf, "\"msgs_per_sec\": 120.0,"));
	bench_ivals_end(s);
	fflush(f);
	assert_int_equal(lines(buf), 3);
	bench_ivals_free(s);
	fclose(f);
	free(buf);
}

static void test_text_lines_and_the_end(void **state)
{
	struct bench_opts o;
	struct bench_ivals *s;
	struct bench_ival *iv;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_non_null(f);
	memset(&o, 0, sizeof o);
	o.interval = 0.5;
	s = bench_ivals_new(&o, 1, f);
	assert_non_null(s);
	iv = ival(0, 100, 0);
	iv->errors = 2;
	bench_ivals_put(s, 0, iv);
	iv = ival(1, 0, 0);
	iv->errors = 1;
	bench_ivals_put(s, 0, iv);
	/* a worker that never sent its last one: the end prints it all */
	bench_ivals_put(s, 0, ival(2, 5, 0));
	bench_ivals_end(s);
	fclose(f);
	assert_non_null(strstr(buf, "interval_s "));
	assert_null(strstr(buf, "from send"));
	assert_non_null(strstr(buf, "\n0.00-0.50 "));
	assert_non_null(strstr(buf, "2 (+2)"));
	assert_non_null(strstr(buf, "\n0.50-1.00 "));
	assert_non_null(strstr(buf, "3 (+1)"));
	assert_non_null(strstr(buf, "\n1.00-1.50 "));
	/* a blank line before the report */
	assert_true(len >= 2 && strcmp(buf + len - 2, "\n\n") == 0);
	bench_ivals_free(s);
	free(buf);
}

static void test_run_that_never_measured_prints_nothing(void **state)
{
	struct bench_opts o;
	struct bench_ivals *s;
	struct bench_ival *iv;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_non_null(f);
	memset(&o, 0, sizeof o);
	o.interval = 1;
	s = bench_ivals_new(&o, 1, f);
	assert_non_null(s);
	iv = ival(0, 0, 1);
	iv->t0 = 0;
	bench_ivals_put(s, 0, iv);
	bench_ivals_end(s);
	fclose(f);
	assert_int_equal(len, 0);
	bench_ivals_free(s);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_interval_holds_what_came_since),
	        cmocka_unit_test(test_boundaries),
	        cmocka_unit_test(test_printed_once_every_worker_delivered),
	        cmocka_unit_test(test_text_lines_and_the_end),
	        cmocka_unit_test(test_run_that_never_measured_prints_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
