/*
 * test_udp.c - the UDP echo's guards and its per-source rate cap.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

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
	static const unsigned bad[] = {0, 7, 13, 17, 19, 37};
	static const unsigned fine[] = {1, 6, 8, 18, 20, 53, 123, 1024, 65535};
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

static void test_rate_caps_each_source(void **state)
{
	struct udp_rate *r = udp_rate_new(3);
	struct sockaddr_storage a = v4("192.0.2.1", 1000);
	struct sockaddr_storage a2 = v4("192.0.2.1", 2000);
	struct sockaddr_storage b = v4("192.0.2.2", 1000);
	struct sockaddr_storage c = v6("2001:db8::1", 1000);
	double t = 1000.0;

	(void)state;
	assert_non_null(r);
	/* A burst of 3, then nothing until tokens come back. */
	assert_true(udp_rate_allow(r, SA(a), t));
	assert_true(udp_rate_allow(r, SA(a), t));
	/* Keyed by address, not port. */
	assert_true(udp_rate_allow(r, SA(a2), t));
	assert_false(udp_rate_allow(r, SA(a), t));
	assert_false(udp_rate_allow(r, SA(a), t + 0.1));
	/* Others are not affected. */
	for (int i = 0; i < 3; i++) {
		assert_true(udp_rate_allow(r, SA(b), t));
		assert_true(udp_rate_allow(r, SA(c), t));
	}
	assert_false(udp_rate_allow(r, SA(b), t));
	assert_false(udp_rate_allow(r, SA(c), t));
	/* One token per third of a second. */
	assert_true(udp_rate_allow(r, SA(a), t + 0.34));
	assert_false(udp_rate_allow(r, SA(a), t + 0.35));
	/* Never more than the burst, however long the pause. */
	t += 3600;
	for (int i = 0; i < 3; i++)
		assert_true(udp_rate_allow(r, SA(a), t));
	assert_false(udp_rate_allow(r, SA(a), t));
	udp_rate_free(r);
}

static void test_rate_table_is_bounded(void **state)
{
	struct udp_rate *r = udp_rate_new(1);
	struct sockaddr_storage s;
	struct sockaddr_in *sin = (struct sockaddr_in *)&s;
	unsigned allowed = 0;

	(void)state;
	assert_non_null(r);
	s = v4("10.0.0.0", 5000);
	/* Far more sources than slots: each new one gets a fresh bucket. */
	for (uint32_t i = 0; i < 8 * UDP_RATE_SLOTS; i++) {
		sin->sin_addr.s_addr = htonl(0x0a000000u + i);
		allowed += (unsigned)udp_rate_allow(r, SA(s), 1.0 + i * 1e-6);
	}
	assert_int_equal(allowed, 8 * UDP_RATE_SLOTS);
	/* A source seen just now is still tracked and still capped. */
	assert_false(udp_rate_allow(r, SA(s), 1.0 + 8 * UDP_RATE_SLOTS * 1e-6));
	udp_rate_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_guard_ports),
	        cmocka_unit_test(test_guard_own_address),
	        cmocka_unit_test(test_rate_caps_each_source),
	        cmocka_unit_test(test_rate_table_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
