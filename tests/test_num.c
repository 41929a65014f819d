/*
 * test_num.c - num_parse_u64, num_parse_size and num_parse_seconds: every
 * accepted form, and signs, overflow, suffixes, junk and ranges rejected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "forkloop/num.h"

#define KIB UINT64_C(1024)

static void u64_ok(const char *s, uint64_t min, uint64_t max, uint64_t want)
{
	uint64_t v = 12345;

	if (num_parse_u64(s, min, max, &v) != 0)
		fail_msg("num_parse_u64 rejected '%s'", s);
	assert_true(v == want);
}

static void u64_bad(const char *s, uint64_t min, uint64_t max)
{
	uint64_t v = 12345;

	if (num_parse_u64(s, min, max, &v) == 0)
		fail_msg("num_parse_u64 accepted '%s'", s != NULL ? s : "NULL");
}

static void size_ok(const char *s, uint64_t min, uint64_t max, uint64_t want)
{
	uint64_t v = 12345;

	if (num_parse_size(s, min, max, &v) != 0)
		fail_msg("num_parse_size rejected '%s'", s);
	assert_true(v == want);
}

static void size_bad(const char *s, uint64_t min, uint64_t max)
{
	uint64_t v = 12345;

	if (num_parse_size(s, min, max, &v) == 0)
		fail_msg("num_parse_size accepted '%s'",
		         s != NULL ? s : "NULL");
}

static void sec_ok(const char *s, double min, double max, double want)
{
	double v = -1;

	if (num_parse_seconds(s, min, max, &v) != 0)
		fail_msg("num_parse_seconds rejected '%s'", s);
	assert_true(v == want);
}

static void sec_bad(const char *s, double min, double max)
{
	double v = -1;

	if (num_parse_seconds(s, min, max, &v) == 0)
		fail_msg("num_parse_seconds accepted '%s' as %g",
		         s != NULL ? s : "NULL", v);
}

static void test_u64_accepts(void **state)
{
	(void)state;
	u64_ok("0", 0, UINT64_MAX, 0);
	u64_ok("1", 0, UINT64_MAX, 1);
	u64_ok("010", 0, UINT64_MAX, 10);
	u64_ok("4294967295", 0, UINT64_MAX, UINT32_MAX);
	u64_ok("18446744073709551615", 0, UINT64_MAX, UINT64_MAX);
}

static void test_u64_overflow(void **state)
{
	(void)state;
	u64_bad("18446744073709551616", 0, UINT64_MAX);
	u64_bad("18446744073709551620", 0, UINT64_MAX);
	u64_bad("99999999999999999999", 0, UINT64_MAX);
	u64_bad("184467440737095516150", 0, UINT64_MAX);
}

static void test_u64_signs_and_junk(void **state)
{
	static const char *const bad[] = {
	        "",     "-1",  "-0",  "+1",  " 1",  "1 ",  "1x",  "1K",
	        "0x10", "1.0", "1e3", "one", "\t1", "1\n", "--1",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		u64_bad(bad[i], 0, UINT64_MAX);
	u64_bad(NULL, 0, UINT64_MAX);
}

static void test_u64_range(void **state)
{
	(void)state;
	u64_ok("1", 1, 10, 1);
	u64_ok("10", 1, 10, 10);
	u64_bad("0", 1, 10);
	u64_bad("11", 1, 10);
	u64_ok("4294967295", 1, UINT32_MAX, UINT32_MAX);
	u64_bad("4294967296", 1, UINT32_MAX);
}

static void test_size_suffixes(void **state)
{
	(void)state;
	size_ok("0", 0, UINT64_MAX, 0);
	size_ok("1", 0, UINT64_MAX, 1);
	size_ok("262144", 0, UINT64_MAX, 256 * KIB);
	size_ok("256K", 0, UINT64_MAX, 256 * KIB);
	size_ok("256k", 0, UINT64_MAX, 256 * KIB);
	size_ok("1M", 0, UINT64_MAX, KIB * KIB);
	size_ok("3m", 0, UINT64_MAX, 3 * KIB * KIB);
	size_ok("1G", 0, UINT64_MAX, KIB * KIB * KIB);
	size_ok("2g", 0, UINT64_MAX, 2 * KIB * KIB * KIB);
	size_ok("0K", 0, UINT64_MAX, 0);
}

static void test_size_bad_forms(void **state)
{
	static const char *const bad[] = {
	        "",    "K",   "k",   "-1", "-1K", "+1K",  " 1K",  "1K ", "1 K",
	        "1KB", "1KK", "1Kx", "1T", "1b",  "1.5K", "0x10", "1e3", "M1",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		size_bad(bad[i], 0, UINT64_MAX);
	size_bad(NULL, 0, UINT64_MAX);
}

static void test_size_overflow(void **state)
{
	(void)state;
	size_ok("18446744073709551615", 0, UINT64_MAX, UINT64_MAX);
	size_bad("18446744073709551616", 0, UINT64_MAX);
	/* 2^64 after the multiplication: must not wrap to 0. */
	size_bad("17179869184G", 0, UINT64_MAX);
	size_ok("17179869183G", 0, UINT64_MAX,
	        UINT64_C(17179869183) * KIB * KIB * KIB);
	size_bad("17592186044416M", 0, UINT64_MAX);
	size_bad("18014398509481984K", 0, UINT64_MAX);
	/* Would wrap to a small number if multiplied blindly. */
	size_bad("18014398509481985K", 0, UINT64_MAX);
}

static void test_size_range(void **state)
{
	(void)state;
	size_ok("1024G", 1, UINT64_C(1) << 40, UINT64_C(1) << 40);
	size_bad("1025G", 1, UINT64_C(1) << 40);
	size_bad("0", 1, UINT64_C(1) << 40);
	size_bad("0K", 1, UINT64_C(1) << 40);
	size_ok("1", 1, UINT64_C(1) << 40, 1);
	/* The range applies after the suffix. */
	size_bad("2K", 1, 2000);
	size_ok("1K", 1, 2000, 1024);
}

static void test_seconds_accepts(void **state)
{
	(void)state;
	sec_ok("0", 0, 1e7, 0.0);
	sec_ok("5", 0, 1e7, 5.0);
	sec_ok("0.25", 0, 1e7, 0.25);
	sec_ok(".5", 0, 1e7, 0.5);
	sec_ok("5.", 0, 1e7, 5.0);
	sec_ok("0.5", 0, 1e7, 0.5);
	sec_ok("10000000", 0, 1e7, 1e7);
}

static void test_seconds_bad_forms(void **state)
{
	static const char *const bad[] = {
	        "",         ".",    "-1",    "-0.5",  "+1",  " 1",
	        "1 ",       "1s",   "1,5",   "1.2.3", "inf", "nan",
	        "infinity", "0x10", "0x1p3", "1e3",   "one", "1\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		sec_bad(bad[i], 0, 1e7);
	sec_bad(NULL, 0, 1e7);
}

static void test_seconds_range(void **state)
{
	(void)state;
	sec_bad("10000001", 0, 1e7);
	sec_bad("1e400", 0, 1e7);
	sec_bad("99999999999999999999999999999999999999999999999999999999999999"
	        "99999999999999999999999999999999999999999999999999999999999999"
	        "99999999999999999999999999999999999999999999999999999999999999"
	        "99999999999999999999999999999999999999999999999999999999999999"
	        "99999999999999999999999999999999999999999999999999999999999999"
	        "9",
	        0, 1e7);
	sec_ok("1", 1, 2, 1.0);
	sec_ok("2", 1, 2, 2.0);
	sec_bad("0.999", 1, 2);
	sec_bad("2.001", 1, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_u64_accepts),
	        cmocka_unit_test(test_u64_overflow),
	        cmocka_unit_test(test_u64_signs_and_junk),
	        cmocka_unit_test(test_u64_range),
	        cmocka_unit_test(test_size_suffixes),
	        cmocka_unit_test(test_size_bad_forms),
	        cmocka_unit_test(test_size_overflow),
	        cmocka_unit_test(test_size_range),
	        cmocka_unit_test(test_seconds_accepts),
	        cmocka_unit_test(test_seconds_bad_forms),
	        cmocka_unit_test(test_seconds_range),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
