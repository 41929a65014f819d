/*
 * fuzz_addr.c - addr.c's parsers on any bytes: addr_parse with each set of
 * flags the programs use, addr_range_parse, addr_unix_mode_parse, and
 * addr_format on any socket address. The first byte picks which; the rest
 * is the text. What parsed is formatted and parsed again where the header
 * promises a round trip.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "forkloop/addr.h"

#include "fuzz.h"

/* The flags of every addr_parse call in the programs. */
static const int flag_sets[] = {
        ADDR_LISTEN | ADDR_TLS | ADDR_UNIX,  /* --listen */
        ADDR_CONNECT | ADDR_TLS | ADDR_UNIX, /* a target */
        ADDR_LISTEN,                         /* --metrics */
        ADDR_CONNECT,
};

/* Every byte addr_format writes prints: escapes stand for the others. */
static void check_printable(const char *s)
{
	for (; *s != '\0'; s++)
		FUZZ_CHECK(isprint((unsigned char)*s));
}

static void fuzz_parse(const char *s, int flags)
{
	struct addr a, b;
	const char *why = NULL;
	char buf[ADDR_STRLEN];

	if (addr_parse(s, flags, &a, &why) < 0) {
		FUZZ_CHECK(why != NULL);
		return;
	}
	FUZZ_CHECK(a.unix_mode == -1);
	if (a.is_unix) {
		struct sockaddr_un su;
		socklen_t len;
		size_t n = strlen(a.path);

		FUZZ_CHECK(flags & ADDR_UNIX);
		FUZZ_CHECK(!a.tls);
		/* "/" is a path; "@" alone would be an empty name. A
		 * name has up to ADDR_UNIXLEN - 1 bytes after its '@'. */
		if (a.path[0] == '/')
			FUZZ_CHECK(n < ADDR_UNIXLEN);
		else
			FUZZ_CHECK(a.path[0] == '@' && n >= 2 &&
			           n <= ADDR_UNIXLEN);
		len = addr_unix_sockaddr(&a, &su);
		FUZZ_CHECK(len <= sizeof su);
		addr_format((struct sockaddr *)&su, len, buf, sizeof buf);
		check_printable(buf);
		addr_spec_format(&a, buf, sizeof buf);
		FUZZ_CHECK(addr_parse(buf, flags, &b, &why) == 0);
		FUZZ_CHECK(b.is_unix && strcmp(a.path, b.path) == 0);
		return;
	}
	FUZZ_CHECK(addr_port_valid(a.port));
	if (flags & ADDR_CONNECT)
		FUZZ_CHECK(a.host[0] != '\0' && strcmp(a.port, "0") != 0);
	if (!(flags & ADDR_TLS))
		FUZZ_CHECK(!a.tls);
	if (a.host[0] == '\0')
		return;
	/* "HOST:PORT" or "[V6]:PORT" reads back as what was parsed. */
	addr_spec_format(&a, buf, sizeof buf);
	FUZZ_CHECK(addr_parse(buf, flags & ~ADDR_UNIX, &b, &why) == 0);
	FUZZ_CHECK(strcmp(a.host, b.host) == 0);
	FUZZ_CHECK(strcmp(a.port, b.port) == 0);
}

static void fuzz_range(const char *s)
{
	struct addr_range r, r2;
	struct sockaddr_storage ss;
	const char *why = NULL;
	char buf[ADDR_RANGE_STRLEN];

	if (addr_range_parse(s, &r, &why) < 0) {
		FUZZ_CHECK(why != NULL);
		return;
	}
	FUZZ_CHECK(r.family == AF_INET || r.family == AF_INET6);
	FUZZ_CHECK(r.count >= 1 && r.count <= ADDR_RANGE_MAX);
	FUZZ_CHECK(addr_range_nth(&r, r.count - 1, &ss) > 0);
	FUZZ_CHECK(ss.ss_family == r.family);
	FUZZ_CHECK(addr_range_overlap(&r, &r));
	addr_range_format(&r, buf, sizeof buf);
	FUZZ_CHECK(addr_range_parse(buf, &r2, &why) == 0);
	FUZZ_CHECK(r2.family == r.family && r2.count == r.count);
	FUZZ_CHECK(memcmp(r2.first, r.first, sizeof r.first) == 0);
}

static void fuzz_mode(const char *s)
{
	int mode = -2;

	if (addr_unix_mode_parse(s, &mode) == 0)
		FUZZ_CHECK(mode >= 0 && mode <= 0777);
}

/* Any bytes as a socket address of the family the first byte picks. */
static void fuzz_format(const uint8_t *p, size_t n)
{
	struct sockaddr_storage ss;
	char buf[ADDR_STRLEN];
	socklen_t len;
	static const sa_family_t fam[] = {AF_UNIX, AF_INET, AF_INET6,
	                                  AF_UNSPEC};

	if (n < 1)
		return;
	memset(&ss, 0, sizeof ss);
	len = (socklen_t)(n - 1 > sizeof ss ? sizeof ss : n - 1);
	memcpy(&ss, p + 1, len);
	ss.ss_family = fam[p[0] % 4];
	if (len < sizeof(sa_family_t))
		len = sizeof(sa_family_t);
	if (fam[p[0] % 4] == AF_UNIX && len > sizeof(struct sockaddr_un))
		len = sizeof(struct sockaddr_un);
	addr_format((struct sockaddr *)&ss, len, buf, sizeof buf);
	FUZZ_CHECK(strlen(buf) < sizeof buf);
	check_printable(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	if (data[0] % 8 == 7) {
		fuzz_format(data + 1, size - 1);
		return 0;
	}
	s = fuzz_strndup(data + 1, size - 1);
	switch (data[0] % 8) {
	case 4:
		fuzz_range(s);
		break;
	case 5:
	case 6:
		fuzz_mode(s);
		break;
	default:
		fuzz_parse(s, flag_sets[data[0] % 4]);
		break;
	}
	free(s);
	return 0;
}
