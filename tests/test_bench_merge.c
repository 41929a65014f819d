/*
 * test_bench_merge.c - results that travel: a run's JSON read back
 * (bench_input_parse) and added up (bench_merge) gives the histogram of one
 * run of every sample, bucket for bucket; the order of the inputs does not
 * matter; bad input is refused with the field named; and the .hgrm text
 * (hist_write_hgrm) has HdrHistogram's layout with our own percentiles.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <jansson.h>

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

/* bench_merge, which must succeed. */
static void merge(struct bench_input *const *in, size_t n, struct bench_opts *o,
                  struct bench_result *r)
{
	char why[BENCH_INPUT_WHYLEN] = "";

	if (bench_merge(in, n, o, r, why, sizeof why) < 0)
		fail_msg("cannot merge: %s", why);
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
	merge(in, 2, &o, r);
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
	merge(ab, 2, &o1, r1);
	merge(ba, 2, &o2, r2);
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
	merge(in, 2, &o, r);
	/* 2 s of 10 together: 20%. */
	assert_true(r->elapsed > 1.9999 && r->elapsed < 2.0001);
	n = bench_warnings(&o, r, w);
	assert_true(n >= 1);
	assert_non_null(strstr(w[n - 1], "ran together for 20%"));
	/* Alone, a result overlaps itself wholly. */
	merge(in, 1, &o, r);
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
	char why[BENCH_INPUT_WHYLEN] = "", *json, *untyped, *stream;
	size_t len;

	(void)state;
	assert_non_null(in);
	x->r.messages = 7;
	json = json_of(x);
	assert_non_null(strstr(json, type));
	untyped = replace(json, type, "");
	len = 3 * strlen(json) + 100;
	stream = malloc(len);
	assert_non_null(stream);
	/* Interval lines and a summary, then more: the summary counts. */
	snprintf(stream, len,
	         "{\"type\": \"interval\", \"messages\": 1}\n%s"
	         "{\"type\": \"interval\", \"messages\": 2}\n",
	         json);
	assert_int_equal(
	        bench_input_parse(stream, strlen(stream), in, why, sizeof why),
	        0);
	assert_int_equal(in->r.messages, 7);
	/* One object without a type: a result too. */
	assert_int_equal(bench_input_parse(untyped, strlen(untyped), in, why,
	                                   sizeof why),
	                 0);
	assert_int_equal(in->r.messages, 7);
	/* A stream cut before its summary. */
	assert_refused("{\"type\": \"interval\", \"messages\": 1}\n",
	               "without its summary");
	free(untyped);
	free(stream);
	free(json);
	free(in);
	free(x);
}

static void test_several_results_in_one_file_are_refused(void **state)
{
	struct run *x = run_new("127.0.0.1:7000", 1000.0);
	const char *type = "\"type\": \"summary\", ";
	const char *iv = "{\"type\": \"interval\", \"messages\": 1}\n";
	char *json, *untyped, *stream;
	size_t len;

	(void)state;
	json = json_of(x);
	untyped = replace(json, type, "");
	len = 3 * strlen(json) + 100;
	stream = malloc(len);
	assert_non_null(stream);
	/* --json >> FILE twice, as from before "type" or with it. */
	snprintf(stream, len, "%s%s", untyped, untyped);
	assert_refused(stream, "holds 2 results (the second at line 2): one "
	                       "result per file");
	snprintf(stream, len, "%s\n%s", json, json);
	assert_refused(stream, "holds 2 results (the second at line 3)");
	snprintf(stream, len, "%s%s%s", untyped, json, untyped);
	assert_refused(stream, "holds 3 results");
	/* Not the last object only: a smaller one before it counts too. */
	snprintf(stream, len, "{\"messages\": 1}\n%s", untyped);
	assert_refused(stream, "holds 2 results");
	/* Two --json-streams, one after the other: two summary lines. */
	snprintf(stream, len, "%s%s%s%s", iv, json, iv, json);
	assert_refused(stream, "holds 2 results (the second at line 4)");
	free(untyped);
	free(stream);
	free(json);
	free(x);
}

/* A run with two messages, its JSON with from replaced by to, refused. */
static void assert_field_refused(const char *from, const char *to,
                                 const char *want)
{
	struct run *x = run_new("127.0.0.1:7000", 1000.0);
	char *json, *bad;

	record(&x->r, 5000);
	record(&x->r, 7000);
	x->r.err.reset = 2;
	x->r.err.closed = 1;
	x->r.errors = 3;
	json = json_of(x);
	bad = replace(json, from, to);
	assert_refused(bad, want);
	free(bad);
	free(json);
	free(x);
}

static void test_zero_conns_pipeline_size_are_not_a_result(void **state)
{
	(void)state;
	/* conns or pipeline 0 made little_ratio inf, which is not JSON. */
	assert_field_refused("\"conns\": 10", "\"conns\": 0",
	                     "conns is 0: not a result");
	assert_field_refused("\"pipeline\": 1", "\"pipeline\": 0",
	                     "pipeline is 0: not a result");
	assert_field_refused("\"size\": 64", "\"size\": 0",
	                     "size is 0: not a result");
	assert_field_refused("\"threads\": 1", "\"threads\": 0",
	                     "threads is 0: not a result");
}

static void test_figures_that_do_not_add_up_are_refused(void **state)
{
	char from[32], to[32];

	(void)state;
	assert_field_refused("\"errors\": 3", "\"errors\": 4",
	                     "errors is 4 but error_kinds add up to 3");
	assert_field_refused("\"errors\": 3", "\"errors\": 2",
	                     "errors is 2 but error_kinds add up to 3");
	assert_field_refused("\"closed\": 1", "\"closed\": 9223372036854775807",
	                     "errors is 3 but error_kinds add up to more "
	                     "than 2^63 - 1");
	assert_field_refused("\"duration_s\": 10.000000",
	                     "\"duration_s\": -10.0", "duration_s is negative");
	assert_field_refused("\"connect_ms\": 0.0000", "\"connect_ms\": -1",
	                     "connect_ms is negative");
	assert_field_refused("\"rate\": 1000.000", "\"rate\": -1000",
	                     "rate is negative");
	assert_field_refused("\"start_unix_s\": 1000.000000",
	                     "\"start_unix_s\": -1000",
	                     "start_unix_s is negative");
	assert_field_refused("\"messages\": 2", "\"messages\": -2",
	                     "messages is not a count");
	assert_field_refused("\"bytes\": 128", "\"bytes\": -128",
	                     "bytes is not a count");
	snprintf(from, sizeof from, "[%u, 1]", hist_bucket(5000));
	snprintf(to, sizeof to, "[%u, -1]", hist_bucket(5000));
	assert_field_refused(from, to,
	                     "latency_us.hist.buckets holds "
	                     "something other than [index, count]");
	/* 2 messages in 1e-320 s: a rate past any double. */
	assert_field_refused("\"duration_s\": 10.000000",
	                     "\"duration_s\": 1e-310",
	                     "duration_s 1e-310 is too short");
}

/* n runs of target, each 1 ms after the one before, a message each. */
static void runs_new(struct run **x, size_t n, const char *target)
{
	size_t k;

	for (k = 0; k < n; k++) {
		x[k] = run_new(target, 1000.0 + (double)k / 1e3);
		record(&x[k]->r, 5000 + k);
	}
}

static void runs_free(struct run **x, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		free(x[k]);
}

/* bench_merge of the inputs refuses, saying want. */
static void assert_inputs_refused(struct bench_input *const *in, size_t n,
                                  const char *want)
{
	struct bench_result *r = malloc(sizeof *r);
	struct bench_opts o;
	char why[BENCH_INPUT_WHYLEN] = "";

	assert_non_null(r);
	assert_int_equal(bench_merge(in, n, &o, r, why, sizeof why), -1);
	if (strstr(why, want) == NULL)
		fail_msg("refused with '%s', not '%s'", why, want);
	free(r);
}

/* bench_merge of the runs, through their JSON, refuses, saying want. */
static void assert_merge_refused(struct run **x, size_t n, const char *want)
{
	struct bench_input *in[4];
	size_t k;

	assert_true(n <= 4);
	for (k = 0; k < n; k++)
		in[k] = round_trip(x[k]);
	assert_inputs_refused(in, n, want);
	for (k = 0; k < n; k++)
		free(in[k]);
}

static void test_sums_past_int64_are_refused(void **state)
{
	struct bench_input *in, *again, *two[2];
	struct run *x[4], *m = malloc(sizeof *m);
	char why[BENCH_INPUT_WHYLEN] = "", *json;
	size_t k;

	(void)state;
	assert_non_null(m);
	runs_new(x, 4, "127.0.0.1:7000");
	/* Four of 2^62 wrapped to 0; two are already past INT64_MAX. */
	for (k = 0; k < 4; k++)
		x[k]->r.messages = 1ull << 62;
	assert_merge_refused(x, 4,
	                     "the sum of messages overflows: past "
	                     "9223372036854775807");
	assert_merge_refused(x, 2, "the sum of messages overflows");
	x[0]->r.messages = x[1]->r.messages = 1;
	/* Buckets that add up past what jansson reads back. */
	for (k = 0; k < 2; k++) {
		hist_init(&x[k]->r.latency);
		x[k]->r.latency.buckets[hist_bucket(1)] = 1ull << 62;
		x[k]->r.latency.count = 1ull << 62;
		x[k]->r.latency.sum = 1ull << 62;
		x[k]->r.latency.min = x[k]->r.latency.max = 1;
	}
	assert_merge_refused(x, 2, "the sum of latency_us.count overflows");
	/* One of them is fine: its JSON reads back. */
	in = round_trip(x[0]);
	merge(&in, 1, &m->o, &m->r);
	json = json_of(m);
	again = malloc(sizeof *again);
	assert_non_null(again);
	if (bench_input_parse(json, strlen(json), again, why, sizeof why) < 0)
		fail_msg("cannot read the merge back: %s", why);
	assert_int_equal(again->r.latency.count, 1ull << 62);
	free(again);
	free(json);
	free(in);
	hist_init(&x[0]->r.latency);
	hist_init(&x[1]->r.latency);
	/* unanswered is in_flight + unsent. */
	x[0]->r.in_flight = 1ull << 62;
	x[1]->r.unsent = 1ull << 62;
	assert_merge_refused(x, 2, "the sum of unanswered overflows");
	x[0]->r.in_flight = x[1]->r.unsent = 0;
	/* Little's law divides by conns x pipeline. */
	x[0]->o.conns = x[1]->o.conns = 1ull << 40;
	x[0]->o.pipeline = x[1]->o.pipeline = 1ull << 30;
	assert_merge_refused(x, 2,
	                     "conns 2199023255552 x pipeline 1073741824 "
	                     "overflows");
	x[0]->o.conns = x[1]->o.conns = 1ull << 62;
	x[0]->o.pipeline = x[1]->o.pipeline = 1;
	assert_merge_refused(x, 2, "the sum of conns overflows");
	x[0]->o.conns = x[1]->o.conns = 10;
	/* Doubles: a sum past the largest. Set on the inputs read: a run's
	 * own report of such a --rate (past its 1e9) would not be JSON. */
	two[0] = round_trip(x[0]);
	two[1] = round_trip(x[1]);
	two[0]->o.rate = two[1]->o.rate = 1e308;
	assert_inputs_refused(two, 2, "the sum of rate overflows");
	/* Each sum finite, but --rate x duration_s is not. */
	two[0]->o.rate = two[1]->o.rate = 1.7e307;
	assert_inputs_refused(two, 2,
	                      "the merged rate_shortfall_pct is not "
	                      "a finite number");
	two[0]->o.rate = two[1]->o.rate = 1000;
	two[0]->msgs_per_sec = two[1]->msgs_per_sec = 1.7e308;
	assert_inputs_refused(two, 2, "the sum of msgs_per_sec overflows");
	free(two[0]);
	free(two[1]);
	runs_free(x, 4);
	free(m);
}

static void test_same_result_is_recognized(void **state)
{
	struct run *a = run_new("127.0.0.1:7000", 1000.0);
	struct run *b = run_new("127.0.0.1:7000", 1000.5);
	struct bench_input *a1, *a2, *ib;

	(void)state;
	record(&a->r, 5000);
	record(&b->r, 5000);
	a1 = round_trip(a);
	a2 = round_trip(a);
	ib = round_trip(b);
	assert_true(bench_input_same(a1, a2));
	assert_false(bench_input_same(a1, ib));
	/* The same window with other counts is not the same result. */
	free(ib);
	b->r.start_unix_s = a->r.start_unix_s;
	b->r.end_unix_s = a->r.end_unix_s;
	record(&b->r, 5000);
	ib = round_trip(b);
	assert_false(bench_input_same(a1, ib));
	free(a1);
	free(a2);
	free(ib);
	free(a);
	free(b);
}

static void test_tls_and_resume_are_part_of_the_load(void **state)
{
	struct run *plain = run_new("127.0.0.1:7000", 1000.0);
	struct run *tls = run_new("tls://127.0.0.1:7000", 1000.0);
	struct run *resume = run_new("tls://127.0.0.1:7000", 1000.0);
	struct bench_input *ip, *it, *ir;
	char why[BENCH_INPUT_WHYLEN];

	(void)state;
	resume->o.tls_resume = 1;
	ip = round_trip(plain);
	it = round_trip(tls);
	ir = round_trip(resume);
	assert_true(ir->o.tls_resume);
	assert_string_equal(bench_input_mismatch(ip, it, why, sizeof why),
	                    "tls");
	assert_string_equal(why, "TLS, not plain");
	assert_string_equal(bench_input_mismatch(it, ip, why, sizeof why),
	                    "tls");
	assert_string_equal(why, "plain, not TLS");
	assert_string_equal(bench_input_mismatch(it, ir, why, sizeof why),
	                    "tls.resume");
	assert_string_equal(why, "tls.resume true, not false");
	assert_null(bench_input_mismatch(ir, ir, why, sizeof why));
	free(ip);
	free(it);
	free(ir);
	free(plain);
	free(tls);
	free(resume);
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

/* Whether w (lower case) is a word of text, in any case. */
static int has_word(const char *text, const char *w)
{
	size_t n = strlen(w);
	const char *p;

	for (p = text; *p != '\0'; p++)
		if (strncasecmp(p, w, n) == 0 &&
		    (p == text || !isalpha((unsigned char)p[-1])) &&
		    !isalpha((unsigned char)p[n]))
			return 1;
	return 0;
}

/* What a merge prints, its JSON, its text and its .hgrm, malloc'd. */
static char *merged_output(const struct bench_opts *o,
                           const struct bench_result *r, char **text)
{
	char *json = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&json, &len);

	assert_non_null(f);
	bench_report_json(f, o, r);
	assert_int_equal(fclose(f), 0);
	f = open_memstream(text, &len);
	assert_non_null(f);
	bench_report_text(f, o, r);
	assert_int_equal(hist_write_hgrm(f, &r->latency, 1e6), 0);
	assert_int_equal(fclose(f), 0);
	return json;
}

/* The JSON of x with key set to v (taken) in it; malloc'd. */
static char *json_set(const struct run *x, const char *key, json_t *v)
{
	char *json = json_of(x), *out;
	json_t *root = json_loads(json, 0, NULL);

	assert_non_null(root);
	assert_int_equal(json_object_set_new(root, key, v), 0);
	out = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17));
	assert_non_null(out);
	json_decref(root);
	free(json);
	return out;
}

/*
 * Two inputs, with key set to v in the first or in both, then merged:
 * either refused, or every output holds no inf or nan and its JSON reads
 * back as a result. Returns 1 if it merged.
 */
static int merge_extreme(struct run **x, const char *key, json_t *v, int both,
                         struct bench_result *r)
{
	struct bench_input *in[2] = {malloc(sizeof *in[0]),
	                             malloc(sizeof *in[1])};
	struct bench_opts o;
	char why[BENCH_INPUT_WHYLEN], *json[2], *out, *text = NULL;
	int k, merged = 0;

	assert_non_null(in[0]);
	assert_non_null(in[1]);
	for (k = 0; k < 2; k++)
		json[k] = k == 0 || both ? json_set(x[k], key, json_copy(v))
		                         : json_of(x[k]);
	if (bench_input_parse(json[0], strlen(json[0]), in[0], why,
	                      sizeof why) == 0 &&
	    bench_input_parse(json[1], strlen(json[1]), in[1], why,
	                      sizeof why) == 0 &&
	    bench_input_mismatch(in[0], in[1], why, sizeof why) == NULL &&
	    bench_merge(in, 2, &o, r, why, sizeof why) == 0) {
		out = merged_output(&o, r, &text);
		if (has_word(out, "inf") || has_word(out, "nan") ||
		    has_word(text, "inf") || has_word(text, "nan"))
			fail_msg("%s = %s: %s\n%s", key, json[0], out, text);
		if (bench_input_parse(out, strlen(out), in[0], why,
		                      sizeof why) < 0)
			fail_msg("%s: the merge does not read back: %s\n%s",
			         key, why, out);
		free(out);
		free(text);
		merged = 1;
	}
	for (k = 0; k < 2; k++) {
		free(json[k]);
		free(in[k]);
	}
	return merged;
}

static void test_no_merge_prints_inf_or_nan(void **state)
{
	static const char *const reals[] = {
	        "rate",
	        "warmup_s",
	        "setup_timeout_s",
	        "connect_timeout_s",
	        "duration_s",
	        "connect_ms",
	        "setup_ms",
	        "load_start_ms",
	        "start_unix_s",
	        "end_unix_s",
	        "msgs_per_sec",
	        "mbytes_per_sec",
	};
	static const char *const counts[] = {
	        "messages", "bytes",      "connects",      "in_flight",
	        "unsent",   "late_conns", "conns_pending", "conns",
	        "threads",  "pipeline",   "size",          "errors",
	};
	static const double rv[] = {
	        0, 5e-324, 1e-300, 1, 1e300, 1.7e307, 1.7976931348623157e308};
	static const json_int_t cv[] = {0, 1, 1ll << 40, 1ll << 62, INT64_MAX};
	struct bench_result *r = malloc(sizeof *r);
	struct run *x[2];
	size_t i, j;
	int both, merged = 0, tries = 0;
	json_t *v;

	(void)state;
	assert_non_null(r);
	runs_new(x, 2, "127.0.0.1:7000");
	record(&x[1]->r, 123456);
	x[0]->r.connects = x[1]->r.connects = 7;
	x[0]->r.connect_ms = x[1]->r.connect_ms = 1.5;
	for (both = 0; both < 2; both++) {
		for (i = 0; i < sizeof reals / sizeof reals[0]; i++)
			for (j = 0; j < sizeof rv / sizeof rv[0]; j++) {
				v = json_real(rv[j]);
				merged +=
				        merge_extreme(x, reals[i], v, both, r);
				json_decref(v);
				tries++;
			}
		for (i = 0; i < sizeof counts / sizeof counts[0]; i++)
			for (j = 0; j < sizeof cv / sizeof cv[0]; j++) {
				v = json_integer(cv[j]);
				merged +=
				        merge_extreme(x, counts[i], v, both, r);
				json_decref(v);
				tries++;
			}
		/* As merged results, whose rates are read, not derived. */
		x[0]->r.merged = x[1]->r.merged = 1;
		x[0]->r.merged_msgs_per_sec = x[1]->r.merged_msgs_per_sec = 1;
	}
	/* Neither all refused nor all taken: the sweep reached both. */
	assert_true(merged > tries / 4);
	assert_true(merged < tries);
	runs_free(x, 2);
	free(r);
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
	        cmocka_unit_test(test_several_results_in_one_file_are_refused),
	        cmocka_unit_test(
	                test_zero_conns_pipeline_size_are_not_a_result),
	        cmocka_unit_test(test_figures_that_do_not_add_up_are_refused),
	        cmocka_unit_test(test_sums_past_int64_are_refused),
	        cmocka_unit_test(test_same_result_is_recognized),
	        cmocka_unit_test(test_tls_and_resume_are_part_of_the_load),
	        cmocka_unit_test(test_no_merge_prints_inf_or_nan),
	        cmocka_unit_test(test_different_loads_are_named),
	        cmocka_unit_test(test_hgrm_of_a_known_histogram),
	        cmocka_unit_test(test_hgrm_of_an_empty_histogram),
	        cmocka_unit_test(test_hgrm_write_errors_are_reported),
	};

	log_init("test_bench_merge", LOG_QUIET);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
