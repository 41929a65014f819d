/*
 * bench_merge.c - forkloop-bench's results outside the process: --hist's
 * .hgrm file, and forkloop-bench merge, which reads back what --json wrote
 * (with jansson) and adds the results of processes that loaded one server
 * at the same time into one, exactly: the histograms travel bucket by
 * bucket and are added as the threads of one run are (bench_result_merge),
 * never their percentiles averaged.
 *
 * The JSON is read strictly: a field missing or of the wrong type, a
 * negative figure, a count that disagrees with its parts, or a histogram
 * whose count, min and max disagree with its buckets, is an error naming
 * the field, since a merge of a damaged file would print numbers that look
 * right. Sums are checked the same way: every count of a merge stays within
 * what a JSON integer holds here (jansson's json_int_t, int64), so that its
 * output can be merged again, and every figure of its report is a finite
 * number, so that the JSON holds no inf or nan.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "forkloop/bench_merge.h"
#include "forkloop/log.h"

/* Milliseconds, as wrk2 writes and HdrHistogram's plotter expects. */
#define BENCH_HGRM_SCALE 1e6

int bench_hist_save(const char *path, const struct hist *h)
{
	FILE *f;
	int err;

	if ((f = fopen(path, "w")) == NULL) {
		log_error("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	if (hist_write_hgrm(f, h, BENCH_HGRM_SCALE) < 0 || fflush(f) != 0) {
		err = errno != 0 ? errno : EIO;
		fclose(f);
		log_error("cannot write %s: %s", path, strerror(err));
		return -1;
	}
	if (fclose(f) != 0) {
		log_error("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Reading one result: the first thing wrong is kept, the rest skipped. */
struct jr {
	char *why;
	size_t whylen;
	int bad;
	char name[96]; /* the field being read, "latency_us.hist.min" */
};

static void jr_fail(struct jr *j, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void jr_fail(struct jr *j, const char *fmt, ...)
{
	va_list ap;

	if (j->bad)
		return;
	j->bad = 1;
	va_start(ap, fmt);
	vsnprintf(j->why, j->whylen, fmt, ap);
	va_end(ap);
}

/* obj's member key, named where.key; NULL after saying it is missing. */
static json_t *jr_get(struct jr *j, json_t *obj, const char *where,
                      const char *key)
{
	json_t *v;

	snprintf(j->name, sizeof j->name, "%s%s%s", where,
	         where[0] != '\0' ? "." : "", key);
	if ((v = json_object_get(obj, key)) == NULL)
		jr_fail(j, "no %s", j->name);
	return v;
}

static uint64_t jr_u64(struct jr *j, json_t *obj, const char *where,
                       const char *key)
{
	json_t *v = jr_get(j, obj, where, key);

	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		jr_fail(j, "%s is not a count", j->name);
		return 0;
	}
	return (uint64_t)json_integer_value(v);
}

/* Every number in a result is a time, a duration or a rate: none is
 * negative. jansson reads none that is not finite. */
static double jr_num(struct jr *j, json_t *obj, const char *where,
                     const char *key)
{
	json_t *v = jr_get(j, obj, where, key);

	if (v == NULL)
		return 0;
	if (!json_is_number(v)) {
		jr_fail(j, "%s is not a number", j->name);
		return 0;
	}
	if (json_number_value(v) < 0) {
		jr_fail(j, "%s is negative", j->name);
		return 0;
	}
	return json_number_value(v);
}

/* A count of which a run always has one or more. */
static uint64_t jr_pos(struct jr *j, json_t *obj, const char *key)
{
	uint64_t v = jr_u64(j, obj, "", key);

	if (!j->bad && v == 0)
		jr_fail(j, "%s is 0: not a result", key);
	return v;
}

static int jr_bool(struct jr *j, json_t *obj, const char *where,
                   const char *key)
{
	json_t *v = jr_get(j, obj, where, key);

	if (v == NULL)
		return 0;
	if (!json_is_boolean(v)) {
		jr_fail(j, "%s is not true or false", j->name);
		return 0;
	}
	return json_is_true(v);
}

/*
 * A string member copied into buf; null too when nullable (then buf is ""
 * and 0 is returned). Returns 1 for a string.
 */
static int jr_str(struct jr *j, json_t *obj, const char *where, const char *key,
                  char *buf, size_t len, int nullable)
{
	json_t *v = jr_get(j, obj, where, key);

	buf[0] = '\0';
	if (v == NULL || (nullable && json_is_null(v)))
		return 0;
	if (!json_is_string(v)) {
		jr_fail(j, "%s is not a string", j->name);
		return 0;
	}
	if (json_string_length(v) >= len) {
		jr_fail(j, "%s is longer than %zu bytes", j->name, len - 1);
		return 0;
	}
	memcpy(buf, json_string_value(v), json_string_length(v) + 1);
	return 1;
}

/* A bucket list's [index, count]; 0, or -1 after saying what is wrong. */
static int jr_bucket(struct jr *j, json_t *pair, const char *path,
                     uint64_t *idx, uint64_t *count)
{
	json_t *i = json_array_get(pair, 0), *c = json_array_get(pair, 1);

	if (!json_is_array(pair) || json_array_size(pair) != 2 ||
	    !json_is_integer(i) || !json_is_integer(c) ||
	    json_integer_value(i) < 0 || json_integer_value(c) < 0) {
		jr_fail(j,
		        "%s.hist.buckets holds something other than "
		        "[index, count]",
		        path);
		return -1;
	}
	*idx = (uint64_t)json_integer_value(i);
	*count = (uint64_t)json_integer_value(c);
	if (*idx >= HIST_BUCKETS) {
		jr_fail(j, "%s.hist.buckets has index %" PRIu64 ", past %u",
		        path, *idx, HIST_BUCKETS - 1);
		return -1;
	}
	return 0;
}

/* The buckets into h; their total count, or 0 after jr_fail. */
static uint64_t jr_buckets(struct jr *j, json_t *list, const char *path,
                           struct hist *h, unsigned *lo, unsigned *hi)
{
	uint64_t total = 0, idx, count, next = 0;
	size_t k;

	if (!json_is_array(list)) {
		jr_fail(j, "%s.hist.buckets is not a list", path);
		return 0;
	}
	for (k = 0; k < json_array_size(list); k++) {
		if (jr_bucket(j, json_array_get(list, k), path, &idx, &count) <
		    0)
			return 0;
		if (idx < next) {
			jr_fail(j,
			        "%s.hist.buckets is not in increasing "
			        "order of index",
			        path);
			return 0;
		}
		next = idx + 1;
		if (count == 0)
			continue;
		if (total + count < total) {
			jr_fail(j, "%s.hist.buckets count past 2^64", path);
			return 0;
		}
		if (total == 0)
			*lo = (unsigned)idx;
		*hi = (unsigned)idx;
		total += count;
		h->buckets[idx] = count;
	}
	return total;
}

/*
 * The histogram of the latency object lat ("latency_us"), as json_hist in
 * bench_report.c writes it.
 */
static void jr_hist(struct jr *j, json_t *lat, const char *path, struct hist *h)
{
	char where[64], unit[8];
	json_t *hj;
	uint64_t min, max, sum, total, count;
	unsigned lo = 0, hi = 0;

	hist_init(h);
	if (j->bad)
		return;
	if (!json_is_object(lat)) {
		jr_fail(j, "%s is not an object", path);
		return;
	}
	if ((hj = json_object_get(lat, "hist")) == NULL ||
	    !json_is_object(hj)) {
		jr_fail(j,
		        "%s has no hist (bucket counts): written by an "
		        "older forkloop-bench?",
		        path);
		return;
	}
	snprintf(where, sizeof where, "%s.hist", path);
	if (jr_str(j, hj, where, "unit", unit, sizeof unit, 0) &&
	    strcmp(unit, "ns") != 0)
		jr_fail(j, "%s.unit is \"%s\", not \"ns\"", where, unit);
	if (jr_u64(j, hj, where, "sub_bits") != HIST_SUB_BITS && !j->bad)
		jr_fail(j, "%s.sub_bits is not %u: another histogram layout",
		        where, HIST_SUB_BITS);
	min = jr_u64(j, hj, where, "min");
	max = jr_u64(j, hj, where, "max");
	sum = jr_u64(j, hj, where, "sum");
	count = jr_u64(j, lat, path, "count");
	if (j->bad)
		return;
	if (json_object_get(hj, "buckets") == NULL) {
		jr_fail(j, "no %s.buckets", where);
		return;
	}
	total = jr_buckets(j, json_object_get(hj, "buckets"), path, h, &lo,
	                   &hi);
	if (j->bad)
		return;
	if (total != count) {
		jr_fail(j,
		        "%s.count is %" PRIu64 " but its buckets hold %" PRIu64,
		        path, count, total);
		return;
	}
	if (total > 0 &&
	    (min > max || hist_bucket(min) != lo || hist_bucket(max) != hi)) {
		jr_fail(j,
		        "%s.min and max are not in its first and last "
		        "buckets",
		        where);
		return;
	}
	h->count = total;
	h->sum = sum;
	if (total > 0) {
		h->min = min;
		h->max = max;
	}
}

/* "tls": null, or what the handshakes were (json_tls in bench_report.c). */
static void jr_tls(struct jr *j, json_t *root, struct bench_input *in)
{
	struct bench_opts *o = &in->o;
	struct bench_tls *t = &in->r.tls;
	json_t *tls = jr_get(j, root, "", "tls");

	if (tls == NULL || json_is_null(tls)) {
		if (o->tls)
			jr_fail(j, "tls is null for a tls:// target");
		return;
	}
	if (!json_is_object(tls)) {
		jr_fail(j, "tls is not an object");
		return;
	}
	o->tls_verify = jr_bool(j, tls, "tls", "verify");
	/* "system": the system's store, as --tls-verify without --tls-ca. */
	if (jr_str(j, tls, "tls", "ca", in->tls_ca, sizeof in->tls_ca, 1) &&
	    strcmp(in->tls_ca, "system") != 0)
		o->tls_ca = in->tls_ca;
	/* The file names are not in the JSON; the report only asks
	 * whether there were any. */
	if (jr_bool(j, tls, "tls", "client_cert"))
		o->tls_cert = o->tls_key = "";
	o->tls_resume = jr_bool(j, tls, "tls", "resume");
	if (jr_str(j, tls, "tls", "version", in->tls_version,
	           sizeof in->tls_version, 1))
		t->version = in->tls_version;
	if (jr_str(j, tls, "tls", "cipher", in->tls_cipher,
	           sizeof in->tls_cipher, 1))
		t->cipher = in->tls_cipher;
	t->handshakes = jr_u64(j, tls, "tls", "handshakes");
	t->resumed = jr_u64(j, tls, "tls", "resumed");
	jr_hist(j, jr_get(j, tls, "tls", "handshake_latency_us"),
	        "tls.handshake_latency_us", &t->latency);
	jr_str(j, tls, "tls", "error", t->why, sizeof t->why, 1);
}

/* The options the run had, as far as the JSON holds them. */
static void jr_opts(struct jr *j, json_t *root, struct bench_input *in)
{
	struct bench_opts *o = &in->o;
	const char *why;

	jr_str(j, root, "", "target", in->target, sizeof in->target, 0);
	jr_str(j, root, "", "load", in->load, sizeof in->load, 0);
	if (j->bad)
		return;
	if (addr_parse(in->target, ADDR_CONNECT | ADDR_TLS | ADDR_UNIX,
	               &o->target, &why) < 0)
		jr_fail(j, "target '%s': %s", in->target, why);
	o->tls = o->target.tls;
	if (strcmp(in->load, "closed") != 0 && strcmp(in->load, "open") != 0 &&
	    strcmp(in->load, "churn") != 0)
		jr_fail(j, "load '%s' is not closed, open or churn", in->load);
	o->churn = strcmp(in->load, "churn") == 0;
	o->conns = jr_pos(j, root, "conns");
	o->size = jr_pos(j, root, "size");
	o->pipeline = jr_pos(j, root, "pipeline");
	o->threads = jr_pos(j, root, "threads");
	o->rate = jr_num(j, root, "", "rate");
	o->warmup = jr_num(j, root, "", "warmup_s");
	o->strict = jr_bool(j, root, "", "strict");
	o->setup_timeout = jr_num(j, root, "", "setup_timeout_s");
	o->connect_timeout = jr_num(j, root, "", "connect_timeout_s");
}

/*
 * *sum += v where the sum stays a count the JSON can carry (jansson's
 * json_int_t is int64, so INT64_MAX at most); 0, or -1 with *sum as it was.
 */
static int count_add(uint64_t *sum, uint64_t v)
{
	if (*sum > INT64_MAX || v > INT64_MAX - *sum)
		return -1;
	*sum += v;
	return 0;
}

/* The sum of the kinds, or UINT64_MAX past INT64_MAX. */
static uint64_t bench_errors_sum(const struct bench_errors *e)
{
	const uint64_t kinds[] = {e->mismatch, e->reset,     e->closed,
	                          e->connect,  e->handshake, e->truncated};
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (count_add(&sum, kinds[i]) < 0)
			return UINT64_MAX;
	return sum;
}

static const char *u64_str(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

static void jr_errors(struct jr *j, json_t *root, struct bench_result *r)
{
	char num[24];
	uint64_t kinds;
	json_t *k;

	r->errors = jr_u64(j, root, "", "errors");
	if ((k = jr_get(j, root, "", "error_kinds")) == NULL)
		return;
	if (!json_is_object(k)) {
		jr_fail(j, "error_kinds is not an object");
		return;
	}
	r->err.mismatch = jr_u64(j, k, "error_kinds", "mismatch");
	r->err.reset = jr_u64(j, k, "error_kinds", "reset");
	r->err.closed = jr_u64(j, k, "error_kinds", "closed");
	r->err.connect = jr_u64(j, k, "error_kinds", "connect");
	r->err.handshake = jr_u64(j, k, "error_kinds", "handshake");
	r->err.truncated = jr_u64(j, k, "error_kinds", "truncated");
	if (!j->bad && (kinds = bench_errors_sum(&r->err)) != r->errors)
		jr_fail(j, "errors is %" PRIu64 " but error_kinds add up to %s",
		        r->errors,
		        kinds == UINT64_MAX ? "more than 2^63 - 1"
		                            : u64_str(kinds, num, sizeof num));
}

static void jr_result(struct jr *j, json_t *root, struct bench_input *in)
{
	struct bench_result *r = &in->r;
	json_t *v;
	int merged;

	jr_opts(j, root, in);
	r->elapsed = jr_num(j, root, "", "duration_s");
	r->messages = jr_u64(j, root, "", "messages");
	r->bytes = jr_u64(j, root, "", "bytes");
	r->in_flight = jr_u64(j, root, "", "in_flight");
	r->unsent = jr_u64(j, root, "", "unsent");
	jr_errors(j, root, r);
	r->connects = jr_u64(j, root, "", "connects");
	r->connect_ms = jr_num(j, root, "", "connect_ms");
	if ((v = jr_get(j, root, "", "setup_ms")) != NULL && !json_is_null(v))
		r->setup_ms = jr_num(j, root, "", "setup_ms");
	r->setup_done = v != NULL && !json_is_null(v);
	r->load_start_ms = jr_num(j, root, "", "load_start_ms");
	r->late_conns = jr_u64(j, root, "", "late_conns");
	r->conns_pending = jr_u64(j, root, "", "conns_pending");
	/* Which signal is not in the JSON; any stands for "interrupted". */
	r->interrupted = jr_bool(j, root, "", "interrupted");
	r->stalled = jr_bool(j, root, "", "stalled");
	r->start_unix_s = jr_num(j, root, "", "start_unix_s");
	r->end_unix_s = jr_num(j, root, "", "end_unix_s");
	if (!j->bad && r->end_unix_s < r->start_unix_s)
		jr_fail(j, "end_unix_s is before start_unix_s");
	jr_hist(j, jr_get(j, root, "", "latency_us"), "latency_us",
	        &r->latency);
	jr_hist(j, jr_get(j, root, "", "latency_uncorrected_us"),
	        "latency_uncorrected_us", &r->latency_uncorrected);
	if ((v = jr_get(j, root, "", "issue_lag_us")) != NULL &&
	    !json_is_null(v))
		jr_hist(j, v, "issue_lag_us", &r->issue_lag);
	jr_tls(j, root, in);
	/* A merge's rate is its inputs' summed, not messages over its
	 * common interval; a run's is that, without the JSON's rounding. */
	merged = json_object_get(root, "merged") != NULL;
	in->msgs_per_sec = jr_num(j, root, "", "msgs_per_sec");
	in->mbytes_per_sec = jr_num(j, root, "", "mbytes_per_sec");
	if (!merged && r->elapsed > 0) {
		in->msgs_per_sec = (double)r->messages / r->elapsed;
		in->mbytes_per_sec = (double)r->bytes / r->elapsed / 1e6;
	}
	if (!j->bad &&
	    (!isfinite(in->msgs_per_sec) || !isfinite(in->mbytes_per_sec)))
		jr_fail(j,
		        "duration_s %g is too short for its messages: the "
		        "rate is past what a double holds",
		        r->elapsed);
}

/* The line of buf that byte off is on, from 1. */
static int line_of(const char *buf, size_t off)
{
	int line = 1;
	size_t i;

	for (i = 0; i < off; i++)
		line += buf[i] == '\n';
	return line;
}

/*
 * Whether obj is a result: a --json object (its "type" is "summary", or it
 * has none, as a file hand-made or from before types has), not one of
 * --json-stream's interval lines.
 */
static int is_result(json_t *obj)
{
	json_t *type = json_object_get(obj, "type");

	return type == NULL ||
	       (json_is_string(type) &&
	        strcmp(json_string_value(type), "summary") == 0);
}

/*
 * The one result among the JSON objects in buf: a --json object, or the
 * summary line of a --json-stream. Several (--json >> FILE, or files
 * concatenated) are refused: which of them was meant cannot be known, and
 * adding them all up would merge runs no one asked to merge. NULL after
 * saying why.
 */
static json_t *pick_result(const char *buf, size_t len, struct jr *j)
{
	json_t *obj, *result = NULL;
	json_error_t err;
	size_t off = 0;
	int objects = 0, results = 0, second = 0;

	for (;;) {
		while (off < len && (buf[off] == ' ' || buf[off] == '\t' ||
		                     buf[off] == '\r' || buf[off] == '\n'))
			off++;
		if (off == len)
			break;
		obj = json_loadb(buf + off, len - off, JSON_DISABLE_EOF_CHECK,
		                 &err);
		if (obj == NULL) {
			jr_fail(j, "not JSON: %s at line %d", err.text,
			        line_of(buf, off) + err.line - 1);
			break;
		}
		if (!json_is_object(obj)) {
			json_decref(obj);
			jr_fail(j,
			        "not a forkloop-bench result: a JSON list, "
			        "not an object, at line %d",
			        line_of(buf, off));
			break;
		}
		objects++;
		if (is_result(obj) && ++results == 2)
			second = line_of(buf, off);
		if (is_result(obj) && result == NULL)
			result = json_incref(obj);
		json_decref(obj);
		off += (size_t)err.position;
	}
	if (!j->bad && objects == 0)
		jr_fail(j, "empty: no JSON object");
	if (!j->bad && results == 0)
		jr_fail(j, "a stream without its summary line (did the run "
		           "end?)");
	if (!j->bad && results > 1)
		jr_fail(j,
		        "holds %d results (the second at line %d): one result "
		        "per file, as --json writes it",
		        results, second);
	if (j->bad) {
		json_decref(result);
		return NULL;
	}
	return result;
}

int bench_input_parse(const char *buf, size_t len, struct bench_input *in,
                      char *why, size_t whylen)
{
	struct jr j = {.why = why, .whylen = whylen};
	json_t *root;

	memset(in, 0, sizeof *in);
	hist_init(&in->r.latency);
	hist_init(&in->r.latency_uncorrected);
	hist_init(&in->r.issue_lag);
	hist_init(&in->r.tls.latency);
	if ((root = pick_result(buf, len, &j)) == NULL)
		return -1;
	jr_result(&j, root, in);
	json_decref(root);
	return j.bad ? -1 : 0;
}

/* The whole of f into *buf (malloc'd) and *len; 0, or -1 with errno. */
static int read_all(FILE *f, char **buf, size_t *len)
{
	size_t cap = 65536, n;
	char *b = malloc(cap), *nb;

	*len = 0;
	while (b != NULL) {
		n = fread(b + *len, 1, cap - *len, f);
		*len += n;
		if (*len < cap) {
			if (ferror(f)) {
				free(b);
				return -1;
			}
			*buf = b;
			return 0;
		}
		cap *= 2;
		if ((nb = realloc(b, cap)) == NULL)
			free(b);
		b = nb;
	}
	errno = ENOMEM;
	return -1;
}

int bench_input_read(const char *path, struct bench_input *in, char *why,
                     size_t whylen)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *buf;
	size_t len;
	int rc;

	if (f == NULL || read_all(f, &buf, &len) < 0) {
		snprintf(why, whylen, "cannot read: %s", strerror(errno));
		if (f != NULL && f != stdin)
			fclose(f);
		return -1;
	}
	if (f != stdin)
		fclose(f);
	rc = bench_input_parse(buf, len, in, why, whylen);
	free(buf);
	return rc;
}

int bench_input_same(const struct bench_input *a, const struct bench_input *b)
{
	return a->r.start_unix_s == b->r.start_unix_s &&
	       a->r.end_unix_s == b->r.end_unix_s &&
	       a->r.messages == b->r.messages && a->r.bytes == b->r.bytes;
}

const char *bench_input_mismatch(const struct bench_input *a,
                                 const struct bench_input *b, char *why,
                                 size_t whylen)
{
	/* Before the target, which differs too ("tls://"), to say why. */
	if (a->o.tls != b->o.tls) {
		snprintf(why, whylen, "%s, not %s", b->o.tls ? "TLS" : "plain",
		         a->o.tls ? "TLS" : "plain");
		return "tls";
	}
	/* A full handshake or an abbreviated one: different work for the
	 * server on every connect. */
	if (a->o.tls_resume != b->o.tls_resume) {
		snprintf(why, whylen, "tls.resume %s, not %s",
		         b->o.tls_resume ? "true" : "false",
		         a->o.tls_resume ? "true" : "false");
		return "tls.resume";
	}
	if (strcmp(a->target, b->target) != 0) {
		snprintf(why, whylen, "target %s, not %s", b->target,
		         a->target);
		return "target";
	}
	if (strcmp(a->load, b->load) != 0) {
		snprintf(why, whylen, "load %s, not %s", b->load, a->load);
		return "load";
	}
	if (a->o.size != b->o.size) {
		snprintf(why, whylen, "size %" PRIu64 ", not %" PRIu64,
		         b->o.size, a->o.size);
		return "size";
	}
	if (a->o.pipeline != b->o.pipeline) {
		snprintf(why, whylen, "pipeline %" PRIu64 ", not %" PRIu64,
		         b->o.pipeline, a->o.pipeline);
		return "pipeline";
	}
	return NULL;
}

/* A count of a result that a merge sums, by its name in the JSON. */
struct merge_count {
	const char *name;
	size_t off; /* of its uint64_t in struct bench_result */
};

/* Where a count is in struct bench_result. */
#define RESULT_AT(field) offsetof(struct bench_result, field)

static const struct merge_count merge_counts[] = {
        {"messages", RESULT_AT(messages)},
        {"bytes", RESULT_AT(bytes)},
        {"errors", RESULT_AT(errors)},
        {"error_kinds.mismatch", RESULT_AT(err.mismatch)},
        {"error_kinds.reset", RESULT_AT(err.reset)},
        {"error_kinds.closed", RESULT_AT(err.closed)},
        {"error_kinds.connect", RESULT_AT(err.connect)},
        {"error_kinds.handshake", RESULT_AT(err.handshake)},
        {"error_kinds.truncated", RESULT_AT(err.truncated)},
        {"connects", RESULT_AT(connects)},
        {"late_conns", RESULT_AT(late_conns)},
        {"conns_pending", RESULT_AT(conns_pending)},
        {"in_flight", RESULT_AT(in_flight)},
        {"unsent", RESULT_AT(unsent)},
        {"tls.handshakes", RESULT_AT(tls.handshakes)},
        {"tls.resumed", RESULT_AT(tls.resumed)},
        /* A histogram's buckets add up to its count, each at most it. */
        {"latency_us.count", RESULT_AT(latency.count)},
        {"latency_us.hist.sum", RESULT_AT(latency.sum)},
        {"latency_uncorrected_us.count", RESULT_AT(latency_uncorrected.count)},
        {"latency_uncorrected_us.hist.sum", RESULT_AT(latency_uncorrected.sum)},
        {"issue_lag_us.count", RESULT_AT(issue_lag.count)},
        {"issue_lag_us.hist.sum", RESULT_AT(issue_lag.sum)},
        {"tls.handshake_latency_us.count", RESULT_AT(tls.latency.count)},
        {"tls.handshake_latency_us.hist.sum", RESULT_AT(tls.latency.sum)},
};

static uint64_t count_at(const struct bench_result *r, size_t off)
{
	uint64_t v;

	memcpy(&v, (const char *)r + off, sizeof v);
	return v;
}

static int merge_overflows(const char *name, char *why, size_t whylen)
{
	snprintf(why, whylen,
	         "the sum of %s overflows: past %" PRId64 ", the largest "
	         "count the JSON holds",
	         name, INT64_MAX);
	return -1;
}

static int merge_overflows_double(const char *name, char *why, size_t whylen)
{
	snprintf(why, whylen,
	         "the sum of %s overflows: past the largest double", name);
	return -1;
}

/*
 * Whether every count of the merge, and what the report derives from them
 * (unanswered, conns x pipeline), stays a count the JSON holds; 0, or -1
 * with why.
 */
static int merge_counts_fit(struct bench_input *const *in, size_t n, char *why,
                            size_t whylen)
{
	uint64_t sum, in_flight = 0, unsent = 0, conns = 0, threads = 0;
	size_t i, k;

	for (i = 0; i < sizeof merge_counts / sizeof merge_counts[0]; i++) {
		sum = 0;
		for (k = 0; k < n; k++)
			if (count_add(&sum, count_at(&in[k]->r,
			                             merge_counts[i].off)) < 0)
				return merge_overflows(merge_counts[i].name,
				                       why, whylen);
	}
	for (k = 0; k < n; k++) {
		/* These two fit, by the sums above. */
		in_flight += in[k]->r.in_flight;
		unsent += in[k]->r.unsent;
		if (count_add(&conns, in[k]->o.conns) < 0)
			return merge_overflows("conns", why, whylen);
		if (count_add(&threads, in[k]->o.threads) < 0)
			return merge_overflows("threads", why, whylen);
	}
	if (count_add(&in_flight, unsent) < 0)
		return merge_overflows("unanswered", why, whylen);
	/* Little's law's check divides by the messages kept in flight. */
	if (in[0]->o.pipeline > 0 && conns > INT64_MAX / in[0]->o.pipeline) {
		snprintf(why, whylen,
		         "conns %" PRIu64 " x pipeline %" PRIu64
		         " overflows: past %" PRId64,
		         conns, in[0]->o.pipeline, INT64_MAX);
		return -1;
	}
	return 0;
}

/*
 * Whether every figure the report prints (bench_report_text and _json,
 * bench_warnings) is a finite number, s being bench_summarize's of o and
 * r; 0, or -1 with why. The inputs are finite and not negative, but their
 * sums and products need not be.
 */
static int merge_finite(const struct bench_opts *o,
                        const struct bench_result *r,
                        const struct bench_summary *s, char *why, size_t whylen)
{
	const struct {
		const char *name;
		double v;
	} figures[] = {
	        {"rate", o->rate},
	        {"warmup_s", o->warmup},
	        {"setup_timeout_s", o->setup_timeout},
	        {"connect_timeout_s", o->connect_timeout},
	        {"duration_s", r->elapsed},
	        {"start_unix_s", r->start_unix_s},
	        {"end_unix_s", r->end_unix_s},
	        {"connect_ms", r->connect_ms},
	        {"setup_ms", r->setup_ms},
	        {"load_start_ms", r->load_start_ms},
	        {"overlap of the windows", r->merged_overlap},
	        {"msgs_per_sec", s->msgs_per_sec},
	        {"mbytes_per_sec", s->mbytes_per_sec},
	        {"rate_shortfall_pct", s->rate_shortfall_pct},
	        {"little_ratio", s->little_ratio},
	};
	size_t i;

	for (i = 0; i < sizeof figures / sizeof figures[0]; i++) {
		if (isfinite(figures[i].v))
			continue;
		snprintf(why, whylen,
		         "the merged %s is not a finite number: the inputs' "
		         "figures are too large",
		         figures[i].name);
		return -1;
	}
	return 0;
}

int bench_merge(struct bench_input *const *in, size_t n, struct bench_opts *o,
                struct bench_result *r, char *why, size_t whylen)
{
	struct bench_summary s;
	double start = in[0]->r.start_unix_s, end = in[0]->r.end_unix_s;
	double longest = 0;
	size_t k;

	if (merge_counts_fit(in, n, why, whylen) < 0)
		return -1;
	*o = in[0]->o;
	o->conns = o->threads = 0;
	o->rate = 0;
	memset(r, 0, sizeof *r);
	hist_init(&r->latency);
	hist_init(&r->latency_uncorrected);
	hist_init(&r->issue_lag);
	hist_init(&r->tls.latency);
	r->setup_done = 1;
	for (k = 0; k < n; k++) {
		const struct bench_input *x = in[k];

		o->conns += x->o.conns;
		o->threads += x->o.threads;
		o->rate += x->o.rate;
		o->strict |= x->o.strict;
		if (x->o.warmup > o->warmup)
			o->warmup = x->o.warmup;
		bench_result_merge(r, &x->r);
		r->setup_done = r->setup_done && x->r.setup_done;
		if (x->r.setup_ms > r->setup_ms)
			r->setup_ms = x->r.setup_ms;
		if (x->r.load_start_ms > r->load_start_ms)
			r->load_start_ms = x->r.load_start_ms;
		if (!r->interrupted)
			r->interrupted = x->r.interrupted;
		r->stalled |= x->r.stalled;
		r->merged_msgs_per_sec += x->msgs_per_sec;
		r->merged_mbytes_per_sec += x->mbytes_per_sec;
		if (x->r.start_unix_s > start)
			start = x->r.start_unix_s;
		if (x->r.end_unix_s < end)
			end = x->r.end_unix_s;
		if (x->r.end_unix_s - x->r.start_unix_s > longest)
			longest = x->r.end_unix_s - x->r.start_unix_s;
	}
	if (!isfinite(o->rate))
		return merge_overflows_double("rate", why, whylen);
	if (!isfinite(r->merged_msgs_per_sec))
		return merge_overflows_double("msgs_per_sec", why, whylen);
	if (!isfinite(r->merged_mbytes_per_sec))
		return merge_overflows_double("mbytes_per_sec", why, whylen);
	if (!r->setup_done)
		r->setup_ms = 0;
	if (end < start)
		end = start;
	r->merged = n;
	r->start_unix_s = start;
	r->end_unix_s = end;
	r->elapsed = end - start;
	r->merged_overlap = longest > 0 ? (end - start) / longest : 1;
	bench_summarize(o, r, &s);
	return merge_finite(o, r, &s, why, whylen);
}

static const char merge_usage_text[] =
        "usage: %s merge [-h] [--json] [--hist FILE] FILE...\n";

static const char merge_help_text[] =
        "Add up results that forkloop-bench --json wrote, from processes "
        "that loaded\n"
        "one server at the same time, into one report, as if one process had "
        "run\n"
        "them all. A FILE holds one result: one JSON object, or a "
        "--json-stream (its\n"
        "summary line counts); a file with several (--json >> FILE) is "
        "refused. A FILE\n"
        "of - is standard input, which can be given once.\n"
        "\n"
        "Summed: messages, bytes, errors of each kind, connects, unanswered, "
        "late\n"
        "and pending connections, conns, threads and --rate. The latency "
        "histograms\n"
        "are added bucket by bucket, so the percentiles are those of every "
        "message.\n"
        "msgs_per_sec and mbytes_per_sec are the sum of each run's own; "
        "duration_s\n"
        "is the overlap of their windows (start_unix_s to end_unix_s). A "
        "warning says\n"
        "when that is less than 90% of the longest run: they did not run at "
        "the same\n"
        "time, and their rates summed are not one load.\n"
        "\n"
        "      --json               print one JSON object, with \"merged\": "
        "N, which\n"
        "                           can be merged again\n"
        "      --hist FILE          write the merged latency histogram to "
        "FILE\n"
        "                           (.hgrm, values in milliseconds)\n"
        "  -h, --help               show this help and exit\n"
        "\n"
        "The FILEs must have the same target (TLS or plain), --tls-resume, "
        "size,\n"
        "pipeline and load (closed, open or churn). The same result given "
        "twice (the\n"
        "same start_unix_s, end_unix_s, messages and bytes) is refused.\n"
        "\n"
        "Exit status: 0 when the report was printed, 1 if it or --hist FILE "
        "could\n"
        "not be written, 2 on bad usage, a FILE that cannot be read, is not "
        "one\n"
        "result, is of another load or the same result as another, or a sum "
        "that\n"
        "overflows (the message names the FILE, or the sum).\n"
        "\n"
        "Example:\n"
        "  forkloop-bench --json -c 50 -d 10 127.0.0.1:6666 >a.json &\n"
        "  forkloop-bench --json -c 50 -d 10 127.0.0.1:6666 >b.json; wait\n"
        "  forkloop-bench merge --hist all.hgrm a.json b.json\n";

enum { MERGE_JSON = 256, MERGE_HIST };

static const struct option merge_longopts[] = {
        {"json", no_argument, NULL, MERGE_JSON},
        {"hist", required_argument, NULL, MERGE_HIST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
};

static int merge_bad(const char *fmt, const char *arg)
{
	const char *prog = log_progname();

	fprintf(stderr, "%s: merge: ", prog);
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	fprintf(stderr, merge_usage_text, prog);
	return 2;
}

/* Read and check every input; 0, or 2 after naming the file. */
static int merge_read(char **paths, size_t n, struct bench_input **in)
{
	char why[BENCH_INPUT_WHYLEN];
	size_t i, k;

	for (k = 0; k < n; k++) {
		if ((in[k] = malloc(sizeof **in)) == NULL) {
			log_error("out of memory");
			return 1;
		}
		if (bench_input_read(paths[k], in[k], why, sizeof why) < 0) {
			log_error("%s: %s", paths[k], why);
			return 2;
		}
		if (k > 0 && bench_input_mismatch(in[0], in[k], why,
		                                  sizeof why) != NULL) {
			log_error("%s: %s as in %s: results of different loads "
			          "do not add up",
			          paths[k], why, paths[0]);
			return 2;
		}
		for (i = 0; i < k; i++) {
			if (!bench_input_same(in[i], in[k]))
				continue;
			log_error("%s: the same result as %s (the same "
			          "start_unix_s, end_unix_s, messages and "
			          "bytes): a result counts once",
			          paths[k], paths[i]);
			return 2;
		}
	}
	return 0;
}

/* The merged report, its warnings and --hist; the exit status. */
static int merge_report(const struct bench_opts *o,
                        const struct bench_result *r, int json,
                        const char *hist)
{
	char warn[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];
	int i, n, status = 0;

	if (json)
		bench_report_json(stdout, o, r);
	else
		bench_report_text(stdout, o, r);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		log_error("cannot write the report: %s", strerror(errno));
		status = 1;
	}
	n = bench_warnings(o, r, warn);
	for (i = 0; i < n; i++)
		log_warn("warning: %s", warn[i]);
	if (hist != NULL && bench_hist_save(hist, &r->latency) < 0)
		status = 1;
	return status;
}

/* Read the n inputs into in, merge them into r and report; the status. */
static int merge_run(char **paths, size_t n, struct bench_input **in,
                     struct bench_result *r, int json, const char *hist)
{
	struct bench_opts o;
	char why[BENCH_INPUT_WHYLEN];
	int status;

	if ((status = merge_read(paths, n, in)) != 0)
		return status;
	if (bench_merge(in, n, &o, r, why, sizeof why) < 0) {
		log_error("%s", why);
		return 2;
	}
	o.json = json;
	return merge_report(&o, r, json, hist);
}

int bench_merge_main(int argc, char **argv)
{
	struct bench_input **in = NULL;
	struct bench_result *r = NULL;
	const char *hist = NULL;
	char opt[3];
	int c, json = 0, status = 1;
	size_t n, k, stdins;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", merge_longopts, NULL)) !=
	       -1) {
		switch (c) {
		case MERGE_JSON:
			json = 1;
			break;
		case MERGE_HIST:
			hist = optarg;
			break;
		case 'h':
			printf(merge_usage_text, log_progname());
			putchar('\n');
			fputs(merge_help_text, stdout);
			return 0;
		case ':':
			return merge_bad("option '%s' needs a value",
			                 argv[optind - 1]);
		default:
			return merge_bad("unknown option '%s'",
			                 opts_refused(argv, opt));
		}
	}
	if (optind == argc)
		return merge_bad("%s", "no FILE to merge");
	n = (size_t)(argc - optind);
	for (k = 0, stdins = 0; k < n; k++)
		stdins += strcmp(argv[optind + k], "-") == 0;
	if (stdins > 1)
		return merge_bad("%s",
		                 "standard input can be given once ('-')");
	if ((in = calloc(n, sizeof *in)) == NULL ||
	    (r = malloc(sizeof *r)) == NULL)
		log_error("out of memory");
	else
		status = merge_run(argv + optind, n, in, r, json, hist);
	for (k = 0; in != NULL && k < n; k++)
		free(in[k]);
	free(in);
	free(r);
	return status;
}
