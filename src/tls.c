/*
 * tls.c - the SSL_CTX forkloop-echo serves TLS with: load, check, reload on
 * SIGHUP, and the SSL objects both designs make from it (tls.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "forkloop/log.h"
#include "forkloop/tls.h"

struct tls_server {
	pthread_mutex_t lock; /* guards ctx */
	SSL_CTX *ctx;         /* the current one; never changed once here */
	char *cert, *key;
};

const char *tls_strerror(unsigned long err, char *buf, size_t len)
{
	const char *r;

	if (err == 0)
		err = ERR_peek_error();
	r = err != 0 ? ERR_reason_error_string(err) : NULL;
	if (r != NULL)
		snprintf(buf, len, "%s", r);
	else if (err != 0)
		ERR_error_string_n(err, buf, len);
	else
		snprintf(buf, len, "%s",
		         errno != 0 ? strerror(errno) : "unknown TLS error");
	ERR_clear_error();
	return buf;
}

/*
 * A missing or unreadable file: OpenSSL 3 records the system error as
 * "system library" with errno's code; say what the file system said.
 */
static const char *tls_load_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();

	if (ERR_SYSTEM_ERROR(e)) {
		snprintf(buf, len, "%s", strerror(ERR_GET_REASON(e)));
		ERR_clear_error();
		return buf;
	}
	return tls_strerror(0, buf, len);
}

static SSL_CTX *tls_ctx_load(const char *cert, const char *key)
{
	char why[256];
	SSL_CTX *ctx;

	ERR_clear_error();
	errno = 0;
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		log_error("cannot create a TLS context: %s",
		          tls_strerror(0, why, sizeof why));
		return NULL;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		log_error("cannot load --tls-cert %s: %s", cert,
		          tls_load_error(why, sizeof why));
		goto fail;
	}
	errno = 0;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_error("cannot load --tls-key %s: %s", key,
		          tls_load_error(why, sizeof why));
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		log_error("cannot set TLS 1.2 as the lowest version: %s",
		          tls_strerror(0, why, sizeof why));
		goto fail;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_server *tls_server_new(const char *cert, const char *key)
{
	struct tls_server *t = calloc(1, sizeof *t);

	if (t == NULL || (t->cert = strdup(cert)) == NULL ||
	    (t->key = strdup(key)) == NULL) {
		log_error("cannot set up TLS: out of memory");
		goto fail;
	}
	t->ctx = tls_ctx_load(cert, key);
	if (t->ctx == NULL)
		goto fail;
	if (pthread_mutex_init(&t->lock, NULL) != 0) {
		log_error("cannot set up TLS: no mutex");
		SSL_CTX_free(t->ctx);
		goto fail;
	}
	return t;
fail:
	if (t != NULL) {
		free(t->cert);
		free(t->key);
	}
	free(t);
	return NULL;
}

int tls_server_reload(struct tls_server *t)
{
	SSL_CTX *ctx = tls_ctx_load(t->cert, t->key), *old;

	if (ctx == NULL) {
		log_error("SIGHUP: keeping the certificate loaded before");
		return -1;
	}
	pthread_mutex_lock(&t->lock);
	old = t->ctx;
	t->ctx = ctx;
	pthread_mutex_unlock(&t->lock);
	SSL_CTX_free(old); /* connections made from it hold their own */
	log_info("SIGHUP: reloaded --tls-cert %s and --tls-key %s; new "
	         "connections use them",
	         t->cert, t->key);
	return 0;
}

SSL *tls_server_ssl(struct tls_server *t)
{
	SSL *ssl;

	pthread_mutex_lock(&t->lock);
	ssl = SSL_new(t->ctx);
	pthread_mutex_unlock(&t->lock);
	if (ssl == NULL) {
		ERR_clear_error();
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

void tls_server_free(struct tls_server *t)
{
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->lock);
	free(t->cert);
	free(t->key);
	free(t);
}
