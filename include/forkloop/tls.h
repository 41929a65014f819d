/*
 * tls.h - forkloop-echo's TLS server side: one SSL_CTX loaded from a
 * certificate chain and a private key, reloaded on SIGHUP, handing out
 * configured SSL objects to both designs. OpenSSL 3 does every record; the
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
 * has nothing a truncation could forge). Returns a server to free with
 * tls_server_free, or NULL after logging which file failed and OpenSSL's
 * reason: "cannot load --tls-key k.pem: key values mismatch".
 */
struct tls_server *tls_server_new(const char *cert, const char *key);

/*
 * Load the same two files again into a new SSL_CTX and publish it: SSL
 * objects made from then on use it, those made before keep theirs. On
 * failure the old SSL_CTX stays. Logs the outcome either way; returns 0 or
 * -1. Safe while other threads call tls_server_ssl.
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

#endif
