/*
 * bench_merge.h - forkloop-bench's results outside the process that ran
 * them: the latency histogram as an .hgrm file (--hist), and results that
 * --json wrote read back and added up into one (forkloop-bench merge), so
 * that several processes loading one server report as one load.
 */
#ifndef FORKLOOP_BENCH_MERGE_H
#define FORKLOOP_BENCH_MERGE_H

#include <limits.h>
#include <stddef.h>

#include "forkloop/bench.h"

/* The longest TLS version or cipher name kept from an input. */
#define BENCH_INPUT_NAMELEN 64
/* The longest message bench_input_parse and bench_input_read leave. */
#define BENCH_INPUT_WHYLEN 256

/*
 * One result as forkloop-bench --json wrote it, read back into the options
 * it ran with and what it measured, the histograms bucket for bucket. The
 * pointers in o and r (o.tls_ca, r.tls.version, r.tls.cipher) point into
 * the strings here, so an input is used where it was read, not copied; o
 * and r hold what the JSON holds (r.conns_lost is 0: the JSON has none).
 */
struct bench_input {
	struct bench_opts o;
	struct bench_result r;
	double msgs_per_sec, mbytes_per_sec;               /* its rates */
	char target[ADDR_STRLEN + sizeof ADDR_TLS_PREFIX]; /* as written */
	char load[8];                                      /* "closed" ... */
	char tls_ca[PATH_MAX];
	char tls_version[BENCH_INPUT_NAMELEN];
	char tls_cipher[BENCH_INPUT_NAMELEN];
};

/*
 * Read the result in buf (len bytes): one JSON object, or a stream of
 * them, one after another (--json-stream), of which the one whose "type"
 * is "summary" is the result. buf holds exactly one result: an object
 * whose "type" is "summary" or that has no "type"; other types (the
 * stream's "interval" lines) are skipped, and two results ("--json >>
 * FILE") are an error, since which was meant cannot be known. Every
 * latency object must carry its "hist" (a forkloop-bench that wrote none
 * is too old to merge), every histogram must agree with itself (its count,
 * min and max with its buckets), errors must be the sum of error_kinds,
 * conns, size, pipeline and threads at least 1, no number negative, and
 * the rates (messages over duration_s) finite. Returns 0 with in filled,
 * or -1 with why (up to whylen bytes, BENCH_INPUT_WHYLEN is enough) saying
 * what is wrong: "not JSON: ... at line 3", "latency_us has no hist",
 * "holds 2 results (the second at line 2): ...", "conns is 0: not a
 * result".
 */
int bench_input_parse(const char *buf, size_t len, struct bench_input *in,
                      char *why, size_t whylen);

/*
 * bench_input_parse on the contents of the file at path ("-" is standard
 * input). Returns 0, or -1 with why set, also when it cannot be read
 * ("cannot read: No such file or directory"). The path is not in why.
 */
int bench_input_read(const char *path, struct bench_input *in, char *why,
                     size_t whylen);

/*
 * Whether a and b are one result given twice (one file named twice, or a
 * copy): the same start_unix_s, end_unix_s, messages and bytes. Separate
 * processes do not start and end on the same microsecond, but all four
 * are compared so that no two runs are ever taken for one. Returns 1 if
 * so, else 0.
 */
int bench_input_same(const struct bench_input *a, const struct bench_input *b);

/*
 * Whether b ran the same load as a, so that their results add up: TLS or
 * plain, --tls-resume (a full handshake per connect or an abbreviated
 * one), and the same target, size, pipeline and load kind. Returns NULL if
 * so, else the first field that differs ("tls", "tls.resume", "target",
 * "load", "size", "pipeline") with why set to b's value and a's: "size
 * 100, not 64", "TLS, not plain", "tls.resume true, not false".
 */
const char *bench_input_mismatch(const struct bench_input *a,
                                 const struct bench_input *b, char *why,
                                 size_t whylen);

/*
 * Add the n (>= 1) inputs into one result, exactly, as if one process had
 * run them all (bench_result_merge): messages, bytes, errors of each kind,
 * connects, unanswered, late and pending connections summed, the
 * histograms added bucket by bucket, connect_ms weighted by connects;
 * conns, threads and rate summed. The window is the inputs' common
 * interval, the overlap of their [start_unix_s, end_unix_s] (empty if they
 * never ran together), and elapsed its length; r->merged_msgs_per_sec and
 * r->merged_mbytes_per_sec are the sum of the inputs' own rates, and
 * r->merged_overlap the common interval over the longest input's window,
 * below BENCH_MERGE_OVERLAP a warning (bench_warnings). Inputs of
 * different loads (bench_input_mismatch) or the same result twice
 * (bench_input_same) are the caller's to refuse first.
 *
 * Returns 0, with o and r pointing into in[0]'s strings; or -1 with why
 * (BENCH_INPUT_WHYLEN is enough) when a sum does not fit: a count past
 * INT64_MAX, the most a JSON integer holds for jansson (json_int_t), so
 * that the output could not be read back ("the sum of messages overflows:
 * ..."), conns x pipeline past it, or a figure of the report (a rate, a
 * ratio, a duration) that is not a finite number, which JSON cannot hold.
 * o and r are then not a result.
 */
int bench_merge(struct bench_input *const *in, size_t n, struct bench_opts *o,
                struct bench_result *r, char *why, size_t whylen);

/*
 * --hist: write h (nanoseconds) to the file at path, created or truncated,
 * as HdrHistogram's .hgrm text in milliseconds (hist_write_hgrm). Returns
 * 0, or -1 after reporting why the file could not be written.
 */
int bench_hist_save(const char *path, const struct hist *h);

/*
 * forkloop-bench merge [--json] [--hist FILE] FILE...: argv[0] is "merge".
 * Reads each FILE (bench_input_read; "-", standard input, at most once),
 * refuses inputs of different loads and the same result twice, merges
 * them (bench_merge) and prints the report of a run, text or with --json
 * the JSON with "merged": N, which can be merged again; the warnings go to
 * standard error too. Returns the exit status: 0, 1 when the report or
 * --hist FILE could not be written, 2 on bad usage, a FILE that is
 * unreadable, not one result, of another load or the same result as
 * another (the message names the file and what is wrong), or sums that
 * overflow (the message names the sum).
 */
int bench_merge_main(int argc, char **argv);

#endif
