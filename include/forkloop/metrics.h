/*
 * metrics.h - the --metrics endpoint of forkloop-echo and the relay: an
 * HTTP server (libevent's evhttp) on the daemon's own event loop that
 * answers GET and HEAD of /metrics in the Prometheus text exposition format
 * 0.0.4 and of /healthz, and the helpers that write that format.
 *
 * The text format: https://prometheus.io/docs/instrumenting/exposition_formats/
 * ("Text-based format", version 0.0.4): each family is introduced by
 * "# HELP NAME TEXT" and "# TYPE NAME TYPE", followed by its samples
 * "NAME{LABEL="VALUE",...} VALUE", one per line, each line ending in "\n".
 */
#ifndef FORKLOOP_METRICS_H
#define FORKLOOP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "forkloop/addr.h"
#include "forkloop/admit.h"

struct evbuffer;
struct event_base;

/* What /metrics answers with: the format's MIME type and version. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Limits on one HTTP request to the endpoint, so that a slow or huge one
 * cannot hold memory: its request line and headers, its body (a GET has
 * none), and the seconds a connection may stay idle or take to send a
 * request (evhttp_set_timeout).
 */
#define METRICS_MAX_HEADERS 8192
#define METRICS_MAX_BODY    1024
#define METRICS_TIMEOUT     10

/*
 * A histogram of durations in seconds with fixed bucket bounds (the
 * histogram type of the format): metrics_bounds holds the
 * METRICS_NBUCKETS finite upper bounds, 1 ms to 1 hour, ascending; a
 * duration past the last falls in the +Inf bucket.
 */
#define METRICS_NBUCKETS 14
extern const double metrics_bounds[METRICS_NBUCKETS];

struct metrics_hist {
	/* count[i]: durations d with bounds[i-1] < d <= bounds[i]; the last
	 * one past every bound. Not cumulative: the writer sums them. */
	uint64_t count[METRICS_NBUCKETS + 1];
	uint64_t sum_us; /* the sum of every duration, microseconds */
};

/* The bucket a duration of seconds (>= 0) falls in: 0 to METRICS_NBUCKETS. */
size_t metrics_hist_index(double seconds);

/* Count one duration of seconds (>= 0) in h. */
void metrics_hist_record(struct metrics_hist *h, double seconds);

/* Add from's counts and sum to to. */
void metrics_hist_add(struct metrics_hist *to, const struct metrics_hist *from);

/* How many durations h holds: the sum of its buckets. */
uint64_t metrics_hist_total(const struct metrics_hist *h);

/*
 * Start the family name in out: "# HELP name help" and "# TYPE name type",
 * type being "counter", "gauge" or "histogram". A counter's name ends in
 * "_total" (the format's and Prometheus's naming rule). help must not hold
 * a backslash or a newline (the format would need them escaped).
 */
void metrics_family(struct evbuffer *out, const char *name, const char *type,
                    const char *help);

/*
 * One sample: "name v" or, with labels not NULL, "name{labels} v"; labels
 * is written as given ("reason=\"denied\""), so its values must not hold a
 * backslash, a double quote or a newline.
 */
void metrics_value(struct evbuffer *out, const char *name, const char *labels,
                   uint64_t v);

/*
 * One sample labelled reason="why": metrics_value with that label. why is
 * one of the program's own reason words (at most 50 bytes, no backslash,
 * double quote or newline, as metrics_value requires).
 */
void metrics_reason(struct evbuffer *out, const char *name, const char *why,
                    uint64_t v);

/*
 * A whole histogram family: HELP and TYPE, then name_bucket{le="..."} for
 * every bound and for +Inf (cumulative counts), name_sum in seconds and
 * name_count.
 */
void metrics_histogram(struct evbuffer *out, const char *name, const char *help,
                       const struct metrics_hist *h);

/*
 * The daemon's side of the endpoint, called on the event loop's thread:
 * scrape, when a GET or HEAD of /metrics arrived and waits for its answer
 * (see metrics_begin); health, for /healthz, returns 1 while serving and 0
 * once a drain has started.
 */
typedef void metrics_scrape_fn(void *arg);
typedef int metrics_health_fn(void *arg);

struct metrics;

/*
 * Listen on a as the daemon's other listeners do (listener_bind: a PORT
 * alone is every address, IPv6 and IPv4; port 0 picks a free port) and
 * serve HTTP there on base, logging "metrics on http://ADDR:PORT/metrics"
 * (IPv6 in brackets) for each socket. admit, if it has rules, applies its
 * access lists (--allow, --deny and their files; admit_check_addr) to every
 * connection before a byte of it is read: a refused peer is closed unread
 * and its refusal logged (admit_log_refused), not counted among the
 * daemon's refusals. Returns NULL after logging why (a port in use, out of
 * memory).
 */
struct metrics *metrics_new(struct event_base *base, const struct addr *a,
                            struct admit *admit, metrics_scrape_fn *scrape,
                            metrics_health_fn *health, void *arg);

/*
 * The scrapes waiting now are those the next metrics_answer answers; those
 * that arrive after wait for the one after. A daemon whose counts take time
 * to gather (several threads) calls this when it starts gathering, so no
 * scrape is answered with counts taken before it arrived.
 */
void metrics_begin(struct metrics *m);

/* Answer every scrape metrics_begin took with text (copied; 200). */
void metrics_answer(struct metrics *m, struct evbuffer *text);

/* Are scrapes waiting for a metrics_begin? 1 or 0. */
int metrics_waiting(const struct metrics *m);

/*
 * Close the listening sockets and every connection, answering the scrapes
 * still waiting with 503; NULL is fine.
 */
void metrics_free(struct metrics *m);

#endif
