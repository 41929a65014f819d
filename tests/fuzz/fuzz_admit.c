/*
 * fuzz_admit.c - the admission rules (admit.c) from any option values:
 * admit_option for each --allow/--deny/... option, the --allow-file and
 * --deny-file parser on any file contents (written to a file in a
 * directory of this process's own), admit_finish, then verdicts on
 * addresses from the input. The input is a list of records: an option
 * byte, a length byte and that many bytes of argument (or file); the
 * bytes left are peers, 17 each: a family byte and an address.
 *
 * Properties: a refused option leaves a message; admit_conn never admits
 * an IP peer that admit_check_addr denies, and refuses only for a reason
 * the rules given can have.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include "forkloop/admit.h"

#include "fuzz.h"

static char file_dir[32], file_path[64];

/* The list file and its directory go when the run ends. */
static void remove_file(void)
{
	unlink(file_path);
	rmdir(file_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(file_dir, sizeof file_dir, "/tmp/fuzz-admit-XXXXXX");
	if (mkdtemp(file_dir) == NULL)
		abort();
	snprintf(file_path, sizeof file_path, "%s/list", file_dir);
	atexit(remove_file);
	return 0;
}

static void write_file(const uint8_t *p, size_t n)
{
	int fd =
	        open(file_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

/* Returns what admit_option did: 1 taken, -1 refused, 0 skipped. */
static int take_option(struct admit *a, int opt, const uint8_t *p, size_t n)
{
	char err[512], *arg;
	int r;

	if (opt == ADMIT_OPT_ALLOW_FILE || opt == ADMIT_OPT_DENY_FILE) {
		write_file(p, n);
		arg = fuzz_strndup((const uint8_t *)file_path,
		                   strlen(file_path));
	} else {
		arg = fuzz_strndup(p, n);
	}
	/* A table of millions of entries only costs memory: cap it. */
	if (opt == ADMIT_OPT_TABLE && strlen(arg) > 5) {
		free(arg);
		return 0;
	}
	err[0] = '\0';
	r = admit_option(a, opt, arg, err, sizeof err);
	FUZZ_CHECK(r == 1 || (r == -1 && err[0] != '\0'));
	free(arg);
	return r;
}

static void check_peer(struct admit *a, const uint8_t *p, double now)
{
	struct sockaddr_storage ss;
	struct admit_ticket t;
	socklen_t len;
	enum admit_why acl, why;

	memset(&ss, 0, sizeof ss);
	if (p[0] & 1) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, p + 1, 16);
		/* IPv4-mapped now and then (RFC 4291 section 2.5.5.2). */
		if (p[0] & 2) {
			memset(&s6->sin6_addr, 0, 10);
			memset((char *)&s6->sin6_addr + 10, 0xff, 2);
		}
		len = sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, p + 1, 4);
		len = sizeof *s4;
	}
	acl = admit_check_addr(a, (struct sockaddr *)&ss, len);
	FUZZ_CHECK(acl == ADMIT_OK || acl == ADMIT_DENIED);
	why = admit_conn(a, -1, (struct sockaddr *)&ss, len, now, &t);
	FUZZ_CHECK(why < ADMIT_NWHY && why != ADMIT_UID);
	if (acl == ADMIT_DENIED)
		FUZZ_CHECK(why == ADMIT_DENIED);
	if (why == ADMIT_OK)
		admit_release(a, &t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct admit *a = admit_new();
	char err[512];
	size_t i = 0;
	int records = 0;
	unsigned given = 0; /* the options taken, bit (opt - ADMIT_OPT_BASE) */

	if (a == NULL)
		abort();
	while (i + 2 <= size && records++ < 16) {
		int opt = ADMIT_OPT_BASE + data[i] % 10;
		size_t n = data[i + 1];

		if (data[i] >= 0xf0) { /* the end of the options */
			i++;
			break;
		}
		i += 2;
		if (n > size - i)
			n = size - i;
		if (take_option(a, opt, data + i, n) == 1)
			given |= 1u << (opt - ADMIT_OPT_BASE);
		i += n;
	}
	/*
	 * Limits without --source-table get a table of 64 entries, not
	 * ADMIT_DEFAULT_TABLE: allocating that for every input slows the run
	 * tenfold, and a small table fills up (ADMIT_TABLE_FULL).
	 */
	if ((given & (1u << (ADMIT_OPT_PER_SOURCE - ADMIT_OPT_BASE) |
	              1u << (ADMIT_OPT_RATE - ADMIT_OPT_BASE))) &&
	    !(given & 1u << (ADMIT_OPT_TABLE - ADMIT_OPT_BASE)))
		take_option(a, ADMIT_OPT_TABLE, (const uint8_t *)"64", 2);
	err[0] = '\0';
	if (admit_finish(a, err, sizeof err) == 0) {
		for (int k = 0; i + 17 <= size && k < 64; i += 17, k++)
			check_peer(a, data + i, k * 0.01);
	}
	admit_free(a);
	return 0;
}
