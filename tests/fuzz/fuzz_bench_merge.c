/*
 * fuzz_bench_merge.c - forkloop-bench merge's reader (bench_input_parse,
 * jansson underneath) on any bytes, and bench_merge on what it accepts.
 * The input is one or two results, split at the first NUL byte (no JSON
 * text holds one).
 *
 * Properties: a refusal says why; a result read is reported (--json) in a
 * form read back as a result of the same counts; two results of one load
 * merge in either order to the same counts, and the merge's report reads
 * back too, as "forkloop-bench merge" promises of its output.
 */
#include <stdio.h>

#include "forkloop/bench_merge.h"

#include "fuzz.h"

static struct bench_input in[3];
static struct bench_result r1, r2;
static FILE *devnull;

/* Write o and r as --json does and read the text back into in[2]. */
static void check_json_round_trip(const struct bench_opts *o,
                                  const struct bench_result *r)
{
	char *buf = NULL, why[BENCH_INPUT_WHYLEN];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		abort();
	bench_report_json(f, o, r);
	if (fclose(f) != 0)
		abort();
	why[0] = '\0';
	if (bench_input_parse(buf, len, &in[2], why, sizeof why) != 0) {
		fprintf(stderr, "report not read back: %s\n%s", why, buf);
		FUZZ_CHECK(!"the --json report reads back");
	}
	FUZZ_CHECK(in[2].r.messages == r->messages);
	FUZZ_CHECK(in[2].r.bytes == r->bytes);
	FUZZ_CHECK(in[2].r.errors == r->errors);
	FUZZ_CHECK(in[2].r.latency.count == r->latency.count);
	free(buf);
	bench_report_text(devnull, o, r);
}

static void check_merge(void)
{
	struct bench_input *ab[2] = {&in[0], &in[1]}, *ba[2] = {&in[1], &in[0]};
	struct bench_opts o1, o2;
	char why[BENCH_INPUT_WHYLEN];
	int m1, m2;

	if (bench_input_mismatch(&in[0], &in[1], why, sizeof why) != NULL ||
	    bench_input_same(&in[0], &in[1]))
		return;
	m1 = bench_merge(ab, 2, &o1, &r1, why, sizeof why);
	m2 = bench_merge(ba, 2, &o2, &r2, why, sizeof why);
	FUZZ_CHECK(m1 == m2);
	if (m1 < 0)
		return;
	FUZZ_CHECK(r1.messages == in[0].r.messages + in[1].r.messages);
	FUZZ_CHECK(r1.messages == r2.messages && r1.bytes == r2.bytes);
	FUZZ_CHECK(r1.errors == r2.errors);
	FUZZ_CHECK(r1.latency.count ==
	           in[0].r.latency.count + in[1].r.latency.count);
	FUZZ_CHECK(memcmp(r1.latency.buckets, r2.latency.buckets,
	                  sizeof r1.latency.buckets) == 0);
	check_json_round_trip(&o1, &r1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t len0 = nul != NULL ? (size_t)(nul - data) : size;
	char why[BENCH_INPUT_WHYLEN];
	int ok0, ok1 = -1;

	if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
		abort();
	why[0] = '\0';
	ok0 = bench_input_parse((const char *)data, len0, &in[0], why,
	                        sizeof why);
	FUZZ_CHECK(ok0 == 0 || why[0] != '\0');
	if (ok0 == 0)
		check_json_round_trip(&in[0].o, &in[0].r);
	if (nul != NULL) {
		why[0] = '\0';
		ok1 = bench_input_parse((const char *)nul + 1, size - len0 - 1,
		                        &in[1], why, sizeof why);
		FUZZ_CHECK(ok1 == 0 || why[0] != '\0');
	}
	if (ok0 == 0 && ok1 == 0)
		check_merge();
	return 0;
}
