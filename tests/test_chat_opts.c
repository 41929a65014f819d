/*
 * test_chat_opts.c - chat_opts_parse: both roles, every option, and every
 * kind of bad usage, with what it prints on each stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "forkloop/chat.h"
#include "forkloop/log.h"

#define MAX_ARGS 32

struct run {
	enum opts_result res;
	struct chat_opts o;
	char *out;
	char *err;
};

/* Parse a NULL-terminated argument list (without argv[0]). */
static void parse(struct run *r, ...)
{
	char *argv[MAX_ARGS + 2];
	const char *a;
	int argc = 0, i;
	size_t outlen, errlen;
	FILE *out, *errout;
	va_list ap;

	argv[argc++] = strdup("forkloop-chat");
	va_start(ap, r);
	while ((a = va_arg(ap, const char *)) != NULL) {
		assert_true(argc < MAX_ARGS);
		argv[argc++] = strdup(a);
	}
	va_end(ap);
	argv[argc] = NULL;

	out = open_memstream(&r->out, &outlen);
	errout = open_memstream(&r->err, &errlen);
	assert_non_null(out);
	assert_non_null(errout);
	memset(&r->o, 0x5a, sizeof r->o);
	r->res = chat_opts_parse(argc, argv, &r->o, out, errout);
	fclose(out);
	fclose(errout);
	for (i = 0; i < argc; i++)
		free(argv[i]);
}

static void run_free(struct run *r)
{
	chat_opts_free(&r->o);
	free(r->out);
	free(r->err);
}

/* Bad usage: exit 2, nothing on out, the message and the usage on errout. */
static void assert_usage(struct run *r, const char *needle)
{
	if (r->res != OPTS_USAGE)
		fail_msg("accepted, expected usage error '%s'", needle);
	assert_string_equal(r->out, "");
	if (strncmp(r->err, "forkloop-chat: ", 15) != 0)
		fail_msg("error not prefixed: '%s'", r->err);
	if (needle != NULL && strstr(r->err, needle) == NULL)
		fail_msg("'%s' not in '%s'", needle, r->err);
	if (strstr(r->err, "usage: forkloop-chat") == NULL)
		fail_msg("no usage in '%s'", r->err);
	run_free(r);
}

static void assert_ok(struct run *r)
{
	if (r->res != OPTS_OK)
		fail_msg("rejected: %s", r->err);
	assert_string_equal(r->out, "");
	assert_string_equal(r->err, "");
}

static int setup(void **state)
{
	(void)state;
	log_init("forkloop-chat", LOG_NORMAL);
	return 0;
}

static void test_connect_defaults(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "localhost", "6666", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, CHAT_MODE_EVENT);
	assert_int_equal(r.o.listen, 0);
	assert_int_equal(r.o.keep_open, 0);
	assert_string_equal(r.o.addr.host, "localhost");
	assert_string_equal(r.o.addr.port, "6666");
	assert_int_equal(r.o.log_level, LOG_NORMAL);
	run_free(&r);
}

static void test_connect_ipv6_and_options_after(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "::1", "7", "-q", "--mode", "fork", NULL);
	assert_ok(&r);
	assert_string_equal(r.o.addr.host, "::1");
	assert_string_equal(r.o.addr.port, "7");
	assert_int_equal(r.o.mode, CHAT_MODE_FORK);
	assert_int_equal(r.o.log_level, LOG_QUIET);
	run_free(&r);
	/* In brackets too, as HOST:PORT writes it; brackets hold IPv6 only. */
	parse(&r, "[::1]", "7", NULL);
	assert_ok(&r);
	assert_string_equal(r.o.addr.host, "::1");
	run_free(&r);
	parse(&r, "[127.0.0.1]", "7", NULL);
	assert_usage(&r, "bad address '[127.0.0.1] 7'");
}

static void test_listen_forms(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--listen", "127.0.0.1:0", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.listen, 1);
	assert_string_equal(r.o.addr.host, "127.0.0.1");
	assert_string_equal(r.o.addr.port, "0");
	run_free(&r);
	parse(&r, "-l", "6666", "-k", NULL);
	assert_ok(&r);
	assert_string_equal(r.o.addr.host, "");
	assert_string_equal(r.o.addr.port, "6666");
	assert_int_equal(r.o.keep_open, 1);
	run_free(&r);
	parse(&r, "--listen=[::1]:9", "--keep-open", "-v", NULL);
	assert_ok(&r);
	assert_string_equal(r.o.addr.host, "::1");
	assert_string_equal(r.o.addr.port, "9");
	assert_int_equal(r.o.log_level, LOG_VERBOSE);
	run_free(&r);
}

static void test_mode(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-mfork", "-m", "event", "-l", "0", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, CHAT_MODE_EVENT);
	run_free(&r);
	parse(&r, "--mode=fork", "-l", "0", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, CHAT_MODE_FORK);
	run_free(&r);
	assert_string_equal(chat_mode_name(CHAT_MODE_EVENT), "event");
	assert_string_equal(chat_mode_name(CHAT_MODE_FORK), "fork");
}

static void test_missing_and_extra_arguments(void **state)
{
	struct run r;

	(void)state;
	parse(&r, NULL);
	assert_usage(&r, "missing HOST and PORT");
	parse(&r, "localhost", NULL);
	assert_usage(&r, "missing PORT");
	parse(&r, "localhost", "1", "2", NULL);
	assert_usage(&r, "unexpected argument '2'");
	parse(&r, "-l", "0", "localhost", NULL);
	assert_usage(&r, "unexpected argument 'localhost'");
	parse(&r, "-l", "0", "-l", "1", NULL);
	assert_usage(&r, "only one --listen");
	parse(&r, "-k", "localhost", "1", NULL);
	assert_usage(&r, "--keep-open needs --listen");
}

static void test_bad_values(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--mode", "thread", "-l", "0", NULL);
	assert_usage(&r, "unknown mode 'thread'");
	parse(&r, "-l", "65536", NULL);
	assert_usage(&r, "bad --listen '65536'");
	parse(&r, "-l", "host:", NULL);
	assert_usage(&r, "bad --listen 'host:'");
	parse(&r, "-l", "::1:5", NULL);
	assert_usage(&r, "[ADDR]:PORT");
	parse(&r, "localhost", "http", NULL);
	assert_usage(&r, "port must be a number");
	parse(&r, "localhost", "0", NULL);
	assert_usage(&r, "other than 0");
	parse(&r, "", "7", NULL);
	assert_usage(&r, "needs a host");
	parse(&r, "-l", NULL);
	assert_usage(&r, "option '-l' needs a value");
	parse(&r, "-x", "localhost", "1", NULL);
	assert_usage(&r, "unknown option '-x'");
	parse(&r, "--bogus", "localhost", "1", NULL);
	assert_usage(&r, "unknown option '--bogus'");
	parse(&r, "-q", "-v", "localhost", "1", NULL);
	assert_usage(&r, "-v and -q");
}

static void test_help_and_version(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--help", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	assert_non_null(strstr(r.out, "usage: forkloop-chat"));
	assert_non_null(strstr(r.out, "--keep-open"));
	assert_string_equal(r.err, "");
	run_free(&r);
	parse(&r, "-V", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	assert_string_equal(r.out, "forkloop-chat " FORKLOOP_VERSION "\n");
	assert_string_equal(r.err, "");
	run_free(&r);
}

static void test_broker_options(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--broker", "--listen", "127.0.0.1:0", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.broker, 1);
	assert_int_equal(r.o.mode, CHAT_MODE_EVENT);
	assert_int_equal(r.o.max_pending, CHAT_DEFAULT_MAX_PENDING);
	assert_int_equal(r.o.max_line, CHAT_DEFAULT_MAX_LINE);
	assert_int_equal(r.o.max_pending, 1024 * 1024);
	assert_int_equal(r.o.max_line, 64 * 1024);
	run_free(&r);
	parse(&r, "-l", "6666", "--max-pending=2M", "--max-line", "1000",
	      "--broker", "-m", "event", "-q", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.broker, 1);
	assert_int_equal(r.o.max_pending, 2 * 1024 * 1024);
	assert_int_equal(r.o.max_line, 1000);
	assert_int_equal(r.o.log_level, LOG_QUIET);
	run_free(&r);
	/* The smallest --max-pending for a --max-line: the line plus 128. */
	parse(&r, "--broker", "-l", "0", "--max-line", "1000", "--max-pending",
	      "1128", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.max_pending, 1128);
	run_free(&r);
	parse(&r, "--broker", "-l", "0", "--max-line", "1", "--max-pending",
	      "129", NULL);
	assert_ok(&r);
	run_free(&r);
	parse(&r, "localhost", "6666", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.broker, 0);
	run_free(&r);
}

static void test_broker_bad_usage(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--broker", "-m", "fork", "-l", "0", NULL);
	assert_usage(&r, "--broker runs in event mode only");
	parse(&r, "--mode=fork", "--broker", "-l", "0", NULL);
	assert_usage(&r, "--broker runs in event mode only");
	parse(&r, "--broker", NULL);
	assert_usage(&r, "--broker needs --listen");
	/* Without effect there: a relay serves every client in turn. */
	parse(&r, "--broker", "-k", "-l", "0", NULL);
	assert_usage(&r, "-k is for the endpoint");
	parse(&r, "--broker", "localhost", "6666", NULL);
	assert_usage(&r, "--broker needs --listen");
	parse(&r, "-l", "0", "--max-pending", "1M", NULL);
	assert_usage(&r, "--max-pending needs --broker");
	parse(&r, "localhost", "1", "--max-line", "1K", NULL);
	assert_usage(&r, "--max-line needs --broker");
	parse(&r, "--broker", "-l", "0", "--max-pending", "1K", NULL);
	assert_usage(&r, "--max-pending must be at least --max-line + 128");
	parse(&r, "--broker", "-l", "0", "--max-line", "1000", "--max-pending",
	      "1127", NULL);
	assert_usage(&r, "--max-pending must be at least --max-line + 128");
	parse(&r, "--broker", "-l", "0", "--max-pending", "0", NULL);
	assert_usage(&r, "bad --max-pending '0'");
	parse(&r, "--broker", "-l", "0", "--max-pending", "1MB", NULL);
	assert_usage(&r, "bad --max-pending '1MB'");
	parse(&r, "--broker", "-l", "0", "--max-pending", "-5", NULL);
	assert_usage(&r, "bad --max-pending '-5'");
	parse(&r, "--broker", "-l", "0", "--max-pending", "2048G", NULL);
	assert_usage(&r, "bad --max-pending '2048G'");
	parse(&r, "--broker", "-l", "0", "--max-line", "0", NULL);
	assert_usage(&r, "bad --max-line '0'");
	parse(&r, "--broker", "-l", "0", "--max-line", "", NULL);
	assert_usage(&r, "bad --max-line ''");
	parse(&r, "--broker", "-l", "0", "--max-line", "2G", NULL);
	assert_usage(&r, "bad --max-line '2G'");
	parse(&r, "--broker", "-l", "0", "--max-line", NULL);
	assert_usage(&r, "option '--max-line' needs a value");
	parse(&r, "--broker=1", "-l", "0", NULL);
	assert_usage(&r, "unknown option '--broker=1'");
}

static void test_broker_names(void **state)
{
	static const char *good[] = {
	        "a",
	        "alice",
	        "user",
	        "User_7!",
	        "zo\xc3\xab",
	        "\xe6\x97\xa5\xe6\x9c\xac",
	        "\xf0\x9f\x8e\x89",
	        "12345678901234567890123456789012",
	};
	static const char *bad[] = {
	        "",
	        "a b",
	        "<x",
	        "x>",
	        "tab\t",
	        "del\x7f",
	        "nl\n",
	        "\xff",
	        "\xc3",
	        "\xc0\xaf",
	        "\xe0\x80\xaf",
	        "\xed\xa0\x80",
	        "\xf4\x90\x80\x80",
	        "\xc2\x85",
	        "\xc2\xa0",
	        "\x80",
	        "123456789012345678901234567890123",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		if (!chat_broker_name_ok(good[i], strlen(good[i])))
			fail_msg("refused '%s'", good[i]);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (chat_broker_name_ok(bad[i], strlen(bad[i])))
			fail_msg("accepted bad name %zu", i);
	}
	assert_false(chat_broker_name_ok("a\0b", 3));
}

static void test_keepalive(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "localhost", "6666", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 0);
	run_free(&r);
	parse(&r, "--keepalive", "30", "localhost", "6666", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 30);
	run_free(&r);
	parse(&r, "-l", "0", "--keepalive=1", "-m", "fork", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 1);
	run_free(&r);
	parse(&r, "--broker", "-l", "0", "--keepalive", "32767", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 32767);
	run_free(&r);
	parse(&r, "--keepalive", "0", "localhost", "1", NULL);
	assert_usage(&r, "bad --keepalive '0' (seconds, 1 to 32767)");
	parse(&r, "--keepalive", "32768", "localhost", "1", NULL);
	assert_usage(&r, "bad --keepalive '32768'");
	parse(&r, "--keepalive", "1.5", "localhost", "1", NULL);
	assert_usage(&r, "bad --keepalive '1.5'");
	parse(&r, "--keepalive", "", "localhost", "1", NULL);
	assert_usage(&r, "bad --keepalive ''");
	parse(&r, "--keepalive", "-3", "localhost", "1", NULL);
	assert_usage(&r, "bad --keepalive '-3'");
	parse(&r, "-l", "0", "--keepalive", NULL);
	assert_usage(&r, "option '--keepalive' needs a value");
	parse(&r, "--help", NULL);
	assert_non_null(strstr(r.out, "--keepalive SECONDS"));
	assert_non_null(strstr(r.out, "probes SECONDS/3 apart"));
	assert_non_null(strstr(r.out, "3 unanswered probes"));
	run_free(&r);
}

static void test_broker_help(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-h", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	assert_non_null(strstr(r.out, "forkloop-chat --broker"));
	assert_non_null(strstr(r.out, "--max-pending BYTES"));
	assert_non_null(strstr(r.out, "--max-line BYTES"));
	assert_non_null(strstr(r.out, "(default 1M)"));
	assert_non_null(strstr(r.out, "(default 64K)"));
	run_free(&r);
}

/* A peer at addr (IPv4 or IPv6 text), as accept(2) gives it. */
static enum admit_why check_peer(struct admit *a, const char *addr)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;

	memset(&s4, 0, sizeof s4);
	memset(&s6, 0, sizeof s6);
	if (inet_pton(AF_INET, addr, &s4.sin_addr) == 1) {
		s4.sin_family = AF_INET;
		return admit_check_addr(a, (struct sockaddr *)&s4, sizeof s4);
	}
	assert_int_equal(inet_pton(AF_INET6, addr, &s6.sin6_addr), 1);
	s6.sin6_family = AF_INET6;
	return admit_check_addr(a, (struct sockaddr *)&s6, sizeof s6);
}

static void test_admission_options(void **state)
{
	struct run r;

	(void)state;
	/* No rule: a run still has its (empty) admission, letting anyone in. */
	parse(&r, "-l", "0", NULL);
	assert_ok(&r);
	assert_non_null(r.o.admit);
	assert_int_equal(admit_active(r.o.admit), 0);
	assert_int_equal(r.o.max_clients, 0);
	run_free(&r);
	parse(&r, "-l", "0", "-k", "--deny", "127.0.0.2", "--allow",
	      "127.0.0.0/8", NULL);
	assert_ok(&r);
	assert_int_equal(admit_active(r.o.admit), 1);
	assert_int_equal(check_peer(r.o.admit, "127.0.0.1"), ADMIT_OK);
	assert_int_equal(check_peer(r.o.admit, "127.0.0.2"), ADMIT_DENIED);
	assert_int_equal(check_peer(r.o.admit, "10.0.0.1"), ADMIT_DENIED);
	assert_int_equal(check_peer(r.o.admit, "::ffff:127.0.0.2"),
	                 ADMIT_DENIED);
	assert_int_equal(check_peer(r.o.admit, "::ffff:127.0.0.3"), ADMIT_OK);
	run_free(&r);
	parse(&r, "--broker", "-l", "0", "--max-clients", "3",
	      "--max-conns-per-source=2", "--accept-rate", "5/s",
	      "--accept-burst", "2", "--source-table", "100",
	      "--source-prefix6", "48", "-m", "fork", "--mode", "event", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.max_clients, 3);
	assert_int_equal(admit_active(r.o.admit), 1);
	run_free(&r);
	parse(&r, "--broker", "-l", "0", "--max-clients", "4294967295", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.max_clients, 4294967295u);
	run_free(&r);
}

static void test_admission_bad_usage(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-l", "0", "--allow", "10.0.0.0/33", NULL);
	assert_usage(&r, "--allow 10.0.0.0/33");
	parse(&r, "--broker", "-l", "0", "--deny", "10.1.0.0/8", NULL);
	assert_usage(&r, "host bits set");
	parse(&r, "-l", "0", "--max-conns-per-source", "0", NULL);
	assert_usage(&r, "--max-conns-per-source");
	parse(&r, "-l", "0", "--accept-burst", "3", NULL);
	assert_usage(&r, "--accept-burst");
	parse(&r, "--broker", "-l", "0", "--max-clients", "0", NULL);
	assert_usage(&r, "bad --max-clients '0'");
	parse(&r, "--broker", "-l", "0", "--max-clients", "4294967296", NULL);
	assert_usage(&r, "bad --max-clients '4294967296'");
	parse(&r, "--broker", "-l", "0", "--max-clients", "x", NULL);
	assert_usage(&r, "bad --max-clients 'x'");
	parse(&r, "--broker", "-l", "0", "--max-clients", NULL);
	assert_usage(&r, "option '--max-clients' needs a value");
	/* The endpoint serves one peer: no room to limit. */
	parse(&r, "-l", "0", "--max-clients", "2", NULL);
	assert_usage(&r, "--max-clients needs --broker");
	/* Connecting, nobody is admitted: the first rule given is named. */
	parse(&r, "localhost", "6666", "--allow", "127.0.0.1", "--deny",
	      "10.0.0.0/8", NULL);
	assert_usage(&r, "--allow needs --listen");
	parse(&r, "--accept-rate", "5", "localhost", "6666", NULL);
	assert_usage(&r, "--accept-rate needs --listen");
	parse(&r, "--max-conns-per-source", "1", "localhost:6666", NULL);
	assert_usage(&r, "--max-conns-per-source needs --listen");
	parse(&r, "--deny=", "-l", "0", NULL);
	assert_usage(&r, "--deny");
}

static void test_admission_help(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--help", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	/* In the synopsis, and a row each in the help. */
	assert_non_null(strstr(r.out, "[--max-clients N]"));
	assert_non_null(strstr(r.out, "[--allow CIDR]..."));
	assert_non_null(strstr(r.out, "      --max-clients N "));
	assert_non_null(strstr(r.out, "      --allow CIDR "));
	assert_non_null(strstr(r.out, "      --deny CIDR "));
	assert_non_null(strstr(r.out, "--max-conns-per-source N\n"));
	assert_non_null(strstr(r.out, "      --accept-rate "));
	/* The general options and notes still follow. */
	assert_non_null(strstr(r.out, "  -V, --version"));
	assert_non_null(strstr(r.out, "SIGHUP reloads the certificate"));
	run_free(&r);
	parse(&r, "--bogus", NULL);
	assert_usage(&r, "[--allow CIDR]...");
}

/* unix: to connect to or listen on, the relay too, and --unix-mode. */
static void test_unix_addresses(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "unix:/tmp/c.sock", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.listen, 0);
	assert_true(r.o.addr.is_unix);
	assert_string_equal(r.o.addr.path, "/tmp/c.sock");
	run_free(&r);
	parse(&r, "-l", "unix:/tmp/c.sock", "--unix-mode", "0600", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.listen, 1);
	assert_int_equal(r.o.addr.unix_mode, 0600);
	run_free(&r);
	parse(&r, "--broker", "-l", "unix:@relay", NULL);
	assert_ok(&r);
	assert_string_equal(r.o.addr.path, "@relay");
	run_free(&r);
	parse(&r, "--tls", "unix:/tmp/c.sock", NULL);
	assert_usage(&r, "TLS is not spoken over Unix sockets");
	parse(&r, "--unix-mode", "0600", "unix:/tmp/c.sock", NULL);
	assert_usage(&r, "--unix-mode needs a unix:/PATH --listen");
	parse(&r, "-l", "unix:@x", "--unix-mode", "0600", NULL);
	assert_usage(&r, "unix:@NAME has none");
	parse(&r, "-l", "unix:/x", "--unix-mode", "8", NULL);
	assert_usage(&r, "bad --unix-mode '8'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_connect_defaults),
	        cmocka_unit_test(test_connect_ipv6_and_options_after),
	        cmocka_unit_test(test_listen_forms),
	        cmocka_unit_test(test_mode),
	        cmocka_unit_test(test_missing_and_extra_arguments),
	        cmocka_unit_test(test_bad_values),
	        cmocka_unit_test(test_help_and_version),
	        cmocka_unit_test(test_broker_options),
	        cmocka_unit_test(test_broker_bad_usage),
	        cmocka_unit_test(test_broker_names),
	        cmocka_unit_test(test_broker_help),
	        cmocka_unit_test(test_keepalive),
	        cmocka_unit_test(test_admission_options),
	        cmocka_unit_test(test_admission_bad_usage),
	        cmocka_unit_test(test_admission_help),
	        cmocka_unit_test(test_unix_addresses),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
