/*
 * histogram.c - log-linear latency histogram. A value v >= 128 falls in the
 * bucket given by its highest set bit and the next six bits, so a bucket is
 * at most 1/64 of its lower edge wide and its middle is within 1/128 of any
 * value in it. It writes itself as HdrHistogram's .hgrm text too: this
 * layout is HdrHistogram's own with 128 sub-buckets, so its rows are the
 * ones HdrHistogram would write for the same buckets.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forkloop/hist.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof *h);
	h->min = UINT64_MAX;
}

unsigned hist_bucket(uint64_t v)
{
	unsigned e, shift;

	if (v < HIST_EXACT)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	shift = e - HIST_SUB_BITS;
	return HIST_EXACT + (e - HIST_SUB_BITS - 1u) * HIST_SUB +
	       (unsigned)((v >> shift) - HIST_SUB);
}

uint64_t hist_bucket_low(unsigned b)
{
	unsigned e, k;

	if (b < HIST_EXACT)
		return b;
	e = (b - HIST_EXACT) / HIST_SUB + HIST_SUB_BITS + 1u;
	k = (b - HIST_EXACT) % HIST_SUB;
	return (uint64_t)(HIST_SUB + k) << (e - HIST_SUB_BITS);
}

uint64_t hist_bucket_high(unsigned b)
{
	unsigned e;

	if (b < HIST_EXACT)
		return b;
	e = (b - HIST_EXACT) / HIST_SUB + HIST_SUB_BITS + 1u;
	return hist_bucket_low(b) + ((uint64_t)1 << (e - HIST_SUB_BITS)) - 1u;
}

void hist_record(struct hist *h, uint64_t v)
{
	h->buckets[hist_bucket(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

static uint64_t series_at(uint64_t first, double step, uint64_t k)
{
	return first + (uint64_t)((double)k * step);
}

void hist_record_series(struct hist *h, uint64_t first, double step,
                        uint64_t n)
{
	uint64_t k, last, hi, v;
	unsigned b;

	if (n == 0)
		return;
	if (first < h->min)
		h->min = first;
	v = series_at(first, step, n - 1);
	if (v > h->max)
		h->max = v;
	h->count += n;
	/* The sum of the values before rounding: at most n more. */
	h->sum += n * first + (uint64_t)(step * (double)(n - 1) *
	                                 (double)n / 2.0);
	/* A bucket at a time: values k..last fall in the bucket of the k-th;
	 * last comes from a division, then agrees with series_at's rounding. */
	for (k = 0; k < n; k = last + 1) {
		b = hist_bucket(series_at(first, step, k));
		hi = hist_bucket_high(b);
		if (step <= 0 || (double)(hi - first) / step >= (double)(n - 1))
			last = n - 1;
		else
			last = (uint64_t)((double)(hi - first) / step);
		if (last < k)
			last = k;
		while (last > k && series_at(first, step, last) > hi)
			last--;
		while (last + 1 < n && series_at(first, step, last + 1) <= hi)
			last++;
		h->buckets[b] += last - k + 1;
	}
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	unsigned i;

	for (i = 0; i < HIST_BUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

static uint64_t hist_bucket_mid(unsigned b)
{
	uint64_t lo = hist_bucket_low(b), hi = hist_bucket_high(b);

	return lo + (hi - lo + 1) / 2;
}

/* What bucket b stands for: its middle, within what was recorded. */
static uint64_t hist_bucket_value(const struct hist *h, unsigned b)
{
	uint64_t v = hist_bucket_mid(b);

	if (v < h->min)
		v = h->min;
	if (v > h->max)
		v = h->max;
	return v;
}

uint64_t hist_quantile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;
	unsigned i;

	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 1)
		return h->max;
	rank = (uint64_t)ceil(p * (double)h->count);
	if (rank == 0)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank)
			break;
	}
	return hist_bucket_value(h, i);
}

double hist_mean(const struct hist *h)
{
	if (h->count == 0)
		return 0;
	return (double)h->sum / (double)h->count;
}

/* Of every value taken as its bucket's, around the exact mean. */
static double hist_stddev(const struct hist *h)
{
	double mean = hist_mean(h), d, total = 0;
	unsigned i;

	if (h->count == 0)
		return 0;
	for (i = 0; i < HIST_BUCKETS; i++) {
		if (h->buckets[i] == 0)
			continue;
		d = (double)hist_bucket_value(h, i) - mean;
		total += d * d * (double)h->buckets[i];
	}
	return sqrt(total / (double)h->count);
}

/*
 * The percentile (0..100) after level, as HdrHistogram's PercentileIterator
 * steps (incrementIterationLevel): HIST_HGRM_TICKS steps for each halving of
 * the distance to 100, computed the same way, in doubles, so that the rows
 * fall where its own would.
 */
static double hgrm_next_level(double level)
{
	int64_t halvings = (int64_t)(log(100.0 / (100.0 - level)) / log(2));
	int64_t ticks = HIST_HGRM_TICKS * ((int64_t)1 << (halvings + 1));

	return level + 100.0 / (double)ticks;
}

static void hgrm_row(FILE *f, uint64_t v, double level, uint64_t total,
                     double scale)
{
	fprintf(f, "%12.*f %2.12f %10" PRIu64 " %14.2f\n", HIST_HGRM_DECIMALS,
	        (double)v / scale, level / 100.0, total,
	        1.0 / (1.0 - level / 100.0));
}

int hist_write_hgrm(FILE *f, const struct hist *h, double scale)
{
	double level = 0, next;
	uint64_t total = 0;
	unsigned b;

	fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile",
	        "TotalCount", "1/(1-Percentile)");
	for (b = 0; b < HIST_BUCKETS && total < h->count; b++) {
		if (h->buckets[b] == 0)
			continue;
		total += h->buckets[b];
		while (100.0 * (double)total / (double)h->count >= level) {
			hgrm_row(f,
			         level == 0 ? h->min : hist_bucket_value(h, b),
			         level, total, scale);
			if (total == h->count) {
				fprintf(f, "%12.*f %2.12f %10" PRIu64 "\n",
				        HIST_HGRM_DECIMALS,
				        (double)h->max / scale, 1.0, total);
				break;
			}
			/* Within an ulp of 100%, a step can round to
			 * nothing: go on to the next bucket, never loop. */
			if ((next = hgrm_next_level(level)) <= level)
				break;
			level = next;
		}
	}
	fprintf(f, "#[Mean    = %12.*f, StdDeviation   = %12.*f]\n",
	        HIST_HGRM_DECIMALS, hist_mean(h) / scale, HIST_HGRM_DECIMALS,
	        hist_stddev(h) / scale);
	fprintf(f, "#[Max     = %12.*f, Total count    = %12" PRIu64 "]\n",
	        HIST_HGRM_DECIMALS, (double)h->max / scale, h->count);
	fprintf(f, "#[Buckets = %12u, SubBuckets     = %12u]\n",
	        HIST_BUCKETS / HIST_SUB - 1, HIST_EXACT);
	return ferror(f) ? -1 : 0;
}
