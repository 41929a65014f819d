/*
 * fuzz_tls.c - the one string tls.c parses: the host a client connects
 * to (tls_client_ssl), which becomes SNI and the name or address the
 * server's certificate is checked against, on a verifying client context.
 * Property: no crash, leak or undefined behaviour; an SSL made for a host
 * is freed.
 */
#include <openssl/ssl.h>

#include "forkloop/log.h"
#include "forkloop/tls.h"

#include "fuzz.h"

static SSL_CTX *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls_client_conf conf = {NULL, NULL, NULL, 1};
	char *host;
	SSL *ssl;

	if (ctx == NULL && (ctx = tls_client_ctx_new(&conf)) == NULL)
		abort();
	host = fuzz_strndup(data, size);
	ssl = tls_client_ssl(ctx, host);
	if (ssl != NULL)
		SSL_free(ssl);
	free(host);
	return 0;
}
