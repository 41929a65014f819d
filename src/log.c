/*
 * log.c - messages on standard error, prefixed with the program name.
 *
 * Each message is formatted into one buffer and written with one write(2), so
 * lines from forked processes do not interleave mid-line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "forkloop/log.h"

static const char *log_prog = "forkloop";
static enum log_level log_lvl = LOG_NORMAL;

void log_init(const char *progname, enum log_level level)
{
	const char *slash = strrchr(progname, '/');

	log_prog = slash != NULL ? slash + 1 : progname;
	log_lvl = level;
}

const char *log_progname(void)
{
	return log_prog;
}

enum log_level log_get_level(void)
{
	return log_lvl;
}

static void log_vwrite(const char *fmt, va_list ap)
{
	char buf[1024];
	int n, m;

	n = snprintf(buf, sizeof buf, "%s: ", log_prog);
	if (n < 0 || (size_t)n >= sizeof buf)
		return;
	m = vsnprintf(buf + n, sizeof buf - n, fmt, ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n >= sizeof buf - 1)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* Nothing sensible to do if standard error is gone. */
	if (write(STDERR_FILENO, buf, n) < 0)
		return;
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	if (log_lvl < LOG_NORMAL)
		return;
	va_start(ap, fmt);
	log_vwrite(fmt, ap);
	va_end(ap);
}

void log_verbose(const char *fmt, ...)
{
	va_list ap;

	if (log_lvl < LOG_VERBOSE)
		return;
	va_start(ap, fmt);
	log_vwrite(fmt, ap);
	va_end(ap);
}
