/*
 * test_histogram.c - the histogram's error bound, its percentiles on
 * known distributions, and merging, which forkloop-bench --threads relies
 * on to report one exact histogram.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/hist.h"

#define US  1000ull
#define SEC 1000000000ull

static struct hist *new_hist(void)
{
	struct hist *h = malloc(sizeof *h);

	assert_non_null(h);
	hist_init(h);
	return h;
}

static void assert_within(uint64_t got, uint64_t want, double rel)
{
	double d = (double)got - (double)want;

	if (d < 0)
		d = -d;
	if (d > rel * (double)want)
		fail_msg("got %llu, want %llu within %.3f%%",
		         (unsigned long long)got, (unsigned long long)want,
		         rel * 100);
}

/* Every bucket is contiguous with the next, and its middle is close. */
static void test_buckets_tile_the_range(void **state)
{
	unsigned b;

	(void)state;
	assert_int_equal(hist_bucket_low(0), 0);
	for (b = 0; b + 1 < HIST_BUCKETS; b++) {
		assert_true(hist_bucket_high(b) >= hist_bucket_low(b));
		assert_int_equal(hist_bucket_high(b) + 1,
		                 hist_bucket_low(b + 1));
		assert_int_equal(hist_bucket(hist_bucket_low(b)), b);
		assert_int_equal(hist_bucket(hist_bucket_high(b)), b);
	}
	assert_int_equal(hist_bucket(UINT64_MAX), HIST_BUCKETS - 1);
	assert_true(hist_bucket_high(HIST_BUCKETS - 1) == UINT64_MAX);
}

/* Any single value from 1 us to 60 s reads back within 1%. */
static void test_error_bound_1us_to_60s(void **state)
{
	struct hist *h = new_hist();
	uint64_t v;
	unsigned n = 0;

	(void)state;
	for (v = US; v <= 60 * SEC; v += v / 97 + 1) {
		uint64_t lo = v - v / 3, hi = v + v / 5;

		hist_init(h);
		hist_record(h, lo);
		hist_record(h, v);
		hist_record(h, hi);
		/* the middle value alone is the median */
		assert_within(hist_quantile(h, 0.5), v, 0.01);
		assert_true(hist_quantile(h, 0.5) >= lo);
		n++;
	}
	assert_true(n > 1000);
	free(h);
}

/* A bucket's middle is within 1/128 of every value in the bucket. */
static void test_bucket_width_bound(void **state)
{
	unsigned b;

	(void)state;
	for (b = hist_bucket(US); b <= hist_bucket(60 * SEC); b++) {
		uint64_t lo = hist_bucket_low(b), hi = hist_bucket_high(b);

		assert_true((double)(hi - lo + 1) / (double)lo <= 1.0 / 64);
	}
}

static void test_uniform_percentiles(void **state)
{
	struct hist *h = new_hist();
	uint64_t i;

	(void)state;
	for (i = 1; i <= 100000; i++)
		hist_record(h, i * US / 10); /* 0.1 us .. 10 ms */
	assert_int_equal(h->count, 100000);
	assert_within(hist_quantile(h, 0.5), 5000 * US, 0.01);
	assert_within(hist_quantile(h, 0.9), 9000 * US, 0.01);
	assert_within(hist_quantile(h, 0.99), 9900 * US, 0.01);
	assert_within(hist_quantile(h, 0.999), 9990 * US, 0.01);
	assert_int_equal(hist_quantile(h, 1.0), 10000 * US);
	assert_int_equal(h->max, 10000 * US);
	assert_int_equal(h->min, 100);
	assert_within((uint64_t)hist_mean(h), 5000 * US + 50, 0.0001);
	free(h);
}

/* 99% fast, 1% slow: p99 is still fast, p99.9 shows the slow tail. */
static void test_bimodal_tail(void **state)
{
	struct hist *h = new_hist();
	unsigned i;

	(void)state;
	for (i = 0; i < 9900; i++)
		hist_record(h, 50 * US);
	for (i = 0; i < 100; i++)
		hist_record(h, 2 * SEC);
	assert_within(hist_quantile(h, 0.5), 50 * US, 0.01);
	assert_within(hist_quantile(h, 0.99), 50 * US, 0.01);
	assert_within(hist_quantile(h, 0.999), 2 * SEC, 0.01);
	assert_int_equal(hist_quantile(h, 1.0), 2 * SEC);
	free(h);
}

/* Wide spread: 1,000 values from each of d .. 2d, d = 1 us, 10 us .. 10 s. */
static void test_decades(void **state)
{
	struct hist *h = new_hist();
	uint64_t d;
	unsigned i, k = 0;

	(void)state;
	for (d = US; d <= 10 * SEC; d *= 10, k++)
		for (i = 0; i < 1000; i++)
			hist_record(h, d + d * i / 1000);
	assert_int_equal(h->count, 1000ull * k);
	/* the median is the last value of the 4th group (1 ms .. 2 ms) */
	assert_within(hist_quantile(h, 0.5), 1999 * US, 0.01);
	assert_within(hist_quantile(h, 0.125), 2 * US - 1, 0.01);
	free(h);
}

static void test_empty_and_merge(void **state)
{
	struct hist *a = new_hist(), *b = new_hist();

	(void)state;
	assert_int_equal(hist_quantile(a, 0.5), 0);
	assert_true(hist_mean(a) == 0);
	hist_record(a, 10 * US);
	hist_record(b, 30 * US);
	hist_record(b, 20 * US);
	hist_merge(a, b);
	assert_int_equal(a->count, 3);
	assert_int_equal(a->min, 10 * US);
	assert_int_equal(a->max, 30 * US);
	assert_within(hist_quantile(a, 0.5), 20 * US, 0.01);
	free(a);
	free(b);
}

/* A series recorded at once matches its values recorded one by one. */
static void assert_series(uint64_t first, double step, uint64_t n)
{
	static struct hist one, bulk;
	uint64_t k, sum = 0;
	unsigned i;

	hist_init(&one);
	hist_init(&bulk);
	for (k = 0; k < n; k++) {
		uint64_t v = first + (uint64_t)((double)k * step);

		hist_record(&one, v);
		sum += v;
	}
	hist_record_series(&bulk, first, step, n);
	assert_int_equal(bulk.count, one.count);
	assert_int_equal(bulk.min, one.min);
	assert_int_equal(bulk.max, one.max);
	for (i = 0; i < HIST_BUCKETS; i++)
		if (bulk.buckets[i] != one.buckets[i])
			fail_msg("first %llu step %f n %llu: bucket %u holds "
			         "%llu, not %llu",
			         (unsigned long long)first, step,
			         (unsigned long long)n, i,
			         (unsigned long long)bulk.buckets[i],
			         (unsigned long long)one.buckets[i]);
	/* the sum drops each value's rounding: at most one unit each */
	assert_true(bulk.sum >= sum && bulk.sum <= sum + n);
}

static void test_series(void **state)
{
	(void)state;
	assert_series(0, 1.0, 1000);
	assert_series(5, 0.0, 77);
	assert_series(100, 333.333333, 300000); /* 3,000,000 a second */
	assert_series(1000000, 1e6, 2001);      /* 1,000 a second for 2 s */
	assert_series(12345, 7.5, 100000);
	assert_series(1, 1e9, 40);
	assert_series(999, 2.0, 1);
	assert_series(3, 1.0, 0);
}

/* Every field, so every percentile and the mean, is the same. */
static void assert_same_hist(const struct hist *got, const struct hist *want)
{
	unsigned i;

	assert_int_equal(got->count, want->count);
	assert_int_equal(got->min, want->min);
	assert_int_equal(got->max, want->max);
	assert_int_equal(got->sum, want->sum);
	for (i = 0; i < HIST_BUCKETS; i++)
		if (got->buckets[i] != want->buckets[i])
			fail_msg("bucket %u holds %llu, not %llu", i,
			         (unsigned long long)got->buckets[i],
			         (unsigned long long)want->buckets[i]);
	for (i = 0; i <= 1000; i++)
		assert_int_equal(hist_quantile(got, i / 1000.0),
		                 hist_quantile(want, i / 1000.0));
	assert_true(hist_mean(got) == hist_mean(want));
}

static uint64_t lcg(uint64_t *x)
{
	*x = *x * 6364136223846793005ull + 1442695040888963407ull;
	return *x >> 33;
}

/*
 * Five threads' histograms, one of them empty and one with an unsent
 * series, merged: the same histogram as every value recorded in one.
 * Percentiles of the merge are those of all the values, which averaging
 * the parts' percentiles would not give (their p99s here differ by 1000x).
 */
static void test_merge_equals_one_histogram(void **state)
{
	struct hist *part[5], *all = new_hist(), *merged = new_hist();
	uint64_t x = 42, v;
	unsigned i, k;

	(void)state;
	for (k = 0; k < 5; k++)
		part[k] = new_hist();
	for (i = 0; i < 20000; i++) { /* fast: 20 .. 85 us */
		v = 20 * US + lcg(&x) % (65 * US);
		hist_record(part[0], v);
		hist_record(all, v);
	}
	for (i = 0; i < 300; i++) { /* slow: 10 .. 50 ms */
		v = 10000 * US + lcg(&x) % (40000 * US);
		hist_record(part[1], v);
		hist_record(all, v);
	}
	/* part[2] stays empty: a thread that measured nothing */
	hist_record_series(part[3], 2 * SEC, 1e6 / 3, 5000);
	hist_record_series(all, 2 * SEC, 1e6 / 3, 5000);
	for (i = 0; i < 1000; i++) { /* exact range and one huge value */
		hist_record(part[4], i);
		hist_record(all, i);
	}
	hist_record(part[4], UINT64_MAX / 4);
	hist_record(all, UINT64_MAX / 4);
	assert_true(hist_quantile(part[0], 0.99) * 100 <
	            hist_quantile(part[1], 0.99));
	for (k = 0; k < 5; k++)
		hist_merge(merged, part[k]);
	assert_same_hist(merged, all);
	assert_int_equal(merged->count, 20000 + 300 + 5000 + 1001);
	assert_int_equal(merged->min, 0);
	assert_int_equal(merged->max, UINT64_MAX / 4);
	/* the order of the parts does not matter */
	hist_init(merged);
	for (k = 5; k-- > 0;)
		hist_merge(merged, part[k]);
	assert_same_hist(merged, all);
	for (k = 0; k < 5; k++)
		free(part[k]);
	free(all);
	free(merged);
}

/* Empty into empty stays empty; anything into empty is a copy of it. */
static void test_merge_empty(void **state)
{
	struct hist *a = new_hist(), *b = new_hist(), *empty = new_hist();

	(void)state;
	hist_merge(a, b);
	assert_same_hist(a, empty);
	assert_int_equal(a->count, 0);
	assert_int_equal(a->min, UINT64_MAX);
	assert_int_equal(hist_quantile(a, 0.5), 0);
	hist_record_series(b, 7 * US, 1000.0, 77);
	hist_merge(a, b);
	assert_same_hist(a, b);
	hist_merge(a, empty);
	assert_same_hist(a, b);
	assert_int_equal(memcmp(a, b, sizeof *a), 0);
	free(a);
	free(b);
	free(empty);
}

/* src may be dst: every value then counts twice. */
static void test_merge_into_itself(void **state)
{
	struct hist *a = new_hist(), *twice = new_hist();
	unsigned i;

	(void)state;
	for (i = 1; i <= 500; i++) {
		hist_record(a, i * US);
		hist_record(twice, i * US);
		hist_record(twice, i * US);
	}
	hist_merge(a, a);
	assert_same_hist(a, twice);
	free(a);
	free(twice);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_buckets_tile_the_range),
	        cmocka_unit_test(test_error_bound_1us_to_60s),
	        cmocka_unit_test(test_bucket_width_bound),
	        cmocka_unit_test(test_uniform_percentiles),
	        cmocka_unit_test(test_bimodal_tail),
	        cmocka_unit_test(test_decades),
	        cmocka_unit_test(test_empty_and_merge),
	        cmocka_unit_test(test_series),
	        cmocka_unit_test(test_merge_equals_one_histogram),
	        cmocka_unit_test(test_merge_empty),
	        cmocka_unit_test(test_merge_into_itself),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
