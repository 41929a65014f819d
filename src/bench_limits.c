/*
 * bench_limits.c - what the machine allows forkloop-bench, checked before a
 * run (bench.h): a file descriptor for every connection (RLIMIT_NOFILE),
 * and a local port for every connection from each source address.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "forkloop/bench.h"
#include "forkloop/log.h"

int bench_nofile(uint64_t conns, uint64_t threads)
{
	struct rlimit rl;
	uint64_t need = conns + BENCH_SPARE_FDS +
	                (threads > 1 ? threads * BENCH_THREAD_FDS : 0);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("getrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		log_error("%llu connections need %llu file descriptors, but "
		          "RLIMIT_NOFILE (ulimit -n) is %llu, hard limit %llu: "
		          "raise the hard limit (as root: ulimit -n %llu, or "
		          "LimitNOFILE= in a systemd unit, or nofile in "
		          "/etc/security/limits.conf), or split the load over "
		          "several forkloop-bench processes and merge their "
		          "results (bench/multi, forkloop-bench merge)",
		          (unsigned long long)conns, (unsigned long long)need,
		          (unsigned long long)rl.rlim_cur,
		          (unsigned long long)rl.rlim_max,
		          (unsigned long long)need);
		return -1;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_error("cannot raise the open file limit to %llu: %s",
		          (unsigned long long)need, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * net.ipv4.ip_local_port_range, which IPv6 connections use too. A range
 * that cannot be read (no /proc) means no check: connect(2) then says
 * EADDRNOTAVAIL when the ports run out.
 */
int bench_ports(const struct bench_opts *o)
{
	uint64_t sources = o->nsources > 0 ? o->source_addrs : 1, ports;
	unsigned long lo, hi;
	FILE *f;
	int n;

	if (o->target.is_unix)
		return 0;
	if ((f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re")) == NULL)
		return 0;
	n = fscanf(f, "%lu %lu", &lo, &hi);
	fclose(f);
	if (n != 2 || hi < lo)
		return 0;
	ports = hi - lo + 1;
	if (o->conns <= sources * ports)
		return 0;
	log_error("%llu connections need %llu local ports, but %llu source "
	          "address%s x %llu ports (net.ipv4.ip_local_port_range "
	          "%lu-%lu) allow %llu: add addresses with --source, or "
	          "widen the range (sysctl -w "
	          "net.ipv4.ip_local_port_range=\"1024 65535\")",
	          (unsigned long long)o->conns, (unsigned long long)o->conns,
	          (unsigned long long)sources, sources == 1 ? "" : "es",
	          (unsigned long long)ports, lo, hi,
	          (unsigned long long)(sources * ports));
	return -1;
}
