/*
 * notify.h - what forkloop-echo and the relay tell the service manager
 * through $NOTIFY_SOCKET (sd_notify(3)): READY=1 once serving, STATUS= a
 * short summary every NOTIFY_STATUS_INTERVAL seconds, STOPPING=1 when a
 * drain starts, and WATCHDOG=1 at half of $WATCHDOG_USEC
 * (sd_watchdog_enabled(3)), sent from timers on the daemon's own event
 * loop, so that a loop that stops turning stops the pings and the manager
 * restarts the service (systemd.service(5), WatchdogSec=).
 *
 * Without $NOTIFY_SOCKET nothing is sent and no timer is set. Datagrams go
 * out through activation_notify: sd_notify with libsystemd, by hand
 * without it.
 */
#ifndef FORKLOOP_NOTIFY_H
#define FORKLOOP_NOTIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

/* Seconds between two STATUS= lines. */
#define NOTIFY_STATUS_INTERVAL 5

/*
 * The daemon's side, called on the event loop's thread: tick, every
 * NOTIFY_STATUS_INTERVAL seconds, asks for a STATUS= line, which the
 * daemon sends with notify_status then or once its counts are gathered;
 * alive, before each WATCHDOG=1, says whether every other event loop of
 * the daemon has turned since the last call (1) or not (0: no ping this
 * time); NULL when the daemon runs one loop.
 */
typedef void notify_tick_fn(void *arg);
typedef int notify_alive_fn(void *arg);

struct notify;

/*
 * If $NOTIFY_SOCKET is set (and not empty), set the timers on base and
 * store a struct notify in *out; else store NULL and set nothing. The
 * watchdog is on when $WATCHDOG_USEC is set and $WATCHDOG_PID, if set, is
 * this process (sd_watchdog_enabled(3) with libsystemd,
 * notify_watchdog_parse without). Returns 0, or -1 after logging why (out
 * of memory).
 */
int notify_new(struct notify **out, struct event_base *base,
               notify_tick_fn *tick, notify_alive_fn *alive, void *arg);

/* Cancel the timers and free n; NULL is fine. */
void notify_free(struct notify *n);

/* The watchdog's timeout in microseconds, 0 if it is off; n may be NULL. */
uint64_t notify_watchdog_usec(const struct notify *n);

/* "READY=1": serving. n may be NULL (then nothing is sent). */
void notify_ready(struct notify *n);

/*
 * "STATUS=" and fmt formatted as printf(3) does: a one-line summary
 * ("12 connections, 3.2 MB/s"). n may be NULL.
 */
void notify_status(struct notify *n, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/*
 * "STOPPING=1" and, in the same datagram, STATUS= with fmt formatted
 * ("draining: 3 connections"): a drain has started. n may be NULL.
 */
void notify_stopping(struct notify *n, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/*
 * How fast total, a count that only grows, grew since the last call (or
 * since notify_new), per second of CLOCK_MONOTONIC; 0 for a NULL n.
 */
double notify_rate(struct notify *n, uint64_t total);

/*
 * A rate of bytes per second as a STATUS= line shows it, into buf:
 * decimal units, one decimal past a thousand ("512 B/s", "3.2 kB/s",
 * "3.2 MB/s", "1.5 GB/s"). Returns buf.
 */
char *notify_bytes_rate(double per_sec, char *buf, size_t len);

/*
 * The watchdog's timeout from the environment by hand, as
 * sd_watchdog_enabled(3) reads it: usec ($WATCHDOG_USEC) a decimal
 * number of microseconds above 0, and pid ($WATCHDOG_PID; NULL if unset)
 * self's pid when given. Returns 1 with *out set, 0 if the watchdog is
 * not for this process (usec NULL, or pid another process), -1 if either
 * is malformed.
 */
int notify_watchdog_parse(const char *usec, const char *pid, pid_t self,
                          uint64_t *out);

#endif
