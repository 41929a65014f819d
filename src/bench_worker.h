/*
 * bench_worker.h - one event loop's share of forkloop-bench's load
 * (bench_worker.c, and the files bench_engine.h names), as the run
 * (bench_run.c) drives it. A worker knows nothing of threads: it tells the
 * run what it reached through a callback, and the run calls it back to
 * start or stop, from the worker's own thread.
 */
#ifndef FORKLOOP_BENCH_WORKER_H
#define FORKLOOP_BENCH_WORKER_H

#include <stdint.h>

#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "forkloop/bench.h"
#include "forkloop/bench_interval.h"

/* The longest reason a worker could not run. */
#define BENCH_WHY_LEN 512

struct bench;

/* What a worker tells the run; its progress goes with each. */
enum bench_note {
	BENCH_NOTE_OPENED,   /* every connect(2) of its share was started */
	BENCH_NOTE_READY,    /* every connection of its share is up or failed */
	BENCH_NOTE_PROGRESS, /* every WATCH_S when asked for: progress line */
	BENCH_NOTE_DONE,     /* its loop ended; it will not run again */
	BENCH_NOTE_INTERVAL, /* -i: an interval's figures, in ival; the last
	                        comes after DONE */
};

/* Called in the worker's thread, from its loop or from bench_work. */
typedef void bench_note_fn(struct bench *b, enum bench_note what, void *arg);

/* A worker's figures so far. */
struct bench_progress {
	uint64_t up;       /* connections up (not --churn) */
	uint64_t messages; /* echoes counted */
	uint64_t errors;
	uint64_t t_measure; /* CLOCK_MONOTONIC ns measuring began at */
	uint64_t t_end;     /* and ended at, once it has */
	int started, measuring, stalled, fatal;
	struct bench_ival *ival; /* BENCH_NOTE_INTERVAL: the interval
	                            (bench_interval.h), now the receiver's to
	                            free; else NULL */
};

/*
 * The table every connection's byte stream is read from, made once and
 * shared, read-only, by every worker. NULL when out of memory.
 */
unsigned char *bench_pattern_new(void);

/*
 * Worker index of o->threads, with its own event base and result: made in
 * the calling thread, then driven by one thread only. ai (the target's
 * addresses) and pat are shared and only read; they must outlive it. It
 * posts a BENCH_NOTE_PROGRESS every WATCH_S if progress is set. With
 * --tls, tls is the client SSL_CTX every worker makes its SSL objects from
 * (SSL_new on one SSL_CTX from several threads is safe, and none changes
 * it); each worker keeps its own SSL objects and its own session to
 * resume. NULL after logging why (out of memory).
 */
struct bench *bench_new(const struct bench_opts *o, uint64_t index,
                        const struct evutil_addrinfo *ai,
                        const unsigned char *pat, SSL_CTX *tls,
                        bench_note_fn *note, void *arg, int progress);
void bench_free(struct bench *b);
struct event_base *bench_base(struct bench *b);

/*
 * Open the share's connections; t_open is the run's start, which setup_ms
 * and load_start_ms count from. Notes OPENED once every connect(2) has
 * been started, READY once each is up or failed (not with --churn).
 */
void bench_open(struct bench *b, uint64_t t_open);

/*
 * Start the load at t_start, the same instant for every worker: the warmup
 * ends and the run ends (-d) at instants counted from it, and the open
 * loop's schedule runs from it. Connections not up now are late. Does
 * nothing if already started or stopped.
 */
void bench_start(struct bench *b, uint64_t t_start);

/* Stop the loop; a signal makes the result interrupted. */
void bench_halt(struct bench *b, int interrupted);

/*
 * Run the worker's loop until it stops (its share of -n answered, -d
 * reached, bench_halt, no connection left, a stall or a fatal error), note
 * DONE, then count what is still unanswered into its result and, with -i,
 * note its last interval, which runs to its end.
 */
void bench_work(struct bench *b);

void bench_progress(const struct bench *b, struct bench_progress *p);
/* After bench_work: what it measured, and why it could not run (or NULL). */
const struct bench_result *bench_result_of(const struct bench *b);
const char *bench_why(const struct bench *b);

#endif
