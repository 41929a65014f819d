/*
 * bench.h - forkloop-bench, the echo load generator: options, the run, and
 * its report.
 */
#ifndef FORKLOOP_BENCH_H
#define FORKLOOP_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include "forkloop/addr.h"
#include "forkloop/hist.h"
#include "forkloop/opts.h"

#define BENCH_DEFAULT_CONNS    50
#define BENCH_DEFAULT_SIZE     64
#define BENCH_DEFAULT_DURATION 10.0
#define BENCH_MAX_SIZE         (16u * 1024 * 1024)
#define BENCH_MAX_PIPELINE     4096
/* Descriptors beyond one per connection: stdio, the event base, slack. */
#define BENCH_SPARE_FDS 32

struct bench_opts {
	struct addr target;
	uint64_t conns;
	uint64_t size;         /* bytes per message */
	double duration;       /* seconds measured; 0: until -n is reached */
	uint64_t messages;     /* -n; 0: until --duration */
	uint64_t pipeline;     /* messages in flight per connection */
	double warmup;         /* seconds run before measuring */
	uint64_t connect_rate; /* connections opened per second; 0: at once */
	double rate;           /* open loop, messages per second; 0: closed */
	int churn;             /* one message per connection */
	int json;
};

struct bench_errors {
	uint64_t connect;  /* connect failed after the first success */
	uint64_t mismatch; /* an echoed byte differs, or too many came back */
	uint64_t reset;    /* read or write failed: reset, broken pipe */
	uint64_t closed;   /* the server closed: a short echo */
};

struct bench_result {
	uint64_t messages; /* echoes completed in the measured window */
	uint64_t bytes;    /* their payload bytes */
	double elapsed;    /* seconds in the measured window */
	uint64_t errors;   /* sum of err */
	struct bench_errors err;
	uint64_t connects;   /* connections established */
	double connect_ms;   /* mean time for one connect to complete */
	double setup_ms;     /* until all connections were up (not --churn) */
	int interrupted;     /* stopped early by SIGINT or SIGTERM */
	struct hist latency; /* nanoseconds */
};

/*
 * Parse forkloop-bench's command line. Help and version go to out, errors
 * and usage to errout.
 */
enum opts_result bench_opts_parse(int argc, char **argv, struct bench_opts *o,
                                  FILE *out, FILE *errout);

/*
 * Make room for conns connections: raise the soft RLIMIT_NOFILE up to the
 * hard limit if needed. Returns 0, or -1 after saying what ulimit -n is
 * needed.
 */
int bench_nofile(uint64_t conns);

/*
 * Run the load. Returns 0 when the run happened (r filled in, errors
 * counted there), -1 after reporting why it could not run (bad address,
 * nothing listening, out of memory).
 */
int bench_run(const struct bench_opts *o, struct bench_result *r);

/* One table for people, or one JSON object with a trailing newline. */
void bench_report_text(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r);
void bench_report_json(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r);

#endif
