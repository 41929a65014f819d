/*
 * bench_interval.c - forkloop-bench's live results (-i, --json-stream): an
 * interval cut off a worker's cumulative figures at a boundary, and, in the
 * main thread, the workers' intervals added up and printed in order
 * (bench_interval.h says what an interval holds).
 *
 * A worker's interval is its own allocation, handed whole to the main
 * thread with the note that carries it (bench_run.c), so neither side
 * shares anything it writes with the other: no locks, and nothing per
 * message.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forkloop/bench_interval.h"

#define NSEC 1e9

struct bench_ival_mark {
	uint64_t messages, bytes, errors;
	struct bench_errors err;
	struct hist lat_due, lat_sent; /* cumulative, each way */
};

/* One worker's intervals, delivered and not printed yet, oldest first. */
struct ival_queue {
	struct bench_ival *head, *tail;
	int ended; /* its last one came */
};

struct bench_ivals {
	const struct bench_opts *o;
	FILE *f;
	uint64_t n;      /* workers */
	uint64_t k;      /* the next interval to print */
	uint64_t t0;     /* the window's start, once a worker says */
	uint64_t errors; /* so far, for the lines for people */
	int header;      /* the lines for people have their header */
	struct ival_queue *q;
	struct bench_ival sum;
};

struct bench_ival_mark *bench_ival_mark_new(void)
{
	struct bench_ival_mark *m = calloc(1, sizeof *m);

	if (m == NULL)
		return NULL;
	hist_init(&m->lat_due);
	hist_init(&m->lat_sent);
	return m;
}

void bench_ival_mark_free(struct bench_ival_mark *m)
{
	free(m);
}

/*
 * d = a + b - m bucket by bucket (b may be NULL), and m moves to a + b.
 * Cumulative counts only grow, so the differences are what was recorded
 * since the mark. A cumulative min that fell (or max that rose) since was
 * recorded since, exactly; otherwise the interval's lies in its lowest
 * (highest) bucket.
 */
static void ival_delta(struct hist *d, struct hist *m, const struct hist *a,
                       const struct hist *b)
{
	uint64_t min = a->min, max = a->max, count = a->count, sum = a->sum;
	unsigned i, lo = HIST_BUCKETS, hi = 0;

	if (b != NULL) {
		min = b->min < min ? b->min : min;
		max = b->max > max ? b->max : max;
		count += b->count;
		sum += b->sum;
	}
	hist_init(d);
	for (i = 0; i < HIST_BUCKETS; i++) {
		uint64_t now = a->buckets[i] + (b != NULL ? b->buckets[i] : 0);

		d->buckets[i] = now - m->buckets[i];
		m->buckets[i] = now;
		if (d->buckets[i] == 0)
			continue;
		if (lo == HIST_BUCKETS)
			lo = i;
		hi = i;
	}
	d->count = count - m->count;
	d->sum = sum - m->sum;
	if (d->count > 0) {
		d->min = min < m->min ? min : hist_bucket_low(lo);
		if (d->min < min)
			d->min = min;
		d->max = max > m->max ? max : hist_bucket_high(hi);
		if (d->max > max)
			d->max = max;
	}
	m->count = count;
	m->sum = sum;
	m->min = min;
	m->max = max;
}

static void ival_errors(struct bench_errors *d, struct bench_errors *m,
                        const struct bench_errors *now)
{
	d->connect = now->connect - m->connect;
	d->mismatch = now->mismatch - m->mismatch;
	d->reset = now->reset - m->reset;
	d->closed = now->closed - m->closed;
	d->handshake = now->handshake - m->handshake;
	d->truncated = now->truncated - m->truncated;
	*m = *now;
}

struct bench_ival *
bench_ival_take(struct bench_ival_mark *m, const struct bench_result *r,
                const struct hist *lat_due, const struct hist *more_due,
                const struct hist *lat_sent, const struct hist *more_sent)
{
	struct bench_ival *iv = calloc(1, sizeof *iv);

	if (iv == NULL)
		return NULL;
	iv->messages = r->messages - m->messages;
	iv->bytes = r->bytes - m->bytes;
	iv->errors = r->errors - m->errors;
	m->messages = r->messages;
	m->bytes = r->bytes;
	m->errors = r->errors;
	ival_errors(&iv->err, &m->err, &r->err);
	ival_delta(&iv->latency, &m->lat_due, lat_due, more_due);
	ival_delta(&iv->latency_uncorrected, &m->lat_sent, lat_sent, more_sent);
	return iv;
}

uint64_t bench_ival_start(const struct bench_opts *o, uint64_t t_start)
{
	return t_start + (uint64_t)(o->warmup * NSEC);
}

uint64_t bench_ival_boundary(const struct bench_opts *o, uint64_t t_start,
                             uint64_t k)
{
	uint64_t len = (uint64_t)llround(o->interval * NSEC);
	uint64_t at = bench_ival_start(o, t_start) + (k + 1) * len;
	uint64_t end;

	if (o->duration <= 0)
		return at;
	/* As the worker's stop timer counts it. */
	end = t_start + (uint64_t)((o->warmup + o->duration) * NSEC);
	return at + len / 100 >= end ? 0 : at;
}

struct bench_ivals *bench_ivals_new(const struct bench_opts *o,
                                    uint64_t workers, FILE *f)
{
	struct bench_ivals *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->q = calloc(workers, sizeof *s->q);
	if (s->q == NULL) {
		free(s);
		return NULL;
	}
	s->o = o;
	s->f = f;
	s->n = workers;
	return s;
}

void bench_ivals_free(struct bench_ivals *s)
{
	uint64_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++) {
		while (s->q[i].head != NULL) {
			struct bench_ival *iv = s->q[i].head;

			s->q[i].head = iv->next;
			free(iv);
		}
	}
	free(s->q);
	free(s);
}

/*
 * Interval s->k can be printed: every worker has delivered it, or ended
 * before it. A worker's intervals come in order from 0, so a queue's head
 * is s->k's or the queue is empty.
 */
static int ivals_ready(const struct bench_ivals *s)
{
	uint64_t i;
	int any = 0;

	for (i = 0; i < s->n; i++) {
		const struct ival_queue *q = &s->q[i];

		if (q->head != NULL)
			any = 1;
		else if (!q->ended)
			return 0;
	}
	return any;
}

static void ivals_add(struct bench_ival *sum, const struct bench_ival *iv)
{
	sum->messages += iv->messages;
	sum->bytes += iv->bytes;
	sum->errors += iv->errors;
	sum->err.connect += iv->err.connect;
	sum->err.mismatch += iv->err.mismatch;
	sum->err.reset += iv->err.reset;
	sum->err.closed += iv->err.closed;
	sum->err.handshake += iv->err.handshake;
	sum->err.truncated += iv->err.truncated;
	sum->conns_open += iv->conns_open;
	hist_merge(&sum->latency, &iv->latency);
	hist_merge(&sum->latency_uncorrected, &iv->latency_uncorrected);
	if (iv->last && iv->t_end > sum->t_end)
		sum->t_end = iv->t_end;
	if (!iv->last)
		sum->last = 0;
}

/* Take interval s->k off the queues into s->sum. */
static void ivals_collect(struct bench_ivals *s)
{
	struct bench_ival *sum = &s->sum;
	uint64_t i;

	memset(sum, 0, sizeof *sum);
	hist_init(&sum->latency);
	hist_init(&sum->latency_uncorrected);
	sum->index = s->k;
	sum->last = 1;
	for (i = 0; i < s->n; i++) {
		struct ival_queue *q = &s->q[i];
		struct bench_ival *iv = q->head;

		if (iv == NULL)
			continue;
		ivals_add(sum, iv);
		q->head = iv->next;
		if (q->head == NULL)
			q->tail = NULL;
		free(iv);
	}
}

static double ival_us(const struct hist *h, double p)
{
	return (double)hist_quantile(h, p) / 1e3;
}

/* label over three latency columns, as dashes around it. */
static void text_group(FILE *f, const char *label)
{
	int width = 3 * 10 - 1, len = (int)strlen(label) + 2;
	int left = (width - len) / 2, right = width - len - left;

	fprintf(f, " %.*s %s %.*s", left, "--------------", label, right,
	        "--------------");
}

static void text_header(struct bench_ivals *s)
{
	FILE *f = s->f;

	if (s->o->rate > 0) {
		fprintf(f, "%48s", "");
		text_group(f, "from due");
		text_group(f, "from send");
		fputc('\n', f);
	}
	fprintf(f, "%-15s %10s %11s %9s %9s %9s %9s", "interval_s", "messages",
	        "msgs/s", "MB/s", "p50_us", "p99_us", "max_us");
	if (s->o->rate > 0)
		fprintf(f, " %9s %9s %9s", "p50_us", "p99_us", "max_us");
	fprintf(f, " %14s %6s\n", "errors (new)", "conns");
	s->header = 1;
}

static void text_line(struct bench_ivals *s, double start, double end,
                      double secs)
{
	const struct bench_ival *x = &s->sum;
	char span[48], errs[48];

	if (!s->header)
		text_header(s);
	snprintf(span, sizeof span, "%.2f-%.2f", start, end);
	snprintf(errs, sizeof errs, "%" PRIu64 " (+%" PRIu64 ")", s->errors,
	         x->errors);
	fprintf(s->f, "%-15s %10" PRIu64 " %11.1f %9.3f %9.1f %9.1f %9.1f",
	        span, x->messages, secs > 0 ? (double)x->messages / secs : 0.0,
	        secs > 0 ? (double)x->bytes / secs / 1e6 : 0.0,
	        ival_us(&x->latency, 0.50), ival_us(&x->latency, 0.99),
	        (double)x->latency.max / 1e3);
	if (s->o->rate > 0)
		fprintf(s->f, " %9.1f %9.1f %9.1f",
		        ival_us(&x->latency_uncorrected, 0.50),
		        ival_us(&x->latency_uncorrected, 0.99),
		        (double)x->latency_uncorrected.max / 1e3);
	fprintf(s->f, " %14s %6" PRIu64 "\n", errs, x->conns_open);
}

/* The keys and figures of the report's latency objects (bench_report.c). */
static void json_lat(FILE *f, const char *name, const struct hist *h)
{
	fprintf(f,
	        ", \"%s\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f"
	        ", \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f, \"count\": "
	        "%" PRIu64 "}",
	        name, ival_us(h, 0.50), ival_us(h, 0.90), ival_us(h, 0.99),
	        ival_us(h, 0.999), (double)h->max / 1e3, hist_mean(h) / 1e3,
	        h->count);
}

static void json_line(struct bench_ivals *s, double start, double end,
                      double secs)
{
	const struct bench_ival *x = &s->sum;
	FILE *f = s->f;

	fprintf(f,
	        "{\"type\": \"interval\", \"start_s\": %.6f, \"end_s\": %.6f"
	        ", \"messages\": %" PRIu64 ", \"bytes\": %" PRIu64
	        ", \"errors\": %" PRIu64
	        ", \"error_kinds\": {\"mismatch\": %" PRIu64
	        ", \"reset\": %" PRIu64 ", \"closed\": %" PRIu64
	        ", \"connect\": %" PRIu64 ", \"handshake\": %" PRIu64
	        ", \"truncated\": %" PRIu64 "}",
	        start, end, x->messages, x->bytes, x->errors, x->err.mismatch,
	        x->err.reset, x->err.closed, x->err.connect, x->err.handshake,
	        x->err.truncated);
	fprintf(f, ", \"msgs_per_sec\": %.1f, \"mbytes_per_sec\": %.3f",
	        secs > 0 ? (double)x->messages / secs : 0.0,
	        secs > 0 ? (double)x->bytes / secs / 1e6 : 0.0);
	json_lat(f, "latency_us", &x->latency);
	json_lat(f, "latency_uncorrected_us", &x->latency_uncorrected);
	fprintf(f, ", \"conns_open\": %" PRIu64 "}\n", x->conns_open);
}

/*
 * Print interval s->k: from k x -i to the next boundary, or, when every
 * worker's share of it was its last, to the latest end. A run that ended
 * before its window started has no interval to print.
 */
static void ivals_print_next(struct bench_ivals *s)
{
	const struct bench_ival *x = &s->sum;
	double start, end;

	ivals_collect(s);
	s->errors += x->errors;
	start = (double)s->k * s->o->interval;
	if (!x->last)
		end = (double)(s->k + 1) * s->o->interval;
	else if (s->t0 != 0 && x->t_end > s->t0)
		end = (double)(x->t_end - s->t0) / NSEC;
	else
		end = 0;
	s->k++;
	if (x->last && s->k == 1 && end <= 0)
		return;
	if (end < start)
		end = start;
	if (s->o->json_stream)
		json_line(s, start, end, end - start);
	else
		text_line(s, start, end, end - start);
	fflush(s->f);
}

void bench_ivals_put(struct bench_ivals *s, uint64_t w, struct bench_ival *iv)
{
	struct ival_queue *q = &s->q[w];

	iv->next = NULL;
	if (q->tail != NULL)
		q->tail->next = iv;
	else
		q->head = iv;
	q->tail = iv;
	if (iv->last)
		q->ended = 1;
	if (s->t0 == 0)
		s->t0 = iv->t0;
	while (ivals_ready(s))
		ivals_print_next(s);
}

void bench_ivals_end(struct bench_ivals *s)
{
	uint64_t i;

	for (i = 0; i < s->n; i++)
		s->q[i].ended = 1;
	while (ivals_ready(s))
		ivals_print_next(s);
	/* The report follows the lines for people, apart. */
	if (s->header) {
		fputc('\n', s->f);
		fflush(s->f);
	}
}
