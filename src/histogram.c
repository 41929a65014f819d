/*
 * histogram.c - log-linear latency histogram. A value v >= 128 falls in the
 * bucket given by its highest set bit and the next six bits, so a bucket is
 * at most 1/64 of its lower edge wide and its middle is within 1/128 of any
 * value in it.
 */
#include <math.h>
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

uint64_t hist_quantile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0, v;
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
	v = hist_bucket_mid(i);
	if (v < h->min)
		v = h->min;
	if (v > h->max)
		v = h->max;
	return v;
}

double hist_mean(const struct hist *h)
{
	if (h->count == 0)
		return 0;
	return (double)h->sum / (double)h->count;
}
