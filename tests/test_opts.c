/*
 * test_opts.c - opts_refused names the option getopt_long refused as typed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <getopt.h>

#include "forkloop/opts.h"

static const struct option longopts[] = {
        {"verbose", no_argument, NULL, 'v'},
        {"keep-open", no_argument, NULL, 256},
        {"listen", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
};

/* Parse argv until getopt_long refuses something; return what is named. */
static const char *refused(int argc, char **argv, char buf[3])
{
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vl:", longopts, NULL)) != -1)
		if (c == '?')
			return opts_refused(argv, buf);
	return NULL;
}

static void test_names_what_was_typed(void **state)
{
	char buf[3];
	char *unknown_long[] = {"p", "--bogus", NULL};
	char *long_with_value[] = {"p", "--verbose=yes", NULL};
	char *long_only_with_value[] = {"p", "--keep-open=1", NULL};
	char *short_alone[] = {"p", "-x", NULL};
	char *short_in_cluster[] = {"p", "-vx", NULL};
	char *after_good[] = {"p", "-v", "-l", "a:1", "--nope", NULL};

	(void)state;
	assert_string_equal(refused(2, unknown_long, buf), "--bogus");
	assert_string_equal(refused(2, long_with_value, buf), "--verbose=yes");
	assert_string_equal(refused(2, long_only_with_value, buf),
	                    "--keep-open=1");
	assert_string_equal(refused(2, short_alone, buf), "-x");
	assert_string_equal(refused(2, short_in_cluster, buf), "-x");
	assert_string_equal(refused(5, after_good, buf), "--nope");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_names_what_was_typed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
