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
#define BENCH_DEFAULT_SETUP_TIMEOUT 2.0
#define BENCH_DEFAULT_CONNECT_TIMEOUT 5.0
/* -i in seconds: --json-stream's without it, and the bounds. */
#define BENCH_DEFAULT_INTERVAL 1.0
#define BENCH_MIN_INTERVAL     0.01
#define BENCH_MAX_INTERVAL     3600.0
/* -n without -d: the run ends, as an error, after this long without an echo
 * while messages are owed. */
#define BENCH_STALL_TIMEOUT 10.0
#define BENCH_MAX_SIZE         (16u * 1024 * 1024)
#define BENCH_MAX_PIPELINE     4096
/* Descriptors beyond one per connection: stdio, the event base, slack. */
#define BENCH_SPARE_FDS 32
/* --threads at most; and each thread past the first needs a few more
 * descriptors: its event base, timer and command pipe. */
#define BENCH_MAX_THREADS 256
#define BENCH_THREAD_FDS  4
/* --source items (addresses or ranges) at most, over every --source. */
#define BENCH_MAX_SOURCE_ITEMS 256

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
	double interval;       /* -i: seconds per interval line, 0.01 to
	                          3600 (--json-stream alone: 1); 0: none */
	int json_stream;       /* --json-stream: intervals, then the --json
	                          object, as JSON lines */
	int strict;            /* a shortfall, an unsent message or a late
	                          connection makes the exit status 1 */
	double setup_timeout;  /* seconds after the last connect(2) is
	                          started that the load waits for the rest */
	double connect_timeout; /* seconds a connect(2) may take before it
	                           counts as failed (ETIMEDOUT) */
	uint64_t threads;      /* event loops, one per thread: 1 to
	                          BENCH_MAX_THREADS, at most conns and, with
	                          -n, at most messages ("auto" is resolved) */
	int tls;               /* --tls or a tls:// target */
	int tls_verify;        /* --tls-verify: check the server's certificate
	                          against tls_ca or the system store, and the
	                          target's host against it */
	int tls_resume;        /* --tls-resume: a new connection resumes the
	                          session the last one got (tickets) */
	const char *tls_ca;    /* --tls-ca FILE, or NULL */
	const char *tls_cert;  /* --tls-cert FILE: client certificate, or NULL */
	const char *tls_key;   /* --tls-key FILE, with tls_cert */
	const char *hist;      /* --hist FILE: latency as .hgrm, or NULL */
	/*
	 * --source: connection i of the run is bound to address i mod
	 * source_addrs of these ranges, in order, before its connect(2);
	 * every address of one family. nsources 0: no bind, the kernel
	 * picks the address.
	 */
	struct addr_range sources[BENCH_MAX_SOURCE_ITEMS];
	size_t nsources;       /* items in sources */
	uint64_t source_addrs; /* addresses in all of them */
};

/*
 * Thread i's share of a run of o->threads: each thread is a run of its own
 * with these in place of the options, and the shares add up to the options
 * exactly.
 */
struct bench_share {
	uint64_t conns;      /* o->conns / threads, the first o->conns % threads
	                        threads one more */
	uint64_t first_conn; /* the run's index of its first connection */
	uint64_t messages;   /* -n: one, plus (-n - threads) split in
	                        proportion to conns; 0 without -n */
	double rate;         /* --rate x conns / o->conns; 0: closed loop */
	double connect_rate; /* --connect-rate likewise; 0: all at once */
	uint64_t phase_ns;   /* open loop: its first message is due this long
	                        after the load starts, i / threads of its own
	                        interval, so the threads' messages interleave */
};

struct bench_errors {
	uint64_t connect;  /* connect failed after the first success */
	uint64_t mismatch; /* an echoed byte differs, or too many came back */
	uint64_t reset;    /* read or write failed: reset, broken pipe */
	uint64_t closed;   /* the server closed: a short echo */
	uint64_t handshake; /* --tls: the handshake failed or timed out (or
	                       the server refused it with an alert before any
	                       echo, as TLS 1.3 does for a client certificate) */
	uint64_t truncated; /* --tls: the server's TCP stream ended without a
	                       close_notify (a truncation attack looks so) */
};

/* The longest TLS failure reason kept for the report. */
#define BENCH_TLS_WHY_LEN 160

/*
 * --tls: what the handshakes measured. Every handshake of the run counts,
 * those before the load starts and during --warmup too (without --churn
 * they all happen then).
 */
struct bench_tls {
	uint64_t handshakes; /* completed on the client's side (a TLS 1.3
	                        server may still refuse one after it, with an
	                        alert: an err.handshake) */
	uint64_t resumed;    /* of which resumed a session (SSL_session_reused) */
	const char *version; /* of the first connection that got an echo
	                        back, which the server surely accepted:
	                        "TLSv1.3"; NULL if none did; static */
	const char *cipher;  /* "TLS_AES_256_GCM_SHA384"; static */
	char why[BENCH_TLS_WHY_LEN]; /* the first TLS failure's reason, or "" */
	struct hist latency; /* nanoseconds from connect(2) to handshake done */
};

/*
 * What a run measured. Latency is counted the way coordinated omission asks
 * (Tene, "How NOT to measure latency"; wrk2): a message is due when the
 * load says it should be sent, the open loop's schedule or, in a closed
 * loop, when the previous echo on its connection completed (the load's
 * start for the first). latency runs from that time; latency_uncorrected
 * from when its first byte was actually written. A message still
 * unanswered at the end of the run enters both with its age then, a lower
 * bound of its latency, so a server that stops answering cannot shorten
 * the tail by not answering.
 *
 * The same holds for each interval of -i and --json-stream
 * (bench_interval.h): an interval's histograms hold the echoes completed in
 * it and, as lower bounds, every message due and unanswered at its end
 * with its age then, so an interval in which the server answers nothing
 * shows zero messages and the stall in its max. Those ages go into that
 * interval's histograms only, never the run's; an interval's messages,
 * bytes and errors are what completed in it, and add up to the run's.
 */
struct bench_result {
	uint64_t messages; /* echoes completed in the measured window */
	uint64_t bytes;    /* their payload bytes */
	double elapsed;    /* seconds in the measured window */
	uint64_t errors;   /* sum of err */
	struct bench_errors err;
	uint64_t connects;   /* connections established */
	double connect_ms;   /* mean time for one connect to complete */
	double setup_ms;     /* until all connections were up (not --churn) */
	int setup_done;      /* every connection came up or failed */
	double load_start_ms; /* from the first connect to the load's start */
	uint64_t late_conns; /* not up yet when the load started */
	uint64_t conns_pending; /* still connecting at the end */
	uint64_t conns_lost; /* slots whose connection failed for good: all
	                        o->conns of them when the run ended because
	                        none was left */
	uint64_t in_flight;  /* at the end: sent, echo not complete */
	uint64_t unsent;     /* at the end: due, not yet written */
	int interrupted;     /* the signal that stopped it early, SIGINT or
	                        SIGTERM, or 0 */
	int stalled;         /* -n alone: stopped after BENCH_STALL_TIMEOUT
	                        without an echo */
	struct hist latency; /* nanoseconds from due time */
	struct hist latency_uncorrected; /* nanoseconds from the send */
	struct hist issue_lag; /* open loop: nanoseconds from a message's due
	                          time to when forkloop-bench queued it, its
	                          own lateness against the schedule */
	struct bench_tls tls;  /* --tls only */
	/* The measured window on the wall clock (CLOCK_REALTIME, seconds
	 * since the epoch), so that results of separate processes can be
	 * lined up; a merge: the interval every input ran in. */
	double start_unix_s, end_unix_s;
	/* forkloop-bench merge (bench_merge.h): the results added up, 0 for a
	 * run; their rates summed, which then stand for messages / elapsed;
	 * and the share of the longest input's window they all ran in. */
	uint64_t merged;
	double merged_msgs_per_sec, merged_mbytes_per_sec;
	double merged_overlap;
};

/* Derived figures for the report and the exit status. */
struct bench_summary {
	double msgs_per_sec, mbytes_per_sec;
	double rate_shortfall_pct; /* open loop: % below --rate, else 0 */
	int rate_short;            /* shortfall past BENCH_RATE_TOLERANCE */
	double little_ratio;       /* closed loop: mean latency x throughput /
	                              messages kept in flight; 0 if none */
};

/* An open-loop run may fall short of --rate by this many percent. */
#define BENCH_RATE_TOLERANCE 1.0
/* A merge's inputs that ran together for less than this share of the
 * longest one's window are warned of: not one load. */
#define BENCH_MERGE_OVERLAP  0.9
#define BENCH_MAX_WARNINGS   5
#define BENCH_WARNING_LEN    160

/*
 * Parse forkloop-bench's command line. Help and version go to out, errors
 * and usage to errout.
 */
enum opts_result bench_opts_parse(int argc, char **argv, struct bench_opts *o,
                                  FILE *out, FILE *errout);

/* Fill s with thread i's share of o (i < o->threads). */
void bench_share(const struct bench_opts *o, uint64_t i, struct bench_share *s);

/*
 * Make room for conns connections on threads threads: raise the soft
 * RLIMIT_NOFILE up to the hard limit if needed. Returns 0, or -1 after
 * saying what is needed, the soft and hard limits and the ways out (a
 * higher hard limit, or the load split over several processes).
 */
int bench_nofile(uint64_t conns, uint64_t threads);

/*
 * Is there a local port for every connection? Each connection to one
 * target address needs its own local port per source address (the
 * 4-tuple is unique; with IP_BIND_ADDRESS_NO_PORT, ip(7), the port is
 * chosen at connect time for each source), from
 * net.ipv4.ip_local_port_range, which IPv6 uses too. So o->conns must be
 * at most (o->source_addrs, or 1 without --source) x the ports in range.
 * Returns 0 (also for a unix: target, or when the range cannot be read),
 * or -1 after saying what is short and the fixes.
 */
int bench_ports(const struct bench_opts *o);

/*
 * Run the load, on o->threads threads. Returns 0 when the run happened (r
 * filled in, errors counted there); 1 when it stopped on a failure of the
 * run itself (a source address that cannot be bound, out of memory) after
 * it began to measure, said once, with r filled in with what it measured
 * until then; -1 after reporting why it could not run (bad address,
 * nothing listening, out of memory, any such failure before measuring),
 * once.
 */
int bench_run(const struct bench_opts *o, struct bench_result *r);

/*
 * Add what src counted to dst, as if one loop had run both: the counts,
 * errors and connections summed, the histograms merged bucket by bucket
 * (hist_merge), connect_ms the mean over both's connects. What belongs to
 * the run as a whole, not to a share of it (elapsed, setup_done, setup_ms,
 * load_start_ms, interrupted, stalled), is left as it is in dst.
 */
void bench_result_merge(struct bench_result *dst,
                        const struct bench_result *src);

/*
 * Fill s from o and r. The rate is short when fewer messages were answered
 * than were due in the measured window (--rate x duration) by more than
 * BENCH_RATE_TOLERANCE percent and one message (the one a healthy run may
 * still have in flight at the end). little_ratio is Little's law's check
 * (L = lambda W, so W = connections x pipeline / throughput): near 1.0
 * when no latency was left out. For a merge (r->merged > 0) the rates are
 * r->merged_msgs_per_sec and r->merged_mbytes_per_sec, and the answered
 * count they imply over elapsed is what falls short, with one message of
 * slack per input.
 */
void bench_summarize(const struct bench_opts *o, const struct bench_result *r,
                     struct bench_summary *s);

/*
 * What a person should know before trusting the numbers: a rate shortfall,
 * connections late or never up, messages due and never sent, a merge of
 * results that did not run at the same time. Writes up to
 * BENCH_MAX_WARNINGS sentences into w and returns how many. --strict makes
 * any of them an exit status of 1.
 */
int bench_warnings(const struct bench_opts *o, const struct bench_result *r,
                   char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN]);

/* One table for people, or one JSON object with a trailing newline. */
void bench_report_text(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r);
void bench_report_json(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r);

#endif
