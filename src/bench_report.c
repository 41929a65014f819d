/*
 * bench_report.c - forkloop-bench's results written: one table for people
 * and one JSON object for scripts, each with the figures and warnings
 * bench_result.c derives. The table's row names are the JSON field names.
 */
#include <inttypes.h>
#include <stdio.h>

#include "forkloop/bench.h"

struct bench_lat {
	double p50, p90, p99, p999, max, mean; /* microseconds */
	uint64_t count;
};

static void bench_lat(const struct hist *h, struct bench_lat *x)
{
	x->p50 = (double)hist_quantile(h, 0.50) / 1e3;
	x->p90 = (double)hist_quantile(h, 0.90) / 1e3;
	x->p99 = (double)hist_quantile(h, 0.99) / 1e3;
	x->p999 = (double)hist_quantile(h, 0.999) / 1e3;
	x->max = (double)h->max / 1e3;
	x->mean = hist_mean(h) / 1e3;
	x->count = h->count;
}

static const char *bench_load_name(const struct bench_opts *o)
{
	if (o->churn)
		return "churn";
	return o->rate > 0 ? "open" : "closed";
}

static void text_lat(FILE *f, const char *name, const struct hist *h)
{
	struct bench_lat x;

	bench_lat(h, &x);
	fprintf(f,
	        "%-22s p50 %.1f  p90 %.1f  p99 %.1f  p999 %.1f  max %.1f  "
	        "mean %.1f\n",
	        name, x.p50, x.p90, x.p99, x.p999, x.max, x.mean);
}

/* Whom the server's certificate was checked against, in words. */
static const char *tls_verified(const struct bench_opts *o)
{
	if (!o->tls_verify)
		return "server not verified";
	return o->tls_ca != NULL ? "server verified against --tls-ca"
	                         : "server verified against the system's CAs";
}

/*
 * The version and cipher come from a connection that got an echo back: a
 * TLS 1.3 server may refuse a handshake the client saw complete.
 */
static void text_tls(FILE *f, const struct bench_opts *o,
                     const struct bench_result *r)
{
	const struct bench_tls *t = &r->tls;

	if (!o->tls)
		return;
	fprintf(f, "%-22s ", "tls");
	if (t->version != NULL)
		fprintf(f, "%s %s", t->version,
		        t->cipher != NULL ? t->cipher : "-");
	else if (t->handshakes > 0)
		fprintf(f, "no handshake accepted (no echo came back)");
	else
		fprintf(f, "no handshake completed");
	fprintf(f, ", %s%s\n", tls_verified(o),
	        o->tls_cert != NULL ? ", client certificate" : "");
	fprintf(f, "%-22s %" PRIu64 " (resumed %" PRIu64 "%s)\n",
	        "tls_handshakes", t->handshakes, t->resumed,
	        o->tls_resume ? ", --tls-resume" : "");
	text_lat(f, "handshake_latency_us", &t->latency);
	if (t->why[0] != '\0')
		fprintf(f, "%-22s %s\n", "tls_error", t->why);
}

void bench_report_text(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r)
{
	struct bench_summary s;
	char target[ADDR_STRLEN];

	bench_summarize(o, r, &s);
	fprintf(f, "%-22s %s%s, %s loop%s\n", "target",
	        o->tls ? ADDR_TLS_PREFIX : "",
	        addr_spec_format(&o->target, target, sizeof target),
	        bench_load_name(o), r->interrupted ? ", interrupted" : "");
	fprintf(f, "%-22s %" PRIu64 "\n", "conns", o->conns);
	fprintf(f, "%-22s %" PRIu64 "\n", "size", o->size);
	fprintf(f, "%-22s %" PRIu64 "\n", "pipeline", o->pipeline);
	fprintf(f, "%-22s %" PRIu64 "\n", "threads", o->threads);
	if (r->merged > 0)
		fprintf(f, "%-22s %" PRIu64 "\n", "merged", r->merged);
	if (o->rate > 0)
		fprintf(f, "%-22s %.1f (answered %.1f, %.1f%% short)\n", "rate",
		        o->rate, s.msgs_per_sec, s.rate_shortfall_pct);
	fprintf(f, "%-22s %.3f\n", "duration_s", r->elapsed);
	fprintf(f, "%-22s %" PRIu64 "\n", "messages", r->messages);
	fprintf(f, "%-22s %.1f\n", "msgs_per_sec", s.msgs_per_sec);
	fprintf(f, "%-22s %.3f\n", "mbytes_per_sec", s.mbytes_per_sec);
	fprintf(f, "%-22s %" PRIu64 " (in flight %" PRIu64 ", unsent %" PRIu64
	        ")\n",
	        "unanswered", r->in_flight + r->unsent, r->in_flight,
	        r->unsent);
	fprintf(f,
	        "%-22s %" PRIu64 " (mismatch %" PRIu64 ", reset %" PRIu64
	        ", closed %" PRIu64 ", connect %" PRIu64,
	        "errors", r->errors, r->err.mismatch, r->err.reset,
	        r->err.closed, r->err.connect);
	if (o->tls)
		fprintf(f, ", handshake %" PRIu64 ", truncated %" PRIu64,
		        r->err.handshake, r->err.truncated);
	fprintf(f, ")\n");
	fprintf(f, "%-22s %.3f (", "connect_ms", r->connect_ms);
	if (r->setup_done)
		fprintf(f, "all up in %.1f", r->setup_ms);
	else
		fprintf(f, "not all up");
	fprintf(f, ", load started at %.1f, %" PRIu64 " late)\n",
	        r->load_start_ms, r->late_conns);
	text_lat(f, "latency_us", &r->latency);
	text_lat(f, "latency_uncorrected_us", &r->latency_uncorrected);
	if (o->rate > 0)
		text_lat(f, "issue_lag_us", &r->issue_lag);
	if (s.little_ratio > 0)
		fprintf(f, "%-22s %.3f\n", "little_ratio", s.little_ratio);
	text_tls(f, o, r);
}

/*
 * The histogram itself, every non-empty bucket as [index, count] in
 * hist.h's layout, so that results of separate processes add up exactly
 * (forkloop-bench merge). An empty one's min is 0.
 */
static void json_hist(FILE *f, const struct hist *h)
{
	const char *sep = "";
	unsigned i;

	fprintf(f,
	        ", \"hist\": {\"unit\": \"ns\", \"sub_bits\": %u, \"min\": "
	        "%" PRIu64 ", \"max\": %" PRIu64 ", \"sum\": %" PRIu64
	        ", \"buckets\": [",
	        HIST_SUB_BITS, h->count > 0 ? h->min : 0, h->max, h->sum);
	for (i = 0; i < HIST_BUCKETS; i++) {
		if (h->buckets[i] == 0)
			continue;
		fprintf(f, "%s[%u, %" PRIu64 "]", sep, i, h->buckets[i]);
		sep = ", ";
	}
	fprintf(f, "]}");
}

static void json_lat(FILE *f, const char *name, const struct hist *h)
{
	struct bench_lat x;

	bench_lat(h, &x);
	fprintf(f,
	        ", \"%s\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f"
	        ", \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f, \"count\": "
	        "%" PRIu64,
	        name, x.p50, x.p90, x.p99, x.p999, x.max, x.mean, x.count);
	json_hist(f, h);
	fputc('}', f);
}

/* A JSON string from OpenSSL or the system: escaped. */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* "tls": null without --tls; else what the handshakes were. */
static void json_tls(FILE *f, const struct bench_opts *o,
                     const struct bench_result *r)
{
	const struct bench_tls *t = &r->tls;

	if (!o->tls) {
		fprintf(f, ", \"tls\": null");
		return;
	}
	fprintf(f, ", \"tls\": {\"verify\": %s, \"ca\": ",
	        o->tls_verify ? "true" : "false");
	if (o->tls_verify && o->tls_ca != NULL)
		json_str(f, o->tls_ca);
	else
		fprintf(f, o->tls_verify ? "\"system\"" : "null");
	fprintf(f, ", \"client_cert\": %s, \"resume\": %s, \"version\": ",
	        o->tls_cert != NULL ? "true" : "false",
	        o->tls_resume ? "true" : "false");
	if (t->version != NULL)
		json_str(f, t->version);
	else
		fprintf(f, "null");
	fprintf(f, ", \"cipher\": ");
	if (t->cipher != NULL)
		json_str(f, t->cipher);
	else
		fprintf(f, "null");
	fprintf(f, ", \"handshakes\": %" PRIu64 ", \"resumed\": %" PRIu64,
	        t->handshakes, t->resumed);
	json_lat(f, "handshake_latency_us", &t->latency);
	fprintf(f, ", \"error\": ");
	if (t->why[0] != '\0')
		json_str(f, t->why);
	else
		fprintf(f, "null");
	fprintf(f, "}");
}

/* A JSON string of ours: the warnings hold no quote, backslash or control. */
static void json_warnings(FILE *f, const struct bench_opts *o,
                          const struct bench_result *r)
{
	char w[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];
	int i, n = bench_warnings(o, r, w);

	fprintf(f, ", \"warnings\": [");
	for (i = 0; i < n; i++)
		fprintf(f, "%s\"%s\"", i > 0 ? ", " : "", w[i]);
	fprintf(f, "]");
}

void bench_report_json(FILE *f, const struct bench_opts *o,
                       const struct bench_result *r)
{
	struct bench_summary s;
	char target[ADDR_STRLEN], spec[ADDR_STRLEN + sizeof ADDR_TLS_PREFIX];

	bench_summarize(o, r, &s);
	/* Escaped: a unix: path may hold a quote or a backslash. */
	snprintf(spec, sizeof spec, "%s%s", o->tls ? ADDR_TLS_PREFIX : "",
	         addr_spec_format(&o->target, target, sizeof target));
	fprintf(f, "{\"type\": \"summary\", \"target\": ");
	json_str(f, spec);
	fprintf(f,
	        ", \"load\": \"%s\", \"conns\": %" PRIu64
	        ", \"size\": %" PRIu64 ", \"pipeline\": %" PRIu64
	        ", \"threads\": %" PRIu64
	        ", \"rate\": %.3f, \"warmup_s\": %.3f, \"strict\": %s",
	        bench_load_name(o), o->conns, o->size, o->pipeline, o->threads,
	        o->rate, o->warmup, o->strict ? "true" : "false");
	fprintf(f,
	        ", \"duration_s\": %.6f, \"messages\": %" PRIu64
	        ", \"bytes\": %" PRIu64
	        ", \"msgs_per_sec\": %.1f, \"mbytes_per_sec\": %.3f",
	        r->elapsed, r->messages, r->bytes, s.msgs_per_sec,
	        s.mbytes_per_sec);
	fprintf(f, ", \"start_unix_s\": %.6f, \"end_unix_s\": %.6f",
	        r->start_unix_s, r->end_unix_s);
	if (r->merged > 0)
		fprintf(f, ", \"merged\": %" PRIu64, r->merged);
	if (o->rate > 0)
		fprintf(f,
		        ", \"rate_achieved\": %.1f, \"rate_shortfall_pct\": "
		        "%.2f, \"rate_short\": %s",
		        s.msgs_per_sec, s.rate_shortfall_pct,
		        s.rate_short ? "true" : "false");
	else
		fprintf(f, ", \"rate_achieved\": null, \"rate_shortfall_pct\": "
		           "0, \"rate_short\": false");
	fprintf(f,
	        ", \"unanswered\": %" PRIu64 ", \"in_flight\": %" PRIu64
	        ", \"unsent\": %" PRIu64,
	        r->in_flight + r->unsent, r->in_flight, r->unsent);
	fprintf(f,
	        ", \"errors\": %" PRIu64
	        ", \"error_kinds\": {\"mismatch\": %" PRIu64
	        ", \"reset\": %" PRIu64 ", \"closed\": %" PRIu64
	        ", \"connect\": %" PRIu64 ", \"handshake\": %" PRIu64
	        ", \"truncated\": %" PRIu64 "}",
	        r->errors, r->err.mismatch, r->err.reset, r->err.closed,
	        r->err.connect, r->err.handshake, r->err.truncated);
	fprintf(f, ", \"connects\": %" PRIu64 ", \"connect_ms\": %.4f",
	        r->connects, r->connect_ms);
	if (r->setup_done)
		fprintf(f, ", \"setup_ms\": %.3f", r->setup_ms);
	else
		fprintf(f, ", \"setup_ms\": null");
	fprintf(f,
	        ", \"setup_timeout_s\": %.3f, \"connect_timeout_s\": %.3f"
	        ", \"load_start_ms\": %.3f"
	        ", \"late_conns\": %" PRIu64 ", \"conns_pending\": %" PRIu64
	        ", \"interrupted\": %s, \"stalled\": %s",
	        o->setup_timeout, o->connect_timeout, r->load_start_ms,
	        r->late_conns, r->conns_pending,
	        r->interrupted ? "true" : "false",
	        r->stalled ? "true" : "false");
	json_lat(f, "latency_us", &r->latency);
	json_lat(f, "latency_uncorrected_us", &r->latency_uncorrected);
	if (o->rate > 0)
		json_lat(f, "issue_lag_us", &r->issue_lag);
	else
		fprintf(f, ", \"issue_lag_us\": null");
	if (s.little_ratio > 0)
		fprintf(f, ", \"little_ratio\": %.4f", s.little_ratio);
	else
		fprintf(f, ", \"little_ratio\": null");
	json_tls(f, o, r);
	json_warnings(f, o, r);
	fprintf(f, "}\n");
}
