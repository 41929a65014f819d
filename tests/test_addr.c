/*
 * test_addr.c - addr_parse, addr_set, addr_port_valid, the dual-stack rule,
 * the formatters, Unix addresses, listener_bind on several addresses, and
 * the address ranges of --source.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "forkloop/addr.h"
#include "forkloop/listener.h"

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

/* Rejected, and why says so: contains want. */
static void assert_rejects_why(const char *spec, int flags, const char *want)
{
	struct addr a;
	const char *why = NULL;

	if (addr_parse(spec, flags, &a, &why) == 0)
		fail_msg("'%s' accepted as host '%s' port '%s'", spec, a.host,
		         a.port);
	if (why == NULL || strstr(why, want) == NULL)
		fail_msg("'%s': '%s' does not say '%s'", spec,
		         why != NULL ? why : "(null)", want);
}

static void test_parse_ipv4(void **state)
{
	(void)state;
	assert_parses("127.0.0.1:80", 0, "127.0.0.1", "80");
	assert_parses("0.0.0.0:6666", 0, "0.0.0.0", "6666");
	assert_parses("127.0.0.1:0", 0, "127.0.0.1", "0");
	assert_parses("127.0.0.1:65535", 0, "127.0.0.1", "65535");
	assert_parses("127.0.0.1:80", ADDR_LISTEN, "127.0.0.1", "80");
}

static void test_parse_ipv6(void **state)
{
	(void)state;
	assert_parses("[::1]:0", 0, "::1", "0");
	assert_parses("[::]:6666", 0, "::", "6666");
	assert_parses("[fe80::1%lo]:80", 0, "fe80::1%lo", "80");
	assert_parses("[2001:db8::5]:65535", ADDR_LISTEN, "2001:db8::5",
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
	assert_parses("6666", ADDR_LISTEN, "", "6666");
	assert_parses("0", ADDR_LISTEN, "", "0");
	assert_rejects("6666", 0);
	assert_rejects("-1", ADDR_LISTEN);
	assert_rejects("80x", ADDR_LISTEN);
	assert_rejects("65536", ADDR_LISTEN);
	assert_rejects("1.2.3.4", ADDR_LISTEN);
	assert_rejects("", ADDR_LISTEN);
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
	struct addrinfo *res;
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
	freeaddrinfo(res);
}

/* One syntax: a listener and a connecting program read a spec alike. */
static void test_forms_same_for_listen_and_connect(void **state)
{
	static const char *const specs[] = {
	        "127.0.0.1:80", "[::1]:80", "localhost:80", "[fe80::1%lo]:7",
	        "example.org:65535",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof specs / sizeof specs[0]; i++) {
		struct addr l, c;
		const char *why = NULL;

		assert_int_equal(addr_parse(specs[i], ADDR_LISTEN, &l, &why), 0);
		assert_int_equal(addr_parse(specs[i], ADDR_CONNECT, &c, &why), 0);
		assert_string_equal(l.host, c.host);
		assert_string_equal(l.port, c.port);
	}
	assert_parses("6666", ADDR_LISTEN, "", "6666");
}

/* Each error names the forms the caller takes. */
static void test_errors_name_the_forms(void **state)
{
	(void)state;
	assert_rejects_why("nope", ADDR_LISTEN, ADDR_FORMS_LISTEN);
	assert_rejects_why("", ADDR_LISTEN, ADDR_FORMS_LISTEN);
	assert_rejects_why(":80", ADDR_LISTEN, ADDR_FORMS_LISTEN);
	assert_rejects_why("localhost", ADDR_CONNECT, ADDR_FORMS_CONNECT);
	assert_rejects_why("6666", ADDR_CONNECT, "for listening");
	assert_rejects_why("6666", ADDR_CONNECT, ADDR_FORMS_CONNECT);
	assert_rejects_why(":80", ADDR_CONNECT, ADDR_FORMS_CONNECT);
	assert_rejects_why("::1:80", ADDR_LISTEN, "in brackets");
	assert_rejects_why("[::1]", ADDR_CONNECT, "[IPV6]:PORT");
	assert_rejects_why("[::1:80", ADDR_CONNECT, "[IPV6]:PORT");
	assert_rejects_why("127.0.0.1:0", ADDR_CONNECT, "other than 0");
	assert_parses("127.0.0.1:0", ADDR_LISTEN, "127.0.0.1", "0");
}

/* Digits and dots are an address, never a name to look up. */
static void test_invalid_literals_are_not_names(void **state)
{
	struct addr a;
	const char *why = NULL;

	(void)state;
	assert_rejects_why("256.1.1.1:80", 0, "not a valid IPv4 address");
	assert_rejects_why("1.2.3.4.5:80", ADDR_LISTEN,
	                   "not a valid IPv4 address");
	assert_rejects_why("1.2.3.256:80", ADDR_CONNECT,
	                   "not a valid IPv4 address");
	assert_rejects_why("[::g]:80", 0, "not a valid IPv6 address");
	assert_rejects_why("[1:2:3:4:5:6:7:8:9]:80", 0,
	                   "not a valid IPv6 address");
	assert_int_equal(addr_set("256.1.1.1", "80", &a, &why), -1);
	assert_non_null(strstr(why, "not a valid IPv4 address"));
	/* What inet_aton reads as a number but not as it looks: octal,
	 * short and single-number forms, hex. */
	assert_rejects_why("010.0.0.1:80", 0, "not a valid IPv4 address");
	assert_rejects_why("0177.0.0.1:80", 0, "not a valid IPv4 address");
	assert_rejects_why("127.1:80", 0, "not a valid IPv4 address");
	assert_rejects_why("1.2.3:80", ADDR_CONNECT,
	                   "not a valid IPv4 address");
	assert_rejects_why("2130706433:80", 0, "not a valid IPv4 address");
	assert_rejects_why("0x7f.0.0.1:80", ADDR_LISTEN,
	                   "not a valid IPv4 address");
	assert_rejects_why("0x7f000001:80", 0, "not a valid IPv4 address");
	assert_int_equal(addr_set("010.0.0.1", "80", &a, &why), -1);
	/* Dotted quads, and names that start with digits, stay accepted. */
	assert_parses("10.1.2.3:80", 0, "10.1.2.3", "80");
	assert_parses("0.0.0.0:80", ADDR_LISTEN, "0.0.0.0", "80");
	assert_parses("host-1.example:80", 0, "host-1.example", "80");
	assert_parses("0x7f.example:80", 0, "0x7f.example", "80");
	assert_parses("3com.example:80", 0, "3com.example", "80");
}

static void test_dual_stack_rule(void **state)
{
	struct addr l[3];
	const char *why;

	(void)state;
	assert_int_equal(addr_parse("[::]:7", ADDR_LISTEN, &l[0], &why), 0);
	assert_int_equal(addr_parse("127.0.0.1:7", ADDR_LISTEN, &l[1], &why),
	                 0);
	addr_dual_stack(l, 2);
	assert_int_equal(l[0].v6only, 0);
	assert_int_equal(addr_parse("0.0.0.0:8", ADDR_LISTEN, &l[2], &why), 0);
	addr_dual_stack(l, 3);
	assert_int_equal(l[0].v6only, 1);
	assert_int_equal(l[1].v6only, 0);
	assert_int_equal(l[2].v6only, 0);
}

static void test_strerror_is_the_system_resolver(void **state)
{
	(void)state;
	assert_string_equal(addr_strerror(EAI_NONAME), gai_strerror(EAI_NONAME));
	assert_string_equal(addr_strerror(EAI_AGAIN), gai_strerror(EAI_AGAIN));
}

/* An addrinfo list of IPv4 addresses, all with port 0. */
static struct addrinfo *v4list(struct sockaddr_in *sin, struct addrinfo *ai,
                               const char *const *hosts, size_t n)
{
	size_t i;

	memset(ai, 0, n * sizeof *ai);
	for (i = 0; i < n; i++) {
		memset(&sin[i], 0, sizeof sin[i]);
		sin[i].sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, hosts[i], &sin[i].sin_addr),
		                 1);
		ai[i].ai_family = AF_INET;
		ai[i].ai_socktype = SOCK_STREAM;
		ai[i].ai_addr = (struct sockaddr *)&sin[i];
		ai[i].ai_addrlen = sizeof sin[i];
		ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
	}
	return ai;
}

static unsigned local_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* A name with several addresses and port 0: one port for all of them. */
static void test_bind_list_one_port(void **state)
{
	static const char *const hosts[] = {"127.0.0.1", "127.0.0.2",
	                                    "127.0.0.1"};
	struct sockaddr_in sin[3];
	struct addrinfo ai[3];
	struct addr a;
	const char *why;
	char err[512];
	int fds[4], n, type;

	(void)state;
	assert_int_equal(addr_parse("two.example:0", 0, &a, &why), 0);
	for (type = SOCK_STREAM; type <= SOCK_DGRAM; type++) {
		v4list(sin, ai, hosts, 3);
		n = listener_bind_list(ai, &a, type, fds, 4, err, sizeof err);
		if (n < 0)
			fail_msg("%s", err);
		assert_int_equal(n, 2); /* the duplicate is dropped */
		assert_int_not_equal(local_port(fds[0]), 0);
		assert_int_equal(local_port(fds[0]), local_port(fds[1]));
		close(fds[0]);
		close(fds[1]);
	}
	n = listener_bind_list(v4list(sin, ai, hosts, 2), &a, SOCK_STREAM, fds,
	                       1, err, sizeof err);
	assert_int_equal(n, LISTENER_TOO_MANY);
	assert_non_null(strstr(err, "resolves to 2 addresses, and only 1 more"));
}

/* A port another process holds on one of the addresses: say which. */
static void test_bind_list_port_taken(void **state)
{
	static const char *const hosts[] = {"127.0.0.1", "127.0.0.2"};
	struct sockaddr_in sin[2], held;
	struct addrinfo ai[2];
	struct addr a;
	const char *why;
	char err[512], spec[32], want[64];
	socklen_t len = sizeof held;
	int fds[2], n, hold;

	(void)state;
	hold = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&held, 0, sizeof held);
	held.sin_family = AF_INET;
	held.sin_addr.s_addr = htonl(0x7f000002);
	assert_int_equal(bind(hold, (struct sockaddr *)&held, sizeof held), 0);
	assert_int_equal(getsockname(hold, (struct sockaddr *)&held, &len), 0);
	snprintf(spec, sizeof spec, "two.example:%u", ntohs(held.sin_port));
	assert_int_equal(addr_parse(spec, 0, &a, &why), 0);
	v4list(sin, ai, hosts, 2);
	sin[0].sin_port = sin[1].sin_port = held.sin_port;
	n = listener_bind_list(ai, &a, SOCK_DGRAM, fds, 2, err, sizeof err);
	assert_int_equal(n, -1);
	snprintf(want, sizeof want, "cannot listen on 127.0.0.2:%u: Address "
	         "already in use", ntohs(held.sin_port));
	assert_non_null(strstr(err, want));
	close(hold);
}

/*
 * What another address of the list already serves is not bound again: a
 * family's wildcard serves its specific addresses, an IPv4 address its
 * IPv4-mapped form; and "[::]" beside IPv4 keeps to IPv6, so that a name
 * resolving to "0.0.0.0" and "::" listens on both.
 */
static void test_bind_list_covered(void **state)
{
	static const char *const v4[] = {"127.0.0.1", "0.0.0.0", "127.0.0.2"};
	struct sockaddr_in sin[3];
	struct sockaddr_in6 six[2];
	struct addrinfo ai[5];
	struct sockaddr_storage ss;
	socklen_t len;
	struct addr a;
	const char *why;
	char err[512];
	int fds[5], n, i, v6only;

	(void)state;
	assert_int_equal(addr_parse("any.example:0", 0, &a, &why), 0);
	v4list(sin, ai, v4, 3);
	/* Then "::" and "::ffff:127.0.0.1". */
	memset(six, 0, sizeof six);
	for (i = 0; i < 2; i++) {
		six[i].sin6_family = AF_INET6;
		ai[3 + i] = ai[0];
		ai[3 + i].ai_family = AF_INET6;
		ai[3 + i].ai_addr = (struct sockaddr *)&six[i];
		ai[3 + i].ai_addrlen = sizeof six[i];
		ai[2 + i].ai_next = &ai[3 + i];
	}
	ai[4].ai_next = NULL;
	six[0].sin6_addr = in6addr_any;
	assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1",
	                           &six[1].sin6_addr), 1);
	n = listener_bind_list(ai, &a, SOCK_STREAM, fds, 5, err, sizeof err);
	if (n < 0)
		fail_msg("%s", err);
	assert_int_equal(n, 2); /* 0.0.0.0 and [::] */
	len = sizeof ss;
	assert_int_equal(getsockname(fds[0], (struct sockaddr *)&ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr,
	                 htonl(INADDR_ANY));
	len = sizeof v6only;
	assert_int_equal(getsockopt(fds[1], IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
	                            &len), 0);
	assert_int_equal(v6only, 1);
	close(fds[0]);
	close(fds[1]);
}

/* unix:/PATH and unix:@NAME, under ADDR_UNIX only; "unix:" any case. */
static void test_parse_unix(void **state)
{
	const int fl = ADDR_LISTEN | ADDR_TLS | ADDR_UNIX;
	struct addr a;
	const char *why = NULL;

	(void)state;
	memset(&a, 0x5a, sizeof a);
	assert_int_equal(addr_parse("unix:/run/x.sock", fl, &a, &why), 0);
	assert_true(a.is_unix);
	assert_false(a.tls);
	assert_string_equal(a.path, "/run/x.sock");
	assert_string_equal(a.host, "");
	assert_int_equal(a.unix_mode, -1);
	assert_false(addr_is_abstract(&a));
	assert_int_equal(addr_parse("UNIX:@name", ADDR_CONNECT | ADDR_UNIX,
	                            &a, &why),
	                 0);
	assert_string_equal(a.path, "@name");
	assert_true(addr_is_abstract(&a));
	/* TCP forms are untouched by the flag. */
	assert_parses("127.0.0.1:80", fl, "127.0.0.1", "80");
	assert_parses("unix.:80", fl, "unix.", "80");
	/* Without ADDR_UNIX, "unix:80" stays a host named unix. */
	assert_parses("unix:80", ADDR_CONNECT, "unix", "80");
	assert_rejects_why("unix:/x", ADDR_CONNECT, "not taken here");
	assert_rejects_why("unix:80", fl, "unix:/PATH or unix:@NAME");
	assert_rejects_why("unix:rel/x.sock", fl, "absolute path");
	assert_rejects_why("unix:", fl, "unix:/PATH");
	assert_rejects_why("unix:@", fl, "empty abstract name");
	assert_rejects_why("tls://unix:/x", fl, "not spoken over Unix");
}

/* sun_path holds 108 bytes: a path of 107 and its NUL, a NUL and a name
 * of 107. */
static void test_parse_unix_length(void **state)
{
	char spec[160];
	struct addr a;
	const char *why = NULL;

	(void)state;
	memcpy(spec, "unix:/", 6);
	memset(spec + 6, 'p', 106);
	spec[112] = '\0';
	assert_int_equal(addr_parse(spec, ADDR_LISTEN | ADDR_UNIX, &a, &why),
	                 0);
	assert_int_equal(strlen(a.path), 107);
	spec[112] = 'p';
	spec[113] = '\0';
	assert_rejects_why(spec, ADDR_LISTEN | ADDR_UNIX,
	                   "path longer than 107 bytes");
	spec[5] = '@';
	assert_int_equal(addr_parse(spec, ADDR_LISTEN | ADDR_UNIX, &a, &why),
	                 0);
	spec[113] = 'p';
	spec[114] = '\0';
	assert_rejects_why(spec, ADDR_LISTEN | ADDR_UNIX,
	                   "name longer than 107 bytes");
}

/* Socket addresses both ways, and the spec printed as typed. */
static void test_format_unix(void **state)
{
	struct sockaddr_un su;
	struct addr a;
	const char *why;
	char buf[ADDR_STRLEN];
	socklen_t len;

	(void)state;
	assert_int_equal(addr_parse("unix:/tmp/e.sock", ADDR_UNIX, &a, &why),
	                 0);
	len = addr_unix_sockaddr(&a, &su);
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 12);
	assert_string_equal(addr_format((struct sockaddr *)&su, len, buf,
	                                sizeof buf),
	                    "unix:/tmp/e.sock");
	assert_string_equal(addr_spec_format(&a, buf, sizeof buf),
	                    "unix:/tmp/e.sock");
	assert_int_equal(addr_parse("unix:@ab\x01", ADDR_UNIX, &a, &why), 0);
	len = addr_unix_sockaddr(&a, &su);
	/* No NUL counted after an abstract name: its bytes are the name. */
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 4);
	assert_int_equal(su.sun_path[0], '\0');
	assert_memory_equal(su.sun_path + 1, "ab\x01", 3);
	assert_string_equal(addr_format((struct sockaddr *)&su, len, buf,
	                                sizeof buf),
	                    "unix:@ab\\x01");
	assert_string_equal(addr_spec_format(&a, buf, sizeof buf),
	                    "unix:@ab\x01");
	/* Names that differ format differently; none forges "(uid". */
	memcpy(su.sun_path, "\0a\nb", 4);
	assert_string_equal(addr_format((struct sockaddr *)&su,
	                                offsetof(struct sockaddr_un, sun_path) + 4,
	                                buf, sizeof buf),
	                    "unix:@a\\x0ab");
	memcpy(su.sun_path, "\0a?b", 4);
	assert_string_equal(addr_format((struct sockaddr *)&su,
	                                offsetof(struct sockaddr_un, sun_path) + 4,
	                                buf, sizeof buf),
	                    "unix:@a?b");
	memcpy(su.sun_path, "/x (uid 0)\\", 11);
	assert_string_equal(addr_format((struct sockaddr *)&su,
	                                offsetof(struct sockaddr_un, sun_path) + 11,
	                                buf, sizeof buf),
	                    "unix:/x \\x28uid 0\\x29\\x5c");
	/* The longest name, every byte escaped, fits ADDR_STRLEN whole. */
	memset(su.sun_path, 0xff, sizeof su.sun_path);
	su.sun_path[0] = '\0';
	assert_int_equal(strlen(addr_format((struct sockaddr *)&su,
	                                    (socklen_t)sizeof su, buf,
	                                    sizeof buf)),
	                 strlen("unix:@") + 4 * (sizeof su.sun_path - 1));
	/* An unnamed peer: the family alone. */
	len = sizeof(sa_family_t);
	assert_string_equal(addr_format((struct sockaddr *)&su, len, buf,
	                                sizeof buf),
	                    "unix:");
	/* Cut at buflen, never inside a \xNN. */
	memcpy(su.sun_path, "\0ab", 3);
	assert_string_equal(addr_format((struct sockaddr *)&su,
	                                (socklen_t)sizeof su, buf, 8),
	                    "unix:@a");
	memcpy(su.sun_path, "\0a\1", 3);
	assert_string_equal(addr_format((struct sockaddr *)&su,
	                                (socklen_t)sizeof su, buf, 10),
	                    "unix:@a");
}

static void test_unix_mode_parse(void **state)
{
	int m = -1;

	(void)state;
	assert_int_equal(addr_unix_mode_parse("0660", &m), 0);
	assert_int_equal(m, 0660);
	assert_int_equal(addr_unix_mode_parse("600", &m), 0);
	assert_int_equal(m, 0600);
	assert_int_equal(addr_unix_mode_parse("0", &m), 0);
	assert_int_equal(m, 0);
	assert_int_equal(addr_unix_mode_parse("0777", &m), 0);
	assert_int_equal(addr_unix_mode_parse("1777", &m), -1);
	assert_int_equal(addr_unix_mode_parse("0668", &m), -1);
	assert_int_equal(addr_unix_mode_parse("", &m), -1);
	assert_int_equal(addr_unix_mode_parse("rw", &m), -1);
	assert_int_equal(addr_unix_mode_parse("00660", &m), -1);
}

/* addr_resolve gives one AF_UNIX entry, freed by addr_free. */
static void test_resolve_unix(void **state)
{
	struct addrinfo *res;
	struct addr a;
	const char *why;
	char buf[ADDR_STRLEN];
	int gai_err = 0;

	(void)state;
	assert_int_equal(addr_parse("unix:@fl-resolve", ADDR_UNIX, &a, &why),
	                 0);
	res = addr_resolve(&a, SOCK_STREAM, 0, &gai_err);
	assert_non_null(res);
	assert_int_equal(res->ai_family, AF_UNIX);
	assert_int_equal(res->ai_socktype, SOCK_STREAM);
	assert_null(res->ai_next);
	assert_string_equal(addr_format(res->ai_addr, res->ai_addrlen, buf,
	                                sizeof buf),
	                    "unix:@fl-resolve");
	addr_free(res);
	addr_free(NULL);
}

/* One --source item: its family, first address, count and text. */
static void assert_range(const char *s, int family, const char *text,
                         uint32_t count)
{
	struct addr_range r;
	const char *why = NULL;
	char buf[ADDR_RANGE_STRLEN];

	if (addr_range_parse(s, &r, &why) != 0)
		fail_msg("'%s' rejected: %s", s, why != NULL ? why : "?");
	assert_int_equal(r.family, family);
	assert_int_equal(r.count, count);
	assert_string_equal(addr_range_format(&r, buf, sizeof buf), text);
}

static void assert_range_bad(const char *s, const char *why_part)
{
	struct addr_range r;
	const char *why = NULL;

	if (addr_range_parse(s, &r, &why) == 0)
		fail_msg("'%s' accepted", s);
	if (strstr(why, why_part) == NULL)
		fail_msg("'%s': '%s' does not say '%s'", s, why, why_part);
}

static void test_range_parse(void **state)
{
	(void)state;
	assert_range("127.0.0.2", AF_INET, "127.0.0.2", 1);
	assert_range("127.0.0.2-127.0.0.200", AF_INET, "127.0.0.2-127.0.0.200",
	             199);
	assert_range("10.0.0.255-10.0.1.0", AF_INET, "10.0.0.255-10.0.1.0", 2);
	assert_range("10.0.0.0-10.0.255.255", AF_INET, "10.0.0.0-10.0.255.255",
	             65536);
	assert_range("127.0.0.5-127.0.0.5", AF_INET, "127.0.0.5", 1);
	assert_range("::1", AF_INET6, "::1", 1);
	assert_range("[::1]", AF_INET6, "::1", 1);
	assert_range("fd00::1-fd00::20", AF_INET6, "fd00::1-fd00::20", 32);
	assert_range("[fd00::ffff]-[fd00::1:0]", AF_INET6,
	             "fd00::ffff-fd00::1:0", 2);
	assert_range("fd00::-fd00::ffff", AF_INET6, "fd00::-fd00::ffff", 65536);
	assert_range_bad("300.1.1.1", "not a valid IPv4 address");
	assert_range_bad("127.1", "not a valid IPv4 address");
	assert_range_bad("127.0.0.9-127.0.0.2", "first address is after");
	assert_range_bad("fd00::2-fd00::1", "first address is after");
	assert_range_bad("127.0.0.1-::1", "different families");
	assert_range_bad("10.0.0.0-10.1.0.0", "at most 65536");
	assert_range_bad("fd00::-fd00::1:0", "at most 65536");
	assert_range_bad("::-ffff::", "at most 65536");
	assert_range_bad("", "empty address");
	assert_range_bad("127.0.0.1-", "empty address");
	assert_range_bad("-127.0.0.1", "empty address");
	assert_range_bad("fe80::1%lo", "%scope");
	assert_range_bad("[127.0.0.1]", "brackets hold an IPv6");
	assert_range_bad("localhost", "not an IPv4 or IPv6 address");
}

/* Address k of a range, across byte carries, as bind(2) takes it. */
static void test_range_nth_and_overlap(void **state)
{
	struct addr_range a, b;
	struct sockaddr_storage ss;
	const char *why;
	char buf[ADDR_STRLEN];
	socklen_t len;

	(void)state;
	assert_int_equal(addr_range_parse("10.0.0.250-10.0.1.10", &a, &why), 0);
	len = addr_range_nth(&a, 6, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_string_equal(
	        addr_format((struct sockaddr *)&ss, len, buf, sizeof buf),
	        "10.0.1.0:0");
	assert_int_equal(addr_range_parse("fd00::fffe-fd00::1:1", &b, &why), 0);
	assert_int_equal(b.count, 4);
	len = addr_range_nth(&b, 3, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_string_equal(
	        addr_format((struct sockaddr *)&ss, len, buf, sizeof buf),
	        "[fd00::1:1]:0");
	assert_int_equal(addr_range_overlap(&a, &b), 0);
	assert_int_equal(addr_range_parse("10.0.1.10", &b, &why), 0);
	assert_int_equal(addr_range_overlap(&a, &b), 1);
	assert_int_equal(addr_range_parse("10.0.1.11-10.0.1.20", &b, &why), 0);
	assert_int_equal(addr_range_overlap(&a, &b), 0);
	assert_int_equal(addr_range_parse("10.0.0.0-10.0.0.250", &b, &why), 0);
	assert_int_equal(addr_range_overlap(&a, &b), 1);
	assert_int_equal(addr_range_overlap(&b, &a), 1);
}

static struct addrinfo *numeric_ai(const char *host)
{
	struct addrinfo hints, *res = NULL;

	memset(&hints, 0, sizeof hints);
	hints.ai_flags = AI_NUMERICHOST;
	hints.ai_socktype = SOCK_STREAM;
	assert_int_equal(getaddrinfo(host, "7", &hints, &res), 0);
	assert_null(res->ai_next);
	return res;
}

/*
 * addr_keep_family drops the other family's entries, first, last or all.
 * The lists are two of getaddrinfo's joined, which glibc frees entry by
 * entry as POSIX's sublist rule needs.
 */
static void test_keep_family(void **state)
{
	struct addrinfo *res, *v4;

	(void)state;
	res = numeric_ai("::1");
	v4 = res->ai_next = numeric_ai("127.0.0.1");
	addr_keep_family(&res, AF_INET);
	assert_ptr_equal(res, v4);
	assert_null(res->ai_next);
	res->ai_next = numeric_ai("::1");
	addr_keep_family(&res, AF_INET);
	assert_ptr_equal(res, v4);
	assert_null(res->ai_next);
	addr_keep_family(&res, AF_INET6);
	assert_null(res);
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
	        cmocka_unit_test(test_forms_same_for_listen_and_connect),
	        cmocka_unit_test(test_errors_name_the_forms),
	        cmocka_unit_test(test_invalid_literals_are_not_names),
	        cmocka_unit_test(test_dual_stack_rule),
	        cmocka_unit_test(test_strerror_is_the_system_resolver),
	        cmocka_unit_test(test_bind_list_one_port),
	        cmocka_unit_test(test_bind_list_port_taken),
	        cmocka_unit_test(test_bind_list_covered),
	        cmocka_unit_test(test_resolve_numeric),
	        cmocka_unit_test(test_parse_unix),
	        cmocka_unit_test(test_parse_unix_length),
	        cmocka_unit_test(test_format_unix),
	        cmocka_unit_test(test_unix_mode_parse),
	        cmocka_unit_test(test_resolve_unix),
	        cmocka_unit_test(test_range_parse),
	        cmocka_unit_test(test_range_nth_and_overlap),
	        cmocka_unit_test(test_keep_family),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
