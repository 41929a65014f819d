/*
 * test_echo_opts.c - echo_opts_parse: defaults, every option, and every kind
 * of bad usage, with what it prints on each stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "forkloop/echo.h"
#include "forkloop/udp.h"
#include "forkloop/log.h"

#define MAX_ARGS 64

struct run {
	enum opts_result res;
	struct echo_opts o;
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

	argv[argc++] = strdup("forkloop-echo");
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
	r->res = echo_opts_parse(argc, argv, &r->o, out, errout);
	fclose(out);
	fclose(errout);
	for (i = 0; i < argc; i++)
		free(argv[i]);
}

static void run_free(struct run *r)
{
	echo_opts_free(&r->o);
	free(r->out);
	free(r->err);
}

/* Bad usage: exit 2, nothing on out, the message and the usage on errout. */
static void assert_usage(struct run *r, const char *needle)
{
	assert_int_equal(r->res, OPTS_USAGE);
	assert_string_equal(r->out, "");
	if (strncmp(r->err, "forkloop-echo: ", 15) != 0)
		fail_msg("error not prefixed: '%s'", r->err);
	if (needle != NULL && strstr(r->err, needle) == NULL)
		fail_msg("'%s' not in '%s'", needle, r->err);
	if (strstr(r->err, "usage: forkloop-echo") == NULL)
		fail_msg("no usage in '%s'", r->err);
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
	log_init("forkloop-echo", LOG_NORMAL);
	return 0;
}

static void test_defaults(void **state)
{
	struct run r;

	(void)state;
	parse(&r, NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_EVENT);
	assert_int_equal(r.o.nlisten, 1);
	assert_string_equal(r.o.listen[0].host, ""); /* every address */
	assert_string_equal(r.o.listen[0].port, "6666");
	assert_true(r.o.max_pending == 256 * 1024);
	assert_true(r.o.max_conns == 0);
	assert_true(r.o.idle_timeout == 0.0);
	assert_true(r.o.drain_timeout == 5.0);
	assert_int_equal(r.o.log_level, LOG_NORMAL);
	run_free(&r);
}

static void test_mode(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--mode", "fork", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_FORK);
	run_free(&r);
	parse(&r, "-m", "event", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_EVENT);
	run_free(&r);
	parse(&r, "--mode=fork", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_FORK);
	run_free(&r);
	parse(&r, "-mfork", "-m", "event", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_EVENT);
	run_free(&r);
	assert_string_equal(echo_mode_name(ECHO_MODE_EVENT), "event");
	assert_string_equal(echo_mode_name(ECHO_MODE_FORK), "fork");
}

static void test_mode_bad(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--mode", "bogus", NULL);
	assert_usage(&r, "bogus");
	assert_non_null(strstr(r.err, "event, fork"));
	run_free(&r);
	parse(&r, "--mode", "", NULL);
	assert_usage(&r, "event, fork");
	run_free(&r);
	parse(&r, "-m", "Fork", NULL);
	assert_usage(&r, "event, fork");
	run_free(&r);
}

static void test_listen(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--listen", "127.0.0.1:0", "-l", "[::1]:7",
	      "--listen=localhost:6666", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.nlisten, 3);
	assert_string_equal(r.o.listen[0].host, "127.0.0.1");
	assert_string_equal(r.o.listen[0].port, "0");
	assert_string_equal(r.o.listen[1].host, "::1");
	assert_string_equal(r.o.listen[1].port, "7");
	assert_string_equal(r.o.listen[2].host, "localhost");
	assert_string_equal(r.o.listen[2].port, "6666");
	run_free(&r);
}

static void test_listen_bad(void **state)
{
	static const char *const bad[] = {
	        "",
	        "1.2.3.4",
	        "256.1.1.1:80",
	        ":80",
	        "::1:80",
	        "[::1]80",
	        "[]:80",
	        "[1.2.3.4]:80",
	        "127.0.0.1:65536",
	        "127.0.0.1:-1",
	        "127.0.0.1:80x",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--listen", bad[i], NULL);
		assert_usage(&r, "--listen");
		run_free(&r);
	}
}

static void test_listen_limit(void **state)
{
	char *argv[2 * (ECHO_MAX_LISTEN + 1) + 2];
	char *outbuf, *errbuf;
	size_t outlen, errlen;
	struct echo_opts o;
	FILE *out, *errout;
	int argc, i, n;

	(void)state;
	for (n = ECHO_MAX_LISTEN; n <= ECHO_MAX_LISTEN + 1; n++) {
		argc = 0;
		argv[argc++] = strdup("forkloop-echo");
		for (i = 0; i < n; i++) {
			char spec[32];

			snprintf(spec, sizeof spec, "127.0.0.1:%d", 7000 + i);
			argv[argc++] = strdup("--listen");
			argv[argc++] = strdup(spec);
		}
		argv[argc] = NULL;
		out = open_memstream(&outbuf, &outlen);
		errout = open_memstream(&errbuf, &errlen);
		if (n == ECHO_MAX_LISTEN) {
			assert_int_equal(
			        echo_opts_parse(argc, argv, &o, out, errout),
			        OPTS_OK);
			assert_int_equal(o.nlisten, ECHO_MAX_LISTEN);
			assert_string_equal(o.listen[ECHO_MAX_LISTEN - 1].port,
			                    "7015");
			echo_opts_free(&o);
		} else {
			assert_int_equal(
			        echo_opts_parse(argc, argv, &o, out, errout),
			        OPTS_USAGE);
		}
		fclose(out);
		fclose(errout);
		if (n > ECHO_MAX_LISTEN)
			assert_non_null(strstr(errbuf, "--listen"));
		free(outbuf);
		free(errbuf);
		for (i = 0; i < argc; i++)
			free(argv[i]);
	}
}

static void test_max_pending(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--max-pending", "1", NULL);
	assert_ok(&r);
	assert_true(r.o.max_pending == 1);
	run_free(&r);
	parse(&r, "--max-pending", "64K", NULL);
	assert_ok(&r);
	assert_true(r.o.max_pending == 64 * 1024);
	run_free(&r);
	parse(&r, "--max-pending=2M", NULL);
	assert_ok(&r);
	assert_true(r.o.max_pending == 2 * 1024 * 1024);
	run_free(&r);
}

static void test_max_pending_bad(void **state)
{
	static const char *const bad[] = {
	        "",
	        "0",
	        "0K",
	        "-1",
	        "1T",
	        "1KB",
	        "abc",
	        "18446744073709551616",
	        "17179869184G",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--max-pending", bad[i], NULL);
		assert_usage(&r, "--max-pending");
		run_free(&r);
	}
}

static void test_max_conns(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--max-conns", "2", NULL);
	assert_ok(&r);
	assert_true(r.o.max_conns == 2);
	run_free(&r);
	parse(&r, "--max-conns=1", NULL);
	assert_ok(&r);
	assert_true(r.o.max_conns == 1);
	run_free(&r);
}

static void test_max_conns_bad(void **state)
{
	static const char *const bad[] = {
	        "", "0", "-1", "+2", "2x", "1K", "1.5", "99999999999999999999",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--max-conns", bad[i], NULL);
		assert_usage(&r, "--max-conns");
		run_free(&r);
	}
}

static void test_timeouts(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--idle-timeout", "0.5", "--drain-timeout", "1", NULL);
	assert_ok(&r);
	assert_true(r.o.idle_timeout == 0.5);
	assert_true(r.o.drain_timeout == 1.0);
	run_free(&r);
	parse(&r, "--idle-timeout=30", "--drain-timeout=0", NULL);
	assert_ok(&r);
	assert_true(r.o.idle_timeout == 30.0);
	assert_true(r.o.drain_timeout == 0.0);
	run_free(&r);
}

static void test_timeouts_bad(void **state)
{
	static const char *const bad[] = {
	        "", "-1", "1s", "abc", "inf", "nan", "1e400", "0x10", "1,5",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--idle-timeout", bad[i], NULL);
		assert_usage(&r, "--idle-timeout");
		run_free(&r);
		parse(&r, "--drain-timeout", bad[i], NULL);
		assert_usage(&r, "--drain-timeout");
		run_free(&r);
	}
}

/* A value past a limit is told the limit, not only what kind it is. */
static void test_limits_named(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--max-conns", "4294967296", NULL);
	assert_usage(&r, "(a number, 1 to 4294967295)");
	run_free(&r);
	parse(&r, "--idle-timeout", "31536000", NULL);
	assert_usage(&r, "(seconds, 0 to 10000000; 0: never)");
	run_free(&r);
	parse(&r, "--drain-timeout", "10000001", NULL);
	assert_usage(&r, "(seconds, 0 to 10000000)");
	run_free(&r);
	parse(&r, "--max-pending", "2048G", NULL);
	assert_usage(&r, "(bytes, 1 to 1024G)");
	run_free(&r);
	parse(&r, "--udp", "--udp-rate", "99999999999", NULL);
	assert_usage(&r, "0 to 4294967295; 0: no limit)");
	run_free(&r);
}

static void test_verbosity(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-v", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.log_level, LOG_VERBOSE);
	run_free(&r);
	parse(&r, "--quiet", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.log_level, LOG_QUIET);
	run_free(&r);
	parse(&r, "--verbose", "-v", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.log_level, LOG_VERBOSE);
	run_free(&r);
	parse(&r, "-v", "-q", NULL);
	assert_usage(&r, "-q");
	run_free(&r);
	parse(&r, "-qv", NULL);
	assert_usage(&r, "-v");
	run_free(&r);
}

static void test_all_options(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-m", "fork", "-l", "127.0.0.1:1", "--listen", "[::1]:2",
	      "--max-pending", "4K", "--max-conns", "10", "--idle-timeout",
	      "2.5", "--drain-timeout", "0.25", "-q", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_FORK);
	assert_int_equal(r.o.nlisten, 2);
	assert_true(r.o.max_pending == 4096);
	assert_true(r.o.max_conns == 10);
	assert_true(r.o.idle_timeout == 2.5);
	assert_true(r.o.drain_timeout == 0.25);
	assert_int_equal(r.o.log_level, LOG_QUIET);
	run_free(&r);
}

static void test_unknown_options(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--bogus", NULL);
	assert_usage(&r, "--bogus");
	run_free(&r);
	parse(&r, "-x", NULL);
	assert_usage(&r, "-x");
	run_free(&r);
	parse(&r, "-vx", NULL);
	assert_usage(&r, "-x");
	run_free(&r);
	parse(&r, "--mode", "fork", "--max-pendingx", "1", NULL);
	assert_usage(&r, "--max-pendingx");
	run_free(&r);
	/* --max is a prefix of two options. */
	parse(&r, "--max", "1", NULL);
	assert_usage(&r, NULL);
	run_free(&r);
	parse(&r, "--verbose=yes", NULL);
	assert_usage(&r, NULL);
	run_free(&r);
}

static void test_missing_values(void **state)
{
	static const char *const opts[] = {
	        "--mode",         "-m",
	        "--listen",       "-l",
	        "--max-pending",  "--max-conns",
	        "--idle-timeout", "--drain-timeout",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof opts / sizeof opts[0]; i++) {
		parse(&r, opts[i], NULL);
		assert_usage(&r, opts[i]);
		run_free(&r);
		parse(&r, "-v", opts[i], NULL);
		assert_usage(&r, opts[i]);
		run_free(&r);
	}
}

static void test_stray_arguments(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "extra", NULL);
	assert_usage(&r, "extra");
	run_free(&r);
	parse(&r, "--mode", "fork", "extra", NULL);
	assert_usage(&r, "extra");
	run_free(&r);
	parse(&r, "extra", "--mode", "fork", NULL);
	assert_usage(&r, "extra");
	run_free(&r);
	parse(&r, "--", "-v", NULL);
	assert_usage(&r, "-v");
	run_free(&r);
}

static void test_tls(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-l", "127.0.0.1:7", "-l", "tls://127.0.0.1:7443",
	      "--tls-cert", "c.pem", "--tls-key", "k.pem", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.nlisten, 2);
	assert_int_equal(r.o.listen[0].tls, 0);
	assert_int_equal(r.o.listen[1].tls, 1);
	assert_string_equal(r.o.listen[1].host, "127.0.0.1");
	assert_string_equal(r.o.listen[1].port, "7443");
	assert_int_equal(r.o.tls, 1);
	/* They point into argv, which parse() has freed. */
	assert_non_null(r.o.tls_cert);
	assert_non_null(r.o.tls_key);
	assert_true(r.o.tls_handshake == ECHO_DEFAULT_TLS_HANDSHAKE);
	run_free(&r);

	parse(&r, "-l", "tls://[::1]:0", "--tls-cert", "c", "--tls-key", "k",
	      "--tls-handshake-timeout", "0.5", "-l", "0", "--udp", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.listen[0].tls, 1);
	assert_string_equal(r.o.listen[0].host, "::1");
	assert_true(r.o.tls_handshake == 0.5);
	run_free(&r);

	parse(&r, "-l", "7", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.tls, 0);
	assert_null(r.o.tls_cert);
	run_free(&r);
}

static void test_tls_bad(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-l", "7", "--tls-cert", "c", "--tls-key", "k", NULL);
	assert_usage(&r, "need a tls:// --listen");
	run_free(&r);
	parse(&r, "-l", "7", "--tls-handshake-timeout", "3", NULL);
	assert_usage(&r, "need a tls:// --listen");
	run_free(&r);
	parse(&r, "-l", "tls://7", "--tls-cert", "c", NULL);
	assert_usage(&r, "needs --tls-cert and --tls-key");
	run_free(&r);
	parse(&r, "-l", "tls://7", "--tls-cert", "c", "--tls-key", "k",
	      "--udp-only", NULL);
	assert_usage(&r, NULL);
	run_free(&r);
	parse(&r, "-l", "tls://7", "--tls-cert", "c", "--tls-key", "k",
	      "--udp", NULL);
	assert_usage(&r, "plain listeners only");
	run_free(&r);
	parse(&r, "-l", "tls://7", "--tls-cert", "c", "--tls-key", "k",
	      "--tls-handshake-timeout", "0", NULL);
	assert_usage(&r, "bad --tls-handshake-timeout");
	run_free(&r);
	parse(&r, "-l", "tls://", NULL);
	assert_usage(&r, "bad --listen");
	run_free(&r);
	parse(&r, "-l", "tls://tls://7", NULL);
	assert_usage(&r, "bad --listen");
	run_free(&r);
}

static void test_help(void **state)
{
	static const char *const names[] = {"-h", "--help"};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++) {
		parse(&r, names[i], NULL);
		assert_int_equal(r.res, OPTS_EXIT);
		assert_string_equal(r.err, "");
		assert_non_null(strstr(r.out, "usage: forkloop-echo"));
		assert_non_null(strstr(r.out, "--mode"));
		assert_non_null(strstr(r.out, "--listen"));
		assert_non_null(strstr(r.out, "--max-pending"));
		assert_non_null(strstr(r.out, "--max-conns"));
		assert_non_null(strstr(r.out, "--idle-timeout"));
		assert_non_null(strstr(r.out, "--drain-timeout"));
		run_free(&r);
	}
	/* Help wins over a bad value that comes after it. */
	parse(&r, "--help", "--mode", "bogus", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	run_free(&r);
}

static void test_version(void **state)
{
	static const char *const names[] = {"-V", "--version"};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < 2; i++) {
		parse(&r, names[i], NULL);
		assert_int_equal(r.res, OPTS_EXIT);
		assert_string_equal(r.err, "");
		assert_string_equal(r.out,
		                    "forkloop-echo " FORKLOOP_VERSION "\n");
		run_free(&r);
	}
}

static void test_reparse(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--mode", "bogus", NULL);
	assert_int_equal(r.res, OPTS_USAGE);
	run_free(&r);
	parse(&r, "--max-conns", "3", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.mode, ECHO_MODE_EVENT);
	assert_true(r.o.max_conns == 3);
	assert_int_equal(r.o.nlisten, 1);
	run_free(&r);
}

static void test_stats_log(void **state)
{
	struct echo_stats s = {.open = 1,
	                       .accepted = 2,
	                       .refused = 3,
	                       .bytes_in = 4,
	                       .bytes_out = UINT64_MAX};
	char buf[256];
	FILE *tmp;
	ssize_t n;
	int saved;

	(void)state;
	tmp = tmpfile();
	assert_non_null(tmp);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	echo_stats_log(&s, 0);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	n = pread(fileno(tmp), buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	fclose(tmp);
	assert_string_equal(buf, "forkloop-echo: stats: open=1 accepted=2 "
	                         "refused=3 bytes_in=4 "
	                         "bytes_out=18446744073709551615\n");
}

static void test_udp(void **state)
{
	struct run r;

	(void)state;
	parse(&r, NULL);
	assert_ok(&r);
	assert_int_equal(r.o.udp, ECHO_UDP_OFF);
	assert_true(r.o.udp_rate == UDP_DEFAULT_RATE);
	run_free(&r);
	parse(&r, "--udp", "-l", "127.0.0.1:0", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.udp, ECHO_UDP_ON);
	run_free(&r);
	parse(&r, "--udp-only", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.udp, ECHO_UDP_ONLY);
	run_free(&r);
	/* One or the other, whichever comes first. */
	parse(&r, "--udp-only", "--udp", NULL);
	assert_usage(&r, "--udp and --udp-only cannot be used together");
	run_free(&r);
	parse(&r, "--udp", "--udp-only", NULL);
	assert_usage(&r, "--udp and --udp-only cannot be used together");
	run_free(&r);
	parse(&r, "--udp", "--udp-rate", "100", NULL);
	assert_ok(&r);
	assert_true(r.o.udp_rate == 100);
	run_free(&r);
	parse(&r, "--udp-rate=0", "--udp", NULL);
	assert_ok(&r);
	assert_true(r.o.udp_rate == 0);
	run_free(&r);
	parse(&r, "--udp", "--udp-rate", "4294967295", NULL);
	assert_ok(&r);
	assert_true(r.o.udp_rate == UINT32_MAX);
	run_free(&r);
	/* Without UDP served, --udp-rate would do nothing. */
	parse(&r, "--udp-rate", "10", NULL);
	assert_usage(&r, "--udp-rate");
	run_free(&r);
}

static void test_udp_bad(void **state)
{
	static const char *const bad[] = {
	        "", "-1", "+2", "2x", "1K", "1.5", "4294967296",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--udp", "--udp-rate", bad[i], NULL);
		assert_usage(&r, "--udp-rate");
		run_free(&r);
	}
	parse(&r, "--udp-rate", NULL);
	assert_usage(&r, "--udp-rate");
	run_free(&r);
	parse(&r, "--udp=yes", NULL);
	assert_usage(&r, NULL);
	run_free(&r);
	/* A prefix of both --udp-only and --udp-rate. */
	parse(&r, "--udp-", NULL);
	assert_usage(&r, NULL);
	run_free(&r);
}

static void test_udp_help(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--help", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	assert_non_null(strstr(r.out, "--udp "));
	assert_non_null(strstr(r.out, "--udp-only"));
	assert_non_null(strstr(r.out, "--udp-rate N"));
	assert_non_null(strstr(r.out, "[--udp | --udp-only] [--udp-rate N]"));
	run_free(&r);
}

static void test_stats_log_udp(void **state)
{
	struct echo_stats s = {.open = 1,
	                       .accepted = 2,
	                       .refused = 3,
	                       .bytes_in = 4,
	                       .bytes_out = 5,
	                       .udp = 1,
	                       .udp_in = 6,
	                       .udp_out = 7,
	                       .udp_dropped = UINT64_MAX};
	char buf[256];
	FILE *tmp;
	ssize_t n;
	int saved;

	(void)state;
	tmp = tmpfile();
	assert_non_null(tmp);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	echo_stats_log(&s, 0);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	n = pread(fileno(tmp), buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	fclose(tmp);
	assert_string_equal(buf,
	                    "forkloop-echo: stats: open=1 accepted=2 "
	                    "refused=3 bytes_in=4 bytes_out=5 udp_in=6 "
	                    "udp_out=7 udp_dropped=18446744073709551615\n");
}

static void test_keepalive(void **state)
{
	struct run r;

	(void)state;
	parse(&r, NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 0);
	run_free(&r);
	parse(&r, "--keepalive", "60", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 60);
	run_free(&r);
	parse(&r, "--keepalive=1", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 1);
	run_free(&r);
	parse(&r, "--keepalive", "32767", NULL);
	assert_ok(&r);
	assert_int_equal(r.o.keepalive, 32767);
	run_free(&r);
	parse(&r, "--help", NULL);
	assert_non_null(strstr(r.out, "--keepalive SECONDS"));
	assert_non_null(strstr(r.out, "3 probes SECONDS/3 apart"));
	run_free(&r);
}

static void test_keepalive_bad(void **state)
{
	static const char *const bad[] = {
	        "", "0", "-1", "32768", "1.5", "1s", "abc", "99999999999",
	};
	struct run r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		parse(&r, "--keepalive", bad[i], NULL);
		assert_usage(&r, "--keepalive");
		run_free(&r);
	}
	parse(&r, "--keepalive", NULL);
	assert_usage(&r, "--keepalive");
	run_free(&r);
}

static void test_loglimit(void **state)
{
	struct echo_loglimit l;
	uint64_t held = 99;
	int i, passed = 0;

	(void)state;
	memset(&l, 0, sizeof l);
	for (i = 0; i < 100; i++)
		passed += echo_loglimit_pass(&l, 7000, &held);
	assert_int_equal(passed, ECHO_LOG_PER_SEC);
	assert_true(held == 0);
	/* A second later: the first line says how many were held back. */
	assert_int_equal(echo_loglimit_pass(&l, 8000, &held), 1);
	assert_true(held == 100 - ECHO_LOG_PER_SEC);
	assert_int_equal(echo_loglimit_pass(&l, 8000, &held), 1);
	assert_true(held == 0);
	/* A second with few lines holds none back. */
	assert_int_equal(echo_loglimit_pass(&l, 20000, &held), 1);
	assert_true(held == 0);
}

/* What f(arg) writes on standard error, into buf (NUL-terminated). */
static void capture_stderr(void (*f)(void *), void *arg, char *buf,
                           size_t len)
{
	FILE *tmp = tmpfile();
	ssize_t n;
	int saved;

	assert_non_null(tmp);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	f(arg);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	n = pread(fileno(tmp), buf, len - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	fclose(tmp);
}

static void stats_log(void *arg)
{
	echo_stats_log(arg, 0);
}

/* The refusal counters come last, after the UDP ones, named as admit.h. */
static void test_stats_log_admit(void **state)
{
	struct echo_stats s = {.open = 1, .accepted = 2, .refused = 3,
	                       .bytes_in = 4, .bytes_out = 5, .admit = 1};
	char buf[512];

	(void)state;
	for (int i = ADMIT_DENIED; i < ADMIT_NWHY; i++)
		s.admit_refused[i] = (uint64_t)(10 + i);
	capture_stderr(stats_log, &s, buf, sizeof buf);
	assert_string_equal(buf, "forkloop-echo: stats: open=1 accepted=2 "
	                         "refused=3 bytes_in=4 bytes_out=5 "
	                         "denied=11 per_source=12 rate=13 "
	                         "table_full=14 uid=15\n");
	s.udp = 1;
	s.udp_in = 6;
	s.udp_out = 7;
	s.udp_dropped = 8;
	capture_stderr(stats_log, &s, buf, sizeof buf);
	assert_string_equal(buf, "forkloop-echo: stats: open=1 accepted=2 "
	                         "refused=3 bytes_in=4 bytes_out=5 udp_in=6 "
	                         "udp_out=7 udp_dropped=8 denied=11 "
	                         "per_source=12 rate=13 table_full=14 "
	                         "uid=15\n");
}

static struct sockaddr *sin4(struct sockaddr_in *sin, const char *ip)
{
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	return (struct sockaddr *)sin;
}

static void test_admit(void **state)
{
	struct sockaddr_in sin;
	struct run r;

	(void)state;
	/* No rule: everyone gets in, and the stats line stays as it was. */
	parse(&r, NULL);
	assert_ok(&r);
	assert_non_null(r.o.admit);
	assert_false(admit_active(r.o.admit));
	assert_int_equal(admit_per_source(r.o.admit), 0);
	run_free(&r);
	parse(&r, "--allow", "10.0.0.0/8", "--deny", "10.9.0.0/16",
	      "--max-conns-per-source", "8", "--accept-rate", "20/s",
	      "--accept-burst", "5", "--source-prefix6", "48",
	      "--source-table", "1024", NULL);
	assert_ok(&r);
	assert_true(admit_active(r.o.admit));
	assert_int_equal(admit_per_source(r.o.admit), 8);
	assert_int_equal(admit_check_addr(r.o.admit, sin4(&sin, "10.1.2.3"),
	                                  sizeof sin),
	                 ADMIT_OK);
	assert_int_equal(admit_check_addr(r.o.admit, sin4(&sin, "10.9.1.1"),
	                                  sizeof sin),
	                 ADMIT_DENIED);
	assert_int_equal(admit_check_addr(r.o.admit, sin4(&sin, "192.0.2.1"),
	                                  sizeof sin),
	                 ADMIT_DENIED);
	run_free(&r);
	/* The access lists apply to datagrams too. */
	parse(&r, "--udp-only", "--deny", "192.0.2.0/24", "-l", "127.0.0.1:0",
	      NULL);
	assert_ok(&r);
	assert_true(admit_active(r.o.admit));
	run_free(&r);
	parse(&r, "--udp", "--allow", "127.0.0.1", "-l", "127.0.0.1:0", NULL);
	assert_ok(&r);
	run_free(&r);
}

static void test_admit_bad(void **state)
{
	static const char *const tcp_only[][2] = {
	        {"--max-conns-per-source", "2"},
	        {"--accept-rate", "10"},
	        {"--accept-burst", "3"},
	        {"--source-table", "100"},
	        {"--source-prefix6", "56"},
	};
	char path[] = "/tmp/test_echo_opts_XXXXXX", want[64];
	struct run r;
	FILE *f;
	int fd;

	(void)state;
	parse(&r, "--allow", "10.0.0.0/33", NULL);
	assert_usage(&r, "10.0.0.0/33");
	run_free(&r);
	parse(&r, "--allow", "nonsense", NULL);
	assert_usage(&r, "nonsense");
	run_free(&r);
	parse(&r, "--deny", "10.1.0.0/8", NULL);
	assert_usage(&r, "10.1.0.0/8");
	run_free(&r);
	parse(&r, "--max-conns-per-source", "0", NULL);
	assert_usage(&r, "--max-conns-per-source");
	run_free(&r);
	parse(&r, "--accept-rate", "0", NULL);
	assert_usage(&r, "--accept-rate");
	run_free(&r);
	/* What goes together is checked after the last option. */
	parse(&r, "--accept-burst", "5", NULL);
	assert_usage(&r, "--accept-burst");
	run_free(&r);
	parse(&r, "--allow", NULL);
	assert_usage(&r, "--allow");
	run_free(&r);
	for (size_t i = 0; i < sizeof tcp_only / sizeof tcp_only[0]; i++) {
		parse(&r, "--udp-only", tcp_only[i][0], tcp_only[i][1], NULL);
		assert_usage(&r, "applies to TCP connections: not with "
		                 "--udp-only");
		assert_non_null(strstr(r.err, tcp_only[i][0]));
		run_free(&r);
	}
	/* A file: its bad line is named by file and line. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("# comment\n10.0.0.0/8\n\n2001:db8::/32\nnot-a-prefix\n", f);
	fclose(f);
	parse(&r, "--deny-file", path, NULL);
	snprintf(want, sizeof want, "%s:5", path);
	assert_usage(&r, want);
	run_free(&r);
	parse(&r, "--allow-file", path, NULL);
	assert_usage(&r, want);
	run_free(&r);
	unlink(path);
	parse(&r, "--deny-file", path, NULL);
	assert_usage(&r, path);
	run_free(&r);
}

static void test_admit_help(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "--help", NULL);
	assert_int_equal(r.res, OPTS_EXIT);
	assert_non_null(strstr(r.out, "[--max-conns-per-source N]"));
	assert_non_null(strstr(r.out, "[--allow CIDR]..."));
	assert_non_null(strstr(r.out, "--accept-rate R[/s]"));
	assert_non_null(strstr(r.out, "Who may connect"));
	assert_non_null(strstr(r.out, admit_help_text));
	run_free(&r);
	parse(&r, "--bogus", NULL);
	assert_non_null(strstr(r.err, "[--deny-file FILE]"));
	run_free(&r);
}

struct pause_run {
	struct echo_pause *p;
	int notes;
	int over;
};

static void pause_runs(void *arg)
{
	struct pause_run *pr = arg;

	for (int i = 0; i < pr->notes; i++)
		echo_pause_note(pr->p, "accept", EMFILE);
	if (pr->over)
		echo_pause_over(pr->p);
}

static int count_lines(const char *buf, const char *needle)
{
	int n = 0;

	for (const char *q = buf; (q = strstr(q, needle)) != NULL; q++)
		n++;
	return n;
}

/*
 * A daemon at its descriptor limit pauses and resumes as connections
 * close: one run's lines at most every ECHO_PAUSE_LOG_INTERVAL seconds,
 * then a count of the runs not logged.
 */
static void test_pause_logged_once_per_interval(void **state)
{
	struct echo_pause p;
	struct pause_run pr = {&p, 5, 1};
	char buf[4096];

	(void)state;
	memset(&p, 0, sizeof p);
	capture_stderr(pause_runs, &pr, buf, sizeof buf);
	assert_int_equal(count_lines(buf, "pausing accepts\n"), 1);
	assert_int_equal(count_lines(buf, "; 5 attempts waited\n"), 1);
	/* Twenty more runs at once: nothing. */
	for (int i = 0; i < 20; i++) {
		capture_stderr(pause_runs, &pr, buf, sizeof buf);
		assert_string_equal(buf, "");
	}
	/* Once the interval has passed, a run is logged with the count. */
	p.last -= ECHO_PAUSE_LOG_INTERVAL;
	capture_stderr(pause_runs, &pr, buf, sizeof buf);
	assert_int_equal(count_lines(buf, "forkloop-echo: accept: Too many "
	                                  "open files; pausing accepts (20 "
	                                  "more not logged)\n"),
	                 1);
	assert_int_equal(count_lines(buf, "accepting again after"), 1);
	pr.over = 0;
	p.last -= ECHO_PAUSE_LOG_INTERVAL;
	capture_stderr(pause_runs, &pr, buf, sizeof buf);
	assert_int_equal(count_lines(buf, "pausing accepts\n"), 1);
}

/* No one-second window holds more than ECHO_LOG_PER_SEC lines, even one
 * that spans two calendar seconds: a line every 10 ms for 3 s. */
static void test_loglimit_any_window(void **state)
{
	struct echo_loglimit l;
	int64_t logged[300];
	uint64_t held;
	int i, j, n = 0;

	(void)state;
	memset(&l, 0, sizeof l);
	for (i = 0; i < 300; i++)
		if (echo_loglimit_pass(&l, 500 + 10 * i, &held))
			logged[n++] = 500 + 10 * i;
	for (i = 0; i < n; i++) {
		int in = 0;

		for (j = i; j < n && logged[j] < logged[i] + 1000; j++)
			in++;
		if (in > ECHO_LOG_PER_SEC)
			fail_msg("%d lines in the second from %lld ms", in,
			         (long long)logged[i]);
	}
	/* and it does not starve: 10 a second over 3 s */
	assert_true(n >= 3 * ECHO_LOG_PER_SEC);
}

/* unix: listeners, --unix-mode, and what does not go with them. */
static void test_unix_listeners(void **state)
{
	struct run r;

	(void)state;
	parse(&r, "-l", "unix:/run/e.sock", "-l", "127.0.0.1:0",
	      "--unix-mode", "0660", "--udp", NULL);
	assert_int_equal(r.res, OPTS_OK);
	assert_int_equal(r.o.nlisten, 2);
	assert_true(r.o.listen[0].is_unix);
	assert_string_equal(r.o.listen[0].path, "/run/e.sock");
	assert_int_equal(r.o.listen[0].unix_mode, 0660);
	assert_false(r.o.listen[1].is_unix);
	run_free(&r);
	parse(&r, "-l", "unix:@name", NULL);
	assert_int_equal(r.res, OPTS_OK);
	assert_int_equal(r.o.listen[0].unix_mode, -1);
	run_free(&r);
	parse(&r, "-l", "unix:@name", "--unix-mode", "600", NULL);
	assert_usage(&r, "unix:@NAME has none");
	run_free(&r);
	parse(&r, "--unix-mode", "0660", NULL);
	assert_usage(&r, "--unix-mode needs a unix:/PATH --listen");
	run_free(&r);
	parse(&r, "-l", "unix:/x", "--unix-mode", "u+rw", NULL);
	assert_usage(&r, "bad --unix-mode 'u+rw'");
	run_free(&r);
	parse(&r, "-l", "unix:/x", "--udp-only", NULL);
	assert_usage(&r, "not with --udp-only");
	run_free(&r);
	parse(&r, "-l", "unix:/x", "--udp", NULL);
	assert_usage(&r, "--udp is served beside plain IP listeners only");
	run_free(&r);
	parse(&r, "-l", "tls://unix:/x", NULL);
	assert_usage(&r, "TLS is not spoken over Unix sockets");
	run_free(&r);
	parse(&r, "-l", "unix:relative.sock", NULL);
	assert_usage(&r, "absolute path");
	run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_mode),
	        cmocka_unit_test(test_mode_bad),
	        cmocka_unit_test(test_listen),
	        cmocka_unit_test(test_listen_bad),
	        cmocka_unit_test(test_listen_limit),
	        cmocka_unit_test(test_max_pending),
	        cmocka_unit_test(test_max_pending_bad),
	        cmocka_unit_test(test_max_conns),
	        cmocka_unit_test(test_max_conns_bad),
	        cmocka_unit_test(test_timeouts),
	        cmocka_unit_test(test_timeouts_bad),
	        cmocka_unit_test(test_verbosity),
	        cmocka_unit_test(test_all_options),
	        cmocka_unit_test(test_unknown_options),
	        cmocka_unit_test(test_missing_values),
	        cmocka_unit_test(test_stray_arguments),
	        cmocka_unit_test(test_help),
	        cmocka_unit_test(test_version),
	        cmocka_unit_test(test_reparse),
	        cmocka_unit_test(test_stats_log),
	        cmocka_unit_test(test_udp),
	        cmocka_unit_test(test_udp_bad),
	        cmocka_unit_test(test_udp_help),
	        cmocka_unit_test(test_stats_log_udp),
	        cmocka_unit_test(test_keepalive),
	        cmocka_unit_test(test_tls),
	        cmocka_unit_test(test_tls_bad),
	        cmocka_unit_test(test_keepalive_bad),
	        cmocka_unit_test(test_limits_named),
	        cmocka_unit_test(test_loglimit),
	        cmocka_unit_test(test_loglimit_any_window),
	        cmocka_unit_test(test_stats_log_admit),
	        cmocka_unit_test(test_admit),
	        cmocka_unit_test(test_admit_bad),
	        cmocka_unit_test(test_admit_help),
	        cmocka_unit_test(test_pause_logged_once_per_interval),
	        cmocka_unit_test(test_unix_listeners),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
