/*
 * num.c - strict parsing of numeric option values: no signs, no trailing
 * garbage, no silent wrap-around.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forkloop/num.h"

static int parse_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = *s - '0';

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*end = s;
	*out = v;
	return 0;
}

int num_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t v;

	if (s == NULL || parse_digits(s, &end, &v) < 0 || *end != '\0')
		return -1;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int num_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t v, mult = 1;

	if (s == NULL || parse_digits(s, &end, &v) < 0)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = 1024;
		break;
	case 'm':
	case 'M':
		mult = 1024 * 1024;
		break;
	case 'g':
	case 'G':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end != '\0' && end[1] != '\0')
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	v *= mult;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int num_parse_seconds(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	if (s == NULL || !(isdigit((unsigned char)*s) || *s == '.'))
		return -1;
	/* strtod would also take hex ("0x10") and exponents. */
	if (s[strspn(s, "0123456789.")] != '\0')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
		return -1;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}
