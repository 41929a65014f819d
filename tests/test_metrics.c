/*
 * test_metrics.c - the Prometheus text format as metrics.c writes it, the
 * duration histogram's buckets, and the service manager's helpers of
 * notify.c: the watchdog's variables read by hand and the rate shown in
 * STATUS=.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "forkloop/metrics.h"
#include "forkloop/notify.h"

/* What out holds, as a string the caller frees. */
static char *text(struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	char *s = malloc(n + 1);

	assert_non_null(s);
	evbuffer_remove(out, s, n);
	s[n] = '\0';
	return s;
}

static void test_bucket_bounds(void **state)
{
	(void)state;
	assert_int_equal(metrics_hist_index(0), 0);
	assert_int_equal(metrics_hist_index(0.001), 0); /* le: inclusive */
	assert_int_equal(metrics_hist_index(0.0011), 1);
	assert_int_equal(metrics_hist_index(1), 6);
	assert_int_equal(metrics_hist_index(3600), METRICS_NBUCKETS - 1);
	assert_int_equal(metrics_hist_index(3600.5), METRICS_NBUCKETS);
	for (size_t i = 1; i < METRICS_NBUCKETS; i++)
		assert_true(metrics_bounds[i - 1] < metrics_bounds[i]);
}

static void test_record_and_add(void **state)
{
	struct metrics_hist a, b;

	(void)state;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	metrics_hist_record(&a, 0.0004);
	metrics_hist_record(&a, 2.5);
	metrics_hist_record(&b, 7200);
	metrics_hist_record(&b, -1); /* a clock step: counted as 0 */
	metrics_hist_add(&a, &b);
	assert_int_equal(metrics_hist_total(&a), 4);
	assert_int_equal(a.count[0], 2);
	assert_int_equal(a.count[7], 1);
	assert_int_equal(a.count[METRICS_NBUCKETS], 1);
	assert_int_equal(a.sum_us, 400 + 2500000 + UINT64_C(7200000000));
}

static void test_family_and_values(void **state)
{
	struct evbuffer *out = evbuffer_new();
	char *s;

	(void)state;
	metrics_family(out, "x_total", "counter", "Things.");
	metrics_value(out, "x_total", NULL, 7);
	metrics_value(out, "x_total", "reason=\"rate\"", UINT64_MAX);
	s = text(out);
	assert_string_equal(s,
	                    "# HELP x_total Things.\n"
	                    "# TYPE x_total counter\n"
	                    "x_total 7\n"
	                    "x_total{reason=\"rate\"} 18446744073709551615\n");
	free(s);
	evbuffer_free(out);
}

static void test_histogram_is_cumulative(void **state)
{
	struct evbuffer *out = evbuffer_new();
	struct metrics_hist h;
	char *s;

	(void)state;
	memset(&h, 0, sizeof h);
	metrics_hist_record(&h, 0.002);
	metrics_hist_record(&h, 0.003);
	metrics_hist_record(&h, 20);
	metrics_hist_record(&h, 5000);
	metrics_histogram(out, "d_seconds", "Durations.", &h);
	s = text(out);
	assert_non_null(strstr(s, "# TYPE d_seconds histogram\n"));
	assert_non_null(strstr(s, "d_seconds_bucket{le=\"0.001\"} 0\n"
	                          "d_seconds_bucket{le=\"0.005\"} 2\n"));
	assert_non_null(strstr(s, "d_seconds_bucket{le=\"10\"} 2\n"
	                          "d_seconds_bucket{le=\"30\"} 3\n"));
	assert_non_null(strstr(s, "d_seconds_bucket{le=\"3600\"} 3\n"
	                          "d_seconds_bucket{le=\"+Inf\"} 4\n"
	                          "d_seconds_sum 5020.005000\n"
	                          "d_seconds_count 4\n"));
	free(s);
	evbuffer_free(out);
}

static void test_watchdog_parse(void **state)
{
	uint64_t usec = 0;

	(void)state;
	assert_int_equal(notify_watchdog_parse(NULL, NULL, 42, &usec), 0);
	assert_int_equal(notify_watchdog_parse("400000", NULL, 42, &usec), 1);
	assert_int_equal(usec, 400000);
	usec = 0;
	assert_int_equal(notify_watchdog_parse("30000000", "42", 42, &usec), 1);
	assert_int_equal(usec, 30000000);
	/* Another process's watchdog: none of ours. */
	assert_int_equal(notify_watchdog_parse("400000", "43", 42, &usec), 0);
	assert_int_equal(notify_watchdog_parse("0", NULL, 42, &usec), -1);
	assert_int_equal(notify_watchdog_parse("", NULL, 42, &usec), -1);
	assert_int_equal(notify_watchdog_parse("1s", NULL, 42, &usec), -1);
	assert_int_equal(notify_watchdog_parse("-5", NULL, 42, &usec), -1);
	assert_int_equal(notify_watchdog_parse("400000", "x", 42, &usec), -1);
	assert_int_equal(notify_watchdog_parse("400000", "0", 42, &usec), -1);
}

static void test_bytes_rate(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(notify_bytes_rate(0, buf, sizeof buf), "0 B/s");
	assert_string_equal(notify_bytes_rate(512, buf, sizeof buf), "512 B/s");
	assert_string_equal(notify_bytes_rate(3200, buf, sizeof buf),
	                    "3.2 kB/s");
	assert_string_equal(notify_bytes_rate(3.2e6, buf, sizeof buf),
	                    "3.2 MB/s");
	assert_string_equal(notify_bytes_rate(1.5e9, buf, sizeof buf),
	                    "1.5 GB/s");
}

static void test_without_notify_socket(void **state)
{
	struct notify *n = (struct notify *)&n;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_new(&n, NULL, NULL, NULL, NULL), 0);
	assert_null(n);
	/* Every call takes the NULL it leaves. */
	notify_status(n, "%d connections", 3);
	notify_stopping(n, "draining: %d connections", 3);
	notify_ready(n);
	assert_int_equal(notify_watchdog_usec(n), 0);
	assert_true(notify_rate(n, 100) == 0);
	notify_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_bucket_bounds),
	        cmocka_unit_test(test_record_and_add),
	        cmocka_unit_test(test_family_and_values),
	        cmocka_unit_test(test_histogram_is_cumulative),
	        cmocka_unit_test(test_watchdog_parse),
	        cmocka_unit_test(test_bytes_rate),
	        cmocka_unit_test(test_without_notify_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
