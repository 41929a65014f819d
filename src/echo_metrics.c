/*
 * echo_metrics.c - what forkloop-echo tells the outside besides its log, the
 * same for both designs: its counts as --metrics shows them (Prometheus
 * text format, metrics.h) and its STATUS= line for the service manager
 * (notify.h).
 */
#include <stdio.h>

#include <event2/buffer.h>

#include "forkloop/echo.h"
#include "forkloop/notify.h"

static const char *const echo_udp_drop_names[ECHO_UDP_NDROP] = {
        "guard", "truncated", "acl", "rate", "send_error",
};

const char *echo_udp_drop_name(enum echo_udp_drop d)
{
	return d < ECHO_UDP_NDROP ? echo_udp_drop_names[d] : "unknown";
}

static void echo_metrics_conns(const struct echo_stats *s, enum echo_mode mode,
                               struct evbuffer *out)
{
	static const char refused[] = "forkloop_echo_connections_refused_total";

	metrics_family(out, "forkloop_echo_connections_open", "gauge",
	               "Connections open now.");
	metrics_value(out, "forkloop_echo_connections_open", NULL, s->open);
	metrics_family(out, "forkloop_echo_connections_accepted_total",
	               "counter", "Connections accepted and served.");
	metrics_value(out, "forkloop_echo_connections_accepted_total", NULL,
	              s->accepted);
	metrics_family(out, refused, "counter",
	               "Connections closed unread at accept, by reason: "
	               "max_conns (--max-conns), the admission rules "
	               "(denied, per_source, rate, table_full, uid), "
	               "fork_failed (fork mode: no child could be made).");
	metrics_reason(out, refused, "max_conns", s->refused - s->fork_failed);
	for (int i = ADMIT_OK + 1; i < ADMIT_NWHY; i++)
		metrics_reason(out, refused, admit_why_name((enum admit_why)i),
		               s->admit_refused[i]);
	if (mode == ECHO_MODE_FORK)
		metrics_reason(out, refused, "fork_failed", s->fork_failed);
	metrics_family(out, "forkloop_echo_received_bytes_total", "counter",
	               "Bytes read from TCP clients.");
	metrics_value(out, "forkloop_echo_received_bytes_total", NULL,
	              s->bytes_in);
	metrics_family(out, "forkloop_echo_sent_bytes_total", "counter",
	               "Bytes of echo handed to the kernel for TCP clients.");
	metrics_value(out, "forkloop_echo_sent_bytes_total", NULL,
	              s->bytes_out);
}

static void echo_metrics_udp(const struct echo_stats *s, struct evbuffer *out)
{
	static const char dropped[] =
	        "forkloop_echo_udp_datagrams_dropped_total";

	metrics_family(out, "forkloop_echo_udp_datagrams_received_total",
	               "counter", "UDP datagrams received.");
	metrics_value(out, "forkloop_echo_udp_datagrams_received_total", NULL,
	              s->udp_in);
	metrics_family(out, "forkloop_echo_udp_datagrams_sent_total", "counter",
	               "UDP datagrams echoed.");
	metrics_value(out, "forkloop_echo_udp_datagrams_sent_total", NULL,
	              s->udp_out);
	metrics_family(out, dropped, "counter",
	               "UDP datagrams given no reply, by reason: guard "
	               "(reflection and loop guards), truncated (too large), "
	               "acl (--allow/--deny), rate (--udp-rate), send_error.");
	for (int i = 0; i < ECHO_UDP_NDROP; i++)
		metrics_reason(out, dropped,
		               echo_udp_drop_name((enum echo_udp_drop)i),
		               s->udp_drop[i]);
}

void echo_metrics_write(const struct echo_stats *s, enum echo_mode mode,
                        struct evbuffer *out)
{
	echo_metrics_conns(s, mode, out);
	echo_metrics_udp(s, out);
	metrics_family(out, "forkloop_echo_draining", "gauge",
	               "1 once SIGINT or SIGTERM started a drain, else 0.");
	metrics_value(out, "forkloop_echo_draining", NULL, s->draining ? 1 : 0);
	metrics_histogram(out, "forkloop_echo_connection_duration_seconds",
	                  "How long closed TCP connections were open.",
	                  &s->duration);
}

void echo_notify_status(struct notify *n, const struct echo_stats *s)
{
	char rate[32];

	if (n == NULL)
		return;
	/* The rate's period starts afresh even while draining. */
	notify_bytes_rate(notify_rate(n, s->bytes_out), rate, sizeof rate);
	if (s->draining)
		notify_status(n, "draining: %llu connections",
		              (unsigned long long)s->open);
	else
		notify_status(n, "%llu connections, %s",
		              (unsigned long long)s->open, rate);
}
