/*
 * fuzz.h - what the libFuzzer targets share: input turned into C strings,
 * and a check that stops the run with the input saved when a property of
 * the code under test does not hold.
 */
#ifndef FORKLOOP_FUZZ_H
#define FORKLOOP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failed property is a finding, as a crash is: abort with its place. */
#define FUZZ_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: property failed: %s\n",        \
			        __FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

/* The n bytes at p as a string (cut at a NUL byte); free it. */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/*
 * Split the n bytes at p at NUL bytes into at most max strings (bytes
 * after the max-th are ignored); out gets max + 1 pointers, NULL-ended,
 * and the strings live in one block stored in *block. Returns the count.
 */
static inline int fuzz_split(const uint8_t *p, size_t n, char **out, int max,
                             char **block)
{
	char *s = fuzz_strndup(p, n);
	int k = 0;
	size_t i = 0;

	*block = s;
	while (k < max && i <= n) {
		out[k++] = s + i;
		i += strlen(s + i) + 1;
	}
	out[k] = NULL;
	return k;
}

#endif
