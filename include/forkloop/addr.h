/*
 * addr.h - parse "ADDR:PORT" specs, resolve them, and print socket addresses.
 */
#ifndef FORKLOOP_ADDR_H
#define FORKLOOP_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/util.h>

#define ADDR_HOSTLEN 256
#define ADDR_PORTLEN 6
/* Longest "[v6%scope]:65535". */
#define ADDR_STRLEN (ADDR_HOSTLEN + 10)

struct addr {
	char host[ADDR_HOSTLEN]; /* "" means the wildcard address */
	char port[ADDR_PORTLEN]; /* decimal, 0..65535 */
};

/* Accept a bare "PORT" (wildcard host) in addr_parse. */
#define ADDR_PORT_ONLY 0x1

/*
 * Parse "HOST:PORT", "[IPV6]:PORT" or, with ADDR_PORT_ONLY, "PORT".
 * Returns 0, or -1 with *why set to a static explanation.
 */
int addr_parse(const char *spec, int flags, struct addr *out, const char **why);

/* Fill out from separate host and port strings; same checks as addr_parse. */
int addr_set(const char *host, const char *port, struct addr *out,
             const char **why);

/* Is s a decimal port number 0..65535? */
int addr_port_valid(const char *s);

/*
 * Resolve a for SOCK_STREAM or SOCK_DGRAM; passive for bind().
 * Returns a list to free with evutil_freeaddrinfo, or NULL with *gai_err set
 * (print it with evutil_gai_strerror).
 */
struct evutil_addrinfo *addr_resolve(const struct addr *a, int socktype,
                                     int passive, int *gai_err);

/* "127.0.0.1:40123" or "[::1]:40123" into buf; returns buf. */
char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t buflen);

/* "host:port" or "[host]:port" for a struct addr, for messages. */
char *addr_spec_format(const struct addr *a, char *buf, size_t buflen);

#endif
