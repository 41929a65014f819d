/*
 * fuzz_num.c - num.c's parsers on any text and any bounds: on success the
 * value lies within [min, max]. The first 17 bytes pick the parser and the
 * bounds; the rest is the text.
 */
#include <math.h>

#include "forkloop/num.h"

#include "fuzz.h"

static uint64_t take_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t min, max, v = 0;
	double d = -1;
	char *s;

	if (size < 17)
		return 0;
	min = take_u64(data + 1);
	max = take_u64(data + 9);
	/* Small bounds now and then, so that successes are common. */
	if (data[0] & 0x10) {
		min %= 100;
		max %= 100000;
	}
	s = fuzz_strndup(data + 17, size - 17);
	switch (data[0] % 3) {
	case 0:
		if (num_parse_u64(s, min, max, &v) == 0)
			FUZZ_CHECK(v >= min && v <= max);
		break;
	case 1:
		if (num_parse_size(s, min, max, &v) == 0)
			FUZZ_CHECK(v >= min && v <= max);
		break;
	default: {
		double dmin = (double)(min % 1000000) / 1000;
		double dmax = (double)(max % 100000000) / 1000;

		if (num_parse_seconds(s, dmin, dmax, &d) == 0)
			FUZZ_CHECK(isfinite(d) && d >= dmin && d <= dmax);
		break;
	}
	}
	free(s);
	return 0;
}
