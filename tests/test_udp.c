/*
 * test_udp.c - the UDP echo's guards, what it knows of its own addresses,
 * and its per-source rate cap.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "forkloop/udp.h"

static struct sockaddr_storage v4(const char *host, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof ss);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET, host, &sin->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *host, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof ss);
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET6, host, &sin6->sin6_addr), 1);
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static void test_guard_ports(void **state)
{
	static const unsigned bad[] = {0,  1,  6,  7,  8,   13,
	                               17, 19, 37, 53, 123, 1023};
	static const unsigned fine[] = {1024, 1025, 6666, 32768, 65535};
	struct sockaddr_storage local = v4("127.0.0.1", 6666), src;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		src = v4("10.1.2.3", bad[i]);
		assert_non_null(udp_guard(SA(src), SA(local), NULL));
		src = v6("2001:db8::1", bad[i]);
		assert_non_null(udp_guard(SA(src), SA(local), NULL));
		src = v6("::ffff:10.1.2.3", bad[i]);
		assert_non_null(udp_guard(SA(src), SA(local), NULL));
	}
	for (i = 0; i < sizeof fine / sizeof fine[0]; i++) {
		src = v4("10.1.2.3", fine[i]);
		assert_null(udp_guard(SA(src), SA(local), NULL));
		src = v6("2001:db8::1", fine[i]);
		assert_null(udp_guard(SA(src), SA(local), NULL));
	}
	src = v4("10.1.2.3", 19);
	assert_string_equal(udp_guard(SA(src), SA(local), NULL),
	                    "source port 19 (chargen)");
	src = v4("10.1.2.3", 0);
	assert_string_equal(udp_guard(SA(src), SA(local), NULL),
	                    "source port 0");
	src = v4("10.1.2.3", 53);
	assert_string_equal(udp_guard(SA(src), SA(local), NULL),
	                    "source port below 1024");
}

static void test_guard_not_unicast(void **state)
{
	static const char *const bad4[] = {"0.0.0.0", "0.1.2.3", "224.0.0.1",
	                                   "239.255.255.250",
	                                   "255.255.255.255"};
	static const char *const bad6[] = {"::", "ff02::1", "ff05::1:3",
	                                   "::ffff:224.0.0.251"};
	struct sockaddr_storage local = v4("127.0.0.1", 6666), src;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad4 / sizeof bad4[0]; i++) {
		src = v4(bad4[i], 5000);
		assert_string_equal(udp_guard(SA(src), SA(local), NULL),
		                    "not a unicast address");
	}
	for (i = 0; i < sizeof bad6 / sizeof bad6[0]; i++) {
		src = v6(bad6[i], 5000);
		assert_string_equal(udp_guard(SA(src), NULL, NULL),
		                    "not a unicast address");
	}
	src = v4("223.255.255.254", 5000);
	assert_null(udp_guard(SA(src), SA(local), NULL));
	src = v6("fe80::1", 5000);
	assert_null(udp_guard(SA(src), SA(local), NULL));
}

static void test_guard_own_address(void **state)
{
	struct sockaddr_storage local, src, dst;

	(void)state;
	local = v4("127.0.0.1", 6666);
	src = v4("127.0.0.1", 6666);
	assert_string_equal(udp_guard(SA(src), SA(local), NULL), "own address");
	src = v4("127.0.0.1", 6667);
	assert_null(udp_guard(SA(src), SA(local), NULL));
	src = v4("127.0.0.2", 6666);
	assert_null(udp_guard(SA(src), SA(local), NULL));
	src = v6("::ffff:127.0.0.1", 6666);
	assert_non_null(udp_guard(SA(src), SA(local), NULL));

	local = v6("::1", 6666);
	src = v6("::1", 6666);
	assert_non_null(udp_guard(SA(src), SA(local), NULL));
	src = v6("::1", 1234);
	assert_null(udp_guard(SA(src), SA(local), NULL));

	/* Wildcard: loopback, or the address the datagram was sent to. */
	local = v4("0.0.0.0", 6666);
	src = v4("127.0.0.5", 6666);
	assert_non_null(udp_guard(SA(src), SA(local), NULL));
	src = v4("192.0.2.7", 6666);
	assert_null(udp_guard(SA(src), SA(local), NULL));
	dst = v4("192.0.2.7", 0);
	assert_non_null(udp_guard(SA(src), SA(local), SA(dst)));
	dst = v4("192.0.2.8", 0);
	assert_null(udp_guard(SA(src), SA(local), SA(dst)));
	src = v4("192.0.2.7", 6667);
	dst = v4("192.0.2.7", 0);
	assert_null(udp_guard(SA(src), SA(local), SA(dst)));

	local = v6("::", 6666);
	src = v6("::1", 6666);
	assert_non_null(udp_guard(SA(src), SA(local), NULL));
	src = v6("::ffff:127.0.0.1", 6666);
	assert_non_null(udp_guard(SA(src), SA(local), NULL));
	src = v6("2001:db8::9", 6666);
	dst = v6("2001:db8::9", 0);
	assert_non_null(udp_guard(SA(src), SA(local), SA(dst)));
	assert_null(udp_guard(SA(src), SA(local), NULL));
}

/* A non-blocking datagram socket bound to host:port (port 0: any). */
static int bound(const char *host, unsigned port, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof *ss;
	int fd;

	*ss = strchr(host, ':') != NULL ? v6(host, port) : v4(host, port);
	fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	            0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, SA(*ss),
	                      ss->ss_family == AF_INET
	                              ? sizeof(struct sockaddr_in)
	                              : sizeof(struct sockaddr_in6)),
	                 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)ss, &len), 0);
	return fd;
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void test_serves_every_socket(void **state)
{
	struct event_base *base = event_base_new();
	struct udp_echo *u;
	struct sockaddr_storage a, b, w, s;
	char err[256];

	(void)state;
	assert_non_null(base);
	u = udp_echo_new(base, 0);
	assert_non_null(u);
	assert_int_equal(
	        udp_echo_add(u, bound("127.0.0.1", 0, &a), err, sizeof err), 0);
	assert_int_equal(
	        udp_echo_add(u, bound("127.0.0.1", 0, &b), err, sizeof err), 0);
	/* Each socket, whichever received the datagram. */
	assert_true(udp_echo_serves(u, SA(a)));
	assert_true(udp_echo_serves(u, SA(b)));
	s = v6("::ffff:127.0.0.1", port_of(&b));
	assert_true(udp_echo_serves(u, SA(s)));
	/* Not another address on a specific socket's port. */
	s = v4("127.0.0.2", port_of(&a));
	assert_false(udp_echo_serves(u, SA(s)));
	s = v4("127.0.0.1", port_of(&a) == 65535 ? 65534 : port_of(&a) + 1);
	if (port_of(&s) != port_of(&b))
		assert_false(udp_echo_serves(u, SA(s)));

	/* A wildcard socket: its port on loopback and on the host's own. */
	assert_int_equal(
	        udp_echo_add(u, bound("0.0.0.0", 0, &w), err, sizeof err), 0);
	s = v4("127.0.0.1", port_of(&w));
	assert_true(udp_echo_serves(u, SA(s)));
	s = v4("127.45.6.7", port_of(&w));
	assert_true(udp_echo_serves(u, SA(s)));
	/* TEST-NET-2 (RFC 5737) is no host's address. */
	s = v4("198.51.100.1", port_of(&w));
	assert_false(udp_echo_serves(u, SA(s)));
	/* IPv4 wildcard: not IPv6. */
	s = v6("::1", port_of(&w));
	assert_false(udp_echo_serves(u, SA(s)));

	udp_echo_stop(u);
	assert_false(udp_echo_serves(u, SA(a)));
	udp_echo_free(u);
	event_base_free(base);
}

static void test_rate_caps_each_source(void **state)
{
	struct udp_rate *r = udp_rate_new(3);
	struct sockaddr_storage a = v4("192.0.2.1", 1000);
	struct sockaddr_storage a2 = v4("192.0.2.1", 2000);
	struct sockaddr_storage b = v4("192.0.2.2", 1000);
	struct sockaddr_storage c = v6("2001:db8::1", 1000);
	const char *why = NULL;
	double t = 1000.0;

	(void)state;
	assert_non_null(r);
	assert_true(udp_rate_allow(r, SA(a), t, NULL));
	assert_true(udp_rate_allow(r, SA(a), t, NULL));
	/* Keyed by address, not port. */
	assert_true(udp_rate_allow(r, SA(a2), t, NULL));
	assert_false(udp_rate_allow(r, SA(a), t, &why));
	assert_string_equal(why, "rate limit");
	assert_false(udp_rate_allow(r, SA(a), t + 0.5, NULL));
	assert_false(udp_rate_allow(r, SA(a), t + 0.99, NULL));
	/* Others are not affected. */
	for (int i = 0; i < 3; i++) {
		assert_true(udp_rate_allow(r, SA(b), t + 0.5, NULL));
		assert_true(udp_rate_allow(r, SA(c), t + 0.5, NULL));
	}
	assert_false(udp_rate_allow(r, SA(b), t + 0.5, NULL));
	assert_false(udp_rate_allow(r, SA(c), t + 0.5, NULL));
	/* A second later, a's allowance is back, and only that. */
	for (int i = 0; i < 3; i++)
		assert_true(udp_rate_allow(r, SA(a), t + 1.15, NULL));
	assert_false(udp_rate_allow(r, SA(a), t + 1.15, NULL));
	/* Never more than the rate, however long the pause. */
	t += 3600;
	for (int i = 0; i < 3; i++)
		assert_true(udp_rate_allow(r, SA(a), t, NULL));
	assert_false(udp_rate_allow(r, SA(a), t, NULL));
	udp_rate_free(r);
}

/* At most rate replies in any one second, the first one included. */
static void test_rate_holds_in_any_second(void **state)
{
	struct sockaddr_storage a = v4("192.0.2.1", 1000);
	double times[400];
	size_t n = 0, lo = 0;
	struct udp_rate *r;

	(void)state;
	r = udp_rate_new(10);
	assert_non_null(r);
	/* 100 datagrams spread evenly over one second: 10 answered. */
	for (int i = 0; i < 100; i++)
		if (udp_rate_allow(r, SA(a), 50.003 + i * 0.01, NULL))
			times[n++] = 50.003 + i * 0.01;
	assert_int_equal(n, 10);
	/* Then three more seconds of it: 10 in any window of one second. */
	for (int i = 100; i < 400; i++)
		if (udp_rate_allow(r, SA(a), 50.003 + i * 0.01, NULL))
			times[n++] = 50.003 + i * 0.01;
	for (size_t hi = 0; hi < n; hi++) {
		while (times[hi] - times[lo] >= 1.0 - 1e-9)
			lo++;
		assert_true(hi - lo + 1 <= 10);
	}
	/* And about that many: at most 10% below the rate. */
	assert_true(n >= 36);
	udp_rate_free(r);
}

static void test_rate_table_keeps_capped_sources(void **state)
{
	struct udp_rate *r = udp_rate_new(1);
	struct sockaddr_storage capped = v4("192.0.2.1", 5000), s;
	struct sockaddr_in *sin = (struct sockaddr_in *)&s;
	const char *why = NULL;
	unsigned allowed = 0;
	double t = 10.0;

	(void)state;
	assert_non_null(r);
	assert_true(udp_rate_allow(r, SA(capped), t, NULL));
	assert_false(udp_rate_allow(r, SA(capped), t, NULL));
	/* Far more sources than slots, within the same second. */
	s = v4("10.0.0.0", 5000);
	for (uint32_t i = 0; i < 4 * UDP_RATE_SLOTS; i++) {
		sin->sin_addr.s_addr = htonl(0x0a000000u + i);
		allowed +=
		        (unsigned)udp_rate_allow(r, SA(s), t + i * 1e-5, NULL);
	}
	/* Those that found room; the rest were refused, not swapped in. */
	assert_int_equal(allowed, UDP_RATE_SLOTS - 1);
	sin->sin_addr.s_addr = htonl(0x0b000000u);
	assert_false(udp_rate_allow(r, SA(s), t + 0.5, &why));
	assert_string_equal(why, "rate table full");
	/* The capped source is still tracked and still capped. */
	assert_false(udp_rate_allow(r, SA(capped), t + 0.5, &why));
	assert_string_equal(why, "rate limit");
	/* A source seen a moment ago too. */
	sin->sin_addr.s_addr = htonl(0x0a000000u + 5);
	assert_false(udp_rate_allow(r, SA(s), t + 0.5, NULL));
	/* Once their second is over, their places go to new sources. */
	sin->sin_addr.s_addr = htonl(0x0b000000u);
	assert_true(udp_rate_allow(r, SA(s), t + 1.5, NULL));
	assert_true(udp_rate_allow(r, SA(capped), t + 1.5, NULL));
	assert_false(udp_rate_allow(r, SA(capped), t + 1.5, NULL));
	udp_rate_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_guard_ports),
	        cmocka_unit_test(test_guard_not_unicast),
	        cmocka_unit_test(test_guard_own_address),
	        cmocka_unit_test(test_serves_every_socket),
	        cmocka_unit_test(test_rate_caps_each_source),
	        cmocka_unit_test(test_rate_holds_in_any_second),
	        cmocka_unit_test(test_rate_table_keeps_capped_sources),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
