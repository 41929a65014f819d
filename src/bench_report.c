/*
 * bench_report.c - forkloop-bench's results: one table for people, one JSON
 * object for scripts. The table's row names are the JSON field names.
 */
#include <inttypes.h>

#include "forkloop/bench.h"

struct bench_rates {
	double msgs, mbytes;
	double p50, p90, p99, p999, max; /* microseconds */
};

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

static void bench_rates(const struct bench_result *r, struct bench_rates *x)
{
	const struct hist *h = &r->latency;

	x->msgs = r->elapsed > 0 ? (double)r->messages / r->elapsed : 0;
	x->mbytes = r->elapsed > 0 ? (double)r->bytes / r->elapsed / 1e6 : 0;
	x->p50 = us(hist_quantile(h, 0.50));
	x->p90 = us(hist_quantile(h, 0.90));
	x->p99 = us(hist_quantile(h, 0.99));
	x->p999 = us(hist_quantile(h, 0.999));
	x->max = us(h->max > 0 ? h->max : 0);
}

static const char *bench_load_name(const struct bench_opts *o)
{
	if (o->churn)
		return "churn";
	return o->rate > 0 ? "open" : "closed";
}

void bench_report_text(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r)
{
	struct bench_rates x;
	char target[ADDR_STRLEN];

	bench_rates(r, &x);
	fprintf(f, "%-16s %s, %s loop%s\n", "target",
	        addr_spec_format(&o->target, target, sizeof target),
	        bench_load_name(o), r->interrupted ? ", interrupted" : "");
	fprintf(f, "%-16s %" PRIu64 "\n", "conns", o->conns);
	fprintf(f, "%-16s %" PRIu64 "\n", "size", o->size);
	fprintf(f, "%-16s %" PRIu64 "\n", "pipeline", o->pipeline);
	if (o->rate > 0)
		fprintf(f, "%-16s %.1f\n", "rate", o->rate);
	fprintf(f, "%-16s %.3f\n", "duration_s", r->elapsed);
	fprintf(f, "%-16s %" PRIu64 "\n", "messages", r->messages);
	fprintf(f, "%-16s %.1f\n", "msgs_per_sec", x.msgs);
	fprintf(f, "%-16s %.3f\n", "mbytes_per_sec", x.mbytes);
	fprintf(f,
	        "%-16s %" PRIu64 " (mismatch %" PRIu64 ", reset %" PRIu64
	        ", closed %" PRIu64 ", connect %" PRIu64 ")\n",
	        "errors", r->errors, r->err.mismatch, r->err.reset,
	        r->err.closed, r->err.connect);
	fprintf(f, "%-16s %.3f (all up in %.1f)\n", "connect_ms", r->connect_ms,
	        r->setup_ms);
	fprintf(f, "%-16s p50 %.1f  p90 %.1f  p99 %.1f  p999 %.1f  max %.1f\n",
	        "latency_us", x.p50, x.p90, x.p99, x.p999, x.max);
}

void bench_report_json(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r)
{
	struct bench_rates x;
	char target[ADDR_STRLEN];

	bench_rates(r, &x);
	fprintf(f,
	        "{\"target\": \"%s\", \"load\": \"%s\", \"conns\": %" PRIu64
	        ", \"size\": %" PRIu64 ", \"pipeline\": %" PRIu64
	        ", \"rate\": %.3f, \"warmup_s\": %.3f",
	        addr_spec_format(&o->target, target, sizeof target),
	        bench_load_name(o), o->conns, o->size, o->pipeline, o->rate,
	        o->warmup);
	fprintf(f,
	        ", \"duration_s\": %.6f, \"messages\": %" PRIu64
	        ", \"bytes\": %" PRIu64
	        ", \"msgs_per_sec\": %.1f, \"mbytes_per_sec\": %.3f",
	        r->elapsed, r->messages, r->bytes, x.msgs, x.mbytes);
	fprintf(f,
	        ", \"errors\": %" PRIu64
	        ", \"error_kinds\": {\"mismatch\": %" PRIu64
	        ", \"reset\": %" PRIu64 ", \"closed\": %" PRIu64
	        ", \"connect\": %" PRIu64 "}",
	        r->errors, r->err.mismatch, r->err.reset, r->err.closed,
	        r->err.connect);
	fprintf(f,
	        ", \"connects\": %" PRIu64
	        ", \"connect_ms\": %.4f, \"setup_ms\": %.3f, \"interrupted\": "
	        "%s",
	        r->connects, r->connect_ms, r->setup_ms,
	        r->interrupted ? "true" : "false");
	fprintf(f,
	        ", \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f"
	        ", \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f}}\n",
	        x.p50, x.p90, x.p99, x.p999, x.max,
	        hist_mean(&r->latency) / 1e3);
}
