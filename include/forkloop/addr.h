/*
 * addr.h - one syntax for every address the three programs take, resolved
 * with the system's getaddrinfo(3), and socket addresses printed the way
 * users type them.
 *
 * The forms (RFC 3986 section 3.2.2 puts an IPv6 literal in brackets):
 *   PORT           listening only: every address, IPv6 and IPv4
 *   HOST:PORT      a host name or an IPv4 address
 *   [IPV6]:PORT    an IPv6 address, with an optional %scope
 * forkloop-chat also takes HOST PORT as two arguments (addr_set).
 * With ADDR_TLS, an address may start with "tls://": the same forms,
 * spoken over TLS (a listener, or a target to connect to).
 * With ADDR_UNIX, a Unix domain stream socket (unix(7)):
 *   unix:/PATH     a socket file, PATH absolute
 *   unix:@NAME     a Linux abstract name: no file, gone with its socket
 * "unix:" is a scheme, and like "tls://" case-insensitive (RFC 3986
 * section 3.1); with ADDR_UNIX a host named "unix" is written "unix.:PORT".
 * TLS is not spoken over Unix sockets: "tls://unix:..." is refused.
 */
#ifndef FORKLOOP_ADDR_H
#define FORKLOOP_ADDR_H

#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/util.h>

#define ADDR_HOSTLEN 256
#define ADDR_PORTLEN 6
/*
 * Longest "[v6%scope]:65535", and "unix:@NAME (uid U pid P)" with each of
 * the name's 107 bytes written \xNN.
 */
#define ADDR_STRLEN 480
/*
 * sun_path's size (108 on Linux, unix(7)): a path or an abstract name of
 * up to ADDR_UNIXLEN - 1 bytes, the path with its NUL, the name after its
 * leading NUL.
 */
#define ADDR_UNIXLEN sizeof(((struct sockaddr_un *)0)->sun_path)

/* The forms, as error messages and usage texts name them. */
#define ADDR_FORMS_LISTEN  "PORT, HOST:PORT or [IPV6]:PORT"
#define ADDR_FORMS_CONNECT "HOST:PORT or [IPV6]:PORT"

struct addr {
	char host[ADDR_HOSTLEN]; /* "" means every address (a PORT alone) */
	char port[ADDR_PORTLEN]; /* decimal, 0..65535 */
	/*
	 * For the IPv6 wildcard "::": 1 listens on IPv6 only, 0 on IPv6 and
	 * IPv4 through one socket (IPV6_V6ONLY, ipv6(7)). See addr_dual_stack.
	 */
	int v6only;
	int tls; /* "tls://" was given (ADDR_TLS) */
	int is_unix; /* "unix:" was given (ADDR_UNIX): path, not host and port */
	/* "/PATH" or "@NAME", as written after "unix:" ("" if not is_unix) */
	char path[ADDR_UNIXLEN + 1];
	/* --unix-mode: a listener's socket file's permissions; -1: the umask's */
	int unix_mode;
};

/* addr_parse flags. */
#define ADDR_LISTEN  0x1 /* a PORT alone means every address */
#define ADDR_CONNECT 0x2 /* a host and a port other than 0 are needed */
#define ADDR_TLS     0x4 /* a "tls://" prefix is taken and sets tls */
#define ADDR_UNIX    0x8 /* "unix:/PATH" and "unix:@NAME" are taken */

#define ADDR_TLS_PREFIX  "tls://"
#define ADDR_UNIX_PREFIX "unix:"
#define ADDR_FORMS_UNIX  "unix:/PATH or unix:@NAME"

/*
 * Parse spec, one of the forms above, into out. A host made of digits and
 * dots is an IPv4 address (RFC 1123 section 2.1: no host name looks like
 * one) and must be one getaddrinfo(3) takes with AI_NUMERICHOST, as must an
 * IPv6 address in brackets. Returns 0, or -1 with *why set to a static
 * explanation that names the forms accepted. With ADDR_UNIX, a path or name
 * longer than ADDR_UNIXLEN - 1 (107) bytes is refused ("path longer than
 * 107 bytes"), as is an empty or relative one. out->unix_mode is -1.
 */
int addr_parse(const char *spec, int flags, struct addr *out, const char **why);

/* Is a an abstract Unix name (unix:@NAME)? 1 or 0. */
int addr_is_abstract(const struct addr *a);

/*
 * The socket address of the Unix address a (is_unix) into su; returns its
 * length for bind(2) and connect(2): an abstract name's length counts only
 * its bytes, not sun_path's size (unix(7)).
 */
socklen_t addr_unix_sockaddr(const struct addr *a, struct sockaddr_un *su);

/*
 * Parse a --unix-mode argument: octal permission bits, 0 to 0777 ("0660",
 * "660"). Returns 0 with *mode set, or -1.
 */
int addr_unix_mode_parse(const char *s, int *mode);

/*
 * Fill out from a separate host ("" for every address) and port, with the
 * checks addr_parse makes on them. Returns 0, or -1 with *why set.
 */
int addr_set(const char *host, const char *port, struct addr *out,
             const char **why);

/* Is s a decimal port number 0..65535? Returns 1 or 0. */
int addr_port_valid(const char *s);

/*
 * The dual-stack rule for the n listening addresses of one program: "[::]"
 * listens on IPv6 and IPv4 (IPV6_V6ONLY off, as Linux does by default)
 * unless "0.0.0.0" is among them too; then each wildcard keeps its own
 * family. Sets v6only on every "::" in list.
 */
void addr_dual_stack(struct addr *list, size_t n);

/*
 * Resolve a for socktype (SOCK_STREAM or SOCK_DGRAM) with getaddrinfo(3),
 * passive (for bind) or not. A PORT alone, passive, gives the wildcard
 * addresses of both families. A Unix address gives one AF_UNIX entry (no
 * resolver asked). Returns a list to free with addr_free, or NULL with
 * *gai_err set to getaddrinfo's EAI_ code (errno is set too for
 * EAI_SYSTEM): print it with addr_strerror.
 */
struct addrinfo *addr_resolve(const struct addr *a, int socktype, int passive,
                              int *gai_err);

/* Free what addr_resolve returned; NULL is fine. */
void addr_free(struct addrinfo *res);

/*
 * The system resolver's message for a getaddrinfo(3) error: gai_strerror(3),
 * or strerror(errno) for EAI_SYSTEM.
 */
const char *addr_strerror(int gai_err);

/*
 * "127.0.0.1:40123", "[::1]:40123", "unix:/run/x.sock" or "unix:@name"
 * into buf; an unnamed Unix socket (a client that did not bind) is
 * "unix:". A byte of a Unix path or abstract name that does not print, and
 * a backslash or parenthesis, is written \xNN (a peer binds any bytes it
 * likes). Truncated to buflen (ADDR_STRLEN holds any address). Returns buf.
 */
char *addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                  size_t buflen);

/*
 * "host:port", "[host]:port", "*:port" or "unix:/PATH" for a struct addr;
 * returns buf.
 */
char *addr_spec_format(const struct addr *a, char *buf, size_t buflen);

/*
 * Consecutive IP addresses, as forkloop-bench --source takes them: one
 * address, "127.0.0.2" or "::1", or an inclusive range of one family,
 * "127.0.0.2-127.0.0.200", "fd00::1-fd00::20" (an IPv6 end may be written
 * in brackets, "[fd00::1]-[fd00::20]").
 */
#define ADDR_RANGE_MAX 65536 /* addresses in one range at most */
/* Longest "FIRST-LAST" addr_range_format writes, with its NUL. */
#define ADDR_RANGE_STRLEN (2 * INET6_ADDRSTRLEN + 2)

struct addr_range {
	int family;              /* AF_INET or AF_INET6 */
	unsigned char first[16]; /* network byte order; AF_INET uses 4 bytes */
	uint32_t count;          /* 1 to ADDR_RANGE_MAX */
};

/*
 * Parse s, one address or "FIRST-LAST", into out. The addresses are
 * numeric, as inet_pton(3) takes them: an IPv4 one in dotted-decimal form,
 * an IPv6 one without a %scope. Returns 0, or -1 with *why set to a static
 * explanation: not an address, ends of different families, the first end
 * after the last, more than ADDR_RANGE_MAX addresses.
 */
int addr_range_parse(const char *s, struct addr_range *out, const char **why);

/*
 * Address k of r (k < r->count) into ss as a socket address of r's family,
 * port 0, ready for bind(2). Returns its length.
 */
socklen_t addr_range_nth(const struct addr_range *r, uint32_t k,
                         struct sockaddr_storage *ss);

/* Do a and b have an address in common? 1 or 0. */
int addr_range_overlap(const struct addr_range *a, const struct addr_range *b);

/* "127.0.0.2", or "127.0.0.2-127.0.0.9" for more than one, into buf;
 * returns buf. */
char *addr_range_format(const struct addr_range *r, char *buf, size_t buflen);

/*
 * Drop from the list *res, which getaddrinfo(3) made, every entry not of
 * family, freeing each (POSIX lets freeaddrinfo free any sublist). *res
 * becomes the first entry left, or NULL if none was of family.
 */
void addr_keep_family(struct addrinfo **res, int family);

#endif
