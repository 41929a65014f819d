/*
 * fuzz_hist.c - histogram.c on any values: the input is a list of
 * records, each a series (hist_record_series) or one value (hist_record),
 * into one of two histograms. Properties: the count is the number of
 * values recorded; min and max bound every percentile, which never falls
 * as p rises; the mean lies within min and max; merging is commutative,
 * bucket for bucket, and adds the counts.
 */
#include <math.h>

#include "forkloop/hist.h"

#include "fuzz.h"

/* Values recorded per series at most, so that a run stays short. */
#define FUZZ_SERIES_MAX 100000

static struct hist h[2], ab, ba;

static uint64_t take_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void check_hist(const struct hist *x, uint64_t count)
{
	uint64_t sum = 0, prev = 0;
	double mean;

	FUZZ_CHECK(x->count == count);
	for (unsigned b = 0; b < HIST_BUCKETS; b++)
		sum += x->buckets[b];
	FUZZ_CHECK(sum == count);
	if (count == 0) {
		FUZZ_CHECK(hist_quantile(x, 0.5) == 0);
		return;
	}
	FUZZ_CHECK(x->min <= x->max);
	FUZZ_CHECK(x->buckets[hist_bucket(x->min)] > 0);
	FUZZ_CHECK(x->buckets[hist_bucket(x->max)] > 0);
	for (int i = 0; i <= 20; i++) {
		uint64_t q = hist_quantile(x, i / 20.0);

		FUZZ_CHECK(q >= x->min && q <= x->max);
		FUZZ_CHECK(q >= prev);
		prev = q;
	}
	mean = hist_mean(x);
	FUZZ_CHECK(isfinite(mean) && mean >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t count[2] = {0, 0};
	size_t i;

	hist_init(&h[0]);
	hist_init(&h[1]);
	for (i = 0; i + 11 <= size; i += 11) {
		const uint8_t *p = data + i;
		int which = p[0] & 1;
		/* Values of every magnitude: a shift picks the scale. */
		uint64_t v = take_u64(p + 1) >> (p[0] >> 2 & 63);

		if (p[0] & 2) {
			uint64_t n =
			        (uint64_t)(p[9] << 8 | p[10]) % FUZZ_SERIES_MAX;
			double step = (double)(p[9] % 64) *
			              (double)(p[10] + 1) /
			              (double)(1 + (p[0] >> 4));

			/* The series must stay within 64 bits. */
			if (step * (double)n + (double)v >= 1.8e19)
				continue;
			hist_record_series(&h[which], v, step, n);
			count[which] += n;
		} else {
			hist_record(&h[which], v);
			count[which]++;
		}
	}
	check_hist(&h[0], count[0]);
	check_hist(&h[1], count[1]);
	ab = h[0];
	hist_merge(&ab, &h[1]);
	ba = h[1];
	hist_merge(&ba, &h[0]);
	FUZZ_CHECK(memcmp(ab.buckets, ba.buckets, sizeof ab.buckets) == 0);
	FUZZ_CHECK(ab.count == ba.count && ab.sum == ba.sum);
	FUZZ_CHECK(ab.min == ba.min && ab.max == ba.max);
	check_hist(&ab, count[0] + count[1]);
	return 0;
}
