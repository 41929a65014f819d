/*
 * log.h - messages on standard error: prefixed with the program name on a
 * terminal or in a file, with a syslog priority when standard error is the
 * systemd journal; per-connection lines as key=value pairs.
 */
#ifndef FORKLOOP_LOG_H
#define FORKLOOP_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

enum log_level {
	LOG_QUIET = -1,  /* -q: errors only */
	LOG_NORMAL = 0,  /* default */
	LOG_VERBOSE = 1, /* -v: per-connection lines */
};

/*
 * Syslog priorities (syslog(3)'s LOG_ERR, LOG_WARNING, LOG_INFO and
 * LOG_DEBUG), the numbers sd-daemon(3) puts in a line's "<N>" prefix.
 */
enum log_prio {
	LOG_PRIO_ERR = 3,
	LOG_PRIO_WARNING = 4,
	LOG_PRIO_INFO = 6,
	LOG_PRIO_DEBUG = 7,
};

/* Longest line written, newline included; longer ones are cut. */
#define LOG_LINE_MAX 2048

/*
 * Set the program name (the last component of progname) and the level.
 * Also finds out, once per call, whether standard error is the journal
 * (log_journal_stream on $JOURNAL_STREAM and fstat(2) of descriptor 2), so
 * a test may call it again after changing either.
 */
void log_init(const char *progname, enum log_level level);
/* The program name log_init set ("forkloop" before it is called). */
const char *log_progname(void);
/* The level log_init set. */
enum log_level log_get_level(void);
/* 1 if log_init found standard error to be the journal, 0 if not. */
int log_journal(void);

/*
 * Whether env, the value of $JOURNAL_STREAM, names the file st describes:
 * systemd sets it to "DEV:INODE", both decimal, for the stream it connects
 * a service's standard output or error to (systemd.exec(5)), and
 * sd-daemon(3) says a program may then prefix its lines with "<N>". Returns
 * 1 if env is exactly that form and both numbers are st's st_dev and
 * st_ino, 0 otherwise (env NULL, empty, malformed or another file).
 */
int log_journal_stream(const char *env, const struct stat *st);

/*
 * The start of a line of priority prio (enum log_prio), into buf (len
 * bytes, NUL-terminated if len > 0): "<N>" when standard error is the
 * journal (sd-daemon(3); the journal records the program's name and time),
 * otherwise "PROGNAME: ", followed, if now is not NULL, by now as an RFC
 * 3339 UTC time stamp with milliseconds and a space
 * ("2026-11-30T12:34:56.789Z "). Returns the length written, or 0 if it
 * does not fit.
 */
size_t log_prefix(char *buf, size_t len, enum log_prio prio,
                  const struct timespec *now);

/*
 * An error: priority LOG_PRIO_ERR, printed at every level. What follows the
 * prefix is fmt formatted as printf(3) does; the line is written with one
 * write(2), so that lines from several processes or threads never mix.
 */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * A warning: something failed and the program goes on without it (a
 * paused accept, a setting it works around, a certificate kept after a
 * failed reload). Priority LOG_PRIO_WARNING; printed unless -q.
 */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Information: priority LOG_PRIO_INFO; printed unless -q. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Information the operator asked for (SIGUSR1's statistics line): priority
 * LOG_PRIO_INFO, printed at every level, -q included.
 */
void log_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * A -v line (per connection, per refusal): priority LOG_PRIO_DEBUG, printed
 * only with -v; outside the journal the program name is followed by the
 * time (log_prefix).
 */
void log_verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Write the n bytes at s into buf (len bytes) as the value of a key=value
 * pair: as they are if there is at least one and each is a printable ASCII
 * character other than space, '"', '\\' and '='; otherwise between double
 * quotes, with '"' written \", '\\' written \\, and every byte below 0x20 or
 * above 0x7e written \xNN (two lowercase hex digits). So a value never holds
 * a newline or a bare space, quote or '=' and cannot end its line or make
 * up another pair. A value too long for buf is cut before a whole byte's
 * form and ends in LOG_QUOTE_CUT before its closing quote: "\..." never
 * comes from a byte's form, so a cut value cannot pass for a whole one.
 * buf is NUL-terminated (len >= 7). Returns the length written.
 */
#define LOG_QUOTE_CUT "\\..."
size_t log_quote(char *buf, size_t len, const char *s, size_t n);

/*
 * A key=value line being built: log_kv_start, then one call per pair, then
 * log the text (log_verbose("%s", kv.buf)). Keys are the program's own
 * words, written as they are; values go through log_quote, which cuts one
 * too long for what is left. A pair whose key no longer fits is left out.
 */
struct log_kv {
	char buf[LOG_LINE_MAX - 128];
	size_t len;
};
/* Start kv with "event=EVENT". */
void log_kv_start(struct log_kv *kv, const char *event);
/* Add " KEY=VALUE", VALUE quoted as log_quote says; NULL is written "". */
void log_kv_str(struct log_kv *kv, const char *key, const char *value);
/* Add " KEY=V", V in decimal. */
void log_kv_u64(struct log_kv *kv, const char *key, uint64_t v);

#endif
