/*
 * tls.h - TLS for outbound connections: an OpenSSL client session over memory BIOs, so that
 * the bytes travel on a libuv stream the caller owns (see httpc.c).
 *
 * The caller moves bytes both ways: what arrives from the socket goes in with rage__tls_feed(),
 * and whatever the session wants to send (handshake records, encrypted requests, alerts) comes
 * out of rage__tls_take_output() and is written to the socket. Nothing here touches a socket,
 * a loop or Lua, and nothing blocks.
 */
#ifndef RAGE_TLS_H
#define RAGE_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "util.h"

/*
 * Creates a client context that verifies peers against `ca_file` (a PEM bundle) or, when it is
 * NULL, against the system's default store. TLS 1.2 is the minimum version. Returns NULL and
 * writes a message into err on failure. The caller frees it with SSL_CTX_free(); sessions made
 * from it hold their own reference, so it may be freed while they live.
 */
SSL_CTX *rage__tls_ctx_new(const char *ca_file, char *err, size_t errlen);

/* A client session. Zero-initialize; `ssl` is NULL when no session is set up. */
typedef struct rage__tls_s {
  SSL *ssl;
  BIO *rbio; /* bytes from the peer, owned by ssl */
  BIO *wbio; /* bytes for the peer, owned by ssl */
} rage__tls_t;

enum {
  RAGE_TLS_OK = 1,     /* handshake complete */
  RAGE_TLS_AGAIN = 0,  /* more input from the peer is needed */
  RAGE_TLS_EOF = -1,   /* the peer sent close_notify */
  RAGE_TLS_ERROR = -2, /* failure; the message is in err */
};

/*
 * Starts a client session to `host` (a DNS name or an IP literal). With `verify` the peer's
 * chain must lead to a trusted root and its certificate must match `host` (a name through
 * SSL_set1_host, an address through its IP SAN); SNI is sent for names only. Returns 0, or
 * RAGE_TLS_ERROR with a message in err.
 */
int rage__tls_init(rage__tls_t *t, SSL_CTX *ctx, const char *host, int verify, char *err, size_t errlen);

/* Advances the handshake: RAGE_TLS_OK, RAGE_TLS_AGAIN or RAGE_TLS_ERROR (with the certificate
 * verification failure, when that is the cause). Output may be pending either way. */
int rage__tls_handshake(rage__tls_t *t, char *err, size_t errlen);

/* Hands bytes received from the socket to the session. */
void rage__tls_feed(rage__tls_t *t, const char *data, size_t len);

/* Encrypts application data; the records become pending output. Returns 0 or RAGE_TLS_ERROR. */
int rage__tls_write(rage__tls_t *t, const char *data, size_t len, char *err, size_t errlen);

/* Decrypts into buf: the number of bytes (> 0), RAGE_TLS_AGAIN, RAGE_TLS_EOF or RAGE_TLS_ERROR. */
int rage__tls_read(rage__tls_t *t, char *buf, size_t cap, char *err, size_t errlen);

/* Appends every pending output byte to `out`; returns how many were added. */
size_t rage__tls_take_output(rage__tls_t *t, rage__buf_t *out);

/* Frees the session (and its BIOs). Safe on a zeroed or already freed session. */
void rage__tls_free(rage__tls_t *t);

#endif /* RAGE_TLS_H */
