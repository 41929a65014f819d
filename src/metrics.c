/*
 * metrics.c - the --metrics endpoint: libevent's evhttp on the daemon's
 * event loop, serving /metrics (Prometheus text format 0.0.4) and /healthz,
 * and the helpers that write the format.
 *
 * Admission. The access lists apply to the metrics port as to the
 * daemon's: a refused peer is closed before a byte of it is read. libevent
 * 2.1 has no public call that hands evhttp a socket accepted elsewhere
 * (evhttp_get_request is internal), so the check sits between evhttp's
 * accept and its first read: evhttp asks this file for each connection's
 * bufferevent (evhttp_set_bevcb), before giving it the socket; that
 * bufferevent is held (bufferevent_incref) and an event made active for
 * it. Active events run in the same turn of the loop, before the loop
 * polls again, so before any read of the new socket: there the peer's
 * address is checked, and a refused connection is ended as a closed one
 * is (bufferevent_trigger_event with EOF): evhttp frees it unread. At most
 * METRICS_ACCEPT_BURST connections wait for the check; the listeners are
 * disabled at that many (an evconnlistener stops accepting when its
 * callback disables it) and enabled again once they are checked, which
 * also lets the loop serve echo between bursts of connects.
 *
 * Scrapes: a GET or HEAD of /metrics waits (evhttp lets a reply be sent
 * later) until the daemon answers it with metrics_answer: at once in one
 * thread, or once every thread has reported its counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "forkloop/listener.h"
#include "forkloop/log.h"
#include "forkloop/metrics.h"

/* Listening sockets of one --metrics address: a name's addresses. */
#define METRICS_MAX_SOCKETS 16
/* Connections accepted before the loop checks them and takes a turn. */
#define METRICS_ACCEPT_BURST 16
/* How long accepting pauses when the process runs out of descriptors. */
#define METRICS_PAUSE_MS 100

const double metrics_bounds[METRICS_NBUCKETS] = {
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600,
};

/* A GET or HEAD of /metrics waiting for its answer. */
struct metrics_scrape {
	TAILQ_ENTRY(metrics_scrape) entry;
	struct evhttp_request *req;
};

TAILQ_HEAD(metrics_scrapes, metrics_scrape);

struct metrics {
	LIST_ENTRY(metrics) entry; /* in metrics_all */
	struct event_base *base;
	struct evhttp *http;
	struct admit *admit; /* NULL: no access lists to apply */
	metrics_scrape_fn *scrape;
	metrics_health_fn *health;
	void *arg;
	struct evconnlistener *lev[METRICS_MAX_SOCKETS]; /* evhttp frees them */
	size_t nlev;
	struct metrics_scrapes waiting; /* arrived, not yet taken */
	struct metrics_scrapes taken;   /* metrics_begin took them */
	/* Connections evhttp took and has not read from, to check. */
	struct bufferevent *gate[METRICS_ACCEPT_BURST];
	size_t ngate;
	struct event *gate_ev;   /* made active when gate fills */
	struct event *resume_ev; /* accept again after running out of fds */
	int paused;              /* out of descriptors: resume_ev is added */
	int deaf; /* a listener could not be enabled again (logged) */
};

/*
 * Every endpoint of the process. evhttp_bind_listener makes the evhttp the
 * listener's callback argument, so that is all an accept error callback is
 * given: the endpoint is found by it.
 */
static LIST_HEAD(, metrics) metrics_all = LIST_HEAD_INITIALIZER(metrics_all);

size_t metrics_hist_index(double seconds)
{
	size_t i;

	for (i = 0; i < METRICS_NBUCKETS; i++)
		if (seconds <= metrics_bounds[i])
			return i;
	return METRICS_NBUCKETS;
}

void metrics_hist_record(struct metrics_hist *h, double seconds)
{
	if (seconds < 0)
		seconds = 0;
	h->count[metrics_hist_index(seconds)]++;
	h->sum_us += (uint64_t)(seconds * 1e6 + 0.5);
}

void metrics_hist_add(struct metrics_hist *to, const struct metrics_hist *from)
{
	for (size_t i = 0; i <= METRICS_NBUCKETS; i++)
		to->count[i] += from->count[i];
	to->sum_us += from->sum_us;
}

uint64_t metrics_hist_total(const struct metrics_hist *h)
{
	uint64_t n = 0;

	for (size_t i = 0; i <= METRICS_NBUCKETS; i++)
		n += h->count[i];
	return n;
}

void metrics_family(struct evbuffer *out, const char *name, const char *type,
                    const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	                    name, type);
}

void metrics_value(struct evbuffer *out, const char *name, const char *labels,
                   uint64_t v)
{
	if (labels != NULL)
		evbuffer_add_printf(out, "%s{%s} %" PRIu64 "\n", name, labels,
		                    v);
	else
		evbuffer_add_printf(out, "%s %" PRIu64 "\n", name, v);
}

void metrics_reason(struct evbuffer *out, const char *name, const char *why,
                    uint64_t v)
{
	char labels[64];

	snprintf(labels, sizeof labels, "reason=\"%s\"", why);
	metrics_value(out, name, labels, v);
}

void metrics_histogram(struct evbuffer *out, const char *name, const char *help,
                       const struct metrics_hist *h)
{
	uint64_t n = 0;
	size_t i;

	metrics_family(out, name, "histogram", help);
	for (i = 0; i < METRICS_NBUCKETS; i++) {
		n += h->count[i];
		evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n",
		                    name, metrics_bounds[i], n);
	}
	n += h->count[METRICS_NBUCKETS];
	evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name,
	                    n);
	evbuffer_add_printf(out, "%s_sum %" PRIu64 ".%06" PRIu64 "\n", name,
	                    h->sum_us / 1000000, h->sum_us % 1000000);
	evbuffer_add_printf(out, "%s_count %" PRIu64 "\n", name, n);
}

/* A reply with a short text body: "not found\n" and the like. */
static void metrics_reply_text(struct evhttp_request *req, int code,
                               const char *reason, const char *text)
{
	struct evbuffer *body = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req),
	                  "Content-Type", "text/plain; charset=utf-8");
	if (body != NULL)
		evbuffer_add(body, text, strlen(text));
	evhttp_send_reply(req, code, reason, body);
	if (body != NULL)
		evbuffer_free(body);
}

/*
 * A method other than GET and HEAD on a path that exists: 405 with the
 * methods it takes (RFC 9110, 15.5.6).
 */
static void metrics_not_allowed(struct evhttp_request *req)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
	                  "GET, HEAD");
	metrics_reply_text(req, 405, "Method Not Allowed",
	                   "method not allowed\n");
}

static void metrics_health(struct metrics *m, struct evhttp_request *req)
{
	if (m->health(m->arg))
		metrics_reply_text(req, 200, "OK", "ok\n");
	else
		metrics_reply_text(req, 503, "Service Unavailable",
		                   "draining\n");
}

/* A scrape waits for the daemon's counts (metrics_begin, metrics_answer). */
static void metrics_scrape_wait(struct metrics *m, struct evhttp_request *req)
{
	struct metrics_scrape *s = malloc(sizeof *s);

	if (s == NULL) {
		metrics_reply_text(req, 503, "Service Unavailable",
		                   "out of memory\n");
		return;
	}
	s->req = req;
	TAILQ_INSERT_TAIL(&m->waiting, s, entry);
	m->scrape(m->arg);
}

static void metrics_requestcb(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

	if (path == NULL ||
	    (strcmp(path, "/metrics") != 0 && strcmp(path, "/healthz") != 0))
		metrics_reply_text(req, 404, "Not Found", "not found\n");
	else if (!get)
		metrics_not_allowed(req);
	else if (strcmp(path, "/healthz") == 0)
		metrics_health(m, req);
	else
		metrics_scrape_wait(m, req);
}

void metrics_begin(struct metrics *m)
{
	TAILQ_CONCAT(&m->taken, &m->waiting, entry);
}

int metrics_waiting(const struct metrics *m)
{
	return !TAILQ_EMPTY(&m->waiting);
}

/* Answer every scrape in list with text, or 503 if text is NULL. */
static void metrics_answer_list(struct metrics_scrapes *list,
                                struct evbuffer *text)
{
	struct metrics_scrape *s;
	struct evhttp_request *req;
	size_t len = text != NULL ? evbuffer_get_length(text) : 0;
	unsigned char *p = text != NULL ? evbuffer_pullup(text, -1) : NULL;

	while ((s = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, s, entry);
		req = s->req;
		free(s);
		if (text == NULL || (len > 0 && p == NULL)) {
			metrics_reply_text(req, 503, "Service Unavailable",
			                   "shutting down\n");
			continue;
		}
		evhttp_add_header(evhttp_request_get_output_headers(req),
		                  "Content-Type", METRICS_CONTENT_TYPE);
		evbuffer_add(evhttp_request_get_output_buffer(req), p, len);
		/* A client gone meanwhile: libevent frees the request. */
		evhttp_send_reply(req, 200, "OK", NULL);
	}
}

void metrics_answer(struct metrics *m, struct evbuffer *text)
{
	metrics_answer_list(&m->taken, text);
}

/*
 * Accept on every listener (on 1) or on none (0). Returns -1, with every
 * listener off again, if one could not be enabled (epoll_ctl(2): ENOMEM).
 */
static int metrics_listen_enable(struct metrics *m, int on)
{
	for (size_t i = 0; i < m->nlev; i++) {
		if (!on) {
			evconnlistener_disable(m->lev[i]);
		} else if (evconnlistener_enable(m->lev[i]) < 0) {
			metrics_listen_enable(m, 0);
			return -1;
		}
	}
	return 0;
}

/* Stop accepting for METRICS_PAUSE_MS; metrics_resumecb starts again. */
static void metrics_pause(struct metrics *m)
{
	struct timeval tv = {0, METRICS_PAUSE_MS * 1000};

	m->paused = 1;
	metrics_listen_enable(m, 0);
	listener_timer_add(m->resume_ev, &tv);
}

/*
 * Accept again. Left off, the listeners would never accept again: if one
 * cannot be enabled, pause and retry (logged once until it works).
 */
static void metrics_listen_resume(struct metrics *m)
{
	if (metrics_listen_enable(m, 1) == 0) {
		m->deaf = 0;
		return;
	}
	if (!m->deaf)
		log_warn("metrics: cannot accept: %s; retrying",
		         strerror(errno));
	m->deaf = 1;
	metrics_pause(m);
}

/*
 * Is the connection on bev, which evhttp took and has not read from, one
 * to refuse? Checked by the peer's address; a refusal is logged.
 */
static int metrics_refused(struct metrics *m, struct bufferevent *bev)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	bufferevent_event_cb eventcb = NULL;
	struct admit_ticket t;
	char name[ADDR_STRLEN], peer[ADDR_STRLEN + 16];

	/* No callback: evhttp has given the connection up already. */
	bufferevent_getcb(bev, NULL, NULL, &eventcb, NULL);
	if (eventcb == NULL || m->admit == NULL)
		return 0;
	/* A peer gone already leaves nothing to serve. */
	if (getpeername(bufferevent_getfd(bev), (struct sockaddr *)&ss, &len) <
	    0)
		return 1;
	if (admit_check_addr(m->admit, (struct sockaddr *)&ss, len) == ADMIT_OK)
		return 0;
	admit_source(m->admit, (struct sockaddr *)&ss, len, &t);
	snprintf(peer, sizeof peer, "%s (metrics)",
	         addr_format((struct sockaddr *)&ss, len, name, sizeof name));
	admit_log_refused(m->admit, &t, peer, ADMIT_DENIED, NULL, admit_now());
	return 1;
}

/*
 * The connections evhttp took since the loop's last turn, before any has
 * been read from: a refused one ends as if its peer had closed it, which
 * makes evhttp free it unread. Then accept again.
 */
static void metrics_gatecb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < m->ngate; i++) {
		if (metrics_refused(m, m->gate[i]))
			bufferevent_trigger_event(
			        m->gate[i], BEV_EVENT_READING | BEV_EVENT_EOF,
			        0);
		bufferevent_decref(m->gate[i]);
	}
	m->ngate = 0;
	if (!m->paused)
		metrics_listen_resume(m);
}

/*
 * evhttp_set_bevcb: the bufferevent evhttp serves a new connection on,
 * made before evhttp gives it the socket. It waits for metrics_gatecb.
 */
static struct bufferevent *metrics_bevcb(struct event_base *base, void *arg)
{
	struct metrics *m = arg;
	struct bufferevent *bev;

	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	/* Held until checked, whatever evhttp does with it meanwhile. */
	bufferevent_incref(bev);
	m->gate[m->ngate++] = bev;
	event_active(m->gate_ev, EV_TIMEOUT, 1);
	/* Full: no accept until the loop has checked these. */
	if (m->ngate == METRICS_ACCEPT_BURST)
		metrics_listen_enable(m, 0);
	return bev;
}

/*
 * accept() failed. Out of descriptors or memory, the connection stays
 * queued and the socket readable: pause instead of spinning.
 */
static void metrics_accept_errorcb(struct evconnlistener *lev, void *arg)
{
	struct metrics *m;
	int err = EVUTIL_SOCKET_ERROR();

	(void)lev;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return;
	LIST_FOREACH(m, &metrics_all, entry) {
		if (m->http == arg) {
			metrics_pause(m);
			return;
		}
	}
}

static void metrics_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;

	(void)fd;
	(void)what;
	m->paused = 0;
	if (m->ngate == 0)
		metrics_listen_resume(m);
}

/* Serve the listening socket fd; -1 (fd closed) if out of memory. */
static int metrics_serve(struct metrics *m, int fd)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct evconnlistener *lev;
	char name[ADDR_STRLEN];

	/* Backlog 0: the socket listens already; evhttp sets the callback. */
	lev = evconnlistener_new(m->base, NULL, NULL, flags, 0, fd);
	if (lev == NULL) {
		evutil_closesocket(fd);
		return -1;
	}
	if (evhttp_bind_listener(m->http, lev) == NULL) {
		evconnlistener_free(lev);
		return -1;
	}
	evconnlistener_set_error_cb(lev, metrics_accept_errorcb);
	m->lev[m->nlev++] = lev;
	log_info("metrics on http://%s/metrics",
	         listener_local_name(fd, name, sizeof name));
	return 0;
}

static int metrics_http(struct metrics *m)
{
	m->http = evhttp_new(m->base);
	m->gate_ev = event_new(m->base, -1, 0, metrics_gatecb, m);
	m->resume_ev = evtimer_new(m->base, metrics_resumecb, m);
	if (m->http == NULL || m->gate_ev == NULL || m->resume_ev == NULL)
		return -1;
	evhttp_set_max_headers_size(m->http, METRICS_MAX_HEADERS);
	evhttp_set_max_body_size(m->http, METRICS_MAX_BODY);
	evhttp_set_timeout(m->http, METRICS_TIMEOUT);
	/* Every method reaches metrics_requestcb, which answers 405 itself:
	 * libevent would answer 501 for those not allowed. */
	evhttp_set_allowed_methods(
	        m->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                         EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(m->http, metrics_requestcb, m);
	evhttp_set_bevcb(m->http, metrics_bevcb, m);
	return 0;
}

struct metrics *metrics_new(struct event_base *base, const struct addr *a,
                            struct admit *admit, metrics_scrape_fn *scrape,
                            metrics_health_fn *health, void *arg)
{
	struct metrics *m = calloc(1, sizeof *m);
	int fds[METRICS_MAX_SOCKETS];
	char err[512];
	int n, i;

	if (m == NULL) {
		log_error("cannot serve metrics: out of memory");
		return NULL;
	}
	m->base = base;
	m->admit = admit != NULL && admit_active(admit) ? admit : NULL;
	m->scrape = scrape;
	m->health = health;
	m->arg = arg;
	TAILQ_INIT(&m->waiting);
	TAILQ_INIT(&m->taken);
	LIST_INSERT_HEAD(&metrics_all, m, entry);
	if (metrics_http(m) < 0) {
		log_error("cannot serve metrics: out of memory");
		metrics_free(m);
		return NULL;
	}
	n = listener_bind(a, SOCK_STREAM, fds, METRICS_MAX_SOCKETS, err,
	                  sizeof err);
	if (n < 0) {
		log_error("--metrics: %s", err);
		metrics_free(m);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		if (metrics_serve(m, fds[i]) < 0) {
			log_error("cannot serve metrics: out of memory");
			while (++i < n)
				evutil_closesocket(fds[i]);
			metrics_free(m);
			return NULL;
		}
	}
	return m;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	LIST_REMOVE(m, entry);
	/* Before evhttp_free, which frees the requests with their
	 * connections. */
	metrics_answer_list(&m->taken, NULL);
	metrics_answer_list(&m->waiting, NULL);
	for (size_t i = 0; i < m->ngate; i++)
		bufferevent_decref(m->gate[i]);
	if (m->http != NULL)
		evhttp_free(m->http); /* and the listeners bound to it */
	if (m->gate_ev != NULL)
		event_free(m->gate_ev);
	if (m->resume_ev != NULL)
		event_free(m->resume_ev);
	free(m);
}
