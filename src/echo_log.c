/*
 * echo_log.c - forkloop-echo's per-connection lines (-v), the same in both
 * designs: one key=value line when a connection opens, one when it ends,
 * so that a log can be filtered by field (event=close reason=reset) and a
 * client's bytes (a Unix peer's path) can never forge a field or a line.
 */
#include <errno.h>

#include "forkloop/echo.h"

static const char *const echo_end_names[] = {
        [ECHO_END_NONE] = "open",
        [ECHO_END_EOF] = "eof",
        [ECHO_END_RESET] = "reset",
        [ECHO_END_IDLE] = "idle_timeout",
        [ECHO_END_SHUTDOWN] = "shutdown",
        [ECHO_END_DRAIN_TIMEOUT] = "drain_timeout",
        [ECHO_END_ERROR] = "error",
        [ECHO_END_TLS_ERROR] = "tls_error",
        [ECHO_END_TLS_HANDSHAKE] = "tls_handshake",
        [ECHO_END_TLS_HANDSHAKE_TIMEOUT] = "tls_handshake_timeout",
        [ECHO_END_EXIT] = "exit",
};

const char *echo_end_name(enum echo_end e)
{
	if ((size_t)e >= sizeof echo_end_names / sizeof echo_end_names[0])
		return "error";
	return echo_end_names[e];
}

enum echo_end echo_end_errno(int err)
{
	return err == ECONNRESET || err == EPIPE ? ECHO_END_RESET
	                                         : ECHO_END_ERROR;
}

void echo_log_open(const char *peer, const char *key, uint64_t id)
{
	struct log_kv kv;

	if (log_get_level() < LOG_VERBOSE)
		return;
	log_kv_start(&kv, "open");
	log_kv_str(&kv, "peer", peer);
	log_kv_u64(&kv, key, id);
	log_verbose("%s", kv.buf);
}

void echo_log_close(const char *peer, long pid, uint64_t in, uint64_t out,
                    enum echo_end why, const char *error, uint64_t ms)
{
	int refused = why == ECHO_END_TLS_HANDSHAKE ||
	              why == ECHO_END_TLS_HANDSHAKE_TIMEOUT;
	struct log_kv kv;

	if (log_get_level() < LOG_VERBOSE)
		return;
	log_kv_start(&kv, refused ? "refused" : "close");
	log_kv_str(&kv, "peer", peer);
	if (pid > 0)
		log_kv_u64(&kv, "pid", (uint64_t)pid);
	if (!refused) {
		log_kv_u64(&kv, "in", in);
		log_kv_u64(&kv, "out", out);
	}
	log_kv_str(&kv, "reason", echo_end_name(why));
	log_kv_u64(&kv, "duration_ms", ms);
	if (error != NULL)
		log_kv_str(&kv, "error", error);
	log_verbose("%s", kv.buf);
}
