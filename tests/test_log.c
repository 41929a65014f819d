/*
 * test_log.c - log.c's pure parts: $JOURNAL_STREAM against a descriptor's
 * device and inode, each line's prefix in and out of the journal, the
 * priority every level writes, and the quoting of key=value values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "forkloop/log.h"

static struct stat stat_of(unsigned long long dev, unsigned long long ino)
{
	struct stat st;

	memset(&st, 0, sizeof st);
	st.st_dev = (dev_t)dev;
	st.st_ino = (ino_t)ino;
	return st;
}

static void test_journal_stream_matches_dev_and_inode(void **state)
{
	struct stat st = stat_of(2049, 1234567);
	struct stat big = stat_of(18446744073709551614ULL, 42);

	(void)state;
	assert_true(log_journal_stream("2049:1234567", &st));
	assert_true(log_journal_stream("18446744073709551614:42", &big));
	assert_false(log_journal_stream("2049:1234568", &st));
	assert_false(log_journal_stream("2050:1234567", &st));
	assert_false(log_journal_stream("1234567:2049", &st));
}

static void test_journal_stream_malformed_is_no_match(void **state)
{
	struct stat st = stat_of(1, 2);
	const char *bad[] = {
	        "",
	        "1",
	        "1:",
	        ":2",
	        "1:2:3",
	        " 1:2",
	        "1:2 ",
	        "+1:2",
	        "1:+2",
	        "-1:2",
	        "1:-2",
	        "1:2x",
	        "x1:2",
	        "1;2",
	        "0x1:2",
	        "1:0x2",
	        "01:2x",
	        "1\n:2",
	        "99999999999999999999999999:2",
	        "1:99999999999999999999999999",
	};

	(void)state;
	assert_false(log_journal_stream(NULL, &st));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (log_journal_stream(bad[i], &st))
			fail_msg("'%s' taken for 1:2", bad[i]);
	/* Leading zeros are still decimal. */
	assert_true(log_journal_stream("01:002", &st));
}

/* Descriptor 2 is a temporary file from here on; returns the old one. */
static int stderr_to_file(FILE **tmp)
{
	int saved = dup(STDERR_FILENO);

	*tmp = tmpfile();
	assert_non_null(*tmp);
	assert_true(dup2(fileno(*tmp), STDERR_FILENO) >= 0);
	return saved;
}

/* Put descriptor 2 back; what the file holds into buf. */
static void stderr_back(int saved, FILE *tmp, char *buf, size_t len)
{
	size_t n;

	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(tmp);
	n = fread(buf, 1, len - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
}

/* JOURNAL_STREAM naming descriptor 2 (on 1), or another inode (on 0). */
static void journal_env(int on)
{
	struct stat st;
	char v[64];

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino + (on ? 0 : 1));
	assert_int_equal(setenv("JOURNAL_STREAM", v, 1), 0);
}

static void test_prefix_outside_the_journal(void **state)
{
	/* 2026-11-30T12:34:56.789Z */
	struct timespec t = {1796042096, 789999999};
	char buf[64];

	(void)state;
	unsetenv("JOURNAL_STREAM");
	log_init("/usr/bin/forkloop-echo", LOG_NORMAL);
	assert_false(log_journal());
	assert_int_equal(log_prefix(buf, sizeof buf, LOG_PRIO_ERR, NULL), 15);
	assert_string_equal(buf, "forkloop-echo: ");
	log_prefix(buf, sizeof buf, LOG_PRIO_DEBUG, &t);
	assert_string_equal(buf, "forkloop-echo: 2026-11-30T12:34:56.789Z ");
	t.tv_nsec = 5000000;
	log_prefix(buf, sizeof buf, LOG_PRIO_DEBUG, &t);
	assert_string_equal(buf, "forkloop-echo: 2026-11-30T12:34:56.005Z ");
	/* Too small: nothing, not half a prefix. */
	assert_int_equal(log_prefix(buf, 10, LOG_PRIO_INFO, NULL), 0);
	assert_string_equal(buf, "");
}

static void test_prefix_in_the_journal(void **state)
{
	struct timespec t = {1796042096, 0};
	char buf[64], out[2];
	FILE *tmp;
	int saved;

	(void)state;
	saved = stderr_to_file(&tmp);
	journal_env(1);
	log_init("forkloop-chat", LOG_NORMAL);
	assert_true(log_journal());
	assert_int_equal(log_prefix(buf, sizeof buf, LOG_PRIO_ERR, NULL), 3);
	assert_string_equal(buf, "<3>");
	log_prefix(buf, sizeof buf, LOG_PRIO_WARNING, &t);
	assert_string_equal(buf, "<4>");
	log_prefix(buf, sizeof buf, LOG_PRIO_INFO, NULL);
	assert_string_equal(buf, "<6>");
	log_prefix(buf, sizeof buf, LOG_PRIO_DEBUG, &t);
	assert_string_equal(buf, "<7>");
	/* Inherited, but standard error is another file: not the journal. */
	journal_env(0);
	log_init("forkloop-chat", LOG_NORMAL);
	assert_false(log_journal());
	log_prefix(buf, sizeof buf, LOG_PRIO_INFO, NULL);
	assert_string_equal(buf, "forkloop-chat: ");
	stderr_back(saved, tmp, out, sizeof out);
	unsetenv("JOURNAL_STREAM");
}

/* One line of each kind at level: what the journal gets. */
static void lines_at(enum log_level level, char *buf, size_t len)
{
	FILE *tmp;
	int saved = stderr_to_file(&tmp);

	journal_env(1);
	log_init("forkloop-echo", level);
	log_error("e %d", 1);
	log_warn("w %d", 2);
	log_info("i %d", 3);
	log_report("r %d", 4);
	log_verbose("v %d", 5);
	stderr_back(saved, tmp, buf, len);
	unsetenv("JOURNAL_STREAM");
	log_init("forkloop-echo", LOG_NORMAL);
}

static void test_each_level_writes_its_priorities(void **state)
{
	char buf[256];

	(void)state;
	lines_at(LOG_VERBOSE, buf, sizeof buf);
	assert_string_equal(buf, "<3>e 1\n<4>w 2\n<6>i 3\n<6>r 4\n<7>v 5\n");
	lines_at(LOG_NORMAL, buf, sizeof buf);
	assert_string_equal(buf, "<3>e 1\n<4>w 2\n<6>i 3\n<6>r 4\n");
	/* -q: errors, and what the operator asked for (SIGUSR1). */
	lines_at(LOG_QUIET, buf, sizeof buf);
	assert_string_equal(buf, "<3>e 1\n<6>r 4\n");
}

static void test_verbose_line_stamped_outside_the_journal(void **state)
{
	char buf[256];
	FILE *tmp;
	int saved;

	(void)state;
	saved = stderr_to_file(&tmp);
	unsetenv("JOURNAL_STREAM");
	log_init("forkloop-echo", LOG_VERBOSE);
	log_verbose("event=open");
	log_warn("warned");
	stderr_back(saved, tmp, buf, sizeof buf);
	log_init("forkloop-echo", LOG_NORMAL);
	assert_int_equal(strlen(buf), strlen("forkloop-echo: "
	                                     "2026-11-30T12:34:56.789Z "
	                                     "event=open\n"
	                                     "forkloop-echo: warned\n"));
	assert_memory_equal(buf, "forkloop-echo: ", 15);
	assert_true(buf[15 + 4] == '-' && buf[15 + 10] == 'T' &&
	            buf[15 + 19] == '.' && buf[15 + 23] == 'Z');
	assert_string_equal(buf + 15 + 25,
	                    "event=open\nforkloop-echo: warned\n");
}

static void quoted(const char *s, size_t n, const char *want)
{
	char buf[256];
	size_t len = log_quote(buf, sizeof buf, s, n);

	assert_string_equal(buf, want);
	assert_int_equal(len, strlen(want));
}

static void test_quote_bare_values_as_they_are(void **state)
{
	(void)state;
	quoted("127.0.0.1:4711", 14, "127.0.0.1:4711");
	quoted("[::1]:4711", 10, "[::1]:4711");
	quoted("eof", 3, "eof");
	quoted("unix:/run/echo.sock", 19, "unix:/run/echo.sock");
	quoted("o'k.j-s", 7, "o'k.j-s");
}

static void test_quote_escapes_what_could_forge(void **state)
{
	(void)state;
	quoted("", 0, "\"\"");
	quoted("a b", 3, "\"a b\"");
	quoted("a\"b", 3, "\"a\\\"b\"");
	quoted("a\\b", 3, "\"a\\\\b\"");
	quoted("x=1", 3, "\"x=1\"");
	quoted("a\nb", 3, "\"a\\x0ab\"");
	quoted("\r\t\x1b\x7f", 4, "\"\\x0d\\x09\\x1b\\x7f\"");
	quoted("n\0l", 3, "\"n\\x00l\"");
	quoted("\xc3\xa9", 2, "\"\\xc3\\xa9\"");
	quoted("\xff", 1, "\"\\xff\"");
	/* A value that tries to close its quote and add a pair, and a line. */
	quoted("alice\" peer=evil\nforkloop-echo: event=open", 42,
	       "\"alice\\\" peer=evil\\x0aforkloop-echo: event=open\"");
	quoted("unix:/tmp/x (uid 0 pid 1)", 25,
	       "\"unix:/tmp/x (uid 0 pid 1)\"");
}

static void test_quote_cuts_whole_escapes_and_keeps_the_quote(void **state)
{
	char buf[12];

	(void)state;
	/* A value that fits exactly: no mark. */
	assert_int_equal(log_quote(buf, sizeof buf, "ab cdefgh", 9), 11);
	assert_string_equal(buf, "\"ab cdefgh\"");
	/* One byte more: cut, with the mark, and the quote kept. */
	assert_int_equal(log_quote(buf, sizeof buf, "ab cdefghi", 10), 11);
	assert_string_equal(buf, "\"ab cd\\...\"");
	/* An escape that does not fit whole is left out. */
	assert_int_equal(log_quote(buf, sizeof buf, "abcdef\n", 7), 11);
	assert_string_equal(buf, "\"abcde\\...\"");
	assert_int_equal(log_quote(buf, sizeof buf, "a\"\"\"\"\"", 6), 11);
	assert_string_equal(buf, "\"a\\\"\\\"\\...\"");
	/* A bare value too long is quoted, then cut. */
	assert_int_equal(log_quote(buf, sizeof buf, "abcdefghijkl", 12), 11);
	assert_string_equal(buf, "\"abcde\\...\"");
	/* The smallest buffer: the mark alone. */
	assert_int_equal(log_quote(buf, 7, "a cde", 5), 6);
	assert_string_equal(buf, "\"\\...\"");
	assert_int_equal(log_quote(buf, 6, "abc", 3), 0);
	assert_string_equal(buf, "");
}

static void test_kv_line(void **state)
{
	struct log_kv kv;

	(void)state;
	log_kv_start(&kv, "close");
	log_kv_str(&kv, "peer", "127.0.0.1:4711");
	log_kv_u64(&kv, "in", 4096);
	log_kv_u64(&kv, "out", UINT64_MAX);
	log_kv_str(&kv, "reason", "eof");
	log_kv_str(&kv, "error", "Connection reset by peer");
	log_kv_str(&kv, "none", NULL);
	assert_string_equal(kv.buf, "event=close peer=127.0.0.1:4711 in=4096 "
	                            "out=18446744073709551615 reason=eof "
	                            "error=\"Connection reset by peer\" "
	                            "none=\"\"");
	assert_int_equal(kv.len, strlen(kv.buf));
}

static void test_kv_line_never_overflows(void **state)
{
	char big[4096];
	struct log_kv kv;
	size_t i;

	(void)state;
	memset(big, '"', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	log_kv_start(&kv, "join");
	log_kv_str(&kv, "name", big);
	assert_int_equal(kv.len, strlen(kv.buf));
	assert_true(kv.len < sizeof kv.buf);
	assert_int_equal(kv.buf[kv.len - 1], '"');
	/* Whole escapes only: the value's backslashes come in pairs with a
	 * quote each, then the cut mark and the closing quote. */
	for (i = strlen("event=join name=\"");
	     i + 1 < kv.len - strlen(LOG_QUOTE_CUT); i += 2)
		assert_memory_equal(kv.buf + i, "\\\"", 2);
	assert_int_equal(i, kv.len - 1 - strlen(LOG_QUOTE_CUT));
	assert_memory_equal(kv.buf + i, LOG_QUOTE_CUT "\"", 5);
	/* Full: more pairs are left out, not cut in half. */
	log_kv_u64(&kv, "lines_in", 3);
	log_kv_str(&kv, "peer", "x");
	assert_null(strstr(kv.buf, "lines_in"));
	assert_int_equal(kv.len, strlen(kv.buf));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_journal_stream_matches_dev_and_inode),
	        cmocka_unit_test(test_journal_stream_malformed_is_no_match),
	        cmocka_unit_test(test_prefix_outside_the_journal),
	        cmocka_unit_test(test_prefix_in_the_journal),
	        cmocka_unit_test(test_each_level_writes_its_priorities),
	        cmocka_unit_test(test_verbose_line_stamped_outside_the_journal),
	        cmocka_unit_test(test_quote_bare_values_as_they_are),
	        cmocka_unit_test(test_quote_escapes_what_could_forge),
	        cmocka_unit_test(
	                test_quote_cuts_whole_escapes_and_keeps_the_quote),
	        cmocka_unit_test(test_kv_line),
	        cmocka_unit_test(test_kv_line_never_overflows),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
