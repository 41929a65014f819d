/*
 * fuzz_activation.c - the environment systemd hands a service, parsed by
 * hand: activation_parse (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and
 * notify_watchdog_parse (WATCHDOG_USEC, WATCHDOG_PID), and log_journal_stream
 * (JOURNAL_STREAM, "DEV:INODE"). The input is the
 * variables' values separated by NUL bytes; the first byte picks the
 * parser and whether a variable is unset.
 *
 * The descriptors activation_parse would take start at FUZZ_FD_START,
 * far above any this process has open, so that it never makes one of the
 * fuzzer's own descriptors close-on-exec or takes it for a socket.
 */
#include <sys/stat.h>

#include <unistd.h>

#include "forkloop/activation.h"
#include "forkloop/log.h"
#include "forkloop/notify.h"

#include "fuzz.h"

#define FUZZ_FD_START 900

static void fuzz_listen(char **v, int n, unsigned sel)
{
	static struct activation a;
	char err[256];
	int r;

	err[0] = '\0';
	r = activation_parse(n > 0 ? v[0] : NULL, n > 1 ? v[1] : NULL,
	                     n > 2 && (sel & 0x10) ? v[2] : NULL, 4242,
	                     FUZZ_FD_START, &a, err, sizeof err);
	FUZZ_CHECK(r >= -1 && r <= ACTIVATION_MAX_FDS);
	FUZZ_CHECK(r != -1 || err[0] != '\0');
	FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
	if (r > 0)
		FUZZ_CHECK(a.n == (size_t)r);
}

static void fuzz_watchdog(char **v, int n, unsigned sel)
{
	uint64_t usec = 0;
	int r;

	r = notify_watchdog_parse(n > 0 ? v[0] : NULL,
	                          n > 1 && (sel & 0x10) ? v[1] : NULL, 4242,
	                          &usec);
	FUZZ_CHECK(r >= -1 && r <= 1);
	if (r == 1)
		FUZZ_CHECK(usec > 0);
}

/* Matches only "DEV:INODE" in decimal, naming st's device and inode. */
static void fuzz_journal(char **v, int n)
{
	struct stat st;
	const char *s = n > 0 ? v[0] : NULL;
	size_t colons = 0;
	int r;

	memset(&st, 0, sizeof st);
	st.st_dev = 8;
	st.st_ino = 1234;
	r = log_journal_stream(s, &st);
	FUZZ_CHECK(r == 0 || r == 1);
	if (r == 1) {
		for (; *s != '\0'; s++) {
			FUZZ_CHECK((*s >= '0' && *s <= '9') || *s == ':');
			colons += *s == ':';
		}
		FUZZ_CHECK(colons == 1);
	}
	FUZZ_CHECK(log_journal_stream("8:1234", &st) == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *v[4], *block;
	int n;

	if (size < 1)
		return 0;
	n = fuzz_split(data + 1, size - 1, v, 3, &block);
	if (data[0] & 2)
		fuzz_journal(v, n);
	else if (data[0] & 1)
		fuzz_watchdog(v, n, data[0]);
	else
		fuzz_listen(v, n, data[0]);
	free(block);
	return 0;
}
