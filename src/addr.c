/*
 * addr.c - parse the address forms every program takes (addr.h), resolve
 * them with the system's getaddrinfo(3), and print socket addresses the way
 * users type them. Unix addresses (unix(7)) take the same paths, without
 * the resolver.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "forkloop/addr.h"

int addr_port_valid(const char *s)
{
	size_t len = strlen(s);
	unsigned long v = 0;

	if (len == 0 || len > 5)
		return 0;
	for (; *s != '\0'; s++) {
		if (!isdigit((unsigned char)*s))
			return 0;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	return v <= 65535;
}

/* Does getaddrinfo take host as a numeric address of family? */
static int addr_numeric(const char *host, int family)
{
	struct addrinfo hints, *res = NULL;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = family;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return 0;
	freeaddrinfo(res);
	return 1;
}

/*
 * A host the resolver would read as an IPv4 address must be one in the
 * dotted-decimal form inet_pton(3) takes: four numbers from 0 to 255,
 * without leading zeros. Digits and dots alone are never a host name (RFC
 * 1123 section 2.1: a top-level label is not all digits), and getaddrinfo
 * reads what inet_aton(3) takes as a number before it asks any name
 * service, in forms that do not look like what they mean: "010.0.0.1" is
 * octal, 8.0.0.1; "127.1" and "2130706433" are 127.0.0.1; "0x7f.1" is hex.
 * Returns 1 if host is such a number but not a dotted quad.
 */
static int addr_bad_ipv4(const char *host)
{
	struct in_addr a;
	int digits_dots;

	digits_dots = host[0] != '\0' &&
	              host[strspn(host, "0123456789.")] == '\0';
	if (!digits_dots && inet_aton(host, &a) == 0)
		return 0;
	return inet_pton(AF_INET, host, &a) != 1;
}

int addr_set(const char *host, const char *port, struct addr *out,
             const char **why)
{
	if (strlen(host) >= sizeof out->host) {
		*why = "host name too long";
		return -1;
	}
	if (!addr_port_valid(port)) {
		*why = "port must be a number from 0 to 65535";
		return -1;
	}
	if (addr_bad_ipv4(host)) {
		*why = "not a valid IPv4 address (four numbers from 0 to 255, "
		       "no leading zeros)";
		return -1;
	}
	if (strchr(host, ':') != NULL && !addr_numeric(host, AF_INET6)) {
		*why = "not a valid IPv6 address";
		return -1;
	}
	memset(out, 0, sizeof *out);
	memcpy(out->host, host, strlen(host) + 1);
	memcpy(out->port, port, strlen(port) + 1);
	return 0;
}

/* "[IPV6]:PORT": the host between the brackets, the port after them. */
static int addr_split_bracket(const char *spec, char *host, const char **port,
                              const char **why)
{
	const char *close = strchr(spec, ']');
	size_t hlen;

	if (close == NULL) {
		*why = "missing ']' after the IPv6 address: "
		       "expected [IPV6]:PORT";
		return -1;
	}
	if (close[1] != ':') {
		*why = "expected ':PORT' after ']': [IPV6]:PORT";
		return -1;
	}
	hlen = (size_t)(close - spec - 1);
	if (hlen == 0 || memchr(spec + 1, ':', hlen) == NULL) {
		*why = "brackets hold an IPv6 address: [IPV6]:PORT";
		return -1;
	}
	if (hlen >= ADDR_HOSTLEN) {
		*why = "host name too long";
		return -1;
	}
	memcpy(host, spec + 1, hlen);
	host[hlen] = '\0';
	*port = close + 2;
	return 0;
}

/* "HOST:PORT", or a PORT alone where flags allow it. */
static int addr_split_colon(const char *spec, int flags, char *host,
                            const char **port, const char **why)
{
	const char *colon = strrchr(spec, ':');
	size_t hlen;

	if (colon == NULL) {
		if (!(flags & ADDR_LISTEN)) {
			*why = addr_port_valid(spec)
			               ? "a PORT alone is for listening; "
			                 "expected " ADDR_FORMS_CONNECT
			               : "expected " ADDR_FORMS_CONNECT;
			return -1;
		}
		if (!addr_port_valid(spec)) {
			*why = "expected " ADDR_FORMS_LISTEN
			       " (a port is a number from 0 to 65535)";
			return -1;
		}
		host[0] = '\0';
		*port = spec;
		return 0;
	}
	if (memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
		*why = "write an IPv6 address in brackets, as "
		       "[ADDR]:PORT";
		return -1;
	}
	hlen = (size_t)(colon - spec);
	if (hlen == 0) {
		*why = (flags & ADDR_LISTEN)
		               ? "empty HOST before ':'; expected " ADDR_FORMS_LISTEN
		               : "empty HOST before ':'; expected " ADDR_FORMS_CONNECT;
		return -1;
	}
	if (hlen >= ADDR_HOSTLEN) {
		*why = "host name too long";
		return -1;
	}
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	*port = colon + 1;
	return 0;
}

/*
 * What follows "unix:": "/PATH" or "@NAME", each at most ADDR_UNIXLEN - 1
 * bytes (sun_path holds the path and its NUL, or a NUL and the name;
 * unix(7)). A relative path is refused: the daemon and its clients would
 * have to agree on a working directory.
 */
static int addr_parse_unix(const char *rest, struct addr *out,
                           const char **why)
{
	size_t len = strlen(rest);

	if (rest[0] != '/' && rest[0] != '@') {
		*why = "expected " ADDR_FORMS_UNIX
		       " (an absolute path, or @ and an abstract name)";
		return -1;
	}
	if (rest[0] == '@' && len == 1) {
		*why = "empty abstract name: expected unix:@NAME";
		return -1;
	}
	/* 107: Linux's sun_path is 108 bytes. */
	if (rest[0] == '/' && len > ADDR_UNIXLEN - 1) {
		*why = "path longer than 107 bytes (sun_path, unix(7))";
		return -1;
	}
	if (rest[0] == '@' && len - 1 > ADDR_UNIXLEN - 1) {
		*why = "abstract name longer than 107 bytes (sun_path, "
		       "unix(7))";
		return -1;
	}
	memset(out, 0, sizeof *out);
	memcpy(out->path, rest, len + 1);
	out->is_unix = 1;
	out->unix_mode = -1;
	return 0;
}

/* Does spec start with "unix:" followed by what only a Unix address has? */
static int addr_has_unix_prefix(const char *spec)
{
	size_t n = strlen(ADDR_UNIX_PREFIX);

	return strncasecmp(spec, ADDR_UNIX_PREFIX, n) == 0 &&
	       (spec[n] == '/' || spec[n] == '@');
}

int addr_parse(const char *spec, int flags, struct addr *out, const char **why)
{
	char host[ADDR_HOSTLEN];
	const char *port;
	int r, tls = 0;

	/* Schemes are case-insensitive (RFC 3986 section 3.1). */
	if (strncasecmp(spec, ADDR_TLS_PREFIX, strlen(ADDR_TLS_PREFIX)) == 0) {
		if (!(flags & ADDR_TLS)) {
			*why = "tls:// is not taken here";
			return -1;
		}
		spec += strlen(ADDR_TLS_PREFIX);
		tls = 1;
	}
	if ((flags & ADDR_UNIX) &&
	    strncasecmp(spec, ADDR_UNIX_PREFIX, strlen(ADDR_UNIX_PREFIX)) ==
	            0) {
		if (tls) {
			*why = "TLS is not spoken over Unix sockets: give "
			       ADDR_FORMS_UNIX " without tls://";
			return -1;
		}
		return addr_parse_unix(spec + strlen(ADDR_UNIX_PREFIX), out,
		                       why);
	}
	if (!(flags & ADDR_UNIX) && addr_has_unix_prefix(spec)) {
		*why = "unix: addresses are not taken here";
		return -1;
	}
	if (!tls && strstr(spec, "://") != NULL) {
		*why = (flags & ADDR_TLS) ? "unknown scheme: the only one is tls://"
		                          : "no scheme:// is taken here";
		return -1;
	}
	if (*spec == '\0') {
		*why = (flags & ADDR_LISTEN) ? "empty address; expected "
		                               ADDR_FORMS_LISTEN
		                             : "empty address; expected "
		                               ADDR_FORMS_CONNECT;
		return -1;
	}
	if (*spec == '[')
		r = addr_split_bracket(spec, host, &port, why);
	else
		r = addr_split_colon(spec, flags, host, &port, why);
	if (r < 0 || addr_set(host, port, out, why) < 0)
		return -1;
	if ((flags & ADDR_CONNECT) && strcmp(out->port, "0") == 0) {
		*why = "connecting needs a port other than 0";
		return -1;
	}
	out->tls = tls;
	out->unix_mode = -1;
	return 0;
}

int addr_is_abstract(const struct addr *a)
{
	return a->is_unix && a->path[0] == '@';
}

socklen_t addr_unix_sockaddr(const struct addr *a, struct sockaddr_un *su)
{
	size_t len = strlen(a->path);

	memset(su, 0, sizeof *su);
	su->sun_family = AF_UNIX;
	if (addr_is_abstract(a)) {
		/* sun_path[0] stays NUL; the name is exactly its bytes. */
		memcpy(su->sun_path + 1, a->path + 1, len - 1);
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
		                   len);
	}
	memcpy(su->sun_path, a->path, len);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

int addr_unix_mode_parse(const char *s, int *mode)
{
	size_t len = strlen(s);
	int v = 0;

	if (len == 0 || len > 4 || s[strspn(s, "01234567")] != '\0')
		return -1;
	for (; *s != '\0'; s++)
		v = v * 8 + (*s - '0');
	if (v > 0777)
		return -1;
	*mode = v;
	return 0;
}

void addr_dual_stack(struct addr *list, size_t n)
{
	int v4any = 0;
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(list[i].host, "0.0.0.0") == 0)
			v4any = 1;
	for (i = 0; i < n; i++)
		if (strcmp(list[i].host, "::") == 0)
			list[i].v6only = v4any;
}

/*
 * A Unix address as getaddrinfo would give it, had it such a family: one
 * entry and its address in one allocation, which addr_free frees.
 */
struct addr_unix_ai {
	struct addrinfo ai;
	struct sockaddr_un su;
};

static struct addrinfo *addr_resolve_unix(const struct addr *a, int socktype,
                                          int *gai_err)
{
	struct addr_unix_ai *u = calloc(1, sizeof *u);

	if (u == NULL) {
		*gai_err = EAI_MEMORY;
		return NULL;
	}
	u->ai.ai_family = AF_UNIX;
	u->ai.ai_socktype = socktype;
	u->ai.ai_addrlen = addr_unix_sockaddr(a, &u->su);
	u->ai.ai_addr = (struct sockaddr *)&u->su;
	return &u->ai;
}

struct addrinfo *addr_resolve(const struct addr *a, int socktype, int passive,
                              int *gai_err)
{
	struct addrinfo hints, *res = NULL;

	if (a->is_unix)
		return addr_resolve_unix(a, socktype, gai_err);
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = socktype;
	hints.ai_flags = AI_NUMERICSERV;
	/*
	 * AI_ADDRCONFIG leaves out a family the machine has no address of,
	 * but would also drop a wildcard: the IPv6 one still serves ::1.
	 */
	if (a->host[0] != '\0')
		hints.ai_flags |= AI_ADDRCONFIG;
	if (passive)
		hints.ai_flags |= AI_PASSIVE;
	*gai_err = getaddrinfo(a->host[0] != '\0' ? a->host : NULL, a->port,
	                       &hints, &res);
	if (*gai_err != 0)
		return NULL;
	return res;
}

void addr_free(struct addrinfo *res)
{
	if (res == NULL)
		return;
	/* getaddrinfo never gives AF_UNIX: this is addr_resolve_unix's. */
	if (res->ai_family == AF_UNIX)
		free(res);
	else
		freeaddrinfo(res);
}

const char *addr_strerror(int gai_err)
{
	if (gai_err == EAI_SYSTEM)
		return strerror(errno);
	return gai_strerror(gai_err);
}

/*
 * A Unix peer's name is whatever bytes the peer bound (unix(7)): any byte but
 * NUL in a path, any byte at all in an abstract name. Each byte that does not
 * print, and the backslash and parentheses, is written \xNN, so two names
 * never format the same, a name cannot end a log line, and a name cannot
 * pass for the "(uid U pid P)" the daemons add after it.
 */
static int addr_unix_plain(unsigned char ch)
{
	return ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '(' &&
	       ch != ')';
}

/* unix(7): unnamed, a path, or an abstract name (sun_path[0] NUL). */
static char *addr_format_unix(const struct sockaddr_un *su, socklen_t len,
                              char *buf, size_t buflen)
{
	static const char hex[] = "0123456789abcdef";
	size_t off = offsetof(struct sockaddr_un, sun_path), n, i, o;

	if (len <= off || buflen < sizeof ADDR_UNIX_PREFIX + 1) {
		snprintf(buf, buflen, ADDR_UNIX_PREFIX);
		return buf;
	}
	n = (size_t)len - off;
	if (n > sizeof su->sun_path)
		n = sizeof su->sun_path;
	i = 0;
	if (su->sun_path[0] != '\0')
		n = strnlen(su->sun_path, n);
	else
		i = 1;
	o = (size_t)snprintf(buf, buflen, ADDR_UNIX_PREFIX "%s",
	                     i == 1 ? "@" : "");
	for (; i < n; i++) {
		unsigned char ch = (unsigned char)su->sun_path[i];

		if (addr_unix_plain(ch)) {
			if (o + 1 >= buflen)
				break;
			buf[o++] = (char)ch;
		} else {
			if (o + 4 >= buflen)
				break;
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 0xf];
		}
	}
	buf[o] = '\0';
	return buf;
}

char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t buflen)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (sa->sa_family == AF_UNIX)
		return addr_format_unix((const struct sockaddr_un *)sa, len,
		                        buf, buflen);
	if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(buf, buflen, "?");
		return buf;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(buf, buflen, "[%s]:%s", host, serv);
	else
		snprintf(buf, buflen, "%s:%s", host, serv);
	return buf;
}

char *addr_spec_format(const struct addr *a, char *buf, size_t buflen)
{
	const char *host = a->host[0] != '\0' ? a->host : "*";

	if (a->is_unix)
		snprintf(buf, buflen, ADDR_UNIX_PREFIX "%s", a->path);
	else if (strchr(host, ':') != NULL)
		snprintf(buf, buflen, "[%s]:%s", host, a->port);
	else
		snprintf(buf, buflen, "%s:%s", host, a->port);
	return buf;
}

/* One end of a range: "ADDR" or "[IPV6]", len bytes of s. */
static int addr_range_end(const char *s, size_t len, int *family,
                          unsigned char *a, const char **why)
{
	char buf[INET6_ADDRSTRLEN + 2];

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
		if (memchr(s, ':', len) == NULL) {
			*why = "brackets hold an IPv6 address";
			return -1;
		}
	}
	if (len == 0) {
		*why = "empty address";
		return -1;
	}
	if (len >= sizeof buf) {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, a) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, a) == 1) {
		*family = AF_INET6;
		return 0;
	}
	if (strchr(buf, '%') != NULL)
		*why = "an IPv6 address with a %scope is not taken";
	else if (buf[strspn(buf, "0123456789.")] == '\0')
		*why = "not a valid IPv4 address (four numbers from 0 to 255, "
		       "no leading zeros)";
	else
		*why = "not an IPv4 or IPv6 address";
	return -1;
}

static size_t addr_family_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

int addr_range_parse(const char *s, struct addr_range *out, const char **why)
{
	const char *dash = strchr(s, '-');
	unsigned char last[16], diff[16];
	int lfamily, borrow = 0;
	uint32_t span;
	size_t n, i;

	memset(out, 0, sizeof *out);
	if (addr_range_end(s, dash != NULL ? (size_t)(dash - s) : strlen(s),
	                   &out->family, out->first, why) < 0)
		return -1;
	out->count = 1;
	if (dash == NULL)
		return 0;
	if (addr_range_end(dash + 1, strlen(dash + 1), &lfamily, last, why) < 0)
		return -1;
	if (lfamily != out->family) {
		*why = "the range's ends are of different families (IPv4 and "
		       "IPv6)";
		return -1;
	}
	n = addr_family_len(out->family);
	if (memcmp(out->first, last, n) > 0) {
		*why = "the range's first address is after its last";
		return -1;
	}
	/* last - first, big-endian, byte by byte. */
	for (i = n; i-- > 0;) {
		int d = last[i] - out->first[i] - borrow;

		borrow = d < 0;
		diff[i] = (unsigned char)(d + (borrow ? 256 : 0));
	}
	for (i = 0; i + 3 < n; i++)
		if (diff[i] != 0)
			goto too_many;
	span = (uint32_t)diff[n - 3] << 16 | (uint32_t)diff[n - 2] << 8 |
	       diff[n - 1];
	if (span >= ADDR_RANGE_MAX)
		goto too_many;
	out->count = span + 1;
	return 0;
too_many:
	*why = "a range holds at most 65536 addresses";
	return -1;
}

/* a = r->first + k, big-endian, in r's family's length. */
static void addr_range_add(const struct addr_range *r, uint64_t k,
                           unsigned char *a)
{
	size_t i = addr_family_len(r->family);

	memcpy(a, r->first, i);
	while (i-- > 0 && k > 0) {
		k += a[i];
		a[i] = (unsigned char)(k & 0xff);
		k >>= 8;
	}
}

socklen_t addr_range_nth(const struct addr_range *r, uint32_t k,
                         struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (r->family == AF_INET) {
		sin->sin_family = AF_INET;
		addr_range_add(r, k, (unsigned char *)&sin->sin_addr);
		return sizeof *sin;
	}
	sin6->sin6_family = AF_INET6;
	addr_range_add(r, k, sin6->sin6_addr.s6_addr);
	return sizeof *sin6;
}

int addr_range_overlap(const struct addr_range *a, const struct addr_range *b)
{
	unsigned char alast[16], blast[16];
	size_t n = addr_family_len(a->family);

	if (a->family != b->family)
		return 0;
	addr_range_add(a, a->count - 1, alast);
	addr_range_add(b, b->count - 1, blast);
	return memcmp(a->first, blast, n) <= 0 &&
	       memcmp(b->first, alast, n) <= 0;
}

char *addr_range_format(const struct addr_range *r, char *buf, size_t buflen)
{
	char first[INET6_ADDRSTRLEN], last[INET6_ADDRSTRLEN];
	unsigned char a[16];

	inet_ntop(r->family, r->first, first, sizeof first);
	if (r->count <= 1) {
		snprintf(buf, buflen, "%s", first);
		return buf;
	}
	addr_range_add(r, r->count - 1, a);
	inet_ntop(r->family, a, last, sizeof last);
	snprintf(buf, buflen, "%s-%s", first, last);
	return buf;
}

void addr_keep_family(struct addrinfo **res, int family)
{
	struct addrinfo **p = res, *ai;

	while ((ai = *p) != NULL) {
		if (ai->ai_family == family) {
			p = &ai->ai_next;
			continue;
		}
		*p = ai->ai_next;
		ai->ai_next = NULL;
		freeaddrinfo(ai);
	}
}
