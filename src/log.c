/*
 * log.c - messages on standard error, prefixed with the program name, or
 * with a syslog priority when standard error is the journal.
 *
 * Each message is formatted into one buffer and written with one write(2), so
 * lines from forked processes do not interleave mid-line.
 *
 * The journal: systemd connects a service's standard error to the journal
 * and says so in $JOURNAL_STREAM (systemd.exec(5)); a line may then start
 * with "<N>", its syslog priority, which the journal stores as the entry's
 * PRIORITY and strips (sd-daemon(3)). The journal records the program's name
 * and the time itself, so neither is written there. A program started from
 * a service whose standard error went elsewhere inherits the variable but
 * not the stream: only the device and inode of descriptor 2 tell.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkloop/log.h"

static const char *log_prog = "forkloop";
static enum log_level log_lvl = LOG_NORMAL;
static int log_to_journal;

int log_journal_stream(const char *env, const struct stat *st)
{
	uintmax_t dev, ino;
	char *end;

	if (env == NULL || *env < '0' || *env > '9')
		return 0;
	dev = strtoumax(env, &end, 10);
	if (*end != ':' || end[1] < '0' || end[1] > '9')
		return 0;
	ino = strtoumax(end + 1, &end, 10);
	/* strtoumax saturates: a number past UINTMAX_MAX matches nothing. */
	if (*end != '\0' || dev == UINTMAX_MAX || ino == UINTMAX_MAX)
		return 0;
	return dev == (uintmax_t)st->st_dev && ino == (uintmax_t)st->st_ino;
}

void log_init(const char *progname, enum log_level level)
{
	const char *slash = strrchr(progname, '/');
	struct stat st;

	log_prog = slash != NULL ? slash + 1 : progname;
	log_lvl = level;
	log_to_journal = fstat(STDERR_FILENO, &st) == 0 &&
	                 log_journal_stream(getenv("JOURNAL_STREAM"), &st);
}

const char *log_progname(void)
{
	return log_prog;
}

enum log_level log_get_level(void)
{
	return log_lvl;
}

int log_journal(void)
{
	return log_to_journal;
}

size_t log_prefix(char *buf, size_t len, enum log_prio prio,
                  const struct timespec *now)
{
	char stamp[32] = "";
	struct tm tm;
	int n;

	if (log_to_journal) {
		n = snprintf(buf, len, "<%d>", (int)prio);
	} else {
		if (now != NULL && gmtime_r(&now->tv_sec, &tm) != NULL) {
			strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
			snprintf(stamp + strlen(stamp),
			         sizeof stamp - strlen(stamp), ".%03ldZ ",
			         now->tv_nsec / 1000000);
		}
		n = snprintf(buf, len, "%s: %s", log_prog, stamp);
	}
	if (n < 0 || (size_t)n >= len) {
		if (len > 0)
			buf[0] = '\0';
		return 0;
	}
	return (size_t)n;
}

static void log_vwrite(enum log_prio prio, const char *fmt, va_list ap)
{
	char buf[LOG_LINE_MAX];
	struct timespec now, *stamp = NULL;
	size_t n;
	int m;

	/* Outside the journal, a -v line says when. */
	if (prio == LOG_PRIO_DEBUG && !log_to_journal &&
	    clock_gettime(CLOCK_REALTIME, &now) == 0)
		stamp = &now;
	n = log_prefix(buf, sizeof buf, prio, stamp);
	if (n == 0)
		return;
	m = vsnprintf(buf + n, sizeof buf - n, fmt, ap);
	if (m < 0)
		return;
	n += (size_t)m;
	if (n >= sizeof buf - 1)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* Nothing sensible to do if standard error is gone; a signal that
	 * lands before anything is written is no reason to lose the line. */
	while (write(STDERR_FILENO, buf, n) < 0 && errno == EINTR)
		;
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_PRIO_ERR, fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;

	if (log_lvl < LOG_NORMAL)
		return;
	va_start(ap, fmt);
	log_vwrite(LOG_PRIO_WARNING, fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	if (log_lvl < LOG_NORMAL)
		return;
	va_start(ap, fmt);
	log_vwrite(LOG_PRIO_INFO, fmt, ap);
	va_end(ap);
}

void log_report(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_PRIO_INFO, fmt, ap);
	va_end(ap);
}

void log_verbose(const char *fmt, ...)
{
	va_list ap;

	if (log_lvl < LOG_VERBOSE)
		return;
	va_start(ap, fmt);
	log_vwrite(LOG_PRIO_DEBUG, fmt, ap);
	va_end(ap);
}

/* A byte written as it is in a bare value. */
static int log_bare(unsigned char c)
{
	return c > ' ' && c <= '~' && c != '"' && c != '\\' && c != '=';
}

/* The form of byte c in a quoted value, into one[4]; returns its length. */
static size_t log_quote_one(unsigned char c, char *one)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;

	if (c == '"' || c == '\\') {
		one[k++] = '\\';
		one[k++] = (char)c;
	} else if (c < ' ' || c > '~') {
		one[k++] = '\\';
		one[k++] = 'x';
		one[k++] = hex[c >> 4];
		one[k++] = hex[c & 0xf];
	} else {
		one[k++] = (char)c;
	}
	return k;
}

size_t log_quote(char *buf, size_t len, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	char one[4];
	size_t i, k, w, need, room;
	int bare = n > 0;

	if (len < 3 + sizeof LOG_QUOTE_CUT - 1) {
		if (len > 0)
			buf[0] = '\0';
		return 0;
	}
	for (i = 0; i < n && bare; i++)
		bare = log_bare(p[i]);
	if (bare && n < len) {
		memcpy(buf, s, n);
		buf[n] = '\0';
		return n;
	}
	/* Two quotes and the NUL; a value that does not fit also the mark. */
	for (need = 3, i = 0; i < n; i++)
		need += log_quote_one(p[i], one);
	room = need <= len ? len : len - (sizeof LOG_QUOTE_CUT - 1);
	w = 0;
	buf[w++] = '"';
	for (i = 0; i < n; i++) {
		k = log_quote_one(p[i], one);
		/* Room for this byte's form, the closing quote and the NUL. */
		if (w + k + 2 > room)
			break;
		memcpy(buf + w, one, k);
		w += k;
	}
	if (i < n) {
		memcpy(buf + w, LOG_QUOTE_CUT, sizeof LOG_QUOTE_CUT - 1);
		w += sizeof LOG_QUOTE_CUT - 1;
	}
	buf[w++] = '"';
	buf[w] = '\0';
	return w;
}

void log_kv_start(struct log_kv *kv, const char *event)
{
	kv->len = 0;
	kv->buf[0] = '\0';
	log_kv_str(kv, "event", event);
}

/* Append " KEY=" (none before the first pair); 0, or -1 if no room. */
static int log_kv_key(struct log_kv *kv, const char *key, size_t need)
{
	size_t klen = strlen(key) + (kv->len > 0 ? 2 : 1);

	if (kv->len + klen + need >= sizeof kv->buf)
		return -1;
	kv->len += (size_t)snprintf(kv->buf + kv->len, sizeof kv->buf - kv->len,
	                            "%s%s=", kv->len > 0 ? " " : "", key);
	return 0;
}

void log_kv_str(struct log_kv *kv, const char *key, const char *value)
{
	if (value == NULL)
		value = "";
	/* At least "" for the value. */
	if (log_kv_key(kv, key, 2) < 0)
		return;
	kv->len += log_quote(kv->buf + kv->len, sizeof kv->buf - kv->len, value,
	                     strlen(value));
}

void log_kv_u64(struct log_kv *kv, const char *key, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof num, "%" PRIu64, v);
	if (log_kv_key(kv, key, strlen(num)) < 0)
		return;
	kv->len += (size_t)snprintf(kv->buf + kv->len, sizeof kv->buf - kv->len,
	                            "%s", num);
}
