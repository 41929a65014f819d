/*
 * bench_run.c - forkloop-bench's run: the options split into one share per
 * thread, a worker (bench_worker.c) for each share on an event base of its
 * own, and what the workers have in common decided here, once: when the
 * load starts, what a signal stops, and the one result they add up to.
 *
 * No libevent object is shared between threads, so libevent needs no locks
 * and evthread_use_pthreads is not called: every base is made here, then
 * used by its worker's thread alone, and freed here once that thread is
 * joined. The main thread and the workers talk through pipes, as
 * memcached's threads do: a worker posts what it reached (every connect
 * started, every connection up, its loop ended) to one pipe that the main
 * thread's base watches, and the main thread writes its commands (start at
 * t, stop) to a pipe of each worker's. Everything a message carries is
 * copied through the pipe, but for an interval of -i: a worker's own
 * allocation, whose pointer goes through and which is the main thread's
 * from then on (bench_interval.c). What a worker counts stays in its own
 * allocation until its thread is joined, so a message's path has no
 * atomics and no locks.
 *
 * SIGINT and SIGTERM are handled in one place, the main thread's base: the
 * workers are started with both blocked, so the kernel delivers them to the
 * main thread, which tells every worker to stop.
 *
 * The instants of the run are taken once, here: t_open, from which setup
 * and load start are counted, and t_start, from which every worker counts
 * its warmup, its end (-d), its open-loop schedule and the boundaries of
 * its intervals (-i). The measured window
 * runs from the first worker's start of measuring to the last one's end,
 * so every echo counted is inside it.
 *
 * One thread, the default, is the same run without the pipes: the worker's
 * base carries the signals and the setup timer, and notes and commands are
 * plain calls, so it runs as forkloop-bench always has.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "bench_worker.h"
#include "forkloop/addr.h"
#include "forkloop/bench.h"
#include "forkloop/log.h"
#include "forkloop/tls.h"

#define NO_SLOT UINT64_MAX

/* Commands, from the run to a worker. */
enum run_cmd { RUN_START, RUN_STOP };

/* One message on a pipe, either way: far below PIPE_BUF, so whole. */
struct run_msg {
	uint64_t worker;
	int what;     /* enum bench_note, or enum run_cmd */
	uint64_t arg; /* RUN_START: t_start; RUN_STOP: interrupted */
	struct bench_progress p;
};

struct run;

/*
 * One worker and what the run knows of it. The worker's thread reads
 * run, index, w and cmd, all set before it starts; the rest is the main
 * thread's.
 */
struct run_slot {
	struct run *run;
	uint64_t index;
	struct bench *w;
	int cmd[2];           /* run -> worker; unused with one thread */
	struct event *cmd_ev; /* on the worker's base */
	pthread_t thread;
	int running; /* its thread was started */
	int done, stop_sent;
	struct bench_progress last; /* from its latest note */
};

struct run {
	const struct bench_opts *o;
	uint64_t n;
	struct run_slot *slots;
	struct event_base *base;     /* one thread: the worker's */
	struct event_base *own_base; /* more: the main thread's own */
	struct addrinfo *ai;
	unsigned char *pat;
	SSL_CTX *tls; /* --tls: one client context for every worker */
	struct bench_ivals *ivals; /* -i: the workers' intervals */
	int note[2]; /* workers -> run */
	struct event *note_ev, *sigint_ev, *sigterm_ev, *setup_ev, *tick_ev;
	uint64_t t_open, t_start; /* set before the workers start, and
	                             t_start once more by run_start */
	uint64_t opened, ready, done, running;
	int started, interrupted, said_stall, progress;
	uint64_t fatal_slot;     /* the first worker that could not go on */
	char why[BENCH_WHY_LEN]; /* or the run itself */
};

static void run_stop(struct run *run, int interrupted);

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* floor(total x part / whole), part <= whole <= 1e6, without overflow. */
static uint64_t share_of(uint64_t total, uint64_t part, uint64_t whole)
{
	return total / whole * part + total % whole * part / whole;
}

void bench_share(const struct bench_opts *o, uint64_t i, struct bench_share *s)
{
	uint64_t n = o->threads, c = o->conns, extra;
	double frac;

	s->conns = c / n + (i < c % n ? 1 : 0);
	s->first_conn = c / n * i + (i < c % n ? i : c % n);
	frac = (double)s->conns / (double)c;
	/* Every thread gets one of -n, so none is left with nothing to stop
	 * at; the rest follow the connections, which do the work. The
	 * differences of one floor add up to extra exactly. */
	s->messages = 0;
	if (o->messages > 0) {
		extra = o->messages - n;
		s->messages = 1 + share_of(extra, s->first_conn + s->conns, c) -
		              share_of(extra, s->first_conn, c);
	}
	s->rate = o->rate * frac;
	s->connect_rate = (double)o->connect_rate * frac;
	s->phase_ns = 0;
	if (s->rate > 0)
		s->phase_ns = (uint64_t)(1e9 / s->rate * (double)i / (double)n);
}

static void run_fatal(struct run *run, const char *why)
{
	if (run->why[0] == '\0')
		snprintf(run->why, sizeof run->why, "%s", why);
	run_stop(run, 0);
}

/*
 * Tell a worker to start or stop: a call with one thread, else a message
 * its base reads. The pipe holds far more than the two a worker is ever
 * sent, so the write does not wait.
 */
static void run_command(struct run *run, struct run_slot *s, enum run_cmd what,
                        uint64_t arg)
{
	struct run_msg m;
	ssize_t w;

	if (run->n == 1) {
		if (what == RUN_START)
			bench_start(s->w, arg);
		else
			bench_halt(s->w, (int)arg);
		return;
	}
	memset(&m, 0, sizeof m);
	m.worker = s->index;
	m.what = what;
	m.arg = arg;
	do
		w = write(s->cmd[1], &m, sizeof m);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)sizeof m)
		log_error("cannot tell thread %llu what to do: %s",
		          (unsigned long long)s->index, strerror(errno));
}

/* The load starts now, in every worker, at the same t_start. */
static void run_start(struct run *run)
{
	uint64_t i;

	run->started = 1;
	run->t_start = now_ns();
	for (i = 0; i < run->n; i++)
		if (!run->slots[i].done)
			run_command(run, &run->slots[i], RUN_START,
			            run->t_start);
}

static void run_stop(struct run *run, int interrupted)
{
	uint64_t i;

	if (interrupted && !run->interrupted)
		run->interrupted = interrupted;
	for (i = 0; i < run->n; i++) {
		struct run_slot *s = &run->slots[i];

		if (s->done || s->stop_sent || (run->n > 1 && !s->running))
			continue;
		s->stop_sent = 1;
		run_command(run, s, RUN_STOP, (uint64_t)interrupted);
	}
}

static void run_setupcb(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;

	(void)fd;
	(void)what;
	if (!run->started)
		run_start(run);
}

static void run_sigcb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	run_stop(arg, (int)fd); /* an evsignal's fd is its signal */
}

static void run_done(struct run *run, struct run_slot *s)
{
	s->done = 1;
	run->done++;
	if (s->last.fatal && run->fatal_slot == NO_SLOT)
		run->fatal_slot = s->index;
	if (s->last.stalled && !run->said_stall) {
		run->said_stall = 1;
		log_error("no echo came back for %.0f s: stopping",
		          BENCH_STALL_TIMEOUT);
	}
	/* A stall or a failure ends the run, not one share of it; a worker
	 * done with its share of -n, or out of connections, leaves the
	 * others to theirs. */
	if (s->last.fatal || s->last.stalled)
		run_stop(run, 0);
	if (run->n > 1 && run->done == run->running)
		event_base_loopbreak(run->base);
}

/*
 * --setup-timeout after the last connect(2) of every worker was started,
 * the load starts with what is up; it starts earlier if every connection
 * is up or failed.
 */
static void run_note(struct run *run, const struct run_msg *m)
{
	struct run_slot *s = &run->slots[m->worker];
	struct timeval tv;

	s->last = m->p;
	switch (m->what) {
	case BENCH_NOTE_OPENED:
		if (++run->opened < run->n || run->started || run->o->churn)
			break;
		tv.tv_sec = (time_t)run->o->setup_timeout;
		tv.tv_usec = (suseconds_t)((run->o->setup_timeout -
		                            (double)tv.tv_sec) *
		                           1e6);
		run->setup_ev = evtimer_new(run->base, run_setupcb, run);
		if (run->setup_ev == NULL ||
		    evtimer_add(run->setup_ev, &tv) < 0)
			run_fatal(run, "cannot create a timer");
		break;
	case BENCH_NOTE_READY:
		if (++run->ready == run->n && !run->started)
			run_start(run);
		break;
	case BENCH_NOTE_DONE:
		run_done(run, s);
		break;
	case BENCH_NOTE_INTERVAL:
		s->last.ival = NULL;
		bench_ivals_put(run->ivals, s->index, m->p.ival);
		break;
	default:
		break;
	}
}

static void run_message(struct bench *w, enum bench_note what, uint64_t index,
                        struct run_msg *m)
{
	memset(m, 0, sizeof *m);
	m->worker = index;
	m->what = what;
	bench_progress(w, &m->p);
}

/* One thread: a worker's note is a call. */
static void run_direct(struct bench *w, enum bench_note what, void *arg)
{
	struct run_slot *s = arg;
	struct run_msg m;

	run_message(w, what, s->index, &m);
	run_note(s->run, &m);
}

/*
 * More: a worker's note, from its thread, is a message to the main
 * thread's pipe, whose write end blocks, so no note is lost; the main
 * thread reads them as they come.
 */
static void run_post(struct bench *w, enum bench_note what, void *arg)
{
	struct run_slot *s = arg;
	struct run_msg m;
	ssize_t n;

	run_message(w, what, s->index, &m);
	do
		n = write(s->run->note[1], &m, sizeof m);
	while (n < 0 && errno == EINTR);
}

/*
 * Whole messages only: each was written at once, and a pipe never splits
 * a write of less than PIPE_BUF, so a read of whole messages' room returns
 * whole messages.
 */
static void run_notecb(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	struct run_msg m[16];
	ssize_t n;
	size_t i;

	(void)what;
	for (;;) {
		n = read(fd, m, sizeof m);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		for (i = 0; i < (size_t)n / sizeof m[0]; i++)
			run_note(run, &m[i]);
	}
}

/* In the worker's thread: a command from the run. */
static void run_cmdcb(evutil_socket_t fd, short what, void *arg)
{
	struct run_slot *s = arg;
	struct run_msg m;
	ssize_t n;

	(void)what;
	for (;;) {
		n = read(fd, &m, sizeof m);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof m)
			return;
		if (m.what == RUN_START)
			bench_start(s->w, m.arg);
		else
			bench_halt(s->w, (int)m.arg);
	}
}

static void run_tickcb(evutil_socket_t fd, short what, void *arg)
{
	struct run *run = arg;
	uint64_t i, up = 0, msgs = 0, errs = 0, t0 = UINT64_MAX, now = now_ns();
	double el;

	(void)fd;
	(void)what;
	for (i = 0; i < run->n; i++) {
		struct run_slot *s = &run->slots[i];

		if (run->n == 1)
			bench_progress(s->w, &s->last);
		up += s->last.up;
		msgs += s->last.messages;
		errs += s->last.errors;
		if (s->last.measuring && s->last.t_measure < t0)
			t0 = s->last.t_measure;
	}
	if (!run->started) {
		fprintf(stderr, "\r%s: connecting %llu/%llu\033[K",
		        log_progname(), (unsigned long long)up,
		        (unsigned long long)run->o->conns);
		return;
	}
	if (t0 == UINT64_MAX) {
		fprintf(stderr, "\r%s: warming up, errors %llu\033[K",
		        log_progname(), (unsigned long long)errs);
		return;
	}
	el = now > t0 ? (double)(now - t0) / 1e9 : 0;
	fprintf(stderr, "\r%s: %.0f msgs/s, errors %llu, elapsed %.0f s\033[K",
	        log_progname(), el > 0 ? (double)msgs / el : 0.0,
	        (unsigned long long)errs, el);
}

static int run_events(struct run *run)
{
	struct timeval sec = {1, 0};

	run->sigint_ev = evsignal_new(run->base, SIGINT, run_sigcb, run);
	run->sigterm_ev = evsignal_new(run->base, SIGTERM, run_sigcb, run);
	if (run->sigint_ev == NULL || run->sigterm_ev == NULL ||
	    evsignal_add(run->sigint_ev, NULL) < 0 ||
	    evsignal_add(run->sigterm_ev, NULL) < 0) {
		log_error("cannot watch signals");
		return -1;
	}
	if (!run->progress)
		return 0;
	run->tick_ev = event_new(run->base, -1, EV_PERSIST, run_tickcb, run);
	if (run->tick_ev == NULL || event_add(run->tick_ev, &sec) < 0) {
		log_error("cannot create a timer");
		return -1;
	}
	return 0;
}

static int run_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0 ||
	    fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
		log_error("cannot make a pipe: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* The pipes and events that carry notes and commands between threads. */
static int run_channels(struct run *run)
{
	uint64_t i;

	run->own_base = event_base_new();
	if (run->own_base == NULL) {
		log_error("cannot create an event base");
		return -1;
	}
	run->base = run->own_base;
	if (run_pipe(run->note) < 0)
		return -1;
	run->note_ev = event_new(run->base, run->note[0], EV_READ | EV_PERSIST,
	                         run_notecb, run);
	if (run->note_ev == NULL || event_add(run->note_ev, NULL) < 0) {
		log_error("cannot watch a pipe");
		return -1;
	}
	for (i = 0; i < run->n; i++) {
		struct run_slot *s = &run->slots[i];

		if (run_pipe(s->cmd) < 0)
			return -1;
		s->cmd_ev = event_new(bench_base(s->w), s->cmd[0],
		                      EV_READ | EV_PERSIST, run_cmdcb, s);
		if (s->cmd_ev == NULL || event_add(s->cmd_ev, NULL) < 0) {
			log_error("cannot watch a pipe");
			return -1;
		}
	}
	return 0;
}

/*
 * --source: a connection bound to an address of one family can only reach
 * the target's addresses of that family; the others are dropped, and a
 * target with none is an error.
 */
static int run_source_family(struct run *run)
{
	const struct bench_opts *o = run->o;
	int fam;

	if (o->nsources == 0)
		return 0;
	fam = o->sources[0].family;
	addr_keep_family(&run->ai, fam);
	if (run->ai != NULL)
		return 0;
	log_error("the --source addresses are %s, but %s has no %s address: "
	          "give sources of the target's family",
	          fam == AF_INET ? "IPv4" : "IPv6", o->target.host,
	          fam == AF_INET ? "IPv4" : "IPv6");
	return -1;
}

static int run_init(struct run *run, const struct bench_opts *o)
{
	uint64_t i;
	int gai_err;

	run->o = o;
	run->n = o->threads;
	run->note[0] = run->note[1] = -1;
	run->fatal_slot = NO_SLOT;
	/* The interval lines say what the progress line would. */
	run->progress = isatty(STDERR_FILENO) && o->interval == 0;
	run->ai = addr_resolve(&o->target, SOCK_STREAM, 0, &gai_err);
	if (run->ai == NULL) {
		log_error("cannot resolve %s: %s",
		          o->target.is_unix ? o->target.path : o->target.host,
		          addr_strerror(gai_err));
		return -1;
	}
	if (run_source_family(run) < 0)
		return -1;
	if (o->tls) {
		struct tls_client_conf conf = {o->tls_ca, o->tls_cert,
		                               o->tls_key, o->tls_verify};

		if ((run->tls = tls_client_ctx_new(&conf)) == NULL)
			return -1;
	}
	run->pat = bench_pattern_new();
	run->slots = calloc(run->n, sizeof *run->slots);
	if (o->interval > 0)
		run->ivals = bench_ivals_new(o, run->n, stdout);
	if (run->pat == NULL || run->slots == NULL ||
	    (o->interval > 0 && run->ivals == NULL)) {
		log_error("out of memory");
		return -1;
	}
	for (i = 0; i < run->n; i++) {
		run->slots[i].run = run;
		run->slots[i].index = i;
		run->slots[i].cmd[0] = run->slots[i].cmd[1] = -1;
	}
	for (i = 0; i < run->n; i++) {
		struct run_slot *s = &run->slots[i];

		s->w = bench_new(o, i, run->ai, run->pat, run->tls,
		                 run->n == 1 ? run_direct : run_post, s,
		                 run->n > 1 && run->progress);
		if (s->w == NULL)
			return -1;
	}
	if (run->n == 1)
		run->base = bench_base(run->slots[0].w);
	else if (run_channels(run) < 0)
		return -1;
	return run_events(run);
}

static void run_free(struct run *run)
{
	struct event *evs[] = {run->note_ev, run->sigint_ev, run->sigterm_ev,
	                       run->setup_ev, run->tick_ev};
	uint64_t i;

	for (i = 0; i < sizeof evs / sizeof evs[0]; i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	for (i = 0; run->slots != NULL && i < run->n; i++) {
		struct run_slot *s = &run->slots[i];

		if (s->cmd_ev != NULL)
			event_free(s->cmd_ev);
		if (s->w != NULL)
			bench_free(s->w);
		if (s->cmd[0] >= 0)
			close(s->cmd[0]);
		if (s->cmd[1] >= 0)
			close(s->cmd[1]);
	}
	if (run->own_base != NULL)
		event_base_free(run->own_base);
	if (run->note[0] >= 0)
		close(run->note[0]);
	if (run->note[1] >= 0)
		close(run->note[1]);
	if (run->ai != NULL)
		addr_free(run->ai);
	free(run->slots);
	free(run->pat);
	bench_ivals_free(run->ivals);
	SSL_CTX_free(run->tls);
}

/*
 * A worker's whole life, in its own thread or, with one thread, in the
 * main one. t_start is read here only for --churn, whose load starts with
 * the run, before any worker does: run_start never writes it then.
 */
static void run_worker(struct run_slot *s)
{
	struct run *run = s->run;

	if (run->o->churn)
		bench_start(s->w, run->t_start);
	bench_open(s->w, run->t_open);
	bench_work(s->w);
}

/* Named for top -H and /proc: "bench-0", "bench-1" ... */
static void *run_thread(void *arg)
{
	struct run_slot *s = arg;
	char name[16];

	snprintf(name, sizeof name, "bench-%llu", (unsigned long long)s->index);
	pthread_setname_np(pthread_self(), name);
	run_worker(s);
	return NULL;
}

/*
 * Start a thread per worker with SIGINT and SIGTERM blocked, which it
 * keeps, so only the main thread takes them; serve the workers' notes
 * until every started one is done; join them.
 */
static void run_threads(struct run *run)
{
	sigset_t block, old;
	uint64_t i;
	int err = 0;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (i = 0; i < run->n && err == 0; i++) {
		struct run_slot *s = &run->slots[i];

		err = pthread_create(&s->thread, NULL, run_thread, s);
		if (err == 0) {
			s->running = 1;
			run->running++;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		char why[BENCH_WHY_LEN];

		snprintf(why, sizeof why,
		         "cannot start thread %llu of %llu: %s",
		         (unsigned long long)run->running + 1,
		         (unsigned long long)run->n, strerror(err));
		run_fatal(run, why);
	}
	if (run->running > run->done)
		event_base_dispatch(run->base);
	for (i = 0; i < run->n; i++)
		if (run->slots[i].running)
			pthread_join(run->slots[i].thread, NULL);
	/* The workers' last intervals, noted after they were done. */
	if (run->ivals != NULL)
		run_notecb(run->note[0], EV_READ, run);
}

/*
 * One result from every worker's: counts summed, histograms merged, and
 * the window from the first worker's start of measuring to the last
 * one's end, which holds every echo counted.
 */
/*
 * The measured window [t0, t1] (CLOCK_MONOTONIC) on the wall clock, through
 * one reading of both clocks now: the window keeps its length even if the
 * wall clock was stepped during the run. Never measured: an empty window
 * now.
 */
static void run_wall_window(struct bench_result *r, uint64_t t0, uint64_t t1)
{
	struct timespec wall;
	uint64_t mono;
	double now;

	clock_gettime(CLOCK_REALTIME, &wall);
	mono = now_ns();
	now = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
	if (t0 >= t1 || t1 > mono)
		t0 = t1 = mono;
	r->start_unix_s = now - (double)(mono - t0) / 1e9;
	r->end_unix_s = now - (double)(mono - t1) / 1e9;
}

static void run_result(struct run *run, struct bench_result *r)
{
	uint64_t i, t0 = UINT64_MAX, t1 = 0;

	memset(r, 0, sizeof *r);
	hist_init(&r->latency);
	hist_init(&r->latency_uncorrected);
	hist_init(&r->issue_lag);
	hist_init(&r->tls.latency);
	r->setup_done = 1;
	for (i = 0; i < run->n; i++) {
		struct bench *w = run->slots[i].w;
		const struct bench_result *x = bench_result_of(w);
		struct bench_progress p;

		bench_result_merge(r, x);
		bench_progress(w, &p);
		if (p.measuring && p.t_measure < t0)
			t0 = p.t_measure;
		if (p.measuring && p.t_end > t1)
			t1 = p.t_end;
		r->setup_done = r->setup_done && x->setup_done;
		if (x->setup_ms > r->setup_ms)
			r->setup_ms = x->setup_ms;
		if (x->load_start_ms > r->load_start_ms)
			r->load_start_ms = x->load_start_ms;
		if (!r->interrupted)
			r->interrupted = x->interrupted;
		r->stalled |= x->stalled;
	}
	if (!r->setup_done)
		r->setup_ms = 0;
	if (!r->interrupted)
		r->interrupted = run->interrupted;
	r->elapsed = t0 < t1 ? (double)(t1 - t0) / 1e9 : 0;
	run_wall_window(r, t0, t1);
}

/* Whether any worker began to measure. */
static int run_measured(const struct run *run)
{
	struct bench_progress p;
	uint64_t i;

	for (i = 0; i < run->n; i++) {
		if (run->slots[i].w == NULL)
			continue;
		bench_progress(run->slots[i].w, &p);
		if (p.measuring)
			return 1;
	}
	return 0;
}

int bench_run(const struct bench_opts *o, struct bench_result *r)
{
	struct run run;
	int rc = -1;

	memset(&run, 0, sizeof run);
	if (run_init(&run, o) < 0)
		goto out;
	run.t_open = now_ns();
	if (o->churn) {
		run.started = 1;
		run.t_start = run.t_open;
	}
	if (run.n == 1)
		run_worker(&run.slots[0]);
	else
		run_threads(&run);
	if (run.progress)
		fprintf(stderr, "\r\033[K");
	rc = 0;
	if (run.fatal_slot != NO_SLOT) {
		log_error("%s", bench_why(run.slots[run.fatal_slot].w));
		rc = 1;
	} else if (run.why[0] != '\0') {
		log_error("%s", run.why);
		rc = 1;
	}
	/* A failure before measuring began leaves nothing to report; one
	 * after it (a --churn connection's bind, say) leaves what was
	 * measured, and -i's lines already out need their report. */
	if (rc != 0 && !run_measured(&run)) {
		rc = -1;
		goto out;
	}
	if (run.ivals != NULL)
		bench_ivals_end(run.ivals);
	run_result(&run, r);
out:
	run_free(&run);
	return rc;
}
