/*
 * test_bench_opts.c - forkloop-bench's command line: defaults, every
 * option, and the combinations it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/bench.h"
#include "forkloop/log.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

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
