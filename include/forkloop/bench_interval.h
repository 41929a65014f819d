/*
 * bench_interval.h - forkloop-bench's live results (-i, --json-stream): what
 * one worker counted in each interval of the measured window, and the main
 * thread's side, which adds the workers' figures for an interval up and
 * prints it once every worker has delivered it.
 *
 * The measured window starts at the load's start plus --warmup, an instant
 * every worker shares; interval k runs from k x -i to (k + 1) x -i after it,
 * and the last from its start to the end of the run, so it may be shorter.
 * A worker keeps its counts and latency histograms cumulative, as for the
 * report, and at each boundary cuts an interval off them: the difference
 * from the last boundary, bucket by bucket, which costs a message nothing.
 *
 * An interval's latency counts the echoes completed in it and, as lower
 * bounds, every message due and unanswered at its end with its age then
 * (bench.h says why), so an interval in which the server answered nothing
 * shows no messages and the stall in its max. Those lower bounds enter that
 * interval's histograms only, not the run's; its messages, bytes and errors
 * are what completed in it, so the intervals add up to the report's totals
 * exactly.
 */
#ifndef FORKLOOP_BENCH_INTERVAL_H
#define FORKLOOP_BENCH_INTERVAL_H

#include <stdint.h>
#include <stdio.h>

#include "forkloop/bench.h"
#include "forkloop/hist.h"

/* One worker's figures for one interval, or the workers' sum. */
struct bench_ival {
	uint64_t index;    /* the interval's k */
	int last;          /* the worker's last: to the end of its run */
	uint64_t t0;       /* CLOCK_MONOTONIC ns the window starts at (the
	                      load's start + --warmup); 0 if the worker's load
	                      never started */
	uint64_t t_end;    /* last: ns the worker's run ended at */
	uint64_t messages; /* echoes completed in it */
	uint64_t bytes;    /* their payload bytes */
	uint64_t errors;   /* errors in it: the first interval's include those
	                      before the window, as the report's total does */
	struct bench_errors err;
	uint64_t conns_open; /* connections open at its end */
	struct hist latency; /* ns from due: its echoes, and the ages of the
	                        messages owed at its end */
	struct hist latency_uncorrected; /* ns from the send: its echoes, and
	                                    the ages of those sent and owed */
	struct bench_ival *next;         /* the main thread's queue */
};

/* A worker's cumulative figures at its latest boundary. */
struct bench_ival_mark;

/* A mark at zero, for a worker that has counted nothing; NULL if out of
 * memory. */
struct bench_ival_mark *bench_ival_mark_new(void);
void bench_ival_mark_free(struct bench_ival_mark *m);

/*
 * Cut an interval off a worker's cumulative figures: r's counts, and its
 * latency from due, lat_due + more_due, and from the send, lat_sent +
 * more_sent (more_ may be NULL: before bench_finish a worker keeps those
 * two apart, after it they are r's two histograms). Returns what was
 * counted since m, with index, t0, t_end, last and conns_open zero for the
 * caller to fill in, and moves m to now; NULL if out of memory (m is left
 * as it was).
 *
 * An interval's min and max come from its buckets, clamped to the
 * cumulative ones: exact when the interval holds the lowest (or highest)
 * value so far, else the edge of its lowest (highest) bucket, within 1/64.
 */
struct bench_ival *
bench_ival_take(struct bench_ival_mark *m, const struct bench_result *r,
                const struct hist *lat_due, const struct hist *more_due,
                const struct hist *lat_sent, const struct hist *more_sent);

/*
 * The instant (CLOCK_MONOTONIC ns) the measured window of a run whose load
 * started at t_start starts at: t_start + --warmup, as every worker counts
 * it.
 */
uint64_t bench_ival_start(const struct bench_opts *o, uint64_t t_start);

/*
 * The instant (CLOCK_MONOTONIC ns) interval k of a run whose load started
 * at t_start ends at, or 0 if k is the last, which runs to the end of the
 * run: -d's end, when the boundary would fall within 1% of -i of it.
 */
uint64_t bench_ival_boundary(const struct bench_opts *o, uint64_t t_start,
                             uint64_t k);

/* The main thread's side: the workers' intervals, added up and printed. */
struct bench_ivals;

/*
 * For o's run on workers workers, printing to f: lines for people, or with
 * o->json_stream one JSON object per line; each line is flushed. NULL if
 * out of memory.
 */
struct bench_ivals *bench_ivals_new(const struct bench_opts *o,
                                    uint64_t workers, FILE *f);
void bench_ivals_free(struct bench_ivals *s);

/*
 * Worker w's next interval, which s now owns (they come in order, 0 up to
 * its last). Prints every interval that every worker has delivered, or
 * ended before, in order.
 */
void bench_ivals_put(struct bench_ivals *s, uint64_t w, struct bench_ival *iv);

/*
 * Every worker is done: print what is left, whoever delivered it. Nothing
 * is printed for a run that ended before its window started.
 */
void bench_ivals_end(struct bench_ivals *s);

#endif
