/*
 * tls.c - the SSL_CTX a server serves TLS with (load, check, reload on
 * SIGHUP, the SSL objects both designs make from it) and the client side's
 * (verify or not, bind to a host name or address): tls.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "forkloop/log.h"
#include "forkloop/tls.h"

struct tls_server {
	pthread_mutex_t lock; /* guards ctx */
	SSL_CTX *ctx;         /* the current one; never changed once here */
	char *cert, *key;
	char *verify_ca; /* --tls-verify-client, or NULL */
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
 * Why path could not be loaded as what ("certificate", "private key"). A
 * missing or unreadable file: OpenSSL 3 records the system error as "system
 * library" with errno's code; say what the file system said. A directory
 * reads as empty to OpenSSL ("no start line"): say it is one. A file
 * without what was asked for: say so beside OpenSSL's terse reason
 * ("no start line", "unsupported").
 */
static const char *tls_load_error(const char *path, const char *what,
                                  char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();
	struct stat st;
	char r[128];

	if (ERR_SYSTEM_ERROR(e)) {
		snprintf(buf, len, "%s", strerror(ERR_GET_REASON(e)));
		ERR_clear_error();
		return buf;
	}
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(buf, len, "%s", strerror(EISDIR));
		ERR_clear_error();
		return buf;
	}
	if (ERR_GET_LIB(e) == ERR_LIB_PEM || ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER ||
	    (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	     ERR_GET_REASON(e) == ERR_R_PEM_LIB)) {
		snprintf(buf, len, "no PEM %s in it (%s)", what,
		         tls_strerror(0, r, sizeof r));
		return buf;
	}
	return tls_strerror(0, buf, len);
}

static void tls_fail(int reload, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/*
 * Why loading failed: an error at start, a warning on a reload, after which
 * the server goes on with what it had.
 */
static void tls_fail(int reload, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (reload)
		log_warn("%s", line);
	else
		log_error("%s", line);
}

/*
 * The certificate chain and key both sides can present, the lowest version,
 * and released buffers. Returns 0, or -1 after logging (tls_fail).
 */
static int tls_ctx_common(SSL_CTX *ctx, const char *cert, const char *key,
                          int reload)
{
	char why[256];

	if (cert == NULL)
		goto common;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_fail(reload, "cannot load --tls-cert %s: %s", cert,
		         tls_load_error(cert, "certificate", why, sizeof why));
		return -1;
	}
	errno = 0;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_fail(reload, "cannot load --tls-key %s: %s", key,
		         tls_load_error(key, "private key", why, sizeof why));
		return -1;
	}
common:
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		tls_fail(reload, "cannot set TLS 1.2 as the lowest version: %s",
		         tls_strerror(0, why, sizeof why));
		return -1;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

/*
 * Ask for a client certificate that verifies against the CAs in file, and
 * name them in the CertificateRequest.
 */
static int tls_ctx_verify_client(SSL_CTX *ctx, const char *file, int reload)
{
	STACK_OF(X509_NAME) *names;
	char why[256];

	errno = 0;
	if (SSL_CTX_load_verify_file(ctx, file) != 1 ||
	    (names = SSL_load_client_CA_file(file)) == NULL) {
		tls_fail(reload, "cannot load --tls-verify-client %s: %s", file,
		         tls_load_error(file, "CA certificate", why,
		                        sizeof why));
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx,
	                   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
	                   NULL);
	return 0;
}

/* reload: on SIGHUP, when a failure is only a warning (tls_fail). */
static SSL_CTX *tls_ctx_load(const char *cert, const char *key,
                             const char *verify_ca, int reload)
{
	static const unsigned char sid_ctx[] = "forkloop";
	char why[256];
	SSL_CTX *ctx;

	ERR_clear_error();
	errno = 0;
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		tls_fail(reload, "cannot create a TLS context: %s",
		         tls_strerror(0, why, sizeof why));
		return NULL;
	}
	if (tls_ctx_common(ctx, cert, key, reload) < 0 ||
	    (verify_ca != NULL &&
	     tls_ctx_verify_client(ctx, verify_ca, reload) < 0))
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Resumed sessions need one with client verification (SSL_CTX_set_
	 * session_id_context(3)); harmless without. */
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_server *tls_server_new(const char *cert, const char *key,
                                  const char *verify_ca)
{
	struct tls_server *t = calloc(1, sizeof *t);

	if (t == NULL || (t->cert = strdup(cert)) == NULL ||
	    (t->key = strdup(key)) == NULL ||
	    (verify_ca != NULL && (t->verify_ca = strdup(verify_ca)) == NULL)) {
		log_error("cannot set up TLS: out of memory");
		goto fail;
	}
	t->ctx = tls_ctx_load(cert, key, verify_ca, 0);
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
		free(t->verify_ca);
	}
	free(t);
	return NULL;
}

int tls_server_reload(struct tls_server *t)
{
	SSL_CTX *ctx = tls_ctx_load(t->cert, t->key, t->verify_ca, 1), *old;

	if (ctx == NULL) {
		log_warn("SIGHUP: keeping the certificate loaded before");
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
	free(t->verify_ca);
	free(t);
}

const char *tls_handshake_error(SSL *ssl, unsigned long err, char *buf,
                                size_t len)
{
	long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (err == 0)
		err = ERR_peek_error();
	if (v != X509_V_OK && ERR_GET_LIB(err) == ERR_LIB_SSL &&
	    ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
		snprintf(buf, len, "certificate verify failed: %s",
		         X509_verify_cert_error_string(v));
		ERR_clear_error();
		return buf;
	}
	return tls_strerror(err, buf, len);
}

const char *tls_peer_cn(SSL *ssl, char *buf, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	X509_NAME *subj;
	int n;

	if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK ||
	    (subj = X509_get_subject_name(peer)) == NULL || len > INT_MAX)
		return NULL;
	/* Two common names: which one names the client is anyone's guess. */
	n = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (n < 0 || X509_NAME_get_index_by_NID(subj, NID_commonName, n) >= 0)
		return NULL;
	n = X509_NAME_get_text_by_NID(subj, NID_commonName, buf, (int)len);
	if (n <= 0 || (size_t)n >= len - 1 || strlen(buf) != (size_t)n)
		return NULL; /* none, cut short, or a NUL inside */
	return buf;
}

SSL_CTX *tls_client_ctx_new(const struct tls_client_conf *conf)
{
	char why[256];
	SSL_CTX *ctx;

	ERR_clear_error();
	errno = 0;
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		log_error("cannot create a TLS context: %s",
		          tls_strerror(0, why, sizeof why));
		return NULL;
	}
	if (tls_ctx_common(ctx, conf->cert, conf->key, 0) < 0)
		goto fail;
	if (!conf->verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	errno = 0;
	if (conf->ca != NULL && SSL_CTX_load_verify_file(ctx, conf->ca) != 1) {
		log_error("cannot load --tls-ca %s: %s", conf->ca,
		          tls_load_error(conf->ca, "CA certificate", why,
		                         sizeof why));
		goto fail;
	}
	if (conf->ca == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1) {
		log_error("cannot load the system's CA certificates: %s",
		          tls_strerror(0, why, sizeof why));
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL *tls_client_ssl(SSL_CTX *ctx, const char *host)
{
	char lit[INET6_ADDRSTRLEN + 2];
	unsigned char bin[sizeof(struct in6_addr)];
	size_t n = strlen(host);
	int saved = errno, ip;
	SSL *ssl;

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' &&
	    n - 2 < sizeof lit) {
		memcpy(lit, host + 1, n - 2);
		lit[n - 2] = '\0';
		host = lit;
	}
	ip = inet_pton(AF_INET, host, bin) == 1 ||
	     inet_pton(AF_INET6, host, bin) == 1;
	ssl = SSL_new(ctx);
	if (ssl == NULL)
		goto fail;
	SSL_set_connect_state(ssl);
	if (!ip && SSL_set_tlsext_host_name(ssl, host) != 1)
		goto fail;
	if (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) {
		if (ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		                                         host) != 1
		       : SSL_set1_host(ssl, host) != 1)
			goto fail;
		/* Names only from subjectAltName, never the subject's CN
		 * (RFC 9525 section 6.3; RFC 6125 allowed the fallback). */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	}
	errno = saved;
	return ssl;
fail:
	SSL_free(ssl);
	ERR_clear_error();
	errno = saved;
	return NULL;
}
