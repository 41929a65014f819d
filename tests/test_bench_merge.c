/*
 * test_bench_merge.c - results that travel: a run's JSON read back
 * (bench_input_parse) and added up (bench_merge) gives the histogram of one
 * run of every sample, bucket for bucket; the order of the inputs does not
 * matter; bad input is refused with the field named; and the .hgrm text
 * (hist_write_hgrm) has HdrHistogram's layout with our own percentiles.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/bench_merge.h"
#include "forkloop/log.h"

#define SAMPLES 100000

struct run {
	struct bench_opts o;
	struct bench_result r;
};

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64 (Marsaglia 2003): the same samples on every machine. */
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* 1 ns to about 10 s: a mantissa of 1 to 1000 times 10^0 to 10^7. */
static uint64_t sample(uint64_t *s)
{
	static const uint64_t tens[] = {1,     10,     100,     1000,
	                                10000, 100000, 1000000, 10000000};
	uint64_t x = rng_next(s);

	return (x % 1000 + 1) * tens[(x >> 20) % 8];
}

static struct run *run_new(const char *target, double start)
{
	struct run *x = calloc(1, sizeof *x);
	const char *why;

	assert_non_null(x);
	assert_int_equal(addr_parse(target, ADDR_CONNECT | ADDR_TLS | ADDR_UNIX,
	                            &x->o.target, &why),
	                 0);
	x->o.tls = x->o.target.tls;
	x->o.conns = 10;
	x->o.size = 64;
	x->o.pipeline = 1;
	x->o.threads = 1;
	x->o.rate = 1000;
	x->o.setup_timeout = 2;
	x->o.connect_timeout = 5;
	hist_init(&x->r.latency);
	hist_init(&x->r.latency_uncorrected);
	hist_init(&x->r.issue_lag);
	hist_init(&x->r.tls.latency);
	x->r.setup_done = 1;
	x->r.elapsed = 10;
	x->r.start_unix_s = start;
	x->r.end_unix_s = start + 10;
	return x;
}

/* One sample into every histogram of r, and one message counted. */
static void record(struct bench_result *r, uint64_t v)
{
	hist_record(&r->latency, v);
	hist_record(&r->latency_uncorrected, v / 2);
	hist_record(&r->issue_lag, v / 3);
	if (v % 7 == 0)
		hist_record(&r->tls.latency, v / 5);
	r->messages++;
	r->bytes += 64;
}

/* The JSON bench_report_json writes, read back. */
static struct bench_input *round_trip(const struct run *x)
{
	struct bench_input *in = malloc(sizeof *in);
	char why[BENCH_INPUT_WHYLEN] = "", *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(in);
	assert_non_null(f);
	bench_report_json(f, &x->o, &x->r);
	assert_int_equal(fclose(f), 0);
	if (bench_input_parse(buf, len, in, why, sizeof why) < 0)
		fail_msg("cannot read back: %s", why);
	free(buf);
	return in;
}

static void assert_hist_equal(const struct hist *a, const struct hist *b)
{
	static const double ps[] = {0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1};
	unsigned i;

	assert_int_equal(a->count, b->count);
	assert_int_equal(a->sum, b->sum);
	assert_int_equal(a->max, b->max);
	if (a->count > 0)
		assert_int_equal(a->min, b->min);
	for (i = 0; i < HIST_BUCKETS; i++)
		if (a->buckets[i] != b->buckets[i])
			fail_msg("bucket %u: %llu, not %llu", i,
			         (unsigned long long)a->buckets[i],
			         (unsigned long long)b->buckets[i]);
	for (i = 0; i < sizeof ps / sizeof ps[0]; i++)
		assert_int_equal(hist_quantile(a, ps[i]),
		                 hist_quantile(b, ps[i]));
	assert_true(hist_mean(a) == hist_mean(b));
}

/* The samples of one run, and the same samples split alternately. */
struct split {
	struct run *whole, *a, *b;
};

static void split_new(struct split *s)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull, v;
	int i;

	s->whole = run_new("tls://127.0.0.1:7000", 1000.0);
	s->a = run_new("tls://127.0.0.1:7000", 1000.0);
	s->b = run_new("tls://127.0.0.1:7000", 1000.5);
	for (i = 0; i < SAMPLES; i++) {
		v = sample(&seed);
		record(&s->whole->r, v);
		record(i % 2 == 0 ? &s->a->r : &s->b->r, v);
	}
	s->a->r.err.reset = 2;
	s->a->r.errors = 2;
	s->b->r.err.mismatch = 1;
	s->b->r.errors = 1;
	s->a->r.connects = 10;
	s->a->r.connect_ms = 1.0;
	s->b->r.connects = 30;
	s->b->r.connect_ms = 3.0;
	s->a->r.in_flight = 4;
	s->b->r.unsent = 5;
	s->a->r.tls.handshakes = 10;
	s->b->r.tls.handshakes = 30;
}

static void split_free(struct split *s)
{
	free(s->whole);
	free(s->a);
	free(s->b);
}

static void test_split_runs_merge_to_the_one_run(void **state)
{
	struct split s;
	struct bench_input *in[2];
	struct bench_opts o;
	struct bench_result *r = malloc(sizeof *r);

	(void)state;
	assert_non_null(r);
	split_new(&s);
	in[0] = round_trip(s.a);
	in[1] = round_trip(s.b);
	bench_merge(in, 2, &o, r);
	assert_hist_equal(&r->latency, &s.whole->r.latency);
	assert_hist_equal(&r->latency_uncorrected,
	                  &s.whole->r.latency_uncorrected);
	assert_hist_equal(&r->issue_lag, &s.whole->r.issue_lag);
	assert_hist_equal(&r->tls.latency, &s.whole->r.tls.latency);
	assert_int_equal(r->latency.count, SAMPLES);
	assert_int_equal(r->messages, SAMPLES);
	assert_int_equal(r->bytes, SAMPLES * 64ull);
	assert_int_equal(r->errors, 3);
	assert_int_equal(r->err.reset, 2);
	assert_int_equal(r->err.mismatch, 1);
	assert_int_equal(r->connects, 40);
	assert_true(r->connect_ms > 2.4999 && r->connect_ms < 2.5001);
	assert_int_equal(r->in_flight, 4);
	assert_int_equal(r->unsent, 5);
	assert_int_equal(r->tls.handshakes, 40);
	assert_int_equal(o.conns, 20);
	assert_int_equal(o.threads, 2);
	assert_true(o.rate == 2000);
	assert_true(o.tls);
	/* Each ran 10 s, half a second apart: 9.5 s together, each at
	 * 5,000 msgs/s. */
	assert_int_equal(r->merged, 2);
	assert_true(r->elapsed > 9.4999 && r->elapsed < 9.5001);
	assert_true(r->merged_msgs_per_sec > 9999.99 &&
	            r->merged_msgs_per_sec < 10000.01);
	assert_true(r->merged_overlap > 0.9);
	free(in[0]);
	free(in[1]);
	free(r);
	split_free(&s);
}

static void test_json_round_trip_keeps_every_bucket(void **state)
{
	struct split s;
	struct bench_input *in;

	(void)state;
	split_new(&s);
	in = round_trip(s.whole);
	assert_hist_equal(&in->r.latency, &s.whole->r.latency);
	assert_hist_equal(&in->r.tls.latency, &s.whole->r.tls.latency);
	assert_int_equal(in->o.size, 64);
	assert_string_equal(in->target, "tls://127.0.0.1:7000");
	assert_string_equal(in->load, "open");
	free(in);
	split_free(&s);
}

static void test_merge_is_commutative(void **state)
{
	struct split s;
	struct bench_input *ab[2], *ba[2];
	struct bench_opts o1, o2;
	struct bench_result *r1 = malloc(sizeof *r1), *r2 = malloc(sizeof *r2);

	(void)state;
	assert_non_null(r1);
	assert_non_null(r2);
	split_new(&s);
	ab[0] = ba[1] = round_trip(s.a);
	ab[1] = ba[0] = round_trip(s.b);
	bench_merge(ab, 2, &o1, r1);
	bench_merge(ba, 2, &o2, r2);
	assert_hist_equal(&r1->latency, &r2->latency);
	assert_hist_equal(&r1->latency_uncorrected, &r2->latency_uncorrected);
	assert_hist_equal(&r1->issue_lag, &r2->issue_lag);
	assert_hist_equal(&r1->tls.latency, &r2->tls.latency);
	assert_int_equal(r1->messages, r2->messages);
	assert_int_equal(r1->errors, r2->errors);
	assert_true(r1->connect_ms == r2->connect_ms);
	assert_true(r1->elapsed == r2->elapsed);
	assert_true(r1->start_unix_s == r2->start_unix_s);
	assert_true(r1->merged_msgs_per_sec == r2->merged_msgs_per_sec);
	assert_int_equal(o1.conns, o2.conns);
	free(ab[0]);
	free(ab[1]);
	free(r1);
	free(r2);
	split_free(&s);
}

static void test_windows_apart_are_a_warning(void **state)
{
	struct run *a = run_new("127.0.0.1:7000", 1000.0);
	struct run *b = run_new("127.0.0.1:7000", 1008.0);
	struct bench_input *in[2];
	struct bench_opts o;
	struct bench_result *r = malloc(sizeof *r);
	char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];
	int n;

	(void)state;
	assert_non_null(r);
	in[0] = round_trip(a);
	in[1] = round_trip(b);
	bench_merge(in, 2, &o, r);
	/* 2 s of 10 together: 20%. */
	assert_true(r->elapsed > 1.9999 && r->elapsed < 2.0001);
	n = bench_warnings(&o, r, w);
	assert_true(n >= 1);
	assert_non_null(strstr(w[n - 1], "ran together for 20%"));
	/* Alone, a result overlaps itself wholly. */
	bench_merge(in, 1, &o, r);
	assert_true(r->merged_overlap == 1);
	free(in[0]);
	free(in[1]);
	free(r);
	free(a);
	free(b);
}

static char *json_of(const struct run *x)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	bench_report_json(f, &x->o, &x->r);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* buf with the first from replaced by to; malloc'd. */
static char *replace(const char *buf, const char *from, const char *to)
{
	const char *at = strstr(buf, from);
	char *out;

	assert_non_null(at);
	out = malloc(strlen(buf) + strlen(to) + 1);
	assert_non_null(out);
	memcpy(out, buf, (size_t)(at - buf));
	strcpy(out + (at - buf), to);
	strcat(out, at + strlen(from));
	return out;
}

static void assert_refused(const char *buf, const char *want)
{
	struct bench_input *in = malloc(sizeof *in);
	char why[BENCH_INPUT_WHYLEN] = "";

	assert_non_null(in);
	assert_int_equal(
	        bench_input_parse(buf, strlen(buf), in, why, sizeof why), -1);
	if (strstr(why, want) == NULL)
		fail_msg("refused with '%s', not '%s'", why, want);
	free(in);
}

static void test_bad_input_names_what_is_wrong(void **state)
{
	struct run *x = run_new("127.0.0.1:7000", 1000.0);
	char *json, *bad;

	(void)state;
	hist_record(&x->r.latency, 5000);
	hist_record(&x->r.latency, 7000);
	json = json_of(x);
	assert_refused("{\"target\": ", "not JSON");
	assert_refused("", "empty");
	assert_refused("[1, 2]", "not an object");
	bad = replace(json, "\"hist\": {", "\"nohist\": {");
	assert_refused(bad, "latency_us has no hist");
	free(bad);
	bad = replace(json, "\"count\": 2", "\"count\": 3");
	assert_refused(bad, "latency_us.count is 3 but its buckets hold 2");
	free(bad);
	bad = replace(json, "\"sub_bits\": 6", "\"sub_bits\": 7");
	assert_refused(bad, "sub_bits");
	free(bad);
	bad = replace(json, "\"min\": 5000", "\"min\": 9000");
	assert_refused(bad, "latency_us.hist.min and max");
	free(bad);
	bad = replace(json, "\"messages\": ", "\"messages_\": ");
	assert_refused(bad, "no messages");
	free(bad);
	bad = replace(json, "\"size\": 64", "\"size\": \"64\"");
	assert_refused(bad, "size is not a count");
	free(bad);
	free(json);
	free(x);
}

static void test_stream_takes_its_summary(void **state)
{
	struct run *x = run_new("127.0.0.1:7000", 1000.0);
	struct bench_input *in = malloc(sizeof *in);
	const char *type = "\"type\": \"summary\", ";
	char why[BENCH_INPUT_WHYLEN] = "", *json, *typed, *untyped, *stream;
	size_t len;

	(void)state;
	assert_non_null(in);
	x->r.messages = 7;
	json = json_of(x);
	untyped = strstr(json, type) != NULL ? replace(json, type, "")
	                                     : strdup(json);
	typed = strstr(json, type) != NULL ? strdup(json)
	                                   : replace(json, "{",
	                                             "{\"type\": "
	                                             "\"summary\", ");
	/* Objects without a type: the last one counts. */
	len = strlen(typed);
	stream = malloc(3 * len + 1);
	assert_non_null(stream);
	snprintf(stream, 3 * len + 1, "%s%s", "{\"messages\": 1}\n", untyped);
	assert_int_equal(
	        bench_input_parse(stream, strlen(stream), in, why, sizeof why),
	        0);
	assert_int_equal(in->r.messages, 7);
	/* Interval lines and a summary, then more: the summary counts. */
	snprintf(stream, 3 * len + 1,
	         "{\"type\": \"interval\", \"messages\": 1}\n%s"
	         "{\"type\": \"interval\", \"messages\": 2}\n",
	         typed);
	assert_int_equal(
	        bench_input_parse(stream, strlen(stream), in, why, sizeof why),
	        0);
	assert_int_equal(in->r.messages, 7);
	/* A stream cut before its summary. */
	assert_refused("{\"type\": \"interval\", \"messages\": 1}\n",
	               "without its summary");
	free(typed);
	free(untyped);
	free(stream);
	free(json);
	free(in);
	free(x);
}

static void test_different_loads_are_named(void **state)
{
	struct run *a = run_new("127.0.0.1:7000", 1000.0);
	struct run *b = run_new("127.0.0.1:7000", 1000.0);
	struct bench_input *ia, *ib;
	char why[BENCH_INPUT_WHYLEN];

	(void)state;
	ia = round_trip(a);
	ib = round_trip(b);
	assert_null(bench_input_mismatch(ia, ib, why, sizeof why));
	free(ib);
	b->o.size = 100;
	ib = round_trip(b);
	assert_string_equal(bench_input_mismatch(ia, ib, why, sizeof why),
	                    "size");
	assert_string_equal(why, "size 100, not 64");
	free(ib);
	b->o.size = 64;
	b->o.rate = 0;
	ib = round_trip(b);
	assert_string_equal(bench_input_mismatch(ia, ib, why, sizeof why),
	                    "load");
	free(ib);
	free(ia);
	free(a);
	free(b);
}

/* The .hgrm text of h, split into lines (the array and text malloc'd). */
static char **hgrm_lines(const struct hist *h, int *n)
{
	char *buf = NULL, **lines, *p;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int cap = 1024;

	assert_non_null(f);
	assert_int_equal(hist_write_hgrm(f, h, 1e6), 0);
	assert_int_equal(fclose(f), 0);
	lines = calloc((size_t)cap, sizeof *lines);
	assert_non_null(lines);
	*n = 0;
	for (p = buf; *p != '\0' && *n < cap; (*n)++) {
		lines[*n] = p;
		p = strchr(p, '\n');
		assert_non_null(p);
		*p++ = '\0';
	}
	return lines;
}

static void test_hgrm_of_a_known_histogram(void **state)
{
	struct hist *h = malloc(sizeof *h);
	double v, p, inv, last_v = -1, last_p = -1, max, mean, sd;
	unsigned long long total, last_total = 0, count;
	char **lines;
	int n, i, rows = 0, fields, seen50 = 0, seen90 = 0;

	(void)state;
	assert_non_null(h);
	hist_init(h);
	/* 1 us to 10 ms, one value each 1 us. */
	for (i = 1; i <= 10000; i++)
		hist_record(h, (uint64_t)i * 1000);
	lines = hgrm_lines(h, &n);
	assert_true(n > 10);
	assert_string_equal(lines[0], "       Value     Percentile TotalCount "
	                              "1/(1-Percentile)");
	assert_string_equal(lines[1], "");
	for (i = 2; i < n && lines[i][0] != '#'; i++, rows++) {
		fields = sscanf(lines[i], "%lf %lf %llu %lf", &v, &p, &total,
		                &inv);
		assert_true(fields == 4 || (fields == 3 && i == n - 4));
		assert_true(v >= last_v);
		assert_true(p > last_p);
		assert_true(total >= last_total);
		if (p == 0.5) {
			assert_true(v == (double)hist_quantile(h, 0.5) / 1e6);
			seen50 = 1;
		}
		if (p == 0.9) {
			assert_true(v == (double)hist_quantile(h, 0.9) / 1e6);
			seen90 = 1;
		}
		last_v = v;
		last_p = p;
		last_total = total;
	}
	assert_true(seen50 && seen90);
	assert_true(rows > 20);
	assert_true(last_p == 1.0);
	assert_int_equal(last_total, 10000);
	assert_true(last_v == 10.0);
	assert_int_equal(n - i, 3);
	assert_int_equal(sscanf(lines[i],
	                        "#[Mean    = %lf, StdDeviation   = "
	                        "%lf]",
	                        &mean, &sd),
	                 2);
	assert_true(mean > 5.0004 && mean < 5.0006);
	assert_true(sd > 2.85 && sd < 2.92); /* 10 / sqrt(12) = 2.887 */
	assert_int_equal(sscanf(lines[i + 1],
	                        "#[Max     = %lf, Total count    "
	                        "= %llu]",
	                        &max, &count),
	                 2);
	assert_true(max == 10.0);
	assert_int_equal(count, 10000);
	assert_string_equal(lines[i + 2], "#[Buckets =           58, "
	                                  "SubBuckets     =          128]");
	free(lines[0]);
	free(lines);
	free(h);
}

static void test_hgrm_of_an_empty_histogram(void **state)
{
	struct hist *h = malloc(sizeof *h);
	char **lines;
	int n;

	(void)state;
	assert_non_null(h);
	hist_init(h);
	lines = hgrm_lines(h, &n);
	assert_int_equal(n, 5);
	assert_string_equal(lines[1], "");
	assert_string_equal(lines[2], "#[Mean    =     0.000000, "
	                              "StdDeviation   =     0.000000]");
	assert_string_equal(lines[3], "#[Max     =     0.000000, "
	                              "Total count    =            0]");
	free(lines[0]);
	free(lines);
	free(h);
}

static void test_hgrm_write_errors_are_reported(void **state)
{
	struct hist *h = malloc(sizeof *h);

	(void)state;
	assert_non_null(h);
	hist_init(h);
	hist_record(h, 1000);
	assert_int_equal(bench_hist_save("/nonexistent/dir/x.hgrm", h), -1);
	assert_int_equal(bench_hist_save("/dev/full", h), -1);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_split_runs_merge_to_the_one_run),
	        cmocka_unit_test(test_json_round_trip_keeps_every_bucket),
	        cmocka_unit_test(test_merge_is_commutative),
	        cmocka_unit_test(test_windows_apart_are_a_warning),
	        cmocka_unit_test(test_bad_input_names_what_is_wrong),
	        cmocka_unit_test(test_stream_takes_its_summary),
	        cmocka_unit_test(test_different_loads_are_named),
	        cmocka_unit_test(test_hgrm_of_a_known_histogram),
	        cmocka_unit_test(test_hgrm_of_an_empty_histogram),
	        cmocka_unit_test(test_hgrm_write_errors_are_reported),
	};

	log_init("test_bench_merge", LOG_QUIET);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
