/*
 * test_bench_opts.c - forkloop-bench's command line: defaults, every
 * option, the combinations it refuses, and how --threads splits a run.
 */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/bench.h"
#include "forkloop/log.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

__extension__ typedef unsigned __int128 u128;

static FILE *devnull;

static enum opts_result parse(int argc, char **argv, struct bench_opts *o)
{
	return bench_opts_parse(argc, argv, o, devnull, devnull);
}

static void test_defaults(void **state)
{
	char *argv[] = {"forkloop-bench", "127.0.0.1:6666", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(argv), argv, &o), OPTS_OK);
	assert_string_equal(o.target.host, "127.0.0.1");
	assert_string_equal(o.target.port, "6666");
	assert_int_equal(o.conns, 50);
	assert_int_equal(o.size, 64);
	assert_true(o.duration == 10.0);
	assert_int_equal(o.messages, 0);
	assert_int_equal(o.pipeline, 1);
	assert_true(o.warmup == 0);
	assert_int_equal(o.connect_rate, 0);
	assert_true(o.rate == 0);
	assert_false(o.churn);
	assert_false(o.json);
	assert_false(o.strict);
	assert_true(o.setup_timeout == 2.0);
	assert_true(o.connect_timeout == 5.0);
	assert_int_equal(o.threads, 1);
}

static void test_every_option(void **state)
{
	char *argv[] = {"forkloop-bench",
	                "-c",
	                "1000",
	                "--size=4K",
	                "-d",
	                "2.5",
	                "-p",
	                "8",
	                "--warmup",
	                "0.5",
	                "--connect-rate",
	                "5000",
	                "--json",
	                "--setup-timeout",
	                "0.25",
	                "--connect-timeout",
	                "1.5",
	                "--strict",
	                "[::1]:7",
	                NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(argv), argv, &o), OPTS_OK);
	assert_string_equal(o.target.host, "::1");
	assert_string_equal(o.target.port, "7");
	assert_int_equal(o.conns, 1000);
	assert_int_equal(o.size, 4096);
	assert_true(o.duration == 2.5);
	assert_int_equal(o.pipeline, 8);
	assert_true(o.warmup == 0.5);
	assert_int_equal(o.connect_rate, 5000);
	assert_true(o.json);
	assert_true(o.setup_timeout == 0.25);
	assert_true(o.connect_timeout == 1.5);
	assert_true(o.strict);
}

static void test_messages_without_duration(void **state)
{
	char *argv[] = {"b", "-n", "500", "h:1", NULL};
	char *both[] = {"b", "-n", "500", "-d", "3", "h:1", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(argv), argv, &o), OPTS_OK);
	assert_int_equal(o.messages, 500);
	assert_true(o.duration == 0);
	assert_int_equal(parse(ARGC(both), both, &o), OPTS_OK);
	assert_int_equal(o.messages, 500);
	assert_true(o.duration == 3);
}

static void test_rate_and_churn(void **state)
{
	char *rate[] = {"b", "--rate", "2500.5", "h:1", NULL};
	char *churn[] = {"b", "--churn", "-c", "4", "h:1", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(rate), rate, &o), OPTS_OK);
	assert_true(o.rate == 2500.5);
	assert_int_equal(parse(ARGC(churn), churn, &o), OPTS_OK);
	assert_true(o.churn);
	assert_int_equal(o.conns, 4);
}

static void test_help_and_version(void **state)
{
	char *help[] = {"b", "--help", NULL};
	char *version[] = {"b", "-V", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(help), help, &o), OPTS_EXIT);
	assert_int_equal(parse(ARGC(version), version, &o), OPTS_EXIT);
}

static void assert_usage(char **argv, int argc)
{
	struct bench_opts o;

	if (parse(argc, argv, &o) != OPTS_USAGE)
		fail_msg("accepted: %s %s %s", argv[1], argc > 2 ? argv[2] : "",
		         argc > 3 ? argv[3] : "");
}

static void test_bad_values(void **state)
{
	char *bad[][4] = {
	        {"b", "-c", "0", "h:1"},
	        {"b", "-c", "x", "h:1"},
	        {"b", "-s", "0", "h:1"},
	        {"b", "-s", "17M", "h:1"},
	        {"b", "-d", "0", "h:1"},
	        {"b", "-d", "-1", "h:1"},
	        {"b", "-n", "0", "h:1"},
	        {"b", "-p", "0", "h:1"},
	        {"b", "-p", "5000", "h:1"},
	        {"b", "--warmup", "x", "h:1"},
	        {"b", "--connect-rate", "0", "h:1"},
	        {"b", "--rate", "0", "h:1"},
	        {"b", "--setup-timeout", "x", "h:1"},
	        {"b", "--setup-timeout", "-1", "h:1"},
	        {"b", "--connect-timeout", "0", "h:1"},
	        {"b", "--connect-timeout", "x", "h:1"},
	        {"b", "--bogus", "1", "h:1"},
	        {"b", "-x", "1", "h:1"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_usage(bad[i], 4);
}

static void test_bad_targets(void **state)
{
	char *bad[][2] = {
	        {"b", "6666"},        {"b", "localhost"}, {"b", ":6666"},
	        {"b", "127.0.0.1:0"}, {"b", "h:70000"},   {"b", "::1:80"},
	        {"b", "[::1]"},
	};
	char *none[] = {"b", NULL};
	char *two[] = {"b", "h:1", "h:2", NULL};
	char *novalue[] = {"b", "h:1", "-c", NULL};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_usage(bad[i], 2);
	assert_usage(none, ARGC(none));
	assert_usage(two, ARGC(two));
	assert_usage(novalue, ARGC(novalue));
}

static void test_conflicts(void **state)
{
	char *churn_p[] = {"b", "--churn", "-p", "2", "h:1", NULL};
	char *churn_rate[] = {"b", "--churn", "--rate", "10", "h:1", NULL};
	char *rate_p[] = {"b", "--rate", "10", "-p", "2", "h:1", NULL};

	(void)state;
	assert_usage(churn_p, ARGC(churn_p));
	assert_usage(churn_rate, ARGC(churn_rate));
	assert_usage(rate_p, ARGC(rate_p));
}

/* The usage error's first line, as forkloop-bench prints it. */
static void assert_refused(char **argv, int argc, const char *want)
{
	struct bench_opts o;
	char *buf = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&buf, &len);

	assert_non_null(err);
	assert_int_equal(bench_opts_parse(argc, argv, &o, devnull, err),
	                 OPTS_USAGE);
	fclose(err);
	if (strstr(buf, want) == NULL)
		fail_msg("'%s' not in: %s", want, buf);
	assert_non_null(strstr(buf, "usage: forkloop-bench"));
	free(buf);
}

static void test_threads_refused(void **state)
{
	const char *bad[] = {"0", "-1", "x",    "100000", "257",
	                     "",  "2x", "Auto", " 2"};
	char *more_than_conns[] = {"b", "--threads", "3", "-c",
	                           "2", "h:1",       NULL};
	char *more_than_n[] = {"b", "--threads", "4", "-n", "3", "h:1", NULL};
	char *argv[] = {"b", "--threads", NULL, "h:1", NULL};
	char want[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		argv[2] = (char *)bad[i];
		snprintf(want, sizeof want,
		         "forkloop-bench: bad --threads '%s' (1 to 256, or "
		         "auto)",
		         bad[i]);
		assert_refused(argv, ARGC(argv), want);
	}
	assert_refused(more_than_conns, ARGC(more_than_conns),
	               "--threads 3 is more than the 2 connections (-c): "
	               "each thread needs one");
	assert_refused(more_than_n, ARGC(more_than_n),
	               "--threads 4 is more than the 3 messages (-n)");
}

/* A value past a limit is told the limit. */
static void test_limits_named(void **state)
{
	char *d[] = {"b", "-d", "2000000", "h:1", NULL};
	char *rate[] = {"b", "--rate", "2000000000", "h:1", NULL};
	char *ct[] = {"b", "--connect-timeout", "0.0001", "h:1", NULL};
	char *warm[] = {"b", "--warmup", "1e7", "h:1", NULL};

	(void)state;
	assert_refused(d, ARGC(d), "bad --duration '2000000' (seconds, 0.001 "
	                           "to 1000000)");
	assert_refused(rate, ARGC(rate), "(messages per second, 0.001 to "
	                                 "1000000000)");
	assert_refused(ct, ARGC(ct), "(seconds, 0.001 to 1000000)");
	assert_refused(warm, ARGC(warm), "(seconds, 0 to 1000000)");
}

static void test_threads_values(void **state)
{
	char *one[] = {"b", "--threads", "1", "-c", "1", "h:1", NULL};
	char *max[] = {"b", "--threads=256", "-c", "256", "h:1", NULL};
	char *as_many_as_n[] = {"b", "--threads", "4", "-n", "4", "h:1", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(one), one, &o), OPTS_OK);
	assert_int_equal(o.threads, 1);
	assert_int_equal(parse(ARGC(max), max, &o), OPTS_OK);
	assert_int_equal(o.threads, 256);
	assert_int_equal(parse(ARGC(as_many_as_n), as_many_as_n, &o), OPTS_OK);
	assert_int_equal(o.threads, 4);
}

static uint64_t parse_auto(const char *conns)
{
	char *argv[] = {"b",           "--threads", "auto", "-c",
	                (char *)conns, "h:1",       NULL};
	struct bench_opts o;

	assert_int_equal(parse(ARGC(argv), argv, &o), OPTS_OK);
	return o.threads;
}

/*
 * auto is the CPUs this process may run on, not the machine's: with the
 * mask cut to one CPU it is 1, however many the machine has. It never
 * exceeds the connections or -n.
 */
static void test_threads_auto_is_the_affinity_mask(void **state)
{
	cpu_set_t mask, one;
	char *few_n[] = {"b", "--threads", "auto", "-n", "1", "h:1", NULL};
	struct bench_opts o;
	int cpu;

	(void)state;
	assert_int_equal(sched_getaffinity(0, sizeof mask, &mask), 0);
	assert_int_equal(parse_auto("1000"), CPU_COUNT(&mask));
	assert_int_equal(parse_auto("1"), 1);
	assert_int_equal(parse(ARGC(few_n), few_n, &o), OPTS_OK);
	assert_int_equal(o.threads, 1);
	for (cpu = 0; !CPU_ISSET(cpu, &mask); cpu++)
		;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
	assert_int_equal(parse_auto("1000"), 1);
	assert_int_equal(sched_setaffinity(0, sizeof mask, &mask), 0);
	assert_int_equal(parse_auto("1000"), CPU_COUNT(&mask));
}

/*
 * The shares add up to the options exactly, whatever the numbers: every
 * connection and every one of -n once, the rates to the rate asked for;
 * connections differ by one at most, the first threads having more, and
 * -n follows the connections.
 */
static void check_shares(uint64_t conns, uint64_t threads, uint64_t n,
                         double rate)
{
	struct bench_opts o;
	struct bench_share s;
	uint64_t i, c = 0, m = 0, lo = UINT64_MAX, hi = 0;
	u128 want;
	double r = 0, cr = 0;

	memset(&o, 0, sizeof o);
	o.conns = conns;
	o.threads = threads;
	o.messages = n;
	o.rate = rate;
	o.connect_rate = 7;
	for (i = 0; i < threads; i++) {
		bench_share(&o, i, &s);
		assert_int_equal(s.first_conn, c);
		assert_true(s.conns >= 1);
		if (i > 0 && s.conns > lo)
			fail_msg("thread %llu has more connections than one "
			         "before it",
			         (unsigned long long)i);
		lo = s.conns < lo ? s.conns : lo;
		hi = s.conns > hi ? s.conns : hi;
		c += s.conns;
		m += s.messages;
		if (n > 0) {
			/* 1 + (n - threads) x conns_i / conns, rounded
			 * down or up, in exact arithmetic */
			want = (u128)(n - threads) * s.conns / conns;
			assert_true(s.messages >= 1);
			assert_true(s.messages - 1 >= want &&
			            s.messages - 1 <= want + 1);
		} else {
			assert_int_equal(s.messages, 0);
		}
		r += s.rate;
		cr += s.connect_rate;
		if (rate > 0)
			assert_true((double)s.phase_ns < 1e9 / s.rate);
		else
			assert_int_equal(s.phase_ns, 0);
	}
	assert_int_equal(c, conns);
	assert_int_equal(m, n);
	assert_true(hi - lo <= 1);
	assert_true(r >= rate * (1 - 1e-12) && r <= rate * (1 + 1e-12));
	assert_true(cr >= 7 * (1 - 1e-12) && cr <= 7 * (1 + 1e-12));
}

static void test_threads_split_exactly(void **state)
{
	const uint64_t conns[] = {1,  2,   3,    5,      7,
	                          50, 257, 1000, 999983, 1000000};
	const uint64_t threads[] = {1, 2, 3, 4, 7, 16, 256};
	const uint64_t n[] = {0,    1,     4,          256,
	                      1001, 10007, 1ull << 40, UINT64_MAX / 2};
	const double rates[] = {0, 0.001, 2000, 1e9};
	size_t a, b, k, q;
	struct bench_opts o;
	struct bench_share s;

	(void)state;
	for (a = 0; a < sizeof conns / sizeof conns[0]; a++)
		for (b = 0; b < sizeof threads / sizeof threads[0]; b++)
			for (k = 0; k < sizeof n / sizeof n[0]; k++)
				for (q = 0; q < sizeof rates / sizeof rates[0];
				     q++)
					if (threads[b] <= conns[a] &&
					    (n[k] == 0 || threads[b] <= n[k]))
						check_shares(conns[a],
						             threads[b], n[k],
						             rates[q]);
	/* One thread is the whole run. */
	memset(&o, 0, sizeof o);
	o.conns = 50;
	o.threads = 1;
	o.messages = 1234;
	o.rate = 2500.5;
	o.connect_rate = 3;
	bench_share(&o, 0, &s);
	assert_int_equal(s.conns, 50);
	assert_int_equal(s.messages, 1234);
	assert_true(s.rate == 2500.5);
	assert_true(s.connect_rate == 3.0);
	assert_int_equal(s.phase_ns, 0);
	/* 10 connections on 4 threads: 3, 3, 2, 2 */
	o.conns = 10;
	o.threads = 4;
	o.messages = 1004;
	bench_share(&o, 0, &s);
	assert_int_equal(s.conns, 3);
	assert_int_equal(s.messages, 301);
	bench_share(&o, 3, &s);
	assert_int_equal(s.conns, 2);
	assert_int_equal(s.first_conn, 8);
	assert_int_equal(s.messages, 201);
}

/* A unix: target, as given; no TLS over it. */
static void test_unix_target(void **state)
{
	char *path[] = {"b", "-c", "3", "unix:/tmp/e.sock", NULL};
	char *name[] = {"b", "unix:@echo", NULL};
	char *tls[] = {"b", "--tls", "unix:/tmp/e.sock", NULL};
	char *tls2[] = {"b", "tls://unix:/tmp/e.sock", NULL};
	char *rel[] = {"b", "unix:e.sock", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(path), path, &o), OPTS_OK);
	assert_true(o.target.is_unix);
	assert_string_equal(o.target.path, "/tmp/e.sock");
	assert_false(o.tls);
	assert_int_equal(parse(ARGC(name), name, &o), OPTS_OK);
	assert_string_equal(o.target.path, "@echo");
	assert_refused(tls, ARGC(tls), "TLS is not spoken over Unix sockets");
	assert_refused(tls2, ARGC(tls2), "TLS is not spoken over Unix sockets");
	assert_refused(rel, ARGC(rel), "absolute path");
}

/* --source lists add up, in order; the whole list stays one family. */
static void test_source_lists(void **state)
{
	char *argv[] = {"forkloop-bench",
	                "--source",
	                "127.0.0.2,127.0.0.5-127.0.0.9",
	                "--source",
	                "10.0.0.1",
	                "127.0.0.1:6666",
	                NULL};
	char *none[] = {"forkloop-bench", "127.0.0.1:6666", NULL};
	char *v6[] = {"forkloop-bench", "--source", "[fd00::1]-fd00::20",
	              "[::1]:6666", NULL};
	char *mixed[] = {
	        "forkloop-bench", "--source", "127.0.0.2", "--source", "::1",
	        "127.0.0.1:6666", NULL};
	char *overlap[] = {"forkloop-bench",
	                   "--source",
	                   "127.0.0.2-127.0.0.9",
	                   "--source",
	                   "127.0.0.9",
	                   "127.0.0.1:6666",
	                   NULL};
	char *unix_target[] = {"forkloop-bench", "--source", "127.0.0.2",
	                       "unix:/tmp/x.sock", NULL};
	struct bench_opts o;

	(void)state;
	assert_int_equal(parse(ARGC(none), none, &o), OPTS_OK);
	assert_int_equal(o.nsources, 0);
	assert_int_equal(o.source_addrs, 0);
	assert_int_equal(parse(ARGC(argv), argv, &o), OPTS_OK);
	assert_int_equal(o.nsources, 3);
	assert_int_equal(o.source_addrs, 7);
	assert_int_equal(o.sources[1].count, 5);
	assert_int_equal(o.sources[2].family, AF_INET);
	assert_int_equal(parse(ARGC(v6), v6, &o), OPTS_OK);
	assert_int_equal(o.source_addrs, 32);
	assert_int_equal(o.sources[0].family, AF_INET6);
	assert_int_equal(parse(ARGC(mixed), mixed, &o), OPTS_USAGE);
	assert_int_equal(parse(ARGC(overlap), overlap, &o), OPTS_USAGE);
	assert_int_equal(parse(ARGC(unix_target), unix_target, &o), OPTS_USAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_every_option),
	        cmocka_unit_test(test_messages_without_duration),
	        cmocka_unit_test(test_rate_and_churn),
	        cmocka_unit_test(test_help_and_version),
	        cmocka_unit_test(test_bad_values),
	        cmocka_unit_test(test_bad_targets),
	        cmocka_unit_test(test_conflicts),
	        cmocka_unit_test(test_threads_refused),
	        cmocka_unit_test(test_limits_named),
	        cmocka_unit_test(test_threads_values),
	        cmocka_unit_test(test_threads_auto_is_the_affinity_mask),
	        cmocka_unit_test(test_threads_split_exactly),
	        cmocka_unit_test(test_unix_target),
	        cmocka_unit_test(test_source_lists),
	};
	int rc;

	log_init("forkloop-bench", LOG_NORMAL);
	devnull = fopen("/dev/null", "w");
	if (devnull == NULL)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	fclose(devnull);
	return rc;
}
