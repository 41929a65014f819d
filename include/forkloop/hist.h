/*
 * hist.h - latency histogram with log-linear buckets: exact below 128 ns,
 * then 64 linear buckets per power of two, so any value reads back within
 * 1/128 (0.8%) of what was recorded, over the whole 64-bit range.
 */
#ifndef FORKLOOP_HIST_H
#define FORKLOOP_HIST_H

#include <stdint.h>

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

#endif
