/*
 * test_addr.c - addr_parse, addr_set, addr_port_valid and the formatters.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "forkloop/addr.h"

static void assert_parses(const char *spec, int flags, const char *host,
                          const char *port)
{
	struct addr a;
	const char *why = NULL;

	memset(&a, 0x5a, sizeof a);
	if (addr_parse(spec, flags, &a, &why) != 0)
		fail_msg("'%s' rejected: %s", spec, why != NULL ? why : "?");
	assert_string_equal(a.host, host);
	assert_string_equal(a.port, port);
}

static void assert_rejects(const char *spec, int flags)
{
	struct addr a;
	const char *why = NULL;

	memset(&a, 0, sizeof a);
	if (addr_parse(spec, flags, &a, &why) == 0)
		fail_msg("'%s' accepted as host '%s' port '%s'", spec, a.host,
		         a.port);
	assert_non_null(why);
	assert_true(strlen(why) > 0);
}

static void test_parse_ipv4(void **state)
{
	(void)state;
	assert_parses("127.0.0.1:80", 0, "127.0.0.1", "80");
	assert_parses("0.0.0.0:6666", 0, "0.0.0.0", "6666");
	assert_parses("127.0.0.1:0", 0, "127.0.0.1", "0");
	assert_parses("127.0.0.1:65535", 0, "127.0.0.1", "65535");
	assert_parses("127.0.0.1:80", ADDR_PORT_ONLY, "127.0.0.1", "80");
}

static void test_parse_ipv6(void **state)
{
	(void)state;
	assert_parses("[::1]:0", 0, "::1", "0");
	assert_parses("[::]:6666", 0, "::", "6666");
	assert_parses("[fe80::1%lo]:80", 0, "fe80::1%lo", "80");
	assert_parses("[2001:db8::5]:65535", ADDR_PORT_ONLY, "2001:db8::5",
	              "65535");
}

static void test_parse_name(void **state)
{
	(void)state;
	assert_parses("localhost:6666", 0, "localhost", "6666");
	assert_parses("example.org:7", 0, "example.org", "7");
}

static void test_parse_port_only(void **state)
{
	(void)state;
	assert_parses("6666", ADDR_PORT_ONLY, "", "6666");
	assert_parses("0", ADDR_PORT_ONLY, "", "0");
	assert_rejects("6666", 0);
	assert_rejects("-1", ADDR_PORT_ONLY);
	assert_rejects("80x", ADDR_PORT_ONLY);
	assert_rejects("65536", ADDR_PORT_ONLY);
	assert_rejects("1.2.3.4", ADDR_PORT_ONLY);
	assert_rejects("", ADDR_PORT_ONLY);
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
	        "",
	        "1.2.3.4",
	        ":80",
	        "::1:80",
	        "::1",
	        "[::1]80",
	        "[::1]",
	        "[::1:80",
	        "[]:80",
	        "[1.2.3.4]:80",
	        "[localhost]:80",
	        "127.0.0.1:",
	        "127.0.0.1:65536",
	        "127.0.0.1:99999",
	        "127.0.0.1:123456",
	        "127.0.0.1:-1",
	        "127.0.0.1:+1",
	        "127.0.0.1:80x",
	        "127.0.0.1: 80",
	        "127.0.0.1:0x50",
	        "[::1]:",
	        "[::1]:65536",
	        "[::1]:80x",
	        "-1",
	        "80x",
	        "localhost",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_rejects(bad[i], 0);
}

static void test_parse_host_length(void **state)
{
	char spec[ADDR_HOSTLEN + 16];
	char host[ADDR_HOSTLEN + 1];

	(void)state;
	memset(host, 'a', ADDR_HOSTLEN - 1);
	host[ADDR_HOSTLEN - 1] = '\0';
	snprintf(spec, sizeof spec, "%s:80", host);
	assert_parses(spec, 0, host, "80");

	memset(host, 'a', ADDR_HOSTLEN);
	host[ADDR_HOSTLEN] = '\0';
	snprintf(spec, sizeof spec, "%s:80", host);
	assert_rejects(spec, 0);
	snprintf(spec, sizeof spec, "[%s:1]:80", host);
	assert_rejects(spec, 0);
}

static void test_port_valid(void **state)
{
	(void)state;
	assert_true(addr_port_valid("0"));
	assert_true(addr_port_valid("80"));
	assert_true(addr_port_valid("65535"));
	assert_false(addr_port_valid(""));
	assert_false(addr_port_valid("65536"));
	assert_false(addr_port_valid("-1"));
	assert_false(addr_port_valid("+1"));
	assert_false(addr_port_valid(" 1"));
	assert_false(addr_port_valid("1 "));
	assert_false(addr_port_valid("http"));
}

static void test_set(void **state)
{
	struct addr a;
	const char *why = NULL;
	char host[ADDR_HOSTLEN + 1];

	(void)state;
	assert_int_equal(addr_set("::1", "0", &a, &why), 0);
	assert_string_equal(a.host, "::1");
	assert_string_equal(a.port, "0");
	assert_int_equal(addr_set("", "6666", &a, &why), 0);
	assert_string_equal(a.host, "");
	assert_int_equal(addr_set("localhost", "65536", &a, &why), -1);
	assert_non_null(why);
	memset(host, 'b', ADDR_HOSTLEN);
	host[ADDR_HOSTLEN] = '\0';
	why = NULL;
	assert_int_equal(addr_set(host, "80", &a, &why), -1);
	assert_non_null(why);
}

static void test_format_v4(void **state)
{
	struct sockaddr_in sin;
	char buf[ADDR_STRLEN];

	(void)state;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40123);
	assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr), 1);
	assert_ptr_equal(addr_format((struct sockaddr *)&sin, sizeof sin, buf,
	                             sizeof buf),
	                 buf);
	assert_string_equal(buf, "127.0.0.1:40123");

	sin.sin_port = htons(0);
	sin.sin_addr.s_addr = htonl(INADDR_ANY);
	addr_format((struct sockaddr *)&sin, sizeof sin, buf, sizeof buf);
	assert_string_equal(buf, "0.0.0.0:0");
}

static void test_format_v6(void **state)
{
	struct sockaddr_in6 sin6;
	char buf[ADDR_STRLEN];

	(void)state;
	memset(&sin6, 0, sizeof sin6);
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(65535);
	assert_int_equal(inet_pton(AF_INET6, "::1", &sin6.sin6_addr), 1);
	addr_format((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf);
	assert_string_equal(buf, "[::1]:65535");

	assert_int_equal(inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr),
	                 1);
	sin6.sin6_port = htons(80);
	addr_format((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf);
	assert_string_equal(buf, "[2001:db8::5]:80");
}

static void test_format_truncates(void **state)
{
	struct sockaddr_in sin;
	char buf[8];

	(void)state;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40123);
	assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr), 1);
	memset(buf, 'x', sizeof buf);
	addr_format((struct sockaddr *)&sin, sizeof sin, buf, sizeof buf);
	assert_int_equal(strlen(buf), sizeof buf - 1);
}

static void test_spec_format(void **state)
{
	struct addr a;
	const char *why;
	char buf[ADDR_STRLEN];

	(void)state;
	assert_int_equal(addr_parse("127.0.0.1:6666", 0, &a, &why), 0);
	assert_string_equal(addr_spec_format(&a, buf, sizeof buf),
	                    "127.0.0.1:6666");
	assert_int_equal(addr_parse("[::1]:0", 0, &a, &why), 0);
	assert_string_equal(addr_spec_format(&a, buf, sizeof buf), "[::1]:0");
	assert_int_equal(addr_parse("localhost:7", 0, &a, &why), 0);
	assert_string_equal(addr_spec_format(&a, buf, sizeof buf),
	                    "localhost:7");
}

static void test_resolve_numeric(void **state)
{
	struct addr a;
	struct evutil_addrinfo *res;
	const char *why;
	char buf[ADDR_STRLEN];
	int gai = 0;

	(void)state;
	assert_int_equal(addr_parse("127.0.0.1:40123", 0, &a, &why), 0);
	res = addr_resolve(&a, SOCK_STREAM, 1, &gai);
	assert_non_null(res);
	assert_int_equal(res->ai_family, AF_INET);
	addr_format(res->ai_addr, (socklen_t)res->ai_addrlen, buf, sizeof buf);
	assert_string_equal(buf, "127.0.0.1:40123");
	evutil_freeaddrinfo(res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse_ipv4),
	        cmocka_unit_test(test_parse_ipv6),
	        cmocka_unit_test(test_parse_name),
	        cmocka_unit_test(test_parse_port_only),
	        cmocka_unit_test(test_parse_rejects),
	        cmocka_unit_test(test_parse_host_length),
	        cmocka_unit_test(test_port_valid),
	        cmocka_unit_test(test_set),
	        cmocka_unit_test(test_format_v4),
	        cmocka_unit_test(test_format_v6),
	        cmocka_unit_test(test_format_truncates),
	        cmocka_unit_test(test_spec_format),
	        cmocka_unit_test(test_resolve_numeric),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
