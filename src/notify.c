/*
 * notify.c - the service manager's notifications (sd_notify(3)): readiness,
 * a status line every few seconds, the start of a drain, and the watchdog's
 * pings, the last two from timers on the daemon's event loop.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "forkloop/activation.h"
#include "forkloop/log.h"
#include "forkloop/notify.h"
#include "forkloop/num.h"

/* Room for "STOPPING=1\nSTATUS=" and a line of status. */
#define NOTIFY_MAX 256

struct notify {
	notify_tick_fn *tick;
	notify_alive_fn *alive;
	void *arg;
	struct event *status_ev;   /* every NOTIFY_STATUS_INTERVAL s */
	struct event *watchdog_ev; /* at half the watchdog's timeout */
	uint64_t watchdog_usec;    /* 0: no watchdog */
	uint64_t last_total;       /* notify_rate's last count */
	double last_time;          /* and when it was taken */
};

static double notify_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int notify_watchdog_parse(const char *usec, const char *pid, pid_t self,
                          uint64_t *out)
{
	uint64_t u, p;

	if (usec == NULL)
		return 0;
	if (num_parse_u64(usec, 1, UINT64_MAX, &u) < 0)
		return -1;
	if (pid != NULL) {
		if (num_parse_u64(pid, 1, INT_MAX, &p) < 0)
			return -1;
		if ((pid_t)p != self)
			return 0;
	}
	*out = u;
	return 1;
}

/* The watchdog's timeout for this process, microseconds; 0: none. */
static uint64_t notify_watchdog_env(void)
{
	uint64_t usec = 0;

#ifdef HAVE_LIBSYSTEMD
	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
#else
	if (notify_watchdog_parse(getenv("WATCHDOG_USEC"),
	                          getenv("WATCHDOG_PID"), getpid(), &usec) <= 0)
		return 0;
#endif
	return usec;
}

static void notify_statuscb(evutil_socket_t fd, short what, void *arg)
{
	struct notify *n = arg;

	(void)fd;
	(void)what;
	n->tick(n->arg);
}

/*
 * Sent from the loop itself: a loop that is stuck sends nothing, nor does
 * one whose other loops have not all turned since the last ping.
 */
static void notify_watchdogcb(evutil_socket_t fd, short what, void *arg)
{
	struct notify *n = arg;

	(void)fd;
	(void)what;
	if (n->alive == NULL || n->alive(n->arg))
		activation_notify("WATCHDOG=1");
}

static struct timeval notify_tv(uint64_t usec)
{
	struct timeval tv;

	if (usec == 0)
		usec = 1;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	return tv;
}

int notify_new(struct notify **out, struct event_base *base,
               notify_tick_fn *tick, notify_alive_fn *alive, void *arg)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	struct timeval tv = {NOTIFY_STATUS_INTERVAL, 0};
	struct notify *n;

	*out = NULL;
	if (sock == NULL || *sock == '\0')
		return 0;
	n = calloc(1, sizeof *n);
	if (n == NULL)
		goto fail;
	n->tick = tick;
	n->alive = alive;
	n->arg = arg;
	n->last_time = notify_now();
	n->status_ev = event_new(base, -1, EV_PERSIST, notify_statuscb, n);
	if (n->status_ev == NULL || event_add(n->status_ev, &tv) < 0)
		goto fail;
	n->watchdog_usec = notify_watchdog_env();
	if (n->watchdog_usec > 0) {
		tv = notify_tv(n->watchdog_usec / 2);
		n->watchdog_ev =
		        event_new(base, -1, EV_PERSIST, notify_watchdogcb, n);
		if (n->watchdog_ev == NULL ||
		    event_add(n->watchdog_ev, &tv) < 0)
			goto fail;
	}
	*out = n;
	return 0;
fail:
	log_error("cannot set up service notification: out of memory");
	notify_free(n);
	return -1;
}

void notify_free(struct notify *n)
{
	if (n == NULL)
		return;
	if (n->status_ev != NULL)
		event_free(n->status_ev);
	if (n->watchdog_ev != NULL)
		event_free(n->watchdog_ev);
	free(n);
}

uint64_t notify_watchdog_usec(const struct notify *n)
{
	return n != NULL ? n->watchdog_usec : 0;
}

void notify_ready(struct notify *n)
{
	if (n != NULL)
		activation_notify("READY=1");
}

/* first, then fmt formatted with ap, as one datagram. */
static void notify_send(const char *first, const char *fmt, va_list ap)
{
	char buf[NOTIFY_MAX];
	int k = snprintf(buf, sizeof buf, "%s", first);

	if (k < 0 || (size_t)k >= sizeof buf)
		return;
	/* A line cut short is still a status; the manager shows it. */
	vsnprintf(buf + k, sizeof buf - (size_t)k, fmt, ap);
	activation_notify(buf);
}

void notify_status(struct notify *n, const char *fmt, ...)
{
	va_list ap;

	if (n == NULL)
		return;
	va_start(ap, fmt);
	notify_send("STATUS=", fmt, ap);
	va_end(ap);
}

void notify_stopping(struct notify *n, const char *fmt, ...)
{
	va_list ap;

	if (n == NULL)
		return;
	va_start(ap, fmt);
	notify_send("STOPPING=1\nSTATUS=", fmt, ap);
	va_end(ap);
}

double notify_rate(struct notify *n, uint64_t total)
{
	double now, dt, rate;

	if (n == NULL)
		return 0;
	now = notify_now();
	dt = now - n->last_time;
	rate = dt > 0 && total >= n->last_total
	               ? (double)(total - n->last_total) / dt
	               : 0;
	n->last_total = total;
	n->last_time = now;
	return rate;
}

char *notify_bytes_rate(double per_sec, char *buf, size_t len)
{
	if (per_sec < 1000)
		snprintf(buf, len, "%.0f B/s", per_sec);
	else if (per_sec < 1e6)
		snprintf(buf, len, "%.1f kB/s", per_sec / 1e3);
	else if (per_sec < 1e9)
		snprintf(buf, len, "%.1f MB/s", per_sec / 1e6);
	else
		snprintf(buf, len, "%.1f GB/s", per_sec / 1e9);
	return buf;
}
