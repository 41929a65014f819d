/*
 * addr.c - parse "ADDR:PORT" specs, resolve them with getaddrinfo, and print
 * socket addresses the way users type them.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

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
	memset(out, 0, sizeof *out);
	memcpy(out->host, host, strlen(host) + 1);
	memcpy(out->port, port, strlen(port) + 1);
	return 0;
}

int addr_parse(const char *spec, int flags, struct addr *out, const char **why)
{
	char host[ADDR_HOSTLEN];
	const char *colon, *port;
	size_t hlen;

	if (*spec == '\0') {
		*why = "empty address";
		return -1;
	}
	if (*spec == '[') {
		const char *close = strchr(spec, ']');

		if (close == NULL) {
			*why = "missing ']' after IPv6 address";
			return -1;
		}
		if (close[1] != ':') {
			*why = "expected ':PORT' after ']'";
			return -1;
		}
		hlen = (size_t)(close - spec - 1);
		if (hlen == 0 || memchr(spec + 1, ':', hlen) == NULL) {
			*why = "brackets must hold an IPv6 address";
			return -1;
		}
		spec++;
		port = close + 2;
	} else {
		colon = strrchr(spec, ':');
		if (colon == NULL) {
			if (!(flags & ADDR_PORT_ONLY)) {
				*why = "expected ADDR:PORT";
				return -1;
			}
			return addr_set("", spec, out, why);
		}
		if (memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
			*why = "write an IPv6 address as [ADDR]:PORT";
			return -1;
		}
		hlen = (size_t)(colon - spec);
		if (hlen == 0) {
			*why = "empty host before ':'";
			return -1;
		}
		port = colon + 1;
	}
	if (hlen >= sizeof host) {
		*why = "host name too long";
		return -1;
	}
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	return addr_set(host, port, out, why);
}

struct evutil_addrinfo *addr_resolve(const struct addr *a, int socktype,
                                     int passive, int *gai_err)
{
	struct evutil_addrinfo hints, *res = NULL;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = socktype;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG | EVUTIL_AI_NUMERICSERV;
	if (passive)
		hints.ai_flags |= EVUTIL_AI_PASSIVE;
	*gai_err = evutil_getaddrinfo(a->host[0] != '\0' ? a->host : NULL,
	                              a->port, &hints, &res);
	if (*gai_err != 0)
		return NULL;
	return res;
}

char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t buflen)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

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

	if (strchr(host, ':') != NULL)
		snprintf(buf, buflen, "[%s]:%s", host, a->port);
	else
		snprintf(buf, buflen, "%s:%s", host, a->port);
	return buf;
}
