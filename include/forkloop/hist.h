/*
 * hist.h - latency histogram with log-linear buckets: exact below 128 ns,
 * then 64 linear buckets per power of two, so any value reads back within
 * 1/128 (0.8%) of what was recorded, over the whole 64-bit range.
 */
#ifndef FORKLOOP_HIST_H
#define FORKLOOP_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS) /* buckets per power of two */
#define HIST_EXACT    (2u * HIST_SUB)       /* values below are exact */
#define HIST_BUCKETS  (HIST_EXACT + (64u - HIST_SUB_BITS - 1u) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t min;
	uint64_t max;
	uint64_t sum; /* wraps after 584 years of summed nanoseconds */
	uint64_t buckets[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
/*
 * Record n values at once: first + floor(k x step) for k = 0 .. n-1, as n
 * calls to hist_record would (the same buckets, count, min and max; the
 * sum without the rounding, so up to one unit per value more), in time proportional to the buckets
 * they span, not to n. step >= 0.
 */
void hist_record_series(struct hist *h, uint64_t first, double step,
                        uint64_t n);
/*
 * Add every value recorded in src to dst, as if each had been recorded in
 * dst too: bucket counts, count and sum added, min and max the lower and
 * higher of the two. The result is exact, not an estimate: dst's
 * percentiles afterwards are those of one histogram of both's values
 * (never an average of percentiles). Both must hold the same unit (the
 * bench records nanoseconds). An empty src leaves dst as it was; src may
 * be dst (every value then counts twice). Cannot fail; returns nothing.
 */
void hist_merge(struct hist *dst, const struct hist *src);

/* Bucket index of v, and the lowest and highest value of a bucket. */
unsigned hist_bucket(uint64_t v);
uint64_t hist_bucket_low(unsigned b);
uint64_t hist_bucket_high(unsigned b);

/*
 * The value below which a fraction p (0..1) of the recorded values lie: the
 * middle of its bucket, clamped to the recorded min and max. 0 if empty.
 */
uint64_t hist_quantile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

/* Rows per halving of the distance to 100% in hist_write_hgrm. */
#define HIST_HGRM_TICKS    5
/* Decimals of a value in hist_write_hgrm: 1 ns in milliseconds. */
#define HIST_HGRM_DECIMALS 6

/*
 * Write h to f as HdrHistogram's percentile distribution text, the ".hgrm"
 * layout of its outputPercentileDistribution (AbstractHistogram.java, the
 * same as wrk2's detailed percentile spectrum), which HdrHistogram's plotter
 * (plotFiles.html) reads:
 *
 *          Value     Percentile TotalCount 1/(1-Percentile)
 *
 *       0.052000 0.000000000000          1           1.00
 *       ...
 *       4.288000 1.000000000000      10000
 *   #[Mean    =     0.101452, StdDeviation   =     0.204220]
 *   #[Max     =     4.288000, Total count    =        10000]
 *   #[Buckets =           58, SubBuckets     =          128]
 *
 * The percentiles are those HdrHistogram's PercentileIterator steps through
 * with HIST_HGRM_TICKS ticks per half-distance (0, 10%, ... 50%, 55%, ...
 * 75%, 77.5%, ...), each row at the first bucket whose cumulative count
 * reaches it; the last row is 100%, without the 1/(1-Percentile) column.
 * A row's value is what hist_quantile gives for its bucket (the bucket's
 * middle, within min and max): h->min at 0%, h->max at 100%. Values and the
 * mean, standard deviation (of each value taken as its bucket's) and max of
 * the footer are h's units divided by scale (> 0; 1e6 turns nanoseconds into
 * milliseconds), with HIST_HGRM_DECIMALS decimals. Buckets and SubBuckets are
 * this layout in HdrHistogram's terms: 128 exact values, then 64 per power
 * of two. An empty h writes the header and the footer, no rows.
 *
 * Returns 0, or -1 when a write to f failed (ferror(f) is set, errno says
 * why); f stays open either way.
 */
int hist_write_hgrm(FILE *f, const struct hist *h, double scale);

#endif
