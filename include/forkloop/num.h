/*
 * num.h - strict parsing of numeric option values.
 */
#ifndef FORKLOOP_NUM_H
#define FORKLOOP_NUM_H

#include <stdint.h>

/* Decimal integer in [min, max], nothing else. Returns 0 or -1. */
int num_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Like num_parse_u64, with an optional K, M or G suffix (powers of 1024). */
int num_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Non-negative decimal seconds ("5", "0.25") in [min, max]. Returns 0 or -1. */
int num_parse_seconds(const char *s, double min, double max, double *out);

#endif
