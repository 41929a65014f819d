/*
 * tls.h - TLS for all three programs. The server side (forkloop-echo, the
 * chat endpoint with a tls:// --listen, the relay): one SSL_CTX loaded from
 * a certificate chain and a private key, optionally asking for client
 * certificates, reloaded on SIGHUP, handing out configured SSL objects to
 * both designs. The client side (forkloop-chat --tls, forkloop-bench
 * --tls): one SSL_CTX that verifies the server or not, and SSL objects
 * bound to the host name or address that was asked for. OpenSSL 3 does every record; the
 * designs only move bytes through SSL_read/SSL_write (fork) or libevent's
 * OpenSSL bufferevents (event, event2/bufferevent_ssl.h).
 *
 * Threads: the SSL_CTX is never changed once published. SSL_new on one
 * SSL_CTX from several threads at once is safe (OpenSSL's threads(7));
 * each SSL holds its own reference to the SSL_CTX it was made from
 * (SSL_new(3)), so a reload publishes a new SSL_CTX under a mutex and drops
 * only the server's reference to the old one, which lives on until the last
 * connection made from it is freed.
 */
#ifndef FORKLOOP_TLS_H
#define FORKLOOP_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct tls_server;

/*
 * Load the PEM certificate chain at cert (SSL_CTX_use_certificate_chain_file
 * (3)) and the PEM private key at key (SSL_CTX_use_PrivateKey_file(3)),
 * check that they match (SSL_CTX_check_private_key(3)), and set TLS 1.2 as
 * the lowest version (SSL_CTX_set_min_proto_version(3)),
 * SSL_MODE_RELEASE_BUFFERS (SSL_CTX_set_mode(3): an idle connection frees
 * its record buffers) and SSL_OP_IGNORE_UNEXPECTED_EOF (SSL_CTX_set_options
 * (3): a client's FIN without close_notify ends its input like one; an echo
 * has nothing a truncation could forge; a design that must report
 * truncation clears it with SSL_clear_options on its SSL).
 *
 * verify_ca, if not NULL, is a PEM file of CA certificates (--tls-verify-
 * client): the server asks every client for a certificate, sends those CAs'
 * names (SSL_CTX_set_client_CA_list(3)) and fails the handshake of a client
 * that has none or whose chain does not verify against them
 * (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, SSL_CTX_set_verify
 * (3)). Returns a server to free with tls_server_free, or NULL after logging
 * which file failed and OpenSSL's reason: "cannot load --tls-key k.pem: key
 * values mismatch".
 */
struct tls_server *tls_server_new(const char *cert, const char *key,
                                  const char *verify_ca);

/*
 * Load the same files again (certificate, key and verify_ca) into a new
 * SSL_CTX and publish it: SSL objects made from then on use it, those made
 * before keep theirs. On failure the old SSL_CTX stays. Logs the outcome
 * either way: information on success, warnings on failure (the server goes
 * on with the old one); returns 0 or -1. Safe while other threads call
 * tls_server_ssl.
 */
int tls_server_reload(struct tls_server *t);

/*
 * A new server-side SSL (SSL_new(3), SSL_set_accept_state(3)) from the
 * current SSL_CTX, to free with SSL_free(3) (or through a bufferevent made
 * with BEV_OPT_CLOSE_ON_FREE). NULL if out of memory. Any thread.
 */
SSL *tls_server_ssl(struct tls_server *t);

/* Drop the server's SSL_CTX reference and free t; NULL is ignored. */
void tls_server_free(struct tls_server *t);

/*
 * OpenSSL's reason for the error err (ERR_reason_error_string(3)), or for
 * the oldest error on this thread's queue if err is 0, into buf, with
 * fallback when OpenSSL has none; empties this thread's error queue
 * (ERR_clear_error(3)) so a later failure is not blamed on it. Returns buf.
 */
const char *tls_strerror(unsigned long err, char *buf, size_t len);

/*
 * Why a handshake on ssl failed, for a log line or an error message: for a
 * certificate that did not verify, "certificate verify failed: " and the
 * verify result's text (SSL_get_verify_result(3),
 * X509_verify_cert_error_string(3)): "certificate verify failed: hostname
 * mismatch"; otherwise tls_strerror(err). Empties this thread's error
 * queue. Returns buf.
 */
const char *tls_handshake_error(SSL *ssl, unsigned long err, char *buf,
                                size_t len);

/*
 * The subject common name (X509_NAME_get_text_by_NID(3), NID_commonName)
 * of the certificate ssl's peer presented and that verified
 * (SSL_get0_peer_certificate(3), SSL_get_verify_result(3) == X509_V_OK),
 * into buf as UTF-8. Returns buf, or NULL if there is none, it did not
 * verify, the subject has more than one common name, or it does not fit
 * in len bytes with its NUL.
 */
const char *tls_peer_cn(SSL *ssl, char *buf, size_t len);

/* What a client context is made from (tls_client_ctx_new). */
struct tls_client_conf {
	const char *ca;   /* --tls-ca: PEM CA file; NULL: the system store */
	const char *cert; /* --tls-cert: client certificate chain, or NULL */
	const char *key;  /* --tls-key: its private key; with cert only */
	int verify;       /* 1: verify the server (SSL_VERIFY_PEER) */
};

/*
 * A client SSL_CTX (TLS_client_method(3)) with TLS 1.2 as the lowest
 * version, SSL_MODE_RELEASE_BUFFERS, a client certificate and key if conf
 * names them (checked to match), and, if conf->verify, SSL_VERIFY_PEER
 * against conf->ca (SSL_CTX_load_verify_file(3)) or the system's default
 * store (SSL_CTX_set_default_verify_paths(3), Debian's /etc/ssl/certs).
 * Without conf->verify the server's certificate is not checked at all.
 * Returns the SSL_CTX, to free with SSL_CTX_free(3), or NULL after logging
 * which file failed and OpenSSL's reason, as tls_server_new does.
 */
SSL_CTX *tls_client_ctx_new(const struct tls_client_conf *conf);

/*
 * A client SSL (SSL_new(3), SSL_set_connect_state(3)) for a connection to
 * host, the name or address the user gave: a name is sent as SNI
 * (SSL_set_tlsext_host_name(3), RFC 6066 section 3, which forbids
 * literal addresses there) and, when the context verifies, checked
 * against the certificate's DNS names only, never its subject's common
 * name (SSL_set1_host(3), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, RFC 9525
 * section 6.3); an IPv4 or IPv6 literal (brackets allowed) is checked
 * against the certificate's IP address entries
 * (X509_VERIFY_PARAM_set1_ip_asc(3)). Returns the SSL, or
 * NULL (out of memory, or a host OpenSSL refuses) with errno unchanged.
 */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *host);

#endif
