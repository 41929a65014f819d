/*
 * log.h - messages on standard error, prefixed with the program name.
 */
#ifndef FORKLOOP_LOG_H
#define FORKLOOP_LOG_H

enum log_level {
	LOG_QUIET = -1,  /* -q: errors only */
	LOG_NORMAL = 0,  /* default */
	LOG_VERBOSE = 1, /* -v: per-connection lines */
};

void log_init(const char *progname, enum log_level level);
const char *log_progname(void);
enum log_level log_get_level(void);

/* Always printed. */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed unless -q. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed only with -v. */
void log_verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
