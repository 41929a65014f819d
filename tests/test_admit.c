/*
 * test_admit.c - admission: option values, the access lists, the source
 * table with its limits, the log limiter and the counters.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "forkloop/admit.h"

#define SA(ss) ((const struct sockaddr *)&(ss))

static struct sockaddr_storage v4(const char *host)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof ss);
	sin->sin_family = AF_INET;
	sin->sin_port = htons(40000);
	assert_int_equal(inet_pton(AF_INET, host, &sin->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *host)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof ss);
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(40000);
	assert_int_equal(inet_pton(AF_INET6, host, &sin6->sin6_addr), 1);
	return ss;
}

/* The IPv4 address n (host order). */
static struct sockaddr_storage v4n(uint32_t n)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof ss);
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(n);
	return ss;
}

static struct admit *made(const char *const *args)
{
	struct admit *a = admit_new();
	char err[512] = "";

	assert_non_null(a);
	for (; args[0] != NULL; args += 2) {
		int opt = -1;

		if (strcmp(args[0], "--allow") == 0)
			opt = ADMIT_OPT_ALLOW;
		else if (strcmp(args[0], "--deny") == 0)
			opt = ADMIT_OPT_DENY;
		else if (strcmp(args[0], "--max-conns-per-source") == 0)
			opt = ADMIT_OPT_PER_SOURCE;
		else if (strcmp(args[0], "--source-prefix6") == 0)
			opt = ADMIT_OPT_PREFIX6;
		else if (strcmp(args[0], "--accept-rate") == 0)
			opt = ADMIT_OPT_RATE;
		else if (strcmp(args[0], "--accept-burst") == 0)
			opt = ADMIT_OPT_BURST;
		else if (strcmp(args[0], "--source-table") == 0)
			opt = ADMIT_OPT_TABLE;
		else if (strcmp(args[0], "--allow-uid") == 0)
			opt = ADMIT_OPT_ALLOW_UID;
		if (admit_option(a, opt, args[1], err, sizeof err) != 1)
			fail_msg("%s %s: %s", args[0], args[1], err);
	}
	if (admit_finish(a, err, sizeof err) != 0)
		fail_msg("admit_finish: %s", err);
	return a;
}

#define MADE(...) made((const char *const[]){__VA_ARGS__, NULL})

/* The message admit_option gives for a refused value. */
static const char *refused(int opt, const char *arg)
{
	static char err[512];
	struct admit *a = admit_new();

	assert_non_null(a);
	err[0] = '\0';
	assert_int_equal(admit_option(a, opt, arg, err, sizeof err), -1);
	admit_free(a);
	return err;
}

static void accepted(int opt, const char *arg)
{
	struct admit *a = admit_new();
	char err[512] = "";

	assert_non_null(a);
	if (admit_option(a, opt, arg, err, sizeof err) != 1)
		fail_msg("refused %s: %s", arg, err);
	admit_free(a);
}

static void test_cidr_values_accepted(void **state)
{
	static const char *const good[] = {
	        "10.0.0.0/8",    "10.1.2.3",  "10.1.2.3/32",
	        "0.0.0.0/0",     "::1",       "::1/128",
	        "2001:db8::/32", "::/0",      "::ffff:10.0.0.0/104",
	        "::ffff:0:0/96", "fe80::/10", "192.168.1.0/24",
	};

	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		accepted(ADMIT_OPT_ALLOW, good[i]);
		accepted(ADMIT_OPT_DENY, good[i]);
	}
}

static void test_cidr_values_refused_with_reason(void **state)
{
	(void)state;
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.0.0.0/33"),
	                    "--allow 10.0.0.0/33: prefix length must be 0 to "
	                    "32");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "nonsense"),
	                    "--allow nonsense: not an IPv4 or IPv6 address "
	                    "with an optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_DENY, "10.1.0.0/8"),
	                    "--deny 10.1.0.0/8: host bits set; did you mean "
	                    "10.0.0.0/8?");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.0.0.1/0"),
	                    "--allow 10.0.0.1/0: host bits set; did you mean "
	                    "0.0.0.0/0?");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "2001:db8::1/32"),
	                    "--allow 2001:db8::1/32: host bits set; did you "
	                    "mean 2001:db8::/32?");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "::ffff:10.1.0.0/104"),
	                    "--allow ::ffff:10.1.0.0/104: host bits set; did "
	                    "you mean ::ffff:10.0.0.0/104?");
	assert_string_equal(refused(ADMIT_OPT_DENY, "::/129"),
	                    "--deny ::/129: prefix length must be 0 to 128");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.0.0.0/"),
	                    "--allow 10.0.0.0/: prefix length must be 0 to 32");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.0.0.0/-1"),
	                    "--allow 10.0.0.0/-1: prefix length must be 0 to "
	                    "32");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.0.0.0/8x"),
	                    "--allow 10.0.0.0/8x: prefix length must be 0 to "
	                    "32");
	/* inet_pton(3) takes the dotted quad only: no "10.1", no octal. */
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "10.1"),
	                    "--allow 10.1: not an IPv4 or IPv6 address with "
	                    "an optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "010.1.2.3"),
	                    "--allow 010.1.2.3: not an IPv4 or IPv6 address "
	                    "with an optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, ""),
	                    "--allow : not an IPv4 or IPv6 address with an "
	                    "optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "/8"),
	                    "--allow /8: not an IPv4 or IPv6 address with an "
	                    "optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, " 10.0.0.0/8"),
	                    "--allow  10.0.0.0/8: not an IPv4 or IPv6 address "
	                    "with an optional /LEN");
	assert_string_equal(refused(ADMIT_OPT_ALLOW, "fe80::1%lo"),
	                    "--allow fe80::1%lo: not an IPv4 or IPv6 address "
	                    "with an optional /LEN");
}

static void test_number_values(void **state)
{
	struct admit *a = admit_new();
	char err[128];

	(void)state;
	assert_string_equal(refused(ADMIT_OPT_PER_SOURCE, "0"),
	                    "--max-conns-per-source 0: must be 1 or more");
	assert_string_equal(refused(ADMIT_OPT_PER_SOURCE, "-1"),
	                    "--max-conns-per-source -1: must be 1 or more");
	accepted(ADMIT_OPT_PER_SOURCE, "1");
	assert_string_equal(refused(ADMIT_OPT_PREFIX6, "0"),
	                    "--source-prefix6 0: must be 1 to 128");
	assert_string_equal(refused(ADMIT_OPT_PREFIX6, "129"),
	                    "--source-prefix6 129: must be 1 to 128");
	accepted(ADMIT_OPT_PREFIX6, "1");
	accepted(ADMIT_OPT_PREFIX6, "128");
	static const char *const bad_rates[] = {"0",   "0/s", "-1",   "abc",
	                                        "5/m", "inf", "nan",  "1e3",
	                                        "/s",  "",    "0x10", "5 /s"};
	for (size_t i = 0; i < sizeof bad_rates / sizeof bad_rates[0]; i++) {
		char want[128];

		snprintf(want, sizeof want,
		         "--accept-rate %s: must be a number of connections a "
		         "second, more than 0 (R or R/s)",
		         bad_rates[i]);
		assert_string_equal(refused(ADMIT_OPT_RATE, bad_rates[i]),
		                    want);
	}
	accepted(ADMIT_OPT_RATE, "2.5");
	accepted(ADMIT_OPT_RATE, "10/s");
	accepted(ADMIT_OPT_RATE, "0.01");
	assert_string_equal(refused(ADMIT_OPT_BURST, "0"),
	                    "--accept-burst 0: must be 1 to 4294967295");
	assert_string_equal(refused(ADMIT_OPT_BURST, "1.5"),
	                    "--accept-burst 1.5: must be 1 to 4294967295");
	accepted(ADMIT_OPT_BURST, "1");
	assert_string_equal(refused(ADMIT_OPT_TABLE, "0"),
	                    "--source-table 0: must be 1 to 16777216");
	assert_string_equal(refused(ADMIT_OPT_TABLE, "16777217"),
	                    "--source-table 16777217: must be 1 to 16777216");
	accepted(ADMIT_OPT_TABLE, "1");
	accepted(ADMIT_OPT_TABLE, "16777216");
	/* Not an admission option: left to the caller. */
	assert_non_null(a);
	assert_int_equal(admit_option(a, 'l', "x", err, sizeof err), 0);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_BASE - 1, "x", err, sizeof err), 0);
	admit_free(a);
	admit_free(NULL);
}

static void test_allow_uid_values(void **state)
{
	struct admit *a = admit_new();
	char err[128], num[16];

	(void)state;
	accepted(ADMIT_OPT_ALLOW_UID, "0");
	accepted(ADMIT_OPT_ALLOW_UID, "root");
	accepted(ADMIT_OPT_ALLOW_UID, "4294967294");
	assert_string_equal(refused(ADMIT_OPT_ALLOW_UID, "no-such-user-x9"),
	                    "--allow-uid no-such-user-x9: no such user");
	assert_string_equal(refused(ADMIT_OPT_ALLOW_UID, ""),
	                    "--allow-uid : no such user");
	/* (uid_t)-1 means "no user" (chown(2)): never a peer's id. */
	assert_string_equal(refused(ADMIT_OPT_ALLOW_UID, "4294967295"),
	                    "--allow-uid 4294967295: not a user id: a number "
	                    "from 0 to 4294967294, or a user name");
	assert_string_equal(refused(ADMIT_OPT_ALLOW_UID, "-1"),
	                    "--allow-uid -1: not a user id: a number "
	                    "from 0 to 4294967294, or a user name");
	assert_non_null(a);
	assert_int_equal(admit_has_uids(a), 0);
	for (int i = 0; i < ADMIT_MAX_UIDS; i++) {
		snprintf(num, sizeof num, "%d", 1000 + i);
		assert_int_equal(admit_option(a, ADMIT_OPT_ALLOW_UID, num, err,
		                              sizeof err),
		                 1);
	}
	/* The same user again takes no room. */
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_UID, "1000", err, sizeof err),
	        1);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_UID, "5000", err, sizeof err),
	        -1);
	assert_string_equal(err,
	                    "--allow-uid 5000: too many users (at most 64)");
	assert_int_equal(admit_has_uids(a), 1);
	assert_int_equal(admit_active(a), 1);
	admit_free(a);
}

static void test_finish_checks_what_goes_together(void **state)
{
	static const struct {
		int opt;
		const char *arg;
		const char *msg;
	} lone[] = {
	        {ADMIT_OPT_BURST, "5", "--accept-burst needs --accept-rate"},
	        {ADMIT_OPT_TABLE, "5",
	         "--source-table needs --max-conns-per-source or "
	         "--accept-rate"},
	        {ADMIT_OPT_PREFIX6, "48",
	         "--source-prefix6 needs --max-conns-per-source or "
	         "--accept-rate"},
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof lone / sizeof lone[0]; i++) {
		struct admit *a = admit_new();

		assert_non_null(a);
		assert_int_equal(admit_option(a, lone[i].opt, lone[i].arg, err,
		                              sizeof err),
		                 1);
		assert_int_equal(admit_finish(a, err, sizeof err), -1);
		assert_string_equal(err, lone[i].msg);
		admit_free(a);
	}
	struct admit *a = admit_new();
	assert_non_null(a);
	assert_int_equal(admit_active(a), 0);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	assert_int_equal(admit_active(a), 0);
	admit_free(a);
}

/* A temporary file holding text; its name in path. */
static void temp_file(char *path, size_t len, const char *text)
{
	int fd;

	snprintf(path, len, "/tmp/test_admit.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void test_files_comments_blank_lines_and_errors(void **state)
{
	char path[64], want[256], err[256];
	struct admit *a = admit_new();
	struct sockaddr_storage ss;

	(void)state;
	assert_non_null(a);
	temp_file(path, sizeof path,
	          "# office networks\n"
	          "\n"
	          "   10.0.0.0/8   # the whole ten\n"
	          "\t192.168.1.0/24\r\n"
	          "2001:db8::/32#no space before the comment\n"
	          "   \n"
	          "# ::/0\n"
	          "198.51.100.7");
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        1);
	unlink(path);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	ss = v4("10.200.1.1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v4("192.168.1.77");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v4("198.51.100.7");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v6("2001:db8:ffff::1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v4("198.51.100.8");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_DENIED);
	ss = v4("192.168.2.1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_DENIED);
	ss = v6("2001:db9::1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_DENIED);
	admit_free(a);

	temp_file(path, sizeof path,
	          "10.0.0.0/8\n"
	          "# fine so far\n"
	          "\n"
	          "  10.1.0.0/8  # a typo\n"
	          "10.0.0.0/33\n");
	a = admit_new();
	assert_non_null(a);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_DENY_FILE, path, err, sizeof err),
	        -1);
	snprintf(want, sizeof want,
	         "--deny-file %s:4: 10.1.0.0/8: host bits set; did you mean "
	         "10.0.0.0/8?",
	         path);
	assert_string_equal(err, want);
	unlink(path);
	temp_file(path, sizeof path, "\n\nbogus\n");
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        -1);
	snprintf(want, sizeof want,
	         "--allow-file %s:3: bogus: not an IPv4 or IPv6 address with "
	         "an optional "
	         "/LEN",
	         path);
	assert_string_equal(err, want);
	/* Unreadable: the file and strerror. */
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        -1);
	unlink(path);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        -1);
	snprintf(want, sizeof want, "--allow-file %s: %s", path,
	         strerror(ENOENT));
	assert_string_equal(err, want);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_DENY_FILE, "/tmp", err, sizeof err),
	        -1);
	snprintf(want, sizeof want, "--deny-file /tmp: %s", strerror(EISDIR));
	assert_string_equal(err, want);
	admit_free(a);
}

/* A file of len bytes, NULs and all. */
static void temp_bytes(char *path, size_t plen, const char *bytes, size_t len)
{
	int fd;

	snprintf(path, plen, "/tmp/test_admit.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, len), (ssize_t)len);
	close(fd);
}

/*
 * A NUL byte would end the line for every string function, and what
 * follows it would be dropped unseen: the line is an error. A UTF-8 byte
 * order mark before the first line is skipped; CR LF line ends and tabs
 * are white space; a line over 1,023 bytes is refused.
 */
static void test_file_nul_byte_bom_crlf(void **state)
{
	static const char nul[] = "10.0.0.0/8\n192.0.2.1\0.5\n";
	static const char bom[] = "\xef\xbb\xbf" "192.0.2.0/24\r\n"
	                          "\t198.51.100.0/24\t# tab\r\n";
	char path[64], want[256], err[256];
	struct admit *a = admit_new();
	struct sockaddr_storage ss;

	(void)state;
	assert_non_null(a);
	temp_bytes(path, sizeof path, nul, sizeof nul - 1);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_DENY_FILE, path, err, sizeof err),
	        -1);
	snprintf(want, sizeof want, "--deny-file %s:2: a NUL byte in the line",
	         path);
	assert_string_equal(err, want);
	unlink(path);
	/* No newline in sight (a binary given by mistake): refused at the
	 * first 1,024 bytes, not read whole. */
	{
		static char junk[64 * 1024];

		memset(junk, 'x', sizeof junk);
		temp_bytes(path, sizeof path, junk, sizeof junk);
	}
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_DENY_FILE, path, err, sizeof err),
	        -1);
	snprintf(want, sizeof want,
	         "--deny-file %s:1: line longer than 1023 bytes", path);
	assert_string_equal(err, want);
	unlink(path);
	temp_bytes(path, sizeof path, bom, sizeof bom - 1);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        1);
	unlink(path);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	ss = v4("192.0.2.200");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v4("198.51.100.1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_OK);
	ss = v4("203.0.113.1");
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_DENIED);
	admit_free(a);
}

/* The rate in a refusal's words is the one given, not rounded to 6 digits. */
static void test_rate_text_as_given(void **state)
{
	struct admit *a = MADE("--accept-rate", "1234567/s");
	char buf[96];

	(void)state;
	assert_string_equal(admit_why_text(a, ADMIT_RATE, buf, sizeof buf),
	                    "over --accept-rate 1234567/s");
	admit_free(a);
	a = MADE("--accept-rate", "0.25");
	assert_string_equal(admit_why_text(a, ADMIT_RATE, buf, sizeof buf),
	                    "over --accept-rate 0.25/s");
	admit_free(a);
}

/* An --allow-file with no rule lets no IP peer in: an allow list is given. */
static void test_empty_allow_file_admits_no_ip_peer(void **state)
{
	char path[64], err[256];
	struct admit *a = admit_new();
	struct sockaddr_storage ss = v4("10.0.0.1");

	(void)state;
	assert_non_null(a);
	temp_file(path, sizeof path, "# nobody yet\n\n");
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        1);
	unlink(path);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	assert_int_equal(admit_active(a), 1);
	assert_int_equal(admit_check_addr(a, SA(ss), sizeof ss), ADMIT_DENIED);
	admit_free(a);
}

static enum admit_why check(const struct admit *a, const char *host)
{
	struct sockaddr_storage ss =
	        strchr(host, ':') != NULL ? v6(host) : v4(host);

	return admit_check_addr(a, SA(ss), sizeof ss);
}

static void test_deny_wins_over_allow(void **state)
{
	struct admit *a =
	        MADE("--allow", "10.0.0.0/8", "--deny", "10.9.0.0/16",
	             "--allow", "10.9.1.0/24", "--deny", "10.1.2.3", "--allow",
	             "2001:db8::/32", "--deny", "2001:db8:bad::/48");

	(void)state;
	assert_int_equal(admit_active(a), 1);
	assert_int_equal(check(a, "10.1.1.1"), ADMIT_OK);
	assert_int_equal(check(a, "10.9.1.1"), ADMIT_DENIED);
	assert_int_equal(check(a, "10.9.200.1"), ADMIT_DENIED);
	assert_int_equal(check(a, "10.1.2.3"), ADMIT_DENIED);
	assert_int_equal(check(a, "10.1.2.4"), ADMIT_OK);
	assert_int_equal(check(a, "2001:db8::1"), ADMIT_OK);
	assert_int_equal(check(a, "2001:db8:bad::1"), ADMIT_DENIED);
	assert_int_equal(check(a, "2001:db8:bae::1"), ADMIT_OK);
	/* Outside every allow. */
	assert_int_equal(check(a, "11.0.0.1"), ADMIT_DENIED);
	assert_int_equal(check(a, "::1"), ADMIT_DENIED);
	admit_free(a);
}

static void test_allow_only_and_deny_only(void **state)
{
	struct admit *a = MADE("--allow", "127.0.0.1");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	(void)state;
	assert_int_equal(check(a, "127.0.0.1"), ADMIT_OK);
	assert_int_equal(check(a, "127.0.0.2"), ADMIT_DENIED);
	/* An allow in one family closes the other. */
	assert_int_equal(check(a, "::1"), ADMIT_DENIED);
	/* Not subject to the lists. */
	assert_int_equal(
	        admit_check_addr(a, (struct sockaddr *)&sun, sizeof sun),
	        ADMIT_OK);
	assert_int_equal(admit_check_addr(a, NULL, 0), ADMIT_OK);
	admit_free(a);

	a = MADE("--deny", "10.0.0.0/8", "--deny", "::1");
	assert_int_equal(check(a, "10.255.255.255"), ADMIT_DENIED);
	assert_int_equal(check(a, "11.0.0.0"), ADMIT_OK);
	assert_int_equal(check(a, "9.255.255.255"), ADMIT_OK);
	assert_int_equal(check(a, "::1"), ADMIT_DENIED);
	assert_int_equal(check(a, "::2"), ADMIT_OK);
	admit_free(a);

	a = MADE("--deny", "0.0.0.0/0");
	assert_int_equal(check(a, "1.2.3.4"), ADMIT_DENIED);
	assert_int_equal(check(a, "2001:db8::1"), ADMIT_OK);
	admit_free(a);

	a = MADE("--allow", "::/0");
	assert_int_equal(check(a, "2001:db8::1"), ADMIT_OK);
	assert_int_equal(check(a, "1.2.3.4"), ADMIT_DENIED);
	admit_free(a);
}

static void test_mapped_peers_match_ipv4_rules(void **state)
{
	struct admit *a = MADE("--allow", "10.0.0.0/8", "--deny", "10.6.0.0/16",
	                       "--deny", "::ffff:192.168.1.0/120", "--allow",
	                       "::ffff:192.168.0.0/112");

	(void)state;
	assert_int_equal(check(a, "::ffff:10.1.2.3"), ADMIT_OK);
	assert_int_equal(check(a, "::ffff:11.1.2.3"), ADMIT_DENIED);
	assert_int_equal(check(a, "::ffff:10.6.0.1"), ADMIT_DENIED);
	/* A rule in ::ffff:0:0/96 is an IPv4 rule. */
	assert_int_equal(check(a, "192.168.1.1"), ADMIT_DENIED);
	assert_int_equal(check(a, "192.168.16.1"), ADMIT_OK);
	assert_int_equal(check(a, "::ffff:192.168.16.1"), ADMIT_OK);
	assert_int_equal(check(a, "::ffff:192.168.1.1"), ADMIT_DENIED);
	/* Only the mapped prefix: ::10.1.2.3 is no IPv4 address. */
	assert_int_equal(check(a, "::10.1.2.3"), ADMIT_DENIED);
	admit_free(a);
	/* An IPv6 rule, even ::/0, never matches a mapped peer (the docs). */
	a = MADE("--deny", "::/0");
	assert_int_equal(check(a, "::ffff:10.1.2.3"), ADMIT_OK);
	assert_int_equal(check(a, "2001:db8::1"), ADMIT_DENIED);
	admit_free(a);
	a = MADE("--allow", "::/0");
	assert_int_equal(check(a, "::ffff:10.1.2.3"), ADMIT_DENIED);
	assert_int_equal(check(a, "10.1.2.3"), ADMIT_DENIED);
	admit_free(a);
	/* ::ffff:0:0/96 is 0.0.0.0/0: every IPv4 peer, no IPv6 one. */
	a = MADE("--deny", "::ffff:0:0/96");
	assert_int_equal(check(a, "10.1.2.3"), ADMIT_DENIED);
	assert_int_equal(check(a, "::ffff:10.1.2.3"), ADMIT_DENIED);
	assert_int_equal(check(a, "2001:db8::1"), ADMIT_OK);
	admit_free(a);
}

/* Connect a Unix socket pair; the accepted end in *srv. */
static int unix_pair(int *srv)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	*srv = sv[0];
	return sv[1];
}

static void test_unix_peers_and_allow_uid(void **state)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct admit_ticket t;
	char me[32], err[128];
	struct admit *a;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int srv, cli = unix_pair(&srv);
	uint64_t n[ADMIT_NWHY];

	(void)state;
	assert_int_equal(admit_peercred(srv, &uid, &gid, &pid), 0);
	assert_int_equal(uid, getuid());
	assert_int_equal(gid, getgid());
	assert_int_equal(pid, getpid());
	errno = 0;
	assert_int_equal(admit_peercred(-1, &uid, &gid, &pid), -1);
	assert_int_equal(errno, EBADF);

	/* The lists do not apply to Unix peers. */
	a = MADE("--allow", "10.0.0.0/8", "--deny", "0.0.0.0/0");
	assert_int_equal(admit_has_uids(a), 0);
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_OK);
	admit_free(a);

	snprintf(me, sizeof me, "%u", (unsigned)getuid());
	a = MADE("--allow-uid", me);
	assert_int_equal(admit_has_uids(a), 1);
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_OK);
	/* --allow-uid closes no IP peer out. */
	struct sockaddr_storage ss = v4("10.0.0.1");
	assert_int_equal(admit_conn(a, -1, SA(ss), sizeof ss, 1.0, &t),
	                 ADMIT_OK);
	admit_free(a);

	a = admit_new();
	assert_non_null(a);
	snprintf(me, sizeof me, "%u", (unsigned)getuid() + 1);
	assert_int_equal(
	        admit_option(a, ADMIT_OPT_ALLOW_UID, me, err, sizeof err), 1);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_UID);
	/* No address from accept(2): the socket says it is a Unix one. */
	assert_int_equal(admit_conn(a, srv, NULL, 0, 1.0, &t), ADMIT_UID);
	/* No credentials to read: refused too. */
	assert_int_equal(admit_conn(a, -1, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_UID);
	admit_counts(a, n);
	assert_int_equal(n[ADMIT_UID], 3);
	admit_free(a);

	/* Per source, a Unix peer is its user. */
	a = MADE("--max-conns-per-source", "2");
	struct admit_ticket held[2];
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &held[0]),
	                 ADMIT_OK);
	assert_int_equal(held[0].family, AF_UNIX);
	assert_int_equal(held[0].tracked, 1);
	assert_int_equal(admit_conn(a, cli, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &held[1]),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_PER_SOURCE);
	admit_release(a, &held[0]);
	assert_int_equal(admit_conn(a, srv, (struct sockaddr *)&sun,
	                            sizeof(sa_family_t), 1.0, &t),
	                 ADMIT_OK);
	admit_free(a);
	close(srv);
	close(cli);
}

static void test_ipv6_sources_grouped_by_prefix(void **state)
{
	struct admit *a = MADE("--max-conns-per-source", "2");
	struct sockaddr_storage x = v6("2001:db8:1:2:aaaa::1");
	struct sockaddr_storage y = v6("2001:db8:1:2:bbbb::2");
	struct sockaddr_storage z = v6("2001:db8:1:3::1");
	struct sockaddr_storage m = v6("::ffff:10.1.2.3");
	struct admit_ticket tx, ty, tz, tm;
	uint8_t want[16];

	(void)state;
	admit_source(a, SA(x), sizeof x, &tx);
	admit_source(a, SA(y), sizeof y, &ty);
	admit_source(a, SA(z), sizeof z, &tz);
	assert_int_equal(tx.family, AF_INET6);
	assert_int_equal(tx.tracked, 0);
	assert_memory_equal(tx.key, ty.key, 16);
	assert_memory_not_equal(tx.key, tz.key, 16);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2::", want), 1);
	assert_memory_equal(tx.key, want, 16);
	/* A mapped peer is its IPv4 address. */
	admit_source(a, SA(m), sizeof m, &tm);
	assert_int_equal(tm.family, AF_INET);
	assert_memory_equal(tm.key, "\x0a\x01\x02\x03", 4);

	/* Two addresses of one /64 share its allowance. */
	assert_int_equal(admit_conn(a, -1, SA(x), sizeof x, 1.0, &tx),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(y), sizeof y, 1.0, &ty),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(x), sizeof x, 1.0, &tm),
	                 ADMIT_PER_SOURCE);
	assert_int_equal(admit_conn(a, -1, SA(z), sizeof z, 1.0, &tz),
	                 ADMIT_OK);
	admit_free(a);

	a = MADE("--max-conns-per-source", "1", "--source-prefix6", "48");
	admit_source(a, SA(z), sizeof z, &tz);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:1::", want), 1);
	assert_memory_equal(tz.key, want, 16);
	assert_int_equal(admit_conn(a, -1, SA(x), sizeof x, 1.0, &tx),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(z), sizeof z, 1.0, &tz),
	                 ADMIT_PER_SOURCE);
	admit_free(a);

	a = MADE("--max-conns-per-source", "1", "--source-prefix6", "128");
	assert_int_equal(admit_conn(a, -1, SA(x), sizeof x, 1.0, &tx),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(y), sizeof y, 1.0, &ty),
	                 ADMIT_OK);
	admit_free(a);
}

static void test_per_source_count_is_exact(void **state)
{
	struct admit *a = MADE("--max-conns-per-source", "3");
	struct sockaddr_storage s = v4("192.0.2.1"), o = v4("192.0.2.2");
	struct sockaddr_storage ms = v6("::ffff:192.0.2.1");
	struct admit_ticket t[3], r, other;
	uint64_t n[ADMIT_NWHY];

	(void)state;
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t[0]),
	                 ADMIT_OK);
	/* The same address through a dual-stack socket is the same source. */
	assert_int_equal(admit_conn(a, -1, SA(ms), sizeof ms, 1.0, &t[1]),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t[2]),
	                 ADMIT_OK);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &r),
		                 ADMIT_PER_SOURCE);
		assert_int_equal(r.tracked, 0);
		/* Releasing a refused one counts nothing out. */
		admit_release(a, &r);
	}
	assert_int_equal(admit_conn(a, -1, SA(o), sizeof o, 1.0, &other),
	                 ADMIT_OK);
	admit_release(a, &t[1]);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 2.0, &t[1]),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 2.0, &r),
	                 ADMIT_PER_SOURCE);
	for (int i = 0; i < 3; i++)
		admit_release(a, &t[i]);
	/* Released more often than admitted: never below 0. */
	admit_release(a, &t[0]);
	admit_release(a, &t[0]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 3.0, &t[i]),
		                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 3.0, &r),
	                 ADMIT_PER_SOURCE);
	admit_counts(a, n);
	assert_int_equal(n[ADMIT_PER_SOURCE], 7);
	assert_int_equal(n[ADMIT_OK], 0);
	admit_free(a);
}

static void test_rate_below_and_above(void **state)
{
	struct admit *a = MADE("--accept-rate", "2/s");
	struct sockaddr_storage s = v4("192.0.2.1"), o = v4("192.0.2.2");
	struct admit_ticket t;
	double now = 1000.0;

	(void)state;
	/* Burst: the rate rounded up, and the bucket starts full. */
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t), ADMIT_OK);
	admit_release(a, &t);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t),
	                 ADMIT_RATE);
	assert_int_equal(t.tracked, 0);
	/* Only the source over its rate. */
	assert_int_equal(admit_conn(a, -1, SA(o), sizeof o, now, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now + 0.25, &t),
	                 ADMIT_RATE);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now + 0.5, &t),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now + 0.5, &t),
	                 ADMIT_RATE);
	/* At the rate, forever. */
	for (int i = 1; i <= 100; i++)
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s,
		                            now + 0.5 + i * 0.5, &t),
		                 ADMIT_OK);
	/* Idle for long: no more than the burst. */
	now += 1000;
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now, &t),
	                 ADMIT_RATE);
	/* A clock read earlier by another thread takes nothing back. */
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, now - 5, &t),
	                 ADMIT_RATE);
	admit_free(a);

	a = MADE("--accept-rate", "2.5");
	for (int i = 0; i < 3; i++)
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 5.0, &t),
		                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 5.0, &t),
	                 ADMIT_RATE);
	admit_free(a);

	a = MADE("--accept-rate", "0.5");
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 5.0, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 6.75, &t),
	                 ADMIT_RATE);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 7.0, &t), ADMIT_OK);
	admit_free(a);
}

static void test_burst(void **state)
{
	struct admit *a = MADE("--accept-rate", "1", "--accept-burst", "5");
	struct sockaddr_storage s = v6("2001:db8::1");
	struct admit_ticket t;

	(void)state;
	for (int i = 0; i < 5; i++)
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 10.0, &t),
		                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 10.0, &t),
	                 ADMIT_RATE);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 12.0, &t),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 12.0, &t),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 12.0, &t),
	                 ADMIT_RATE);
	admit_free(a);
}

/* Checked in order: a connection refused per source takes no token. */
static void test_refused_per_source_takes_no_token(void **state)
{
	struct admit *a = MADE("--max-conns-per-source", "1", "--accept-rate",
	                       "1", "--accept-burst", "3");
	struct sockaddr_storage s = v4("192.0.2.9");
	struct admit_ticket t, r;

	(void)state;
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t), ADMIT_OK);
	for (int i = 0; i < 10; i++)
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &r),
		                 ADMIT_PER_SOURCE);
	admit_release(a, &t);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t), ADMIT_OK);
	admit_release(a, &t);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t), ADMIT_OK);
	admit_release(a, &t);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t),
	                 ADMIT_RATE);
	admit_free(a);
}

/*
 * A limited source, then 100,000 new sources at once: the limited source
 * keeps its state, and the flood is refused once the free entries are
 * gone, since nothing else can be forgotten yet.
 */
static void test_flood_keeps_limited_sources(void **state)
{
	struct admit *a =
	        MADE("--source-table", "1024", "--accept-rate", "1",
	             "--accept-burst", "2", "--max-conns-per-source", "1");
	struct sockaddr_storage lim = v4("192.0.2.1"), held = v4("192.0.2.2");
	struct sockaddr_storage s;
	struct admit_ticket tl, th, t;
	uint64_t n[ADMIT_NWHY];
	unsigned ok = 0, full = 0;

	(void)state;
	/* lim spends its bucket; held keeps a connection open. */
	assert_int_equal(admit_conn(a, -1, SA(lim), sizeof lim, 0.0, &tl),
	                 ADMIT_OK);
	admit_release(a, &tl);
	assert_int_equal(admit_conn(a, -1, SA(lim), sizeof lim, 0.0, &tl),
	                 ADMIT_OK);
	admit_release(a, &tl);
	assert_int_equal(admit_conn(a, -1, SA(lim), sizeof lim, 0.0, &t),
	                 ADMIT_RATE);
	assert_int_equal(admit_conn(a, -1, SA(held), sizeof held, 0.0, &th),
	                 ADMIT_OK);

	for (uint32_t i = 0; i < 100000; i++) {
		double now = 0.5 * i / 100000;

		s = v4n(0x0a000000u + i);
		switch (admit_conn(a, -1, SA(s), sizeof s, now, &t)) {
		case ADMIT_OK:
			ok++;
			admit_release(a, &t);
			break;
		case ADMIT_TABLE_FULL:
			full++;
			break;
		default:
			fail();
		}
	}
	assert_int_equal(ok, 1022);
	assert_int_equal(full, 100000 - 1022);
	/* Neither got its allowance back. */
	assert_int_equal(admit_conn(a, -1, SA(lim), sizeof lim, 0.6, &t),
	                 ADMIT_RATE);
	assert_int_equal(admit_conn(a, -1, SA(held), sizeof held, 0.6, &t),
	                 ADMIT_PER_SOURCE);
	admit_counts(a, n);
	assert_int_equal(n[ADMIT_TABLE_FULL], 100000 - 1022);
	assert_int_equal(n[ADMIT_RATE], 2);
	assert_int_equal(n[ADMIT_PER_SOURCE], 1);

	/*
	 * By 3.0 every idle bucket is full again (lim's at 2.0, its refusal
	 * at 0.6 having put it behind the flood): each idle entry can be
	 * taken, lim's last, and forgetting lim then changes nothing.
	 */
	for (uint32_t i = 0; i < 1023; i++) {
		s = v4n(0x0b000000u + i);
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 3.0, &t),
		                 ADMIT_OK);
	}
	/* Now every entry has a connection open: none can be taken. */
	s = v4n(0x0c000000u);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 100.0, &t),
	                 ADMIT_TABLE_FULL);
	assert_int_equal(admit_conn(a, -1, SA(lim), sizeof lim, 100.0, &t),
	                 ADMIT_TABLE_FULL);
	assert_int_equal(admit_conn(a, -1, SA(held), sizeof held, 100.0, &t),
	                 ADMIT_PER_SOURCE);
	admit_release(a, &th);
	assert_int_equal(admit_conn(a, -1, SA(held), sizeof held, 100.0, &th),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 100.0, &t),
	                 ADMIT_TABLE_FULL);
	admit_free(a);
}

/* The oldest idle entry is taken the moment its bucket is full again. */
static void test_refilled_entries_are_reused(void **state)
{
	struct admit *a = MADE("--source-table", "4", "--accept-rate", "1",
	                       "--accept-burst", "1");
	struct sockaddr_storage s;
	struct admit_ticket t;

	(void)state;
	for (uint32_t i = 0; i < 4; i++) {
		s = v4n(0x0a000000u + i);
		assert_int_equal(
		        admit_conn(a, -1, SA(s), sizeof s, i * 0.25, &t),
		        ADMIT_OK);
		admit_release(a, &t);
	}
	s = v4n(0x0a0000ffu);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 0.5, &t),
	                 ADMIT_TABLE_FULL);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 0.875, &t),
	                 ADMIT_TABLE_FULL);
	/* 10.0.0.0 refilled at 1.0: its entry goes to the new source. */
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t), ADMIT_OK);
	admit_release(a, &t);
	/* 10.0.0.1 still remembers its spent token until 1.25. */
	s = v4n(0x0a000001u);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.125, &t),
	                 ADMIT_RATE);
	/* 10.0.0.0 comes back: 10.0.0.2 is the oldest now, full at 1.5. */
	s = v4n(0x0a000000u);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.375, &t),
	                 ADMIT_TABLE_FULL);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.5, &t), ADMIT_OK);
	admit_free(a);

	/* Without a rate, an entry is free the moment its last one closes. */
	a = MADE("--source-table", "2", "--max-conns-per-source", "5");
	struct admit_ticket t1, t2;
	struct sockaddr_storage x = v4("192.0.2.1"), y = v4("192.0.2.2");
	struct sockaddr_storage z = v4("192.0.2.3");
	assert_int_equal(admit_conn(a, -1, SA(x), sizeof x, 1.0, &t1),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(y), sizeof y, 1.0, &t2),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(z), sizeof z, 1.0, &t),
	                 ADMIT_TABLE_FULL);
	admit_release(a, &t2);
	assert_int_equal(admit_conn(a, -1, SA(z), sizeof z, 1.0, &t2),
	                 ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(y), sizeof y, 1.0, &t),
	                 ADMIT_TABLE_FULL);
	admit_release(a, &t1);
	assert_int_equal(admit_conn(a, -1, SA(y), sizeof y, 1.0, &t), ADMIT_OK);
	admit_free(a);
}

static void test_log_once_per_source_per_interval(void **state)
{
	struct admit *a = MADE("--deny", "0.0.0.0/0");
	struct sockaddr_storage s = v4("192.0.2.1"), o = v4("192.0.2.2");
	struct admit_ticket ts, to;
	uint64_t sup = 99;

	(void)state;
	admit_source(a, SA(s), sizeof s, &ts);
	admit_source(a, SA(o), sizeof o, &to);
	assert_int_equal(admit_log_pass(a, &ts, 100.0, &sup), 1);
	assert_int_equal(sup, 0);
	for (int i = 1; i <= 9; i++)
		assert_int_equal(admit_log_pass(a, &ts, 100.0 + i, &sup), 0);
	assert_int_equal(admit_log_pass(a, &ts, 109.99, &sup), 0);
	/* Others have their own interval. */
	assert_int_equal(admit_log_pass(a, &to, 105.0, &sup), 1);
	assert_int_equal(sup, 0);
	sup = 99;
	assert_int_equal(
	        admit_log_pass(a, &ts, 100.0 + ADMIT_LOG_INTERVAL, &sup), 1);
	assert_int_equal(sup, 10);
	/* Counted afresh from then. */
	assert_int_equal(admit_log_pass(a, &ts, 111.0, &sup), 0);
	assert_int_equal(admit_log_pass(a, &ts, 120.0, &sup), 1);
	assert_int_equal(sup, 1);
	assert_int_equal(admit_log_pass(a, &ts, 130.0, &sup), 1);
	assert_int_equal(sup, 0);
	admit_free(a);
}

static void test_log_global_cap(void **state)
{
	struct admit *a = MADE("--deny", "0.0.0.0/0");
	struct sockaddr_storage s;
	struct admit_ticket t;
	uint64_t sup;
	int passed = 0;

	(void)state;
	for (uint32_t i = 0; i < 30; i++) {
		s = v4n(0xc0000200u + i);
		admit_source(a, SA(s), sizeof s, &t);
		passed += admit_log_pass(a, &t, 50.0 + i * 0.01, &sup);
	}
	assert_int_equal(passed, ADMIT_LOG_PER_SEC);
	/* A second after the first line, one more; not before. */
	s = v4n(0xc0000200u + 10);
	admit_source(a, SA(s), sizeof s, &t);
	assert_int_equal(admit_log_pass(a, &t, 50.99, &sup), 0);
	assert_int_equal(admit_log_pass(a, &t, 51.0, &sup), 1);
	/* Held back by the cap is counted for the source. */
	assert_int_equal(sup, 2);
	assert_int_equal(admit_log_pass(a, &t, 51.0, &sup), 0);

	/* No more than the cap in any second of a long flood. */
	int lines[200] = {0};
	for (uint32_t i = 0; i < 200000; i++) {
		double now = 100.0 + i * 0.001;

		s = v4n(0x0a000000u + i);
		admit_source(a, SA(s), sizeof s, &t);
		if (admit_log_pass(a, &t, now, &sup))
			lines[i / 1000]++;
	}
	for (int i = 0; i < 200; i++)
		assert_int_equal(lines[i], ADMIT_LOG_PER_SEC);
	admit_free(a);
}

static void test_counters(void **state)
{
	struct admit *a =
	        MADE("--deny", "10.0.0.0/8", "--max-conns-per-source", "1",
	             "--accept-rate", "1", "--accept-burst", "1");
	struct sockaddr_storage d = v4("10.0.0.1"), s = v4("192.0.2.1");
	struct admit_ticket t, r;
	uint64_t n[ADMIT_NWHY];

	(void)state;
	assert_int_equal(admit_conn(a, -1, SA(d), sizeof d, 1.0, &t),
	                 ADMIT_DENIED);
	assert_int_equal(t.tracked, 0);
	assert_int_equal(t.family, AF_INET);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &t), ADMIT_OK);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &r),
	                 ADMIT_PER_SOURCE);
	admit_release(a, &t);
	assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 1.0, &r),
	                 ADMIT_RATE);
	admit_count(a, ADMIT_DENIED);
	admit_count(a, ADMIT_OK);
	admit_count(a, ADMIT_NWHY);
	admit_counts(a, n);
	assert_int_equal(n[ADMIT_OK], 0);
	assert_int_equal(n[ADMIT_DENIED], 2);
	assert_int_equal(n[ADMIT_PER_SOURCE], 1);
	assert_int_equal(n[ADMIT_RATE], 1);
	assert_int_equal(n[ADMIT_TABLE_FULL], 0);
	assert_int_equal(n[ADMIT_UID], 0);
	assert_string_equal(admit_why_name(ADMIT_OK), "ok");
	assert_string_equal(admit_why_name(ADMIT_DENIED), "denied");
	assert_string_equal(admit_why_name(ADMIT_PER_SOURCE), "per_source");
	assert_string_equal(admit_why_name(ADMIT_RATE), "rate");
	assert_string_equal(admit_why_name(ADMIT_TABLE_FULL), "table_full");
	assert_string_equal(admit_why_name(ADMIT_UID), "uid");
	admit_free(a);
}

/* A small generator, so that a failure can be run again. */
static uint32_t next_rand(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/*
 * 10,000 rules per family, from the command line and from a file: every
 * verdict agrees with a plain scan of the rules.
 */
static void test_ten_thousand_rules(void **state)
{
	static uint8_t in4[65536], in6[65536];
	struct admit *a = admit_new(), *b = admit_new();
	char err[256], arg[64], path[64];
	uint32_t x = 12345, i, n4 = 0, n6 = 0;
	FILE *f;
	int fd;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	memset(in4, 0, sizeof in4);
	memset(in6, 0, sizeof in6);
	snprintf(path, sizeof path, "/tmp/test_admit.XXXXXX");
	assert_true((fd = mkstemp(path)) >= 0);
	assert_non_null(f = fdopen(fd, "w"));
	/* 10.H.L.0/24 and 2001:db8:HL::/48 for 10,000 values of HL. */
	while (n4 < 10000) {
		uint32_t v = next_rand(&x) & 0xffff;

		if (in4[v])
			continue;
		in4[v] = 1;
		n4++;
		snprintf(arg, sizeof arg, "10.%u.%u.0/24", v >> 8, v & 0xff);
		assert_int_equal(
		        admit_option(a, ADMIT_OPT_ALLOW, arg, err, sizeof err),
		        1);
		fprintf(f, "%s # rule %u\n", arg, n4);
	}
	while (n6 < 10000) {
		uint32_t v = next_rand(&x) & 0xffff;

		if (in6[v])
			continue;
		in6[v] = 1;
		n6++;
		snprintf(arg, sizeof arg, "2001:db8:%x::/48", v);
		assert_int_equal(
		        admit_option(a, ADMIT_OPT_ALLOW, arg, err, sizeof err),
		        1);
		fprintf(f, "%s\n", arg);
	}
	assert_int_equal(fclose(f), 0);
	assert_int_equal(
	        admit_option(b, ADMIT_OPT_ALLOW_FILE, path, err, sizeof err),
	        1);
	unlink(path);
	assert_int_equal(admit_option(a, ADMIT_OPT_DENY, "10.1.2.128/25", err,
	                              sizeof err),
	                 1);
	assert_int_equal(admit_finish(a, err, sizeof err), 0);
	assert_int_equal(admit_finish(b, err, sizeof err), 0);

	for (i = 0; i < 65536; i++) {
		struct sockaddr_storage s4, s6;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s6;
		uint32_t host = next_rand(&x) & 0xff;
		enum admit_why want = in4[i] ? ADMIT_OK : ADMIT_DENIED;

		s4 = v4n(0x0a000000u | i << 8 | host);
		if (i == 0x0102 && host >= 128)
			want = ADMIT_DENIED;
		assert_int_equal(admit_check_addr(a, SA(s4), sizeof s4), want);
		if (!(i == 0x0102 && host >= 128))
			assert_int_equal(admit_check_addr(b, SA(s4), sizeof s4),
			                 want);
		s6 = v6("2001:db8::");
		sin6->sin6_addr.s6_addr[4] = (uint8_t)(i >> 8);
		sin6->sin6_addr.s6_addr[5] = (uint8_t)i;
		sin6->sin6_addr.s6_addr[15] = (uint8_t)host;
		want = in6[i] ? ADMIT_OK : ADMIT_DENIED;
		assert_int_equal(admit_check_addr(a, SA(s6), sizeof s6), want);
		assert_int_equal(admit_check_addr(b, SA(s6), sizeof s6), want);
	}
	admit_free(a);
	admit_free(b);
}

struct churn {
	struct admit *a;
	uint32_t base;
	unsigned ok;
};

static void *churn_run(void *arg)
{
	struct churn *c = arg;
	struct admit_ticket held[8];
	size_t nheld = 0;
	uint64_t sup;

	for (uint32_t i = 0; i < 20000; i++) {
		struct sockaddr_storage s = v4n(c->base + i % 16);
		struct admit_ticket t;

		if (admit_conn(c->a, -1, SA(s), sizeof s, 1.0, &t) ==
		    ADMIT_OK) {
			c->ok++;
			if (nheld == 8)
				admit_release(c->a, &held[--nheld]);
			held[nheld++] = t;
		} else {
			admit_log_pass(c->a, &t, i * 0.001, &sup);
		}
	}
	while (nheld > 0)
		admit_release(c->a, &held[--nheld]);
	return NULL;
}

/* Threads admitting and releasing at once leave the counts exact. */
static void test_threads_leave_counts_exact(void **state)
{
	struct admit *a =
	        MADE("--max-conns-per-source", "2", "--source-table", "64");
	struct churn c[4];
	pthread_t th[4];
	uint64_t n[ADMIT_NWHY];
	unsigned ok = 0;

	(void)state;
	for (int i = 0; i < 4; i++) {
		c[i] = (struct churn){a, 0x0a000000u + (uint32_t)(i % 2) * 8,
		                      0};
		assert_int_equal(pthread_create(&th[i], NULL, churn_run, &c[i]),
		                 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		ok += c[i].ok;
	}
	admit_counts(a, n);
	assert_int_equal(ok + n[ADMIT_PER_SOURCE] + n[ADMIT_TABLE_FULL],
	                 4 * 20000);
	assert_int_equal(n[ADMIT_TABLE_FULL], 0);
	/* All closed: each source has exactly its two places again. */
	for (uint32_t i = 0; i < 24; i++) {
		struct sockaddr_storage s = v4n(0x0a000000u + i);
		struct admit_ticket t;

		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 2.0, &t),
		                 ADMIT_OK);
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 2.0, &t),
		                 ADMIT_OK);
		assert_int_equal(admit_conn(a, -1, SA(s), sizeof s, 2.0, &t),
		                 ADMIT_PER_SOURCE);
	}
	admit_free(a);
}

static void test_help_text_layout(void **state)
{
	static const char *const opts[] = {
	        "--allow CIDR",
	        "--deny CIDR",
	        "--allow-file FILE",
	        "--deny-file FILE",
	        "--max-conns-per-source N",
	        "--source-prefix6 LEN",
	        "--accept-rate R[/s]",
	        "--accept-burst B",
	        "--source-table N",
	        "--allow-uid UID",
	};
	const char *p = admit_help_text, *nl;
	int rows = 1;
	size_t nopts = sizeof opts / sizeof opts[0], seen = 0;

	(void)state;
	assert_non_null(strstr(p, "\nExample: --"));
	assert_true(p[strlen(p) - 1] == '\n');
	for (; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		size_t len = (size_t)(nl - p), i, olen;

		assert_true(len < 80);
		if (len == 0)
			rows = 0;
		if (!rows || len == 0)
			continue;
		/* An option, then its description from column 28 on. */
		if (strncmp(p, "      --", 8) != 0) {
			assert_int_equal(strspn(p, " "), 27);
			continue;
		}
		for (i = 0; i < nopts; i++) {
			olen = strlen(opts[i]);
			if (strncmp(p + 6, opts[i], olen) == 0 &&
			    (p[6 + olen] == ' ' || p + 6 + olen == nl))
				break;
		}
		assert_true(i < nopts);
		seen++;
		if (p + 6 + olen != nl) {
			assert_true(6 + olen < 27);
			assert_int_equal(strspn(p + 6 + olen, " "),
			                 27 - 6 - olen);
		}
	}
	assert_int_equal(seen, nopts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_cidr_values_accepted),
	        cmocka_unit_test(test_cidr_values_refused_with_reason),
	        cmocka_unit_test(test_number_values),
	        cmocka_unit_test(test_allow_uid_values),
	        cmocka_unit_test(test_finish_checks_what_goes_together),
	        cmocka_unit_test(test_files_comments_blank_lines_and_errors),
	        cmocka_unit_test(test_file_nul_byte_bom_crlf),
	        cmocka_unit_test(test_rate_text_as_given),
	        cmocka_unit_test(test_empty_allow_file_admits_no_ip_peer),
	        cmocka_unit_test(test_deny_wins_over_allow),
	        cmocka_unit_test(test_allow_only_and_deny_only),
	        cmocka_unit_test(test_mapped_peers_match_ipv4_rules),
	        cmocka_unit_test(test_unix_peers_and_allow_uid),
	        cmocka_unit_test(test_ipv6_sources_grouped_by_prefix),
	        cmocka_unit_test(test_per_source_count_is_exact),
	        cmocka_unit_test(test_rate_below_and_above),
	        cmocka_unit_test(test_burst),
	        cmocka_unit_test(test_refused_per_source_takes_no_token),
	        cmocka_unit_test(test_flood_keeps_limited_sources),
	        cmocka_unit_test(test_refilled_entries_are_reused),
	        cmocka_unit_test(test_log_once_per_source_per_interval),
	        cmocka_unit_test(test_log_global_cap),
	        cmocka_unit_test(test_counters),
	        cmocka_unit_test(test_ten_thousand_rules),
	        cmocka_unit_test(test_threads_leave_counts_exact),
	        cmocka_unit_test(test_help_text_layout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
